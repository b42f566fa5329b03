"""NVIDIA PyTriton (Triton Inference Server + a Python infer function) with iris.

A model.joblib runs sklearn predict() and answers the labels; a model.onnx
runs onnxruntime and answers label and probabilities, like inferd. PyTriton
ships no ONNX backend, so both go through Triton's Python backend. The model
keeps PyTriton's default ModelConfig (dynamic batching, max_batch_size 4); the
servers only move from 0.0.0.0 to loopback. SIGTERM is handled like SIGINT
(PyTriton stops Triton cleanly on KeyboardInterrupt only).

    python pytriton_server.py --model model.joblib --http-port 8000 --grpc-port 8001 \
        --metrics-port 8002 --workspace /tmp/pytriton
"""

import argparse
import signal

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def sklearn_infer(path):
    import joblib

    model = joblib.load(path)

    @batch
    def infer(input):
        return {"label": model.predict(input).astype(np.int64).reshape(-1, 1)}

    return infer, [Tensor(name="label", dtype=np.int64, shape=(1,))]


def onnx_infer(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    @batch
    def infer(input):
        label, probabilities = session.run(["label", "probabilities"], {"input": input})
        return {"label": label.reshape(-1, 1), "probabilities": probabilities}

    return infer, [Tensor(name="label", dtype=np.int64, shape=(1,)),
                   Tensor(name="probabilities", dtype=np.float32, shape=(3,))]


def interrupt(*_):
    raise KeyboardInterrupt


def main():
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--access-token", default=None,
                        help="token for PyTriton's restricted endpoints (statistics, model "
                             "repository...); perf_analyzer sends it as the triton-access-token header")
    args = parser.parse_args()

    infer, outputs = (onnx_infer if args.model.endswith(".onnx") else sklearn_infer)(args.model)
    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port,
                          grpc_address="127.0.0.1", grpc_port=args.grpc_port,
                          metrics_address="127.0.0.1", metrics_port=args.metrics_port)
    security = TritonSecurityConfig(access_token=args.access_token)
    with Triton(config=config, workspace=args.workspace, security_config=security) as triton:
        triton.bind(model_name="iris", infer_func=infer,
                    inputs=[Tensor(name="input", dtype=np.float32, shape=(4,))],
                    outputs=outputs, config=ModelConfig())
        triton.serve()


if __name__ == "__main__":
    main()
