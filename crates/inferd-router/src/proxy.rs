//! Choosing a revision and a replica for a request, and forwarding it.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::{BodySlot, Counted, LazyBody, RouterBody, full};
use crate::rng::Rng;
use crate::table::{Compiled, InFlight, Replica, Revision, RouteError, RouteTable};

/// Request header that pins a revision (by name, or the tag `latest` or
/// `prev`); every response names the revision that served it in the same
/// header.
pub const REVISION_HEADER: &str = "x-inferd-revision";

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
}

impl Default for RouterConfig {
    fn default() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self {
            seed: RandomState::new().hash_one(0u8),
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Requests in flight on one revision of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionConcurrency {
    pub revision: String,
    /// Requests sent to the revision's replicas and not yet finished
    /// (response body included).
    pub in_flight: usize,
    /// Ready replicas of the revision.
    pub replicas: usize,
}

/// The gateway: a route table that can be replaced while requests run, and
/// a pooled HTTP/1.1 client to the replicas.
#[derive(Debug)]
pub struct Router {
    routes: RwLock<Arc<Compiled>>,
    client: Client<HttpConnector, LazyBody>,
    rng: Rng,
}

impl Router {
    pub fn new(table: &RouteTable, config: &RouterConfig) -> Result<Self, RouteError> {
        let routes = Compiled::compile(table, &Compiled::default())?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .build(connector);
        Ok(Self {
            routes: RwLock::new(Arc::new(routes)),
            client,
            rng: Rng::new(config.seed),
        })
    }

    /// Replaces the route table at once; requests already routed finish
    /// where they are. A refused table leaves the old one in place.
    pub fn replace_routes(&self, table: &RouteTable) -> Result<(), RouteError> {
        let mut current = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let compiled = Compiled::compile(table, &current)?;
        *current = Arc::new(compiled);
        Ok(())
    }

    fn routes(&self) -> Arc<Compiled> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// In-flight requests per revision of `service` (None: no such
    /// service), in the table's order.
    pub fn concurrency(&self, service: &str) -> Option<Vec<RevisionConcurrency>> {
        let routes = self.routes();
        let service = routes.services.get(service)?;
        Some(
            service
                .revisions
                .iter()
                .map(|r| RevisionConcurrency {
                    revision: r.name.clone(),
                    in_flight: r.replicas.iter().map(|x| x.in_flight()).sum(),
                    replicas: r.replicas.len(),
                })
                .collect(),
        )
    }

    /// Routes one request and returns the response to send to the client.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<RouterBody> {
        let Some(name) = service_name(req.uri().path()) else {
            return error(StatusCode::NOT_FOUND, "no model in the request path", None);
        };
        let routes = self.routes();
        let Some(service) = routes.services.get(name) else {
            let message = format!("unknown service {name}");
            return error(StatusCode::NOT_FOUND, &message, None);
        };
        let service = Arc::clone(service);
        let pin = req.headers().get(REVISION_HEADER).map(HeaderValue::to_str);
        let revision = match pin {
            Some(Ok(pin)) => match service.find_revision(pin) {
                Some(r) => r,
                None => {
                    let message = format!("service {name} has no revision {pin}");
                    return error(StatusCode::NOT_FOUND, &message, None);
                }
            },
            Some(Err(_)) => {
                let message = format!("{REVISION_HEADER} is not visible ASCII");
                return error(StatusCode::BAD_REQUEST, &message, None);
            }
            None => match service.pick_revision(&self.rng) {
                Some(r) => r,
                None => {
                    let message = format!("service {name} has no ready replica");
                    return error(StatusCode::SERVICE_UNAVAILABLE, &message, None);
                }
            },
        };
        let served = HeaderValue::from_str(&revision.name).ok();
        let Some(first) = revision.pick_replica(&self.rng, None) else {
            let message = format!("revision {} has no ready replica", revision.name);
            return error(StatusCode::SERVICE_UNAVAILABLE, &message, served);
        };
        let name = name.to_owned();
        match tokio::time::timeout(service.timeout, self.forward(req, revision, first)).await {
            Ok(Ok(mut response)) => {
                if let Some(served) = served {
                    response.headers_mut().insert(REVISION_HEADER, served);
                }
                response
            }
            Ok(Err(e)) => {
                tracing::warn!(service = %name, revision = %revision.name, error = %e, "replica failed");
                let message = format!("replica of {name} failed: {e}");
                error(StatusCode::BAD_GATEWAY, &message, served)
            }
            Err(_) => {
                let message = format!(
                    "no response from {name} within {} ms",
                    service.timeout.as_millis()
                );
                error(StatusCode::GATEWAY_TIMEOUT, &message, served)
            }
        }
    }

    /// Sends the request to `first`; when connecting fails before any byte
    /// of the body was sent, once more to another replica of the revision.
    async fn forward(
        &self,
        req: Request<Incoming>,
        revision: &Revision,
        first: Arc<Replica>,
    ) -> Result<Response<RouterBody>, hyper_util::client::legacy::Error> {
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(REVISION_HEADER);
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let slot = BodySlot::new(body);
        let mut replica = first;
        let mut retried = false;
        loop {
            let in_flight = InFlight::enter(Arc::clone(&replica));
            let mut outgoing = Request::new(slot.attempt());
            *outgoing.method_mut() = parts.method.clone();
            *outgoing.version_mut() = Version::HTTP_11;
            *outgoing.headers_mut() = headers.clone();
            *outgoing.uri_mut() = replica_uri(&replica, &path);
            match self.client.request(outgoing).await {
                Ok(response) => {
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    return Ok(Response::from_parts(parts, Counted::boxed(body, in_flight)));
                }
                Err(e) if e.is_connect() && !retried && slot.untouched() => {
                    drop(in_flight);
                    let Some(next) = revision.pick_replica(&self.rng, Some(&replica)) else {
                        return Err(e);
                    };
                    tracing::debug!(
                        revision = %revision.name,
                        failed = %replica.addr,
                        next = %next.addr,
                        error = %e,
                        "connect failed, retrying on another replica"
                    );
                    replica = next;
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn replica_uri(replica: &Replica, path: &str) -> Uri {
    let uri = format!("http://{}{path}", replica.addr);
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

fn error(status: StatusCode, message: &str, revision: Option<HeaderValue>) -> Response<RouterBody> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(revision) = revision {
        headers.insert(REVISION_HEADER, revision);
    }
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
