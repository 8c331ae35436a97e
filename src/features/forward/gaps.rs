//! A forwarder's gaps: positions it passes that hold no event any more
//! (dropped under `retention.when_full = "drop-oldest"`, removed by other
//! retention, or lost to damage), counted exactly once and reported loudly
//! with the store's drop record (`dropped.rec`). This module must never move
//! a forwarder's cursor past an event it has not delivered.

use super::{ForwardGap, Forwarder};
use crate::error::Result;
use crate::format::system::StoredGapV1;
use crate::log::holes::Span;

/// Positions covered by sorted, disjoint spans.
fn span_len(spans: &[Span]) -> u64 {
    spans.iter().map(|(start, end)| end - start).sum()
}

/// Positions of sorted, disjoint spans inside `from..to`.
fn clipped_len(spans: &[Span], from: u64, to: u64) -> u64 {
    spans
        .iter()
        .map(|&(start, end)| end.min(to).saturating_sub(start.max(from)))
        .sum()
}

/// The parts of sorted, disjoint spans inside `from..to`.
fn clipped(spans: &[Span], from: u64, to: u64) -> Vec<Span> {
    spans
        .iter()
        .map(|&(start, end)| (start.max(from), end.min(to)))
        .filter(|(start, end)| start < end)
        .collect()
}

