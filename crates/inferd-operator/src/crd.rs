//! The `InferenceService` CustomResourceDefinition, its schema generated from
//! inferd-api's types.
//!
//! schemars writes JSON Schema; Kubernetes wants a *structural* OpenAPI v3
//! schema: every node typed (or `x-kubernetes-int-or-string`), no `$ref`,
//! `nullable` instead of a `null` type, and `properties` never together with
//! `additionalProperties`. [`structural_schema`] generates with subschemas
//! inlined and OpenAPI 3's `nullable`, then [`make_structural`] removes what
//! Kubernetes refuses.

use std::collections::BTreeMap;

use inferd_api::{
    GROUP, InferenceServiceSpec, InferenceServiceStatus, KIND_INFERENCE_SERVICE, VERSION,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSON, JSONSchemaProps,
    JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The resource's plural name, as in `kubectl get inferenceservices`.
pub const PLURAL: &str = "inferenceservices";
/// `metadata.name` of the CRD.
pub const CRD_NAME: &str = "inferenceservices.serving.inferd.dev";
/// Short names; KServe owns `isvc`, so inferd's never collide with it.
pub const SHORT_NAMES: [&str; 2] = ["iisvc", "inferd-isvc"];
/// `kubectl get inferd` lists every inferd resource; `all` is left to
/// built-in kinds, as KServe does.
pub const CATEGORIES: [&str; 1] = ["inferd"];

/// The CustomResourceDefinition of `serving.inferd.dev/v1alpha1`
/// `InferenceService`: namespaced, one served and stored version, the status
/// as a subresource, and KServe-like printer columns.
pub fn crd() -> CustomResourceDefinition {
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(CRD_NAME.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "inferd".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: GROUP.to_owned(),
            names: CustomResourceDefinitionNames {
                kind: KIND_INFERENCE_SERVICE.to_owned(),
                list_kind: Some(format!("{KIND_INFERENCE_SERVICE}List")),
                plural: PLURAL.to_owned(),
                singular: Some("inferenceservice".to_owned()),
                short_names: Some(SHORT_NAMES.iter().map(|s| (*s).to_owned()).collect()),
                categories: Some(CATEGORIES.iter().map(|s| (*s).to_owned()).collect()),
            },
            scope: "Namespaced".to_owned(),
            versions: vec![CustomResourceDefinitionVersion {
                name: VERSION.to_owned(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(to_props(&structural_schema())),
                }),
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(json!({}))),
                    scale: None,
                }),
                additional_printer_columns: Some(printer_columns()),
                ..CustomResourceDefinitionVersion::default()
            }],
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    }
}

/// KServe's columns: the URL, readiness, the traffic of the `prev` and
/// `latest` tags (JSONPath filters on `.status.traffic`), the revisions by
/// name at `-o wide`, and age.
fn printer_columns() -> Vec<CustomResourceColumnDefinition> {
    let column = |name: &str, type_: &str, path: &str, priority: Option<i32>| {
        CustomResourceColumnDefinition {
            name: name.to_owned(),
            type_: type_.to_owned(),
            json_path: path.to_owned(),
            priority,
            ..CustomResourceColumnDefinition::default()
        }
    };
    vec![
        column("URL", "string", ".status.url", None),
        column(
            "Ready",
            "string",
            ".status.conditions[?(@.type==\"Ready\")].status",
            None,
        ),
        column(
            "Prev",
            "integer",
            ".status.traffic[?(@.tag==\"prev\")].percent",
            None,
        ),
        column(
            "Latest",
            "integer",
            ".status.traffic[?(@.tag==\"latest\")].percent",
            None,
        ),
        column(
            "LatestCreatedRevision",
            "string",
            ".status.latestCreatedRevision",
            Some(1),
        ),
        column(
            "LatestReadyRevision",
            "string",
            ".status.latestReadyRevision",
            Some(1),
        ),
        column("Age", "date", ".metadata.creationTimestamp", None),
    ]
}

