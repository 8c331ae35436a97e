//! Segment files: the header that opens one, the names they carry, and the
//! scan that walks their frames (see format.md, "Segment files").
//!
//! A segment holds the events of a contiguous range of global positions,
//! named by its first position. This module owns the header's encoder and
//! decoder and the frame scan used by recovery and index rebuilds; it must
//! never decide what to do about damage (that is recovery's job).

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::codec::{le_i64, le_u32, le_u64};
use crate::format::record::{self, Frame, FrameError};

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"ANNALSEG";
/// Format version written into segment headers.
pub const SEGMENT_VERSION: u32 = 1;
/// Format version of a segment holding a lost or removed frame with stream
/// heads (see [`record::LOST_FLAG_HEADS`]), which version-1 readers would
/// take for damage. Readers accept both.
pub const SEGMENT_VERSION_HEADS: u32 = 2;
/// Format version of a segment that may hold sealed events (see
/// [`record::FLAG_SEALED`]), which earlier readers would take for damage; it
/// may hold stream heads too.
pub const SEGMENT_VERSION_SEALED: u32 = 3;
/// Format version of a segment that may hold removed frames flagged as
/// hidden (see [`record::REMOVED_FLAG_HIDDEN`]), which earlier readers
/// would take for damage; it may hold sealed events and stream heads too.
/// Readers accept versions 1 to 4.
pub const SEGMENT_VERSION_HIDDEN: u32 = 4;
/// Size of the segment header.
pub const SEGMENT_HEADER: usize = 64;
/// Header flag: the segment is stored compressed (see [`crate::maintenance::compression`]).
pub const FLAG_COMPRESSED: u32 = 1;
/// Header flag: the compressed blocks use the store's dictionary, whose id is at bytes 32..36.
pub const FLAG_DICTIONARY: u32 = 2;

/// The fields of a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version: [`SEGMENT_VERSION`], or [`SEGMENT_VERSION_HEADS`] for a
    /// segment holding stream heads.
    pub version: u32,
    /// Position of the first event the segment holds.
    pub base_position: u64,
    /// When the segment was created, microseconds since the Unix epoch.
    pub created_micros: i64,
    /// True if the file holds the segment in compressed form.
    pub compressed: bool,
    /// Id of the store dictionary its compressed blocks use, if any.
    pub dictionary: Option<u32>,
}

