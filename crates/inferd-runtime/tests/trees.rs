//! Tree models on the native engine against the libraries' own predictions
//! (`tests/fixtures/models/trees/*/expected.json`, made by
//! `examples/make_tree_models.py`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use inferd_runtime::{Model, ModelFormat, TreeModel};
use inferd_tensor::{DataType, Dim, Tensor, TensorData};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/trees")
        .join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("json")
}

/// The fixture's input rows as a tensor (null in the data is NaN).
fn input(want: &Value) -> Tensor {
    let spec = &want["inputs"][0];
    let shape: Vec<usize> = spec["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let data: Vec<f32> = spec["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|v| v.as_f64().map_or(f32::NAN, |f| f as f32))
        .collect();
    Tensor::new(
        spec["name"].as_str().expect("name"),
        shape,
        TensorData::Fp32(data),
    )
    .expect("tensor")
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

fn check_outputs(name: &str, model: &dyn Model, want: &Value) {
    let inputs = model
        .metadata()
        .arrange_inputs(vec![input(want)])
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = model
        .infer(inputs)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let outputs = want["outputs"].as_array().expect("outputs");
    assert_eq!(got.len(), outputs.len(), "{name}: output count");
    for (tensor, w) in got.iter().zip(outputs) {
        let out = w["name"].as_str().expect("name");
        assert_eq!(tensor.name(), out, "{name}");
        let shape: Vec<usize> = w["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        assert_eq!(tensor.shape(), shape.as_slice(), "{name}.{out}: shape");
        let data = w["data"].as_array().expect("data");
        match (tensor.data(), w["datatype"].as_str().expect("datatype")) {
            (TensorData::Fp32(v), "FP32") => {
                for (i, (g, e)) in v.iter().zip(data).enumerate() {
                    let e = e.as_f64().expect("number");
                    assert!(
                        close(f64::from(*g), e),
                        "{name}.{out}[{i}]: got {g}, expected {e}"
                    );
                }
            }
            (TensorData::Int64(v), "INT64") => {
                let e: Vec<i64> = data.iter().map(|x| x.as_i64().expect("int")).collect();
                assert_eq!(v, &e, "{name}.{out}");
            }
            (TensorData::Bytes(v), "BYTES") => {
                let e: Vec<Vec<u8>> = data
                    .iter()
                    .map(|x| x.as_str().expect("str").as_bytes().to_vec())
                    .collect();
                assert_eq!(v, &e, "{name}.{out}");
            }
            (d, t) => panic!("{name}.{out}: got {}, expected {t}", d.datatype()),
        }
    }
}

fn load(name: &str, file: &str, format: ModelFormat) -> Arc<dyn Model> {
    inferd_runtime::load(&fixture(name).join(file), format)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn xgboost_fixtures_match_xgboost() {
    for name in [
        "xgb_binary",
        "xgb_logitraw",
        "xgb_multiclass",
        "xgb_softmax",
        "xgb_regression",
        "xgb_poisson",
    ] {
        let model = load(name, "model.json", ModelFormat::Xgboost);
        assert_eq!(model.metadata().platform, "xgboost_json");
        check_outputs(name, model.as_ref(), &expected(name));
    }
}

#[test]
fn lightgbm_fixtures_match_lightgbm() {
    for name in [
        "lgb_binary",
        "lgb_multiclass",
        "lgb_regression",
        "lgb_zero_missing",
        "lgb_categorical",
    ] {
        let model = load(name, "model.txt", ModelFormat::Lightgbm);
        assert_eq!(model.metadata().platform, "lightgbm_text");
        check_outputs(name, model.as_ref(), &expected(name));
    }
}

#[test]
fn onnx_tree_graphs_run_natively_and_match_onnxruntime() {
    for name in [
        "sk_rf_zipmap",
        "sk_rf_binary",
        "sk_gb_binary",
        "sk_gb_multiclass",
        "sk_rf_regressor",
        "sk_gb_regressor",
        "sk_et_regressor",
        "sk_scaler_gb",
        "sk_dt_strings",
    ] {
        let path = fixture(name).join("model.onnx");
        let native = TreeModel::load_onnx(&path)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: not recognised as a tree ensemble"));
        check_outputs(name, &native, &expected(name));
        // The ordinary ONNX load path takes the same route.
        let served = load(name, "model.onnx", ModelFormat::Onnx);
        assert_eq!(served.metadata(), native.metadata());
        assert_eq!(served.metadata().platform, "onnx_onnxv1");
    }
}

#[test]
fn booster_metadata() {
    let binary = load("xgb_binary", "model.json", ModelFormat::Xgboost);
    let meta = binary.metadata();
    assert_eq!(meta.inputs.len(), 1);
    assert_eq!(meta.inputs[0].name, "input");
    assert_eq!(meta.inputs[0].datatype, DataType::Fp32);
    assert_eq!(meta.inputs[0].shape, vec![Dim::Dynamic, Dim::Fixed(30)]);
    let outs: Vec<(&str, Vec<i64>)> = meta
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.shape_i64()))
        .collect();
    assert_eq!(
        outs,
        vec![("predict", vec![-1]), ("predict_proba", vec![-1, 2])]
    );

    let multi = load("lgb_multiclass", "model.txt", ModelFormat::Lightgbm);
    let outs: Vec<(&str, Vec<i64>)> = multi
        .metadata()
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.shape_i64()))
        .collect();
    assert_eq!(
        outs,
        vec![("predict", vec![-1, 3]), ("predict_proba", vec![-1, 3])]
    );

    let regression = load("xgb_regression", "model.json", ModelFormat::Xgboost);
    let outs: Vec<&str> = regression
        .metadata()
        .outputs
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(outs, vec!["predict"]);
}

