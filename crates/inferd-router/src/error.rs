//! Why the router answered a request itself. Each failure has a stable
//! snake_case kind (the `reason` label of `inferd_router_rejected_total`)
//! and is mapped to an HTTP status and a gRPC code here, and only here.

use std::time::Duration;

use hyper::StatusCode;

use crate::proxy::REVISION_HEADER;

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
    #[error("{max} requests already wait for a replica of {service}")]
    HeldQueueFull { service: String, max: usize },
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
            Self::HeldQueueFull { .. } => "held_queue_full",
            Self::HoldTimeout { .. } => "hold_timeout",
            Self::Timeout { .. } => "timeout",
            Self::Replica { .. } => "replica_failed",
            Self::MessageTooLarge { .. } => "message_too_large",
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
            | Self::Unavailable { .. }
            | Self::HeldQueueFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::HoldTimeout { .. } | Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Replica { .. } => StatusCode::BAD_GATEWAY,
            Self::MessageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
        }
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
            | Self::HeldQueueFull { .. }
            | Self::Replica { .. } => GrpcCode::Unavailable,
            Self::HoldTimeout { .. } | Self::Timeout { .. } => GrpcCode::DeadlineExceeded,
            Self::MessageTooLarge { .. } => GrpcCode::ResourceExhausted,
            Self::Unimplemented(_) => GrpcCode::Unimplemented,
        }
    }
}
