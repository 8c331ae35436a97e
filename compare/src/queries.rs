//! The queries of issue 16 on annal, SQLite and PostgreSQL in one run: reads
//! by topic pattern and by a metadata field, counts, on the same data set
//! loaded into each, with the SQL a team moving from an events table would
//! write (a regular expression or `GLOB` on the type column, a GIN index on
//! the `jsonb` metadata in PostgreSQL, an expression index on the metadata
//! field in SQLite; `indexed_metadata = ["actor"]` in annal).
//!
//! ```text
//! annal-compare queries --data DIR [--pg CONNINFO] [--events N] [--systems annal,sqlite,postgres]
//! ```
//!
//! `scripts/compare.sh --queries` starts a PostgreSQL server and runs it.
//! Prints a Markdown table: for each query the median of 5 warm runs on each
//! system, and the result (a count, or the length of the page), which must
//! be the same on every system.

use std::path::Path;
use std::time::{Duration, Instant};

use annal::{Direction, Durability, EventData, ExpectedVersion, Filter, LogFrom, Options, Store};
use uuid::Uuid;

use annal_workload::queries::event;

use crate::systems::{Res, Sys};

const BATCH: usize = 1000;
const RUNS: usize = 5;

/// How annal answers a query: a count, or the length of a page.
type AnnalQuery = Box<dyn Fn(&Store) -> Res<u64>>;
/// Times one query on a loaded system.
type Runner = Box<dyn FnMut(&Query) -> Res<(Duration, u64)>>;

/// One query on every system: what it asks, and how each answers it.
struct Query {
    what: &'static str,
    annal: AnnalQuery,
    sqlite: &'static str,
    postgres: &'static str,
}

fn read(store: &Store, f: &Filter, limit: usize) -> Res<u64> {
    Ok(store.read_all(Direction::Backward, LogFrom::End, limit, f)?.len() as u64)
}

fn patterns() -> Filter {
    Filter::all()
        .with_type_pattern("app.lifecycle.#")
        .with_type_pattern("hook.triggered.*")
}

fn queries() -> Vec<Query> {
    vec![
        Query {
            what: "Read, type patterns `app.lifecycle.#` or `hook.triggered.*`, first page of 100, newest first",
            annal: Box::new(|s| read(s, &patterns(), 100)),
            sqlite: "SELECT count(*) FROM (SELECT position, data, metadata FROM events
                     WHERE type = 'app.lifecycle' OR type GLOB 'app.lifecycle.*'
                        OR (type GLOB 'hook.triggered.*' AND type NOT GLOB 'hook.triggered.*.*')
                     ORDER BY position DESC LIMIT 100)",
            postgres: "SELECT count(*) FROM (SELECT global_position, data, metadata FROM q.events
                       WHERE type ~ '^app\\.lifecycle(\\..*)?$' OR type ~ '^hook\\.triggered\\.[^.]+$'
                       ORDER BY global_position DESC LIMIT 100) p",
        },
        Query {
            what: "Count, the same type patterns",
            annal: Box::new(|s| Ok(s.count(&patterns())?)),
            sqlite: "SELECT count(*) FROM events
                     WHERE type = 'app.lifecycle' OR type GLOB 'app.lifecycle.*'
                        OR (type GLOB 'hook.triggered.*' AND type NOT GLOB 'hook.triggered.*.*')",
            postgres: "SELECT count(*) FROM q.events
                       WHERE type ~ '^app\\.lifecycle(\\..*)?$' OR type ~ '^hook\\.triggered\\.[^.]+$'",
        },
        Query {
            what: "Read, metadata `actor = agent-7`, first page of 100, newest first",
            annal: Box::new(|s| read(s, &Filter::all().with_metadata("actor", "agent-7"), 100)),
            sqlite: "SELECT count(*) FROM (SELECT position, data, metadata FROM events
                     WHERE json_extract(metadata, '$.actor') = 'agent-7' ORDER BY position DESC LIMIT 100)",
            postgres: "SELECT count(*) FROM (SELECT global_position, data, metadata FROM q.events
                       WHERE metadata @> '{\"actor\":\"agent-7\"}' ORDER BY global_position DESC LIMIT 100) p",
        },
        Query {
            what: "Count, metadata `actor = agent-7`",
            annal: Box::new(|s| Ok(s.count(&Filter::all().with_metadata("actor", "agent-7"))?)),
            sqlite: "SELECT count(*) FROM events WHERE json_extract(metadata, '$.actor') = 'agent-7'",
            postgres: "SELECT count(*) FROM q.events WHERE metadata @> '{\"actor\":\"agent-7\"}'",
        },
        Query {
            what: "Count, everything",
            annal: Box::new(|s| Ok(s.count(&Filter::all())?)),
            sqlite: "SELECT count(*) FROM events",
            postgres: "SELECT count(*) FROM q.events",
        },
        Query {
            what: "Count, aggregate type `order` (streams `order-*`)",
            annal: Box::new(|s| Ok(s.count(&Filter::all().with_aggregate_type("order"))?)),
            sqlite: "SELECT count(*) FROM events WHERE stream GLOB 'order-*'",
            postgres: "SELECT count(*) FROM q.events WHERE stream_id LIKE 'order-%'",
        },
    ]
}

