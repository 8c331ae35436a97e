//! Verification of a live store: every checksum, every index entry against the
//! log, and the invariants that span files.
//!
//! This module owns [`VerifyReport`] and the checks behind
//! [`crate::Store::verify`]. It reads; it must never change a byte (repair does that).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::format::checkpoint::{STREAMS_FILE, StreamsCheckpoint};
use crate::format::index::Lookup;
use crate::format::record::Frame;
use crate::format::segment::{self, SEGMENT_HEADER, ScanEnd, SegmentHeader};
use crate::format::subjects;
use crate::log::scan::index_segment;
use crate::log::state::Shared;
use crate::log::subjects::{KeyState, SubjectKeys};

/// One problem found by [`crate::Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file where it was found.
    pub file: PathBuf,
    /// The byte offset in that file.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}: {}", self.file.display(), self.offset, self.what)
    }
}

/// What [`crate::Store::verify`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Index files checked.
    pub indexes: usize,
    /// Events whose frames were decoded and checked.
    pub events: u64,
    /// Bytes of segment data read.
    pub bytes: u64,
    /// Positions a repair recorded as lost (their events could not be read).
    pub lost: u64,
    /// Positions scavenging emptied on purpose (deleted, expired, past retention).
    pub removed: u64,
    /// Everything found wrong, in file order.
    pub problems: Vec<Problem>,
    /// Torn tails recovery has cut and kept in `torn/` (bytes written after the
    /// last durable append at the time of a crash): not damage, but never silent.
    pub torn_tails: Vec<crate::log::damage::TornTail>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, file: &Path, offset: u64, what: impl Into<String>) {
        self.problems.push(Problem {
            file: file.to_path_buf(),
            offset,
            what: what.into(),
        });
    }
}

/// Tracks each stream's next revision across the whole log.
#[derive(Default)]
struct Revisions {
    next: HashMap<String, u64>,
    /// Positions lost or removed so far; a stream may skip revisions by as many.
    lost: u64,
    /// Positions whose events damage kept verify from reading (already reported
    /// as damage); they excuse revision gaps too.
    hidden: u64,
    /// A stream checkpoint covering a position inside the active segment (a
    /// clean close writes one there), compared once the walk reaches it.
    due: Option<(PathBuf, StreamsCheckpoint)>,
}

impl Revisions {
    /// True if positions were lost, removed or hidden by damage so far.
    fn gaps(&self) -> bool {
        self.lost > 0 || self.hidden > 0
    }

    fn check(&mut self, report: &mut VerifyReport, file: &Path, offset: u64, stream: &str, revision: u64) {
        let next = self.next.entry(stream.to_string()).or_insert(0);
        let explained = revision > *next && revision - *next <= self.lost.saturating_add(self.hidden);
        if revision != *next && !explained {
            report.problem(
                file,
                offset,
                format!("stream {stream:?} has revision {revision} where {next} was expected"),
            );
        }
        *next = revision.saturating_add(1);
    }

    /// Compares the checkpoint that is due once the walk reaches `position`.
    fn reach(&mut self, report: &mut VerifyReport, position: u64) {
        if self.due.as_ref().is_some_and(|(_, c)| c.covered_position <= position)
            && let Some((path, c)) = self.due.take()
        {
            check_checkpoint(report, &path, &c, self);
        }
    }

    /// A stream head recorded in a lost or removed frame: the stream's revisions
    /// up to `revision` were handed out, and none of its events before can be later.
    fn head(&mut self, report: &mut VerifyReport, file: &Path, offset: u64, stream: &str, revision: u64) {
        let next = self.next.entry(stream.to_string()).or_insert(0);
        if revision < *next {
            report.problem(
                file,
                offset,
                format!("a recorded head of stream {stream:?} at revision {revision} is behind revision {next} seen before it"),
            );
        } else {
            *next = revision.saturating_add(1);
        }
    }
}

