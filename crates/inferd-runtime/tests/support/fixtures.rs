//! Reads the model fixtures' `expected.json` files (written by
//! examples/make_models.py) and compares outputs, for the runtime's tests.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use inferd_tensor::{Tensor, TensorData};
use serde_json::Value;

/// A path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// Reads one tensor of an `expected.json` written by examples/make_models.py.
pub fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let data = v["data"].as_array().expect("data");
    let data = match v["datatype"].as_str().expect("datatype") {
        "FP32" => TensorData::Fp32(data.iter().map(|x| x.as_f64().expect("f") as f32).collect()),
        "INT64" => TensorData::Int64(data.iter().map(|x| x.as_i64().expect("i")).collect()),
        other => panic!("fixture datatype {other}"),
    };
    Tensor::new(v["name"].as_str().expect("name"), shape, data).expect("tensor")
}

pub fn expected(path: &str) -> (Vec<Tensor>, Vec<Tensor>) {
    let text = std::fs::read_to_string(repo(path)).expect("expected.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    let list = |k: &str| v[k].as_array().expect(k).iter().map(tensor).collect();
    (list("inputs"), list("outputs"))
}

pub fn assert_close(got: &Tensor, want: &Tensor, tolerance: f32) {
    assert_eq!(got.name(), want.name());
    assert_eq!(got.shape(), want.shape(), "{}", want.name());
    match (got.data(), want.data()) {
        (TensorData::Fp32(g), TensorData::Fp32(w)) => {
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                assert!(
                    (a - b).abs() <= tolerance,
                    "{}[{i}]: {a} vs {b}",
                    want.name()
                );
            }
        }
        (g, w) => assert_eq!(g, w, "{}", want.name()),
    }
}
