//! Record framing: the one encoder and the one decoder of the frames that make
//! up a segment's body (see format.md, "Frames").
//!
//! A frame is `len: u32 | crc: u32 | body[len]`, with the CRC-32 (IEEE) taken
//! over the four length bytes and the body. Bodies are events or the seal.
//! This module must never do I/O: it turns bytes into views and back.

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::ContentType;
use crate::format::codec::{DecodeError, Reader, le_u32};

/// Bytes before a frame's body.
pub const FRAME_HEADER: usize = 8;
/// Largest body a decoder accepts; larger lengths are treated as damage.
pub const MAX_BODY: usize = 64 << 20;

/// Body kind of an event frame.
pub const KIND_EVENT: u8 = 1;
/// Body kind of the seal frame that closes a segment.
pub const KIND_SEAL: u8 = 2;

/// Event flag: this event is the last of its append (the commit point).
pub const FLAG_COMMIT: u8 = 1;
/// Event flag: the data is JSON.
pub const FLAG_JSON: u8 = 2;
/// Event flag: the data field holds a sealed envelope of the event's personal
/// fields (see [`crate::format::subjects`]) and the metadata field is empty
/// (segment format version 3).
pub const FLAG_SEALED: u8 = 4;
/// Body kind of the group frame that opens each group write.
pub const KIND_GROUP: u8 = 3;
/// Body kind of the frame that stands, after a repair, for events whose bytes were lost.
pub const KIND_LOST: u8 = 4;
/// Most positions one lost or removed frame stands for (larger ranges take several frames).
pub const MAX_LOST_PER_FRAME: u64 = 1 << 24;
/// Body kind of the frame that stands, after scavenging, for events removed on purpose.
pub const KIND_REMOVED: u8 = 5;
/// Lost or removed frame flag: the body ends with the stream heads the
/// positions held (segment format version 2).
pub const LOST_FLAG_HEADS: u8 = 1;
/// Removed frame flag: every position the frame stands for held an event
/// that reads had stopped returning before scavenging removed it: of a
/// system stream (`$`-prefixed), which no forwarder delivers, or hidden by
/// its stream's metadata (deleted, truncated, past `max_count` or
/// `max_age`). A forwarder passing them counts no gap: it would not have
/// delivered them either (segment format version 4). Only on removed
/// frames (kind 5); malformed on lost ones.
pub const REMOVED_FLAG_HIDDEN: u8 = 2;

/// An event frame's fields, borrowed from the bytes they were decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView<'a> {
    /// True when this event ends its append.
    pub commit: bool,
    /// Global position.
    pub position: u64,
    /// Revision in its stream.
    pub revision: u64,
    /// Store time, microseconds since the Unix epoch.
    pub timestamp: i64,
    /// Event id.
    pub id: Uuid,
    /// Content type of `data`.
    pub content_type: ContentType,
    /// Stream name.
    pub stream: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Tags.
    pub tags: Vec<&'a str>,
    /// Metadata bytes.
    pub metadata: &'a [u8],
    /// Data bytes (with `sealed`, the sealed envelope).
    pub data: &'a [u8],
    /// True when `data` is a sealed envelope of the personal fields and `metadata` is empty.
    pub sealed: bool,
}

/// The seal frame's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealView {
    /// Position after the segment's last event.
    pub next_position: u64,
    /// Number of events in the segment.
    pub event_count: u64,
    /// CRC-32 of every byte from the end of the segment header to the start of the seal frame.
    pub content_crc: u32,
}

/// The group frame's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupView {
    /// Every byte of the segment before this offset was durable when the group was written.
    pub durable_end: u64,
}

