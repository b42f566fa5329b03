//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`),
//! with Triton's model configuration and statistics calls.
//!
//! After the wire format, a request takes the path REST requests take:
//! [`convert`] turns the message into tensors with the same checks, then
//! [`crate::inference`] resolves the model and runs it; statistics and
//! metrics are recorded as for HTTP (protocol label `grpc`). Outputs are
//! answered in `raw_output_contents`, as Triton does.

mod convert;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inferd_protocol::DecodeError;
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, Request, Response, Status};

use crate::AppState;
use crate::error::ApiError;
use crate::inference::{resolve, run_model};
use crate::metrics::Protocol;
use crate::registry::{ModelState, ServedModel};
use crate::stats::RequestTimes;

/// Messages, server and client generated from `proto/grpc_service.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used
)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::model_infer_request::InferRequestedOutputTensor;
use proto::model_repository_parameter::ParameterChoice as RepositoryChoice;

/// Extensions the server metadata lists (the same as over HTTP).
const EXTENSIONS: [&str; 3] = ["binary_tensor_data", "model_configuration", "statistics"];

/// The gRPC service over a server's state; [`service`] wraps it for tonic.
#[derive(Debug, Clone)]
pub struct InferenceService {
    state: Arc<AppState>,
}

/// What [`service`] returns: the generated server behind [`Arrival`],
/// behind [`OverLimit`].
pub type Service =
    OverLimit<InterceptedService<GrpcInferenceServiceServer<InferenceService>, Arrival>>;

/// The tonic service answering `inference.GRPCInferenceService`, taking
/// messages up to the state's `max_body_bytes`.
pub fn service(state: Arc<AppState>) -> Service {
    let limit = state.max_body_bytes;
    let server = GrpcInferenceServiceServer::new(InferenceService {
        state: state.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(usize::MAX);
    OverLimit(InterceptedService::new(server, Arrival { state }))
}

/// Answers a request message over the size limit with RESOURCE_EXHAUSTED,
/// gRPC's code for it (and the router's), where tonic's decoder says
/// OUT_OF_RANGE. tonic refuses such a message from its length prefix,
/// before reading it, in a trailers-only response; the server itself never
/// answers OUT_OF_RANGE, so that code in a response head is always this.
#[derive(Debug, Clone)]
pub struct OverLimit<S>(S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for OverLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tonic::codegen::Service<axum::http::Request<B>> for OverLimit<S>
where
    S: tonic::codegen::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send + 'static>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            let headers = response.headers_mut();
            // 11: OUT_OF_RANGE.
            if headers
                .get("grpc-status")
                .is_some_and(|v| v.as_bytes() == b"11")
            {
                let exhausted = Code::ResourceExhausted as i32;
                headers.insert("grpc-status", axum::http::HeaderValue::from(exhausted));
            }
            Ok(response)
        })
    }
}

/// Runs when a call's headers arrive, before its message is read: notes the
/// time (deadlines count from it) and answers DEADLINE_EXCEEDED at once to a
/// call whose `grpc-timeout` is zero. Answering here matters: tonic's
/// transport cancels a call whose timeout passes while it is still reading
/// the message, and reports that as CANCELLED.
#[derive(Debug, Clone)]
pub struct Arrival {
    state: Arc<AppState>,
}

/// When a call's headers arrived.
#[derive(Debug, Clone, Copy)]
struct Arrived(Instant);

impl Interceptor for Arrival {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let now = Instant::now();
        if grpc_timeout(request.metadata()).is_some_and(|t| t.is_zero()) {
            // The message, and so the model, is not read: counted under no model.
            self.state
                .metrics
                .record_failure("", Protocol::Grpc, 504, 0.0);
            return Err(status_of(&ApiError::DeadlineExceeded));
        }
        request.extensions_mut().insert(Arrived(now));
        Ok(request)
    }
}

/// How the gRPC listener serves connections.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// TLS (ALPN h2) when configured.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Most requests in flight on one connection (HTTP/2 streams).
    pub(crate) max_concurrent_streams: u32,
}

