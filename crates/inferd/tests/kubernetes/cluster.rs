//! One real Kubernetes per test run: etcd, kube-apiserver,
//! kube-controller-manager and a node (containerd, kubelet, kube-scheduler,
//! kube-proxy) started by the scripts of the machine's Kubernetes kit
//! (`../shared/k8s`, or `INFERD_K8S_DIR`), on free loopback ports, in a
//! data directory of its own.
//!
//! - The node's parts (the bridge, the kubelet's ports, kube-proxy's
//!   iptables chains) exist once per machine, so runs are serialised by a
//!   file lock. The lock is held by a small watchdog process (`flock ... sh`)
//!   that this process feeds through a pipe: when this process ends, however
//!   it ends (a panic, an abort, SIGKILL), the pipe closes, and the watchdog
//!   stops what the run started (by PID, through the kit's `stop`), removes
//!   the data directory (kept with `INFERD_K8S_KEEP=1`, for its logs) and
//!   only then releases the lock.
//! - Where the kit is absent the suite says so loudly and its tests pass
//!   without doing anything; where it is present, a failure to start fails
//!   every test with the start log.
//! - The image the pods run is the binary under test (debug symbols
//!   stripped) with the iris model, imported into the node's containerd.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The Kubernetes version the kit builds; tests compare the server's.
pub const KUBERNETES_VERSION: &str = "v1.36.2";

/// The started cluster.
pub struct Cluster {
    /// This run's data directory (PKI, logs, etcd, the node's state).
    pub root: PathBuf,
    /// The kit's directory (its scripts).
    pub kit: PathBuf,
    /// The API server, on loopback.
    pub api: SocketAddr,
    /// kubeconfig of the cluster admin (group system:masters).
    pub admin: PathBuf,
    /// The CA the API server's certificate is signed by.
    pub ca: PathBuf,
    /// The environment the kit's scripts ran with (ports, data directory).
    env: Vec<(String, String)>,
    /// Feeds the watchdog; closing it stops the cluster.
    _watchdog: Mutex<ChildStdin>,
    /// Scenarios that change what is shared (the operator processes, the
    /// cluster-wide objects) take this lock.
    exclusive: Mutex<()>,
}

static CLUSTER: OnceLock<Result<Option<Cluster>, String>> = OnceLock::new();

/// The run's cluster, started on first use. `None` where the kit is absent
/// (said on stderr); panics with the start log where it failed to start.
pub fn cluster() -> Option<&'static Cluster> {
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster.as_ref(),
        Err(e) => panic!("the Kubernetes cluster did not start:\n{e}"),
    }
}

/// The kit's directory, if this machine has it: `INFERD_K8S_DIR`, else
/// `shared/k8s` beside the repository or beside one of its parents (a clone
/// made elsewhere in the same workplace finds it too), else the machines'
/// usual place, `/work/shared/k8s`.
fn kit_dir() -> Option<PathBuf> {
    let has_kit = |dir: &Path| dir.join("start-cluster.sh").is_file();
    if let Some(dir) = std::env::var_os("INFERD_K8S_DIR").map(PathBuf::from) {
        return has_kit(&dir).then(|| dir.canonicalize().unwrap_or(dir));
    }
    let repo = repo("").canonicalize().ok()?;
    repo.ancestors()
        .skip(1)
        .map(|a| a.join("shared/k8s"))
        .chain([PathBuf::from("/work/shared/k8s")])
        .find(|dir| has_kit(dir))
}

/// Where the kit's binaries are unpacked once and each run's data
/// directory lives.
fn cache_dir() -> PathBuf {
    std::env::var_os("INFERD_K8S_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/inferd-k8s")
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn run_logged(cmd: &mut Command, log: &Path) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::write(log, &text);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({}):\n{text}", out.status))
    }
}

/// The last lines of every log of the run, for a failure message.
fn log_tails(root: &Path) -> String {
    let mut out = String::new();
    for dir in [root.join("run136/logs"), root.join("node/logs")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            out.push_str(&format!("--- {}\n{tail}\n", entry.path().display()));
        }
    }
    out
}

