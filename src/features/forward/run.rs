//! Running a forwarder: the loop that steps it until it is stopped, backing
//! off after failures, and the thread a spawned forwarder runs on, with its
//! [`ForwarderHandle`].
//!
//! This module only schedules steps; what a step does lives in `forwarder.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::forwarder::{ForwardError, Forwarder, Step};
use super::priority::lower_priority;
use super::status::{ForwardState, ForwardStatus, StatusHandle};
use super::target::TargetError;
use crate::error::{Error, Result};

impl Forwarder {
    /// The wait before retry number `failures` (1 for the first): doubling
    /// from the initial backoff up to the cap, with up to half of it random.
    pub fn backoff(&self, failures: u32, refused: bool) -> Duration {
        let cap = self.settings.backoff_max;
        if refused {
            return cap;
        }
        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(30)).unwrap_or(u32::MAX);
        let full = self.settings.backoff_initial.saturating_mul(factor).min(cap);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        // Between half and all of the full wait.
        full / 2 + (full / 2) * jitter / 1000
    }

    /// Forwards until `stop` is set, backing off after failures, and saves the
    /// checkpoint when it stops. With `once`, returns when the forwarder is at
    /// the head of the log (or at the first failure, as an error).
    pub fn run(&mut self, stop: &AtomicBool, once: bool) -> std::result::Result<(), ForwardError> {
        self.set_state(ForwardState::Running);
        let result = self.run_loop(stop, once);
        let saved = self.save();
        self.set_state(ForwardState::Stopped);
        match (result, saved) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => {
                let mut s = self.status.lock();
                s.last_error = Some(e.to_string());
                s.last_error_micros = Some(self.store.clock().now_micros());
                Err(e.into())
            }
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    fn run_loop(&mut self, stop: &AtomicBool, once: bool) -> std::result::Result<(), ForwardError> {
        while !stop.load(Ordering::Relaxed) {
            match self.step() {
                Ok(Step::Progress(_)) => self.set_state(ForwardState::Running),
                Ok(Step::Idle) => {
                    self.set_state(ForwardState::Running);
                    if once {
                        return Ok(());
                    }
                    if self.last_save.elapsed() >= self.settings.checkpoint_interval {
                        self.save()?;
                    }
                    sleep_unless(stop, self.settings.idle_wait);
                }
                Err(e) => {
                    if once || matches!(e, ForwardError::Store(_)) {
                        self.record_failure(&e);
                        return Err(e);
                    }
                    let refused = matches!(e, ForwardError::Target(TargetError::Refused(_)));
                    let failures = self.record_failure(&e);
                    sleep_unless(stop, self.backoff(failures, refused));
                }
            }
        }
        Ok(())
    }

    /// Runs the forwarder on its own thread until [`ForwarderHandle::stop`].
    pub fn spawn(mut self) -> Result<ForwarderHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let status = self.status_handle();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("annal-forward-{}", self.name))
            .spawn(move || {
                lower_priority(&self.status, self.settings.nice);
                self.idle_calls = self.settings.idle_priority;
                let result = self.run(&flag, false);
                drop(self);
                result
            })
            .map_err(|e| Error::Io {
                context: "starting a forwarder thread".into(),
                source: e,
            })?;
        Ok(ForwarderHandle {
            stop,
            status,
            thread: Some(thread),
        })
    }
}

/// Sleeps for `total`, or less if `stop` is set meanwhile.
fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

/// A forwarder running on its own thread.
#[derive(Debug)]
pub struct ForwarderHandle {
    stop: Arc<AtomicBool>,
    status: StatusHandle,
    thread: Option<std::thread::JoinHandle<std::result::Result<(), ForwardError>>>,
}

impl ForwarderHandle {
    /// A snapshot of the forwarder's figures.
    pub fn status(&self) -> ForwardStatus {
        self.status.get()
    }

    /// A view of the figures that outlives this handle.
    pub fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Asks the forwarder to stop, waits for it (it saves its checkpoint) and
    /// returns how it ended.
    pub fn stop(mut self) -> std::result::Result<(), ForwardError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ForwardError::Store(Error::InvalidInput(
                "the forwarder thread panicked".into(),
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for ForwarderHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
