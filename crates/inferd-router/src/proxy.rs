//! The router: its table, its clients to the replicas, and the HTTP side
//! (inference paths forwarded, the router's own health and metrics
//! endpoints answered here).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::body::{BodySlot, Counted, LazyBody, ReadError, RouterBody, Whole, full, read_whole};
use crate::error::Failure;
use crate::hold::{Dispatched, Trace};
use crate::metrics::Metrics;
use crate::rng::Rng;
use crate::stats::Stats;
use crate::table::{Compiled, Replica, RouteError, RouteTable, Service, Wire};

/// Request header (gRPC metadata) that pins a revision (by name, or the
/// tag `latest` or `prev`); every response the router forwards names the
/// revision that served it in the same header.
pub const REVISION_HEADER: &str = "x-inferd-revision";

/// Called when a request starts being held on a revision that has no
/// replica, with the service and revision names, so that the caller can
/// scale it from zero at once. It runs on the request's task: it must
/// return quickly (send on a channel, say).
pub type ActivationHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Seed of the generator behind the weighted split and the replica
    /// choice; a fixed seed gives the same choices for the same sequence of
    /// requests.
    pub seed: u64,
    /// How long connecting to a replica may take.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection to a replica is kept.
    pub pool_idle_timeout: Duration,
    /// Requests one service may hold waiting for a usable replica; the
    /// next one gets a 429 with `Retry-After` (gRPC: RESOURCE_EXHAUSTED).
    pub max_held_requests: usize,
    /// Bytes of request bodies one service may hold waiting for a usable
    /// replica; a request whose body would pass it is refused like one
    /// over [`RouterConfig::max_held_requests`].
    pub max_held_body_bytes: usize,
    /// Largest first gRPC message the router reads to find the model name;
    /// a larger one gets RESOURCE_EXHAUSTED. A unary call is read whole,
    /// up to this bound, before it is dispatched.
    pub max_grpc_message_bytes: usize,
    /// Largest HTTP request body the router takes: one that announces more
    /// (Content-Length) gets a 413 before any of it is read, one that sends
    /// more gets a 413 as soon as it does. The router reads every HTTP
    /// body whole before it takes a replica slot, so that a slow client
    /// holds no slot and counts as no load, and so that a request lost by a
    /// replica can go to another with the same body; this costs up to this
    /// much memory per request being read or in flight. `inferd up` sets
    /// it to the replicas' `--max-body-bytes`.
    pub max_body_bytes: usize,
    /// Longest wait for the next part of a request body (or of a gRPC
    /// call's first message) before the router gives up on it with a 408
    /// (gRPC: DEADLINE_EXCEEDED) and closes the connection.
    pub body_read_timeout: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self {
            seed: RandomState::new().hash_one(0u8),
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            max_held_requests: 1000,
            max_held_body_bytes: 256 << 20,
            max_grpc_message_bytes: 64 << 20,
            max_body_bytes: 64 << 20,
            body_read_timeout: Duration::from_secs(5),
        }
    }
}

/// The autoscaler's view of one revision of a service. The concurrency to
/// scale on is `in_flight + held`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionConcurrency {
    pub revision: String,
    /// Requests sent to the revision's replicas and not yet finished
    /// (response body included).
    pub in_flight: usize,
    /// Requests waiting for a usable replica of the revision.
    pub held: usize,
    /// Ready replicas of the revision.
    pub replicas: usize,
    /// Requests routed to the revision (sent or held) since the router
    /// started; route replacements do not reset it.
    pub requests_total: u64,
}

#[derive(Default)]
struct Hook(Option<ActivationHook>);

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// The autoscaler's view of each revision of `service`, in the table's order.
fn revision_concurrency(service: &Service) -> Vec<RevisionConcurrency> {
    service
        .revisions
        .iter()
        .map(|r| RevisionConcurrency {
            revision: r.name.clone(),
            in_flight: r.stats.in_flight(),
            held: r.stats.held(),
            replicas: r.replicas.len(),
            requests_total: r.stats.requests(),
        })
        .collect()
}

/// The gateway: a route table that can be replaced while requests run,
/// counters that outlive tables, and pooled clients to the replicas
/// (HTTP/1.1, and HTTP/2 for gRPC).
#[derive(Debug)]
pub struct Router {
    routes: RwLock<Arc<Compiled>>,
    stats: Mutex<Stats>,
    pub(crate) metrics: Metrics,
    http: Client<HttpConnector, LazyBody>,
    grpc: Client<HttpConnector, LazyBody>,
    pub(crate) rng: Rng,
    hook: RwLock<Hook>,
    pub(crate) max_held: usize,
    pub(crate) max_held_bytes: usize,
    pub(crate) max_grpc_message: usize,
    max_body: usize,
    pub(crate) body_read_timeout: Duration,
}

