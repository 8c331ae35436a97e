//! Retention policies and scavenging: rewriting sealed segments without the
//! events that are deleted, expired or past the store's retention, so that the
//! disk space comes back while every surviving event keeps its position.
//!
//! A rewrite is crash-safe: the old index is removed first (durably), the new
//! segment replaces the old one atomically, then the new index is written;
//! whatever moment a crash hits, reopening finds either the old segment or
//! the new one, and rebuilds a missing index from it. Readers holding the old
//! segment keep reading it until they let go. Positions of removed events are
//! kept by removed frames. This module decides what goes and rewrites; it
//! must never touch the active segment.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::format::dropped::{self, DROPPED_FILE, DroppedRange};
use crate::format::index::Lookup;
use crate::format::record::{self, EventView, Frame, Head, LostView, SealView};
use crate::format::segment::{SEGMENT_HEADER, SegmentHeader, Wrote, segment_file_name};
use crate::format::system::{self, StoredForwardCheckpointV1, StoredHoldV1};
use crate::log::scan::index_segment;
use crate::log::segments::SealedSegment;
use crate::log::state::Shared;
use crate::query::{Direction, StreamFrom};
use crate::storage::write_atomically;
use crate::stream_metadata::{META_PREFIX, SNAPSHOT_PREFIX, StreamMetadata};

// The policy and its rules are options; scavenging applies them.
pub use crate::options::{RetentionPolicy, RetentionRule, WhenFull};

impl RetentionRule {
    fn matches(&self, ev: &EventView<'_>) -> bool {
        self.event_type
            .as_deref()
            .is_some_and(|p| pattern_matches(p, ev.event_type))
            || self
                .tag
                .as_deref()
                .is_some_and(|p| ev.tags.iter().any(|t| pattern_matches(p, t)))
    }
}

fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// What a scavenge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScavengeReport {
    /// Sealed segments examined.
    pub segments_examined: usize,
    /// Segments rewritten.
    pub segments_rewritten: usize,
    /// Events removed.
    pub events_removed: u64,
    /// Bytes of segment files before and after the rewrites.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Events that would have been removed but were kept because a forwarder
    /// that waits for delivery (`retention = "wait"`) has not delivered them.
    pub events_kept_for_forwarding: u64,
    /// The forwarder whose hold was lowest during this scavenge, if any.
    pub held_by: Option<String>,
    /// Events removed although a forwarder that waits had not delivered
    /// them: the policy `drop-oldest` held the disk budget. Only events the
    /// retention policy removed, which reads still returned: not those of
    /// system streams nor those their stream's metadata hides (no forwarder
    /// would deliver them). Each run of them
    /// is in [`ScavengeReport::dropped`] and in the store's drop record.
    pub events_dropped_undelivered: u64,
    /// What `drop-oldest` removed before delivery, one entry per segment.
    pub dropped: Vec<DroppedRange>,
    /// Entries removed from the drop record because every forwarder passed them.
    pub drop_entries_pruned: usize,
}

/// Why an event goes or stays.
struct Judge<'a> {
    shared: &'a Shared,
    policy: &'a RetentionPolicy,
    now: i64,
    /// Events at or after this position stay: a forwarder has not delivered them.
    hold: Option<u64>,
    /// `drop-oldest`: segments past the budget lose their events whatever the hold.
    drop_oldest: bool,
}

/// Why scavenging removes an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Reads had stopped returning it: an event of a system stream, or one
    /// its stream's metadata hides (deleted, truncated, past `max_count` or
    /// `max_age`). No forwarder would deliver it; its removed frame says so.
    Hidden,
    /// The store's retention policy (an age, the size or count budget):
    /// reads still returned it, and a forwarder that had not delivered it
    /// counts it as a gap.
    Retention,
}

