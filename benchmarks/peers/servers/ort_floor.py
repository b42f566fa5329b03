"""The compute floor: onnxruntime in process, no HTTP, no JSON.

Loads model.onnx with default session options, runs the request body's array
once and prints "READY <first answer as JSON>" (the harness times launch ->
that line as the cold start). Then, for each concurrency N, N Python threads
call InferenceSession.run() on that same array in a closed loop (warm-up
first); writes per-step calls per second and latency percentiles as JSON.

    python ort_floor.py --model model.onnx --body body.json --concurrency 1,8,64 \
        --duration 10 --warmup 2 --json out.json
"""

import argparse
import json
import threading
import time

import numpy as np
import onnxruntime


def closed_loop(session, feed, threads, seconds):
    """Run `threads` callers for `seconds`; return (calls, latencies in µs)."""
    stop = threading.Event()
    per_thread = [[] for _ in range(threads)]

    def caller(latencies):
        clock = time.perf_counter
        while not stop.is_set():
            started = clock()
            session.run(None, feed)
            latencies.append(clock() - started)

    workers = [threading.Thread(target=caller, args=(l,)) for l in per_thread]
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    latencies = np.array([x for l in per_thread for x in l]) * 1e6
    return len(latencies), latencies


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    tensor = json.load(open(args.body))["inputs"][0]
    rows = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    feed = {session.get_inputs()[0].name: rows}
    label, _ = session.run(["label", "probabilities"], feed)
    answer = {"outputs": [{"name": "label", "data": label.tolist()}]}
    print("READY", json.dumps(answer), flush=True)

    steps = []
    for threads in (int(c) for c in args.concurrency.split(",")):
        closed_loop(session, feed, threads, args.warmup)
        calls, latencies = closed_loop(session, feed, threads, args.duration)
        p50, p90, p99, p999 = np.percentile(latencies, [50, 90, 99, 99.9])
        steps.append({
            "concurrency": threads, "requests": calls, "successes": calls, "errors": 0,
            "requests_per_second": round(calls / args.duration, 1),
            "latency_us": {"p50": round(p50), "p90": round(p90), "p99": round(p99),
                           "p999": round(p999), "max": round(latencies.max())},
        })
    with open(args.json, "w") as f:
        json.dump({"steps": steps}, f)


if __name__ == "__main__":
    main()
