//! The desired objects of representative services, as YAML snapshots, and
//! the invariants that hold for every one of them.

mod support;

use std::collections::BTreeMap;

use inferd_api::{
    EnvVar, InferenceService, ModelFormat, ModelSpec, OnnxBackend, PredictorSpec, Quantity,
    Resources, RuntimeOptions, load_inference_services,
};
use inferd_control::service::{RevisionObserved, ServiceRecord, TrafficPlan, plan_traffic};
use inferd_operator::reconcile::{ObservedDeployment, ReconcileOptions, reconcile};
use inferd_operator::resource::InferenceServiceObject;
use inferd_operator::{
    ANNOTATION_STORAGE_SECRET, DesiredObject, Error, OperatorOptions, desired_objects,
    router_objects, to_yaml,
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
        let meta = object.metadata();
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
    model.max_size_bytes = Some(1 << 30);
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
    // The model's size limit goes to the download.
    let args = init.args.clone().unwrap_or_default();
    let at = args
        .iter()
        .position(|a| a == "--max-model-bytes")
        .expect("--max-model-bytes");
    assert_eq!(args[at + 1], (1u64 << 30).to_string());
    snapshot("s3-secret.yaml", &objects);
}

/// Why the objects of `isvc`'s first revision cannot be built.
fn refused(isvc: InferenceService) -> Error {
    let (record, plan) = single(isvc);
    desired_objects(
        &record.spec,
        UID,
        &plan,
        &record.revisions,
        &BTreeMap::new(),
        &options(),
    )
    .expect_err("refused")
}

#[test]
fn a_bad_secret_name_is_refused_with_the_annotation() {
    let mut isvc = example("examples/iris.yaml");
    isvc.metadata
        .annotations
        .insert(ANNOTATION_STORAGE_SECRET.to_owned(), "Bad_Name".to_owned());
    let err = refused(isvc);
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

#[test]
fn hpa() {
    let mut isvc = example("examples/iris.yaml");
    isvc.spec.predictor.autoscaler_class = Some(inferd_api::AutoscalerClass::Hpa);
    isvc.spec.predictor.min_replicas = Some(2);
    isvc.spec.predictor.max_replicas = Some(8);
    isvc.spec.predictor.scale_target = Some(65.0);
    isvc.spec.predictor.scale_metric = None;
    isvc.validate().expect("a valid HPA service");
    let mut object = InferenceServiceObject::from_api(&isvc);
    object.metadata.uid = Some(UID.to_owned());
    object.metadata.generation = Some(1);
    let options = ReconcileOptions {
        objects: options(),
        ..ReconcileOptions::default()
    };
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let first = reconcile(&object, &[], at, &options).expect("first pass");
    object.status = Some(first.status);
    let ready = ObservedDeployment {
        name: "iris-00001".to_owned(),
        ready_replicas: 2,
        ..ObservedDeployment::default()
    };
    let actions = reconcile(&object, &[ready], at, &options).expect("second pass");
    check_invariants(&actions.apply, &isvc);
    assert_eq!(
        names(&actions.apply),
        [
            "Deployment/iris-00001",
            "Service/iris-00001",
            "HorizontalPodAutoscaler/iris-00001",
            "Service/iris"
        ]
    );
    let DesiredObject::Deployment(d) = &actions.apply[0] else {
        panic!("a Deployment first");
    };
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), None);
    snapshot("hpa.yaml", &actions.apply);
}

#[test]
fn the_namespace_router() {
    let objects = router_objects("models", &options());
    snapshot("router.yaml", &objects);
    let DesiredObject::Deployment(d) = &objects[2] else {
        panic!("the router Deployment third");
    };
    let spec = d.spec.as_ref().expect("spec");
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(pod.service_account_name.as_deref(), Some("inferd-router"));
    let c = &pod.containers[0];
    assert_eq!(c.args.as_ref().map(|a| a[0].as_str()), Some("router"));
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    // The Service every InferenceService gets selects these pods.
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("labels");
    for (k, v) in &options().router_labels {
        assert_eq!(labels.get(k), Some(v));
    }
}