/// The fields of a lost or removed frame: positions that hold no event any more,
/// either because a repair could not read them (lost) or because scavenging
/// dropped them on purpose (removed: deleted, expired or past retention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostView<'a> {
    /// First position.
    pub first_position: u64,
    /// Number of positions (at least 1).
    pub count: u64,
    /// True for a removed frame (kind 5), false for a lost one (kind 4).
    pub removed: bool,
    /// True for a removed frame whose positions all held events reads no
    /// longer returned ([`REMOVED_FLAG_HIDDEN`]); always false for a lost
    /// frame (the encoder ignores it there).
    pub hidden: bool,
    /// The streams whose last event (as far as anything known told) was at one
    /// of these positions, with that event's revision: the revisions the
    /// stream handed out, which it must never hand out again. Ascending by
    /// position, at most one per position.
    pub heads: Vec<Head<'a>>,
}

/// A stream's last event, recorded where the event itself is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The revision of its event at `position`.
    pub revision: u64,
    /// Where that event was.
    pub position: u64,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// An event.
    Event(EventView<'a>),
    /// The seal.
    Seal(SealView),
    /// The start of a group write.
    Group(GroupView),
    /// Positions lost to damage, as recorded by a repair, or removed by scavenging.
    Lost(LostView<'a>),
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end before the frame does (a torn or short write).
    Truncated,
    /// The frame is complete but its checksum does not match.
    Checksum,
    /// The checksum matches but the body is not well formed.
    Malformed(&'static str),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("frame truncated"),
            FrameError::Checksum => f.write_str("frame checksum mismatch"),
            FrameError::Malformed(why) => write!(f, "malformed frame: {why}"),
        }
    }
}

/// Appends an event frame to `out`. Fails with [`Error::InvalidInput`], leaving
/// `out` as it was, if a field does not fit the format: a string or tag count
/// over 65,535, or a body over [`MAX_BODY`]. An append never gets here with
/// such an event (`EventData::validate` and `check_stream_name` refuse it
/// first), and a decoded frame always fits.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
pub fn encode_event(
    out: &mut Vec<u8>,
    commit: bool,
    position: u64,
    revision: u64,
    timestamp: i64,
    id: Uuid,
    content_type: ContentType,
    stream: &str,
    event_type: &str,
    tags: &[String],
    metadata: &[u8],
    data: &[u8],
) -> Result<()> {
    encode_event_sealed(
        out,
        commit,
        false,
        position,
        revision,
        timestamp,
        id,
        content_type,
        stream,
        event_type,
        tags,
        metadata,
        data,
    )
}

/// [`encode_event`], with the SEALED flag set when `sealed`: `data` is then
/// the sealed envelope of the personal fields and `metadata` must be empty.
#[allow(clippy::too_many_arguments)]
pub fn encode_event_sealed(
    out: &mut Vec<u8>,
    commit: bool,
    sealed: bool,
    position: u64,
    revision: u64,
    timestamp: i64,
    id: Uuid,
    content_type: ContentType,
    stream: &str,
    event_type: &str,
    tags: &[String],
    metadata: &[u8],
    data: &[u8],
) -> Result<()> {
    let start = out.len();
    let encoded = (|| {
        out.extend_from_slice(&[0u8; FRAME_HEADER]);
        out.push(KIND_EVENT);
        let mut flags = 0;
        if commit {
            flags |= FLAG_COMMIT;
        }
        if content_type == ContentType::Json {
            flags |= FLAG_JSON;
        }
        if sealed {
            flags |= FLAG_SEALED;
        }
        out.push(flags);
        out.extend_from_slice(&position.to_le_bytes());
        out.extend_from_slice(&revision.to_le_bytes());
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        put_str16(out, "stream name", stream)?;
        put_str16(out, "event type", event_type)?;
        out.extend_from_slice(&field_len::<u16>("tag list", tags.len())?.to_le_bytes());
        for tag in tags {
            put_str16(out, "tag", tag)?;
        }
        out.extend_from_slice(&field_len::<u32>("metadata", metadata.len())?.to_le_bytes());
        out.extend_from_slice(metadata);
        out.extend_from_slice(&field_len::<u32>("data", data.len())?.to_le_bytes());
        out.extend_from_slice(data);
        let body = out.len() - start - FRAME_HEADER;
        if body > MAX_BODY {
            return Err(too_long("event frame body", body));
        }
        finish_frame(out, start, field_len("event frame body", body)?);
        Ok(())
    })();
    if encoded.is_err() {
        out.truncate(start);
    }
    encoded
}

