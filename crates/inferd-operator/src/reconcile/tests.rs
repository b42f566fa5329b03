use std::time::Duration;

use inferd_api::{InferenceServiceSpec, ModelFormat, ModelSpec, PredictorSpec};
use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn isvc(uri: &str, generation: i64) -> InferenceServiceObject {
    InferenceServiceObject {
        api_version: inferd_api::API_VERSION.to_owned(),
        kind: inferd_api::KIND_INFERENCE_SERVICE.to_owned(),
        metadata: ObjectMeta {
            name: Some("iris".to_owned()),
            namespace: Some("ml".to_owned()),
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

fn ready(name: &str, n: u32) -> ObservedDeployment {
    ObservedDeployment {
        name: name.to_owned(),
        ready_replicas: n,
        failed: None,
        ..ObservedDeployment::default()
    }
}

/// (kind, name, replicas of a Deployment).
fn summary(actions: &Actions) -> Vec<(&'static str, String, Option<i32>)> {
    actions
        .apply
        .iter()
        .map(|o| {
            let replicas = match o {
                DesiredObject::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
                _ => None,
            };
            (o.kind(), o.name().to_owned(), replicas)
        })
        .collect()
}

fn traffic(status: &ServiceStatus) -> Vec<(String, u32, Option<String>)> {
    status
        .traffic
        .iter()
        .map(|t| (t.revision_name.clone(), t.percent, t.tag.clone()))
        .collect()
}

fn condition<'a>(status: &'a ServiceStatus, type_: &str) -> Option<&'a str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

fn revision_names(status: &ServiceStatus) -> Vec<&str> {
    status.revisions.iter().map(|r| r.name.as_str()).collect()
}

/// Runs a pass and stores its status in the object, as the controller's
/// status patch does.
fn pass(
    object: &mut InferenceServiceObject,
    observed: &[ObservedDeployment],
    secs: u64,
    options: &ReconcileOptions,
) -> Actions {
    let actions = reconcile(object, observed, at(secs), options).expect("reconcile");
    object.status = Some(actions.status.clone());
    actions
}

#[test]
fn a_new_service_gets_its_first_revision_and_objects() {
    let mut object = isvc("s3://models/iris/1", 1);
    let a = pass(&mut object, &[], T0, &ReconcileOptions::default());
    assert_eq!(
        summary(&a),
        [
            ("Deployment", "iris-00001".to_owned(), Some(1)),
            ("Service", "iris-00001".to_owned(), None),
            ("Service", "iris".to_owned(), None),
        ]
    );
    assert!(a.delete.is_empty());
    let s = &a.status;
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.url.as_deref(), Some("http://iris.ml.svc.cluster.local"));
    assert_eq!(revision_names(s), ["iris-00001"]);
    assert_eq!(s.revisions[0].created_at, T0);
    assert!(!s.revisions[0].ever_ready);
    assert_eq!(s.latest_created_revision.as_deref(), Some("iris-00001"));
    assert_eq!(s.latest_ready_revision, None);
    assert_eq!(
        traffic(s),
        [("iris-00001".to_owned(), 100, Some("latest".to_owned()))]
    );
    assert_eq!(condition(s, "Ready"), Some("False"));
    assert_eq!(condition(s, "PredictorReady"), Some("False"));
    assert_eq!(condition(s, "RoutesReady"), Some("True"));
    assert_eq!(
        s.model_status.as_ref().map(|m| m.state),
        Some(ModelState::Pending)
    );
    assert!(s.rolled_out.is_empty());
    let ready_time = s.conditions[2].last_transition_time.as_deref();
    assert_eq!(ready_time, Some("2023-11-14T22:13:20Z"));
}

#[test]
fn a_ready_revision_is_rolled_out_and_recorded() {
    let options = ReconcileOptions::default();
    let mut object = isvc("s3://models/iris/1", 1);
    pass(&mut object, &[], T0, &options);
    let a = pass(&mut object, &[ready("iris-00001", 1)], T0 + 30, &options);
    let s = &a.status;
    assert_eq!(condition(s, "Ready"), Some("True"));
    assert_eq!(condition(s, "PredictorReady"), Some("True"));
    assert_eq!(s.latest_ready_revision.as_deref(), Some("iris-00001"));
    assert_eq!(s.rolled_out, ["iris-00001"]);
    assert!(s.revisions[0].ever_ready);
    assert_eq!(
        s.model_status.as_ref().map(|m| m.state),
        Some(ModelState::Loaded)
    );
    // Ready changed: a new transition time; RoutesReady did not.
    assert_eq!(
        s.conditions[2].last_transition_time.as_deref(),
        Some("2023-11-14T22:13:50Z")
    );
    assert_eq!(
        s.conditions[1].last_transition_time.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
}

#[test]
fn a_revision_scaled_to_zero_after_serving_stays_ready() {
    let options = ReconcileOptions::default();
    let mut object = isvc("s3://models/iris/1", 1);
    object.spec.predictor.min_replicas = Some(0);
    pass(&mut object, &[], T0, &options);
    pass(&mut object, &[ready("iris-00001", 1)], T0 + 1, &options);
    let ready_since = object.status.as_ref().expect("status").conditions[2]
        .last_transition_time
        .clone();

    // The autoscaler takes it to zero: no replica is ready, and none is
    // wanted. The router holds requests while it scales up again.
    let at_zero = ObservedDeployment {
        replicas: Some(0),
        ..ready("iris-00001", 0)
    };
    let idle = Inputs {
        decided: BTreeMap::from([("iris-00001".to_owned(), 0)]),
        ..Inputs::default()
    };
    let a = reconcile_scaled(&object, &[at_zero], &idle, at(T0 + 60), &options).expect("reconcile");
    assert_eq!(
        summary(&a)[0],
        ("Deployment", "iris-00001".to_owned(), Some(0))
    );
    let s = &a.status;
    assert_eq!(condition(s, "Ready"), Some("True"));
    assert_eq!(condition(s, "PredictorReady"), Some("True"));
    assert_eq!(s.conditions[2].last_transition_time, ready_since);
    assert!(!a.events.iter().any(|e| e.reason == "NotReady"));

    // Replicas wanted and none ready (they crashed): not ready.
    let lost = ObservedDeployment {
        replicas: Some(1),
        ..ready("iris-00001", 0)
    };
    let busy = Inputs {
        decided: BTreeMap::from([("iris-00001".to_owned(), 1)]),
        ..Inputs::default()
    };
    let a = reconcile_scaled(&object, &[lost], &busy, at(T0 + 90), &options).expect("reconcile");
    assert_eq!(condition(&a.status, "Ready"), Some("False"));
}

#[test]
fn a_template_change_makes_a_revision_and_rolls_out_when_ready() {
    let options = ReconcileOptions::default();
    let mut object = isvc("s3://models/iris/1", 1);
    pass(&mut object, &[], T0, &options);
    pass(&mut object, &[ready("iris-00001", 1)], T0 + 1, &options);

    object.spec.predictor.model.storage_uri = "s3://models/iris/2".to_owned();
    object.metadata.generation = Some(2);
    let a = pass(&mut object, &[ready("iris-00001", 1)], T0 + 2, &options);
    assert_eq!(revision_names(&a.status), ["iris-00001", "iris-00002"]);
    assert_eq!(a.status.observed_generation, Some(2));
    assert_eq!(
        traffic(&a.status),
        [
            ("iris-00001".to_owned(), 100, Some("prev".to_owned())),
            ("iris-00002".to_owned(), 0, Some("latest".to_owned())),
        ]
    );
    assert_eq!(
        summary(&a)
            .into_iter()
            .filter(|o| o.0 == "Deployment")
            .collect::<Vec<_>>(),
        [
            ("Deployment", "iris-00001".to_owned(), Some(1)),
            ("Deployment", "iris-00002".to_owned(), Some(1)),
        ]
    );
    assert_eq!(condition(&a.status, "Ready"), Some("True"));

    // The new revision is ready: it takes everything, the old one is kept
    // at zero replicas.
    let observed = [ready("iris-00001", 1), ready("iris-00002", 1)];
    let a = pass(&mut object, &observed, T0 + 3, &options);
    assert_eq!(
        traffic(&a.status),
        [("iris-00002".to_owned(), 100, Some("latest".to_owned()))]
    );
    assert_eq!(
        summary(&a),
        [
            ("Deployment", "iris-00002".to_owned(), Some(1)),
            ("Service", "iris-00002".to_owned(), None),
            ("Deployment", "iris-00001".to_owned(), Some(0)),
            ("Service", "iris-00001".to_owned(), None),
            ("Service", "iris".to_owned(), None),
        ]
    );
    assert!(a.delete.is_empty());
    assert_eq!(a.status.rolled_out, ["iris-00001", "iris-00002"]);
}

#[test]
fn a_scaling_change_makes_no_revision() {
    let options = ReconcileOptions::default();
    let mut object = isvc("s3://models/iris/1", 1);
    pass(&mut object, &[], T0, &options);
    object.spec.predictor.min_replicas = Some(2);
    object.spec.predictor.max_replicas = Some(3);
    object.metadata.generation = Some(2);
    let a = pass(&mut object, &[], T0 + 1, &options);
    assert_eq!(revision_names(&a.status), ["iris-00001"]);
    assert_eq!(
        summary(&a)[0],
        ("Deployment", "iris-00001".to_owned(), Some(2))
    );
}

#[test]
fn retired_revisions_beyond_the_retention_are_deleted() {
    let options = ReconcileOptions {
        retired_kept: 1,
        ..ReconcileOptions::default()
    };
    let mut object = isvc("s3://models/iris/1", 1);
    let mut observed = Vec::new();
    for n in 1..=3u32 {
        if n > 1 {
            object.spec.predictor.model.storage_uri = format!("s3://models/iris/{n}");
            object.metadata.generation = Some(i64::from(n));
        }
        pass(&mut object, &observed, T0 + u64::from(n), &options);
        observed.push(ready(&revision_name("iris", n), 1));
    }
    let a = pass(&mut object, &observed, T0 + 10, &options);
    assert_eq!(a.delete, ["iris-00001"]);
    assert_eq!(revision_names(&a.status), ["iris-00002", "iris-00003"]);
    assert_eq!(a.status.rolled_out, ["iris-00002", "iris-00003"]);
    let deployments: Vec<_> = summary(&a)
        .into_iter()
        .filter(|o| o.0 == "Deployment")
        .collect();
    assert_eq!(
        deployments,
        [
            ("Deployment", "iris-00003".to_owned(), Some(1)),
            ("Deployment", "iris-00002".to_owned(), Some(0)),
        ]
    );
    // Numbering goes on from the newest recorded revision.
    object.spec.predictor.model.storage_uri = "s3://models/iris/4".to_owned();
    let a = pass(&mut object, &observed[1..], T0 + 11, &options);
    assert_eq!(
        revision_names(&a.status),
        ["iris-00002", "iris-00003", "iris-00004"]
    );
}

#[test]
fn a_canary_splits_the_traffic() {
    let options = ReconcileOptions::default();
    let mut object = isvc("s3://models/iris/1", 1);
    pass(&mut object, &[], T0, &options);
    pass(&mut object, &[ready("iris-00001", 1)], T0 + 1, &options);
    object.spec.predictor.model.storage_uri = "s3://models/iris/2".to_owned();
    object.spec.predictor.canary_traffic_percent = Some(20);
    let observed = [ready("iris-00001", 1), ready("iris-00002", 1)];
    pass(&mut object, &observed[..1], T0 + 2, &options);
    let a = pass(&mut object, &observed, T0 + 3, &options);
    assert_eq!(
        traffic(&a.status),
        [
            ("iris-00001".to_owned(), 80, Some("prev".to_owned())),
            ("iris-00002".to_owned(), 20, Some("latest".to_owned())),
        ]
    );
    assert_eq!(a.status.rolled_out, ["iris-00001"]);
    assert_eq!(condition(&a.status, "Ready"), Some("True"));
}

#[test]
fn a_rollback_after_promotion_returns_the_traffic_to_the_previous_revision() {
    let options = ReconcileOptions::default();
    let mut object = isvc("s3://models/iris/1", 1);
    pass(&mut object, &[], T0, &options);
    pass(&mut object, &[ready("iris-00001", 1)], T0 + 1, &options);
    object.spec.predictor.model.storage_uri = "s3://models/iris/2".to_owned();
    object.spec.predictor.canary_traffic_percent = Some(20);
    let both = [ready("iris-00001", 1), ready("iris-00002", 1)];
    pass(&mut object, &both, T0 + 2, &options);
    // Promote: the old revision is scaled to zero, not deleted.
    object.spec.predictor.canary_traffic_percent = None;
    let a = pass(&mut object, &both, T0 + 3, &options);
    assert_eq!(
        traffic(&a.status),
        [("iris-00002".to_owned(), 100, Some("latest".to_owned()))]
    );
    // Roll back with 0%: the previous rollout takes everything, and keeps
    // it while its Deployment scales back up.
    object.spec.predictor.canary_traffic_percent = Some(0);
    for (secs, observed) in [(4, &[ready("iris-00002", 1)][..]), (5, &both[..])] {
        let a = pass(&mut object, observed, T0 + secs, &options);
        assert_eq!(
            traffic(&a.status),
            [
                ("iris-00001".to_owned(), 100, Some("prev".to_owned())),
                ("iris-00002".to_owned(), 0, Some("latest".to_owned())),
            ]
        );
        assert_eq!(
            a.status.rolled_out.last().map(String::as_str),
            Some("iris-00001")
        );
    }
}

#[test]
fn a_failing_new_revision_leaves_the_old_one_serving() {
    let options = ReconcileOptions::default();
    let mut object = isvc("s3://models/iris/1", 1);
    pass(&mut object, &[], T0, &options);
    pass(&mut object, &[ready("iris-00001", 1)], T0 + 1, &options);
    object.spec.predictor.model.storage_uri = "s3://models/iris/bad".to_owned();
    let failed = ObservedDeployment {
        name: "iris-00002".to_owned(),
        ready_replicas: 0,
        failed: Some("ProgressDeadlineExceeded: too slow".to_owned()),
        ..ObservedDeployment::default()
    };
    pass(&mut object, &[ready("iris-00001", 1)], T0 + 2, &options);
    let a = pass(
        &mut object,
        &[ready("iris-00001", 1), failed],
        T0 + 3,
        &options,
    );
    let s = &a.status;
    assert_eq!(condition(s, "Ready"), Some("True"));
    assert_eq!(condition(s, "LatestRevisionReady"), Some("False"));
    let model = s.model_status.clone().expect("model status");
    assert_eq!(model.state, ModelState::FailedToLoad);
    assert_eq!(
        model.reason.as_deref(),
        Some("ProgressDeadlineExceeded: too slow")
    );
    assert_eq!(
        traffic(s),
        [
            ("iris-00001".to_owned(), 100, Some("prev".to_owned())),
            ("iris-00002".to_owned(), 0, Some("latest".to_owned())),
        ]
    );
}

#[test]
fn an_object_without_uid_or_namespace_is_refused() {
    let mut object = isvc("s3://models/iris/1", 1);
    object.metadata.uid = None;
    let err = reconcile(&object, &[], at(T0), &ReconcileOptions::default());
    assert!(matches!(err, Err(Error::MissingField("metadata.uid"))));
    object.metadata.uid = Some("u".to_owned());
    object.metadata.namespace = None;
    let err = reconcile(&object, &[], at(T0), &ReconcileOptions::default());
    assert!(matches!(
        err,
        Err(Error::MissingField("metadata.namespace"))
    ));
}

#[test]
fn deployments_are_observed_with_their_failure() {
    use k8s_openapi::api::apps::v1::DeploymentCondition;
    let mut d = Deployment {
        metadata: ObjectMeta {
            name: Some("iris-00001".to_owned()),
            ..ObjectMeta::default()
        },
        ..Deployment::default()
    };
    assert_eq!(ObservedDeployment::of(&d), Some(ready("iris-00001", 0)));
    d.status = Some(DeploymentStatus {
        ready_replicas: Some(2),
        conditions: Some(vec![DeploymentCondition {
            type_: "Progressing".to_owned(),
            status: "False".to_owned(),
            reason: Some("ProgressDeadlineExceeded".to_owned()),
            message: Some("ReplicaSet has timed out progressing.".to_owned()),
            ..DeploymentCondition::default()
        }]),
        ..DeploymentStatus::default()
    });
    let o = ObservedDeployment::of(&d).expect("named");
    assert_eq!(o.ready_replicas, 2);
    assert_eq!(
        o.failed.as_deref(),
        Some("ProgressDeadlineExceeded: ReplicaSet has timed out progressing.")
    );
    d.metadata.name = None;
    assert_eq!(ObservedDeployment::of(&d), None);
}

#[test]
fn times_are_written_as_kubernetes_does() {
    assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(at(T0)), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
}

#[test]
fn the_status_fits_the_crd_schema() {
    let options = ReconcileOptions::default();
    let mut object = isvc("s3://models/iris/1", 1);
    object.spec.predictor.min_replicas = Some(2);
    pass(&mut object, &[], T0, &options);
    object.spec.predictor.model.storage_uri = "s3://models/iris/2".to_owned();
    pass(&mut object, &[ready("iris-00001", 1)], T0 + 1, &options);
    let doc = serde_json::to_value(&object).expect("json");
    let violations = crate::structural::violations(&crate::crd::structural_schema(), &doc);
    assert_eq!(violations, Vec::<String>::new(), "{doc}");
    assert_eq!(doc["status"]["revisions"].as_array().map(Vec::len), Some(2));
}
