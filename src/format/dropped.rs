//! The drop record (`dropped.rec`): what scavenging removed under the
//! disk-budget policy `drop-oldest` before forwarders delivered it, one entry
//! per rewritten segment (positions, the runs of positions whose events went,
//! event count, when, which forwarders had not delivered it and where they
//! stood). See format.md, "Drop record".
//!
//! This module encodes and decodes the file; it must never decide what is
//! dropped or open a file.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::codec::{Reader, le_u32, le_u64};

/// Name of the drop record file.
pub const DROPPED_FILE: &str = "dropped.rec";
/// Magic bytes of `dropped.rec`.
pub const DROPPED_MAGIC: &[u8; 8] = b"ANNALDRP";
/// Version written: 2 adds the runs of dropped positions to each entry.
const DROPPED_VERSION: u32 = 2;

/// Undelivered events removed from one segment to hold the disk budget.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DroppedRange {
    /// The first position removed that a forwarder had not delivered.
    pub first_position: u64,
    /// The position after the last one removed that a forwarder had not delivered.
    pub end_position: u64,
    /// Events removed in that range (positions already removed before are not counted).
    pub events: u64,
    /// When they were removed, in microseconds since the Unix epoch.
    pub dropped_micros: i64,
    /// Each forwarder that had not delivered them all: its name and the first
    /// position it had not delivered at the time.
    pub forwarders: Vec<(String, u64)>,
    /// The runs of consecutive positions whose events were dropped, as (first
    /// position, count), in order; their counts add up to `events`. An entry
    /// read from a version 1 file has one run over the whole range (version 1
    /// did not say which positions in it held the events).
    pub runs: Vec<(u64, u64)>,
}

