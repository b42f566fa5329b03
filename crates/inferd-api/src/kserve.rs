//! KServe's `serving.kserve.io/v1beta1` InferenceService, read as written and
//! converted to inferd's. What inferd cannot honour is refused with its path,
//! never dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, Errors};
use crate::types::{
    Affinity, AutoscalerClass, Batching, EnvVar, InferenceService, InferenceServiceSpec,
    ModelFormat, ModelSpec, ObjectMeta, OnnxBackend, PredictorSpec, Quantity, QueueDelay,
    Resources, RuntimeOptions, ScaleMetric, Toleration,
};

/// `apiVersion` of KServe's InferenceService.
pub const KSERVE_API_VERSION: &str = "serving.kserve.io/v1beta1";

/// KServe's batcher defaults (KServe `pkg/batcher`): 32 rows, 5000 ms.
const KSERVE_DEFAULT_MAX_BATCH_SIZE: u32 = 32;
const KSERVE_DEFAULT_MAX_LATENCY_MS: u64 = 5000;

/// A KServe InferenceService. Fields inferd understands are typed; every other
/// key lands in `other` and is refused by [`from_kserve`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KServeInferenceService {
    pub api_version: String,
    pub kind: String,
    pub metadata: KServeMeta,
    pub spec: KServeSpec,
    /// Observed state from a cluster (`kubectl get -o yaml`); not carried over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KServeMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KServeSpec {
    pub predictor: KServePredictor,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KServePredictor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<KServeModel>,
    /// The legacy framework fields inferd can serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<KServeModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xgboost: Option<KServeModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lightgbm: Option<KServeModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_traffic_percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batcher: Option<KServeBatcher>,
    /// KServe's predictor is a pod spec too; these of its pod fields are
    /// carried over as they are, the others refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KServeModel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_format: Option<KServeModelFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<KServeResources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<KServeEnvVar>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KServeModelFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KServeResources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KServeEnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KServeBatcher {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<i64>,
    /// Milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency: Option<i64>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Metadata a cluster fills in; present in `kubectl get -o yaml` output and not
/// a request of the user's, so it is not carried over.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
];

/// Why a KServe field is refused, for the fields KServe has and inferd does not honour.
fn unsupported(field: &str) -> Option<&'static str> {
    Some(match field {
        "transformer" => "transformers are not supported by inferd",
        "explainer" => "explainers are not supported by inferd",
        "canary" => {
            "spec.canary (Standard-mode canaries) is not supported; use predictor.canaryTrafficPercent"
        }
        "sklearn" | "tensorflow" | "pytorch" | "triton" | "huggingface" | "pmml" | "paddle" => {
            "this model format is not served by inferd (onnx, xgboost or lightgbm only)"
        }
        "containers" | "initContainers" | "image" | "command" | "args" | "ports" => {
            "custom containers are not supported; inferd runs its own server"
        }
        "logger" => "the request logger is not supported by inferd",
        "autoScaling" | "scaleMetricType" => {
            "only scaleMetric (concurrency or rps) and scaleTarget are supported"
        }
        "workerSpec" => "multi-node predictors are not supported by inferd",
        "storageUris" | "storage" | "storageContainerName" => {
            "only a single storageUri is supported"
        }
        "name" => "named predictors are not supported by inferd",
        "deploymentStrategy" => "inferd rolls out revisions itself",
        "runtimeVersion" => "inferd runs its own runtime; runtime versions do not apply",
        "valueFrom" => "only literal values are supported",
        "finalizers" | "ownerReferences" | "generateName" => {
            "not supported by inferd's local control plane"
        }
        // Read on the predictor; met anywhere else (in the model, say), they are misplaced.
        "serviceAccountName" | "nodeSelector" | "tolerations" | "affinity" => {
            "a pod setting: inferd reads it on the predictor (spec.predictor), beside model"
        }
        "volumes"
        | "volumeMounts"
        | "imagePullSecrets"
        | "securityContext"
        | "priorityClassName"
        | "schedulerName"
        | "runtimeClassName"
        | "hostNetwork"
        | "hostIPC"
        | "hostPID"
        | "dnsPolicy"
        | "nodeName"
        | "labels"
        | "annotations"
        | "livenessProbe"
        | "readinessProbe"
        | "startupProbe"
        | "lifecycle"
        | "envFrom"
        | "workingDir"
        | "imagePullPolicy"
        | "terminationGracePeriodSeconds"
        | "topologySpreadConstraints"
        | "claims" => "pod and container settings are not supported by inferd",
        _ => return None,
    })
}

