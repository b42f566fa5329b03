//! The route table: services, their revisions with traffic weights and
//! states, and each revision's ready replicas. [`RouteTable`] is the plain
//! description a caller builds; the router compiles it into [`Compiled`],
//! which carries the per-replica in-flight counters and the per-revision
//! statistics that outlive any one table.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::metrics::Metrics;
use crate::rng::Rng;
use crate::stats::{InFlight, RevisionStats, ServiceStats, Stats};

/// Per-request timeout of a service built with [`ServiceRoute::new`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Every service the router knows, by name (the model name in the path).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub services: BTreeMap<String, ServiceRoute>,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a service.
    #[must_use]
    pub fn with_service(mut self, name: impl Into<String>, route: ServiceRoute) -> Self {
        self.services.insert(name.into(), route);
        self
    }
}

/// One service: its revisions, the revisions the tags `latest` and `prev`
/// name, and how long a request may take from its arrival to the replica's
/// response head (time spent held waiting for a replica included).
#[derive(Debug, Clone)]
pub struct ServiceRoute {
    pub revisions: Vec<RevisionRoute>,
    pub latest: Option<String>,
    pub prev: Option<String>,
    pub timeout: Duration,
}

impl Default for ServiceRoute {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceRoute {
    pub fn new() -> Self {
        Self {
            revisions: Vec::new(),
            latest: None,
            prev: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    #[must_use]
    pub fn with_revision(mut self, revision: RevisionRoute) -> Self {
        self.revisions.push(revision);
        self
    }

    #[must_use]
    pub fn with_tags(mut self, latest: Option<&str>, prev: Option<&str>) -> Self {
        self.latest = latest.map(str::to_owned);
        self.prev = prev.map(str::to_owned);
        self
    }

    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Where a replica listens: HTTP always, gRPC when it serves gRPC too. A
/// replica is known by its HTTP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaAddr {
    pub http: SocketAddr,
    pub grpc: Option<SocketAddr>,
}

impl ReplicaAddr {
    pub fn new(http: SocketAddr, grpc: Option<SocketAddr>) -> Self {
        Self { http, grpc }
    }

    /// A replica without a gRPC listener; gRPC calls skip it.
    pub fn http_only(http: SocketAddr) -> Self {
        Self { http, grpc: None }
    }
}

impl From<SocketAddr> for ReplicaAddr {
    fn from(http: SocketAddr) -> Self {
        Self::http_only(http)
    }
}

/// Whether a revision takes requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RevisionState {
    /// Takes requests when it has a ready replica; with none it is not
    /// routable.
    #[default]
    Serving,
    /// Will have replicas soon (scaled to zero, or starting): routable even
    /// with no replica; its requests are held until a replica is usable.
    Activating,
    /// Cannot serve (a failed model load, say): requests pinned to it, or
    /// left with nowhere else to go, get a 503 with this reason.
    Unavailable(String),
}

/// One revision: its share of the service's traffic in percent, its state,
/// its ready replicas, and how many requests one replica takes at once
/// (`container_concurrency`, 0 for no limit).
#[derive(Debug, Clone)]
pub struct RevisionRoute {
    pub name: String,
    pub percent: u32,
    pub replicas: Vec<ReplicaAddr>,
    pub state: RevisionState,
    pub container_concurrency: u32,
}

impl RevisionRoute {
    /// A serving revision with no concurrency limit.
    pub fn new(name: impl Into<String>, percent: u32, replicas: Vec<ReplicaAddr>) -> Self {
        Self {
            name: name.into(),
            percent,
            replicas,
            state: RevisionState::Serving,
            container_concurrency: 0,
        }
    }

    #[must_use]
    pub fn with_state(mut self, state: RevisionState) -> Self {
        self.state = state;
        self
    }

    #[must_use]
    pub fn with_container_concurrency(mut self, limit: u32) -> Self {
        self.container_concurrency = limit;
        self
    }

    /// Whether the weighted split may send requests here: serving with a
    /// replica, or activating.
    pub fn is_routable(&self) -> bool {
        routable(&self.state, self.replicas.len())
    }
}

fn routable(state: &RevisionState, replicas: usize) -> bool {
    match state {
        RevisionState::Serving => replicas > 0,
        RevisionState::Activating => true,
        RevisionState::Unavailable(_) => false,
    }
}

/// Why a route table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("service name is empty")]
    EmptyServiceName,
    #[error("service {service}: a revision name is empty")]
    EmptyRevisionName { service: String },
    #[error("service {service}: revision {revision} appears twice")]
    DuplicateRevision { service: String, revision: String },
    #[error("service {service}: revision {revision} has {percent}% of the traffic, over 100")]
    PercentOver100 {
        service: String,
        revision: String,
        percent: u32,
    },
    #[error("service {service}: the routable revisions' traffic sums to {sum}%, not 100")]
    WeightSum { service: String, sum: u64 },
    #[error("service {service}: tag {tag} names revision {revision}, which the service lacks")]
    UnknownTag {
        service: String,
        tag: &'static str,
        revision: String,
    },
    #[error("service {service}: the request timeout is zero")]
    ZeroTimeout { service: String },
}

/// A replica's requests in flight, shared by every table that lists the
/// replica's HTTP address.
#[derive(Debug, Default)]
pub(crate) struct ReplicaLoad {
    in_flight: AtomicUsize,
}

/// A replica as one table lists it.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) addr: ReplicaAddr,
    load: Arc<ReplicaLoad>,
}

