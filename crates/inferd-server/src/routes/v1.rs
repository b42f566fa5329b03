//! KServe V1 REST: model status and `:predict`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use inferd_protocol::v1;

use super::{Params, header_deadline, instrumented, read_body, resolve, run_model};
use crate::AppState;
use crate::error::{ApiError, json_response};
use crate::metrics::Protocol;
use crate::registry::ServedModel;
use crate::stats::RequestTimes;

/// `GET /v1/models/{model}`.
pub(super) async fn status(
    State(state): State<Arc<AppState>>,
    Params(model): Params<String>,
) -> Response {
    if model.contains(':') {
        return ApiError::MethodNotAllowed.into_response();
    }
    let (status, ready) = match resolve(&state, &model, None) {
        Ok(_) => (StatusCode::OK, true),
        Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => (e.status(), false),
        Err(e) => return e.into_response(),
    };
    let body = serde_json::to_vec(&v1::ModelStatus {
        name: &model,
        ready,
    })
    .unwrap_or_default();
    json_response(status, body)
}

/// `POST /v1/models/{model}:predict`.
pub(super) async fn predict(
    State(state): State<Arc<AppState>>,
    Params(target): Params<String>,
    request: Request,
) -> Response {
    let Some((model, verb)) = target.rsplit_once(':') else {
        return ApiError::NotFound(format!(
            "POST /v1/models/{target} needs a verb: /v1/models/{target}:predict"
        ))
        .into_response();
    };
    match verb {
        "predict" => {}
        "explain" => {
            return ApiError::NotFound("explainers are not supported; use :predict".into())
                .into_response();
        }
        other => {
            return ApiError::NotFound(format!("unknown verb ':{other}'; use :predict"))
                .into_response();
        }
    }
    instrumented(&state, Protocol::V1, model, None, |served| {
        predict_on(&state, served, request)
    })
    .await
}

async fn predict_on(
    state: &AppState,
    served: Arc<ServedModel>,
    request: Request,
) -> Result<(Response, RequestTimes), ApiError> {
    let mut times = RequestTimes::default();
    let deadline = header_deadline(request.headers(), Instant::now())?;
    let bytes = read_body(request, state.max_body_bytes, state.body_read_timeout).await?;
    let decoding = Instant::now();
    let inputs = v1::decode_predict_request(&bytes, &served.model.metadata().inputs)?;
    times.input = decoding.elapsed();
    let outputs = run_model(state, &served, inputs, deadline, &mut times).await?;
    let encoding = Instant::now();
    let body = v1::encode_predict_response(&outputs)
        .map_err(|e| ApiError::Internal(format!("cannot encode the predictions: {e}")))?;
    times.output = encoding.elapsed();
    Ok((json_response(StatusCode::OK, body), times))
}
