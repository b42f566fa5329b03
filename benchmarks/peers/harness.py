"""Measure inferd and its peers one at a time; write JSON and a markdown table.

Started by run.sh (which owns the virtual environments); standard library only.
For each server it

  1. waits (bounded) for CPU load from other programs to settle,
  2. launches the server in its own session on free loopback ports,
  3. polls the infer URL every 20 ms; cold start = launch -> first correct answer,
  4. checks the labels on the six rows of examples/models/iris/expected.json,
  5. drives load at each concurrency (closed loop, warm-up first),
  6. samples the RSS of the whole process tree every 100 ms (peak of the sum),
  7. stops the server and everything it spawned.
"""

import argparse
import json
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import http.client
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
IRIS = REPO / "examples" / "models" / "iris"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
POLL_S = 0.020          # cold-start poll interval
SAMPLE_S = 0.100        # RSS / CPU sampling interval
STOP_GRACE_S = 20       # time a server gets to exit after its stop signal
STEP_SLACK_S = 60       # added to warm-up + duration to bound one load step
BUSY_CORES = 0.2        # CPU use by other programs above which a step is flagged noisy


class Interrupted(Exception):
    """SIGTERM or SIGINT reached the harness."""


class Failed(Exception):
    """A server could not be measured; the message says why."""


# ------------------------------------------------------------------ servers


