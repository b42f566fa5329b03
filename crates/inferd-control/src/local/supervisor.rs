//! Replicas as supervised child processes.
//!
//! A replica is an `inferd serve` child started with `--exit-with-stdin`. The
//! supervisor keeps the write end of the child's standard input and never
//! writes to it: closing it is the graceful stop (the child drains in-flight
//! requests and exits, as on SIGTERM), and since the kernel closes it when the
//! supervisor dies, even by SIGKILL, a replica never outlives its supervisor.
//!
//! One task per replica owns the child. It picks fresh loopback ports for each
//! start, polls `GET /v2/health/ready`, restarts the child whenever it exits
//! (Kubernetes' `restartPolicy: Always`) with exponential backoff and a
//! CrashLoop phase after repeated quick failures (Kubernetes'
//! CrashLoopBackOff), and publishes a [`ReplicaStatus`] on a watch channel.
//! The child's stdout and stderr are appended to a log file, with a line from
//! the supervisor before each start and after each exit.

use std::error::Error as StdError;
use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::limits::{Enforcer, ReplicaLimits};

/// Marks the supervisor's own lines in a replica's log, so they are never
/// taken for the child's output.
const LOG_TAG: &str = "[supervisor]";
/// The readiness endpoint of `inferd serve` (Open Inference Protocol).
const READY_PATH: &str = "/v2/health/ready";
/// The most a tail read goes back from the end of a log.
const TAIL_MAX_BYTES: u64 = 1 << 20;
/// Lines of a failed attempt's output searched for its error.
const MESSAGE_LINES: usize = 40;

/// How replicas are supervised: ports, restarts and probes.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The address replicas listen on.
    pub host: IpAddr,
    /// The delay before the first restart; it doubles with each consecutive
    /// failure.
    pub backoff_initial: Duration,
    /// The longest delay between restarts.
    pub backoff_max: Duration,
    /// A replica ready and running this long resets the backoff and the count
    /// of consecutive failures.
    pub backoff_reset_after: Duration,
    /// Consecutive failures (exits before ready, or crashes before
    /// `backoff_reset_after`) that make the phase [`Phase::CrashLoop`].
    pub crash_loop_after: u32,
    /// A start not ready in this time is killed and counts as a failure.
    pub ready_timeout: Duration,
    /// Readiness poll while starting; small, since cold start is measured in
    /// milliseconds.
    pub probe_interval: Duration,
    /// Readiness poll once ready; a replica that stops answering ready is
    /// [`Phase::NotReady`] (restarted only if it exits).
    pub live_probe_interval: Duration,
    /// How long one readiness request may take.
    pub probe_timeout: Duration,
    /// After standard input is closed, how long the replica gets to drain
    /// before it is killed.
    pub stop_timeout: Duration,
    /// How [`ReplicaSpec::limits`] are put on each process.
    pub enforcer: Arc<Enforcer>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            backoff_reset_after: Duration::from_secs(60),
            crash_loop_after: 3,
            ready_timeout: Duration::from_secs(120),
            probe_interval: Duration::from_millis(25),
            live_probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(30),
            enforcer: Arc::new(Enforcer::Rlimit),
        }
    }
}

/// One replica: the `inferd serve` command line and where its output goes.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    /// Names the replica in logs (e.g. `iris-00001-2`).
    pub id: String,
    /// The `inferd` binary.
    pub program: PathBuf,
    /// Its arguments, e.g. `serve --model iris=/path/model.onnx`. The
    /// supervisor appends `--host`, `--http-port`, `--grpc-port` and
    /// `--exit-with-stdin`, so these must not be among them.
    pub args: Vec<OsString>,
    /// Variables added to the inherited environment (e.g.
    /// `CUDA_VISIBLE_DEVICES`).
    pub env: Vec<(OsString, OsString)>,
    /// Whether the replica serves gRPC too (else `--grpc-port off`).
    pub grpc: bool,
    /// The child's stdout and stderr are appended here.
    pub log_path: PathBuf,
    /// CPU and memory the process may use (`resources`).
    pub limits: ReplicaLimits,
}

/// Where a replica is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A process is running and not ready yet.
    Starting,
    /// Answering ready.
    Ready,
    /// Was ready, no longer answers ready, still running.
    NotReady,
    /// Exited; waiting before the restart.
    BackOff,
    /// Exited after repeated quick failures; waiting before the restart.
    CrashLoop,
    /// Draining after a stop.
    Stopping,
    /// Stopped for good: no process, no restart.
    Stopped,
}

