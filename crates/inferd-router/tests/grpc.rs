//! The router's gRPC side in front of HTTP/2 backends that answer like a
//! gRPC server (a message, then `grpc-status` in the trailers).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{config, dead_addr, eventually, retries, service};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use inferd_router::{
    REVISION_HEADER, ReplicaAddr, RevisionRoute, RevisionState, RouteTable, Router, RouterConfig,
};
use tokio::net::TcpListener;
use tokio::sync::Notify;

const INFERENCE: &str = "/inference.GRPCInferenceService";

/// A call a backend got: its path, its body, and its pin header.
type Calls = Arc<Mutex<Vec<(String, Bytes)>>>;

struct GrpcBackend {
    addr: SocketAddr,
    calls: Calls,
}

impl GrpcBackend {
    /// A replica whose HTTP listener is dead: only gRPC reaches it.
    async fn replica(&self) -> ReplicaAddr {
        ReplicaAddr::new(dead_addr().await, Some(self.addr))
    }

    fn calls(&self) -> Vec<(String, Bytes)> {
        self.calls.lock().expect("calls").clone()
    }
}

/// Frames one gRPC message.
fn frame(payload: &[u8]) -> Bytes {
    let mut out = vec![0];
    let len = u32::try_from(payload.len()).expect("small message");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A protobuf message with string field `field` set to `value`, after an
/// unrelated field (id, field 3) so the router has to skip one.
fn named(field: u8, value: &str) -> Vec<u8> {
    let mut out = vec![0x1a, 2, b'i', b'd', (field << 3) | 2];
    out.push(u8::try_from(value.len()).expect("short name"));
    out.extend_from_slice(value.as_bytes());
    out
}

/// Answers every call with the message `{id}` and trailers `grpc-status:
/// 0` and `x-backend: {id}`, and records it.
async fn grpc_backend(id: &'static str) -> GrpcBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            let service = service_fn(move |req: Request<Incoming>| {
                let seen = Arc::clone(&seen);
                async move {
                    let path = req.uri().path().to_owned();
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    seen.lock()
                        .expect("calls")
                        .push((path, body.unwrap_or_default()));
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    trailers.insert("x-backend", HeaderValue::from_static(id));
                    let body = Full::new(frame(id.as_bytes()))
                        .with_trailers(std::future::ready(Some(Ok::<_, Infallible>(trailers))));
                    let mut response = Response::new(body);
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(async move {
                let _ = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    GrpcBackend { addr, calls }
}

/// How a lost gRPC replica ends a call it read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// RST_STREAM (INTERNAL_ERROR), the connection kept.
    ResetStream,
    /// The connection closed.
    Close,
}

/// Reads each call whole, records it, and then ends it without answering.
async fn lost_backend(lost: Lost) -> GrpcBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let read = Arc::new(Notify::new());
            let (seen, done) = (Arc::clone(&seen), Arc::clone(&read));
            let service = service_fn(move |req: Request<Incoming>| {
                let (seen, done) = (Arc::clone(&seen), Arc::clone(&done));
                async move {
                    let path = req.uri().path().to_owned();
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    seen.lock()
                        .expect("calls")
                        .push((path, body.unwrap_or_default()));
                    if lost == Lost::Close {
                        done.notify_one();
                        std::future::pending::<()>().await;
                    }
                    // hyper resets the stream of a service that fails.
                    Err::<Response<Full<Bytes>>, _>(std::io::Error::other("lost"))
                }
            });
            tokio::spawn(async move {
                let connection = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service);
                tokio::select! {
                    _ = connection => {}
                    () = read.notified() => {}
                }
            });
        }
    });
    GrpcBackend { addr, calls }
}

