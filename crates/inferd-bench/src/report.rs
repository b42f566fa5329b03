//! A run's results and how they are shown: a terminal table, markdown, JSON.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::stats::{Percentiles, Recorder};
use crate::{BenchConfig, Load, Target};

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Open loop: `constant` or `poisson`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrival: Option<String>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub slice_s: f64,
    pub timeout_s: f64,
    pub steps: Vec<Step>,
}

/// One load level, every target measured at it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Offered rate (open loop), requests per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub targets: Vec<TargetResult>,
}

/// One target at one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    pub name: String,
    pub url: String,
    /// successes + errors.
    pub requests: u64,
    pub successes: u64,
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the measured turns.
    pub elapsed_s: f64,
    /// Successful requests per second of measured time.
    pub requests_per_second: f64,
    /// Latency of successful requests, microseconds.
    pub latency_us: Percentiles,
}

impl TargetResult {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl Report {
    pub(crate) fn new(config: &BenchConfig) -> Report {
        let (mode, arrival) = match &config.load {
            Load::Closed(_) => ("closed", None),
            Load::Open { arrival, .. } => (
                "open",
                Some(match arrival {
                    crate::Arrival::Constant => "constant".to_owned(),
                    crate::Arrival::Poisson => "poisson".to_owned(),
                }),
            ),
        };
        Report {
            tool: "inferd bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            mode: mode.into(),
            arrival,
            duration_s: config.duration.as_secs_f64(),
            warmup_s: config.warmup.as_secs_f64(),
            slice_s: config.slice.as_secs_f64(),
            timeout_s: config.timeout.as_secs_f64(),
            steps: Vec::new(),
        }
    }

    pub(crate) fn push_step(
        &mut self,
        concurrency: Option<usize>,
        rate: Option<f64>,
        targets: &[Target],
        recorders: &[Recorder],
        elapsed: &[Duration],
    ) {
        let targets = targets
            .iter()
            .zip(recorders)
            .zip(elapsed)
            .map(|((t, rec), elapsed)| {
                let secs = elapsed.as_secs_f64();
                TargetResult {
                    name: t.name.clone(),
                    url: t.url.clone(),
                    requests: rec.requests(),
                    successes: rec.successes(),
                    errors: rec.errors(),
                    elapsed_s: secs,
                    requests_per_second: if secs > 0.0 {
                        rec.successes() as f64 / secs
                    } else {
                        0.0
                    },
                    latency_us: rec.percentiles(),
                }
            })
            .collect();
        self.steps.push(Step {
            concurrency,
            rate,
            targets,
        });
    }

    /// Errors over the whole run.
    pub fn total_errors(&self) -> u64 {
        self.steps
            .iter()
            .flat_map(|s| &s.targets)
            .map(TargetResult::error_count)
            .sum()
    }

    fn rows(&self) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let load = if self.mode == "open" {
            "rate/s"
        } else {
            "conns"
        };
        let mut header = vec![
            load, "target", "req/s", "p50", "p90", "p95", "p99", "p99.9", "max", "errors",
        ];
        let several = self.steps.iter().any(|s| s.targets.len() > 1);
        if several {
            header.extend(["req/s ×", "p50 ×", "p99 ×"]);
        }
        let mut rows = Vec::new();
        for step in &self.steps {
            let level = match (step.concurrency, step.rate) {
                (Some(c), _) => c.to_string(),
                (_, Some(r)) => format!("{r}"),
                _ => String::new(),
            };
            let first = step.targets.first();
            for t in &step.targets {
                let l = &t.latency_us;
                let errors = if t.errors.is_empty() {
                    "0".to_owned()
                } else {
                    t.errors
                        .iter()
                        .map(|(k, n)| format!("{k}:{n}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let mut row = vec![
                    level.clone(),
                    t.name.clone(),
                    format!("{:.0}", t.requests_per_second),
                    micros(l.p50),
                    micros(l.p90),
                    micros(l.p95),
                    micros(l.p99),
                    micros(l.p999),
                    micros(l.max),
                    errors,
                ];
                if several {
                    let ratio = |a: f64, b: f64| {
                        if b > 0.0 {
                            format!("{:.2}", a / b)
                        } else {
                            "-".into()
                        }
                    };
                    let f = first.map_or(t, |f| f);
                    row.push(ratio(t.requests_per_second, f.requests_per_second));
                    row.push(ratio(l.p50 as f64, f.latency_us.p50 as f64));
                    row.push(ratio(l.p99 as f64, f.latency_us.p99 as f64));
                }
                rows.push(row);
            }
        }
        (header, rows)
    }

    /// A plain-text table for a terminal.
    pub fn table(&self) -> String {
        let (header, rows) = self.rows();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let line = |cells: Vec<&str>, out: &mut String| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}", w = *w))
                .collect();
            let _ = writeln!(out, "{}", padded.join("  ").trim_end());
        };
        line(header.clone(), &mut out);
        for r in &rows {
            line(r.iter().map(String::as_str).collect(), &mut out);
        }
        if self.steps.iter().any(|s| s.targets.len() > 1) {
            let _ = writeln!(out, "(× columns: ratio to the first target of the step)");
        }
        let errors = self.total_errors();
        if errors > 0 {
            let _ = writeln!(
                out,
                "WARNING: {errors} requests failed; their latencies are not in the percentiles"
            );
        }
        out
    }

