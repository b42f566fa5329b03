//! The router's own endpoints: metrics and health.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{INFER, backend, client, dead_addr, get, router, sample, send, service};
use http_body_util::Full;
use hyper::{Request, StatusCode};
use inferd_router::{RevisionRoute, RevisionState, RouteTable};

#[tokio::test]
async fn metrics_count_requests_rejections_and_retries() {
    let a = backend("a", None).await;
    let dead = dead_addr().await;
    let table = RouteTable::new()
        .with_service(
            "iris",
            service(vec![RevisionRoute::new("r1", 100, vec![a.replica()])]),
        )
        .with_service(
            "wine",
            service(vec![RevisionRoute::new(
                "w1",
                100,
                vec![dead.into(), a.replica()],
            )]),
        )
        .with_service(
            "cold",
            service(vec![
                RevisionRoute::new("c1", 100, vec![]).with_state(RevisionState::Activating),
            ])
            .with_timeout(Duration::from_millis(100)),
        )
        .with_service(
            "broken",
            service(vec![
                RevisionRoute::new("b1", 100, vec![])
                    .with_state(RevisionState::Unavailable("no model".to_owned())),
            ]),
        );
    let (_router, addr) = router(&table, 21).await;
    let client = client();
    for _ in 0..5 {
        assert_eq!(
            send(&client, addr, INFER, None).await.status,
            StatusCode::OK
        );
    }
    for _ in 0..20 {
        let answer = send(&client, addr, "/v2/models/wine/infer", None).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let not_found = [
        ("/v2/models/nope/infer", None),
        (INFER, Some("r9")),
        ("/v2/models/cold/infer", None),
        ("/v2/models/broken/infer", None),
    ];
    for (path, pin) in not_found {
        assert_ne!(send(&client, addr, path, pin).await.status, StatusCode::OK);
    }

    let response = get(&client, addr, "/metrics").await;
    assert_eq!(response.status, StatusCode::OK);
    let metrics = response.body;
    let expect = [
        (
            r#"inferd_router_requests_total{service="iris",revision="r1",code="200"}"#,
            5.0,
        ),
        (
            r#"inferd_router_requests_total{service="wine",revision="w1",code="200"}"#,
            20.0,
        ),
        (
            r#"inferd_router_requests_total{service="",revision="",code="404"}"#,
            1.0,
        ),
        (
            r#"inferd_router_requests_total{service="iris",revision="",code="404"}"#,
            1.0,
        ),
        (
            r#"inferd_router_requests_total{service="cold",revision="c1",code="504"}"#,
            1.0,
        ),
        (
            r#"inferd_router_requests_total{service="broken",revision="",code="503"}"#,
            1.0,
        ),
        (
            r#"inferd_router_request_duration_seconds_count{service="iris",revision="r1"}"#,
            5.0,
        ),
        (
            r#"inferd_router_in_flight{service="iris",revision="r1"}"#,
            0.0,
        ),
        (r#"inferd_router_held_requests{service="cold"}"#, 0.0),
        (
            r#"inferd_router_rejected_total{service="",reason="no_route"}"#,
            1.0,
        ),
        (
            r#"inferd_router_rejected_total{service="iris",reason="no_route"}"#,
            1.0,
        ),
        (
            r#"inferd_router_rejected_total{service="cold",reason="hold_timeout"}"#,
            1.0,
        ),
        (
            r#"inferd_router_rejected_total{service="broken",reason="unavailable"}"#,
            1.0,
        ),
        (
            r#"inferd_router_retries_total{service="iris",revision="r1"}"#,
            0.0,
        ),
    ];
    for (series, value) in expect {
        assert_eq!(
            sample(&metrics, series),
            Some(value),
            "{series} in\n{metrics}"
        );
    }
    // The dead replica of wine is tried first now and then; each time
    // the request is retried on the live one.
    let retries = sample(
        &metrics,
        r#"inferd_router_retries_total{service="wine",revision="w1"}"#,
    );
    assert!(
        retries.is_some_and(|r| (1.0..=20.0).contains(&r)),
        "{metrics}"
    );
    assert_eq!(a.hits(), 25);
}

#[tokio::test]
async fn health_follows_the_routable_revisions() {
    let a = backend("a", None).await;
    let serving = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new("r1", 100, vec![a.replica()])]),
    );
    let (router, addr) = router(&serving, 22).await;
    let client = client();
    let live = get(&client, addr, "/v2/health/live").await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.body, r#"{"live":true}"#);
    assert_eq!(
        get(&client, addr, "/v2/health/ready").await.status,
        StatusCode::OK
    );
    assert!(router.is_ready());

    let empty = RouteTable::new()
        .with_service(
            "iris",
            service(vec![RevisionRoute::new("r1", 100, vec![a.replica()])]),
        )
        .with_service("wine", service(vec![RevisionRoute::new("w1", 100, vec![])]));
    router.replace_routes(&empty).expect("new table");
    let ready = get(&client, addr, "/v2/health/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.error().contains("wine"), "{}", ready.body);
    assert!(!ready.error().contains("iris"), "{}", ready.body);
    assert_eq!(
        get(&client, addr, "/v2/health/live").await.status,
        StatusCode::OK
    );

    // Scaled to zero is ready: requests will be held, not refused.
    let cold = RouteTable::new().with_service(
        "wine",
        service(vec![
            RevisionRoute::new("w1", 100, vec![]).with_state(RevisionState::Activating),
        ]),
    );
    router.replace_routes(&cold).expect("new table");
    assert_eq!(
        get(&client, addr, "/v2/health/ready").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn other_paths_and_methods_get_json_errors() {
    let table = RouteTable::new();
    let (_router, addr) = router(&table, 23).await;
    let client = client();
    let missing = get(&client, addr, "/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(!missing.error().is_empty());
    let post = send(&client, addr, "/metrics", None).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!post.error().is_empty());
    let head = Request::head(format!("http://{addr}/v2/health/live"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = client.request(head).await.expect("router answers");
    assert_eq!(response.status(), StatusCode::OK);
}
