//! The Kubernetes objects that run one InferenceService, as a pure function
//! of its spec, the control core's traffic plan, its revisions and the
//! replica counts the autoscaler decided.
//!
//! Per revision in the plan (revisions out of the plan are retired: their
//! objects are no longer desired and the apply step deletes them):
//!
//! - a **Deployment** `REVISION` whose pods run `inferd serve --model
//!   NAME=/mnt/models/NAME --host 0.0.0.0 --http-port 8080 --grpc-port 8081`
//!   after an init container `storage-initializer` ran `inferd fetch
//!   --storage-uri URI --dest /mnt/models/NAME [--sha256 HEX]
//!   [--max-model-bytes N]` (fetch the model with inferd-storage, verify
//!   it, and place it, file or folder, at `--dest`) into an `emptyDir` shared by both containers;
//! - a headless **Service** `REVISION` (no cluster IP): the router balances
//!   over the revision's pods itself (power of two choices), so it reads
//!   their addresses from the Service's EndpointSlices and needs no
//!   kube-proxy virtual IP;
//!
//! and one **Service** named after the InferenceService that selects the
//! router pods ([`OperatorOptions::router_labels`]), the address clients use.
//!
//! Storage credentials: the annotation
//! [`serving.inferd.dev/storage-secret: NAME`](ANNOTATION_STORAGE_SECRET)
//! names a Secret in the service's namespace whose keys become environment
//! variables of the init container only (the serving container never sees
//! them): `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `S3_ENDPOINT`, `S3_USE_HTTPS`, `GOOGLE_SERVICE_ACCOUNT`,
//! `AZURE_STORAGE_ACCOUNT_NAME`, ... as inferd-storage reads them.

use std::collections::BTreeMap;

use inferd_api::{
    API_VERSION, InferenceService, KIND_INFERENCE_SERVICE, OnnxBackend, Resources, TaintEffect,
    TolerationOperator,
};
use inferd_control::service::{Revision, RevisionTemplate, TrafficPlan};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    HTTPGetAction, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Service,
    ServicePort, ServiceSpec, SleepAction, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::core::v1::{
    EnvVarSource, ObjectFieldSelector, ServiceAccount, TCPSocketAction,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::{Error, Result};

/// Names the Secret whose keys are the model download's environment
/// (storage credentials).
pub const ANNOTATION_STORAGE_SECRET: &str = "serving.inferd.dev/storage-secret";
/// Label naming the InferenceService an object belongs to.
pub const LABEL_INFERENCE_SERVICE: &str = "serving.inferd.dev/inferenceservice";
/// Label naming the revision a pod runs.
pub const LABEL_REVISION: &str = "serving.inferd.dev/revision";
/// Where models are placed in a replica (KServe's path).
pub const MODEL_DIR: &str = "/mnt/models";
/// The replica's HTTP port (Open Inference Protocol, KServe V1, health).
pub const HTTP_PORT: i32 = 8080;
/// The replica's gRPC port.
pub const GRPC_PORT: i32 = 8081;

/// The name of the router's ClusterRole, and of its ServiceAccount,
/// RoleBinding, Deployment and Service in each namespace with
/// InferenceServices.
pub const ROUTER_NAME: &str = "inferd-router";
/// The router's admin port: `/stats` (what the autoscaler scrapes),
/// `/metrics`, `/healthz`; not behind any client-facing Service.
pub const ROUTER_ADMIN_PORT: i32 = 9090;

/// The user the image runs as (distroless' `nonroot`).
const NONROOT_UID: i64 = 65532;
const MODEL_VOLUME: &str = "model-store";
const TMP_VOLUME: &str = "tmp";

/// Settings of the operator, not of one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorOptions {
    /// The image holding the `inferd` binary (its entrypoint), used for both
    /// the model download and the server.
    pub image: String,
    /// `imagePullPolicy` of both containers; absent: Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// Labels of the router pods, which the service's own Service selects.
    pub router_labels: BTreeMap<String, String>,
    /// Seconds a stopping replica keeps serving before SIGTERM, so the
    /// router and endpoints stop sending to it first.
    pub pre_stop_sleep_seconds: i64,
    /// Seconds `inferd serve` gets to finish in-flight requests after SIGTERM
    /// (its `--drain-timeout`).
    pub drain_timeout_seconds: i64,
    /// `sizeLimit` of the model volume; absent: none.
    pub model_volume_size_limit: Option<String>,
    /// Router replicas per namespace.
    pub router_replicas: u32,
}

