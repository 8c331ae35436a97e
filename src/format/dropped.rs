//! The drop record (`dropped.rec`): what scavenging removed under the
//! disk-budget policy `drop-oldest` before forwarders delivered it, one entry
//! per rewritten segment (positions, the runs of positions whose events went,
//! event count, when, which forwarders had not delivered it and where they
//! stood), and the entries `annal repair` could not read. See format.md,
//! "Drop record".
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
/// Version written when an entry records lost entries ([`DroppedRange::lost`]),
/// which a reader of version 2 would take as naming nothing.
const DROPPED_VERSION_LOST: u32 = 3;
/// `events` of an entry that records lost entries.
const LOST_EVENTS: u64 = u64::MAX;

/// Undelivered events removed from one segment to hold the disk budget.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DroppedRange {
    /// The first position removed that a forwarder had not delivered.
    pub first_position: u64,
    /// The position after the last one removed that a forwarder had not delivered.
    pub end_position: u64,
    /// Events removed in that range (positions already removed before are
    /// not counted). In the entry that records lost entries
    /// ([`DroppedRange::records_lost`]) it is `u64::MAX`, which counts
    /// nothing: leave that entry out of any sum.
    pub events: u64,
    /// When they were removed, in microseconds since the Unix epoch.
    pub dropped_micros: i64,
    /// Each forwarder that had not passed them all (one that holds retention,
    /// or one running whatever its retention mode): its name and the first
    /// position it had not passed at the time.
    pub forwarders: Vec<(String, u64)>,
    /// The runs of consecutive positions whose events were dropped, as (first
    /// position, count), in order; their counts add up to `events`. An entry
    /// read from a version 1 file has one run over the whole range (version 1
    /// did not say which positions in it held the events).
    pub runs: Vec<(u64, u64)>,
}

impl DroppedRange {
    /// An entry that records that entries of the drop record were lost to
    /// damage (`annal repair` could not read them): any position in
    /// `0..end_position` that holds no event may have been dropped, and
    /// nothing says which. It has no runs and no forwarders, and scavenging
    /// never prunes it (nothing says which forwarders still have to pass it).
    pub fn lost(end_position: u64, when_micros: i64) -> DroppedRange {
        DroppedRange {
            first_position: 0,
            end_position,
            events: LOST_EVENTS,
            dropped_micros: when_micros,
            forwarders: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// True for an entry that records lost entries ([`DroppedRange::lost`]).
    pub fn records_lost(&self) -> bool {
        self.events == LOST_EVENTS && self.runs.is_empty()
    }
}

/// Encodes the whole file. Fails with [`Error::InvalidInput`] if a forwarder
/// name is longer than its 16-bit length field (names are checked to 200
/// characters, so the store's never are).
pub fn encode(ranges: &[DroppedRange]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(32 + ranges.len() * 64);
    out.extend_from_slice(DROPPED_MAGIC);
    let version = match ranges.iter().any(DroppedRange::records_lost) {
        true => DROPPED_VERSION_LOST,
        false => DROPPED_VERSION,
    };
    out.extend_from_slice(&version.to_le_bytes());
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

/// Decodes and checks the file (version 1, 2 or 3). A damaged file is
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
    if !(1..=DROPPED_VERSION_LOST).contains(&version) {
        return Err(Error::UnsupportedVersion {
            file: file.to_path_buf(),
            found: version,
            supported: DROPPED_VERSION_LOST,
        });
    }
    if b[12..16] != [0; 4] {
        return Err(bad(12, "unknown drop record flags"));
    }
    let (out, stop) = entries(body, version, false);
    match stop {
        Some((at, reason)) => Err(bad(at, reason)),
        None => Ok(out),
    }
}

/// The entries of `body` (the file without its checksum) in `version`, as
/// far as they decode, with the offset and reason of what stopped them
/// (`None` if every entry decodes and they fill the body exactly).
/// With `lenient`, a count larger than the file could hold reads as many
/// entries as decode.
fn entries(body: &[u8], version: u32, lenient: bool) -> (Vec<DroppedRange>, Option<(usize, &'static str)>) {
    let mut r = Reader::new(&body[24..]);
    // Each entry takes at least 34 bytes, which bounds the allocation.
    let most = r.buf.len() / 34;
    let count = match usize::try_from(le_u64(body, 16)) {
        Ok(c) if c <= most => c,
        _ if lenient => most,
        _ => return (Vec::new(), Some((16, "drop count larger than the file"))),
    };
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
        let Ok(range) = parsed else {
            return (out, Some((at, "malformed drop entry")));
        };
        if range.end_position < range.first_position {
            return (out, Some((at, "drop entry ends before it starts")));
        }
        let in_range = range.runs.iter().all(|(first, count)| {
            *first >= range.first_position && first.checked_add(*count).is_some_and(|e| e <= range.end_position)
        });
        if !in_range {
            return (out, Some((at, "drop entry has a run outside its range")));
        }
        out.push(range);
    }
    if !r.buf.is_empty() {
        return (out, Some((body.len() - r.buf.len(), "trailing bytes in drop record")));
    }
    (out, None)
}

/// What can still be read of a drop record that does not decode: the
/// entries before the first one that does not decode, whatever the
/// checksum says (the file has one checksum for all, so which entry holds
/// the damage is unknown: these are what they say, or what damage made of
/// it). Empty if the magic or the version is not one this reads.
pub fn salvage(b: &[u8]) -> Vec<DroppedRange> {
    if b.len() < 28 || &b[0..8] != DROPPED_MAGIC {
        return Vec::new();
    }
    let version = le_u32(b, 8);
    if !(1..=DROPPED_VERSION_LOST).contains(&version) {
        return Vec::new();
    }
    entries(&b[..b.len() - 4], version, true).0
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
    fn salvage_keeps_the_entries_before_the_damage_and_lost_entries_round_trip() {
        let entry = |first: u64| DroppedRange {
            first_position: first,
            end_position: first + 10,
            events: 10,
            dropped_micros: 7,
            forwarders: vec![("pg".into(), 0)],
            runs: vec![(first, 10)],
        };
        let ranges = vec![entry(0), entry(10), entry(20)];
        let mut bytes = encode(&ranges).unwrap();
        // The third entry's run count: it no longer decodes, the two before do.
        let third = 24 + 2 * (8 * 4 + 2 + 2 + 2 + 8 + 4 + 16);
        bytes[third + 8 * 4 + 2 + 2 + 2 + 8] = 0xff;
        assert!(decode(&bytes, Path::new("dropped.rec")).is_err());
        assert_eq!(salvage(&bytes), ranges[..2].to_vec());
        // A damaged count reads what decodes.
        let mut bytes = encode(&ranges).unwrap();
        bytes[16 + 7] = 0x80;
        assert_eq!(salvage(&bytes), ranges);
        assert_eq!(salvage(b"not a drop record at all, no"), vec![]);
        // An entry that records lost entries makes a version 3 file.
        let with_lost = vec![entry(0), DroppedRange::lost(500, 9)];
        let bytes = encode(&with_lost).unwrap();
        assert_eq!(le_u32(&bytes, 8), 3);
        let read = decode(&bytes, Path::new("dropped.rec")).unwrap();
        assert_eq!(read, with_lost);
        assert!(read[1].records_lost() && !read[0].records_lost());
        assert_eq!(le_u32(&encode(&ranges).unwrap(), 8), 2);
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
