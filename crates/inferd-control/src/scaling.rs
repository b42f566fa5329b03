//! One revision's autoscaling as both backends run it: the KPA
//! ([`Autoscaler`]) fed once per tick with the load the routers report for
//! the revision, and asked for a replica count.
//!
//! The local backend reads the load from its in-process router; the
//! Kubernetes operator sums what every router pod of the namespace
//! reports. Either way the sample is the same:
//!
//! - metric `concurrency`: requests in flight plus requests held, read at
//!   the tick. The routers count requests, not time, so a request that
//!   came and went between two ticks would be invisible; a tick in which
//!   requests arrived samples at least [`MIN_BUSY_SAMPLE`], as Knative's
//!   time-averaged concurrency would see a little load: a revision with
//!   any traffic in the stable window keeps a replica.
//! - metric `rps`: requests that arrived since the last tick, per second.
//!
//! A request held while its revision has no replica scales it from zero at
//! once (to `activation_scale`), whatever the averages say, and counts as
//! demand so the revision is not scaled straight back to zero.

use std::time::Duration;

use crate::autoscaler::{Autoscaler, AutoscalerConfig, ConfigError, Decision, Metric};

/// The least concurrency a tick with arrivals samples.
pub const MIN_BUSY_SAMPLE: f64 = 0.01;

/// What the routers report for one revision at a tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests sent to the revision's replicas and not yet finished.
    pub in_flight: usize,
    /// Requests waiting for a usable replica of the revision.
    pub held: usize,
    /// Requests routed to the revision since the routers started; only its
    /// growth between ticks is read, and a decrease (a router restarted)
    /// counts as no arrival.
    pub requests_total: u64,
}

impl Load {
    /// The sum of several routers' reports.
    pub fn sum<'a>(loads: impl IntoIterator<Item = &'a Load>) -> Load {
        loads.into_iter().fold(Load::default(), |a, b| Load {
            in_flight: a.in_flight.saturating_add(b.in_flight),
            held: a.held.saturating_add(b.held),
            requests_total: a.requests_total.saturating_add(b.requests_total),
        })
    }
}

/// The autoscaler of one revision and what it last saw and decided.
#[derive(Debug)]
pub struct RevisionScaler {
    autoscaler: Autoscaler,
    requests_seen: Option<u64>,
    decision: Option<Decision>,
}

impl RevisionScaler {
    pub fn new(config: AutoscalerConfig) -> Result<RevisionScaler, ConfigError> {
        Ok(RevisionScaler {
            autoscaler: Autoscaler::new(config)?,
            requests_seen: None,
            decision: None,
        })
    }

    pub fn config(&self) -> &AutoscalerConfig {
        self.autoscaler.config()
    }

    /// Whether the revision takes traffic (a revision with none may go to
    /// zero without the grace period's wait for the last request).
    pub fn set_reachable(&mut self, reachable: bool) {
        self.autoscaler.set_reachable(reachable);
    }

    /// The last decision, if a tick happened.
    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    /// A request is held for the revision while it has no replica: count it
    /// as demand now, before the next tick.
    pub fn activate(&mut self, now: Duration) {
        // A sample is refused only when not finite; 1.0 always is.
        let _ = self.autoscaler.record(now, 1.0);
    }

    /// One tick at `now` (time since the backend started; ticks are `tick`
    /// apart): records `load` (None: no router knows the revision) and
    /// returns the replicas the revision should run, given `ready` ready
    /// replicas now.
    pub fn tick(&mut self, now: Duration, tick: Duration, load: Option<&Load>, ready: u32) -> u32 {
        let total = load.map(|l| l.requests_total);
        let arrived = match (total, self.requests_seen) {
            (Some(total), Some(seen)) => total.saturating_sub(seen),
            // The first report: whatever came before was before this
            // scaler, but something did arrive.
            (Some(total), None) => u64::from(total > 0),
            (None, _) => 0,
        };
        if total.is_some() {
            self.requests_seen = total;
        }
        let sample = match self.config().metric {
            Metric::Concurrency => {
                let now_in = load.map_or(0.0, |l| (l.in_flight + l.held) as f64);
                if arrived > 0 {
                    now_in.max(MIN_BUSY_SAMPLE)
                } else {
                    now_in
                }
            }
            Metric::Rps => arrived as f64 / tick.as_secs_f64().max(0.001),
        };
        // Only a non-finite sample is refused; these never are.
        let _ = self.autoscaler.record(now, sample);
        let decision = self.autoscaler.decide(now, ready);
        let held = load.is_some_and(|l| l.held > 0);
        let desired = if held && decision.desired_replicas == 0 {
            self.config().activation_scale.max(1)
        } else {
            decision.desired_replicas
        };
        self.decision = Some(decision);
        desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(2);

    fn scaler(metric: Metric) -> RevisionScaler {
        RevisionScaler::new(AutoscalerConfig {
            metric,
            ..AutoscalerConfig::default()
        })
        .expect("default config")
    }

    fn load(in_flight: usize, held: usize, requests_total: u64) -> Load {
        Load {
            in_flight,
            held,
            requests_total,
        }
    }

    #[test]
    fn concurrency_scales_to_the_load_over_the_target() {
        let mut s = scaler(Metric::Concurrency);
        let mut desired = 0;
        let mut total = 0;
        for i in 0..30u32 {
            total += 100;
            desired = s.tick(TICK * i, TICK, Some(&load(250, 0, total)), 1);
        }
        // 250 in flight over the default target of 100 per replica at 70%
        // utilisation: ceil(250 / 70) = 4.
        assert_eq!(desired, 4);
        assert!(s.decision().is_some());
    }

    #[test]
    fn a_held_request_scales_from_zero_at_once() {
        let mut s = scaler(Metric::Concurrency);
        let desired = s.tick(Duration::ZERO, TICK, Some(&load(0, 1, 1)), 0);
        assert_eq!(desired, 1);
    }

    #[test]
    fn rps_counts_arrivals_between_ticks_and_ignores_a_router_restart() {
        let mut s = scaler(Metric::Rps);
        s.tick(Duration::ZERO, TICK, Some(&load(0, 0, 1_000)), 1);
        s.tick(TICK, TICK, Some(&load(0, 0, 1_400)), 1);
        let d = s.decision().expect("decided");
        // 1 request (the first report) then 400 in 2 s: samples of 0.5 and
        // 200 rps, averaged over the three one-second buckets they span.
        assert!((d.stable_average - 200.5 / 3.0).abs() < 0.01, "{d:?}");
        // A router restart lowers the total: no arrivals, no panic.
        s.tick(TICK * 2, TICK, Some(&load(0, 0, 10)), 1);
        s.tick(TICK * 3, TICK, Some(&load(0, 0, 30)), 1);
        assert!(s.decision().is_some());
    }

    #[test]
    fn loads_of_several_routers_add_up() {
        let sum = Load::sum(&[load(1, 2, 3), load(10, 20, 30), load(0, 0, u64::MAX)]);
        assert_eq!(sum.in_flight, 11);
        assert_eq!(sum.held, 22);
        assert_eq!(sum.requests_total, u64::MAX);
    }
}
