//! Downloads from object stores into the cache.

use crate::cache::{Cache, IndexEntry, ObjectRecord, hex, manifest_digest, unchanged};
use crate::error::{Result, StorageError};
use crate::progress::{Progress, Reporting};
use crate::uri::{Remote, safe_relative};
use crate::{Fetched, Limits};
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{GetResult, ObjectMeta, ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// What one download needs.
pub(crate) struct Download<'a> {
    pub(crate) uri: &'a str,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) cache: &'a Cache,
    pub(crate) progress: &'a Arc<dyn Progress>,
    pub(crate) limits: Limits,
}

/// The validators of `meta` as recorded in the index.
fn record_of(name: &str, meta: &ObjectMeta) -> ObjectRecord {
    ObjectRecord {
        name: name.to_string(),
        size: meta.size,
        sha256: None,
        etag: meta.e_tag.clone(),
        // Stores that send no Last-Modified report the epoch.
        last_modified: (meta.last_modified.timestamp() != 0)
            .then(|| meta.last_modified.to_rfc3339()),
    }
}

impl Download<'_> {
    fn io(&self, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
        let path = path.into();
        move |e| StorageError::io(self.uri, path, e)
    }

    fn remote(&self) -> impl Fn(object_store::Error) -> StorageError + '_ {
        |e| StorageError::remote(self.uri, e)
    }

    fn too_large(&self, bytes: u64) -> Option<StorageError> {
        (bytes > self.limits.max_bytes).then(|| StorageError::TooLarge {
            uri: self.uri.to_string(),
            detail: format!(
                "{bytes} bytes, over the limit of {} bytes",
                self.limits.max_bytes
            ),
        })
    }

    /// Starts the GET of `key`; its metadata (size from `Content-Length`)
    /// is known before any of the body is read.
    async fn open(&self, key: &ObjectPath) -> Result<GetResult> {
        self.store.get(key).await.map_err(self.remote())
    }

    /// Streams the body of `result` into `file` while hashing it, and checks
    /// that exactly the announced number of bytes arrived, and never more
    /// than `budget` (what the size limit leaves), whatever was announced.
    /// Returns the sha256 in hex.
    async fn copy(
        &self,
        result: GetResult,
        name: &str,
        file: &mut tokio::fs::File,
        file_path: &std::path::Path,
        progress: &Reporting<'_>,
        budget: u64,
    ) -> Result<String> {
        let announced = result.meta.size;
        let mismatch = |actual| StorageError::SizeMismatch {
            uri: self.uri.to_string(),
            name: name.to_string(),
            expected: announced,
            actual,
        };
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.remote())?;
            let len = chunk.len() as u64;
            received += len;
            if received > budget {
                return Err(StorageError::TooLarge {
                    uri: self.uri.to_string(),
                    detail: format!(
                        "over the limit of {} bytes while downloading {name:?}",
                        self.limits.max_bytes
                    ),
                });
            }
            if received > announced {
                return Err(mismatch(received));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(self.io(file_path))?;
            progress.advance(len);
        }
        if received != announced {
            return Err(mismatch(received));
        }
        file.flush().await.map_err(self.io(file_path))?;
        file.sync_all().await.map_err(self.io(file_path))?;
        Ok(hex(&hasher.finalize()))
    }

    /// One object, kept as `sha256/<hex>/<name>`.
    pub(crate) async fn object(
        &self,
        remote: &Remote,
        name: &str,
        expected: Option<&str>,
    ) -> Result<Fetched> {
        let key = &remote.key;
        if let Some((entry, path)) = self.cache.lookup(self.uri).await
            && entry.file_name.as_deref() == Some(name)
            && expected.is_none_or(|e| e == entry.sha256)
        {
            let head = self.store.head(key).await.map_err(self.remote())?;
            if unchanged(&entry.objects, &[record_of(name, &head)]) {
                tracing::debug!(uri = self.uri, path = %path.display(), "unchanged in the store; using the cache");
                return Ok(Fetched {
                    path,
                    sha256: entry.sha256,
                    bytes: entry.bytes,
                    cached: true,
                });
            }
            tracing::info!(uri = self.uri, "changed in the store since it was cached");
        }

        let result = self.open(key).await?;
        let meta = result.meta.clone();
        if let Some(e) = self.too_large(meta.size) {
            return Err(e);
        }
        let temp = self.cache.temp_file().map_err(self.io(self.cache.root()))?;
        let (file, temp_path) = temp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        tracing::info!(uri = self.uri, bytes = meta.size, "downloading");
        let progress = Reporting::start(self.progress, self.uri, Some(meta.size));
        let sha256 = self
            .copy(
                result,
                name,
                &mut file,
                &temp_path,
                &progress,
                self.limits.max_bytes,
            )
            .await?;
        drop(progress);
        drop(file);
        if let Some(expected) = expected
            && expected != sha256
        {
            return Err(StorageError::ChecksumMismatch {
                uri: self.uri.to_string(),
                expected: expected.to_string(),
                actual: sha256,
            });
        }
        let path = self
            .cache
            .commit_file(temp_path, &sha256, name)
            .await
            .map_err(self.io(self.cache.digest_dir(&sha256)))?;
        let mut record = record_of(name, &meta);
        record.sha256 = Some(sha256.clone());
        self.remember(IndexEntry {
            uri: self.uri.to_string(),
            sha256: sha256.clone(),
            bytes: meta.size,
            file_name: Some(name.to_string()),
            objects: vec![record],
        })
        .await;
        tracing::info!(uri = self.uri, path = %path.display(), sha256, "downloaded");
        Ok(Fetched {
            path,
            sha256,
            bytes: meta.size,
            cached: false,
        })
    }

    /// Every object under a prefix, kept as the folder `sha256/<manifest hex>/`.
    pub(crate) async fn prefix(&self, remote: &Remote) -> Result<Fetched> {
        let listed = self.list(&remote.key).await?;
        let total: u64 = listed.iter().map(|(_, meta)| meta.size).sum();
        if let Some(e) = self.too_large(total) {
            return Err(e);
        }
        let now: Vec<ObjectRecord> = listed
            .iter()
            .map(|(name, meta)| record_of(name, meta))
            .collect();
        if let Some((entry, path)) = self.cache.lookup(self.uri).await
            && entry.file_name.is_none()
            && unchanged(&entry.objects, &now)
        {
            tracing::debug!(uri = self.uri, path = %path.display(), "unchanged in the store; using the cache");
            return Ok(Fetched {
                path,
                sha256: entry.sha256,
                bytes: entry.bytes,
                cached: true,
            });
        }

        let dir = self.cache.temp_dir().map_err(self.io(self.cache.root()))?;
        tracing::info!(
            uri = self.uri,
            objects = listed.len(),
            bytes = total,
            "downloading"
        );
        let progress = Reporting::start(self.progress, self.uri, Some(total));
        let mut records = Vec::with_capacity(listed.len());
        let mut lines = Vec::with_capacity(listed.len());
        let mut downloaded = 0u64;
        for (name, meta) in &listed {
            let relative = safe_relative(name).map_err(|reason| StorageError::UnsafeName {
                uri: self.uri.to_string(),
                name: name.clone(),
                reason: reason.to_string(),
            })?;
            let path = dir.path().join(relative);
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(self.io(parent))?;
            }
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(self.io(&path))?;
            let result = self.open(&meta.location).await?;
            if result.meta.size != meta.size {
                // Changed between the listing and now.
                return Err(StorageError::SizeMismatch {
                    uri: self.uri.to_string(),
                    name: name.clone(),
                    expected: meta.size,
                    actual: result.meta.size,
                });
            }
            let budget = self.limits.max_bytes.saturating_sub(downloaded);
            let sha256 = self
                .copy(result, name, &mut file, &path, &progress, budget)
                .await?;
            downloaded += meta.size;
            // The listing's validators, as the next fetch compares with a listing.
            let mut record = record_of(name, meta);
            record.sha256 = Some(sha256.clone());
            records.push(record);
            lines.push((name.clone(), sha256));
        }
        drop(progress);
        let digest = manifest_digest(&lines);
        let path = self
            .cache
            .commit_dir(dir, &digest)
            .await
            .map_err(self.io(self.cache.digest_dir(&digest)))?;
        self.remember(IndexEntry {
            uri: self.uri.to_string(),
            sha256: digest.clone(),
            bytes: total,
            file_name: None,
            objects: records,
        })
        .await;
        tracing::info!(uri = self.uri, path = %path.display(), sha256 = digest, "downloaded");
        Ok(Fetched {
            path,
            sha256: digest,
            bytes: total,
            cached: false,
        })
    }

    /// Lists `prefix` and checks every name: relative, inside the prefix,
    /// not `.`/`..`, not both a file and a folder. Zero-byte "folder marker"
    /// objects (keys ending in `/`, as consoles create) are skipped. Sorted by
    /// name.
    async fn list(&self, prefix: &ObjectPath) -> Result<Vec<(String, ObjectMeta)>> {
        let mut stream = self.store.list(Some(prefix));
        let mut by_name: BTreeMap<String, ObjectMeta> = BTreeMap::new();
        let mut markers = 0usize;
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(self.remote())?;
            if by_name.len() + markers >= self.limits.max_objects {
                return Err(StorageError::TooLarge {
                    uri: self.uri.to_string(),
                    detail: format!(
                        "more than {} objects under the prefix",
                        self.limits.max_objects
                    ),
                });
            }
            let name = relative_name(prefix.as_ref(), meta.location.as_ref()).ok_or_else(|| {
                StorageError::UnsafeName {
                    uri: self.uri.to_string(),
                    name: meta.location.to_string(),
                    reason: "outside the listed prefix".into(),
                }
            })?;
            if name.is_empty() && meta.size == 0 {
                markers += 1;
                continue;
            }
            safe_relative(&name).map_err(|reason| StorageError::UnsafeName {
                uri: self.uri.to_string(),
                name: name.clone(),
                reason: reason.to_string(),
            })?;
            if by_name.insert(name.clone(), meta).is_some() {
                return Err(StorageError::UnsafeName {
                    uri: self.uri.to_string(),
                    name,
                    reason: "listed twice".into(),
                });
            }
        }
        // Names that are also folders of other names.
        let folders: BTreeSet<&str> = by_name
            .keys()
            .flat_map(|name| name.match_indices('/').map(move |(i, _)| &name[..i]))
            .collect();
        let mut listed = Vec::with_capacity(by_name.len());
        for (name, meta) in &by_name {
            if folders.contains(name.as_str()) {
                if meta.size == 0 {
                    continue;
                }
                return Err(StorageError::UnsafeName {
                    uri: self.uri.to_string(),
                    name: name.clone(),
                    reason: "it is both a file and a folder".into(),
                });
            }
            listed.push((name.clone(), meta.clone()));
        }
        if listed.is_empty() {
            return Err(StorageError::NotFound {
                uri: self.uri.to_string(),
                detail: format!("no objects under the prefix {:?}", prefix.as_ref()),
                source: None,
            });
        }
        Ok(listed)
    }

    /// Records the URI's digest; a failure only costs a download next time.
    async fn remember(&self, entry: IndexEntry) {
        if let Err(e) = self.cache.record(&entry).await {
            tracing::warn!(uri = self.uri, error = %e, "could not write the cache index");
        }
    }
}

/// `location` relative to `prefix`, or `None` when it is not under it.
pub(crate) fn relative_name(prefix: &str, location: &str) -> Option<String> {
    if prefix.is_empty() {
        return Some(location.to_string());
    }
    let rest = location.strip_prefix(prefix)?;
    if rest.is_empty() {
        return Some(String::new());
    }
    rest.strip_prefix('/').map(str::to_string)
}

#[cfg(test)]
mod tests;
