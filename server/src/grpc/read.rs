//! `Read`: reads of a stream or of `$all` (forwards or backwards, from a
//! revision, a position, the start or the end, with a count and a filter),
//! and catch-up subscriptions to a stream or to `$all` (confirmation, history,
//! `caught_up`, then live events; checkpoints when filtered).
//!
//! Ranges, as the clients expect them: `$all` forwards from a position
//! includes it, backwards from a position excludes it; a subscription from a
//! revision or position starts after it; a subscription from the end takes
//! its live point before the confirmation is sent. A soft-deleted or missing
//! stream answers `stream_not_found`; a tombstoned one fails as deleted.
//! With a filter, annal's bookkeeping streams stay hidden. A subscription of
//! a caller limited to some streams checkpoints only at events it shows.
//!
//! It owns how reads are paged and how subscriptions are pumped into a
//! call's answers. It must never write to the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use annal::{Direction, Filter, LogFrom, Message, RecordedEvent, StreamFrom, SubscribeFrom};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::Status;

use super::convert::{commit_of, event_resp, stream_identifier, stream_name};
use super::filter::{EventFilter, is_bookkeeping};
use super::proto::event_store::client::streams::read_req::options::{
    AllOptions, CountOption, FilterOption, ReadDirection, StreamOption, StreamOptions, all_options, stream_options,
    uuid_option,
};
use super::proto::event_store::client::streams::read_resp::{self, Content};
use super::proto::event_store::client::streams::{ReadReq, ReadResp};
use super::{Answers, blocking, metadata, status};
use crate::auth::{Need, Principal};
use crate::shares::{Place, Share};
use crate::state::{AppState, PLACE_RETRY_FIRST, PLACE_RETRY_MOST, SubscriptionScans};

/// Events read from the store at a time, at most.
const PAGE: usize = 256;
/// Events of a read's first page, before their sizes are known.
const FIRST_PAGE: usize = 16;
/// Answers buffered per call before the reader waits for the client.
const CHANNEL: usize = 64;

/// Bytes of events a read or a subscription (catch-up or persistent) holds
/// for its client, about: a page read from the store is sized to them by the
/// previous page's events, and the answers waiting in the call's channel
/// stay within them (an event larger than this still goes, alone).
const HELD_BYTES: usize = 4 << 20;

/// Bytes of events one read of a subscription takes from the store
/// (`SubscriptionOptions::max_batch_bytes`): what it has read and not yet
/// passed to the call's channel comes on top of [`HELD_BYTES`].
const SUBSCRIPTION_READ_BYTES: usize = 1 << 20;

/// The subscription settings of the gRPC catch-up subscriptions.
fn subscription_options() -> annal::SubscriptionOptions {
    annal::SubscriptionOptions {
        max_batch_bytes: SUBSCRIPTION_READ_BYTES,
        ..annal::SubscriptionOptions::default()
    }
}

/// What an event weighs toward [`HELD_BYTES`]: its bytes and names, plus a
/// little for the rest of its answer.
pub(crate) fn event_bytes(e: &RecordedEvent) -> usize {
    e.data.len() + e.metadata.len() + e.stream.len() + e.event_type.len() + 64
}

/// The bytes of data and metadata of a page, as the store's byte budget
/// counts them: a page short of events but at [`HELD_BYTES`] is not the end.
fn page_bytes(page: &[RecordedEvent]) -> usize {
    page.iter().map(|e| e.data.len() + e.metadata.len()).sum()
}

/// How many events the next page of a read asks for: as many as fit
/// [`HELD_BYTES`] at the average size of the last page's, within 1..=[`PAGE`]
/// ([`FIRST_PAGE`] before any page).
fn page_len(last: &[RecordedEvent]) -> usize {
    if last.is_empty() {
        return FIRST_PAGE;
    }
    let average = last.iter().map(event_bytes).sum::<usize>() / last.len();
    (HELD_BYTES / average.max(1)).clamp(1, PAGE)
}

/// How long a read may run and how its store work is stopped: the call's
/// deadline (the client's `grpc-timeout`, if it sent one), and the signal
/// that stops the read's store work, given when the client goes away (its
/// answers are dropped) or the deadline passes.
#[derive(Clone)]
pub(crate) struct Limits {
    deadline: Option<tokio::time::Instant>,
    cancel: annal::Cancel,
}

