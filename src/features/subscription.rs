//! Catch-up and live subscriptions, filtered subscriptions with checkpoints,
//! and replay.
//!
//! A subscription is a cursor over the log: it reads history from disk, then
//! waits to be woken when appends are published and reads again from where it
//! stopped. Going from history to live is therefore the same loop, with no gap
//! and no duplicate; a slow subscriber holds no buffer beyond one read batch
//! and never slows appends, since it only ever reads what is already
//! published. This module must never write to the store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::log::state::Shared;
use crate::query::{Cancel, Filter};
use crate::query::{Direction, LogFrom, StreamFrom};
use crate::store::Store;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SubscribeFrom {
    /// From the first event.
    Start,
    /// After this position (for the global log) or revision (for a stream).
    After(u64),
    /// From the next event appended.
    End,
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An event, in log order.
    Event(RecordedEvent),
    /// Every event before this position has been considered: a filtered
    /// subscriber may save it and resume from `SubscribeFrom::After(position - 1)`.
    Checkpoint(u64),
    /// Positions `position..next` could not be read (their bytes are damaged)
    /// and were skipped, as [`SubscriptionOptions::skip_damaged`] asked.
    Damaged {
        /// The first position skipped.
        position: u64,
        /// Where the subscription went on.
        next: u64,
        /// The corruption found, with its file and offset.
        reason: String,
    },
}

/// Settings of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Events read from the log at a time.
    pub batch: usize,
    /// Bytes of data and metadata read from the log at a time, at most (a
    /// read holds at least one event): with events of up to
    /// `max_event_size` (4 MiB by default), a batch of 256 could otherwise
    /// hold a gigabyte. Default 4 MiB.
    pub max_batch_bytes: usize,
    /// A checkpoint is delivered after the subscription has moved this many
    /// positions without delivering an event (filtered subscriptions on the global log).
    pub checkpoint_every: u64,
    /// What a subscription to the global log does at a position it cannot read
    /// (damaged bytes), after delivering every event before it: `false` (the
    /// default) stops there, with [`Error::Damaged`] naming the position on every
    /// later call until `repair` mends the store; `true` delivers
    /// [`Message::Damaged`] and goes on after it.
    pub skip_damaged: bool,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions {
            batch: 256,
            max_batch_bytes: 4 << 20,
            checkpoint_every: 1024,
            skip_damaged: false,
        }
    }
}

/// Admits a subscription's catch-up reads of the global log, one span at a
/// time (see [`Subscription::with_scan_gate`]): an embedding server shares
/// its places for expensive reads between subscriptions and other readers.
pub trait ScanGate: Send + Sync {
    /// Waits until the read may run, and returns a pass held while it runs
    /// (dropped as soon as it ends); `None` if it may not, because `cancel`
    /// says so or the gate is closed: the subscription then fails with
    /// [`Error::Cancelled`]. A gate that waits must look at `cancel` while
    /// it waits: a call for the next message, or the drop of a
    /// [`SubscriptionReceiver`], waits as long as the gate does.
    fn admit(&self, cancel: &Cancel) -> Option<Box<dyn Send>>;
}

/// Most positions of the global log one read of a gated subscription passes
/// over, and how far behind the head it may be and still read without the gate.
pub const CATCH_UP_SPAN: u64 = 4096;

#[allow(
    clippy::large_enum_variant,
    reason = "made once per group or subscription, never in bulk"
)]
enum Target {
    All(Filter),
    Stream(String),
}

/// A catch-up subscription: history first, then live events, in order.
///
/// It is an iterator that blocks until the next message; it ends when the
/// store closes. See [`Subscription::next_timeout`] for a bounded wait and
/// [`Subscription::into_channel`] for a channel-based consumer.
pub struct Subscription {
    shared: Arc<Shared>,
    target: Target,
    /// Next position (global log) or revision (stream) to read.
    next: u64,
    /// Published head when the last read found nothing new.
    seen_head: u64,
    /// Position up to which something was last reported (event or checkpoint).
    reported: u64,
    buffered: VecDeque<Message>,
    options: SubscriptionOptions,
    /// Stops reads of the log (see [`Subscription::with_cancel`]).
    cancel: Cancel,
    /// Admits catch-up reads of the global log (see [`Subscription::with_scan_gate`]).
    gate: Option<Arc<dyn ScanGate>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn to_all(
        shared: Arc<Shared>,
        from: SubscribeFrom,
        filter: Filter,
        options: SubscriptionOptions,
    ) -> Self {
        let next = match from {
            SubscribeFrom::Start => 0,
            SubscribeFrom::After(p) => p.saturating_add(1),
            SubscribeFrom::End => shared.published(),
        };
        Self::new(shared, Target::All(filter), next, options)
    }

