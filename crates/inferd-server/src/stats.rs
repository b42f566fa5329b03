//! Per-model-version statistics in the shape of Triton's statistics
//! extension (`GET /v2/models/{m}/stats`), which perf_analyzer reads.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// A count and the total time it took.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    count: u64,
    ns: u64,
}

impl Tally {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns = self
            .ns
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    fn json(self) -> Value {
        json!({"count": self.count, "ns": self.ns})
    }
}

/// Where one successful request's time went, recorded in one step.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestTimes {
    /// Decoding and checking the request.
    pub input: Duration,
    /// Waiting for an inference thread.
    pub queue: Duration,
    /// Running the model.
    pub infer: Duration,
    /// Encoding the response.
    pub output: Duration,
    /// Rows inferred (the batch dimension).
    pub rows: u64,
}

impl RequestTimes {
    /// Where a request's time went, as response headers (HTTP) or metadata
    /// (gRPC), in milliseconds with microsecond precision, as
    /// text-embeddings-inference names them: `x-queue-time` (waiting for
    /// an execution), `x-inference-time` (the execution it was part of)
    /// and `x-total-time` (from its arrival to its response).
    pub fn headers(&self, total: Duration) -> [(&'static str, String); 3] {
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
        [
            ("x-queue-time", ms(self.queue)),
            ("x-inference-time", ms(self.infer)),
            ("x-total-time", ms(total)),
        ]
    }
}

#[derive(Debug, Default)]
struct Inner {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_input: Tally,
    compute_infer: Tally,
    compute_output: Tally,
    inference_count: u64,
    execution_count: u64,
    last_inference_ms: u64,
    /// Executions by batch size (rows): count and compute time.
    batches: std::collections::BTreeMap<usize, Tally>,
}

/// What one served model version has done. One lock keeps a snapshot
/// consistent: clients (perf_analyzer) require the compute counts to agree.
#[derive(Debug, Default)]
pub struct ModelStats {
    inner: Mutex<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ModelStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain counters: a panic mid-update cannot leave them unusable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record_success(&self, total: Duration, times: RequestTimes) {
        let mut s = self.lock();
        s.success.add(total);
        s.compute_input.add(times.input);
        s.queue.add(times.queue);
        s.compute_infer.add(times.infer);
        s.compute_output.add(times.output);
        s.inference_count += times.rows;
        s.last_inference_ms = now_ms();
    }

    /// Counts one model execution of `rows` rows (one or more requests).
    pub fn record_execution(&self, rows: usize, compute: Duration) {
        let mut s = self.lock();
        s.execution_count += 1;
        s.batches.entry(rows).or_default().add(compute);
    }

    pub fn record_failure(&self, total: Duration) {
        let mut s = self.lock();
        s.fail.add(total);
        s.last_inference_ms = now_ms();
    }

    /// One entry of `model_stats`.
    pub fn json(&self, name: &str, version: &str) -> Value {
        let s = self.lock();
        let zero = json!({"count": 0, "ns": 0});
        json!({
            "name": name,
            "version": version,
            "last_inference": s.last_inference_ms,
            "inference_count": s.inference_count,
            "execution_count": s.execution_count,
            "inference_stats": {
                "success": s.success.json(),
                "fail": s.fail.json(),
                "queue": s.queue.json(),
                "compute_input": s.compute_input.json(),
                "compute_infer": s.compute_infer.json(),
                "compute_output": s.compute_output.json(),
                // No response cache: always zero, present because clients expect the keys.
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": s.batches.iter().map(|(rows, t)| json!({
                "batch_size": rows,
                "compute_input": {"count": t.count, "ns": 0},
                "compute_infer": t.json(),
                "compute_output": {"count": t.count, "ns": 0},
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_add_up() {
        let s = ModelStats::default();
        let us = Duration::from_micros;
        s.record_success(
            us(40),
            RequestTimes {
                input: us(3),
                queue: us(5),
                infer: us(20),
                output: us(4),
                rows: 2,
            },
        );
        s.record_execution(2, us(20));
        s.record_failure(us(7));
        let j = s.json("iris", "1");
        assert_eq!(
            j["batch_stats"],
            json!([{
                "batch_size": 2,
                "compute_input": {"count": 1, "ns": 0},
                "compute_infer": {"count": 1, "ns": 20_000},
                "compute_output": {"count": 1, "ns": 0},
            }])
        );
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
        for k in ["compute_input", "compute_infer", "compute_output", "queue"] {
            assert_eq!(j["inference_stats"][k]["count"], 1, "{k}");
        }
        assert!(
            j["last_inference"]
                .as_u64()
                .is_some_and(|ms| ms > 1_600_000_000_000)
        );
    }
}
