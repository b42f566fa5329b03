//! Errors that name the document and the field.

use std::fmt;

/// One refused field: its path (`spec.predictor.maxReplicas`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a resource was refused. A refused resource is refused whole.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The text is not YAML (or breaks the parser's limits).
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// Fields are malformed, out of range, or ask for what inferd cannot do.
    #[error("{}{}", document_prefix(*.document), join(.errors))]
    Invalid {
        /// 1-based index of the (non-empty) YAML document, when read from a stream.
        document: Option<usize>,
        errors: Vec<FieldError>,
    },
    /// A resource could not be written as YAML.
    #[error("cannot write YAML: {0}")]
    Serialize(String),
}

fn document_prefix(document: Option<usize>) -> String {
    document
        .map(|d| format!("document {d}: "))
        .unwrap_or_default()
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// One refused field.
    pub fn field(path: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            document: None,
            errors: vec![FieldError {
                path: path.into(),
                message: message.into(),
            }],
        }
    }

    /// The same error, said of document `index` (1-based).
    pub fn in_document(self, index: usize) -> ApiError {
        match self {
            ApiError::Invalid { errors, .. } => ApiError::Invalid {
                document: Some(index),
                errors,
            },
            other => other,
        }
    }

    /// The refused fields (empty for YAML and write errors).
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ApiError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

/// Collects field errors, so one pass reports all of them.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid {
                document: None,
                errors: self.0,
            })
        }
    }
}
