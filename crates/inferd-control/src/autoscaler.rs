//! The autoscaler: Knative's KPA algorithm on explicit time.
//!
//! One [`Autoscaler`] scales one revision. The router reports what it observes
//! each second with [`Autoscaler::record`] (in-flight requests, or requests per
//! second, summed over every replica of the revision and the buffer in front
//! of them); the control loop calls [`Autoscaler::decide`] on each tick (Knative
//! ticks every 2 s) with the number of ready replicas and applies the returned
//! [`Decision`]. Nothing here reads a clock, sleeps or spawns: time is a
//! [`Duration`] since any origin the caller fixes (its start, say), so the
//! same inputs give the same decisions, and tests run on simulated time.
//!
//! Each piece follows one part of Knative Serving, named in its documentation:
//!
//! - the metric windows: `pkg/autoscaler/aggregation/bucketing.go`
//!   (`TimedFloat64Buckets`, 1 s buckets, the linear window average);
//! - the decider: `pkg/autoscaler/scaling/autoscaler.go` (`Scale`): target,
//!   rate limits, panic mode, activation scale, scale-down delay, excess burst
//!   capacity;
//! - the scaler: `pkg/reconciler/autoscaling/kpa/scaler.go` (`scale`,
//!   `handleScaleToZero`): min/max/initial scale and the scale-to-zero rules;
//! - the PodAutoscaler's `Active` condition and the ServerlessService mode:
//!   `pkg/reconciler/autoscaling/kpa/kpa.go` (`computeActiveCondition`, the
//!   Serve/Proxy choice).
//!
//! What is not modelled: the activation timeout (a revision stuck activating
//! past its progress deadline goes to 0 in Knative; here it keeps waiting),
//! and the activator probe before scaling to zero (the inferd router is always
//! in front of the replicas, so the probe is taken as answered).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Knative's smallest target per replica (`autoscaling.TargetMin`).
const TARGET_MIN: f64 = 0.01;
/// Knative's shortest and longest stable window (`WindowMin`, `WindowMax`).
const WINDOW_MIN: Duration = Duration::from_secs(6);
const WINDOW_MAX: Duration = Duration::from_secs(3600);
/// Knative's metric bucket width (`config.BucketSize`).
const BUCKET: Duration = Duration::from_secs(1);
/// Window averages are rounded to this many decimal digits, as Knative's
/// `roundToNDigits(6, ...)` does, so that float sums such as 70 × 3 / 3 do
/// not make `ceil` ask for one replica more.
const PRECISION: f64 = 1e6;

/// The metric the autoscaler targets (annotation `autoscaling.knative.dev/metric`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Requests in flight per replica (Knative's default).
    #[default]
    Concurrency,
    /// Requests per second per replica.
    Rps,
}

