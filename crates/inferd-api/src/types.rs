//! inferd's own resource: `serving.inferd.dev/v1alpha1` `InferenceService`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The API group of inferd's resources.
pub const GROUP: &str = "serving.inferd.dev";
/// The version of the resources in this crate.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of inferd's resources.
pub const API_VERSION: &str = "serving.inferd.dev/v1alpha1";
/// `kind` of one served model.
pub const KIND_INFERENCE_SERVICE: &str = "InferenceService";

/// One served model: its files, how it scales, how traffic reaches it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InferenceService {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: InferenceServiceSpec,
    /// Observed state, written by the control plane; never read from a user's spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<InferenceServiceStatus>,
}

impl InferenceService {
    /// A service with this name and predictor, in no namespace.
    pub fn new(name: impl Into<String>, predictor: PredictorSpec) -> InferenceService {
        InferenceService {
            api_version: API_VERSION.to_owned(),
            kind: KIND_INFERENCE_SERVICE.to_owned(),
            metadata: ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec: InferenceServiceSpec { predictor },
            status: None,
        }
    }
}

/// The part of Kubernetes' ObjectMeta a user writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InferenceServiceSpec {
    pub predictor: PredictorSpec,
}

/// The model server: what it serves and how many replicas run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PredictorSpec {
    pub model: ModelSpec,
    /// Fewest replicas (default 1; 0 lets the service scale to zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    /// Most replicas (default: no bound below the control plane's own, [`MAX_REPLICAS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// What the autoscaler holds at `scaleTarget` per replica (default concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_metric: Option<ScaleMetric>,
    /// The per-replica target of `scaleMetric` (default 100 for concurrency, 200 for rps);
    /// under `autoscalerClass: hpa`, the target CPU utilisation in percent (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target: Option<f64>,
    /// Which autoscaler scales the replicas: `kpa` (default; inferd's, on
    /// concurrency or rps, to and from zero) or `hpa` (Kubernetes only: a
    /// HorizontalPodAutoscaler on CPU, at least one replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_class: Option<AutoscalerClass>,
    /// Most requests one replica runs at once (0 or absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<u32>,
    /// Deadline of one request, in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = crate::validate::MAX_TIMEOUT_SECONDS)))]
    pub timeout_seconds: Option<u32>,
    /// Share of traffic, in percent, for the newest ready revision while the previous
    /// ready one takes the rest; absent: the newest takes all once ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(max = 100)))]
    pub canary_traffic_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Labels a node must carry for a replica to be scheduled on it (the pod's
    /// `nodeSelector`), e.g. to pin GPU models to a GPU node pool. Kubernetes only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the replicas' pods tolerate, so they may run on dedicated
    /// (tainted) nodes. Kubernetes only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// The pod's `affinity`, passed to Kubernetes as written; only its three
    /// top-level fields are checked here, the API server checks the rest.
    /// Kubernetes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// The ServiceAccount the replicas' pods run as; as in KServe, the Secrets
    /// it names hold the credentials of the model's storage. Kubernetes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

impl PredictorSpec {
    /// A predictor for this model with every other field at its default.
    pub fn new(model: ModelSpec) -> PredictorSpec {
        PredictorSpec {
            model,
            min_replicas: None,
            max_replicas: None,
            scale_metric: None,
            scale_target: None,
            autoscaler_class: None,
            container_concurrency: None,
            timeout_seconds: None,
            canary_traffic_percent: None,
            batching: None,
            resources: None,
            env: Vec::new(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            service_account_name: None,
        }
    }

    /// Whether any pod placement or identity field is set (`nodeSelector`,
    /// `tolerations`, `affinity`, `serviceAccountName`): fields that only a
    /// Kubernetes backend can honour.
    pub fn has_pod_settings(&self) -> bool {
        !self.node_selector.is_empty()
            || !self.tolerations.is_empty()
            || self.affinity.is_some()
            || self.service_account_name.is_some()
    }
}

/// Most replicas one service may ask for.
pub const MAX_REPLICAS: u32 = 1000;
/// `minReplicas` when absent.
pub const DEFAULT_MIN_REPLICAS: u32 = 1;
/// `timeoutSeconds` when absent (Knative's default).
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;
/// `scaleTarget` when absent, for `scaleMetric: concurrency`.
pub const DEFAULT_CONCURRENCY_TARGET: f64 = 100.0;
/// `scaleTarget` when absent, for `scaleMetric: rps`.
pub const DEFAULT_RPS_TARGET: f64 = 200.0;

impl PredictorSpec {
    /// `minReplicas`, or its default.
    pub fn min_replicas_or_default(&self) -> u32 {
        self.min_replicas.unwrap_or(DEFAULT_MIN_REPLICAS)
    }

    /// `maxReplicas`, or [`MAX_REPLICAS`] when absent.
    pub fn max_replicas_or_default(&self) -> u32 {
        self.max_replicas.unwrap_or(MAX_REPLICAS)
    }

    /// `scaleMetric`, or concurrency.
    pub fn scale_metric_or_default(&self) -> ScaleMetric {
        self.scale_metric.unwrap_or(ScaleMetric::Concurrency)
    }

    /// `scaleTarget`, or the default for the metric.
    pub fn scale_target_or_default(&self) -> f64 {
        self.scale_target
            .unwrap_or(match self.scale_metric_or_default() {
                ScaleMetric::Concurrency => DEFAULT_CONCURRENCY_TARGET,
                ScaleMetric::Rps => DEFAULT_RPS_TARGET,
            })
    }

    /// The request deadline: `timeoutSeconds`, or its default.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(
            self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
        ))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelSpec {
    pub format: ModelFormat,
    /// Where the model's files are: `s3://`, `gs://`, `http(s)://`, `file://` or a
    /// path. A relative path (with or without `file://`) is relative to the folder of
    /// the YAML file that names it; see [`ModelSpec::local_path`].
    pub storage_uri: String,
    /// The SHA-256 of the model file (64 hex digits); when set, the file is
    /// checked against it before it is served, and a mismatch is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The most bytes the model's download may take (a folder: all its files
    /// together); a larger one fails before it is kept. Default: the
    /// downloader's limit (`--max-model-bytes`, 16 GiB), which this can
    /// lower but not raise under `inferd up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeOptions>,
}

impl ModelSpec {
    pub fn new(format: ModelFormat, storage_uri: impl Into<String>) -> ModelSpec {
        ModelSpec {
            format,
            storage_uri: storage_uri.into(),
            sha256: None,
            max_size_bytes: None,
            runtime: None,
        }
    }

    /// The local path the storage URI names, resolved against `base` (the folder of
    /// the YAML file) when relative; `None` for remote URIs.
    pub fn local_path(&self, base: &Path) -> Option<PathBuf> {
        let path = match self.storage_uri.split_once("://") {
            Some(("file", rest)) => rest,
            Some(_) => return None,
            None => self.storage_uri.as_str(),
        };
        let path = Path::new(path);
        Some(if path.is_absolute() {
            path.to_path_buf()
        } else {
            base.join(path)
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Onnx,
    Xgboost,
    Lightgbm,
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelFormat::Onnx => "onnx",
            ModelFormat::Xgboost => "xgboost",
            ModelFormat::Lightgbm => "lightgbm",
        })
    }
}

/// Options for the runtime that runs the model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeOptions {
    /// For `format: onnx`: tract (built in, the default) or ort (onnxruntime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx_backend: Option<OnnxBackend>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnnxBackend {
    Tract,
    Ort,
}

