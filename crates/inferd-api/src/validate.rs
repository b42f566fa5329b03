//! Validation of inferd's resources. Every check names the field's path; a
//! resource with any bad field is refused whole.

use crate::error::{ApiError, Errors};
use crate::types::{
    API_VERSION, InferenceService, KIND_INFERENCE_SERVICE, MAX_REPLICAS, ModelFormat, ModelSpec,
    PredictorSpec, ScaleMetric,
};

/// Longest storage URI accepted.
pub const MAX_URI_LEN: usize = 4096;
/// Longest request deadline, in seconds.
pub const MAX_TIMEOUT_SECONDS: u32 = 3600;
/// Largest `containerConcurrency`.
pub const MAX_CONTAINER_CONCURRENCY: u32 = 10_000;
/// Largest `scaleTarget`.
pub const MAX_SCALE_TARGET: f64 = 1_000_000.0;
/// Largest `batching.maxBatchSize`.
pub const MAX_BATCH_SIZE: u32 = 65_536;
/// Largest `batching.maxQueueSize`.
pub const MAX_QUEUE_SIZE: u32 = 1_000_000;
/// Longest `batching.maxQueueDelay`, in microseconds (60 s).
pub const MAX_QUEUE_DELAY_US: u64 = 60_000_000;
/// Most cores one replica may ask for, in millicores.
pub const MAX_CPU_MILLICORES: u64 = 1024 * 1000;
/// Most memory one replica may ask for (16 TiB).
pub const MAX_MEMORY_BYTES: u64 = 16 << 40;
/// Most GPUs one replica may ask for.
pub const MAX_GPUS: u32 = 64;
/// Most environment variables.
pub const MAX_ENV: usize = 256;
/// Longest environment value.
pub const MAX_ENV_VALUE: usize = 32 * 1024;
/// Largest total size of all annotations, as Kubernetes limits it.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

impl InferenceService {
    /// Checks every field; the error lists each bad one with its path.
    pub fn validate(&self) -> Result<(), ApiError> {
        let mut e = Errors::default();
        if self.api_version != API_VERSION {
            e.push(
                "apiVersion",
                format!("must be {API_VERSION}, not '{}'", self.api_version),
            );
        }
        if self.kind != KIND_INFERENCE_SERVICE {
            e.push(
                "kind",
                format!("must be {KIND_INFERENCE_SERVICE}, not '{}'", self.kind),
            );
        }
        validate_meta(
            &mut e,
            &self.metadata.name,
            self.metadata.namespace.as_deref(),
            &self.metadata.labels,
            &self.metadata.annotations,
        );
        validate_predictor(&mut e, &self.spec.predictor, "spec.predictor");
        e.into_result()
    }
}

pub(crate) fn validate_meta(
    e: &mut Errors,
    name: &str,
    namespace: Option<&str>,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
) {
    if let Err(m) = dns1123_label(name) {
        e.push("metadata.name", m);
    }
    if let Some(ns) = namespace
        && let Err(m) = dns1123_label(ns)
    {
        e.push("metadata.namespace", m);
    }
    for (k, v) in labels {
        if let Err(m) = qualified_name(k) {
            e.push(format!("metadata.labels[{}]", shown(k)), m);
        } else if let Err(m) = label_value(v) {
            e.push(format!("metadata.labels[{k}]"), m);
        }
    }
    let mut total = 0usize;
    for (k, v) in annotations {
        total = total.saturating_add(k.len()).saturating_add(v.len());
        if let Err(m) = qualified_name(k) {
            e.push(format!("metadata.annotations[{}]", shown(k)), m);
        }
    }
    if total > MAX_ANNOTATIONS_BYTES {
        e.push(
            "metadata.annotations",
            format!("{total} bytes in all; at most {MAX_ANNOTATIONS_BYTES}"),
        );
    }
}

