use inferd_tensor::{DataType, Dim, Tensor, TensorData, f16};

use super::*;

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;
use fixtures::{assert_close, expected, repo};

fn load(path: &str) -> OnnxModel {
    OnnxModel::load(&repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn check_against_expected(model_dir: &str, tolerance: f32) {
    let model = load(&format!("{model_dir}/model.onnx"));
    let (inputs, outputs) = expected(&format!("{model_dir}/expected.json"));
    let inputs = model.metadata().arrange_inputs(inputs).expect("inputs fit");
    let got = model.infer(inputs).expect("runs");
    assert_eq!(got.len(), outputs.len());
    for (g, w) in got.iter().zip(&outputs) {
        assert_close(g, w, tolerance);
    }
}

#[test]
fn iris_metadata_has_a_dynamic_batch() {
    let model = load("examples/models/iris/model.onnx");
    let meta = model.metadata();
    assert_eq!(
        meta.inputs,
        vec![TensorSpec::new(
            "input",
            DataType::Fp32,
            vec![Dim::Dynamic, Dim::Fixed(4)]
        )]
    );
    let outputs: Vec<(&str, DataType, Vec<i64>)> = meta
        .outputs
        .iter()
        .map(|s| (s.name.as_str(), s.datatype, s.shape_i64()))
        .collect();
    assert_eq!(
        outputs,
        vec![
            ("label", DataType::Int64, vec![-1]),
            ("probabilities", DataType::Fp32, vec![-1, 3]),
        ]
    );
}

#[test]
fn iris_matches_onnxruntime() {
    check_against_expected("examples/models/iris", 1e-5);
}

#[test]
fn mlp_matches_onnxruntime() {
    check_against_expected("examples/models/mlp", 1e-4);
}

#[test]
fn one_loaded_model_runs_any_batch_size() {
    let model = load("examples/models/iris/model.onnx");
    let (inputs, outputs) = expected("examples/models/iris/expected.json");
    let TensorData::Fp32(rows) = inputs[0].data() else {
        panic!("fp32 input")
    };
    let TensorData::Int64(labels) = outputs[0].data() else {
        panic!("int64 labels")
    };
    for n in [1, 3, 6, 1] {
        let input = Tensor::new(
            "input",
            vec![n, 4],
            TensorData::Fp32(rows[..n * 4].to_vec()),
        )
        .expect("tensor");
        let got = model.infer(vec![input]).expect("runs");
        assert_eq!(
            got[0].data(),
            &TensorData::Int64(labels[..n].to_vec()),
            "batch {n}"
        );
        assert_eq!(got[1].shape(), &[n, 3]);
    }
}

#[test]
fn fixed_and_multi_input_models() {
    check_against_expected("tests/fixtures/models/fixed", 0.0);
    check_against_expected("tests/fixtures/models/multi", 0.0);
    let fixed = load("tests/fixtures/models/fixed/model.onnx");
    assert_eq!(
        fixed.metadata().inputs[0].shape,
        vec![Dim::Fixed(2), Dim::Fixed(3)]
    );
}

#[test]
fn every_datatype_passes_through_identity() {
    let model = load("tests/fixtures/models/identity/model.onnx");
    let meta = model.metadata().clone();
    assert_eq!(meta.inputs.len(), 13);
    let sample = |t: DataType| -> TensorData {
        match t {
            DataType::Bool => TensorData::Bool(vec![true, false, true, true, false, false]),
            DataType::Uint8 => TensorData::Uint8(vec![0, 1, 2, 3, 4, 255]),
            DataType::Uint16 => TensorData::Uint16(vec![0, 1, 2, 3, 4, 65535]),
            DataType::Uint32 => TensorData::Uint32(vec![0, 1, 2, 3, 4, u32::MAX]),
            DataType::Uint64 => TensorData::Uint64(vec![0, 1, 2, 3, 4, u64::MAX]),
            DataType::Int8 => TensorData::Int8(vec![-128, -1, 0, 1, 2, 127]),
            DataType::Int16 => TensorData::Int16(vec![i16::MIN, -1, 0, 1, 2, i16::MAX]),
            DataType::Int32 => TensorData::Int32(vec![i32::MIN, -1, 0, 1, 2, i32::MAX]),
            DataType::Int64 => TensorData::Int64(vec![i64::MIN, -1, 0, 1, 2, i64::MAX]),
            DataType::Fp16 => TensorData::Fp16(
                [0.5f32, -1.0, 0.0, 2.0, 65504.0, -0.25]
                    .into_iter()
                    .map(f16::from_f32)
                    .collect(),
            ),
            DataType::Fp32 => TensorData::Fp32(vec![0.1, -1.5, 0.0, 1e30, -1e-30, 3.0]),
            DataType::Fp64 => TensorData::Fp64(vec![0.1, -1.5, 0.0, 1e300, -1e-300, 3.0]),
            DataType::Bytes => TensorData::Bytes(
                ["a", "", "üñí", "d", "e", "f"]
                    .map(|s| s.as_bytes().to_vec())
                    .to_vec(),
            ),
        }
    };
    let inputs: Vec<Tensor> = meta
        .inputs
        .iter()
        .map(|s| Tensor::new(s.name.clone(), vec![2, 3], sample(s.datatype)).expect("tensor"))
        .collect();
    let inputs = meta.arrange_inputs(inputs).expect("fits");
    let outputs = model.infer(inputs.clone()).expect("runs");
    for (input, output) in inputs.iter().zip(&outputs) {
        assert_eq!(output.name(), input.name().replace("in_", "out_"));
        assert_eq!(output.shape(), &[2, 3]);
        assert_eq!(output.data(), input.data(), "{}", input.name());
    }
}

#[test]
fn unsupported_operators_are_named_and_refused() {
    let err = OnnxModel::load(&repo("tests/fixtures/models/iris_zipmap/model.onnx"))
        .expect_err("ZipMap is not supported");
    assert!(matches!(err, Error::UnsupportedOperators(_)), "{err}");
    assert!(err.to_string().contains("ZipMap"), "{err}");
}

#[test]
fn corrupt_and_missing_files_are_refused() {
    let err =
        OnnxModel::load(&repo("tests/fixtures/models/not_onnx/model.onnx")).expect_err("not ONNX");
    assert!(matches!(err, Error::Load(_)), "{err}");
    let err =
        OnnxModel::load(&repo("tests/fixtures/models/nowhere/model.onnx")).expect_err("missing");
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn shape_the_graph_rejects_fails_cleanly() {
    // The iris graph multiplies by a 4x3 matrix: 5 features cannot work, and
    // bypassing validation must still give an error, not a panic.
    let model = load("examples/models/iris/model.onnx");
    let input = Tensor::new("input", vec![1, 5], TensorData::Fp32(vec![1.0; 5])).expect("tensor");
    let err = model.infer(vec![input]).expect_err("wrong width");
    assert!(matches!(err, Error::Inference(_)), "{err}");
}
