//! The install artefacts against a real API server: `inferd manifests
//! install` and the Helm chart's rendering, both applied server-side; the
//! CRD's schema as the API server enforces it.

use serde_json::Value;

use crate::cluster::KUBERNETES_VERSION;
use crate::{CRD, ISVC, Scenario, condition, inferd_ok, installed, iris, repo};

#[path = "../../../inferd-operator/tests/support/helm.rs"]
mod helm;

/// The kinds and names of the documents of a YAML stream (`kind/name`, as
/// kubectl prints them, the kind lower-cased with its group).
fn documents(yaml: &str) -> Vec<String> {
    yaml.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            let doc: Value = serde_saphyr::from_str(d).expect("a YAML document");
            let kind = doc["kind"].as_str().expect("kind").to_lowercase();
            let group = doc["apiVersion"]
                .as_str()
                .and_then(|v| v.split_once('/'))
                .map(|(g, _)| format!(".{g}"))
                .unwrap_or_default();
            let name = doc["metadata"]["name"].as_str().expect("name");
            format!("{kind}{group}/{name}")
        })
        .collect()
}

/// Asserts that `kubectl apply --server-side` reported each document as
/// applied (`suffix` after the name: "serverside-applied", with " (server
/// dry run)" for a dry run).
fn assert_all_applied(yaml: &str, output: &str, suffix: &str) {
    let docs = documents(yaml);
    assert!(!docs.is_empty());
    for doc in &docs {
        let line = format!("{doc} {suffix}");
        assert!(
            output.lines().any(|l| l.trim() == line),
            "{doc} was not applied:\n{output}"
        );
    }
    assert_eq!(
        output.lines().filter(|l| !l.trim().is_empty()).count(),
        docs.len(),
        "{output}"
    );
}

#[test]
fn the_api_server_is_the_version_the_suite_names() {
    let Some(installed) = installed() else { return };
    let version: Value =
        serde_json::from_str(&installed.cluster.kubectl().ok(&["version", "-o", "json"]))
            .expect("JSON");
    assert_eq!(version["serverVersion"]["gitVersion"], KUBERNETES_VERSION);
}

#[test]
fn manifests_install_is_accepted_server_side_without_warnings() {
    let Some(installed) = installed() else { return };
    assert_eq!(
        installed.warnings.trim(),
        "",
        "the API server warned while `inferd manifests install` was applied"
    );
    let manifests = inferd_ok(&["manifests", "install"]);
    assert_all_applied(&manifests, &installed.applied, "serverside-applied");

    let crd = installed
        .cluster
        .kubectl()
        .get_json("crd", CRD, None)
        .expect("the CRD exists");
    assert_eq!(condition(&crd, "Established"), Some("True"));
    assert_eq!(condition(&crd, "NamesAccepted"), Some("True"));
    assert_eq!(
        condition(&crd, "NonStructuralSchema"),
        None,
        "the API server found the schema not structural"
    );
    // Re-applying the same set changes nothing and warns about nothing.
    let again =
        installed
            .cluster
            .kubectl()
            .apply(&manifests, "inferd-install", &["--dry-run=server"]);
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stderr).trim(), "");
}

#[test]
fn the_helm_chart_rendering_is_accepted_server_side_without_warnings() {
    let Some(installed) = installed() else { return };
    let chart = repo("deploy/helm/inferd");
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart.join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml is YAML");
    let release = helm::Release {
        name: "inferd",
        namespace: crate::SYSTEM_NAMESPACE,
    };
    // What `helm install` sends: the CRDs of crds/ first, then the
    // templates rendered with the default values.
    let mut stream = String::new();
    let mut crds: Vec<_> = std::fs::read_dir(chart.join("crds"))
        .expect("crds/")
        .map(|e| e.expect("entry").path())
        .collect();
    crds.sort();
    for crd in crds {
        stream.push_str(&std::fs::read_to_string(crd).expect("CRD file"));
        stream.push_str("\n---\n");
    }
    for rendered in helm::render_chart(&chart, &values, &release) {
        if rendered.text.trim().is_empty() {
            continue;
        }
        stream.push_str(&rendered.text);
        stream.push_str("\n---\n");
    }
    let stream = stream.replace("\n---\n---\n", "\n---\n");
    // A server-side dry run: admission, defaulting and validation as for a
    // real apply, without moving the installed operator's objects. The
    // objects are those `inferd manifests install` applied, now co-owned by
    // a second field manager: no conflict.
    let out = installed.cluster.kubectl().apply(
        &stream,
        "helm",
        &["--dry-run=server", "-n", crate::SYSTEM_NAMESPACE],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.trim(), "", "the API server warned");
    assert_all_applied(&stream, &stdout, "serverside-applied (server dry run)");
}

/// Applies `yaml`, which the API server must refuse; its error.
fn refused(scenario: &Scenario, yaml: &str) -> String {
    let out = scenario
        .kubectl
        .apply(yaml, "kubectl", &["-n", scenario.namespace.as_str()]);
    assert!(
        !out.status.success(),
        "the API server accepted:\n{yaml}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_api_server_refuses_specs_the_crd_schema_refuses_with_the_field_path() {
    let Some(scenario) = Scenario::start("e2e-schema") else {
        return;
    };
    let cases = [
        (
            iris("bad", "    minReplicas: -1\n", ""),
            "spec.predictor.minReplicas",
        ),
        (
            iris("bad", "    maxReplicas: 5000000000\n", ""),
            "spec.predictor.maxReplicas",
        ),
        (
            iris("bad", "    canaryTrafficPercent: 101\n", ""),
            "spec.predictor.canaryTrafficPercent",
        ),
        (
            iris("bad", "    minReplicas: many\n", ""),
            "spec.predictor.minReplicas",
        ),
        (
            iris("bad", "    replicas: 2\n", ""),
            "spec.predictor.replicas",
        ),
        (
            "apiVersion: serving.inferd.dev/v1alpha1\nkind: InferenceService\nmetadata: {name: bad}\nspec: {predictor: {minReplicas: 1}}\n"
                .to_owned(),
            "spec.predictor.model",
        ),
    ];
    for (yaml, path) in cases {
        let error = refused(&scenario, &yaml);
        assert!(error.contains(path), "{path} not named in: {error}");
    }
    // Nothing was stored.
    assert!(scenario.get(ISVC, "bad").is_none());
}
