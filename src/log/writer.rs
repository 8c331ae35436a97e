//! The write path: leader/follower group commit, pipelined syncs, concurrency
//! checks, rotation.
//!
//! Appenders queue their requests. The first appender to find no leader
//! becomes the leader: it takes every request queued so far, checks each
//! (expected version, idempotency, append condition) against the published
//! state plus every group written but not yet published, encodes the accepted
//! ones into one buffer and writes it with one call. It then hands the
//! leadership to the first appender that queued meanwhile, so that the next
//! group is checked and written while this one syncs. Groups are published to
//! readers strictly in order, each only after its own sync (per the durability
//! option), and only then are their appenders answered. A lone appender pays
//! no thread hand-off at all. A failed write is cut back off the file so that
//! it leaves no trace. This module is the only place that writes the log; it
//! must never acknowledge an append before its bytes are durable under
//! [`Durability::Always`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};
use uuid::Uuid;

use crate::error::{Error, IoContext, Result};
use crate::event::{AppendResult, EventData, ExpectedVersion, now_micros};
use crate::format::checkpoint::{DURABLE_FILE, DurableMark, STREAMS_FILE, StreamState, StreamsCheckpoint};
use crate::format::index::{IndexEntry, Lookup};
use crate::format::record::{self, EventView, Frame, GroupView, SealView};
use crate::format::segment::{SEGMENT_HEADER, segment_file_name};
use crate::log::segments::{ActiveSegment, SealedSegment};
use crate::log::state::Shared;
use crate::options::Durability;
use crate::query::AppendCondition;
use crate::storage::write_atomically;

/// One append, as built by [`crate::Store::append`].
pub(crate) struct AppendRequest {
    pub(crate) stream: String,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<EventData>,
    pub(crate) condition: Option<AppendCondition>,
}

/// How many times a new leader yields, while the queue keeps growing, before it takes its group.
const GATHER_YIELDS: usize = 8;

/// The active segment is extended with written zeros this much at a time.
const PREALLOC_CHUNK: u64 = 4 << 20;

/// Groups at least this large are written past the preallocated zeros, not into them.
const PREALLOC_MAX_GROUP: usize = 64 << 10;

/// Largest group buffer before the leader writes it and goes on with the rest of its batch.
const MAX_GROUP_BYTES: usize = 16 << 20;

/// A queued append waiting for its result or for the leadership.
struct Slot {
    request: Mutex<Option<AppendRequest>>,
    state: Mutex<SlotState>,
    wake: Condvar,
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<AppendResult>>,
    promoted: bool,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Arc<Slot>>,
    leader: bool,
    closed: bool,
}

/// The front of the write path: the queue, the leader protocol and the
/// background flusher for [`Durability::Interval`].
pub(crate) struct Committer {
    queue: Mutex<Queue>,
    writer: Arc<Mutex<Writer>>,
    pipeline: Arc<Pipeline>,
    shared: Arc<Shared>,
    flusher: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

impl Committer {
    /// Prepares the write path of a freshly opened store.
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Self> {
        let interval = match shared.options.durability {
            Durability::Interval(d) => Some(d),
            _ => None,
        };
        let pipeline = Arc::new(Pipeline::default());
        let writer = Arc::new(Mutex::new(Writer::new(shared.clone(), pipeline.clone())?));
        let flusher = match interval {
            Some(d) => {
                let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
                let w = writer.clone();
                let handle = std::thread::Builder::new()
                    .name("annal-flusher".into())
                    .spawn(move || {
                        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(d) {
                            w.lock().sync_if_due(d);
                        }
                    })
                    .map_err(|e| Error::io("starting the flusher thread", e))?;
                Some((stop, handle))
            }
            None => None,
        };
        Ok(Committer {
            queue: Mutex::new(Queue::default()),
            writer,
            pipeline,
            shared,
            flusher: Mutex::new(flusher),
        })
    }

