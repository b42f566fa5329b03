//! The reconcile task of the local backend: the control core's plan,
//! applied to replicas (child processes) and routes.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use inferd_api::{InferenceService, InferenceServiceStatus, ModelState};
use inferd_router::{ReplicaAddr, RouteTable, Router};
use inferd_storage::{FetchRequest, Retain, Storage};
use tokio::sync::{Notify, mpsc, oneshot};

use super::gpu::Gpus;
use super::limits::ReplicaLimits;
use super::store::StateDir;
use super::supervisor::{Phase, ReplicaHandle, ReplicaSpec};
use super::view::{self, EventView};
use super::{Applied, LocalConfig, LocalError, ServiceView};
use crate::autoscaler::AutoscalerConfig;
use crate::scaling::{Load, RevisionScaler};
use crate::service::{
    ApplyOutcome, RevisionObserved, ServiceRecord, TrafficPlan, autoscaler_config, plan_traffic,
    service_route,
};

/// Requests to the reconcile task.
pub enum Command {
    Apply {
        services: Vec<InferenceService>,
        reply: oneshot::Sender<Result<Vec<Applied>, LocalError>>,
    },
    Delete {
        name: String,
        reply: oneshot::Sender<Result<(), LocalError>>,
    },
    List {
        reply: oneshot::Sender<Vec<ServiceView>>,
    },
    Get {
        name: String,
        reply: oneshot::Sender<Option<ServiceView>>,
    },
    /// Log files of a service (optionally one revision), oldest replica first.
    Logs {
        name: String,
        revision: Option<u32>,
        reply: oneshot::Sender<Result<Vec<(String, PathBuf)>, LocalError>>,
    },
}

/// Most events kept per service.
const EVENTS_KEPT: usize = 100;

/// A model download's result.
type Fetched = (String, String, Result<PathBuf, String>);

pub(super) struct Controller {
    config: LocalConfig,
    state: StateDir,
    router: Arc<Router>,
    storage: Arc<Storage>,
    gpus: Gpus,
    url: String,
    services: BTreeMap<String, ServiceState>,
    /// Poked whenever a replica's status changes.
    changed: Arc<Notify>,
    fetched_tx: mpsc::UnboundedSender<Fetched>,
    fetched_rx: Option<mpsc::UnboundedReceiver<Fetched>>,
    started: Instant,
    next_replica: u64,
    /// Deleted services whose replicas are stopping: their logs go once
    /// every one has stopped.
    deleted: Vec<(String, Vec<tokio::task::JoinHandle<()>>)>,
    /// The model cache may hold what no revision needs (set at start and
    /// when revisions or services go).
    gc_pending: bool,
    /// Log folders of services deleted while no control plane ran are
    /// still to be removed (once, at start).
    sweep_logs: bool,
}

pub(super) struct ServiceState {
    pub(super) record: ServiceRecord,
    pub(super) autoscaling: AutoscalerConfig,
    pub(super) revisions: BTreeMap<String, RevisionRun>,
    pub(super) plan: Option<TrafficPlan>,
    pub(super) events: VecDeque<EventView>,
    pub(super) status: InferenceServiceStatus,
}

impl ServiceState {
    fn new(record: ServiceRecord, autoscaling: AutoscalerConfig) -> ServiceState {
        ServiceState {
            record,
            autoscaling,
            revisions: BTreeMap::new(),
            plan: None,
            events: VecDeque::new(),
            status: InferenceServiceStatus::default(),
        }
    }
}

pub(super) enum ModelFetch {
    Fetching,
    Ready(PathBuf),
    Failed(String),
}

pub(super) struct RevisionRun {
    pub(super) model: ModelFetch,
    pub(super) replicas: Vec<ReplicaSlot>,
    pub(super) scaler: Option<RevisionScaler>,
    pub(super) ever_ready: bool,
    pub(super) desired: u32,
    pub(super) pending: Option<String>,
}

