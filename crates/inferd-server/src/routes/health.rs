//! Liveness, readiness, server metadata, model lists and metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::AppState;
use crate::error::json_response;

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body)
        .unwrap_or_else(|e| inferd_protocol::error_body(&format!("cannot encode response: {e}")));
    json_response(status, bytes)
}

pub(super) async fn root() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "alive"}))
}

pub(super) async fn live() -> Response {
    json(StatusCode::OK, &serde_json::json!({"live": true}))
}

pub(super) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        json(StatusCode::OK, &serde_json::json!({"ready": true}))
    } else {
        // 503 for probes; the body still says `ready` for clients that read it.
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"ready": false, "error": "the server is not ready"}),
        )
    }
}

pub(super) async fn server_metadata() -> Response {
    json(
        StatusCode::OK,
        &inferd_protocol::v2::ServerMetadata {
            name: "inferd",
            version: env!("CARGO_PKG_VERSION"),
            extensions: &[
                "binary_tensor_data",
                "model_configuration",
                "model_repository",
                "statistics",
            ],
        },
    )
}

pub(super) async fn model_list(State(state): State<Arc<AppState>>) -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({"models": state.registry.names()}),
    )
}

pub(super) async fn model_list_v1(State(state): State<Arc<AppState>>) -> Response {
    let names = state.registry.names();
    json(
        StatusCode::OK,
        &inferd_protocol::v1::ModelList {
            models: names.iter().map(String::as_str).collect(),
        },
    )
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