    /// Appends, as the leader of a group or as a follower of one.
    pub(crate) fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        let me = Arc::new(Slot {
            request: Mutex::new(Some(request)),
            state: Mutex::new(SlotState::default()),
            wake: Condvar::new(),
        });
        let lead = {
            let mut q = self.queue.lock();
            if q.closed {
                return Err(Error::Closed(None));
            }
            q.pending.push(me.clone());
            !std::mem::replace(&mut q.leader, true)
        };
        if !lead {
            let mut st = me.state.lock();
            loop {
                if let Some(r) = st.result.take() {
                    return r;
                }
                if st.promoted {
                    break;
                }
                me.wake.wait(&mut st);
            }
        }
        // While other appenders are still arriving, give them the CPU for a moment
        // so that they join this group rather than wait for the next.
        let mut queued = self.queue.lock().pending.len();
        for _ in 0..GATHER_YIELDS {
            std::thread::yield_now();
            let now = self.queue.lock().pending.len();
            if now == queued {
                break;
            }
            queued = now;
        }
        // The leader takes everything queued, its own request included.
        let batch = std::mem::take(&mut self.queue.lock().pending);
        let requests: Vec<Option<AppendRequest>> = batch.iter().map(|s| s.request.lock().take()).collect();
        let mut results: Results = (0..requests.len()).map(|_| None).collect();
        let written = self.writer.lock().process(&requests, &mut results);
        // The next group may be checked and written while this one syncs.
        {
            let mut q = self.queue.lock();
            match q.pending.first() {
                Some(next) => {
                    next.state.lock().promoted = true;
                    next.wake.notify_one();
                }
                None => q.leader = false,
            }
        }
        if let Some(group) = written {
            finish(&self.shared, &self.pipeline, &group, &mut results);
        }
        let mut mine = Err(Error::Closed(None));
        for (slot, r) in batch.iter().zip(results) {
            let r = r.unwrap_or(Err(Error::Closed(None)));
            if Arc::ptr_eq(slot, &me) {
                mine = r;
            } else {
                slot.state.lock().result = Some(r);
                slot.wake.notify_one();
            }
        }
        mine
    }

    /// Refuses further appends, stops the flusher and makes everything written durable.
    pub(crate) fn close(&self) -> Result<()> {
        self.queue.lock().closed = true;
        if let Some((stop, handle)) = self.flusher.lock().take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        self.writer.lock().close()
    }
}

/// Groups written to the file and not yet published, in the order they were written.
#[derive(Default)]
struct Pipeline {
    state: Mutex<Flight>,
    changed: Condvar,
    /// Bytes of the active segment before this offset are known to be durable.
    synced: AtomicU64,
    /// Bytes of the active segment before this offset are written (not
    /// necessarily synced); a sync started now covers them.
    written: AtomicU64,
    /// One `fdatasync` of the active segment at a time, so that a failed sync
    /// is reported to the groups it concerns and never consumed by another.
    sync_lock: Mutex<()>,
}

#[derive(Default)]
struct Flight {
    /// Sequence number of the last group published (groups count from 1).
    published: u64,
    /// Groups written and not yet published.
    unpublished: usize,
}

impl Pipeline {
    /// Waits until every group written so far is published.
    fn drain(&self) {
        let mut st = self.state.lock();
        while st.unpublished > 0 {
            self.changed.wait(&mut st);
        }
    }
}

/// A group written to the file, waiting for its sync and its turn to be published.
struct Written {
    seq: u64,
    group: Group,
    /// Where the group's bytes start in the active segment.
    offset: u64,
    /// Position of its first event.
    first_position: u64,
    active: Arc<ActiveSegment>,
    /// Whether this group must be synced before it is published.
    sync: bool,
}

impl Written {
    fn event(&self, position: u64) -> Option<EventView<'_>> {
        self.group.event(self.first_position, position)
    }
}

/// Makes the active segment durable up to at least `end`, one sync at a time.
/// A sync that another caller started after these bytes were written covers
/// them, and is not repeated. A failed sync poisons the writer: after it the
/// page cache may have dropped the written pages, so no later sync can vouch
/// for them.
fn sync_active(shared: &Shared, pipeline: &Pipeline, active: &ActiveSegment, end: u64) -> Result<()> {
    let _one_at_a_time = pipeline.sync_lock.lock();
    if let Some(e) = shared.poisoned() {
        return Err(e);
    }
    if pipeline.synced.load(Ordering::Acquire) >= end {
        return Ok(());
    }
    let covered = pipeline.written.load(Ordering::Acquire).max(end);
    match active.file.sync_data() {
        Ok(()) => {
            pipeline.synced.fetch_max(covered, Ordering::AcqRel);
            Ok(())
        }
        Err(e) => Err(shared.poison(format!("sync of {} failed: {e}", active.path.display()))),
    }
}

