//! Black-box tests: a real server on an ephemeral loopback port, real HTTP.

#[path = "../../../tests/support/http.rs"]
mod http;
#[path = "support/server.rs"]
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use http::{get, post, request, send_raw};
use inferd_server::{AppState, ModelSource, Server, ServerConfig, Tokens};
use serde_json::{Value, json};
use server::{TestServer, assert_outputs_match, expected, named, repo};

fn iris_server() -> TestServer {
    TestServer::start(vec![
        named("iris", "examples/models/iris/model.onnx"),
        named("mlp", "examples/models/mlp"),
        named("fixed", "tests/fixtures/models/fixed/model.onnx"),
        named("multi", "tests/fixtures/models/multi/model.onnx"),
        named("identity", "tests/fixtures/models/identity/model.onnx"),
    ])
}

#[test]
fn health_and_server_endpoints() {
    let s = iris_server();
    let live = get(s.addr, "/v2/health/live");
    assert_eq!((live.status, live.json()), (200, json!({"live": true})));
    let ready = get(s.addr, "/v2/health/ready");
    assert_eq!((ready.status, ready.json()), (200, json!({"ready": true})));
    assert_eq!(ready.header("content-type"), Some("application/json"));
    let meta = get(s.addr, "/v2").json();
    assert_eq!(meta["name"], "inferd");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert!(meta["extensions"].is_array());
    assert_eq!(
        get(s.addr, "/v2/models").json(),
        json!({"models": ["fixed", "identity", "iris", "mlp", "multi"]})
    );
    assert_eq!(
        get(s.addr, "/v1/models").json(),
        json!({"models": ["fixed", "identity", "iris", "mlp", "multi"]})
    );
    assert_eq!(get(s.addr, "/").json(), json!({"status": "alive"}));
}

#[test]
fn model_metadata_and_readiness() {
    let s = iris_server();
    let want = json!({
        "name": "iris", "versions": ["1"], "platform": "onnx_onnxv1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
        ]
    });
    assert_eq!(get(s.addr, "/v2/models/iris").json(), want);
    assert_eq!(get(s.addr, "/v2/models/iris/versions/1").json(), want);
    let fixed = get(s.addr, "/v2/models/fixed").json();
    assert_eq!(fixed["inputs"][0]["shape"], json!([2, 3]));

    let r = get(s.addr, "/v2/models/iris/ready");
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"name": "iris", "ready": true}))
    );
    assert_eq!(get(s.addr, "/v2/models/iris/versions/1/ready").status, 200);
    let v1 = get(s.addr, "/v1/models/iris");
    assert_eq!(
        (v1.status, v1.json()),
        (200, json!({"name": "iris", "ready": true}))
    );

    for path in [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/iris/versions/2",
        "/v2/models/iris/versions/2/ready",
        "/v2/models/iris/versions/x/ready",
        "/v1/models/nope",
    ] {
        let r = get(s.addr, path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].is_string(), "{path}");
    }
    assert!(
        get(s.addr, "/v2/models/iris/versions/2").json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("model 'iris' has no version '2'"))
    );
}

