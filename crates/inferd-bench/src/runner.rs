//! Closed- and open-loop load over any [`ClientFactory`], so the same loops
//! run against real servers and, in tests, against simulated ones on tokio's
//! paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Client, ClientFactory};
use crate::schedule::{Arrival, Schedule};
use crate::stats::{ErrorKind, Recorder};

/// Shared limits of one target's step.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Requests left to start (`u64::MAX`: no bound).
    left: AtomicU64,
}

impl Budget {
    pub(crate) fn new(requests: Option<u64>) -> Budget {
        Budget {
            left: AtomicU64::new(requests.unwrap_or(u64::MAX)),
        }
    }

    /// Takes one request from the budget; false when it is spent.
    fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    pub(crate) fn spent(&self) -> bool {
        self.left.load(Ordering::Relaxed) == 0
    }
}

async fn one<C: Client>(client: &mut C, timeout: Duration) -> Result<(), ErrorKind> {
    match tokio::time::timeout(timeout, client.request()).await {
        Ok(outcome) => outcome,
        Err(_) => {
            client.abandon();
            Err(ErrorKind::Timeout)
        }
    }
}

/// Closed loop: each client keeps exactly one request in flight until `length`
/// has passed (or the budget is spent). Returns the clients for the next turn.
pub(crate) async fn closed_loop<C: Client>(
    clients: Vec<C>,
    length: Duration,
    timeout: Duration,
    budget: Arc<Budget>,
) -> (Vec<C>, Recorder) {
    let until = Instant::now() + length;
    let mut workers = JoinSet::new();
    for mut client in clients {
        let budget = budget.clone();
        workers.spawn(async move {
            let mut rec = Recorder::new();
            while Instant::now() < until && budget.take() {
                let started = Instant::now();
                match one(&mut client, timeout).await {
                    Ok(()) => rec.success(started.elapsed()),
                    Err(kind) => rec.error(kind),
                }
            }
            (client, rec)
        });
    }
    let mut clients = Vec::new();
    let mut total = Recorder::new();
    while let Some(joined) = workers.join_next().await {
        if let Ok((client, rec)) = joined {
            clients.push(client);
            total.merge(&rec);
        }
    }
    (clients, total)
}

/// How the open-loop dispatcher waits for each request's start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pacing {
    /// tokio's timer: millisecond resolution, but follows a paused test clock.
    #[cfg_attr(not(test), allow(dead_code))]
    Tokio,
    /// A dedicated thread sleeping on the OS clock (~0.1 ms slack), for real
    /// runs: a late start would count as server latency.
    Thread,
}

/// Open loop: requests start on the schedule whatever the server does;
/// latency runs from each request's intended start. Clients are reused from
/// `pool` and made as needed, up to `max_in_flight` at once; a request that
/// waits for a free client still counts its wait.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_loop<F: ClientFactory>(
    factory: Arc<F>,
    pool: Arc<Mutex<Vec<F::Client>>>,
    arrival: Arrival,
    rate: f64,
    seed: u64,
    length: Duration,
    timeout: Duration,
    budget: Arc<Budget>,
    max_in_flight: usize,
    pacing: Pacing,
) -> Recorder {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let recorder = Arc::new(std::sync::Mutex::new(Recorder::new()));
    let launch = {
        let recorder = recorder.clone();
        move |intended: Instant| {
            let (factory, pool, slots, recorder) = (
                factory.clone(),
                pool.clone(),
                slots.clone(),
                recorder.clone(),
            );
            async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                let reused = pool.lock().await.pop();
                let mut client = reused.unwrap_or_else(|| factory.client());
                let outcome = one(&mut client, timeout).await;
                let latency = intended.elapsed();
                pool.lock().await.push(client);
                let mut rec = recorder.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(()) => rec.success(latency),
                    Err(kind) => rec.error(kind),
                }
            }
        }
    };
    let start = Instant::now();
    let due = move |offset: Duration| offset < length && budget.take();
    let mut requests = JoinSet::new();
    match pacing {
        Pacing::Tokio => {
            for offset in Schedule::new(arrival, rate, seed).take_while(|o| due(*o)) {
                let intended = start + offset;
                tokio::time::sleep_until(intended).await;
                requests.spawn(launch(intended));
                // Reap finished requests as we go so the set stays small.
                while requests.try_join_next().is_some() {}
            }
        }
        Pacing::Thread => {
            let handle = tokio::runtime::Handle::current();
            let dispatcher = tokio::task::spawn_blocking(move || {
                let mut spawned = Vec::new();
                for offset in Schedule::new(arrival, rate, seed).take_while(|o| due(*o)) {
                    let intended = start + offset;
                    let wait = intended.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    spawned.push(handle.spawn(launch(intended)));
                }
                spawned
            });
            if let Ok(spawned) = dispatcher.await {
                for request in spawned {
                    let _ = request.await;
                }
            }
        }
    }
    while requests.join_next().await.is_some() {}
    recorder.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests;