/// Syncs a written group if needed, waits for its turn, publishes it and records its results.
fn finish(shared: &Shared, pipeline: &Pipeline, w: &Written, results: &mut Results) {
    let synced = if w.sync && !w.group.buf.is_empty() {
        sync_active(shared, pipeline, &w.active, w.offset + w.group.buf.len() as u64)
    } else {
        Ok(())
    };
    let mut st = pipeline.state.lock();
    while st.published + 1 != w.seq {
        pipeline.changed.wait(&mut st);
    }
    // A group is published only if no sync failed before its turn: an earlier
    // group's failure may have lost pages this group's own sync did not see.
    let outcome = match synced.and_then(|()| shared.poisoned().map_or(Ok(()), Err)) {
        Err(e) => Err(e),
        Ok(()) => {
            publish(shared, w);
            Ok(())
        }
    };
    st.published = w.seq;
    st.unpublished -= 1;
    pipeline.changed.notify_all();
    drop(st);
    for (i, result) in &w.group.replies {
        results[*i] = Some(match &outcome {
            Ok(()) => Ok(*result),
            Err(e) => Err(e.for_another_caller()),
        });
    }
}

/// Makes a written group visible to readers: its index entries, its streams' states, the head position.
fn publish(shared: &Shared, w: &Written) {
    let group = &w.group;
    // Both locks are held together (index first, the order every reader
    // nesting them uses), so a snapshot never sees one without the other.
    let mut idx = w.active.index.write();
    for (s, e) in &group.frames {
        if let Ok((Frame::Event(v), _)) = record::decode_own_frame(&group.buf[*s..*e]) {
            let entry = IndexEntry::from_view(&v, w.offset + *s as u64);
            idx.push(&entry, w.offset + *e as u64);
        }
    }
    let mut streams = shared.streams.write();
    for (name, state) in &group.streams {
        match streams.get_mut(name.as_str()) {
            Some(s) => *s = *state,
            None => {
                streams.insert(name.as_str().into(), *state);
            }
        }
    }
    drop(streams);
    drop(idx);
    shared
        .next_position
        .store(w.first_position + group.frames.len() as u64, Ordering::Release);
    shared.notifier.notify();
}

struct Writer {
    shared: Arc<Shared>,
    pipeline: Arc<Pipeline>,
    active: Arc<ActiveSegment>,
    /// End of the bytes written to the active segment.
    write_offset: u64,
    /// End of the zeros written ahead of `write_offset` (the file's length).
    allocated_end: u64,
    /// CRC of the active segment's bytes after its header.
    content_crc: crc32fast::Hasher,
    /// Next position to assign.
    next_position: u64,
    last_timestamp: i64,
    /// Bytes written but not yet synced.
    dirty: bool,
    last_sync: Instant,
    /// Sequence number of the last group written.
    seq: u64,
    /// Groups written and perhaps not yet published, oldest first.
    unpublished: Vec<Arc<Written>>,
    group: Group,
    /// The active segment is sealed on disk but the next one is not started yet
    /// (a step after the seal failed); the next append finishes the rotation.
    sealed_pending: bool,
}

/// What the current group has staged and not yet written.
#[derive(Default)]
struct Group {
    buf: Vec<u8>,
    /// Frame ranges in `buf`, one per staged event.
    frames: Vec<(usize, usize)>,
    /// Index in the batch and result of each staged request.
    replies: Vec<(usize, AppendResult)>,
    streams: HashMap<String, StreamState>,
    ids: HashMap<Uuid, u64>,
}

impl Group {
    /// The event at `position`, if this group (whose first event is at `first`) holds it.
    fn event(&self, first: u64, position: u64) -> Option<EventView<'_>> {
        let i = usize::try_from(position.checked_sub(first)?).ok()?;
        let (s, e) = *self.frames.get(i)?;
        match record::decode_own_frame(&self.buf[s..e]) {
            Ok((Frame::Event(v), _)) => Some(v),
            _ => None,
        }
    }
}

/// Results of a batch, filled in as groups are published.
type Results = Vec<Option<Result<AppendResult>>>;

