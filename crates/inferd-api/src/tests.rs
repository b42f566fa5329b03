//! Unit tests: every field's bad values, round trips, KServe conversions,
//! multi-document streams.

#![allow(clippy::unwrap_used)]

use super::*;

const GOOD: &str = r#"
apiVersion: serving.inferd.dev/v1alpha1
kind: InferenceService
metadata:
  name: iris
  namespace: team-a
  labels:
    app.kubernetes.io/name: iris
  annotations:
    example.com/owner: "ml team"
spec:
  predictor:
    model:
      format: onnx
      storageUri: s3://models/iris/1/model.onnx
      runtime:
        onnxBackend: ort
    minReplicas: 2
    maxReplicas: 8
    scaleMetric: rps
    scaleTarget: 12.5
    containerConcurrency: 16
    timeoutSeconds: 60
    canaryTrafficPercent: 10
    batching:
      maxBatchSize: 64
      maxQueueDelay: 2ms
      maxQueueSize: 500
    resources:
      cpu: 500m
      memory: 1Gi
      gpu: 1
    env:
      - name: RUST_LOG
        value: debug
"#;

fn one(text: &str) -> Result<InferenceService, ApiError> {
    let mut all = load_inference_services(text)?;
    assert_eq!(all.len(), 1);
    Ok(all.remove(0))
}

/// GOOD with `from` replaced by `to` (which must occur once).
fn edited(from: &str, to: &str) -> String {
    assert_eq!(GOOD.matches(from).count(), 1, "{from}");
    GOOD.replace(from, to)
}

/// The error for GOOD edited, which must be refused naming `path`.
fn refused(from: &str, to: &str, path: &str) -> String {
    let text = edited(from, to);
    let err = match one(&text) {
        Ok(isvc) => panic!("accepted {to:?}: {isvc:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{path}:")),
        "{to:?}: expected the path {path} in: {msg}"
    );
    msg
}

#[test]
fn good_spec_reads_every_field() {
    let isvc = one(GOOD).unwrap();
    let p = &isvc.spec.predictor;
    assert_eq!(isvc.metadata.name, "iris");
    assert_eq!(isvc.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(p.model.format, ModelFormat::Onnx);
    assert_eq!(
        p.model.runtime.as_ref().unwrap().onnx_backend,
        Some(OnnxBackend::Ort)
    );
    assert_eq!((p.min_replicas, p.max_replicas), (Some(2), Some(8)));
    assert_eq!(p.scale_metric, Some(ScaleMetric::Rps));
    assert_eq!(p.scale_target, Some(12.5));
    assert_eq!(p.container_concurrency, Some(16));
    assert_eq!(p.timeout_seconds, Some(60));
    assert_eq!(p.canary_traffic_percent, Some(10));
    let b = p.batching.as_ref().unwrap();
    assert_eq!(b.max_batch_size, 64);
    assert_eq!(
        b.max_queue_delay.unwrap().as_duration(),
        std::time::Duration::from_millis(2)
    );
    assert_eq!(b.max_queue_size, Some(500));
    let r = p.resources.as_ref().unwrap();
    assert_eq!(r.cpu.as_ref().unwrap().millicores(), Some(500));
    assert_eq!(r.memory.as_ref().unwrap().bytes(), Some(1 << 30));
    assert_eq!(r.gpu, Some(1));
    assert_eq!(p.env[0].name, "RUST_LOG");
    assert_eq!(p.timeout(), std::time::Duration::from_secs(60));
}

#[test]
fn defaults_of_absent_fields() {
    let p = PredictorSpec::new(ModelSpec::new(ModelFormat::Onnx, "m.onnx"));
    assert_eq!(p.min_replicas_or_default(), 1);
    assert_eq!(p.max_replicas_or_default(), MAX_REPLICAS);
    assert_eq!(p.scale_metric_or_default(), ScaleMetric::Concurrency);
    assert_eq!(p.scale_target_or_default(), DEFAULT_CONCURRENCY_TARGET);
    assert_eq!(p.timeout(), std::time::Duration::from_secs(300));
    let rps = PredictorSpec {
        scale_metric: Some(ScaleMetric::Rps),
        ..p
    };
    assert_eq!(rps.scale_target_or_default(), DEFAULT_RPS_TARGET);
}

#[test]
fn round_trips_through_yaml() {
    let isvc = one(GOOD).unwrap();
    let text = to_yaml(&isvc).unwrap();
    assert_eq!(one(&text).unwrap(), isvc, "{text}");
    // The smallest spec too, and one with a status.
    let mut small = InferenceService::new(
        "tiny",
        PredictorSpec::new(ModelSpec::new(ModelFormat::Xgboost, "models/tiny.json")),
    );
    let text = to_yaml(&small).unwrap();
    assert_eq!(one(&text).unwrap(), small, "{text}");
    small.status = Some(InferenceServiceStatus {
        url: Some("http://127.0.0.1:8080".into()),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: None,
            message: None,
            last_transition_time: None,
        }],
        latest_ready_revision: Some("tiny-00001".into()),
        latest_created_revision: Some("tiny-00001".into()),
        traffic: vec![TrafficTarget {
            revision_name: "tiny-00001".into(),
            percent: 100,
            latest_revision: true,
            tag: Some("latest".into()),
        }],
        model_status: Some(ModelStatus {
            state: ModelState::Loaded,
            reason: None,
        }),
    });
    let text = to_yaml(&small).unwrap();
    assert_eq!(one(&text).unwrap(), small, "{text}");
}