/// The structural OpenAPI v3 schema of the whole object, as JSON.
pub fn structural_schema() -> Value {
    let spec = make_structural(schema_for::<InferenceServiceSpec>());
    let mut status = make_structural(schema_for::<InferenceServiceStatus>());
    if let Value::Object(m) = &mut status {
        m.insert(
            "description".to_owned(),
            json!("Observed state, written by the operator."),
        );
        // The operator's own fields (`resource::ServiceStatus`): without them
        // in the schema the API server would prune them from status patches.
        if let Some(Value::Object(props)) = m.get_mut("properties") {
            props.insert(
                "observedGeneration".to_owned(),
                json!({ "type": "integer", "format": "int64" }),
            );
            props.insert(
                "revisions".to_owned(),
                json!({
                    "description": "The revisions that still have objects, oldest first.",
                    "type": "array",
                    "items": make_structural(schema_for::<RevisionSchema>()),
                }),
            );
            props.insert(
                "rolledOut".to_owned(),
                json!({
                    "description": "Revisions that took all the traffic, oldest first.",
                    "type": "array",
                    "items": { "type": "string" },
                }),
            );
        }
    }
    json!({
        "description": "One served model: its files, how it scales, how traffic reaches it.",
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": { "type": "string" },
            "kind": { "type": "string" },
            "metadata": { "type": "object" },
            "spec": spec,
            "status": status,
        },
    })
}

/// The schema of `resource::RecordedRevision` (the control core's
/// `Revision`, which does not derive `JsonSchema`, plus `everReady`).
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct RevisionSchema {
    name: String,
    number: u32,
    template: TemplateSchema,
    created_at: u64,
    #[serde(default)]
    ever_ready: bool,
}

#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct TemplateSchema {
    model: inferd_api::ModelSpec,
    batching: Option<inferd_api::Batching>,
    resources: Option<inferd_api::Resources>,
    #[serde(default)]
    env: Vec<inferd_api::EnvVar>,
    container_concurrency: Option<u32>,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    tolerations: Vec<inferd_api::Toleration>,
    affinity: Option<inferd_api::Affinity>,
    service_account_name: Option<String>,
}

fn schema_for<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// Rewrites a schemars schema into Kubernetes' structural subset.
pub fn make_structural(schema: Value) -> Value {
    let Value::Object(mut m) = schema else {
        return schema;
    };
    // Not allowed, or meaningless, in a CRD.
    for key in ["$schema", "title", "$defs", "definitions", "examples"] {
        m.remove(key);
    }
    // `deny_unknown_fields` gives `additionalProperties: false`, which may not
    // stand beside `properties`; the API server prunes (or, with strict field
    // validation, refuses) unknown fields anyway.
    if m.contains_key("properties") || m.get("additionalProperties") == Some(&Value::Bool(false)) {
        m.remove("additionalProperties");
    }
    // `type: [T, "null"]` → `type: T, nullable: true`.
    if let Some(Value::Array(types)) = m.get("type").cloned() {
        let non_null: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        if non_null.len() < types.len() {
            m.insert("nullable".to_owned(), Value::Bool(true));
        }
        if let [only] = non_null.as_slice() {
            m.insert("type".to_owned(), only.clone());
        }
    }
    // `anyOf: [X, {type: null}]` (or `{enum: [null]}`, as schemars' OpenAPI
    // mode writes an optional inlined schema) → X with `nullable: true`.
    if let Some(Value::Array(any)) = m.get("anyOf").cloned() {
        let non_null: Vec<Value> = any.iter().filter(|s| !is_null(s)).cloned().collect();
        if non_null.len() < any.len() {
            m.remove("anyOf");
            m.insert("nullable".to_owned(), Value::Bool(true));
            if let [Value::Object(only)] = non_null.as_slice() {
                for (k, v) in only {
                    m.entry(k.clone()).or_insert_with(|| v.clone());
                }
            } else {
                m.insert("anyOf".to_owned(), Value::Array(non_null));
            }
        }
    }
    // An enum of strings that also allows null lists `null` among its values.
    if let Some(Value::Array(values)) = m.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    // Unsigned formats are not among the API server's (it warns
    // `unrecognized format "uint32"`): the signed one that holds every value,
    // with the unsigned type's bounds.
    if let Some(Value::String(format)) = m.get("format").cloned() {
        let unsigned = match format.as_str() {
            "uint8" => Some(("int32", Some(u64::from(u8::MAX)))),
            "uint16" => Some(("int32", Some(u64::from(u16::MAX)))),
            "uint32" => Some(("int64", Some(u64::from(u32::MAX)))),
            "uint64" | "uint" => Some(("int64", None)),
            _ => None,
        };
        if let Some((signed, max)) = unsigned {
            m.insert("format".to_owned(), Value::String(signed.to_owned()));
            m.entry("minimum".to_owned()).or_insert_with(|| json!(0));
            if let Some(max) = max {
                m.entry("maximum".to_owned()).or_insert_with(|| json!(max));
            }
        }
    }
    let mut out = Map::new();
    for (k, v) in m {
        let v = match (k.as_str(), v) {
            ("properties", Value::Object(props)) => Value::Object(
                props
                    .into_iter()
                    .map(|(name, s)| (name, make_structural(s)))
                    .collect(),
            ),
            ("items" | "additionalProperties", s @ Value::Object(_)) => make_structural(s),
            ("anyOf" | "allOf" | "oneOf", Value::Array(list)) => {
                Value::Array(list.into_iter().map(make_structural).collect())
            }
            (_, v) => v,
        };
        out.insert(k, v);
    }
    Value::Object(out)
}

