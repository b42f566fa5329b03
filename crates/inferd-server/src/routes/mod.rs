//! HTTP routes, one module per protocol, over shared request plumbing.

mod health;
mod repository;
mod v1;
mod v2;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;
pub(crate) use crate::inference::{resolve, run_model};
use crate::metrics::Protocol;
use crate::registry::ServedModel;
use crate::stats::RequestTimes;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(health::root))
        .route("/metrics", get(health::metrics))
        .route("/v2", get(health::server_metadata))
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2/models", get(health::model_list))
        .route("/v2/models/{model}", get(v2::metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(v2::metadata_version),
        )
        .route("/v2/models/{model}/ready", get(v2::ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(v2::ready_version),
        )
        .route("/v2/models/stats", get(v2::all_stats))
        .route("/v2/models/{model}/stats", get(v2::stats))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(v2::stats_version),
        )
        .route("/v2/models/{model}/config", get(v2::config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(v2::config_version),
        )
        .route("/v2/models/{model}/infer", post(v2::infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(v2::infer_version),
        )
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{model}/load", post(repository::load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository::unload),
        )
        .route("/v1/models", get(health::model_list_v1))
        // `{model}:predict` is one path segment; the handler splits the verb off.
        .route("/v1/models/{model}", get(v1::status).post(v1::predict))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ))
        .with_state(state)
}

/// Path parameters whose rejection is a JSON 400 like every other error.
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Params(t)),
            Err(e) => Err(ApiError::BadRequest(format!("bad path: {}", e.body_text()))),
        }
    }
}

/// Reads a request body, refusing (413) anything over the limit before
/// reading any of it when Content-Length says so, and as soon as more
/// arrived otherwise; a client that sends no part of it for `timeout` gets
/// a 408 (and its connection closes: the rest is left unread).
pub(crate) async fn read_body(
    request: Request,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = request.into_body();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut read = 0usize;
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(ApiError::BodyTimeout(timeout)),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => {
                return Err(ApiError::BadRequest(format!(
                    "could not read the request body: {e}"
                )));
            }
        };
        // Trailers carry nothing a handler reads.
        if let Ok(data) = frame.into_data() {
            read = read.saturating_add(data.len());
            if read > limit {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            if !data.is_empty() {
                chunks.push(data);
            }
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut joined = Vec::with_capacity(read);
            for chunk in &chunks {
                joined.extend_from_slice(chunk);
            }
            Bytes::from(joined)
        }
    })
}

/// The header that sets a request's deadline, in milliseconds from arrival
/// (V2 requests can also set Triton's `timeout` parameter, in microseconds).
pub(crate) const TIMEOUT_HEADER: &str = "x-inferd-timeout-ms";

/// The deadline a request's headers set, if any.
pub(crate) fn header_deadline(
    headers: &axum::http::HeaderMap,
    received: Instant,
) -> Result<Option<Instant>, ApiError> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let ms = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{TIMEOUT_HEADER}: must be a whole number of milliseconds"
            ))
        })?;
    Ok(received.checked_add(std::time::Duration::from_millis(ms)))
}

/// Wraps an inference handler: resolves the model, counts the request by
/// model, protocol and status, and times it, however it ends.
pub(crate) async fn instrumented<F, Fut>(
    state: &Arc<AppState>,
    protocol: Protocol,
    model: &str,
    version: Option<&str>,
    handle: F,
) -> Response
where
    F: FnOnce(Arc<ServedModel>) -> Fut,
    Fut: std::future::Future<Output = Result<(Response, RequestTimes), ApiError>>,
{
    let started = Instant::now();
    let _in_flight = state.metrics.in_flight();
    let served = match resolve(state, model, version) {
        Ok(served) => served,
        Err(e) => {
            // Unknown names are not labels: a client must not grow the label set.
            let label = if matches!(e, ApiError::UnknownModel(_)) {
                ""
            } else {
                model
            };
            let seconds = started.elapsed().as_secs_f64();
            state
                .metrics
                .record_failure(label, protocol, e.status().as_u16(), seconds);
            return e.into_response();
        }
    };
    let result = handle(served.clone()).await;
    let elapsed = started.elapsed();
    let seconds = elapsed.as_secs_f64();
    match result {
        Ok((mut response, times)) => {
            served.record_success(protocol, elapsed, times);
            let headers = response.headers_mut();
            for (name, value) in times.headers(elapsed) {
                if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
            response
        }
        Err(e) => {
            served.stats.record_failure(elapsed);
            state
                .metrics
                .record_failure(&served.name, protocol, e.status().as_u16(), seconds);
            e.into_response()
        }
    }
}
