//! The replica supervisor with real `inferd serve` children: readiness,
//! restarts on new ports, crash loops, graceful stop, and no orphans.

#[path = "../../../tests/support/http.rs"]
mod http;
#[path = "support/serve.rs"]
mod serve;

use std::ffi::OsString;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use inferd_control::local::supervisor::{
    Phase, ReplicaHandle, ReplicaSpec, ReplicaStatus, SupervisorConfig, tail_lines,
};
use serde_json::json;
use serve::{inferd, repo};
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(60);

fn spec(id: &str, model: &Path, log_dir: &Path, grpc: bool) -> ReplicaSpec {
    let model: OsString = format!("iris={}", model.display()).into();
    ReplicaSpec {
        id: id.to_owned(),
        program: PathBuf::from(env!("CARGO_BIN_EXE_inferd")),
        args: vec![
            "serve".into(),
            "--model".into(),
            model,
            // Settings a developer's shell may hold must not change the test.
            "--onnx-backend".into(),
            "tract".into(),
        ],
        env: vec![("RUST_LOG".into(), "info".into())],
        grpc,
        log_path: log_dir.join(format!("{id}.log")),
        limits: Default::default(),
    }
}

fn iris() -> PathBuf {
    repo("examples/models/iris/model.onnx")
}

/// Short delays, so restarts take milliseconds.
fn config() -> SupervisorConfig {
    SupervisorConfig {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..SupervisorConfig::default()
    }
}

/// Waits for a status matching `what`; panics with the last one seen after
/// the deadline or when supervision ends first.
async fn wait_for(
    rx: &mut watch::Receiver<ReplicaStatus>,
    what: &str,
    pred: impl FnMut(&ReplicaStatus) -> bool,
) -> ReplicaStatus {
    let found = match tokio::time::timeout(DEADLINE, rx.wait_for(pred)).await {
        Ok(Ok(status)) => Ok(status.clone()),
        Ok(Err(_)) => Err(format!("supervision ended before {what}")),
        Err(_) => Err(format!("no {what} in {DEADLINE:?}")),
    };
    found.unwrap_or_else(|why| panic!("{why}: {:#?}", *rx.borrow()))
}

