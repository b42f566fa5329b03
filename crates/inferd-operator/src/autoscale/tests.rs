use std::time::UNIX_EPOCH;

use inferd_api::{InferenceServiceSpec, ModelFormat, ModelSpec, PredictorSpec};
use inferd_router::RevisionConcurrency;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::reconcile::{ObservedDeployment, ReconcileOptions, reconcile};

const NS: &str = "ml";
const REV: &str = "iris-00001";

/// `iris` as the operator left it once its first revision was ready.
fn serving(min_replicas: Option<u32>) -> Arc<InferenceServiceObject> {
    let mut predictor = PredictorSpec::new(ModelSpec::new(ModelFormat::Onnx, "s3://m/iris"));
    predictor.min_replicas = min_replicas;
    let mut object = InferenceServiceObject {
        api_version: inferd_api::API_VERSION.to_owned(),
        kind: inferd_api::KIND_INFERENCE_SERVICE.to_owned(),
        metadata: ObjectMeta {
            name: Some("iris".to_owned()),
            namespace: Some(NS.to_owned()),
            uid: Some("uid-1".to_owned()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: InferenceServiceSpec { predictor },
        status: None,
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let options = ReconcileOptions::default();
    let first = reconcile(&object, &[], now, &options).expect("first pass");
    object.status = Some(first.status);
    let ready = ObservedDeployment {
        name: REV.to_owned(),
        ready_replicas: 1,
        ..ObservedDeployment::default()
    };
    let second = reconcile(&object, &[ready], now, &options).expect("second pass");
    object.status = Some(second.status);
    Arc::new(object)
}

fn report(in_flight: usize, held: usize, total: u64, replicas: usize) -> NamespaceLoad {
    let mut load = NamespaceLoad::default();
    load.add(&BTreeMap::from([(
        "iris".to_owned(),
        vec![RevisionConcurrency {
            revision: REV.to_owned(),
            in_flight,
            held,
            replicas,
            requests_total: total,
        }],
    )]));
    load
}

fn loads(load: NamespaceLoad) -> BTreeMap<String, NamespaceLoad> {
    BTreeMap::from([(NS.to_owned(), load)])
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn load_scales_a_revision_up_and_idleness_to_zero() {
    let autoscaling = Autoscaling::new(AutoscalerConfig::default(), TICK);
    let services = [serving(Some(0))];
    let mut now = Duration::ZERO;
    let mut total = 0;
    let mut changes = Vec::new();
    // 300 requests in flight for 20 s: ceil(300 / 70) = 5 replicas.
    for _ in 0..10 {
        total += 500;
        changes.extend(autoscaling.tick(now, &services, &loads(report(300, 0, total, 1))));
        now += TICK;
    }
    assert_eq!(changes, [(NS.to_owned(), "iris".to_owned())]);
    assert_eq!(autoscaling.decided(NS, "iris").get(REV), Some(&5));
    // Idle: down, and to zero once the stable window and the grace period
    // have passed without a request.
    for _ in 0..60 {
        // The Deployment follows the decisions.
        let ready = autoscaling
            .decided(NS, "iris")
            .get(REV)
            .copied()
            .unwrap_or(0);
        autoscaling.tick(now, &services, &loads(report(0, 0, total, ready as usize)));
        now += TICK;
    }
    assert_eq!(autoscaling.decided(NS, "iris").get(REV), Some(&0));
    // A held request scales it from zero at the next tick.
    let changed = autoscaling.tick(now, &services, &loads(report(0, 1, total + 1, 0)));
    assert_eq!(changed, [(NS.to_owned(), "iris".to_owned())]);
    assert_eq!(autoscaling.decided(NS, "iris").get(REV), Some(&1));
}

#[test]
fn min_replicas_hold_whatever_the_load() {
    let autoscaling = Autoscaling::new(AutoscalerConfig::default(), TICK);
    let services = [serving(Some(2))];
    let mut now = Duration::ZERO;
    for _ in 0..80 {
        autoscaling.tick(now, &services, &loads(report(0, 0, 0, 2)));
        now += TICK;
    }
    assert_eq!(autoscaling.decided(NS, "iris").get(REV), Some(&2));
}

#[test]
fn no_report_keeps_the_last_decision() {
    let autoscaling = Autoscaling::new(AutoscalerConfig::default(), TICK);
    let services = [serving(Some(0))];
    autoscaling.tick(Duration::ZERO, &services, &loads(report(50, 0, 10, 1)));
    let before = autoscaling.decided(NS, "iris");
    assert_eq!(before.get(REV), Some(&1));
    // Minutes without any router answering: nothing is decided, nothing
    // is scaled away.
    let mut now = Duration::ZERO;
    for _ in 0..100 {
        now += TICK;
        assert!(
            autoscaling
                .tick(now, &services, &BTreeMap::new())
                .is_empty()
        );
    }
    assert_eq!(autoscaling.decided(NS, "iris"), before);
}

#[test]
fn starting_revisions_and_hpa_services_are_left_alone() {
    let autoscaling = Autoscaling::new(AutoscalerConfig::default(), TICK);
    let mut starting = (*serving(None)).clone();
    if let Some(status) = &mut starting.status {
        for r in &mut status.revisions {
            r.ever_ready = false;
        }
    }
    let mut hpa = (*serving(None)).clone();
    hpa.spec.predictor.autoscaler_class = Some(AutoscalerClass::Hpa);
    for object in [starting, hpa] {
        let changed = autoscaling.tick(
            Duration::ZERO,
            &[Arc::new(object)],
            &loads(report(500, 3, 1_000, 1)),
        );
        assert!(changed.is_empty());
        assert!(autoscaling.decided(NS, "iris").is_empty());
    }
}

#[test]
fn a_deleted_service_forgets_its_scalers() {
    let autoscaling = Autoscaling::new(AutoscalerConfig::default(), TICK);
    let services = [serving(Some(0))];
    autoscaling.tick(Duration::ZERO, &services, &loads(report(5, 0, 5, 1)));
    assert!(!autoscaling.decided(NS, "iris").is_empty());
    autoscaling.tick(SECOND * 2, &[], &BTreeMap::new());
    assert!(autoscaling.decided(NS, "iris").is_empty());
}

#[test]
fn several_routers_add_up() {
    let mut load = report(3, 1, 10, 2);
    load.add(&BTreeMap::from([(
        "iris".to_owned(),
        vec![RevisionConcurrency {
            revision: REV.to_owned(),
            in_flight: 4,
            held: 0,
            replicas: 3,
            requests_total: 7,
        }],
    )]));
    assert_eq!(load.routers, 2);
    let (sum, ready) = load.revisions[&("iris".to_owned(), REV.to_owned())];
    assert_eq!(
        sum,
        Load {
            in_flight: 7,
            held: 1,
            requests_total: 17
        }
    );
    assert_eq!(ready, 3);
}

fn endpoint(ip: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
    Endpoint {
        addresses: vec![ip.to_owned()],
        conditions: Some(EndpointConditions {
            ready,
            serving: ready,
            terminating,
        }),
        ..Endpoint::default()
    }
}

#[test]
fn only_ready_routers_are_scraped() {
    let slice = EndpointSlice {
        address_type: "IPv4".to_owned(),
        endpoints: vec![
            endpoint("10.0.0.1", Some(true), None),
            endpoint("10.0.0.2", Some(false), None),
            endpoint("10.0.0.3", Some(true), Some(true)),
            endpoint("10.0.0.4", None, None),
            endpoint("not-an-ip", Some(true), None),
        ],
        metadata: ObjectMeta::default(),
        ports: Some(vec![EndpointPort {
            name: Some("admin".to_owned()),
            port: Some(9091),
            ..EndpointPort::default()
        }]),
    };
    let addrs: Vec<String> = router_addresses(&[slice])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(addrs, ["10.0.0.1:9091", "10.0.0.4:9091"]);
}

#[tokio::test]
async fn routers_are_scraped_over_http_and_bad_ones_ignored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn stub(body: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }
    let good = stub(
        r#"{"services":{"iris":[{"revision":"iris-00001","in_flight":2,"held":1,"replicas":1,"requests_total":9}]}}"#,
    )
    .await;
    let garbage = stub(r#"{"services":{"iris":[{"revision":7}]}}"#).await;
    // Nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let load = scrape(&http, &[good, garbage, closed])
        .await
        .expect("one answered");
    assert_eq!(load.routers, 1);
    let (sum, ready) = load.revisions[&("iris".to_owned(), REV.to_owned())];
    assert_eq!(
        (sum.in_flight, sum.held, sum.requests_total, ready),
        (2, 1, 9, 1)
    );
    assert_eq!(scrape(&http, &[closed]).await, None);
}
