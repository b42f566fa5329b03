//! The `inferd` command: wiring only; each subcommand's logic lives in a library crate.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

mod bench;
mod local;
mod progress;
use clap::{Parser, Subcommand, ValueEnum};
use inferd_server::{ModelSource, OnnxBackend, Server, ServerConfig};

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
    Serve(Box<ServeArgs>),
    /// Load-test inference endpoints and report throughput and exact latency percentiles.
    Bench(Box<bench::BenchArgs>),
    /// Run the local control plane in the foreground: InferenceServices as
    /// supervised `serve` replicas behind a router, with revisions, canary
    /// rollouts and autoscaling (to zero).
    Up(Box<local::UpArgs>),
    /// Apply InferenceServices to the running control plane.
    Apply(local::ApplyArgs),
    /// List InferenceServices (isvc) or their revisions.
    Get(local::GetArgs),
    /// Show an InferenceService's conditions, traffic, replicas and events.
    Describe(local::DescribeArgs),
    /// Print a service's replica logs.
    Logs(local::LogsArgs),
    /// Delete an InferenceService; its replicas drain and stop.
    Delete(local::DeleteArgs),
    /// Print InferenceServices (inferd's or KServe's serving.kserve.io/v1beta1) as
    /// inferd's serving.inferd.dev/v1alpha1 YAML.
    Convert(ConvertArgs),
    /// Fetch a model's storage URI into a folder (what a replica's init
    /// container runs on Kubernetes): downloaded into a verified cache, then
    /// copied into DEST atomically.
    Fetch(FetchArgs),
    /// Print Kubernetes manifests.
    #[command(subcommand)]
    Manifests(ManifestsCommand),
    /// Run the Kubernetes operator: reconcile InferenceServices into
    /// Deployments and Services until SIGTERM.
    Operator(OperatorArgs),
    /// Run the in-cluster router of one namespace: routes requests to the
    /// InferenceServices' revisions, found through their status and
    /// EndpointSlices, until SIGTERM.
    Router(RouterArgs),
}

#[derive(clap::Args, Debug)]
struct RouterArgs {
    /// The namespace whose InferenceServices to route.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The address every listener binds.
    #[arg(long, default_value = "0.0.0.0")]
    host: IpAddr,
    /// User traffic over HTTP/1.1 (V2, V1).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// User traffic over gRPC.
    #[arg(long, default_value_t = 8081)]
    grpc_port: u16,
    /// `/stats` (the autoscaler's input), `/metrics` and `/healthz`.
    #[arg(long, default_value_t = 9090)]
    admin_port: u16,
}

async fn router(args: RouterArgs) -> anyhow::Result<()> {
    let options = inferd_operator::router::RouterOptions {
        host: args.host,
        http_port: args.http_port,
        grpc_port: args.grpc_port,
        admin_port: args.admin_port,
        ..inferd_operator::router::RouterOptions::new(args.namespace)
    };
    inferd_operator::router::connect_and_run(options, shutdown_signal()).await?;
    Ok(())
}

#[derive(clap::Args, Debug)]
struct OperatorArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "INFERD_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// The image whose `inferd` binary runs the replicas and their model download.
    #[arg(long, env = "INFERD_OPERATOR_IMAGE")]
    image: Option<String>,
    /// Retired revisions kept at zero replicas, for a quick rollback.
    #[arg(long, env = "INFERD_OPERATOR_RETIRED_REVISIONS", default_value_t = 2)]
    retired_revisions: usize,
    /// Router replicas in each namespace with InferenceServices.
    #[arg(long, env = "INFERD_OPERATOR_ROUTER_REPLICAS", default_value_t = 1)]
    router_replicas: u32,
    /// Run only while holding the Lease `inferd-operator` in the pod's
    /// namespace (POD_NAMESPACE), so that several replicas can run.
    #[arg(long)]
    leader_elect: bool,
    /// Serve the operator's Prometheus metrics (`/metrics`) and `/healthz`
    /// on this address (the install uses 0.0.0.0:8080); absent: not served.
    #[arg(long, env = "INFERD_OPERATOR_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

async fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    let mut options = inferd_operator::reconcile::ReconcileOptions {
        retired_kept: args.retired_revisions,
        ..Default::default()
    };
    if let Some(image) = args.image {
        options.objects.image = image;
    }
    options.objects.router_replicas = args.router_replicas;
    let leader_election = if args.leader_elect {
        let namespace = std::env::var("POD_NAMESPACE").map_err(|_| {
            anyhow::anyhow!("--leader-elect needs POD_NAMESPACE (the Lease's namespace)")
        })?;
        let lease = inferd_operator::leader::LeaseConfig::new(namespace);
        lease.validate()?;
        Some(lease)
    } else {
        None
    };
    let config = inferd_operator::controller::ControllerConfig {
        namespace: args.namespace,
        options,
        leader_election,
        metrics_addr: args.metrics_addr,
        ..Default::default()
    };
    inferd_operator::controller::connect_and_run(config, shutdown_signal()).await?;
    Ok(())
}