/// How one revision is autoscaled.
///
/// The defaults are Knative's (`config-autoscaler` and
/// `pkg/autoscaler/config/config.go`). Field names in YAML/JSON are the
/// camelCase forms of Knative's per-revision annotations
/// (`autoscaling.knative.dev/<name>`) where one exists, and of the
/// `config-autoscaler` keys otherwise:
///
/// | field | Knative name |
/// |---|---|
/// | `metric` | annotation `metric` |
/// | `target` | annotation `target` |
/// | `containerConcurrency` | revision `containerConcurrency` |
/// | `containerConcurrencyTargetDefault` | `container-concurrency-target-default` |
/// | `requestsPerSecondTargetDefault` | `requests-per-second-target-default` |
/// | `targetUtilizationPercentage` | annotation `target-utilization-percentage` (configmap `container-concurrency-target-percentage`) |
/// | `targetBurstCapacity` | annotation `target-burst-capacity` |
/// | `stableWindow` | annotation `window` (configmap `stable-window`) |
/// | `panicWindowPercentage` | annotation `panic-window-percentage` |
/// | `panicThresholdPercentage` | annotation `panic-threshold-percentage` |
/// | `maxScaleUpRate`, `maxScaleDownRate` | `max-scale-up-rate`, `max-scale-down-rate` |
/// | `enableScaleToZero` | `enable-scale-to-zero` |
/// | `scaleToZeroGracePeriod` | `scale-to-zero-grace-period` |
/// | `scaleToZeroPodRetentionPeriod` | annotation `scale-to-zero-pod-retention-period` |
/// | `initialScale`, `allowZeroInitialScale` | annotation `initial-scale`, `allow-zero-initial-scale` |
/// | `minScale`, `maxScale` | annotations `min-scale`, `max-scale` (KServe's `minReplicas`, `maxReplicas`) |
/// | `activationScale` | annotation `activation-scale` |
/// | `scaleDownDelay` | annotation `scale-down-delay` |
///
/// Durations are written as Go durations, as Knative's are (`"60s"`,
/// `"1m30s"`, `"500ms"`), or as a number of seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AutoscalerConfig {
    /// What is measured and targeted.
    pub metric: Metric,
    /// The per-service target (KServe's `scaleTarget`): in-flight requests or
    /// requests per second per replica, before utilization. Unset: the
    /// defaults below. With the concurrency metric and a `containerConcurrency`
    /// limit, the smaller of the two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// The hard per-replica limit on requests in flight; 0 = none.
    pub container_concurrency: u32,
    /// The concurrency target when neither `target` nor `containerConcurrency`
    /// is set (100).
    pub container_concurrency_target_default: f64,
    /// The RPS target when `target` is unset (200).
    pub requests_per_second_target_default: f64,
    /// The share of the target the autoscaler aims at, in percent (70): replicas
    /// are added before they are full.
    pub target_utilization_percentage: f64,
    /// Spare capacity (in the metric's unit) wanted before the router stops
    /// buffering in front of the replicas (211); 0 = buffer only at zero
    /// scale, −1 = always buffer.
    pub target_burst_capacity: f64,
    /// The window of the stable average (60 s; 6 s to 1 h, whole seconds).
    #[serde(with = "go_duration")]
    pub stable_window: Duration,
    /// The panic window as a percentage of the stable window (10 → 6 s).
    pub panic_window_percentage: f64,
    /// Panic when the panic window asks for this percentage of the ready
    /// replicas or more (200; 110 to 1000).
    pub panic_threshold_percentage: f64,
    /// At most this many times the ready replicas per decision (1000).
    pub max_scale_up_rate: f64,
    /// At least the ready replicas divided by this per decision (2).
    pub max_scale_down_rate: f64,
    /// Whether a revision without traffic may go to zero replicas (true).
    pub enable_scale_to_zero: bool,
    /// How long the router must have been in front of an inactive revision
    /// before its last replica is removed (30 s; at least 6 s).
    #[serde(with = "go_duration")]
    pub scale_to_zero_grace_period: Duration,
    /// How long the last replica is kept after the revision became inactive (0).
    #[serde(with = "go_duration")]
    pub scale_to_zero_pod_retention_period: Duration,
    /// Replicas a new revision starts with (1).
    pub initial_scale: u32,
    /// Whether `initialScale` may be 0 (false).
    pub allow_zero_initial_scale: bool,
    /// The fewest replicas (0).
    pub min_scale: u32,
    /// The most replicas; 0 = unbounded.
    pub max_scale: u32,
    /// Replicas to start with when scaling up from zero (1).
    pub activation_scale: u32,
    /// Scale down only to the highest desire within this window (0; at most 1 h).
    #[serde(with = "go_duration")]
    pub scale_down_delay: Duration,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            metric: Metric::Concurrency,
            target: None,
            container_concurrency: 0,
            container_concurrency_target_default: 100.0,
            requests_per_second_target_default: 200.0,
            target_utilization_percentage: 70.0,
            target_burst_capacity: 211.0,
            stable_window: Duration::from_secs(60),
            panic_window_percentage: 10.0,
            panic_threshold_percentage: 200.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            enable_scale_to_zero: true,
            scale_to_zero_grace_period: Duration::from_secs(30),
            scale_to_zero_pod_retention_period: Duration::ZERO,
            initial_scale: 1,
            allow_zero_initial_scale: false,
            min_scale: 0,
            max_scale: 0,
            activation_scale: 1,
            scale_down_delay: Duration::ZERO,
        }
    }
}

/// A configuration value out of its range. Displays as `field: message`,
/// with the field's YAML name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The camelCase name of the bad field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

/// A sample that is not a finite, non-negative number.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("observed value must be a finite number >= 0, got {0}")]
pub struct InvalidSample(pub f64);

