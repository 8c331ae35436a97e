//! annal-compare: runs the same workloads against annal, SQLite and PostgreSQL,
//! measures the disk's raw limits on the same file system, and writes a
//! markdown report and an SVG chart.
//!
//! ```text
//! annal-compare --data DIR --pg CONNINFO --out BENCHMARKS.md --chart benchmarks-writers.svg [--quick]
//!               [--systems annal,sqlite,postgres] [--workloads appends,reads] [--commit SHA]
//! ```
//!
//! `--workloads reads` runs only the read workloads (load, stream reads, scans, size, open),
//! `--workloads appends` only the write workloads and the disk's limits; the default is both.
//! A partial run's report leaves the other rows empty: use it while iterating, not for
//! BENCHMARKS.md. `--annal-plain` opens annal's stores without compression, `--annal-cache-mib N`
//! with a block cache of N MiB (diagnostics).
//!
//! `scripts/compare.sh` builds it, starts a throwaway PostgreSQL server and runs it.

mod bench;
mod chart;
mod event;
mod numbers;
mod queries;
mod raw;
mod report;
mod systems;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::{Rates, Step, median, quantile, run_threads};
use event::{Ev, FILTER_TYPE, Layout, Rng, stream_name};
use systems::annal::AnnalConn;
use systems::postgres::{PgConn, PgInsertConn};
use systems::sqlite::SqliteConn;
use systems::{AppendError, BoxError, Conn, Expect, Res, Sys};

/// Sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub quick: bool,
    /// Length of each timed phase.
    pub phase: Duration,
    /// Runs of each cheap timed phase; the median is reported.
    pub runs: usize,
    pub writer_counts: Vec<usize>,
    pub batch_sizes: Vec<usize>,
    pub contention_writers: usize,
    pub contention_streams: usize,
    pub layout: Layout,
    /// Timed stream reads (after one warm-up read of every big stream).
    pub reads: usize,
    /// Page size of the scans.
    pub page: usize,
    /// Bytes of the sequential-bandwidth test.
    pub seq_bytes: u64,
    /// Events pre-built for the write workloads.
    pub pool: usize,
    /// Events per SQLite transaction and per PostgreSQL COPY while loading the read data set.
    pub load_batch: u64,
}

impl Config {
    fn full() -> Self {
        Config {
            quick: false,
            phase: Duration::from_secs(2),
            runs: 3,
            writer_counts: vec![1, 8, 32, 128],
            batch_sizes: vec![100, 1000],
            contention_writers: 8,
            contention_streams: 4,
            layout: Layout::new(1_000_000, 10_000, 1000),
            reads: 1000,
            page: 1000,
            seq_bytes: 1 << 30,
            pool: 10_000,
            load_batch: 50_000,
        }
    }

    fn quick() -> Self {
        Config {
            quick: true,
            phase: Duration::from_millis(400),
            runs: 1,
            layout: Layout::new(20_000, 200, 1000),
            reads: 200,
            seq_bytes: 64 << 20,
            pool: 2000,
            load_batch: 5000,
            ..Config::full()
        }
    }
}

/// A median and every run it came from.
#[derive(Debug, Clone)]
pub struct Figure {
    pub value: f64,
    pub runs: Vec<f64>,
}

impl Figure {
    pub fn of(runs: Vec<f64>) -> Self {
        Figure {
            value: median(&runs),
            runs,
        }
    }
}

/// Everything measured.
#[derive(Debug, Default)]
pub struct Results {
    /// (metric, system) -> figure, or why it failed.
    pub cells: BTreeMap<(String, Sys), Result<Figure, String>>,
    /// The disk's limits: `fsync_append`, `fsync_overwrite` (per s), `seq_bandwidth` (bytes/s).
    pub raw: BTreeMap<String, Figure>,
    /// How long loading the read data set took, per system.
    pub load_secs: BTreeMap<Sys, f64>,
    /// Times a SQLite writer got SQLITE_BUSY despite its busy timeout, per workload.
    pub sqlite_busy: BTreeMap<String, u64>,
    pub sqlite_settings: String,
    pub pg_version: String,
    pub pg_settings: Vec<(String, String)>,
    /// Failures outside any one cell.
    pub errors: Vec<String>,
    /// The machine's 1-minute load average, sampled through the run.
    pub loads: Vec<f64>,
    pub total_secs: f64,
}

impl Results {
    pub fn get(&self, key: &str, sys: Sys) -> Option<f64> {
        match self.cells.get(&(key.to_string(), sys)) {
            Some(Ok(f)) => Some(f.value),
            _ => None,
        }
    }

    pub(crate) fn push_run(&mut self, key: &str, sys: Sys, value: f64) {
        let cell = self.cells.entry((key.to_string(), sys)).or_insert_with(|| {
            Ok(Figure {
                value,
                runs: Vec::new(),
            })
        });
        if let Ok(f) = cell {
            f.runs.push(value);
            f.value = median(&f.runs);
        }
    }

