//! Measures issue 15's open target: the time to open a large store after a
//! clean close, and the memory the process holds after the open and after
//! reading one event.
//!
//!     cargo run --release --example open_figures -- [EVENTS] [STREAMS] [--dir DIR]
//!
//! EVENTS (default 10,000,000) benchmark events over STREAMS streams (default
//! EVENTS / 100), interleaved in the log ten events of a stream at a time, are
//! appended with `Durability::Never` and the default options (compression on),
//! the sealed segments compressed, then the store is closed. Each measurement then runs in a new process (this
//! program again, with `--measure DIR`), so that its resident memory is the
//! open's alone: five opens, each followed by one stream read of one event.
//! The data directory is kept when `--dir` names it (a second run reuses it),
//! else it is a temporary one. After the open, the resident mapped pages are
//! split by file kind (segments, index files, others) from `/proc/self/smaps`.

// Measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, clippy::cast_precision_loss)]

#[path = "../benches/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use annal::{Direction, Durability, Options, Store, StreamFrom};

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn memory_mib() -> (f64, f64) {
    let (rss, hwm, _, _) = memory_detail_mib();
    (rss, hwm)
}

/// `VmRSS`, `VmHWM`, `RssAnon` (heap) and `RssFile` (mapped files) of this process, in MiB.
fn memory_detail_mib() -> (f64, f64, f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("RssAnon:"), field("RssFile:"))
}

/// Resident MiB of this process's mappings of segment files (`.seg`), of
/// index files (`.idx`) and of other files, from `/proc/self/smaps`.
fn mapped_by_kind_mib() -> (f64, f64, f64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let (mut seg, mut idx, mut other) = (0.0, 0.0, 0.0);
    let mut kind = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping's first line: range, perms, offset, dev, inode, path.
            kind = match words.nth(4) {
                Some(p) if p.ends_with(".seg") => Some(0),
                Some(p) if p.ends_with(".idx") => Some(1),
                Some(p) if p.starts_with('/') => Some(2),
                _ => None,
            };
        } else if first == "Rss:"
            && let (Some(k), Some(kb)) = (kind, words.next().and_then(|v| v.parse::<f64>().ok()))
        {
            *[&mut seg, &mut idx, &mut other][k] += kb / 1024.0;
        }
    }
    (seg, idx, other)
}

fn measure(dir: &Path, streams: u64) {
    let (rss0, _) = memory_mib();
    let t = Instant::now();
    let store = Store::open(dir, Options::default()).unwrap();
    let open = t.elapsed();
    let (rss_open, _) = memory_mib();
    let (seg, idx, other) = mapped_by_kind_mib();
    let t = Instant::now();
    let stream = common::stream_name(streams / 2);
    let events = store
        .read_stream(&stream, Direction::Forward, StreamFrom::Start, 1)
        .unwrap();
    assert_eq!(events.len(), 1, "{stream} has no event");
    let read = t.elapsed();
    let (rss_read, hwm, anon, file) = memory_detail_mib();
    println!(
        "{:.2} {:.3} {:.1} {:.1} [{:.1} seg, {:.1} idx, {:.1} other files] {:.1} ({:.1} heap, {:.1} files) {:.1} {}",
        open.as_secs_f64() * 1e3,
        read.as_secs_f64() * 1e3,
        rss0,
        rss_open,
        seg,
        idx,
        other,
        rss_read,
        anon,
        file,
        hwm,
        store.head_position()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--measure") {
        measure(Path::new(&args[1]), args[2].parse().unwrap());
        return;
    }
    let mut numbers = Vec::new();
    let mut dir: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--dir" {
            dir = Some(PathBuf::from(it.next().expect("--dir DIR")));
        } else {
            numbers.push(a.parse::<u64>().expect("EVENTS and STREAMS are numbers"));
        }
    }
    let events = numbers.first().copied().unwrap_or(10_000_000);
    let streams = numbers.get(1).copied().unwrap_or((events / 100).max(1));
    let temp = common::tempdir();
    let dir = dir.unwrap_or_else(|| temp.path().join("store"));
    if !dir.join("streams.chk").exists() {
        let t = Instant::now();
        let store = Store::open(&dir, Options::default().durability(Durability::Never)).unwrap();
        common::fill_interleaved(&store, streams, events / streams, 10);
        // Settled as a store is after a while: sealed segments compressed.
        store.compress().unwrap();
        store.close().unwrap();
        eprintln!(
            "built {} events over {streams} streams in {:.1} s",
            events / streams * streams,
            t.elapsed().as_secs_f64()
        );
    }
    let size: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "store: {} ({:.0} MiB on disk); each line: a new process opening it",
        dir.display(),
        size as f64 / (1 << 20) as f64
    );
    println!(
        "open ms | read one event ms | RSS before MiB | after open [its mapped files] | after read (heap, mapped files) | peak | head"
    );
    let me = std::env::current_exe().unwrap();
    for _ in 0..5 {
        let out = Command::new(&me)
            .args(["--measure", dir.to_str().unwrap(), &streams.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
