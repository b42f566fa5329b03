//! The model repository extension over REST: index, load, unload.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Params, read_body};
use crate::AppState;
use crate::error::{ApiError, json_response};

/// Repository request bodies are small; anything bigger is a mistake.
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexRequest {
    ready: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRequest {
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An optional JSON body: empty means the defaults.
async fn body<T: Default + serde::de::DeserializeOwned>(
    state: &AppState,
    request: Request,
) -> Result<T, ApiError> {
    let bytes = read_body(request, MAX_BODY, state.body_read_timeout).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." | "?" => ApiError::BadRequest(e.into_inner().to_string()),
            _ => ApiError::BadRequest(format!("{path}: {}", e.into_inner())),
        }
    })
}

pub(super) async fn index(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let wanted: IndexRequest = match body(&state, request).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let entries = state
        .repository
        .index(&state, wanted.ready.unwrap_or(false));
    match serde_json::to_vec(&entries) {
        Ok(bytes) => json_response(StatusCode::OK, bytes),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

pub(super) async fn load(
    State(state): State<Arc<AppState>>,
    Params(model): Params<String>,
    request: Request,
) -> Response {
    let result = async {
        let change: ChangeRequest = body(&state, request).await?;
        let mut config = None;
        for (key, value) in change.parameters.unwrap_or_default() {
            match (key.as_str(), value) {
                ("config", serde_json::Value::String(text)) => config = Some(text),
                ("config", _) => {
                    return Err(ApiError::BadRequest(
                        "parameters.config: must be a string holding the model's JSON configuration"
                            .into(),
                    ));
                }
                (other, _) => {
                    return Err(ApiError::BadRequest(format!(
                        "parameters.{other}: not supported (only 'config' is; model files load from the repository)"
                    )));
                }
            }
        }
        state.repository.load(&state, &model, config).await
    }
    .await;
    done(result)
}

pub(super) async fn unload(
    State(state): State<Arc<AppState>>,
    Params(model): Params<String>,
    request: Request,
) -> Response {
    let result = async {
        let change: ChangeRequest = body(&state, request).await?;
        for (key, value) in change.parameters.unwrap_or_default() {
            match (key.as_str(), value) {
                // Models have no dependents here (no ensembles), so either value holds.
                ("unload_dependents", serde_json::Value::Bool(_)) => {}
                ("unload_dependents", _) => {
                    return Err(ApiError::BadRequest(
                        "parameters.unload_dependents: must be true or false".into(),
                    ));
                }
                (other, _) => {
                    return Err(ApiError::BadRequest(format!(
                        "parameters.{other}: not supported"
                    )));
                }
            }
        }
        state.repository.unload(&state, &model).await
    }
    .await;
    done(result)
}

fn done(result: Result<(), ApiError>) -> Response {
    match result {
        Ok(()) => json_response(StatusCode::OK, b"{}".to_vec()),
        Err(e) => e.into_response(),
    }
}