/// Serves gRPC on `listener` until `shutdown` resolves, then lets calls in
/// progress finish (the caller bounds how long).
pub(crate) async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let mut builder = tonic::transport::Server::builder();
    if options.max_concurrent_streams > 0 {
        builder = builder.max_concurrent_streams(options.max_concurrent_streams);
    }
    let router = builder.add_service(service(state));
    match options.tls {
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Some(config) => {
            match crate::tls::TlsListener::new(listener, config) {
                Ok(incoming) => {
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                }
                Err(e) => {
                    // Only fails when the socket has no address, which a
                    // bound listener always has.
                    tracing::error!(error = %e, "cannot start the gRPC TLS listener");
                    Ok(())
                }
            }
        }
    }
}

/// The one place where failures become gRPC status codes, from the HTTP
/// status each error already has:
///
/// | HTTP | gRPC |
/// |---|---|
/// | 400 | INVALID_ARGUMENT |
/// | 401 | UNAUTHENTICATED |
/// | 404 | NOT_FOUND |
/// | 405 | UNIMPLEMENTED |
/// | 413 | RESOURCE_EXHAUSTED (what gRPC itself answers for a message over the limit) |
/// | 429 | RESOURCE_EXHAUSTED |
/// | 503 | UNAVAILABLE |
/// | 504 | DEADLINE_EXCEEDED |
/// | other 4xx | FAILED_PRECONDITION |
/// | 5xx | INTERNAL |
pub(crate) fn status_of(e: &ApiError) -> Status {
    let http = e.status().as_u16();
    let code = match http {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        404 => Code::NotFound,
        405 => Code::Unimplemented,
        413 | 429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        client if client < 500 => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    if http >= 500 {
        tracing::warn!(code = ?code, error = %e, "grpc request failed");
    } else {
        tracing::debug!(code = ?code, error = %e, "grpc request refused");
    }
    Status::new(code, e.to_string())
}

fn bad_request(e: DecodeError) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// An empty version asks for the server's choice (the newest).
fn version_of(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

/// The `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
/// A malformed value is ignored, as tonic's transport ignores it.
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        tracing::debug!(value = text, "ignoring a malformed grpc-timeout");
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => {
            tracing::debug!(value = text, "ignoring a malformed grpc-timeout");
            return None;
        }
    })
}

impl InferenceService {
    /// With tokens configured, requires `authorization: Bearer <token>`.
    /// The refusal is the same whatever the call names, so it reveals no model.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let tokens = &self.state.tokens;
        if tokens.is_empty() {
            return Ok(());
        }
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if given.is_some_and(|t| tokens.accepts(t)) {
            return Ok(());
        }
        self.state.metrics.record_auth_failure();
        Err(Status::unauthenticated(
            "a valid bearer token is required (authorization: Bearer <token>)",
        ))
    }

    fn resolve(&self, model: &str, version: &str) -> Result<Arc<ServedModel>, Status> {
        resolve(&self.state, model, version_of(version)).map_err(|e| status_of(&e))
    }

    /// Runs one inference, counting it by model, protocol and status and
    /// timing it however it ends, as `routes::instrumented` does for HTTP.
    async fn infer(
        &self,
        request: proto::ModelInferRequest,
        arrived: Instant,
        grpc_deadline: Option<Instant>,
    ) -> Result<Response<proto::ModelInferResponse>, Status> {
        let state = &self.state;
        let _in_flight = state.metrics.in_flight();
        let served = match resolve(
            state,
            &request.model_name,
            version_of(&request.model_version),
        ) {
            Ok(served) => served,
            Err(e) => {
                // Unknown names are not labels: a client must not grow the label set.
                let label = if matches!(e, ApiError::UnknownModel(_)) {
                    ""
                } else {
                    request.model_name.as_str()
                };
                let seconds = arrived.elapsed().as_secs_f64();
                state
                    .metrics
                    .record_failure(label, Protocol::Grpc, e.status().as_u16(), seconds);
                return Err(status_of(&e));
            }
        };
        let mut outcome = Unfinished {
            state,
            served: &served,
            arrived,
            deadline: grpc_deadline,
            done: false,
        };
        let result = infer_on(state, &served, request, arrived, grpc_deadline).await;
        outcome.done = true;
        let elapsed = arrived.elapsed();
        let seconds = elapsed.as_secs_f64();
        match result {
            Ok((response, times)) => {
                served.record_success(Protocol::Grpc, elapsed, times);
                let mut response = Response::new(response);
                let metadata = response.metadata_mut();
                for (name, value) in times.headers(elapsed) {
                    if let Ok(value) = value.parse() {
                        metadata.insert(name, value);
                    }
                }
                Ok(response)
            }
            Err(e) => {
                served.stats.record_failure(elapsed);
                state.metrics.record_failure(
                    &served.name,
                    Protocol::Grpc,
                    e.status().as_u16(),
                    seconds,
                );
                Err(status_of(&e))
            }
        }
    }
}

