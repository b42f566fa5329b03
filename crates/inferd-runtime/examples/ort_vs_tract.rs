//! In-process speed of the two ONNX backends on the example models.
//!
//! ```text
//! cargo run --release -p inferd-runtime --features ort --example ort_vs_tract -- \
//!     /path/to/libonnxruntime.so [seconds per case]
//! ```
//!
//! Each case runs one model on one thread, over and over, for the given time
//! (default 2 s) after a short warm-up, and prints the mean and median time
//! per call. tract and onnxruntime cases alternate so that drift on a busy
//! machine hits both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inferd_runtime::{Model, OnnxModel, OrtModel};
use inferd_tensor::{Tensor, TensorData};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// `rows` rows of the model's expected.json inputs, repeated as needed.
fn input(model_dir: &str, rows: usize) -> Result<Tensor, String> {
    let text = std::fs::read_to_string(repo(&format!("{model_dir}/expected.json")))
        .map_err(|e| format!("{model_dir}/expected.json: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let first = &v["inputs"][0];
    let width = first["shape"][1].as_u64().ok_or("no input width")? as usize;
    let data: Vec<f32> = first["data"]
        .as_array()
        .ok_or("no input data")?
        .iter()
        .map(|x| x.as_f64().unwrap_or(0.0) as f32)
        .collect();
    let have = data.len() / width;
    let mut out = Vec::with_capacity(rows * width);
    for r in 0..rows {
        let at = (r % have) * width;
        out.extend_from_slice(&data[at..at + width]);
    }
    Tensor::new("input", vec![rows, width], TensorData::Fp32(out)).map_err(|e| e.to_string())
}

/// Mean and median microseconds per call.
fn measure(model: &dyn Model, input: &Tensor, time: Duration) -> Result<(f64, f64), String> {
    let warm_until = Instant::now() + time / 10;
    while Instant::now() < warm_until {
        model
            .infer(vec![input.clone()])
            .map_err(|e| e.to_string())?;
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < time {
        let t = Instant::now();
        model
            .infer(vec![input.clone()])
            .map_err(|e| e.to_string())?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    Ok((mean, samples[samples.len() / 2]))
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let library = args
        .next()
        .or_else(|| std::env::var("ORT_DYLIB_PATH").ok())
        .ok_or("usage: ort_vs_tract /path/to/libonnxruntime.so [seconds per case]")?;
    let seconds: f64 = match args.next() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("not a number of seconds: {s}"))?,
        None => 2.0,
    };
    let time = Duration::from_secs_f64(seconds);
    println!("| model | batch | tract mean µs | tract median µs | ort mean µs | ort median µs |");
    println!("|---|---|---|---|---|---|");
    for (name, dir) in [
        ("iris", "examples/models/iris"),
        ("mlp", "examples/models/mlp"),
    ] {
        let path = repo(&format!("{dir}/model.onnx"));
        let tract = OnnxModel::load(&path).map_err(|e| e.to_string())?;
        let ort = OrtModel::load(&path, Some(Path::new(&library))).map_err(|e| e.to_string())?;
        for batch in [1, 64] {
            let input = input(dir, batch)?;
            let (tm, tp) = measure(&tract, &input, time)?;
            let (om, op) = measure(&ort, &input, time)?;
            println!("| {name} | {batch} | {tm:.1} | {tp:.1} | {om:.1} | {op:.1} |");
        }
    }
    Ok(())
}
