//! `inferd up`, `apply`, `get`, `describe`, `logs`, `delete`: the local
//! control plane and its clients. The logic lives in `inferd_control::local`;
//! this is argument parsing and printing.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use inferd_api::InferenceService;
use inferd_control::AutoscalerConfig;
use inferd_control::local::client::AdminClient;
use inferd_control::local::store::StateDir;
use inferd_control::local::{ControlPlane, LocalConfig, RevisionView, ServiceView};

#[derive(clap::Args, Debug)]
pub(crate) struct StateArgs {
    /// The control plane's state directory (applied services, logs, model
    /// cache, admin token).
    #[arg(long, env = "INFERD_STATE_DIR", value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
}

impl StateArgs {
    fn path(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(StateDir::default_path)
    }

    fn client(&self) -> anyhow::Result<AdminClient> {
        Ok(AdminClient::from_state_dir(&self.path())?)
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct UpArgs {
    /// InferenceService YAML files to apply at start (inferd's or KServe's);
    /// services stored by an earlier run are resumed either way.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Address the router (and admin API) listen on.
    #[arg(long, env = "INFERD_HOST", default_value = "127.0.0.1")]
    host: IpAddr,

    /// The router's HTTP port (0: any free one).
    #[arg(long, env = "INFERD_HTTP_PORT", default_value_t = 8080)]
    port: u16,

    /// The router's gRPC port (0: any free one; `off`: none).
    #[arg(long, env = "INFERD_GRPC_PORT", default_value = "8081", value_parser = crate::parse_grpc_port)]
    grpc_port: crate::GrpcPort,

    /// Threads of the router's own runtime (1, the default, keeps each
    /// request on one thread: the lowest latency; more serve more requests
    /// at once on a machine with cores to spare).
    #[arg(long, env = "INFERD_ROUTER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    router_threads: u16,

    /// Largest request body the router and every replica take (the
    /// replicas' `--max-body-bytes`); larger ones get 413 from the router,
    /// at once when Content-Length announces it.
    #[arg(long, env = "INFERD_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_body_bytes: usize,

    /// Longest wait for the next part of a request body, in the router and
    /// every replica (`--body-read-timeout`); longer: 408.
    #[arg(long, env = "INFERD_BODY_READ_TIMEOUT", default_value = "5s", value_parser = crate::parse_positive_duration)]
    body_read_timeout: Duration,

    /// The admin API's port on loopback (0: any free one).
    #[arg(long, env = "INFERD_ADMIN_PORT", default_value_t = 0)]
    admin_port: u16,

    /// GPUs replicas may be given, as CUDA numbers them (e.g. 0,1,2,3);
    /// default: the ones the NVIDIA driver lists.
    #[arg(long, env = "INFERD_GPUS", value_delimiter = ',')]
    gpus: Option<Vec<String>>,

    /// Knative's config-autoscaler for every service, as YAML or JSON with
    /// the camelCase keys (stableWindow, scaleToZeroGracePeriod, ...).
    #[arg(long, env = "INFERD_AUTOSCALER_CONFIG", value_name = "FILE")]
    autoscaler_config: Option<PathBuf>,

    /// How often the autoscaler decides.
    #[arg(long, env = "INFERD_AUTOSCALER_TICK", default_value = "1s", value_parser = inferd_bench::parse_duration)]
    autoscaler_tick: Duration,

    /// How long a replica taken out of the routes keeps running before it
    /// drains and stops.
    #[arg(long, env = "INFERD_DRAIN_GRACE", default_value = "500ms", value_parser = inferd_bench::parse_duration)]
    drain_grace: Duration,

    /// First restart delay of a replica that died (doubling up to 60 s).
    #[arg(long, env = "INFERD_RESTART_BACKOFF", default_value = "1s", value_parser = inferd_bench::parse_duration)]
    restart_backoff: Duration,

    /// How replicas' `resources.cpu` and `resources.memory` are enforced:
    /// `cgroup` (a control group per replica, or refuse to start), `rlimit`
    /// (RLIMIT_DATA and CPU affinity per process), `auto` (cgroups where
    /// they can be managed, else rlimit).
    #[arg(long, env = "INFERD_REPLICA_LIMITS", default_value = "auto", value_parser = ["auto", "cgroup", "rlimit"])]
    replica_limits: String,

    /// The most bytes one model's download may take (a folder: all its
    /// files); a service's model.maxSizeBytes may lower it, never raise it.
    /// Bytes or a quantity (16Gi).
    #[arg(long, env = "INFERD_MAX_MODEL_BYTES", value_name = "BYTES", default_value = "16Gi", value_parser = crate::parse_size)]
    max_model_bytes: u64,

    #[command(flatten)]
    state: StateArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ApplyArgs {
    /// InferenceService YAML files (inferd's or KServe's; `-`: standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Kind {
    #[value(
        alias = "inferenceservice",
        alias = "inferenceservices",
        alias = "isvcs"
    )]
    Isvc,
    #[value(alias = "revision", alias = "rev", alias = "revs")]
    Revisions,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Output {
    Yaml,
    Json,
    Wide,
}

#[derive(clap::Args, Debug)]
pub(crate) struct GetArgs {
    /// What to list: isvc or revisions.
    kind: Kind,
    /// A service (for revisions: the service whose revisions to list).
    name: Option<String>,
    /// yaml or json: the full objects; wide: more columns.
    #[arg(short = 'o', long = "output")]
    output: Option<Output>,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct DescribeArgs {
    kind: Kind,
    name: String,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct LogsArgs {
    /// The service.
    name: String,
    /// Only revision N (its number, e.g. 2).
    #[arg(long)]
    revision: Option<u32>,
    /// Keep printing new lines.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines of each replica's log.
    #[arg(long)]
    tail: Option<usize>,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct DeleteArgs {
    kind: Kind,
    name: String,
    #[command(flatten)]
    state: StateArgs,
}

/// Reads InferenceServices from YAML files; relative local storage paths
/// are made absolute against each file's folder.
pub(crate) fn read_services(files: &[PathBuf]) -> anyhow::Result<Vec<InferenceService>> {
    let mut services = Vec::new();
    for file in files {
        let (text, base) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read standard input")?;
            (
                text,
                std::env::current_dir().context("no current directory")?,
            )
        } else {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
            let base = if base.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                base
            };
            let base = std::fs::canonicalize(&base)
                .with_context(|| format!("cannot resolve the folder of {}", file.display()))?;
            (text, base)
        };
        let docs = inferd_api::load_inference_services(&text)
            .with_context(|| file.display().to_string())?;
        if docs.is_empty() {
            // An empty file (or one of comments only) is a mistake, not a
            // request to apply nothing.
            let name = if file.as_os_str() == "-" {
                "standard input".to_owned()
            } else {
                file.display().to_string()
            };
            anyhow::bail!("no InferenceService in {name}");
        }
        for mut isvc in docs {
            let model = &mut isvc.spec.predictor.model;
            if let Some(path) = model.local_path(&base) {
                model.storage_uri = path.display().to_string();
            }
            services.push(isvc);
        }
    }
    Ok(services)
}

pub(crate) async fn up(args: UpArgs) -> anyhow::Result<()> {
    let services = read_services(&args.files)?;
    let program = std::env::current_exe().context("cannot find the inferd binary")?;
    let mut config = LocalConfig::new(args.state.path(), program);
    config.router_addr = SocketAddr::new(args.host, args.port);
    config.grpc_addr = args.grpc_port.0.map(|p| SocketAddr::new(args.host, p));
    config.router_threads = usize::from(args.router_threads);
    config.router.max_body_bytes = args.max_body_bytes;
    config.router.max_grpc_message_bytes = args.max_body_bytes;
    config.router.body_read_timeout = args.body_read_timeout;
    config.admin_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.admin_port);
    config.gpus = args.gpus.clone();
    config.tick = args.autoscaler_tick.max(Duration::from_millis(10));
    config.drain_grace = args.drain_grace;
    config.supervisor.backoff_initial = args.restart_backoff.max(Duration::from_millis(10));
    config.replica_limits = args
        .replica_limits
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--replica-limits: {e}"))?;
    config.max_model_bytes = args.max_model_bytes;
    if let Some(path) = &args.autoscaler_config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let autoscaler: AutoscalerConfig = serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        autoscaler
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.autoscaler = autoscaler;
    }
    if std::io::stderr().is_terminal() {
        config.progress = Some(Arc::new(crate::progress::Bars::default()));
    }
    let plane = ControlPlane::start(config).await?;
    let router = format!("http://{}", plane.router_addr());
    if !services.is_empty() {
        match plane.apply(services).await {
            Ok(applied) => print_applied(&applied),
            Err(e) => {
                plane.shutdown().await;
                return Err(e.into());
            }
        }
    }
    // The addresses last: once they are printed, every applied service
    // is routed (requests wait while its first replica starts).
    println!("state    {}", plane.state_dir().root().display());
    if let Some(grpc) = plane.grpc_addr() {
        println!("grpc     {grpc}");
    }
    println!("router   {router}");
    for view in plane.list().await.unwrap_or_default() {
        println!(
            "{:<8} {router}/v2/models/{}/infer",
            view.name(),
            view.name()
        );
    }
    let _ = std::io::stdout().flush();
    crate::shutdown_signal().await;
    eprintln!("stopping: draining replicas");
    plane.shutdown().await;
    Ok(())
}

fn print_applied(applied: &[inferd_control::local::Applied]) {
    use inferd_control::service::ApplyOutcome;
    for a in applied {
        let what = match &a.outcome {
            ApplyOutcome::Created { revision } => format!("created (revision {revision})"),
            ApplyOutcome::NewRevision { revision } => {
                format!("configured (new revision {revision})")
            }
            ApplyOutcome::Configured => "configured (traffic/scaling; no new revision)".to_owned(),
            ApplyOutcome::Unchanged => "unchanged".to_owned(),
        };
        println!("inferenceservice/{} {what}", a.name);
    }
}

pub(crate) async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let services = read_services(&args.files)?;
    let client = args.state.client()?;
    let applied = client.apply(&services).await?;
    print_applied(&applied);
    Ok(())
}

