//! PostgreSQL through the `postgres` crate (sync): one connection per writer,
//! prepared statements, each append one transaction (a batch is one multi-row
//! INSERT from arrays), and the expected version checked inside the
//! transaction; a unique-key violation on (stream_id, version) is a conflict.
//! [`PgInsertConn`] is PostgreSQL's best case for the write workloads: no
//! `SELECT` and no explicit transaction, a single `INSERT` per append with the
//! version the writer already knows, relying on the unique key alone (what
//! pgbench's insert-only scripts measure).

use std::hint::black_box;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use postgres::error::SqlState;
use postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use super::{AppendError, Conn, Expect, Res, Row};
use crate::event::{Ev, Layout, ev, stream_name};

/// The schema of issue 7, plus a `tags` column (a JSON array; no workload filters on it).
/// The index on type carries the position as a second column, so that a filtered
/// read walks it in log order (SQLite's index on type holds the rowid the same way).
pub fn schema(table: &str) -> String {
    let ix = table.replace('.', "_");
    format!(
        "CREATE TABLE {table} (
            global_position bigserial PRIMARY KEY,
            stream_id text NOT NULL,
            version bigint NOT NULL,
            event_id uuid NOT NULL,
            type text NOT NULL,
            data jsonb NOT NULL,
            metadata jsonb NOT NULL,
            tags jsonb NOT NULL,
            created timestamptz NOT NULL DEFAULT now(),
            UNIQUE (stream_id, version)
        );
        CREATE INDEX {ix}_type ON {table} (type, global_position);
        CREATE INDEX {ix}_created ON {table} (created);"
    )
}

/// Connects to the server.
pub fn connect(url: &str) -> Res<Client> {
    Ok(Client::connect(url, NoTls)?)
}

/// Creates the two schemas (`rd` for the read data set, `wr` for the write workloads), dropping old ones.
pub fn setup(url: &str) -> Res<()> {
    let mut c = connect(url)?;
    c.batch_execute(
        "DROP SCHEMA IF EXISTS rd CASCADE; DROP SCHEMA IF EXISTS wr CASCADE; CREATE SCHEMA rd; CREATE SCHEMA wr;",
    )?;
    c.batch_execute(&schema("rd.events"))?;
    c.batch_execute(&schema("wr.events"))?;
    c.batch_execute(&schema(INSERT_TABLE))?;
    Ok(())
}

/// Server version and the durability settings; refuses to go on if they are weaker than annal's.
pub fn check_settings(url: &str) -> Res<(String, Vec<(String, String)>)> {
    let mut c = connect(url)?;
    let version: String = c.query_one("SELECT version()", &[])?.get(0);
    let mut settings = Vec::new();
    for name in [
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_sync_method",
        "shared_buffers",
        "max_wal_size",
        "max_connections",
        "commit_delay",
        "wal_level",
    ] {
        let v: String = c.query_one(&format!("SHOW {name}"), &[])?.get(0);
        settings.push((name.to_string(), v));
    }
    let get = |n: &str| settings.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    if get("fsync") != Some("on") || get("synchronous_commit") != Some("on") {
        return Err(format!(
            "PostgreSQL runs with fsync={:?}, synchronous_commit={:?}: weaker than annal's Durability::Always",
            get("fsync"),
            get("synchronous_commit")
        )
        .into());
    }
    Ok((version, settings))
}

/// The table of the INSERT-only writers ([`PgInsertConn`]), apart from the
/// others' so that neither numbers its events past the other's.
pub const INSERT_TABLE: &str = "wr.events_insert";

/// Empties a write workload's table (`wr.events` or [`INSERT_TABLE`]).
pub fn truncate_writes(url: &str, table: &str) -> Res<()> {
    connect(url)?.batch_execute(&format!("TRUNCATE {table} RESTART IDENTITY"))?;
    Ok(())
}

/// Where a loaded table's bytes are: heap and TOAST (`pg_table_size`), its
/// indexes (`pg_indexes_size`), and the WAL files the server keeps
/// (`pg_ls_waldir`, which needs a superuser or `pg_monitor`).
pub struct Parts {
    pub table: u64,
    pub indexes: u64,
    pub wal_kept: Option<u64>,
}

