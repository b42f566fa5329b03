//! The reconcile core for one InferenceService: which immutable revisions
//! exist, which of them take traffic and in what share, and which must
//! keep running. Pure functions of the applied specs and what the backend
//! observed; no processes, no clock (times are passed in), no Kubernetes.
//!
//! The rules are KServe's and Knative's:
//!
//! - A change to what runs (the [`RevisionTemplate`]: model, batching,
//!   resources, environment, `containerConcurrency`, and where and as whom
//!   the pods run: `nodeSelector`, `tolerations`, `affinity`,
//!   `serviceAccountName`) creates a new revision,
//!   `NAME-00001`, `NAME-00002`, …; a change to anything else (replica
//!   bounds, scaling target, canary share, timeout) only updates the service.
//! - Without `canaryTrafficPercent` the newest ready revision takes 100%
//!   once ready and becomes the *rolled-out* revision; the one before it is
//!   retired (drained, then stopped).
//! - With `canaryTrafficPercent: N` the newest ready revision takes N% and
//!   the rolled-out one the rest; `0` rolls back (the rolled-out revision
//!   takes everything), `100` or removing the field promotes. Once the
//!   newest revision is itself rolled out (promoted), a canary share splits
//!   it with the revision rolled out before it, so `0` after a promotion
//!   rolls back to the previous revision, as KServe does.
//! - Whether a revision was ever ready is part of the record, so a restarted
//!   backend plans exactly what it planned before (a canary stays a canary
//!   while its replicas start again).
//! - A revision that never became ready takes no traffic; while no revision
//!   is ready, requests wait for the newest (the router holds them), unless
//!   it failed, in which case they are refused with the reason.
//! - Tags: `latest` names the newest revision, `prev` the rolled-out one
//!   while a newer one exists.

use std::collections::BTreeMap;
use std::time::Duration;

use inferd_api::{
    Affinity, Batching, Condition, EnvVar, InferenceService, ModelSpec, PredictorSpec, Resources,
    Toleration,
};
use inferd_router::{ReplicaAddr, RevisionRoute, RevisionState, ServiceRoute};
use serde::{Deserialize, Serialize};

use crate::autoscaler::{AutoscalerConfig, ConfigError, Metric};

/// What runs in a replica: a change here makes a new revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionTemplate {
    pub model: ModelSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<u32>,
    // The pod settings below belong to the template because they belong to
    // Kubernetes' pod template: as in Knative and KServe, changing them rolls
    // out new pods, so a new revision. They apply on Kubernetes only; the
    // local backend runs every replica on this machine and ignores them.
    // Each is skipped when empty, so a record written before they existed
    // reads back equal and makes no new revision.
    /// The predictor's `nodeSelector` (Kubernetes only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The predictor's `tolerations` (Kubernetes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// The predictor's `affinity`, as written (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// The predictor's `serviceAccountName` (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

impl RevisionTemplate {
    pub fn of(predictor: &PredictorSpec) -> RevisionTemplate {
        RevisionTemplate {
            model: predictor.model.clone(),
            batching: predictor.batching.clone(),
            resources: predictor.resources.clone(),
            env: predictor.env.clone(),
            container_concurrency: predictor.container_concurrency,
            node_selector: predictor.node_selector.clone(),
            tolerations: predictor.tolerations.clone(),
            affinity: predictor.affinity.clone(),
            service_account_name: predictor.service_account_name.clone(),
        }
    }

    /// GPUs each replica needs.
    pub fn gpus(&self) -> u32 {
        self.resources.as_ref().and_then(|r| r.gpu).unwrap_or(0)
    }
}

/// One immutable revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// `SERVICE-0000N`.
    pub name: String,
    /// N, from 1.
    pub number: u32,
    pub template: RevisionTemplate,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Whether a replica of it was ever ready: it can take traffic again
    /// after it was scaled to zero, or after the backend restarted.
    #[serde(default)]
    pub ever_ready: bool,
}

/// A service as the control plane keeps it: the last applied spec, its
/// revisions in creation order, and the rollout history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    pub spec: InferenceService,
    /// Bumped by every apply that changes the spec.
    pub generation: u64,
    pub revisions: Vec<Revision>,
    /// Revisions that took 100% of the traffic, oldest first; the last one
    /// is the rolled-out revision.
    #[serde(default)]
    pub rolled_out: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum ApplyOutcome {
    /// A new service with its first revision.
    Created { revision: String },
    /// What runs changed: a new revision.
    NewRevision { revision: String },
    /// Only traffic or scaling settings changed; no new revision.
    Configured,
    /// The same spec again.
    Unchanged,
}

/// Most revisions kept per service; older retired ones are forgotten.
pub const MAX_REVISIONS_KEPT: usize = 50;

impl ServiceRecord {
    /// A new service and its first revision.
    pub fn create(mut spec: InferenceService, now_secs: u64) -> (ServiceRecord, ApplyOutcome) {
        spec.status = None;
        let name = spec.metadata.name.clone();
        let revision = Revision {
            name: revision_name(&name, 1),
            number: 1,
            template: RevisionTemplate::of(&spec.spec.predictor),
            created_at: now_secs,
            ever_ready: false,
        };
        let outcome = ApplyOutcome::Created {
            revision: revision.name.clone(),
        };
        let record = ServiceRecord {
            spec,
            generation: 1,
            revisions: vec![revision],
            rolled_out: Vec::new(),
            created_at: now_secs,
        };
        (record, outcome)
    }

