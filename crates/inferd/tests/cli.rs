//! The `inferd` binary as a user runs it: real processes, real signals.

#[path = "../../../tests/support/http.rs"]
mod http;
#[path = "support/serve.rs"]
mod serve;

use serve::{Serve, inferd, repo, wait_ready};

use serde_json::json;

#[test]
fn serves_the_readme_request_and_stops_cleanly_on_sigterm() {
    let model = repo("examples/models/iris/model.onnx");
    let mut serve = Serve::start(&["--model", &format!("iris={}", model.display())]);
    let addr = serve.addr();
    wait_ready(addr);
    let r = http::post(
        addr,
        "/v2/models/iris/infer",
        r#"{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2,6.7,3.0,5.2,2.3]}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"][0]["data"], json!([0, 2]));
    serve.signal("TERM");
    let status = serve.wait();
    assert_eq!(status.code(), Some(0), "{:#?}", serve.seen);
    assert!(
        serve.seen.iter().any(|l| l.contains("draining")),
        "{:#?}",
        serve.seen
    );
}

#[test]
fn sigint_also_stops_cleanly() {
    let repo_dir = repo("tests/fixtures/models");
    let mut serve = Serve::start(&[
        "--model",
        &format!("iris={}", repo("examples/models/iris").display()),
        "--model",
        &format!("fixed={}", repo_dir.join("fixed").display()),
    ]);
    let addr = serve.addr();
    wait_ready(addr);
    assert_eq!(
        http::get(addr, "/v2/models").json(),
        json!({"models": ["fixed", "iris"]})
    );
    serve.signal("INT");
    assert_eq!(serve.wait().code(), Some(0));
}

#[test]
fn json_logs_are_json() {
    let model = repo("examples/models/iris/model.onnx");
    let mut serve = Serve::start(&[
        "--log-format",
        "json",
        "--model",
        &format!("iris={}", model.display()),
    ]);
    let addr = serve.addr();
    wait_ready(addr);
    serve.signal("TERM");
    assert_eq!(serve.wait().code(), Some(0));
    for line in &serve.seen {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(serve.seen.iter().any(|l| l.contains("model loaded")));
}

fn run_to_failure(args: &[&str]) -> String {
    let out = inferd().args(args).output().expect("run inferd");
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_invocations_fail_with_a_clear_message() {
    let err = run_to_failure(&["serve", "--http-port", "0"]);
    assert!(err.contains("nothing to serve"), "{err}");
    let err = run_to_failure(&[
        "serve",
        "--http-port",
        "0",
        "--model",
        "iris=/no/such/model.onnx",
    ]);
    assert!(err.contains("/no/such/model.onnx"), "{err}");
    let err = run_to_failure(&["serve", "--http-port", "0", "--model", "iris"]);
    assert!(err.contains("NAME=PATH"), "{err}");
    let err = run_to_failure(&["serve", "--http-port", "0", "--model", "../x=/tmp/m.onnx"]);
    assert!(err.contains("invalid model name"), "{err}");
    let zipmap = repo("tests/fixtures/models/iris_zipmap/model.onnx");
    let err = run_to_failure(&[
        "serve",
        "--http-port",
        "0",
        "--model",
        &format!("zm={}", zipmap.display()),
    ]);
    assert!(err.contains("ZipMap"), "{err}");
    let corrupt = repo("tests/fixtures/models/not_onnx/model.onnx");
    let err = run_to_failure(&[
        "serve",
        "--http-port",
        "0",
        "--model",
        &format!("bad={}", corrupt.display()),
    ]);
    assert!(err.contains("model 'bad'"), "{err}");
}

/// Every `--format` the README names works from the binary: a model file
/// whose extension tells nothing (`model.bin`) is served as that format and
/// answers what the library answered; an unknown format is refused with
/// the values that are accepted.
#[test]
fn every_documented_format_serves_a_model_whose_extension_tells_nothing() {
    let cases = [
        ("onnx", "examples/models/iris/model.onnx", None),
        (
            "xgboost",
            "tests/fixtures/models/trees/xgb_regression/model.json",
            Some("tests/fixtures/models/trees/xgb_regression/expected.json"),
        ),
        (
            "lightgbm",
            "tests/fixtures/models/trees/lgb_regression/model.txt",
            Some("tests/fixtures/models/trees/lgb_regression/expected.json"),
        ),
    ];
    for (format, model, expected) in cases {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("model.bin");
        std::fs::copy(repo(model), &path).expect("copy the model");
        let mut serve = Serve::start(&[
            "--format",
            format,
            "--model",
            &format!("m={}", path.display()),
        ]);
        let addr = serve.addr();
        wait_ready(addr);
        match expected {
            None => {
                let r = http::post(
                    addr,
                    "/v2/models/m/infer",
                    r#"{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2,6.7,3.0,5.2,2.3]}]}"#,
                );
                assert_eq!(r.status, 200, "{format}: {}", r.text());
                assert_eq!(r.json()["outputs"][0]["data"], json!([0, 2]), "{format}");
            }
            Some(expected) => {
                let expected: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(repo(expected)).expect("expected.json"),
                )
                .expect("expected.json is JSON");
                // JSON cannot carry the NaNs (missing values, `null` in the
                // file) of some rows: only the complete rows are sent.
                let input = &expected["inputs"][0];
                let features = input["shape"][1].as_u64().expect("shape") as usize;
                let values = input["data"].as_array().expect("data");
                let rows: Vec<usize> = (0..values.len() / features)
                    .filter(|r| {
                        values[r * features..(r + 1) * features]
                            .iter()
                            .all(|v| v.is_number())
                    })
                    .collect();
                assert!(rows.len() >= 5, "{format}: too few complete rows");
                let data: Vec<&serde_json::Value> = rows
                    .iter()
                    .flat_map(|r| &values[r * features..(r + 1) * features])
                    .collect();
                let body = json!({"inputs": [{
                    "name": input["name"], "datatype": "FP32",
                    "shape": [rows.len(), features], "data": data,
                }]})
                .to_string();
                let r = http::post(addr, "/v2/models/m/infer", &body);
                assert_eq!(r.status, 200, "{format}: {}", r.text());
                let got = r.json();
                let output = got["outputs"]
                    .as_array()
                    .and_then(|o| o.iter().find(|o| o["name"] == "predict"))
                    .unwrap_or_else(|| panic!("{format}: no predict output in {got}"));
                let want = expected["outputs"]
                    .as_array()
                    .and_then(|o| o.iter().find(|o| o["name"] == "predict"))
                    .expect("expected predict");
                let want_data: Vec<serde_json::Value> =
                    rows.iter().map(|&r| want["data"][r].clone()).collect();
                let want = json!({"shape": [rows.len()], "data": want_data});
                assert_eq!(output["shape"], want["shape"], "{format}");
                let (got, want) = (
                    output["data"].as_array().expect("data"),
                    want["data"].as_array().expect("data"),
                );
                assert_eq!(got.len(), want.len(), "{format}");
                for (g, w) in got.iter().zip(want) {
                    let (g, w) = (g.as_f64().expect("number"), w.as_f64().expect("number"));
                    assert!(
                        (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{format}: {g} vs {w}"
                    );
                }
            }
        }
    }

    let out = inferd()
        .args(["serve", "--format", "pytorch", "--model", "m=/tmp/m.bin"])
        .output()
        .expect("run inferd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for value in ["onnx", "xgboost", "lightgbm"] {
        assert!(err.contains(value), "{err}");
    }
}

#[test]
fn auth_token_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# data-plane tokens\ns3cret-token-for-tests-0001\n").expect("write");
    let model = format!("iris={}", repo("examples/models/iris/model.onnx").display());
    let mut serve = Serve::start(&[
        "--model",
        &model,
        "--auth-token-file",
        &file.display().to_string(),
    ]);
    let addr = serve.addr();
    wait_ready(addr);
    assert_eq!(http::get(addr, "/v2/models/iris").status, 401);
    let raw = "GET /v2/models/iris HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer s3cret-token-for-tests-0001\r\n\r\n";
    assert_eq!(http::send_raw(addr, raw.as_bytes()).status, 200);
    serve.signal("TERM");
    assert_eq!(serve.wait().code(), Some(0));

    std::fs::write(&file, "\n# nothing\n").expect("write");
    let err = run_to_failure(&[
        "serve",
        "--http-port",
        "0",
        "--model",
        &model,
        "--auth-token-file",
        &file.display().to_string(),
    ]);
    assert!(err.contains("holds no token"), "{err}");
    let err = run_to_failure(&[
        "serve",
        "--http-port",
        "0",
        "--model",
        &model,
        "--auth-token-file",
        "/no/such/file",
    ]);
    assert!(err.contains("cannot read --auth-token-file"), "{err}");
}

#[test]
fn a_port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let model = format!("iris={}", repo("examples/models/iris/model.onnx").display());
    let err = run_to_failure(&["serve", "--http-port", &port, "--model", &model]);
    assert!(err.contains("cannot listen on"), "{err}");
}

#[test]
fn serve_help_names_the_interface() {
    let out = inferd().args(["serve", "--help"]).output().expect("help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--model <NAME=PATH>",
        "--model-repository <DIR>",
        "--format",
        "--host",
        "--http-port",
        "--max-body-bytes",
        "--log-format",
        "--drain-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
}

#[test]
fn bench_reports_add_up_and_outputs_parse() {
    let model = repo("examples/models/iris/model.onnx");
    let mut serve = Serve::start(&["--model", &format!("iris={}", model.display())]);
    let addr = serve.addr();
    wait_ready(addr);
    let dir = tempfile::tempdir().expect("tmp");
    let json_path = dir.path().join("report.json");
    let svg_path = dir.path().join("report.svg");
    let input = repo("examples/models/iris/input.json");
    let out = inferd()
        .args([
            "bench",
            "--url",
            &format!("http://{addr}"),
            "--model",
            "iris",
        ])
        .args(["--input", &input.display().to_string()])
        .args([
            "--concurrency",
            "1,4",
            "--duration",
            "2s",
            "--warmup",
            "100ms",
        ])
        .args(["--requests", "300", "--markdown"])
        .args(["--json", &json_path.display().to_string()])
        .args(["--plot", &svg_path.display().to_string()])
        .output()
        .expect("bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json written")).expect("JSON");
    assert_eq!(report["mode"], "closed");
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    for (step, conns) in steps.iter().zip([1, 4]) {
        assert_eq!(step["concurrency"], conns);
        let t = &step["targets"][0];
        let requests = t["requests"].as_u64().expect("requests");
        let successes = t["successes"].as_u64().expect("successes");
        let errors: u64 = t["errors"]
            .as_object()
            .expect("errors")
            .values()
            .filter_map(serde_json::Value::as_u64)
            .sum();
        assert_eq!(requests, successes + errors);
        assert_eq!(errors, 0);
        // The request bound holds (the duration is long enough to reach it).
        assert_eq!(requests, 300);
        let l = &t["latency_us"];
        let p = |k: &str| l[k].as_u64().expect("percentile");
        assert!(
            0 < p("p50") && p("p50") <= p("p90") && p("p90") <= p("p99") && p("p99") <= p("max")
        );
        assert!(t["requests_per_second"].as_f64().expect("rps") > 0.0);
    }

    let markdown = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = markdown.lines().collect();
    assert_eq!(lines.len(), 4, "{markdown}");
    assert!(lines[0].starts_with("| conns | target | req/s | p50 µs"));
    assert!(lines[1].starts_with("|---|"));
    let columns = lines[0].matches('|').count();
    assert!(
        lines.iter().all(|l| l.matches('|').count() == columns),
        "{markdown}"
    );
    assert!(lines[2].starts_with("| 1 | iris |"));

    let svg = std::fs::read_to_string(&svg_path).expect("plot written");
    assert!(
        svg.contains("<svg") && svg.contains("throughput"),
        "not an SVG chart"
    );
}

#[test]
fn bench_counts_errors_by_kind() {
    let model = repo("examples/models/iris/model.onnx");
    let mut serve = Serve::start(&["--model", &format!("iris={}", model.display())]);
    let addr = serve.addr();
    wait_ready(addr);
    let dir = tempfile::tempdir().expect("tmp");
    let json_path = dir.path().join("report.json");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let out = inferd()
        .arg("bench")
        // A V2 body sent to V1 :predict is a 400; a closed port refuses connections.
        .args([
            "--target",
            &format!("v1=http://{addr}/v1/models/iris:predict"),
        ])
        .args([
            "--target",
            &format!("dead=http://{dead}/v2/models/iris/infer"),
        ])
        .args([
            "--input",
            &repo("examples/models/iris/input.json")
                .display()
                .to_string(),
        ])
        .args([
            "--concurrency",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--requests",
            "50",
        ])
        .args(["--json", &json_path.display().to_string()])
        .output()
        .expect("bench");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json")).expect("JSON");
    let targets = report["steps"][0]["targets"].as_array().expect("targets");
    assert_eq!(targets[0]["errors"]["http_400"], 50);
    assert_eq!(targets[0]["successes"], 0);
    assert_eq!(targets[1]["errors"]["connect"], 50);
    assert_eq!(targets[1]["requests"], 50);
}

#[test]
fn fetch_places_a_verified_model_and_refuses_a_wrong_checksum() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = repo("examples/models/iris/model.onnx");
    let model = std::fs::canonicalize(model).expect("model");
    let bytes = std::fs::read(&model).expect("read model");
    let dest = dir.path().join("models/iris");
    let out = inferd()
        .args(["fetch", "--storage-uri"])
        .arg(&model)
        .arg("--dest")
        .arg(&dest)
        .output()
        .expect("run fetch");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(dest.join("model.onnx")).expect("placed"),
        bytes
    );
    // The placed folder serves.
    let mut serve = Serve::start(&["--model", &format!("iris={}", dest.display())]);
    let addr = serve.addr();
    wait_ready(addr);

    let other = dir.path().join("models/other");
    let out = inferd()
        .args(["fetch", "--storage-uri"])
        .arg(&model)
        .arg("--dest")
        .arg(&other)
        .args(["--sha256", &"0".repeat(64)])
        .output()
        .expect("run fetch");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{out:?}"
    );
    assert!(!other.exists());
}
