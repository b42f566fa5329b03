//! Real backends and a real router on loopback, shared by the tests.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use inferd_router::{
    REVISION_HEADER, ReplicaAddr, RevisionRoute, RouteTable, Router, RouterConfig, ServiceRoute,
};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

pub const INFER: &str = "/v2/models/iris/infer";

/// A backend that answers `{id}:{request body}`; with a gate, it waits for
/// the gate to open before answering. It counts the requests it got and
/// the most it served at once.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub max_concurrent: Arc<AtomicUsize>,
}

impl Backend {
    pub fn replica(&self) -> ReplicaAddr {
        ReplicaAddr::http_only(self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn backend(id: &'static str, gate: Option<watch::Receiver<bool>>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    let hits = Arc::new(AtomicUsize::new(0));
    let max_concurrent = Arc::new(AtomicUsize::new(0));
    let current = Arc::new(AtomicUsize::new(0));
    let (counter, max) = (Arc::clone(&hits), Arc::clone(&max_concurrent));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (counter, max, current) =
                (Arc::clone(&counter), Arc::clone(&max), Arc::clone(&current));
            let gate = gate.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let (counter, max, current) =
                    (Arc::clone(&counter), Arc::clone(&max), Arc::clone(&current));
                let gate = gate.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let body = body.unwrap_or_default();
                    if let Some(mut gate) = gate {
                        let _ = gate.wait_for(|open| *open).await;
                    }
                    let mut answer = format!("{id}:").into_bytes();
                    answer.extend_from_slice(&body);
                    current.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer))))
                }
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Backend {
        addr,
        hits,
        max_concurrent,
    }
}

/// How a lost replica's socket ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// An orderly close (FIN): the peer reads end of file.
    Fin,
    /// An abortive close (RST): the peer reads a reset.
    Reset,
}

/// A backend that reads each request whole, records its body, and then
/// closes the connection without answering: a replica killed while
/// requests are in flight on it.
pub struct Closing {
    pub addr: SocketAddr,
    pub bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Closing {
    pub fn replica(&self) -> ReplicaAddr {
        ReplicaAddr::http_only(self.addr)
    }

    /// Requests it read whole.
    pub fn hits(&self) -> usize {
        self.bodies.lock().expect("bodies").len()
    }

    pub fn bodies(&self) -> Vec<Bytes> {
        self.bodies.lock().expect("bodies").clone()
    }
}

pub async fn closing_backend(close: Close) -> Closing {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let seen = Arc::clone(&bodies);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if close == Close::Reset {
                tcp.set_zero_linger().expect("SO_LINGER");
            }
            let read = Arc::new(Notify::new());
            let (seen, done) = (Arc::clone(&seen), Arc::clone(&read));
            let service = service_fn(move |req: Request<Incoming>| {
                let (seen, done) = (Arc::clone(&seen), Arc::clone(&done));
                async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    seen.lock().expect("bodies").push(body.unwrap_or_default());
                    done.notify_one();
                    std::future::pending::<()>().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                }
            });
            tokio::spawn(async move {
                let connection = http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
                // Dropping the connection closes the socket.
                tokio::select! {
                    _ = connection => {}
                    () = read.notified() => {}
                }
            });
        }
    });
    Closing { addr, bodies }
}

/// A backend that answers every request with `status` and the body `{id}`,
/// and counts them.
pub async fn answering(id: &'static str, status: StatusCode) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            let service = service_fn(move |req: Request<Incoming>| {
                let counter = Arc::clone(&counter);
                async move {
                    let _ = req.into_body().collect().await;
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut response = Response::new(Full::new(Bytes::from_static(id.as_bytes())));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Backend {
        addr,
        hits,
        max_concurrent: Arc::new(AtomicUsize::new(0)),
    }
}

/// An address nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

pub fn config(seed: u64) -> RouterConfig {
    RouterConfig {
        seed,
        ..RouterConfig::default()
    }
}

pub async fn router(table: &RouteTable, seed: u64) -> (Arc<Router>, SocketAddr) {
    router_with(table, &config(seed)).await
}

pub async fn router_with(table: &RouteTable, config: &RouterConfig) -> (Arc<Router>, SocketAddr) {
    let router = Arc::new(Router::new(table, config).expect("route table"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
    let addr = listener.local_addr().expect("router address");
    tokio::spawn(inferd_router::serve(
        listener,
        Arc::clone(&router),
        std::future::pending(),
    ));
    (router, addr)
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub struct Answer {
    pub status: StatusCode,
    pub revision: Option<String>,
    /// The `Retry-After` header.
    pub retry_after: Option<String>,
    pub body: String,
}

impl Answer {
    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        let json: serde_json::Value = serde_json::from_str(&self.body).expect("json body");
        json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {}", self.body))
            .to_owned()
    }
}

pub async fn send(
    client: &HttpClient,
    router: SocketAddr,
    path: &str,
    pin: Option<&str>,
) -> Answer {
    let mut req = Request::post(format!("http://{router}{path}"));
    if let Some(pin) = pin {
        req = req.header(REVISION_HEADER, pin);
    }
    let req = req
        .body(Full::new(Bytes::from_static(b"payload")))
        .expect("request");
    answer(client.request(req).await.expect("router answers")).await
}

/// Sends `body` (with its length) to `path`.
pub async fn send_body(client: &HttpClient, router: SocketAddr, path: &str, body: Bytes) -> Answer {
    let req = Request::post(format!("http://{router}{path}"))
        .body(Full::new(body))
        .expect("request");
    answer(client.request(req).await.expect("router answers")).await
}

/// A body of frames with no announced length: HTTP/1.1 sends it chunked.
pub struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

pub type ChunkedClient = Client<HttpConnector, Chunks>;

pub fn chunked_client() -> ChunkedClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends `chunks` to `path` as a chunked body.
pub async fn send_chunks(
    client: &ChunkedClient,
    router: SocketAddr,
    path: &str,
    chunks: Vec<Bytes>,
) -> Answer {
    let req = Request::post(format!("http://{router}{path}"))
        .body(Chunks(chunks.into()))
        .expect("request");
    answer(client.request(req).await.expect("router answers")).await
}

/// The value of the sample `series` (name and labels exactly as encoded).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

/// `inferd_router_retries_total` of a revision of `iris`, read from the
/// router's `/metrics`.
pub async fn retries(client: &HttpClient, router: SocketAddr, revision: &str) -> f64 {
    let metrics = get(client, router, "/metrics").await.body;
    let series = format!(r#"inferd_router_retries_total{{service="iris",revision="{revision}"}}"#);
    sample(&metrics, &series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

pub async fn get(client: &HttpClient, router: SocketAddr, path: &str) -> Answer {
    let req = Request::get(format!("http://{router}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    answer(client.request(req).await.expect("router answers")).await
}

async fn answer(response: Response<Incoming>) -> Answer {
    let status = response.status();
    let revision = response
        .headers()
        .get(REVISION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_after = response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        revision,
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub fn service(revisions: Vec<RevisionRoute>) -> ServiceRoute {
    revisions
        .into_iter()
        .fold(ServiceRoute::new(), ServiceRoute::with_revision)
}

/// Waits (polling, up to 10 s) until `check` holds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
