//! A model's serving configuration: `config.json` beside the model, in the
//! field names of Triton's model configuration (its JSON form), over the
//! defaults the command line gives.
//!
//! ```json
//! {
//!   "max_batch_size": 32,
//!   "dynamic_batching": {
//!     "max_queue_delay_microseconds": 500,
//!     "preferred_batch_size": [8, 16],
//!     "default_queue_policy": {"max_queue_size": 256, "default_timeout_microseconds": 2000000}
//!   },
//!   "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
//!   "model_warmup": [{"name": "zeros", "batch_size": 8}]
//! }
//! ```
//!
//! Every field is optional. Fields inferd cannot honour (a GPU instance
//! group, a timeout action other than REJECT, an unknown key) are refused
//! with the field's path, never ignored.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use inferd_runtime::{Model, SchedulerConfig, batchable};
use inferd_tensor::{DataType, Dim, Tensor, TensorData, TensorSpec};
use serde::{Deserialize, Deserializer};

/// The file name looked for beside a model.
pub const FILE_NAME: &str = "config.json";

/// Largest warm-up batch and repeat count accepted, so a config cannot ask
/// for unbounded work before the model is ready.
const MAX_WARMUP_ELEMENTS: usize = 16 * 1024 * 1024;
const MAX_WARMUP_COUNT: u32 = 1000;

/// Serving defaults for models whose config does not say otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Rows per execution for batchable models; 0: no dynamic batching.
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    pub max_queue_size: usize,
    /// Instances per model version; 0: one per core.
    pub instance_count: usize,
    /// Deadline for requests that give none.
    pub default_timeout: Option<Duration>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            max_batch_size: 0,
            max_queue_delay: Duration::ZERO,
            max_queue_size: 1024,
            instance_count: 0,
            default_timeout: None,
        }
    }
}

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {path}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub path: String,
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    platform: Option<String>,
    backend: Option<String>,
    max_batch_size: Option<u32>,
    /// Every version found is served: only `{"all": {}}` is accepted.
    version_policy: Option<serde_json::Value>,
    input: Option<Vec<TensorEntry>>,
    output: Option<Vec<TensorEntry>>,
    dynamic_batching: Option<DynamicBatching>,
    instance_group: Option<Vec<InstanceGroup>>,
    model_warmup: Option<Vec<Warmup>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorEntry {
    name: String,
    data_type: String,
    #[serde(deserialize_with = "int_list")]
    dims: Vec<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DynamicBatching {
    #[serde(default, deserialize_with = "opt_u64")]
    max_queue_delay_microseconds: Option<u64>,
    preferred_batch_size: Option<Vec<u32>>,
    default_queue_policy: Option<QueuePolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueuePolicy {
    timeout_action: Option<String>,
    #[serde(default, deserialize_with = "opt_u64")]
    default_timeout_microseconds: Option<u64>,
    allow_timeout_override: Option<bool>,
    max_queue_size: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceGroup {
    #[allow(dead_code)] // accepted for compatibility; inferd names instances itself
    name: Option<String>,
    count: Option<u32>,
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Warmup {
    name: String,
    batch_size: Option<u32>,
    count: Option<u32>,
    inputs: Option<BTreeMap<String, WarmupInput>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmupInput {
    data_type: String,
    #[serde(deserialize_with = "int_list")]
    dims: Vec<i64>,
    zero_data: Option<bool>,
    random_data: Option<bool>,
}

/// Integers as numbers or as decimal strings (protobuf's JSON form writes
/// 64-bit integers as strings, so a config copied from Triton has them).
#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Str(String),
}

impl IntOrString {
    fn value<E: serde::de::Error>(self) -> Result<i64, E> {
        match self {
            IntOrString::Int(i) => Ok(i),
            IntOrString::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| E::custom(format!("'{s}' is not an integer"))),
        }
    }
}

fn int_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    Vec::<IntOrString>::deserialize(d)?
        .into_iter()
        .map(IntOrString::value)
        .collect()
}

fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<IntOrString>::deserialize(d)? {
        None => Ok(None),
        Some(v) => {
            let v = v.value::<D::Error>()?;
            u64::try_from(v)
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("{v} is negative")))
        }
    }
}

/// One warm-up request, ready to run.
#[derive(Clone, Debug)]
pub struct WarmupRequest {
    pub name: String,
    pub inputs: Vec<Tensor>,
    pub count: u32,
}

