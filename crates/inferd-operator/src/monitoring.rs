//! Monitoring through the Prometheus Operator: the PodMonitors that make
//! Prometheus scrape inferd's routers and replicas, whether the cluster
//! serves PodMonitors at all, and the alerting rules of
//! `deploy/monitoring/prometheus-rule.yaml`.
//!
//! PodMonitors rather than ServiceMonitors: the router balances over a
//! revision's pods itself and each pod's `/metrics` holds only its own
//! counters, so every pod must be scraped; the revisions' headless Services
//! would add nothing but a second selector to keep in step.
//!
//! The Prometheus Operator is optional, so its CRDs are found through the
//! API server's discovery ([`prometheus_operator_installed`]) before any
//! PodMonitor is applied: applying one to a cluster without the CRD fails
//! with a 404 that says nothing of why.

use std::collections::BTreeMap;

use kube::Client;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::{Error, LABEL_INFERENCE_SERVICE, LABEL_REVISION, Result};

/// The Prometheus Operator's API group.
pub const GROUP: &str = "monitoring.coreos.com";
/// The version of [`GROUP`] whose PodMonitors the operator writes.
pub const VERSION: &str = "v1";
/// `apiVersion` of those objects.
pub const API_VERSION: &str = "monitoring.coreos.com/v1";
/// `kind` of a PodMonitor.
pub const POD_MONITOR_KIND: &str = "PodMonitor";
/// The resource (plural) name of PodMonitors, as discovery lists it.
pub const POD_MONITOR_PLURAL: &str = "podmonitors";

/// The PodMonitor of the router pods.
pub const ROUTER_POD_MONITOR: &str = "inferd-router";
/// The PodMonitor of the revisions' pods (replicas).
pub const PREDICTOR_POD_MONITOR: &str = "inferd-predictor";
/// The container port, by name, that serves `/metrics` on both kinds of
/// pods (the router's HTTP listener and `inferd serve`'s).
pub const METRICS_PORT: &str = "http";
/// Where both serve their metrics.
pub const METRICS_PATH: &str = "/metrics";
/// How often Prometheus scrapes them: short enough for the alerts' 5-minute
/// rates to hold many samples.
pub const SCRAPE_INTERVAL: &str = "15s";

/// The alerting rules (a `PrometheusRule` named `inferd`), as written in the
/// repository, comments included.
pub const PROMETHEUS_RULE_YAML: &str =
    include_str!("../../../deploy/monitoring/prometheus-rule.yaml");

const NAME_LABEL: &str = "app.kubernetes.io/name";
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The group, version and kind of a PodMonitor.
pub fn pod_monitor_gvk() -> GroupVersionKind {
    GroupVersionKind::gvk(GROUP, VERSION, POD_MONITOR_KIND)
}

/// What `Api::<DynamicObject>::namespaced_with` needs to read and apply
/// PodMonitors; the plural is given, not guessed from the kind.
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&pod_monitor_gvk(), POD_MONITOR_PLURAL)
}

/// The two PodMonitors of a namespace that has InferenceServices:
///
/// - [`ROUTER_POD_MONITOR`] selects the router pods (the default
///   [`OperatorOptions::router_labels`](crate::OperatorOptions)), whose
///   metrics carry `service` and `revision` labels of their own;
/// - [`PREDICTOR_POD_MONITOR`] selects every revision's pods and copies
///   their InferenceService and revision labels to `service` and
///   `revision` on each series, so that the replicas' metrics (labelled by
///   model only) line up with the router's.
///
/// Both scrape [`METRICS_PATH`] on the port named [`METRICS_PORT`] every
/// [`SCRAPE_INTERVAL`]. Ready for server-side apply (they carry
/// `apiVersion` and `kind`).
pub fn pod_monitors(namespace: &str) -> Vec<DynamicObject> {
    let router_labels = crate::OperatorOptions::default().router_labels;
    let router = pod_monitor(
        namespace,
        ROUTER_POD_MONITOR,
        "router",
        json!({ "matchLabels": router_labels }),
        endpoint(Vec::new()),
    );
    let predictor = pod_monitor(
        namespace,
        PREDICTOR_POD_MONITOR,
        "predictor",
        json!({
            "matchLabels": {
                NAME_LABEL: "inferd",
                COMPONENT_LABEL: "predictor",
            },
            "matchExpressions": [
                { "key": LABEL_INFERENCE_SERVICE, "operator": "Exists" },
            ],
        }),
        endpoint(vec![
            copy_pod_label(LABEL_INFERENCE_SERVICE, "service"),
            copy_pod_label(LABEL_REVISION, "revision"),
        ]),
    );
    vec![router, predictor]
}

fn pod_monitor(
    namespace: &str,
    name: &str,
    component: &str,
    selector: Value,
    endpoint: Value,
) -> DynamicObject {
    let mut object = DynamicObject::new(name, &pod_monitor_resource())
        .within(namespace)
        .data(json!({
            "spec": {
                "selector": selector,
                "podMetricsEndpoints": [endpoint],
            },
        }));
    object.metadata.labels = Some(BTreeMap::from([
        (NAME_LABEL.to_owned(), "inferd".to_owned()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), "inferd-operator".to_owned()),
    ]));
    object
}

