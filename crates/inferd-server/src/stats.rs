//! Per-model-version statistics in the shape of Triton's statistics
//! extension (`GET /v2/models/{m}/stats`), which perf_analyzer reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// A count and the total time it took.
#[derive(Debug, Default)]
struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn json(&self) -> Value {
        json!({"count": self.count.load(Ordering::Relaxed), "ns": self.ns.load(Ordering::Relaxed)})
    }
}

/// What one served model version has done.
#[derive(Debug, Default)]
pub struct ModelStats {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_input: Tally,
    compute_infer: Tally,
    compute_output: Tally,
    /// Rows inferred (the batch dimension summed over executions).
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    /// Milliseconds since the Unix epoch of the last request, 0 for none.
    last_inference_ms: AtomicU64,
}

impl ModelStats {
    pub fn record_request(&self, ok: bool, total: Duration) {
        if ok { &self.success } else { &self.fail }.add(total);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.store(now, Ordering::Relaxed);
    }

    /// Decoding and checking the request.
    pub fn record_input(&self, d: Duration) {
        self.compute_input.add(d);
    }

    pub fn record_execution(&self, rows: usize, queue: Duration, compute: Duration) {
        self.queue.add(queue);
        self.compute_infer.add(compute);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Encoding the response.
    pub fn record_output(&self, d: Duration) {
        self.compute_output.add(d);
    }

    /// One entry of `model_stats`.
    pub fn json(&self, name: &str, version: &str) -> Value {
        let zero = json!({"count": 0, "ns": 0});
        json!({
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms.load(Ordering::Relaxed),
            "inference_count": self.inference_count.load(Ordering::Relaxed),
            "execution_count": self.execution_count.load(Ordering::Relaxed),
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                "compute_input": self.compute_input.json(),
                "compute_infer": self.compute_infer.json(),
                "compute_output": self.compute_output.json(),
                // No response cache: always zero, present because clients expect the keys.
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up() {
        let s = ModelStats::default();
        s.record_input(Duration::from_micros(3));
        s.record_execution(2, Duration::from_micros(5), Duration::from_micros(20));
        s.record_output(Duration::from_micros(4));
        s.record_request(true, Duration::from_micros(40));
        s.record_request(false, Duration::from_micros(7));
        let j = s.json("iris", "1");
        assert_eq!(j["inference_count"], 2);
        assert_eq!(j["execution_count"], 1);
        assert_eq!(
            j["inference_stats"]["success"],
            json!({"count": 1, "ns": 40_000})
        );
        assert_eq!(
            j["inference_stats"]["fail"],
            json!({"count": 1, "ns": 7_000})
        );
        assert_eq!(j["inference_stats"]["compute_infer"]["ns"], 20_000);
        assert_eq!(j["inference_stats"]["queue"]["ns"], 5_000);
        assert!(
            j["last_inference"]
                .as_u64()
                .is_some_and(|ms| ms > 1_600_000_000_000)
        );
    }
}
