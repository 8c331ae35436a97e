//! A named consumer of a group: fetches, acknowledgements, refusals and
//! the timeouts of events in flight. It must never touch files.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::group::{REFILL_FIRST, REFILL_MOST, SPANS_PER_TURN};
use super::{Delivery, Group, GroupInner, InFlight, NackAction, Pending, Strategy};
use crate::error::Result;
use crate::format::index::hash_str;

/// A named consumer of a group.
pub struct Consumer<'g> {
    pub(super) group: &'g Group<'g>,
    pub(super) name: String,
}

impl Consumer<'_> {
    /// Up to `max` events for this consumer, waiting at most `timeout` for
    /// new events once the source is read up to its head. Reading the source
    /// up to the head is not bounded by `timeout`: a group whose filter only a
    /// scan serves reads it in turns (see [`Consumer::fetch_while_cancellable`]
    /// to stop it).
    pub fn fetch(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        self.fetch_while(max, timeout, |_| true)
    }

    /// As [`Consumer::fetch`], but takes the events one by one while `fits`
    /// accepts the next (given it as it would be delivered): the first one
    /// it refuses, and those after it, stay in the group's line, not
    /// delivered, as if never looked at. Lets a caller fill an answer of
    /// bounded size with one call instead of one call per event; it must
    /// accept the first event to get any. The source is read lazily, a small
    /// chunk at a time (8 events, growing to 64) only while `fits` accepts
    /// and the line runs dry, so a fetch that stops early holds little in
    /// memory whatever `max` is. A group on the global log reads at most
    /// 4,096 positions per chunk, and after 4 chunks that gave nothing to
    /// deliver (a filter that keeps little, system streams) the fetch lets
    /// go of the group's lock before it reads on: acknowledgements and
    /// other consumers never wait behind a long scan. Such a fetch may
    /// return fewer than `max` events when the rest lie further on.
    ///
    /// `fits` runs under the group's lock: it must not touch the group (its
    /// info, its consumers, a fetch, an ack), or it deadlocks. If it
    /// panics, nothing is taken: every event stays in line as before.
    pub fn fetch_while(
        &self,
        max: usize,
        timeout: Duration,
        fits: impl FnMut(&Delivery) -> bool,
    ) -> Result<Vec<Delivery>> {
        self.fetch_while_cancellable(max, timeout, &crate::query::Cancel::default(), fits)
    }

    /// As [`Consumer::fetch_while`], but fails with [`Error::Cancelled`],
    /// having taken nothing, once `cancel` is cancelled or its deadline
    /// passes while the fetch has found nothing yet: it looks between two
    /// turns of its scan of the source (a group on the global log whose
    /// filter keeps little of it scans a bounded span per turn) and while it
    /// waits. Lets a server stop the work of a fetch whose client went away.
    pub fn fetch_while_cancellable(
        &self,
        max: usize,
        timeout: Duration,
        cancel: &crate::query::Cancel,
        mut fits: impl FnMut(&Delivery) -> bool,
    ) -> Result<Vec<Delivery>> {
        let g = self.group;
        let deadline = Instant::now() + timeout;
        let mut inner = g.state.inner.lock();
        loop {
            if let Some(e) = inner.deferred.remove(&self.name) {
                return Err(e);
            }
            g.expire(&mut inner)?;
            let (out, more) = self.take(&mut inner, max, &mut fits)?;
            if !out.is_empty() {
                return Ok(out);
            }
            cancel.check()?;
            if more && !g.store.is_closing() {
                // More of the source to look at: let whoever waits for the
                // lock (an ack, another consumer) have it first, then go on.
                parking_lot::MutexGuard::unlocked_fair(&mut inner, || {
                    #[cfg(test)]
                    if let Some(f) = g.state.between_spans.lock().as_mut() {
                        f();
                    }
                });
                continue;
            }
            let now = Instant::now();
            if now >= deadline || g.store.is_closing() {
                return Ok(out);
            }
            // New events, acknowledgements and timeouts all wake or expire within this slice.
            let slice = (deadline - now).min(Duration::from_millis(20));
            g.state.changed.wait_for(&mut inner, slice);
        }
    }

    /// Takes up to `max` events for this consumer while `fits` accepts them,
    /// reading the source in small chunks when the line runs dry. Nothing
    /// moves while `fits` runs: accepted events stay in the ready line
    /// (marked by index) until the last call, then move to in-flight
    /// together, so a panic in `fits` leaves the group as it was. Also says
    /// whether it stopped with more of the source to look at (after
    /// [`SPANS_PER_TURN`] refills that found nothing to deliver).
    pub(super) fn take(
        &self,
        inner: &mut GroupInner,
        max: usize,
        fits: &mut impl FnMut(&Delivery) -> bool,
    ) -> Result<(Vec<Delivery>, bool)> {
        let g = self.group;
        let settings = &g.state.settings;
        let consumers = inner.consumers.clone();
        // Dispatch to single: this consumer's turn comes once every consumer
        // connected before it is full (each holds what it took and did not answer).
        let ahead_full = settings.strategy != Strategy::DispatchToSingle || {
            let mut held: HashMap<&str, usize> = HashMap::new();
            for f in inner.in_flight.values() {
                *held.entry(f.consumer.as_str()).or_default() += 1;
            }
            consumers
                .iter()
                .take_while(|c| c.0 != self.name)
                .all(|(name, capacity)| held.get(name.as_str()).copied().unwrap_or(0) >= *capacity)
        };
        if !ahead_full || max == 0 {
            return Ok((Vec::new(), false));
        }
        // The accepted events, by their index (ascending) in the ready line.
        let mut accepted: Vec<(usize, Delivery)> = Vec::new();
        let mut chunk = REFILL_FIRST;
        let mut i = 0;
        let mut empty_spans = 0;
        let mut more = false;
        while accepted.len() < max {
            if i == inner.ready.len() {
                // The line ran dry: read a little more of the source.
                let (before, cursor) = (inner.ready.len(), inner.cursor);
                if let Err(e) = g.refill(inner, chunk.min(max - accepted.len())) {
                    // What was accepted is handed out; the error is kept for
                    // the next fetch (the group may have moved past its cause).
                    if accepted.is_empty() {
                        return Err(e);
                    }
                    inner.deferred.insert(self.name.clone(), e);
                    break;
                }
                chunk = (chunk * 2).min(REFILL_MOST);
                if inner.ready.len() == before {
                    if inner.cursor == cursor {
                        // Caught up, or at the in-flight limit.
                        break;
                    }
                    // Only skipped events (system streams, damage, what the
                    // filter leaves out): read on, a few spans per turn.
                    empty_spans += 1;
                    if empty_spans >= SPANS_PER_TURN {
                        more = true;
                        break;
                    }
                    continue;
                }
            }
            let Some(p) = inner.ready.get(i) else { break };
            let mine = match settings.strategy {
                Strategy::RoundRobin | Strategy::DispatchToSingle => true,
                Strategy::Pinned => {
                    // The remainder is below consumers.len(), so it fits a usize.
                    let k = usize::try_from(hash_str(&p.event.stream) % consumers.len().max(1) as u64).unwrap_or(0);
                    consumers.get(k).is_none_or(|c| c.0 == self.name)
                }
            };
            if mine {
                let delivery = Delivery {
                    event: p.event.clone(),
                    retry_count: p.deliveries,
                };
                if !fits(&delivery) {
                    // Not taken: it keeps its place, and so does everything after it.
                    break;
                }
                accepted.push((i, delivery));
            }
            // Events pinned to other consumers keep their place.
            i += 1;
        }
        let Some(last) = accepted.last().map(|a| a.0) else {
            return Ok((Vec::new(), more));
        };
        // Move the accepted events out of the line; the others keep their order.
        let rest = inner.ready.split_off(last + 1);
        let head = std::mem::replace(&mut inner.ready, rest);
        let mut next = accepted.iter().map(|a| a.0).peekable();
        let mut passed_over = Vec::new();
        let mut taken = Vec::with_capacity(accepted.len());
        for (k, p) in head.into_iter().enumerate() {
            if next.peek() == Some(&k) {
                next.next();
                taken.push(p);
            } else {
                passed_over.push(p);
            }
        }
        for p in passed_over.into_iter().rev() {
            inner.ready.push_front(p);
        }
        let now = g.store.clock().now();
        let deadline = now
            .checked_add(Duration::from_millis(settings.ack_timeout_ms))
            .unwrap_or(now);
        for p in taken {
            inner.in_flight.insert(
                p.event.id,
                InFlight {
                    pending: Pending {
                        event: p.event,
                        deliveries: p.deliveries + 1,
                        key: p.key,
                        parked_revision: p.parked_revision,
                    },
                    deadline,
                    consumer: self.name.clone(),
                },
            );
        }
        Ok((accepted.into_iter().map(|a| a.1).collect(), more))
    }

    /// Acknowledges handled events by id; unknown ids are ignored. Returns
    /// how many of the ids were in flight (and are now acknowledged).
    pub fn ack(&self, ids: &[Uuid]) -> Result<usize> {
        let g = self.group;
        let mut inner = g.state.inner.lock();
        let mut acked = 0;
        for id in ids {
            if inner.in_flight.remove(id).is_some() {
                acked += 1;
                g.completed(&mut inner)?;
            }
        }
        g.state.changed.notify_all();
        Ok(acked)
    }

    /// Negatively acknowledges an event: retry it, park it, or skip it.
    /// Returns whether the event was in flight (an unknown id is ignored).
    /// `reason` is kept in the parked record, cut to [`super::MAX_PARK_REASON`]
    /// bytes (and shorter where the record would not fit the store's
    /// [`crate::options::Options::max_event_size`]). If parking fails (the parked record cannot be appended), the
    /// event goes back in line to be delivered again and the error is returned.
    pub fn nack(&self, id: Uuid, action: NackAction, reason: &str) -> Result<bool> {
        let g = self.group;
        let mut inner = g.state.inner.lock();
        let Some(f) = inner.in_flight.remove(&id) else {
            return Ok(false);
        };
        match action {
            NackAction::Retry => g.retry_or_park(&mut inner, f.pending, reason)?,
            NackAction::Park => g.park(&mut inner, f.pending, reason)?,
            NackAction::Skip => g.completed(&mut inner)?,
        }
        g.state.changed.notify_all();
        Ok(true)
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Events currently delivered to this consumer and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        let inner = self.group.state.inner.lock();
        inner.in_flight.values().filter(|f| f.consumer == self.name).count()
    }
}

impl Drop for Consumer<'_> {
    fn drop(&mut self) {
        let mut inner = self.group.state.inner.lock();
        inner.consumers.retain(|c| c.0 != self.name);
    }
}