async fn grpc_router(table: &RouteTable, config: &RouterConfig) -> (Arc<Router>, SocketAddr) {
    let router = Arc::new(Router::new(table, config).expect("route table"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
    let addr = listener.local_addr().expect("router address");
    tokio::spawn(inferd_router::serve_grpc(
        listener,
        Arc::clone(&router),
        std::future::pending(),
    ));
    (router, addr)
}

/// The router's gRPC listener, and its HTTP one for `/metrics`.
async fn grpc_router_with_metrics(
    table: &RouteTable,
    config: &RouterConfig,
) -> (Arc<Router>, SocketAddr, SocketAddr) {
    let (router, grpc) = grpc_router(table, config).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
    let http = listener.local_addr().expect("router address");
    tokio::spawn(inferd_router::serve(
        listener,
        Arc::clone(&router),
        std::future::pending(),
    ));
    (router, grpc, http)
}

type GrpcClient = Client<HttpConnector, Full<Bytes>>;

fn grpc_client() -> GrpcClient {
    // Without it, Nagle's algorithm and delayed ACKs add 40 ms to a call.
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector)
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    data: Bytes,
    trailers: Option<HeaderMap>,
}

impl Reply {
    /// grpc-status from the trailers, or from the head of a trailers-only
    /// response.
    fn grpc_status(&self) -> Option<u32> {
        let from = |h: &HeaderMap| {
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        self.trailers
            .as_ref()
            .and_then(from)
            .or_else(|| from(&self.headers))
    }

    fn revision(&self) -> Option<&str> {
        self.headers
            .get(REVISION_HEADER)
            .and_then(|v| v.to_str().ok())
    }

    fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()?
            .get(name)
            .and_then(|v| v.to_str().ok())
    }
}

async fn call(
    client: &GrpcClient,
    router: SocketAddr,
    method: &str,
    body: Bytes,
    pin: Option<&str>,
) -> Reply {
    let mut req = Request::post(format!("http://{router}{INFERENCE}/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(pin) = pin {
        req = req.header(REVISION_HEADER, pin);
    }
    let req = req.body(Full::new(body)).expect("request");
    let response = client.request(req).await.expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    Reply {
        status,
        headers,
        data: collected.to_bytes(),
        trailers,
    }
}

#[tokio::test]
async fn the_model_name_in_the_first_message_picks_the_service() {
    let (a, b) = (grpc_backend("a").await, grpc_backend("b").await);
    let table = RouteTable::new()
        .with_service(
            "iris",
            service(vec![RevisionRoute::new("i1", 100, vec![a.replica().await])]),
        )
        .with_service(
            "wine",
            service(vec![RevisionRoute::new("w1", 100, vec![b.replica().await])]),
        );
    let (_router, addr) = grpc_router(&table, &config(31)).await;
    let client = grpc_client();

    let infer = frame(&named(1, "wine"));
    let reply = call(&client, addr, "ModelInfer", infer.clone(), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.data, frame(b"b"));
    assert_eq!(reply.grpc_status(), Some(0), "{reply:?}");
    assert_eq!(reply.trailer("x-backend"), Some("b"));
    assert_eq!(reply.revision(), Some("w1"));
    let path = format!("{INFERENCE}/ModelInfer");
    assert_eq!(b.calls(), vec![(path, infer)]);

    let ready = frame(&named(1, "iris"));
    let reply = call(&client, addr, "ModelReady", ready.clone(), None).await;
    assert_eq!(reply.data, frame(b"a"));
    assert_eq!(reply.grpc_status(), Some(0));
    assert_eq!(reply.revision(), Some("i1"));
    assert_eq!(a.calls(), vec![(format!("{INFERENCE}/ModelReady"), ready)]);

    // Repository calls name the model in field 2.
    let load = frame(&named(2, "iris"));
    let reply = call(&client, addr, "RepositoryModelLoad", load, None).await;
    assert_eq!(reply.data, frame(b"a"));
    assert_eq!(b.calls().len(), 1);
}

#[tokio::test]
async fn weights_and_pins_choose_the_grpc_revision() {
    let (a, b) = (grpc_backend("a").await, grpc_backend("b").await);
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![
            RevisionRoute::new("r1", 100, vec![a.replica().await]),
            RevisionRoute::new("r2", 0, vec![b.replica().await]),
        ])
        .with_tags(Some("r2"), Some("r1")),
    );
    let (_router, addr) = grpc_router(&table, &config(32)).await;
    let client = grpc_client();
    let infer = frame(&named(1, "iris"));
    for _ in 0..10 {
        let reply = call(&client, addr, "ModelInfer", infer.clone(), None).await;
        assert_eq!(reply.revision(), Some("r1"));
        assert_eq!(reply.data, frame(b"a"));
    }
    for pin in ["r2", "latest"] {
        let reply = call(&client, addr, "ModelInfer", infer.clone(), Some(pin)).await;
        assert_eq!(reply.revision(), Some("r2"));
        assert_eq!(reply.data, frame(b"b"));
        assert_eq!(reply.grpc_status(), Some(0));
    }
    assert_eq!((a.calls().len(), b.calls().len()), (10, 2));
}

