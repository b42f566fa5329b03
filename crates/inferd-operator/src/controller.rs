//! The controller: watches InferenceServices and the Deployments and
//! Services they own, and for each service performs what
//! [`reconcile::reconcile_scaled`](crate::reconcile::reconcile_scaled)
//! decided: server-side apply of the namespace's router and the desired
//! objects (field manager [`FIELD_MANAGER`], forced, so the operator owns
//! what it writes), deletion of the revisions beyond the retention and of
//! HPAs no longer wanted, the status through the status subresource, and
//! Kubernetes Events for what changed. A failed pass is retried with
//! exponential backoff per service; a successful one is looked at again
//! every [`RESYNC`] as a safety net, and at once when the autoscaler
//! ([`crate::autoscale`]) decides new replicas for one of its revisions.
//!
//! Each InferenceService carries the finalizer [`FINALIZER`]: the router of
//! a namespace serves all its services, so no single service owns it; when
//! the last service of a namespace is deleted, the cleanup deletes the
//! router, then the finalizer is removed. A service's own objects are
//! deleted by Kubernetes' garbage collector (owner references).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::autoscale::{self, Autoscaling};
use crate::leader::{self, LeaseConfig};
use crate::metrics::OperatorMetrics;
use crate::monitoring;
use crate::objects::{DesiredObject, LABEL_INFERENCE_SERVICE, ROUTER_NAME, router_objects};
use crate::reconcile::{Inputs, ObservedDeployment, ReconcileOptions, reconcile_scaled};
use crate::resource::InferenceServiceObject;
use crate::{Error, Result};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "inferd-operator";
/// The finalizer that lets the operator remove a namespace's router with
/// its last InferenceService.
pub const FINALIZER: &str = "serving.inferd.dev/router";
/// How often a service is reconciled with nothing changing.
pub const RESYNC: Duration = Duration::from_secs(300);
/// The first retry's delay; each further failure doubles it, up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// What the controller needs for every pass.
pub struct Context {
    client: Client,
    options: ReconcileOptions,
    clock: fn() -> SystemTime,
    /// Consecutive failures per service (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    autoscaling: Arc<Autoscaling>,
    /// Where Events go; absent: none are recorded.
    recorder: Option<Recorder>,
    /// Whether the Prometheus Operator serves PodMonitors (discovered):
    /// then each namespace gets inferd's PodMonitors.
    pod_monitors: AtomicBool,
    /// The operator's own metrics (`/metrics` on its metrics port).
    metrics: Arc<OperatorMetrics>,
}

impl Context {
    pub fn new(client: Client, options: ReconcileOptions) -> Context {
        Context::with_clock(client, options, SystemTime::now)
    }

    /// A context whose passes take the time from `clock`.
    pub fn with_clock(
        client: Client,
        options: ReconcileOptions,
        clock: fn() -> SystemTime,
    ) -> Context {
        let autoscaling = Arc::new(Autoscaling::new(
            options.autoscaler.clone(),
            autoscale::TICK,
        ));
        Context {
            client,
            options,
            clock,
            failures: Mutex::new(HashMap::new()),
            autoscaling,
            recorder: None,
            pod_monitors: AtomicBool::new(false),
            metrics: Arc::new(OperatorMetrics::new()),
        }
    }

    /// Counts passes in `metrics` (shared with the metrics port).
    pub fn with_metrics(mut self, metrics: Arc<OperatorMetrics>) -> Context {
        self.metrics = metrics;
        self
    }