/// [`Parts`] of `table`.
pub fn table_parts(url: &str, table: &str) -> Res<Parts> {
    let mut c = connect(url)?;
    let r = c.query_one(
        "SELECT pg_table_size($1::text::regclass), pg_indexes_size($1::text::regclass)",
        &[&table],
    )?;
    let wal_kept: Option<i64> = c
        .query_one("SELECT sum(size)::bigint FROM pg_ls_waldir()", &[])
        .ok()
        .and_then(|r| r.get(0));
    Ok(Parts {
        table: r.get::<_, i64>(0) as u64,
        indexes: r.get::<_, i64>(1) as u64,
        wal_kept: wal_kept.map(|w| w as u64),
    })
}

/// The server's current WAL position, in bytes (`pg_current_wal_lsn`).
pub fn wal_position(url: &str) -> Res<u64> {
    let mut c = connect(url)?;
    let n: i64 = c
        .query_one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint", &[])?
        .get(0);
    Ok(n as u64)
}

/// `pg_total_relation_size` of a table (heap, TOAST and indexes; not the WAL).
pub fn table_size(url: &str, table: &str) -> Res<u64> {
    let mut c = connect(url)?;
    let n: i64 = c
        .query_one("SELECT pg_total_relation_size($1::text::regclass)", &[&table])?
        .get(0);
    Ok(n as u64)
}

struct Stmts {
    max: Statement,
    insert_one: Statement,
    insert_many: Statement,
    read_stream: Statement,
    page: Statement,
    page_type: Statement,
    last: Statement,
}

pub struct PgConn {
    client: Client,
    st: Stmts,
}

const COLUMNS: &str = "global_position, version, event_id, type, data::text, metadata::text, tags::text, created";

impl PgConn {
    /// Connects and prepares every statement on `table`.
    pub fn open(url: &str, table: &str) -> Res<Self> {
        let mut client = connect(url)?;
        let st = Stmts {
            max: client.prepare(&format!("SELECT max(version) FROM {table} WHERE stream_id = $1"))?,
            insert_one: client.prepare(&insert_one_sql(table))?,
            insert_many: client.prepare(&insert_many_sql(table))?,
            read_stream: client.prepare(&format!(
                "SELECT {COLUMNS} FROM {table} WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"
            ))?,
            page: client.prepare(&format!(
                "SELECT {COLUMNS} FROM {table} WHERE global_position > $1 ORDER BY global_position LIMIT $2"
            ))?,
            page_type: client.prepare(&format!(
                "SELECT {COLUMNS} FROM {table} WHERE type = $1 AND global_position > $2
                 ORDER BY global_position LIMIT $3"
            ))?,
            last: client.prepare(&format!(
                "SELECT {COLUMNS} FROM {table} ORDER BY global_position DESC LIMIT 1"
            ))?,
        };
        Ok(PgConn { client, st })
    }
}

fn row(r: &postgres::Row) -> Res<Row> {
    let created: SystemTime = r.try_get(7)?;
    Ok(Row {
        position: r.try_get(0)?,
        revision: r.try_get(1)?,
        id: r.try_get(2)?,
        event_type: r.try_get(3)?,
        data: r.try_get(4)?,
        metadata: r.try_get(5)?,
        tags: r.try_get(6)?,
        created_micros: created.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64),
    })
}

fn rows(rs: Vec<postgres::Row>) -> Res<Vec<Row>> {
    rs.iter().map(row).collect()
}

/// The statement that inserts one event numbered `$2`.
fn insert_one_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (stream_id, version, event_id, type, data, metadata, tags)
         VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7::text::jsonb)"
    )
}

/// The statement that inserts a batch numbered from `$2`, from arrays.
fn insert_many_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (stream_id, version, event_id, type, data, metadata, tags)
         SELECT $1, $2 + x.o - 1, x.e, x.t, x.d::jsonb, x.m::jsonb, x.g::jsonb
         FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[])
              WITH ORDINALITY AS x(e, t, d, m, g, o)"
    )
}

