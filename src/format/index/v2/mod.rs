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
//! The parts: this file opens a file and checks its sections on first use;
//! `encode.rs` writes one, `names.rs` holds the names section and
//! `lookup.rs` the answers ([`Lookup`](super::Lookup)).
//!
//! [`keyed`]: super::keyed

use std::path::Path;
use std::sync::OnceLock;

use super::bloom::BLOOM_BLOCK;
use super::keyed::Keyed;
use super::summary::{RESTART, Summary};
use super::{Header, INDEX_HEADER};
use crate::error::{Error, Result};
use crate::format::codec::{Reader, le_i64, le_u32};
use crate::storage::Mapped;

mod encode;
mod lookup;
mod names;

pub(super) use encode::encode;
use names::decode_names;

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
        Summary::trusted(
            self.section(self.summary),
            self.section(self.starts),
            self.stream_count,
            self.base,
        )
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

/// Makes every checksum of a version-2 to -4 file `bytes` match its bytes
/// again, as a writer's bug (not damage on disk) would leave them.
#[cfg(test)]
pub(super) fn reseal(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[..124]);
    bytes[124..128].copy_from_slice(&crc.to_le_bytes());
    let end = bytes.len() - 4;
    if le_u32(bytes, 8) >= 4 {
        let sums_at = end - SUMS_LEN;
        let field = |at: usize| usize::try_from(crate::format::codec::le_u64(bytes, at)).unwrap();
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
