//! The markdown report: machine, tables of absolute figures and of ratios, the
//! goals of issue 7 with pass/fail, and what was tuned for each peer.

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use crate::numbers::{compact, int};
use crate::systems::{Sys, sqlite};
use crate::{Config, Results};

/// What the report says about where and what was measured.
pub struct Context {
    pub cfg: Config,
    pub systems: Vec<Sys>,
    pub commit: String,
    /// Tracked files with uncommitted changes when the run started.
    pub dirty: Vec<String>,
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub file_system: String,
    pub kernel: String,
    pub os: String,
    pub data_dir: String,
    pub sqlite_version: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

/// The mount holding `path`: (device, mount point, type, options), from `/proc/self/mounts`.
fn mount_of(path: &Path) -> Option<(String, String, String, String)> {
    let path = path.canonicalize().ok()?;
    let mut best: Option<(String, String, String, String)> = None;
    for line in read("/proc/self/mounts").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let mnt = f[1].replace("\\040", " ");
        if path.starts_with(&mnt) && best.as_ref().is_none_or(|b| mnt.len() >= b.1.len()) {
            best = Some((f[0].to_string(), mnt, f[2].to_string(), f[3].to_string()));
        }
    }
    best
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", s / 3600, s / 60 % 60)
}

impl Context {
    pub fn gather(cfg: &Config, data: &Path, systems: &[Sys], commit: Option<String>) -> Self {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown CPU".to_string(), |s| s.trim().to_string());
        let mem_kib: f64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let file_system = mount_of(data).map_or_else(
            || "unknown".to_string(),
            |(dev, mnt, ty, opts)| format!("{ty} on {dev}, mounted at {mnt} ({opts})"),
        );
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map_or_else(|| "unknown".to_string(), |s| s.trim_matches('"').to_string());
        let commit = commit
            .or_else(|| run("git", &["rev-parse", "--short", "HEAD"]))
            .unwrap_or_else(|| "unknown".into());
        let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
            .map(|s| s.lines().map(|l| l.get(3..).unwrap_or(l).to_string()).collect())
            .unwrap_or_default();
        Context {
            cfg: cfg.clone(),
            systems: systems.to_vec(),
            commit,
            dirty,
            date: utc_now(),
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory: format!("{:.1} GiB", mem_kib / (1024.0 * 1024.0)),
            file_system,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os,
            data_dir: data.display().to_string(),
            sqlite_version: rusqlite::version().to_string(),
        }
    }
}

/// A duration in seconds, in ms with three significant digits.
pub fn ms(secs: f64) -> String {
    let m = secs * 1e3;
    if m >= 100.0 {
        format!("{m:.0} ms")
    } else if m >= 10.0 {
        format!("{m:.1} ms")
    } else if m >= 1.0 {
        format!("{m:.2} ms")
    } else {
        format!("{m:.3} ms")
    }
}

fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else if r >= 0.1 {
        format!("{r:.2}")
    } else {
        format!("{r:.3}")
    }
}

