//! `inferd serve --onnx-backend ort`: onnxruntime opened from a library named
//! at start.
//!
//! The library is found as in crates/inferd-runtime/tests/ort.rs:
//! `INFERD_ORT_LIBRARY`, `ORT_DYLIB_PATH`, or the onnxruntime package of
//! `INFERD_TEST_PYTHON`; without one the serving test is skipped, except in
//! CI (`CI` set), where it fails.

#![cfg(feature = "ort")]

#[path = "../../../tests/support/http.rs"]
mod http;
#[path = "../../../tests/support/ort_library.rs"]
mod ort_library;
#[path = "support/serve.rs"]
mod serve;

use ort_library::library;
use serve::{Serve, inferd, repo, wait_ready};

use serde_json::json;

#[test]
fn serves_iris_and_a_random_forest_with_onnxruntime() {
    let Some(library) = library() else { return };
    let iris = repo("examples/models/iris/model.onnx");
    let forest = repo("tests/fixtures/models/forest_regressor/model.onnx");
    let mut serve = Serve::start(&[
        "--onnx-backend",
        "ort",
        "--ort-library",
        &library.display().to_string(),
        "--model",
        &format!("iris={}", iris.display()),
        "--model",
        &format!("forest={}", forest.display()),
    ]);
    let addr = serve.addr();
    wait_ready(addr);

    let meta = http::get(addr, "/v2/models/iris");
    assert_eq!(meta.status, 200, "{}", meta.text());
    assert_eq!(meta.json()["platform"], "onnxruntime_onnx");
    let r = http::post(
        addr,
        "/v2/models/iris/infer",
        r#"{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2,6.7,3.0,5.2,2.3]}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"][0]["name"], "label");
    assert_eq!(r.json()["outputs"][0]["data"], json!([0, 2]));

    // The first row of tests/fixtures/models/forest_regressor/expected.json.
    let r = http::post(
        addr,
        "/v2/models/forest/infer",
        r#"{"inputs":[{"name":"input","shape":[1,10],"datatype":"FP32","data":[0.03807590529322624,0.050680119544267654,0.06169620528817177,0.0218723863363266,-0.04422349855303764,-0.034820761531591415,-0.0434008464217186,-0.002592262113466859,0.01990748569369316,-0.017646124586462975]}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let got = r.json()["outputs"][0]["data"][0]
        .as_f64()
        .expect("a number");
    assert!((got - 198.150_299_072_265_62).abs() < 1e-3, "{got}");
}

#[test]
fn onnxruntime_without_a_library_exits_1_with_the_fix() {
    let iris = repo("examples/models/iris/model.onnx");
    let out = inferd()
        .args(["serve", "--http-port", "0", "--onnx-backend", "ort"])
        .args(["--model", &format!("iris={}", iris.display())])
        .output()
        .expect("run inferd");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "onnxruntime backend selected but no library: pass --ort-library /path/to/libonnxruntime.so \
             (pip install onnxruntime ships one in site-packages/onnxruntime/capi/)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");

    let out = inferd()
        .args(["serve", "--http-port", "0", "--onnx-backend", "ort"])
        .args(["--ort-library", "/nonexistent/libonnxruntime.so"])
        .args(["--model", &format!("iris={}", iris.display())])
        .output()
        .expect("run inferd");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so") && stderr.contains("no such file"),
        "{stderr}"
    );
}
