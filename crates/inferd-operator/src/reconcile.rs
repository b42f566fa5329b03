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
//! - Revisions in the plan run `max(minReplicas, 1)` replicas (bounded by
//!   `maxReplicas`); retired revisions are kept at zero replicas, the
//!   newest [`ReconcileOptions::retired_kept`] of them, and the others'
//!   Deployments and Services are deleted and they leave the record.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use inferd_api::{ModelState, ModelStatus, TrafficTarget};
use inferd_control::service::{
    PlannedRevision, Revision, RevisionObserved, RevisionTemplate, Route, ServiceRecord,
    TrafficPlan, plan_traffic, readiness_conditions, revision_name,
};
use k8s_openapi::api::apps::v1::Deployment;

use crate::objects::{DesiredObject, OperatorOptions, desired_objects};
use crate::resource::{InferenceServiceObject, RecordedRevision, ServiceStatus};
use crate::{Error, Result};

/// Settings of the reconcile pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileOptions {
    pub objects: OperatorOptions,
    /// Retired revisions kept (at zero replicas) for a quick rollback.
    pub retired_kept: usize,
}

impl Default for ReconcileOptions {
    fn default() -> ReconcileOptions {
        ReconcileOptions {
            objects: OperatorOptions::default(),
            retired_kept: 2,
        }
    }
}

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
        Some(ObservedDeployment {
            name,
            ready_replicas,
            failed,
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
}

/// One reconcile pass for `isvc`, given its observed revision Deployments,
/// at `now`.
pub fn reconcile(
    isvc: &InferenceServiceObject,
    observed: &[ObservedDeployment],
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

    let mut recorded = previous.revisions.clone();
    let template = RevisionTemplate::of(&api.spec.predictor);
    if recorded
        .last()
        .is_none_or(|r| r.revision.template != template)
    {
        let number = recorded.last().map_or(1, |r| r.revision.number + 1);
        recorded.push(RecordedRevision {
            revision: Revision {
                name: revision_name(&name, number),
                number,
                template,
                created_at: now_secs,
            },
            ever_ready: false,
        });
    }

    let by_name: BTreeMap<&str, &ObservedDeployment> =
        observed.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut seen = BTreeMap::new();
    for r in &mut recorded {
        let d = by_name.get(r.revision.name.as_str());
        let ready_replicas = d.map_or(0, |d| d.ready_replicas);
        r.ever_ready |= ready_replicas > 0;
        seen.insert(
            r.revision.name.clone(),
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
        revisions: recorded.iter().map(|r| r.revision.clone()).collect(),
        rolled_out: previous.rolled_out.clone(),
        created_at: 0,
    };
    let plan = plan_traffic(&record, &seen);

    // The newest retired revisions stay, scaled to zero.
    let retired: Vec<String> = recorded
        .iter()
        .rev()
        .map(|r| r.revision.name.clone())
        .filter(|n| !plan.contains(n))
        .collect();
    let (kept_retired, dropped) = retired.split_at(retired.len().min(options.retired_kept));
    let dropped: BTreeSet<&str> = dropped.iter().map(String::as_str).collect();

    let predictor = &api.spec.predictor;
    let mut count = predictor.min_replicas_or_default().max(1);
    if let Some(max) = predictor.max_replicas.filter(|m| *m > 0) {
        count = count.min(max);
    }
    let replicas: BTreeMap<String, u32> = plan
        .revisions
        .iter()
        .map(|r| (r.name.clone(), count))
        .collect();
    let mut objects_plan = plan.clone();
    for r in kept_retired.iter().rev() {
        objects_plan.revisions.push(PlannedRevision {
            name: r.clone(),
            percent: 0,
            route: Route::Routable,
        });
    }
    let revisions: Vec<Revision> = record.revisions.clone();
    let apply = desired_objects(
        &api,
        uid,
        &objects_plan,
        &revisions,
        &replicas,
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
    recorded.retain(|r| !dropped.contains(r.revision.name.as_str()));

    let status = status(
        &previous,
        StatusInput {
            name: &name,
            namespace,
            generation: isvc.metadata.generation,
            plan: &plan,
            seen: &seen,
            now,
        },
        recorded,
        rolled_out,
    );
    Ok(Actions {
        apply,
        delete,
        status,
        plan,
    })
}

struct StatusInput<'a> {
    name: &'a str,
    namespace: &'a str,
    generation: Option<i64>,
    plan: &'a TrafficPlan,
    seen: &'a BTreeMap<String, RevisionObserved>,
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
        now,
    } = input;
    let observed = |r: &str| seen.get(r).cloned().unwrap_or_default();
    let serving: Vec<&PlannedRevision> = plan.revisions.iter().filter(|r| r.percent > 0).collect();
    let predictor_ready =
        !serving.is_empty() && serving.iter().all(|r| observed(&r.name).ready_replicas > 0);
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
    let traffic = plan
        .revisions
        .iter()
        .map(|r| TrafficTarget {
            revision_name: r.name.clone(),
            percent: r.percent,
            latest_revision: plan.latest.as_deref() == Some(r.name.as_str()),
            tag: if plan.latest.as_deref() == Some(r.name.as_str()) {
                Some("latest".to_owned())
            } else if plan.prev.as_deref() == Some(r.name.as_str()) {
                Some("prev".to_owned())
            } else {
                None
            },
        })
        .collect();
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
