//! What `inferd router` runs in each router pod of a namespace: the same
//! [`Router`] as the local backend's, fed by watches instead of a
//! supervisor.
//!
//! - **Discovery**: reflectors (namespace-scoped watches with a local
//!   cache) on the InferenceServices and on the EndpointSlices labelled
//!   [`LABEL_REVISION`] (the revisions' headless Services; the routers' own
//!   Services carry no such label). Every change pokes one rebuild task,
//!   which computes [`route_table`] from both caches and swaps it in with
//!   [`Router::replace_routes`]; a burst of changes (a Deployment's pods
//!   turning ready one after another) is one rebuild, at most one per
//!   [`RouterOptions::coalesce`]. Watch errors are retried with kube's
//!   backoff while the last table keeps serving.
//! - **User traffic**: [`inferd_router::serve`] (HTTP/1.1) and
//!   [`inferd_router::serve_grpc`] (HTTP/2), as in local mode.
//! - **Admin listener** ([`serve_admin`]), apart from user traffic so that
//!   it can stay inside the cluster: `GET /stats` (requests in flight, held
//!   and routed per revision, which the operator's autoscaler scrapes from
//!   every router pod and sums; [`parse_stats`] reads it back), `GET
//!   /metrics` (the router's Prometheus text) and `GET /healthz` (200 once
//!   both watches listed everything and the first table is in place, so a
//!   new router pod takes no traffic while it knows no route).
//! - **Shutdown** on SIGTERM or Ctrl-C: the listeners stop accepting, the
//!   requests in flight (held ones included, which the watches can still
//!   wake) finish within [`RouterOptions::drain_timeout`].

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use inferd_router::{RevisionConcurrency, RouteError, RouteTable, Router, RouterConfig};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::discovery::route_table;
use crate::objects::{GRPC_PORT, HTTP_PORT, LABEL_REVISION, ROUTER_ADMIN_PORT};
use crate::resource::InferenceServiceObject;
use crate::{Error, Result};

/// The shortest time between two route rebuilds by default.
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(50);
/// How long requests in flight get to finish after SIGTERM by default:
/// under Kubernetes' default grace period of 30 s, so the router exits on
/// its own before the kubelet kills it.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// How long a client may take to send an admin request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Settings of one router pod.
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// The namespace whose InferenceServices the router serves (a router
    /// Deployment per namespace).
    pub namespace: String,
    /// The address every listener binds.
    pub host: IpAddr,
    /// User traffic over HTTP/1.1 (V2, V1).
    pub http_port: u16,
    /// User traffic over gRPC.
    pub grpc_port: u16,
    /// `/stats`, `/metrics`, `/healthz`.
    pub admin_port: u16,
    /// The router's own settings (hold bounds, buffers, timeouts).
    pub router: RouterConfig,
    /// The shortest time between two route rebuilds.
    pub coalesce: Duration,
    /// How long requests in flight get to finish on shutdown.
    pub drain_timeout: Duration,
}