/// A schema that admits only `null`.
fn is_null(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
        || schema
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty() && e.iter().all(Value::is_null))
}

/// The subset of keywords [`make_structural`] leaves, as k8s-openapi's type.
/// A test checks the conversion loses nothing.
pub fn to_props(schema: &Value) -> JSONSchemaProps {
    let text = |k: &str| schema.get(k).and_then(Value::as_str).map(str::to_owned);
    let float = |k: &str| schema.get(k).and_then(Value::as_f64);
    let int = |k: &str| schema.get(k).and_then(Value::as_i64);
    let flag = |k: &str| schema.get(k).and_then(Value::as_bool);
    let list = |k: &str| {
        schema
            .get(k)
            .and_then(Value::as_array)
            .map(|l| l.iter().map(to_props).collect::<Vec<_>>())
    };
    JSONSchemaProps {
        type_: text("type"),
        format: text("format"),
        description: text("description"),
        pattern: text("pattern"),
        properties: schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| {
                p.iter()
                    .map(|(name, s)| (name.clone(), to_props(s)))
                    .collect()
            }),
        required: schema.get("required").and_then(Value::as_array).map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        }),
        additional_properties: schema
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .map(|a| JSONSchemaPropsOrBool::Schema(Box::new(to_props(a)))),
        items: schema
            .get("items")
            .filter(|i| i.is_object())
            .map(|i| JSONSchemaPropsOrArray::Schema(Box::new(to_props(i)))),
        enum_: schema
            .get("enum")
            .and_then(Value::as_array)
            .map(|e| e.iter().cloned().map(JSON).collect()),
        default: schema.get("default").cloned().map(JSON),
        nullable: flag("nullable"),
        minimum: float("minimum"),
        maximum: float("maximum"),
        min_length: int("minLength"),
        max_length: int("maxLength"),
        min_items: int("minItems"),
        max_items: int("maxItems"),
        any_of: list("anyOf"),
        x_kubernetes_int_or_string: flag("x-kubernetes-int-or-string"),
        x_kubernetes_preserve_unknown_fields: flag("x-kubernetes-preserve-unknown-fields"),
        ..JSONSchemaProps::default()
    }
}
