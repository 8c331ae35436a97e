//! Wakes readers that wait for new events (subscriptions) when the writer
//! publishes appends, and when the store closes; calls the listeners callers
//! registered for that ([`EventListener`]).
//!
//! This module owns [`Notifier`] and [`EventListener`]; it must never read or
//! write the log.

use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// A callback of [`Notifier::listen`].
type Listener = dyn Fn() + Send + Sync;

/// Keeps a callback given to [`crate::Store::listen`] registered: the store
/// calls it after each publication of new events, and at close, until this
/// is dropped.
#[must_use = "the callback is called only while its listener is held"]
pub struct EventListener {
    _callback: Arc<Listener>,
}

impl std::fmt::Debug for EventListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventListener")
    }
}

/// Wakes subscribers when appends are published, and when the store closes.
#[derive(Default)]
pub(crate) struct Notifier {
    closed: Mutex<bool>,
    wake: Condvar,
    /// Callbacks whose [`EventListener`] is still held (the others are dropped lazily).
    listeners: Mutex<Vec<Weak<Listener>>>,
}

impl Notifier {
    /// Called at each publication (under the writer's locks): wakes the
    /// waiters. The listeners are called by [`Notifier::call_listeners`],
    /// once the writer has let its locks go.
    pub(crate) fn notify(&self) {
        let _g = self.closed.lock();
        self.wake.notify_all();
    }

    /// Called when the store closes: every waiter returns.
    pub(crate) fn close(&self) {
        *self.closed.lock() = true;
        self.wake.notify_all();
        self.call_listeners();
    }

    /// Registers `f`, called after each publication and at close while the
    /// returned listener is held.
    pub(crate) fn listen(&self, f: Arc<Listener>) -> EventListener {
        let mut listeners = self.listeners.lock();
        listeners.retain(|w| w.strong_count() > 0);
        listeners.push(Arc::downgrade(&f));
        EventListener { _callback: f }
    }

    /// Calls the callbacks still held, on the caller's thread (an
    /// appender's, after the writer let its locks go, or the closer's),
    /// outside the list's lock, since one may register another. A callback
    /// that panics is caught and never called again: it must not take the
    /// appender that happened to publish with it.
    pub(crate) fn call_listeners(&self) {
        let held: Vec<Arc<Listener>> = {
            let mut listeners = self.listeners.lock();
            if listeners.is_empty() {
                return;
            }
            listeners.retain(|w| w.strong_count() > 0);
            listeners.iter().filter_map(Weak::upgrade).collect()
        };
        for f in held {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f())).is_err() {
                self.listeners
                    .lock()
                    .retain(|w| !std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(&f)));
            }
        }
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
