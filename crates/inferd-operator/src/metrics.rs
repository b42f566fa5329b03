//! The operator's own Prometheus metrics, served on its metrics port
//! (`inferd operator --metrics-port`, `GET /metrics`), as controller-rs
//! exports them: how many passes ran and how they ended, how long they
//! took, why they failed, how many run now, and whether this replica leads.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

/// The registry and the handles the controller updates.
pub struct OperatorMetrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    failures: Family<ErrorLabels, Counter>,
    duration: Histogram,
    in_flight: Gauge,
    leader: Gauge,
}

impl std::fmt::Debug for OperatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorMetrics").finish_non_exhaustive()
    }
}

impl Default for OperatorMetrics {
    fn default() -> OperatorMetrics {
        OperatorMetrics::new()
    }
}

impl OperatorMetrics {
    pub fn new() -> OperatorMetrics {
        let mut registry = Registry::with_prefix("inferd_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconcile passes of InferenceServices, by result (ok, error)",
            reconciles.clone(),
        );
        let failures = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconcile passes, by kind of error",
            failures.clone(),
        );
        // 1 ms to about 65 s.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "reconcile_duration_seconds",
            "How long one reconcile pass took, API requests included",
            duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconcile passes running now",
            in_flight.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controller (holds the Lease, or runs without election), else 0",
            leader.clone(),
        );
        OperatorMetrics {
            registry,
            reconciles,
            failures,
            duration,
            in_flight,
            leader,
        }
    }

    /// A pass started; the returned guard counts it as running until it
    /// is dropped.
    pub fn started(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// A pass ended after `elapsed`, with `error` if it failed.
    pub fn finished(&self, elapsed: Duration, error: Option<&Error>) {
        self.duration.observe(elapsed.as_secs_f64());
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(error) = error {
            self.failures
                .get_or_create(&ErrorLabels {
                    error: error.kind(),
                })
                .inc();
        }
    }

    /// Whether this replica runs the controller now.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The metrics in the OpenMetrics text format.
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// A running pass, counted in `reconciles_in_flight` until dropped.
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_failures_and_leadership_are_counted() {
        let metrics = OperatorMetrics::new();
        {
            let _running = metrics.started();
            assert!(
                metrics
                    .text()
                    .contains("inferd_operator_reconciles_in_flight 1")
            );
            metrics.finished(Duration::from_millis(3), None);
        }
        metrics.finished(
            Duration::from_millis(5),
            Some(&Error::MissingField("metadata.name")),
        );
        metrics.set_leader(true);
        let text = metrics.text();
        for line in [
            r#"inferd_operator_reconciles_total{result="ok"} 1"#,
            r#"inferd_operator_reconciles_total{result="error"} 1"#,
            r#"inferd_operator_reconcile_failures_total{error="missing_field"} 1"#,
            "inferd_operator_reconcile_duration_seconds_count 2",
            "inferd_operator_reconciles_in_flight 0",
            "inferd_operator_leader 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