fn mib(bytes_per_s: f64) -> String {
    format!("{} MiB/s", int(bytes_per_s / f64::from(1 << 20)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Per second.
    Rate,
    /// Seconds, shown as ms.
    Time,
    /// Bytes.
    Bytes,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
    /// Not a quality (conflict counts).
    Neither,
}

struct Metric {
    num: &'static str,
    label: String,
    key: String,
    unit: Unit,
    unit_label: &'static str,
    better: Better,
}

fn metrics(cfg: &Config) -> Vec<Metric> {
    let mut m = Vec::new();
    let l = &cfg.layout;
    for n in &cfg.writer_counts {
        m.push(Metric {
            num: if *n == 1 { "1, 2" } else { "2" },
            label: format!(
                "Durable single-event appends, {n} writer{} (own stream each)",
                if *n == 1 { "" } else { "s" }
            ),
            key: format!("writers/{n}"),
            unit: Unit::Rate,
            unit_label: "events/s",
            better: Better::Higher,
        });
    }
    for n in &cfg.batch_sizes {
        m.push(Metric {
            num: "3",
            label: format!(
                "Durable batched appends, {} events per append, 1 writer",
                int(*n as f64)
            ),
            key: format!("batch/{n}"),
            unit: Unit::Rate,
            unit_label: "events/s",
            better: Better::Higher,
        });
    }
    m.push(Metric {
        num: "4",
        label: format!(
            "Expected-version appends, {} writers racing on {} streams: successful",
            cfg.contention_writers, cfg.contention_streams
        ),
        key: "contention".into(),
        unit: Unit::Rate,
        unit_label: "appends/s",
        better: Better::Higher,
    });
    m.push(Metric {
        num: "4",
        label: "… of which refused as conflicts (share of attempts)".into(),
        key: "contention/conflicts".into(),
        unit: Unit::Rate,
        unit_label: "conflicts/s",
        better: Better::Neither,
    });
    for (q, name) in [("p50", "median"), ("p99", "p99")] {
        m.push(Metric {
            num: "5",
            label: format!(
                "Read one stream of {} events ({} events in {} streams), warm, {name}",
                int(l.big_len as f64),
                int(l.events as f64),
                int(l.streams as f64)
            ),
            key: format!("stream/{q}"),
            unit: Unit::Time,
            unit_label: "latency",
            better: Better::Lower,
        });
    }
    m.push(Metric {
        num: "6",
        label: format!(
            "Scan the whole log in order ({} events, pages of {})",
            int(l.events as f64),
            int(cfg.page as f64)
        ),
        key: "scan".into(),
        unit: Unit::Rate,
        unit_label: "events/s",
        better: Better::Higher,
    });
    m.push(Metric {
        num: "7",
        label: format!(
            "Filtered read: every `{}` event ({}, a tenth), pages of {}",
            crate::event::FILTER_TYPE,
            int(l.filter_matches() as f64),
            int(cfg.page as f64)
        ),
        key: "filtered".into(),
        unit: Unit::Rate,
        unit_label: "events/s",
        better: Better::Higher,
    });
    m.push(Metric {
        num: "8",
        label: "Bytes on disk per event (see notes)".into(),
        key: "bytes".into(),
        unit: Unit::Bytes,
        unit_label: "bytes",
        better: Better::Lower,
    });
    m.push(Metric {
        num: "9",
        label: format!(
            "Open and read the last event ({} events; see notes)",
            int(l.events as f64)
        ),
        key: "open".into(),
        unit: Unit::Time,
        unit_label: "time",
        better: Better::Lower,
    });
    m
}

fn value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Rate => int(v),
        Unit::Time => ms(v),
        Unit::Bytes => format!("{v:.0}"),
    }
}

fn cell(res: &Results, m: &Metric, sys: Sys, systems: &[Sys]) -> String {
    if !systems.contains(&sys) {
        return "not run".into();
    }
    match res.cells.get(&(m.key.clone(), sys)) {
        None => "—".into(),
        Some(Err(e)) => format!("failed: {}", e.replace('|', "/").chars().take(80).collect::<String>()),
        Some(Ok(f)) => {
            let mut s = value(m.unit, f.value);
            if m.key == "contention/conflicts"
                && let Some(ok) = res.get("contention", sys)
                && ok + f.value > 0.0
            {
                let _ = write!(s, " ({:.0}%)", 100.0 * f.value / (ok + f.value));
            }
            s
        }
    }
}

/// PostgreSQL's INSERT-only figure of a write workload (blank for the others).
fn insert_cell(res: &Results, m: &Metric) -> String {
    match res.cells.get(&(crate::insert_key(&m.key), Sys::Postgres)) {
        None => String::new(),
        Some(Err(e)) => format!("failed: {}", e.replace('|', "/").chars().take(80).collect::<String>()),
        Some(Ok(f)) => value(m.unit, f.value),
    }
}

