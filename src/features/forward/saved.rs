//! What a forwarder keeps in the store between runs: its checkpoint
//! (`$forward-<name>-checkpoint`) with its retention hold and its last gap,
//! registering and forgetting a forwarder, and reading what is saved. This
//! module must never deliver an event.

use super::*;

/// The checkpoint saved in the store for forwarder `name`, if any.
pub(super) fn load_checkpoint(store: &Store, name: &str) -> Result<Option<StoredForwardCheckpointV1>> {
    let stream = forward_checkpoint_stream(name);
    match store.read_stream(&stream, Direction::Backward, StreamFrom::End, 1) {
        Ok(mut e) => match e.pop() {
            Some(e) => Ok(Some(system::decode(&stream, e.position, &e.data)?)),
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

/// What a forwarder saved in the store: its checkpoint and totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// Acknowledges the gap forwarder `name` (one that is not running) reported:
/// its saved checkpoint no longer carries it, so its status, `/metrics`
/// (`annal_forward_gap`) and `/health` stop reporting it when it runs again.
/// The `skipped` total stays. Returns false if the store has no checkpoint of
/// that name. A running forwarder saves its own gap again: stop it first.
pub fn acknowledge_gap(store: &Store, name: &str) -> Result<bool> {
    check_forwarder_name(name)?;
    let Some(c) = load_checkpoint(store, name)? else {
        return Ok(false);
    };
    if c.gap.is_some() {
        let record = StoredForwardCheckpointV1 { gap: None, ..c };
        store.append_system(
            &forward_checkpoint_stream(name),
            ExpectedVersion::Any,
            vec![EventData::json("$ForwardCheckpoint", system::encode(&record))],
        )?;
    }
    Ok(true)
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

