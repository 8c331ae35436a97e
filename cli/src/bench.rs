//! `annal bench`: a standard workload against a temporary store on this machine's disk.
//!
//! The store is created in a temporary directory next to the data directory
//! (the disk the store would live on), or in the system's temporary directory
//! when that is not possible; a RAM-backed file system (tmpfs) is avoided
//! where another choice exists, since it would make every sync free. Appends
//! are durable (`fdatasync` before acknowledgement) whatever the configuration
//! says; the other options come from the configuration.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annal::{Direction, Durability, EventData, ExpectedVersion, Filter, LogFrom, Store};
use serde::Serialize;

use crate::ctx::{self, Ctx};
use crate::error::{CliError, CliResult};
use crate::read::{PAGE, stop_flag};
use crate::{BenchArgs, Format, render};

const DATA: &[u8] = br#"{"order":"o-1234567","customer":"c-42","amount":4200,"currency":"EUR","lines":3}"#;
const THREADS: u64 = 32;
const BATCH: u64 = 1000;

#[derive(Serialize)]
struct Figures {
    dir: String,
    fs_type: String,
    durability: &'static str,
    single_appends: u64,
    appends_per_s: u64,
    append_p50_us: u64,
    append_p99_us: u64,
    threads32_events: u64,
    threads32_events_per_s: u64,
    batch1000_events: u64,
    batch1000_events_per_s: u64,
    read_all_events: u64,
    read_all_events_per_s: u64,
}