    /// The same table in markdown, latencies in microseconds.
    pub fn markdown(&self) -> String {
        let (header, rows) = self.rows();
        let mut out = String::new();
        let names: Vec<String> = header
            .iter()
            .map(|h| match *h {
                "p50" | "p90" | "p95" | "p99" | "p99.9" | "max" => format!("{h} µs"),
                other => other.to_owned(),
            })
            .collect();
        let _ = writeln!(out, "| {} |", names.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
        for r in rows {
            let cells: Vec<String> = r
                .into_iter()
                .enumerate()
                .map(|(i, c)| match header[i] {
                    "p50" | "p90" | "p95" | "p99" | "p99.9" | "max" => {
                        c.trim_end_matches(" µs").to_owned()
                    }
                    _ => c,
                })
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut rec_a = Recorder::new();
        let mut rec_b = Recorder::new();
        for _ in 0..100 {
            rec_a.success(Duration::from_micros(100));
            rec_b.success(Duration::from_micros(400));
        }
        rec_b.error(crate::stats::ErrorKind::Status(503));
        let mut r = Report {
            tool: "inferd bench".into(),
            version: "0".into(),
            mode: "closed".into(),
            arrival: None,
            duration_s: 1.0,
            warmup_s: 0.0,
            slice_s: 1.0,
            timeout_s: 5.0,
            steps: vec![],
        };
        let targets = [
            Target {
                name: "a".into(),
                url: "http://x/a".into(),
            },
            Target {
                name: "b".into(),
                url: "http://x/b".into(),
            },
        ];
        r.push_step(
            Some(8),
            None,
            &targets,
            &[rec_a, rec_b],
            &[Duration::from_secs(1), Duration::from_secs(2)],
        );
        r
    }

    #[test]
    fn counts_rates_and_ratios() {
        let r = report();
        let b = &r.steps[0].targets[1];
        assert_eq!((b.requests, b.successes, b.error_count()), (101, 100, 1));
        assert_eq!(b.requests_per_second, 50.0);
        let table = r.table();
        assert!(table.contains("WARNING: 1 requests failed"), "{table}");
        assert!(table.contains("http_503:1"), "{table}");
        // b: half a's req/s, four times its p50.
        let b_line = table
            .lines()
            .find(|l| l.contains(" b "))
            .unwrap_or_default();
        assert!(
            b_line.contains("0.50") && b_line.contains("4.00"),
            "{b_line}"
        );
    }

    #[test]
    fn markdown_is_a_table_and_json_round_trips() {
        let r = report();
        let md = r.markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("| conns | target | req/s | p50 µs"));
        let cols = lines[0].matches('|').count();
        assert!(lines.iter().all(|l| l.matches('|').count() == cols));
        assert!(lines[2].contains("| 100 |"), "{}", lines[2]);
        let json = serde_json::to_string(&r).expect("json");
        let back: Report = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, r);
    }
}
