//! Prometheus metrics of the data plane, in an explicitly passed registry.
//!
//! The `model` label only ever holds names of loaded models: requests for
//! unknown models are counted under `model=""` so a client cannot grow the
//! label set without bound. Handles for a model's successful requests are
//! resolved once at load time, so the hot path touches no label map.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which wire protocol a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    V1,
    V2,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V1 => "v1",
            Protocol::V2 => "v2",
            Protocol::Grpc => "grpc",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    protocol: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    model: String,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
    version: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s, doubling: covers a loopback iris call and a slow model.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// All data-plane metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    inference_duration: Family<ModelLabels, Histogram, fn() -> Histogram>,
    model_load_duration: Family<ModelLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    in_flight: Gauge,
    auth_failures: Counter,
    queue_duration: Family<ModelLabels, Histogram, fn() -> Histogram>,
    batch_size: Family<ModelLabels, Histogram, fn() -> Histogram>,
    queue_depth: Family<ModelLabels, Gauge>,
    rejected: Family<RejectLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    model: String,
    reason: &'static str,
}

/// Why a request was refused before (or instead of) running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The model's queue was full (429).
    QueueFull,
    /// Its deadline passed before it ran (504).
    Deadline,
    /// More rows than the model's max_batch_size (400).
    TooManyRows,
    /// A body over the size limit (413).
    BodyTooLarge,
    /// A tensor with more elements than the limit (400).
    TooManyElements,
    /// An HTTP request head over the limit (431).
    HeaderTooLarge,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::QueueFull => "queue_full",
            Rejection::Deadline => "deadline_exceeded",
            Rejection::TooManyRows => "too_many_rows",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::TooManyElements => "too_many_elements",
            Rejection::HeaderTooLarge => "header_too_large",
        }
    }
}

fn batch_histogram() -> Histogram {
    // 1 .. 4096 rows, doubling.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("inferd");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Inference requests answered, by model, protocol and HTTP status code",
            requests.clone(),
        );
        let request_duration =
            Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response, by model and protocol",
            request_duration.clone(),
        );
        let inference_duration =
            Family::<ModelLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "inference_duration_seconds",
            "Time a model spent computing one request, queueing for a thread included",
            inference_duration.clone(),
        );
        let model_load_duration = Family::default();
        registry.register(
            "model_load_duration_seconds",
            "Time it took to load each model version",
            model_load_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Inference requests being processed now",
            in_flight.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Requests refused for a missing or invalid bearer token",
            auth_failures.clone(),
        );
        let queue_duration =
            Family::<ModelLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "queue_duration_seconds",
            "Time requests waited in a model's queue before their execution started",
            queue_duration.clone(),
        );
        let batch_size = Family::<ModelLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            batch_histogram,
        );
        registry.register(
            "batch_size",
            "Rows per model execution (requests batched together add up)",
            batch_size.clone(),
        );
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Requests waiting in a model's queue",
            queue_depth.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests refused by a limit, by model and reason",
            rejected.clone(),
        );
        Metrics {
            registry,
            queue_duration,
            batch_size,
            queue_depth,
            rejected,
            auth_failures,
            requests,
            request_duration,
            inference_duration,
            model_load_duration,
            in_flight,
        }
    }

    /// Resolves the handles one served model version uses on every request.
    pub fn for_model(&self, model: &str, version: &str) -> ModelMetrics {
        let labels = ModelLabels {
            model: model.to_owned(),
            version: version.to_owned(),
        };
        let per_protocol = |protocol: Protocol| ProtocolMetrics {
            ok: self.requests.get_or_create_owned(&RequestLabels {
                model: model.to_owned(),
                protocol: protocol.as_str(),
                code: 200,
            }),
            duration: self.request_duration.get_or_create_owned(&LatencyLabels {
                model: model.to_owned(),
                protocol: protocol.as_str(),
            }),
        };
        ModelMetrics {
            queue: self.queue_duration.get_or_create_owned(&labels),
            batch_size: self.batch_size.get_or_create_owned(&labels),
            queue_depth: self.queue_depth.get_or_create_owned(&labels),
            v1: per_protocol(Protocol::V1),
            v2: per_protocol(Protocol::V2),
            grpc: per_protocol(Protocol::Grpc),
            inference: self.inference_duration.get_or_create_owned(&labels),
        }
    }

    pub fn record_load(&self, model: &str, version: &str, seconds: f64) {
        self.model_load_duration
            .get_or_create(&ModelLabels {
                model: model.to_owned(),
                version: version.to_owned(),
            })
            .set(seconds);
    }

    /// Counts a request that did not succeed (or whose model is unknown: pass "").
    pub fn record_failure(&self, model: &str, protocol: Protocol, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_owned(),
                protocol: protocol.as_str(),
                code,
            })
            .inc();
        self.request_duration
            .get_or_create(&LatencyLabels {
                model: model.to_owned(),
                protocol: protocol.as_str(),
            })
            .observe(seconds);
    }

    /// Counts a refusal (`model` "" when the model is unknown or not known yet).
    pub fn record_rejection(&self, model: &str, why: Rejection) {
        self.rejected
            .get_or_create(&RejectLabels {
                model: model.to_owned(),
                reason: why.as_str(),
            })
            .inc();
    }

    pub fn record_auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// Marks a request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The registry in Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the in-flight gauge when dropped, however the request ends.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Pre-resolved handles for one model version's hot path.
#[derive(Clone, Debug)]
pub struct ModelMetrics {
    v1: ProtocolMetrics,
    v2: ProtocolMetrics,
    grpc: ProtocolMetrics,
    pub inference: Histogram,
    /// Per request: time in the queue.
    pub queue: Histogram,
    /// Per execution: rows.
    pub batch_size: Histogram,
    pub queue_depth: Gauge,
}

#[derive(Clone, Debug)]
struct ProtocolMetrics {
    ok: Counter,
    duration: Histogram,
}

impl ModelMetrics {
    pub fn record_success(&self, protocol: Protocol, seconds: f64) {
        let m = match protocol {
            Protocol::V1 => &self.v1,
            Protocol::V2 => &self.v2,
            Protocol::Grpc => &self.grpc,
        };
        m.ok.inc();
        m.duration.observe(seconds);
    }
}

/// Shared handle type used by the server state.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_encodes() {
        let metrics = Metrics::new();
        let iris = metrics.for_model("iris", "1");
        iris.record_success(Protocol::V2, 0.001);
        iris.record_success(Protocol::V2, 0.002);
        iris.inference.observe(0.0005);
        metrics.record_failure("iris", Protocol::V2, 400, 0.0001);
        metrics.record_failure("", Protocol::V1, 404, 0.0001);
        metrics.record_load("iris", "1", 0.25);
        {
            let _guard = metrics.in_flight();
            assert!(metrics.encode().contains("inferd_requests_in_flight 1\n"));
        }
        let text = metrics.encode();
        for line in [
            r#"inferd_requests_total{model="iris",protocol="v2",code="200"} 2"#,
            r#"inferd_requests_total{model="iris",protocol="v2",code="400"} 1"#,
            r#"inferd_requests_total{model="",protocol="v1",code="404"} 1"#,
            r#"inferd_request_duration_seconds_count{model="iris",protocol="v2"} 3"#,
            r#"inferd_inference_duration_seconds_count{model="iris",version="1"} 1"#,
            r#"inferd_model_load_duration_seconds{model="iris",version="1"} 0.25"#,
            "inferd_requests_in_flight 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
