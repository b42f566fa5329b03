//! inferd's gateway: routes V2 and V1 inference requests (HTTP/1.1) and
//! `inference.GRPCInferenceService` calls (gRPC over HTTP/2) to the
//! replicas of a service.
//!
//! The service is the model name in the request path, or in the first
//! gRPC message. A revision is chosen by weighted random choice over the
//! service's routable revisions (serving with a ready replica, or
//! activating), or pinned with the `x-inferd-revision` header (gRPC
//! metadata), by name or by the tags `latest` and `prev`; then a replica by
//! power of two choices on requests in flight, among those under the
//! revision's `container_concurrency`. Responses stream, gRPC trailers
//! included.
//!
//! A request's body is read whole before the request looks for a replica
//! slot (gRPC: a unary call's; a `ModelStreamInfer` stream's first
//! message), so a client still sending holds no slot and counts as no load:
//! a body over [`RouterConfig::max_body_bytes`] gets a 413 (at once when
//! its `Content-Length` says so), and one of which no part comes for
//! [`RouterConfig::body_read_timeout`] a 408.
//!
//! Inference requests are idempotent, so a request whose replica fails at
//! the transport level before the response head (connection refused,
//! reset or closed, the HTTP/1 response cut short, the HTTP/2 stream reset)
//! is retried once on another replica of the same revision, chosen the
//! same way, if one has a free slot; otherwise the client gets 502 (gRPC:
//! UNAVAILABLE), with the body read before; a stream is retried only while
//! none of it past its first message was sent. A response head, an error
//! status included, is never retried, nor is a request past its service's
//! timeout.
//!
//! A request that finds no usable replica (its revision is activating from
//! zero, or every replica is at its limit) is held until one is, within the
//! service's timeout and bounds on held requests and their bodies' bytes
//! per service (past them: 429 with `Retry-After`); the
//! activation hook tells the control plane at once when requests wait on a
//! revision with no replica. [`Router::concurrency`] reports requests in
//! flight and held and requests routed, per revision, for the autoscaler
//! ([`Router::concurrency_all`]: every service at once);
//! [`Router::revision_in_flight`] counts a revision's requests even after a
//! new table removed it, so a caller can wait for it to drain. The HTTP
//! listener also answers `GET /metrics` (Prometheus, OpenMetrics text;
//! [`Router::metrics_text`] for serving it elsewhere), `/v2/health/live`
//! and `/v2/health/ready`. The router talks to replicas over the wire only.

mod body;
mod error;
mod grpc;
mod hold;
mod metrics;
mod proxy;
mod rng;
mod serve;
mod stats;
mod table;

pub use body::RouterBody;
pub use proxy::{
    ActivationHook, REVISION_HEADER, RevisionConcurrency, Router, RouterConfig, service_name,
};
pub use serve::{serve, serve_grpc};
pub use table::{
    DEFAULT_TIMEOUT, ReplicaAddr, RevisionRoute, RevisionState, RouteError, RouteTable,
    ServiceRoute,
};