/// The configuration a model version is served with.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub scheduler: SchedulerConfig,
    pub default_timeout: Option<Duration>,
    pub warmup: Vec<WarmupRequest>,
}

impl Resolved {
    /// Triton's JSON model configuration of a served model.
    pub fn triton_json(&self, name: &str, model: &dyn Model) -> serde_json::Value {
        let meta = model.metadata();
        let batching = self.scheduler.max_batch_size > 0;
        let tensors = |specs: &[TensorSpec]| -> Vec<serde_json::Value> {
            specs
                .iter()
                .map(|s| {
                    let dims = s.shape_i64();
                    let dims = if batching { dims[1..].to_vec() } else { dims };
                    serde_json::json!({
                        "name": s.name,
                        "data_type": triton_type(s.datatype),
                        "dims": dims,
                    })
                })
                .collect()
        };
        let mut config = serde_json::json!({
            "name": name,
            "platform": meta.platform,
            "backend": backend_of(meta.platform),
            "version_policy": {"all": {}},
            "max_batch_size": self.scheduler.max_batch_size,
            "input": tensors(&meta.inputs),
            "output": tensors(&meta.outputs),
            "instance_group": [{
                "name": format!("{name}_0"),
                "kind": "KIND_CPU",
                "count": self.scheduler.instance_count,
            }],
        });
        let mut policy = serde_json::json!({
            "timeout_action": "REJECT",
            "allow_timeout_override": true,
            "max_queue_size": self.scheduler.max_queue_size,
        });
        if let Some(t) = self.default_timeout {
            policy["default_timeout_microseconds"] = micros(t).into();
        }
        if batching {
            config["dynamic_batching"] = serde_json::json!({
                "max_queue_delay_microseconds": micros(self.scheduler.max_queue_delay),
                "preferred_batch_size": self.scheduler.preferred_batch_sizes,
                "default_queue_policy": policy,
            });
        }
        config
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn backend_of(platform: &str) -> &'static str {
    match platform {
        "onnx_onnxv1" => "tract",
        "onnxruntime_onnx" => "onnxruntime",
        _ => "inferd",
    }
}

/// Triton's name for a datatype in model configurations.
pub fn triton_type(t: DataType) -> &'static str {
    match t {
        DataType::Bool => "TYPE_BOOL",
        DataType::Uint8 => "TYPE_UINT8",
        DataType::Uint16 => "TYPE_UINT16",
        DataType::Uint32 => "TYPE_UINT32",
        DataType::Uint64 => "TYPE_UINT64",
        DataType::Int8 => "TYPE_INT8",
        DataType::Int16 => "TYPE_INT16",
        DataType::Int32 => "TYPE_INT32",
        DataType::Int64 => "TYPE_INT64",
        DataType::Fp16 => "TYPE_FP16",
        DataType::Fp32 => "TYPE_FP32",
        DataType::Fp64 => "TYPE_FP64",
        DataType::Bytes => "TYPE_STRING",
    }
}

/// A datatype from Triton's config name (`TYPE_FP32`) or the protocol's (`FP32`).
fn parse_type(name: &str) -> Option<DataType> {
    match name {
        "TYPE_STRING" => Some(DataType::Bytes),
        other => DataType::parse(other.strip_prefix("TYPE_").unwrap_or(other)),
    }
}

/// Reads and resolves a model's config (`None`: there is no file) against
/// the loaded model and the defaults.
pub fn resolve(
    file: Option<&Path>,
    model_name: &str,
    model: &dyn Model,
    defaults: &Defaults,
) -> Result<Resolved, ConfigError> {
    let (parsed, file_name) = match file {
        Some(path) if path.is_file() => (read(path)?, path.display().to_string()),
        _ => (File::default(), FILE_NAME.to_owned()),
    };
    resolve_parsed(parsed, file_name, model_name, model, defaults)
}

/// As [`resolve`], from a configuration given inline (the repository load
/// call's `config` parameter) instead of a file.
pub fn resolve_text(
    text: &str,
    model_name: &str,
    model: &dyn Model,
    defaults: &Defaults,
) -> Result<Resolved, ConfigError> {
    let parsed = parse(text.as_bytes(), "parameters.config")?;
    resolve_parsed(
        parsed,
        "parameters.config".to_owned(),
        model_name,
        model,
        defaults,
    )
}