/// The autoscaler of a predictor (KServe's `serving.kserve.io/autoscalerClass`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum AutoscalerClass {
    // Plain comments: doc comments on the variants would make the schema a
    // `oneOf`, which a CRD's structural schema cannot hold.
    // inferd's Knative-style autoscaler (concurrency or rps; scale to zero).
    Kpa,
    // A Kubernetes HorizontalPodAutoscaler on CPU utilisation.
    Hpa,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ScaleMetric {
    Concurrency,
    Rps,
}

/// Dynamic batching in each replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batching {
    /// Most rows one execution takes.
    pub max_batch_size: u32,
    /// How long the oldest queued request may wait for a batch to fill: microseconds,
    /// or a duration such as `500us`, `2ms`, `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_delay: Option<QueueDelay>,
    /// Requests that may wait per replica; more are refused (429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<u32>,
}

/// A delay held in whole microseconds; written as a duration string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueDelay(pub u64);

impl QueueDelay {
    pub fn as_duration(self) -> Duration {
        Duration::from_micros(self.0)
    }

    /// Parses `500us`, `500µs`, `2ms`, `1s`, `1m`, or a bare number of microseconds.
    pub fn parse(text: &str) -> Result<QueueDelay, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        if digits.is_empty() {
            return Err(format!(
                "'{text}' is not a duration (a whole number with us, ms, s or m)"
            ));
        }
        let scale: u64 = match unit.trim() {
            "" | "us" | "µs" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" => 60_000_000,
            other => {
                return Err(format!(
                    "'{text}': unknown unit '{other}' (use us, ms, s or m)"
                ));
            }
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .map(QueueDelay)
            .ok_or_else(|| format!("'{text}' is too long"))
    }
}

