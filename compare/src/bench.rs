//! Measuring: writer threads for a fixed time, medians and percentiles.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::systems::{BoxError, Conn};

/// What one operation of a writer did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Step {
    /// Events appended.
    pub events: u64,
    /// Appends refused for a wrong expected version.
    pub conflicts: u64,
}

/// What a timed run of writers did, per second of the run.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub events: f64,
    pub conflicts: f64,
}

/// Runs one thread per connection, each calling `step(thread, conn, op)` with
/// op = 0, 1, 2, ... until `dur` has passed since all started; returns the
/// rates over the time from the start until the last thread finished its last
/// operation. The first error stops every thread and is returned.
pub fn run_threads<F>(conns: &mut [Box<dyn Conn>], dur: Duration, step: F) -> Result<Rates, BoxError>
where
    F: Fn(usize, &mut dyn Conn, u64) -> Result<Step, BoxError> + Sync,
{
    let barrier = Barrier::new(conns.len() + 1);
    let events = AtomicU64::new(0);
    let conflicts = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let error: Mutex<Option<BoxError>> = Mutex::new(None);
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .iter_mut()
            .enumerate()
            .map(|(t, conn)| {
                let (barrier, step, events, conflicts, failed, error) =
                    (&barrier, &step, &events, &conflicts, &failed, &error);
                s.spawn(move || {
                    barrier.wait();
                    let deadline = Instant::now() + dur;
                    let (mut ev, mut cf, mut op) = (0, 0, 0);
                    while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                        match step(t, &mut **conn, op) {
                            Ok(st) => {
                                ev += st.events;
                                cf += st.conflicts;
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                error.lock().unwrap().get_or_insert(e);
                                break;
                            }
                        }
                        op += 1;
                    }
                    events.fetch_add(ev, Ordering::Relaxed);
                    conflicts.fetch_add(cf, Ordering::Relaxed);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("writer thread panicked");
        }
        start.elapsed()
    });
    if let Some(e) = error.into_inner().unwrap() {
        return Err(e);
    }
    let secs = elapsed.as_secs_f64();
    Ok(Rates {
        events: events.into_inner() as f64 / secs,
        conflicts: conflicts.into_inner() as f64 / secs,
    })
}

/// The median of some values (the lower middle one for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[5.0]), 5.0);
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 500.0);
        assert_eq!(quantile(&v, 0.99), 990.0);
        assert_eq!(quantile(&v, 1.0), 1000.0);
    }
}
