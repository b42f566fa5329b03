//! Leader election through a `coordination.k8s.io/v1` Lease, so that two
//! or more operator replicas can run and only one of them reconciles.
//!
//! Two controllers writing the same objects would fight over them (each
//! server-side apply undoing the other's between passes, revisions numbered
//! twice), so the operator's replicas elect one leader by holding a Lease,
//! with the semantics of client-go's `leaderelection`:
//!
//! - The holder writes its identity and renews `renewTime` every
//!   [`LeaseConfig::retry_period`]. Every write carries the resourceVersion
//!   it read, so of two replicas racing for the Lease one gets a 409
//!   Conflict and stays a follower.
//! - A follower takes the Lease over once it has seen the same record,
//!   unchanged, for `leaseDurationSeconds`. It measures that from the
//!   *local* time at which it first saw the record, never from the
//!   `renewTime` written by another node, so clock skew between nodes does
//!   not matter; only the rate at which clocks advance does.
//! - A leader that cannot renew for [`LeaseConfig::renew_deadline`] (shorter
//!   than the lease duration, so it stops before anyone may take over) stops
//!   its work and [`run_elected`] returns [`Error::LeadershipLost`]: the
//!   process exits and Kubernetes restarts it as a follower.
//! - A leader that finishes normally (SIGTERM) releases the Lease, so a
//!   standby takes over at once instead of after the lease duration.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Error, Result};

/// The Lease's name unless configured otherwise.
pub const DEFAULT_LEASE_NAME: &str = "inferd-operator";
/// How long a follower waits, after the record last changed, before it
/// takes the Lease over (client-go's default).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a leader keeps trying to renew before it gives up (client-go's
/// default).
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and a follower tries to acquire (client-go's
/// default).
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Where the Lease is and how the election is timed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's namespace: the operator's own, so that its replicas meet.
    pub namespace: String,
    /// The Lease's name; every replica of one operator must use the same.
    pub name: String,
    /// This replica's name in the Lease; unique among the replicas (the pod
    /// name is), and the same after a container restart, so that a
    /// restarted leader resumes its own Lease at once.
    pub identity: String,
    /// How long a follower waits, after it last saw the record change,
    /// before it takes the Lease over. Written to the Lease in whole
    /// seconds, rounded up.
    pub lease_duration: Duration,
    /// How long the leader keeps failing to renew before it stops; shorter
    /// than `lease_duration`, so that it has stopped before a follower may
    /// take over.
    pub renew_deadline: Duration,
    /// The time between two renewals, and between two attempts to acquire
    /// (a follower's attempts are jittered so that replicas do not keep
    /// colliding); shorter than `renew_deadline`, so that a renewal is
    /// retried at least once before the deadline.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The defaults (client-go's timings) for a Lease in `namespace`, the
    /// identity taken from the environment ([`default_identity`]).
    pub fn new(namespace: impl Into<String>) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.into(),
            name: DEFAULT_LEASE_NAME.to_owned(),
            identity: default_identity(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Refuses timings under which two replicas could lead at once, and
    /// names that would make replicas miss each other.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::LeaseConfig(message));
        if self.namespace.is_empty() {
            return invalid("the lease namespace is empty".to_owned());
        }
        if self.name.is_empty() {
            return invalid("the lease name is empty".to_owned());
        }
        if self.identity.is_empty() {
            return invalid(
                "the identity is empty (set POD_NAME to the pod's name, e.g. from the downward API)"
                    .to_owned(),
            );
        }
        if self.lease_duration < Duration::from_secs(1) {
            return invalid(format!(
                "the lease duration ({:?}) is under one second, the Lease's unit",
                self.lease_duration
            ));
        }
        if self.lease_duration > Duration::from_secs(i32::MAX as u64) {
            return invalid(format!(
                "the lease duration ({:?}) does not fit in leaseDurationSeconds",
                self.lease_duration
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return invalid(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?}), \
                 or a leader that cannot renew would still be working when another replica \
                 takes over",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() {
            return invalid("the retry period is zero".to_owned());
        }
        if self.retry_period >= self.renew_deadline {
            return invalid(format!(
                "the retry period ({:?}) must be shorter than the renew deadline ({:?}), \
                 or a failed renewal would not be retried before the deadline",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }

    /// `lease_duration` in whole seconds, rounded up (the Lease's unit).
    fn lease_duration_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let seconds = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(seconds).unwrap_or(i32::MAX)
    }
}

/// This replica's identity: `POD_NAME` (set from the downward API), else the
/// host name, which in a pod is the pod's name; empty when neither is known,
/// which [`LeaseConfig::validate`] refuses.
pub fn default_identity() -> String {
    let pod_name = std::env::var("POD_NAME").ok();
    let hostname = std::env::var("HOSTNAME").ok().or_else(|| {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
    });
    pick_identity(pod_name.as_deref(), hostname.as_deref())
}

fn pick_identity(pod_name: Option<&str>, hostname: Option<&str>) -> String {
    [pod_name, hostname]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|name| !name.is_empty())
        .unwrap_or_default()
        .to_owned()
}

fn micro_time(time: SystemTime) -> Option<MicroTime> {
    Timestamp::try_from(time).ok().map(MicroTime)
}

/// Whether the API server refused a write because the object changed (or,
/// for a create, already exists): another replica won the race.
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 409 || status.is_conflict() || status.is_already_exists())
}

