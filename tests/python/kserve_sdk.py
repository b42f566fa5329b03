"""The KServe Python SDK against a running `inferd serve`.

Run by test_clients.py in a process of its own: the SDK and tritonclient.grpc
each register the `inference.*` protobuf messages from their own .proto file,
and protobuf refuses the second registration in one process. Alone:

  INFERD_HTTP_URL=127.0.0.1:8080 INFERD_GRPC_URL=127.0.0.1:8081 \
    python -m pytest tests/python/kserve_sdk.py
"""

import asyncio

import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

from support import ATOL, RTOL, check_iris, expected_output, iris_input


def iris_request(binary):
    name, data = iris_input()
    inp = InferInput(name=name, shape=list(data.shape), datatype="FP32")
    inp.set_data_from_numpy(data, binary_data=binary)
    outputs = [
        RequestedOutput("label", {"binary_data": binary}),
        RequestedOutput("probabilities", {"binary_data": binary}),
    ]
    return InferRequest(
        model_name="iris", infer_inputs=[inp], request_id="ks-1", request_outputs=outputs
    )


def check_response(response, version):
    assert response.model_name == "iris"
    # The SDK keeps the version of gRPC answers only (InferResponse.from_bytes drops it).
    assert response.model_version == version
    assert response.id == "ks-1"
    label = response.get_output_by_name("label").as_numpy()
    probabilities = response.get_output_by_name("probabilities").as_numpy()
    check_iris(label, probabilities)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_rest_v2_infer(http_url, binary):
    async def run():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as client:
            base = f"http://{http_url}"
            assert await client.is_server_live(base) is True
            assert await client.is_server_ready(base) is True
            assert await client.is_model_ready(base, "iris") is True
            assert await client.is_model_ready(base, "no-such-model") is False
            return await client.infer(base, iris_request(binary), model_name="iris")

    check_response(asyncio.run(run()), None)


def test_rest_v1_predict(http_url):
    _, data = iris_input()

    async def run():
        async with InferenceRESTClient(RESTConfig(protocol="v1", retries=0)) as client:
            base = f"http://{http_url}"
            assert await client.is_server_live(base) is True
            assert await client.is_model_ready(base, "iris") is True
            return await client.infer(base, {"instances": data.tolist()}, model_name="iris")

    predictions = asyncio.run(run())["predictions"]
    # With several outputs each prediction is an object keyed by output name.
    assert [p["label"] for p in predictions] == expected_output("label").tolist()
    np.testing.assert_allclose(
        np.array([p["probabilities"] for p in predictions], dtype=np.float32),
        expected_output("probabilities"),
        rtol=RTOL,
        atol=ATOL,
    )


def test_rest_unknown_model(http_url):
    async def run():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as client:
            return await client.infer(
                f"http://{http_url}", iris_request(False), model_name="no-such-model"
            )

    with pytest.raises(httpx.HTTPStatusError) as err:
        asyncio.run(run())
    assert err.value.response.status_code == 404
    assert "unknown model 'no-such-model'" in str(err.value)


@pytest.mark.parametrize("binary", [False, True], ids=["contents", "raw"])
def test_grpc_infer(grpc_url, binary):
    async def run():
        async with InferenceGRPCClient(grpc_url, retries=0) as client:
            assert await client.is_server_live() is True
            assert await client.is_server_ready() is True
            assert await client.is_model_ready("iris") is True
            return await client.infer(iris_request(binary))

    check_response(asyncio.run(run()), "1")
