//! A replica's `resources.cpu` and `resources.memory`, enforced on its
//! process.
//!
//! Where the machine lets `up` manage control groups (root, or a delegated
//! cgroup), each replica gets a group of its own under `up`'s: a CPU quota
//! (`cpu.cfs_quota_us` on cgroup v1, `cpu.max` on v2) of the cores asked
//! for, and a memory limit (`memory.limit_in_bytes` / `memory.max`) past
//! which the kernel kills the replica, as Kubernetes does with a container.
//! The group is made and given its limits before the process starts, and
//! the process joins it the moment it is started.
//!
//! Elsewhere the nearest honest approximation is per process: memory as
//! `RLIMIT_DATA` (the process's private writable memory: its heap and
//! anonymous mappings, which is what a model's weights and buffers take;
//! past it an allocation fails and the replica exits), CPU as an affinity to
//! `ceil(cores)` of the cores `up` may use. What applies is chosen once at
//! start (`up --replica-limits auto|cgroup|rlimit`) and shown per replica.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use inferd_api::Resources;

/// What a replica may use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaLimits {
    /// CPU in thousandths of a core.
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

impl ReplicaLimits {
    /// The limits a predictor's resources ask for (validated before: a
    /// quantity that does not parse is left out).
    pub fn of(resources: Option<&Resources>) -> ReplicaLimits {
        ReplicaLimits {
            cpu_millis: resources
                .and_then(|r| r.cpu.as_ref())
                .and_then(|q| q.millicores()),
            memory_bytes: resources
                .and_then(|r| r.memory.as_ref())
                .and_then(|q| q.bytes()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cpu_millis.is_none() && self.memory_bytes.is_none()
    }
}

/// How limits are enforced, as `up --replica-limits` asks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LimitMode {
    /// Control groups where they can be managed, else process limits.
    #[default]
    Auto,
    /// Control groups, or `up` refuses to start.
    Cgroup,
    /// Process limits (`RLIMIT_DATA`, CPU affinity).
    Rlimit,
}

impl std::str::FromStr for LimitMode {
    type Err = String;

    fn from_str(s: &str) -> Result<LimitMode, String> {
        match s {
            "auto" => Ok(LimitMode::Auto),
            "cgroup" => Ok(LimitMode::Cgroup),
            "rlimit" => Ok(LimitMode::Rlimit),
            other => Err(format!("{other:?}: expected auto, cgroup or rlimit")),
        }
    }
}

/// Why control groups cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot manage control groups under {}: {reason}", path.display())]
pub struct CgroupError {
    pub path: PathBuf,
    pub reason: String,
}

/// The control groups `up` made for its replicas: one folder per
/// controller hierarchy (one on cgroup v2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cgroups {
    /// v1: the `cpu` and `memory` hierarchies' folders for this `up`.
    V1 { cpu: PathBuf, memory: PathBuf },
    /// v2: this `up`'s folder, with the cpu and memory controllers enabled
    /// for its children.
    V2 { root: PathBuf },
}

/// How this `up` enforces limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enforcer {
    Cgroups(Cgroups),
    Rlimit,
}

impl fmt::Display for Enforcer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Enforcer::Cgroups(Cgroups::V1 { .. }) => f.write_str("cgroup v1"),
            Enforcer::Cgroups(Cgroups::V2 { .. }) => f.write_str("cgroup v2"),
            Enforcer::Rlimit => f.write_str("rlimit"),
        }
    }
}

/// The quota period written with a CPU quota, in µs (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

impl Enforcer {
    /// Chooses how to enforce limits. `base` is the cgroup file system's
    /// mount point (`/sys/fs/cgroup`), `own` this process's
    /// `/proc/self/cgroup`, `name` the folder made for this `up`
    /// (`inferd-PID`).
    pub fn choose(
        mode: LimitMode,
        base: &Path,
        own: &str,
        name: &str,
    ) -> Result<Enforcer, CgroupError> {
        match mode {
            LimitMode::Rlimit => Ok(Enforcer::Rlimit),
            LimitMode::Cgroup => Cgroups::create(base, own, name).map(Enforcer::Cgroups),
            LimitMode::Auto => match Cgroups::create(base, own, name) {
                Ok(c) => Ok(Enforcer::Cgroups(c)),
                Err(e) => {
                    tracing::info!(error = %e, "replica limits: process limits instead of control groups");
                    Ok(Enforcer::Rlimit)
                }
            },
        }
    }