fn placed() -> InferenceService {
    let text = r#"
apiVersion: serving.inferd.dev/v1alpha1
kind: InferenceService
metadata:
  name: placed
  namespace: models
spec:
  predictor:
    model:
      format: onnx
      storageUri: s3://models/iris/1
    resources:
      gpu: 1
    serviceAccountName: model-reader
    nodeSelector:
      pool: gpu-a100
    tolerations:
    - key: dedicated
      operator: Equal
      value: inference
      effect: NoSchedule
    - key: node.kubernetes.io/unreachable
      operator: Exists
      effect: NoExecute
      tolerationSeconds: 30
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
          - matchExpressions:
            - key: topology.kubernetes.io/zone
              operator: In
              values: [eu-west-1a]
"#;
    load_inference_services(text).expect("valid").remove(0)
}

#[test]
fn placement_and_identity_reach_the_pods() {
    let isvc = placed();
    let (record, plan) = single(isvc.clone());
    let scales = BTreeMap::from([(
        "placed-00001".to_owned(),
        inferd_operator::Scale::Replicas(1),
    )]);
    let secrets = BTreeMap::from([(
        "model-reader".to_owned(),
        vec!["s3-credentials".to_owned(), "gcs-key".to_owned()],
    )]);
    let objects = inferd_operator::desired_objects_scaled(
        &record.spec,
        UID,
        &plan,
        &record.revisions,
        &scales,
        &secrets,
        &options(),
    )
    .expect("objects");
    check_invariants(&objects, &isvc);
    snapshot("placement.yaml", &objects);
    let DesiredObject::Deployment(d) = &objects[0] else {
        panic!("a Deployment first");
    };
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    assert_eq!(pod.service_account_name.as_deref(), Some("model-reader"));
    assert_eq!(
        pod.node_selector.as_ref().and_then(|n| n.get("pool")),
        Some(&"gpu-a100".to_owned())
    );
    let tolerations = pod.tolerations.as_ref().expect("tolerations");
    let keys: Vec<Option<&str>> = tolerations.iter().map(|t| t.key.as_deref()).collect();
    // The user's two, then the GPU taint's.
    assert_eq!(
        keys,
        [
            Some("dedicated"),
            Some("node.kubernetes.io/unreachable"),
            Some("nvidia.com/gpu")
        ]
    );
    assert_eq!(tolerations[1].toleration_seconds, Some(30));
    let zone = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms[0].match_expressions.clone());
    assert_eq!(
        zone.flatten().map(|e| e[0].values.clone()),
        Some(Some(vec!["eu-west-1a".to_owned()]))
    );
    // The ServiceAccount's Secrets are the download's environment only.
    let init = &pod.init_containers.as_ref().expect("init")[0];
    let from: Vec<(String, Option<bool>)> = init
        .env_from
        .iter()
        .flatten()
        .filter_map(|e| e.secret_ref.as_ref())
        .map(|s| (s.name.clone(), s.optional))
        .collect();
    assert_eq!(
        from,
        [
            ("s3-credentials".to_owned(), Some(true)),
            ("gcs-key".to_owned(), Some(true))
        ]
    );
    assert!(pod.containers[0].env_from.is_none());
}

#[test]
fn an_affinity_kubernetes_would_refuse_is_an_error_with_its_path() {
    let mut isvc = placed();
    let mut affinity = serde_json::Map::new();
    affinity.insert(
        "nodeAffinity".to_owned(),
        serde_json::json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": "all"}}),
    );
    isvc.spec.predictor.affinity = Some(inferd_api::Affinity(affinity));
    let err = refused(isvc);
    let text = err.to_string();
    assert!(
        text.starts_with(
            "spec.predictor.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
        ),
        "{text}"
    );
}