/// The faster of PostgreSQL's two append schemes for `key`, and which it is.
fn pg_best(res: &Results, key: &str) -> Option<(f64, &'static str)> {
    let tx = res.get(key, Sys::Postgres).map(|v| (v, "SELECT + INSERT"));
    let ins = res
        .get(&crate::insert_key(key), Sys::Postgres)
        .map(|v| (v, "INSERT only"));
    match (tx, ins) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn disk_limit(res: &Results, m: &Metric) -> String {
    let raw = |k: &str| res.raw.get(k).map(|f| f.value);
    match m.key.as_str() {
        "writers/1" => match (raw("fsync_overwrite"), raw("fsync_append")) {
            (Some(o), Some(a)) => format!("{}/s (4 KiB overwrite + fdatasync); {}/s appending", int(o), int(a)),
            _ => "—".into(),
        },
        k if k.starts_with("batch/") => match (raw("seq_bandwidth"), res.get("bytes", Sys::Annal)) {
            (Some(bw), Some(b)) => format!(
                "{} sequential ≈ {}/s at annal's {b:.0} bytes/event",
                mib(bw),
                int(bw / b)
            ),
            (Some(bw), None) => format!("{} sequential", mib(bw)),
            _ => "—".into(),
        },
        _ => "".into(),
    }
}

/// One goal of issue 7: what, the target, the measured value, pass, and the shortfall if any.
struct Goal {
    what: String,
    target: String,
    measured: String,
    pass: Option<bool>,
    shortfall: String,
}

fn goals(res: &Results, cfg: &Config) -> Vec<Goal> {
    let a = |k: &str| res.get(k, Sys::Annal);
    let mut out = Vec::new();
    let missing = |what: &str, target: &str| Goal {
        what: what.into(),
        target: target.into(),
        measured: "not measured".into(),
        pass: None,
        shortfall: String::new(),
    };

    // 1. Single writer vs the disk's fdatasync rate, measured in the same rounds: the
    // median of the per-round ratios, which a drifting disk affects least.
    let what = "Single-writer durable appends vs the raw fdatasync rate";
    let target = "≥ 90% of the disk's 4 KiB write + fdatasync rate, the faster of overwrite and append";
    let annal_runs = match res.cells.get(&("writers/1".to_string(), Sys::Annal)) {
        Some(Ok(f)) => Some(f.runs.clone()),
        _ => None,
    };
    match (annal_runs, res.raw.get("fsync_overwrite"), res.raw.get("fsync_append")) {
        (Some(runs), Some(o), Some(ap)) => {
            let v = crate::bench::median(&runs);
            let per_round: Vec<f64> = if runs.len() == o.runs.len() && runs.len() == ap.runs.len() {
                (0..runs.len()).map(|i| runs[i] / o.runs[i].max(ap.runs[i])).collect()
            } else {
                vec![v / o.value.max(ap.value)]
            };
            let r = crate::bench::median(&per_round);
            let pass = r >= 0.9;
            out.push(Goal {
                what: what.into(),
                target: target.into(),
                measured: format!(
                    "{:.0}% (median of the per-round ratios: {}); medians: annal {}/s, overwrite {}/s, append {}/s",
                    100.0 * r,
                    per_round
                        .iter()
                        .map(|x| format!("{:.0}%", 100.0 * x))
                        .collect::<Vec<_>>()
                        .join(", "),
                    int(v),
                    int(o.value),
                    int(ap.value)
                ),
                pass: Some(pass),
                shortfall: {
                    let mut t = if pass {
                        String::new()
                    } else {
                        format!("{:.0} points short of 90%. ", 100.0 * (0.9 - r))
                    };
                    let (lo, hi) = (
                        per_round.iter().copied().fold(f64::INFINITY, f64::min),
                        per_round.iter().copied().fold(0.0, f64::max),
                    );
                    let (olo, ohi) = (
                        o.runs.iter().copied().fold(f64::INFINITY, f64::min),
                        o.runs.iter().copied().fold(0.0, f64::max),
                    );
                    if hi > 1.5 * lo || ohi > 1.5 * olo {
                        let _ = write!(
                            t,
                            "Unreliable in this run: the disk's own overwrite rate ranged from {}/s to {}/s \
                             between rounds, and the per-round ratios from {:.0}% to {:.0}%.",
                            int(olo),
                            int(ohi),
                            100.0 * lo,
                            100.0 * hi
                        );
                    }
                    t.trim_end().to_string()
                },
            });
        }
        _ => out.push(missing(what, target)),
    }

    // 2. 32 writers vs SQLite and PostgreSQL.
    let n = if cfg.writer_counts.contains(&32) {
        32
    } else {
        *cfg.writer_counts.last().unwrap_or(&1)
    };
    for (peer, factor) in [(Sys::Sqlite, 10.0), (Sys::Postgres, 3.0)] {
        let key = format!("writers/{n}");
        let what = format!("{n} concurrent durable writers vs {}", peer.name());
        let (peer_value, scheme) = match peer {
            Sys::Postgres => match pg_best(res, &key) {
                Some((v, scheme)) => (Some(v), format!(", {scheme}: the faster of its two schemes")),
                None => (None, String::new()),
            },
            _ => (res.get(&key, peer), String::new()),
        };
        let target = format!("≥ {factor:.0}× {}", peer.name());
        match (a(&key), peer_value) {
            (Some(v), Some(p)) if p > 0.0 => {
                let r = v / p;
                let pass = r >= factor;
                out.push(Goal {
                    what,
                    target,
                    measured: format!("{:.1}× ({}/s vs {}/s{scheme})", r, int(v), int(p)),
                    pass: Some(pass),
                    shortfall: if pass {
                        String::new()
                    } else {
                        format!(
                            "short by {}/s: needs {}/s ({:.0}% of the target ratio reached)",
                            int(factor * p - v),
                            int(factor * p),
                            100.0 * r / factor
                        )
                    },
                });
            }
            _ => out.push(missing(&what, &target)),
        }
    }

    // Issue 15: 32 concurrent single-event writers.
    let key = format!("writers/{n}");
    let what = format!("{n} concurrent durable single-event writers (issue 15)");
    let target = "≥ 100,000 events/s";
    match a(&key) {
        Some(v) => out.push(Goal {
            what,
            target: target.into(),
            measured: format!("{}/s", int(v)),
            pass: Some(v >= 1e5),
            shortfall: if v >= 1e5 {
                String::new()
            } else {
                format!("short by {}/s ({:.0}% of the target)", int(1e5 - v), 100.0 * v / 1e5)
            },
        }),
        None => out.push(missing(&what, target)),
    }

    // 3. Batches of 1,000.
    let what = "Batched appends of 1,000 events";
    let target = "≥ 1,000,000 events/s";
    match a("batch/1000") {
        Some(v) => out.push(Goal {
            what: what.into(),
            target: target.into(),
            measured: format!("{}/s", int(v)),
            pass: Some(v >= 1e6),
            shortfall: if v >= 1e6 {
                String::new()
            } else {
                format!("short by {}/s ({:.0}% of the target)", int(1e6 - v), 100.0 * v / 1e6)
            },
        }),
        None => out.push(missing(what, target)),
    }

    // 4. Stream read p99.
    let what = format!("Read a stream of {} events, p99, warm", int(cfg.layout.big_len as f64));
    let target = "< 1 ms";
    match a("stream/p99") {
        Some(v) => out.push(Goal {
            what,
            target: target.into(),
            measured: format!("{} (median {})", ms(v), a("stream/p50").map_or("—".into(), ms)),
            pass: Some(v < 1e-3),
            shortfall: if v < 1e-3 {
                String::new()
            } else {
                format!("{} over ({:.1}× the target)", ms(v - 1e-3), v / 1e-3)
            },
        }),
        None => out.push(missing(&what, target)),
    }

    // 5. Full scan.
    let what = "Full scan of the log";
    let target = "≥ 2,000,000 events/s";
    match a("scan") {
        Some(v) => out.push(Goal {
            what: what.into(),
            target: target.into(),
            measured: format!("{}/s", int(v)),
            pass: Some(v >= 2e6),
            shortfall: if v >= 2e6 {
                String::new()
            } else {
                format!("short by {}/s ({:.0}% of the target)", int(2e6 - v), 100.0 * v / 2e6)
            },
        }),
        None => out.push(missing(what, target)),
    }
    out
}

/// A line in the report file below which everything is kept by the next run
/// (the dated sections measured by hand).
pub const KEPT_MARKER: &str = "<!-- Kept by scripts/compare.sh: what follows is not generated. -->";

pub fn markdown(ctx: &Context, res: &Results, chart: &str) -> String {
    let cfg = &ctx.cfg;
    let mut s = String::new();
    let secs = cfg.phase.as_secs_f64();
    let phase = if secs >= 1.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    };
    let runs = if cfg.runs == 1 {
        "one run (no median)".to_string()
    } else {
        format!("the median of {} runs", cfg.runs)
    };
    let _ = writeln!(s, "# annal against SQLite and PostgreSQL\n");
    let _ = writeln!(
        s,
        "Generated by `scripts/compare.sh{}` (the harness in `compare/`) on {}, \
         commit `{}`{}. Every figure below was measured in the same run, on the same disk.\n",
        if cfg.quick { " --quick" } else { "" },
        ctx.date,
        ctx.commit,
        if ctx.dirty.is_empty() {
            String::new()
        } else {
            format!(
                " with uncommitted changes to {}",
                ctx.dirty
                    .iter()
                    .take(12)
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if cfg.quick {
        let _ = writeln!(
            s,
            "> **Quick mode** (CI): a data set of {} events and phases of {:.1} s, one run each. \
             These figures only show that every workload completes; they are not comparable to a full run.\n",
            int(cfg.layout.events as f64),
            secs
        );
    }

    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| CPU | {} cores: {} |", ctx.cores, ctx.cpu);
    let _ = writeln!(s, "| Memory | {} |", ctx.memory);
    let _ = writeln!(
        s,
        "| File system (every store and the raw tests) | {} |",
        ctx.file_system
    );
    let _ = writeln!(
        s,
        "| Data directory | `{}` (temporary, removed after the run) |",
        ctx.data_dir
    );
    let _ = writeln!(s, "| Kernel | Linux {} ({}) |", ctx.kernel, ctx.os);
    let _ = writeln!(
        s,
        "| annal | this repository, `Store::open` with `Durability::Always` |"
    );
    let _ = writeln!(s, "| SQLite | {} (rusqlite, bundled) |", ctx.sqlite_version);
    let _ = writeln!(
        s,
        "| PostgreSQL | {} |",
        if res.pg_version.is_empty() {
            "not run"
        } else {
            &res.pg_version
        }
    );
    let _ = writeln!(
        s,
        "\nThe machine is a small virtual machine with {} cores and a noisy neighbour or two: \
         differences of 10–20% between runs are common and much larger ones happen (every run is listed \
         at the end, and the notes give the machine's load during the run), so read the ratios, not the \
         last digit. \
         Timed write phases last {phase}; each figure is {runs}, and the runs of \
         the three systems are interleaved (annal, SQLite, PostgreSQL, then again), so that a slow \
         moment of the machine does not fall on one system only. Every run is listed at the end.\n",
        ctx.cores
    );

    // Goals.
    let _ = writeln!(s, "## Goals of issues 7 and 15\n");
    let _ = writeln!(
        s,
        "| Goal | Target | Measured | Result | Shortfall |\n|---|---|---|---|---|"
    );
    for g in goals(res, cfg) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            g.what,
            g.target,
            g.measured,
            match g.pass {
                Some(true) => "**pass**",
                Some(false) => "**FAIL**",
                None => "—",
            },
            g.shortfall
        );
    }
    if cfg.quick {
        let _ = writeln!(
            s,
            "\n(Quick mode: pass or fail here says nothing; run the full comparison.)"
        );
    }

    // Absolute figures.
    let ms_ = metrics(cfg);
    let _ = writeln!(s, "\n## Absolute figures\n");
    let _ = writeln!(
        s,
        "| # | Workload | Unit | Disk limit | annal | SQLite | PostgreSQL | PostgreSQL, INSERT only |\n\
         |---|---|---|---|--:|--:|--:|--:|"
    );
    for m in &ms_ {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            m.num,
            m.label,
            m.unit_label,
            disk_limit(res, m),
            cell(res, m, Sys::Annal, &ctx.systems),
            cell(res, m, Sys::Sqlite, &ctx.systems),
            cell(res, m, Sys::Postgres, &ctx.systems),
            insert_cell(res, m)
        );
    }
    let _ = writeln!(
        s,
        "\nPostgreSQL appends two ways. **PostgreSQL**: one transaction that reads the stream's last \
         version (`SELECT max(version)`), checks the expected version and inserts: what an application \
         needs for annal's guarantees. **PostgreSQL, INSERT only**: its best case, as pgbench's insert-only \
         scripts measure it: one `INSERT` in autocommit (one statement for a batch), numbered with the \
         version the writer already knows, relying on the unique key (stream_id, version) alone. The goals \
         compare annal against the faster of the two."
    );
    if let Some(bw) = res.raw.get("seq_bandwidth") {
        let _ = writeln!(
            s,
            "\nDisk limits measured by the harness in the same directory: 4 KiB write + `fdatasync`, \
             overwriting one block in place: {}/s; appending to the file: {}/s (both measured for one \
             phase at the start of each round of the 1-writer workload, next to the systems); sequential \
             write of {} in 1 MiB writes with a final `fdatasync`: {}.",
            res.raw.get("fsync_overwrite").map_or("—".into(), |f| int(f.value)),
            res.raw.get("fsync_append").map_or("—".into(), |f| int(f.value)),
            if cfg.seq_bytes >= 1 << 30 {
                format!("{} GiB", cfg.seq_bytes >> 30)
            } else {
                format!("{} MiB", cfg.seq_bytes >> 20)
            },
            mib(bw.value)
        );
    }

    // Ratios.
    let _ = writeln!(s, "\n## annal relative to each peer (same run)\n");
    let _ = writeln!(
        s,
        "annal's figure divided by the peer's. For throughput a ratio above 1 favours annal; \
         for latency, bytes and open time (marked *lower is better*) a ratio below 1 does.\n"
    );
    let _ = writeln!(
        s,
        "| # | Workload | annal / SQLite | annal / PostgreSQL | annal / PostgreSQL, INSERT only | Better |\n\
         |---|---|--:|--:|--:|---|"
    );
    for m in ms_.iter().filter(|m| m.better != Better::Neither) {
        let r = |peer: Sys| match (res.get(&m.key, Sys::Annal), res.get(&m.key, peer)) {
            (Some(a), Some(p)) if p > 0.0 => ratio(a / p),
            _ => "—".into(),
        };
        let r_insert = match (
            res.get(&m.key, Sys::Annal),
            res.get(&crate::insert_key(&m.key), Sys::Postgres),
        ) {
            (Some(a), Some(p)) if p > 0.0 => ratio(a / p),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            m.num,
            m.label,
            r(Sys::Sqlite),
            r(Sys::Postgres),
            r_insert,
            if m.better == Better::Higher {
                "higher is better"
            } else {
                "*lower is better*"
            }
        );
    }

    let _ = writeln!(s, "\n## Durable appends by number of writers\n");
    let _ = writeln!(s, "![Durable appends by number of writers]({chart})\n");
    let rows: Vec<String> = cfg
        .writer_counts
        .iter()
        .map(|n| {
            let v = |sys: Sys| res.get(&format!("writers/{n}"), sys).map_or("—".into(), compact);
            format!(
                "| {n} | {} | {} | {} | {} |",
                v(Sys::Annal),
                v(Sys::Sqlite),
                v(Sys::Postgres),
                res.get(&crate::insert_key(&format!("writers/{n}")), Sys::Postgres)
                    .map_or("—".into(), compact)
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "| Writers | annal | SQLite | PostgreSQL | PostgreSQL, INSERT only |\n|--:|--:|--:|--:|--:|\n{}",
        rows.join("\n")
    );

    // Bytes by part.
    let part = |k: &str, sys: Sys| res.get(k, sys).map_or("—".into(), |v| format!("{v:.0}"));
    let _ = writeln!(s, "\n## Bytes on disk per event, by part\n");
    let _ = writeln!(
        s,
        "The read data set after its load (workload 8), per event. annal: data is its segments, indexes \
         its `.idx` files and the active segment's saved index (`active.idc`), the rest its checkpoints. \
         SQLite (from its `dbstat` table): data is the table's pages, indexes those of the unique key and \
         the index on type, the rest the schema, free pages and the WAL (empty after the checkpoint). \
         PostgreSQL: data is `pg_table_size` (heap, TOAST, free-space and visibility maps), indexes \
         `pg_indexes_size` (primary key, unique key, type and time), the rest the WAL files the server \
         keeps (`pg_wal`, shared by every table and not counted in workload 8); the WAL written by the \
         load is what the load cost in log writes, recycled later.\n"
    );
    let _ = writeln!(
        s,
        "| System | data | indexes | rest | counted in workload 8 | WAL written by the load |\n|---|--:|--:|--:|--:|--:|"
    );
    for sys in Sys::ALL {
        if !ctx.systems.contains(&sys) {
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            sys.name(),
            part("bytes/data", sys),
            part("bytes/index", sys),
            part("bytes/other", sys),
            part("bytes", sys),
            if sys == Sys::Postgres {
                part("bytes/wal-written", sys)
            } else {
                String::new()
            }
        );
    }

    // Workloads.
    let l = &cfg.layout;
    let _ = writeln!(s, "\n## The workloads\n");
    let _ = writeln!(
        s,
        "Every system stores the same events: a JSON payload of about 300 bytes (an order with two \
         items), about 80 bytes of JSON metadata (correlation and causation ids, a user), one or two tags \
         and one of ten event types. Events are built before the clock starts; a new event id is made \
         per event (annal makes its own, the SQL peers get a random UUID from the harness).\n"
    );
    let _ = writeln!(
        s,
        "1. **Durable single-event appends, one writer**: the 1-writer point of workload 2.\n\
         2. **Concurrent durable appends**: {} threads, each appending one event at a time to a stream of \
         its own with no expected version, for {phase}; events/s is the total appended over the time until \
         the last writer finished. annal: one shared `Store`; SQLite and PostgreSQL: one connection per writer.\n\
         3. **Batched appends**: one writer appends {} events per append (one transaction in SQL) to 1,000 \
         rotating streams, for {phase}.\n\
         4. **Appends with expected-version checks under contention**: {} writers race on {} streams. Each \
         attempt reads the stream's current revision (annal: `stream_info`; SQL: `SELECT max(revision)`), \
         then appends one event expecting it. A refusal (annal: `WrongExpectedVersion`; SQL: the check \
         inside the transaction failed, or a unique-key violation on (stream, revision)) counts as a \
         conflict; the writer goes on with a fresh read.\n\
         5. **Stream read**: a data set of {} events in {} streams is loaded first: {} streams of {} events \
         and {} smaller ones, interleaved in the log {} events of a stream at a time. Every large stream is \
         read once to warm the caches, then {} reads of a random large stream (all {} events, forward, \
         fully decoded into owned events) are timed one by one.\n\
         6. **Full scan**: the whole log read forward in pages of {} (annal: `read_all` from the last \
         position + 1; SQL: `WHERE position > ? ORDER BY position LIMIT {}`), every event decoded.\n\
         7. **Filtered read**: every event of type `{}` (a tenth of the log), in pages of {} in log order \
         (annal: a type filter served by its type index; SQL: `WHERE type = ? AND position > ?` on the \
         type index).\n\
         8. **Bytes on disk per event**, after the load. annal: size of the data directory (segments, \
         their indexes, checkpoint); SQLite: database file plus WAL after a `wal_checkpoint(TRUNCATE)`; \
         PostgreSQL: `pg_total_relation_size` of the table (heap, TOAST and indexes, not the WAL and \
         not the server's other files).\n\
         9. **Open**: annal: `Store::open` of the closed store (recovery check, indexes mapped, stream \
         table rebuilt) plus reading the last event; SQLite: opening a connection, setting the pragmas and \
         reading the last event; PostgreSQL: connecting to the already running server (a new backend \
         process) and reading the last event with one query. The server's own start-up is not included; \
         these are not the same work, and only annal's includes getting a whole store ready. Caches are warm.\n",
        cfg.writer_counts
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cfg.batch_sizes
            .iter()
            .map(|n| int(*n as f64))
            .collect::<Vec<_>>()
            .join(" or "),
        cfg.contention_writers,
        cfg.contention_streams,
        int(l.events as f64),
        int(l.streams as f64),
        int(l.big as f64),
        int(l.big_len as f64),
        int((l.streams - l.big) as f64),
        crate::event::CHUNK,
        int(cfg.reads as f64),
        int(l.big_len as f64),
        int(cfg.page as f64),
        cfg.page,
        crate::event::FILTER_TYPE,
        int(cfg.page as f64),
    );

    // Tuning.
    let _ = writeln!(s, "## What was tuned for each peer\n");
    let _ = writeln!(
        s,
        "- **annal**: nothing; `Options::default()` (which is `Durability::Always`: an append is \
         acknowledged after an `fdatasync` that started after its bytes were written; concurrent appends \
         share syncs). The read data set was loaded with `Durability::Never` in appends of {} events, \
         then closed (which syncs) and reopened with `Durability::Always`.",
        crate::event::CHUNK
    );
    let _ = writeln!(
        s,
        "- **SQLite** ({}): `journal_mode=WAL` and `synchronous=FULL` (the WAL is synced at every \
         commit: as durable as annal's `Always`); {}; busy timeout {} s. Table `events(position INTEGER \
         PRIMARY KEY, stream, revision, event_id BLOB, type, data, metadata, tags, created)` with \
         `UNIQUE(stream, revision)` and an index on `type` (no workload filters on time, so no index on \
         it). One connection per writer; statements prepared once per connection (`prepare_cached`); \
         every append is one `BEGIN IMMEDIATE` transaction (so that two writers never deadlock upgrading \
         a read lock) that reads the stream's last revision, checks the expected version, inserts the \
         events and commits; a `SQLITE_BUSY` that outlasts the busy timeout restarts the transaction \
         (counted below). The read data set was loaded in transactions of {} events, then `ANALYZE` and \
         a WAL checkpoint. Checked at the start of the run: {}.",
        ctx.sqlite_version,
        sqlite::PRAGMAS
            .iter()
            .filter(|(n, _)| *n != "synchronous")
            .map(|(n, v)| format!("`{n}={v}`"))
            .collect::<Vec<_>>()
            .join(", "),
        sqlite::BUSY_TIMEOUT.as_secs(),
        int(cfg.load_batch as f64),
        if res.sqlite_settings.is_empty() {
            "not checked"
        } else {
            &res.sqlite_settings
        }
    );
    let settings = res
        .pg_settings
        .iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        s,
        "- **PostgreSQL**: a throwaway cluster made by `initdb` in a temporary directory on the same \
         file system, reached over a Unix socket (the fastest local transport). Durability left at the \
         defaults (`fsync=on`, `synchronous_commit=on`, `full_page_writes=on`), never weaker than annal's. \
         Raised from the defaults: `shared_buffers` (the whole data set fits), `max_wal_size` (fewer \
         checkpoints during the load and the write phases) and `max_connections` (128 writers, and 128 more for the INSERT-only ones). Settings \
         read back from the server: {}. Schema as in the issue: `events(global_position bigserial primary \
         key, stream_id text, version bigint, event_id uuid, type text, data jsonb, metadata jsonb, created \
         timestamptz default now(), unique(stream_id, version))`, plus `tags jsonb`; the index on type is \
         `(type, global_position)` so a filtered page is read in log order, and `created` has its index. \
         Driver: the `postgres` crate (sync), one connection per writer thread, statements prepared once \
         per connection. Each append is one transaction: `SELECT max(version)` for the stream, the \
         expected-version check, then one `INSERT` (a batch is a single `INSERT … SELECT … FROM \
         unnest(arrays)`, not one statement per event), `COMMIT`; a unique violation counts as a conflict. \
         The INSERT-only writers (workloads 1 to 3, their own table `wr.events_insert`) skip the \
         transaction and the `SELECT`: one statement in autocommit, numbered from the version each \
         writer keeps per stream (read once). \
         The read data set was loaded with `COPY … FROM STDIN` ({} rows per COPY), then `VACUUM \
         (ANALYZE)`. Reads return `data::text` and `metadata::text` (jsonb rendered back to JSON).",
        if settings.is_empty() { "none".into() } else { settings },
        int(cfg.load_batch as f64)
    );

    // Notes.
    let _ = writeln!(s, "\n## Notes\n");
    let loads: Vec<String> = ctx
        .systems
        .iter()
        .filter_map(|sys| res.load_secs.get(sys).map(|t| format!("{} {:.1} s", sys.name(), t)))
        .collect();
    if !loads.is_empty() {
        let _ = writeln!(
            s,
            "- Loading the read data set of {} events took: {} (not a workload; each system loaded it its \
             fastest bulk way, as described above).",
            int(l.events as f64),
            loads.join(", ")
        );
    }
    let busy: Vec<String> = res
        .sqlite_busy
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    let _ = writeln!(
        s,
        "- SQLite writers that got `SQLITE_BUSY` after waiting {} s and restarted their transaction: {}.",
        sqlite::BUSY_TIMEOUT.as_secs(),
        if busy.is_empty() {
            "none".into()
        } else {
            busy.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "- annal's reads hand back events whose data share the mapped segment (no copy); the SQL peers \
         copy every row into owned strings. That is each system's ordinary API, and part of what is compared."
    );
    let _ = writeln!(
        s,
        "- Bytes per event include each system's indexes: annal indexes stream, type, tags and ids; the \
         SQL tables index (stream, revision), type and (PostgreSQL) time, not tags or ids."
    );
    if let Some(Ok(f)) = res.cells.get(&("batch-nosync/1000".to_string(), Sys::Annal)) {
        let _ = writeln!(
            s,
            "- Diagnostic, not a comparison: annal's batched appends of 1,000 events with `Durability::Never` \
             (no `fdatasync` at all) ran at {}/s (runs: {}); against the durable {}/s, this separates the \
             CPU cost of the append path from the cost of the sync.",
            int(f.value),
            f.runs.iter().map(|v| int(*v)).collect::<Vec<_>>().join(", "),
            res.get("batch/1000", Sys::Annal).map_or("—".into(), int)
        );
    }
    if !res.loads.is_empty() {
        let mut l = res.loads.clone();
        l.sort_by(f64::total_cmp);
        let _ = writeln!(
            s,
            "- The machine's 1-minute load average, sampled at each phase of the run: min {:.1}, median {:.1}, \
             max {:.1}, on {} cores. Above {} the harness shared the CPUs (and the disk) with other work, and \
             its figures, tail latencies above all, are the worse for it.",
            l[0],
            crate::bench::median(&l),
            l[l.len() - 1],
            ctx.cores,
            ctx.cores
        );
    }
    for e in &res.errors {
        let _ = writeln!(s, "- Error: {e}");
    }
    let _ = writeln!(
        s,
        "- The whole run took {:.0} s (`annal-compare`, after building; PostgreSQL's start and stop not included).",
        res.total_secs
    );

    // Every run.
    let _ = writeln!(s, "\n## Every run\n");
    let _ = writeln!(s, "| Measurement | System | Median | Runs |\n|---|---|--:|---|");
    for (k, f) in &res.raw {
        let fmt = |v: f64| {
            if k == "seq_bandwidth" {
                mib(v)
            } else {
                format!("{}/s", int(v))
            }
        };
        let _ = writeln!(
            s,
            "| disk {k} | — | {} | {} |",
            fmt(f.value),
            f.runs.iter().map(|v| fmt(*v)).collect::<Vec<_>>().join(", ")
        );
    }
    for m in &ms_ {
        for sys in Sys::ALL {
            if let Some(Ok(f)) = res.cells.get(&(m.key.clone(), sys)) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    m.key,
                    sys.name(),
                    value(m.unit, f.value),
                    f.runs.iter().map(|v| value(m.unit, *v)).collect::<Vec<_>>().join(", ")
                );
            }
        }
        if let Some(Ok(f)) = res.cells.get(&(crate::insert_key(&m.key), Sys::Postgres)) {
            let _ = writeln!(
                s,
                "| {} | PostgreSQL, INSERT only | {} | {} |",
                m.key,
                value(m.unit, f.value),
                f.runs.iter().map(|v| value(m.unit, *v)).collect::<Vec<_>>().join(", ")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(int(1234567.4), "1,234,567");
        assert_eq!(int(999.0), "999");
        assert_eq!(ms(0.000412), "0.412 ms");
        assert_eq!(ms(0.0123), "12.3 ms");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_684), (2023, 11, 23));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }
}