    pub(crate) fn push_raw(&mut self, key: &str, value: f64) {
        let f = self.raw.entry(key.to_string()).or_insert_with(|| Figure {
            value,
            runs: Vec::new(),
        });
        f.runs.push(value);
        f.value = median(&f.runs);
    }

    fn fail(&mut self, key: &str, sys: Sys, e: &dyn std::fmt::Display) {
        log(&format!("FAILED {key} on {}: {e}", sys.name()));
        self.cells.insert((key.to_string(), sys), Err(e.to_string()));
    }

    fn failed(&self, key: &str, sys: Sys) -> bool {
        matches!(self.cells.get(&(key.to_string(), sys)), Some(Err(_)))
    }
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The machine's 1-minute load average, sampled at every line of the log.
static LOADS: std::sync::Mutex<Vec<f64>> = std::sync::Mutex::new(Vec::new());

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn log(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    let load = load_average();
    if let Some(l) = load {
        LOADS.lock().unwrap().push(l);
    }
    eprintln!("[{t:7.1}s load {:4.1}] {msg}", load.unwrap_or(f64::NAN));
}

struct Args {
    quick: bool,
    data: PathBuf,
    pg: Option<String>,
    out: PathBuf,
    chart: PathBuf,
    systems: Vec<Sys>,
    workloads: Workloads,
    commit: Option<String>,
}

/// Which groups of workloads a run measures.
#[derive(Debug, Clone, Copy)]
struct Workloads {
    /// The disk's limits and workloads 1-4.
    appends: bool,
    /// Workloads 5-9 on the read data set.
    reads: bool,
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("error: {msg}");
    }
    eprintln!(
        "usage: annal-compare --data DIR [--pg CONNINFO] --out FILE.md --chart FILE.svg [--quick]\n\
         \x20                    [--systems annal,sqlite,postgres] [--workloads appends,reads] [--annal-plain] [--annal-cache-mib N] [--commit SHA]\n\
         \x20      annal-compare queries --data DIR [--pg CONNINFO] [--events N] [--systems ...]\n\
         Normally run by scripts/compare.sh (--queries for the second form), which starts a PostgreSQL server for --pg."
    );
    std::process::exit(if msg.is_empty() { 0 } else { 2 })
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let (mut quick, mut data, mut pg, mut out, mut chart, mut commit) = (false, None, None, None, None, None);
    let mut systems = Sys::ALL.to_vec();
    let mut workloads = Workloads {
        appends: true,
        reads: true,
    };
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--quick" => quick = true,
            "--data" => data = Some(PathBuf::from(value())),
            "--pg" => pg = Some(value()),
            "--out" => out = Some(PathBuf::from(value())),
            "--chart" => chart = Some(PathBuf::from(value())),
            "--commit" => commit = Some(value()),
            "--systems" => {
                systems = value()
                    .split(',')
                    .map(|s| {
                        Sys::ALL
                            .into_iter()
                            .find(|x| x.key() == s.trim())
                            .unwrap_or_else(|| usage(&format!("unknown system {s:?}")))
                    })
                    .collect()
            }
            "--workloads" => {
                workloads = Workloads {
                    appends: false,
                    reads: false,
                };
                for w in value().split(',') {
                    match w.trim() {
                        "appends" => workloads.appends = true,
                        "reads" => workloads.reads = true,
                        other => usage(&format!("unknown workload group {other:?}")),
                    }
                }
            }
            "--annal-plain" => systems::annal::PLAIN.store(true, std::sync::atomic::Ordering::Relaxed),
            "--annal-cache-mib" => {
                let mib = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--annal-cache-mib needs a number"));
                systems::annal::CACHE_MIB.store(mib, std::sync::atomic::Ordering::Relaxed)
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let (Some(data), Some(out), Some(chart)) = (data, out, chart) else {
        usage("--data, --out and --chart are required")
    };
    if systems.contains(&Sys::Postgres) && pg.is_none() {
        usage("--pg is required unless --systems leaves postgres out");
    }
    Args {
        quick,
        data,
        pg,
        out,
        chart,
        systems,
        workloads,
        commit,
    }
}

fn main() {
    START.get_or_init(Instant::now);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("queries") {
        if let Err(e) = queries::run(&argv[1..]) {
            let mut msg = e.to_string();
            let mut cause = std::error::Error::source(&*e);
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("error: {msg}");
            std::process::exit(1);
        }
        return;
    }
    let args = parse_args();
    let cfg = if args.quick { Config::quick() } else { Config::full() };
    if let Err(e) = std::fs::create_dir_all(&args.data) {
        eprintln!("error: cannot create {}: {e}", args.data.display());
        std::process::exit(1);
    }
    let mut h = Harness {
        pool: event::pool(cfg.pool),
        cfg,
        data: args.data.clone(),
        pg: args.pg.clone(),
        systems: args.systems.clone(),
        workloads: args.workloads,
        res: Results::default(),
    };
    log(&format!(
        "annal-compare ({} mode), data in {}, systems: {}",
        if h.cfg.quick { "quick" } else { "full" },
        h.data.display(),
        h.systems.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
    ));
    h.run();
    h.res.total_secs = START.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
    h.res.loads = LOADS.lock().unwrap().clone();
    let ctx = report::Context::gather(&h.cfg, &h.data, &h.systems, args.commit.clone());
    let chart_name = args
        .chart
        .file_name()
        .map_or_else(|| "chart.svg".into(), |n| n.to_string_lossy().into_owned());
    let mut md = report::markdown(&ctx, &h.res, &chart_name);
    // Dated sections written by hand below the marker survive a new run.
    if let Ok(old) = std::fs::read_to_string(&args.out)
        && let Some(at) = old.find(report::KEPT_MARKER)
    {
        md.push('\n');
        md.push_str(&old[at..]);
    }
    let svg = chart::writers_chart(&h.cfg.writer_counts, &h.systems, &h.res);
    for (path, text) in [(&args.out, md), (&args.chart, svg)] {
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    log(&format!("wrote {} and {}", args.out.display(), args.chart.display()));
    let failures: Vec<String> = h
        .res
        .cells
        .iter()
        .filter_map(|((k, s), r)| r.as_ref().err().map(|e| format!("{k} on {}: {e}", s.name())))
        .chain(h.res.errors.iter().cloned())
        .collect();
    if !failures.is_empty() {
        eprintln!("{} workload(s) failed:", failures.len());
        for f in &failures {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
    log("every workload completed");
}

/// A system's store for one write workload, and its writers' connections.
type Writers = (Sys, WriteEnv, Vec<Box<dyn Conn>>);

/// A reader's connection and, for annal, the store it reads (closed before the open workload).
type Reader = (Box<dyn Conn>, Option<Arc<annal::Store>>);

/// The result of one timed open: the last position read, the seconds it took, and the
/// handle, kept so that closing it happens after the clock stopped.
type Opened = (Res<Option<u64>>, f64, Option<Box<dyn std::any::Any>>);

/// A system's store for one write workload.
enum WriteEnv {
    Annal {
        store: Arc<annal::Store>,
        dir: PathBuf,
    },
    Sqlite {
        path: PathBuf,
    },
    Postgres,
    /// PostgreSQL's best case: single INSERTs relying on the unique key ([`PgInsertConn`]).
    PostgresInsert,
}

struct Harness {
    cfg: Config,
    data: PathBuf,
    pg: Option<String>,
    systems: Vec<Sys>,
    workloads: Workloads,
    pool: Vec<Ev>,
    res: Results,
}

/// Flushes every dirty page of the machine, so that one phase's writeback does not slow the next.
fn sync_all() {
    let _ = std::process::Command::new("sync").status();
}

impl Harness {
    fn pg(&self) -> &str {
        self.pg
            .as_deref()
            .expect("--pg is checked when postgres is among the systems")
    }

    fn run(&mut self) {
        if self.workloads.appends {
            self.raw_limits();
        }
        if self.systems.contains(&Sys::Sqlite) {
            let path = self.data.join("settings-check.db");
            match systems::sqlite::connect(&path, true).and_then(|c| systems::sqlite::check_settings(&c)) {
                Ok(s) => self.res.sqlite_settings = s,
                Err(e) => self.res.errors.push(format!("SQLite settings: {e}")),
            }
            remove_sqlite(&path);
        }
        if self.systems.contains(&Sys::Postgres) {
            match systems::postgres::check_settings(self.pg()).and_then(|v| {
                systems::postgres::setup(self.pg())?;
                Ok(v)
            }) {
                Ok((version, settings)) => {
                    self.res.pg_version = version;
                    self.res.pg_settings = settings;
                }
                Err(e) => {
                    log(&format!("PostgreSQL unusable, leaving it out: {e}"));
                    self.res.errors.push(format!("PostgreSQL: {e}"));
                    self.systems.retain(|s| *s != Sys::Postgres);
                }
            }
        }
        if self.workloads.appends {
            self.concurrent_appends();
            self.batched_appends();
            self.contended_appends();
        }
        if self.workloads.reads {
            self.read_workloads();
        }
    }

    /// The disk's sequential bandwidth on the same file system as the stores (its
    /// fdatasync rates are measured in the rounds of the 1-writer workload).
    fn raw_limits(&mut self) {
        let path = self.data.join("raw.bin");
        for _ in 0..self.cfg.runs {
            match raw::sequential_bandwidth(&path, self.cfg.seq_bytes) {
                Ok(v) => {
                    log(&format!("raw seq_bandwidth: {:.0} MiB/s", v / f64::from(1 << 20)));
                    self.res.push_raw("seq_bandwidth", v);
                }
                Err(e) => {
                    self.res.errors.push(format!("raw seq_bandwidth: {e}"));
                    break;
                }
            }
        }
        sync_all();
    }

    /// One run of each raw fdatasync rate (4 KiB overwrite in place, 4 KiB append).
    fn raw_fsync_round(&mut self) {
        let path = self.data.join("raw.bin");
        for (name, append) in [("fsync_overwrite", false), ("fsync_append", true)] {
            match raw::fdatasync_rate(&path, self.cfg.phase, append) {
                Ok(v) => {
                    log(&format!("raw {name}: {v:.0}/s"));
                    self.res.push_raw(name, v);
                }
                Err(e) => self.res.errors.push(format!("raw {name}: {e}")),
            }
        }
    }

    fn write_env(&self, sys: Sys, name: &str) -> Res<WriteEnv> {
        Ok(match sys {
            Sys::Annal => {
                let dir = self.data.join(format!("annal-{name}"));
                let _ = std::fs::remove_dir_all(&dir);
                WriteEnv::Annal {
                    store: systems::annal::open(&dir)?,
                    dir,
                }
            }
            Sys::Sqlite => {
                let path = self.data.join(format!("sqlite-{name}.db"));
                remove_sqlite(&path);
                drop(systems::sqlite::connect(&path, true)?);
                WriteEnv::Sqlite { path }
            }
            Sys::Postgres => {
                systems::postgres::truncate_writes(self.pg(), "wr.events")?;
                WriteEnv::Postgres
            }
        })
    }

    /// The environment of PostgreSQL's INSERT-only writers, if PostgreSQL runs.
    fn insert_env(&self) -> Option<Res<WriteEnv>> {
        self.systems.contains(&Sys::Postgres).then(|| {
            systems::postgres::truncate_writes(self.pg(), systems::postgres::INSERT_TABLE)?;
            Ok(WriteEnv::PostgresInsert)
        })
    }

    fn conns(&self, env: &WriteEnv, n: usize) -> Res<Vec<Box<dyn Conn>>> {
        (0..n)
            .map(|_| -> Res<Box<dyn Conn>> {
                Ok(match env {
                    WriteEnv::Annal { store, .. } => Box::new(AnnalConn::new(store.clone())),
                    WriteEnv::Sqlite { path } => Box::new(SqliteConn::open(path)?),
                    WriteEnv::Postgres => Box::new(PgConn::open(self.pg(), "wr.events")?),
                    WriteEnv::PostgresInsert => {
                        Box::new(PgInsertConn::open(self.pg(), systems::postgres::INSERT_TABLE)?)
                    }
                })
            })
            .collect()
    }

    /// Opens each system's store for a write workload with `n` connections;
    /// with `insert`, PostgreSQL's INSERT-only writers too (recorded under
    /// `KEY/insert`, see [`insert_key`]).
    fn setup_writers(&mut self, name: &str, keys: &[String], n: usize, insert: bool) -> Vec<Writers> {
        let mut out = Vec::new();
        for sys in self.systems.clone() {
            match self.write_env(sys, name).and_then(|env| {
                let conns = self.conns(&env, n)?;
                Ok((env, conns))
            }) {
                Ok((env, conns)) => out.push((sys, env, conns)),
                Err(e) => {
                    for k in keys {
                        self.res.fail(k, sys, &e);
                    }
                }
            }
        }
        if insert && let Some(env) = self.insert_env() {
            match env.and_then(|env| {
                let conns = self.conns(&env, n)?;
                Ok((env, conns))
            }) {
                Ok((env, conns)) => out.push((Sys::Postgres, env, conns)),
                Err(e) => {
                    for k in keys {
                        self.res.fail(&insert_key(k), Sys::Postgres, &e);
                    }
                }
            }
        }
        out
    }

    /// Closes and removes the stores of a write workload.
    fn teardown_writers(&mut self, name: &str, envs: Vec<Writers>) {
        for (_, env, conns) in envs {
            let busy: u64 = conns.iter().map(|c| c.busy_retries()).sum();
            drop(conns);
            match env {
                WriteEnv::Annal { store, dir } => {
                    if let Ok(store) = Arc::try_unwrap(store)
                        && let Err(e) = store.close()
                    {
                        self.res.errors.push(format!("closing annal after {name}: {e}"));
                    }
                    let _ = std::fs::remove_dir_all(dir);
                }
                WriteEnv::Sqlite { path } => {
                    *self.res.sqlite_busy.entry(name.to_string()).or_default() += busy;
                    remove_sqlite(&path);
                }
                WriteEnv::Postgres | WriteEnv::PostgresInsert => {}
            }
        }
        sync_all();
    }

    /// Runs `runs` rounds; in each, every system in turn runs `threads` writers
    /// for one phase; records events/s under `key` and conflicts/s under `key/conflicts`.
    /// With `raw`, each round starts with a run of the disk's raw fdatasync rates.
    fn interleaved<F>(&mut self, key: &str, threads: usize, envs: &mut [Writers], raw: bool, step: F)
    where
        F: Fn(usize, &mut dyn Conn, u64, usize) -> Result<Step, BoxError> + Sync,
    {
        for run in 0..self.cfg.runs {
            if raw {
                self.raw_fsync_round();
            }
            for (sys, env, conns) in envs.iter_mut() {
                let key = match env {
                    WriteEnv::PostgresInsert => insert_key(key),
                    _ => key.to_string(),
                };
                let key = key.as_str();
                if self.res.failed(key, *sys) {
                    continue;
                }
                let result = run_threads(&mut conns[..threads], self.cfg.phase, |t, c, op| step(t, c, op, run));
                match result {
                    Ok(Rates { events, conflicts }) => {
                        log(&format!(
                            "{key} {} run {}/{}: {events:.0} events/s, {conflicts:.0} conflicts/s",
                            if matches!(env, WriteEnv::PostgresInsert) {
                                "PostgreSQL (INSERT only)"
                            } else {
                                sys.name()
                            },
                            run + 1,
                            self.cfg.runs
                        ));
                        self.res.push_run(key, *sys, events);
                        self.res.push_run(&format!("{key}/conflicts"), *sys, conflicts);
                    }
                    Err(e) => self.res.fail(key, *sys, &e),
                }
            }
        }
    }

    /// Workloads 1 and 2: durable single-event appends from 1, 8, 32, 128 writers, each to its own stream.
    fn concurrent_appends(&mut self) {
        let counts = self.cfg.writer_counts.clone();
        let keys: Vec<String> = counts.iter().map(|n| format!("writers/{n}")).collect();
        let max = counts.iter().copied().max().unwrap_or(1);
        let mut envs = self.setup_writers("writers", &keys, max, true);
        let pool = std::mem::take(&mut self.pool);
        let names: Vec<String> = (0..max).map(|t| format!("writer-{t:03}")).collect();
        for (n, key) in counts.iter().zip(&keys) {
            self.interleaved(key, *n, &mut envs, *n == 1, |t, conn, op, run| {
                let e = &pool[(t * 7919 + op as usize + run * 104_729) % pool.len()];
                append_ok(conn.append(&names[t], Expect::Any, std::slice::from_ref(e)), 1)
            });
        }
        self.pool = pool;
        self.teardown_writers("writers", envs);
    }

    /// Workload 3: one writer appending batches of 100 and 1,000 events, each batch one append.
    fn batched_appends(&mut self) {
        for n in self.cfg.batch_sizes.clone() {
            let key = format!("batch/{n}");
            let mut envs = self.setup_writers(&key.replace('/', "-"), std::slice::from_ref(&key), 1, true);
            let pool = std::mem::take(&mut self.pool);
            self.interleaved(&key, 1, &mut envs, false, |_, conn, op, run| {
                let k = op as usize + run * 7;
                let start = (k * n) % pool.len();
                let stream = stream_name(k as u64 % 1000);
                append_ok(conn.append(&stream, Expect::Any, &pool[start..start + n]), n as u64)
            });
            self.pool = pool;
            self.teardown_writers(&key.replace('/', "-"), envs);
        }
        if self.systems.contains(&Sys::Annal) {
            self.batched_without_sync();
        }
    }

    /// A diagnostic, not a comparison: annal's largest batches with `Durability::Never`
    /// (no fdatasync at all), the ceiling of its append path on this machine's CPU.
    fn batched_without_sync(&mut self) {
        let n = *self.cfg.batch_sizes.iter().max().unwrap_or(&1000);
        let key = format!("batch-nosync/{n}");
        let dir = self.data.join("annal-nosync");
        let _ = std::fs::remove_dir_all(&dir);
        let opened = annal::Store::open(&dir, annal::Options::default().durability(annal::Durability::Never));
        let store = match opened {
            Ok(s) => Arc::new(s),
            Err(e) => return self.res.fail(&key, Sys::Annal, &e),
        };
        let mut conns: Vec<Box<dyn Conn>> = vec![Box::new(AnnalConn::new(store.clone()))];
        let pool = std::mem::take(&mut self.pool);
        for run in 0..self.cfg.runs {
            let r = run_threads(&mut conns, self.cfg.phase, |_, conn, op| {
                let k = op as usize + run * 7;
                let start = (k * n) % pool.len();
                append_ok(
                    conn.append(&stream_name(k as u64 % 1000), Expect::Any, &pool[start..start + n]),
                    n as u64,
                )
            });
            match r {
                Ok(r) => {
                    log(&format!(
                        "{key} annal (Durability::Never) run {}: {:.0} events/s",
                        run + 1,
                        r.events
                    ));
                    self.res.push_run(&key, Sys::Annal, r.events);
                }
                Err(e) => {
                    self.res.fail(&key, Sys::Annal, &e);
                    break;
                }
            }
        }
        self.pool = pool;
        drop(conns);
        if let Ok(store) = Arc::try_unwrap(store) {
            let _ = store.close();
        }
        let _ = std::fs::remove_dir_all(&dir);
        sync_all();
    }

    /// Workload 4: writers racing on a few streams, each reading the stream's
    /// version and appending one event expecting it.
    fn contended_appends(&mut self) {
        let key = "contention".to_string();
        let (w, k) = (self.cfg.contention_writers, self.cfg.contention_streams);
        let mut envs = self.setup_writers("contention", std::slice::from_ref(&key), w, false);
        let pool = std::mem::take(&mut self.pool);
        let hot: Vec<String> = (0..k).map(|i| format!("hot-{i}")).collect();
        self.interleaved(&key, w, &mut envs, false, |t, conn, op, run| {
            let mut rng = Rng::new(((t as u64) << 40) ^ op ^ ((run as u64) << 32));
            let stream = &hot[rng.below(k as u64) as usize];
            let e = &pool[(t * 7919 + op as usize) % pool.len()];
            let expected = Expect::from_version(conn.version(stream)?);
            match conn.append(stream, expected, std::slice::from_ref(e)) {
                Ok(()) => Ok(Step {
                    events: 1,
                    conflicts: 0,
                }),
                Err(AppendError::Conflict) => Ok(Step {
                    events: 0,
                    conflicts: 1,
                }),
                Err(AppendError::Failed(e)) => Err(e),
            }
        });
        self.pool = pool;
        self.teardown_writers("contention", envs);
    }

    /// Workloads 5 to 9 on the read data set.
    fn read_workloads(&mut self) {
        let layout = self.cfg.layout;
        let annal_dir = self.data.join("annal-read");
        let sqlite_path = self.data.join("sqlite-read.db");
        let keys = ["stream/p50", "stream/p99", "scan", "filtered", "bytes", "open"];
        // Load.
        for sys in self.systems.clone() {
            log(&format!("loading {} events into {}", layout.events, sys.name()));
            let t = Instant::now();
            let wal_before = (sys == Sys::Postgres).then(|| systems::postgres::wal_position(self.pg()).ok());
            let loaded = match sys {
                Sys::Annal => systems::annal::load(&annal_dir, &layout),
                Sys::Sqlite => systems::sqlite::load(&sqlite_path, &layout, self.cfg.load_batch),
                Sys::Postgres => systems::postgres::load(self.pg(), &layout, self.cfg.load_batch),
            };
            if let Some(Some(before)) = wal_before
                && loaded.is_ok()
                && let Ok(after) = systems::postgres::wal_position(self.pg())
            {
                let per = after.saturating_sub(before) as f64 / layout.events as f64;
                self.res.push_run("bytes/wal-written", sys, per);
            }
            match loaded {
                Ok(()) => {
                    let secs = t.elapsed().as_secs_f64();
                    log(&format!("loaded {} in {secs:.1} s", sys.name()));
                    self.res.load_secs.insert(sys, secs);
                }
                Err(e) => {
                    for k in keys {
                        self.res.fail(k, sys, &format!("loading the data set: {e}"));
                    }
                }
            }
            sync_all();
        }
        let loaded: Vec<Sys> = self
            .systems
            .iter()
            .copied()
            .filter(|s| self.res.load_secs.contains_key(s))
            .collect();

        // One reader connection per system.
        let mut readers: Vec<(Sys, Reader)> = Vec::new();
        for sys in loaded.clone() {
            let opened: Res<Reader> = match sys {
                Sys::Annal => systems::annal::open(&annal_dir)
                    .map(|s| (Box::new(AnnalConn::new(s.clone())) as Box<dyn Conn>, Some(s))),
                Sys::Sqlite => SqliteConn::open(&sqlite_path).map(|c| (Box::new(c) as Box<dyn Conn>, None)),
                Sys::Postgres => PgConn::open(self.pg(), "rd.events").map(|c| (Box::new(c) as Box<dyn Conn>, None)),
            };
            match opened {
                Ok(reader) => readers.push((sys, reader)),
                Err(e) => {
                    for k in keys {
                        self.res.fail(k, sys, &format!("opening the data set: {e}"));
                    }
                }
            }
        }

        // 5. Stream reads: warm every big stream once, then rounds of timed random reads.
        for (sys, (conn, _)) in readers.iter_mut() {
            if let Err(e) = warm_streams(conn.as_mut(), &layout) {
                self.res.fail("stream/p50", *sys, &e);
                self.res.fail("stream/p99", *sys, &e);
            }
        }
        for run in 0..self.cfg.runs {
            for (sys, (conn, store)) in readers.iter_mut() {
                if self.res.failed("stream/p50", *sys) {
                    continue;
                }
                if let Some(store) = store {
                    // Whether the background compressor is still at work during the reads.
                    let st = store.stats();
                    log(&format!(
                        "annal before the reads: {} of {} segments compressed, {} events in the active one",
                        st.compressed_segments, st.segments, st.active_events
                    ));
                }
                match stream_reads(conn.as_mut(), &layout, self.cfg.reads, run as u64) {
                    Ok([p50, p90, p99, max]) => {
                        log(&format!(
                            "stream read {} events on {} run {}/{}: median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                            layout.big_len,
                            sys.name(),
                            run + 1,
                            self.cfg.runs,
                            p50 * 1e3,
                            p90 * 1e3,
                            p99 * 1e3,
                            max * 1e3
                        ));
                        self.res.push_run("stream/p50", *sys, p50);
                        self.res.push_run("stream/p99", *sys, p99);
                    }
                    Err(e) => {
                        self.res.fail("stream/p50", *sys, &e);
                        self.res.fail("stream/p99", *sys, &e);
                    }
                }
            }
        }

        // 6 and 7. Scans of the whole log and of one type, interleaved runs.
        for (key, filter, expect) in [
            ("scan", None, layout.events),
            ("filtered", Some(FILTER_TYPE), layout.filter_matches()),
        ] {
            for run in 0..self.cfg.runs {
                for (sys, (conn, _)) in readers.iter_mut() {
                    if self.res.failed(key, *sys) {
                        continue;
                    }
                    match scan(conn.as_mut(), self.cfg.page, filter, expect) {
                        Ok(rate) => {
                            log(&format!(
                                "{key} on {} run {}/{}: {rate:.0} events/s",
                                sys.name(),
                                run + 1,
                                self.cfg.runs
                            ));
                            self.res.push_run(key, *sys, rate);
                        }
                        Err(e) => self.res.fail(key, *sys, &e),
                    }
                }
            }
        }

        // Close everything before measuring sizes and opens.
        for (sys, (conn, store)) in readers {
            drop(conn);
            if let Some(store) = store
                && let Ok(store) = Arc::try_unwrap(store)
                && let Err(e) = store.close()
            {
                self.res.fail("open", sys, &format!("closing the store: {e}"));
            }
        }
        sync_all();

        // 8. Bytes on disk per event.
        for sys in loaded.clone() {
            let size = match sys {
                Sys::Annal => Ok(dir_size(&annal_dir)),
                Sys::Sqlite => Ok(systems::sqlite::size_on_disk(&sqlite_path)),
                Sys::Postgres => systems::postgres::table_size(self.pg(), "rd.events"),
            };
            match size {
                Ok(b) => {
                    let per = b as f64 / layout.events as f64;
                    log(&format!("bytes on disk for {}: {b} ({per:.0} per event)", sys.name()));
                    self.res.push_run("bytes", sys, per);
                }
                Err(e) => self.res.fail("bytes", sys, &e),
            }
            // The same bytes by part: data, indexes, the rest.
            let parts = match sys {
                Sys::Annal => Ok(annal_parts(&annal_dir)),
                Sys::Sqlite => systems::sqlite::parts(&sqlite_path),
                Sys::Postgres => systems::postgres::table_parts(self.pg(), "rd.events")
                    .map(|p| [p.table, p.indexes, p.wal_kept.unwrap_or(0)]),
            };
            match parts {
                Ok(p) => {
                    for (k, b) in ["bytes/data", "bytes/index", "bytes/other"].iter().zip(p) {
                        self.res.push_run(k, sys, b as f64 / layout.events as f64);
                    }
                }
                Err(e) => self.res.errors.push(format!("bytes by part for {}: {e}", sys.name())),
            }
        }

        // 9. Time to open and read the last event.
        for run in 0..self.cfg.runs {
            for sys in loaded.clone() {
                if self.res.failed("open", sys) {
                    continue;
                }
                // The handle is kept until the clock has stopped: closing is not part of opening.
                let t = Instant::now();
                let (opened, el, handle): Opened = match sys {
                    Sys::Annal => match annal::Store::open(&annal_dir, systems::annal::options()) {
                        Ok(s) => {
                            let mut c = AnnalConn::new(Arc::new(s));
                            let last = c.read_last();
                            (last, t.elapsed().as_secs_f64(), Some(Box::new(c)))
                        }
                        Err(e) => (Err(e.into()), 0.0, None),
                    },
                    Sys::Sqlite => match SqliteConn::open(&sqlite_path) {
                        Ok(mut c) => {
                            let last = c.read_last();
                            (last, t.elapsed().as_secs_f64(), Some(Box::new(c)))
                        }
                        Err(e) => (Err(e), 0.0, None),
                    },
                    Sys::Postgres => match systems::postgres::connect_and_read_last(self.pg(), "rd.events") {
                        Ok((client, last)) => (Ok(last), t.elapsed().as_secs_f64(), Some(Box::new(client))),
                        Err(e) => (Err(e), 0.0, None),
                    },
                };
                drop(handle);
                match opened {
                    Ok(Some(_)) => {
                        log(&format!("open {} run {}: {:.2} ms", sys.name(), run + 1, el * 1e3));
                        self.res.push_run("open", sys, el);
                    }
                    Ok(None) => self.res.fail("open", sys, &"the store was empty after opening"),
                    Err(e) => self.res.fail("open", sys, &e),
                }
            }
        }
        let _ = std::fs::remove_dir_all(&annal_dir);
        remove_sqlite(&sqlite_path);
    }
}

/// Turns an append's result into a step of `events` events; a conflict is an error here.
fn append_ok(r: Result<(), AppendError>, events: u64) -> Result<Step, BoxError> {
    match r {
        Ok(()) => Ok(Step { events, conflicts: 0 }),
        Err(AppendError::Conflict) => Err("unexpected conflict on a writer's own stream".into()),
        Err(AppendError::Failed(e)) => Err(e),
    }
}

fn check_stream(n: usize, want: usize, stream: &str) -> Res<()> {
    if n == want {
        Ok(())
    } else {
        Err(format!("stream {stream} gave {n} events, not {want}").into())
    }
}

/// Reads every big stream once, to warm the caches.
fn warm_streams(conn: &mut dyn Conn, layout: &Layout) -> Res<()> {
    let want = layout.big_len as usize;
    for s in 0..layout.big {
        let name = stream_name(s);
        check_stream(conn.read_stream(&name, want)?, want, &name)?;
    }
    Ok(())
}

/// Reads `reads` random big streams one by one; returns the median, p90, p99 and
/// largest latency, in s.
fn stream_reads(conn: &mut dyn Conn, layout: &Layout, reads: usize, seed: u64) -> Res<[f64; 4]> {
    let want = layout.big_len as usize;
    let mut rng = Rng::new(42 + seed);
    let mut lat = Vec::with_capacity(reads);
    // The latencies of the reads that took page faults, and of those the
    // kernel preempted (another runnable thread took the CPU), read outside
    // the timed span: what a tail is made of.
    let (mut faulted, mut preempted) = (Vec::new(), Vec::new());
    for _ in 0..reads {
        let name = stream_name(rng.below(layout.big));
        let before = (thread_faults(), thread_preemptions());
        let t = Instant::now();
        let n = conn.read_stream(&name, want)?;
        let el = t.elapsed().as_secs_f64();
        lat.push(el);
        if let (Some(a), Some(b)) = (before.0, thread_faults())
            && b > a
        {
            faulted.push(el);
        }
        if let (Some(a), Some(b)) = (before.1, thread_preemptions())
            && b > a
        {
            preempted.push(el);
        }
        check_stream(n, want, &name)?;
    }
    lat.sort_by(f64::total_cmp);
    for (what, mut v) in [("took page faults", faulted), ("were preempted", preempted)] {
        v.sort_by(f64::total_cmp);
        if !v.is_empty() {
            log(&format!(
                "  {} of {reads} reads {what} (their median {:.3} ms, largest {:.3} ms)",
                v.len(),
                quantile(&v, 0.5) * 1e3,
                quantile(&v, 1.0) * 1e3
            ));
        }
    }
    Ok([
        quantile(&lat, 0.5),
        quantile(&lat, 0.9),
        quantile(&lat, 0.99),
        quantile(&lat, 1.0),
    ])
}

/// Minor plus major page faults of the calling thread so far, from `/proc/thread-self/stat`.
fn thread_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which ends with the last ')'): state is field 3,
    // minflt field 10, majflt field 12.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(7)?.parse::<u64>().ok()? + f.get(9)?.parse::<u64>().ok()?)
}

/// Times the calling thread was preempted so far (`nonvoluntary_ctxt_switches`
/// of `/proc/thread-self/status`).
fn thread_preemptions() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()
}

/// Reads the whole log (or every event of one type) in pages; returns events/s.
fn scan(conn: &mut dyn Conn, page: usize, event_type: Option<&str>, expect: u64) -> Res<f64> {
    let t = Instant::now();
    let mut after = None;
    let mut total = 0u64;
    loop {
        let (n, last) = conn.read_page(after, page, event_type)?;
        total += n as u64;
        if n < page {
            break;
        }
        after = last;
    }
    let el = t.elapsed().as_secs_f64();
    if total != expect {
        return Err(format!("read {total} events, expected {expect}").into());
    }
    Ok(total as f64 / el)
}

/// The key under which PostgreSQL's INSERT-only writers record a write workload's figures.
pub fn insert_key(key: &str) -> String {
    format!("{key}/insert")
}

/// annal's bytes by part: segments, index files (`.idx`, `active.idc`), the
/// rest (checkpoints, the compression dictionary, side directories).
fn annal_parts(dir: &Path) -> [u64; 3] {
    let mut parts = [0u64; 3];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            let i = if m.is_dir() {
                2
            } else if name.ends_with(".seg") {
                0
            } else if name.ends_with(".idx") || name == "active.idc" {
                1
            } else {
                2
            };
            parts[i] += if m.is_dir() { dir_size(&e.path()) } else { m.len() };
        }
    }
    parts
}

/// Total size in bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
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

fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}
