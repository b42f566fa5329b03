//! inferd's data plane: the model server behind `inferd serve`.
//!
//! It answers the Open Inference Protocol (V2) and KServe V1 over HTTP,
//! health and readiness probes, and Prometheus metrics. A request is decoded
//! (protocol crate), checked against the model's metadata and run on the
//! inference thread pool (runtime crate), then encoded. [`app`] builds the
//! HTTP application from a state so tests can drive it without a socket;
//! [`Server`] binds, loads models, serves and drains on shutdown.

mod auth;
mod error;
mod inference;
pub mod metrics;
pub mod registry;
mod routes;
pub mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use inferd_runtime::InferencePool;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use auth::Tokens;
pub use error::ApiError;
pub use inferd_runtime::ModelFormat;
pub use metrics::Metrics;
pub use registry::{ModelSource, ModelState, Registry, RegistryError};

/// What `serve` needs to know besides the models.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// Inference threads; 0 means one per core.
    pub inference_threads: usize,
    /// Bearer tokens the data plane requires; empty: no authentication.
    pub tokens: Tokens,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            inference_threads: 0,
            tokens: Tokens::default(),
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
    #[error("cannot start inference threads: {0}")]
    Threads(#[source] std::io::Error),
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Everything a request handler can see.
#[derive(Debug)]
pub struct AppState {
    pub registry: Registry,
    pub pool: InferencePool,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// Required bearer tokens (empty: none required).
    pub tokens: Tokens,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn new(registry: Registry, pool: InferencePool, max_body_bytes: usize) -> AppState {
        AppState {
            registry,
            pool,
            metrics: Metrics::new(),
            max_body_bytes,
            tokens: Tokens::default(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Ready for traffic: every model loaded and no shutdown under way.
    pub fn is_ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire) && self.registry.all_ready()
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
    planned: Vec<registry::PlannedModel>,
    drain_timeout: Duration,
}

impl Server {
    /// Finds the model files and binds the listener. Fails at once on a bad
    /// model path or a port in use; loading happens in [`Server::run`].
    pub async fn bind(
        config: &ServerConfig,
        sources: &[ModelSource],
        format: Option<ModelFormat>,
    ) -> Result<Server, ServerError> {
        let planned = registry::plan(sources, format)?;
        let pool = if config.inference_threads == 0 {
            InferencePool::sized_to_machine()
        } else {
            InferencePool::new(config.inference_threads)
        }
        .map_err(ServerError::Threads)?;
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let mut state = AppState::new(
            Registry::with_planned(&planned),
            pool,
            config.max_body_bytes,
        );
        state.tokens = config.tokens.clone();
        let state = Arc::new(state);
        Ok(Server {
            state,
            listener,
            planned,
            drain_timeout: config.drain_timeout,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
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
            planned,
            drain_timeout,
        } = self;
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<RegistryError>();
        let loader_state = state.clone();
        tokio::task::spawn_blocking(move || {
            for model in &planned {
                match registry::load_model(model, &loader_state.metrics) {
                    Ok(ready) => loader_state
                        .registry
                        .set(&model.name, ModelState::Ready(Arc::new(ready))),
                    Err(e) => {
                        loader_state
                            .registry
                            .set(&model.name, ModelState::Failed(e.to_string()));
                        let _ = failed_tx.send(e);
                        return;
                    }
                }
            }
            tracing::info!(models = planned.len(), "all models loaded; ready");
        });

        let stop = Arc::new(Notify::new());
        let server = axum::serve(listener, app(state.clone()))
            .with_graceful_shutdown({
                let stop = stop.clone();
                async move { stop.notified().await }
            })
            .into_future();
        tokio::pin!(server);
        let mut load_failure = None;
        tokio::select! {
            result = &mut server => return result.map_err(ServerError::Serve),
            () = shutdown => tracing::info!("shutdown requested; draining"),
            Ok(e) = failed_rx => {
                tracing::error!(error = %e, "a model failed to load; stopping");
                load_failure = Some(e);
            }
        }
        state.begin_shutdown();
        stop.notify_one();
        match tokio::time::timeout(drain_timeout, server).await {
            Ok(result) => result.map_err(ServerError::Serve)?,
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
