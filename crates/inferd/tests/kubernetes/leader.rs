//! Leader election on the real API server: of two operator processes one
//! leads; killed without releasing the Lease, the other takes over within
//! the lease duration; at no time do both write.
//!
//! "Nothing is written twice" is read from two sources the operator cannot
//! fake: the Kubernetes Events it records carry the writing replica's name
//! (`reportingInstance`, from POD_NAME), so a second writer shows up as
//! Events from the follower; and each pass the
//! controller completes is logged (`reconciled`, at debug), so a follower
//! that reconciles shows it in its own log.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{ISVC, OPERATOR, SYSTEM_NAMESPACE, Scenario, iris, wait_until};

/// client-go's timings, which the operator uses: a follower takes over
/// after seeing the same record for the lease duration; it retries every
/// retry period (jittered).
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The operator's Events on the InferenceService `name`: (reason, note,
/// reporting instance, series count).
fn events(scenario: &Scenario, name: &str) -> Vec<(String, String, String, u64)> {
    scenario
        .list("events.events.k8s.io", &[])
        .iter()
        .filter(|e| e["regarding"]["name"] == name && e["regarding"]["kind"] == "InferenceService")
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["note"].as_str().unwrap_or_default().to_owned(),
                e["reportingInstance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["series"]["count"].as_u64().unwrap_or(1),
            )
        })
        .collect()
}

fn revisions(isvc: &Value) -> Vec<String> {
    isvc["status"]["revisions"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that every operator Event on `name` was written by one of
/// `leaders`. (kube's recorder folds the Events of one reason on one object
/// into a series, so a second writer shows as Events of its own, under its
/// own name, rather than as a count.)
fn assert_written_by(scenario: &Scenario, name: &str, leaders: &[&str]) {
    let events = events(scenario, name);
    assert!(!events.is_empty(), "the operator recorded no Events");
    for (reason, note, instance, _) in &events {
        assert!(
            leaders.contains(&instance.as_str()),
            "an Event ({reason}: {note}) was written by {instance}, not by a leader: {events:#?}"
        );
    }
}

fn reconciled_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("reconciled")).count()
}

fn lease(scenario: &Scenario) -> Value {
    scenario
        .kubectl
        .get_json("lease", OPERATOR, Some(SYSTEM_NAMESPACE))
        .expect("the operator's Lease exists")
}

#[test]
fn one_operator_leads_and_the_standby_takes_over_without_writing_twice() {
    let Some(scenario) = Scenario::start("e2e-leader") else {
        return;
    };
    let mut a = scenario.leading_operator("operator-a", &[]);
    let b = scenario.operator("operator-b", &[]);
    // The standby has started and is waiting on the Lease.
    wait_until(
        "operator-b to watch the Lease",
        Duration::from_secs(30),
        || (!b.log().is_empty()).then_some(()),
    );
    let transitions_before = lease(&scenario)["spec"]["leaseTransitions"]
        .as_u64()
        .unwrap_or(0);

    scenario.apply(&iris("lead", "    minReplicas: 1\n", ""));
    scenario.wait_isvc("lead", "revision -00001 recorded", |s| {
        revisions(s) == ["lead-00001"] && s["status"]["observedGeneration"] == 1
    });
    // A second revision while a leads.
    scenario.apply(&iris(
        "lead",
        "    minReplicas: 1\n    env:\n    - {name: GENERATION, value: \"2\"}\n",
        "",
    ));
    scenario.wait_isvc("lead", "revision -00002 recorded", |s| {
        revisions(s).last().map(String::as_str) == Some("lead-00002")
            && s["status"]["observedGeneration"] == 2
    });
    assert_eq!(scenario.lease_holder().as_deref(), Some("operator-a"));
    assert!(
        reconciled_lines(&a.log()) > 0,
        "the leader reconciled nothing"
    );
    assert_eq!(
        reconciled_lines(&b.log()),
        0,
        "the standby reconciled while another replica led:\n{}",
        b.log()
    );
    assert_written_by(&scenario, "lead", &["operator-a"]);

    // The leader dies without releasing the Lease.
    a.signal("KILL");
    a.wait_exit();
    let killed = Instant::now();
    wait_until(
        "operator-b to take the Lease over",
        LEASE_DURATION + RETRY_PERIOD * 4 + Duration::from_secs(10),
        || (scenario.lease_holder().as_deref() == Some("operator-b")).then_some(()),
    );
    let handover = killed.elapsed();
    eprintln!(
        "leader killed (SIGKILL): operator-b led {handover:.1?} later (lease duration {LEASE_DURATION:?})"
    );
    // A follower must wait out the whole lease duration from when it last
    // saw the record change: never earlier, which would mean two leaders.
    assert!(
        handover + RETRY_PERIOD >= LEASE_DURATION,
        "operator-b took over after {handover:?}, before the lease could have expired"
    );
    let after = lease(&scenario);
    assert_eq!(
        after["spec"]["leaseTransitions"].as_u64().unwrap_or(0),
        transitions_before + 1,
        "{after:#}"
    );

    // The new leader carries on from the recorded revisions: the next is
    // -00003, written once.
    scenario.apply(&iris(
        "lead",
        "    minReplicas: 1\n    env:\n    - {name: GENERATION, value: \"3\"}\n",
        "",
    ));
    let isvc = scenario.wait_isvc("lead", "revision -00003 recorded by operator-b", |s| {
        revisions(s).last().map(String::as_str) == Some("lead-00003")
            && s["status"]["observedGeneration"] == 3
    });
    assert_eq!(
        revisions(&isvc),
        ["lead-00001", "lead-00002", "lead-00003"],
        "{isvc:#}"
    );
    assert!(reconciled_lines(&b.log()) > 0);
    assert_written_by(&scenario, "lead", &["operator-a", "operator-b"]);
    let by_b: Vec<_> = events(&scenario, "lead")
        .into_iter()
        .filter(|(reason, note, ..)| reason == "RevisionCreated" && note.contains("-00003"))
        .collect();
    assert_eq!(by_b.len(), 1, "{by_b:#?}");
    assert_eq!(by_b[0].2, "operator-b");
    assert!(scenario.get(ISVC, "lead").is_some());
}

#[test]
fn a_leader_stopped_by_sigterm_releases_the_lease_at_once() {
    let Some(scenario) = Scenario::start("e2e-release") else {
        return;
    };
    let mut a = scenario.leading_operator("operator-c", &[]);
    let b = scenario.operator("operator-d", &[]);
    wait_until(
        "operator-d to watch the Lease",
        Duration::from_secs(30),
        || (!b.log().is_empty()).then_some(()),
    );
    a.signal("TERM");
    let stopped = Instant::now();
    assert!(a.wait_exit().success(), "{}", a.log());
    assert!(a.log().contains("released the lease"), "{}", a.log());
    wait_until(
        "operator-d to lead after the release",
        LEASE_DURATION + RETRY_PERIOD * 4 + Duration::from_secs(10),
        || (scenario.lease_holder().as_deref() == Some("operator-d")).then_some(()),
    );
    eprintln!(
        "leader stopped (SIGTERM): operator-d led {:.1?} later",
        stopped.elapsed()
    );
}