fn validate_predictor(e: &mut Errors, p: &PredictorSpec, at: &str) {
    validate_model(e, &p.model, &format!("{at}.model"));
    let min = p.min_replicas_or_default();
    if min > MAX_REPLICAS {
        e.push(
            format!("{at}.minReplicas"),
            format!("must be <= {MAX_REPLICAS}, not {min}"),
        );
    }
    if let Some(max) = p.max_replicas {
        if max == 0 {
            e.push(format!("{at}.maxReplicas"), "must be >= 1");
        } else if max > MAX_REPLICAS {
            e.push(
                format!("{at}.maxReplicas"),
                format!("must be <= {MAX_REPLICAS}, not {max}"),
            );
        } else if max < min {
            e.push(
                format!("{at}.maxReplicas"),
                format!("must be >= minReplicas ({min})"),
            );
        }
    }
    if let Some(t) = p.scale_target {
        if !t.is_finite() || t <= 0.0 {
            e.push(
                format!("{at}.scaleTarget"),
                format!("must be a number > 0, not {t}"),
            );
        } else if t > MAX_SCALE_TARGET {
            e.push(
                format!("{at}.scaleTarget"),
                format!("must be <= {MAX_SCALE_TARGET}, not {t}"),
            );
        } else if let Some(cc) = p.container_concurrency.filter(|&c| c > 0)
            && p.scale_metric_or_default() == ScaleMetric::Concurrency
            && t > f64::from(cc)
        {
            e.push(
                format!("{at}.scaleTarget"),
                format!("a concurrency target of {t} cannot exceed containerConcurrency ({cc})"),
            );
        }
    }
    if let Some(cc) = p.container_concurrency
        && cc > MAX_CONTAINER_CONCURRENCY
    {
        e.push(
            format!("{at}.containerConcurrency"),
            format!("must be <= {MAX_CONTAINER_CONCURRENCY} (0: no limit), not {cc}"),
        );
    }
    if let Some(t) = p.timeout_seconds
        && !(1..=MAX_TIMEOUT_SECONDS).contains(&t)
    {
        e.push(
            format!("{at}.timeoutSeconds"),
            format!("must be 1..={MAX_TIMEOUT_SECONDS}, not {t}"),
        );
    }
    if let Some(c) = p.canary_traffic_percent
        && c > 100
    {
        e.push(
            format!("{at}.canaryTrafficPercent"),
            format!("must be 0..=100, not {c}"),
        );
    }
    if let Some(b) = &p.batching {
        if !(1..=MAX_BATCH_SIZE).contains(&b.max_batch_size) {
            e.push(
                format!("{at}.batching.maxBatchSize"),
                format!("must be 1..={MAX_BATCH_SIZE}, not {}", b.max_batch_size),
            );
        }
        if let Some(d) = b.max_queue_delay
            && d.0 > MAX_QUEUE_DELAY_US
        {
            e.push(
                format!("{at}.batching.maxQueueDelay"),
                format!("must be at most 60s, not {d}"),
            );
        }
        if let Some(q) = b.max_queue_size
            && !(1..=MAX_QUEUE_SIZE).contains(&q)
        {
            e.push(
                format!("{at}.batching.maxQueueSize"),
                format!("must be 1..={MAX_QUEUE_SIZE}, not {q}"),
            );
        }
    }
    if let Some(r) = &p.resources {
        if let Some(cpu) = &r.cpu {
            match cpu.millicores() {
                None => e.push(
                    format!("{at}.resources.cpu"),
                    format!("'{}' is not a cpu quantity (2, 0.5, 500m)", cpu.0),
                ),
                Some(0) => e.push(format!("{at}.resources.cpu"), "must be > 0"),
                Some(m) if m > MAX_CPU_MILLICORES => e.push(
                    format!("{at}.resources.cpu"),
                    format!(
                        "'{}' is more than {} cores",
                        cpu.0,
                        MAX_CPU_MILLICORES / 1000
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(mem) = &r.memory {
            match mem.bytes() {
                None => e.push(
                    format!("{at}.resources.memory"),
                    format!("'{}' is not a memory quantity (512Mi, 1Gi, 1G)", mem.0),
                ),
                Some(0) => e.push(format!("{at}.resources.memory"), "must be > 0"),
                Some(b) if b > MAX_MEMORY_BYTES => e.push(
                    format!("{at}.resources.memory"),
                    format!("'{}' is more than 16Ti", mem.0),
                ),
                Some(_) => {}
            }
        }
        if let Some(g) = r.gpu
            && g > MAX_GPUS
        {
            e.push(
                format!("{at}.resources.gpu"),
                format!("must be <= {MAX_GPUS}, not {g}"),
            );
        }
    }
    if p.env.len() > MAX_ENV {
        e.push(
            format!("{at}.env"),
            format!("{} variables; at most {MAX_ENV}", p.env.len()),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, var) in p.env.iter().enumerate() {
        let path = format!("{at}.env[{i}]");
        if !is_env_name(&var.name) {
            e.push(
                format!("{path}.name"),
                format!(
                    "'{}' is not a variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    shown(&var.name)
                ),
            );
        } else if !seen.insert(var.name.as_str()) {
            e.push(
                format!("{path}.name"),
                format!("'{}' is set twice", var.name),
            );
        }
        if var.value.len() > MAX_ENV_VALUE {
            e.push(
                format!("{path}.value"),
                format!("{} bytes; at most {MAX_ENV_VALUE}", var.value.len()),
            );
        }
        if var.value.contains('\0') {
            e.push(format!("{path}.value"), "must not contain NUL");
        }
    }
}

fn validate_model(e: &mut Errors, m: &ModelSpec, at: &str) {
    if let Err(msg) = storage_uri(&m.storage_uri) {
        e.push(format!("{at}.storageUri"), msg);
    } else if let Err(msg) = format_matches_extension(m.format, &m.storage_uri) {
        e.push(format!("{at}.storageUri"), msg);
    }
    if let Some(sha) = &m.sha256
        && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        e.push(
            format!("{at}.sha256"),
            format!("'{}' is not a SHA-256 (64 hex digits)", shown(sha)),
        );
    }
    if let Some(r) = &m.runtime
        && r.onnx_backend.is_some()
        && m.format != ModelFormat::Onnx
    {
        e.push(
            format!("{at}.runtime.onnxBackend"),
            format!("applies to format onnx only, not {}", m.format),
        );
    }
}

/// Accepts `s3://BUCKET[/KEY]`, `gs://BUCKET[/KEY]`, `http(s)://HOST[/PATH]`,
/// `file://PATH` and scheme-less paths; refuses empty ones, `..` segments,
/// backslashes, whitespace and control characters.
pub fn storage_uri(uri: &str) -> Result<(), String> {
    if uri.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if uri.len() > MAX_URI_LEN {
        return Err(format!("{} bytes; at most {MAX_URI_LEN}", uri.len()));
    }
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain whitespace or control characters".into());
    }
    if uri.contains('\\') {
        return Err("must not contain backslashes; use /".into());
    }
    let (scheme, rest) = match uri.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => {
            if let Some((s, _)) = uri.split_once(':')
                && !s.is_empty()
                && !s.contains('/')
            {
                return Err(format!(
                    "'{s}:' is not a supported scheme (s3://, gs://, az://, http://, https://, file:// or a path)"
                ));
            }
            (None, uri)
        }
    };
    let path = match scheme {
        None | Some("file") => {
            if rest.is_empty() {
                return Err("names no path".into());
            }
            rest
        }
        Some(s @ ("s3" | "gs" | "az" | "http" | "https")) => {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            if host.is_empty() {
                let what = if s.starts_with("http") {
                    "host"
                } else {
                    "bucket"
                };
                return Err(format!("{s}:// needs a {what}"));
            }
            if matches!(s, "s3" | "gs" | "az") && !is_bucket(host) {
                return Err(format!("'{host}' is not a bucket name"));
            }
            path.split(['?', '#']).next().unwrap_or("")
        }
        Some(s @ ("pvc" | "hdfs" | "webhdfs" | "oci" | "oci+native" | "hf" | "abfs")) => {
            return Err(format!(
                "{s}:// storage is not supported by inferd (s3://, gs://, az://, http(s)://, file:// or a path)"
            ));
        }
        Some(s) => {
            return Err(format!(
                "'{s}://' is not a supported scheme (s3://, gs://, az://, http://, https://, file:// or a path)"
            ));
        }
    };
    for segment in path.split('/') {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == ".." {
            return Err("must not contain '..' path segments".into());
        }
    }
    if path.to_ascii_lowercase().contains("%2f") {
        return Err("must not contain encoded slashes (%2F)".into());
    }
    Ok(())
}

fn is_bucket(b: &str) -> bool {
    (3..=222).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-._".contains(&c))
        && b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Refuses a storage URI whose file extension says another format than `format`.
pub fn format_matches_extension(format: ModelFormat, uri: &str) -> Result<(), String> {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let last = path.rsplit('/').next().unwrap_or(path);
    let Some((_, ext)) = last.rsplit_once('.') else {
        return Ok(());
    };
    let ext = ext.to_ascii_lowercase();
    let says = match ext.as_str() {
        "onnx" | "ort" => Some(ModelFormat::Onnx),
        "json" | "ubj" | "bst" | "xgb" | "xgboost" => Some(ModelFormat::Xgboost),
        "txt" | "lgb" | "lightgbm" => Some(ModelFormat::Lightgbm),
        "pkl" | "pickle" | "joblib" | "pt" | "pth" | "pb" | "h5" | "keras" | "safetensors"
        | "mar" | "pmml" | "pdmodel" | "savedmodel" => {
            return Err(format!(
                "a .{ext} file is not a model inferd can serve (onnx, xgboost or lightgbm)"
            ));
        }
        _ => None,
    };
    match says {
        Some(f) if f != format => Err(format!(
            "a .{ext} file is a {f} model, but model.format is {format}"
        )),
        _ => Ok(()),
    }
}

/// A DNS-1123 label: 1-63 of `a-z0-9-`, starting and ending alphanumeric.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("{} characters; at most 63", s.len()));
    }
    let ok = s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)",
            shown(s)
        ))
    }
}

/// A label or annotation key: `[prefix/]name`, prefix a DNS-1123 subdomain.
fn qualified_name(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty() && p.len() <= 253 && p.split('.').all(|l| dns1123_label(l).is_ok());
        if !ok {
            return Err(format!("key prefix '{}' is not a DNS subdomain", shown(p)));
        }
    }
    if name.is_empty() || name.len() > 63 || !is_label_chars(name) {
        return Err(format!(
            "key '{}' is not a qualified name (1-63 of A-Za-z0-9 and -_., alphanumeric at both ends)",
            shown(k)
        ));
    }
    Ok(())
}

fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || (v.len() <= 63 && is_label_chars(v)) {
        Ok(())
    } else {
        Err(format!(
            "value '{}' is not a label value (0-63 of A-Za-z0-9 and -_., alphanumeric at both ends)",
            shown(v)
        ))
    }
}

fn is_label_chars(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        && s.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// Text fit for an error message: at most 64 characters, control characters escaped.
pub(crate) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}
