//! What `get` and `describe` show: a service's spec and status, its
//! revisions with their traffic and replicas, and recent events.

use std::path::PathBuf;

use inferd_api::{Condition, InferenceService, InferenceServiceStatus, ModelState, ModelStatus};
use serde::{Deserialize, Serialize};

use super::controller::{ModelFetch, ServiceState, model_state};
use super::store::StateDir;
use super::supervisor::Phase;
use crate::service::{RevisionTemplate, Route, TrafficPlan, readiness_conditions};

/// One event: when (seconds since the Unix epoch), why, what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub time: u64,
    pub reason: String,
    pub message: String,
}

/// One replica process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    pub id: String,
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    pub log: String,
}

/// One revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    pub name: String,
    pub number: u32,
    pub created_at: u64,
    /// Ready, Starting, Failed, ScaledToZero, Pending or Retired.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub traffic_percent: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub desired_replicas: u32,
    pub ready_replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<String>,
    pub template: RevisionTemplate,
    pub replicas: Vec<ReplicaView>,
}

/// One service as `get -o yaml` and `describe` show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    /// The applied spec with the observed status.
    pub service: InferenceService,
    pub generation: u64,
    pub created_at: u64,
    pub revisions: Vec<RevisionView>,
    pub events: Vec<EventView>,
}

impl ServiceView {
    pub fn name(&self) -> &str {
        &self.service.metadata.name
    }

    /// Whether the `Ready` condition is `True`.
    pub fn ready(&self) -> bool {
        condition(&self.service, "Ready") == Some("True")
    }

    /// Ready replicas over all revisions.
    pub fn ready_replicas(&self) -> u32 {
        self.revisions.iter().map(|r| r.ready_replicas).sum()
    }
}

/// A condition's status, by type.
fn condition<'a>(isvc: &'a InferenceService, type_: &str) -> Option<&'a str> {
    isvc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

