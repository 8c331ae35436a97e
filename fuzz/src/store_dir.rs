//! Target `store_dir`: a whole data directory in `SimStorage`, damaged by the
//! fuzz input, then opened, read, verified and appended to.
//!
//! The input is a template number, the append to make (see [`AppendSpec`]),
//! then a list of operations on the template's files (see [`Op`] and
//! [`apply`]); every byte string is a valid input, and the input ends where
//! the bytes run out. Operations can write
//! frames with valid checksums and re-checksum a file, so the fuzzer gets past
//! the CRCs into recovery's and the readers' logic.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use annal::format::record::{self, GroupView, SealView};
use annal::format::segment::{self, SEGMENT_HEADER};
use annal::{
    ContentType, Direction, Durability, EventData, ExpectedVersion, Filter, LogFrom, Options, SimStorage, Storage,
    Store, StreamFrom,
};
use uuid::Uuid;

use crate::{fix_checkpoint, fix_dictionary, fix_frames_from, fix_header64, fix_index};

/// The data directory inside the simulated disk.
pub const DIR: &str = "/d";
/// Most operations applied from one input.
const MAX_OPS: usize = 48;
/// Largest file an operation may grow a file to.
const MAX_FILE: usize = 1 << 20;

/// A store's files, kept to be copied into a fresh simulated disk for each input.
pub struct Template {
    /// Options the store was made with and is reopened with.
    pub options: Options,
    /// Every file (path, bytes), directories implied.
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

/// Stream names of frames the input writes, and of the harness's append.
const STREAMS: [&str; 7] = ["order-1", "order-2", "user-a", "fuzz-append", "", "\u{e9}", "order-"];
/// Event types of frames the input writes.
const TYPES: [&str; 5] = ["Placed", "Paid", "Shipped", "", "Other"];
/// Tags of frames the input writes.
const TAGS: [&str; 4] = ["t:1", "t:2", "x", ""];

/// Number of templates; the first input byte picks one.
pub const TEMPLATES: usize = 4;

/// Background compression off, so that templates and runs are deterministic
/// (template 3 compresses on purpose).
fn options(durability: Durability) -> Options {
    Options::default()
        .no_compression()
        .segment_size(4096)
        .durability(durability)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0xa11a_0000_0000_0000_0000_0000_0000_0000 | n)
}

/// Builds template `kind` with annal itself:
/// 0: `Always`, several sealed segments (with `.idx` and `streams.chk`) and an active one with preallocated zeros;
/// 1: `Never`, one sealed segment and a short active one;
/// 2: a new, empty store;
/// 3: template 0 with its sealed segments compressed (`Store::compress`).
pub fn build_template(kind: usize) -> Template {
    let sim = SimStorage::new();
    let opts = options(if kind == 1 {
        Durability::Never
    } else {
        Durability::Always
    });
    let store = Store::open_with(Arc::new(sim.clone()), DIR, opts.clone()).expect("template store opens");
    let appends = match kind {
        0 | 3 => 60,
        1 => 30,
        _ => 0,
    };
    let streams = ["order-1", "order-2", "user-a"];
    let mut n = 0u128;
    for i in 0..appends {
        let stream = streams[i % streams.len()];
        let events: Vec<EventData> = (0..1 + i % 3)
            .map(|j| {
                n += 1;
                let ev = if (i + j) % 4 == 3 {
                    EventData::binary("Shipped", vec![i as u8; 40 + j])
                } else {
                    EventData::json(
                        if j == 0 { "Placed" } else { "Paid" },
                        format!(r#"{{"i":{i},"j":{j},"total":{}}}"#, i * 10 + j),
                    )
                };
                let ev = ev.with_id(id(n)).with_tag(format!("t:{}", i % 2 + 1));
                if j == 1 {
                    ev.with_tag("x").with_metadata(r#"{"by":"fuzz"}"#)
                } else {
                    ev
                }
            })
            .collect();
        store
            .append(stream, ExpectedVersion::Any, events)
            .expect("template append");
    }
    if kind == 3 {
        store.compress().expect("template compresses");
    }
    store.close().expect("template store closes");
    let mut files = Vec::new();
    snapshot(&sim, Path::new(DIR), &mut files);
    Template { options: opts, files }
}

fn snapshot(sim: &SimStorage, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for name in sim.list(dir).unwrap_or_default() {
        let path = dir.join(name);
        match sim.read_file(&path) {
            Ok(bytes) => out.push((path, bytes)),
            Err(_) => snapshot(sim, &path, out),
        }
    }
}

/// The templates, built once per process.
pub fn templates() -> &'static [Template] {
    static T: OnceLock<Vec<Template>> = OnceLock::new();
    T.get_or_init(|| (0..TEMPLATES).map(build_template).collect())
}

/// Reads the input, byte by byte; `None` once it is used up.
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    /// A number, mostly small: the byte before it says how wide it is.
    fn num(&mut self) -> Option<u64> {
        Some(match self.u8()? % 5 {
            0 | 1 => u64::from(self.u8()?),
            2 => u64::from(self.u16()?),
            3 => self.u64()?,
            _ => u64::MAX - u64::from(self.u8()?),
        })
    }
    fn pick<'s, T>(&mut self, from: &'s [T]) -> Option<&'s T> {
        from.get(self.u8()? as usize % from.len())
    }
}

