//! A real-process SIGKILL torture test: a child process appends from several
//! threads with `Durability::Always` and is killed with SIGKILL at a random
//! moment; the parent then opens the store and checks that every acknowledged
//! append is there, byte for byte, where it was acknowledged; that no append is
//! half visible; that positions and revisions are dense; and that `verify` is
//! clean. Small segments make kills land inside rotations; some rounds skip the
//! check so that the next child recovers a killed store itself (and may be
//! killed while doing so); each child first retries the previous round's
//! unacknowledged appends with the same ids, as a client would after a crash.
//!
//! The child is this test binary run again (`child_writer`, which does nothing
//! unless `ANNAL_TORTURE_CHILD` names its data directory).
//!
//! Run with `cargo test --release --test kill -- --ignored --nocapture`.
//! `ANNAL_KILL_ROUNDS` sets the number of kills (default 30), `ANNAL_KILL_SEED`
//! the seed, and `ANNAL_KILL_KEEP` a directory where the data directory of a
//! failed run is copied (as `kill-failure-N`); it is always kept in place too.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Stdout, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use annal::{
    ContentType, Direction, Durability, EventData, ExpectedVersion, Filter, LogFrom, Options, RecordedEvent, Store,
    StreamFrom,
};
use uuid::Uuid;

/// Set for the child: its data directory.
const CHILD_ENV: &str = "ANNAL_TORTURE_CHILD";
/// Set for the child: the high half of its event ids (unique per round).
const TAG_ENV: &str = "ANNAL_TORTURE_TAG";
/// Set for the child: appends to retry first, `first_id,count,stream,expected;...`.
const RETRY_ENV: &str = "ANNAL_TORTURE_RETRY";

const THREADS: u64 = 8;
const SHARED_STREAMS: u64 = 4;
const SEGMENT_SIZE: u64 = 256 << 10;
/// At most this many of the previous round's unacknowledged appends are retried.
const MAX_RETRIES: usize = 16;
/// A child nobody killed gives up after this long.
const CHILD_MAX_LIFE: Duration = Duration::from_secs(60);
/// Most problems printed for one round.
const MAX_PROBLEMS: usize = 60;

fn options() -> Options {
    Options::default()
        .durability(Durability::Always)
        .segment_size(SEGMENT_SIZE)
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The event with this id. Its content is a function of the id, so the checker
/// can tell every stored event byte for byte.
fn event_for(id: Uuid) -> EventData {
    let (hi, lo) = id.as_u64_pair();
    let h = mix(hi ^ mix(lo));
    let pad = if h.is_multiple_of(64) {
        8_000 + (h >> 8) % 40_000
    } else {
        (h >> 8) % 1_500
    };
    let body = format!(r#"{{"id":"{id}","pad":"{}"}}"#, "x".repeat(pad as usize));
    EventData::json(format!("T{}", h % 3), body)
        .with_id(id)
        .with_tag(format!("k:{}", (h >> 4) % 4))
}

/// Id of the `i`th event of the append whose first event has id `first`.
fn nth_id(first: Uuid, i: u64) -> Uuid {
    let (hi, lo) = first.as_u64_pair();
    Uuid::from_u64_pair(hi, lo + i)
}

/// First id of the append an event id belongs to (an append's ids differ in the low 8 bits).
fn batch_key(id: Uuid) -> Uuid {
    let (hi, lo) = id.as_u64_pair();
    Uuid::from_u64_pair(hi, lo & !0xff)
}

fn events_of(first: Uuid, count: u64) -> Vec<EventData> {
    (0..count).map(|i| event_for(nth_id(first, i))).collect()
}

// ---------------------------------------------------------------------------
// The child.

#[test]
#[ignore = "the child process of kill_torture; does nothing unless ANNAL_TORTURE_CHILD is set"]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let tag: u64 = std::env::var(TAG_ENV)
        .expect("ANNAL_TORTURE_TAG")
        .parse()
        .expect("numeric tag");
    let retries = std::env::var(RETRY_ENV).unwrap_or_default();
    run_child(Path::new(&dir), tag, &retries);
}

/// Writes one whole line to stdout and flushes it.
fn say(out: &Mutex<Stdout>, line: &str) {
    let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    o.write_all(buf.as_bytes()).expect("stdout");
    o.flush().expect("stdout");
}

fn run_child(dir: &Path, tag: u64, retries: &str) {
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_MAX_LIFE);
        std::process::exit(3);
    });
    let out = Mutex::new(std::io::stdout());
    // A leading newline ends whatever the test harness printed on its line.
    say(&out, "\nSTART");
    let store = match Store::open(dir, options()) {
        Ok(s) => s,
        Err(e) => {
            say(&out, &format!("ERR - open: {}", one_line(&e)));
            std::process::exit(2);
        }
    };
    say(&out, &format!("OPENED {}", store.head_position()));

    // Retry the previous round's unacknowledged appends, with the same ids and
    // expected versions: each is either already stored (the original result
    // comes back) or is written now.
    for item in retries.split(';').filter(|s| !s.is_empty()) {
        let f: Vec<&str> = item.split(',').collect();
        let first: Uuid = f[0].parse().expect("retry id");
        let count: u64 = f[1].parse().expect("retry count");
        let stream = f[2];
        let expected: ExpectedVersion = f[3].parse().expect("retry expected version");
        say(&out, &format!("RETRY {first} {count} {stream}"));
        match store.append(stream, expected, events_of(first, count)) {
            Ok(r) => say(
                &out,
                &format!("REACK {first} {count} {stream} {} {}", r.position, r.first_revision),
            ),
            Err(e) => {
                say(&out, &format!("ERR {first} retry: {}", one_line(&e)));
                std::process::exit(2);
            }
        }
    }

    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (store, out) = (&store, &out);
            s.spawn(move || writer_thread(store, out, tag, t));
        }
    });
    std::process::exit(2);
}

