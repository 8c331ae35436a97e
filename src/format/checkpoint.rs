//! Small files beside the log: the store identity file (`annal.meta`), the
//! stream-state checkpoint (`streams.chk`) and the durable-end checkpoint
//! (`durable.chk`), each with its one encoder and decoder (see format.md,
//! "Store identity", "Stream checkpoint" and "Durable-end checkpoint").
//!
//! `streams.chk` is derived data: losing it costs only a slower open, never an
//! event. `durable.chk` is a claim about the log (how far the active segment
//! was durable at a clean close); recovery uses it to tell damage from a torn
//! tail. `active.idc` is derived data too: the active segment's in-memory index
//! as of the clean close that wrote `durable.chk`, trusted only when it
//! matches that claim. This module must never write the log.

use std::collections::HashMap;
use std::path::Path;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::format::codec::{Reader, le_i64, le_u32, le_u64};

/// Magic bytes of `annal.meta`.
pub const META_MAGIC: &[u8; 8] = b"ANNALMET";
/// The store format version, written into `annal.meta`.
pub const STORE_VERSION: u32 = 1;
/// Name of the identity file.
pub const META_FILE: &str = "annal.meta";
/// Name of the stream checkpoint.
pub const STREAMS_FILE: &str = "streams.chk";
/// Magic bytes of `streams.chk`.
pub const STREAMS_MAGIC: &[u8; 8] = b"ANNALCHK";
/// The version of `streams.chk` annal writes: 2, entries sorted by name
/// behind a table of their offsets, searched in place ([`StreamTable`]).
/// Version 1 (entries in no order) is still read.
const STREAMS_VERSION: u32 = 2;
/// Why [`encode_streams`] refuses a checkpoint (then written in version 1).
const TOO_LARGE_FOR_V2: &str = "stream checkpoint larger than 4 GiB";
/// Bytes before the offset table of a version-2 `streams.chk`.
const STREAMS_HEADER: usize = 32;
/// Smallest entry: an empty name's length, a revision and a position.
const STREAMS_MIN_ENTRY: usize = 18;
/// Name of the durable-end checkpoint, written at every clean close.
pub const DURABLE_FILE: &str = "durable.chk";
/// Magic bytes of `durable.chk`.
pub const DURABLE_MAGIC: &[u8; 8] = b"ANNALDUR";
const DURABLE_VERSION: u32 = 1;
/// Name of the active segment's index checkpoint, written at every clean close.
pub const ACTIVE_INDEX_FILE: &str = "active.idc";
/// Magic bytes of `active.idc`.
pub const ACTIVE_INDEX_MAGIC: &[u8; 8] = b"ANNALAIX";
const ACTIVE_INDEX_VERSION: u32 = 1;
/// Bytes before the index snapshot in `active.idc`.
const ACTIVE_INDEX_HEADER: usize = 48;

/// The identity of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreMeta {
    /// Random id given at creation.
    pub store_id: Uuid,
    /// Creation time, microseconds since the Unix epoch.
    pub created_micros: i64,
}

impl StoreMeta {
    /// Encodes the 64-byte identity file.
    pub fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(META_MAGIC);
        b[8..12].copy_from_slice(&STORE_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.created_micros.to_le_bytes());
        b[24..40].copy_from_slice(self.store_id.as_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks the identity file.
    pub fn decode(b: &[u8], file: &Path) -> Result<Self> {
        if b.len() != 64 || &b[0..8] != META_MAGIC {
            return Err(Error::NotAStore {
                path: file.to_path_buf(),
                reason: "annal.meta is not an annal identity file".into(),
            });
        }
        if crc32fast::hash(&b[..60]) != le_u32(b, 60) {
            return Err(Error::corruption(file, 0, "annal.meta checksum mismatch"));
        }
        let version = le_u32(b, 8);
        if version != STORE_VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: STORE_VERSION,
            });
        }
        if b[12..16] != [0; 4] {
            return Err(Error::corruption(file, 12, "unknown annal.meta flags"));
        }
        Ok(StoreMeta {
            created_micros: le_i64(b, 16),
            store_id: Uuid::from_bytes(b[24..40].try_into().expect("16 bytes")),
        })
    }
}