fn refuse_other(e: &mut Errors, at: &str, other: &BTreeMap<String, Value>) {
    for key in other.keys() {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match unsupported(key) {
            Some(why) => e.push(path, why),
            None => e.push(path, "unknown field"),
        }
    }
}

fn int_u32(e: &mut Errors, path: &str, v: Option<i64>, min: i64) -> Option<u32> {
    let v = v?;
    if v < min {
        e.push(path, format!("must be >= {min}, not {v}"));
        return None;
    }
    match u32::try_from(v) {
        Ok(n) => Some(n),
        Err(_) => {
            e.push(path, format!("{v} is too large"));
            None
        }
    }
}

/// Converts a KServe InferenceService to inferd's, then validates it. Each
/// field inferd cannot honour is an error naming its path.
pub fn from_kserve(k: &KServeInferenceService) -> Result<InferenceService, ApiError> {
    let mut e = Errors::default();
    if k.api_version != KSERVE_API_VERSION {
        e.push(
            "apiVersion",
            format!("must be {KSERVE_API_VERSION}, not '{}'", k.api_version),
        );
    }
    if k.kind != "InferenceService" {
        e.push(
            "kind",
            format!("must be InferenceService, not '{}'", k.kind),
        );
    }
    refuse_other(&mut e, "", &k.other);
    let meta_other: BTreeMap<String, Value> = k
        .metadata
        .other
        .iter()
        .filter(|(key, _)| !SERVER_METADATA.contains(&key.as_str()))
        .map(|(key, v)| (key.clone(), v.clone()))
        .collect();
    refuse_other(&mut e, "metadata", &meta_other);
    refuse_other(&mut e, "spec", &k.spec.other);

    let p = &k.spec.predictor;
    let at = "spec.predictor";
    refuse_other(&mut e, at, &p.other);

    // The model: `model` with modelFormat, or one legacy framework field.
    let mut sources: Vec<(&str, &KServeModel, Option<ModelFormat>)> = Vec::new();
    if let Some(m) = &p.model {
        sources.push(("model", m, None));
    }
    for (field, m, f) in [
        ("onnx", &p.onnx, ModelFormat::Onnx),
        ("xgboost", &p.xgboost, ModelFormat::Xgboost),
        ("lightgbm", &p.lightgbm, ModelFormat::Lightgbm),
    ] {
        if let Some(m) = m {
            sources.push((field, m, Some(f)));
        }
    }
    let model = match sources.as_slice() {
        [] => {
            if !p.other.keys().any(|k| unsupported(k).is_some()) {
                e.push(
                    format!("{at}.model"),
                    "is required (modelFormat and storageUri)",
                );
            }
            None
        }
        [(field, m, legacy)] => convert_model(&mut e, &format!("{at}.{field}"), m, *legacy),
        [_, (second, ..), ..] => {
            e.push(
                format!("{at}.{second}"),
                "a predictor has one model; this is a second",
            );
            None
        }
    };

    let annotations = &k.metadata.annotations;
    let mut scale_metric = p
        .scale_metric
        .clone()
        .map(|m| (format!("{at}.scaleMetric"), m));
    let mut scale_target = p.scale_target.map(|t| (format!("{at}.scaleTarget"), t));
    let mut fixed_replicas = false;
    let mut autoscaler_class = None;
    let mut kept_annotations = BTreeMap::new();
    for (key, value) in annotations {
        let path = format!("metadata.annotations[{key}]");
        match key.as_str() {
            "serving.kserve.io/deploymentMode" => match value.as_str() {
                "Standard" | "RawDeployment" | "Knative" | "Serverless" => {}
                other => e.push(
                    path,
                    format!("deployment mode '{other}' is not supported by inferd"),
                ),
            },
            "serving.kserve.io/autoscalerClass" => match value.as_str() {
                "hpa" => autoscaler_class = Some(AutoscalerClass::Hpa),
                "kpa" => autoscaler_class = Some(AutoscalerClass::Kpa),
                "none" | "external" => fixed_replicas = true,
                other => e.push(
                    path,
                    format!(
                        "autoscaler class '{other}' is not supported (hpa, kpa, none or external)"
                    ),
                ),
            },
            "autoscaling.knative.dev/class" => match value.as_str() {
                "kpa.autoscaling.knative.dev" | "hpa.autoscaling.knative.dev" => {}
                other => e.push(path, format!("autoscaler class '{other}' is not supported")),
            },
            // The annotations stand in for the fields; both may be given if they agree.
            "autoscaling.knative.dev/metric" => match &scale_metric {
                None => scale_metric = Some((path, value.clone())),
                Some((_, field)) if field == value => {}
                Some((_, field)) => e.push(
                    path,
                    format!("'{value}' conflicts with predictor.scaleMetric ({field})"),
                ),
            },
            "autoscaling.knative.dev/target" => {
                match (value.trim().parse::<i64>(), &scale_target) {
                    (Err(_), _) => e.push(path, format!("'{value}' is not a whole number")),
                    (Ok(t), None) => scale_target = Some((path, t)),
                    (Ok(t), Some((_, field))) if t == *field => {}
                    (Ok(_), Some((_, field))) => e.push(
                        path,
                        format!("'{value}' conflicts with predictor.scaleTarget ({field})"),
                    ),
                }
            }
            "kubectl.kubernetes.io/last-applied-configuration" => {}
            k if k.starts_with("serving.kserve.io/")
                || k.starts_with("autoscaling.knative.dev/")
                || k.starts_with("serving.knative.dev/") =>
            {
                e.push(
                    path,
                    "this KServe/Knative annotation is not supported by inferd",
                );
            }
            _ => {
                kept_annotations.insert(key.clone(), value.clone());
            }
        }
    }

    let scale_metric = scale_metric.and_then(|(path, m)| match m.as_str() {
        "concurrency" => Some(ScaleMetric::Concurrency),
        "rps" => Some(ScaleMetric::Rps),
        // The HPA scales on CPU, its target is `scaleTarget`.
        "cpu" if autoscaler_class == Some(AutoscalerClass::Hpa) => None,
        "cpu" | "memory" => {
            e.push(
                path,
                format!("scaling on {m} is not supported; inferd scales on concurrency or rps"),
            );
            None
        }
        other => {
            e.push(
                path,
                format!("'{other}' is not a scale metric (concurrency or rps)"),
            );
            None
        }
    });
    let scale_target = scale_target.and_then(|(path, t)| {
        if t <= 0 {
            e.push(path, format!("must be > 0, not {t}"));
            None
        } else {
            Some(t as f64)
        }
    });

    let min_replicas = int_u32(&mut e, &format!("{at}.minReplicas"), p.min_replicas, 0);
    // KServe's maxReplicas 0 means no bound.
    let mut max_replicas =
        int_u32(&mut e, &format!("{at}.maxReplicas"), p.max_replicas, 0).filter(|&m| m > 0);
    if fixed_replicas {
        max_replicas = Some(min_replicas.unwrap_or(1).max(1));
    }
    let container_concurrency = int_u32(
        &mut e,
        &format!("{at}.containerConcurrency"),
        p.container_concurrency,
        0,
    );
    let mut timeout_seconds = int_u32(&mut e, &format!("{at}.timeout"), p.timeout, 1);
    let canary_traffic_percent = int_u32(
        &mut e,
        &format!("{at}.canaryTrafficPercent"),
        p.canary_traffic_percent,
        0,
    );

    let batching = p.batcher.as_ref().map(|b| {
        let bat = format!("{at}.batcher");
        refuse_other(&mut e, &bat, &b.other);
        let size = int_u32(&mut e, &format!("{bat}.maxBatchSize"), b.max_batch_size, 1)
            .unwrap_or(KSERVE_DEFAULT_MAX_BATCH_SIZE);
        let latency_ms = match b.max_latency {
            None => KSERVE_DEFAULT_MAX_LATENCY_MS,
            Some(ms) if ms < 0 => {
                e.push(
                    format!("{bat}.maxLatency"),
                    format!("must be >= 0, not {ms}"),
                );
                0
            }
            Some(ms) => ms as u64,
        };
        let timeout = int_u32(&mut e, &format!("{bat}.timeout"), b.timeout, 1);
        match (timeout, timeout_seconds) {
            (Some(t), None) => timeout_seconds = Some(t),
            (Some(t), Some(p)) if t != p => e.push(
                format!("{bat}.timeout"),
                format!("{t}s differs from predictor.timeout ({p}s); inferd has one deadline"),
            ),
            _ => {}
        }
        let delay = latency_ms.checked_mul(1000).map(QueueDelay);
        if delay.is_none() {
            e.push(
                format!("{bat}.maxLatency"),
                format!("{latency_ms} is too large"),
            );
        }
        Batching {
            max_batch_size: size,
            max_queue_delay: delay,
            max_queue_size: None,
        }
    });

    let Some((model, resources, env)) = model else {
        return Err(Errors::into_result(e)
            .err()
            .unwrap_or_else(|| ApiError::field(format!("{at}.model"), "is required")));
    };
    let isvc = InferenceService {
        api_version: crate::types::API_VERSION.to_owned(),
        kind: crate::types::KIND_INFERENCE_SERVICE.to_owned(),
        metadata: ObjectMeta {
            name: k.metadata.name.clone(),
            namespace: k.metadata.namespace.clone(),
            labels: k.metadata.labels.clone(),
            annotations: kept_annotations,
        },
        spec: InferenceServiceSpec {
            predictor: PredictorSpec {
                model,
                min_replicas,
                max_replicas,
                scale_metric,
                scale_target,
                autoscaler_class,
                container_concurrency,
                timeout_seconds,
                canary_traffic_percent,
                batching,
                resources,
                env,
                node_selector: p.node_selector.clone(),
                tolerations: p.tolerations.clone(),
                affinity: p.affinity.clone(),
                service_account_name: p.service_account_name.clone(),
            },
        },
        status: None,
    };
    e.into_result()?;
    let model_field = sources.first().map_or("model", |(f, ..)| *f);
    isvc.validate()
        .map_err(|err| kserve_paths(err, model_field))?;
    Ok(isvc)
}

