//! Every object the operator generates (the snapshots of `tests/objects.rs`
//! and the CRD of `tests/crd.rs`) against the official Kubernetes JSON
//! schemas of two versions, with strict validation (unknown fields refused),
//! using the kubernetes-validate package of the test venv.

#[path = "support/k8s_validate.rs"]
mod k8s_validate;

use std::path::{Path, PathBuf};

use k8s_validate::{VERSIONS, validate};

fn snapshots() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("snapshots folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn generated_objects_are_valid_kubernetes_objects() {
    let files = snapshots();
    assert!(files.len() >= 6, "snapshots: {files:?}");
    for version in VERSIONS {
        let (ok, text) = validate(version, &files);
        assert!(ok, "against {version}:\n{text}");
        let passed = text.matches(" passed for resource ").count();
        // Every Deployment and Service of the five object snapshots, and the CRD.
        assert!(
            passed >= 16,
            "{passed} resources passed against {version}:\n{text}"
        );
        assert!(!text.contains("failed"), "{text}");
    }
}

#[test]
fn the_install_manifests_are_valid_kubernetes_objects() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("install.yaml");
    let yaml = inferd_operator::install::install_yaml(&Default::default()).expect("install yaml");
    std::fs::write(&file, yaml).expect("write");
    for version in VERSIONS {
        let (ok, text) = validate(version, std::slice::from_ref(&file));
        assert!(ok, "against {version}:\n{text}");
        let objects = inferd_operator::install::install_objects(&Default::default()).len();
        assert_eq!(objects, 9);
        assert_eq!(
            text.matches(" passed for resource ").count(),
            objects,
            "{text}"
        );
    }
}

#[test]
fn the_validator_refuses_a_bad_object() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: two\n  selector: {}\n  template: {}\n",
    )
    .expect("write");
    let (ok, text) = validate(VERSIONS[0], &[bad]);
    assert!(!ok, "a Deployment with replicas: two passed:\n{text}");
}