#[test]
fn multi_document_round_trip() {
    let a = one(GOOD).unwrap();
    let mut b = a.clone();
    b.metadata.name = "iris-2".into();
    let text = to_yaml_multi(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(load_inference_services(&text).unwrap(), vec![a, b]);
}

#[test]
fn multi_document_mixes_kinds_and_names_the_bad_document() {
    let text = format!(
        "{GOOD}---\n{}---\n{GOOD}",
        include_str!("../../../examples/kserve-iris.yaml")
    );
    let all = parse_yaml(&text).unwrap();
    assert!(matches!(all[0], Resource::InferenceService(_)));
    assert!(matches!(all[1], Resource::KServeInferenceService(_)));
    assert_eq!(load_inference_services(&text).unwrap().len(), 3);

    let bad = format!("{GOOD}---\n{}", edited("maxReplicas: 8", "maxReplicas: 1"));
    let msg = parse_yaml(&bad).unwrap_err().to_string();
    assert_eq!(
        msg,
        "document 2: spec.predictor.maxReplicas: must be >= minReplicas (2)"
    );
    // Empty documents are skipped, not counted.
    let text = format!("---\n---\n{GOOD}");
    assert_eq!(parse_yaml(&text).unwrap().len(), 1);
    assert!(parse_yaml("").unwrap().is_empty());
}

#[test]
fn refuses_bad_yaml_and_unknown_resources() {
    for (text, want) in [
        ("a: [1, 2", "invalid YAML"),
        ("a: 1\na: 2\n", "invalid YAML"),
        ("- 1\n- 2\n", "a resource must be a mapping"),
        ("kind: InferenceService\n", "apiVersion: is required"),
        (
            "apiVersion: 3\nkind: InferenceService\n",
            "apiVersion: must be a string",
        ),
        (
            "apiVersion: serving.inferd.dev/v1alpha1\n",
            "kind: is required",
        ),
        (
            "apiVersion: v1\nkind: Pod\n",
            "apiVersion: 'v1' is not one inferd reads",
        ),
        (
            "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceGraph\n",
            "kind: 'InferenceGraph' is not a resource",
        ),
        (
            "apiVersion: serving.inferd.dev/v1alpha1\nkind: InferenceService\nmetadata: {name: a}\n",
            "missing field `spec`",
        ),
    ] {
        let msg = parse_yaml(text).unwrap_err().to_string();
        assert!(msg.contains(want), "{text:?}: {msg}");
    }
}

#[test]
fn refuses_oversized_and_bomb_yaml() {
    let big = "#".repeat(MAX_YAML_BYTES + 1);
    assert!(matches!(parse_yaml(&big), Err(ApiError::Yaml(_))));
    // A billion-laughs alias bomb stops at the parser's budget.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for name in 'b'..='p' {
        bomb.push_str(&format!(
            "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
        prev = name;
    }
    assert!(parse_yaml(&bomb).is_err());
}

#[test]
fn refuses_mistyped_fields_with_their_path() {
    let msg = refused(
        "    minReplicas: 2",
        "    minReplica: 2",
        "spec.predictor.minReplica",
    );
    assert!(msg.contains("unknown field `minReplica`"), "{msg}");
    refused(
        "      format: onnx",
        "      fromat: onnx",
        "spec.predictor.model.fromat",
    );
    refused("  name: iris", "  name: iris\n  uid: x", "metadata.uid");
    refused(
        "      maxQueueSize: 500",
        "      maxQueueSize: 500\n      maxQueue: 1",
        "spec.predictor.batching.maxQueue",
    );
    refused(
        "      gpu: 1",
        "      gpu: 1\n      tpu: 1",
        "spec.predictor.resources.tpu",
    );
    refused(
        "        onnxBackend: ort",
        "        onnxBackend: ort\n        threads: 2",
        "spec.predictor.model.runtime.threads",
    );
    refused(
        "        value: debug",
        "        valueFrom: {}",
        "spec.predictor.env[0].valueFrom",
    );
}

#[test]
fn refuses_wrong_types() {
    refused(
        "minReplicas: 2",
        "minReplicas: two",
        "spec.predictor.minReplicas",
    );
    refused(
        "minReplicas: 2",
        "minReplicas: 2.5",
        "spec.predictor.minReplicas",
    );
    refused(
        "maxReplicas: 8",
        "maxReplicas: [8]",
        "spec.predictor.maxReplicas",
    );
    refused(
        "scaleTarget: 12.5",
        "scaleTarget: lots",
        "spec.predictor.scaleTarget",
    );
    refused(
        "timeoutSeconds: 60",
        "timeoutSeconds: 60s",
        "spec.predictor.timeoutSeconds",
    );
    refused(
        "canaryTrafficPercent: 10",
        "canaryTrafficPercent: 10%",
        "spec.predictor.canaryTrafficPercent",
    );
    refused(
        "containerConcurrency: 16",
        "containerConcurrency: true",
        "spec.predictor.containerConcurrency",
    );
    refused(
        "maxBatchSize: 64",
        "maxBatchSize: {}",
        "spec.predictor.batching.maxBatchSize",
    );
    refused("gpu: 1", "gpu: half", "spec.predictor.resources.gpu");
    refused("cpu: 500m", "cpu: [1]", "spec.predictor.resources.cpu");
    refused(
        "format: onnx",
        "format: sklearn",
        "spec.predictor.model.format",
    );
    refused(
        "format: onnx",
        "format: ONNX",
        "spec.predictor.model.format",
    );
    refused(
        "onnxBackend: ort",
        "onnxBackend: cuda",
        "spec.predictor.model.runtime.onnxBackend",
    );
    refused(
        "scaleMetric: rps",
        "scaleMetric: cpu",
        "spec.predictor.scaleMetric",
    );
    refused("name: RUST_LOG", "name: [a]", "spec.predictor.env[0].name");
    refused(
        "app.kubernetes.io/name: iris",
        "app.kubernetes.io/name: {a: 1}",
        "metadata.labels.app.kubernetes.io/name",
    );
}

#[test]
fn refuses_missing_required_fields() {
    refused("      format: onnx\n", "", "spec.predictor.model");
    refused(
        "      storageUri: s3://models/iris/1/model.onnx\n",
        "",
        "spec.predictor.model",
    );
    refused("      maxBatchSize: 64\n", "", "spec.predictor.batching");
    refused("  name: iris\n", "", "metadata");
}

#[test]
fn refuses_bad_names() {
    for bad in [
        "\"\"",
        "Iris",
        "iris_1",
        "-iris",
        "iris-",
        "iris.v1",
        "\"ir is\"",
        "\"iris\\n\"",
        "../etc",
        &"a".repeat(64),
    ] {
        refused("  name: iris", &format!("  name: {bad}"), "metadata.name");
    }
    refused(
        "namespace: team-a",
        "namespace: Team_A",
        "metadata.namespace",
    );
    refused(
        "app.kubernetes.io/name: iris",
        "app.kubernetes.io/name: \"not ok\"",
        "metadata.labels[app.kubernetes.io/name]",
    );
    refused(
        "app.kubernetes.io/name: iris",
        "Bad_Prefix/name: iris",
        "metadata.labels[Bad_Prefix/name]",
    );
    refused(
        "example.com/owner: \"ml team\"",
        "\"-owner\": x",
        "metadata.annotations[-owner]",
    );
    refused(
        "example.com/owner: \"ml team\"",
        &format!(
            "example.com/owner: \"{}\"",
            "x".repeat(MAX_ANNOTATIONS_BYTES)
        ),
        "metadata.annotations",
    );
    // Long, hostile names are cut short in the message.
    let msg = refused(
        "  name: iris",
        &format!("  name: \"{}\"", "\\u0007".repeat(500)),
        "metadata.name",
    );
    assert!(msg.len() < 1000, "{msg}");
    for good in ["a", "iris-v2", "1iris", &"a".repeat(63)] {
        one(&edited("  name: iris", &format!("  name: {good}"))).unwrap();
    }
}

#[test]
fn refuses_bad_storage_uris() {
    let at = "spec.predictor.model.storageUri";
    for bad in [
        "\"\"",
        "\" \"",
        "s3://",
        "s3:///key/model.onnx",
        "s3://Bad_Bucket/model.onnx",
        "gs://",
        "http:///model.onnx",
        "https://",
        "file://",
        "ftp://host/model.onnx",
        "pvc://claim/model.onnx",
        "hf://owner/model",
        "oci://registry/model:1",
        "hdfs://nn/model.onnx",
        "mailto:someone",
        "s3://bucket/../secret/model.onnx",
        "s3://bucket/a/%2e%2e/model.onnx",
        "s3://bucket/a/%2E%2e/model.onnx",
        "s3://bucket/a%2Fb/model.onnx",
        "file://../../etc/passwd",
        "../models/iris",
        "/models/../../etc/model.onnx",
        "models/..",
        "\"models\\\\iris\"",
        "\"models/ir is\"",
        "\"models/iris\\u0000\"",
        "\"s3://bucket/model.onnx\\n\"",
    ] {
        refused(
            "storageUri: s3://models/iris/1/model.onnx",
            &format!("storageUri: {bad}"),
            at,
        );
    }
    let long = format!("s3://bucket/{}", "a".repeat(MAX_URI_LEN));
    refused(
        "storageUri: s3://models/iris/1/model.onnx",
        &format!("storageUri: {long}"),
        at,
    );
    for good in [
        "s3://models/iris/1/model.onnx",
        "s3://models",
        "gs://my-bucket/iris",
        "http://127.0.0.1:9000/iris/model.onnx",
        "https://example.com/iris.onnx?sig=abc",
        "file:///srv/models/iris",
        "file://models/iris",
        "models/iris",
        "./models/iris/model.onnx",
        "/srv/models/iris.v1",
        "models/..iris",
    ] {
        one(&edited(
            "storageUri: s3://models/iris/1/model.onnx",
            &format!("storageUri: {good}"),
        ))
        .unwrap();
    }
}

#[test]
fn format_must_match_file_extension() {
    let at = "spec.predictor.model.storageUri";
    let msg = refused(
        "storageUri: s3://models/iris/1/model.onnx",
        "storageUri: s3://models/iris/1/model.json",
        at,
    );
    assert!(
        msg.contains("a .json file is a xgboost model, but model.format is onnx"),
        "{msg}"
    );
    refused(
        "storageUri: s3://models/iris/1/model.onnx",
        "storageUri: s3://models/iris/model.pkl",
        at,
    );
    refused(
        "storageUri: s3://models/iris/1/model.onnx",
        "storageUri: models/model.txt",
        at,
    );
    let lgb = edited("      format: onnx", "      format: lightgbm")
        .replace("s3://models/iris/1/model.onnx", "models/model.txt")
        .replace("      runtime:\n        onnxBackend: ort\n", "");
    one(&lgb).unwrap();
    let xgb = edited("      format: onnx", "      format: xgboost")
        .replace("s3://models/iris/1/model.onnx", "models/model.ubj");
    let msg = one(&xgb).unwrap_err().to_string();
    assert!(
        msg.contains("spec.predictor.model.runtime.onnxBackend: applies to format onnx only"),
        "{msg}"
    );
}

#[test]
fn refuses_out_of_range_numbers() {
    let p = "spec.predictor";
    refused(
        "minReplicas: 2",
        "minReplicas: -1",
        &format!("{p}.minReplicas"),
    );
    refused(
        "minReplicas: 2",
        "minReplicas: 1001",
        &format!("{p}.minReplicas"),
    );
    refused(
        "minReplicas: 2",
        "minReplicas: 99999999999999999999999",
        &format!("{p}.minReplicas"),
    );
    refused(
        "maxReplicas: 8",
        "maxReplicas: 0",
        &format!("{p}.maxReplicas"),
    );
    refused(
        "maxReplicas: 8",
        "maxReplicas: 1001",
        &format!("{p}.maxReplicas"),
    );
    let msg = refused(
        "maxReplicas: 8",
        "maxReplicas: 1",
        &format!("{p}.maxReplicas"),
    );
    assert!(
        msg.ends_with("spec.predictor.maxReplicas: must be >= minReplicas (2)"),
        "{msg}"
    );
    // Non-finite numbers are refused by the reader, with the line and column.
    for bad in [".nan", ".inf", "-.inf", ".NaN"] {
        let msg = one(&edited("scaleTarget: 12.5", &format!("scaleTarget: {bad}")))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("non-finite float") && msg.contains("line 21"),
            "{msg}"
        );
    }
    for bad in ["0", "-1", "-0.0", "1e300", "1000001"] {
        refused(
            "scaleTarget: 12.5",
            &format!("scaleTarget: {bad}"),
            &format!("{p}.scaleTarget"),
        );
    }
    refused(
        "containerConcurrency: 16",
        "containerConcurrency: 10001",
        &format!("{p}.containerConcurrency"),
    );
    for bad in ["0", "3601", "-5"] {
        refused(
            "timeoutSeconds: 60",
            &format!("timeoutSeconds: {bad}"),
            &format!("{p}.timeoutSeconds"),
        );
    }
    for bad in ["101", "-1", "4294967296"] {
        refused(
            "canaryTrafficPercent: 10",
            &format!("canaryTrafficPercent: {bad}"),
            &format!("{p}.canaryTrafficPercent"),
        );
    }
    for ok in ["0", "100"] {
        one(&edited(
            "canaryTrafficPercent: 10",
            &format!("canaryTrafficPercent: {ok}"),
        ))
        .unwrap();
    }
    for bad in ["0", "65537", "-1"] {
        refused(
            "maxBatchSize: 64",
            &format!("maxBatchSize: {bad}"),
            &format!("{p}.batching.maxBatchSize"),
        );
    }
    for bad in [
        "61s",
        "2m",
        "-1",
        "1.5ms",
        "2h",
        "ms",
        "99999999999999999999s",
        "\"\"",
    ] {
        refused(
            "maxQueueDelay: 2ms",
            &format!("maxQueueDelay: {bad}"),
            &format!("{p}.batching.maxQueueDelay"),
        );
    }
    for (ok, us) in [
        ("0", 0),
        ("250", 250),
        ("500us", 500),
        ("500µs", 500),
        ("60s", 60_000_000),
        ("1m", 60_000_000),
    ] {
        let isvc = one(&edited(
            "maxQueueDelay: 2ms",
            &format!("maxQueueDelay: {ok}"),
        ))
        .unwrap();
        let got = isvc
            .spec
            .predictor
            .batching
            .unwrap()
            .max_queue_delay
            .unwrap();
        assert_eq!(got, QueueDelay(us), "{ok}");
    }
    for bad in ["0", "1000001"] {
        refused(
            "maxQueueSize: 500",
            &format!("maxQueueSize: {bad}"),
            &format!("{p}.batching.maxQueueSize"),
        );
    }
    for bad in ["0", "-1", "1.2345", "lots", "2000", "500x", "\"\""] {
        refused(
            "cpu: 500m",
            &format!("cpu: {bad}"),
            &format!("{p}.resources.cpu"),
        );
    }
    for ok in ["1", "0.5", "\"2\"", "250m", "1024"] {
        one(&edited("cpu: 500m", &format!("cpu: {ok}"))).unwrap();
    }
    for bad in ["0", "1Zi", "1.5Gi", "-1Gi", "17Ti", "99999999999Ei", "lots"] {
        refused(
            "memory: 1Gi",
            &format!("memory: {bad}"),
            &format!("{p}.resources.memory"),
        );
    }
    for ok in ["512Mi", "1G", "1000000", "16Ti"] {
        one(&edited("memory: 1Gi", &format!("memory: {ok}"))).unwrap();
    }
    refused("gpu: 1", "gpu: 65", &format!("{p}.resources.gpu"));
    refused("gpu: 1", "gpu: -1", &format!("{p}.resources.gpu"));
    // A concurrency target above the hard limit can never be reached.
    let text = edited("scaleMetric: rps", "scaleMetric: concurrency")
        .replace("scaleTarget: 12.5", "scaleTarget: 17");
    let msg = one(&text).unwrap_err().to_string();
    assert!(msg.contains("spec.predictor.scaleTarget: a concurrency target of 17 cannot exceed containerConcurrency (16)"), "{msg}");
}

#[test]
fn model_max_size_bytes_is_read_and_checked() {
    const URI: &str = "      storageUri: s3://models/iris/1/model.onnx";
    let with = |value: &str| edited(URI, &format!("{URI}\n      maxSizeBytes: {value}"));
    let path = "spec.predictor.model.maxSizeBytes";
    let isvc = one(&with("1073741824")).unwrap();
    assert_eq!(isvc.spec.predictor.model.max_size_bytes, Some(1 << 30));
    // It survives a round trip, in camelCase.
    let yaml = to_yaml_multi(std::slice::from_ref(&isvc)).unwrap();
    assert!(yaml.contains("maxSizeBytes: 1073741824"), "{yaml}");
    assert_eq!(one(&yaml).unwrap(), isvc);
    one(&with("1")).unwrap();
    one(&with(&MAX_MODEL_SIZE_BYTES.to_string())).unwrap();
    assert_eq!(one(GOOD).unwrap().spec.predictor.model.max_size_bytes, None);
    // Out of range.
    for bad in ["0", &(MAX_MODEL_SIZE_BYTES + 1).to_string()] {
        let msg = one(&with(bad)).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("{path}: {bad} is out of range")),
            "{msg}"
        );
    }
    // Negative, beyond u64, wrong types, malformed: the reader refuses
    // them with the field's path.
    for bad in [
        "-1",
        "-1073741824",
        "18446744073709551616",
        "99999999999999999999999",
        "1.5",
        "1e9",
        "20Gi",
        "lots",
        "true",
        "[1]",
        "{a: 1}",
        "\"1024\"",
    ] {
        let msg = match one(&with(bad)) {
            Ok(isvc) => panic!("accepted {bad:?}: {isvc:?}"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains(&format!("{path}:")), "{bad:?}: {msg}");
    }
    // Built in code, `validate` checks it too.
    let mut isvc = one(GOOD).unwrap();
    isvc.spec.predictor.model.max_size_bytes = Some(0);
    let msg = isvc.validate().unwrap_err().to_string();
    assert!(msg.contains(path), "{msg}");
}