impl Default for OperatorOptions {
    fn default() -> OperatorOptions {
        OperatorOptions {
            image: format!("ghcr.io/inferd/inferd:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: None,
            router_labels: BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), "inferd".to_owned()),
                (
                    "app.kubernetes.io/component".to_owned(),
                    "router".to_owned(),
                ),
            ]),
            pre_stop_sleep_seconds: 5,
            drain_timeout_seconds: 30,
            model_volume_size_limit: None,
            router_replicas: 1,
        }
    }
}

/// One object the operator wants to exist.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DesiredObject {
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
    ServiceAccount(Box<ServiceAccount>),
    RoleBinding(Box<RoleBinding>),
}

impl DesiredObject {
    /// `metadata`.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            DesiredObject::Deployment(d) => &d.metadata,
            DesiredObject::Service(s) => &s.metadata,
            DesiredObject::HorizontalPodAutoscaler(h) => &h.metadata,
            DesiredObject::ServiceAccount(a) => &a.metadata,
            DesiredObject::RoleBinding(b) => &b.metadata,
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            DesiredObject::Deployment(_) => "Deployment",
            DesiredObject::Service(_) => "Service",
            DesiredObject::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
            DesiredObject::ServiceAccount(_) => "ServiceAccount",
            DesiredObject::RoleBinding(_) => "RoleBinding",
        }
    }
}

/// How many replicas a revision's Deployment runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// This many, as inferd's autoscaler (or the retention rule) decided.
    Replicas(u32),
    /// A HorizontalPodAutoscaler on CPU decides (`autoscalerClass: hpa`):
    /// the Deployment leaves `replicas` to it.
    Hpa {
        min: u32,
        max: u32,
        /// Target average CPU utilisation, percent of the request.
        cpu_utilization: u32,
    },
}

/// The objects that run `isvc` (whose `metadata.uid` is `uid`) as `plan`
/// says: a Deployment and a Service per planned revision, with `replicas`
/// (revision name → count; absent: 0) as the autoscaler decided, then the
/// service's own Service. Revisions are taken from `revisions` by name.
pub fn desired_objects(
    isvc: &InferenceService,
    uid: &str,
    plan: &TrafficPlan,
    revisions: &[Revision],
    replicas: &BTreeMap<String, u32>,
    options: &OperatorOptions,
) -> Result<Vec<DesiredObject>> {
    let scales: BTreeMap<String, Scale> = replicas
        .iter()
        .map(|(k, v)| (k.clone(), Scale::Replicas(*v)))
        .collect();
    desired_objects_scaled(
        isvc,
        uid,
        plan,
        revisions,
        &scales,
        &BTreeMap::new(),
        options,
    )
}

/// [`desired_objects`] where a revision may be scaled by a
/// HorizontalPodAutoscaler ([`Scale::Hpa`]), which is then created beside
/// its Deployment, and where `account_secrets` lists the Secrets of the
/// ServiceAccounts revisions run as (`serviceAccountName`): as in KServe,
/// they hold the model storage's credentials, so they become the model
/// download's environment too.
pub fn desired_objects_scaled(
    isvc: &InferenceService,
    uid: &str,
    plan: &TrafficPlan,
    revisions: &[Revision],
    scales: &BTreeMap<String, Scale>,
    account_secrets: &BTreeMap<String, Vec<String>>,
    options: &OperatorOptions,
) -> Result<Vec<DesiredObject>> {
    let storage_secret = storage_secret(isvc)?;
    let ctx = Ctx {
        isvc,
        uid,
        options,
        storage_secret,
        account_secrets,
    };
    let mut out = Vec::new();
    for planned in &plan.revisions {
        let revision = revisions
            .iter()
            .find(|r| r.name == planned.name)
            .ok_or_else(|| Error::UnknownRevision(planned.name.clone()))?;
        let scale = scales
            .get(&revision.name)
            .copied()
            .unwrap_or(Scale::Replicas(0));
        out.push(DesiredObject::Deployment(Box::new(
            ctx.deployment(revision, scale)?,
        )));
        out.push(DesiredObject::Service(Box::new(
            ctx.revision_service(revision),
        )));
        if let Scale::Hpa {
            min,
            max,
            cpu_utilization,
        } = scale
        {
            out.push(DesiredObject::HorizontalPodAutoscaler(Box::new(ctx.hpa(
                revision,
                min,
                max,
                cpu_utilization,
            ))));
        }
    }
    out.push(DesiredObject::Service(Box::new(ctx.router_service())));
    Ok(out)
}

