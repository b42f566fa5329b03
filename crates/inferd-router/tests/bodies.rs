//! Request bodies from hostile clients, over raw TCP: bodies that never
//! finish, bodies over the limit (announced or sent, chunked or not). The
//! router reads a body whole before it takes a replica slot, so none of
//! them holds a slot, counts as load or reaches a replica.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{
    INFER, backend, client, config, eventually, get, router_with, sample, send, send_body, service,
};
use hyper::StatusCode;
use inferd_router::{RevisionRoute, RouteTable, RouterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a raw client read back.
struct Raw {
    status: u16,
    head: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads until the server closes (bounded: 30 s), and parses the head.
async fn read_answer(tcp: &mut TcpStream) -> Raw {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "no answer within 30 s");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer in {text:?}"));
    Raw { status, head }
}

/// Opens a connection and writes `raw` on it.
async fn open(addr: SocketAddr, raw: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(raw).await.expect("write");
    tcp
}

/// A request head for `INFER` with `headers`, and `body` after it.
fn request(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!("POST {INFER} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// The head of a body announced as 100 000 bytes, with one byte of it.
fn unfinished() -> Vec<u8> {
    request("Content-Length: 100000\r\n", b"{")
}

fn table(replica: inferd_router::ReplicaAddr) -> RouteTable {
    RouteTable::new().with_service(
        "iris",
        service(vec![
            RevisionRoute::new("r1", 100, vec![replica]).with_container_concurrency(1),
        ])
        .with_timeout(Duration::from_secs(10)),
    )
}

#[tokio::test]
async fn unfinished_bodies_hold_no_slot_and_count_as_no_load() {
    let b = backend("b", None).await;
    // Long enough that the slow clients are still open when checked.
    let config = RouterConfig {
        body_read_timeout: Duration::from_secs(300),
        ..config(61)
    };
    let (router, addr) = router_with(&table(b.replica()), &config).await;
    let mut slow = Vec::new();
    for _ in 0..120 {
        slow.push(open(addr, &unfinished()).await);
    }
    // The one replica slot is free: a good request is served at once,
    // not held behind the unfinished bodies.
    let client = client();
    for _ in 0..3 {
        let answer = send(&client, addr, INFER, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body, "b:payload");
    }
    let load = &router.concurrency("iris").expect("service")[0];
    assert_eq!((load.in_flight, load.held), (0, 0));
    assert_eq!(b.hits(), 3);
    // Every slow client is still connected and unanswered.
    for tcp in &slow {
        let mut buf = [0u8; 1];
        match tcp.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a slow client was answered or closed: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_body_that_stops_coming_gets_408_and_the_connection_closes() {
    let b = backend("b", None).await;
    let config = RouterConfig {
        body_read_timeout: Duration::from_millis(200),
        ..config(62)
    };
    let (router, addr) = router_with(&table(b.replica()), &config).await;
    let mut slow = open(addr, &unfinished()).await;
    let answer = read_answer(&mut slow).await;
    assert_eq!(answer.status, 408, "{}", answer.head);
    assert_eq!(answer.header("connection"), Some("close"));
    // A chunked body that stops inside a chunk, the same.
    let mut chunked = open(
        addr,
        &request("Transfer-Encoding: chunked\r\n", b"10\r\n{\"inputs\""),
    )
    .await;
    assert_eq!(read_answer(&mut chunked).await.status, 408);
    assert_eq!(b.hits(), 0);
    let load = &router.concurrency("iris").expect("service")[0];
    assert_eq!((load.in_flight, load.held, load.requests_total), (0, 0, 0));
    let metrics = get(&client(), addr, "/metrics").await.body;
    let series = r#"inferd_router_rejected_total{service="iris",reason="body_timeout"}"#;
    assert_eq!(sample(&metrics, series), Some(2.0), "{metrics}");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_at_once() {
    let b = backend("b", None).await;
    let config = RouterConfig {
        max_body_bytes: 1024,
        // A refusal that waited for the body would be a 408.
        body_read_timeout: Duration::from_secs(300),
        ..config(63)
    };
    let (_router, addr) = router_with(&table(b.replica()), &config).await;
    // Announced: refused before any of it is sent.
    let mut declared = open(addr, &request("Content-Length: 1025\r\n", b"")).await;
    let answer = read_answer(&mut declared).await;
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert_eq!(answer.header("connection"), Some("close"));
    // A chunk that declares 2^64 - 1 bytes, then more than the limit of it.
    let mut huge = request("Transfer-Encoding: chunked\r\n", b"ffffffffffffffff\r\n");
    huge.extend_from_slice(&[b'a'; 2048]);
    let mut huge = open(addr, &huge).await;
    assert_eq!(read_answer(&mut huge).await.status, 413);
    // A body at the limit goes through.
    let at_limit = Bytes::from(vec![b'a'; 1024]);
    let answer = send_body(&client(), addr, INFER, at_limit).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn an_over_limit_body_is_the_clients_failure_not_the_replicas() {
    let b = backend("b", None).await;
    let config = RouterConfig {
        max_body_bytes: 4096,
        ..config(64)
    };
    let (router, addr) = router_with(&table(b.replica()), &config).await;
    let client = client();
    for i in 0..10 {
        let answer = send_body(&client, addr, INFER, Bytes::from(vec![b'a'; 4097 + i])).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{i}");
        assert!(
            answer.error().contains("over the limit of 4096 bytes"),
            "{}",
            answer.body
        );
    }
    assert_eq!(b.hits(), 0);
    let metrics = get(&client, addr, "/metrics").await.body;
    let rejected = r#"inferd_router_rejected_total{service="iris",reason="body_too_large"}"#;
    assert_eq!(sample(&metrics, rejected), Some(10.0), "{metrics}");
    assert!(!metrics.contains("replica_failed"), "{metrics}");
    assert!(!metrics.contains(r#"code="502""#), "{metrics}");
    let retries = r#"inferd_router_retries_total{service="iris",revision="r1"}"#;
    assert_eq!(sample(&metrics, retries), Some(0.0), "{metrics}");
    eventually("nothing in flight", || {
        router.concurrency("iris").expect("service")[0].in_flight == 0
    })
    .await;
}