pub(crate) async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    if matches!(args.kind, Kind::Revisions) {
        anyhow::bail!("revisions are immutable and go when no traffic needs them; delete the isvc");
    }
    args.state.client()?.delete(&args.name).await?;
    println!("inferenceservice/{} deleted", args.name);
    Ok(())
}

pub(crate) async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let client = args.state.client()?;
    let mut out = std::io::stdout().lock();
    client
        .logs(&args.name, args.revision, args.tail, args.follow, |bytes| {
            let _ = out.write_all(bytes);
            let _ = out.flush();
        })
        .await?;
    Ok(())
}

pub(crate) async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = args.state.client()?;
    let views = match &args.name {
        Some(name) => vec![client.get(name).await?],
        None => client.list().await?,
    };
    match args.kind {
        Kind::Isvc => match args.output {
            Some(Output::Yaml) => {
                let services: Vec<InferenceService> =
                    views.into_iter().map(|v| v.service).collect();
                print!("{}", inferd_api::to_yaml_multi(&services)?);
            }
            Some(Output::Json) => {
                let services: Vec<&InferenceService> = views.iter().map(|v| &v.service).collect();
                println!("{}", serde_json::to_string_pretty(&services)?);
            }
            wide => print_services(&views, matches!(wide, Some(Output::Wide))),
        },
        Kind::Revisions => {
            let revisions: Vec<(&str, &RevisionView)> = views
                .iter()
                .flat_map(|v| v.revisions.iter().map(move |r| (v.name(), r)))
                .collect();
            match args.output {
                Some(Output::Yaml) => {
                    let list: Vec<&RevisionView> = revisions.iter().map(|(_, r)| *r).collect();
                    print!(
                        "{}",
                        serde_saphyr::to_string(&list).map_err(|e| anyhow::anyhow!("{e}"))?
                    );
                }
                Some(Output::Json) => {
                    let list: Vec<&RevisionView> = revisions.iter().map(|(_, r)| *r).collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                }
                _ => print_revisions(&revisions),
            }
        }
    }
    Ok(())
}