async fn post(addr: SocketAddr, path: &'static str, body: String) -> http::Reply {
    tokio::task::spawn_blocking(move || http::post(addr, path, &body))
        .await
        .expect("request")
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn log_text(path: &Path) -> String {
    tail_lines(path, 1000).join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_becomes_ready_and_serves_on_http_and_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec("iris-00001-1", &iris(), dir.path(), true);
    let log = spec.log_path.clone();
    let handle = ReplicaHandle::spawn(spec, config());
    assert_eq!(handle.id(), "iris-00001-1");
    let mut rx = handle.watch();
    let status = wait_for(&mut rx, "Ready", |s| s.phase == Phase::Ready).await;

    let http_addr = status.http_addr.expect("http address");
    let grpc_addr = status.grpc_addr.expect("grpc address");
    assert_ne!(http_addr.port(), grpc_addr.port());
    assert!(http_addr.ip().is_loopback());
    let pid = status.pid.expect("pid");
    assert_eq!(status.restarts, 0);
    assert_eq!(status.message, None);
    assert!(status.started_at.is_some() && status.ready_at >= status.started_at);
    assert_eq!(handle.status(), status);

    let body =
        std::fs::read_to_string(repo("examples/models/iris/input.json")).expect("input.json");
    let reply = post(http_addr, "/v2/models/iris/infer", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let outputs = reply.json()["outputs"].clone();
    let label = outputs
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == "label"))
        .unwrap_or_else(|| panic!("no label output: {outputs}"));
    assert_eq!(label["data"], json!([0, 0]));
    TcpStream::connect(grpc_addr).expect("gRPC port accepts connections");

    let text = log_text(&log);
    assert!(
        text.contains(&format!("[supervisor] iris-00001-1: started pid {pid}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("listening on http://{http_addr}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("listening on grpc://{grpc_addr}")),
        "{text}"
    );
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_comes_back_on_new_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec("iris-00001-2", &iris(), dir.path(), true);
    let log = spec.log_path.clone();
    let handle = ReplicaHandle::spawn(spec, config());
    let mut rx = handle.watch();
    let first = wait_for(&mut rx, "Ready", |s| s.phase == Phase::Ready).await;
    let pid = first.pid.expect("pid");

    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());

    let second = wait_for(&mut rx, "Ready again", |s| {
        s.phase == Phase::Ready && s.restarts == 1
    })
    .await;
    assert_ne!(second.pid, Some(pid));
    assert!(!alive(pid), "the killed process was reaped");
    let last_exit = second.last_exit.clone().unwrap_or_default();
    assert!(last_exit.contains("signal 9"), "{last_exit}");
    assert_ne!(second.http_addr, first.http_addr);
    assert_ne!(second.grpc_addr, first.grpc_addr);
    let http_addr = second.http_addr.expect("http address");
    let ready = tokio::task::spawn_blocking(move || http::get(http_addr, "/v2/health/ready"))
        .await
        .expect("probe");
    assert_eq!(ready.status, 200);

    let text = log_text(&log);
    assert!(
        text.contains(&format!("pid {pid} killed by signal 9")),
        "{text}"
    );
    assert_eq!(
        text.matches("[supervisor] iris-00001-2: started pid")
            .count(),
        2,
        "{text}"
    );
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_model_crash_loops_with_the_serve_error_and_keeps_retrying() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model.onnx");
    std::fs::write(&model, b"\x08\xff\xff\xffgarbage, not a protobuf\x00\x13").expect("write");
    let spec = spec("bad-00001-1", &model, dir.path(), false);
    let log = spec.log_path.clone();
    let config = SupervisorConfig {
        crash_loop_after: 3,
        ..config()
    };
    let handle = ReplicaHandle::spawn(spec, config);
    let mut rx = handle.watch();

    let looping = wait_for(&mut rx, "CrashLoop", |s| s.phase == Phase::CrashLoop).await;
    // Three failed starts: the first one and two restarts.
    assert_eq!(looping.restarts, 2);
    assert_eq!(looping.pid, None);
    assert_eq!(looping.http_addr, None);
    assert_eq!(looping.last_exit.as_deref(), Some("exited with code 1"));
    let message = looping.message.clone().unwrap_or_default();
    assert!(message.contains("cannot load model"), "{message}");
    assert!(message.contains(&model.display().to_string()), "{message}");

    // Kubernetes keeps restarting in CrashLoopBackOff; so does this.
    let later = wait_for(&mut rx, "more restarts in CrashLoop", |s| {
        s.phase == Phase::CrashLoop && s.restarts >= 4
    })
    .await;
    assert!(later.restarts >= 4);
    let text = log_text(&log);
    assert!(
        text.matches("[supervisor] bad-00001-1: pid").count() >= 4,
        "{text}"
    );
    assert!(text.contains("exited with code 1"), "{text}");
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_the_replica_and_never_restarts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec("iris-00001-3", &iris(), dir.path(), false);
    let log = spec.log_path.clone();
    let handle = ReplicaHandle::spawn(spec, config());
    let mut rx = handle.watch();
    let ready = wait_for(&mut rx, "Ready", |s| s.phase == Phase::Ready).await;
    assert_eq!(ready.grpc_addr, None);
    let pid = ready.pid.expect("pid");

    tokio::time::timeout(DEADLINE, handle.stop())
        .await
        .expect("stopped in time");
    assert!(!alive(pid), "pid {pid} is gone");
    let stopped = rx.borrow_and_update().clone();
    assert_eq!(stopped.phase, Phase::Stopped);
    assert_eq!(stopped.pid, None);
    assert_eq!(stopped.restarts, 0);
    assert_eq!(stopped.last_exit.as_deref(), Some("exited with code 0"));
    // The supervising task has ended: no further status, so no restart.
    assert!(rx.changed().await.is_err());

    let text = log_text(&log);
    assert!(text.contains("standard input closed"), "{text}");
    assert!(
        text.contains(&format!("pid {pid} exited with code 0")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_kills_the_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = ReplicaHandle::spawn(spec("iris-00001-4", &iris(), dir.path(), false), config());
    let mut rx = handle.watch();
    let pid = wait_for(&mut rx, "Ready", |s| s.phase == Phase::Ready)
        .await
        .pid
        .expect("pid");
    assert!(alive(pid));

    drop(handle);
    // The task kills and reaps the child, then ends, closing the channel.
    tokio::time::timeout(DEADLINE, async { while rx.changed().await.is_ok() {} })
        .await
        .expect("supervision ended in time");
    assert!(!alive(pid), "pid {pid} is gone");
    let last = rx.borrow().clone();
    assert_eq!(last.phase, Phase::Stopped);
    assert_eq!(
        last.last_exit.as_deref(),
        Some("killed by signal 9 (SIGKILL)")
    );
}

/// What makes replicas die with their supervisor, even one killed by
/// SIGKILL: the kernel closes the supervisor's end of the stdin pipe, and
/// `serve --exit-with-stdin` stops when its stdin closes.
#[test]
fn serve_exits_when_its_stdin_closes() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = inferd()
        .args([
            "serve",
            "--exit-with-stdin",
            "--grpc-port",
            "off",
            "--onnx-backend",
            "tract",
        ])
        .args(["--host", "127.0.0.1", "--http-port", &port.to_string()])
        .arg("--model")
        .arg(format!("iris={}", iris().display()))
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn inferd");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let ready =
            TcpStream::connect(addr).is_ok() && http::get(addr, "/v2/health/ready").status == 200;
        if ready {
            break;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("inferd exited before ready: {status}");
        }
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }

    drop(child.stdin.take());
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("inferd still running after its stdin closed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(stderr.contains("standard input closed"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}