impl Judge<'_> {
    /// Whether the event must be removed, and why; `expired` marks a segment past the size or count budget.
    fn removal(&self, ev: &EventView<'_>, expired: bool) -> Option<Removal> {
        // Stream metadata: deleted, truncated, too many, too old.
        let last = self
            .shared
            .stream_state(ev.stream)
            .map_or(ev.revision, |s| s.last_revision);
        let meta: Option<StreamMetadata> = self.shared.metadata.read().by_stream.get(ev.stream).cloned();
        if meta.is_some_and(|m| !m.is_visible(ev.revision, ev.timestamp, last, self.now)) {
            return Some(Removal::Hidden);
        }
        // A hard-deleted stream's snapshots go with it, and so does one that
        // no longer fits its stream: taken before events its truncation (or
        // soft delete) removed, it would fold them into no state. One taken
        // at the last event before the truncation stays: often it is what
        // the truncation relies on.
        if let Some(of) = ev.stream.strip_prefix(SNAPSHOT_PREFIX)
            && let Some(m) = self.shared.metadata.read().by_stream.get(of)
        {
            let taken_at = system::decode::<system::StoredSnapshotHeaderV1>(ev.stream, ev.position, ev.metadata)
                .ok()
                .map(|h| h.revision);
            if m.tombstoned || taken_at.is_some_and(|r| m.leaves_behind_snapshot_at(r)) {
                return Some(Removal::Hidden);
            }
        }
        // Only the latest metadata and snapshot of a stream matter.
        if (ev.stream.starts_with(META_PREFIX) || ev.stream.starts_with(SNAPSHOT_PREFIX)) && ev.revision < last {
            return Some(Removal::Hidden);
        }
        // Nor do a group's or a forwarder's checkpoints but the latest two
        // (their removed frames say reads no longer returned them, see
        // `Removal::Hidden`: a forwarder passing them counts no gap). The
        // one before the latest stays so that a group or
        // forwarder whose latest checkpoint was lost to damage (and repair)
        // resumes from it, delivering a few events again, not from its start
        // setting. (A forwarder saves one per checkpoint interval while it
        // delivers, by default every second: kept for good, they would grow
        // the store by some 86,400 records a day each.)
        if is_checkpoint_stream(ev.stream) && ev.revision.saturating_add(1) < last {
            return Some(Removal::Hidden);
        }
        if ev.stream.starts_with('$') {
            return None;
        }
        let age_ms = (self.now - ev.timestamp).max(0) as u64 / 1000;
        let removes = match self.policy.rules.iter().find(|r| r.matches(ev)) {
            Some(r) => match r.keep_ms {
                None => false,
                Some(keep) => age_ms > keep || expired,
            },
            None => expired || self.policy.max_age_ms.is_some_and(|m| age_ms > m),
        };
        removes.then_some(Removal::Retention)
    }
}

/// Whether `stream` holds the checkpoints of a group
/// (`$group-<name>-checkpoint`) or of a forwarder
/// (`$forward-<name>-checkpoint`): only the last event of either is ever
/// read (by `Store::group`, by a forwarder starting, by the forwarders'
/// status), so a scavenge may remove all but the last two. Not the parked
/// streams (`-parked`): every parked record is read. A forwarder passing
/// the removed ones counts no gap: their frames say reads no longer
/// returned them.
fn is_checkpoint_stream(stream: &str) -> bool {
    (stream.starts_with("$group-") || stream.starts_with("$forward-")) && stream.ends_with("-checkpoint")
}

/// Loads the retention holds that forwarders saved with their checkpoints
/// (the last event of each `$forward-<name>-checkpoint`, see
/// `features::forward`): a checkpoint whose retention is `wait` holds from its
/// position, so that scavenging keeps what the forwarder has not delivered
/// while it does not run. A record that does not decode holds everything
/// (position 0): keeping too much is the safe mistake; the forwarder reports
/// the record when it starts.
pub(crate) fn load_holds(shared: &Shared) -> Result<()> {
    let names: Vec<String> = shared
        .streams
        .read()
        .names_with_prefix("$forward-")
        .iter()
        .filter_map(|n| n.strip_prefix("$forward-").and_then(|n| n.strip_suffix("-checkpoint")))
        .map(str::to_string)
        .collect();
    let mut holds = std::collections::BTreeMap::new();
    for name in names {
        let stream = format!("$forward-{name}-checkpoint");
        let Some(last) = shared
            .read_stream(&stream, Direction::Backward, StreamFrom::End, 1)?
            .pop()
        else {
            continue;
        };
        match system::decode::<StoredForwardCheckpointV1>(&stream, last.position, &last.data) {
            Ok(c) if c.retention == StoredHoldV1::Wait => {
                holds.insert(name, c.position);
            }
            Ok(_) => {}
            Err(_) => {
                holds.insert(name, 0);
            }
        }
    }
    *shared.retention_holds.lock() = holds;
    Ok(())
}

