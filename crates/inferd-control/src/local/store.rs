//! The state directory of the local control plane: applied services (one
//! JSON file each, written atomically), the admin API's address and token,
//! replica logs and the model cache.
//!
//! ```text
//! STATE/
//!   admin.json          where the running control plane listens, its pid
//!   token               the admin API's bearer token (0600)
//!   services/NAME.json  one applied service (spec, revisions, rollouts)
//!   logs/NAME/REVISION/REPLICA.log
//!   cache/              downloaded models, by content digest
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::service::ServiceRecord;

/// Where a running control plane can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminInfo {
    /// `http://127.0.0.1:PORT` of the admin API.
    pub admin_url: String,
    /// `http://127.0.0.1:PORT` of the router.
    pub router_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<String>,
    pub pid: u32,
}

/// A state directory problem, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a service record this version reads: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// A file or folder that others could have written (or read): the
    /// admin API would trust what they planted.
    #[error("refusing {what} {path}: {problem}; {fix}")]
    Unsafe {
        what: &'static str,
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error(
        "refusing the admin token in {path}: {len} characters, at least {MIN_TOKEN_LEN} are needed; remove the file (`inferd up` makes a new one)"
    )]
    ShortToken { path: PathBuf, len: usize },
}

/// What the token is called in errors.
const TOKEN: &str = "the admin token";

/// The shortest admin token read, by the control plane or a client (one
/// `inferd up` makes is 64 hex digits: 32 random bytes).
pub const MIN_TOKEN_LEN: usize = 16;

/// The effective user id of this process (Linux: `/proc/self/status`).
pub fn effective_uid() -> io::Result<u32> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| io::Error::other("no effective uid in /proc/self/status"))
}

/// Why a file or folder owned by `owner` with `mode` must not be trusted
/// by user `uid`: another owner, or any permission for group or others
/// (as ssh refuses a private key others can read).
pub fn private_problem(owner: u32, mode: u32, uid: u32) -> Option<String> {
    let mode = mode & 0o7777;
    if owner != uid {
        Some(format!(
            "it is owned by uid {owner} (mode {mode:04o}), not by uid {uid} that runs inferd"
        ))
    } else if mode & 0o077 != 0 {
        Some(format!(
            "its mode is {mode:04o}: group or others have access (owner uid {owner})"
        ))
    } else {
        None
    }
}