impl Limits {
    /// The limits of a call that must end by `deadline`, if given.
    pub(crate) fn new(timeout: Option<Duration>) -> Limits {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let cancel = match deadline {
            Some(d) => annal::Cancel::new().with_deadline(d),
            None => annal::Cancel::new(),
        };
        Limits {
            deadline: deadline.map(tokio::time::Instant::from_std),
            cancel,
        }
    }

    fn passed(&self) -> bool {
        self.deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
    }

    /// Runs a read's work on a task of its own until it ends or the
    /// deadline passes.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let deadline = self.deadline;
        tokio::spawn(async move {
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, work).await;
                }
                None => work.await,
            }
        });
    }
}

/// The answer to a read whose deadline passed.
fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("the read did not end before the call's deadline")
}

/// Cancels a read's store work when its answers are dropped (the client went away).
struct CancelOnDrop(annal::Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The answers channel of a read or a subscription, bounded in bytes of
/// events ([`HELD_BYTES`]) as well as in answers.
#[derive(Clone)]
pub(crate) struct Paced<T> {
    tx: mpsc::Sender<(Result<T, Status>, Option<OwnedSemaphorePermit>)>,
    bytes: Arc<Semaphore>,
    /// For the senders on threads of their own (subscriptions), which wait
    /// for room outside the runtime.
    runtime: tokio::runtime::Handle,
}

impl<T: Send + 'static> Paced<T> {
    /// The channel of a read, and the call's answers; see [`Paced::with_capacity`].
    fn new(limits: &Limits) -> (Paced<T>, Answers<T>) {
        Paced::with_capacity(CHANNEL, limits)
    }

    /// The channel of a subscription, which has no deadline, holding at
    /// most `answers` answers; and the call's answers.
    pub(crate) fn unlimited(answers: usize) -> (Paced<T>, Answers<T>) {
        Paced::with_capacity(answers, &Limits::new(None))
    }

    /// The channel, holding at most `answers` answers (and [`HELD_BYTES`]
    /// of events), and the call's answers: they end with DEADLINE_EXCEEDED
    /// once `limits`' deadline passes (never as if the read were complete),
    /// and stop the read's store work when dropped. Called on the runtime.
    fn with_capacity(answers: usize, limits: &Limits) -> (Paced<T>, Answers<T>) {
        let (tx, mut rx) = mpsc::channel(answers.max(1));
        let limits = limits.clone();
        let _cancel = CancelOnDrop(limits.cancel.clone());
        let mut sleep = limits.deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let mut done = false;
        // An event's bytes are given back as its answer leaves for the client.
        let answers = Box::pin(futures_util::stream::poll_fn(move |cx| {
            let _ = &_cancel;
            if done {
                return std::task::Poll::Ready(None);
            }
            if let Some(s) = sleep.as_mut()
                && s.as_mut().poll(cx).is_ready()
            {
                done = true;
                return std::task::Poll::Ready(Some(Err(deadline_exceeded())));
            }
            match rx.poll_recv(cx) {
                // The read stopped at its deadline: it is not complete.
                std::task::Poll::Ready(None) if limits.passed() => {
                    done = true;
                    std::task::Poll::Ready(Some(Err(deadline_exceeded())))
                }
                p => p.map(|o| o.map(|(answer, _bytes)| answer)),
            }
        }));
        let paced = Paced {
            tx,
            bytes: Arc::new(Semaphore::new(HELD_BYTES)),
            runtime: tokio::runtime::Handle::current(),
        };
        (paced, answers)
    }

    /// True once the client is gone (its answers dropped).
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Sends an answer that holds no event; false once the client is gone.
    pub(crate) async fn send(&self, answer: Result<T, Status>) -> bool {
        self.tx.send((answer, None)).await.is_ok()
    }

    /// Sends an answer that holds no event if there is room now; false if
    /// not, or once the client is gone.
    pub(crate) fn try_send(&self, answer: Result<T, Status>) -> bool {
        self.tx.try_send((answer, None)).is_ok()
    }

    /// Sends an answer that holds events of `weight` bytes (see
    /// [`event_bytes`]) once they fit beside those waiting; false once the
    /// client is gone.
    async fn send_weighed(&self, answer: T, weight: usize) -> bool {
        let n = u32::try_from(weight.min(HELD_BYTES)).unwrap_or(u32::MAX);
        let Ok(bytes) = self.bytes.clone().acquire_many_owned(n).await else {
            return false;
        };
        self.tx.send((Ok(answer), Some(bytes))).await.is_ok()
    }

    /// [`Paced::send`] from a thread outside the runtime, waiting there.
    pub(crate) fn blocking_send(&self, answer: Result<T, Status>) -> bool {
        self.tx.blocking_send((answer, None)).is_ok()
    }

    /// [`Paced::send_weighed`] from a thread outside the runtime, waiting there.
    pub(crate) fn blocking_send_weighed(&self, answer: T, weight: usize) -> bool {
        self.runtime.block_on(self.send_weighed(answer, weight))
    }
}