impl RouterOptions {
    /// The defaults for `namespace`: every listener on all addresses, the
    /// replicas' own port numbers for user traffic, and the admin port the
    /// operator's router Deployment declares.
    pub fn new(namespace: impl Into<String>) -> RouterOptions {
        RouterOptions {
            namespace: namespace.into(),
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            http_port: port(HTTP_PORT),
            grpc_port: port(GRPC_PORT),
            admin_port: port(ROUTER_ADMIN_PORT),
            router: RouterConfig::default(),
            coalesce: DEFAULT_COALESCE,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

fn port(number: i32) -> u16 {
    u16::try_from(number).unwrap_or_default()
}

/// Connects as kubectl does (the in-cluster service account, else the
/// kubeconfig) and runs the router until `shutdown` resolves.
pub async fn connect_and_run(
    options: RouterOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let client = Client::try_default().await.map_err(Error::Connect)?;
    run_until(client, options, shutdown).await
}

/// Runs the router until `shutdown` resolves, then finishes the requests in
/// flight (within [`RouterOptions::drain_timeout`]). Fails only when a
/// listener cannot be bound; the watches retry on their own.
pub async fn run_until(
    client: Client,
    options: RouterOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let http = listen("HTTP", options.host, options.http_port).await?;
    let grpc = listen("gRPC", options.host, options.grpc_port).await?;
    let admin = listen("admin", options.host, options.admin_port).await?;
    let router = Arc::new(Router::new(&RouteTable::new(), &options.router).map_err(Error::Routes)?);
    let synced = Arc::new(AtomicBool::new(false));
    let changed = Arc::new(Notify::new());

    let isvcs: Api<InferenceServiceObject> = Api::namespaced(client.clone(), &options.namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client, &options.namespace);
    let (isvc_store, isvc_writer) = reflector::store();
    let (slice_store, slice_writer) = reflector::store();
    let isvc_events = reflector::reflector(isvc_writer, watcher(isvcs, watcher::Config::default()))
        .default_backoff();
    let slice_events = reflector::reflector(
        slice_writer,
        watcher(slices, watcher::Config::default().labels(LABEL_REVISION)),
    )
    .default_backoff();
    let background = [
        tokio::spawn(drive("InferenceService", isvc_events, Arc::clone(&changed))),
        tokio::spawn(drive("EndpointSlice", slice_events, Arc::clone(&changed))),
        tokio::spawn(keep_routes(
            Arc::clone(&router),
            isvc_store,
            slice_store,
            changed,
            Arc::clone(&synced),
            options.coalesce,
        )),
    ];

    let (stop, stopped) = watch::channel(false);
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            // An error means the sender is gone, which is a stop too.
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let log_addr = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        namespace = %options.namespace,
        http = %log_addr(&http),
        grpc = %log_addr(&grpc),
        admin = %log_addr(&admin),
        "inferd router started"
    );
    let servers = [
        tokio::spawn(inferd_router::serve(
            http,
            Arc::clone(&router),
            until_stopped(),
        )),
        tokio::spawn(inferd_router::serve_grpc(
            grpc,
            Arc::clone(&router),
            until_stopped(),
        )),
        tokio::spawn(serve_admin(admin, router, synced, until_stopped())),
    ];

    shutdown.await;
    tracing::info!("shutting down: finishing the requests in flight");
    let _ = stop.send(true);
    let aborts: Vec<_> = servers.iter().map(JoinHandle::abort_handle).collect();
    let drained = tokio::time::timeout(options.drain_timeout, async {
        for server in servers {
            if let Err(e) = server.await {
                tracing::warn!(error = %e, "a listener's task failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            timeout = ?options.drain_timeout,
            "requests still in flight after the drain timeout; stopping anyway"
        );
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
    // The watches ran until now so that held requests could still be woken.
    background.iter().for_each(JoinHandle::abort);
    tracing::info!("router stopped");
    Ok(())
}

async fn listen(what: &'static str, host: IpAddr, port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::new(host, port);
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { what, addr, source })
}

/// Runs a reflector's stream (which keeps its store current) and pokes
/// `changed` on every event. Errors are logged; the stream retries with
/// backoff and never ends on its own.
async fn drive<K>(
    what: &'static str,
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    changed: Arc<Notify>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::warn!(kind = what, error = %e, "watch failed; retrying"),
        }
    }
}

/// Rebuilds the routes once both stores listed everything, then after every
/// change, at most once per `coalesce`: changes during the pause collapse
/// into the one pending notification.
async fn keep_routes(
    router: Arc<Router>,
    services: Store<InferenceServiceObject>,
    slices: Store<EndpointSlice>,
    changed: Arc<Notify>,
    synced: Arc<AtomicBool>,
    coalesce: Duration,
) {
    if services.wait_until_ready().await.is_err() || slices.wait_until_ready().await.is_err() {
        return;
    }
    let mut applied = RouteTable::new();
    loop {
        let table = route_table(&services.state(), &slices.state());
        applied = apply_routes(&router, table, &applied);
        if !synced.swap(true, Ordering::SeqCst) {
            tracing::info!(
                services = applied.services.len(),
                "first full sync done; routing"
            );
        } else {
            tracing::debug!(services = applied.services.len(), "routes rebuilt");
        }
        changed.notified().await;
        tokio::time::sleep(coalesce).await;
    }
}

/// Puts `table` in place and returns what was applied. The router refuses
/// a whole table for one bad service (a status edited by hand with shares
/// not summing to 100, say), so a refused service keeps its route from
/// `previous` (it goes on serving what it served), or is left out when it
/// had none; the other services are updated either way.
pub(crate) fn apply_routes(
    router: &Router,
    table: RouteTable,
    previous: &RouteTable,
) -> RouteTable {
    let mut table = table;
    let mut kept_previous = BTreeSet::new();
    loop {
        let error = match router.replace_routes(&table) {
            Ok(()) => return table,
            Err(e) => e,
        };
        let service = refused_service(&error).to_owned();
        let old = previous.services.get(&service);
        match old {
            Some(old) if kept_previous.insert(service.clone()) => {
                tracing::warn!(%service, error = %error, "route refused; the service keeps its previous route");
                table.services.insert(service, old.clone());
            }
            _ => {
                if table.services.remove(&service).is_none() {
                    // Cannot happen: the error names a service of the table.
                    tracing::error!(error = %error, "route table refused");
                    return previous.clone();
                }
                tracing::warn!(%service, error = %error, "route refused; the service is not routed");
            }
        }
    }
}

/// The service a refusal is about.
fn refused_service(error: &RouteError) -> &str {
    match error {
        RouteError::EmptyServiceName => "",
        RouteError::EmptyRevisionName { service }
        | RouteError::DuplicateRevision { service, .. }
        | RouteError::PercentOver100 { service, .. }
        | RouteError::WeightSum { service, .. }
        | RouteError::UnknownTag { service, .. }
        | RouteError::ZeroTimeout { service } => service,
    }
}

/// Serves the admin endpoints of `router` on `listener` until `shutdown`
/// resolves, then waits for the requests in flight: `GET /stats`
/// ([`encode_stats`] of [`Router::concurrency_all`]), `GET /metrics`
/// ([`Router::metrics_text`]) and `GET /healthz` (200 once `synced` is
/// true, else 503). Taking the listener and the flag makes it usable, and
/// testable, without a cluster.
pub async fn serve_admin(
    listener: TcpListener,
    router: Arc<Router>,
    synced: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) {
    serve_get(
        listener,
        move |req| admin_response(req, &router, synced.load(Ordering::SeqCst)),
        shutdown,
    )
    .await;
}

/// Serves HTTP/1.1 on `listener`, each request answered by `respond` (no
/// body is read: these are GET endpoints), until `shutdown` resolves, then
/// waits for the requests in flight. The router's admin port and the
/// operator's metrics port both use it.
pub(crate) async fn serve_get(
    listener: TcpListener,
    respond: impl Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
    shutdown: impl Future<Output = ()>,
) {
    let respond = Arc::new(respond);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let respond = Arc::clone(&respond);
        let service = service_fn(move |req: Request<Incoming>| {
            let response = respond(&req);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

/// The operator's metrics port: `GET /metrics` ([`OperatorMetrics::text`])
/// and `GET /healthz` (200 while the process runs, leader or standby).
pub async fn serve_operator_metrics(
    listener: TcpListener,
    metrics: Arc<crate::metrics::OperatorMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    serve_get(
        listener,
        move |req| {
            let path = req.uri().path();
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return json_error(StatusCode::METHOD_NOT_ALLOWED, &format!("{path} takes GET"));
            }
            match path {
                "/metrics" => with_type(StatusCode::OK, metrics.text(), OPENMETRICS),
                "/healthz" => with_type(
                    StatusCode::OK,
                    r#"{"ok":true}"#.to_owned(),
                    "application/json",
                ),
                _ => json_error(StatusCode::NOT_FOUND, &format!("no endpoint {path}")),
            }
        },
        shutdown,
    )
    .await;
}

fn admin_response<B>(req: &Request<B>, router: &Router, synced: bool) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/stats" | "/metrics" | "/healthz") {
        return json_error(StatusCode::NOT_FOUND, &format!("no endpoint {path}"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = json_error(StatusCode::METHOD_NOT_ALLOWED, &format!("{path} takes GET"));
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/stats" => with_type(
            StatusCode::OK,
            encode_stats(&router.concurrency_all()),
            "application/json",
        ),
        "/metrics" => with_type(StatusCode::OK, router.metrics_text(), OPENMETRICS),
        _ if synced => with_type(
            StatusCode::OK,
            r#"{"ok":true}"#.to_owned(),
            "application/json",
        ),
        _ => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the routes are not synced with the cluster yet",
        ),
    }
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    with_type(status, body, "application/json")
}

/// `/stats`: `{"services": {SERVICE: [REVISION, ...]}}`.
#[derive(Serialize, Deserialize)]
struct StatsDocument {
    services: BTreeMap<String, Vec<RevisionStats>>,
}

/// One revision in `/stats`. Unknown fields are ignored when reading, so
/// an operator reads routers of a newer version that report more.
#[derive(Serialize, Deserialize)]
struct RevisionStats {
    revision: String,
    in_flight: usize,
    held: usize,
    replicas: usize,
    requests_total: u64,
}

/// The `/stats` document of `stats` (per service, its revisions' requests
/// in flight, held, replicas and requests routed):
/// `{"services":{"iris":[{"revision":"iris-00001","in_flight":0,"held":0,"replicas":2,"requests_total":5}]}}`.
pub fn encode_stats(stats: &BTreeMap<String, Vec<RevisionConcurrency>>) -> String {
    let document = StatsDocument {
        services: stats
            .iter()
            .map(|(service, revisions)| {
                let revisions = revisions
                    .iter()
                    .map(|r| RevisionStats {
                        revision: r.revision.clone(),
                        in_flight: r.in_flight,
                        held: r.held,
                        replicas: r.replicas,
                        requests_total: r.requests_total,
                    })
                    .collect();
                (service.clone(), revisions)
            })
            .collect(),
    };
    // Maps with string keys and plain numbers always serialize.
    serde_json::to_string(&document).unwrap_or_default()
}

/// A `/stats` document that cannot be read, with the JSON path of the bad
/// value (`services.iris[0].in_flight`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("router stats: {path}: {message}")]
pub struct StatsError {
    pub path: String,
    pub message: String,
}

/// Reads a router's `/stats` document (what [`encode_stats`] writes), for
/// the operator's autoscaler, which sums the numbers of every router pod
/// per revision. Refuses malformed JSON, missing fields, wrong types,
/// negative or fractional counts, empty and repeated revision names of a
/// service, naming the path of the bad value.
pub fn parse_stats(body: &[u8]) -> Result<BTreeMap<String, Vec<RevisionConcurrency>>, StatsError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let document: StatsDocument =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| StatsError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    deserializer.end().map_err(|e| StatsError {
        path: ".".to_owned(),
        message: e.to_string(),
    })?;
    let mut services = BTreeMap::new();
    for (service, revisions) in document.services {
        let mut names = BTreeSet::new();
        for (i, r) in revisions.iter().enumerate() {
            let problem = if r.revision.is_empty() {
                Some("the revision name is empty".to_owned())
            } else if !names.insert(r.revision.as_str()) {
                Some(format!("revision {} appears twice", r.revision))
            } else {
                None
            };
            if let Some(message) = problem {
                return Err(StatsError {
                    path: format!("services.{service}[{i}].revision"),
                    message,
                });
            }
        }
        let revisions = revisions
            .into_iter()
            .map(|r| RevisionConcurrency {
                revision: r.revision,
                in_flight: r.in_flight,
                held: r.held,
                replicas: r.replicas,
                requests_total: r.requests_total,
            })
            .collect();
        services.insert(service, revisions);
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use inferd_router::{
        ReplicaAddr, RevisionRoute, RouteTable, Router, RouterConfig, ServiceRoute,
    };

    use super::*;

    fn route(percent: u32) -> ServiceRoute {
        let replica: ReplicaAddr = "127.0.0.1:9".parse::<SocketAddr>().expect("address").into();
        ServiceRoute::new()
            .with_timeout(Duration::from_secs(5))
            .with_revision(RevisionRoute::new("r-00001", percent, vec![replica]))
    }

    fn names(router: &Router) -> Vec<(String, usize)> {
        router
            .concurrency_all()
            .into_iter()
            .map(|(s, r)| (s, r[0].replicas))
            .collect()
    }

    #[test]
    fn a_refused_service_keeps_its_previous_route_and_others_update() {
        let router = Router::new(&RouteTable::new(), &RouterConfig::default()).expect("router");
        let first = RouteTable::new().with_service("a", route(100));
        let applied = apply_routes(&router, first, &RouteTable::new());
        assert_eq!(applied.services.len(), 1);

        // "a" turns bad (shares sum to 50), "b" is new and fine.
        let second = RouteTable::new()
            .with_service("a", route(50))
            .with_service("b", route(100));
        let applied = apply_routes(&router, second, &applied);
        assert_eq!(applied.services["a"].revisions[0].percent, 100);
        assert!(applied.services.contains_key("b"));
        assert_eq!(names(&router), [("a".to_owned(), 1), ("b".to_owned(), 1)]);

        // A bad service never routed before is left out.
        let third = RouteTable::new()
            .with_service("c", route(30))
            .with_service("b", route(100));
        let applied = apply_routes(&router, third, &RouteTable::new());
        assert_eq!(applied.services.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(names(&router), [("b".to_owned(), 1)]);
    }

    #[test]
    fn admin_paths_and_methods() {
        let router = Router::new(&RouteTable::new(), &RouterConfig::default()).expect("router");
        let get = |path: &str| Request::builder().uri(path).body(()).expect("request");
        assert_eq!(
            admin_response(&get("/healthz"), &router, false).status(),
            503
        );
        assert_eq!(
            admin_response(&get("/healthz"), &router, true).status(),
            200
        );
        assert_eq!(admin_response(&get("/nope"), &router, true).status(), 404);
        let post = Request::builder()
            .method(Method::POST)
            .uri("/stats")
            .body(())
            .expect("request");
        let response = admin_response(&post, &router, true);
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
        let metrics = admin_response(&get("/metrics"), &router, true);
        assert_eq!(metrics.headers()[header::CONTENT_TYPE], OPENMETRICS);
    }
}
