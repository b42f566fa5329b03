//! The CRD: its snapshot, that its schema is structural and loses nothing in
//! k8s-openapi's type, and that it accepts the examples and refuses bad ones.

mod support;

use inferd_api::{Condition, InferenceServiceStatus, ModelState, ModelStatus, TrafficTarget};
use inferd_operator::crd::{self, structural_schema};
use inferd_operator::structural::violations;
use serde_json::{Value, json};
use support::{assert_snapshot, repo_file};

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("YAML")
}

fn example(name: &str) -> Value {
    let path = repo_file(name);
    let text = std::fs::read_to_string(&path).expect("example");
    yaml(&text)
}

#[test]
fn crd_matches_snapshot() {
    assert_snapshot("crd.yaml", &inferd_operator::crds_yaml().expect("yaml"));
}

#[test]
fn crd_names_and_version() {
    let c = crd::crd();
    assert_eq!(
        c.metadata.name.as_deref(),
        Some("inferenceservices.serving.inferd.dev")
    );
    assert_eq!(c.spec.group, "serving.inferd.dev");
    assert_eq!(c.spec.scope, "Namespaced");
    let short = c.spec.names.short_names.clone().unwrap_or_default();
    assert!(!short.iter().any(|s| s == "isvc"), "isvc is KServe's");
    assert_eq!(c.spec.versions.len(), 1);
    let v = &c.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.served && v.storage);
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "URL",
            "Ready",
            "Prev",
            "Latest",
            "LatestCreatedRevision",
            "LatestReadyRevision",
            "Age"
        ]
    );
}

/// Kubernetes' structural rules that the generator must meet.
fn assert_structural(schema: &Value, path: &str) {
    let m = schema.as_object().expect("a schema is an object");
    for key in ["$ref", "$schema", "definitions", "$defs", "oneOf", "allOf"] {
        assert!(!m.contains_key(key), "{path}: has {key}");
    }
    assert!(
        !(m.contains_key("properties") && m.contains_key("additionalProperties")),
        "{path}: properties and additionalProperties together"
    );
    let int_or_string = m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if int_or_string {
        assert!(!m.contains_key("type"), "{path}: int-or-string with a type");
        assert_eq!(
            m.get("anyOf"),
            Some(&json!([{"type": "integer"}, {"type": "string"}])),
            "{path}"
        );
        return;
    }
    let type_ = m.get("type").and_then(Value::as_str);
    assert!(
        type_.is_some(),
        "{path}: no single type: {}",
        serde_json::to_string(schema).unwrap_or_default()
    );
    assert!(!m.contains_key("anyOf"), "{path}: anyOf beside a type");
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (name, s) in props {
            assert_structural(s, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = m.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
}

#[test]
fn schema_is_structural() {
    let schema = structural_schema();
    assert_structural(&schema, "<root>");
    // Only the pods' affinity, passed through as written, keeps unknown fields.
    let predictor = &schema["properties"]["spec"]["properties"]["predictor"]["properties"];
    let template = &schema["properties"]["status"]["properties"]["revisions"]["items"]["properties"]
        ["template"]["properties"];
    let mut kept = schema.clone();
    for at in [predictor, template] {
        assert_eq!(
            at["affinity"]["x-kubernetes-preserve-unknown-fields"],
            json!(true)
        );
        assert_eq!(at["affinity"]["type"], json!("object"));
        assert_eq!(
            at["nodeSelector"]["additionalProperties"],
            json!({ "type": "string" })
        );
    }
    for path in [
        "/properties/spec/properties/predictor/properties/affinity",
        "/properties/status/properties/revisions/items/properties/template/properties/affinity",
    ] {
        if let Some(Value::Object(m)) = kept.pointer_mut(path) {
            m.remove("x-kubernetes-preserve-unknown-fields");
        }
    }
    assert!(
        !serde_json::to_string(&kept)
            .unwrap_or_default()
            .contains("x-kubernetes-preserve-unknown-fields"),
        "nothing else needs unknown fields kept"
    );
    // Optional fields are nullable, required ones listed.
    let predictor = &schema["properties"]["spec"]["properties"]["predictor"];
    assert_eq!(predictor["required"], json!(["model"]));
    assert_eq!(predictor["properties"]["batching"]["nullable"], json!(true));
    assert_eq!(
        predictor["properties"]["model"]["properties"]["format"]["enum"],
        json!(["onnx", "xgboost", "lightgbm"])
    );
}

/// Numbers as f64, so `0` and `0.0` compare equal.
fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        v => v,
    }
}

