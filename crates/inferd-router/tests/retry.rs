//! One retry, on another replica of the revision, for requests a replica
//! lost before its response head: on loopback, with backends that read a
//! request whole and then close the connection without answering.

mod common;

use std::collections::HashSet;

use bytes::Bytes;
use common::{
    Close, INFER, answering, backend, chunked_client, client, closing_backend, eventually, retries,
    router, send, send_body, send_chunks, service,
};
use hyper::StatusCode;
use inferd_router::{RevisionRoute, RouteTable};
use tokio::sync::watch;

/// A body of `len` bytes that names request `i`.
fn body(i: usize, len: usize) -> Bytes {
    let mut out = format!("request {i}:").into_bytes();
    let mut k = 0;
    while out.len() < len {
        out.push(b'a' + u8::try_from((i + k) % 26).expect("a letter"));
        k += 1;
    }
    out.truncate(len.max(1));
    Bytes::from(out)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("ASCII body")
}

/// Splits `bytes` into chunks of `size`.
fn chunks(bytes: &Bytes, size: usize) -> Vec<Bytes> {
    (0..bytes.len())
        .step_by(size)
        .map(|start| bytes.slice(start..(start + size).min(bytes.len())))
        .collect()
}

#[tokio::test]
async fn requests_a_closing_replica_read_are_retried_with_the_same_body() {
    for (close, seed) in [(Close::Fin, 51), (Close::Reset, 52)] {
        let lost = closing_backend(close).await;
        let live = backend("live", None).await;
        let table = RouteTable::new().with_service(
            "iris",
            service(vec![RevisionRoute::new(
                "r1",
                100,
                vec![lost.replica(), live.replica()],
            )]),
        );
        let (router, addr) = router(&table, seed).await;
        let client = client();
        let mut sent = HashSet::new();
        let sizes = [7, 1000, 64 << 10, 512 << 10];
        for i in 0..50 {
            let body = body(i, sizes[i % sizes.len()]);
            let answer = send_body(&client, addr, INFER, body.clone()).await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{close:?} {i}: {}",
                answer.body
            );
            assert_eq!(answer.revision.as_deref(), Some("r1"));
            assert!(
                answer.body == format!("live:{}", text(&body)),
                "{close:?} {i}"
            );
            sent.insert(body);
        }
        // Concurrent requests, with a length and chunked.
        let chunked = chunked_client();
        let tasks: Vec<_> = (50..70)
            .map(|i| {
                let body = body(i, 20_000 + i);
                sent.insert(body.clone());
                let (client, chunked) = (client.clone(), chunked.clone());
                tokio::spawn(async move {
                    let answer = if i % 2 == 0 {
                        send_body(&client, addr, INFER, body.clone()).await
                    } else {
                        send_chunks(&chunked, addr, INFER, chunks(&body, 4096)).await
                    };
                    (body, answer)
                })
            })
            .collect();
        for task in tasks {
            let (body, answer) = task.await.expect("request task");
            assert_eq!(answer.status, StatusCode::OK, "{close:?}: {}", answer.body);
            assert!(answer.body == format!("live:{}", text(&body)), "{close:?}");
        }

        assert_eq!(live.hits(), 70, "{close:?}");
        let lost_bodies = lost.bodies();
        assert!(!lost_bodies.is_empty(), "{close:?}: no request was lost");
        // The lost replica read each body whole before it closed: the
        // retry sent it again after it had been sent once.
        for body in &lost_bodies {
            assert!(sent.contains(body), "{close:?}: a cut body was sent");
        }
        let counted = retries(&client, addr, "r1").await;
        assert_eq!(counted, lost_bodies.len() as f64, "{close:?}");
        eventually("requests finished", || {
            router.concurrency("iris").expect("service")[0].in_flight == 0
        })
        .await;
    }
}

