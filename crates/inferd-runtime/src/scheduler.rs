//! The per-model scheduler: a bounded request queue, dynamic batching and
//! a set of model instances (worker threads) that drain it.
//!
//! A request is a set of input tensors already checked against the model.
//! It is refused at once when the queue is full, and dropped unrun when its
//! deadline passes or its caller goes away while it waits. With batching on
//! (`max_batch_size > 0`), a free instance takes the oldest request and
//! waits until the queued requests that stack with it (same datatypes and
//! shapes after the batch dimension) add up to `max_batch_size` rows or the
//! oldest has waited `max_queue_delay`, then runs them as one batch and
//! splits the outputs back to each caller in order.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use inferd_tensor::{Dim, Tensor};
use tokio::sync::oneshot;

use crate::{Error, InputError, Model, Result};

/// How a model's requests are queued, batched and run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most rows one execution may take; 0 turns batching off.
    pub max_batch_size: usize,
    /// How long the oldest queued request may wait for a batch to fill.
    pub max_queue_delay: Duration,
    /// Batch sizes worth running at once, without waiting for more.
    pub preferred_batch_sizes: Vec<usize>,
    /// Requests that may wait; more are refused with [`Error::QueueFull`].
    pub max_queue_size: usize,
    /// Worker threads, each running one execution at a time.
    pub instance_count: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_batch_size: 0,
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: Vec::new(),
            max_queue_size: 1024,
            instance_count: 1,
        }
    }
}

/// True when a model takes and gives a leading batch dimension, so requests
/// can be stacked along it: every input and output has a dynamic first
/// dimension.
pub fn batchable(model: &dyn Model) -> bool {
    let meta = model.metadata();
    !meta.inputs.is_empty()
        && meta
            .inputs
            .iter()
            .chain(&meta.outputs)
            .all(|spec| spec.shape.first() == Some(&Dim::Dynamic))
}

/// Where a request's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// From being queued to its execution starting.
    pub queue: Duration,
    /// The execution it was part of.
    pub compute: Duration,
    /// Rows in that execution (its own and the others batched with it).
    pub batch_rows: usize,
}

/// What the scheduler reports as it works, for metrics.
pub trait Observer: Send + Sync + 'static {
    /// The queue now holds `depth` requests.
    fn queue_depth(&self, _depth: usize) {}
    /// One execution ran `requests` requests of `rows` rows in all.
    fn executed(&self, _rows: usize, _requests: usize, _compute: Duration) {}
    /// A request was dropped unrun because its deadline passed in the queue.
    fn expired(&self) {}
}

/// An observer that records nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

type Reply = oneshot::Sender<(Result<Vec<Tensor>>, Timing)>;

struct Pending {
    inputs: Vec<Tensor>,
    rows: usize,
    deadline: Option<Instant>,
    queued_at: Instant,
    reply: Reply,
}

impl Pending {
    fn stacks_with(&self, other: &Pending) -> bool {
        self.inputs.len() == other.inputs.len()
            && self
                .inputs
                .iter()
                .zip(&other.inputs)
                .all(|(a, b)| a.stacks_with(b))
    }

    /// Dead: its caller went away or its deadline passed.
    fn dead(&self, now: Instant) -> bool {
        self.reply.is_closed() || self.deadline.is_some_and(|d| now >= d)
    }
}

struct Queue {
    pending: VecDeque<Pending>,
    closed: bool,
}

