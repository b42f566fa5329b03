//! The router's Prometheus metrics, in a registry of its own that
//! `GET /metrics` encodes.
//!
//! The `service` and `revision` labels only ever hold names from a route
//! table: requests for unknown services are counted under `service=""`, so
//! a client cannot grow the label set without bound.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    revision: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    service: String,
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    service: String,
    reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s, doubling: a loopback hop up to a cold start.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 20))
}

/// A revision's metric handles, resolved once per (service, revision).
pub(crate) struct RevisionHandles {
    pub(crate) in_flight: Gauge,
    pub(crate) retries: Counter,
    pub(crate) ok: Counter,
    pub(crate) duration: Histogram,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RevisionLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<RevisionLabels, Gauge>,
    held: Family<ServiceLabels, Gauge>,
    retries: Family<RevisionLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("inferd_router");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by service, revision (empty when none was chosen) and HTTP status",
            requests.clone(),
        );
        let duration = Family::<RevisionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response head, time held included",
            duration.clone(),
        );
        let in_flight = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "in_flight",
            "Requests sent to a revision's replicas and not finished",
            in_flight.clone(),
        );
        let held = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "held_requests",
            "Requests waiting for a usable replica of the service",
            held.clone(),
        );
        let retries = Family::<RevisionLabels, Counter>::default();
        registry.register(
            "retries",
            "Requests sent to a second replica after the first failed before its response head",
            retries.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "rejected",
            "Requests the router answered itself without reaching a replica, by reason",
            rejected.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            in_flight,
            held,
            retries,
            rejected,
        }
    }

    pub(crate) fn revision(&self, service: &str, revision: &str) -> RevisionHandles {
        let labels = RevisionLabels {
            service: service.to_owned(),
            revision: revision.to_owned(),
        };
        RevisionHandles {
            in_flight: self.in_flight.get_or_create_owned(&labels),
            retries: self.retries.get_or_create_owned(&labels),
            ok: self.requests.get_or_create_owned(&RequestLabels {
                service: service.to_owned(),
                revision: revision.to_owned(),
                code: 200,
            }),
            duration: self.duration.get_or_create_owned(&labels),
        }
    }

    pub(crate) fn held(&self, service: &str) -> Gauge {
        self.held.get_or_create_owned(&ServiceLabels {
            service: service.to_owned(),
        })
    }

    /// Counts one answered request whose revision has no resolved handles
    /// (none was chosen), or whose status is not 200.
    pub(crate) fn answered(&self, service: &str, revision: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                service: service.to_owned(),
                revision: revision.to_owned(),
                code,
            })
            .inc();
        self.duration
            .get_or_create(&RevisionLabels {
                service: service.to_owned(),
                revision: revision.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn rejected(&self, service: &str, reason: &'static str) {
        self.rejected
            .get_or_create(&RejectLabels {
                service: service.to_owned(),
                reason,
            })
            .inc();
    }

    /// The registry in the OpenMetrics text format, which Prometheus reads.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // Writing to a String cannot fail; a label that cannot be
            // encoded can, and leaves a partial exposition.
            tracing::warn!(error = %e, "encoding the router's metrics failed");
        }
        text
    }
}