impl Replica {
    pub(crate) fn in_flight(&self) -> usize {
        self.load.in_flight.load(Ordering::SeqCst)
    }

    /// Takes one request slot unless the replica already has `limit` (0:
    /// no limit). The check and the increment are one atomic step, so two
    /// requests never both take the last slot.
    pub(crate) fn try_enter(&self, limit: u32) -> bool {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.load
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (limit == 0 || n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn leave(&self) {
        self.load.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why no replica slot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// The revision has no replica for this protocol.
    NoReplica,
    /// Every such replica has `container_concurrency` requests.
    AllBusy,
}

/// Which listener of a replica a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Http,
    Grpc,
}

#[derive(Debug)]
pub(crate) struct Revision {
    pub(crate) name: String,
    percent: u32,
    pub(crate) state: RevisionState,
    container_concurrency: u32,
    pub(crate) replicas: Vec<Arc<Replica>>,
    pub(crate) stats: Arc<RevisionStats>,
}

impl Revision {
    pub(crate) fn is_routable(&self) -> bool {
        routable(&self.state, self.replicas.len())
    }

    /// Takes a slot on a replica (other than `exclude`) by power of two
    /// choices among those under the concurrency limit: two distinct
    /// replicas at random, the one with fewer requests in flight; a tie
    /// goes to the first drawn.
    pub(crate) fn acquire(
        &self,
        rng: &Rng,
        wire: Wire,
        exclude: Option<&Arc<Replica>>,
    ) -> Result<InFlight, NoSlot> {
        let limit = usize::try_from(self.container_concurrency).unwrap_or(usize::MAX);
        let serves = |r: &&Arc<Replica>| {
            exclude.is_none_or(|x| !Arc::ptr_eq(r, x))
                && (wire == Wire::Http || r.addr.grpc.is_some())
        };
        if !self.replicas.iter().any(|r| serves(&r)) {
            return Err(NoSlot::NoReplica);
        }
        // A slot can go between the choice and the increment; each such
        // race means another request took it, so a few rounds suffice.
        for _ in 0..=self.replicas.len() {
            let candidates: Vec<&Arc<Replica>> = self
                .replicas
                .iter()
                .filter(serves)
                .filter(|r| limit == 0 || r.in_flight() < limit)
                .collect();
            let Some(chosen) = p2c(rng, &candidates) else {
                return Err(NoSlot::AllBusy);
            };
            if chosen.try_enter(self.container_concurrency) {
                return Ok(InFlight::new(Arc::clone(chosen), Arc::clone(&self.stats)));
            }
        }
        Err(NoSlot::AllBusy)
    }
}

fn p2c<'a>(rng: &Rng, candidates: &[&'a Arc<Replica>]) -> Option<&'a Arc<Replica>> {
    let n = candidates.len() as u64;
    let index = |i: u64| usize::try_from(i).unwrap_or(0);
    match n {
        0 => None,
        1 => Some(candidates[0]),
        _ => {
            let i = rng.below(n);
            let mut j = rng.below(n - 1);
            if j >= i {
                j += 1;
            }
            let (a, b) = (candidates[index(i)], candidates[index(j)]);
            Some(if b.in_flight() < a.in_flight() { b } else { a })
        }
    }
}

#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) revisions: Vec<Revision>,
    latest: Option<usize>,
    prev: Option<usize>,
    pub(crate) timeout: Duration,
    pub(crate) stats: Arc<ServiceStats>,
}

impl Service {
    /// Weighted choice among the routable revisions (as an index).
    pub(crate) fn pick_revision(&self, rng: &Rng) -> Option<usize> {
        let routable = || {
            self.revisions
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_routable())
        };
        let total: u64 = routable().map(|(_, r)| u64::from(r.percent)).sum();
        if total == 0 {
            return None;
        }
        let mut point = rng.below(total);
        for (i, revision) in routable() {
            let weight = u64::from(revision.percent);
            if point < weight {
                return Some(i);
            }
            point -= weight;
        }
        None
    }

    /// A revision (as an index) by name, or by the tag `latest` or `prev`.
    pub(crate) fn find_revision(&self, pin: &str) -> Option<usize> {
        if let Some(i) = self.revisions.iter().position(|r| r.name == pin) {
            return Some(i);
        }
        match pin {
            "latest" => self.latest,
            "prev" => self.prev,
            _ => None,
        }
    }

    /// Whether some revision takes unpinned requests (the table's check
    /// makes the routable revisions' weights sum to 100).
    pub(crate) fn is_routable(&self) -> bool {
        self.revisions.iter().any(Revision::is_routable)
    }

    /// An unavailable revision that would carry traffic, for the error of
    /// a request that found no routable revision.
    pub(crate) fn unavailable(&self) -> Option<(&str, &str)> {
        self.revisions.iter().find_map(|r| match &r.state {
            RevisionState::Unavailable(reason) if r.percent > 0 => {
                Some((r.name.as_str(), reason.as_str()))
            }
            _ => None,
        })
    }
}

