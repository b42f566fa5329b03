//! `inferd bench`: arguments, progress bar and output files around `inferd_bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use inferd_bench::{Arrival, BenchConfig, Event, Load, Protocol, Target};

#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Server base URL; with --model it names one target.
    #[arg(long, env = "INFERD_BENCH_URL")]
    url: Option<String>,

    /// Model to load at --url.
    #[arg(long)]
    model: Option<String>,

    /// A target as NAME=URL, the full inference endpoint. Repeatable; several
    /// targets run interleaved and are reported side by side.
    #[arg(long = "target", value_name = "NAME=URL")]
    targets: Vec<String>,

    /// Request body file (a V2 or V1 request), sent as is.
    #[arg(long)]
    input: Option<PathBuf>,

    /// Generate the body instead: the input's shape, e.g. 1,4.
    #[arg(long, value_delimiter = ',', requires = "datatype")]
    shape: Vec<usize>,

    /// Generate the body instead: the input's V2 datatype, e.g. FP32.
    #[arg(long, requires = "shape")]
    datatype: Option<String>,

    /// Input name for a generated body (default: read from the model's metadata).
    #[arg(long)]
    input_name: Option<String>,

    /// Wire protocol of --url/--model and generated bodies.
    #[arg(long, value_enum, default_value_t = ProtocolArg::V2)]
    protocol: ProtocolArg,

    /// Closed loop: requests in flight (one keep-alive connection each), per step.
    #[arg(long, value_delimiter = ',', conflicts_with = "rate")]
    concurrency: Vec<usize>,

    /// Open loop: requests per second, per step; latency counts from each
    /// request's scheduled start.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,

    /// Open loop arrivals: evenly spaced or a Poisson process.
    #[arg(long, value_enum, default_value_t = ArrivalArg::Constant)]
    arrival: ArrivalArg,

    /// Measured time per target and step (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = inferd_bench::parse_duration)]
    duration: Duration,

    /// Unmeasured time per target before each step.
    #[arg(long, default_value = "2s", value_parser = inferd_bench::parse_duration)]
    warmup: Duration,

    /// Turn length when several targets are interleaved.
    #[arg(long, default_value = "1s", value_parser = inferd_bench::parse_duration)]
    slice: Duration,

    /// At most this many measured requests per target and step.
    #[arg(long)]
    requests: Option<u64>,

    /// A request without an answer after this long is a timeout error.
    #[arg(long, default_value = "10s", value_parser = inferd_bench::parse_duration)]
    timeout: Duration,

    /// Do not check that every 200 carries a JSON body.
    #[arg(long)]
    no_validate: bool,

    /// Open loop: most requests in flight per target.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,

    /// Load generator threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,

    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Print the report as a markdown table instead of a terminal table.
    #[arg(long)]
    markdown: bool,

    /// Draw throughput and latency against load into this .svg or .png file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    V2,
    V1,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ArrivalArg {
    Constant,
    Poisson,
}

fn targets(args: &BenchArgs, protocol: Protocol) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    match (&args.url, &args.model) {
        (Some(url), Some(model)) => targets.push(Target {
            name: model.clone(),
            url: protocol.infer_url(url, model),
        }),
        (Some(_), None) => bail!("--url needs --model"),
        (None, Some(_)) => bail!("--model needs --url"),
        (None, None) => {}
    }
    for t in &args.targets {
        let (name, url) = t
            .split_once('=')
            .with_context(|| format!("--target {t}: expected NAME=URL"))?;
        if name.is_empty() || url.is_empty() {
            bail!("--target {t}: expected NAME=URL");
        }
        targets.push(Target {
            name: name.to_owned(),
            url: url.to_owned(),
        });
    }
    if targets.is_empty() {
        bail!("nothing to load: pass --url and --model, or --target NAME=URL");
    }
    Ok(targets)
}

fn body(args: &BenchArgs, protocol: Protocol) -> anyhow::Result<Bytes> {
    match (&args.input, &args.datatype) {
        (Some(path), None) => Ok(std::fs::read(path)
            .with_context(|| format!("cannot read --input {}", path.display()))?
            .into()),
        (None, Some(datatype)) => {
            let name = match (&args.input_name, &args.url, &args.model) {
                (Some(name), _, _) => name.clone(),
                (None, Some(url), Some(model)) => inferd_bench::first_input_name(url, model)
                    .map_err(anyhow::Error::msg)
                    .context(
                        "reading the input name from the model's metadata (or pass --input-name)",
                    )?,
                _ => {
                    bail!("a generated body needs --input-name, or --url and --model to look it up")
                }
            };
            Ok(
                inferd_bench::generated_body(protocol, &name, &args.shape, datatype)
                    .map_err(anyhow::Error::msg)?
                    .into(),
            )
        }
        (Some(_), Some(_)) => bail!("pass either --input or --shape/--datatype, not both"),
        (None, None) => bail!("no request body: pass --input FILE or --shape and --datatype"),
    }
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let protocol = match args.protocol {
        ProtocolArg::V2 => Protocol::V2,
        ProtocolArg::V1 => Protocol::V1,
    };
    let targets = targets(&args, protocol)?;
    let body = body(&args, protocol)?;
    let load = if args.rate.is_empty() {
        let levels = if args.concurrency.is_empty() {
            vec![1, 8, 64]
        } else {
            args.concurrency.clone()
        };
        Load::Closed(levels)
    } else {
        Load::Open {
            rates: args.rate.clone(),
            arrival: match args.arrival {
                ArrivalArg::Constant => Arrival::Constant,
                ArrivalArg::Poisson => Arrival::Poisson,
            },
        }
    };
    let steps = match &load {
        Load::Closed(c) => c.len(),
        Load::Open { rates, .. } => rates.len(),
    };
    let config = BenchConfig {
        bodies: vec![None; targets.len()],
        targets,
        body,
        load,
        duration: args.duration,
        warmup: args.warmup,
        slice: args.slice,
        requests: args.requests,
        timeout: args.timeout,
        validate: !args.no_validate,
        max_in_flight: args.max_in_flight,
        threads: args.threads,
    };

    // Live progress on stderr (drawn only on a terminal).
    let planned =
        (config.duration + config.warmup).as_secs_f64() * (steps * config.targets.len()) as f64;
    let bar = ProgressBar::new((planned * 10.0).ceil() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut step_label = String::new();
    let mut on_event = |event: Event<'_>| match event {
        Event::Step { label, .. } => step_label = label,
        Event::Warmup { target, length } => {
            bar.set_message(format!("{step_label}: {target} warming up"));
            bar.inc((length.as_secs_f64() * 10.0) as u64);
        }
        Event::Turn { target, length } => {
            bar.set_message(format!("{step_label}: {target}"));
            bar.inc((length.as_secs_f64() * 10.0) as u64);
        }
        Event::TurnDone {
            target,
            successes,
            errors,
            elapsed,
        } => {
            let rps = successes as f64 / elapsed.as_secs_f64().max(1e-9);
            let errs = if errors > 0 {
                format!(", {errors} ERRORS")
            } else {
                String::new()
            };
            bar.set_message(format!("{step_label}: {target} {rps:.0} req/s{errs}"));
        }
    };
    let report = inferd_bench::run(&config, &mut on_event)?;
    bar.finish_and_clear();

    if args.markdown {
        print!("{}", report.markdown());
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        inferd_bench::plot::plot(&report, path)?;
    }
    let errors = report.total_errors();
    if errors > 0 {
        eprintln!("WARNING: {errors} requests failed (see the errors column)");
    }
    Ok(ExitCode::SUCCESS)
}