impl Phase {
    /// The phase as `get` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "Starting",
            Phase::Ready => "Ready",
            Phase::NotReady => "NotReady",
            Phase::BackOff => "BackOff",
            Phase::CrashLoop => "CrashLoop",
            Phase::Stopping => "Stopping",
            Phase::Stopped => "Stopped",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the supervisor knows of a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub phase: Phase,
    /// The current process's HTTP address (none between processes).
    pub http_addr: Option<SocketAddr>,
    /// The current process's gRPC address, when it serves gRPC.
    pub grpc_addr: Option<SocketAddr>,
    /// The current process.
    pub pid: Option<u32>,
    /// Restarts since the replica was spawned.
    pub restarts: u32,
    /// How the last process ended, e.g. `exited with code 1`.
    pub last_exit: Option<String>,
    /// Why the replica is not ready: the error a failed start printed, a
    /// ready timeout, a failed readiness probe, a spawn error.
    pub message: Option<String>,
    /// When the current process started.
    pub started_at: Option<SystemTime>,
    /// When the current process became ready.
    pub ready_at: Option<SystemTime>,
}

impl ReplicaStatus {
    fn new() -> Self {
        Self {
            phase: Phase::Starting,
            http_addr: None,
            grpc_addr: None,
            pid: None,
            restarts: 0,
            last_exit: None,
            message: None,
            started_at: None,
            ready_at: None,
        }
    }
}

/// What the owner of a replica wants of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    Run,
    /// Close standard input, wait for the drain (killed after the stop
    /// timeout).
    Stop,
    /// Kill now; also what a dropped handle means.
    Kill,
}

/// A supervised replica. The process lives as long as the handle: dropping
/// the handle kills it; [`ReplicaHandle::stop`] stops it gracefully.
#[derive(Debug)]
pub struct ReplicaHandle {
    id: String,
    status: watch::Receiver<ReplicaStatus>,
    intent: watch::Sender<Intent>,
    task: Option<JoinHandle<()>>,
}

impl ReplicaHandle {
    /// Starts supervising a replica. Returns at once; a task started on the
    /// current tokio runtime runs the process.
    pub fn spawn(spec: ReplicaSpec, config: SupervisorConfig) -> ReplicaHandle {
        let (status_tx, status_rx) = watch::channel(ReplicaStatus::new());
        let (intent_tx, intent_rx) = watch::channel(Intent::Run);
        let id = spec.id.clone();
        let span = tracing::info_span!("replica", id = %spec.id);
        let supervisor = Supervisor {
            backoff: Backoff::new(&config),
            spec,
            config,
            status: status_tx,
            intent: intent_rx,
            starts: 0,
            last_ports: Vec::new(),
        };
        let task = tokio::spawn(supervisor.run().instrument(span));
        ReplicaHandle {
            id,
            status: status_rx,
            intent: intent_tx,
            task: Some(task),
        }
    }

    /// The replica's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The replica's status now.
    pub fn status(&self) -> ReplicaStatus {
        self.status.borrow().clone()
    }

    /// Every change of the status. The channel closes once the replica is
    /// stopped for good.
    pub fn watch(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.clone()
    }

    /// Stops the replica: closes its standard input so it drains and exits,
    /// kills it after the stop timeout, and returns once it has exited. It is
    /// not restarted. Cancelling this kills the replica.
    pub async fn stop(mut self) {
        // The task is gone (and the send refused) only if it panicked, and
        // then the child was killed with it.
        let _ = self.intent.send(Intent::Stop);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(id = %self.id, error = %e, "replica supervisor failed");
        }
    }
}

