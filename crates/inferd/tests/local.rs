//! The local control plane end to end: `inferd up` with real replica
//! processes behind the router, driven by the CLI and the admin API.

#[path = "../../../tests/support/http.rs"]
mod http;
#[path = "support/serve.rs"]
mod serve;
#[path = "support/up.rs"]
mod up;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serve::repo;
use up::{Up, alive, iris_model, iris_request, isvc_yaml, wait_gone};

const INFER: &str = "/v2/models/iris/infer";

/// One inference through the router: (status, serving revision).
fn infer(router: SocketAddr, pin: Option<&str>) -> (u16, String) {
    let body = iris_request();
    let mut raw = format!(
        "POST {INFER} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(pin) = pin {
        raw.push_str(&format!("x-inferd-revision: {pin}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(&body);
    let reply = http::send_raw(router, raw.as_bytes());
    (
        reply.status,
        reply.header("x-inferd-revision").unwrap_or("").to_owned(),
    )
}

/// Closed-loop load from `clients` threads until stopped: every status and
/// serving revision seen.
struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered so far, by every client.
    answered: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<Vec<(u16, String)>>>,
}

impl Load {
    fn start(router: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let answered = Arc::clone(&answered);
                thread::spawn(move || {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) && seen.len() < 100_000 {
                        seen.push(infer(router, None));
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    seen
                })
            })
            .collect();
        Load {
            stop,
            answered,
            threads,
        }
    }

    /// Waits until `n` more requests have been answered (a minute at most).
    fn wait_answers(&self, n: usize) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the load got no {n} answers in a minute"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().expect("load thread"))
            .collect()
    }
}

fn failures(seen: &[(u16, String)]) -> Vec<&(u16, String)> {
    seen.iter().filter(|(status, _)| *status != 200).collect()
}

/// A copy of the iris model in its own folder: same answers, another
/// storage URI, so applying it makes a new revision.
fn iris_copy(dir: &Path, name: &str) -> std::path::PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).expect("mkdir");
    let path = folder.join("model.onnx");
    std::fs::copy(iris_model(), &path).expect("copy model");
    path
}

#[test]
fn up_serves_the_example_and_the_cli_reports_it() {
    let up = Up::start(&["-f", repo("examples/iris.yaml").to_str().expect("utf-8")]);
    // The first request may arrive before the replica is ready: the router
    // holds it and serves it once it is.
    let reply = http::post(up.router, INFER, &iris_request());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-inferd-revision"), Some("iris-00001"));
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("examples/models/iris/expected.json")).expect("expected"),
    )
    .expect("json");
    let got = reply.json();
    assert_eq!(got["model_name"], "iris");
    assert_eq!(
        got["outputs"].as_array().map(Vec::len),
        expected["outputs"].as_array().map(Vec::len)
    );

    let view = up.wait_until("iris", "ready", |v| v.ready());
    let status = view.service.status.clone().expect("status");
    assert_eq!(status.latest_ready_revision.as_deref(), Some("iris-00001"));
    assert_eq!(status.traffic[0].percent, 100);

    let table = up.ok(&["get", "isvc"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "URL", "READY", "PREV", "LATEST", "REPLICAS", "AGE"]
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(row[0], "iris");
    assert_eq!(row[1], format!("http://{}/v2/models/iris", up.router));
    assert_eq!(row[2], "True");
    assert_eq!(row[3], "100", "LATEST column (no PREV): {table}");

    let yaml = up.ok(&["get", "revisions", "iris", "-o", "yaml"]);
    assert!(yaml.contains("name: iris-00001"), "{yaml}");
    assert!(yaml.contains("trafficPercent: 100"), "{yaml}");
    // The status is written back in the resource's own fields.
    let isvc_yaml = up.ok(&["get", "isvc", "iris", "-o", "yaml"]);
    assert!(
        isvc_yaml.contains("latestReadyRevision: iris-00001"),
        "{isvc_yaml}"
    );

    let describe = up.ok(&["describe", "isvc", "iris"]);
    for needle in [
        "Conditions:",
        "Ready",
        "iris-00001",
        "Events:",
        "ReplicaReady",
    ] {
        assert!(describe.contains(needle), "no {needle} in\n{describe}");
    }
    let logs = up.ok(&["logs", "iris", "--tail", "50"]);
    assert!(logs.contains("listening on"), "{logs}");
    // Following: the lines so far, then new ones as they come.
    let mut follow = serve::inferd()
        .args(["logs", "iris", "-f", "--state-dir"])
        .arg(up.state_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let first = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"));
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        first.is_some_and(|l| l.starts_with("[iris-00001-")),
        "logs -f printed no replica line"
    );

    // The admin API wants its token.
    let admin = std::fs::read_to_string(up.state_dir().join("admin.json")).expect("admin.json");
    let admin: serde_json::Value = serde_json::from_str(&admin).expect("json");
    let admin_addr: SocketAddr = admin["adminUrl"]
        .as_str()
        .expect("url")
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    assert_eq!(http::get(admin_addr, "/v1/services").status, 401);

    let pids = up.replica_pids("iris");
    assert!(!pids.is_empty());
    up.ok(&["delete", "isvc", "iris"]);
    wait_gone(&pids);
    assert_eq!(http::post(up.router, INFER, &iris_request()).status, 404);
    let out = up.cli(&["get", "isvc", "iris"]);
    assert!(!out.status.success());
}

