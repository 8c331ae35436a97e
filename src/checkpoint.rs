//! Small files beside the log: the store identity file (`annal.meta`) and the
//! stream-state checkpoint (`streams.chk`), each with its one encoder and decoder
//! (see format.md, "Store identity" and "Stream checkpoint").
//!
//! Both are derived or fixed data: losing `streams.chk` costs only a slower
//! open, never an event. This module must never write the log.

use std::collections::HashMap;
use std::path::Path;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::record::Reader;

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
        if crc32fast::hash(&b[..60]) != u32::from_le_bytes(b[60..64].try_into().expect("4 bytes")) {
            return Err(Error::corruption(file, 0, "annal.meta checksum mismatch"));
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
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
            created_micros: i64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
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
    /// Encodes the checkpoint file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.streams.len() * 40);
        out.extend_from_slice(STREAMS_MAGIC);
        out.extend_from_slice(&STREAMS_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.covered_position.to_le_bytes());
        out.extend_from_slice(&(self.streams.len() as u64).to_le_bytes());
        for (name, s) in &self.streams {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&s.last_revision.to_le_bytes());
            out.extend_from_slice(&s.last_position.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
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
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
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
        let covered_position = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
        let count = u64::from_le_bytes(b[24..32].try_into().expect("8 bytes"));
        let mut r = Reader { buf: &body[32..] };
        // Each entry takes at least 18 bytes, which bounds the allocation.
        if count > (r.buf.len() / 18) as u64 {
            return Err(bad("stream count larger than the file"));
        }
        let mut streams = HashMap::with_capacity(count as usize);
        for _ in 0..count {
            let parsed = (|| {
                let name = r.str16()?;
                Ok::<_, crate::record::FrameError>((name, r.u64()?, r.u64()?))
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
        let bytes = c.encode();
        assert_eq!(StreamsCheckpoint::decode(&bytes, Path::new("c")).unwrap(), c);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 4;
            assert!(StreamsCheckpoint::decode(&bad, Path::new("c")).is_err());
        }
    }
}
