//! The [`Forwarder`]: one step of forwarding (load the target's checkpoint,
//! read a batch through the filter, deliver it, park a poison event, skip a
//! gap), the checkpoint save, and the hold it keeps on retention.
//!
//! It reads and appends through the store like any client; it must never
//! touch files, and it runs no thread of its own (see `run.rs`).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::gaps::Stretch;
use super::priority::on_idle_thread;
use super::saved::{fresh_checkpoint, go_live, hold_of, leave, load_checkpoint, starting};
use super::settings::{ForwardSettings, RetentionMode};
use super::status::{ForwardGap, ForwardState, ForwardStatus, StatusHandle};
use super::target::{Batch, ForwardTarget, TargetError};
use super::{check_forwarder_name, forward_checkpoint_stream, forward_parked_stream};
use crate::error::{Error, Result};
use crate::event::{EventData, ExpectedVersion, RecordedEvent};
use crate::format::dropped::DroppedRange;
use crate::format::system::{self, StoredForwardCheckpointV1, StoredHoldV1, StoredParkedV1, Version1};
use crate::query::{Direction, LogFrom};
use crate::store::Store;

/// Positions a forwarder that waits may pass without delivering before it
/// saves its checkpoint anyway (so that retention does not wait for events
/// its filter hides); far more than the checkpoints idle forwarders append.
const SAVE_BEHIND: u64 = 4096;

/// What one step of a forwarder did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A batch was delivered (events delivered, parked or skipped; the count is of delivered events).
    Progress(usize),
    /// Nothing to forward: the forwarder is at the head of the log.
    Idle,
}

/// Forwards the global log of a store to one target.
pub struct Forwarder {
    /// The store it forwards from.
    pub(super) store: Arc<Store>,
    /// Its name (the key of its checkpoint and hold).
    pub(super) name: String,
    /// How it runs.
    pub(super) settings: ForwardSettings,
    /// Where it delivers.
    pub(super) target: Box<dyn ForwardTarget>,
    /// First position not yet delivered.
    pub(super) cursor: u64,
    /// Whether the target's checkpoint was loaded.
    pub(super) started: bool,
    /// Whether calls to the target run on threads of the idle class (a
    /// spawned forwarder with [`ForwardSettings::idle_priority`]).
    pub(super) idle_calls: bool,
    /// The totals now (its position is not kept up to date: the cursor is).
    pub(super) current: StoredForwardCheckpointV1,
    /// The checkpoint last saved in the store (or loaded from it).
    pub(super) saved: StoredForwardCheckpointV1,
    /// Whether `saved` is in the store (false until the first save of a new forwarder).
    pub(super) stored: bool,
    /// When the checkpoint was last saved (or the forwarder made).
    pub(super) last_save: Instant,
    /// Something worth saving happened since the last save (events delivered,
    /// parked or skipped). Moving past other events only is not: saving it
    /// would append a checkpoint event, which is itself a position to move
    /// past, forever.
    pub(super) dirty: bool,
    /// Bytes (data and metadata) delivered since it started, for the lag estimate.
    pub(super) payload_bytes: u64,
    /// The store's drop record as last read, with the store's count of
    /// drops it was read at (`u64::MAX`: not read yet).
    pub(super) drops: (u64, Vec<DroppedRange>),
    /// Drops that end at or before this position were reported already.
    pub(super) drops_reported: u64,
    /// Its figures, shared with status handles.
    pub(super) status: Arc<Mutex<ForwardStatus>>,
    /// Test hook: runs after each read of a step and before its survey.
    pub(super) after_read: Option<Box<dyn FnMut() + Send>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("name", &self.name)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder named `name` over `store` to `target`. Reads its checkpoint
    /// from the store (or starts where the settings say) and, with
    /// [`RetentionMode::Wait`], holds retention from there at once. Nothing
    /// is saved until it delivers (a forwarder that never reaches its target
    /// leaves no trace): [`register_forwarder`](super::register_forwarder) first makes the hold durable
    /// from the start.
    pub fn new(
        store: Arc<Store>,
        name: &str,
        settings: ForwardSettings,
        target: Box<dyn ForwardTarget>,
    ) -> Result<Forwarder> {
        check_forwarder_name(name)?;
        settings.validate()?;
        // Loaded, registered and holding under the registry's lock: a
        // release of the name on another thread comes wholly before or after.
        starting(&store.clone(), |running| {
            let loaded = load_checkpoint(&store, name)?;
            let current = StoredForwardCheckpointV1 {
                retention: hold_of(&settings),
                ..loaded.unwrap_or_else(|| fresh_checkpoint(&store, &settings))
            };
            // The checkpoint as the store has it (or this start, not stored).
            let saved = loaded.unwrap_or(current);
            let cursor = current.position;
            let status = ForwardStatus {
                name: name.to_string(),
                target: target.describe(),
                state: ForwardState::Stopped,
                checkpoint: cursor,
                head: store.head_position(),
                lag_events: store.head_position().saturating_sub(cursor),
                lag_bytes: 0,
                lag_seconds: 0.0,
                delivered_events: 0,
                delivered_batches: 0,
                delivered_total: saved.delivered,
                parked: saved.parked,
                skipped: saved.skipped,
                // A gap passed before a restart is still reported until acknowledged.
                gap: saved.gap.map(ForwardGap::from),
                failures: 0,
                last_error: None,
                last_error_micros: None,
                retention: settings.retention,
                drop_record_error: None,
                warning: None,
            };
            let f = Forwarder {
                store,
                name: name.to_string(),
                settings,
                target,
                cursor,
                started: false,
                idle_calls: false,
                current,
                saved,
                stored: loaded.is_some(),
                last_save: Instant::now(),
                // Another retention mode than the stored one is saved at the first save.
                dirty: current != saved,
                payload_bytes: 0,
                drops: (u64::MAX, Vec::new()),
                drops_reported: cursor,
                status: Arc::new(Mutex::new(status)),
                after_read: None,
            };
            go_live(running, &f.name, &f.status);
            f.hold();
            Ok(f)
        })
    }