#[test]
fn iris_predictions_equal_onnxruntime() {
    let s = iris_server();
    let want = expected("examples/models/iris");
    let body = json!({"id": "req-7", "inputs": want["inputs"]}).to_string();
    let r = post(s.addr, "/v2/models/iris/infer", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = r.json();
    assert_eq!(got["model_name"], "iris");
    assert_eq!(got["model_version"], "1");
    assert_eq!(got["id"], "req-7");
    assert_outputs_match(&got["outputs"], &want["outputs"], 1e-5);

    // The versioned path answers the same.
    let r = post(s.addr, "/v2/models/iris/versions/1/infer", &body);
    assert_outputs_match(&r.json()["outputs"], &want["outputs"], 1e-5);

    // Nested data means the same as flat data.
    let flat: Vec<f64> = serde_json::from_value(want["inputs"][0]["data"].clone()).expect("data");
    let nested: Vec<Vec<f64>> = flat.chunks(4).map(<[f64]>::to_vec).collect();
    let body =
        json!({"inputs": [{"name": "input", "shape": [6, 4], "datatype": "FP32", "data": nested}]});
    let r = post(s.addr, "/v2/models/iris/infer", &body.to_string());
    assert_outputs_match(&r.json()["outputs"], &want["outputs"], 1e-5);
    assert!(r.json().get("id").is_none());
}

#[test]
fn readme_request_works() {
    let s = iris_server();
    let body = std::fs::read_to_string(repo("examples/models/iris/input.json")).expect("input");
    let r = post(s.addr, "/v2/models/iris/infer", &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["outputs"][0]["data"], json!([0, 0]));
    assert_timing_headers(|name| r.header(name).map(str::to_owned));
}

/// The `x-queue-time`, `x-inference-time` and `x-total-time` of an answer,
/// looked up with `get`: milliseconds, the parts within the total.
pub(crate) fn assert_timing_headers(get: impl Fn(&str) -> Option<String>) {
    let ms = |name: &str| -> f64 {
        let value = get(name).unwrap_or_else(|| panic!("no {name}"));
        let ms: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {value} is not a number"));
        assert!(ms.is_finite() && ms >= 0.0, "{name}: {value}");
        ms
    };
    let (queue, inference, total) = (
        ms("x-queue-time"),
        ms("x-inference-time"),
        ms("x-total-time"),
    );
    assert!(
        queue + inference <= total,
        "{queue} + {inference} > {total}"
    );
    assert!(total > 0.0);
}

#[test]
fn requested_outputs_are_selected_in_order() {
    let s = iris_server();
    let body = json!({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": false}}, {"name": "label"}]
    });
    let got = post(s.addr, "/v2/models/iris/infer", &body.to_string()).json();
    let names: Vec<&str> = got["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| o["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["probabilities", "label"]);
    assert_eq!(got["outputs"][1]["data"], json!([2]));

    let body = json!({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}],
        "outputs": [{"name": "label"}]
    });
    let got = post(s.addr, "/v2/models/iris/infer", &body.to_string()).json();
    assert_eq!(got["outputs"].as_array().map(Vec::len), Some(1));
}

