//! The protocol-neutral inference path every front end (REST V2, V1, gRPC)
//! shares once it has decoded a request into tensors: find the model
//! version, check and run the inputs, account for the time spent.

use std::sync::Arc;
use std::time::Instant;

use inferd_tensor::Tensor;

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::Rejection;
use crate::registry::{ModelState, ServedModel};
use crate::stats::RequestTimes;
use inferd_runtime::InputError;

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

/// Checks inputs against the model, queues them on its scheduler and times
/// the run into `times`. Without a `deadline` of its own, a request gets
/// the model's default timeout, if any. A request whose deadline passes
/// while it waits is answered [`ApiError::DeadlineExceeded`] and never run;
/// a full queue is [`ApiError::Overloaded`] at once.
pub(crate) async fn run_model(
    state: &AppState,
    served: &Arc<ServedModel>,
    inputs: Vec<Tensor>,
    deadline: Option<Instant>,
    times: &mut RequestTimes,
) -> Result<Vec<Tensor>, ApiError> {
    if let Some(big) = inputs
        .iter()
        .find(|t| t.data().len() > state.max_tensor_elements)
    {
        state
            .metrics
            .record_rejection(&served.name, Rejection::TooManyElements);
        return Err(ApiError::BadRequest(format!(
            "input '{}' has {} elements, more than the limit of {} (--max-tensor-elements)",
            big.name(),
            big.data().len(),
            state.max_tensor_elements
        )));
    }
    let inputs = served
        .model
        .metadata()
        .arrange_inputs(inputs)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let deadline = deadline.or_else(|| {
        served
            .config
            .default_timeout
            .map(|timeout| Instant::now() + timeout)
    });
    let rows = inputs.first().and_then(Tensor::rows).unwrap_or(1);
    let started = Instant::now();
    let (outputs, timing) = served.scheduler.infer(inputs, deadline).await;
    let outputs = match outputs {
        Ok(outputs) => outputs,
        Err(e) => {
            let rejection = match &e {
                inferd_runtime::Error::QueueFull(_) => Some(Rejection::QueueFull),
                inferd_runtime::Error::DeadlineExceeded => Some(Rejection::Deadline),
                inferd_runtime::Error::Input(InputError::TooManyRows { .. }) => {
                    Some(Rejection::TooManyRows)
                }
                _ => None,
            };
            if let Some(why) = rejection {
                state.metrics.record_rejection(&served.name, why);
            }
            return Err(match e {
                inferd_runtime::Error::QueueFull(_) => ApiError::Overloaded {
                    model: served.name.clone(),
                    retry_after_secs: 1,
                },
                other => other.into(),
            });
        }
    };
    served
        .metrics
        .inference
        .observe(started.elapsed().as_secs_f64());
    served.metrics.queue.observe(timing.queue.as_secs_f64());
    times.queue = timing.queue;
    times.infer = timing.compute;
    times.rows = rows as u64;
    Ok(outputs)
}
