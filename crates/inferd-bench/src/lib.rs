//! `inferd bench`: a load generator for inference servers whose numbers can
//! be trusted.
//!
//! - Closed loop (`concurrency`: N requests always in flight, one keep-alive
//!   connection each) or open loop (`rate`: requests start on a fixed or
//!   Poisson schedule whatever the server does, latency measured from each
//!   request's intended start, so stalls cannot hide: no coordinated omission).
//! - Exact percentiles from an HDR histogram; errors counted by kind; every
//!   200 checked to be JSON unless told not to.
//! - Several targets run interleaved in short turns (A B A B ...) so drift on
//!   a noisy machine hits all of them alike, and are reported side by side
//!   with ratios.
//! - Its own tokio runtime, so it measures the same whatever calls it.
//!
//! The library never prints: [`run`] reports progress through a callback and
//! returns a [`Report`] that renders as a table, markdown, JSON or a plot.

mod client;
mod input;
pub mod plot;
mod report;
mod runner;
pub mod schedule;
pub mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use input::{Protocol, generated_body, parse_duration};
pub use report::{Report, Step, TargetResult};
pub use schedule::Arrival;

use client::{ClientFactory, HttpFactory, Prepared};
use runner::Budget;
use stats::Recorder;

/// One endpoint to load: requests are POSTed to `url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub url: String,
}

/// The load steps of a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Load {
    /// Closed loop at each of these concurrencies.
    Closed(Vec<usize>),
    /// Open loop at each of these rates (requests per second).
    Open { rates: Vec<f64>, arrival: Arrival },
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub targets: Vec<Target>,
    /// The request body (the same for every target unless `bodies` is set).
    pub body: Bytes,
    /// Per-target bodies, when targets need different requests.
    pub bodies: Vec<Option<Bytes>>,
    pub load: Load,
    /// Measured time per target and step.
    pub duration: Duration,
    /// Unmeasured time per target and step, before measuring.
    pub warmup: Duration,
    /// Length of one turn when several targets are interleaved.
    pub slice: Duration,
    /// At most this many measured requests per target and step.
    pub requests: Option<u64>,
    pub timeout: Duration,
    /// Check that every 200 carries a JSON body.
    pub validate: bool,
    /// Open loop: most requests in flight at once per target.
    pub max_in_flight: usize,
    /// Threads of the load generator's own runtime (0: one per core).
    pub threads: usize,
}

/// What went wrong before any load was sent.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("target '{name}': {message}")]
    Target { name: String, message: String },
    #[error("nothing to measure: {0}")]
    Empty(String),
    #[error("cannot start the load generator's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Progress events, for a caller that draws a progress bar.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// A step begins; `turns` measured turns follow (after warm-up).
    Step {
        label: String,
        turns: usize,
    },
    Warmup {
        target: &'a str,
        length: Duration,
    },
    Turn {
        target: &'a str,
        length: Duration,
    },
    /// A measured turn ended.
    TurnDone {
        target: &'a str,
        successes: u64,
        errors: u64,
        elapsed: Duration,
    },
}

/// Splits `http://host:port/path` into what a connection needs.
fn prepare(target: &Target, body: Bytes, validate: bool) -> Result<Prepared, BenchError> {
    let fail = |message: String| BenchError::Target {
        name: target.name.clone(),
        message,
    };
    let uri: hyper::Uri = target
        .url
        .parse()
        .map_err(|e| fail(format!("'{}' is not a URL: {e}", target.url)))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(fail(format!(
                "scheme '{other}' is not supported; use http://"
            )));
        }
        None => return Err(fail(format!("'{}' needs http://", target.url))),
    }
    let host = uri
        .host()
        .ok_or_else(|| fail(format!("'{}' has no host", target.url)))?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| fail(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| fail(format!("{host} resolves to no address")))?;
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok(Prepared {
        addr,
        host: format!("{host}:{port}"),
        path,
        body,
        validate,
    })
}

