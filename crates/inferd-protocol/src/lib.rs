//! Wire types and codecs of the inference protocols inferd speaks: the Open
//! Inference Protocol (V2) and KServe V1 over REST/JSON.
//!
//! Decoders turn request bytes into [`inferd_tensor::Tensor`]s, checking
//! everything that needs no model (JSON structure, datatype names, element
//! ranges, element counts against shapes); errors carry the path of the
//! offending field. Encoders write responses straight from tensors. This
//! crate knows no model and no runtime.

pub mod binary;
mod data;
pub mod v1;
pub mod v2;

use std::fmt;

use serde::{Deserialize, Serialize};

/// Free-form `parameters` objects, accepted wherever the protocol allows them.
pub type Parameters = serde_json::Map<String, serde_json::Value>;

/// A request that cannot be decoded; the caller answers 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    path: String,
    message: String,
}

impl DecodeError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> DecodeError {
        DecodeError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Where in the body the problem is, e.g. `inputs[0].data`; empty for the whole body.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for DecodeError {}

/// A result that cannot be written in the requested encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(pub String);

/// Parses a JSON body; on failure, parses it again with path tracking to say
/// where it failed (slower, so only for bodies already known to be bad).
pub(crate) fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(DecodeError::new("", "the request body is empty")),
        Some(b'{') => {}
        Some(_) => {
            return Err(DecodeError::new(
                "",
                "the request body must be a JSON object",
            ));
        }
    }
    serde_json::from_slice(body).map_err(|plain| {
        let mut de = serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." || path == "?" {
                    String::new()
                } else {
                    path
                };
                DecodeError::new(path, e.into_inner().to_string())
            }
            // Only trailing bytes after a valid value fail the plain parse alone.
            Ok(_) => DecodeError::new("", plain.to_string()),
        }
    })
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// The body of every error response: `{"error": "<message>"}`.
pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody { error: message })
        .unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_escapes() {
        let body = error_body("bad \"x\"\n");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"], "bad \"x\"\n");
    }

    #[test]
    fn decode_error_display_names_the_path() {
        assert_eq!(
            DecodeError::new("inputs[0].shape", "bad").to_string(),
            "inputs[0].shape: bad"
        );
        assert_eq!(DecodeError::new("", "empty").to_string(), "empty");
    }
}
