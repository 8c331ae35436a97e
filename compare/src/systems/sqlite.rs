//! SQLite through rusqlite (bundled): WAL mode with `synchronous=FULL`, one
//! connection per writer with a busy timeout, `BEGIN IMMEDIATE` transactions,
//! prepared (cached) statements, and the expected version checked inside the
//! transaction.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use super::{AppendError, Conn, Expect, Res, Row, now_micros};
use crate::event::{Ev, Layout, ev, stream_name};

/// What a careful developer sets on every connection (besides WAL, which is a property of the file).
pub const PRAGMAS: &[(&str, &str)] = &[
    ("synchronous", "FULL"),
    // 256 MiB of page cache per connection (the default is 2 MiB).
    ("cache_size", "-262144"),
    // Reads through a memory map (up to SQLite's default cap of about 2 GiB) instead of read() calls.
    ("mmap_size", "2147418112"),
    ("temp_store", "MEMORY"),
];

/// How long a writer waits for the write lock before `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    stream   TEXT    NOT NULL,
    revision INTEGER NOT NULL,
    event_id BLOB    NOT NULL,
    type     TEXT    NOT NULL,
    data     TEXT    NOT NULL,
    metadata TEXT    NOT NULL,
    tags     TEXT    NOT NULL,
    created  INTEGER NOT NULL,
    UNIQUE (stream, revision)
);
CREATE INDEX IF NOT EXISTS events_type ON events (type);
";

const MAX_REVISION: &str = "SELECT max(revision) FROM events WHERE stream = ?1";
const INSERT: &str = "INSERT INTO events (stream, revision, event_id, type, data, metadata, tags, created)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const READ_STREAM: &str = "SELECT position, revision, event_id, type, data, metadata, tags, created
     FROM events WHERE stream = ?1 AND revision >= ?2 ORDER BY revision LIMIT ?3";
const PAGE: &str = "SELECT position, revision, event_id, type, data, metadata, tags, created
     FROM events WHERE position > ?1 ORDER BY position LIMIT ?2";
const PAGE_TYPE: &str = "SELECT position, revision, event_id, type, data, metadata, tags, created
     FROM events WHERE type = ?1 AND position > ?2 ORDER BY position LIMIT ?3";
const LAST: &str = "SELECT position, revision, event_id, type, data, metadata, tags, created
     FROM events ORDER BY position DESC LIMIT 1";

/// Opens a connection with the pragmas above; creates the schema if `create`.
pub fn connect(path: &Path, create: bool) -> Res<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("SQLite refused WAL mode (journal_mode is {mode})").into());
    }
    for (name, value) in PRAGMAS {
        conn.execute_batch(&format!("PRAGMA {name} = {value}"))?;
    }
    if create {
        conn.execute_batch(SCHEMA)?;
    }
    Ok(conn)
}

/// Checks that the durability settings are what the comparison says they are.
pub fn check_settings(conn: &Connection) -> Res<String> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if sync != 2 {
        return Err(format!("SQLite synchronous is {sync}, not FULL (2)").into());
    }
    Ok(format!("journal_mode={mode}, synchronous=FULL"))
}

pub struct SqliteConn {
    conn: Connection,
    /// Times a writer got `SQLITE_BUSY` despite the busy timeout and started its transaction again.
    pub busy_retries: u64,
}

impl SqliteConn {
    pub fn open(path: &Path) -> Res<Self> {
        Ok(SqliteConn {
            conn: connect(path, false)?,
            busy_retries: 0,
        })
    }