impl Writer {
    fn new(shared: Arc<Shared>, pipeline: Arc<Pipeline>) -> Result<Self> {
        let active = shared.segments.active().ok_or_else(|| Error::ReadOnly {
            reason: "the log has no segment to append to".into(),
        })?;
        let (write_offset, content_crc, last_timestamp) = {
            let idx = active.index.read();
            let end = idx.end_offset();
            let mut body = vec![0u8; (end - SEGMENT_HEADER as u64) as usize];
            active
                .file
                .read_exact_at(&mut body, SEGMENT_HEADER as u64)
                .ctx(|| format!("reading {}", active.path.display()))?;
            let mut h = crc32fast::Hasher::new();
            h.update(&body);
            let last_ts = idx.time_range().map_or(i64::MIN, |(_, max)| max);
            (end, h, last_ts)
        };
        let allocated_end = active
            .file
            .len()
            .ctx(|| format!("reading {}", active.path.display()))?
            .max(write_offset);
        // What recovery found may still sit in the page cache (after a process
        // crash); sync it, so that every byte before `write_offset` is durable.
        active
            .file
            .sync_data()
            .ctx(|| format!("syncing {}", active.path.display()))?;
        pipeline.synced.store(write_offset, Ordering::Release);
        pipeline.written.store(write_offset, Ordering::Release);
        // The newest sealed segment's last timestamp bounds ours from below too.
        let sealed_ts = shared
            .segments
            .sealed()
            .last()
            .and_then(|s| s.index.time_range())
            .map_or(i64::MIN, |(_, max)| max);
        Ok(Writer {
            next_position: shared.published(),
            shared,
            pipeline,
            active,
            write_offset,
            allocated_end,
            content_crc,
            last_timestamp: last_timestamp.max(sealed_ts),
            dirty: false,
            last_sync: Instant::now(),
            seq: 0,
            unpublished: Vec::new(),
            group: Group::default(),
            sealed_pending: false,
        })
    }

    /// Checks and stages a batch, writing full groups on the way; returns the
    /// last group, written and waiting for [`finish`], if there is one.
    fn process(&mut self, requests: &[Option<AppendRequest>], results: &mut Results) -> Option<Arc<Written>> {
        let published = self.pipeline.state.lock().published;
        self.unpublished.retain(|w| w.seq > published);
        for (i, req) in requests.iter().enumerate() {
            let Some(req) = req else { continue };
            if let Some(e) = self.shared.poisoned() {
                results[i] = Some(Err(e));
                continue;
            }
            match self.stage(req, results) {
                Ok(result) => self.group.replies.push((i, result)),
                Err(e) => results[i] = Some(Err(e)),
            }
            if self.group.buf.len() >= MAX_GROUP_BYTES {
                self.flush(results);
            }
        }
        self.write(results)
    }

    /// Writes the staged group and waits for it to be published.
    fn flush(&mut self, results: &mut Results) {
        if let Some(w) = self.write(results) {
            finish(&self.shared, &self.pipeline, &w, results);
        }
    }

    /// Syncs if the interval has passed since the last sync and bytes are waiting.
    fn sync_if_due(&mut self, interval: Duration) {
        if self.dirty && self.last_sync.elapsed() >= interval {
            // A failure is latched in the store (see `sync_active`): every later
            // append, the close and `Store::write_failure` report it.
            self.sync_now().ok();
        }
    }

    /// Syncs what was written and not synced. A failure is latched (see
    /// [`sync_active`]): every later append and the close report it.
    fn sync_now(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        sync_active(&self.shared, &self.pipeline, &self.active, self.write_offset)
    }

    fn close(&mut self) -> Result<()> {
        self.pipeline.drain();
        self.sync_now()?;
        if let Some(e) = self.shared.poisoned() {
            return Err(e);
        }
        self.trim_preallocation()?;
        self.record_durable_end()
    }

    /// Drops the zeros written ahead of the data, so that a closed store takes
    /// only the space its events need and its segment ends where its data does.
    fn trim_preallocation(&mut self) -> Result<()> {
        if self.sealed_pending || self.allocated_end <= self.write_offset {
            return Ok(());
        }
        let file = &self.active.file;
        file.set_len(self.write_offset)
            .and_then(|()| file.sync_data())
            .ctx(|| format!("trimming {}", self.active.path.display()))?;
        self.allocated_end = self.write_offset;
        Ok(())
    }

