//! The read paths of the log: by stream, by position and by filter (the
//! candidates of a filter are chosen in [`crate::log::candidates`], lookups
//! by id are in [`crate::log::ids`]).
//!
//! Reads take no lock while doing I/O and see only positions the writer has
//! published; damage a read-only open stepped around, or an event that fails
//! its checks, stops a read with its error, never with a short answer. This
//! module must never write.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{Personal, RecordedEvent};
use crate::format::index::hash_str;
use crate::format::record::{self, EventView, Frame};
use crate::format::subjects;
use crate::log::candidates::{Candidates, TypeWindows, candidates};
use crate::log::segments::SegRef;
use crate::log::state::Shared;
use crate::log::subjects::KeyState;
use crate::query::{Cancel, Direction, Filter, LogFrom, StreamFrom};
use crate::stream_metadata::{META_PREFIX, parse};

/// Whether a read applies stream metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visibility {
    /// Only events the stream's metadata lets readers see.
    Visible,
    /// Every stored event (for the write path's own checks).
    Raw,
}

/// What a read wants of the frame it decodes.
#[derive(Clone, Copy)]
pub(super) enum Want<'a> {
    /// Every event.
    Any,
    /// Events passing the filter.
    Filter(&'a Filter),
    /// Events of this stream (another stream with the same hash is skipped).
    Stream(&'a str),
    /// The event with this id (another id with the same index key is
    /// skipped) if its stream passes the check, made before its personal
    /// fields are opened.
    Id(&'a Uuid, &'a dyn Fn(&str) -> bool),
}

/// Where a read stopped short, before a position it could not read.
#[derive(Debug)]
pub(crate) struct Stop {
    /// The first position that could not be read.
    pub(crate) position: u64,
    /// The first position after the damage (where a reader that skips it goes on).
    pub(crate) resume: u64,
    /// Why.
    pub(crate) error: Error,
}

impl Shared {
    /// All segments, oldest first; the active one last.
    pub(crate) fn segments(&self) -> Vec<SegRef> {
        let now = self.segments.snapshot();
        let mut out: Vec<SegRef> = now.sealed.iter().cloned().map(SegRef::Sealed).collect();
        out.extend(now.active.map(SegRef::Active));
        out
    }

    /// Reads and decodes the frame at `loc = (position, offset, end)` of `seg`
    /// and checks it holds `position`; `None` if it is not what `want` asks for.
    /// A frame of the active segment inside `span` (see [`read_span`]) is
    /// taken from it rather than read.
    pub(super) fn read_at(
        &self,
        seg: &SegRef,
        loc: (u64, u64, u64),
        want: Want<'_>,
        span: Option<&(u64, Bytes)>,
    ) -> Result<Option<RecordedEvent>> {
        let (position, offset, end) = loc;
        let path = seg.path();
        if end == offset {
            // Positions sharing one frame: a repair's record of lost events.
            return Ok(None);
        }
        let len = end
            .checked_sub(offset)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l <= record::MAX_BODY + record::FRAME_HEADER)
            .ok_or_else(|| Error::corruption(path, offset, "index gives a bad frame range"))?;
        // A frame sliced out of a span shares its buffer: the event returned
        // copies its data and metadata, so that it keeps its own bytes alive
        // only, not the whole span.
        let in_span = match seg {
            SegRef::Active(_) => span.and_then(|(lo, b)| slice_of(b, *lo, offset, end)),
            SegRef::Sealed(_) => None,
        };
        let from_span = in_span.is_some();
        let frame: Bytes = match (seg, in_span) {
            (_, Some(frame)) => frame,
            (SegRef::Sealed(s), None) => s.range(offset, end, Some(&self.block_cache))?,
            (SegRef::Active(a), None) => {
                let mut buf = vec![0u8; len];
                a.file.read_exact_at(&mut buf, offset).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        Error::corruption(path, offset, "frame past the end of the segment")
                    }
                    _ => Error::io(format!("reading {}", path.display()), e),
                })?;
                Bytes::from(buf)
            }
        };
        let Some(view) = decode_event_at(&frame, path, offset, position)? else {
            return Ok(None);
        };
        let wanted = match want {
            Want::Any => true,
            Want::Filter(f) => f.matches(&view),
            Want::Stream(s) => s == view.stream,
            Want::Id(id, admit) => *id == view.id && admit(view.stream),
        };
        if !wanted {
            return Ok(None);
        }
        let mut ev = to_recorded(&view, (!from_span).then_some(&frame));
        if view.sealed {
            self.unseal(&mut ev, view.data, path, offset)?;
        }
        Ok(Some(ev))
    }

    /// Opens the sealed personal fields of `ev` (whose frame is at `offset`
    /// of `path`): decrypted under a live key, or erased if the key was
    /// shredded. A key the key store never heard of, or a tag that fails
    /// under a live key, is damage.
    pub(crate) fn unseal(&self, ev: &mut RecordedEvent, envelope: &[u8], path: &Path, offset: u64) -> Result<()> {
        let key_id = subjects::envelope_key_id(envelope)
            .ok_or_else(|| Error::corruption(path, offset, "sealed envelope shorter than its key id"))?;
        match self.subjects.key(&key_id) {
            KeyState::Live(key) => {
                let opened = subjects::open(&key, ev.id, envelope)
                    .map_err(|e| Error::corruption(path, offset, e.to_string()))?;
                ev.data = Bytes::from(opened.data);
                ev.metadata = Bytes::from(opened.metadata);
                ev.personal = Personal::Subject(opened.subject);
            }
            KeyState::Shredded => {
                ev.data = Bytes::new();
                ev.metadata = Bytes::new();
                ev.personal = Personal::Erased;
            }
            KeyState::Unknown => {
                return Err(Error::corruption(
                    path,
                    offset,
                    format!(
                        "event sealed under a key {} holds neither live nor shredded (the key store lost it)",
                        subjects::SUBJECTS_FILE
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Finds the segment holding `position`, with the list's index.
    fn locate(segs: &[SegRef], position: u64) -> Option<usize> {
        let i = segs.partition_point(|s| s.with(|l| l.base()) <= position);
        i.checked_sub(1)
    }

    /// Reads up to `limit` events of the global log.
    pub(crate) fn read_log(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_log_as(direction, from, limit, filter, Visibility::Visible)
    }

    /// Reads the global log; `Visibility::Raw` also returns events hidden by stream metadata.
    pub(crate) fn read_log_as(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
        visibility: Visibility,
    ) -> Result<Vec<RecordedEvent>> {
        // A read that would have to pass damage to answer fails with its error:
        // a short answer must never look like the end of the log.
        match self.read_log_stop(direction, from, limit, filter, visibility)? {
            (_, Some(stop)) => Err(stop.error),
            (out, None) => Ok(out),
        }
    }

    /// Reads the global log up to `limit` events, stopping before the first
    /// damaged position the read reaches (damage a read-only open stepped
    /// around, or an event that fails its checks): the events before it, and
    /// where and why it stopped.
    pub(crate) fn read_log_stop(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
        visibility: Visibility,
    ) -> Result<(Vec<RecordedEvent>, Option<Stop>)> {
        self.read_log_stop_within(
            direction,
            from,
            (limit, usize::MAX),
            filter,
            visibility,
            &Cancel::default(),
        )
    }

    /// Reads the visible global log up to `limit` events, and stops early once
    /// the events read hold `max_bytes` of data and metadata (with at least one
    /// event); fails at damage as [`Shared::read_log`] does.
    pub(crate) fn read_log_within(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_log_cancellable(direction, from, (limit, max_bytes), filter, &Cancel::default())
    }

    /// [`Shared::read_log_within`] (`limit` is the most events and the byte
    /// budget), which fails with [`Error::Cancelled`] as soon as `cancel`
    /// says so: it looks before each segment and each event it reads.
    pub(crate) fn read_log_cancellable(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: (usize, usize),
        filter: &Filter,
        cancel: &Cancel,
    ) -> Result<Vec<RecordedEvent>> {
        match self.read_log_stop_within(direction, from, limit, filter, Visibility::Visible, cancel)? {
            (_, Some(stop)) => Err(stop.error),
            (out, None) => Ok(out),
        }
    }

    /// [`Shared::read_log_stop`], which also stops once the events read hold
    /// `limit.1` bytes of data and metadata, and fails once `cancel` says so.
    pub(crate) fn read_log_stop_within(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: (usize, usize),
        filter: &Filter,
        visibility: Visibility,
        cancel: &Cancel,
    ) -> Result<(Vec<RecordedEvent>, Option<Stop>)> {
        self.read_log_stop_before(direction, from, limit, (filter, visibility, cancel), u64::MAX)
    }

    /// [`Shared::read_log_stop_within`] (`within` is the filter, the
    /// visibility and the cancellation signal) over the positions before
    /// `end` only: a forward read that returns fewer than `limit.0` events,
    /// within the byte budget and without a stop, has considered every
    /// position from its start up to `end` (or the head, if lower). Lets a
    /// reader bound the positions one call passes over, whatever the filter.
    pub(crate) fn read_log_stop_before(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: (usize, usize),
        within: (&Filter, Visibility, &Cancel),
        end: u64,
    ) -> Result<(Vec<RecordedEvent>, Option<Stop>)> {
        let (limit, max_bytes) = limit;
        if self.damage.is_empty() || limit == 0 {
            return self.read_log_range(direction, from, (limit, max_bytes), within, (0, end));
        }
        let start = match (from, direction) {
            (LogFrom::Start, Direction::Forward) => 0,
            (LogFrom::Start | LogFrom::End, Direction::Backward) => u64::MAX,
            (LogFrom::End, Direction::Forward) => return Ok((Vec::new(), None)),
            (LogFrom::Position(p), _) => p,
        };
        let stop_at = |d: &crate::log::damage::Damage| Stop {
            position: d.first_position,
            resume: d.end_position,
            error: d.error(),
        };
        if let Some(d) = self
            .damage_at(start)
            .filter(|_| start != u64::MAX && (direction == Direction::Backward || start < end))
        {
            return Ok((Vec::new(), Some(stop_at(d))));
        }
        let (bounds, damage) = match direction {
            Direction::Forward => match self.damage_ahead(start) {
                Some(d) => ((0, d.first_position), Some(d)),
                None => ((0, u64::MAX), None),
            },
            Direction::Backward => match self.damage_behind(start) {
                Some(d) => ((d.end_position, u64::MAX), Some(d)),
                None => ((0, u64::MAX), None),
            },
        };
        // Damage at or past `end` is not reached.
        let damage = damage.filter(|d| d.first_position < end);
        let bounds = (bounds.0, bounds.1.min(end));
        let (out, stop) = self.read_log_range(direction, from, (limit, max_bytes), within, bounds)?;
        let full = out.len() >= limit || payload_bytes(&out) >= max_bytes;
        let stop = match (stop, damage) {
            (Some(s), _) => Some(s),
            // Fewer than asked for: the read ran into the damage.
            (None, Some(d)) if !full => Some(stop_at(d)),
            (None, _) => None,
        };
        Ok((out, stop))
    }

    /// Reads the global log within the positions `[bounds.0, bounds.1)`, up
    /// to `limit.0` events or until they hold `limit.1` bytes of data and
    /// metadata, stopping before an event that fails its checks. `within`
    /// is the filter, the visibility, and the cancellation signal, looked at
    /// before each segment and each event read (a cancelled read fails).
    pub(crate) fn read_log_range(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: (usize, usize),
        within: (&Filter, Visibility, &Cancel),
        bounds: (u64, u64),
    ) -> Result<(Vec<RecordedEvent>, Option<Stop>)> {
        let (limit, max_bytes) = limit;
        let (filter, visibility, cancel) = within;
        let mut bytes = 0usize;
        let check = visibility == Visibility::Visible && !self.metadata.read().by_stream.is_empty();
        let now = self.options.clock.now_micros();
        let published = self.published().min(bounds.1);
        let mut out = Vec::new();
        if published == 0 || limit == 0 {
            return Ok((out, None));
        }
        let start = match (from, direction) {
            (LogFrom::Start, Direction::Forward) => 0,
            (LogFrom::Start | LogFrom::End, Direction::Backward) => published - 1,
            (LogFrom::End, Direction::Forward) => published,
            (LogFrom::Position(p), Direction::Forward) => p,
            (LogFrom::Position(p), Direction::Backward) => p.min(published - 1),
        };
        if direction == Direction::Forward && start >= published {
            return Ok((out, None));
        }
        let segs = self.segments();
        let Some(mut si) = Self::locate(&segs, start) else {
            return Ok((out, None));
        };
        let filtered = !filter.is_empty();
        // Candidates read so far, and how many of them were returned.
        let (mut examined, mut matched) = (0usize, 0usize);
        loop {
            cancel.check()?;
            let seg = &segs[si];
            // This segment's candidate positions, from its indexes; read lazily,
            // a chunk at a time, so that a read stops as soon as it has `limit`.
            let mut positions: Box<dyn Iterator<Item = u64>> = seg.with(|l| {
                let lo = l.base().max(bounds.0);
                let hi = l.next_position().min(published);
                if hi <= lo {
                    return Box::new(std::iter::empty()) as Box<dyn Iterator<Item = u64>>;
                }
                if let Some((min_ts, max_ts)) = l.time_range()
                    && (filter.since_micros.is_some_and(|s| max_ts < s)
                        || filter.until_micros.is_some_and(|u| min_ts >= u))
                {
                    return Box::new(std::iter::empty());
                }
                match (candidates(l, filter, &self.meta_fields), direction) {
                    (Candidates::List(c), Direction::Forward) => {
                        Box::new(c.into_iter().filter(move |p| *p >= start.max(lo) && *p < hi))
                    }
                    (Candidates::List(c), Direction::Backward) => {
                        Box::new(c.into_iter().rev().filter(move |p| *p <= start && *p >= lo && *p < hi))
                    }
                    (Candidates::All, Direction::Forward) => Box::new(start.max(lo)..hi),
                    (Candidates::All, Direction::Backward) => Box::new((lo..=start.min(hi - 1)).rev()),
                    (Candidates::Types { hashes, matched }, _) => {
                        let (from, to, forward) = match direction {
                            Direction::Forward => (start.max(lo), hi, true),
                            Direction::Backward => (lo, start.saturating_add(1).min(hi), false),
                        };
                        // Wide enough for the events still wanted at the
                        // segment's share of matches, with a margin.
                        let need = u64::try_from(limit - out.len()).unwrap_or(u64::MAX);
                        let per_match = (hi - l.base()).div_ceil(matched.max(1));
                        let width = need.saturating_mul(per_match).saturating_add(need / 4);
                        Box::new(TypeWindows::new(seg.clone(), hashes, from, to, forward, width))
                    }
                }
            });
            // Candidates from a section that failed its first-use check would be short.
            seg.index_damage()?;
            let want = if filtered { Want::Filter(filter) } else { Want::Any };
            loop {
                // As many candidates as the events still wanted need, at the
                // share of candidates that matched so far (a filter the
                // indexes narrow only partly matches a few in ten).
                let need = limit - out.len();
                let take = if examined > 0 {
                    need.saturating_mul(examined) / matched.max(1)
                } else {
                    need
                };
                let chunk: Vec<u64> = positions.by_ref().take(take.clamp(need.min(256), 256)).collect();
                if chunk.is_empty() {
                    break;
                }
                examined = examined.saturating_add(chunk.len());
                let plan: Vec<(u64, u64, u64)> = seg.with(|l| {
                    let admitted: Vec<u64> = chunk
                        .iter()
                        .copied()
                        .filter(|p| l.time_bounds(*p).is_some_and(|(lo, hi)| filter.may_admit_times(lo, hi)))
                        .collect();
                    let found = l.locations(&admitted);
                    admitted
                        .iter()
                        .zip(found)
                        .filter_map(|(p, loc)| loc.map(|(o, e)| (*p, o, e)))
                        .collect()
                });
                seg.index_damage()?;
                let span = read_span(seg, plan.iter().map(|(_, o, e)| (*o, *e)));
                for loc in plan {
                    cancel.check()?;
                    let ev = match self.read_at(seg, loc, want, span.as_ref()) {
                        Ok(Some(ev)) => ev,
                        Ok(None) => continue,
                        Err(error) if error.is_corruption() => {
                            let stop = Stop {
                                position: loc.0,
                                resume: loc.0.saturating_add(1),
                                error,
                            };
                            return Ok((out, Some(stop)));
                        }
                        Err(e) => return Err(e),
                    };
                    if check && !self.is_visible(&ev, now) {
                        continue;
                    }
                    bytes = bytes.saturating_add(ev.data.len() + ev.metadata.len());
                    matched += 1;
                    out.push(ev);
                    if out.len() >= limit || bytes >= max_bytes {
                        return Ok((out, None));
                    }
                }
            }
            match direction {
                Direction::Forward => {
                    si += 1;
                    if si >= segs.len() {
                        return Ok((out, None));
                    }
                }
                Direction::Backward => {
                    if si == 0 {
                        return Ok((out, None));
                    }
                    si -= 1;
                }
            }
        }
    }

    /// Reads up to `limit` events of one stream.
    pub(crate) fn read_stream(
        &self,
        stream: &str,
        direction: Direction,
        from: StreamFrom,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_stream_within(stream, direction, from, limit, usize::MAX)
    }

    /// Reads up to `limit` events of one stream, and stops early once the
    /// events read hold `max_bytes` of data and metadata (with at least one).
    pub(crate) fn read_stream_within(
        &self,
        stream: &str,
        direction: Direction,
        from: StreamFrom,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let mut bytes = 0usize;
        let state = self.stream_state(stream).ok_or_else(|| self.stream_not_found(stream))?;
        let mut out = Vec::new();
        let start = match (from, direction) {
            (StreamFrom::Start, Direction::Forward) => 0,
            (StreamFrom::Start | StreamFrom::End, Direction::Backward) => state.last_revision,
            (StreamFrom::End, Direction::Forward) => state.last_revision,
            (StreamFrom::Revision(r), Direction::Forward) => r,
            (StreamFrom::Revision(r), Direction::Backward) => r.min(state.last_revision),
        };
        if limit == 0 || (direction == Direction::Forward && start > state.last_revision) {
            return Ok(out);
        }
        let hash = hash_str(stream);
        let segs = self.segments();
        let forward = direction == Direction::Forward;
        let order: Box<dyn Iterator<Item = &SegRef>> = if forward {
            Box::new(segs.iter())
        } else {
            // Backward reads can skip segments that start after the stream's last event.
            Box::new(
                segs.iter()
                    .rev()
                    .filter(|s| s.with(|l| l.base()) <= state.last_position),
            )
        };
        let mut next_rev = start;
        // Revisions hidden by damage (a read-only open): a read that would have
        // to pass them fails with the damage's error, never answers short.
        let hidden = |position: u64| match self.damage_ahead(position) {
            Some(d) => Err(d.error()),
            None => Err(Error::corruption(&self.dir, 0, "revisions are missing")),
        };
        for seg in order {
            let plan: Vec<(u64, u64, u64, u64)> = seg.with(|l| {
                if !l.may_contain_stream(hash) {
                    return Vec::new();
                }
                let entries = l.stream_entries(stream, next_rev, forward, limit - out.len());
                let positions: Vec<u64> = entries.iter().map(|(_, p)| *p).collect();
                entries
                    .iter()
                    .zip(l.locations(&positions))
                    .filter_map(|((r, p), loc)| loc.map(|(o, e)| (*r, *p, o, e)))
                    .collect()
            });
            seg.index_damage()?;
            let span = read_span(seg, plan.iter().map(|(_, _, o, e)| (*o, *e)));
            for (rev, p, off, end) in plan {
                let skipped = if forward { rev > next_rev } else { rev < next_rev };
                if skipped && !self.damage.is_empty() {
                    let from = out.last().map_or(0, |e: &RecordedEvent| e.position);
                    return hidden(from);
                }
                if let Some(ev) = self.read_at(seg, (p, off, end), Want::Stream(stream), span.as_ref())? {
                    if ev.revision != rev {
                        return Err(Error::corruption(seg.path(), off, "revision differs from the index"));
                    }
                    next_rev = if forward {
                        rev.saturating_add(1)
                    } else {
                        rev.saturating_sub(1)
                    };
                    bytes = bytes.saturating_add(ev.data.len() + ev.metadata.len());
                    out.push(ev);
                    if out.len() >= limit || bytes >= max_bytes || (!forward && rev == 0) {
                        return Ok(out);
                    }
                }
            }
        }
        let unfinished = if forward {
            next_rev <= state.last_revision
        } else {
            out.last().is_none_or(|e| e.revision > 0)
        };
        if unfinished && !self.damage.is_empty() {
            let from = out.last().map_or(0, |e| e.position);
            return hidden(from);
        }
        Ok(out)
    }

    /// True unless the event's stream metadata hides it (deleted, truncated, too old, too many).
    pub(crate) fn is_visible(&self, ev: &RecordedEvent, now: i64) -> bool {
        let meta = self.metadata.read();
        match meta.by_stream.get(&ev.stream) {
            None => true,
            Some(m) => {
                let last = self.stream_state(&ev.stream).map_or(ev.revision, |s| s.last_revision);
                m.is_visible(ev.revision, ev.timestamp_micros, last, now)
            }
        }
    }

    /// Reads a stream as its metadata allows: a deleted stream is an error, and
    /// hidden events are skipped (the read goes on until `limit` visible ones).
    pub(crate) fn read_stream_visible(
        &self,
        stream: &str,
        direction: Direction,
        from: StreamFrom,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_stream_visible_within(stream, direction, from, limit, usize::MAX)
    }

    /// [`Shared::read_stream_visible`], which stops early once the visible
    /// events read hold `max_bytes` of data and metadata (with at least one).
    pub(crate) fn read_stream_visible_within(
        &self,
        stream: &str,
        direction: Direction,
        from: StreamFrom,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let Some(meta) = self.metadata.read().by_stream.get(stream).cloned() else {
            return self.read_stream_within(stream, direction, from, limit, max_bytes);
        };
        let last = self
            .stream_state(stream)
            .ok_or_else(|| self.stream_not_found(stream))?
            .last_revision;
        if meta.hides_everything(last) {
            return Err(Error::StreamDeleted(stream.to_string()));
        }
        let first = meta.first_visible(last);
        let now = self.options.clock.now_micros();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut from = from;
        loop {
            let (start, stop) = match (direction, from) {
                (Direction::Forward, StreamFrom::Start) => (first, false),
                (Direction::Forward, StreamFrom::Revision(r)) => (r.max(first), false),
                (Direction::Forward, StreamFrom::End) => (last.max(first), false),
                (Direction::Backward, StreamFrom::Start | StreamFrom::End) => (last, false),
                (Direction::Backward, StreamFrom::Revision(r)) => (r.min(last), r < first),
            };
            if stop || limit == out.len() {
                return Ok(out);
            }
            let asked = (limit - out.len()).min(1000);
            let budget = max_bytes.saturating_sub(bytes).max(1);
            let batch = self.read_stream_within(stream, direction, StreamFrom::Revision(start), asked, budget)?;
            let Some(edge) = batch.last().map(|e| e.revision) else {
                return Ok(out);
            };
            let n = batch.len();
            // Short of both the count and the budget: the end of the stream.
            let at_end = n < asked && payload_bytes(&batch) < budget;
            for e in batch {
                if meta.is_visible(e.revision, e.timestamp_micros, last, now) {
                    bytes = bytes.saturating_add(e.data.len() + e.metadata.len());
                    out.push(e);
                }
            }
            if at_end || out.len() >= limit || bytes >= max_bytes {
                return Ok(out);
            }
            from = match direction {
                Direction::Forward => StreamFrom::Revision(edge + 1),
                Direction::Backward if edge == 0 || edge <= first => return Ok(out),
                Direction::Backward => StreamFrom::Revision(edge - 1),
            };
        }
    }

    /// Loads the metadata of every stream into the cache (at open).
    pub(crate) fn load_metadata(&self) -> Result<()> {
        let names: Vec<String> = self.streams.read().names_with_prefix(META_PREFIX);
        let mut cache = HashMap::new();
        for meta_stream in names {
            if let Some(last) = self
                .read_stream(&meta_stream, Direction::Backward, StreamFrom::End, 1)?
                .pop()
            {
                let meta = parse(&last)?;
                cache.insert(meta_stream[META_PREFIX.len()..].to_string(), meta);
            }
        }
        self.metadata.write().by_stream = cache;
        Ok(())
    }

    /// Reads the event at `position`.
    pub(crate) fn read_position(&self, position: u64) -> Result<Option<RecordedEvent>> {
        Ok(self
            .read_log_as(
                Direction::Forward,
                LogFrom::Position(position),
                1,
                &Filter::all(),
                Visibility::Raw,
            )?
            .into_iter()
            .find(|e| e.position == position))
    }

    /// First event at a position after `after` matching `filter`, if any.
    pub(crate) fn first_match_after(&self, filter: &Filter, after: Option<u64>) -> Result<Option<u64>> {
        // Nothing comes after the last possible position.
        let Some(from) = after.map_or(Some(0), |a| a.checked_add(1)) else {
            return Ok(None);
        };
        Ok(self
            .read_log_as(Direction::Forward, LogFrom::Position(from), 1, filter, Visibility::Raw)?
            .first()
            .map(|e| e.position))
    }
}

/// Most bytes of the active segment [`read_span`] reads at once.
const SPAN_MAX: u64 = 1 << 20;

/// One positional read of the active segment covering the frames `(offset,
/// end)` of a chunk of a read, when there are several and they lie close
/// together (at most [`SPAN_MAX`] bytes, of which no more than 64 KiB plus
/// the frames' own length lies between them): the first offset and the
/// bytes, so that each frame costs no read of its own (a scan, a page of a
/// busy pattern, a stream appended in batches). `None` otherwise, or if the
/// read fails: each frame is then read alone and reports its own error.
fn read_span(seg: &SegRef, frames: impl Iterator<Item = (u64, u64)>) -> Option<(u64, Bytes)> {
    let SegRef::Active(a) = seg else {
        return None;
    };
    let (mut lo, mut hi, mut own, mut n) = (u64::MAX, 0u64, 0u64, 0usize);
    for (offset, end) in frames.filter(|(o, e)| e > o) {
        lo = lo.min(offset);
        hi = hi.max(end);
        own = own.saturating_add(end - offset);
        n += 1;
    }
    let len = hi.checked_sub(lo)?;
    if n < 2 || len > SPAN_MAX || len > own.saturating_mul(2).saturating_add(64 * 1024) {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    a.file.read_exact_at(&mut buf, lo).ok()?;
    Some((lo, Bytes::from(buf)))
}

/// The bytes `offset..end` of a segment out of `bytes`, which hold its bytes
/// from `lo`; `None` unless they are all there.
fn slice_of(bytes: &Bytes, lo: u64, offset: u64, end: u64) -> Option<Bytes> {
    let start = usize::try_from(offset.checked_sub(lo)?).ok()?;
    let stop = usize::try_from(end.checked_sub(lo)?).ok()?;
    (start <= stop && stop <= bytes.len()).then(|| bytes.slice(start..stop))
}

/// Decodes the event frame in `bytes` (read from `offset` of `path`) and checks
/// its position; `None` if a repair recorded that position as lost.
pub(crate) fn decode_event_at<'a>(
    bytes: &'a [u8],
    path: &Path,
    offset: u64,
    position: u64,
) -> Result<Option<EventView<'a>>> {
    match record::decode_frame(bytes) {
        // The range may end with the next group's frame; the event's own CRC covers it alone.
        Ok((Frame::Event(v), len)) if len <= bytes.len() => {
            if v.position != position {
                return Err(Error::corruption(
                    path,
                    offset,
                    format!("frame holds position {}, index says {position}", v.position),
                ));
            }
            Ok(Some(v))
        }
        Ok((Frame::Lost(l), _)) if (l.first_position..l.first_position.saturating_add(l.count)).contains(&position) => {
            Ok(None)
        }
        Ok(_) => Err(Error::corruption(path, offset, "frame is not the indexed event")),
        Err(e) => Err(Error::corruption(path, offset, e.to_string())),
    }
}

/// Turns a borrowed event into an owned one; data and metadata share `frame`'s
/// memory when the view was decoded from it, and are copied otherwise.
pub(crate) fn to_recorded(v: &EventView<'_>, frame: Option<&Bytes>) -> RecordedEvent {
    let share = |part: &[u8]| match frame {
        Some(f) if !part.is_empty() => f.slice_ref(part),
        _ => Bytes::copy_from_slice(part),
    };
    // A sealed event's data field is its envelope, never returned as data.
    let data = if v.sealed { Bytes::new() } else { share(v.data) };
    RecordedEvent {
        stream: v.stream.to_string(),
        revision: v.revision,
        position: v.position,
        id: v.id,
        event_type: v.event_type.to_string(),
        content_type: v.content_type,
        data,
        metadata: share(v.metadata),
        tags: v.tags.iter().map(|t| t.to_string()).collect(),
        timestamp_micros: v.timestamp,
        personal: Personal::Plain,
    }
}

/// Bytes of data and metadata of `events`.
pub(crate) fn payload_bytes(events: &[RecordedEvent]) -> usize {
    events.iter().map(|e| e.data.len() + e.metadata.len()).sum()
}
