//! The local backend: applies the control core's desired state on this
//! machine, as supervised `inferd serve` child processes behind the router.
//!
//! [`ControlPlane::start`] binds the router (HTTP and gRPC) and the admin
//! API, resumes the services stored in the state directory, and runs one
//! reconcile task. Everything that changes what runs goes through that
//! task: applies and deletes from the admin API, replica status changes
//! from the supervisors, finished model downloads, requests held by the
//! router for a revision at zero replicas, and the autoscaler's tick.

pub mod admin;
pub mod client;
mod controller;
pub mod gpu;
pub mod limits;
pub mod store;
pub mod supervisor;
mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use inferd_api::InferenceService;
use inferd_router::{RouteTable, Router, RouterConfig};
use inferd_storage::{Progress, Storage};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::autoscaler::AutoscalerConfig;
use crate::service::ApplyOutcome;
pub use controller::Command;
use store::{AdminInfo, StateDir, StoreError};
use supervisor::SupervisorConfig;
pub use view::{EventView, ReplicaView, RevisionView, ServiceView};

/// How the local control plane runs.
#[derive(Clone)]
pub struct LocalConfig {
    /// The state directory (see [`store`]).
    pub state_dir: PathBuf,
    /// The `inferd` binary replicas run (`inferd serve`).
    pub program: PathBuf,
    /// The router's HTTP address (port 0: any free one).
    pub router_addr: SocketAddr,
    /// The router's gRPC address; `None`: no gRPC entry point.
    pub grpc_addr: Option<SocketAddr>,
    /// The admin API's address (loopback; port 0: any free one).
    pub admin_addr: SocketAddr,
    /// GPUs replicas may be given; `None`: the ones the driver lists.
    pub gpus: Option<Vec<String>>,
    /// Knative's `config-autoscaler`: defaults every service starts from.
    pub autoscaler: AutoscalerConfig,
    /// How often the autoscaler decides (Knative: 2 s).
    pub tick: Duration,
    /// How long a replica taken out of the routes keeps running before it is
    /// told to drain (requests already routed to it arrive meanwhile).
    pub drain_grace: Duration,
    pub supervisor: SupervisorConfig,
    pub router: RouterConfig,
    /// Threads of the router's own runtime (1: a single-threaded one, where
    /// a request and its hop to the replica never change threads).
    pub router_threads: usize,
    /// Draws download progress (the binary passes a terminal bar).
    pub progress: Option<Arc<dyn Progress>>,
    /// Environment for storage credentials (over the process environment).
    pub storage_env: std::collections::BTreeMap<String, String>,
    /// How replicas' `resources.cpu` and `resources.memory` are enforced.
    pub replica_limits: limits::LimitMode,
    /// The most bytes one model's download may take; a service's
    /// `model.maxSizeBytes` may lower it, never raise it.
    pub max_model_bytes: u64,
}

impl LocalConfig {
    /// Defaults around a state directory and the binary to run.
    pub fn new(state_dir: impl Into<PathBuf>, program: impl Into<PathBuf>) -> LocalConfig {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        LocalConfig {
            state_dir: state_dir.into(),
            program: program.into(),
            router_addr: loopback(8080),
            grpc_addr: Some(loopback(8081)),
            admin_addr: loopback(0),
            gpus: None,
            autoscaler: AutoscalerConfig::default(),
            tick: Duration::from_secs(1),
            drain_grace: Duration::from_millis(500),
            supervisor: SupervisorConfig::default(),
            router: RouterConfig::default(),
            router_threads: 1,
            progress: None,
            storage_env: std::collections::BTreeMap::new(),
            replica_limits: limits::LimitMode::Auto,
            max_model_bytes: inferd_storage::DEFAULT_MAX_BYTES,
        }
    }
}

/// The router's own runtime, on a thread of its own that owns it until
/// told to end.
struct RouterRuntime {
    handle: tokio::runtime::Handle,
}