    /// Applies a new spec of the same service.
    pub fn apply(&mut self, mut spec: InferenceService, now_secs: u64) -> ApplyOutcome {
        spec.status = None;
        if spec == self.spec {
            return ApplyOutcome::Unchanged;
        }
        let template = RevisionTemplate::of(&spec.spec.predictor);
        self.spec = spec;
        self.generation += 1;
        let changed = self.latest().is_none_or(|r| r.template != template);
        if !changed {
            return ApplyOutcome::Configured;
        }
        let number = self.latest().map_or(1, |r| r.number + 1);
        let name = revision_name(&self.spec.metadata.name, number);
        self.revisions.push(Revision {
            name: name.clone(),
            number,
            template,
            created_at: now_secs,
            ever_ready: false,
        });
        ApplyOutcome::NewRevision { revision: name }
    }

    pub fn name(&self) -> &str {
        &self.spec.metadata.name
    }

    /// The newest revision.
    pub fn latest(&self) -> Option<&Revision> {
        self.revisions.last()
    }

    pub fn revision(&self, name: &str) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.name == name)
    }

    /// The revision that last took all the traffic.
    pub fn rolled_out(&self) -> Option<&str> {
        self.rolled_out.last().map(String::as_str)
    }

    /// Records which revisions were observed ready; returns whether any
    /// became ready for the first time (so the caller knows to store the
    /// record).
    pub fn record_ready(&mut self, observed: &BTreeMap<String, RevisionObserved>) -> bool {
        let mut changed = false;
        for r in &mut self.revisions {
            if !r.ever_ready
                && observed
                    .get(&r.name)
                    .is_some_and(|o| o.ever_ready || o.ready_replicas > 0)
            {
                r.ever_ready = true;
                changed = true;
            }
        }
        changed
    }

    /// The rolled-out revision before `current` that can still serve.
    fn rolled_out_before(&self, current: &str, ever_ready: impl Fn(&str) -> bool) -> Option<&str> {
        self.rolled_out
            .iter()
            .rev()
            .map(String::as_str)
            .filter(|r| *r != current)
            .find(|r| self.revision(r).is_some() && ever_ready(r))
    }

    /// Records the plan's rollout and forgets old revisions that can no
    /// longer take traffic; returns whether anything changed (so the caller
    /// knows to store the record).
    pub fn record_rollout(&mut self, plan: &TrafficPlan) -> bool {
        let mut changed = false;
        if let Some(r) = &plan.rolled_out
            && self.rolled_out() != Some(r.as_str())
        {
            self.rolled_out.push(r.clone());
            let excess = self.rolled_out.len().saturating_sub(MAX_REVISIONS_KEPT);
            self.rolled_out.drain(..excess);
            changed = true;
        }
        if self.revisions.len() > MAX_REVISIONS_KEPT {
            let keep: Vec<&str> = plan.routable().collect();
            let mut excess = self.revisions.len() - MAX_REVISIONS_KEPT;
            self.revisions.retain(|r| {
                if excess > 0 && !keep.contains(&r.name.as_str()) {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
            changed = true;
        }
        changed
    }
}

/// `NAME-0000N`, as Knative names revisions.
pub fn revision_name(service: &str, number: u32) -> String {
    format!("{service}-{number:05}")
}

/// What the backend observed of one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevisionObserved {
    /// Replicas answering ready now.
    pub ready_replicas: u32,
    /// Whether any replica of it was ever ready (a revision scaled to zero
    /// after serving is still ready: it can be activated).
    pub ever_ready: bool,
    /// Why it cannot become ready (its model could not be fetched, its
    /// replicas crash before ready, its GPUs cannot be had), when it never was.
    pub failed: Option<String>,
}

/// How a revision is routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Takes requests; with no replica ready they wait (scale from zero).
    Routable,
    /// Cannot serve; requests for it are refused with this reason.
    Unavailable(String),
}

/// One revision in the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRevision {
    pub name: String,
    /// Share of the service's traffic.
    pub percent: u32,
    pub route: Route,
}

/// The traffic of one service: which revisions the router knows and their
/// shares. Revisions of the record that are absent are retired: they
/// drain and stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficPlan {
    pub revisions: Vec<PlannedRevision>,
    /// The `latest` tag: the newest revision.
    pub latest: Option<String>,
    /// The `prev` tag: the rolled-out revision, while a newer one exists.
    pub prev: Option<String>,
    /// The newest ready revision.
    pub latest_ready: Option<String>,
    /// The revision that takes all the traffic unless a canary takes part of
    /// it (to record with [`ServiceRecord::record_rollout`]).
    pub rolled_out: Option<String>,
}

impl TrafficPlan {
    /// The plan as the status's `traffic`: every planned revision with its
    /// share, and the tags `latest` and `prev`.
    pub fn traffic_targets(&self) -> Vec<inferd_api::TrafficTarget> {
        self.revisions
            .iter()
            .map(|r| {
                let latest = self.latest.as_deref() == Some(r.name.as_str());
                let tag = if latest {
                    Some("latest")
                } else if self.prev.as_deref() == Some(r.name.as_str()) {
                    Some("prev")
                } else {
                    None
                };
                inferd_api::TrafficTarget {
                    revision_name: r.name.clone(),
                    percent: r.percent,
                    latest_revision: latest,
                    tag: tag.map(str::to_owned),
                }
            })
            .collect()
    }

