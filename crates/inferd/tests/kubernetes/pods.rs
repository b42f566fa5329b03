//! Pods that run: revision pods, the namespace's router pod and the
//! operator on the node, with requests sent where a client sends them, to
//! the ClusterIP of the Service named after the InferenceService (the
//! router), which kube-proxy forwards to the router pod, which forwards to
//! a revision pod by its IP.
//!
//! Which revision answered is the router's `x-inferd-revision` response
//! header. The load tests send one request at a time, on a new connection
//! each (as many short-lived clients would), and count every answer that is
//! not the iris model's right answer as a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{
    ISVC, Kubectl, OPERATOR, SYSTEM_NAMESPACE, Scenario, condition, iris, repo, wait_until,
};

#[path = "../../../../tests/support/http.rs"]
mod http;

/// The label the operator puts on a revision's Deployment and pods.
const REVISION_LABEL: &str = "serving.inferd.dev/revision";
/// The label of the operator's own pods (the install's Deployment).
const OPERATOR_PODS: &str = "app.kubernetes.io/name=inferd-operator";
/// The iris example's input (two rows) and the outputs the model gives.
const INPUT: &str = "examples/models/iris/input.json";
const EXPECTED: &str = "examples/models/iris/expected.json";
/// How long one request may take, a scale from zero included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

fn input() -> String {
    std::fs::read_to_string(repo(INPUT)).expect("the iris input")
}

/// The expected labels and probabilities of the input's rows (the first
/// rows of `expected.json`).
fn expected() -> &'static (Vec<i64>, Vec<f64>) {
    static EXPECTED_ROWS: OnceLock<(Vec<i64>, Vec<f64>)> = OnceLock::new();
    EXPECTED_ROWS.get_or_init(read_expected)
}

fn read_expected() -> (Vec<i64>, Vec<f64>) {
    let input: Value = serde_json::from_str(&input()).expect("JSON");
    let rows = input["inputs"][0]["shape"][0].as_u64().expect("rows") as usize;
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(repo(EXPECTED)).expect("expected"))
            .expect("JSON");
    let output = |name: &str| -> Vec<Value> {
        expected["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .find(|o| o["name"] == name)
            .expect(name)["data"]
            .as_array()
            .expect("data")
            .clone()
    };
    let labels = output("label")[..rows]
        .iter()
        .map(|v| v.as_i64().expect("label"))
        .collect();
    let probabilities = output("probabilities")[..rows * 3]
        .iter()
        .map(|v| v.as_f64().expect("probability"))
        .collect();
    (labels, probabilities)
}

/// What is wrong with a V2 answer of model `model` to [`INPUT`], if
/// anything.
fn check_v2(got: &Value, model: &str) -> Result<(), String> {
    let (labels, probabilities) = expected();
    let rows = labels.len();
    if got["model_name"] != model {
        return Err(format!("model_name is not {model}: {got}"));
    }
    let outputs = got["outputs"]
        .as_array()
        .ok_or(format!("no outputs: {got}"))?;
    let output = |name: &str| {
        outputs
            .iter()
            .find(|o| o["name"] == name)
            .ok_or(format!("no output {name}: {got}"))
    };
    let label = output("label")?;
    let probs = output("probabilities")?;
    let shape = |o: &Value| serde_json::from_value::<Vec<usize>>(o["shape"].clone()).ok();
    if label["datatype"] != "INT64" || shape(label) != Some(vec![rows]) {
        return Err(format!("label is not INT64 [{rows}]: {label}"));
    }
    if probs["datatype"] != "FP32" || shape(probs) != Some(vec![rows, 3]) {
        return Err(format!("probabilities are not FP32 [{rows}, 3]: {probs}"));
    }
    let got_labels: Option<Vec<i64>> = label["data"]
        .as_array()
        .and_then(|d| d.iter().map(Value::as_i64).collect());
    if got_labels.as_ref() != Some(labels) {
        return Err(format!("labels {:?}, expected {labels:?}", label["data"]));
    }
    let got_probs: Option<Vec<f64>> = probs["data"]
        .as_array()
        .and_then(|d| d.iter().map(Value::as_f64).collect());
    let close = got_probs.as_ref().is_some_and(|g| {
        g.len() == probabilities.len()
            && g.iter()
                .zip(probabilities)
                .all(|(g, e)| (g - e).abs() <= 1e-5)
    });
    if !close {
        return Err(format!(
            "probabilities {:?}, expected {probabilities:?}",
            probs["data"]
        ));
    }
    Ok(())
}