impl Drop for ReplicaHandle {
    fn drop(&mut self) {
        // The task kills and reaps the child; if the runtime is shutting
        // down instead, dropping the task drops the child, and kill_on_drop
        // kills it.
        let _ = self.intent.send(Intent::Kill);
    }
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot pick free ports on {host}")]
    Ports {
        host: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the log {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot put the resource limits on the process ({enforcer})")]
    Limits {
        enforcer: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Consecutive failures and the restart delay they call for.
#[derive(Clone, Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    crash_loop_after: u32,
    failures: u32,
}

impl Backoff {
    fn new(config: &SupervisorConfig) -> Self {
        Self {
            initial: config.backoff_initial,
            max: config.backoff_max,
            crash_loop_after: config.crash_loop_after.max(1),
            failures: 0,
        }
    }

    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait before the next start: `initial` after one failure, doubling
    /// with each further one, at most `max`.
    fn delay(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    fn crash_looping(&self) -> bool {
        self.failures >= self.crash_loop_after
    }
}

/// A started process.
struct Running {
    child: Child,
    /// Held, never written: closing it stops the child. Kept out of `child`
    /// because `Child::wait` closes the stdin it holds.
    stdin: Option<ChildStdin>,
    pid: Option<u32>,
    http: SocketAddr,
    /// Where this process's output starts in the log.
    log_offset: u64,
    started: Instant,
}

/// How one process's supervision ended.
enum Ended {
    /// It exited or failed to start: restart it after the backoff.
    Exited,
    /// Stopped or killed on request: no restart.
    Stopped,
}

/// The task that owns one replica.
struct Supervisor {
    spec: ReplicaSpec,
    config: SupervisorConfig,
    status: watch::Sender<ReplicaStatus>,
    intent: watch::Receiver<Intent>,
    backoff: Backoff,
    starts: u32,
    /// The previous process's ports, not handed out again right away.
    last_ports: Vec<u16>,
}

impl Supervisor {
    async fn run(mut self) {
        loop {
            if let Ended::Stopped = self.run_once().await {
                break;
            }
            let delay = self.backoff.delay();
            let phase = if self.backoff.crash_looping() {
                Phase::CrashLoop
            } else {
                Phase::BackOff
            };
            self.status.send_modify(|s| s.phase = phase);
            tracing::info!(
                %phase,
                delay_ms = delay.as_millis() as u64,
                failures = self.backoff.failures,
                "restarting replica after a delay"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = next_intent(&mut self.intent) => break,
            }
        }
        self.status.send_modify(|s| {
            s.phase = Phase::Stopped;
            s.pid = None;
            s.http_addr = None;
            s.grpc_addr = None;
            s.started_at = None;
            s.ready_at = None;
        });
        tracing::info!("replica stopped");
    }

    /// The stop or kill asked for, if any (a dropped handle is a kill).
    fn requested(&self) -> Option<Intent> {
        if self.intent.has_changed().is_err() {
            return Some(Intent::Kill);
        }
        match *self.intent.borrow() {
            Intent::Run => None,
            intent => Some(intent),
        }
    }

    /// Starts one process and supervises it until it exits or is stopped.
    async fn run_once(&mut self) -> Ended {
        if self.requested().is_some() {
            return Ended::Stopped;
        }
        if self.starts > 0 {
            self.status
                .send_modify(|s| s.restarts = s.restarts.saturating_add(1));
        }
        self.starts = self.starts.saturating_add(1);
        match self.start() {
            Ok(running) => {
                let ended = self.supervise(running).await;
                self.config.enforcer.release(&self.spec.id);
                ended
            }
            Err(e) => {
                let message = error_chain(&e);
                tracing::warn!(error = %message, "replica failed to start");
                self.log_line(&format!("failed to start: {message}"));
                self.backoff.failed();
                self.status.send_modify(|s| {
                    s.pid = None;
                    s.http_addr = None;
                    s.grpc_addr = None;
                    s.started_at = None;
                    s.ready_at = None;
                    s.message = Some(message);
                });
                Ended::Exited
            }
        }
    }

    fn start(&mut self) -> Result<Running, StartError> {
        let host = self.config.host;
        let (http, grpc) = pick_ports(host, self.spec.grpc, &self.last_ports)
            .map_err(|source| StartError::Ports { host, source })?;
        self.last_ports = std::iter::once(http.port())
            .chain(grpc.map(|a| a.port()))
            .collect();
        let path = &self.spec.log_path;
        let log_err = |source| StartError::Log {
            path: path.clone(),
            source,
        };
        let log = open_log(path).map_err(log_err)?;
        let log_offset = log.metadata().map_err(log_err)?.len();
        let stderr = log.try_clone().map_err(log_err)?;
        self.config
            .enforcer
            .prepare(&self.spec.id, &self.spec.limits)
            .map_err(|source| StartError::Limits {
                enforcer: self.config.enforcer.to_string(),
                source,
            })?;
        let mut cmd = match self.config.enforcer.launcher(
            &self.spec.id,
            &self.spec.limits,
            &self.spec.program,
            &self.spec.args,
        ) {
            Some((launcher, args)) => {
                let mut cmd = Command::new(launcher);
                cmd.args(args);
                cmd
            }
            None => {
                let mut cmd = Command::new(&self.spec.program);
                cmd.args(&self.spec.args);
                cmd
            }
        };
        cmd.arg("--host")
            .arg(host.to_string())
            .arg("--http-port")
            .arg(http.port().to_string())
            .arg("--grpc-port")
            .arg(grpc.map_or_else(|| "off".to_owned(), |a| a.port().to_string()))
            .arg("--exit-with-stdin")
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        // A process group of its own: Ctrl-C in the supervisor's terminal
        // reaches the supervisor only, which then stops replicas in order.
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
            program: self.spec.program.clone(),
            source,
        })?;
        let stdin = child.stdin.take();
        let pid = child.id();
        // The limits before anything else: a replica never runs without
        // the resources it was given.
        match pid.map(|pid| {
            self.config
                .enforcer
                .apply(&self.spec.id, pid, &self.spec.limits)
        }) {
            Some(Ok(applied)) if !applied.is_empty() => {
                self.log_line(&format!("limits ({}): {applied}", self.config.enforcer));
            }
            Some(Err(source)) => {
                let _ = child.start_kill();
                return Err(StartError::Limits {
                    enforcer: self.config.enforcer.to_string(),
                    source,
                });
            }
            _ => {}
        }
        let started_at = SystemTime::now();
        self.log_line(&format!(
            "started pid {}: http {http}, grpc {}",
            pid_text(pid),
            grpc.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        ));
        tracing::info!(pid, %http, grpc = ?grpc, "replica started");
        self.status.send_modify(|s| {
            s.phase = Phase::Starting;
            s.pid = pid;
            s.http_addr = Some(http);
            s.grpc_addr = grpc;
            s.started_at = Some(started_at);
            s.ready_at = None;
        });
        Ok(Running {
            child,
            stdin,
            pid,
            http,
            log_offset,
            started: Instant::now(),
        })
    }

    async fn supervise(&mut self, mut running: Running) -> Ended {
        let http = running.http;
        let probe_timeout = self.config.probe_timeout;
        let interval = self.config.probe_interval;
        let ready_timeout = self.config.ready_timeout;
        let deadline = running.started + ready_timeout;
        loop {
            let probe = async {
                tokio::time::sleep(interval).await;
                probe_ready(http, probe_timeout).await
            };
            tokio::select! {
                intent = next_intent(&mut self.intent) => {
                    return self.shutdown(running, intent).await;
                }
                status = running.child.wait() => {
                    self.exited(&running, status, None);
                    return Ended::Exited;
                }
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(?ready_timeout, "replica not ready in time; killing it");
                    let status = kill_and_wait(&mut running.child).await;
                    let why = format!("not ready after {}", seconds(ready_timeout));
                    self.exited(&running, status, Some(why));
                    return Ended::Exited;
                }
                result = probe => if result.is_ok() { break; }
            }
        }

        tracing::info!(
            pid = running.pid,
            %http,
            startup_ms = running.started.elapsed().as_millis() as u64,
            "replica ready"
        );
        self.status.send_modify(|s| {
            s.phase = Phase::Ready;
            s.ready_at = Some(SystemTime::now());
            s.message = None;
        });
        let reset_at = Instant::now() + self.config.backoff_reset_after;
        let mut reset = false;
        let interval = self.config.live_probe_interval;
        loop {
            let probe = async {
                tokio::time::sleep(interval).await;
                probe_ready(http, probe_timeout).await
            };
            tokio::select! {
                intent = next_intent(&mut self.intent) => {
                    return self.shutdown(running, intent).await;
                }
                status = running.child.wait() => {
                    self.exited(&running, status, None);
                    return Ended::Exited;
                }
                () = tokio::time::sleep_until(reset_at), if !reset => {
                    reset = true;
                    self.backoff.reset();
                }
                result = probe => self.live_probe(result),
            }
        }
    }

    /// Ready or NotReady, after a probe of a process that was ready.
    fn live_probe(&mut self, result: Result<(), String>) {
        let changed = self.status.send_if_modified(|s| match (&result, s.phase) {
            (Ok(()), Phase::NotReady) => {
                s.phase = Phase::Ready;
                s.message = None;
                true
            }
            (Err(why), Phase::Ready) => {
                s.phase = Phase::NotReady;
                s.message = Some(format!("readiness probe failed: {why}"));
                true
            }
            _ => false,
        });
        if changed {
            match result {
                Ok(()) => tracing::info!("replica ready again"),
                Err(why) => tracing::warn!(%why, "replica no longer ready"),
            }
        }
    }

    /// Records the exit of a process that was not asked to stop.
    fn exited(&mut self, running: &Running, status: io::Result<ExitStatus>, why: Option<String>) {
        let exit = describe_wait(&status);
        self.backoff.failed();
        let output = last_error_line(&self.spec.log_path, running.log_offset);
        let why = why.or_else(|| {
            self.config
                .enforcer
                .oom_killed(&self.spec.id, &self.spec.limits)
                .then(|| {
                    format!(
                        "out of memory: killed past its memory limit ({} bytes, resources.memory)",
                        self.spec.limits.memory_bytes.unwrap_or_default()
                    )
                })
        });
        self.log_line(&format!("pid {} {exit}", pid_text(running.pid)));
        let message = match (why, output) {
            (Some(why), Some(output)) => Some(format!("{why}; last error: {output}")),
            (Some(why), None) => Some(why),
            (None, output) => output,
        };
        tracing::warn!(pid = running.pid, %exit, message = message.as_deref().unwrap_or(""), "replica exited");
        self.status.send_modify(|s| {
            s.pid = None;
            s.http_addr = None;
            s.grpc_addr = None;
            s.started_at = None;
            s.ready_at = None;
            s.last_exit = Some(exit);
            s.message = message;
        });
    }

    /// Stops a running process as asked, and records its exit.
    async fn shutdown(&mut self, mut running: Running, intent: Intent) -> Ended {
        let status = match intent {
            Intent::Stop => {
                self.status.send_modify(|s| s.phase = Phase::Stopping);
                tracing::info!(pid = running.pid, "stopping replica");
                drop(running.stdin.take());
                let timeout = self.config.stop_timeout;
                tokio::select! {
                    status = running.child.wait() => status,
                    () = tokio::time::sleep(timeout) => {
                        tracing::warn!(?timeout, "replica did not stop in time; killing it");
                        kill_and_wait(&mut running.child).await
                    }
                    // Only a kill can follow a stop (the handle was dropped).
                    _ = next_intent(&mut self.intent) => kill_and_wait(&mut running.child).await,
                }
            }
            Intent::Kill | Intent::Run => kill_and_wait(&mut running.child).await,
        };
        let exit = describe_wait(&status);
        self.log_line(&format!("pid {} {exit}", pid_text(running.pid)));
        self.status.send_modify(|s| s.last_exit = Some(exit));
        Ended::Stopped
    }

    /// Appends one line of the supervisor's own to the replica's log.
    fn log_line(&self, text: &str) {
        let line = format!(
            "{} {LOG_TAG} {}: {text}\n",
            timestamp(SystemTime::now()),
            self.spec.id
        );
        let written = open_log(&self.spec.log_path).and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %self.spec.log_path.display(), error = %e, "cannot write the replica log");
        }
    }
}

