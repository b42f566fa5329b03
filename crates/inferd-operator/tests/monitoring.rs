//! The monitoring files (`deploy/monitoring/prometheus-rule.yaml`,
//! `deploy/grafana/inferd-dashboard.json`) and the PodMonitors of
//! [`inferd_operator::monitoring`], checked against what inferd really runs:
//!
//! - every PromQL expression, of the alerts and of the dashboard's panels,
//!   parses (Prometheus' grammar, promql-parser);
//! - every metric they name is one that a real router (started on loopback
//!   and scraped over HTTP) or a replica's registry (`inferd_server::Metrics`,
//!   encoded) exports, or a kube-state-metrics metric of [`KUBE_STATE_METRICS`];
//! - the kube-state-metrics label joins (`label_*`) and the PodMonitors'
//!   selectors, ports and relabelings name labels and ports that the
//!   objects of `desired_objects` and `router_objects` really carry.
//!
//! The Prometheus Operator's CRD schemas are not checked here: no package of
//! the test venv ships them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use inferd_api::{InferenceService, load_inference_services};
use inferd_control::service::{RevisionObserved, ServiceRecord, plan_traffic};
use inferd_operator::monitoring::{
    self, API_VERSION, METRICS_PATH, METRICS_PORT, POD_MONITOR_KIND, PREDICTOR_POD_MONITOR,
    ROUTER_POD_MONITOR,
};
use inferd_operator::{
    DesiredObject, LABEL_INFERENCE_SERVICE, LABEL_REVISION, OperatorOptions, desired_objects,
    router_objects,
};
use inferd_router::{ReplicaAddr, RevisionRoute, RouteTable, Router, RouterConfig, ServiceRoute};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use promql_parser::label::MatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// kube-state-metrics metrics the alerts and the dashboard may use (besides
/// inferd's own), each checked to be used, so the list stays the real one.
const KUBE_STATE_METRICS: &[&str] = &[
    "kube_deployment_labels",
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_available",
    "kube_pod_container_status_last_terminated_reason",
    "kube_pod_container_status_ready",
    "kube_pod_container_status_restarts_total",
    "kube_pod_container_status_waiting_reason",
    "kube_pod_init_container_status_restarts_total",
    "kube_pod_init_container_status_waiting",
    "kube_pod_init_container_status_waiting_reason",
    "kube_pod_labels",
];

/// The alerts the rule file must hold.
const ALERTS: &[&str] = &[
    "InferdServiceNotReady",
    "InferdHighP99Latency",
    "InferdHighErrorRate",
    "InferdModelFailedToLoad",
    "InferdReplicaCrashLooping",
    "InferdPodLabelsNotExported",
];

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn rule_file() -> Value {
    let text = std::fs::read_to_string(repo_file("deploy/monitoring/prometheus-rule.yaml"))
        .expect("rule file");
    serde_saphyr::from_str(&text).expect("the rule file is YAML")
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_file("deploy/grafana/inferd-dashboard.json"))
        .expect("dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every rule of every group.
fn rules(file: &Value) -> Vec<&Value> {
    file["spec"]["groups"]
        .as_array()
        .expect("spec.groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules of a group"))
        .collect()
}

/// Panels, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Grafana's variables replaced by values of the same syntactic kind, so
/// that the result is what Prometheus would parse: the interval variables
/// by a duration, the others (all inside label matchers' strings) by a regex.
fn without_grafana_variables(expr: &str) -> String {
    let mut out = expr.to_owned();
    for interval in ["$__rate_interval", "$__interval", "$__range"] {
        out = out.replace(interval, "5m");
    }
    for var in ["${namespace}", "${service}", "$namespace", "$service"] {
        out = out.replace(var, ".*");
    }
    assert!(!out.contains('$'), "an unknown Grafana variable in {expr}");
    out
}

/// (where, PromQL) of every alert and every dashboard target.
fn expressions() -> Vec<(String, String)> {
    let file = rule_file();
    let mut out: Vec<(String, String)> = rules(&file)
        .into_iter()
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            let expr = r["expr"].as_str().expect("expr").to_owned();
            (format!("rule {name}"), expr)
        })
        .collect();
    let dashboard = dashboard();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr");
            out.push((
                format!("panel {} {}", panel["id"], target["refId"]),
                without_grafana_variables(expr),
            ));
        }
    }
    out
}

fn parse(place: &str, expr: &str) -> Expr {
    parser::parse(expr).unwrap_or_else(|e| panic!("{place}: invalid PromQL: {e}\n{expr}"))
}

