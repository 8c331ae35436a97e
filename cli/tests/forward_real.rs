//! `annal forward` against real servers: PostgreSQL, NATS JetStream and a
//! second `annal serve` (over HTTP, and over gRPC as a KurrentDB server). Each run forwards a backlog while the forwarding
//! process is killed with SIGKILL and restarted, the target is stopped and
//! started again, and more events come later; then the target must hold every
//! event exactly once, in per-stream order, with the right content. Bad input
//! (malformed URL, unreachable host, wrong password) must be a clear error
//! that loses and duplicates nothing.
//!
//! Ignored by default: `scripts/forward-test.sh` starts the servers on
//! loopback and runs them (`ANNAL_FORWARD_EVENTS`, default 20,000, sets the
//! number of events; the issue's 100,000 with `ANNAL_FORWARD_EVENTS=100000`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annal::{Direction, EventData, ExpectedVersion, Filter, LogFrom, Options, RecordedEvent, Store};

const STREAMS: usize = 50;

fn events_wanted() -> usize {
    std::env::var("ANNAL_FORWARD_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/forward-test.sh"))
}

fn sh(command: &str) {
    let status = Command::new("sh").arg("-c").arg(command).status().unwrap();
    assert!(status.success(), "{command} failed");
}

/// Appends events `from..to` to the store in `dir`, in appends of up to 10.
fn fill(dir: &Path, from: usize, to: usize) {
    let store = Store::open(dir, Options::default()).unwrap();
    let mut i = from;
    while i < to {
        let n = (to - i).min(10);
        let stream = format!("order-{}", i % STREAMS);
        let events = (i..i + n)
            .map(|k| {
                let e = EventData::json(
                    if k % 2 == 0 { "OrderPlaced" } else { "OrderPaid" },
                    format!(r#"{{"n":{k},"note":"event number {k}","nested":{{"ok":true}}}}"#),
                )
                .with_metadata(format!(r#"{{"by":"test","k":{k}}}"#))
                .with_tag(format!("tenant:{}", k % 7));
                if k % 1000 == 999 { e.with_tag("rare") } else { e }
            })
            .collect();
        store.append(&stream, ExpectedVersion::Any, events).unwrap();
        i += n;
    }
    store.close().unwrap();
}

fn source(dir: &Path) -> Vec<RecordedEvent> {
    let store = Store::open_read_only(dir, Options::default()).unwrap();
    store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap()
        .into_iter()
        .filter(|e| !e.stream.starts_with('$'))
        .collect()
}

fn annal(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_annal"));
    c.arg("--data").arg(dir);
    c
}

fn spawn_forward(dir: &Path, url: &str, once: bool) -> Child {
    let mut c = annal(dir);
    c.args(["forward", "--to", url, "--name", "centre", "--batch-size", "500"]);
    if once {
        c.arg("--once");
    }
    c.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the forwarder did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    sh(&format!("kill -INT {}", child.id()));
    wait_exit(child, Duration::from_secs(60))
}

/// One held event: id, stream, revision, position, type, data, metadata, tags.
type Row = (
    uuid::Uuid,
    String,
    u64,
    u64,
    String,
    serde_json::Value,
    serde_json::Value,
    Vec<String>,
);

/// What a target holds, in the order it holds it.
struct Held {
    rows: Vec<Row>,
    /// False for a target that cannot hold tags (KurrentDB): they are not compared.
    tags: bool,
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}

/// Every event once, each stream's revisions in increasing order as held, and the same content.
fn check(held: &Held, source: &[RecordedEvent]) {
    assert_eq!(
        held.rows.len(),
        source.len(),
        "the target holds as many events as the store"
    );
    let by_id: HashMap<uuid::Uuid, &RecordedEvent> = source.iter().map(|e| (e.id, e)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (id, stream, revision, position, event_type, data, metadata, tags) in &held.rows {
        assert!(seen.insert(*id), "event {id} is held twice");
        let e = by_id
            .get(id)
            .unwrap_or_else(|| panic!("event {id} is not in the store"));
        assert_eq!((&e.stream, e.revision), (stream, *revision));
        // u64::MAX: a target with positions of its own (another annal).
        assert!(*position == u64::MAX || e.position == *position, "position of {id}");
        assert_eq!(&e.event_type, event_type);
        assert_eq!(&json(&e.data), data, "data of {id}");
        assert_eq!(&json(&e.metadata), metadata, "metadata of {id}");
        if held.tags {
            assert_eq!(&e.tags, tags);
        }
        if let Some(prev) = last.insert(stream, *revision) {
            assert!(
                prev < *revision,
                "stream {stream}: revision {revision} held after {prev}"
            );
        }
    }
}

/// Runs the scenario against a target; `count` says how many events it holds, `held` reads them all.
fn scenario(url: &str, stop: &str, start: &str, count: impl Fn() -> usize, held: impl Fn() -> Held) {
    let n = events_wanted();
    let dir = tempfile::tempdir().unwrap();
    let first = n * 3 / 4;
    fill(dir.path(), 0, first);
    let began = Instant::now();
    // 1. Forward, and kill -9 the forwarder as soon as part of the backlog arrived.
    let mut child = spawn_forward(dir.path(), url, false);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count() < 1000 {
        assert!(Instant::now() < deadline, "nothing arrived at the target");
        assert!(child.try_wait().unwrap().is_none(), "the forwarder exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = count();
    eprintln!("killed the forwarder with {at_kill} of {first} events at the target");
    // 2. The target goes down; the forwarder restarts meanwhile and waits for it.
    sh(stop);
    let mut child = spawn_forward(dir.path(), url, false);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the forwarder gave up on a target that is down"
    );
    sh(start);
    let deadline = Instant::now() + Duration::from_secs(300);
    while count() < first {
        assert!(
            Instant::now() < deadline,
            "the forwarder never caught up after the outage"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(interrupt(&mut child).success(), "an interrupted forwarder exits 0");
    // 3. Later events, then --once forwards what exists and exits 0.
    fill(dir.path(), first, n);
    let mut child = spawn_forward(dir.path(), url, true);
    assert!(wait_exit(&mut child, Duration::from_secs(300)).success());
    let took = began.elapsed();
    let source = source(dir.path());
    assert_eq!(source.len(), n);
    check(&held(), &source);
    eprintln!("{url}: {n} events exactly once through a kill -9 and an outage, in {took:.1?}");
    // 4. Status: the checkpoint the forwarder saved.
    let out = annal(dir.path()).args(["forward", "status"]).output().unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.contains("\"name\":\"centre\""), "{line}");
}

/// A store whose subject "ann" was shredded before anything was forwarded,
/// beside a live subject "bob" and plain events; returns its events. Every
/// personal byte holds `PII-<subject>`.
fn shredded_store(dir: &Path) -> Vec<RecordedEvent> {
    let store = Store::open(dir, Options::default()).unwrap();
    for k in 0..9 {
        let personal = |who: &str| {
            EventData::json("Changed", format!(r#"{{"name":"PII-{who}-{k}"}}"#))
                .with_metadata(format!(r#"{{"mail":"PII-{who}-mail-{k}"}}"#))
                .with_subject(who)
        };
        let (stream, e) = match k % 3 {
            0 => ("cust-ann", personal("ann")),
            1 => ("cust-bob", personal("bob")),
            _ => ("plain", EventData::json("Plain", format!(r#"{{"k":{k}}}"#))),
        };
        store
            .append(stream, ExpectedVersion::Any, vec![e.with_tag("kind:x")])
            .unwrap();
    }
    assert!(store.shred("ann").unwrap());
    store.close().unwrap();
    let events = source(dir);
    assert_eq!(events.iter().filter(|e| e.is_erased()).count(), 3);
    events
}

/// `annal forward --once` of the store in `dir` to `url` under `name`, which must succeed.
fn forward_once(dir: &Path, url: &str, name: &str) {
    let out = annal(dir)
        .args(["forward", "--once", "--to", url, "--name", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// True if any file under `dir` holds `needle`.
fn any_file_holds(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            any_file_holds(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

mod postgres_target {
    use super::*;

    fn client() -> postgres::Client {
        postgres::Client::connect(&env("ANNAL_TEST_PG_URL"), postgres::NoTls).unwrap()
    }

    fn url(table: &str) -> String {
        format!("{}?table={table}&source=edge-test", env("ANNAL_TEST_PG_URL"))
    }

    fn count(table: &str) -> usize {
        // The table exists once the forwarder connected; before, nothing arrived.
        match postgres::Client::connect(&env("ANNAL_TEST_PG_URL"), postgres::NoTls)
            .and_then(|mut c| c.query_one(&format!("SELECT count(*) FROM {table}"), &[]))
        {
            Ok(row) => row.get::<_, i64>(0) as usize,
            Err(_) => 0,
        }
    }

    #[test]
    #[ignore]
    fn every_event_arrives_exactly_once_through_a_kill_and_an_outage() {
        let table = "annal_events_t1";
        client()
            .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
            .unwrap();
        scenario(
            &url(table),
            &env("ANNAL_TEST_PG_STOP"),
            &env("ANNAL_TEST_PG_START"),
            || count(table),
            || {
                let rows = client()
                    .query(
                        &format!(
                            "SELECT event_id, stream_id, stream_version, global_position, event_type, \
                             data::text, metadata::text, tags, source FROM {table} ORDER BY global_position"
                        ),
                        &[],
                    )
                    .unwrap();
                Held {
                    rows: rows
                        .iter()
                        .map(|r| {
                            assert_eq!(r.get::<_, String>(8), "edge-test");
                            (
                                r.get(0),
                                r.get(1),
                                r.get::<_, i64>(2) as u64,
                                r.get::<_, i64>(3) as u64,
                                r.get(4),
                                json(r.get::<_, String>(5).as_bytes()),
                                json(r.get::<_, String>(6).as_bytes()),
                                r.get(7),
                            )
                        })
                        .collect(),
                    tags: true,
                }
            },
        );
        // The checkpoint row moved with the events.
        let row = client()
            .query_one(
                "SELECT position FROM annal_forward_checkpoints WHERE source = 'edge-test' AND name = 'centre'",
                &[],
            )
            .unwrap();
        assert!(row.get::<_, i64>(0) as usize >= events_wanted());
    }

    #[test]
    #[ignore]
    fn a_second_forwarder_to_the_same_table_adds_nothing_twice() {
        // Its rows are there already: the batches' straight copy fails on
        // event_id, and the staging path inserts only what is missing.
        let table = "annal_events_t2";
        client()
            .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 0, 1500);
        let once = |name: &str| {
            let out = annal(dir.path())
                .args(["forward", "--once", "--to", &url(table), "--name", name])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        once("first");
        assert_eq!(count(table), 1500);
        fill(dir.path(), 1500, 2000);
        once("second");
        assert_eq!(count(table), 2000);
        once("first");
        assert_eq!(count(table), 2000);
    }

    #[test]
    #[ignore]
    fn a_shredded_subjects_events_arrive_erased_in_a_table_of_the_earlier_version() {
        let table = "annal_events_t4";
        // The table as the earlier version made it: no subject, no erased.
        client()
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (global_position bigint NOT NULL, \
                 stream_id text NOT NULL, stream_version bigint NOT NULL, event_id uuid NOT NULL UNIQUE, \
                 event_type text NOT NULL, data jsonb, data_bytes bytea, metadata jsonb, metadata_bytes bytea, \
                 tags text[] NOT NULL, created_at timestamptz NOT NULL, source text NOT NULL)"
            ))
            .unwrap();
        // This test's own source name: its checkpoints start afresh.
        let _ = client().batch_execute("DELETE FROM annal_forward_checkpoints WHERE source = 'edge-shred'");
        let dir = tempfile::tempdir().unwrap();
        let events = shredded_store(dir.path());
        let pg_url = format!("{}?table={table}&source=edge-shred", env("ANNAL_TEST_PG_URL"));
        forward_once(dir.path(), &pg_url, "centre");
        let rows = client()
            .query(
                &format!(
                    "SELECT event_id, stream_id, data::text, metadata::text, data_bytes, metadata_bytes, subject, \
                     erased, tags, t::text FROM {table} t ORDER BY global_position"
                ),
                &[],
            )
            .unwrap();
        assert_eq!(rows.len(), events.len());
        for (r, e) in rows.iter().zip(&events) {
            assert_eq!(r.get::<_, uuid::Uuid>(0), e.id);
            assert_eq!(r.get::<_, Vec<String>>(8), e.tags);
            let whole: String = r.get(9);
            assert!(
                !whole.contains("PII-ann"),
                "a personal byte of a shredded subject: {whole}"
            );
            let (data, metadata): (Option<String>, Option<String>) = (r.get(2), r.get(3));
            let bytes: (Option<Vec<u8>>, Option<Vec<u8>>) = (r.get(4), r.get(5));
            let (subject, erased): (Option<String>, bool) = (r.get(6), r.get(7));
            assert_eq!(bytes, (None, None));
            if e.is_erased() {
                assert_eq!((data, metadata, subject, erased), (None, None, None, true));
            } else {
                let as_json = |v: Option<String>| v.map_or(serde_json::Value::Null, |v| json(v.as_bytes()));
                assert_eq!(as_json(data), json(&e.data));
                assert_eq!(as_json(metadata), json(&e.metadata));
                assert_eq!((subject.as_deref(), erased), (e.subject(), false));
            }
        }
        assert_eq!(rows.iter().filter(|r| r.get::<_, bool>(7)).count(), 3);
        // Delivered again (another forwarder), nothing is added: the columns
        // are there, and the erased rows match.
        forward_once(dir.path(), &pg_url, "again");
        assert_eq!(count(table), events.len());
        client().batch_execute(&format!("DROP TABLE {table}")).unwrap();
    }

    /// A user who may only read and insert forwards into tables their owner
    /// made: the setup made nothing that exists (its `CREATE INDEX IF NOT
    /// EXISTS` needed the table's owner, even with the index there).
    #[test]
    #[ignore]
    fn a_user_who_may_only_insert_forwards_into_existing_tables() {
        let table = "annal_events_t5";
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 0, 10);
        client()
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; DELETE FROM annal_forward_checkpoints \
                 WHERE source = 'edge-test' AND name IN ('owner', 'inserter')"
            ))
            .unwrap_or_else(|_| {
                // No checkpoints table yet: nothing to forget.
                client()
                    .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
                    .unwrap()
            });
        // The owner's forwarder makes the tables.
        forward_once(dir.path(), &url(table), "owner");
        assert_eq!(count(table), 10);
        client()
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS annal_inserter;                  CREATE ROLE annal_inserter LOGIN PASSWORD 'inserter-secret';                  GRANT SELECT, INSERT ON {table} TO annal_inserter;                  GRANT SELECT, INSERT, UPDATE ON annal_forward_checkpoints TO annal_inserter"
            ))
            .unwrap();
        fill(dir.path(), 10, 15);
        let base = env("ANNAL_TEST_PG_URL");
        let at = base.find('@').unwrap();
        let inserter = format!(
            "postgres://annal_inserter:inserter-secret{}?table={table}&source=edge-test",
            &base[at..]
        );
        let out = annal(dir.path())
            .args(["forward", "--once", "--name", "inserter", "--to", &inserter])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Its own checkpoint: it delivered all 15, the 10 there already added once.
        assert_eq!(count(table), 15);
        client()
            .batch_execute(&format!(
                "DROP TABLE {table}; REVOKE ALL ON annal_forward_checkpoints FROM annal_inserter;                  DROP ROLE annal_inserter"
            ))
            .unwrap();
    }

    #[test]
    #[ignore]
    fn wrong_password_and_unreachable_host_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 0, 10);
        let good = env("ANNAL_TEST_PG_URL");
        let wrong = good.replace("annal-test-secret", "not-the-password");
        let out = annal(dir.path())
            .args(["forward", "--once", "--to", &wrong])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("28P01") || err.contains("password"), "{err}");
        assert!(
            !err.contains("not-the-password"),
            "the password is never printed: {err}"
        );
        let out = annal(dir.path())
            .args(["forward", "--once", "--to", "postgres://u:p@127.0.0.1:1/db"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("unavailable"), "{err}");
        // Nothing moved: a good run afterwards delivers all 10, once.
        let table = "annal_events_t2";
        client()
            .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
            .unwrap();
        let out = annal(dir.path())
            .args(["forward", "--once", "--to", &url(table)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(count(table), 10);
    }
}

mod nats_target {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn url(stream: &str) -> String {
        format!("{}?stream={stream}&subject=edge.{{stream}}", env("ANNAL_TEST_NATS_URL"))
    }

    async fn context() -> Option<async_nats::jetstream::Context> {
        let u = url::Url::parse(&env("ANNAL_TEST_NATS_URL")).unwrap();
        let client = async_nats::ConnectOptions::new()
            .user_and_password(u.username().into(), u.password().unwrap_or_default().into())
            .connect(format!("127.0.0.1:{}", u.port().unwrap()))
            .await
            .ok()?;
        Some(async_nats::jetstream::new(client))
    }

    fn count(stream: &str) -> usize {
        rt().block_on(async {
            let js = context().await?;
            let mut s = js.get_stream(stream).await.ok()?;
            Some(s.info().await.ok()?.state.messages as usize)
        })
        .unwrap_or(0)
    }

    fn held(stream: &str) -> Held {
        rt().block_on(async {
            let js = context().await.unwrap();
            let mut s = js.get_stream(stream).await.unwrap();
            let last = s.info().await.unwrap().state.last_sequence;
            let mut rows = Vec::new();
            for seq in 1..=last {
                let m = s.get_raw_message(seq).await.unwrap();
                let h = |name: &str| m.headers.get(name).map(|v| v.as_str().to_string()).unwrap_or_default();
                // `<prefix>.order-<n>`: each test's own prefix.
                assert!(
                    m.subject.split('.').nth(1).is_some_and(|t| t.starts_with("order-")),
                    "{}",
                    m.subject
                );
                rows.push((
                    h("Annal-Event-Id").parse().unwrap(),
                    h("Annal-Stream"),
                    h("Annal-Revision").parse().unwrap(),
                    h("Annal-Position").parse().unwrap(),
                    h("Annal-Type"),
                    json(&m.payload),
                    json(h("Annal-Metadata").as_bytes()),
                    h("Annal-Tags").split(',').map(str::to_string).collect(),
                ));
            }
            Held { rows, tags: true }
        })
    }

    #[test]
    #[ignore]
    fn every_event_arrives_exactly_once_through_a_kill_and_an_outage() {
        let stream = "ANNAL_T1";
        rt().block_on(async {
            let js = context().await.unwrap();
            let _ = js.delete_stream(stream).await;
        });
        scenario(
            &url(stream),
            &env("ANNAL_TEST_NATS_STOP"),
            &env("ANNAL_TEST_NATS_START"),
            || count(stream),
            || held(stream),
        );
    }

    /// Review of the batch publish: acknowledgements wait in one
    /// subscription whose channel holds 65,536 messages; a batch with more
    /// outstanding than that lost acknowledgements and timed out on every
    /// retry (70,000: "no NATS acknowledgement in time", checkpoint 0).
    #[test]
    #[ignore]
    fn a_shredded_subjects_events_arrive_erased_with_headers_that_say_so() {
        let stream = "EDGE_SHRED";
        let dir = tempfile::tempdir().unwrap();
        let events = shredded_store(dir.path());
        forward_once(
            dir.path(),
            &format!(
                "{}?stream={stream}&subject=shred.{{stream}}",
                env("ANNAL_TEST_NATS_URL")
            ),
            "centre",
        );
        rt().block_on(async {
            let js = context().await.unwrap();
            let mut s = js.get_stream(stream).await.unwrap();
            let last = s.info().await.unwrap().state.last_sequence;
            assert_eq!(last as usize, events.len());
            for (seq, e) in (1..=last).zip(&events) {
                let m = s.get_raw_message(seq).await.unwrap();
                let h = |name: &str| m.headers.get(name).map(|v| v.as_str().to_string());
                assert_eq!(h("Annal-Event-Id"), Some(e.id.to_string()));
                assert_eq!(h("Annal-Tags").as_deref(), Some("kind:x"));
                let mut all = m.payload.to_vec();
                for (_, values) in m.headers.iter() {
                    for v in values {
                        all.extend_from_slice(v.as_str().as_bytes());
                    }
                }
                assert!(
                    !all.windows(7).any(|w| w == b"PII-ann"),
                    "a personal byte of a shredded subject"
                );
                if e.is_erased() {
                    assert_eq!(h("Annal-Erased").as_deref(), Some("true"));
                    assert!(m.payload.is_empty());
                    assert_eq!((h("Annal-Metadata"), h("Annal-Subject")), (None, None));
                } else {
                    assert_eq!(h("Annal-Erased"), None);
                    assert_eq!(&m.payload[..], &e.data[..]);
                    assert_eq!(h("Annal-Subject").as_deref(), e.subject());
                }
            }
            js.delete_stream(stream).await.unwrap();
        });
    }

    #[test]
    #[ignore]
    fn a_batch_larger_than_the_acknowledgement_channel_arrives() {
        let stream = "ANNAL_T2";
        rt().block_on(async {
            let js = context().await.unwrap();
            let _ = js.delete_stream(stream).await;
        });
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 0, 70_000);
        // Its own subjects: another test's stream takes edge.*.
        let to = format!("{}?stream={stream}&subject=big.{{stream}}", env("ANNAL_TEST_NATS_URL"));
        let out = annal(dir.path())
            .args(["forward", "--once", "--to", &to, "--name", "big"])
            .args(["--batch-size", "70000", "--max-in-flight", "70000"])
            .output()
            .unwrap();
        let arrived = count(stream);
        rt().block_on(async {
            let js = context().await.unwrap();
            let _ = js.delete_stream(stream).await;
        });
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(arrived, 70_000);
    }

    /// Review of the NATS target: nats-server killed in the middle of a
    /// large batch. async-nats reconnected on its own (`max_reconnects(0)`
    /// means no limit), sent the rest of the batch on the new connection
    /// while what the old socket held was lost, and the retry then stored
    /// those events after later ones of their streams. The client now never
    /// reconnects by itself: the batch fails and is sent again whole.
    #[test]
    #[ignore]
    fn a_server_killed_in_the_middle_of_a_batch_leaves_every_stream_in_order() {
        let stream = "ANNAL_T3";
        rt().block_on(async {
            let js = context().await.unwrap();
            let _ = js.delete_stream(stream).await;
        });
        let n = 50_000;
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 0, n);
        let to = format!("{}?stream={stream}&subject=mid.{{stream}}", env("ANNAL_TEST_NATS_URL"));
        let mut child = annal(dir.path())
            .args(["forward", "--to", &to, "--name", "mid"])
            .args(["--batch-size", "50000", "--max-in-flight", "50000"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while count(stream) < 2_000 {
            assert!(Instant::now() < deadline, "nothing arrived at the target");
            std::thread::sleep(Duration::from_millis(2));
        }
        sh(&env("ANNAL_TEST_NATS_KILL"));
        std::thread::sleep(Duration::from_millis(50));
        sh(&env("ANNAL_TEST_NATS_START"));
        let deadline = Instant::now() + Duration::from_secs(180);
        while count(stream) < n {
            assert!(
                Instant::now() < deadline,
                "the forwarder never delivered the batch again"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(interrupt(&mut child).success(), "an interrupted forwarder exits 0");
        let source = source(dir.path());
        let held = held(stream);
        rt().block_on(async {
            let js = context().await.unwrap();
            let _ = js.delete_stream(stream).await;
        });
        // Every event once, and each stream's revisions in order.
        check(&held, &source);
    }

    /// Appends to the store in `dir`, stream `order-1`: a large event
    /// (`pad` bytes of data) between two small ones, then one of `order-2`.
    fn large_between_small(dir: &Path, pad: usize) {
        let store = Store::open(dir, Options::default()).unwrap();
        let e = |n: usize, pad: usize| EventData::json("E", format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(pad)));
        store
            .append("order-1", ExpectedVersion::Any, vec![e(0, 10), e(1, pad), e(2, 10)])
            .unwrap();
        store.append("order-2", ExpectedVersion::Any, vec![e(3, 10)]).unwrap();
        store.close().unwrap();
    }

    /// The (annal stream, revision) of each message of JetStream stream
    /// `stream` under subjects `<prefix>.order-*`, in stream order.
    fn revisions(stream: &str) -> Vec<(String, u64)> {
        rt().block_on(async {
            let js = context().await.unwrap();
            let mut s = js.get_stream(stream).await.unwrap();
            let last = s.info().await.unwrap().state.last_sequence;
            let mut out = Vec::new();
            for seq in 1..=last {
                let Ok(m) = s.get_raw_message(seq).await else { continue };
                let h = |name: &str| m.headers.get(name).map(|v| v.as_str().to_string()).unwrap_or_default();
                if m.subject.contains(".order-") {
                    out.push((h("Annal-Stream"), h("Annal-Revision").parse().unwrap()));
                }
            }
            out
        })
    }

    /// Review of issue 14: the publishes of a batch are pipelined, and
    /// JetStream may refuse one message and store the next: a stream with
    /// `max_bytes` and `discard: new` refuses a large message and takes a
    /// small one after it. The batch sent again (once there was room) then
    /// stored the large event after the later one of its stream. One
    /// message of a stream is in flight at a time now.
    #[test]
    #[ignore]
    fn a_message_refused_for_room_never_lands_after_later_ones_of_its_stream() {
        use async_nats::jetstream::stream::{Config, DiscardPolicy};
        let stream = "ANNAL_T6";
        rt().block_on(async {
            let js = context().await.unwrap();
            let _ = js.delete_stream(stream).await;
            js.create_stream(Config {
                name: stream.into(),
                subjects: vec!["room.*".into()],
                max_bytes: 8192,
                discard: DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .unwrap();
            // Room left for small messages, not for the large one.
            js.publish("room.filler", "f".repeat(5000).into())
                .await
                .unwrap()
                .await
                .unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        large_between_small(dir.path(), 3000);
        let to = format!("{}?stream={stream}&subject=room.{{stream}}", env("ANNAL_TEST_NATS_URL"));
        let run = || {
            annal(dir.path())
                .args(["forward", "--once", "--to", &to, "--name", "room"])
                .output()
                .unwrap()
        };
        let full = run();
        assert!(!full.status.success(), "the large event finds no room");
        rt().block_on(async {
            let js = context().await.unwrap();
            let s = js.get_stream(stream).await.unwrap();
            s.purge().filter("room.filler").await.unwrap();
        });
        let out = run();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let held = revisions(stream);
        rt().block_on(async {
            let _ = context().await.unwrap().delete_stream(stream).await;
        });
        let order_1: Vec<u64> = held.iter().filter(|(s, _)| s == "order-1").map(|(_, r)| *r).collect();
        assert_eq!(order_1, vec![0, 1, 2], "{held:?}");
        assert_eq!(held.len(), 4, "{held:?}");
    }

    /// Review of issue 14: a message over the JetStream stream's
    /// `max_msg_size` was taken as a passing failure and sent again
    /// forever, holding every later event back. It is a poison event: it is
    /// parked, and the events after it arrive, in order.
    #[test]
    #[ignore]
    fn a_message_over_the_maximum_size_is_parked_and_the_rest_arrives() {
        use async_nats::jetstream::stream::Config;
        let stream = "ANNAL_T7";
        rt().block_on(async {
            let js = context().await.unwrap();
            let _ = js.delete_stream(stream).await;
            js.create_stream(Config {
                name: stream.into(),
                subjects: vec!["size.*".into()],
                max_message_size: 2048,
                ..Default::default()
            })
            .await
            .unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        large_between_small(dir.path(), 5000);
        let to = format!("{}?stream={stream}&subject=size.{{stream}}", env("ANNAL_TEST_NATS_URL"));
        let mut child = annal(dir.path())
            .args(["forward", "--once", "--to", &to, "--name", "size"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(60));
        let held = revisions(stream);
        rt().block_on(async {
            let _ = context().await.unwrap().delete_stream(stream).await;
        });
        assert!(status.success());
        // Streams may interleave; each keeps its order.
        let of = |stream: &str| -> Vec<u64> { held.iter().filter(|(s, _)| s == stream).map(|(_, r)| *r).collect() };
        assert_eq!((of("order-1"), of("order-2")), (vec![0, 2], vec![0]), "{held:?}");
        let store = Store::open_read_only(dir.path(), Options::default()).unwrap();
        let parked = store
            .read_stream(
                &annal::forward_parked_stream("size"),
                Direction::Forward,
                annal::StreamFrom::Start,
                10,
            )
            .unwrap();
        assert_eq!(parked.len(), 1);
        assert!(
            String::from_utf8_lossy(&parked[0].data).contains("maximum"),
            "{parked:?}"
        );
    }

    /// `n` events of annal stream `stream`, revisions from `from`, as a forwarder hands them over.
    fn one_stream(stream: &str, from: u64, n: u64) -> Vec<RecordedEvent> {
        (from..from + n)
            .map(|r| RecordedEvent {
                stream: stream.into(),
                revision: r,
                position: r,
                id: uuid::Uuid::new_v4(),
                event_type: "E".into(),
                content_type: annal::ContentType::Json,
                data: format!(r#"{{"n":{r}}}"#).into_bytes().into(),
                metadata: Default::default(),
                tags: Vec::new(),
                timestamp_micros: 0,
                personal: annal::Personal::Plain,
            })
            .collect()
    }

    fn nats_target(url: &str) -> annal_forward::nats::NatsTarget {
        annal_forward::nats::NatsTarget::new(&annal_forward::TargetUrl::parse(url).unwrap()).unwrap()
    }

    fn deliver(t: &mut annal_forward::nats::NatsTarget, events: &[RecordedEvent]) -> Result<(), annal::TargetError> {
        use annal::ForwardTarget;
        t.deliver(&annal::Batch {
            forwarder: "t",
            events,
            next_position: events.last().map_or(0, |e| e.position + 1),
            max_in_flight: 10_000,
        })
    }

    /// Review of issue 14: at most one message per annal stream was in
    /// flight, so a backlog of one stream drained at one round trip per
    /// event (about 80 events a second over a 10 ms link). Chained by
    /// `Nats-Expected-Last-Msg-Id` (the default, `pipeline=log`), a batch of
    /// one stream is in flight at once, and arrives in order.
    #[test]
    #[ignore]
    fn a_backlog_of_one_stream_is_in_flight_at_once_and_arrives_in_order() {
        let stream = "ANNAL_T8";
        rt().block_on(async {
            let _ = context().await.unwrap().delete_stream(stream).await;
        });
        let events = one_stream("order-1", 0, 2_000);
        let base = format!("{}?stream={stream}&subject=one.{{stream}}", env("ANNAL_TEST_NATS_URL"));
        let mut t = nats_target(&base);
        deliver(&mut t, &events[..1_000]).unwrap();
        assert_eq!(t.last_peak_in_flight(), 1_000);
        // Per-stream pipelining, for a JetStream stream shared with others.
        let mut t = nats_target(&format!("{base}&pipeline=stream"));
        deliver(&mut t, &events[1_000..]).unwrap();
        assert_eq!(t.last_peak_in_flight(), 1);
        let held = revisions(stream);
        rt().block_on(async {
            let _ = context().await.unwrap().delete_stream(stream).await;
        });
        assert_eq!(held, (0..2_000).map(|r| ("order-1".to_string(), r)).collect::<Vec<_>>());
    }

    /// Review of the chain: JetStream's memory of message ids can outlive
    /// the messages (after a restart it is rebuilt from the messages that
    /// limits left, so older ids are forgotten while its last message is
    /// older than the ids it remembers). A batch sent again after a lost
    /// checkpoint stored the forgotten events anew, found the rest
    /// duplicates, and the next event named the last of those while the
    /// stream's last message was a forgotten one: every try was refused the
    /// same way until the duplicate window passed. The next try now starts
    /// after the events JetStream acknowledged.
    #[test]
    #[ignore]
    fn a_batch_sent_again_after_a_restart_forgot_some_ids_goes_on_at_once() {
        use async_nats::jetstream::stream::{Config, DiscardPolicy};
        let stream = "ANNAL_T10";
        rt().block_on(async {
            let js = context().await.unwrap();
            let _ = js.delete_stream(stream).await;
            js.create_stream(Config {
                name: stream.into(),
                subjects: vec!["keep.*".into()],
                max_messages: 5,
                discard: DiscardPolicy::Old,
                duplicate_window: Duration::from_secs(600),
                ..Default::default()
            })
            .await
            .unwrap();
        });
        let events = one_stream("order-1", 0, 10);
        let url = format!("{}?stream={stream}&subject=keep.{{stream}}", env("ANNAL_TEST_NATS_URL"));
        deliver(&mut nats_target(&url), &events[..8]).unwrap();
        // The stream keeps events 3-7; after a restart it remembers only their ids.
        sh(&env("ANNAL_TEST_NATS_STOP"));
        sh(&env("ANNAL_TEST_NATS_START"));
        // The forwarder lost its checkpoint: the whole backlog again.
        let mut t = nats_target(&url);
        let mut tries = 0;
        while deliver(&mut t, &events).is_err() {
            tries += 1;
            assert!(tries < 3, "the batch is refused again and again");
        }
        assert!(t.chained(), "no other publisher: the chain stays");
        let held = revisions(stream);
        rt().block_on(async {
            let _ = context().await.unwrap().delete_stream(stream).await;
        });
        // The last five messages: events 8 and 9 last, in order.
        let revisions: Vec<u64> = held.iter().map(|(_, r)| *r).collect();
        assert_eq!(revisions[revisions.len() - 2..], [8, 9], "{held:?}");
    }

    /// The chain needs to know where it stands in a JetStream stream that
    /// another publisher writes to: a batch sent again (after a crash,
    /// say) found its first event a duplicate while the stream's last
    /// message was the other publisher's, and the next event, naming the
    /// first, was refused. The next try goes on after the events
    /// JetStream acknowledged, and the batch arrives once, in order.
    #[test]
    #[ignore]
    fn another_publishers_message_after_a_duplicate_does_not_stop_the_chain() {
        let stream = "ANNAL_T9";
        rt().block_on(async {
            let js = context().await.unwrap();
            let _ = js.delete_stream(stream).await;
        });
        let events = one_stream("order-1", 0, 3);
        let url = format!("{}?stream={stream}&subject=mix.{{stream}}", env("ANNAL_TEST_NATS_URL"));
        let mut t = nats_target(&url);
        deliver(&mut t, &events[..1]).unwrap();
        rt().block_on(async {
            let js = context().await.unwrap();
            js.publish("mix.foreign", "x".into()).await.unwrap().await.unwrap();
        });
        // Event 0 again (its checkpoint was lost): a duplicate, and event 1
        // names it while the stream's last message is the other publisher's.
        assert!(deliver(&mut t, &events).is_err(), "the chain is refused");
        deliver(&mut t, &events).unwrap();
        let held = revisions(stream);
        rt().block_on(async {
            let _ = context().await.unwrap().delete_stream(stream).await;
        });
        let ours: Vec<u64> = held.iter().filter(|(s, _)| s == "order-1").map(|(_, r)| *r).collect();
        assert_eq!(ours, vec![0, 1, 2], "{held:?}");
    }

    #[test]
    #[ignore]
    fn wrong_password_and_malformed_urls_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 0, 10);
        let wrong = env("ANNAL_TEST_NATS_URL").replace("annal-test-secret", "nope");
        let out = annal(dir.path())
            .args(["forward", "--once", "--to", &wrong])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("refused") || err.contains("uthoriz"), "{err}");
        for bad in ["nats://", "nats://h?subject=a.*", "ftp://h", "esdb://h?concurrency=0"] {
            let out = annal(dir.path())
                .args(["forward", "--once", "--to", bad])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{bad}: {err}");
            assert!(err.contains("invalid") || err.contains("UNSUPPORTED"), "{bad}: {err}");
        }
        // Nothing was delivered or saved by the failures.
        let out = annal(dir.path()).args(["forward", "status"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    }
}

/// A second `annal serve` on a free loopback port, started and stopped by
/// shell commands (the scenario stops and starts it).
struct Remote {
    dir: tempfile::TempDir,
    listen: String,
    start: String,
    stop: String,
}

/// A free port below the kernel's ephemeral range (32768 and up by
/// default). A server stopped for an outage is started again on its port;
/// meanwhile the forwarder's connects to 127.0.0.1 may be given that very
/// port as their own, and Linux connects such a socket to itself, which
/// holds the port: the server could not start again.
fn port_below_the_ephemeral_range() -> u16 {
    let start = 20_000 + (std::process::id() % 10_000) as u16;
    (start..32_000)
        .chain(20_000..start)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 20000..32000")
}

impl Remote {
    /// `extra`: arguments after `serve` (such as `--no-auth`).
    fn new(global: &str, extra: &str) -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let port = port_below_the_ephemeral_range();
        let listen = format!("127.0.0.1:{port}");
        let start = format!(
            "{} --data {} {global} serve {extra} --listen {listen} >/dev/null 2>&1 & echo $! >{}/pid; \
             for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.05; done",
            env!("CARGO_BIN_EXE_annal"),
            dir.path().join("data").display(),
            dir.path().display()
        );
        let stop = format!(
            "kill $(cat {0}/pid); while kill -0 $(cat {0}/pid) 2>/dev/null; do sleep 0.05; done",
            dir.path().display()
        );
        sh(&start);
        Remote {
            dir,
            listen,
            start,
            stop,
        }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// How many events it holds (a read-only open works beside the running server).
    /// The user events it holds (`annal serve` writes one `$annal` system event of its own).
    fn count(&self) -> usize {
        Store::open_read_only(self.data(), Options::default())
            .and_then(|s| s.read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all()))
            .map(|v| v.iter().filter(|e| !e.stream.starts_with('$')).count())
            .unwrap_or(0)
    }

    /// Every event it holds, read with the server stopped (and started again).
    fn held(&self, tags: bool) -> Held {
        sh(&self.stop);
        let held = source(&self.data());
        assert!(held.iter().all(|e| !e.stream.starts_with('$')));
        sh(&self.start);
        Held {
            rows: held
                .iter()
                .map(|e| {
                    (
                        e.id,
                        e.stream.clone(),
                        e.revision,
                        // Positions are the remote's own.
                        u64::MAX,
                        e.event_type.clone(),
                        json(&e.data),
                        json(&e.metadata),
                        e.tags.clone(),
                    )
                })
                .collect(),
            tags,
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("sh").arg("-c").arg(&self.stop).status();
    }
}

mod annal_target {
    use super::*;

    #[test]
    #[ignore]
    fn every_event_arrives_exactly_once_at_another_annal() {
        let remote = Remote::new("", "--no-auth");
        scenario(
            &format!("annal+http://{}", remote.listen),
            &remote.stop,
            &remote.start,
            || remote.count(),
            || remote.held(true),
        );
    }

    #[test]
    #[ignore]
    fn a_shredded_subjects_events_arrive_erased_and_live_ones_sealed_there() {
        let remote = Remote::new("", "--no-auth");
        let dir = tempfile::tempdir().unwrap();
        let events = shredded_store(dir.path());
        let url = format!("annal+http://{}", remote.listen);
        forward_once(dir.path(), &url, "centre");
        // Delivered again from the start: every event, the erased ones too,
        // is the idempotent retry of what is there, nothing parked.
        forward_once(dir.path(), &url, "again");
        for name in ["centre", "again"] {
            let parked = Store::open_read_only(dir.path(), Options::default())
                .unwrap()
                .read_stream(
                    &annal::forward_parked_stream(name),
                    Direction::Forward,
                    annal::StreamFrom::Start,
                    10,
                )
                .unwrap_or_default();
            assert!(parked.is_empty(), "{name} parked {parked:?}");
        }
        sh(&remote.stop);
        let held = source(&remote.data());
        assert_eq!(held.len(), events.len());
        for (h, e) in held.iter().zip(&events) {
            assert_eq!(
                (h.id, &h.stream, h.revision, &h.tags),
                (e.id, &e.stream, e.revision, &e.tags)
            );
            assert_eq!(h.personal, e.personal);
            assert_eq!((&h.data, &h.metadata), (&e.data, &e.metadata));
        }
        let store = Store::open_read_only(remote.data(), Options::default()).unwrap();
        assert!(store.verify().unwrap().problems.is_empty());
        drop(store);
        // The live subject's events are sealed there too; the shredded one's are nowhere.
        for needle in ["PII-ann", "PII-bob"] {
            assert!(
                !any_file_holds(&remote.data(), needle.as_bytes()),
                "{needle} on the remote's disk"
            );
        }
        sh(&remote.start);
    }
}

mod kurrentdb_target {
    use super::*;

    #[test]
    #[ignore]
    fn every_event_arrives_exactly_once_over_the_kurrentdb_protocol() {
        // annal serve speaks KurrentDB's gRPC protocol, idempotent by event id.
        let remote = Remote::new("", "--no-auth");
        scenario(
            &format!("kurrentdb://{}?tls=false", remote.listen),
            &remote.stop,
            &remote.start,
            || remote.count(),
            || remote.held(false),
        );
    }

    #[test]
    #[ignore]
    fn a_shredded_subjects_events_arrive_with_the_erased_marker() {
        let remote = Remote::new("", "--no-auth");
        let dir = tempfile::tempdir().unwrap();
        let events = shredded_store(dir.path());
        forward_once(
            dir.path(),
            &format!("kurrentdb://{}?tls=false", remote.listen),
            "centre",
        );
        sh(&remote.stop);
        let held = source(&remote.data());
        assert_eq!(held.len(), events.len());
        // Streams are appended concurrently: matched by id.
        let by_id: HashMap<uuid::Uuid, &RecordedEvent> = events.iter().map(|e| (e.id, e)).collect();
        for h in &held {
            let e = by_id[&h.id];
            assert_eq!((&h.stream, h.revision), (&e.stream, e.revision));
            if e.is_erased() {
                // Sent with the marker, and stored erased by an annal that
                // serves the protocol (it knows the marker).
                assert!(h.is_erased() && h.data.is_empty() && h.metadata.is_empty(), "{h:?}");
            } else {
                // Byte for byte as before (the subject is not carried).
                assert_eq!((&h.data, &h.metadata), (&e.data, &e.metadata));
            }
        }
        assert!(!any_file_holds(&remote.data(), b"PII-ann"));
        sh(&remote.start);
    }

    #[test]
    #[ignore]
    fn unreachable_hosts_and_wrong_credentials_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 0, 10);
        // A server with one token; the forwarder gives the wrong password.
        let config = dir.path().join("remote.toml");
        let digest = Command::new("sh")
            .arg("-c")
            .arg("printf %s right-secret | sha256sum | cut -d' ' -f1")
            .output()
            .unwrap();
        let digest = String::from_utf8(digest.stdout).unwrap();
        std::fs::write(
            &config,
            format!(
                "[server]\ntokens = [{{ name = \"edge\", sha256 = \"{}\", role = \"write\" }}]\n",
                digest.trim()
            ),
        )
        .unwrap();
        let remote = Remote::new(&format!("--config {}", config.display()), "");
        let wrong = format!("esdb://edge:wrong-secret@{}?tls=false", remote.listen);
        let out = annal(dir.path())
            .args(["forward", "--once", "--to", &wrong])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("refused"), "{err}");
        assert!(!err.contains("wrong-secret"), "a password is never printed: {err}");
        assert_eq!(remote.count(), 0);
        // The right password delivers.
        let right = format!("esdb://edge:right-secret@{}?tls=false", remote.listen);
        let out = annal(dir.path())
            .args(["forward", "--once", "--to", &right, "--name", "good"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(remote.count(), 10);
        // Nobody listens: unavailable, and nothing saved.
        let out = annal(dir.path())
            .args([
                "forward",
                "--once",
                "--to",
                "kurrentdb://127.0.0.1:1?tls=false&maxDiscoverAttempts=2",
                "--name",
                "nowhere",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("unavailable"), "{err}");
        let out = annal(dir.path()).args(["forward", "status"]).output().unwrap();
        let status = String::from_utf8_lossy(&out.stdout);
        assert!(status.contains("\"good\"") && !status.contains("nowhere"), "{status}");
    }
}
