"""Generate the small ONNX models used by inferd's examples and tests.

Run from the repository root:

    python3 -m venv .venv-models && . .venv-models/bin/activate
    pip install -r examples/requirements.txt
    python3 examples/make_models.py

It writes:

    examples/models/iris/        LogisticRegression on iris (model, expected, input)
    examples/models/mlp/         MLPClassifier (1024x1024) on digits (model, expected, input)
    tests/fixtures/models/iris_zipmap/  iris with a ZipMap node (op tract cannot run)
    tests/fixtures/models/forest_regressor/  RandomForestRegressor (TreeEnsembleRegressor)
    tests/fixtures/models/identity/     one Identity per datatype, all dims symbolic
    tests/fixtures/models/fixed/        y = 2 * x with a fixed [2, 3] input
    tests/fixtures/models/multi/        two inputs, two outputs
    tests/fixtures/models/not_onnx/     a file that is not an ONNX model

Every expected.json holds inputs and the outputs onnxruntime computes for them,
in the KServe V2 tensor layout (name, datatype, shape, flat row-major data).
Training uses fixed seeds, so repeated runs produce the same files.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes, load_digits, load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "models"
FIXTURES = ROOT / "tests" / "fixtures" / "models"

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17
SKL2ONNX_OPSET = {"": OPSET, "ai.onnx.ml": 3}

# ai.onnx.ml operators that tract-onnx 0.23 implements. ZipMap is not one of them.
TRACT_ML_OPS = {
    "ArrayFeatureExtractor",
    "CategoryMapper",
    "LinearClassifier",
    "LinearRegressor",
    "Normalizer",
    "TreeEnsembleClassifier",
}

# numpy dtype -> KServe V2 datatype name
V2_DATATYPES = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(object): "BYTES",
}

# Written files, for the summary printed at the end.
WRITTEN = []


# ---------------------------------------------------------------- helpers


def v2_tensor(name, array):
    """A V2 tensor object (name, datatype, shape, flat data) for a numpy array."""
    array = np.asarray(array)
    return {
        "name": name,
        "datatype": V2_DATATYPES[array.dtype],
        "shape": list(array.shape),
        "data": array.reshape(-1).tolist(),
    }


def run_onnxruntime(path, feeds):
    """Run a model file in onnxruntime on CPU; returns {output name: array}."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # deterministic and light on the machine
    session = ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def op_types(model):
    """Sorted op types of a model's graph, with non-default domains prefixed."""
    return sorted(
        {f"{node.domain}:{node.op_type}" if node.domain else node.op_type
         for node in model.graph.node}
    )


def write_bytes(path, data, ops=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    WRITTEN.append((path, list(ops)))


def write_json(path, obj):
    write_bytes(path, (json.dumps(obj, separators=(",", ":")) + "\n").encode())


def save_model(path, model):
    onnx.checker.check_model(model, full_check=True)
    write_bytes(path, model.SerializeToString(), op_types(model))


def write_expected(directory, inputs):
    """Run the model in `directory` on `inputs` and write expected.json."""
    outputs = run_onnxruntime(directory / "model.onnx", inputs)
    write_json(
        directory / "expected.json",
        {
            "inputs": [v2_tensor(name, value) for name, value in inputs.items()],
            "outputs": [v2_tensor(name, value) for name, value in outputs.items()],
        },
    )
    return outputs


def write_request(directory, name, rows):
    """Write input.json, a V2 inference request body for `rows`."""
    tensor = v2_tensor(name, rows)
    request = {"inputs": [{key: tensor[key] for key in ("name", "shape", "datatype", "data")}]}
    write_json(directory / "input.json", request)


def make_model(graph):
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="inferd make_models.py",
    )


def dedupe_opsets(model):
    """skl2onnx can list the same opset import twice; keep one of each domain."""
    seen = {}
    for opset in model.opset_import:
        seen.setdefault(opset.domain, opset.version)
    del model.opset_import[:]
    model.opset_import.extend(
        helper.make_opsetid(domain, version) for domain, version in seen.items()
    )


