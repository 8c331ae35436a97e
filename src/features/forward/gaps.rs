//! A forwarder's gaps: positions it passes that hold no event any more
//! (dropped under `retention.when_full = "drop-oldest"`, removed by other
//! retention, or lost to damage), counted exactly once and reported loudly
//! with the store's drop record (`dropped.rec`). This module must never move
//! a forwarder's cursor past an event it has not delivered.

use super::{ForwardGap, Forwarder};
use crate::error::Result;
use crate::format::system::StoredGapV1;

/// A stretch of positions, (start, end).
type Span = (u64, u64);

/// Positions covered by sorted, disjoint spans.
fn span_len(spans: &[Span]) -> u64 {
    spans.iter().map(|(start, end)| end - start).sum()
}

impl From<StoredGapV1> for ForwardGap {
    fn from(g: StoredGapV1) -> Self {
        ForwardGap {
            first_position: g.first_position,
            end_position: g.end_position,
            dropped_events: g.dropped_events,
            dropped_micros: g.dropped_micros,
        }
    }
}

impl From<ForwardGap> for StoredGapV1 {
    fn from(g: ForwardGap) -> Self {
        StoredGapV1 {
            first_position: g.first_position,
            end_position: g.end_position,
            dropped_events: g.dropped_events,
            dropped_micros: g.dropped_micros,
        }
    }
}

impl Forwarder {
    /// Moves the cursor past positions that hold no event any more (removed by
    /// scavenging or lost to damage), recording the gap loudly: with the
    /// store's drop record for the events it names (`drop-oldest`), and as
    /// removed by retention or damage for the other positions.
    pub(super) fn skip_gap(&mut self, head: u64) -> Result<()> {
        let first = self.store.first_event_position_from(self.cursor)?.unwrap_or(head);
        if first > self.cursor {
            let (from, to) = (self.cursor, first);
            self.load_drops();
            // Positions before `unknown` are of unknown cause: the drop
            // record cannot be read, or lost its entries there to damage.
            let damaged = self.drop_record_damaged();
            let unknown = if damaged { to } else { self.lost_before().clamp(from, to) };
            // Every position in the gap held one event; the drop record names some.
            let named = span_len(&self.gone_drops(unknown, to)?.0);
            self.drops_reported = self.drops_reported.max(unknown);
            self.note_drops(unknown, to, &[])?;
            let other = (to - from).saturating_sub(named);
            if other > 0 {
                let unread = if damaged {
                    " (the drop record, dropped.rec, cannot be read: they may have been dropped by retention.when_full = \"drop-oldest\")"
                } else if from < unknown {
                    " (the drop record, dropped.rec, lost its entries there to damage, see annal repair: they may have been dropped by retention.when_full = \"drop-oldest\")"
                } else {
                    ""
                };
                let msg = format!(
                    "gap: {other} events at positions {from}..{to} were removed (retention or damage){unread} before forwarder {:?} delivered them; they are skipped",
                    self.name
                );
                self.current.skipped += other;
                self.report_gap(
                    msg,
                    ForwardGap {
                        first_position: from,
                        end_position: to,
                        dropped_events: None,
                        dropped_micros: None,
                    },
                );
            }
            self.dirty = true;
            self.cursor = first;
            self.hold();
            self.save()?;
        }
        Ok(())
    }

    /// The end of the positions where the drop record lost entries to
    /// damage (`annal repair` wrote an entry saying so): 0 if it lost none.
    fn lost_before(&self) -> u64 {
        self.drops
            .1
            .iter()
            .filter(|d| d.records_lost())
            .map(|d| d.end_position)
            .max()
            .unwrap_or(0)
    }

    /// Reads the store's drop record again if a drop was recorded since it
    /// was read (or if it could not be read last time). A record that cannot
    /// be read (damage, an I/O error) does not stop the forwarder: it is
    /// taken as naming nothing, `drop_record_error` says why, and
    /// `note_drops` then reports every position without an event
    /// as a gap of unknown cause. Stopping every forwarder would stop the
    /// delivery of everything still there; treating the damage as "no gap"
    /// would hide a loss: this does neither.
    fn load_drops(&mut self) {
        let generation = self.store.drop_generation();
        let damaged = self.status.lock().drop_record_error.is_some();
        if self.drops.0 == generation && !damaged {
            return;
        }
        let (drops, error) = match self.store.dropped() {
            Ok(d) => (d, None),
            Err(e) => (
                Vec::new(),
                Some(format!(
                    "the drop record cannot be read ({e}): events that retention.when_full = \"drop-oldest\" removed cannot be told apart; every position without an event is reported as a gap; run annal verify"
                )),
            ),
        };
        self.drops = (generation, drops);
        let mut s = self.status.lock();
        if let Some(e) = &error
            && s.drop_record_error.is_none()
        {
            s.last_error = Some(e.clone());
            s.last_error_micros = Some(self.store.clock().now_micros());
        }
        s.drop_record_error = error;
    }

