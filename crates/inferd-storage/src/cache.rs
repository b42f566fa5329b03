//! The content-addressed cache on local disk.
//!
//! ```text
//! <cache_dir>/
//!   tmp/                      downloads in progress (same file system, so renames are atomic)
//!   sha256/<hex>/<file name>  a single file, <hex> its sha256
//!   sha256/<hex>/             a folder, <hex> the sha256 of its manifest
//!   uris/<sha256 of uri>.json which digest a URI gave last time, with the store's validators
//! ```
//!
//! Nothing appears under `sha256/` before it is complete and verified: files
//! are written and hashed under `tmp/`, then renamed in; folders are assembled
//! under `tmp/` and renamed in whole. Temporary names are unique, so fetches
//! of one URI at the same time only race on renames, which are atomic.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};
use tempfile::{NamedTempFile, TempDir};

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The sha256 of `data`, in hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Whether `value` is a sha256 in lower-case hex.
pub(crate) fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An expected digest as given by a user: 64 hex digits, any case, with an
/// optional `sha256:` prefix. Returns it in lower case.
pub(crate) fn normalize_sha256(value: &str) -> Option<String> {
    let digits = value.trim();
    let digits = digits.strip_prefix("sha256:").unwrap_or(digits);
    let lower = digits.to_ascii_lowercase();
    is_sha256_hex(&lower).then_some(lower)
}

/// The digest of a folder: the sha256 of its manifest, one line
/// `<sha256 hex>  <relative path>\n` per file (the format of `sha256sum`),
/// sorted by path in byte order, paths separated by `/`.
pub(crate) fn manifest_digest(files: &[(String, String)]) -> String {
    let mut lines: Vec<&(String, String)> = files.iter().collect();
    lines.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut hasher = Sha256::new();
    for (name, digest) in lines {
        hasher.update(digest.as_bytes());
        hasher.update(b"  ");
        hasher.update(name.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

/// What the store said about one object when it was downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectRecord {
    /// Relative to the URI (the file name for a single object).
    pub(crate) name: String,
    pub(crate) size: u64,
    /// Empty in what the store reports now; known in what was downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) etag: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_modified: Option<String>,
}

/// One `uris/<sha256 of uri>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    pub(crate) uri: String,
    /// The file's sha256, or the folder's manifest digest.
    pub(crate) sha256: String,
    pub(crate) bytes: u64,
    /// The file name for a single object; none for a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file_name: Option<String>,
    pub(crate) objects: Vec<ObjectRecord>,
}

/// Whether what a store reports now (`now`) is what was downloaded
/// (`then`): the same names and sizes, and for each object the same ETag, or
/// when there is no ETag on both sides, the same modification time. Without
/// either validator an object counts as changed.
pub(crate) fn unchanged(then: &[ObjectRecord], now: &[ObjectRecord]) -> bool {
    if then.len() != now.len() {
        return false;
    }
    let mut then: Vec<&ObjectRecord> = then.iter().collect();
    let mut now: Vec<&ObjectRecord> = now.iter().collect();
    then.sort_by(|a, b| a.name.cmp(&b.name));
    now.sort_by(|a, b| a.name.cmp(&b.name));
    then.iter().zip(&now).all(|(a, b)| {
        a.name == b.name
            && a.size == b.size
            && match (&a.etag, &b.etag, &a.last_modified, &b.last_modified) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => false,
            }
    })
}

/// Temporary files and folders are private (0600, 0700); a model server
/// that runs as another user than the one that downloaded must read them.
#[cfg(unix)]
async fn readable(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await
}