fn one_line(e: &annal::Error) -> String {
    e.to_string().replace('\n', " ")
}

/// Appends until killed. Even threads own a stream and pass exact expected
/// versions they track themselves; odd threads append to shared streams with `Any`.
fn writer_thread(store: &Store, out: &Mutex<Stdout>, tag: u64, t: u64) {
    let mut rng = Rng(mix(tag ^ mix(t)));
    let exact = t.is_multiple_of(2);
    let own = format!("own-{t}");
    let mut own_last = store.stream_info(&own).map(|i| i.last_revision);
    for k in 0u64.. {
        let count = 1 + rng.below(5);
        let first = Uuid::from_u64_pair(tag, (t << 40) | (k << 8));
        let (stream, expected) = if exact {
            (
                own.clone(),
                own_last.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
            )
        } else {
            (format!("shared-{}", rng.below(SHARED_STREAMS)), ExpectedVersion::Any)
        };
        say(out, &format!("TRY {first} {count} {stream} {expected}"));
        match store.append(&stream, expected, events_of(first, count)) {
            Ok(r) => {
                own_last = exact.then_some(r.next_expected_version);
                say(
                    out,
                    &format!("ACK {first} {count} {stream} {} {}", r.position, r.first_revision),
                );
                // Now and then an immediate retry, which must change nothing.
                if rng.below(16) == 0 {
                    say(out, &format!("RETRY {first} {count} {stream}"));
                    match store.append(&stream, expected, events_of(first, count)) {
                        Ok(again) => say(
                            out,
                            &format!(
                                "REACK {first} {count} {stream} {} {}",
                                again.position, again.first_revision
                            ),
                        ),
                        Err(e) => {
                            say(out, &format!("ERR {first} retry: {}", one_line(&e)));
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                say(out, &format!("ERR {first} {}", one_line(&e)));
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The parent.

/// One append the child tried.
struct Batch {
    first: Uuid,
    count: u64,
    stream: String,
    expected: ExpectedVersion,
    round: u64,
    /// (position, first revision) the child was told.
    acked: Option<(u64, u64)>,
    /// (position, first revision) found by the last check, if present then.
    seen: Option<(u64, u64)>,
    /// Whether a check has looked for it.
    checked: bool,
    retried: bool,
}

#[derive(Default)]
struct Totals {
    tries: u64,
    acks: u64,
    acked_events: u64,
    retries_acked: u64,
    unacked_present: u64,
    unacked_absent: u64,
    killed_before_open: u64,
    checks: u64,
    lost: u64,
    half_visible: u64,
}

/// What one check found.
#[derive(Default)]
struct Check {
    events: u64,
    segments: usize,
    lost: u64,
    half_visible: u64,
    unacked_present: u64,
    unacked_absent: u64,
    problems: Vec<String>,
    more_problems: usize,
}

impl Check {
    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        } else {
            self.more_problems += 1;
        }
    }
}

/// A line the child printed.
enum Line {
    Opened,
    Try(Uuid, u64, String, ExpectedVersion),
    /// An acknowledgement; `true` if of a retry.
    Ack(Uuid, u64, String, u64, u64, bool),
    Retry(Uuid),
    Err(String),
}

fn parse_line(line: &str) -> Option<Line> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let at = toks
        .iter()
        .position(|t| matches!(*t, "OPENED" | "TRY" | "ACK" | "RETRY" | "REACK" | "ERR"))?;
    let f = &toks[at..];
    let id = |i: usize| f.get(i).and_then(|s| s.parse::<Uuid>().ok());
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    let s = |i: usize| f.get(i).map(|s| s.to_string());
    Some(match f[0] {
        "OPENED" => Line::Opened,
        "TRY" => Line::Try(id(1)?, num(2)?, s(3)?, f.get(4)?.parse().ok()?),
        "ACK" | "REACK" => Line::Ack(id(1)?, num(2)?, s(3)?, num(4)?, num(5)?, f[0] == "REACK"),
        "RETRY" => Line::Retry(id(1)?),
        _ => Line::Err(f[1..].join(" ")),
    })
}

struct Parent {
    dir: PathBuf,
    batches: Vec<Batch>,
    by_first: HashMap<Uuid, usize>,
    totals: Totals,
}

/// What one child run printed.
struct ChildRun {
    lines: Vec<String>,
    /// When the child said the store was open, from its start.
    opened_after: Option<Duration>,
    stderr: String,
    exited_early: Option<std::process::ExitStatus>,
}

fn run_child_process(dir: &Path, tag: u64, retries: &str, delay: Duration) -> ChildRun {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(TAG_ENV, tag.to_string())
        .env(RETRY_ENV, retries)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let mut stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    let mut stderr = child.stderr.take().expect("child stderr");
    let spawned = Instant::now();
    let out_reader = std::thread::spawn(move || {
        // Only whole lines: the kill can cut the last one short.
        let mut lines = Vec::new();
        let mut opened_after = None;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdout.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) if buf.ends_with(b"\n") => {
                    if opened_after.is_none() && buf.starts_with(b"OPENED") {
                        opened_after = Some(spawned.elapsed());
                    }
                    lines.push(String::from_utf8_lossy(&buf).trim_end().to_string());
                }
                Ok(_) => break,
            }
        }
        (lines, opened_after)
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    std::thread::sleep(delay);
    let exited_early = child.try_wait().expect("try_wait");
    if exited_early.is_none() {
        child.kill().expect("SIGKILL the child");
    }
    child.wait().expect("wait for the child");
    let (lines, opened_after) = out_reader.join().expect("stdout reader");
    ChildRun {
        lines,
        opened_after,
        stderr: err_reader.join().expect("stderr reader"),
        exited_early,
    }
}

impl Parent {
    /// Records what the child printed; returns the problems.
    fn absorb(&mut self, round: u64, run: &ChildRun) -> (bool, Vec<String>) {
        let mut problems = Vec::new();
        let mut opened = false;
        for line in &run.lines {
            let Some(parsed) = parse_line(line) else {
                continue;
            };
            match parsed {
                Line::Opened => opened = true,
                Line::Try(first, count, stream, expected) => {
                    if self.by_first.contains_key(&first) {
                        problems.push(format!("child tried id {first} twice: {line}"));
                        continue;
                    }
                    self.by_first.insert(first, self.batches.len());
                    self.batches.push(Batch {
                        first,
                        count,
                        stream,
                        expected,
                        round,
                        acked: None,
                        seen: None,
                        checked: false,
                        retried: false,
                    });
                    self.totals.tries += 1;
                }
                Line::Ack(first, count, stream, position, revision, retry) => {
                    let Some(&i) = self.by_first.get(&first) else {
                        problems.push(format!("acknowledgement of an append never tried: {line}"));
                        continue;
                    };
                    let b = &mut self.batches[i];
                    if b.count != count || b.stream != stream {
                        problems.push(format!(
                            "acknowledgement differs from the try ({} events to {}): {line}",
                            b.count, b.stream
                        ));
                    }
                    let got = (position, revision);
                    match (b.acked, b.seen) {
                        (Some(a), _) if a != got => problems.push(format!(
                            "retry answered {got:?}, the original append was acknowledged at {a:?}: {line}"
                        )),
                        (None, Some(s)) if s != got => problems.push(format!(
                            "retry answered {got:?}, the append was found at {s:?} after the kill: {line}"
                        )),
                        (Some(_), _) => {}
                        (None, _) => {
                            b.acked = Some(got);
                            self.totals.acks += 1;
                            self.totals.acked_events += count;
                            if retry {
                                self.totals.retries_acked += 1;
                            }
                        }
                    }
                }
                Line::Retry(first) => {
                    if let Some(&i) = self.by_first.get(&first) {
                        self.batches[i].retried = true;
                    }
                }
                Line::Err(msg) => problems.push(format!("the child's append failed: {msg}")),
            }
        }
        if let Some(status) = run.exited_early {
            problems.push(format!("the child exited before the kill: {status}"));
        }
        if !opened {
            self.totals.killed_before_open += 1;
        }
        (opened, problems)
    }

    /// Opens the store and checks it against everything tried so far.
    fn check(&mut self) -> Check {
        let mut c = Check::default();
        let store = match Store::open(&self.dir, options()) {
            Ok(s) => s,
            Err(e) => {
                c.problem(format!("reopen after the kill failed: {e}"));
                return c;
            }
        };
        let head = store.head_position();
        let all: Vec<RecordedEvent> =
            match store.read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all()) {
                Ok(all) => all,
                Err(e) => {
                    c.problem(format!("full read of the log failed: {e}"));
                    return c;
                }
            };
        c.events = all.len() as u64;
        c.segments = store.segment_count();
        if all.len() as u64 != head {
            c.problem(format!("read {} events but the head position is {head}", all.len()));
        }

        // Dense positions and revisions; every event is one that was tried, intact.
        let mut revisions: BTreeMap<&str, u64> = BTreeMap::new();
        let mut stream_positions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        let mut at: HashMap<Uuid, &RecordedEvent> = HashMap::with_capacity(all.len());
        for (i, e) in all.iter().enumerate() {
            if e.position != i as u64 {
                c.problem(format!(
                    "event {i} of the log has position {} (positions not dense)",
                    e.position
                ));
            }
            let next = revisions.entry(e.stream.as_str()).or_insert(0);
            if e.revision != *next {
                c.problem(format!(
                    "event at position {} of {:?} has revision {} where {} was expected",
                    e.position, e.stream, e.revision, next
                ));
            }
            *next = e.revision + 1;
            stream_positions.entry(e.stream.as_str()).or_default().push(e.position);
            if let Some(prev) = at.insert(e.id, e) {
                c.problem(format!(
                    "id {} stored twice, at positions {} and {}",
                    e.id, prev.position, e.position
                ));
            }
            let Some(b) = self.by_first.get(&batch_key(e.id)).map(|&i| &self.batches[i]) else {
                c.problem(format!("event {} at position {} was never tried", e.id, e.position));
                continue;
            };
            let want = event_for(e.id);
            if e.stream != b.stream
                || e.event_type != want.event_type
                || e.content_type != ContentType::Json
                || e.data != want.data
                || e.metadata != want.metadata
                || e.tags != want.tags
            {
                c.problem(format!(
                    "event {} at position {} differs from what was appended (stream {:?}, type {:?}, {} data bytes)",
                    e.id,
                    e.position,
                    e.stream,
                    e.event_type,
                    e.data.len()
                ));
            }
        }

        // Every append: all or nothing, acknowledged ones where acknowledged.
        for b in &mut self.batches {
            let found: Vec<&RecordedEvent> = (0..b.count)
                .filter_map(|i| at.get(&nth_id(b.first, i)).copied())
                .collect();
            let what = format!(
                "append {} ({} events to {}, expected {}, round {}{})",
                b.first,
                b.count,
                b.stream,
                b.expected,
                b.round,
                if b.retried { ", retried" } else { "" }
            );
            if found.is_empty() {
                if let Some(a) = b.acked {
                    c.lost += 1;
                    c.problem(format!("LOST: {what} was acknowledged at {a:?} and is gone"));
                } else if let Some(s) = b.seen {
                    c.lost += 1;
                    c.problem(format!(
                        "LOST: {what} was found at {s:?} by an earlier check and is gone"
                    ));
                } else if !b.checked {
                    c.unacked_absent += 1;
                }
            } else if (found.len() as u64) < b.count {
                c.half_visible += 1;
                let ids: Vec<String> = found.iter().map(|e| format!("{}@{}", e.id, e.position)).collect();
                c.problem(format!(
                    "HALF VISIBLE: {what}: {} of {} events present: {}",
                    found.len(),
                    b.count,
                    ids.join(" ")
                ));
            } else {
                let got = (found[0].position, found[0].revision);
                let consecutive = found
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.position == got.0 + i as u64 && e.revision == got.1 + i as u64);
                if !consecutive {
                    c.problem(format!("{what}: events not at consecutive positions and revisions"));
                }
                if let Some(a) = b.acked.filter(|a| *a != got) {
                    c.problem(format!("{what}: acknowledged at {a:?} but found at {got:?}"));
                }
                if let Some(s) = b.seen.filter(|s| *s != got) {
                    c.problem(format!("{what}: found at {s:?} by an earlier check, now at {got:?}"));
                }
                if b.checked && b.seen.is_none() && !b.retried {
                    c.problem(format!(
                        "{what}: absent at an earlier check, never retried, now present at {got:?}"
                    ));
                }
                if b.acked.is_none() && b.seen.is_none() {
                    c.unacked_present += 1;
                }
                b.seen = Some(got);
            }
            b.checked = true;
        }

        // Stream reads and stream states agree with the log.
        for (stream, positions) in &stream_positions {
            match store.read_stream(stream, Direction::Forward, StreamFrom::Start, usize::MAX) {
                Ok(read) => {
                    let got: Vec<u64> = read.iter().map(|e| e.position).collect();
                    if &got != positions {
                        c.problem(format!(
                            "read_stream({stream}) returned {} events, the log holds {}",
                            got.len(),
                            positions.len()
                        ));
                    }
                }
                Err(e) => c.problem(format!("read_stream({stream}) failed: {e}")),
            }
            let last = positions.len() as u64 - 1;
            match store.stream_info(stream) {
                Some(info) if info.last_revision == last && Some(&info.last_position) == positions.last() => {}
                other => c.problem(format!(
                    "stream_info({stream}) is {other:?}; the log says last revision {last} at {:?}",
                    positions.last()
                )),
            }
        }
        if store.streams().len() != stream_positions.len() {
            c.problem(format!(
                "{} streams listed, {} in the log",
                store.streams().len(),
                stream_positions.len()
            ));
        }

        // The id index finds a sample of events.
        let mut rng = Rng(head);
        for _ in 0..all.len().min(200) {
            let e = &all[rng.below(all.len() as u64) as usize];
            match store.event_by_id(e.id) {
                Ok(Some(found)) if found.position == e.position => {}
                other => c.problem(format!(
                    "event_by_id({}) gave {other:?}, want position {}",
                    e.id, e.position
                )),
            }
        }

        match store.verify() {
            Ok(report) => {
                for p in &report.problems {
                    c.problem(format!("verify: {p}"));
                }
            }
            Err(e) => c.problem(format!("verify failed: {e}")),
        }
        if let Err(e) = store.close() {
            c.problem(format!("close failed: {e}"));
        }
        c
    }

    /// The previous round's unacknowledged appends, for the next child to retry.
    fn retries(&self, round: u64, rng: &mut Rng) -> String {
        self.batches
            .iter()
            .rev()
            .take_while(|b| b.round + 1 == round)
            .filter(|b| b.acked.is_none() && rng.below(2) == 0)
            .take(MAX_RETRIES)
            .map(|b| format!("{},{},{},{};", b.first, b.count, b.stream, b.expected))
            .collect()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Keeps the data directory of a failed run and says where.
fn keep_failure(dir: tempfile::TempDir) -> String {
    let kept = dir.keep();
    let mut msg = format!("data directory kept at {}", kept.display());
    if let Ok(keep) = std::env::var("ANNAL_KILL_KEEP") {
        let base = PathBuf::from(keep);
        let target = (1..)
            .map(|n| base.join(format!("kill-failure-{n}")))
            .find(|p| !p.exists())
            .expect("a free name");
        match copy_dir(&kept, &target) {
            Ok(()) => msg.push_str(&format!(" and copied to {}", target.display())),
            Err(e) => msg.push_str(&format!("; copying it to {} failed: {e}", target.display())),
        }
    }
    msg
}

#[test]
#[ignore = "kills real processes for a while; run with --release --ignored"]
fn kill_torture() {
    let rounds = env_u64("ANNAL_KILL_ROUNDS").unwrap_or(30);
    let seed = env_u64("ANNAL_KILL_SEED").unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        mix(nanos ^ u64::from(std::process::id())) >> 24
    });
    let tmp = tempfile::Builder::new()
        .prefix("annal-kill-")
        .tempdir()
        .expect("temp dir");
    println!(
        "kill torture: {rounds} rounds, seed {seed} (ANNAL_KILL_SEED), {THREADS} writer threads, {} KiB segments, data in {}",
        SEGMENT_SIZE >> 10,
        tmp.path().display()
    );
    let mut parent = Parent {
        dir: tmp.path().to_path_buf(),
        batches: Vec::new(),
        by_first: HashMap::new(),
        totals: Totals::default(),
    };
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut last = Check::default();
    for round in 0..rounds {
        let tag = (seed << 20) | round;
        let retries = parent.retries(round, &mut rng);
        // Mostly 20-400 ms; one round in six 1-20 ms, to kill children while
        // they start, open and recover the store.
        let delay = Duration::from_millis(if rng.below(6) == 0 {
            1 + rng.below(20)
        } else {
            20 + rng.below(381)
        });
        let run = run_child_process(&parent.dir, tag, &retries, delay);
        let tries_before = parent.totals.tries;
        let acks_before = parent.totals.acks;
        let (opened, mut problems) = parent.absorb(round, &run);
        // Every fourth round or so, no check: the next child recovers the killed store itself.
        let checked = round + 1 == rounds || rng.below(4) != 0;
        let mut line = format!(
            "round {round:>3}: killed after {:>3} ms ({}), {} tries, {} acks",
            delay.as_millis(),
            match (opened, run.opened_after) {
                (true, Some(t)) => format!("open took {} ms", t.as_millis()),
                _ => "before open finished".to_string(),
            },
            parent.totals.tries - tries_before,
            parent.totals.acks - acks_before,
        );
        if checked {
            let t = Instant::now();
            let c = parent.check();
            parent.totals.checks += 1;
            parent.totals.unacked_present += c.unacked_present;
            parent.totals.unacked_absent += c.unacked_absent;
            parent.totals.lost += c.lost;
            parent.totals.half_visible += c.half_visible;
            line.push_str(&format!(
                "; store {} events in {} segments; unacked: {} present, {} absent; checked in {} ms",
                c.events,
                c.segments,
                c.unacked_present,
                c.unacked_absent,
                t.elapsed().as_millis()
            ));
            problems.extend(c.problems.iter().cloned());
            if c.more_problems > 0 {
                problems.push(format!("... and {} more problems", c.more_problems));
            }
            last = c;
        } else {
            line.push_str("; not checked (the next child recovers)");
        }
        println!("{line}");
        if !problems.is_empty() {
            let tail = run.lines.len().saturating_sub(30);
            let report = format!(
                "kill torture FAILED in round {round} (seed {seed}, tag {tag}, lost {}, half-visible {}):\n  {}\n\
                 last lines of the child's stdout:\n    {}\nchild's stderr:\n{}\n{}",
                parent.totals.lost,
                parent.totals.half_visible,
                problems.join("\n  "),
                run.lines[tail..].join("\n    "),
                run.stderr,
                keep_failure(tmp)
            );
            panic!("{report}");
        }
    }
    let t = &parent.totals;
    println!(
        "kill torture passed: {rounds} rounds ({} checked, {} killed before the store was open) in {:.1} s; \
         {} appends tried, {} acknowledged ({} events, {} by retries), all checked; \
         unacknowledged appends found whole: {}, absent: {}; lost: {}; half-visible: {}; \
         final store: {} events in {} segments",
        t.checks,
        t.killed_before_open,
        started.elapsed().as_secs_f64(),
        t.tries,
        t.acks,
        t.acked_events,
        t.retries_acked,
        t.unacked_present,
        t.unacked_absent,
        t.lost,
        t.half_visible,
        last.events,
        last.segments
    );
    assert!(t.acks > 0, "the children must have acknowledged something");
}
