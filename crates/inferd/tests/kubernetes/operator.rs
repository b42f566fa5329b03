//! The operator against a real API server, controller-manager, scheduler
//! and kubelet: what it writes for an InferenceService (the revision
//! Deployments and Services, the namespace's router, owner references,
//! status, printer columns, Events), how a canary is promoted and rolled
//! back through real updates, deletion through its finalizer and the
//! garbage collector, who owns `spec.replicas` against `kubectl scale`,
//! the HPA class, PodMonitors once the Prometheus Operator's CRD appears,
//! and a KServe service converted by `inferd convert`.
//!
//! The operator runs as a local process authenticated as its ServiceAccount
//! (the install's RBAC applies), leading the Lease.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{ISVC, Scenario, condition, inferd, iris, repo, wait_until};

/// The operator's field manager and finalizer, as users see them.
const FIELD_MANAGER: &str = "inferd-operator";
const FINALIZER: &str = "serving.inferd.dev/router";
/// The name of each namespace's router objects.
const ROUTER: &str = "inferd-router";
/// The image the operator's objects name.
const IMAGE: &str = "ghcr.io/inferd/inferd:0.1.0";

/// `(revision, percent, tag)` of the service's status traffic, in order.
fn traffic(isvc: &Value) -> Vec<(String, i64, Option<String>)> {
    isvc["status"]["traffic"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["revisionName"].as_str().unwrap_or_default().to_owned(),
                t["percent"].as_i64().unwrap_or(0),
                t["tag"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// The traffic with a share, as `(revision, percent)`.
fn shares(isvc: &Value) -> Vec<(String, i64)> {
    traffic(isvc)
        .into_iter()
        .filter(|(_, p, _)| *p > 0)
        .map(|(r, p, _)| (r, p))
        .collect()
}

fn share(revision: &str, percent: i64) -> (String, i64) {
    (revision.to_owned(), percent)
}

/// Whether the status describes the current spec.
fn observed(isvc: &Value) -> bool {
    isvc["status"]["observedGeneration"] == isvc["metadata"]["generation"]
}

fn ready(isvc: &Value) -> bool {
    observed(isvc) && condition(isvc, "Ready") == Some("True")
}

/// A condition's reason.
fn reason<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["reason"]
        .as_str()
}

/// Asserts that `object` is controlled by `owner` (its only controller
/// reference names the owner's kind, name and uid, blocking its deletion).
fn assert_controlled_by(object: &Value, owner: &Value) {
    let refs = object["metadata"]["ownerReferences"]
        .as_array()
        .unwrap_or_else(|| panic!("no owner references: {}", object["metadata"]));
    let controllers: Vec<&Value> = refs.iter().filter(|r| r["controller"] == true).collect();
    assert_eq!(controllers.len(), 1, "{refs:?}");
    let c = controllers[0];
    assert_eq!(c["uid"], owner["metadata"]["uid"], "{c}");
    assert_eq!(c["kind"], owner["kind"], "{c}");
    assert_eq!(c["name"], owner["metadata"]["name"], "{c}");
    assert_eq!(c["apiVersion"], owner["apiVersion"], "{c}");
    assert_eq!(c["blockOwnerDeletion"], true, "{c}");
}

/// `spec.replicas` of a Deployment, if it exists.
fn replicas(scenario: &Scenario, deployment: &str) -> Option<i64> {
    scenario.get("deployment", deployment)?["spec"]["replicas"].as_i64()
}

/// Waits until Deployment `name` has `spec.replicas == n` (and, for n > 0,
/// that many ready replicas).
fn wait_replicas(scenario: &Scenario, name: &str, n: i64) -> Value {
    wait_until(
        &format!("deployment {name} at {n} replica(s)"),
        Duration::from_secs(90),
        || {
            let d = scenario.get("deployment", name)?;
            let ready = d["status"]["readyReplicas"].as_i64().unwrap_or(0);
            (d["spec"]["replicas"].as_i64() == Some(n) && (n == 0 || ready == n)).then_some(d)
        },
    )
}

/// Waits until `kind/name` no longer exists in the scenario's namespace.
fn wait_gone(scenario: &Scenario, kind: &str, name: &str) {
    wait_until(
        &format!("{kind}/{name} to be deleted"),
        Duration::from_secs(90),
        || scenario.get(kind, name).is_none().then_some(()),
    );
}

/// The Events (events.k8s.io) regarding InferenceService `name`.
fn events(scenario: &Scenario, name: &str) -> Vec<Value> {
    scenario
        .list("events.events.k8s.io", &[])
        .into_iter()
        .filter(|e| e["regarding"]["kind"] == "InferenceService" && e["regarding"]["name"] == name)
        .collect()
}

/// Who owns `spec.replicas` of an object: the managers whose managed
/// fields hold `f:spec.f:replicas`.
fn replicas_owners(object: &Value) -> Vec<String> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| !m["fieldsV1"]["f:spec"]["f:replicas"].is_null())
        .map(|m| {
            format!(
                "{}/{}",
                m["manager"].as_str().unwrap_or_default(),
                m["operation"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Deletes the namespace's InferenceServices while an operator still runs,
/// so that their finalizer is removed and the namespace's deletion at the
/// scenario's end completes instead of waiting for the next operator.
fn delete_services(scenario: &Scenario) {
    scenario.ok(&["delete", ISVC, "--all", "--timeout=60s"]);
}

/// `kubectl get KIND NAME -o json` with its managed fields.
fn get_managed(scenario: &Scenario, kind: &str, name: &str) -> Option<Value> {
    let text = scenario.ok(&[
        "get",
        kind,
        name,
        "-o",
        "json",
        "--show-managed-fields",
        "--ignore-not-found",
    ]);
    (!text.trim().is_empty()).then(|| serde_json::from_str(&text).expect("JSON"))
}

/// `kubectl get inferenceservices NAME EXTRA` as text, as `(header, cell)`
/// pairs. kubectl aligns each cell under its header and prints an empty
/// cell as nothing, so the row is cut at the headers' offsets.
fn printed_columns(scenario: &Scenario, name: &str, extra: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["get", ISVC, name];
    args.extend_from_slice(extra);
    let text = scenario.ok(&args);
    let mut lines = text.lines();
    let header = lines.next().expect("a header");
    let row = lines.next().expect("a row");
    // Where each header word starts (headers hold no spaces).
    let mut starts: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    let names: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(names.len(), starts.len(), "{header}");
    starts.push(usize::MAX);
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let from = starts[i].min(row.len());
            let to = starts[i + 1].min(row.len());
            ((*n).to_owned(), row[from..to].trim().to_owned())
        })
        .collect()
}

fn column<'a>(columns: &'a [(String, String)], name: &str) -> &'a str {
    columns
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no column {name} in {columns:?}"))
}

/// The example as it is, in the scenario's namespace, with the dummy
/// Secret it names (the bucket does not exist: its pods cannot fetch the
/// model and stay in their init container).
#[test]
fn the_example_service_gets_its_revision_router_status_columns_and_events() {
    let Some(scenario) = Scenario::start("e2e-operator-example") else {
        return;
    };
    let _operator = scenario.leading_operator("example", &[]);
    scenario.ok(&[
        "create",
        "secret",
        "generic",
        "s3-credentials",
        "--from-literal=AWS_ACCESS_KEY_ID=none",
        "--from-literal=AWS_SECRET_ACCESS_KEY=none",
        "--from-literal=AWS_REGION=eu-west-1",
    ]);
    let example = std::fs::read_to_string(repo("examples/k8s/iris.yaml")).expect("the example");
    assert!(example.contains("\n  namespace: default\n"));
    let example = example.replace(
        "\n  namespace: default\n",
        &format!("\n  namespace: {}\n", scenario.namespace),
    );
    scenario.apply(&example);

    let isvc = scenario.wait_isvc("iris", "the status of generation 1", |s| {
        observed(s) && s["status"]["latestCreatedRevision"] == "iris-00001"
    });
    let ns = scenario.namespace.as_str();
    assert_eq!(isvc["metadata"]["generation"], 1);
    assert_eq!(
        isvc["metadata"]["finalizers"],
        serde_json::json!([FINALIZER])
    );
    assert_eq!(
        isvc["status"]["url"],
        format!("http://iris.{ns}.svc.cluster.local")
    );
    // Not ready: the model cannot be fetched; the reasons say so.
    assert_eq!(condition(&isvc, "Ready"), Some("False"));
    assert_eq!(reason(&isvc, "Ready"), Some("NotReady"));
    assert_eq!(condition(&isvc, "PredictorReady"), Some("False"));
    assert_eq!(reason(&isvc, "PredictorReady"), Some("RevisionNotReady"));
    assert_eq!(isvc["status"]["latestReadyRevision"], Value::Null);
    assert_eq!(isvc["status"]["modelStatus"]["state"], "Pending");
    assert_eq!(
        traffic(&isvc),
        vec![("iris-00001".to_owned(), 100, Some("latest".to_owned()))]
    );

    // The revision's Deployment.
    let deployment = scenario
        .get("deployment", "iris-00001")
        .expect("the revision's Deployment");
    assert_controlled_by(&deployment, &isvc);
    let labels = &deployment["metadata"]["labels"];
    assert_eq!(labels["serving.inferd.dev/inferenceservice"], "iris");
    assert_eq!(labels["serving.inferd.dev/revision"], "iris-00001");
    assert_eq!(labels["app.kubernetes.io/name"], "inferd");
    assert_eq!(labels["app.kubernetes.io/component"], "predictor");
    assert_eq!(labels["app.kubernetes.io/managed-by"], FIELD_MANAGER);
    // The user's labels reach the pods.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["app"], "iris");
    assert_eq!(pod_labels["serving.inferd.dev/revision"], "iris-00001");
    // minReplicas 0: a new revision starts at one replica all the same.
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "storage-initializer");
    assert_eq!(init["image"], IMAGE);
    assert_eq!(
        init["args"],
        serde_json::json!([
            "fetch",
            "--storage-uri",
            "s3://YOUR-BUCKET/iris/1",
            "--dest",
            "/mnt/models/iris"
        ])
    );
    assert_eq!(init["envFrom"][0]["secretRef"]["name"], "s3-credentials");
    let server = &pod["containers"][0];
    assert_eq!(server["image"], IMAGE);
    assert_eq!(server["args"][0], "serve");
    assert!(
        server["args"]
            .as_array()
            .expect("args")
            .contains(&Value::from("iris=/mnt/models/iris")),
        "{}",
        server["args"]
    );
    assert!(
        server["envFrom"].is_null(),
        "the server sees no credentials"
    );
    assert_eq!(server["resources"]["requests"]["cpu"], "1");
    assert_eq!(server["resources"]["requests"]["memory"], "256Mi");
    assert_eq!(server["resources"]["limits"]["memory"], "256Mi");

    // The revision's headless Service and the service's address, which
    // selects the router pods.
    let revision_service = scenario
        .get("service", "iris-00001")
        .expect("the revision's Service");
    assert_controlled_by(&revision_service, &isvc);
    assert_eq!(revision_service["spec"]["clusterIP"], "None");
    assert_eq!(
        revision_service["spec"]["selector"]["serving.inferd.dev/revision"],
        "iris-00001"
    );
    let service = scenario.get("service", "iris").expect("the Service iris");
    assert_controlled_by(&service, &isvc);
    let router = scenario
        .get("deployment", ROUTER)
        .expect("the namespace's router");
    let router_pod_labels = &router["spec"]["template"]["metadata"]["labels"];
    let selector = service["spec"]["selector"].as_object().expect("a selector");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&router_pod_labels[k], v, "{k} of the router's pods");
    }
    // The router is the namespace's, owned by no single service.
    assert_eq!(
        router["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        FIELD_MANAGER
    );
    assert!(router["metadata"]["ownerReferences"].is_null());
    assert_eq!(
        router["spec"]["template"]["spec"]["containers"][0]["image"],
        IMAGE
    );
    let account = scenario
        .get("serviceaccount", ROUTER)
        .expect("the router's ServiceAccount");
    assert!(account["metadata"]["ownerReferences"].is_null());
    assert_eq!(
        router["spec"]["template"]["spec"]["serviceAccountName"],
        ROUTER
    );
    let binding = scenario
        .get("rolebinding", ROUTER)
        .expect("the router's RoleBinding");
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], ROUTER);
    assert_eq!(binding["subjects"][0]["namespace"], ns);
    let router_service = scenario
        .get("service", ROUTER)
        .expect("the router's Service");
    assert!(router_service["metadata"]["ownerReferences"].is_null());

    // The printer columns, as `kubectl get` prints them.
    let columns = printed_columns(&scenario, "iris", &[]);
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["NAME", "URL", "READY", "PREV", "LATEST", "AGE"]);
    assert_eq!(column(&columns, "NAME"), "iris");
    assert_eq!(
        column(&columns, "URL"),
        format!("http://iris.{ns}.svc.cluster.local")
    );
    assert_eq!(column(&columns, "READY"), "False");
    assert_eq!(column(&columns, "PREV"), "");
    assert_eq!(column(&columns, "LATEST"), "100");
    let wide = printed_columns(&scenario, "iris", &["-o", "wide"]);
    assert_eq!(column(&wide, "LATESTCREATEDREVISION"), "iris-00001");
    assert_eq!(column(&wide, "LATESTREADYREVISION"), "");

    // The Events the operator recorded.
    let events = wait_until(
        "the operator's Events on the service",
        Duration::from_secs(30),
        || {
            let events = events(&scenario, "iris");
            events
                .iter()
                .any(|e| e["reason"] == "TrafficShifted")
                .then_some(events)
        },
    );
    let created = events
        .iter()
        .find(|e| e["reason"] == "RevisionCreated")
        .unwrap_or_else(|| panic!("no RevisionCreated event: {events:?}"));
    assert_eq!(created["type"], "Normal");
    assert_eq!(created["reportingController"], FIELD_MANAGER);
    assert_eq!(created["reportingInstance"], "example");
    assert_eq!(created["action"], "Reconcile");
    assert_eq!(created["regarding"]["uid"], isvc["metadata"]["uid"]);
    assert_eq!(created["note"], "iris-00001 serves s3://YOUR-BUCKET/iris/1");
    let shifted = events
        .iter()
        .find(|e| e["reason"] == "TrafficShifted")
        .expect("TrafficShifted");
    assert_eq!(shifted["note"], "iris-00001 100%");
    assert!(!events.iter().any(|e| e["reason"] == "Ready"), "{events:?}");
    delete_services(&scenario);
}

