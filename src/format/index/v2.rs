//! Version-2, -3 and -4 index files (format.md, "Index files"):
//! locations as 32-bit block offsets plus varint frame lengths, timestamps
//! per block of positions, and the stream, type, tag and id lookups as
//! [`keyed`] lists of positions relative to the segment's base. Streams are
//! found by name (their ordinal in the summary), so stream lookups are
//! exact. Version 3 adds the segment's distinct type names, so that a type
//! pattern is matched against names and served from the type lookup;
//! version 4 adds the tag keys that hold more than one tag or metadata value,
//! so that a count by any other key takes its entries without reading them
//! all, and a checksum per section, so that a section is checked on its
//! first use without reading the rest of the file; version 5 makes the
//! bloom filter a blocked one over the streams and the event ids, so that a
//! lookup of an id the segment lacks (every append naming its ids makes one
//! per segment) reads one cache line instead of decoding an ids block. This module owns that
//! layout; it must never read segment bytes.
//!
//! [`keyed`]: super::keyed

use std::path::Path;
use std::sync::OnceLock;

use uuid::Uuid;

use super::keyed::{self, Entry, Keyed};
use super::summary::{self, RESTART, Summary};
use super::bloom::{BLOOM_BLOCK, blocked_check, bloom_check, id_filter_hash};
use super::{
    Header, INDEX_HEADER, INDEX_MAGIC, Lookup, Parts, StreamSummary, TagKey, TagOwner, TypeCatalog, fold32, hash_str, id_key,
};
use crate::error::{Error, Result};
use crate::format::codec::{Reader, le_i64, le_u32, put_varint};
use crate::storage::Mapped;

/// Positions per location block.
const LOC_BLOCK: usize = 64;
/// Bytes of a location block's directory entry: `offset: u32`, `data_at: u32`,
/// `min_ts: i64`, `max_ts: i64`.
const LOC_DIR: usize = 24;

/// Bytes of version 4's section checksums: one CRC-32 per [`SUMS`] section,
/// then the CRC-32 of those.
const SUMS_LEN: usize = 4 * SUMS + 4;
/// Sections with a checksum of their own in version 4: locations, streams,
/// types, tags, ids, bloom, summary with its restarts, names.
const SUMS: usize = 8;

