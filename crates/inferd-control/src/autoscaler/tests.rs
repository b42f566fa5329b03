//! The autoscaler against the behaviours Knative documents, on simulated
//! time. Defaults: target 100 × 70% = 70 per replica, stable window 60 s,
//! panic window 6 s, grace period 30 s.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn autoscaler(change: impl FnOnce(&mut AutoscalerConfig)) -> Autoscaler {
    let mut config = AutoscalerConfig::default();
    change(&mut config);
    match Autoscaler::new(config) {
        Ok(a) => a,
        Err(e) => panic!("invalid test config: {e}"),
    }
}

fn record(a: &mut Autoscaler, t: u64, v: f64) {
    assert_eq!(a.record(secs(t), v), Ok(()));
}

/// Each second of `range`: record `load(t)`, then decide with `ready` ready
/// replicas; when `follow` is set, replicas become ready at once (the next
/// decision sees the previous one's count).
fn run(
    a: &mut Autoscaler,
    ready: &mut u32,
    follow: bool,
    range: RangeInclusive<u64>,
    load: impl Fn(u64) -> f64,
) -> Vec<Decision> {
    range
        .map(|t| {
            record(a, t, load(t));
            let d = a.decide(secs(t), *ready);
            if follow {
                *ready = d.desired_replicas;
            }
            d
        })
        .collect()
}

fn replicas(ds: &[Decision]) -> Vec<u32> {
    ds.iter().map(|d| d.desired_replicas).collect()
}

// ---- configuration ----

#[test]
fn defaults_are_knatives() {
    let c = AutoscalerConfig::default();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(c.metric, Metric::Concurrency);
    assert_eq!(c.total_target(), 100.0);
    assert_eq!(c.target_per_replica(), 70.0);
    assert_eq!(c.stable_window, secs(60));
    assert_eq!(c.panic_window(), secs(6));
    assert_eq!(c.panic_threshold_percentage, 200.0);
    assert_eq!((c.max_scale_up_rate, c.max_scale_down_rate), (1000.0, 2.0));
    assert!(c.enable_scale_to_zero);
    assert_eq!(c.scale_to_zero_grace_period, secs(30));
    assert_eq!(c.scale_to_zero_pod_retention_period, Duration::ZERO);
    assert_eq!((c.initial_scale, c.min_scale, c.max_scale), (1, 0, 0));
    assert_eq!(c.activation_scale, 1);
    assert_eq!(c.target_burst_capacity, 211.0);
}

#[test]
fn target_resolution_follows_knative() {
    let with = |change: fn(&mut AutoscalerConfig)| {
        let mut c = AutoscalerConfig::default();
        change(&mut c);
        (c.total_target(), c.target_per_replica())
    };
    // containerConcurrency replaces the default; a target replaces both, capped
    // by containerConcurrency.
    assert_eq!(with(|c| c.container_concurrency = 10), (10.0, 7.0));
    assert_eq!(with(|c| c.target = Some(50.0)), (50.0, 35.0));
    assert_eq!(
        with(|c| {
            c.target = Some(50.0);
            c.container_concurrency = 10;
        }),
        (10.0, 7.0)
    );
    // RPS: its own default, and containerConcurrency does not cap it.
    assert_eq!(with(|c| c.metric = Metric::Rps), (200.0, 140.0));
    assert_eq!(
        with(|c| {
            c.metric = Metric::Rps;
            c.target = Some(50.0);
            c.container_concurrency = 10;
        }),
        (50.0, 35.0)
    );
    assert_eq!(
        with(|c| c.target_utilization_percentage = 50.0),
        (100.0, 50.0)
    );
    // Never below Knative's TargetMin.
    assert_eq!(
        with(|c| {
            c.target = Some(0.01);
            c.target_utilization_percentage = 1.0;
        }),
        (0.01, 0.01)
    );
    // Panic window from the percentage.
    let c = AutoscalerConfig {
        stable_window: secs(120),
        panic_window_percentage: 25.0,
        ..AutoscalerConfig::default()
    };
    assert_eq!(c.panic_window(), secs(30));
}

