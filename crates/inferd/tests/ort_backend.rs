//! `inferd serve --onnx-backend ort`: onnxruntime opened from a library named
//! at start.
//!
//! The library is found as in crates/inferd-runtime/tests/ort.rs:
//! `INFERD_ORT_LIBRARY`, `ORT_DYLIB_PATH`, or the onnxruntime package of
//! `INFERD_TEST_PYTHON`; without one the serving test is skipped, except in
//! CI (`CI` set), where it fails.

#![cfg(feature = "ort")]

#[path = "../../../tests/support/http.rs"]
mod http;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn inferd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferd"));
    cmd.env_remove("RUST_LOG")
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("INFERD_ONNX_BACKEND")
        // Tests run in parallel: no fixed gRPC port.
        .env("INFERD_GRPC_PORT", "0");
    cmd
}

/// The onnxruntime library to test with, or `None` (after a note) to skip.
fn library() -> Option<PathBuf> {
    let found = ["INFERD_ORT_LIBRARY", "ORT_DYLIB_PATH"]
        .into_iter()
        .find_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()))
        .map(PathBuf::from)
        .or_else(from_python);
    if found.is_none() {
        let why = "no onnxruntime library: set INFERD_ORT_LIBRARY or ORT_DYLIB_PATH to \
                   libonnxruntime.so, or INFERD_TEST_PYTHON to a Python with onnxruntime \
                   (tests/python/venv.sh makes one)";
        if std::env::var_os("CI").is_some() {
            panic!("{why}; CI must run the onnxruntime tests");
        }
        eprintln!("skipped: {why}");
    }
    found
}

/// `site-packages/onnxruntime/capi/libonnxruntime.so*` of `$INFERD_TEST_PYTHON`.
fn from_python() -> Option<PathBuf> {
    let python = std::env::var_os("INFERD_TEST_PYTHON").filter(|v| !v.is_empty())?;
    let out = Command::new(python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let package = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let mut found: Vec<PathBuf> = std::fs::read_dir(package.join("capi"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// A running `inferd serve`, killed when dropped.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let mut child = inferd()
            .arg("serve")
            .args(["--http-port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn inferd");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn addr(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("listening on http://") => break line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("inferd never listened; it said {:#?}", self.seen),
            }
        };
        let at = line.find("http://").expect("url") + "http://".len();
        let addr: String = line[at..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"')
            .collect();
        addr.parse().unwrap_or_else(|_| panic!("address in {line}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http::get(addr, "/v2/health/ready").status != 200 {
        assert!(Instant::now() < deadline, "never ready");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn serves_iris_and_a_random_forest_with_onnxruntime() {
    let Some(library) = library() else { return };
    let iris = repo("examples/models/iris/model.onnx");
    let forest = repo("tests/fixtures/models/forest_regressor/model.onnx");
    let mut serve = Serve::start(&[
        "--onnx-backend",
        "ort",
        "--ort-library",
        &library.display().to_string(),
        "--model",
        &format!("iris={}", iris.display()),
        "--model",
        &format!("forest={}", forest.display()),
    ]);
    let addr = serve.addr();
    wait_ready(addr);

    let meta = http::get(addr, "/v2/models/iris");
    assert_eq!(meta.status, 200, "{}", meta.text());
    assert_eq!(meta.json()["platform"], "onnxruntime_onnx");
    let r = http::post(
        addr,
        "/v2/models/iris/infer",
        r#"{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2,6.7,3.0,5.2,2.3]}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"][0]["name"], "label");
    assert_eq!(r.json()["outputs"][0]["data"], json!([0, 2]));

    // The first row of tests/fixtures/models/forest_regressor/expected.json.
    let r = http::post(
        addr,
        "/v2/models/forest/infer",
        r#"{"inputs":[{"name":"input","shape":[1,10],"datatype":"FP32","data":[0.03807590529322624,0.050680119544267654,0.06169620528817177,0.0218723863363266,-0.04422349855303764,-0.034820761531591415,-0.0434008464217186,-0.002592262113466859,0.01990748569369316,-0.017646124586462975]}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let got = r.json()["outputs"][0]["data"][0]
        .as_f64()
        .expect("a number");
    assert!((got - 198.150_299_072_265_62).abs() < 1e-3, "{got}");
}

#[test]
fn onnxruntime_without_a_library_exits_1_with_the_fix() {
    let iris = repo("examples/models/iris/model.onnx");
    let out = inferd()
        .args(["serve", "--http-port", "0", "--onnx-backend", "ort"])
        .args(["--model", &format!("iris={}", iris.display())])
        .output()
        .expect("run inferd");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "onnxruntime backend selected but no library: pass --ort-library /path/to/libonnxruntime.so \
             (pip install onnxruntime ships one in site-packages/onnxruntime/capi/)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");

    let out = inferd()
        .args(["serve", "--http-port", "0", "--onnx-backend", "ort"])
        .args(["--ort-library", "/nonexistent/libonnxruntime.so"])
        .args(["--model", &format!("iris={}", iris.display())])
        .output()
        .expect("run inferd");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so") && stderr.contains("no such file"),
        "{stderr}"
    );
}