/// Metric names and label matchers of the selectors in an expression.
#[derive(Default)]
struct Selectors {
    names: BTreeSet<String>,
    /// (label, value) of every `=` matcher.
    equal: BTreeSet<(String, String)>,
}

impl ExprVisitor for Selectors {
    type Error = ();

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let matchers = selector
            .matchers
            .matchers
            .iter()
            .chain(selector.matchers.or_matchers.iter().flatten());
        for m in matchers {
            if m.op == MatchOp::Equal {
                self.equal.insert((m.name.clone(), m.value.clone()));
                if m.name == "__name__" {
                    self.names.insert(m.value.clone());
                }
            }
        }
        self.names.extend(selector.name.clone());
        Ok(true)
    }
}

fn selectors(expr: &Expr) -> Selectors {
    let mut s = Selectors::default();
    walk_expr(&mut s, expr).expect("walk");
    s
}

/// The sample names of an exposition (Prometheus or OpenMetrics text), from
/// each `# TYPE` line (a counter's samples end in `_total`, a histogram's in
/// `_bucket`, `_sum` and `_count`); every sample line's name is checked to
/// be among them. prometheus-client writes no `# TYPE` for a family without
/// series, so the callers give every family one.
fn sample_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE NAME KIND");
        match kind {
            "counter" => {
                names.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            "gauge" | "unknown" => {
                names.insert(name.to_owned());
            }
            other => panic!("a metric type these tests do not know: {other} ({line})"),
        }
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..end];
        assert!(names.contains(name), "sample {name} has no # TYPE: {line}");
    }
    names
}

/// One GET over HTTP/1.1 to `addr`; the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8(response).expect("UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response head");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding: chunked"), "{head}");
    (status, body.to_owned())
}

/// What a real router exports: one started on loopback with a table of one
/// service (a family appears once it has a series: the table's service and
/// revision give most of them theirs), asked for an unknown service (the
/// rejections'), then scraped on `GET /metrics` of its HTTP listener, the
/// path and listener the PodMonitor scrapes.
async fn router_metrics() -> BTreeSet<String> {
    // No request reaches this replica: its address only has to be valid.
    let replica = ReplicaAddr::http_only(SocketAddr::from(([127, 0, 0, 1], 9)));
    let table = RouteTable::new().with_service(
        "iris",
        ServiceRoute::new().with_revision(RevisionRoute::new("iris-00001", 100, vec![replica])),
    );
    let router = Router::new(&table, &RouterConfig::default()).expect("router");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(inferd_router::serve(
        listener,
        Arc::new(router),
        async move {
            let _ = stopped.await;
        },
    ));
    let (status, _) = http_get(addr, "/v2/models/nothing/ready").await;
    assert_eq!(status, 404);
    let (status, text) = http_get(addr, METRICS_PATH).await;
    assert_eq!(status, 200, "{text}");
    let _ = stop.send(());
    server.await.expect("the router stopped");
    assert!(
        text.contains(r#"inferd_router_rejected_total{service="",reason="no_route"} 1"#),
        "{text}"
    );
    sample_names(&text)
}

/// What a replica exports: its registry (the one `inferd serve` encodes on
/// `/metrics`), with one model loaded and one of each event recorded, so
/// that every family has a series.
fn replica_metrics() -> BTreeSet<String> {
    use inferd_server::metrics::{Protocol, Rejection};
    let metrics = inferd_server::Metrics::new();
    let iris = metrics.for_model("iris", "1");
    iris.record_success(Protocol::V2, 0.001);
    iris.batch_size.observe(4.0);
    metrics.record_load("iris", "1", 0.5);
    metrics.record_failure("iris", Protocol::V2, 503, 0.001);
    metrics.record_rejection("iris", Rejection::QueueFull);
    metrics.record_auth_failure();
    sample_names(&metrics.encode())
}

#[test]
fn the_rule_file_is_a_prometheus_rule_named_inferd() {
    let rule = monitoring::prometheus_rule();
    assert_eq!(
        rule,
        rule_file(),
        "the compiled-in file is the repository's"
    );
    assert_eq!(rule["apiVersion"], API_VERSION);
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["metadata"]["name"], "inferd");
    assert_eq!(
        rule["metadata"]["labels"]["app.kubernetes.io/name"],
        "inferd"
    );
    assert!(
        rule["metadata"].get("namespace").is_none(),
        "installed anywhere"
    );
}

