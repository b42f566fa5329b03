//! Storage URIs: what a `storageUri` names, before anything is read.

use crate::error::{Result, StorageError};
use object_store::path::Path as ObjectPath;
use std::path::{Path, PathBuf};
use url::Url;

/// File extensions that mark the last segment of a remote URI as one model
/// file rather than a prefix to list.
pub const MODEL_EXTENSIONS: [&str; 6] = ["onnx", "json", "txt", "ubj", "bst", "model"];

/// The file name given to an http(s) download of a host's root URL.
pub(crate) const DEFAULT_HTTP_NAME: &str = "model";

/// What a storage URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A local file or folder, used in place.
    Local(PathBuf),
    /// Something in an object store.
    Remote(Remote),
}

/// The object stores this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    S3,
    Gcs,
    Azure,
    Http,
}

/// An object or prefix in an object store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) scheme: Scheme,
    /// The bucket (s3, gs), container (az) or origin `scheme://host[:port]` (http).
    pub(crate) bucket: String,
    /// The key of the object, or the prefix; for http the URL path.
    pub(crate) key: ObjectPath,
    pub(crate) shape: Shape,
}

/// One object, or every object under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One object, stored locally under `name`.
    Object { name: String },
    /// A prefix, listed and downloaded into a folder.
    Prefix,
}

/// Whether `name` ends in one of [`MODEL_EXTENSIONS`] (case-insensitive).
pub fn has_model_extension(name: &str) -> bool {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => MODEL_EXTENSIONS
            .iter()
            .any(|known| ext.eq_ignore_ascii_case(known)),
        _ => false,
    }
}

/// Parses `uri`; relative local paths (plain or `file://`) are joined to `base`.
pub(crate) fn parse(uri: &str, base: &Path) -> Result<Source> {
    if uri.is_empty() {
        return Err(StorageError::bad_uri(uri, "the URI is empty"));
    }
    let Some((scheme, rest)) = split_scheme(uri) else {
        return Ok(Source::Local(resolve(base, uri)));
    };
    let lower = scheme.to_ascii_lowercase();
    let remote_scheme = match lower.as_str() {
        "file" => return parse_file(uri, rest, base).map(Source::Local),
        "s3" => Scheme::S3,
        "gs" => Scheme::Gcs,
        "az" => Scheme::Azure,
        "http" | "https" => Scheme::Http,
        _ => {
            return Err(StorageError::UnsupportedScheme {
                uri: uri.to_string(),
                scheme: lower,
            });
        }
    };
    parse_remote(uri, remote_scheme).map(Source::Remote)
}

/// `scheme://rest` when `uri` starts with a URI scheme, otherwise `None` (a path).
fn split_scheme(uri: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = uri.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// `file:///abs/path`, `file://localhost/abs/path` or `file://relative/path`.
/// The path is taken as written (no percent-decoding), as KServe does.
fn parse_file(uri: &str, rest: &str, base: &Path) -> Result<PathBuf> {
    let rest = rest
        .strip_prefix("localhost")
        .filter(|absolute| absolute.starts_with('/'))
        .unwrap_or(rest);
    if rest.is_empty() {
        return Err(StorageError::bad_uri(uri, "file:// names no path"));
    }
    Ok(resolve(base, rest))
}

fn parse_remote(uri: &str, scheme: Scheme) -> Result<Remote> {
    let url = Url::parse(uri).map_err(|e| StorageError::bad_uri(uri, e.to_string()))?;
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        let what = match scheme {
            Scheme::S3 | Scheme::Gcs => "bucket",
            Scheme::Azure => "container",
            Scheme::Http => "host",
        };
        return Err(StorageError::bad_uri(uri, format!("no {what} in the URI")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(StorageError::bad_uri(
            uri,
            "credentials in the URI are not accepted; pass them in the environment",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(StorageError::bad_uri(
            uri,
            "query strings and fragments are not supported",
        ));
    }
    let bucket = match scheme {
        Scheme::Http => url[..url::Position::BeforePath].to_string(),
        _ => {
            if url.port().is_some() {
                return Err(StorageError::bad_uri(
                    uri,
                    "a bucket name takes no port; set the endpoint in the environment",
                ));
            }
            host.to_string()
        }
    };
    if scheme == Scheme::Http && url.path().len() > 1 && url.path().ends_with('/') {
        // The store would ask for the URL without its final `/`, another
        // resource; and a web server's folder cannot be listed.
        return Err(StorageError::bad_uri(
            uri,
            "an http(s) URL names one file and cannot be listed as a folder: drop the final `/` and name the model file",
        ));
    }
    let key = ObjectPath::from_url_path(url.path())
        .map_err(|e| StorageError::bad_uri(uri, format!("bad object path: {e}")))?;
    let last = if url.path().ends_with('/') {
        None
    } else {
        key.filename()
    };
    let shape = match (scheme, last) {
        (_, Some(name)) if has_model_extension(name) => Shape::Object {
            name: name.to_string(),
        },
        (Scheme::Http, Some(name)) => Shape::Object {
            name: name.to_string(),
        },
        (Scheme::Http, None) => Shape::Object {
            name: DEFAULT_HTTP_NAME.to_string(),
        },
        (_, _) => Shape::Prefix,
    };
    if let Shape::Object { name } = &shape {
        safe_relative(name).map_err(|reason| {
            StorageError::bad_uri(uri, format!("unusable file name {name:?}: {reason}"))
        })?;
    }
    Ok(Remote {
        scheme,
        bucket,
        key,
        shape,
    })
}

/// Checks that an object's name relative to its prefix stays inside the target
/// folder, and turns it into a relative path. A listing is outside data: a
/// hostile or broken store could return `../../etc/x` or `/etc/x`.
pub(crate) fn safe_relative(name: &str) -> std::result::Result<PathBuf, &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    if name.contains('\0') {
        return Err("NUL byte in the name");
    }
    if name.contains('\\') {
        return Err("backslash in the name");
    }
    let mut path = PathBuf::new();
    for segment in name.split('/') {
        match segment {
            "" => return Err("empty path segment"),
            "." | ".." => return Err("`.` or `..` path segment"),
            segment => path.push(segment),
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests;
