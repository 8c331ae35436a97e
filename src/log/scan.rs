//! Scanning a segment's frames into an index, append by append.
//!
//! Recovery, verify, scavenging and repair all read a segment this one way:
//! events count only once their append's commit frame is seen. This module
//! must never write.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::index::{IndexEntry, Lookup, MemIndex, MetaFields};
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
pub(crate) fn index_segment(bytes: &[u8], base: u64, path: &Path, fields: &Arc<MetaFields>) -> Result<Scanned> {
    resume_scan(bytes, MemIndex::new(base, SEGMENT_HEADER as u64, fields.clone()), path)
}

/// Scans on from where `index` ends (its end offset, just past a committed
/// append, and its next position), as [`index_segment`] would have gone on
/// had it indexed those events itself: recovery gives it the index of the
/// active segment's durable prefix from `active.idc`.
pub(crate) fn resume_scan(bytes: &[u8], mut index: MemIndex, path: &Path) -> Result<Scanned> {
    let start = usize::try_from(index.end_offset())
        .ok()
        .filter(|s| (SEGMENT_HEADER..=bytes.len()).contains(s))
        .ok_or_else(|| Error::corruption(path, index.end_offset(), "index ends past the segment"))?;
    // Events of an append are indexed only once its commit frame is seen.
    let mut pending: Vec<(EventView<'_>, u64, u64)> = Vec::new();
    let mut next = index.next_position();
    let mut lost_total = 0u64;
    let mut committed_end = start as u64;
    let end = segment::scan_frames_from(bytes, start, |frame, offset, end| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::segment::parse_file_name;
    use crate::{Direction, Durability, EventData, ExpectedVersion, Filter, LogFrom, Options, Store, StreamFrom};

    /// A store whose sealed segments carry version-1 index files (as an
    /// annal before version 2 wrote them) opens, verifies clean and answers
    /// every lookup as with the version-2 files the store writes itself.
    #[test]
    fn a_store_with_version_1_index_files_reads_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default()
            .durability(Durability::Never)
            .segment_size(16 * 1024)
            .no_compression();
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        for i in 0..600u64 {
            let e = EventData::json(if i % 3 == 0 { "Placed" } else { "Paid" }, format!(r#"{{"n":{i}}}"#))
                .with_tag(format!("tenant:{}", i % 4));
            store
                .append(&format!("order-{}", i % 9), ExpectedVersion::Any, vec![e])
                .unwrap();
        }
        assert!(store.segment_count() > 3);
        let answers = |store: &Store| {
            let all = store
                .read_all(Direction::Forward, LogFrom::Start, 10_000, &Filter::all())
                .unwrap();
            let typed = store
                .read_all(
                    Direction::Backward,
                    LogFrom::End,
                    10_000,
                    &Filter::all().with_type("Placed"),
                )
                .unwrap();
            let tagged = store
                .read_all(
                    Direction::Forward,
                    LogFrom::Start,
                    10_000,
                    &Filter::all().with_tag("tenant:2"),
                )
                .unwrap();
            let stream = store
                .read_stream("order-4", Direction::Backward, StreamFrom::End, 1000)
                .unwrap();
            let by_id: Vec<u64> = all
                .iter()
                .step_by(37)
                .map(|e| store.event_by_id(e.id).unwrap().unwrap().position)
                .collect();
            (all, typed, tagged, stream, by_id)
        };
        let before = answers(&store);
        store.close().unwrap();

        let mut rewritten = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let Some((base, "idx")) = parse_file_name(&name) else {
                continue;
            };
            let seg = std::fs::read(path.with_extension("seg")).unwrap();
            let scanned = index_segment(&seg, base, &path, &Default::default()).unwrap();
            let v2 = std::fs::read(&path).unwrap();
            assert_eq!(scanned.index.encode_file().unwrap(), v2);
            std::fs::write(&path, scanned.index.encode_file_v1().unwrap()).unwrap();
            rewritten += 1;
        }
        assert!(rewritten >= 3);

        let store = Store::open(dir.path(), opts).unwrap();
        assert!(store.verify().unwrap().is_clean(), "{:?}", store.verify().unwrap());
        assert_eq!(answers(&store), before);
    }
}
