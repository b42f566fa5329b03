//! The KPA in the cluster: the same autoscaler as the local backend
//! ([`RevisionScaler`], Knative's algorithm), fed every [`TICK`] with the
//! load the router pods of each namespace report, and deciding the replicas
//! of the revision Deployments, to and from zero.
//!
//! Each tick, for every namespace with InferenceServices, the operator
//! finds the ready router pods through the EndpointSlices of the
//! namespace's `inferd-router` Service and reads `GET /stats` from each
//! pod's admin port (requests in flight and held, requests routed, ready
//! replicas per revision). The reports are summed per revision and fed to
//! the revision's scaler; a service whose decision changed is reconciled at
//! once, which writes the Deployment's `replicas`.
//!
//! Scale from zero: a request for a revision at zero replicas is held by
//! the router, which reports it as `held`; the next tick scales the
//! revision to its activation scale whatever the averages say, the pod
//! becomes ready, its EndpointSlice reaches the router, and the router
//! sends the held request. The cold start is the tick's delay (at most
//! [`TICK`]) plus the pod's start.
//!
//! No report, no decision: a namespace whose routers cannot be read (none
//! running yet, network trouble) keeps its revisions' last decisions
//! rather than sampling zero load and scaling them away. Decisions live in
//! memory; after an operator restart the reconcile keeps each revision's
//! Deployment at its current replicas until the first tick decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use inferd_api::AutoscalerClass;
use inferd_control::autoscaler::AutoscalerConfig;
use inferd_control::scaling::{Load, RevisionScaler};
use inferd_control::service::autoscaler_config;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use crate::objects::{ROUTER_ADMIN_PORT, ROUTER_NAME};
use crate::resource::InferenceServiceObject;

/// How often the routers are read and the autoscalers asked (Knative's
/// tick).
pub const TICK: Duration = Duration::from_secs(2);
/// How long one router may take to answer `/stats`.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the router pods of one namespace reported at a tick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceLoad {
    /// Routers that answered.
    pub routers: usize,
    /// Per (service, revision): the summed load, and the most ready
    /// replicas any router knew.
    pub revisions: BTreeMap<(String, String), (Load, u32)>,
}

impl NamespaceLoad {
    /// Adds one router's report (`/stats`, parsed).
    pub fn add(&mut self, report: &BTreeMap<String, Vec<inferd_router::RevisionConcurrency>>) {
        self.routers += 1;
        for (service, revisions) in report {
            for r in revisions {
                let entry = self
                    .revisions
                    .entry((service.clone(), r.revision.clone()))
                    .or_default();
                entry.0 = Load::sum(&[
                    entry.0,
                    Load {
                        in_flight: r.in_flight,
                        held: r.held,
                        requests_total: r.requests_total,
                    },
                ]);
                entry.1 = entry.1.max(u32::try_from(r.replicas).unwrap_or(u32::MAX));
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RevisionKey {
    namespace: String,
    service: String,
    revision: String,
}

struct Tracked {
    scaler: RevisionScaler,
    desired: Option<u32>,
}

/// The scalers of every revision the operator autoscales, and their
/// decisions.
pub struct Autoscaling {
    defaults: AutoscalerConfig,
    tick: Duration,
    revisions: Mutex<HashMap<RevisionKey, Tracked>>,
}

impl Autoscaling {
    /// Scalers with the cluster's defaults (a service's annotations and
    /// fields override them), asked every `tick`.
    pub fn new(defaults: AutoscalerConfig, tick: Duration) -> Autoscaling {
        Autoscaling {
            defaults,
            tick,
            revisions: Mutex::new(HashMap::new()),
        }
    }

    fn revisions(&self) -> std::sync::MutexGuard<'_, HashMap<RevisionKey, Tracked>> {
        self.revisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The replicas decided for the revisions of `namespace/service`
    /// (revision name → replicas); a revision not there has no decision.
    pub fn decided(&self, namespace: &str, service: &str) -> BTreeMap<String, u32> {
        self.revisions()
            .iter()
            .filter(|(k, _)| k.namespace == namespace && k.service == service)
            .filter_map(|(k, t)| t.desired.map(|d| (k.revision.clone(), d)))
            .collect()
    }

    /// One tick at `now` (time since the operator started): feeds each
    /// autoscaled revision of `services` with its namespace's `loads` and
    /// returns the services (namespace, name) whose decision changed.
    ///
    /// Autoscaled are the revisions in a service's traffic that were ever
    /// ready (a starting revision runs its initial scale) of services not
    /// under an HPA.
    pub fn tick(
        &self,
        now: Duration,
        services: &[Arc<InferenceServiceObject>],
        loads: &BTreeMap<String, NamespaceLoad>,
    ) -> Vec<(String, String)> {
        let mut changed = BTreeSet::new();
        let mut keep: BTreeSet<RevisionKey> = BTreeSet::new();
        let mut revisions = self.revisions();
        for isvc in services {
            let (Some(namespace), Some(name)) =
                (isvc.metadata.namespace.clone(), isvc.metadata.name.clone())
            else {
                continue;
            };
            if isvc.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(status) = &isvc.status else {
                continue;
            };
            let Ok(api) = isvc.to_api() else {
                continue;
            };
            if api.spec.predictor.autoscaler_class == Some(AutoscalerClass::Hpa) {
                continue;
            }
            // A bad setting is the reconcile's to report.
            let Ok(config) = autoscaler_config(&api, &self.defaults) else {
                continue;
            };
            let load = loads.get(&namespace);
            for target in &status.traffic {
                let ever_ready = status
                    .revisions
                    .iter()
                    .any(|r| r.name == target.revision_name && r.ever_ready);
                if !ever_ready {
                    continue;
                }
                let key = RevisionKey {
                    namespace: namespace.clone(),
                    service: name.clone(),
                    revision: target.revision_name.clone(),
                };
                keep.insert(key.clone());
                let Some(load) = load else {
                    continue;
                };
                // A new revision, or new settings: a fresh scaler.
                if revisions
                    .get(&key)
                    .is_none_or(|t| t.scaler.config() != &config)
                {
                    let Ok(scaler) = RevisionScaler::new(config.clone()) else {
                        continue;
                    };
                    let fresh = Tracked {
                        scaler,
                        desired: None,
                    };
                    revisions.insert(key.clone(), fresh);
                }
                let Some(tracked) = revisions.get_mut(&key) else {
                    continue;
                };
                tracked.scaler.set_reachable(target.percent > 0);
                let seen = load
                    .revisions
                    .get(&(name.clone(), target.revision_name.clone()));
                let ready = seen.map_or(0, |(_, ready)| *ready);
                let desired =
                    tracked
                        .scaler
                        .tick(now, self.tick, seen.map(|(load, _)| load), ready);
                if tracked.desired != Some(desired) {
                    tracing::info!(
                        service = %format!("{namespace}/{name}"),
                        revision = %target.revision_name,
                        from = ?tracked.desired,
                        to = desired,
                        reason = ?tracked.scaler.decision().map(|d| d.reason),
                        "autoscaler decision"
                    );
                    tracked.desired = Some(desired);
                    changed.insert((namespace.clone(), name.clone()));
                }
            }
        }
        revisions.retain(|k, _| keep.contains(k));
        changed.into_iter().collect()
    }
}

/// The ready router pods' admin addresses in one namespace's EndpointSlices
/// of the `inferd-router` Service.
pub fn router_addresses(slices: &[EndpointSlice]) -> Vec<SocketAddr> {
    let mut out = BTreeSet::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("admin"))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .or_else(|| u16::try_from(ROUTER_ADMIN_PORT).ok());
        let Some(port) = port else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    out.insert(SocketAddr::new(ip, port));
                }
            }
        }
    }
    out.into_iter().collect()
}

