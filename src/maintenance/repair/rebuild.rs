//! Repair of one segment: reading it frame by frame, keeping every whole
//! append, replacing damaged ranges by lost frames (their bytes copied to
//! quarantine first), and sealing it when a later segment exists.
//!
//! This module must never drop a byte without quarantining it.

use std::path::Path;

use crate::error::{IoContext, Result};
use crate::event::now_micros;
use crate::format::index::SegmentIndex;
use crate::format::record::{self, Frame, GroupView};
use crate::format::segment::{self, SEGMENT_HEADER, SegmentHeader, segment_file_name};

use super::{Rebuilt, Repairer};

impl Repairer<'_> {
    /// Repairs one segment; returns the position after its last one.
    pub(super) fn segment(&mut self, path: &Path, base: u64, is_last: bool, bound: Option<u64>) -> Result<u64> {
        let name = segment_file_name(base);
        self.unreadable.clear();
        let mut original = self.read(path)?;
        let header = SegmentHeader::decode(&original, path).ok();
        if let Some(id) = header.and_then(|h| h.dictionary)
            && self.dictionary.as_ref().map(|d| d.id) != Some(id)
        {
            // Its blocks cannot be read without the dictionary, which no repair can
            // rebuild: leave the segment as it is, and say so.
            self.dictionary_needed += 1;
            self.incomplete = true;
            let why = match &self.dictionary_error {
                Some(e) => format!("which is unreadable ({e})"),
                None if self.dictionary.is_some() => "which is not the store's dictionary".to_string(),
                None => format!("and {} is missing", crate::format::compressed::DICTIONARY_FILE),
            };
            self.report.unfixed.push(format!(
                "{}: compressed with dictionary {id}, {why}: its events cannot be read until {} is restored (from a backup); the segment was left as it is",
                path.display(),
                crate::format::compressed::DICTIONARY_FILE
            ));
            let idx = self.dir.join(crate::format::segment::index_file_name(base));
            let from_index = self
                .st
                .map(&idx)
                .ok()
                .and_then(|m| SegmentIndex::open(m, &idx).ok())
                .map(|i| crate::format::index::Lookup::next_position(&i));
            return Ok(bound.or(from_index).unwrap_or(base));
        }
        if header.is_some_and(|h| h.compressed) {
            // Repair works on the logical form. A block that does not decompress
            // stands as bytes no frame decodes from, so the frame walk below records
            // only its positions as lost and keeps every other block's events; a
            // file whose block table is unreadable is a wreck.
            let dict = self.dictionary.clone();
            match crate::format::compressed::Compressed::open(original.clone().into(), path, dict.as_ref()) {
                Ok(c) => {
                    let (logical, damaged) = c.logical_salvaged(path);
                    for (e, range) in damaged {
                        self.act(format!(
                            "{}: {e}; its logical bytes {}..{} are unreadable",
                            path.display(),
                            range.start,
                            range.end
                        ));
                        self.unreadable.push(range);
                    }
                    original = logical;
                }
                Err(e) => {
                    self.act(format!("{}: compressed form unreadable ({e})", path.display()));
                    original.truncate(0);
                }
            }
        }
        let header_ok = SegmentHeader::decode(&original, path).is_ok_and(|h| h.base_position == base);
        if !header_ok && segment::find_valid_frame(&original, SEGMENT_HEADER).is_none() {
            // Never held an event: an unfinished creation, or a wreck.
            let file = self.read(path)?;
            self.quarantine(&name, &file)?;
            self.st.remove(path).ctx(|| format!("removing {}", path.display()))?;
            if let Some(to) = bound.filter(|_| !is_last) {
                self.fill_gap(base, to)?;
                self.act(format!(
                    "{}: no readable header or frame; moved to quarantine",
                    path.display()
                ));
                return Ok(to);
            }
            self.act(format!(
                "{}: no readable header or frame; moved to quarantine",
                path.display()
            ));
            return Ok(base);
        }
        // An unchanged compressed segment stays as it is on disk.
        self.frame_starts = self.index_frame_starts(base);
        let rebuilt = self.rebuild(path, &original, base, bound, is_last);
        self.frame_starts.clear();
        self.unreadable.clear();
        let mut rebuilt = rebuilt?;
        if !header_ok {
            rebuilt.changed = true;
            self.act(format!("{}: header rebuilt from the file name", path.display()));
        }
        // Positions the last clean close vouched for and that this segment no
        // longer holds (cut off, truncated) are recorded as lost, never reused.
        if let Some(m) = self
            .claim
            .filter(|m| is_last && !rebuilt.sealed && m.segment_base == base)
            && m.next_position > rebuilt.next
        {
            let at = original.len();
            self.lose(&mut rebuilt.bytes, &mut rebuilt.next, m.next_position, path, at)?;
            rebuilt.changed = true;
        }
        // Every segment but the last must be sealed.
        if !rebuilt.sealed && !is_last {
            let to = bound.unwrap_or(rebuilt.next);
            if to > rebuilt.next {
                self.encode_lost(&mut rebuilt.bytes, rebuilt.next, to - rebuilt.next);
                self.report.lost_positions += to - rebuilt.next;
                self.act(format!(
                    "{}: positions {}..{to} missing at its end; recorded as lost",
                    path.display(),
                    rebuilt.next
                ));
                rebuilt.next = to;
            }
            let count = rebuilt.next - base;
            self.seal(&mut rebuilt.bytes, rebuilt.next, count);
            rebuilt.sealed = true;
            rebuilt.changed = true;
            self.act(format!("{}: sealed (a later segment exists)", path.display()));
        }
        if rebuilt.changed {
            segment::stamp_version(&mut rebuilt.bytes);
            let file = self.read(path)?;
            self.quarantine(&name, &file)?;
            self.replace(&name, &rebuilt.bytes)?;
            let idx = self.dir.join(crate::format::segment::index_file_name(base));
            if self.st.exists(&idx) {
                self.st.remove(&idx).ctx(|| format!("removing {}", idx.display()))?;
            }
        }
        if rebuilt.sealed {
            self.index(path, &rebuilt.bytes, base)?;
        }
        self.account(&rebuilt.bytes);
        Ok(rebuilt.next)
    }

    /// Walks a segment, keeping whole appends and lost frames, replacing damaged
    /// ranges by lost frames; the header is rebuilt from `base`.
    pub(super) fn rebuild(
        &mut self,
        path: &Path,
        bytes: &[u8],
        base: u64,
        bound: Option<u64>,
        is_last: bool,
    ) -> Result<Rebuilt> {
        let created = SegmentHeader::decode(bytes, path).map_or_else(|_| now_micros(), |h| h.created_micros);
        let mut out = SegmentHeader {
            version: crate::format::segment::SEGMENT_VERSION,
            base_position: base,
            created_micros: created,
            compressed: false,
            dictionary: None,
        }
        .encode()
        .to_vec();
        let mut next = base; // position after the last kept event or lost frame
        let mut pending: Vec<(u64, usize, usize)> = Vec::new(); // (position, start, end) of an unfinished append
        let mut changed = false;
        let mut sealed = false;
        // After damage, until the next group boundary, readable events of the cut
        // append are kept one by one: repair never drops an undamaged event.
        let mut salvaging = false;
        // True once the walk resumed after damage at a frame found byte by byte:
        // what it meets from there may be a client's bytes.
        let mut searched = false;
        let mut offset = SEGMENT_HEADER;
        let name = segment_file_name(base);
        loop {
            if segment::starts_zero_region(&bytes[offset.min(bytes.len())..]) {
                break;
            }
            match record::decode_frame(&bytes[offset..]) {
                Ok((Frame::Event(ev), len)) => {
                    let expected = next + pending.len() as u64;
                    if ev.position < expected || ev.position >= bound.unwrap_or(u64::MAX) {
                        // Out of sequence: never written here by the writer.
                        changed = true;
                        self.drop_range(&name, bytes, offset, offset + len)?;
                        offset += len;
                        continue;
                    }
                    if ev.position > expected {
                        changed = true;
                        self.salvage(&mut out, &mut next, &mut pending, bytes, path)?;
                        self.lose(&mut out, &mut next, ev.position, path, offset)?;
                    }
                    if salvaging {
                        pending.push((ev.position, offset, offset + len));
                        self.salvage(&mut out, &mut next, &mut pending, bytes, path)?;
                    } else {
                        pending.push((ev.position, offset, offset + len));
                        if ev.commit {
                            for (_, s, e) in pending.drain(..) {
                                out.extend_from_slice(&bytes[s..e]);
                                next += 1;
                            }
                        }
                    }
                    offset += len;
                }
                Ok((Frame::Group(_), len)) => {
                    if !pending.is_empty() {
                        changed = true;
                        self.salvage(&mut out, &mut next, &mut pending, bytes, path)?;
                    }
                    salvaging = false;
                    if !changed && out.len() == offset {
                        // Nothing before it moved: the group's claim still holds.
                        out.extend_from_slice(&bytes[offset..offset + len]);
                    } else {
                        // A rewritten segment's layout differs from the one the group's
                        // `durable_end` described: keep the boundary, claim nothing.
                        changed = true;
                        record::encode_group(
                            &mut out,
                            &GroupView {
                                durable_end: SEGMENT_HEADER as u64,
                            },
                        );
                    }
                    offset += len;
                }
                Ok((Frame::Lost(l), len))
                    if l.first_position >= next + pending.len() as u64
                        && l.first_position.saturating_add(l.count) <= bound.unwrap_or(u64::MAX) =>
                {
                    if !pending.is_empty() {
                        changed = true;
                        self.salvage(&mut out, &mut next, &mut pending, bytes, path)?;
                    }
                    if l.first_position > next {
                        changed = true;
                        self.lose(&mut out, &mut next, l.first_position, path, offset)?;
                    }
                    salvaging = false;
                    out.extend_from_slice(&bytes[offset..offset + len]);
                    next += l.count;
                    offset += len;
                }
                Ok((Frame::Lost(_), len)) => {
                    changed = true;
                    self.drop_range(&name, bytes, offset, offset + len)?;
                    offset += len;
                }
                Ok((Frame::Seal(_), len)) if searched && !segment::starts_zero_region(&bytes[offset + len..]) => {
                    // Met after a byte-by-byte search past damage, with more bytes
                    // after it: the writer writes nothing after a seal, so these are
                    // a client's bytes (or damage), never the segment's end.
                    changed = true;
                    self.act(format!(
                        "{}: a seal frame found after damage at byte {offset}, with data after it; not the segment's seal, moved to quarantine",
                        path.display()
                    ));
                    self.drop_range(&name, bytes, offset, offset + len)?;
                    offset += len;
                }
                Ok((Frame::Seal(seal), len)) => {
                    // Anything after the seal is ignored, as recovery does.
                    if !pending.is_empty() {
                        changed = true;
                        self.salvage(&mut out, &mut next, &mut pending, bytes, path)?;
                    }
                    // A seal never ends past the next segment's base; in the last
                    // segment, one met after a byte-by-byte search may be a client's
                    // bytes, so it adds no lost positions there (the claim and the
                    // indexes bound those).
                    let limit = bound.unwrap_or(if searched { next } else { seal.next_position });
                    let end = limit.min(seal.next_position).max(next);
                    if end > next {
                        self.lose(&mut out, &mut next, end, path, offset)?;
                        changed = true;
                    }
                    // The seal's checksum must cover the bytes kept before it.
                    let content_ok = crc32fast::hash(&out[SEGMENT_HEADER..]) == seal.content_crc;
                    if !content_ok && !changed {
                        self.act(format!(
                            "{}: seal checksum did not match the segment's bytes at byte {offset}; sealed anew",
                            path.display()
                        ));
                    }
                    if changed || !content_ok || seal.next_position != next || seal.event_count != next - base {
                        changed = true;
                        self.seal(&mut out, next, next - base);
                    } else {
                        out.extend_from_slice(&bytes[offset..offset + len]);
                    }
                    sealed = true;
                    break;
                }
                Err(e) => {
                    changed = true;
                    // Resume where the damaged frame ends when its length can be
                    // trusted (its data may hold well-formed frames of a client's,
                    // never events of the log); else search byte by byte.
                    let resume = match segment::damaged_frame_end(bytes, offset) {
                        Some(end) if segment::starts_zero_region(&bytes[end..]) => None,
                        Some(end) => Some(end),
                        // Where the index names an event that still decodes, if it
                        // has one: never a frame inside a client's data.
                        None => match self
                            .frame_starts
                            .iter()
                            .copied()
                            .filter(|at| *at > offset && *at < bytes.len())
                            .find(|at| record::decode_frame(&bytes[*at..]).is_ok())
                        {
                            Some(at) => Some(at),
                            None => {
                                let found = segment::find_valid_frame(bytes, offset + 1);
                                searched |= found.is_some();
                                found
                            }
                        },
                    };
                    let end = resume.unwrap_or_else(|| segment::data_end(bytes, offset));
                    if self.unreadable.iter().any(|r| r.start <= offset && end <= r.end) {
                        // Never decompressed: nothing of it to copy but the original file.
                        self.act(format!(
                            "{}: logical bytes {offset}..{end} dropped (a block that does not decompress; the original file is in quarantine)",
                            path.display()
                        ));
                    } else {
                        self.act(format!(
                            "{}: {e} at byte {offset}; bytes {offset}..{end} moved to quarantine",
                            path.display()
                        ));
                        self.drop_range(&name, bytes, offset, end)?;
                    }
                    match resume {
                        // Damage in the middle: what was written around it is kept.
                        Some(at) => {
                            self.salvage(&mut out, &mut next, &mut pending, bytes, path)?;
                            salvaging = true;
                            offset = at;
                        }
                        None => break,
                    }
                }
            }
        }
        // Bytes before what the last clean close recorded as durable are no torn tail.
        let claimed_end = self
            .claim
            .filter(|m| m.segment_base == base)
            // Only compared with offsets into the bytes: a claim past usize::MAX is past them all.
            .map_or(0, |m| usize::try_from(m.durable_end).unwrap_or(usize::MAX));
        if !pending.is_empty() {
            if is_last && pending[0].1 >= claimed_end {
                // An unfinished append at the end of the log: a torn tail, never acknowledged.
                let (s, e) = (pending[0].1, pending[pending.len() - 1].2);
                self.drop_range(&name, bytes, s, e)?;
                self.act(format!("{}: unfinished append at byte {s} cut", path.display()));
                pending.clear();
            } else {
                // A later segment exists, so this append was written whole once.
                self.salvage(&mut out, &mut next, &mut pending, bytes, path)?;
            }
            changed = true;
        }
        Ok(Rebuilt {
            bytes: out,
            next,
            changed,
            sealed,
        })
    }

    /// Keeps the pending events of an append cut by damage, each as its own
    /// committed append, and reports it.
    pub(super) fn salvage(
        &mut self,
        out: &mut Vec<u8>,
        next: &mut u64,
        pending: &mut Vec<(u64, usize, usize)>,
        bytes: &[u8],
        path: &Path,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let first = pending[0].0;
        let n = pending.len();
        for (_, s, e) in pending.drain(..) {
            if let Ok((Frame::Event(v), _)) = record::decode_frame(&bytes[s..e]) {
                record::encode_committed(out, &v)?;
                *next += 1;
            }
        }
        self.act(format!(
            "{}: {n} readable events of an append cut by damage kept (positions {first}..{})",
            path.display(),
            first + n as u64
        ));
        Ok(())
    }

    /// Records positions `*next..to` as lost in `out`.
    pub(super) fn lose(
        &mut self,
        out: &mut Vec<u8>,
        next: &mut u64,
        to: u64,
        path: &Path,
        offset: usize,
    ) -> Result<()> {
        self.encode_lost(out, *next, to - *next);
        self.report.lost_positions += to - *next;
        self.act(format!(
            "{}: positions {}..{to} unreadable (near byte {offset}); recorded as lost",
            path.display(),
            *next
        ));
        *next = to;
        Ok(())
    }

    pub(super) fn drop_range(&mut self, name: &str, bytes: &[u8], from: usize, to: usize) -> Result<()> {
        if to > from {
            self.quarantine(&format!("{name}-{from}-{to}.bin"), &bytes[from..to])?;
        }
        Ok(())
    }
}
