//! The pipeline between writing a group and answering its appenders: which
//! groups are written and synced, one sync at a time, and publication to
//! readers strictly in order.
//!
//! This module must never publish a group before its bytes are durable under
//! `Durability::Always`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use uuid::Uuid;

use crate::error::Result;
use crate::event::AppendResult;
use crate::format::checkpoint::StreamState;
use crate::format::index::{IndexEntry, TagKey};
use crate::format::record::{self, EventView, Frame};
use crate::log::segments::ActiveSegment;
use crate::log::state::Shared;

/// Groups written to the file and not yet published, in the order they were written.
#[derive(Default)]
pub(super) struct Pipeline {
    pub(super) state: Mutex<Flight>,
    pub(super) changed: Condvar,
    /// Bytes of the active segment before this offset are known to be durable.
    pub(super) synced: AtomicU64,
    /// Bytes of the active segment before this offset are written (not
    /// necessarily synced); a sync started now covers them.
    pub(super) written: AtomicU64,
    /// One `fdatasync` of the active segment at a time, so that a failed sync
    /// is reported to the groups it concerns and never consumed by another.
    pub(super) sync_lock: Mutex<()>,
}

#[derive(Default)]
pub(super) struct Flight {
    /// Sequence number of the last group published (groups count from 1).
    pub(super) published: u64,
    /// Groups written and not yet published.
    pub(super) unpublished: usize,
}

impl Pipeline {
    /// Waits until every group written so far is published.
    pub(super) fn drain(&self) {
        let mut st = self.state.lock();
        while st.unpublished > 0 {
            self.changed.wait(&mut st);
        }
    }
}

/// A group written to the file, waiting for its sync and its turn to be published.
pub(super) struct Written {
    pub(super) seq: u64,
    pub(super) group: Group,
    /// Where the group's bytes start in the active segment.
    pub(super) offset: u64,
    /// Position of its first event.
    pub(super) first_position: u64,
    pub(super) active: Arc<ActiveSegment>,
    /// Whether this group must be synced before it is published.
    pub(super) sync: bool,
}

impl Written {
    pub(super) fn event(&self, position: u64) -> Option<EventView<'_>> {
        self.group.event(self.first_position, position)
    }
}

/// Makes the active segment durable up to at least `end`, one sync at a time.
/// A sync that another caller started after these bytes were written covers
/// them, and is not repeated. A failed sync poisons the writer: after it the
/// page cache may have dropped the written pages, so no later sync can vouch
/// for them.
pub(super) fn sync_active(shared: &Shared, pipeline: &Pipeline, active: &ActiveSegment, end: u64) -> Result<()> {
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
pub(super) fn finish(shared: &Shared, pipeline: &Pipeline, w: &Written, results: &mut Results) {
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
    if outcome.is_ok() {
        // Callers' listeners run past every lock this function took.
        shared.notifier.call_listeners();
    }
    for (i, result) in &w.group.replies {
        results[*i] = Some(match &outcome {
            Ok(()) => Ok(*result),
            Err(e) => Err(e.for_another_caller()),
        });
    }
}

/// Makes a written group visible to readers: its index entries, its streams' states, the head position.
pub(super) fn publish(shared: &Shared, w: &Written) {
    let group = &w.group;
    // The frames are decoded, and their indexed metadata values taken,
    // before the index lock: readers wait for the pushes only.
    let fields = w.active.index.read().fields().clone();
    let events: Vec<(EventView<'_>, usize, usize, Vec<TagKey>)> = group
        .frames
        .iter()
        .filter_map(|(s, e)| match record::decode_own_frame(&group.buf[*s..*e]) {
            Ok((Frame::Event(v), _)) => {
                let keys = fields.keys(v.metadata);
                Some((v, *s, *e, keys))
            }
            _ => None,
        })
        .collect();
    // Before the events are visible: a lookup that the filter tells "not
    // here" must not miss a published event.
    shared.recent_ids.insert(events.iter().map(|(v, ..)| v.id));
    // Both locks are held together (index first, the order every reader
    // nesting them uses), so a snapshot never sees one without the other.
    let mut idx = w.active.index.write();
    for (v, s, e, keys) in &events {
        let entry = IndexEntry::from_view(v, w.offset + *s as u64);
        idx.push_keyed(&entry, w.offset + *e as u64, keys);
    }
    let mut streams = shared.streams.write();
    for (name, state) in &group.streams {
        streams.set(name, *state);
    }
    drop(streams);
    drop(idx);
    shared
        .next_position
        .store(w.first_position + group.frames.len() as u64, Ordering::Release);
    shared.notifier.notify();
}

/// What the current group has staged and not yet written.
#[derive(Default)]
pub(super) struct Group {
    pub(super) buf: Vec<u8>,
    /// Frame ranges in `buf`, one per staged event.
    pub(super) frames: Vec<(usize, usize)>,
    /// Index in the batch and result of each staged request.
    pub(super) replies: Vec<(usize, AppendResult)>,
    pub(super) streams: HashMap<String, StreamState>,
    pub(super) ids: rustc_hash::FxHashMap<Uuid, u64>,
}

impl Group {
    /// The event at `position`, if this group (whose first event is at `first`) holds it.
    pub(super) fn event(&self, first: u64, position: u64) -> Option<EventView<'_>> {
        let i = usize::try_from(position.checked_sub(first)?).ok()?;
        let (s, e) = *self.frames.get(i)?;
        match record::decode_own_frame(&self.buf[s..e]) {
            Ok((Frame::Event(v), _)) => Some(v),
            _ => None,
        }
    }

    /// Drops the last `staged` events, which an append staged from `position`
    /// before it failed: an append is staged whole or not at all.
    pub(super) fn unstage(&mut self, staged: usize, position: u64) {
        if let Some(&(start, _)) = self.frames.len().checked_sub(staged).and_then(|at| self.frames.get(at)) {
            self.buf.truncate(start);
            self.frames.truncate(self.frames.len() - staged);
        }
        self.ids.retain(|_, p| *p < position);
    }
}

/// Results of a batch, filled in as groups are published.
pub(super) type Results = Vec<Option<Result<AppendResult>>>;