struct Shared {
    model: Arc<dyn Model>,
    config: SchedulerConfig,
    queue: Mutex<Queue>,
    wake: Condvar,
    observer: Arc<dyn Observer>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Queue operations are single steps; a poisoned lock is still consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A model's queue and instances. Dropping it lets the instances finish
/// what is queued, then stop.
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts the instances. `config.max_batch_size` must be 0 for a model
    /// that is not [`batchable`].
    pub fn start(
        name: &str,
        model: Arc<dyn Model>,
        config: SchedulerConfig,
        observer: Arc<dyn Observer>,
    ) -> Result<Scheduler> {
        if config.max_batch_size > 0 && !batchable(model.as_ref()) {
            return Err(Error::Load(format!(
                "max_batch_size is {} but the model has no batch dimension \
                 (every input and output must have a dynamic first dimension); use 0",
                config.max_batch_size
            )));
        }
        let instances = config.instance_count.max(1);
        let shared = Arc::new(Shared {
            model,
            config,
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
            observer,
        });
        for i in 0..instances {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("inferd-{name}-{i}"))
                .spawn(move || work(&shared))
                .map_err(|e| Error::Load(format!("cannot start instance threads: {e}")))?;
        }
        Ok(Scheduler { shared })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.shared.config
    }

    /// Requests waiting now.
    pub fn queue_depth(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Queues checked inputs and waits for their outputs. Refused at once
    /// when the queue is full; [`Error::DeadlineExceeded`] once `deadline`
    /// passes, whether the request is still queued (then it never runs) or
    /// already running.
    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
    ) -> (Result<Vec<Tensor>>, Timing) {
        let receiver = match self.submit(inputs, deadline) {
            Ok(receiver) => receiver,
            Err(e) => return (Err(e), Timing::default()),
        };
        let closed = || (Err(Error::PoolClosed), Timing::default());
        match deadline {
            None => receiver.await.unwrap_or_else(|_| closed()),
            Some(at) => {
                match tokio::time::timeout_at(tokio::time::Instant::from_std(at), receiver).await {
                    Ok(outcome) => outcome.unwrap_or_else(|_| closed()),
                    // Dropping the receiver tells the instances not to run it.
                    Err(_) => (Err(Error::DeadlineExceeded), Timing::default()),
                }
            }
        }
    }

    fn submit(
        &self,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
    ) -> Result<oneshot::Receiver<(Result<Vec<Tensor>>, Timing)>> {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(Error::DeadlineExceeded);
        }
        let config = &self.shared.config;
        let rows = if config.max_batch_size > 0 {
            let rows = inputs.first().and_then(Tensor::rows).unwrap_or(0);
            if let Some(other) = inputs.iter().find(|t| t.rows() != Some(rows)) {
                return Err(Error::Input(InputError::Value {
                    name: other.name().to_owned(),
                    message: format!(
                        "has {} rows along the batch dimension but '{}' has {rows}",
                        other.rows().unwrap_or(0),
                        inputs.first().map_or("", |t| t.name())
                    ),
                }));
            }
            if rows > config.max_batch_size {
                return Err(Error::Input(InputError::TooManyRows {
                    rows,
                    max: config.max_batch_size,
                }));
            }
            rows
        } else {
            1
        };
        let (reply, receiver) = oneshot::channel();
        let depth = {
            let mut queue = self.shared.lock();
            if queue.closed {
                return Err(Error::PoolClosed);
            }
            if queue.pending.len() >= config.max_queue_size {
                // Requests whose callers gave up still hold places: free them first.
                drop_dead(&self.shared, &mut queue);
            }
            if queue.pending.len() >= config.max_queue_size {
                return Err(Error::QueueFull(config.max_queue_size));
            }
            queue.pending.push_back(Pending {
                inputs,
                rows,
                deadline,
                queued_at: now,
                reply,
            });
            queue.pending.len()
        };
        self.shared.wake.notify_one();
        self.shared.observer.queue_depth(depth);
        Ok(receiver)
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// One instance: take a batch, run it, repeat until closed and drained.
fn work(shared: &Shared) {
    while let Some(batch) = next_batch(shared) {
        run(shared, batch);
    }
}