#[test]
fn every_alert_has_expr_for_severity_summary_and_description() {
    let file = rule_file();
    let mut names = Vec::new();
    for rule in rules(&file) {
        let name = rule["alert"].as_str().expect("alerting rules only");
        names.push(name.to_owned());
        let expr = rule["expr"].as_str().unwrap_or_default();
        assert!(!expr.trim().is_empty(), "{name}: expr");
        let duration = rule["for"].as_str().unwrap_or_default();
        let (number, unit) = duration.split_at(duration.len().saturating_sub(1));
        assert!(
            number.parse::<u32>().is_ok_and(|n| n > 0) && ["s", "m", "h"].contains(&unit),
            "{name}: for {duration:?}"
        );
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            let text = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{name}: {key}");
            assert!(
                text.contains("$labels.") || text.contains("$value"),
                "{name}: {key} names nothing of the alert: {text}"
            );
            // Every label a template reads is one the expression keeps.
            for label in text.split("$labels.").skip(1) {
                let label: String = label
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    expr.contains(&label),
                    "{name}: {key} reads $labels.{label}, which the expression never names"
                );
            }
        }
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        names.len(),
        "duplicate alert names: {names:?}"
    );
    assert_eq!(names, ALERTS);
}

#[test]
fn every_expression_is_valid_promql() {
    let expressions = expressions();
    assert!(expressions.len() > 25, "{}", expressions.len());
    for (place, expr) in &expressions {
        let parsed = parse(place, expr);
        // Alerts and graphs both need an instant vector.
        assert_eq!(parsed.value_type(), ValueType::Vector, "{place}: {expr}");
    }
    // The parser refuses what Prometheus refuses.
    assert!(parser::parse("sum by (service (rate(x[5m]))").is_err());
    assert!(parser::parse("rate(inferd_router_requests_total)").is_err());
}

#[tokio::test]
async fn every_metric_is_exported_by_inferd_or_kube_state_metrics() {
    let router = router_metrics().await;
    let replica = replica_metrics();
    for name in &router {
        assert!(name.starts_with("inferd_router_"), "{name}");
    }
    // Every family of both registries (this list grows with them).
    for expected in [
        "inferd_router_requests_total",
        "inferd_router_request_duration_seconds_bucket",
        "inferd_router_in_flight",
        "inferd_router_held_requests",
        "inferd_router_retries_total",
        "inferd_router_rejected_total",
        "inferd_requests_total",
        "inferd_request_duration_seconds_bucket",
        "inferd_inference_duration_seconds_bucket",
        "inferd_model_load_duration_seconds",
        "inferd_requests_in_flight",
        "inferd_auth_failures_total",
        "inferd_queue_duration_seconds_bucket",
        "inferd_batch_size_bucket",
        "inferd_queue_depth",
        "inferd_rejected_requests_total",
    ] {
        assert!(
            router.contains(expected) || replica.contains(expected),
            "{expected} is not exported: {router:?} {replica:?}"
        );
    }
    let mut used_kube = BTreeSet::new();
    for (place, expr) in expressions() {
        for name in selectors(&parse(&place, &expr)).names {
            if KUBE_STATE_METRICS.contains(&name.as_str()) {
                used_kube.insert(name);
                continue;
            }
            assert!(
                router.contains(&name) || replica.contains(&name),
                "{place} uses {name}, which neither the router nor a replica exports \
                 nor is a kube-state-metrics metric of the test's list"
            );
        }
    }
    let unused: Vec<_> = KUBE_STATE_METRICS
        .iter()
        .filter(|m| !used_kube.contains(**m))
        .collect();
    assert!(unused.is_empty(), "unused in the list: {unused:?}");
}

/// The labels of the pods (and Deployments) inferd creates, by key: a
/// revision's and the router's.
fn pod_templates() -> (PodTemplateSpec, PodTemplateSpec, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(repo_file("examples/iris.yaml")).expect("example");
    let mut isvc: InferenceService = load_inference_services(&text)
        .expect("valid example")
        .remove(0);
    isvc.metadata.namespace = Some("models".to_owned());
    let (record, _) = ServiceRecord::create(isvc, 1_700_000_000);
    let name = record.revisions[0].name.clone();
    let observed = BTreeMap::from([(
        name.clone(),
        RevisionObserved {
            ready_replicas: 1,
            ever_ready: true,
            ..RevisionObserved::default()
        },
    )]);
    let plan = plan_traffic(&record, &observed);
    let options = OperatorOptions::default();
    let objects = desired_objects(
        &record.spec,
        "uid-1",
        &plan,
        &record.revisions,
        &BTreeMap::from([(name, 1)]),
        &options,
    )
    .expect("objects");
    let deployment_of = |objects: &[DesiredObject]| {
        objects
            .iter()
            .find_map(|o| match o {
                DesiredObject::Deployment(d) => Some(d.clone()),
                _ => None,
            })
            .expect("a Deployment")
    };
    let predictor = deployment_of(&objects);
    let router = deployment_of(&router_objects("models", &options));
    let deployment_labels = predictor.metadata.labels.clone().expect("labels");
    let template = |d: Box<k8s_openapi::api::apps::v1::Deployment>| d.spec.expect("spec").template;
    (template(predictor), template(router), deployment_labels)
}