#[cfg(not(unix))]
async fn readable(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// The entries of a folder; none when it does not exist.
fn entries(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(read) => read.map(|e| e.map(|e| e.path())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Removes a file, link or folder (with its content); gone already is fine.
fn remove(path: &Path) -> io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The bytes of the files under `path` (links not followed).
fn size_of(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => entries(path)
            .unwrap_or_default()
            .iter()
            .map(|p| size_of(p))
            .sum(),
        Ok(meta) => meta.len(),
        Err(_) => 0,
    }
}

/// The cache directory.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    root: PathBuf,
}

impl Cache {
    pub(crate) fn new(root: PathBuf) -> Cache {
        Cache { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn uris(&self) -> PathBuf {
        self.root.join("uris")
    }

    /// `sha256/<hex>`; `hex` must come from [`normalize_sha256`] or a hasher.
    pub(crate) fn digest_dir(&self, hex: &str) -> PathBuf {
        self.root.join("sha256").join(hex)
    }

    fn index_path(&self, uri: &str) -> PathBuf {
        self.uris()
            .join(format!("{}.json", sha256_hex(uri.as_bytes())))
    }

    /// Makes the cache's folders.
    pub(crate) async fn prepare(&self) -> io::Result<()> {
        tokio::fs::create_dir_all(self.tmp()).await?;
        tokio::fs::create_dir_all(self.root.join("sha256")).await?;
        tokio::fs::create_dir_all(self.uris()).await
    }

    /// A new, uniquely named file under `tmp/`, removed when dropped.
    pub(crate) fn temp_file(&self) -> io::Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".part-")
            .tempfile_in(self.tmp())
    }

    /// A new, uniquely named folder under `tmp/`, removed when dropped.
    pub(crate) fn temp_dir(&self) -> io::Result<TempDir> {
        tempfile::Builder::new()
            .prefix(".folder-")
            .tempdir_in(self.tmp())
    }

    /// Where a cached single file is, if it is there.
    pub(crate) async fn cached_file(&self, hex: &str, name: &str) -> Option<(PathBuf, u64)> {
        let path = self.digest_dir(hex).join(name);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Some((path, meta.len())),
            _ => None,
        }
    }

    /// Moves a complete, verified file to `sha256/<hex>/<name>`. A file
    /// already there has the same content and is replaced atomically.
    pub(crate) async fn commit_file(
        &self,
        temp: tempfile::TempPath,
        hex: &str,
        name: &str,
    ) -> io::Result<PathBuf> {
        let dir = self.digest_dir(hex);
        tokio::fs::create_dir_all(&dir).await?;
        let dest = dir.join(name);
        readable(&temp, 0o644).await?;
        temp.persist(&dest).map_err(|e| e.error)?;
        Ok(dest)
    }

    /// Moves a complete, verified folder to `sha256/<hex>/`. When a folder is
    /// already there (the same content, from another fetch), it is kept and
    /// `temp` is removed.
    pub(crate) async fn commit_dir(&self, temp: TempDir, hex: &str) -> io::Result<PathBuf> {
        let dest = self.digest_dir(hex);
        readable(temp.path(), 0o755).await?;
        match tokio::fs::rename(temp.path(), &dest).await {
            Ok(()) => {
                // Already moved away: nothing left to clean up.
                let _ = temp.keep();
                Ok(dest)
            }
            Err(_) if tokio::fs::metadata(&dest).await.is_ok_and(|m| m.is_dir()) => Ok(dest),
            Err(e) => Err(e),
        }
    }

    /// The index entry of `uri`, when there is a readable one whose content
    /// is still in the cache. Returns it with the cached path.
    pub(crate) async fn lookup(&self, uri: &str) -> Option<(IndexEntry, PathBuf)> {
        let path = self.index_path(uri);
        let text = tokio::fs::read(&path).await.ok()?;
        let entry: IndexEntry = match serde_json::from_slice(&text) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(index = %path.display(), error = %e, "unreadable cache index entry; ignoring it");
                return None;
            }
        };
        if entry.uri != uri || !is_sha256_hex(&entry.sha256) {
            return None;
        }
        let cached = match &entry.file_name {
            Some(name) => {
                if name.contains('/') || crate::uri::safe_relative(name).is_err() {
                    return None;
                }
                let (path, _) = self.cached_file(&entry.sha256, name).await?;
                path
            }
            None => {
                let dir = self.digest_dir(&entry.sha256);
                if !tokio::fs::metadata(&dir).await.ok()?.is_dir() {
                    return None;
                }
                dir
            }
        };
        Some((entry, cached))
    }

    /// Removes the index entries of URIs `keep` does not name, the content
    /// that no kept entry or digest refers to, and everything under `tmp/`.
    /// The caller makes sure no fetch runs meanwhile.
    pub(crate) fn collect_garbage(&self, keep: &crate::Retain) -> io::Result<crate::Collected> {
        let mut digests = keep.sha256.clone();
        for path in entries(&self.uris())? {
            let entry = std::fs::read(&path)
                .ok()
                .and_then(|text| serde_json::from_slice::<IndexEntry>(&text).ok());
            match entry {
                Some(entry) if keep.uris.contains(&entry.uri) && is_sha256_hex(&entry.sha256) => {
                    digests.insert(entry.sha256);
                }
                _ => remove(&path)?,
            }
        }
        let mut collected = crate::Collected::default();
        for path in entries(&self.root.join("sha256"))? {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if digests.contains(name) {
                continue;
            }
            collected.bytes += size_of(&path);
            collected.entries += 1;
            remove(&path)?;
        }
        for path in entries(&self.tmp())? {
            remove(&path)?;
        }
        Ok(collected)
    }

    /// Writes the index entry of `entry.uri`, atomically.
    pub(crate) async fn record(&self, entry: &IndexEntry) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
        let temp = self.temp_file()?;
        let (file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        tokio::io::AsyncWriteExt::write_all(&mut file, &json).await?;
        file.sync_all().await?;
        drop(file);
        temp_path
            .persist(self.index_path(&entry.uri))
            .map_err(|e| e.error)
    }
}

#[cfg(test)]
mod tests;