/// Renames the paths of inferd's fields in a validation error to the KServe
/// fields they came from.
fn kserve_paths(err: ApiError, model_field: &str) -> ApiError {
    let ApiError::Invalid { document, errors } = err else {
        return err;
    };
    let renames = [
        (
            "spec.predictor.timeoutSeconds",
            "spec.predictor.timeout".to_owned(),
        ),
        (
            "spec.predictor.batching.maxBatchSize",
            "spec.predictor.batcher.maxBatchSize".to_owned(),
        ),
        (
            "spec.predictor.batching.maxQueueDelay",
            "spec.predictor.batcher.maxLatency".to_owned(),
        ),
        (
            "spec.predictor.resources",
            format!("spec.predictor.{model_field}.resources"),
        ),
        (
            "spec.predictor.env",
            format!("spec.predictor.{model_field}.env"),
        ),
        (
            "spec.predictor.model",
            format!("spec.predictor.{model_field}"),
        ),
    ];
    let errors = errors
        .into_iter()
        .map(|mut fe| {
            if let Some((from, to)) = renames.iter().find(|(from, _)| fe.path.starts_with(from)) {
                fe.path = format!("{to}{}", &fe.path[from.len()..]);
            }
            fe
        })
        .collect();
    ApiError::Invalid { document, errors }
}

