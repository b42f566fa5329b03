//! The one place where failures become HTTP statuses and `{"error": ...}` bodies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use inferd_protocol::DecodeError;

/// A failed request, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("model '{model}' has no version '{version}'")]
    UnknownVersion { model: String, version: String },
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed for this path")]
    MethodNotAllowed,
    #[error("the request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("no part of the request body came for {} ms", .0.as_millis())]
    BodyTimeout(std::time::Duration),
    #[error("model '{0}' is not ready: it is still loading")]
    ModelLoading(String),
    #[error("model '{0}' is not ready: it failed to load: {1}")]
    ModelFailed(String, String),
    #[error("the server is shutting down")]
    Unavailable,
    #[error("model '{model}' is overloaded: its queue is full; retry after {retry_after_secs} s")]
    Overloaded {
        model: String,
        retry_after_secs: u64,
    },
    #[error("the request's deadline passed before it could run")]
    DeadlineExceeded,
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownModel(_) | ApiError::UnknownVersion { .. } | ApiError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::ModelLoading(_) | ApiError::ModelFailed(..) | ApiError::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<inferd_runtime::Error> for ApiError {
    fn from(e: inferd_runtime::Error) -> Self {
        match e {
            inferd_runtime::Error::Input(input) => ApiError::BadRequest(input.to_string()),
            inferd_runtime::Error::PoolClosed => ApiError::Unavailable,
            inferd_runtime::Error::DeadlineExceeded => ApiError::DeadlineExceeded,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let mut response = json_response(status, inferd_protocol::error_body(&self.to_string()));
        match self {
            ApiError::Overloaded {
                retry_after_secs, ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            // Part of the body is left unread: the connection cannot go on.
            ApiError::PayloadTooLarge(_) | ApiError::BodyTimeout(_) => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// A response with a JSON body already encoded.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
