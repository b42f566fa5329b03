//! The controller's passes against a mock API server that answers an exact,
//! expected sequence of requests (kube-rs' and controller-rs' approach).

use std::time::UNIX_EPOCH;

use http::{Request, Response};
use inferd_api::{InferenceServiceSpec, ModelFormat, ModelSpec, PredictorSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::client::Body;
use serde_json::Value;

use super::*;
use crate::reconcile::reconcile;

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
            finalizers: Some(vec![FINALIZER.to_owned()]),
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

const HPAS: &str = "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers";

/// What every pass starts with: the service's Deployments (`items`) and
/// HPAs (none) listed, then the namespace's router applied.
fn start(items: Value) -> Vec<Call> {
    vec![
        list(items),
        Call {
            path: HPAS.to_owned(),
            reply: Some(json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList",
                "metadata": {}, "items": [],
            })),
            ..list(json!([]))
        },
        apply("/api/v1/namespaces/ml/serviceaccounts/inferd-router".to_owned()),
        apply(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/rolebindings/inferd-router"
                .to_owned(),
        ),
        apply(format!("{DEPLOYMENTS}/inferd-router")),
        apply(format!("{SERVICES}/inferd-router")),
    ]
}

/// Calls before the service's own objects in [`start`].
const START: usize = 6;

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
        // The service's own objects are listed by its label.
        if call.method == "GET" && !call.path.ends_with("/inferenceservices") {
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
    let mut calls = start(json!([]));
    calls.extend(vec![
        apply(format!("{DEPLOYMENTS}/iris-00001")),
        apply(format!("{SERVICES}/iris-00001")),
        apply(format!("{SERVICES}/iris")),
        Call {
            reply: Some(json!(object)),
            ..apply(status)
        },
    ]);
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));

    let router = &bodies[4];
    assert_eq!(router["kind"], "Deployment");
    assert_eq!(
        router["spec"]["template"]["spec"]["serviceAccountName"],
        "inferd-router"
    );
    assert_eq!(bodies[3]["roleRef"]["name"], "inferd-router");
    let d = &bodies[START];
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["metadata"]["namespace"], NS);
    assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(bodies[START + 2]["kind"], "Service");
    let body = &bodies[START + 3];
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
        ..ObservedDeployment::default()
    };
    let second = reconcile(&object, &[ready], clock(), &ReconcileOptions::default()).expect("2");
    object.status = Some(second.status);
    object.spec.predictor.model.storage_uri = "s3://models/iris/2".to_owned();
    object.metadata.generation = Some(2);

    let (ctx, handle) = context();
    // A Deployment with the label but another owner is left alone.
    let mut calls = start(json!([
        deployment("iris-00001", "uid-1", 1),
        deployment("iris-00009", "someone-else", 1),
    ]));
    calls.extend(vec![
        apply(format!("{DEPLOYMENTS}/iris-00001")),
        apply(format!("{SERVICES}/iris-00001")),
        apply(format!("{DEPLOYMENTS}/iris-00002")),
        apply(format!("{SERVICES}/iris-00002")),
        apply(format!("{SERVICES}/iris")),
        Call {
            reply: Some(json!(object)),
            ..apply(format!("{ISVC}/status"))
        },
    ]);
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));
    assert_eq!(
        bodies[START + 2]["spec"]["template"]["spec"]["initContainers"][0]["args"]
            .as_array()
            .map(|a| a.iter().any(|x| x == "s3://models/iris/2")),
        Some(true)
    );
    let s = &bodies[START + 5]["status"];
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
    let mut calls = start(json!([deployment("iris-00001", "uid-1", 0)]));
    calls.extend(vec![
        apply(format!("{DEPLOYMENTS}/iris-00001")),
        apply(format!("{SERVICES}/iris-00001")),
        apply(format!("{SERVICES}/iris")),
    ]);
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
        ..ObservedDeployment::default()
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
    let mut calls = start(json!([
        deployment("iris-00001", "uid-1", 1),
        deployment("iris-00002", "uid-1", 1),
    ]));
    calls.extend(vec![
        apply(format!("{DEPLOYMENTS}/iris-00002")),
        apply(format!("{SERVICES}/iris-00002")),
        apply(format!("{SERVICES}/iris")),
        delete(format!("{DEPLOYMENTS}/iris-00001")),
        delete(format!("{SERVICES}/iris-00001")),
        Call {
            reply: Some(json!(object)),
            ..apply(format!("{ISVC}/status"))
        },
    ]);
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));
    let s = &bodies[START + 5]["status"];
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
        let mut calls = start(json!([]));
        calls.extend(vec![
            apply(format!("{DEPLOYMENTS}/iris-00001")),
            apply(format!("{SERVICES}/iris-00001")),
            apply(format!("{SERVICES}/iris")),
        ]);
        calls
    };

    // A 500 on the first apply fails the pass: retried after a second.
    let mut calls = start(json!([]));
    calls.extend(vec![failing(
        apply(format!("{DEPLOYMENTS}/iris-00001")),
        500,
        "InternalError",
    )]);
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

