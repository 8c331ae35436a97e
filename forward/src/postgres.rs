//! The PostgreSQL target (`postgres://user:password@host:port/db`), through
//! `tokio-postgres`.
//!
//! Events become rows of a table (default `annal_events` in schema `public`,
//! created if missing, with indexes on `(stream_id, stream_version)` and
//! `event_type`). Each batch is one transaction: the rows are copied (binary
//! COPY) straight into the table under a savepoint (or, if some are there
//! already, into a session-local staging table and inserted from it with
//! conflicts on `event_id` ignored), and the forwarder's row of
//! `annal_forward_checkpoints` moves to the batch's end, so the table and the
//! checkpoint never disagree and delivery is exactly once across crashes on
//! either side. The row of an event that names a subject carries it in
//! `subject` (NULL if none); an event whose subject was shredded at the
//! source before it was delivered arrives with `erased` true and NULL data
//! and metadata. A table made by an earlier version, without these two
//! columns, gets them (`ALTER TABLE … ADD COLUMN IF NOT EXISTS`) when the
//! target connects; a user who may not alter the table gets an error that
//! names the statements to run. URL parameters: `table`, `schema`, `source` (this node's name
//! in the `source` column; default the host name), `timeout_ms`.
//!
//! This module owns the SQL; it must never decide which events go.

use std::net::SocketAddr;
use std::time::Duration;

use annal::{Batch, ContentType, ForwardTarget, RecordedEvent, TargetError};
use bytes::{BufMut, BytesMut};
use futures_util::pin_mut;
use postgres_types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Transaction};

use crate::error::ConfigError;
use crate::url::TargetUrl;

/// The columns of the events table, in the order they are written.
const COLUMNS: &str = "global_position, stream_id, stream_version, event_id, event_type, data, data_bytes, \
                       metadata, metadata_bytes, tags, created_at, source, subject, erased";

/// Forwards to a PostgreSQL table.
pub struct PostgresTarget {
    rt: tokio::runtime::Runtime,
    config: tokio_postgres::Config,
    described: String,
    /// `"schema"."table"`, quoted.
    table: String,
    /// `"schema".annal_forward_checkpoints`.
    checkpoints: String,
    /// The schema, unquoted (created if missing and not `public`).
    schema: String,
    /// The table's name, unquoted (for index names).
    table_name: String,
    source: String,
    timeout: Duration,
    client: Option<Client>,
}

impl std::fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("target", &self.described)
            .finish_non_exhaustive()
    }
}

fn check_identifier(t: &TargetUrl, what: &str, s: &str) -> Result<(), ConfigError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(t.bad(format!(
            "{what} {s:?} must be 1-63 ASCII letters, digits or _, not starting with a digit"
        )))
    }
}

