//! What one reconcile pass decides for an InferenceService, as a pure
//! function of the object (spec and status) and what was observed of its
//! revision Deployments: the revision record, the traffic plan (the control
//! core's [`plan_traffic`]), the objects to apply, the revisions whose
//! objects to delete, and the new status. The controller only performs
//! these actions.
//!
//! - A new revision is recorded when the predictor's [`RevisionTemplate`]
//!   differs from the newest recorded one (the rule of
//!   [`ServiceRecord::apply`](inferd_control::service::ServiceRecord::apply)).
//! - Revisions in the plan run what the autoscaler decided for them (the
//!   `decided` map, from [`crate::autoscale`]); a revision it has not
//!   decided for starts at the KPA's initial scale (at least `minReplicas`
//!   and 1), or, once it was ever ready, keeps the replicas its Deployment
//!   has (after an operator restart, until the autoscaler's first tick).
//!   With `autoscalerClass: hpa`, a revision taking traffic gets a
//!   HorizontalPodAutoscaler on CPU instead ([`Scale::Hpa`]).
//! - Retired revisions are kept at zero replicas, the newest
//!   [`ReconcileOptions::retired_kept`] of them, and the others'
//!   Deployments and Services are deleted and they leave the record.
//! - What changed is also told as Kubernetes Events ([`Actions::events`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use inferd_api::{AutoscalerClass, ModelState, ModelStatus, TrafficTarget};
use inferd_control::autoscaler::AutoscalerConfig;
use inferd_control::service::{
    PlannedRevision, Revision, RevisionObserved, RevisionTemplate, Route, ServiceRecord,
    TrafficPlan, autoscaler_config, plan_traffic, readiness_conditions, revision_name,
};
use k8s_openapi::api::apps::v1::Deployment;

use crate::objects::{DesiredObject, OperatorOptions, Scale, desired_objects_scaled};
use crate::resource::{InferenceServiceObject, RecordedRevision, ServiceStatus};
use crate::{Error, Result};

/// Settings of the reconcile pass.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconcileOptions {
    pub objects: OperatorOptions,
    /// Retired revisions kept (at zero replicas) for a quick rollback.
    pub retired_kept: usize,
    /// The KPA's cluster-wide defaults (Knative's), which a service's
    /// annotations and fields override.
    pub autoscaler: AutoscalerConfig,
}

impl Default for ReconcileOptions {
    fn default() -> ReconcileOptions {
        ReconcileOptions {
            objects: OperatorOptions::default(),
            retired_kept: 2,
            autoscaler: AutoscalerConfig::default(),
        }
    }
}

/// The target CPU utilisation of an HPA when `scaleTarget` is not set
/// (KServe's default).
pub const HPA_DEFAULT_CPU_UTILIZATION: u32 = 80;

/// What was observed of one revision Deployment the service owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedDeployment {
    /// `metadata.name`, the revision's name.
    pub name: String,
    /// `status.readyReplicas`.
    pub ready_replicas: u32,
    /// Why its rollout cannot finish (condition `Progressing=False` or
    /// `ReplicaFailure=True`).
    pub failed: Option<String>,
    /// `spec.replicas`: what was last decided (absent under an HPA).
    pub replicas: Option<u32>,
}

impl ObservedDeployment {
    /// Reads a Deployment as the API server returned it.
    pub fn of(deployment: &Deployment) -> Option<ObservedDeployment> {
        let name = deployment.metadata.name.clone()?;
        let status = deployment.status.as_ref();
        let ready_replicas = status
            .and_then(|s| s.ready_replicas)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        let failed = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| {
                (c.type_ == "Progressing" && c.status == "False")
                    || (c.type_ == "ReplicaFailure" && c.status == "True")
            })
            .map(|c| {
                let reason = c.reason.clone().unwrap_or_else(|| c.type_.clone());
                match &c.message {
                    Some(m) => format!("{reason}: {m}"),
                    None => reason,
                }
            });
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .and_then(|n| u32::try_from(n).ok());
        Some(ObservedDeployment {
            name,
            ready_replicas,
            failed,
            replicas,
        })
    }
}

