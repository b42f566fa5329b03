//! A client of the admin API: what `inferd apply|get|describe|logs|delete`
//! use to talk to the running control plane.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use inferd_api::InferenceService;
use serde::de::DeserializeOwned;

use super::store::{StateDir, StoreError};
use super::{Applied, ServiceView};

/// Why a request to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no control plane runs on {0} (start one with `inferd up -f FILE`, or pass --state-dir)"
    )]
    NotRunning(PathBuf),
    #[error("cannot read the admin token: {0}")]
    Token(String),
    /// The state directory is not this user's alone.
    #[error("{0}")]
    Unsafe(String),
    #[error("cannot reach the control plane at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The control plane answered with an error.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the control plane: {0}")]
    Decode(String),
}

/// The admin API of one running control plane.
pub struct AdminClient {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// The router's URL, as the control plane wrote it.
    pub router_url: String,
}

impl AdminClient {
    /// Finds the control plane running on `state_dir`.
    pub fn from_state_dir(state_dir: &Path) -> Result<AdminClient, ClientError> {
        let not_running = || ClientError::NotRunning(state_dir.to_path_buf());
        let state = match StateDir::open_existing(state_dir) {
            Ok(state) => state,
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_running());
            }
            Err(e) => return Err(ClientError::Unsafe(e.to_string())),
        };
        let info = state.read_admin().ok_or_else(not_running)?;
        let token = state
            .read_token()
            .map_err(|e| ClientError::Token(e.to_string()))?;
        Ok(AdminClient::new(info.admin_url, token, info.router_url))
    }

    pub fn new(admin_url: String, token: String, router_url: String) -> AdminClient {
        AdminClient {
            base: admin_url.trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
            router_url,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut builder = Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let response =
            self.client
                .request(request)
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
        if response.status() == StatusCode::OK {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(ClientError::Api { status, message })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let response = self.call(method, path, body).await?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Applies services; relative local paths must be absolute already.
    pub async fn apply(&self, services: &[InferenceService]) -> Result<Vec<Applied>, ClientError> {
        let body = serde_json::to_vec(services).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.json(Method::POST, "/v1/apply", Some(body)).await
    }

    pub async fn list(&self) -> Result<Vec<ServiceView>, ClientError> {
        self.json(Method::GET, "/v1/services", None).await
    }

    pub async fn get(&self, name: &str) -> Result<ServiceView, ClientError> {
        self.json(Method::GET, &format!("/v1/services/{}", encode(name)), None)
            .await
    }

    pub async fn delete(&self, name: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .json(
                Method::DELETE,
                &format!("/v1/services/{}", encode(name)),
                None,
            )
            .await?;
        Ok(())
    }

    /// Streams a service's logs to `sink` until they end (or, following,
    /// until the control plane stops).
    pub async fn logs(
        &self,
        name: &str,
        revision: Option<u32>,
        tail: Option<usize>,
        follow: bool,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let mut path = format!("/v1/services/{}/logs?follow={follow}", encode(name));
        if let Some(r) = revision {
            path.push_str(&format!("&revision={r}"));
        }
        if let Some(t) = tail {
            path.push_str(&format!("&tail={t}"));
        }
        let mut body = self.call(Method::GET, &path, None).await?.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Decode(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                sink(data);
            }
        }
        Ok(())
    }
}

/// Service names are DNS labels; anything else is percent-encoded.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