impl AutoscalerConfig {
    /// Checks every value against the range Knative accepts
    /// (`pkg/autoscaler/config/config.go` `validate` and the annotation
    /// validation in `pkg/apis/autoscaling`); the first bad field is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn at_least(field: &'static str, v: f64, min: f64) -> Result<(), ConfigError> {
            if v.is_finite() && v >= min {
                Ok(())
            } else {
                Err(bad(field, format!("must be at least {min}, got {v}")))
            }
        }
        fn within(field: &'static str, v: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(bad(field, format!("must be in {lo}..={hi}, got {v}")))
            }
        }
        fn above_one(field: &'static str, v: f64) -> Result<(), ConfigError> {
            if v.is_finite() && v > 1.0 {
                Ok(())
            } else {
                Err(bad(field, format!("must be greater than 1, got {v}")))
            }
        }
        fn whole_seconds(field: &'static str, d: Duration) -> Result<(), ConfigError> {
            if d.subsec_nanos() == 0 {
                Ok(())
            } else {
                Err(bad(
                    field,
                    format!("must be whole seconds, got {}", go_duration::format(d)),
                ))
            }
        }

        if let Some(t) = self.target {
            at_least("target", t, TARGET_MIN)?;
        }
        at_least(
            "containerConcurrencyTargetDefault",
            self.container_concurrency_target_default,
            TARGET_MIN,
        )?;
        at_least(
            "requestsPerSecondTargetDefault",
            self.requests_per_second_target_default,
            TARGET_MIN,
        )?;
        within(
            "targetUtilizationPercentage",
            self.target_utilization_percentage,
            1.0,
            100.0,
        )?;
        let tbc = self.target_burst_capacity;
        if !(tbc.is_finite() && (tbc >= 0.0 || tbc == -1.0)) {
            return Err(bad(
                "targetBurstCapacity",
                format!("must be >= 0, or -1 for unlimited, got {tbc}"),
            ));
        }
        if !(WINDOW_MIN..=WINDOW_MAX).contains(&self.stable_window) {
            return Err(bad(
                "stableWindow",
                format!(
                    "must be in 6s..=1h, got {}",
                    go_duration::format(self.stable_window)
                ),
            ));
        }
        whole_seconds("stableWindow", self.stable_window)?;
        within(
            "panicWindowPercentage",
            self.panic_window_percentage,
            1.0,
            100.0,
        )?;
        within(
            "panicThresholdPercentage",
            self.panic_threshold_percentage,
            110.0,
            1000.0,
        )?;
        above_one("maxScaleUpRate", self.max_scale_up_rate)?;
        above_one("maxScaleDownRate", self.max_scale_down_rate)?;
        if self.scale_to_zero_grace_period < WINDOW_MIN {
            return Err(bad(
                "scaleToZeroGracePeriod",
                format!(
                    "must be at least 6s, got {}",
                    go_duration::format(self.scale_to_zero_grace_period)
                ),
            ));
        }
        if self.initial_scale == 0 && !self.allow_zero_initial_scale {
            return Err(bad(
                "initialScale",
                "must be at least 1 unless allowZeroInitialScale is true",
            ));
        }
        if self.max_scale != 0 && self.min_scale > self.max_scale {
            return Err(bad(
                "minScale",
                format!(
                    "must not exceed maxScale ({}), got {}",
                    self.max_scale, self.min_scale
                ),
            ));
        }
        if self.activation_scale == 0 {
            return Err(bad("activationScale", "must be at least 1"));
        }
        if self.max_scale != 0 && self.activation_scale > self.max_scale {
            return Err(bad(
                "activationScale",
                format!(
                    "must not exceed maxScale ({}), got {}",
                    self.max_scale, self.activation_scale
                ),
            ));
        }
        if self.scale_down_delay > WINDOW_MAX {
            return Err(bad(
                "scaleDownDelay",
                format!(
                    "must be at most 1h, got {}",
                    go_duration::format(self.scale_down_delay)
                ),
            ));
        }
        whole_seconds("scaleDownDelay", self.scale_down_delay)?;
        Ok(())
    }

    /// The full per-replica capacity, Knative's `TotalValue`
    /// (`resources.ResolveMetricTarget`): the RPS default for RPS; for
    /// concurrency `containerConcurrency`, or the concurrency default when that
    /// is 0; a `target` replaces either, capped by `containerConcurrency` for
    /// concurrency.
    pub fn total_target(&self) -> f64 {
        let cc = f64::from(self.container_concurrency);
        match (self.metric, self.target) {
            (Metric::Rps, None) => self.requests_per_second_target_default,
            (Metric::Rps, Some(t)) => t,
            (Metric::Concurrency, None) if cc > 0.0 => cc,
            (Metric::Concurrency, None) => self.container_concurrency_target_default,
            (Metric::Concurrency, Some(t)) if cc > 0.0 => t.min(cc),
            (Metric::Concurrency, Some(t)) => t,
        }
    }

    /// The value per replica the autoscaler aims at, Knative's `TargetValue`:
    /// `max(0.01, total × utilization)`.
    pub fn target_per_replica(&self) -> f64 {
        (self.total_target() * self.target_utilization_percentage / 100.0).max(TARGET_MIN)
    }

    /// The panic window: `stableWindow × panicWindowPercentage / 100`.
    pub fn panic_window(&self) -> Duration {
        let secs = self.stable_window.as_secs_f64() * self.panic_window_percentage / 100.0;
        if secs.is_finite() && secs > 0.0 {
            Duration::from_secs_f64(secs)
        } else {
            BUCKET
        }
    }

    fn panic_threshold(&self) -> f64 {
        self.panic_threshold_percentage / 100.0
    }
}

