//! Holding requests while a revision activates from zero or its replicas
//! are at their concurrency limit, and the counts the autoscaler reads.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    INFER, backend, client, config, eventually, get, router, router_with, send, send_body, service,
};
use hyper::StatusCode;
use inferd_router::{RevisionRoute, RevisionState, RouteTable, Router, RouterConfig};
use tokio::sync::watch;

fn concurrency(router: &Router, revision: &str) -> inferd_router::RevisionConcurrency {
    router
        .concurrency("iris")
        .expect("service")
        .into_iter()
        .find(|c| c.revision == revision)
        .expect("revision")
}

type Calls = Arc<Mutex<Vec<(String, String)>>>;

fn record_activations(router: &Router) -> Calls {
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    router.set_activation_hook(Arc::new(move |service: &str, revision: &str| {
        seen.lock()
            .expect("activation calls")
            .push((service.to_owned(), revision.to_owned()));
    }));
    calls
}

fn activations(calls: &Calls) -> Vec<(String, String)> {
    calls.lock().expect("activation calls").clone()
}

fn named(service: &str, revision: &str) -> (String, String) {
    (service.to_owned(), revision.to_owned())
}

fn activating(name: &str, percent: u32) -> RevisionRoute {
    RevisionRoute::new(name, percent, vec![]).with_state(RevisionState::Activating)
}

#[tokio::test]
async fn held_requests_are_served_once_a_replica_arrives() {
    let cold = RouteTable::new().with_service("iris", service(vec![activating("r1", 100)]));
    let (router, addr) = router(&cold, 11).await;
    let calls = record_activations(&router);
    let client = client();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { send(&client, addr, INFER, None).await })
        })
        .collect();
    eventually("two requests held", || concurrency(&router, "r1").held == 2).await;
    // One call when requests start waiting, not one per request.
    assert_eq!(activations(&calls), vec![named("iris", "r1")]);
    let seen = concurrency(&router, "r1");
    assert_eq!(
        (seen.in_flight, seen.replicas, seen.requests_total),
        (0, 0, 2)
    );
    assert_eq!(router.held_requests("iris"), 2);

    let b = backend("b", None).await;
    let warm = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new("r1", 100, vec![b.replica()])]),
    );
    router.replace_routes(&warm).expect("new table");
    for task in tasks {
        let answer = task.await.expect("request task");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.revision.as_deref(), Some("r1"));
        assert_eq!(answer.body, "b:payload");
    }
    assert_eq!(b.hits(), 2);
    let seen = concurrency(&router, "r1");
    assert_eq!((seen.held, seen.requests_total), (0, 2));
    assert_eq!(router.held_requests("iris"), 0);
    assert_eq!(activations(&calls).len(), 1);
}

#[tokio::test]
async fn a_pinned_request_waits_for_an_activating_revision() {
    let a = backend("a", None).await;
    let table = |second: RevisionRoute| {
        RouteTable::new().with_service(
            "iris",
            service(vec![
                RevisionRoute::new("r1", 100, vec![a.replica()]),
                second,
            ]),
        )
    };
    let (router, addr) = router(&table(activating("r2", 0)), 12).await;
    let calls = record_activations(&router);
    let client = client();
    // Unpinned requests go to the serving revision meanwhile.
    assert_eq!(send(&client, addr, INFER, None).await.body, "a:payload");
    let pinned = {
        let client = client.clone();
        tokio::spawn(async move { send(&client, addr, INFER, Some("r2")).await })
    };
    eventually("the pinned request held", || {
        concurrency(&router, "r2").held == 1
    })
    .await;
    assert_eq!(activations(&calls), vec![named("iris", "r2")]);
    let b = backend("b", None).await;
    router
        .replace_routes(&table(RevisionRoute::new("r2", 0, vec![b.replica()])))
        .expect("new table");
    let answer = pinned.await.expect("request task");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.revision.as_deref(), Some("r2"));
    assert_eq!(answer.body, "b:payload");
}

