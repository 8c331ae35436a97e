//! Read benchmarks on a store of 200,000 events in 2,000 streams (100 events
//! each, interleaved in the log in appends of 10), built once with
//! `Durability::Never`, closed and reopened before measuring. The page cache is warm.
//!
//! Group `read` reads the store as written (one sealed segment and the active
//! one, compression off); group `read_compressed` reads a copy of it whose
//! active segment was sealed and every segment compressed (`Store::compress`,
//! default settings: zstd level 3, 32 KiB blocks).

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::hint::black_box;
use std::time::Duration;

use annal::{Direction, Durability, Filter, Options, Store, StreamFrom};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const STREAMS: u64 = 2_000;
const PER_STREAM: u64 = 100;
const TOTAL: u64 = STREAMS * PER_STREAM;
const PAGE: usize = 1000;

fn read_benches(c: &mut Criterion) {
    let root = common::tempdir();
    let dir = root.path().join("store");
    {
        let options = Options::default().durability(Durability::Never).no_compression();
        let store = Store::open(&dir, options).expect("open");
        common::fill_interleaved(&store, STREAMS, PER_STREAM, 10);
        store.close().expect("close");
    }
    let zdir = root.path().join("store-compressed");
    std::fs::create_dir_all(&zdir).expect("mkdir");
    for entry in std::fs::read_dir(&dir).expect("read_dir") {
        let entry = entry.expect("dir entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), zdir.join(entry.file_name())).expect("copying the store");
        }
    }
    {
        let store = Store::open(&zdir, Options::default().durability(Durability::Never)).expect("open copy");
        store.seal_active_segment().expect("seal");
        let report = store.compress().expect("compress");
        assert!(report.segments >= 1, "nothing compressed: {report:?}");
        store.close().expect("close copy");
    }
    // Compression stays off for the plain store, so that no background pass changes it while measuring.
    let plain = Store::open(&dir, Options::default().no_compression()).expect("reopen");
    bench_store(c, "read", &plain);
    drop(plain);
    let compressed = Store::open(&zdir, Options::default()).expect("reopen copy");
    bench_store(c, "read_compressed", &compressed);
    drop(compressed);
}

/// The read benchmarks of one store, as group `name`.
fn bench_store(c: &mut Criterion, name: &str, store: &Store) {
    assert_eq!(store.head_position(), TOTAL);

    // Sanity checks, and a sample of ids for the lookups.
    let filter = Filter::all().with_type(common::FILTER_TYPE);
    let mut ids = Vec::new();
    let n = common::scan_all(store, PAGE, &Filter::all(), |page| {
        ids.extend(page.iter().filter(|e| e.position % 197 == 0).map(|e| e.id));
    });
    assert_eq!(n, TOTAL);
    let matching = common::scan_all(store, PAGE, &filter, |page| {
        assert!(page.iter().all(|e| e.event_type == common::FILTER_TYPE));
    });
    assert_eq!(matching, TOTAL / 10);
    let one = store
        .read_stream(&common::stream_name(7), Direction::Forward, StreamFrom::Start, 100)
        .expect("read_stream");
    assert_eq!(one.len(), 100);
    assert!(one.iter().enumerate().all(|(i, e)| e.revision == i as u64));

    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let mut s = 0u64;
    g.throughput(Throughput::Elements(PER_STREAM));
    g.bench_function("read_stream_100_forward", |b| {
        b.iter(|| {
            s = (s + 7919) % STREAMS;
            let evs = store
                .read_stream(&common::stream_name(s), Direction::Forward, StreamFrom::Start, 100)
                .expect("read_stream");
            debug_assert_eq!(evs.len(), 100);
            black_box(evs)
        })
    });

    let mut i = 0usize;
    g.throughput(Throughput::Elements(1));
    g.bench_function("event_by_id", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(store.event_by_id(ids[i]).expect("event_by_id").expect("event exists"))
        })
    });

    // Whole-log scans take a good fraction of a second each: flat sampling.
    g.sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(5));

    g.throughput(Throughput::Elements(TOTAL));
    g.bench_function("read_all_forward_pages_of_1000", |b| {
        b.iter(|| {
            let n = common::scan_all(store, PAGE, &Filter::all(), |p| {
                black_box(p);
            });
            assert_eq!(n, TOTAL);
        })
    });

    g.throughput(Throughput::Elements(TOTAL / 10));
    g.bench_function("read_all_by_type_pages_of_1000", |b| {
        b.iter(|| {
            let n = common::scan_all(store, PAGE, &filter, |p| {
                black_box(p);
            });
            assert_eq!(n, TOTAL / 10);
        })
    });

    g.finish();
}

criterion_group!(benches, read_benches);
criterion_main!(benches);