/// Checks that `path` belongs to `uid` and only to it.
fn check_private(
    what: &'static str,
    path: &Path,
    meta: &fs::Metadata,
    uid: u32,
) -> Result<(), StoreError> {
    let Some(problem) = private_problem(meta.uid(), meta.mode(), uid) else {
        return Ok(());
    };
    let shown = path.display();
    let remade = if what == TOKEN {
        " (`inferd up` makes a new one)"
    } else {
        ""
    };
    let fix = if meta.is_dir() {
        if meta.uid() != uid {
            format!(
                "use a state directory of your own (--state-dir or INFERD_STATE_DIR), or if this one is yours: `chown -R {uid} {shown} && chmod 700 {shown}`"
            )
        } else {
            format!("`chmod 700 {shown}`")
        }
    } else if meta.uid() != uid {
        format!("check who planted it, then remove it{remade}: `rm {shown}`")
    } else {
        format!("`chmod 600 {shown}`, or remove it{remade}")
    };
    Err(StoreError::Unsafe {
        what,
        path: path.to_path_buf(),
        problem,
        fix,
    })
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens the directory, creating it (0700) and its sub-folders when
    /// missing. An existing one must belong to the user running this
    /// process and give group and others no access: whoever can write it
    /// can plant the admin token or a service record, and so run processes
    /// as this user with environment of their choosing.
    pub fn open(root: impl Into<PathBuf>) -> Result<StateDir, StoreError> {
        let root = root.into();
        let uid = effective_uid().map_err(io_err(Path::new("/proc/self/status")))?;
        match fs::metadata(&root) {
            Ok(meta) => check_private("the state directory", &root, &meta, uid)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                match fs::DirBuilder::new().mode(0o700).create(&root) {
                    Ok(()) => {}
                    // Made meanwhile by someone else: checked below.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err(&root)(e)),
                }
                let meta = fs::metadata(&root).map_err(io_err(&root))?;
                check_private("the state directory", &root, &meta, uid)?;
            }
            Err(e) => return Err(io_err(&root)(e)),
        }
        let state = StateDir { root };
        for dir in ["services", "logs", "cache"] {
            let dir = state.root.join(dir);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err(&dir))?;
        }
        Ok(state)
    }

    /// Opens an existing directory to talk to the control plane using it,
    /// with the same checks as [`StateDir::open`]; creates nothing.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<StateDir, StoreError> {
        let root = root.into();
        let uid = effective_uid().map_err(io_err(Path::new("/proc/self/status")))?;
        let meta = fs::metadata(&root).map_err(io_err(&root))?;
        check_private("the state directory", &root, &meta, uid)?;
        Ok(StateDir { root })
    }

    /// The default: `$INFERD_STATE_DIR`, else `$XDG_STATE_HOME/inferd`, else
    /// `~/.local/state/inferd`, else `.inferd`.
    pub fn default_path() -> PathBuf {
        if let Some(dir) = std::env::var_os("INFERD_STATE_DIR").filter(|d| !d.is_empty()) {
            return dir.into();
        }
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            return Path::new(&dir).join("inferd");
        }
        if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            return Path::new(&home).join(".local/state/inferd");
        }
        PathBuf::from(".inferd")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// The log file of one replica.
    pub fn log_path(&self, service: &str, revision: &str, replica: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(service)
            .join(revision)
            .join(format!("{replica}.log"))
    }

    /// The log folder of a service.
    pub fn service_logs(&self, service: &str) -> PathBuf {
        self.root.join("logs").join(service)
    }

    fn service_path(&self, name: &str) -> PathBuf {
        self.root.join("services").join(format!("{name}.json"))
    }

    /// Every stored service, by file name order. A file that cannot be read
    /// is an error: nothing is silently dropped.
    pub fn load_services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let dir = self.root.join("services");
        let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        let uid = effective_uid().map_err(io_err(Path::new("/proc/self/status")))?;
        paths
            .iter()
            .map(|path| {
                // A record runs processes as this user: only this user's count.
                let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
                check_private("the service record", path, &meta, uid)?;
                let text = fs::read_to_string(path).map_err(io_err(path))?;
                let record: ServiceRecord =
                    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                record.spec.validate().map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Ok(record)
            })
            .collect()
    }

    /// Stores a service: written to a temporary file, synced, renamed.
    pub fn save_service(&self, record: &ServiceRecord) -> Result<(), StoreError> {
        let path = self.service_path(record.name());
        let text = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &text, 0o600)
    }

    /// Whether a record of this service is stored.
    pub fn has_service(&self, name: &str) -> bool {
        self.service_path(name).exists()
    }

    pub fn remove_service(&self, name: &str) -> Result<(), StoreError> {
        let path = self.service_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The admin token, created (32 random bytes in hex, 0600) when
    /// missing; an existing one is checked as [`StateDir::read_token`] does.
    pub fn token(&self) -> Result<String, StoreError> {
        match self.read_token() {
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let token = new_token()?;
        write_atomic(&self.root.join("token"), token.as_bytes(), 0o600)?;
        Ok(token)
    }

    /// The token, if one exists (clients never create it): a regular file
    /// owned by this user with no group or other access, at least
    /// [`MIN_TOKEN_LEN`] characters.
    pub fn read_token(&self) -> Result<String, StoreError> {
        let path = self.root.join("token");
        let uid = effective_uid().map_err(io_err(Path::new("/proc/self/status")))?;
        // The name itself must not be a link; the file opened must be the
        // one checked (same device and inode), so what is read was checked.
        let named = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let mut file = File::open(&path).map_err(io_err(&path))?;
        let meta = file.metadata().map_err(io_err(&path))?;
        if !named.is_file()
            || !meta.is_file()
            || (named.dev(), named.ino()) != (meta.dev(), meta.ino())
        {
            return Err(StoreError::Unsafe {
                what: TOKEN,
                path,
                problem: "not a regular file".to_owned(),
                fix: "remove it (`inferd up` makes a new one)".to_owned(),
            });
        }
        check_private(TOKEN, &path, &meta, uid)?;
        let mut text = String::new();
        Read::take(&mut file, 4096)
            .read_to_string(&mut text)
            .map_err(io_err(&path))?;
        let token = text.trim();
        let len = token.chars().count();
        if len < MIN_TOKEN_LEN {
            return Err(StoreError::ShortToken { path, len });
        }
        Ok(token.to_owned())
    }

    pub fn write_admin(&self, info: &AdminInfo) -> Result<(), StoreError> {
        let path = self.root.join("admin.json");
        let text = serde_json::to_vec_pretty(info).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &text, 0o600)
    }

    /// Where the running control plane listens, if one wrote it and its
    /// process is alive.
    pub fn read_admin(&self) -> Option<AdminInfo> {
        let text = fs::read_to_string(self.root.join("admin.json")).ok()?;
        let info: AdminInfo = serde_json::from_str(&text).ok()?;
        process_alive(info.pid).then_some(info)
    }

    pub fn clear_admin(&self) {
        let _ = fs::remove_file(self.root.join("admin.json"));
    }
}

