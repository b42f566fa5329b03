"""Ray Serve with the iris model.joblib: one deployment behind Serve's HTTP proxy.

Starts a local Ray head (Ray's defaults; temp files under --temp-dir), then one
application with one deployment at route /v2/models/iris/infer. The deployment
keeps Serve's defaults (1 replica, max_ongoing_requests=5). Ray Serve has no V2
protocol of its own: the handler reads the V2 request JSON and answers
V2-style JSON with the predicted labels. Runs until SIGTERM or SIGINT, then
shuts Serve and Ray down.

    python rayserve_app.py --model model.joblib --port 8000 --temp-dir /tmp/ray
"""

import argparse
import signal
import threading

import joblib
import numpy as np
import ray
from ray import serve
from starlette.requests import Request


@serve.deployment
class Iris:
    def __init__(self, path):
        self.model = joblib.load(path)

    async def __call__(self, request: Request):
        tensor = (await request.json())["inputs"][0]
        rows = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        labels = self.model.predict(rows)
        return {
            "model_name": "iris",
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [len(labels)],
                         "data": labels.tolist()}],
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--temp-dir", required=True)
    args = parser.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    ray.init(_temp_dir=args.temp_dir, _node_ip_address="127.0.0.1")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Iris.bind(args.model), name="iris", route_prefix="/v2/models/iris/infer")
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