fn endpoint(relabelings: Vec<Value>) -> Value {
    let mut endpoint = json!({
        "port": METRICS_PORT,
        "path": METRICS_PATH,
        "interval": SCRAPE_INTERVAL,
    });
    if !relabelings.is_empty() {
        endpoint["relabelings"] = Value::Array(relabelings);
    }
    endpoint
}

/// A relabeling that copies the pod label `key` to the target label
/// `target`. Prometheus' service discovery exposes pod labels as
/// `__meta_kubernetes_pod_label_NAME`, NAME with every character outside
/// `[a-zA-Z0-9_]` replaced by `_`.
fn copy_pod_label(key: &str, target: &str) -> Value {
    let name: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    json!({
        "sourceLabels": [format!("__meta_kubernetes_pod_label_{name}")],
        "targetLabel": target,
        "action": "replace",
    })
}

/// Whether the API server serves PodMonitors: asks discovery for
/// `monitoring.coreos.com/v1` and looks for `podmonitors` among its
/// resources. A 404 (the group or version is not served) is `false`; any
/// other failure is an error, since "not installed" must not be concluded
/// from, say, a refused or timed-out request.
pub async fn prometheus_operator_installed(client: &Client) -> Result<bool> {
    match client.list_api_group_resources(API_VERSION).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == POD_MONITOR_PLURAL)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// [`PROMETHEUS_RULE_YAML`] parsed, for an installer to apply.
///
/// # Panics
///
/// Never in a build whose tests pass: the file is compiled in, and the
/// crate's tests parse it and check every rule.
pub fn prometheus_rule() -> Value {
    serde_saphyr::from_str(PROMETHEUS_RULE_YAML)
        .expect("deploy/monitoring/prometheus-rule.yaml is valid YAML (checked by the tests)")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Request, Response};
    use kube::client::Body;

    use super::*;

    /// Runs [`prometheus_operator_installed`] against a mock API server that
    /// expects one discovery request and answers it with `status` and `body`.
    async fn installed(status: u16, body: Vec<u8>) -> Result<bool> {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "ml");
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.expect("a request");
            assert_eq!(request.method().as_str(), "GET");
            assert_eq!(request.uri().path(), "/apis/monitoring.coreos.com/v1");
            let response = Response::builder()
                .status(status)
                .body(Body::from(body))
                .expect("response");
            send.send_response(response);
        });
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            prometheus_operator_installed(&client),
        )
        .await
        .expect("one request, answered");
        server.await.expect("the discovery request came");
        result
    }

    fn resources(names: &[&str]) -> Vec<u8> {
        let resources: Vec<Value> = names
            .iter()
            .map(|name| {
                json!({
                    "name": name, "singularName": "", "namespaced": true,
                    "kind": "Whatever", "verbs": ["get", "list", "watch", "create", "patch"],
                })
            })
            .collect();
        serde_json::to_vec(&json!({
            "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": API_VERSION, "resources": resources,
        }))
        .expect("json")
    }

    fn status(code: u16, reason: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "refused by the test", "reason": reason, "code": code,
        }))
        .expect("json")
    }

    #[tokio::test]
    async fn podmonitors_served_means_installed() {
        let body = resources(&[
            "alertmanagers",
            "podmonitors",
            "podmonitors/status",
            "prometheusrules",
            "servicemonitors",
        ]);
        assert!(installed(200, body).await.expect("discovery"));
    }

    #[tokio::test]
    async fn an_unserved_group_means_not_installed() {
        let json = installed(404, status(404, "NotFound")).await;
        assert!(!json.expect("a 404 is an answer"));
        // A path the API server does not route gets a plain-text 404.
        let text = installed(404, b"404 page not found\n".to_vec()).await;
        assert!(!text.expect("a 404 is an answer"));
    }

    #[tokio::test]
    async fn the_group_without_podmonitors_means_not_installed() {
        let body = resources(&["servicemonitors", "prometheusrules"]);
        assert!(!installed(200, body).await.expect("discovery"));
    }

    #[tokio::test]
    async fn other_failures_are_errors() {
        for (code, reason) in [(403, "Forbidden"), (500, "InternalError")] {
            let result = installed(code, status(code, reason)).await;
            assert!(matches!(result, Err(Error::Kube(_))), "{code}: {result:?}");
        }
    }

    #[test]
    fn the_resource_is_podmonitors_of_monitoring_coreos_com_v1() {
        let r = pod_monitor_resource();
        assert_eq!(r.api_version, "monitoring.coreos.com/v1");
        assert_eq!(r.group, GROUP);
        assert_eq!(r.version, VERSION);
        assert_eq!(r.kind, "PodMonitor");
        assert_eq!(r.plural, "podmonitors");
    }
}
