//! Indexes of one segment: where each position lives, which positions belong
//! to a stream, an event type, a tag or an id (see format.md, "Index files").
//!
//! The active segment's index lives in memory ([`MemIndex`]); when a segment
//! is sealed, its index is written once into an immutable `.idx` file and read
//! back through a memory map ([`SegmentIndex`]), so sealed data costs no heap
//! per event. Both answer the same questions through [`Lookup`]. This module
//! owns the `.idx` encoder and decoder; it must never read segment bytes.

use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64;

use crate::format::codec::{le_u32, le_u64};
use crate::error::{Error, Result};
use crate::format::record::{EventView, LostView};
use crate::storage::Mapped;

/// Magic bytes at the start of every index file.
pub const INDEX_MAGIC: &[u8; 8] = b"ANNALIDX";
/// Format version of index files.
pub const INDEX_VERSION: u32 = 1;
/// Size of the index file header.
pub const INDEX_HEADER: usize = 128;
const BLOOM_PROBES: u64 = 7;

/// The 64-bit hash annal uses for stream names, event types and tags (XXH3-64, seed 0).
pub fn hash_str(s: &str) -> u64 {
    xxh3_64(s.as_bytes())
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
}

impl<'a> IndexEntry<'a> {
    /// The index fields of a decoded event whose frame starts at `offset`.
    pub fn from_view(v: &'a EventView<'a>, offset: u64) -> Self {
        IndexEntry {
            position: v.position,
            offset,
            timestamp: v.timestamp,
            revision: v.revision,
            id: v.id,
            stream: v.stream,
            event_type: v.event_type,
            tags: &v.tags,
        }
    }
}

/// Questions every segment index answers. Positions are global.
pub trait Lookup: Send + Sync {
    /// First position of the segment.
    fn base(&self) -> u64;
    /// Position after the segment's last indexed event.
    fn next_position(&self) -> u64;
    /// Byte range `(offset, end)` of the frame holding `position`.
    fn location(&self, position: u64) -> Option<(u64, u64)>;
    /// Store timestamp of `position`.
    fn timestamp(&self, position: u64) -> Option<i64>;
    /// Smallest and largest timestamps (None if empty).
    fn time_range(&self) -> Option<(i64, i64)>;
    /// `(revision, position)` of a stream's events: forward, revisions `>= from` ascending;
    /// backward, revisions `<= from` descending. At most `limit`. May include hash collisions.
    fn stream_entries(&self, hash: u64, from: u64, forward: bool, limit: usize) -> Vec<(u64, u64)>;
    /// All positions of events with this type hash, ascending. May include collisions.
    fn type_positions(&self, hash: u64) -> Vec<u64>;
    /// All positions of events carrying this tag hash, ascending. May include collisions.
    fn tag_positions(&self, hash: u64) -> Vec<u64>;
    /// Position of the event with this id.
    fn find_id(&self, id: &Uuid) -> Option<u64>;
    /// False if the stream certainly has no event in this segment.
    fn may_contain_stream(&self, hash: u64) -> bool;
    /// Names and summaries of the streams with events in this segment.
    fn streams(&self) -> Vec<(String, StreamSummary)>;
}

/// The in-memory index of the active segment.
#[derive(Debug, Default)]
pub struct MemIndex {
    base: u64,
    /// `(offset, timestamp)` for each position from `base`.
    locations: Vec<(u64, i64)>,
    /// Offset just past the last indexed frame.
    end_offset: u64,
    streams: FxHashMap<u64, Vec<(u64, u64)>>,
    types: FxHashMap<u64, Vec<u64>>,
    tags: FxHashMap<u64, Vec<u64>>,
    ids: FxHashMap<Uuid, u64>,
    summaries: FxHashMap<u64, Vec<(String, StreamSummary)>>,
}

impl MemIndex {
    /// An empty index for the segment starting at `base`, whose first frame is at `first_offset`.
    pub fn new(base: u64, first_offset: u64) -> Self {
        MemIndex {
            base,
            end_offset: first_offset,
            ..Default::default()
        }
    }

    /// Number of events indexed.
    pub fn len(&self) -> usize {
        self.locations.len()
    }