/// Sets the compressed flag (and the dictionary id, if any) in an encoded header, fixing its checksum.
pub fn set_compressed_flag(header: &mut [u8], dictionary: Option<u32>) {
    let flags = FLAG_COMPRESSED | if dictionary.is_some() { FLAG_DICTIONARY } else { 0 };
    header[12..16].copy_from_slice(&flags.to_le_bytes());
    header[32..36].copy_from_slice(&dictionary.unwrap_or(0).to_le_bytes());
    let crc = crc32fast::hash(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Clears the compressed flags and dictionary id in an encoded header, fixing its checksum.
pub fn clear_compressed_flag(header: &mut [u8]) {
    header[12..16].copy_from_slice(&0u32.to_le_bytes());
    header[32..36].copy_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Sets the version in the header of a rewritten segment's bytes: 4 if a
/// removed frame in them is flagged hidden, else 3 if an event in them
/// is sealed, else 2 if a lost or removed frame in them holds stream heads,
/// else 1; fixes the header's checksum. The seal's content
/// checksum does not cover the header.
pub fn stamp_version(bytes: &mut [u8]) {
    if bytes.len() < SEGMENT_HEADER {
        return;
    }
    let mut wrote = Wrote::default();
    let _ = scan_frames(bytes, |frame, _, _| {
        match frame {
            Frame::Lost(l) => {
                wrote.heads |= !l.heads.is_empty();
                wrote.hidden_removed |= l.hidden;
            }
            Frame::Event(e) => wrote.sealed |= e.sealed,
            _ => {}
        }
        Ok(())
    });
    set_version(bytes, version_for(wrote));
}

/// What a writer of a whole segment wrote that its version must admit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wrote {
    /// A lost or removed frame with stream heads.
    pub heads: bool,
    /// A sealed event.
    pub sealed: bool,
    /// A removed frame flagged hidden.
    pub hidden_removed: bool,
}

/// The version a segment gets: 4 if it holds a removed frame flagged
/// hidden, else 3 if it holds a sealed event, else 2 if it holds
/// stream heads, else 1.
pub fn version_for(wrote: Wrote) -> u32 {
    let Wrote {
        heads,
        sealed,
        hidden_removed,
    } = wrote;
    if hidden_removed {
        SEGMENT_VERSION_HIDDEN
    } else if sealed {
        SEGMENT_VERSION_SEALED
    } else if heads {
        SEGMENT_VERSION_HEADS
    } else {
        SEGMENT_VERSION
    }
}

/// Sets `version` in the header of a segment's bytes, fixing the header's
/// checksum; for a writer that knows what it wrote (see [`stamp_version`]
/// for one that does not).
pub fn set_version(bytes: &mut [u8], version: u32) {
    if bytes.len() < SEGMENT_HEADER {
        return;
    }
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
}

impl SegmentHeader {
    /// Encodes the 64-byte header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER] {
        let mut h = [0u8; SEGMENT_HEADER];
        h[0..8].copy_from_slice(SEGMENT_MAGIC);
        h[8..12].copy_from_slice(&self.version.to_le_bytes());
        if self.compressed {
            let flags = FLAG_COMPRESSED | if self.dictionary.is_some() { FLAG_DICTIONARY } else { 0 };
            h[12..16].copy_from_slice(&flags.to_le_bytes());
            h[32..36].copy_from_slice(&self.dictionary.unwrap_or(0).to_le_bytes());
        }
        h[16..24].copy_from_slice(&self.base_position.to_le_bytes());
        h[24..32].copy_from_slice(&self.created_micros.to_le_bytes());
        let crc = crc32fast::hash(&h[..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks a header read from `file`.
    pub fn decode(bytes: &[u8], file: &Path) -> Result<Self> {
        if bytes.len() < SEGMENT_HEADER {
            return Err(Error::corruption(file, 0, "segment header truncated"));
        }
        if &bytes[0..8] != SEGMENT_MAGIC {
            return Err(Error::corruption(file, 0, "not an annal segment (bad magic)"));
        }
        let crc = le_u32(bytes, 60);
        if crc32fast::hash(&bytes[..60]) != crc {
            return Err(Error::corruption(file, 0, "segment header checksum mismatch"));
        }
        let version = le_u32(bytes, 8);
        if !(SEGMENT_VERSION..=SEGMENT_VERSION_HIDDEN).contains(&version) {
            return Err(Error::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: SEGMENT_VERSION_HIDDEN,
            });
        }
        let flags = le_u32(bytes, 12);
        if flags & !(FLAG_COMPRESSED | FLAG_DICTIONARY) != 0
            || (flags & FLAG_DICTIONARY != 0 && flags & FLAG_COMPRESSED == 0)
        {
            return Err(Error::corruption(file, 12, "unknown segment flags"));
        }
        Ok(SegmentHeader {
            version,
            base_position: le_u64(bytes, 16),
            created_micros: le_i64(bytes, 24),
            compressed: flags & FLAG_COMPRESSED != 0,
            dictionary: (flags & FLAG_DICTIONARY != 0).then(|| le_u32(bytes, 32)),
        })
    }
}

/// Checks a sealed segment's logical bytes against the seal frame at
/// `seal_at` (where its index says the segment ends): a seal must be there,
/// and its content checksum must match bytes `[64, seal_at)`. On failure,
/// the offset and what is wrong, for the caller's error.
pub(crate) fn check_seal_content(logical: &[u8], seal_at: u64) -> std::result::Result<(), (u64, &'static str)> {
    const NO_SEAL: &str = "no seal where the index says the segment ends";
    let at = usize::try_from(seal_at)
        .ok()
        .filter(|at| *at >= SEGMENT_HEADER && *at <= logical.len())
        .ok_or((seal_at, NO_SEAL))?;
    let content_crc = match record::decode_frame(&logical[at..]) {
        Ok((Frame::Seal(seal), _)) => seal.content_crc,
        _ => return Err((seal_at, NO_SEAL)),
    };
    if crc32fast::hash(&logical[SEGMENT_HEADER..at]) != content_crc {
        return Err((SEGMENT_HEADER as u64, "the bytes do not match the seal's checksum"));
    }
    Ok(())
}

/// File name of the segment whose first position is `base`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// The name of the index file of the sealed segment starting at `base`.
pub fn index_file_name(base: u64) -> String {
    format!("{base:020}.idx")
}

/// Parses a segment or index file name into its base position and extension.
pub fn parse_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// How a frame scan of a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// A valid seal frame at this offset closed the segment.
    Sealed {
        /// Offset of the seal frame.
        seal_offset: u64,
        /// Its fields.
        seal: record::SealView,
    },
    /// The data ended cleanly at a frame boundary: at the end of the file, or
    /// where only zeros follow (space preallocated by the writer).
    Clean {
        /// Offset where the data ends.
        end: u64,
    },
    /// A frame could not be decoded at `offset`.
    Damaged {
        /// Where the bad frame starts.
        offset: u64,
        /// What was wrong.
        error: FrameError,
        /// Offset of a valid group frame after the damage that says the damaged
        /// bytes were durable when it was written, if any: then the damage is in
        /// data that was once synced, not a torn tail.
        durable_claim: Option<u64>,
    },
}

/// True if `rest` is empty or all zeros: the end of the data (no frame has a zero length).
pub fn starts_zero_region(rest: &[u8]) -> bool {
    rest.iter().all(|b| *b == 0)
}

/// Offset just past the last non-zero byte at or after `from` (`from` if there is none).
pub fn data_end(bytes: &[u8], from: usize) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(from, |i| (i + 1).max(from))
}

/// True if a frame could start at `at`: its length field is not zero.
fn may_start_frame(bytes: &[u8], at: usize) -> bool {
    bytes.get(at..at + 4).is_some_and(|l| l != [0, 0, 0, 0])
}

/// Offset of the first frame at or after `from` that decodes without error.
pub fn find_valid_frame(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len())
        .filter(|at| may_start_frame(bytes, *at))
        .find(|at| record::decode_frame(&bytes[*at..]).is_ok())
}