/// What an operation does (the first byte of each, modulo the count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// file, offset: u32, bit: u8 — `SimStorage::flip_bit`.
    FlipBit = 0,
    /// file, offset, n: u8, n % 16 + 1 bytes — overwrite (growing the file if needed).
    Overwrite = 1,
    /// file, offset — truncate there.
    Truncate = 2,
    /// file, n: u16 — append n zeros.
    Zeros = 3,
    /// file, offset, insert: u8, frame — write a frame with a valid CRC (encoded by annal).
    Frame = 4,
    /// file — make every checksum of the file valid again, by its name.
    FixChecksums = 5,
    /// file, offset, width: u8, value — write an integer (little endian).
    WriteInt = 6,
    /// file — remove it.
    Remove = 7,
    /// file, kind: u8, num — copy it under a new name (`.seg`, `.idx`, `streams.chk`, `annal.meta`, `.tmp`).
    Copy = 8,
    /// file, offset, n: u16 — cut n bytes out of the middle.
    Cut = 9,
}

const OPS: [Op; 10] = [
    Op::FlipBit,
    Op::Overwrite,
    Op::Truncate,
    Op::Zeros,
    Op::Frame,
    Op::FixChecksums,
    Op::WriteInt,
    Op::Remove,
    Op::Copy,
    Op::Cut,
];

/// Files of the directory (not subdirectories), sorted by name.
fn files(sim: &SimStorage) -> Vec<PathBuf> {
    let dir = Path::new(DIR);
    sim.list(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|n| dir.join(n))
        .filter(|p| sim.read_file(p).is_ok())
        .collect()
}

/// An offset in `bytes`: raw, the end of the data, a frame boundary, or the end.
fn offset(c: &mut Cursor<'_>, bytes: &[u8]) -> Option<usize> {
    let len = bytes.len();
    Some(match c.u8()? % 5 {
        0 => c.u16()? as usize % (len + 1),
        1 => bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1),
        2 => {
            // The start of the k-th frame after the header (or where the walk stops).
            let k = c.u8()?;
            let mut at = SEGMENT_HEADER.min(len);
            for _ in 0..k {
                match record::frame_len(&bytes[at..]) {
                    Some(n) if n > record::FRAME_HEADER && at + n <= len => at += n,
                    _ => break,
                }
            }
            at
        }
        3 => c.u32()? as usize % (len + 1),
        _ => len,
    })
}

fn write_at(bytes: &mut Vec<u8>, at: usize, data: &[u8], insert: bool) {
    let at = at.min(bytes.len());
    if insert {
        bytes.splice(at..at, data.iter().copied());
    } else {
        if bytes.len() < at + data.len() {
            bytes.resize(at + data.len(), 0);
        }
        bytes[at..at + data.len()].copy_from_slice(data);
    }
}

