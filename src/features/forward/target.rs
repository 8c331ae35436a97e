//! The contract between a forwarder and its target: the batch it hands
//! over, the target's answers, and the [`ForwardTarget`] trait.
//!
//! This module defines the contract only; it must never know a network
//! protocol or a particular target (those live outside the library).

use crate::event::RecordedEvent;

/// A batch handed to a target.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The forwarder's name (the key of a target-side checkpoint).
    pub forwarder: &'a str,
    /// The events, in log order; may be empty when only the checkpoint moves.
    pub events: &'a [RecordedEvent],
    /// The checkpoint once this batch is delivered: every position before it
    /// is delivered, filtered out or parked.
    pub next_position: u64,
    /// Most events the target may have unconfirmed at once.
    pub max_in_flight: usize,
}

/// Why a target did not take a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The target cannot be reached or failed for now (down, timed out, busy):
    /// the batch is retried after a backoff.
    #[error("target unavailable: {0}")]
    Unavailable(String),
    /// The target will never accept the event at `index` of the batch (a
    /// poison event): the events before it are delivered again without it,
    /// and it is parked.
    #[error("target rejected event {index} of the batch: {reason}")]
    Rejected {
        /// Index of the event in [`Batch::events`].
        index: usize,
        /// The target's reason.
        reason: String,
    },
    /// The target refuses every batch until someone acts (wrong credentials, no
    /// permission, a misconfiguration): retried at the longest backoff, and
    /// reported as an error state.
    #[error("target refused: {0}")]
    Refused(String),
}

/// Where a forwarder sends its events. Calls may block (a target with an async
/// client runs its own runtime); they come from one thread at a time, not
/// always the same one (a spawned forwarder makes each call on a short-lived
/// thread of the idle scheduling class, see
/// [`ForwardSettings::idle_priority`](super::ForwardSettings::idle_priority)).
pub trait ForwardTarget: Send {
    /// A description of the target for status and logs (no secrets).
    fn describe(&self) -> String;

    /// The checkpoint the target stored for `forwarder` together with the
    /// events it holds, if it stores one (`Ok(None)` for a target that does
    /// not, or has none yet). When `Some`, the forwarder resumes from it.
    fn load_checkpoint(&mut self, forwarder: &str) -> std::result::Result<Option<u64>, TargetError>;

    /// Delivers a batch durably; `Ok` means every event is stored at the
    /// target. Must be idempotent by event id: after a crash a batch may come
    /// again. A target that stores checkpoints stores `batch.next_position`
    /// in the same transaction, also when it is lower than the one it holds
    /// (a forwarder sets a checkpoint past the end of its store's log back
    /// with a batch without events).
    fn deliver(&mut self, batch: &Batch<'_>) -> std::result::Result<(), TargetError>;

    /// True if the target stores the checkpoint with the events; it is then
    /// also given batches without events when only the checkpoint moves.
    fn stores_checkpoint(&self) -> bool {
        false
    }
}