#[test]
fn canary_takes_its_share_then_promotion_moves_everything() {
    let dir = tempfile::tempdir().expect("tmp");
    let v1 = iris_copy(dir.path(), "v1");
    let v2 = iris_copy(dir.path(), "v2");
    let up = Up::start(&[]);
    let out = up.apply_yaml(&isvc_yaml("iris", &v1, "", ""));
    assert!(out.status.success(), "{out:?}");
    up.wait_until("iris", "v1 ready", |v| v.ready());

    // A traffic-only change makes no revision.
    let out = up.apply_yaml(&isvc_yaml("iris", &v1, "timeoutSeconds: 20", ""));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no new revision"),
        "{out:?}"
    );

    let out = up.apply_yaml(&isvc_yaml("iris", &v2, "canaryTrafficPercent: 20", ""));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("iris-00002"),
        "{out:?}"
    );
    up.wait_until("iris", "canary split", |v| {
        v.revisions
            .iter()
            .any(|r| r.name == "iris-00002" && r.traffic_percent == 20)
    });
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..1000 {
        let (status, revision) = infer(up.router, None);
        assert_eq!(status, 200);
        *served.entry(revision).or_default() += 1;
    }
    let canary = served.get("iris-00002").copied().unwrap_or(0);
    assert!(
        (160..=240).contains(&canary),
        "canary served {canary} of 1000: {served:?}"
    );
    assert_eq!(
        served.get("iris-00001").copied().unwrap_or(0),
        1000 - canary
    );
    // Tags reach either arm directly.
    assert_eq!(infer(up.router, Some("latest")).1, "iris-00002");
    assert_eq!(infer(up.router, Some("prev")).1, "iris-00001");
    assert_eq!(infer(up.router, Some("iris-00001")).1, "iris-00001");
    let table = up.ok(&["get", "isvc"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!((row[3], row[4]), ("80", "20"), "{table}");

    let old_pids: Vec<u32> = up
        .view("iris")
        .revisions
        .iter()
        .filter(|r| r.name == "iris-00001")
        .flat_map(|r| r.replicas.iter().filter_map(|x| x.pid))
        .collect();
    assert!(!old_pids.is_empty());
    // Promote.
    let out = up.apply_yaml(&isvc_yaml("iris", &v2, "", ""));
    assert!(out.status.success());
    up.wait_until("iris", "promoted", |v| {
        v.revisions
            .iter()
            .any(|r| r.name == "iris-00002" && r.traffic_percent == 100)
    });
    for _ in 0..50 {
        assert_eq!(infer(up.router, None), (200, "iris-00002".to_owned()));
    }
    wait_gone(&old_pids);
    let view = up.view("iris");
    let old = view
        .revisions
        .iter()
        .find(|r| r.name == "iris-00001")
        .expect("old");
    assert_eq!(old.state, "Retired");
    assert!(old.replicas.is_empty());
}

#[test]
fn a_rollout_under_load_fails_no_request() {
    let dir = tempfile::tempdir().expect("tmp");
    let v1 = iris_copy(dir.path(), "v1");
    let v2 = iris_copy(dir.path(), "v2");
    let up = Up::start(&[]);
    assert!(
        up.apply_yaml(&isvc_yaml("iris", &v1, "minReplicas: 2", ""))
            .status
            .success()
    );
    up.wait_until("iris", "2 ready", |v| v.ready_replicas() == 2);
    let load = Load::start(up.router, 4);
    load.wait_answers(20);
    assert!(
        up.apply_yaml(&isvc_yaml("iris", &v2, "minReplicas: 2", ""))
            .status
            .success()
    );
    up.wait_until("iris", "v2 takes all, v1 stopped", |v| {
        v.revisions
            .iter()
            .any(|r| r.name == "iris-00002" && r.traffic_percent == 100)
            && v.revisions
                .iter()
                .any(|r| r.name == "iris-00001" && r.replicas.is_empty())
    });
    load.wait_answers(20);
    let seen = load.finish();
    assert!(
        failures(&seen).is_empty(),
        "failed: {:?}",
        &failures(&seen)[..failures(&seen).len().min(5)]
    );
    for rev in ["iris-00001", "iris-00002"] {
        assert!(seen.iter().any(|(_, r)| r == rev), "{rev} served nothing");
    }
}

#[test]
fn a_killed_replica_is_retried_around_and_restarted() {
    let up = Up::start(&[]);
    let model = iris_model();
    assert!(
        up.apply_yaml(&isvc_yaml("iris", &model, "minReplicas: 2", ""))
            .status
            .success()
    );
    up.wait_until("iris", "2 ready", |v| v.ready_replicas() == 2);
    let victim = up.replica_pids("iris")[0];
    let load = Load::start(up.router, 4);
    load.wait_answers(20);
    let status = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let view = up.wait_until("iris", "restarted and ready", |v| {
        v.ready_replicas() == 2 && v.revisions[0].replicas.iter().any(|r| r.restarts >= 1)
    });
    load.wait_answers(20);
    let seen = load.finish();
    assert!(
        failures(&seen).is_empty(),
        "failed: {:?}",
        failures(&seen).len()
    );
    assert!(seen.len() > 20);
    let restarted = view.revisions[0]
        .replicas
        .iter()
        .find(|r| r.restarts >= 1)
        .expect("restarted replica");
    assert!(
        restarted.last_exit.as_deref().unwrap_or("").contains('9'),
        "{restarted:?}"
    );
    assert!(!alive(victim));
    let describe = up.ok(&["describe", "isvc", "iris"]);
    assert!(describe.contains("restarts 1"), "{describe}");
}

#[test]
fn load_scales_up_idle_scales_to_zero_and_the_next_request_is_served() {
    let up = Up::start(&[]);
    let model = iris_model();
    let annotations = "autoscaling.knative.dev/window: 6s\nautoscaling.knative.dev/scale-to-zero-grace-period: 6s";
    let yaml = isvc_yaml(
        "iris",
        &model,
        "minReplicas: 0\nmaxReplicas: 3\nscaleTarget: 1\ncontainerConcurrency: 1",
        annotations,
    );
    assert!(up.apply_yaml(&yaml).status.success());
    up.wait_until("iris", "ready", |v| v.ready());
    let load = Load::start(up.router, 6);
    let view = up.wait_until("iris", "scaled up", |v| {
        v.revisions[0].desired_replicas >= 2
    });
    let seen = load.finish();
    assert!(failures(&seen).is_empty(), "{:?}", failures(&seen).len());
    assert!(view.revisions[0].desired_replicas <= 3);
    let events = up.view("iris").events;
    assert!(
        events
            .iter()
            .any(|e| e.reason == "Scaled" && e.message.contains("[panic]")),
        "the load step did not panic: {events:?}"
    );
    // Idle: stable window, then the grace period, then zero.
    let pids = up.replica_pids("iris");
    up.wait_until("iris", "scaled to zero", |v| {
        v.revisions[0].replicas.is_empty() && v.revisions[0].state == "ScaledToZero"
    });
    wait_gone(&pids);
    // Cold start: the request is held while a replica starts.
    let started = Instant::now();
    let (status, revision) = infer(up.router, None);
    assert_eq!((status, revision.as_str()), (200, "iris-00001"));
    eprintln!("served from zero in {:?}", started.elapsed());
    assert_eq!(up.view("iris").ready_replicas(), 1);
    // The request it served is demand: once the autoscaler has counted it
    // (a stable average above zero), its decision keeps the replica for a
    // stable window (6 s) instead of scaling straight back to zero.
    let view = up.wait_until("iris", "the served request counted as demand", |v| {
        v.revisions[0]
            .autoscaler
            .as_deref()
            .and_then(|a| a.split("stable avg ").nth(1))
            .and_then(|a| a.split(',').next())
            .and_then(|a| a.trim().parse::<f64>().ok())
            .is_some_and(|avg| avg > 0.0)
    });
    assert!(view.revisions[0].desired_replicas >= 1, "{:?}", view.events);
    assert!(view.ready_replicas() >= 1, "{:?}", view.events);
    assert!(
        !view
            .events
            .iter()
            .skip_while(|e| e.reason != "Activating")
            .any(|e| e.message.contains("-> 0 replica")),
        "scaled back to zero right after serving: {:?}",
        view.events
    );
}

#[test]
fn bad_specs_and_bad_storage_never_stop_what_serves() {
    let dir = tempfile::tempdir().expect("tmp");
    let up = Up::start(&[]);
    let model = iris_model();
    assert!(
        up.apply_yaml(&isvc_yaml("iris", &model, "", ""))
            .status
            .success()
    );
    up.wait_until("iris", "ready", |v| v.ready());

    // Invalid specs are refused whole, with the field's path.
    let bad = isvc_yaml("iris", &model, "minReplicas: -1", "");
    let out = up.apply_yaml(&bad);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("minReplicas"),
        "{out:?}"
    );
    let bad = isvc_yaml("iris", &model, "", "autoscaling.knative.dev/window: 1s");
    let out = up.apply_yaml(&bad);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stableWindow"),
        "{out:?}"
    );
    let two = format!(
        "{}---\n{}",
        isvc_yaml("other", &model, "", ""),
        isvc_yaml("iris", &model, "maxReplicas: 0\nminReplicas: 2", "")
    );
    let out = up.apply_yaml(&two);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        up.cli(&["get", "isvc", "other"]).status.code() != Some(0),
        "nothing applied"
    );
    let view = up.view("iris");
    assert_eq!((view.generation, view.revisions.len()), (1, 1));

    // Bad storage: a missing file, a wrong sha256, a corrupt model.
    let missing = dir.path().join("absent/model.onnx");
    let wrong_sha = format!("sha256: \"{}\"", "0".repeat(64));
    let corrupt = dir.path().join("corrupt/model.onnx");
    std::fs::create_dir_all(corrupt.parent().expect("parent")).expect("mkdir");
    std::fs::write(&corrupt, b"this is not an onnx model").expect("write");
    let not_found = not_found_server();
    let url = format!("http://{not_found}/models/iris/model.onnx");
    let cases: [(&Path, &str, &str); 4] = [
        (&missing, "", "absent"),
        (Path::new(&url), "", "not found"),
        (&model, &wrong_sha, "checksum mismatch"),
        (&corrupt, "", ""),
    ];
    for (i, (path, model_extra, needle)) in cases.iter().enumerate() {
        let mut yaml = isvc_yaml("iris", path, "", "");
        if !model_extra.is_empty() {
            yaml = yaml.replace(
                "      format: onnx\n",
                &format!("      format: onnx\n      {model_extra}\n"),
            );
        }
        let out = up.apply_yaml(&yaml);
        assert!(out.status.success(), "{out:?}");
        let name = format!("iris-{:05}", i + 2);
        let view = up.wait_until("iris", "the new revision failed", |v| {
            v.revisions
                .iter()
                .any(|r| r.name == name && r.state == "Failed")
        });
        let failed = view.revisions.iter().find(|r| r.name == name).expect("rev");
        assert!(
            failed.reason.as_deref().unwrap_or("").contains(needle),
            "{failed:?}"
        );
        // The first revision still takes everything.
        for _ in 0..20 {
            assert_eq!(infer(up.router, None), (200, "iris-00001".to_owned()));
        }
        let status = view.service.status.clone().expect("status");
        assert_eq!(status.latest_ready_revision.as_deref(), Some("iris-00001"));
        assert_eq!(
            status.latest_created_revision.as_deref(),
            Some(name.as_str())
        );
        assert!(view.ready());
        if needle.is_empty() {
            // The corrupt model's replicas crash loop: a condition says so.
            let crash = status
                .conditions
                .iter()
                .find(|c| c.type_ == "ReplicasHealthy")
                .expect("ReplicasHealthy condition");
            assert_eq!(crash.status, "False", "{crash:?}");
            assert_eq!(crash.reason.as_deref(), Some("CrashLoopBackOff"));
        }
        // A request pinned to the failed revision gets its reason.
        let (code, _) = infer(up.router, Some("latest"));
        assert_eq!(code, 503);
    }
}