impl RouterRuntime {
    /// Starts it with `threads` threads (1: single-threaded); the returned
    /// sender ends it.
    fn start(threads: usize) -> Result<(RouterRuntime, oneshot::Sender<()>), LocalError> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("inferd-router".to_owned())
            .spawn(move || {
                let runtime = if threads <= 1 {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                } else {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(threads)
                        .thread_name("inferd-router")
                        .enable_all()
                        .build()
                };
                match runtime {
                    Ok(runtime) => {
                        let _ = handle_tx.send(Ok(runtime.handle().clone()));
                        runtime.block_on(async {
                            let _ = done_rx.await;
                        });
                    }
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| LocalError::Invalid(format!("cannot start the router's thread: {e}")))?;
        let handle = handle_rx
            .recv()
            .map_err(|_| LocalError::Invalid("the router's runtime did not start".to_owned()))?
            .map_err(|e| LocalError::Invalid(format!("cannot start the router's runtime: {e}")))?;
        Ok((RouterRuntime { handle }, done_tx))
    }

    /// Runs `future` on the router's runtime.
    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(future)
    }
}

/// Why the control plane could not start or refused a request.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "a control plane already runs on {state_dir} (pid {pid}, admin {admin_url}); use `inferd apply`"
    )]
    AlreadyRunning {
        state_dir: PathBuf,
        pid: u32,
        admin_url: String,
    },
    /// A spec refused whole; nothing changed.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Limits(#[from] limits::CgroupError),
    #[error("no InferenceService named {0}")]
    NotFound(String),
    #[error("the control plane has stopped")]
    Stopped,
}

/// What one document of an apply did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub name: String,
    #[serde(flatten)]
    pub outcome: ApplyOutcome,
}

/// The running local control plane.
pub struct ControlPlane {
    commands: mpsc::Sender<Command>,
    router_addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    state: StateDir,
    stopped: watch::Receiver<bool>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ControlPlane {
    /// Binds, resumes stored services and starts reconciling.
    pub async fn start(config: LocalConfig) -> Result<ControlPlane, LocalError> {
        let state = StateDir::open(&config.state_dir)?;
        if let Some(info) = state.read_admin()
            && info.pid != std::process::id()
        {
            return Err(LocalError::AlreadyRunning {
                state_dir: config.state_dir.clone(),
                pid: info.pid,
                admin_url: info.admin_url,
            });
        }
        let token = state.token()?;
        let stored = state.load_services()?;
        // How replicas' CPU and memory are enforced, chosen once.
        let enforcer = Arc::new(limits::Enforcer::for_this_process(config.replica_limits)?);
        tracing::info!(enforcer = %enforcer, "replica resource limits");
        let mut config = config;
        config.supervisor.enforcer = Arc::clone(&enforcer);
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| LocalError::Bind { addr, source })
        };
        let router_listener = bind(config.router_addr).await?;
        let grpc_listener = match config.grpc_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let admin_listener = bind(config.admin_addr).await?;
        let local = |l: &TcpListener, addr: SocketAddr| l.local_addr().unwrap_or(addr);
        let router_addr = local(&router_listener, config.router_addr);
        let grpc_addr = grpc_listener
            .as_ref()
            .map(|l| local(l, config.grpc_addr.unwrap_or(config.router_addr)));
        let admin_addr = local(&admin_listener, config.admin_addr);

