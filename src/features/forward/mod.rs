//! Store and forward: a [`Forwarder`] ships the events of the global log to a
//! [`ForwardTarget`] (a database, a message bus, another store), in order,
//! from a durable checkpoint, through any outage of the target.
//!
//! The forwarder reads the log from its checkpoint through a [`Filter`] (system
//! streams are never forwarded), hands batches to the target and advances its
//! checkpoint only after the target confirms a batch. A target that fails is
//! retried with exponential backoff and jitter up to a cap; an event the target
//! rejects for good (a poison event) is parked in `$forward-<name>-parked`
//! with the target's reason, and forwarding goes on. A checkpoint that lies
//! before events removed by scavenging (or lost to damage) is reported as a gap
//! in the status, never skipped silently. A forwarder with
//! [`RetentionMode::Wait`] holds retention: scavenging keeps every event it
//! has not delivered. The hold is part of its durable checkpoint, so it holds
//! while no forwarder runs too (a store loads it when it opens: `annal compact`
//! with `annal serve` down keeps what it has not delivered),
//! until [`forget_forwarder`] drops it. A forwarder [`Forwarder::spawn`]
//! starts runs on a thread of lower priority ([`ForwardSettings::nice`]), so
//! that local appends get the processor first on a busy machine.
//!
//! The checkpoint is the last event of `$forward-<name>-checkpoint`; a target
//! that stores its own checkpoint in the same transaction as the events
//! ([`ForwardTarget::load_checkpoint`] answers `Some`) is trusted over it, which
//! makes delivery exactly once across crashes on either side. Other targets
//! must drop a redelivered event by its id (a crash between a delivery and the
//! next checkpoint save delivers the same events again).
//!
//! This module owns the forwarding protocol. It reads and appends through the
//! store like any client, runs no async runtime and must never touch files or
//! know a network protocol: targets do that, outside the library.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{EventData, ExpectedVersion, RecordedEvent};
use crate::format::dropped::DroppedRange;
use crate::format::system::{self, StoredForwardCheckpointV1, StoredHoldV1, StoredParkedV1, Version1};
use crate::query::{Direction, Filter, LogFrom, StreamFrom};
use crate::store::Store;

mod gaps;
mod saved;

pub use saved::{
    ReleasedForwarder, SavedForwarder, acknowledge_gap, forget_forwarder, register_forwarder, release_forwarder,
    saved_checkpoint, saved_forwarders,
};
use gaps::Stretch;
use saved::{fresh_checkpoint, go_live, hold_of, leave, load_checkpoint, starting};

/// Positions a forwarder that waits may pass without delivering before it
/// saves its checkpoint anyway (so that retention does not wait for events
/// its filter hides); far more than the checkpoints idle forwarders append.
const SAVE_BEHIND: u64 = 4096;

/// The system stream holding a forwarder's checkpoint.
pub fn forward_checkpoint_stream(name: &str) -> String {
    format!("$forward-{name}-checkpoint")
}

/// The dead-letter stream of a forwarder: events its target rejected for good.
pub fn forward_parked_stream(name: &str) -> String {
    format!("$forward-{name}-parked")
}

/// Checks a forwarder's name: 1-200 letters, digits or `-_.:`.
pub fn check_forwarder_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 200 || !name.chars().all(|c| c.is_alphanumeric() || "-_.:".contains(c)) {
        return Err(Error::InvalidInput(format!(
            "forwarder name {name:?} must be 1-200 letters, digits or -_.:"
        )));
    }
    Ok(())
}

/// Where a forwarder with no checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardStart {
    /// The first event of the log.
    #[default]
    Start,
    /// The head of the log when the forwarder first starts: only later events.
    End,
    /// This position (inclusive).
    Position(u64),
}

impl FromStr for ForwardStart {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "start" => Ok(ForwardStart::Start),
            "end" => Ok(ForwardStart::End),
            _ => s.parse::<u64>().map(ForwardStart::Position).map_err(|_| {
                Error::InvalidInput(format!("forward start {s:?} is not start, end or a position"))
            }),
        }
    }
}

/// Whether scavenging waits for a forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    /// Scavenging keeps every event the forwarder has not delivered, from its
    /// durable checkpoint, whether it runs or not.
    #[default]
    Wait,
    /// Scavenging ignores the forwarder; events removed before delivery are reported as a gap.
    Ignore,
}

