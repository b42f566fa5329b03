//! The election against a mock API server that records every request and
//! answers from a script or a small stateful fake of one Lease.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NS: &str = "ops";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/inferd-operator";
const ME: &str = "operator-a";
const OTHER: &str = "operator-b";

/// `seconds` after the tests' epoch.
fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
}

/// [`at`] as the Lease writes it.
fn stamp(seconds: u64) -> String {
    // 1_700_000_000 is 2023-11-14T22:13:20Z.
    let total = 22 * 3600 + 13 * 60 + 20 + seconds;
    format!(
        "2023-11-14T{:02}:{:02}:{:02}.000000Z",
        total / 3600,
        total / 60 % 60,
        total % 60
    )
}

fn clock() -> SystemTime {
    at(0)
}

fn config() -> LeaseConfig {
    LeaseConfig {
        namespace: NS.to_owned(),
        name: DEFAULT_LEASE_NAME.to_owned(),
        identity: ME.to_owned(),
        lease_duration: DEFAULT_LEASE_DURATION,
        renew_deadline: DEFAULT_RENEW_DEADLINE,
        retry_period: DEFAULT_RETRY_PERIOD,
    }
}

/// Timings short enough for the run loop's tests to take milliseconds.
fn fast_config() -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(200),
        retry_period: Duration::from_millis(20),
        ..config()
    }
}

fn lease(holder: Option<&str>, rv: &str, renewed: u64, transitions: i32) -> Value {
    let mut spec = json!({
        "leaseDurationSeconds": 15,
        "acquireTime": stamp(0),
        "renewTime": stamp(renewed),
        "leaseTransitions": transitions,
    });
    if let Some(holder) = holder {
        spec["holderIdentity"] = json!(holder);
    }
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": DEFAULT_LEASE_NAME, "namespace": NS, "resourceVersion": rv },
        "spec": spec,
    })
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": "refused by the test", "reason": reason, "code": code,
        }),
    )
}

/// A request as the mock saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

impl Seen {
    fn spec(&self) -> &Value {
        &self.body["spec"]
    }
}

/// The mock API server, answering in a task until dropped.
struct Server {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    fn start(
        client_handle: Handle,
        respond: impl FnMut(&Seen) -> (u16, Value) + Send + 'static,
    ) -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(answer(client_handle, respond, seen.clone()));
        Server { seen, task }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn methods(&self) -> Vec<String> {
        self.requests().into_iter().map(|s| s.method).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    mut handle: Handle,
    mut respond: impl FnMut(&Seen) -> (u16, Value),
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    while let Some((request, send)) = handle.next_request().await {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        let request = Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            body,
        };
        let (code, reply) = respond(&request);
        seen.lock().expect("lock").push(request);
        let response = Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&reply).expect("json")))
            .expect("response");
        send.send_response(response);
    }
}

/// One expected request and the answer to it.
struct Call {
    method: &'static str,
    path: &'static str,
    status: u16,
    /// `None` echoes the request's body with this resourceVersion.
    reply: Option<Value>,
    rv: &'static str,
}

fn get(reply: Value) -> Call {
    Call {
        method: "GET",
        path: LEASE,
        status: 200,
        reply: Some(reply),
        rv: "",
    }
}

fn get_absent() -> Call {
    let (status, reply) = status(404, "NotFound");
    Call {
        status,
        ..get(reply)
    }
}

fn create(rv: &'static str) -> Call {
    Call {
        method: "POST",
        path: LEASES,
        status: 201,
        reply: None,
        rv,
    }
}

fn replace(rv: &'static str) -> Call {
    Call {
        method: "PUT",
        path: LEASE,
        status: 200,
        reply: None,
        rv,
    }
}

fn failing(call: Call, code: u16, reason: &str) -> Call {
    let (status, reply) = status(code, reason);
    Call {
        status,
        reply: Some(reply),
        ..call
    }
}

