//! A forwarder's settings: where it starts, whether retention waits for it,
//! batch sizes, backoff, checkpoint interval and thread priority, with their
//! defaults, their parsing from text and their validation.
//!
//! This module only describes settings; it must never read or write the store.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::query::Filter;

/// Where a forwarder with no checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardStart {
    /// The first event of the log.
    #[default]
    Start,
    /// The head of the log when the forwarder first starts: only later events.
    End,
    /// This position (inclusive).
    Position(u64),
}

impl FromStr for ForwardStart {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "start" => Ok(ForwardStart::Start),
            "end" => Ok(ForwardStart::End),
            _ => s
                .parse::<u64>()
                .map(ForwardStart::Position)
                .map_err(|_| Error::InvalidInput(format!("forward start {s:?} is not start, end or a position"))),
        }
    }
}

/// Whether scavenging waits for a forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    /// Scavenging keeps every event the forwarder has not delivered, from its
    /// durable checkpoint, whether it runs or not.
    #[default]
    Wait,
    /// Scavenging ignores the forwarder; events removed before delivery are reported as a gap.
    Ignore,
}

impl FromStr for RetentionMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wait" => Ok(RetentionMode::Wait),
            "ignore" => Ok(RetentionMode::Ignore),
            _ => Err(Error::InvalidInput(format!("retention {s:?} is not wait or ignore"))),
        }
    }
}

/// How a forwarder runs. Built from [`ForwardSettings::default`] with one
/// method per field (`ForwardSettings::default().batch_size(500)`), or by
/// setting a field; new fields may come, with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardSettings {
    /// Which events are forwarded (system streams never are).
    pub filter: Filter,
    /// Where a forwarder without a checkpoint starts.
    pub start: ForwardStart,
    /// Most events in one batch handed to the target.
    pub batch_size: usize,
    /// Most events a target may have sent and not yet confirmed; a hint for
    /// targets that pipeline a batch (a batch is never larger than this).
    pub max_in_flight: usize,
    /// Whether scavenging waits for this forwarder.
    pub retention: RetentionMode,
    /// First wait after a failure; doubled after each further failure.
    pub backoff_initial: Duration,
    /// Longest wait between retries.
    pub backoff_max: Duration,
    /// The checkpoint in the store is saved at most this often (and when the
    /// forwarder stops), except after a parked event, when it is saved at once.
    pub checkpoint_interval: Duration,
    /// How long an idle forwarder waits before it looks for new events.
    pub idle_wait: Duration,
    /// Whether a spawned forwarder ([`Forwarder::spawn`](super::Forwarder::spawn))
    /// makes its calls to the target (its client's encoding and network
    /// I/O, most of what forwarding costs) on threads of Linux's idle
    /// scheduling class (`SCHED_IDLE`; default `false`): a thread of normal
    /// priority that becomes runnable, a local append's, takes the
    /// processor from them at once. The forwarder's own thread, which reads
    /// the store and saves the checkpoint (taking locks appends wait for),
    /// stays in the normal class at niceness [`nice`](Self::nice) either
    /// way. Off by default: a call preempted while it holds a lock every
    /// thread of the process shares (the memory allocator's, the address
    /// space's) can make an append wait until it runs again, which on a
    /// processor kept fully busy by other work can take a long time; and
    /// there the calls get almost no time (the lag grows, the target's
    /// timeouts may expire). On a machine with processor time to spare it
    /// keeps forwarding from slowing appends that share its core (see
    /// README). [`Forwarder::run`](super::Forwarder::run) makes the calls on
    /// the calling thread and changes nothing.
    pub idle_priority: bool,
    /// The niceness (0 to 19) of a spawned forwarder's thread, on Linux:
    /// the higher, the sooner it yields the processor to local appends.
    /// Never lowers a niceness the process has already; 0 leaves the
    /// thread as it is (default 10).
    pub nice: u8,
}

/// The niceness of a spawned forwarder's thread unless set: a background
/// forwarder gives way to local appends on a busy machine.
const DEFAULT_NICE: u8 = 10;

impl Default for ForwardSettings {
    fn default() -> Self {
        ForwardSettings {
            filter: Filter::all(),
            start: ForwardStart::Start,
            batch_size: 1000,
            max_in_flight: 10_000,
            retention: RetentionMode::Wait,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            checkpoint_interval: Duration::from_secs(1),
            idle_wait: Duration::from_millis(50),
            idle_priority: false,
            nice: DEFAULT_NICE,
        }
    }
}

impl ForwardSettings {
    /// Sets [`ForwardSettings::filter`].
    #[must_use]
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// Sets [`ForwardSettings::start`].
    #[must_use]
    pub fn start(mut self, start: ForwardStart) -> Self {
        self.start = start;
        self
    }

    /// Sets [`ForwardSettings::batch_size`].
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets [`ForwardSettings::max_in_flight`].
    #[must_use]
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Sets [`ForwardSettings::retention`].
    #[must_use]
    pub fn retention(mut self, retention: RetentionMode) -> Self {
        self.retention = retention;
        self
    }

    /// Sets [`ForwardSettings::backoff_initial`].
    #[must_use]
    pub fn backoff_initial(mut self, wait: Duration) -> Self {
        self.backoff_initial = wait;
        self
    }

    /// Sets [`ForwardSettings::backoff_max`].
    #[must_use]
    pub fn backoff_max(mut self, wait: Duration) -> Self {
        self.backoff_max = wait;
        self
    }

    /// Sets [`ForwardSettings::checkpoint_interval`].
    #[must_use]
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Sets [`ForwardSettings::idle_wait`].
    #[must_use]
    pub fn idle_wait(mut self, wait: Duration) -> Self {
        self.idle_wait = wait;
        self
    }

    /// Sets [`ForwardSettings::idle_priority`].
    #[must_use]
    pub fn idle_priority(mut self, idle: bool) -> Self {
        self.idle_priority = idle;
        self
    }

    /// Sets [`ForwardSettings::nice`].
    #[must_use]
    pub fn nice(mut self, nice: u8) -> Self {
        self.nice = nice;
        self
    }

    /// Checks the settings: sizes at least 1, a backoff cap no shorter than its start.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.max_in_flight == 0 {
            return Err(Error::InvalidInput(
                "forward batch_size and max_in_flight must be at least 1".into(),
            ));
        }
        if self.nice > 19 {
            return Err(Error::InvalidInput(format!(
                "forward nice {} must be 0 to 19",
                self.nice
            )));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(Error::InvalidInput(
                "forward backoff_max must not be shorter than backoff_initial".into(),
            ));
        }
        Ok(())
    }
}
