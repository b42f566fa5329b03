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
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
    /// Opens (creating, owner-only) the directory and its sub-folders.
    pub fn open(root: impl Into<PathBuf>) -> Result<StateDir, StoreError> {
        let root = root.into();
        for dir in [
            root.clone(),
            root.join("services"),
            root.join("logs"),
            root.join("cache"),
        ] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(io_err(&root))?;
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
        paths
            .iter()
            .map(|path| {
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

    pub fn remove_service(&self, name: &str) -> Result<(), StoreError> {
        let path = self.service_path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The admin token, created (random, owner-only) when missing.
    pub fn token(&self) -> Result<String, StoreError> {
        let path = self.root.join("token");
        match fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        let mut bytes = [0u8; 32];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(io_err(Path::new("/dev/urandom")))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_atomic(&path, token.as_bytes(), 0o600)?;
        Ok(token)
    }

    /// The token, if one exists (clients never create it).
    pub fn read_token(&self) -> Result<String, StoreError> {
        let path = self.root.join("token");
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(text.trim().to_owned())
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
        let state = StateDir::open(dir.path()).expect("open");
        fs::write(dir.path().join("services/x.json"), b"{not json").expect("write");
        let err = state.load_services().expect_err("corrupt");
        assert!(err.to_string().contains("x.json"), "{err}");
    }

    #[test]
    fn admin_info_needs_a_live_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path()).expect("open");
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
