//! What a forwarder keeps in the store between runs: its checkpoint
//! (`$forward-<name>-checkpoint`) with its retention hold and its last gap,
//! registering and forgetting a forwarder, and reading what is saved. This
//! module must never deliver an event.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::{
    ForwardGap, ForwardSettings, ForwardStart, ForwardStatus, RetentionMode, check_forwarder_name,
    forward_checkpoint_stream,
};
use crate::error::{Error, Result};
use crate::event::{EventData, ExpectedVersion};
use crate::format::system::{self, StoredForwardCheckpointV1, StoredHoldV1, Version1};
use crate::query::{Direction, StreamFrom};
use crate::store::{Extension, Store};

/// The checkpoint saved in the store for forwarder `name`, if any.
pub(super) fn load_checkpoint(store: &Store, name: &str) -> Result<Option<StoredForwardCheckpointV1>> {
    Ok(load_checkpoint_at(store, name)?.map(|(c, _)| c))
}

/// The checkpoint saved in the store for forwarder `name`, if any, with the
/// revision of its record in the checkpoint stream.
fn load_checkpoint_at(store: &Store, name: &str) -> Result<Option<(StoredForwardCheckpointV1, u64)>> {
    let stream = forward_checkpoint_stream(name);
    match store.read_stream(&stream, Direction::Backward, StreamFrom::End, 1) {
        Ok(mut e) => match e.pop() {
            // Released for good: the name starts afresh.
            Some(e) if e.event_type == RELEASED => Ok(None),
            Some(e) => Ok(Some((system::decode(&stream, e.position, &e.data)?, e.revision))),
            None => Ok(None),
        },
        Err(Error::StreamNotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The hold a forwarder with these settings records with its checkpoint.
pub(super) fn hold_of(settings: &ForwardSettings) -> StoredHoldV1 {
    match settings.retention {
        RetentionMode::Wait => StoredHoldV1::Wait,
        RetentionMode::Ignore => StoredHoldV1::Ignore,
    }
}

/// The checkpoint of a forwarder that has none: where its settings start.
pub(super) fn fresh_checkpoint(store: &Store, settings: &ForwardSettings) -> StoredForwardCheckpointV1 {
    StoredForwardCheckpointV1 {
        version: Version1,
        position: match settings.start {
            ForwardStart::Start => 0,
            ForwardStart::End => store.head_position(),
            ForwardStart::Position(p) => p,
        },
        delivered: 0,
        parked: 0,
        skipped: 0,
        retention: hold_of(settings),
        gap: None,
    }
}

/// Reads the forwarder's checkpoint and saves one if there is none, or if
/// its retention mode changed, so that the store holds it durably.
pub(super) fn register(store: &Store, name: &str, settings: &ForwardSettings) -> Result<StoredForwardCheckpointV1> {
    check_forwarder_name(name)?;
    let loaded = load_checkpoint(store, name)?;
    let retention = hold_of(settings);
    let record = StoredForwardCheckpointV1 {
        retention,
        ..loaded.unwrap_or_else(|| fresh_checkpoint(store, settings))
    };
    // A new forwarder that ignores retention has no hold to record.
    let new_and_free = loaded.is_none() && retention == StoredHoldV1::Ignore;
    if loaded != Some(record) && !new_and_free {
        store.append_system(
            &forward_checkpoint_stream(name),
            ExpectedVersion::Any,
            vec![EventData::json("$ForwardCheckpoint", system::encode(&record))],
        )?;
    }
    store.set_retention_hold(name, (retention == StoredHoldV1::Wait).then_some(record.position));
    Ok(record)
}

/// Records forwarder `name` in the store without running it: a checkpoint
/// where its settings start (unless it has one) with its retention mode. A
/// forwarder with [`RetentionMode::Wait`] then holds retention from there,
/// durably, before it ever runs (`annal serve` and `annal compact` register
/// the forwarders of annal.toml). Returns the checkpoint's position.
pub fn register_forwarder(store: &Store, name: &str, settings: &ForwardSettings) -> Result<u64> {
    Ok(register(store, name, settings)?.position)
}

/// Drops the retention hold of forwarder `name` (one that is not running):
/// its checkpoint stays, marked released, so scavenging no longer keeps the
/// events it has not delivered; a forwarder of that name that runs again with
/// [`RetentionMode::Wait`] holds again from its checkpoint. Returns false if
/// the store has no checkpoint of that name.
pub fn forget_forwarder(store: &Store, name: &str) -> Result<bool> {
    check_forwarder_name(name)?;
    let Some(c) = load_checkpoint(store, name)? else {
        return Ok(false);
    };
    if c.retention != StoredHoldV1::Released {
        let record = StoredForwardCheckpointV1 {
            retention: StoredHoldV1::Released,
            ..c
        };
        store.append_system(
            &forward_checkpoint_stream(name),
            ExpectedVersion::Any,
            vec![EventData::json("$ForwardCheckpoint", system::encode(&record))],
        )?;
    }
    store.set_retention_hold(name, None);
    Ok(true)
}

/// The type of the record [`release_forwarder`] appends to a forwarder's
/// checkpoint stream: the name has no checkpoint from there on.
const RELEASED: &str = system::FORWARD_RELEASED_TYPE;

/// What [`release_forwarder`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReleasedForwarder {
    /// Whether the store had a checkpoint of that name (now gone).
    pub had_checkpoint: bool,
    /// Entries of the drop record (`dropped.rec`) that named it, which no
    /// longer do.
    pub drop_entries_named: usize,
    /// Entries of the drop record pruned since (no forwarder can pass them again).
    pub drop_entries_pruned: usize,
}

/// Releases the name of forwarder `name` completely, for a forwarder that
/// will never run again (or should start afresh): its retention hold goes,
/// its checkpoint goes (`saved_forwarders` no longer lists it, and a
/// forwarder of that name starts where its settings say, as a new one), and
/// the drop record's entries no longer name it, so that they are pruned
/// once the other forwarders passed them. Its dead-letter stream stays
/// (evidence of what its target rejected). Works whether or not it saved a
/// checkpoint. Refuses (`InvalidInput`) while a forwarder of that name
/// exists over this store; a forwarder that passes a drop later (started
/// again under that name) still reports it. `annal serve` registers every
/// `[[forward]]` of annal.toml again: remove it from there first.
pub fn release_forwarder(store: &Store, name: &str) -> Result<ReleasedForwarder> {
    check_forwarder_name(name)?;
    // Held to the end: a forwarder of this name that starts meanwhile (on
    // another thread) loads its checkpoint and takes its hold after the
    // release, never between the check and the lifted hold.
    let live = store.extension::<Live>();
    let running = live.0.lock();
    if running.contains_key(name) {
        return Err(Error::InvalidInput(format!(
            "forwarder {name:?} is running over this store: stop it before releasing its name"
        )));
    }
    let loaded = load_checkpoint(store, name)?;
    if let Some(c) = loaded {
        // Read as a forgotten checkpoint by an annal that does not know the
        // type: no hold either way.
        let record = StoredForwardCheckpointV1 {
            retention: StoredHoldV1::Released,
            gap: None,
            ..c
        };
        store.append_system(
            &forward_checkpoint_stream(name),
            ExpectedVersion::Any,
            vec![EventData::json(RELEASED, system::encode(&record))],
        )?;
    }
    store.set_retention_hold(name, None);
    store.set_forwarder_position(name, None);
    let (drop_entries_named, drop_entries_pruned) = store.release_from_drops(name)?;
    drop(running);
    Ok(ReleasedForwarder {
        had_checkpoint: loaded.is_some(),
        drop_entries_named,
        drop_entries_pruned,
    })
}

/// What a forwarder saved in the store: its checkpoint and totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SavedForwarder {
    /// Every position before it is delivered, filtered out, parked or skipped.
    pub checkpoint: u64,
    /// Events delivered in total.
    pub delivered: u64,
    /// Events parked in total.
    pub parked: u64,
    /// Positions skipped (removed before delivery) in total.
    pub skipped: u64,
    /// Whether scavenging keeps the events from the checkpoint on: the
    /// forwarder's retention is `wait` and its hold was not forgotten.
    pub holds_retention: bool,
    /// The last gap it passed that was not acknowledged ([`acknowledge_gap`]).
    pub gap: Option<ForwardGap>,
}

/// The forwarders that exist over a store, by name: their shared figures,
/// so that an acknowledgement of a gap reaches a forwarder that runs (it
/// would otherwise save its gap again with its next checkpoint).
#[derive(Default)]
pub(super) struct Live(Mutex<Running>);

impl Extension for Live {
    fn close(&self, _store: &Store) -> Result<()> {
        Ok(())
    }
}

/// The forwarders running over a store, by name.
pub(super) type Running = BTreeMap<String, Arc<Mutex<ForwardStatus>>>;

/// Runs `start` with the registry of running forwarders locked, so that a
/// forwarder's start (loading its checkpoint, [`go_live`], taking its hold)
/// and [`release_forwarder`] of its name never interleave.
pub(super) fn starting<T>(store: &Store, start: impl FnOnce(&mut Running) -> T) -> T {
    let live = store.extension::<Live>();
    let mut running = live.0.lock();
    start(&mut running)
}

/// Makes the figures of forwarder `name` the ones an acknowledgement clears
/// (called inside [`starting`]).
pub(super) fn go_live(running: &mut Running, name: &str, status: &Arc<Mutex<ForwardStatus>>) {
    running.insert(name.to_string(), status.clone());
}

/// Forgets the figures of forwarder `name`, if they are still `status`.
pub(super) fn leave(store: &Store, name: &str, status: &Arc<Mutex<ForwardStatus>>) {
    let live = store.extension::<Live>();
    let mut by_name = live.0.lock();
    if by_name.get(name).is_some_and(|s| Arc::ptr_eq(s, status)) {
        by_name.remove(name);
    }
}

/// Acknowledges the gap forwarder `name` reported: its status, `/metrics`
/// (`annal_forward_gap`) and `/health` stop reporting it, and its saved
/// checkpoint no longer carries it. A forwarder running over this store
/// stops reporting it at once and saves its next checkpoints without it
/// (a gap it meets later is reported again). The `skipped` total stays.
/// Returns false if the store has no checkpoint of that name and no such
/// forwarder runs.
pub fn acknowledge_gap(store: &Store, name: &str) -> Result<bool> {
    check_forwarder_name(name)?;
    // The running forwarder first: from here on it saves no gap it had met.
    let live = store.extension::<Live>().0.lock().get(name).cloned();
    if let Some(status) = &live {
        status.lock().gap = None;
    }
    let stream = forward_checkpoint_stream(name);
    loop {
        let Some((c, revision)) = load_checkpoint_at(store, name)? else {
            return Ok(live.is_some());
        };
        if c.gap.is_none() {
            return Ok(true);
        }
        let record = StoredForwardCheckpointV1 { gap: None, ..c };
        // Over exactly the record read: a checkpoint the forwarder saved in
        // between is read again (its position must not go back).
        match store.append_system(
            &stream,
            ExpectedVersion::Exact(revision),
            vec![EventData::json("$ForwardCheckpoint", system::encode(&record))],
        ) {
            Ok(_) => return Ok(true),
            Err(Error::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Every forwarder that saved a checkpoint in the store, by name, sorted.
pub fn saved_forwarders(store: &Store) -> Result<Vec<(String, SavedForwarder)>> {
    let mut out = Vec::new();
    for info in store.streams() {
        let Some(name) = info
            .name
            .strip_prefix("$forward-")
            .and_then(|n| n.strip_suffix("-checkpoint"))
        else {
            continue;
        };
        if let Some(c) = load_checkpoint(store, name)? {
            out.push((
                name.to_string(),
                SavedForwarder {
                    checkpoint: c.position,
                    delivered: c.delivered,
                    parked: c.parked,
                    skipped: c.skipped,
                    holds_retention: c.retention == StoredHoldV1::Wait,
                    gap: c.gap.map(ForwardGap::from),
                },
            ));
        }
    }
    Ok(out)
}

/// The position saved in the store for forwarder `name` (`None` if it never saved one).
pub fn saved_checkpoint(store: &Store, name: &str) -> Result<Option<u64>> {
    Ok(load_checkpoint(store, name)?.map(|c| c.position))
}