    /// Names of the revisions the router knows.
    pub fn routable(&self) -> impl Iterator<Item = &str> {
        self.revisions.iter().map(|r| r.name.as_str())
    }

    pub fn percent(&self, revision: &str) -> u32 {
        self.revisions
            .iter()
            .find(|r| r.name == revision)
            .map_or(0, |r| r.percent)
    }

    pub fn contains(&self, revision: &str) -> bool {
        self.revisions.iter().any(|r| r.name == revision)
    }
}

/// The traffic plan of `record` given what was observed of its revisions.
pub fn plan_traffic(
    record: &ServiceRecord,
    observed: &BTreeMap<String, RevisionObserved>,
) -> TrafficPlan {
    // What was observed, with what the record remembers: a revision that
    // was ever ready stays so across restarts of the backend.
    let seen = |name: &str| {
        let mut o = observed.get(name).cloned().unwrap_or_default();
        o.ever_ready |= record.revision(name).is_some_and(|r| r.ever_ready);
        o
    };
    let latest = record.latest().map(|r| r.name.clone());
    let latest_ready = record
        .revisions
        .iter()
        .rev()
        .find(|r| seen(&r.name).ever_ready)
        .map(|r| r.name.clone());
    let mut plan = TrafficPlan {
        revisions: Vec::new(),
        latest: latest.clone(),
        prev: None,
        latest_ready: latest_ready.clone(),
        rolled_out: None,
    };
    let Some(latest) = latest else {
        return plan;
    };
    let Some(ready) = latest_ready else {
        // Nothing ever ready: requests wait for the newest revision, or are
        // refused with its reason.
        let route = match seen(&latest).failed {
            Some(reason) => Route::Unavailable(reason),
            None => Route::Routable,
        };
        plan.revisions.push(PlannedRevision {
            name: latest,
            percent: 100,
            route,
        });
        return plan;
    };
    // The stable revision: the rolled-out one if it can still serve (it was
    // ready once), else the newest ready.
    let stable = record
        .rolled_out()
        .filter(|r| record.revision(r).is_some() && seen(r).ever_ready)
        .map(str::to_owned);
    let canary = record.spec.spec.predictor.canary_traffic_percent;
    // Once the newest revision is the rolled-out one (it was promoted), a
    // canary share splits it with the revision rolled out before it: the
    // stable side becomes that one again, as KServe rolls back.
    let stable = match (stable, canary) {
        (Some(s), Some(n)) if n < 100 && s == ready && s == latest => Some(
            record
                .rolled_out_before(&s, |r| seen(r).ever_ready)
                .map_or(s, str::to_owned),
        ),
        (stable, _) => stable,
    };
    match (stable, canary) {
        (Some(stable), Some(n)) if n < 100 && stable != ready => {
            // A canary: the newest ready revision takes N%.
            plan.revisions.push(PlannedRevision {
                name: stable.clone(),
                percent: 100 - n,
                route: Route::Routable,
            });
            plan.revisions.push(PlannedRevision {
                name: ready.clone(),
                percent: n,
                route: Route::Routable,
            });
            plan.rolled_out = Some(stable.clone());
            plan.prev = Some(stable);
        }
        _ => {
            // Full rollout: the newest ready revision takes everything.
            plan.revisions.push(PlannedRevision {
                name: ready.clone(),
                percent: 100,
                route: Route::Routable,
            });
            plan.rolled_out = Some(ready.clone());
            if ready != plan.latest.clone().unwrap_or_default() {
                plan.prev = Some(ready.clone());
            }
        }
    }
    // The newest revision, not ready yet (starting, or failed): known to the
    // router under its tag with no share, so it can be tried directly.
    if !plan.contains(&latest) {
        let route = match seen(&latest).failed {
            Some(reason) if !seen(&latest).ever_ready => Route::Unavailable(reason),
            _ => Route::Routable,
        };
        plan.revisions.push(PlannedRevision {
            name: latest,
            percent: 0,
            route,
        });
    }
    plan
}

/// The router's route for one service from its traffic plan, for both
/// backends: each planned revision with its share, its ready replicas'
/// addresses (`replicas`, by revision name: supervised processes locally,
/// EndpointSlices on Kubernetes), its `containerConcurrency`
/// (`container_concurrency`; absent: no limit) and its state: an
/// unavailable revision refuses with its reason, a routable one with no
/// ready replica is activating (requests wait while it scales from zero),
/// otherwise serving. The tags follow the plan's, and `timeout` is the
/// service's request deadline. Written once so that both backends route a
/// plan the same way.
pub fn service_route(
    plan: &TrafficPlan,
    timeout: Duration,
    container_concurrency: impl Fn(&str) -> Option<u32>,
    mut replicas: impl FnMut(&str) -> Vec<ReplicaAddr>,
) -> ServiceRoute {
    let mut route = ServiceRoute::new()
        .with_timeout(timeout)
        .with_tags(plan.latest.as_deref(), plan.prev.as_deref());
    for planned in &plan.revisions {
        let replicas = replicas(&planned.name);
        let state = match &planned.route {
            Route::Unavailable(reason) => RevisionState::Unavailable(reason.clone()),
            Route::Routable if replicas.is_empty() => RevisionState::Activating,
            Route::Routable => RevisionState::Serving,
        };
        let revision = RevisionRoute::new(planned.name.clone(), planned.percent, replicas)
            .with_state(state)
            .with_container_concurrency(container_concurrency(&planned.name).unwrap_or(0));
        route = route.with_revision(revision);
    }
    route
}