/// `len` as the width of its length field in an event frame.
fn field_len<T: TryFrom<usize>>(what: &str, len: usize) -> Result<T> {
    T::try_from(len).map_err(|_| too_long(what, len))
}

fn too_long(what: &str, len: usize) -> Error {
    Error::InvalidInput(format!("{what} of length {len} does not fit an event frame"))
}

/// Re-encodes a decoded event as its own committed append (used when the
/// events it was appended with are gone: scavenged, or lost to damage). A
/// decoded event always fits; the error is [`encode_event`]'s.
pub fn encode_committed(out: &mut Vec<u8>, v: &EventView<'_>) -> Result<()> {
    let tags: Vec<String> = v.tags.iter().map(|t| t.to_string()).collect();
    encode_event_sealed(
        out,
        true,
        v.sealed,
        v.position,
        v.revision,
        v.timestamp,
        v.id,
        v.content_type,
        v.stream,
        v.event_type,
        &tags,
        v.metadata,
        v.data,
    )
}

/// Appends a group frame to `out`.
pub fn encode_group(out: &mut Vec<u8>, group: &GroupView) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    out.push(KIND_GROUP);
    out.push(0);
    out.extend_from_slice(&group.durable_end.to_le_bytes());
    finish_frame(out, start, GROUP_BODY);
}

/// Appends lost (or removed) frames for `lost`'s positions to `out`: one frame,
/// or several when the range exceeds [`MAX_LOST_PER_FRAME`] or its heads do not
/// fit one body. Heads outside the range, or sharing a position, are dropped.
pub fn encode_lost(out: &mut Vec<u8>, lost: &LostView<'_>) {
    let end = lost.first_position.saturating_add(lost.count);
    let mut heads: Vec<(&Head<'_>, u16)> = lost
        .heads
        .iter()
        .filter(|h| (lost.first_position..end).contains(&h.position))
        // Stream names come from frames, whose length field is 16 bits.
        .filter_map(|h| u16::try_from(h.stream.len()).ok().map(|len| (h, len)))
        .collect();
    heads.sort_by_key(|(h, _)| h.position);
    heads.dedup_by_key(|(h, _)| h.position);
    let mut first = lost.first_position;
    let mut next = 0;
    while first < end {
        let mut stop = end.min(first.saturating_add(MAX_LOST_PER_FRAME));
        let mut body = LOST_BODY as usize;
        let from = next;
        while next < heads.len() && heads[next].0.position < stop {
            let grows = if next == from { 4 } else { 0 } + 2 + usize::from(heads[next].1) + 16;
            if body + grows > MAX_BODY {
                // One head always fits, so this frame keeps at least one and the next starts later.
                stop = heads[next].0.position;
                break;
            }
            body += grows;
            next += 1;
        }
        let start = out.len();
        out.extend_from_slice(&[0u8; FRAME_HEADER]);
        out.push(if lost.removed { KIND_REMOVED } else { KIND_LOST });
        let hidden = if lost.removed && lost.hidden {
            REMOVED_FLAG_HIDDEN
        } else {
            0
        };
        out.push(if next > from { LOST_FLAG_HEADS } else { 0 } | hidden);
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&(stop - first).to_le_bytes());
        if next > from {
            // At most MAX_BODY / 18 heads fit a body, so the count fits a u32.
            out.extend_from_slice(&u32::try_from(next - from).unwrap_or(u32::MAX).to_le_bytes());
            for (h, len) in &heads[from..next] {
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(h.stream.as_bytes());
                out.extend_from_slice(&h.revision.to_le_bytes());
                out.extend_from_slice(&h.position.to_le_bytes());
            }
        }
        // The body is at most MAX_BODY bytes (checked above), which fits a u32.
        finish_frame(out, start, u32::try_from(body).unwrap_or(u32::MAX));
        first = stop;
    }
}