#[test]
fn a_kserve_inference_service_runs_as_is() {
    // With a multi-threaded router runtime (the default is one thread).
    let up = Up::start(&[
        "--router-threads",
        "3",
        "-f",
        repo("examples/kserve-iris.yaml").to_str().expect("utf-8"),
    ]);
    assert_eq!(infer(up.router, None), (200, "iris-00001".to_owned()));
    let view = up.wait_until("iris", "ready", |v| v.ready());
    let predictor = &view.service.spec.predictor;
    assert_eq!(predictor.max_replicas, Some(4));
    assert_eq!(predictor.container_concurrency, Some(100));
    assert_eq!(
        predictor.batching.as_ref().map(|b| b.max_batch_size),
        Some(32)
    );
}

/// An HTTP server on loopback that answers 404 to everything.
fn not_found_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            use std::io::{Read, Write};
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
            );
        }
    });
    addr
}

#[test]
fn up_resumes_stored_services_and_leaves_no_replica_behind() {
    let mut up = Up::start(&[]);
    let model = iris_model();
    assert!(
        up.apply_yaml(&isvc_yaml("iris", &model, "", ""))
            .status
            .success()
    );
    up.wait_until("iris", "ready", |v| v.ready());
    let pids = up.replica_pids("iris");
    // Ctrl-C: replicas drain and stop; the state stays.
    up.signal("INT");
    assert!(up.wait_exit().success());
    wait_gone(&pids);
    let state = std::mem::replace(&mut up.state, tempfile::tempdir().expect("tmp"));
    drop(up);
    let up = Up::start_in(state, &[]);
    assert_eq!(infer(up.router, None), (200, "iris-00001".to_owned()));
    // SIGKILL of `up` itself: the replicas see their pipe close and exit.
    let pids = up.replica_pids("iris");
    assert!(!pids.is_empty());
    up.signal("KILL");
    wait_gone(&pids);
}

