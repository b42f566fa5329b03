//! The route table of an in-cluster router, as a pure function of what it
//! watches: the InferenceServices of its namespace (their status says which
//! revisions take traffic, in what share, under which tag) and the
//! EndpointSlices of the revisions' headless Services (which pods of each
//! revision are ready, at which address).
//!
//! The status is what the operator decided in its last pass (the control
//! core's [`TrafficPlan`], written as `status.traffic`), so the router
//! follows the operator without computing a plan of its own; the plan read
//! back from the status is turned into routes by the same
//! [`service_route`] the local backend uses, so both backends route a plan
//! alike. The router learns of pods from EndpointSlices rather than from the
//! Deployments' status, because only the slices carry addresses and each
//! pod's readiness and termination as the kubelet and the endpoint
//! controller see them.
//!
//! Rules:
//!
//! - A service is routed under the InferenceService's name once its status
//!   has traffic; before that, requests for it find no service (404).
//! - A revision's replicas are the endpoints of the slices labelled
//!   `kubernetes.io/service-name: REVISION` in the service's namespace that
//!   are ready (an absent `ready` counts as ready, as the API says) and not
//!   terminating, at the slice's port named `http` (a slice without one adds
//!   nothing) and, when present, `grpc`. Slices of one Service are merged,
//!   and an address listed twice is one replica. IPv4 and IPv6 slices are
//!   read; FQDN slices are not (the router dials addresses).
//! - A revision with traffic and no ready endpoint is activating: the
//!   router holds its requests while the operator scales it from zero. The
//!   newest revision whose model failed to load (`status.modelStatus`
//!   `FailedToLoad`) is unavailable, so its requests are refused with the
//!   reason at once instead of waiting for a pod that will not come.
//! - Odd input (missing fields, unparsable addresses, ports out of range)
//!   is skipped with a debug log; nothing here panics.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use inferd_api::ModelState;
use inferd_control::service::{PlannedRevision, Route, TrafficPlan, service_route};
use inferd_router::{ReplicaAddr, RouteTable};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use crate::resource::{InferenceServiceObject, ServiceStatus};

/// The label Kubernetes puts on an EndpointSlice naming its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The name of the replica port that carries HTTP (V2, V1, health).
pub const PORT_NAME_HTTP: &str = "http";
/// The name of the replica port that carries gRPC.
pub const PORT_NAME_GRPC: &str = "grpc";

/// The reason given for a revision whose model failed to load when the
/// status names none.
const FAILED_WITHOUT_REASON: &str = "the model failed to load";

/// The router's table for `services` (one namespace's InferenceServices, as
/// the API server returns them) given the EndpointSlices of their
/// revisions. Generic over [`Borrow`] so that a caller holding the objects
/// behind `Arc`s (a reflector's store) needs no copies.
pub fn route_table<S, E>(services: &[S], slices: &[E]) -> RouteTable
where
    S: Borrow<InferenceServiceObject>,
    E: Borrow<EndpointSlice>,
{
    let replicas = replicas_by_service(slices);
    let mut table = RouteTable::new();
    for isvc in services {
        let isvc = isvc.borrow();
        let Some(name) = isvc.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
            tracing::debug!("InferenceService without a name skipped");
            continue;
        };
        if table.services.contains_key(name) {
            tracing::debug!(
                service = name,
                "a second InferenceService of the same name (another namespace?) skipped"
            );
            continue;
        }
        let Some(status) = isvc.status.as_ref().filter(|s| !s.traffic.is_empty()) else {
            tracing::debug!(service = name, "no traffic in the status yet; not routed");
            continue;
        };
        let namespace = isvc.metadata.namespace.as_deref();
        let plan = traffic_plan(name, status);
        let route = service_route(
            &plan,
            isvc.spec.predictor.timeout(),
            |revision| {
                status
                    .revisions
                    .iter()
                    .find(|r| r.name == revision)
                    .and_then(|r| r.template.container_concurrency)
            },
            |revision| {
                replicas
                    .get(&(namespace, revision))
                    .map(|by_addr| by_addr.values().copied().collect())
                    .unwrap_or_default()
            },
        );
        table = table.with_service(name, route);
    }
    table
}