def replace_array_feature_extractor(model):
    """Swap ai.onnx.ml ArrayFeatureExtractor(classes, idx) for Gather(axis=0).

    skl2onnx looks up the class label of each argmax with ArrayFeatureExtractor.
    On a 1-D table of classes, Gather along axis 0 picks the same values and
    is a plain ONNX operator.
    """
    for node in model.graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type == "ArrayFeatureExtractor":
            node.domain = ""
            node.op_type = "Gather"
            node.attribute.append(helper.make_attribute("axis", 0))
    if not any(node.domain == "ai.onnx.ml" for node in model.graph.node):
        kept = [o for o in model.opset_import if o.domain != "ai.onnx.ml"]
        del model.opset_import[:]
        model.opset_import.extend(kept)


def convert_classifier(clf, n_features, zipmap):
    options = {} if zipmap else {id(clf): {"zipmap": False}}
    model = to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options=options,
        target_opset=SKL2ONNX_OPSET,
    )
    dedupe_opsets(model)
    return model


def check_against_sklearn(clf, rows, outputs, tolerance):
    assert list(outputs) == ["label", "probabilities"], list(outputs)
    np.testing.assert_array_equal(outputs["label"], clf.predict(rows))
    np.testing.assert_allclose(
        outputs["probabilities"], clf.predict_proba(rows), rtol=0, atol=tolerance
    )


# ---------------------------------------------------------------- models


def train_iris():
    features, target = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(features, target)


def make_iris(clf):
    directory = EXAMPLES / "iris"
    model = convert_classifier(clf, n_features=4, zipmap=False)
    ml_ops = {n.op_type for n in model.graph.node if n.domain == "ai.onnx.ml"}
    assert ml_ops <= TRACT_ML_OPS, ml_ops
    save_model(directory / "model.onnx", model)

    rows = load_iris().data[[0, 1, 50, 51, 100, 101]].astype(np.float32)
    outputs = write_expected(directory, {"input": rows})
    check_against_sklearn(clf, rows, outputs, tolerance=1e-5)
    write_request(directory, "input", rows[:2])


def make_iris_zipmap(clf):
    model = convert_classifier(clf, n_features=4, zipmap=True)
    assert any(node.op_type == "ZipMap" for node in model.graph.node)
    save_model(FIXTURES / "iris_zipmap" / "model.onnx", model)


def make_mlp():
    directory = EXAMPLES / "mlp"
    features, target = load_digits(return_X_y=True)
    features = (features / 16.0).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(1024, 1024), max_iter=30, random_state=0)
    with warnings.catch_warnings():
        # 30 epochs is deliberately short; the model only has to be big.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(features, target)

    model = convert_classifier(clf, n_features=64, zipmap=False)
    replace_array_feature_extractor(model)
    assert all(node.domain == "" for node in model.graph.node), op_types(model)
    save_model(directory / "model.onnx", model)

    rows = features[:8]
    outputs = write_expected(directory, {"input": rows})
    check_against_sklearn(clf, rows, outputs, tolerance=1e-4)
    write_request(directory, "input", rows[:1])


def make_forest_regressor():
    """A small random forest regressor: ai.onnx.ml TreeEnsembleRegressor."""
    directory = FIXTURES / "forest_regressor"
    features, target = load_diabetes(return_X_y=True)
    features = features.astype(np.float32)
    reg = RandomForestRegressor(n_estimators=4, max_depth=3, random_state=0)
    reg.fit(features, target)
    model = to_onnx(
        reg,
        initial_types=[("input", FloatTensorType([None, features.shape[1]]))],
        target_opset=SKL2ONNX_OPSET,
    )
    dedupe_opsets(model)
    assert any(node.op_type == "TreeEnsembleRegressor" for node in model.graph.node)
    save_model(directory / "model.onnx", model)
    rows = features[:5]
    outputs = write_expected(directory, {"input": rows})
    np.testing.assert_allclose(
        outputs["variable"].reshape(-1), reg.predict(rows), rtol=1e-5, atol=1e-3
    )