/// Encodes the whole file. Fails with [`Error::InvalidInput`] if a forwarder
/// name is longer than its 16-bit length field (names are checked to 200
/// characters, so the store's never are).
pub fn encode(ranges: &[DroppedRange]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(32 + ranges.len() * 64);
    out.extend_from_slice(DROPPED_MAGIC);
    out.extend_from_slice(&DROPPED_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(ranges.len() as u64).to_le_bytes());
    for r in ranges {
        out.extend_from_slice(&r.first_position.to_le_bytes());
        out.extend_from_slice(&r.end_position.to_le_bytes());
        out.extend_from_slice(&r.events.to_le_bytes());
        out.extend_from_slice(&r.dropped_micros.to_le_bytes());
        let n = u16::try_from(r.forwarders.len())
            .map_err(|_| Error::InvalidInput(format!("{} forwarders in one drop record", r.forwarders.len())))?;
        out.extend_from_slice(&n.to_le_bytes());
        for (name, position) in &r.forwarders {
            let len = u16::try_from(name.len())
                .map_err(|_| Error::InvalidInput(format!("forwarder name of {} bytes in a drop record", name.len())))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&position.to_le_bytes());
        }
        let runs = u32::try_from(r.runs.len())
            .map_err(|_| Error::InvalidInput(format!("{} runs in one drop record", r.runs.len())))?;
        out.extend_from_slice(&runs.to_le_bytes());
        for (first, count) in &r.runs {
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes and checks the file (version 1 or 2). A damaged file is
/// [`Error::Corruption`] with the offset of what is wrong: 0 for the magic,
/// the checksum's own offset for a checksum mismatch, the start of the first
/// entry that does not decode.
pub fn decode(b: &[u8], file: &Path) -> Result<Vec<DroppedRange>> {
    let bad = |offset: usize, reason: &str| Error::corruption(file, offset as u64, reason);
    if b.len() < 28 || &b[0..8] != DROPPED_MAGIC {
        return Err(bad(0, "not a drop record"));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body) != le_u32(crc, 0) {
        return Err(bad(body.len(), "drop record checksum mismatch"));
    }
    let version = le_u32(b, 8);
    if version != 1 && version != DROPPED_VERSION {
        return Err(Error::UnsupportedVersion {
            file: file.to_path_buf(),
            found: version,
            supported: DROPPED_VERSION,
        });
    }
    if b[12..16] != [0; 4] {
        return Err(bad(12, "unknown drop record flags"));
    }
    let mut r = Reader::new(&body[24..]);
    // Each entry takes at least 34 bytes, which bounds the allocation.
    let count = usize::try_from(le_u64(b, 16))
        .ok()
        .filter(|c| *c <= r.buf.len() / 34)
        .ok_or_else(|| bad(16, "drop count larger than the file"))?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let at = body.len() - r.buf.len();
        let parsed = (|| {
            let first_position = r.u64()?;
            let end_position = r.u64()?;
            let events = r.u64()?;
            let dropped_micros = r.u64()? as i64;
            let n = r.u16()?;
            let mut forwarders = Vec::with_capacity(usize::from(n).min(r.buf.len() / 10));
            for _ in 0..n {
                let name = r.str16()?.to_string();
                forwarders.push((name, r.u64()?));
            }
            let runs = if version == 1 {
                vec![(first_position, end_position.saturating_sub(first_position))]
            } else {
                let n = r.u32()? as usize;
                let mut runs = Vec::with_capacity(n.min(r.buf.len() / 16));
                for _ in 0..n {
                    runs.push((r.u64()?, r.u64()?));
                }
                runs
            };
            Ok::<_, crate::format::codec::DecodeError>(DroppedRange {
                first_position,
                end_position,
                events,
                dropped_micros,
                forwarders,
                runs,
            })
        })();
        let range = parsed.map_err(|_| bad(at, "malformed drop entry"))?;
        if range.end_position < range.first_position {
            return Err(bad(at, "drop entry ends before it starts"));
        }
        let in_range = range.runs.iter().all(|(first, count)| {
            *first >= range.first_position
                && first.checked_add(*count).is_some_and(|e| e <= range.end_position)
        });
        if !in_range {
            return Err(bad(at, "drop entry has a run outside its range"));
        }
        out.push(range);
    }
    if !r.buf.is_empty() {
        return Err(bad(body.len() - r.buf.len(), "trailing bytes in drop record"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let ranges = vec![
            DroppedRange {
                first_position: 10,
                end_position: 40,
                events: 25,
                dropped_micros: 1_700_000_000_000_000,
                forwarders: vec![("pg".into(), 10), ("bus".into(), 3)],
                runs: vec![(10, 5), (20, 20)],
            },
            DroppedRange {
                first_position: 40,
                end_position: 41,
                events: 1,
                dropped_micros: -1,
                forwarders: vec![],
                runs: vec![(40, 1)],
            },
        ];
        let bytes = encode(&ranges).unwrap();
        let file = Path::new("dropped.rec");
        assert_eq!(decode(&bytes, file).unwrap(), ranges);
        assert_eq!(decode(&encode(&[]).unwrap(), file).unwrap(), vec![]);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b, file).is_err(), "flip at {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1], file).is_err());
    }

    #[test]
    fn damage_names_its_offset_and_version_1_reads_as_one_run() {
        let file = Path::new("dropped.rec");
        let mut bytes = encode(&[]).unwrap();
        let crc_at = bytes.len() - 4;
        bytes[crc_at] ^= 1;
        match decode(&bytes, file) {
            Err(Error::Corruption { offset, .. }) => assert_eq!(offset, crc_at as u64),
            other => panic!("{other:?}"),
        }
        // A version 1 entry: no runs field.
        let mut v1 = Vec::new();
        v1.extend_from_slice(DROPPED_MAGIC);
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&0u32.to_le_bytes());
        v1.extend_from_slice(&1u64.to_le_bytes());
        for v in [5u64, 9, 3, 7] {
            v1.extend_from_slice(&v.to_le_bytes());
        }
        v1.extend_from_slice(&0u16.to_le_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let read = decode(&v1, file).unwrap();
        assert_eq!(read[0].runs, vec![(5, 4)]);
        assert_eq!(read[0].events, 3);
    }
}