    /// For tests only: runs `hook` in each step after the read and before
    /// the survey of what the stretch read holds no event at (so that a test
    /// can scavenge or compress in between).
    #[doc(hidden)]
    pub fn between_read_and_survey(&mut self, hook: Box<dyn FnMut() + Send>) {
        self.after_read = Some(hook);
    }

    /// The forwarder's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first position not yet delivered.
    pub fn checkpoint(&self) -> u64 {
        self.cursor
    }

    /// A snapshot of the forwarder's figures.
    pub fn status(&self) -> ForwardStatus {
        self.status.lock().clone()
    }

    /// A handle on the figures that stays valid while the forwarder runs on another thread.
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(self.status.clone())
    }

    /// Tells the store where the forwarder is: its retention hold (with
    /// [`RetentionMode::Wait`]) and, whatever the mode, its position for
    /// the drop record, which keeps its entries until it passed them. The
    /// hold is where a restart would resume: the checkpoint saved in the
    /// store (or where the settings start one that never saved), or the
    /// cursor if it is behind that (a target's own checkpoint). Never the
    /// cursor ahead of it: after a crash the forwarder passes again what it
    /// delivered since its last save, which must still be there (else it
    /// would report events it delivered as a gap).
    pub(super) fn hold(&self) {
        let resume = self.saved.position.min(self.cursor);
        let hold = (self.settings.retention == RetentionMode::Wait).then_some(resume);
        self.store.set_retention_hold(&self.name, hold);
        self.store.set_forwarder_position(&self.name, Some(self.cursor));
    }

    /// One round: load the target's checkpoint if not done yet, then deliver
    /// one batch (or find nothing to do). An error is the target's; the
    /// forwarder's position is unchanged by it.
    pub fn step(&mut self) -> std::result::Result<Step, ForwardError> {
        self.take_acknowledgement();
        if !self.started {
            let name = &self.name;
            let loaded = call_target(self.idle_calls, &self.status, &mut *self.target, |t| {
                t.load_checkpoint(name)
            })?;
            if let Some(target_at) = loaded {
                // A target past the end of the log holds positions this
                // store does not have (restored from an older copy, events
                // lost in a crash without syncs, or the target is another
                // store's): its checkpoint says nothing of this store's
                // events. The forwarder goes on from its own checkpoint
                // (what it delivered again, the target drops by id), and
                // sets the target's checkpoint there before anything else,
                // so that a restart before its next delivery does not read
                // the bad one again and pass over what was appended since.
                // Said loudly, never silently.
                let head = self.store.head_position();
                let own = self.cursor.min(head);
                if target_at > head {
                    let correct = Batch {
                        forwarder: &self.name,
                        events: &[],
                        next_position: own,
                        max_in_flight: self.settings.max_in_flight,
                    };
                    call_target(self.idle_calls, &self.status, &mut *self.target, |t| {
                        t.deliver(&correct)
                    })?;
                    let msg = format!(
                        "the target's checkpoint ({target_at}) was past the end of this store's log ({head}): the store was restored from an older copy, lost events in a crash, or the target is another store's; forwarder {:?} set it back to its own checkpoint ({own}) and goes on from there: the target gets positions {own}..{head} again (it drops by event id those it holds) and may get {head}..{target_at} again, with other events",
                        self.name
                    );
                    self.status.lock().add_warning(msg);
                }
                let p = if target_at > head { own } else { target_at };
                let from = self.cursor;
                if p > from {
                    // The target is ahead of the store's checkpoint: before a
                    // restart the forwarder passed `from..p`, and counted the
                    // drops there in memory only (the saved totals stop at
                    // the saved position). They are counted now, once: the
                    // drop record names the forwarder at where it was when
                    // each drop happened, so what it had delivered before
                    // is not counted.
                    let mut stretch = self.survey(from, p, &[])?;
                    // The target holds what the forwarder delivered there:
                    // an event the retention policy removed since may have
                    // been delivered before, and the drop record alone says
                    // which drops came before delivery.
                    stretch.forget_removed();
                    self.cursor = p;
                    self.note_drops(from, p, &stretch);
                } else {
                    self.cursor = p;
                }
                self.hold();
            }
            self.started = true;
        }
        let head = self.store.head_position();
        if self.cursor >= head {
            self.refresh(head, None)?;
            return Ok(Step::Idle);
        }
        self.skip_gap(head)?;
        if self.cursor >= head {
            self.refresh(head, None)?;
            return Ok(Step::Progress(0));
        }
        let from = self.cursor;
        // What this stretch holds no event at is reported once the cursor
        // has passed it (a failed delivery passes nothing).
        let (read, next, stretch) = self.read_stretch(from, head)?;
        let mut events: Vec<RecordedEvent> = read.into_iter().filter(|e| !e.stream.starts_with('$')).collect();
        let mut next = next;
        let mut delivered = 0usize;
        // A target that keeps the checkpoint hears of a stretch without events
        // only when it is long: its next batch records it anyway.
        let stores = self.target.stores_checkpoint();
        let mut tell = stores && next - self.cursor >= self.settings.batch_size as u64;
        loop {
            if events.is_empty() && !tell {
                break;
            }
            let batch = Batch {
                forwarder: &self.name,
                events: &events,
                next_position: next,
                max_in_flight: self.settings.max_in_flight,
            };
            match call_target(self.idle_calls, &self.status, &mut *self.target, |t| t.deliver(&batch)) {
                Ok(()) => {
                    delivered += events.len();
                    self.payload_bytes += events
                        .iter()
                        .map(|e| (e.data.len() + e.metadata.len()) as u64)
                        .sum::<u64>();
                    break;
                }
                Err(TargetError::Rejected { index, reason }) if index < events.len() => {
                    if index > 0 {
                        // Deliver what comes before the poison event first.
                        next = events[index].position;
                        events.truncate(index);
                        continue;
                    }
                    let poison = events.remove(0);
                    self.park(&poison, &reason)?;
                    self.cursor = poison.position + 1;
                    self.note_drops(from, self.cursor, &stretch);
                    self.hold();
                    self.save()?;
                    // A target that keeps the checkpoint must hear that it moved past the poison.
                    tell = stores;
                    if events.is_empty() && !stores {
                        // The rest of the read comes again in the next step.
                        next = self.cursor;
                        break;
                    }
                    // The events after it, from the same read, go on.
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.cursor = next.max(self.cursor);
        self.note_drops(from, self.cursor, &stretch);
        self.current.delivered += delivered as u64;
        self.dirty |= delivered > 0;
        self.hold();
        {
            let mut s = self.status.lock();
            s.delivered_events += delivered as u64;
            s.delivered_batches += u64::from(delivered > 0);
            s.delivered_total = self.current.delivered;
            s.failures = 0;
        }
        if self.last_save.elapsed() >= self.settings.checkpoint_interval {
            self.save()?;
        }
        self.refresh(self.store.head_position(), None)?;
        Ok(Step::Progress(delivered))
    }

    /// Reads the next batch from `from` (with `head` the head of the log
    /// when the step began): the events, the position after the stretch it
    /// covers, and what that stretch holds no event at (dropped inside it,
    /// between events that stay), surveyed as the read saw it. A scavenge
    /// that removes events between the read and the survey makes it read
    /// again, so that an event the read passed over (one its filter hid,
    /// say) and a scavenge removed since is never counted as skipped, and
    /// one gone before the read always is. After `OPTIMISTIC_READS` reads
    /// spoiled so, it reads and surveys while no scavenge runs (waiting for
    /// the one that runs): scavenges that keep removing events cannot keep
    /// it from moving on.
    fn read_stretch(&mut self, from: u64, head: u64) -> Result<(Vec<RecordedEvent>, u64, Stretch)> {
        const OPTIMISTIC_READS: usize = 3;
        for _ in 0..OPTIMISTIC_READS {
            let removals = self.store.segment_removals();
            let (read, next) = self.read_batch(from, head)?;
            if let Some(hook) = &mut self.after_read {
                hook();
            }
            let known: Vec<u64> = read.iter().map(|e| e.position).collect();
            let stretch = self.survey(from, next, &known)?;
            if self.store.segment_removals() == removals {
                return Ok((read, next, stretch));
            }
        }
        let store = self.store.clone();
        store.without_scavenging(|| {
            let (read, next) = self.read_batch(from, head)?;
            let known: Vec<u64> = read.iter().map(|e| e.position).collect();
            let stretch = self.survey(from, next, &known)?;
            Ok((read, next, stretch))
        })
    }

    /// The next batch of events from `from` through the filter, and the
    /// position after the stretch it covers (`head`, the head of the log
    /// when the step began, if the batch is not full).
    fn read_batch(&self, from: u64, head: u64) -> Result<(Vec<RecordedEvent>, u64)> {
        let limit = self.settings.batch_size.min(self.settings.max_in_flight);
        let read = self.store.read_all(
            Direction::Forward,
            LogFrom::Position(from),
            limit,
            &self.settings.filter,
        )?;
        let next = match read.last() {
            Some(last) if read.len() == limit => last.position + 1,
            Some(last) => (last.position + 1).max(head),
            None => head,
        };
        Ok((read, next))
    }

    fn park(&mut self, event: &RecordedEvent, reason: &str) -> Result<()> {
        let record = StoredParkedV1 {
            version: Version1,
            position: event.position,
            stream: event.stream.clone(),
            revision: event.revision,
            event_id: event.id.to_string(),
            deliveries: 1,
            reason: system::cut_on_char(reason, crate::features::persistent::MAX_PARK_REASON).to_string(),
        };
        // Cut further where the record would not fit the store's event size.
        let data = record.encode_within(self.store.max_event_size());
        self.store.append_system(
            &forward_parked_stream(&self.name),
            ExpectedVersion::Any,
            vec![EventData::json("$Parked", data)],
        )?;
        self.current.parked += 1;
        self.dirty = true;
        let mut s = self.status.lock();
        s.parked = self.current.parked;
        s.last_error = Some(format!(
            "event {} at position {} parked in {}: {reason}",
            event.id,
            event.position,
            forward_parked_stream(&self.name)
        ));
        s.last_error_micros = Some(self.store.clock().now_micros());
        Ok(())
    }

    /// Saves the checkpoint in the store if it moved since the last save.
    pub fn save(&mut self) -> Result<()> {
        self.last_save = Instant::now();
        self.take_acknowledgement();
        // The hold is the saved position: one that waits saves when it
        // passed many positions without delivering (events its filter
        // hides), or retention would wait for those forever. The checkpoint
        // event a save appends is one position, and every forwarder's saves
        // move every cursor: the threshold (at least SAVE_BEHIND) keeps idle
        // forwarders, however many and whatever their batch size, from
        // saving again for each other's checkpoints.
        let behind = self.settings.retention == RetentionMode::Wait
            && self.cursor.saturating_sub(self.saved.position) >= (self.settings.batch_size as u64).max(SAVE_BEHIND);
        if !self.dirty && !behind {
            return Ok(());
        }
        let record = StoredForwardCheckpointV1 {
            position: self.cursor,
            ..self.current
        };
        if record == self.saved {
            return Ok(());
        }
        self.store.append_system(
            &forward_checkpoint_stream(&self.name),
            ExpectedVersion::Any,
            vec![EventData::json("$ForwardCheckpoint", system::encode(&record))],
        )?;
        self.saved = record;
        self.stored = true;
        self.dirty = false;
        // The hold follows the saved checkpoint.
        self.hold();
        Ok(())
    }

    /// Drops the gap that [`acknowledge_gap`] cleared from the status since
    /// (only it clears the status' gap while the forwarder still has one),
    /// so that the next save does not save it again.
    fn take_acknowledgement(&mut self) {
        if self.current.gap.is_some() && self.status.lock().gap.is_none() {
            self.current.gap = None;
            self.dirty = true;
        }
    }

    /// Updates the lag figures.
    fn refresh(&self, head: u64, state: Option<ForwardState>) -> Result<()> {
        let oldest = if self.cursor < head {
            self.store
                .read_all(
                    Direction::Forward,
                    LogFrom::Position(self.cursor),
                    1,
                    &self.settings.filter,
                )?
                .first()
                .map(|e| e.timestamp_micros)
        } else {
            None
        };
        let now = self.store.clock().now_micros();
        let mut s = self.status.lock();
        if let Some(state) = state {
            s.state = state;
        }
        s.checkpoint = self.cursor;
        s.head = head;
        s.lag_events = head.saturating_sub(self.cursor);
        let average = self.payload_bytes.checked_div(s.delivered_events).unwrap_or(0);
        s.lag_bytes = s.lag_events.saturating_mul(average);
        s.lag_seconds = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1e6);
        Ok(())
    }

    /// Sets the state in the status.
    pub(super) fn set_state(&self, state: ForwardState) {
        self.status.lock().state = state;
    }

    /// Records a failed attempt in the status; returns the failures since the last success.
    pub(super) fn record_failure(&self, e: &ForwardError) -> u32 {
        let mut s = self.status.lock();
        s.failures = s.failures.saturating_add(1);
        s.last_error = Some(e.to_string());
        s.last_error_micros = Some(self.store.clock().now_micros());
        s.state = match e {
            ForwardError::Target(TargetError::Refused(_)) => ForwardState::Error,
            _ => ForwardState::BackingOff,
        };
        s.failures
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        leave(&self.store, &self.name, &self.status);
        self.store.set_forwarder_position(&self.name, None);
        // The hold stays, from what the store holds durably.
        let hold = (self.stored && self.saved.retention == StoredHoldV1::Wait).then_some(self.saved.position);
        self.store.set_retention_hold(&self.name, hold);
    }
}

/// Why a forwarder stopped or a step failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The target did not take a batch.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The store failed (a read, or the append of a checkpoint or parked record).
    #[error(transparent)]
    Store(#[from] Error),
}

/// Makes one call to the target: on a new thread of the idle class if
/// `idle` (see [`on_idle_thread`]; Linux only), else on this one.
fn call_target<T: Send>(
    idle: bool,
    status: &Mutex<ForwardStatus>,
    target: &mut dyn ForwardTarget,
    call: impl FnOnce(&mut dyn ForwardTarget) -> std::result::Result<T, TargetError> + Send,
) -> std::result::Result<T, TargetError> {
    if !idle || !cfg!(target_os = "linux") {
        return call(target);
    }
    on_idle_thread(|| call(target), |w| status.lock().add_warning(w))
        .unwrap_or_else(|e| Err(TargetError::Unavailable(e)))
}
