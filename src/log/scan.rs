//! Scanning a segment's frames into an index, append by append.
//!
//! Recovery, verify, scavenging and repair all read a segment this one way:
//! events count only once their append's commit frame is seen. This module
//! must never write.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::index::{IndexEntry, MemIndex};
use crate::format::record::{EventView, Frame};
use crate::format::segment::{self, SEGMENT_HEADER, ScanEnd};

/// A segment's committed events, indexed, and how its scan ended.
pub(crate) struct Scanned {
    /// Index of the committed events.
    pub(crate) index: MemIndex,
    /// How the scan ended.
    pub(crate) end: ScanEnd,
    /// Offset just past the last committed event (the header's end if none).
    pub(crate) committed_end: u64,
    /// Valid event frames after the last commit (an unfinished append).
    pub(crate) pending: usize,
}

/// Scans a segment body from its header on, indexing events append by append
/// (the commit rule). A position out of sequence is corruption.
pub(crate) fn index_segment(bytes: &[u8], base: u64, path: &Path) -> Result<Scanned> {
    let mut index = MemIndex::new(base, SEGMENT_HEADER as u64);
    // Events of an append are indexed only once its commit frame is seen.
    let mut pending: Vec<(EventView<'_>, u64, u64)> = Vec::new();
    let mut next = base;
    let mut lost_total = 0u64;
    let mut committed_end = SEGMENT_HEADER as u64;
    let end = segment::scan_frames(bytes, |frame, offset, end| {
        match frame {
            Frame::Event(ev) => {
                if ev.position != next {
                    return Err(Error::corruption(
                        path,
                        offset,
                        format!("event has position {}, expected {next}", ev.position),
                    ));
                }
                next += 1;
                pending.push((ev.clone(), offset, end));
                if ev.commit {
                    for (v, offset, end) in pending.drain(..) {
                        index.push(&IndexEntry::from_view(&v, offset), end);
                    }
                    committed_end = end;
                }
            }
            Frame::Lost(lost) => {
                // Written only by repair, between whole appends.
                if lost.first_position != next || !pending.is_empty() {
                    return Err(Error::corruption(path, offset, "lost frame out of sequence"));
                }
                lost_total = lost_total.saturating_add(lost.count);
                if lost_total > crate::format::record::MAX_LOST_PER_FRAME {
                    return Err(Error::corruption(
                        path,
                        offset,
                        "lost frames cover more positions than a segment holds",
                    ));
                }
                next += lost.count;
                index.push_lost(lost, offset, end);
                committed_end = end;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(Scanned {
        index,
        end,
        committed_end,
        pending: pending.len(),
    })
}