    /// True when no event is indexed.
    #[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Offset just past the last indexed frame.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// Adds the next event; `end` is the offset just past its frame.
    pub fn push(&mut self, e: &IndexEntry<'_>, end: u64) {
        debug_assert_eq!(e.position, self.base + self.locations.len() as u64);
        self.locations.push((e.offset, e.timestamp));
        self.end_offset = end;
        let stream_hash = hash_str(e.stream);
        self.streams
            .entry(stream_hash)
            .or_default()
            .push((e.revision, e.position));
        self.types.entry(hash_str(e.event_type)).or_default().push(e.position);
        for tag in e.tags {
            let list = self.tags.entry(hash_str(tag)).or_default();
            // An event listing a tag twice is indexed once.
            if list.last() != Some(&e.position) {
                list.push(e.position);
            }
        }
        self.ids.insert(e.id, e.position);
        // Keyed by the hash already computed; names with equal hashes share a bucket.
        let bucket = self.summaries.entry(stream_hash).or_default();
        match bucket.iter_mut().find(|(name, _)| name == e.stream) {
            Some((_, s)) => {
                s.last_revision = e.revision;
                s.last_position = e.position;
            }
            None => bucket.push((
                e.stream.to_string(),
                StreamSummary {
                    first_revision: e.revision,
                    last_revision: e.revision,
                    last_position: e.position,
                },
            )),
        }
    }

    /// Adds the positions of a lost or removed frame at `offset..end`: they
    /// take locations and nothing else, except that the stream heads the frame
    /// records raise those streams' summaries (revisions handed out before).
    pub fn push_lost(&mut self, lost: &LostView<'_>, offset: u64, end: u64) {
        let ts = self.locations.last().map_or(i64::MIN, |(_, ts)| *ts);
        for _ in 0..lost.count {
            self.locations.push((offset, ts));
        }
        self.end_offset = end;
        for head in &lost.heads {
            let bucket = self.summaries.entry(hash_str(head.stream)).or_default();
            match bucket.iter_mut().find(|(name, _)| name == head.stream) {
                Some((_, s)) if s.last_revision < head.revision => {
                    s.last_revision = head.revision;
                    s.last_position = head.position;
                }
                Some(_) => {}
                None => bucket.push((
                    head.stream.to_string(),
                    StreamSummary {
                        first_revision: head.revision,
                        last_revision: head.revision,
                        last_position: head.position,
                    },
                )),
            }
        }
    }

    /// Encodes the `.idx` file for this segment once it is sealed. Fails with
    /// [`Error::InvalidInput`] if a stream name is longer than its 16-bit length
    /// field (names come from validated appends or from the log, so the store's never are).
    pub fn encode_file(&self) -> Result<Vec<u8>> {
        let n = self.locations.len() as u64;
        let mut streams: Vec<(u64, u64, u64)> = self
            .streams
            .iter()
            .flat_map(|(h, v)| v.iter().map(move |(r, p)| (*h, *r, *p)))
            .collect();
        streams.sort_unstable();
        let mut types: Vec<(u64, u64)> = self
            .types
            .iter()
            .flat_map(|(h, v)| v.iter().map(move |p| (*h, *p)))
            .collect();
        types.sort_unstable();
        let mut tags: Vec<(u64, u64)> = self
            .tags
            .iter()
            .flat_map(|(h, v)| v.iter().map(move |p| (*h, *p)))
            .collect();
        tags.sort_unstable();
        let mut ids: Vec<(Uuid, u64)> = self.ids.iter().map(|(i, p)| (*i, *p)).collect();
        ids.sort_unstable();
        let mut summaries: Vec<(&String, &StreamSummary)> =
            self.summaries.values().flatten().map(|(n, s)| (n, s)).collect();
        summaries.sort_unstable_by(|a, b| a.0.cmp(b.0));

        let bloom_bits = bloom_bits_for(summaries.len());
        let mut bloom = vec![0u8; (bloom_bits / 8) as usize];
        for (name, _) in &summaries {
            bloom_insert(&mut bloom, hash_str(name));
        }
        let mut summary_bytes = Vec::new();
        for (name, s) in &summaries {
            let len = u16::try_from(name.len())
                .map_err(|_| Error::InvalidInput(format!("stream name of {} bytes in an index", name.len())))?;
            summary_bytes.extend_from_slice(&len.to_le_bytes());
            summary_bytes.extend_from_slice(name.as_bytes());
            summary_bytes.extend_from_slice(&s.first_revision.to_le_bytes());
            summary_bytes.extend_from_slice(&s.last_revision.to_le_bytes());
            summary_bytes.extend_from_slice(&s.last_position.to_le_bytes());
        }
        let (min_ts, max_ts) = self.time_range().unwrap_or((0, 0));

        let mut out = Vec::with_capacity(
            INDEX_HEADER + self.locations.len() * 80 + tags.len() * 16 + bloom.len() + summary_bytes.len() + 4,
        );
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for v in [
            self.base,
            n,
            self.end_offset,
            min_ts as u64,
            max_ts as u64,
            summaries.len() as u64,
            tags.len() as u64,
            bloom.len() as u64,
            summary_bytes.len() as u64,
            ids.len() as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.resize(INDEX_HEADER - 4, 0);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());

        for (off, ts) in &self.locations {
            out.extend_from_slice(&off.to_le_bytes());
            out.extend_from_slice(&ts.to_le_bytes());
        }
        for (h, r, p) in &streams {
            for v in [h, r, p] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        for (h, p) in types.iter().chain(tags.iter()) {
            out.extend_from_slice(&h.to_le_bytes());
            out.extend_from_slice(&p.to_le_bytes());
        }
        for (id, p) in &ids {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&p.to_le_bytes());
        }
        out.extend_from_slice(&bloom);
        out.extend_from_slice(&summary_bytes);
        let crc = crc32fast::hash(&out[INDEX_HEADER..]);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }
}