/// What the lock last saw of the Lease.
#[derive(Default)]
struct Observed {
    /// The Lease as last read or written; its resourceVersion guards the
    /// next write.
    lease: Option<Lease>,
    /// The record (spec) as last seen, and the local time at which it was
    /// first seen in that form: a follower's expiry clock.
    record: Option<(LeaseSpec, SystemTime)>,
}

/// One replica's view of the Lease, and the reads and writes that acquire,
/// renew and release it.
pub struct LeaseLock {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Mutex<Observed>,
}

impl LeaseLock {
    /// A lock on the Lease `config` names; refuses an invalid `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Result<LeaseLock> {
        config.validate()?;
        Ok(LeaseLock {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(Observed::default()),
        })
    }

    /// The settings the lock was made with (validated).
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn observed(&self) -> MutexGuard<'_, Observed> {
        // Each update replaces whole values: a panic elsewhere cannot leave
        // them half written.
        self.observed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The holder in the record last seen; `None` when nobody holds it (or
    /// it has not been read yet).
    pub fn holder(&self) -> Option<String> {
        self.observed()
            .record
            .as_ref()
            .and_then(|(spec, _)| spec.holder_identity.clone())
            .filter(|holder| !holder.is_empty())
    }

    /// Whether the record last seen names this replica.
    pub fn is_leader(&self) -> bool {
        self.holder().as_deref() == Some(self.config.identity.as_str())
    }

    /// Remembers `lease` as read or written at `now`; returns the local
    /// time at which its record was first seen in this form.
    fn observe(&self, lease: Lease, now: SystemTime) -> SystemTime {
        let spec = lease.spec.clone().unwrap_or_default();
        let mut observed = self.observed();
        let since = match &observed.record {
            Some((seen, since)) if *seen == spec => *since,
            _ => now,
        };
        observed.record = Some((spec, since));
        observed.lease = Some(lease);
        since
    }

    /// One attempt to become or stay the leader at `now`: reads the Lease
    /// and creates, renews or takes it over when allowed. `Ok(false)` when
    /// another replica holds it (or won a race for it); `Err` when the API
    /// server refused otherwise.
    pub async fn try_acquire_or_renew(&self, now: SystemTime) -> Result<bool> {
        let identity = self.config.identity.as_str();
        let Some(current) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(Error::Kube)?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity.to_owned()),
                    lease_duration_seconds: Some(self.config.lease_duration_seconds()),
                    acquire_time: micro_time(now),
                    renew_time: micro_time(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return self.write(self.api.create(&PostParams::default(), &lease).await, now);
        };

        let spec = current.spec.clone().unwrap_or_default();
        let since = self.observe(current.clone(), now);
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let mine = holder == identity;
        if !holder.is_empty() && !mine {
            let duration = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            );
            // A time past SystemTime's range is never reached: not expired.
            let fresh = since
                .checked_add(duration)
                .is_none_or(|expiry| expiry > now);
            if fresh {
                return Ok(false);
            }
            tracing::info!(
                lease = %self.config.name,
                previous = holder,
                "the lease expired; taking it over"
            );
        }
        let spec = if mine {
            LeaseSpec {
                lease_duration_seconds: Some(self.config.lease_duration_seconds()),
                renew_time: micro_time(now),
                acquire_time: spec.acquire_time.or_else(|| micro_time(now)),
                lease_transitions: spec.lease_transitions.or(Some(0)),
                ..spec
            }
        } else {
            LeaseSpec {
                holder_identity: Some(identity.to_owned()),
                lease_duration_seconds: Some(self.config.lease_duration_seconds()),
                acquire_time: micro_time(now),
                renew_time: micro_time(now),
                lease_transitions: Some(spec.lease_transitions.unwrap_or(0).saturating_add(1)),
                ..spec
            }
        };
        let lease = Lease {
            metadata: current.metadata,
            spec: Some(spec),
        };
        let written = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await;
        self.write(written, now)
    }

    /// The outcome of a create or replace.
    fn write(&self, written: kube::Result<Lease>, now: SystemTime) -> Result<bool> {
        match written {
            Ok(lease) => {
                self.observe(lease, now);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => {
                tracing::debug!(lease = %self.config.name, "another replica wrote the lease first");
                Ok(false)
            }
            Err(e) => Err(Error::Kube(e)),
        }
    }

    /// Gives the Lease up, if the record last seen names this replica:
    /// clears the holder and shortens the duration to one second, with the
    /// resourceVersion last seen, so that a follower takes over at its next
    /// attempt. When that write meets a newer Lease (a renewal that was
    /// dropped while in flight may still have reached the server), the Lease
    /// is read again and released if it still names this replica.
    /// `Ok(false)` when there was nothing to release or another replica
    /// holds it now.
    pub async fn release(&self, now: SystemTime) -> Result<bool> {
        let Some(current) = self.observed().lease.clone() else {
            return Ok(false);
        };
        if !self.is_leader() {
            return Ok(false);
        }
        if self.write_release(current, now).await? {
            return Ok(true);
        }
        let Some(fresh) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(Error::Kube)?
        else {
            return Ok(false);
        };
        self.observe(fresh.clone(), now);
        if !self.is_leader() {
            return Ok(false);
        }
        self.write_release(fresh, now).await
    }

    /// Replaces `current` (which names this replica) with a released record.
    async fn write_release(&self, current: Lease, now: SystemTime) -> Result<bool> {
        let spec = current.spec.clone().unwrap_or_default();
        let lease = Lease {
            metadata: current.metadata,
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: micro_time(now),
                renew_time: micro_time(now),
                ..spec
            }),
        };
        let written = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await;
        self.write(written, now)
    }
}

