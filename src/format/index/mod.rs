//! Indexes of one segment: where each position lives, which positions belong
//! to a stream, an event type, a tag or an id (see format.md, "Index files").
//!
//! The active segment's index lives in memory ([`MemIndex`]); when a segment
//! is sealed, its index is written once into an immutable `.idx` file and read
//! back through a memory map ([`SegmentIndex`]), so sealed data costs no heap
//! per event. Both answer the same questions through [`Lookup`]. Files are
//! written in version 5 (compact: [`v2`], with [`keyed`] lists), or in
//! version 1 ([`v1`]) when a segment is too large for version 2's 32-bit
//! fields; every version is read. This module owns the `.idx` encoders and
//! decoders; it must never read segment bytes.
//!
//! This file holds what every version shares: the [`Lookup`] questions, the
//! hashes, and the parts a file is encoded from. Beside it: [`header`] (the
//! file's frame and shared header), [`sealed`] ([`SegmentIndex`]), [`bloom`]
//! (the filters), [`memory`], [`v1`], [`v2`], [`keyed`], [`summary`],
//! [`fields`] and [`tag_key`].

use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};

pub(crate) mod bloom;
mod fields;
mod header;
mod keyed;
mod memory;
mod sealed;
mod summary;
mod tag_key;
mod v1;
mod v2;

use bloom::{blocked_bytes_for, blocked_insert, bloom_bits_for, bloom_insert, id_filter_hash};
pub use fields::{MetaFields, meta_key, meta_tag_key};
pub(crate) use header::Header;
pub use header::{INDEX_HEADER, INDEX_MAGIC, INDEX_TAIL, INDEX_VERSION};
pub use memory::MemIndex;
pub use sealed::SegmentIndex;
pub use tag_key::{TagKey, TagOwner};

/// The 64-bit hash annal uses for stream names, event types and tags (XXH3-64, seed 0).
pub fn hash_str(s: &str) -> u64 {
    xxh3_64(s.as_bytes())
}

/// The 32-bit key a version-2 index files a 64-bit hash under: its two
/// halves XOR-ed.
#[allow(clippy::cast_possible_truncation, reason = "the fold keeps 32 bits on purpose")]
pub(crate) fn fold32(hash: u64) -> u32 {
    (hash ^ (hash >> 32)) as u32
}

/// The 32-bit key a version-2 index files an event id under.
pub fn id_key(id: &Uuid) -> u32 {
    fold32(xxh3_64(id.as_bytes()))
}

/// The distinct event types of one segment, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeCatalog {
    /// Every type of the segment's events, ascending.
    pub names: Vec<String>,
    /// True if no two of them share a lookup key, so that
    /// [`Lookup::type_positions`] of each names that type's events only.
    pub exact: bool,
}

/// What the index keeps of one stream within one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// Revision of the stream's first event in the segment.
    pub first_revision: u64,
    /// Revision of its last event in the segment.
    pub last_revision: u64,
    /// Position of its last event in the segment.
    pub last_position: u64,
}

/// One event's index fields, as taken from its frame.
#[derive(Debug, Clone)]
pub struct IndexEntry<'a> {
    /// Global position.
    pub position: u64,
    /// Offset of its frame in the segment file.
    pub offset: u64,
    /// Store timestamp.
    pub timestamp: i64,
    /// Revision in its stream.
    pub revision: u64,
    /// Event id.
    pub id: Uuid,
    /// Stream name.
    pub stream: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Tags.
    pub tags: &'a [&'a str],
    /// Metadata (the index files the string values of its indexed fields).
    pub metadata: &'a [u8],
}

impl<'a> IndexEntry<'a> {
    /// The index fields of a decoded event whose frame starts at `offset`.
    pub fn from_view(v: &'a crate::format::record::EventView<'a>, offset: u64) -> Self {
        IndexEntry {
            position: v.position,
            offset,
            timestamp: v.timestamp,
            revision: v.revision,
            id: v.id,
            stream: v.stream,
            event_type: v.event_type,
            tags: &v.tags,
            metadata: v.metadata,
        }
    }
}