#[test]
fn gpus_are_given_whole_and_never_over_committed() {
    let up = Up::start(&["--gpus", "0,1"]);
    let model = iris_model();
    let yaml = isvc_yaml("iris", &model, "minReplicas: 3\nresources:\n  gpu: 1", "");
    assert!(up.apply_yaml(&yaml).status.success());
    let view = up.wait_until("iris", "2 ready, 1 pending", |v| {
        v.ready_replicas() == 2 && v.revisions[0].reason.is_some()
    });
    let revision = &view.revisions[0];
    assert!(
        revision.reason.as_deref().unwrap_or("").contains("GPU"),
        "{revision:?}"
    );
    let mut given: Vec<String> = revision
        .replicas
        .iter()
        .flat_map(|r| r.gpus.clone())
        .collect();
    given.sort();
    assert_eq!(given, ["0", "1"]);
    for replica in &revision.replicas {
        let pid = replica.pid.expect("pid");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let env = String::from_utf8_lossy(&environ);
        let want = format!("CUDA_VISIBLE_DEVICES={}", replica.gpus.join(","));
        assert!(
            env.split('\0').any(|kv| kv == want),
            "{want} not in {pid}'s env"
        );
    }
    // More GPUs per replica than the machine has: refused at apply.
    let yaml = isvc_yaml("big", &model, "resources:\n  gpu: 3", "");
    let out = up.apply_yaml(&yaml);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resources.gpu"),
        "{out:?}"
    );
}

