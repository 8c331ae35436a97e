//! The thread priority of a spawned forwarder: its niceness raised so that
//! local appends get the processor first, and a warning in its status when
//! that fails.
//!
//! This module touches only the calling thread's priority and the status.

use parking_lot::Mutex;

use super::status::ForwardStatus;

/// Says in the status that a spawned forwarder's thread kept its priority,
/// if it did: a warning, not a failure (it forwards all the same, and its
/// state stays what its deliveries make it).
pub(super) fn note_priority(status: &Mutex<ForwardStatus>, lowered: std::io::Result<()>) {
    if let Err(e) = lowered {
        status.lock().add_warning(format!(
            "the forwarder's thread keeps its priority (its niceness could not be raised: {e}): it competes with local appends for the processor"
        ));
    }
}

/// Raises the calling thread's niceness to `nice` (never lowers it).
#[cfg(target_os = "linux")]
pub(super) fn lower_priority(nice: u8) -> std::io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    // On Linux a thread id names that thread alone to setpriority.
    let me = Some(rustix::thread::gettid());
    let now = rustix::process::getpriority_process(me)?;
    if now < i32::from(nice) {
        rustix::process::setpriority_process(me, i32::from(nice))?;
    }
    Ok(())
}

/// Thread priorities are left alone where a thread cannot be named.
#[cfg(not(target_os = "linux"))]
pub(super) fn lower_priority(_nice: u8) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::forward::{ForwardState, RetentionMode};

    fn status() -> ForwardStatus {
        ForwardStatus {
            name: "n".into(),
            target: "t".into(),
            state: ForwardState::Running,
            checkpoint: 0,
            head: 0,
            lag_events: 0,
            lag_bytes: 0,
            lag_seconds: 0.0,
            delivered_events: 0,
            delivered_batches: 0,
            delivered_total: 0,
            parked: 0,
            skipped: 0,
            gap: None,
            failures: 0,
            last_error: None,
            last_error_micros: None,
            retention: RetentionMode::Wait,
            drop_record_error: None,
            warning: None,
        }
    }

    /// Review of issue 14: a failure to set a spawned forwarder's niceness
    /// showed only as `last_error`, like a failure of its target. It is a
    /// warning: the state stays, `last_error` stays empty.
    #[test]
    fn a_niceness_that_cannot_be_set_is_a_warning_not_an_error() {
        let s = Mutex::new(status());
        note_priority(&s, Ok(()));
        assert_eq!(*s.lock(), status());
        note_priority(&s, Err(std::io::Error::from_raw_os_error(13)));
        let s = s.lock().clone();
        assert_eq!((s.state, s.last_error, s.failures), (ForwardState::Running, None, 0));
        assert!(s.warning.is_some_and(|w| w.contains("priority")));
    }
}
