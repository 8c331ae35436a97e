//! What sealed segments' index files cost per event (format.md, "Index
//! files"): version 2 keeps the stream, type, tag, id and location lookups of
//! the benchmarks' workload (two tags per event) within 24 bytes per event,
//! where version 1 took 112; stores written by an older annal (version-1
//! files) still open and answer the same.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;

use annal::{Direction, Durability, EventData, ExpectedVersion, Filter, LogFrom, Options, Store, StreamFrom};
use annal_workload::{TYPES, metadata, payload};

const STREAMS: u64 = 200;
const PER_STREAM: u64 = 100;

fn options() -> Options {
    Options::default().durability(Durability::Never).segment_size(4 << 20)
}

/// The benchmarks' store: streams written interleaved, ten events per append,
/// JSON data and metadata, a tenant tag and a customer tag on every event.
fn fill(store: &Store) {
    for round in 0..PER_STREAM / 10 {
        for s in 0..STREAMS {
            let evs = (round * 10..round * 10 + 10)
                .map(|r| {
                    let seq = s * PER_STREAM + r;
                    EventData::json(TYPES[(r % 10) as usize], payload(seq))
                        .with_metadata(metadata(seq))
                        .with_tag(format!("tenant:t{}", s % 8))
                        .with_tag(format!("customer:cust-{s:06}"))
                })
                .collect();
            store
                .append(&format!("order-{s:06}"), ExpectedVersion::Any, evs)
                .unwrap();
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Bytes per section of every `.idx` file in `dir`, summed: locations,
/// streams, types, tags, ids, the rest (header, bloom, summary, type names, shared tag keys, checksums),
/// and the number of positions.
fn index_bytes(dir: &Path) -> ([u64; 6], u64) {
    let mut sums = [0u64; 6];
    let mut positions = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "idx") {
            continue;
        }
        let b = std::fs::read(&path).unwrap();
        assert_eq!(&b[0..8], b"ANNALIDX");
        assert_eq!(u32_at(&b, 8), 5, "{} is not version 5", path.display());
        positions += u64_at(&b, 24);
        let mut lookups = 0;
        for (i, sum) in sums.iter_mut().take(5).enumerate() {
            let len = u32_at(&b, 96 + 4 * i);
            *sum += len;
            lookups += len;
        }
        sums[5] += b.len() as u64 - lookups;
    }
    (sums, positions)
}

#[test]
fn the_workload_costs_at_most_24_index_bytes_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    fill(&store);
    assert!(store.segment_count() >= 3, "the test needs sealed segments");
    let (sums, positions) = index_bytes(dir.path());
    assert!(positions > 0);
    let per = |b: u64| b as f64 / positions as f64;
    let names = ["locations", "streams", "types", "tags", "ids", "rest"];
    let report: Vec<String> = names
        .iter()
        .zip(sums)
        .map(|(n, b)| format!("{n} {:.2}", per(b)))
        .collect();
    let lookups: u64 = sums[..5].iter().sum();
    println!(
        "bytes per event over {positions} sealed positions: {} | lookups {:.2}, all {:.2}",
        report.join(", "),
        per(lookups),
        per(lookups + sums[5])
    );
    assert!(per(lookups) <= 24.0, "lookups take {:.2} bytes per event", per(lookups));
    // Summary, names and checksums are per stream and segment, the bloom
    // filter (version 5: streams and ids) about 1.25 bytes per event.
    assert!(per(sums[5]) < 4.0, "the rest takes {:.2} bytes per event", per(sums[5]));
    assert!(
        per(lookups + sums[5]) <= 24.0,
        "the files take {:.2} bytes per event",
        per(lookups + sums[5])
    );

    // And the lookups answer: a stream in both directions, a type, a tag, an id.
    let s = store
        .read_stream("order-000042", Direction::Forward, StreamFrom::Start, 1000)
        .unwrap();
    assert_eq!(s.len() as u64, PER_STREAM);
    assert!(s.iter().enumerate().all(|(i, e)| e.revision == i as u64));
    let back = store
        .read_stream("order-000042", Direction::Backward, StreamFrom::End, 7)
        .unwrap();
    assert_eq!(
        back.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (93..100).rev().collect::<Vec<_>>()
    );
    let typed = store
        .read_all(
            Direction::Forward,
            LogFrom::Start,
            100_000,
            &Filter::all().with_type(TYPES[3]),
        )
        .unwrap();
    assert_eq!(typed.len() as u64, STREAMS * PER_STREAM / 10);
    assert!(typed.iter().all(|e| e.event_type == TYPES[3]));
    let tagged = store
        .read_all(
            Direction::Forward,
            LogFrom::Start,
            100_000,
            &Filter::all().with_tag("customer:cust-000042"),
        )
        .unwrap();
    assert_eq!(tagged.len() as u64, PER_STREAM);
    assert!(tagged.iter().all(|e| e.stream == "order-000042"));
    let e = &s[37];
    assert_eq!(store.event_by_id(e.id).unwrap().unwrap().position, e.position);
}