type Converted = (ModelSpec, Option<Resources>, Vec<EnvVar>);

fn convert_model(
    e: &mut Errors,
    at: &str,
    m: &KServeModel,
    legacy: Option<ModelFormat>,
) -> Option<Converted> {
    refuse_other(e, at, &m.other);
    let format = match (legacy, &m.model_format) {
        (Some(f), None) => Some(f),
        (Some(_), Some(_)) => {
            e.push(
                format!("{at}.modelFormat"),
                "a framework field names its format already",
            );
            None
        }
        (None, None) => {
            e.push(
                format!("{at}.modelFormat"),
                "is required (name: onnx, xgboost or lightgbm)",
            );
            None
        }
        (None, Some(mf)) => {
            refuse_other(e, &format!("{at}.modelFormat"), &mf.other);
            if mf.version.is_some() {
                e.push(
                    format!("{at}.modelFormat.version"),
                    "format versions are not matched by inferd; its runtimes read what the file declares",
                );
            }
            match mf.name.as_str() {
                "onnx" => Some(ModelFormat::Onnx),
                "xgboost" => Some(ModelFormat::Xgboost),
                "lightgbm" => Some(ModelFormat::Lightgbm),
                other => {
                    e.push(
                        format!("{at}.modelFormat.name"),
                        format!(
                            "'{}' models are not served by inferd (onnx, xgboost or lightgbm)",
                            crate::validate::shown(other)
                        ),
                    );
                    None
                }
            }
        }
    };
    if let Some(pv) = &m.protocol_version
        && !matches!(pv.as_str(), "v1" | "v2" | "grpc-v1" | "grpc-v2")
    {
        e.push(
            format!("{at}.protocolVersion"),
            format!("'{pv}' is not a protocol (v1, v2, grpc-v1, grpc-v2); inferd serves them all"),
        );
    }
    let runtime = match (m.runtime.as_deref(), format) {
        (None, _) => None,
        (Some("inferd"), _) => None,
        (Some("inferd-tract"), Some(ModelFormat::Onnx)) => Some(RuntimeOptions {
            onnx_backend: Some(OnnxBackend::Tract),
        }),
        (Some("inferd-ort"), Some(ModelFormat::Onnx)) => Some(RuntimeOptions {
            onnx_backend: Some(OnnxBackend::Ort),
        }),
        // KServe's stock runtimes for these formats: inferd serves the format itself.
        (Some("kserve-tritonserver"), Some(ModelFormat::Onnx))
        | (Some("kserve-xgbserver" | "kserve-mlserver"), Some(ModelFormat::Xgboost))
        | (Some("kserve-lgbserver" | "kserve-mlserver"), Some(ModelFormat::Lightgbm)) => None,
        // The format is refused already; the runtime follows from it.
        (Some(_), None) => None,
        (Some(r), Some(_)) => {
            e.push(
                format!("{at}.runtime"),
                format!(
                    "runtime '{}' is not one inferd can stand in for (inferd, inferd-tract, inferd-ort, or KServe's stock runtime for the format)",
                    crate::validate::shown(r)
                ),
            );
            None
        }
    };
    let storage_uri = match &m.storage_uri {
        Some(u) => Some(u.clone()),
        None => {
            e.push(format!("{at}.storageUri"), "is required");
            None
        }
    };
    let resources = m.resources.as_ref().map(|r| {
        let rat = format!("{at}.resources");
        refuse_other(e, &rat, &r.other);
        let mut out = Resources::default();
        for (kind, map) in [("limits", &r.limits), ("requests", &r.requests)] {
            for (name, q) in map {
                let path = format!("{rat}.{kind}[{name}]");
                match name.as_str() {
                    // A limit is what a replica is held to; it wins over a request.
                    "cpu" => {
                        out.cpu.get_or_insert_with(|| q.clone());
                    }
                    "memory" => {
                        out.memory.get_or_insert_with(|| q.clone());
                    }
                    "nvidia.com/gpu" => match q.0.parse::<u32>() {
                        Ok(n) => {
                            out.gpu.get_or_insert(n);
                        }
                        Err(_) => e.push(path, format!("'{}' is not a whole number of GPUs", q.0)),
                    },
                    other => e.push(
                        path,
                        format!(
                            "resource '{}' is not supported (cpu, memory, nvidia.com/gpu)",
                            crate::validate::shown(other)
                        ),
                    ),
                }
            }
        }
        out
    });
    let env = m
        .env
        .iter()
        .enumerate()
        .map(|(i, v)| {
            refuse_other(e, &format!("{at}.env[{i}]"), &v.other);
            EnvVar {
                name: v.name.clone(),
                value: v.value.clone(),
            }
        })
        .collect();
    Some((
        ModelSpec {
            format: format?,
            storage_uri: storage_uri?,
            sha256: None,
            max_size_bytes: None,
            runtime,
        },
        resources,
        env,
    ))
}