/// Appends a seal frame to `out`.
pub fn encode_seal(out: &mut Vec<u8>, seal: &SealView) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    out.push(KIND_SEAL);
    out.push(0);
    out.extend_from_slice(&seal.next_position.to_le_bytes());
    out.extend_from_slice(&seal.event_count.to_le_bytes());
    out.extend_from_slice(&seal.content_crc.to_le_bytes());
    finish_frame(out, start, SEAL_BODY);
}

fn put_str16(out: &mut Vec<u8>, what: &str, s: &str) -> Result<()> {
    out.extend_from_slice(&field_len::<u16>(what, s.len())?.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Body lengths of the fixed-size frames: kind, flags, then their fields.
const GROUP_BODY: u32 = 2 + 8;
const LOST_BODY: u32 = 2 + 8 + 8;
const SEAL_BODY: u32 = 2 + 8 + 8 + 4;

/// Fills in the length and CRC of the frame at `start`, whose body (`body_len`
/// bytes, already checked to fit) runs to the end of `out`.
fn finish_frame(out: &mut [u8], start: usize, body_len: u32) {
    debug_assert_eq!(usize::try_from(body_len).ok(), Some(out.len() - start - FRAME_HEADER));
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start..start + 4]);
    h.update(&out[start + FRAME_HEADER..]);
    let crc = h.finalize();
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Total length of the frame that starts at `buf[0]`, from its length field,
/// without checking it. `None` if fewer than 4 bytes are given or the length is out of bounds.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    (len <= MAX_BODY).then_some(FRAME_HEADER + len)
}

/// The byte ranges of the whole frames laid end to end in `bytes` from
/// `start`, by their length fields alone (no checksum is checked): the walk
/// that compression and dictionary training make over a sealed segment. It
/// stops before the first frame that is not whole.
pub fn frame_spans(bytes: &[u8], start: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut at = start;
    std::iter::from_fn(move || {
        let len = frame_len(bytes.get(at..)?).filter(|l| at + l <= bytes.len())?;
        let span = at..at + len;
        at += len;
        Some(span)
    })
}

/// Decodes the frame at the start of `buf`; returns it and its total length.
pub fn decode_frame(buf: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    if buf.len() < FRAME_HEADER {
        return Err(FrameError::Truncated);
    }
    let len = le_u32(buf, 0) as usize;
    if len > MAX_BODY {
        // A length this large was never written: damage, or garbage past a torn tail.
        return Err(FrameError::Checksum);
    }
    let total = FRAME_HEADER + len;
    if buf.len() < total {
        return Err(FrameError::Truncated);
    }
    let stored = le_u32(buf, 4);
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..4]);
    h.update(&buf[FRAME_HEADER..total]);
    if h.finalize() != stored {
        return Err(FrameError::Checksum);
    }
    decode_body(buf, total)
}

/// Decodes a frame this process has just encoded and still holds in memory,
/// without recomputing its checksum. Never use it on bytes read from storage.
pub fn decode_own_frame(buf: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    let total = frame_len(buf).ok_or(FrameError::Truncated)?;
    if buf.len() < total {
        return Err(FrameError::Truncated);
    }
    decode_body(buf, total)
}