/// The drop record of the store behind `shared`: what `drop-oldest` removed
/// before forwarders delivered it, oldest first (empty if nothing was).
pub(crate) fn load_dropped(shared: &Shared) -> Result<Vec<DroppedRange>> {
    let path = shared.dir.join(DROPPED_FILE);
    if !shared.storage.exists(&path) {
        return Ok(Vec::new());
    }
    let bytes = shared.storage.map(&path).ctx(|| format!("reading {DROPPED_FILE}"))?;
    dropped::decode((*bytes).as_ref(), &path)
}

/// Adds `range` to the drop record, durably (the whole file is replaced
/// atomically), before the events it names are removed.
fn record_drop(shared: &Shared, range: DroppedRange) -> Result<()> {
    let mut all = load_dropped(shared)?;
    all.push(range);
    write_atomically(&*shared.storage, &shared.dir, DROPPED_FILE, &dropped::encode(&all)?)
        .ctx(|| format!("writing {DROPPED_FILE}"))?;
    shared.drops_recorded.fetch_add(1, std::sync::atomic::Ordering::Release);
    Ok(())
}

/// The position saved in the checkpoint of every forwarder that saved one,
/// by name: `Some(position)`, or `None` for a forwarder forgotten (its
/// retention `released`) or released for good. A record that does not
/// decode counts as position 0 (nothing it could need is pruned).
fn saved_forwarder_positions(shared: &Shared) -> Result<BTreeMap<String, Option<u64>>> {
    let names: Vec<String> = shared
        .streams
        .read()
        .names_with_prefix("$forward-")
        .iter()
        .filter_map(|n| n.strip_prefix("$forward-").and_then(|n| n.strip_suffix("-checkpoint")))
        .map(str::to_string)
        .collect();
    let mut saved = BTreeMap::new();
    for name in names {
        let stream = format!("$forward-{name}-checkpoint");
        let Some(last) = shared
            .read_stream(&stream, Direction::Backward, StreamFrom::End, 1)?
            .pop()
        else {
            continue;
        };
        let position = match system::decode::<StoredForwardCheckpointV1>(&stream, last.position, &last.data) {
            Ok(c) if c.retention == StoredHoldV1::Released => None,
            Ok(c) => Some(c.position),
            Err(_) => Some(0),
        };
        saved.insert(name, position);
    }
    Ok(saved)
}

/// The forwarders whose position lies before `end`, by name, at that
/// position: each that holds retention (running, or stopped at its saved
/// checkpoint) and each running one whatever its retention mode (one that
/// ignores retention must pass a drop too, and report it). A forwarder in
/// both is at the lower of the two.
fn forwarders_before(shared: &Shared, end: u64) -> BTreeMap<String, u64> {
    let mut all: BTreeMap<String, u64> = shared
        .retention_holds
        .lock()
        .iter()
        .filter(|(_, p)| **p < end)
        .map(|(n, p)| (n.clone(), *p))
        .collect();
    for (name, p) in shared.forwarder_positions.lock().iter().filter(|(_, p)| **p < end) {
        all.entry(name.clone()).and_modify(|q| *q = (*q).min(*p)).or_insert(*p);
    }
    all
}

/// The forwarders a drop entry ending at `end` names: each whose hold or
/// running position lies before `end` (see `forwarders_before`), at the
/// position it had passed when the drop happened: where it runs if it
/// runs, else its hold. A running forwarder's hold is its saved checkpoint,
/// which may lie behind where it runs: it is named then even if it passed
/// the whole entry (a restart from that checkpoint passes the positions
/// again, and must not count what it had delivered as dropped).
fn named_before(shared: &Shared, end: u64) -> BTreeMap<String, u64> {
    let running = shared.forwarder_positions.lock().clone();
    forwarders_before(shared, end)
        .into_iter()
        .map(|(name, p)| {
            let at = running.get(&name).copied().unwrap_or(p);
            (name, at)
        })
        .collect()
}