    pub(crate) fn to_stream(
        shared: Arc<Shared>,
        stream: &str,
        from: SubscribeFrom,
        options: SubscriptionOptions,
    ) -> Self {
        let next = match from {
            SubscribeFrom::Start => 0,
            SubscribeFrom::After(r) => r.saturating_add(1),
            SubscribeFrom::End => shared
                .stream_state(stream)
                .map_or(0, |s| s.last_revision.saturating_add(1)),
        };
        Self::new(shared, Target::Stream(stream.to_string()), next, options)
    }

    fn new(shared: Arc<Shared>, target: Target, next: u64, options: SubscriptionOptions) -> Self {
        let options = SubscriptionOptions {
            batch: options.batch.max(1),
            max_batch_bytes: options.max_batch_bytes.max(1),
            checkpoint_every: options.checkpoint_every.max(1),
            skip_damaged: options.skip_damaged,
        };
        Subscription {
            reported: next,
            shared,
            target,
            next,
            seen_head: 0,
            buffered: VecDeque::new(),
            options,
            cancel: Cancel::default(),
            gate: None,
        }
    }

    /// The same subscription, whose reads of the global log stop as soon as
    /// `cancel` says so (it is looked at before each event read): a filtered
    /// subscription that passes over many events it does not deliver may
    /// otherwise read up to the head of the log before its next message.
    /// Once cancelled, every call for a message returns [`Error::Cancelled`]
    /// (before any message already read), on the global log or a stream,
    /// caught up or not; a call already waiting for new events is not woken
    /// by the signal, but returns it as soon as it wakes (a new event, or its
    /// timeout; with no timeout, a new event or the store's close).
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// The same subscription, whose reads of the global log while it is more
    /// than [`CATCH_UP_SPAN`] positions behind the head each pass over at most
    /// that many positions and run only once `gate` admits them (a read
    /// within that distance of the head runs at once). A filter that keeps
    /// few events no longer makes one read that passes over the whole log:
    /// it makes many short ones, each of which waits its turn. Subscriptions
    /// to a stream are not gated: their reads go by the stream's index.
    pub fn with_scan_gate(mut self, gate: Arc<dyn ScanGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The next position (global log) or revision (stream) the subscription will read.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Reads what is published past the cursor; false if there was nothing new.
    fn fill(&mut self) -> Result<bool> {
        let head = self.shared.published();
        match &self.target {
            Target::All(filter) => {
                if self.next >= head {
                    self.seen_head = head;
                    return Ok(false);
                }
                let batch = self.options.batch;
                // Far behind the head, a gated subscription reads one span
                // at a time, each once its gate admits it.
                let gate = self.gate.as_ref().filter(|_| head - self.next > CATCH_UP_SPAN);
                let end = match gate {
                    Some(_) => self.next.saturating_add(CATCH_UP_SPAN),
                    None => u64::MAX,
                };
                let pass = match gate {
                    Some(g) => Some(g.admit(&self.cancel).ok_or(Error::Cancelled)?),
                    None => None,
                };
                let (events, stop) = self.shared.read_log_stop_before(
                    Direction::Forward,
                    LogFrom::Position(self.next),
                    (batch, self.options.max_batch_bytes),
                    (filter, crate::log::read::Visibility::Visible, &self.cancel),
                    end,
                )?;
                drop(pass);
                if let Some(stop) = stop {
                    self.seen_head = head;
                    // Everything before the damage first; the next read meets it at once.
                    if let Some(last) = events.last() {
                        self.next = last.position + 1;
                        self.reported = self.next;
                        self.buffered.extend(events.into_iter().map(Message::Event));
                        return Ok(true);
                    }
                    if !self.options.skip_damaged {
                        return Err(Error::Damaged {
                            position: stop.position,
                            source: Box::new(stop.error),
                        });
                    }
                    self.buffered.push_back(Message::Damaged {
                        position: stop.position,
                        next: stop.resume,
                        reason: stop.error.to_string(),
                    });
                    self.next = stop.resume;
                    self.reported = stop.resume;
                    return Ok(true);
                }
                let last = events.last().map(|e| e.position + 1);
                // Fewer than a batch, under its byte budget: everything
                // published when we looked (up to the span's end) was
                // considered. (The read may have seen events published since
                // `head` was taken: never back before the last one delivered.)
                let full =
                    events.len() >= batch || crate::log::read::payload_bytes(&events) >= self.options.max_batch_bytes;
                let next = if !full {
                    last.unwrap_or(0).max(head.min(end))
                } else {
                    last.unwrap_or(head)
                };
                if let Some(last) = last {
                    self.reported = last;
                }
                self.buffered.extend(events.into_iter().map(Message::Event));
                self.next = next;
                if self.next - self.reported >= self.options.checkpoint_every {
                    self.buffered.push_back(Message::Checkpoint(self.next));
                    self.reported = self.next;
                }
                self.seen_head = head;
                Ok(true)
            }
            Target::Stream(stream) => {
                // What the stream's metadata hides (deleted, truncated, past its
                // count or age) is never delivered, as reads never return it.
                let first = {
                    let meta = self.shared.metadata.read().by_stream.get(stream.as_str()).cloned();
                    let last = self.shared.stream_state(stream).map(|s| s.last_revision);
                    meta.zip(last).map_or(0, |(m, last)| m.first_visible(last))
                };
                self.next = self.next.max(first);
                let events = match self.shared.read_stream_within(
                    stream,
                    Direction::Forward,
                    StreamFrom::Revision(self.next),
                    self.options.batch,
                    self.options.max_batch_bytes,
                ) {
                    Ok(events) => events,
                    Err(Error::StreamNotFound(_)) => Vec::new(),
                    Err(e) => return Err(e),
                };
                self.seen_head = head;
                if let Some(last) = events.last() {
                    self.next = last.revision.saturating_add(1);
                }
                let progress = !events.is_empty();
                let now = self.shared.options.clock.now_micros();
                let shared = &self.shared;
                self.buffered.extend(
                    events
                        .into_iter()
                        .filter(|e| shared.is_visible(e, now))
                        .map(Message::Event),
                );
                Ok(progress)
            }
        }
    }

    /// The next message, waiting at most `timeout`; `Ok(None)` on timeout or
    /// when the store has closed.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Message>> {
        self.next_until(Some(Instant::now() + timeout))
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Result<Option<Message>> {
        loop {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if let Some(m) = self.buffered.pop_front() {
                return Ok(Some(m));
            }
            if self.shared.notifier.is_closed() {
                return Ok(None);
            }
            if self.fill()? {
                continue;
            }
            let seen = self.seen_head;
            let shared = &self.shared;
            let open = shared.notifier.wait_until(deadline, || shared.published() > seen);
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if !open || deadline.is_some_and(|d| Instant::now() >= d) && shared.published() <= seen {
                return Ok(None);
            }
        }
    }

    /// Moves the subscription to a thread that sends its messages into a
    /// bounded channel of `capacity`. A slow receiver only makes the thread
    /// wait; appends never do. The thread stops when the store closes, on a
    /// read error (sent as the last message), or when the receiver is dropped
    /// (which cancels a wait at the subscription's scan gate, unless the
    /// subscription has a cancellation signal of its own: then that signal does).
    pub fn into_channel(mut self, capacity: usize) -> Result<SubscriptionReceiver> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let cancel = (!self.cancel.can_be_cancelled()).then(|| {
            self.cancel = Cancel::new();
            self.cancel.clone()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("annal-subscription".into())
            .spawn(move || {
                // Waits for room, but notices a dropped receiver (false then).
                let send = |m: Result<Message>| {
                    let mut m = Some(m);
                    while let Some(msg) = m.take() {
                        match tx.send_timeout(msg, Duration::from_millis(100)) {
                            Ok(()) => {}
                            Err(crossbeam_channel::SendTimeoutError::Timeout(msg))
                                if !stopping.load(Ordering::Acquire) =>
                            {
                                m = Some(msg);
                            }
                            Err(_) => return false,
                        }
                    }
                    true
                };
                while !stopping.load(Ordering::Acquire) {
                    match self.next_timeout(Duration::from_millis(100)) {
                        Ok(Some(m)) => {
                            if !send(Ok(m)) {
                                return;
                            }
                        }
                        Ok(None) if self.shared.notifier.is_closed() => return,
                        Ok(None) => {}
                        Err(e) => {
                            send(Err(e));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Error::io("starting a subscription thread", e))?;
        Ok(SubscriptionReceiver {
            rx,
            stop,
            cancel,
            thread: Some(thread),
        })
    }
}

impl Iterator for Subscription {
    type Item = Result<Message>;

    /// Blocks until the next message; `None` once the store has closed.
    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(None).transpose()
    }
}

/// The receiving end of [`Subscription::into_channel`]; dropping it stops the thread.
pub struct SubscriptionReceiver {
    rx: Receiver<Result<Message>>,
    stop: Arc<AtomicBool>,
    /// The subscription's cancellation signal, when the receiver made it.
    cancel: Option<Cancel>,
    thread: Option<JoinHandle<()>>,
}

impl SubscriptionReceiver {
    /// The next message if one is waiting, without blocking.
    pub fn try_recv(&self) -> Option<Result<Message>> {
        self.rx.try_recv().ok()
    }

    /// How many messages are waiting (at most the channel's capacity).
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True if no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The next message, waiting at most `timeout`; `None` on timeout or once the subscription ended.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Result<Message>> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// True once the subscription thread has stopped and every message was received.
    pub fn is_finished(&self) -> bool {
        self.rx.is_empty() && self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for SubscriptionReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(c) = &self.cancel {
            c.cancel();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What to feed a replay handler.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// First position (inclusive).
    pub from: u64,
    /// Stop before this position (default: the head when the replay starts).
    pub until: Option<u64>,
    /// Which events.
    pub filter: Filter,
    /// Events read at a time.
    pub batch_size: usize,
    /// Keep going after the handler fails on an event.
    pub continue_on_error: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            from: 0,
            until: None,
            filter: Filter::all(),
            batch_size: 1000,
            continue_on_error: false,
        }
    }
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Events the handler accepted.
    pub processed: u64,
    /// Events the handler failed on.
    pub failed: u64,
    /// The first failures (at most 100): position and message.
    pub errors: Vec<(u64, String)>,
    /// Position after the last event handed to the handler (where to resume).
    pub next_position: u64,
    /// False if the replay stopped at a failure.
    pub completed: bool,
}

/// Feeds a range of the log to `handler`, in batches; see [`crate::store::Store::replay`].
pub(crate) fn replay<E: std::fmt::Display>(
    shared: &Shared,
    options: &ReplayOptions,
    mut handler: impl FnMut(&RecordedEvent) -> std::result::Result<(), E>,
) -> Result<ReplayReport> {
    let until = options.until.unwrap_or_else(|| shared.published());
    let mut report = ReplayReport {
        next_position: options.from,
        completed: true,
        ..Default::default()
    };
    let mut from = options.from;
    while from < until {
        let batch = shared.read_log(
            Direction::Forward,
            LogFrom::Position(from),
            options.batch_size.max(1),
            &options.filter,
        )?;
        let mut progressed = false;
        for e in batch.iter().take_while(|e| e.position < until) {
            progressed = true;
            from = e.position + 1;
            report.next_position = from;
            match handler(e) {
                Ok(()) => report.processed += 1,
                Err(err) => {
                    report.failed += 1;
                    if report.errors.len() < 100 {
                        report.errors.push((e.position, err.to_string()));
                    }
                    if !options.continue_on_error {
                        report.completed = false;
                        return Ok(report);
                    }
                }
            }
        }
        if !progressed || batch.len() < options.batch_size.max(1) {
            break;
        }
    }
    report.next_position = report.next_position.max(until.min(shared.published()));
    Ok(report)
}

impl Store {
    /// Subscribes to the global log (events passing `filter`), from history to live.
    pub fn subscribe_all(&self, from: SubscribeFrom, filter: Filter) -> Subscription {
        self.subscribe_all_with(from, filter, SubscriptionOptions::default())
    }

    /// Like [`Store::subscribe_all`], with explicit batch and checkpoint settings.
    pub fn subscribe_all_with(
        &self,
        from: SubscribeFrom,
        filter: Filter,
        options: SubscriptionOptions,
    ) -> Subscription {
        Subscription::to_all(self.shared.clone(), from, filter, options)
    }

    /// Subscribes to one stream, from history to live (the stream may not exist yet).
    pub fn subscribe_stream(&self, stream: &str, from: SubscribeFrom) -> Subscription {
        self.subscribe_stream_with(stream, from, SubscriptionOptions::default())
    }

    /// Like [`Store::subscribe_stream`], with explicit batch settings.
    pub fn subscribe_stream_with(
        &self,
        stream: &str,
        from: SubscribeFrom,
        options: SubscriptionOptions,
    ) -> Subscription {
        Subscription::to_stream(self.shared.clone(), stream, from, options)
    }

    /// Feeds a range of the log, filtered, to `handler` in batches, counting
    /// processed and failed events; stops at the first failure unless
    /// `options.continue_on_error`. For rebuilding read models.
    pub fn replay<E: std::fmt::Display>(
        &self,
        options: &ReplayOptions,
        handler: impl FnMut(&RecordedEvent) -> std::result::Result<(), E>,
    ) -> Result<ReplayReport> {
        replay(&self.shared, options, handler)
    }
}