/// Encodes a frame described by the input; a seal may get the right content CRC.
fn frame(c: &mut Cursor<'_>, bytes: &[u8], at: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match c.u8()? % 4 {
        0 => {
            let flags = c.u8()?;
            let position = c.num()?;
            let revision = c.num()?;
            let timestamp = c.num()? as i64;
            let id = Uuid::from_u128(0xa11a_0000_0000_0000_0000_0000_0000_0000 | u128::from(c.num()?));
            let stream = c.pick(&STREAMS)?;
            let event_type = c.pick(&TYPES)?;
            let tags: Vec<String> = (0..c.u8()? % 3)
                .map(|_| c.pick(&TAGS).map(|t| t.to_string()))
                .collect::<Option<_>>()?;
            let mlen = c.u8()? as usize % 8;
            let metadata = c.bytes(mlen)?;
            let dlen = c.u8()? as usize % 16;
            let data = c.bytes(dlen)?;
            record::encode_event(
                &mut out,
                flags & 1 != 0,
                position,
                revision,
                timestamp,
                id,
                if flags & 2 != 0 {
                    ContentType::Json
                } else {
                    ContentType::Binary
                },
                stream,
                event_type,
                &tags,
                metadata,
                data,
            )
            .expect("a small event fits its frame");
        }
        1 => {
            let next_position = c.num()?;
            let event_count = c.num()?;
            let content_crc = match c.u8()? % 2 {
                0 if at >= SEGMENT_HEADER => crc32fast::hash(&bytes[SEGMENT_HEADER..at.min(bytes.len())]),
                _ => c.u32()?,
            };
            record::encode_seal(
                &mut out,
                &SealView {
                    next_position,
                    event_count,
                    content_crc,
                },
            );
        }
        2 => {
            let durable_end = match c.u8()? % 2 {
                0 => at as u64,
                _ => c.num()?,
            };
            record::encode_group(&mut out, &GroupView { durable_end });
        }
        _ => {
            let kind = if c.u8()? % 4 == 0 { 5 } else { 4 };
            out = crate::lost_frame(kind, c.num()?, c.num()?);
        }
    }
    Some(out)
}

/// Makes every checksum of a file valid, choosing the format by its name.
fn fix_checksums(name: &str, bytes: &mut [u8]) {
    match segment::parse_file_name(name) {
        Some((_, "seg")) => {
            fix_header64(bytes);
            fix_frames_from(bytes, SEGMENT_HEADER);
            crate::fix_compressed_table(bytes);
        }
        Some((_, "idx")) => fix_index(bytes),
        _ if name.starts_with("streams.chk") => fix_checkpoint(bytes),
        _ if name.starts_with("annal.meta") => fix_header64(bytes),
        _ if name.starts_with("dictionary.zdict") => fix_dictionary(bytes),
        _ => {}
    }
}

