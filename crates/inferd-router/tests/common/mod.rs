//! Real backends and a real router on loopback, shared by the tests.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
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
use tokio::sync::watch;

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
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        revision,
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
