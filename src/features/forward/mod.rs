//! Store and forward: a [`Forwarder`] ships the events of the global log to a
//! [`ForwardTarget`] (a database, a message bus, another store), in order,
//! from a durable checkpoint, through any outage of the target.
//!
//! The forwarder reads the log from its checkpoint through a [`Filter`] (system
//! streams are never forwarded), hands batches to the target and advances its
//! checkpoint only after the target confirms a batch. A target that fails is
//! retried with exponential backoff and jitter up to a cap; an event the target
//! rejects for good (a poison event) is parked in `$forward-<name>-parked`
//! with the target's reason, and forwarding goes on. A checkpoint that lies
//! before events removed by scavenging (or lost to damage) is reported as a gap
//! in the status, never skipped silently. A forwarder with
//! [`RetentionMode::Wait`] holds retention: scavenging keeps every event it
//! has not delivered. The hold is part of its durable checkpoint, so it holds
//! while no forwarder runs too (a store loads it when it opens: `annal compact`
//! with `annal serve` down keeps what it has not delivered),
//! until [`forget_forwarder`] drops it. A forwarder [`Forwarder::spawn`]
//! starts runs on a thread of lower priority ([`ForwardSettings::nice`]) and
//! calls its target on threads of the idle class
//! ([`ForwardSettings::idle_priority`]), so that local appends get the
//! processor first on a busy machine.
//!
//! The checkpoint is the last event of `$forward-<name>-checkpoint`; a target
//! that stores its own checkpoint in the same transaction as the events
//! ([`ForwardTarget::load_checkpoint`] answers `Some`) is trusted over it, which
//! makes delivery exactly once across crashes on either side. Other targets
//! must drop a redelivered event by its id (a crash between a delivery and the
//! next checkpoint save delivers the same events again).
//!
//! This module owns the forwarding protocol. It reads and appends through the
//! store like any client, runs no async runtime and must never touch files or
//! know a network protocol: targets do that, outside the library.
//!
//! The parts: its settings (`settings.rs`), the target
//! contract (`target.rs`), the figures (`status.rs`), one step of forwarding
//! (`forwarder.rs`), the run loop and its thread (`run.rs`, `priority.rs`),
//! gaps (`gaps.rs`) and the saved checkpoints and registry (`saved.rs`).

use crate::error::{Error, Result};

mod forwarder;
mod gaps;
mod priority;
mod run;
mod saved;
mod settings;
mod status;
mod target;

pub use forwarder::{ForwardError, Forwarder, Step};
pub use run::ForwarderHandle;
pub use saved::{
    ReleasedForwarder, SavedForwarder, acknowledge_gap, forget_forwarder, register_forwarder, release_forwarder,
    saved_checkpoint, saved_forwarders,
};
pub use settings::{ForwardSettings, ForwardStart, RetentionMode};
pub use status::{ForwardGap, ForwardState, ForwardStatus, StatusHandle};
pub use target::{Batch, ForwardTarget, TargetError};

/// The system stream holding a forwarder's checkpoint.
pub fn forward_checkpoint_stream(name: &str) -> String {
    format!("$forward-{name}-checkpoint")
}

/// The dead-letter stream of a forwarder: events its target rejected for good.
pub fn forward_parked_stream(name: &str) -> String {
    format!("$forward-{name}-parked")
}

/// Checks a forwarder's name: 1-200 letters, digits or `-_.:`.
pub fn check_forwarder_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 200 || !name.chars().all(|c| c.is_alphanumeric() || "-_.:".contains(c)) {
        return Err(Error::InvalidInput(format!(
            "forwarder name {name:?} must be 1-200 letters, digits or -_.:"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::Store;

    /// A target that takes every batch.
    struct Nowhere;

    impl ForwardTarget for Nowhere {
        fn describe(&self) -> String {
            "nowhere".into()
        }
        fn load_checkpoint(&mut self, _forwarder: &str) -> std::result::Result<Option<u64>, TargetError> {
            Ok(None)
        }
        fn deliver(&mut self, _batch: &Batch<'_>) -> std::result::Result<(), TargetError> {
            Ok(())
        }
    }

    /// Review of issue 14: `release_forwarder` checked that no forwarder of
    /// the name runs, then appended its record and lifted the hold; a
    /// forwarder started in between (another thread of the process) kept
    /// running with its hold lifted, so scavenging could drop what it had
    /// not delivered. The check and the release now exclude a start.
    #[test]
    fn a_forwarder_started_while_its_name_is_released_keeps_its_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), crate::options::Options::default()).unwrap());
        store
            .append(
                "s",
                crate::event::ExpectedVersion::Any,
                vec![crate::event::EventData::json("E", "{}")],
            )
            .unwrap();
        let settings = ForwardSettings::default().retention(RetentionMode::Wait);
        for round in 0..200 {
            let name = format!("f{round}");
            // A saved checkpoint, so that the release appends its record.
            register_forwarder(&store, &name, &settings).unwrap();
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let (s, b, n) = (store.clone(), barrier.clone(), name.clone());
            let releaser = std::thread::spawn(move || {
                b.wait();
                release_forwarder(&s, &n).is_ok()
            });
            barrier.wait();
            let started = Forwarder::new(store.clone(), &name, settings.clone(), Box::new(Nowhere));
            let released = releaser.join().unwrap();
            if started.is_ok() {
                let hold = store.shared.retention_holds.lock().get(&name).copied();
                assert!(
                    hold.is_some(),
                    "round {round}: forwarder {name} runs without its hold (released: {released})"
                );
            }
            drop(started);
        }
    }
}
