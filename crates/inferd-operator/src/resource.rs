//! The InferenceService as the API server stores it: Kubernetes' full
//! metadata (uid, generation), inferd-api's spec, and the operator's status,
//! which also holds the service's revisions.
//!
//! Revisions are state the operator cannot recompute from the spec (which
//! templates came before, when each was first ready, which one was rolled
//! out), and state lives in the API server, so it is kept in
//! `status.revisions` and `status.rolledOut` beside what users read
//! (KServe's fields). The status is written only through the status
//! subresource, so a user's `kubectl apply` of the spec never touches it.

use std::borrow::Cow;

use inferd_api::{
    API_VERSION, Condition, GROUP, InferenceServiceSpec, KIND_INFERENCE_SERVICE, ModelStatus,
    TrafficTarget, VERSION,
};
use inferd_control::service::Revision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::crd::PLURAL;
use crate::{Error, Result};

/// `serving.inferd.dev/v1alpha1` `InferenceService`, as read from and
/// written to the API server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceObject {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: InferenceServiceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceStatus>,
}

fn api_version() -> String {
    API_VERSION.to_owned()
}

fn kind() -> String {
    KIND_INFERENCE_SERVICE.to_owned()
}

/// The status the operator writes: KServe's fields, `observedGeneration`,
/// and the revision record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_ready_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_created_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_status: Option<ModelStatus>,
    /// The revisions that still have objects, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RecordedRevision>,
    /// Revisions that took all the traffic, oldest first; the last one is
    /// the rolled-out revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_out: Vec<String>,
}

/// One revision as the status records it: the control core's revision,
/// with whether a replica of it was ever ready (`everReady`), so a revision
/// scaled down after serving can take traffic again.
pub type RecordedRevision = Revision;

impl InferenceServiceObject {
    /// The object as a user would create it from inferd-api's view (no
    /// uid, generation or status yet).
    pub fn from_api(isvc: &inferd_api::InferenceService) -> InferenceServiceObject {
        let non_empty =
            |m: &std::collections::BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
        InferenceServiceObject {
            api_version: API_VERSION.to_owned(),
            kind: KIND_INFERENCE_SERVICE.to_owned(),
            metadata: ObjectMeta {
                name: Some(isvc.metadata.name.clone()),
                namespace: isvc.metadata.namespace.clone(),
                labels: non_empty(&isvc.metadata.labels),
                annotations: non_empty(&isvc.metadata.annotations),
                ..ObjectMeta::default()
            },
            spec: isvc.spec.clone(),
            status: None,
        }
    }

    /// inferd-api's view of the object (name, namespace, labels,
    /// annotations, spec), which the control core and the object builders
    /// take.
    pub fn to_api(&self) -> Result<inferd_api::InferenceService> {
        let name = self
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingField("metadata.name"))?;
        Ok(inferd_api::InferenceService {
            api_version: API_VERSION.to_owned(),
            kind: KIND_INFERENCE_SERVICE.to_owned(),
            metadata: inferd_api::ObjectMeta {
                name,
                namespace: self.metadata.namespace.clone(),
                labels: self.metadata.labels.clone().unwrap_or_default(),
                annotations: self.metadata.annotations.clone().unwrap_or_default(),
            },
            spec: self.spec.clone(),
            status: None,
        })
    }
}

impl kube::Resource for InferenceServiceObject {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(KIND_INFERENCE_SERVICE)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(PLURAL)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
