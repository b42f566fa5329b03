//! The desired objects of representative services, as YAML snapshots, and
//! the invariants that hold for every one of them.

mod support;

use std::collections::BTreeMap;

use inferd_api::{
    EnvVar, InferenceService, ModelFormat, ModelSpec, OnnxBackend, PredictorSpec, Quantity,
    Resources, RuntimeOptions, load_inference_services,
};
use inferd_control::service::{RevisionObserved, ServiceRecord, TrafficPlan, plan_traffic};
use inferd_operator::{
    ANNOTATION_STORAGE_SECRET, DesiredObject, Error, OperatorOptions, desired_objects, to_yaml,
};
use support::{assert_snapshot, repo_file};

const UID: &str = "0b6f3c8e-5d2a-4f1b-9c7e-2a1d3e4f5a6b";

fn options() -> OperatorOptions {
    OperatorOptions {
        image: "ghcr.io/inferd/inferd:test".to_owned(),
        ..OperatorOptions::default()
    }
}

fn example(name: &str) -> InferenceService {
    let path = repo_file(name);
    let text = std::fs::read_to_string(&path).expect("example");
    let mut services = load_inference_services(&text).expect("valid example");
    let mut isvc = services.remove(0);
    isvc.metadata.namespace = Some("models".to_owned());
    isvc
}

fn ready(names: &[&str]) -> BTreeMap<String, RevisionObserved> {
    names
        .iter()
        .map(|n| {
            (
                (*n).to_owned(),
                RevisionObserved {
                    ready_replicas: 1,
                    ever_ready: true,
                    failed: None,
                },
            )
        })
        .collect()
}

/// A service created from `isvc` and planned with its first revision ready.
fn single(isvc: InferenceService) -> (ServiceRecord, TrafficPlan) {
    let (mut record, _) = ServiceRecord::create(isvc, 1_700_000_000);
    let name = record.revisions[0].name.clone();
    let plan = plan_traffic(&record, &ready(&[&name]));
    record.record_rollout(&plan);
    (record, plan)
}

fn objects(
    record: &ServiceRecord,
    plan: &TrafficPlan,
    replicas: &[(&str, u32)],
) -> Vec<DesiredObject> {
    let replicas = replicas
        .iter()
        .map(|(n, c)| ((*n).to_owned(), *c))
        .collect();
    let objects = desired_objects(
        &record.spec,
        UID,
        plan,
        &record.revisions,
        &replicas,
        &options(),
    )
    .expect("objects");
    check_invariants(&objects, &record.spec);
    objects
}

/// What must hold for any service: owners, selectors matching pod labels,
/// hardened containers, probes.
fn check_invariants(objects: &[DesiredObject], isvc: &InferenceService) {
    for object in objects {
        let meta = match object {
            DesiredObject::Deployment(d) => &d.metadata,
            DesiredObject::Service(s) => &s.metadata,
        };
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.uid, UID);
        assert_eq!(owner.name, isvc.metadata.name);
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.namespace, isvc.metadata.namespace);
        let DesiredObject::Deployment(d) = object else {
            continue;
        };
        let spec = d.spec.as_ref().expect("spec");
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("pod labels");
        for (k, v) in spec.selector.match_labels.iter().flatten() {
            assert_eq!(pod_labels.get(k), Some(v), "selector {k} on the pods");
        }
        let pod = spec.template.spec.as_ref().expect("pod spec");
        let all = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten());
        for c in all {
            let sc = c.security_context.as_ref().expect("securityContext");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
            let drop = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
            assert_eq!(drop, Some(vec!["ALL".to_owned()]), "{}", c.name);
        }
        let server = &pod.containers[0];
        let ready = server
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref());
        assert_eq!(
            ready.and_then(|h| h.path.as_deref()),
            Some("/v2/health/ready")
        );
        let live = server
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref());
        assert_eq!(
            live.and_then(|h| h.path.as_deref()),
            Some("/v2/health/live")
        );
    }
}

fn names(objects: &[DesiredObject]) -> Vec<String> {
    objects
        .iter()
        .map(|o| format!("{}/{}", o.kind(), o.name()))
        .collect()
}

fn snapshot(name: &str, objects: &[DesiredObject]) {
    assert_snapshot(name, &to_yaml(objects).expect("yaml"));
}

#[test]
fn plain() {
    let (record, plan) = single(example("examples/iris.yaml"));
    let objects = objects(&record, &plan, &[("iris-00001", 1)]);
    assert_eq!(
        names(&objects),
        [
            "Deployment/iris-00001",
            "Service/iris-00001",
            "Service/iris"
        ]
    );
    snapshot("plain.yaml", &objects);
}

