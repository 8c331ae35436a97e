//! What a forwarder reports: its state, its figures, the last gap it met,
//! and a handle that reads them while it runs on another thread.
//!
//! This module only holds figures; it must never read or write the store.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::settings::RetentionMode;

/// What a forwarder is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardState {
    /// Forwarding, or idle and caught up.
    Running,
    /// Waiting before it tries the target again.
    BackingOff,
    /// Not running.
    Stopped,
    /// The target refuses every batch (credentials, permissions); retried at the longest backoff.
    Error,
}

/// A forwarder's figures, for `annal forward status`, `GET /forward` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ForwardStatus {
    /// The forwarder's name.
    pub name: String,
    /// The target ([`ForwardTarget::describe`](super::ForwardTarget::describe)).
    pub target: String,
    /// What it is doing.
    pub state: ForwardState,
    /// Every position before it is delivered, filtered out, parked or skipped.
    pub checkpoint: u64,
    /// The head of the log when last looked at.
    pub head: u64,
    /// Positions between the checkpoint and the head.
    pub lag_events: u64,
    /// Bytes (data and metadata) of the events still to deliver, estimated
    /// from the average size of the events delivered so far.
    pub lag_bytes: u64,
    /// Age of the oldest event not yet delivered, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Events delivered since the forwarder started (this process).
    pub delivered_events: u64,
    /// Batches delivered since the forwarder started.
    pub delivered_batches: u64,
    /// Events delivered in total (saved with the checkpoint).
    pub delivered_total: u64,
    /// Events parked in the dead-letter stream in total.
    pub parked: u64,
    /// Positions skipped because scavenging or damage removed them before
    /// delivery, in total (for a drop the record names, the events it
    /// counts).
    pub skipped: u64,
    /// The last gap the forwarder met (or saved before a restart) that was
    /// not acknowledged: events removed before it delivered them, which it
    /// skipped. Stays set until [`acknowledge_gap`](super::acknowledge_gap) (`GET /health` is
    /// degraded while it is).
    pub gap: Option<ForwardGap>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When the last error happened, in microseconds since the Unix epoch.
    pub last_error_micros: Option<i64>,
    /// Whether scavenging waits for it.
    pub retention: RetentionMode,
    /// Why the store's drop record (`dropped.rec`) cannot be read, with the
    /// file and offset of the damage, while it cannot: the forwarder goes on
    /// delivering every event still there, and reports every position it
    /// passes that holds no event as a gap of unknown cause.
    pub drop_record_error: Option<String>,
    /// Something that does not stop forwarding but that an operator should
    /// know (the thread of a spawned forwarder kept its priority, a target's
    /// checkpoint lay past the end of the log, say): the
    /// state is not `error` for it, and `last_error` stays for failures.
    pub warning: Option<String>,
}

impl ForwardStatus {
    /// Adds `msg` to the warnings, after any there already (each says
    /// something different; none replaces another), unless it is there.
    pub(super) fn add_warning(&mut self, msg: String) {
        self.warning = Some(match self.warning.take() {
            Some(w) if w.contains(&msg) => w,
            Some(w) => format!("{w} | {msg}"),
            None => msg,
        });
    }
}

/// A stretch of the log removed before a forwarder delivered it, which it
/// skipped. Saved with the forwarder's checkpoint until [`acknowledge_gap`](super::acknowledge_gap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ForwardGap {
    /// The first position skipped.
    pub first_position: u64,
    /// The position after the last one skipped.
    pub end_position: u64,
    /// Events the store's drop record says were removed there (`None` for a
    /// gap it does not name: scavenging of a forwarder that ignores
    /// retention, or damage).
    pub dropped_events: Option<u64>,
    /// When the drop record says they were removed (µs since the epoch).
    pub dropped_micros: Option<i64>,
}

/// A shareable view of a running forwarder's figures.
#[derive(Debug, Clone)]
pub struct StatusHandle(pub(super) Arc<Mutex<ForwardStatus>>);

impl StatusHandle {
    /// A snapshot of the figures.
    pub fn get(&self) -> ForwardStatus {
        self.0.lock().clone()
    }
}