/// The next stop or kill asked for; a dropped handle is a kill.
async fn next_intent(rx: &mut watch::Receiver<Intent>) -> Intent {
    loop {
        if rx.changed().await.is_err() {
            return Intent::Kill;
        }
        let intent = *rx.borrow_and_update();
        if intent != Intent::Run {
            return intent;
        }
    }
}

async fn kill_and_wait(child: &mut Child) -> io::Result<ExitStatus> {
    // Fails only when the child has exited already; wait() then reaps it.
    let _ = child.start_kill();
    child.wait().await
}

/// Free ports on `host`: one for HTTP, one more for gRPC. The listeners are
/// held until all ports are known, so the ports differ from each other, and
/// ports in `avoid` (the previous process's) are skipped when the system
/// offers them again.
fn pick_ports(
    host: IpAddr,
    grpc: bool,
    avoid: &[u16],
) -> io::Result<(SocketAddr, Option<SocketAddr>)> {
    let wanted = if grpc { 2 } else { 1 };
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < wanted {
        let listener = TcpListener::bind(SocketAddr::new(host, 0))?;
        let port = listener.local_addr()?.port();
        if !avoid.contains(&port) || held.len() >= 16 {
            ports.push(port);
        }
        held.push(listener);
    }
    let addr = |i: usize| ports.get(i).map(|&p| SocketAddr::new(host, p));
    match addr(0) {
        Some(http) => Ok((http, if grpc { addr(1) } else { None })),
        None => Err(io::Error::other("no port picked")),
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// One readiness request: `Ok` on status 200, else why not.
async fn probe_ready(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head =
            format!("GET {READY_PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        // Only the status line matters.
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 64];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 256 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, io::Error>(buf)
    };
    match tokio::time::timeout(timeout, request).await {
        Err(_) => Err(format!("no answer in {}", seconds(timeout))),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(reply)) => match status_code(&reply) {
            Some(200) => Ok(()),
            Some(code) => Err(format!("status {code}")),
            None => Err("not an HTTP reply".to_owned()),
        },
    }
}