/// A stream's current state, as the writer and readers need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// Its last revision.
    pub last_revision: u64,
    /// Position of its last event.
    pub last_position: u64,
}

/// The state of every stream up to (not including) a position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamsCheckpoint {
    /// Every event before this position is covered.
    pub covered_position: u64,
    /// Stream states.
    pub streams: HashMap<Box<str>, StreamState>,
}

impl StreamsCheckpoint {
    /// Encodes the checkpoint file. Fails with [`Error::InvalidInput`] if a
    /// stream name is longer than its 16-bit length field (names come from
    /// validated appends or from the log, so the store's never are).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut entries: Vec<(&str, &StreamState)> = self.streams.iter().map(|(n, s)| (&**n, s)).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        match encode_streams(self.covered_position, &entries) {
            Err(Error::InvalidInput(why)) if why == TOO_LARGE_FOR_V2 => self.encode_v1(),
            other => other,
        }
    }

    /// Encodes version 1 (no offset table), for a checkpoint too large for
    /// version 2's 32-bit offsets.
    fn encode_v1(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(STREAMS_HEADER + self.streams.len() * 40);
        out.extend_from_slice(STREAMS_MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.covered_position.to_le_bytes());
        out.extend_from_slice(&(self.streams.len() as u64).to_le_bytes());
        for (name, s) in &self.streams {
            put_entry(&mut out, name, s)?;
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes and checks a checkpoint file.
    pub fn decode(b: &[u8], file: &Path) -> Result<Self> {
        let bad = |reason: &str| Error::corruption(file, 0, reason);
        let (body, version) = checked(b, file, STREAMS_MAGIC, 36, "stream checkpoint")?;
        if version == STREAMS_VERSION {
            let table = StreamTable::check(b, file)?;
            return Ok(StreamsCheckpoint {
                covered_position: table.covered_position,
                streams: table.iter(b).map(|(n, s)| (n.into(), s)).collect(),
            });
        }
        if version != 1 {
            return Err(Error::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: STREAMS_VERSION,
            });
        }
        if b[12..16] != [0; 4] {
            return Err(bad("unknown stream checkpoint flags"));
        }
        let covered_position = le_u64(b, 16);
        let count = le_u64(b, 24);
        let mut r = Reader::new(&body[32..]);
        // Each entry takes at least 18 bytes, which bounds the allocation.
        let count = usize::try_from(count)
            .ok()
            .filter(|c| *c <= r.buf.len() / 18)
            .ok_or_else(|| bad("stream count larger than the file"))?;
        let mut streams = HashMap::with_capacity(count);
        for _ in 0..count {
            let parsed = (|| {
                let name = r.str16()?;
                Ok::<_, crate::format::codec::DecodeError>((name, r.u64()?, r.u64()?))
            })();
            let (name, last_revision, last_position) = parsed.map_err(|_| bad("malformed stream entry"))?;
            streams.insert(
                name.into(),
                StreamState {
                    last_revision,
                    last_position,
                },
            );
        }
        if !r.buf.is_empty() {
            return Err(bad("trailing bytes in stream checkpoint"));
        }
        Ok(StreamsCheckpoint {
            covered_position,
            streams,
        })
    }
}

