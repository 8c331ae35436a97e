//! The store's maintenance, on demand and on a schedule: sealing,
//! compression, scavenging and what holds it back (forwarders' positions),
//! backup, stats, verify and shredding, each handed to
//! [`crate::maintenance`] or the log. It must never append a user's event.

use std::path::Path;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::format::index::Lookup;
use crate::log::state::Shared;
use crate::options::CompressionOptions;
use crate::query::Filter;

use super::Store;

/// The longest a background thread waits before it looks at the clock again.
const SCHEDULE_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// After a seal for compression failed (a full disk), the compressor tries again this much later.
const SEAL_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// The first position of the active segment if it should be sealed so that
/// it can be compressed: it holds at least `seal_min_bytes`, and no event
/// came for `seal_idle_ms` or its oldest event is `seal_after_ms` old (by
/// the store's clock). The seal is then asked for that segment only
/// ([`crate::log::writer::Committer::seal_active_at`]): a rotation in
/// between starts a new, small segment, which is not due.
fn seal_due(shared: &Shared, c: &CompressionOptions) -> Option<u64> {
    // A writer stopped by a failed sync seals nothing: trying every minute would only repeat its error.
    if shared.poisoned().is_some() {
        return None;
    }
    let active = shared.segments.active()?;
    let idx = active.index.read();
    if idx.is_empty() || idx.end_offset() < c.seal_min_bytes.max(1) {
        return None;
    }
    let (oldest, newest) = idx.time_range()?;
    let base = idx.base();
    drop(idx);
    let now = shared.options.clock.now_micros();
    let passed = |since: i64, ms: u64| {
        ms > 0 && now.saturating_sub(since) >= i64::try_from(ms.saturating_mul(1000)).unwrap_or(i64::MAX)
    };
    (passed(newest, c.seal_idle_ms) || passed(oldest, c.seal_after_ms)).then_some(base)
}

impl Store {
    /// Starts the background scavenger and compressor the options ask for.
    pub(super) fn start_maintenance(&self) -> Result<()> {
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
            // Weak: the write path closes with the store, after this thread stopped.
            let committer = store.committer.as_ref().map(Arc::downgrade);
            let failed_seal: Mutex<Option<std::time::Instant>> = Mutex::new(None);
            store.every(
                std::time::Duration::from_millis(500),
                "annal-compressor",
                |_| false,
                move |shared| {
                    if let Some(committer) = committer.as_ref().and_then(Weak::upgrade)
                        && let Some(base) = seal_due(shared, &c)
                        && failed_seal
                            .lock()
                            .is_none_or(|at| shared.options.clock.now() >= at + SEAL_RETRY)
                    {
                        let result = committer.seal_active_at(base).map(|_| ());
                        *failed_seal.lock() = result.is_err().then(|| shared.options.clock.now());
                        shared.record_background("sealing the active segment for compression", result);
                    }
                    let result = crate::maintenance::compression::compress_sealed(shared, &c, true);
                    shared.record_background("compression", result);
                },
            )?;
        }
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
    /// deleted or not), and those of them that held system events only
    /// (see [`crate::log::holes`]); `known` (ascending) holds events.
    pub(crate) fn holes_in(&self, from: u64, to: u64, known: &[u64]) -> Result<crate::log::holes::Holes> {
        self.shared.holes_in(from, to, known)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::format::index::Lookup;
    use crate::{EventData, ExpectedVersion, Options, SimStorage, Store};

    /// The compressor judged the active segment due outside the writer's
    /// lock and then sealed whatever segment was active: a rotation in
    /// between (a full segment, a seal asked for by hand) made it seal the
    /// next one, a few events long. The seal it asks for names the segment
    /// it judged.
    #[test]
    fn a_seal_judged_due_for_one_segment_never_seals_the_next() {
        let store = Store::open_with(Arc::new(SimStorage::new()), "/seal", Options::default()).unwrap();
        let append = |n: usize| {
            for _ in 0..n {
                store
                    .append("s", ExpectedVersion::Any, vec![EventData::json("A", "{}")])
                    .unwrap();
            }
        };
        append(10);
        let judged = store.shared.segments.active().unwrap().index.read().base();
        // A rotation comes first, and an append after it.
        assert!(store.seal_active_segment().unwrap());
        append(1);
        let committer = store.committer.as_ref().unwrap();
        assert!(!committer.seal_active_at(judged).unwrap());
        let stats = store.stats();
        assert_eq!((stats.segments, stats.active_events), (2, 1));
        // The segment that is active now is sealed when it is the one asked for.
        let now = store.shared.segments.active().unwrap().index.read().base();
        assert!(committer.seal_active_at(now).unwrap());
        assert_eq!(store.stats().active_events, 0);
    }
}