/// What the control plane decided for a service: each revision's share,
/// tags and whether it is retired.
fn decisions(view: &inferd_control::local::ServiceView) -> Vec<(String, u32, Vec<String>, bool)> {
    view.revisions
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.traffic_percent,
                r.tags.clone(),
                r.state == "Retired",
            )
        })
        .collect()
}

/// Where 200 requests went, by revision.
fn served_by(router: SocketAddr) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    for _ in 0..200 {
        let (status, revision) = infer(router, None);
        assert_eq!(status, 200);
        *served.entry(revision).or_default() += 1;
    }
    served
}

/// Stops `up` with `signal`, starts it again on the same state directory,
/// and checks that it decides what it decided before, at once.
fn restart(up: Up, signal: &str) -> Up {
    let before = decisions(&up.view("iris"));
    let pids: Vec<u32> = up.replica_pids("iris");
    up.signal(signal);
    let mut up = up;
    let _ = up.wait_exit();
    wait_gone(&pids);
    let state = std::mem::replace(&mut up.state, tempfile::tempdir().expect("tmp"));
    drop(up);
    let up = Up::start_in(state, &[]);
    // The first plan after the restart, before any replica is ready again.
    let view = up.wait_until("iris", "planned", |v| {
        v.service
            .status
            .as_ref()
            .is_some_and(|s| !s.traffic.is_empty())
    });
    assert_eq!(decisions(&view), before, "after a restart ({signal})");
    up.wait_until("iris", "ready again", |v| v.ready());
    assert_eq!(
        decisions(&up.view("iris")),
        before,
        "once ready again ({signal})"
    );
    up
}

#[test]
fn a_restart_at_every_step_of_a_canary_changes_no_decision() {
    let dir = tempfile::tempdir().expect("tmp");
    let v1 = iris_copy(dir.path(), "v1");
    let v2 = iris_copy(dir.path(), "v2");
    let up = Up::start(&[]);
    assert!(
        up.apply_yaml(&isvc_yaml("iris", &v1, "", ""))
            .status
            .success()
    );
    up.wait_until("iris", "v1 ready", |v| v.ready());
    let up = restart(up, "KILL");
    assert_eq!(served_by(up.router).get("iris-00001"), Some(&200));

    // The canary: 80/20, kept across a SIGKILL and a SIGINT.
    let out = up.apply_yaml(&isvc_yaml("iris", &v2, "canaryTrafficPercent: 20", ""));
    assert!(out.status.success(), "{out:?}");
    up.wait_until("iris", "canary split", |v| {
        v.revisions
            .iter()
            .any(|r| r.name == "iris-00002" && r.traffic_percent == 20 && r.ready_replicas > 0)
    });
    let up = restart(up, "KILL");
    let up = restart(up, "INT");
    let served = served_by(up.router);
    assert!(
        served.get("iris-00002").copied().unwrap_or(0) > 0,
        "{served:?}"
    );
    assert!(
        served.get("iris-00001").copied().unwrap_or(0) > 0,
        "{served:?}"
    );
    // The same spec again is unchanged, and so is the split.
    let out = up.apply_yaml(&isvc_yaml("iris", &v2, "canaryTrafficPercent: 20", ""));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unchanged"),
        "{out:?}"
    );

    // Promote.
    assert!(
        up.apply_yaml(&isvc_yaml("iris", &v2, "", ""))
            .status
            .success()
    );
    up.wait_until("iris", "promoted", |v| {
        v.revisions
            .iter()
            .any(|r| r.name == "iris-00002" && r.traffic_percent == 100)
    });
    let up = restart(up, "KILL");
    assert_eq!(served_by(up.router).get("iris-00002"), Some(&200));

    // Roll back after the promotion: the previous revision takes all again.
    let out = up.apply_yaml(&isvc_yaml("iris", &v2, "canaryTrafficPercent: 0", ""));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no new revision"),
        "{out:?}"
    );
    up.wait_until("iris", "rolled back", |v| {
        v.revisions
            .iter()
            .any(|r| r.name == "iris-00001" && r.traffic_percent == 100 && r.ready_replicas > 0)
    });
    assert_eq!(served_by(up.router).get("iris-00001"), Some(&200));
    let table = up.ok(&["get", "isvc"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!((row[3], row[4]), ("100", "0"), "{table}");
    let up = restart(up, "KILL");
    assert_eq!(served_by(up.router).get("iris-00001"), Some(&200));
    // The newest stays reachable by its tag.
    assert_eq!(infer(up.router, Some("latest")).1, "iris-00002");
}

#[test]
fn apply_refuses_a_file_with_no_inference_service() {
    let up = Up::start(&[]);
    for text in ["", "\n", "# only a comment\n", "---\n"] {
        let out = up.apply_yaml(text);
        assert!(!out.status.success(), "{text:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no InferenceService in"), "{text:?}: {err}");
    }
    // `up -f` refuses one as well, before starting anything.
    let empty = up.state_dir().join("empty.yaml");
    std::fs::write(&empty, "").expect("write");
    let out = serve::inferd()
        .args(["up", "--port", "0", "--grpc-port", "0", "--state-dir"])
        .arg(tempfile::tempdir().expect("tmp").path())
        .arg("-f")
        .arg(&empty)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run inferd up");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no InferenceService in"),
        "{out:?}"
    );
    assert!(!up.ok(&["get", "isvc"]).contains("iris"));
}