/// Encodes a version-5 file (a version-4 one whose bloom filter is blocked
/// and holds the event ids too), a version-4 file (the names with the shared tag keys, and the
/// section checksums), a version-3 one (the names) or a version-2 one, or
/// `None` if the segment
/// does not fit their 32-bit offsets and lengths (the caller then writes
/// version 1).
pub(super) fn encode(p: &Parts<'_>, version: u32) -> Result<Option<Vec<u8>>> {
    if p.end_offset > u64::from(u32::MAX) {
        return Ok(None);
    }
    let rel = |pos: u64| u32::try_from(pos - p.base).ok();
    let Some(locations) = encode_locations(p.locations) else {
        return Ok(None);
    };

    let mut streams = Vec::new();
    for (ordinal, (_, _, entries)) in p.streams.iter().enumerate() {
        let Ok(key) = u32::try_from(ordinal) else {
            return Ok(None);
        };
        for (rev, pos) in entries.iter() {
            let Some(pos) = rel(*pos) else { return Ok(None) };
            streams.push(Entry { key, rev: *rev, pos });
        }
    }
    streams.sort_unstable();
    let keyed_of = |lists: &[(u64, &[u64])]| -> Option<Vec<Entry>> {
        let mut out = Vec::new();
        for (hash, positions) in lists {
            for pos in positions.iter() {
                out.push(Entry {
                    key: fold32(*hash),
                    rev: 0,
                    pos: rel(*pos)?,
                });
            }
        }
        out.sort_unstable();
        // Two hashes that fold to one key on one event are one entry.
        out.dedup();
        Some(out)
    };
    let (Some(types), Some(tags)) = (keyed_of(&p.types), keyed_of(&p.tags)) else {
        return Ok(None);
    };
    let mut ids = Vec::with_capacity(p.ids.len());
    for (id, pos) in &p.ids {
        let Some(pos) = rel(*pos) else { return Ok(None) };
        ids.push(Entry {
            key: id_key(id),
            rev: 0,
            pos,
        });
    }
    ids.sort_unstable();
    ids.dedup();

    let mut sections: [Vec<u8>; 4] = Default::default();
    for (out, (entries, with_rev)) in sections
        .iter_mut()
        .zip([(&streams, true), (&types, false), (&tags, false), (&ids, false)])
    {
        if !keyed::encode(entries, with_rev, out) {
            return Ok(None);
        }
    }
    let bloom = if version >= 5 { p.blocked_bloom() } else { p.bloom() };
    let named: Vec<(&str, StreamSummary)> = p.streams.iter().map(|(n, s, _)| (*n, *s)).collect();
    let Some((summary, start_bytes)) = summary::encode(&named, p.base) else {
        return Ok(None);
    };
    let (min_ts, max_ts) = p.time_range();
    let type_names = if version >= 3 {
        let shared = (version >= 4).then_some(p.shared_tags.as_slice());
        let Some(section) = encode_names(&p.type_names, &p.meta_fields, shared) else {
            return Ok(None);
        };
        section
    } else {
        Vec::new()
    };

    let mut out = Vec::with_capacity(
        INDEX_HEADER
            + locations.len()
            + sections.iter().map(Vec::len).sum::<usize>()
            + bloom.len()
            + summary.len()
            + start_bytes.len()
            + type_names.len()
            + SUMS_LEN
            + 4,
    );
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for v in [
        p.base,
        p.locations.len() as u64,
        p.end_offset,
        min_ts as u64,
        max_ts as u64,
        p.streams.len() as u64,
        tags.len() as u64,
        bloom.len() as u64,
        summary.len() as u64,
        streams.len() as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for len in std::iter::once(locations.len()).chain(sections.iter().map(Vec::len)) {
        // Each fits: keyed::encode and encode_locations refuse longer sections.
        let Ok(len) = u32::try_from(len) else { return Ok(None) };
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.resize(INDEX_HEADER - 12, 0);
    out.extend_from_slice(&p.meta_fingerprint.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let mut sums = Vec::with_capacity(SUMS_LEN);
    let mut put = |out: &mut Vec<u8>, parts: &[&[u8]]| {
        let mut h = crc32fast::Hasher::new();
        for part in parts {
            h.update(part);
            out.extend_from_slice(part);
        }
        sums.extend_from_slice(&h.finalize().to_le_bytes());
    };
    put(&mut out, &[&locations]);
    for s in &sections {
        put(&mut out, &[s]);
    }
    put(&mut out, &[&bloom]);
    put(&mut out, &[&summary, &start_bytes]);
    put(&mut out, &[&type_names]);
    if version >= 4 {
        let crc = crc32fast::hash(&sums);
        sums.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&sums);
    }
    let crc = crc32fast::hash(&out[INDEX_HEADER..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(Some(out))
}

/// The locations section, or `None` if an offset or the section does not fit 32 bits.
fn encode_locations(locations: &[(u64, i64)]) -> Option<Vec<u8>> {
    let mut dir = Vec::with_capacity(locations.len().div_ceil(LOC_BLOCK) * LOC_DIR);
    let mut data = Vec::new();
    for block in locations.chunks(LOC_BLOCK) {
        let first = u32::try_from(block[0].0).ok()?;
        dir.extend_from_slice(&first.to_le_bytes());
        dir.extend_from_slice(&u32::try_from(data.len()).ok()?.to_le_bytes());
        let min = block.iter().map(|l| l.1).min().unwrap_or(0);
        let max = block.iter().map(|l| l.1).max().unwrap_or(0);
        dir.extend_from_slice(&min.to_le_bytes());
        dir.extend_from_slice(&max.to_le_bytes());
        for w in block.windows(2) {
            put_varint(&mut data, w[1].0.checked_sub(w[0].0)?);
        }
    }
    dir.extend_from_slice(&data);
    u32::try_from(dir.len()).ok()?;
    Some(dir)
}

/// The names section of version 3: the type names, then the indexed
/// metadata fields' names, each list as `count: u32` and each name as
/// `len: u16` and its bytes, strictly ascending; in version 4 (`shared`)
/// then the shared tag keys as `count: u32` and `u32`s, strictly ascending.
/// `None` if a name or a count does not fit.
fn encode_names(types: &[&str], fields: &[&str], shared: Option<&[u32]>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for list in [types, fields] {
        out.extend_from_slice(&u32::try_from(list.len()).ok()?.to_le_bytes());
        for n in list {
            out.extend_from_slice(&u16::try_from(n.len()).ok()?.to_le_bytes());
            out.extend_from_slice(n.as_bytes());
        }
    }
    if let Some(keys) = shared {
        out.extend_from_slice(&u32::try_from(keys.len()).ok()?.to_le_bytes());
        for k in keys {
            out.extend_from_slice(&k.to_le_bytes());
        }
    }
    Some(out)
}

/// The lists of a names section.
struct Names<'a> {
    /// The segment's event types, ascending.
    types: Vec<&'a str>,
    /// The indexed metadata fields, ascending.
    fields: Vec<&'a str>,
    /// The shared tag keys, ascending (version 4; empty before).
    shared_tags: Vec<u32>,
}

/// Decodes the names section of a `version` 3 or 4 file, or says why it is
/// malformed. The fields must be those whose fingerprint the header holds.
fn decode_names(b: &[u8], fingerprint: u64, version: u32) -> std::result::Result<Names<'_>, &'static str> {
    let mut r = Reader::new(b);
    let mut lists: [Vec<&str>; 2] = Default::default();
    for list in &mut lists {
        let count = r.u32().map_err(|_| "names section truncated")?;
        for _ in 0..count {
            let name = r.str16().map_err(|_| "name truncated or not UTF-8")?;
            if list.last().is_some_and(|last| *last >= name) {
                return Err("names not strictly ascending");
            }
            list.push(name);
        }
    }
    let mut shared_tags = Vec::new();
    if version >= 4 {
        let count = r.u32().map_err(|_| "shared tag keys truncated")?;
        for _ in 0..count {
            let key = r.u32().map_err(|_| "shared tag keys truncated")?;
            if shared_tags.last().is_some_and(|last| *last >= key) {
                return Err("shared tag keys not strictly ascending");
            }
            shared_tags.push(key);
        }
    }
    if !r.buf.is_empty() {
        return Err("bytes after the last name");
    }
    let [types, fields] = lists;
    if super::MetaFields::new(&fields).fingerprint() != fingerprint {
        return Err("metadata field names do not match the fingerprint");
    }
    Ok(Names {
        types,
        fields,
        shared_tags,
    })
}

/// A version-2, -3 or -4 index file, memory-mapped.
pub struct IndexV2 {
    map: Mapped,
    /// 2, 3 with the type names section, 4 with the shared tag keys and the
    /// section checksums.
    version: u32,
    base: u64,
    count: usize,
    end_offset: u64,
    min_ts: i64,
    max_ts: i64,
    stream_count: usize,
    /// Byte ranges of the sections in the file.
    locations: (usize, usize),
    streams: (usize, usize),
    types: (usize, usize),
    tags: (usize, usize),
    ids: (usize, usize),
    bloom: (usize, usize),
    summary: (usize, usize),
    starts: (usize, usize),
    /// The type names (empty in version 2).
    type_names: (usize, usize),
    /// Events with index entries (from the header).
    indexed: u64,
    /// Tag entries (from the header).
    tag_count: u64,
    /// Fingerprint of the indexed metadata fields (from the header).
    meta_fingerprint: u64,
    /// The file, for errors found on first use.
    file: Box<Path>,
    /// Version 4's checksum of each section, in the order of [`Part::sum`].
    sums: Option<[u32; SUMS]>,
    /// Where the body checksum is (the body runs from the header to it).
    body_crc_at: usize,
    /// Each [`Part`]'s check of every entry, run on first use: `None` if it
    /// passed, else where and why it failed.
    checked: Box<[Checked; PARTS]>,
    /// Whether the bloom filter passed its check, for id lookups (version 5),
    /// which pass over a damaged filter to the ids section instead of failing
    /// on it: a damaged filter must not fail every append that names its ids.
    /// Reads by stream and the full checks still report the damage.
    ids_filter: OnceLock<bool>,
}

/// The outcome of one section's check, once run: `None` if it passed, else
/// the offset and reason of the failure.
type Checked = OnceLock<Option<(usize, String)>>;

/// The parts of the file checked on first use, not at open: each section's
/// checksum (version 4; the body checksum in versions 2 and 3) and every entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Locations = 0,
    Summary = 1,
    Streams = 2,
    Types = 3,
    Tags = 4,
    Ids = 5,
    TypeNames = 6,
    Bloom = 7,
    /// The body checksum (of every byte after the header).
    Body = 8,
}

/// How many [`Part`]s there are.
const PARTS: usize = 9;

impl Part {
    const ALL: [Part; PARTS] = [
        Part::Body,
        Part::Locations,
        Part::Summary,
        Part::Streams,
        Part::Types,
        Part::Tags,
        Part::Ids,
        Part::TypeNames,
        Part::Bloom,
    ];

    /// The part's place in version 4's section checksums (`None`: the body).
    fn sum(self) -> Option<usize> {
        match self {
            Part::Locations => Some(0),
            Part::Streams => Some(1),
            Part::Types => Some(2),
            Part::Tags => Some(3),
            Part::Ids => Some(4),
            Part::Bloom => Some(5),
            Part::Summary => Some(6),
            Part::TypeNames => Some(7),
            Part::Body => None,
        }
    }
}

impl std::fmt::Debug for IndexV2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexV2")
            .field("base", &self.base)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl IndexV2 {
    /// Opens a version-2, -3 or -4 file whose length, magic and header
    /// checksum [`super::SegmentIndex::open`] has checked: checks the sizes
    /// and (version 4) the section checksums' own checksum, reading no other
    /// byte of the body, so that open does not grow with the file. A
    /// section's checksum (the body's in versions 2 and 3: damage on disk)
    /// and every entry are checked the first time the section is used
    /// ([`IndexV2::damage`] reports a failure; the section then answers
    /// nothing); [`IndexV2::check_all`] checks them all at once.
    pub(super) fn open(map: Mapped, file: &Path, version: u32, head: &[u8], tail: &[u8]) -> Result<Self> {
        // Only the header (`head`), the length and the checksums at the end
        // (`tail`, the file's last `INDEX_TAIL` bytes) are read here.
        let b = head;
        let file_len = (*map).as_ref().len();
        let bad = |offset: usize, reason: &str| Error::corruption(file, offset as u64, reason);
        let Header {
            base,
            count,
            end_offset,
            min_ts,
            max_ts,
            stream_count,
            tag_count,
            bloom_len,
            summary_len,
            indexed,
            meta_fingerprint,
        } = Header::parse(b, file)?;
        if count > u64::from(u32::MAX) || end_offset > u64::from(u32::MAX) {
            return Err(bad(24, "segment too large for a version-2 index"));
        }
        if version >= 5 && (bloom_len == 0 || !bloom_len.is_multiple_of(BLOOM_BLOCK as u64)) {
            return Err(bad(72, "bad bloom filter size"));
        }
        let lens: Vec<u64> = (0..5).map(|i| u64::from(le_u32(b, 96 + 4 * i))).collect();
        // Sizes in u128 so that no header value can overflow the arithmetic.
        let body = lens.iter().map(|l| u128::from(*l)).sum::<u128>()
            + u128::from(bloom_len)
            + u128::from(summary_len)
            + 4 * u128::from(stream_count.div_ceil(RESTART as u64));
        // The type names (versions 3 to 5) take the rest of the body, before
        // the section checksums (versions 4 and 5) and the body checksum.
        let sums_len = if version >= 4 { SUMS_LEN } else { 0 };
        let names_len = (file_len as u128).checked_sub(INDEX_HEADER as u128 + body + sums_len as u128 + 4);
        let names_len = match (version, names_len) {
            (2, Some(0)) => 0,
            (3, Some(n)) if n >= 8 => u64::try_from(n).map_err(|_| bad(0, "index file larger than memory"))?,
            (4 | 5, Some(n)) if n >= 12 => u64::try_from(n).map_err(|_| bad(0, "index file larger than memory"))?,
            _ => return Err(bad(0, "index section sizes do not match the file length")),
        };
        let crc_at = file_len - 4;
        // The body checksum (and in version 4 each section's) is checked on
        // first use, so that open reads no page of the body but version 4's
        // section checksums, which are checked here.
        let sums = if version >= 4 {
            let at = crc_at - SUMS_LEN;
            // The checksums are the tail's last 40 bytes but the body CRC.
            let t = tail
                .len()
                .checked_sub(SUMS_LEN + 4)
                .and_then(|from| tail.get(from..tail.len() - 4))
                .ok_or_else(|| bad(at, "index file truncated"))?;
            if crc32fast::hash(&t[..SUMS_LEN - 4]) != le_u32(t, SUMS_LEN - 4) {
                return Err(bad(at, "index section checksums damaged"));
            }
            let mut sums = [0u32; SUMS];
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum = le_u32(t, 4 * i);
            }
            Some(sums)
        } else {
            None
        };
        // Every section is inside the file (checked above), so each length fits a usize.
        let fits = |v: u64, at: usize| usize::try_from(v).map_err(|_| bad(at, "index section larger than memory"));
        let mut at = INDEX_HEADER;
        let mut next = |len: usize| {
            let range = (at, at + len);
            at = range.1;
            range
        };
        let locations = next(fits(lens[0], 96)?);
        let streams = next(fits(lens[1], 100)?);
        let types = next(fits(lens[2], 104)?);
        let tags = next(fits(lens[3], 108)?);
        let ids = next(fits(lens[4], 112)?);
        let bloom = next(fits(bloom_len, 72)?);
        let summary = next(fits(summary_len, 80)?);
        let stream_count = fits(stream_count, 56)?;
        let starts = next(4 * stream_count.div_ceil(RESTART));
        let type_names = next(fits(names_len, 0)?);
        let count = fits(count, 24)?;
        // The location directory must fit its section, which `time_bounds` reads unchecked.
        if count.div_ceil(LOC_BLOCK) * LOC_DIR > locations.1 - locations.0 {
            return Err(bad(locations.0, "location directory past its section"));
        }
        Ok(IndexV2 {
            map: map.clone(),
            version,
            type_names,
            base,
            count,
            end_offset,
            min_ts,
            max_ts,
            stream_count,
            locations,
            streams,
            types,
            tags,
            ids,
            bloom,
            summary,
            starts,
            indexed,
            tag_count,
            meta_fingerprint,
            file: file.into(),
            sums,
            body_crc_at: crc_at,
            checked: Box::default(),
            ids_filter: OnceLock::new(),
        })
    }

    /// The bytes of `part` (`None` for the body).
    fn range_of(&self, part: Part) -> Option<(usize, usize)> {
        Some(match part {
            Part::Locations => self.locations,
            Part::Streams => self.streams,
            Part::Types => self.types,
            Part::Tags => self.tags,
            Part::Ids => self.ids,
            Part::Bloom => self.bloom,
            // The restarts follow the summary: one checksum covers both.
            Part::Summary => (self.summary.0, self.starts.1),
            Part::TypeNames => self.type_names,
            Part::Body => return None,
        })
    }

    /// Checks the checksum that covers `part`: its own in version 4, the
    /// body's in versions 2 and 3 (computed once for all parts).
    fn check_sum(&self, part: Part) -> Option<(usize, String)> {
        let b = self.bytes();
        match (part.sum(), self.range_of(part), &self.sums) {
            (Some(i), Some(range), Some(sums)) => (crc32fast::hash(&b[range.0..range.1]) != sums[i])
                .then(|| (range.0, "index section checksum mismatch".to_string())),
            (None, _, _) => (crc32fast::hash(&b[INDEX_HEADER..self.body_crc_at]) != le_u32(b, self.body_crc_at))
                .then(|| (self.body_crc_at, "index body checksum mismatch".to_string())),
            _ => {
                if self.ok(Part::Body) {
                    None
                } else {
                    self.checked[Part::Body as usize].get().cloned().flatten()
                }
            }
        }
    }

    /// Checks `part`: its checksum, then every entry: where and why it fails, if it does.
    fn check(&self, part: Part) -> Option<(usize, String)> {
        if let Some(failed) = self.check_sum(part) {
            return Some(failed);
        }
        let b = self.bytes();
        let positions = self.count as u64;
        // Streams and types have one entry per indexed event, tags `tag_count`
        // and ids at most one per indexed event.
        let (range, with_rev, want, what) = match part {
            Part::Body | Part::Bloom => return None,
            Part::Locations => {
                return self.check_locations().err().map(|r| (self.locations.0, r.to_string()));
            }
            Part::Summary => {
                return Summary::open(
                    self.section(self.summary),
                    self.section(self.starts),
                    self.stream_count,
                    self.base,
                    positions,
                )
                .err()
                .map(|r| (self.summary.0, r.to_string()));
            }
            Part::TypeNames => {
                return decode_names(self.section(self.type_names), self.meta_fingerprint, self.version)
                    .err()
                    .filter(|_| self.version >= 3)
                    .map(|r| (self.type_names.0, r.to_string()));
            }
            Part::Streams => (self.streams, true, Some(self.indexed), "stream"),
            Part::Types => (self.types, false, Some(self.indexed), "type"),
            Part::Tags => (self.tags, false, Some(self.tag_count), "tag"),
            Part::Ids => (self.ids, false, None, "id"),
        };
        let k = match Keyed::open(&b[range.0..range.1], with_rev, positions) {
            Ok(k) => k,
            Err(r) => return Some((range.0, r.to_string())),
        };
        let len = k.len() as u64;
        if want.map_or(len > self.indexed, |w| w != len) {
            return Some((range.0, format!("{what} section holds {len} entries")));
        }
        // Stream keys are ordinals of the summary (the last entry has the largest key).
        if part == Part::Streams && k.last().is_some_and(|e| e.key as usize >= self.stream_count) {
            return Some((range.0, "stream entry for a stream not in the summary".to_string()));
        }
        None
    }

    /// True if every entry of `part` passed its check (run on first use).
    fn ok(&self, part: Part) -> bool {
        self.checked[part as usize].get_or_init(|| self.check(part)).is_none()
    }

    /// The first failure of a section checked so far (on first use), as
    /// damage of the file: a read that used the section must report it
    /// rather than the empty answer the section gave.
    pub fn damage(&self) -> Option<Error> {
        self.checked
            .iter()
            .find_map(|c| c.get().and_then(Option::as_ref))
            .map(|(at, why)| Error::corruption(&*self.file, *at as u64, why.clone()))
    }

    /// Checks every checksum and every entry of every section now (what
    /// `open` leaves to first use).
    pub fn check_all(&self) -> Result<()> {
        for part in Part::ALL {
            self.ok(part);
        }
        self.damage().map_or(Ok(()), Err)
    }

    fn bytes(&self) -> &[u8] {
        (*self.map).as_ref()
    }

    /// The file's format version: 2, 3 with the type names, 4 with the
    /// shared tag keys and the section checksums.
    pub fn version(&self) -> u32 {
        self.version
    }

    fn section(&self, range: (usize, usize)) -> &[u8] {
        &self.bytes()[range.0..range.1]
    }

    fn keyed(&self, range: (usize, usize), with_rev: bool) -> Keyed<'_> {
        Keyed::trusted(self.section(range), with_rev)
    }

    fn loc_blocks(&self) -> usize {
        self.count.div_ceil(LOC_BLOCK)
    }

    /// `(offset, data_at, min_ts, max_ts)` of location block `i`.
    fn loc_dir(&self, i: usize) -> (u64, usize, i64, i64) {
        let s = self.section(self.locations);
        let at = i * LOC_DIR;
        (
            u64::from(le_u32(s, at)),
            le_u32(s, at + 4) as usize,
            le_i64(s, at + 8),
            le_i64(s, at + 16),
        )
    }

    /// Offsets of the positions of location block `i`, up to and including index `upto` in it.
    fn block_offsets(&self, i: usize, upto: usize) -> Option<Vec<u64>> {
        let s = self.section(self.locations);
        let (first, data_at, _, _) = self.loc_dir(i);
        let mut r = Reader::new(s.get(self.loc_blocks() * LOC_DIR + data_at..)?);
        let mut out = Vec::with_capacity(upto + 1);
        let mut off = first;
        out.push(off);
        for _ in 0..upto {
            off = off.checked_add(r.varint().ok()?)?;
            out.push(off);
        }
        Some(out)
    }

    fn check_locations(&self) -> std::result::Result<(), &'static str> {
        let s = self.section(self.locations);
        let blocks = self.loc_blocks();
        if blocks * LOC_DIR > s.len() {
            return Err("location directory past its section");
        }
        let data = &s[blocks * LOC_DIR..];
        let mut expect_at = 0;
        let mut prev = 0;
        for i in 0..blocks {
            let (first, data_at, min_ts, max_ts) = self.loc_dir(i);
            if data_at != expect_at {
                return Err("location block does not start where the previous one ends");
            }
            if min_ts > max_ts {
                return Err("location block times out of order");
            }
            let len = (self.count - i * LOC_BLOCK).min(LOC_BLOCK);
            let mut r = Reader::new(&data[data_at..]);
            let before = r.buf.len();
            let mut off = first;
            for j in 0..len {
                if j > 0 {
                    off = r
                        .varint()
                        .ok()
                        .and_then(|d| off.checked_add(d))
                        .ok_or("location block does not decode")?;
                }
                if off < prev || off >= self.end_offset {
                    return Err("location out of order");
                }
                prev = off;
            }
            expect_at += before - r.buf.len();
        }
        if expect_at != data.len() {
            return Err("location section has bytes after its last block");
        }
        Ok(())
    }

    fn summary(&self) -> Summary<'_> {
        Summary::trusted(self.section(self.summary), self.section(self.starts), self.stream_count, self.base)
    }

    /// The summary ordinal of `stream`, if it has an entry.
    fn ordinal(&self, stream: &str) -> Option<u32> {
        u32::try_from(self.summary().ordinal(stream)?).ok()
    }

    /// Offset of the seal frame in the segment (just past the last event).
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    /// The bytes of the index file.
    pub fn raw(&self) -> &[u8] {
        self.bytes()
    }

    /// The frame range of position index `i`, whose block `block` has
    /// `offsets` decoded at least up to `i + 1` within the block (or to its end).
    fn range_in(&self, block: usize, offsets: &[u64], i: usize) -> (u64, u64) {
        let j = i % LOC_BLOCK;
        let end = match offsets.get(j + 1) {
            Some(next) => *next,
            None if i + 1 == self.count => self.end_offset,
            None => self.loc_dir(block + 1).0,
        };
        (offsets[j], end)
    }

    fn index_of(&self, position: u64) -> Option<usize> {
        let i = usize::try_from(position.checked_sub(self.base)?).ok()?;
        (i < self.count).then_some(i)
    }

    fn global(&self, positions: Vec<u32>) -> Vec<u64> {
        positions.into_iter().map(|p| self.base + u64::from(p)).collect()
    }
}

