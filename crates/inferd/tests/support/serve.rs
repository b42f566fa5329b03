//! The `inferd` binary as a child process for black-box tests: started with a
//! clean environment, its stderr drained on a thread (so it never blocks on a
//! full pipe) and kept, killed when dropped, panics included.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::http;

/// A path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The binary, without settings inherited from the developer's shell.
pub fn inferd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferd"));
    cmd.env_remove("RUST_LOG")
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("INFERD_ONNX_BACKEND")
        // Tests run in parallel: no fixed gRPC port.
        .env("INFERD_GRPC_PORT", "0");
    cmd
}

/// A running `inferd serve` and the stderr lines it has printed.
pub struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Serve {
    /// `inferd serve --http-port 0 ARGS...`.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Serve {
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

    /// Waits for a new stderr line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// The address of the `listening on {scheme}://ADDR` line, seen already
    /// or still to come.
    pub fn listening(&mut self, scheme: &str) -> SocketAddr {
        let needle = format!("listening on {scheme}://");
        let line = match self.seen.iter().find(|l| l.contains(&needle)) {
            Some(line) => line.clone(),
            None => self.wait_for(&needle),
        };
        let at = line.find(&needle).expect("url") + needle.len();
        let addr: String = line[at..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"')
            .collect();
        addr.parse().unwrap_or_else(|_| panic!("address in {line}"))
    }

    /// The HTTP address.
    pub fn addr(&mut self) -> SocketAddr {
        self.listening("http")
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and collects the rest of its stderr.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(Instant::now() < deadline, "inferd did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything it has printed so far.
    pub fn log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls the readiness endpoint until it answers 200; panics after a minute.
pub fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http::get(addr, "/v2/health/ready").status != 200 {
        assert!(Instant::now() < deadline, "never ready");
        thread::sleep(Duration::from_millis(10));
    }
}