/// Decodes the body of a frame whose total length is `total`.
fn decode_body(buf: &[u8], total: usize) -> Result<(Frame<'_>, usize), FrameError> {
    let mut r = Reader::new(&buf[FRAME_HEADER..total]);
    let kind = r.u8()?;
    let flags = r.u8()?;
    let frame = match kind {
        KIND_EVENT => {
            if flags & !(FLAG_COMMIT | FLAG_JSON | FLAG_SEALED) != 0 {
                return Err(FrameError::Malformed("unknown event flags"));
            }
            let position = r.u64()?;
            let revision = r.u64()?;
            let timestamp = r.u64()? as i64;
            let id = Uuid::from_bytes(r.take(16)?.try_into().map_err(|_| FrameError::Truncated)?);
            let stream = r.str16()?;
            let event_type = r.str16()?;
            let ntags = r.u16()? as usize;
            let mut tags = Vec::with_capacity(ntags.min(64));
            for _ in 0..ntags {
                tags.push(r.str16()?);
            }
            let mlen = r.u32()? as usize;
            let metadata = r.take(mlen)?;
            let dlen = r.u32()? as usize;
            let data = r.take(dlen)?;
            let sealed = flags & FLAG_SEALED != 0;
            if sealed && !metadata.is_empty() {
                return Err(FrameError::Malformed("sealed event with metadata outside its envelope"));
            }
            Frame::Event(EventView {
                commit: flags & FLAG_COMMIT != 0,
                position,
                revision,
                timestamp,
                id,
                content_type: if flags & FLAG_JSON != 0 {
                    ContentType::Json
                } else {
                    ContentType::Binary
                },
                stream,
                event_type,
                tags,
                metadata,
                data,
                sealed,
            })
        }
        KIND_SEAL | KIND_GROUP if flags != 0 => {
            return Err(FrameError::Malformed("unknown frame flags"));
        }
        KIND_LOST if flags & !LOST_FLAG_HEADS != 0 => {
            return Err(FrameError::Malformed("unknown frame flags"));
        }
        KIND_REMOVED if flags & !(LOST_FLAG_HEADS | REMOVED_FLAG_HIDDEN) != 0 => {
            return Err(FrameError::Malformed("unknown frame flags"));
        }
        KIND_LOST | KIND_REMOVED => {
            let first_position = r.u64()?;
            let count = r.u64()?;
            if count == 0 || count > MAX_LOST_PER_FRAME {
                return Err(FrameError::Malformed("lost frame with no position or too many"));
            }
            let Some(end) = first_position.checked_add(count) else {
                return Err(FrameError::Malformed("lost frame runs past the last position"));
            };
            let mut heads = Vec::new();
            if flags & LOST_FLAG_HEADS != 0 {
                let n = r.u32()?;
                if n == 0 {
                    return Err(FrameError::Malformed("lost frame flagged with heads holds none"));
                }
                for _ in 0..n {
                    let head = Head {
                        stream: r.str16()?,
                        revision: r.u64()?,
                        position: r.u64()?,
                    };
                    let after = heads.last().map_or(first_position, |h: &Head<'_>| h.position + 1);
                    if head.position < after || head.position >= end {
                        return Err(FrameError::Malformed(
                            "lost frame head out of order or out of its range",
                        ));
                    }
                    heads.push(head);
                }
            }
            Frame::Lost(LostView {
                first_position,
                count,
                removed: kind == KIND_REMOVED,
                hidden: flags & REMOVED_FLAG_HIDDEN != 0,
                heads,
            })
        }
        KIND_GROUP => Frame::Group(GroupView { durable_end: r.u64()? }),
        KIND_SEAL => Frame::Seal(SealView {
            next_position: r.u64()?,
            event_count: r.u64()?,
            content_crc: r.u32()?,
        }),
        _ => return Err(FrameError::Malformed("unknown frame kind")),
    };
    if !r.buf.is_empty() {
        return Err(FrameError::Malformed("trailing bytes in frame body"));
    }
    Ok((frame, total))
}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        FrameError::Malformed(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(out: &mut Vec<u8>) {
        encode_event(
            out,
            true,
            7,
            3,
            1_700_000_000_000_000,
            Uuid::from_u128(99),
            ContentType::Json,
            "order-1",
            "OrderPlaced",
            &["tenant:t1".to_string()],
            b"{\"m\":1}",
            b"{\"total\":10}",
        )
        .unwrap();
    }

    #[test]
    fn a_field_too_long_for_the_format_is_refused_and_leaves_out_as_it_was() {
        let mut out = vec![1, 2, 3];
        let long = "x".repeat(usize::from(u16::MAX) + 1);
        let tags = vec!["t".to_string(); usize::from(u16::MAX) + 1];
        let data = vec![0u8; MAX_BODY];
        let cases: [(&str, &[String], &[u8]); 4] = [
            (&long, &[], b""),
            ("s", std::slice::from_ref(&long), b""),
            ("s", &tags, b""),
            ("s", &[], &data),
        ];
        for (stream, tags, data) in cases {
            let r = encode_event(
                &mut out,
                true,
                0,
                0,
                0,
                Uuid::nil(),
                ContentType::Binary,
                stream,
                "T",
                tags,
                b"",
                data,
            );
            assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
            assert_eq!(out, [1, 2, 3]);
        }
    }

    #[test]
    fn event_round_trips() {
        let mut buf = Vec::new();
        sample(&mut buf);
        let (frame, len) = decode_frame(&buf).unwrap();
        assert_eq!(len, buf.len());
        let Frame::Event(ev) = frame else {
            panic!("not an event")
        };
        assert!(ev.commit);
        assert_eq!((ev.position, ev.revision), (7, 3));
        assert_eq!(ev.stream, "order-1");
        assert_eq!(ev.event_type, "OrderPlaced");
        assert_eq!(ev.tags, vec!["tenant:t1"]);
        assert_eq!(ev.data, b"{\"total\":10}");
        assert_eq!(ev.metadata, b"{\"m\":1}");
        assert_eq!(ev.content_type, ContentType::Json);
    }

    #[test]
    fn seal_round_trips() {
        let mut buf = Vec::new();
        let seal = SealView {
            next_position: 10,
            event_count: 4,
            content_crc: 0xdead_beef,
        };
        encode_seal(&mut buf, &seal);
        assert_eq!(decode_frame(&buf).unwrap(), (Frame::Seal(seal), buf.len()));
    }

    #[test]
    fn group_round_trips() {
        let mut buf = Vec::new();
        let g = GroupView { durable_end: 4096 };
        encode_group(&mut buf, &g);
        assert_eq!(decode_frame(&buf).unwrap(), (Frame::Group(g), buf.len()));
    }

    #[test]
    fn lost_and_removed_round_trip() {
        for (removed, hidden) in [(false, false), (true, false), (true, true)] {
            let l = LostView {
                first_position: 9,
                count: 3,
                removed,
                hidden,
                heads: vec![],
            };
            let mut buf = Vec::new();
            encode_lost(&mut buf, &l);
            assert_eq!(buf[FRAME_HEADER + 1], if hidden { REMOVED_FLAG_HIDDEN } else { 0 });
            assert_eq!(decode_frame(&buf).unwrap(), (Frame::Lost(l), buf.len()));
        }
    }

    #[test]
    fn the_hidden_flag_is_malformed_on_a_lost_frame() {
        // A lost frame asked to say "hidden" does not: only removed frames may.
        let mut buf = Vec::new();
        let lost = LostView {
            first_position: 9,
            count: 3,
            removed: false,
            hidden: true,
            heads: vec![],
        };
        encode_lost(&mut buf, &lost);
        let Ok((Frame::Lost(l), _)) = decode_frame(&buf) else {
            panic!("a lost frame expected");
        };
        assert!(!l.hidden);
        // Built by hand with the flag on kind 4: malformed.
        let mut out = vec![0u8; FRAME_HEADER];
        out.extend_from_slice(&[KIND_LOST, REMOVED_FLAG_HIDDEN]);
        out.extend_from_slice(&9u64.to_le_bytes());
        out.extend_from_slice(&3u64.to_le_bytes());
        let body = u32::try_from(out.len() - FRAME_HEADER).unwrap();
        finish_frame(&mut out, 0, body);
        assert_eq!(decode_frame(&out), Err(FrameError::Malformed("unknown frame flags")));
        // And an unknown bit on kind 5 too.
        out[FRAME_HEADER] = KIND_REMOVED;
        out[FRAME_HEADER + 1] = 4;
        finish_frame(&mut out, 0, body);
        assert_eq!(decode_frame(&out), Err(FrameError::Malformed("unknown frame flags")));
    }

    #[test]
    fn heads_round_trip_in_their_frames() {
        let heads = vec![
            Head {
                stream: "order-1",
                revision: 4,
                position: 10,
            },
            Head {
                stream: "order-2",
                revision: 0,
                position: 12,
            },
        ];
        let l = LostView {
            first_position: 9,
            count: 4,
            removed: false,
            hidden: false,
            heads: heads.clone(),
        };
        let mut buf = Vec::new();
        encode_lost(&mut buf, &l);
        assert_eq!(decode_frame(&buf).unwrap(), (Frame::Lost(l), buf.len()));

        // A range split over several frames keeps each head in the frame that covers it.
        let wide = LostView {
            first_position: 0,
            count: MAX_LOST_PER_FRAME + 5,
            removed: true,
            hidden: true,
            heads: vec![Head {
                stream: "a",
                revision: 1,
                position: MAX_LOST_PER_FRAME + 1,
            }],
        };
        let mut buf = Vec::new();
        encode_lost(&mut buf, &wide);
        let (first, len) = decode_frame(&buf).unwrap();
        let (second, _) = decode_frame(&buf[len..]).unwrap();
        let (Frame::Lost(first), Frame::Lost(second)) = (first, second) else {
            panic!("two lost frames expected");
        };
        assert!(first.heads.is_empty());
        assert!(
            first.hidden && second.hidden,
            "every frame of a split range keeps the flag"
        );
        assert_eq!((second.first_position, second.count), (MAX_LOST_PER_FRAME, 5));
        assert_eq!(second.heads, wide.heads);
    }

    #[test]
    fn heads_out_of_order_or_range_are_malformed() {
        let encode = |heads: &[(u64, u64)]| {
            // Built by hand: the encoder never writes these.
            let mut out = vec![0u8; FRAME_HEADER];
            out.extend_from_slice(&[KIND_LOST, LOST_FLAG_HEADS]);
            out.extend_from_slice(&10u64.to_le_bytes());
            out.extend_from_slice(&3u64.to_le_bytes());
            out.extend_from_slice(&u32::try_from(heads.len()).unwrap().to_le_bytes());
            for (revision, position) in heads {
                out.extend_from_slice(&1u16.to_le_bytes());
                out.push(b's');
                out.extend_from_slice(&revision.to_le_bytes());
                out.extend_from_slice(&position.to_le_bytes());
            }
            let body = u32::try_from(out.len() - FRAME_HEADER).unwrap();
            finish_frame(&mut out, 0, body);
            out
        };
        assert!(decode_frame(&encode(&[(0, 10), (1, 12)])).is_ok());
        for bad in [&[][..], &[(0, 9)], &[(0, 13)], &[(0, 11), (1, 11)], &[(0, 12), (1, 10)]] {
            assert!(
                matches!(decode_frame(&encode(bad)), Err(FrameError::Malformed(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        sample(&mut buf);
        for i in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode_frame(&bad).is_err(), "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn every_truncation_is_reported_as_truncated() {
        let mut buf = Vec::new();
        sample(&mut buf);
        for n in 0..buf.len() {
            assert_eq!(decode_frame(&buf[..n]), Err(FrameError::Truncated));
        }
    }
}
