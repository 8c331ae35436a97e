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

/// State shared by readers and the writer.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) options: Options,
    /// `options.indexed_metadata`, as the indexes file them.
    pub(crate) meta_fields: Arc<crate::format::index::MetaFields>,
    /// The segment files.
    pub(crate) segments: SegmentSet,
    pub(crate) streams: RwLock<HashMap<Box<str>, StreamState>>,
    /// The stream names sorted, for listings ([`Shared::sorted_stream_names`]).
    pub(crate) stream_names: Mutex<Arc<Vec<Box<str>>>>,
    /// Position after the last published event.
    pub(crate) next_position: AtomicU64,
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
    /// `durable_mark` (open took the index from it, or a clean close wrote
    /// it), so that a close with nothing new to record need not write it again.
    pub(crate) active_index_saved: std::sync::atomic::AtomicBool,
    /// The last error of background work (compression, scavenging), which has
    /// no caller to return it to, with when it happened.
    pub(crate) background_error: Mutex<Option<String>>,
    /// Retention holds of forwarders (`retention = "wait"`), by name: the
    /// first position each has not delivered, loaded at open from their saved
    /// checkpoints and moved by running forwarders. Scavenging keeps every
    /// event at or after the lowest of them.
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
    /// Damage a read-only open stepped around, by position.
    pub(crate) damage: Vec<crate::log::damage::Damage>,
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
        self.streams.read().get(stream).copied()
    }

    /// Every stream name, sorted. The copy is made again only when streams
    /// were created since the last one (names are never removed while the
    /// store is open), and the map's lock is held only to copy the names,
    /// never to sort or filter them: a listing of a large store must not hold
    /// up appends, whose publication takes the map's write lock.
    pub(crate) fn sorted_stream_names(&self) -> Arc<Vec<Box<str>>> {
        let mut names = self.stream_names.lock();
        if names.len() != self.streams.read().len() {
            let mut copy: Vec<Box<str>> = self.streams.read().keys().cloned().collect();
            copy.sort_unstable();
            *names = Arc::new(copy);
        }
        names.clone()
    }
}
