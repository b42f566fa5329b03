//! inferd's resource types (`serving.inferd.dev/v1alpha1`), their validation,
//! YAML reading and writing, and the import of KServe's InferenceService.
//!
//! This crate is a leaf: it imports no other inferd crate. With the feature
//! `schema`, the spec and status types derive `schemars::JsonSchema`, from
//! which inferd-operator generates the CustomResourceDefinition.

mod error;
mod kserve;
#[cfg(feature = "schema")]
mod schema;
mod types;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{ApiError, FieldError};
pub use kserve::{
    KSERVE_API_VERSION, KServeBatcher, KServeEnvVar, KServeInferenceService, KServeMeta,
    KServeModel, KServeModelFormat, KServePredictor, KServeResources, KServeSpec, from_kserve,
};
pub use types::*;
pub use validate::{
    MAX_AFFINITY_BYTES, MAX_ANNOTATIONS_BYTES, MAX_BATCH_SIZE, MAX_CONTAINER_CONCURRENCY,
    MAX_CPU_MILLICORES, MAX_ENV, MAX_ENV_VALUE, MAX_GPUS, MAX_MEMORY_BYTES, MAX_MODEL_SIZE_BYTES,
    MAX_NODE_SELECTOR, MAX_QUEUE_DELAY_US, MAX_QUEUE_SIZE, MAX_SCALE_TARGET, MAX_TIMEOUT_SECONDS,
    MAX_TOLERATIONS, MAX_URI_LEN, dns1123_label, dns1123_subdomain, format_matches_extension,
    storage_uri,
};

use serde::de::DeserializeOwned;
use serde_json::Value;

/// One resource read from YAML.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// inferd's own, validated.
    InferenceService(Box<InferenceService>),
    /// KServe's, as written; [`from_kserve`] converts it.
    KServeInferenceService(Box<KServeInferenceService>),
}

impl Resource {
    /// inferd's InferenceService, converting a KServe one.
    pub fn into_inference_service(self) -> Result<InferenceService, ApiError> {
        match self {
            Resource::InferenceService(isvc) => Ok(*isvc),
            Resource::KServeInferenceService(k) => from_kserve(&k),
        }
    }
}

/// Largest YAML text accepted (a resource file, not a data set).
pub const MAX_YAML_BYTES: usize = 4 * 1024 * 1024;

/// Reads every document of a YAML stream, dispatching on `apiVersion` and
/// `kind`. inferd's resources are validated; KServe's are read as written.
/// An error names the document (1-based, counting non-empty documents) and the
/// field's path; nothing is returned unless every document is good.
pub fn parse_yaml(text: &str) -> Result<Vec<Resource>, ApiError> {
    if text.len() > MAX_YAML_BYTES {
        return Err(ApiError::Yaml(format!(
            "{} bytes; at most {MAX_YAML_BYTES}",
            text.len()
        )));
    }
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ApiError::Yaml(e.to_string()))?;
    docs.into_iter()
        .enumerate()
        .map(|(i, doc)| parse_document(doc).map_err(|e| e.in_document(i + 1)))
        .collect()
}

/// Reads every document as inferd's InferenceService, converting KServe's.
pub fn load_inference_services(text: &str) -> Result<Vec<InferenceService>, ApiError> {
    parse_yaml(text)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.into_inference_service().map_err(|e| e.in_document(i + 1)))
        .collect()
}

fn parse_document(doc: Value) -> Result<Resource, ApiError> {
    let Value::Object(map) = &doc else {
        return Err(ApiError::field("", "a resource must be a mapping"));
    };
    let field = |name: &str| -> Result<String, ApiError> {
        match map.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::field(name, "must be a string")),
            None => Err(ApiError::field(name, "is required")),
        }
    };
    let api_version = field("apiVersion")?;
    let kind = field("kind")?;
    match (api_version.as_str(), kind.as_str()) {
        (API_VERSION, KIND_INFERENCE_SERVICE) => {
            let isvc: InferenceService = from_value(doc)?;
            isvc.validate()?;
            Ok(Resource::InferenceService(Box::new(isvc)))
        }
        (KSERVE_API_VERSION, "InferenceService") => {
            Ok(Resource::KServeInferenceService(Box::new(from_value(doc)?)))
        }
        (API_VERSION | KSERVE_API_VERSION, _) => Err(ApiError::field(
            "kind",
            format!(
                "'{}' is not a resource inferd reads (InferenceService)",
                validate::shown(&kind)
            ),
        )),
        _ => Err(ApiError::field(
            "apiVersion",
            format!(
                "'{}' is not one inferd reads ({API_VERSION} or {KSERVE_API_VERSION})",
                validate::shown(&api_version)
            ),
        )),
    }
}

fn from_value<T: DeserializeOwned>(doc: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ApiError::field(path, e.into_inner().to_string())
    })
}

/// Writes one resource as YAML.
pub fn to_yaml(isvc: &InferenceService) -> Result<String, ApiError> {
    serde_saphyr::to_string(isvc).map_err(|e| ApiError::Serialize(e.to_string()))
}

/// Writes resources as one YAML stream, documents separated by `---`.
pub fn to_yaml_multi(services: &[InferenceService]) -> Result<String, ApiError> {
    let mut out = String::new();
    for (i, isvc) in services.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&to_yaml(isvc)?);
    }
    Ok(out)
}
