"""KServe's Python model server with the iris model.

A model.joblib is served the way KServe's sklearnserver does it (that server is
not published on PyPI): decode the request with kserve's helpers, call
predict(), encode the labels. A model.onnx is run with onnxruntime instead and
answers label and probabilities, like inferd. Every ModelServer option keeps
its default; only the listen addresses move to loopback (KServe hard-codes
0.0.0.0 for HTTP and [::] for gRPC).

    python kserve_server.py --model_name iris --model_path model.joblib --http_port 8080
"""

import argparse
import uuid

import joblib
import numpy as np
import uvicorn
from grpc import aio

import kserve
from kserve import InferOutput, InferResponse
from kserve.utils.numpy_codec import from_np_dtype
from kserve.utils.utils import get_predict_input, get_predict_response


class Iris(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.model = None
        self.session = None
        self.load()

    def load(self):
        if self.path.endswith(".onnx"):
            import onnxruntime

            self.session = onnxruntime.InferenceSession(
                self.path, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
        else:
            self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        rows = get_predict_input(payload)
        if self.session is None:
            return get_predict_response(payload, self.model.predict(rows), self.name)
        label, probabilities = self.session.run(
            ["label", "probabilities"], {self.input_name: np.asarray(rows, dtype=np.float32)})
        if isinstance(payload, dict):  # V1
            return {"predictions": label.tolist()}
        outputs = []
        for name, array in (("label", label), ("probabilities", probabilities)):
            output = InferOutput(name=name, shape=list(array.shape),
                                 datatype=from_np_dtype(array.dtype))
            output.set_data_from_numpy(array, binary_data=payload.use_binary_outputs)
            outputs.append(output)
        return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                             infer_outputs=outputs,
                             use_binary_outputs=payload.use_binary_outputs)


def listen_on_loopback():
    """Make the HTTP (uvicorn) and gRPC servers KServe creates bind 127.0.0.1."""
    base_config = uvicorn.Config

    class LoopbackConfig(base_config):
        def __init__(self, *args, **kwargs):
            kwargs["host"] = "127.0.0.1"
            super().__init__(*args, **kwargs)

    uvicorn.Config = LoopbackConfig
    make_grpc_server = aio.server

    def loopback_grpc_server(*args, **kwargs):
        server = make_grpc_server(*args, **kwargs)
        add_port = server.add_insecure_port
        server.add_insecure_port = lambda address: add_port(
            address.replace("[::]", "127.0.0.1"))
        return server

    aio.server = loopback_grpc_server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True, help="model.joblib or model.onnx")
    args, _ = parser.parse_known_args()
    listen_on_loopback()
    kserve.ModelServer().start([Iris(args.model_name, args.model_path)])