#[tokio::test]
async fn a_new_service_gets_the_finalizer_first() {
    let (ctx, handle) = context();
    let mut object = isvc("s3://models/iris/1", 1);
    object.metadata.finalizers = None;
    let calls = vec![Call {
        method: "PATCH",
        path: ISVC.to_owned(),
        apply: false,
        status: 200,
        reply: Some(json!(isvc("s3://models/iris/1", 1))),
    }];
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::await_change());
    // A JSON patch that adds the finalizer, guarded by a test of the list.
    let ops = bodies[0].as_array().expect("a JSON patch");
    assert!(
        ops.iter()
            .any(|op| op["op"] == "add" && op["value"] == json!([FINALIZER])),
        "{ops:?}"
    );
}

fn deleting(object: &mut InferenceServiceObject) {
    object.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_100).expect("time"),
        ));
}

fn isvc_list(items: Value) -> Call {
    Call {
        method: "GET",
        path: "/apis/serving.inferd.dev/v1alpha1/namespaces/ml/inferenceservices".to_owned(),
        apply: false,
        status: 200,
        reply: Some(json!({
            "apiVersion": "serving.inferd.dev/v1alpha1", "kind": "InferenceServiceList",
            "metadata": {}, "items": items,
        })),
    }
}

fn remove_finalizer() -> Call {
    Call {
        method: "PATCH",
        path: ISVC.to_owned(),
        apply: false,
        status: 200,
        reply: Some(json!(isvc("s3://models/iris/1", 1))),
    }
}

#[tokio::test]
async fn deleting_the_last_service_deletes_the_namespace_router() {
    let (ctx, handle) = context();
    let mut object = isvc("s3://models/iris/1", 1);
    deleting(&mut object);
    let gone = |path: String| Call {
        method: "DELETE",
        path,
        apply: false,
        status: 200,
        reply: Some(json!({"apiVersion": "v1", "kind": "Status", "status": "Success"})),
    };
    let calls = vec![
        isvc_list(json!([object])),
        gone(format!("{DEPLOYMENTS}/inferd-router")),
        gone(format!("{SERVICES}/inferd-router")),
        gone(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/rolebindings/inferd-router"
                .to_owned(),
        ),
        gone("/api/v1/namespaces/ml/serviceaccounts/inferd-router".to_owned()),
        remove_finalizer(),
    ];
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::await_change());
    let ops = bodies[5].as_array().expect("a JSON patch");
    assert!(ops.iter().any(|op| op["op"] == "remove"), "{ops:?}");
}

#[tokio::test]
async fn deleting_one_of_several_services_keeps_the_router() {
    let (ctx, handle) = context();
    let mut object = isvc("s3://models/iris/1", 1);
    deleting(&mut object);
    let mut other = isvc("s3://models/other/1", 1);
    other.metadata.name = Some("other".to_owned());
    other.metadata.uid = Some("uid-2".to_owned());
    let calls = vec![isvc_list(json!([object, other])), remove_finalizer()];
    let (result, _) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::await_change());
}

/// Two passes as the controller would run them: the first revision
/// created, then seen with `ready` ready replicas.
fn serving(object: &mut InferenceServiceObject, ready: u32) {
    let first = reconcile(object, &[], clock(), &ReconcileOptions::default()).expect("1");
    object.status = Some(first.status);
    let ready = ObservedDeployment {
        name: "iris-00001".to_owned(),
        ready_replicas: ready,
        ..ObservedDeployment::default()
    };
    let second = reconcile(object, &[ready], clock(), &ReconcileOptions::default()).expect("2");
    object.status = Some(second.status);
}

