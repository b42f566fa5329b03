//! Latency and error accounting for one target at one load step.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Why a request did not count as a success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The server answered with a non-200 status.
    Status(u16),
    /// No answer within `--timeout`.
    Timeout,
    /// Could not open a connection.
    Connect,
    /// The connection failed mid-request.
    Io,
    /// A 200 whose body is not the JSON the protocol promises.
    InvalidBody,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Status(code) => write!(f, "http_{code}"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Io => f.write_str("io"),
            ErrorKind::InvalidBody => f.write_str("invalid_body"),
        }
    }
}

/// Latencies are kept in microseconds, 1 µs to 1 hour, 3 significant digits.
const MAX_MICROS: u64 = 3_600_000_000;

/// One worker's (or one merged step's) record of what happened.
#[derive(Clone, Debug)]
pub struct Recorder {
    latency: Histogram<u64>,
    successes: u64,
    errors: BTreeMap<ErrorKind, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            // Bounds and precision are constants that hdrhistogram accepts.
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .unwrap_or_else(|_| unreachable!("valid histogram bounds")),
            successes: 0,
            errors: BTreeMap::new(),
        }
    }

    /// Records a success and its latency (clamped to the histogram's range).
    pub fn success(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.latency.saturating_record(micros.clamp(1, MAX_MICROS));
        self.successes += 1;
    }

    pub fn error(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.successes += other.successes;
        for (kind, n) in &other.errors {
            *self.errors.entry(*kind).or_default() += n;
        }
    }

    pub fn successes(&self) -> u64 {
        self.successes
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn requests(&self) -> u64 {
        self.successes + self.error_count()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect()
    }

    /// Latency percentiles of the successful requests, in microseconds.
    pub fn percentiles(&self) -> Percentiles {
        let h = &self.latency;
        let at = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: if h.is_empty() { 0 } else { h.max() },
            mean: if h.is_empty() { 0.0 } else { h.mean() },
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: u64, expected: f64, rel: f64) -> bool {
        (actual as f64 - expected).abs() <= expected * rel
    }

    #[test]
    fn uniform_distribution_percentiles() {
        let mut r = Recorder::new();
        for us in 1..=100_000u64 {
            r.success(Duration::from_micros(us));
        }
        let p = r.percentiles();
        assert!(within(p.p50, 50_000.0, 0.001), "{p:?}");
        assert!(within(p.p90, 90_000.0, 0.001), "{p:?}");
        assert!(within(p.p99, 99_000.0, 0.001), "{p:?}");
        assert!(within(p.p999, 99_900.0, 0.001), "{p:?}");
        assert!(within(p.max, 100_000.0, 0.001), "{p:?}");
        assert!((p.mean - 50_000.5).abs() < 50.0, "{p:?}");
    }

    #[test]
    fn exponential_distribution_percentiles() {
        // Quantiles of an exponential with mean m: -m ln(1 - q). Sampled
        // exactly (inverse CDF on an even grid), so only the histogram's
        // precision separates result from truth.
        let mean = 1_000.0f64;
        let n = 200_000;
        let mut r = Recorder::new();
        for i in 0..n {
            let q = (i as f64 + 0.5) / n as f64;
            r.success(Duration::from_secs_f64(-mean * (1.0 - q).ln() / 1e6));
        }
        let p = r.percentiles();
        for (got, q) in [(p.p50, 0.5), (p.p90, 0.9), (p.p99, 0.99), (p.p999, 0.999)] {
            let want = -mean * (1.0f64 - q).ln();
            assert!(within(got, want, 0.005), "q={q}: {got} vs {want}");
        }
    }

    #[test]
    fn a_few_slow_requests_show_in_the_tail_not_the_median() {
        let mut r = Recorder::new();
        for _ in 0..990 {
            r.success(Duration::from_micros(100));
        }
        for _ in 0..10 {
            r.success(Duration::from_secs(2));
        }
        let p = r.percentiles();
        assert!(within(p.p50, 100.0, 0.01));
        assert!(within(p.p99, 100.0, 0.01));
        assert!(within(p.p999, 2_000_000.0, 0.001), "{p:?}");
        assert!(within(p.max, 2_000_000.0, 0.001));
    }

    #[test]
    fn merge_and_counts() {
        let mut a = Recorder::new();
        a.success(Duration::from_micros(10));
        a.error(ErrorKind::Status(503));
        let mut b = Recorder::new();
        b.success(Duration::from_micros(30));
        b.error(ErrorKind::Timeout);
        b.error(ErrorKind::Status(503));
        a.merge(&b);
        assert_eq!(a.successes(), 2);
        assert_eq!(a.error_count(), 3);
        assert_eq!(a.requests(), 5);
        let errors = a.errors();
        assert_eq!(errors.get("http_503"), Some(&2));
        assert_eq!(errors.get("timeout"), Some(&1));
    }

    #[test]
    fn empty_and_out_of_range() {
        let r = Recorder::new();
        assert_eq!(r.percentiles().p99, 0);
        let mut r = Recorder::new();
        r.success(Duration::ZERO);
        r.success(Duration::from_secs(100_000));
        assert_eq!(r.successes(), 2);
        assert!(r.percentiles().max >= MAX_MICROS - MAX_MICROS / 500);
    }
}
