"""Standard Python clients against a running `inferd serve`.

tritonclient (HTTP in JSON and binary mode, gRPC) and the KServe SDK
(InferenceRESTClient for V1 and V2, InferenceGRPCClient) are used exactly as
their users use them; every answer is checked against known values.

Environment:
  INFERD_HTTP_URL  host:port of the HTTP listener (required)
  INFERD_GRPC_URL  host:port of the gRPC listener (the gRPC tests skip without it)

The server must serve examples/models/iris as `iris` and
tests/fixtures/models/identity as `identity` (13 inputs `in_<type>`, each
returned unchanged as `out_<type>`).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support import README_INPUT, check_iris, expected_output, iris_input

HERE = Path(__file__).resolve().parent


@pytest.fixture
def http(http_url):
    client = httpclient.InferenceServerClient(url=http_url)
    yield client
    client.close()


@pytest.fixture
def grpc(grpc_url):
    client = grpcclient.InferenceServerClient(url=grpc_url)
    yield client
    client.close()


# Values that need exact transport: extremes of each range, NaN and
# infinities (binary only), non-ASCII and empty strings, embedded NUL bytes
# (BYTES stay UTF-8: the identity model's ONNX string tensors need it).
IDENTITY = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 1, 255], [7, 128, 254]], dtype=np.uint8),
    "UINT16": np.array([[0, 1, 65535], [2, 3, 4]], dtype=np.uint16),
    "UINT32": np.array([[0, 1, 4294967295], [2, 3, 4]], dtype=np.uint32),
    "UINT64": np.array([[0, 1, 18446744073709551615], [2, 3, 4]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127], [-1, 1, 2]], dtype=np.int8),
    "INT16": np.array([[-32768, 0, 32767], [-1, 1, 2]], dtype=np.int16),
    "INT32": np.array([[-2147483648, 0, 2147483647], [-1, 1, 2]], dtype=np.int32),
    "INT64": np.array([[-9223372036854775808, 0, 9223372036854775807], [-1, 1, 2]], dtype=np.int64),
    "FP16": np.array([[0.5, -2.0, 65504.0], [6.1035e-05, 0.0, -0.0]], dtype=np.float16),
    "FP32": np.array([[1.5, -0.0, 3.4028235e38], [1e-45, -7.25, 0.1]], dtype=np.float32),
    "FP64": np.array([[1.5, -0.0, 1.7976931348623157e308], [5e-324, -7.25, 0.1]]),
    "BYTES": np.array(
        [[b"hello", b"", "d\u00e9j\u00e0 vu".encode()], [b"a\x00b", b"x", b"yz"]], dtype=np.object_
    ),
}
# The same with values JSON cannot carry (NaN, infinities) for binary mode only.
IDENTITY_BINARY = dict(IDENTITY)
IDENTITY_BINARY["FP32"] = np.array(
    [[np.nan, np.inf, -np.inf], [1e-45, -7.25, 0.1]], dtype=np.float32
)
IDENTITY_BINARY["FP64"] = np.array([[np.nan, np.inf, -np.inf], [5e-324, -7.25, 0.1]])
IDENTITY_BINARY["FP16"] = np.array(
    [[np.nan, np.inf, -np.inf], [6.1035e-05, 0.0, -0.0]], dtype=np.float16
)

# The datatypes each protocol is checked with one by one.
SELECTED = ["FP32", "INT64", "UINT8", "BOOL", "BYTES", "FP16"]


def in_name(datatype):
    return "in_" + ("string" if datatype == "BYTES" else datatype.lower())


def out_name(datatype):
    return "out_" + ("string" if datatype == "BYTES" else datatype.lower())


def check_same(datatype, got, want):
    assert got is not None, f"no output for {datatype}"
    assert list(got.shape) == list(want.shape), datatype
    if datatype == "BYTES":
        got_bytes = [v if isinstance(v, bytes) else str(v).encode() for v in got.flatten()]
        assert got_bytes == list(want.flatten()), datatype
    elif datatype in ("FP16", "FP32", "FP64"):
        assert got.dtype == want.dtype, datatype
        # Exact, bit for bit where finite; NaN compares equal to NaN; -0.0 keeps its sign.
        np.testing.assert_array_equal(got, want, err_msg=datatype, strict=True)
        assert (np.signbit(got) == np.signbit(want)).all(), datatype
    else:
        assert got.dtype == want.dtype, datatype
        assert got.tolist() == want.tolist(), datatype


# --------------------------------------------------------------------------
# tritonclient.http


def test_http_health(http):
    assert http.is_server_live() is True
    assert http.is_server_ready() is True
    assert http.is_model_ready("iris") is True
    assert http.is_model_ready("iris", "1") is True
    assert http.is_model_ready("identity") is True
    assert http.is_model_ready("no-such-model") is False
    assert http.is_model_ready("iris", "7") is False


def test_http_server_metadata(http):
    meta = http.get_server_metadata()
    assert meta["name"] == "inferd"
    assert meta["version"]
    assert "binary_tensor_data" in meta["extensions"]
    assert "model_configuration" in meta["extensions"]
    assert "statistics" in meta["extensions"]


def test_http_model_metadata(http):
    meta = http.get_model_metadata("iris")
    assert meta["name"] == "iris"
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnx_onnxv1"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert http.get_model_metadata("iris", "1") == meta
    ident = http.get_model_metadata("identity")
    assert {(t["name"], t["datatype"]) for t in ident["inputs"]} == {
        (in_name(d), d) for d in IDENTITY
    }
    assert {(t["name"], t["datatype"]) for t in ident["outputs"]} == {
        (out_name(d), d) for d in IDENTITY
    }


def test_http_model_config(http):
    config = http.get_model_config("iris")
    assert config["name"] == "iris"
    assert config["platform"] == "onnx_onnxv1"
    assert config["max_batch_size"] == 0
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("label", "TYPE_INT64", [-1]),
        ("probabilities", "TYPE_FP32", [-1, 3]),
    ]
    ident = http.get_model_config("identity")
    types = {i["name"]: i["data_type"] for i in ident["input"]}
    assert types["in_string"] == "TYPE_STRING"
    assert types["in_fp16"] == "TYPE_FP16"
    assert types["in_bool"] == "TYPE_BOOL"


def _stats(stats, name):
    [model] = [m for m in stats["model_stats"] if m["name"] == name]
    return model


def test_http_statistics_count_an_inference(http):
    before = _stats(http.get_inference_statistics("iris"), "iris")
    name, data = iris_input()
    inp = httpclient.InferInput(name, list(data.shape), "FP32")
    inp.set_data_from_numpy(data)
    http.infer("iris", [inp])
    after = _stats(http.get_inference_statistics("iris", "1"), "iris")
    assert after["version"] == "1"
    success = after["inference_stats"]["success"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 1
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"]
    assert after["execution_count"] == before["execution_count"] + 1
    assert after["last_inference"] >= before["last_inference"]
    everything = http.get_inference_statistics()
    assert {m["name"] for m in everything["model_stats"]} >= {"iris", "identity"}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_infer_iris(http, binary):
    name, data = iris_input()
    inp = httpclient.InferInput(name, list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=binary),
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = http.infer("iris", [inp], outputs=outputs, request_id="req-7")
    response = result.get_response()
    assert response["model_name"] == "iris"
    assert response["model_version"] == "1"
    assert response["id"] == "req-7"
    for out in response["outputs"]:
        has_binary = "binary_data_size" in out.get("parameters", {})
        assert has_binary == binary, out
    check_iris(result.as_numpy("label"), result.as_numpy("probabilities"))


def test_http_infer_iris_default_outputs_and_version(http):
    name, data = iris_input()
    inp = httpclient.InferInput(name, list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=True)
    result = http.infer("iris", [inp], model_version="1")
    check_iris(result.as_numpy("label"), result.as_numpy("probabilities"))


def test_http_infer_selects_one_output(http):
    name, data = iris_input()
    inp = httpclient.InferInput(name, list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=False)
    result = http.infer(
        "iris", [inp], outputs=[httpclient.InferRequestedOutput("label", binary_data=False)]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("probabilities") is None
    assert result.as_numpy("label").tolist() == expected_output("label").tolist()


def test_http_infer_readme_input(http):
    spec = README_INPUT["inputs"][0]
    data = np.array(spec["data"], dtype=np.float32).reshape(spec["shape"])
    inp = httpclient.InferInput(spec["name"], spec["shape"], "FP32")
    inp.set_data_from_numpy(data, binary_data=False)
    result = http.infer("iris", [inp])
    assert result.as_numpy("label").tolist() == [0, 0]


def _http_identity(http, values, binary, datatypes):
    inputs = []
    for datatype, value in values.items():
        inp = httpclient.InferInput(in_name(datatype), list(value.shape), datatype)
        inp.set_data_from_numpy(value, binary_data=binary)
        inputs.append(inp)
    outputs = [httpclient.InferRequestedOutput(out_name(d), binary_data=binary) for d in datatypes]
    return http.infer("identity", inputs, outputs=outputs)


def test_http_identity_every_datatype_binary(http):
    result = _http_identity(http, IDENTITY_BINARY, True, list(IDENTITY_BINARY))
    for datatype, value in IDENTITY_BINARY.items():
        check_same(datatype, result.as_numpy(out_name(datatype)), value)


def test_http_identity_every_datatype_json(http):
    # JSON carries no NaN or infinity and BYTES must be UTF-8 in JSON.
    result = _http_identity(http, IDENTITY, False, list(IDENTITY))
    for datatype, value in IDENTITY.items():
        check_same(datatype, result.as_numpy(out_name(datatype)), value)


@pytest.mark.parametrize("datatype", SELECTED)
def test_http_identity_binary(http, datatype):
    result = _http_identity(http, IDENTITY_BINARY, True, [datatype])
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == [out_name(datatype)]
    check_same(datatype, result.as_numpy(out_name(datatype)), IDENTITY_BINARY[datatype])


def test_http_unknown_model(http):
    inp = httpclient.InferInput("input", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as err:
        http.infer("no-such-model", [inp])
    assert "unknown model 'no-such-model'" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        http.get_model_metadata("no-such-model")
    assert "no-such-model" in err.value.message()


def test_http_repository(http):
    index = {m["name"]: m for m in http.get_model_repository_index()}
    assert index["iris"]["state"] == "READY"
    assert index["iris"]["version"] == "1"
    # The server runs with the default model control (none): the set is fixed.
    with pytest.raises(InferenceServerException) as err:
        http.load_model("iris")
    assert "--model-control explicit" in err.value.message()
    assert http.is_model_ready("iris")


def test_http_bad_input_names_the_input(http):
    inp = httpclient.InferInput("input", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as err:
        http.infer("iris", [inp])
    assert "input" in err.value.message()


# --------------------------------------------------------------------------
# tritonclient.grpc


def test_grpc_health(grpc):
    assert grpc.is_server_live() is True
    assert grpc.is_server_ready() is True
    assert grpc.is_model_ready("iris") is True
    assert grpc.is_model_ready("iris", "1") is True
    assert grpc.is_model_ready("identity") is True


def test_grpc_server_metadata(grpc):
    meta = grpc.get_server_metadata()
    assert meta.name == "inferd"
    assert meta.version
    assert "binary_tensor_data" in meta.extensions
    assert "model_configuration" in meta.extensions
    assert "statistics" in meta.extensions


def test_grpc_model_metadata(grpc):
    meta = grpc.get_model_metadata("iris")
    assert meta.name == "iris"
    assert list(meta.versions) == ["1"]
    assert meta.platform == "onnx_onnxv1"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("label", "INT64", [-1]),
        ("probabilities", "FP32", [-1, 3]),
    ]
    as_json = grpc.get_model_metadata("iris", "1", as_json=True)
    assert as_json["name"] == "iris"
    ident = grpc.get_model_metadata("identity")
    assert {(t.name, t.datatype) for t in ident.inputs} == {(in_name(d), d) for d in IDENTITY}


def test_grpc_model_config(grpc):
    from tritonclient.grpc import model_config_pb2 as mc

    config = grpc.get_model_config("iris").config
    assert config.name == "iris"
    assert config.platform == "onnx_onnxv1"
    assert config.max_batch_size == 0
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input", mc.TYPE_FP32, [-1, 4])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("label", mc.TYPE_INT64, [-1]),
        ("probabilities", mc.TYPE_FP32, [-1, 3]),
    ]
    ident = grpc.get_model_config("identity").config
    types = {i.name: i.data_type for i in ident.input}
    assert types["in_string"] == mc.TYPE_STRING
    assert types["in_fp16"] == mc.TYPE_FP16


def test_grpc_statistics_count_an_inference(grpc):
    def iris_stats():
        [model] = [m for m in grpc.get_inference_statistics("iris").model_stats if m.name == "iris"]
        return model

    before = iris_stats()
    name, data = iris_input()
    inp = grpcclient.InferInput(name, list(data.shape), "FP32")
    inp.set_data_from_numpy(data)
    grpc.infer("iris", [inp])
    after = iris_stats()
    assert after.version == "1"
    assert after.inference_stats.success.count == before.inference_stats.success.count + 1
    assert after.inference_stats.success.ns > before.inference_stats.success.ns
    assert after.inference_stats.fail.count == before.inference_stats.fail.count
    assert after.execution_count == before.execution_count + 1
    everything = grpc.get_inference_statistics()
    assert {m.name for m in everything.model_stats} >= {"iris", "identity"}


def test_grpc_infer_iris(grpc):
    name, data = iris_input()
    inp = grpcclient.InferInput(name, list(data.shape), "FP32")
    inp.set_data_from_numpy(data)
    outputs = [
        grpcclient.InferRequestedOutput("label"),
        grpcclient.InferRequestedOutput("probabilities"),
    ]
    result = grpc.infer("iris", [inp], outputs=outputs, request_id="req-9")
    response = result.get_response()
    assert response.model_name == "iris"
    assert response.model_version == "1"
    assert response.id == "req-9"
    check_iris(result.as_numpy("label"), result.as_numpy("probabilities"))


def test_grpc_infer_iris_default_outputs(grpc):
    name, data = iris_input()
    inp = grpcclient.InferInput(name, list(data.shape), "FP32")
    inp.set_data_from_numpy(data)
    result = grpc.infer("iris", [inp], model_version="1")
    check_iris(result.as_numpy("label"), result.as_numpy("probabilities"))


def _grpc_identity(grpc, datatypes):
    inputs = []
    for datatype, value in IDENTITY_BINARY.items():
        inp = grpcclient.InferInput(in_name(datatype), list(value.shape), datatype)
        inp.set_data_from_numpy(value)
        inputs.append(inp)
    outputs = [grpcclient.InferRequestedOutput(out_name(d)) for d in datatypes]
    return grpc.infer("identity", inputs, outputs=outputs)


def test_grpc_identity_every_datatype(grpc):
    result = _grpc_identity(grpc, list(IDENTITY_BINARY))
    for datatype, value in IDENTITY_BINARY.items():
        check_same(datatype, result.as_numpy(out_name(datatype)), value)


@pytest.mark.parametrize("datatype", SELECTED)
def test_grpc_identity(grpc, datatype):
    result = _grpc_identity(grpc, [datatype])
    assert [o.name for o in result.get_response().outputs] == [out_name(datatype)]
    check_same(datatype, result.as_numpy(out_name(datatype)), IDENTITY_BINARY[datatype])


def test_grpc_repository(grpc):
    index = {m.name: m for m in grpc.get_model_repository_index().models}
    assert index["iris"].state == "READY"
    assert index["iris"].version == "1"
    with pytest.raises(InferenceServerException) as err:
        grpc.unload_model("iris")
    assert "--model-control explicit" in err.value.message()
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert grpc.is_model_ready("iris")


def test_grpc_unknown_model(grpc):
    inp = grpcclient.InferInput("input", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as err:
        grpc.infer("no-such-model", [inp])
    assert "unknown model 'no-such-model'" in err.value.message()
    assert err.value.status() == "StatusCode.NOT_FOUND"
    # Triton answers ready=false for a model it does not know; inferd, like
    # KServe, answers NOT_FOUND (tritonclient raises it).
    with pytest.raises(InferenceServerException) as err:
        grpc.is_model_ready("no-such-model")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    assert "unknown model 'no-such-model'" in err.value.message()


# --------------------------------------------------------------------------
# KServe SDK (kserve_sdk.py), each test in a process of its own: the SDK and
# tritonclient.grpc cannot be imported into one process (both register the
# `inference.*` protobuf messages, from different .proto files).

KSERVE = HERE / "kserve_sdk.py"
KSERVE_TESTS = [
    ("test_rest_v2_infer[json]", False),
    ("test_rest_v2_infer[binary]", False),
    ("test_rest_v1_predict", False),
    ("test_rest_unknown_model", False),
    ("test_grpc_infer[contents]", True),
    ("test_grpc_infer[raw]", True),
]


def _pytest(*args):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        cwd=HERE,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
        check=False,
    )


def test_kserve_tests_are_all_listed():
    proc = _pytest("--collect-only", str(KSERVE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    collected = {line.split("::", 1)[1] for line in proc.stdout.splitlines() if "::" in line}
    assert collected == {name for name, _ in KSERVE_TESTS}


@pytest.mark.parametrize("name,grpc", KSERVE_TESTS, ids=[name for name, _ in KSERVE_TESTS])
def test_kserve_sdk(request, http_url, name, grpc):
    if grpc:
        request.getfixturevalue("grpc_url")
    proc = _pytest(f"{KSERVE}::{name}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
