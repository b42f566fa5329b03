"""tritonclient through inferd's router (`inferd up`), unchanged: HTTP in
JSON and binary mode and gRPC, against the iris service.

Environment:
  INFERD_HTTP_URL  host:port of the router's HTTP entry point
  INFERD_GRPC_URL  host:port of the router's gRPC entry point

Run as a script (it is not collected by the serve suite); prints one line
per check and exits non-zero on the first failure.
"""

import os
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support import check_iris, iris_input


def address(name):
    value = os.environ[name].strip()
    for scheme in ("http://", "grpc://"):
        if value.startswith(scheme):
            value = value[len(scheme) :]
    return value.rstrip("/")


def http_checks(url):
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris", meta
    assert [i["name"] for i in meta["inputs"]] == ["input"], meta
    name, data = iris_input()
    for binary in (False, True):
        tensor = httpclient.InferInput(name, list(data.shape), "FP32")
        tensor.set_data_from_numpy(data, binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("label", binary_data=binary),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        result = client.infer("iris", [tensor], outputs=outputs)
        check_iris(result.as_numpy("label"), result.as_numpy("probabilities"))
        print(f"http infer (binary={binary}) ok")
    try:
        client.infer("absent", [tensor])
        raise AssertionError("an unknown model was answered")
    except InferenceServerException as e:
        assert "absent" in str(e), e
    client.close()


def grpc_checks(url):
    client = grpcclient.InferenceServerClient(url=url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    meta = client.get_model_metadata("iris", as_json=True)
    assert meta["name"] == "iris", meta
    name, data = iris_input()
    tensor = grpcclient.InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    for _ in range(20):
        result = client.infer("iris", [tensor])
        check_iris(result.as_numpy("label"), result.as_numpy("probabilities"))
    print("grpc infer ok (20 calls)")
    try:
        client.infer("absent", [tensor])
        raise AssertionError("an unknown model was answered")
    except InferenceServerException as e:
        assert "NOT_FOUND" in str(e.status()) or "absent" in str(e), e
    client.close()


if __name__ == "__main__":
    http_checks(address("INFERD_HTTP_URL"))
    grpc_checks(address("INFERD_GRPC_URL"))
    print("router clients ok")
    sys.exit(0)
