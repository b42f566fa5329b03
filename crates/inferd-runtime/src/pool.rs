//! The inference thread pool: dedicated OS threads fed by a channel.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use inferd_tensor::Tensor;
use tokio::sync::oneshot;

use crate::{Error, Model, Result};

type Job = Box<dyn FnOnce() + Send>;

/// Where a job's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// Waiting for a free inference thread.
    pub queue: Duration,
    /// Running the model.
    pub compute: Duration,
}

/// A fixed set of threads that run inference, so a model never blocks the
/// async reactor. Cloning shares the same threads; they stop once every
/// clone is dropped and the queued jobs are done.
#[derive(Clone, Debug)]
pub struct InferencePool {
    jobs: Sender<Job>,
    threads: usize,
}

impl InferencePool {
    /// Starts `threads` worker threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<InferencePool> {
        let threads = threads.max(1);
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads {
            let queue: Receiver<Job> = queue.clone();
            thread::Builder::new()
                .name(format!("inferd-infer-{i}"))
                .spawn(move || {
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                })?;
        }
        Ok(InferencePool { jobs, threads })
    }

    /// A pool with one thread per available core.
    pub fn sized_to_machine() -> std::io::Result<InferencePool> {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        InferencePool::new(cores)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `model` on `inputs` on a pool thread and waits for the outputs.
    ///
    /// A job whose caller has gone away before a thread picks it up is
    /// dropped unrun; a panicking model becomes an [`Error::Inference`].
    pub async fn infer(&self, model: Arc<dyn Model>, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.infer_timed(model, inputs).await.0
    }

    /// As [`InferencePool::infer`], also saying how long the job waited for a
    /// thread and how long the model ran.
    pub async fn infer_timed(
        &self,
        model: Arc<dyn Model>,
        inputs: Vec<Tensor>,
    ) -> (Result<Vec<Tensor>>, Timing) {
        let (reply, outputs) = oneshot::channel();
        let queued_at = Instant::now();
        let job: Job = Box::new(move || {
            if reply.is_closed() {
                return;
            }
            let started = Instant::now();
            let result =
                catch_unwind(AssertUnwindSafe(|| model.infer(inputs))).unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown cause".to_owned());
                    Err(Error::Inference(format!("the model panicked: {what}")))
                });
            let timing = Timing {
                queue: started - queued_at,
                compute: started.elapsed(),
            };
            let _ = reply.send((result, timing));
        });
        if self.jobs.send(job).is_err() {
            return (Err(Error::PoolClosed), Timing::default());
        }
        outputs
            .await
            .unwrap_or_else(|_| (Err(Error::PoolClosed), Timing::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelMetadata;
    use inferd_tensor::TensorData;

    struct Doubler(ModelMetadata);

    impl Model for Doubler {
        fn metadata(&self) -> &ModelMetadata {
            &self.0
        }

        fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
            let (name, shape, data) = inputs.into_iter().next().expect("one input").into_parts();
            match data {
                TensorData::Fp32(v) if v.iter().all(|x| x.is_finite()) => {
                    let doubled = v.iter().map(|x| x * 2.0).collect();
                    Ok(vec![
                        Tensor::new(name, shape, TensorData::Fp32(doubled)).expect("same shape"),
                    ])
                }
                _ => panic!("cannot double this"),
            }
        }
    }

    fn model() -> Arc<dyn Model> {
        Arc::new(Doubler(ModelMetadata {
            platform: "test",
            inputs: vec![],
            outputs: vec![],
        }))
    }

    fn input(v: f32) -> Vec<Tensor> {
        vec![Tensor::new("x", vec![1], TensorData::Fp32(vec![v])).expect("tensor")]
    }

    #[tokio::test]
    async fn runs_off_the_reactor_and_survives_panics() {
        let pool = InferencePool::new(2).expect("threads");
        let out = pool.infer(model(), input(1.5)).await.expect("runs");
        assert_eq!(out[0].data(), &TensorData::Fp32(vec![3.0]));

        let err = pool
            .infer(model(), input(f32::NAN))
            .await
            .expect_err("panics");
        assert!(
            err.to_string()
                .contains("the model panicked: cannot double this"),
            "{err}"
        );

        // The threads are still there after a panic.
        for i in 0..8 {
            let out = pool.infer(model(), input(i as f32)).await.expect("runs");
            assert_eq!(out[0].data(), &TensorData::Fp32(vec![i as f32 * 2.0]));
        }
    }

    #[tokio::test]
    async fn many_concurrent_jobs_all_complete() {
        let pool = InferencePool::new(3).expect("threads");
        let jobs = (0..200).map(|i| {
            let pool = pool.clone();
            async move { pool.infer(model(), input(i as f32)).await }
        });
        let results = futures_join_all(jobs).await;
        for (i, r) in results.into_iter().enumerate() {
            let out = r.expect("runs");
            assert_eq!(out[0].data(), &TensorData::Fp32(vec![i as f32 * 2.0]));
        }
    }

    async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.expect("task"));
        }
        out
    }
}