impl PostgresTarget {
    /// A target for the URL; connects on first use.
    pub fn new(t: &TargetUrl) -> Result<PostgresTarget, ConfigError> {
        let table = t.param("table").unwrap_or_else(|| "annal_events".into());
        let schema = t.param("schema").unwrap_or_else(|| "public".into());
        check_identifier(t, "table", &table)?;
        check_identifier(t, "schema", &schema)?;
        let source = t.param("source").unwrap_or_else(crate::node::node_name);
        let timeout = t.millis("timeout_ms", Duration::from_secs(30))?;
        // The connection string without this target's own parameters.
        let mut conn = t.url.clone();
        let kept: Vec<(String, String)> = t
            .url
            .query_pairs()
            .filter(|(k, _)| !["table", "schema", "source", "timeout_ms"].contains(&k.as_ref()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        conn.set_query(None);
        if !kept.is_empty() {
            conn.query_pairs_mut().extend_pairs(kept);
        }
        let mut config: tokio_postgres::Config = conn
            .as_str()
            .parse()
            .map_err(|e: tokio_postgres::Error| t.bad(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("annal-forward");
        Ok(PostgresTarget {
            rt: crate::node::runtime()?,
            config,
            described: format!("{t} (table {schema}.{table})"),
            table: format!("\"{schema}\".\"{table}\""),
            checkpoints: format!("\"{schema}\".annal_forward_checkpoints"),
            schema,
            table_name: table,
            source,
            timeout,
            client: None,
        })
    }

    /// The connected client, connecting and creating the tables first if needed.
    fn client(&mut self) -> Result<&Client, TargetError> {
        if self.client.is_none() {
            let config = self.config.clone();
            let setup = self.setup_sql();
            let upgrade = self.upgrade_sql();
            let stage = self.stage_sql();
            let (schema, table) = (self.schema.clone(), self.table_name.clone());
            let objects = self.objects();
            let timeout = self.timeout;
            let client =
                self.rt.block_on(async move {
                    let client = tokio::time::timeout(timeout, open(&config))
                        .await
                        .map_err(|_| TargetError::Unavailable("PostgreSQL: no answer to the connection".into()))??;
                    let prepare =
                        async {
                            // Made only when one is missing: `CREATE … IF NOT EXISTS`
                            // of an index needs the table's owner even when the index
                            // exists, and a user who may only insert must be able to
                            // forward into tables their owner made.
                            let made = client
                                .query_one(
                                    "SELECT bool_and(to_regclass(o) IS NOT NULL) FROM unnest($1::text[]) AS o",
                                    &[&objects],
                                )
                                .await
                                .map_err(classify)?
                                .get::<_, Option<bool>>(0)
                                .unwrap_or(false);
                            if !made {
                                client.batch_execute(&locking(&setup)).await.map_err(classify)?;
                            }
                            // A table made by an earlier version lacks the columns
                            // `subject` and `erased`: they are added, which needs the
                            // right to alter it, only when missing.
                            let found = client
                                .query_one(
                                    "SELECT count(*) FROM information_schema.columns \
                             WHERE table_schema = $1 AND table_name = $2 AND column_name IN ('subject', 'erased')",
                                    &[&schema, &table],
                                )
                                .await
                                .map_err(classify)?
                                .get::<_, i64>(0);
                            if found < 2 {
                                client.batch_execute(&locking(&upgrade)).await.map_err(|e| match classify(e) {
                            TargetError::Refused(r) => TargetError::Refused(format!(
                                "{r} (the table lacks the columns subject and erased that this version writes; \
                                 its owner can add them: {upgrade})"
                            )),
                            other => other,
                        })?;
                            }
                            client.batch_execute(&stage).await.map_err(classify)
                        };
                    tokio::time::timeout(timeout, prepare)
                        .await
                        .map_err(|_| TargetError::Unavailable("timed out creating the tables".into()))??;
                    Ok::<Client, TargetError>(client)
                })?;
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| TargetError::Unavailable("not connected".into()))
    }

    fn setup_sql(&self) -> String {
        let schema = if self.schema == "public" {
            String::new()
        } else {
            format!("CREATE SCHEMA IF NOT EXISTS \"{}\";", self.schema)
        };
        format!(
            "{schema}
             CREATE TABLE IF NOT EXISTS {table} (
                 global_position bigint NOT NULL,
                 stream_id text NOT NULL,
                 stream_version bigint NOT NULL,
                 event_id uuid NOT NULL UNIQUE,
                 event_type text NOT NULL,
                 data jsonb,
                 data_bytes bytea,
                 metadata jsonb,
                 metadata_bytes bytea,
                 tags text[] NOT NULL,
                 created_at timestamptz NOT NULL,
                 source text NOT NULL,
                 subject text,
                 erased boolean NOT NULL DEFAULT false);
             CREATE INDEX IF NOT EXISTS \"{name}_stream_idx\" ON {table} (stream_id, stream_version);
             CREATE INDEX IF NOT EXISTS \"{name}_type_idx\" ON {table} (event_type);
             CREATE TABLE IF NOT EXISTS {checkpoints} (
                 source text NOT NULL,
                 name text NOT NULL,
                 position bigint NOT NULL,
                 updated_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (source, name));",
            table = self.table,
            name = self.table_name,
            checkpoints = self.checkpoints,
        )
    }

    /// The tables and indexes [`Self::setup_sql`] makes, by qualified name.
    fn objects(&self) -> Vec<String> {
        let schema = &self.schema;
        let name = &self.table_name;
        vec![
            self.table.clone(),
            format!("\"{schema}\".\"{name}_stream_idx\""),
            format!("\"{schema}\".\"{name}_type_idx\""),
            self.checkpoints.clone(),
        ]
    }

    /// The statements that add the columns a table made by an earlier
    /// version lacks (`subject`, `erased`).
    fn upgrade_sql(&self) -> String {
        format!(
            "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS subject text, \
             ADD COLUMN IF NOT EXISTS erased boolean NOT NULL DEFAULT false",
            table = self.table
        )
    }

    /// The session's staging table (after the events table has every column).
    fn stage_sql(&self) -> String {
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS annal_stage AS SELECT {COLUMNS} FROM {table} WITH NO DATA;
             ALTER TABLE annal_stage SET (autovacuum_enabled = false);",
            table = self.table
        )
    }

    /// Runs `f` on the client within the timeout; any failure drops the
    /// connection, so the next call starts afresh (PostgreSQL rolls back an
    /// open transaction of a closed connection).
    fn with_client<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, PgFailure> {
        self.client().map_err(PgFailure::Target)?;
        let timeout = self.timeout;
        let Some(mut client) = self.client.take() else {
            return Err(PgFailure::Target(TargetError::Unavailable("not connected".into())));
        };
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, f(&mut client)).await });
        match result {
            Ok(Ok(v)) => {
                self.client = Some(client);
                Ok(v)
            }
            Ok(Err(e)) => Err(PgFailure::Db(e)),
            Err(_) => Err(PgFailure::Target(TargetError::Unavailable(format!(
                "no answer within {} ms",
                timeout.as_millis()
            )))),
        }
    }