/// Counts a call that ends without an answer: the transport dropped it,
/// because its `grpc-timeout` passed (504) or the client went away (499, the
/// usual code for a request its client closed).
struct Unfinished<'a> {
    state: &'a AppState,
    served: &'a ServedModel,
    arrived: Instant,
    deadline: Option<Instant>,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let elapsed = self.arrived.elapsed();
        let code = if self.deadline.is_some_and(|d| Instant::now() >= d) {
            504
        } else {
            499
        };
        self.served.stats.record_failure(elapsed);
        self.state.metrics.record_failure(
            &self.served.name,
            Protocol::Grpc,
            code,
            elapsed.as_secs_f64(),
        );
    }
}

/// Decodes, runs and encodes one request on a resolved model version.
async fn infer_on(
    state: &AppState,
    served: &Arc<ServedModel>,
    request: proto::ModelInferRequest,
    arrived: Instant,
    grpc_deadline: Option<Instant>,
) -> Result<(proto::ModelInferResponse, RequestTimes), ApiError> {
    let mut times = RequestTimes::default();
    let decoding = Instant::now();
    let proto::ModelInferRequest {
        id,
        parameters,
        inputs,
        outputs: requested,
        raw_input_contents,
        ..
    } = request;
    let timeout = convert::timeout_parameter(&parameters).map_err(bad_request)?;
    let deadline = match (grpc_deadline, timeout.and_then(|t| arrived.checked_add(t))) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let inputs = convert::decode_inputs(inputs, raw_input_contents).map_err(bad_request)?;
    let wanted = select_outputs(served, &requested)?;
    times.input = decoding.elapsed();
    let outputs = run_model(state, served, inputs, deadline, &mut times).await?;
    let encoding = Instant::now();
    let mut all: Vec<Option<_>> = outputs.into_iter().map(Some).collect();
    let outputs = wanted
        .into_iter()
        .filter_map(|i| all.get_mut(i).and_then(Option::take))
        .collect();
    let (outputs, raw_output_contents) = convert::encode_outputs(outputs);
    let response = proto::ModelInferResponse {
        model_name: served.name.clone(),
        model_version: served.version.clone(),
        id,
        parameters: HashMap::new(),
        outputs,
        raw_output_contents,
    };
    times.output = encoding.elapsed();
    Ok((response, times))
}

