//! Plain performance figures of annal on this machine's disk, without criterion.
//!
//! ```text
//! cargo run --release --example figures -- [--events N] [--dir DIR]
//! ```
//!
//! Prints: raw fdatasync/s of the disk, durable appends/s from one thread, from
//! 32 concurrent threads and in batches of 1000, the time to open a store of N
//! events (default 1,000,000) after a clean close and after a torn tail, and the
//! rate of a full `read_all` scan. Timed figures are medians of 3 runs.
//!
//! Data goes in a temporary directory under `--dir`, else `ANNAL_BENCH_DIR`,
//! else the system temp dir unless it is tmpfs (then the current directory).
//! All reads run with a warm page cache.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

#[path = "../benches/common/mod.rs"]
mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annal::{Direction, Durability, ExpectedVersion, Filter, LogFrom, Message, Options, Store, SubscribeFrom};

const RUNS: usize = 3;
const THREADS: u64 = 32;

struct Args {
    events: u64,
    dir: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--events" => {
                let v = it.next().unwrap_or_else(|| usage("--events needs a value"));
                args.events = v
                    .replace(['_', ','], "")
                    .parse()
                    .unwrap_or_else(|_| usage("--events needs a positive integer"));
                if args.events == 0 {
                    usage("--events needs a positive integer");
                }
            }
            "--dir" => args.dir = Some(it.next().unwrap_or_else(|| usage("--dir needs a value")).into()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    args
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("error: {msg}");
    }
    eprintln!("usage: cargo run --release --example figures -- [--events N] [--dir DIR]");
    std::process::exit(if msg.is_empty() { 0 } else { 2 })
}

/// Median of `RUNS` runs of `f`, with every run's value.
fn median(mut f: impl FnMut(usize) -> f64) -> (f64, Vec<f64>) {
    let runs: Vec<f64> = (0..RUNS).map(&mut f).collect();
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    (sorted[RUNS / 2], runs)
}

fn fmt_rate(r: f64) -> String {
    let s = format!("{:.0}", r);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn runs_list(runs: &[f64], unit: impl Fn(f64) -> String) -> String {
    runs.iter().map(|r| unit(*r)).collect::<Vec<_>>().join(", ")
}

/// 4 KiB writes, each followed by fdatasync, for `secs`; returns syncs/s.
/// `append` grows the file (as a segment does); otherwise the same block is overwritten.
fn fdatasync_rate(path: &Path, secs: f64, append: bool) -> f64 {
    let mut f: File = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .expect("creating the fdatasync file");
    let block = vec![0x5au8; 4096];
    if !append {
        f.write_all(&block).expect("write");
        f.sync_all().expect("fsync");
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        if append {
            f.write_all(&block).expect("write");
        } else {
            std::os::unix::fs::FileExt::write_all_at(&f, &block, 0).expect("write");
        }
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    rate
}

/// Appends of `batch` events to one store for about `secs` of append time, one
/// thread; returns events/s over the time spent inside `append` (building the
/// events is not counted).
fn append_rate(store: &Store, seq: &mut u64, batch: usize, secs: f64) -> f64 {
    let mut in_append = Duration::ZERO;
    let mut n = 0u64;
    while in_append.as_secs_f64() < secs {
        let stream = common::stream_name(*seq / batch as u64 % 1000);
        let evs = common::events(*seq, batch);
        *seq += batch as u64;
        let t = Instant::now();
        store.append(&stream, ExpectedVersion::Any, evs).expect("append");
        in_append += t.elapsed();
        n += batch as u64;
    }
    n as f64 / in_append.as_secs_f64()
}

/// `THREADS` threads appending single events, each to its own stream, for `secs`; returns events/s.
fn concurrent_rate(store: &Store, run: usize, secs: f64) -> f64 {
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let barrier = Barrier::new(THREADS as usize + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (stop, count, barrier) = (&stop, &count, &barrier);
                s.spawn(move || {
                    let stream = format!("worker-{t:02}");
                    let mut seq = ((run as u64) * THREADS + t) << 32;
                    barrier.wait();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        store
                            .append(&stream, ExpectedVersion::Any, vec![common::event(seq)])
                            .expect("append");
                        seq += 1;
                        n += 1;
                    }
                    count.fetch_add(n, Ordering::Relaxed);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("appender thread");
        }
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    })
}

/// fsyncs every file directly in `dir`.
fn sync_files(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("listing the store").flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            File::open(e.path()).and_then(|f| f.sync_all()).expect("fsync");
        }
    }
}