/// The `limits (ENFORCER): ...` line a replica's log starts with.
fn limits_line(up: &Up) -> String {
    let logs = up.ok(&["logs", "iris"]);
    logs.lines()
        .find(|l| l.contains("limits ("))
        .unwrap_or_else(|| panic!("no limits line in the replica's log:\n{logs}"))
        .to_owned()
}

/// A control group file of `pid` in the v1 hierarchy `controller`, or the
/// v2 one.
fn cgroup_file(pid: u32, controller: &str, v1: &str, v2: &str) -> String {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let v1_path = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| format!("/sys/fs/cgroup/{controller}{path}/{v1}"))
    });
    let path = v1_path.unwrap_or_else(|| {
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("v2 group");
        format!("/sys/fs/cgroup{path}/{v2}")
    });
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_owned()
}

#[test]
fn resources_are_enforced_on_replicas() {
    let dir = tempfile::tempdir().expect("tmp");
    let v1 = iris_copy(dir.path(), "v1");
    let v2 = iris_copy(dir.path(), "v2");
    let resources = "resources:\n  cpu: 250m\n  memory: 256Mi";
    for mode in ["auto", "rlimit"] {
        let up = Up::start(&["--replica-limits", mode]);
        assert!(
            up.apply_yaml(&isvc_yaml("iris", &v1, resources, ""))
                .status
                .success()
        );
        up.wait_until("iris", "ready", |v| v.ready());
        assert_eq!(infer(up.router, None).0, 200);
        let line = limits_line(&up);
        let pid = up.replica_pids("iris")[0];
        if line.contains("(cgroup") {
            assert_eq!(mode, "auto", "{line}");
            assert_eq!(
                cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max"),
                "268435456"
            );
            if line.contains("cgroup v1") {
                assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us", ""), "25000");
            } else {
                assert_eq!(cgroup_file(pid, "cpu", "", "cpu.max"), "25000 100000");
            }
        } else {
            assert!(line.contains("(rlimit)"), "{line}");
            let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
            let data = limits
                .lines()
                .find(|l| l.starts_with("Max data size"))
                .expect("data");
            assert!(data.contains("268435456"), "{data}");
        }

        // Too little memory to load the model: the new revision fails with
        // the reason, and the one before keeps serving.
        let small = "resources:\n  cpu: 250m\n  memory: 1Mi";
        assert!(
            up.apply_yaml(&isvc_yaml("iris", &v2, small, ""))
                .status
                .success()
        );
        let view = up.wait_until("iris", "the small revision fails", |v| {
            v.revisions
                .iter()
                .any(|r| r.name == "iris-00002" && r.state == "Failed")
        });
        if line.contains("(cgroup") {
            // The kernel's kill is named for what it is.
            let failed = view
                .revisions
                .iter()
                .find(|r| r.name == "iris-00002")
                .and_then(|r| r.reason.clone())
                .unwrap_or_default();
            assert!(failed.contains("out of memory"), "{failed}");
        }
        for _ in 0..20 {
            assert_eq!(infer(up.router, None), (200, "iris-00001".to_owned()));
        }
    }
}

