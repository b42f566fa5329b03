//! Standard Python clients against the real binary: tritonclient (HTTP in JSON
//! and binary mode, gRPC) and the KServe SDK run `tests/python` with pytest
//! against one `inferd serve`.
//!
//! The interpreter is `$INFERD_TEST_PYTHON` (`.ci/run` sets it from
//! `tests/python/venv.sh`). Without it, CI fails, and elsewhere the test runs
//! `tests/python/venv.sh` itself, so `cargo test --workspace` on a fresh
//! machine runs the suite too.

#[path = "../../../tests/support/http.rs"]
mod http;
#[path = "support/serve.rs"]
mod serve;
#[path = "../../../tests/support/python.rs"]
mod support_python;
#[path = "support/up.rs"]
mod up;

use serve::{Serve, repo, wait_ready};
use std::io::{Read, Seek};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A child process that is killed when this goes out of scope, panics included.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> PathBuf {
    support_python::python("the Python client suite")
}

/// `-rs` lists why tests were skipped; no cache is written into the tree.
const PYTEST: [&str; 7] = [
    "-m",
    "pytest",
    "tests/python",
    "-q",
    "-rs",
    "-p",
    "no:cacheprovider",
];

#[test]
fn tritonclient_and_kserve_sdk_work_unchanged() {
    let python = python();
    let iris = repo("examples/models/iris/model.onnx");
    let identity = repo("tests/fixtures/models/identity");
    let args = [
        "--model".to_string(),
        format!("iris={}", iris.display()),
        "--model".to_string(),
        format!("identity={}", identity.display()),
        "--grpc-port".to_string(),
        "0".to_string(),
    ];
    let mut serve = Serve::start(&args);
    let http_addr = serve.listening("http");
    let grpc_addr = serve.listening("grpc");
    wait_ready(http_addr);

    // pytest writes into one file (stdout and stderr in order), read when it ends.
    let mut output = tempfile::tempfile().expect("temporary file");
    let mut cmd = Command::new(&python);
    cmd.args(PYTEST)
        .current_dir(repo(""))
        .env("INFERD_HTTP_URL", http_addr.to_string())
        .env("INFERD_GRPC_URL", grpc_addr.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("clone file"))
        .stderr(output.try_clone().expect("clone file"));
    let mut pytest = Killed(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("run {} -m pytest: {e}", python.display())),
    );
    // A bound so that a client stuck on a server that never answers fails the test.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = pytest.0.try_wait().expect("wait for pytest") {
            break status;
        }
        if Instant::now() > deadline {
            pytest.0.kill().expect("kill pytest");
            break pytest.0.wait().expect("wait for pytest");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    output.rewind().expect("rewind");
    output
        .read_to_string(&mut text)
        .expect("read pytest output");
    println!("{text}");
    assert!(
        status.success(),
        "pytest failed ({status}):\n{text}\n--- inferd's log ---\n{}",
        serve.log()
    );
    assert!(text.contains(" passed"), "pytest ran no test:\n{text}");
    // Both listeners are given, so nothing may be skipped.
    assert!(!text.contains("skipped"), "tests were skipped:\n{text}");
}

/// The same clients through the router of `inferd up`: HTTP (JSON and
/// binary) and gRPC reach the replica unchanged.
#[test]
fn tritonclient_works_through_the_router() {
    let python = python();
    let up = up::Up::start(&[]);
    let yaml = up::isvc_yaml("iris", &up::iris_model(), "", "");
    let out = up.apply_yaml(&yaml);
    assert!(out.status.success(), "{out:?}");
    up.wait_until("iris", "ready", |v| v.ready());
    let grpc = up.grpc.expect("the router's gRPC address");
    let out = Command::new(&python)
        .arg("router_clients.py")
        .current_dir(repo("tests/python"))
        .env("INFERD_HTTP_URL", up.router.to_string())
        .env("INFERD_GRPC_URL", grpc.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run router_clients.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "router_clients.py failed:\n{text}\n--- inferd up ---\n{}",
        up.stderr_text()
    );
    assert!(text.contains("router clients ok"), "{text}");
}