/// The segment file with the highest base position.
fn last_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("listing the store")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment file")
}

/// Appends a torn frame to the end of the last segment, as a crash in the
/// middle of a write would leave: a frame header announcing 420 bytes, then
/// only 100 of them.
fn tear_tail(dir: &Path, run: usize) {
    let seg = last_segment(dir);
    let mut f = OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("opening the last segment");
    let mut garbage = Vec::with_capacity(108);
    garbage.extend_from_slice(&420u32.to_le_bytes());
    garbage.extend_from_slice(&0xdead_beef_u32.wrapping_add(run as u32).to_le_bytes());
    garbage.extend((0..100u32).map(|i| (i * 31 + run as u32) as u8));
    f.write_all(&garbage).expect("tearing the tail");
    f.sync_data().expect("fdatasync");
}

fn main() {
    let args = parse_args();
    let n = args.events;
    let root = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("creating --dir");
            tempfile::Builder::new()
                .prefix("annal-figures-")
                .tempdir_in(d)
                .expect("creating a temporary directory")
        }
        None => common::tempdir(),
    };
    let base = root.path();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("annal figures");
    println!(
        "  data directory: {} (file system: {}), {cores} cores",
        base.display(),
        common::fs_type(base).unwrap_or_else(|| "unknown".into())
    );
    let sample = common::event(1);
    println!(
        "  event: {} bytes of JSON data, {} bytes of JSON metadata, {} tags, type like {:?}",
        sample.data.len(),
        sample.metadata.len(),
        sample.tags.len(),
        sample.event_type
    );
    println!("  medians of {RUNS} runs (every run in brackets)");
    println!();

    // 1. The disk.
    let (fsync, runs) = median(|_| fdatasync_rate(&base.join("fsync.bin"), 2.0, true));
    println!(
        "raw fdatasync (4 KiB append + fdatasync, 2 s):   {:>12} /s   [{}]",
        fmt_rate(fsync),
        runs_list(&runs, fmt_rate)
    );
    let (fsync_ow, runs) = median(|_| fdatasync_rate(&base.join("fsync.bin"), 2.0, false));
    println!(
        "  (4 KiB overwrite in place + fdatasync, 2 s):   {:>12} /s   [{}]",
        fmt_rate(fsync_ow),
        runs_list(&runs, fmt_rate)
    );

    // 2-4. Durable appends.
    let durable = Options::default().durability(Durability::Always);
    let mut seq = 0u64;
    let store = Store::open(base.join("single"), durable.clone()).expect("open");
    let (single, runs) = median(|_| append_rate(&store, &mut seq, 1, 2.0));
    store.close().expect("close");
    println!(
        "durable appends, 1 thread, 1 event each (2 s):  {:>12} events/s   [{}]   = {:.2} x raw fdatasync",
        fmt_rate(single),
        runs_list(&runs, fmt_rate),
        single / fsync
    );

    let store = Store::open(base.join("concurrent"), durable.clone()).expect("open");
    let (conc, runs) = median(|run| concurrent_rate(&store, run, 3.0));
    store.close().expect("close");
    println!(
        "durable appends, {THREADS} threads, 1 event each (3 s): {:>11} events/s   [{}]   = {:.1} events per raw fdatasync",
        fmt_rate(conc),
        runs_list(&runs, fmt_rate),
        conc / fsync
    );

    let store = Store::open(base.join("batch"), durable).expect("open");
    let (batch, runs) = median(|_| append_rate(&store, &mut seq, 1000, 2.0));
    store.close().expect("close");
    println!(
        "durable appends, batches of 1000 (2 s):         {:>12} events/s   [{}]",
        fmt_rate(batch),
        runs_list(&runs, fmt_rate)
    );
    for d in ["single", "concurrent", "batch"] {
        let _ = std::fs::remove_dir_all(base.join(d));
    }

    // 5. A store of n events.
    let big = base.join("big");
    let t = Instant::now();
    {
        let store = Store::open(&big, Options::default().durability(Durability::Never)).expect("open");
        common::fill_batched(&store, n, 1000);
        store.close().expect("close");
    }
    let build = t.elapsed();
    // Flush the build's dirty pages now, so that background writeback does not
    // slow the first measured opens.
    sync_files(&big);
    let segments = std::fs::read_dir(&big)
        .expect("listing the store")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .count();
    println!();
    println!(
        "store of {} events: built in {:.2} s ({} events/s, Durability::Never, batches of 1000), {:.1} MiB in {segments} segments",
        fmt_rate(n as f64),
        build.as_secs_f64(),
        fmt_rate(n as f64 / build.as_secs_f64()),
        common::dir_size(&big) as f64 / (1 << 20) as f64
    );

    let ms = |v: f64| format!("{v:.1} ms");
    let (open_clean, runs) = median(|_| {
        let t = Instant::now();
        let store = Store::open(&big, Options::default()).expect("open");
        let el = t.elapsed();
        assert_eq!(store.head_position(), n, "events lost on reopen");
        store.close().expect("close");
        el.as_secs_f64() * 1e3
    });
    println!(
        "open after clean close:                         {:>12}   [{}]",
        ms(open_clean),
        runs_list(&runs, ms)
    );

    let (open_torn, runs) = median(|run| {
        tear_tail(&big, run);
        let t = Instant::now();
        let store = Store::open(&big, Options::default()).expect("open after a torn tail");
        let el = t.elapsed();
        assert_eq!(store.head_position(), n, "events lost on recovery");
        store.close().expect("close");
        el.as_secs_f64() * 1e3
    });
    let torn_files = std::fs::read_dir(big.join("torn")).map_or(0, |d| d.count());
    println!(
        "open after a torn tail (simulated crash):       {:>12}   [{}]   ({torn_files} torn tails saved)",
        ms(open_torn),
        runs_list(&runs, ms)
    );

    // 6. Reading it all back.
    let store = Store::open(&big, Options::default()).expect("open");
    let (scan, runs) = median(|_| {
        let t = Instant::now();
        let read = common::scan_all(&store, 1000, &Filter::all(), |p| {
            std::hint::black_box(p);
        });
        let el = t.elapsed();
        assert_eq!(read, n, "read_all did not return every event");
        read as f64 / el.as_secs_f64()
    });
    println!(
        "read_all forward scan, pages of 1000:           {:>12} events/s   [{}]",
        fmt_rate(scan),
        runs_list(&runs, fmt_rate)
    );

    // 7. Subscriptions: catch-up delivery of the whole store, then live latency.
    let (catchup, runs) = median(|_| {
        let t = Instant::now();
        let mut sub = store.subscribe_all(SubscribeFrom::Start, Filter::all());
        let mut count = 0u64;
        while count < n {
            match sub.next_timeout(Duration::from_secs(10)).expect("subscription read") {
                Some(Message::Event(e)) => {
                    std::hint::black_box(&e);
                    count += 1;
                }
                Some(Message::Checkpoint(_)) => {}
                Some(m @ Message::Damaged { .. }) => panic!("{m:?} in a fresh store"),
                None => panic!("catch-up subscription stopped after {count} events"),
            }
        }
        count as f64 / t.elapsed().as_secs_f64()
    });
    store.close().expect("close");
    println!(
        "catch-up subscription, whole store:             {:>12} events/s   [{}]",
        fmt_rate(catchup),
        runs_list(&runs, fmt_rate)
    );
    // 8. Compression and scavenging of the same store.
    let store = Store::open(&big, Options::default()).expect("open");
    let bytes_before = common::dir_size(&big);
    let t = Instant::now();
    let c = store.compress().expect("compress");
    let compress_secs = t.elapsed().as_secs_f64();
    let bytes_after = common::dir_size(&big);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut lat = Vec::with_capacity(2000);
    for _ in 0..2000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let p = rng % n;
        let t = Instant::now();
        let e = store
            .read_all(Direction::Forward, LogFrom::Position(p), 1, &Filter::all())
            .expect("random read");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(e[0].position, p);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "compression (zstd level 3, 32 KiB blocks): {} segments, {:.1} -> {:.1} MiB on disk ({:.0} -> {:.0} bytes/event, {:.1}x), {:.1} s; \
         random single-event read from compressed segments: median {:.0} us, p99 {:.0} us",
        c.segments,
        bytes_before as f64 / (1 << 20) as f64,
        bytes_after as f64 / (1 << 20) as f64,
        bytes_before as f64 / n as f64,
        bytes_after as f64 / n as f64,
        c.bytes_before as f64 / c.bytes_after.max(1) as f64,
        compress_secs,
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
    // Delete a tenth of the streams, then scavenge everything.
    let streams: Vec<String> = store.streams().into_iter().map(|s| s.name).collect();
    for name in streams.iter().step_by(10) {
        store.delete_stream(name, ExpectedVersion::Any, false).expect("delete");
    }
    let t = Instant::now();
    let r = store.scavenge().expect("scavenge");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "scavenge after deleting 1 stream in 10: {} segments rewritten, {} events removed, {:.2} s ({} events/s examined)",
        r.segments_rewritten,
        fmt_rate(r.events_removed as f64),
        secs,
        fmt_rate(n as f64 / secs)
    );
    store.close().expect("close");

    let (after_ack, end_to_end) = live_latency(&base.join("live"), 2000);
    let us = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "live subscription, 2000 durable appends: append call -> delivery median {:.0} us, p99 {:.0} us; \
         delivery after the append returned: median {:.0} us, p99 {:.0} us",
        us(&end_to_end, 0.5),
        us(&end_to_end, 0.99),
        us(&after_ack, 0.5),
        us(&after_ack, 0.99),
    );
}