#[derive(Subcommand, Debug)]
enum ManifestsCommand {
    /// The CustomResourceDefinitions (serving.inferd.dev), as YAML for `kubectl apply -f -`.
    Crds,
    /// The CRDs, the operator's namespace, ServiceAccount, ClusterRole (only
    /// the verbs it uses), binding and Deployment, for `kubectl apply -f -`.
    Install {
        /// The operator's namespace.
        #[arg(long, default_value = "inferd-system")]
        namespace: String,
        /// The image holding the inferd binary (default: this version's).
        #[arg(long)]
        image: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
struct FetchArgs {
    /// The model's storage URI (path, file://, http(s)://, s3://, gs://, az://);
    /// credentials come from the AWS_*, GOOGLE_* and AZURE_* variables.
    #[arg(long, value_name = "URI")]
    storage_uri: String,
    /// The folder that receives the model (a file lands inside it, a
    /// folder's content becomes it); replaced if it exists.
    #[arg(long, value_name = "DIR")]
    dest: PathBuf,
    /// The model file's expected SHA-256 (64 hex digits).
    #[arg(long, value_name = "HEX")]
    sha256: Option<String>,
    /// Where downloads are cached (default: DEST's parent's `.cache`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The most bytes the model's download may take (a folder: all its
    /// files); a larger one fails before it is kept. Bytes or a quantity (16Gi).
    #[arg(long, env = "INFERD_MAX_MODEL_BYTES", value_name = "BYTES", default_value = "16Gi", value_parser = parse_size)]
    max_model_bytes: u64,
}

async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let parent = args
        .dest
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let cache = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| parent.join(".cache"));
    let mut storage = inferd_storage::Storage::new(cache).with_max_bytes(args.max_model_bytes);
    if std::io::stderr().is_terminal() {
        storage = storage.with_progress(std::sync::Arc::new(progress::Bars::default()));
    }
    let base = std::env::current_dir().context("no current directory")?;
    let mut request = inferd_storage::FetchRequest::new(&args.storage_uri, &base);
    if let Some(sha) = &args.sha256 {
        request = request.with_sha256(sha);
    }
    let fetched = storage.fetch(&request).await?;
    let dest = inferd_storage::place(&args.storage_uri, &fetched.path, &args.dest)?;
    tracing::info!(
        uri = %args.storage_uri,
        sha256 = %fetched.sha256,
        bytes = fetched.bytes,
        cached = fetched.cached,
        dest = %dest.display(),
        "model fetched"
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
struct ConvertArgs {
    /// The YAML file to read (`-`: standard input); it may hold several documents.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
}

/// `inferd convert`: reads, converts and validates every document, then prints
/// them; prints nothing if any is refused.
fn convert(args: &ConvertArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let mut text = String::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
    } else {
        text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
    }
    let services = inferd_api::load_inference_services(&text)
        .with_context(|| args.file.display().to_string())?;
    print!("{}", inferd_api::to_yaml_multi(&services)?);
    Ok(())
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
    #[arg(long, env = "INFERD_FORMAT", value_parser = ["onnx", "xgboost", "lightgbm"])]
    format: Option<String>,

    /// Address to listen on.
    #[arg(long, env = "INFERD_HOST", default_value = "127.0.0.1")]
    host: IpAddr,

    /// HTTP port (0 picks a free one; the log says which).
    #[arg(long, env = "INFERD_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,

    /// gRPC port (0 picks a free one; the log says which); `off` serves no gRPC.
    #[arg(long, env = "INFERD_GRPC_PORT", default_value = "8081", value_parser = parse_grpc_port)]
    grpc_port: GrpcPort,

    /// Serve HTTP and gRPC over TLS with this PEM certificate chain
    /// (needs --tls-key).
    #[arg(
        long,
        env = "INFERD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// The PEM private key for --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "INFERD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Largest HTTP request head (request line and headers); larger ones get 431.
    #[arg(long, env = "INFERD_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    max_header_bytes: usize,

    /// Most elements one input tensor may hold; more get 400.
    #[arg(long, env = "INFERD_MAX_TENSOR_ELEMENTS", default_value_t = 64 * 1024 * 1024)]
    max_tensor_elements: usize,

    /// Most gRPC requests in flight on one connection (HTTP/2 streams).
    #[arg(long, env = "INFERD_MAX_CONCURRENT_STREAMS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_streams: u32,

    /// Largest request body accepted; larger ones get 413 (at once when
    /// Content-Length announces it).
    #[arg(long, env = "INFERD_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_body_bytes: usize,

    /// Longest wait for the next part of a request body; a client that
    /// sends none for this long gets 408 and its connection closes.
    #[arg(long, env = "INFERD_BODY_READ_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    body_read_timeout: Duration,

    /// Seconds in-flight requests get to finish after SIGTERM or SIGINT.
    #[arg(long, env = "INFERD_DRAIN_TIMEOUT", default_value_t = 30.0)]
    drain_timeout: f64,

    /// Instances (inference threads) per model version, unless its
    /// config.json says otherwise (0: one per core).
    #[arg(
        long,
        alias = "inference-threads",
        env = "INFERD_INSTANCE_COUNT",
        default_value_t = 0
    )]
    instance_count: usize,

    /// Dynamic batching for models with a batch dimension: the most rows one
    /// execution takes (0: off), unless a model's config.json says otherwise.
    #[arg(long, env = "INFERD_MAX_BATCH_SIZE", default_value_t = 0)]
    max_batch_size: usize,

    /// How long the oldest queued request may wait for a batch to fill
    /// (e.g. 500us, 2ms; 0: run whatever is queued when an instance is free).
    #[arg(long, env = "INFERD_MAX_QUEUE_DELAY", default_value = "0", value_parser = inferd_bench::parse_duration)]
    max_queue_delay: Duration,

    /// Requests that may wait per model version; more get 429 with Retry-After.
    #[arg(long, env = "INFERD_MAX_QUEUE_SIZE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_queue_size: u32,

    /// Whether the served models may change while serving, as Triton names
    /// it: none (fixed at start), explicit (load/unload through
    /// /v2/repository/models/NAME/load|unload) or poll (rescan the
    /// repositories every --repository-poll-secs).
    #[arg(long, env = "INFERD_MODEL_CONTROL", value_enum, default_value_t = ModelControlArg::None)]
    model_control: ModelControlArg,

    /// With --model-control explicit: a repository model to load at start
    /// (`*`: all). Repeatable. --model ones always load.
    #[arg(
        long,
        env = "INFERD_LOAD_MODELS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    load_model: Vec<String>,

    /// With --model-control poll: seconds between repository scans.
    #[arg(long, env = "INFERD_REPOSITORY_POLL_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    repository_poll_secs: u64,

    /// Deadline for requests that set none (e.g. 2s); past it a queued
    /// request gets 504 and never runs. Default: none.
    #[arg(long, env = "INFERD_DEFAULT_TIMEOUT", value_parser = inferd_bench::parse_duration)]
    default_timeout: Option<Duration>,

    /// Require `Authorization: Bearer <token>` on everything but health and
    /// metrics; the file holds one token per line (several allow rotation).
    #[arg(long, env = "INFERD_AUTH_TOKEN_FILE", value_name = "FILE")]
    auth_token_file: Option<PathBuf>,

    /// Runtime for ONNX models: tract (built in) or ort (onnxruntime, loaded
    /// from --ort-library at start).
    #[arg(long, env = "INFERD_ONNX_BACKEND", value_enum, default_value_t = OnnxBackendArg::Tract)]
    onnx_backend: OnnxBackendArg,

    /// The onnxruntime shared library for --onnx-backend ort
    /// (libonnxruntime.so; `pip install onnxruntime` ships one in
    /// site-packages/onnxruntime/capi/).
    #[arg(long, env = "ORT_DYLIB_PATH", value_name = "PATH")]
    ort_library: Option<PathBuf>,

    /// Threads one onnxruntime inference may use inside an operator; inferd
    /// already runs requests in parallel, so 1 suits most models.
    #[arg(long, env = "INFERD_ORT_INTRA_THREADS", default_value_t = 1)]
    ort_intra_threads: usize,

    /// Stop (draining, as on SIGTERM) when standard input closes: a
    /// supervisor holds the other end, so a replica never outlives it, even
    /// when the supervisor is killed.
    #[arg(long, hide = true)]
    exit_with_stdin: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModelControlArg {
    None,
    Explicit,
    Poll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OnnxBackendArg {
    Tract,
    Ort,
}

/// `--grpc-port`: a port, or `off`.
#[derive(Clone, Copy, Debug)]
struct GrpcPort(Option<u16>);

fn parse_grpc_port(s: &str) -> Result<GrpcPort, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(GrpcPort(None));
    }
    s.parse()
        .map(|p| GrpcPort(Some(p)))
        .map_err(|_| format!("'{s}' is neither a port (0-65535) nor `off`"))
}

