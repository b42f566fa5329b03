//! inferd's data plane: the model server behind `inferd serve`.
//!
//! It answers the Open Inference Protocol (V2) and KServe V1 over HTTP, V2
//! over gRPC ([`grpc`]), health and readiness probes, and Prometheus
//! metrics. A request is decoded (protocol crate), checked against the
//! model's metadata and run on the model's scheduler (queue, dynamic batcher
//! and instances, runtime crate), then encoded. [`app`] builds the
//! HTTP application from a state so tests can drive it without a socket;
//! [`Server`] binds, loads models, serves and drains on shutdown.

mod auth;
mod error;
pub mod grpc;
mod http_server;
mod inference;
pub mod metrics;
pub mod model_config;
pub mod registry;
pub mod repository;
mod routes;
pub mod stats;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use auth::Tokens;
pub use error::ApiError;
pub use inferd_runtime::{ModelFormat, OnnxBackend};
pub use metrics::Metrics;
pub use registry::{ModelSource, ModelState, Registry, RegistryError};
pub use repository::{ModelControl, Repository};

/// How long a client may leave a request body unfinished without sending
/// any of it, by default.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What `serve` needs to know besides the models.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Where to serve the gRPC API; `None`: no gRPC.
    pub grpc_addr: Option<SocketAddr>,
    /// Bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Longest wait for the next part of a request body; longer: 408.
    pub body_read_timeout: Duration,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// Queueing, batching and instance defaults for every model.
    pub serving: model_config::Defaults,
    /// Whether and how the served models may change while serving.
    pub model_control: ModelControl,
    /// With `explicit` model control: repository models to load at start
    /// (`*`: all of them). `--model` ones always load.
    pub load_models: Vec<String>,
    /// With `poll` model control: how often the repository is rescanned.
    pub poll_interval: Duration,
    /// Bearer tokens the data plane requires; empty: no authentication.
    pub tokens: Tokens,
    /// Which runtime runs ONNX models.
    pub onnx_backend: OnnxBackend,
    /// Serve HTTP and gRPC over TLS with this certificate and key.
    pub tls: Option<tls::TlsFiles>,
    /// Largest HTTP request head (request line and headers); larger: 431.
    pub max_header_bytes: usize,
    /// Most elements one input tensor may hold; more: 400.
    pub max_tensor_elements: usize,
    /// Most gRPC requests in flight on one connection (HTTP/2 streams).
    pub max_concurrent_streams: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: None,
            tls: None,
            max_header_bytes: 64 * 1024,
            max_tensor_elements: 64 * 1024 * 1024,
            max_concurrent_streams: 128,
            max_body_bytes: 64 * 1024 * 1024,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            drain_timeout: Duration::from_secs(30),
            serving: model_config::Defaults::default(),
            model_control: ModelControl::None,
            load_models: Vec::new(),
            poll_interval: Duration::from_secs(15),
            tokens: Tokens::default(),
            onnx_backend: OnnxBackend::default(),
        }
    }
}

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("gRPC server failed: {0}")]
    Grpc(#[source] tonic::transport::Error),
}

/// Everything a request handler can see.
#[derive(Debug)]
pub struct AppState {
    pub registry: Registry,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// Longest wait for the next part of a request body; longer: 408.
    pub body_read_timeout: Duration,
    /// Required bearer tokens (empty: none required).
    pub tokens: Tokens,
    /// Where models come from and how the served set may change.
    pub repository: Repository,
    /// Most elements one input tensor may hold.
    pub max_tensor_elements: usize,
    shutting_down: AtomicBool,
    started: AtomicBool,
}

impl AppState {
    pub fn new(registry: Registry, max_body_bytes: usize) -> AppState {
        AppState {
            registry,
            metrics: Metrics::new(),
            max_body_bytes,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            tokens: Tokens::default(),
            repository: Repository::new(
                ModelControl::None,
                Vec::new(),
                None,
                registry::LoadSettings::default(),
            ),
            max_tensor_elements: usize::MAX,
            shutting_down: AtomicBool::new(false),
            started: AtomicBool::new(false),
        }
    }

    /// Ready for traffic: the models of the start have loaded (or, when
    /// models may change later, have at least been tried) and no shutdown
    /// is under way. Models loaded later through the repository do not take
    /// readiness away while they load: the others keep serving.
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down() && self.started.load(Ordering::Acquire)
    }

    /// Marks the start's loading done.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Turns readiness off so load balancers stop sending new requests.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
}

/// The HTTP application: every route of the data plane.
pub fn app(state: Arc<AppState>) -> Router {
    routes::router(state)
}

/// A bound server whose models are found but not yet loaded.
#[derive(Debug)]
pub struct Server {
    state: Arc<AppState>,
    listener: TcpListener,
    grpc_listener: Option<TcpListener>,
    planned: Vec<registry::PlannedModel>,
    drain_timeout: Duration,
    load_settings: registry::LoadSettings,
    poll_interval: Duration,
    /// TLS for HTTP (ALPN http/1.1) and gRPC (ALPN h2), when configured.
    http_tls: Option<Arc<rustls::ServerConfig>>,
    grpc_tls: Option<Arc<rustls::ServerConfig>>,
    max_header_bytes: usize,
    max_concurrent_streams: u32,
}