@dataclass
class Server:
    name: str
    argv: list
    input_name: str
    url_path: str = "/v2/models/iris/infer"
    protocol: str = "v2"
    env: dict = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM
    venv: str = ""
    packages: tuple = ()
    config: str = ""            # how it is set up, for the report
    in_process: bool = False    # onnxruntime: no HTTP, the script measures itself
    ray: bool = False


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def python_libdir(python):
    """The libpython folder of the interpreter a venv was made from."""
    return subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def make_server(name, args, work, models):
    """The launch description of one server; its ports are picked here."""
    venv = {"kserve-onnx": "kserve", "pytriton-onnx": "pytriton"}.get(name, name)
    py = str(Path(args.cache) / venv / "bin" / "python")
    scripts = HERE / "servers"
    onnx = str(models / "model.onnx")
    joblib = str(models / "model.joblib")

    if name == "inferd":
        (port,) = free_ports(1)
        return port, Server(
            name, [args.inferd, "serve", "--model", f"iris={onnx}", "--http-port", str(port)],
            input_name="input",
            config="defaults: one inference thread per core (--inference-threads 0), "
                   "tract ONNX runtime; answers label and probabilities",
        )
    if name in ("kserve", "kserve-onnx"):
        port, grpc = free_ports(2)
        model = onnx if name == "kserve-onnx" else joblib
        return port, Server(
            name, [py, str(scripts / "kserve_server.py"), "--model_name", "iris",
                   "--model_path", model, "--http_port", str(port), "--grpc_port", str(grpc)],
            input_name="input", venv=venv,
            packages=("kserve", "scikit-learn", "onnxruntime") if name == "kserve-onnx"
            else ("kserve", "scikit-learn"),
            config="kserve.ModelServer defaults: 1 worker process (--workers 1), uvicorn + "
                   "FastAPI, gRPC server on as well; "
                   + ("onnxruntime session with default threads, answers label and probabilities"
                      if name == "kserve-onnx" else
                      "sklearn predict() as KServe's sklearnserver does, answers labels"),
        )
    if name == "mlserver":
        port, grpc, metrics = free_ports(3)
        repo = work / "mlserver-repo"
        (repo / "iris").mkdir(parents=True, exist_ok=True)
        (repo / "settings.json").write_text(json.dumps({
            "debug": False, "host": "127.0.0.1", "http_port": port,
            "grpc_port": grpc, "metrics_port": metrics,
        }))
        (repo / "iris" / "model-settings.json").write_text(json.dumps({
            "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": joblib, "version": "v1"},
        }))
        return port, Server(
            name, [str(Path(args.cache) / venv / "bin" / "mlserver"), "start", str(repo)],
            input_name="input", venv=venv,
            packages=("mlserver", "mlserver-sklearn", "scikit-learn"),
            config="MLServer defaults: parallel_workers=1 (one inference worker process besides "
                   "the HTTP/gRPC process), adaptive batching off, metrics server on; "
                   "SKLearnModel answers predict() labels",
        )
    if name == "rayserve":
        (port,) = free_ports(1)
        return port, Server(
            name, [py, str(scripts / "rayserve_app.py"), "--model", joblib, "--port", str(port),
                   "--temp-dir", str(work / "ray")],
            input_name="input", venv=venv, ray=True,
            env={"RAY_USAGE_STATS_ENABLED": "0"},
            packages=("ray", "scikit-learn"),
            config="Ray Serve defaults: local Ray head started by the app (num_cpus = cores), "
                   "1 replica, max_ongoing_requests=5, HTTP proxy; the deployment reads the V2 "
                   "JSON body itself and answers V2-style JSON labels (Ray Serve's own HTTP, "
                   "not a full V2 server)",
        )
    if name in ("pytriton", "pytriton-onnx"):
        port, grpc, metrics = free_ports(3)
        (work / "tmp").mkdir(exist_ok=True)
        return port, Server(
            name, [py, str(scripts / "pytriton_server.py"),
                   "--model", onnx if name == "pytriton-onnx" else joblib,
                   "--http-port", str(port), "--grpc-port", str(grpc),
                   "--metrics-port", str(metrics), "--workspace", str(work / f"{name}-workspace")],
            input_name="input", venv=venv, stop_signal=signal.SIGINT,
            # The Python backend stub links libpython3.x.so; make it find the
            # one the venv was built from, not an older system copy.
            env={"LD_LIBRARY_PATH": python_libdir(py), "TMPDIR": str(work / "tmp")},
            packages=("nvidia-pytriton", "scikit-learn", "onnxruntime") if name == "pytriton-onnx"
            else ("nvidia-pytriton", "scikit-learn"),
            config="PyTriton defaults: one model instance, ModelConfig() (dynamic batching on, "
                   "max_batch_size 4), Triton's default HTTP threads; infer function "
                   + ("runs onnxruntime (default threads), answers label and probabilities"
                      if name == "pytriton-onnx" else "runs sklearn predict(), answers labels"),
        )
    if name == "onnxruntime":
        body = work / "body-onnxruntime.json"
        body.write_text(bench_body("input"))
        return 0, Server(
            name, [py, str(scripts / "ort_floor.py"), "--model", onnx, "--body", str(body),
                   "--concurrency", args.concurrency, "--duration", str(args.duration),
                   "--warmup", str(args.warmup), "--json", str(work / "onnxruntime-result.json")],
            input_name="input", venv=venv, in_process=True, packages=("onnxruntime",),
            config="in process, no HTTP and no JSON: InferenceSession.run() (default session "
                   "options) on the prepared request array, N Python threads in a closed loop",
        )
    raise Failed(f"unknown server {name}")


# ------------------------------------------------------ process-tree watching


def read_procs():
    """{pid: (ppid, session id, cpu ticks, rss bytes)} for every live (not zombie) process."""
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm") as f:
                resident = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":
            continue
        procs[int(entry)] = (int(fields[1]), int(fields[3]),
                             int(fields[11]) + int(fields[12]), resident * PAGE)
    return procs


def tree_of(root, procs):
    """PIDs of root's session plus every descendant of root (some servers start new sessions)."""
    members = {pid for pid, p in procs.items() if p[1] == root}
    children = {}
    for pid, p in procs.items():
        children.setdefault(p[0], []).append(pid)
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in procs:
            members.add(pid)
        stack.extend(c for c in children.get(pid, ()) if c not in members)
    return members


