//! The controller's passes against a mock API server that answers an exact,
//! expected sequence of requests (kube-rs' and controller-rs' approach).

use std::time::UNIX_EPOCH;

use http::{Request, Response};
use inferd_api::{InferenceServiceSpec, ModelFormat, ModelSpec, PredictorSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::client::Body;
use serde_json::Value;

use super::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NS: &str = "ml";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/ml/deployments";
const SERVICES: &str = "/api/v1/namespaces/ml/services";
const ISVC: &str = "/apis/serving.inferd.dev/v1alpha1/namespaces/ml/inferenceservices/iris";

fn clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let ctx = Context::with_clock(client, ReconcileOptions::default(), clock);
    (Arc::new(ctx), handle)
}

fn isvc(uri: &str, generation: i64) -> InferenceServiceObject {
    InferenceServiceObject {
        api_version: inferd_api::API_VERSION.to_owned(),
        kind: inferd_api::KIND_INFERENCE_SERVICE.to_owned(),
        metadata: ObjectMeta {
            name: Some("iris".to_owned()),
            namespace: Some(NS.to_owned()),
            uid: Some("uid-1".to_owned()),
            generation: Some(generation),
            ..ObjectMeta::default()
        },
        spec: InferenceServiceSpec {
            predictor: PredictorSpec::new(ModelSpec::new(ModelFormat::Onnx, uri)),
        },
        status: None,
    }
}

/// One expected request and the answer to it.
struct Call {
    method: &'static str,
    path: String,
    /// Whether it is a forced server-side apply by the operator.
    apply: bool,
    status: u16,
    /// The answer; `None` echoes the request's body.
    reply: Option<Value>,
}

fn list(items: Value) -> Call {
    Call {
        method: "GET",
        path: DEPLOYMENTS.to_owned(),
        apply: false,
        status: 200,
        reply: Some(json!({
            "apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": items,
        })),
    }
}

fn apply(path: String) -> Call {
    Call {
        method: "PATCH",
        path,
        apply: true,
        status: 200,
        reply: None,
    }
}

fn failing(mut call: Call, code: u16, reason: &str) -> Call {
    call.status = code;
    call.reply = Some(json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": "refused by the test", "reason": reason, "code": code,
    }));
    call
}

/// Answers `calls` in order, asserting each request, and returns the
/// request bodies.
async fn serve(mut handle: Handle, calls: Vec<Call>) -> (Handle, Vec<Value>) {
    let mut bodies = Vec::new();
    for call in calls {
        let (request, send) = handle.next_request().await.expect("a request");
        let (parts, body) = request.into_parts();
        assert_eq!(parts.method.as_str(), call.method, "{}", parts.uri);
        assert_eq!(parts.uri.path(), call.path);
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let has = |k: &str, v: &str| query.iter().any(|(qk, qv)| qk == k && qv == v);
        if call.apply {
            assert!(has("fieldManager", "inferd-operator"), "{}", parts.uri);
            assert!(has("force", "true"), "{}", parts.uri);
            assert_eq!(
                parts.headers.get("content-type").map(|h| h.as_bytes()),
                Some(&b"application/apply-patch+yaml"[..])
            );
        }
        if call.method == "GET" {
            assert!(
                has(
                    "labelSelector",
                    "serving.inferd.dev%2Finferenceservice%3Diris"
                ),
                "{}",
                parts.uri
            );
        }
        let bytes = body.collect_bytes().await.expect("body");
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        let reply = call.reply.unwrap_or_else(|| value.clone());
        bodies.push(value);
        let response = Response::builder()
            .status(call.status)
            .body(Body::from(serde_json::to_vec(&reply).expect("json")))
            .expect("response");
        send.send_response(response);
    }
    (handle, bodies)
}

/// Runs one pass against the expected calls.
async fn pass(
    object: &InferenceServiceObject,
    ctx: &Arc<Context>,
    handle: Handle,
    calls: Vec<Call>,
) -> (Result<Action>, Vec<Value>) {
    let (result, _, bodies) = pass_with(object, ctx, handle, calls).await;
    (result, bodies)
}

/// [`pass`], giving the mock's handle back for the next pass.
async fn pass_with(
    object: &InferenceServiceObject,
    ctx: &Arc<Context>,
    handle: Handle,
    calls: Vec<Call>,
) -> (Result<Action>, Handle, Vec<Value>) {
    let server = tokio::spawn(serve(handle, calls));
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        reconcile_service(Arc::new(object.clone()), ctx.clone()),
    )
    .await
    .expect("the pass made no unexpected request");
    let (handle, bodies) = server.await.expect("every expected request came");
    (result, handle, bodies)
}