    /// The events' rows and the checkpoint, in one transaction. The rows are
    /// copied straight into the table under a savepoint; only if one of them
    /// is there already (a unique violation on `event_id`: events delivered
    /// before the checkpoint was lost, or by another forwarder) does it roll
    /// back to the savepoint and take the slower path, through the staging
    /// table and `INSERT … ON CONFLICT DO NOTHING`.
    fn write(&mut self, events: &[RecordedEvent], forwarder: &str, next: u64, commit: bool) -> Result<(), PgFailure> {
        let rows: Vec<Row> = events.iter().map(Row::of).collect::<Result<_, _>>()?;
        let next = i64::try_from(next).map_err(|_| PgFailure::Target(too_large("a position")))?;
        let table = self.table.clone();
        let checkpoints = self.checkpoints.clone();
        let source = self.source.clone();
        let forwarder = forwarder.to_string();
        self.with_client(async move |client| {
            let mut tx = client.transaction().await?;
            if !rows.is_empty() {
                let direct = tx.savepoint("annal_direct").await?;
                match copy_rows(&direct, &table, &rows, &source).await {
                    Ok(()) => direct.commit().await?,
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        direct.rollback().await?;
                        copy_rows(&tx, "annal_stage", &rows, &source).await?;
                        tx.batch_execute(&format!(
                            "INSERT INTO {table} ({COLUMNS}) SELECT {COLUMNS} FROM annal_stage \
                             ORDER BY global_position ON CONFLICT (event_id) DO NOTHING; TRUNCATE annal_stage"
                        ))
                        .await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            tx.execute(
                &format!(
                    "INSERT INTO {checkpoints} (source, name, position) VALUES ($1, $2, $3) \
                     ON CONFLICT (source, name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()"
                ),
                &[&source, &forwarder, &next],
            )
            .await?;
            if commit { tx.commit().await } else { tx.rollback().await }
        })
    }

    /// The index of the first event PostgreSQL refuses on its own, trying
    /// each in a transaction that is rolled back.
    fn find_poison(&mut self, batch: &Batch<'_>) -> Option<usize> {
        (0..batch.events.len()).find(|&i| {
            matches!(
                self.write(&batch.events[i..=i], batch.forwarder, batch.next_position, false),
                Err(PgFailure::Db(e)) if is_data_error(&e)
            )
        })
    }
}

/// `statements` in one transaction that waits at most [`LOCK_WAIT`] for a
/// lock: `ALTER TABLE` and `CREATE INDEX` on a table others use wait for
/// their reads and writes to end, and every later one of those queues behind
/// them. Past it they fail with 55P03 (the target is unavailable, and the
/// forwarder tries again later).
fn locking(statements: &str) -> String {
    format!("BEGIN; SET LOCAL lock_timeout = '{LOCK_WAIT}'; {statements}; COMMIT;")
}

/// How long the setup's statements wait for a lock on a table.
const LOCK_WAIT: &str = "5s";

/// A failure of one call: from the database (classified by the caller) or already a target error.
enum PgFailure {
    Db(tokio_postgres::Error),
    Target(TargetError),
}

fn too_large(what: &str) -> TargetError {
    TargetError::Rejected {
        index: 0,
        reason: format!("{what} does not fit PostgreSQL's bigint"),
    }
}

/// An error about the data itself (class 22, or a check or not-null violation): the event is poison.
fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.code().code().starts_with("22") || ["23502", "23514"].contains(&d.code().code()))
}

