//! inferd's model storage: storage URIs into a verified local cache.
//!
//! [`Storage::fetch`] turns a model's `storageUri` into a local path that
//! `inferd serve --model NAME=PATH` accepts: a model file, or a folder with a
//! model file and an optional `config.json`.
//!
//! - Plain paths and `file://` URIs (relative ones resolved against
//!   [`FetchRequest::base`]) are checked and used in place.
//! - `s3://bucket/key`, `gs://bucket/key`, `az://container/key` and
//!   `http(s)://host/path` are downloaded into a content-addressed cache. A
//!   key whose last segment ends in a model extension ([`MODEL_EXTENSIONS`])
//!   is one object; any other key is a prefix whose objects are all
//!   downloaded into one folder, keeping their relative layout. An http(s)
//!   URL cannot be listed, so it is always one file, named by its last
//!   segment, with or without a model extension (`model` for a host's root
//!   URL); one ending in `/` is refused.
//!
//! Credentials and endpoints come from the environment, as the AWS, Google
//! and Azure SDKs and KServe read them; [`Storage::with_env`] overrides it.
//! S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`/`AWS_DEFAULT_REGION`, the endpoint from
//! `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or KServe's `S3_ENDPOINT`
//! (plain HTTP with an `http://` endpoint, `S3_USE_HTTPS=0` or
//! `AWS_ALLOW_HTTP=true`; path-style requests whenever an endpoint is set),
//! and the other `AWS_*` variables (web identity, container credentials).
//! GCS: `GOOGLE_APPLICATION_CREDENTIALS`, `GOOGLE_SERVICE_ACCOUNT`,
//! `GOOGLE_SERVICE_ACCOUNT_KEY`, else the instance's identity. Azure:
//! `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY` and the other
//! `AZURE_*` variables.
//!
//! The cache never shows a partial model: see the `cache` module's layout.
//! A second fetch of a URI asks the store for the object's ETag, size and
//! modification time (one HEAD, or one listing for a prefix) and downloads
//! nothing when they are unchanged; a fetch whose expected sha256 is already
//! in the cache makes no request at all.

mod cache;
mod config;
mod error;
mod local;
mod place;
mod progress;
mod remote;
mod uri;

pub use config::install_crypto_provider;
pub use error::{Result, StorageError};
pub use place::place;
pub use progress::{NoProgress, Progress};
pub use uri::{MODEL_EXTENSIONS, has_model_extension};

use cache::Cache;
use config::Env;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uri::{Shape, Source};

/// The default limit on the bytes of one fetch: 16 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;
/// The limit on the objects under one prefix.
pub const DEFAULT_MAX_OBJECTS: usize = 1000;

/// Bounds on one fetch, against a mistaken URI (a whole bucket) or a hostile
/// listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_bytes: u64,
    pub(crate) max_objects: usize,
}

/// What to fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchRequest<'a> {
    /// A `storageUri`: a plain path, `file://`, `s3://`, `gs://`, `az://`,
    /// `http://` or `https://`.
    pub uri: &'a str,
    /// The folder relative local paths are resolved against.
    pub base: &'a Path,
    /// The expected sha256 of the file (64 hex digits, optionally prefixed
    /// `sha256:`). Only for a single file: a folder or prefix with a sha256
    /// is an error.
    pub sha256: Option<&'a str>,
    /// The most bytes this download may take; it can only lower the
    /// storage's own limit ([`Storage::with_max_bytes`]).
    pub max_bytes: Option<u64>,
}

impl<'a> FetchRequest<'a> {
    /// A request for `uri`, relative paths resolved against `base`, with no
    /// expected digest.
    pub fn new(uri: &'a str, base: &'a Path) -> FetchRequest<'a> {
        FetchRequest {
            uri,
            base,
            sha256: None,
            max_bytes: None,
        }
    }

    /// The same request, with a size limit of its own.
    pub fn with_max_bytes(self, max_bytes: u64) -> FetchRequest<'a> {
        FetchRequest {
            max_bytes: Some(max_bytes),
            ..self
        }
    }

    /// The same request, with an expected sha256.
    pub fn with_sha256(self, sha256: &'a str) -> FetchRequest<'a> {
        FetchRequest {
            sha256: Some(sha256),
            ..self
        }
    }
}

/// A verified local model path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// A file or folder to hand to `inferd serve --model NAME=PATH`.
    pub path: PathBuf,
    /// Content digest in hex: the file's sha256, or for a folder the sha256
    /// of its manifest (one `<sha256>  <relative path>` line per file, as
    /// `sha256sum` prints them, sorted by path in byte order).
    pub sha256: String,
    /// Total size in bytes.
    pub bytes: u64,
    /// True when nothing was downloaded (a local path, or a cache hit).
    pub cached: bool,
}

