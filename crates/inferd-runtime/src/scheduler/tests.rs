use std::sync::mpsc;

use inferd_tensor::{DataType, TensorData, TensorSpec};

use super::*;
use crate::ModelMetadata;

/// Doubles its input; records the rows of every execution; the first
/// execution can be held at a gate until the test opens it.
struct Doubler {
    meta: ModelMetadata,
    executions: Mutex<Vec<usize>>,
    gate: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Doubler {
    fn new(batch_dim: bool) -> Doubler {
        let first = if batch_dim {
            Dim::Dynamic
        } else {
            Dim::Fixed(1)
        };
        let spec = |name: &str| TensorSpec::new(name, DataType::Fp32, vec![first, Dim::Dynamic]);
        Doubler {
            meta: ModelMetadata {
                platform: "test",
                inputs: vec![spec("x")],
                outputs: vec![spec("y")],
            },
            executions: Mutex::new(Vec::new()),
            gate: Mutex::new(None),
        }
    }

    /// Holds the next execution until the returned sender is used or dropped.
    fn gated(self) -> (Doubler, mpsc::Sender<()>) {
        let (open, gate) = mpsc::channel();
        *self.gate.lock().expect("gate") = Some(gate);
        (self, open)
    }

    fn executions(&self) -> Vec<usize> {
        self.executions.lock().expect("lock").clone()
    }
}

impl Model for Doubler {
    fn metadata(&self) -> &ModelMetadata {
        &self.meta
    }

    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        // Taken in its own statement so the lock is not held while waiting.
        let gate = self.gate.lock().expect("gate").take();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
        let (_, shape, data) = inputs.into_iter().next().expect("one input").into_parts();
        self.executions.lock().expect("lock").push(shape[0]);
        match data {
            TensorData::Fp32(v) if v.iter().all(|x| x.is_finite()) => {
                let doubled = v.iter().map(|x| x * 2.0).collect();
                Ok(vec![
                    Tensor::new("y", shape, TensorData::Fp32(doubled)).expect("same shape"),
                ])
            }
            _ => panic!("cannot double this"),
        }
    }
}

#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<(usize, usize)>>,
    expired: Mutex<usize>,
}

impl Observer for Recorder {
    fn executed(&self, rows: usize, requests: usize, _compute: Duration) {
        self.batches.lock().expect("lock").push((rows, requests));
    }

    fn expired(&self) {
        *self.expired.lock().expect("lock") += 1;
    }
}

fn rows(values: &[f32], width: usize) -> Vec<Tensor> {
    vec![
        Tensor::new(
            "x",
            vec![values.len() / width, width],
            TensorData::Fp32(values.to_vec()),
        )
        .expect("tensor"),
    ]
}

fn config(max_batch_size: usize, delay: Duration) -> SchedulerConfig {
    SchedulerConfig {
        max_batch_size,
        max_queue_delay: delay,
        instance_count: 1,
        ..SchedulerConfig::default()
    }
}

fn start(model: &Arc<Doubler>, config: SchedulerConfig) -> (Arc<Scheduler>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let scheduler =
        Scheduler::start("test", model.clone(), config, recorder.clone()).expect("starts");
    (Arc::new(scheduler), recorder)
}

fn spawn_infer(
    scheduler: &Arc<Scheduler>,
    inputs: Vec<Tensor>,
    deadline: Option<Instant>,
) -> tokio::task::JoinHandle<(Result<Vec<Tensor>>, Timing)> {
    let scheduler = scheduler.clone();
    tokio::spawn(async move { scheduler.infer(inputs, deadline).await })
}