fn resolve_parsed(
    parsed: File,
    file_name: String,
    model_name: &str,
    model: &dyn Model,
    defaults: &Defaults,
) -> Result<Resolved, ConfigError> {
    let err = |path: &str, message: String| ConfigError {
        file: file_name.clone(),
        path: path.to_owned(),
        message,
    };
    let meta = model.metadata();
    if let Some(name) = &parsed.name
        && name != model_name
    {
        return Err(err(
            "name",
            format!("'{name}' does not match the model's name '{model_name}'"),
        ));
    }
    if let Some(platform) = &parsed.platform
        && platform != meta.platform
    {
        return Err(err(
            "platform",
            format!(
                "'{platform}' does not match the model's platform '{}'",
                meta.platform
            ),
        ));
    }
    if let Some(backend) = &parsed.backend
        && backend != backend_of(meta.platform)
    {
        return Err(err(
            "backend",
            format!(
                "'{backend}' does not match the backend serving it ('{}')",
                backend_of(meta.platform)
            ),
        ));
    }
    if let Some(policy) = &parsed.version_policy
        && *policy != serde_json::json!({"all": {}})
    {
        return Err(err(
            "version_policy",
            format!("{policy} is not supported: every version found is served ({{\"all\": {{}}}})"),
        ));
    }
    let can_batch = batchable(model);
    let max_batch_size = match parsed.max_batch_size {
        Some(n) if n > 0 && !can_batch => {
            return Err(err(
                "max_batch_size",
                format!(
                    "{n} asks for batching but the model has no batch dimension \
                     (every input and output needs a dynamic first dimension); use 0"
                ),
            ));
        }
        Some(n) => n as usize,
        None if can_batch => defaults.max_batch_size,
        None => 0,
    };
    if parsed.dynamic_batching.is_some() && max_batch_size == 0 {
        return Err(err(
            "dynamic_batching",
            "needs max_batch_size > 0 (the most rows one execution may take)".into(),
        ));
    }
    for (key, declared, actual) in [
        ("input", &parsed.input, &meta.inputs),
        ("output", &parsed.output, &meta.outputs),
    ] {
        if let Some(declared) = declared {
            check_tensors(key, declared, actual, max_batch_size > 0)
                .map_err(|(p, m)| err(&p, m))?;
        }
    }
    let batching = parsed.dynamic_batching.unwrap_or_default();
    let policy = batching.default_queue_policy.unwrap_or_default();
    if let Some(action) = &policy.timeout_action
        && action != "REJECT"
    {
        return Err(err(
            "dynamic_batching.default_queue_policy.timeout_action",
            format!("'{action}' is not supported: expired requests are always rejected (REJECT)"),
        ));
    }
    if policy.allow_timeout_override == Some(false) {
        return Err(err(
            "dynamic_batching.default_queue_policy.allow_timeout_override",
            "false is not supported: a request's own timeout always applies".into(),
        ));
    }
    let max_queue_size = match policy.max_queue_size {
        Some(0) => {
            return Err(err(
                "dynamic_batching.default_queue_policy.max_queue_size",
                "must be at least 1: the queue is always bounded".into(),
            ));
        }
        Some(n) => n as usize,
        None => defaults.max_queue_size,
    };
    let preferred: Vec<usize> = batching
        .preferred_batch_size
        .unwrap_or_default()
        .into_iter()
        .map(|n| n as usize)
        .collect();
    if let Some(bad) = preferred.iter().find(|&&n| n == 0 || n > max_batch_size) {
        return Err(err(
            "dynamic_batching.preferred_batch_size",
            format!("{bad} is not between 1 and max_batch_size ({max_batch_size})"),
        ));
    }
    let mut instance_count = 0usize;
    for (i, group) in parsed.instance_group.iter().flatten().enumerate() {
        match group.kind.as_deref() {
            None | Some("KIND_CPU") | Some("KIND_AUTO") => {}
            Some(kind) => {
                return Err(err(
                    &format!("instance_group[{i}].kind"),
                    format!("{kind} is not supported: instances run on the CPU (KIND_CPU)"),
                ));
            }
        }
        match group.count {
            Some(0) | None => {
                return Err(err(
                    &format!("instance_group[{i}].count"),
                    "must be at least 1".into(),
                ));
            }
            Some(n) if n > 1024 => {
                return Err(err(
                    &format!("instance_group[{i}].count"),
                    format!("{n} is more than the 1024 instances a model may have"),
                ));
            }
            Some(n) => instance_count += n as usize,
        }
    }
    if instance_count == 0 {
        instance_count = if defaults.instance_count == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            defaults.instance_count
        };
    }
    let warmup = parsed
        .model_warmup
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, w)| {
            warmup_request(w, &meta.inputs, max_batch_size)
                .map_err(|(p, m)| err(&format!("model_warmup[{i}]{p}"), m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Resolved {
        scheduler: SchedulerConfig {
            max_batch_size,
            max_queue_delay: batching
                .max_queue_delay_microseconds
                .map_or(defaults.max_queue_delay, Duration::from_micros),
            preferred_batch_sizes: preferred,
            max_queue_size,
            instance_count,
        },
        default_timeout: policy
            .default_timeout_microseconds
            .filter(|&us| us > 0)
            .map(Duration::from_micros)
            .or(defaults.default_timeout),
        warmup,
    })
}

fn read(path: &Path) -> Result<File, ConfigError> {
    let fail = |path_in_file: String, message: String| ConfigError {
        file: path.display().to_string(),
        path: path_in_file,
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(String::new(), e.to_string()))?;
    parse(&bytes, &path.display().to_string())
}

fn parse(bytes: &[u8], origin: &str) -> Result<File, ConfigError> {
    let fail = |path_in_file: String, message: String| ConfigError {
        file: origin.to_owned(),
        path: path_in_file,
        message,
    };
    if bytes.len() > 1024 * 1024 {
        return Err(fail(String::new(), "larger than 1 MiB".into()));
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(fail(String::new(), "must be a JSON object".into()));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let p = e.path().to_string();
        let p = if p == "." || p == "?" {
            String::new()
        } else {
            p
        };
        fail(p, e.into_inner().to_string())
    })
}