class TreeWatch(threading.Thread):
    """Samples the server's process tree: peak summed RSS, process count, CPU ticks."""

    def __init__(self, root):
        super().__init__(daemon=True)
        self.root = root
        self.peak_rss = 0
        self.peak_procs = 0
        self.ticks = {}          # pid -> last seen cpu ticks (kept after the pid exits)
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def sample(self):
        procs = read_procs()
        pids = tree_of(self.root, procs)
        with self.lock:
            self.peak_rss = max(self.peak_rss, sum(procs[p][3] for p in pids))
            self.peak_procs = max(self.peak_procs, len(pids))
            for p in pids:
                self.ticks[p] = procs[p][2]
        return pids

    def run(self):
        while not self.halt.wait(SAMPLE_S):
            self.sample()

    def cpu_seconds(self):
        self.sample()
        with self.lock:
            return sum(self.ticks.values()) / TICK

    def stop(self):
        self.halt.set()
        self.join(timeout=2)


def pss_bytes(pids):
    """Summed proportional set size: shared pages split between the processes sharing them."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def machine_busy_seconds():
    """CPU seconds all cores have spent running programs (user, nice, system) since boot."""
    with open("/proc/stat") as f:
        user, nice, system = (int(v) for v in f.readline().split()[1:4])
    return (user + nice + system) / TICK


def own_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_quiet(max_wait, threshold=BUSY_CORES):
    """Wait (at most max_wait s) until other programs use < threshold cores; return that use."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy_seconds()
        time.sleep(1)
        busy = machine_busy_seconds() - before
        if busy < threshold or time.monotonic() >= deadline:
            return round(busy, 2)


# ------------------------------------------------------------ HTTP helpers