/// Answers exactly `calls`, in order, asserting each request.
fn script(calls: Vec<Call>) -> impl FnMut(&Seen) -> (u16, Value) + Send + 'static {
    let mut calls = VecDeque::from(calls);
    move |seen| {
        let call = calls
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected request {} {}", seen.method, seen.path));
        assert_eq!(seen.method, call.method, "{}", seen.path);
        assert_eq!(seen.path, call.path);
        let reply = call.reply.unwrap_or_else(|| {
            let mut body = seen.body.clone();
            body["metadata"]["resourceVersion"] = json!(call.rv);
            body
        });
        (call.status, reply)
    }
}

fn lock_with(calls: Vec<Call>) -> (LeaseLock, Server) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = Server::start(handle, script(calls));
    let lock = LeaseLock::new(Client::new(service, NS), config()).expect("valid config");
    (lock, server)
}

#[tokio::test]
async fn an_absent_lease_is_created_with_me_as_holder() {
    let (lock, server) = lock_with(vec![get_absent(), create("1")]);
    assert!(lock.try_acquire_or_renew(at(0)).await.expect("acquire"));
    assert!(lock.is_leader());

    let requests = server.requests();
    assert_eq!(server.methods(), ["GET", "POST"]);
    let body = &requests[1].body;
    assert_eq!(body["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(body["kind"], "Lease");
    assert_eq!(body["metadata"]["name"], DEFAULT_LEASE_NAME);
    assert_eq!(body["metadata"]["namespace"], NS);
    assert_eq!(
        body["spec"],
        json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "acquireTime": "2023-11-14T22:13:20.000000Z",
            "renewTime": "2023-11-14T22:13:20.000000Z",
            "leaseTransitions": 0,
        })
    );
}

#[tokio::test]
async fn a_lease_held_by_me_is_renewed_with_its_resource_version() {
    let (lock, server) = lock_with(vec![get(lease(Some(ME), "7", 3, 4)), replace("8")]);
    assert!(lock.try_acquire_or_renew(at(5)).await.expect("renew"));

    let requests = server.requests();
    assert_eq!(server.methods(), ["GET", "PUT"]);
    assert_eq!(requests[1].body["metadata"]["resourceVersion"], "7");
    assert_eq!(
        requests[1].spec(),
        &json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "acquireTime": stamp(0),
            "renewTime": stamp(5),
            "leaseTransitions": 4,
        })
    );
    assert!(lock.is_leader());
}

#[tokio::test]
async fn a_fresh_lease_of_another_holder_is_left_alone() {
    // The holder's renewTime is long past by this node's clock (skew): what
    // counts is when this replica saw the record change.
    let held = lease(Some(OTHER), "7", 0, 2);
    let (lock, server) = lock_with(vec![get(held.clone()), get(held)]);
    assert!(!lock.try_acquire_or_renew(at(3600)).await.expect("first"));
    assert!(!lock.try_acquire_or_renew(at(3614)).await.expect("second"));
    assert_eq!(server.methods(), ["GET", "GET"]);
    assert_eq!(lock.holder().as_deref(), Some(OTHER));
    assert!(!lock.is_leader());
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let held = lease(Some(OTHER), "7", 0, 2);
    let (lock, server) = lock_with(vec![get(held.clone()), get(held), replace("8")]);
    assert!(!lock.try_acquire_or_renew(at(100)).await.expect("first"));
    assert!(lock.try_acquire_or_renew(at(116)).await.expect("takeover"));

    let requests = server.requests();
    assert_eq!(server.methods(), ["GET", "GET", "PUT"]);
    assert_eq!(requests[2].path, LEASE);
    assert_eq!(requests[2].body["metadata"]["resourceVersion"], "7");
    assert_eq!(
        requests[2].spec(),
        &json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "acquireTime": stamp(116),
            "renewTime": stamp(116),
            "leaseTransitions": 3,
        })
    );
    assert!(lock.is_leader());
}

