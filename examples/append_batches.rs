//! Batched appends from one thread, for profiling the append path.
//!
//! ```text
//! cargo run --release --example append_batches -- [--batch N] [--secs S] [--never] [--runs R] [--dir DIR]
//! ```
//!
//! Appends batches of `N` (default 1,000) pre-built benchmark events (the
//! `annal-workload` payloads, as the comparison harness uses) to 1,000
//! rotating streams for `S` seconds (default 3), `R` times (default 3), each
//! run in a new store, and prints each run's events/s and their median.
//! `--never` opens the stores with `Durability::Never` (no sync at all): the
//! CPU cost of the append path alone. Building the events is not timed: an
//! append clones them, which shares their payload bytes. `--slowest K`
//! also prints each run's appends by latency (median, p99, p99.9) and its
//! K slowest, with when they came and how many segment files the store had
//! after them (a rotation's stall shows there).

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, clippy::cast_precision_loss)]

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use annal::{Durability, EventData, ExpectedVersion, Options, Store};

fn main() {
    let mut batch = 1000usize;
    let mut secs = 3.0f64;
    let mut runs = 3usize;
    let mut durability = Durability::Always;
    let mut root = None;
    let mut slowest = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--batch" => batch = args.next().unwrap().parse().unwrap(),
            "--secs" => secs = args.next().unwrap().parse().unwrap(),
            "--runs" => runs = args.next().unwrap().parse().unwrap(),
            "--never" => durability = Durability::Never,
            "--slowest" => slowest = args.next().unwrap().parse().unwrap(),
            "--dir" => root = Some(std::path::PathBuf::from(args.next().unwrap())),
            other => panic!("unknown argument {other:?}"),
        }
    }
    let root = root.unwrap_or_else(common::bench_root);
    // 100 batches' worth of events, cycled through.
    let pool: Vec<EventData> = common::events(0, batch * 100);
    let mut rates = Vec::new();
    for run in 0..runs {
        let dir = tempfile::tempdir_in(&root).unwrap();
        let store = Store::open(dir.path(), Options::default().durability(durability)).unwrap();
        let (mut n, mut k) = (0u64, 0usize);
        // (latency, when since the start, segment files after it), if asked.
        let mut timed: Vec<(Duration, Duration, usize)> = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs_f64(secs) {
            let from = (k % 100) * batch;
            let stream = common::stream_name(k as u64 % 1000);
            let began = Instant::now();
            store
                .append(&stream, ExpectedVersion::Any, pool[from..from + batch].to_vec())
                .unwrap();
            if slowest > 0 {
                timed.push((began.elapsed(), began - start, store.segment_count()));
            }
            n += batch as u64;
            k += 1;
        }
        if slowest > 0 {
            print_slowest(&mut timed, slowest);
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!("run {}: {rate:.0} events/s ({n} events)", run + 1);
        rates.push(rate);
        drop(store);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "batches of {batch}, {durability:?}: median {:.0} events/s (min {:.0}, max {:.0})",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}

/// Prints the appends' latency quantiles and the `k` slowest of them.
fn print_slowest(timed: &mut [(Duration, Duration, usize)], k: usize) {
    let mut by_latency: Vec<Duration> = timed.iter().map(|t| t.0).collect();
    by_latency.sort();
    let q = |f: f64| by_latency[((by_latency.len() - 1) as f64 * f) as usize];
    println!(
        "  {} appends: median {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        by_latency.len(),
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    );
    timed.sort_by_key(|t| std::cmp::Reverse(t.0));
    for (latency, when, files) in timed.iter().take(k) {
        println!("  {latency:?} at {when:?} ({files} segment files after it)");
    }
}