/// `POST /v2/models/MODEL/infer` with [`INPUT`]: the revision that
/// answered when the answer is right, what went wrong otherwise.
fn infer(addr: SocketAddr, model: &str, body: &str) -> Result<String, String> {
    let reply = http::try_request(
        addr,
        "POST",
        &format!("/v2/models/{model}/infer"),
        body.as_bytes(),
        REQUEST_TIMEOUT,
    )?;
    if reply.status != 200 {
        return Err(format!("status {}: {}", reply.status, reply.text()));
    }
    let got: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("not JSON ({e}): {}", reply.text()))?;
    check_v2(&got, model)?;
    reply
        .header("x-inferd-revision")
        .map(str::to_owned)
        .ok_or_else(|| "no x-inferd-revision header".to_owned())
}

/// The address of the router for service `name`: the ClusterIP of the
/// Service named after it, its `http` port.
fn router_address(scenario: &Scenario, name: &str) -> SocketAddr {
    let service = wait_until(
        &format!("the Service {name} to have a ClusterIP"),
        Duration::from_secs(60),
        || {
            let service = scenario.get("service", name)?;
            service["spec"]["clusterIP"]
                .as_str()?
                .parse::<Ipv4Addr>()
                .ok()
                .map(|_| service)
        },
    );
    assert_eq!(service["spec"]["type"], "ClusterIP", "{service}");
    let ip: Ipv4Addr = service["spec"]["clusterIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .expect("a ClusterIP");
    let port = service["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == "http"))
        .and_then(|p| p["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no http port on the Service {name}: {service}"));
    SocketAddr::from((ip, port))
}

/// Applies `yaml` (InferenceService `name`) and waits until it is Ready
/// and its router answers an inference; the time each took.
fn serve(scenario: &Scenario, name: &str, yaml: &str) -> (SocketAddr, Duration, Duration) {
    let started = Instant::now();
    scenario.apply(yaml);
    scenario.wait_isvc(name, "Ready", |s| condition(s, "Ready") == Some("True"));
    let ready = started.elapsed();
    let addr = router_address(scenario, name);
    let body = input();
    let mut last = String::new();
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            &format!("the router of {name} to answer"),
            Duration::from_secs(60),
            || match infer(addr, name, &body) {
                Ok(revision) => Some(revision),
                Err(e) => {
                    last = e;
                    None
                }
            },
        )
    }));
    if found.is_err() {
        panic!("the router of {name} at {addr} did not answer right: {last}");
    }
    (addr, ready, started.elapsed())
}

/// The pods of revision `revision`, terminating ones included.
fn revision_pods(scenario: &Scenario, revision: &str) -> Vec<Value> {
    scenario.list("pods", &["-l", &format!("{REVISION_LABEL}={revision}")])
}

/// The Deployment of revision `revision`.
fn revision_deployment(scenario: &Scenario, revision: &str) -> Value {
    let mut deployments = scenario.list(
        "deployments",
        &["-l", &format!("{REVISION_LABEL}={revision}")],
    );
    assert_eq!(deployments.len(), 1, "one Deployment for {revision}");
    deployments.remove(0)
}