    /// Writes `durable.chk`: every byte written to the active segment is durable
    /// now (the caller has synced), so a later open must treat damage or missing
    /// bytes before `write_offset` as corruption, never as a torn tail.
    fn record_durable_end(&mut self) -> Result<()> {
        if self.sealed_pending {
            // The seal vouches for the whole segment; reopening starts the next one.
            return Ok(());
        }
        let mark = DurableMark {
            segment_base: self.active.index.read().base(),
            durable_end: self.write_offset,
            next_position: self.next_position,
            content_crc: self.content_crc.clone().finalize(),
        };
        let mut last = self.shared.durable_mark.lock();
        if *last == Some(mark) {
            return Ok(());
        }
        write_atomically(&*self.shared.storage, &self.shared.dir, DURABLE_FILE, &mark.encode())
            .ctx(|| format!("writing {DURABLE_FILE}"))?;
        *last = Some(mark);
        Ok(())
    }

    fn fail(&self, reason: String) {
        self.shared.poison(reason);
    }

    /// The stream's state as of the staged group: staged, written, or published.
    fn current(&self, stream: &str) -> Option<StreamState> {
        self.group
            .streams
            .get(stream)
            .or_else(|| self.unpublished.iter().rev().find_map(|w| w.group.streams.get(stream)))
            .copied()
            .or_else(|| self.shared.stream_state(stream))
    }

    /// Position of the event with this id: staged, written, or published.
    fn find_id(&self, id: &Uuid) -> Option<u64> {
        self.group
            .ids
            .get(id)
            .or_else(|| self.unpublished.iter().rev().find_map(|w| w.group.ids.get(id)))
            .copied()
            .or_else(|| self.shared.find_id(id))
    }

    /// Checks a request and encodes its events into the group buffer.
    fn stage(&mut self, req: &AppendRequest, results: &mut Results) -> Result<AppendResult> {
        // A rotation that failed after its seal is finished before anything else.
        if self.sealed_pending {
            self.rotate()?;
        }
        // Rotate first, so that the checks below see the state after the
        // commit that rotation forces (which may have failed and dropped appends).
        let estimate = encoded_size(&req.stream, &req.events);
        if self.write_offset + (self.group.buf.len() + estimate) as u64 > self.shared.options.segment_size
            && (self.write_offset > SEGMENT_HEADER as u64 || !self.group.buf.is_empty())
        {
            self.flush(results);
            if self.write_offset > SEGMENT_HEADER as u64 {
                self.rotate()?;
            }
        }
        let current = self.current(&req.stream);
        if let Some(result) = self.idempotent_result(req, current)? {
            return Ok(result);
        }
        let ok = match (req.expected, current) {
            (ExpectedVersion::Any, _) => true,
            (ExpectedVersion::NoStream, None) => true,
            (ExpectedVersion::StreamExists, Some(_)) => true,
            (ExpectedVersion::Exact(r), Some(s)) => s.last_revision == r,
            _ => false,
        };
        if !ok {
            return Err(Error::WrongExpectedVersion {
                stream: req.stream.clone(),
                expected: req.expected.to_string(),
                actual: current.map(|s| s.last_revision),
            });
        }
        if let Some(cond) = &req.condition {
            self.check_condition(cond)?;
        }
        let n_events = req.events.len() as u64;
        if current.is_some_and(|s| s.last_revision.checked_add(n_events).is_none()) {
            return Err(Error::InvalidInput(format!(
                "stream {:?} has no revisions left",
                req.stream
            )));
        }
        if self.next_position.checked_add(n_events).is_none() {
            return Err(Error::InvalidInput("the store has no positions left".into()));
        }
        let first_revision = current.map_or(0, |s| s.last_revision + 1);
        let position = self.next_position;
        let timestamp = now_micros().max(self.last_timestamp);
        let n = req.events.len();
        if self.group.buf.is_empty() {
            let durable_end = self.pipeline.synced.load(Ordering::Acquire);
            record::encode_group(&mut self.group.buf, &GroupView { durable_end });
        }
        for (i, e) in req.events.iter().enumerate() {
            let id = e.id.unwrap_or_else(Uuid::new_v4);
            let start = self.group.buf.len();
            record::encode_event(
                &mut self.group.buf,
                i + 1 == n,
                position + i as u64,
                first_revision + i as u64,
                timestamp,
                id,
                e.content_type,
                &req.stream,
                &e.event_type,
                &e.tags,
                &e.metadata,
                &e.data,
            );
            self.group.frames.push((start, self.group.buf.len()));
            self.group.ids.insert(id, position + i as u64);
        }
        let last_revision = first_revision + n as u64 - 1;
        self.next_position += n as u64;
        self.last_timestamp = timestamp;
        self.group.streams.insert(
            req.stream.clone(),
            StreamState {
                last_revision,
                last_position: position + n as u64 - 1,
            },
        );
        Ok(AppendResult {
            first_revision,
            next_expected_version: last_revision,
            position,
        })
    }