#[tokio::test]
async fn the_router_answers_liveness_readiness_and_its_own_errors() {
    let a = grpc_backend("a").await;
    let http_only = ReplicaAddr::http_only(dead_addr().await);
    let table = RouteTable::new()
        .with_service(
            "iris",
            service(vec![RevisionRoute::new("r1", 100, vec![a.replica().await])]),
        )
        .with_service(
            "plain",
            service(vec![RevisionRoute::new("p1", 100, vec![http_only])]),
        );
    let config = RouterConfig {
        max_grpc_message_bytes: 1024,
        ..config(33)
    };
    let (router, addr) = grpc_router(&table, &config).await;
    let client = grpc_client();

    let live = call(&client, addr, "ServerLive", frame(&[]), None).await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.data, Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]));
    assert_eq!(live.grpc_status(), Some(0));
    let ready = call(&client, addr, "ServerReady", frame(&[]), None).await;
    assert_eq!(ready.data, Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]));

    let own_error = |reply: &Reply, code: u32| {
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.grpc_status(), Some(code), "{reply:?}");
        assert!(reply.headers.contains_key("grpc-message"), "{reply:?}");
        assert_eq!(
            reply
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/grpc")
        );
        assert!(reply.data.is_empty());
    };
    let unknown = call(&client, addr, "ModelInfer", frame(&named(1, "nope")), None).await;
    own_error(&unknown, 5);
    let no_grpc = call(&client, addr, "ModelInfer", frame(&named(1, "plain")), None).await;
    own_error(&no_grpc, 14);
    let pinned = call(
        &client,
        addr,
        "ModelInfer",
        frame(&named(1, "iris")),
        Some("r9"),
    )
    .await;
    own_error(&pinned, 5);
    let mut huge = vec![0, 0, 0, 8, 0];
    huge.extend_from_slice(&[0; 16]);
    let too_large = call(&client, addr, "ModelInfer", Bytes::from(huge), None).await;
    own_error(&too_large, 8);
    // 100 MB announced: RESOURCE_EXHAUSTED from the length prefix alone.
    let mut announced = vec![0];
    announced.extend_from_slice(&100_000_000u32.to_be_bytes());
    announced.extend_from_slice(&[0; 16]);
    let announced = call(&client, addr, "ModelInfer", Bytes::from(announced), None).await;
    own_error(&announced, 8);
    // A unary call is one message: more after it, past the limit, too.
    let mut trailing = frame(&named(1, "iris")).to_vec();
    trailing.extend_from_slice(&frame(&[0; 1020]));
    let trailing = call(&client, addr, "ModelInfer", Bytes::from(trailing), None).await;
    own_error(&trailing, 8);
    let truncated = call(
        &client,
        addr,
        "ModelInfer",
        Bytes::from_static(&[0, 0, 0, 0, 9, 1]),
        None,
    )
    .await;
    own_error(&truncated, 3);
    let other = {
        let req = Request::post(format!("http://{addr}/other.Service/Call"))
            .header("content-type", "application/grpc")
            .body(Full::new(frame(&[])))
            .expect("request");
        let response = client.request(req).await.expect("router answers");
        response.headers().get("grpc-status").cloned()
    };
    assert_eq!(other, Some(HeaderValue::from_static("12")));
    assert!(a.calls().is_empty());

    // Nothing routable: not ready, and calls without a model find no
    // replica.
    let cold = RouteTable::new()
        .with_service("iris", service(vec![RevisionRoute::new("r1", 100, vec![])]));
    router.replace_routes(&cold).expect("new table");
    let ready = call(&client, addr, "ServerReady", frame(&[]), None).await;
    assert_eq!(ready.data, Bytes::from_static(&[0, 0, 0, 0, 0]));
    assert_eq!(ready.grpc_status(), Some(0));
    let metadata = call(&client, addr, "ServerMetadata", frame(&[]), None).await;
    own_error(&metadata, 14);
}

#[tokio::test]
async fn calls_without_a_model_go_to_any_grpc_replica() {
    let a = grpc_backend("a").await;
    let table = RouteTable::new()
        .with_service(
            "plain",
            service(vec![RevisionRoute::new(
                "p1",
                100,
                vec![ReplicaAddr::http_only(dead_addr().await)],
            )]),
        )
        .with_service(
            "iris",
            service(vec![RevisionRoute::new("r1", 100, vec![a.replica().await])]),
        );
    let (_router, addr) = grpc_router(&table, &config(34)).await;
    let client = grpc_client();
    for method in ["ServerMetadata", "RepositoryIndex"] {
        let reply = call(&client, addr, method, frame(&[]), None).await;
        assert_eq!(reply.data, frame(b"a"), "{method}");
        assert_eq!(reply.grpc_status(), Some(0));
    }
    assert_eq!(a.calls().len(), 2);
}