#[test]
fn canary_20_percent_with_two_revisions() {
    let (mut record, plan) = single(example("examples/iris.yaml"));
    assert_eq!(plan.percent("iris-00001"), 100);
    record.apply(example("examples/iris-v2.yaml"), 1_700_000_100);
    let plan = plan_traffic(&record, &ready(&["iris-00001", "iris-00002"]));
    assert_eq!(plan.percent("iris-00001"), 80);
    assert_eq!(plan.percent("iris-00002"), 20);
    let objects = objects(&record, &plan, &[("iris-00001", 3), ("iris-00002", 1)]);
    assert_eq!(
        names(&objects),
        [
            "Deployment/iris-00001",
            "Service/iris-00001",
            "Deployment/iris-00002",
            "Service/iris-00002",
            "Service/iris"
        ]
    );
    snapshot("canary.yaml", &objects);
}

#[test]
fn gpu() {
    let mut model = ModelSpec::new(ModelFormat::Onnx, "gs://models/resnet50/model.onnx");
    model.runtime = Some(RuntimeOptions {
        onnx_backend: Some(OnnxBackend::Ort),
    });
    let mut predictor = PredictorSpec::new(model);
    predictor.resources = Some(Resources {
        cpu: Some(Quantity("4".to_owned())),
        memory: Some(Quantity("16Gi".to_owned())),
        gpu: Some(1),
    });
    predictor.env = vec![EnvVar {
        name: "ORT_DYLIB_PATH".to_owned(),
        value: "/opt/onnxruntime/lib/libonnxruntime.so".to_owned(),
    }];
    let mut isvc = InferenceService::new("resnet", predictor);
    isvc.metadata.namespace = Some("vision".to_owned());
    let (record, plan) = single(isvc);
    let objects = objects(&record, &plan, &[("resnet-00001", 2)]);
    snapshot("gpu.yaml", &objects);
}

#[test]
fn scale_to_zero() {
    let mut isvc = example("examples/iris.yaml");
    isvc.spec.predictor.min_replicas = Some(0);
    let (record, plan) = single(isvc);
    // The autoscaler chose no replicas: the revision is absent from the map.
    let objects = objects(&record, &plan, &[]);
    let DesiredObject::Deployment(d) = &objects[0] else {
        panic!("a Deployment first");
    };
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(0));
    snapshot("scale-to-zero.yaml", &objects);
}

#[test]
fn s3_with_credentials_from_a_secret() {
    let mut model = ModelSpec::new(ModelFormat::Xgboost, "s3://models/fraud/model.json");
    model.sha256 = Some("a".repeat(64));
    let mut isvc = InferenceService::new("fraud", PredictorSpec::new(model));
    isvc.metadata.namespace = Some("risk".to_owned());
    isvc.metadata.annotations.insert(
        ANNOTATION_STORAGE_SECRET.to_owned(),
        "s3-credentials".to_owned(),
    );
    let (record, plan) = single(isvc);
    let objects = objects(&record, &plan, &[("fraud-00001", 1)]);
    let DesiredObject::Deployment(d) = &objects[0] else {
        panic!("a Deployment first");
    };
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    // Only the download sees the credentials.
    assert!(pod.containers[0].env_from.is_none());
    let init = &pod.init_containers.as_ref().expect("init")[0];
    let secret = init
        .env_from
        .as_ref()
        .and_then(|e| e[0].secret_ref.as_ref());
    assert_eq!(secret.map(|s| s.name.as_str()), Some("s3-credentials"));
    snapshot("s3-secret.yaml", &objects);
}

#[test]
fn a_bad_secret_name_is_refused_with_the_annotation() {
    let mut isvc = example("examples/iris.yaml");
    isvc.metadata
        .annotations
        .insert(ANNOTATION_STORAGE_SECRET.to_owned(), "Bad_Name".to_owned());
    let (record, plan) = single(isvc);
    let err = desired_objects(
        &record.spec,
        UID,
        &plan,
        &record.revisions,
        &BTreeMap::new(),
        &options(),
    )
    .expect_err("refused");
    assert!(matches!(err, Error::Annotation { .. }), "{err}");
    assert!(err.to_string().contains(ANNOTATION_STORAGE_SECRET), "{err}");
}

#[test]
fn a_plan_naming_an_unknown_revision_is_an_error() {
    let (record, plan) = single(example("examples/iris.yaml"));
    let err = desired_objects(&record.spec, UID, &plan, &[], &BTreeMap::new(), &options())
        .expect_err("refused");
    assert!(matches!(err, Error::UnknownRevision(ref r) if r == "iris-00001"));
}

#[test]
fn retired_revisions_have_no_objects() {
    // After promotion (v2 applied without canary and ready), v1 drops out.
    let (mut record, _) = single(example("examples/iris.yaml"));
    let mut v2 = example("examples/iris-v2.yaml");
    v2.spec.predictor.canary_traffic_percent = None;
    record.apply(v2, 1_700_000_100);
    let plan = plan_traffic(&record, &ready(&["iris-00001", "iris-00002"]));
    let objects = objects(&record, &plan, &[("iris-00002", 1)]);
    assert_eq!(
        names(&objects),
        [
            "Deployment/iris-00002",
            "Service/iris-00002",
            "Service/iris"
        ]
    );
}
