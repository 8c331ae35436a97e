//! Append benchmarks, all durable (`Durability::Always`), next to a raw
//! fdatasync baseline on the same disk so the ratio can be read side by side.
//!
//! Data directories go under the system temp dir unless it is tmpfs (then the
//! current directory); set `ANNAL_BENCH_DIR` to choose.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use annal::{Durability, ExpectedVersion, Options, Store};
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const THREADS: usize = 32;

fn durable_store(dir: &std::path::Path) -> Store {
    Store::open(dir, Options::default().durability(Durability::Always)).expect("opening the store")
}

fn append_benches(c: &mut Criterion) {
    let root = common::tempdir();
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sampling_mode(SamplingMode::Flat);

    // Baseline: what one durable write costs on this disk without annal.
    // The file grows like a segment does (append, then fdatasync).
    {
        let path = root.path().join("fdatasync-baseline.bin");
        let mut f: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("creating the baseline file");
        let block = vec![0x5au8; 4096];
        g.throughput(Throughput::Elements(1));
        g.bench_function("fdatasync_4KiB_baseline", |b| {
            b.iter(|| {
                f.write_all(&block).expect("write");
                f.sync_data().expect("fdatasync");
            })
        });
        drop(f);
        let _ = std::fs::remove_file(&path);
    }

    // One event per append, one thread: every append waits for its own fdatasync.
    {
        let store = durable_store(&root.path().join("single"));
        let mut seq = 0u64;
        g.throughput(Throughput::Elements(1));
        g.bench_function("durable_single_event", |b| {
            b.iter_batched(
                || {
                    seq += 1;
                    (common::stream_name(seq % 1000), vec![common::event(seq)])
                },
                |(stream, evs)| store.append(&stream, ExpectedVersion::Any, evs).expect("append"),
                BatchSize::SmallInput,
            )
        });
        store.close().expect("close");
    }

    // Batches: one append of n events, one fdatasync.
    for n in [100usize, 1000] {
        let store = durable_store(&root.path().join(format!("batch-{n}")));
        let mut seq = 0u64;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("durable_batch", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let s = seq;
                    seq += n as u64;
                    (common::stream_name(s / n as u64 % 1000), common::events(s, n))
                },
                |(stream, evs)| store.append(&stream, ExpectedVersion::Any, evs).expect("append"),
                BatchSize::SmallInput,
            )
        });
        store.close().expect("close");
    }

    // 32 threads, each appending single events to a stream of its own; the
    // writer's group commit shares fdatasyncs between them. One iteration is one
    // append per thread, so the throughput reads as events/s.
    {
        let store = durable_store(&root.path().join("concurrent"));
        let mut round = 0u64;
        g.throughput(Throughput::Elements(THREADS as u64));
        g.bench_function(BenchmarkId::new("durable_concurrent_threads", THREADS), |b| {
            b.iter_custom(|iters| {
                round += 1;
                let barrier = Barrier::new(THREADS + 1);
                let store = &store;
                let barrier = &barrier;
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..THREADS as u64)
                        .map(|t| {
                            s.spawn(move || {
                                let stream = format!("worker-{t:02}");
                                let first = (round * THREADS as u64 + t) << 32;
                                let evs = common::events(first, iters as usize);
                                barrier.wait();
                                for e in evs {
                                    store.append(&stream, ExpectedVersion::Any, vec![e]).expect("append");
                                }
                            })
                        })
                        .collect();
                    barrier.wait();
                    let start = Instant::now();
                    for h in handles {
                        h.join().expect("appender thread");
                    }
                    start.elapsed()
                })
            })
        });
        store.close().expect("close");
    }

    g.finish();
}

criterion_group!(benches, append_benches);
criterion_main!(benches);