/// What the controller does for one service.
#[derive(Clone, Debug, PartialEq)]
pub struct Actions {
    /// Objects to server-side apply, in order.
    pub apply: Vec<DesiredObject>,
    /// Revisions whose Deployment and Service to delete.
    pub delete: Vec<String>,
    /// The status to write through the status subresource.
    pub status: ServiceStatus,
    /// The traffic plan the status and objects follow.
    pub plan: TrafficPlan,
    /// What changed, for Kubernetes Events on the InferenceService.
    pub events: Vec<EventNote>,
}

/// One Kubernetes Event to record on the InferenceService.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// CamelCase, as `kubectl describe` shows it.
    pub reason: &'static str,
    pub note: String,
}

impl EventNote {
    fn normal(reason: &'static str, note: String) -> EventNote {
        EventNote {
            warning: false,
            reason,
            note,
        }
    }
}

/// One reconcile pass for `isvc`, given its observed revision Deployments,
/// at `now`, before the autoscaler decided anything.
pub fn reconcile(
    isvc: &InferenceServiceObject,
    observed: &[ObservedDeployment],
    now: SystemTime,
    options: &ReconcileOptions,
) -> Result<Actions> {
    reconcile_scaled(isvc, observed, &Inputs::default(), now, options)
}

/// What a pass reads besides the service and its Deployments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// The replicas the autoscaler decided per revision.
    pub decided: BTreeMap<String, u32>,
    /// The Secrets each ServiceAccount the revisions run as lists (name →
    /// Secret names), for the model download's credentials.
    pub account_secrets: BTreeMap<String, Vec<String>>,
}