#[test]
fn the_router_refuses_hostile_bodies_itself_with_the_replicas_limits() {
    let up = Up::start(&[
        "-f",
        repo("examples/iris.yaml").to_str().expect("utf-8"),
        "--max-body-bytes",
        "2048",
        "--body-read-timeout",
        "500ms",
    ]);
    let reply = http::post(up.router, INFER, &iris_request());
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Every replica was given the router's limits.
    let pids = up.replica_pids("iris");
    assert!(!pids.is_empty());
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        for (flag, value) in [
            ("--max-body-bytes", "2048"),
            ("--body-read-timeout", "500ms"),
        ] {
            assert!(
                args.windows(2).any(|w| w[0] == flag && w[1] == value),
                "{flag} {value} not in {args:?}"
            );
        }
    }
    // A body over the limit: 413 from the router every time, never a
    // replica failure or a retry.
    let big = vec![b' '; 4096];
    for i in 0..10 {
        let reply = http::request(up.router, "POST", INFER, &big);
        assert_eq!(reply.status, 413, "{i}: {}", reply.text());
    }
    let metrics = http::get(up.router, "/metrics").text();
    for line in [
        r#"inferd_router_rejected_total{service="iris",reason="body_too_large"} 10"#,
        r#"inferd_router_retries_total{service="iris",revision="iris-00001"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    assert!(!metrics.contains(r#"code="502""#), "{metrics}");
    // Bodies that stop coming: a good request is served meanwhile, and
    // each gets 408 from the router.
    let mut slow: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut tcp = std::net::TcpStream::connect(up.router).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let head =
                format!("POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{");
            std::io::Write::write_all(&mut tcp, head.as_bytes()).expect("write");
            tcp
        })
        .collect();
    let reply = http::post(up.router, INFER, &iris_request());
    assert_eq!(reply.status, 200, "{}", reply.text());
    for tcp in &mut slow {
        let reply = http::read_reply(tcp);
        assert_eq!(reply.status, 408, "{}", reply.text());
    }
}

/// `inferd ARGS...` expected to exit on its own (60 s at most): its exit
/// status and stderr.
fn run_to_exit(args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut child = serve::inferd()
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn inferd");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("inferd {args:?} did not exit");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status, stderr)
}

/// `inferd up` on `state`: refused, with every needle in the message.
fn up_refuses(state: &Path, needles: &[&str]) {
    let (status, stderr) = run_to_exit(&[
        "up".as_ref(),
        "--port".as_ref(),
        "0".as_ref(),
        "--grpc-port".as_ref(),
        "0".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    assert!(
        !status.success(),
        "started on {}: {stderr}",
        state.display()
    );
    for needle in needles {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
    assert!(
        !state.join("admin.json").exists(),
        "no admin API was started"
    );
}

#[test]
fn up_refuses_a_state_dir_or_token_it_does_not_own_alone() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let nobody = 65534;
    let dir = tempfile::tempdir().expect("tmp");

    // A state directory made by `nobody`, with a token it chose (0644).
    let planted = dir.path().join("planted");
    std::fs::create_dir(&planted).expect("mkdir");
    chmod(&planted, 0o700);
    let token = planted.join("token");
    std::fs::write(&token, "t".repeat(64)).expect("token");
    chmod(&token, 0o644);
    std::os::unix::fs::chown(&token, Some(nobody), Some(nobody)).expect("chown token");
    std::os::unix::fs::chown(&planted, Some(nobody), Some(nobody)).expect("chown dir");
    up_refuses(
        &planted,
        &[
            &planted.display().to_string(),
            "owned by uid 65534",
            "mode 0700",
            "--state-dir",
        ],
    );
    // Given back to this user: now the token is the problem.
    std::os::unix::fs::chown(&planted, Some(0), Some(0)).expect("chown dir back");
    up_refuses(
        &planted,
        &[&token.display().to_string(), "owned by uid 65534", "0644"],
    );
    // This user's token, but readable by others.
    std::os::unix::fs::chown(&token, Some(0), Some(0)).expect("chown token back");
    up_refuses(
        &planted,
        &[&token.display().to_string(), "0644", "chmod 600"],
    );
    // Private, but a 1-character token.
    std::fs::write(&token, "t").expect("short token");
    chmod(&token, 0o600);
    up_refuses(&planted, &[&token.display().to_string(), "at least 16"]);
    // The clients never send a short token either: an admin API that
    // admin.json names (a listener of this test) sees no request.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let admin = serde_json::json!({
        "adminUrl": format!("http://{}", listener.local_addr().expect("addr")),
        "routerUrl": "http://127.0.0.1:1",
        "pid": std::process::id(),
    });
    std::fs::write(planted.join("admin.json"), admin.to_string()).expect("admin.json");
    let (status, stderr) = run_to_exit(&[
        "get".as_ref(),
        "isvc".as_ref(),
        "--state-dir".as_ref(),
        planted.as_os_str(),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("at least 16"), "{stderr}");
    assert!(listener.accept().is_err(), "the short token was sent");
    std::fs::remove_file(planted.join("admin.json")).expect("rm admin.json");

    // This user's directory, open to the group and others.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    chmod(&open, 0o755);
    up_refuses(&open, &[&open.display().to_string(), "0755", "chmod 700"]);
    assert_eq!(
        std::fs::metadata(&open).expect("meta").permissions().mode() & 0o777,
        0o755,
        "left as found"
    );
}

#[test]
fn up_makes_its_state_dir_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("new/state");
    let mut child = serve::inferd()
        .args(["up", "--port", "0", "--grpc-port", "0", "--state-dir"])
        .arg(&state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn inferd up");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !state.join("admin.json").exists() {
        assert!(Instant::now() < deadline, "no admin.json");
        assert!(child.try_wait().expect("try_wait").is_none(), "up exited");
        thread::sleep(Duration::from_millis(20));
    }
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("token")), 0o600);
    let token = std::fs::read_to_string(state.join("token")).expect("token");
    assert_eq!(token.trim().len(), 64, "{token}");
    // A client reaches it with that token.
    let out = serve::inferd()
        .args(["get", "isvc", "--state-dir"])
        .arg(&state)
        .output()
        .expect("get");
    assert!(out.status.success(), "{out:?}");
    let _ = child.kill();
    let _ = child.wait();
}

