//! Counts that outlive any one route table, kept per (service, revision)
//! and per service: requests in flight and held, requests routed, and the
//! wake-ups of held requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::table::Replica;

/// One revision's counts, and the handles of its metrics resolved once so
/// that the hot path touches no label map.
#[derive(Debug)]
pub(crate) struct RevisionStats {
    /// Requests sent to the revision's replicas and not finished; also the
    /// `inferd_router_in_flight` gauge.
    in_flight: Gauge,
    held: AtomicUsize,
    requests: AtomicU64,
    /// Wakes requests held on this revision: one per finished request, all
    /// of them when the table changes.
    pub(crate) notify: Notify,
    pub(crate) retries: Counter,
    pub(crate) ok: Counter,
    pub(crate) duration: Histogram,
}

impl RevisionStats {
    pub(crate) fn in_flight(&self) -> usize {
        usize::try_from(self.in_flight.get()).unwrap_or(0)
    }

    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// One service's counts.
#[derive(Debug)]
pub(crate) struct ServiceStats {
    /// Requests waiting for a replica; also the
    /// `inferd_router_held_requests` gauge.
    held: Gauge,
    /// The bytes of their bodies.
    held_bytes: AtomicUsize,
}

impl ServiceStats {
    pub(crate) fn held(&self) -> usize {
        usize::try_from(self.held.get()).unwrap_or(0)
    }

    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::SeqCst)
    }
}

/// The statistics of every (service, revision) pair any table has named.
/// Revisions are immutable and few, so entries are never dropped: a
/// revision's totals stay monotonic for the router's lifetime.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    revisions: HashMap<(String, String), Arc<RevisionStats>>,
    services: HashMap<String, Arc<ServiceStats>>,
}

impl Stats {
    pub(crate) fn revision(
        &mut self,
        service: &str,
        revision: &str,
        metrics: &Metrics,
    ) -> Arc<RevisionStats> {
        let key = (service.to_owned(), revision.to_owned());
        let entry = self.revisions.entry(key).or_insert_with(|| {
            let handles = metrics.revision(service, revision);
            Arc::new(RevisionStats {
                in_flight: handles.in_flight,
                held: AtomicUsize::new(0),
                requests: AtomicU64::new(0),
                notify: Notify::new(),
                retries: handles.retries,
                ok: handles.ok,
                duration: handles.duration,
            })
        });
        Arc::clone(entry)
    }

    pub(crate) fn service(&mut self, service: &str, metrics: &Metrics) -> Arc<ServiceStats> {
        let entry = self.services.entry(service.to_owned()).or_insert_with(|| {
            Arc::new(ServiceStats {
                held: metrics.held(service),
                held_bytes: AtomicUsize::new(0),
            })
        });
        Arc::clone(entry)
    }

    pub(crate) fn find(&self, service: &str, revision: &str) -> Option<&Arc<RevisionStats>> {
        self.revisions
            .get(&(service.to_owned(), revision.to_owned()))
    }

    /// Wakes every held request so that it looks at a new table.
    pub(crate) fn wake_all(&self) {
        for stats in self.revisions.values() {
            if stats.held() > 0 {
                stats.notify.notify_waiters();
            }
        }
    }
}

/// One request on a replica: holds a slot of the replica and a count on
/// its revision until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    replica: Arc<Replica>,
    revision: Arc<RevisionStats>,
}

impl InFlight {
    /// Wraps a slot that [`Replica::try_enter`] already took.
    pub(crate) fn new(replica: Arc<Replica>, revision: Arc<RevisionStats>) -> Self {
        revision.in_flight.inc();
        Self { replica, revision }
    }

    pub(crate) fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.replica.leave();
        self.revision.in_flight.dec();
        // The slot just freed may be the one a held request waits for. The
        // held count is read after the slot is given back (both SeqCst), and
        // a held request counts itself before it looks for a slot, so one of
        // the two sees the other.
        if self.revision.held() > 0 {
            self.revision.notify.notify_one();
        }
    }
}

