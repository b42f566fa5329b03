//! `inferd up` as a child process with a state directory of its own, and the
//! CLI commands that talk to it.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use inferd_control::local::ServiceView;
use inferd_control::local::client::AdminClient;

use super::serve::{inferd, repo};

/// A running `inferd up`.
pub struct Up {
    pub child: Child,
    pub state: tempfile::TempDir,
    pub router: SocketAddr,
    pub grpc: Option<SocketAddr>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    runtime: tokio::runtime::Runtime,
}

/// Settings that make the control plane quick to observe in tests: a short
/// autoscaler tick and drain grace, fast restarts.
pub const FAST: [&str; 6] = [
    "--autoscaler-tick",
    "200ms",
    "--drain-grace",
    "200ms",
    "--restart-backoff",
    "100ms",
];

impl Up {
    /// `inferd up --port 0 --grpc-port 0 --state-dir TMP ARGS...`.
    pub fn start(args: &[&str]) -> Up {
        let state = tempfile::tempdir().expect("state dir");
        Up::start_in(state, args)
    }

    pub fn start_in(state: tempfile::TempDir, args: &[&str]) -> Up {
        // `up` refuses a state directory others can reach (tempfile makes
        // them 0755).
        std::fs::set_permissions(
            state.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod 700 the state dir");
        let mut child = inferd()
            .arg("up")
            .args(["--port", "0", "--grpc-port", "0"])
            .arg("--state-dir")
            .arg(state.path())
            .args(FAST)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn inferd up");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err_pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut router = None;
        let mut grpc = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while router.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!(
                    "inferd up printed no router line; stderr:\n{}",
                    stderr.lock().expect("lock").join("\n")
                );
            };
            if let Some(url) = line.strip_prefix("router") {
                let addr = url.trim().trim_start_matches("http://");
                router = Some(addr.parse().expect("router address"));
            } else if let Some(addr) = line.strip_prefix("grpc") {
                grpc = Some(addr.trim().parse().expect("grpc address"));
            }
        }
        // Keep draining stdout.
        thread::spawn(move || while rx.recv().is_ok() {});
        Up {
            child,
            state,
            router: router.expect("router"),
            grpc,
            stderr,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Runs `inferd ARGS... --state-dir DIR` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        inferd()
            .args(args)
            .arg("--state-dir")
            .arg(self.state.path())
            .stdin(Stdio::null())
            .output()
            .expect("run inferd")
    }

    /// Like [`Up::cli`], asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "inferd {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `inferd apply -f` a YAML text (written to a file in the state dir's
    /// parent so that relative paths resolve against `base`).
    pub fn apply_yaml(&self, yaml: &str) -> Output {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = self.state.path().join(format!("apply-{n}.yaml"));
        std::fs::write(&file, yaml).expect("write yaml");
        self.cli(&["apply", "-f", file.to_str().expect("utf-8 path")])
    }

    pub fn client(&self) -> AdminClient {
        AdminClient::from_state_dir(self.state.path()).expect("admin client")
    }

    pub fn view(&self, name: &str) -> ServiceView {
        let client = self.client();
        self.runtime
            .block_on(client.get(name))
            .expect("get service")
    }

    /// Polls the service until `check` holds (60 s at most).
    pub fn wait_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&ServiceView) -> bool,
    ) -> ServiceView {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view = self.view(name);
            if check(&view) {
                return view;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {name}: {what}\n{}\nstderr:\n{}",
                    serde_json::to_string_pretty(&view).unwrap_or_default(),
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// Pids of every replica process of a service.
    pub fn replica_pids(&self, name: &str) -> Vec<u32> {
        self.view(name)
            .revisions
            .iter()
            .flat_map(|r| r.replicas.iter().filter_map(|x| x.pid))
            .collect()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for `up` to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "inferd up did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(text) => !text
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

/// Waits until none of `pids` exists.
pub fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "processes still alive: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The iris model folder, and the request body for it.
pub fn iris_model() -> PathBuf {
    std::fs::canonicalize(repo("examples/models/iris/model.onnx")).expect("iris model")
}

pub fn iris_request() -> String {
    std::fs::read_to_string(repo("examples/models/iris/input.json")).expect("input.json")
}

/// A minimal InferenceService YAML for `name` serving `model`, with extra
/// predictor lines (indented 4 spaces) and annotations.
pub fn isvc_yaml(name: &str, model: &Path, predictor_extra: &str, annotations: &str) -> String {
    let mut yaml = format!(
        "apiVersion: serving.inferd.dev/v1alpha1\nkind: InferenceService\nmetadata:\n  name: {name}\n"
    );
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for line in annotations.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml.push_str(&format!(
        "spec:\n  predictor:\n    model:\n      format: onnx\n      storageUri: {}\n",
        model.display()
    ));
    for line in predictor_extra.lines() {
        yaml.push_str(&format!("    {line}\n"));
    }
    yaml
}