/// An HTTP server on loopback serving fixed files (with Content-Length).
fn file_server(files: BTreeMap<String, Vec<u8>>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            use std::io::{BufRead, Write};
            let mut reader = std::io::BufReader::new(&mut stream);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut header = String::new();
                match reader.read_line(&mut header) {
                    Ok(n) if n > 0 && header != "\r\n" => {}
                    _ => break,
                }
            }
            let mut parts = line.split_whitespace();
            let head = parts.next() == Some("HEAD");
            let body = parts.next().and_then(|path| files.get(path));
            let reply = match body {
                Some(body) => {
                    let mut reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"e\"\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    if !head {
                        reply.extend_from_slice(body);
                    }
                    reply
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&reply);
        }
    });
    addr
}

/// The content folders of the state directory's model cache.
fn cached_digests(state: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state.join("cache/sha256"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn sha256_of(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}

#[test]
fn model_size_limits_and_deleting_a_service_removes_its_logs_and_models() {
    let model = std::fs::read(iris_model()).expect("iris");
    let dir = tempfile::tempdir().expect("tmp");
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"this is not an onnx model").expect("write");
    let files = BTreeMap::from([
        ("/gone/model.onnx".to_owned(), model.clone()),
        (
            "/kept/model.onnx".to_owned(),
            std::fs::read(&corrupt).expect("read"),
        ),
    ]);
    let server = file_server(files);
    let url = |name: &str| format!("http://{server}/{name}/model.onnx");
    let up = Up::start(&["--max-model-bytes", "1Mi"]);
    let state = up.state_dir();

    // Over the control plane's limit: refused at apply, with the field.
    let too_big = isvc_yaml("big", Path::new(&url("gone")), "", "").replace(
        "      format: onnx\n",
        "      format: onnx\n      maxSizeBytes: 2097152\n",
    );
    let out = up.apply_yaml(&too_big);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.predictor.model.maxSizeBytes") && stderr.contains("1048576"),
        "{stderr}"
    );
    // Under it but over the model's own: the revision fails and says why;
    // nothing is kept.
    let small = isvc_yaml("small", Path::new(&url("gone")), "", "").replace(
        "      format: onnx\n",
        "      format: onnx\n      maxSizeBytes: 100\n",
    );
    assert!(up.apply_yaml(&small).status.success());
    let view = up.wait_until("small", "failed", |v| {
        v.revisions.iter().any(|r| r.state == "Failed")
    });
    let reason = view.revisions[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("too large")
            && reason.contains(&format!("{} bytes", model.len()))
            && reason.contains("limit of 100 bytes"),
        "{reason}"
    );
    assert_eq!(cached_digests(state), Vec::<String>::new());
    assert!(up.ok(&["delete", "isvc", "small"]).contains("deleted"));

    // Two services from the store: one serves, one's model is corrupt (its
    // revision fails, but its record still refers to the model).
    let gone_yaml = isvc_yaml("gone", Path::new(&url("gone")), "", "");
    let kept_yaml = isvc_yaml("kept", Path::new(&url("kept")), "", "");
    assert!(up.apply_yaml(&gone_yaml).status.success());
    assert!(up.apply_yaml(&kept_yaml).status.success());
    up.wait_until("gone", "ready", |v| v.ready());
    up.wait_until("kept", "both models cached", |_| {
        cached_digests(state).len() == 2
    });
    let gone_digest = sha256_of(&iris_model());
    let kept_digest = sha256_of(&corrupt);
    let mut both = vec![gone_digest.clone(), kept_digest.clone()];
    both.sort();
    assert_eq!(cached_digests(state), both);
    let logs = state.join("logs/gone");
    assert!(logs.is_dir(), "the replica logs to {}", logs.display());
    let pids = up.replica_pids("gone");
    assert!(!pids.is_empty());

    assert!(up.ok(&["delete", "isvc", "gone"]).contains("deleted"));
    wait_gone(&pids);
    let deadline = Instant::now() + Duration::from_secs(30);
    while logs.exists() || cached_digests(state) != [kept_digest.clone()] {
        assert!(
            Instant::now() < deadline,
            "logs {} / cache {:?}\n{}",
            logs.exists(),
            cached_digests(state),
            up.stderr_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // The other service's logs and index entry stay.
    assert!(state.join("logs/kept").is_dir());
    let index: Vec<_> = std::fs::read_dir(state.join("cache/uris"))
        .expect("uris")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(index.len(), 1);
    let entry = std::fs::read_to_string(index[0].path()).expect("index");
    assert!(entry.contains(&url("kept")), "{entry}");
}