def post(port, path, body, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def flatten(value):
    if isinstance(value, list):
        return [x for item in value for x in flatten(item)]
    return [value]


def labels_of(answer):
    """The predicted classes in a V2 answer: output 'label', else the first output."""
    outputs = answer["outputs"]
    chosen = next((o for o in outputs if o["name"] == "label"), outputs[0])
    return [int(x) for x in flatten(chosen["data"])]


def v2_body(tensor, input_name):
    """A V2 request body with one input: `tensor` (shape, datatype, data) under input_name."""
    return json.dumps({"inputs": [{"name": input_name, "shape": tensor["shape"],
                                   "datatype": tensor["datatype"], "data": tensor["data"]}]})


def bench_body(input_name):
    """examples/models/iris/input.json (two rows) with the input renamed for a server."""
    return v2_body(json.loads((IRIS / "input.json").read_text())["inputs"][0], input_name)


def check_bodies(input_name):
    """The six rows of expected.json as bodies of two rows each (the bench body's shape;
    PyTriton's default max_batch_size is 4)."""
    tensor = json.loads((IRIS / "expected.json").read_text())["inputs"][0]
    width = tensor["shape"][-1]
    data = flatten(tensor["data"])
    for start in range(0, len(data), 2 * width):
        yield v2_body(dict(tensor, shape=[2, width], data=data[start:start + 2 * width]),
                      input_name)


def expected_labels(path):
    outputs = json.loads(Path(path).read_text())["outputs"]
    return [int(x) for x in next(o for o in outputs if o["name"] == "label")["data"]]


# --------------------------------------------------------------- load steps


def bench_step(report, name, concurrency):
    """One target's result at one step of an `inferd bench --json` report, with its
    error counts (a map by kind there) summed into `errors` as wrk's result has it."""
    for step in report["steps"]:
        if step.get("concurrency") == concurrency:
            for target in step["targets"]:
                if target["name"] == name:
                    kinds = target["errors"]
                    return dict(target, errors=sum(kinds.values()), error_kinds=kinds)
    raise Failed(f"no result for {name} at concurrency {concurrency} in the bench JSON")


def run_bounded(argv, timeout, env=None):
    """Run argv; return (stdout, cpu seconds it used). Kill it if it overruns."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    expired = threading.Event()

    def kill():
        expired.set()
        os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        timer.cancel()
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if expired.is_set():
        raise Failed(f"{Path(argv[0]).name} killed after {timeout} s: {out.strip()[-500:]}")
    if proc.returncode != 0:
        raise Failed(f"{Path(argv[0]).name} exited {proc.returncode}: {out.strip()[-500:]}")
    return out, usage.ru_utime + usage.ru_stime


def load_step(args, server, url, body_file, concurrency, out_dir):
    """One closed-loop step at `concurrency` connections; returns (step dict, load cpu s)."""
    bound = args.warmup + args.duration + STEP_SLACK_S
    if args.load == "inferd":
        out_json = out_dir / f"bench-{server.name}-c{concurrency}.json"
        _, cpu = run_bounded([args.inferd, "bench", "--target", f"{server.name}={url}",
                              "--input", str(body_file), "--protocol", server.protocol,
                              "--concurrency", str(concurrency), "--threads", "1",
                              "--duration", f"{args.duration}s", "--warmup", f"{args.warmup}s",
                              "--json", str(out_json)], bound)
        return bench_step(json.loads(out_json.read_text()), server.name, concurrency), cpu
    env = dict(os.environ, BODY=str(body_file))
    wrk = ["wrk", "-t1", f"-c{concurrency}", "--timeout", "10s", "-s", str(HERE / "wrk.lua")]
    cpu = 0.0
    if args.warmup > 0:
        _, cpu = run_bounded(wrk + [f"-d{args.warmup}s", url], bound, env)
    out, measured_cpu = run_bounded(wrk + [f"-d{args.duration}s", url], bound, env)
    match = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not match:
        raise Failed(f"no RESULT line from wrk: {out.strip()[-500:]}")
    return json.loads(match.group(1)), cpu + measured_cpu


# ----------------------------------------------------------- one server run


class Launched:
    """A running server: its process group, watched and stopped as a whole."""

    def __init__(self, server, log_path, live_groups):
        self.server = server
        self.live_groups = live_groups
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            server.argv, stdout=subprocess.PIPE if server.in_process else self.log,
            stderr=self.log, stdin=subprocess.DEVNULL, env=dict(os.environ, **server.env),
            start_new_session=True,
        )
        with open(live_groups, "a") as f:
            f.write(f"{self.proc.pid}\n")
        self.watch = TreeWatch(self.proc.pid)
        self.watch.start()

    def log_tail(self, lines=12):
        self.log.flush()
        text = Path(self.log_path).read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def check_alive(self):
        if self.proc.poll() is not None:
            raise Failed(f"exited with status {self.proc.returncode} during the run; "
                         f"log tail:\n{self.log_tail()}")

    def stop(self, args):
        """Stop signal, then up to STOP_GRACE_S for the whole tree to exit, then SIGKILL for
        whatever is left. Returns how many processes had to be killed."""
        self.watch.stop()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, self.server.stop_signal)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the leader once it exits
            if not tree_of(self.proc.pid, read_procs()):
                break
            time.sleep(0.1)
        leftovers = tree_of(self.proc.pid, read_procs())
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.server.ray:
            ray = Path(args.cache) / self.server.venv / "bin" / "ray"
            try:
                subprocess.run([str(ray), "stop", "--force"], capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as error:
                say(f"ray stop --force failed: {error}")
        # Anything still running from this server's session or scratch files: kill it.
        strays = set()
        for pid in tree_of(self.proc.pid, read_procs()) | processes_mentioning(args.scratch):
            strays.add(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        remaining = Path(self.live_groups).read_text().split()
        Path(self.live_groups).write_text(
            "".join(f"{g}\n" for g in remaining if g != str(self.proc.pid)))
        return len(leftovers | strays)


def processes_mentioning(text):
    """PIDs whose command line contains text (the run's scratch folder), except this
    process and its ancestors (whose arguments name the scratch folder too)."""
    procs = read_procs()
    spared = set()
    pid = os.getpid()
    while pid in procs and pid not in spared:
        spared.add(pid)
        pid = procs[pid][0]
    pids = set()
    for pid in procs:
        if pid in spared:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.add(pid)
        except OSError:
            pass
    return pids


def wait_first_answer(launched, port, path, body, deadline_s):
    """Poll the infer URL every POLL_S until it answers 200 with labels; return seconds."""
    deadline = launched.started + deadline_s
    last = "no answer"
    while time.monotonic() < deadline:
        tick = time.monotonic()
        launched.check_alive()
        try:
            status, payload = post(port, path, body, timeout=2)
            if status == 200:
                labels_of(json.loads(payload))
                return time.monotonic() - launched.started
            last = f"HTTP {status}: {payload[:200]!r}"
        except (OSError, http.client.HTTPException) as error:
            last = f"{type(error).__name__}: {error}"
        except (ValueError, KeyError, IndexError, TypeError) as error:
            last = f"unexpected answer ({error}): {payload[:200]!r}"
        time.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
    raise Failed(f"no correct answer within {deadline_s} s (last: {last}); "
                 f"log tail:\n{launched.log_tail()}")


def measure_http(args, server, port, launched, work, concurrencies, result):
    path = server.url_path
    url = f"http://127.0.0.1:{port}{path}"
    body_file = work / f"body-{server.name}.json"
    body_file.write_text(bench_body(server.input_name))
    result["url"] = url
    result["request_body"] = json.loads(body_file.read_text())

    cold = wait_first_answer(launched, port, path, body_file.read_bytes(), args.start_timeout)
    result["cold_start_s"] = round(cold, 3)
    want = expected_labels(IRIS / "expected.json")
    got = []
    for body in check_bodies(server.input_name):
        status, payload = post(port, path, body, timeout=10)
        if status != 200:
            raise Failed(f"HTTP {status} on expected.json rows: {payload[:300]!r}")
        got += labels_of(json.loads(payload))
    if got != want:
        raise Failed(f"wrong answer on expected.json: {got} (want {want})")
    result["sample_answer"] = json.loads(post(port, path, body_file.read_bytes())[1])

    for concurrency in concurrencies:
        launched.check_alive()
        cpu_before = launched.watch.cpu_seconds()
        busy_before, own_before = machine_busy_seconds(), own_cpu_seconds()
        started = time.monotonic()
        step, load_cpu = load_step(args, server, url, body_file, concurrency, work)
        wall = time.monotonic() - started
        server_cpu = launched.watch.cpu_seconds() - cpu_before
        own_cpu = own_cpu_seconds() - own_before
        other = machine_busy_seconds() - busy_before - server_cpu - load_cpu - own_cpu
        step = dict(step, concurrency=concurrency,
                    server_cpu_cores=round(server_cpu / wall, 2),
                    load_cpu_cores=round(load_cpu / wall, 2),
                    other_cpu_cores=round(max(other, 0.0) / wall, 2))
        result["steps"].append(step)
        say(f"{server.name} c={concurrency}: {step['requests_per_second']:.0f} req/s, "
            f"p50 {step['latency_us']['p50']} us, p99 {step['latency_us']['p99']} us, "
            f"errors {step.get('errors', 0)}, server CPU {step['server_cpu_cores']} cores")
    launched.check_alive()
    result["pss_after_load_mb"] = round(pss_bytes(launched.watch.sample()) / 2**20, 1)


def measure_in_process(args, server, launched, work, concurrencies, result):
    """onnxruntime floor: the script prints READY after its first run, then writes JSON."""
    line = launched.proc.stdout.readline()
    if not line.startswith(b"READY"):
        launched.proc.wait(timeout=10)
        raise Failed(f"no READY line ({line[:200]!r}); log tail:\n{launched.log_tail()}")
    result["cold_start_s"] = round(time.monotonic() - launched.started, 3)
    result["sample_answer"] = json.loads(line.split(b" ", 1)[1])
    bound = len(concurrencies) * (args.warmup + args.duration + STEP_SLACK_S)
    try:
        launched.proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        raise Failed(f"did not finish within {bound} s")
    if launched.proc.returncode != 0:
        raise Failed(f"exited {launched.proc.returncode}; log tail:\n{launched.log_tail()}")
    result["steps"] = json.loads((work / "onnxruntime-result.json").read_text())["steps"]
    for step in result["steps"]:
        say(f"{server.name} c={step['concurrency']}: {step['requests_per_second']:.0f} calls/s, "
            f"p50 {step['latency_us']['p50']} us, p99 {step['latency_us']['p99']} us")


def run_server(args, name, work, models, concurrencies, results):
    """Measure one server, filling in its entry in `results` as it goes."""
    result = {"name": name, "status": "failed", "steps": []}
    results.append(result)
    if name in args.failed_installs.split(","):
        result["error"] = "install failed (see the install log in the cache folder)"
        return
    launched = None
    try:
        port, server = make_server(name, args, work, models)
        result.update(protocol="in-process" if server.in_process else server.protocol,
                      configuration=server.config, versions=versions(args, server))
        result["other_cpu_cores_before"] = wait_quiet(args.quiet_wait)
        say(f"starting {name}")
        launched = Launched(server, work / f"{name}.log", work / "live-groups")
        if server.in_process:
            measure_in_process(args, server, launched, work, concurrencies, result)
        else:
            measure_http(args, server, port, launched, work, concurrencies, result)
        result["status"] = "ok"
    except Failed as error:
        result["error"] = str(error)
        say(f"{name} FAILED: {error}")
    except Interrupted:
        result["error"] = "interrupted"
        raise
    finally:
        if launched is not None:
            watch = launched.watch
            result["peak_rss_mb"] = round(watch.peak_rss / 2**20, 1)
            result["peak_processes"] = watch.peak_procs
            result["leftover_processes_killed"] = launched.stop(args)


def versions(args, server):
    if server.name == "inferd":
        out = subprocess.run([args.inferd, "--version"], capture_output=True, text=True)
        return {"inferd": out.stdout.strip().split()[-1] if out.stdout.strip() else "?"}
    freeze = Path(args.cache) / server.venv / ".inferd-peers-freeze"
    pins = {}
    for line in freeze.read_text().splitlines():
        if "==" in line:
            package, version = line.split("==", 1)
            pins[package.lower().replace("_", "-")] = version
    found = {p: pins.get(p, "?") for p in server.packages}
    cfg = (Path(args.cache) / server.venv / "pyvenv.cfg").read_text()
    found["python"] = re.search(r"^version(?:_info)?\s*=\s*(\S+)", cfg, re.M).group(1)
    return found


# ----------------------------------------------------------------- report


def fmt_ms(us):
    ms = us / 1000
    if ms < 1:
        return f"{ms:.3f}"
    return f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def ratio(a, b):
    if not a or not b:
        return "–"
    r = a / b
    return f"{r:.2g}×" if r < 10 else f"{r:.0f}×"


def markdown(report):
    cs = report["settings"]["concurrency"]
    rows = [r for r in report["servers"]]
    head = ["server", "cold start s", "peak RSS MB", "procs"]
    for c in cs:
        head += [f"req/s @{c}", f"p50 ms @{c}", f"p99 ms @{c}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for r in rows:
        if r["status"] != "ok" and not r["steps"]:
            lines.append(f"| {r['name']} | failed: see below |" + " |" * (len(head) - 2))
            notes.append(f"- **{r['name']}** failed: {r.get('error', '?').splitlines()[0]}")
            continue
        cells = [r["name"] + (" (in-process)" if r.get("protocol") == "in-process" else ""),
                 f"{r.get('cold_start_s', 0):.2f}", f"{r.get('peak_rss_mb', 0):.0f}",
                 str(r.get("peak_processes", ""))]
        steps = {s["concurrency"]: s for s in r["steps"]}
        for c in cs:
            s = steps.get(c)
            if not s:
                cells += ["–"] * 3
                continue
            errors = s.get("errors", 0)
            mark = f" ({errors} err)" if errors else ""
            cells += [f"{s['requests_per_second']:.0f}{mark}",
                      fmt_ms(s["latency_us"]["p50"]), fmt_ms(s["latency_us"]["p99"])]
        lines.append("| " + " | ".join(cells) + " |")
        busy = [f"{s.get('other_cpu_cores')} @{s['concurrency']}" for s in r["steps"]
                if s.get("other_cpu_cores", 0) > BUSY_CORES]
        if busy:
            notes.append(f"- {r['name']}: other programs kept CPU busy during the load "
                         f"(cores @connections: {', '.join(busy)}); its figures are noisy")
        if r["status"] != "ok":
            notes.append(f"- **{r['name']}** stopped early: {r.get('error', '?').splitlines()[0]}")

    inferd = next((r for r in rows if r["name"] == "inferd" and r["status"] == "ok"), None)
    out = ["## Results", "", *lines, ""]
    if inferd:
        isteps = {s["concurrency"]: s for s in inferd["steps"]}
        head = ["inferd vs", "cold start", "peak RSS"]
        head += [f"req/s @{c}" for c in cs] + [f"p50 @{c}" for c in cs] + [f"p99 @{c}" for c in cs]
        ratio_lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            if r is inferd or not r["steps"]:
                continue
            steps = {s["concurrency"]: s for s in r["steps"]}
            cells = [r["name"], ratio(r.get("cold_start_s"), inferd.get("cold_start_s")),
                     ratio(r.get("peak_rss_mb"), inferd.get("peak_rss_mb"))]
            for key in ("rps", "p50", "p99"):
                for c in cs:
                    a, b = isteps.get(c), steps.get(c)
                    if not a or not b:
                        cells.append("–")
                    elif key == "rps":
                        cells.append(ratio(a["requests_per_second"], b["requests_per_second"]))
                    else:
                        cells.append(ratio(b["latency_us"][key], a["latency_us"][key]))
            ratio_lines.append("| " + " | ".join(cells) + " |")
    if inferd and len(ratio_lines) > 2:
        out += ["Ratios: how many times inferd is ahead (peer cold start, RSS and latency ÷ "
                "inferd's; inferd req/s ÷ peer's). Above 1 favours inferd.", "", *ratio_lines, ""]
    s = report["settings"]
    out += [f"Load: {s['load']}, closed loop, {s['duration_s']} s per step after "
            f"{s['warmup_s']} s warm-up; body {s['body']}. Machine: {report['machine']['cpus']} "
            f"CPUs, {report['machine']['memory_gib']} GiB. Run took {report['wall_s']:.0f} s.",
            "Peak RSS sums every process of the server's tree (shared pages counted in each).",
            *notes, ""]
    return "\n".join(out)


# ------------------------------------------------------------------- main


def say(message):
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def on_signal(signum, _frame):
    # One is enough: let the cleanup that follows run undisturbed.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def machine():
    info = {"cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}
    with open("/proc/meminfo") as f:
        info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    with open("/proc/cpuinfo") as f:
        info["cpu_model"] = next((line.split(":", 1)[1].strip() for line in f
                                  if line.startswith("model name")), "?")
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", required=True)
    parser.add_argument("--failed-installs", default="")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--inferd", required=True)
    parser.add_argument("--load", choices=("inferd", "wrk"), required=True)
    parser.add_argument("--duration", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--concurrency", required=True)
    parser.add_argument("--start-timeout", type=int, default=120)
    parser.add_argument("--quiet-wait", type=int, default=30)
    parser.add_argument("--json", required=True, type=Path)
    parser.add_argument("--markdown", required=True, type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    work = Path(args.scratch)
    models = work / "models"
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    started = time.monotonic()
    report = {
        "suite": "benchmarks/peers",
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {"load": "inferd bench" if args.load == "inferd" else "wrk 1 thread",
                     "duration_s": args.duration, "warmup_s": args.warmup,
                     "concurrency": concurrencies,
                     "body": "examples/models/iris/input.json (2 rows), input renamed per server",
                     "cold_start_poll_ms": POLL_S * 1000, "rss_sample_ms": SAMPLE_S * 1000},
        "venv_sizes_mb": venv_sizes(Path(args.cache)),
        "servers": [],
    }

    def save():
        report["wall_s"] = round(time.monotonic() - started, 1)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        args.markdown.write_text(markdown(report))

    try:
        for name in args.servers.split(","):
            run_server(args, name, work, models, concurrencies, report["servers"])
            save()
    except Interrupted as why:
        say(f"interrupted ({why}); partial results saved")
        save()
        return 130
    save()
    return 0


def venv_sizes(cache):
    sizes = {}
    for venv in sorted(p for p in cache.iterdir() if (p / ".inferd-peers-pins").exists()):
        total = 0
        for root, _, files in os.walk(venv):
            for f in files:
                try:
                    total += os.lstat(os.path.join(root, f)).st_blocks * 512
                except OSError:
                    pass
        sizes[venv.name] = round(total / 2**20)
    return sizes


if __name__ == "__main__":
    sys.exit(main())