/// Encodes a version-2 `streams.chk` of `entries`, which must be sorted by
/// name, each name once. Fails with [`Error::InvalidInput`] on a name longer
/// than 16 bits of length or a file past 4 GiB (32-bit offsets).
pub fn encode_streams(covered_position: u64, entries: &[(&str, &StreamState)]) -> Result<Vec<u8>> {
    let too_large = || Error::InvalidInput(TOO_LARGE_FOR_V2.into());
    let body: usize = entries.iter().map(|(n, _)| 4 + STREAMS_MIN_ENTRY + n.len()).sum();
    let mut out = Vec::with_capacity(STREAMS_HEADER + body + 4);
    out.extend_from_slice(STREAMS_MAGIC);
    out.extend_from_slice(&STREAMS_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&covered_position.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    let mut at = STREAMS_HEADER + entries.len() * 4;
    for (name, _) in entries {
        out.extend_from_slice(&u32::try_from(at).map_err(|_| too_large())?.to_le_bytes());
        at += STREAMS_MIN_ENTRY + name.len();
    }
    u32::try_from(at).map_err(|_| too_large())?;
    for (name, s) in entries {
        put_entry(&mut out, name, s)?;
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// One stream's entry, as both versions of `streams.chk` write it: the
/// name's length (16 bits) and bytes, its last revision and last position.
fn put_entry(out: &mut Vec<u8>, name: &str, s: &StreamState) -> Result<()> {
    let len = u16::try_from(name.len())
        .map_err(|_| Error::InvalidInput(format!("stream name of {} bytes in a checkpoint", name.len())))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&s.last_revision.to_le_bytes());
    out.extend_from_slice(&s.last_position.to_le_bytes());
    Ok(())
}

/// A checked version-2 `streams.chk`, searched in place: the bytes stay
/// where they are (a mapping) and a stream's state is found by binary search
/// over the sorted entries, so that open costs no allocation per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTable {
    /// Every event before this position is covered.
    pub covered_position: u64,
    /// Number of streams.
    pub count: usize,
}

impl StreamTable {
    /// Checks a version-2 file whole: magic, checksum, version, flags, every
    /// offset pointing at the entry after the one before, every name UTF-8
    /// and strictly after the one before, the last entry ending at the
    /// checksum. After this, [`StreamTable::get`] and [`StreamTable::iter`] on
    /// the same bytes find every entry without another check.
    pub fn check(b: &[u8], file: &Path) -> Result<Self> {
        let bad = |reason: &str| Error::corruption(file, 0, reason);
        let (body, version) = checked(b, file, STREAMS_MAGIC, STREAMS_HEADER + 4, "stream checkpoint")?;
        if version != STREAMS_VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: STREAMS_VERSION,
            });
        }
        if b[12..16] != [0; 4] {
            return Err(bad("unknown stream checkpoint flags"));
        }
        let count = usize::try_from(le_u64(b, 24))
            .ok()
            .filter(|c| {
                c.checked_mul(4 + STREAMS_MIN_ENTRY)
                    .is_some_and(|n| n <= body.len() - STREAMS_HEADER)
            })
            .ok_or_else(|| bad("stream count larger than the file"))?;
        let table = StreamTable {
            covered_position: le_u64(b, 16),
            count,
        };
        let mut at = STREAMS_HEADER + count * 4;
        let mut last: Option<&str> = None;
        for i in 0..count {
            if table.offset(b, i) != Some(at) {
                return Err(bad("stream entry offset out of order"));
            }
            let (name, _, next) = entry_at(body, at).ok_or_else(|| bad("malformed stream entry"))?;
            if last.is_some_and(|l| l >= name) {
                return Err(bad("stream entries not sorted by name"));
            }
            last = Some(name);
            at = next;
        }
        if at != body.len() {
            return Err(bad("trailing bytes in stream checkpoint"));
        }
        Ok(table)
    }

    fn offset(&self, b: &[u8], i: usize) -> Option<usize> {
        let at = STREAMS_HEADER + i * 4;
        let o = b.get(at..at + 4)?;
        usize::try_from(u32::from_le_bytes(o.try_into().ok()?)).ok()
    }

    /// The state of `stream` in the checked bytes `b`, if it has an entry.
    pub fn get(&self, b: &[u8], stream: &str) -> Option<StreamState> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (name, state, _) = entry_at(b, self.offset(b, mid)?)?;
            match name.cmp(stream) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(state),
            }
        }
        None
    }

    /// The entries of the checked bytes `b` whose names start with `prefix`, sorted.
    pub fn with_prefix<'a>(&self, b: &'a [u8], prefix: &'a str) -> impl Iterator<Item = (&'a str, StreamState)> + 'a {
        let table = *self;
        // The first entry not before `prefix`: every name with it follows.
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match table.offset(b, mid).and_then(|at| entry_at(b, at)) {
                Some((name, _, _)) if name < prefix => lo = mid + 1,
                _ => hi = mid,
            }
        }
        (lo..self.count)
            .map_while(move |i| entry_at(b, table.offset(b, i)?))
            .take_while(move |(name, _, _)| name.starts_with(prefix))
            .map(|(name, state, _)| (name, state))
    }

    /// Every entry of the checked bytes `b`, sorted by name.
    pub fn iter<'a>(&self, b: &'a [u8]) -> impl Iterator<Item = (&'a str, StreamState)> + 'a {
        let table = *self;
        (0..self.count).filter_map(move |i| {
            let (name, state, _) = entry_at(b, table.offset(b, i)?)?;
            Some((name, state))
        })
    }
}