#[tokio::test]
async fn large_and_chunked_bodies_are_read_whole_and_retried() {
    // The router reads every body whole before it dispatches it, so a
    // replica lost before answering costs no body, however long.
    let lost = closing_backend(Close::Fin).await;
    let live = backend("live", None).await;
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new(
            "r1",
            100,
            vec![lost.replica(), live.replica()],
        )]),
    );
    let (router, addr) = router(&table, 53).await;
    let client = client();
    let chunked = chunked_client();
    for i in 0..60 {
        let (body, answer) = match i % 3 {
            0 => {
                let body = body(i, 256 << 10);
                (body.clone(), send_body(&client, addr, INFER, body).await)
            }
            1 => {
                let body = body(i, 256 << 10);
                let answer = send_chunks(&chunked, addr, INFER, chunks(&body, 3000)).await;
                (body, answer)
            }
            _ => {
                let body = body(i, 1000);
                (body.clone(), send_body(&client, addr, INFER, body).await)
            }
        };
        assert_eq!(answer.status, StatusCode::OK, "{i}: {}", answer.body);
        assert!(answer.body == format!("live:{}", text(&body)), "{i}");
    }
    assert!(lost.hits() > 0);
    assert_eq!(live.hits(), 60);
    // What the lost replica read, it read whole.
    assert!(
        lost.bodies()
            .iter()
            .all(|b| b.len() == 1000 || b.len() == 256 << 10)
    );
    assert_eq!(retries(&client, addr, "r1").await, lost.hits() as f64);
    eventually("requests finished", || {
        router.concurrency("iris").expect("service")[0].in_flight == 0
    })
    .await;
}

#[tokio::test]
async fn an_error_status_is_not_retried() {
    let broken = answering("broken", StatusCode::INTERNAL_SERVER_ERROR).await;
    let live = backend("live", None).await;
    let table = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new(
            "r1",
            100,
            vec![broken.replica(), live.replica()],
        )]),
    );
    let (_router, addr) = router(&table, 54).await;
    let client = client();
    let mut errors = 0;
    for _ in 0..40 {
        let answer = send(&client, addr, INFER, None).await;
        if answer.status == StatusCode::INTERNAL_SERVER_ERROR {
            assert_eq!(answer.body, "broken");
            assert_eq!(answer.revision.as_deref(), Some("r1"));
            errors += 1;
        } else {
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.body, "live:payload");
        }
    }
    assert!(errors > 0);
    assert_eq!(broken.hits(), errors);
    assert_eq!(live.hits(), 40 - errors);
    assert_eq!(retries(&client, addr, "r1").await, 0.0);
}

#[tokio::test]
async fn with_no_free_replica_to_retry_on_the_answer_is_502() {
    // The lost replica is the revision's only one.
    let lost = closing_backend(Close::Fin).await;
    let alone = RouteTable::new().with_service(
        "iris",
        service(vec![RevisionRoute::new("r1", 100, vec![lost.replica()])]),
    );
    let (router, addr) = router(&alone, 55).await;
    let client = client();
    let answer = send(&client, addr, INFER, None).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(!answer.error().is_empty());
    assert_eq!(lost.bodies(), vec![Bytes::from_static(b"payload")]);
    assert_eq!(retries(&client, addr, "r1").await, 0.0);

    // The other replica is at the revision's limit.
    let (open, gate) = watch::channel(false);
    let busy = backend("busy", Some(gate)).await;
    let limited = RouteTable::new().with_service(
        "iris",
        service(vec![
            RevisionRoute::new("r1", 100, vec![lost.replica(), busy.replica()])
                .with_container_concurrency(1),
        ]),
    );
    router.replace_routes(&limited).expect("new table");
    let first = {
        let client = client.clone();
        tokio::spawn(async move { send(&client, addr, INFER, None).await })
    };
    eventually("a request on the busy replica", || busy.hits() == 1).await;
    // Whether the first request went by the lost replica or not.
    let retried_first = lost.hits() - 1;
    let answer = send(&client, addr, INFER, None).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    assert_eq!(lost.hits(), retried_first + 2);
    open.send(true).expect("open the gate");
    let answer = first.await.expect("request task");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "busy:payload");
    assert_eq!(busy.hits(), 1);
    assert_eq!(retries(&client, addr, "r1").await, retried_first as f64);
}