impl Paced<ReadResp> {
    /// Sends the answer of event `e` once its bytes fit beside those
    /// waiting; false once the client is gone.
    async fn send_event(&self, e: &RecordedEvent, structured: bool) -> bool {
        self.send_weighed(event_resp(e, structured), event_bytes(e)).await
    }
}

/// What a read asks, once decoded.
struct Shape {
    backwards: bool,
    structured: bool,
    filter: Option<EventFilter>,
    /// The caller may read only some streams of `$all` (a prefix-limited
    /// token): a subscription then counts, checkpoints and reports positions
    /// only at events it shows, so that other streams' writes stay unseen.
    limited: bool,
}

/// Answers a `Read` call.
pub(crate) async fn read(
    state: AppState,
    p: Principal,
    req: ReadReq,
    limits: Limits,
) -> Result<Answers<ReadResp>, Status> {
    let o = req
        .options
        .ok_or_else(|| Status::invalid_argument("ReadReq without options"))?;
    let shape = Shape {
        backwards: o.read_direction() == ReadDirection::Backwards,
        structured: matches!(
            o.uuid_option.as_ref().and_then(|u| u.content.as_ref()),
            Some(uuid_option::Content::Structured(_))
        ),
        filter: match &o.filter_option {
            Some(FilterOption::Filter(f)) => Some(EventFilter::new(f)?),
            Some(FilterOption::NoFilter(_)) | None => None,
        },
        limited: !p.permits(Need::ReadLog(None)),
    };
    let subscribe = matches!(o.count_option, Some(CountOption::Subscription(_)));
    let count = match o.count_option {
        Some(CountOption::Count(n)) => n,
        _ => u64::MAX,
    };
    // A subscription holds one of its token's share of max_subscribers
    // places while its answers are open.
    let share = match (&o.stream_option, subscribe) {
        (Some(_), true) => Some(super::subscription_share(&state, &p)?),
        _ => None,
    };
    match o.stream_option {
        Some(StreamOption::Stream(s)) if subscribe => {
            subscribe_stream(state, &p, s, shape).map(|a| super::holding(a, share))
        }
        Some(StreamOption::Stream(s)) => read_stream(state, &p, s, count, shape, limits).await,
        Some(StreamOption::All(a)) if subscribe => subscribe_all(state, &p, a, shape).map(|a| super::holding(a, share)),
        Some(StreamOption::All(a)) => read_all(state, &p, a, count, shape, limits),
        None => Err(Status::invalid_argument("ReadReq names neither a stream nor $all")),
    }
}

fn not_found(stream: &str) -> ReadResp {
    ReadResp {
        content: Some(Content::StreamNotFound(read_resp::StreamNotFound {
            stream_identifier: Some(stream_identifier(stream)),
        })),
    }
}

fn timestamp_now() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(SystemTime::now()))
}

/// Whether a stream can be read: `Err` if tombstoned, `Ok(false)` if missing or soft-deleted.
fn stream_exists(store: &annal::Store, stream: &str) -> Result<bool, Status> {
    let meta = store.stream_metadata(stream);
    if meta.as_ref().is_some_and(|m| m.tombstoned) {
        return Err(status::stream_deleted(stream));
    }
    Ok(match store.stream_info(stream) {
        None => false,
        Some(info) => meta
            .and_then(|m| m.truncate_before)
            .is_none_or(|tb| tb <= info.last_revision),
    })
}