    /// Records Events as `instance` of the operator (its pod's name).
    pub fn with_events(mut self, instance: Option<String>) -> Context {
        self.recorder = Some(Recorder::new(
            self.client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance,
            },
        ));
        self
    }

    /// Whether to create PodMonitors (the Prometheus Operator is there).
    pub fn set_pod_monitors(&self, enabled: bool) {
        self.pod_monitors.store(enabled, Ordering::Relaxed);
    }

    /// The autoscaler whose decisions the passes apply.
    pub fn autoscaling(&self) -> &Arc<Autoscaling> {
        &self.autoscaling
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic elsewhere cannot leave the counts inconsistent.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key(isvc: &InferenceServiceObject) -> String {
    format!(
        "{}/{}",
        isvc.metadata.namespace.as_deref().unwrap_or_default(),
        isvc.name_any()
    )
}

/// One pass for one service: its finalizer first, then either the apply
/// pass or, when it is being deleted, the cleanup.
#[tracing::instrument(skip_all, fields(service = %key(&isvc)))]
pub async fn reconcile_service(
    isvc: Arc<InferenceServiceObject>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let metrics = Arc::clone(&ctx.metrics);
    let _running = metrics.started();
    let started = std::time::Instant::now();
    let result = one_pass(isvc, ctx).await;
    let elapsed = started.elapsed();
    metrics.finished(elapsed, result.as_ref().err());
    tracing::debug!(took = ?elapsed, ok = result.is_ok(), "pass finished");
    result
}

async fn one_pass(isvc: Arc<InferenceServiceObject>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = isvc
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let isvcs: Api<InferenceServiceObject> = Api::namespaced(ctx.client.clone(), &namespace);
    let outcome = finalizer(&isvcs, FINALIZER, isvc, |event| async {
        match event {
            finalizer::Event::Apply(isvc) => apply_pass(isvc, &ctx, &namespace).await,
            finalizer::Event::Cleanup(isvc) => cleanup(isvc, &ctx, &namespace).await,
        }
    })
    .await;
    match outcome {
        Ok(action) => Ok(action),
        Err(finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e)) => Err(e),
        Err(finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e)) => {
            Err(Error::Kube(e))
        }
        Err(finalizer::Error::UnnamedObject) => Err(Error::MissingField("metadata.name")),
        Err(finalizer::Error::InvalidFinalizer) => Err(Error::MissingField("a valid finalizer")),
    }
}

async fn apply_pass(
    isvc: Arc<InferenceServiceObject>,
    ctx: &Context,
    namespace: &str,
) -> Result<Action> {
    let name = isvc
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let uid = isvc.metadata.uid.clone();
    let client = &ctx.client;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    let isvcs: Api<InferenceServiceObject> = Api::namespaced(client.clone(), namespace);

    let selector = format!("{LABEL_INFERENCE_SERVICE}={name}");
    let listed = ListParams::default().labels(&selector);
    let owned_by_us =
        |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
            refs.iter().any(|o| Some(&o.uid) == uid.as_ref())
        };
    let owned = deployments.list(&listed).await.map_err(Error::Kube)?;
    let observed: Vec<ObservedDeployment> = owned
        .items
        .iter()
        .filter(|d| owned_by_us(d.owner_references()))
        .filter_map(ObservedDeployment::of)
        .collect();
    let observed_hpas: Vec<String> = hpas
        .list(&listed)
        .await
        .map_err(Error::Kube)?
        .items
        .iter()
        .filter(|h| owned_by_us(h.owner_references()))
        .map(ResourceExt::name_any)
        .collect();

    let mut inputs = Inputs {
        decided: ctx.autoscaling.decided(namespace, &name),
        ..Inputs::default()
    };
    // The ServiceAccounts the service's revisions run as, and the Secrets
    // they list (storage credentials, as in KServe).
    let accounts: BTreeSet<String> = isvc
        .status
        .iter()
        .flat_map(|s| &s.revisions)
        .filter_map(|r| r.template.service_account_name.clone())
        .chain(isvc.spec.predictor.service_account_name.clone())
        .collect();
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    for account in accounts {
        let secrets = match service_accounts
            .get_opt(&account)
            .await
            .map_err(Error::Kube)?
        {
            Some(a) => a
                .secrets
                .iter()
                .flatten()
                .filter_map(|s| s.name.clone())
                .collect(),
            // Its pods cannot start; the Deployment's status tells why.
            None => Vec::new(),
        };
        inputs.account_secrets.insert(account, secrets);
    }
    let actions = reconcile_scaled(&isvc, &observed, &inputs, (ctx.clock)(), &ctx.options)?;

    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let router = router_objects(namespace, &ctx.options.objects);
    for object in router.iter().chain(&actions.apply) {
        apply_object(client, namespace, object, &apply).await?;
    }
    if ctx.pod_monitors.load(Ordering::Relaxed) {
        let resource = monitoring::pod_monitor_resource();
        let monitors: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &resource);
        for monitor in monitoring::pod_monitors(namespace) {
            monitors
                .patch(&monitor.name_any(), &apply, &Patch::Apply(&monitor))
                .await
                .map_err(Error::Kube)?;
        }
    }
    for revision in &actions.delete {
        tracing::info!(revision, "deleting retired revision");
        ignore_not_found(deployments.delete(revision, &DeleteParams::default()).await)?;
        ignore_not_found(services.delete(revision, &DeleteParams::default()).await)?;
    }
    let wanted_hpas: BTreeSet<&str> = actions
        .apply
        .iter()
        .filter(|o| matches!(o, DesiredObject::HorizontalPodAutoscaler(_)))
        .map(DesiredObject::name)
        .collect();
    for stale in observed_hpas
        .iter()
        .filter(|h| !wanted_hpas.contains(h.as_str()))
    {
        tracing::info!(hpa = %stale, "deleting a HorizontalPodAutoscaler no longer wanted");
        ignore_not_found(hpas.delete(stale, &DeleteParams::default()).await)?;
    }
    if isvc.status.as_ref() != Some(&actions.status) {
        let body = json!({
            "apiVersion": InferenceServiceObject::api_version(&()),
            "kind": InferenceServiceObject::kind(&()),
            "status": actions.status,
        });
        isvcs
            .patch_status(&name, &apply, &Patch::Apply(&body))
            .await
            .map_err(Error::Kube)?;
    }
    if let Some(recorder) = &ctx.recorder {
        let reference = isvc.object_ref(&());
        for note in &actions.events {
            let event = Event {
                type_: if note.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: note.reason.to_owned(),
                note: Some(note.note.clone()),
                action: "Reconcile".to_owned(),
                secondary: None,
            };
            // An Event is a courtesy: failing to record one fails nothing.
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, reason = note.reason, "cannot record an event");
            }
        }
    }
    ctx.failures().remove(&key(&isvc));
    Ok(Action::requeue(RESYNC))
}

