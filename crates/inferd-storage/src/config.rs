//! Object store clients, configured from the environment.
//!
//! Building a client makes no request: credentials and endpoints are only
//! used by the first request.

use crate::error::{Result, StorageError};
use crate::uri::{Remote, Scheme};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::{ClientOptions, ObjectStore};
use std::collections::BTreeMap;
use std::sync::{Arc, Once};
use std::time::Duration;

/// The process environment overlaid with explicit values.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    pub(crate) overrides: &'a BTreeMap<String, String>,
    pub(crate) inherit: bool,
}

impl Env<'_> {
    /// The value of `key`: an override (an empty one unsets), else the
    /// process environment's when inherited. Empty values count as unset.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let value = match self.overrides.get(key) {
            Some(value) => Some(value.clone()),
            None if self.inherit => std::env::var(key).ok(),
            None => None,
        };
        value.filter(|v| !v.is_empty())
    }

    /// Every set variable whose name starts with `prefix`.
    pub(crate) fn with_prefix(&self, prefix: &str) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        if self.inherit {
            for (key, value) in std::env::vars_os() {
                if let (Some(key), Some(value)) = (key.to_str(), value.to_str())
                    && key.starts_with(prefix)
                {
                    vars.insert(key.to_string(), value.to_string());
                }
            }
        }
        for (key, value) in self.overrides {
            if key.starts_with(prefix) {
                vars.insert(key.clone(), value.clone());
            }
        }
        vars.retain(|_, value| !value.is_empty());
        vars
    }

    fn flag(&self, key: &str) -> Option<bool> {
        self.get(key).map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
    }
}

/// Where S3 requests go, from the AWS SDK's and KServe's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Settings {
    /// `None`: AWS itself.
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) allow_http: bool,
    pub(crate) allow_invalid_certificates: bool,
}

/// Reads, in order of precedence, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`,
/// `AWS_ENDPOINT` and KServe's `S3_ENDPOINT`. An endpoint without a scheme
/// gets `https://`, or `http://` when `S3_USE_HTTPS=0`. Plain HTTP is allowed
/// when the endpoint says `http://`, or with `AWS_ALLOW_HTTP=true` or
/// `S3_USE_HTTPS=0`. Region: `AWS_REGION`, then `AWS_DEFAULT_REGION`.
pub(crate) fn s3_settings(env: &Env<'_>) -> S3Settings {
    let use_https = env.flag("S3_USE_HTTPS");
    let endpoint = [
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT",
        "S3_ENDPOINT",
    ]
    .iter()
    .find_map(|key| env.get(key))
    .map(|endpoint| {
        let endpoint = endpoint.trim().trim_end_matches('/').to_string();
        if endpoint.contains("://") {
            endpoint
        } else if use_https == Some(false) {
            format!("http://{endpoint}")
        } else {
            format!("https://{endpoint}")
        }
    });
    let http_endpoint = endpoint
        .as_deref()
        .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"));
    S3Settings {
        allow_http: http_endpoint
            || env.flag("AWS_ALLOW_HTTP") == Some(true)
            || use_https == Some(false),
        allow_invalid_certificates: env.flag("S3_VERIFY_SSL") == Some(false),
        region: env
            .get("AWS_REGION")
            .or_else(|| env.get("AWS_DEFAULT_REGION")),
        endpoint,
    }
}

/// Variables `s3_settings` resolves itself rather than passing through.
const S3_RESOLVED: [&str; 7] = [
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ALLOW_HTTP",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
];

/// Timeouts for model downloads: no bound on a whole request (a model can
/// take minutes), but a stalled connection fails.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(Duration::from_secs(10))
        .with_read_timeout(Duration::from_secs(60))
}

/// Makes rustls' ring provider the process default, unless one is set.
///
/// reqwest is built without a TLS provider of its own, so that aws-lc (a C
/// build) stays out of the tree; it then uses the process default and
/// panics when there is none. [`crate::Storage`] calls this before it builds
/// a client; a program that builds reqwest or object_store clients itself
/// calls it first.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race with another installer leaves theirs in place.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// A client for `remote`'s bucket, container or host.
pub(crate) fn build_store(
    uri: &str,
    remote: &Remote,
    env: &Env<'_>,
) -> Result<Arc<dyn ObjectStore>> {
    install_crypto_provider();
    let config_error = |source| StorageError::Config {
        uri: uri.to_string(),
        source,
    };
    let store: Arc<dyn ObjectStore> = match remote.scheme {
        Scheme::S3 => {
            let settings = s3_settings(env);
            let mut options = client_options();
            if settings.allow_invalid_certificates {
                tracing::warn!(
                    uri,
                    "S3_VERIFY_SSL=0: not verifying the endpoint's TLS certificate"
                );
                options = options.with_allow_invalid_certificates(true);
            }
            let mut builder = AmazonS3Builder::new().with_client_options(options);
            for (key, value) in env.with_prefix("AWS_") {
                if S3_RESOLVED.contains(&key.as_str()) {
                    continue;
                }
                if let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            if let Some(region) = settings.region {
                builder = builder.with_region(region);
            }
            if let Some(endpoint) = settings.endpoint {
                // Path-style requests: what MinIO, moto and other S3-compatible
                // servers expect when addressed by an endpoint.
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            } else if env.flag("AWS_VIRTUAL_HOSTED_STYLE_REQUEST") == Some(true) {
                builder = builder.with_virtual_hosted_style_request(true);
            }
            let builder = builder
                .with_allow_http(settings.allow_http)
                .with_bucket_name(&remote.bucket);
            Arc::new(builder.build().map_err(config_error)?)
        }
        Scheme::Gcs => {
            let mut builder =
                GoogleCloudStorageBuilder::new().with_client_options(client_options());
            for (key, value) in env.with_prefix("GOOGLE_") {
                if let Ok(key) = key.to_ascii_lowercase().parse::<GoogleConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            let builder = builder.with_bucket_name(&remote.bucket);
            Arc::new(builder.build().map_err(config_error)?)
        }
        Scheme::Azure => {
            let mut builder = MicrosoftAzureBuilder::new().with_client_options(client_options());
            for (key, value) in env.with_prefix("AZURE_") {
                if let Ok(key) = key.to_ascii_lowercase().parse::<AzureConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            let builder = builder.with_container_name(&remote.bucket);
            Arc::new(builder.build().map_err(config_error)?)
        }
        Scheme::Http => {
            let allow_http = remote.bucket.starts_with("http://");
            let builder = HttpBuilder::new()
                .with_client_options(client_options().with_allow_http(allow_http))
                .with_url(&remote.bucket);
            Arc::new(builder.build().map_err(config_error)?)
        }
    };
    Ok(store)
}

#[cfg(test)]
mod tests;
