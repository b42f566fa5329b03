//! Throughput of the tree engine on one thread, in process.
//!
//! ```text
//! bench <xgboost|lightgbm|onnx> <model> <rows.f32> <features> [seconds per batch size]
//! ```
//!
//! `rows.f32` holds little-endian f32 rows of `features` values. For `onnx`
//! the model is a JSON file `{"op": "classifier"|"regressor", "n_features": N,
//! "attributes": {...}}` with the tree-ensemble node's attributes (what
//! `benches/trees.py` extracts from an ONNX file). Prints one JSON line per
//! batch size (1, 16, 256): `{"batch": 16, "rows_per_s": ...}`, and the first
//! row's outputs as a sanity line.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use inferd_trees::onnx_ml::{Attributes, TreeEnsemble};
use inferd_trees::{Booster, lightgbm, xgboost};

enum Engine {
    Booster(Booster),
    Onnx(TreeEnsemble),
}

impl Engine {
    fn run(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, inferd_trees::Error> {
        match self {
            Engine::Booster(b) => Ok(b.predict(x, rows)?.predict),
            Engine::Onnx(op) => Ok(op.run(x, rows)?.scores),
        }
    }
}

#[derive(serde::Deserialize)]
struct OnnxSpec {
    op: String,
    n_features: usize,
    attributes: Attributes,
}

fn load(kind: &str, path: &str) -> Result<Engine, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    match kind {
        "xgboost" => Ok(Engine::Booster(
            xgboost::load(&bytes).map_err(|e| e.to_string())?,
        )),
        "lightgbm" => Ok(Engine::Booster(
            lightgbm::load(&bytes).map_err(|e| e.to_string())?,
        )),
        "onnx" => {
            let spec: OnnxSpec = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            let op = match spec.op.as_str() {
                "classifier" => TreeEnsemble::classifier(&spec.attributes, Some(spec.n_features)),
                _ => TreeEnsemble::regressor(&spec.attributes, Some(spec.n_features)),
            }
            .map_err(|e| e.to_string())?;
            Ok(Engine::Onnx(op))
        }
        other => Err(format!("unknown kind '{other}'")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: bench <xgboost|lightgbm|onnx> <model> <rows.f32> <features> [seconds]");
        return ExitCode::from(2);
    }
    let engine = match load(&args[1], &args[2]) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot load {}: {e}", args[2]);
            return ExitCode::FAILURE;
        }
    };
    let bytes = match std::fs::read(&args[3]) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: {e}", args[3]);
            return ExitCode::FAILURE;
        }
    };
    let Ok(features) = args[4].parse::<usize>() else {
        eprintln!("features must be a number");
        return ExitCode::from(2);
    };
    let seconds: f64 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let x: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let pool = x.len() / features;
    if pool < 256 {
        eprintln!("need at least 256 rows");
        return ExitCode::FAILURE;
    }
    match engine.run(&x[..features], 1) {
        Ok(first) => println!("{{\"first_row\": {first:?}}}"),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    for batch in [1usize, 16, 256] {
        // Warm up, then run whole batches from the pool until time is up.
        let budget = Duration::from_secs_f64(seconds);
        let mut done = 0usize;
        let mut start_row = 0usize;
        let mut calls = 0usize;
        let started = Instant::now();
        while started.elapsed() < budget || calls < 3 {
            if start_row + batch > pool {
                start_row = 0;
            }
            let rows = &x[start_row * features..(start_row + batch) * features];
            match engine.run(black_box(rows), batch) {
                Ok(out) => {
                    black_box(out);
                }
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
            done += batch;
            start_row += batch;
            calls += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "{{\"batch\": {batch}, \"rows_per_s\": {:.1}}}",
            done as f64 / elapsed
        );
    }
    ExitCode::SUCCESS
}
