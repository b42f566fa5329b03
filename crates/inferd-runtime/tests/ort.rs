//! The onnxruntime backend against the same expectations as tract.
//!
//! The library is found from `INFERD_ORT_LIBRARY`, else `ORT_DYLIB_PATH`,
//! else the onnxruntime package of the Python at `INFERD_TEST_PYTHON`. When
//! none is found the tests that need it are skipped with a note, except in CI
//! (`CI` set), where they fail.

#![cfg(feature = "ort")]

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "../../../tests/support/ort_library.rs"]
mod ort_library;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fixtures::{assert_close, expected, repo};
use inferd_runtime::{
    Error, LoadOptions, Model, ModelFormat, OnnxBackend, OnnxModel, OrtModel, OrtOptions,
};
use inferd_tensor::{DataType, Dim, Tensor, TensorData, TensorSpec, f16};
use ort_library::library;

fn load_ort(path: &str) -> Option<OrtModel> {
    let library = library()?;
    Some(OrtModel::load(&repo(path), Some(&library)).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn check_against_expected(model_dir: &str, tolerance: f32) {
    let Some(model) = load_ort(&format!("{model_dir}/model.onnx")) else {
        return;
    };
    let (inputs, outputs) = expected(&format!("{model_dir}/expected.json"));
    let inputs = model.metadata().arrange_inputs(inputs).expect("inputs fit");
    let got = model.infer(inputs).expect("runs");
    assert_eq!(got.len(), outputs.len());
    for (g, w) in got.iter().zip(&outputs) {
        assert_close(g, w, tolerance);
    }
}

#[test]
fn metadata_equals_tracts_but_for_the_platform() {
    for path in [
        "examples/models/iris/model.onnx",
        "examples/models/mlp/model.onnx",
        "tests/fixtures/models/fixed/model.onnx",
        "tests/fixtures/models/multi/model.onnx",
        "tests/fixtures/models/identity/model.onnx",
    ] {
        let Some(ort) = load_ort(path) else { return };
        let tract = OnnxModel::load(&repo(path)).expect("tract loads it");
        let (o, t) = (ort.metadata(), tract.metadata());
        assert_eq!(o.platform, "onnxruntime_onnx");
        assert_eq!(o.inputs, t.inputs, "{path}");
        assert_eq!(o.outputs, t.outputs, "{path}");
    }
}

#[test]
fn iris_metadata_has_a_dynamic_batch() {
    let Some(model) = load_ort("examples/models/iris/model.onnx") else {
        return;
    };
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
    check_against_expected("examples/models/mlp", 1e-5);
}

#[test]
fn fixed_and_multi_input_models() {
    check_against_expected("tests/fixtures/models/fixed", 0.0);
    check_against_expected("tests/fixtures/models/multi", 0.0);
}

#[test]
fn a_tree_ensemble_regressor_runs() {
    check_against_expected("tests/fixtures/models/forest_regressor", 1e-5);
}

#[test]
fn one_loaded_model_runs_any_batch_size_from_many_threads() {
    let Some(model) = load_ort("examples/models/iris/model.onnx") else {
        return;
    };
    let model = Arc::new(model);
    let (inputs, outputs) = expected("examples/models/iris/expected.json");
    let TensorData::Fp32(rows) = inputs[0].data().clone() else {
        panic!("fp32 input")
    };
    let TensorData::Int64(labels) = outputs[0].data().clone() else {
        panic!("int64 labels")
    };
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (model, rows, labels) = (model.clone(), rows.clone(), labels.clone());
            std::thread::spawn(move || {
                for round in 0..25 {
                    let n = 1 + (t + round) % 6;
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
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no thread panicked");
    }
}

#[test]
fn a_model_whose_file_is_removed_keeps_serving_with_the_sessions_it_has() {
    let Some(library) = library() else { return };
    let dir = std::env::temp_dir().join(format!("inferd-ort-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("model.onnx");
    std::fs::copy(repo("examples/models/iris/model.onnx"), &path).expect("copy");
    let model = Arc::new(OrtModel::load(&path, Some(&library)).expect("loads"));
    std::fs::remove_dir_all(&dir).expect("remove");
    // Four calls at once need more sessions than the one made at load.
    let start = Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (model, start) = (model.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..20 {
                    let input = Tensor::new(
                        "input",
                        vec![1, 4],
                        TensorData::Fp32(vec![5.1, 3.5, 1.4, 0.2]),
                    )
                    .expect("tensor");
                    let got = model.infer(vec![input]).expect("runs");
                    assert_eq!(got[0].data(), &TensorData::Int64(vec![0]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no thread panicked");
    }
}

#[test]
fn every_datatype_passes_through_identity() {
    let Some(model) = load_ort("tests/fixtures/models/identity/model.onnx") else {
        return;
    };
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

    // Strings onnxruntime cannot hold are refused by name, not run.
    let mut bad = inputs.clone();
    let at = bad
        .iter()
        .position(|t| t.datatype() == DataType::Bytes)
        .expect("a BYTES input");
    let name = bad[at].name().to_owned();
    for (element, what) in [(vec![0xff, 0xfe], "UTF-8"), (b"a\0b".to_vec(), "NUL")] {
        let mut data = vec![b"x".to_vec(); 6];
        data[4] = element;
        bad[at] = Tensor::new(name.clone(), vec![2, 3], TensorData::Bytes(data)).expect("tensor");
        let err = model.infer(bad.clone()).expect_err("refused");
        assert!(matches!(err, Error::Input(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&name) && text.contains("element 4") && text.contains(what),
            "{text}"
        );
    }
}

#[test]
fn zipmap_is_refused_with_advice() {
    let Some(library) = library() else { return };
    let err = OrtModel::load(
        &repo("tests/fixtures/models/iris_zipmap/model.onnx"),
        Some(&library),
    )
    .expect_err("a sequence of maps is not a tensor");
    assert!(matches!(err, Error::Load(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("output_probability") && text.contains("without ZipMap"),
        "{text}"
    );
}

#[test]
fn corrupt_and_missing_files_are_refused() {
    let Some(library) = library() else { return };
    let err = OrtModel::load(
        &repo("tests/fixtures/models/not_onnx/model.onnx"),
        Some(&library),
    )
    .expect_err("not ONNX");
    assert!(matches!(err, Error::Load(_)), "{err}");
    let err = OrtModel::load(
        &repo("tests/fixtures/models/nowhere/model.onnx"),
        Some(&library),
    )
    .expect_err("missing");
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn shape_the_graph_rejects_fails_cleanly_and_the_model_still_runs() {
    let Some(model) = load_ort("examples/models/iris/model.onnx") else {
        return;
    };
    let input = Tensor::new("input", vec![1, 5], TensorData::Fp32(vec![1.0; 5])).expect("tensor");
    let err = model.infer(vec![input]).expect_err("wrong width");
    assert!(matches!(err, Error::Inference(_)), "{err}");
    let input = Tensor::new("input", vec![1, 4], TensorData::Fp32(vec![1.0; 4])).expect("tensor");
    model.infer(vec![input]).expect("runs after a failure");
}

#[test]
fn load_with_chooses_the_backend() {
    let Some(library) = library() else { return };
    let path = repo("examples/models/iris/model.onnx");
    let tract = inferd_runtime::load_with(&path, ModelFormat::Onnx, &LoadOptions::default())
        .expect("tract");
    assert_eq!(tract.metadata().platform, "onnx_onnxv1");
    let options = LoadOptions {
        onnx_backend: OnnxBackend::Ort {
            library: Some(library),
            intra_threads: 2,
        },
    };
    options.onnx_backend.prepare().expect("library opens");
    let ort = inferd_runtime::load_with(&path, ModelFormat::Onnx, &options).expect("ort");
    assert_eq!(ort.metadata().platform, "onnxruntime_onnx");
    let model = OrtModel::load_with(
        &path,
        &OrtOptions {
            library: None,
            intra_threads: 0,
        },
    )
    .expect("the library already open is used; 0 threads means 1");
    assert_eq!(model.metadata(), ort.metadata());
}

/// Library errors need a process that has not opened one yet: this test
/// runs itself again in a child process.
#[test]
fn library_errors_are_clear() {
    const CHILD: &str = "INFERD_ORT_TEST_CHILD";
    let iris = repo("examples/models/iris/model.onnx");
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe);
        child
            .args(["--exact", "library_errors_are_clear", "--nocapture"])
            .env(CHILD, "1")
            .env_remove("ORT_DYLIB_PATH");
        if let Some(library) = library() {
            child.env("INFERD_ORT_LIBRARY", library);
        } else {
            child.env_remove("INFERD_ORT_LIBRARY");
        }
        let out = child.output().expect("runs");
        assert!(
            out.status.success(),
            "child failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }

    let err = OrtModel::load(&iris, None).expect_err("no library");
    assert!(matches!(err, Error::Backend(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "onnxruntime backend selected but no library: pass --ort-library /path/to/libonnxruntime.so \
         (pip install onnxruntime ships one in site-packages/onnxruntime/capi/)"
    );
    let err = OnnxBackend::ort(None).prepare().expect_err("no library");
    assert!(err.to_string().contains("--ort-library"), "{err}");

    let missing = Path::new("/nonexistent/libonnxruntime.so");
    let err = OrtModel::load(&iris, Some(missing)).expect_err("no such file");
    let text = err.to_string();
    assert!(
        text.contains("/nonexistent/libonnxruntime.so") && text.contains("no such file"),
        "{text}"
    );

    let not_a_library = repo("tests/fixtures/models/not_onnx/model.onnx");
    let err = OrtModel::load(&iris, Some(&not_a_library)).expect_err("not a library");
    assert!(matches!(err, Error::Backend(_)), "{err}");
    assert!(
        err.to_string()
            .contains("cannot load the onnxruntime library"),
        "{err}"
    );

    // Once one library is open, another is refused and the same one is fine.
    let Some(library) = std::env::var_os("INFERD_ORT_LIBRARY").map(PathBuf::from) else {
        return;
    };
    OrtModel::load(&iris, Some(&library)).expect("loads");
    let err = OrtModel::load(&iris, Some(&not_a_library)).expect_err("a second library");
    assert!(err.to_string().contains("already loaded"), "{err}");
    OrtModel::load(&iris, Some(&library)).expect("the same library again");
}