#[tokio::test]
async fn a_renewing_holder_restarts_the_expiry_clock() {
    let (lock, server) = lock_with(vec![
        get(lease(Some(OTHER), "7", 0, 2)),
        get(lease(Some(OTHER), "8", 10, 2)),
        get(lease(Some(OTHER), "8", 10, 2)),
        get(lease(Some(OTHER), "8", 10, 2)),
        replace("9"),
    ]);
    assert!(!lock.try_acquire_or_renew(at(100)).await.expect("seen"));
    assert!(!lock.try_acquire_or_renew(at(110)).await.expect("renewed"));
    // 16 s after the first sighting but 6 s after the renewal.
    assert!(
        !lock
            .try_acquire_or_renew(at(116))
            .await
            .expect("still fresh")
    );
    assert!(lock.try_acquire_or_renew(at(125)).await.expect("expired"));
    assert_eq!(server.methods(), ["GET", "GET", "GET", "GET", "PUT"]);
}

#[tokio::test]
async fn a_released_lease_is_taken_over_at_once() {
    let (lock, server) = lock_with(vec![get(lease(None, "7", 0, 2)), replace("8")]);
    assert!(lock.try_acquire_or_renew(at(1)).await.expect("takeover"));
    let requests = server.requests();
    assert_eq!(requests[1].spec()["holderIdentity"], ME);
    assert_eq!(requests[1].spec()["leaseTransitions"], 3);
}

#[tokio::test]
async fn a_conflict_means_another_replica_won() {
    let (lock, server) = lock_with(vec![
        get(lease(None, "7", 0, 2)),
        failing(replace(""), 409, "Conflict"),
        get_absent(),
        failing(create(""), 409, "AlreadyExists"),
    ]);
    assert!(!lock.try_acquire_or_renew(at(1)).await.expect("no error"));
    assert!(!lock.try_acquire_or_renew(at(2)).await.expect("no error"));
    assert!(!lock.is_leader());
    assert_eq!(server.methods(), ["GET", "PUT", "GET", "POST"]);
}

#[tokio::test]
async fn other_api_errors_are_errors() {
    let (lock, server) = lock_with(vec![
        failing(get(Value::Null), 500, "InternalError"),
        get(lease(Some(ME), "7", 0, 0)),
        failing(replace(""), 403, "Forbidden"),
    ]);
    let e = lock.try_acquire_or_renew(at(0)).await.expect_err("500");
    assert!(
        matches!(e, Error::Kube(kube::Error::Api(ref s)) if s.code == 500),
        "{e:?}"
    );
    let e = lock.try_acquire_or_renew(at(1)).await.expect_err("403");
    assert!(
        matches!(e, Error::Kube(kube::Error::Api(ref s)) if s.code == 403),
        "{e:?}"
    );
    assert_eq!(server.methods(), ["GET", "GET", "PUT"]);
}

#[tokio::test]
async fn release_clears_the_holder_with_the_last_resource_version() {
    let (lock, server) = lock_with(vec![get_absent(), create("1"), replace("2")]);
    assert!(lock.try_acquire_or_renew(at(0)).await.expect("acquire"));
    assert!(lock.release(at(5)).await.expect("release"));
    assert!(!lock.is_leader());

    let requests = server.requests();
    assert_eq!(server.methods(), ["GET", "POST", "PUT"]);
    assert_eq!(requests[2].body["metadata"]["resourceVersion"], "1");
    assert_eq!(
        requests[2].spec(),
        &json!({
            "leaseDurationSeconds": 1,
            "acquireTime": stamp(5),
            "renewTime": stamp(5),
            "leaseTransitions": 0,
        })
    );
}

/// A renewal dropped in flight when the work ended may still have been
/// written: the release then meets a newer resourceVersion (409), reads the
/// Lease again and, still named in it, releases it with that version.
#[tokio::test]
async fn a_release_that_meets_a_newer_lease_of_its_own_reads_it_and_releases() {
    let (conflict, conflict_body) = status(409, "Conflict");
    let (lock, server) = lock_with(vec![
        get_absent(),
        create("1"),
        Call {
            status: conflict,
            reply: Some(conflict_body),
            ..replace("")
        },
        get(lease(Some(ME), "2", 4, 0)),
        replace("3"),
    ]);
    assert!(lock.try_acquire_or_renew(at(0)).await.expect("acquire"));
    assert!(lock.release(at(5)).await.expect("release"));
    assert!(!lock.is_leader());
    let requests = server.requests();
    assert_eq!(server.methods(), ["GET", "POST", "PUT", "GET", "PUT"]);
    assert_eq!(requests[2].body["metadata"]["resourceVersion"], "1");
    assert_eq!(requests[4].body["metadata"]["resourceVersion"], "2");
    assert!(requests[4].spec().get("holderIdentity").is_none());
}

