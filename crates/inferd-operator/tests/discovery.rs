//! The in-cluster router's discovery: route tables built from recorded
//! EndpointSlices and InferenceServices (`tests/fixtures/`, as the API
//! server returns them), a request through a real router to a real
//! backend found that way, and the `/stats` document the autoscaler reads.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use inferd_operator::discovery::route_table;
use inferd_operator::resource::InferenceServiceObject;
use inferd_operator::router::{RouterOptions, encode_stats, parse_stats, run_until, serve_admin};
use inferd_router::{
    REVISION_HEADER, RevisionConcurrency, RevisionRoute, RevisionState, RouteTable, Router,
    RouterConfig, ServiceRoute,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

fn fixtures(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
}

fn read<T: serde::de::DeserializeOwned>(kind: &str, name: &str) -> T {
    let path = fixtures(kind).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn slice(name: &str) -> EndpointSlice {
    read("endpointslices", name)
}

fn isvc(name: &str) -> InferenceServiceObject {
    read("inferenceservices", name)
}

/// Every recorded object of a kind.
fn all<T: serde::de::DeserializeOwned>(kind: &str) -> Vec<T> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures(kind))
        .expect("fixture folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    names.sort();
    names.iter().map(|n| read(kind, n)).collect()
}

/// The table of every recorded service of `models` over every recorded slice.
fn models_table() -> RouteTable {
    let services: Vec<InferenceServiceObject> = all::<InferenceServiceObject>("inferenceservices")
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some("models"))
        .collect();
    route_table(&services, &all::<EndpointSlice>("endpointslices"))
}

/// `HTTP` or `HTTP|GRPC` per replica, in the table's order.
fn replicas(revision: &RevisionRoute) -> Vec<String> {
    revision
        .replicas
        .iter()
        .map(|r| match r.grpc {
            Some(grpc) => format!("{}|{grpc}", r.http),
            None => r.http.to_string(),
        })
        .collect()
}

fn service<'a>(table: &'a RouteTable, name: &str) -> &'a ServiceRoute {
    table
        .services
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not routed"))
}

fn only_revision<'a>(table: &'a RouteTable, name: &str) -> &'a RevisionRoute {
    let route = service(table, name);
    assert_eq!(route.revisions.len(), 1, "{name}: {route:?}");
    &route.revisions[0]
}

#[test]
fn every_fixture_reads_as_the_api_server_sends_it() {
    let slices = all::<EndpointSlice>("endpointslices");
    assert_eq!(slices.len(), 12);
    for s in &slices {
        let labels = s.metadata.labels.as_ref().expect("labels");
        assert!(labels.contains_key("kubernetes.io/service-name"));
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert!(s.metadata.generate_name.is_some());
    }
    assert_eq!(all::<InferenceServiceObject>("inferenceservices").len(), 10);
}

#[test]
fn one_revision_with_two_pods() {
    let table = models_table();
    let iris = service(&table, "iris");
    assert_eq!(iris.timeout, Duration::from_secs(30));
    assert_eq!(iris.latest.as_deref(), Some("iris-00001"));
    assert_eq!(iris.prev, None);
    let r = only_revision(&table, "iris");
    assert_eq!(r.name, "iris-00001");
    assert_eq!(r.percent, 100);
    assert_eq!(r.state, RevisionState::Serving);
    assert_eq!(r.container_concurrency, 4);
    // The slice of the same Service name in `staging` (10.250.0.9) is not iris's.
    assert_eq!(
        replicas(r),
        [
            "10.244.1.5:8080|10.244.1.5:8081",
            "10.244.2.7:8080|10.244.2.7:8081"
        ]
    );
}