impl FromStr for RetentionMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wait" => Ok(RetentionMode::Wait),
            "ignore" => Ok(RetentionMode::Ignore),
            _ => Err(Error::InvalidInput(format!("retention {s:?} is not wait or ignore"))),
        }
    }
}

/// How a forwarder runs. Built from [`ForwardSettings::default`] with one
/// method per field (`ForwardSettings::default().batch_size(500)`), or by
/// setting a field; new fields may come, with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardSettings {
    /// Which events are forwarded (system streams never are).
    pub filter: Filter,
    /// Where a forwarder without a checkpoint starts.
    pub start: ForwardStart,
    /// Most events in one batch handed to the target.
    pub batch_size: usize,
    /// Most events a target may have sent and not yet confirmed; a hint for
    /// targets that pipeline a batch (a batch is never larger than this).
    pub max_in_flight: usize,
    /// Whether scavenging waits for this forwarder.
    pub retention: RetentionMode,
    /// First wait after a failure; doubled after each further failure.
    pub backoff_initial: Duration,
    /// Longest wait between retries.
    pub backoff_max: Duration,
    /// The checkpoint in the store is saved at most this often (and when the
    /// forwarder stops), except after a parked event, when it is saved at once.
    pub checkpoint_interval: Duration,
    /// How long an idle forwarder waits before it looks for new events.
    pub idle_wait: Duration,
    /// The niceness (0 to 19) of the thread a forwarder runs on when it is
    /// spawned ([`Forwarder::spawn`]), on Linux: the higher, the sooner it
    /// yields the processor to local appends (the target's client runs on
    /// that thread too). Never lowers a niceness the process has already;
    /// 0 leaves the thread as it is (default 10). [`Forwarder::run`] does not change the
    /// calling thread's.
    pub nice: u8,
}

/// The niceness of a spawned forwarder's thread unless set: a background
/// forwarder gives way to local appends on a busy machine.
const DEFAULT_NICE: u8 = 10;

impl Default for ForwardSettings {
    fn default() -> Self {
        ForwardSettings {
            filter: Filter::all(),
            start: ForwardStart::Start,
            batch_size: 1000,
            max_in_flight: 10_000,
            retention: RetentionMode::Wait,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            checkpoint_interval: Duration::from_secs(1),
            idle_wait: Duration::from_millis(50),
            nice: DEFAULT_NICE,
        }
    }
}

impl ForwardSettings {
    /// Sets [`ForwardSettings::filter`].
    #[must_use]
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets [`ForwardSettings::start`].
    #[must_use]
    pub fn start(mut self, start: ForwardStart) -> Self {
        self.start = start;
        self
    }

    /// Sets [`ForwardSettings::batch_size`].
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets [`ForwardSettings::max_in_flight`].
    #[must_use]
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Sets [`ForwardSettings::retention`].
    #[must_use]
    pub fn retention(mut self, retention: RetentionMode) -> Self {
        self.retention = retention;
        self
    }

    /// Sets [`ForwardSettings::backoff_initial`].
    #[must_use]
    pub fn backoff_initial(mut self, wait: Duration) -> Self {
        self.backoff_initial = wait;
        self
    }

    /// Sets [`ForwardSettings::backoff_max`].
    #[must_use]
    pub fn backoff_max(mut self, wait: Duration) -> Self {
        self.backoff_max = wait;
        self
    }

    /// Sets [`ForwardSettings::checkpoint_interval`].
    #[must_use]
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Sets [`ForwardSettings::idle_wait`].
    #[must_use]
    pub fn idle_wait(mut self, wait: Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// Sets [`ForwardSettings::nice`].
    #[must_use]
    pub fn nice(mut self, nice: u8) -> Self {
        self.nice = nice;
        self
    }

    /// Checks the settings: sizes at least 1, a backoff cap no shorter than its start.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.max_in_flight == 0 {
            return Err(Error::InvalidInput(
                "forward batch_size and max_in_flight must be at least 1".into(),
            ));
        }
        if self.nice > 19 {
            return Err(Error::InvalidInput(format!(
                "forward nice {} must be 0 to 19",
                self.nice
            )));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(Error::InvalidInput(
                "forward backoff_max must not be shorter than backoff_initial".into(),
            ));
        }
        Ok(())
    }
}

