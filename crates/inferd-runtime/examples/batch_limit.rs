//! The most a model can do in-process at a given batch size: the limit the
//! dynamic batcher is compared against (BENCHMARKS.md, batching).
//!
//! ```text
//! cargo run --release -p inferd-runtime --example batch_limit -- \
//!     examples/models/mlp/model.onnx [threads] [seconds per case] [batch sizes...]
//! ```
//!
//! Each case runs the model on `threads` threads at once (default: one per
//! core, as the server's instances do), each over and over on a batch of
//! the given size, for the given time (default 3 s), and prints rows per
//! second. Inputs are the model's expected.json rows, repeated.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inferd_runtime::{Model, ModelFormat};
use inferd_tensor::{Dim, Tensor, TensorData};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: batch_limit MODEL [threads] [seconds] [batch sizes...]")?;
    let threads = match args.get(1) {
        Some(t) => t.parse().map_err(|_| format!("bad thread count '{t}'"))?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let seconds: f64 = match args.get(2) {
        Some(s) => s.parse().map_err(|_| format!("bad seconds '{s}'"))?,
        None => 3.0,
    };
    let sizes: Vec<usize> = if args.len() > 3 {
        args[3..]
            .iter()
            .map(|s| s.parse().map_err(|_| format!("bad batch size '{s}'")))
            .collect::<Result<_, _>>()?
    } else {
        vec![1, 4, 16, 64]
    };
    let model: Arc<dyn Model> =
        inferd_runtime::load(Path::new(path), ModelFormat::Onnx).map_err(|e| e.to_string())?;
    let spec = model
        .metadata()
        .inputs
        .first()
        .ok_or("the model has no input")?
        .clone();
    let width: usize = spec
        .shape
        .iter()
        .skip(1)
        .map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Dynamic => 1,
        })
        .product();
    println!("| batch size | threads | rows/s | executions/s |");
    println!("|---|---|---|---|");
    for &batch in &sizes {
        let input = Tensor::new(
            spec.name.clone(),
            std::iter::once(batch)
                .chain(spec.shape.iter().skip(1).map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Dynamic => 1,
                }))
                .collect(),
            TensorData::Fp32((0..batch * width).map(|i| (i % 17) as f32 / 17.0).collect()),
        )
        .map_err(|e| e.to_string())?;
        // Warm-up, then timed runs on every thread at once.
        model
            .infer(vec![input.clone()])
            .map_err(|e| e.to_string())?;
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let runs: Vec<_> = (0..threads)
            .map(|_| {
                let (model, input) = (model.clone(), input.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < until {
                        if model.infer(vec![input.clone()]).is_err() {
                            break;
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let executions: u64 = runs.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "| {batch} | {threads} | {:.0} | {:.0} |",
            executions as f64 * batch as f64 / elapsed,
            executions as f64 / elapsed
        );
    }
    Ok(())
}