pub(crate) async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    if matches!(args.kind, Kind::Revisions) {
        anyhow::bail!("describe takes a service: inferd describe isvc NAME");
    }
    let view = args.state.client()?.get(&args.name).await?;
    print!("{}", describe_text(&view));
    Ok(())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `5s`, `3m`, `2h`, `4d`.
pub(crate) fn age(since: u64) -> String {
    let s = now().saturating_sub(since);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn print_services(views: &[ServiceView], wide: bool) {
    let mut rows = vec![
        ["NAME", "URL", "READY", "PREV", "LATEST", "REPLICAS", "AGE"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
    ];
    if wide {
        rows[0].push("LATESTREADY".into());
        rows[0].push("LATESTCREATED".into());
    }
    for v in views {
        let status = v.service.status.clone().unwrap_or_default();
        let percent = |rev: Option<&str>| {
            rev.and_then(|r| status.traffic.iter().find(|t| t.revision_name == r))
                .map(|t| t.percent.to_string())
                .unwrap_or_default()
        };
        let prev = status
            .traffic
            .iter()
            .find(|t| t.tag.as_deref() == Some("prev"))
            .map(|t| t.revision_name.as_str());
        let mut row = vec![
            v.name().to_owned(),
            status.url.clone().unwrap_or_default(),
            if v.ready() { "True" } else { "False" }.to_owned(),
            percent(prev),
            percent(status.latest_ready_revision.as_deref()),
            v.ready_replicas().to_string(),
            age(v.created_at),
        ];
        if wide {
            row.push(status.latest_ready_revision.clone().unwrap_or_default());
            row.push(status.latest_created_revision.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    print!("{}", table(&rows));
}

fn print_revisions(revisions: &[(&str, &RevisionView)]) {
    let mut rows = vec![
        [
            "SERVICE", "NAME", "STATE", "TRAFFIC", "TAGS", "REPLICAS", "AGE", "REASON",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>(),
    ];
    for (service, r) in revisions {
        rows.push(vec![
            (*service).to_owned(),
            r.name.clone(),
            r.state.clone(),
            format!("{}%", r.traffic_percent),
            r.tags.join(","),
            format!("{}/{}", r.ready_replicas, r.desired_replicas),
            age(r.created_at),
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", table(&rows));
}

/// The text of `describe isvc`.
pub(crate) fn describe_text(v: &ServiceView) -> String {
    let status = v.service.status.clone().unwrap_or_default();
    let p = &v.service.spec.predictor;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("Name:          {}", v.name()));
    line(format!(
        "URL:           {}",
        status.url.clone().unwrap_or_default()
    ));
    line(format!("Generation:    {}", v.generation));
    line(format!("Age:           {}", age(v.created_at)));
    line(format!(
        "Model:         {} {}",
        p.model.format, p.model.storage_uri
    ));
    line(format!(
        "Scaling:       min {} max {} {} target {}{}",
        p.min_replicas_or_default(),
        p.max_replicas
            .map_or_else(|| "-".to_owned(), |m| m.to_string()),
        match p.scale_metric_or_default() {
            inferd_api::ScaleMetric::Concurrency => "concurrency",
            inferd_api::ScaleMetric::Rps => "rps",
        },
        p.scale_target_or_default(),
        p.canary_traffic_percent
            .map(|c| format!(", canary {c}%"))
            .unwrap_or_default()
    ));
    if let Some(m) = &status.model_status {
        line(format!(
            "Model status:  {:?}{}",
            m.state,
            m.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    line("Conditions:".into());
    for c in &status.conditions {
        line(format!(
            "  {:<20} {:<6} {}{}",
            c.type_,
            c.status,
            c.reason.clone().unwrap_or_default(),
            c.message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    line("Traffic:".into());
    for t in &status.traffic {
        line(format!(
            "  {:<24} {:>3}%{}",
            t.revision_name,
            t.percent,
            t.tag
                .as_ref()
                .map(|t| format!("  tag {t}"))
                .unwrap_or_default()
        ));
    }
    line("Revisions:".into());
    for r in &v.revisions {
        line(format!(
            "  {} ({}, {}% traffic, {}/{} ready{}){}",
            r.name,
            r.state,
            r.traffic_percent,
            r.ready_replicas,
            r.desired_replicas,
            if r.tags.is_empty() {
                String::new()
            } else {
                format!(", tags {}", r.tags.join(","))
            },
            r.reason
                .as_ref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        ));
        if let Some(a) = &r.autoscaler {
            line(format!("    autoscaler: {a}"));
        }
        for x in &r.replicas {
            line(format!(
                "    {:<20} {:<10} pid {:<7} http {:<21} restarts {}{}{}",
                x.id,
                x.phase,
                x.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                x.http.clone().unwrap_or_else(|| "-".into()),
                x.restarts,
                x.last_exit
                    .as_ref()
                    .map(|e| format!(", last exit: {e}"))
                    .unwrap_or_default(),
                if x.gpus.is_empty() {
                    String::new()
                } else {
                    format!(", GPUs {}", x.gpus.join(","))
                }
            ));
        }
    }
    line("Events:".into());
    let skip = v.events.len().saturating_sub(20);
    for e in &v.events[skip..] {
        line(format!(
            "  {:>5}  {:<18} {}",
            age(e.time),
            e.reason,
            e.message
        ));
    }
    out
}