/// KServe's readiness conditions of a service, for both backends:
/// `PredictorReady` (the caller says whether every revision with a share can
/// serve), `RoutesReady` (a revision with a share is routable), `Ready`
/// (both), and `LatestRevisionReady: False` when the newest revision failed
/// while an older one serves. A condition that is not met carries `detail`,
/// else the newest revision's failure, else the first unavailable
/// revision's reason. Transition times are the caller's.
pub fn readiness_conditions(
    plan: &TrafficPlan,
    predictor_ready: bool,
    latest_failure: Option<&str>,
    detail: Option<&str>,
) -> Vec<Condition> {
    let routes_ready = plan
        .revisions
        .iter()
        .any(|r| r.percent > 0 && r.route == Route::Routable);
    let message = detail.or(latest_failure).map(str::to_owned).or_else(|| {
        plan.revisions.iter().find_map(|r| match &r.route {
            Route::Unavailable(reason) => Some(reason.clone()),
            Route::Routable => None,
        })
    });
    let cond = |type_: &str, ok: bool, reason: &str| Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: (!ok).then(|| reason.to_owned()),
        message: if ok { None } else { message.clone() },
        last_transition_time: None,
    };
    let mut conditions = vec![
        cond("PredictorReady", predictor_ready, "RevisionNotReady"),
        cond("RoutesReady", routes_ready, "NoRoutableRevision"),
        cond("Ready", predictor_ready && routes_ready, "NotReady"),
    ];
    if let Some(failure) = latest_failure
        && predictor_ready
    {
        conditions.push(Condition {
            type_: "LatestRevisionReady".to_owned(),
            status: "False".to_owned(),
            reason: Some("RevisionFailed".to_owned()),
            message: Some(failure.to_owned()),
            last_transition_time: None,
        });
    }
    conditions
}

/// Knative's per-revision autoscaling annotations that inferd reads, under
/// `autoscaling.knative.dev/`.
pub const AUTOSCALING_ANNOTATION_PREFIX: &str = "autoscaling.knative.dev/";

/// The autoscaler settings of a service: the control plane's defaults
/// (Knative's `config-autoscaler`), then the service's
/// `autoscaling.knative.dev/*` annotations, then its predictor fields
/// (`minReplicas`, `maxReplicas`, `scaleMetric`, `scaleTarget`,
/// `containerConcurrency`). An error names the field's path.
pub fn autoscaler_config(
    isvc: &InferenceService,
    defaults: &AutoscalerConfig,
) -> Result<AutoscalerConfig, AutoscalingError> {
    let mut c = defaults.clone();
    for (key, value) in &isvc.metadata.annotations {
        let Some(name) = key.strip_prefix(AUTOSCALING_ANNOTATION_PREFIX) else {
            continue;
        };
        let path = format!("metadata.annotations[\"{key}\"]");
        let err = |message: String| AutoscalingError {
            path: path.clone(),
            message,
        };
        let number = || -> Result<f64, AutoscalingError> {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| err(format!("'{value}' is not a number")))
        };
        let whole = || -> Result<u32, AutoscalingError> {
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| err(format!("'{value}' is not a whole number >= 0")))
        };
        let duration = || -> Result<Duration, AutoscalingError> {
            crate::autoscaler::parse_go_duration(value).map_err(err)
        };
        match name {
            "class" => {
                if value != "kpa.autoscaling.knative.dev" {
                    return Err(err(format!(
                        "'{value}' is not supported; inferd autoscales with kpa.autoscaling.knative.dev"
                    )));
                }
            }
            "metric" => {
                c.metric = match value.as_str() {
                    "concurrency" => Metric::Concurrency,
                    "rps" => Metric::Rps,
                    _ => return Err(err(format!("'{value}' is not concurrency or rps"))),
                }
            }
            "target" => c.target = Some(number()?),
            "target-utilization-percentage" => c.target_utilization_percentage = number()?,
            "target-burst-capacity" => c.target_burst_capacity = number()?,
            "window" => c.stable_window = duration()?,
            "panic-window-percentage" => c.panic_window_percentage = number()?,
            "panic-threshold-percentage" => c.panic_threshold_percentage = number()?,
            "scale-to-zero-pod-retention-period" => {
                c.scale_to_zero_pod_retention_period = duration()?;
            }
            "scale-to-zero-grace-period" => c.scale_to_zero_grace_period = duration()?,
            "initial-scale" => {
                c.initial_scale = whole()?;
                c.allow_zero_initial_scale = c.initial_scale == 0;
            }
            "activation-scale" => c.activation_scale = whole()?,
            "scale-down-delay" => c.scale_down_delay = duration()?,
            "min-scale" => c.min_scale = whole()?,
            "max-scale" => c.max_scale = whole()?,
            "max-scale-up-rate" => c.max_scale_up_rate = number()?,
            "max-scale-down-rate" => c.max_scale_down_rate = number()?,
            other => {
                return Err(err(format!(
                    "'{other}' is not an autoscaling setting inferd reads"
                )));
            }
        }
    }
    let p = &isvc.spec.predictor;
    c.min_scale = p.min_replicas_or_default();
    c.max_scale = p.max_replicas.unwrap_or(0);
    c.metric = match p.scale_metric_or_default() {
        inferd_api::ScaleMetric::Concurrency => Metric::Concurrency,
        inferd_api::ScaleMetric::Rps => Metric::Rps,
    };
    // Under an HPA, `scaleTarget` is a CPU utilisation, no KPA target; a
    // backend without HPAs (local) scales such a service on concurrency with
    // the defaults, at least one replica.
    if p.autoscaler_class == Some(inferd_api::AutoscalerClass::Hpa) {
        c.min_scale = c.min_scale.max(1);
    } else if p.scale_target.is_some() {
        c.target = p.scale_target;
    }
    c.container_concurrency = p.container_concurrency.unwrap_or(0);
    if c.initial_scale < c.min_scale {
        c.initial_scale = c.min_scale;
    }
    if c.max_scale != 0 && c.initial_scale > c.max_scale {
        c.initial_scale = c.max_scale;
    }
    c.validate()
        .map_err(|e| AutoscalingError::from_config(&e))?;
    Ok(c)
}

