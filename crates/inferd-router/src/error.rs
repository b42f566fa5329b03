//! Why the router answered a request itself. Each failure has a stable
//! snake_case kind (the `reason` label of `inferd_router_rejected_total`)
//! and is mapped to an HTTP status and a gRPC code here, and only here.

use std::time::Duration;

use hyper::StatusCode;

use crate::proxy::REVISION_HEADER;

/// The `Retry-After` of a full hold queue, in seconds.
const RETRY_AFTER_SECS: u32 = 1;

/// gRPC status codes the router answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrpcCode {
    Ok = 0,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Unavailable = 14,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("no model in the request path")]
    NoModel,
    #[error("unknown service {0}")]
    UnknownService(String),
    #[error("service {service} has no revision {pin}")]
    UnknownRevision { service: String, pin: String },
    #[error("{REVISION_HEADER} is not visible ASCII")]
    BadPin,
    #[error("service {service} has no ready replica")]
    NoReplica { service: String },
    #[error("revision {revision} of {service} has no ready replica")]
    NoRevisionReplica { service: String, revision: String },
    #[error("no service has a replica that serves gRPC")]
    NoGrpcReplica,
    #[error("revision {revision} of {service} is unavailable: {reason}")]
    Unavailable {
        service: String,
        revision: String,
        reason: String,
    },
    #[error("{max} requests already wait for a replica of {service}; retry later")]
    HeldQueueFull { service: String, max: usize },
    #[error(
        "the bodies of the requests waiting for a replica of {service} would pass {max} bytes; retry later"
    )]
    HeldBytesFull { service: String, max: usize },
    #[error("no replica of {service} became usable within {} ms", .timeout.as_millis())]
    HoldTimeout { service: String, timeout: Duration },
    #[error("no response from {service} within {} ms", .timeout.as_millis())]
    Timeout { service: String, timeout: Duration },
    #[error("replica of {service} failed: {source}")]
    Replica {
        service: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("a gRPC message of {size} bytes is over the router's limit of {limit}")]
    MessageTooLarge { size: u64, limit: usize },
    #[error("the request body is over the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("no part of the request body came for {} ms", .timeout.as_millis())]
    BodyTimeout { timeout: Duration },
    #[error("the request body broke off: {0}")]
    RequestBody(#[source] hyper::Error),
    #[error("malformed gRPC request: {0}")]
    BadMessage(&'static str),
    #[error("{0}")]
    Unimplemented(String),
}

impl Failure {
    /// Stable name of the failure.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::NoModel
            | Self::UnknownService(_)
            | Self::UnknownRevision { .. }
            | Self::NoReplica { .. }
            | Self::NoRevisionReplica { .. }
            | Self::NoGrpcReplica => "no_route",
            Self::BadPin | Self::BadMessage(_) | Self::RequestBody(_) => "bad_request",
            Self::Unavailable { .. } => "unavailable",
            Self::HeldQueueFull { .. } | Self::HeldBytesFull { .. } => "held_queue_full",
            Self::HoldTimeout { .. } => "hold_timeout",
            Self::Timeout { .. } => "timeout",
            Self::Replica { .. } => "replica_failed",
            Self::MessageTooLarge { .. } => "message_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::Unimplemented(_) => "unimplemented",
        }
    }

    /// Whether the router answered without any replica seeing the request
    /// (counted in `inferd_router_rejected_total`).
    pub(crate) fn is_rejection(&self) -> bool {
        !matches!(self, Self::Timeout { .. } | Self::Replica { .. })
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::NoModel | Self::UnknownService(_) | Self::UnknownRevision { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::BadPin | Self::BadMessage(_) | Self::RequestBody(_) => StatusCode::BAD_REQUEST,
            Self::NoReplica { .. }
            | Self::NoRevisionReplica { .. }
            | Self::NoGrpcReplica
            | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::HeldQueueFull { .. } | Self::HeldBytesFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::HoldTimeout { .. } | Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Replica { .. } => StatusCode::BAD_GATEWAY,
            Self::MessageTooLarge { .. } | Self::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// Seconds a client should wait before it tries again (`Retry-After`):
    /// the hold queue is full, which is the client's signal to back off.
    pub(crate) fn retry_after(&self) -> Option<u32> {
        matches!(
            self,
            Self::HeldQueueFull { .. } | Self::HeldBytesFull { .. }
        )
        .then_some(RETRY_AFTER_SECS)
    }

    /// Whether the client's connection must close after the answer: part
    /// of its request body is left unread.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::BodyTooLarge { .. } | Self::BodyTimeout { .. } | Self::RequestBody(_)
        )
    }

    pub(crate) fn grpc_code(&self) -> GrpcCode {
        match self {
            Self::NoModel | Self::UnknownService(_) | Self::UnknownRevision { .. } => {
                GrpcCode::NotFound
            }
            Self::BadPin | Self::BadMessage(_) | Self::RequestBody(_) => GrpcCode::InvalidArgument,
            Self::NoReplica { .. }
            | Self::NoRevisionReplica { .. }
            | Self::NoGrpcReplica
            | Self::Unavailable { .. }
            | Self::Replica { .. } => GrpcCode::Unavailable,
            Self::HoldTimeout { .. } | Self::Timeout { .. } | Self::BodyTimeout { .. } => {
                GrpcCode::DeadlineExceeded
            }
            // gRPC's code for a message over the limit, and for "back off".
            Self::MessageTooLarge { .. }
            | Self::BodyTooLarge { .. }
            | Self::HeldQueueFull { .. }
            | Self::HeldBytesFull { .. } => GrpcCode::ResourceExhausted,
            Self::Unimplemented(_) => GrpcCode::Unimplemented,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_hold_queue_says_back_off_and_body_failures_are_the_clients() {
        let full = Failure::HeldQueueFull {
            service: "iris".to_owned(),
            max: 2,
        };
        let bytes = Failure::HeldBytesFull {
            service: "iris".to_owned(),
            max: 10,
        };
        for failure in [&full, &bytes] {
            assert_eq!(failure.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(failure.grpc_code(), GrpcCode::ResourceExhausted);
            assert_eq!(failure.retry_after(), Some(1));
            assert_eq!(failure.kind(), "held_queue_full");
            assert!(failure.is_rejection() && !failure.closes_connection());
        }
        let large = Failure::BodyTooLarge { limit: 10 };
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(large.grpc_code(), GrpcCode::ResourceExhausted);
        let slow = Failure::BodyTimeout {
            timeout: Duration::from_secs(5),
        };
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            slow.to_string(),
            "no part of the request body came for 5000 ms"
        );
        for failure in [&large, &slow] {
            assert!(failure.is_rejection() && failure.closes_connection());
            assert_eq!(failure.retry_after(), None);
        }
    }
}