/// The entry at `at` in `b`: its name, its state and the offset after it.
fn entry_at(b: &[u8], at: usize) -> Option<(&str, StreamState, usize)> {
    let len = usize::from(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let name_end = at + 2 + len;
    let name = std::str::from_utf8(b.get(at + 2..name_end)?).ok()?;
    let fixed = b.get(name_end..name_end + 16)?;
    let state = StreamState {
        last_revision: le_u64(fixed, 0),
        last_position: le_u64(fixed, 8),
    };
    Some((name, state, name_end + 16))
}

/// How far the log was durable when the store was last closed cleanly: every
/// byte of segment `segment_base` before `durable_end` was synced, and those
/// bytes hold every position before `next_position`. Recovery treats damage or
/// missing bytes before `durable_end` as corruption, never as a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableMark {
    /// Base position of the segment that was active at the close.
    pub segment_base: u64,
    /// Offset in that segment just past the last committed append.
    pub durable_end: u64,
    /// Position after the last event in those bytes.
    pub next_position: u64,
    /// CRC-32 of the segment's bytes `[64, durable_end)`.
    pub content_crc: u32,
}

impl DurableMark {
    /// Encodes the 64-byte checkpoint file.
    pub fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(DURABLE_MAGIC);
        b[8..12].copy_from_slice(&DURABLE_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.segment_base.to_le_bytes());
        b[24..32].copy_from_slice(&self.durable_end.to_le_bytes());
        b[32..40].copy_from_slice(&self.next_position.to_le_bytes());
        b[40..44].copy_from_slice(&self.content_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks the checkpoint file.
    pub fn decode(b: &[u8], file: &Path) -> Result<Self> {
        if b.len() != 64 || &b[0..8] != DURABLE_MAGIC {
            return Err(Error::corruption(file, 0, "not a durable-end checkpoint"));
        }
        if crc32fast::hash(&b[..60]) != le_u32(b, 60) {
            return Err(Error::corruption(file, 0, "durable-end checkpoint checksum mismatch"));
        }
        let version = le_u32(b, 8);
        if version != DURABLE_VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: DURABLE_VERSION,
            });
        }
        if b[12..16] != [0; 4] || b[44..60].iter().any(|x| *x != 0) {
            return Err(Error::corruption(file, 12, "unknown durable-end checkpoint fields"));
        }
        let mark = DurableMark {
            segment_base: le_u64(b, 16),
            durable_end: le_u64(b, 24),
            next_position: le_u64(b, 32),
            content_crc: le_u32(b, 40),
        };
        if mark.durable_end < crate::format::segment::SEGMENT_HEADER as u64 || mark.next_position < mark.segment_base {
            return Err(Error::corruption(file, 16, "durable-end checkpoint out of range"));
        }
        Ok(mark)
    }
}

