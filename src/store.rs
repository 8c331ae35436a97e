//! The public handle ([`Store`]): opening, appending, reading, closing.
//!
//! A facade over the log ([`crate::log`]) and the maintenance jobs
//! ([`crate::maintenance`]): it checks a caller's input, hands appends to the
//! writer and reads to the read paths, and starts and stops background work.
//! It must never encode a byte or touch a file itself.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{self, AppendResult, EventData, ExpectedVersion, RecordedEvent, StreamInfo};
use crate::log::state::Shared;
use crate::log::writer::{AppendRequest, Committer};
use crate::options::Options;
use crate::query::{AppendCondition, Cancel, Direction, Filter, LogFrom, StreamFrom};
use crate::storage::{FsStorage, Storage};

/// annal's own system stream ([`Store::mark_system_event`]).
pub const SYSTEM_STREAM: &str = "$annal";
/// The type of the event [`Store::mark_system_event`] writes.
pub const STORE_CREATED_TYPE: &str = "$annal-store-created";
/// The fixed id of that event.
pub const STORE_CREATED_ID: Uuid = Uuid::from_u128(0x616e_6e61_6c2d_4000_8000_0000_0000_0001);

/// One append of a batch given to [`Store::append_batch`]: what
/// [`Store::append`] (or [`Store::append_if`], with a condition) takes.
#[derive(Debug, Clone)]
pub struct Append {
    /// The stream appended to.
    pub stream: String,
    /// What the stream must look like before this append.
    pub expected: ExpectedVersion,
    /// The events, appended atomically.
    pub events: Vec<EventData>,
    /// A consistency-boundary condition, as for [`Store::append_if`].
    pub condition: Option<AppendCondition>,
}

impl Append {
    /// An append of `events` to `stream` after checking `expected`.
    pub fn new(stream: impl Into<String>, expected: ExpectedVersion, events: Vec<EventData>) -> Self {
        Append {
            stream: stream.into(),
            expected,
            events,
            condition: None,
        }
    }

    /// Adds a consistency-boundary condition (see [`Store::append_if`]).
    pub fn with_condition(mut self, condition: AppendCondition) -> Self {
        self.condition = Some(condition);
        self
    }
}

/// The longest a background thread waits before it looks at the clock again.
const SCHEDULE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

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
    /// State of features built on the store (consumer groups), created on first use.
    extensions: Mutex<Vec<Arc<dyn Extension>>>,
}