/// The table as the router uses it.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    pub(crate) services: HashMap<String, Arc<Service>>,
}

impl Compiled {
    /// Checks `table` and builds the routing form. A replica whose HTTP
    /// address `old` already lists keeps its in-flight counter, and every
    /// revision gets the statistics `stats` keeps for its (service,
    /// revision) pair, so counts survive a replacement. Nothing in `stats`
    /// changes when the table is refused.
    pub(crate) fn compile(
        table: &RouteTable,
        old: &Compiled,
        stats: &mut Stats,
        metrics: &Metrics,
    ) -> Result<Self, RouteError> {
        for (name, route) in &table.services {
            check_service(name, route)?;
        }
        let known: HashMap<SocketAddr, &Arc<ReplicaLoad>> = old
            .services
            .values()
            .flat_map(|s| s.revisions.iter())
            .flat_map(|r| r.replicas.iter())
            .map(|r| (r.addr.http, &r.load))
            .collect();
        let services = table
            .services
            .iter()
            .map(|(name, route)| {
                let service = build_service(name, route, &known, stats, metrics);
                (name.clone(), Arc::new(service))
            })
            .collect();
        Ok(Self { services })
    }
}

fn check_service(name: &str, route: &ServiceRoute) -> Result<(), RouteError> {
    let service = || name.to_owned();
    if name.is_empty() {
        return Err(RouteError::EmptyServiceName);
    }
    if route.timeout.is_zero() {
        return Err(RouteError::ZeroTimeout { service: service() });
    }
    let mut names = HashSet::new();
    for r in &route.revisions {
        if r.name.is_empty() {
            return Err(RouteError::EmptyRevisionName { service: service() });
        }
        if !names.insert(r.name.as_str()) {
            return Err(RouteError::DuplicateRevision {
                service: service(),
                revision: r.name.clone(),
            });
        }
        if r.percent > 100 {
            return Err(RouteError::PercentOver100 {
                service: service(),
                revision: r.name.clone(),
                percent: r.percent,
            });
        }
    }
    let routable: Vec<&RevisionRoute> =
        route.revisions.iter().filter(|r| r.is_routable()).collect();
    let sum: u64 = routable.iter().map(|r| u64::from(r.percent)).sum();
    if !routable.is_empty() && sum != 100 {
        return Err(RouteError::WeightSum {
            service: service(),
            sum,
        });
    }
    for (tag, target) in [("latest", &route.latest), ("prev", &route.prev)] {
        if let Some(t) = target
            && !names.contains(t.as_str())
        {
            return Err(RouteError::UnknownTag {
                service: service(),
                tag,
                revision: t.clone(),
            });
        }
    }
    Ok(())
}

/// Builds a service that [`check_service`] accepted.
fn build_service(
    name: &str,
    route: &ServiceRoute,
    known: &HashMap<SocketAddr, &Arc<ReplicaLoad>>,
    stats: &mut Stats,
    metrics: &Metrics,
) -> Service {
    let revisions: Vec<Revision> = route
        .revisions
        .iter()
        .map(|r| {
            let mut seen = HashSet::new();
            let replicas = r
                .replicas
                .iter()
                .filter(|a| seen.insert(a.http))
                .map(|&addr| {
                    let load = known
                        .get(&addr.http)
                        .map_or_else(Arc::default, |l| Arc::clone(l));
                    Arc::new(Replica { addr, load })
                })
                .collect();
            Revision {
                name: r.name.clone(),
                percent: r.percent,
                state: r.state.clone(),
                container_concurrency: r.container_concurrency,
                replicas,
                stats: stats.revision(name, &r.name, metrics),
            }
        })
        .collect();
    let position = |target: &Option<String>| {
        target
            .as_ref()
            .and_then(|t| revisions.iter().position(|r| &r.name == t))
    };
    let latest = position(&route.latest);
    let prev = position(&route.prev);
    Service {
        name: name.to_owned(),
        revisions,
        latest,
        prev,
        timeout: route.timeout,
        stats: stats.service(name, metrics),
    }
}

#[cfg(test)]
mod tests;
