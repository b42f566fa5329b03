//! Choosing a revision and a replica slot for a request, holding the
//! request while no replica is usable (the revision is activating from zero,
//! or every replica is at its concurrency limit).
//!
//! A held request waits on its revision's [`Notify`](tokio::sync::Notify):
//! a finished request wakes one held request, a new route table wakes them
//! all. It registers for the wake-up before it looks for a slot, so a wake-up
//! between the look and the wait is not lost.

use std::sync::Arc;

use tokio::time::Instant;

use crate::error::Failure;
use crate::proxy::Router;
use crate::stats::{Bound, Full, Held, InFlight, RevisionStats};
use crate::table::{NoSlot, RevisionState, Service, Wire};

/// What a request learned about its route, for its answer and metrics.
#[derive(Debug)]
pub(crate) struct Trace {
    pub(crate) start: Instant,
    /// The service, once the table knew it.
    pub(crate) service: Option<Arc<Service>>,
    /// The revision the request was routed (or held) to.
    pub(crate) revision: Option<(String, Arc<RevisionStats>)>,
    /// Arrival plus the service's timeout.
    pub(crate) deadline: Option<Instant>,
}

impl Trace {
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            service: None,
            revision: None,
            deadline: None,
        }
    }

    pub(crate) fn service_label(&self) -> &str {
        self.service.as_ref().map_or("", |s| s.name.as_str())
    }

    pub(crate) fn revision_name(&self) -> Option<&str> {
        self.revision.as_ref().map(|(name, _)| name.as_str())
    }

    fn route_to(&mut self, name: &str, stats: &Arc<RevisionStats>) {
        match &self.revision {
            Some((_, current)) if Arc::ptr_eq(current, stats) => {}
            Some(_) => self.revision = Some((name.to_owned(), Arc::clone(stats))),
            None => {
                // Counted once, where the request first went: the
                // autoscaler's request rate.
                stats.count_request();
                self.revision = Some((name.to_owned(), Arc::clone(stats)));
            }
        }
    }
}

/// A request with a slot on a replica.
#[derive(Debug)]
pub(crate) struct Dispatched {
    pub(crate) service: Arc<Service>,
    pub(crate) revision: usize,
    pub(crate) slot: InFlight,
}

impl Router {
    /// Finds a revision of `name` (the one `pin` names, or by weight) and
    /// a slot on one of its replicas, holding the request (whose body is
    /// `body_bytes` long) until one is usable or the service's timeout
    /// passes.
    pub(crate) async fn dispatch(
        &self,
        name: &str,
        pin: Option<&str>,
        wire: Wire,
        body_bytes: usize,
        trace: &mut Trace,
    ) -> Result<Dispatched, Failure> {
        let mut held: Option<Held> = None;
        let mut assigned: Option<String> = None;
        loop {
            let waiting = held.as_ref().map(|h| Arc::clone(h.revision()));
            let notified = waiting.as_ref().map(|s| s.notify.notified());
            tokio::pin!(notified);
            if let Some(notified) = notified.as_mut().as_pin_mut() {
                notified.enable();
            }
            let routes = self.routes();
            let Some(service) = routes.services.get(name) else {
                return Err(Failure::UnknownService(name.to_owned()));
            };
            trace.service = Some(Arc::clone(service));
            let deadline = *trace
                .deadline
                .get_or_insert_with(|| trace.start + service.timeout);
            let index = self.choose(service, pin, assigned.as_deref())?;
            let revision = &service.revisions[index];
            if let RevisionState::Unavailable(reason) = &revision.state {
                return Err(Failure::Unavailable {
                    service: name.to_owned(),
                    revision: revision.name.clone(),
                    reason: reason.clone(),
                });
            }
            match revision.acquire(&self.rng, wire, None) {
                Ok(slot) => {
                    trace.route_to(&revision.name, &revision.stats);
                    return Ok(Dispatched {
                        service: Arc::clone(service),
                        revision: index,
                        slot,
                    });
                }
                Err(NoSlot::NoReplica) if revision.state == RevisionState::Serving => {
                    return Err(Failure::NoRevisionReplica {
                        service: name.to_owned(),
                        revision: revision.name.clone(),
                    });
                }
                Err(_) => trace.route_to(&revision.name, &revision.stats),
            }
            assigned = Some(revision.name.clone());
            let first = match &mut held {
                Some(h) if Arc::ptr_eq(h.revision(), &revision.stats) => None,
                Some(h) => Some(h.move_to(&revision.stats)),
                None => {
                    let bound = Bound {
                        requests: self.max_held,
                        bytes: self.max_held_bytes,
                    };
                    let (h, first) =
                        Held::enter(&service.stats, &revision.stats, bound, body_bytes).map_err(
                            |full| match full {
                                Full::Requests => Failure::HeldQueueFull {
                                    service: name.to_owned(),
                                    max: self.max_held,
                                },
                                Full::Bytes => Failure::HeldBytesFull {
                                    service: name.to_owned(),
                                    max: self.max_held_bytes,
                                },
                            },
                        )?;
                    held = Some(h);
                    Some(first)
                }
            };
            if let Some(first) = first {
                tracing::debug!(
                    service = %name,
                    revision = %revision.name,
                    replicas = revision.replicas.len(),
                    "holding a request until a replica is usable"
                );
                if first && revision.replicas.is_empty() {
                    self.activate(name, &revision.name);
                }
                // Look again now that a wake-up is registered.
                continue;
            }
            let timeout = service.timeout;
            drop(routes);
            if let Some(notified) = notified.as_pin_mut() {
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep_until(deadline) => {
                        return Err(Failure::HoldTimeout {
                            service: name.to_owned(),
                            timeout,
                        });
                    }
                }
            }
        }
    }

    /// The revision (index) for a request: pinned, the one it is already
    /// held on while that stays routable, or a weighted choice.
    fn choose(
        &self,
        service: &Service,
        pin: Option<&str>,
        assigned: Option<&str>,
    ) -> Result<usize, Failure> {
        if let Some(pin) = pin {
            return service
                .find_revision(pin)
                .ok_or_else(|| Failure::UnknownRevision {
                    service: service.name.clone(),
                    pin: pin.to_owned(),
                });
        }
        if let Some(assigned) = assigned
            && let Some(i) = service
                .revisions
                .iter()
                .position(|r| r.name == assigned && r.is_routable())
        {
            return Ok(i);
        }
        service
            .pick_revision(&self.rng)
            .ok_or_else(|| match service.unavailable() {
                Some((revision, reason)) => Failure::Unavailable {
                    service: service.name.clone(),
                    revision: revision.to_owned(),
                    reason: reason.to_owned(),
                },
                None => Failure::NoReplica {
                    service: service.name.clone(),
                },
            })
    }
}