#[test]
fn a_canary_splits_80_20_with_tags_and_skips_pods_not_ready_or_terminating() {
    let table = models_table();
    let sentiment = service(&table, "sentiment");
    assert_eq!(sentiment.latest.as_deref(), Some("sentiment-00002"));
    assert_eq!(sentiment.prev.as_deref(), Some("sentiment-00001"));
    // No timeoutSeconds: the API's default.
    assert_eq!(sentiment.timeout, Duration::from_secs(300));
    let shares: Vec<(&str, u32, &RevisionState, u32)> = sentiment
        .revisions
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.percent,
                &r.state,
                r.container_concurrency,
            )
        })
        .collect();
    assert_eq!(
        shares,
        [
            ("sentiment-00001", 80, &RevisionState::Serving, 0),
            ("sentiment-00002", 20, &RevisionState::Serving, 2),
        ]
    );
    assert_eq!(
        replicas(&sentiment.revisions[0]),
        [
            "10.244.1.21:8080|10.244.1.21:8081",
            "10.244.3.4:8080|10.244.3.4:8081"
        ]
    );
    // 10.244.1.31 is terminating and 10.244.3.32 not ready.
    assert_eq!(
        replicas(&sentiment.revisions[1]),
        ["10.244.2.30:8080|10.244.2.30:8081"]
    );
}

#[test]
fn slices_of_one_service_merge_and_an_address_counts_once() {
    let table = models_table();
    let r = only_revision(&table, "fraud");
    assert_eq!(r.state, RevisionState::Serving);
    // 10.244.2.41 is in both slices; 10.244.3.42 has no `ready` (ready).
    assert_eq!(
        replicas(r),
        [
            "10.244.1.40:8080|10.244.1.40:8081",
            "10.244.2.41:8080|10.244.2.41:8081",
            "10.244.3.42:8080|10.244.3.42:8081"
        ]
    );
}

#[test]
fn ipv6_slices_are_read_and_fqdn_slices_skipped() {
    let table = models_table();
    let r = only_revision(&table, "dual");
    assert_eq!(
        replicas(r),
        [
            "[fd00:10:244:1::5]:8080|[fd00:10:244:1::5]:8081",
            "[fd00:10:244:2::9]:8080|[fd00:10:244:2::9]:8081"
        ]
    );
}

#[test]
fn a_slice_without_the_http_port_adds_nothing() {
    let table = models_table();
    let r = only_revision(&table, "nohttp");
    assert!(r.replicas.is_empty());
    assert_eq!(r.state, RevisionState::Activating);
}

#[test]
fn a_revision_at_zero_endpoints_is_activating() {
    let table = models_table();
    let r = only_revision(&table, "scaled");
    assert_eq!(r.percent, 100);
    assert!(r.replicas.is_empty());
    assert_eq!(r.state, RevisionState::Activating);
    // With no slice at all, the same.
    let alone = route_table(&[isvc("scaled")], &Vec::<EndpointSlice>::new());
    assert_eq!(
        only_revision(&alone, "scaled").state,
        RevisionState::Activating
    );
}

#[test]
fn a_service_without_status_is_not_routed() {
    let table = models_table();
    assert!(!table.services.contains_key("pending"));
    let mut no_traffic = isvc("iris");
    if let Some(status) = no_traffic.status.as_mut() {
        status.traffic.clear();
    }
    let table = route_table(&[no_traffic], &[slice("iris-00001-7xk2p")]);
    assert!(table.services.is_empty());
}

