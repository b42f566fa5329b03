//! The route table: services, their revisions with traffic weights, and
//! each revision's ready replicas. [`RouteTable`] is the plain description
//! a caller builds; the router compiles it into [`Compiled`], which carries
//! the per-replica in-flight counters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::rng::Rng;

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
/// name, and how long a request may wait for a replica's response head.
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

/// One revision: its share of the service's traffic in percent and its
/// ready replicas. A revision with no replica is not ready.
#[derive(Debug, Clone)]
pub struct RevisionRoute {
    pub name: String,
    pub percent: u32,
    pub replicas: Vec<SocketAddr>,
}

impl RevisionRoute {
    pub fn new(name: impl Into<String>, percent: u32, replicas: Vec<SocketAddr>) -> Self {
        Self {
            name: name.into(),
            percent,
            replicas,
        }
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
    #[error("service {service}: the ready revisions' traffic sums to {sum}%, not 100")]
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

/// A replica and the requests it is serving now.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) addr: SocketAddr,
    in_flight: AtomicUsize,
}

impl Replica {
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Holds one in-flight count on a replica until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Replica>);

impl InFlight {
    pub(crate) fn enter(replica: Arc<Replica>) -> Self {
        replica.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(replica)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub(crate) struct Revision {
    pub(crate) name: String,
    percent: u32,
    pub(crate) replicas: Vec<Arc<Replica>>,
}

impl Revision {
    /// Power of two choices: two distinct replicas at random (other than
    /// `exclude`), the one with fewer requests in flight; a tie goes to the
    /// first drawn.
    pub(crate) fn pick_replica(
        &self,
        rng: &Rng,
        exclude: Option<&Arc<Replica>>,
    ) -> Option<Arc<Replica>> {
        let candidates: Vec<&Arc<Replica>> = self
            .replicas
            .iter()
            .filter(|r| exclude.is_none_or(|x| !Arc::ptr_eq(r, x)))
            .collect();
        let n = candidates.len() as u64;
        let index = |i: u64| usize::try_from(i).unwrap_or(0);
        match n {
            0 => None,
            1 => Some(candidates[0].clone()),
            _ => {
                let i = rng.below(n);
                let mut j = rng.below(n - 1);
                if j >= i {
                    j += 1;
                }
                let (a, b) = (candidates[index(i)], candidates[index(j)]);
                Some(if b.in_flight() < a.in_flight() { b } else { a }.clone())
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) revisions: Vec<Revision>,
    latest: Option<usize>,
    prev: Option<usize>,
    pub(crate) timeout: Duration,
}

impl Service {
    /// Weighted choice among the ready revisions.
    pub(crate) fn pick_revision(&self, rng: &Rng) -> Option<&Revision> {
        let ready = || self.revisions.iter().filter(|r| !r.replicas.is_empty());
        let total: u64 = ready().map(|r| u64::from(r.percent)).sum();
        if total == 0 {
            return None;
        }
        let mut point = rng.below(total);
        for revision in ready() {
            let weight = u64::from(revision.percent);
            if point < weight {
                return Some(revision);
            }
            point -= weight;
        }
        None
    }

    /// A revision by name, or by the tag `latest` or `prev`.
    pub(crate) fn find_revision(&self, pin: &str) -> Option<&Revision> {
        if let Some(r) = self.revisions.iter().find(|r| r.name == pin) {
            return Some(r);
        }
        let tagged = match pin {
            "latest" => self.latest,
            "prev" => self.prev,
            _ => None,
        };
        tagged.and_then(|i| self.revisions.get(i))
    }
}

/// The table as the router uses it.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    pub(crate) services: HashMap<String, Arc<Service>>,
}

impl Compiled {
    /// Checks `table` and builds the routing form; a replica address that
    /// `old` already has keeps its in-flight counter, so requests in flight
    /// across a replacement are still counted.
    pub(crate) fn compile(table: &RouteTable, old: &Compiled) -> Result<Self, RouteError> {
        let known: HashMap<SocketAddr, &Arc<Replica>> = old
            .services
            .values()
            .flat_map(|s| s.revisions.iter())
            .flat_map(|r| r.replicas.iter())
            .map(|r| (r.addr, r))
            .collect();
        let mut services = HashMap::with_capacity(table.services.len());
        for (name, route) in &table.services {
            services.insert(
                name.clone(),
                Arc::new(compile_service(name, route, &known)?),
            );
        }
        Ok(Self { services })
    }
}

fn compile_service(
    name: &str,
    route: &ServiceRoute,
    known: &HashMap<SocketAddr, &Arc<Replica>>,
) -> Result<Service, RouteError> {
    let service = || name.to_owned();
    if name.is_empty() {
        return Err(RouteError::EmptyServiceName);
    }
    if route.timeout.is_zero() {
        return Err(RouteError::ZeroTimeout { service: service() });
    }
    let mut names = HashSet::new();
    let mut revisions = Vec::with_capacity(route.revisions.len());
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
        let mut seen = HashSet::new();
        let replicas = r
            .replicas
            .iter()
            .filter(|a| seen.insert(**a))
            .map(|&addr| match known.get(&addr) {
                Some(existing) => Arc::clone(existing),
                None => Arc::new(Replica {
                    addr,
                    in_flight: AtomicUsize::new(0),
                }),
            })
            .collect();
        revisions.push(Revision {
            name: r.name.clone(),
            percent: r.percent,
            replicas,
        });
    }
    let ready: Vec<&Revision> = revisions
        .iter()
        .filter(|r| !r.replicas.is_empty())
        .collect();
    let sum: u64 = ready.iter().map(|r| u64::from(r.percent)).sum();
    if !ready.is_empty() && sum != 100 {
        return Err(RouteError::WeightSum {
            service: service(),
            sum,
        });
    }
    let tag = |tag: &'static str, target: &Option<String>| -> Result<Option<usize>, RouteError> {
        match target {
            None => Ok(None),
            Some(t) => revisions
                .iter()
                .position(|r| &r.name == t)
                .map(Some)
                .ok_or_else(|| RouteError::UnknownTag {
                    service: service(),
                    tag,
                    revision: t.clone(),
                }),
        }
    };
    let latest = tag("latest", &route.latest)?;
    let prev = tag("prev", &route.prev)?;
    Ok(Service {
        revisions,
        latest,
        prev,
        timeout: route.timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn compile(route: ServiceRoute) -> Result<Compiled, RouteError> {
        Compiled::compile(
            &RouteTable::new().with_service("m", route),
            &Compiled::default(),
        )
    }

    #[test]
    fn weights_must_sum_to_100_over_ready_revisions() {
        let bad = ServiceRoute::new()
            .with_revision(RevisionRoute::new("a", 50, vec![addr(1)]))
            .with_revision(RevisionRoute::new("b", 40, vec![addr(2)]));
        assert!(matches!(
            compile(bad),
            Err(RouteError::WeightSum { sum: 90, .. })
        ));
        // A revision with no replica does not count.
        let ok = ServiceRoute::new()
            .with_revision(RevisionRoute::new("a", 100, vec![addr(1)]))
            .with_revision(RevisionRoute::new("b", 40, vec![]));
        assert!(compile(ok).is_ok());
        // Nothing ready: any weights.
        let none = ServiceRoute::new().with_revision(RevisionRoute::new("a", 30, vec![]));
        assert!(compile(none).is_ok());
    }

    #[test]
    fn refuses_malformed_tables() {
        let dup = ServiceRoute::new()
            .with_revision(RevisionRoute::new("a", 100, vec![addr(1)]))
            .with_revision(RevisionRoute::new("a", 0, vec![addr(2)]));
        assert!(matches!(
            compile(dup),
            Err(RouteError::DuplicateRevision { .. })
        ));
        let over = ServiceRoute::new().with_revision(RevisionRoute::new("a", 101, vec![]));
        assert!(matches!(
            compile(over),
            Err(RouteError::PercentOver100 { .. })
        ));
        let tag = ServiceRoute::new()
            .with_revision(RevisionRoute::new("a", 100, vec![addr(1)]))
            .with_tags(Some("zz"), None);
        assert!(matches!(compile(tag), Err(RouteError::UnknownTag { .. })));
        let zero = ServiceRoute::new().with_timeout(Duration::ZERO);
        assert!(matches!(compile(zero), Err(RouteError::ZeroTimeout { .. })));
        let empty = ServiceRoute::new().with_revision(RevisionRoute::new("", 100, vec![]));
        assert!(matches!(
            compile(empty),
            Err(RouteError::EmptyRevisionName { .. })
        ));
    }

    #[test]
    fn counters_survive_a_replacement() {
        let route = |replicas| {
            RouteTable::new().with_service(
                "m",
                ServiceRoute::new().with_revision(RevisionRoute::new("a", 100, replicas)),
            )
        };
        let first = Compiled::compile(&route(vec![addr(1)]), &Compiled::default());
        let Ok(first) = first else {
            panic!("table refused");
        };
        let replica = first.services["m"].revisions[0].replicas[0].clone();
        let _held = InFlight::enter(replica);
        let Ok(second) = Compiled::compile(&route(vec![addr(1), addr(2)]), &first) else {
            panic!("table refused");
        };
        let counts: Vec<usize> = second.services["m"].revisions[0]
            .replicas
            .iter()
            .map(|r| r.in_flight())
            .collect();
        assert_eq!(counts, vec![1, 0]);
    }

    #[test]
    fn p2c_prefers_the_less_loaded_and_honours_exclude() {
        let Ok(c) = compile(ServiceRoute::new().with_revision(RevisionRoute::new(
            "a",
            100,
            vec![addr(1), addr(2)],
        ))) else {
            panic!("table refused");
        };
        let revision = &c.services["m"].revisions[0];
        let _busy = InFlight::enter(revision.replicas[0].clone());
        let rng = Rng::new(3);
        for _ in 0..50 {
            let picked = revision.pick_replica(&rng, None).map(|r| r.addr);
            assert_eq!(picked, Some(addr(2)));
        }
        let other = revision.pick_replica(&rng, Some(&revision.replicas[1]));
        assert_eq!(other.map(|r| r.addr), Some(addr(1)));
    }
}