/// Fetches models into a cache folder.
#[derive(Clone)]
pub struct Storage {
    cache: Cache,
    env: BTreeMap<String, String>,
    inherit_env: bool,
    progress: Arc<dyn Progress>,
    limits: Limits,
    /// Held (shared) by every fetch from a remote store, and (exclusive)
    /// by garbage collection, which so never removes what a fetch is
    /// about to return.
    active: Arc<tokio::sync::RwLock<()>>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets: only the names are shown.
        f.debug_struct("Storage")
            .field("cache_dir", &self.cache.root())
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("inherit_env", &self.inherit_env)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// A storage that caches downloads under `cache_dir` (made when needed).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Storage {
        Storage {
            cache: Cache::new(cache_dir.into()),
            env: BTreeMap::new(),
            inherit_env: true,
            progress: Arc::new(NoProgress),
            limits: Limits {
                max_bytes: DEFAULT_MAX_BYTES,
                max_objects: DEFAULT_MAX_OBJECTS,
            },
            active: Arc::new(tokio::sync::RwLock::new(())),
        }
    }

    /// Environment values that override the process environment for
    /// credentials and endpoints. An empty value unsets a variable.
    pub fn with_env(mut self, env: BTreeMap<String, String>) -> Storage {
        self.env = env;
        self
    }

    /// Whether the process environment is read at all (default: yes). With
    /// `false`, only the values given to [`Storage::with_env`] count.
    pub fn with_process_env(mut self, inherit: bool) -> Storage {
        self.inherit_env = inherit;
        self
    }

    /// Where download progress is reported.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Storage {
        self.progress = progress;
        self
    }

    /// The most bytes one fetch may download (default [`DEFAULT_MAX_BYTES`]).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Storage {
        self.limits.max_bytes = max_bytes;
        self
    }

    /// The most objects one prefix may hold (default [`DEFAULT_MAX_OBJECTS`]).
    pub fn with_max_objects(mut self, max_objects: usize) -> Storage {
        self.limits.max_objects = max_objects;
        self
    }

    /// The cache folder.
    pub fn cache_dir(&self) -> &Path {
        self.cache.root()
    }

    /// The most bytes one fetch may download.
    pub fn max_bytes(&self) -> u64 {
        self.limits.max_bytes
    }

    /// Removes from the cache what `keep` does not name: index entries of
    /// other URIs, the content no kept entry or digest refers to, and
    /// leftovers of interrupted downloads. Returns `None`, removing nothing,
    /// while a fetch from a remote store is under way (call it again once
    /// it is done). Blocking file system work.
    pub fn try_collect_garbage(&self, keep: &Retain) -> Option<std::io::Result<Collected>> {
        let _exclusive = self.active.try_write().ok()?;
        Some(self.cache.collect_garbage(keep))
    }

    /// Resolves `req.uri` to a verified local path, downloading it into the
    /// cache when it is remote and not cached yet.
    #[tracing::instrument(level = "debug", skip(self, req), fields(uri = req.uri))]
    pub async fn fetch(&self, req: &FetchRequest<'_>) -> Result<Fetched> {
        let uri = req.uri;
        let expected =
            match req.sha256 {
                Some(value) => Some(cache::normalize_sha256(value).ok_or_else(|| {
                    StorageError::BadChecksum {
                        uri: uri.to_string(),
                        value: value.to_string(),
                    }
                })?),
                None => None,
            };
        let expected = expected.as_deref();
        let remote = match uri::parse(uri, req.base)? {
            Source::Local(path) => return local::fetch(uri, path, expected).await,
            Source::Remote(remote) => remote,
        };
        if remote.shape == Shape::Prefix && expected.is_some() {
            return Err(StorageError::ChecksumOnFolder {
                uri: uri.to_string(),
            });
        }
        let _active = self.active.read().await;
        self.cache
            .prepare()
            .await
            .map_err(|e| StorageError::io(uri, self.cache.root(), e))?;
        if let (Shape::Object { name }, Some(expected)) = (&remote.shape, expected)
            && let Some((path, bytes)) = self.cache.cached_file(expected, name).await
        {
            tracing::debug!(uri, path = %path.display(), "expected sha256 already in the cache");
            return Ok(Fetched {
                path,
                sha256: expected.to_string(),
                bytes,
                cached: true,
            });
        }
        let env = Env {
            overrides: &self.env,
            inherit: self.inherit_env,
        };
        let download = remote::Download {
            uri,
            store: config::build_store(uri, &remote, &env)?,
            cache: &self.cache,
            progress: &self.progress,
            limits: Limits {
                max_bytes: req
                    .max_bytes
                    .map_or(self.limits.max_bytes, |m| m.min(self.limits.max_bytes)),
                ..self.limits
            },
        };
        match &remote.shape {
            Shape::Object { name } => download.object(&remote, name, expected).await,
            Shape::Prefix => download.prefix(&remote).await,
        }
    }
}

/// What the cache must keep, for [`Storage::try_collect_garbage`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retain {
    /// Storage URIs whose last download stays (as given to [`Storage::fetch`]).
    pub uris: std::collections::BTreeSet<String>,
    /// Expected sha256 digests (as in [`FetchRequest::sha256`]) whose
    /// content stays.
    pub sha256: std::collections::BTreeSet<String>,
}

impl Retain {
    /// Keeps `uri`, and its expected digest if there is one.
    pub fn keep(&mut self, uri: &str, sha256: Option<&str>) {
        self.uris.insert(uri.to_string());
        if let Some(digest) = sha256.and_then(cache::normalize_sha256) {
            self.sha256.insert(digest);
        }
    }
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Content folders (`sha256/<hex>`) removed.
    pub entries: usize,
    /// Their size in bytes.
    pub bytes: u64,
}

#[cfg(test)]
mod tests;
