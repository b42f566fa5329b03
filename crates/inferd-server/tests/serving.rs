//! Black-box tests of how requests are served: dynamic batching, bounded
//! queues, deadlines, warm-up, and the model repository changing the
//! served set while traffic flows. Real servers, real HTTP.

#[path = "../../../tests/support/http.rs"]
mod http;
#[path = "support/server.rs"]
mod server;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use http::{Reply, get, post, send_raw};
use inferd_server::{ModelControl, ModelSource};
use serde_json::{Value, json};
use server::{TestServer, eventually, expected, repo};

/// A model folder in `root` holding the iris model and, if given, a config.
fn iris_dir(root: &Path, name: &str, config: Option<&Value>) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(
        repo("examples/models/iris/model.onnx"),
        dir.join("model.onnx"),
    )
    .expect("copy");
    if let Some(config) = config {
        std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    }
}

/// Rows of iris input, as a V2 request body.
fn iris_rows(rows: &[[f32; 4]]) -> String {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows.len(), 4], "data": data}]})
        .to_string()
}

/// The first row of the iris fixture and its expected label.
fn iris_row(i: usize) -> ([f32; 4], i64) {
    let want = expected("examples/models/iris");
    let data = want["inputs"][0]["data"].as_array().expect("data");
    let mut row = [0.0f32; 4];
    for (j, v) in row.iter_mut().enumerate() {
        *v = data[i * 4 + j].as_f64().expect("number") as f32;
    }
    (row, want["outputs"][0]["data"][i].as_i64().expect("label"))
}

fn post_with(addr: SocketAddr, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    send_raw(addr, raw.as_bytes())
}

