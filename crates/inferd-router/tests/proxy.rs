//! The router in front of real HTTP backends on loopback.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{INFER, backend, client, dead_addr, router, send, service};
use hyper::StatusCode;
use inferd_router::{RevisionRoute, RouteTable};
use tokio::sync::watch;

#[tokio::test]
async fn requests_reach_backends_and_name_the_revision() {
    let (a, b) = (backend("a", None).await, backend("b", None).await);
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new(
            "r1",
            100,
            vec![a.replica(), b.replica()],
        )]),
    );
    let (_router, addr) = router(&table, 1).await;
    let client = client();
    for path in [INFER, "/v1/models/iris:predict"] {
        for _ in 0..20 {
            let answer = send(&client, addr, path, None).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.revision.as_deref(), Some("r1"));
            assert!(
                answer.body == "a:payload" || answer.body == "b:payload",
                "{}",
                answer.body
            );
        }
    }
    assert_eq!(
        a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst),
        40
    );
}

#[tokio::test]
async fn all_or_nothing_splits_route_to_one_revision() {
    let (a, b) = (backend("a", None).await, backend("b", None).await);
    let table = |first, second| {
        RouteTable::new().with_service(
            "iris",
            service(vec![
                RevisionRoute::new("r1", first, vec![a.replica()]),
                RevisionRoute::new("r2", second, vec![b.replica()]),
            ]),
        )
    };
    let (router, addr) = router(&table(100, 0), 2).await;
    let client = client();
    for _ in 0..50 {
        let answer = send(&client, addr, INFER, None).await;
        assert_eq!(answer.revision.as_deref(), Some("r1"));
        assert_eq!(answer.body, "a:payload");
    }
    router.replace_routes(&table(0, 100)).expect("new table");
    for _ in 0..50 {
        let answer = send(&client, addr, INFER, None).await;
        assert_eq!(answer.revision.as_deref(), Some("r2"));
        assert_eq!(answer.body, "b:payload");
    }
}

#[tokio::test]
async fn an_80_20_split_lands_near_80_20() {
    let (a, b) = (backend("a", None).await, backend("b", None).await);
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![
            RevisionRoute::new("r1", 80, vec![a.replica()]),
            RevisionRoute::new("r2", 20, vec![b.replica()]),
        ]),
    );
    let (_router, addr) = router(&table, 42).await;
    let client = client();
    let mut first = 0;
    for _ in 0..1000 {
        let answer = send(&client, addr, INFER, None).await;
        match answer.revision.as_deref() {
            Some("r1") => {
                assert_eq!(answer.body, "a:payload");
                first += 1;
            }
            Some("r2") => assert_eq!(answer.body, "b:payload"),
            other => panic!("unexpected revision {other:?}"),
        }
    }
    assert!((700..=900).contains(&first), "r1 got {first} of 1000");
}

#[tokio::test]
async fn a_header_pins_a_revision_by_name_or_tag() {
    let (a, b) = (backend("a", None).await, backend("b", None).await);
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![
            RevisionRoute::new("r1", 100, vec![a.replica()]),
            RevisionRoute::new("r2", 0, vec![b.replica()]),
        ])
        .with_tags(Some("r2"), Some("r1")),
    );
    let (_router, addr) = router(&table, 3).await;
    let client = client();
    for (pin, revision, body) in [
        ("r2", "r2", "b:payload"),
        ("r1", "r1", "a:payload"),
        ("latest", "r2", "b:payload"),
        ("prev", "r1", "a:payload"),
    ] {
        for _ in 0..10 {
            let answer = send(&client, addr, INFER, Some(pin)).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.revision.as_deref(), Some(revision), "pin {pin}");
            assert_eq!(answer.body, body, "pin {pin}");
        }
    }
    let answer = send(&client, addr, INFER, Some("r9")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.body.contains("\"error\""), "{}", answer.body);
}

#[tokio::test]
async fn p2c_prefers_the_idle_replica() {
    let (open, gate) = watch::channel(false);
    let slow = backend("slow", Some(gate)).await;
    let fast = backend("fast", None).await;
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new(
            "r1",
            100,
            vec![slow.replica(), fast.replica()],
        )]),
    );
    let (router, addr) = router(&table, 4).await;
    let client = client();
    // Send requests until one is held by the slow backend.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut held = Vec::new();
    while slow.hits.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no request reached the slow backend"
        );
        let client = client.clone();
        let task = tokio::spawn(async move { send(&client, addr, INFER, None).await });
        let started = Instant::now();
        while !task.is_finished()
            && slow.hits.load(Ordering::SeqCst) == 0
            && started.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        held.push(task);
    }
    let in_flight = router.concurrency("iris").expect("service");
    assert_eq!(in_flight[0].in_flight, 1);
    let fast_before = fast.hits.load(Ordering::SeqCst);
    for _ in 0..30 {
        let answer = send(&client, addr, INFER, None).await;
        assert_eq!(answer.body, "fast:payload");
    }
    assert_eq!(fast.hits.load(Ordering::SeqCst), fast_before + 30);
    assert_eq!(slow.hits.load(Ordering::SeqCst), 1);
    open.send(true).expect("open the gate");
    for task in held {
        let answer = task.await.expect("request task");
        assert_eq!(answer.status, StatusCode::OK);
    }
    let in_flight = router.concurrency("iris").expect("service");
    assert_eq!(in_flight[0].in_flight, 0);
}

#[tokio::test]
async fn a_dead_replica_is_retried_on_a_live_one() {
    let dead = dead_addr().await.into();
    let live = backend("live", None).await;
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new(
            "r1",
            100,
            vec![dead, live.replica()],
        )]),
    );
    let (router, addr) = router(&table, 5).await;
    let client = client();
    for _ in 0..30 {
        let answer = send(&client, addr, INFER, None).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.revision.as_deref(), Some("r1"));
        assert_eq!(answer.body, "live:payload");
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 30);
    let in_flight = router.concurrency("iris").expect("service");
    assert_eq!(in_flight[0].in_flight, 0);
}

#[tokio::test]
async fn unknown_service_is_404() {
    let a = backend("a", None).await;
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new("r1", 100, vec![a.replica()])]),
    );
    let (router, addr) = router(&table, 6).await;
    let client = client();
    for path in [
        "/v2/models/nope/infer",
        "/v1/models/nope:predict",
        "/v2/repository/index",
    ] {
        let answer = send(&client, addr, path, None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        let json: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
        assert!(json["error"].is_string(), "{}", answer.body);
    }
    assert!(router.concurrency("nope").is_none());
    assert_eq!(a.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn no_ready_replica_is_503() {
    let table = RouteTable::new()
        .with_service("iris", service(vec![RevisionRoute::new("r1", 100, vec![])]));
    let (_router, addr) = router(&table, 7).await;
    let client = client();
    let answer = send(&client, addr, INFER, None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
    assert!(json["error"].is_string(), "{}", answer.body);
    let pinned = send(&client, addr, INFER, Some("r1")).await;
    assert_eq!(pinned.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_slow_replica_times_out_with_504() {
    let (_open, gate) = watch::channel(false);
    let stuck = backend("stuck", Some(gate)).await;
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new("r1", 100, vec![stuck.replica()])])
            .with_timeout(Duration::from_millis(300)),
    );
    let (router, addr) = router(&table, 8).await;
    let client = client();
    let answer = send(&client, addr, INFER, None).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.revision.as_deref(), Some("r1"));
    let json: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
    assert!(json["error"].is_string(), "{}", answer.body);
    let in_flight = router.concurrency("iris").expect("service");
    assert_eq!(in_flight[0].in_flight, 0);
}
