//! Wakes readers that wait for new events (subscriptions) when the writer
//! publishes appends, and when the store closes.
//!
//! This module owns [`Notifier`]; it must never read or write the log.

use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Wakes subscribers when appends are published, and when the store closes.
#[derive(Default)]
pub(crate) struct Notifier {
    closed: Mutex<bool>,
    wake: Condvar,
}

impl Notifier {
    /// Called after each publication.
    pub(crate) fn notify(&self) {
        let _g = self.closed.lock();
        self.wake.notify_all();
    }

    /// Called when the store closes: every waiter returns.
    pub(crate) fn close(&self) {
        *self.closed.lock() = true;
        self.wake.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.lock()
    }

    /// Waits until `ready()` holds, the store closes, or `deadline` passes.
    /// Returns false if the store closed.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>, ready: impl Fn() -> bool) -> bool {
        let mut closed = self.closed.lock();
        loop {
            if *closed {
                return false;
            }
            if ready() {
                return true;
            }
            match deadline {
                Some(d) => {
                    if self.wake.wait_until(&mut closed, d).timed_out() {
                        return !*closed;
                    }
                }
                None => self.wake.wait(&mut closed),
            }
        }
    }
}