/// A database or connection error as a target error: credentials and
/// permissions are refusals (they need someone to act), the rest is retried.
/// Connects and starts the connection's task.
///
/// The TCP socket is opened here, not by `tokio-postgres`, so that one the
/// kernel connected to itself is refused (see [`crate::socket`]): the
/// client would otherwise wait for ever for the answer to its startup
/// message, holding the port of the server that is down. Each host (or
/// `hostaddr`) is tried in turn, with `connect_timeout` for each; a Unix
/// socket, `target_session_attrs` other than `any` (which needs the
/// client's own check of each server) or `load_balance_hosts=random` is left
/// to `tokio-postgres`. A server that answers and refuses the startup (say,
/// "the database system is starting up") passes to the next address; the
/// last refusal is the error. The socket takes `keepalives`,
/// `keepalives_idle`, `keepalives_interval`, `keepalives_retries` and
/// `tcp_user_timeout` as `tokio-postgres` would.
async fn open(config: &tokio_postgres::Config) -> Result<Client, TargetError> {
    let count = config.get_hosts().len().max(config.get_hostaddrs().len());
    let own = config.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::Any
        && config.get_load_balance_hosts() == tokio_postgres::config::LoadBalanceHosts::Disable
        && config.get_hosts().iter().all(|h| matches!(h, Host::Tcp(_)))
        && count > 0
        // Settings `tokio-postgres` refuses (a port list that fits no host
        // list) are left to it, so that they are refused as before.
        && (config.get_ports().len() <= 1 || config.get_ports().len() == count);
    if !own {
        let (client, connection) = config.connect(NoTls).await.map_err(classify)?;
        tokio::spawn(async move {
            // The connection's end is seen by the client's next call.
            let _ = connection.await;
        });
        return Ok(client);
    }
    let ports = config.get_ports();
    let addrs = config.get_hostaddrs();
    let hosts = config.get_hosts();
    let limit = config.get_connect_timeout().copied().unwrap_or(Duration::from_secs(10));
    let liveness = crate::socket::Liveness {
        keepalive: config.get_keepalives(),
        idle: Some(config.get_keepalives_idle()),
        interval: config.get_keepalives_interval(),
        retries: config.get_keepalives_retries(),
        user_timeout: config.get_tcp_user_timeout().copied(),
    };
    let mut failures = Vec::new();
    // The last server that answered and refused the startup (as
    // `tokio-postgres` does, the next address is tried after it).
    let mut refused: Option<TargetError> = None;
    for i in 0..count {
        let port = match ports {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        };
        let found: Vec<SocketAddr> = match (addrs.get(i), hosts.get(i)) {
            (Some(ip), _) => vec![SocketAddr::new(*ip, port)],
            (None, Some(Host::Tcp(name))) => match tokio::net::lookup_host((name.as_str(), port)).await {
                Ok(found) => found.collect(),
                Err(e) => {
                    failures.push(format!("{name}:{port}: {e}"));
                    continue;
                }
            },
            _ => continue,
        };
        for addr in found {
            let stream = match tokio::time::timeout(limit, crate::socket::connect(addr, &liveness)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    failures.push(format!("{addr}: {e}"));
                    continue;
                }
                Err(_) => {
                    failures.push(format!("{addr}: no answer in {} ms", limit.as_millis()));
                    continue;
                }
            };
            match config.connect_raw(stream, NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    return Ok(client);
                }
                Err(e) => refused = Some(classify(e)),
            }
        }
    }
    Err(refused.unwrap_or_else(|| {
        TargetError::Unavailable(format!("PostgreSQL: could not connect ({})", failures.join("; ")))
    }))
}