/// A bad autoscaling setting, with the path of the field that set it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct AutoscalingError {
    pub path: String,
    pub message: String,
}

impl AutoscalingError {
    fn from_config(e: &ConfigError) -> AutoscalingError {
        let path = match e.field {
            "minScale" => "spec.predictor.minReplicas".to_owned(),
            "maxScale" => "spec.predictor.maxReplicas".to_owned(),
            "target" => "spec.predictor.scaleTarget".to_owned(),
            field => format!("autoscaling.{field}"),
        };
        AutoscalingError {
            path,
            message: e.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferd_api::{ModelFormat, PredictorSpec};

    fn isvc(uri: &str, canary: Option<u32>) -> InferenceService {
        let mut p = PredictorSpec::new(ModelSpec::new(ModelFormat::Onnx, uri));
        p.canary_traffic_percent = canary;
        InferenceService::new("iris", p)
    }

    fn ready(names: &[&str]) -> BTreeMap<String, RevisionObserved> {
        names
            .iter()
            .map(|n| {
                (
                    (*n).to_owned(),
                    RevisionObserved {
                        ready_replicas: 1,
                        ever_ready: true,
                        failed: None,
                    },
                )
            })
            .collect()
    }

    fn shares(plan: &TrafficPlan) -> Vec<(&str, u32)> {
        plan.revisions
            .iter()
            .map(|r| (r.name.as_str(), r.percent))
            .collect()
    }

    /// Applies, plans with `observed`, records the rollout.
    fn step(
        record: &mut ServiceRecord,
        observed: &BTreeMap<String, RevisionObserved>,
    ) -> TrafficPlan {
        let plan = plan_traffic(record, observed);
        record.record_rollout(&plan);
        plan
    }

    #[test]
    fn only_a_change_to_what_runs_makes_a_revision() {
        let (mut r, outcome) = ServiceRecord::create(isvc("a.onnx", None), 10);
        assert_eq!(
            outcome,
            ApplyOutcome::Created {
                revision: "iris-00001".into()
            }
        );
        assert_eq!(r.apply(isvc("a.onnx", None), 11), ApplyOutcome::Unchanged);
        assert_eq!(r.generation, 1);
        // Traffic and scaling only.
        let mut s = isvc("a.onnx", Some(20));
        s.spec.predictor.max_replicas = Some(3);
        s.spec.predictor.timeout_seconds = Some(5);
        assert_eq!(r.apply(s, 12), ApplyOutcome::Configured);
        assert_eq!(r.revisions.len(), 1);
        assert_eq!(r.generation, 2);
        // The model.
        assert_eq!(
            r.apply(isvc("b.onnx", Some(20)), 13),
            ApplyOutcome::NewRevision {
                revision: "iris-00002".into()
            }
        );
        // The environment, batching.
        let mut s = isvc("b.onnx", Some(20));
        s.spec.predictor.env.push(EnvVar {
            name: "X".into(),
            value: "1".into(),
        });
        assert!(matches!(
            r.apply(s, 14),
            ApplyOutcome::NewRevision { revision } if revision == "iris-00003"
        ));
        assert_eq!(r.revisions[1].created_at, 13);
        // Revisions are immutable: the first still names a.onnx.
        assert_eq!(r.revisions[0].template.model.storage_uri, "a.onnx");
    }

    #[test]
    fn pod_settings_make_a_revision_and_traffic_does_not() {
        use inferd_api::{TaintEffect, TolerationOperator};

        let toleration = |value: &str| Toleration {
            key: Some("nvidia.com/gpu".into()),
            operator: Some(TolerationOperator::Equal),
            value: Some(value.into()),
            effect: Some(TaintEffect::NoSchedule),
            toleration_seconds: None,
        };
        let with = |tolerations: Vec<Toleration>, canary: Option<u32>| {
            let mut s = isvc("a.onnx", canary);
            s.spec.predictor.tolerations = tolerations;
            s
        };
        let (mut r, _) = ServiceRecord::create(with(vec![toleration("a100")], None), 0);
        // A traffic change keeps the revision.
        assert_eq!(
            r.apply(with(vec![toleration("a100")], Some(10)), 1),
            ApplyOutcome::Configured
        );
        // A toleration's value, then removing it, each make one.
        assert_eq!(
            r.apply(with(vec![toleration("h100")], Some(10)), 2),
            ApplyOutcome::NewRevision {
                revision: "iris-00002".into()
            }
        );
        assert_eq!(
            r.apply(with(Vec::new(), Some(10)), 3),
            ApplyOutcome::NewRevision {
                revision: "iris-00003".into()
            }
        );
        assert_eq!(
            r.revisions[1].template.tolerations,
            vec![toleration("h100")]
        );
        // So do the other pod settings.
        let mut s = with(Vec::new(), Some(10));
        s.spec.predictor.service_account_name = Some("models-reader".into());
        assert!(matches!(
            r.apply(s.clone(), 4),
            ApplyOutcome::NewRevision { .. }
        ));
        s.spec
            .predictor
            .node_selector
            .insert("pool".into(), "gpu".into());
        assert!(matches!(
            r.apply(s.clone(), 5),
            ApplyOutcome::NewRevision { .. }
        ));
        let mut affinity = serde_json::Map::new();
        affinity.insert("nodeAffinity".into(), serde_json::json!({}));
        s.spec.predictor.affinity = Some(inferd_api::Affinity(affinity));
        assert!(matches!(r.apply(s, 6), ApplyOutcome::NewRevision { .. }));
        assert_eq!(r.revisions.len(), 6);
    }

    #[test]
    fn a_template_without_pod_settings_reads_as_before() {
        // A revision recorded before the pod settings existed.
        let old = serde_json::json!({
            "model": { "format": "onnx", "storageUri": "a.onnx" },
            "containerConcurrency": 4,
        });
        let read: RevisionTemplate = serde_json::from_value(old.clone()).expect("reads");
        let mut s = isvc("a.onnx", None);
        s.spec.predictor.container_concurrency = Some(4);
        assert_eq!(read, RevisionTemplate::of(&s.spec.predictor));
        assert_eq!(serde_json::to_value(&read).expect("writes"), old);
    }

    #[test]
    fn nothing_ready_waits_for_the_newest_or_refuses_with_its_reason() {
        let (r, _) = ServiceRecord::create(isvc("a.onnx", None), 0);
        let plan = plan_traffic(&r, &BTreeMap::new());
        assert_eq!(shares(&plan), vec![("iris-00001", 100)]);
        assert_eq!(plan.revisions[0].route, Route::Routable);
        assert_eq!(plan.latest_ready, None);
        let mut observed = BTreeMap::new();
        observed.insert(
            "iris-00001".to_owned(),
            RevisionObserved {
                failed: Some("model not found".into()),
                ..RevisionObserved::default()
            },
        );
        let plan = plan_traffic(&r, &observed);
        assert_eq!(
            plan.revisions[0].route,
            Route::Unavailable("model not found".into())
        );
    }

    #[test]
    fn rollout_without_canary_moves_everything_once_ready() {
        let (mut r, _) = ServiceRecord::create(isvc("a.onnx", None), 0);
        let plan = step(&mut r, &ready(&["iris-00001"]));
        assert_eq!(shares(&plan), vec![("iris-00001", 100)]);
        assert_eq!(r.rolled_out(), Some("iris-00001"));
        r.apply(isvc("b.onnx", None), 1);
        // The new revision is starting: the old keeps everything, the new
        // one is known with no share under the `latest` tag.
        let plan = step(&mut r, &ready(&["iris-00001"]));
        assert_eq!(shares(&plan), vec![("iris-00001", 100), ("iris-00002", 0)]);
        assert_eq!(plan.latest.as_deref(), Some("iris-00002"));
        assert_eq!(plan.prev.as_deref(), Some("iris-00001"));
        // Ready: it takes all; the old one is retired (absent from the plan).
        let plan = step(&mut r, &ready(&["iris-00001", "iris-00002"]));
        assert_eq!(shares(&plan), vec![("iris-00002", 100)]);
        assert_eq!(plan.prev, None);
        assert_eq!(r.rolled_out(), Some("iris-00002"));
    }

    #[test]
    fn canary_split_promote_and_rollback() {
        let (mut r, _) = ServiceRecord::create(isvc("a.onnx", None), 0);
        step(&mut r, &ready(&["iris-00001"]));
        r.apply(isvc("b.onnx", Some(20)), 1);
        let both = ready(&["iris-00001", "iris-00002"]);
        let plan = step(&mut r, &both);
        assert_eq!(shares(&plan), vec![("iris-00001", 80), ("iris-00002", 20)]);
        assert_eq!(plan.latest.as_deref(), Some("iris-00002"));
        assert_eq!(plan.prev.as_deref(), Some("iris-00001"));
        assert_eq!(r.rolled_out(), Some("iris-00001"));
        // A traffic-only change: 50%.
        assert_eq!(
            r.apply(isvc("b.onnx", Some(50)), 2),
            ApplyOutcome::Configured
        );
        let plan = step(&mut r, &both);
        assert_eq!(shares(&plan), vec![("iris-00001", 50), ("iris-00002", 50)]);
        // Roll back: 0%; the canary stays reachable by its tag.
        r.apply(isvc("b.onnx", Some(0)), 3);
        let plan = step(&mut r, &both);
        assert_eq!(shares(&plan), vec![("iris-00001", 100), ("iris-00002", 0)]);
        // Promote: drop the field.
        r.apply(isvc("b.onnx", None), 4);
        let plan = step(&mut r, &both);
        assert_eq!(shares(&plan), vec![("iris-00002", 100)]);
        assert_eq!(r.rolled_out(), Some("iris-00002"));
        // A third revision with 100 is a plain rollout.
        r.apply(isvc("c.onnx", Some(100)), 5);
        let plan = step(&mut r, &ready(&["iris-00002", "iris-00003"]));
        assert_eq!(shares(&plan), vec![("iris-00003", 100)]);
    }

    /// Applies, marks what `observed` saw ready, plans, records the
    /// rollout: what a backend's pass does.
    fn pass(
        record: &mut ServiceRecord,
        observed: &BTreeMap<String, RevisionObserved>,
    ) -> TrafficPlan {
        record.record_ready(observed);
        step(record, observed)
    }

    #[test]
    fn a_canary_share_after_promotion_splits_with_the_previous_rollout() {
        let (mut r, _) = ServiceRecord::create(isvc("a.onnx", None), 0);
        let both = ready(&["iris-00001", "iris-00002"]);
        pass(&mut r, &ready(&["iris-00001"]));
        r.apply(isvc("b.onnx", Some(20)), 1);
        pass(&mut r, &both);
        // Promote.
        r.apply(isvc("b.onnx", None), 2);
        let plan = pass(&mut r, &both);
        assert_eq!(shares(&plan), vec![("iris-00002", 100)]);
        // Roll back after the promotion: the previous rollout takes all,
        // the newest stays reachable by its tag, and it holds pass after
        // pass.
        assert_eq!(
            r.apply(isvc("b.onnx", Some(0)), 3),
            ApplyOutcome::Configured
        );
        for _ in 0..3 {
            let plan = pass(&mut r, &both);
            assert_eq!(shares(&plan), vec![("iris-00001", 100), ("iris-00002", 0)]);
            assert_eq!(plan.prev.as_deref(), Some("iris-00001"));
            assert_eq!(plan.latest.as_deref(), Some("iris-00002"));
            assert_eq!(r.rolled_out(), Some("iris-00001"));
        }
        // A share again, then promote again.
        r.apply(isvc("b.onnx", Some(30)), 4);
        let plan = pass(&mut r, &both);
        assert_eq!(shares(&plan), vec![("iris-00001", 70), ("iris-00002", 30)]);
        r.apply(isvc("b.onnx", None), 5);
        let plan = pass(&mut r, &both);
        assert_eq!(shares(&plan), vec![("iris-00002", 100)]);
        // A canary share straight after a promotion splits too.
        r.apply(isvc("b.onnx", Some(10)), 6);
        let plan = pass(&mut r, &both);
        assert_eq!(shares(&plan), vec![("iris-00001", 90), ("iris-00002", 10)]);
    }

    #[test]
    fn a_canary_share_on_the_only_revision_keeps_it_whole() {
        let (mut r, _) = ServiceRecord::create(isvc("a.onnx", Some(0)), 0);
        for _ in 0..2 {
            let plan = pass(&mut r, &ready(&["iris-00001"]));
            assert_eq!(shares(&plan), vec![("iris-00001", 100)]);
        }
        // A newer revision that is not ready yet does not pull the stable
        // one back to an older rollout.
        let (mut r, _) = ServiceRecord::create(isvc("a.onnx", None), 0);
        pass(&mut r, &ready(&["iris-00001"]));
        r.apply(isvc("b.onnx", None), 1);
        pass(&mut r, &ready(&["iris-00001", "iris-00002"]));
        r.apply(isvc("c.onnx", Some(20)), 2);
        let plan = pass(&mut r, &ready(&["iris-00001", "iris-00002"]));
        assert_eq!(shares(&plan), vec![("iris-00002", 100), ("iris-00003", 0)]);
    }

    #[test]
    fn a_restarted_backend_plans_what_it_planned_before() {
        // Each step of a canary, then the same record read back as a
        // restarted backend would: nothing observed ready yet, then the
        // revisions coming up in either order. The plan must not move.
        let mut r = ServiceRecord::create(isvc("a.onnx", None), 0).0;
        let both = ready(&["iris-00001", "iris-00002"]);
        let steps: Vec<(Option<InferenceService>, BTreeMap<String, RevisionObserved>)> = vec![
            (None, ready(&["iris-00001"])),
            (Some(isvc("b.onnx", Some(20))), ready(&["iris-00001"])),
            (None, both.clone()),
            (Some(isvc("b.onnx", None)), both.clone()),
            (Some(isvc("b.onnx", Some(0))), both.clone()),
            (Some(isvc("b.onnx", Some(50))), both.clone()),
        ];
        for (spec, observed) in steps {
            if let Some(spec) = spec {
                r.apply(spec, 1);
            }
            let before = pass(&mut r, &observed);
            let stored: ServiceRecord =
                serde_json::from_str(&serde_json::to_string(&r).expect("writes")).expect("reads");
            let only = |name: &str| -> BTreeMap<String, RevisionObserved> {
                observed
                    .get(name)
                    .map(|o| (name.to_owned(), o.clone()))
                    .into_iter()
                    .collect()
            };
            for restarted in [
                BTreeMap::new(),
                only("iris-00002"),
                only("iris-00001"),
                observed.clone(),
            ] {
                // Nothing the record holds was observed yet after the restart.
                let restarted: BTreeMap<String, RevisionObserved> = restarted
                    .into_iter()
                    .map(|(n, o)| {
                        (
                            n,
                            RevisionObserved {
                                ever_ready: false,
                                ..o
                            },
                        )
                    })
                    .collect();
                let mut again = stored.clone();
                let plan = pass(&mut again, &restarted);
                assert_eq!(plan, before, "restart with {restarted:?}");
                assert_eq!(again.rolled_out(), r.rolled_out());
            }
        }
    }

    #[test]
    fn a_canary_that_never_becomes_ready_takes_nothing() {
        let (mut r, _) = ServiceRecord::create(isvc("a.onnx", None), 0);
        step(&mut r, &ready(&["iris-00001"]));
        r.apply(isvc("broken.onnx", Some(30)), 1);
        let mut observed = ready(&["iris-00001"]);
        observed.insert(
            "iris-00002".to_owned(),
            RevisionObserved {
                failed: Some("crash loop: invalid model".into()),
                ..RevisionObserved::default()
            },
        );
        let plan = step(&mut r, &observed);
        assert_eq!(shares(&plan), vec![("iris-00001", 100), ("iris-00002", 0)]);
        assert_eq!(
            plan.revisions[1].route,
            Route::Unavailable("crash loop: invalid model".into())
        );
        assert_eq!(r.rolled_out(), Some("iris-00001"));
    }

    #[test]
    fn old_revisions_are_forgotten_but_routable_ones_kept() {
        let (mut r, _) = ServiceRecord::create(isvc("m0.onnx", None), 0);
        step(&mut r, &ready(&["iris-00001"]));
        for i in 1..60 {
            r.apply(isvc(&format!("m{i}.onnx"), None), i);
        }
        // Only the first was ever ready: it keeps the traffic.
        let plan = step(&mut r, &ready(&["iris-00001"]));
        assert_eq!(r.revisions.len(), MAX_REVISIONS_KEPT);
        assert!(r.revision("iris-00001").is_some());
        assert!(r.revision("iris-00060").is_some());
        assert_eq!(plan.percent("iris-00001"), 100);
    }

    #[test]
    fn autoscaler_settings_from_annotations_and_fields() {
        let mut s = isvc("a.onnx", None);
        s.spec.predictor.min_replicas = Some(0);
        s.spec.predictor.max_replicas = Some(4);
        s.spec.predictor.scale_target = Some(5.0);
        s.metadata
            .annotations
            .insert("autoscaling.knative.dev/window".into(), "6s".into());
        s.metadata.annotations.insert(
            "autoscaling.knative.dev/scale-to-zero-grace-period".into(),
            "6s".into(),
        );
        s.metadata
            .annotations
            .insert("other.io/x".into(), "ignored".into());
        let c = autoscaler_config(&s, &AutoscalerConfig::default()).expect("valid");
        assert_eq!(c.min_scale, 0);
        assert_eq!(c.max_scale, 4);
        assert_eq!(c.target, Some(5.0));
        assert_eq!(c.stable_window, Duration::from_secs(6));
        assert_eq!(c.scale_to_zero_grace_period, Duration::from_secs(6));
        assert_eq!(c.initial_scale, 1);

        let mut bad = s.clone();
        bad.metadata
            .annotations
            .insert("autoscaling.knative.dev/window".into(), "2s".into());
        let e = autoscaler_config(&bad, &AutoscalerConfig::default()).expect_err("too short");
        assert_eq!(e.path, "autoscaling.stableWindow");
        let mut bad = s.clone();
        bad.metadata
            .annotations
            .insert("autoscaling.knative.dev/target".into(), "NaN".into());
        let e = autoscaler_config(&bad, &AutoscalerConfig::default()).expect_err("nan");
        assert_eq!(
            e.path,
            "metadata.annotations[\"autoscaling.knative.dev/target\"]"
        );
        let mut bad = s;
        bad.metadata
            .annotations
            .insert("autoscaling.knative.dev/bogus".into(), "1".into());
        assert!(autoscaler_config(&bad, &AutoscalerConfig::default()).is_err());
    }

    #[test]
    fn a_plan_routes_with_states_tags_and_limits() {
        let plan = TrafficPlan {
            revisions: vec![
                PlannedRevision {
                    name: "iris-00001".into(),
                    percent: 80,
                    route: Route::Routable,
                },
                PlannedRevision {
                    name: "iris-00002".into(),
                    percent: 20,
                    route: Route::Routable,
                },
                PlannedRevision {
                    name: "iris-00003".into(),
                    percent: 0,
                    route: Route::Unavailable("model not found".into()),
                },
            ],
            latest: Some("iris-00003".into()),
            prev: Some("iris-00001".into()),
            latest_ready: Some("iris-00002".into()),
            rolled_out: Some("iris-00001".into()),
        };
        let addr: ReplicaAddr = "127.0.0.1:9000"
            .parse::<std::net::SocketAddr>()
            .expect("address")
            .into();
        let route = service_route(
            &plan,
            Duration::from_secs(7),
            |r| (r == "iris-00002").then_some(4),
            |r| {
                if r == "iris-00001" {
                    vec![addr]
                } else {
                    Vec::new()
                }
            },
        );
        assert_eq!(route.timeout, Duration::from_secs(7));
        assert_eq!(route.latest.as_deref(), Some("iris-00003"));
        assert_eq!(route.prev.as_deref(), Some("iris-00001"));
        let got: Vec<(&str, u32, &RevisionState, usize, u32)> = route
            .revisions
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.percent,
                    &r.state,
                    r.replicas.len(),
                    r.container_concurrency,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("iris-00001", 80, &RevisionState::Serving, 1, 0),
                ("iris-00002", 20, &RevisionState::Activating, 0, 4),
                (
                    "iris-00003",
                    0,
                    &RevisionState::Unavailable("model not found".into()),
                    0,
                    0
                ),
            ]
        );
    }
}