/// A canary, its promotion and a rollback through real updates, with pods
/// that become ready; each step waits on the status of the new generation.
#[test]
fn a_canary_is_promoted_then_rolled_back_on_the_real_server() {
    let Some(scenario) = Scenario::start("e2e-operator-canary") else {
        return;
    };
    let operator = scenario.leading_operator("canary", &[]);
    let started = Instant::now();
    scenario.apply(&iris("iris", "", ""));
    let v1 = scenario.wait_isvc("iris", "v1 ready", ready);
    eprintln!(
        "a new InferenceService ready (apply to Ready=True, first revision, router included) in {:.1?}",
        started.elapsed()
    );
    assert_eq!(shares(&v1), vec![share("iris-00001", 100)]);
    assert_eq!(v1["status"]["latestReadyRevision"], "iris-00001");
    assert_eq!(v1["status"]["modelStatus"]["state"], "Loaded");
    wait_replicas(&scenario, "iris-00001", 1);

    // v2: a new template (more memory) with 20% of the traffic.
    let started = Instant::now();
    let v2 = iris("iris", "    canaryTrafficPercent: 20\n", "")
        .replace("memory: 128Mi", "memory: 160Mi");
    scenario.apply(&v2);
    let canary = scenario.wait_isvc("iris", "the canary at 20%", |s| {
        ready(s) && shares(s).len() == 2
    });
    eprintln!(
        "a canary revision taking its share (apply to 80/20) in {:.1?}",
        started.elapsed()
    );
    assert_eq!(canary["metadata"]["generation"], 2);
    assert_eq!(
        traffic(&canary),
        vec![
            ("iris-00001".to_owned(), 80, Some("prev".to_owned())),
            ("iris-00002".to_owned(), 20, Some("latest".to_owned())),
        ]
    );
    assert_eq!(canary["status"]["latestCreatedRevision"], "iris-00002");
    assert_eq!(canary["status"]["latestReadyRevision"], "iris-00002");
    let columns = printed_columns(&scenario, "iris", &[]);
    assert_eq!(column(&columns, "READY"), "True");
    assert_eq!(column(&columns, "PREV"), "80");
    assert_eq!(column(&columns, "LATEST"), "20");
    wait_replicas(&scenario, "iris-00001", 1);
    let d2 = wait_replicas(&scenario, "iris-00002", 1);
    assert_eq!(
        d2["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"],
        "160Mi"
    );

    // Promote: the field removed, all traffic on v2; v1 retires to zero.
    let promoted = iris("iris", "", "").replace("memory: 128Mi", "memory: 160Mi");
    scenario.apply(&promoted);
    let promoted = scenario.wait_isvc("iris", "v2 promoted", |s| {
        ready(s) && shares(s) == vec![share("iris-00002", 100)]
    });
    assert_eq!(promoted["metadata"]["generation"], 3);
    assert_eq!(promoted["status"]["latestCreatedRevision"], "iris-00002");
    wait_replicas(&scenario, "iris-00001", 0);
    wait_replicas(&scenario, "iris-00002", 1);

    // Roll back: canaryTrafficPercent 0 sends everything to the previous
    // rolled-out revision, v1, which scales up again.
    let rollback =
        iris("iris", "    canaryTrafficPercent: 0\n", "").replace("memory: 128Mi", "memory: 160Mi");
    scenario.apply(&rollback);
    let rolled_back = scenario.wait_isvc("iris", "rolled back to v1", |s| {
        ready(s) && shares(s) == vec![share("iris-00001", 100)]
    });
    assert_eq!(rolled_back["metadata"]["generation"], 4);
    assert_eq!(
        rolled_back["status"]["latestCreatedRevision"], "iris-00002",
        "a rollback makes no new revision"
    );
    wait_replicas(&scenario, "iris-00001", 1);
    assert_eq!(
        traffic(&rolled_back),
        vec![
            ("iris-00001".to_owned(), 100, Some("prev".to_owned())),
            ("iris-00002".to_owned(), 0, Some("latest".to_owned())),
        ]
    );
    // v2 is still the latest revision, at 0% but tagged: it is not
    // retired, and keeps its minimum of one replica.
    wait_replicas(&scenario, "iris-00002", 1);

    // It stays there: a pass that a metadata change causes, and the passes
    // of a new operator process (which starts from the stored status
    // alone), keep all traffic on v1.
    let before = passes(&operator, &scenario.namespace);
    scenario.ok(&["annotate", ISVC, "iris", "example.com/touched=1"]);
    wait_until(
        "a pass after the annotation",
        Duration::from_secs(60),
        || (passes(&operator, &scenario.namespace) > before).then_some(()),
    );
    drop(operator);
    let operator = scenario.leading_operator("canary-2", &[]);
    wait_until(
        "a pass of the new operator",
        Duration::from_secs(60),
        || (passes(&operator, &scenario.namespace) > 0).then_some(()),
    );
    let now = scenario.get(ISVC, "iris").expect("the service");
    assert_eq!(
        shares(&now),
        vec![share("iris-00001", 100)],
        "{}",
        now["status"]
    );
    assert_eq!(now["status"]["observedGeneration"], 4);
    assert!(ready(&now));
    assert_eq!(replicas(&scenario, "iris-00001"), Some(1));
    delete_services(&scenario);
}