impl Lookup for IndexV2 {
    fn base(&self) -> u64 {
        self.base
    }
    fn next_position(&self) -> u64 {
        self.base + self.count as u64
    }
    fn location(&self, position: u64) -> Option<(u64, u64)> {
        if !self.ok(Part::Locations) {
            return None;
        }
        let i = self.index_of(position)?;
        let (block, j) = (i / LOC_BLOCK, i % LOC_BLOCK);
        let block_len = (self.count - block * LOC_BLOCK).min(LOC_BLOCK);
        let offsets = self.block_offsets(block, (j + 1).min(block_len - 1))?;
        Some(self.range_in(block, &offsets, i))
    }
    fn locations(&self, positions: &[u64]) -> Vec<Option<(u64, u64)>> {
        if !self.ok(Part::Locations) {
            return vec![None; positions.len()];
        }
        // Each block's offsets are decoded once for every position in it.
        let mut decoded: Option<(usize, Vec<u64>)> = None;
        positions
            .iter()
            .map(|p| {
                let i = self.index_of(*p)?;
                let block = i / LOC_BLOCK;
                if decoded.as_ref().is_none_or(|(b, _)| *b != block) {
                    let block_len = (self.count - block * LOC_BLOCK).min(LOC_BLOCK);
                    decoded = Some((block, self.block_offsets(block, block_len - 1)?));
                }
                let (_, offsets) = decoded.as_ref()?;
                Some(self.range_in(block, offsets, i))
            })
            .collect()
    }
    fn time_bounds(&self, position: u64) -> Option<(i64, i64)> {
        if !self.ok(Part::Locations) {
            return None;
        }
        let i = self.index_of(position)?;
        let (_, _, lo, hi) = self.loc_dir(i / LOC_BLOCK);
        Some((lo, hi))
    }
    fn time_range(&self) -> Option<(i64, i64)> {
        (self.count > 0).then_some((self.min_ts, self.max_ts))
    }
    fn stream_entries(&self, stream: &str, from: u64, forward: bool, limit: usize) -> Vec<(u64, u64)> {
        if !self.ok(Part::Summary) || !self.ok(Part::Streams) {
            return Vec::new();
        }
        let Some(key) = self.ordinal(stream) else {
            return Vec::new();
        };
        let k = self.keyed(self.streams, true);
        let entries = if forward {
            k.forward(key, from, limit)
        } else {
            k.backward(key, from, limit)
        };
        entries
            .into_iter()
            .map(|e| (e.rev, self.base + u64::from(e.pos)))
            .collect()
    }
    fn type_positions(&self, hash: u64) -> Vec<u64> {
        if !self.ok(Part::Types) {
            return Vec::new();
        }
        self.global(self.keyed(self.types, false).positions(fold32(hash)))
    }
    fn type_count(&self, hash: u64) -> u64 {
        if !self.ok(Part::Types) {
            return 0;
        }
        self.keyed(self.types, false).count(fold32(hash)) as u64
    }
    fn type_positions_in(&self, hash: u64, lo: u64, hi: u64) -> Vec<u64> {
        if !self.ok(Part::Types) || hi <= lo.max(self.base) {
            return Vec::new();
        }
        // Relative to the base: entries hold 32-bit positions, so a start
        // past them finds none.
        let Ok(from) = u32::try_from(lo.saturating_sub(self.base)) else {
            return Vec::new();
        };
        let to = hi - self.base;
        self.global(self.keyed(self.types, false).positions_in(fold32(hash), from, to))
    }
    fn type_catalog(&self) -> Option<TypeCatalog> {
        if self.version < 3 || !self.ok(Part::TypeNames) {
            return None;
        }
        let names = decode_names(self.section(self.type_names), self.meta_fingerprint, self.version)
            .ok()?
            .types;
        let keys: std::collections::HashSet<u32> = names.iter().map(|n| fold32(hash_str(n))).collect();
        Some(TypeCatalog {
            // The type lookup files each name under a 32-bit key: two names on one key answer for both.
            exact: keys.len() == names.len(),
            names: names.into_iter().map(str::to_string).collect(),
        })
    }
    fn tag_positions(&self, hash: u64) -> Vec<u64> {
        if !self.ok(Part::Tags) {
            return Vec::new();
        }
        self.global(self.keyed(self.tags, false).positions(fold32(hash)))
    }
    fn tag_owner(&self, key: &TagKey) -> TagOwner {
        if self.version < 4 || !self.ok(Part::TypeNames) {
            return TagOwner::Unknown;
        }
        match decode_names(self.section(self.type_names), self.meta_fingerprint, self.version) {
            Ok(names) if names.shared_tags.binary_search(&fold32(key.hash)).is_err() => TagOwner::One,
            _ => TagOwner::Unknown,
        }
    }
    fn id_positions(&self, id: &Uuid) -> Vec<u64> {
        // Version 5's filter holds every id of the segment: most lookups of
        // an id the segment lacks end here, without decoding an ids block.
        // A damaged filter says "maybe", and the ids section answers.
        if self.version >= 5
            && *self.ids_filter.get_or_init(|| self.check(Part::Bloom).is_none())
            && !blocked_check(self.section(self.bloom), id_filter_hash(id))
        {
            return Vec::new();
        }
        if !self.ok(Part::Ids) {
            return Vec::new();
        }
        self.global(self.keyed(self.ids, false).positions(id_key(id)))
    }
    fn ids_exact(&self) -> bool {
        false
    }
    fn may_contain_stream(&self, hash: u64) -> bool {
        // A damaged bloom filter says "maybe" (and the read reports the damage).
        self.stream_count > 0
            && (!self.ok(Part::Bloom)
                || if self.version >= 5 {
                    blocked_check(self.section(self.bloom), hash)
                } else {
                    bloom_check(self.section(self.bloom), hash)
                })
    }
    fn streams(&self) -> Vec<(String, StreamSummary)> {
        if !self.ok(Part::Summary) {
            return Vec::new();
        }
        self.summary().entries()
    }
    fn meta_fingerprint(&self) -> u64 {
        self.meta_fingerprint
    }
    fn event_count(&self) -> Option<u64> {
        Some(self.indexed)
    }
    fn meta_field_names(&self) -> Option<Vec<String>> {
        if self.version < 3 || !self.ok(Part::TypeNames) {
            return None;
        }
        let names = decode_names(self.section(self.type_names), self.meta_fingerprint, self.version).ok()?;
        Some(names.fields.into_iter().map(str::to_string).collect())
    }
}

