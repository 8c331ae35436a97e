//! Time to open a store of 200,000 events after a clean close (`Store::open`
//! then drop, which closes it). The store is built once, outside the
//! measurement, with `Durability::Never` in appends of 1000. The page cache is warm.
//!
//! `open_200k_events_clean` has one sealed segment (64 MiB) and the active
//! one; `open_200k_events_1mib_segments` the same events in 1 MiB segments
//! (about 80 sealed segments and their index files), compression off.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::time::Duration;

use annal::{Durability, Options, Store};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};

const EVENTS: u64 = 200_000;

fn open_benches(c: &mut Criterion) {
    let root = common::tempdir();
    let dir = root.path().join("store");
    {
        let store = Store::open(&dir, Options::default().durability(Durability::Never)).expect("open");
        common::fill_batched(&store, EVENTS, 1000);
        store.close().expect("close");
    }
    {
        let store = Store::open(&dir, Options::default()).expect("reopen");
        assert_eq!(store.head_position(), EVENTS);
    }

    let many = root.path().join("many");
    let many_options = || Options::default().segment_size(1 << 20).no_compression();
    {
        let store = Store::open(&many, many_options().durability(Durability::Never)).expect("open");
        common::fill_batched(&store, EVENTS, 1000);
        assert!(store.segment_count() > 50, "{} segments", store.segment_count());
        store.close().expect("close");
    }

    let mut g = c.benchmark_group("open");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat);
    g.bench_function("open_200k_events_clean", |b| {
        b.iter(|| {
            let store = Store::open(&dir, Options::default()).expect("open");
            debug_assert_eq!(store.head_position(), EVENTS);
            drop(store);
        })
    });
    g.bench_function("open_200k_events_1mib_segments", |b| {
        b.iter(|| {
            let store = Store::open(&many, many_options()).expect("open");
            debug_assert_eq!(store.head_position(), EVENTS);
            drop(store);
        })
    });
    g.finish();
}

criterion_group!(benches, open_benches);
criterion_main!(benches);