/// Waits (without a time limit on correctness) until `depth` requests queue.
async fn until_queued(scheduler: &Scheduler, depth: usize) {
    while scheduler.queue_depth() < depth {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn values(outputs: &[Tensor]) -> Vec<f32> {
    match outputs[0].data() {
        TensorData::Fp32(v) => v.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_full_batch_runs_as_one_execution_and_splits_in_order() {
    let model = Arc::new(Doubler::new(true));
    // A long delay: only a full batch can make it run.
    let (scheduler, recorder) = start(&model, config(8, Duration::from_secs(600)));
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let v = i as f32;
            spawn_infer(&scheduler, rows(&[v, v + 0.5, v, v + 0.5], 2), None)
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let (outputs, timing) = task.await.expect("task");
        let outputs = outputs.expect("runs");
        let v = i as f32 * 2.0;
        assert_eq!(outputs[0].shape(), &[2, 2]);
        assert_eq!(values(&outputs), vec![v, v + 1.0, v, v + 1.0]);
        assert_eq!(timing.batch_rows, 8);
    }
    assert_eq!(model.executions(), vec![8]);
    assert_eq!(*recorder.batches.lock().expect("lock"), vec![(8, 4)]);
}

#[tokio::test]
async fn what_queued_behind_a_running_batch_runs_together() {
    let (model, open) = Doubler::new(true).gated();
    let model = Arc::new(model);
    let (scheduler, _) = start(&model, config(16, Duration::ZERO));
    let first = spawn_infer(&scheduler, rows(&[1.0], 1), None);
    // The first execution is held at the gate; three more queue behind it.
    while model.gate.lock().expect("gate").is_some() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rest: Vec<_> = (0..3)
        .map(|i| spawn_infer(&scheduler, rows(&[i as f32; 2], 1), None))
        .collect();
    until_queued(&scheduler, 3).await;
    open.send(()).expect("open");
    assert_eq!(
        values(&first.await.expect("task").0.expect("runs")),
        vec![2.0]
    );
    for (i, task) in rest.into_iter().enumerate() {
        let outputs = task.await.expect("task").0.expect("runs");
        assert_eq!(values(&outputs), vec![i as f32 * 2.0; 2]);
    }
    assert_eq!(model.executions(), vec![1, 6]);
}

#[tokio::test]
async fn requests_that_do_not_stack_run_apart() {
    let (model, open) = Doubler::new(true).gated();
    let model = Arc::new(model);
    let (scheduler, _) = start(&model, config(16, Duration::ZERO));
    let first = spawn_infer(&scheduler, rows(&[1.0], 1), None);
    while model.gate.lock().expect("gate").is_some() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let narrow = spawn_infer(&scheduler, rows(&[1.0, 2.0], 1), None);
    until_queued(&scheduler, 1).await;
    let wide = spawn_infer(&scheduler, rows(&[1.0, 2.0], 2), None);
    until_queued(&scheduler, 2).await;
    open.send(()).expect("open");
    first.await.expect("task").0.expect("runs");
    assert_eq!(
        values(&narrow.await.expect("task").0.expect("runs")),
        vec![2.0, 4.0]
    );
    let wide = wide.await.expect("task").0.expect("runs");
    assert_eq!(wide[0].shape(), &[1, 2]);
    assert_eq!(model.executions(), vec![1, 2, 1]);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let (model, open) = Doubler::new(true).gated();
    let model = Arc::new(model);
    let (scheduler, _) = start(
        &model,
        SchedulerConfig {
            max_queue_size: 2,
            ..config(0, Duration::ZERO)
        },
    );
    let running = spawn_infer(&scheduler, rows(&[1.0], 1), None);
    while model.gate.lock().expect("gate").is_some() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let queued: Vec<_> = (0..2)
        .map(|_| spawn_infer(&scheduler, rows(&[1.0], 1), None))
        .collect();
    until_queued(&scheduler, 2).await;
    let (refused, _) = scheduler.infer(rows(&[1.0], 1), None).await;
    assert!(matches!(refused, Err(Error::QueueFull(2))), "{refused:?}");
    open.send(()).expect("open");
    running.await.expect("task").0.expect("runs");
    for task in queued {
        task.await.expect("task").0.expect("runs");
    }
    // Room again once the queue drained.
    scheduler
        .infer(rows(&[1.0], 1), None)
        .await
        .0
        .expect("runs");
    assert_eq!(model.executions().len(), 4);
}

#[tokio::test]
async fn an_expired_request_is_answered_and_never_run() {
    let (model, open) = Doubler::new(true).gated();
    let model = Arc::new(model);
    let (scheduler, recorder) = start(&model, config(4, Duration::ZERO));
    let running = spawn_infer(&scheduler, rows(&[1.0], 1), None);
    while model.gate.lock().expect("gate").is_some() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let deadline = Instant::now() + Duration::from_millis(20);
    let (late, _) = scheduler.infer(rows(&[5.0], 1), Some(deadline)).await;
    assert!(matches!(late, Err(Error::DeadlineExceeded)), "{late:?}");
    let (already, _) = scheduler.infer(rows(&[5.0], 1), Some(Instant::now())).await;
    assert!(matches!(already, Err(Error::DeadlineExceeded)));
    open.send(()).expect("open");
    running.await.expect("task").0.expect("runs");
    scheduler
        .infer(rows(&[3.0], 1), None)
        .await
        .0
        .expect("runs");
    // Only the first and the last ran: the expired one never reached the model.
    assert_eq!(model.executions(), vec![1, 1]);
    assert_eq!(
        *recorder.batches.lock().expect("lock"),
        vec![(1, 1), (1, 1)]
    );
}

#[tokio::test]
async fn batches_respect_the_row_limit() {
    let model = Arc::new(Doubler::new(true));
    let (scheduler, _) = start(&model, config(4, Duration::ZERO));
    let (too_many, _) = scheduler.infer(rows(&[1.0; 5], 1), None).await;
    assert!(
        matches!(
            too_many,
            Err(Error::Input(InputError::TooManyRows { rows: 5, max: 4 }))
        ),
        "{too_many:?}"
    );
    let out = scheduler
        .infer(rows(&[1.0; 4], 1), None)
        .await
        .0
        .expect("runs");
    assert_eq!(values(&out), vec![2.0; 4]);
}

#[tokio::test]
async fn panics_fail_the_batch_and_instances_survive() {
    let model = Arc::new(Doubler::new(true));
    let (scheduler, _) = start(&model, config(0, Duration::ZERO));
    let (err, _) = scheduler.infer(rows(&[f32::NAN], 1), None).await;
    let err = err.expect_err("panics");
    assert!(
        err.to_string()
            .contains("the model panicked: cannot double this"),
        "{err}"
    );
    for i in 0..8 {
        let out = scheduler
            .infer(rows(&[i as f32], 1), None)
            .await
            .0
            .expect("runs");
        assert_eq!(values(&out), vec![i as f32 * 2.0]);
    }
}

#[tokio::test]
async fn many_concurrent_requests_all_get_their_own_answer() {
    let model = Arc::new(Doubler::new(true));
    let (scheduler, _) = start(
        &model,
        SchedulerConfig {
            instance_count: 3,
            ..config(8, Duration::from_millis(1))
        },
    );
    let tasks: Vec<_> = (0..200)
        .map(|i| spawn_infer(&scheduler, rows(&[i as f32], 1), None))
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let out = task.await.expect("task").0.expect("runs");
        assert_eq!(values(&out), vec![i as f32 * 2.0]);
    }
    assert_eq!(model.executions().iter().sum::<usize>(), 200);
}

#[test]
fn a_model_without_a_batch_dimension_is_never_batched() {
    let model: Arc<dyn Model> = Arc::new(Doubler::new(false));
    assert!(!batchable(model.as_ref()));
    let err = Scheduler::start(
        "test",
        model.clone(),
        config(4, Duration::ZERO),
        Arc::new(NoObserver),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("no batch dimension"), "{err}");
    assert!(
        Scheduler::start(
            "test",
            model,
            config(0, Duration::ZERO),
            Arc::new(NoObserver)
        )
        .is_ok()
    );
    assert!(batchable(&Doubler::new(true)));
}

#[tokio::test]
async fn dropping_the_scheduler_finishes_what_is_queued() {
    let (model, open) = Doubler::new(true).gated();
    let model = Arc::new(model);
    let scheduler = Scheduler::start(
        "test",
        model.clone(),
        config(0, Duration::ZERO),
        Arc::new(NoObserver),
    )
    .expect("starts");
    let receivers: Vec<_> = (0..3)
        .map(|i| {
            scheduler
                .submit(rows(&[i as f32], 1), None)
                .expect("queued")
        })
        .collect();
    drop(scheduler);
    open.send(()).expect("open");
    for (i, receiver) in receivers.into_iter().enumerate() {
        let out = receiver.await.expect("answered").0.expect("runs");
        assert_eq!(values(&out), vec![i as f32 * 2.0]);
    }
}