/// Knative's `TimedFloat64Buckets`: a ring of 1 s buckets covering one window.
/// Values recorded in the same second add up (the per-replica reports of one
/// second make one total). Memory is the window's bucket count, however long
/// it runs.
#[derive(Clone, Debug)]
struct Window {
    window: Duration,
    buckets: Vec<f64>,
    /// Second of the first write since the window last went empty.
    first_write: u64,
    /// Second of the newest write; `None` before any.
    last_write: Option<u64>,
}

impl Window {
    fn new(window: Duration) -> Self {
        let n = window.as_nanos().div_ceil(BUCKET.as_nanos()).max(1);
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        Window {
            window,
            buckets: vec![0.0; n],
            first_write: 0,
            last_write: None,
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn index(&self, second: u64) -> usize {
        // The remainder is below the bucket count, which is a usize.
        (second % self.len()) as usize
    }

    /// `TimedFloat64Buckets.Record`: move the window forward to `now`,
    /// clearing the buckets it passes (all of them, and restarting the
    /// partial-window count, after a window without writes), then add.
    fn record(&mut self, now: Duration, value: f64) {
        let t = now.as_secs();
        match self.last_write {
            None => {
                self.first_write = t;
                self.last_write = Some(t);
            }
            Some(last) if t > last => {
                if Duration::from_secs(t - last) > self.window {
                    // A window without data: start over, partial window included.
                    self.first_write = t;
                }
                if t - last >= self.len() {
                    self.buckets.iter_mut().for_each(|b| *b = 0.0);
                } else {
                    for s in last + 1..=t {
                        let i = self.index(s);
                        self.buckets[i] = 0.0;
                    }
                }
                self.last_write = Some(t);
            }
            Some(last) if last - t >= self.len() => return, // older than the window
            Some(_) => self.first_write = self.first_write.min(t),
        }
        let i = self.index(t);
        self.buckets[i] += value;
    }

    /// `IsEmpty`: nothing was written within the last window.
    fn is_empty(&self, now: Duration) -> bool {
        match self.last_write {
            None => true,
            Some(last) => Duration::from_secs(now.as_secs().saturating_sub(last)) > self.window,
        }
    }

    /// `TimedFloat64Buckets.WindowAverage`: the average over the window,
    /// counting seconds without data as 0, but over a partial window while
    /// data has been arriving for less than a window (since the first write,
    /// up to the last one).
    fn average(&self, now: Duration) -> f64 {
        let Some(last) = self.last_write else {
            return 0.0;
        };
        let now = now.as_secs();
        let written = (last.saturating_sub(self.first_write) + 1) as f64;
        let total: f64 = self.buckets.iter().sum();
        let avg = if now <= last {
            total / written.min(self.len() as f64)
        } else if Duration::from_secs(now - last) < self.window && now - last < self.len() {
            let stale: f64 = (last + 1..=now).map(|s| self.buckets[self.index(s)]).sum();
            (total - stale) / written.min((self.len() - (now - last)) as f64)
        } else {
            0.0
        };
        (avg * PRECISION).round() / PRECISION
    }
}

/// Knative's scale-down delay window (`max.TimeWindow`): the highest desire
/// of the last `delay`, kept as a monotone queue of one entry per second at most.
#[derive(Clone, Debug)]
struct DelayWindow {
    delay: u64,
    entries: VecDeque<(u64, u32)>,
}

impl DelayWindow {
    fn record_and_max(&mut self, now: Duration, value: u32) -> u32 {
        let t = now.as_secs();
        while self
            .entries
            .front()
            .is_some_and(|&(s, _)| s + self.delay <= t)
        {
            self.entries.pop_front();
        }
        while self.entries.back().is_some_and(|&(_, v)| v <= value) {
            self.entries.pop_back();
        }
        self.entries.push_back((t, value));
        self.entries.front().map_or(value, |&(_, v)| v)
    }
}

/// The PodAutoscaler's `Active` condition (KN `computeActiveCondition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Waiting for enough ready replicas (condition Unknown); a new revision
    /// starts here.
    Activating,
    /// Enough replicas are ready; since when.
    Active { since: Duration },
    /// The revision has no traffic and may go (or has gone) to zero; since when.
    Inactive { since: Duration },
}

/// Why a decision has the value it has: the last rule that set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No sample within the stable window: the scale is left as it is
    /// (Knative's `ErrNoData`; the scaler applies nothing).
    AwaitingMetrics,
    /// `ceil(stable average / target)`.
    Stable,
    /// Panic mode: the higher of the stable and panic desires, never lower
    /// than before while panicking.
    Panic,
    /// Capped at `ceil(maxScaleUpRate × ready)`.
    ScaleUpRateLimited,
    /// Held at `floor(ready / maxScaleDownRate)`.
    ScaleDownRateLimited,
    /// Raised to `activationScale` on the way up from zero.
    ActivationScale,
    /// Held at the highest desire within `scaleDownDelay`.
    ScaleDownDelay,
    /// Raised to `minScale`.
    MinScale,
    /// Capped at `maxScale`.
    MaxScale,
    /// Raised to `initialScale` until it has once been reached.
    InitialScale,
    /// Zero wanted, but scale to zero is disabled: one replica.
    ScaleToZeroDisabled,
    /// Zero wanted while replicas are still becoming ready: nothing changes.
    Activating,
    /// Zero wanted, but the revision has been active for less than the stable
    /// window: one replica.
    ActiveLessThanStableWindow,
    /// Zero wanted after a stable window active: the revision is marked
    /// inactive and the router put in front; the replicas stay for now.
    MarkedInactive,
    /// Inactive for less than `scaleToZeroPodRetentionPeriod`: replicas stay.
    PodRetention,
    /// Inactive, but the router has been in front for less than
    /// `scaleToZeroGracePeriod`: replicas stay.
    GracePeriod,
    /// Scaled to zero.
    ScaledToZero,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Reason::AwaitingMetrics => "no metrics within the stable window; scale unchanged",
            Reason::Stable => "stable window average",
            Reason::Panic => "panic mode",
            Reason::ScaleUpRateLimited => "limited by maxScaleUpRate",
            Reason::ScaleDownRateLimited => "limited by maxScaleDownRate",
            Reason::ActivationScale => "raised to activationScale",
            Reason::ScaleDownDelay => "held by scaleDownDelay",
            Reason::MinScale => "raised to minScale",
            Reason::MaxScale => "capped at maxScale",
            Reason::InitialScale => "raised to initialScale",
            Reason::ScaleToZeroDisabled => "scale to zero is disabled",
            Reason::Activating => "activating; scale unchanged",
            Reason::ActiveLessThanStableWindow => {
                "active for less than the stable window; held at 1"
            }
            Reason::MarkedInactive => "no traffic; marked inactive",
            Reason::PodRetention => "inactive; within scaleToZeroPodRetentionPeriod",
            Reason::GracePeriod => "inactive; within scaleToZeroGracePeriod",
            Reason::ScaledToZero => "scaled to zero",
        };
        f.write_str(s)
    }
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// The replica count to run.
    pub desired_replicas: u32,
    /// Whether the autoscaler is in panic mode.
    pub panic: bool,
    /// Knative's excess burst capacity: `floor(ready × total − targetBurstCapacity
    /// − panic average)`; 0 when `targetBurstCapacity` is 0, −1 when it is −1.
    /// Negative: the router should buffer in front of the replicas.
    pub excess_burst_capacity: i64,
    /// Whether the router (Knative's activator) should be in the request path:
    /// Knative's ServerlessService `Proxy` mode, when zero replicas are wanted,
    /// the excess burst capacity is negative, or the revision is inactive with
    /// no metrics.
    pub activator_in_path: bool,
    /// The stable window average of the metric.
    pub stable_average: f64,
    /// The panic window average of the metric.
    pub panic_average: f64,
    /// Which rule set `desired_replicas`.
    pub reason: Reason,
}

