//! Open Inference Protocol (V2) REST: model metadata, readiness, inference.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use inferd_protocol::v2::{self, MetadataTensor, ResponseHeader};

use super::{Params, instrumented, read_body, resolve, run_model};
use crate::AppState;
use crate::error::{ApiError, json_response};
use crate::metrics::Protocol;
use crate::registry::{ModelState, ServedModel};

pub(super) async fn metadata(
    State(state): State<Arc<AppState>>,
    Params(model): Params<String>,
) -> Response {
    metadata_of(&state, &model, None)
}

pub(super) async fn metadata_version(
    State(state): State<Arc<AppState>>,
    Params((model, version)): Params<(String, String)>,
) -> Response {
    metadata_of(&state, &model, Some(&version))
}

fn metadata_of(state: &AppState, model: &str, version: Option<&str>) -> Response {
    let served = match resolve(state, model, version) {
        Ok(served) => served,
        Err(e) => return e.into_response(),
    };
    let versions: Vec<String> = state.registry.with(model, |found| match found {
        Some(ModelState::Ready(ready)) => ready.version_names().map(str::to_owned).collect(),
        _ => vec![served.version.clone()],
    });
    let meta = served.model.metadata();
    let body = v2::ModelMetadata {
        name: &served.name,
        versions: versions.iter().map(String::as_str).collect(),
        platform: meta.platform,
        inputs: meta.inputs.iter().map(MetadataTensor::from).collect(),
        outputs: meta.outputs.iter().map(MetadataTensor::from).collect(),
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => json_response(StatusCode::OK, bytes),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

pub(super) async fn ready(
    State(state): State<Arc<AppState>>,
    Params(model): Params<String>,
) -> Response {
    ready_of(&state, &model, None)
}

pub(super) async fn ready_version(
    State(state): State<Arc<AppState>>,
    Params((model, version)): Params<(String, String)>,
) -> Response {
    ready_of(&state, &model, Some(&version))
}

fn ready_of(state: &AppState, model: &str, version: Option<&str>) -> Response {
    let (status, ready, error) = match resolve(state, model, version) {
        Ok(_) => (StatusCode::OK, true, None),
        Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => {
            (e.status(), false, Some(e.to_string()))
        }
        Err(e) => return e.into_response(),
    };
    let mut body = serde_json::json!({"name": model, "ready": ready});
    if let Some(error) = error {
        body["error"] = error.into();
    }
    json_response(status, body.to_string().into_bytes())
}

pub(super) async fn infer(
    State(state): State<Arc<AppState>>,
    Params(model): Params<String>,
    request: Request,
) -> Response {
    instrumented(&state, Protocol::V2, &model, None, |served| {
        infer_on(&state, served, request)
    })
    .await
}

pub(super) async fn infer_version(
    State(state): State<Arc<AppState>>,
    Params((model, version)): Params<(String, String)>,
    request: Request,
) -> Response {
    instrumented(&state, Protocol::V2, &model, Some(&version), |served| {
        infer_on(&state, served, request)
    })
    .await
}

async fn infer_on(
    state: &AppState,
    served: Arc<ServedModel>,
    request: Request,
) -> Result<Response, ApiError> {
    let bytes = read_body(request, state.max_body_bytes).await?;
    let request = v2::decode_infer_request(&bytes)?;
    // Check requested outputs before running anything.
    let wanted: Option<Vec<usize>> = match &request.outputs {
        None => None,
        Some(list) if list.is_empty() => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, o)| {
                    served
                        .model
                        .metadata()
                        .outputs
                        .iter()
                        .position(|spec| spec.name == o.name)
                        .ok_or_else(|| {
                            ApiError::BadRequest(format!(
                                "outputs[{i}].name: the model has no output '{}'",
                                o.name
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let mut outputs = run_model(state, &served, request.inputs).await?;
    if let Some(indices) = wanted {
        let mut all: Vec<Option<_>> = outputs.into_iter().map(Some).collect();
        outputs = indices
            .into_iter()
            .filter_map(|i| all.get_mut(i).and_then(Option::take))
            .collect();
    }
    let body = v2::encode_infer_response(
        ResponseHeader {
            model_name: &served.name,
            model_version: &served.version,
            id: request.id.as_deref(),
        },
        &outputs,
    )
    .map_err(|e| ApiError::Internal(format!("cannot encode the response: {e}")))?;
    Ok(json_response(StatusCode::OK, body))
}