async fn read_stream(
    state: AppState,
    p: &Principal,
    s: StreamOptions,
    count: u64,
    shape: Shape,
    limits: Limits,
) -> Result<Answers<ReadResp>, Status> {
    let stream = stream_name(s.stream_identifier.as_ref())?;
    let target = metadata::target(&stream).map(str::to_string);
    p.authorize(Need::Read(target.as_deref().unwrap_or(&stream)))
        .map_err(status::denied)?;
    let (tx, answers) = Paced::new(&limits);
    let store = state.store();
    // `$$<stream>` reads the metadata's system stream.
    let asked = stream.clone();
    let stream = match &target {
        Some(t) => metadata::stored_stream(t),
        None => stream,
    };
    let check = stream.clone();
    let exists = blocking(&state, move || stream_exists(&store, &check)).await?;
    if !exists {
        tx.send(Ok(not_found(&asked))).await;
        return Ok(answers);
    }
    // The first revision to read, or None for nothing at all.
    let start = match (s.revision_option, shape.backwards) {
        (Some(stream_options::RevisionOption::Revision(r)), _) => Some(StreamFrom::Revision(r)),
        // From the start: revision 0 (backwards, that one event only).
        (Some(stream_options::RevisionOption::Start(_)) | None, _) => Some(StreamFrom::Revision(0)),
        (Some(stream_options::RevisionOption::End(_)), false) => None,
        (Some(stream_options::RevisionOption::End(_)), true) => Some(StreamFrom::End),
    };
    let direction = if shape.backwards {
        Direction::Backward
    } else {
        Direction::Forward
    };
    limits.spawn(async move {
        let Some(mut from) = start else { return };
        let mut left = count;
        let mut last_page = Vec::new();
        while left > 0 && !tx.is_closed() {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(page_len(&last_page));
            let store = state.store();
            let name = stream.clone();
            let page = blocking(&state, move || {
                let from = match (from, direction) {
                    // Backwards from past the end starts at the end.
                    (StreamFrom::Revision(r), Direction::Backward) => match store.stream_info(&name) {
                        Some(info) if r > info.last_revision => StreamFrom::End,
                        _ => from,
                    },
                    _ => from,
                };
                store
                    .read_stream_within(&name, direction, from, want, HELD_BYTES)
                    .map_err(status::from_store)
            })
            .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    tx.send(Err(e)).await;
                    return;
                }
            };
            let Some(last) = page.last().map(|e| e.revision) else {
                return;
            };
            // Short of events but at the byte budget: more may follow.
            let full = page.len() >= want || page_bytes(&page) >= HELD_BYTES;
            for e in &page {
                if !tx.send_event(&metadata::shown(e), shape.structured).await {
                    return;
                }
                left -= 1;
            }
            last_page = page;
            if !full {
                return;
            }
            from = match direction {
                Direction::Forward => StreamFrom::Revision(last.saturating_add(1)),
                Direction::Backward if last == 0 => return,
                Direction::Backward => StreamFrom::Revision(last - 1),
            };
        }
    });
    Ok(answers)
}