fn classify(e: tokio_postgres::Error) -> TargetError {
    match e.as_db_error() {
        Some(d) => {
            let code = d.code().code();
            let text = format!("PostgreSQL error {code}: {}", d.message());
            // 28: invalid authorization; 42501: insufficient privilege; 3D000: no such database;
            // 42P01/42703: a table or column that does not exist (a table made by someone else).
            if code.starts_with("28") || ["42501", "3D000", "42P01", "42703", "42804"].contains(&code) {
                TargetError::Refused(text)
            } else {
                TargetError::Unavailable(text)
            }
        }
        None => TargetError::Unavailable(format!("PostgreSQL: {e}")),
    }
}

/// One event's row.
struct Row<'a> {
    event: &'a RecordedEvent,
    position: i64,
    revision: i64,
    data: Option<RawJson<'a>>,
    data_bytes: Option<&'a [u8]>,
    metadata: Option<RawJson<'a>>,
    metadata_bytes: Option<&'a [u8]>,
    subject: Option<&'a str>,
    erased: bool,
}

impl<'a> Row<'a> {
    fn of(e: &'a RecordedEvent) -> Result<Row<'a>, PgFailure> {
        let position = i64::try_from(e.position).map_err(|_| PgFailure::Target(too_large("a position")))?;
        let revision = i64::try_from(e.revision).map_err(|_| PgFailure::Target(too_large("a revision")))?;
        // An erased event's empty data and metadata are not its content: NULL.
        let (data, data_bytes) = match e.content_type {
            _ if e.is_erased() => (None, None),
            ContentType::Json if jsonb_accepts(&e.data) => (Some(RawJson(&e.data)), None),
            _ if e.data.is_empty() => (None, None),
            _ => (None, Some(&e.data[..])),
        };
        let (metadata, metadata_bytes) = if e.metadata.is_empty() || e.is_erased() {
            (None, None)
        } else if jsonb_accepts(&e.metadata) {
            (Some(RawJson(&e.metadata)), None)
        } else {
            (None, Some(&e.metadata[..]))
        };
        Ok(Row {
            event: e,
            position,
            revision,
            data,
            data_bytes,
            metadata,
            metadata_bytes,
            subject: e.subject(),
            erased: e.is_erased(),
        })
    }
}

/// Copies the rows (binary COPY) into `table`, within the transaction `tx`.
async fn copy_rows(
    tx: &Transaction<'_>,
    table: &str,
    rows: &[Row<'_>],
    source: &str,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx
        .copy_in(&format!("COPY {table} ({COLUMNS}) FROM STDIN (FORMAT binary)"))
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::TEXT,
            Type::INT8,
            Type::UUID,
            Type::TEXT,
            Type::JSONB,
            Type::BYTEA,
            Type::JSONB,
            Type::BYTEA,
            Type::TEXT_ARRAY,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT,
            Type::BOOL,
        ],
    );
    pin_mut!(writer);
    for r in rows {
        writer
            .as_mut()
            .write(&[
                &r.position,
                &r.event.stream,
                &r.revision,
                &r.event.id,
                &r.event.event_type,
                &r.data,
                &r.data_bytes,
                &r.metadata,
                &r.metadata_bytes,
                &r.event.tags,
                &r.event.timestamp(),
                &source,
                &r.subject,
                &r.erased,
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// True if PostgreSQL's jsonb takes these bytes: valid JSON without a `\u0000` escape.
fn jsonb_accepts(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
        && !bytes.windows(6).any(|w| w == b"\\u0000")
}

/// JSON text sent as jsonb without parsing it again.
#[derive(Debug)]
struct RawJson<'a>(&'a [u8]);

impl ToSql for RawJson<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            // The jsonb binary format: version 1, then the text.
            out.put_u8(1);
        }
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

impl ForwardTarget for PostgresTarget {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn load_checkpoint(&mut self, forwarder: &str) -> Result<Option<u64>, TargetError> {
        let checkpoints = self.checkpoints.clone();
        let source = self.source.clone();
        let forwarder = forwarder.to_string();
        let found = self.with_client(async move |client| {
            client
                .query_opt(
                    &format!("SELECT position FROM {checkpoints} WHERE source = $1 AND name = $2"),
                    &[&source, &forwarder],
                )
                .await
        });
        match found {
            Ok(row) => Ok(row.map(|r| r.get::<_, i64>(0)).map(|p| p.max(0).unsigned_abs())),
            Err(PgFailure::Db(e)) => Err(classify(e)),
            Err(PgFailure::Target(e)) => Err(e),
        }
    }

    fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), TargetError> {
        match self.write(batch.events, batch.forwarder, batch.next_position, true) {
            Ok(()) => Ok(()),
            Err(PgFailure::Target(e)) => Err(e),
            Err(PgFailure::Db(e)) if is_data_error(&e) => match self.find_poison(batch) {
                Some(index) => Err(TargetError::Rejected {
                    index,
                    reason: format!("PostgreSQL refused the event: {}", classify(e)),
                }),
                None => Err(classify(e)),
            },
            Err(PgFailure::Db(e)) => Err(classify(e)),
        }
    }

    fn stores_checkpoint(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers the connection and then refuses the startup
    /// (here: closes it) passes the attempt to the next host, as
    /// `tokio-postgres` on its own does.
    #[test]
    fn a_host_that_refuses_the_startup_passes_to_the_next() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ports = [first.local_addr().unwrap().port(), second.local_addr().unwrap().port()];
        let accepts = |l: std::net::TcpListener| {
            std::thread::spawn(move || {
                // Answers one connection by closing it.
                let (conn, _) = l.accept().unwrap();
                drop(conn);
            })
        };
        let (a, b) = (accepts(first), accepts(second));
        let url = format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=annal dbname=annal",
            ports[0], ports[1]
        );
        let config: tokio_postgres::Config = url.parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answer = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), open(&config)).await })
            .unwrap();
        assert!(answer.is_err());
        a.join().unwrap();
        // Joins only once the second host was tried (it would wait for ever otherwise).
        let tried = std::thread::spawn(move || b.join().is_ok());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !tried.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(tried.is_finished(), "the second host was never tried");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_connection_to_a_server_that_is_down_never_waits_on_itself() {
        // Nothing listens at this port of the ephemeral range; sooner or later
        // a connection is given it as its own port (see `crate::socket`).
        // `tokio-postgres` alone would then wait for ever for the answer to
        // its startup message, which is its own message coming back.
        let port = crate::socket::tests::free_ephemeral_port();
        let config: tokio_postgres::Config = format!("postgres://annal@127.0.0.1:{port}/annal").parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let to_itself = rt.block_on(async {
            for _ in 0..120_000 {
                let answer = tokio::time::timeout(Duration::from_secs(5), open(&config))
                    .await
                    .expect("a connection attempt to a server that is down waited 5 s");
                match answer {
                    Ok(_) => panic!("connected to {port} where nothing listens"),
                    Err(e) if e.to_string().contains("connected to itself") => return true,
                    Err(_) => {}
                }
            }
            false
        });
        assert!(to_itself, "the kernel never connected a socket to itself");
    }
}