#[cfg(target_os = "linux")]
fn fs_type(path: &Path) -> (String, bool) {
    let Ok(s) = rustix::fs::statfs(path) else {
        return ("unknown".into(), false);
    };
    let magic = (s.f_type as u64) & 0xFFFF_FFFF;
    let name = match magic {
        0xEF53 => "ext4".to_string(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlay".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6969 => "nfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        0x6573_5546 => "fuse".into(),
        other => format!("0x{other:x}"),
    };
    let ram = name == "tmpfs";
    (name, ram)
}

#[cfg(not(target_os = "linux"))]
fn fs_type(_path: &Path) -> (String, bool) {
    ("unknown".into(), false)
}

/// Where the temporary store may go, best first, with each file system's name:
/// next to the data directory, then the system's temporary directory; RAM-backed ones last.
fn bench_dirs(data: &Path) -> Vec<(PathBuf, String)> {
    let abs = std::path::absolute(data).unwrap_or_else(|_| data.to_path_buf());
    let mut candidates: Vec<PathBuf> = abs
        .parent()
        .filter(|p| p.is_dir())
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    candidates.push(std::env::temp_dir());
    let mut typed: Vec<(PathBuf, String, bool)> = candidates
        .into_iter()
        .map(|p| {
            let (name, ram) = fs_type(&p);
            (p, name, ram)
        })
        .collect();
    typed.sort_by_key(|(_, _, ram)| *ram);
    typed.into_iter().map(|(p, name, _)| (p, name)).collect()
}

fn check(stop: &AtomicBool) -> CliResult {
    if stop.load(Ordering::SeqCst) {
        return Err(CliError::msg("bench interrupted"));
    }
    Ok(())
}

/// The `p` quantile of sorted latencies, in whole microseconds.
fn percentile(sorted: &[Duration], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_micros() as u64
}

/// Events per second.
fn rate(n: u64, d: Duration) -> u64 {
    (n as f64 / d.as_secs_f64().max(1e-9)).round() as u64
}

fn event() -> EventData {
    EventData::json("BenchEvent", DATA)
}

/// `annal bench`.
pub fn bench(ctx: &Ctx, a: BenchArgs) -> CliResult {
    if !(a.seconds > 0.0 && a.seconds <= 3600.0) {
        return Err(CliError::with_code(2, "--seconds must be between 0 and 3600"));
    }
    if a.events == 0 {
        return Err(CliError::with_code(2, "--events must be at least 1"));
    }
    let stop = stop_flag()?;
    let mut failures = Vec::new();
    let mut chosen = None;
    for (dir, fs) in bench_dirs(&ctx.data) {
        match tempfile::Builder::new().prefix(".annal-bench-").tempdir_in(&dir) {
            Ok(tmp) => {
                chosen = Some((tmp, dir, fs));
                break;
            }
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
    }
    let Some((tmp, base, fs)) = chosen else {
        return Err(CliError::msg(format!(
            "cannot create a temporary directory ({})",
            failures.join("; ")
        )));
    };
    let options = ctx
        .options
        .clone()
        .durability(Durability::Always)
        .create_if_missing(true);
    let store = Store::open(tmp.path().join("store"), options)?;
    let figures = run(&store, &a, &stop, &base, fs);
    let closed = store.close();
    let figures = figures?;
    closed?;
    drop(tmp);
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Json => render::emit(&mut out, &figures)?,
        Format::Table => render::key_values(&mut out, &figures)?,
    }
    render::flush(&mut out)
}

fn run(store: &Store, a: &BenchArgs, stop: &AtomicBool, base: &Path, fs: String) -> CliResult<Figures> {
    // 1. Single durable appends from one thread, for a while.
    let pb = ctx::spinner(format!("single durable appends for {:.1} s", a.seconds));
    let mut latencies = Vec::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.seconds);
    while Instant::now() < deadline {
        check(stop)?;
        let t = Instant::now();
        store.append("bench-single", ExpectedVersion::Any, vec![event()])?;
        latencies.push(t.elapsed());
    }
    let single_time = start.elapsed();
    pb.finish_and_clear();
    latencies.sort_unstable();
    let single = latencies.len() as u64;

    // 2. 32 threads, one durable event per append.
    let pb = ctx::progress_bar(a.events, "events");
    pb.set_message(format!("{THREADS} threads, durable appends"));
    let start = Instant::now();
    let results: Vec<CliResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let pb = pb.clone();
                s.spawn(move || -> CliResult {
                    let n = a.events / THREADS + u64::from(t < a.events % THREADS);
                    let stream = format!("bench-thread-{t}");
                    for _ in 0..n {
                        check(stop)?;
                        store.append(&stream, ExpectedVersion::Any, vec![event()])?;
                        pb.inc(1);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CliError::msg("a bench thread panicked")))
            })
            .collect()
    });
    let threads_time = start.elapsed();
    pb.finish_and_clear();
    results.into_iter().collect::<CliResult<Vec<()>>>()?;

    // 3. Batches of 1,000 events per durable append.
    let pb = ctx::progress_bar(a.events, "events");
    pb.set_message(format!("durable batches of {BATCH}"));
    let start = Instant::now();
    let mut left = a.events;
    while left > 0 {
        check(stop)?;
        let n = left.min(BATCH);
        store.append("bench-batch", ExpectedVersion::Any, (0..n).map(|_| event()).collect())?;
        left -= n;
        pb.inc(n);
    }
    let batch_time = start.elapsed();
    pb.finish_and_clear();

    // 4. A full scan of the log.
    let head = store.head_position();
    let pb = ctx::progress_bar(head, "events");
    pb.set_message("read_all scan");
    let start = Instant::now();
    let mut scanned = 0u64;
    let mut from = 0;
    loop {
        check(stop)?;
        let page = store.read_all(
            Direction::Forward,
            LogFrom::Position(from),
            PAGE as usize,
            &Filter::all(),
        )?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        scanned += page.len() as u64;
        pb.set_position(scanned);
        if (page.len() as u64) < PAGE {
            break;
        }
    }
    let scan_time = start.elapsed();
    pb.finish_and_clear();

    Ok(Figures {
        dir: base.display().to_string(),
        fs_type: fs,
        durability: "always",
        single_appends: single,
        appends_per_s: rate(single, single_time),
        append_p50_us: percentile(&latencies, 0.50),
        append_p99_us: percentile(&latencies, 0.99),
        threads32_events: a.events,
        threads32_events_per_s: rate(a.events, threads_time),
        batch1000_events: a.events,
        batch1000_events_per_s: rate(a.events, batch_time),
        read_all_events: scanned,
        read_all_events_per_s: rate(scanned, scan_time),
    })
}
