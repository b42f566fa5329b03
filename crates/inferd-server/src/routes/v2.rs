//! Open Inference Protocol (V2) REST: model metadata, readiness, inference.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use inferd_protocol::v2::{self, MetadataTensor, ResponseHeader};

use super::{Params, instrumented, read_body, resolve, run_model};
use crate::AppState;
use crate::error::{ApiError, json_response};
use crate::metrics::Protocol;
use crate::registry::{ModelState, ServedModel};
use crate::stats::RequestTimes;

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

/// The binary tensor data extension's header: the JSON part's length.
const HEADER_LENGTH: &str = "inference-header-content-length";

async fn infer_on(
    state: &AppState,
    served: Arc<ServedModel>,
    request: Request,
) -> Result<(Response, RequestTimes), ApiError> {
    let mut times = RequestTimes::default();
    let received = Instant::now();
    let header_deadline = super::header_deadline(request.headers(), received)?;
    let json_len = match request.headers().get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Inference-Header-Content-Length must be a byte count".into(),
                    )
                })?,
        ),
    };
    let bytes = read_body(request, state.max_body_bytes, state.body_read_timeout).await?;
    let decoding = Instant::now();
    let request = match json_len {
        None => v2::decode_infer_request(&bytes)?,
        Some(len) => v2::decode_infer_request_binary(&bytes, len)?,
    };
    times.input = decoding.elapsed();
    // Triton's `timeout` parameter (microseconds) wins over the header.
    let deadline = match request.parameters.as_ref().and_then(|p| p.get("timeout")) {
        None => header_deadline,
        Some(value) => {
            let us = value.as_u64().ok_or_else(|| {
                ApiError::BadRequest(
                    "parameters.timeout: must be a whole number of microseconds".into(),
                )
            })?;
            // As in Triton, 0 means the request sets no timeout.
            match us {
                0 => header_deadline,
                us => received.checked_add(std::time::Duration::from_micros(us)),
            }
        }
    };
    let outputs_meta = &served.model.metadata().outputs;
    // Which outputs to return, in which order, and which of them as binary:
    // a per-output `binary_data` overrides the request's `binary_data_output`.
    let all_binary = flag(
        request.parameters.as_ref(),
        "binary_data_output",
        "parameters",
    )?;
    let (wanted, binary): (Vec<usize>, Vec<bool>) = match &request.outputs {
        Some(list) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let index = outputs_meta
                    .iter()
                    .position(|spec| spec.name == o.name)
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "outputs[{i}].name: the model has no output '{}'",
                            o.name
                        ))
                    })?;
                let own = flag(
                    o.parameters.as_ref(),
                    "binary_data",
                    &format!("outputs[{i}].parameters"),
                )?;
                Ok((index, own.or(all_binary).unwrap_or(false)))
            })
            .collect::<Result<Vec<_>, ApiError>>()?
            .into_iter()
            .unzip(),
        _ => (0..outputs_meta.len())
            .map(|i| (i, all_binary.unwrap_or(false)))
            .unzip(),
    };
    let mut all: Vec<Option<_>> = run_model(state, &served, request.inputs, deadline, &mut times)
        .await?
        .into_iter()
        .map(Some)
        .collect();
    let outputs: Vec<_> = wanted
        .into_iter()
        .filter_map(|i| all.get_mut(i).and_then(Option::take))
        .collect();
    let encoding = Instant::now();
    let encoded = v2::encode_infer_response_binary(
        ResponseHeader {
            model_name: &served.name,
            model_version: &served.version,
            id: request.id.as_deref(),
        },
        &outputs,
        &binary,
    )
    .map_err(|e| ApiError::Internal(format!("cannot encode the response: {e}")))?;
    times.output = encoding.elapsed();
    let Some(json_len) = encoded.json_len else {
        return Ok((json_response(StatusCode::OK, encoded.body), times));
    };
    let mut response = json_response(StatusCode::OK, encoded.body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(json_len));
    Ok((response, times))
}

/// A boolean parameter, absent as `None`; any other type is a 400.
fn flag(
    parameters: Option<&inferd_protocol::Parameters>,
    key: &str,
    path: &str,
) -> Result<Option<bool>, ApiError> {
    match parameters.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::BadRequest(format!(
            "{path}.{key}: must be true or false"
        ))),
    }
}

/// `GET /v2/models/stats`: every ready model version.
pub(super) async fn all_stats(State(state): State<Arc<AppState>>) -> Response {
    let mut entries = Vec::new();
    for name in state.registry.names() {
        state.registry.with(&name, |found| {
            if let Some(ModelState::Ready(ready)) = found {
                entries.extend(ready.versions().map(|s| s.stats.json(&s.name, &s.version)));
            }
        });
    }
    stats_response(entries)
}

pub(super) async fn stats(
    State(state): State<Arc<AppState>>,
    Params(model): Params<String>,
) -> Response {
    if let Err(e) = resolve(&state, &model, None) {
        return e.into_response();
    }
    let entries = state.registry.with(&model, |found| match found {
        Some(ModelState::Ready(ready)) => ready
            .versions()
            .map(|s| s.stats.json(&s.name, &s.version))
            .collect(),
        _ => Vec::new(),
    });
    stats_response(entries)
}

pub(super) async fn stats_version(
    State(state): State<Arc<AppState>>,
    Params((model, version)): Params<(String, String)>,
) -> Response {
    match resolve(&state, &model, Some(&version)) {
        Ok(s) => stats_response(vec![s.stats.json(&s.name, &s.version)]),
        Err(e) => e.into_response(),
    }
}

fn stats_response(entries: Vec<serde_json::Value>) -> Response {
    let body = serde_json::json!({ "model_stats": entries });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

pub(super) async fn config(
    State(state): State<Arc<AppState>>,
    Params(model): Params<String>,
) -> Response {
    config_of(&state, &model, None)
}

pub(super) async fn config_version(
    State(state): State<Arc<AppState>>,
    Params((model, version)): Params<(String, String)>,
) -> Response {
    config_of(&state, &model, Some(&version))
}

/// Triton's model configuration, in its JSON field names, as the model is
/// served (its `config.json` over the command line's defaults).
fn config_of(state: &AppState, model: &str, version: Option<&str>) -> Response {
    let served = match resolve(state, model, version) {
        Ok(served) => served,
        Err(e) => return e.into_response(),
    };
    let body = served
        .config
        .triton_json(&served.name, served.model.as_ref());
    json_response(StatusCode::OK, body.to_string().into_bytes())
}