/// Checks a config's declared tensors against the model's.
fn check_tensors(
    key: &str,
    declared: &[TensorEntry],
    actual: &[TensorSpec],
    batching: bool,
) -> Result<(), (String, String)> {
    for (i, entry) in declared.iter().enumerate() {
        let at = |field: &str| format!("{key}[{i}].{field}");
        let Some(spec) = actual.iter().find(|s| s.name == entry.name) else {
            let names: Vec<&str> = actual.iter().map(|s| s.name.as_str()).collect();
            return Err((
                at("name"),
                format!(
                    "the model has no {key} '{}' (it has {})",
                    entry.name,
                    names.join(", ")
                ),
            ));
        };
        let datatype = parse_type(&entry.data_type).ok_or_else(|| {
            (
                at("data_type"),
                format!("unknown datatype '{}'", entry.data_type),
            )
        })?;
        if datatype != spec.datatype {
            return Err((
                at("data_type"),
                format!(
                    "{} but the model's is {}",
                    entry.data_type,
                    triton_type(spec.datatype)
                ),
            ));
        }
        let model_dims = spec.shape_i64();
        let model_dims = if batching {
            &model_dims[1..]
        } else {
            &model_dims[..]
        };
        let fits = entry.dims.len() == model_dims.len()
            && entry
                .dims
                .iter()
                .zip(model_dims)
                .all(|(&d, &m)| d == m || (m == -1 && d >= -1));
        if !fits {
            return Err((
                at("dims"),
                format!(
                    "{:?} does not fit the model's {:?}{}",
                    entry.dims,
                    model_dims,
                    if batching {
                        " (without the batch dimension)"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Builds one warm-up request: the inputs it lists, or zeros for every
/// input of the model when it lists none.
fn warmup_request(
    w: &Warmup,
    inputs: &[TensorSpec],
    max_batch_size: usize,
) -> Result<WarmupRequest, (String, String)> {
    let batch = w.batch_size.unwrap_or(1) as usize;
    if batch == 0 || (max_batch_size > 0 && batch > max_batch_size) {
        return Err((
            ".batch_size".into(),
            format!("{batch} is not between 1 and max_batch_size ({max_batch_size})"),
        ));
    }
    let count = w.count.unwrap_or(1);
    if count == 0 || count > MAX_WARMUP_COUNT {
        return Err((
            ".count".into(),
            format!("{count} is not between 1 and {MAX_WARMUP_COUNT}"),
        ));
    }
    let given = w.inputs.as_ref();
    if let Some(unknown) =
        given.and_then(|g| g.keys().find(|k| !inputs.iter().any(|s| &s.name == *k)))
    {
        return Err((
            format!(".inputs.{unknown}"),
            "the model has no such input".into(),
        ));
    }
    let mut tensors = Vec::with_capacity(inputs.len());
    for spec in inputs {
        let at = format!(".inputs.{}", spec.name);
        let (datatype, dims, random) = match given.and_then(|g| g.get(&spec.name)) {
            Some(entry) => {
                if entry.zero_data == Some(true) && entry.random_data == Some(true) {
                    return Err((at, "give one of zero_data and random_data".into()));
                }
                let datatype = parse_type(&entry.data_type).ok_or_else(|| {
                    (
                        format!("{at}.data_type"),
                        format!("unknown datatype '{}'", entry.data_type),
                    )
                })?;
                let dims = entry
                    .dims
                    .iter()
                    .map(|&d| {
                        usize::try_from(d)
                            .map_err(|_| (format!("{at}.dims"), format!("{d} is not a size")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (datatype, dims, entry.random_data == Some(true))
            }
            None if given.is_some() => {
                return Err((
                    at,
                    "missing: list every input, or none to generate them".into(),
                ));
            }
            None => {
                // Generated: the declared shape, dynamic dimensions as 1.
                let dims = spec
                    .shape
                    .iter()
                    .skip(usize::from(max_batch_size > 0))
                    .map(|d| match d {
                        Dim::Fixed(n) => *n,
                        Dim::Dynamic => 1,
                    })
                    .collect();
                (spec.datatype, dims, false)
            }
        };
        let shape: Vec<usize> = if max_batch_size > 0 {
            std::iter::once(batch).chain(dims).collect()
        } else {
            dims
        };
        let elements = inferd_tensor::element_count(&shape)
            .filter(|&n| n <= MAX_WARMUP_ELEMENTS)
            .ok_or_else(|| {
                (
                    format!("{at}.dims"),
                    format!("shape {shape:?} is larger than the {MAX_WARMUP_ELEMENTS} elements a warm-up input may have"),
                )
            })?;
        let data = filled(datatype, elements, random);
        let tensor =
            Tensor::new(spec.name.clone(), shape, data).map_err(|e| (at.clone(), e.to_string()))?;
        spec.check(tensor.datatype(), tensor.shape())
            .map_err(|e| (at, e.to_string()))?;
        tensors.push(tensor);
    }
    Ok(WarmupRequest {
        name: w.name.clone(),
        inputs: tensors,
        count,
    })
}

/// `n` zeros, or pseudo-random values in [0, 1) (small integers for
/// integer types), from a fixed seed so warm-up is repeatable.
fn filled(datatype: DataType, n: usize, random: bool) -> TensorData {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        if !random {
            return 0.0f64;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let small = |x: f64| (x * 8.0) as u8;
    match datatype {
        DataType::Bool => TensorData::Bool((0..n).map(|_| next() >= 0.5).collect()),
        DataType::Uint8 => TensorData::Uint8((0..n).map(|_| small(next())).collect()),
        DataType::Uint16 => TensorData::Uint16((0..n).map(|_| small(next()).into()).collect()),
        DataType::Uint32 => TensorData::Uint32((0..n).map(|_| small(next()).into()).collect()),
        DataType::Uint64 => TensorData::Uint64((0..n).map(|_| small(next()).into()).collect()),
        DataType::Int8 => TensorData::Int8((0..n).map(|_| small(next()) as i8).collect()),
        DataType::Int16 => TensorData::Int16((0..n).map(|_| small(next()).into()).collect()),
        DataType::Int32 => TensorData::Int32((0..n).map(|_| small(next()).into()).collect()),
        DataType::Int64 => TensorData::Int64((0..n).map(|_| small(next()).into()).collect()),
        DataType::Fp16 => TensorData::Fp16((0..n).map(|_| half::f16::from_f64(next())).collect()),
        DataType::Fp32 => TensorData::Fp32((0..n).map(|_| next() as f32).collect()),
        DataType::Fp64 => TensorData::Fp64((0..n).map(|_| next()).collect()),
        DataType::Bytes => TensorData::Bytes((0..n).map(|_| Vec::new()).collect()),
    }
}

#[cfg(test)]
mod tests;