/// How many passes of the services of `namespace` the operator finished
/// (its debug log's `reconciled` lines).
fn passes(operator: &crate::Process, namespace: &str) -> usize {
    let suffix = format!(".{namespace}");
    operator
        .log()
        .lines()
        .filter(|l| l.contains(" reconciled service=") && l.trim_end().ends_with(&suffix))
        .count()
}

/// Deletion: the operator's finalizer deletes the namespace's router with
/// its last service and is removed; the garbage collector deletes what the
/// service owned. With no operator running, a deleted service waits.
#[test]
fn a_deleted_service_is_cleaned_up_by_the_finalizer_and_the_garbage_collector() {
    let Some(scenario) = Scenario::start("e2e-operator-delete") else {
        return;
    };
    let operator = scenario.leading_operator("delete-1", &[]);
    scenario.apply(&iris("iris", "", ""));
    scenario.wait_isvc("iris", "ready", ready);
    for (kind, name) in [
        ("deployment", "iris-00001"),
        ("service", "iris-00001"),
        ("service", "iris"),
        ("deployment", ROUTER),
        ("service", ROUTER),
        ("serviceaccount", ROUTER),
        ("rolebinding", ROUTER),
    ] {
        assert!(scenario.get(kind, name).is_some(), "{kind}/{name}");
    }
    scenario.ok(&["delete", ISVC, "iris", "--wait=false"]);
    wait_gone(&scenario, ISVC, "iris");
    // The router went with the namespace's last service (the finalizer's
    // cleanup); the revision's objects with their owner (the controller-
    // manager's garbage collector).
    for (kind, name) in [
        ("deployment", ROUTER),
        ("service", ROUTER),
        ("serviceaccount", ROUTER),
        ("rolebinding", ROUTER),
        ("deployment", "iris-00001"),
        ("service", "iris-00001"),
        ("service", "iris"),
    ] {
        wait_gone(&scenario, kind, name);
    }

    // With the operator stopped, a deleted service stays until one runs.
    scenario.apply(&iris("other", "", ""));
    scenario.wait_isvc("other", "its finalizer and status", |s| {
        observed(s) && s["metadata"]["finalizers"] == serde_json::json!([FINALIZER])
    });
    wait_until(
        "the revision Deployment other-00001",
        Duration::from_secs(30),
        || scenario.get("deployment", "other-00001"),
    );
    drop(operator);
    wait_until("the Lease released", Duration::from_secs(30), || {
        scenario.lease_holder().is_none().then_some(())
    });
    scenario.ok(&["delete", ISVC, "other", "--wait=false"]);
    let waiting = scenario.get(ISVC, "other").expect("still there");
    assert!(waiting["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        waiting["metadata"]["finalizers"],
        serde_json::json!([FINALIZER])
    );
    // Its objects wait with it: the garbage collector deletes dependents
    // only once their owner is gone.
    assert!(scenario.get("deployment", "other-00001").is_some());
    assert!(scenario.get("deployment", ROUTER).is_some());
    let _operator = scenario.leading_operator("delete-2", &[]);
    wait_gone(&scenario, ISVC, "other");
    wait_gone(&scenario, "deployment", ROUTER);
    wait_gone(&scenario, "deployment", "other-00001");
}

/// `kubectl scale` against the operator's server-side apply.
///
/// The operator applies every object with field manager `inferd-operator`,
/// forced, and watches the Deployments it owns. With the KPA class (the
/// default) the operator's autoscaler decides a revision's replicas and the
/// operator owns `spec.replicas` as Knative's autoscaler does: a user's
/// `kubectl scale` is undone by the next pass (the Deployment's change
/// triggers one) and the replicas return to the autoscaler's decision. To
/// pin the replicas, a user sets `minReplicas`/`maxReplicas` on the service.
#[test]
fn kubectl_scale_of_a_kpa_revision_returns_to_the_autoscalers_replicas() {
    let Some(scenario) = Scenario::start("e2e-operator-scale") else {
        return;
    };
    let operator = scenario.leading_operator("scale", &[]);
    scenario.apply(&iris("iris", "    minReplicas: 1\n", ""));
    scenario.wait_isvc("iris", "ready", ready);
    wait_replicas(&scenario, "iris-00001", 1);
    // The autoscaler has read the router and decided for the revision.
    wait_until(
        "the autoscaler's decision for iris-00001",
        Duration::from_secs(60),
        || {
            let log = operator.log();
            log.lines()
                .any(|l| l.contains("autoscaler decision") && l.contains("iris-00001"))
                .then_some(())
        },
    );
    let before = get_managed(&scenario, "deployment", "iris-00001").expect("deployment");
    assert_eq!(replicas_owners(&before), [format!("{FIELD_MANAGER}/Apply")]);
    let generation_before = before["metadata"]["generation"]
        .as_i64()
        .expect("generation");

    scenario.ok(&["scale", "deployment", "iris-00001", "--replicas=3"]);
    let started = Instant::now();
    let after = wait_until(
        "the replicas back at the autoscaler's 1",
        Duration::from_secs(60),
        || {
            let d = get_managed(&scenario, "deployment", "iris-00001")?;
            // The scale and the operator's apply each bump the generation.
            let generation = d["metadata"]["generation"].as_i64().unwrap_or(0);
            (d["spec"]["replicas"] == 1 && generation >= generation_before + 2).then_some(d)
        },
    );
    eprintln!(
        "kubectl scale undone by the operator in {:.1?}",
        started.elapsed()
    );
    assert_eq!(
        replicas_owners(&after),
        [format!("{FIELD_MANAGER}/Apply")],
        "{}",
        after["metadata"]["managedFields"]
    );
    wait_replicas(&scenario, "iris-00001", 1);
    let isvc = scenario.get(ISVC, "iris").expect("the service");
    assert!(ready(&isvc), "{}", isvc["status"]);
    delete_services(&scenario);
}

/// The HPA class: the operator leaves `spec.replicas` out of its apply (it
/// gives the field up), so the HorizontalPodAutoscaler owns it: a user's
/// `kubectl scale` beyond `maxReplicas` is brought back to the bound by the
/// HPA (the cluster has no metrics server, so the HPA computes no other
/// count), and the operator never writes the field.
#[test]
fn the_hpa_class_gets_a_horizontal_pod_autoscaler_which_owns_the_replicas() {
    let Some(scenario) = Scenario::start("e2e-operator-hpa") else {
        return;
    };
    let _operator = scenario.leading_operator("hpa", &[]);
    let hpa_class =
        "    autoscalerClass: hpa\n    minReplicas: 1\n    maxReplicas: 2\n    scaleTarget: 60\n";
    scenario.apply(&iris("iris", hpa_class, ""));
    let isvc = scenario.wait_isvc("iris", "observed", observed);
    let hpa = wait_until(
        "the HorizontalPodAutoscaler iris-00001",
        Duration::from_secs(60),
        || scenario.get("horizontalpodautoscalers.autoscaling", "iris-00001"),
    );
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_controlled_by(&hpa, &isvc);
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-00001"})
    );
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(hpa["spec"]["maxReplicas"], 2);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    scenario.wait_isvc("iris", "ready", ready);
    let deployment = get_managed(&scenario, "deployment", "iris-00001").expect("deployment");
    assert!(
        !replicas_owners(&deployment)
            .iter()
            .any(|m| m.starts_with(FIELD_MANAGER)),
        "{}",
        deployment["metadata"]["managedFields"]
    );

    // Beyond the HPA's maximum: the HPA brings it back to 2.
    scenario.ok(&["scale", "deployment", "iris-00001", "--replicas=4"]);
    let started = Instant::now();
    let back = wait_until(
        "the HPA to bring the replicas to its maximum",
        Duration::from_secs(90),
        || {
            let d = get_managed(&scenario, "deployment", "iris-00001")?;
            (d["spec"]["replicas"] == 2).then_some(d)
        },
    );
    eprintln!(
        "kubectl scale beyond the HPA's maximum undone by the HPA in {:.1?}",
        started.elapsed()
    );
    assert!(
        !replicas_owners(&back)
            .iter()
            .any(|m| m.starts_with(FIELD_MANAGER)),
        "{}",
        back["metadata"]["managedFields"]
    );

    // Back to the KPA: the HPA goes, and the operator owns the replicas.
    let kpa = "    minReplicas: 1\n    maxReplicas: 2\n    scaleTarget: 60\n";
    scenario.apply(&iris("iris", kpa, ""));
    scenario.wait_isvc("iris", "the KPA class observed", observed);
    wait_gone(
        &scenario,
        "horizontalpodautoscalers.autoscaling",
        "iris-00001",
    );
    let deployment = wait_until(
        "the operator to own the replicas again",
        Duration::from_secs(60),
        || {
            let d = get_managed(&scenario, "deployment", "iris-00001")?;
            replicas_owners(&d)
                .contains(&format!("{FIELD_MANAGER}/Apply"))
                .then_some(d)
        },
    );
    assert!(deployment["spec"]["replicas"].as_i64().is_some());
    delete_services(&scenario);
}