#[test]
fn a_newest_revision_that_failed_to_load_is_unavailable_with_the_reason() {
    let table = models_table();
    let r = only_revision(&table, "broken");
    match &r.state {
        RevisionState::Unavailable(reason) => {
            assert!(reason.contains("ProgressDeadlineExceeded"), "{reason}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[test]
fn slices_of_another_namespace_are_ignored() {
    // Only the `staging` slice of a Service named iris-00001.
    let table = route_table(&[isvc("iris")], &[slice("iris-00001-q8w4z")]);
    let r = only_revision(&table, "iris");
    assert!(r.replicas.is_empty(), "{:?}", r.replicas);
    assert_eq!(r.state, RevisionState::Activating);
    // An InferenceService of `staging` gets it.
    let mut staging = isvc("iris");
    staging.metadata.namespace = Some("staging".to_owned());
    let table = route_table(
        &[staging],
        &[slice("iris-00001-q8w4z"), slice("iris-00001-7xk2p")],
    );
    assert_eq!(
        replicas(only_revision(&table, "iris")),
        ["10.250.0.9:8080|10.250.0.9:8081"]
    );
}

#[test]
fn odd_values_are_skipped_without_panicking() {
    let table = models_table();
    // "not-an-ip" is skipped; the grpc port 70000 is out of range.
    assert_eq!(replicas(only_revision(&table, "odd")), ["10.244.2.60:8080"]);

    let edit = |f: &dyn Fn(&mut serde_json::Value)| -> EndpointSlice {
        let mut v = serde_json::to_value(slice("iris-00001-7xk2p")).expect("json");
        f(&mut v);
        serde_json::from_value(v).expect("slice")
    };
    let routed = |s: EndpointSlice| -> Vec<String> {
        let table = route_table(&[isvc("iris")], &[s]);
        replicas(only_revision(&table, "iris"))
    };
    // Terminating with no `ready` condition: out.
    let s = edit(&|v| {
        v["endpoints"][0]["conditions"] = serde_json::json!({ "terminating": true });
    });
    assert_eq!(routed(s), ["10.244.2.7:8080|10.244.2.7:8081"]);
    // The http port out of range, zero, negative or absent: nothing.
    for port in [
        serde_json::json!(65536),
        serde_json::json!(0),
        serde_json::json!(-8080),
        serde_json::Value::Null,
    ] {
        let s = edit(&|v| v["ports"][0]["port"] = port.clone());
        assert!(routed(s).is_empty(), "port {port}");
    }
    // No ports at all, an unknown address type, an IPv6 address in an IPv4
    // slice, an endpoint without addresses.
    assert!(routed(edit(&|v| v["ports"] = serde_json::Value::Null)).is_empty());
    assert!(routed(edit(&|v| v["addressType"] = "IPv5".into())).is_empty());
    let s = edit(&|v| {
        v["endpoints"][0]["addresses"] = serde_json::json!(["fd00::1"]);
        v["endpoints"][1]["addresses"] = serde_json::json!([]);
    });
    assert!(routed(s).is_empty());
    // Several addresses of one pod are one replica (the first usable one).
    let s = edit(&|v| {
        v["endpoints"][0]["addresses"] = serde_json::json!(["bogus", "10.244.1.5", "10.244.1.6"]);
    });
    assert_eq!(
        routed(s),
        [
            "10.244.1.5:8080|10.244.1.5:8081",
            "10.244.2.7:8080|10.244.2.7:8081"
        ]
    );
    // A slice without its Service label, or without labels.
    let s = edit(&|v| v["metadata"]["labels"] = serde_json::Value::Null);
    assert!(routed(s).is_empty());

    // Odd statuses: a repeated target, a tag on a target without a name.
    let mut odd_status = isvc("iris");
    let status = odd_status.status.as_mut().expect("status");
    let first = status.traffic[0].clone();
    let mut nameless_target = first.clone();
    nameless_target.revision_name = String::new();
    nameless_target.percent = 0;
    nameless_target.latest_revision = false;
    nameless_target.tag = Some("prev".to_owned());
    status.traffic = vec![first.clone(), first, nameless_target];
    let table = route_table(&[odd_status], &[slice("iris-00001-7xk2p")]);
    let iris = service(&table, "iris");
    assert_eq!(iris.revisions.len(), 1);
    assert_eq!(iris.latest.as_deref(), Some("iris-00001"));
    assert_eq!(iris.prev, None);
    Router::new(&table, &RouterConfig::default()).expect("accepted");
    let mut nameless = isvc("iris");
    nameless.metadata.name = None;
    assert!(
        route_table(&[nameless], &[slice("iris-00001-7xk2p")])
            .services
            .is_empty()
    );
}

#[test]
fn the_router_accepts_the_table() {
    let table = models_table();
    let names: Vec<&str> = table.services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "broken",
            "dual",
            "fraud",
            "iris",
            "nohttp",
            "odd",
            "scaled",
            "sentiment"
        ]
    );
    let router = Router::new(&RouteTable::new(), &RouterConfig::default()).expect("router");
    router.replace_routes(&table).expect("table accepted");
    let all = router.concurrency_all();
    assert_eq!(all["iris"][0].replicas, 2);
    assert_eq!(all["fraud"][0].replicas, 3);
    assert_eq!(all["scaled"][0].replicas, 0);
}

/// A model server stand-in on loopback: answers `POST
/// /v2/models/echo/infer` with a fixed body, anything else 404.
async fn stub() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
    let addr = listener.local_addr().expect("stub address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = service_fn(|req: Request<Incoming>| async move {
                let found = req.uri().path() == "/v2/models/echo/infer";
                let _ = req.into_body().collect().await;
                let response = if found {
                    Response::new(Full::new(Bytes::from_static(STUB_ANSWER.as_bytes())))
                } else {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                };
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
        }
    });
    addr
}