/// Checks the store behind `shared`; see [`crate::Store::verify`].
pub(crate) fn verify(shared: &Shared) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut revisions = Revisions::default();
    let now = shared.segments.snapshot();
    let checkpoint_path = shared.dir.join(STREAMS_FILE);
    let checkpoint = shared
        .storage
        .map(&checkpoint_path)
        .ok()
        .map(|m| StreamsCheckpoint::decode((*m).as_ref(), &checkpoint_path));
    let mut expected_base = 0;
    // Where the active segment starts; a store open for reading only whose
    // last segment is sealed (or unreadable) has none, and ends at its head.
    let active_base = match &now.active {
        Some(a) => a.index.read().base(),
        None => shared.published(),
    };

    for seg in now.sealed.iter() {
        if let Some(Ok(c)) = &checkpoint
            && c.covered_position == seg.index.base()
        {
            check_checkpoint(&mut report, &checkpoint_path, c, &revisions);
        }
        let base = seg.index.base();
        if base != expected_base {
            report.problem(
                &seg.path,
                0,
                format!("segment starts at {base}, expected {expected_base}"),
            );
        }
        expected_base = seg.index.next_position();
        report.segments += 1;
        report.indexes += 1;
        // A compressed block that does not decompress is reported at its offset
        // in the file; the walk steps over it, and its positions are hidden.
        let (logical, unreadable) = match &seg.compressed {
            Some(c) => {
                let (bytes, damaged) = c.logical_salvaged(&seg.path);
                let mut ranges = Vec::with_capacity(damaged.len());
                for (e, range) in damaged {
                    let offset = match &e {
                        crate::error::Error::Corruption { offset, .. } => *offset,
                        _ => 0,
                    };
                    report.problem(&seg.path, offset, e.to_string());
                    ranges.push(range);
                }
                (bytes::Bytes::from(bytes), ranges)
            }
            None => (seg.bytes.clone(), Vec::new()),
        };
        let bytes: &[u8] = &logical;
        report.bytes += seg.bytes.len() as u64;
        let end_position = seg.index.next_position();
        check_segment(
            &mut report,
            &mut revisions,
            &seg.path,
            bytes,
            base,
            end_position,
            true,
            &unreadable,
            &shared.meta_fields,
            &shared.subjects,
            // An index that cannot be encoded differs from the file from its first byte.
            |scanned| {
                scanned
                    .index
                    .encode_file_like(&seg.index)
                    .map_or(Some(0), |rebuilt| first_difference(&rebuilt, seg.index.raw()))
            },
        );
    }

    if let Some(Ok(c)) = &checkpoint {
        if c.covered_position == active_base {
            check_checkpoint(&mut report, &checkpoint_path, c, &revisions);
        } else if c.covered_position > active_base && now.active.is_some() {
            revisions.due = Some((checkpoint_path.clone(), c.clone()));
        }
    }
    if let Some(Err(e)) = &checkpoint {
        report.problem(&checkpoint_path, 0, format!("unreadable: {e}"));
    }

    // The active segment, up to what is published now.
    let mut scanned_to = active_base;
    let mut streams = shared.streams.read().to_map();
    if let Some(active) = &now.active {
        let (live_index, end) = {
            let idx = active.index.read();
            streams = shared.streams.read().to_map();
            scanned_to = idx.next_position();
            (idx.encode_file()?, idx.end_offset())
        };
        if active_base != expected_base {
            report.problem(
                &active.path,
                0,
                format!("segment starts at {active_base}, expected {expected_base}"),
            );
        }
        let len = usize::try_from(end)
            .map_err(|_| crate::error::Error::corruption(&active.path, end, "active segment larger than memory"))?;
        let mut bytes = vec![0u8; len];
        active
            .file
            .read_exact_at(&mut bytes, 0)
            .ctx(|| format!("reading {}", active.path.display()))?;
        report.segments += 1;
        report.bytes += end;
        check_segment(
            &mut report,
            &mut revisions,
            &active.path,
            &bytes,
            active_base,
            scanned_to,
            false,
            &[],
            &shared.meta_fields,
            &shared.subjects,
            |scanned| {
                scanned
                    .index
                    .encode_file()
                    .map_or(Some(0), |rebuilt| first_difference(&rebuilt, &live_index))
            },
        );
        // A checkpoint covering exactly the published end (a clean close's).
        if revisions
            .due
            .as_ref()
            .is_some_and(|(_, c)| c.covered_position == scanned_to)
        {
            revisions.reach(&mut report, scanned_to);
        }
    }

    // Every stream's state must agree with the log.
    for (name, next) in &revisions.next {
        match streams.get(name.as_str()) {
            Some(s) if s.last_revision.saturating_add(1) == *next => {}
            // Appended after the snapshot (a rotation happened during the scan).
            Some(s) if s.last_position >= scanned_to => {}
            // The stream's last events were removed or lost.
            Some(s) if revisions.gaps() && s.last_revision.saturating_add(1) > *next => {}
            Some(s) => report.problem(
                &shared.dir,
                0,
                format!(
                    "stream {name:?} is at revision {} in memory, {} in the log",
                    s.last_revision,
                    next - 1
                ),
            ),
            None => report.problem(
                &shared.dir,
                0,
                format!("stream {name:?} is in the log but not in memory"),
            ),
        }
    }
    // Damage a read-only open stepped around, unless the walk above found it too.
    for d in &shared.damage {
        if !report.problems.iter().any(|p| p.file == d.file && p.offset == d.offset) {
            report.problem(&d.file, d.offset, d.reason.clone());
        }
    }
    // A damaged durable-end checkpoint keeps recovery from cutting any torn tail.
    let durable = shared.dir.join(crate::format::checkpoint::DURABLE_FILE);
    if shared.storage.exists(&durable) {
        let bytes = shared
            .storage
            .map(&durable)
            .ctx(|| format!("reading {}", durable.display()))?;
        if let Err(e) = crate::format::checkpoint::DurableMark::decode((*bytes).as_ref(), &durable) {
            report.problem(&durable, 0, e.to_string());
        }
    }
    // A damaged drop record hides what drop-oldest removed before delivery:
    // forwarders then report every position without an event as a gap of
    // unknown cause. Its own offset (Corruption) names where.
    let drops = shared.dir.join(crate::format::dropped::DROPPED_FILE);
    if shared.storage.exists(&drops) {
        // A record that cannot even be read is a problem to list, like damage,
        // not a reason to stop checking the rest.
        match shared.storage.map(&drops) {
            Err(e) => report.problem(&drops, 0, format!("cannot be read: {e}")),
            Ok(bytes) => match crate::format::dropped::decode((*bytes).as_ref(), &drops) {
                Ok(_) => {}
                Err(crate::error::Error::Corruption { offset, reason, .. }) => report.problem(&drops, offset, reason),
                Err(e) => report.problem(&drops, 0, e.to_string()),
            },
        }
    }
    let (keys_path, damaged) = shared.subjects.damaged();
    if let Some(reason) = shared.subjects.header_damage() {
        report.problem(
            &keys_path,
            0,
            format!("{reason}: no key of the file is used, so every event sealed under a key reads as damage"),
        );
    }
    for at in damaged {
        report.problem(
            &keys_path,
            at,
            "subject key record damaged (checksum mismatch): the events sealed under its key cannot be read",
        );
    }
    report.torn_tails = crate::log::damage::torn_tails(&*shared.storage, &shared.dir)?;
    Ok(report)
}

