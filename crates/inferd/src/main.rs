//! The `inferd` command: wiring only; each subcommand's logic lives in a library crate.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

mod bench;
use clap::{Parser, Subcommand, ValueEnum};
use inferd_server::{ModelSource, Server, ServerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "inferd",
    version,
    about = "Kubernetes-native model serving from one binary"
)]
struct Cli {
    /// Log format.
    #[arg(long, env = "INFERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve models over the Open Inference Protocol (V2) and KServe V1.
    Serve(ServeArgs),
    /// Load-test inference endpoints and report throughput and exact latency percentiles.
    Bench(Box<bench::BenchArgs>),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// A model to serve, as NAME=PATH; PATH is a model file or a folder
    /// holding one (optionally in numbered version folders). Repeatable.
    #[arg(
        long = "model",
        env = "INFERD_MODELS",
        value_delimiter = ',',
        value_name = "NAME=PATH"
    )]
    models: Vec<String>,

    /// A folder whose sub-folders are models named after them, laid out as
    /// Triton's model repository (NAME/model.onnx or NAME/1/model.onnx).
    #[arg(long, env = "INFERD_MODEL_REPOSITORY", value_name = "DIR")]
    model_repository: Vec<PathBuf>,

    /// Model format, when file extensions do not tell it.
    #[arg(long, env = "INFERD_FORMAT", value_parser = ["onnx"])]
    format: Option<String>,

    /// Address to listen on.
    #[arg(long, env = "INFERD_HOST", default_value = "127.0.0.1")]
    host: IpAddr,

    /// HTTP port (0 picks a free one; the log says which).
    #[arg(long, env = "INFERD_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,

    /// Largest request body accepted; larger ones get 413.
    #[arg(long, env = "INFERD_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_body_bytes: usize,

    /// Seconds in-flight requests get to finish after SIGTERM or SIGINT.
    #[arg(long, env = "INFERD_DRAIN_TIMEOUT", default_value_t = 30.0)]
    drain_timeout: f64,

    /// Inference threads (0: one per core).
    #[arg(long, env = "INFERD_INFERENCE_THREADS", default_value_t = 0)]
    inference_threads: usize,

    /// Require `Authorization: Bearer <token>` on everything but health and
    /// metrics; the file holds one token per line (several allow rotation).
    #[arg(long, env = "INFERD_AUTH_TOKEN_FILE", value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The bench runs on a runtime of its own, sized for load generation.
    if let Command::Bench(args) = cli.command {
        return match bench::run(*args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Bench(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut sources = args
        .models
        .iter()
        .map(|m| ModelSource::parse_named(m).with_context(|| format!("--model {m}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    sources.extend(
        args.model_repository
            .into_iter()
            .map(ModelSource::Repository),
    );
    if sources.is_empty() {
        anyhow::bail!("nothing to serve: pass --model NAME=PATH or --model-repository DIR");
    }
    let format = args
        .format
        .as_deref()
        .map(inferd_server::ModelFormat::parse)
        .transpose()?;
    if !args.drain_timeout.is_finite() || args.drain_timeout < 0.0 {
        anyhow::bail!("--drain-timeout must be a number of seconds >= 0");
    }
    let tokens = match &args.auth_token_file {
        None => inferd_server::Tokens::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --auth-token-file {}", path.display()))?;
            inferd_server::Tokens::parse(&text)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--auth-token-file {}", path.display()))?
        }
    };
    let config = ServerConfig {
        tokens,
        addr: SocketAddr::new(args.host, args.http_port),
        max_body_bytes: args.max_body_bytes,
        drain_timeout: Duration::from_secs_f64(args.drain_timeout),
        inference_threads: args.inference_threads,
    };
    let server = Server::bind(&config, &sources, format).await?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, "listening on http://{addr}");
    server.run(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