/// Applies one operation; `None` when the input ran out.
fn apply(sim: &SimStorage, c: &mut Cursor<'_>) -> Option<()> {
    let op = OPS[c.u8()? as usize % OPS.len()];
    let all = files(sim);
    if all.is_empty() {
        return None;
    }
    let path = c.pick(&all)?.clone();
    let mut bytes = sim.read_file(&path).ok()?;
    let name = path.file_name()?.to_string_lossy().into_owned();
    if trace() {
        eprintln!("{op:?} {name} (of {}), then {:02x?}", all.len(), c.data);
    }
    match op {
        Op::FlipBit => {
            let at = c.u32()? as u64;
            let bit = c.u8()?;
            if !bytes.is_empty() {
                let _ = sim.flip_bit(&path, at % bytes.len() as u64, bit);
            }
            return Some(());
        }
        Op::Overwrite => {
            let at = offset(c, &bytes)?;
            let n = c.u8()? as usize % 16 + 1;
            let data = c.bytes(n)?;
            write_at(&mut bytes, at, data, false);
        }
        Op::Truncate => {
            let at = offset(c, &bytes)?;
            bytes.truncate(at);
        }
        Op::Zeros => {
            let n = c.u16()? as usize;
            bytes.resize(bytes.len() + n, 0);
        }
        Op::Frame => {
            let at = offset(c, &bytes)?;
            let insert = c.u8()? % 2 == 0;
            let f = frame(c, &bytes, at)?;
            write_at(&mut bytes, at, &f, insert);
        }
        Op::FixChecksums => fix_checksums(&name, &mut bytes),
        Op::WriteInt => {
            let at = offset(c, &bytes)?;
            let width = [1, 2, 4, 8][c.u8()? as usize % 4];
            let old = bytes
                .get(at..at + 8)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            let value = match c.u8()? % 4 {
                0 => old.wrapping_add(u64::from(c.u8()?)),
                1 => old.wrapping_sub(u64::from(c.u8()?)),
                _ => c.num()?,
            };
            write_at(&mut bytes, at, &value.to_le_bytes()[..width], false);
        }
        Op::Remove => {
            let _ = sim.remove(&path);
            return Some(());
        }
        Op::Copy => {
            let new = match c.u8()? % 5 {
                0 => segment::segment_file_name(c.num()?),
                1 => format!("{:020}.idx", c.num()?),
                2 => "streams.chk".to_string(),
                3 => "annal.meta".to_string(),
                _ => format!("{name}.tmp"),
            };
            let _ = sim.write_file(&Path::new(DIR).join(new), &bytes);
            return Some(());
        }
        Op::Cut => {
            let at = offset(c, &bytes)?;
            let n = c.u16()? as usize;
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
    }
    bytes.truncate(MAX_FILE);
    let _ = sim.write_file(&path, &bytes);
    Some(())
}

/// A fresh simulated disk holding template `t`'s files.
pub fn restore(t: &Template) -> SimStorage {
    let sim = SimStorage::new();
    sim.create_dir_all(Path::new(DIR)).expect("sim dir");
    for (path, bytes) in &t.files {
        if let Some(parent) = path.parent() {
            sim.create_dir_all(parent).expect("sim dir");
        }
        sim.write_file(path, bytes).expect("sim write");
    }
    sim
}

/// The append the harness makes once the damaged store is open.
#[derive(Debug, Clone, Copy)]
pub struct AppendSpec {
    /// Index into the stream names.
    stream: usize,
    /// 0: `Any`, 1: `NoStream`, 2: `StreamExists`, 3: `Exact` (the stream's current revision, or 0).
    expected: u8,
}

/// Applies the input's operations to a copy of its template; returns the
/// disk, the options and the append to make.
pub fn prepare(data: &[u8]) -> (SimStorage, Options, AppendSpec) {
    let templates = templates();
    let mut c = Cursor { data };
    let t = &templates[c.u8().unwrap_or(0) as usize % templates.len()];
    let a = c.u8().unwrap_or(3);
    let append = AppendSpec {
        stream: a as usize % STREAMS.len(),
        expected: (a / 8) % 4,
    };
    let sim = restore(t);
    for _ in 0..MAX_OPS {
        if apply(&sim, &mut c).is_none() {
            break;
        }
    }
    (sim, t.options.clone(), append)
}

/// `ANNAL_FUZZ_TRACE=1`: print each operation as it is applied (for replaying an input).
fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("ANNAL_FUZZ_TRACE").is_some_and(|v| v != "0"))
}

/// Strict unless `ANNAL_FUZZ_STRICT=0`: a store that opened, acknowledged the
/// append and closed cleanly must open again and still hold that append,
/// whatever its files looked like when it was first opened.
fn strict() -> bool {
    static S: OnceLock<bool> = OnceLock::new();
    *S.get_or_init(|| std::env::var_os("ANNAL_FUZZ_STRICT").is_none_or(|v| v != "0"))
}