pub(super) struct ReplicaSlot {
    pub(super) handle: ReplicaHandle,
    pub(super) gpus: Vec<String>,
    pub(super) log: PathBuf,
    pub(super) last_phase: Phase,
    pub(super) last_restarts: u32,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Controller {
    pub(super) fn new(
        config: LocalConfig,
        state: StateDir,
        router: Arc<Router>,
        storage: Storage,
        gpus: Gpus,
        url: String,
    ) -> Controller {
        let (fetched_tx, fetched_rx) = mpsc::unbounded_channel();
        Controller {
            config,
            state,
            router,
            storage: Arc::new(storage),
            gpus,
            url,
            services: BTreeMap::new(),
            changed: Arc::new(Notify::new()),
            fetched_tx,
            fetched_rx: Some(fetched_rx),
            started: Instant::now(),
            next_replica: 0,
            deleted: Vec::new(),
            gc_pending: true,
            sweep_logs: true,
        }
    }

    /// Takes back a stored service.
    pub(super) fn resume(&mut self, record: ServiceRecord) -> Result<(), LocalError> {
        let autoscaling = autoscaler_config(&record.spec, &self.config.autoscaler)
            .map_err(|e| LocalError::Invalid(format!("{}: {e}", record.name())))?;
        let name = record.name().to_owned();
        let mut service = ServiceState::new(record, autoscaling);
        push_event(
            &mut service.events,
            "Resumed",
            "resumed from the state directory",
        );
        self.services.insert(name, service);
        Ok(())
    }

    pub(super) async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut activations: mpsc::UnboundedReceiver<(String, String)>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        let Some(mut fetched) = self.fetched_rx.take() else {
            return;
        };
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let changed = Arc::clone(&self.changed);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                _ = tick.tick() => self.reconcile(true),
                Some(activation) = activations.recv() => {
                    self.activate(&activation.0, &activation.1);
                    self.reconcile(false);
                }
                Some(done) = fetched.recv() => {
                    self.model_fetched(done);
                    self.reconcile(false);
                }
                () = changed.notified() => self.reconcile(false),
            }
        }
        self.stop_all().await;
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Apply { services, reply } => {
                let result = self.apply(services);
                self.reconcile(false);
                let _ = reply.send(result);
            }
            Command::Delete { name, reply } => {
                let result = self.delete(&name);
                self.reconcile(false);
                let _ = reply.send(result);
            }
            Command::List { reply } => {
                let views = self.services.values().map(view::service_view).collect();
                let _ = reply.send(views);
            }
            Command::Get { name, reply } => {
                let view = self.services.get(&name).map(view::service_view);
                let _ = reply.send(view);
            }
            Command::Logs {
                name,
                revision,
                reply,
            } => {
                let result = match self.services.get(&name) {
                    None => Err(LocalError::NotFound(name)),
                    Some(s) => Ok(view::log_files(s, &self.state, revision)),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Validates every service first; then stores and applies them.
    fn apply(&mut self, services: Vec<InferenceService>) -> Result<Vec<Applied>, LocalError> {
        let mut checked = Vec::with_capacity(services.len());
        let mut names = std::collections::BTreeSet::new();
        for (i, isvc) in services.into_iter().enumerate() {
            let doc = i + 1;
            isvc.validate()
                .map_err(|e| LocalError::Invalid(format!("document {doc}: {e}")))?;
            let name = isvc.metadata.name.clone();
            if !names.insert(name.clone()) {
                return Err(LocalError::Invalid(format!(
                    "document {doc}: metadata.name: {name} appears twice"
                )));
            }
            let uri = isvc.spec.predictor.model.storage_uri.as_str();
            let local = match uri.split_once("://") {
                Some(("file", rest)) => Some(rest),
                Some(_) => None,
                None => Some(uri),
            };
            if local.is_some_and(|p| !std::path::Path::new(p).is_absolute()) {
                return Err(LocalError::Invalid(format!(
                    "document {doc}: spec.predictor.model.storageUri: a relative path must be resolved by the client"
                )));
            }
            let autoscaling = autoscaler_config(&isvc, &self.config.autoscaler)
                .map_err(|e| LocalError::Invalid(format!("document {doc}: {e}")))?;
            let gpus = isvc
                .spec
                .predictor
                .resources
                .as_ref()
                .and_then(|r| r.gpu)
                .unwrap_or(0);
            if gpus as usize > self.gpus.total() {
                return Err(LocalError::Invalid(format!(
                    "document {doc}: spec.predictor.resources.gpu: {gpus} GPU(s) per replica, but this machine has {} to give",
                    self.gpus.total()
                )));
            }
            if let Some(max) = isvc.spec.predictor.model.max_size_bytes
                && max > self.storage.max_bytes()
            {
                return Err(LocalError::Invalid(format!(
                    "document {doc}: spec.predictor.model.maxSizeBytes: {max} is over this control plane's limit of {} bytes (inferd up --max-model-bytes)",
                    self.storage.max_bytes()
                )));
            }
            checked.push((isvc, autoscaling));
        }
        let now = now_secs();
        let mut results = Vec::with_capacity(checked.len());
        for (isvc, autoscaling) in checked {
            let name = isvc.metadata.name.clone();
            let outcome = match self.services.get_mut(&name) {
                Some(service) => {
                    let outcome = service.record.apply(isvc, now);
                    service.autoscaling = autoscaling;
                    match &outcome {
                        ApplyOutcome::NewRevision { revision } => push_event(
                            &mut service.events,
                            "RevisionCreated",
                            format!("revision {revision} created"),
                        ),
                        ApplyOutcome::Configured => push_event(
                            &mut service.events,
                            "Configured",
                            "traffic or scaling settings changed; no new revision",
                        ),
                        _ => {}
                    }
                    if outcome != ApplyOutcome::Unchanged {
                        // Scaling settings apply to the running revisions.
                        for revision in service.revisions.values_mut() {
                            revision.scaler = None;
                        }
                    }
                    self.state.save_service(&service.record)?;
                    outcome
                }
                None => {
                    let (record, outcome) = ServiceRecord::create(isvc, now);
                    self.state.save_service(&record)?;
                    let mut service = ServiceState::new(record, autoscaling);
                    if let ApplyOutcome::Created { revision } = &outcome {
                        push_event(
                            &mut service.events,
                            "Created",
                            format!("service created with revision {revision}"),
                        );
                    }
                    self.services.insert(name.clone(), service);
                    outcome
                }
            };
            results.push(Applied { name, outcome });
        }
        Ok(results)
    }

    fn delete(&mut self, name: &str) -> Result<(), LocalError> {
        let Some(service) = self.services.remove(name) else {
            return Err(LocalError::NotFound(name.to_owned()));
        };
        self.state.remove_service(name)?;
        // Out of the routes first, then drained.
        self.publish_routes();
        let mut stopping = Vec::new();
        for (_, revision) in service.revisions {
            for slot in revision.replicas {
                stopping.push(self.stop_later(slot));
            }
        }
        // Its replicas write their logs until they stop; then the logs go.
        self.deleted.push((name.to_owned(), stopping));
        self.gc_pending = true;
        Ok(())
    }

    /// What the model cache must keep: every stored revision's model.
    fn retained(&self) -> Retain {
        let mut keep = Retain::default();
        for service in self.services.values() {
            for revision in &service.record.revisions {
                let model = &revision.template.model;
                keep.keep(&model.storage_uri, model.sha256.as_deref());
            }
        }
        keep
    }

    /// Removes what deleted services and forgotten revisions left: logs of
    /// services whose replicas have all stopped, and model cache entries no
    /// stored revision refers to (once no download is under way).
    fn collect_garbage(&mut self) {
        let (stopped, stopping): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deleted)
            .into_iter()
            .partition(|(_, handles)| handles.iter().all(tokio::task::JoinHandle::is_finished));
        self.deleted = stopping;
        let mut gone: Vec<String> = stopped.into_iter().map(|(name, _)| name).collect();
        if std::mem::take(&mut self.sweep_logs) {
            match std::fs::read_dir(self.state.root().join("logs")) {
                Ok(dir) => gone.extend(
                    dir.filter_map(Result::ok)
                        .filter_map(|e| e.file_name().to_str().map(str::to_owned)),
                ),
                Err(e) => tracing::warn!(error = %e, "cannot list the log folders"),
            }
        }
        for name in gone {
            // Applied again meanwhile: its logs are the new service's.
            if self.services.contains_key(&name)
                || self.state.has_service(&name)
                || self.deleted.iter().any(|(n, _)| *n == name)
            {
                continue;
            }
            let dir = self.state.service_logs(&name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(service = %name, "logs of the deleted service removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove the logs");
                }
            }
        }
        if self.gc_pending {
            match self.storage.try_collect_garbage(&self.retained()) {
                // A download is under way: a later pass.
                None => {}
                Some(result) => {
                    self.gc_pending = false;
                    match result {
                        Ok(c) if c.entries > 0 => tracing::info!(
                            entries = c.entries,
                            bytes = c.bytes,
                            "unreferenced models removed from the cache"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot clean the model cache"),
                    }
                }
            }
        }
    }

    /// The router holds a request for a revision at zero replicas: scale it
    /// from zero now rather than at the next tick.
    fn activate(&mut self, service: &str, revision: &str) {
        let Some(s) = self.services.get_mut(service) else {
            return;
        };
        let Some(r) = s.revisions.get_mut(revision) else {
            return;
        };
        // The held request is demand the autoscaler must see (Knative's
        // activator reports it), or it would scale the revision back to zero
        // as soon as the request is served.
        let now = self.started.elapsed();
        if let Some(a) = &mut r.scaler {
            a.activate(now);
        }
        if r.desired == 0 {
            r.desired = s.autoscaling.activation_scale.max(1);
            push_event(
                &mut s.events,
                "Activating",
                format!("request held for {revision}; scaling from zero"),
            );
        }
    }

    fn model_fetched(&mut self, (service, revision, result): Fetched) {
        let Some(s) = self.services.get_mut(&service) else {
            return;
        };
        let Some(r) = s.revisions.get_mut(&revision) else {
            return;
        };
        match result {
            Ok(path) => {
                push_event(
                    &mut s.events,
                    "ModelFetched",
                    format!("{revision}: model at {}", path.display()),
                );
                r.model = ModelFetch::Ready(path);
            }
            Err(e) => {
                push_event(
                    &mut s.events,
                    "ModelFetchFailed",
                    format!("{revision}: {e}"),
                );
                r.model = ModelFetch::Failed(e);
            }
        }
    }

    /// One pass over every service; `autoscale`: also feed and ask the
    /// autoscalers (once per tick).
    pub(super) fn reconcile(&mut self, autoscale: bool) {
        let now = self.started.elapsed();
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            self.reconcile_service(&name, now, autoscale);
        }
        self.publish_routes();
        self.collect_garbage();
    }

    fn reconcile_service(&mut self, name: &str, now: Duration, autoscale: bool) {
        let Some(mut service) = self.services.remove(name) else {
            return;
        };
        // New revisions: fetch their models.
        for revision in &service.record.revisions {
            if service.revisions.contains_key(&revision.name) {
                continue;
            }
            let request_uri = revision.template.model.storage_uri.clone();
            let sha = revision.template.model.sha256.clone();
            let max_bytes = revision.template.model.max_size_bytes;
            let storage = Arc::clone(&self.storage);
            let tx = self.fetched_tx.clone();
            let (svc, rev) = (name.to_owned(), revision.name.clone());
            tokio::spawn(async move {
                let base = PathBuf::from("/");
                let request = FetchRequest {
                    uri: &request_uri,
                    base: &base,
                    sha256: sha.as_deref(),
                    max_bytes,
                };
                let result = storage
                    .fetch(&request)
                    .await
                    .map(|f| f.path)
                    .map_err(|e| error_chain(&e));
                let _ = tx.send((svc, rev, result));
            });
            service.revisions.insert(
                revision.name.clone(),
                RevisionRun {
                    model: ModelFetch::Fetching,
                    replicas: Vec::new(),
                    scaler: None,
                    ever_ready: revision.ever_ready,
                    desired: 0,
                    pending: None,
                },
            );
        }
        // Revisions the record forgot.
        let known: Vec<String> = service
            .record
            .revisions
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let forgotten: Vec<String> = service
            .revisions
            .keys()
            .filter(|k| !known.contains(k))
            .cloned()
            .collect();
        for k in forgotten {
            // Its model may be left in the cache for no one.
            self.gc_pending = true;
            if let Some(r) = service.revisions.remove(&k) {
                for slot in r.replicas {
                    self.retire(slot);
                }
            }
        }

        // Observe.
        let mut observed = BTreeMap::new();
        for (rev_name, r) in &mut service.revisions {
            // One snapshot of each replica per pass, so the events, the
            // ready count and the failure agree.
            let statuses: Vec<_> = r.replicas.iter().map(|s| s.handle.status()).collect();
            for (slot, status) in r.replicas.iter_mut().zip(&statuses) {
                if status.phase != slot.last_phase || status.restarts != slot.last_restarts {
                    let message = match status.phase {
                        Phase::Ready => format!(
                            "replica {} ready on {}",
                            slot.handle.id(),
                            status.http_addr.map(|a| a.to_string()).unwrap_or_default()
                        ),
                        _ if status.restarts != slot.last_restarts => format!(
                            "replica {} restarted ({}){}",
                            slot.handle.id(),
                            status.last_exit.clone().unwrap_or_default(),
                            status
                                .message
                                .as_ref()
                                .map(|m| format!(": {m}"))
                                .unwrap_or_default()
                        ),
                        phase => format!("replica {} {}", slot.handle.id(), phase.as_str()),
                    };
                    let reason = match status.phase {
                        Phase::CrashLoop => "CrashLoopBackOff",
                        Phase::Ready => "ReplicaReady",
                        _ if status.restarts != slot.last_restarts => "ReplicaRestarted",
                        _ => "ReplicaPhase",
                    };
                    push_event(&mut service.events, reason, message);
                    slot.last_phase = status.phase;
                    slot.last_restarts = status.restarts;
                }
            }
            let ready = statuses.iter().filter(|s| s.phase == Phase::Ready).count() as u32;
            if ready > 0 {
                r.ever_ready = true;
            }
            let failed = if r.ever_ready {
                None
            } else {
                match &r.model {
                    ModelFetch::Failed(e) => Some(format!("model: {e}")),
                    _ => statuses
                        .iter()
                        .find(|s| s.phase == Phase::CrashLoop)
                        .map(|s| {
                            format!(
                                "replicas crash before ready ({}): {}",
                                s.last_exit.as_deref().unwrap_or_default(),
                                s.message.as_deref().unwrap_or_default()
                            )
                        }),
                }
            };
            observed.insert(
                rev_name.clone(),
                RevisionObserved {
                    ready_replicas: ready,
                    ever_ready: r.ever_ready,
                    failed,
                },
            );
        }

        // Plan traffic.
        // What the pass decided is stored before it is acted on, so a
        // restart plans the same traffic.
        let became_ready = service.record.record_ready(&observed);
        let plan = plan_traffic(&service.record, &observed);
        let rolled_out = service.record.record_rollout(&plan);
        if (became_ready || rolled_out)
            && let Err(e) = self.state.save_service(&service.record)
        {
            tracing::error!(service = %name, error = %e, "cannot store the service");
        }
        let shares = |p: &TrafficPlan| {
            p.revisions
                .iter()
                .map(|r| format!("{} {}%", r.name, r.percent))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if service.plan.as_ref().map(shares) != Some(shares(&plan)) {
            push_event(&mut service.events, "Traffic", shares(&plan));
        }

        // Desired replicas per revision.
        let concurrency = self.router.concurrency(name).unwrap_or_default();
        for (rev_name, r) in &mut service.revisions {
            let in_plan = plan.contains(rev_name);
            let model_ready = matches!(r.model, ModelFetch::Ready(_));
            let before = r.desired;
            if !in_plan || !model_ready {
                r.desired = 0;
                r.scaler = None;
            } else if !r.ever_ready {
                // Starting (or crash looping, restarting with back-off).
                r.desired = service.autoscaling.initial_scale.max(1);
            } else {
                let scaler = match &mut r.scaler {
                    Some(a) => a,
                    None => {
                        let Ok(a) = RevisionScaler::new(service.autoscaling.clone()) else {
                            continue;
                        };
                        r.scaler.insert(a)
                    }
                };
                scaler.set_reachable(plan.percent(rev_name) > 0);
                if autoscale {
                    let load = concurrency
                        .iter()
                        .find(|c| &c.revision == rev_name)
                        .map(|c| Load {
                            in_flight: c.in_flight,
                            held: c.held,
                            requests_total: c.requests_total,
                        });
                    let ready = observed.get(rev_name).map_or(0, |o| o.ready_replicas);
                    r.desired = scaler.tick(now, self.config.tick, load.as_ref(), ready);
                } else if r.desired == 0 && r.replicas.is_empty() && scaler.decision().is_none() {
                    r.desired = service.autoscaling.initial_scale.max(1);
                }
            }
            if r.desired != before {
                push_event(
                    &mut service.events,
                    "Scaled",
                    format!(
                        "{rev_name}: {before} -> {} replica(s){}",
                        r.desired,
                        r.scaler
                            .as_ref()
                            .and_then(RevisionScaler::decision)
                            .map(|d| format!(
                                " ({}){}",
                                d.reason,
                                if d.panic { " [panic]" } else { "" }
                            ))
                            .unwrap_or_default()
                    ),
                );
            }
        }

        // Apply the scale.
        let rev_names: Vec<String> = service.revisions.keys().cloned().collect();
        for rev_name in rev_names {
            self.scale_revision(&mut service, &rev_name);
        }
        service.status = view::status(&service, &plan, &self.url);
        service.plan = Some(plan);
        self.services.insert(name.to_owned(), service);
    }

    fn scale_revision(&mut self, service: &mut ServiceState, rev_name: &str) {
        let Some(template) = service
            .record
            .revision(rev_name)
            .map(|r| r.template.clone())
        else {
            return;
        };
        let service_name = service.record.name().to_owned();
        let Some(r) = service.revisions.get_mut(rev_name) else {
            return;
        };
        let desired = r.desired as usize;
        // Too many: the ones not ready go first, then the newest.
        while r.replicas.len() > desired {
            let index = r
                .replicas
                .iter()
                .rposition(|s| s.handle.status().phase != Phase::Ready)
                .unwrap_or(r.replicas.len() - 1);
            let slot = r.replicas.remove(index);
            push_event(
                &mut service.events,
                "ReplicaStopping",
                format!("replica {} draining", slot.handle.id()),
            );
            self.retire(slot);
        }
        r.pending = None;
        let ModelFetch::Ready(model_path) = &r.model else {
            return;
        };
        let model_path = model_path.clone();
        while r.replicas.len() < desired {
            self.next_replica += 1;
            let id = format!("{rev_name}-{}", self.next_replica);
            let gpus = match self.gpus.allocate(template.gpus(), &id) {
                Some(g) => g,
                None => {
                    let reason = format!(
                        "waiting for {} GPU(s) per replica: {} of {} free",
                        template.gpus(),
                        self.gpus.free(),
                        self.gpus.total()
                    );
                    if r.pending.as_deref() != Some(reason.as_str()) {
                        push_event(&mut service.events, "Pending", reason.clone());
                    }
                    r.pending = Some(reason);
                    break;
                }
            };
            let log = self.state.log_path(&service_name, rev_name, &id);
            if let Some(dir) = log.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let spec = replica_spec(
                &id,
                &self.config,
                &service_name,
                &model_path,
                &template,
                &gpus,
                &log,
            );
            let handle = ReplicaHandle::spawn(spec, self.config.supervisor.clone());
            // Wake the loop on every status change of this replica.
            let mut watch = handle.watch();
            let changed = Arc::clone(&self.changed);
            tokio::spawn(async move {
                while watch.changed().await.is_ok() {
                    changed.notify_one();
                }
            });
            push_event(
                &mut service.events,
                "ReplicaStarting",
                format!(
                    "replica {id} starting{}",
                    if gpus.is_empty() {
                        String::new()
                    } else {
                        format!(" on GPU(s) {}", gpus.join(","))
                    }
                ),
            );
            r.replicas.push(ReplicaSlot {
                handle,
                gpus,
                log,
                last_phase: Phase::Starting,
                last_restarts: 0,
            });
        }
    }

    /// Takes a replica out of service: it is already out of the routes (or
    /// leaves them in this pass); after the drain grace it is told to drain
    /// and stop, and its GPUs are freed.
    fn retire(&mut self, slot: ReplicaSlot) {
        let _stopping = self.stop_later(slot);
    }

    /// [`Controller::retire`], returning the task that ends once the
    /// replica has stopped.
    fn stop_later(&mut self, slot: ReplicaSlot) -> tokio::task::JoinHandle<()> {
        self.gpus.release(slot.handle.id());
        let grace = self.config.drain_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            slot.handle.stop().await;
        })
    }

    /// The route table from every service's plan and ready replicas.
    fn publish_routes(&self) {
        let mut table = RouteTable::new();
        for (name, service) in &self.services {
            let Some(plan) = &service.plan else {
                continue;
            };
            let route = service_route(
                plan,
                service.record.spec.spec.predictor.timeout(),
                |revision| {
                    service
                        .record
                        .revision(revision)
                        .and_then(|r| r.template.container_concurrency)
                },
                |revision| {
                    service
                        .revisions
                        .get(revision)
                        .map(|r| {
                            r.replicas
                                .iter()
                                .map(|s| s.handle.status())
                                .filter(|s| s.phase == Phase::Ready)
                                .filter_map(|s| {
                                    s.http_addr.map(|http| ReplicaAddr {
                                        http,
                                        grpc: s.grpc_addr,
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                },
            );
            table = table.with_service(name.clone(), route);
        }
        if let Err(e) = self.router.replace_routes(&table) {
            tracing::error!(error = %e, "route table refused");
        }
    }

    /// Stops every replica, draining.
    async fn stop_all(&mut self) {
        self.router
            .replace_routes(&RouteTable::new())
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot clear the routes"));
        let mut stops = Vec::new();
        for (_, service) in std::mem::take(&mut self.services) {
            for (_, revision) in service.revisions {
                for slot in revision.replicas {
                    stops.push(tokio::spawn(slot.handle.stop()));
                }
            }
        }
        for stop in stops {
            let _ = stop.await;
        }
    }
}

/// An error and its causes, `outer: inner: ...`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn push_event(events: &mut VecDeque<EventView>, reason: &str, message: impl Into<String>) {
    let message = message.into();
    tracing::info!(reason, "{message}");
    events.push_back(EventView {
        time: now_secs(),
        reason: reason.to_owned(),
        message,
    });
    while events.len() > EVENTS_KEPT {
        events.pop_front();
    }
}

/// The `inferd serve` command line of one replica.
fn replica_spec(
    id: &str,
    config: &LocalConfig,
    service: &str,
    model_path: &std::path::Path,
    template: &crate::service::RevisionTemplate,
    gpus: &[String],
    log: &std::path::Path,
) -> ReplicaSpec {
    let mut args: Vec<OsString> = vec!["serve".into(), "--model".into()];
    let mut model = OsString::from(format!("{service}="));
    model.push(model_path.as_os_str());
    args.push(model);
    // The router's body limits, so that it refuses what a replica would.
    args.push("--max-body-bytes".into());
    args.push(config.router.max_body_bytes.to_string().into());
    args.push("--body-read-timeout".into());
    args.push(format!("{}ms", config.router.body_read_timeout.as_millis().max(1)).into());
    if let Some(b) = &template.batching {
        args.push("--max-batch-size".into());
        args.push(b.max_batch_size.to_string().into());
        if let Some(d) = b.max_queue_delay {
            args.push("--max-queue-delay".into());
            args.push(format!("{}us", d.0).into());
        }
        if let Some(q) = b.max_queue_size {
            args.push("--max-queue-size".into());
            args.push(q.to_string().into());
        }
    }
    if let Some(runtime) = &template.model.runtime
        && runtime.onnx_backend == Some(inferd_api::OnnxBackend::Ort)
    {
        args.push("--onnx-backend".into());
        args.push("ort".into());
    }
    let mut env: Vec<(OsString, OsString)> = template
        .env
        .iter()
        .map(|e| (e.name.clone().into(), e.value.clone().into()))
        .collect();
    if template.gpus() > 0 {
        env.push(("CUDA_VISIBLE_DEVICES".into(), gpus.join(",").into()));
    }
    ReplicaSpec {
        id: id.to_owned(),
        program: config.program.clone(),
        args,
        env,
        grpc: config.grpc_addr.is_some(),
        log_path: log.to_path_buf(),
        limits: ReplicaLimits::of(template.resources.as_ref()),
    }
}

/// What `get` shows of a model's state.
pub(super) fn model_state(r: &RevisionRun) -> (ModelState, Option<String>) {
    match &r.model {
        ModelFetch::Fetching => (ModelState::Pending, None),
        ModelFetch::Failed(e) => (ModelState::FailedToLoad, Some(e.clone())),
        ModelFetch::Ready(_) if r.ever_ready => (ModelState::Loaded, None),
        ModelFetch::Ready(_) => {
            let crash = r
                .replicas
                .iter()
                .map(|s| s.handle.status())
                .find(|s| s.phase == Phase::CrashLoop);
            match crash {
                Some(s) => (
                    ModelState::FailedToLoad,
                    Some(s.message.unwrap_or_else(|| "replicas crash".into())),
                ),
                None => (ModelState::Loading, r.pending.clone()),
            }
        }
    }
}
