//! The loops on tokio's paused clock against simulated servers.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::stats::Recorder;

/// A simulated server: every request takes `service`, except that from
/// `stall_at` (since the test's start) nothing is answered until `stall_end`.
#[derive(Clone)]
struct Sim {
    start: Instant,
    service: Duration,
    stall: Option<(Duration, Duration)>,
    fail_every: Option<usize>,
    count: Arc<AtomicUsize>,
}

impl Sim {
    fn new(service: Duration) -> Sim {
        Sim {
            start: Instant::now(),
            service,
            stall: None,
            fail_every: None,
            count: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Client for Sim {
    async fn request(&mut self) -> Result<(), ErrorKind> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::time::sleep(self.service).await;
        if let Some((from, to)) = self.stall {
            let now = self.start.elapsed();
            if now >= from && now < to {
                tokio::time::sleep(to - now).await;
            }
        }
        match self.fail_every {
            Some(k) if n.is_multiple_of(k) => Err(ErrorKind::Status(500)),
            _ => Ok(()),
        }
    }

    fn abandon(&mut self) {}
}

impl ClientFactory for Sim {
    type Client = Sim;
    fn client(&self) -> Sim {
        self.clone()
    }
}

fn us(micros: u64) -> Duration {
    Duration::from_micros(micros)
}

#[tokio::test(start_paused = true)]
async fn closed_loop_throughput_is_concurrency_over_service_time() {
    let sim = Sim::new(us(1000));
    let clients = vec![sim.clone(); 8];
    let (clients, rec) = closed_loop(
        clients,
        Duration::from_secs(1),
        Duration::from_secs(5),
        Arc::new(Budget::new(None)),
    )
    .await;
    assert_eq!(clients.len(), 8);
    // 8 in flight, 1 ms each, for 1 s: 8000 requests, all at 1 ms.
    assert_eq!(rec.successes(), 8000);
    assert_eq!(rec.error_count(), 0);
    let p = rec.percentiles();
    assert_eq!((p.p50, p.p99, p.max), (1000, 1000, 1000));
}

#[tokio::test(start_paused = true)]
async fn closed_loop_honours_the_request_bound_and_counts_errors() {
    let mut sim = Sim::new(us(100));
    sim.fail_every = Some(10);
    let (_, rec) = closed_loop(
        vec![sim.clone(); 4],
        Duration::from_secs(60),
        Duration::from_secs(5),
        Arc::new(Budget::new(Some(1000))),
    )
    .await;
    assert_eq!(rec.requests(), 1000);
    assert_eq!(rec.error_count(), 100);
    assert_eq!(rec.successes() + rec.error_count(), rec.requests());
    assert_eq!(rec.errors().get("http_500"), Some(&100));
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_errors() {
    let sim = Sim::new(Duration::from_secs(10));
    let (_, rec) = closed_loop(
        vec![sim],
        Duration::from_secs(3),
        Duration::from_secs(1),
        Arc::new(Budget::new(None)),
    )
    .await;
    assert_eq!(rec.successes(), 0);
    assert_eq!(rec.errors().get("timeout"), Some(&3));
}

// tokio's timer has millisecond resolution, so simulated service times below
// are whole milliseconds and every expectation allows for one tick.

/// The point of open loop: a stall shows in the latencies of every request
/// that was due during it, not just the one that was in flight.
#[tokio::test(start_paused = true)]
async fn open_loop_measures_from_the_intended_start() {
    let mut sim = Sim::new(us(2000));
    sim.stall = Some((Duration::from_secs(1), Duration::from_secs(2)));
    let rec = open_loop(
        Arc::new(sim.clone()),
        Arc::new(Mutex::new(Vec::new())),
        Arrival::Constant,
        100.0,
        7,
        Duration::from_secs(4),
        Duration::from_secs(10),
        Arc::new(Budget::new(None)),
        // One connection: a closed-loop tool would send nothing during the
        // stall and report a single slow request.
        1,
        Pacing::Tokio,
    )
    .await;
    assert_eq!(rec.requests(), 400);
    assert_eq!(rec.successes(), 400);
    let p = rec.percentiles();
    // Requests due during the 1 s stall (a quarter of the run) waited for it:
    // the median is still the service time, but p90 holds hundreds of ms.
    assert!(p.p50 <= 3_000, "{p:?}");
    assert!(p.p90 > 300_000, "{p:?}");
    assert!(p.max >= 1_000_000, "{p:?}");
}

#[tokio::test(start_paused = true)]
async fn open_loop_sends_at_the_offered_rate() {
    let sim = Sim::new(us(5000));
    let count = sim.count.clone();
    let started = Instant::now();
    let rec = open_loop(
        Arc::new(sim),
        Arc::new(Mutex::new(Vec::new())),
        Arrival::Poisson,
        200.0,
        3,
        Duration::from_secs(5),
        Duration::from_secs(10),
        Arc::new(Budget::new(None)),
        64,
        Pacing::Tokio,
    )
    .await;
    let sent = count.load(Ordering::Relaxed) as f64;
    // 1000 expected; a Poisson count's sd is about 32.
    assert!((sent - 1000.0).abs() < 160.0, "{sent}");
    assert_eq!(rec.requests() as f64, sent);
    // An unloaded server answers in its service time (plus at most a tick).
    let p = rec.percentiles();
    assert!((5_000..=6_100).contains(&p.p50), "{p:?}");
    assert!(p.p99 <= 6_100, "{p:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[test]
fn merged_recorder_is_the_sum() {
    let mut a = Recorder::new();
    a.success(us(5));
    let b = a.clone();
    a.merge(&b);
    assert_eq!(a.successes(), 2);
}