/// Runs work only while this replica holds the Lease.
pub struct Elector {
    lock: LeaseLock,
    clock: fn() -> SystemTime,
    leader: watch::Sender<bool>,
}

impl Elector {
    /// An elector for the Lease `config` names; refuses an invalid `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Result<Elector> {
        Elector::with_clock(client, config, SystemTime::now)
    }

    /// An elector whose records and expiry take the time from `clock`. The
    /// waits between attempts and the renew deadline use tokio's clock.
    pub fn with_clock(
        client: Client,
        config: LeaseConfig,
        clock: fn() -> SystemTime,
    ) -> Result<Elector> {
        Ok(Elector {
            lock: LeaseLock::new(client, config)?,
            clock,
            leader: watch::Sender::new(false),
        })
    }

    /// Whether this replica leads, now and at each change: `true` while the
    /// work runs.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// The lock, to ask who holds the Lease (for logs and status).
    pub fn lock(&self) -> &LeaseLock {
        &self.lock
    }

    /// Waits until this replica holds the Lease, then runs `work` while
    /// renewing it; see [`run_elected`].
    pub async fn run<Fut: Future>(&self, work: Fut) -> Result<Fut::Output> {
        let config = self.lock.config();
        let acquired = self.acquire().await;
        self.leader.send_replace(true);
        tracing::info!(lease = %config.name, identity = %config.identity, "became the leader");

        let outcome = {
            let work = std::pin::pin!(work);
            let renewing = std::pin::pin!(self.keep_renewing(acquired));
            tokio::select! {
                output = work => Ok(output),
                lost = renewing => Err(lost),
            }
            // `work` is dropped here: it stops before anything else is done.
        };
        self.leader.send_replace(false);
        match outcome {
            Ok(output) => {
                match self.lock.release((self.clock)()).await {
                    Ok(true) => tracing::info!(lease = %config.name, "released the lease"),
                    Ok(false) => {
                        tracing::warn!(lease = %config.name, "the lease changed; not released")
                    }
                    Err(e) => {
                        tracing::warn!(lease = %config.name, error = %e, "cannot release the lease")
                    }
                }
                Ok(output)
            }
            Err(lost) => {
                tracing::error!(lease = %config.name, "lost the leadership; work stopped");
                Err(lost)
            }
        }
    }

    /// Tries every retry period (jittered) until this replica holds the
    /// Lease; returns when the successful attempt started.
    async fn acquire(&self) -> Instant {
        let config = self.lock.config();
        let mut announced: Option<String> = None;
        loop {
            let started = Instant::now();
            let attempt = self.lock.try_acquire_or_renew((self.clock)());
            match tokio::time::timeout(config.renew_deadline, attempt).await {
                Ok(Ok(true)) => return started,
                Ok(Ok(false)) => {
                    let holder = self.lock.holder();
                    if holder.is_some() && holder != announced {
                        tracing::info!(
                            lease = %config.name,
                            holder = holder.as_deref().unwrap_or_default(),
                            "waiting for leadership, held by {}",
                            holder.as_deref().unwrap_or_default()
                        );
                        announced = holder;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %config.name, error = %e, "cannot acquire the lease")
                }
                Err(_) => tracing::warn!(lease = %config.name, "acquiring the lease timed out"),
            }
            tokio::time::sleep(jittered(config.retry_period)).await;
        }
    }

    /// Renews every retry period; returns [`Error::LeadershipLost`] once no
    /// renewal has succeeded for the renew deadline, or at once when the
    /// Lease names another holder. `renewed` is when the last successful
    /// attempt started (conservative: the API server recorded it later).
    async fn keep_renewing(&self, mut renewed: Instant) -> Error {
        let config = self.lock.config();
        loop {
            tokio::time::sleep(config.retry_period).await;
            let deadline = renewed + config.renew_deadline;
            let started = Instant::now();
            if started >= deadline {
                return Error::LeadershipLost;
            }
            let attempt = self.lock.try_acquire_or_renew((self.clock)());
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(true)) => renewed = started,
                Ok(Ok(false)) => {
                    if let Some(holder) = self.lock.holder()
                        && holder != config.identity
                    {
                        tracing::error!(lease = %config.name, holder, "another replica holds the lease");
                        return Error::LeadershipLost;
                    }
                    tracing::warn!(lease = %config.name, "renewing the lease lost a race");
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %config.name, error = %e, "cannot renew the lease")
                }
                Err(_) => tracing::warn!(lease = %config.name, "renewing the lease timed out"),
            }
            if Instant::now() >= deadline {
                return Error::LeadershipLost;
            }
        }
    }
}