/// Waits for the next batch; `None` once the scheduler is closed and empty.
fn next_batch(shared: &Shared) -> Option<Vec<Pending>> {
    let config = &shared.config;
    let mut queue = shared.lock();
    loop {
        drop_dead(shared, &mut queue);
        if queue.pending.is_empty() {
            if queue.closed {
                return None;
            }
            queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        if config.max_batch_size == 0 {
            let one = queue.pending.pop_front().into_iter().collect();
            report_depth(shared, &queue);
            return Some(one);
        }
        let (count, rows) = stackable_prefix(&queue.pending, config.max_batch_size);
        let oldest = queue
            .pending
            .front()
            .map_or_else(Instant::now, |p| p.queued_at);
        let flush_at = oldest + config.max_queue_delay;
        let now = Instant::now();
        let full = rows >= config.max_batch_size
            || count < queue.pending.len() // the next one cannot join this batch
            || config.preferred_batch_sizes.contains(&rows);
        if full || now >= flush_at || queue.closed {
            let batch: Vec<Pending> = queue.pending.drain(..count).collect();
            report_depth(shared, &queue);
            if !queue.pending.is_empty() {
                // Another instance can start on what is left.
                shared.wake.notify_one();
            }
            return Some(batch);
        }
        queue = shared
            .wake
            .wait_timeout(queue, flush_at - now)
            .map(|(q, _)| q)
            .unwrap_or_else(|p| p.into_inner().0);
    }
}

/// How many queued requests from the front form one batch, and their rows.
fn stackable_prefix(pending: &VecDeque<Pending>, max_rows: usize) -> (usize, usize) {
    let Some(first) = pending.front() else {
        return (0, 0);
    };
    let mut rows = first.rows;
    let mut count = 1;
    for p in pending.iter().skip(1) {
        if rows + p.rows > max_rows || !first.stacks_with(p) {
            break;
        }
        rows += p.rows;
        count += 1;
    }
    (count, rows)
}

/// Answers and removes requests whose deadline passed or whose caller left.
fn drop_dead(shared: &Shared, queue: &mut Queue) {
    let now = Instant::now();
    if !queue.pending.iter().any(|p| p.dead(now)) {
        return;
    }
    let before = queue.pending.len();
    let mut kept = VecDeque::with_capacity(before);
    for p in queue.pending.drain(..) {
        if !p.dead(now) {
            kept.push_back(p);
        } else if !p.reply.is_closed() {
            shared.observer.expired();
            let _ = p
                .reply
                .send((Err(Error::DeadlineExceeded), Timing::default()));
        }
    }
    queue.pending = kept;
    report_depth(shared, queue);
}

fn report_depth(shared: &Shared, queue: &Queue) {
    shared.observer.queue_depth(queue.pending.len());
}

/// Runs one batch and answers each of its requests.
fn run(shared: &Shared, batch: Vec<Pending>) {
    let started = Instant::now();
    let requests = batch.len();
    let total_rows: usize = batch.iter().map(|p| p.rows).sum();
    let mut replies = Vec::with_capacity(requests);
    let mut row_counts = Vec::with_capacity(requests);
    let mut columns: Vec<Vec<Tensor>> = Vec::new();
    for p in batch {
        replies.push((p.reply, started.saturating_duration_since(p.queued_at)));
        row_counts.push(p.rows);
        if columns.is_empty() {
            columns = p.inputs.into_iter().map(|t| vec![t]).collect();
        } else {
            for (column, t) in columns.iter_mut().zip(p.inputs) {
                column.push(t);
            }
        }
    }
    let outputs = columns
        .into_iter()
        .map(Tensor::concat_rows)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Inference(format!("cannot form the batch: {e}")))
        .and_then(|inputs| guarded(shared.model.as_ref(), inputs));
    let compute = started.elapsed();
    shared.observer.executed(total_rows, requests, compute);
    let timing = |queue| Timing {
        queue,
        compute,
        batch_rows: total_rows,
    };
    if requests == 1 {
        if let Some((reply, queue)) = replies.pop() {
            let _ = reply.send((outputs, timing(queue)));
        }
        return;
    }
    let split = outputs.and_then(|outputs| {
        let mut per_request: Vec<Vec<Tensor>> = (0..requests)
            .map(|_| Vec::with_capacity(outputs.len()))
            .collect();
        for output in outputs {
            let pieces = output
                .split_rows(&row_counts)
                .map_err(|e| Error::Inference(format!("cannot split the batch's outputs: {e}")))?;
            for (mine, piece) in per_request.iter_mut().zip(pieces) {
                mine.push(piece);
            }
        }
        Ok(per_request)
    });
    match split {
        Ok(per_request) => {
            for ((reply, queue), outputs) in replies.into_iter().zip(per_request) {
                let _ = reply.send((Ok(outputs), timing(queue)));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for (reply, queue) in replies {
                let _ = reply.send((Err(Error::Inference(message.clone())), timing(queue)));
            }
        }
    }
}

/// Runs the model, turning a panic into an error.
fn guarded(model: &dyn Model, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
    catch_unwind(AssertUnwindSafe(|| model.infer(inputs))).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_owned());
        Err(Error::Inference(format!("the model panicked: {what}")))
    })
}

#[cfg(test)]
mod tests;