fn stats(addr: SocketAddr, model: &str) -> Value {
    let r = get(addr, &format!("/v2/models/{model}/stats"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["model_stats"][0].clone()
}

fn repository(dir: &Path) -> Vec<ModelSource> {
    vec![ModelSource::Repository(dir.to_path_buf())]
}

#[test]
fn concurrent_requests_run_as_one_batch_and_each_gets_its_rows() {
    let root = tempfile::tempdir().expect("tempdir");
    // A long delay: only a full batch of 8 rows can start the execution.
    let config = json!({
        "max_batch_size": 8,
        "dynamic_batching": {"max_queue_delay_microseconds": 60_000_000},
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    });
    iris_dir(root.path(), "iris", Some(&config));
    let s = TestServer::start(repository(root.path()));
    let addr = s.addr;
    let handles: Vec<_> = (0..4)
        .map(|i| {
            thread::spawn(move || {
                // Two rows per request, different for every request.
                let (a, label_a) = iris_row(i % 6);
                let (b, label_b) = iris_row((i + 3) % 6);
                let r = post(addr, "/v2/models/iris/infer", &iris_rows(&[a, b]));
                assert_eq!(r.status, 200, "{}", r.text());
                let out = r.json();
                assert_eq!(out["outputs"][0]["shape"], json!([2]));
                assert_eq!(out["outputs"][0]["data"], json!([label_a, label_b]));
                assert_eq!(out["outputs"][1]["shape"], json!([2, 3]));
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client");
    }
    let st = stats(addr, "iris");
    assert_eq!(st["inference_count"], 8);
    assert_eq!(st["execution_count"], 1);
    assert_eq!(st["batch_stats"][0]["batch_size"], 8);
    assert_eq!(st["batch_stats"][0]["compute_infer"]["count"], 1);

    let config = get(addr, "/v2/models/iris/config").json();
    assert_eq!(config["max_batch_size"], 8);
    assert_eq!(config["input"][0]["dims"], json!([4]));
    assert_eq!(config["output"][0]["dims"], json!([]));
    assert_eq!(
        config["dynamic_batching"]["max_queue_delay_microseconds"],
        60_000_000
    );
    assert_eq!(config["instance_group"][0]["count"], 1);

    let metrics = get(addr, "/metrics").text();
    assert!(
        metrics.contains(r#"inferd_batch_size_count{model="iris",version="1"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"inferd_queue_duration_seconds_count{model="iris",version="1"} 4"#));

    // More rows than max_batch_size in one request: refused, counted.
    let too_many = iris_rows(&[iris_row(0).0; 9]);
    let r = post(addr, "/v2/models/iris/infer", &too_many);
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("max_batch_size")
    );
    assert!(
        get(addr, "/metrics")
            .text()
            .contains(r#"inferd_rejected_requests_total{model="iris",reason="too_many_rows"} 1"#)
    );
}

#[test]
fn a_full_queue_answers_429_and_expired_requests_504_without_running() {
    let root = tempfile::tempdir().expect("tempdir");
    // Batches of 4 rows or a minute's wait: two one-row requests just wait.
    let config = json!({
        "max_batch_size": 4,
        "dynamic_batching": {
            "max_queue_delay_microseconds": 60_000_000,
            "default_queue_policy": {"max_queue_size": 2}
        },
        "instance_group": [{"count": 1}],
    });
    iris_dir(root.path(), "iris", Some(&config));
    let s = TestServer::start(repository(root.path()));
    let addr = s.addr;
    let row = iris_rows(&[iris_row(0).0]);
    // Both wait past their deadline. The deadline is long enough that the
    // first is still queued when the second arrives on a loaded machine;
    // each is sent once the one before is seen queued.
    let mut waiting = Vec::new();
    for i in 0..2usize {
        let body = if i == 0 {
            row.clone()
        } else {
            // The same deadline, through Triton's `timeout` parameter (µs).
            let mut b: Value = serde_json::from_str(&row).expect("json");
            b["parameters"] = json!({"timeout": 5_000_000});
            b.to_string()
        };
        waiting.push(thread::spawn(move || {
            let headers: Vec<(&str, &str)> = if i == 0 {
                vec![("x-inferd-timeout-ms", "5000")]
            } else {
                vec![]
            };
            post_with(addr, "/v2/models/iris/infer", &body, &headers)
        }));
        let depth = format!(
            r#"inferd_queue_depth{{model="iris",version="1"}} {}"#,
            i + 1
        );
        eventually("the request queues", || {
            get(addr, "/metrics").text().contains(&depth)
        });
    }
    let refused = post(addr, "/v2/models/iris/infer", &row);
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("queue is full")
    );
    for w in waiting {
        let r = w.join().expect("client");
        assert_eq!(r.status, 504, "{}", r.text());
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap_or_default()
                .contains("deadline")
        );
    }
    // Nothing ran: the expired requests were dropped unrun.
    let st = stats(addr, "iris");
    assert_eq!(st["execution_count"], 0);
    assert_eq!(st["inference_stats"]["success"]["count"], 0);
    assert_eq!(st["inference_stats"]["fail"]["count"], 3);
    let metrics = get(addr, "/metrics").text();
    assert!(
        metrics.contains(r#"inferd_rejected_requests_total{model="iris",reason="queue_full"} 1"#)
    );
    assert!(
        metrics.contains(
            r#"inferd_rejected_requests_total{model="iris",reason="deadline_exceeded"} 2"#
        )
    );
    assert!(metrics.contains(r#"inferd_requests_total{model="iris",protocol="v2",code="504"} 2"#));
    // A full batch still runs at once.
    let full = iris_rows(&[iris_row(2).0; 4]);
    let r = post(addr, "/v2/models/iris/infer", &full);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outputs"][0]["data"], json!([1, 1, 1, 1]));
}

#[test]
fn bad_deadlines_are_refused() {
    let s = TestServer::start(vec![server::named(
        "iris",
        "examples/models/iris/model.onnx",
    )]);
    let row = iris_rows(&[iris_row(0).0]);
    for (headers, body, needle) in [
        (
            vec![("x-inferd-timeout-ms", "soon")],
            row.clone(),
            "x-inferd-timeout-ms",
        ),
        (
            vec![("x-inferd-timeout-ms", "-5")],
            row.clone(),
            "x-inferd-timeout-ms",
        ),
        (
            vec![],
            row.replace(
                "{\"inputs\"",
                "{\"parameters\": {\"timeout\": \"1s\"}, \"inputs\"",
            ),
            "parameters.timeout",
        ),
        (
            vec![],
            row.replace(
                "{\"inputs\"",
                "{\"parameters\": {\"timeout\": -1}, \"inputs\"",
            ),
            "parameters.timeout",
        ),
    ] {
        let r = post_with(s.addr, "/v2/models/iris/infer", &body, &headers);
        assert_eq!(r.status, 400, "{body}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap_or_default()
                .contains(needle)
        );
    }
    // 0 means no timeout, as in Triton; a generous one changes nothing.
    let zero = row.replace(
        "{\"inputs\"",
        "{\"parameters\": {\"timeout\": 0}, \"inputs\"",
    );
    assert_eq!(post(s.addr, "/v2/models/iris/infer", &zero).status, 200);
    let r = post_with(
        s.addr,
        "/v1/models/iris:predict",
        r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#,
        &[("x-inferd-timeout-ms", "60000")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_default_timeout_applies_to_requests_without_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = json!({
        "max_batch_size": 4,
        "dynamic_batching": {
            "max_queue_delay_microseconds": 60_000_000,
            "default_queue_policy": {"default_timeout_microseconds": 200_000}
        },
    });
    iris_dir(root.path(), "iris", Some(&config));
    let s = TestServer::start(repository(root.path()));
    let r = post(
        s.addr,
        "/v2/models/iris/infer",
        &iris_rows(&[iris_row(0).0]),
    );
    assert_eq!(r.status, 504, "{}", r.text());
    let config = get(s.addr, "/v2/models/iris/config").json();
    assert_eq!(
        config["dynamic_batching"]["default_queue_policy"]["default_timeout_microseconds"],
        200_000
    );
}

#[test]
fn warm_up_runs_before_ready_and_a_failing_one_fails_the_load() {
    let root = tempfile::tempdir().expect("tempdir");
    let good = json!({
        "max_batch_size": 8,
        "model_warmup": [
            {"name": "generated", "batch_size": 8, "count": 3},
            {"name": "given", "batch_size": 2, "inputs": {"input": {"data_type": "TYPE_FP32", "dims": [4], "random_data": true}}}
        ],
    });
    iris_dir(root.path(), "iris", Some(&good));
    let bad = json!({"model_warmup": [{"name": "wrong", "inputs": {"input": {"data_type": "TYPE_FP32", "dims": [2, 5]}}}]});
    iris_dir(root.path(), "broken", Some(&bad));
    let s = TestServer::start_with(repository(root.path()), |c| {
        c.model_control = ModelControl::Poll;
    });
    // Warm-up runs on the model directly: it is not traffic.
    assert_eq!(stats(s.addr, "iris")["inference_count"], 0);
    let r = post(
        s.addr,
        "/v2/models/iris/infer",
        &iris_rows(&[iris_row(4).0]),
    );
    assert_eq!(r.json()["outputs"][0]["data"], json!([2]));
    let r = get(s.addr, "/v2/models/broken/ready");
    assert_eq!(r.status, 503);
    let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("model_warmup[0].inputs.input"), "{error}");
}

#[test]
fn the_repository_loads_replaces_and_unloads_while_traffic_flows() {
    let root = tempfile::tempdir().expect("tempdir");
    iris_dir(root.path(), "iris", None);
    iris_dir(root.path(), "spare", None);
    let broken = root.path().join("broken");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::copy(
        repo("tests/fixtures/models/not_onnx/model.onnx"),
        broken.join("model.onnx"),
    )
    .expect("copy");
    let s = TestServer::start_with(repository(root.path()), |c| {
        c.model_control = ModelControl::Explicit;
        c.load_models = vec!["iris".into()];
    });
    let addr = s.addr;
    let index = |body: &str| post(addr, "/v2/repository/index", body).json();
    assert_eq!(
        index(""),
        json!([
            {"name": "broken", "state": "UNAVAILABLE", "reason": "unloaded"},
            {"name": "iris", "version": "1", "state": "READY", "reason": ""},
            {"name": "spare", "state": "UNAVAILABLE", "reason": "unloaded"},
        ])
    );
    assert_eq!(
        index(r#"{"ready": true}"#),
        json!([{"name": "iris", "version": "1", "state": "READY", "reason": ""}])
    );
    assert_eq!(get(addr, "/v2/models/spare/ready").status, 404);

    // A model that cannot load says why, and nothing else changes.
    let r = post(addr, "/v2/repository/models/broken/load", "");
    assert_eq!(r.status, 400);
    let why = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("model 'broken'"), "{why}");
    let entry = index("")[0].clone();
    assert_eq!(entry["state"], "UNAVAILABLE");
    assert_eq!(entry["reason"], json!(why));
    let r = get(addr, "/v2/models/broken/ready");
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("model 'broken'")
    );
    assert_eq!(get(addr, "/v2/health/ready").status, 200);

    // Loading, replacing and unloading others while iris takes traffic:
    // every request to iris succeeds.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, served) = (stop.clone(), served.clone());
            thread::spawn(move || {
                let (row, label) = iris_row(2);
                let body = iris_rows(&[row]);
                while !stop.load(Ordering::Relaxed) {
                    let r = post(addr, "/v2/models/iris/infer", &body);
                    assert_eq!(r.status, 200, "{}", r.text());
                    assert_eq!(r.json()["outputs"][0]["data"], json!([label]));
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let r = post(addr, "/v2/repository/models/spare/load", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(addr, "/v2/models/spare/ready").status, 200);
    for round in 0..4 {
        // Replace iris with a new configuration each time.
        let config = json!({"max_batch_size": 4 + round, "dynamic_batching": {}}).to_string();
        let body = json!({"parameters": {"config": config}}).to_string();
        let r = post(addr, "/v2/repository/models/iris/load", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            get(addr, "/v2/models/iris/config").json()["max_batch_size"],
            4 + round
        );
        let before = served.load(Ordering::Relaxed);
        eventually("traffic flows on the new load", || {
            served.load(Ordering::Relaxed) > before + 2
        });
    }
    let r = post(addr, "/v2/repository/models/spare/unload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("every request to iris succeeded");
    }
    assert_eq!(
        post(addr, "/v2/models/spare/infer", &iris_rows(&[iris_row(0).0])).status,
        404
    );
    assert_eq!(index("")[2]["reason"], "unloaded");

    // Unload and load back iris itself.
    assert_eq!(
        post(addr, "/v2/repository/models/iris/unload", "").status,
        200
    );
    assert_eq!(get(addr, "/v2/models/iris/ready").status, 404);
    assert_eq!(
        post(addr, "/v2/repository/models/iris/load", "").status,
        200
    );
    let r = post(addr, "/v2/models/iris/infer", &iris_rows(&[iris_row(5).0]));
    assert_eq!(r.json()["outputs"][0]["data"], json!([2]));

    // Bad repository requests.
    for (path, body, status, needle) in [
        (
            "/v2/repository/models/nope/load",
            "",
            404,
            "no model 'nope'",
        ),
        (
            "/v2/repository/models/nope/unload",
            "",
            404,
            "unknown model",
        ),
        ("/v2/repository/models/iris/load", "{", 400, "EOF"),
        (
            "/v2/repository/models/iris/load",
            r#"{"parameters": {"file:1/model.onnx": "AAAA"}}"#,
            400,
            "not supported",
        ),
        (
            "/v2/repository/models/iris/load",
            r#"{"parameters": {"config": 5}}"#,
            400,
            "parameters.config",
        ),
        (
            "/v2/repository/models/iris/load",
            r#"{"parameters": {"config": "{\"max_batch_size\": \"x\"}"}}"#,
            400,
            "parameters.config: max_batch_size",
        ),
        (
            "/v2/repository/models/iris/unload",
            r#"{"parameters": {"unload_dependents": "yes"}}"#,
            400,
            "unload_dependents",
        ),
        ("/v2/repository/index", r#"{"ready": "yes"}"#, 400, "ready"),
        ("/v2/repository/models/..%2Fetc/load", "", 404, "no model"),
    ] {
        let r = post(addr, path, body);
        assert_eq!(r.status, status, "{path} {body}: {}", r.text());
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(needle), "{path} {body}: {error}");
    }
    // A failed reload keeps the previous load serving, and the index says so.
    assert_eq!(
        get(addr, "/v2/models/iris/config").json()["max_batch_size"],
        0
    );
    let iris = index("")
        .as_array()
        .expect("index")
        .iter()
        .find(|e| e["name"] == "iris")
        .cloned()
        .expect("iris");
    assert_eq!(iris["state"], "READY");
    assert!(
        iris["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("still serving")
    );
    assert_eq!(
        post(addr, "/v2/models/iris/infer", &iris_rows(&[iris_row(0).0])).status,
        200
    );
}

#[test]
fn without_explicit_control_the_set_of_models_is_fixed() {
    let s = TestServer::start(vec![server::named(
        "iris",
        "examples/models/iris/model.onnx",
    )]);
    for path in [
        "/v2/repository/models/iris/load",
        "/v2/repository/models/iris/unload",
    ] {
        let r = post(s.addr, path, "");
        assert_eq!(r.status, 400);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap_or_default()
                .contains("--model-control explicit")
        );
    }
    assert_eq!(
        post(s.addr, "/v2/repository/index", "").json(),
        json!([{"name": "iris", "version": "1", "state": "READY", "reason": ""}])
    );
    assert!(
        get(s.addr, "/v2").json()["extensions"]
            .as_array()
            .expect("extensions")
            .contains(&json!("model_repository"))
    );
}

#[test]
fn polling_follows_the_repository() {
    let root = tempfile::tempdir().expect("tempdir");
    iris_dir(root.path(), "iris", None);
    let s = TestServer::start_with(repository(root.path()), |c| {
        c.model_control = ModelControl::Poll;
        c.poll_interval = std::time::Duration::from_millis(200);
    });
    let addr = s.addr;
    // A new model appears...
    iris_dir(root.path(), "second", None);
    eventually("the new model loads", || {
        get(addr, "/v2/models/second/ready").status == 200
    });
    // ...a changed one reloads...
    std::fs::write(
        root.path().join("second/config.json"),
        json!({"max_batch_size": 2}).to_string(),
    )
    .expect("config");
    eventually("the changed model reloads", || {
        get(addr, "/v2/models/second/config").json()["max_batch_size"] == 2
    });
    // ...a removed one unloads, and the others keep serving.
    std::fs::remove_dir_all(root.path().join("second")).expect("rm");
    eventually("the removed model unloads", || {
        get(addr, "/v2/models/second/ready").status == 404
    });
    let r = post(addr, "/v2/models/iris/infer", &iris_rows(&[iris_row(0).0]));
    assert_eq!(r.status, 200);
    // The API does not change a polled repository.
    assert_eq!(
        post(addr, "/v2/repository/models/iris/unload", "").status,
        400
    );
}
