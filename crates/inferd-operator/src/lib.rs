//! inferd's Kubernetes backend: the `InferenceService` CustomResourceDefinition
//! and the objects that run one service's revisions.
//!
//! This is the pure half of the operator (controller-rs's shape): builders
//! with no I/O, computing the desired objects from the spec, the control
//! core's [`TrafficPlan`](inferd_control::service::TrafficPlan), the
//! revisions and the replica counts the autoscaler chose. The half that
//! talks to the API server applies them with server-side apply.
//!
//! - [`crd()`]: the CRD, its structural schema generated from inferd-api's
//!   types (feature `schema`), printed by `inferd manifests crds`.
//! - [`desired_objects`]: per revision in the plan, a Deployment and a
//!   headless Service; and a Service named after the InferenceService
//!   selecting the router pods.
//! - [`reconcile::reconcile`]: one pass as a pure function: the revision
//!   record (kept in the InferenceService's status, see [`resource`]), the
//!   traffic plan, the objects to apply and delete, and the new status.
//! - [`autoscale`]: the KPA in the cluster, fed by the routers' `/stats`,
//!   deciding the revision Deployments' replicas, to and from zero.
//! - [`controller`]: the kube-runtime controller that performs those passes
//!   with server-side apply (`inferd operator`).
//! - [`metrics`]: the operator's own Prometheus metrics (passes by result,
//!   their duration, failures by kind, passes running, leadership).
//! - [`leader`]: leader election through a `coordination.k8s.io/v1` Lease,
//!   so that of several operator replicas only one runs the controller.
//! - [`structural::violations`]: checks a document against the CRD's schema
//!   the way the API server does (with strict field validation).
//! - [`discovery::route_table`]: the in-cluster router's table as a pure
//!   function of the InferenceServices' status (shares, tags) and the
//!   revisions' EndpointSlices (ready pods).
//! - [`router`]: what `inferd router` runs in each router pod: watches
//!   feeding that table to an [`inferd_router::Router`], its HTTP and gRPC
//!   listeners, and an admin listener (`/stats` for the autoscaler,
//!   `/metrics`, `/healthz`).
//! - [`monitoring`]: the Prometheus Operator's PodMonitors for the routers
//!   and replicas, found through discovery, and the alerting rules.

pub mod autoscale;
pub mod controller;
pub mod crd;
pub mod discovery;
pub mod install;
pub mod leader;
pub mod metrics;
pub mod monitoring;
mod objects;
pub mod reconcile;
pub mod resource;
pub mod router;
pub mod structural;

pub use crd::crd;
pub use objects::{
    ANNOTATION_STORAGE_SECRET, DesiredObject, GRPC_PORT, HTTP_PORT, LABEL_INFERENCE_SERVICE,
    LABEL_REVISION, MODEL_DIR, OperatorOptions, ROUTER_ADMIN_PORT, ROUTER_NAME, Scale,
    desired_objects, desired_objects_scaled, router_objects,
};

impl Error {
    /// A short name of the kind of error, for the failure metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UnknownRevision(_) => "unknown_revision",
            Error::Annotation { .. } => "annotation",
            Error::MissingField(_) => "missing_field",
            Error::Connect(_) => "connect",
            Error::Field { .. } => "field",
            Error::Autoscaling(_) => "autoscaling",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "kube",
            Error::LeaseConfig(_) => "lease_config",
            Error::LeadershipLost => "leadership_lost",
            Error::Yaml(_) => "yaml",
            Error::Listen { .. } => "listen",
            Error::Routes(_) => "routes",
        }
    }
}

/// What the operator's builders can refuse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The traffic plan names a revision the caller did not pass.
    #[error("the traffic plan names revision {0}, which is not among the service's revisions")]
    UnknownRevision(String),
    /// An annotation's value is not usable.
    #[error("metadata.annotations[\"{key}\"]: {message}")]
    Annotation { key: String, message: String },
    /// The object lacks a field the API server always sets.
    #[error("the object has no {0}")]
    MissingField(&'static str),
    /// No cluster configuration was found (in-cluster service account or kubeconfig).
    #[error("cannot connect to a Kubernetes cluster")]
    Connect(#[source] kube::Error),
    /// A spec field the API server would refuse in the generated objects.
    #[error("{path}: {message}")]
    Field { path: String, message: String },
    /// The service's autoscaling settings are unusable.
    #[error("autoscaling: {0}")]
    Autoscaling(String),
    /// A request to the API server failed.
    #[error("Kubernetes API request failed")]
    Kube(#[source] kube::Error),
    /// The leader-election settings are unusable.
    #[error("invalid leader election settings: {0}")]
    LeaseConfig(String),
    /// The leader could not renew its Lease within the renew deadline, or
    /// another replica holds it: the work was stopped, since another replica
    /// may now lead.
    #[error("lost the leadership: the lease was not renewed in time or another replica holds it")]
    LeadershipLost,
    /// Objects could not be written as YAML.
    #[error("cannot write YAML: {0}")]
    Yaml(String),
    /// A listener of the router could not be bound (address in use, no
    /// permission for the port).
    #[error("cannot listen on {addr} ({what})")]
    Listen {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The router refused a route table.
    #[error("the router refused its route table")]
    Routes(#[source] inferd_router::RouteError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Writes objects as one YAML stream, documents separated by `---`.
pub fn to_yaml<T: serde::Serialize>(objects: &[T]) -> Result<String> {
    let mut out = String::new();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(object).map_err(|e| Error::Yaml(e.to_string()))?);
    }
    Ok(out)
}

/// The CRD as YAML, as `inferd manifests crds` prints it.
pub fn crds_yaml() -> Result<String> {
    to_yaml(&[crd()])
}