/// Makes every checksum of a version-2 to -4 file `bytes` match its bytes
/// again, as a writer's bug (not damage on disk) would leave them.
#[cfg(test)]
pub(super) fn reseal(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[..124]);
    bytes[124..128].copy_from_slice(&crc.to_le_bytes());
    let end = bytes.len() - 4;
    if le_u32(bytes, 8) >= 4 {
        let sums_at = end - SUMS_LEN;
        let field = |at: usize| usize::try_from(super::le_u64(bytes, at)).unwrap();
        let mut lens: Vec<usize> = (0..5).map(|i| le_u32(bytes, 96 + 4 * i) as usize).collect();
        lens.push(field(72));
        lens.push(field(80) + 4 * field(56).div_ceil(RESTART));
        lens.push(sums_at - INDEX_HEADER - lens.iter().sum::<usize>());
        let mut at = INDEX_HEADER;
        let mut sums = Vec::new();
        for len in lens {
            sums.extend_from_slice(&crc32fast::hash(&bytes[at..at + len]).to_le_bytes());
            at += len;
        }
        let crc = crc32fast::hash(&sums);
        sums.extend_from_slice(&crc.to_le_bytes());
        bytes[sums_at..end].copy_from_slice(&sums);
    }
    let crc = crc32fast::hash(&bytes[INDEX_HEADER..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}