/// The traffic plan a status records: the targets in order with their
/// shares, the tags, and the newest revision unavailable when its model
/// failed to load (the only case in which the operator's plan has an
/// unavailable revision).
fn traffic_plan(service: &str, status: &ServiceStatus) -> TrafficPlan {
    let tagged = |tag: &str| {
        status
            .traffic
            .iter()
            .find(|t| t.tag.as_deref() == Some(tag))
            .map(|t| t.revision_name.clone())
    };
    let latest = tagged("latest").or_else(|| {
        status
            .traffic
            .iter()
            .find(|t| t.latest_revision)
            .map(|t| t.revision_name.clone())
    });
    let failed = status
        .model_status
        .as_ref()
        .filter(|m| m.state == ModelState::FailedToLoad)
        .map(|m| {
            m.reason
                .clone()
                .unwrap_or_else(|| FAILED_WITHOUT_REASON.to_owned())
        });
    let mut seen = BTreeSet::new();
    let mut revisions = Vec::new();
    for target in &status.traffic {
        let name = target.revision_name.as_str();
        if name.is_empty() || !seen.insert(name) {
            tracing::debug!(
                service,
                revision = name,
                "empty or repeated traffic target skipped"
            );
            continue;
        }
        let route = match &failed {
            Some(reason) if latest.as_deref() == Some(name) => Route::Unavailable(reason.clone()),
            _ => Route::Routable,
        };
        revisions.push(PlannedRevision {
            name: name.to_owned(),
            percent: target.percent,
            route,
        });
    }
    // A tag that names no target would make the router refuse the service.
    let known = |tag: Option<String>| tag.filter(|t| seen.contains(t.as_str()));
    TrafficPlan {
        latest: known(latest),
        prev: known(tagged("prev")),
        latest_ready: status.latest_ready_revision.clone(),
        rolled_out: status.rolled_out.last().cloned(),
        revisions,
    }
}

/// (namespace, Service name) of a slice's owner.
type ServiceKey<'a> = (Option<&'a str>, &'a str);

/// The ready replicas behind every Service the slices belong to, by
/// (namespace, Service name), keyed by HTTP address (which merges the
/// slices of one Service and removes repeated addresses, in a stable order).
fn replicas_by_service<E: Borrow<EndpointSlice>>(
    slices: &[E],
) -> BTreeMap<ServiceKey<'_>, BTreeMap<SocketAddr, ReplicaAddr>> {
    let mut by_service: BTreeMap<ServiceKey<'_>, BTreeMap<SocketAddr, ReplicaAddr>> =
        BTreeMap::new();
    for slice in slices {
        let slice = slice.borrow();
        let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
        else {
            tracing::debug!(
                slice = slice_name,
                "EndpointSlice without a Service label skipped"
            );
            continue;
        };
        let key = (slice.metadata.namespace.as_deref(), service.as_str());
        let replicas = by_service.entry(key).or_default();
        for replica in slice_replicas(slice, slice_name) {
            replicas.entry(replica.http).or_insert(replica);
        }
    }
    by_service
}

/// The replicas one slice lists: its ready, not terminating endpoints at
/// its `http` port (and `grpc`, when it has one).
fn slice_replicas(slice: &EndpointSlice, slice_name: &str) -> Vec<ReplicaAddr> {
    let family = match slice.address_type.as_str() {
        "IPv4" => Family::V4,
        "IPv6" => Family::V6,
        other => {
            tracing::debug!(
                slice = slice_name,
                address_type = other,
                "EndpointSlice of an address type the router cannot dial skipped"
            );
            return Vec::new();
        }
    };
    let Some(http) = named_port(slice, PORT_NAME_HTTP, slice_name) else {
        tracing::debug!(
            slice = slice_name,
            "EndpointSlice without a usable `http` port skipped"
        );
        return Vec::new();
    };
    let grpc = named_port(slice, PORT_NAME_GRPC, slice_name);
    slice
        .endpoints
        .iter()
        .filter(|e| is_ready(e))
        .filter_map(|e| {
            let ip = endpoint_ip(e, family, slice_name)?;
            Some(ReplicaAddr::new(
                SocketAddr::new(ip, http),
                grpc.map(|port| SocketAddr::new(ip, port)),
            ))
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// Whether an endpoint takes new requests: ready (absent means ready, as
/// the EndpointSlice API documents) and not terminating.
fn is_ready(endpoint: &Endpoint) -> bool {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    ready && !terminating
}

/// The endpoint's address. The API says an endpoint's addresses are
/// interchangeable (one pod), so the first one of the slice's family is
/// taken: listing each would count one pod as several replicas, and its
/// concurrency limit several times.
fn endpoint_ip(endpoint: &Endpoint, family: Family, slice_name: &str) -> Option<IpAddr> {
    let parsed = endpoint.addresses.iter().find_map(|a| match family {
        Family::V4 => a.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        Family::V6 => a.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
    });
    if parsed.is_none() {
        tracing::debug!(
            slice = slice_name,
            addresses = ?endpoint.addresses,
            "endpoint without an address of the slice's type skipped"
        );
    }
    parsed
}

/// The number of the slice's port called `name`, when it is a usable TCP
/// port (1-65535).
fn named_port(slice: &EndpointSlice, name: &str, slice_name: &str) -> Option<u16> {
    let port = slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some(name))?;
    if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
        tracing::debug!(slice = slice_name, port = name, protocol = ?port.protocol, "port is not TCP");
        return None;
    }
    let number = port
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0);
    if number.is_none() {
        tracing::debug!(slice = slice_name, port = name, number = ?port.port, "port number out of range");
    }
    number
}