#[test]
fn refuses_bad_env() {
    let p = "spec.predictor.env";
    refused("name: RUST_LOG", "name: 1ABC", &format!("{p}[0].name"));
    refused("name: RUST_LOG", "name: \"A=B\"", &format!("{p}[0].name"));
    refused("name: RUST_LOG", "name: \"\"", &format!("{p}[0].name"));
    refused(
        "        value: debug",
        "        value: debug\n      - name: RUST_LOG\n        value: info",
        &format!("{p}[1].name"),
    );
    refused(
        "value: debug",
        &format!("value: \"{}\"", "x".repeat(MAX_ENV_VALUE + 1)),
        &format!("{p}[0].value"),
    );
    refused(
        "value: debug",
        "value: \"a\\u0000b\"",
        &format!("{p}[0].value"),
    );
    let many: String = (0..=MAX_ENV)
        .map(|i| format!("\n      - name: V{i}\n        value: x"))
        .collect();
    refused(
        "        value: debug",
        &format!("        value: debug{many}"),
        p,
    );
}

#[test]
fn reports_every_bad_field_at_once() {
    let text = edited("minReplicas: 2", "minReplicas: 2000")
        .replace("timeoutSeconds: 60", "timeoutSeconds: 0");
    let err = one(&text).unwrap_err();
    let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"spec.predictor.minReplicas"), "{paths:?}");
    assert!(
        paths.contains(&"spec.predictor.timeoutSeconds"),
        "{paths:?}"
    );
}

#[test]
fn resolves_relative_paths_against_the_yaml_folder() {
    let base = std::path::Path::new("/srv/examples");
    let m = |uri: &str| ModelSpec::new(ModelFormat::Onnx, uri).local_path(base);
    assert_eq!(
        m("file://models/iris"),
        Some("/srv/examples/models/iris".into())
    );
    assert_eq!(m("models/iris"), Some("/srv/examples/models/iris".into()));
    assert_eq!(m("file:///abs/iris"), Some("/abs/iris".into()));
    assert_eq!(m("/abs/iris"), Some("/abs/iris".into()));
    assert_eq!(m("s3://bucket/iris"), None);
}