/// Whether no forwarder can pass the positions of drop entry `d` again, so
/// that it may be pruned. Every forwarder that could must have passed its
/// end: each forwarder with a saved checkpoint not forgotten, by its saved
/// position (one that moved on without saving passes the same positions
/// again after a restart, and it saves its `skipped` and `gap` with its
/// position); each running forwarder whatever its retention mode, and each
/// that holds retention, by its position now (a target that keeps its own
/// checkpoint may resume it behind the saved one); and each forwarder the
/// entry names (those that had not passed the events when they were
/// dropped) must have saved a checkpoint at all, or been forgotten: one
/// that never saved one starts again where its settings say, before the
/// drop, after a restart. The
/// entry `annal repair` writes for lost entries is never pruned: which
/// forwarders the lost entries named is unknown, and one that never saved
/// a checkpoint is known to no rule, so no rule could tell when every
/// forwarder that must pass it has.
fn passed_by_all(d: &DroppedRange, saved: &BTreeMap<String, Option<u64>>, running: &BTreeMap<String, u64>) -> bool {
    if d.records_lost() {
        return false;
    }
    let end = d.end_position;
    saved.values().flatten().all(|p| *p >= end)
        && running.values().all(|p| *p >= end)
        && d.forwarders.iter().all(|(name, _)| saved.contains_key(name))
}

/// Removes from the drop record the entries that no forwarder can pass
/// again (see `passed_by_all`). The new file replaces the old one
/// atomically (written, synced, renamed), so a crash leaves one or the
/// other. A record that cannot be read is left as it is: it is evidence,
/// and verify reports it.
fn prune_dropped(shared: &Shared) -> Result<usize> {
    let Ok(all) = load_dropped(shared) else {
        return Ok(0);
    };
    if all.is_empty() {
        return Ok(0);
    }
    let saved = saved_forwarder_positions(shared)?;
    let running = forwarders_before(shared, u64::MAX);
    let keep: Vec<DroppedRange> = all
        .iter()
        .filter(|d| !passed_by_all(d, &saved, &running))
        .cloned()
        .collect();
    let pruned = all.len() - keep.len();
    if pruned > 0 {
        write_atomically(&*shared.storage, &shared.dir, DROPPED_FILE, &dropped::encode(&keep)?)
            .ctx(|| format!("writing {DROPPED_FILE}"))?;
    }
    Ok(pruned)
}

/// Takes forwarder `name` out of every entry of the drop record (a
/// forwarder released for good, see `features::forward`), then prunes the
/// entries no forwarder can pass again, one scavenge at a time. Returns how
/// many entries named it and how many were pruned. A record that cannot be
/// read is an error here: the release must not look done while an entry
/// may still name the forwarder.
pub(crate) fn release_from_drops(shared: &Shared, name: &str) -> Result<(usize, usize)> {
    let _one_at_a_time = shared.scavenging.lock();
    let mut all = load_dropped(shared)?;
    let mut named = 0;
    for d in &mut all {
        let before = d.forwarders.len();
        d.forwarders.retain(|(n, _)| n != name);
        named += usize::from(d.forwarders.len() != before);
    }
    if named > 0 {
        write_atomically(&*shared.storage, &shared.dir, DROPPED_FILE, &dropped::encode(&all)?)
            .ctx(|| format!("writing {DROPPED_FILE}"))?;
    }
    let pruned = prune_dropped(shared)?;
    Ok((named, pruned))
}