#[test]
fn mlp_and_multi_input_models() {
    let s = iris_server();
    let want = expected("examples/models/mlp");
    let r = post(
        s.addr,
        "/v2/models/mlp/infer",
        &json!({"inputs": want["inputs"]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_outputs_match(&r.json()["outputs"], &want["outputs"], 1e-4);

    let want = expected("tests/fixtures/models/multi");
    // Inputs in the opposite order from the model's declaration.
    let inputs = json!([want["inputs"][1], want["inputs"][0]]);
    let r = post(
        s.addr,
        "/v2/models/multi/infer",
        &json!({"inputs": inputs}).to_string(),
    );
    assert_outputs_match(&r.json()["outputs"], &want["outputs"], 0.0);

    let want = expected("tests/fixtures/models/fixed");
    let r = post(
        s.addr,
        "/v2/models/fixed/infer",
        &json!({"inputs": want["inputs"]}).to_string(),
    );
    assert_outputs_match(&r.json()["outputs"], &want["outputs"], 0.0);
}

#[test]
fn every_datatype_round_trips_over_http() {
    let s = iris_server();
    let cases = [
        ("bool", "BOOL", json!([true, false, true, false])),
        ("uint8", "UINT8", json!([0, 1, 254, 255])),
        ("uint16", "UINT16", json!([0, 1, 2, 65535])),
        ("uint32", "UINT32", json!([0, 1, 2, 4294967295u64])),
        (
            "uint64",
            "UINT64",
            json!([0, 1, 2, 18446744073709551615u64]),
        ),
        ("int8", "INT8", json!([-128, -1, 0, 127])),
        ("int16", "INT16", json!([-32768, -1, 0, 32767])),
        ("int32", "INT32", json!([-2147483648i64, -1, 0, 2147483647])),
        ("int64", "INT64", json!([i64::MIN, -1, 0, i64::MAX])),
        ("fp16", "FP16", json!([0.5, -2.0, 0.0, 65504.0])),
        ("fp32", "FP32", json!([0.1, -1.5, 0.0, 3.4e38])),
        ("fp64", "FP64", json!([0.1, -1.5, 0.0, 1e300])),
        ("string", "BYTES", json!(["a", "", "üñí", "d"])),
    ];
    let inputs: Vec<Value> = cases
        .iter()
        .map(|(n, t, d)| json!({"name": format!("in_{n}"), "shape": [2, 2], "datatype": t, "data": d}))
        .collect();
    let r = post(
        s.addr,
        "/v2/models/identity/infer",
        &json!({"inputs": inputs}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let got = r.json();
    for (n, t, d) in &cases {
        let out = got["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .find(|o| o["name"] == format!("out_{n}"))
            .unwrap_or_else(|| panic!("out_{n}"));
        assert_eq!(out["datatype"], *t);
        assert_eq!(out["shape"], json!([2, 2]));
        assert_eq!(out["data"], *d, "{n}");
    }
}

#[test]
fn v1_predict() {
    let s = iris_server();
    let r = post(
        s.addr,
        "/v1/models/iris:predict",
        r#"{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let got = r.json();
    let predictions = got["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 2);
    assert_eq!(predictions[0]["label"], 0);
    assert_eq!(predictions[1]["label"], 2);
    assert_eq!(
        predictions[1]["probabilities"].as_array().map(Vec::len),
        Some(3)
    );

    // One output: each prediction is that output's row.
    let r = post(
        s.addr,
        "/v1/models/fixed:predict",
        r#"{"instances": [[1, 2, 3], [4, 5, 6]]}"#,
    );
    assert_eq!(
        r.json(),
        json!({"predictions": [[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]})
    );
    // Several inputs: keyed instances.
    let r = post(
        s.addr,
        "/v1/models/multi:predict",
        r#"{"instances": [{"a": [1, 2], "b": [10, 20]}, {"a": [3, 4], "b": [30, 40]}]}"#,
    );
    assert_eq!(
        r.json(),
        json!({"predictions": [
            {"sum": [11.0, 22.0], "prod": [10.0, 40.0]},
            {"sum": [33.0, 44.0], "prod": [90.0, 160.0]}
        ]})
    );
}

/// Bad requests: status, a part of the message, and the server still serves.
#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let s = iris_server();
    let iris = "/v2/models/iris/infer";
    let row =
        r#"{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}"#;
    let with = |input: &str| format!(r#"{{"inputs": [{input}]}}"#);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (iris, String::new(), 400, "empty"),
        (iris, "{\"inputs\": [".into(), 400, "EOF"),
        (iris, "inputs=1".into(), 400, "must be a JSON object"),
        (
            iris,
            r#"{"inputs": "x"}"#.into(),
            400,
            "inputs: invalid type",
        ),
        (
            iris,
            with(r#"{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}"#),
            400,
            "inputs[0].data: shape [1, 4] holds 4 elements but 3 were given",
        ),
        (
            iris,
            with(
                r#"{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, "x"]}"#,
            ),
            400,
            "inputs[0].data: element 3: expected a number for FP32",
        ),
        (
            iris,
            with(
                r#"{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, NaN]}"#,
            ),
            400,
            "inputs[0].data",
        ),
        (
            iris,
            with(
                r#"{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, Infinity]}"#,
            ),
            400,
            "inputs[0].data",
        ),
        (
            iris,
            with(
                r#"{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 1e999]}"#,
            ),
            400,
            "inputs[0].data",
        ),
        (
            iris,
            with(r#"{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}"#),
            400,
            "input 'input': datatype FP64 does not match the model's FP32",
        ),
        (
            iris,
            with(r#"{"name": "input", "shape": [1, 4], "datatype": "REAL", "data": [1, 2, 3, 4]}"#),
            400,
            "inputs[0].datatype: unknown datatype 'REAL'",
        ),
        (
            iris,
            with(r#"{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}"#),
            400,
            "does not fit the model's shape [-1, 4]",
        ),
        (
            iris,
            with(r#"{"name": "input", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}"#),
            400,
            "has rank 1 but the model takes rank 2",
        ),
        (
            iris,
            with(
                r#"{"name": "input", "shape": [4294967296, 4294967296, 4], "datatype": "FP32", "data": [1]}"#,
            ),
            400,
            "inputs[0].shape",
        ),
        (
            iris,
            with(
                r#"{"name": "input", "shape": [1000000000000, 4], "datatype": "FP32", "data": [1]}"#,
            ),
            400,
            "holds 4000000000000 elements but 1 were given",
        ),
        (
            iris,
            with(
                r#"{"name": "petals", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}"#,
            ),
            400,
            "input 'petals' is not an input of the model (it takes input)",
        ),
        (
            iris,
            r#"{"inputs": []}"#.into(),
            400,
            "input 'input' is missing",
        ),
        (
            iris,
            format!(r#"{{"inputs": [{row}, {row}]}}"#),
            400,
            "inputs[1].name: input 'input' is given twice",
        ),
        (
            iris,
            format!(r#"{{"inputs": [{row}], "outputs": [{{"name": "logits"}}]}}"#),
            400,
            "outputs[0].name: the model has no output 'logits'",
        ),
        (
            "/v2/models/fixed/infer",
            with(
                r#"{"name": "x", "shape": [3, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7, 8, 9]}"#,
            ),
            400,
            "dimension 0 must be 2",
        ),
        // Both inputs fit the metadata ([-1, 2]) but cannot be added: the model fails.
        (
            "/v2/models/multi/infer",
            r#"{"inputs": [{"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
                {"name": "b", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}"#
                .into(),
            500,
            "inference failed",
        ),
        (
            "/v2/models/nope/infer",
            with(row),
            404,
            "unknown model 'nope'",
        ),
        (
            "/v2/models/iris/versions/9/infer",
            with(row),
            404,
            "model 'iris' has no version '9'",
        ),
        (
            "/v2/models/..%2F..%2Fetc%2Fpasswd/infer",
            with(row),
            404,
            "unknown model '../../etc/passwd'",
        ),
        (
            "/v2/models/%2e%2e/infer",
            with(row),
            404,
            "unknown model '..'",
        ),
        ("/v2/models/iris%00/infer", with(row), 404, "unknown model"),
        ("/v2/models/../infer", with(row), 404, ""),
        (
            "/v2/models/iris/predict",
            with(row),
            404,
            "no such endpoint",
        ),
        (
            "/v1/models/iris:predict",
            r#"{"instances": [[1, 2]]}"#.into(),
            400,
            "does not fit the model's shape [-1, 4]",
        ),
        (
            "/v1/models/iris:predict",
            r#"{"instances": []}"#.into(),
            400,
            "instances: must hold at least one instance",
        ),
        (
            "/v1/models/iris:predict",
            r#"{"rows": []}"#.into(),
            400,
            "missing field `instances`",
        ),
        (
            "/v1/models/iris:predict",
            r#"{"instances": [[1, 2, 3, 4], [1, 2, 3]]}"#.into(),
            400,
            "instances[1]: shape [3] differs",
        ),
        (
            "/v1/models/iris:explain",
            r#"{"instances": [[1, 2, 3, 4]]}"#.into(),
            404,
            "explainers are not supported",
        ),
        (
            "/v1/models/iris",
            r#"{"instances": [[1, 2, 3, 4]]}"#.into(),
            404,
            "needs a verb",
        ),
        (
            "/v1/models/nope:predict",
            r#"{"instances": [[1, 2, 3, 4]]}"#.into(),
            404,
            "unknown model 'nope'",
        ),
    ];
    for (path, body, status, message) in &cases {
        let r = post(s.addr, path, body);
        assert_eq!(r.status, *status, "{path} {body}: {}", r.text());
        let error = r.json()["error"].as_str().map(str::to_owned);
        let error = error.unwrap_or_else(|| panic!("{path} {body}: no error field: {}", r.text()));
        assert!(
            error.contains(message),
            "{path} {body}: {error:?} lacks {message:?}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        // The next good request is answered as before.
        let ok = post(s.addr, iris, &with(row));
        assert_eq!(ok.status, 200);
        assert_eq!(ok.json()["outputs"][0]["data"], json!([0]));
    }

    let r = get(s.addr, "/v2/models/iris/infer");
    assert_eq!(r.status, 405);
    assert!(r.json()["error"].is_string());
    let r = get(s.addr, "/v1/models/iris:predict");
    assert_eq!(r.status, 405);
    let r = request(s.addr, "DELETE", "/v2/health/live", b"");
    assert_eq!(r.status, 405);
}

#[test]
fn oversized_bodies_get_413() {
    let s = iris_server();
    let limit = 256 * 1024;
    // Declared too large: refused before reading.
    let big = vec![b' '; limit + 1];
    let r = request(s.addr, "POST", "/v2/models/iris/infer", &big);
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("262144 bytes"))
    );

    // Undeclared (chunked): refused while reading.
    let mut raw = "POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".as_bytes().to_vec();
    for _ in 0..5 {
        raw.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        raw.extend(std::iter::repeat_n(b' ', 64 * 1024));
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = send_raw(s.addr, &raw);
    assert_eq!(r.status, 413);

    // Same for V1, and the server still serves.
    let r = request(s.addr, "POST", "/v1/models/iris:predict", &big);
    assert_eq!(r.status, 413);
    let ok = post(
        s.addr,
        "/v1/models/iris:predict",
        r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#,
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn malformed_http_does_not_take_the_server_down() {
    let s = iris_server();
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /v2/models/iris/infer HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"in",
    ] {
        let mut stream = std::net::TcpStream::connect(s.addr).expect("connect");
        std::io::Write::write_all(&mut stream, raw).expect("write");
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = http::read_reply_lenient(&mut stream);
    }
    assert_eq!(get(s.addr, "/v2/health/ready").status, 200);
}

#[test]
fn metrics_count_requests_by_model_protocol_and_code() {
    let s = iris_server();
    let row = r#"{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}"#;
    for _ in 0..3 {
        assert_eq!(post(s.addr, "/v2/models/iris/infer", row).status, 200);
    }
    assert_eq!(post(s.addr, "/v2/models/iris/infer", "{}").status, 400);
    assert_eq!(post(s.addr, "/v2/models/ghost/infer", row).status, 404);
    assert_eq!(
        post(
            s.addr,
            "/v1/models/iris:predict",
            r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#
        )
        .status,
        200
    );
    let r = get(s.addr, "/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.contains("openmetrics-text"))
    );
    let text = r.text();
    for line in [
        r#"inferd_requests_total{model="iris",protocol="v2",code="200"} 3"#,
        r#"inferd_requests_total{model="iris",protocol="v2",code="400"} 1"#,
        r#"inferd_requests_total{model="",protocol="v2",code="404"} 1"#,
        r#"inferd_requests_total{model="iris",protocol="v1",code="200"} 1"#,
        r#"inferd_request_duration_seconds_count{model="iris",protocol="v2"} 4"#,
        r#"inferd_inference_duration_seconds_count{model="iris",version="1"} 4"#,
        "inferd_requests_in_flight 0",
    ] {
        assert!(text.contains(line), "missing {line}");
    }
    assert!(text.contains(r#"inferd_model_load_duration_seconds{model="iris",version="1"}"#));
    assert!(
        !text.contains("ghost"),
        "unknown names must not become labels"
    );
}

#[test]
fn repository_with_versions() {
    let dir = tempfile::tempdir().expect("tmp");
    let iris = repo("examples/models/iris/model.onnx");
    for v in ["1", "2"] {
        std::fs::create_dir_all(dir.path().join("iris").join(v)).expect("mkdir");
        std::fs::copy(&iris, dir.path().join("iris").join(v).join("model.onnx")).expect("copy");
    }
    std::fs::create_dir_all(dir.path().join("fixed")).expect("mkdir");
    std::fs::copy(
        repo("tests/fixtures/models/fixed/model.onnx"),
        dir.path().join("fixed/model.onnx"),
    )
    .expect("copy");
    let s = TestServer::start(vec![ModelSource::Repository(dir.path().to_owned())]);
    assert_eq!(
        get(s.addr, "/v2/models/iris").json()["versions"],
        json!(["1", "2"])
    );
    let row = r#"{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}"#;
    assert_eq!(
        post(s.addr, "/v2/models/iris/infer", row).json()["model_version"],
        "2"
    );
    assert_eq!(
        post(s.addr, "/v2/models/iris/versions/1/infer", row).json()["model_version"],
        "1"
    );
    assert_eq!(
        get(s.addr, "/v2/models").json(),
        json!({"models": ["fixed", "iris"]})
    );
}

#[test]
fn a_loading_model_is_not_ready_and_answers_503() {
    // A state whose model never finishes loading, served over a real socket.
    let planned =
        inferd_server::registry::plan(&[named("iris", "examples/models/iris/model.onnx")], None)
            .expect("plan");
    let state = Arc::new(AppState::new(
        inferd_server::Registry::with_planned(&planned),
        1024,
    ));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move { axum::serve(listener, inferd_server::app(state)).await });

    assert_eq!(get(addr, "/v2/health/live").status, 200);
    let r = get(addr, "/v2/health/ready");
    assert_eq!((r.status, r.json()["ready"].clone()), (503, json!(false)));
    let r = get(addr, "/v2/models/iris/ready");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["ready"], false);
    assert_eq!(
        get(addr, "/v1/models/iris").json(),
        json!({"name": "iris", "ready": false})
    );
    let r = post(addr, "/v2/models/iris/infer", "{}");
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("still loading"))
    );
}

#[test]
fn a_model_that_fails_to_load_stops_the_server_with_its_reason() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = rt.block_on(async {
        let config = ServerConfig {
            addr: "127.0.0.1:0".parse().expect("addr"),
            ..ServerConfig::default()
        };
        let server = Server::bind(
            &config,
            &[named("zm", "tests/fixtures/models/iris_zipmap/model.onnx")],
            None,
        )
        .await
        .expect("binds");
        tokio::time::timeout(Duration::from_secs(60), server.run(std::future::pending()))
            .await
            .expect("stops by itself")
    });
    let err = result.expect_err("load fails");
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(text.contains("model 'zm'"), "{text}");
    assert!(text.contains("ZipMap"), "{text}");
}

#[test]
fn shutdown_turns_readiness_off_and_finishes_in_flight_requests() {
    let s = iris_server();
    let body = r#"{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}]}"#;
    // A request in flight: headers and half the body sent.
    let mut stream = std::net::TcpStream::connect(s.addr).expect("connect");
    let head = format!(
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    std::io::Write::write_all(&mut stream, head.as_bytes()).expect("head");
    std::io::Write::write_all(&mut stream, &body.as_bytes()[..20]).expect("half");
    // Wait until the server has the request before asking it to stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(s.addr, "/metrics")
        .text()
        .contains("inferd_requests_in_flight 1")
    {
        assert!(Instant::now() < deadline, "request never arrived");
        thread::sleep(Duration::from_millis(5));
    }
    let state = s.state.clone();
    let addr = s.addr;
    let stopper = thread::spawn(move || s.stop());
    let deadline = Instant::now() + Duration::from_secs(10);
    while state.is_ready() {
        assert!(Instant::now() < deadline, "readiness never turned off");
        thread::sleep(Duration::from_millis(5));
    }
    // New connections are refused while draining (the listener is closed).
    thread::sleep(Duration::from_millis(50));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting"
    );
    std::io::Write::write_all(&mut stream, &body.as_bytes()[20..]).expect("rest");
    let reply = http::read_reply(&mut stream);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["outputs"][0]["data"], json!([2]));
    assert_eq!(stopper.join().expect("stopper"), Ok(()));
}

#[test]
fn drain_is_bounded() {
    let s = TestServer::start_with(
        vec![named("iris", "examples/models/iris/model.onnx")],
        |c| c.drain_timeout = Duration::from_millis(200),
    );
    // A client that never finishes its request must not hold the server up.
    let mut stream = std::net::TcpStream::connect(s.addr).expect("connect");
    std::io::Write::write_all(
        &mut stream,
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(s.addr, "/metrics")
        .text()
        .contains("inferd_requests_in_flight 1")
    {
        assert!(Instant::now() < deadline, "request never arrived");
        thread::sleep(Duration::from_millis(5));
    }
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(s.stop());
    });
    let result = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("run returned after the drain timeout");
    assert_eq!(result, Ok(()));
}

#[test]
fn bearer_tokens_guard_the_data_plane_but_not_probes() {
    let old = "old-token-0123456789abcdef";
    let new = "new-token-0123456789abcdef";
    let tokens = Tokens::parse(&format!("{old}\n{new}\n")).expect("tokens");
    let s = TestServer::start_with(
        vec![named("iris", "examples/models/iris/model.onnx")],
        |c| c.tokens = tokens,
    );
    let row = r#"{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}"#;
    let authed = |path: &str, token: &str, body: &str| {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        send_raw(s.addr, raw.as_bytes())
    };

    // Probes and metrics need no token.
    for path in ["/v2/health/live", "/v2/health/ready", "/metrics", "/"] {
        assert_eq!(get(s.addr, path).status, 200, "{path}");
    }
    // Everything else does, and a known and an unknown model look the same.
    let known = post(s.addr, "/v2/models/iris/infer", row);
    let unknown = post(s.addr, "/v2/models/secret-model/infer", row);
    assert_eq!((known.status, unknown.status), (401, 401));
    assert_eq!(known.body, unknown.body);
    assert_eq!(known.header("www-authenticate"), Some("Bearer"));
    assert!(
        known.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("bearer token"))
    );
    assert_eq!(get(s.addr, "/v2/models/iris").status, 401);
    assert_eq!(get(s.addr, "/v2/models").status, 401);
    assert_eq!(
        authed("/v2/models/iris/infer", "wrong-token-0123456789ab", row).status,
        401
    );
    assert_eq!(
        authed("/v2/models/iris/infer", &old[..old.len() - 1], row).status,
        401
    );

    // Either token works (rotation).
    for token in [old, new] {
        let r = authed("/v2/models/iris/infer", token, row);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["outputs"][0]["data"], json!([0]));
    }
    assert_eq!(
        authed("/v2/models/secret-model/infer", new, row).status,
        404
    );
    let metrics = get(s.addr, "/metrics").text();
    assert!(
        metrics.contains("inferd_auth_failures_total 6"),
        "{metrics}"
    );
}

/// Posts a binary-extension body: JSON header of `json.len()` bytes, then `blob`.
fn post_binary(
    addr: SocketAddr,
    path: &str,
    json: &str,
    blob: &[u8],
    header_len: usize,
) -> http::Reply {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nInference-Header-Content-Length: {header_len}\r\nContent-Length: {}\r\n\r\n",
        json.len() + blob.len()
    )
    .into_bytes();
    raw.extend_from_slice(json.as_bytes());
    raw.extend_from_slice(blob);
    send_raw(addr, &raw)
}

#[test]
fn binary_tensor_data_in_and_out() {
    let s = iris_server();
    let want = expected("examples/models/iris");
    let rows: Vec<f32> = want["inputs"][0]["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|v| v.as_f64().expect("f") as f32)
        .collect();
    let blob: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
    let json = format!(
        r#"{{"id": "b1", "inputs": [{{"name": "input", "shape": [6, 4], "datatype": "FP32", "parameters": {{"binary_data_size": {}}}}}], "parameters": {{"binary_data_output": true}}, "outputs": [{{"name": "label", "parameters": {{"binary_data": false}}}}, {{"name": "probabilities"}}]}}"#,
        blob.len()
    );
    let r = post_binary(s.addr, "/v2/models/iris/infer", &json, &blob, json.len());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let json_len: usize = r
        .header("inference-header-content-length")
        .and_then(|v| v.parse().ok())
        .expect("header length");
    let head: Value = serde_json::from_slice(&r.body[..json_len]).expect("json header");
    assert_eq!(head["id"], "b1");
    // label stays JSON (per-output override), probabilities come as raw FP32.
    assert_eq!(head["outputs"][0]["data"], want["outputs"][0]["data"]);
    assert_eq!(
        head["outputs"][1]["parameters"]["binary_data_size"],
        6 * 3 * 4
    );
    let probabilities: Vec<f32> = r.body[json_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let expected: Vec<f64> = serde_json::from_value(want["outputs"][1]["data"].clone()).expect("p");
    assert_eq!(probabilities.len(), expected.len());
    for (g, w) in probabilities.iter().zip(&expected) {
        assert!((f64::from(*g) - w).abs() <= 1e-5, "{g} vs {w}");
    }

    // A JSON-only request with binary_data on an output also gets binary back.
    let body = r#"{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}], "outputs": [{"name": "label", "parameters": {"binary_data": true}}]}"#;
    let r = post(s.addr, "/v2/models/iris/infer", body);
    let json_len: usize = r
        .header("inference-header-content-length")
        .and_then(|v| v.parse().ok())
        .expect("header length");
    assert_eq!(&r.body[json_len..], &2i64.to_le_bytes());

    // Bad binary requests: 400 with the reason, and the server still serves.
    for (json, blob, header_len, message) in [
        (
            json.clone(),
            blob[..8].to_vec(),
            json.len(),
            "only 8 are left",
        ),
        (json.clone(), blob.clone(), 0, "raw binary request"),
        (
            json.clone(),
            blob.clone(),
            json.len() + blob.len() + 1,
            "the body holds",
        ),
        (
            json.replace("\"binary_data_output\": true", "\"binary_data_output\": 1"),
            blob.clone(),
            usize::MAX,
            "",
        ),
    ] {
        let header_len = if header_len == usize::MAX {
            json.len()
        } else {
            header_len
        };
        let r = post_binary(s.addr, "/v2/models/iris/infer", &json, &blob, header_len);
        assert_eq!(r.status, 400, "{message}: {}", r.text());
        assert!(
            r.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains(message)),
            "{}",
            r.text()
        );
    }
    let raw = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nInference-Header-Content-Length: many\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(send_raw(s.addr, raw).status, 400);
    assert_eq!(
        get(s.addr, "/v2").json()["extensions"],
        json!([
            "binary_tensor_data",
            "model_configuration",
            "model_repository",
            "statistics"
        ])
    );
    assert_eq!(post(s.addr, "/v2/models/iris/infer", body).status, 200);
}

#[test]
fn model_configuration_and_statistics() {
    let s = iris_server();
    let config = get(s.addr, "/v2/models/iris/config").json();
    assert_eq!(config["name"], "iris");
    assert_eq!(config["max_batch_size"], 0);
    assert_eq!(
        config["input"],
        json!([{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}])
    );
    assert_eq!(
        config["output"][0],
        json!({"name": "label", "data_type": "TYPE_INT64", "dims": [-1]})
    );
    assert_eq!(config["instance_group"][0]["kind"], "KIND_CPU");
    assert_eq!(config["instance_group"][0]["count"], 2);
    assert_eq!(
        get(s.addr, "/v2/models/iris/versions/1/config").json(),
        config
    );
    assert_eq!(
        get(s.addr, "/v2/models/identity/config").json()["input"][12]["data_type"],
        "TYPE_STRING"
    );
    assert_eq!(get(s.addr, "/v2/models/nope/config").status, 404);
    assert_eq!(get(s.addr, "/v2/models/iris/versions/3/config").status, 404);

    let zero = get(s.addr, "/v2/models/iris/stats").json();
    assert_eq!(zero["model_stats"][0]["inference_count"], 0);
    assert_eq!(zero["model_stats"][0]["last_inference"], 0);
    let body = r#"{"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": [1,2,3,4,1,2,3,4,1,2,3,4]}]}"#;
    for _ in 0..2 {
        assert_eq!(post(s.addr, "/v2/models/iris/infer", body).status, 200);
    }
    assert_eq!(post(s.addr, "/v2/models/iris/infer", "{}").status, 400);
    let stats = get(s.addr, "/v2/models/iris/stats").json();
    let m = &stats["model_stats"][0];
    assert_eq!(
        (m["name"].clone(), m["version"].clone()),
        (json!("iris"), json!("1"))
    );
    assert_eq!(m["execution_count"], 2);
    assert_eq!(m["inference_count"], 6);
    assert_eq!(m["inference_stats"]["success"]["count"], 2);
    assert_eq!(m["inference_stats"]["fail"]["count"], 1);
    assert_eq!(m["inference_stats"]["compute_infer"]["count"], 2);
    let success_ns = m["inference_stats"]["success"]["ns"].as_u64().expect("ns");
    let infer_ns = m["inference_stats"]["compute_infer"]["ns"]
        .as_u64()
        .expect("ns");
    assert!(
        infer_ns > 0 && infer_ns < success_ns,
        "{infer_ns} vs {success_ns}"
    );
    assert!(m["last_inference"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(
        get(s.addr, "/v2/models/iris/versions/1/stats").json(),
        stats
    );
    let all = get(s.addr, "/v2/models/stats").json();
    assert_eq!(all["model_stats"].as_array().map(Vec::len), Some(5));
    assert_eq!(get(s.addr, "/v2/models/nope/stats").status, 404);
}