// ---- Pod placement and identity -----------------------------------------------

/// The four pod settings, written at the predictor's indentation (inferd's and
/// KServe's alike). `tolerations[2]` is the NoExecute one.
const POD: &str = r#"    nodeSelector:
      cloud.google.com/gke-accelerator: nvidia-l4
      pool: gpu
      empty: ""
    tolerations:
      - key: nvidia.com/gpu
        operator: Exists
        effect: NoSchedule
      - key: dedicated
        operator: Equal
        value: ml
        effect: PreferNoSchedule
      - key: node.kubernetes.io/unreachable
        operator: Exists
        effect: NoExecute
        tolerationSeconds: 300
      - operator: Exists
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
            - matchExpressions:
                - key: topology.kubernetes.io/zone
                  operator: In
                  values: [us-central1-a]
      podAntiAffinity:
        preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels: {app: iris}
    serviceAccountName: models-reader
"#;

/// GOOD with the pod settings.
fn with_pod() -> String {
    edited("    env:\n", &format!("{POD}    env:\n"))
}

/// `with_pod()` with `from` (which must occur once in it) replaced by `to`.
fn pod_edited(from: &str, to: &str) -> String {
    let text = with_pod();
    assert_eq!(text.matches(from).count(), 1, "{from}");
    text.replace(from, to)
}

/// The error for `pod_edited(from, to)`, which must be refused naming `path`.
fn pod_refused(from: &str, to: &str, path: &str) -> String {
    let msg = match one(&pod_edited(from, to)) {
        Ok(isvc) => panic!("accepted {to:?}: {:?}", isvc.spec.predictor),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains(&format!("{path}:")),
        "{to:?}: expected the path {path} in: {msg}"
    );
    msg
}

fn pod_accepted(from: &str, to: &str) -> PredictorSpec {
    match one(&pod_edited(from, to)) {
        Ok(isvc) => isvc.spec.predictor,
        Err(e) => panic!("refused {to:?}: {e}"),
    }
}

#[test]
fn pod_settings_are_read_and_round_trip() {
    let isvc = one(&with_pod()).unwrap();
    let p = &isvc.spec.predictor;
    assert!(p.has_pod_settings());
    assert_eq!(p.node_selector["pool"], "gpu");
    assert_eq!(
        p.node_selector["cloud.google.com/gke-accelerator"],
        "nvidia-l4"
    );
    assert_eq!(p.node_selector["empty"], "");
    assert_eq!(p.tolerations.len(), 4);
    assert_eq!(
        p.tolerations[1],
        Toleration {
            key: Some("dedicated".into()),
            operator: Some(TolerationOperator::Equal),
            value: Some("ml".into()),
            effect: Some(TaintEffect::PreferNoSchedule),
            toleration_seconds: None,
        }
    );
    assert_eq!(p.tolerations[2].toleration_seconds, Some(300));
    assert_eq!(p.tolerations[2].effect, Some(TaintEffect::NoExecute));
    // No key with Exists: every taint.
    assert_eq!(
        p.tolerations[3],
        Toleration {
            operator: Some(TolerationOperator::Exists),
            ..Toleration::default()
        }
    );
    let affinity = &p.affinity.as_ref().unwrap().0;
    assert_eq!(
        affinity.keys().collect::<Vec<_>>(),
        ["nodeAffinity", "podAntiAffinity"]
    );
    assert_eq!(
        affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(p.service_account_name.as_deref(), Some("models-reader"));
    let text = to_yaml(&isvc).unwrap();
    assert_eq!(one(&text).unwrap(), isvc, "{text}");
    // Absent, they are empty, and not written: a spec without them writes as before.
    let plain = one(GOOD).unwrap();
    assert!(!plain.spec.predictor.has_pod_settings());
    let text = to_yaml(&plain).unwrap();
    for key in [
        "nodeSelector",
        "tolerations",
        "affinity",
        "serviceAccountName",
    ] {
        assert!(!text.contains(key), "{key} in {text}");
    }
    let new = PredictorSpec::new(ModelSpec::new(ModelFormat::Onnx, "m.onnx"));
    assert!(!new.has_pod_settings());
    // An empty affinity and empty lists are accepted.
    let p = pod_accepted(
        POD,
        "    affinity: {}\n    tolerations: []\n    nodeSelector: {}\n",
    );
    assert_eq!(p.affinity, Some(Affinity::default()));
    assert!(p.tolerations.is_empty() && p.node_selector.is_empty());
}

#[test]
fn refuses_bad_node_selectors() {
    let at = "spec.predictor.nodeSelector";
    for key in [
        "../x",
        "..",
        "-pool",
        "pool-",
        "a b",
        "Example.COM/x",
        "a/b/c",
        "/x",
        "x/",
        "\"\"",
    ] {
        let shown = crate::validate::shown(key.trim_matches('"'));
        pod_refused(
            "      pool: gpu\n",
            &format!("      {key}: gpu\n"),
            &format!("{at}[{shown}]"),
        );
    }
    let long = "k".repeat(64);
    pod_refused(
        "      pool: gpu\n",
        &format!("      {long}: gpu\n"),
        &format!("{at}[{long}]"),
    );
    let long_prefix = format!("{}.com/x", "a".repeat(250));
    let msg = pod_refused(
        "      pool: gpu\n",
        &format!("      {long_prefix}: gpu\n"),
        &format!("{at}[{}…]", &long_prefix[..64]),
    );
    assert!(msg.len() < 400, "a huge key is shown shortened: {msg}");
    // The path names the key.
    let msg = pod_refused(
        "      pool: gpu\n",
        "      ../x: gpu\n",
        &format!("{at}[../x]"),
    );
    assert!(msg.contains("is not a DNS subdomain"), "{msg}");
    for value in ["has space", "-gpu", "gpu/", "../x"] {
        pod_refused(
            "      pool: gpu\n",
            &format!("      pool: \"{value}\"\n"),
            &format!("{at}[pool]"),
        );
    }
    let long = "v".repeat(64);
    pod_refused(
        "      pool: gpu\n",
        &format!("      pool: {long}\n"),
        &format!("{at}[pool]"),
    );
    // Prefixed keys of well-known labels are fine.
    let p = pod_accepted("      pool: gpu\n", "      kubernetes.io/os: linux\n");
    assert_eq!(p.node_selector["kubernetes.io/os"], "linux");
    // Wrong types.
    pod_refused(
        "      pool: gpu\n",
        "      pool: {a: 1}\n",
        &format!("{at}.pool"),
    );
    pod_refused(
        "      pool: gpu\n",
        "      pool: [gpu]\n",
        &format!("{at}.pool"),
    );
    pod_refused(
        "      pool: gpu\n",
        "      pool: 1\n",
        &format!("{at}.pool"),
    );
    pod_refused(
        "    nodeSelector:\n      cloud.google.com/gke-accelerator: nvidia-l4\n      pool: gpu\n      empty: \"\"\n",
        "    nodeSelector: [pool]\n",
        at,
    );
    // Too many: refused by the count alone.
    let many: String = (0..=MAX_NODE_SELECTOR)
        .map(|i| format!("      k{i}: \"bad value {i}\"\n"))
        .collect();
    let err = one(&pod_edited("      pool: gpu\n", &many)).unwrap_err();
    assert_eq!(err.field_errors().len(), 1, "{err}");
    assert_eq!(err.field_errors()[0].path, at);
}

#[test]
fn refuses_bad_tolerations() {
    let at = "spec.predictor.tolerations";
    // Enums: an unknown or mis-cased value names the field.
    let msg = pod_refused(
        "effect: NoExecute",
        "effect: NoExecut",
        &format!("{at}[2].effect"),
    );
    assert!(msg.contains("NoExecute"), "lists the effects: {msg}");
    pod_refused(
        "effect: NoExecute",
        "effect: noexecute",
        &format!("{at}[2].effect"),
    );
    pod_refused(
        "effect: NoExecute",
        "effect: \"\"",
        &format!("{at}[2].effect"),
    );
    pod_refused(
        "operator: Equal",
        "operator: In",
        &format!("{at}[1].operator"),
    );
    pod_refused(
        "operator: Equal",
        "operator: [Equal]",
        &format!("{at}[1].operator"),
    );
    // Exists with a value.
    let msg = pod_refused(
        "        effect: NoSchedule\n",
        "        effect: NoSchedule\n        value: present\n",
        &format!("{at}[0].value"),
    );
    assert!(msg.contains("Exists matches any value"), "{msg}");
    // tolerationSeconds: NoExecute only, and never negative, fractional, NaN or huge.
    let msg = pod_refused(
        "        effect: NoSchedule\n",
        "        effect: NoSchedule\n        tolerationSeconds: 5\n",
        &format!("{at}[0].tolerationSeconds"),
    );
    assert!(msg.contains("NoExecute only"), "{msg}");
    pod_refused(
        "      - operator: Exists\n",
        "      - operator: Exists\n        tolerationSeconds: 5\n",
        &format!("{at}[3].tolerationSeconds"),
    );
    for bad in [
        "-1",
        "-9223372036854775808",
        "1.5",
        "1e30",
        "99999999999999999999",
        "five",
        "\"300\"",
    ] {
        pod_refused(
            "tolerationSeconds: 300",
            &format!("tolerationSeconds: {bad}"),
            &format!("{at}[2].tolerationSeconds"),
        );
    }
    // The reader refuses non-finite numbers anywhere.
    for bad in [".nan", ".inf", "-.inf"] {
        let text = pod_edited(
            "tolerationSeconds: 300",
            &format!("tolerationSeconds: {bad}"),
        );
        assert!(matches!(one(&text), Err(ApiError::Yaml(_))), "{bad}");
    }
    let p = pod_accepted("tolerationSeconds: 300", "tolerationSeconds: 0");
    assert_eq!(p.tolerations[2].toleration_seconds, Some(0));
    // A key is required unless the operator is Exists; Equal is the default.
    let msg = pod_refused(
        "      - key: dedicated\n        operator: Equal\n",
        "      - operator: Equal\n",
        &format!("{at}[1].key"),
    );
    assert!(msg.contains("unless operator is Exists"), "{msg}");
    pod_refused(
        "      - key: dedicated\n        operator: Equal\n",
        "      - key: \"\"\n",
        &format!("{at}[1].key"),
    );
    let p = pod_accepted("        operator: Equal\n", "");
    assert_eq!(
        p.tolerations[1].operator_or_default(),
        TolerationOperator::Equal
    );
    // Malformed keys and values.
    for key in ["../x", "a b", "-a", "UPPER.example/x", &"k".repeat(64)] {
        pod_refused(
            "key: dedicated",
            &format!("key: \"{key}\""),
            &format!("{at}[1].key"),
        );
    }
    for value in ["m l", "../x", "-ml", &"v".repeat(64)] {
        pod_refused(
            "value: ml",
            &format!("value: \"{value}\""),
            &format!("{at}[1].value"),
        );
    }
    // Unknown fields and wrong types.
    pod_refused(
        "tolerationSeconds: 300",
        "tolerationSecond: 300",
        &format!("{at}[2].tolerationSecond"),
    );
    pod_refused(
        "key: dedicated",
        "key: [dedicated]",
        &format!("{at}[1].key"),
    );
    pod_refused("value: ml", "value: {a: b}", &format!("{at}[1].value"));
    pod_refused(
        "      - operator: Exists\n",
        "      - Exists\n",
        &format!("{at}[3]"),
    );
    let whole = "    tolerations:\n";
    let text = with_pod();
    let start = text.find(whole).unwrap();
    let end = text.find("    affinity:\n").unwrap();
    let list = &text[start..end];
    pod_refused(list, "    tolerations: {key: a}\n", at);
    pod_refused(list, "    tolerations: dedicated\n", at);
    // Too many: refused by the count alone.
    let many: String = (0..=MAX_TOLERATIONS)
        .map(|_| "      - operator: Exists\n        value: bad\n")
        .collect();
    let err = one(&pod_edited(list, &format!("{whole}{many}"))).unwrap_err();
    assert_eq!(err.field_errors().len(), 1, "{err}");
    assert_eq!(err.field_errors()[0].path, at);
    let enough: String = (0..MAX_TOLERATIONS)
        .map(|_| "      - operator: Exists\n")
        .collect();
    let p = pod_accepted(list, &format!("{whole}{enough}"));
    assert_eq!(p.tolerations.len(), MAX_TOLERATIONS);
    // Every bad toleration is reported at once.
    let text = pod_edited("key: dedicated", "key: ../x").replace(
        "        effect: NoSchedule\n",
        "        effect: NoSchedule\n        value: v\n",
    );
    let err = one(&text).unwrap_err();
    let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [format!("{at}[0].value"), format!("{at}[1].key")],
        "{err}"
    );
}