/// What is wrong with a sealed envelope, if anything: an erased event (its
/// key shredded) is not damage; a key the store never recorded, or a tag that
/// fails under a live key, is.
fn sealed_problem(keys: &SubjectKeys, id: uuid::Uuid, envelope: &[u8]) -> Option<String> {
    let Some(key_id) = subjects::envelope_key_id(envelope) else {
        return Some("sealed envelope shorter than its key id".into());
    };
    match keys.key(&key_id) {
        KeyState::Live(key) => subjects::open(&key, id, envelope).err().map(|e| e.to_string()),
        KeyState::Shredded => None,
        KeyState::Unknown => Some(format!(
            "event sealed under a key {} holds neither live nor shredded (the key store lost it)",
            subjects::SUBJECTS_FILE
        )),
    }
}

/// Scans one segment: header, frames, seal, and (through `compare_index`) its
/// index. Damage is reported with its offset; the walk then resynchronises on
/// the next valid frame, so the events after it are still checked and counted,
/// and the positions the damage hid excuse the revision gaps they cause later
/// (in this segment or the next ones). `end_position` is the position after
/// the segment's last one, as its index says. `unreadable` are the logical
/// ranges of compressed blocks that did not decompress (already reported at
/// their file offsets): damage found there is not reported again.
#[allow(clippy::too_many_arguments)]
fn check_segment(
    report: &mut VerifyReport,
    revisions: &mut Revisions,
    path: &Path,
    bytes: &[u8],
    base: u64,
    end_position: u64,
    sealed: bool,
    unreadable: &[std::ops::Range<usize>],
    fields: &std::sync::Arc<crate::format::index::MetaFields>,
    keys: &SubjectKeys,
    compare_index: impl FnOnce(&crate::log::scan::Scanned) -> Option<usize>,
) {
    let first_problem = report.problems.len();
    match SegmentHeader::decode(bytes, path) {
        Ok(h) if h.base_position != base => report.problem(path, 16, "header base differs from the file name"),
        Ok(_) => {}
        Err(e) => report.problem(path, 0, e.to_string()),
    }
    // Revisions and counts, in position order; lost and removed positions, and
    // positions hidden by damage, explain revision gaps.
    let mut expected = base;
    let mut damage = Vec::new();
    let mut at = SEGMENT_HEADER;
    loop {
        let end = segment::scan_frames_from(bytes, at, |frame, off, _| {
            match frame {
                Frame::Event(ev) => {
                    revisions.reach(report, ev.position);
                    if !damage.is_empty() && ev.position > expected {
                        revisions.hidden = revisions.hidden.saturating_add(ev.position - expected);
                    }
                    expected = expected.max(ev.position.saturating_add(1));
                    revisions.check(report, path, off, ev.stream, ev.revision);
                    if ev.sealed
                        && let Some(what) = sealed_problem(keys, ev.id, ev.data)
                    {
                        report.problem(path, off, what);
                    }
                    report.events += 1;
                }
                Frame::Lost(l) => {
                    revisions.reach(report, l.first_position);
                    revisions.lost = revisions.lost.saturating_add(l.count);
                    for h in &l.heads {
                        revisions.head(report, path, off, h.stream, h.revision);
                    }
                    expected = expected.max(l.first_position.saturating_add(l.count));
                    if l.removed {
                        report.removed += l.count;
                    } else {
                        report.lost += l.count;
                    }
                }
                _ => {}
            }
            Ok(())
        });
        match end {
            Ok(ScanEnd::Damaged { offset, error, .. }) => {
                damage.push((offset, error));
                // A damage offset past usize::MAX would be past the bytes, with no
                // frame after it. As repair does: past the damaged frame's end when
                // its length can be trusted, else byte by byte.
                let resume =
                    usize::try_from(offset)
                        .ok()
                        .and_then(|offset| match segment::damaged_frame_end(bytes, offset) {
                            Some(end) if segment::starts_zero_region(&bytes[end..]) => None,
                            Some(end) => Some(end),
                            None => segment::find_valid_frame(bytes, offset + 1),
                        });
                match resume {
                    Some(next) => at = next,
                    None => break,
                }
            }
            _ => break,
        }
    }
    if !damage.is_empty() && end_position > expected {
        revisions.hidden = revisions.hidden.saturating_add(end_position - expected);
    }
    if !damage.is_empty() {
        for (offset, error) in &damage {
            let inside = |r: &std::ops::Range<usize>| usize::try_from(*offset).is_ok_and(|o| r.contains(&o));
            if !unreadable.iter().any(inside) {
                report.problem(path, *offset, error.to_string());
            }
        }
        // In file order; the index and the seal cannot be compared with a damaged log.
        report.problems[first_problem..].sort_by_key(|p| p.offset);
        return;
    }
    let scanned = match index_segment(bytes, base, path, fields) {
        Ok(s) => s,
        Err(e) => {
            let offset = match &e {
                crate::error::Error::Corruption { offset, .. } => *offset,
                _ => 0,
            };
            report.problem(path, offset, e.to_string());
            return;
        }
    };
    match (&scanned.end, sealed) {
        (ScanEnd::Sealed { seal_offset, seal }, true) => {
            let content = usize::try_from(*seal_offset)
                .ok()
                .and_then(|end| bytes.get(SEGMENT_HEADER..end))
                .map(crc32fast::hash);
            if content != Some(seal.content_crc) {
                report.problem(path, *seal_offset, "seal checksum does not match the segment's bytes");
            }
            if seal.next_position != scanned.index.next_position() || seal.event_count != scanned.index.len() as u64 {
                report.problem(path, *seal_offset, "seal disagrees with the segment's events");
            }
            if let Some(at) = compare_index(&scanned) {
                report.problem(
                    &path.with_file_name(segment::index_file_name(base)),
                    at as u64,
                    "index file differs from the log at this byte of the .idx",
                );
            }
        }
        (ScanEnd::Clean { .. }, false) => {
            if let Some(at) = compare_index(&scanned) {
                report.problem(path, at as u64, "in-memory index differs from the log");
            }
        }
        // Reported above.
        (ScanEnd::Damaged { .. }, _) => {}
        (ScanEnd::Sealed { seal_offset, .. }, false) => {
            report.problem(path, *seal_offset, "the active segment is sealed")
        }
        (ScanEnd::Clean { .. }, true) => report.problem(path, bytes.len() as u64, "sealed segment has no seal"),
    }
}