/// If the newer Lease names another replica, nothing is written.
#[tokio::test]
async fn a_release_that_meets_a_lease_taken_over_leaves_it() {
    let (conflict, conflict_body) = status(409, "Conflict");
    let (lock, server) = lock_with(vec![
        get_absent(),
        create("1"),
        Call {
            status: conflict,
            reply: Some(conflict_body),
            ..replace("")
        },
        get(lease(Some(OTHER), "2", 20, 1)),
    ]);
    assert!(lock.try_acquire_or_renew(at(0)).await.expect("acquire"));
    assert!(!lock.release(at(21)).await.expect("not ours any more"));
    assert_eq!(server.methods(), ["GET", "POST", "PUT", "GET"]);
}

#[tokio::test]
async fn nothing_is_released_when_not_the_leader() {
    let (lock, server) = lock_with(vec![get(lease(Some(OTHER), "7", 0, 0))]);
    assert!(!lock.release(at(0)).await.expect("nothing read"));
    assert!(!lock.try_acquire_or_renew(at(0)).await.expect("held"));
    assert!(!lock.release(at(1)).await.expect("not mine"));
    assert_eq!(server.methods(), ["GET"]);
}

/// A fake of one Lease: GET, POST and PUT (checking the resourceVersion)
/// as the API server does them; `override_` may answer first.
fn fake(
    mut override_: impl FnMut(&Seen, Option<&Value>) -> Option<(u16, Value)> + Send + 'static,
) -> impl FnMut(&Seen) -> (u16, Value) + Send + 'static {
    let mut stored: Option<Value> = None;
    let mut version = 0u64;
    move |seen| {
        if let Some(answer) = override_(seen, stored.as_ref()) {
            return answer;
        }
        match (seen.method.as_str(), &stored) {
            ("GET", None) => status(404, "NotFound"),
            ("GET", Some(lease)) => (200, lease.clone()),
            ("POST", Some(_)) => status(409, "AlreadyExists"),
            ("PUT", Some(lease))
                if lease["metadata"]["resourceVersion"]
                    != seen.body["metadata"]["resourceVersion"] =>
            {
                status(409, "Conflict")
            }
            ("POST" | "PUT", _) => {
                version += 1;
                let mut lease = seen.body.clone();
                lease["metadata"]["resourceVersion"] = json!(version.to_string());
                stored = Some(lease.clone());
                (if seen.method == "POST" { 201 } else { 200 }, lease)
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }
}

fn elector_with(respond: impl FnMut(&Seen) -> (u16, Value) + Send + 'static) -> (Elector, Server) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = Server::start(handle, respond);
    let elector =
        Elector::with_clock(Client::new(service, NS), fast_config(), clock).expect("valid config");
    (elector, server)
}

/// Sets a flag when dropped: whether the work was stopped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_leader_runs_the_work_and_releases_the_lease_after_it() {
    let (elector, server) = elector_with(fake(|_, _| None));
    let leader = elector.subscribe();
    let work = async move { (*leader.borrow(), 42) };
    let output = tokio::time::timeout(Duration::from_secs(5), elector.run(work))
        .await
        .expect("in time")
        .expect("ran");
    assert_eq!(output, (true, 42), "the work ran as the leader");
    assert!(!*elector.subscribe().borrow());

    let requests = server.requests();
    assert_eq!(server.methods(), ["GET", "POST", "PUT"]);
    let release = &requests[2];
    assert_eq!(release.body["metadata"]["resourceVersion"], "1");
    assert!(release.spec().get("holderIdentity").is_none());
    assert_eq!(release.spec()["leaseDurationSeconds"], 1);
}