/// State that a feature built on the store API keeps while the store is open
/// (the loaded consumer groups), and settles when it closes. The store holds it
/// without knowing the feature, so features depend on the store, never the
/// other way round.
pub(crate) trait Extension: std::any::Any + Send + Sync {
    /// Saves what must outlive the store; called once at close, unless the
    /// store is read-only.
    fn close(&self, store: &Store) -> Result<()>;
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
        // The open succeeded: the cuts it reports (its own and those of
        // earlier opens that failed after cutting) need no other report. Not
        // sooner: an open that fails after cutting leaves them listed.
        crate::log::damage::forget_unreported(&*store.shared.storage, &store.shared.dir);
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
            extensions: Mutex::new(Vec::new()),
        };
        store.shared.load_metadata()?;
        // Forwarders that wait hold retention from their saved checkpoints, running or not.
        crate::maintenance::retention::load_holds(&store.shared)?;
        store.shared.check_budget(true);
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
        let damage = shared.damage.first().map(|d| d.error().to_string()).or_else(|| {
            shared.subjects.header_damage().map(|why| {
                format!(
                    "{}: {why}",
                    shared.dir.join(crate::format::subjects::SUBJECTS_FILE).display()
                )
            })
        });
        let reason = match damage {
            Some(d) => {
                format!("it is damaged and open degraded, for reads of the intact data only ({d}); run `annal repair`")
            }
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
                if store.shared.damage.is_empty() && store.shared.subjects.header_damage().is_none() {
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
    pub fn damage(&self) -> &[crate::log::damage::Damage] {
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
            // A seal that finds the sealed data over the disk budget wakes it early.
            let wanted = |shared: &Shared| shared.scavenge_wanted.swap(false, std::sync::atomic::Ordering::Relaxed);
            store.every(
                std::time::Duration::from_millis(ms),
                "annal-scavenger",
                wanted,
                |shared| {
                    // A failed run is retried at the next tick; `scavenge` reports errors on demand.
                    let result = crate::maintenance::retention::scavenge(shared, &shared.options.retention);
                    shared.record_background("scavenging", result);
                },
            )?;
        }
        if let Some(c) = store.shared.options.compression {
            store.every(
                std::time::Duration::from_millis(500),
                "annal-compressor",
                |_| false,
                move |shared| {
                    let result = crate::maintenance::compression::compress_sealed(shared, &c, true);
                    shared.record_background("compression", result);
                },
            )?;
        }
        Ok(())
    }

    /// The clock the store reads the time from ([`Options::clock`]).
    pub fn clock(&self) -> &dyn crate::clock::Clock {
        &*self.shared.options.clock
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

    /// Appends to several streams in one group commit: the appends are
    /// written together and made durable by one sync (per the durability
    /// option), which is much faster than the same appends one by one from
    /// one thread. Each append is still checked (expected version, ids,
    /// condition) and made atomic on its own, in the order given, so one
    /// failing its check does not stop the others; the results are in order.
    ///
    /// The input of every append (stream names, sizes, duplicate ids) is
    /// checked before any is queued: if one is invalid, nothing is appended
    /// and the error names it by its index.
    pub fn append_batch(&self, appends: Vec<Append>) -> Result<Vec<Result<AppendResult>>> {
        let mut requests = Vec::with_capacity(appends.len());
        for (i, a) in appends.into_iter().enumerate() {
            self.check_append(&a.stream, &a.events).map_err(|e| match e {
                Error::InvalidInput(m) => Error::InvalidInput(format!("append {i} of the batch: {m}")),
                other => other,
            })?;
            requests.push(AppendRequest::new(a.stream, a.expected, a.events, a.condition));
        }
        for r in &requests {
            self.prepare_subjects(&r.events)?;
        }
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let Some(committer) = &self.committer else {
            return Err(Error::Closed(None));
        };
        Ok(committer
            .append_many(requests)
            .into_iter()
            .map(|r| match r {
                Err(Error::Closed(None)) => Err(self.closed_error()),
                other => other,
            })
            .collect())
    }

    /// Runs `work` on a background thread every `period` by the store's clock,
    /// until the store closes. The thread looks at the clock at least every
    /// [`SCHEDULE_TICK`], so a clock moved by hand (tests) is noticed quickly,
    /// and runs `work` at once when `wake` says so at such a look.
    fn every(
        &self,
        period: std::time::Duration,
        name: &str,
        wake: fn(&Shared) -> bool,
        work: impl Fn(&Shared) + Send + 'static,
    ) -> Result<()> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let shared = self.shared.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let clock = shared.options.clock.clone();
                let mut due = clock.now() + period;
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(period.min(SCHEDULE_TICK))
                {
                    // The wake flag is taken first, so that a run due anyway clears it too.
                    let woken = wake(&shared);
                    if woken || clock.now() >= due {
                        work(&shared);
                        due = clock.now() + period;
                    }
                }
            })
            .map_err(|e| Error::io(format!("starting the {name} thread"), e))?;
        self.maintenance.lock().push((stop, handle));
        Ok(())
    }

    /// Seals the active segment now, if it holds any position, so that
    /// compression and the other work on sealed segments can take it; the
    /// next append starts a new segment. `annal compact` does this before it
    /// compresses, so that a store smaller than one segment is compressed
    /// too. Returns whether a segment was sealed.
    pub fn seal_active_segment(&self) -> Result<bool> {
        self.check_writable()?;
        let Some(committer) = &self.committer else {
            return Err(Error::Closed(None));
        };
        match committer.seal_active() {
            Err(Error::Closed(None)) => Err(self.closed_error()),
            other => other,
        }
    }

    /// Compresses, now, every sealed segment not compressed yet (with the
    /// store's compression settings, or the defaults if compression is off).
    pub fn compress(&self) -> Result<crate::maintenance::compression::CompressReport> {
        self.check_writable()?;
        let options = self.shared.options.compression.unwrap_or_default();
        crate::maintenance::compression::compress_sealed(&self.shared, &options, false)
    }

    /// Sets (or, with `None`, lifts) the retention hold of the forwarder
    /// `name`: scavenging keeps every event at or after `position`.
    pub(crate) fn set_retention_hold(&self, name: &str, position: Option<u64>) {
        set_or_forget(&mut self.shared.retention_holds.lock(), name, position);
        // Appends stopped for the budget resume as soon as it holds again.
        if self.shared.budget_full.lock().is_some() {
            self.shared.check_budget(false);
        }
    }

    /// Records (or, with `None`, forgets) where the forwarder `name` that
    /// runs over this store is, whatever its retention mode: the drop
    /// record names it and keeps its entries for it (this holds no
    /// retention: [`Store::set_retention_hold`] does).
    pub(crate) fn set_forwarder_position(&self, name: &str, position: Option<u64>) {
        set_or_forget(&mut self.shared.forwarder_positions.lock(), name, position);
    }

    /// Takes the released forwarder `name` out of the drop record's entries
    /// and prunes those no forwarder can pass again: (entries that named
    /// it, entries pruned).
    pub(crate) fn release_from_drops(&self, name: &str) -> Result<(usize, usize)> {
        self.check_writable()?;
        crate::maintenance::retention::release_from_drops(&self.shared, name)
    }

    /// What the disk-budget policy `drop-oldest` removed before forwarders
    /// delivered it (the store's drop record, `dropped.rec`), oldest first;
    /// empty if it never did. A record that cannot be read is an error (it
    /// is never taken as empty). An entry may record that entries were lost
    /// to damage ([`DroppedRange::records_lost`](crate::DroppedRange::records_lost)):
    /// its `events` is `u64::MAX`, no count.
    pub fn dropped(&self) -> Result<Vec<crate::format::dropped::DroppedRange>> {
        crate::maintenance::retention::load_dropped(&self.shared)
    }

    /// How many entries scavenging added to the drop record since the store
    /// opened: a reader of [`Store::dropped`] reads again when it changes.
    pub(crate) fn drop_generation(&self) -> u64 {
        self.shared.drops_recorded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The first position at or after `position` that holds an event (of any
    /// stream, deleted or not); `None` if there is none before the head. A
    /// position without an event was removed by scavenging or lost to damage.
    pub(crate) fn first_event_position_from(&self, position: u64) -> Result<Option<u64>> {
        self.shared.first_match_after(&Filter::all(), position.checked_sub(1))
    }

    /// The positions in `from..to` that hold no event (of any stream,
    /// deleted or not), as sorted, disjoint spans (start, end). Reads every
    /// event there: for rare checks only.
    pub(crate) fn empty_spans_in(&self, from: u64, to: u64) -> Result<Vec<(u64, u64)>> {
        self.shared.empty_spans_in(from, to)
    }

    /// How many times scavenging replaced a sealed segment by one with
    /// fewer events since the store opened: a position loses its event only
    /// when this grows, so what a reader saw between two equal values is
    /// what the store held all along.
    pub(crate) fn segment_removals(&self) -> u64 {
        self.shared.segments.removals()
    }

    /// Runs `f` while no scavenge (nor compression) runs, waiting for the
    /// one that runs, so that no position loses its event meanwhile. A
    /// scavenge can take a while: for a reader that could not find a quiet
    /// moment otherwise.
    pub(crate) fn without_scavenging<R>(&self, f: impl FnOnce() -> R) -> R {
        let _no_scavenge = self.shared.scavenging.lock();
        f()
    }

    /// The feature state of type `T`, created on first use.
    pub(crate) fn extension<T: Extension + Default>(&self) -> Arc<T> {
        let mut list = self.extensions.lock();
        for e in list.iter() {
            let any: Arc<dyn std::any::Any + Send + Sync> = e.clone();
            if let Ok(t) = any.downcast::<T>() {
                return t;
            }
        }
        let t = Arc::new(T::default());
        list.push(t.clone());
        t
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
    /// each kept in `torn/`, with those cut by earlier opens that failed
    /// after cutting (no cut goes unreported). Empty after a clean close.
    /// [`crate::log::damage::torn_tails`] lists every torn tail ever kept.
    pub fn torn_tails_at_open(&self) -> &[crate::log::damage::TornTail] {
        &self.shared.torn_at_open
    }

    /// What this open cut from `subjects.key`: torn last records (a key
    /// whose write never finished, so no event was sealed under it), each
    /// kept in `torn/`, with those cut by earlier opens that failed; one
    /// sentence each. Also the store's last background error at open, which a
    /// later background failure replaces; this list stays.
    pub fn key_cuts_at_open(&self) -> &[String] {
        &self.shared.key_cuts_at_open
    }

    /// True once the store has begun closing.
    pub(crate) fn is_closing(&self) -> bool {
        self.shared.notifier.is_closed()
    }

    /// Writes annal's own system event, `$annal-store-created` in stream
    /// `$annal` (format.md, "System stream records"), unless the stream
    /// already has it: a store then holds a `$`-typed event, as a KurrentDB
    /// database does, for clients that look for one. The event has a fixed
    /// id and empty JSON data; callers still cannot write `$` streams.
    /// Returns true if it wrote the event now.
    pub fn mark_system_event(&self) -> Result<bool> {
        if self.stream_info(SYSTEM_STREAM).is_some() {
            return Ok(false);
        }
        let event = EventData::json(STORE_CREATED_TYPE, "{}").with_id(STORE_CREATED_ID);
        match self.append_system(SYSTEM_STREAM, ExpectedVersion::NoStream, vec![event]) {
            Ok(_) => Ok(true),
            // Another caller wrote it first.
            Err(Error::WrongExpectedVersion { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Appends to a system stream (`$`-prefixed), which callers cannot write.
    pub(crate) fn append_system(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        debug_assert!(stream.starts_with('$'));
        self.check_input(stream, &events)?;
        self.queue(stream, expected, events, None)
    }

    fn submit(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) -> Result<AppendResult> {
        self.check_append(stream, &events)?;
        self.prepare_subjects(&events)?;
        self.queue(stream, expected, events, condition)
    }

    /// Makes sure every subject the events name has a key, durable in
    /// `subjects.key` before any event sealed under it is written (and, for
    /// events that arrive erased, that their key id is listed as shredded).
    fn prepare_subjects(&self, events: &[EventData]) -> Result<()> {
        for subject in events.iter().filter_map(|e| e.subject.as_deref()) {
            self.check_writable()?;
            self.shared.subjects.key_for(subject)?;
        }
        if events.iter().any(|e| e.erased) {
            self.check_writable()?;
            self.shared.subjects.ensure_arrived_erased()?;
        }
        Ok(())
    }

    /// The checks of an append's input and of the store's state that need no
    /// look at the log: reserved and deleted streams, a full disk budget,
    /// then [`Store::check_input`].
    fn check_append(&self, stream: &str, events: &[EventData]) -> Result<()> {
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
        if let Some((forwarder, held_bytes, max_bytes)) = self.shared.budget_full.lock().clone() {
            return Err(Error::BudgetFull {
                forwarder,
                held_bytes,
                max_bytes,
            });
        }
        self.check_input(stream, events)
    }

    /// Refuses writes to a store open for reading only.
    fn check_writable(&self) -> Result<()> {
        match &self.read_only {
            Some(reason) => Err(Error::ReadOnly { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// The checks of an append's input: writable store, stream name, event
    /// count and sizes, ids unique within the append.
    fn check_input(&self, stream: &str, events: &[EventData]) -> Result<()> {
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
        for e in events {
            e.validate(o.max_event_size)?;
            if let Some(id) = e.id
                && !ids.insert(id)
            {
                return Err(Error::InvalidInput(format!(
                    "event id {id} appears twice in one append"
                )));
            }
        }
        let size = crate::log::writer::encoded_size(stream, events);
        if size > o.max_append_size {
            return Err(Error::InvalidInput(format!(
                "append of about {size} bytes exceeds the limit of {}",
                o.max_append_size
            )));
        }
        Ok(())
    }

    /// Hands a checked append to the writer and waits for it.
    fn queue(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) -> Result<AppendResult> {
        let Some(committer) = &self.committer else {
            return Err(Error::Closed(None));
        };
        let result = committer.append(AppendRequest::new(stream.to_string(), expected, events, condition));
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

    /// As [`Store::read_stream`], but stops early once the events read hold
    /// `max_bytes` of data and metadata (always with at least one event, if
    /// there is one): for readers that answer within a byte budget. A read
    /// that returns fewer than `limit` events whose bytes stay under
    /// `max_bytes` reached the end of the stream.
    pub fn read_stream_within(
        &self,
        stream: &str,
        direction: Direction,
        from: StreamFrom,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared
            .read_stream_visible_within(stream, direction, from, limit, max_bytes)
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

    /// As [`Store::read_all`], but stops early once the events read hold
    /// `max_bytes` of data and metadata (always with at least one event, if
    /// there is one): for readers that answer within a byte budget.
    pub fn read_all_within(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared.read_log_within(direction, from, limit, filter, max_bytes)
    }

    /// As [`Store::read_all_within`], but fails with [`Error::Cancelled`]
    /// (having returned nothing) once `cancel` is cancelled or its deadline
    /// passes: the read looks at it before each segment and each event it
    /// reads, so a long filtered scan stops soon after its caller gives up.
    pub fn read_all_cancellable(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
        max_bytes: usize,
        cancel: &Cancel,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared
            .read_log_cancellable(direction, from, (limit, max_bytes), filter, cancel)
    }

    /// As [`Store::count`], but a count that reads events fails with
    /// [`Error::Cancelled`] once `cancel` is cancelled or its deadline passes
    /// (it looks before each event it reads). A count the indexes serve reads
    /// no event and does not look at `cancel`.
    pub fn count_cancellable(&self, filter: &Filter, cancel: &Cancel) -> Result<u64> {
        self.shared.count_cancellable(filter, cancel)
    }

    /// As [`Store::count_by`], cancellable as [`Store::count_cancellable`] is.
    pub fn count_by_cancellable(
        &self,
        filter: &Filter,
        by: crate::query::GroupBy,
        cancel: &Cancel,
    ) -> Result<std::collections::BTreeMap<String, u64>> {
        self.shared.count_by_cancellable(filter, by, cancel)
    }

    /// [`Store::count`] if the indexes alone can answer it (see there when
    /// they can), without reading an event; `None` when the count would have
    /// to read the matching events. Lets a caller spend a scarce resource
    /// (a thread, a place in a queue) only on counts that scan.
    pub fn count_from_indexes(&self, filter: &Filter) -> Result<Option<u64>> {
        self.shared.count_from_indexes(filter)
    }

    /// [`Store::count_by`] if the indexes alone can answer it, as
    /// [`Store::count_from_indexes`] does; `None` when it would read events.
    pub fn count_by_from_indexes(
        &self,
        filter: &Filter,
        by: crate::query::GroupBy,
    ) -> Result<Option<std::collections::BTreeMap<String, u64>>> {
        self.shared.count_by_from_indexes(filter, by)
    }

    /// The number of events a read of the whole log with `filter` would
    /// return. A filter on stream names only (prefix, regular expression,
    /// topic patterns, aggregate), or on types only (types, type patterns,
    /// type regular expression), is counted from the stream or type indexes
    /// without reading an event when no stream has metadata, the store is
    /// not damaged and every index can answer exactly (for types: version-3
    /// and -4 files with no two type names on one key). A filter on tags and
    /// indexed metadata fields only is counted from the tag postings, reading
    /// one event per key and sealed segment (version-4 files; a segment whose
    /// file cannot tell whose entries a key holds is read). Any other count
    /// reads the candidate events, as a read does.
    pub fn count(&self, filter: &Filter) -> Result<u64> {
        self.shared.count(filter)
    }

    /// [`Store::count`], broken down by event type, stream, category or UTC day.
    pub fn count_by(
        &self,
        filter: &Filter,
        by: crate::query::GroupBy,
    ) -> Result<std::collections::BTreeMap<String, u64>> {
        self.shared.count_by(filter, by)
    }

    /// Looks up one event by id.
    pub fn event_by_id(&self, id: Uuid) -> Result<Option<RecordedEvent>> {
        self.event_by_id_where(id, |_| true)
    }

    /// Looks up one event by id, answering `None` for an event whose stream
    /// `admit` refuses, as for an unknown id: a server asks it with the
    /// streams a caller may read, so that the answer tells nothing of other
    /// streams. The stream is checked on the event's sound frame before its
    /// personal fields are opened, so another stream's event whose subject
    /// key cannot be read is not this caller's error either. A frame that
    /// fails its check cannot tell its stream: its damage is the answer.
    pub fn event_by_id_where(&self, id: Uuid, admit: impl Fn(&str) -> bool) -> Result<Option<RecordedEvent>> {
        match self.shared.find_event_where(&id, 0, &admit) {
            Some((_, ev)) => {
                Ok(Some(ev?).filter(|e| self.shared.is_visible(e, self.shared.options.clock.now_micros())))
            }
            None => Ok(None),
        }
    }

    /// Whether the store holds an event with this id, visible to reads or
    /// not: an event of a deleted stream, or one past its stream's max-age,
    /// max-count or truncation that no scavenge has removed yet, still holds
    /// its id, and an append that repeats the id meets it (its idempotency
    /// check sees what this sees). Fails where the event's frame or index is
    /// damaged, as a read does.
    pub fn holds_event_id(&self, id: Uuid) -> Result<bool> {
        match self.shared.find_event_since(&id, 0) {
            Some((_, found)) => found.map(|_| true),
            None => Ok(false),
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

    /// Every stream with its current revision, sorted by name. It works on
    /// the sorted copy of the names that [`Store::streams_page`] uses, so the
    /// stream map's lock is never held for the whole pass (appends take it
    /// to publish).
    pub fn streams(&self) -> Vec<StreamInfo> {
        let names = self.shared.sorted_stream_names();
        self.stream_infos(names.iter().map(|n| &**n))
    }

    /// One page of streams by name: of the streams `keep` accepts and whose
    /// names sort after `after` (all when `None`), the first `limit`, sorted
    /// by name; with how many streams `keep` accepts in all, and whether more
    /// follow the page. It works on a sorted copy of the names (made again
    /// only when streams were created since), so appends are never held up
    /// by `keep` or by the pass over every name. Without the total,
    /// [`Store::streams_page_from`] passes over only the names a page needs.
    pub fn streams_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> (Vec<StreamInfo>, u64, bool) {
        let names = self.shared.sorted_stream_names();
        let start = after.map_or(0, |a| names.partition_point(|n| &**n <= a));
        let mut matched = 0u64;
        let mut page: Vec<&str> = Vec::with_capacity(limit.min(1024) + 1);
        for (i, name) in names.iter().enumerate() {
            if !keep(name) {
                continue;
            }
            matched += 1;
            if i >= start && page.len() <= limit {
                page.push(name);
            }
        }
        let more = page.len() > limit;
        page.truncate(limit);
        (self.stream_infos(page), matched, more)
    }

    /// One page of streams by name, without the total of
    /// [`Store::streams_page`]: of the streams whose names start with
    /// `prefix`, sort after `after` (all when `None`) and that `keep`
    /// accepts, the first `limit`, sorted by name, and whether more follow.
    /// It finds where to start by binary search and stops at the first name
    /// past `prefix` or once it has `limit + 1` names: a page costs the names
    /// it passes over, not every stream.
    pub fn streams_page_from(
        &self,
        after: Option<&str>,
        prefix: &str,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> (Vec<StreamInfo>, bool) {
        let names = self.shared.sorted_stream_names();
        let start = after
            .map_or(0, |a| names.partition_point(|n| &**n <= a))
            .max(names.partition_point(|n| &**n < prefix));
        let mut page: Vec<&str> = Vec::with_capacity(limit.min(1024) + 1);
        for name in names[start..].iter().take_while(|n| n.starts_with(prefix)) {
            if page.len() > limit {
                break;
            }
            if keep(name) {
                page.push(name);
            }
        }
        let more = page.len() > limit;
        page.truncate(limit);
        (self.stream_infos(page), more)
    }

    /// Calls `visit` with the name of each stream that starts with one of
    /// `prefixes` (an empty prefix: every stream; none: no stream) and sorts
    /// after `after` (all when `None`), in name order, until it says
    /// [`std::ops::ControlFlow::Break`]. Names outside the prefixes are
    /// never passed over (each prefix is found by binary search), so a
    /// caller that stops after a bounded number of names pays for those
    /// names only. Works on the sorted copy of the names that
    /// [`Store::streams_page`] uses: appends are never held up by `visit`.
    pub fn visit_stream_names(
        &self,
        after: Option<&str>,
        prefixes: &[&str],
        mut visit: impl FnMut(&str) -> std::ops::ControlFlow<()>,
    ) {
        let names = self.shared.sorted_stream_names();
        let mut sorted: Vec<&str> = prefixes.to_vec();
        sorted.sort_unstable();
        // A prefix that extends another adds no name; the others' ranges are
        // disjoint and in the order of the prefixes.
        let mut ranges: Vec<&str> = Vec::with_capacity(sorted.len());
        for p in sorted {
            if ranges.last().is_none_or(|k| !p.starts_with(k)) {
                ranges.push(p);
            }
        }
        let from = after.map_or(0, |a| names.partition_point(|n| &**n <= a));
        for prefix in ranges {
            let start = from.max(names.partition_point(|n| &**n < prefix));
            for name in names
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take_while(|n| n.starts_with(prefix))
            {
                if visit(name).is_break() {
                    return;
                }
            }
        }
    }

    /// The state of each named stream that exists, in order.
    fn stream_infos<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<StreamInfo> {
        names
            .into_iter()
            .filter_map(|n| {
                self.shared.stream_state(n).map(|s| StreamInfo {
                    name: n.to_string(),
                    last_revision: s.last_revision,
                    last_position: s.last_position,
                })
            })
            .collect()
    }

    /// The metadata fields this store indexes ([`Options::indexed_metadata`]).
    pub fn indexed_metadata(&self) -> &[String] {
        &self.shared.options.indexed_metadata
    }

    /// The largest event (data and metadata) this store accepts
    /// ([`Options::max_event_size`]): what a reader may budget per event.
    pub fn max_event_size(&self) -> usize {
        self.shared.options.max_event_size
    }

    /// Calls `f` after each publication of new events (once per batch the
    /// writer publishes, which may hold several appends) and once when the
    /// store closes, until the returned listener is dropped: for waiters that
    /// hold no thread (an async task woken through a channel). `f` runs on the
    /// thread of the appender that published the batch, once the publication
    /// lock is let go (in a batch too large for one write, with the writer's
    /// lock still held) and before that appender is answered, so it must be
    /// quick, must not block, and must not call the store; it says only that
    /// something may have changed (look at [`Store::head_position`] to know
    /// what), and may be called once more just after the listener is
    /// dropped. A callback that panics is caught (the append still succeeds)
    /// and never called again.
    pub fn listen(&self, f: impl Fn() + Send + Sync + 'static) -> crate::log::notify::EventListener {
        self.shared.notifier.listen(Arc::new(f))
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
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<crate::maintenance::backup::BackupReport> {
        crate::maintenance::backup::backup(&self.shared, dest.as_ref())
    }

    /// Removes, from sealed segments, the events that are deleted, expired by
    /// their stream's metadata, or past the store's retention policy, and
    /// reclaims their space; surviving events keep their positions. Reads and
    /// appends go on meanwhile; a crash at any point leaves the old or the new
    /// segment, never a mix.
    pub fn scavenge(&self) -> Result<crate::maintenance::retention::ScavengeReport> {
        self.check_writable()?;
        crate::maintenance::retention::scavenge(&self.shared, &self.shared.options.retention)
    }

    /// Figures about the store: events, streams, segments, bytes.
    pub fn stats(&self) -> crate::maintenance::backup::StoreStats {
        crate::maintenance::backup::stats(&self.shared)
    }

    /// Checks every checksum, every index entry against the log, and the
    /// invariants across files; reads run concurrently with appends. Problems
    /// are reported with their file and byte offset; nothing is changed.
    pub fn verify(&self) -> Result<crate::maintenance::verify::VerifyReport> {
        crate::maintenance::verify::verify(&self.shared)
    }

    /// Erases a subject's personal data for good: its key is destroyed
    /// durably (`subjects.key` rewritten without it and synced) before this
    /// returns. Its events stay where they are, with their positions,
    /// revisions, ids, types and tags; reads return them with
    /// [`crate::event::Personal::Erased`] and empty data and metadata. A later
    /// event for the same subject gets a new key and stays readable. The
    /// subject's key records that repair moved to `quarantine/` or recovery
    /// saved in `torn/` (matched by their lookup field) are removed too, and
    /// count as something erased. Returns
    /// false if the subject had no key (no event ever named it, or it was
    /// shredded already by an earlier call that returned true; after a shred
    /// that failed and was completed by a later rewrite, this process keeps
    /// answering true for that subject until the store is reopened).
    ///
    /// If the rewrite fails, the key is already gone from memory (nothing more
    /// is sealed under it) but may still be on disk: call `shred` again (it
    /// writes the whole key store out again and then returns true) or reopen
    /// the store and shred again. Until a rewrite succeeds, shreds and new
    /// keys fail rather than act on a state that is not on disk.
    ///
    /// An append naming the subject that is in flight while it is shredded
    /// is sealed when the writer writes it, under the subject's key at that
    /// moment: written before the shred, it reads erased; written after, it
    /// fails with [`Error::InvalidInput`] (nothing written) if the subject has
    /// no key then, but if another append of the same subject created a new
    /// key in between, it is sealed under that key and stays readable. Stop
    /// appending for a subject before shredding it to erase it for good.
    pub fn shred(&self, subject: &str) -> Result<bool> {
        self.check_writable()?;
        crate::event::check_name("subject", subject, crate::event::MAX_SUBJECT_LEN)?;
        self.shared.subjects.shred(subject)
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
        let extensions: Vec<Arc<dyn Extension>> = self.extensions.lock().clone();
        let saved = match self.read_only {
            Some(_) => Ok(()),
            None => extensions.iter().try_for_each(|e| e.close(self)),
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

/// Sets `name`'s position in a map of forwarders, or forgets it (`None`).
fn set_or_forget(map: &mut std::collections::BTreeMap<String, u64>, name: &str, position: Option<u64>) {
    match position {
        Some(p) => {
            map.insert(name.to_string(), p);
        }
        None => {
            map.remove(name);
        }
    }
}