fn check_checkpoint(report: &mut VerifyReport, path: &Path, c: &StreamsCheckpoint, revisions: &Revisions) {
    for what in checkpoint_problems(c, &revisions.next, revisions.gaps()) {
        report.problem(path, 0, what);
    }
}

/// How a checkpoint disagrees with the stream states of the log before its
/// `covered_position`: `next` holds each stream's next revision there, `gaps`
/// says whether positions were lost or removed before it. Shared with repair,
/// so that what verify reports, repair clears.
pub(crate) fn checkpoint_problems(c: &StreamsCheckpoint, next: &HashMap<String, u64>, gaps: bool) -> Vec<String> {
    // Removed or lost positions may take a stream's last events, or all of them,
    // out of the log; the checkpoint then knows more than the log shows.
    let mut problems = Vec::new();
    let mut names: Vec<_> = next.iter().collect();
    names.sort();
    for (name, next) in names {
        match c.streams.get(name.as_str()) {
            Some(s) if s.last_revision.saturating_add(1) == *next => {}
            Some(s) if gaps && s.last_revision.saturating_add(1) > *next => {}
            _ => problems.push(format!("stream {name:?} disagrees with the log")),
        }
    }
    if c.streams.len() < next.len() || (!gaps && c.streams.len() != next.len()) {
        problems.push("checkpoint lists streams the log does not have at its position".to_string());
    }
    problems
}

/// The first of [`checkpoint_problems`], if any.
pub(crate) fn checkpoint_disagreement(
    c: &StreamsCheckpoint,
    next: &HashMap<String, u64>,
    gaps: bool,
) -> Option<String> {
    checkpoint_problems(c, next, gaps).into_iter().next()
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    Some(
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len())),
    )
}