/// The output of the decider step (KN `autoscaler.Scale`).
struct ScaleResult {
    desired: u32,
    reason: Reason,
}

/// Knative's KPA for one revision: decider, scaler and the PodAutoscaler state
/// they share. See the module documentation.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    config: AutoscalerConfig,
    stable: Window,
    panic: Window,
    delay: Option<DelayWindow>,
    /// When the panic threshold was last crossed; `None` out of panic.
    panic_time: Option<Duration>,
    /// The highest desire of this panic (`maxPanicPods`).
    max_panic_pods: u32,
    activity: Activity,
    /// Whether `initialScale` has once been reached
    /// (`ScaleTargetInitialized`).
    initialized: bool,
    /// Since when the router has been in the path (SKS `ProxyFor`).
    proxy_since: Option<Duration>,
    /// The replica count last applied.
    applied: u32,
    reachable: bool,
}

impl Autoscaler {
    /// An autoscaler for a new revision: `Activating`, at its initial scale
    /// (within min/max).
    pub fn new(config: AutoscalerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut applied = config.initial_scale.max(config.min_scale);
        if config.max_scale != 0 {
            applied = applied.min(config.max_scale);
        }
        Ok(Autoscaler {
            stable: Window::new(config.stable_window),
            panic: Window::new(config.panic_window()),
            delay: (config.scale_down_delay > Duration::ZERO).then(|| DelayWindow {
                delay: config.scale_down_delay.as_secs(),
                entries: VecDeque::new(),
            }),
            panic_time: None,
            max_panic_pods: 0,
            activity: Activity::Activating,
            initialized: false,
            proxy_since: None,
            applied,
            reachable: true,
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &AutoscalerConfig {
        &self.config
    }

    /// The PodAutoscaler's `Active` condition after the last decision.
    pub fn activity(&self) -> Activity {
        self.activity
    }

    /// Whether routes send this revision traffic (Knative's PA
    /// `reachability`, true by default). An unreachable revision may scale
    /// down past the `maxScaleDownRate` limit at once.
    pub fn set_reachable(&mut self, reachable: bool) {
        self.reachable = reachable;
    }

    /// How many metric buckets are held: fixed by the windows, however long
    /// samples keep coming.
    pub fn bucket_count(&self) -> usize {
        self.stable.buckets.len()
            + self.panic.buckets.len()
            + self.delay.as_ref().map_or(0, |d| d.entries.len())
    }

    /// Records what was observed at `now` across all replicas: requests in
    /// flight, or requests per second, per the configured metric. Samples in
    /// the same second add up, so either the total or one sample per replica
    /// may be reported. Report zeros too: a stable window without samples
    /// means "no data", which leaves the scale unchanged, as in Knative.
    pub fn record(&mut self, now: Duration, observed: f64) -> Result<(), InvalidSample> {
        if !(observed.is_finite() && observed >= 0.0) {
            return Err(InvalidSample(observed));
        }
        self.stable.record(now, observed);
        self.panic.record(now, observed);
        Ok(())
    }

    /// One decision at `now` with `ready_replicas` ready: the decider
    /// (KN `autoscaler.Scale`), then the scaler (`scaler.scale`,
    /// `handleScaleToZero`), then the PA's `Active` condition and the router
    /// mode (`kpa.go`).
    pub fn decide(&mut self, now: Duration, ready_replicas: u32) -> Decision {
        let stable_average = self.stable.average(now);
        let panic_average = self.panic.average(now);
        let have_data = !self.stable.is_empty(now);

        // Excess burst capacity over the observed ready count (KN uses
        // `originalReadyPodsCount` here, not the count floored at 1).
        let tbc = self.config.target_burst_capacity;
        let excess_burst_capacity = if tbc == 0.0 {
            0
        } else if tbc < 0.0 {
            -1
        } else {
            let total = f64::from(ready_replicas) * self.config.total_target();
            // Saturating float-to-int conversion; the value is finite.
            (total - tbc - panic_average).floor() as i64
        };

        // `None`: scale unknown, nothing is applied.
        let (want, apply, reason) = if have_data {
            let r = self.scale(now, ready_replicas, stable_average, panic_average);
            self.bound_and_handle_zero(now, r)
        } else {
            (None, false, Reason::AwaitingMetrics)
        };

        // The router mode is chosen from the state before this decision's
        // activity update (KN kpa.go).
        let was_inactive = matches!(self.activity, Activity::Inactive { .. });
        let activator_in_path =
            want == Some(0) || excess_burst_capacity < 0 || (want.is_none() && was_inactive);

        self.update_activity(now, ready_replicas, want);
        self.proxy_since = if activator_in_path {
            Some(self.proxy_since.unwrap_or(now))
        } else {
            None
        };
        if apply && let Some(w) = want {
            self.applied = w;
        }

        Decision {
            desired_replicas: self.applied,
            panic: self.panic_time.is_some(),
            excess_burst_capacity,
            activator_in_path,
            stable_average,
            panic_average,
            reason,
        }
    }

    /// KN `autoscaler.Scale`: desired replicas from the window averages, rate
    /// limits, activation scale, panic mode and scale-down delay.
    fn scale(&mut self, now: Duration, ready: u32, stable: f64, panic: f64) -> ScaleResult {
        let cfg = &self.config;
        let target = cfg.target_per_replica();
        let ready_f = f64::from(ready.max(1));
        let max_up = (cfg.max_scale_up_rate * ready_f).ceil();
        let max_down = if self.reachable {
            (ready_f / cfg.max_scale_down_rate).floor()
        } else {
            0.0
        };
        let dspc = (stable / target).ceil();
        let dppc = (panic / target).ceil();
        let to_count = |x: f64| x.clamp(max_down, max_up) as u32;
        let mut desired_stable = to_count(dspc);
        let mut desired_panic = to_count(dppc);

        let mut reason = if dspc > max_up {
            Reason::ScaleUpRateLimited
        } else if dspc < max_down {
            Reason::ScaleDownRateLimited
        } else {
            Reason::Stable
        };

        let activation = cfg.activation_scale;
        if activation > 1 {
            if desired_stable > 0 && desired_stable < activation {
                desired_stable = activation;
                reason = Reason::ActivationScale;
            }
            if desired_panic > 0 && desired_panic < activation {
                desired_panic = activation;
            }
        }

        let over_threshold = dppc / ready_f >= cfg.panic_threshold();
        if over_threshold {
            // Enter panic, or extend it.
            self.panic_time = Some(now);
        } else if self.panic_time.is_some_and(|t| t + cfg.stable_window < now) {
            // The surge has made its way into the stable window.
            self.panic_time = None;
            self.max_panic_pods = 0;
        }

        let mut desired = desired_stable;
        if self.panic_time.is_some() {
            desired = desired.max(desired_panic);
            // No scaling down while panicking.
            self.max_panic_pods = self.max_panic_pods.max(desired);
            desired = self.max_panic_pods;
            reason = Reason::Panic;
        }

        if let Some(delay) = self.delay.as_mut() {
            let delayed = delay.record_and_max(now, desired);
            if delayed != desired {
                desired = delayed;
                reason = Reason::ScaleDownDelay;
            }
        }

        ScaleResult { desired, reason }
    }

    /// KN `scaler.scale` and `handleScaleToZero`: min/max (and initial scale
    /// until reached), then the scale-to-zero rules. Returns the wanted scale
    /// (`None`: unknown), whether to apply it, and why.
    fn bound_and_handle_zero(
        &mut self,
        now: Duration,
        r: ScaleResult,
    ) -> (Option<u32>, bool, Reason) {
        let cfg = &self.config;
        let (mut desired, mut reason) = (r.desired, r.reason);

        let mut min = cfg.min_scale;
        let mut min_reason = Reason::MinScale;
        if cfg.initial_scale > 1 && !self.initialized && cfg.initial_scale > min {
            min = cfg.initial_scale;
            min_reason = Reason::InitialScale;
        }
        if desired < min {
            desired = min;
            reason = min_reason;
        }
        if cfg.max_scale != 0 && desired > cfg.max_scale {
            desired = cfg.max_scale;
            reason = Reason::MaxScale;
        }
        if desired != 0 {
            return (Some(desired), true, reason);
        }

        // Zero is wanted. Knative scales to zero only when scale to zero is
        // enabled, the PA has been active for at least the stable window (it
        // is then marked inactive first), and the router has been in front
        // for the grace period (or the revision inactive for
        // max(grace period, pod retention)).
        if !cfg.enable_scale_to_zero {
            return (Some(1), true, Reason::ScaleToZeroDisabled);
        }
        match self.activity {
            Activity::Activating => (None, false, Reason::Activating),
            Activity::Active { since } => {
                if now.saturating_sub(since) >= cfg.stable_window {
                    (Some(0), false, Reason::MarkedInactive)
                } else {
                    (Some(1), true, Reason::ActiveLessThanStableWindow)
                }
            }
            Activity::Inactive { since } => {
                let inactive_for = now.saturating_sub(since);
                let retention = cfg.scale_to_zero_pod_retention_period;
                let grace = cfg.scale_to_zero_grace_period;
                let proxy_for = self
                    .proxy_since
                    .map_or(Duration::ZERO, |s| now.saturating_sub(s));
                if inactive_for >= grace.max(retention) {
                    (Some(0), true, Reason::ScaledToZero)
                } else if inactive_for < retention {
                    (Some(0), false, Reason::PodRetention)
                } else if proxy_for >= grace {
                    (Some(0), true, Reason::ScaledToZero)
                } else {
                    (Some(0), false, Reason::GracePeriod)
                }
            }
        }
    }

    /// KN `computeActiveCondition`.
    fn update_activity(&mut self, now: Duration, ready: u32, want: Option<u32>) {
        let cfg = &self.config;
        let min_ready = if self.initialized {
            cfg.min_scale.max(1)
        } else {
            cfg.min_scale.max(cfg.initial_scale)
        };
        if ready >= min_ready {
            self.initialized = true;
        }
        let inactive = matches!(self.activity, Activity::Inactive { .. });
        let wants_replicas = want.is_some_and(|w| w > 0);
        let inactive_since = match self.activity {
            Activity::Inactive { since } => since,
            _ => now,
        };
        self.activity = if want == Some(0) || min_ready == 0 {
            Activity::Inactive {
                since: inactive_since,
            }
        } else if ready < min_ready {
            if wants_replicas || !inactive {
                Activity::Activating
            } else {
                Activity::Inactive {
                    since: inactive_since,
                }
            }
        } else if wants_replicas || !inactive {
            match self.activity {
                Activity::Active { since } => Activity::Active { since },
                _ => Activity::Active { since: now },
            }
        } else {
            self.activity
        };
    }
}

/// Durations as Knative writes them: Go duration strings (`"60s"`, `"1m30s"`,
/// `"500ms"`), or a number of seconds.
mod go_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn format(d: Duration) -> String {
        if d.subsec_nanos() == 0 {
            format!("{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}ns", d.as_nanos())
        }
    }

    pub(super) fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        if s.starts_with('-') {
            return Err(format!("duration {s:?} must not be negative"));
        }
        let invalid = || format!("invalid duration {s:?} (e.g. \"60s\", \"1m30s\", \"500ms\")");
        let mut rest = s.strip_prefix('+').unwrap_or(s);
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut nanos: f64 = 0.0;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(invalid)?;
            let (num, tail) = rest.split_at(num_end);
            if num.is_empty() || num == "." {
                return Err(invalid());
            }
            let value: f64 = num.parse().map_err(|_| invalid())?;
            let unit_end = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_end);
            let scale = match unit {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(invalid()),
            };
            nanos += value * scale;
            rest = tail;
        }
        if !nanos.is_finite() || nanos > u64::MAX as f64 {
            return Err(invalid());
        }
        Ok(Duration::from_nanos(nanos.round() as u64))
    }

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(f64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Seconds(v) if v.is_finite() && v >= 0.0 && v <= u64::MAX as f64 => {
                Ok(Duration::from_secs_f64(v))
            }
            Raw::Seconds(v) => Err(de::Error::custom(format!(
                "duration {v} must be a number of seconds >= 0"
            ))),
            Raw::Text(t) => parse(&t).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests;

/// Parses a Go duration as Knative writes them (`"60s"`, `"1m30s"`,
/// `"500ms"`, `"0"`).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    go_duration::parse(text)
}