#[tokio::test]
async fn a_grpc_call_is_held_until_its_revision_has_a_replica() {
    let cold = |timeout| {
        RouteTable::new().with_service(
            "iris",
            service(vec![
                RevisionRoute::new("r1", 100, vec![]).with_state(RevisionState::Activating),
            ])
            .with_timeout(timeout),
        )
    };
    let (router, addr) = grpc_router(&cold(Duration::from_secs(30)), &config(35)).await;
    let client = grpc_client();
    let infer = frame(&named(1, "iris"));
    let held = {
        let (client, infer) = (client.clone(), infer.clone());
        tokio::spawn(async move { call(&client, addr, "ModelInfer", infer, None).await })
    };
    eventually("the call held", || router.held_requests("iris") == 1).await;
    let a = grpc_backend("a").await;
    let warm = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new("r1", 100, vec![a.replica().await])]),
    );
    router.replace_routes(&warm).expect("new table");
    let reply = held.await.expect("call task");
    assert_eq!(reply.data, frame(b"a"));
    assert_eq!(reply.grpc_status(), Some(0));
    assert_eq!(
        a.calls(),
        vec![(format!("{INFERENCE}/ModelInfer"), infer.clone())]
    );

    router
        .replace_routes(&cold(Duration::from_millis(200)))
        .expect("new table");
    let reply = call(&client, addr, "ModelInfer", infer, None).await;
    assert_eq!(reply.grpc_status(), Some(4), "{reply:?}");
}

/// A framed ModelInferRequest for `iris` that carries `len` bytes of input
/// naming call `i`.
fn infer_call(i: usize, len: usize) -> Bytes {
    let mut message = named(1, "iris");
    // raw_input_contents (field 7), length-delimited.
    message.push(0x3a);
    let mut size = len;
    while size >= 0x80 {
        message.push(u8::try_from(size & 0x7f).expect("seven bits") | 0x80);
        size >>= 7;
    }
    message.push(u8::try_from(size).expect("seven bits"));
    message.extend((0..len).map(|k| u8::try_from((i * 7 + k) % 251).expect("a byte")));
    frame(&message)
}

#[tokio::test]
async fn grpc_calls_a_replica_lost_before_answering_are_retried() {
    for (lost, seed) in [(Lost::ResetStream, 36), (Lost::Close, 37)] {
        let bad = lost_backend(lost).await;
        let live = grpc_backend("live").await;
        let table = RouteTable::new().with_service(
            "iris",
            service(vec![RevisionRoute::new(
                "r1",
                100,
                vec![bad.replica().await, live.replica().await],
            )]),
        );
        let (router, addr, http) = grpc_router_with_metrics(&table, &config(seed)).await;
        let client = grpc_client();
        let path = format!("{INFERENCE}/ModelInfer");
        let mut sent = Vec::new();
        let sizes = [10, 3000, 40_000, 200_000];
        for i in 0..40 {
            let body = infer_call(i, sizes[i % sizes.len()]);
            let reply = call(&client, addr, "ModelInfer", body.clone(), None).await;
            assert_eq!(reply.grpc_status(), Some(0), "{lost:?} {i}: {reply:?}");
            assert_eq!(reply.data, frame(b"live"), "{lost:?} {i}");
            assert_eq!(reply.revision(), Some("r1"));
            sent.push((path.clone(), body));
        }
        assert_eq!(live.calls(), sent, "{lost:?}");
        let lost_calls = bad.calls();
        assert!(!lost_calls.is_empty(), "{lost:?}: no call was lost");
        for call in &lost_calls {
            assert!(sent.contains(call), "{lost:?}: a cut call was sent");
        }
        let http_client = common::client();
        assert_eq!(
            retries(&http_client, http, "r1").await,
            lost_calls.len() as f64,
            "{lost:?}"
        );

        // Concurrent calls share the connection to each replica.
        let tasks: Vec<_> = (40..56)
            .map(|i| {
                let body = infer_call(i, 30_000 + i);
                let client = client.clone();
                tokio::spawn(async move {
                    let reply = call(&client, addr, "ModelInfer", body.clone(), None).await;
                    (body, reply)
                })
            })
            .collect();
        let mut concurrent = Vec::new();
        for task in tasks {
            let (body, reply) = task.await.expect("call task");
            assert_eq!(reply.grpc_status(), Some(0), "{lost:?}: {reply:?}");
            assert_eq!(reply.data, frame(b"live"), "{lost:?}");
            concurrent.push((path.clone(), body));
        }
        let mut served = live.calls().split_off(sent.len());
        served.sort();
        concurrent.sort();
        assert_eq!(served, concurrent, "{lost:?}");
        let retried = retries(&http_client, http, "r1").await;
        let lost_now = bad.calls().len() as f64;
        match lost {
            Lost::ResetStream => assert_eq!(retried, lost_now),
            // A closed connection also fails the calls on it that the
            // replica had not read whole yet.
            Lost::Close => assert!(
                (lost_now..=lost_now + 16.0).contains(&retried),
                "{retried} retries, {lost_now} calls lost"
            ),
        }
        eventually("calls finished", || {
            router.concurrency("iris").expect("service")[0].in_flight == 0
        })
        .await;
    }
}