/// How much one service may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub(crate) requests: usize,
    /// The bytes of the held requests' bodies.
    pub(crate) bytes: usize,
}

/// Which bound a request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    Requests,
    Bytes,
}

/// One request waiting for a replica; counted (with its body's bytes) on
/// its service, against the service's bounds, and on the revision it
/// waits on, until dropped.
#[derive(Debug)]
pub(crate) struct Held {
    service: Arc<ServiceStats>,
    revision: Arc<RevisionStats>,
    bytes: usize,
}

impl Held {
    /// Counts a new held request whose body is `bytes` long, or says which
    /// of `bound` it would pass.
    pub(crate) fn enter(
        service: &Arc<ServiceStats>,
        revision: &Arc<RevisionStats>,
        bound: Bound,
        bytes: usize,
    ) -> Result<(Self, bool), Full> {
        let before = usize::try_from(service.held.inc()).unwrap_or(0);
        if before >= bound.requests {
            service.held.dec();
            return Err(Full::Requests);
        }
        let before = service.held_bytes.fetch_add(bytes, Ordering::SeqCst);
        if before.saturating_add(bytes) > bound.bytes {
            service.held_bytes.fetch_sub(bytes, Ordering::SeqCst);
            service.held.dec();
            return Err(Full::Bytes);
        }
        let first = revision.held.fetch_add(1, Ordering::SeqCst) == 0;
        let held = Self {
            service: Arc::clone(service),
            revision: Arc::clone(revision),
            bytes,
        };
        Ok((held, first))
    }

    pub(crate) fn revision(&self) -> &Arc<RevisionStats> {
        &self.revision
    }

    /// Moves the count to another revision; true when no request was held
    /// there before.
    pub(crate) fn move_to(&mut self, revision: &Arc<RevisionStats>) -> bool {
        let first = revision.held.fetch_add(1, Ordering::SeqCst) == 0;
        self.revision.held.fetch_sub(1, Ordering::SeqCst);
        self.revision = Arc::clone(revision);
        first
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.revision.held.fetch_sub(1, Ordering::SeqCst);
        self.service
            .held_bytes
            .fetch_sub(self.bytes, Ordering::SeqCst);
        self.service.held.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_requests_are_bounded_per_service_and_move_between_revisions() {
        let metrics = Metrics::new();
        let mut stats = Stats::default();
        let service = stats.service("m", &metrics);
        let (a, b) = (
            stats.revision("m", "a", &metrics),
            stats.revision("m", "b", &metrics),
        );
        let bound = Bound {
            requests: 2,
            bytes: 100,
        };
        let Ok((mut first, was_first)) = Held::enter(&service, &a, bound, 60) else {
            panic!("refused under the bound");
        };
        assert!(was_first);
        // 60 + 50 bytes would pass the bound of 100; nothing is counted.
        assert_eq!(
            Held::enter(&service, &a, bound, 50).err(),
            Some(Full::Bytes)
        );
        assert_eq!((service.held(), service.held_bytes()), (1, 60));
        let Ok((second, was_first)) = Held::enter(&service, &a, bound, 40) else {
            panic!("refused under the bound");
        };
        assert!(!was_first);
        assert_eq!(
            Held::enter(&service, &b, bound, 0).err(),
            Some(Full::Requests)
        );
        assert_eq!((service.held(), a.held(), b.held()), (2, 2, 0));
        assert!(first.move_to(&b));
        assert_eq!((service.held(), a.held(), b.held()), (2, 1, 1));
        drop((first, second));
        assert_eq!((service.held(), a.held(), b.held()), (0, 0, 0));
        assert_eq!(service.held_bytes(), 0);
        // The same pair gets the same counts back.
        assert!(Arc::ptr_eq(&a, &stats.revision("m", "a", &metrics)));
        assert!(stats.find("m", "c").is_none());
    }
}