fn read_all(
    state: AppState,
    p: &Principal,
    a: AllOptions,
    count: u64,
    shape: Shape,
    limits: Limits,
) -> Result<Answers<ReadResp>, Status> {
    authorize_log(p, shape.filter.as_ref())?;
    // A filter the indexes cannot serve may pass over much of the log for
    // few events: the read takes a place among `max_scans` (shared with
    // HTTP) while it reads from the store, not while it waits for its
    // client (a client that reads slowly, or not at all, holds none). None
    // free at the start: refused; later pages try again until one is free
    // (without queueing ahead of HTTP scans and new reads: see `page_place`).
    let scans = shape.filter.as_ref().is_some_and(EventFilter::needs_scan);
    // And at most OPEN_SCANS_PER_PLACE × max_scans such reads are open at
    // once: those between pages (waiting for their client, or trying for a
    // place) hold a task and buffered events each.
    let open = if scans { Some(OpenScan::take(&state, p)?) } else { None };
    let mut place = if scans { Some(scan_place(&state)?) } else { None };
    let head = state.store().head_position();
    // The first annal position to read, or None for nothing at all.
    let start = match (a.all_option, shape.backwards) {
        (Some(all_options::AllOption::Start(_)) | None, false) => Some(LogFrom::Position(0)),
        (Some(all_options::AllOption::Start(_)) | None, true) => None,
        (Some(all_options::AllOption::End(_)), false) => None,
        (Some(all_options::AllOption::End(_)), true) => Some(LogFrom::End),
        // Forwards from commit position c includes it: annal position c − 1.
        (Some(all_options::AllOption::Position(pos)), false) => {
            Some(LogFrom::Position(pos.commit_position.saturating_sub(1)))
        }
        // Backwards from c excludes it: annal positions below c − 1.
        (Some(all_options::AllOption::Position(pos)), true) => match pos.commit_position.checked_sub(2) {
            Some(_) if head == 0 => None,
            Some(q) => Some(LogFrom::Position(q.min(head - 1))),
            None => None,
        },
    };
    let direction = if shape.backwards {
        Direction::Backward
    } else {
        Direction::Forward
    };
    // Stream-name prefixes are found through the stream index (no other
    // stream's event is read); the protocol's filter still decides what is
    // shown.
    let indexed = shape
        .filter
        .as_ref()
        .and_then(EventFilter::store_filter)
        .unwrap_or_else(Filter::all);
    let (tx, answers) = Paced::new(&limits);
    let cancel = limits.cancel.clone();
    limits.spawn(async move {
        let _open = open;
        let Some(mut from) = start else { return };
        let mut left = count;
        let mut last_page = Vec::new();
        while left > 0 && !tx.is_closed() {
            if scans && place.is_none() {
                match page_place(&state.scans, tx.tx.closed()).await {
                    Some(p) => place = Some(p),
                    None => return,
                }
            }
            let store = state.store();
            let want = page_len(&last_page);
            let indexed = indexed.clone();
            let cancel = cancel.clone();
            // The place is given back when the store read ends, before the
            // events are sent (waiting for the client costs no place), and
            // not before: at the deadline this task is dropped while the
            // read may still run until its cancel check.
            let page_place = place.take();
            // Stops within an event once the client goes or the deadline passes.
            let page = blocking(&state, move || {
                let _place = page_place;
                store
                    .read_all_cancellable(direction, from, want, &indexed, HELD_BYTES, &cancel)
                    .map_err(status::from_store)
            })
            .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    tx.send(Err(e)).await;
                    return;
                }
            };
            let Some(last) = page.last().map(|e| e.position) else {
                return;
            };
            for e in &page {
                let e = metadata::shown(e);
                match passes(shape.filter.as_ref(), &e) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(s) => {
                        tx.send(Err(s)).await;
                        return;
                    }
                }
                if !tx.send_event(&e, shape.structured).await {
                    return;
                }
                left -= 1;
                if left == 0 {
                    return;
                }
            }
            if page.len() < want && page_bytes(&page) < HELD_BYTES {
                return;
            }
            from = match direction {
                Direction::Forward => LogFrom::Position(last.saturating_add(1)),
                Direction::Backward if last == 0 => return,
                Direction::Backward => LogFrom::Position(last - 1),
            };
            last_page = page;
        }
    });
    Ok(answers)
}

/// A place among `max_scans` for a later page of a scanning read, or None
/// once `closed` ends (the client went away). It is tried for, never queued
/// for: a queued waiter would be handed every freed place ahead of HTTP
/// scans and new reads (which only try, and are refused when none is free),
/// so a few readers between pages would keep them all out. Instead a page
/// that finds none free tries again after a pause (1 ms, doubling to
/// 32 ms), and a freed place goes to whoever asks first.
async fn page_place(scans: &Arc<Semaphore>, closed: impl Future<Output = ()>) -> Option<OwnedSemaphorePermit> {
    let mut closed = std::pin::pin!(closed);
    let mut pause = PLACE_RETRY_FIRST;
    loop {
        match scans.clone().try_acquire_owned() {
            Ok(p) => return Some(p),
            Err(tokio::sync::TryAcquireError::Closed) => return None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut closed => return None,
        }
        pause = (pause * 2).min(PLACE_RETRY_MOST);
    }
}

/// Scanning reads of `$all` open at once, per `max_scans` place.
const OPEN_SCANS_PER_PLACE: usize = 4;

/// Counts a scanning read of `$all` among the open ones until it ends
/// (its task ends: done, past its deadline, or its client gone), and holds
/// one of its token's share of `max_scans` places meanwhile (so a token's
/// open scanning reads never hold more places than its share).
struct OpenScan(AppState, #[allow(dead_code, reason = "held until dropped")] Share);

impl OpenScan {
    /// Counts one more, or RESOURCE_EXHAUSTED when `OPEN_SCANS_PER_PLACE ×
    /// max_scans` are open already, or `p`'s token holds its share.
    fn take(state: &AppState, p: &Principal) -> Result<OpenScan, Status> {
        let share = state.shares.take(p, Place::Scan).map_err(|full| {
            Status::resource_exhausted(full.message("reads of $all with a filter the indexes cannot serve"))
        })?;
        let max = state.config.max_scans.saturating_mul(OPEN_SCANS_PER_PLACE);
        if state.open_scan_reads.fetch_add(1, Ordering::AcqRel) >= max {
            state.open_scan_reads.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "at most {max} reads of $all with a filter the indexes cannot serve are open at once; \
                 retry later, or filter on a single stream-name prefix"
            )));
        }
        Ok(OpenScan(state.clone(), share))
    }
}

