//! The protocol-neutral inference path every front end (REST V2, V1, gRPC)
//! shares once it has decoded a request into tensors: find the model
//! version, check and run the inputs, account for the time spent.

use std::sync::Arc;
use std::time::Instant;

use inferd_tensor::Tensor;

use crate::AppState;
use crate::error::ApiError;
use crate::registry::{ModelState, ServedModel};
use crate::stats::RequestTimes;

/// Finds the model version a request names (the newest when it names none).
pub(crate) fn resolve(
    state: &AppState,
    model: &str,
    version: Option<&str>,
) -> Result<Arc<ServedModel>, ApiError> {
    state.registry.with(model, |found| match found {
        None => Err(ApiError::UnknownModel(model.to_owned())),
        Some(ModelState::Loading) => Err(ApiError::ModelLoading(model.to_owned())),
        Some(ModelState::Failed(why)) => Err(ApiError::ModelFailed(model.to_owned(), why.clone())),
        Some(ModelState::Ready(ready)) => {
            let served = match version {
                None => ready.latest(),
                Some(v) => ready.version(v),
            };
            served.cloned().ok_or_else(|| ApiError::UnknownVersion {
                model: model.to_owned(),
                version: version.unwrap_or_default().to_owned(),
            })
        }
    })
}

/// Checks inputs against the model, runs them, and times the model into
/// `times`. A request whose `deadline` passes before it runs is refused
/// with [`ApiError::DeadlineExceeded`] and never run.
pub(crate) async fn run_model(
    state: &AppState,
    served: &Arc<ServedModel>,
    inputs: Vec<Tensor>,
    deadline: Option<Instant>,
    times: &mut RequestTimes,
) -> Result<Vec<Tensor>, ApiError> {
    let inputs = served
        .model
        .metadata()
        .arrange_inputs(inputs)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(ApiError::DeadlineExceeded);
    }
    let rows = inputs
        .first()
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(1);
    let started = Instant::now();
    let (outputs, timing) = state.pool.infer_timed(served.model.clone(), inputs).await;
    let outputs = outputs?;
    served
        .metrics
        .inference
        .observe(started.elapsed().as_secs_f64());
    times.queue = timing.queue;
    times.infer = timing.compute;
    times.rows = rows as u64;
    Ok(outputs)
}