fn start() -> Result<Option<Cluster>, String> {
    let Some(kit) = kit_dir() else {
        eprintln!(
            "\n================================================================\n\
             SKIPPED: the Kubernetes end-to-end suite needs the Kubernetes kit\n\
             at ../shared/k8s (or INFERD_K8S_DIR); it is absent on this machine.\n\
             ================================================================\n"
        );
        return Ok(None);
    };
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    // The kit's binaries, unpacked once per machine.
    let bins = cache.join("bin136");
    if !bins.join("kube-apiserver").is_file() {
        run_logged(
            Command::new(kit.join("start-cluster.sh"))
                .arg("build")
                .env("ROOT", &cache),
            &cache.join("build.log"),
        )?;
    }

    let root = cache.join(format!("e2e-{}", std::process::id()));
    let etcd = free_port();
    let env: Vec<(String, String)> = vec![
        ("ROOT".into(), root.display().to_string()),
        ("INFERD_K8S_ROOT".into(), root.display().to_string()),
        ("ETCD_PORT".into(), etcd.to_string()),
        ("ETCD_PEER_PORT".into(), free_port().to_string()),
        ("API_PORT".into(), free_port().to_string()),
        ("KCM_PORT".into(), free_port().to_string()),
        ("SCHED_PORT".into(), free_port().to_string()),
        ("NODE".into(), "1".into()),
        (
            "INFERD_BIN".into(),
            root.join("inferd").display().to_string(),
        ),
        (
            "INFERD_MODEL".into(),
            repo("examples/models/iris").display().to_string(),
        ),
    ];
    let api_port: u16 = env[4].1.parse().map_err(|e| format!("{e}"))?;

    // The watchdog takes the machine's lock, then waits for this process
    // to end (its stdin closes) and stops the cluster.
    let lock = cache.join("e2e.lock");
    let script = r#"
echo locked
cat >/dev/null
"$KIT/start-cluster.sh" stop >>"$ROOT/stop.log" 2>&1
if [ -z "$KEEP" ] && ! grep -q " $ROOT/" /proc/mounts; then rm -rf "$ROOT"; fi
"#;
    let mut watchdog = Command::new("flock");
    watchdog
        .arg("-x")
        .arg(&lock)
        .args(["sh", "-c", script])
        .env("KIT", &kit)
        // INFERD_K8S_KEEP=1 keeps the data directory (logs) for a look.
        .env(
            "KEEP",
            std::env::var_os("INFERD_K8S_KEEP").unwrap_or_default(),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // Its own process group: an interrupt of the test run must not stop it
    // before it has cleaned up.
    std::os::unix::process::CommandExt::process_group(&mut watchdog, 0);
    let mut watchdog: Child = watchdog
        .spawn()
        .map_err(|e| format!("cannot run flock (util-linux): {e}"))?;
    let stdin = watchdog.stdin.take().ok_or("watchdog stdin")?;
    let stdout = watchdog.stdout.take().ok_or("watchdog stdout")?;
    let waiting = Instant::now();
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let got = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(got);
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(l)) if l.trim() == "locked" => break,
            Ok(other) => return Err(format!("the watchdog did not take the lock: {other:?}")),
            Err(_) => eprintln!(
                "waiting {:?} for another Kubernetes test run to finish ({})",
                waiting.elapsed(),
                lock.display()
            ),
        }
    }
    // Sweep what a run killed together with its watchdog left behind.
    sweep_stale(&cache);
    if Command::new("ip")
        .args(["link", "show", "k8sbr0"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Err(format!(
            "a node started outside this test run is up (the bridge k8sbr0 exists): \
             stop it with `{}/start-cluster.sh stop` (with its ROOT)",
            kit.display()
        ));
    }

    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    check_free_disk(&root)?;
    std::os::unix::fs::symlink(&bins, root.join("bin136"))
        .map_err(|e| format!("link the binaries: {e}"))?;
    // The image's binary: the one under test, without its debug sections
    // (an 800 MB debug build becomes ~100 MB).
    let binary = Path::new(env!("CARGO_BIN_EXE_inferd"));
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(root.join("inferd"))
        .arg(binary)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(binary, root.join("inferd")).map_err(|e| format!("copy inferd: {e}"))?;
    }

    let started = Instant::now();
    let result = run_logged(
        Command::new(kit.join("start-cluster.sh"))
            .arg("start")
            .current_dir(repo(""))
            .envs(env.iter().map(|(k, v)| (k, v))),
        &root.join("start.log"),
    );
    if let Err(e) = result {
        return Err(format!("{e}\n{}", log_tails(&root)));
    }
    eprintln!(
        "Kubernetes {KUBERNETES_VERSION} (etcd, control plane, one node) started in {:.1?} in {}",
        started.elapsed(),
        root.display()
    );
    Ok(Some(Cluster {
        admin: root.join("run136/admin.kubeconfig"),
        ca: root.join("run136/pki/ca.crt"),
        api: SocketAddr::from(([127, 0, 0, 1], api_port)),
        root,
        kit,
        env,
        _watchdog: Mutex::new(stdin),
        exclusive: Mutex::new(()),
    }))
}