/// A batch handed to a target.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The forwarder's name (the key of a target-side checkpoint).
    pub forwarder: &'a str,
    /// The events, in log order; may be empty when only the checkpoint moves.
    pub events: &'a [RecordedEvent],
    /// The checkpoint once this batch is delivered: every position before it
    /// is delivered, filtered out or parked.
    pub next_position: u64,
    /// Most events the target may have unconfirmed at once.
    pub max_in_flight: usize,
}

/// Why a target did not take a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The target cannot be reached or failed for now (down, timed out, busy):
    /// the batch is retried after a backoff.
    #[error("target unavailable: {0}")]
    Unavailable(String),
    /// The target will never accept the event at `index` of the batch (a
    /// poison event): the events before it are delivered again without it,
    /// and it is parked.
    #[error("target rejected event {index} of the batch: {reason}")]
    Rejected {
        /// Index of the event in [`Batch::events`].
        index: usize,
        /// The target's reason.
        reason: String,
    },
    /// The target refuses every batch until someone acts (wrong credentials, no
    /// permission, a misconfiguration): retried at the longest backoff, and
    /// reported as an error state.
    #[error("target refused: {0}")]
    Refused(String),
}

/// Where a forwarder sends its events. Calls may block (a target with an async
/// client runs its own runtime); they come from one thread at a time.
pub trait ForwardTarget: Send {
    /// A description of the target for status and logs (no secrets).
    fn describe(&self) -> String;

    /// The checkpoint the target stored for `forwarder` together with the
    /// events it holds, if it stores one (`Ok(None)` for a target that does
    /// not, or has none yet). When `Some`, the forwarder resumes from it.
    fn load_checkpoint(&mut self, forwarder: &str) -> std::result::Result<Option<u64>, TargetError>;

    /// Delivers a batch durably; `Ok` means every event is stored at the
    /// target. Must be idempotent by event id: after a crash a batch may come
    /// again. A target that stores checkpoints stores `batch.next_position`
    /// in the same transaction.
    fn deliver(&mut self, batch: &Batch<'_>) -> std::result::Result<(), TargetError>;

    /// True if the target stores the checkpoint with the events; it is then
    /// also given batches without events when only the checkpoint moves.
    fn stores_checkpoint(&self) -> bool {
        false
    }
}

/// What a forwarder is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardState {
    /// Forwarding, or idle and caught up.
    Running,
    /// Waiting before it tries the target again.
    BackingOff,
    /// Not running.
    Stopped,
    /// The target refuses every batch (credentials, permissions); retried at the longest backoff.
    Error,
}

/// A forwarder's figures, for `annal forward status`, `GET /forward` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ForwardStatus {
    /// The forwarder's name.
    pub name: String,
    /// The target ([`ForwardTarget::describe`]).
    pub target: String,
    /// What it is doing.
    pub state: ForwardState,
    /// Every position before it is delivered, filtered out, parked or skipped.
    pub checkpoint: u64,
    /// The head of the log when last looked at.
    pub head: u64,
    /// Positions between the checkpoint and the head.
    pub lag_events: u64,
    /// Bytes (data and metadata) of the events still to deliver, estimated
    /// from the average size of the events delivered so far.
    pub lag_bytes: u64,
    /// Age of the oldest event not yet delivered, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Events delivered since the forwarder started (this process).
    pub delivered_events: u64,
    /// Batches delivered since the forwarder started.
    pub delivered_batches: u64,
    /// Events delivered in total (saved with the checkpoint).
    pub delivered_total: u64,
    /// Events parked in the dead-letter stream in total.
    pub parked: u64,
    /// Positions skipped because scavenging or damage removed them before
    /// delivery, in total (for a drop the record names, the events it
    /// counts).
    pub skipped: u64,
    /// The last gap the forwarder met (or saved before a restart) that was
    /// not acknowledged: events removed before it delivered them, which it
    /// skipped. Stays set until [`acknowledge_gap`] (`GET /health` is
    /// degraded while it is).
    pub gap: Option<ForwardGap>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When the last error happened, in microseconds since the Unix epoch.
    pub last_error_micros: Option<i64>,
    /// Whether scavenging waits for it.
    pub retention: RetentionMode,
    /// Why the store's drop record (`dropped.rec`) cannot be read, with the
    /// file and offset of the damage, while it cannot: the forwarder goes on
    /// delivering every event still there, and reports every position it
    /// passes that holds no event as a gap of unknown cause.
    pub drop_record_error: Option<String>,
    /// Something that does not stop forwarding but that an operator should
    /// know (the thread of a spawned forwarder kept its priority, say): the
    /// state is not `error` for it, and `last_error` stays for failures.
    pub warning: Option<String>,
}