    /// The event at `position` if it is staged or written but not yet published.
    fn staged_event(&self, position: u64) -> Option<EventView<'_>> {
        let first = self.next_position - self.group.frames.len() as u64;
        self.group
            .event(first, position)
            .or_else(|| self.unpublished.iter().find_map(|w| w.event(position)))
    }

    /// If every event carries an id that is already stored, in order, at the place
    /// this append would have written it, the result of the original append.
    fn idempotent_result(&self, req: &AppendRequest, current: Option<StreamState>) -> Result<Option<AppendResult>> {
        let mut found = Vec::with_capacity(req.events.len());
        for e in &req.events {
            let Some(id) = e.id else {
                found.push(None);
                continue;
            };
            let pos = self.find_id(&id);
            found.push(pos.map(|p| (id, p)));
        }
        let Some(&(first_id, first_pos)) = found.iter().flatten().next() else {
            return Ok(None);
        };
        let conflict = Error::IdempotencyConflict {
            id: first_id,
            position: first_pos,
        };
        if found.iter().any(Option::is_none) {
            return Err(conflict);
        }
        let mut first_revision = None;
        let mut last_revision = 0;
        for (i, ((_, pos), e)) in found.iter().flatten().zip(&req.events).enumerate() {
            if *pos != first_pos + i as u64 {
                return Err(conflict);
            }
            // A retry must carry the same events: an id reused for other content is a conflict.
            let (stream, revision, same) = match self.staged_event(*pos) {
                Some(v) => {
                    let same = same_content(e, v.event_type, v.content_type, v.data, v.metadata, &v.tags);
                    (v.stream.to_string(), v.revision, same)
                }
                None => match self.shared.read_position(*pos)? {
                    Some(ev) => {
                        let tags: Vec<&str> = ev.tags.iter().map(String::as_str).collect();
                        let same = same_content(e, &ev.event_type, ev.content_type, &ev.data, &ev.metadata, &tags);
                        (ev.stream, ev.revision, same)
                    }
                    None => return Err(conflict),
                },
            };
            if !same || stream != req.stream || first_revision.is_some_and(|f: u64| revision != f + i as u64) {
                return Err(conflict);
            }
            first_revision.get_or_insert(revision);
            last_revision = revision;
        }
        let first_revision = first_revision.unwrap_or(0);
        let place_ok = match req.expected {
            ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
            ExpectedVersion::NoStream => first_revision == 0,
            ExpectedVersion::Exact(r) => first_revision == r + 1,
        };
        if !place_ok || current.is_none() {
            return Err(conflict);
        }
        Ok(Some(AppendResult {
            first_revision,
            next_expected_version: last_revision,
            position: first_pos,
        }))
    }

    fn check_condition(&self, cond: &AppendCondition) -> Result<()> {
        // Published events, through the indexes; every group not yet published
        // is in `self.unpublished` or staged, checked below.
        for item in &cond.query.items {
            if let Some(position) = self.shared.first_match_after(&item.as_filter(), cond.after)? {
                return Err(Error::ConditionFailed { position });
            }
        }
        let first_unpublished = self
            .unpublished
            .first()
            .map_or(self.next_position - self.group.frames.len() as u64, |w| {
                w.first_position
            });
        for p in first_unpublished..self.next_position {
            if cond.after.is_some_and(|a| p <= a) {
                continue;
            }
            if let Some(v) = self.staged_event(p)
                && cond.query.matches(&v)
            {
                return Err(Error::ConditionFailed { position: p });
            }
        }
        Ok(())
    }

    /// Makes sure the file holds written zeros up to at least `end`, extending
    /// it a chunk at a time. Overwriting written zeros lets `fdatasync` skip the
    /// file-size and extent updates that growing a file costs on every sync
    /// (about 1.6x more syncs a second on ext4 here). The sync after the group
    /// write makes the zeros durable too.
    fn preallocate(&mut self, end: u64) -> std::io::Result<()> {
        if end <= self.allocated_end {
            return Ok(());
        }
        let chunk = PREALLOC_CHUNK.min(self.shared.options.segment_size);
        let target = end.div_ceil(chunk) * chunk;
        let zeros = vec![0u8; (target - self.allocated_end).min(chunk) as usize];
        while self.allocated_end < target {
            let n = (target - self.allocated_end).min(zeros.len() as u64);
            self.active
                .file
                .write_all_at(&zeros[..n as usize], self.allocated_end)?;
            self.allocated_end += n;
        }
        Ok(())
    }

    /// Writes the staged group (without syncing it) and enters it in the
    /// pipeline; `None` if there is nothing to wait for. A failed write is cut
    /// back off the file and its appends answered with the error at once.
    fn write(&mut self, results: &mut Results) -> Option<Arc<Written>> {
        let mut group = std::mem::take(&mut self.group);
        if group.replies.is_empty() {
            self.recycle(group);
            return None;
        }
        let first_position = self.next_position - group.frames.len() as u64;
        let offset = self.write_offset;
        let mut sync = false;
        if !group.buf.is_empty() {
            if let Err(e) = self.write_bytes(&group.buf) {
                // Nothing of the group was published; forget its positions.
                self.next_position = first_position;
                for (i, _) in group.replies.drain(..) {
                    results[i] = Some(Err(e.for_another_caller()));
                }
                self.recycle(group);
                return None;
            }
            self.content_crc.update(&group.buf);
            self.write_offset += group.buf.len() as u64;
            self.pipeline.written.store(self.write_offset, Ordering::Release);
            sync = match self.shared.options.durability {
                Durability::Always => true,
                Durability::Interval(d) => self.last_sync.elapsed() >= d,
                Durability::Never => false,
            };
            if sync {
                self.dirty = false;
                self.last_sync = Instant::now();
            } else {
                self.dirty = true;
            }
        }
        self.seq += 1;
        self.pipeline.state.lock().unpublished += 1;
        let written = Arc::new(Written {
            seq: self.seq,
            group,
            offset,
            first_position,
            active: self.active.clone(),
            sync,
        });
        self.unpublished.push(written.clone());
        Some(written)
    }

    /// Keeps a group buffer's memory for the next group (up to the group limit).
    fn recycle(&mut self, mut group: Group) {
        if group.buf.capacity() <= 2 * MAX_GROUP_BYTES {
            group.buf.clear();
            self.group.buf = group.buf;
        }
    }

    /// Writes bytes at the end of the active segment; on failure, cuts the file back.
    fn write_bytes(&mut self, buf: &[u8]) -> Result<()> {
        let file = self.active.file.clone();
        let path = self.active.path.clone();
        let end = self.write_offset + buf.len() as u64;
        // Keep the reserve: refuse before the disk is full, not when a write tears.
        let reserve = self.shared.options.disk_reserve;
        if reserve > 0 {
            let available = self
                .shared
                .storage
                .available_space(&self.shared.dir)
                .ctx(|| format!("checking free space for {}", self.shared.dir.display()))?;
            let growth = end.saturating_sub(self.allocated_end) + PREALLOC_CHUNK.min(self.shared.options.segment_size);
            if available < reserve.saturating_add(growth) {
                return Err(Error::DiskFull {
                    context: format!(
                        "appending to {}: {available} bytes free, and {reserve} are kept in reserve for scavenging (disk_reserve)",
                        path.display()
                    ),
                });
            }
        }
        // Preallocation pays off for small synced groups, whose sync it speeds up;
        // a large group would pay a second copy of its size in zeros.
        let prealloc = buf.len() < PREALLOC_MAX_GROUP && self.shared.options.durability != Durability::Never;
        let written = if prealloc { self.preallocate(end) } else { Ok(()) }
            .and_then(|()| file.write_all_at(buf, self.write_offset));
        self.allocated_end = self.allocated_end.max(end);
        if let Err(e) = written {
            // Cut back whatever part landed, so the failed group leaves no trace.
            if let Err(t) = file.set_len(self.write_offset) {
                self.fail(format!("cannot cut back a failed write in {}: {t}", path.display()));
            }
            self.allocated_end = self.write_offset;
            return Err(Error::io(format!("writing {}", path.display()), e));
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one. A failure before the
    /// seal is durable cuts the seal back off and leaves the segment active; a
    /// failed sync stops the writer for good; a failure after the seal (writing
    /// the index or the checkpoint, creating the next segment: a full disk, no
    /// file descriptors left) fails only the append that needed the rotation,
    /// and the next append tries again. Reopening finishes or undoes a rotation
    /// that a crash interrupted.
    fn rotate(&mut self) -> Result<()> {
        if !self.sealed_pending {
            self.seal()?;
            self.sealed_pending = true;
        }
        self.start_next()?;
        self.sealed_pending = false;
        Ok(())
    }

    /// Writes and syncs the seal frame after the last event (dropping the zeros past it).
    fn seal(&mut self) -> Result<()> {
        // Everything written must be published (and so in the index) before sealing.
        self.pipeline.drain();
        self.unpublished.clear();
        if let Some(e) = self.shared.poisoned() {
            return Err(e);
        }
        let count = self.active.index.read().len() as u64;
        let mut seal = Vec::new();
        record::encode_seal(
            &mut seal,
            &SealView {
                next_position: self.next_position,
                event_count: count,
                content_crc: self.content_crc.clone().finalize(),
            },
        );
        let path = self.active.path.clone();
        let file = self.active.file.clone();
        let end = self.write_offset + seal.len() as u64;
        if let Err(e) = file
            .write_all_at(&seal, self.write_offset)
            .and_then(|()| file.set_len(end))
        {
            // Nothing acknowledged was touched: cut the seal back off and stay active.
            if let Err(t) = file.set_len(self.write_offset) {
                self.fail(format!("cannot cut back a failed seal in {}: {t}", path.display()));
            }
            self.allocated_end = self.write_offset;
            return Err(Error::io(format!("sealing {}", path.display()), e));
        }
        self.allocated_end = end;
        self.dirty = false;
        if let Err(e) = file.sync_data() {
            return Err(self
                .shared
                .poison(format!("sync of {} failed while sealing it: {e}", path.display())));
        }
        Ok(())
    }

    /// After the seal is durable: the sealed segment's index, the stream
    /// checkpoint, and the next segment, then the switch in memory. Each step
    /// can be retried.
    fn start_next(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let storage = &*shared.storage;
        let dir = &shared.dir;
        let _path = self.active.path.clone();
        let base = self.active.index.read().base();
        let idx_name = crate::format::segment::index_file_name(base);
        let idx_bytes = self.active.index.read().encode_file();
        write_atomically(storage, dir, &idx_name, &idx_bytes).ctx(|| format!("writing {idx_name}"))?;
        let sealed = SealedSegment::open(storage, dir, base, None)?;

        let checkpoint = StreamsCheckpoint {
            covered_position: self.next_position,
            streams: shared.streams.read().clone(),
        };
        write_atomically(storage, dir, STREAMS_FILE, &checkpoint.encode()).ctx(|| "writing streams.chk".into())?;

        // A file left by an earlier attempt that failed while creating it holds no event.
        let next = dir.join(segment_file_name(self.next_position));
        if storage.exists(&next) {
            storage
                .remove(&next)
                .ctx(|| format!("removing the unfinished segment {}", next.display()))?;
        }
        let active = Arc::new(ActiveSegment::create(storage, dir, self.next_position)?);
        shared.segments.rotate(sealed, active.clone());
        self.active = active;
        self.write_offset = SEGMENT_HEADER as u64;
        self.allocated_end = SEGMENT_HEADER as u64;
        self.pipeline.synced.store(SEGMENT_HEADER as u64, Ordering::Release);
        self.pipeline.written.store(SEGMENT_HEADER as u64, Ordering::Release);
        self.content_crc = crc32fast::Hasher::new();
        Ok(())
    }
}

/// True if a stored event holds exactly what `e` asks to append (its id aside).
fn same_content(
    e: &EventData,
    event_type: &str,
    content_type: crate::event::ContentType,
    data: &[u8],
    metadata: &[u8],
    tags: &[&str],
) -> bool {
    e.event_type == event_type
        && e.content_type == content_type
        && e.data[..] == *data
        && e.metadata[..] == *metadata
        && e.tags.len() == tags.len()
        && e.tags.iter().zip(tags).all(|(a, b)| a == b)
}

/// Upper bound of the encoded size of an append's frames.
pub(crate) fn encoded_size(stream: &str, events: &[EventData]) -> usize {
    events
        .iter()
        .map(|e| {
            64 + stream.len()
                + e.event_type.len()
                + e.tags.iter().map(|t| t.len() + 2).sum::<usize>()
                + e.data.len()
                + e.metadata.len()
        })
        .sum()
}