IDENTITY_TYPES = {
    "bool": (TensorProto.BOOL, np.array([[True, False]])),
    "uint8": (TensorProto.UINT8, np.array([[0, 255]], dtype=np.uint8)),
    "uint16": (TensorProto.UINT16, np.array([[0, 65535]], dtype=np.uint16)),
    "uint32": (TensorProto.UINT32, np.array([[0, 2**32 - 1]], dtype=np.uint32)),
    "uint64": (TensorProto.UINT64, np.array([[0, 2**64 - 1]], dtype=np.uint64)),
    "int8": (TensorProto.INT8, np.array([[-128, 127]], dtype=np.int8)),
    "int16": (TensorProto.INT16, np.array([[-32768, 32767]], dtype=np.int16)),
    "int32": (TensorProto.INT32, np.array([[-(2**31), 2**31 - 1]], dtype=np.int32)),
    "int64": (TensorProto.INT64, np.array([[-(2**63), 2**63 - 1]], dtype=np.int64)),
    "fp16": (TensorProto.FLOAT16, np.array([[0.5, -2.0]], dtype=np.float16)),
    "fp32": (TensorProto.FLOAT, np.array([[0.5, -2.0]], dtype=np.float32)),
    "fp64": (TensorProto.DOUBLE, np.array([[0.5, -2.0]], dtype=np.float64)),
    "string": (TensorProto.STRING, np.array([["a", "bc"]], dtype=object)),
}


def make_identity():
    """One Identity node per datatype; shapes are [N, D_<type>], all symbolic."""
    inputs, outputs, nodes = [], [], []
    for suffix, (elem_type, _) in IDENTITY_TYPES.items():
        shape = ["N", f"D_{suffix}"]
        inputs.append(helper.make_tensor_value_info(f"in_{suffix}", elem_type, shape))
        outputs.append(helper.make_tensor_value_info(f"out_{suffix}", elem_type, shape))
        nodes.append(helper.make_node("Identity", [f"in_{suffix}"], [f"out_{suffix}"]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    path = FIXTURES / "identity" / "model.onnx"
    save_model(path, make_model(graph))

    feeds = {f"in_{suffix}": sample for suffix, (_, sample) in IDENTITY_TYPES.items()}
    results = run_onnxruntime(path, feeds)
    for suffix, (_, sample) in IDENTITY_TYPES.items():
        np.testing.assert_array_equal(results[f"out_{suffix}"], sample)


def make_fixed():
    """y = x * 2 with a fully static [2, 3] input."""
    directory = FIXTURES / "fixed"
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[two],
    )
    save_model(directory / "model.onnx", make_model(graph))
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    outputs = write_expected(directory, {"x": x})
    np.testing.assert_array_equal(outputs["y"], x * 2)


def make_multi():
    """Two inputs sharing the batch dim N; outputs sum = a + b, prod = a * b."""
    directory = FIXTURES / "multi"
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["prod"]),
        ],
        "multi",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, ["N", 2]),
        ],
    )
    save_model(directory / "model.onnx", make_model(graph))
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    b = np.array([[10, 20], [30, 40]], dtype=np.float32)
    outputs = write_expected(directory, {"a": a, "b": b})
    np.testing.assert_array_equal(outputs["sum"], a + b)
    np.testing.assert_array_equal(outputs["prod"], a * b)


def make_not_onnx():
    """64 bytes of text: a file named model.onnx that no runtime can load."""
    text = b"this is not an onnx model\n" * 3
    path = FIXTURES / "not_onnx" / "model.onnx"
    write_bytes(path, text[:64])
    try:
        run_onnxruntime(path, {})
    except Exception:  # onnxruntime raises its own error types
        return
    raise AssertionError("onnxruntime loaded the not_onnx fixture")


# ---------------------------------------------------------------- main


def print_summary():
    print(f"{'file':<48} {'bytes':>9}  ops")
    for path, ops in WRITTEN:
        print(f"{str(path.relative_to(ROOT)):<48} {path.stat().st_size:>9}  {' '.join(ops)}")


def main():
    iris = train_iris()
    make_iris(iris)
    make_iris_zipmap(iris)
    make_mlp()
    make_forest_regressor()
    make_identity()
    make_fixed()
    make_multi()
    make_not_onnx()
    print_summary()


if __name__ == "__main__":
    main()