/// One reconcile pass for `isvc`, given its observed revision Deployments
/// and the replicas the autoscaler decided per revision (`inputs`), at
/// `now`.
pub fn reconcile_scaled(
    isvc: &InferenceServiceObject,
    observed: &[ObservedDeployment],
    inputs: &Inputs,
    now: SystemTime,
    options: &ReconcileOptions,
) -> Result<Actions> {
    let api = isvc.to_api()?;
    let namespace = isvc
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = isvc
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingField("metadata.uid"))?;
    let name = api.metadata.name.clone();
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let previous = isvc.status.clone().unwrap_or_default();

    let mut events = Vec::new();
    let mut recorded = previous.revisions.clone();
    let template = RevisionTemplate::of(&api.spec.predictor);
    if recorded.last().is_none_or(|r| r.template != template) {
        let number = recorded.last().map_or(1, |r| r.number + 1);
        events.push(EventNote::normal(
            "RevisionCreated",
            format!(
                "{} serves {}",
                revision_name(&name, number),
                template.model.storage_uri
            ),
        ));
        recorded.push(Revision {
            name: revision_name(&name, number),
            number,
            template,
            created_at: now_secs,
            ever_ready: false,
        });
    }

    let by_name: BTreeMap<&str, &ObservedDeployment> =
        observed.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut seen = BTreeMap::new();
    for r in &mut recorded {
        let d = by_name.get(r.name.as_str());
        let ready_replicas = d.map_or(0, |d| d.ready_replicas);
        r.ever_ready |= ready_replicas > 0;
        seen.insert(
            r.name.clone(),
            RevisionObserved {
                ready_replicas,
                ever_ready: r.ever_ready,
                failed: d.and_then(|d| d.failed.clone()).filter(|_| !r.ever_ready),
            },
        );
    }

    let record = ServiceRecord {
        spec: api.clone(),
        generation: isvc
            .metadata
            .generation
            .and_then(|g| u64::try_from(g).ok())
            .unwrap_or(0),
        revisions: recorded.clone(),
        rolled_out: previous.rolled_out.clone(),
        created_at: 0,
    };
    let plan = plan_traffic(&record, &seen);

    // The newest retired revisions stay, scaled to zero.
    let retired: Vec<String> = recorded
        .iter()
        .rev()
        .map(|r| r.name.clone())
        .filter(|n| !plan.contains(n))
        .collect();
    let (kept_retired, dropped) = retired.split_at(retired.len().min(options.retired_kept));
    let dropped: BTreeSet<&str> = dropped.iter().map(String::as_str).collect();

    let autoscaling = autoscaler_config(&api, &options.autoscaler)
        .map_err(|e| Error::Autoscaling(e.to_string()))?;
    let predictor = &api.spec.predictor;
    let hpa = predictor.autoscaler_class == Some(AutoscalerClass::Hpa);
    let initial = {
        let n = autoscaling.initial_scale.max(autoscaling.min_scale).max(1);
        if autoscaling.max_scale > 0 {
            n.min(autoscaling.max_scale)
        } else {
            n
        }
    };
    let mut scales: BTreeMap<String, Scale> = BTreeMap::new();
    for r in &plan.revisions {
        let ever_ready = seen.get(&r.name).is_some_and(|o| o.ever_ready);
        let scale = if hpa && r.percent > 0 {
            let min = predictor.min_replicas_or_default().max(1);
            Scale::Hpa {
                min,
                max: predictor.max_replicas.unwrap_or(0).max(min),
                cpu_utilization: predictor
                    .scale_target
                    .filter(|t| t.is_finite() && *t >= 1.0 && *t <= 100.0)
                    .map_or(HPA_DEFAULT_CPU_UTILIZATION, |t| t.round() as u32),
            }
        } else if let Some(n) = inputs.decided.get(&r.name) {
            Scale::Replicas(*n)
        } else if ever_ready && let Some(n) = by_name.get(r.name.as_str()).and_then(|d| d.replicas)
        {
            Scale::Replicas(n)
        } else {
            Scale::Replicas(initial)
        };
        scales.insert(r.name.clone(), scale);
    }
    let mut objects_plan = plan.clone();
    for r in kept_retired.iter().rev() {
        objects_plan.revisions.push(PlannedRevision {
            name: r.clone(),
            percent: 0,
            route: Route::Routable,
        });
        scales.insert(r.clone(), Scale::Replicas(0));
    }
    let revisions: Vec<Revision> = record.revisions.clone();
    let apply = desired_objects_scaled(
        &api,
        uid,
        &objects_plan,
        &revisions,
        &scales,
        &inputs.account_secrets,
        &options.objects,
    )?;

    let kept: BTreeSet<&str> = objects_plan.routable().collect();
    let delete: Vec<String> = observed
        .iter()
        .map(|d| d.name.as_str())
        .filter(|n| !kept.contains(n))
        .map(str::to_owned)
        .collect();

    let mut rolled_out = previous.rolled_out.clone();
    if let Some(r) = &plan.rolled_out
        && rolled_out.last() != Some(r)
    {
        rolled_out.push(r.clone());
    }
    rolled_out.retain(|r| kept.contains(r.as_str()));
    recorded.retain(|r| !dropped.contains(r.name.as_str()));

    for d in &dropped {
        events.push(EventNote::normal(
            "RevisionDeleted",
            format!("{d}: retired beyond the {} kept", options.retired_kept),
        ));
    }
    for r in &plan.revisions {
        let before = by_name.get(r.name.as_str()).and_then(|d| d.replicas);
        if let (Some(before), Some(Scale::Replicas(after))) = (before, scales.get(&r.name))
            && before != *after
        {
            events.push(EventNote::normal(
                "Scaled",
                format!("{}: {before} -> {after} replica(s)", r.name),
            ));
        }
    }
    let status = status(
        &previous,
        StatusInput {
            name: &name,
            namespace,
            generation: isvc.metadata.generation,
            plan: &plan,
            seen: &seen,
            scales: &scales,
            now,
        },
        recorded,
        rolled_out,
    );
    let shares = |t: &[TrafficTarget]| {
        t.iter()
            .filter(|t| t.percent > 0)
            .map(|t| format!("{} {}%", t.revision_name, t.percent))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let now_shares = shares(&status.traffic);
    if now_shares != shares(&previous.traffic) && !now_shares.is_empty() {
        events.push(EventNote::normal("TrafficShifted", now_shares));
    }
    let failure = |s: &ServiceStatus| {
        s.model_status
            .as_ref()
            .filter(|m| m.state == ModelState::FailedToLoad)
            .and_then(|m| m.reason.clone())
    };
    if let Some(reason) = failure(&status)
        && failure(&previous).as_ref() != Some(&reason)
    {
        events.push(EventNote {
            warning: true,
            reason: "RevisionFailed",
            note: format!(
                "{}: {reason}",
                status
                    .latest_created_revision
                    .as_deref()
                    .unwrap_or_default()
            ),
        });
    }
    let ready = |s: &ServiceStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone())
    };
    match (ready(&previous), ready(&status)) {
        (before, Some(now)) if before.as_deref() != Some(now.as_str()) => {
            if now == "True" {
                events.push(EventNote::normal(
                    "Ready",
                    "the service is ready".to_owned(),
                ));
            } else if before.as_deref() == Some("True") {
                events.push(EventNote {
                    warning: true,
                    reason: "NotReady",
                    note: "the service is no longer ready".to_owned(),
                });
            }
        }
        _ => {}
    }
    Ok(Actions {
        apply,
        delete,
        status,
        plan,
        events,
    })
}

