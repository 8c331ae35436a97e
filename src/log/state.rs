//! The state an open log shares between its readers, its writer and the
//! maintenance jobs: the segments, the stream states, the published end, the
//! writer's failure latch.
//!
//! This module owns [`Shared`]; it must never do I/O itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::format::checkpoint::StreamState;
use crate::log::segments::SegmentSet;
use crate::options::Options;
use crate::storage::{LockGuard, Storage};

/// Every stream's state: the checked `streams.chk` table of the last clean
/// close or seal (searched in place, never copied at open) under the states
/// changed since (later segments' summaries, the active segment, appends).
#[derive(Default)]
pub(crate) struct StreamMap {
    /// A version-2 `streams.chk`, checked whole at open, and its bytes.
    table: Option<(crate::format::checkpoint::StreamTable, crate::storage::Mapped)>,
    /// States set since the table, which win over it.
    changed: HashMap<Box<str>, StreamState>,
    /// Streams in `changed` that the table does not hold.
    added: usize,
}

impl StreamMap {
    /// The states of a checked version-2 `streams.chk` (`bytes`), or of a
    /// decoded map (a version-1 file, or none).
    pub(crate) fn new(
        table: Option<(crate::format::checkpoint::StreamTable, crate::storage::Mapped)>,
        changed: HashMap<Box<str>, StreamState>,
    ) -> Self {
        let added = changed.len();
        StreamMap { table, changed, added }
    }

    fn in_table(&self, stream: &str) -> Option<StreamState> {
        let (t, bytes) = self.table.as_ref()?;
        t.get((**bytes).as_ref(), stream)
    }

    /// The state of `stream`, if it exists.
    pub(crate) fn get(&self, stream: &str) -> Option<StreamState> {
        self.changed.get(stream).copied().or_else(|| self.in_table(stream))
    }

    /// Sets the state of `stream`.
    pub(crate) fn set(&mut self, stream: &str, state: StreamState) {
        match self.changed.get_mut(stream) {
            Some(s) => *s = state,
            None => {
                if self.in_table(stream).is_none() {
                    self.added += 1;
                }
                self.changed.insert(stream.into(), state);
            }
        }
    }

    /// True if the states come from a version-2 `streams.chk` searched in place.
    pub(crate) fn is_table(&self) -> bool {
        self.table.is_some()
    }

    /// Number of streams.
    pub(crate) fn len(&self) -> usize {
        self.table.as_ref().map_or(0, |(t, _)| t.count) + self.added
    }

    /// Every stream's state, as one map.
    pub(crate) fn to_map(&self) -> HashMap<Box<str>, StreamState> {
        let mut map = HashMap::with_capacity(self.len());
        if let Some((t, bytes)) = &self.table {
            map.extend(t.iter((**bytes).as_ref()).map(|(n, s)| (Box::<str>::from(n), s)));
        }
        map.extend(self.changed.iter().map(|(n, s)| (n.clone(), *s)));
        map
    }

    /// The names that start with `prefix`, in no order.
    pub(crate) fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        if let Some((t, bytes)) = &self.table {
            names.extend(
                t.with_prefix((**bytes).as_ref(), prefix)
                    .filter(|(n, _)| !self.changed.contains_key(*n))
                    .map(|(n, _)| n.to_string()),
            );
        }
        names.extend(
            self.changed
                .keys()
                .filter(|n| n.starts_with(prefix))
                .map(|n| n.to_string()),
        );
        names
    }
}