fn deployment(name: &str, uid: &str, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": NS,
            "ownerReferences": [{
                "apiVersion": "serving.inferd.dev/v1alpha1", "kind": "InferenceService",
                "name": "iris", "uid": uid, "controller": true,
            }],
        },
        "status": { "readyReplicas": ready },
    })
}

#[tokio::test]
async fn a_new_service_is_created() {
    let (ctx, handle) = context();
    let object = isvc("s3://models/iris/1", 1);
    let status = format!("{ISVC}/status");
    let calls = vec![
        list(json!([])),
        apply(format!("{DEPLOYMENTS}/iris-00001")),
        apply(format!("{SERVICES}/iris-00001")),
        apply(format!("{SERVICES}/iris")),
        Call {
            reply: Some(json!(object)),
            ..apply(status)
        },
    ];
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));

    let d = &bodies[1];
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["metadata"]["namespace"], NS);
    assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(bodies[3]["kind"], "Service");
    let body = &bodies[4];
    assert_eq!(body["apiVersion"], "serving.inferd.dev/v1alpha1");
    assert_eq!(body["kind"], "InferenceService");
    let s = &body["status"];
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(s["url"], "http://iris.ml.svc.cluster.local");
    assert_eq!(s["latestCreatedRevision"], "iris-00001");
    assert_eq!(s["revisions"][0]["name"], "iris-00001");
    assert_eq!(s["revisions"][0]["number"], 1);
    assert_eq!(s["revisions"][0]["createdAt"], 1_700_000_000);
    assert_eq!(
        s["revisions"][0]["template"]["model"]["storageUri"],
        "s3://models/iris/1"
    );
    assert_eq!(
        s["traffic"],
        json!([{
            "revisionName": "iris-00001", "percent": 100, "latestRevision": true, "tag": "latest",
        }])
    );
    let ready = s["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned();
    assert_eq!(
        ready,
        Some(json!({
            "type": "Ready", "status": "False", "reason": "NotReady",
            "lastTransitionTime": "2023-11-14T22:13:20Z",
        }))
    );
}

#[tokio::test]
async fn a_spec_change_adds_a_revision_beside_the_serving_one() {
    let mut object = isvc("s3://models/iris/1", 1);
    let first = reconcile(&object, &[], clock(), &ReconcileOptions::default()).expect("first");
    object.status = Some(first.status);
    let ready = ObservedDeployment {
        name: "iris-00001".to_owned(),
        ready_replicas: 1,
        failed: None,
    };
    let second = reconcile(&object, &[ready], clock(), &ReconcileOptions::default()).expect("2");
    object.status = Some(second.status);
    object.spec.predictor.model.storage_uri = "s3://models/iris/2".to_owned();
    object.metadata.generation = Some(2);

    let (ctx, handle) = context();
    let calls = vec![
        // A Deployment with the label but another owner is left alone.
        list(json!([
            deployment("iris-00001", "uid-1", 1),
            deployment("iris-00009", "someone-else", 1),
        ])),
        apply(format!("{DEPLOYMENTS}/iris-00001")),
        apply(format!("{SERVICES}/iris-00001")),
        apply(format!("{DEPLOYMENTS}/iris-00002")),
        apply(format!("{SERVICES}/iris-00002")),
        apply(format!("{SERVICES}/iris")),
        Call {
            reply: Some(json!(object)),
            ..apply(format!("{ISVC}/status"))
        },
    ];
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));
    assert_eq!(
        bodies[3]["spec"]["template"]["spec"]["initContainers"][0]["args"]
            .as_array()
            .map(|a| a.iter().any(|x| x == "s3://models/iris/2")),
        Some(true)
    );
    let s = &bodies[6]["status"];
    assert_eq!(s["observedGeneration"], 2);
    assert_eq!(s["latestCreatedRevision"], "iris-00002");
    assert_eq!(s["latestReadyRevision"], "iris-00001");
    assert_eq!(s["rolledOut"], json!(["iris-00001"]));
    assert_eq!(s["revisions"][1]["name"], "iris-00002");
    assert_eq!(
        s["traffic"],
        json!([
            { "revisionName": "iris-00001", "percent": 100, "latestRevision": false, "tag": "prev" },
            { "revisionName": "iris-00002", "percent": 0, "latestRevision": true, "tag": "latest" },
        ])
    );
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let mut object = isvc("s3://models/iris/1", 1);
    let first = reconcile(&object, &[], clock(), &ReconcileOptions::default()).expect("first");
    object.status = Some(first.status);
    let (ctx, handle) = context();
    let calls = vec![
        list(json!([deployment("iris-00001", "uid-1", 0)])),
        apply(format!("{DEPLOYMENTS}/iris-00001")),
        apply(format!("{SERVICES}/iris-00001")),
        apply(format!("{SERVICES}/iris")),
    ];
    let (result, _) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));
}

