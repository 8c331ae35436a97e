//! A handle on one group: its settings, info, checkpoint saves, parked
//! events, and the refill of its line of events from the source. It reads
//! and appends through the store like any client and must never touch files.

use std::sync::Arc;

use uuid::Uuid;

use super::{
    Consumer, GroupInfo, GroupInner, GroupSettings, GroupSource, GroupState, MAX_PARK_REASON, ParkedRecord, Pending,
    checkpoint_stream, json_event, parked_stream,
};
use crate::error::{Error, Result};
use crate::event::{ExpectedVersion, RecordedEvent};
use crate::format::system::{self, StoredCheckpointV1, StoredParkedV1, Version1};
use crate::query::{Direction, Filter, LogFrom, StreamFrom};
use crate::store::Store;

/// A handle on a persistent subscription group.
pub struct Group<'s> {
    pub(super) store: &'s Store,
    pub(super) state: Arc<GroupState>,
}

impl Group<'_> {
    /// The group's settings.
    pub fn settings(&self) -> &GroupSettings {
        &self.state.settings
    }

    /// Connects a consumer by name (connecting twice is harmless), with no
    /// limit on the events it holds.
    pub fn consumer(&self, name: &str) -> Consumer<'_> {
        self.consumer_with_capacity(name, usize::MAX)
    }

    /// Connects a consumer that holds at most `capacity` unacknowledged
    /// events at a time, as far as [`Strategy::DispatchToSingle`] is
    /// concerned (it passes events on to the next consumer only once this
    /// one is full). Connecting again under the same name sets the capacity.
    pub fn consumer_with_capacity(&self, name: &str, capacity: usize) -> Consumer<'_> {
        let mut inner = self.state.inner.lock();
        match inner.consumers.iter_mut().find(|c| c.0 == name) {
            Some(c) => c.1 = capacity,
            None => inner.consumers.push((name.to_string(), capacity)),
        }
        Consumer {
            group: self,
            name: name.to_string(),
        }
    }

    /// The group's state.
    pub fn info(&self) -> GroupInfo {
        let inner = self.state.inner.lock();
        GroupInfo {
            name: self.state.name.clone(),
            checkpoint: low_water(&inner),
            saved_checkpoint: inner.saved,
            in_flight: inner.in_flight.len(),
            ready: inner.ready.len(),
            parked: inner.parked,
            skipped_damaged: inner.skipped_damaged,
            last_skipped_damage: inner.last_skipped_damage.clone(),
            consumers: inner.consumers.iter().map(|c| c.0.clone()).collect(),
        }
    }

    /// Saves the checkpoint now.
    pub fn save_checkpoint(&self) -> Result<()> {
        let mut inner = self.state.inner.lock();
        self.save(&mut inner)
    }

    pub(super) fn save(&self, inner: &mut GroupInner) -> Result<()> {
        let checkpoint = low_water(inner);
        let c = StoredCheckpointV1 {
            version: Version1,
            checkpoint,
            parked: inner.parked,
            parked_replayed: replay_low(inner),
            skipped_damaged: inner.skipped_damaged,
            skipped_through: inner.skipped_through,
        };
        self.store.append_system(
            &checkpoint_stream(&self.state.name),
            ExpectedVersion::Any,
            vec![json_event("$Checkpoint", &c)],
        )?;
        inner.saved = checkpoint;
        inner.saved_replayed = c.parked_replayed;
        inner.acks_since_save = 0;
        Ok(())
    }

    /// Puts every parked event not yet replayed back in line for delivery;
    /// returns how many. A replayed event counts as replayed in the saved
    /// checkpoint only once it is acknowledged, skipped or parked again:
    /// after a restart (or a crash) before that, a replay puts it back in
    /// line again (with those after it in the parked stream: delivery is at
    /// least once).
    pub fn replay_parked(&self) -> Result<u64> {
        self.replay_parked_up_to(u64::MAX)
    }

    /// Puts the oldest parked events not yet replayed, at most `limit` of
    /// them, back in line for delivery; the others stay parked for a later
    /// replay. Returns how many went back.
    pub fn replay_parked_up_to(&self, limit: u64) -> Result<u64> {
        let mut inner = self.state.inner.lock();
        let parked = match self.store.read_stream(
            &parked_stream(&self.state.name),
            Direction::Forward,
            StreamFrom::Revision(inner.parked_replayed),
            usize::try_from(limit).unwrap_or(usize::MAX),
        ) {
            Ok(p) => p,
            Err(Error::StreamNotFound(_)) => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut n = 0;
        for p in &parked {
            let rec = ParkedRecord::from_event(p)?;
            if let Some(event) = self
                .store
                .read_all(Direction::Forward, LogFrom::Position(rec.position), 1, &Filter::all())?
                .into_iter()
                .find(|e| e.position == rec.position)
            {
                inner.ready.push_back(Pending {
                    event,
                    deliveries: 0,
                    key: None,
                    parked_revision: Some(p.revision),
                });
                n += 1;
            }
            inner.parked_replayed = p.revision.saturating_add(1);
        }
        // Nothing to save: the saved `parked_replayed` stays before every
        // replayed event still open (see `replay_low`).
        self.state.changed.notify_all();
        Ok(n)
    }

    /// The position (global log) or revision (stream) that orders the group's source.
    pub(super) fn key(&self, e: &RecordedEvent) -> u64 {
        match self.state.settings.source {
            GroupSource::All(_) => e.position,
            GroupSource::Stream(_) => e.revision,
        }
    }

    /// Moves timed-out deliveries back in line, or to the parked stream.
    pub(super) fn expire(&self, inner: &mut GroupInner) -> Result<()> {
        // Acknowledgement deadlines run on the store's clock (a test moves it by hand).
        let now = self.store.clock().now();
        let expired: Vec<Uuid> = inner
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(f) = inner.in_flight.remove(&id) {
                self.retry_or_park(inner, f.pending, "acknowledgement timed out")?;
            }
        }
        Ok(())
    }

    pub(super) fn retry_or_park(&self, inner: &mut GroupInner, p: Pending, reason: &str) -> Result<()> {
        if p.deliveries > self.state.settings.max_retries {
            self.park(inner, p, reason)
        } else {
            inner.ready.push_front(p);
            Ok(())
        }
    }

    /// Parks `p` with `reason` (cut to [`MAX_PARK_REASON`] bytes). If the
    /// parked record cannot be appended, `p` goes back to the front of the
    /// line, to be delivered again, and the error is returned: an event
    /// leaves the group only once it is parked.
    pub(super) fn park(&self, inner: &mut GroupInner, p: Pending, reason: &str) -> Result<()> {
        let rec = ParkedRecord {
            position: p.event.position,
            stream: p.event.stream.clone(),
            revision: p.event.revision,
            event_id: p.event.id,
            deliveries: p.deliveries,
            reason: system::cut_on_char(reason, MAX_PARK_REASON).to_string(),
        };
        // The record must fit the store's event size limit, which may be
        // smaller than the longest reason: the reason is cut further, never
        // the park refused for it.
        let data = StoredParkedV1::from(&rec).encode_within(self.store.max_event_size());
        let event = crate::event::EventData::json("$Parked", data);
        if let Err(e) = self
            .store
            .append_system(&parked_stream(&self.state.name), ExpectedVersion::Any, vec![event])
        {
            inner.ready.push_front(p);
            self.state.changed.notify_all();
            return Err(e);
        }
        inner.parked += 1;
        self.completed(inner)
    }

    /// Counts a completed event (acknowledged, skipped or parked) toward the next checkpoint save.
    pub(super) fn completed(&self, inner: &mut GroupInner) -> Result<()> {
        inner.acks_since_save += 1;
        if inner.acks_since_save >= self.state.settings.checkpoint_every {
            self.save(inner)?;
        }
        Ok(())
    }

    /// Reads more of the source into the ready line, keeping within the
    /// in-flight limit and, but for the last read, within the store's
    /// [`crate::options::Options::max_group_held_bytes`].
    pub(super) fn refill(&self, inner: &mut GroupInner, want: usize) -> Result<()> {
        let held = inner.in_flight.len() + inner.ready.len();
        let room = self.state.settings.max_in_flight.saturating_sub(held);
        let n = want.min(room);
        if n == 0 {
            return Ok(());
        }
        if held > 0 && held_bytes(inner) >= self.store.shared.options.max_group_held_bytes {
            return Ok(());
        }
        let events = match &self.state.settings.source {
            GroupSource::All(filter) => {
                // The head before the read: the read sees at least up to it.
                let head = self.store.head_position();
                if inner.cursor >= head {
                    return Ok(());
                }
                // One refill passes over at most REFILL_SPAN positions, however
                // few of them the filter keeps: a sparse filter costs a fetch
                // several short turns under the lock, not one pass over the log.
                // Only a filter the indexes cannot serve is bounded so: one
                // served from them passes a stretch of the log without a match
                // by its candidate lists, and a read over it costs the
                // segment's lists once (built again for every span, it cost a
                // sparse stream-prefix group 75x, in the review).
                let end = if filter.needs_scan(self.store.indexed_metadata()) {
                    inner.cursor.saturating_add(REFILL_SPAN).min(head)
                } else {
                    head
                };
                let (events, stop) = self.store.shared.read_log_stop_before(
                    Direction::Forward,
                    LogFrom::Position(inner.cursor),
                    (n, usize::MAX),
                    (
                        filter,
                        crate::log::read::Visibility::Visible,
                        &crate::query::Cancel::default(),
                    ),
                    end,
                )?;
                match stop {
                    // Everything before the damage first; the next refill meets it at once.
                    Some(_) if !events.is_empty() => {}
                    // Skipped, never silently: counted in the group's info and
                    // checkpoint, and kept as the store's last background error.
                    Some(stop) if self.state.settings.skip_damaged => {
                        // Only what was not counted before a restart counts.
                        let from = stop.position.max(inner.skipped_through);
                        let skipped = stop.resume.saturating_sub(from);
                        inner.skipped_damaged = inner.skipped_damaged.saturating_add(skipped);
                        inner.skipped_through = inner.skipped_through.max(stop.resume);
                        let why = stop.error.to_string();
                        self.store.shared.record_background::<()>(
                            &format!(
                                "group {:?} skipping damaged positions {}..{}",
                                self.state.name, stop.position, stop.resume
                            ),
                            Err(stop.error),
                        );
                        inner.last_skipped_damage = Some((stop.position, stop.resume, why));
                        inner.cursor = stop.resume;
                        // The count is saved at once: a crash must not forget the skip.
                        self.save(inner)?;
                    }
                    Some(stop) => {
                        return Err(Error::Damaged {
                            position: stop.position,
                            source: Box::new(stop.error),
                        });
                    }
                    // Every position up to `end` has been considered.
                    None if events.len() < n => inner.cursor = inner.cursor.max(end),
                    None => {}
                }
                events
            }
            GroupSource::Stream(s) => {
                match self
                    .store
                    .read_stream(s, Direction::Forward, StreamFrom::Revision(inner.cursor), n)
                {
                    Ok(e) => e,
                    Err(Error::StreamNotFound(_)) => Vec::new(),
                    Err(e) => return Err(e),
                }
            }
        };
        for e in events {
            let key = self.key(&e);
            inner.cursor = inner.cursor.max(key + 1);
            // Groups on the global log skip system streams, their own bookkeeping included.
            if e.stream.starts_with('$') {
                continue;
            }
            inner.ready.push_back(Pending {
                event: e,
                deliveries: 0,
                key: Some(key),
                parked_revision: None,
            });
        }
        Ok(())
    }
}