#[tokio::test]
async fn an_hpa_service_gets_an_hpa_and_a_stale_one_goes() {
    let (ctx, handle) = context();
    let mut object = isvc("s3://models/iris/1", 1);
    object.spec.predictor.autoscaler_class = Some(inferd_api::AutoscalerClass::Hpa);
    object.spec.predictor.min_replicas = Some(2);
    object.spec.predictor.max_replicas = Some(6);
    object.spec.predictor.scale_target = Some(60.0);
    serving(&mut object, 2);

    let mut calls = start(json!([deployment("iris-00001", "uid-1", 2)]));
    // An HPA of a revision this service no longer has.
    calls[1].reply = Some(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList", "metadata": {},
        "items": [{
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": "iris-00000", "namespace": NS,
                "ownerReferences": [{
                    "apiVersion": "serving.inferd.dev/v1alpha1", "kind": "InferenceService",
                    "name": "iris", "uid": "uid-1", "controller": true,
                }],
            },
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "iris-00000"},
                "maxReplicas": 3,
            },
        }],
    }));
    calls.extend(vec![
        apply(format!("{DEPLOYMENTS}/iris-00001")),
        apply(format!("{SERVICES}/iris-00001")),
        apply(format!("{HPAS}/iris-00001")),
        apply(format!("{SERVICES}/iris")),
        Call {
            method: "DELETE",
            path: format!("{HPAS}/iris-00000"),
            apply: false,
            status: 200,
            reply: Some(json!({"apiVersion": "v1", "kind": "Status", "status": "Success"})),
        },
    ]);
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));
    // The Deployment leaves replicas to the HPA.
    assert_eq!(bodies[START]["spec"].get("replicas"), None);
    let hpa = &bodies[START + 2];
    assert_eq!(hpa["kind"], "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 6);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "iris-00001");
}

#[tokio::test]
async fn the_autoscalers_decision_sets_the_replicas() {
    let (ctx, handle) = context();
    let mut object = isvc("s3://models/iris/1", 1);
    object.spec.predictor.min_replicas = Some(0);
    serving(&mut object, 1);
    // Idle long enough: the autoscaler decides zero.
    let services = [Arc::new(object.clone())];
    let mut now = Duration::ZERO;
    let mut load = crate::autoscale::NamespaceLoad::default();
    load.add(&std::collections::BTreeMap::from([(
        "iris".to_owned(),
        vec![inferd_router::RevisionConcurrency {
            revision: "iris-00001".to_owned(),
            in_flight: 0,
            held: 0,
            replicas: 1,
            requests_total: 0,
        }],
    )]));
    let loads = std::collections::BTreeMap::from([(NS.to_owned(), load)]);
    for _ in 0..60 {
        ctx.autoscaling().tick(now, &services, &loads);
        now += crate::autoscale::TICK;
    }
    assert_eq!(
        ctx.autoscaling().decided(NS, "iris").get("iris-00001"),
        Some(&0)
    );
    let mut calls = start(json!([deployment("iris-00001", "uid-1", 1)]));
    calls.extend(vec![
        apply(format!("{DEPLOYMENTS}/iris-00001")),
        apply(format!("{SERVICES}/iris-00001")),
        apply(format!("{SERVICES}/iris")),
    ]);
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));
    assert_eq!(bodies[START]["spec"]["replicas"], 0);
}

#[tokio::test]
async fn events_tell_what_changed() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Arc::new(
        Context::with_clock(Client::new(service, NS), ReconcileOptions::default(), clock)
            .with_events(Some("inferd-operator-0".to_owned())),
    );
    let object = isvc("s3://models/iris/1", 1);
    let event = || Call {
        method: "POST",
        path: "/apis/events.k8s.io/v1/namespaces/ml/events".to_owned(),
        apply: false,
        status: 201,
        reply: None,
    };
    let mut calls = start(json!([]));
    calls.extend(vec![
        apply(format!("{DEPLOYMENTS}/iris-00001")),
        apply(format!("{SERVICES}/iris-00001")),
        apply(format!("{SERVICES}/iris")),
        Call {
            reply: Some(json!(object)),
            ..apply(format!("{ISVC}/status"))
        },
        event(),
        event(),
    ]);
    let (result, bodies) = pass(&object, &ctx, handle, calls).await;
    assert_eq!(result.expect("pass"), Action::requeue(RESYNC));
    let reasons: Vec<&Value> = bodies[START + 4..].iter().map(|e| &e["reason"]).collect();
    assert_eq!(
        reasons,
        [&json!("RevisionCreated"), &json!("TrafficShifted")]
    );
    let created = &bodies[START + 4];
    assert_eq!(created["type"], "Normal");
    assert_eq!(created["regarding"]["kind"], "InferenceService");
    assert_eq!(created["regarding"]["name"], "iris");
    assert_eq!(created["reportingController"], "inferd-operator");
    assert_eq!(created["note"], "iris-00001 serves s3://models/iris/1");
}

#[test]
fn only_a_replica_that_never_led_stops_without_the_elector() {
    let (leader, leading) = tokio::sync::watch::channel(false);
    assert!(standby_may_stop(&leading));
    leader.send_replace(true);
    assert!(!standby_may_stop(&leading), "leading");
    // The controller stopped, the release is in flight: still not.
    leader.send_replace(false);
    assert!(!standby_may_stop(&leading), "led; releasing the Lease");
}