#[tokio::test]
async fn the_leader_renews_while_the_work_runs() {
    let (elector, server) = elector_with(fake(|_, _| None));
    let work = tokio::time::sleep(Duration::from_millis(200));
    tokio::time::timeout(Duration::from_secs(5), elector.run(work))
        .await
        .expect("in time")
        .expect("ran");

    let requests = server.requests();
    let methods = server.methods();
    assert_eq!(methods[..2], ["GET", "POST"]);
    assert_eq!(methods.last().map(String::as_str), Some("PUT"), "released");
    let renewals = &requests[2..requests.len() - 1];
    assert!(renewals.len() >= 2, "{methods:?}");
    for (i, pair) in renewals.chunks(2).enumerate() {
        assert_eq!(pair[0].method, "GET");
        if let Some(put) = pair.get(1) {
            assert_eq!(put.method, "PUT");
            // Each renewal carries the version its GET read.
            assert_eq!(
                put.body["metadata"]["resourceVersion"],
                json!((i + 1).to_string())
            );
            assert_eq!(put.spec()["holderIdentity"], ME);
            assert_eq!(put.spec()["leaseDurationSeconds"], 1);
        }
    }
    let release = requests.last().expect("release");
    assert!(release.spec().get("holderIdentity").is_none());
}

#[tokio::test]
async fn a_follower_waits_until_the_holder_releases() {
    let gets = Arc::new(Mutex::new(0));
    let counted = gets.clone();
    let (elector, server) = elector_with(fake(move |seen, _| {
        if seen.method != "GET" {
            return None;
        }
        let mut gets = counted.lock().expect("lock");
        *gets += 1;
        match *gets {
            1..=3 => Some((200, lease(Some(OTHER), "7", 0, 2))),
            4 => Some((200, lease(None, "8", 0, 2))),
            _ => None,
        }
    }));
    let before_work = Arc::new(Mutex::new(Vec::new()));
    let record = before_work.clone();
    let seen = server.seen.clone();
    let work = async move {
        *record.lock().expect("lock") = seen.lock().expect("lock").clone();
    };
    tokio::time::timeout(Duration::from_secs(5), elector.run(work))
        .await
        .expect("in time")
        .expect("ran");

    let before: Vec<Seen> = before_work.lock().expect("lock").clone();
    let methods: Vec<&str> = before.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["GET", "GET", "GET", "GET", "PUT"]);
    let takeover = &before[4];
    assert_eq!(takeover.body["metadata"]["resourceVersion"], "8");
    assert_eq!(takeover.spec()["holderIdentity"], ME);
    assert_eq!(takeover.spec()["leaseTransitions"], 3);
    // And released after the work.
    assert_eq!(server.methods().last().map(String::as_str), Some("PUT"));
}

#[tokio::test]
async fn leadership_is_lost_when_renewals_keep_failing() {
    // Once the lease exists, every request fails.
    let (elector, server) = elector_with(fake(|_, stored| {
        stored.map(|_| status(500, "InternalError"))
    }));
    let leader = elector.subscribe();
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(stopped.clone());
    let work = async move {
        let _flag = flag;
        std::future::pending::<()>().await;
    };
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), elector.run(work))
        .await
        .expect("in time");
    let elapsed = started.elapsed();

    assert!(matches!(result, Err(Error::LeadershipLost)), "{result:?}");
    assert!(stopped.load(Ordering::SeqCst), "the work was stopped");
    assert!(!*leader.borrow());
    assert!(elapsed >= fast_config().renew_deadline, "{elapsed:?}");
    let methods = server.methods();
    assert_eq!(methods[..2], ["GET", "POST"]);
    // Renewal attempts only: no write, and no release.
    assert!(methods[2..].iter().all(|m| m == "GET"), "{methods:?}");
    assert!(methods.len() >= 4, "retried: {methods:?}");
}

#[tokio::test]
async fn leadership_is_lost_at_once_when_another_replica_holds_the_lease() {
    let (elector, server) = elector_with(fake(|seen, stored| {
        (seen.method == "GET" && stored.is_some()).then(|| (200, lease(Some(OTHER), "9", 0, 1)))
    }));
    let work = std::future::pending::<()>();
    let result = tokio::time::timeout(Duration::from_secs(5), elector.run(work))
        .await
        .expect("in time");
    assert!(matches!(result, Err(Error::LeadershipLost)), "{result:?}");
    // One renewal saw the other holder; no retries until the deadline.
    assert_eq!(server.methods(), ["GET", "POST", "GET"]);
}

