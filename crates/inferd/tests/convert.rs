//! `inferd convert` as a user runs it: the example files, a bad file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn convert(file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_inferd"))
        .env_remove("RUST_LOG")
        .args(["convert", "-f"])
        .arg(file)
        .output()
        .expect("run inferd convert")
}

#[test]
fn converts_the_kserve_example_to_ours() {
    let out = convert(&repo("examples/kserve-iris.yaml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let ours = inferd_api::load_inference_services(&printed).expect("output parses back");
    let expected = std::fs::read_to_string(repo("examples/kserve-iris.yaml")).expect("example");
    let expected = inferd_api::load_inference_services(&expected).expect("example converts");
    assert_eq!(ours, expected);
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].api_version, inferd_api::API_VERSION);
    assert_eq!(ours[0].spec.predictor.timeout_seconds, Some(30));

    // inferd's own example passes through unchanged.
    let out = convert(&repo("examples/iris.yaml"));
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let text = std::fs::read_to_string(repo("examples/iris.yaml")).expect("example");
    assert_eq!(
        inferd_api::load_inference_services(&printed).expect("parses back"),
        inferd_api::load_inference_services(&text).expect("example parses"),
    );
}

#[test]
fn refuses_a_bad_file_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(repo("examples/kserve-iris.yaml"))
        .expect("example")
        .replace("name: onnx", "name: sklearn");
    std::fs::write(&file, text).expect("write");
    let out = convert(&file);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("document 1: spec.predictor.model.modelFormat.name: 'sklearn' models are not served by inferd"),
        "{stderr}"
    );

    let out = convert(&dir.path().join("missing.yaml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