fn labels_of(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("pod labels")
}

/// How Prometheus (and kube-state-metrics) turn a Kubernetes label key into
/// a label name: every character outside `[a-zA-Z0-9_]` becomes `_`.
fn sanitized(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[test]
fn kube_state_metrics_joins_name_labels_inferd_sets() {
    let (predictor, router, deployment) = pod_templates();
    // `label_KEY` → values, over the pods' and the Deployment's labels.
    let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let pods = labels_of(&predictor).into_iter().chain(labels_of(&router));
    for (key, value) in pods.chain(deployment) {
        known
            .entry(format!("label_{}", sanitized(&key)))
            .or_default()
            .insert(value);
    }
    for key in [LABEL_INFERENCE_SERVICE, LABEL_REVISION] {
        assert!(
            known.contains_key(&format!("label_{}", sanitized(key))),
            "{key}"
        );
    }
    // Container names, init containers included.
    let containers: BTreeSet<String> = [&predictor, &router]
        .into_iter()
        .filter_map(|t| t.spec.as_ref())
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .map(|c| c.name.clone())
        .collect();
    let mut joins = 0;
    for (place, expr) in expressions() {
        // Label names in matchers, `by`/`on`/`group_left` lists and
        // label_replace's arguments alike.
        let words = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| {
                w.starts_with("label_")
                    && !["label_replace", "label_join", "label_values"].contains(w)
            });
        for word in words {
            joins += 1;
            assert!(
                known.contains_key(word),
                "{place}: {word} is no label of inferd's pods or Deployments ({:?})",
                known.keys()
            );
        }
        for (label, value) in selectors(&parse(&place, &expr)).equal {
            if label == "container" {
                assert!(containers.contains(&value), "{place}: no container {value}");
            }
            if let Some(values) = known.get(&label) {
                assert!(
                    values.contains(&value),
                    "{place}: no pod has {label}={value}"
                );
            }
        }
    }
    assert!(joins > 10, "{joins}");
}