#[test]
fn every_bad_value_is_refused_naming_its_field() {
    type Change = Box<dyn Fn(&mut AutoscalerConfig)>;
    let mut cases: Vec<(&str, Change)> = Vec::new();
    type Field = fn(&mut AutoscalerConfig) -> &mut f64;
    let floats: [(&str, Field, &[f64]); 8] = [
        (
            "containerConcurrencyTargetDefault",
            |c| &mut c.container_concurrency_target_default,
            &[0.0, 0.009, -1.0],
        ),
        (
            "requestsPerSecondTargetDefault",
            |c| &mut c.requests_per_second_target_default,
            &[0.0, 0.009, -1.0],
        ),
        (
            "targetUtilizationPercentage",
            |c| &mut c.target_utilization_percentage,
            &[0.0, 0.5, -70.0, 100.5, 1000.0],
        ),
        (
            "targetBurstCapacity",
            |c| &mut c.target_burst_capacity,
            &[-2.0, -0.5, -211.0],
        ),
        (
            "panicWindowPercentage",
            |c| &mut c.panic_window_percentage,
            &[0.0, 0.5, -10.0, 100.5],
        ),
        (
            "panicThresholdPercentage",
            |c| &mut c.panic_threshold_percentage,
            &[0.0, 100.0, 109.9, -200.0, 1000.5],
        ),
        (
            "maxScaleUpRate",
            |c| &mut c.max_scale_up_rate,
            &[0.0, 1.0, 0.5, -2.0],
        ),
        (
            "maxScaleDownRate",
            |c| &mut c.max_scale_down_rate,
            &[0.0, 1.0, 0.5, -2.0],
        ),
    ];
    for (field, get, values) in floats {
        let all = values
            .iter()
            .copied()
            .chain([f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
        for v in all {
            cases.push((field, Box::new(move |c| *get(c) = v)));
        }
    }
    for v in [0.0, 0.005, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        cases.push(("target", Box::new(move |c| c.target = Some(v))));
    }
    for d in [
        Duration::ZERO,
        secs(5),
        secs(3601),
        Duration::from_millis(6500),
    ] {
        cases.push(("stableWindow", Box::new(move |c| c.stable_window = d)));
    }
    for d in [Duration::ZERO, secs(5), Duration::from_millis(5999)] {
        cases.push((
            "scaleToZeroGracePeriod",
            Box::new(move |c| c.scale_to_zero_grace_period = d),
        ));
    }
    for d in [secs(3601), Duration::from_millis(1500)] {
        cases.push(("scaleDownDelay", Box::new(move |c| c.scale_down_delay = d)));
    }
    cases.push(("initialScale", Box::new(|c| c.initial_scale = 0)));
    cases.push((
        "minScale",
        Box::new(|c| {
            c.min_scale = 5;
            c.max_scale = 4;
        }),
    ));
    cases.push(("activationScale", Box::new(|c| c.activation_scale = 0)));
    cases.push((
        "activationScale",
        Box::new(|c| {
            c.activation_scale = 5;
            c.max_scale = 4;
        }),
    ));

    for (field, change) in &cases {
        let mut c = AutoscalerConfig::default();
        change(&mut c);
        let err = match c.validate() {
            Err(e) => e,
            Ok(()) => panic!("{field}: accepted {c:?}"),
        };
        assert_eq!(err.field, *field, "{err}");
        assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
        assert!(Autoscaler::new(c).is_err());
    }
    assert!(cases.len() > 60);
}

#[test]
fn values_at_the_limits_are_accepted() {
    let ok = |change: fn(&mut AutoscalerConfig)| {
        let mut c = AutoscalerConfig::default();
        change(&mut c);
        assert_eq!(c.validate(), Ok(()), "{c:?}");
    };
    ok(|c| c.target = Some(0.01));
    ok(|c| c.target_burst_capacity = -1.0);
    ok(|c| c.target_burst_capacity = 0.0);
    ok(|c| c.stable_window = secs(6));
    ok(|c| c.stable_window = secs(3600));
    ok(|c| c.panic_window_percentage = 1.0);
    ok(|c| c.panic_window_percentage = 100.0);
    ok(|c| c.panic_threshold_percentage = 110.0);
    ok(|c| c.panic_threshold_percentage = 1000.0);
    ok(|c| c.target_utilization_percentage = 100.0);
    ok(|c| {
        c.initial_scale = 0;
        c.allow_zero_initial_scale = true;
    });
    ok(|c| {
        c.min_scale = 4;
        c.max_scale = 4;
    });
    ok(|c| c.min_scale = 4); // maxScale 0 is unbounded
    ok(|c| c.scale_down_delay = secs(3600));
}

#[test]
fn config_reads_camel_case_with_go_durations() {
    let json = r#"{"metric": "rps", "target": 50, "stableWindow": "2m",
        "panicWindowPercentage": 5, "scaleToZeroGracePeriod": 45,
        "scaleToZeroPodRetentionPeriod": "1m30s", "scaleDownDelay": "0",
        "minScale": 1, "maxScale": 8, "enableScaleToZero": false,
        "targetUtilizationPercentage": 80, "targetBurstCapacity": -1}"#;
    let c: AutoscalerConfig = match serde_json::from_str(json) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.metric, Metric::Rps);
    assert_eq!(c.target, Some(50.0));
    assert_eq!(c.stable_window, secs(120));
    assert_eq!(c.panic_window(), secs(6));
    assert_eq!(c.scale_to_zero_grace_period, secs(45));
    assert_eq!(c.scale_to_zero_pod_retention_period, secs(90));
    assert_eq!((c.min_scale, c.max_scale), (1, 8));
    assert!(!c.enable_scale_to_zero);
    assert_eq!(c.target_per_replica(), 40.0);
    assert_eq!(c.target_burst_capacity, -1.0);
    // Unnamed fields keep their defaults.
    assert_eq!(c.max_scale_down_rate, 2.0);
    assert_eq!(c.validate(), Ok(()));

    // Round trip, durations written the Go way.
    let text = match serde_json::to_string(&c) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    assert!(text.contains(r#""stableWindow":"120s""#), "{text}");
    assert!(text.contains(r#""scaleToZeroPodRetentionPeriod":"90s""#));
    let back: Result<AutoscalerConfig, _> = serde_json::from_str(&text);
    assert_eq!(back.ok(), Some(c));

    for bad in [
        r#"{"stableWindow": "-1s"}"#,
        r#"{"stableWindow": "sixty"}"#,
        r#"{"stableWindow": "60x"}"#,
        r#"{"stableWindow": "60"}"#,
        r#"{"stableWindow": -5}"#,
        r#"{"metric": "qps"}"#,
        r#"{"stableWindo": "60s"}"#,
    ] {
        assert!(
            serde_json::from_str::<AutoscalerConfig>(bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn go_durations_parse_and_format() {
    let p = |s: &str| go_duration::parse(s);
    assert_eq!(p("60s"), Ok(secs(60)));
    assert_eq!(p("1m30s"), Ok(secs(90)));
    assert_eq!(p("1.5h"), Ok(secs(5400)));
    assert_eq!(p("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(p("2us"), Ok(Duration::from_micros(2)));
    assert_eq!(p("0"), Ok(Duration::ZERO));
    for bad in ["", "s", "1", "-1s", "1d", ".s", "1.2.3s"] {
        assert!(p(bad).is_err(), "{bad}");
    }
    assert_eq!(go_duration::format(secs(60)), "60s");
    assert_eq!(go_duration::format(Duration::from_millis(1500)), "1500ms");
    assert_eq!(go_duration::format(Duration::from_nanos(7)), "7ns");
}

#[test]
fn invalid_samples_are_refused() {
    let mut a = autoscaler(|_| {});
    for v in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(a.record(secs(0), v).is_err());
    }
    // Nothing was recorded.
    assert_eq!(a.decide(secs(0), 1).reason, Reason::AwaitingMetrics);
}

// ---- steady load ----

#[test]
fn steady_load_gives_ceil_of_load_over_target_times_utilization() {
    // (load, ready replicas) -> ceil(load / 70)
    for (load, ready, want) in [
        (0.5, 1, 1),
        (70.0, 1, 1),
        (71.0, 2, 2),
        (140.0, 2, 2),
        (141.0, 3, 3),
        (210.0, 3, 3),
        (700.0, 10, 10),
        (700.1, 11, 11),
    ] {
        let mut a = autoscaler(|_| {});
        for t in 0..60 {
            record(&mut a, t, load);
        }
        let d = a.decide(secs(59), ready);
        assert_eq!(d.desired_replicas, want, "load {load}");
        assert_eq!(d.stable_average, load);
        assert_eq!(d.panic_average, load);
        assert!(!d.panic);
        assert_eq!(d.reason, Reason::Stable);
    }
}

#[test]
fn rps_metric_scales_the_same_way_on_its_own_target() {
    // 200 RPS × 70% = 140 per replica.
    for (load, ready, want) in [
        (140.0, 1, 1),
        (280.0, 2, 2),
        (281.0, 3, 3),
        (1400.0, 10, 10),
    ] {
        let mut a = autoscaler(|c| c.metric = Metric::Rps);
        let mut r = ready;
        let ds = run(&mut a, &mut r, false, 0..=59, |_| load);
        assert!(ds.iter().all(|d| d.desired_replicas == want && !d.panic));
    }
    // And a burst panics the same way.
    let mut a = autoscaler(|c| c.metric = Metric::Rps);
    let mut ready = 1;
    run(&mut a, &mut ready, false, 0..=59, |_| 100.0);
    let d = a.decide(secs(60), 1);
    assert!(!d.panic);
    record(&mut a, 61, 10_000.0);
    let d = a.decide(secs(61), 1);
    assert!(d.panic);
    // Panic average (100 × 5 + 10000) / 6 = 1750 -> 13 replicas.
    assert_eq!(d.desired_replicas, 13);
}

// ---- panic mode ----

#[test]
fn a_burst_panics_scales_up_within_the_panic_window_and_never_down_until_a_stable_window_passes() {
    let mut a = autoscaler(|_| {});
    let mut ready = 2;
    // A minute at 140 in flight: two replicas.
    let ds = run(&mut a, &mut ready, false, 0..=59, |_| 140.0);
    assert!(ds.iter().all(|d| d.desired_replicas == 2 && !d.panic));

    // Load quadruples to 560 (8 replicas' worth); the two replicas stay the
    // only ready ones while the new ones start.
    let ds = run(&mut a, &mut ready, false, 60..=65, |_| 560.0);
    // t=60: panic average 210 -> 3, 3/2 < 2: no panic; stable 147 -> 3.
    // t=61: panic average 280 -> 4, 4/2 >= 2: panic. Then 350, 420, 490, 560.
    assert_eq!(replicas(&ds), [3, 4, 5, 6, 7, 8]);
    let panics: Vec<bool> = ds.iter().map(|d| d.panic).collect();
    assert_eq!(panics, [false, true, true, true, true, true]);
    assert_eq!(ds[1].reason, Reason::Panic);

    // The burst stops; eight replicas are ready. Panic last re-triggered at
    // t=65, so it lasts until a stable window has passed: while it lasts the
    // count never goes down.
    ready = 8;
    let ds = run(&mut a, &mut ready, false, 66..=125, |_| 0.0);
    assert!(
        ds.iter()
            .all(|d| d.panic && d.desired_replicas == 8 && d.reason == Reason::Panic)
    );
    // t=126 > 65 + 60: panic ends; the stable window (67..=126) is empty, so
    // the count falls, by at most half.
    let ds = run(&mut a, &mut ready, false, 126..=126, |_| 0.0);
    assert!(!ds[0].panic);
    assert_eq!(ds[0].desired_replicas, 4);
    assert_eq!(ds[0].reason, Reason::ScaleDownRateLimited);
}

#[test]
fn panic_is_extended_while_the_threshold_is_crossed_again() {
    let mut a = autoscaler(|_| {});
    let mut ready = 1;
    // 350 in flight on one replica: panic at once (5 / 1 >= 2).
    let d = run(&mut a, &mut ready, false, 0..=0, |_| 350.0);
    assert!(d[0].panic);
    assert_eq!(d[0].desired_replicas, 5);
    // Short bursts every 50 s keep panic on; desire never falls below 5.
    for start in [50, 100, 150] {
        let ds = run(&mut a, &mut ready, false, start - 49..=start, |t| {
            if t == start { 10_000.0 } else { 0.0 }
        });
        assert!(ds.iter().all(|d| d.panic && d.desired_replicas >= 5));
    }
}

// ---- rate limits and bounds ----

#[test]
fn scale_down_is_limited_to_halving_per_decision() {
    let mut a = autoscaler(|_| {});
    let mut ready = 10;
    let ds = run(&mut a, &mut ready, true, 0..=3, |_| 0.0);
    assert_eq!(replicas(&ds), [5, 2, 1, 1]);
    assert_eq!(ds[0].reason, Reason::ScaleDownRateLimited);
    assert_eq!(ds[2].reason, Reason::ScaleDownRateLimited);
    // Zero wanted after 3 s active: held at one until a stable window active.
    assert_eq!(ds[3].reason, Reason::ActiveLessThanStableWindow);

    // Rate 4: a quarter per decision.
    let mut a = autoscaler(|c| c.max_scale_down_rate = 4.0);
    let mut ready = 100;
    let ds = run(&mut a, &mut ready, true, 0..=2, |_| 0.0);
    assert_eq!(replicas(&ds), [25, 6, 1]);
}

#[test]
fn an_unreachable_revision_is_not_rate_limited_down() {
    let mut a = autoscaler(|_| {});
    assert_eq!(a.decide(secs(0), 10).reason, Reason::AwaitingMetrics);
    record(&mut a, 0, 0.0);
    assert_eq!(a.decide(secs(0), 10).desired_replicas, 5);
    a.set_reachable(false);
    record(&mut a, 1, 0.0);
    let d = a.decide(secs(1), 5);
    // Zero wanted at once; the one-replica hold of a recently active PA applies.
    assert_eq!(
        (d.desired_replicas, d.reason),
        (1, Reason::ActiveLessThanStableWindow)
    );
}

#[test]
fn scale_up_is_limited_by_max_scale_up_rate() {
    // 630 in flight wants 9; at most 2× the ready count per decision. A panic
    // threshold of 1000% keeps panic out of the way.
    let mut a = autoscaler(|c| {
        c.max_scale_up_rate = 2.0;
        c.panic_threshold_percentage = 1000.0;
    });
    let mut ready = 1;
    let ds = run(&mut a, &mut ready, true, 0..=4, |_| 630.0);
    assert_eq!(replicas(&ds), [2, 4, 8, 9, 9]);
    assert_eq!(ds[0].reason, Reason::ScaleUpRateLimited);
    assert_eq!(ds[2].reason, Reason::ScaleUpRateLimited);
    assert_eq!(ds[3].reason, Reason::Stable);
    assert!(ds.iter().all(|d| !d.panic));

    // No ready replicas counts as one.
    let mut a = autoscaler(|c| c.max_scale_up_rate = 2.0);
    record(&mut a, 0, 630.0);
    assert_eq!(a.decide(secs(0), 0).desired_replicas, 2);
}

#[test]
fn min_and_max_scale_are_respected() {
    let mut a = autoscaler(|c| c.min_scale = 3);
    let mut ready = 3;
    let ds = run(&mut a, &mut ready, true, 0..=300, |_| 0.0);
    assert!(
        ds.iter()
            .all(|d| d.desired_replicas == 3 && d.reason == Reason::MinScale)
    );
    assert!(matches!(a.activity(), Activity::Active { .. }));

    let mut a = autoscaler(|c| c.max_scale = 5);
    let mut ready = 1;
    let ds = run(&mut a, &mut ready, true, 0..=10, |_| 7000.0);
    assert!(ds.iter().all(|d| d.desired_replicas == 5));
    assert_eq!(ds[0].reason, Reason::MaxScale);
    assert!(ds[0].panic);
}

#[test]
fn initial_scale_holds_until_reached_once() {
    let mut a = autoscaler(|c| c.initial_scale = 3);
    assert_eq!(a.decide(secs(0), 0).desired_replicas, 3); // before metrics
    record(&mut a, 0, 0.0);
    let d = a.decide(secs(0), 0);
    assert_eq!((d.desired_replicas, d.reason), (3, Reason::InitialScale));
    record(&mut a, 1, 0.0);
    assert_eq!(a.decide(secs(1), 2).desired_replicas, 3);
    record(&mut a, 2, 0.0);
    // Three ready: reached (the bound still applies to this decision).
    assert_eq!(a.decide(secs(2), 3).desired_replicas, 3);
    record(&mut a, 3, 0.0);
    let d = a.decide(secs(3), 3);
    assert_eq!(
        (d.desired_replicas, d.reason),
        (1, Reason::ScaleDownRateLimited)
    );
}

#[test]
fn scale_down_delay_keeps_the_highest_recent_desire() {
    let mut a = autoscaler(|c| c.scale_down_delay = secs(10));
    let mut ready = 10;
    let ds = run(&mut a, &mut ready, false, 0..=11, |t| {
        if t == 0 { 700.0 } else { 0.0 }
    });
    assert_eq!(ds[0].desired_replicas, 10);
    for d in &ds[1..10] {
        assert_eq!((d.desired_replicas, d.reason), (10, Reason::ScaleDownDelay));
    }
    // The desire of t=0 leaves the 10 s window at t=10.
    assert_eq!(
        (ds[10].desired_replicas, ds[10].reason),
        (5, Reason::ScaleDownRateLimited)
    );
}

// ---- scale to zero and back ----

#[test]
fn scale_to_zero_waits_a_stable_window_active_then_the_grace_period() {
    // Target burst capacity 0: the router steps in front only at zero scale,
    // so the whole grace period runs after the revision goes inactive.
    let mut a = autoscaler(|c| c.target_burst_capacity = 0.0);
    let mut ready = 1;
    let ds = run(&mut a, &mut ready, true, 0..=95, |_| 0.0);
    // Ready at t=0, so active since t=0.
    assert_eq!(ds[0].reason, Reason::Activating);
    for d in &ds[1..60] {
        assert_eq!(
            (d.desired_replicas, d.reason),
            (1, Reason::ActiveLessThanStableWindow)
        );
        assert!(!d.activator_in_path);
    }
    assert_eq!(
        (ds[60].desired_replicas, ds[60].reason),
        (1, Reason::MarkedInactive)
    );
    assert!(ds[60].activator_in_path);
    for d in &ds[61..90] {
        assert_eq!((d.desired_replicas, d.reason), (1, Reason::GracePeriod));
    }
    for d in &ds[90..] {
        assert_eq!((d.desired_replicas, d.reason), (0, Reason::ScaledToZero));
        assert!(d.activator_in_path);
    }
    assert_eq!(a.activity(), Activity::Inactive { since: secs(60) });
}

#[test]
fn with_the_router_already_in_front_zero_follows_inactivity_at_once() {
    // Default burst capacity 211: one replica (capacity 100) leaves the
    // router in the path from the start, so the grace period has long passed
    // when the revision goes inactive (Knative's fast path).
    let mut a = autoscaler(|_| {});
    let mut ready = 1;
    let ds = run(&mut a, &mut ready, true, 0..=62, |_| 0.0);
    assert!(ds.iter().all(|d| d.activator_in_path));
    assert_eq!(ds[60].reason, Reason::MarkedInactive);
    assert_eq!(ds[60].desired_replicas, 1);
    assert_eq!(
        (ds[61].desired_replicas, ds[61].reason),
        (0, Reason::ScaledToZero)
    );
}

#[test]
fn traffic_then_silence_goes_to_zero_only_after_the_window_and_grace_period() {
    let mut a = autoscaler(|c| c.target_burst_capacity = 0.0);
    let mut ready = 1;
    let ds = run(&mut a, &mut ready, true, 0..=200, |t| {
        if t < 100 { 50.0 } else { 0.0 }
    });
    // The last request is in the t=99 bucket; the stable window is empty from
    // t=159, when the revision goes inactive; zero 30 s later.
    let first_zero = ds.iter().position(|d| d.desired_replicas == 0);
    assert_eq!(first_zero, Some(189));
    assert!(ds[..189].iter().all(|d| d.desired_replicas == 1));
    assert_eq!(ds[158].reason, Reason::Stable);
    assert_eq!(ds[159].reason, Reason::MarkedInactive);
    assert_eq!(ds[188].reason, Reason::GracePeriod);
}

#[test]
fn pod_retention_keeps_the_last_replica_longer() {
    let mut a = autoscaler(|c| c.scale_to_zero_pod_retention_period = secs(90));
    let mut ready = 1;
    let ds = run(&mut a, &mut ready, true, 0..=160, |_| 0.0);
    assert_eq!(ds[60].reason, Reason::MarkedInactive);
    assert_eq!(ds[61].reason, Reason::PodRetention);
    assert_eq!(ds[149].desired_replicas, 1);
    assert_eq!(
        (ds[150].desired_replicas, ds[150].reason),
        (0, Reason::ScaledToZero)
    );
}

#[test]
fn no_scale_to_zero_with_min_scale_or_when_disabled() {
    let mut a = autoscaler(|c| c.min_scale = 1);
    let mut ready = 1;
    let ds = run(&mut a, &mut ready, true, 0..=600, |_| 0.0);
    assert!(ds.iter().all(|d| d.desired_replicas == 1));
    assert_eq!(ds[600].reason, Reason::MinScale);

    let mut a = autoscaler(|c| c.enable_scale_to_zero = false);
    let mut ready = 1;
    let ds = run(&mut a, &mut ready, true, 0..=600, |_| 0.0);
    assert!(ds.iter().all(|d| d.desired_replicas == 1));
    assert_eq!(ds[600].reason, Reason::ScaleToZeroDisabled);
    assert!(matches!(a.activity(), Activity::Active { .. }));
}

#[test]
fn any_traffic_at_zero_activates_at_least_one_replica() {
    for activation in [1, 3] {
        let mut a = autoscaler(|c| c.activation_scale = activation);
        let mut ready = 1;
        let ds = run(&mut a, &mut ready, true, 0..=100, |_| 0.0);
        assert_eq!(ds[100].desired_replicas, 0);

        // One request in flight, reported by the router buffering it.
        record(&mut a, 101, 1.0);
        let d = a.decide(secs(101), 0);
        assert_eq!(d.desired_replicas, activation);
        assert!(d.activator_in_path);
        assert_eq!(a.activity(), Activity::Activating);
        // Replicas come up: active, and the router steps aside only once
        // there is room for the burst capacity.
        record(&mut a, 102, 0.0);
        let d = a.decide(secs(102), activation);
        assert_eq!(d.desired_replicas, activation);
        assert_eq!(a.activity(), Activity::Active { since: secs(102) });
        assert_eq!(d.activator_in_path, activation < 3);
    }
}

#[test]
fn at_zero_without_samples_nothing_changes_until_one_arrives() {
    let mut a = autoscaler(|_| {});
    let mut ready = 1;
    run(&mut a, &mut ready, true, 0..=70, |_| 0.0);
    // The router reports nothing for ten minutes: no data, scale kept at 0.
    for t in 71..=670 {
        let d = a.decide(secs(t), 0);
        assert_eq!(d.desired_replicas, 0);
    }
    assert_eq!(a.decide(secs(670), 0).reason, Reason::AwaitingMetrics);
    record(&mut a, 671, 5.0);
    let d = a.decide(secs(671), 0);
    assert_eq!((d.desired_replicas, d.reason), (1, Reason::Stable));
    // A partial window: the average is over the one second of data.
    assert_eq!(d.stable_average, 5.0);
}

// ---- windows ----

#[test]
fn window_averages_count_gaps_as_zero_and_forget_old_samples() {
    let mut a = autoscaler(|_| {});
    for t in 0..60 {
        record(&mut a, t, 100.0);
    }
    record(&mut a, 90, 100.0);
    // Stable window 31..=90: 29 seconds at 100 and one more, over 60 s.
    let d = a.decide(secs(90), 2);
    assert_eq!(d.stable_average, 50.0);
    // The panic window went a whole window without data, so it starts
    // over: a partial window of the one second since.
    assert_eq!(d.panic_average, 100.0);
    record(&mut a, 91, 0.0);
    record(&mut a, 92, 0.0);
    assert_eq!(a.decide(secs(92), 2).panic_average, 33.333333);
    for t in 93..=96 {
        record(&mut a, t, 0.0);
    }
    // Full panic window 91..=96: the t=90 sample is gone.
    assert_eq!(a.decide(secs(96), 2).panic_average, 0.0);

    // Without new samples, the average runs over what is left of the
    // window: at t=155 only the t=96 bucket remains, the 59 seconds after it
    // not counted.
    let d = a.decide(secs(155), 2);
    assert_eq!(d.stable_average, 0.0);
    let mut b = autoscaler(|_| {});
    for t in 0..60 {
        record(&mut b, t, 100.0);
    }
    assert_eq!(b.decide(secs(118), 2).stable_average, 100.0);
    assert_eq!(b.decide(secs(119), 2).stable_average, 0.0);
    // A window after the last sample there is no data at all.
    assert_ne!(b.decide(secs(119), 2).reason, Reason::AwaitingMetrics);
    assert_eq!(b.decide(secs(120), 2).reason, Reason::AwaitingMetrics);
}

#[test]
fn samples_in_one_second_add_up() {
    let mut a = autoscaler(|_| {});
    // Three replicas report 50 each in the same second.
    for _ in 0..3 {
        record(&mut a, 0, 50.0);
    }
    let d = a.decide(Duration::from_millis(900), 3);
    assert_eq!(d.stable_average, 150.0);
    assert_eq!(d.desired_replicas, 3);
}

#[test]
fn memory_stays_bounded_over_a_million_seconds() {
    let mut a = autoscaler(|c| c.scale_down_delay = secs(10));
    let mut ready = 1;
    let initial = a.bucket_count();
    assert_eq!(initial, 60 + 6);
    for t in 0..1_000_000u64 {
        // Load that comes and goes.
        record(&mut a, t, (t % 600) as f64);
        if t % 7 == 0 {
            ready = a.decide(secs(t), ready).desired_replicas;
            assert!(a.bucket_count() <= 60 + 6 + 11);
        }
    }
    assert!(a.bucket_count() <= 60 + 6 + 11);
    // A late sample for a bucket that is long gone is dropped.
    record(&mut a, 10, 1e9);
    let d = a.decide(secs(999_999), ready);
    assert!(d.stable_average < 600.0);
}

#[test]
fn excess_burst_capacity_follows_the_target_burst_capacity() {
    let at = |tbc: f64, ready: u32| {
        let mut a = autoscaler(|c| c.target_burst_capacity = tbc);
        for t in 0..6 {
            record(&mut a, t, 50.0);
        }
        a.decide(secs(5), ready)
    };
    // floor(ready × 100 − 211 − 50)
    let d = at(211.0, 3);
    assert_eq!((d.excess_burst_capacity, d.activator_in_path), (39, false));
    let d = at(211.0, 2);
    assert_eq!((d.excess_burst_capacity, d.activator_in_path), (-61, true));
    let d = at(0.0, 1);
    assert_eq!((d.excess_burst_capacity, d.activator_in_path), (0, false));
    let d = at(-1.0, 10);
    assert_eq!((d.excess_burst_capacity, d.activator_in_path), (-1, true));
}

#[test]
fn zero_initial_scale_starts_inactive_and_activates_on_traffic() {
    let mut a = autoscaler(|c| {
        c.initial_scale = 0;
        c.allow_zero_initial_scale = true;
    });
    let d = a.decide(secs(0), 0);
    assert_eq!((d.desired_replicas, d.reason), (0, Reason::AwaitingMetrics));
    assert_eq!(a.activity(), Activity::Inactive { since: secs(0) });
    assert!(d.activator_in_path);
    record(&mut a, 5, 3.0);
    let d = a.decide(secs(5), 0);
    assert_eq!(d.desired_replicas, 1);
    assert_eq!(a.activity(), Activity::Activating);
    record(&mut a, 6, 3.0);
    a.decide(secs(6), 1);
    assert_eq!(a.activity(), Activity::Active { since: secs(6) });
}