/// The median of [`RUNS`] timed runs of `f` (after one untimed run that warms
/// the caches), and its answer, which must not change between runs.
fn median(mut f: impl FnMut() -> Res<u64>) -> Res<(Duration, u64)> {
    let first = f()?;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let n = f()?;
        times.push(t.elapsed());
        if n != first {
            return Err(format!("the answer changed between runs: {first} then {n}").into());
        }
    }
    times.sort();
    Ok((times[RUNS / 2], first))
}

fn load_annal(dir: &Path, events: usize) -> Res<Store> {
    let store = Store::open(dir, options())?;
    for b in 0..events / BATCH {
        let mut stream = String::new();
        let evs: Vec<EventData> = (0..BATCH)
            .map(|i| {
                let (s, ty, data, meta) = event(b, b * BATCH + i);
                stream = s;
                EventData::json(ty, data).with_metadata(meta)
            })
            .collect();
        store.append(&stream, ExpectedVersion::Any, evs)?;
    }
    // What the background compressor does to sealed segments a little later:
    // measured as the store stays, not in the moments before.
    store.compress()?;
    store.close()?;
    Ok(Store::open(dir, options())?)
}

/// The defaults, with the metadata field the queries ask about indexed (as
/// PostgreSQL and SQLite get an index on it).
fn options() -> Options {
    Options::default()
        .durability(Durability::Never)
        .indexed_metadata(["actor"])
}

fn load_sqlite(path: &Path, events: usize) -> Res<rusqlite::Connection> {
    let mut c = rusqlite::Connection::open(path)?;
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;
         PRAGMA mmap_size = 2147418112; PRAGMA temp_store = MEMORY;
         CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, revision INTEGER NOT NULL,
             event_id BLOB NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, metadata TEXT NOT NULL,
             UNIQUE (stream, revision));",
    )?;
    let mut revisions = std::collections::HashMap::<String, u64>::new();
    for b in 0..events / BATCH {
        let tx = c.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (stream, revision, event_id, type, data, metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for i in 0..BATCH {
                let (s, ty, data, meta) = event(b, b * BATCH + i);
                let r = revisions.entry(s.clone()).or_insert(0);
                ins.execute(rusqlite::params![
                    s,
                    *r as i64,
                    Uuid::new_v4().as_bytes().to_vec(),
                    ty,
                    data,
                    meta
                ])?;
                *r += 1;
            }
        }
        tx.commit()?;
    }
    c.execute_batch(
        "CREATE INDEX events_type ON events (type);
         CREATE INDEX events_actor ON events (json_extract(metadata, '$.actor'));
         ANALYZE;",
    )?;
    Ok(c)
}

