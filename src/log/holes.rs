//! Holes in the log: positions that hold no event any more (removed by
//! scavenging, lost to damage and recorded so by `repair`), and which of
//! them held events that reads had stopped returning before scavenging
//! removed them (of system streams, or hidden by their stream's metadata),
//! as their removed frames say.
//!
//! A forwarder passing over positions asks here which of them it must count
//! as events removed before it delivered them (a gap). This module reads
//! only: it must never write, and never take a position for hidden when
//! its frame does not say so.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::record::{self, Frame};
use crate::log::segments::SegRef;
use crate::log::state::Shared;

/// A stretch of positions, (start, end).
pub(crate) type Span = (u64, u64);

/// The positions of a stretch of the log that hold no event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Holes {
    /// Every position without an event, as sorted, disjoint spans.
    pub(crate) empty: Vec<Span>,
    /// The part of `empty` whose removed frames say that every position
    /// held an event reads no longer returned (see
    /// [`record::REMOVED_FLAG_HIDDEN`]), as sorted, disjoint spans.
    /// Positions of frames written before segment version 4, which do not
    /// say, are never here.
    pub(crate) hidden: Vec<Span>,
}

impl Shared {
    /// The positions in `from..to` that hold no event (of any stream,
    /// deleted or not), and which of them held hidden events only. Looks
    /// only at the segments that have such positions (a sealed segment
    /// whose index counts none is skipped, and so is the active segment
    /// while it has none): at the kind of each frame there, and at the
    /// whole of each lost or removed frame (its checksum checked, so that
    /// damage to it fails like a read; an event's frame is judged by its
    /// kind byte alone, so a damaged removed frame whose kind byte became
    /// an event's passes for one: verify finds it). `known`: positions, ascending, that the
    /// caller read an event at (a hint: none of them is looked at).
    pub(crate) fn holes_in(&self, from: u64, to: u64, known: &[u64]) -> Result<Holes> {
        let mut holes = Holes::default();
        let mut at = from;
        for seg in self.segments() {
            if at >= to {
                break;
            }
            let (base, next, none) = seg.with(|l| (l.base(), l.next_position(), l.empty_positions() == Some(0)));
            if next <= at {
                continue;
            }
            if base > at {
                // Positions no segment holds.
                holes.empty.push((at, base.min(to)));
                at = base.min(to);
            }
            let end = next.min(to);
            if !none && at < end {
                segment_holes(self, &seg, (at, end), known, &mut holes)?;
            }
            at = at.max(end);
        }
        if at < to {
            holes.empty.push((at, to));
        }
        Ok(holes)
    }
}

/// Adds the holes of `seg` in `span` to `holes`, one chunk of locations at
/// a time: a position in `known` (ascending) is passed over, so is one
/// whose frame's kind byte says it is an event; a lost or removed frame is
/// decoded whole and its positions (clipped to `span`) added, and the walk
/// goes on after them.
fn segment_holes(shared: &Shared, seg: &SegRef, span: Span, known: &[u64], holes: &mut Holes) -> Result<()> {
    const CHUNK: u64 = 4096;
    let (mut p, end) = span;
    let mut k = known.partition_point(|&x| x < p);
    while p < end {
        let chunk_end = end.min(p.saturating_add(CHUNK));
        let mut positions: Vec<u64> = Vec::new();
        for q in p..chunk_end {
            while known.get(k).is_some_and(|&x| x < q) {
                k += 1;
            }
            if known.get(k) != Some(&q) {
                positions.push(q);
            }
        }
        let locations = seg.with(|l| l.locations(&positions));
        // Where the next chunk starts: past a frame that ends beyond this one.
        let mut next = chunk_end;
        let mut i = 0usize;
        while let (Some(&q), Some(location)) = (positions.get(i), locations.get(i)) {
            let Some((offset, _)) = *location else {
                return Err(Error::corruption(
                    seg.path(),
                    0,
                    format!("no location for position {q}"),
                ));
            };
            if kind_at(shared, seg, offset)? == record::KIND_EVENT {
                i += 1;
                continue;
            }
            let head = read_frame_bytes(shared, seg, offset, record::FRAME_HEADER as u64)?;
            let len =
                record::frame_len(&head).ok_or_else(|| Error::corruption(seg.path(), offset, "bad frame length"))?;
            let bytes = read_frame_bytes(shared, seg, offset, len as u64)?;
            let lost = match record::decode_frame(&bytes) {
                Ok((Frame::Lost(l), _))
                    if (l.first_position..l.first_position.saturating_add(l.count)).contains(&q) =>
                {
                    l
                }
                Ok(_) => return Err(Error::corruption(seg.path(), offset, "frame is not the indexed event")),
                Err(e) => return Err(Error::corruption(seg.path(), offset, e.to_string())),
            };
            let stop = lost.first_position.saturating_add(lost.count).min(end);
            push(&mut holes.empty, (q, stop));
            if lost.removed && lost.hidden {
                push(&mut holes.hidden, (q, stop));
            }
            if stop >= chunk_end {
                next = stop;
                break;
            }
            // The walk goes on in this chunk, after the frame's positions.
            i = positions.partition_point(|&x| x < stop);
        }
        p = next;
    }
    Ok(())
}

/// The kind byte of the frame at `offset` of `seg`: straight from the
/// mapped bytes of an uncompressed sealed segment, read otherwise.
fn kind_at(shared: &Shared, seg: &SegRef, offset: u64) -> Result<u8> {
    let at = offset.saturating_add(record::FRAME_HEADER as u64);
    if let SegRef::Sealed(s) = seg
        && s.compressed.is_none()
    {
        return usize::try_from(at)
            .ok()
            .and_then(|i| s.bytes.get(i).copied())
            .ok_or_else(|| Error::corruption(seg.path(), offset, "frame past the end of the segment"));
    }
    let bytes = read_frame_bytes(shared, seg, offset, record::FRAME_HEADER as u64 + 1)?;
    bytes
        .get(record::FRAME_HEADER)
        .copied()
        .ok_or_else(|| Error::corruption(seg.path(), offset, "frame past the end of the segment"))
}

/// Adds `span` to sorted, disjoint `spans`, merged with the last if they touch.
fn push(spans: &mut Vec<Span>, span: Span) {
    match spans.last_mut() {
        Some(last) if last.1 == span.0 => last.1 = span.1,
        _ => spans.push(span),
    }
}

/// `len` bytes of `seg` from `offset` (fewer where a sealed segment ends or
/// a compressed block ends: a frame starting at `offset` is always whole).
fn read_frame_bytes(shared: &Shared, seg: &SegRef, offset: u64, len: u64) -> Result<Bytes> {
    let end = offset.saturating_add(len);
    match seg {
        SegRef::Sealed(s) => s.range(offset, end, Some(&shared.block_cache)),
        SegRef::Active(a) => {
            let n = usize::try_from(len).map_err(|_| Error::corruption(seg.path(), offset, "frame too long"))?;
            let mut buf = vec![0u8; n];
            a.file.read_exact_at(&mut buf, offset).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    Error::corruption(seg.path(), offset, "frame past the end of the segment")
                }
                _ => Error::io(format!("reading {}", seg.path().display()), e),
            })?;
            Ok(Bytes::from(buf))
        }
    }
}