#[test]
fn zipmap_output_is_a_probability_tensor() {
    let model = load("sk_rf_zipmap", "model.onnx", ModelFormat::Onnx);
    let meta = model.metadata();
    assert_eq!(meta.inputs[0].shape, vec![Dim::Dynamic, Dim::Fixed(4)]);
    let outs: Vec<(&str, DataType, Vec<i64>)> = meta
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.datatype, o.shape_i64()))
        .collect();
    assert_eq!(
        outs,
        vec![
            ("output_label", DataType::Int64, vec![-1]),
            ("output_probability", DataType::Fp32, vec![-1, 3]),
        ]
    );
}

#[test]
fn batch_sizes_agree_with_row_by_row() {
    // Blocks of 8, 4, 2 and 1 rows must give what single rows give.
    let want = expected("lgb_binary");
    let model = load("lgb_binary", "model.txt", ModelFormat::Lightgbm);
    let all = input(&want);
    let (name, shape, data) = all.clone().into_parts();
    let TensorData::Fp32(rows) = data else {
        panic!("fp32")
    };
    let whole = model.infer(vec![all]).expect("infer");
    let features = shape[1];
    for (i, row) in rows.chunks_exact(features).enumerate() {
        let one =
            Tensor::new(&name, vec![1, features], TensorData::Fp32(row.to_vec())).expect("tensor");
        let got = model.infer(vec![one]).expect("infer");
        let (TensorData::Fp32(a), TensorData::Fp32(b)) = (got[0].data(), whole[0].data()) else {
            panic!("fp32")
        };
        assert_eq!(a[0], b[i], "row {i}");
    }
}

#[test]
fn empty_batch() {
    let model = load("xgb_multiclass", "model.json", ModelFormat::Xgboost);
    let x = Tensor::new("input", vec![0, 4], TensorData::Fp32(vec![])).expect("tensor");
    let out = model.infer(vec![x]).expect("infer");
    assert_eq!(out[0].shape(), &[0, 3]);
}

#[test]
fn bad_files_are_load_errors() {
    let dir = tempfile_dir();
    let cases: [(&str, &[u8], ModelFormat); 4] = [
        ("a.json", b"{\"learner\": 3}", ModelFormat::Xgboost),
        ("b.json", b"", ModelFormat::Xgboost),
        ("c.txt", b"tree\nversion=v4\n", ModelFormat::Lightgbm),
        ("d.txt", &[0xff, 0xfe, 0x00], ModelFormat::Lightgbm),
    ];
    for (file, bytes, format) in cases {
        let path = dir.join(file);
        std::fs::write(&path, bytes).expect("write");
        let Err(err) = inferd_runtime::load(&path, format) else {
            panic!("{file} loaded");
        };
        assert_eq!(err.kind(), "load", "{file}: {err}");
    }
    let Err(missing) = inferd_runtime::load(&dir.join("nope.json"), ModelFormat::Xgboost) else {
        panic!("a missing file loaded");
    };
    assert_eq!(missing.kind(), "io");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("inferd-trees-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn formats_by_name_and_extension() {
    assert_eq!(
        ModelFormat::parse("xgboost").ok(),
        Some(ModelFormat::Xgboost)
    );
    assert_eq!(
        ModelFormat::parse("LightGBM").ok(),
        Some(ModelFormat::Lightgbm)
    );
    assert_eq!(
        ModelFormat::from_path(Path::new("m/model.json")),
        Some(ModelFormat::Xgboost)
    );
    assert_eq!(
        ModelFormat::from_path(Path::new("m/model.txt")),
        Some(ModelFormat::Lightgbm)
    );
    assert_eq!(ModelFormat::Xgboost.default_file_name(), "model.json");
    assert_eq!(ModelFormat::Lightgbm.default_file_name(), "model.txt");
    let err = ModelFormat::parse("pickle").expect_err("unknown");
    assert!(err.to_string().contains("xgboost, lightgbm"), "{err}");
}