    fn drop_record_damaged(&self) -> bool {
        self.status.lock().drop_record_error.is_some()
    }

    /// The positions in `from..to` whose events the store's drop record says
    /// were dropped and that are really gone, as sorted, disjoint spans
    /// (start, end): an entry recorded twice counts once, and the runs of an
    /// entry whose segment was not replaced (the rewrite failed, or the
    /// process stopped in between) are not gone and not counted. With the
    /// latest time of the drops they come from.
    fn gone_drops(&mut self, from: u64, to: u64) -> Result<(Vec<Span>, Option<i64>)> {
        self.load_drops();
        let mut spans: Vec<Span> = Vec::new();
        let mut when = None;
        for d in &self.drops.1 {
            if d.first_position >= to || d.end_position <= from {
                continue;
            }
            for &(first, count) in &d.runs {
                let end = first.saturating_add(count);
                if count == 0 || first >= to || end <= from {
                    continue;
                }
                // A run goes with its segment's rewrite, all at once: its first position tells.
                if self.store.first_event_position_from(first)? == Some(first) {
                    continue;
                }
                spans.push((first.max(from), end.min(to)));
                when = when.max(Some(d.dropped_micros));
            }
        }
        spans.sort_unstable();
        let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Ok((merged, when))
    }

    /// Reports the events of the store's drop record that were dropped in
    /// `from..to` (the stretch the cursor has just passed over) and not
    /// reported yet, leaving out `present` (sorted positions a read returned
    /// there): the skipped count grows by exactly their number. Returns it.
    /// Called only once the cursor is at `to`, so that what is saved never
    /// counts a drop past the saved position.
    pub(super) fn note_drops(&mut self, from: u64, to: u64, present: &[u64]) -> Result<u64> {
        let start = from.max(self.drops_reported);
        if start >= to {
            return Ok(0);
        }
        self.load_drops();
        let damaged = self.drop_record_damaged();
        // Nothing names the drops before `unknown`: every position without an event counts.
        let unknown = if damaged { to } else { self.lost_before().clamp(start, to) };
        let mut counted = 0;
        if start < unknown {
            let missing = (unknown - start).saturating_sub(self.store.count_events_in(start, unknown)?);
            if missing > 0 {
                let why = if damaged {
                    "the drop record (dropped.rec) cannot be read"
                } else {
                    "the drop record (dropped.rec) lost its entries there to damage (see annal repair)"
                };
                let msg = format!(
                    "gap: {missing} positions in {start}..{unknown} hold no event and {why}: they may have been dropped (retention.when_full = \"drop-oldest\") or removed before forwarder {:?} delivered them; they are skipped",
                    self.name
                );
                self.current.skipped += missing;
                self.dirty = true;
                self.report_gap(
                    msg,
                    ForwardGap {
                        first_position: start,
                        end_position: unknown,
                        dropped_events: None,
                        dropped_micros: None,
                    },
                );
            }
            counted = missing;
        }
        self.drops_reported = to;
        if unknown >= to {
            return Ok(counted);
        }
        let (spans, when) = self.gone_drops(unknown, to)?;
        let returned = present
            .iter()
            .filter(|p| spans.iter().any(|(a, b)| (*a..*b).contains(*p)))
            .count() as u64;
        let events = span_len(&spans).saturating_sub(returned);
        if events == 0 {
            return Ok(counted);
        }
        if let (Some(&(first, _)), Some(&(_, end)), Some(when)) = (spans.first(), spans.last(), when) {
            let msg = format!(
                "gap: {events} events at positions {first}..{end} were dropped at {when} µs (retention.when_full = \"drop-oldest\", recorded in dropped.rec) before forwarder {:?} delivered them; they are skipped",
                self.name
            );
            self.current.skipped += events;
            self.dirty = true;
            self.report_gap(
                msg,
                ForwardGap {
                    first_position: first,
                    end_position: end,
                    dropped_events: Some(events),
                    dropped_micros: Some(when),
                },
            );
        }
        Ok(counted + events)
    }

    fn report_gap(&mut self, msg: String, gap: ForwardGap) {
        self.current.gap = Some(gap.into());
        self.dirty = true;
        let mut s = self.status.lock();
        s.skipped = self.current.skipped;
        s.gap = Some(gap);
        s.last_error = Some(msg);
        s.last_error_micros = Some(self.store.clock().now_micros());
    }
}