/// A new admin token: 32 bytes from the kernel's CSPRNG, in hex.
fn new_token() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err(Path::new("/dev/urandom")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether a process with this pid exists (Linux: `/proc/PID`).
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let status = Path::new("/proc").join(pid.to_string()).join("status");
    match fs::read_to_string(status) {
        // A zombie has exited.
        Ok(text) => !text
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => false,
    }
}

/// Writes `bytes` to `path` so that a reader sees the old or the new file,
/// never a part: a temporary file beside it, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferd_api::{InferenceService, ModelFormat, ModelSpec, PredictorSpec};
    use std::os::unix::fs::PermissionsExt;

    /// `nobody`: the other user of the tests below (they run as root).
    const NOBODY: u32 = 65534;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("meta").permissions().mode() & 0o7777
    }

    /// Whether this process may give files away (it runs as root).
    fn can_chown() -> bool {
        effective_uid().expect("uid") == 0
    }

    #[test]
    fn private_means_this_owner_and_no_group_or_other_bits() {
        assert_eq!(private_problem(1000, 0o40700, 1000), None);
        assert_eq!(private_problem(1000, 0o100600, 1000), None);
        assert_eq!(private_problem(1000, 0o100400, 1000), None);
        let other = private_problem(NOBODY, 0o100600, 0).expect("other owner");
        assert!(
            other.contains("uid 65534") && other.contains("0600"),
            "{other}"
        );
        for mode in [0o644, 0o640, 0o604, 0o610, 0o601, 0o700 | 0o070, 0o755] {
            let problem = private_problem(0, mode, 0).expect("group/other bits");
            assert!(problem.contains(&format!("{mode:04o}")), "{problem}");
        }
    }

    #[test]
    fn a_new_state_dir_is_0700_and_its_token_0600_and_long() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("a/b/state");
        let state = StateDir::open(&root).expect("open");
        assert_eq!(mode_of(&root), 0o700);
        for sub in ["services", "logs", "cache"] {
            assert_eq!(mode_of(&root.join(sub)), 0o700, "{sub}");
        }
        let token = state.token().expect("token");
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
        assert_eq!(mode_of(&root.join("token")), 0o600);
        assert_ne!(new_token().expect("another"), token, "random");
        // Reopened as it is: accepted, the token kept.
        let again = StateDir::open(&root).expect("reopen");
        assert_eq!(again.token().expect("token"), token);
        assert_eq!(again.read_token().expect("read"), token);
    }

    #[test]
    fn a_state_dir_others_can_reach_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("state");
        StateDir::open(&root).expect("open");
        for mode in [0o755, 0o750, 0o701] {
            chmod(&root, mode);
            let err = StateDir::open(&root).expect_err("group/other access");
            let text = err.to_string();
            assert!(text.contains(&root.display().to_string()), "{text}");
            assert!(text.contains(&format!("{mode:04o}")), "{text}");
            assert!(text.contains("chmod 700"), "{text}");
            let err = StateDir::open_existing(&root).expect_err("clients too");
            assert!(matches!(err, StoreError::Unsafe { .. }), "{err}");
        }
        // Left as it was found: never silently changed.
        assert_eq!(mode_of(&root), 0o701);
    }

    #[test]
    fn a_state_dir_of_another_user_is_refused() {
        if !can_chown() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("state");
        StateDir::open(&root).expect("open");
        std::os::unix::fs::chown(&root, Some(NOBODY), Some(NOBODY)).expect("chown");
        let err = StateDir::open(&root).expect_err("another owner");
        let text = err.to_string();
        assert!(text.contains(&root.display().to_string()), "{text}");
        assert!(text.contains("owned by uid 65534"), "{text}");
        assert!(text.contains("mode 0700"), "{text}");
        assert!(text.contains("--state-dir"), "{text}");
        assert!(StateDir::open_existing(&root).is_err());
    }

    #[test]
    fn a_planted_or_exposed_token_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("state");
        let state = StateDir::open(&root).expect("open");
        let token = root.join("token");
        fs::write(&token, "p".repeat(64)).expect("write");
        chmod(&token, 0o644);
        let err = state.token().expect_err("0644");
        let text = err.to_string();
        assert!(text.contains(&token.display().to_string()), "{text}");
        assert!(
            text.contains("0644") && text.contains("chmod 600"),
            "{text}"
        );
        assert!(state.read_token().is_err(), "clients too");
        if can_chown() {
            std::os::unix::fs::chown(&token, Some(NOBODY), Some(NOBODY)).expect("chown");
            chmod(&token, 0o600);
            let text = state.token().expect_err("nobody's").to_string();
            assert!(text.contains("owned by uid 65534"), "{text}");
            assert!(text.contains("rm "), "{text}");
            assert!(state.read_token().is_err());
        }
        // A link to a private file is not the file.
        fs::remove_file(&token).expect("rm");
        let target = dir.path().join("elsewhere");
        fs::write(&target, "q".repeat(64)).expect("write");
        chmod(&target, 0o600);
        std::os::unix::fs::symlink(&target, &token).expect("symlink");
        let text = state.token().expect_err("symlink").to_string();
        assert!(text.contains("not a regular file"), "{text}");
    }

    #[test]
    fn a_short_token_is_never_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path().join("s")).expect("open");
        let path = state.root().join("token");
        for short in ["x", "", "0123456789abcde"] {
            write_atomic(&path, short.as_bytes(), 0o600).expect("write");
            let err = state.token().expect_err("short");
            assert!(matches!(err, StoreError::ShortToken { .. }), "{err}");
            assert!(err.to_string().contains("at least 16"), "{err}");
            assert!(state.read_token().is_err(), "clients too");
        }
        write_atomic(&path, b"0123456789abcdef\n", 0o600).expect("write");
        assert_eq!(state.token().expect("16"), "0123456789abcdef");
    }

    #[test]
    fn a_service_record_others_could_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path().join("s")).expect("open");
        let spec = InferenceService::new(
            "iris",
            PredictorSpec::new(ModelSpec::new(ModelFormat::Onnx, "/m/model.onnx")),
        );
        let (record, _) = ServiceRecord::create(spec, 5);
        state.save_service(&record).expect("save");
        let path = state.root().join("services/iris.json");
        chmod(&path, 0o666);
        let text = state.load_services().expect_err("0666").to_string();
        assert!(
            text.contains("iris.json") && text.contains("0666"),
            "{text}"
        );
        chmod(&path, 0o600);
        if can_chown() {
            std::os::unix::fs::chown(&path, Some(NOBODY), None).expect("chown");
            let text = state.load_services().expect_err("nobody's").to_string();
            assert!(text.contains("uid 65534"), "{text}");
        }
    }

    #[test]
    fn services_round_trip_and_token_is_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path().join("s")).expect("open");
        let spec = InferenceService::new(
            "iris",
            PredictorSpec::new(ModelSpec::new(ModelFormat::Onnx, "/m/model.onnx")),
        );
        let (record, _) = ServiceRecord::create(spec, 5);
        state.save_service(&record).expect("save");
        assert_eq!(state.load_services().expect("load"), vec![record]);
        let token = state.token().expect("token");
        assert_eq!(token.len(), 64);
        assert_eq!(state.token().expect("again"), token);
        let mode = fs::metadata(state.root().join("token"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        state.remove_service("iris").expect("remove");
        assert!(state.load_services().expect("load").is_empty());
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_a_silent_loss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path().join("s")).expect("open");
        write_atomic(&state.root().join("services/x.json"), b"{not json", 0o600).expect("write");
        let err = state.load_services().expect_err("corrupt");
        assert!(err.to_string().contains("x.json"), "{err}");
    }

    #[test]
    fn admin_info_needs_a_live_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path().join("s")).expect("open");
        let mut info = AdminInfo {
            admin_url: "http://127.0.0.1:1".into(),
            router_url: "http://127.0.0.1:2".into(),
            grpc_addr: None,
            pid: std::process::id(),
        };
        state.write_admin(&info).expect("write");
        assert_eq!(state.read_admin(), Some(info.clone()));
        info.pid = u32::MAX - 1;
        state.write_admin(&info).expect("write");
        assert_eq!(state.read_admin(), None);
    }
}
