//! The frame of an index file: its magic, version, header size and the
//! tail that opening reads, and the header fields every version shares,
//! parsed and checked (format.md, "Index header").
//!
//! This module only parses bytes it is given; it must never open a file.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::codec::{le_i64, le_u64};

/// Magic bytes at the start of every index file.
pub const INDEX_MAGIC: &[u8; 8] = b"ANNALIDX";
/// Format version of the index files annal writes (it reads 1 to 5).
pub const INDEX_VERSION: u32 = 5;
/// Size of the index file header.
pub const INDEX_HEADER: usize = 128;

/// Bytes at the end of an index file that opening it reads: version 4's
/// section checksums and the body checksum.
pub const INDEX_TAIL: usize = 40;

/// The first [`INDEX_HEADER`] bytes and the last [`INDEX_TAIL`] bytes of an
/// index file's bytes `b` (each shorter if `b` is), as
/// [`SegmentIndex::open_with_edges`](super::SegmentIndex::open_with_edges) takes them.
pub fn edges(b: &[u8]) -> (&[u8], &[u8]) {
    (&b[..INDEX_HEADER.min(b.len())], &b[b.len() - INDEX_TAIL.min(b.len())..])
}

/// The header fields both versions share (format.md, "Index header"),
/// checked for what holds in either: flags 0, `indexed` ≤ `count`, positions
/// that stay below `u64::MAX`, and a bloom size that fits the stream count.
pub(crate) struct Header {
    /// First position of the segment.
    pub(super) base: u64,
    /// Positions the segment holds.
    pub(super) count: u64,
    /// Offset of the seal frame in the segment.
    pub(super) end_offset: u64,
    /// Earliest timestamp of an event.
    pub(super) min_ts: i64,
    /// Latest timestamp of an event.
    pub(super) max_ts: i64,
    /// Streams with events in the segment.
    pub(super) stream_count: u64,
    /// Tag entries.
    pub(super) tag_count: u64,
    /// Bytes of the bloom filter.
    pub(super) bloom_len: u64,
    /// Bytes of the stream summary.
    pub(super) summary_len: u64,
    /// Events with index entries.
    pub(super) indexed: u64,
    /// Fingerprint of the indexed metadata fields.
    pub(super) meta_fingerprint: u64,
}

impl Header {
    /// Reads the header of `b`, whose length (at least 132 bytes), magic and
    /// header checksum [`SegmentIndex::open`](super::SegmentIndex::open) has checked.
    pub(super) fn parse(b: &[u8], file: &Path) -> Result<Header> {
        let bad = |offset: u64, reason: &str| Error::corruption(file, offset, reason);
        if b[12..16] != [0; 4] {
            return Err(bad(12, "unknown index flags"));
        }
        let h = Header {
            base: le_u64(b, 16),
            count: le_u64(b, 24),
            end_offset: le_u64(b, 32),
            min_ts: le_i64(b, 40),
            max_ts: le_i64(b, 48),
            stream_count: le_u64(b, 56),
            tag_count: le_u64(b, 64),
            bloom_len: le_u64(b, 72),
            summary_len: le_u64(b, 80),
            indexed: le_u64(b, 88),
            meta_fingerprint: le_u64(b, 116),
        };
        if h.indexed > h.count {
            return Err(bad(88, "more indexed events than positions"));
        }
        if h.base.checked_add(h.count).is_none() {
            return Err(bad(24, "positions run past the largest position"));
        }
        if h.bloom_len == 0 && h.stream_count > 0 || !h.bloom_len.is_multiple_of(8) {
            return Err(bad(72, "bad bloom filter size"));
        }
        Ok(h)
    }
}
