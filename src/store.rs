//! The public handle ([`Store`]) and the read paths.
//!
//! This module owns the shared in-memory state (sealed segments, the active
//! segment's index, stream states) and every read: by stream, by position, by
//! filter and by id. Reads never take a lock while doing I/O and only see
//! positions the writer has published. It must never write to the log: appends
//! go through the write path ([`crate::log::writer`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{self, AppendResult, EventData, ExpectedVersion, RecordedEvent, StreamInfo};
use crate::features::subscription::{ReplayOptions, ReplayReport, SubscribeFrom, Subscription, SubscriptionOptions};
use crate::format::checkpoint::StreamState;
use crate::format::index::{Lookup, MemIndex, SegmentIndex, hash_str};
use crate::format::record::{self, EventView, Frame};
use crate::log::writer::{AppendRequest, Committer};
use crate::options::Options;
use crate::query::{AppendCondition, Filter};
use crate::storage::{FsStorage, LockGuard, Mapped, Storage, StorageFile};

/// Direction of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// Where a stream read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrom {
    /// The first event (forward) or the last one (backward), whichever the direction starts at.
    Start,
    /// The stream's last event.
    End,
    /// This revision.
    Revision(u64),
}

/// Where a read of the global log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFrom {
    /// Position 0 (forward) or the last event (backward).
    Start,
    /// The last event.
    End,
    /// This position (inclusive).
    Position(u64),
}

/// A sealed segment: its mapped bytes and its mapped index.
pub(crate) struct SealedSegment {
    pub(crate) path: PathBuf,
    /// The whole file; events read from an uncompressed one share these bytes (no copy).
    pub(crate) bytes: Bytes,
    pub(crate) index: SegmentIndex,
    /// The block table, if the file is compressed.
    pub(crate) compressed: Option<crate::maintenance::compression::Compressed>,
}

impl SealedSegment {
    /// A sealed segment over its file's bytes and its index; reads the block
    /// table if the header says the file is compressed.
    pub(crate) fn new(
        path: PathBuf,
        bytes: Bytes,
        index: SegmentIndex,
        dict: Option<&Arc<crate::maintenance::compression::Dictionary>>,
    ) -> Result<Self> {
        let header = crate::format::segment::SegmentHeader::decode(&bytes, &path)?;
        let compressed = if header.compressed {
            Some(crate::maintenance::compression::Compressed::open(
                bytes.clone(),
                &path,
                dict,
            )?)
        } else {
            None
        };
        Ok(SealedSegment {
            path,
            bytes,
            index,
            compressed,
        })
    }

    /// The logical bytes `[offset, end)` (cut at a block's end when compressed:
    /// a frame starting at `offset` is always whole).
    pub(crate) fn range(&self, offset: u64, end: u64) -> Result<Bytes> {
        match &self.compressed {
            Some(c) => c.range(offset, end, &self.path),
            None => {
                if end > self.bytes.len() as u64 || offset > end {
                    return Err(Error::corruption(
                        &self.path,
                        offset,
                        "frame past the end of the segment",
                    ));
                }
                Ok(self.bytes.slice(offset as usize..end as usize))
            }
        }
    }

    /// The whole segment as written before compression.
    pub(crate) fn logical(&self) -> Result<Bytes> {
        match &self.compressed {
            Some(c) => Ok(Bytes::from(c.logical(&self.path)?)),
            None => Ok(self.bytes.clone()),
        }
    }
}

/// Owner of a mapping, so that the mapped bytes can back a [`Bytes`].
struct MapOwner(Mapped);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// Bytes backed by a mapping, kept alive as long as any slice of them is.
pub(crate) fn mapped_bytes(map: Mapped) -> Bytes {
    Bytes::from_owner(MapOwner(map))
}

