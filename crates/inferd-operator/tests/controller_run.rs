//! `controller::run` wired end to end (watches, the controller's cache, the
//! autoscaler's task, the finalizer, server-side applies, the status)
//! against a stand-in API server on loopback that answers lists, keeps
//! watches open and records every write.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use inferd_api::{InferenceServiceSpec, ModelFormat, ModelSpec, PredictorSpec};
use inferd_operator::controller::{ControllerConfig, FINALIZER, run};
use inferd_operator::metrics::OperatorMetrics;
use inferd_operator::resource::InferenceServiceObject;
use inferd_operator::router::serve_operator_metrics;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const NS: &str = "e2e";

fn isvc() -> InferenceServiceObject {
    InferenceServiceObject {
        api_version: inferd_api::API_VERSION.to_owned(),
        kind: inferd_api::KIND_INFERENCE_SERVICE.to_owned(),
        metadata: ObjectMeta {
            name: Some("iris".to_owned()),
            namespace: Some(NS.to_owned()),
            uid: Some("uid-e2e".to_owned()),
            generation: Some(1),
            resource_version: Some("7".to_owned()),
            finalizers: Some(vec![FINALIZER.to_owned()]),
            ..ObjectMeta::default()
        },
        spec: InferenceServiceSpec {
            predictor: PredictorSpec::new(ModelSpec::new(ModelFormat::Onnx, "s3://models/iris/1")),
        },
        status: None,
    }
}

/// One write the operator made: method, path, body.
type Writes = Arc<Mutex<Vec<(Method, String, Value)>>>;

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn list_kind(path: &str) -> Option<(&'static str, &'static str)> {
    let kinds = [
        (
            "/inferenceservices",
            ("serving.inferd.dev/v1alpha1", "InferenceServiceList"),
        ),
        ("/deployments", ("apps/v1", "DeploymentList")),
        ("/services", ("v1", "ServiceList")),
        (
            "/horizontalpodautoscalers",
            ("autoscaling/v2", "HorizontalPodAutoscalerList"),
        ),
        (
            "/endpointslices",
            ("discovery.k8s.io/v1", "EndpointSliceList"),
        ),
    ];
    kinds
        .iter()
        .find(|(suffix, _)| path.ends_with(suffix))
        .map(|(_, k)| *k)
}

/// Lists hold the one InferenceService (and nothing else), watches stay
/// open with no event, discovery of the Prometheus Operator says 404, and
/// every write is answered with its own body and recorded.
async fn api_server() -> (SocketAddr, Writes) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let writes: Writes = Arc::default();
    let recorded = Arc::clone(&writes);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let recorded = Arc::clone(&recorded);
            let service = service_fn(move |req: Request<Incoming>| {
                let recorded = Arc::clone(&recorded);
                async move {
                    let method = req.method().clone();
                    let path = req.uri().path().to_owned();
                    let watching = req.uri().query().unwrap_or_default().contains("watch=true");
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let json = |status: StatusCode, v: Value| {
                        let mut r = Response::new(
                            Full::new(Bytes::from(v.to_string())).boxed_unsync() as Body,
                        );
                        *r.status_mut() = status;
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        r
                    };
                    let response = if method == Method::GET {
                        match (list_kind(&path), watching) {
                            (Some(_), true) => Response::new(
                                StreamBody::new(futures_util::stream::pending()).boxed_unsync(),
                            ),
                            (Some((api_version, kind)), false) => {
                                let items = if kind == "InferenceServiceList" {
                                    vec![json!(isvc())]
                                } else {
                                    Vec::new()
                                };
                                json(
                                    StatusCode::OK,
                                    json!({
                                        "apiVersion": api_version, "kind": kind,
                                        "metadata": {"resourceVersion": "10"}, "items": items,
                                    }),
                                )
                            }
                            (None, _) => json(
                                StatusCode::NOT_FOUND,
                                json!({
                                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "code": 404,
                                }),
                            ),
                        }
                    } else {
                        let value: Value = body
                            .ok()
                            .and_then(|b| serde_json::from_slice(&b).ok())
                            .unwrap_or(Value::Null);
                        recorded.lock().expect("lock").push((
                            method.clone(),
                            path.clone(),
                            value.clone(),
                        ));
                        let status = if method == Method::POST {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        };
                        // The status apply answers with the object, as the API server does.
                        if path.ends_with("/status") {
                            let mut object = json!(isvc());
                            object["status"] = value["status"].clone();
                            json(status, object)
                        } else {
                            json(status, value)
                        }
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
        }
    });
    (addr, writes)
}