/// The share of the disk under `dir` that is free must leave the node's
/// kubelet out of disk pressure: under 5% free (the kit's `evictionHard`
/// for nodefs and imagefs) it taints the node and evicts pods, and every
/// test that waits for a pod would time out for a reason it cannot name.
fn check_free_disk(dir: &Path) -> Result<(), String> {
    let out = Command::new("df")
        .args(["-P", "-k"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run df: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().nth(1) else {
        return Ok(());
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (Some(total), Some(available)) = (
        fields.get(1).and_then(|v| v.parse::<f64>().ok()),
        fields.get(3).and_then(|v| v.parse::<f64>().ok()),
    ) else {
        return Ok(());
    };
    let free = 100.0 * available / total.max(1.0);
    if free < 7.0 {
        return Err(format!(
            "only {free:.1}% of the disk holding {} is free ({:.1} GiB): the test node's kubelet \
             refuses and evicts pods under 5% (disk pressure); free some space (e.g. old build \
             directories) and run again",
            dir.display(),
            available / 1024.0 / 1024.0
        ));
    }
    Ok(())
}

/// Removes the data directories of runs that are over (their process is
/// gone) once nothing is mounted under them.
fn sweep_stale(cache: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("e2e-") else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let dir = entry.path();
        if mounts.contains(&format!(" {}/", dir.display())) {
            continue;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

impl Cluster {
    /// Serialises scenarios that change what others share; a panic in one
    /// does not poison the others.
    pub fn exclusive(&self) -> MutexGuard<'_, ()> {
        self.exclusive
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The environment the kit's scripts ran with.
    pub fn kit_env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `kubectl` as the cluster admin.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl {
            kubeconfig: self.admin.clone(),
        }
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name`
    /// with a token from the TokenRequest API, so that RBAC applies as it
    /// would to a pod running as that account.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self
            .kubectl()
            .ok(&["create", "token", name, "-n", namespace, "--duration=2h"]);
        let path = self.root.join(format!("sa-{namespace}-{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster: {{server: \"https://{}\", certificate-authority: \"{}\"}}\nusers:\n- name: {name}\n  user: {{token: \"{}\"}}\ncontexts:\n- name: {name}@real\n  context: {{cluster: real, user: {name}, namespace: {namespace}}}\ncurrent-context: {name}@real\n",
            self.api,
            self.ca.display(),
            token.trim()
        );
        std::fs::write(&path, text).expect("write the ServiceAccount's kubeconfig");
        Kubectl {
            kubeconfig: path.clone(),
        }
        .ok(&["auth", "whoami", "-o", "name"]);
        path
    }
}

/// `kubectl` with one kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn as_user(kubeconfig: PathBuf) -> Kubectl {
        Kubectl { kubeconfig }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `kubectl ARGS` with `input` on stdin.
    pub fn run(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut cmd = self.command();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("kubectl runs (is it installed?)");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            let input = input.to_owned();
            thread::spawn(move || {
                let _ = stdin.write_all(input.as_bytes());
            });
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// `kubectl ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    /// `kubectl ARGS` with `input` on stdin, which must succeed; its stdout.
    pub fn ok_with(&self, args: &[&str], input: Option<&str>) -> String {
        let out = self.run(args, input);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Server-side apply of `yaml` (field manager `manager`): stdout and
    /// stderr (where the API server's warnings are printed).
    pub fn apply(&self, yaml: &str, manager: &str, extra: &[&str]) -> Output {
        let manager = format!("--field-manager={manager}");
        let mut args = vec!["apply", "--server-side", manager.as_str(), "-f", "-"];
        args.extend_from_slice(extra);
        self.run(&args, Some(yaml))
    }

    /// The object as JSON, or `None` when it does not exist.
    pub fn get_json(&self, kind: &str, name: &str, namespace: Option<&str>) -> Option<Value> {
        let mut args = vec!["get", kind, name, "-o", "json", "--ignore-not-found"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let text = self.ok(&args);
        if text.trim().is_empty() {
            return None;
        }
        Some(serde_json::from_str(&text).expect("kubectl -o json prints JSON"))
    }

    /// `kubectl get KIND -n NS -o json`: the items.
    pub fn list(&self, kind: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["get", kind, "-n", namespace, "-o", "json"];
        args.extend_from_slice(extra);
        let text = self.ok(&args);
        let list: Value = serde_json::from_str(&text).expect("kubectl -o json prints JSON");
        list["items"].as_array().cloned().unwrap_or_default()
    }
}

/// Polls `check` every 100 ms until it returns `Some`, at most `timeout`;
/// panics naming `what` and the last value seen otherwise.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A command that dies with the thread that starts it (PR_SET_PDEATHSIG,
/// through util-linux's `setpriv`), so that nothing a test starts outlives
/// a test process that was killed.
pub fn guarded_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
    cmd
}

/// A process the test started (an operator, a load generator), from a
/// [`guarded_command`]: stopped and reaped when dropped, panics included.
pub struct Process {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` (a [`guarded_command`]), its stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).expect("create the process log");
        let err = file.try_clone().expect("clone the log file");
        cmd.stdin(Stdio::null()).stdout(file).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (e.g. "KILL", "TERM").
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit (60 s at most).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        wait_until(
            &format!("{} to exit", self.name),
            Duration::from_secs(60),
            || self.child.try_wait().ok().flatten(),
        )
    }
}

impl Drop for Process {
    /// SIGTERM first, so that a leading operator releases its Lease and the
    /// next test's operator need not wait out the lease duration.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