/// `period` plus up to a fifth of it, at random, so that followers started
/// together do not keep colliding.
fn jittered(period: Duration) -> Duration {
    // RandomState is seeded randomly per instance: enough for a jitter.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let fraction = (random % 1000) as f64 / 5000.0;
    period + period.mul_f64(fraction)
}

/// Waits until this replica holds the Lease `config` names (trying every
/// retry period, logging the holder it waits for), then runs `work` (the
/// controller) while renewing the Lease every retry period.
///
/// - When `work` finishes (on SIGTERM), the Lease is released so that a
///   standby takes over at once; a failed release is only logged, the
///   standby then takes over when the lease expires. Returns `work`'s
///   output.
/// - When no renewal succeeds for the renew deadline, or the Lease names
///   another holder, `work` is dropped (stopped at its next await) and
///   [`Error::LeadershipLost`] is returned. The caller should exit
///   non-zero and let Kubernetes restart the pod: a controller that may
///   have stopped being the leader must not keep writing, and a fresh
///   process starts again as a follower, with no state from its time as
///   leader.
///
/// While waiting `work` is not polled, so it does not see a shutdown
/// signal; a standby stops when the pod's grace period ends, or the caller
/// races this with its own signal handler.
pub async fn run_elected<Fut: Future>(
    client: Client,
    config: LeaseConfig,
    work: Fut,
) -> Result<Fut::Output> {
    Elector::new(client, config)?.run(work).await
}

#[cfg(test)]
mod tests;
