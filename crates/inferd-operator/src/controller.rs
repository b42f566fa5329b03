//! The controller: watches InferenceServices and the Deployments and
//! Services they own, and for each service performs what
//! [`reconcile::reconcile`](crate::reconcile::reconcile) decided:
//! server-side apply of the desired objects (field manager
//! [`FIELD_MANAGER`], forced, so the operator owns what it writes),
//! deletion of the revisions beyond the retention, and the status through
//! the status subresource. A failed pass is retried with exponential
//! backoff per service; a successful one is looked at again every
//! [`RESYNC`] as a safety net.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::objects::{DesiredObject, LABEL_INFERENCE_SERVICE};
use crate::reconcile::{ObservedDeployment, ReconcileOptions, reconcile};
use crate::resource::InferenceServiceObject;
use crate::{Error, Result};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "inferd-operator";
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
        Context {
            client,
            options,
            clock,
            failures: Mutex::new(HashMap::new()),
        }
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

/// One pass for one service.
#[tracing::instrument(skip_all, fields(service = %key(&isvc)))]
pub async fn reconcile_service(
    isvc: Arc<InferenceServiceObject>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let namespace = isvc
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = isvc
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let uid = isvc.metadata.uid.clone();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
    let isvcs: Api<InferenceServiceObject> = Api::namespaced(ctx.client.clone(), &namespace);

    let selector = format!("{LABEL_INFERENCE_SERVICE}={name}");
    let owned = deployments
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Kube)?;
    let observed: Vec<ObservedDeployment> = owned
        .items
        .iter()
        .filter(|d| {
            d.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .filter_map(ObservedDeployment::of)
        .collect();

    let actions = reconcile(&isvc, &observed, (ctx.clock)(), &ctx.options)?;

    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for object in &actions.apply {
        match object {
            DesiredObject::Deployment(d) => {
                deployments
                    .patch(object.name(), &apply, &Patch::Apply(d))
                    .await
                    .map_err(Error::Kube)?;
            }
            DesiredObject::Service(s) => {
                services
                    .patch(object.name(), &apply, &Patch::Apply(s))
                    .await
                    .map_err(Error::Kube)?;
            }
        }
    }
    for revision in &actions.delete {
        tracing::info!(revision, "deleting retired revision");
        ignore_not_found(deployments.delete(revision, &DeleteParams::default()).await)?;
        ignore_not_found(services.delete(revision, &DeleteParams::default()).await)?;
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
    ctx.failures().remove(&key(&isvc));
    Ok(Action::requeue(RESYNC))
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
}

/// Connects as kubectl does (the in-cluster service account, else the
/// kubeconfig) and runs the controller until SIGTERM or Ctrl-C.
pub async fn connect_and_run(config: ControllerConfig) -> Result<()> {
    let client = Client::try_default().await.map_err(Error::Connect)?;
    tracing::info!(
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        image = %config.options.objects.image,
        "inferd operator started"
    );
    run(client, config).await;
    Ok(())
}

/// Runs the controller until SIGTERM or Ctrl-C, finishing passes in flight.
pub async fn run(client: Client, config: ControllerConfig) {
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
    let ctx = Arc::new(Context::new(client, config.options));
    Controller::new(isvcs, watcher::Config::default())
        .owns(deployments, owned.clone())
        .owns(services, owned)
        .shutdown_on_signal()
        .run(reconcile_service, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(service = %object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        })
        .await;
    tracing::info!("controller stopped");
}

#[cfg(test)]
mod tests;
