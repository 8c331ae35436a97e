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
use crate::format::codec::{Reader, le_u32, le_u64, le_i64};

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
const STREAMS_VERSION: u32 = 1;
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
        let mut out = Vec::with_capacity(32 + self.streams.len() * 40);
        out.extend_from_slice(STREAMS_MAGIC);
        out.extend_from_slice(&STREAMS_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.covered_position.to_le_bytes());
        out.extend_from_slice(&(self.streams.len() as u64).to_le_bytes());
        for (name, s) in &self.streams {
            let len = u16::try_from(name.len())
                .map_err(|_| Error::InvalidInput(format!("stream name of {} bytes in a checkpoint", name.len())))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&s.last_revision.to_le_bytes());
            out.extend_from_slice(&s.last_position.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes and checks a checkpoint file.
    pub fn decode(b: &[u8], file: &Path) -> Result<Self> {
        let bad = |reason: &str| Error::corruption(file, 0, reason);
        if b.len() < 36 || &b[0..8] != STREAMS_MAGIC {
            return Err(bad("not a stream checkpoint"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("stream checkpoint checksum mismatch"));
        }
        let version = le_u32(b, 8);
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
    if b.len() < ACTIVE_INDEX_HEADER + 4 || &b[0..8] != ACTIVE_INDEX_MAGIC {
        return Err(bad("not an active index checkpoint"));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(bad("active index checkpoint checksum mismatch"));
    }
    let version = le_u32(b, 8);
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
    let index = crate::format::index::MemIndex::decode_snapshot(&body[ACTIVE_INDEX_HEADER..], fields)
        .map_err(|e| Error::corruption(file, ACTIVE_INDEX_HEADER as u64, format!("active index checkpoint: {}", e.0)))?;
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