    /// The machine's enforcer for this process.
    pub fn for_this_process(mode: LimitMode) -> Result<Enforcer, CgroupError> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Enforcer::choose(
            mode,
            Path::new("/sys/fs/cgroup"),
            &own,
            &format!("inferd-{}", std::process::id()),
        )
    }

    /// Readies replica `id`'s limits before its process starts (making a
    /// control group takes the kernel milliseconds, which the process must
    /// not spend outside it).
    pub fn prepare(&self, id: &str, limits: &ReplicaLimits) -> io::Result<()> {
        match self {
            Enforcer::Cgroups(c) if !limits.is_empty() => c.prepare(id, limits),
            _ => Ok(()),
        }
    }

    /// How to start replica `id`'s `program` with `args` under its limits:
    /// through `/bin/sh`, which moves itself into each group (or sets its
    /// data limit) and then `exec`s the program (same pid), so that nothing
    /// the replica does happens outside them (moving a running process
    /// takes the kernel long enough for a replica to have loaded its
    /// model). `None`: start it as it is.
    pub fn launcher(
        &self,
        id: &str,
        limits: &ReplicaLimits,
        program: &Path,
        args: &[std::ffi::OsString],
    ) -> Option<(PathBuf, Vec<std::ffi::OsString>)> {
        if limits.is_empty() {
            return None;
        }
        let mut wrapped: Vec<std::ffi::OsString> = vec!["-c".into()];
        match self {
            Enforcer::Cgroups(c) => {
                let groups = c.groups(id, limits);
                // `sh -c SCRIPT sh N GROUP... PROGRAM ARG...`: every path is
                // a positional parameter, never part of the script.
                let script = "n=$1; shift; while [ \"$n\" -gt 0 ]; do echo $$ > \"$1/cgroup.procs\" || exit 125; shift; n=$((n - 1)); done; exec \"$@\"";
                wrapped.extend([script.into(), "sh".into(), groups.len().to_string().into()]);
                wrapped.extend(groups.into_iter().map(PathBuf::into_os_string));
            }
            Enforcer::Rlimit => {
                // The data limit before the program runs (a limit set from
                // outside later would spare what it allocated first); the
                // CPU affinity is set from outside (see `apply`).
                let bytes = limits.memory_bytes?;
                let script = "ulimit -d \"$1\" || exit 125; shift; exec \"$@\"";
                wrapped.extend([
                    script.into(),
                    "sh".into(),
                    bytes.div_ceil(1024).to_string().into(),
                ]);
            }
        }
        wrapped.push(program.as_os_str().to_owned());
        wrapped.extend(args.iter().cloned());
        Some((PathBuf::from("/bin/sh"), wrapped))
    }

    /// Puts the process `pid` of replica `id`, just started (through
    /// [`Enforcer::launcher`] where it gives one), under the limits
    /// [`Enforcer::prepare`] readied, or checks that it is; returns what
    /// was applied, for the replica's log.
    pub fn apply(&self, id: &str, pid: u32, limits: &ReplicaLimits) -> io::Result<String> {
        if limits.is_empty() {
            return Ok(String::new());
        }
        match self {
            Enforcer::Cgroups(c) => c.join(id, pid, limits),
            Enforcer::Rlimit => apply_rlimits(pid, limits),
        }
    }

    /// Whether the kernel killed replica `id`'s last process for passing
    /// its memory limit (read before [`Enforcer::release`]).
    pub fn oom_killed(&self, id: &str, limits: &ReplicaLimits) -> bool {
        let Enforcer::Cgroups(c) = self else {
            return false;
        };
        if limits.memory_bytes.is_none() {
            return false;
        }
        let events = match c {
            Cgroups::V1 { memory, .. } => memory.join(id).join("memory.oom_control"),
            Cgroups::V2 { root } => root.join(id).join("memory.events"),
        };
        std::fs::read_to_string(events).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    }

    /// Forgets replica `id`'s group once its process has exited.
    pub fn release(&self, id: &str) {
        if let Enforcer::Cgroups(c) = self {
            c.release(id);
        }
    }

    /// Removes this `up`'s groups (every replica has exited).
    pub fn close(&self) {
        if let Enforcer::Cgroups(c) = self {
            for dir in c.roots() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// This process's group in one hierarchy, from `/proc/self/cgroup`
/// (`ID:CONTROLLERS:PATH` lines; v2's is `0::PATH`).
fn own_group<'a>(own: &'a str, controller: &str) -> Option<&'a str> {
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        matches.then_some(path)
    })
}