impl Lookup for MemIndex {
    fn base(&self) -> u64 {
        self.base
    }
    fn next_position(&self) -> u64 {
        self.base + self.locations.len() as u64
    }
    fn location(&self, position: u64) -> Option<(u64, u64)> {
        let i = usize::try_from(position.checked_sub(self.base)?).ok()?;
        let (off, _) = *self.locations.get(i)?;
        let end = self.locations.get(i + 1).map_or(self.end_offset, |(o, _)| *o);
        Some((off, end))
    }
    fn timestamp(&self, position: u64) -> Option<i64> {
        let i = usize::try_from(position.checked_sub(self.base)?).ok()?;
        self.locations.get(i).map(|(_, ts)| *ts)
    }
    fn time_range(&self) -> Option<(i64, i64)> {
        Some((self.locations.first()?.1, self.locations.last()?.1))
    }
    fn stream_entries(&self, hash: u64, from: u64, forward: bool, limit: usize) -> Vec<(u64, u64)> {
        let Some(list) = self.streams.get(&hash) else {
            return Vec::new();
        };
        if forward {
            let start = list.partition_point(|(r, _)| *r < from);
            list[start..].iter().take(limit).copied().collect()
        } else {
            let end = list.partition_point(|(r, _)| *r <= from);
            list[..end].iter().rev().take(limit).copied().collect()
        }
    }
    fn type_positions(&self, hash: u64) -> Vec<u64> {
        self.types.get(&hash).cloned().unwrap_or_default()
    }
    fn tag_positions(&self, hash: u64) -> Vec<u64> {
        self.tags.get(&hash).cloned().unwrap_or_default()
    }
    fn find_id(&self, id: &Uuid) -> Option<u64> {
        self.ids.get(id).copied()
    }
    fn may_contain_stream(&self, hash: u64) -> bool {
        self.streams.contains_key(&hash)
    }
    fn streams(&self) -> Vec<(String, StreamSummary)> {
        self.summaries.values().flatten().cloned().collect()
    }
}

/// The index of a sealed segment, read from its memory-mapped `.idx` file.
pub struct SegmentIndex {
    map: Mapped,
    base: u64,
    count: u64,
    end_offset: u64,
    min_ts: i64,
    max_ts: i64,
    stream_count: u64,
    /// `count`, `tag_count` and `indexed` as lengths of the tables in the
    /// mapped file (each fits: the file holds its tables).
    count_len: usize,
    tag_count: usize,
    /// Events indexed by stream, type and id (positions minus lost ones).
    indexed: usize,
    locations_at: usize,
    streams_at: usize,
    types_at: usize,
    tags_at: usize,
    ids_at: usize,
    bloom_at: usize,
    bloom_len: usize,
    summary_at: usize,
    summary_len: usize,
}

impl std::fmt::Debug for SegmentIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentIndex")
            .field("base", &self.base)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}