/// Scavenges every sealed segment of the store behind `shared` under `policy`.
pub(crate) fn scavenge(shared: &Shared, policy: &RetentionPolicy) -> Result<ScavengeReport> {
    let _one_at_a_time = shared.scavenging.lock();
    let sealed = shared.segments.sealed();
    let mut report = ScavengeReport::default();
    let expired = expired_segments(shared, &sealed, policy);
    let hold = shared.lowest_hold();
    report.held_by = hold.as_ref().map(|(n, _)| n.clone());
    let judge = Judge {
        shared,
        policy,
        now: shared.options.clock.now_micros(),
        hold: hold.map(|(_, p)| p),
        drop_oldest: policy.when_full == WhenFull::DropOldest,
    };
    for (i, seg) in sealed.iter().enumerate() {
        report.segments_examined += 1;
        report.bytes_before += seg.bytes.len() as u64;
        match rewrite(shared, seg, &judge, i < expired, &mut report.events_kept_for_forwarding)? {
            Some(rewritten) => {
                if let (Some(&(first_position, _)), Some(&(last, n))) =
                    (rewritten.dropped_runs.first(), rewritten.dropped_runs.last())
                {
                    let end_position = last + n;
                    let events = rewritten.dropped_runs.iter().map(|(_, n)| n).sum();
                    // Recorded durably before the events are gone: a drop is never
                    // unrecorded. A crash or failure before the segment is replaced
                    // leaves an entry whose events are still there; forwarders check
                    // that each run is really gone before they report it.
                    let forwarders: Vec<(String, u64)> = named_before(shared, end_position).into_iter().collect();
                    let range = DroppedRange {
                        first_position,
                        end_position,
                        events,
                        dropped_micros: judge.now,
                        forwarders,
                        runs: rewritten.dropped_runs,
                    };
                    record_drop(shared, range.clone())?;
                    report.events_dropped_undelivered += events;
                    report.dropped.push(range);
                }
                let new = replace(shared, seg, &rewritten.bytes)?;
                report.segments_rewritten += 1;
                report.events_removed += rewritten.removed;
                report.bytes_after += new.bytes.len() as u64;
                // `rewrite` answers only when it removed events.
                shared.segments.replace_sealed(new, &shared.block_cache, true);
            }
            None => report.bytes_after += seg.bytes.len() as u64,
        }
    }
    // The segments are rewritten: a failure to prune the drop record (a full
    // disk, say) costs only a larger record, kept as the store's last
    // background error, and must neither fail this scavenge nor skip the
    // budget check that follows it.
    match prune_dropped(shared) {
        Ok(n) => report.drop_entries_pruned = n,
        Err(e) => shared.record_background("pruning the drop record (dropped.rec)", Err::<(), _>(e)),
    }
    shared.check_budget(false);
    Ok(report)
}

/// A sealed segment rewritten in memory, not yet on disk.
struct Rewritten {
    /// The new segment file.
    bytes: Vec<u8>,
    /// Events removed.
    removed: u64,
    /// Under `drop-oldest`: the runs (first position, count) of removed
    /// events a forwarder had not delivered, in order.
    dropped_runs: Vec<(u64, u64)>,
}

/// How many of the oldest sealed segments are past the size or count budget.
fn expired_segments(shared: &Shared, sealed: &[Arc<SealedSegment>], policy: &RetentionPolicy) -> usize {
    let mut bytes: u64 = sealed.iter().map(|s| s.bytes.len() as u64).sum();
    // Counting the events costs a look at each index: only under a count budget.
    let counts: Vec<u64> = match policy.max_events {
        Some(_) => sealed.iter().map(|s| live_events(&s.index)).collect(),
        None => Vec::new(),
    };
    let active: u64 = match policy.max_events {
        Some(_) => shared
            .segments()
            .iter()
            .filter(|s| matches!(s, crate::log::segments::SegRef::Active(_)))
            .map(|s| s.with(live_events))
            .sum(),
        None => 0,
    };
    let mut events = counts.iter().sum::<u64>().saturating_add(active);
    let mut n = 0;
    for (i, s) in sealed.iter().enumerate() {
        let over_bytes = policy.max_bytes.is_some_and(|m| bytes > m);
        let over_events = policy.max_events.is_some_and(|m| events > m);
        if !over_bytes && !over_events {
            break;
        }
        bytes = bytes.saturating_sub(s.bytes.len() as u64);
        events = events.saturating_sub(counts.get(i).copied().unwrap_or(0));
        n += 1;
    }
    n
}

/// The events of a segment that `max_events` counts: those it holds (not
/// its positions lost or already removed), less those of system streams
/// (`$`-prefixed), which retention never removes by count.
fn live_events(l: &dyn Lookup) -> u64 {
    let held = l
        .event_count()
        .unwrap_or_else(|| l.next_position().saturating_sub(l.base()));
    let system: u64 = l
        .streams()
        .iter()
        .filter(|(name, _)| name.starts_with('$'))
        .map(|(name, _)| l.stream_entries(name, 0, true, usize::MAX).len() as u64)
        .sum();
    held.saturating_sub(system)
}

/// What the positions of a lost or removed frame held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunKind {
    /// Removed on purpose (a removed frame), not lost to damage (a lost one).
    removed: bool,
    /// Removed, and every position held an event reads no longer returned
    /// (see [`Removal::Hidden`]).
    hidden: bool,
}