/// The segment being appended to.
pub(crate) struct ActiveSegment {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn StorageFile>,
    pub(crate) index: RwLock<MemIndex>,
}

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
enum Want<'a> {
    /// Every event.
    Any,
    /// Events passing the filter.
    Filter(&'a Filter),
    /// Events of this stream (another stream with the same hash is skipped).
    Stream(&'a str),
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

/// State shared by readers and the writer.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) options: Options,
    pub(crate) sealed: RwLock<Arc<Vec<Arc<SealedSegment>>>>,
    pub(crate) active: RwLock<Arc<ActiveSegment>>,
    pub(crate) streams: RwLock<HashMap<Box<str>, StreamState>>,
    /// Position after the last published event.
    pub(crate) next_position: AtomicU64,
    /// Set, once and for good, when the writer stopped after an error it cannot
    /// recover from (a failed sync, or a failed write of acknowledged bytes).
    /// Every write and sync site checks it; [`Shared::poison`] is the only setter.
    pub(crate) failure: Mutex<Option<String>>,
    /// Metadata of the streams that have some.
    pub(crate) metadata: RwLock<crate::features::metadata::MetadataCache>,
    /// Serialises metadata writes.
    pub(crate) metadata_writes: Mutex<()>,
    /// Serialises scavenges.
    pub(crate) scavenging: Mutex<()>,
    /// The store's compression dictionary, once trained.
    pub(crate) dictionary: RwLock<Option<Arc<crate::maintenance::compression::Dictionary>>>,
    /// Wakes subscribers on each publication and when the store closes.
    pub(crate) notifier: crate::features::subscription::Notifier,
    /// The durable-end checkpoint as last read or written (`durable.chk`), so
    /// that a close with nothing new to record writes nothing.
    pub(crate) durable_mark: Mutex<Option<crate::format::checkpoint::DurableMark>>,
    /// Torn tails that this open cut off the last segment.
    pub(crate) torn_at_open: Vec<crate::log::recovery::TornTail>,
    /// Damage a read-only open stepped around, by position.
    pub(crate) damage: Vec<crate::log::recovery::Damage>,
    pub(crate) _lock: Box<dyn LockGuard>,
}

/// One segment, sealed or active, as a read sees it.
enum SegRef {
    Sealed(Arc<SealedSegment>),
    Active(Arc<ActiveSegment>),
}

impl SegRef {
    fn with<R>(&self, f: impl FnOnce(&dyn Lookup) -> R) -> R {
        match self {
            SegRef::Sealed(s) => f(&s.index),
            SegRef::Active(a) => f(&*a.index.read()),
        }
    }
    fn path(&self) -> &Path {
        match self {
            SegRef::Sealed(s) => &s.path,
            SegRef::Active(a) => &a.path,
        }
    }
}

impl Shared {
    /// All segments, oldest first; the active one last.
    fn segments(&self) -> Vec<SegRef> {
        // Active first, then sealed: a rotation in between only adds the old
        // active segment to the sealed list, which we then see twice at most
        // for positions it does not hold.
        let active = self.active.read().clone();
        let sealed = self.sealed.read().clone();
        let active_base = active.index.read().base();
        let mut out: Vec<SegRef> = sealed
            .iter()
            .filter(|s| s.index.base() < active_base)
            .cloned()
            .map(SegRef::Sealed)
            .collect();
        out.push(SegRef::Active(active));
        out
    }

    /// Latches the writer's failure (the first cause wins) and returns the error
    /// every later append gets.
    pub(crate) fn poison(&self, cause: String) -> Error {
        let mut f = self.failure.lock();
        let cause = f.get_or_insert(cause).clone();
        Error::Poisoned { cause }
    }

    /// The latched failure as an error, if the writer stopped.
    pub(crate) fn poisoned(&self) -> Option<Error> {
        self.failure.lock().clone().map(|cause| Error::Poisoned { cause })
    }

    /// The damage hiding `position`, if a read-only open found some there.
    pub(crate) fn damage_at(&self, position: u64) -> Option<&crate::log::recovery::Damage> {
        self.damage
            .iter()
            .find(|d| d.first_position <= position && position < d.end_position)
    }

    /// A stream that is not found, or, in a damaged store, that may be hidden by the damage.
    fn stream_not_found(&self, stream: &str) -> Error {
        match self.damage.first() {
            Some(d) => d.error(),
            None => Error::StreamNotFound(stream.to_string()),
        }
    }

    /// The first damage a forward read from `start` would step over, if any.
    fn damage_ahead(&self, start: u64) -> Option<&crate::log::recovery::Damage> {
        self.damage
            .iter()
            .filter(|d| d.end_position > start)
            .min_by_key(|d| d.first_position)
    }

    /// The last damage a backward read from `start` would step over, if any.
    fn damage_behind(&self, start: u64) -> Option<&crate::log::recovery::Damage> {
        self.damage
            .iter()
            .filter(|d| d.first_position <= start)
            .max_by_key(|d| d.first_position)
    }

    pub(crate) fn published(&self) -> u64 {
        self.next_position.load(Ordering::Acquire)
    }

    pub(crate) fn stream_state(&self, stream: &str) -> Option<StreamState> {
        self.streams.read().get(stream).copied()
    }

    /// Reads and decodes the frame at `loc = (position, offset, end)` of `seg`
    /// and checks it holds `position`; `None` if it is not what `want` asks for.
    fn read_at(&self, seg: &SegRef, loc: (u64, u64, u64), want: Want<'_>) -> Result<Option<RecordedEvent>> {
        let (position, offset, end) = loc;
        let path = seg.path();
        if end == offset {
            // Positions sharing one frame: a repair's record of lost events.
            return Ok(None);
        }
        let len = end
            .checked_sub(offset)
            .filter(|l| *l as usize <= record::MAX_BODY + record::FRAME_HEADER)
            .ok_or_else(|| Error::corruption(path, offset, "index gives a bad frame range"))?;
        let frame: Bytes = match seg {
            SegRef::Sealed(s) => s.range(offset, end)?,
            SegRef::Active(a) => {
                let mut buf = vec![0u8; len as usize];
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
        };
        Ok(wanted.then(|| to_recorded(&view, Some(&frame))))
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
        if self.damage.is_empty() || limit == 0 {
            return self.read_log_range(direction, from, limit, filter, visibility, (0, u64::MAX));
        }
        let start = match (from, direction) {
            (LogFrom::Start, Direction::Forward) => 0,
            (LogFrom::Start | LogFrom::End, Direction::Backward) => u64::MAX,
            (LogFrom::End, Direction::Forward) => return Ok((Vec::new(), None)),
            (LogFrom::Position(p), _) => p,
        };
        let stop_at = |d: &crate::log::recovery::Damage| Stop {
            position: d.first_position,
            resume: d.end_position,
            error: d.error(),
        };
        if let Some(d) = self.damage_at(start).filter(|_| start != u64::MAX) {
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
        let (out, stop) = self.read_log_range(direction, from, limit, filter, visibility, bounds)?;
        let stop = match (stop, damage) {
            (Some(s), _) => Some(s),
            // Fewer than asked for: the read ran into the damage.
            (None, Some(d)) if out.len() < limit => Some(stop_at(d)),
            (None, _) => None,
        };
        Ok((out, stop))
    }

    /// Reads the global log within the positions `[bounds.0, bounds.1)`,
    /// stopping before an event that fails its checks.
    fn read_log_range(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
        visibility: Visibility,
        bounds: (u64, u64),
    ) -> Result<(Vec<RecordedEvent>, Option<Stop>)> {
        let check = visibility == Visibility::Visible && !self.metadata.read().by_stream.is_empty();
        let now = crate::features::metadata::now();
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
        loop {
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
                match (candidates(l, filter), direction) {
                    (Some(c), Direction::Forward) => {
                        Box::new(c.into_iter().filter(move |p| *p >= start.max(lo) && *p < hi))
                    }
                    (Some(c), Direction::Backward) => {
                        Box::new(c.into_iter().rev().filter(move |p| *p <= start && *p >= lo && *p < hi))
                    }
                    (None, Direction::Forward) => Box::new(start.max(lo)..hi),
                    (None, Direction::Backward) => Box::new((lo..=start.min(hi - 1)).rev()),
                }
            });
            let want = if filtered { Want::Filter(filter) } else { Want::Any };
            loop {
                let chunk: Vec<u64> = positions.by_ref().take((limit - out.len()).clamp(1, 256)).collect();
                if chunk.is_empty() {
                    break;
                }
                let plan: Vec<(u64, u64, u64)> = seg.with(|l| {
                    chunk
                        .iter()
                        .filter(|p| l.timestamp(**p).is_some_and(|ts| filter.admits_time(ts)))
                        .filter_map(|p| l.location(*p).map(|(o, e)| (*p, o, e)))
                        .collect()
                });
                for loc in plan {
                    let ev = match self.read_at(seg, loc, want) {
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
                    out.push(ev);
                    if out.len() >= limit {
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
                l.stream_entries(hash, next_rev, forward, limit - out.len())
                    .into_iter()
                    .filter_map(|(r, p)| l.location(p).map(|(o, e)| (r, p, o, e)))
                    .collect()
            });
            for (rev, p, off, end) in plan {
                let skipped = if forward { rev > next_rev } else { rev < next_rev };
                if skipped && !self.damage.is_empty() {
                    let from = out.last().map_or(0, |e: &RecordedEvent| e.position);
                    return hidden(from);
                }
                if let Some(ev) = self.read_at(seg, (p, off, end), Want::Stream(stream))? {
                    if ev.revision != rev {
                        return Err(Error::corruption(seg.path(), off, "revision differs from the index"));
                    }
                    next_rev = if forward {
                        rev.saturating_add(1)
                    } else {
                        rev.saturating_sub(1)
                    };
                    out.push(ev);
                    if out.len() >= limit || (!forward && rev == 0) {
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
        let Some(meta) = self.metadata.read().by_stream.get(stream).cloned() else {
            return self.read_stream(stream, direction, from, limit);
        };
        let last = self
            .stream_state(stream)
            .ok_or_else(|| self.stream_not_found(stream))?
            .last_revision;
        if meta.hides_everything(last) {
            return Err(Error::StreamDeleted(stream.to_string()));
        }
        let first = meta.first_visible(last);
        let now = crate::features::metadata::now();
        let mut out = Vec::new();
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
            let batch = self.read_stream(
                stream,
                direction,
                StreamFrom::Revision(start),
                (limit - out.len()).min(1000),
            )?;
            let Some(edge) = batch.last().map(|e| e.revision) else {
                return Ok(out);
            };
            let n = batch.len();
            out.extend(
                batch
                    .into_iter()
                    .filter(|e| meta.is_visible(e.revision, e.timestamp_micros, last, now)),
            );
            if n < (limit - out.len()).min(1000) || out.len() >= limit {
                return Ok(out);
            }
            from = match direction {
                Direction::Forward => StreamFrom::Revision(edge + 1),
                Direction::Backward if edge == 0 || edge <= first => return Ok(out),
                Direction::Backward => StreamFrom::Revision(edge - 1),
            };
        }
    }

    /// Position of the event with this id, if stored.
    pub(crate) fn find_id(&self, id: &Uuid) -> Option<u64> {
        self.segments().iter().rev().find_map(|s| s.with(|l| l.find_id(id)))
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
        let from = after.map_or(0, |a| a + 1);
        Ok(self
            .read_log_as(Direction::Forward, LogFrom::Position(from), 1, filter, Visibility::Raw)?
            .first()
            .map(|e| e.position))
    }
}

/// Candidate positions of a segment for a filter, from the indexes; `None` means every position.
fn candidates(l: &dyn Lookup, f: &Filter) -> Option<Vec<u64>> {
    let mut found: Option<Vec<u64>> = None;
    if !f.types.is_empty() {
        let mut all: Vec<u64> = f.types.iter().flat_map(|t| l.type_positions(hash_str(t))).collect();
        all.sort_unstable();
        all.dedup();
        found = Some(all);
    }
    // Every tag must be present: intersect with each tag's list.
    for t in &f.tags {
        let list = l.tag_positions(hash_str(t));
        found = Some(match found {
            None => list,
            Some(mut c) => {
                c.retain(|p| list.binary_search(p).is_ok());
                c
            }
        });
    }
    if found.is_some() {
        return found;
    }
    if let Some(prefix) = &f.stream_prefix {
        let mut all = Vec::new();
        for (name, s) in l.streams() {
            if name.starts_with(prefix.as_str()) {
                let n = s.last_revision.saturating_sub(s.first_revision).saturating_add(1) as usize;
                all.extend(
                    l.stream_entries(hash_str(&name), s.first_revision, true, n)
                        .into_iter()
                        .map(|(_, p)| p),
                );
            }
        }
        all.sort_unstable();
        all.dedup();
        return Some(all);
    }
    None
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
    RecordedEvent {
        stream: v.stream.to_string(),
        revision: v.revision,
        position: v.position,
        id: v.id,
        event_type: v.event_type.to_string(),
        content_type: v.content_type,
        data: share(v.data),
        metadata: share(v.metadata),
        tags: v.tags.iter().map(|t| t.to_string()).collect(),
        timestamp_micros: v.timestamp,
    }
}

/// An open event store. Cheap to share between threads (`&Store` is enough to append and read).
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    /// The write path; `None` when the store is open for reading only.
    committer: Option<Committer>,
    /// Why the store is read-only, if it is.
    read_only: Option<String>,
    closed: Mutex<bool>,
    /// Background maintenance threads (scavenger, compressor) and their stop signals.
    maintenance: Mutex<Vec<(crossbeam_channel::Sender<()>, std::thread::JoinHandle<()>)>>,
    groups: crate::features::persistent::Groups,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) a store in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_with(Arc::new(FsStorage), dir, options)
    }

    /// Opens (or creates) a store on the given storage.
    pub fn open_with(storage: Arc<dyn Storage>, dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        options.validate()?;
        let shared = Arc::new(crate::log::recovery::open(
            storage,
            dir.as_ref(),
            options,
            crate::log::recovery::Access::ReadWrite,
        )?);
        let committer = Committer::new(shared.clone())?;
        let store = Self::assemble(shared, Some(committer), None)?;
        store.start_maintenance()?;
        Ok(store)
    }

    /// A store over recovered state, its stream metadata loaded.
    fn assemble(shared: Arc<Shared>, committer: Option<Committer>, read_only: Option<String>) -> Result<Store> {
        let store = Store {
            shared,
            committer,
            read_only,
            closed: Mutex::new(false),
            maintenance: Mutex::new(Vec::new()),
            groups: Default::default(),
        };
        store.load_metadata()?;
        Ok(store)
    }

    /// Opens an existing store for reading only, on the real file system; see
    /// [`Store::open_read_only_with`].
    pub fn open_read_only(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_read_only_with(Arc::new(FsStorage), dir, options)
    }

    /// Opens an existing store for reading only: no lock is taken and nothing is
    /// written, so it works on a read-only mount and beside the process that
    /// holds the store (a running server). It sees the acknowledged appends
    /// present when it opened (whole appends only) and nothing later. Damage is
    /// stepped around, not refused: reads that touch it fail with
    /// [`Error::Corruption`] naming it ([`Store::damage`] lists it), every other
    /// read works. Appends fail with [`Error::ReadOnly`].
    pub fn open_read_only_with(storage: Arc<dyn Storage>, dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        options.validate()?;
        let shared = Arc::new(crate::log::recovery::open(
            storage,
            dir.as_ref(),
            options,
            crate::log::recovery::Access::ReadOnly,
        )?);
        let reason = match shared.damage.first() {
            Some(d) => format!(
                "it is damaged and open degraded, for reads of the intact data only ({}); run `annal repair`",
                d.error()
            ),
            None => "it was opened for reading only".to_string(),
        };
        Self::assemble(shared, None, Some(reason))
    }

    /// Opens a store for writing, or, when damage in data that was durable keeps
    /// it from opening ([`Error::Corruption`]), for reading only (degraded): the
    /// undamaged data stays readable, reads touching the damage fail with its
    /// error, and appends fail with [`Error::ReadOnly`] saying to run repair.
    /// [`Store::write_failure`] says which it is.
    pub fn open_or_degraded_with(storage: Arc<dyn Storage>, dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let dir = dir.as_ref();
        match Self::open_with(storage.clone(), dir, options.clone()) {
            Err(e @ Error::Corruption { .. }) => {
                let store = Self::open_read_only_with(storage, dir, options)?;
                if store.shared.damage.is_empty() {
                    // The read-only open did not find what the writer refused: say it.
                    return Err(e);
                }
                Ok(store)
            }
            other => other,
        }
    }

    /// [`Store::open_or_degraded_with`] on the real file system.
    pub fn open_or_degraded(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_or_degraded_with(Arc::new(FsStorage), dir, options)
    }

    /// Damage that a read-only open stepped around (empty for a store open for writing).
    pub fn damage(&self) -> &[crate::log::recovery::Damage] {
        &self.shared.damage
    }

    /// True if the store was opened for reading only (by choice, or degraded by damage).
    pub fn is_read_only(&self) -> bool {
        self.read_only.is_some()
    }

    /// Starts the background scavenger and compressor the options ask for.
    fn start_maintenance(&self) -> Result<()> {
        let store = self;
        if let Some(ms) = store.shared.options.retention.interval_ms {
            store.every(std::time::Duration::from_millis(ms), "annal-scavenger", |shared| {
                // A failed run is retried at the next tick; `scavenge` reports errors on demand.
                let result = crate::maintenance::retention::scavenge(shared, &shared.options.retention);
                crate::maintenance::compression::record_background(shared, "scavenging", result);
            })?;
        }
        if let Some(c) = store.shared.options.compression {
            store.every(
                std::time::Duration::from_millis(500),
                "annal-compressor",
                move |shared| {
                    let result = crate::maintenance::compression::compress_sealed(shared, &c);
                    crate::maintenance::compression::record_background(shared, "compression", result);
                },
            )?;
        }
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Appends events to a stream atomically, after checking `expected`.
    pub fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<EventData>) -> Result<AppendResult> {
        self.submit(stream, expected, events, None)
    }

    /// Appends events to a stream atomically if no event matching `condition.query`
    /// exists after `condition.after` (a consistency-boundary append), and `expected` holds.
    pub fn append_if(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: AppendCondition,
    ) -> Result<AppendResult> {
        self.submit(stream, expected, events, Some(condition))
    }

    /// Runs `work` on a background thread every `period` until the store closes.
    fn every(&self, period: std::time::Duration, name: &str, work: impl Fn(&Shared) + Send + 'static) -> Result<()> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    work(&shared);
                }
            })
            .map_err(|e| Error::io(format!("starting the {name} thread"), e))?;
        self.maintenance.lock().push((stop, handle));
        Ok(())
    }

    /// Compresses, now, every sealed segment not compressed yet (with the
    /// store's compression settings, or the defaults if compression is off).
    pub fn compress(&self) -> Result<crate::maintenance::compression::CompressReport> {
        self.check_writable()?;
        let options = self.shared.options.compression.unwrap_or_default();
        crate::maintenance::compression::compress_sealed(&self.shared, &options)
    }

    /// The loaded persistent subscription groups.
    pub(crate) fn groups(&self) -> &crate::features::persistent::Groups {
        &self.groups
    }

    /// Why appends are refused for good, if they are: the store is closing, or its
    /// writer stopped after an error it cannot recover from (a failed sync, or a
    /// failed write of bytes it had acknowledged). `None` while appends are accepted.
    /// Health checks report this; reads keep working either way.
    pub fn write_failure(&self) -> Option<String> {
        if self.is_closing() {
            return Some("the store is closing".into());
        }
        if let Some(r) = &self.read_only {
            return Some(format!("the store is read-only: {r}"));
        }
        self.shared.failure.lock().clone()
    }

    /// The torn tails this open cut off the last segment (bytes written after
    /// the last durable append, never acknowledged under [`crate::Durability::Always`]),
    /// each kept in `torn/`. Empty after a clean close. [`crate::log::recovery::torn_tails`]
    /// lists every torn tail ever kept.
    pub fn torn_tails_at_open(&self) -> &[crate::log::recovery::TornTail] {
        &self.shared.torn_at_open
    }

    /// True once the store has begun closing.
    pub(crate) fn is_closing(&self) -> bool {
        self.shared.notifier.is_closed()
    }

    /// Appends to a system stream (`$`-prefixed), which callers cannot write.
    pub(crate) fn append_system(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        debug_assert!(stream.starts_with('$'));
        self.submit_checked(stream, expected, events, None)
    }

    fn submit(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) -> Result<AppendResult> {
        if stream.starts_with('$') {
            return Err(Error::InvalidInput(format!(
                "stream {stream:?}: names starting with '$' are reserved for annal's system streams"
            )));
        }
        if self
            .shared
            .metadata
            .read()
            .by_stream
            .get(stream)
            .is_some_and(|m| m.tombstoned)
        {
            return Err(Error::StreamDeleted(stream.to_string()));
        }
        self.submit_checked(stream, expected, events, condition)
    }

    /// Refuses writes to a store open for reading only.
    fn check_writable(&self) -> Result<()> {
        match &self.read_only {
            Some(reason) => Err(Error::ReadOnly { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn submit_checked(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) -> Result<AppendResult> {
        self.check_writable()?;
        let o = &self.shared.options;
        event::check_stream_name(stream)?;
        if events.is_empty() {
            return Err(Error::InvalidInput("an append needs at least one event".into()));
        }
        if events.len() > o.max_events_per_append {
            return Err(Error::InvalidInput(format!(
                "{} events in one append; at most {}",
                events.len(),
                o.max_events_per_append
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for e in &events {
            e.validate(o.max_event_size)?;
            if let Some(id) = e.id
                && !ids.insert(id)
            {
                return Err(Error::InvalidInput(format!(
                    "event id {id} appears twice in one append"
                )));
            }
        }
        let size = crate::log::writer::encoded_size(stream, &events);
        if size > o.max_append_size {
            return Err(Error::InvalidInput(format!(
                "append of about {size} bytes exceeds the limit of {}",
                o.max_append_size
            )));
        }
        let Some(committer) = &self.committer else {
            return Err(Error::Closed(None));
        };
        let result = committer.append(AppendRequest {
            stream: stream.to_string(),
            expected,
            events,
            condition,
        });
        match result {
            Err(Error::Closed(None)) => Err(self.closed_error()),
            other => other,
        }
    }

    fn closed_error(&self) -> Error {
        match self.shared.failure.lock().clone() {
            Some(cause) => Error::Poisoned { cause },
            None => Error::Closed(None),
        }
    }

    /// Reads up to `limit` events of a stream.
    pub fn read_stream(
        &self,
        stream: &str,
        direction: Direction,
        from: StreamFrom,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared.read_stream_visible(stream, direction, from, limit)
    }

    /// Reads up to `limit` events of the global log that pass `filter`.
    pub fn read_all(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared.read_log(direction, from, limit, filter)
    }

    /// Looks up one event by id.
    pub fn event_by_id(&self, id: Uuid) -> Result<Option<RecordedEvent>> {
        match self.shared.find_id(&id) {
            Some(p) => Ok(self
                .shared
                .read_position(p)?
                .filter(|e| self.shared.is_visible(e, crate::features::metadata::now()))),
            None => Ok(None),
        }
    }

    /// The current state of a stream.
    pub fn stream_info(&self, stream: &str) -> Option<StreamInfo> {
        self.shared.stream_state(stream).map(|s| StreamInfo {
            name: stream.to_string(),
            last_revision: s.last_revision,
            last_position: s.last_position,
        })
    }

    /// Every stream with its current revision, sorted by name.
    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut out: Vec<StreamInfo> = self
            .shared
            .streams
            .read()
            .iter()
            .map(|(n, s)| StreamInfo {
                name: n.to_string(),
                last_revision: s.last_revision,
                last_position: s.last_position,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Position the next event will get (the number of events ever appended).
    pub fn head_position(&self) -> u64 {
        self.shared.published()
    }

    /// Number of segment files (sealed and active).
    pub fn segment_count(&self) -> usize {
        self.shared.segments().len()
    }

    /// Copies the store, while it runs, into `dest` (an empty or new directory on
    /// the same storage): a store that opens as this one was at one instant.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<crate::BackupReport> {
        crate::maintenance::backup::backup(&self.shared, dest.as_ref())
    }

    /// Removes, from sealed segments, the events that are deleted, expired by
    /// their stream's metadata, or past the store's retention policy, and
    /// reclaims their space; surviving events keep their positions. Reads and
    /// appends go on meanwhile; a crash at any point leaves the old or the new
    /// segment, never a mix.
    pub fn scavenge(&self) -> Result<crate::ScavengeReport> {
        self.check_writable()?;
        crate::maintenance::retention::scavenge(&self.shared, &self.shared.options.retention)
    }

    /// Figures about the store: events, streams, segments, bytes.
    pub fn stats(&self) -> crate::StoreStats {
        crate::maintenance::backup::stats(&self.shared)
    }

    /// Subscribes to the global log (events passing `filter`), from history to live.
    pub fn subscribe_all(&self, from: SubscribeFrom, filter: Filter) -> Subscription {
        self.subscribe_all_with(from, filter, SubscriptionOptions::default())
    }

    /// Like [`Store::subscribe_all`], with explicit batch and checkpoint settings.
    pub fn subscribe_all_with(
        &self,
        from: SubscribeFrom,
        filter: Filter,
        options: SubscriptionOptions,
    ) -> Subscription {
        Subscription::to_all(self.shared.clone(), from, filter, options)
    }

    /// Subscribes to one stream, from history to live (the stream may not exist yet).
    pub fn subscribe_stream(&self, stream: &str, from: SubscribeFrom) -> Subscription {
        Subscription::to_stream(self.shared.clone(), stream, from, SubscriptionOptions::default())
    }

    /// Feeds a range of the log, filtered, to `handler` in batches, counting
    /// processed and failed events; stops at the first failure unless
    /// `options.continue_on_error`. For rebuilding read models.
    pub fn replay<E: std::fmt::Display>(
        &self,
        options: &ReplayOptions,
        handler: impl FnMut(&RecordedEvent) -> std::result::Result<(), E>,
    ) -> Result<ReplayReport> {
        crate::features::subscription::replay(&self.shared, options, handler)
    }

    /// Checks every checksum, every index entry against the log, and the
    /// invariants across files; reads run concurrently with appends. Problems
    /// are reported with their file and byte offset; nothing is changed.
    pub fn verify(&self) -> Result<crate::VerifyReport> {
        crate::maintenance::verify::verify(&self.shared)
    }

    /// Flushes, stops the writer and releases the directory. Dropping the store does the same.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        let mut closed = self.closed.lock();
        if std::mem::replace(&mut *closed, true) {
            return Ok(());
        }
        for (stop, handle) in self.maintenance.lock().drain(..) {
            let _ = stop.send(());
            let _ = handle.join();
        }
        // Consumer groups keep their progress (at least once: only what moved since the last save).
        // A read-only store writes nothing, group progress included.
        let saved = match self.read_only {
            Some(_) => Ok(()),
            None => self.groups.save_all(self),
        };
        let result = match &self.committer {
            Some(c) => c.close().and(saved),
            None => Ok(()),
        };
        self.shared.notifier.close();
        result
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