const STUB_ANSWER: &str =
    r#"{"model_name":"echo","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[0.5]}]}"#;

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().expect("uri");
    let response = client.get(uri).await.expect("admin answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}

#[tokio::test]
async fn a_request_reaches_a_replica_found_through_its_endpoint_slice() {
    let backend = stub().await;
    let mut echo_slice = serde_json::to_value(slice("echo-00001-l0c4l")).expect("json");
    echo_slice["ports"][0]["port"] = backend.port().into();
    let echo_slice: EndpointSlice = serde_json::from_value(echo_slice).expect("slice");
    let table = route_table(&[isvc("echo")], &[echo_slice]);
    assert_eq!(
        replicas(only_revision(&table, "echo")),
        [format!("127.0.0.1:{}", backend.port())]
    );
    assert_eq!(service(&table, "echo").timeout, Duration::from_secs(10));

    let router = Arc::new(Router::new(&table, &RouterConfig::default()).expect("router"));
    let (stop, stopped) = watch::channel(false);
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let user = TcpListener::bind("127.0.0.1:0").await.expect("bind router");
    let user_addr = user.local_addr().expect("router address");
    let serving = tokio::spawn(inferd_router::serve(
        user,
        Arc::clone(&router),
        until_stopped(),
    ));
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin_addr = admin.local_addr().expect("admin address");
    let synced = Arc::new(AtomicBool::new(true));
    let admin_serving = tokio::spawn(serve_admin(
        admin,
        Arc::clone(&router),
        synced,
        until_stopped(),
    ));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(format!("http://{user_addr}/v2/models/echo/infer"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1.0]}]}"#,
        )))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("in time")
        .expect("router answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[REVISION_HEADER], "echo-00001");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body, STUB_ANSWER.as_bytes());

    let (status, body) = get(admin_addr, "/stats").await;
    assert_eq!(status, StatusCode::OK);
    let document: serde_json::Value = serde_json::from_slice(&body).expect("stats JSON");
    assert_eq!(
        document,
        serde_json::json!({"services": {"echo": [{
            "revision": "echo-00001", "in_flight": 0, "held": 0, "replicas": 1, "requests_total": 1
        }]}})
    );
    let stats = parse_stats(&body).expect("parses");
    assert_eq!(stats["echo"][0].requests_total, 1);

    let (status, body) = get(admin_addr, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, body) = get(admin_addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    assert!(
        text.contains(
            r#"inferd_router_requests_total{service="echo",revision="echo-00001",code="200"} 1"#
        ),
        "{text}"
    );

    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), async {
        serving.await.expect("router task");
        admin_serving.await.expect("admin task");
    })
    .await
    .expect("both listeners stop");
}