pub(super) fn service_view(s: &ServiceState) -> ServiceView {
    let mut service = s.record.spec.clone();
    service.status = Some(s.status.clone());
    let plan = s.plan.as_ref();
    let revisions = s
        .record
        .revisions
        .iter()
        .rev()
        .map(|rev| {
            let r = s.revisions.get(&rev.name);
            let planned = plan.and_then(|p| p.revisions.iter().find(|x| x.name == rev.name));
            let replicas: Vec<ReplicaView> = r
                .map(|r| {
                    r.replicas
                        .iter()
                        .map(|slot| {
                            let st = slot.handle.status();
                            ReplicaView {
                                id: slot.handle.id().to_owned(),
                                phase: st.phase.as_str().to_owned(),
                                pid: st.pid,
                                http: st.http_addr.map(|a| a.to_string()),
                                grpc: st.grpc_addr.map(|a| a.to_string()),
                                restarts: st.restarts,
                                last_exit: st.last_exit,
                                message: st.message,
                                gpus: slot.gpus.clone(),
                                log: slot.log.display().to_string(),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let ready_replicas = replicas
                .iter()
                .filter(|x| x.phase == Phase::Ready.as_str())
                .count() as u32;
            let (state_name, reason) = match (r, planned.map(|p| &p.route)) {
                (_, None) => ("Retired".to_owned(), None),
                (_, Some(Route::Unavailable(reason))) => {
                    ("Failed".to_owned(), Some(reason.clone()))
                }
                (Some(r), Some(_)) if r.pending.is_some() && ready_replicas == 0 => {
                    ("Pending".to_owned(), r.pending.clone())
                }
                (Some(r), Some(_)) if ready_replicas > 0 => ("Ready".to_owned(), r.pending.clone()),
                (Some(r), Some(_)) if r.ever_ready => ("ScaledToZero".to_owned(), None),
                (Some(r), Some(_)) => {
                    let (_, reason) = model_state(r);
                    ("Starting".to_owned(), reason)
                }
                (None, Some(_)) => ("Starting".to_owned(), None),
            };
            let mut tags = Vec::new();
            if plan.and_then(|p| p.latest.as_deref()) == Some(rev.name.as_str()) {
                tags.push("latest".to_owned());
            }
            if plan.and_then(|p| p.prev.as_deref()) == Some(rev.name.as_str()) {
                tags.push("prev".to_owned());
            }
            RevisionView {
                name: rev.name.clone(),
                number: rev.number,
                created_at: rev.created_at,
                state: state_name,
                reason,
                traffic_percent: planned.map_or(0, |p| p.percent),
                tags,
                desired_replicas: r.map_or(0, |r| r.desired),
                ready_replicas,
                model_path: r.and_then(|r| match &r.model {
                    ModelFetch::Ready(p) => Some(p.display().to_string()),
                    _ => None,
                }),
                autoscaler: r
                    .and_then(|r| r.scaler.as_ref())
                    .and_then(|s| s.decision())
                    .map(|d| {
                        format!(
                            "desired {} ({}), stable avg {:.2}, panic avg {:.2}{}",
                            d.desired_replicas,
                            d.reason,
                            d.stable_average,
                            d.panic_average,
                            if d.panic { ", PANIC" } else { "" }
                        )
                    }),
                template: rev.template.clone(),
                replicas,
            }
        })
        .collect();
    ServiceView {
        service,
        generation: s.record.generation,
        created_at: s.record.created_at,
        revisions,
        events: s.events.iter().cloned().collect(),
    }
}

/// Log files of a service's replicas (optionally of revision N), as
/// (replica id, path), oldest revision first; files of replicas that are
/// gone count too.
pub(super) fn log_files(
    s: &ServiceState,
    state: &StateDir,
    revision: Option<u32>,
) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for rev in &s.record.revisions {
        if revision.is_some_and(|n| n != rev.number) {
            continue;
        }
        let dir = state.service_logs(s.record.name()).join(&rev.name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<(std::time::SystemTime, String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .map(|p| {
                let modified = std::fs::metadata(&p)
                    .and_then(|m| m.created().or_else(|_| m.modified()))
                    .unwrap_or(std::time::UNIX_EPOCH);
                let id = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (modified, id, p)
            })
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|(_, id, p)| (id, p)));
    }
    out
}

/// The status KServe users read: conditions, revisions, traffic, model state.
pub(super) fn status(s: &ServiceState, plan: &TrafficPlan, url: &str) -> InferenceServiceStatus {
    let name = s.record.name();
    let ready_of = |rev: &str| {
        s.revisions.get(rev).is_some_and(|r| {
            r.ever_ready
                && (r.replicas.is_empty()
                    || r.replicas
                        .iter()
                        .any(|x| x.handle.status().phase == Phase::Ready)
                    || r.desired == 0)
        })
    };
    let serving: Vec<&str> = plan
        .revisions
        .iter()
        .filter(|r| r.percent > 0)
        .map(|r| r.name.as_str())
        .collect();
    let predictor_ready = !serving.is_empty() && serving.iter().all(|r| ready_of(r));
    let latest = s.record.latest().map(|r| r.name.clone());
    let latest_state = latest
        .as_ref()
        .and_then(|l| s.revisions.get(l))
        .map(model_state);
    let latest_failure = match &latest_state {
        Some((ModelState::FailedToLoad, reason)) => reason.clone(),
        _ => None,
    };
    let detail = latest_state.as_ref().and_then(|(_, reason)| reason.clone());
    let mut conditions = readiness_conditions(
        plan,
        predictor_ready,
        latest_failure.as_deref(),
        detail.as_deref(),
    );
    // Replicas of a revision the router knows that keep dying.
    let crashing: Vec<String> = plan
        .revisions
        .iter()
        .filter_map(|p| s.revisions.get(&p.name).map(|r| (p, r)))
        .flat_map(|(p, r)| {
            r.replicas.iter().filter_map(move |x| {
                let st = x.handle.status();
                (st.phase == Phase::CrashLoop).then(|| {
                    format!(
                        "{} replica {} ({} restarts{})",
                        p.name,
                        x.handle.id(),
                        st.restarts,
                        st.last_exit
                            .map(|e| format!(", last {e}"))
                            .unwrap_or_default()
                    )
                })
            })
        })
        .collect();
    conditions.push(Condition {
        type_: "ReplicasHealthy".to_owned(),
        status: if crashing.is_empty() { "True" } else { "False" }.to_owned(),
        reason: (!crashing.is_empty()).then(|| "CrashLoopBackOff".to_owned()),
        message: (!crashing.is_empty()).then(|| crashing.join("; ")),
        last_transition_time: None,
    });
    InferenceServiceStatus {
        url: Some(format!("{url}/v2/models/{name}")),
        conditions,
        latest_ready_revision: plan.latest_ready.clone(),
        latest_created_revision: latest,
        traffic: plan.traffic_targets(),
        model_status: latest_state.map(|(state, reason)| ModelStatus { state, reason }),
    }
}
