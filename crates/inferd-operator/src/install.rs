//! What installs the operator, as `inferd manifests install` prints it (and
//! the Helm chart renders with its default values): the CRD, a namespace,
//! the operator's ServiceAccount, a ClusterRole with only the verbs the
//! controller uses and its binding, the routers' ClusterRole (bound by the
//! operator in each namespace it serves), a Role for the leader election
//! Lease in the operator's namespace and its binding, and the operator
//! Deployment (two replicas, one leading).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::OperatorOptions;
use crate::crd::crd;

/// Where and how the operator is installed.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// The operator's namespace.
    pub namespace: String,
    /// The image holding the `inferd` binary.
    pub image: String,
    /// Log format of the operator (`text` or `json`).
    pub log_format: String,
    /// Operator replicas; one leads at a time (a Lease).
    pub replicas: i32,
}

impl Default for InstallOptions {
    fn default() -> InstallOptions {
        InstallOptions {
            namespace: "inferd-system".to_owned(),
            image: OperatorOptions::default().image,
            log_format: "json".to_owned(),
            replicas: 2,
        }
    }
}

/// Where the operator serves `/metrics` and `/healthz` in its pod.
pub const OPERATOR_METRICS_PORT: u16 = 8080;

/// The name shared by the operator's ServiceAccount, ClusterRole, binding
/// and Deployment.
pub const OPERATOR_NAME: &str = "inferd-operator";
pub use crate::objects::ROUTER_NAME;

/// One object of the install set.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum InstallObject {
    Crd(Box<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>),
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    Deployment(Box<Deployment>),
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            OPERATOR_NAME.to_owned(),
        ),
        ("app.kubernetes.io/part-of".to_owned(), "inferd".to_owned()),
    ])
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels()),
        ..ObjectMeta::default()
    }
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// The operator's cluster-wide permissions: exactly what the controller
/// calls (each rule's reason is in docs/ARCHITECTURE.md).
///
/// - InferenceServices: watched (`get`, `list`, `watch`) and `patch`ed to
///   add and remove the operator's finalizer; their status is written by
///   server-side apply to the status subresource (`patch`).
/// - Deployments, Services, HorizontalPodAutoscalers: watched, applied
///   server-side (`patch`, which also creates), deleted when a revision is
///   retired or the namespace's last service goes.
/// - ServiceAccounts and RoleBindings: the router of each namespace runs as
///   `inferd-router`, bound to the [`ROUTER_NAME`] ClusterRole; `get` on
///   ServiceAccounts also reads the Secrets a predictor's
///   `serviceAccountName` lists, for its model download.
/// - EndpointSlices: read to find the router pods whose load the
///   autoscaler scrapes (the router itself reads the revisions' slices).
/// - Events: what the operator does, recorded on the InferenceService.
/// - PodMonitors: created when the Prometheus Operator is installed.
pub fn operator_rules() -> Vec<PolicyRule> {
    const OWN: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
    vec![
        rule(
            inferd_api::GROUP,
            &["inferenceservices"],
            &["get", "list", "watch", "patch"],
        ),
        rule(
            inferd_api::GROUP,
            &["inferenceservices/status"],
            &["get", "patch"],
        ),
        rule("apps", &["deployments"], OWN),
        rule("", &["services", "serviceaccounts"], OWN),
        rule("rbac.authorization.k8s.io", &["rolebindings"], OWN),
        rule("autoscaling", &["horizontalpodautoscalers"], OWN),
        rule(
            "discovery.k8s.io",
            &["endpointslices"],
            &["get", "list", "watch"],
        ),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
        rule("monitoring.coreos.com", &["podmonitors"], OWN),
    ]
}

/// The router's permissions, bound in each namespace that has
/// InferenceServices: it reads their status (traffic split, tags) and the
/// EndpointSlices of their revisions, and writes nothing.
pub fn router_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            inferd_api::GROUP,
            &["inferenceservices"],
            &["get", "list", "watch"],
        ),
        rule(
            "discovery.k8s.io",
            &["endpointslices"],
            &["get", "list", "watch"],
        ),
    ]
}