/// The status code of an HTTP/1.x status line.
fn status_code(reply: &[u8]) -> Option<u16> {
    let line = reply.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// The last `n` lines of a log, reading at most 1 MiB back from its end; empty
/// when the file cannot be read.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    tail_since(path, 0, n)
}

/// The last `n` lines of a file written at or after byte `from`.
fn tail_since(path: &Path, from: u64, n: usize) -> Vec<String> {
    read_tail(path, from, n).unwrap_or_default()
}

fn read_tail(path: &Path, from: u64, n: usize) -> io::Result<Vec<String>> {
    const CHUNK: u64 = 8 * 1024;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut file = File::open(path)?;
    let len = file.seek(SeekFrom::End(0))?;
    let floor = from.max(len.saturating_sub(TAIL_MAX_BYTES));
    let mut start = len;
    // Read back in chunks until n + 1 newlines guarantee n whole lines.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0;
    while start > floor && newlines <= n {
        let step = CHUNK.min(start - floor);
        start -= step;
        file.seek(SeekFrom::Start(start))?;
        let mut chunk = Vec::new();
        (&mut file).take(step).read_to_end(&mut chunk)?;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
        chunks.push(chunk);
    }
    let bytes: Vec<u8> = chunks.into_iter().rev().flatten().collect();
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    // Reading began mid-file: the first line may be cut.
    if start > from && !lines.is_empty() {
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..].iter().map(|l| (*l).to_owned()).collect())
}

