//! When requests go out: open-loop arrival schedules, and the order in which
//! several targets take turns.

use std::time::Duration;

/// How open-loop requests are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Exactly `1/rate` apart.
    Constant,
    /// Exponentially distributed gaps with mean `1/rate` (a Poisson process),
    /// as independent clients produce.
    Poisson,
}

/// The intended send times of an open-loop run, as offsets from its start.
///
/// Latency is measured from these times, not from when a request actually
/// left, so a server that stalls cannot hide the requests it delayed
/// (no coordinated omission).
#[derive(Clone, Debug)]
pub struct Schedule {
    arrival: Arrival,
    rate: f64,
    next: f64,
    index: u64,
    rng: SplitMix64,
}

impl Schedule {
    /// `rate` in requests per second (> 0); `seed` makes Poisson runs repeatable.
    pub fn new(arrival: Arrival, rate: f64, seed: u64) -> Schedule {
        Schedule {
            arrival,
            rate,
            next: 0.0,
            index: 0,
            rng: SplitMix64(seed),
        }
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let at = match self.arrival {
            // From the index, not by summing, so rounding never drifts.
            Arrival::Constant => self.index as f64 / self.rate,
            Arrival::Poisson => {
                let at = self.next;
                // 1 - u is in (0, 1], so the logarithm is finite.
                let u = self.rng.next_f64();
                self.next += -(1.0 - u).ln() / self.rate;
                at
            }
        };
        self.index += 1;
        Some(Duration::from_secs_f64(at))
    }
}

/// A small, fast, seedable generator (SplitMix64): enough for arrival gaps,
/// and deterministic across platforms.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One turn of one target in an interleaved step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    pub target: usize,
    pub length: Duration,
}

/// Splits `duration` per target into turns of at most `slice`, taken in
/// rotation (A B A B ...), so drift on a noisy machine hits every target
/// alike. One target gets its whole duration in one turn.
pub fn interleave(targets: usize, duration: Duration, slice: Duration) -> Vec<Slice> {
    if targets == 0 || duration.is_zero() {
        return Vec::new();
    }
    if targets == 1 || slice.is_zero() || slice >= duration {
        return (0..targets)
            .map(|target| Slice {
                target,
                length: duration,
            })
            .collect();
    }
    let mut turns = Vec::new();
    let mut left = duration;
    while !left.is_zero() {
        let length = left.min(slice);
        turns.extend((0..targets).map(|target| Slice { target, length }));
        left -= length;
    }
    turns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_schedule_is_evenly_spaced() {
        let times: Vec<Duration> = Schedule::new(Arrival::Constant, 1000.0, 1)
            .take(5)
            .collect();
        let micros: Vec<u128> = times.iter().map(Duration::as_micros).collect();
        assert_eq!(micros, [0, 1000, 2000, 3000, 4000]);
        // No drift after many arrivals.
        let last = Schedule::new(Arrival::Constant, 3.0, 1).nth(3_000_000);
        assert_eq!(last.map(|d| d.as_secs()), Some(1_000_000));
    }

    #[test]
    fn poisson_schedule_has_the_right_rate_and_spread() {
        let rate = 500.0;
        let horizon = Duration::from_secs(200);
        let times: Vec<Duration> = Schedule::new(Arrival::Poisson, rate, 42)
            .take_while(|t| *t < horizon)
            .collect();
        let expected = rate * horizon.as_secs_f64();
        let n = times.len() as f64;
        // Poisson count: sd = sqrt(100_000) ≈ 316; 5 sd either way.
        assert!((n - expected).abs() < 5.0 * expected.sqrt(), "{n} arrivals");
        let gaps: Vec<f64> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!((mean * rate - 1.0).abs() < 0.02, "mean gap {mean}");
        // Exponential gaps: the coefficient of variation is 1.
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.02,
            "cv {}",
            var.sqrt() / mean
        );
        // Monotonic and repeatable.
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let again: Vec<Duration> = Schedule::new(Arrival::Poisson, rate, 42)
            .take(100)
            .collect();
        assert_eq!(&times[..100], &again[..]);
    }

    #[test]
    fn targets_take_turns() {
        let s = Duration::from_secs;
        let order: Vec<(usize, u64)> = interleave(2, s(3), s(1))
            .into_iter()
            .map(|t| (t.target, t.length.as_secs()))
            .collect();
        assert_eq!(order, [(0, 1), (1, 1), (0, 1), (1, 1), (0, 1), (1, 1)]);

        // A remainder shorter than a slice still goes round every target.
        let turns = interleave(3, Duration::from_millis(2500), s(1));
        let lengths: Vec<u128> = turns.iter().map(|t| t.length.as_millis()).collect();
        assert_eq!(lengths, [1000, 1000, 1000, 1000, 1000, 1000, 500, 500, 500]);
        let targets: Vec<usize> = turns.iter().map(|t| t.target).collect();
        assert_eq!(targets, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
        for target in 0..3 {
            let total: Duration = turns
                .iter()
                .filter(|t| t.target == target)
                .map(|t| t.length)
                .sum();
            assert_eq!(total, Duration::from_millis(2500));
        }

        assert_eq!(
            interleave(1, s(10), s(1)),
            vec![Slice {
                target: 0,
                length: s(10)
            }]
        );
        assert!(interleave(0, s(10), s(1)).is_empty());
    }
}
