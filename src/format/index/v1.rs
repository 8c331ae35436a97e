//! Version-1 index files (format.md, "Index files, version 1"): fixed-width
//! tables of 64-bit hashes and positions. annal reads them, and writes them
//! only for a segment too large for version 2. This module owns that layout;
//! it must never read segment bytes.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::bloom::bloom_check;
use super::{Header, INDEX_HEADER, INDEX_MAGIC, Lookup, Parts, StreamSummary, hash_str, parse_summary, partition};
use crate::error::{Error, Result};
use crate::format::codec::{le_u32, le_u64};
use crate::storage::Mapped;

/// Encodes a version-1 file.
pub(super) fn encode(p: &Parts<'_>) -> Result<Vec<u8>> {
    let n = p.locations.len() as u64;
    let mut streams: Vec<(u64, u64, u64)> = p
        .streams
        .iter()
        .flat_map(|(name, _, entries)| {
            let h = hash_str(name);
            entries.iter().map(move |(r, pos)| (h, *r, *pos))
        })
        .collect();
    streams.sort_unstable();
    let pairs = |lists: &[(u64, &[u64])]| -> Vec<(u64, u64)> {
        lists
            .iter()
            .flat_map(|(h, v)| v.iter().map(move |pos| (*h, *pos)))
            .collect()
    };
    let types = pairs(&p.types);
    let tags = pairs(&p.tags);
    let bloom = p.bloom();
    let summary = p.summary_v1()?;
    let (min_ts, max_ts) = p.time_range();

    let mut out =
        Vec::with_capacity(INDEX_HEADER + p.locations.len() * 80 + tags.len() * 16 + bloom.len() + summary.len() + 4);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for v in [
        p.base,
        n,
        p.end_offset,
        min_ts as u64,
        max_ts as u64,
        p.streams.len() as u64,
        tags.len() as u64,
        bloom.len() as u64,
        summary.len() as u64,
        p.ids.len() as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.resize(INDEX_HEADER - 12, 0);
    out.extend_from_slice(&p.meta_fingerprint.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());

    for (off, ts) in p.locations {
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&ts.to_le_bytes());
    }
    for (h, r, pos) in &streams {
        for v in [h, r, pos] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for (h, pos) in types.iter().chain(tags.iter()) {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&pos.to_le_bytes());
    }
    for (id, pos) in &p.ids {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&pos.to_le_bytes());
    }
    out.extend_from_slice(&bloom);
    out.extend_from_slice(&summary);
    let crc = crc32fast::hash(&out[INDEX_HEADER..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// A version-1 index file, memory-mapped.
pub struct IndexV1 {
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
    /// Fingerprint of the indexed metadata fields (from the header).
    meta_fingerprint: u64,
}

impl std::fmt::Debug for IndexV1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexV1")
            .field("base", &self.base)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl IndexV1 {
    /// Decodes and checks a version-1 file whose length, magic and header
    /// checksum [`super::SegmentIndex::open`] has checked.
    pub(super) fn open(map: Mapped, file: &Path) -> Result<Self> {
        let b: &[u8] = (*map).as_ref();
        let bad = |offset: u64, reason: &str| Error::corruption(PathBuf::from(file), offset, reason);
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
        let crc_at = b.len() - 4;
        let crc = le_u32(b, crc_at);
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
        let idx = IndexV1 {
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
            meta_fingerprint,
        };
        // The summary must parse and count exactly `stream_count` entries.
        if idx.summary().map(|s| s.len() as u64) != Some(stream_count) {
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
            .filter(|p| self.holds(*p))
            .collect()
    }

    /// True if `position` is one of this segment's. Version 1 does not check
    /// the positions of its tables on open, so every answer passes this.
    fn holds(&self, position: u64) -> bool {
        position >= self.base && position - self.base < self.count
    }

    fn summary(&self) -> Option<Vec<(String, StreamSummary)>> {
        parse_summary(&self.bytes()[self.summary_at..self.summary_at + self.summary_len])
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

impl Lookup for IndexV1 {
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
    fn time_bounds(&self, position: u64) -> Option<(i64, i64)> {
        let i = usize::try_from(position.checked_sub(self.base)?).ok()?;
        (i < self.count_len).then(|| {
            let ts = self.loc(i).1;
            (ts, ts)
        })
    }
    fn time_range(&self) -> Option<(i64, i64)> {
        (self.count > 0).then_some((self.min_ts, self.max_ts))
    }
    fn stream_entries(&self, stream: &str, from: u64, forward: bool, limit: usize) -> Vec<(u64, u64)> {
        let hash = hash_str(stream);
        let n = self.indexed;
        if forward {
            let start = partition(n, |i| {
                let (h, r, _) = self.stream_rec(i);
                (h, r) < (hash, from)
            });
            (start..n)
                .map(|i| self.stream_rec(i))
                .take_while(|(h, _, _)| *h == hash)
                .filter(|(_, _, p)| self.holds(*p))
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
                .filter(|(_, _, p)| self.holds(*p))
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
    fn id_positions(&self, id: &Uuid) -> Vec<u64> {
        let b = self.bytes();
        let key = id.as_bytes();
        let rec = |i: usize| &b[self.ids_at + 24 * i..self.ids_at + 24 * i + 24];
        let i = partition(self.indexed, |i| rec(i)[..16] < key[..]);
        (i < self.indexed && &rec(i)[..16] == key)
            .then(|| le_u64(rec(i), 16))
            .filter(|p| self.holds(*p))
            .into_iter()
            .collect()
    }
    fn may_contain_stream(&self, hash: u64) -> bool {
        if self.stream_count == 0 {
            return false;
        }
        bloom_check(&self.bytes()[self.bloom_at..self.bloom_at + self.bloom_len], hash)
    }
    fn streams(&self) -> Vec<(String, StreamSummary)> {
        self.summary().unwrap_or_default()
    }
    fn meta_fingerprint(&self) -> u64 {
        self.meta_fingerprint
    }
    fn event_count(&self) -> Option<u64> {
        Some(self.indexed as u64)
    }
}
