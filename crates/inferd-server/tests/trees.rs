//! Tree models over HTTP: a real server on an ephemeral loopback port serving
//! XGBoost, LightGBM and an ONNX tree ensemble with a ZipMap.

#[path = "../../../tests/support/http.rs"]
mod http;
#[path = "support/server.rs"]
mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::{get, post};
use inferd_server::ModelSource;
use serde_json::{Value, json};
use server::TestServer;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/trees")
        .join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("expected");
    serde_json::from_str(&text).expect("json")
}

/// Up to `rows` of the fixture's rows without NaN (which JSON cannot carry)
/// as a V2 request, and the expected outputs for those rows.
fn request_and_expected(name: &str, rows: usize) -> (Value, Vec<Value>) {
    let want = expected(name);
    let input = &want["inputs"][0];
    let features = input["shape"][1].as_u64().expect("features") as usize;
    let all = input["data"].as_array().expect("data");
    let picked: Vec<usize> = all
        .chunks(features)
        .enumerate()
        .filter(|(_, row)| row.iter().all(Value::is_number))
        .map(|(i, _)| i)
        .take(rows)
        .collect();
    assert!(picked.len() >= 2, "{name}: too few rows without NaN");
    let data: Vec<Value> = picked
        .iter()
        .flat_map(|&r| all[r * features..(r + 1) * features].to_vec())
        .collect();
    let body = json!({"inputs": [{
        "name": input["name"], "datatype": "FP32", "shape": [picked.len(), features], "data": data
    }]});
    let outputs = want["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| {
            let per_row: usize = o["shape"].as_array().expect("shape")[1..]
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .product();
            let mut shape = o["shape"].as_array().expect("shape").clone();
            shape[0] = json!(picked.len());
            let values = o["data"].as_array().expect("data");
            let data: Vec<Value> = picked
                .iter()
                .flat_map(|&r| values[r * per_row..(r + 1) * per_row].to_vec())
                .collect();
            json!({"name": o["name"], "datatype": o["datatype"], "shape": shape, "data": data})
        })
        .collect();
    (body, outputs)
}

fn check(addr: SocketAddr, model: &str, fixture_name: &str) {
    let (body, want) = request_and_expected(fixture_name, 12);
    let reply = post(
        addr,
        &format!("/v2/models/{model}/infer"),
        &body.to_string(),
    );
    assert_eq!(reply.status, 200, "{model}: {}", reply.text());
    let got = reply.json();
    let outputs = got["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), want.len(), "{model}");
    for (g, w) in outputs.iter().zip(&want) {
        assert_eq!(g["name"], w["name"], "{model}");
        assert_eq!(g["datatype"], w["datatype"], "{model}");
        assert_eq!(g["shape"], w["shape"], "{model}");
        let (gd, wd) = (
            g["data"].as_array().expect("data"),
            w["data"].as_array().expect("data"),
        );
        assert_eq!(gd.len(), wd.len());
        for (a, b) in gd.iter().zip(wd) {
            let (a, b) = (a.as_f64().expect("number"), b.as_f64().expect("number"));
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{model}.{}: {a} vs {b}",
                w["name"]
            );
        }
    }
}

#[test]
fn tree_models_over_http() {
    let s = TestServer::start(vec![
        ModelSource::Named {
            name: "xgb".into(),
            path: fixture("xgb_multiclass"),
        },
        ModelSource::Named {
            name: "lgb".into(),
            path: fixture("lgb_binary"),
        },
        ModelSource::Named {
            name: "rf".into(),
            path: fixture("sk_rf_zipmap").join("model.onnx"),
        },
    ]);
    let meta = get(s.addr, "/v2/models/xgb").json();
    assert_eq!(meta["platform"], "xgboost_json");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "predict", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 3]}
        ])
    );
    let lgb = get(s.addr, "/v2/models/lgb").json();
    assert_eq!(lgb["platform"], "lightgbm_text");
    assert_eq!(
        lgb["outputs"][0],
        json!({"name": "predict", "datatype": "FP32", "shape": [-1]})
    );
    let rf = get(s.addr, "/v2/models/rf").json();
    assert_eq!(rf["platform"], "onnx_onnxv1");
    assert_eq!(
        rf["outputs"][1],
        json!({"name": "output_probability", "datatype": "FP32", "shape": [-1, 3]})
    );

    check(s.addr, "xgb", "xgb_multiclass");
    check(s.addr, "lgb", "lgb_binary");
    check(s.addr, "rf", "sk_rf_zipmap");

    // Asking for one output returns only that one.
    let (mut body, _) = request_and_expected("lgb_binary", 2);
    body["outputs"] = json!([{"name": "predict_proba"}]);
    let reply = post(s.addr, "/v2/models/lgb/infer", &body.to_string()).json();
    assert_eq!(reply["outputs"].as_array().map(Vec::len), Some(1));
    assert_eq!(reply["outputs"][0]["shape"][1], json!(2));
}
