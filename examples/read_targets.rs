//! Measures issue 15's read targets on one store, plain and compressed:
//! latency of reading a whole 1,000-event stream (p50, p99, warm: every
//! stream read once before timing) and the rate of a full scan of the log in
//! pages of 1,000 events.
//!
//!     cargo run --release --example read_targets [EVENTS]
//!
//! EVENTS (default 200,000) benchmark events in streams of 1,000, interleaved
//! in the log in appends of 10; built with `Durability::Never` in a temporary
//! directory (see `ANNAL_BENCH_DIR`), then copied, and the copy sealed and
//! compressed with the default settings. The compressed copy is read with the
//! default block cache and with none (`Options::block_cache_bytes(0)`: each
//! read decompresses what it needs, remembering one block per segment).

// Measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, clippy::cast_precision_loss)]

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::Instant;

use annal::{Direction, Durability, Filter, Options, Store, StreamFrom};

const PER_STREAM: u64 = 1000;

fn measure(label: &str, store: &Store, streams: u64, total: u64) {
    for s in 0..streams {
        let evs = store
            .read_stream(&common::stream_name(s), Direction::Forward, StreamFrom::Start, 1000)
            .unwrap();
        assert_eq!(evs.len(), 1000);
    }
    let mut lat = Vec::new();
    let mut s = 0;
    for _ in 0..1000 {
        s = (s + 7919) % streams;
        let t = Instant::now();
        let evs = store
            .read_stream(&common::stream_name(s), Direction::Forward, StreamFrom::Start, 1000)
            .unwrap();
        lat.push(t.elapsed().as_secs_f64());
        assert_eq!(evs.len(), 1000);
    }
    lat.sort_by(f64::total_cmp);
    let q = |f: f64| lat[((lat.len() - 1) as f64 * f).round() as usize] * 1e3;
    let mut scans = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let n = common::scan_all(store, 1000, &Filter::all(), |p| {
            std::hint::black_box(p);
        });
        scans.push(n as f64 / t.elapsed().as_secs_f64());
        assert_eq!(n, total);
    }
    scans.sort_by(f64::total_cmp);
    println!(
        "{label}: 1,000-event stream read p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; full scan {:.0} events/s (median of 3: {:.0} / {:.0} / {:.0})",
        q(0.5),
        q(0.99),
        q(1.0),
        scans[1],
        scans[0],
        scans[1],
        scans[2]
    );
}

fn main() {
    let total: u64 = std::env::args().nth(1).map_or(200_000, |a| a.parse().unwrap());
    let streams = total / PER_STREAM;
    let total = streams * PER_STREAM;
    let root = common::tempdir();
    let dir = root.path().join("store");
    {
        let store = Store::open(&dir, Options::default().durability(Durability::Never).no_compression()).unwrap();
        common::fill_interleaved(&store, streams, PER_STREAM, 10);
        store.close().unwrap();
    }
    let zdir = root.path().join("store-compressed");
    std::fs::create_dir_all(&zdir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), zdir.join(entry.file_name())).unwrap();
        }
    }
    {
        let store = Store::open(&zdir, Options::default().durability(Durability::Never)).unwrap();
        store.seal_active_segment().unwrap();
        store.compress().unwrap();
        store.close().unwrap();
    }
    println!(
        "{total} events in {streams} streams; plain {} bytes, compressed {} bytes",
        common::dir_size(&dir),
        common::dir_size(&zdir)
    );
    // Twice each, alternating, on a machine that may be busy.
    for _ in 0..2 {
        let plain = Store::open(&dir, Options::default().no_compression()).unwrap();
        measure("plain", &plain, streams, total);
        drop(plain);
        let compressed = Store::open(&zdir, Options::default()).unwrap();
        measure("compressed, block cache 64 MiB (default)", &compressed, streams, total);
        drop(compressed);
        let uncached = Store::open(&zdir, Options::default().block_cache_bytes(0)).unwrap();
        measure("compressed, no block cache", &uncached, streams, total);
    }
}
