//! Local files and folders: checked and hashed, used in place.

use crate::Fetched;
use crate::cache::{hex, manifest_digest};
use crate::error::{Result, StorageError};
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Checks that `path` is a file or folder, verifies a file against
/// `expected`, and returns it unchanged with its digest.
pub(crate) async fn fetch(uri: &str, path: PathBuf, expected: Option<&str>) -> Result<Fetched> {
    let meta = match tokio::fs::metadata(&path).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StorageError::NotFound {
                uri: uri.to_string(),
                detail: format!("no file or folder at {}", path.display()),
                source: Some(Box::new(e)),
            });
        }
        Err(e) => return Err(StorageError::io(uri, path, e)),
    };
    if meta.is_dir() {
        if expected.is_some() {
            return Err(StorageError::ChecksumOnFolder {
                uri: uri.to_string(),
            });
        }
        let root = path.clone();
        let (sha256, bytes) = blocking(uri, &path, move || folder_digest(&root)).await?;
        return Ok(Fetched {
            path,
            sha256,
            bytes,
            cached: true,
        });
    }
    if !meta.is_file() {
        return Err(StorageError::bad_uri(
            uri,
            format!("{} is neither a file nor a folder", path.display()),
        ));
    }
    let file = path.clone();
    let (sha256, bytes) = blocking(uri, &path, move || hash_file(&file)).await?;
    if let Some(expected) = expected
        && expected != sha256
    {
        return Err(StorageError::ChecksumMismatch {
            uri: uri.to_string(),
            expected: expected.to_string(),
            actual: sha256,
        });
    }
    Ok(Fetched {
        path,
        sha256,
        bytes,
        cached: true,
    })
}

/// Runs file system work off the async reactor.
async fn blocking<T: Send + 'static>(
    uri: &str,
    path: &Path,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| StorageError::io(uri, path, e)),
        Err(join) => Err(StorageError::io(uri, path, io::Error::other(join))),
    }
}

/// The sha256 (hex) and size of a file.
pub(crate) fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

/// The manifest digest and total size of every file under `root`. Symbolic
/// links to files count as files; links to folders are not followed (they
/// could loop).
pub(crate) fn folder_digest(root: &Path) -> io::Result<(String, u64)> {
    let mut files = Vec::new();
    collect(root, "", &mut files)?;
    let mut lines = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for (name, path) in files {
        let (digest, size) = hash_file(&path)?;
        total += size;
        lines.push((name, digest));
    }
    Ok((manifest_digest(&lines), total))
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(&path, &format!("{name}/"), out)?;
        } else if kind.is_file() {
            out.push((name, path));
        } else if kind.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(target) if target.is_file() => out.push((name, path)),
                Ok(_) => {
                    tracing::debug!(path = %path.display(), "not following a link to a folder")
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "skipping a broken link")
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