/// Questions every segment index answers. Positions are global. Answers that
/// "may include collisions" are candidates: the reader confirms each against
/// the decoded frame.
pub trait Lookup: Send + Sync {
    /// First position of the segment.
    fn base(&self) -> u64;
    /// Position after the segment's last indexed event.
    fn next_position(&self) -> u64;
    /// Byte range `(offset, end)` of the frame holding `position`.
    fn location(&self, position: u64) -> Option<(u64, u64)>;
    /// [`Lookup::location`] of each of `positions` (an index may answer a run
    /// of nearby positions faster than one at a time).
    fn locations(&self, positions: &[u64]) -> Vec<Option<(u64, u64)>> {
        positions.iter().map(|p| self.location(*p)).collect()
    }
    /// Bounds `(lo, hi)` of the store timestamp of `position`: exact in the
    /// memory and version-1 indexes, those of its block of positions in version 2.
    fn time_bounds(&self, position: u64) -> Option<(i64, i64)>;
    /// Smallest and largest timestamps (None if empty).
    fn time_range(&self) -> Option<(i64, i64)>;
    /// `(revision, position)` of a stream's events: forward, revisions `>= from` ascending;
    /// backward, revisions `<= from` descending. At most `limit`. The memory and
    /// version-1 indexes find streams by hash and may include another stream
    /// with the same 64-bit hash; version 2 finds them by name and is exact.
    fn stream_entries(&self, stream: &str, from: u64, forward: bool, limit: usize) -> Vec<(u64, u64)>;
    /// All positions of events with this type hash, ascending. May include collisions.
    fn type_positions(&self, hash: u64) -> Vec<u64>;
    /// How many events [`Lookup::type_positions`] names.
    fn type_count(&self, hash: u64) -> u64 {
        self.type_positions(hash).len() as u64
    }
    /// The positions [`Lookup::type_positions`] names within `lo..hi`,
    /// ascending: a read a page long asks for the part near where it starts.
    fn type_positions_in(&self, hash: u64, lo: u64, hi: u64) -> Vec<u64> {
        let mut all = self.type_positions(hash);
        all.retain(|p| (lo..hi).contains(p));
        all
    }
    /// The distinct event types of the segment, if this index keeps them
    /// (the memory index and version-3 to -5 files; not versions 1 and 2).
    fn type_catalog(&self) -> Option<TypeCatalog> {
        None
    }
    /// All positions of events carrying this tag hash, ascending. May include collisions.
    fn tag_positions(&self, hash: u64) -> Vec<u64>;
    /// Whose entries [`Lookup::tag_positions`] of `key.hash` names (see
    /// [`TagOwner`]): known in the memory index, one unnamed owner in
    /// version-4 and -5 files unless the key is shared, unknown otherwise.
    fn tag_owner(&self, key: &TagKey) -> TagOwner {
        let _ = key;
        TagOwner::Unknown
    }
    /// Positions that may hold the event with this id, ascending: exact in
    /// the memory and version-1 indexes; version 2 may include collisions of
    /// its 32-bit id keys.
    fn id_positions(&self, id: &Uuid) -> Vec<u64>;
    /// True if [`Lookup::id_positions`] names only the id's own position
    /// (memory and version-1 indexes); false if it may name others.
    fn ids_exact(&self) -> bool {
        true
    }
    /// False if the stream certainly has no event in this segment.
    fn may_contain_stream(&self, hash: u64) -> bool;
    /// Names and summaries of the streams with events in this segment.
    fn streams(&self) -> Vec<(String, StreamSummary)>;
    /// [`MetaFields::fingerprint`] of the metadata fields whose values this
    /// index files in its tag postings (0: none). A read uses those postings
    /// only when this equals the store's own fingerprint.
    fn meta_fingerprint(&self) -> u64;
    /// The names of the metadata fields [`Lookup::meta_fingerprint`] stands
    /// for, where the index keeps them (the memory index and version-3 and
    /// -4 files), so that the index can be built again exactly.
    fn meta_field_names(&self) -> Option<Vec<String>> {
        None
    }
    /// The number of events the segment holds (positions that are not lost
    /// or removed), where the index keeps it (sealed index files, from their
    /// checked header).
    fn event_count(&self) -> Option<u64> {
        None
    }
    /// How many of the segment's positions hold no event (lost or removed),
    /// where the index knows: a reader looking for such positions skips a
    /// segment that has none.
    fn empty_positions(&self) -> Option<u64> {
        let positions = self.next_position().saturating_sub(self.base());
        self.event_count().map(|held| positions.saturating_sub(held))
    }
}

/// A stream's name, summary and `(revision, position)` entries in one segment.
type StreamPart<'a> = (&'a str, StreamSummary, &'a [(u64, u64)]);