/// State shared by readers and the writer.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) options: Options,
    /// `options.indexed_metadata`, as the indexes file them.
    pub(crate) meta_fields: Arc<crate::format::index::MetaFields>,
    /// The segment files.
    pub(crate) segments: SegmentSet,
    /// Every stream's state ([`StreamMap`]).
    pub(crate) streams: RwLock<StreamMap>,
    /// The stream names sorted, for listings ([`Shared::sorted_stream_names`]).
    pub(crate) stream_names: Mutex<Arc<Vec<Box<str>>>>,
    /// Position after the last published event.
    pub(crate) next_position: AtomicU64,
    /// The ids of the events appended since open ([`crate::log::recent_ids`]).
    pub(crate) recent_ids: crate::log::recent_ids::RecentIds,
    /// Set, once and for good, when the writer stopped after an error it cannot
    /// recover from (a failed sync, or a failed write of acknowledged bytes).
    /// Every write and sync site checks it; [`Shared::poison`] is the only setter.
    pub(crate) failure: Mutex<Option<String>>,
    /// Metadata of the streams that have some.
    pub(crate) metadata: RwLock<crate::stream_metadata::MetadataCache>,
    /// Serialises metadata writes.
    pub(crate) metadata_writes: Mutex<()>,
    /// Serialises scavenges.
    pub(crate) scavenging: Mutex<()>,
    /// Sealed segments, as `(base, file length)`, that the background
    /// compressor examined and left as they were (nothing gained, or a failed
    /// check): not tried again until the store is reopened or they change.
    pub(crate) compress_skipped: Mutex<std::collections::HashSet<(u64, usize)>>,
    /// The store's compression dictionary, once trained.
    pub(crate) dictionary: RwLock<Option<Arc<crate::format::compressed::Dictionary>>>,
    /// Decompressed blocks of compressed segments, shared by every read
    /// ([`Options::block_cache_bytes`](crate::Options::block_cache_bytes)).
    pub(crate) block_cache: crate::format::block_cache::BlockCache,
    /// Wakes subscribers on each publication and when the store closes.
    pub(crate) notifier: crate::log::notify::Notifier,
    /// The durable-end checkpoint as last read or written (`durable.chk`), so
    /// that a close with nothing new to record writes nothing.
    pub(crate) durable_mark: Mutex<Option<crate::format::checkpoint::DurableMark>>,
    /// True while `active.idc` holds the active segment's index as of
    /// `durable_mark` (open used it, or a clean close wrote it), so that a
    /// close with nothing new to record need not write it again.
    pub(crate) active_index_saved: std::sync::atomic::AtomicBool,
    /// True while `streams.chk` is a good version-1 file (as an older annal
    /// wrote it), which a close with nothing new to record rewrites in
    /// version 2. A damaged or missing one is left for repair and the next
    /// seal or close with appends, as before version 2.
    pub(crate) streams_v1: std::sync::atomic::AtomicBool,
    /// The last error of background work (compression, scavenging), which has
    /// no caller to return it to, with when it happened.
    pub(crate) background_error: Mutex<Option<String>>,
    /// Retention holds of forwarders (`retention = "wait"`), by name: the
    /// first position each has not delivered, loaded at open from their saved
    /// checkpoints and moved by running forwarders. Scavenging keeps every
    /// event at or after the lowest of them, but those of system streams.
    pub(crate) retention_holds: Mutex<std::collections::BTreeMap<String, u64>>,
    /// The forwarders running over this store, whatever their retention
    /// mode, by name: the first position each has not passed. Holds no
    /// retention; drop record entries name those before a drop, and pruning
    /// waits for them (see `maintenance::retention`).
    pub(crate) forwarder_positions: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Set while appends are refused because undelivered events alone are
    /// over the disk budget (policy `stop-appends`): the forwarder holding
    /// the lowest position, the bytes held and the budget.
    pub(crate) budget_full: Mutex<Option<(String, u64, u64)>>,
    /// Set when a seal finds the sealed segments over `retention.max_bytes`
    /// with something scavenging may remove: the background scavenger (if
    /// `retention.interval_ms` starts one) runs at its next tick instead of
    /// waiting for its period.
    pub(crate) scavenge_wanted: std::sync::atomic::AtomicBool,
    /// Entries added to the drop record (`dropped.rec`) since the store
    /// opened: forwarders read the record again when it changes.
    pub(crate) drops_recorded: AtomicU64,
    /// Torn tails that this open cut off the last segment.
    pub(crate) torn_at_open: Vec<crate::log::damage::TornTail>,
    /// What this open cut from `subjects.key` (torn key records, each kept
    /// in `torn/`), with the cuts of earlier opens that failed, as sentences.
    pub(crate) key_cuts_at_open: Vec<String>,
    /// Damage a read-only open stepped around, by position.
    pub(crate) damage: Vec<crate::log::damage::Damage>,
    /// The subject keys sealed events are opened with (`subjects.key`).
    pub(crate) subjects: crate::log::subjects::SubjectKeys,
    pub(crate) _lock: Box<dyn LockGuard>,
}

impl Shared {
    /// Latches the writer's failure (the first cause wins) and returns the error
    /// every later append gets.
    pub(crate) fn poison(&self, cause: String) -> Error {
        let mut f = self.failure.lock();
        let cause = f.get_or_insert(cause).clone();
        Error::Poisoned { cause }
    }

    /// The lowest retention hold and the forwarder holding it, if any.
    pub(crate) fn lowest_hold(&self) -> Option<(String, u64)> {
        self.retention_holds
            .lock()
            .iter()
            .min_by_key(|(_, p)| **p)
            .map(|(n, p)| (n.clone(), *p))
    }