        let router = Arc::new(
            Router::new(&RouteTable::new(), &config.router)
                .map_err(|e| LocalError::Invalid(e.to_string()))?,
        );
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let (activations_tx, activations_rx) = mpsc::unbounded_channel();
        router.set_activation_hook(Arc::new(move |service: &str, revision: &str| {
            let _ = activations_tx.send((service.to_owned(), revision.to_owned()));
        }));
        let mut storage = Storage::new(state.cache_dir())
            .with_env(config.storage_env.clone())
            .with_max_bytes(config.max_model_bytes);
        if let Some(p) = &config.progress {
            storage = storage.with_progress(Arc::clone(p));
        }
        let gpus = match &config.gpus {
            Some(list) => gpu::Gpus::new(list.clone()),
            None => gpu::Gpus::detect(),
        };
        let url = format!("http://{router_addr}");
        let mut controller = controller::Controller::new(
            config.clone(),
            state.clone(),
            Arc::clone(&router),
            storage,
            gpus,
            url.clone(),
        );
        let mut refused = Vec::new();
        for record in stored {
            if let Err(e) = controller.resume(record) {
                refused.push(e);
            }
        }
        for e in &refused {
            tracing::error!(error = %e, "a stored service could not be resumed");
        }
        // Resumed services are routed before the router takes a request:
        // until their replicas are ready, requests wait rather than 404.
        controller.reconcile(false);

        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let (serving_tx, serving_rx) = watch::channel(false);
        // The router runs on a runtime of its own, so that the control
        // plane's work never delays a request, and (with one thread) a
        // request, its hop to the replica and the answer stay on one thread.
        let (router_runtime, router_done) = RouterRuntime::start(config.router_threads)?;
        // Listeners move to the router's runtime (its reactor watches them).
        let to_std = |l: TcpListener, addr: SocketAddr| {
            l.into_std()
                .map_err(|source| LocalError::Bind { addr, source })
        };
        let http_listener = to_std(router_listener, router_addr)?;
        let grpc_listener = match (grpc_listener, grpc_addr) {
            (Some(l), Some(addr)) => Some(to_std(l, addr)?),
            _ => None,
        };
        let http_router = Arc::clone(&router);
        let mut http_stop = serving_rx.clone();
        let http = router_runtime.spawn(async move {
            match TcpListener::from_std(http_listener) {
                Ok(listener) => {
                    inferd_router::serve(listener, http_router, async move {
                        let _ = http_stop.wait_for(|stop| *stop).await;
                    })
                    .await;
                }
                Err(e) => tracing::error!(error = %e, "the router cannot listen"),
            }
        });
        let grpc = grpc_listener.map(|std_listener| {
            let router = Arc::clone(&router);
            let mut stop = serving_rx.clone();
            router_runtime.spawn(async move {
                match TcpListener::from_std(std_listener) {
                    Ok(listener) => {
                        inferd_router::serve_grpc(listener, router, async move {
                            let _ = stop.wait_for(|stop| *stop).await;
                        })
                        .await;
                    }
                    Err(e) => tracing::error!(error = %e, "the router cannot listen for gRPC"),
                }
            })
        });
        let admin_state = admin::AdminState::new(commands_tx.clone(), token);
        let mut admin_stop = serving_rx.clone();
        let admin = tokio::spawn(admin::serve(admin_listener, admin_state, async move {
            let _ = admin_stop.wait_for(|stop| *stop).await;
        }));
        state.write_admin(&AdminInfo {
            admin_url: format!("http://{admin_addr}"),
            router_url: url,
            grpc_addr: grpc_addr.map(|a| a.to_string()),
            pid: std::process::id(),
        })?;

        let task_state = state.clone();
        let task = tokio::spawn(async move {
            controller
                .run(commands_rx, activations_rx, shutdown_rx)
                .await;
            enforcer.close();
            // Replicas are stopped; now the front doors.
            let _ = serving_tx.send(true);
            let _ = http.await;
            if let Some(grpc) = grpc {
                let _ = grpc.await;
            }
            // The router's runtime ends with its listeners.
            let _ = router_done.send(());
            let _ = admin.await;
            task_state.clear_admin();
            let _ = stopped_tx.send(true);
        });
        Ok(ControlPlane {
            commands: commands_tx,
            router_addr,
            grpc_addr,
            admin_addr,
            state,
            stopped: stopped_rx,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    pub fn router_addr(&self) -> SocketAddr {
        self.router_addr
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn state_dir(&self) -> &StateDir {
        &self.state
    }

    /// Applies services (all or nothing: one bad document changes nothing).
    pub async fn apply(&self, services: Vec<InferenceService>) -> Result<Vec<Applied>, LocalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Apply { services, reply }).await?;
        rx.await.map_err(|_| LocalError::Stopped)?
    }

    pub async fn delete(&self, name: &str) -> Result<(), LocalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Delete {
            name: name.to_owned(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| LocalError::Stopped)?
    }

    pub async fn list(&self) -> Result<Vec<ServiceView>, LocalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::List { reply }).await?;
        rx.await.map_err(|_| LocalError::Stopped)
    }

    pub async fn get(&self, name: &str) -> Result<ServiceView, LocalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Get {
            name: name.to_owned(),
            reply,
        })
        .await?;
        rx.await
            .map_err(|_| LocalError::Stopped)?
            .ok_or_else(|| LocalError::NotFound(name.to_owned()))
    }

    async fn send(&self, command: Command) -> Result<(), LocalError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| LocalError::Stopped)
    }

    /// Resolves once the control plane has stopped (by [`ControlPlane::shutdown`]).
    pub async fn stopped(&self) {
        let mut rx = self.stopped.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Stops every replica (draining), then the router and the admin API.
    /// The stored services stay: the next start resumes them.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