#[tokio::test]
async fn a_held_request_times_out_with_504() {
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![activating("r1", 100)]).with_timeout(Duration::from_millis(300)),
    );
    let (router, addr) = router(&table, 13).await;
    let client = client();
    let started = Instant::now();
    let answer = send(&client, addr, INFER, None).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(answer.revision.as_deref(), Some("r1"));
    assert!(answer.error().contains("within 300 ms"), "{}", answer.body);
    assert_eq!(concurrency(&router, "r1").held, 0);
    let metrics = get(&client, addr, "/metrics").await.body;
    assert!(
        metrics.contains(r#"inferd_router_rejected_total{service="iris",reason="hold_timeout"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_full_hold_queue_answers_429_with_retry_after() {
    let config = RouterConfig {
        max_held_requests: 2,
        ..config(14)
    };
    let cold = RouteTable::new().with_service("iris", service(vec![activating("r1", 100)]));
    let (router, addr) = router_with(&cold, &config).await;
    let client = client();
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { send(&client, addr, INFER, None).await })
        })
        .collect();
    eventually("two requests held", || router.held_requests("iris") == 2).await;
    let refused = send(&client, addr, INFER, None).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    assert!(
        refused.error().contains("2 requests already wait"),
        "{}",
        refused.body
    );
    assert_eq!(router.held_requests("iris"), 2);

    let b = backend("b", None).await;
    let warm = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new("r1", 100, vec![b.replica()])]),
    );
    router.replace_routes(&warm).expect("new table");
    for task in tasks {
        assert_eq!(task.await.expect("request task").status, StatusCode::OK);
    }
    let metrics = get(&client, addr, "/metrics").await.body;
    assert!(
        metrics
            .contains(r#"inferd_router_rejected_total{service="iris",reason="held_queue_full"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_revision_at_its_concurrency_with_a_full_hold_queue_answers_429() {
    // One replica slot, taken; room to hold two requests and 10 body bytes.
    let (gate, gated) = watch::channel(false);
    let b = backend("b", Some(gated)).await;
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![
            RevisionRoute::new("r1", 100, vec![b.replica()]).with_container_concurrency(1),
        ]),
    );
    let config = RouterConfig {
        max_held_requests: 2,
        max_held_body_bytes: 10,
        ..config(15)
    };
    let (router, addr) = router_with(&table, &config).await;
    let client = client();
    let spawn = |body: &'static [u8]| {
        let client = client.clone();
        tokio::spawn(async move { send_body(&client, addr, INFER, Bytes::from_static(body)).await })
    };
    let first = spawn(b"payload");
    eventually("one request on the replica", || {
        concurrency(&router, "r1").in_flight == 1
    })
    .await;
    let held = spawn(b"payload");
    eventually("one request held", || router.held_requests("iris") == 1).await;
    // 7 + 7 held body bytes would pass 10.
    let refused = send_body(&client, addr, INFER, Bytes::from_static(b"payload")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    assert!(
        refused.error().contains("would pass 10 bytes"),
        "{}",
        refused.body
    );
    // An empty body fits the bytes, and takes the last place.
    let empty = spawn(b"");
    eventually("two requests held", || router.held_requests("iris") == 2).await;
    let refused = send_body(&client, addr, INFER, Bytes::new()).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    assert!(
        refused.error().contains("2 requests already wait"),
        "{}",
        refused.body
    );
    // The refusals did not count as load.
    assert_eq!(
        (
            concurrency(&router, "r1").in_flight,
            router.held_requests("iris")
        ),
        (1, 2)
    );

    gate.send_replace(true);
    for task in [first, held, empty] {
        assert_eq!(task.await.expect("request task").status, StatusCode::OK);
    }
    assert_eq!(b.hits(), 3);
    let metrics = get(&client, addr, "/metrics").await.body;
    assert!(
        metrics
            .contains(r#"inferd_router_rejected_total{service="iris",reason="held_queue_full"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unavailable_revision_answers_503_with_its_reason() {
    let a = backend("a", None).await;
    let reason = "model failed to load: iris.onnx is not an ONNX file";
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![
            RevisionRoute::new("r1", 100, vec![a.replica()])
                .with_state(RevisionState::Unavailable(reason.to_owned())),
        ]),
    );
    let (_router, addr) = router(&table, 15).await;
    let client = client();
    for pin in [None, Some("r1")] {
        let started = Instant::now();
        let answer = send(&client, addr, INFER, pin).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "pin {pin:?}"
        );
        assert!(answer.error().contains(reason), "{}", answer.body);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(a.hits(), 0);
    let metrics = get(&client, addr, "/metrics").await.body;
    assert!(
        metrics.contains(r#"inferd_router_rejected_total{service="iris",reason="unavailable"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn container_concurrency_one_serializes_requests() {
    let (open, gate) = watch::channel(false);
    let b = backend("b", Some(gate)).await;
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![
            RevisionRoute::new("r1", 100, vec![b.replica()]).with_container_concurrency(1),
        ]),
    );
    let (router, addr) = router(&table, 16).await;
    let client = client();
    let spawn = |client: common::HttpClient| {
        tokio::spawn(async move { send(&client, addr, INFER, None).await })
    };
    let first = spawn(client.clone());
    eventually("the first request reached the backend", || b.hits() == 1).await;
    let second = spawn(client.clone());
    eventually("the second request held", || {
        concurrency(&router, "r1").held == 1
    })
    .await;
    let seen = concurrency(&router, "r1");
    assert_eq!((seen.in_flight, seen.held), (1, 1));
    assert_eq!(b.hits(), 1);
    open.send(true).expect("open the gate");
    for task in [first, second] {
        assert_eq!(task.await.expect("request task").status, StatusCode::OK);
    }
    // And a burst, with the gate open.
    let burst: Vec<_> = (0..16).map(|_| spawn(client.clone())).collect();
    for task in burst {
        assert_eq!(task.await.expect("request task").status, StatusCode::OK);
    }
    assert_eq!(b.hits(), 18);
    assert_eq!(
        b.max_concurrent.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    eventually("nothing in flight", || {
        concurrency(&router, "r1").in_flight == 0
    })
    .await;
}

#[tokio::test]
async fn counts_survive_route_replacement() {
    let (open, gate) = watch::channel(false);
    let slow = backend("slow", Some(gate)).await;
    let fast = backend("fast", None).await;
    let only_r1 = |replica| {
        RouteTable::new().with_service(
            "iris",
            service(vec![RevisionRoute::new("r1", 100, vec![replica])]),
        )
    };
    let (router, addr) = router(&only_r1(fast.replica()), 17).await;
    let client = client();
    for _ in 0..3 {
        assert_eq!(send(&client, addr, INFER, None).await.body, "fast:payload");
    }
    assert_eq!(concurrency(&router, "r1").requests_total, 3);

    // A new replica set keeps the totals.
    router
        .replace_routes(&only_r1(slow.replica()))
        .expect("new table");
    assert_eq!(concurrency(&router, "r1").requests_total, 3);
    let stuck = {
        let client = client.clone();
        tokio::spawn(async move { send(&client, addr, INFER, None).await })
    };
    eventually("a request in flight on r1", || {
        router.revision_in_flight("iris", "r1") == 1
    })
    .await;

    // A table without r1: its request is still counted.
    let only_r2 = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new("r2", 100, vec![fast.replica()])]),
    );
    router.replace_routes(&only_r2).expect("new table");
    let revisions: Vec<String> = router
        .concurrency("iris")
        .expect("service")
        .into_iter()
        .map(|c| c.revision)
        .collect();
    assert_eq!(revisions, vec!["r2"]);
    assert_eq!(router.revision_in_flight("iris", "r1"), 1);
    assert_eq!(router.revision_in_flight("iris", "r2"), 0);
    assert_eq!(router.revision_in_flight("iris", "never"), 0);
    let answer = send(&client, addr, INFER, None).await;
    assert_eq!(answer.revision.as_deref(), Some("r2"));

    open.send(true).expect("open the gate");
    let answer = stuck.await.expect("request task");
    assert_eq!(answer.revision.as_deref(), Some("r1"));
    assert_eq!(answer.body, "slow:payload");
    eventually("r1 drained", || {
        router.revision_in_flight("iris", "r1") == 0
    })
    .await;

    // Back in a table, r1 has kept its total.
    let both = RouteTable::new().with_service(
        "iris",
        service(vec![
            RevisionRoute::new("r1", 0, vec![slow.replica()]),
            RevisionRoute::new("r2", 100, vec![fast.replica()]),
        ]),
    );
    router.replace_routes(&both).expect("new table");
    assert_eq!(concurrency(&router, "r1").requests_total, 4);
    assert_eq!(concurrency(&router, "r2").requests_total, 1);
}