/// Reads `/stats` from each router; the ones that answer make the load.
pub async fn scrape(
    http: &HttpClient<HttpConnector, Empty<Bytes>>,
    routers: &[SocketAddr],
) -> Option<NamespaceLoad> {
    let reports = join_all(routers.iter().map(|addr| async move {
        let uri = format!("http://{addr}/stats");
        let fetch = async {
            let uri: hyper::Uri = uri.parse().ok()?;
            let response = http.get(uri).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let body = response.into_body().collect().await.ok()?.to_bytes();
            match crate::router::parse_stats(&body) {
                Ok(report) => Some(report),
                Err(e) => {
                    tracing::warn!(router = %addr, error = %e, "unreadable router stats");
                    None
                }
            }
        };
        match tokio::time::timeout(SCRAPE_TIMEOUT, fetch).await {
            Ok(report) => report,
            Err(_) => {
                tracing::debug!(router = %addr, "router stats timed out");
                None
            }
        }
    }))
    .await;
    let mut load = NamespaceLoad::default();
    for report in reports.iter().flatten() {
        load.add(report);
    }
    (load.routers > 0).then_some(load)
}

/// Runs the autoscaler until the process stops: every tick, reads the
/// routers of each namespace in `store` and sends the services whose
/// decision changed to `trigger` (the controller reconciles them).
pub async fn run(
    client: Client,
    store: Store<InferenceServiceObject>,
    autoscaling: Arc<Autoscaling>,
    trigger: mpsc::UnboundedSender<ObjectRef<InferenceServiceObject>>,
) {
    let started = Instant::now();
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut interval = tokio::time::interval(autoscaling.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let services = store.state();
        let namespaces: BTreeSet<String> = services
            .iter()
            .filter_map(|s| s.metadata.namespace.clone())
            .collect();
        let mut loads = BTreeMap::new();
        for namespace in namespaces {
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
            let selector = format!("kubernetes.io/service-name={ROUTER_NAME}");
            let listed = match slices.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => list.items,
                Err(e) => {
                    tracing::warn!(namespace, error = %e, "cannot list the router endpoints");
                    continue;
                }
            };
            let routers = router_addresses(&listed);
            if let Some(load) = scrape(&http, &routers).await {
                loads.insert(namespace, load);
            }
        }
        for (namespace, name) in autoscaling.tick(started.elapsed(), &services, &loads) {
            let object = services
                .iter()
                .find(|s| s.namespace().as_deref() == Some(&namespace) && s.name_any() == name);
            if let Some(object) = object
                && trigger.send(ObjectRef::from_obj(object.as_ref())).is_err()
            {
                // The controller stopped: so does the autoscaler.
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
