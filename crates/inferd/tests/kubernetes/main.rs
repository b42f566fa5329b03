//! inferd on a real Kubernetes: the install, the operator (as its own
//! ServiceAccount, under the install's RBAC), its pods and its router,
//! against a real API server, controller-manager, scheduler, kubelet and
//! kube-proxy started for this run ([`cluster`]).
//!
//! Every test takes the cluster's exclusive lock: they share one operator
//! Lease and cluster-wide objects, and two cores. Each works in a namespace
//! of its own, deleted at its end.

#![allow(dead_code, unreachable_pub)]

mod cluster;
mod install;
mod leader;
mod operator;
mod pods;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{MutexGuard, OnceLock};
use std::time::Duration;

use serde_json::Value;

pub use cluster::{Cluster, Kubectl, Process, cluster, repo, wait_until};

/// The operator's namespace and the names `inferd manifests install` gives.
pub const SYSTEM_NAMESPACE: &str = "inferd-system";
pub const OPERATOR: &str = "inferd-operator";
pub const CRD: &str = "inferenceservices.serving.inferd.dev";
/// The short name `kubectl get` accepts for InferenceServices.
pub const ISVC: &str = "inferenceservices.serving.inferd.dev";

/// What the install left: `kubectl apply`'s output and the warnings the API
/// server sent with it.
pub struct Installed {
    pub cluster: &'static Cluster,
    pub applied: String,
    pub warnings: String,
    /// kubeconfig of the operator's ServiceAccount (a token, so RBAC applies).
    pub operator_kubeconfig: PathBuf,
}

static INSTALLED: OnceLock<Result<Installed, String>> = OnceLock::new();

/// The binary under test.
pub fn inferd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferd"));
    cmd.env_remove("RUST_LOG").env_remove("KUBECONFIG");
    cmd
}

/// The binary under test as a long-running process that dies with the test.
pub fn inferd_guarded() -> Command {
    let mut cmd = cluster::guarded_command(env!("CARGO_BIN_EXE_inferd"));
    cmd.env_remove("RUST_LOG").env_remove("KUBECONFIG");
    cmd
}

/// Runs `inferd ARGS`, which must succeed; its stdout.
pub fn inferd_ok(args: &[&str]) -> String {
    let out = inferd().args(args).output().expect("run inferd");
    assert!(
        out.status.success(),
        "inferd {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cluster with inferd installed by `inferd manifests install`
/// (server-side apply), the in-cluster operator scaled to zero so that the
/// tests' own operator processes lead. `None` where there is no cluster.
pub fn installed() -> Option<&'static Installed> {
    let cluster = cluster()?;
    match INSTALLED.get_or_init(|| install(cluster)) {
        Ok(installed) => Some(installed),
        Err(e) => panic!("the install failed:\n{e}"),
    }
}

fn install(cluster: &'static Cluster) -> Result<Installed, String> {
    let kubectl = cluster.kubectl();
    let manifests = inferd_ok(&["manifests", "install"]);
    let out = kubectl.apply(&manifests, "inferd-install", &[]);
    let applied = String::from_utf8_lossy(&out.stdout).into_owned();
    let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!("kubectl apply failed:\n{applied}\n{warnings}"));
    }
    kubectl.ok(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/{CRD}"),
        "--timeout=60s",
    ]);
    // The tests run the operator as local processes, one leading at a time;
    // the in-cluster replicas would take the Lease from them.
    let scaled = scale_operator_deployment(&kubectl, 0);
    if !scaled.status.success() {
        return Err(String::from_utf8_lossy(&scaled.stderr).into_owned());
    }
    wait_until(
        "the in-cluster operator pods to be gone",
        Duration::from_secs(60),
        || {
            kubectl
                .list(
                    "pods",
                    SYSTEM_NAMESPACE,
                    &["-l", "app.kubernetes.io/name=inferd-operator"],
                )
                .is_empty()
                .then_some(())
        },
    );
    // One of them may have led and been stopped before it could release
    // the Lease: a test's operator would wait out its duration.
    kubectl.ok(&[
        "delete",
        "lease",
        OPERATOR,
        "-n",
        SYSTEM_NAMESPACE,
        "--ignore-not-found",
    ]);
    let operator_kubeconfig = cluster.service_account_kubeconfig(SYSTEM_NAMESPACE, OPERATOR);
    Ok(Installed {
        cluster,
        applied,
        warnings,
        operator_kubeconfig,
    })
}

/// `kubectl scale` of the in-cluster operator Deployment.
pub fn scale_operator_deployment(kubectl: &Kubectl, replicas: u32) -> std::process::Output {
    kubectl.run(
        &[
            "scale",
            "deployment",
            OPERATOR,
            "-n",
            SYSTEM_NAMESPACE,
            &format!("--replicas={replicas}"),
        ],
        None,
    )
}