fn load_postgres(url: &str, events: usize) -> Res<postgres::Client> {
    use std::io::Write;
    let mut c = postgres::Client::connect(url, postgres::NoTls)?;
    c.batch_execute(
        "DROP SCHEMA IF EXISTS q CASCADE; CREATE SCHEMA q;
         CREATE TABLE q.events (global_position bigserial PRIMARY KEY, stream_id text NOT NULL,
             version bigint NOT NULL, event_id uuid NOT NULL, type text NOT NULL, data jsonb NOT NULL,
             metadata jsonb NOT NULL, created timestamptz NOT NULL DEFAULT now(), UNIQUE (stream_id, version));",
    )?;
    let mut revisions = std::collections::HashMap::<String, u64>::new();
    let mut w = c.copy_in("COPY q.events (stream_id, version, event_id, type, data, metadata) FROM STDIN")?;
    let mut buf = Vec::with_capacity(1 << 20);
    for b in 0..events / BATCH {
        for i in 0..BATCH {
            // No field holds a tab, newline or backslash: COPY's text format takes them as they are.
            let (s, ty, data, meta) = event(b, b * BATCH + i);
            let r = revisions.entry(s.clone()).or_insert(0);
            writeln!(buf, "{s}\t{r}\t{}\t{ty}\t{data}\t{meta}", Uuid::new_v4())?;
            *r += 1;
        }
        if buf.len() > 1 << 20 {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)?;
    w.finish()?;
    c.batch_execute(
        "CREATE INDEX events_type ON q.events (type text_pattern_ops, global_position);
         CREATE INDEX events_metadata ON q.events USING gin (metadata jsonb_path_ops);
         CREATE INDEX events_stream ON q.events (stream_id text_pattern_ops);",
    )?;
    c.batch_execute("VACUUM (ANALYZE) q.events")?;
    Ok(c)
}

/// Runs the queries; prints the table on stdout and progress on stderr.
pub fn run(args: &[String]) -> Res<()> {
    let mut data = None;
    let mut pg = None;
    let mut events = 1_000_000usize;
    let mut systems = Sys::ALL.to_vec();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--data" => data = Some(std::path::PathBuf::from(value()?)),
            "--pg" => pg = Some(value()?),
            "--events" => events = value()?.parse()?,
            "--systems" => {
                systems = value()?
                    .split(',')
                    .map(|s| {
                        Sys::ALL
                            .into_iter()
                            .find(|x| x.key() == s.trim())
                            .ok_or(format!("unknown system {s:?}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let data = data.ok_or("--data is required")?;
    std::fs::create_dir_all(&data)?;
    let qs = queries();
    let mut cells: Vec<Vec<Option<(Duration, u64)>>> = vec![vec![None; systems.len()]; qs.len()];
    for (col, sys) in systems.iter().enumerate() {
        let t = Instant::now();
        eprintln!("queries: loading {events} events into {}", sys.name());
        let mut run_one: Runner = match sys {
            Sys::Annal => {
                let dir = data.join("annal-queries");
                let _ = std::fs::remove_dir_all(&dir);
                let store = load_annal(&dir, events)?;
                Box::new(move |q: &Query| median(|| (q.annal)(&store)))
            }
            Sys::Sqlite => {
                let path = data.join("sqlite-queries.db");
                for ext in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
                }
                let c = load_sqlite(&path, events)?;
                Box::new(move |q: &Query| median(|| Ok(c.query_row(q.sqlite, [], |r| r.get::<_, i64>(0))? as u64)))
            }
            Sys::Postgres => {
                let url = pg.clone().ok_or("--pg is required for postgres")?;
                let mut c = load_postgres(&url, events)?;
                Box::new(move |q: &Query| median(|| Ok(c.query_one(q.postgres, &[])?.get::<_, i64>(0) as u64)))
            }
        };
        eprintln!("queries: loaded {} in {:.1} s", sys.name(), t.elapsed().as_secs_f64());
        for (row, q) in qs.iter().enumerate() {
            let r = run_one(q)?;
            eprintln!("queries: {} on {}: {:.3} ms ({})", q.what, sys.name(), ms(r.0), r.1);
            cells[row][col] = Some(r);
        }
    }
    println!(
        "| Query | Result | {} |",
        systems.iter().map(|s| s.name()).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|--:|{}", "--:|".repeat(systems.len()));
    let mut disagree = Vec::new();
    for (q, row) in qs.iter().zip(&cells) {
        let answers: Vec<u64> = row.iter().flatten().map(|c| c.1).collect();
        if answers.windows(2).any(|w| w[0] != w[1]) {
            disagree.push(format!("{}: {answers:?}", q.what));
        }
        let times: Vec<String> = row
            .iter()
            .map(|c| c.map_or("—".to_string(), |(d, _)| format!("{:.2} ms", ms(d))))
            .collect();
        println!(
            "| {} | {} | {} |",
            q.what,
            answers.first().copied().unwrap_or(0),
            times.join(" | ")
        );
    }
    if !disagree.is_empty() {
        return Err(format!("the systems disagree: {}", disagree.join("; ")).into());
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