impl SegmentIndex {
    /// Decodes and fully checks an index file (both checksums and every size).
    pub fn open(map: Mapped, file: &Path) -> Result<Self> {
        let b: &[u8] = (*map).as_ref();
        let bad = |offset: u64, reason: &str| Error::corruption(PathBuf::from(file), offset, reason);
        if b.len() < INDEX_HEADER + 4 {
            return Err(bad(0, "index file truncated"));
        }
        if &b[0..8] != INDEX_MAGIC {
            return Err(bad(0, "not an annal index (bad magic)"));
        }
        let crc = le_u32(b, 124);
        if crc32fast::hash(&b[..124]) != crc {
            return Err(bad(0, "index header checksum mismatch"));
        }
        let version = le_u32(b, 8);
        if version != INDEX_VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: INDEX_VERSION,
            });
        }
        if b[12..16] != [0; 4] {
            return Err(bad(12, "unknown index flags"));
        }
        let base = le_u64(b, 16);
        let count = le_u64(b, 24);
        let end_offset = le_u64(b, 32);
        let min_ts = le_u64(b, 40) as i64;
        let max_ts = le_u64(b, 48) as i64;
        let stream_count = le_u64(b, 56);
        let tag_count = le_u64(b, 64);
        let bloom_len = le_u64(b, 72);
        let summary_len = le_u64(b, 80);
        let indexed = le_u64(b, 88);
        if indexed > count {
            return Err(bad(88, "more indexed events than positions"));
        }
        if base.checked_add(count).is_none() {
            return Err(bad(24, "positions run past the largest position"));
        }
        // Sizes in u128 so that no header value can overflow the arithmetic.
        let body = 16 * count as u128
            + 24 * indexed as u128
            + 16 * indexed as u128
            + 16 * tag_count as u128
            + 24 * indexed as u128
            + bloom_len as u128
            + summary_len as u128;
        if INDEX_HEADER as u128 + body + 4 != b.len() as u128 {
            return Err(bad(0, "index section sizes do not match the file length"));
        }
        if bloom_len == 0 && stream_count > 0 || !bloom_len.is_multiple_of(8) {
            return Err(bad(72, "bad bloom filter size"));
        }
        let crc_at = b.len() - 4;
        let crc = u32::from_le_bytes(b[crc_at..].try_into().expect("4 bytes"));
        if crc32fast::hash(&b[INDEX_HEADER..crc_at]) != crc {
            return Err(bad(crc_at as u64, "index body checksum mismatch"));
        }
        // Every table is inside the file (checked just above), so each count fits a usize.
        let table_len = |v: u64, at: u64| usize::try_from(v).map_err(|_| bad(at, "index table larger than memory"));
        let n = table_len(count, 24)?;
        let m = table_len(indexed, 88)?;
        let tag_count = table_len(tag_count, 64)?;
        let bloom_len = table_len(bloom_len, 72)?;
        let summary_len = table_len(summary_len, 80)?;
        let locations_at = INDEX_HEADER;
        let streams_at = locations_at + 16 * n;
        let types_at = streams_at + 24 * m;
        let tags_at = types_at + 16 * m;
        let ids_at = tags_at + 16 * tag_count;
        let bloom_at = ids_at + 24 * m;
        let summary_at = bloom_at + bloom_len;
        let idx = SegmentIndex {
            map: map.clone(),
            base,
            count,
            end_offset,
            min_ts,
            max_ts,
            stream_count,
            count_len: n,
            tag_count,
            indexed: m,
            locations_at,
            streams_at,
            types_at,
            tags_at,
            ids_at,
            bloom_at,
            bloom_len,
            summary_at,
            summary_len,
        };
        // The summary must parse and count exactly `stream_count` entries.
        if idx.parse_summary().map(|s| s.len() as u64) != Some(stream_count) {
            return Err(bad(summary_at as u64, "stream summary malformed"));
        }
        // Offsets must increase and stay inside the segment's data.
        let mut prev = 0;
        for i in 0..n {
            let off = idx.loc(i).0;
            if off < prev || off >= end_offset {
                return Err(bad((locations_at + 16 * i) as u64, "location out of order"));
            }
            prev = off;
        }
        Ok(idx)
    }

    fn bytes(&self) -> &[u8] {
        (*self.map).as_ref()
    }

    fn loc(&self, i: usize) -> (u64, i64) {
        let at = self.locations_at + 16 * i;
        (le_u64(self.bytes(), at), le_u64(self.bytes(), at + 8) as i64)
    }

    fn stream_rec(&self, i: usize) -> (u64, u64, u64) {
        let at = self.streams_at + 24 * i;
        let b = self.bytes();
        (le_u64(b, at), le_u64(b, at + 8), le_u64(b, at + 16))
    }

    fn pair(&self, table_at: usize, i: usize) -> (u64, u64) {
        let at = table_at + 16 * i;
        (le_u64(self.bytes(), at), le_u64(self.bytes(), at + 8))
    }

    fn pairs_for(&self, table_at: usize, len: usize, hash: u64) -> Vec<u64> {
        let start = partition(len, |i| self.pair(table_at, i).0 < hash);
        (start..len)
            .map(|i| self.pair(table_at, i))
            .take_while(|(h, _)| *h == hash)
            .map(|(_, p)| p)
            .collect()
    }

    fn parse_summary(&self) -> Option<Vec<(String, StreamSummary)>> {
        let mut r = crate::format::codec::Reader::new(&self.bytes()[self.summary_at..self.summary_at + self.summary_len]);
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

    /// Offset of the seal frame in the segment (just past the last event).
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// The bytes of the index file.
    pub fn raw(&self) -> &[u8] {
        self.bytes()
    }
}

