//! A real `inferd serve` in-process, on an ephemeral loopback port, for
//! black-box tests.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use inferd_server::{AppState, ModelSource, Server, ServerConfig, Tokens};
use serde_json::Value;

use super::http::get;

/// A path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

pub fn named(name: &str, path: &str) -> ModelSource {
    ModelSource::Named {
        name: name.into(),
        path: repo(path),
    }
}

pub fn expected(dir: &str) -> Value {
    let text = std::fs::read_to_string(repo(&format!("{dir}/expected.json"))).expect("expected");
    serde_json::from_str(&text).expect("json")
}

pub fn assert_outputs_match(got: &Value, want: &Value, tolerance: f64) {
    let got = got.as_array().expect("outputs");
    let want = want.as_array().expect("outputs");
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["name"], w["name"]);
        assert_eq!(g["datatype"], w["datatype"]);
        assert_eq!(g["shape"], w["shape"]);
        let (gd, wd) = (
            g["data"].as_array().expect("d"),
            w["data"].as_array().expect("d"),
        );
        assert_eq!(gd.len(), wd.len());
        for (a, b) in gd.iter().zip(wd) {
            let (a, b) = (a.as_f64().expect("number"), b.as_f64().expect("number"));
            assert!((a - b).abs() <= tolerance, "{}: {a} vs {b}", w["name"]);
        }
    }
}

/// Polls `check` every 10 ms until it holds; panics after a minute.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The gRPC listener's address, when the config turned it on.
    pub grpc_addr: Option<SocketAddr>,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<Result<(), String>>>,
}

impl TestServer {
    pub fn start(sources: Vec<ModelSource>) -> TestServer {
        TestServer::start_with(sources, |_| {})
    }

    pub fn start_with(
        sources: Vec<ModelSource>,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let server = TestServer::spawn(sources, tweak);
        server.wait_ready();
        server
    }

    /// Starts without waiting for readiness.
    pub fn spawn(sources: Vec<ModelSource>, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut config = ServerConfig {
            addr: "127.0.0.1:0".parse().expect("addr"),
            max_body_bytes: 256 * 1024,
            drain_timeout: Duration::from_secs(10),
            serving: inferd_server::model_config::Defaults {
                instance_count: 2,
                ..Default::default()
            },
            tokens: Tokens::default(),
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let server = Server::bind(&config, &sources, None)
                    .await
                    .map_err(|e| e.to_string())?;
                let addr = server.local_addr().map_err(|e| e.to_string())?;
                let grpc_addr = server.grpc_local_addr().map_err(|e| e.to_string())?;
                let _ = ready_tx.send((addr, grpc_addr, server.state()));
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .map_err(|e| e.to_string())
            })
        });
        let (addr, grpc_addr, state) = ready_rx.recv().expect("server started");
        TestServer {
            addr,
            grpc_addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn wait_ready(&self) {
        eventually("the server is ready", || {
            get(self.addr, "/v2/health/ready").status == 200
        });
    }

    /// Signals shutdown and returns what `run` returned.
    pub fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("server thread")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