/// Inserts `events` into `stream` from revision `next`: one event with
/// `one`, several with `many` (one statement either way).
fn insert(
    c: &mut impl postgres::GenericClient,
    (one, many): (&Statement, &Statement),
    stream: &str,
    next: i64,
    events: &[Ev],
) -> Result<u64, postgres::Error> {
    if let [e] = events {
        c.execute(
            one,
            &[
                &stream,
                &next,
                &Uuid::new_v4(),
                &e.event_type,
                &e.data,
                &e.metadata,
                &e.tags_json,
            ],
        )
    } else {
        let ids: Vec<Uuid> = events.iter().map(|_| Uuid::new_v4()).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
        let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
        let meta: Vec<&str> = events.iter().map(|e| e.metadata.as_str()).collect();
        let tags: Vec<&str> = events.iter().map(|e| e.tags_json.as_str()).collect();
        c.execute(many, &[&stream, &next, &ids, &types, &data, &meta, &tags])
    }
}

fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl Conn for PgConn {
    fn append(&mut self, stream: &str, expected: Expect, events: &[Ev]) -> Result<(), AppendError> {
        let PgConn { client, st } = self;
        let mut tx = client.transaction()?;
        let current: Option<i64> = tx.query_one(&st.max, &[&stream])?.get(0);
        let current = current.map(|c| c as u64);
        if !expected.holds(current) {
            return Err(AppendError::Conflict); // dropping `tx` rolls back
        }
        let next = current.map_or(0, |c| c + 1) as i64;
        let inserted = insert(&mut tx, (&st.insert_one, &st.insert_many), stream, next, events);
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(AppendError::Conflict),
            Err(e) => return Err(e.into()),
        }
        match tx.commit() {
            Ok(()) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(AppendError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    fn version(&mut self, stream: &str) -> Res<Option<u64>> {
        let v: Option<i64> = self.client.query_one(&self.st.max, &[&stream])?.get(0);
        Ok(v.map(|v| v as u64))
    }

    fn read_stream(&mut self, stream: &str, limit: usize) -> Res<usize> {
        let rs = self
            .client
            .query(&self.st.read_stream, &[&stream, &0i64, &(limit as i64)])?;
        Ok(black_box(rows(rs)?).len())
    }

    fn read_page(&mut self, after: Option<u64>, limit: usize, event_type: Option<&str>) -> Res<(usize, Option<u64>)> {
        let after = after.map_or(0, |p| p as i64);
        let rs = match event_type {
            None => self.client.query(&self.st.page, &[&after, &(limit as i64)])?,
            Some(t) => self.client.query(&self.st.page_type, &[&t, &after, &(limit as i64)])?,
        };
        let rs = rows(rs)?;
        let last = rs.last().map(|r| r.position as u64);
        Ok((black_box(rs).len(), last))
    }

    fn read_last(&mut self) -> Res<Option<u64>> {
        let rs = rows(self.client.query(&self.st.last, &[])?)?;
        Ok(rs.first().map(|r| r.position as u64))
    }
}

/// PostgreSQL's best case for appends: each writer keeps the next version of
/// every stream it appends to (read once with `SELECT max(version)`), and an
/// append is one `INSERT` in autocommit, one statement for a batch; the unique
/// key on (stream_id, version) refuses a concurrent writer's duplicate, which
/// counts as a conflict and makes the writer read the version again. No
/// expected version beyond what the key enforces: a writer that knows its
/// stream (the event-sourced aggregate it just loaded) needs no more.
pub struct PgInsertConn {
    client: Client,
    max: Statement,
    insert_one: Statement,
    insert_many: Statement,
    next: std::collections::HashMap<String, i64>,
}

impl PgInsertConn {
    /// Connects and prepares its statements on `table`.
    pub fn open(url: &str, table: &str) -> Res<Self> {
        let mut client = connect(url)?;
        let max = client.prepare(&format!("SELECT max(version) FROM {table} WHERE stream_id = $1"))?;
        let insert_one = client.prepare(&insert_one_sql(table))?;
        let insert_many = client.prepare(&insert_many_sql(table))?;
        Ok(PgInsertConn {
            client,
            max,
            insert_one,
            insert_many,
            next: std::collections::HashMap::new(),
        })
    }
}

impl Conn for PgInsertConn {
    fn append(&mut self, stream: &str, expected: Expect, events: &[Ev]) -> Result<(), AppendError> {
        let next = match expected {
            Expect::NoStream => 0,
            Expect::Exact(v) => v as i64 + 1,
            Expect::Any => match self.next.get(stream) {
                Some(n) => *n,
                None => {
                    let v: Option<i64> = self.client.query_one(&self.max, &[&stream])?.get(0);
                    v.map_or(0, |v| v + 1)
                }
            },
        };
        let inserted = insert(
            &mut self.client,
            (&self.insert_one, &self.insert_many),
            stream,
            next,
            events,
        );
        match inserted {
            Ok(_) => {
                self.next.insert(stream.to_string(), next + events.len() as i64);
                Ok(())
            }
            Err(e) if is_unique_violation(&e) => {
                self.next.remove(stream);
                Err(AppendError::Conflict)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn version(&mut self, stream: &str) -> Res<Option<u64>> {
        let v: Option<i64> = self.client.query_one(&self.max, &[&stream])?.get(0);
        Ok(v.map(|v| v as u64))
    }

    fn read_stream(&mut self, _: &str, _: usize) -> Res<usize> {
        Err("the INSERT-only connection takes part in the write workloads only".into())
    }

    fn read_page(&mut self, _: Option<u64>, _: usize, _: Option<&str>) -> Res<(usize, Option<u64>)> {
        Err("the INSERT-only connection takes part in the write workloads only".into())
    }

    fn read_last(&mut self) -> Res<Option<u64>> {
        Err("the INSERT-only connection takes part in the write workloads only".into())
    }
}

/// Connects and reads the last event of `table` with one unprepared query (what opening means for a server).
pub fn connect_and_read_last(url: &str, table: &str) -> Res<(Client, Option<u64>)> {
    let mut client = connect(url)?;
    let rs = client.query(
        &format!("SELECT {COLUMNS} FROM {table} ORDER BY global_position DESC LIMIT 1"),
        &[],
    )?;
    let last = rows(rs)?.first().map(|r| r.position as u64);
    Ok((client, last))
}

/// Escapes a value for COPY's text format.
fn copy_escape(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Loads the read data set with `COPY ... FROM STDIN`, one COPY (one transaction)
/// per `per_copy` events, then runs `VACUUM (ANALYZE)` so that the reads find
/// statistics and a visibility map, and autovacuum has nothing left to do.
pub fn load(url: &str, layout: &Layout, per_copy: u64) -> Res<()> {
    let mut c = connect(url)?;
    let mut seq = 0u64;
    let mut chunks = layout.chunks().peekable();
    let mut buf = Vec::with_capacity(1 << 20);
    while chunks.peek().is_some() {
        let mut w =
            c.copy_in("COPY rd.events (stream_id, version, event_id, type, data, metadata, tags) FROM STDIN")?;
        let mut in_copy = 0;
        while in_copy < per_copy {
            let Some((s, first, n)) = chunks.next() else { break };
            let name = stream_name(s);
            for i in 0..n {
                let e = ev(seq);
                seq += 1;
                copy_escape(&mut buf, &name);
                write!(buf, "\t{}\t{}\t", first + i, Uuid::new_v4())?;
                copy_escape(&mut buf, e.event_type);
                buf.push(b'\t');
                copy_escape(&mut buf, &e.data);
                buf.push(b'\t');
                copy_escape(&mut buf, &e.metadata);
                buf.push(b'\t');
                copy_escape(&mut buf, &e.tags_json);
                buf.push(b'\n');
            }
            in_copy += n;
            if buf.len() > (1 << 20) {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        w.write_all(&buf)?;
        buf.clear();
        w.finish()?;
    }
    c.batch_execute("VACUUM (ANALYZE) rd.events")?;
    Ok(())
}