impl Lookup for SegmentIndex {
    fn base(&self) -> u64 {
        self.base
    }
    fn next_position(&self) -> u64 {
        self.base + self.count
    }
    fn location(&self, position: u64) -> Option<(u64, u64)> {
        let i = usize::try_from(position.checked_sub(self.base)?).ok()?;
        if i >= self.count_len {
            return None;
        }
        let off = self.loc(i).0;
        let end = if i + 1 < self.count_len {
            self.loc(i + 1).0
        } else {
            self.end_offset
        };
        Some((off, end))
    }
    fn timestamp(&self, position: u64) -> Option<i64> {
        let i = usize::try_from(position.checked_sub(self.base)?).ok()?;
        (i < self.count_len).then(|| self.loc(i).1)
    }
    fn time_range(&self) -> Option<(i64, i64)> {
        (self.count > 0).then_some((self.min_ts, self.max_ts))
    }
    fn stream_entries(&self, hash: u64, from: u64, forward: bool, limit: usize) -> Vec<(u64, u64)> {
        let n = self.indexed;
        if forward {
            let start = partition(n, |i| {
                let (h, r, _) = self.stream_rec(i);
                (h, r) < (hash, from)
            });
            (start..n)
                .map(|i| self.stream_rec(i))
                .take_while(|(h, _, _)| *h == hash)
                .take(limit)
                .map(|(_, r, p)| (r, p))
                .collect()
        } else {
            let end = partition(n, |i| {
                let (h, r, _) = self.stream_rec(i);
                (h, r) <= (hash, from)
            });
            (0..end)
                .rev()
                .map(|i| self.stream_rec(i))
                .take_while(|(h, _, _)| *h == hash)
                .take(limit)
                .map(|(_, r, p)| (r, p))
                .collect()
        }
    }
    fn type_positions(&self, hash: u64) -> Vec<u64> {
        self.pairs_for(self.types_at, self.indexed, hash)
    }
    fn tag_positions(&self, hash: u64) -> Vec<u64> {
        self.pairs_for(self.tags_at, self.tag_count, hash)
    }
    fn find_id(&self, id: &Uuid) -> Option<u64> {
        let b = self.bytes();
        let key = id.as_bytes();
        let rec = |i: usize| &b[self.ids_at + 24 * i..self.ids_at + 24 * i + 24];
        let i = partition(self.indexed, |i| rec(i)[..16] < key[..]);
        (i < self.indexed && &rec(i)[..16] == key).then(|| le_u64(rec(i), 16))
    }
    fn may_contain_stream(&self, hash: u64) -> bool {
        if self.stream_count == 0 {
            return false;
        }
        bloom_check(&self.bytes()[self.bloom_at..self.bloom_at + self.bloom_len], hash)
    }
    fn streams(&self) -> Vec<(String, StreamSummary)> {
        self.parse_summary().unwrap_or_default()
    }
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

fn bloom_bits_for(items: usize) -> u64 {
    ((items as u64 * 10).max(64)).div_ceil(64) * 64
}

fn bloom_probe(hash: u64, i: u64, bits: u64) -> u64 {
    let h2 = hash.rotate_left(32) | 1;
    hash.wrapping_add(i.wrapping_mul(h2)) % bits
}

fn bloom_insert(bloom: &mut [u8], hash: u64) {
    let bits = bloom.len() as u64 * 8;
    for i in 0..BLOOM_PROBES {
        let bit = bloom_probe(hash, i, bits);
        bloom[(bit / 8) as usize] |= 1 << (bit % 8);
    }
}

fn bloom_check(bloom: &[u8], hash: u64) -> bool {
    let bits = bloom.len() as u64 * 8;
    bits > 0
        && (0..BLOOM_PROBES).all(|i| {
            let bit = bloom_probe(hash, i, bits);
            bloom[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_index_whose_positions_run_past_u64_max_is_refused() {
        // Found by fuzzing: a base near u64::MAX made next_position overflow.
        let mut bytes = sample().encode_file().unwrap();
        bytes[16..24].copy_from_slice(&(u64::MAX - 10).to_le_bytes());
        let crc = crc32fast::hash(&bytes[..124]);
        bytes[124..128].copy_from_slice(&crc.to_le_bytes());
        let err = SegmentIndex::open(Arc::new(bytes), Path::new("t.idx")).unwrap_err();
        assert!(err.to_string().contains("past the largest position"), "{err}");
    }

    fn sample() -> MemIndex {
        let mut m = MemIndex::new(100, 64);
        let mut off = 64;
        for i in 0..50u64 {
            let stream = format!("s-{}", i % 5);
            let tags = ["even", "odd"];
            let tag = [tags[(i % 2) as usize]];
            let e = IndexEntry {
                position: 100 + i,
                offset: off,
                timestamp: 1000 + i as i64,
                revision: i / 5,
                id: Uuid::from_u128(i as u128 + 1),
                stream: &stream,
                event_type: if i % 3 == 0 { "A" } else { "B" },
                tags: &tag,
            };
            off += 40;
            m.push(&e, off);
        }
        m
    }

    fn check_same(a: &dyn Lookup, b: &dyn Lookup) {
        assert_eq!(a.base(), b.base());
        assert_eq!(a.next_position(), b.next_position());
        assert_eq!(a.time_range(), b.time_range());
        for p in 99..152 {
            assert_eq!(a.location(p), b.location(p), "location {p}");
            assert_eq!(a.timestamp(p), b.timestamp(p));
        }
        for s in 0..6 {
            let h = hash_str(&format!("s-{s}"));
            for from in 0..12 {
                for fwd in [true, false] {
                    assert_eq!(a.stream_entries(h, from, fwd, 3), b.stream_entries(h, from, fwd, 3));
                }
            }
            if s < 5 {
                assert!(b.may_contain_stream(h));
            }
        }
        for t in ["A", "B", "C"] {
            assert_eq!(a.type_positions(hash_str(t)), b.type_positions(hash_str(t)));
        }
        for t in ["even", "odd", "none"] {
            assert_eq!(a.tag_positions(hash_str(t)), b.tag_positions(hash_str(t)));
        }
        for i in 0..60u128 {
            assert_eq!(a.find_id(&Uuid::from_u128(i)), b.find_id(&Uuid::from_u128(i)));
        }
        let mut sa = a.streams();
        let mut sb = b.streams();
        sa.sort_by(|x, y| x.0.cmp(&y.0));
        sb.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(sa, sb);
    }

    #[test]
    fn sealed_index_answers_like_the_memory_index() {
        let m = sample();
        let bytes = m.encode_file().unwrap();
        let idx = SegmentIndex::open(Arc::new(bytes), Path::new("t.idx")).unwrap();
        check_same(&m, &idx);
        assert_eq!(
            idx.stream_entries(hash_str("s-1"), 2, true, 100),
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
    }

    #[test]
    fn damaged_index_files_are_refused() {
        let bytes = sample().encode_file().unwrap();
        for at in [0, 20, 124, 200, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(
                SegmentIndex::open(Arc::new(bad), Path::new("t.idx")).is_err(),
                "flip at {at}"
            );
        }
        for len in [0, 50, 128, bytes.len() - 1] {
            let short = bytes[..len].to_vec();
            assert!(SegmentIndex::open(Arc::new(short), Path::new("t.idx")).is_err());
        }
    }

    #[test]
    fn bloom_filter_has_no_false_negatives() {
        let mut bloom = vec![0u8; (bloom_bits_for(1000) / 8) as usize];
        for i in 0..1000 {
            bloom_insert(&mut bloom, hash_str(&format!("stream-{i}")));
        }
        assert!((0..1000).all(|i| bloom_check(&bloom, hash_str(&format!("stream-{i}")))));
        let false_pos = (0..10_000)
            .filter(|i| bloom_check(&bloom, hash_str(&format!("other-{i}"))))
            .count();
        assert!(false_pos < 300, "false positive rate too high: {false_pos}/10000");
    }
}
