//! Figures of the queries of issue 16 on this machine, annal alone (the
//! comparison with PostgreSQL is not in the harness yet).
//!
//! ```text
//! cargo run --release --example query_figures -- [--events N] [--indexed actor,correlationId] [--segment-mib M] [--no-compression]
//! ```
//!
//! Fills a store with N events (default 1,000,000) in appends of 1,000
//! events, one stream `<category>-<id>` per append (5 categories), with 40
//! dotted event types and a JSON metadata object holding an `actor` (one of 100), then times, each the
//! median of 5 runs with a warm page cache: the first page (100 events) and
//! the whole result of a read by topic pattern, the first page of a read by a
//! metadata field, a count of everything, a count by aggregate type, a count
//! by type pattern and a breakdown by category. The store indexes the
//! metadata fields of `--indexed` (default `actor`, empty for none): reads and
//! counts by `actor=agent-7` (1% of the events) are timed with that index,
//! then the store is reopened without indexed fields (which rebuilds every
//! index file; timed) and the same reads and counts are timed again, as scans.

// Measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::time::{Duration, Instant};

use annal::{Direction, Durability, EventData, ExpectedVersion, Filter, GroupBy, LogFrom, Options, Store};
use annal_workload::queries::event;

fn median(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..5 {
        let t = Instant::now();
        n = f();
        times.push(t.elapsed());
    }
    times.sort();
    (times[2], n)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: usize = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(1_000_000, |n| n.parse().unwrap());
    let indexed: Vec<String> = args
        .iter()
        .position(|a| a == "--indexed")
        .and_then(|i| args.get(i + 1))
        .map_or("actor", |s| s.as_str())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let dir = tempfile::tempdir_in(".").unwrap();
    let segment_mib: u64 = args
        .iter()
        .position(|a| a == "--segment-mib")
        .and_then(|i| args.get(i + 1))
        .map_or(64, |n| n.parse().unwrap());
    let compress = !args.iter().any(|a| a == "--no-compression");
    let options = || {
        let o = Options::default()
            .durability(Durability::Never)
            .segment_size(segment_mib << 20);
        if compress { o } else { o.no_compression() }
    };
    let store = Store::open(dir.path(), options().indexed_metadata(indexed.clone())).unwrap();
    let t = Instant::now();
    let batch = 1000;
    for b in 0..events / batch {
        // One append per batch, to one stream; consecutive batches go to different streams.
        let mut stream = String::new();
        let evs: Vec<EventData> = (0..batch)
            .map(|i| {
                let (s, ty, data, meta) = event(b, b * batch + i);
                stream = s;
                EventData::json(ty, data).with_metadata(meta)
            })
            .collect();
        store.append(&stream, ExpectedVersion::Any, evs).unwrap();
    }
    println!(
        "filled {events} events in {:.1} s (indexed metadata fields: {indexed:?}; {} segments of {segment_mib} MiB; compression {compress})",
        t.elapsed().as_secs_f64(),
        store.segment_count()
    );
    let read = |f: &Filter, limit: usize| {
        store
            .read_all(Direction::Backward, LogFrom::End, limit, f)
            .unwrap()
            .len()
    };
    let pattern = Filter::all()
        .with_type_pattern("app.lifecycle.#")
        .with_type_pattern("hook.triggered.*");
    let figures: Vec<(&str, (Duration, usize))> = vec![
        (
            "read, type patterns app.lifecycle.# | hook.triggered.*, first page of 100 (newest first)",
            median(|| read(&pattern, 100)),
        ),
        (
            "read, type patterns, every match",
            median(|| read(&pattern, usize::MAX)),
        ),
        (
            "read, metadata actor=agent-7, first page of 100",
            median(|| read(&Filter::all().with_metadata("actor", "agent-7"), 100)),
        ),
        (
            "read, aggregate type order, first page of 100",
            median(|| read(&Filter::all().with_aggregate_type("order"), 100)),
        ),
        (
            "count, everything",
            median(|| store.count(&Filter::all()).unwrap() as usize),
        ),
        (
            "count, aggregate type order (stream index only)",
            median(|| store.count(&Filter::all().with_aggregate_type("order")).unwrap() as usize),
        ),
        (
            "count, stream pattern # (stream index only)",
            median(|| store.count(&Filter::all().with_stream_pattern("#")).unwrap() as usize),
        ),
        (
            "count, type patterns (reads the matching events)",
            median(|| store.count(&pattern).unwrap() as usize),
        ),
        (
            "count by category",
            median(|| store.count_by(&Filter::all(), GroupBy::Category).unwrap().len()),
        ),
    ];
    for (what, (d, n)) in figures {
        println!("{what}: {:.3} ms ({n})", d.as_secs_f64() * 1000.0);
    }
    let how = if indexed.iter().any(|f| f == "actor") {
        "indexed"
    } else {
        "scan"
    };
    metadata_figures(&store, how);
    store.close().unwrap();
    if !indexed.is_empty() {
        let t = Instant::now();
        let store = Store::open(dir.path(), options()).unwrap();
        println!(
            "reopen without indexed fields (rebuilds every index file): {:.1} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
        metadata_figures(&store, "scan");
        store.close().unwrap();
    }
}

/// Reads and counts by the metadata field `actor` (1% of the events).
fn metadata_figures(store: &Store, how: &str) {
    let read = |f: &Filter, limit: usize| {
        store
            .read_all(Direction::Backward, LogFrom::End, limit, f)
            .unwrap()
            .len()
    };
    let actor = Filter::all().with_metadata("actor", "agent-7");
    let both = Filter::all()
        .with_metadata("actor", "agent-7")
        .with_metadata("correlationId", "c-2");
    let figures: Vec<(&str, (Duration, usize))> = vec![
        (
            "read, metadata actor=agent-7, first page of 100",
            median(|| read(&actor, 100)),
        ),
        (
            "read, metadata actor=agent-7, every match",
            median(|| read(&actor, usize::MAX)),
        ),
        (
            "read, metadata actor=agent-7 and correlationId=c-2, every match",
            median(|| read(&both, usize::MAX)),
        ),
        (
            "count, metadata actor=agent-7",
            median(|| store.count(&actor).unwrap() as usize),
        ),
    ];
    for (what, (d, n)) in figures {
        println!("[{how}] {what}: {:.3} ms ({n})", d.as_secs_f64() * 1000.0);
    }
}