/// Every `format` in `schema`, with its path.
fn formats(schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match schema {
        Value::Object(m) => {
            if let Some(Value::String(f)) = m.get("format") {
                out.push((path.to_owned(), f.clone()));
            }
            for (k, v) in m {
                formats(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(list) => {
            for (i, v) in list.iter().enumerate() {
                formats(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_format_is_one_the_api_server_knows() {
    // The formats kube-apiserver validates (k8s.io/apiextensions-apiserver's
    // supported list); any other draws a warning on every apply.
    const KNOWN: [&str; 24] = [
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "datetime",
    ];
    let schema = structural_schema();
    let mut found = Vec::new();
    formats(&schema, "", &mut found);
    let unknown: Vec<_> = found
        .iter()
        .filter(|(_, f)| {
            !KNOWN.contains(&f.as_str())
                && !["int32", "int64", "float", "double", "date-time"].contains(&f.as_str())
        })
        .collect();
    assert!(unknown.is_empty(), "{unknown:?}");
    // The unsigned fields keep their bounds.
    let batch = &schema["properties"]["spec"]["properties"]["predictor"]["properties"]["batching"]
        ["properties"]["maxBatchSize"];
    assert_eq!(batch["format"], "int64");
    assert_eq!(batch["minimum"], 0.0);
    assert_eq!(batch["maximum"], json!(u32::MAX));
    assert!(found.iter().any(|(_, f)| f == "int64"));
}

#[test]
fn conversion_to_k8s_type_is_lossless() {
    let schema = structural_schema();
    let props = crd::to_props(&schema);
    let back = serde_json::to_value(&props).expect("serialize");
    assert_eq!(normalize(back), normalize(schema));
}

#[test]
fn accepts_the_examples() {
    let schema = structural_schema();
    for name in [
        "examples/iris.yaml",
        "examples/iris-v2.yaml",
        "examples/k8s/iris.yaml",
    ] {
        let doc = example(name);
        assert_eq!(violations(&schema, &doc), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn accepts_a_status_as_the_control_plane_writes_it() {
    let status = InferenceServiceStatus {
        url: Some("http://iris.default.svc".into()),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: None,
            message: None,
            last_transition_time: Some("2026-01-01T00:00:00Z".into()),
        }],
        latest_ready_revision: Some("iris-00002".into()),
        latest_created_revision: Some("iris-00002".into()),
        traffic: vec![TrafficTarget {
            revision_name: "iris-00002".into(),
            percent: 100,
            latest_revision: true,
            tag: Some("latest".into()),
        }],
        model_status: Some(ModelStatus {
            state: ModelState::Loaded,
            reason: None,
        }),
    };
    let mut doc = example("examples/iris.yaml");
    doc["status"] = serde_json::to_value(&status).expect("status");
    assert_eq!(violations(&structural_schema(), &doc), Vec::<String>::new());
}

#[test]
fn accepts_int_or_string_fields_in_both_forms() {
    let schema = structural_schema();
    let mut doc = example("examples/iris.yaml");
    doc["spec"]["predictor"]["batching"]["maxQueueDelay"] = json!(500);
    doc["spec"]["predictor"]["resources"]["cpu"] = json!(2);
    assert_eq!(violations(&schema, &doc), Vec::<String>::new());
}

#[test]
fn refuses_wrong_types_unknown_fields_and_bad_values() {
    let schema = structural_schema();
    let cases = [
        (
            "spec.predictor.maxReplicas",
            json!("four"),
            "spec.predictor.maxReplicas: must be of type integer",
        ),
        (
            "spec.predictor.scaleTarget",
            json!(true),
            "spec.predictor.scaleTarget: must be of type number",
        ),
        (
            "spec.predictor.model.format",
            json!("pytorch"),
            "spec.predictor.model.format: \"pytorch\" is not one of",
        ),
        (
            "spec.predictor.minReplicas",
            json!(-1),
            "spec.predictor.minReplicas: must be >= 0",
        ),
        (
            "spec.predictor.resources.memory",
            json!(1.5),
            "spec.predictor.resources.memory: must be an integer or a string",
        ),
        (
            "spec.predictor.replicas",
            json!(3),
            "spec.predictor.replicas: unknown field",
        ),
    ];
    for (path, value, want) in cases {
        let mut doc = example("examples/iris.yaml");
        let mut at = &mut doc;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            at = &mut at[*part];
        }
        at[parts[parts.len() - 1]] = value;
        let found = violations(&schema, &doc);
        assert!(
            found.iter().any(|v| v.starts_with(want)),
            "{path}: want {want}, got {found:?}"
        );
    }
    // A missing required field.
    let mut doc = example("examples/iris.yaml");
    if let Some(model) = doc["spec"]["predictor"]["model"].as_object_mut() {
        model.remove("storageUri");
    }
    assert_eq!(
        violations(&schema, &doc),
        ["spec.predictor.model.storageUri: missing required field"]
    );
}