impl Drop for OpenScan {
    fn drop(&mut self) {
        self.0.open_scan_reads.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One of the server's `max_scans` places, or RESOURCE_EXHAUSTED when none
/// is free (the same places as HTTP's scanning reads and counts).
fn scan_place(state: &AppState) -> Result<OwnedSemaphorePermit, Status> {
    state.scans.clone().try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!(
            "at most {} reads of $all with a filter the indexes cannot serve (and HTTP counts and \
             scanning reads) run at once; retry later, or filter on a single stream-name prefix",
            state.config.max_scans
        ))
    })
}

/// Checks that `p` may read `$all` as `filter` limits it: the whole log, or
/// only streams under the filter's stream-name prefixes.
fn authorize_log(p: &Principal, filter: Option<&EventFilter>) -> Result<(), Status> {
    match filter.and_then(EventFilter::stream_prefixes) {
        Some(prefixes) => prefixes.iter().try_for_each(|q| p.authorize(Need::ReadLog(Some(q)))),
        None => p.authorize(Need::ReadLog(None)),
    }
    .map_err(status::denied)
}

/// True if a read or subscription of `$all` under `filter` shows `e`.
fn passes(filter: Option<&EventFilter>, e: &RecordedEvent) -> Result<bool, Status> {
    match filter {
        None => Ok(true),
        Some(_) if is_bookkeeping(&e.stream) => Ok(false),
        Some(f) => f.matches(e),
    }
}

/// Holds one of `max_subscribers` places while a subscription runs
/// (shutdown waits for every place to be given back).
pub(crate) struct Subscriber(AppState);

impl Subscriber {
    /// Takes a place, or fails with RESOURCE_EXHAUSTED when none is left.
    pub(crate) fn take(state: &AppState) -> Result<Subscriber, Status> {
        let max = i64::try_from(state.config.max_subscribers).unwrap_or(i64::MAX);
        if state.metrics.subscribers.fetch_add(1, Ordering::AcqRel) >= max {
            state.metrics.subscribers.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "at most {max} subscriptions at once"
            )));
        }
        Ok(Subscriber(state.clone()))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.metrics.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a subscription is, for its `caught_up` answer.
#[derive(Clone, Copy)]
enum Kind {
    Stream,
    All,
}

fn subscribe_stream(
    state: AppState,
    p: &Principal,
    s: StreamOptions,
    shape: Shape,
) -> Result<Answers<ReadResp>, Status> {
    let stream = stream_name(s.stream_identifier.as_ref())?;
    let target = metadata::target(&stream).map(str::to_string);
    p.authorize(Need::Read(target.as_deref().unwrap_or(&stream)))
        .map_err(status::denied)?;
    // `$$<stream>`: the metadata's system stream.
    let stream = target.as_deref().map_or(stream.clone(), metadata::stored_stream);
    let store = state.store();
    if store.stream_metadata(&stream).is_some_and(|m| m.tombstoned) {
        return Err(status::stream_deleted(&stream));
    }
    let from = match s.revision_option {
        Some(stream_options::RevisionOption::Revision(r)) => SubscribeFrom::After(r),
        Some(stream_options::RevisionOption::End(_)) => SubscribeFrom::End,
        Some(stream_options::RevisionOption::Start(_)) | None => SubscribeFrom::Start,
    };
    // Opened here, before the confirmation: "from the end" is now.
    let sub = store.subscribe_stream_with(&stream, from, subscription_options());
    pump(state, sub, Kind::Stream, Shape { filter: None, ..shape })
}

fn subscribe_all(state: AppState, p: &Principal, a: AllOptions, shape: Shape) -> Result<Answers<ReadResp>, Status> {
    authorize_log(p, shape.filter.as_ref())?;
    let from = match a.all_option {
        Some(all_options::AllOption::Position(pos)) => match pos.commit_position.checked_sub(1) {
            // After commit position c: after annal position c − 1.
            Some(q) => SubscribeFrom::After(q),
            None => SubscribeFrom::Start,
        },
        Some(all_options::AllOption::End(_)) => SubscribeFrom::End,
        Some(all_options::AllOption::Start(_)) | None => SubscribeFrom::Start,
    };
    // As for reads: stream-name prefixes are served by the stream index, so
    // that another stream's event (its cost, its damage) never reaches it.
    let indexed = shape
        .filter
        .as_ref()
        .and_then(EventFilter::store_filter)
        .unwrap_or_else(Filter::all);
    let sub = state.store().subscribe_all_with(from, indexed, subscription_options());
    pump(state, sub, Kind::All, shape)
}