/// Sorts spans and merges those that overlap or touch.
fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable();
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The positions of sorted, disjoint spans `a` that no span of sorted,
/// disjoint spans `b` covers.
fn subtract(a: &[Span], b: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(mut start, end) in a {
        while j < b.len() && b[j].1 <= start {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < end {
            if b[k].0 > start {
                out.push((start, b[k].0));
            }
            start = start.max(b[k].1);
            k += 1;
        }
        if start < end {
            out.push((start, end));
        }
    }
    out
}

/// What a stretch of the log the forwarder passes over held no event at,
/// as the store was when the forwarder read it. Positions whose removed
/// frames say they held events reads no longer returned (of system streams,
/// or hidden by their stream's metadata) are in none of the lists: the
/// forwarder would not have delivered those either.
pub(super) struct Stretch {
    /// Positions before it (from the stretch's start) are of unknown cause:
    /// the drop record cannot be read, or lost its entries there to damage.
    unknown: u64,
    /// Whether the drop record could not be read.
    damaged: bool,
    /// The positions before `unknown` that held no event, as sorted, disjoint spans.
    missing: Vec<Span>,
    /// The positions from `unknown` on that held no event and that the drop
    /// record names, as sorted, disjoint spans.
    named: Vec<Span>,
    /// The positions from `unknown` on that held no event and that the drop
    /// record does not name (nor says this forwarder had delivered before
    /// they were dropped): removed by the retention policy, or lost to
    /// damage.
    removed: Vec<Span>,
    /// The latest time of the drops `named` comes from.
    when: Option<i64>,
}

impl Stretch {
    /// Leaves out the positions the drop record does not name (the
    /// `removed` ones), for a stretch the forwarder is known to have passed
    /// before (a target's checkpoint ahead of the store's): whether each
    /// was removed before or after its delivery is unknown.
    pub(super) fn forget_removed(&mut self) {
        self.removed.clear();
    }
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
    /// removed by the retention policy or damage for the other positions
    /// (but those whose removed frames say reads no longer returned their
    /// events: a deleted stream's, a system stream's).
    pub(super) fn skip_gap(&mut self, head: u64) -> Result<()> {
        let first = self.store.first_event_position_from(self.cursor)?.unwrap_or(head);
        if first > self.cursor {
            let (from, to) = (self.cursor, first);
            // Every position in the gap held one event, and is gone for good:
            // no later scavenge changes what this finds.
            let stretch = self.survey(from, to, &[])?;
            self.cursor = first;
            self.note_drops(from, to, &stretch);
            self.dirty = true;
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

    /// What `from..to` holds no event at now, for [`Forwarder::note_drops`]:
    /// the positions of unknown cause (while the drop record cannot be
    /// read, or before the end of entries it lost to damage) without an
    /// event, the positions the drop record names that hold none, and the
    /// others without an event; none whose removed frame says it held an
    /// event reads no longer returned. `known`: the positions (ascending)
    /// the caller's read returned events at. A caller that read the stretch takes it while no
    /// segment was replaced since its read began, so that it describes what
    /// the read saw.
    pub(super) fn survey(&mut self, from: u64, to: u64, known: &[u64]) -> Result<Stretch> {
        self.load_drops();
        let damaged = self.drop_record_damaged();
        let unknown = if damaged {
            to
        } else {
            self.lost_before().clamp(from, to)
        };
        let holes = self.store.holes_in(from, to, known)?;
        let empty = subtract(&merge(holes.empty), &merge(holes.hidden));
        let missing = clipped(&empty, from, unknown);
        let after = clipped(&empty, unknown, to);
        let (named, when, delivered) = self.gone_drops(&after);
        let removed = subtract(&subtract(&after, &named), &delivered);
        Ok(Stretch {
            unknown,
            damaged,
            missing,
            named,
            removed,
            when,
        })
    }

    /// The positions of `empty` (sorted, disjoint spans that hold no event)
    /// that the store's drop record says were dropped, as sorted, disjoint
    /// spans (start, end): an entry recorded twice counts once, and
    /// positions of an entry whose segment was not replaced (the rewrite
    /// failed, or the process stopped in between) still hold their events
    /// and are not counted, even when a later scavenge removed some of the
    /// others. With the latest time of the drops they come from. Apart: the
    /// positions of such runs that lay before where an entry names this
    /// forwarder, which it had delivered when they were dropped (it passes
    /// them again after a restart from an older checkpoint): neither
    /// dropped for it nor a gap.
    fn gone_drops(&self, empty: &[Span]) -> (Vec<Span>, Option<i64>, Vec<Span>) {
        let (Some(&(from, _)), Some(&(_, to))) = (empty.first(), empty.last()) else {
            return (Vec::new(), None, Vec::new());
        };
        let mut spans: Vec<Span> = Vec::new();
        let mut delivered: Vec<Span> = Vec::new();
        let mut when = None;
        for d in &self.drops.1 {
            if d.first_position >= to || d.end_position <= from {
                continue;
            }
            // Where this forwarder was when the drop happened.
            let passed = d
                .forwarders
                .iter()
                .find(|(name, _)| *name == self.name)
                .map_or(0, |(_, p)| *p);
            for &(first, count) in &d.runs {
                let end = first.saturating_add(count);
                if count == 0 || first >= to || end <= from {
                    continue;
                }
                delivered.extend(clipped(empty, first, end.min(passed)));
                let gone = clipped(empty, first.max(passed), end);
                if !gone.is_empty() {
                    when = when.max(Some(d.dropped_micros));
                }
                spans.extend(gone);
            }
        }
        let delivered = merge(delivered);
        (subtract(&merge(spans), &delivered), when, delivered)
    }

    /// Reports what `stretch` (surveyed over a stretch starting at or before
    /// `from`) says held no event in `from..to` (the stretch the cursor has
    /// just passed over) and was not reported yet: the skipped count grows
    /// by exactly their number. Returns it. Called only once the cursor is
    /// at `to`, so that what is saved never counts a drop past the saved
    /// position.
    pub(super) fn note_drops(&mut self, from: u64, to: u64, stretch: &Stretch) -> u64 {
        let start = from.max(self.drops_reported);
        if start >= to {
            return 0;
        }
        self.drops_reported = to;
        let unknown = stretch.unknown.clamp(start, to);
        let missing = clipped_len(&stretch.missing, start, unknown);
        if missing > 0 {
            let why = if stretch.damaged {
                "the drop record (dropped.rec) cannot be read"
            } else {
                "the drop record (dropped.rec) lost its entries there to damage (see annal repair)"
            };
            let msg = format!(
                "gap: {missing} positions in {start}..{unknown} hold no event and {why}: they may have been dropped (retention.when_full = \"drop-oldest\") or removed before forwarder {:?} delivered them; they are skipped",
                self.name
            );
            self.report_gap(
                missing,
                msg,
                ForwardGap {
                    first_position: start,
                    end_position: unknown,
                    dropped_events: None,
                    dropped_micros: None,
                },
            );
        }
        let spans = clipped(&stretch.named, unknown, to);
        let events = span_len(&spans);
        if let (Some(&(first, _)), Some(&(_, end)), Some(when), true) =
            (spans.first(), spans.last(), stretch.when, events > 0)
        {
            let msg = format!(
                "gap: {events} events at positions {first}..{end} were dropped at {when} µs (retention.when_full = \"drop-oldest\", recorded in dropped.rec) before forwarder {:?} delivered them; they are skipped",
                self.name
            );
            self.report_gap(
                events,
                msg,
                ForwardGap {
                    first_position: first,
                    end_position: end,
                    dropped_events: Some(events),
                    dropped_micros: Some(when),
                },
            );
        }
        let spans = clipped(&stretch.removed, unknown, to);
        let removed = span_len(&spans);
        if let (Some(&(first, _)), Some(&(_, end)), true) = (spans.first(), spans.last(), removed > 0) {
            let msg = format!(
                "gap: {removed} events at positions {first}..{end} were removed by the retention policy (or by a deletion, in segments written before format 4) or lost to damage before forwarder {:?} delivered them; they are skipped",
                self.name
            );
            self.report_gap(
                removed,
                msg,
                ForwardGap {
                    first_position: first,
                    end_position: end,
                    dropped_events: None,
                    dropped_micros: None,
                },
            );
        }
        missing + events + removed
    }

    /// Counts `skipped` positions of `gap` and reports it with `msg`.
    fn report_gap(&mut self, skipped: u64, msg: String, gap: ForwardGap) {
        self.current.skipped += skipped;
        self.current.gap = Some(gap.into());
        self.dirty = true;
        let mut s = self.status.lock();
        s.skipped = self.current.skipped;
        s.gap = Some(gap);
        s.last_error = Some(msg);
        s.last_error_micros = Some(self.store.clock().now_micros());
    }
}