/// What an index file is encoded from: the sealed segment's index fields,
/// streams sorted by name.
pub(crate) struct Parts<'a> {
    base: u64,
    end_offset: u64,
    /// `(offset, timestamp)` of each position from `base`.
    locations: &'a [(u64, i64)],
    /// Each stream's name, summary and `(revision, position)` entries, by name.
    streams: Vec<StreamPart<'a>>,
    /// Each type hash's positions, ascending.
    types: Vec<(u64, &'a [u64])>,
    /// The distinct type names, ascending.
    type_names: Vec<&'a str>,
    /// Each tag hash's positions, ascending.
    tags: Vec<(u64, &'a [u64])>,
    /// The 32-bit tag keys whose entries come from more than one tag or
    /// metadata value, ascending (format.md, "Shared tag keys").
    shared_tags: Vec<u32>,
    /// Every event id with its position.
    ids: Vec<(Uuid, u64)>,
    /// Fingerprint of the indexed metadata fields (header bytes 116..124).
    meta_fingerprint: u64,
    /// The names of those fields, sorted.
    meta_fields: Vec<&'a str>,
}

impl Parts<'_> {
    fn time_range(&self) -> (i64, i64) {
        match (self.locations.first(), self.locations.last()) {
            (Some(f), Some(l)) => (f.1, l.1),
            _ => (0, 0),
        }
    }

    /// The version-1 summary section (each stream: `name: str16`, first and
    /// last revision, last position).
    fn summary_v1(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        for (name, s, _) in &self.streams {
            let len = u16::try_from(name.len())
                .map_err(|_| Error::InvalidInput(format!("stream name of {} bytes in an index", name.len())))?;
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&s.first_revision.to_le_bytes());
            bytes.extend_from_slice(&s.last_revision.to_le_bytes());
            bytes.extend_from_slice(&s.last_position.to_le_bytes());
        }
        Ok(bytes)
    }

    /// The bloom filter over the streams' name hashes (versions 1 to 4).
    fn bloom(&self) -> Vec<u8> {
        let bits = bloom_bits_for(self.streams.len());
        let mut bloom = vec![0u8; (bits / 8) as usize];
        for (name, _, _) in &self.streams {
            bloom_insert(&mut bloom, hash_str(name));
        }
        bloom
    }

    /// The blocked bloom filter over the streams' name hashes and the event
    /// ids' filter hashes (version 5).
    fn blocked_bloom(&self) -> Vec<u8> {
        let mut bloom = vec![0u8; blocked_bytes_for(self.streams.len() + self.ids.len())];
        for (name, _, _) in &self.streams {
            blocked_insert(&mut bloom, hash_str(name));
        }
        for (id, _) in &self.ids {
            blocked_insert(&mut bloom, id_filter_hash(id));
        }
        bloom
    }
}

/// Parses a summary section into `(name, summary)` entries; `None` if malformed.
fn parse_summary(bytes: &[u8]) -> Option<Vec<(String, StreamSummary)>> {
    let mut r = crate::format::codec::Reader::new(bytes);
    let mut out = Vec::new();
    while !r.buf.is_empty() {
        let name = r.str16().ok()?.to_string();
        let s = StreamSummary {
            first_revision: r.u64().ok()?,
            last_revision: r.u64().ok()?,
            last_position: r.u64().ok()?,
        };
        out.push((name, s));
    }
    Some(out)
}