async fn apply_object(
    client: &Client,
    namespace: &str,
    object: &DesiredObject,
    params: &PatchParams,
) -> Result<()> {
    let name = object.name();
    let result = match object {
        DesiredObject::Deployment(d) => Api::<Deployment>::namespaced(client.clone(), namespace)
            .patch(name, params, &Patch::Apply(d))
            .await
            .map(drop),
        DesiredObject::Service(s) => Api::<Service>::namespaced(client.clone(), namespace)
            .patch(name, params, &Patch::Apply(s))
            .await
            .map(drop),
        DesiredObject::HorizontalPodAutoscaler(h) => {
            Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace)
                .patch(name, params, &Patch::Apply(h))
                .await
                .map(drop)
        }
        DesiredObject::ServiceAccount(a) => {
            Api::<ServiceAccount>::namespaced(client.clone(), namespace)
                .patch(name, params, &Patch::Apply(a))
                .await
                .map(drop)
        }
        DesiredObject::RoleBinding(b) => Api::<RoleBinding>::namespaced(client.clone(), namespace)
            .patch(name, params, &Patch::Apply(b))
            .await
            .map(drop),
    };
    result.map_err(Error::Kube)
}

/// A service is being deleted: its objects go with it (owner references);
/// the namespace's router goes with the namespace's last service.
async fn cleanup(
    isvc: Arc<InferenceServiceObject>,
    ctx: &Context,
    namespace: &str,
) -> Result<Action> {
    let client = &ctx.client;
    let isvcs: Api<InferenceServiceObject> = Api::namespaced(client.clone(), namespace);
    let others = isvcs
        .list(&ListParams::default())
        .await
        .map_err(Error::Kube)?
        .items
        .into_iter()
        .filter(|o| o.metadata.uid != isvc.metadata.uid && o.metadata.deletion_timestamp.is_none())
        .count();
    if others == 0 {
        tracing::info!(
            namespace,
            "last InferenceService of the namespace: deleting its router"
        );
        let dp = DeleteParams::default();
        ignore_not_found(
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .delete(ROUTER_NAME, &dp)
                .await,
        )?;
        ignore_not_found(
            Api::<Service>::namespaced(client.clone(), namespace)
                .delete(ROUTER_NAME, &dp)
                .await,
        )?;
        ignore_not_found(
            Api::<RoleBinding>::namespaced(client.clone(), namespace)
                .delete(ROUTER_NAME, &dp)
                .await,
        )?;
        ignore_not_found(
            Api::<ServiceAccount>::namespaced(client.clone(), namespace)
                .delete(ROUTER_NAME, &dp)
                .await,
        )?;
    }
    ctx.failures().remove(&key(&isvc));
    Ok(Action::await_change())
}

