//! inferd's gateway: routes V2 and V1 inference requests to the replicas of
//! a service over HTTP/1.1.
//!
//! The service is the model name in the request path. A revision is chosen
//! by weighted random choice over the service's ready revisions (or pinned
//! with the `x-inferd-revision` header, by name or by the tags `latest` and
//! `prev`), then a replica by power of two choices on requests in flight.
//! Bodies stream both ways. A connect failure before any byte of the body
//! was sent is retried once on another replica of the same revision.
//! [`Router::concurrency`] reports requests in flight per revision for the
//! autoscaler. The router talks to replicas over the wire only.

mod body;
mod proxy;
mod rng;
mod serve;
mod table;

pub use body::RouterBody;
pub use proxy::{REVISION_HEADER, RevisionConcurrency, Router, RouterConfig, service_name};
pub use serve::serve;
pub use table::{DEFAULT_TIMEOUT, RevisionRoute, RouteError, RouteTable, ServiceRoute};