#[test]
fn refuses_bad_affinity() {
    let at = "spec.predictor.affinity";
    let text = with_pod();
    let start = text.find("    affinity:\n").unwrap();
    let end = text.find("    serviceAccountName:").unwrap();
    let block = &text[start..end];
    // Not a mapping.
    for bad in ["[nodeAffinity]", "nodeAffinity", "3", "true"] {
        let msg = pod_refused(block, &format!("    affinity: {bad}\n"), at);
        assert!(msg.contains("expected a mapping"), "{msg}");
    }
    // Only the three fields of Kubernetes' Affinity, each a mapping.
    let msg = pod_refused(
        "      nodeAffinity:\n",
        "      nodeAfinity:\n",
        &format!("{at}.nodeAfinity"),
    );
    assert!(
        msg.contains("nodeAffinity, podAffinity or podAntiAffinity"),
        "{msg}"
    );
    pod_refused(block, "    affinity: {../x: {}}\n", &format!("{at}.../x"));
    pod_refused(block, "    affinity: {\"\": {}}\n", &format!("{at}."));
    for bad in ["3", "[a]", "yes", "null", "\"x\""] {
        pod_refused(
            block,
            &format!("    affinity: {{podAffinity: {bad}}}\n"),
            &format!("{at}.podAffinity"),
        );
    }
    // Its inside is passed through as written, whatever its fields.
    let p = pod_accepted(
        block,
        "    affinity: {podAffinity: {someFutureField: [1, 2.5, null, {a: b}]}}\n",
    );
    assert_eq!(
        p.affinity.unwrap().0["podAffinity"]["someFutureField"][1],
        2.5
    );
    // At most 64 KiB as JSON.
    let big = "x".repeat(MAX_AFFINITY_BYTES);
    let msg = pod_refused(
        block,
        &format!("    affinity: {{nodeAffinity: {{a: {big}}}}}\n"),
        at,
    );
    assert!(msg.contains("at most 65536"), "{msg}");
    let fits = "x".repeat(MAX_AFFINITY_BYTES - 100);
    pod_accepted(
        block,
        &format!("    affinity: {{nodeAffinity: {{a: {fits}}}}}\n"),
    );
    // Deep nesting stops at the reader's limits rather than overflowing the stack.
    let deep = format!(
        "    affinity: {{nodeAffinity: {}{}}}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(
        one(&pod_edited(block, &deep)),
        Err(ApiError::Yaml(_))
    ));
}

#[test]
fn refuses_bad_service_account_names() {
    let at = "spec.predictor.serviceAccountName";
    let long = "a".repeat(254);
    for bad in [
        "../x",
        "..",
        ".",
        "a/b",
        "Models",
        "a_b",
        "-a",
        "a-",
        "a..b",
        ".a",
        "a.",
        "a b",
        "\"\"",
        "\"a\\u0000\"",
        long.as_str(),
    ] {
        pod_refused(
            "serviceAccountName: models-reader",
            &format!("serviceAccountName: {bad}"),
            at,
        );
    }
    for bad in ["[a]", "{a: b}", "5", "true"] {
        pod_refused(
            "serviceAccountName: models-reader",
            &format!("serviceAccountName: {bad}"),
            at,
        );
    }
    for good in [
        "a",
        "models-reader",
        "team.models-reader-2",
        &"a".repeat(253),
    ] {
        let p = pod_accepted(
            "serviceAccountName: models-reader",
            &format!("serviceAccountName: {good}"),
        );
        assert_eq!(p.service_account_name.as_deref(), Some(good));
    }
    assert!(dns1123_subdomain("default").is_ok());
    assert!(dns1123_subdomain("").is_err());
    assert!(dns1123_subdomain("../etc/passwd").is_err());
}