/// The stand-in for the Prometheus Operator's PodMonitor CRD, cluster-wide;
/// deleted when dropped.
struct PodMonitorCrd(crate::Kubectl);

const POD_MONITOR_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: podmonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: podmonitors, singular: podmonitor, kind: PodMonitor, listKind: PodMonitorList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
";

impl Drop for PodMonitorCrd {
    fn drop(&mut self) {
        let _ = self.0.run(
            &[
                "delete",
                "crd",
                "podmonitors.monitoring.coreos.com",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// PodMonitors only where the Prometheus Operator's CRD is served. The
/// operator looks for it at start and every five minutes; the test restarts
/// the operator rather than wait.
#[test]
fn pod_monitors_appear_once_the_prometheus_operator_crd_is_installed() {
    let Some(scenario) = Scenario::start("e2e-operator-monitors") else {
        return;
    };
    let operator = scenario.leading_operator("monitors-1", &[]);
    scenario.apply(&iris("iris", "", ""));
    scenario.wait_isvc("iris", "ready without the Prometheus Operator", ready);
    let out = scenario
        .kubectl
        .run(&["get", "podmonitors", "-n", &scenario.namespace], None);
    assert!(!out.status.success(), "no PodMonitor kind yet");
    // Its passes of this namespace's service did not fail for the lack of
    // the kind (other namespaces' leftovers may be reconciled too).
    let failed = format!("reconcile failed service={}/", scenario.namespace);
    assert!(!operator.log().contains(&failed), "{}", operator.log());

    let kubectl = scenario.cluster().kubectl();
    let crd = PodMonitorCrd(kubectl.clone());
    let out = kubectl.apply(POD_MONITOR_CRD, "e2e", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    kubectl.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/podmonitors.monitoring.coreos.com",
        "--timeout=60s",
    ]);
    drop(operator);
    let _operator = scenario.leading_operator("monitors-2", &[]);
    let monitors = wait_until(
        "the namespace's PodMonitors",
        Duration::from_secs(60),
        || {
            let items = scenario.list(
                "podmonitors.monitoring.coreos.com",
                &["--show-managed-fields"],
            );
            (items.len() == 2).then_some(items)
        },
    );
    let mut names: Vec<&str> = monitors
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap_or_default())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["inferd-predictor", "inferd-router"]);
    for m in &monitors {
        assert_eq!(m["spec"]["podMetricsEndpoints"][0]["port"], "http", "{m}");
        assert_eq!(
            m["spec"]["podMetricsEndpoints"][0]["path"], "/metrics",
            "{m}"
        );
        assert!(
            m["metadata"]["managedFields"]
                .as_array()
                .expect("managed fields")
                .iter()
                .any(|f| f["manager"] == FIELD_MANAGER),
            "{m}"
        );
    }
    delete_services(&scenario);
    drop(crd);
}

/// A KServe InferenceService through `inferd convert`, applied server-side
/// without warnings, and taken to Ready.
#[test]
fn a_converted_kserve_service_is_accepted_and_becomes_ready() {
    let Some(scenario) = Scenario::start("e2e-operator-convert") else {
        return;
    };
    let _operator = scenario.leading_operator("convert", &[]);
    let out = inferd()
        .args(["convert", "-f"])
        .arg(repo("examples/kserve-iris.yaml"))
        .output()
        .expect("inferd convert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let converted = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        converted.contains("apiVersion: serving.inferd.dev/v1alpha1"),
        "{converted}"
    );
    // The example's storageUri is relative to its file; in the cluster the
    // model is in the image at /models/iris.
    assert!(
        converted.contains("storageUri: file://models/iris"),
        "{converted}"
    );
    let converted = converted.replace("file://models/iris", "file:///models/iris");
    scenario.apply(&converted);
    let started = Instant::now();
    let isvc = scenario.wait_isvc("iris", "ready", ready);
    eprintln!("the converted service ready in {:.1?}", started.elapsed());
    assert_eq!(shares(&isvc), vec![share("iris-00001", 100)]);
    let deployment = scenario
        .get("deployment", "iris-00001")
        .expect("deployment");
    let server = &deployment["spec"]["template"]["spec"]["containers"][0];
    // KServe's limits become inferd's resources.
    assert_eq!(server["resources"]["requests"]["cpu"], "1");
    assert_eq!(server["resources"]["requests"]["memory"], "256Mi");
    delete_services(&scenario);
}