/// One test's hold on the cluster: the exclusive lock, a namespace of its
/// own (deleted when dropped) and the operators it started.
pub struct Scenario {
    pub installed: &'static Installed,
    pub namespace: String,
    pub kubectl: Kubectl,
    _exclusive: MutexGuard<'static, ()>,
}

impl Scenario {
    /// Takes the cluster, makes namespace `namespace`. `None` where there
    /// is no cluster.
    pub fn start(namespace: &str) -> Option<Scenario> {
        let installed = installed()?;
        let exclusive = installed.cluster.exclusive();
        let kubectl = installed.cluster.kubectl();
        kubectl.ok(&["create", "namespace", namespace]);
        Some(Scenario {
            installed,
            namespace: namespace.to_owned(),
            kubectl,
            _exclusive: exclusive,
        })
    }

    pub fn cluster(&self) -> &'static Cluster {
        self.installed.cluster
    }

    /// `inferd operator --leader-elect` as a local process authenticated as
    /// the operator's ServiceAccount, named `identity` in the Lease.
    pub fn operator(&self, identity: &str, extra: &[&str]) -> Process {
        let mut cmd = inferd_guarded();
        cmd.args(["operator", "--leader-elect"])
            .args(extra)
            .env("KUBECONFIG", &self.installed.operator_kubeconfig)
            .env("POD_NAMESPACE", SYSTEM_NAMESPACE)
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info,inferd_operator=debug")
            .env("INFERD_LOG_FORMAT", "text");
        let log = self
            .cluster()
            .root
            .join(format!("operator-{}-{identity}.log", self.namespace));
        Process::spawn(&format!("operator {identity}"), cmd, log)
    }

    /// Starts an operator and waits until it holds the Lease.
    pub fn leading_operator(&self, identity: &str, extra: &[&str]) -> Process {
        let operator = self.operator(identity, extra);
        wait_until(
            &format!("operator {identity} to lead"),
            Duration::from_secs(60),
            || (self.lease_holder().as_deref() == Some(identity)).then_some(()),
        );
        operator
    }

    /// Who holds the operator's Lease.
    pub fn lease_holder(&self) -> Option<String> {
        let lease = self
            .kubectl
            .get_json("lease", OPERATOR, Some(SYSTEM_NAMESPACE))?;
        lease["spec"]["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
    }

    /// `kubectl get KIND NAME -n NAMESPACE -o json`.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.kubectl.get_json(kind, name, Some(&self.namespace))
    }

    /// `kubectl get KIND -n NAMESPACE -o json`'s items.
    pub fn list(&self, kind: &str, extra: &[&str]) -> Vec<Value> {
        self.kubectl.list(kind, &self.namespace, extra)
    }

    /// `kubectl ARGS -n NAMESPACE`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["-n", self.namespace.as_str()]);
        self.kubectl.ok(&all)
    }

    /// Server-side apply into this namespace as a user would (field
    /// manager `kubectl`), which must succeed without warnings.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self
            .kubectl
            .apply(yaml, "kubectl", &["-n", self.namespace.as_str()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "apply failed: {stderr}\n{yaml}");
        assert!(stderr.trim().is_empty(), "the API server warned: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The InferenceService `name` once `check` holds for it (60 s at most).
    pub fn wait_isvc(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(what, Duration::from_secs(90), || {
                last = self.get(ISVC, name)?;
                check(&last).then(|| last.clone())
            })
        }));
        match found {
            Ok(v) => v,
            Err(_) => panic!(
                "timed out waiting for {name}: {what}\nlast seen:\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default()
            ),
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = self.kubectl.run(
            &["delete", "namespace", &self.namespace, "--wait=false"],
            None,
        );
    }
}

/// An InferenceService serving the iris model that the image carries
/// (`file:///models/iris`), with `predictor_extra` appended to its
/// predictor (indented by four spaces) and `annotations` (indented by four).
pub fn iris(name: &str, predictor_extra: &str, annotations: &str) -> String {
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{annotations}")
    };
    format!(
        "apiVersion: serving.inferd.dev/v1alpha1\nkind: InferenceService\nmetadata:\n  name: {name}\n{annotations}spec:\n  predictor:\n    model:\n      format: onnx\n      storageUri: file:///models/iris\n    resources:\n      cpu: 100m\n      memory: 128Mi\n{predictor_extra}"
    )
}

/// A condition's status of an object (`"True"`, `"False"`), if it has it.
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["status"]
        .as_str()
}