#[test]
fn validate_checks_pod_settings_built_in_code() {
    let mut isvc = InferenceService::new(
        "iris",
        PredictorSpec::new(ModelSpec::new(ModelFormat::Onnx, "/m/model.onnx")),
    );
    isvc.validate().unwrap();
    let p = &mut isvc.spec.predictor;
    p.node_selector.insert("../x".into(), "y".into());
    p.tolerations.push(Toleration {
        key: Some("k".into()),
        operator: Some(TolerationOperator::Exists),
        value: Some("v".into()),
        effect: Some(TaintEffect::NoSchedule),
        toleration_seconds: Some(-5),
    });
    let mut affinity = serde_json::Map::new();
    affinity.insert("nodeSelector".into(), serde_json::json!({}));
    p.affinity = Some(Affinity(affinity));
    p.service_account_name = Some("../x".into());
    let err = isvc.validate().unwrap_err();
    let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.predictor.nodeSelector[../x]",
            "spec.predictor.tolerations[0].value",
            "spec.predictor.tolerations[0].tolerationSeconds",
            "spec.predictor.affinity.nodeSelector",
            "spec.predictor.serviceAccountName",
        ],
        "{err}"
    );
    // A negative tolerationSeconds with NoExecute is refused for its sign.
    let t = &mut isvc.spec.predictor.tolerations[0];
    t.effect = Some(TaintEffect::NoExecute);
    t.value = None;
    let err = isvc.validate().unwrap_err().to_string();
    assert!(
        err.contains("tolerationSeconds: must be >= 0, not -5"),
        "{err}"
    );
}

// ---- KServe ------------------------------------------------------------------

fn kserve(text: &str) -> Result<InferenceService, ApiError> {
    one(text)
}

