//! Helpers shared by the benchmarks (and by `examples/figures.rs`): where to put
//! data directories, the benchmark event (of the `annal-workload` crate's
//! payloads) and how to fill a store.
//!
//! Not every helper is used by every bench binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use annal::{Direction, EventData, ExpectedVersion, Filter, LogFrom, Store};
use tempfile::TempDir;

// The events themselves (types, payloads, metadata, stream names) are the
// workload crate's, shared with the `compare` crate. Not every user of this
// module takes every one of them.
#[allow(unused_imports)]
pub use annal_workload::{FILTER_TYPE, TYPES, metadata, payload, stream_name};

/// A directory on a real disk for benchmark data.
///
/// `ANNAL_BENCH_DIR` wins if set. Otherwise the system temp dir is used unless it
/// lives on tmpfs/ramfs (where fdatasync is free and the figures would be
/// meaningless), in which case the current directory is used.
pub fn bench_root() -> PathBuf {
    if let Some(d) = std::env::var_os("ANNAL_BENCH_DIR") {
        let d = PathBuf::from(d);
        std::fs::create_dir_all(&d).expect("creating ANNAL_BENCH_DIR");
        return d;
    }
    let tmp = std::env::temp_dir();
    match fs_type(&tmp).as_deref() {
        Some("tmpfs" | "ramfs") => std::env::current_dir().expect("current dir"),
        _ => tmp,
    }
}

/// The file-system type of the mount holding `path`, from `/proc/self/mounts`.
pub fn fs_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (_dev, Some(mnt), Some(ty)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mnt = mnt.replace("\\040", " ");
        if path.starts_with(&mnt) && best.as_ref().is_none_or(|(len, _)| mnt.len() >= *len) {
            best = Some((mnt.len(), ty.to_string()));
        }
    }
    best.map(|(_, ty)| ty)
}

/// A fresh temporary directory under [`bench_root`], removed on drop.
pub fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("annal-bench-")
        .tempdir_in(bench_root())
        .expect("creating a temporary directory")
}

/// Benchmark event number `seq`: ~300 bytes of JSON data, ~80 bytes of JSON
/// metadata, two tags, and the type `TYPES[seq % 10]`.
pub fn event(seq: u64) -> EventData {
    EventData::json(TYPES[(seq % 10) as usize], payload(seq))
        .with_metadata(metadata(seq))
        .with_tag(annal_workload::tenant_tag(seq))
        .with_tag(annal_workload::customer_tag(seq))
}

/// `n` consecutive benchmark events starting at `first`.
pub fn events(first: u64, n: usize) -> Vec<EventData> {
    (first..first + n as u64).map(event).collect()
}

/// Fills `store` with `streams * per_stream` events, interleaving the streams in
/// the log: rounds of `chunk` events (one append) per stream. The event of
/// revision `r` in a stream has type `TYPES[r % 10]`.
pub fn fill_interleaved(store: &Store, streams: u64, per_stream: u64, chunk: u64) {
    assert!(
        per_stream.is_multiple_of(chunk),
        "per_stream must be a multiple of chunk"
    );
    for round in 0..per_stream / chunk {
        for s in 0..streams {
            let first = round * chunk;
            let evs = (first..first + chunk)
                .map(|r| {
                    let seq = s * per_stream + r;
                    EventData::json(TYPES[(r % 10) as usize], payload(seq))
                        .with_metadata(metadata(seq))
                        .with_tag(format!("tenant:t{}", s % 8))
                        .with_tag(format!("customer:cust-{s:06}"))
                })
                .collect();
            store
                .append(&stream_name(s), ExpectedVersion::Any, evs)
                .expect("append while filling the store");
        }
    }
}

/// Fills `store` with `n` events in appends of `batch` events, each append to a
/// stream of its own.
pub fn fill_batched(store: &Store, n: u64, batch: u64) {
    let mut seq = 0;
    let mut b = 0;
    while seq < n {
        let k = batch.min(n - seq);
        store
            .append(&stream_name(b), ExpectedVersion::Any, events(seq, k as usize))
            .expect("append while filling the store");
        seq += k;
        b += 1;
    }
}

/// Reads the whole log forward in pages of `page` events passing `filter`;
/// calls `each` on every page and returns the number of events read.
pub fn scan_all(store: &Store, page: usize, filter: &Filter, mut each: impl FnMut(&[annal::RecordedEvent])) -> u64 {
    let mut from = LogFrom::Start;
    let mut total = 0;
    loop {
        let evs = store
            .read_all(Direction::Forward, from, page, filter)
            .expect("read_all");
        total += evs.len() as u64;
        each(&evs);
        match evs.last() {
            Some(last) if evs.len() == page => from = LogFrom::Position(last.position + 1),
            _ => return total,
        }
    }
}

/// Total size in bytes of the files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