/// A stretch of the log removed before a forwarder delivered it, which it
/// skipped. Saved with the forwarder's checkpoint until [`acknowledge_gap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ForwardGap {
    /// The first position skipped.
    pub first_position: u64,
    /// The position after the last one skipped.
    pub end_position: u64,
    /// Events the store's drop record says were removed there (`None` for a
    /// gap it does not name: scavenging of a forwarder that ignores
    /// retention, or damage).
    pub dropped_events: Option<u64>,
    /// When the drop record says they were removed (µs since the epoch).
    pub dropped_micros: Option<i64>,
}

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
    store: Arc<Store>,
    name: String,
    settings: ForwardSettings,
    target: Box<dyn ForwardTarget>,
    /// First position not yet delivered.
    cursor: u64,
    /// Whether the target's checkpoint was loaded.
    started: bool,
    /// The totals now (its position is not kept up to date: the cursor is).
    current: StoredForwardCheckpointV1,
    /// The checkpoint last saved in the store (or loaded from it).
    saved: StoredForwardCheckpointV1,
    /// Whether `saved` is in the store (false until the first save of a new forwarder).
    stored: bool,
    last_save: Instant,
    /// Something worth saving happened since the last save (events delivered,
    /// parked or skipped). Moving past other events only is not: saving it
    /// would append a checkpoint event, which is itself a position to move
    /// past, forever.
    dirty: bool,
    payload_bytes: u64,
    /// The store's drop record as last read, with the store's count of
    /// drops it was read at (`u64::MAX`: not read yet).
    drops: (u64, Vec<DroppedRange>),
    /// Drops that end at or before this position were reported already.
    drops_reported: u64,
    status: Arc<Mutex<ForwardStatus>>,
    /// Test hook: runs after each read of a step and before its survey.
    after_read: Option<Box<dyn FnMut() + Send>>,
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
    /// leaves no trace): [`register_forwarder`] first makes the hold durable
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
    fn hold(&self) {
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
            if let Some(p) = self.target.load_checkpoint(&self.name)? {
                let from = self.cursor;
                if p > from {
                    // The target is ahead of the store's checkpoint: before a
                    // restart the forwarder passed `from..p`, and counted the
                    // drops there in memory only (the saved totals stop at
                    // the saved position). They are counted now, once: the
                    // drop record names the forwarder at where it was when
                    // each drop happened, so what it had delivered before
                    // is not counted.
                    let stretch = self.survey(from, p)?;
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
            match self.target.deliver(&batch) {
                Ok(()) => {
                    delivered += events.len();
                    self.payload_bytes += events.iter().map(|e| (e.data.len() + e.metadata.len()) as u64).sum::<u64>();
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
            let stretch = self.survey(from, next)?;
            if self.store.segment_removals() == removals {
                return Ok((read, next, stretch));
            }
        }
        let store = self.store.clone();
        store.without_scavenging(|| {
            let (read, next) = self.read_batch(from, head)?;
            let stretch = self.survey(from, next)?;
            Ok((read, next, stretch))
        })
    }

    /// The next batch of events from `from` through the filter, and the
    /// position after the stretch it covers (`head`, the head of the log
    /// when the step began, if the batch is not full).
    fn read_batch(&self, from: u64, head: u64) -> Result<(Vec<RecordedEvent>, u64)> {
        let limit = self.settings.batch_size.min(self.settings.max_in_flight);
        let read = self
            .store
            .read_all(Direction::Forward, LogFrom::Position(from), limit, &self.settings.filter)?;
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
            reason: reason.to_string(),
        };
        self.store.append_system(
            &forward_parked_stream(&self.name),
            ExpectedVersion::Any,
            vec![EventData::json("$Parked", system::encode(&record))],
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
                .read_all(Direction::Forward, LogFrom::Position(self.cursor), 1, &self.settings.filter)?
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

    fn set_state(&self, state: ForwardState) {
        self.status.lock().state = state;
    }

    fn record_failure(&self, e: &ForwardError) -> u32 {
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

    /// The wait before retry number `failures` (1 for the first): doubling
    /// from the initial backoff up to the cap, with up to half of it random.
    pub fn backoff(&self, failures: u32, refused: bool) -> Duration {
        let cap = self.settings.backoff_max;
        if refused {
            return cap;
        }
        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(30)).unwrap_or(u32::MAX);
        let full = self.settings.backoff_initial.saturating_mul(factor).min(cap);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        // Between half and all of the full wait.
        full / 2 + (full / 2) * jitter / 1000
    }

    /// Forwards until `stop` is set, backing off after failures, and saves the
    /// checkpoint when it stops. With `once`, returns when the forwarder is at
    /// the head of the log (or at the first failure, as an error).
    pub fn run(&mut self, stop: &AtomicBool, once: bool) -> std::result::Result<(), ForwardError> {
        self.set_state(ForwardState::Running);
        let result = self.run_loop(stop, once);
        let saved = self.save();
        self.set_state(ForwardState::Stopped);
        match (result, saved) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => {
                let mut s = self.status.lock();
                s.last_error = Some(e.to_string());
                s.last_error_micros = Some(self.store.clock().now_micros());
                Err(e.into())
            }
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    fn run_loop(&mut self, stop: &AtomicBool, once: bool) -> std::result::Result<(), ForwardError> {
        while !stop.load(Ordering::Relaxed) {
            match self.step() {
                Ok(Step::Progress(_)) => self.set_state(ForwardState::Running),
                Ok(Step::Idle) => {
                    self.set_state(ForwardState::Running);
                    if once {
                        return Ok(());
                    }
                    if self.last_save.elapsed() >= self.settings.checkpoint_interval {
                        self.save()?;
                    }
                    sleep_unless(stop, self.settings.idle_wait);
                }
                Err(e) => {
                    if once || matches!(e, ForwardError::Store(_)) {
                        self.record_failure(&e);
                        return Err(e);
                    }
                    let refused = matches!(e, ForwardError::Target(TargetError::Refused(_)));
                    let failures = self.record_failure(&e);
                    sleep_unless(stop, self.backoff(failures, refused));
                }
            }
        }
        Ok(())
    }

    /// Runs the forwarder on its own thread until [`ForwarderHandle::stop`].
    pub fn spawn(mut self) -> Result<ForwarderHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let status = self.status_handle();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("annal-forward-{}", self.name))
            .spawn(move || {
                note_priority(&self.status, lower_priority(self.settings.nice));
                let result = self.run(&flag, false);
                drop(self);
                result
            })
            .map_err(|e| Error::Io {
                context: "starting a forwarder thread".into(),
                source: e,
            })?;
        Ok(ForwarderHandle {
            stop,
            status,
            thread: Some(thread),
        })
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

/// Says in the status that a spawned forwarder's thread kept its priority,
/// if it did: a warning, not a failure (it forwards all the same, and its
/// state stays what its deliveries make it).
fn note_priority(status: &Mutex<ForwardStatus>, lowered: std::io::Result<()>) {
    if let Err(e) = lowered {
        status.lock().warning = Some(format!(
            "the forwarder's thread keeps its priority (its niceness could not be raised: {e}): it competes with local appends for the processor"
        ));
    }
}

/// Raises the calling thread's niceness to `nice` (never lowers it).
#[cfg(target_os = "linux")]
fn lower_priority(nice: u8) -> std::io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    // On Linux a thread id names that thread alone to setpriority.
    let me = Some(rustix::thread::gettid());
    let now = rustix::process::getpriority_process(me)?;
    if now < i32::from(nice) {
        rustix::process::setpriority_process(me, i32::from(nice))?;
    }
    Ok(())
}

/// Thread priorities are left alone where a thread cannot be named.
#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: u8) -> std::io::Result<()> {
    Ok(())
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
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

/// A shareable view of a running forwarder's figures.
#[derive(Debug, Clone)]
pub struct StatusHandle(Arc<Mutex<ForwardStatus>>);

impl StatusHandle {
    /// A snapshot of the figures.
    pub fn get(&self) -> ForwardStatus {
        self.0.lock().clone()
    }
}

/// A forwarder running on its own thread.
#[derive(Debug)]
pub struct ForwarderHandle {
    stop: Arc<AtomicBool>,
    status: StatusHandle,
    thread: Option<std::thread::JoinHandle<std::result::Result<(), ForwardError>>>,
}

impl ForwarderHandle {
    /// A snapshot of the forwarder's figures.
    pub fn status(&self) -> ForwardStatus {
        self.status.get()
    }

    /// A view of the figures that outlives this handle.
    pub fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Asks the forwarder to stop, waits for it (it saves its checkpoint) and
    /// returns how it ended.
    pub fn stop(mut self) -> std::result::Result<(), ForwardError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ForwardError::Store(Error::InvalidInput(
                "the forwarder thread panicked".into(),
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for ForwarderHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> ForwardStatus {
        ForwardStatus {
            name: "n".into(),
            target: "t".into(),
            state: ForwardState::Running,
            checkpoint: 0,
            head: 0,
            lag_events: 0,
            lag_bytes: 0,
            lag_seconds: 0.0,
            delivered_events: 0,
            delivered_batches: 0,
            delivered_total: 0,
            parked: 0,
            skipped: 0,
            gap: None,
            failures: 0,
            last_error: None,
            last_error_micros: None,
            retention: RetentionMode::Wait,
            drop_record_error: None,
            warning: None,
        }
    }

    /// Review of issue 14: a failure to set a spawned forwarder's niceness
    /// showed only as `last_error`, like a failure of its target. It is a
    /// warning: the state stays, `last_error` stays empty.
    #[test]
    fn a_niceness_that_cannot_be_set_is_a_warning_not_an_error() {
        let s = Mutex::new(status());
        note_priority(&s, Ok(()));
        assert_eq!(*s.lock(), status());
        note_priority(&s, Err(std::io::Error::from_raw_os_error(13)));
        let s = s.lock().clone();
        assert_eq!((s.state, s.last_error, s.failures), (ForwardState::Running, None, 0));
        assert!(s.warning.is_some_and(|w| w.contains("priority")));
    }

    /// A target that takes every batch.
    struct Nowhere;

    impl ForwardTarget for Nowhere {
        fn describe(&self) -> String {
            "nowhere".into()
        }
        fn load_checkpoint(&mut self, _forwarder: &str) -> std::result::Result<Option<u64>, TargetError> {
            Ok(None)
        }
        fn deliver(&mut self, _batch: &Batch<'_>) -> std::result::Result<(), TargetError> {
            Ok(())
        }
    }

    /// Review of issue 14: `release_forwarder` checked that no forwarder of
    /// the name runs, then appended its record and lifted the hold; a
    /// forwarder started in between (another thread of the process) kept
    /// running with its hold lifted, so scavenging could drop what it had
    /// not delivered. The check and the release now exclude a start.
    #[test]
    fn a_forwarder_started_while_its_name_is_released_keeps_its_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), crate::Options::default()).unwrap());
        store
            .append("s", crate::ExpectedVersion::Any, vec![crate::EventData::json("E", "{}")])
            .unwrap();
        let settings = ForwardSettings::default().retention(RetentionMode::Wait);
        for round in 0..200 {
            let name = format!("f{round}");
            // A saved checkpoint, so that the release appends its record.
            register_forwarder(&store, &name, &settings).unwrap();
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let (s, b, n) = (store.clone(), barrier.clone(), name.clone());
            let releaser = std::thread::spawn(move || {
                b.wait();
                release_forwarder(&s, &n).is_ok()
            });
            barrier.wait();
            let started = Forwarder::new(store.clone(), &name, settings.clone(), Box::new(Nowhere));
            let released = releaser.join().unwrap();
            if started.is_ok() {
                let hold = store.shared.retention_holds.lock().get(&name).copied();
                assert!(
                    hold.is_some(),
                    "round {round}: forwarder {name} runs without its hold (released: {released})"
                );
            }
            drop(started);
        }
    }
}