fn kserve_refused(text: &str, path: &str) -> String {
    let msg = match kserve(text) {
        Ok(isvc) => panic!("accepted: {isvc:?}"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains(&format!("{path}:")),
        "expected {path} in: {msg}"
    );
    msg
}

const KS: &str = r#"
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris
  namespace: kserve-test
  labels:
    team: ml
  annotations:
    serving.kserve.io/deploymentMode: Serverless
    example.com/keep: "yes"
spec:
  predictor:
    minReplicas: 0
    maxReplicas: 0
    scaleMetric: rps
    scaleTarget: 40
    containerConcurrency: 8
    timeout: 120
    canaryTrafficPercent: 25
    batcher:
      maxBatchSize: 16
      maxLatency: 300
    model:
      modelFormat:
        name: xgboost
      runtime: kserve-xgbserver
      protocolVersion: v2
      storageUri: gs://kfserving-examples/models/xgboost/iris
      env:
        - name: OMP_NUM_THREADS
          value: "1"
      resources:
        requests:
          cpu: 100m
          memory: 512Mi
        limits:
          cpu: "1"
          memory: 1Gi
          nvidia.com/gpu: "1"
"#;

#[test]
fn kserve_converts_every_supported_field() {
    let isvc = kserve(KS).unwrap();
    assert_eq!(isvc.api_version, API_VERSION);
    assert_eq!(isvc.metadata.namespace.as_deref(), Some("kserve-test"));
    assert_eq!(isvc.metadata.labels["team"], "ml");
    // Understood annotations are consumed; the user's own are kept.
    assert_eq!(
        isvc.metadata.annotations.keys().collect::<Vec<_>>(),
        ["example.com/keep"]
    );
    let p = &isvc.spec.predictor;
    assert_eq!(p.model.format, ModelFormat::Xgboost);
    assert_eq!(
        p.model.storage_uri,
        "gs://kfserving-examples/models/xgboost/iris"
    );
    assert_eq!(p.model.runtime, None);
    assert_eq!(p.min_replicas, Some(0));
    assert_eq!(p.max_replicas, None, "KServe's 0 is no bound");
    assert_eq!(p.scale_metric, Some(ScaleMetric::Rps));
    assert_eq!(p.scale_target, Some(40.0));
    assert_eq!(p.container_concurrency, Some(8));
    assert_eq!(p.timeout_seconds, Some(120));
    assert_eq!(p.canary_traffic_percent, Some(25));
    assert_eq!(
        p.batching,
        Some(Batching {
            max_batch_size: 16,
            max_queue_delay: Some(QueueDelay(300_000)),
            max_queue_size: None
        })
    );
    let r = p.resources.as_ref().unwrap();
    assert_eq!(
        r.cpu,
        Some(Quantity("1".into())),
        "limits win over requests"
    );
    assert_eq!(r.memory, Some(Quantity("1Gi".into())));
    assert_eq!(r.gpu, Some(1));
    assert_eq!(p.env[0].name, "OMP_NUM_THREADS");
    // And ours round-trips.
    assert_eq!(one(&to_yaml(&isvc).unwrap()).unwrap(), isvc);
}

#[test]
fn kserve_minimal_and_legacy_forms() {
    let isvc = kserve(
        "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n  name: a\nspec:\n  predictor:\n    model:\n      modelFormat: {name: onnx}\n      storageUri: s3://bkt/m.onnx\n",
    )
    .unwrap();
    assert_eq!(
        isvc.spec.predictor,
        PredictorSpec::new(ModelSpec::new(ModelFormat::Onnx, "s3://bkt/m.onnx"))
    );
    for (field, format) in [
        ("onnx", ModelFormat::Onnx),
        ("xgboost", ModelFormat::Xgboost),
        ("lightgbm", ModelFormat::Lightgbm),
    ] {
        let text = format!(
            "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n  name: a\nspec:\n  predictor:\n    {field}:\n      protocolVersion: v2\n      storageUri: gs://bucket/model\n"
        );
        assert_eq!(kserve(&text).unwrap().spec.predictor.model.format, format);
    }
    // Batcher defaults are KServe's; a batcher timeout is the request deadline.
    let text = KS.replace(
        "      maxBatchSize: 16\n      maxLatency: 300\n",
        "      timeout: 120\n",
    );
    let b = kserve(&text).unwrap().spec.predictor.batching.unwrap();
    assert_eq!(
        (b.max_batch_size, b.max_queue_delay),
        (32, Some(QueueDelay(5_000_000)))
    );
    // Explicit inferd runtimes.
    let text = KS
        .replace("name: xgboost", "name: onnx")
        .replace("kserve-xgbserver", "inferd-ort");
    let m = kserve(&text).unwrap().spec.predictor.model;
    assert_eq!(m.runtime.unwrap().onnx_backend, Some(OnnxBackend::Ort));
    // Annotations in place of fields.
    let text = KS
        .replace("    scaleMetric: rps\n    scaleTarget: 40\n", "")
        .replace(
            "    example.com/keep: \"yes\"\n",
            "    autoscaling.knative.dev/metric: concurrency\n    autoscaling.knative.dev/target: \"4\"\n    serving.kserve.io/autoscalerClass: none\n",
        );
    let p = kserve(&text).unwrap().spec.predictor;
    assert_eq!(
        (p.scale_metric, p.scale_target),
        (Some(ScaleMetric::Concurrency), Some(4.0))
    );
    assert_eq!(
        (p.min_replicas, p.max_replicas),
        (Some(0), Some(1)),
        "autoscalerClass none: fixed"
    );
    // Server-filled metadata and status from `kubectl get -o yaml`.
    let text = KS.replace(
        "  name: iris\n",
        "  name: iris\n  uid: 1234\n  resourceVersion: \"7\"\n  generation: 2\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\n",
    ) + "status:\n  url: http://iris.example.com\n";
    kserve(&text).unwrap();
}

#[test]
fn kserve_refuses_what_inferd_cannot_honour() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "  predictor:\n",
            "  transformer:\n    containers: []\n  predictor:\n",
            "spec.transformer",
        ),
        (
            "  predictor:\n",
            "  explainer:\n    art: {}\n  predictor:\n",
            "spec.explainer",
        ),
        (
            "  predictor:\n",
            "  canary: []\n  predictor:\n",
            "spec.canary",
        ),
        (
            "name: xgboost",
            "name: sklearn",
            "spec.predictor.model.modelFormat.name",
        ),
        (
            "name: xgboost",
            "name: pytorch",
            "spec.predictor.model.modelFormat.name",
        ),
        (
            "name: xgboost",
            "name: tensorflow",
            "spec.predictor.model.modelFormat.name",
        ),
        (
            "        name: xgboost\n",
            "        name: xgboost\n        version: \"1\"\n",
            "spec.predictor.model.modelFormat.version",
        ),
        (
            "    minReplicas: 0\n",
            "    minReplicas: 0\n    logger:\n      mode: all\n",
            "spec.predictor.logger",
        ),
        (
            "    minReplicas: 0\n",
            "    minReplicas: 0\n    containers:\n      - name: c\n        image: x\n",
            "spec.predictor.containers",
        ),
        (
            "    minReplicas: 0\n",
            "    minReplicas: 0\n    priorityClassName: high\n",
            "spec.predictor.priorityClassName",
        ),
        (
            "    minReplicas: 0\n",
            "    minReplicas: 0\n    volumes: []\n",
            "spec.predictor.volumes",
        ),
        (
            "      runtime: kserve-xgbserver\n",
            "      runtime: kserve-xgbserver\n      nodeSelector: {a: b}\n",
            "spec.predictor.model.nodeSelector",
        ),
        (
            "    minReplicas: 0\n",
            "    minReplicas: 0\n    autoScaling: {}\n",
            "spec.predictor.autoScaling",
        ),
        (
            "    minReplicas: 0\n",
            "    minReplicas: 0\n    workerSpec: {}\n",
            "spec.predictor.workerSpec",
        ),
        (
            "    minReplicas: 0\n",
            "    minReplicas: 0\n    name: blue\n",
            "spec.predictor.name",
        ),
        (
            "    minReplicas: 0\n",
            "    minReplicas: 0\n    sklearn:\n      storageUri: gs://bkt/m\n",
            "spec.predictor.sklearn",
        ),
        (
            "    minReplicas: 0\n",
            "    minReplicas: 0\n    minReplica: 1\n",
            "spec.predictor.minReplica",
        ),
        (
            "      runtime: kserve-xgbserver\n",
            "      runtime: my-runtime\n",
            "spec.predictor.model.runtime",
        ),
        (
            "      runtime: kserve-xgbserver\n",
            "      runtime: kserve-xgbserver\n      image: me/server:1\n",
            "spec.predictor.model.image",
        ),
        (
            "      runtime: kserve-xgbserver\n",
            "      runtime: kserve-xgbserver\n      args: [--x]\n",
            "spec.predictor.model.args",
        ),
        (
            "      runtime: kserve-xgbserver\n",
            "      runtime: kserve-xgbserver\n      runtimeVersion: \"2\"\n",
            "spec.predictor.model.runtimeVersion",
        ),
        (
            "      runtime: kserve-xgbserver\n",
            "      runtime: kserve-xgbserver\n      storage: {key: k}\n",
            "spec.predictor.model.storage",
        ),
        (
            "protocolVersion: v2",
            "protocolVersion: v3",
            "spec.predictor.model.protocolVersion",
        ),
        (
            "          value: \"1\"\n",
            "          valueFrom: {secretKeyRef: {name: s, key: k}}\n",
            "spec.predictor.model.env[0].valueFrom",
        ),
        (
            "          nvidia.com/gpu: \"1\"\n",
            "          ephemeral-storage: 1Gi\n",
            "spec.predictor.model.resources.limits[ephemeral-storage]",
        ),
        (
            "          nvidia.com/gpu: \"1\"\n",
            "          nvidia.com/gpu: half\n",
            "spec.predictor.model.resources.limits[nvidia.com/gpu]",
        ),
        (
            "scaleMetric: rps",
            "scaleMetric: cpu",
            "spec.predictor.scaleMetric",
        ),
        (
            "scaleMetric: rps",
            "scaleMetric: gpu",
            "spec.predictor.scaleMetric",
        ),
        (
            "scaleTarget: 40",
            "scaleTarget: 0",
            "spec.predictor.scaleTarget",
        ),
        (
            "minReplicas: 0",
            "minReplicas: -1",
            "spec.predictor.minReplicas",
        ),
        (
            "maxReplicas: 0",
            "maxReplicas: 99999999999",
            "spec.predictor.maxReplicas",
        ),
        ("timeout: 120", "timeout: 0", "spec.predictor.timeout"),
        ("timeout: 120", "timeout: 7200", "spec.predictor.timeout"),
        (
            "canaryTrafficPercent: 25",
            "canaryTrafficPercent: 101",
            "spec.predictor.canaryTrafficPercent",
        ),
        (
            "canaryTrafficPercent: 25",
            "canaryTrafficPercent: -3",
            "spec.predictor.canaryTrafficPercent",
        ),
        (
            "maxBatchSize: 16",
            "maxBatchSize: 0",
            "spec.predictor.batcher.maxBatchSize",
        ),
        (
            "maxBatchSize: 16",
            "maxBatchSize: 100000",
            "spec.predictor.batcher.maxBatchSize",
        ),
        (
            "maxLatency: 300",
            "maxLatency: -5",
            "spec.predictor.batcher.maxLatency",
        ),
        (
            "maxLatency: 300",
            "maxLatency: 61000",
            "spec.predictor.batcher.maxLatency",
        ),
        (
            "maxLatency: 300",
            "maxLatency: 300\n      timeout: 5",
            "spec.predictor.batcher.timeout",
        ),
        (
            "maxLatency: 300",
            "maxLatency: 300\n      maxBatch: 5",
            "spec.predictor.batcher.maxBatch",
        ),
        (
            "storageUri: gs://kfserving-examples/models/xgboost/iris",
            "storageUri: pvc://claim/iris",
            "spec.predictor.model.storageUri",
        ),
        (
            "storageUri: gs://kfserving-examples/models/xgboost/iris",
            "storageUri: gs://bkt/../iris",
            "spec.predictor.model.storageUri",
        ),
        (
            "storageUri: gs://kfserving-examples/models/xgboost/iris",
            "storageUri: gs://bkt/iris.onnx",
            "spec.predictor.model.storageUri",
        ),
        (
            "      storageUri: gs://kfserving-examples/models/xgboost/iris\n",
            "",
            "spec.predictor.model.storageUri",
        ),
        (
            "      modelFormat:\n        name: xgboost\n",
            "",
            "spec.predictor.model.modelFormat",
        ),
        ("  name: iris\n", "  name: Iris\n", "metadata.name"),
        (
            "  name: iris\n",
            "  name: iris\n  finalizers: [a]\n",
            "metadata.finalizers",
        ),
        (
            "serving.kserve.io/deploymentMode: Serverless",
            "serving.kserve.io/deploymentMode: ModelMesh",
            "metadata.annotations[serving.kserve.io/deploymentMode]",
        ),
        (
            "serving.kserve.io/deploymentMode: Serverless",
            "serving.kserve.io/autoscalerClass: keda",
            "metadata.annotations[serving.kserve.io/autoscalerClass]",
        ),
        (
            "serving.kserve.io/deploymentMode: Serverless",
            "serving.kserve.io/storageSecretName: s",
            "metadata.annotations[serving.kserve.io/storageSecretName]",
        ),
        (
            "serving.kserve.io/deploymentMode: Serverless",
            "autoscaling.knative.dev/target: lots",
            "metadata.annotations[autoscaling.knative.dev/target]",
        ),
        (
            "  predictor:\n",
            "  predictr: {}\n  predictor:\n",
            "spec.predictr",
        ),
        (
            "kind: InferenceService\n",
            "kind: InferenceService\nextra: 1\n",
            "extra",
        ),
    ];
    for (from, to, path) in cases {
        assert_eq!(KS.matches(from).count(), 1, "{from}");
        let msg = match kserve(&KS.replace(from, to)) {
            Ok(_) => panic!("accepted {to:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains(&format!("{path}:")),
            "expected {path} in: {msg}"
        );
        assert!(
            !msg.contains("unknown field")
                || path.ends_with("minReplica")
                || path.ends_with("maxBatch")
                || *path == "spec.predictr"
                || *path == "extra",
            "{msg}"
        );
    }
    // The message says why.
    let msg = kserve_refused(
        &KS.replace("  predictor:\n", "  transformer: {}\n  predictor:\n"),
        "spec.transformer",
    );
    assert!(
        msg.contains("transformers are not supported by inferd"),
        "{msg}"
    );
    let msg = kserve_refused(
        &KS.replace("name: xgboost", "name: sklearn"),
        "spec.predictor.model.modelFormat.name",
    );
    assert!(
        msg.contains("'sklearn' models are not served by inferd"),
        "{msg}"
    );
    // Two models, and none.
    let two = KS.replace(
        "    model:\n",
        "    onnx:\n      storageUri: gs://bkt/m.onnx\n    model:\n",
    );
    kserve_refused(&two, "spec.predictor.onnx");
    let none = "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n  name: a\nspec:\n  predictor:\n    minReplicas: 1\n";
    kserve_refused(none, "spec.predictor.model");
    // A legacy framework field with a modelFormat too.
    let both = "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n  name: a\nspec:\n  predictor:\n    onnx:\n      modelFormat: {name: onnx}\n      storageUri: gs://bkt/m\n";
    kserve_refused(both, "spec.predictor.onnx.modelFormat");
    // Wrong types are caught by the reader, with the path.
    kserve_refused(
        &KS.replace("minReplicas: 0", "minReplicas: many"),
        "spec.predictor.minReplicas",
    );
    kserve_refused(
        &KS.replace("timeout: 120", "timeout: 2m"),
        "spec.predictor.timeout",
    );
    // And every error of a document is reported together.
    let text = KS
        .replace("name: xgboost", "name: sklearn")
        .replace("timeout: 120", "timeout: 0");
    let err = kserve(&text).unwrap_err();
    let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"spec.predictor.model.modelFormat.name"),
        "{paths:?}"
    );
    assert!(paths.contains(&"spec.predictor.timeout"), "{paths:?}");
}