#[tokio::test]
async fn an_invalid_config_is_refused_before_any_request() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = Server::start(handle, fake(|_, _| None));
    let config = LeaseConfig {
        identity: String::new(),
        ..fast_config()
    };
    let result = run_elected(Client::new(service, NS), config, async {}).await;
    assert!(matches!(result, Err(Error::LeaseConfig(_))), "{result:?}");
    assert!(server.requests().is_empty());
}

#[test]
fn the_defaults_are_valid() {
    config().validate().expect("valid");
    fast_config().validate().expect("valid");
    let defaults = LeaseConfig::new(NS);
    assert_eq!(defaults.name, "inferd-operator");
    assert_eq!(defaults.lease_duration, Duration::from_secs(15));
    assert_eq!(defaults.renew_deadline, Duration::from_secs(10));
    assert_eq!(defaults.retry_period, Duration::from_secs(2));
}

fn refusal(config: LeaseConfig) -> String {
    match config.validate() {
        Err(e @ Error::LeaseConfig(_)) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_renew_deadline_not_shorter_than_the_lease_is_refused() {
    let message = refusal(LeaseConfig {
        renew_deadline: Duration::from_secs(15),
        ..config()
    });
    assert!(
        message.starts_with("invalid leader election settings"),
        "{message}"
    );
    assert!(
        message.contains("the renew deadline (15s) must be shorter than the lease duration (15s)"),
        "{message}"
    );
}

#[test]
fn a_retry_period_not_shorter_than_the_renew_deadline_is_refused() {
    let message = refusal(LeaseConfig {
        retry_period: Duration::from_secs(10),
        ..config()
    });
    assert!(
        message.contains("the retry period (10s) must be shorter than the renew deadline (10s)"),
        "{message}"
    );
    let message = refusal(LeaseConfig {
        retry_period: Duration::ZERO,
        ..config()
    });
    assert!(message.contains("the retry period is zero"), "{message}");
}

#[test]
fn empty_names_are_refused() {
    let message = refusal(LeaseConfig {
        identity: String::new(),
        ..config()
    });
    assert!(message.contains("the identity is empty"), "{message}");
    assert!(message.contains("POD_NAME"), "{message}");
    let message = refusal(LeaseConfig {
        name: String::new(),
        ..config()
    });
    assert!(message.contains("the lease name is empty"), "{message}");
    let message = refusal(LeaseConfig {
        namespace: String::new(),
        ..config()
    });
    assert!(
        message.contains("the lease namespace is empty"),
        "{message}"
    );
}

#[test]
fn a_lease_under_a_second_is_refused_and_fractions_round_up() {
    let message = refusal(LeaseConfig {
        lease_duration: Duration::from_millis(900),
        renew_deadline: Duration::from_millis(500),
        retry_period: Duration::from_millis(100),
        ..config()
    });
    assert!(message.contains("under one second"), "{message}");
    let config = LeaseConfig {
        lease_duration: Duration::from_millis(1500),
        ..fast_config()
    };
    assert_eq!(config.lease_duration_seconds(), 2);
    assert_eq!(LeaseConfig::new(NS).lease_duration_seconds(), 15);
}

#[test]
fn the_identity_is_the_pod_name_else_the_host_name() {
    assert_eq!(pick_identity(Some("op-7f9c"), Some("host")), "op-7f9c");
    assert_eq!(pick_identity(None, Some("host\n")), "host");
    assert_eq!(pick_identity(Some(" "), Some("host")), "host");
    assert_eq!(pick_identity(None, None), "");
}

#[test]
fn the_jitter_adds_at_most_a_fifth() {
    let period = Duration::from_millis(100);
    for _ in 0..100 {
        let d = jittered(period);
        assert!(d >= period && d <= period + period / 5, "{d:?}");
    }
}