/// Encodes `active.idc`: the in-memory `index` of the active segment that
/// `mark` describes (written at the clean close that writes `mark`), so that
/// the next open need not scan the segment's bytes before `mark.durable_end`
/// to rebuild it. See format.md, "Active index checkpoint".
pub fn encode_active_index(mark: &DurableMark, index: &crate::format::index::MemIndex) -> Result<Vec<u8>> {
    let body = index.encode_snapshot()?;
    let mut out = Vec::with_capacity(ACTIVE_INDEX_HEADER + body.len() + 4);
    out.extend_from_slice(ACTIVE_INDEX_MAGIC);
    out.extend_from_slice(&ACTIVE_INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&mark.segment_base.to_le_bytes());
    out.extend_from_slice(&mark.durable_end.to_le_bytes());
    out.extend_from_slice(&mark.next_position.to_le_bytes());
    out.extend_from_slice(&mark.content_crc.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The body of a checkpoint file (all but its trailing CRC) and its
/// version, once its magic (`magic`), length (at least `min_len`, and never
/// under 16) and checksum are right; `what` names the file in errors.
fn checked<'a>(b: &'a [u8], file: &Path, magic: &[u8; 8], min_len: usize, what: &str) -> Result<(&'a [u8], u32)> {
    if b.len() < min_len.max(16) || &b[0..8] != magic {
        let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        return Err(Error::corruption(file, 0, format!("not {article} {what}")));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(Error::corruption(file, 0, format!("{what} checksum mismatch")));
    }
    Ok((body, le_u32(b, 8)))
}

/// Decodes `active.idc` into the index it holds, if it is whole (its
/// checksum), of a known version, made for the store's indexed metadata
/// `fields`, and describes exactly what `mark` (the `durable.chk` read at
/// this open) claims: the same segment, durable end, next position and
/// content CRC, its index ending there. Any other file is an error: the
/// caller then rebuilds the index by scanning the segment, as without it.
pub fn decode_active_index(
    b: &[u8],
    file: &Path,
    mark: &DurableMark,
    fields: std::sync::Arc<crate::format::index::MetaFields>,
) -> Result<crate::format::index::MemIndex> {
    use crate::format::index::Lookup;
    let bad = |reason: &str| Error::corruption(file, 0, reason);
    let (body, version) = checked(
        b,
        file,
        ACTIVE_INDEX_MAGIC,
        ACTIVE_INDEX_HEADER + 4,
        "active index checkpoint",
    )?;
    if version != ACTIVE_INDEX_VERSION {
        return Err(Error::UnsupportedVersion {
            file: file.to_path_buf(),
            found: version,
            supported: ACTIVE_INDEX_VERSION,
        });
    }
    if b[12..16] != [0; 4] || b[44..48] != [0; 4] {
        return Err(bad("unknown active index checkpoint fields"));
    }
    let written = DurableMark {
        segment_base: le_u64(b, 16),
        durable_end: le_u64(b, 24),
        next_position: le_u64(b, 32),
        content_crc: le_u32(b, 40),
    };
    if written != *mark {
        return Err(bad("active index checkpoint is not of the last clean close"));
    }
    let index = crate::format::index::MemIndex::decode_snapshot(&body[ACTIVE_INDEX_HEADER..], fields).map_err(|e| {
        Error::corruption(
            file,
            ACTIVE_INDEX_HEADER as u64,
            format!("active index checkpoint: {}", e.0),
        )
    })?;
    if index.base() != mark.segment_base
        || index.end_offset() != mark.durable_end
        || index.next_position() != mark.next_position
    {
        return Err(bad("active index checkpoint disagrees with its durable end"));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        let m = StoreMeta {
            store_id: Uuid::from_u128(5),
            created_micros: 77,
        };
        assert_eq!(StoreMeta::decode(&m.encode(), Path::new("m")).unwrap(), m);
        assert!(StoreMeta::decode(b"hello", Path::new("m")).is_err());
    }

    #[test]
    fn streams_checkpoint_round_trips_and_detects_damage() {
        let mut c = StreamsCheckpoint {
            covered_position: 10,
            ..Default::default()
        };
        c.streams.insert(
            "a".into(),
            StreamState {
                last_revision: 3,
                last_position: 9,
            },
        );
        let bytes = c.encode().unwrap();
        assert_eq!(StreamsCheckpoint::decode(&bytes, Path::new("c")).unwrap(), c);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 4;
            assert!(StreamsCheckpoint::decode(&bad, Path::new("c")).is_err());
        }
    }

    #[test]
    fn a_stream_table_finds_every_stream_in_place_and_refuses_damage() {
        let mut c = StreamsCheckpoint {
            covered_position: 1234,
            ..Default::default()
        };
        for i in 0..300u64 {
            let name = if i % 7 == 0 {
                format!("$meta-s{i}")
            } else {
                format!("s{i}")
            };
            c.streams.insert(
                name.into(),
                StreamState {
                    last_revision: i,
                    last_position: 1000 + i,
                },
            );
        }
        c.streams.insert(
            "".into(),
            StreamState {
                last_revision: 1,
                last_position: 2,
            },
        );
        let bytes = c.encode().unwrap();
        let t = StreamTable::check(&bytes, Path::new("c")).unwrap();
        assert_eq!((t.covered_position, t.count), (1234, 301));
        for (name, state) in &c.streams {
            assert_eq!(t.get(&bytes, name), Some(*state), "{name}");
        }
        for absent in ["s", "s1000", "$meta-s1", "zz", "\u{0}"] {
            assert_eq!(t.get(&bytes, absent), None, "{absent}");
        }
        let mut meta: Vec<&str> = t.with_prefix(&bytes, "$meta-").map(|(n, _)| n).collect();
        let mut want: Vec<&str> = c
            .streams
            .keys()
            .map(|n| &**n)
            .filter(|n| n.starts_with("$meta-"))
            .collect();
        want.sort_unstable();
        assert_eq!(meta.len(), 43);
        assert_eq!(meta, want);
        meta = t.with_prefix(&bytes, "$forward-").map(|(n, _)| n).collect();
        assert!(meta.is_empty());
        assert_eq!(t.iter(&bytes).count(), 301);
        assert_eq!(StreamsCheckpoint::decode(&bytes, Path::new("c")).unwrap(), c);
        // Version 1, still read (and written past version 2's 32-bit offsets).
        let v1 = c.encode_v1().unwrap();
        assert_eq!(v1[8], 1);
        assert!(StreamTable::check(&v1, Path::new("c")).is_err());
        assert_eq!(StreamsCheckpoint::decode(&v1, Path::new("c")).unwrap(), c);
        for len in [0, 35, 36, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                StreamTable::check(&bytes[..len], Path::new("c")).is_err(),
                "cut to {len}"
            );
        }
        // Unsorted entries are refused even with a right checksum.
        let mut unsorted = bytes.clone();
        // "$meta-s105" (the third entry) becomes "!meta-s105", before the second ("$meta-s0").
        let third = t.offset(&bytes, 2).unwrap();
        assert_eq!(unsorted[third + 2], b'$');
        unsorted[third + 2] = b'!';
        let end = unsorted.len() - 4;
        let crc = crc32fast::hash(&unsorted[..end]);
        unsorted[end..].copy_from_slice(&crc.to_le_bytes());
        assert!(StreamTable::check(&unsorted, Path::new("c")).is_err());
    }

    #[test]
    fn durable_mark_round_trips_and_detects_damage() {
        let m = DurableMark {
            segment_base: 7,
            durable_end: 4096,
            next_position: 19,
            content_crc: 0xdead_beef,
        };
        let bytes = m.encode();
        assert_eq!(DurableMark::decode(&bytes, Path::new("d")).unwrap(), m);
        for i in 0..bytes.len() {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(
                DurableMark::decode(&bad, Path::new("d")).is_err(),
                "flip at {i} accepted"
            );
        }
        assert!(DurableMark::decode(&bytes[..63], Path::new("d")).is_err());
    }
}