/// `GET /metrics` over a plain connection: the whole reply.
async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).await.expect("read");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn the_running_controller_creates_a_services_objects_and_status() {
    let (api, writes) = api_server().await;
    let client = kube::Client::try_from(kube::Config::new(
        format!("http://{api}").parse().expect("API URL"),
    ))
    .expect("kube client");
    let metrics = Arc::new(OperatorMetrics::new());
    let config = ControllerConfig {
        namespace: Some(NS.to_owned()),
        metrics: Arc::clone(&metrics),
        ..ControllerConfig::default()
    };
    let metrics_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics_addr = metrics_listener.local_addr().expect("addr");
    let metrics_server = tokio::spawn(serve_operator_metrics(
        metrics_listener,
        metrics,
        std::future::pending(),
    ));
    let running = tokio::spawn(run(client, config, std::future::pending()));

    let wanted = [
        "/api/v1/namespaces/e2e/serviceaccounts/inferd-router",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/e2e/rolebindings/inferd-router",
        "/apis/apps/v1/namespaces/e2e/deployments/inferd-router",
        "/api/v1/namespaces/e2e/services/inferd-router",
        "/apis/apps/v1/namespaces/e2e/deployments/iris-00001",
        "/api/v1/namespaces/e2e/services/iris-00001",
        "/api/v1/namespaces/e2e/services/iris",
        "/apis/serving.inferd.dev/v1alpha1/namespaces/e2e/inferenceservices/iris/status",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let seen: Vec<(Method, String, Value)> = writes.lock().expect("lock").clone();
        let paths: Vec<&str> = seen.iter().map(|(_, p, _)| p.as_str()).collect();
        if wanted.iter().all(|w| paths.contains(w)) {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes so far: {paths:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The running operator's metrics, scraped as Prometheus would: the
    // pass that made those writes counted, and this replica leading.
    let ok_passes = |scraped: &str| {
        scraped
            .lines()
            .find_map(|l| l.strip_prefix(r#"inferd_operator_reconciles_total{result="ok"} "#))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The pass ends after its last write (the Events follow the status).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let scraped = loop {
        let scraped = scrape(metrics_addr).await;
        if ok_passes(&scraped) >= 1 {
            break scraped;
        }
        assert!(tokio::time::Instant::now() < deadline, "{scraped}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.abort();
    metrics_server.abort();
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(
        scraped.contains("application/openmetrics-text"),
        "{scraped}"
    );
    for line in [
        "inferd_operator_leader 1",
        "# TYPE inferd_operator_reconcile_duration_seconds histogram",
        "# TYPE inferd_operator_reconciles_in_flight gauge",
    ] {
        assert!(
            scraped.lines().any(|l| l == line),
            "{line} not in {scraped}"
        );
    }

    // Applies in order: the router first, then the revision, then the
    // service's own Service, then the status.
    let position = |path: &str| {
        seen.iter()
            .position(|(_, p, _)| p == path)
            .expect("written")
    };
    let order: Vec<usize> = wanted.iter().map(|w| position(w)).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    for (method, path, _) in &seen {
        assert!(
            *method == Method::PATCH || (*method == Method::POST && path.ends_with("/events")),
            "{method} {path}"
        );
    }
    let deployment = &seen[position("/apis/apps/v1/namespaces/e2e/deployments/iris-00001")].2;
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["uid"],
        "uid-e2e"
    );
    let status = &seen[position(wanted[7])].2["status"];
    assert_eq!(status["latestCreatedRevision"], "iris-00001");
    assert_eq!(status["url"], "http://iris.e2e.svc.cluster.local");
    // Events tell what the pass did.
    let reasons: Vec<&Value> = seen
        .iter()
        .filter(|(_, p, _)| p.ends_with("/events"))
        .map(|(_, _, e)| &e["reason"])
        .collect();
    assert!(reasons.contains(&&json!("RevisionCreated")), "{reasons:?}");
}