impl Router {
    pub fn new(table: &RouteTable, config: &RouterConfig) -> Result<Self, RouteError> {
        let metrics = Metrics::new();
        let mut stats = Stats::default();
        let routes = Compiled::compile(table, &Compiled::default(), &mut stats, &metrics)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .build(connector.clone());
        let grpc = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .http2_only(true)
            .build(connector);
        Ok(Self {
            routes: RwLock::new(Arc::new(routes)),
            stats: Mutex::new(stats),
            metrics,
            http,
            grpc,
            rng: Rng::new(config.seed),
            hook: RwLock::new(Hook::default()),
            max_held: config.max_held_requests,
            max_held_bytes: config.max_held_body_bytes,
            max_grpc_message: config.max_grpc_message_bytes,
            max_body: config.max_body_bytes,
            body_read_timeout: config.body_read_timeout,
        })
    }

    /// Replaces the route table at once; requests already routed finish
    /// where they are, and held requests look at the new table. A refused
    /// table leaves the old one in place.
    pub fn replace_routes(&self, table: &RouteTable) -> Result<(), RouteError> {
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut current = self.routes.write().unwrap_or_else(PoisonError::into_inner);
            let compiled = Compiled::compile(table, &current, &mut stats, &self.metrics)?;
            *current = Arc::new(compiled);
        }
        stats.wake_all();
        Ok(())
    }

    /// Sets the function called when a request starts being held on a
    /// revision with no replica. It is called when the number of requests
    /// held on such a revision rises from zero, not for each of them: the
    /// held count in [`Router::concurrency`] tells the rest.
    pub fn set_activation_hook(&self, hook: ActivationHook) {
        self.hook.write().unwrap_or_else(PoisonError::into_inner).0 = Some(hook);
    }

    pub(crate) fn activate(&self, service: &str, revision: &str) {
        let hook = self
            .hook
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone();
        tracing::info!(%service, %revision, "activating a revision with no replica");
        if let Some(hook) = hook {
            hook(service, revision);
        }
    }

    pub(crate) fn routes(&self) -> Arc<Compiled> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Per revision of `service` (None: no such service), in the table's
    /// order: requests in flight and held, replicas, and requests routed.
    pub fn concurrency(&self, service: &str) -> Option<Vec<RevisionConcurrency>> {
        let routes = self.routes();
        let service = routes.services.get(service)?;
        Some(revision_concurrency(service))
    }

    /// [`Router::concurrency`] of every service in the current table, by
    /// service name: what a router reports in one scrape, so that an
    /// autoscaler outside the process reads all services at once and every
    /// revision from the same table.
    pub fn concurrency_all(&self) -> BTreeMap<String, Vec<RevisionConcurrency>> {
        let routes = self.routes();
        routes
            .services
            .iter()
            .map(|(name, service)| (name.clone(), revision_concurrency(service)))
            .collect()
    }

    /// The router's metrics in the OpenMetrics text format, what `GET
    /// /metrics` on the HTTP listener answers, for a caller that serves them
    /// elsewhere (an admin port apart from user traffic).
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    /// Requests in flight on a revision, whether or not the current table
    /// still lists it (0 for a revision no table named): a revision removed
    /// from the table is drained when this reaches 0.
    pub fn revision_in_flight(&self, service: &str, revision: &str) -> usize {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .find(service, revision)
            .map_or(0, |s| s.in_flight())
    }

    /// Requests held waiting for a replica of `service`, all revisions
    /// together.
    pub fn held_requests(&self, service: &str) -> usize {
        self.routes()
            .services
            .get(service)
            .map_or(0, |s| s.stats.held())
    }

    /// Whether every service has a routable revision (a serving one with a
    /// replica, or an activating one); true for a table with no service.
    pub fn is_ready(&self) -> bool {
        self.routes().services.values().all(|s| s.is_routable())
    }

    /// Routes one HTTP request and returns the response to send to the
    /// client; `/metrics`, `/v2/health/live` and `/v2/health/ready` are the
    /// router's own.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<RouterBody> {
        if let Some(response) = self.own_endpoint(&req) {
            return response;
        }
        let mut trace = Trace::new(Instant::now());
        let result = self.route_http(req, &mut trace).await;
        self.finish(&trace, result, Wire::Http)
    }

    async fn route_http(
        &self,
        req: Request<Incoming>,
        trace: &mut Trace,
    ) -> Result<Response<RouterBody>, Failure> {
        let name = service_name(req.uri().path())
            .ok_or(Failure::NoModel)?
            .to_owned();
        let pin = pin(req.headers())?;
        let (parts, body) = req.into_parts();
        // The whole body first: a request holds no slot and counts as no
        // load while its client is still sending.
        let body = match self.read_body(body, Bytes::new(), self.max_body).await {
            Ok(body) => body,
            Err(failure) => {
                // Counted under the service, when the table knows it.
                trace.service = self.routes().services.get(&name).cloned();
                return Err(failure);
            }
        };
        let dispatched = self
            .dispatch(&name, pin.as_deref(), Wire::Http, body.bytes.len(), trace)
            .await?;
        self.forward_until(parts, BodySlot::whole(body), Wire::Http, dispatched, trace)
            .await
    }

    /// [`read_whole`] with the router's read timeout, its errors as the
    /// client's failures.
    pub(crate) async fn read_body(
        &self,
        body: Incoming,
        prefix: Bytes,
        limit: usize,
    ) -> Result<Whole, Failure> {
        read_whole(body, prefix, limit, self.body_read_timeout)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => Failure::BodyTooLarge { limit },
                ReadError::Timeout => Failure::BodyTimeout {
                    timeout: self.body_read_timeout,
                },
                ReadError::Broken(e) => Failure::RequestBody(e),
            })
    }

    /// [`Router::forward`] bounded by the request's deadline (reading the
    /// client's body included).
    pub(crate) async fn forward_until(
        &self,
        parts: request::Parts,
        slot: BodySlot,
        wire: Wire,
        dispatched: Dispatched,
        trace: &Trace,
    ) -> Result<Response<RouterBody>, Failure> {
        let service = Arc::clone(&dispatched.service);
        let forward = self.forward(parts, slot, wire, dispatched);
        match trace.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, forward)
                .await
                .map_err(|_| Failure::Timeout {
                    service: service.name.clone(),
                    timeout: service.timeout,
                })?,
            None => forward.await,
        }
    }

    /// Sends the request on its slot's replica; when that fails at the
    /// transport level before the response head, once more to another
    /// replica of the revision that has a free slot, if the body can be
    /// sent again.
    async fn forward(
        &self,
        parts: request::Parts,
        slot: BodySlot,
        wire: Wire,
        dispatched: Dispatched,
    ) -> Result<Response<RouterBody>, Failure> {
        let Dispatched {
            service,
            revision,
            slot: mut in_flight,
        } = dispatched;
        let revision = &service.revisions[revision];
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(REVISION_HEADER);
        let version = match wire {
            Wire::Http => Version::HTTP_11,
            Wire::Grpc => {
                // gRPC servers may insist on it; it is the only TE value
                // HTTP/2 allows.
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
                Version::HTTP_2
            }
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let mut retried = false;
        loop {
            let replica = Arc::clone(in_flight.replica());
            let mut outgoing = Request::new(slot.attempt());
            *outgoing.method_mut() = parts.method.clone();
            *outgoing.version_mut() = version;
            *outgoing.headers_mut() = headers.clone();
            *outgoing.uri_mut() = replica_uri(&replica, wire, &path);
            let sent = match wire {
                Wire::Http => self.http.request(outgoing).await,
                Wire::Grpc => self.grpc.request(outgoing).await,
            };
            let e = match sent {
                Ok(response) => {
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    return Ok(Response::from_parts(parts, Counted::boxed(body, in_flight)));
                }
                Err(e) => e,
            };
            // Inference requests are idempotent: one that a replica lost
            // before answering may run on another, once.
            let next = if !retried && is_transport(&e) && slot.retry() {
                revision.acquire(&self.rng, wire, Some(&replica)).ok()
            } else {
                None
            };
            let Some(next) = next else {
                return Err(Failure::Replica {
                    service: service.name.clone(),
                    source: e,
                });
            };
            tracing::debug!(
                revision = %revision.name,
                failed = %replica.addr.http,
                next = %next.replica().addr.http,
                error = %e,
                "replica failed before answering, retrying on another"
            );
            revision.stats.retries.inc();
            in_flight = next;
            retried = true;
        }
    }

    /// Turns a request's outcome into its response, and counts it.
    pub(crate) fn finish(
        &self,
        trace: &Trace,
        result: Result<Response<RouterBody>, Failure>,
        wire: Wire,
    ) -> Response<RouterBody> {
        let service = trace.service_label();
        let revision = trace.revision_name();
        let revision_value = revision.and_then(|r| HeaderValue::from_str(r).ok());
        let response = match result {
            Ok(mut response) => {
                if let Some(value) = revision_value {
                    response.headers_mut().insert(REVISION_HEADER, value);
                }
                response
            }
            Err(failure) => {
                let retry_after = failure.retry_after();
                let close = failure.closes_connection();
                if failure.is_rejection() {
                    self.metrics.rejected(service, failure.kind());
                    tracing::debug!(%service, kind = failure.kind(), error = %failure, "request refused");
                } else {
                    tracing::warn!(%service, revision = revision.unwrap_or(""), error = %failure, "request failed");
                }
                let mut response = match wire {
                    Wire::Http => error(failure.status(), &failure.to_string()),
                    Wire::Grpc => crate::grpc::status(failure.grpc_code(), &failure.to_string()),
                };
                let headers = response.headers_mut();
                if let Some(value) = revision_value {
                    headers.insert(REVISION_HEADER, value);
                }
                if let Some(seconds) = retry_after {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                if close && wire == Wire::Http {
                    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        };
        let code = response.status().as_u16();
        let elapsed = trace.start.elapsed();
        match &trace.revision {
            Some((_, stats)) if code == 200 => {
                stats.ok.inc();
                stats.duration.observe(elapsed.as_secs_f64());
            }
            _ => self
                .metrics
                .answered(service, revision.unwrap_or(""), code, elapsed),
        }
        response
    }

    fn own_endpoint(&self, req: &Request<Incoming>) -> Option<Response<RouterBody>> {
        let path = req.uri().path();
        if !matches!(path, "/metrics" | "/v2/health/live" | "/v2/health/ready") {
            return None;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, &format!("{path} takes GET"));
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(response);
        }
        Some(match path {
            "/metrics" => {
                let mut response = Response::new(full(self.metrics.encode()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            "/v2/health/live" => json(StatusCode::OK, &serde_json::json!({ "live": true })),
            _ => {
                let routes = self.routes();
                let mut waiting: Vec<&str> = routes
                    .services
                    .values()
                    .filter(|s| !s.is_routable())
                    .map(|s| s.name.as_str())
                    .collect();
                if waiting.is_empty() {
                    json(StatusCode::OK, &serde_json::json!({ "ready": true }))
                } else {
                    waiting.sort_unstable();
                    let message = format!("no routable revision: {}", waiting.join(", "));
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({ "ready": false, "error": message }),
                    )
                }
            }
        })
    }
}

/// The pinned revision, if the request names one.
pub(crate) fn pin(headers: &HeaderMap) -> Result<Option<String>, Failure> {
    headers
        .get(REVISION_HEADER)
        .map(|v| v.to_str().map(str::to_owned).map_err(|_| Failure::BadPin))
        .transpose()
}

/// Whether a replica failed at the transport level before its response
/// head: connecting, the connection reset or closed, the HTTP/1 response
/// cut short, the HTTP/2 stream reset or the connection going away. Not a
/// request the client could not have sent anywhere (its body broke, or the
/// router's own mistake), nor a response head the replica garbled.
fn is_transport(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return true;
    }
    // The client's other errors wrap one of hyper's, or refuse the request
    // before sending it.
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<hyper::Error>())
        .is_some_and(|h| !(h.is_user() || h.is_parse() || h.is_timeout()))
}

fn replica_uri(replica: &Replica, wire: Wire, path: &str) -> Uri {
    let addr = match wire {
        Wire::Http => replica.addr.http,
        // A replica without a gRPC address never gets a slot for gRPC.
        Wire::Grpc => replica.addr.grpc.unwrap_or(replica.addr.http),
    };
    let uri = format!("http://{addr}{path}");
    // The path came from a parsed URI and the authority is an address, so
    // this parses; the fallback only keeps the type total.
    uri.parse()
        .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1/"))
}

/// The model (service) name of a V2 or V1 inference path:
/// `/v2/models/{name}[/...]` or `/v1/models/{name}[:verb]`.
pub fn service_name(path: &str) -> Option<&str> {
    let (v2, rest) = if let Some(rest) = path.strip_prefix("/v2/models/") {
        (true, rest)
    } else {
        (false, path.strip_prefix("/v1/models/")?)
    };
    let end = if v2 {
        rest.find('/')
    } else {
        rest.find([':', '/'])
    };
    let name = &rest[..end.unwrap_or(rest.len())];
    (!name.is_empty()).then_some(name)
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers that the `Connection` header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

fn error(status: StatusCode, message: &str) -> Response<RouterBody> {
    json(status, &serde_json::json!({ "error": message }))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<RouterBody> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::service_name;

    #[test]
    fn service_from_path() {
        assert_eq!(service_name("/v2/models/iris/infer"), Some("iris"));
        assert_eq!(
            service_name("/v2/models/iris/versions/2/infer"),
            Some("iris")
        );
        assert_eq!(service_name("/v2/models/iris"), Some("iris"));
        assert_eq!(service_name("/v2/models/iris/ready"), Some("iris"));
        assert_eq!(service_name("/v1/models/iris:predict"), Some("iris"));
        assert_eq!(service_name("/v1/models/iris"), Some("iris"));
        assert_eq!(service_name("/v2/models/"), None);
        assert_eq!(service_name("/v1/models/:predict"), None);
        assert_eq!(service_name("/v2/health/ready"), None);
        assert_eq!(service_name("/"), None);
    }
}