#[test]
fn kserve_samples_from_the_reference() {
    // S1: sklearn is refused; S4: pytorch with a batcher is refused.
    let s1 = "apiVersion: \"serving.kserve.io/v1beta1\"\nkind: \"InferenceService\"\nmetadata:\n  name: \"sklearn-iris\"\n  namespace: kserve-test\nspec:\n  predictor:\n    model:\n      modelFormat:\n        name: sklearn\n      storageUri: \"gs://kfserving-examples/models/sklearn/1.0/model\"\n";
    kserve_refused(s1, "spec.predictor.model.modelFormat.name");
    let s4 = "apiVersion: \"serving.kserve.io/v1beta1\"\nkind: \"InferenceService\"\nmetadata:\n  name: \"pytorch-batcher\"\nspec:\n  predictor:\n    minReplicas: 1\n    batcher:\n      maxBatchSize: 16\n      maxLatency: 300\n    pytorch:\n      storageUri: \"gs://kfserving-examples/models/torchserve/image_classifier/v1\"\n";
    kserve_refused(s4, "spec.predictor.pytorch");
    // The same with an onnx model is accepted.
    let ok = s4.replace("pytorch:", "onnx:");
    let p = kserve(&ok).unwrap().spec.predictor;
    assert_eq!(
        p.batching.unwrap().max_queue_delay,
        Some(QueueDelay(300_000))
    );
}

#[test]
fn kserve_carries_the_pod_settings_over() {
    let text = KS.replace("    model:\n", &format!("{POD}    model:\n"));
    let theirs = kserve(&text).unwrap().spec.predictor;
    let ours = one(&with_pod()).unwrap().spec.predictor;
    assert_eq!(theirs.node_selector, ours.node_selector);
    assert_eq!(theirs.tolerations, ours.tolerations);
    assert_eq!(theirs.affinity, ours.affinity);
    assert_eq!(
        theirs.service_account_name.as_deref(),
        Some("models-reader")
    );
    assert_eq!(theirs.tolerations.len(), 4);
    // And what KServe wrote comes out of inferd's YAML the same.
    let isvc = kserve(&text).unwrap();
    assert_eq!(one(&to_yaml(&isvc).unwrap()).unwrap(), isvc);
    // Without them, nothing is set.
    assert!(!kserve(KS).unwrap().spec.predictor.has_pod_settings());

    // Bad values are refused with their KServe paths.
    let bad = |from: &str, to: &str| {
        assert_eq!(text.matches(from).count(), 1, "{from}");
        text.replace(from, to)
    };
    kserve_refused(
        &bad("effect: NoExecute", "effect: Evict"),
        "spec.predictor.tolerations[2].effect",
    );
    kserve_refused(
        &bad("tolerationSeconds: 300", "tolerationSeconds: -300"),
        "spec.predictor.tolerations[2].tolerationSeconds",
    );
    kserve_refused(
        &bad(
            "serviceAccountName: models-reader",
            "serviceAccountName: ../x",
        ),
        "spec.predictor.serviceAccountName",
    );
    kserve_refused(
        &bad("      pool: gpu\n", "      ../pool: gpu\n"),
        "spec.predictor.nodeSelector[../pool]",
    );
    kserve_refused(
        &bad("      podAntiAffinity:\n", "      podAntiAfinity:\n"),
        "spec.predictor.affinity.podAntiAfinity",
    );
    kserve_refused(
        &bad(
            "    serviceAccountName: models-reader\n",
            "    serviceAccountName: [a]\n",
        ),
        "spec.predictor.serviceAccountName",
    );
    kserve_refused(
        &bad("operator: Equal", "operator: NotIn"),
        "spec.predictor.tolerations[1].operator",
    );
    kserve_refused(
        &bad("    affinity:\n", "    affinity: [a]\n    x:\n"),
        "spec.predictor.affinity",
    );
    // On the model (a container) they are refused, saying where they go.
    let msg = kserve_refused(
        &KS.replace(
            "      runtime: kserve-xgbserver\n",
            "      runtime: kserve-xgbserver\n      serviceAccountName: sa\n",
        ),
        "spec.predictor.model.serviceAccountName",
    );
    assert!(msg.contains("on the predictor"), "{msg}");
}

#[test]
fn the_examples_agree() {
    let ours = one(include_str!("../../../examples/iris.yaml")).unwrap();
    let theirs = one(include_str!("../../../examples/kserve-iris.yaml")).unwrap();
    assert_eq!(
        ours.spec.predictor.model.storage_uri,
        theirs.spec.predictor.model.storage_uri
    );
    assert_eq!(
        ours.spec.predictor.min_replicas,
        theirs.spec.predictor.min_replicas
    );
    assert_eq!(
        ours.spec.predictor.max_replicas,
        theirs.spec.predictor.max_replicas
    );
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let dir = ours.spec.predictor.model.local_path(&base).unwrap();
    assert!(dir.join("model.onnx").is_file(), "{}", dir.display());
}

#[test]
fn autoscaler_class_hpa_takes_a_cpu_target() {
    let text = edited(
        "    scaleMetric: rps\n    scaleTarget: 12.5\n",
        "    autoscalerClass: hpa\n    scaleTarget: 60\n",
    );
    let p = one(&text).unwrap().spec.predictor;
    assert_eq!(p.autoscaler_class, Some(AutoscalerClass::Hpa));
    assert_eq!(p.scale_target, Some(60.0));
    // Round trip.
    let yaml = serde_saphyr::to_string(&p).unwrap();
    assert!(yaml.contains("autoscalerClass: hpa"), "{yaml}");
    let kpa = edited(
        "    scaleMetric: rps\n",
        "    autoscalerClass: kpa\n    scaleMetric: rps\n",
    );
    assert_eq!(
        one(&kpa).unwrap().spec.predictor.autoscaler_class,
        Some(AutoscalerClass::Kpa)
    );
}

#[test]
fn autoscaler_class_refuses_bad_values_with_their_paths() {
    // Unknown class, wrong type.
    refused(
        "    scaleMetric: rps\n",
        "    autoscalerClass: keda\n    scaleMetric: rps\n",
        "spec.predictor.autoscalerClass",
    );
    refused(
        "    scaleMetric: rps\n",
        "    autoscalerClass: [hpa]\n    scaleMetric: rps\n",
        "spec.predictor.autoscalerClass",
    );
    // Under an HPA: a utilisation in percent, no KPA metric, a CPU request.
    let hpa = |target: &str| format!("    autoscalerClass: hpa\n    scaleTarget: {target}\n");
    for target in ["150", "0", "-5", "0.5"] {
        refused(
            "    scaleMetric: rps\n    scaleTarget: 12.5\n",
            &hpa(target),
            "spec.predictor.scaleTarget",
        );
    }
    refused(
        "    scaleTarget: 12.5\n",
        "    autoscalerClass: hpa\n",
        "spec.predictor.scaleMetric",
    );
    let text = edited(
        "    scaleMetric: rps\n    scaleTarget: 12.5\n",
        "    autoscalerClass: hpa\n",
    )
    .replace("      cpu: 500m\n", "");
    let msg = one(&text).expect_err("no cpu request").to_string();
    assert!(msg.contains("spec.predictor.resources.cpu:"), "{msg}");
}

#[test]
fn kserve_hpa_class_and_cpu_metric_convert() {
    let text = KS
        .replace(
            "    scaleMetric: rps\n    scaleTarget: 40\n",
            "    scaleMetric: cpu\n    scaleTarget: 75\n",
        )
        .replace(
            "    example.com/keep: \"yes\"\n",
            "    serving.kserve.io/autoscalerClass: hpa\n",
        )
        .replace("    minReplicas: 0\n", "    minReplicas: 1\n");
    let text = if text.contains("cpu:") {
        text
    } else {
        text.replace(
            "      storageUri: gs://kfserving-examples/models/xgboost/iris\n",
            "      storageUri: gs://kfserving-examples/models/xgboost/iris\n      resources:\n        requests:\n          cpu: \"1\"\n",
        )
    };
    let p = match kserve(&text) {
        Ok(isvc) => isvc.spec.predictor,
        Err(e) => panic!("{e}\n{text}"),
    };
    assert_eq!(p.autoscaler_class, Some(AutoscalerClass::Hpa));
    assert_eq!(p.scale_metric, None);
    assert_eq!(p.scale_target, Some(75.0));
    // Without the HPA class, cpu is still refused.
    kserve_refused(
        &KS.replace("    scaleMetric: rps\n", "    scaleMetric: cpu\n"),
        "spec.predictor.scaleMetric",
    );
}
