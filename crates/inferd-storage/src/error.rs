//! The one error type of this crate.

use std::path::PathBuf;

/// Why a storage URI could not be turned into a verified local path.
///
/// Every message starts with the URI it is about. Causes from the store or
/// the file system are kept as the error's `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The URI cannot be parsed or names nothing usable.
    #[error("{uri}: bad storage URI: {reason}")]
    BadUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The URI's scheme is not one this crate reads.
    #[error(
        "{uri}: unsupported scheme `{scheme}://` (supported: s3://, gs://, az://, http://, https://, file:// and plain paths)"
    )]
    UnsupportedScheme {
        /// The URI as given.
        uri: String,
        /// The scheme, lower-cased.
        scheme: String,
    },

    /// The expected sha256 is not 64 hex digits.
    #[error("{uri}: bad expected sha256 {value:?}: it must be 64 hex digits")]
    BadChecksum {
        /// The URI it was given for.
        uri: String,
        /// The value as given.
        value: String,
    },

    /// A sha256 was given for something that is a folder or a prefix.
    #[error(
        "{uri}: a sha256 applies to a single file, but this URI names a folder (or an object prefix); drop the sha256 or point the URI at the model file"
    )]
    ChecksumOnFolder {
        /// The URI as given.
        uri: String,
    },

    /// The file, object or prefix does not exist (HTTP 404, no such key or file).
    #[error("{uri}: not found: {detail}")]
    NotFound {
        /// The URI as given.
        uri: String,
        /// What was looked for.
        detail: String,
        /// The store's own error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The content's sha256 is not the expected one; nothing was kept.
    #[error("{uri}: checksum mismatch: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        /// The URI as given.
        uri: String,
        /// The sha256 that was asked for.
        expected: String,
        /// The sha256 of what was read.
        actual: String,
    },

    /// Fewer or more bytes arrived than the store announced; nothing was kept.
    #[error(
        "{uri}: incomplete download of {name:?}: the store announced {expected} bytes, {actual} arrived"
    )]
    SizeMismatch {
        /// The URI as given.
        uri: String,
        /// The object (its name relative to the URI).
        name: String,
        /// The size from the listing or `Content-Length`.
        expected: u64,
        /// The bytes actually received.
        actual: u64,
    },

    /// Over the limit on objects or bytes of one fetch.
    #[error("{uri}: too large: {detail}")]
    TooLarge {
        /// The URI as given.
        uri: String,
        /// Which limit and by how much.
        detail: String,
    },

    /// A listing holds a name that would land outside the target folder, or
    /// that cannot be laid out as a file.
    #[error("{uri}: refusing object {name:?} from the listing: {reason}")]
    UnsafeName {
        /// The URI as given.
        uri: String,
        /// The object's name relative to the prefix.
        name: String,
        /// Why it is refused.
        reason: String,
    },

    /// The store client could not be configured (missing account, bad
    /// credentials file, bad endpoint); no request was made.
    #[error("{uri}: cannot configure the store client (check credentials and endpoint settings)")]
    Config {
        /// The URI as given.
        uri: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// The store refused the credentials (HTTP 401/403).
    #[error("{uri}: access denied: check the credentials")]
    Credentials {
        /// The URI as given.
        uri: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// A request to the store failed (network, server error, interrupted body).
    #[error("{uri}: network or storage error")]
    Remote {
        /// The URI as given.
        uri: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// Reading or writing a local file failed.
    #[error("{uri}: I/O error on {}", path.display())]
    Io {
        /// The URI as given.
        uri: String,
        /// The local path involved.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// A stable snake_case name of the kind of error, for metric labels and
    /// for callers that map errors to exit codes or statuses.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageError::BadUri { .. } => "bad_uri",
            StorageError::UnsupportedScheme { .. } => "unsupported_scheme",
            StorageError::BadChecksum { .. } => "bad_checksum",
            StorageError::ChecksumOnFolder { .. } => "checksum_on_folder",
            StorageError::NotFound { .. } => "not_found",
            StorageError::ChecksumMismatch { .. } => "checksum_mismatch",
            StorageError::SizeMismatch { .. } => "size_mismatch",
            StorageError::TooLarge { .. } => "too_large",
            StorageError::UnsafeName { .. } => "unsafe_name",
            StorageError::Config { .. } => "config",
            StorageError::Credentials { .. } => "credentials",
            StorageError::Remote { .. } => "remote",
            StorageError::Io { .. } => "io",
        }
    }

    pub(crate) fn bad_uri(uri: &str, reason: impl Into<String>) -> StorageError {
        StorageError::BadUri {
            uri: uri.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(uri: &str, path: impl Into<PathBuf>, source: std::io::Error) -> StorageError {
        StorageError::Io {
            uri: uri.to_string(),
            path: path.into(),
            source,
        }
    }

    /// Sorts an error of the store into not found, credentials or other.
    pub(crate) fn remote(uri: &str, source: object_store::Error) -> StorageError {
        let uri = uri.to_string();
        match source {
            object_store::Error::NotFound { ref path, .. } => StorageError::NotFound {
                detail: format!("no object {path:?} in the store"),
                uri,
                source: Some(Box::new(source)),
            },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                StorageError::Credentials { uri, source }
            }
            source => StorageError::Remote { uri, source },
        }
    }
}

/// This crate's result type.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