/// The end of the frame at `offset` that does not decode, when its extent can
/// be trusted: its length field fits the file and either a valid frame or the
/// end of the data (only zeros) follows it, or its checksum holds once one bit
/// of its length field is flipped back (the damage is that bit, the end is the
/// one that length gives). `None` when its length cannot be trusted: the frame
/// walk must then search for the next frame byte by byte.
///
/// The bytes inside a damaged frame are a client's data, which may hold
/// well-formed frames: resuming at the declared end keeps them from being
/// taken for events of the log.
pub fn damaged_frame_end(bytes: &[u8], offset: usize) -> Option<usize> {
    let field = bytes.get(offset..offset.checked_add(record::FRAME_HEADER)?)?;
    let len = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
    let stored = u32::from_le_bytes([field[4], field[5], field[6], field[7]]);
    let body_start = offset + record::FRAME_HEADER;
    let end_of = |len: u32| {
        usize::try_from(len)
            .ok()
            .filter(|l| *l != 0 && *l <= record::MAX_BODY)
            .and_then(|l| body_start.checked_add(l))
            .filter(|end| *end <= bytes.len())
    };
    // A flipped bit of the length field: the checksum still covers the rest.
    for bit in 0..32 {
        let guess = len ^ (1 << bit);
        if let Some(end) = end_of(guess) {
            let mut h = crc32fast::Hasher::new();
            h.update(&guess.to_le_bytes());
            h.update(&bytes[body_start..end]);
            if h.finalize() == stored {
                return Some(end);
            }
        }
    }
    let end = end_of(len)?;
    let rest = &bytes[end..];
    (starts_zero_region(rest) || record::decode_frame(rest).is_ok()).then_some(end)
}

/// Offset of the first valid group frame after `damage` whose `durable_end`
/// lies past `damage`. Searches byte by byte, since damage destroys the
/// framing, from the damaged frame's end when that can be trusted (see
/// [`damaged_frame_end`]): a group frame inside a client's data claims nothing.
pub fn find_durable_claim(bytes: &[u8], damage: usize) -> Option<u64> {
    // Group frames have a fixed body length, which keeps this search linear.
    let group_len = 10u32.to_le_bytes();
    let from = damaged_frame_end(bytes, damage).unwrap_or(damage + 1);
    (from..bytes.len())
        .filter(|at| bytes.get(*at..*at + 4) == Some(&group_len[..]))
        .find_map(|at| match record::decode_frame(&bytes[at..]) {
            Ok((Frame::Group(g), _)) if g.durable_end > damage as u64 => Some(at as u64),
            _ => None,
        })
}