fn under(base: &Path, group: &str) -> PathBuf {
    base.join(group.trim_start_matches('/'))
}

fn cgroup_error(path: &Path, reason: impl fmt::Display) -> CgroupError {
    CgroupError {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Removes the groups that `up`s no longer running left under `parent`
/// (one killed has no chance to remove its own): `inferd-PID` folders whose
/// process is gone, with their replicas' (empty) groups.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("inferd-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
        }
        if std::fs::remove_dir(&dir).is_ok() {
            tracing::debug!(group = %dir.display(), "removed a stale replica group");
        }
    }
}

/// Makes `dir` (it may exist from an earlier `up` of the same pid) and
/// checks that it can be written.
fn make_group(dir: &Path) -> Result<(), CgroupError> {
    if let Some(parent) = dir.parent() {
        sweep_stale(parent);
    }
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(cgroup_error(dir, e)),
    }
}

impl Cgroups {
    fn create(base: &Path, own: &str, name: &str) -> Result<Cgroups, CgroupError> {
        let cpu_v1 = base.join("cpu");
        let memory_v1 = base.join("memory");
        if memory_v1.join("memory.limit_in_bytes").exists()
            && cpu_v1.join("cpu.cfs_quota_us").exists()
        {
            // v1 (or hybrid): a group under ours in each hierarchy; v1 lets
            // a group with processes have children.
            let cpu = under(&cpu_v1, own_group(own, "cpu").unwrap_or("/")).join(name);
            let memory = under(&memory_v1, own_group(own, "memory").unwrap_or("/")).join(name);
            make_group(&cpu)?;
            if let Err(e) = make_group(&memory) {
                let _ = std::fs::remove_dir(&cpu);
                return Err(e);
            }
            return Ok(Cgroups::V1 { cpu, memory });
        }
        let controllers = std::fs::read_to_string(base.join("cgroup.controllers"))
            .map_err(|e| cgroup_error(base, format!("no cgroup v1 or v2 file system ({e})")))?;
        let available: Vec<&str> = controllers.split_whitespace().collect();
        if !available.contains(&"cpu") || !available.contains(&"memory") {
            return Err(cgroup_error(
                base,
                format!("the cpu and memory controllers are not available (only: {controllers:?})"),
            ));
        }
        // v2: a group under ours may enable controllers for its children
        // only if ours is the root or holds no process (the kernel's rule),
        // so the group is made beside the processes, at our group's level
        // when it is the root.
        let ours = own_group(own, "").unwrap_or("/");
        let parent = under(base, ours);
        let root = parent.join(name);
        make_group(&root)?;
        if let Err(e) = std::fs::write(root.join("cgroup.subtree_control"), "+cpu +memory") {
            let _ = std::fs::remove_dir(&root);
            return Err(cgroup_error(
                &root,
                format!("cannot enable cpu and memory: {e}"),
            ));
        }
        Ok(Cgroups::V2 { root })
    }

    fn roots(&self) -> Vec<&Path> {
        match self {
            Cgroups::V1 { cpu, memory } => vec![cpu, memory],
            Cgroups::V2 { root } => vec![root],
        }
    }

    /// The groups of replica `id` that `limits` need, by hierarchy.
    fn groups(&self, id: &str, limits: &ReplicaLimits) -> Vec<PathBuf> {
        match self {
            Cgroups::V1 { cpu, memory } => {
                let mut groups = Vec::new();
                if limits.cpu_millis.is_some() {
                    groups.push(cpu.join(id));
                }
                if limits.memory_bytes.is_some() {
                    groups.push(memory.join(id));
                }
                groups
            }
            Cgroups::V2 { root } => vec![root.join(id)],
        }
    }