#[test]
fn pod_monitors_select_inferd_pods_on_ports_they_have() {
    let (predictor, router, _) = pod_templates();
    let monitors = monitoring::pod_monitors("models");
    assert_eq!(monitors.len(), 2);
    let by_name: BTreeMap<String, Value> = monitors
        .iter()
        .map(|m| {
            let value = serde_json::to_value(m).expect("serializes");
            (m.metadata.name.clone().expect("name"), value)
        })
        .collect();
    for (name, template) in [
        (ROUTER_POD_MONITOR, &router),
        (PREDICTOR_POD_MONITOR, &predictor),
    ] {
        let monitor = &by_name[name];
        assert_eq!(monitor["apiVersion"], API_VERSION, "{name}");
        assert_eq!(monitor["kind"], POD_MONITOR_KIND, "{name}");
        let meta = &monitor["metadata"];
        assert_eq!(meta["namespace"], "models", "{name}");
        assert_eq!(meta["labels"]["app.kubernetes.io/name"], "inferd", "{name}");
        assert_eq!(
            meta["labels"]["app.kubernetes.io/managed-by"], "inferd-operator",
            "{name}"
        );

        // The selector matches the pods inferd creates.
        let labels = labels_of(template);
        let selector = &monitor["spec"]["selector"];
        let match_labels = selector["matchLabels"].as_object().expect("matchLabels");
        assert!(!match_labels.is_empty(), "{name}");
        for (key, value) in match_labels {
            assert_eq!(
                labels.get(key).map(String::as_str),
                value.as_str(),
                "{name}: selector {key}"
            );
        }
        for expression in selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(expression["operator"], "Exists", "{name}");
            let key = expression["key"].as_str().expect("key");
            assert!(labels.contains_key(key), "{name}: {key}");
        }

        // It scrapes /metrics on a port the pods have, by name.
        let endpoints = monitor["spec"]["podMetricsEndpoints"]
            .as_array()
            .expect("podMetricsEndpoints");
        assert_eq!(endpoints.len(), 1, "{name}");
        let endpoint = &endpoints[0];
        assert_eq!(endpoint["port"], METRICS_PORT, "{name}");
        assert_eq!(endpoint["path"], METRICS_PATH, "{name}");
        assert_eq!(endpoint["interval"], "15s", "{name}");
        let spec = template.spec.as_ref().expect("pod spec");
        let ports: Vec<&str> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| p.name.as_deref())
            .collect();
        assert!(ports.contains(&METRICS_PORT), "{name}: ports {ports:?}");
    }
    // The two select disjoint pods.
    let predictor_labels = labels_of(&predictor);
    let router_selector = by_name[ROUTER_POD_MONITOR]["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(
        router_selector
            .iter()
            .any(|(k, v)| predictor_labels.get(k).map(String::as_str) != v.as_str())
    );

    // The replicas' series get the service and revision of their pod, from
    // the labels objects.rs puts there.
    let relabelings =
        &by_name[PREDICTOR_POD_MONITOR]["spec"]["podMetricsEndpoints"][0]["relabelings"];
    let copies: BTreeMap<&str, &str> = relabelings
        .as_array()
        .expect("relabelings")
        .iter()
        .map(|r| {
            assert_eq!(r["action"], "replace");
            let sources = r["sourceLabels"].as_array().expect("sourceLabels");
            assert_eq!(sources.len(), 1);
            (
                r["targetLabel"].as_str().expect("targetLabel"),
                sources[0].as_str().expect("source"),
            )
        })
        .collect();
    let meta_label = |key: &str| format!("__meta_kubernetes_pod_label_{}", sanitized(key));
    assert_eq!(
        copies,
        BTreeMap::from([
            ("service", meta_label(LABEL_INFERENCE_SERVICE).as_str()),
            ("revision", meta_label(LABEL_REVISION).as_str()),
        ])
    );
    for key in [LABEL_INFERENCE_SERVICE, LABEL_REVISION] {
        assert!(predictor_labels.contains_key(key), "{key}");
    }
    // The router labels its own series with `service` and `revision`, so its
    // PodMonitor must not set them.
    assert!(
        by_name[ROUTER_POD_MONITOR]["spec"]["podMetricsEndpoints"][0]
            .get("relabelings")
            .is_none()
    );
}

#[test]
fn the_dashboard_is_grafana_json_on_a_prometheus_variable() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().expect("schemaVersion") >= 36);
    assert!(!dashboard["title"].as_str().unwrap_or_default().is_empty());
    assert!(!dashboard["uid"].as_str().unwrap_or_default().is_empty());

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let service = variable("service");
    assert_eq!(service["type"], "query");
    let query = service["query"]["query"].as_str().expect("service query");
    assert!(
        query.starts_with("label_values(inferd_router_requests_total")
            && query.ends_with(", service)"),
        "{query}"
    );
    for v in variables.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{}", v["name"]);
        // label_values(SELECTOR, LABEL): the selector is PromQL too.
        let query = v["query"]["query"].as_str().expect("query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(", "))
            .map(|(selector, _)| selector)
            .unwrap_or_else(|| panic!("not label_values(SELECTOR, LABEL): {query}"));
        let parsed = parse(query, &without_grafana_variables(inner));
        assert!(
            selectors(&parsed)
                .names
                .contains("inferd_router_requests_total")
        );
    }

    let panels = panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for panel in &panels {
        let id = panel["id"].as_u64().expect("a numeric panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(
            panel["gridPos"]["w"].as_u64().is_some(),
            "panel {id}: gridPos"
        );
        if panel["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert!(
            !panel["title"].as_str().unwrap_or_default().is_empty(),
            "panel {id}"
        );
        assert_eq!(panel["datasource"]["type"], "prometheus", "panel {id}");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {id}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id}");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "panel {id}");
            assert!(ref_ids.insert(target["refId"].to_string()), "panel {id}");
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "panel {id}"
            );
        }
    }
    assert!(graphs >= 12, "{graphs} panels");
    // No panel hard-codes a data source: the variable is used throughout.
    let text = dashboard.to_string();
    assert!(!text.contains("\"uid\":\"prometheus\""));
}