fn ignore_not_found<T>(result: kube::Result<T>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// After a failed pass: retry after [`RETRY_MIN`], doubled per consecutive
/// failure of the same service, at most [`RETRY_MAX`].
pub fn error_policy(isvc: Arc<InferenceServiceObject>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key(&isvc);
    let mut failures = ctx.failures();
    let count = failures.entry(key.clone()).or_insert(0);
    let delay = RETRY_MIN
        .saturating_mul(2u32.saturating_pow(*count))
        .min(RETRY_MAX);
    *count = count.saturating_add(1);
    tracing::warn!(service = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// What `inferd operator` runs.
#[derive(Clone, Debug, Default)]
pub struct ControllerConfig {
    /// Watch only this namespace; absent: all namespaces.
    pub namespace: Option<String>,
    pub options: ReconcileOptions,
    /// Run only while holding this Lease (several replicas, one leads);
    /// absent: run at once (one replica).
    pub leader_election: Option<LeaseConfig>,
    /// Where `/metrics` and `/healthz` are served (leader and standby
    /// alike); absent: nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The operator's metrics, updated by the passes.
    pub metrics: Arc<OperatorMetrics>,
}

/// Connects as kubectl does (the in-cluster service account, else the
/// kubeconfig) and runs the controller until `shutdown` resolves; with
/// leader election, only while this replica leads (an error when it stops
/// leading, so that the process exits and restarts as a follower).
pub async fn connect_and_run(
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let client = Client::try_default().await.map_err(Error::Connect)?;
    tracing::info!(
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        image = %config.options.objects.image,
        leader_election = config.leader_election.is_some(),
        "inferd operator started"
    );
    let shutdown = shutdown.shared();
    let metrics_server = match config.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen {
                    what: "metrics",
                    addr,
                    source,
                })?;
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
            Some(tokio::spawn(crate::router::serve_operator_metrics(
                listener,
                Arc::clone(&config.metrics),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let result = match config.leader_election.clone() {
        Some(lease) => {
            let elector = leader::Elector::new(client.clone(), lease)?;
            let leading = elector.subscribe();
            let work = run(client, config, shutdown.clone());
            // A standby stops at once; a leader stops its controller (same
            // signal), which ends `run` and releases the Lease.
            let standby_stops = async move {
                shutdown.await;
                if !standby_may_stop(&leading) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                result = elector.run(work) => result,
                () = standby_stops => Ok(()),
            }
        }
        None => {
            run(client, config, shutdown).await;
            Ok(())
        }
    };
    // Also when the leadership was lost: the process exits either way.
    if let Some(server) = metrics_server {
        server.abort();
    }
    result
}

/// Whether a replica told to shut down may stop at once: only one that
/// never led. One that leads, or led (its controller may already have
/// stopped, its Lease's release still in flight), finishes through the
/// elector, which releases the Lease; stopping it there would leave the
/// Lease held until it expires.
fn standby_may_stop(leading: &tokio::sync::watch::Receiver<bool>) -> bool {
    // The elector sends only when this replica starts or stops leading.
    !*leading.borrow() && !leading.has_changed().unwrap_or(true)
}

/// How often the operator looks again whether the Prometheus Operator is
/// installed (it may be installed after inferd).
pub const MONITORING_DISCOVERY: Duration = Duration::from_secs(300);

/// Runs the controller and the autoscaler until `shutdown` resolves,
/// finishing passes in flight.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (isvcs, deployments, services) = match &config.namespace {
        Some(ns) => (
            Api::<InferenceServiceObject>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let owned = watcher::Config::default().labels(LABEL_INFERENCE_SERVICE);
    let instance = std::env::var("POD_NAME").ok();
    let metrics = Arc::clone(&config.metrics);
    metrics.set_leader(true);
    let ctx = Arc::new(
        Context::new(client.clone(), config.options)
            .with_events(instance)
            .with_metrics(Arc::clone(&metrics)),
    );
    let controller = Controller::new(isvcs, watcher::Config::default())
        .owns(deployments, owned.clone())
        .owns(services, owned);
    // The autoscaler reads the services from the controller's cache and
    // asks for a pass of each service whose replicas it changed.
    let discovery = {
        let client = client.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                match monitoring::prometheus_operator_installed(&client).await {
                    Ok(found) => {
                        if found != ctx.pod_monitors.swap(found, Ordering::Relaxed) {
                            tracing::info!(found, "Prometheus Operator (PodMonitors)");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot discover the Prometheus Operator"),
                }
                tokio::time::sleep(MONITORING_DISCOVERY).await;
            }
        })
    };
    let (trigger, decisions) = mpsc::unbounded_channel();
    let autoscaler = tokio::spawn(autoscale::run(
        client,
        controller.store(),
        ctx.autoscaling().clone(),
        trigger,
    ));
    let decisions = futures_util::stream::unfold(decisions, |mut rx| async move {
        rx.recv().await.map(|r| (r, rx))
    });
    controller
        .reconcile_on(decisions)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_service, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(service = %object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        })
        .await;
    autoscaler.abort();
    discovery.abort();
    metrics.set_leader(false);
    tracing::info!("controller stopped");
}

#[cfg(test)]
mod tests;