/// A duration (`5s`, `500ms`, ...) that is not zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match inferd_bench::parse_duration(s)? {
        d if d.is_zero() => Err(format!("'{s}' is zero; it must be longer")),
        d => Ok(d),
    }
}

/// A size in bytes: a plain number or a quantity such as `16Gi` or `500M`.
fn parse_size(s: &str) -> Result<u64, String> {
    inferd_api::Quantity(s.trim().to_owned())
        .bytes()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{s}' is not a size in bytes, such as 17179869184 or 16Gi"))
}

/// jemalloc, whose background threads return the pages a load storm took
/// (connections, held requests) to the system once it is over; glibc's
/// allocator keeps them.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Manifests(which) = &cli.command {
        let yaml = match which {
            ManifestsCommand::Crds => inferd_operator::crds_yaml(),
            ManifestsCommand::Install { namespace, image } => {
                let mut options = inferd_operator::install::InstallOptions {
                    namespace: namespace.clone(),
                    ..Default::default()
                };
                if let Some(image) = image {
                    options.image = image.clone();
                }
                inferd_operator::install::install_yaml(&options)
            }
        };
        return match yaml {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Convert(args) = &cli.command {
        return match convert(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
    // Servers log their fatal error too; a client command only prints it.
    let logs_errors = matches!(
        cli.command,
        Command::Serve(_) | Command::Up(_) | Command::Operator(_) | Command::Router(_)
    );
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Up(args) => local::up(*args).await,
            Command::Apply(args) => local::apply(args).await,
            Command::Get(args) => local::get(args).await,
            Command::Describe(args) => local::describe(args).await,
            Command::Logs(args) => local::logs(args).await,
            Command::Delete(args) => local::delete(args).await,
            Command::Fetch(args) => fetch(args).await,
            Command::Operator(args) => operator(args).await,
            Command::Router(args) => router(args).await,
            Command::Bench(_) | Command::Convert(_) | Command::Manifests(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if logs_errors {
                tracing::error!("{e:#}");
            }
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
    if !args.load_model.is_empty() && args.model_control != ModelControlArg::Explicit {
        anyhow::bail!("--load-model needs --model-control explicit");
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
    let onnx_backend = match args.onnx_backend {
        OnnxBackendArg::Tract => OnnxBackend::Tract,
        OnnxBackendArg::Ort => OnnxBackend::Ort {
            library: args.ort_library.clone(),
            intra_threads: args.ort_intra_threads.max(1),
        },
    };
    // A missing or wrong onnxruntime library fails the start, before listening.
    onnx_backend.prepare()?;
    let config = ServerConfig {
        tokens,
        addr: SocketAddr::new(args.host, args.http_port),
        grpc_addr: args
            .grpc_port
            .0
            .map(|port| SocketAddr::new(args.host, port)),
        max_body_bytes: args.max_body_bytes,
        body_read_timeout: args.body_read_timeout,
        drain_timeout: Duration::from_secs_f64(args.drain_timeout),
        serving: inferd_server::model_config::Defaults {
            max_batch_size: args.max_batch_size,
            max_queue_delay: args.max_queue_delay,
            max_queue_size: args.max_queue_size as usize,
            instance_count: args.instance_count,
            default_timeout: args.default_timeout.filter(|t| !t.is_zero()),
        },
        model_control: match args.model_control {
            ModelControlArg::None => inferd_server::ModelControl::None,
            ModelControlArg::Explicit => inferd_server::ModelControl::Explicit,
            ModelControlArg::Poll => inferd_server::ModelControl::Poll,
        },
        load_models: args.load_model.clone(),
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(inferd_server::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
        max_header_bytes: args.max_header_bytes,
        max_tensor_elements: args.max_tensor_elements,
        max_concurrent_streams: args.max_concurrent_streams,
        poll_interval: Duration::from_secs(args.repository_poll_secs),
        onnx_backend,
    };
    let (http, grpc) = match config.tls {
        Some(_) => ("https", "grpcs"),
        None => ("http", "grpc"),
    };
    let server = Server::bind(&config, &sources, format).await?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, "listening on {http}://{addr}");
    if let Some(addr) = server.grpc_local_addr()? {
        tracing::info!(%addr, "listening on {grpc}://{addr}");
    }
    let exit_with_stdin = args.exit_with_stdin;
    server
        .run(async move {
            if exit_with_stdin {
                tokio::select! {
                    () = shutdown_signal() => {}
                    () = stdin_closed() => tracing::info!("standard input closed; stopping"),
                }
            } else {
                shutdown_signal().await;
            }
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves when standard input reaches its end (or fails).
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    let _ = rx.await;
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