/// The router of one namespace, shared by its InferenceServices: the
/// ServiceAccount `inferd-router`, its RoleBinding to the `inferd-router`
/// ClusterRole (read InferenceServices and EndpointSlices), the Deployment
/// running `inferd router`, and a headless Service over the routers' admin
/// port, whose EndpointSlices tell the autoscaler which router pods to
/// scrape. Clients reach the routers through each InferenceService's own
/// Service ([`desired_objects`]).
pub fn router_objects(namespace: &str, options: &OperatorOptions) -> Vec<DesiredObject> {
    let mut labels = options.router_labels.clone();
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        "inferd-operator".to_owned(),
    );
    let meta = || ObjectMeta {
        name: Some(ROUTER_NAME.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let admin_probe = |period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(1),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let container = Container {
        name: "router".to_owned(),
        image: Some(options.image.clone()),
        image_pull_policy: options.image_pull_policy.clone(),
        args: Some(vec![
            "router".to_owned(),
            "--http-port".to_owned(),
            HTTP_PORT.to_string(),
            "--grpc-port".to_owned(),
            GRPC_PORT.to_string(),
            "--admin-port".to_owned(),
            ROUTER_ADMIN_PORT.to_string(),
        ]),
        env: Some(vec![EnvVar {
            name: "POD_NAMESPACE".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".to_owned(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
        }]),
        ports: Some(vec![
            port("http", HTTP_PORT),
            port("grpc", GRPC_PORT),
            port("admin", ROUTER_ADMIN_PORT),
        ]),
        // Ready once it has listed the services and their endpoints.
        readiness_probe: Some(admin_probe(2)),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("http".to_owned()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(1),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        // Leave the Services' endpoints before SIGTERM, then finish what
        // is in flight.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: options.pre_stop_sleep_seconds,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(requests_and_memory_limit("100m", "64Mi", "512Mi")),
        security_context: Some(hardened()),
        ..Container::default()
    };
    let grace = options.pre_stop_sleep_seconds + options.drain_timeout_seconds + 5;
    let deployment = Deployment {
        metadata: meta(),
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(options.router_replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(options.router_labels.clone()),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(ROUTER_NAME.to_owned()),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(grace),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NONROOT_UID),
                        run_as_group: Some(NONROOT_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    let service = Service {
        metadata: meta(),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(options.router_labels.clone()),
            ports: Some(vec![service_port(
                "admin",
                ROUTER_ADMIN_PORT,
                ROUTER_ADMIN_PORT,
            )]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    vec![
        DesiredObject::ServiceAccount(Box::new(ServiceAccount {
            metadata: meta(),
            ..ServiceAccount::default()
        })),
        DesiredObject::RoleBinding(Box::new(RoleBinding {
            metadata: meta(),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "ClusterRole".to_owned(),
                name: ROUTER_NAME.to_owned(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: ROUTER_NAME.to_owned(),
                namespace: Some(namespace.to_owned()),
                ..Subject::default()
            }]),
        })),
        DesiredObject::Deployment(Box::new(deployment)),
        DesiredObject::Service(Box::new(service)),
    ]
}

fn storage_secret(isvc: &InferenceService) -> Result<Option<String>> {
    let Some(name) = isvc.metadata.annotations.get(ANNOTATION_STORAGE_SECRET) else {
        return Ok(None);
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|p| inferd_api::dns1123_label(p).is_ok());
    if !valid {
        return Err(Error::Annotation {
            key: ANNOTATION_STORAGE_SECRET.to_owned(),
            message: format!("'{name}' is not a Secret name (a DNS-1123 subdomain)"),
        });
    }
    Ok(Some(name.clone()))
}

struct Ctx<'a> {
    isvc: &'a InferenceService,
    uid: &'a str,
    options: &'a OperatorOptions,
    storage_secret: Option<String>,
    account_secrets: &'a BTreeMap<String, Vec<String>>,
}

impl Ctx<'_> {
    fn name(&self) -> &str {
        &self.isvc.metadata.name
    }

    /// Labels every object of the service carries.
    fn service_labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "inferd".to_owned()),
            (
                "app.kubernetes.io/instance".to_owned(),
                self.name().to_owned(),
            ),
            (
                "app.kubernetes.io/component".to_owned(),
                component.to_owned(),
            ),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "inferd-operator".to_owned(),
            ),
            (LABEL_INFERENCE_SERVICE.to_owned(), self.name().to_owned()),
        ])
    }

    fn revision_labels(&self, revision: &Revision) -> BTreeMap<String, String> {
        let mut labels = self.service_labels("predictor");
        labels.insert(LABEL_REVISION.to_owned(), revision.name.clone());
        labels
    }

    /// What selects a revision's pods; immutable in a Deployment, so it
    /// holds only what never changes.
    fn revision_selector(&self, revision: &Revision) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_INFERENCE_SERVICE.to_owned(), self.name().to_owned()),
            (LABEL_REVISION.to_owned(), revision.name.clone()),
        ])
    }

    fn meta(&self, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: self.isvc.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: API_VERSION.to_owned(),
                kind: KIND_INFERENCE_SERVICE.to_owned(),
                name: self.name().to_owned(),
                uid: self.uid.to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        }
    }

    fn hpa(&self, revision: &Revision, min: u32, max: u32, cpu: u32) -> HorizontalPodAutoscaler {
        let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        HorizontalPodAutoscaler {
            metadata: self.meta(&revision.name, self.revision_labels(revision)),
            spec: Some(HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".to_owned()),
                    kind: "Deployment".to_owned(),
                    name: revision.name.clone(),
                },
                min_replicas: Some(int(min.max(1))),
                max_replicas: int(max.max(min).max(1)),
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".to_owned(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".to_owned(),
                        target: MetricTarget {
                            type_: "Utilization".to_owned(),
                            average_utilization: Some(int(cpu.max(1))),
                            ..MetricTarget::default()
                        },
                    }),
                    ..MetricSpec::default()
                }]),
                ..HorizontalPodAutoscalerSpec::default()
            }),
            status: None,
        }
    }

    fn deployment(&self, revision: &Revision, scale: Scale) -> Result<Deployment> {
        let labels = self.revision_labels(revision);
        // The user's labels reach the pods (as KServe does); inferd's win.
        let mut pod_labels = self.isvc.metadata.labels.clone();
        pod_labels.extend(labels.clone());
        let template = &revision.template;
        let gpus = template.gpus();
        let options = self.options;
        let grace = options.pre_stop_sleep_seconds + options.drain_timeout_seconds + 5;
        let affinity = match &template.affinity {
            None => None,
            Some(a) => {
                let value = serde_json::Value::Object(a.0.clone());
                let parsed: Affinity =
                    serde_path_to_error::deserialize(value).map_err(|e| Error::Field {
                        path: format!("spec.predictor.affinity.{}", e.path()),
                        message: e.inner().to_string(),
                    })?;
                Some(parsed)
            }
        };
        Ok(Deployment {
            metadata: self.meta(&revision.name, labels),
            spec: Some(DeploymentSpec {
                // Under an HPA the field is its own: leaving it out of the
                // apply gives it up.
                replicas: match scale {
                    Scale::Replicas(n) => Some(i32::try_from(n).unwrap_or(i32::MAX)),
                    Scale::Hpa { .. } => None,
                },
                selector: LabelSelector {
                    match_labels: Some(self.revision_selector(revision)),
                    match_expressions: None,
                },
                // A revision is immutable: its template changes only with the
                // operator's image, and then no replica may go before its
                // successor is ready.
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".to_owned()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::String("25%".to_owned())),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
                revision_history_limit: Some(2),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        automount_service_account_token: Some(false),
                        enable_service_links: Some(false),
                        termination_grace_period_seconds: Some(grace),
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            run_as_user: Some(NONROOT_UID),
                            run_as_group: Some(NONROOT_UID),
                            fs_group: Some(NONROOT_UID),
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".to_owned(),
                                localhost_profile: None,
                            }),
                            ..PodSecurityContext::default()
                        }),
                        init_containers: Some(vec![self.storage_initializer(template)]),
                        containers: vec![self.server(template)],
                        volumes: Some(vec![
                            Volume {
                                name: MODEL_VOLUME.to_owned(),
                                empty_dir: Some(EmptyDirVolumeSource {
                                    medium: None,
                                    size_limit: options
                                        .model_volume_size_limit
                                        .clone()
                                        .map(Quantity),
                                }),
                                ..Volume::default()
                            },
                            Volume {
                                name: TMP_VOLUME.to_owned(),
                                empty_dir: Some(EmptyDirVolumeSource::default()),
                                ..Volume::default()
                            },
                        ]),
                        tolerations: tolerations(template, gpus),
                        node_selector: (!template.node_selector.is_empty())
                            .then(|| template.node_selector.clone()),
                        affinity,
                        service_account_name: template.service_account_name.clone(),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: None,
        })
    }

    fn model_path(&self) -> String {
        format!("{MODEL_DIR}/{}", self.name())
    }

    fn storage_initializer(&self, template: &RevisionTemplate) -> Container {
        let mut args = vec![
            "fetch".to_owned(),
            "--storage-uri".to_owned(),
            template.model.storage_uri.clone(),
            "--dest".to_owned(),
            self.model_path(),
        ];
        if let Some(sha) = &template.model.sha256 {
            args.extend(["--sha256".to_owned(), sha.clone()]);
        }
        if let Some(max) = template.model.max_size_bytes {
            args.extend(["--max-model-bytes".to_owned(), max.to_string()]);
        }
        Container {
            name: "storage-initializer".to_owned(),
            image: Some(self.options.image.clone()),
            image_pull_policy: self.options.image_pull_policy.clone(),
            args: Some(args),
            env_from: {
                // The annotation's Secret must exist; the ServiceAccount's
                // are taken as they are listed.
                let from = |name: &String, optional: bool| EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: name.clone(),
                        optional: Some(optional),
                    }),
                    ..EnvFromSource::default()
                };
                let account = template
                    .service_account_name
                    .as_ref()
                    .and_then(|a| self.account_secrets.get(a))
                    .into_iter()
                    .flatten()
                    .filter(|n| self.storage_secret.as_ref() != Some(*n))
                    .map(|n| from(n, true));
                let all: Vec<EnvFromSource> = self
                    .storage_secret
                    .iter()
                    .map(|n| from(n, false))
                    .chain(account)
                    .collect();
                (!all.is_empty()).then_some(all)
            },
            resources: Some(requests_and_memory_limit("100m", "100Mi", "1Gi")),
            security_context: Some(hardened()),
            volume_mounts: Some(vec![
                mount(MODEL_VOLUME, MODEL_DIR, false),
                mount(TMP_VOLUME, "/tmp", false),
            ]),
            ..Container::default()
        }
    }

    fn server(&self, template: &RevisionTemplate) -> Container {
        let mut args = vec![
            "serve".to_owned(),
            "--model".to_owned(),
            format!("{}={}", self.name(), self.model_path()),
            "--host".to_owned(),
            "0.0.0.0".to_owned(),
            "--http-port".to_owned(),
            HTTP_PORT.to_string(),
            "--grpc-port".to_owned(),
            GRPC_PORT.to_string(),
            "--drain-timeout".to_owned(),
            self.options.drain_timeout_seconds.to_string(),
        ];
        if let Some(b) = &template.batching {
            args.extend(["--max-batch-size".to_owned(), b.max_batch_size.to_string()]);
            if let Some(d) = b.max_queue_delay {
                args.extend(["--max-queue-delay".to_owned(), d.to_string()]);
            }
            if let Some(q) = b.max_queue_size {
                args.extend(["--max-queue-size".to_owned(), q.to_string()]);
            }
        }
        let onnx_backend = template.model.runtime.as_ref().and_then(|r| r.onnx_backend);
        if onnx_backend == Some(OnnxBackend::Ort) {
            args.extend(["--onnx-backend".to_owned(), "ort".to_owned()]);
        }
        let env: Vec<EnvVar> = template
            .env
            .iter()
            .map(|e| EnvVar {
                name: e.name.clone(),
                value: Some(e.value.clone()),
                value_from: None,
            })
            .collect();
        let probe = |path: &str, period: i32, failures: i32| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.to_owned()),
                port: IntOrString::String("http".to_owned()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failures),
            timeout_seconds: Some(1),
            ..Probe::default()
        };
        Container {
            name: "inferd".to_owned(),
            image: Some(self.options.image.clone()),
            image_pull_policy: self.options.image_pull_policy.clone(),
            args: Some(args),
            env: (!env.is_empty()).then_some(env),
            ports: Some(vec![
                ContainerPort {
                    name: Some("http".to_owned()),
                    container_port: HTTP_PORT,
                    protocol: Some("TCP".to_owned()),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some("grpc".to_owned()),
                    container_port: GRPC_PORT,
                    protocol: Some("TCP".to_owned()),
                    ..ContainerPort::default()
                },
            ]),
            readiness_probe: Some(probe("/v2/health/ready", 2, 3)),
            liveness_probe: Some(probe("/v2/health/live", 10, 3)),
            // Keep serving while endpoints and the router forget this pod,
            // then SIGTERM makes `inferd serve` finish what it holds. A sleep
            // action needs no shell in the image.
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    sleep: Some(SleepAction {
                        seconds: self.options.pre_stop_sleep_seconds,
                    }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            }),
            resources: template.resources.as_ref().map(resources),
            security_context: Some(hardened()),
            volume_mounts: Some(vec![
                mount(MODEL_VOLUME, MODEL_DIR, true),
                mount(TMP_VOLUME, "/tmp", false),
            ]),
            ..Container::default()
        }
    }

    fn revision_service(&self, revision: &Revision) -> Service {
        Service {
            metadata: self.meta(&revision.name, self.revision_labels(revision)),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".to_owned()),
                selector: Some(self.revision_selector(revision)),
                ports: Some(vec![
                    service_port("http", HTTP_PORT, HTTP_PORT),
                    service_port("grpc", GRPC_PORT, GRPC_PORT),
                ]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn router_service(&self) -> Service {
        Service {
            metadata: self.meta(self.name(), self.service_labels("router")),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                selector: Some(self.options.router_labels.clone()),
                ports: Some(vec![
                    service_port("http", 80, HTTP_PORT),
                    service_port("grpc", GRPC_PORT, GRPC_PORT),
                ]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }
}

/// The predictor's tolerations, and one for the GPU nodes' usual taint when
/// the replica needs GPUs (unless the user's already tolerate it).
fn tolerations(template: &RevisionTemplate, gpus: u32) -> Option<Vec<Toleration>> {
    let mut out: Vec<Toleration> = template
        .tolerations
        .iter()
        .map(|t| Toleration {
            key: t.key.clone(),
            operator: t.operator.map(|o| {
                match o {
                    TolerationOperator::Exists => "Exists",
                    TolerationOperator::Equal => "Equal",
                }
                .to_owned()
            }),
            value: t.value.clone(),
            effect: t.effect.map(|e| {
                match e {
                    TaintEffect::NoSchedule => "NoSchedule",
                    TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                    TaintEffect::NoExecute => "NoExecute",
                }
                .to_owned()
            }),
            toleration_seconds: t.toleration_seconds,
        })
        .collect();
    let gpu_tolerated = out
        .iter()
        .any(|t| t.key.as_deref() == Some("nvidia.com/gpu") || t.key.is_none());
    if gpus > 0 && !gpu_tolerated {
        out.push(Toleration {
            key: Some("nvidia.com/gpu".to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Toleration::default()
        });
    }
    (!out.is_empty()).then_some(out)
}

/// cpu and memory as requests and equal limits (a replica gets what it
/// reserves, as in the local backend); GPUs as `nvidia.com/gpu` limits.
fn resources(r: &Resources) -> ResourceRequirements {
    let mut both = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        both.insert("cpu".to_owned(), Quantity(cpu.0.clone()));
    }
    if let Some(memory) = &r.memory {
        both.insert("memory".to_owned(), Quantity(memory.0.clone()));
    }
    let mut limits = both.clone();
    if let Some(gpu) = r.gpu.filter(|g| *g > 0) {
        limits.insert("nvidia.com/gpu".to_owned(), Quantity(gpu.to_string()));
    }
    ResourceRequirements {
        requests: (!both.is_empty()).then_some(both),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    }
}

/// cpu and memory requests, and a memory limit only: a container may use
/// idle CPU, never more memory than this.
fn requests_and_memory_limit(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(memory_limit.to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            add: None,
            drop: Some(vec!["ALL".to_owned()]),
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn service_port(name: &str, port: i32, target: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}