/// `status.traffic` as (revision, percent) pairs.
fn traffic(isvc: &Value) -> Vec<(String, u64)> {
    isvc["status"]["traffic"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| {
                    (
                        t["revisionName"].as_str().unwrap_or_default().to_owned(),
                        t["percent"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pod_name(pod: &Value) -> String {
    pod["metadata"]["name"].as_str().expect("name").to_owned()
}

/// What a load generator saw.
#[derive(Debug, Default)]
struct Tally {
    /// Requests sent, answered or not.
    sent: usize,
    /// Every failure: a status other than 200, a wrong answer, a broken
    /// connection.
    failures: Vec<String>,
    /// For each right answer: when its request was sent and the revision
    /// that answered.
    answers: Vec<(Instant, String)>,
}

impl Tally {
    /// Asserts that no request failed, listing them if some did.
    fn assert_none_failed(&self, during: &str) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed {during}: {:#?}",
            self.failures.len(),
            self.sent,
            self.failures
        );
    }

    fn by_revision(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for (_, revision) in &self.answers {
            *counts.entry(revision.as_str()).or_default() += 1;
        }
        counts
    }
}

/// A thread sending inferences one after the other through the router
/// until stopped (or for five minutes at most), about 40 a second so that
/// two cores have room for what the test does meanwhile.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Tally>>,
}

impl Load {
    const PACE: Duration = Duration::from_millis(25);
    const LONGEST: Duration = Duration::from_secs(300);

    fn start(addr: SocketAddr, model: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (model, body) = (model.to_owned(), input());
        let thread = {
            let (stop, answered, failed) = (stop.clone(), answered.clone(), failed.clone());
            thread::spawn(move || {
                let started = Instant::now();
                let mut tally = Tally::default();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Load::LONGEST {
                    let sent = Instant::now();
                    tally.sent += 1;
                    match infer(addr, &model, &body) {
                        Ok(revision) => {
                            tally.answers.push((sent, revision));
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            tally.failures.push(e);
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    thread::sleep(Load::PACE);
                }
                tally
            })
        };
        Load {
            stop,
            answered,
            failed,
            thread: Some(thread),
        }
    }

    /// Waits until `more` requests have been answered right from now on.
    fn wait_answers(&self, more: usize) {
        let target = self.answered.load(Ordering::SeqCst) + more;
        wait_until(
            &format!("{more} more right answers under load"),
            Duration::from_secs(120),
            || (self.answered.load(Ordering::SeqCst) >= target).then_some(()),
        );
    }

    fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("the load thread")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn requests_through_the_routers_cluster_ip_reach_a_revision_pod() {
    let Some(scenario) = Scenario::start("e2e-router") else {
        return;
    };
    let _operator = scenario.leading_operator("e2e-router-operator", &[]);
    let (addr, ready, answering) =
        serve(&scenario, "iris", &iris("iris", "    minReplicas: 1\n", ""));
    eprintln!(
        "a new InferenceService: Ready after {ready:.1?}, first right answer through its ClusterIP after {answering:.1?}"
    );

    let isvc = scenario.get(ISVC, "iris").expect("the InferenceService");
    let status = &isvc["status"];
    assert_eq!(status["latestReadyRevision"], "iris-00001", "{status}");
    assert_eq!(traffic(&isvc), [("iris-00001".to_owned(), 100)], "{status}");
    let pods = revision_pods(&scenario, "iris-00001");
    assert_eq!(pods.len(), 1, "minReplicas 1: one pod");
    assert_eq!(condition(&pods[0], "Ready"), Some("True"));

    // The Service named after the InferenceService selects the router
    // pods, not the revision's.
    let routers = router_pods(&scenario, "iris");
    assert_eq!(routers.len(), 1, "one router pod");
    assert!(
        pod_name(&routers[0]).starts_with("inferd-router-"),
        "{}",
        pod_name(&routers[0])
    );

    // V2: the model's answer, from the one revision.
    let reply = http::post(addr, "/v2/models/iris/infer", &input());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-inferd-revision"), Some("iris-00001"));
    check_v2(&reply.json(), "iris").unwrap_or_else(|e| panic!("{e}"));

    let ready = http::get(addr, "/v2/models/iris/ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.header("x-inferd-revision"), Some("iris-00001"));

    let metadata = http::get(addr, "/v2/models/iris");
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    let metadata = metadata.json();
    assert_eq!(metadata["name"], "iris", "{metadata}");
    assert_eq!(metadata["inputs"][0]["name"], "input", "{metadata}");
    assert_eq!(metadata["inputs"][0]["datatype"], "FP32", "{metadata}");

    // KServe V1 on the same route.
    let reply = http::post(
        addr,
        "/v1/models/iris:predict",
        r#"{"instances": [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]}"#,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-inferd-revision"), Some("iris-00001"));
    let got = reply.json();
    let predictions = got["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 2, "{got}");
    assert_eq!(predictions[0]["label"], 0, "{got}");
    assert_eq!(predictions[1]["label"], 2, "{got}");
    for p in predictions {
        let probabilities = p["probabilities"].as_array().expect("probabilities");
        assert_eq!(probabilities.len(), 3, "{got}");
        let sum: f64 = probabilities.iter().filter_map(Value::as_f64).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{got}");
    }

    // A model the namespace does not serve is the router's 404.
    let unknown = http::post(addr, "/v2/models/nope/infer", &input());
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(unknown.header("x-inferd-revision"), None);
}

#[test]
fn a_service_at_zero_replicas_answers_its_first_request() {
    let Some(scenario) = Scenario::start("e2e-scale-to-zero") else {
        return;
    };
    let _operator = scenario.leading_operator("e2e-scale-to-zero-operator", &[]);
    // The operator's autoscaler (the KPA of inferd-control, ticked every
    // 2 s) removes a revision's last replica once the stable window has
    // seen no request and the router has been in front of it for the
    // scale-to-zero grace period. Both at the shortest the autoscaler
    // accepts (Knative's minimums): 6 s each.
    let yaml = iris(
        "iris",
        "    minReplicas: 0\n",
        "    autoscaling.knative.dev/window: 6s\n    autoscaling.knative.dev/scale-to-zero-grace-period: 6s\n",
    );
    let (addr, _, answering) = serve(&scenario, "iris", &yaml);
    eprintln!("minReplicas 0: first right answer after {answering:.1?}");
    let isvc = scenario.get(ISVC, "iris").expect("the InferenceService");
    let ready_since = ready_transition(&isvc);

    // Idle, it goes to zero: no replicas wanted, no pods left.
    let idle = Instant::now();
    wait_until(
        "iris-00001 to scale to zero",
        Duration::from_secs(120),
        || {
            let deployment = revision_deployment(&scenario, "iris-00001");
            (deployment["spec"]["replicas"] == 0
                && revision_pods(&scenario, "iris-00001").is_empty())
            .then_some(())
        },
    );
    eprintln!("idle to zero replicas and no pods: {:.1?}", idle.elapsed());
    // Ready throughout, as in Knative: a revision that served is ready at
    // zero, the router holding its requests.
    let isvc = scenario.get(ISVC, "iris").expect("the InferenceService");
    assert_eq!(
        condition(&isvc, "Ready"),
        Some("True"),
        "{}",
        isvc["status"]
    );
    assert_eq!(ready_transition(&isvc), ready_since, "{}", isvc["status"]);
    assert_eq!(
        isvc["status"]["traffic"][0]["revisionName"], "iris-00001",
        "the revision at zero keeps its traffic: {}",
        isvc["status"]
    );

    // One request: the router holds it while the autoscaler starts a pod.
    let sent = Instant::now();
    let revision = infer(addr, "iris", &input()).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "the first request at zero replicas answered in {:.1?}",
        sent.elapsed()
    );
    assert_eq!(revision, "iris-00001");
    let deployment = revision_deployment(&scenario, "iris-00001");
    assert!(
        deployment["spec"]["replicas"].as_u64() >= Some(1),
        "{}",
        deployment["spec"]
    );
}

#[test]
fn a_rollout_under_load_fails_no_request() {
    let Some(scenario) = Scenario::start("e2e-rollout") else {
        return;
    };
    let _operator = scenario.leading_operator("e2e-rollout-operator", &[]);
    let (addr, _, _) = serve(&scenario, "iris", &iris("iris", "    minReplicas: 1\n", ""));

    let load = Load::start(addr, "iris");
    load.wait_answers(20);
    let started = Instant::now();
    // A change of the pods' environment: a new revision, which takes all
    // traffic once Ready.
    scenario.apply(&iris(
        "iris",
        "    minReplicas: 1\n    env:\n    - name: ROLLOUT\n      value: \"2\"\n",
        "",
    ));
    scenario.wait_isvc("iris", "iris-00002 to take all traffic", |s| {
        s["status"]["latestReadyRevision"] == "iris-00002"
            && traffic(s) == [("iris-00002".to_owned(), 100)]
    });
    let shifted = started.elapsed();
    wait_until(
        "iris-00001 to be scaled down, its pods gone",
        Duration::from_secs(120),
        || {
            let deployment = revision_deployment(&scenario, "iris-00001");
            (deployment["spec"]["replicas"] == 0
                && revision_pods(&scenario, "iris-00001").is_empty())
            .then_some(())
        },
    );
    let done = Instant::now();
    let rolled = started.elapsed();
    load.wait_answers(20);
    let tally = load.finish();
    eprintln!(
        "rollout under load: traffic shifted after {shifted:.1?}, old pods gone after {rolled:.1?}; \
         {} requests, {} failed, answered by {:?}",
        tally.sent,
        tally.failures.len(),
        tally.by_revision()
    );

    tally.assert_none_failed("during the rollout");
    let counts = tally.by_revision();
    assert!(counts.get("iris-00001") >= Some(&20), "{counts:?}");
    let late: BTreeSet<&str> = tally
        .answers
        .iter()
        .filter(|(sent, _)| *sent > done)
        .map(|(_, r)| r.as_str())
        .collect();
    assert_eq!(
        late,
        BTreeSet::from(["iris-00002"]),
        "requests sent after the rollout"
    );
}

/// The host PIDs of the processes of container `container_id` (a
/// containerd ID): those whose cgroup path ends with it (the node runs the
/// cgroupfs driver: `/kubepods/<qos>/pod<uid>/<container id>`).
fn container_processes(container_id: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cgroups) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        if cgroups
            .lines()
            .any(|l| l.trim_end().ends_with(&format!("/{container_id}")))
        {
            pids.push(pid);
        }
    }
    pids
}

/// The router pods of service `name`: those the Service named after it
/// selects.
fn router_pods(scenario: &Scenario, name: &str) -> Vec<Value> {
    let service = scenario.get("service", name).expect("the Service");
    let selector: Vec<String> = service["spec"]["selector"]
        .as_object()
        .expect("a selector")
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().expect("a label value")))
        .collect();
    scenario.list("pods", &["-l", &selector.join(",")])
}

/// The sum of `inferd_router_retries_total` over its series and the router
/// pods of service `name` (their `/metrics` on the http port, by pod IP).
fn router_retries(scenario: &Scenario, name: &str) -> u64 {
    let routers = router_pods(scenario, name);
    assert!(!routers.is_empty(), "no router pod for {name}");
    let mut total = 0;
    for pod in routers {
        let ip: Ipv4Addr = pod["status"]["podIP"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("{} has no pod IP", pod_name(&pod)));
        let reply = http::get(SocketAddr::from((ip, 8080)), "/metrics");
        assert_eq!(reply.status, 200, "{}", reply.text());
        let text = reply.text();
        assert!(
            text.contains("# TYPE inferd_router_retries counter"),
            "{text}"
        );
        total += text
            .lines()
            .filter(|l| l.starts_with("inferd_router_retries_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    total
}

#[test]
fn a_replica_killed_under_load_fails_no_request() {
    let Some(scenario) = Scenario::start("e2e-replica-killed") else {
        return;
    };
    let _operator = scenario.leading_operator("e2e-replica-killed-operator", &[]);
    let (addr, _, _) = serve(&scenario, "iris", &iris("iris", "    minReplicas: 2\n", ""));
    let pods = wait_until(
        "two ready pods of iris-00001",
        Duration::from_secs(120),
        || {
            let pods = revision_pods(&scenario, "iris-00001");
            (pods.len() == 2 && pods.iter().all(|p| condition(p, "Ready") == Some("True")))
                .then_some(pods)
        },
    );
    let victim = &pods[0];
    let victim_name = pod_name(victim);
    let statuses = victim["status"]["containerStatuses"]
        .as_array()
        .expect("containerStatuses");
    assert_eq!(statuses.len(), 1, "one container in {victim_name}");
    let restarts = statuses[0]["restartCount"].as_u64().expect("restartCount");
    let container_id = statuses[0]["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("containerd://"))
        .expect("a containerd container ID")
        .to_owned();
    let pids = container_processes(&container_id);
    let servers: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "inferd")
        })
        .collect();
    assert_eq!(
        servers.len(),
        1,
        "one inferd process in {victim_name}'s container (its processes: {pids:?})"
    );
    let retries_before = router_retries(&scenario, "iris");

    let load = Load::start(addr, "iris");
    load.wait_answers(20);
    let status = std::process::Command::new("kill")
        .args(["-KILL", &servers[0].to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -KILL {}", servers[0]);
    let killed = Instant::now();

    // The kubelet restarts the container; the pod is Ready again.
    wait_until(
        &format!("{victim_name} restarted and Ready"),
        Duration::from_secs(180),
        || {
            let pod = scenario.get("pod", &victim_name)?;
            let restarted = pod["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .is_some_and(|n| n > restarts);
            (restarted && condition(&pod, "Ready") == Some("True")).then_some(())
        },
    );
    let back = killed.elapsed();
    load.wait_answers(20);
    let tally = load.finish();
    let retries = router_retries(&scenario, "iris") - retries_before;
    eprintln!(
        "a replica SIGKILLed under load: Ready again after {back:.1?}; {} requests, {} failed, \
         {retries} retried by the router, answered by {:?}",
        tally.sent,
        tally.failures.len(),
        tally.by_revision()
    );
    // Inference is idempotent: a request the killed replica held (its
    // connection reset before the response head) and any sent to its
    // address before the endpoint went unready (connection refused) are
    // retried once on the other replica. So no request fails.
    tally.assert_none_failed("while a replica was killed");
    let isvc = scenario.get(ISVC, "iris").expect("the InferenceService");
    assert_eq!(
        condition(&isvc, "Ready"),
        Some("True"),
        "{}",
        isvc["status"]
    );
}

/// Scales the install's operator Deployment back to zero when dropped,
/// panics included, and waits until its pods are gone and its Lease is
/// free or expired, since the other tests lead with local operators on the
/// same Lease. Never panics itself.
struct InClusterOperator {
    kubectl: Kubectl,
}

impl InClusterOperator {
    fn pods(&self) -> Vec<Value> {
        self.kubectl
            .list("pods", SYSTEM_NAMESPACE, &["-l", OPERATOR_PODS])
    }
}

impl InClusterOperator {
    /// Scales the Deployment to zero and waits for its pods to go and its
    /// Lease to be free; how that ended.
    fn restore(&self) -> String {
        let run = |args: &[&str]| self.kubectl.run(args, None);
        let scaled = crate::scale_operator_deployment(&self.kubectl, 0);
        if !scaled.status.success() {
            return format!(
                "could not scale {OPERATOR} to 0: {}",
                String::from_utf8_lossy(&scaled.stderr)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = run(&[
                "get",
                "pods",
                "-n",
                SYSTEM_NAMESPACE,
                "-l",
                OPERATOR_PODS,
                "-o",
                "name",
            ]);
            if out.status.success() && out.stdout.iter().all(u8::is_ascii_whitespace) {
                break;
            }
            if Instant::now() > deadline {
                return "its pods are still there".to_owned();
            }
            thread::sleep(Duration::from_millis(200));
        }
        // Free (a leader stopping releases it) or expired (nobody renewed
        // it for its duration).
        let mut last_renew: Option<(String, Instant)> = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let out = run(&[
                "get",
                "lease",
                OPERATOR,
                "-n",
                SYSTEM_NAMESPACE,
                "-o",
                "json",
            ]);
            let Ok(lease) = serde_json::from_slice::<Value>(&out.stdout) else {
                return "no Lease".to_owned();
            };
            let spec = &lease["spec"];
            if spec["holderIdentity"].as_str().is_none_or(str::is_empty) {
                return "pods gone, Lease released".to_owned();
            }
            let duration = Duration::from_secs(spec["leaseDurationSeconds"].as_u64().unwrap_or(15));
            let renew = spec["renewTime"].as_str().unwrap_or_default().to_owned();
            match &last_renew {
                Some((seen, at)) if *seen == renew => {
                    if at.elapsed() > duration + Duration::from_secs(1) {
                        return format!(
                            "pods gone, Lease expired (not released by {})",
                            spec["holderIdentity"]
                        );
                    }
                }
                _ => last_renew = Some((renew, Instant::now())),
            }
            thread::sleep(Duration::from_millis(500));
        }
        "the Lease is still renewed".to_owned()
    }
}

impl Drop for InClusterOperator {
    fn drop(&mut self) {
        let started = Instant::now();
        let outcome = self.restore();
        eprintln!(
            "the in-cluster operator scaled back to 0 in {:.1?}: {outcome}",
            started.elapsed()
        );
    }
}

#[test]
fn the_operators_own_rollout_keeps_services_serving() {
    let Some(scenario) = Scenario::start("e2e-operator-rollout") else {
        return;
    };
    let operator = InClusterOperator {
        kubectl: scenario.kubectl.clone(),
    };
    let kubectl = &scenario.kubectl;
    let deployment = format!("deployment/{OPERATOR}");
    let scaled = crate::scale_operator_deployment(kubectl, 2);
    assert!(
        scaled.status.success(),
        "{}",
        String::from_utf8_lossy(&scaled.stderr)
    );
    kubectl.ok(&[
        "rollout",
        "status",
        &deployment,
        "-n",
        SYSTEM_NAMESPACE,
        "--timeout=180s",
    ]);
    let before: BTreeSet<String> = operator.pods().iter().map(pod_name).collect();
    assert_eq!(before.len(), 2, "{before:?}");
    let leader = wait_until(
        "an in-cluster operator pod to lead",
        Duration::from_secs(90),
        || scenario.lease_holder().filter(|h| before.contains(h)),
    );

    let (addr, ready, answering) =
        serve(&scenario, "iris", &iris("iris", "    minReplicas: 1\n", ""));
    eprintln!(
        "in-cluster operator {leader}: a new InferenceService Ready after {ready:.1?}, answering after {answering:.1?}"
    );
    let isvc = scenario.get(ISVC, "iris").expect("the InferenceService");
    let ready_since = ready_transition(&isvc);

    let load = Load::start(addr, "iris");
    load.wait_answers(20);
    let started = Instant::now();
    kubectl.ok(&["rollout", "restart", &deployment, "-n", SYSTEM_NAMESPACE]);
    kubectl.ok(&[
        "rollout",
        "status",
        &deployment,
        "-n",
        SYSTEM_NAMESPACE,
        "--timeout=180s",
    ]);
    let new_leader = wait_until(
        "a pod of the new ReplicaSet to lead",
        Duration::from_secs(90),
        || {
            let holder = scenario.lease_holder()?;
            let pods: BTreeSet<String> = operator.pods().iter().map(pod_name).collect();
            (!before.contains(&holder) && pods.contains(&holder)).then_some(holder)
        },
    );
    let handed = started.elapsed();

    // The new leader runs the controller: a change that makes no new
    // revision (the timeout is the router's) is observed.
    scenario.apply(&iris(
        "iris",
        "    minReplicas: 1\n    timeoutSeconds: 120\n",
        "",
    ));
    let generation =
        scenario.get(ISVC, "iris").expect("the InferenceService")["metadata"]["generation"].clone();
    let isvc = scenario.wait_isvc("iris", "the new generation observed", |s| {
        s["status"]["observedGeneration"] == generation
    });
    load.wait_answers(20);
    let tally = load.finish();
    eprintln!(
        "operator rollout under load: {leader} -> {new_leader} in {handed:.1?}; {} requests, {} failed, answered by {:?}",
        tally.sent,
        tally.failures.len(),
        tally.by_revision()
    );
    tally.assert_none_failed("during the operator's rollout");
    // Ready throughout: the condition's transition time is the one before.
    assert_eq!(
        condition(&isvc, "Ready"),
        Some("True"),
        "{}",
        isvc["status"]
    );
    assert_eq!(ready_transition(&isvc), ready_since, "{}", isvc["status"]);
    assert_eq!(isvc["status"]["latestReadyRevision"], "iris-00001");

    // The operator's own metrics, scraped from each pod as a PodMonitor
    // would: the leader counts the passes it ran and says it leads; the
    // standby says it does not.
    let current: Vec<Value> = operator
        .pods()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert!(
        current.iter().any(|p| pod_name(p) == new_leader),
        "{current:#?}"
    );
    for pod in current {
        let name = pod_name(&pod);
        let ip: Ipv4Addr = pod["status"]["podIP"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .expect("a pod IP");
        let reply = http::get(SocketAddr::from((ip, 8080)), "/metrics");
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        let text = reply.text();
        let leading = name == new_leader;
        let expected = format!("inferd_operator_leader {}", u8::from(leading));
        assert!(text.lines().any(|l| l == expected), "{name}: {text}");
        if leading {
            assert!(
                text.lines().any(|l| l
                    .strip_prefix(r#"inferd_operator_reconciles_total{result="ok"} "#)
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n >= 1)),
                "{name}: {text}"
            );
        }
    }

    // Removed while an operator runs, so that its finalizer goes.
    scenario.ok(&["delete", ISVC, "iris", "--timeout=60s"]);
    drop(operator);
}

/// The last transition time of the Ready condition.
fn ready_transition(isvc: &Value) -> Value {
    isvc["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or(Value::Null)
}

/// Sends `n` requests one after the other; the revisions that answered.
fn tally_sequential(addr: SocketAddr, name: &str, n: usize) -> BTreeMap<String, usize> {
    let body = input();
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let revision =
            infer(addr, name, &body).unwrap_or_else(|e| panic!("request {i} of {n} failed: {e}"));
        *counts.entry(revision).or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_canary_share_reaches_the_new_revision_through_the_router() {
    let Some(scenario) = Scenario::start("e2e-canary-split") else {
        return;
    };
    let _operator = scenario.leading_operator("e2e-canary-split-operator", &[]);
    let (addr, _, _) = serve(&scenario, "iris", &iris("iris", "    minReplicas: 1\n", ""));

    scenario.apply(&iris(
        "iris",
        "    minReplicas: 1\n    canaryTrafficPercent: 20\n    env:\n    - name: CANARY\n      value: \"2\"\n",
        "",
    ));
    scenario.wait_isvc("iris", "an 80/20 split with iris-00002 ready", |s| {
        let mut split = traffic(s);
        split.sort();
        s["status"]["latestReadyRevision"] == "iris-00002"
            && split == [("iris-00001".to_owned(), 80), ("iris-00002".to_owned(), 20)]
    });
    // The router follows the status and the new revision's EndpointSlice.
    let body = input();
    wait_until(
        "the router to send a request to iris-00002",
        Duration::from_secs(60),
        || (infer(addr, "iris", &body).ok()? == "iris-00002").then_some(()),
    );
    // 400 requests at 20%: 80 expected, standard deviation 8; the bounds
    // are five of them away, so a right split fails them about once in
    // two million runs, while a split that ignores the share (0, 50 or
    // 100%) fails them always.
    let counts = tally_sequential(addr, "iris", 400);
    eprintln!("canary 20% through the router: {counts:?}");
    let canary = counts.get("iris-00002").copied().unwrap_or(0);
    assert!((40..=120).contains(&canary), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 400);
    assert_eq!(counts.len(), 2, "{counts:?}");

    // Promoted: every request to the new revision once the router has the
    // new status.
    scenario.apply(&iris(
        "iris",
        "    minReplicas: 1\n    env:\n    - name: CANARY\n      value: \"2\"\n",
        "",
    ));
    scenario.wait_isvc("iris", "iris-00002 at 100%", |s| {
        traffic(s) == [("iris-00002".to_owned(), 100)]
    });
    wait_until(
        "the router to drop iris-00001",
        Duration::from_secs(60),
        || {
            let counts = tally_sequential(addr, "iris", 20);
            (counts.len() == 1 && counts.contains_key("iris-00002")).then_some(())
        },
    );
    let counts = tally_sequential(addr, "iris", 100);
    assert_eq!(
        counts,
        BTreeMap::from([("iris-00002".to_owned(), 100)]),
        "after the promotion"
    );
}