/// The error a failed process printed last: `inferd` ends with an
/// `error: ...` line (returned without that prefix); else the last ERROR log
/// line or panic.
fn last_error_line(log: &Path, from: u64) -> Option<String> {
    let lines = tail_since(log, from, MESSAGE_LINES);
    let ours = |l: &&String| !l.contains(LOG_TAG);
    let line = lines
        .iter()
        .filter(ours)
        .rev()
        .find_map(|l| l.strip_prefix("error:"))
        .or_else(|| {
            lines
                .iter()
                .filter(ours)
                .rev()
                .find(|l| l.contains("ERROR") || l.contains("panicked"))
                .map(String::as_str)
        })?;
    Some(line.trim().to_owned())
}

/// `exited with code 1`, `killed by signal 9 (SIGKILL)`.
fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return match signal_name(signal) {
                Some(name) => format!("killed by signal {signal} ({name})"),
                None => format!("killed by signal {signal}"),
            };
        }
    }
    status.to_string()
}

fn describe_wait(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => describe_exit(*status),
        Err(e) => format!("could not be waited for: {e}"),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// RFC 3339 UTC with milliseconds, as the replicas' own log lines.
fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SupervisorConfig {
        SupervisorConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            crash_loop_after: 3,
            ..SupervisorConfig::default()
        }
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(&config());
        let mut delays = Vec::new();
        for _ in 0..6 {
            b.failed();
            delays.push(b.delay().as_millis());
        }
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        for _ in 0..100 {
            b.failed();
        }
        assert_eq!(b.delay(), Duration::from_millis(1000));
        b.reset();
        b.failed();
        assert_eq!(b.delay(), Duration::from_millis(100));
    }

    #[test]
    fn crash_loop_after_consecutive_failures() {
        let mut b = Backoff::new(&config());
        b.failed();
        b.failed();
        assert!(!b.crash_looping());
        b.failed();
        assert!(b.crash_looping());
        b.reset();
        assert!(!b.crash_looping());
    }

    #[cfg(unix)]
    #[test]
    fn exits_are_described() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(ExitStatus::from_raw(1 << 8)),
            "exited with code 1"
        );
        assert_eq!(describe_exit(ExitStatus::from_raw(0)), "exited with code 0");
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(64)),
            "killed by signal 64"
        );
    }

    #[test]
    fn status_lines_are_parsed() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 200"), Some(200));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 20000 OK\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_825_600);
        assert_eq!(timestamp(leap), "2000-02-29T12:00:00.000Z");
    }

    #[test]
    fn tail_reads_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        assert!(tail_lines(&path, 3).is_empty(), "missing file");
        std::fs::write(&path, "").expect("write");
        assert!(tail_lines(&path, 3).is_empty());
        std::fs::write(&path, "a\nb\r\nc\n").expect("write");
        assert_eq!(tail_lines(&path, 2), ["b", "c"]);
        assert_eq!(tail_lines(&path, 10), ["a", "b", "c"]);
        assert!(tail_lines(&path, 0).is_empty());
        std::fs::write(&path, "a\nb\nno newline").expect("write");
        assert_eq!(tail_lines(&path, 2), ["b", "no newline"]);
    }

    #[test]
    fn tail_spans_chunks_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let text: String = (0..5000).map(|i| format!("line {i:05}\n")).collect();
        std::fs::write(&path, &text).expect("write");
        let tail = tail_lines(&path, 2000);
        assert_eq!(tail.len(), 2000);
        assert_eq!(tail[0], "line 03000");
        assert_eq!(tail[1999], "line 04999");
        // One line longer than the bound: nothing whole is in reach.
        let long = "x".repeat(TAIL_MAX_BYTES as usize + 10);
        std::fs::write(&path, format!("{long}\nlast\n")).expect("write");
        assert_eq!(tail_lines(&path, 5), ["last"]);
    }

    #[test]
    fn tail_since_an_offset_ignores_older_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        std::fs::write(&path, "old 1\nold 2\nnew 1\nnew 2\n").expect("write");
        assert_eq!(tail_since(&path, 12, 10), ["new 1", "new 2"]);
    }

    #[test]
    fn the_error_line_of_a_failed_start_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        std::fs::write(
            &path,
            "2026-01-01T00:00:00Z  INFO inferd: listening\n\
             2026-01-01T00:00:00Z ERROR inferd: model 'm' failed\n\
             error: model 'm': cannot load model\n\
             2026-01-01T00:00:01Z [supervisor] m-1: pid 7 exited with code 1\n",
        )
        .expect("write");
        assert_eq!(
            last_error_line(&path, 0).as_deref(),
            Some("model 'm': cannot load model")
        );
        std::fs::write(
            &path,
            "INFO a\nthread 'main' panicked at x.rs:1\nnote: ...\n",
        )
        .expect("write");
        assert_eq!(
            last_error_line(&path, 0).as_deref(),
            Some("thread 'main' panicked at x.rs:1")
        );
        std::fs::write(&path, "INFO listening\n").expect("write");
        assert_eq!(last_error_line(&path, 0), None);
    }

    #[test]
    fn picked_ports_differ_and_avoid_the_previous_ones() {
        let host = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (http, grpc) = pick_ports(host, true, &[]).expect("ports");
        let grpc = grpc.expect("grpc port");
        assert_ne!(http.port(), grpc.port());
        assert_eq!(http.ip(), host);
        let (again, none) = pick_ports(host, false, &[http.port(), grpc.port()]).expect("ports");
        assert_eq!(none, None);
        assert_ne!(again.port(), http.port());
        assert_ne!(again.port(), grpc.port());
    }

    #[tokio::test]
    async fn probes_read_the_status_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            for reply in [
                "HTTP/1.1 200 OK\r\n\r\n",
                "HTTP/1.1 503 Service Unavailable\r\n\r\n",
            ] {
                let (mut stream, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let n = stream.read(&mut buf).await.expect("read");
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(
                    request.starts_with("GET /v2/health/ready HTTP/1.1\r\n"),
                    "{request}"
                );
                stream.write_all(reply.as_bytes()).await.expect("write");
            }
        });
        let timeout = Duration::from_secs(5);
        assert_eq!(probe_ready(addr, timeout).await, Ok(()));
        assert_eq!(
            probe_ready(addr, timeout).await,
            Err("status 503".to_owned())
        );
        server.await.expect("server");
        assert!(probe_ready(addr, timeout).await.is_err(), "nothing listens");
    }

    #[tokio::test]
    async fn a_missing_program_crash_loops_with_the_spawn_error_until_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = ReplicaSpec {
            id: "missing-1".to_owned(),
            program: dir.path().join("no-such-inferd"),
            args: vec!["serve".into()],
            env: Vec::new(),
            grpc: false,
            log_path: dir.path().join("logs/missing-1.log"),
            limits: ReplicaLimits::default(),
        };
        let config = SupervisorConfig {
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            ..SupervisorConfig::default()
        };
        let handle = ReplicaHandle::spawn(spec, config);
        assert_eq!(handle.id(), "missing-1");
        let mut rx = handle.watch();
        let status = tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|s| s.phase == Phase::CrashLoop && s.restarts >= 3),
        )
        .await
        .expect("crash loop in time")
        .expect("status")
        .clone();
        let message = status.message.unwrap_or_default();
        assert!(message.contains("cannot start"), "{message}");
        assert!(message.contains("no-such-inferd"), "{message}");
        assert_eq!(status.pid, None);
        let log = tail_lines(&dir.path().join("logs/missing-1.log"), 100);
        assert!(log.len() >= 3, "{log:?}");
        assert!(
            log.iter()
                .all(|l| l.contains("[supervisor] missing-1: failed to start")),
            "{log:?}"
        );
        handle.stop().await;
        assert_eq!(rx.borrow_and_update().phase, Phase::Stopped);
        assert!(rx.changed().await.is_err(), "supervision ended");
    }

    /// A child that never answers and ignores its stdin; the arguments the
    /// supervisor appends become the script's unused `$0 $1 ...`.
    fn stubborn(dir: &Path, id: &str) -> ReplicaSpec {
        ReplicaSpec {
            id: id.to_owned(),
            program: "sh".into(),
            args: vec!["-c".into(), "exec sleep 30".into()],
            env: Vec::new(),
            grpc: false,
            log_path: dir.join(format!("{id}.log")),
            limits: ReplicaLimits::default(),
        }
    }

    async fn wait_for(
        rx: &mut watch::Receiver<ReplicaStatus>,
        pred: impl FnMut(&ReplicaStatus) -> bool,
    ) -> ReplicaStatus {
        let found = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(pred))
            .await
            .map(|r| r.map(|s| s.clone()));
        match found {
            Ok(Ok(status)) => status,
            _ => panic!("status not reached: {:#?}", *rx.borrow()),
        }
    }

    #[tokio::test]
    async fn a_start_never_ready_is_killed_after_the_ready_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SupervisorConfig {
            ready_timeout: Duration::from_millis(200),
            // Long enough to look at the BackOff phase.
            backoff_initial: Duration::from_secs(600),
            ..SupervisorConfig::default()
        };
        let handle = ReplicaHandle::spawn(stubborn(dir.path(), "slow-1"), config);
        let mut rx = handle.watch();
        let starting = wait_for(&mut rx, |s| s.pid.is_some()).await;
        assert_eq!(starting.phase, Phase::Starting);
        let status = wait_for(&mut rx, |s| s.phase == Phase::BackOff).await;
        assert_eq!(
            status.last_exit.as_deref(),
            Some("killed by signal 9 (SIGKILL)")
        );
        assert_eq!(status.message.as_deref(), Some("not ready after 0.2s"));
        assert_eq!((status.pid, status.restarts), (None, 0));
        // A stop while waiting to restart ends it at once.
        tokio::time::timeout(Duration::from_secs(30), handle.stop())
            .await
            .expect("stopped during the backoff");
        let stopped = rx.borrow_and_update().clone();
        assert_eq!((stopped.phase, stopped.restarts), (Phase::Stopped, 0));
    }

    #[tokio::test]
    async fn a_replica_ignoring_the_stop_is_killed_after_the_stop_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SupervisorConfig {
            stop_timeout: Duration::from_millis(100),
            ..SupervisorConfig::default()
        };
        let handle = ReplicaHandle::spawn(stubborn(dir.path(), "stubborn-1"), config);
        let mut rx = handle.watch();
        let pid = wait_for(&mut rx, |s| s.pid.is_some()).await.pid;
        let asked = Instant::now();
        handle.stop().await;
        assert!(asked.elapsed() >= Duration::from_millis(100));
        let stopped = rx.borrow_and_update().clone();
        assert_eq!(stopped.phase, Phase::Stopped);
        assert_eq!(
            stopped.last_exit.as_deref(),
            Some("killed by signal 9 (SIGKILL)")
        );
        let log = tail_lines(&dir.path().join("stubborn-1.log"), 10);
        let exit = format!("pid {} killed by signal 9 (SIGKILL)", pid_text(pid));
        assert!(log.iter().any(|l| l.ends_with(&exit)), "{log:?}");
    }
}