/// A stand-in for the API server: answers the router's LIST of
/// InferenceServices (`services`) and EndpointSlices (none) in `e2e`, and
/// keeps their WATCH requests open; EndpointSlice watch events are what the
/// test sends on the channel it gets back.
async fn api_server(
    services: Vec<InferenceServiceObject>,
) -> (SocketAddr, mpsc::UnboundedSender<serde_json::Value>) {
    type Body = UnsyncBoxBody<Bytes, Infallible>;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind API");
    let addr = listener.local_addr().expect("API address");
    let (events, received) = mpsc::unbounded_channel::<serde_json::Value>();
    let received = Arc::new(Mutex::new(Some(received)));
    let services = Arc::new(services);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (received, services) = (Arc::clone(&received), Arc::clone(&services));
            let service = service_fn(move |req: Request<Incoming>| {
                let (received, services) = (Arc::clone(&received), Arc::clone(&services));
                async move {
                    let path = req.uri().path().to_owned();
                    let watching = req.uri().query().unwrap_or_default().contains("watch=true");
                    let slices = path == "/apis/discovery.k8s.io/v1/namespaces/e2e/endpointslices";
                    let isvcs = path
                        == "/apis/serving.inferd.dev/v1alpha1/namespaces/e2e/inferenceservices";
                    let json = |v: serde_json::Value| -> Body {
                        Full::new(Bytes::from(v.to_string())).boxed_unsync()
                    };
                    let body: Body = match (isvcs, slices, watching) {
                        (true, _, false) => json(serde_json::json!({
                            "apiVersion": "serving.inferd.dev/v1alpha1",
                            "kind": "InferenceServiceList",
                            "metadata": {"resourceVersion": "100"},
                            "items": *services,
                        })),
                        (_, true, false) => json(serde_json::json!({
                            "apiVersion": "discovery.k8s.io/v1",
                            "kind": "EndpointSliceList",
                            "metadata": {"resourceVersion": "100"},
                            "items": [],
                        })),
                        (_, true, true) => {
                            let taken = received.lock().expect("lock").take();
                            match taken {
                                Some(rx) => {
                                    let lines =
                                        futures_util::stream::unfold(rx, |mut rx| async move {
                                            let event: serde_json::Value = rx.recv().await?;
                                            let line = Bytes::from(format!("{event}\n"));
                                            Some((Ok::<_, Infallible>(Frame::data(line)), rx))
                                        });
                                    StreamBody::new(lines).boxed_unsync()
                                }
                                None => {
                                    StreamBody::new(futures_util::stream::pending()).boxed_unsync()
                                }
                            }
                        }
                        (true, _, true) => {
                            StreamBody::new(futures_util::stream::pending()).boxed_unsync()
                        }
                        _ => {
                            let mut r = Response::new(json(serde_json::json!({
                                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404,
                            })));
                            *r.status_mut() = StatusCode::NOT_FOUND;
                            return Ok::<_, Infallible>(r);
                        }
                    };
                    let mut response = Response::new(body);
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok(response)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
        }
    });
    (addr, events)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `/stats` until `done` holds for the echo service's revision.
async fn wait_for_stats(
    admin: SocketAddr,
    what: &str,
    done: impl Fn(&RevisionConcurrency) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(admin, "/stats").await;
        if status == StatusCode::OK
            && let Ok(stats) = parse_stats(&body)
            && stats.get("echo").and_then(|r| r.first()).is_some_and(&done)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_router_follows_its_watches_and_holds_requests_until_an_endpoint_appears() {
    let backend = stub().await;
    let (api, slice_events) = api_server(vec![isvc("echo")]).await;
    let client = kube::Client::try_from(kube::Config::new(
        format!("http://{api}").parse().expect("API URL"),
    ))
    .expect("kube client");
    let (http_port, admin_port) = (free_port(), free_port());
    let options = RouterOptions {
        host: "127.0.0.1".parse().expect("host"),
        http_port,
        grpc_port: free_port(),
        admin_port,
        coalesce: Duration::from_millis(10),
        drain_timeout: Duration::from_secs(5),
        ..RouterOptions::new("e2e")
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(run_until(client, options, async {
        let _ = stopped.await;
    }));
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();

    // Ready once both lists are in: the revision is known, with no replica.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = Client::builder(TokioExecutor::new())
            .build_http::<Empty<Bytes>>()
            .get(format!("http://{admin}/healthz").parse().expect("uri"))
            .await;
        if answer.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_stats(admin, "echo known", |r| {
        r.revision == "echo-00001" && r.replicas == 0
    })
    .await;

    // A request now is held: the revision is activating.
    let request = tokio::spawn(async move {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::post(format!("http://127.0.0.1:{http_port}/v2/models/echo/infer"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let response = client.request(request).await.expect("router answers");
        let revision = response.headers()[REVISION_HEADER].clone();
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, revision, body)
    });
    wait_for_stats(admin, "request held", |r| r.held == 1).await;

    // The pod turns ready: its EndpointSlice arrives through the watch.
    let mut echo_slice = serde_json::to_value(slice("echo-00001-l0c4l")).expect("json");
    echo_slice["ports"][0]["port"] = backend.port().into();
    echo_slice["metadata"]["resourceVersion"] = "101".into();
    slice_events
        .send(serde_json::json!({ "type": "ADDED", "object": echo_slice }))
        .expect("watch open");
    let (status, revision, body) = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the held request finishes")
        .expect("request task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revision, "echo-00001");
    assert_eq!(body, STUB_ANSWER.as_bytes());
    wait_for_stats(admin, "served", |r| {
        r.replicas == 1 && r.held == 0 && r.requests_total == 1
    })
    .await;

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops on shutdown")
        .expect("router task")
        .expect("router ran");
}

#[tokio::test]
async fn healthz_is_503_until_the_first_sync() {
    let router =
        Arc::new(Router::new(&RouteTable::new(), &RouterConfig::default()).expect("router"));
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let addr = admin.local_addr().expect("admin address");
    let synced = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(serve_admin(
        admin,
        router,
        Arc::clone(&synced),
        std::future::pending(),
    ));
    assert_eq!(
        get(addr, "/healthz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    synced.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get(addr, "/healthz").await.0, StatusCode::OK);
    let (status, body) = get(addr, "/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], br#"{"services":{}}"#);
    assert_eq!(get(addr, "/other").await.0, StatusCode::NOT_FOUND);
    task.abort();
}

#[test]
fn stats_round_trip() {
    let stats = BTreeMap::from([(
        "iris".to_owned(),
        vec![
            RevisionConcurrency {
                revision: "iris-00001".to_owned(),
                in_flight: 3,
                held: 0,
                replicas: 2,
                requests_total: 1_000_000_000_000,
            },
            RevisionConcurrency {
                revision: "iris-00002".to_owned(),
                in_flight: 0,
                held: 7,
                replicas: 0,
                requests_total: 7,
            },
        ],
    )]);
    let text = encode_stats(&stats);
    assert_eq!(
        text,
        r#"{"services":{"iris":[{"revision":"iris-00001","in_flight":3,"held":0,"replicas":2,"requests_total":1000000000000},{"revision":"iris-00002","in_flight":0,"held":7,"replicas":0,"requests_total":7}]}}"#
    );
    assert_eq!(parse_stats(text.as_bytes()).expect("parses"), stats);
    // Fields a newer router adds are ignored.
    let newer = br#"{"services":{"a":[{"revision":"a-00001","in_flight":1,"held":2,"replicas":3,"requests_total":4,"rps":9.5}]},"version":"2"}"#;
    let parsed = parse_stats(newer).expect("parses");
    assert_eq!(parsed["a"][0].held, 2);
}

#[test]
fn bad_stats_are_refused_with_the_path_of_the_bad_value() {
    let cases: [(&[u8], &str, &str); 12] = [
        (b"", ".", "EOF"),
        (b"{\"services\":", "services", "EOF"),
        (b"\"stats\"", ".", "invalid type: string"),
        (b"[1,2]", "[0]", "invalid type: integer `1`, expected a map"),
        (b"{}", ".", "missing field `services`"),
        (b"{\"services\":[]}", "services", "invalid type: sequence"),
        (
            br#"{"services":{"a":[{"revision":"a-1","in_flight":"3","held":0,"replicas":1,"requests_total":1}]}}"#,
            "services.a[0].in_flight",
            "invalid type: string",
        ),
        (
            br#"{"services":{"a":[{"revision":"a-1","in_flight":0,"held":-1,"replicas":1,"requests_total":1}]}}"#,
            "services.a[0].held",
            "invalid value: integer `-1`",
        ),
        (
            br#"{"services":{"a":[{"revision":"a-1","in_flight":0,"held":0,"replicas":1.5,"requests_total":1}]}}"#,
            "services.a[0].replicas",
            "invalid type: floating point",
        ),
        (
            br#"{"services":{"a":[{"revision":"a-1","in_flight":0,"held":0,"replicas":1}]}}"#,
            "services.a[0]",
            "missing field `requests_total`",
        ),
        (
            br#"{"services":{"a":[{"revision":"a-1","in_flight":0,"held":0,"replicas":1,"requests_total":1},{"revision":"a-1","in_flight":0,"held":0,"replicas":1,"requests_total":1}]}}"#,
            "services.a[1].revision",
            "appears twice",
        ),
        (br#"{"services":{}} trailing"#, ".", "trailing characters"),
    ];
    for (body, path, message) in cases {
        let e = parse_stats(body).expect_err(&String::from_utf8_lossy(body));
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(message), "{e}");
        assert!(e.to_string().starts_with("router stats: "), "{e}");
    }
    let empty = br#"{"services":{"a":[{"revision":"","in_flight":0,"held":0,"replicas":1,"requests_total":1}]}}"#;
    let e = parse_stats(empty).expect_err("empty name");
    assert_eq!(e.path, "services.a[0].revision");
}
