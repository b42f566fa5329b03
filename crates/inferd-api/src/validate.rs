//! Validation of inferd's resources. Every check names the field's path; a
//! resource with any bad field is refused whole.

use crate::error::{ApiError, Errors};
use crate::types::{
    API_VERSION, AutoscalerClass, InferenceService, KIND_INFERENCE_SERVICE, MAX_REPLICAS,
    ModelFormat, ModelSpec, PredictorSpec, ScaleMetric, TaintEffect, TolerationOperator,
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
/// Largest `model.maxSizeBytes` (1 TiB).
pub const MAX_MODEL_SIZE_BYTES: u64 = 1 << 40;
/// Largest total size of all annotations, as Kubernetes limits it.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Most `nodeSelector` entries; a real selector names a handful of labels.
pub const MAX_NODE_SELECTOR: usize = 64;
/// Most tolerations; a real pod tolerates a handful of taints.
pub const MAX_TOLERATIONS: usize = 64;
/// Largest `affinity`, written as JSON: generous for real rules, small enough
/// that the revision record, which keeps every revision's copy, stays small.
pub const MAX_AFFINITY_BYTES: usize = 64 * 1024;
/// The fields of Kubernetes' `Affinity`.
const AFFINITY_FIELDS: [&str; 3] = ["nodeAffinity", "podAffinity", "podAntiAffinity"];

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
    if p.autoscaler_class == Some(AutoscalerClass::Hpa) {
        // The HPA's target is a CPU utilisation; it keeps one replica.
        if let Some(t) = p.scale_target
            && !(t.is_finite() && (1.0..=100.0).contains(&t))
        {
            e.push(
                format!("{at}.scaleTarget"),
                format!(
                    "with autoscalerClass hpa, a CPU utilisation in percent (1 to 100), not {t}"
                ),
            );
        }
        if p.scale_metric.is_some() {
            e.push(
                format!("{at}.scaleMetric"),
                "with autoscalerClass hpa the metric is CPU; leave scaleMetric out",
            );
        }
        if p.resources.as_ref().and_then(|r| r.cpu.as_ref()).is_none() {
            e.push(
                format!("{at}.resources.cpu"),
                "required with autoscalerClass hpa: the HPA's target is a share of the CPU request",
            );
        }
    } else if let Some(t) = p.scale_target {
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
    validate_pod_settings(e, p, at);
}

/// `nodeSelector`, `tolerations`, `affinity` and `serviceAccountName`, checked
/// as Kubernetes checks a pod's, so a bad value is refused with its path here
/// rather than surfacing later as a pod the API server will not create.
/// Over-long lists are refused by their length alone, so a hostile spec
/// cannot make the error itself huge.
fn validate_pod_settings(e: &mut Errors, p: &PredictorSpec, at: &str) {
    let n = p.node_selector.len();
    if n > MAX_NODE_SELECTOR {
        e.push(
            format!("{at}.nodeSelector"),
            format!("{n} entries; at most {MAX_NODE_SELECTOR}"),
        );
    } else {
        for (k, v) in &p.node_selector {
            let path = format!("{at}.nodeSelector[{}]", shown(k));
            if let Err(m) = qualified_name(k) {
                e.push(path, m);
            } else if let Err(m) = label_value(v) {
                e.push(path, m);
            }
        }
    }

    let n = p.tolerations.len();
    if n > MAX_TOLERATIONS {
        e.push(
            format!("{at}.tolerations"),
            format!("{n} tolerations; at most {MAX_TOLERATIONS}"),
        );
    } else {
        for (i, t) in p.tolerations.iter().enumerate() {
            let path = format!("{at}.tolerations[{i}]");
            let exists = t.operator_or_default() == TolerationOperator::Exists;
            match t.key.as_deref().filter(|k| !k.is_empty()) {
                Some(k) => {
                    if let Err(m) = qualified_name(k) {
                        e.push(format!("{path}.key"), m);
                    }
                }
                None if !exists => e.push(
                    format!("{path}.key"),
                    "is required unless operator is Exists (which, without a key, tolerates every taint)",
                ),
                None => {}
            }
            match t.value.as_deref().filter(|v| !v.is_empty()) {
                Some(v) if exists => e.push(
                    format!("{path}.value"),
                    format!(
                        "'{}' is set, but operator Exists matches any value; remove it or use operator Equal",
                        shown(v)
                    ),
                ),
                Some(v) => {
                    if let Err(m) = label_value(v) {
                        e.push(format!("{path}.value"), m);
                    }
                }
                None => {}
            }
            if let Some(secs) = t.toleration_seconds {
                if t.effect != Some(TaintEffect::NoExecute) {
                    e.push(
                        format!("{path}.tolerationSeconds"),
                        "applies to effect NoExecute only",
                    );
                } else if secs < 0 {
                    e.push(
                        format!("{path}.tolerationSeconds"),
                        format!("must be >= 0, not {secs}"),
                    );
                }
            }
        }
    }

    if let Some(affinity) = &p.affinity {
        let bytes = json_len(&affinity.0);
        if bytes > MAX_AFFINITY_BYTES {
            e.push(
                format!("{at}.affinity"),
                format!("{bytes} bytes as JSON; at most {MAX_AFFINITY_BYTES}"),
            );
        } else {
            for (k, v) in &affinity.0 {
                if !AFFINITY_FIELDS.contains(&k.as_str()) {
                    e.push(
                        format!("{at}.affinity.{}", shown(k)),
                        "unknown field (nodeAffinity, podAffinity or podAntiAffinity)",
                    );
                } else if !v.is_object() {
                    e.push(format!("{at}.affinity.{k}"), "must be a mapping");
                }
            }
        }
    }

    if let Some(sa) = &p.service_account_name
        && let Err(m) = dns1123_subdomain(sa)
    {
        e.push(format!("{at}.serviceAccountName"), m);
    }
}

/// The length of `value` written as JSON, counted without building the text.
fn json_len(value: &serde_json::Map<String, serde_json::Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a JSON map cannot fail; were it to, the size counts as too large.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
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
    if let Some(max) = m.max_size_bytes
        && !(1..=MAX_MODEL_SIZE_BYTES).contains(&max)
    {
        e.push(
            format!("{at}.maxSizeBytes"),
            format!("{max} is out of range; 1 to {MAX_MODEL_SIZE_BYTES} (1 TiB)"),
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

/// A DNS-1123 subdomain, as Kubernetes names most objects (a ServiceAccount
/// among them): at most 253 characters, dot-separated parts of `a-z0-9-`, each
/// starting and ending alphanumeric.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 253 {
        return Err(format!("{} characters; at most 253", s.len()));
    }
    let ok = s.split('.').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit)",
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