/// Sends the confirmation, then moves the subscription to a thread that
/// feeds the call's answers until the client goes or the server stops.
/// A filtered subscription to `$all` is filtered here, after reading every
/// event: far behind the head, its reads take `max_scans` places a span at
/// a time (see [`SubscriptionScans`]), as other scanning reads do.
fn pump(state: AppState, sub: annal::Subscription, kind: Kind, shape: Shape) -> Result<Answers<ReadResp>, Status> {
    let (tx, answers) = Paced::unlimited(CHANNEL);
    let sub = match (kind, &shape.filter) {
        (Kind::All, Some(_)) => {
            let (out, stop) = (tx.clone(), state.shutdown.clone());
            sub.with_scan_gate(SubscriptionScans::new(&state, move || {
                out.is_closed() || stop.is_cancelled()
            }))
        }
        _ => sub,
    };
    pump_into(state, sub, kind, shape, (tx, answers))
}

/// [`pump`] with the subscription's answer channel made.
fn pump_into(
    state: AppState,
    mut sub: annal::Subscription,
    kind: Kind,
    shape: Shape,
    (tx, answers): (Paced<ReadResp>, Answers<ReadResp>),
) -> Result<Answers<ReadResp>, Status> {
    let place = Subscriber::take(&state)?;
    let confirmation = ReadResp {
        content: Some(Content::Confirmation(read_resp::SubscriptionConfirmation {
            subscription_id: ::uuid::Uuid::new_v4().to_string(),
        })),
    };
    if !tx.try_send(Ok(confirmation)) {
        return Err(Status::internal("the subscription could not start"));
    }
    let stop = state.shutdown.clone();
    std::thread::Builder::new()
        .name("annal-grpc-subscription".into())
        .spawn(move || {
            let _place = place;
            let mut caught_up = false;
            let mut considered = 0u64;
            // The last position considered, and the last one a checkpoint reported.
            let mut last_seen: Option<u64> = None;
            let mut last_checkpoint: Option<u64> = None;
            let checkpoint = |position: u64| ReadResp {
                content: Some(Content::Checkpoint(read_resp::Checkpoint {
                    commit_position: commit_of(position),
                    prepare_position: commit_of(position),
                    timestamp: timestamp_now(),
                })),
            };
            while !tx.is_closed() && !stop.is_cancelled() {
                let wait = if caught_up {
                    Duration::from_millis(200)
                } else {
                    Duration::ZERO
                };
                let answer = match sub.next_timeout(wait) {
                    Ok(None) if caught_up => continue,
                    Ok(None) => {
                        caught_up = true;
                        if shape.filter.is_some()
                            && let Some(at) = last_seen.filter(|&at| Some(at) != last_checkpoint)
                        {
                            last_checkpoint = Some(at);
                            if !tx.blocking_send(Ok(checkpoint(at))) {
                                return;
                            }
                        }
                        let next = match kind {
                            // The next revision of the stream: the caller may read all of it
                            // (`last_seen` is a global position, not a revision).
                            Kind::Stream => sub.position(),
                            // A limited caller learns no position past the last event it was shown.
                            Kind::All if shape.limited => last_seen.map_or(0, |at| at.saturating_add(1)),
                            Kind::All => sub.position(),
                        };
                        caught_up_resp(kind, next)
                    }
                    Ok(Some(Message::Event(e))) => {
                        let e = metadata::shown(&e);
                        let shown = match passes(shape.filter.as_ref(), &e) {
                            Ok(shown) => shown,
                            Err(s) => {
                                let _ = tx.blocking_send(Err(s));
                                return;
                            }
                        };
                        if shape.limited && !shown {
                            continue;
                        }
                        considered += 1;
                        last_seen = Some(e.position);
                        if shown && !tx.blocking_send_weighed(event_resp(&e, shape.structured), event_bytes(&e)) {
                            return;
                        }
                        match &shape.filter {
                            Some(f) if considered.is_multiple_of(f.checkpoint_interval) => {
                                last_checkpoint = Some(e.position);
                                checkpoint(e.position)
                            }
                            _ => continue,
                        }
                    }
                    // The store's filter passed over events it never
                    // delivered (see `EventFilter::store_filter`): a caller
                    // who may read everything hears how far it got, as it
                    // would have from counting those events here.
                    Ok(Some(Message::Checkpoint(next))) => match next.checked_sub(1) {
                        Some(at)
                            if !shape.limited && shape.filter.is_some() && last_checkpoint.is_none_or(|c| at > c) =>
                        {
                            last_seen = Some(last_seen.map_or(at, |s| s.max(at)));
                            last_checkpoint = Some(at);
                            checkpoint(at)
                        }
                        _ => continue,
                    },
                    Ok(Some(Message::Damaged { .. })) => continue,
                    // Given up waiting for a scan place because the client
                    // went or the server stops: ends as those do, without an error.
                    Err(annal::Error::Cancelled) if tx.is_closed() || stop.is_cancelled() => return,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(status::from_store(e)));
                        return;
                    }
                };
                if !tx.blocking_send(Ok(answer)) {
                    return;
                }
            }
        })
        .map_err(|e| Status::resource_exhausted(format!("cannot start a subscription thread: {e}")))?;
    Ok(answers)
}