/// Reads everything there is to read of an open store; errors are fine.
fn exercise(store: &Store) {
    let all = Filter::all();
    let forward = store.read_all(Direction::Forward, LogFrom::Start, 1000, &all);
    let _ = store.read_all(Direction::Backward, LogFrom::End, 1000, &all);
    let events = forward.unwrap_or_default();
    let head = store.head_position();
    let ts = events.first().map(|e| e.timestamp_micros);
    let filters = [
        Filter::all().with_type("Placed"),
        Filter::all().with_tag("t:1"),
        Filter::all().with_type("Paid").with_type("Shipped").with_tag("x"),
        Filter::all().with_tag("t:2").with_tag("x"),
        Filter::all().with_stream_prefix("order-"),
        Filter::all().with_stream_prefix(""),
        Filter::all().with_time(ts, ts.map(|t| t.saturating_add(1))),
        Filter::all()
            .with_time(Some(i64::MIN), Some(i64::MAX))
            .with_type("Placed"),
    ];
    for f in &filters {
        let _ = store.read_all(Direction::Forward, LogFrom::Start, 100, f);
        let _ = store.read_all(Direction::Backward, LogFrom::Position(head / 2), 100, f);
    }
    let _ = store.read_all(Direction::Forward, LogFrom::Position(u64::MAX), 10, &all);
    let _ = store.read_all(Direction::Backward, LogFrom::Position(u64::MAX), 10, &all);
    for s in store.streams().iter().take(32) {
        let _ = store.stream_info(&s.name);
        let _ = store.read_stream(&s.name, Direction::Forward, StreamFrom::Start, 1000);
        let _ = store.read_stream(&s.name, Direction::Backward, StreamFrom::End, 1000);
        let _ = store.read_stream(
            &s.name,
            Direction::Forward,
            StreamFrom::Revision(s.last_revision / 2),
            10,
        );
        let _ = store.read_stream(&s.name, Direction::Backward, StreamFrom::Revision(u64::MAX), 10);
    }
    for e in events.iter().take(8) {
        let _ = store.event_by_id(e.id);
    }
    let _ = store.event_by_id(id(1));
    let _ = store.event_by_id(Uuid::nil());
    let _ = store.segment_count();
    let _ = store.verify();
}

/// The `store_dir` target: damage a template store as the input says, open it,
/// read everything, verify, append once, close, open it again and read and verify.
pub fn store_dir(data: &[u8]) {
    let (sim, options, spec) = prepare(data);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    // A read-only open of whatever is there steps around damage, never panics,
    // and never writes a byte.
    let before = sim.mutating_ops();
    if let Ok(reader) = Store::open_read_only_with(storage.clone(), DIR, options.clone()) {
        exercise(&reader);
        let _ = reader.close();
    }
    assert_eq!(sim.mutating_ops(), before, "a read-only open wrote to the store");
    let Ok(store) = Store::open_with(storage.clone(), DIR, options.clone()) else {
        return;
    };
    exercise(&store);
    let stream = STREAMS[spec.stream];
    let expected = match spec.expected {
        0 => ExpectedVersion::Any,
        1 => ExpectedVersion::NoStream,
        2 => ExpectedVersion::StreamExists,
        _ => ExpectedVersion::Exact(store.stream_info(stream).map_or(0, |s| s.last_revision)),
    };
    let appended = store.append(
        stream,
        expected,
        vec![EventData::json("Fuzzed", "{}").with_tag("t:1").with_id(id(0xf00d))],
    );
    let closed = store.close();
    // Opening again must not panic either; and (unless ANNAL_FUZZ_STRICT=0) a
    // store that opened, acknowledged an append and closed cleanly must open
    // again and still hold that append.
    let strict = strict() && appended.is_ok() && closed.is_ok();
    match Store::open_with(storage, DIR, options) {
        Ok(store) => {
            let found = store.event_by_id(id(0xf00d));
            if strict {
                let found = found.expect("reading the acknowledged append after reopening");
                assert!(found.is_some(), "acknowledged append missing after reopening");
            }
            let _ = store.read_all(Direction::Forward, LogFrom::Start, 1000, &Filter::all());
            let _ = store.verify();
        }
        Err(e) => assert!(
            !strict,
            "store opened, acknowledged an append, closed cleanly, then failed to open: {e}"
        ),
    }
}