impl Server {
    /// Finds the model files and binds the listener. Fails at once on a bad
    /// model path or a port in use; loading happens in [`Server::run`].
    pub async fn bind(
        config: &ServerConfig,
        sources: &[ModelSource],
        format: Option<ModelFormat>,
    ) -> Result<Server, ServerError> {
        let load_settings = registry::LoadSettings {
            runtime: inferd_runtime::LoadOptions {
                onnx_backend: config.onnx_backend.clone(),
            },
            serving: config.serving.clone(),
        };
        let repository = Repository::new(
            config.model_control,
            sources.to_vec(),
            format,
            load_settings.clone(),
        );
        let (planned, unplannable) = repository.plan_start(&config.load_models)?;
        let (http_tls, grpc_tls) = match &config.tls {
            None => (None, None),
            Some(files) => (
                Some(files.server_config(&[b"http/1.1"])?),
                Some(files.server_config(&[b"h2"])?),
            ),
        };
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let grpc_listener = match config.grpc_addr {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Bind { addr, source })?,
            ),
        };
        let mut state = AppState::new(Registry::with_planned(&planned), config.max_body_bytes);
        state.tokens = config.tokens.clone();
        state.body_read_timeout = config.body_read_timeout;
        state.max_tensor_elements = config.max_tensor_elements;
        state.repository = repository;
        for (name, why) in unplannable {
            tracing::warn!(model = %name, error = %why, "model cannot be served");
            state.registry.set(&name, ModelState::Failed(why));
        }
        let state = Arc::new(state);
        Ok(Server {
            state,
            listener,
            grpc_listener,
            planned,
            drain_timeout: config.drain_timeout,
            load_settings,
            poll_interval: config.poll_interval,
            http_tls,
            grpc_tls,
            max_header_bytes: config.max_header_bytes,
            max_concurrent_streams: config.max_concurrent_streams,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The gRPC listener's address; `None` when gRPC is off.
    pub fn grpc_local_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.grpc_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves or a model fails to load, then turns
    /// readiness off, stops accepting, lets in-flight requests finish (at
    /// most the drain timeout) and returns.
    ///
    /// Models load one after another on a blocking thread while the server
    /// already answers: health is live at once, ready when all are loaded.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            state,
            listener,
            grpc_listener,
            planned,
            drain_timeout,
            load_settings,
            poll_interval,
            http_tls,
            grpc_tls,
            max_header_bytes,
            max_concurrent_streams,
        } = self;
        let mode = state.repository.mode();
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<RegistryError>();
        let loader_state = state.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut loaded = Vec::new();
            for model in &planned {
                match registry::load_model_with(model, &loader_state.metrics, &load_settings) {
                    Ok(ready) => {
                        loader_state
                            .registry
                            .set(&model.name, ModelState::Ready(Arc::new(ready)));
                        loaded.push(model.name.clone());
                    }
                    Err(e) => {
                        loader_state
                            .registry
                            .set(&model.name, ModelState::Failed(e.to_string()));
                        if mode == ModelControl::None {
                            let _ = failed_tx.send(e);
                            return;
                        }
                        // The set of models can change later: serve the others.
                        tracing::error!(error = %e, "a model failed to load; serving the others");
                    }
                }
            }
            loader_state.repository.remember_loaded(&loaded);
            loader_state.mark_started();
            tracing::info!(models = loaded.len(), "models loaded; ready");
            if mode == ModelControl::Poll {
                Repository::spawn_poller_on(handle, loader_state, poll_interval);
            }
        });

        let stop = Arc::new(Notify::new());
        let listener = match http_tls {
            None => http_server::HttpListener::Plain(listener),
            Some(config) => http_server::HttpListener::Tls(
                tls::TlsListener::new(listener, config).map_err(ServerError::Serve)?,
            ),
        };
        let server = http_server::serve(
            listener,
            app(state.clone()),
            state.clone(),
            max_header_bytes,
            {
                let stop = stop.clone();
                async move { stop.notified().await }
            },
        );
        tokio::pin!(server);
        let (grpc_stop, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
        let grpc_options = grpc::Options {
            tls: grpc_tls,
            max_concurrent_streams,
        };
        let grpc_server = serve_grpc(state.clone(), grpc_listener, grpc_options, async {
            let _ = grpc_stopped.await;
        });
        tokio::pin!(grpc_server);
        let mut load_failure = None;
        tokio::select! {
            () = &mut server => return Ok(()),
            result = &mut grpc_server => return result,
            () = shutdown => tracing::info!("shutdown requested; draining"),
            Ok(e) = failed_rx => {
                tracing::error!(error = %e, "a model failed to load; stopping");
                load_failure = Some(e);
            }
        }
        state.begin_shutdown();
        stop.notify_one();
        let _ = grpc_stop.send(());
        // One drain timeout for both protocols.
        let both = async {
            let ((), grpc) = tokio::join!(server, grpc_server);
            grpc
        };
        match tokio::time::timeout(drain_timeout, both).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                seconds = drain_timeout.as_secs_f64(),
                "drain timed out; closing remaining connections"
            ),
        }
        match load_failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// Serves gRPC until `shutdown`, then drains; without a listener, waits for
/// `shutdown` alone.
async fn serve_grpc(
    state: Arc<AppState>,
    listener: Option<TcpListener>,
    options: grpc::Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    match listener {
        Some(listener) => grpc::serve(state, listener, options, shutdown)
            .await
            .map_err(ServerError::Grpc),
        None => {
            shutdown.await;
            Ok(())
        }
    }
}