    fn try_append(&mut self, stream: &str, expected: Expect, events: &[Ev]) -> Result<(), AppendError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<i64> = tx.prepare_cached(MAX_REVISION)?.query_row([stream], |r| r.get(0))?;
        let current = current.map(|c| c as u64);
        if !expected.holds(current) {
            return Err(AppendError::Conflict); // dropping `tx` rolls back
        }
        let next = current.map_or(0, |c| c + 1) as i64;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            let created = now_micros();
            for (i, e) in events.iter().enumerate() {
                insert.execute(params![
                    stream,
                    next + i as i64,
                    uuid::Uuid::new_v4().as_bytes(),
                    e.event_type,
                    e.data,
                    e.metadata,
                    e.tags_json,
                    created
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn is_busy(e: &AppendError) -> bool {
    matches!(e, AppendError::Failed(b) if b.downcast_ref::<rusqlite::Error>().and_then(|e| e.sqlite_error_code())
        .is_some_and(|c| matches!(c, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)))
}

fn is_unique_violation(e: &AppendError) -> bool {
    matches!(e, AppendError::Failed(b) if b.downcast_ref::<rusqlite::Error>().and_then(|e| e.sqlite_error())
        .is_some_and(|e| e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE))
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let id: [u8; 16] = r.get(2)?;
    Ok(Row {
        position: r.get(0)?,
        revision: r.get(1)?,
        id: uuid::Uuid::from_bytes(id),
        event_type: r.get(3)?,
        data: r.get(4)?,
        metadata: r.get(5)?,
        tags: r.get(6)?,
        created_micros: r.get(7)?,
    })
}

impl Conn for SqliteConn {
    fn append(&mut self, stream: &str, expected: Expect, events: &[Ev]) -> Result<(), AppendError> {
        loop {
            match self.try_append(stream, expected, events) {
                Err(e) if is_busy(&e) => self.busy_retries += 1,
                Err(e) if is_unique_violation(&e) => return Err(AppendError::Conflict),
                other => return other,
            }
        }
    }

    fn version(&mut self, stream: &str) -> Res<Option<u64>> {
        let v: Option<i64> = self
            .conn
            .prepare_cached(MAX_REVISION)?
            .query_row([stream], |r| r.get(0))?;
        Ok(v.map(|v| v as u64))
    }

    fn read_stream(&mut self, stream: &str, limit: usize) -> Res<usize> {
        let mut st = self.conn.prepare_cached(READ_STREAM)?;
        let rows: Vec<Row> = st
            .query_map(params![stream, 0i64, limit as i64], row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(black_box(rows).len())
    }

    fn read_page(&mut self, after: Option<u64>, limit: usize, event_type: Option<&str>) -> Res<(usize, Option<u64>)> {
        let after = after.map_or(-1, |p| p as i64);
        let rows: Vec<Row> = match event_type {
            None => self
                .conn
                .prepare_cached(PAGE)?
                .query_map(params![after, limit as i64], row)?
                .collect::<rusqlite::Result<_>>()?,
            Some(t) => self
                .conn
                .prepare_cached(PAGE_TYPE)?
                .query_map(params![t, after, limit as i64], row)?
                .collect::<rusqlite::Result<_>>()?,
        };
        let last = rows.last().map(|r| r.position as u64);
        Ok((black_box(rows).len(), last))
    }

    fn read_last(&mut self) -> Res<Option<u64>> {
        let r = self.conn.prepare_cached(LAST)?.query_row([], row).optional()?;
        Ok(r.map(|r| r.position as u64))
    }

    fn busy_retries(&self) -> u64 {
        self.busy_retries
    }
}

/// Loads the read data set in transactions of `per_tx` events (revisions come
/// from the loader, so no per-append check), then checkpoints the WAL into the
/// database file and runs ANALYZE.
pub fn load(path: &Path, layout: &Layout, per_tx: u64) -> Res<()> {
    let mut conn = connect(path, true)?;
    let mut seq = 0u64;
    let mut chunks = layout.chunks().peekable();
    while chunks.peek().is_some() {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            let created = now_micros();
            let mut in_tx = 0;
            while in_tx < per_tx {
                let Some((s, first, n)) = chunks.next() else { break };
                let name = stream_name(s);
                for i in 0..n {
                    let e = ev(seq);
                    seq += 1;
                    insert.execute(params![
                        name,
                        (first + i) as i64,
                        uuid::Uuid::new_v4().as_bytes(),
                        e.event_type,
                        e.data,
                        e.metadata,
                        e.tags_json,
                        created
                    ])?;
                }
                in_tx += n;
            }
        }
        tx.commit()?;
    }
    conn.execute_batch("ANALYZE")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Bytes of the database file and its WAL and shared-memory files.
/// The database's bytes by part, from the `dbstat` table: the table's pages,
/// its indexes' pages (the unique key's among them), and the rest (the
/// schema, free pages, the WAL and its index).
pub fn parts(path: &Path) -> Res<[u64; 3]> {
    let c = Connection::open(path)?;
    let mut table = 0u64;
    let mut indexes = 0u64;
    let mut st = c.prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (name, bytes) = row?;
        match name.as_str() {
            "events" => table += bytes as u64,
            n if n.starts_with("sqlite_") && !n.starts_with("sqlite_autoindex") => {}
            _ => indexes += bytes as u64,
        }
    }
    let total = size_on_disk(path);
    Ok([table, indexes, total.saturating_sub(table + indexes)])
}

pub fn size_on_disk(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(p).ok().map(|m| m.len())
        })
        .sum()
}