/// Consecutive positions without an event, gathered into one frame.
#[derive(Debug, Clone, Copy)]
struct Run {
    first: u64,
    count: u64,
    kind: RunKind,
}

/// Builds one sealed segment without the events the judge removes; `None` if it keeps them all.
fn rewrite(
    shared: &Shared,
    seg: &SealedSegment,
    judge: &Judge<'_>,
    expired: bool,
    kept_for_forwarding: &mut u64,
) -> Result<Option<Rewritten>> {
    let logical = seg.logical()?;
    let bytes: &[u8] = &logical;
    let base = seg.index.base();
    let end = seg.index.next_position();
    let header = SegmentHeader::decode(bytes, &seg.path)?;
    // The rewrite is stored uncompressed; the compressor takes it up again.
    let mut out = SegmentHeader {
        compressed: false,
        dictionary: None,
        ..header
    }
    .encode()
    .to_vec();
    let mut removed = 0u64;
    let mut dropped_runs: Vec<(u64, u64)> = Vec::new();
    // The positions without an event being gathered into one frame: those
    // lost to damage (a repair's lost frame) stay lost, never become
    // removals; those whose events reads no longer returned are a run of
    // their own, flagged so, that a forwarder passing them counts no gap.
    let mut run: Option<Run> = None;
    // The kind of the positions of the lost or removed frame being read.
    let mut shared_kind = RunKind {
        removed: true,
        hidden: false,
    };
    // Removing a stream's last event records the stream's head in the removed
    // frame, so that the segments alone still say which revisions the stream
    // handed out (a rebuild of stream states from them must never start a
    // stream over). A head is kept only while no later event of its stream
    // exists: that event then says as much.
    let is_head = |stream: &str, revision: u64| shared.stream_state(stream).is_none_or(|s| s.last_revision <= revision);
    let mut heads: Vec<(String, u64, u64)> = Vec::new();
    // What the segment's version must admit.
    let mut wrote = Wrote::default();
    let flush = |out: &mut Vec<u8>, run: &mut Option<Run>, heads: &mut Vec<(String, u64, u64)>, wrote: &mut Wrote| {
        if let Some(Run { first, count, kind }) = run.take() {
            wrote.heads |= !heads.is_empty();
            wrote.hidden_removed |= kind.removed && kind.hidden;
            record::encode_lost(
                out,
                &LostView {
                    first_position: first,
                    count,
                    removed: kind.removed,
                    hidden: kind.hidden,
                    heads: heads
                        .iter()
                        .map(|(stream, revision, position)| Head {
                            stream,
                            revision: *revision,
                            position: *position,
                        })
                        .collect(),
                },
            );
        }
        heads.clear();
    };
    // The lost or removed frame the last positions without an event came
    // from: the position after its last, and its kind.
    let mut in_frame: Option<(u64, RunKind)> = None;
    for p in base..end {
        let mut lost_heads: Vec<(String, u64, u64)> = Vec::new();
        let view = match in_frame {
            // The next position of the same frame: known already.
            Some((frame_end, kind)) if p < frame_end => {
                shared_kind = kind;
                None
            }
            _ => {
                let (off, stop) = seg
                    .index
                    .location(p)
                    .ok_or_else(|| Error::corruption(&seg.path, 0, format!("no location for position {p}")))?;
                // Both ends are cut to the bytes' length in u64 first, so they
                // fit a usize. The positions of a lost or removed frame share
                // its offset, and all but its last have an empty range: the
                // frame is decoded from its offset on, by its own length.
                let len = bytes.len() as u64;
                let to = if stop > off { stop.min(len) } else { len };
                let frame = match (usize::try_from(off.min(len)), usize::try_from(to)) {
                    (Ok(from), Ok(to)) => &bytes[from..to],
                    _ => &[],
                };
                match record::decode_frame(frame) {
                    Ok((Frame::Event(v), _)) if stop > off => Some(v),
                    Ok((Frame::Lost(l), _)) if p == l.first_position => {
                        // Its positions join a run of their kind; the heads it records stay recorded.
                        shared_kind = RunKind {
                            removed: l.removed,
                            hidden: l.removed && l.hidden,
                        };
                        in_frame = Some((l.first_position.saturating_add(l.count), shared_kind));
                        lost_heads.extend(
                            l.heads
                                .iter()
                                .filter(|h| is_head(h.stream, h.revision))
                                .map(|h| (h.stream.to_string(), h.revision, h.position)),
                        );
                        None
                    }
                    Ok(_) | Err(_) => {
                        return Err(Error::corruption(
                            &seg.path,
                            off,
                            "damaged frame; run verify and repair first",
                        ));
                    }
                }
            }
        };
        let held = judge.hold.is_some_and(|h| p >= h);
        // Under `drop-oldest`, a segment past the budget goes whatever the hold.
        let dropping = expired && judge.drop_oldest;
        let removal = view.as_ref().and_then(|v| judge.removal(v, expired));
        // A hold keeps what a forwarder may still deliver: never the event
        // of a system stream (which no forwarder delivers). A user event its
        // stream's metadata hides stays: a change of the metadata may show
        // it again.
        let system = view.as_ref().is_some_and(|v| v.stream.starts_with('$'));
        match view {
            Some(v) if removal.is_none() || (held && !dropping && !system) => {
                // Kept: a forwarder that waits has not delivered it yet.
                if removal.is_some() {
                    *kept_for_forwarding += 1;
                }
                flush(&mut out, &mut run, &mut heads, &mut wrote);
                // Each kept event becomes its own committed append: the events it
                // shared an append with may be gone.
                wrote.sealed |= v.sealed;
                record::encode_committed(&mut out, &v)?;
            }
            other => {
                let kind = match &other {
                    Some(_) => RunKind {
                        removed: true,
                        hidden: removal == Some(Removal::Hidden),
                    },
                    None => shared_kind,
                };
                if run.is_some_and(|r| r.kind != kind) {
                    flush(&mut out, &mut run, &mut heads, &mut wrote);
                }
                heads.append(&mut lost_heads);
                if let Some(v) = &other {
                    removed += 1;
                    // Under `drop-oldest`, what a forwarder had not delivered
                    // yet and would have: the drop record names it.
                    if held && removal == Some(Removal::Retention) {
                        match dropped_runs.last_mut() {
                            Some((first, n)) if *first + *n == p => *n += 1,
                            _ => dropped_runs.push((p, 1)),
                        }
                    }
                    if is_head(v.stream, v.revision) {
                        heads.push((v.stream.to_string(), v.revision, p));
                    }
                }
                run = Some(match run {
                    Some(r) => Run {
                        count: r.count + 1,
                        ..r
                    },
                    None => Run {
                        first: p,
                        count: 1,
                        kind,
                    },
                });
            }
        }
    }
    flush(&mut out, &mut run, &mut heads, &mut wrote);
    if removed == 0 {
        return Ok(None);
    }
    let content_crc = crc32fast::hash(&out[SEGMENT_HEADER..]);
    record::encode_seal(
        &mut out,
        &SealView {
            next_position: end,
            event_count: end - base,
            content_crc,
        },
    );
    crate::format::segment::set_version(&mut out, crate::format::segment::version_for(wrote));
    Ok(Some(Rewritten {
        bytes: out,
        removed,
        dropped_runs,
    }))
}

/// Replaces sealed segment `seg` by its rewrite `out` on disk, crash-safely, and opens it.
fn replace(shared: &Shared, seg: &SealedSegment, out: &[u8]) -> Result<SealedSegment> {
    let base = seg.index.base();
    let st = &*shared.storage;
    let dir = &shared.dir;
    let name = segment_file_name(base);
    let idx_name = crate::format::segment::index_file_name(base);
    let idx_path = dir.join(&idx_name);
    // 1. Without an index, a reopen rebuilds one from whichever segment it finds.
    // (A rewrite that failed after this step left no index: nothing to remove.)
    if st.exists(&idx_path) {
        st.remove(&idx_path)
            .and_then(|()| st.sync_dir(dir))
            .ctx(|| format!("removing {idx_name}"))?;
    }
    // 2. The new segment replaces the old one atomically.
    write_atomically(st, dir, &name, out).ctx(|| format!("rewriting {name}"))?;
    // 3. Its index.
    let scanned = index_segment(out, base, &seg.path, &shared.meta_fields)?;
    write_atomically(st, dir, &idx_name, &scanned.index.encode_file()?).ctx(|| format!("writing {idx_name}"))?;
    SealedSegment::open(st, dir, base, None)
}
