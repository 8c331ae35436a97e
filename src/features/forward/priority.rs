//! The scheduling priority of a spawned forwarder: its thread at a raised
//! niceness, its calls to the target on threads of the idle class, so that
//! local appends get the processor first; and a warning in its status when
//! that fails.
//!
//! This module touches only the priority of the threads it runs on and the
//! status; it must never put a thread that takes the store's locks in the
//! idle class (an append waiting for such a lock would wait for whatever
//! runs at normal priority to leave the processor).

use parking_lot::Mutex;

use super::status::ForwardStatus;

/// Lowers the calling thread's priority for a spawned forwarder: niceness
/// `nice`. A failure is a warning in `status`, not an error: the forwarder
/// forwards all the same, and its state stays what its deliveries make it.
/// (This thread reads the store and saves the forwarder's checkpoint, taking
/// locks that appends wait for, so it never enters the idle class: see
/// [`on_idle_thread`].)
pub(super) fn lower_priority(status: &Mutex<ForwardStatus>, nice: u8) {
    note_niceness(status, raise_niceness(nice));
}

/// Says in the status that a spawned forwarder's thread kept its priority,
/// if it did.
fn note_niceness(status: &Mutex<ForwardStatus>, raised: std::io::Result<()>) {
    if let Err(e) = raised {
        status.lock().add_warning(format!(
            "the forwarder's thread keeps its priority (its niceness could not be raised: {e}): it competes with local appends for the processor"
        ));
    }
}

/// Runs `work` (a call to the target: its client's encoding and network
/// I/O, which take no lock of the store) on a new thread in Linux's idle
/// scheduling class, and waits for it: a thread of normal priority that
/// becomes runnable, a local append's, takes the processor from it at once.
/// The caller keeps its own class. If the class cannot be entered, `work`
/// runs at the caller's niceness and `warn` is called with why. If no
/// thread can be started, the error says why and `work` is not run (the
/// forwarder then backs off and tries again, as after a target's failure).
/// A panic in `work` is the caller's.
pub(super) fn on_idle_thread<T: Send>(work: impl FnOnce() -> T + Send, warn: impl FnOnce(String)) -> Result<T, String> {
    let (entered, done) = std::thread::scope(|scope| -> Result<_, String> {
        let handle = std::thread::Builder::new()
            .name("annal-fwd-call".into())
            .spawn_scoped(scope, || (enter_idle_class(), work()))
            .map_err(|e| format!("could not start a thread for a call to the target: {e}"))?;
        match handle.join() {
            Ok(done) => Ok(done),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    if let Err(e) = entered {
        warn(format!(
            "the forwarder's calls to its target could not enter the idle scheduling class ({e}): they run at the forwarder's niceness, and on a busy processor they can delay local appends"
        ));
    }
    Ok(done)
}

/// Puts the calling thread in the idle scheduling class (`SCHED_IDLE`).
/// The crate then sets the thread's niceness to 0, which fails without
/// the right to lower it (the thread inherits the forwarder's niceness, 10
/// by default): the class is what counts (niceness means nothing in it),
/// so that failure is no failure.
#[cfg(target_os = "linux")]
fn enter_idle_class() -> Result<(), String> {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    match thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Min,
        idle,
    ) {
        Ok(()) => Ok(()),
        Err(_) if thread_priority::thread_schedule_policy().is_ok_and(|p| p == idle) => Ok(()),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// The idle class is Linux's; elsewhere the thread is left as it is.
#[cfg(not(target_os = "linux"))]
fn enter_idle_class() -> Result<(), String> {
    Ok(())
}

/// Raises the calling thread's niceness to `nice` (never lowers it).
#[cfg(target_os = "linux")]
fn raise_niceness(nice: u8) -> std::io::Result<()> {
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
fn raise_niceness(_nice: u8) -> std::io::Result<()> {
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
        note_niceness(&s, Ok(()));
        assert_eq!(*s.lock(), status());
        note_niceness(&s, Err(std::io::Error::from_raw_os_error(13)));
        let s = s.lock().clone();
        assert_eq!((s.state, s.last_error, s.failures), (ForwardState::Running, None, 0));
        assert!(s.warning.is_some_and(|w| w.contains("priority")));
    }

    /// Issue 14: a forwarder at niceness 10 cost local appends 10-30% on
    /// the core it shared with them, its target's client's work mostly (an
    /// append waking from its sync waited for the forwarder's slice to
    /// end). The calls to the target run in the idle class, on a thread
    /// of their own: the caller (which takes the store's locks) keeps its
    /// class, and nothing is warned of.
    #[cfg(target_os = "linux")]
    #[test]
    fn calls_to_the_target_run_in_the_idle_class_and_the_caller_keeps_its_own() {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy};
        let before = thread_schedule_policy().unwrap();
        let mut warned = None;
        let inside = on_idle_thread(|| thread_schedule_policy().unwrap(), |w| warned = Some(w)).unwrap();
        assert_eq!(inside, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
        assert_eq!(thread_schedule_policy().unwrap(), before);
        assert_eq!(warned, None);
    }

    /// A target that panics panics the forwarder's thread, as when it ran there.
    #[test]
    fn a_panic_in_a_call_to_the_target_is_the_callers() {
        let caught = std::panic::catch_unwind(|| on_idle_thread(|| -> u8 { panic!("the target broke") }, |_| ()));
        assert!(caught.is_err());
    }

    /// The forwarder's own thread takes niceness `nice`, never a lower one.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_forwarders_thread_takes_its_niceness() {
        let (niceness, warning) = std::thread::spawn(|| {
            let s = Mutex::new(status());
            lower_priority(&s, 7);
            let niceness = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
            (niceness, s.lock().warning.clone())
        })
        .join()
        .unwrap();
        assert!(niceness >= 7, "{niceness}");
        assert_eq!(warning, None);
    }
}