/// Indices of the model outputs to return, in the order asked for; all of
/// them when none are named. Checked before anything runs.
fn select_outputs(
    served: &ServedModel,
    requested: &[InferRequestedOutputTensor],
) -> Result<Vec<usize>, ApiError> {
    let specs = &served.model.metadata().outputs;
    if requested.is_empty() {
        return Ok((0..specs.len()).collect());
    }
    requested
        .iter()
        .enumerate()
        .map(|(i, o)| {
            convert::check_output_parameters(i, &o.parameters).map_err(bad_request)?;
            specs
                .iter()
                .position(|spec| spec.name == o.name)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "outputs[{i}].name: the model has no output '{}'",
                        o.name
                    ))
                })
        })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _request: Request<proto::ServerLiveRequest>,
    ) -> Result<Response<proto::ServerLiveResponse>, Status> {
        Ok(Response::new(proto::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<proto::ServerReadyRequest>,
    ) -> Result<Response<proto::ServerReadyResponse>, Status> {
        Ok(Response::new(proto::ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    /// Loading or failed models are `ready: false`; unknown ones NOT_FOUND,
    /// as REST answers 404.
    async fn model_ready(
        &self,
        request: Request<proto::ModelReadyRequest>,
    ) -> Result<Response<proto::ModelReadyResponse>, Status> {
        self.authorize(&request)?;
        let r = request.get_ref();
        let ready = match resolve(&self.state, &r.name, version_of(&r.version)) {
            Ok(_) => true,
            Err(e) if e.status().as_u16() == 503 => false,
            Err(e) => return Err(status_of(&e)),
        };
        Ok(Response::new(proto::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        request: Request<proto::ServerMetadataRequest>,
    ) -> Result<Response<proto::ServerMetadataResponse>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(proto::ServerMetadataResponse {
            name: "inferd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<proto::ModelMetadataRequest>,
    ) -> Result<Response<proto::ModelMetadataResponse>, Status> {
        self.authorize(&request)?;
        let r = request.get_ref();
        let served = self.resolve(&r.name, &r.version)?;
        let versions = self.state.registry.with(&r.name, |found| match found {
            Some(ModelState::Ready(ready)) => ready.version_names().map(str::to_owned).collect(),
            _ => vec![served.version.clone()],
        });
        let meta = served.model.metadata();
        Ok(Response::new(proto::ModelMetadataResponse {
            name: served.name.clone(),
            versions,
            platform: meta.platform.to_owned(),
            inputs: meta.inputs.iter().map(convert::tensor_metadata).collect(),
            outputs: meta.outputs.iter().map(convert::tensor_metadata).collect(),
            properties: HashMap::new(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<proto::ModelInferRequest>,
    ) -> Result<Response<proto::ModelInferResponse>, Status> {
        let arrived = request
            .extensions()
            .get::<Arrived>()
            .map_or_else(Instant::now, |a| a.0);
        self.authorize(&request)?;
        let deadline = grpc_timeout(request.metadata()).and_then(|t| arrived.checked_add(t));
        self.infer(request.into_inner(), arrived, deadline).await
    }

    async fn model_config(
        &self,
        request: Request<proto::ModelConfigRequest>,
    ) -> Result<Response<proto::ModelConfigResponse>, Status> {
        self.authorize(&request)?;
        let r = request.get_ref();
        let served = self.resolve(&r.name, &r.version)?;
        let json = served
            .config
            .triton_json(&served.name, served.model.as_ref());
        Ok(Response::new(proto::ModelConfigResponse {
            config: Some(convert::config_from_json(&json)),
        }))
    }

    /// Every ready model's versions without a name; one model's versions
    /// without a version; else that version.
    async fn model_statistics(
        &self,
        request: Request<proto::ModelStatisticsRequest>,
    ) -> Result<Response<proto::ModelStatisticsResponse>, Status> {
        self.authorize(&request)?;
        let r = request.get_ref();
        let registry = &self.state.registry;
        let mut model_stats = Vec::new();
        let mut add_versions = |name: &str| {
            registry.with(name, |found| {
                if let Some(ModelState::Ready(ready)) = found {
                    model_stats.extend(ready.versions().map(|s| {
                        convert::statistics_from_json(&s.stats.json(&s.name, &s.version))
                    }));
                }
            });
        };
        if r.name.is_empty() {
            if !r.version.is_empty() {
                return Err(Status::invalid_argument(
                    "version: a version needs a model name",
                ));
            }
            for name in registry.names() {
                add_versions(&name);
            }
        } else if r.version.is_empty() {
            self.resolve(&r.name, "")?;
            add_versions(&r.name);
        } else {
            let s = self.resolve(&r.name, &r.version)?;
            model_stats.push(convert::statistics_from_json(
                &s.stats.json(&s.name, &s.version),
            ));
        }
        Ok(Response::new(proto::ModelStatisticsResponse {
            model_stats,
        }))
    }

    async fn repository_index(
        &self,
        request: Request<proto::RepositoryIndexRequest>,
    ) -> Result<Response<proto::RepositoryIndexResponse>, Status> {
        self.authorize(&request)?;
        let r = request.get_ref();
        one_repository(&r.repository_name)?;
        let models = self
            .state
            .repository
            .index(&self.state, r.ready)
            .into_iter()
            .map(|e| proto::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version.unwrap_or_default(),
                state: e.state.to_owned(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(proto::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<proto::RepositoryModelLoadRequest>,
    ) -> Result<Response<proto::RepositoryModelLoadResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        one_repository(&r.repository_name)?;
        let mut config = None;
        for (key, value) in r.parameters {
            match (key.as_str(), value.parameter_choice) {
                ("config", Some(RepositoryChoice::StringParam(text))) => config = Some(text),
                ("config", _) => {
                    return Err(Status::invalid_argument(
                        "parameters.config: must be a string holding the model's JSON configuration",
                    ));
                }
                (other, _) => {
                    return Err(Status::invalid_argument(format!(
                        "parameters.{other}: not supported (only 'config' is; model files load from the repository)"
                    )));
                }
            }
        }
        self.state
            .repository
            .load(&self.state, &r.model_name, config)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(proto::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<proto::RepositoryModelUnloadRequest>,
    ) -> Result<Response<proto::RepositoryModelUnloadResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        one_repository(&r.repository_name)?;
        for (key, value) in r.parameters {
            match (key.as_str(), value.parameter_choice) {
                // No ensembles, so no dependents: either value holds.
                ("unload_dependents", Some(RepositoryChoice::BoolParam(_))) => {}
                ("unload_dependents", _) => {
                    return Err(Status::invalid_argument(
                        "parameters.unload_dependents: must be true or false",
                    ));
                }
                (other, _) => {
                    return Err(Status::invalid_argument(format!(
                        "parameters.{other}: not supported"
                    )));
                }
            }
        }
        self.state
            .repository
            .unload(&self.state, &r.model_name)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(proto::RepositoryModelUnloadResponse {}))
    }
}

/// inferd serves its repositories as one: a request may not pick another.
fn one_repository(name: &str) -> Result<(), Status> {
    if name.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "repository_name: '{name}' is not supported; leave it empty (inferd serves its repositories as one)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let with = |v: &str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", v.parse().expect("ascii"));
            grpc_timeout(&m)
        };
        assert_eq!(with("5S"), Some(Duration::from_secs(5)));
        assert_eq!(with("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(with("3M"), Some(Duration::from_secs(180)));
        assert_eq!(with("250m"), Some(Duration::from_millis(250)));
        assert_eq!(with("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(with("0n"), Some(Duration::ZERO));
        for bad in ["", "S", "5", "5s", "123456789S", "-1S", "1.5S", "5 S"] {
            assert_eq!(with(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&MetadataMap::new()), None);
    }

    #[test]
    fn errors_map_to_codes() {
        let cases = [
            (ApiError::BadRequest("x".into()), Code::InvalidArgument),
            (ApiError::UnknownModel("m".into()), Code::NotFound),
            (
                ApiError::UnknownVersion {
                    model: "m".into(),
                    version: "2".into(),
                },
                Code::NotFound,
            ),
            (ApiError::PayloadTooLarge(10), Code::ResourceExhausted),
            (ApiError::ModelLoading("m".into()), Code::Unavailable),
            (
                ApiError::ModelFailed("m".into(), "x".into()),
                Code::Unavailable,
            ),
            (ApiError::Unavailable, Code::Unavailable),
            (
                ApiError::Overloaded {
                    model: "m".into(),
                    retry_after_secs: 1,
                },
                Code::ResourceExhausted,
            ),
            (ApiError::DeadlineExceeded, Code::DeadlineExceeded),
            (ApiError::Internal("x".into()), Code::Internal),
            (ApiError::MethodNotAllowed, Code::Unimplemented),
        ];
        for (e, code) in cases {
            let status = status_of(&e);
            assert_eq!(status.code(), code, "{e}");
            assert_eq!(status.message(), e.to_string());
        }
    }
}