/// Appends `count` durable events one at a time, each after the previous was
/// delivered to a live subscriber waiting in another thread; returns, in µs and
/// sorted, how long after `append` returned each delivery happened (0 if before)
/// and how long after `append` was called.
fn live_latency(dir: &Path, count: usize) -> (Vec<f64>, Vec<f64>) {
    let store = Store::open(dir, Options::default()).expect("open");
    let mut sub = store.subscribe_all(SubscribeFrom::End, Filter::all());
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let receiver = std::thread::spawn(move || {
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            match sub.next_timeout(Duration::from_secs(10)).expect("live read") {
                Some(Message::Event(_)) => times.push(Instant::now()),
                other => panic!("unexpected {other:?}"),
            }
            let _ = ready_tx.send(());
        }
        let _ = tx.send(Instant::now());
        times
    });
    let mut calls = Vec::with_capacity(count);
    let mut returns = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        store
            .append("live", ExpectedVersion::Any, vec![common::event(i as u64)])
            .expect("append");
        calls.push(t);
        returns.push(Instant::now());
        ready_rx.recv().expect("delivery");
    }
    let delivered = receiver.join().expect("receiver thread");
    drop(rx);
    store.close().expect("close");
    let mut after_ack: Vec<f64> = delivered
        .iter()
        .zip(&returns)
        .map(|(d, r)| d.saturating_duration_since(*r).as_secs_f64() * 1e6)
        .collect();
    let mut end_to_end: Vec<f64> = delivered
        .iter()
        .zip(&calls)
        .map(|(d, c)| d.saturating_duration_since(*c).as_secs_f64() * 1e6)
        .collect();
    after_ack.sort_by(f64::total_cmp);
    end_to_end.sort_by(f64::total_cmp);
    (after_ack, end_to_end)
}
