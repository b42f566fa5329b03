//! inferd's control core.
//!
//! This crate will hold the reconcile core: desired state (revisions,
//! replicas per revision, traffic weights) computed as a pure function of the
//! specs and the observed metrics, which the local backend and the Kubernetes
//! backend only apply. It knows no Kubernetes, no processes and no clock:
//! every function takes the time it runs at, so the logic is tested on
//! simulated time.
//!
//! What exists now is the autoscaler ([`autoscaler`]), Knative's KPA
//! algorithm as a deterministic state machine.

pub mod autoscaler;
pub mod local;
pub mod scaling;
pub mod service;

pub use autoscaler::{
    Activity, Autoscaler, AutoscalerConfig, ConfigError, Decision, InvalidSample, Metric, Reason,
};
