//! The official Kubernetes JSON schemas, through the kubernetes-validate
//! package of the test venv, in strict mode (unknown fields refused).

use std::path::PathBuf;
use std::process::Command;

#[path = "../../../../tests/support/python.rs"]
mod support_python;

/// The Kubernetes versions checked: the oldest one k8s-openapi's feature
/// targets, and a recent one.
pub(crate) const VERSIONS: [&str; 2] = ["1.33.0", "1.36.0"];

/// Runs kubernetes-validate against `version`; returns (success, output).
pub(crate) fn validate(version: &str, files: &[PathBuf]) -> (bool, String) {
    let python = support_python::python("the Kubernetes schema checks");
    let out = Command::new(python)
        .args(["-m", "kubernetes_validate", "--strict", "-k", version])
        .args(files)
        .output()
        .expect("run kubernetes_validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