struct StatusInput<'a> {
    name: &'a str,
    namespace: &'a str,
    generation: Option<i64>,
    plan: &'a TrafficPlan,
    seen: &'a BTreeMap<String, RevisionObserved>,
    /// The replicas each planned revision's Deployment is given.
    scales: &'a BTreeMap<String, Scale>,
    now: SystemTime,
}

/// KServe's status: conditions (Ready, PredictorReady, RoutesReady, and
/// LatestRevisionReady when the newest revision fails while an older one
/// serves), the revisions by role, the traffic with tags, the model state.
fn status(
    previous: &ServiceStatus,
    input: StatusInput<'_>,
    revisions: Vec<RecordedRevision>,
    rolled_out: Vec<String>,
) -> ServiceStatus {
    let StatusInput {
        name,
        namespace,
        generation,
        plan,
        seen,
        scales,
        now,
    } = input;
    let observed = |r: &str| seen.get(r).cloned().unwrap_or_default();
    let serving: Vec<&PlannedRevision> = plan.revisions.iter().filter(|r| r.percent > 0).collect();
    // A revision that served and that the autoscaler scaled to zero is
    // ready, as in Knative and the local backend: the router holds its
    // requests while it scales up again.
    let revision_ready = |r: &PlannedRevision| {
        let o = observed(&r.name);
        o.ready_replicas > 0 || (o.ever_ready && scales.get(&r.name) == Some(&Scale::Replicas(0)))
    };
    let predictor_ready = !serving.is_empty() && serving.iter().all(|r| revision_ready(r));
    let latest_failed = plan
        .latest
        .as_deref()
        .and_then(|l| observed(l).failed)
        .filter(|_| {
            plan.latest
                .as_deref()
                .is_some_and(|l| !observed(l).ever_ready)
        });
    let mut conditions =
        readiness_conditions(plan, predictor_ready, latest_failed.as_deref(), None);
    // A condition keeps its transition time while its status stays.
    let stamp = rfc3339(now);
    for c in &mut conditions {
        let before = previous.conditions.iter().find(|p| p.type_ == c.type_);
        c.last_transition_time = match before {
            Some(p) if p.status == c.status && p.last_transition_time.is_some() => {
                p.last_transition_time.clone()
            }
            _ => Some(stamp.clone()),
        };
    }
    let traffic = plan.traffic_targets();
    let model_status = plan.latest.as_deref().map(|l| {
        let o = observed(l);
        if o.ever_ready {
            ModelStatus {
                state: ModelState::Loaded,
                reason: None,
            }
        } else if let Some(reason) = latest_failed.clone() {
            ModelStatus {
                state: ModelState::FailedToLoad,
                reason: Some(reason),
            }
        } else {
            ModelStatus {
                state: ModelState::Pending,
                reason: None,
            }
        }
    });
    ServiceStatus {
        observed_generation: generation,
        url: Some(format!("http://{name}.{namespace}.svc.cluster.local")),
        conditions,
        latest_ready_revision: plan.latest_ready.clone(),
        latest_created_revision: plan.latest.clone(),
        traffic,
        model_status,
        revisions,
        rolled_out,
    }
}

/// `2006-01-02T15:04:05Z`, as Kubernetes writes times.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests;