    fn prepare(&self, id: &str, limits: &ReplicaLimits) -> io::Result<()> {
        for dir in self.groups(id, limits) {
            create_dir_if_missing(&dir)?;
        }
        match self {
            Cgroups::V1 { cpu, memory } => {
                if let Some(millis) = limits.cpu_millis {
                    let dir = cpu.join(id);
                    std::fs::write(dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                    std::fs::write(dir.join("cpu.cfs_quota_us"), cpu_quota(millis).to_string())?;
                }
                if let Some(bytes) = limits.memory_bytes {
                    let dir = memory.join(id);
                    std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
                    // No swap past the limit where the kernel counts it.
                    let _ =
                        std::fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
                }
            }
            Cgroups::V2 { root } => {
                let dir = root.join(id);
                if let Some(millis) = limits.cpu_millis {
                    std::fs::write(
                        dir.join("cpu.max"),
                        format!("{} {CPU_PERIOD_US}", cpu_quota(millis)),
                    )?;
                }
                if let Some(bytes) = limits.memory_bytes {
                    std::fs::write(dir.join("memory.max"), bytes.to_string())?;
                    // No swap: past the limit the replica is killed, as a
                    // container would be.
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                }
            }
        }
        Ok(())
    }

    /// Checks that `pid` is in replica `id`'s groups (the launcher moved
    /// it), moving it there if not.
    fn join(&self, id: &str, pid: u32, limits: &ReplicaLimits) -> io::Result<String> {
        let groups = self.groups(id, limits);
        for dir in &groups {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            if !procs.lines().any(|l| l.trim() == pid.to_string()) {
                std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
            }
        }
        Ok(groups
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "))
    }

    fn release(&self, id: &str) {
        for dir in self.roots() {
            let _ = std::fs::remove_dir(dir.join(id));
        }
    }
}

fn create_dir_if_missing(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The quota in µs per [`CPU_PERIOD_US`] for `millis` thousandths of a core
/// (at least the kernel's minimum of 1 ms).
fn cpu_quota(millis: u64) -> u64 {
    (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(1000)
}

/// Whole cores for an affinity: `ceil(millis / 1000)`, at least one.
fn whole_cores(millis: u64) -> usize {
    usize::try_from(millis.div_ceil(1000))
        .unwrap_or(usize::MAX)
        .max(1)
}

fn apply_rlimits(pid: u32, limits: &ReplicaLimits) -> io::Result<String> {
    use rustix::process::{Pid, Resource, Rlimit, prlimit};
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such process"))?;
    let mut applied = Vec::new();
    if let Some(bytes) = limits.memory_bytes {
        prlimit(
            Some(pid),
            Resource::Data,
            Rlimit {
                current: Some(bytes),
                maximum: Some(bytes),
            },
        )?;
        applied.push(format!("RLIMIT_DATA {bytes}"));
    }
    if let Some(millis) = limits.cpu_millis {
        let allowed = sched_getaffinity(None)?;
        let cores: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|c| allowed.is_set(*c))
            .collect();
        let want = whole_cores(millis);
        if want < cores.len() {
            // Spread replicas over the cores by pid.
            let start = usize::try_from(pid.as_raw_pid().unsigned_abs()).unwrap_or(0) % cores.len();
            let mut set = CpuSet::new();
            let mut chosen = Vec::new();
            for i in 0..want {
                let core = cores[(start + i) % cores.len()];
                set.set(core);
                chosen.push(core.to_string());
            }
            sched_setaffinity(Some(pid), &set)?;
            applied.push(format!("cpus {}", chosen.join(",")));
        }
    }
    Ok(applied.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferd_api::Quantity;

    #[test]
    fn limits_from_resources() {
        let r = Resources {
            cpu: Some(Quantity("500m".into())),
            memory: Some(Quantity("64Mi".into())),
            gpu: None,
        };
        assert_eq!(
            ReplicaLimits::of(Some(&r)),
            ReplicaLimits {
                cpu_millis: Some(500),
                memory_bytes: Some(64 << 20)
            }
        );
        assert!(ReplicaLimits::of(None).is_empty());
        assert_eq!(cpu_quota(500), 50_000);
        assert_eq!(cpu_quota(2000), 200_000);
        assert_eq!(cpu_quota(1), 1000);
        assert_eq!(whole_cores(500), 1);
        assert_eq!(whole_cores(1000), 1);
        assert_eq!(whole_cores(1500), 2);
        assert_eq!("cgroup".parse(), Ok(LimitMode::Cgroup));
        assert!("cgroups".parse::<LimitMode>().is_err());
    }

    #[test]
    fn own_groups_are_read_from_proc_self_cgroup() {
        let own = "9:name=systemd:/\n4:memory:/job/a\n1:cpu,cpuacct:/job/b\n0::/unified\n";
        assert_eq!(own_group(own, "memory"), Some("/job/a"));
        assert_eq!(own_group(own, "cpu"), Some("/job/b"));
        assert_eq!(own_group(own, ""), Some("/unified"));
        assert_eq!(own_group(own, "pids"), None);
    }

    #[test]
    fn v1_groups_nest_under_our_own_and_take_the_limits() {
        let base = tempfile::tempdir().expect("tmp");
        for (dir, file) in [
            ("cpu", "cpu.cfs_quota_us"),
            ("memory", "memory.limit_in_bytes"),
        ] {
            std::fs::create_dir_all(base.path().join(dir).join("job")).expect("mkdir");
            std::fs::write(base.path().join(dir).join(file), "-1").expect("write");
        }
        let own = "4:memory:/job\n1:cpu,cpuacct:/job\n";
        let e = Enforcer::choose(LimitMode::Cgroup, base.path(), own, "inferd-7").expect("v1");
        assert_eq!(e.to_string(), "cgroup v1");
        let limits = ReplicaLimits {
            cpu_millis: Some(250),
            memory_bytes: Some(1 << 30),
        };
        e.prepare("r1", &limits).expect("prepare");
        let applied = e.apply("r1", 42, &limits).expect("apply");
        let cpu = base.path().join("cpu/job/inferd-7/r1");
        let memory = base.path().join("memory/job/inferd-7/r1");
        assert!(applied.contains(&cpu.display().to_string()), "{applied}");
        let read = |p: PathBuf| std::fs::read_to_string(p).expect("read");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(memory.join("memory.limit_in_bytes")), "1073741824");
        assert_eq!(read(memory.join("cgroup.procs")), "42");
        assert!(!e.oom_killed("r1", &limits));
        std::fs::write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .expect("write");
        assert!(e.oom_killed("r1", &limits));
        // A plain folder keeps its files, so release cannot remove it here;
        // the kernel's groups have none that count.
        e.release("r1");
    }

    #[test]
    fn the_launcher_joins_every_group_then_runs_the_program_as_itself() {
        let base = tempfile::tempdir().expect("tmp");
        for (dir, file) in [
            ("cpu", "cpu.cfs_quota_us"),
            ("memory", "memory.limit_in_bytes"),
        ] {
            std::fs::create_dir_all(base.path().join(dir)).expect("mkdir");
            std::fs::write(base.path().join(dir).join(file), "-1").expect("write");
        }
        let e = Enforcer::choose(LimitMode::Cgroup, base.path(), "", "inferd-3").expect("v1");
        let limits = ReplicaLimits {
            cpu_millis: Some(500),
            memory_bytes: Some(1 << 20),
        };
        e.prepare("r 1", &limits).expect("prepare");
        // No limits: no launcher.
        assert!(
            e.launcher(
                "r 1",
                &ReplicaLimits::default(),
                Path::new("/bin/echo"),
                &[]
            )
            .is_none()
        );
        let args = ["$HOME;".into(), "a b".into()];
        let (program, wrapped) = e
            .launcher("r 1", &limits, Path::new("/bin/echo"), &args)
            .expect("launcher");
        let child = std::process::Command::new(program)
            .args(wrapped)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success());
        // The program ran with its arguments untouched, as the same process.
        assert_eq!(String::from_utf8_lossy(&out.stdout), "$HOME; a b\n");
        for dir in ["cpu", "memory"] {
            let procs = base.path().join(dir).join("inferd-3/r 1/cgroup.procs");
            assert_eq!(
                std::fs::read_to_string(procs).expect("procs").trim(),
                pid.to_string()
            );
        }
        assert!(
            e.apply("r 1", pid, &limits)
                .expect("apply")
                .contains("inferd-3")
        );
    }

    #[test]
    fn the_process_launcher_sets_the_data_limit_before_the_program_runs() {
        let limits = ReplicaLimits {
            cpu_millis: Some(500),
            memory_bytes: Some(256 << 20),
        };
        let args = ["-c".into(), "ulimit -d".into()];
        let (program, wrapped) = Enforcer::Rlimit
            .launcher("r", &limits, Path::new("/bin/sh"), &args)
            .expect("launcher");
        let out = std::process::Command::new(program)
            .args(wrapped)
            .output()
            .expect("run");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "262144");
        // CPU alone is set from outside: no launcher.
        let cpu_only = ReplicaLimits {
            cpu_millis: Some(500),
            memory_bytes: None,
        };
        assert!(
            Enforcer::Rlimit
                .launcher("r", &cpu_only, Path::new("/bin/sh"), &args)
                .is_none()
        );
    }

    #[test]
    fn groups_left_by_ups_that_are_gone_are_removed() {
        let base = tempfile::tempdir().expect("tmp");
        std::fs::write(base.path().join("cgroup.controllers"), "cpu memory\n").expect("write");
        // A pid that cannot be running, and ours.
        let stale = base.path().join("inferd-4194305");
        std::fs::create_dir_all(stale.join("iris-00001-1")).expect("mkdir");
        let ours = base.path().join(format!("inferd-{}", std::process::id()));
        std::fs::create_dir_all(&ours).expect("mkdir");
        let other = base.path().join("not-ours");
        std::fs::create_dir_all(&other).expect("mkdir");
        Enforcer::choose(LimitMode::Cgroup, base.path(), "0::/\n", "inferd-5").expect("v2");
        assert!(!stale.exists());
        assert!(ours.exists());
        assert!(other.exists());
    }

    #[test]
    fn v2_groups_enable_their_controllers() {
        let base = tempfile::tempdir().expect("tmp");
        std::fs::write(
            base.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("write");
        let e = Enforcer::choose(LimitMode::Auto, base.path(), "0::/\n", "inferd-9").expect("v2");
        assert_eq!(e.to_string(), "cgroup v2");
        let root = base.path().join("inferd-9");
        assert_eq!(
            std::fs::read_to_string(root.join("cgroup.subtree_control")).expect("read"),
            "+cpu +memory"
        );
        let limits = ReplicaLimits {
            cpu_millis: Some(1500),
            memory_bytes: Some(512 << 20),
        };
        e.prepare("r2", &limits).expect("prepare");
        e.apply("r2", 43, &limits).expect("apply");
        let read = |f: &str| std::fs::read_to_string(root.join("r2").join(f)).expect("read");
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("memory.max"), "536870912");
        assert_eq!(read("cgroup.procs"), "43");
    }

    #[test]
    fn without_control_groups_auto_falls_back_and_cgroup_refuses() {
        let base = tempfile::tempdir().expect("tmp");
        let e = Enforcer::choose(LimitMode::Auto, base.path(), "", "inferd-1").expect("auto");
        assert_eq!(e, Enforcer::Rlimit);
        let err = Enforcer::choose(LimitMode::Cgroup, base.path(), "", "inferd-1")
            .expect_err("no cgroups");
        assert!(err.to_string().contains("no cgroup v1 or v2"), "{err}");
        // v2 without the memory controller.
        std::fs::write(base.path().join("cgroup.controllers"), "cpu pids\n").expect("write");
        let err = Enforcer::choose(LimitMode::Cgroup, base.path(), "0::/\n", "inferd-1")
            .expect_err("no memory controller");
        assert!(err.to_string().contains("not available"), "{err}");
    }

    #[test]
    fn process_limits_reach_the_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let limits = ReplicaLimits {
            cpu_millis: Some(100),
            memory_bytes: Some(256 << 20),
        };
        let applied = Enforcer::Rlimit
            .apply("r", child.id(), &limits)
            .expect("apply");
        let proc_limits =
            std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
        let _ = child.kill();
        let _ = child.wait();
        assert!(applied.contains("RLIMIT_DATA 268435456"), "{applied}");
        let data = proc_limits
            .lines()
            .find(|l| l.starts_with("Max data size"))
            .expect("data line");
        assert!(data.contains("268435456"), "{data}");
    }
}