#[tokio::test]
async fn retired_revisions_beyond_the_retention_are_deleted() {
    let options = ReconcileOptions {
        retired_kept: 0,
        ..ReconcileOptions::default()
    };
    let mut object = isvc("s3://models/iris/1", 1);
    let ready = |name: &str| ObservedDeployment {
        name: name.to_owned(),
        ready_replicas: 1,
        failed: None,
    };
    let a = reconcile(&object, &[ready("iris-00001")], clock(), &options).expect("1");
    object.status = Some(a.status);
    object.spec.predictor.model.storage_uri = "s3://models/iris/2".to_owned();
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Arc::new(Context::with_clock(
        Client::new(service, NS),
        options,
        clock,
    ));
    let delete = |path: String| Call {
        method: "DELETE",
        path,
        apply: false,
        status: 404,
        reply: Some(json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": "not found", "reason": "NotFound", "code": 404,
        })),
    };
    // Both revisions ready: the new one takes everything and the old one's
    // objects go (already gone is fine).
    let calls = vec![
        list(json!([
            deployment("iris-00001", "uid-1", 1),
            deployment("iris-00002", "uid-1", 1),
        ])),
        apply(format!("{DEPLOYMENTS}/iris-00002")),
        apply(format!("{SERVICES}/iris-00002")),
        apply(format!("{SERVICES}/iris")),
        delete(format!("{DEPLOYMENTS}/iris-00001")),
        delete(format!("{SERVICES}/iris-00001")),
        Call {
            reply: Some(json!(object)),
            ..apply(format!("{ISVC}/status"))
        },
    ];
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));
    let s = &bodies[6]["status"];
    assert_eq!(
        s["revisions"]
            .as_array()
            .map(|r| r.iter().map(|r| r["name"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("iris-00002")])
    );
}

#[tokio::test]
async fn failures_are_retried_with_backoff() {
    let (ctx, handle) = context();
    let object = isvc("s3://models/iris/1", 1);
    let arc = Arc::new(object.clone());
    let status = |result: &Result<Action>| match result {
        Err(Error::Kube(kube::Error::Api(status))) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    };
    let all_applies = || {
        vec![
            list(json!([])),
            apply(format!("{DEPLOYMENTS}/iris-00001")),
            apply(format!("{SERVICES}/iris-00001")),
            apply(format!("{SERVICES}/iris")),
        ]
    };

    // A 500 on the first apply fails the pass: retried after a second.
    let calls = vec![
        list(json!([])),
        failing(
            apply(format!("{DEPLOYMENTS}/iris-00001")),
            500,
            "InternalError",
        ),
    ];
    let (result, handle, _) = pass_with(&object, &ctx, handle, calls).await;
    assert_eq!(status(&result), 500);
    let err = result.expect_err("an error");
    assert_eq!(
        error_policy(arc.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );

    // The retry meets a 409 on the status: the next one waits twice as long.
    let mut calls = all_applies();
    calls.push(failing(apply(format!("{ISVC}/status")), 409, "Conflict"));
    let (result, handle, _) = pass_with(&object, &ctx, handle, calls).await;
    assert_eq!(status(&result), 409);
    let err = result.expect_err("an error");
    assert_eq!(
        error_policy(arc.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );

    // The third try succeeds, which resets the backoff.
    let mut calls = all_applies();
    calls.push(Call {
        reply: Some(json!(object)),
        ..apply(format!("{ISVC}/status"))
    });
    let (result, _, _) = pass_with(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));
    assert_eq!(
        error_policy(arc, &err, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn the_backoff_is_bounded() {
    let (ctx, _handle) = context();
    let object = Arc::new(isvc("s3://models/iris/1", 1));
    let err = Error::MissingField("x");
    let delays: Vec<Action> = (0..12)
        .map(|_| error_policy(object.clone(), &err, ctx.clone()))
        .collect();
    assert_eq!(delays[8], Action::requeue(Duration::from_secs(256)));
    assert_eq!(delays[9], Action::requeue(RETRY_MAX));
    assert_eq!(delays[11], Action::requeue(RETRY_MAX));
}