impl fmt::Display for QueueDelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us != 0 && us.is_multiple_of(1_000_000) {
            write!(f, "{}s", us / 1_000_000)
        } else if us != 0 && us.is_multiple_of(1_000) {
            write!(f, "{}ms", us / 1_000)
        } else {
            write!(f, "{us}us")
        }
    }
}

impl Serialize for QueueDelay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for QueueDelay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<QueueDelay, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Micros(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected microseconds (a whole number >= 0) or a duration such as 500us, 2ms, 1s",
            )
        })? {
            Raw::Micros(n) => Ok(QueueDelay(n)),
            Raw::Text(t) => QueueDelay::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// What one replica reserves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Cores, as Kubernetes writes them: `2`, `0.5`, `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Bytes, as Kubernetes writes them: `512Mi`, `1Gi`, `1G`, `1000000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Whole GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
}

/// A Kubernetes quantity, kept as written (a YAML number is accepted and kept as text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Quantity, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a quantity such as 500m, 2, 512Mi or 1Gi")
        })? {
            Raw::Int(n) => Ok(Quantity(n.to_string())),
            Raw::Float(x) => Ok(Quantity(x.to_string())),
            Raw::Text(t) => Ok(Quantity(t)),
        }
    }
}

impl Quantity {
    /// The value in millicores (for cpu), if it is a well-formed cpu quantity.
    pub fn millicores(&self) -> Option<u64> {
        let t = self.0.as_str();
        if let Some(m) = t.strip_suffix('m') {
            return parse_plain_int(m);
        }
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if frac.len() > 3 || (int.is_empty() && frac.is_empty()) {
            return None;
        }
        let int = if int.is_empty() {
            0
        } else {
            parse_plain_int(int)?
        };
        let mut frac_m = 0u64;
        for (i, c) in frac.chars().enumerate() {
            let d = u64::from(c.to_digit(10)?);
            frac_m += d * 10u64.pow(2 - i as u32);
        }
        int.checked_mul(1000)?.checked_add(frac_m)
    }

    /// The value in bytes (for memory), if it is a well-formed memory quantity.
    pub fn bytes(&self) -> Option<u64> {
        const UNITS: [(&str, u64); 12] = [
            ("Ki", 1 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("Ti", 1 << 40),
            ("Pi", 1 << 50),
            ("Ei", 1 << 60),
            ("k", 1_000),
            ("M", 1_000_000),
            ("G", 1_000_000_000),
            ("T", 1_000_000_000_000),
            ("P", 1_000_000_000_000_000),
            ("E", 1_000_000_000_000_000_000),
        ];
        let t = self.0.as_str();
        for (suffix, scale) in UNITS {
            if let Some(n) = t.strip_suffix(suffix) {
                return parse_plain_int(n)?.checked_mul(scale);
            }
        }
        parse_plain_int(t)
    }
}

fn parse_plain_int(t: &str) -> Option<u64> {
    if t.is_empty() || t.len() > 19 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// A taint the replicas' pods tolerate, as Kubernetes' `Toleration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// The taint's key; absent (with `operator: Exists`) tolerates every taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (the default) matches `value`; `Exists` matches any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    /// The taint's value, for `operator: Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The effect tolerated; absent tolerates every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// For `effect: NoExecute`: how long a pod stays on a node after the taint
    /// appears; absent: for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

impl Toleration {
    /// `operator`, or its default (`Equal`).
    pub fn operator_or_default(&self) -> TolerationOperator {
        self.operator.unwrap_or(TolerationOperator::Equal)
    }
}

/// How a toleration matches a taint's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TolerationOperator {
    Exists,
    Equal,
}

/// What a taint does to pods that do not tolerate it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// A pod's `affinity` (`nodeAffinity`, `podAffinity`, `podAntiAffinity`), kept
/// as written: Kubernetes' affinity grows new fields from release to release,
/// and the API server validates it when the pod is created, so inferd passes
/// it through rather than track its every field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Affinity(pub serde_json::Map<String, serde_json::Value>);

impl<'de> Deserialize<'de> for Affinity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Affinity, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Object(map) => Ok(Affinity(map)),
            _ => Err(serde::de::Error::custom(
                "expected a mapping (nodeAffinity, podAffinity, podAntiAffinity)",
            )),
        }
    }
}

/// Observed state, as the control plane reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InferenceServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_ready_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_created_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_status: Option<ModelStatus>,
}

/// `Ready`, `PredictorReady` or `RoutesReady`, Kubernetes style.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// The share of traffic one revision gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficTarget {
    pub revision_name: String,
    pub percent: u32,
    #[serde(default)]
    pub latest_revision: bool,
    /// `latest` or `prev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelStatus {
    pub state: ModelState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ModelState {
    Pending,
    Loading,
    Loaded,
    FailedToLoad,
}