    /// Looks at the disk budget (`retention.max_bytes`) against the sealed
    /// segments and the forwarders' holds: under `stop-appends`, starts
    /// refusing appends when undelivered events alone take more than the
    /// budget, and stops refusing them when they no longer do (other policies
    /// refuse nothing); when the sealed segments are over the budget and
    /// scavenging can bring them back (nothing held over the budget, or
    /// `drop-oldest`), asks the background scavenger to run now, but only
    /// when `sealed` says a segment was just sealed (or the store opened) or
    /// when appends stopped for the budget may resume: a scavenge that leaves
    /// the store over its budget (events kept forever, `$` streams) must not
    /// wake the next one at once, or the scavenger would rescan the store
    /// every tick. One pass over the list of sealed segments, under the
    /// budget's lock so that two callers cannot store their answers in the
    /// wrong order: called at each seal, after scavenging, at open and as
    /// holds move.
    pub(crate) fn check_budget(&self, sealed_now: bool) {
        use crate::format::index::Lookup;
        use crate::options::WhenFull;
        let policy = &self.options.retention;
        let mut budget_full = self.budget_full.lock();
        let Some(max) = policy.max_bytes else {
            *budget_full = None;
            return;
        };
        let sealed = self.segments.sealed();
        let total: u64 = sealed.iter().map(|s| s.bytes.len() as u64).sum();
        let lowest = self.lowest_hold();
        let held: u64 = match &lowest {
            Some((_, hold)) => sealed
                .iter()
                .filter(|s| s.index.next_position() > *hold)
                .map(|s| s.bytes.len() as u64)
                .sum(),
            None => 0,
        };
        let full = match (policy.when_full, lowest) {
            (WhenFull::StopAppends, Some((forwarder, _))) => (held > max).then_some((forwarder, held, max)),
            _ => None,
        };
        let resumed = budget_full.is_some() && full.is_none();
        *budget_full = full;
        drop(budget_full);
        if (sealed_now || resumed) && total > max && (held <= max || policy.when_full == WhenFull::DropOldest) {
            self.scavenge_wanted.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The latched failure as an error, if the writer stopped.
    pub(crate) fn poisoned(&self) -> Option<Error> {
        self.failure.lock().clone().map(|cause| Error::Poisoned { cause })
    }

    /// The damage hiding `position`, if a read-only open found some there.
    pub(crate) fn damage_at(&self, position: u64) -> Option<&crate::log::damage::Damage> {
        self.damage
            .iter()
            .find(|d| d.first_position <= position && position < d.end_position)
    }

    /// A stream that is not found, or, in a damaged store, that may be hidden by the damage.
    pub(crate) fn stream_not_found(&self, stream: &str) -> Error {
        match self.damage.first() {
            Some(d) => d.error(),
            None => Error::StreamNotFound(stream.to_string()),
        }
    }

    /// The first damage a forward read from `start` would step over, if any.
    pub(crate) fn damage_ahead(&self, start: u64) -> Option<&crate::log::damage::Damage> {
        self.damage
            .iter()
            .filter(|d| d.end_position > start)
            .min_by_key(|d| d.first_position)
    }

    /// The last damage a backward read from `start` would step over, if any.
    pub(crate) fn damage_behind(&self, start: u64) -> Option<&crate::log::damage::Damage> {
        self.damage
            .iter()
            .filter(|d| d.first_position <= start)
            .max_by_key(|d| d.first_position)
    }

    /// Keeps the error of a background run of `task`, if it failed, as the
    /// store's last background error.
    pub(crate) fn record_background<T>(&self, task: &str, result: Result<T>) {
        if let Err(e) = result {
            let secs = crate::event::now_micros().div_euclid(1_000_000);
            *self.background_error.lock() = Some(format!("{task} failed at {secs} s since the epoch: {e}"));
        }
    }

    pub(crate) fn published(&self) -> u64 {
        self.next_position.load(Ordering::Acquire)
    }

    pub(crate) fn stream_state(&self, stream: &str) -> Option<StreamState> {
        self.streams.read().get(stream)
    }

    /// Every stream name, sorted. The copy is made again only when streams
    /// were created since the last one (names are never removed while the
    /// store is open). The map's lock is held only to copy the names changed
    /// since its `streams.chk` table and to take a handle on the table's
    /// bytes, never to copy, sort or filter every name: a listing of a large
    /// store must not hold up appends, whose publication takes the map's
    /// write lock. The table's names, sorted already, are merged in after.
    pub(crate) fn sorted_stream_names(&self) -> Arc<Vec<Box<str>>> {
        let mut names = self.stream_names.lock();
        let (len, table, mut changed) = {
            let map = self.streams.read();
            if map.len() == names.len() {
                return names.clone();
            }
            let changed: Vec<Box<str>> = map.changed.keys().cloned().collect();
            (map.len(), map.table.clone(), changed)
        };
        changed.sort_unstable();
        let mut copy: Vec<Box<str>> = Vec::with_capacity(len);
        let mut in_order = true;
        let mut rest = changed.into_iter().peekable();
        if let Some((t, bytes)) = &table {
            for (name, _) in t.iter((**bytes).as_ref()) {
                while let Some(c) = rest.next_if(|c| **c < *name) {
                    copy.push(c);
                }
                // A changed state of a table stream: its name comes from `changed`.
                if rest.peek().is_some_and(|c| **c == *name) {
                    continue;
                }
                in_order &= copy.last().is_none_or(|l| **l < *name);
                copy.push(name.into());
            }
        }
        copy.extend(rest);
        // A checked table is sorted; should one not be, the answer still is.
        if !in_order {
            copy.sort_unstable();
            copy.dedup();
        }
        *names = Arc::new(copy);
        names.clone()
    }
}