/// Walks the frames of a segment body, calling `on_frame` for each event and
/// lost frame with its offset and the offset just past it (group frames are skipped). Stops at the seal, the end, or the first bad frame.
pub fn scan_frames<'a>(bytes: &'a [u8], on_frame: impl FnMut(&Frame<'a>, u64, u64) -> Result<()>) -> Result<ScanEnd> {
    scan_frames_from(bytes, SEGMENT_HEADER, on_frame)
}

/// Like [`scan_frames`], starting at `start` instead of just after the header.
pub fn scan_frames_from<'a>(
    bytes: &'a [u8],
    start: usize,
    mut on_frame: impl FnMut(&Frame<'a>, u64, u64) -> Result<()>,
) -> Result<ScanEnd> {
    let mut offset = start.min(bytes.len());
    loop {
        if starts_zero_region(&bytes[offset..]) {
            return Ok(ScanEnd::Clean { end: offset as u64 });
        }
        match record::decode_frame(&bytes[offset..]) {
            Ok((frame @ (Frame::Event(_) | Frame::Lost(_)), len)) => {
                on_frame(&frame, offset as u64, (offset + len) as u64)?;
                offset += len;
            }
            Ok((Frame::Group(_), len)) => offset += len,
            Ok((Frame::Seal(seal), _)) => {
                return Ok(ScanEnd::Sealed {
                    seal_offset: offset as u64,
                    seal,
                });
            }
            Err(error) => {
                return Ok(ScanEnd::Damaged {
                    offset: offset as u64,
                    error,
                    durable_claim: find_durable_claim(bytes, offset),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            version: SEGMENT_VERSION,
            base_position: 1234,
            created_micros: 99,
            compressed: false,
            dictionary: None,
        };
        let bytes = h.encode();
        let p = Path::new("x.seg");
        assert_eq!(SegmentHeader::decode(&bytes, p).unwrap(), h);
        let mut bad = bytes;
        bad[17] ^= 1;
        assert!(SegmentHeader::decode(&bad, p).unwrap_err().is_corruption());
        let mut future = bytes;
        future[8] = 9;
        let crc = crc32fast::hash(&future[..60]);
        future[60..64].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            SegmentHeader::decode(&future, p),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn a_damaged_frame_ends_where_its_length_says_when_that_can_be_trusted() {
        let mut bytes = vec![0u8; SEGMENT_HEADER];
        let first = bytes.len();
        record::encode_group(&mut bytes, &record::GroupView { durable_end: 7 });
        let second = bytes.len();
        record::encode_group(&mut bytes, &record::GroupView { durable_end: 9 });
        let third = bytes.len();
        bytes.extend_from_slice(&[0; 32]);
        // Damage in the checksum: a valid frame follows, the length is trusted.
        let mut b = bytes.clone();
        b[first + 5] ^= 4;
        assert_eq!(damaged_frame_end(&b, first), Some(second));
        // A flipped bit of the length field is found through the checksum.
        let mut b = bytes.clone();
        b[first + 2] ^= 1;
        assert_eq!(damaged_frame_end(&b, first), Some(second));
        // The last frame, damaged: only zeros follow its end.
        let mut b = bytes.clone();
        b[second + 9] ^= 1;
        assert_eq!(damaged_frame_end(&b, second), Some(third));
        // A length past the file, or garbage at the declared end: not trusted.
        let mut b = bytes.clone();
        b[first..first + 4].copy_from_slice(&1000u32.to_le_bytes());
        b[first + 5] ^= 4;
        assert_eq!(damaged_frame_end(&b, first), None);
        let mut b = bytes.clone();
        b[first + 5] ^= 4;
        b[second + 5] ^= 4;
        assert_eq!(damaged_frame_end(&b, first), None);
    }

    #[test]
    fn file_names_parse() {
        assert_eq!(parse_file_name(&segment_file_name(42)), Some((42, "seg")));
        assert_eq!(parse_file_name("00000000000000000042.idx"), Some((42, "idx")));
        assert_eq!(parse_file_name("42.seg"), None);
        assert_eq!(parse_file_name("LOCK"), None);
    }
}