fn caught_up_resp(kind: Kind, next: u64) -> ReadResp {
    let last = next.checked_sub(1);
    let (stream_revision, position) = match kind {
        Kind::Stream => (last.and_then(|r| i64::try_from(r).ok()), None),
        Kind::All => (
            None,
            last.map(|q| read_resp::Position {
                commit_position: commit_of(q),
                prepare_position: commit_of(q),
            }),
        ),
    };
    ReadResp {
        content: Some(Content::CaughtUp(read_resp::CaughtUp {
            timestamp: timestamp_now(),
            stream_revision,
            position,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(bytes: usize) -> RecordedEvent {
        RecordedEvent {
            stream: "s".into(),
            revision: 0,
            position: 0,
            id: ::uuid::Uuid::nil(),
            event_type: "T".into(),
            content_type: annal::ContentType::Binary,
            data: vec![0; bytes].into(),
            metadata: Default::default(),
            tags: vec![],
            timestamp_micros: 0,
            personal: annal::Personal::Plain,
        }
    }

    #[test]
    fn pages_are_sized_by_the_bytes_of_the_last_one() {
        assert_eq!(page_len(&[]), FIRST_PAGE);
        assert_eq!(page_len(&[sized(10), sized(20)]), PAGE);
        // Megabyte events: three to a page; larger than the budget: one.
        assert_eq!(page_len(&[sized(1 << 20)]), 3);
        assert_eq!(page_len(&[sized(HELD_BYTES * 2)]), 1);
    }

    /// A later page waiting for a place does not take the next one freed
    /// ahead of an HTTP scan (or a new read), which only tries once: with
    /// `max_scans` = 1 and a page waiting, the freed place goes to the
    /// scan that asks first; the page gets it once the scan is done.
    #[tokio::test(start_paused = true)]
    async fn a_page_waiting_for_a_place_does_not_queue_ahead_of_scans() {
        let scans = Arc::new(Semaphore::new(1));
        let held = scans.clone().try_acquire_owned().unwrap();
        let waiter = tokio::spawn({
            let scans = scans.clone();
            async move { page_place(&scans, std::future::pending()).await }
        });
        // The page looks (none free) and waits.
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished());
        drop(held);
        let scan = scans.clone().try_acquire_owned();
        assert!(
            scan.is_ok(),
            "the freed place went to the waiting page, not to the scan asking for it"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "the page waits while the scan holds the place");
        drop(scan);
        let page = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(
            matches!(page, Ok(Ok(Some(_)))),
            "the page gets the place once it is free"
        );
    }

    /// A page waiting for a place stops waiting once its client goes.
    #[tokio::test(start_paused = true)]
    async fn a_page_waiting_for_a_place_stops_when_the_client_goes() {
        let scans = Arc::new(Semaphore::new(1));
        let _held = scans.clone().try_acquire_owned().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiter = tokio::spawn({
            let scans = scans.clone();
            async move {
                page_place(&scans, async {
                    let _ = rx.await;
                })
                .await
            }
        });
        tokio::time::advance(Duration::from_millis(5)).await;
        drop(tx);
        assert!(matches!(waiter.await, Ok(None)));
    }
}