/// Index of the first `i` in `0..n` for which `pred(i)` is false (`pred` must be monotone).
fn partition(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::bloom::blocked_check;
    use super::*;
    use crate::format::codec::{le_u32, le_u64};
    use std::path::Path;
    use std::sync::Arc;

    fn open(bytes: Vec<u8>) -> Result<SegmentIndex> {
        SegmentIndex::open(Arc::new(bytes), Path::new("t.idx"))
    }

    /// 50 events in 5 streams, two types, one of two tags each; with
    /// `lost`, positions 120..123 are one lost frame whose head raises `s-9`.
    fn sample(lost: bool) -> MemIndex {
        let mut m = MemIndex::new(100, 64, Arc::new(MetaFields::new(&["actor"])));
        let mut off = 64;
        let mut rev = [0u64; 5];
        for i in 0..50u64 {
            if lost && i == 20 {
                let heads = vec![crate::format::record::Head {
                    stream: "s-9",
                    revision: 7,
                    position: 121,
                }];
                let view = crate::format::record::LostView {
                    first_position: 120,
                    count: 3,
                    removed: false,
                    hidden: false,
                    heads,
                };
                m.push_lost(&view, off, off + 30);
                off += 30;
            }
            if lost && (20..23).contains(&i) {
                continue;
            }
            let s = (i % 5) as usize;
            let stream = format!("s-{s}");
            let tags = ["even", "odd"];
            let tag = [tags[(i % 2) as usize]];
            // Every fourth event has no actor; one in eight has a numeric one.
            let metadata = match i % 8 {
                0 | 4 => String::new(),
                5 => format!(r#"{{"actor":{i}}}"#),
                _ => format!(r#"{{"actor":"a{}","other":"x"}}"#, i % 3),
            };
            let e = IndexEntry {
                position: m.next_position(),
                offset: off,
                timestamp: 1000 + i as i64,
                revision: rev[s],
                id: Uuid::from_u128(i as u128 + 1),
                stream: &stream,
                event_type: if i % 3 == 0 { "A" } else { "B" },
                tags: &tag,
                metadata: metadata.as_bytes(),
            };
            rev[s] += 1;
            off += 40 + i * 7;
            m.push(&e, off);
        }
        m
    }

    /// `b` answers like `a`, the memory index: time bounds contain `a`'s timestamps.
    fn check_same(a: &dyn Lookup, b: &dyn Lookup) {
        assert_eq!(a.base(), b.base());
        assert_eq!(a.next_position(), b.next_position());
        assert_eq!(a.time_range(), b.time_range());
        for p in 99..156 {
            assert_eq!(a.location(p), b.location(p), "location {p}");
            match (a.time_bounds(p), b.time_bounds(p)) {
                (Some((ts, _)), Some((lo, hi))) => assert!(lo <= ts && ts <= hi, "{p}: {ts} in {lo}..={hi}"),
                (x, y) => assert_eq!(x.is_some(), y.is_some(), "time bounds of {p}"),
            }
        }
        for s in [0, 1, 2, 3, 4, 5, 9] {
            let name = format!("s-{s}");
            for from in 0..12 {
                for fwd in [true, false] {
                    for limit in [0, 1, 3, 100] {
                        assert_eq!(
                            a.stream_entries(&name, from, fwd, limit),
                            b.stream_entries(&name, from, fwd, limit),
                            "{name} from {from} {fwd} {limit}"
                        );
                    }
                }
            }
            if s < 5 {
                assert!(b.may_contain_stream(hash_str(&name)));
            }
        }
        for t in ["A", "B", "C"] {
            assert_eq!(a.type_positions(hash_str(t)), b.type_positions(hash_str(t)));
            for (lo, hi) in [
                (0, u64::MAX),
                (0, 100),
                (99, 100),
                (100, 130),
                (120, 121),
                (131, 400),
                (5, 3),
            ] {
                let within: Vec<u64> = a
                    .type_positions(hash_str(t))
                    .into_iter()
                    .filter(|p| (lo..hi).contains(p))
                    .collect();
                assert_eq!(a.type_positions_in(hash_str(t), lo, hi), within, "{t} in {lo}..{hi}");
                assert_eq!(b.type_positions_in(hash_str(t), lo, hi), within, "{t} in {lo}..{hi}");
            }
        }
        for t in ["even", "odd", "none"] {
            assert_eq!(a.tag_positions(hash_str(t)), b.tag_positions(hash_str(t)));
        }
        assert_eq!(a.meta_fingerprint(), b.meta_fingerprint());
        for v in ["a0", "a1", "a2", "a9", "5"] {
            let key = meta_key("actor", v);
            assert_eq!(a.tag_positions(key), b.tag_positions(key), "actor {v}");
        }
        for i in 0..60u128 {
            let id = Uuid::from_u128(i);
            let (want, got) = (a.id_positions(&id), b.id_positions(&id));
            assert!(want.iter().all(|p| got.contains(p)), "id {i}: {want:?} in {got:?}");
        }
        let mut sa = a.streams();
        let mut sb = b.streams();
        sa.sort_by(|x, y| x.0.cmp(&y.0));
        sb.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(sa, sb);
    }

    /// Two tags on one 32-bit key, and a tag whose bytes are those of a
    /// metadata value's key: version 4 lists both keys as shared, the memory
    /// index tells the first pair apart and the second not.
    #[test]
    fn keys_holding_two_tags_or_values_are_shared() {
        // Two tags whose hashes differ but fold to one 32-bit key.
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0u64..)
            .find_map(|i| {
                let t = format!("t{i}");
                let k = fold32(hash_str(&t));
                seen.insert(k, t.clone()).map(|other| (other, t))
            })
            .unwrap();
        assert_ne!(hash_str(&a), hash_str(&b));
        let twin = "\0annal.meta\0actor\0x".to_string();
        let mut m = MemIndex::new(0, 64, Arc::new(MetaFields::new(&["actor"])));
        let events: [(&str, &str); 4] = [(&a, ""), (&b, ""), (&twin, ""), ("plain", r#"{"actor":"x"}"#)];
        for (i, (tag, metadata)) in events.iter().enumerate() {
            let tags = [*tag];
            let e = IndexEntry {
                position: i as u64,
                offset: 64 + 10 * i as u64,
                timestamp: 1,
                revision: i as u64,
                id: Uuid::from_u128(i as u128 + 1),
                stream: "s",
                event_type: "T",
                tags: &tags,
                metadata: metadata.as_bytes(),
            };
            m.push(&e, 74 + 10 * i as u64);
        }
        let file = open(m.encode_file().unwrap()).unwrap();
        let meta = meta_tag_key("actor", "x");
        assert_eq!(TagKey::tag(&twin).hash, meta.hash);
        assert_eq!(m.tag_owner(&TagKey::tag(&a)), TagOwner::Known(true));
        assert_eq!(m.tag_owner(&TagKey::tag(&b)), TagOwner::Known(true));
        assert_eq!(m.tag_owner(&meta), TagOwner::Unknown);
        assert_eq!(m.tag_owner(&TagKey::tag("plain")), TagOwner::Known(true));
        for key in [TagKey::tag(&a), TagKey::tag(&b), TagKey::tag(&twin), meta] {
            assert_eq!(file.tag_owner(&key), TagOwner::Unknown, "{key:?}");
        }
        assert_eq!(file.tag_owner(&TagKey::tag("plain")), TagOwner::One);
        assert_eq!(m.encode_file_like(&file).unwrap(), file.raw());
    }

    #[test]
    fn sealed_indexes_of_every_version_answer_like_the_memory_index() {
        for lost in [false, true] {
            let m = sample(lost);
            let v5 = open(m.encode_file().unwrap()).unwrap();
            assert_eq!(v5.version(), INDEX_VERSION);
            check_same(&m, &v5);
            assert_eq!(m.encode_file_like(&v5).unwrap(), v5.raw());
            v5.check_all().unwrap();
            // Version 4 (what annal wrote before) answers alike, with a filter of streams only.
            let v4 = open(m.encode_file_v2(4).unwrap()).unwrap();
            assert_eq!(v4.version(), 4);
            check_same(&m, &v4);
            assert_eq!(m.encode_file_like(&v4).unwrap(), v4.raw());
            v4.check_all().unwrap();
            assert_eq!(v5.type_catalog(), v4.type_catalog());
            // Version 3 (what annal wrote before) answers alike, without section checksums.
            let v3 = open(m.encode_file_v2(3).unwrap()).unwrap();
            assert_eq!(v3.version(), 3);
            check_same(&m, &v3);
            let catalog = TypeCatalog {
                names: vec!["A".to_string(), "B".to_string()],
                exact: true,
            };
            assert_eq!(m.type_catalog(), Some(catalog.clone()));
            assert_eq!(v3.type_catalog(), Some(catalog));
            assert_eq!(v3.type_count(hash_str("A")), m.type_count(hash_str("A")));
            assert_eq!(v3.meta_field_names(), Some(vec!["actor".to_string()]));
            // Version 2 (what annal wrote before) still answers, without type names.
            let v2 = open(m.encode_file_v2(2).unwrap()).unwrap();
            assert_eq!(v2.version(), 2);
            check_same(&m, &v2);
            assert_eq!(v2.type_catalog(), None);
            assert_eq!(m.encode_file_like(&v2).unwrap(), v2.raw());
            assert_eq!(m.encode_file_like(&v3).unwrap(), v3.raw());
            assert_eq!(v4.type_catalog(), v3.type_catalog());
            // Whose entries a tag key holds: known in memory, one unnamed
            // owner in version 4, unknown before.
            for (tag, here) in [("even", true), ("odd", true), ("none", false)] {
                let key = TagKey::tag(tag);
                assert_eq!(m.tag_owner(&key), TagOwner::Known(here), "{tag}");
                assert_eq!(v5.tag_owner(&key), TagOwner::One, "{tag}");
                assert_eq!(v4.tag_owner(&key), TagOwner::One, "{tag}");
                assert_eq!(v3.tag_owner(&key), TagOwner::Unknown, "{tag}");
                assert_eq!(v2.tag_owner(&key), TagOwner::Unknown, "{tag}");
            }
            let v1 = open(m.encode_file_v1().unwrap()).unwrap();
            assert_eq!(v1.version(), 1);
            check_same(&m, &v1);
            assert_eq!(v1.type_catalog(), None);
        }
        let idx = open(sample(false).encode_file().unwrap()).unwrap();
        assert_eq!(idx.meta_fingerprint(), MetaFields::new(&["actor"]).fingerprint());
        // Events 1, 2, 3, 6, 7, 9, ... of 50 (from position 100) hold an actor
        // string; those with `i % 3 == 1` hold "a1".
        let want: Vec<u64> = (0..50u64)
            .filter(|i| !matches!(i % 8, 0 | 4 | 5) && i % 3 == 1)
            .map(|i| 100 + i)
            .collect();
        assert_eq!(idx.tag_positions(meta_key("actor", "a1")), want);
        assert!(idx.tag_positions(meta_key("other", "x")).is_empty());
        assert!(idx.tag_positions(meta_key("actor", "5")).is_empty());
        assert_eq!(
            idx.stream_entries("s-1", 2, true, 100),
            vec![
                (2, 111),
                (3, 116),
                (4, 121),
                (5, 126),
                (6, 131),
                (7, 136),
                (8, 141),
                (9, 146)
            ]
        );
        assert_eq!(idx.stream_entries("s-1", 4, false, 2), vec![(4, 121), (3, 116)]);
        assert_eq!(idx.id_positions(&Uuid::from_u128(8)), vec![107]);
    }

    #[test]
    fn an_index_whose_positions_run_past_u64_max_is_refused() {
        // Found by fuzzing: a base near u64::MAX made next_position overflow.
        for mut bytes in [
            sample(false).encode_file().unwrap(),
            sample(false).encode_file_v1().unwrap(),
        ] {
            bytes[16..24].copy_from_slice(&(u64::MAX - 10).to_le_bytes());
            let crc = crc32fast::hash(&bytes[..124]);
            bytes[124..128].copy_from_slice(&crc.to_le_bytes());
            let err = open(bytes).unwrap_err();
            assert!(err.to_string().contains("past the largest position"), "{err}");
        }
    }

    #[test]
    fn damaged_index_files_are_refused() {
        let m = sample(true);
        for bytes in [
            m.encode_file().unwrap(),
            m.encode_file_v2(3).unwrap(),
            m.encode_file_v2(2).unwrap(),
            m.encode_file_v1().unwrap(),
        ] {
            // Refused at open (the header, the sizes, version 4's section
            // checksums) or found by the full check (the body, on first use).
            for at in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
                let mut bad = bytes.clone();
                bad[at] ^= 0x40;
                assert!(open(bad).map_or(true, |i| i.check_all().is_err()), "flip at {at}");
            }
            for len in [0, 50, 128, bytes.len() - 1] {
                assert!(
                    open(bytes[..len].to_vec()).map_or(true, |i| i.check_all().is_err()),
                    "cut at {len}"
                );
            }
        }
    }

    use super::v2::reseal;

    #[test]
    fn version_2_files_whose_checksums_match_but_whose_entries_lie_are_refused() {
        let good = sample(false).encode_file().unwrap();
        // Every single-byte change of the body, checksums made to match:
        // refused at open or on first use (then reported as damage), or
        // still answering without a panic.
        for at in 128..good.len() - 4 {
            let mut bytes = good.clone();
            bytes[at] = bytes[at].wrapping_add(1);
            reseal(&mut bytes);
            if let Ok(idx) = open(bytes.clone()) {
                for p in 99..152 {
                    let _ = idx.location(p);
                }
                for s in 0..5 {
                    let _ = idx.stream_entries(&format!("s-{s}"), 0, true, usize::MAX);
                }
                let _ = idx.id_positions(&Uuid::from_u128(3));
                let _ = idx.streams();
                let _ = idx.type_catalog();
                // What first use found is what a full check finds, first or last.
                let full = open(bytes).unwrap().check_all().err().map(|e| e.to_string());
                if let Some(found) = idx.damage() {
                    assert_eq!(idx.check_all().unwrap_err().to_string(), found.to_string());
                    assert!(full.is_some());
                }
            }
        }
        // The locations' first offset moved past the segment's end: open
        // succeeds (it decodes no entry), the first use finds it, answers
        // nothing and reports it as damage of the file.
        let mut bytes = good.clone();
        bytes[128..132].copy_from_slice(&u32::MAX.to_le_bytes());
        reseal(&mut bytes);
        let idx = open(bytes).unwrap();
        assert!(idx.damage().is_none());
        assert_eq!(idx.location(100), None);
        let err = idx.damage().unwrap();
        assert!(err.to_string().contains("location out of order"), "{err}");
        assert!(err.to_string().contains("t.idx"), "{err}");
        assert!(idx.check_all().is_err());

        // Type names out of order (a writer's bug): the catalog answers
        // nothing, and the first use reports the damage with its offset.
        let mut bytes = good.clone();
        // The names section: types A and B, the one field, actor, then no
        // shared tag key. It ends before the section checksums (36 bytes)
        // and the body's (4).
        let names_end = bytes.len() - 40;
        let names_at = names_end - 4 - (4 + 2 * 3) - (4 + 2 + 5);
        assert_eq!(
            &bytes[names_at..names_at + 4],
            &2u32.to_le_bytes(),
            "two names, A and B"
        );
        assert_eq!(&bytes[names_end - 9..names_end - 4], b"actor");
        assert_eq!(&bytes[names_end - 4..names_end], &0u32.to_le_bytes());
        bytes.swap(names_at + 6, names_at + 9);
        reseal(&mut bytes);
        let idx = open(bytes).unwrap();
        assert_eq!(idx.type_catalog(), None);
        let err = idx.damage().unwrap();
        assert!(err.to_string().contains("names not strictly ascending"), "{err}");
        assert!(err.to_string().contains(&format!("at byte {names_at}")), "{err}");
        // Field names that are not those of the header's fingerprint.
        let mut bytes = good.clone();
        let at = names_end - 9;
        bytes[at] = b'b';
        reseal(&mut bytes);
        let idx = open(bytes).unwrap();
        assert_eq!(idx.meta_field_names(), None);
        let err = idx.damage().unwrap();
        assert!(err.to_string().contains("do not match the fingerprint"), "{err}");
        // A shared key list that says more than it holds: no key is taken
        // as having one owner, and the first use reports it.
        let mut bytes = good.clone();
        let at = names_end - 4;
        bytes[at] = 1;
        reseal(&mut bytes);
        let idx = open(bytes).unwrap();
        assert_eq!(idx.tag_owner(&TagKey::tag("even")), TagOwner::Unknown);
        let err = idx.damage().unwrap();
        assert!(err.to_string().contains("shared tag keys truncated"), "{err}");
    }

    #[test]
    fn a_version_2_index_checks_each_section_on_first_use_only() {
        let good = sample(false).encode_file().unwrap();
        let idx = open(good.clone()).unwrap();
        // Answers match a fully checked open.
        let checked = open(good).unwrap();
        checked.check_all().unwrap();
        for p in 99..152 {
            assert_eq!(idx.location(p), checked.location(p));
            assert_eq!(idx.time_bounds(p), checked.time_bounds(p));
        }
        for s in 0..5 {
            let name = format!("s-{s}");
            assert_eq!(
                idx.stream_entries(&name, 0, true, usize::MAX),
                checked.stream_entries(&name, 0, true, usize::MAX)
            );
            assert_eq!(idx.stream_entries(&name, 0, true, usize::MAX).len(), 10);
        }
        assert_eq!(idx.streams(), checked.streams());
        assert!(idx.damage().is_none());
    }

    /// Where each section of a version-2 to -4 file starts, by name (the
    /// summary's restarts and the names are left out).
    fn sections(bytes: &[u8]) -> Vec<(&'static str, usize)> {
        let lens: Vec<usize> = (0..5).map(|i| le_u32(bytes, 96 + 4 * i) as usize).collect();
        let mut at = INDEX_HEADER;
        let mut out = Vec::new();
        for (name, len) in ["locations", "streams", "types", "tags", "ids"].into_iter().zip(lens) {
            out.push((name, at));
            at += len;
        }
        out.push(("bloom", at));
        out.push(("summary", at + usize::try_from(le_u64(bytes, 72)).unwrap()));
        out
    }

    #[test]
    fn a_flipped_bit_in_a_version_4_section_is_found_by_the_first_read_that_uses_it() {
        let good = sample(false).encode_file().unwrap();
        for (name, at) in sections(&good) {
            let mut bytes = good.clone();
            bytes[at + 1] ^= 0x10;
            // Open reads no byte of the body: it succeeds, and finds nothing yet.
            let idx = open(bytes.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(idx.damage().is_none(), "{name}");
            // Sections the read does not use stay unchecked.
            let others_unused = match name {
                "locations" => idx.stream_entries("s-1", 0, true, 100).len() == 10,
                _ => idx.location(100) == Some((64, 104)),
            };
            assert!(others_unused, "{name}");
            assert!(idx.damage().is_none(), "{name}: found by a read that did not use it");
            // The read that uses the section answers nothing and reports the damage.
            match name {
                "locations" => assert_eq!(idx.location(101), None),
                "streams" | "summary" => assert!(idx.stream_entries("s-2", 0, true, 100).is_empty()),
                "types" => assert!(idx.type_positions(hash_str("A")).is_empty()),
                "tags" => assert!(idx.tag_positions(hash_str("odd")).is_empty()),
                "ids" => assert!(idx.id_positions(&Uuid::from_u128(8)).is_empty()),
                // A damaged bloom filter says "maybe", never "no".
                "bloom" => assert!(idx.may_contain_stream(hash_str("s-3"))),
                _ => unreachable!(),
            }
            let err = idx.damage().unwrap_or_else(|| panic!("{name}: not reported"));
            assert!(
                err.to_string().contains("index section checksum mismatch"),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(&format!("at byte {at}")), "{name}: {err}");
            // The full check (verify, repair, a recovery that needs the file) finds it too.
            assert!(open(bytes).unwrap().check_all().is_err(), "{name}");
        }
        // A version-3 file (no section checksums) has its body checksum checked on first use.
        let v3 = sample(false).encode_file_v2(3).unwrap();
        let (_, ids_at) = sections(&v3)[4];
        let mut bytes = v3.clone();
        bytes[ids_at + 1] ^= 0x10;
        let idx = open(bytes).unwrap();
        assert!(idx.damage().is_none());
        assert_eq!(idx.location(100), None);
        let err = idx.damage().unwrap();
        assert!(err.to_string().contains("index body checksum mismatch"), "{err}");
    }

    /// Version 5's filter holds the segment's ids: a lookup of an id the
    /// segment lacks is refused by it (most of the time) and answers nothing;
    /// every id the segment holds passes it.
    #[test]
    fn a_version_5_filter_passes_every_id_of_its_segment() {
        let m = sample(false);
        let bytes = m.encode_file().unwrap();
        let idx = open(bytes.clone()).unwrap();
        let SegmentIndex::V2(v2) = &idx else {
            panic!("not a compact file")
        };
        let (_, at) = sections(&bytes)[5];
        let len = usize::try_from(le_u64(&bytes, 72)).unwrap();
        let filter = &bytes[at..at + len];
        for i in 0..50u128 {
            let id = Uuid::from_u128(i + 1);
            assert!(blocked_check(filter, id_filter_hash(&id)), "id {i}");
            assert_eq!(v2.id_positions(&id), m.id_positions(&id), "id {i}");
        }
        let refused = (1000..2000u128)
            .filter(|i| !blocked_check(filter, id_filter_hash(&Uuid::from_u128(*i))))
            .count();
        assert!(refused > 900, "only {refused} of 1000 absent ids refused");
        assert!((1000..2000u128).all(|i| v2.id_positions(&Uuid::from_u128(i)).is_empty()));
        // The streams are in it too.
        assert!((0..5).all(|s| idx.may_contain_stream(hash_str(&format!("s-{s}")))));
        assert!(idx.damage().is_none());
    }

    /// An id lookup passes over a damaged version-5 filter to the ids
    /// section, and finds its ids without failing (it failed every append
    /// naming ids before); reads by stream still report the damage.
    #[test]
    fn an_id_lookup_passes_over_a_damaged_filter() {
        let m = sample(false);
        let mut bytes = m.encode_file().unwrap();
        let (_, at) = sections(&bytes)[5];
        bytes[at + 3] ^= 0x01;
        let idx = open(bytes).unwrap();
        for i in 0..50u128 {
            let id = Uuid::from_u128(i + 1);
            assert_eq!(idx.id_positions(&id), m.id_positions(&id), "id {i}");
        }
        assert!(idx.id_positions(&Uuid::from_u128(5000)).is_empty());
        assert!(idx.damage().is_none(), "an id lookup reported the filter's damage");
        assert!(idx.may_contain_stream(hash_str("s-1")));
        assert!(idx.damage().is_some(), "a stream lookup did not report it");
    }
}