/// Bytes of data and metadata of the events a group holds: in flight, and
/// in line to be delivered.
fn held_bytes(inner: &GroupInner) -> usize {
    inner
        .in_flight
        .values()
        .map(|f| &f.pending)
        .chain(inner.ready.iter())
        .fold(0usize, |sum, p| {
            sum.saturating_add(p.event.data.len())
                .saturating_add(p.event.metadata.len())
        })
}

/// The lowest position (or revision) not yet completed: the checkpoint.
pub(super) fn low_water(inner: &GroupInner) -> u64 {
    lowest_open(inner, |p| p.key, inner.cursor)
}

/// The least of `from` and `key` of every event in line or in flight.
fn lowest_open(inner: &GroupInner, key: impl Fn(&Pending) -> Option<u64>, from: u64) -> u64 {
    inner
        .in_flight
        .values()
        .map(|f| &f.pending)
        .chain(inner.ready.iter())
        .filter_map(key)
        .fold(from, u64::min)
}

/// The first revision of the parked stream whose replay is not complete:
/// the lowest revision of a replayed event still in line or in flight, else
/// the next revision a replay reads. Saved as the checkpoint's
/// `parked_replayed`, so a replayed event is never forgotten before it was
/// acknowledged, skipped or parked again.
pub(super) fn replay_low(inner: &GroupInner) -> u64 {
    lowest_open(inner, |p| p.parked_revision, inner.parked_replayed)
}

/// The first chunk a fetch reads from the source when its line runs dry.
pub(super) const REFILL_FIRST: usize = 8;
/// The largest chunk a fetch reads at once (chunks double from [`REFILL_FIRST`]).
pub(super) const REFILL_MOST: usize = 64;
/// Most positions of the global log one refill passes over.
pub(super) const REFILL_SPAN: u64 = 4096;
/// Refills that found nothing to deliver (a sparse filter, system streams,
/// damage skipped) one turn under the group's lock makes before letting
/// others (acknowledgements, other consumers) in: at most
/// `REFILL_SPAN * SPANS_PER_TURN` positions per turn.
pub(super) const SPANS_PER_TURN: usize = 4;