/// The leader election Lease, in the operator's own namespace only.
pub fn lease_rules() -> Vec<PolicyRule> {
    vec![
        PolicyRule {
            resource_names: Some(vec![OPERATOR_NAME.to_owned()]),
            ..rule("coordination.k8s.io", &["leases"], &["get", "update"])
        },
        rule("coordination.k8s.io", &["leases"], &["create"]),
    ]
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            // With the apiVersion the API server would default, so that
            // the stored selector (atomic under server-side apply) equals
            // the applied one, and a second field manager applying the
            // same install (the Helm chart) co-owns it without a conflict.
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Every object that installs the operator, in the order to apply them.
pub fn install_objects(options: &InstallOptions) -> Vec<InstallObject> {
    let ns = options.namespace.as_str();
    let pod_labels = labels();
    let container = Container {
        name: "operator".to_owned(),
        image: Some(options.image.clone()),
        args: Some(vec![
            "operator".to_owned(),
            "--image".to_owned(),
            options.image.clone(),
            "--leader-elect".to_owned(),
            "--metrics-addr".to_owned(),
            format!("0.0.0.0:{OPERATOR_METRICS_PORT}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_owned()),
            container_port: i32::from(OPERATOR_METRICS_PORT),
            ..ContainerPort::default()
        }]),
        // Up while the process serves; a standby is as alive as the leader.
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".to_owned()),
                port: IntOrString::String("metrics".to_owned()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        env: Some(vec![
            EnvVar {
                name: "INFERD_LOG_FORMAT".to_owned(),
                value: Some(options.log_format.clone()),
                ..EnvVar::default()
            },
            // The Lease's holder identity and namespace.
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("50m".to_owned())),
                ("memory".to_owned(), Quantity("64Mi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("256Mi".to_owned()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let deployment = Deployment {
        metadata: meta(OPERATOR_NAME, Some(ns)),
        spec: Some(DeploymentSpec {
            // Two replicas: one leads (holds the Lease), the other takes
            // over within the lease duration if it goes.
            replicas: Some(options.replicas),
            selector: LabelSelector {
                match_labels: Some(pod_labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(OPERATOR_NAME.to_owned()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65_532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let operator_subject = || {
        Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: OPERATOR_NAME.to_owned(),
            namespace: Some(ns.to_owned()),
            ..Subject::default()
        }])
    };
    let role_ref = |kind: &str, name: &str| RoleRef {
        api_group: "rbac.authorization.k8s.io".to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
    };
    vec![
        InstallObject::Crd(Box::new(crd())),
        InstallObject::Namespace(Namespace {
            metadata: meta(ns, None),
            ..Namespace::default()
        }),
        InstallObject::ServiceAccount(ServiceAccount {
            metadata: meta(OPERATOR_NAME, Some(ns)),
            ..ServiceAccount::default()
        }),
        InstallObject::ClusterRole(ClusterRole {
            metadata: meta(OPERATOR_NAME, None),
            rules: Some(operator_rules()),
            ..ClusterRole::default()
        }),
        InstallObject::ClusterRole(ClusterRole {
            metadata: meta(ROUTER_NAME, None),
            rules: Some(router_rules()),
            ..ClusterRole::default()
        }),
        InstallObject::ClusterRoleBinding(ClusterRoleBinding {
            metadata: meta(OPERATOR_NAME, None),
            role_ref: role_ref("ClusterRole", OPERATOR_NAME),
            subjects: operator_subject(),
        }),
        InstallObject::Role(Role {
            metadata: meta(OPERATOR_NAME, Some(ns)),
            rules: Some(lease_rules()),
        }),
        InstallObject::RoleBinding(RoleBinding {
            metadata: meta(OPERATOR_NAME, Some(ns)),
            role_ref: role_ref("Role", OPERATOR_NAME),
            subjects: operator_subject(),
        }),
        InstallObject::Deployment(Box::new(deployment)),
    ]
}

/// The install set as YAML, as `inferd manifests install` prints it.
pub fn install_yaml(options: &InstallOptions) -> crate::Result<String> {
    crate::to_yaml(&install_objects(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_grants_what_the_controller_uses_and_nothing_else() {
        let rules = operator_rules();
        let mut granted: Vec<(String, String)> = Vec::new();
        for r in &rules {
            for resource in r.resources.iter().flatten() {
                for verb in &r.verbs {
                    granted.push((resource.clone(), verb.clone()));
                }
            }
        }
        assert_eq!(granted.len(), 47);
        for verb in [
            "list", "watch", "delete", "create", "update", "escalate", "*",
        ] {
            assert!(
                !granted
                    .iter()
                    .any(|(r, v)| r == "inferenceservices/status" && v == verb),
                "status gets {verb}"
            );
        }
        assert!(!granted.iter().any(|(r, _)| r == "secrets" || r == "*"));
        assert!(!granted.iter().any(|(_, v)| v == "*" || v == "update"));
        // Pods, nodes and Secrets' contents are never touched.
        assert!(!granted.iter().any(|(r, _)| r == "pods" || r == "nodes"));
    }

    #[test]
    fn the_router_only_reads_and_the_lease_is_named() {
        for r in router_rules() {
            assert_eq!(r.verbs, ["get", "list", "watch"]);
        }
        let lease = lease_rules();
        assert_eq!(
            lease[0].resource_names.as_deref(),
            Some(&[OPERATOR_NAME.to_owned()][..])
        );
        // `create` cannot be limited by name (the object has none yet).
        assert_eq!(lease[1].verbs, ["create"]);
        assert!(lease[1].resource_names.is_none());
    }

    #[test]
    fn the_install_set_is_in_apply_order_and_named_consistently() {
        let yaml = install_yaml(&InstallOptions::default()).expect("yaml");
        let kinds: Vec<&str> = yaml
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .collect();
        assert_eq!(
            kinds,
            [
                "CustomResourceDefinition",
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Deployment"
            ]
        );
        assert!(yaml.contains("namespace: inferd-system"));
        assert!(yaml.contains("serviceAccountName: inferd-operator"));
    }
}