/// Runs every step against every target and reports.
pub fn run(
    config: &BenchConfig,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, BenchError> {
    if config.targets.is_empty() {
        return Err(BenchError::Empty("no targets".into()));
    }
    let steps = match &config.load {
        Load::Closed(c) if c.is_empty() || c.contains(&0) => {
            return Err(BenchError::Empty("concurrency levels must be >= 1".into()));
        }
        Load::Open { rates, .. }
            if rates.is_empty() || rates.iter().any(|r| !r.is_finite() || *r <= 0.0) =>
        {
            return Err(BenchError::Empty("rates must be > 0".into()));
        }
        Load::Closed(c) => c.len(),
        Load::Open { rates, .. } => rates.len(),
    };
    let factories = config
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let body = config
                .bodies
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| config.body.clone());
            prepare(t, body, config.validate).map(|p| Arc::new(HttpFactory(Arc::new(p))))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.threads > 0 {
        builder.worker_threads(config.threads);
    }
    let rt = builder.enable_all().build().map_err(BenchError::Runtime)?;

    let mut report = Report::new(config);
    for step in 0..steps {
        let (concurrency, rate) = match &config.load {
            Load::Closed(c) => (Some(c[step]), None),
            Load::Open { rates, .. } => (None, Some(rates[step])),
        };
        let turns = schedule::interleave(config.targets.len(), config.duration, config.slice);
        let label = match (concurrency, rate) {
            (Some(c), _) => format!("concurrency {c}"),
            (_, Some(r)) => format!("rate {r}/s"),
            _ => String::new(),
        };
        on_event(Event::Step {
            label,
            turns: turns.len(),
        });
        let mut recorders: Vec<Recorder> = vec![Recorder::new(); config.targets.len()];
        let mut elapsed = vec![Duration::ZERO; config.targets.len()];
        let budgets: Vec<Arc<Budget>> = (0..config.targets.len())
            .map(|_| Arc::new(Budget::new(config.requests)))
            .collect();
        let mut clients: Vec<Vec<client::HttpClient>> = factories
            .iter()
            .map(|f| (0..concurrency.unwrap_or(0)).map(|_| f.client()).collect())
            .collect();
        let pools: Vec<_> = factories
            .iter()
            .map(|_| Arc::new(tokio::sync::Mutex::new(Vec::new())))
            .collect();

        let mut turn_runner =
            |target: usize, length: Duration, budget: Arc<Budget>, seed: u64| -> Recorder {
                match &config.load {
                    Load::Closed(_) => {
                        let taken = std::mem::take(&mut clients[target]);
                        let (back, rec) =
                            rt.block_on(runner::closed_loop(taken, length, config.timeout, budget));
                        clients[target] = back;
                        rec
                    }
                    Load::Open { arrival, .. } => rt.block_on(runner::open_loop(
                        factories[target].clone(),
                        pools[target].clone(),
                        *arrival,
                        rate.unwrap_or(1.0),
                        seed,
                        length,
                        config.timeout,
                        budget,
                        config.max_in_flight,
                        runner::Pacing::Thread,
                    )),
                }
            };

        if !config.warmup.is_zero() {
            for (i, t) in config.targets.iter().enumerate() {
                on_event(Event::Warmup {
                    target: &t.name,
                    length: config.warmup,
                });
                let _ = turn_runner(i, config.warmup, Arc::new(Budget::new(None)), 1 + i as u64);
            }
        }
        for (n, turn) in turns.iter().enumerate() {
            let name = &config.targets[turn.target].name;
            if budgets[turn.target].spent() {
                continue;
            }
            on_event(Event::Turn {
                target: name,
                length: turn.length,
            });
            let started = Instant::now();
            let rec = turn_runner(
                turn.target,
                turn.length,
                budgets[turn.target].clone(),
                1000 + n as u64,
            );
            let took = started.elapsed();
            elapsed[turn.target] += took;
            on_event(Event::TurnDone {
                target: name,
                successes: rec.successes(),
                errors: rec.error_count(),
                elapsed: took,
            });
            recorders[turn.target].merge(&rec);
        }
        report.push_step(concurrency, rate, &config.targets, &recorders, &elapsed);
    }
    Ok(report)
}

/// The name of a model's first input, from its V2 metadata at `base`.
pub fn first_input_name(base: &str, model: &str) -> Result<String, String> {
    let url = format!("{}/v2/models/{model}", base.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let meta = rt.block_on(client::get_json(&url))?;
    meta["inputs"][0]["name"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{url} lists no inputs"))
}
