//! Catch-up subscriptions as Server-Sent Events.
//!
//! A blocking task runs the store's subscription and feeds a bounded channel;
//! the response streams from it. The task stops when the client goes away
//! (the channel closes), when the server shuts down, or on a read error (sent
//! as a last `error` event).
//!
//! It owns the SSE wire format and the subscription threads' budget. It must
//! never let a subscription take a thread of the blocking pool.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use annal::{Message, SubscribeFrom, SubscriptionOptions};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;

use super::encode::{EventOut, Params, check_stream};
use super::error::ApiError;
use super::share_full;
use super::streams::filter;
use crate::auth::{Need, Principal};
use crate::shares::{Place, Share};
use crate::state::{AppState, SubscriptionScans};

/// Messages buffered between the subscription thread and the response (and
/// at most `max_response_bytes` of them, or one event).
const CHANNEL: usize = 256;

/// Bytes of an SSE message around its data (`id:`, `event:`, `data:`, newlines).
const EVENT_OVERHEAD: usize = 64;

/// Where to start: `Last-Event-ID` (continue after it) wins over `from` (inclusive, or start/end).
fn start(headers: &HeaderMap, params: &Params) -> Result<SubscribeFrom, ApiError> {
    if let Some(v) = headers.get("last-event-id") {
        let s = v
            .to_str()
            .map_err(|_| ApiError::invalid("Last-Event-ID is not visible ASCII text"))?
            .trim();
        if !s.is_empty() {
            return s
                .parse::<u64>()
                .map(SubscribeFrom::After)
                .map_err(|_| ApiError::invalid(format!("Last-Event-ID {s:?} is not a number")));
        }
    }
    match params.one("from")? {
        None | Some("start") => Ok(SubscribeFrom::Start),
        Some("end") => Ok(SubscribeFrom::End),
        Some(v) => v
            .parse::<u64>()
            .map(|n| n.checked_sub(1).map_or(SubscribeFrom::Start, SubscribeFrom::After))
            .map_err(|_| ApiError::bad_request("invalid_query", format!("from={v:?} is not start, end or a number"))),
    }
}

pub(crate) async fn subscribe_all(
    State(state): State<AppState>,
    p: Principal,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let allowed: Vec<&str> = ["from", "skip_damaged"]
        .into_iter()
        .chain(super::streams::FILTER_PARAMS.iter().copied())
        .collect();
    let params = Params::parse_with(q.as_deref(), &allowed, &[super::streams::METADATA_PARAM])?;
    let filter = filter(&params)?;
    p.authorize(Need::ReadLog(filter.stream_prefix.as_deref()))?;
    let from = start(&headers, &params)?;
    // At a damaged position: stop with an error event (the default), or send a
    // `damaged` event and go on after it.
    let options = SubscriptionOptions {
        skip_damaged: params.bool("skip_damaged")?.unwrap_or(false),
        ..SubscriptionOptions::default()
    };
    let store = state.store();
    // A token limited to some streams learns no position past the events it is shown.
    let limited = !p.permits(Need::ReadLog(None));
    // A filter the indexes cannot serve reads the log to find its events:
    // far behind the head, a span at a time, each in a `max_scans` place.
    let scans = filter.needs_scan(store.indexed_metadata());
    stream_response(
        &state,
        &p,
        move |gone| {
            let sub = store.subscribe_all_with(from, filter, options);
            if scans { sub.with_scan_gate(gone) } else { sub }
        },
        Key::Position,
        limited,
    )
}

pub(crate) async fn subscribe_stream(
    State(state): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    check_stream(&stream)?;
    p.authorize(Need::Read(&stream))?;
    let params = Params::parse(q.as_deref(), &["from"])?;
    let from = start(&headers, &params)?;
    let store = state.store();
    stream_response(
        &state,
        &p,
        move |_| store.subscribe_stream(&stream, from),
        Key::Revision,
        !p.permits(Need::ReadLog(None)),
    )
}

/// What an event's SSE id is.
#[derive(Clone, Copy)]
enum Key {
    Position,
    Revision,
}

/// Counts an open subscription until dropped (and holds a place of its
/// token's share).
struct Subscriber(AppState, #[allow(dead_code, reason = "held until dropped")] Share);

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.metrics.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs a subscription as an SSE response. For a `limited` caller (a token
/// limited to some streams) checkpoints are left out, and damage is reported
/// without its positions and file: they would tell the head of the log and
/// where other streams' events are (its events' ids already say where to resume).
///
/// `open` makes the subscription; it is given a gate over the `max_scans`
/// places that gives up once the client goes, for a subscription that scans.
fn stream_response(
    state: &AppState,
    p: &Principal,
    open: impl FnOnce(Arc<SubscriptionScans>) -> annal::Subscription,
    key: Key,
    limited: bool,
) -> Result<Response, ApiError> {
    // The token's share first: a token that holds it is refused without
    // touching the server's count.
    let share = state
        .shares
        .take(p, Place::Subscription)
        .map_err(|full| share_full("too_many_subscribers", &full.message("subscriptions")))?;
    let max = state.config.max_subscribers as i64;
    if state.metrics.subscribers.fetch_add(1, Ordering::AcqRel) >= max {
        state.metrics.subscribers.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            format!("at most {max} subscriptions at once"),
        ));
    }
    let subscriber = Subscriber(state.clone(), share);
    let (tx, rx) = tokio::sync::mpsc::channel::<(Event, usize)>(CHANNEL);
    let budget = Arc::new(Budget::new(state.config.max_response_bytes));
    let sent = budget.clone();
    let shutdown = state.shutdown.clone();
    let stop = shutdown.clone();
    // A thread of its own, not one of tokio's blocking pool: subscriptions
    // (up to max_subscribers) never take the threads appends, reads and
    // health checks run on.
    // The start is resolved now, before the response begins: a client that
    // subscribes `from=end` and then appends must get that append, however late
    // the subscription's thread gets to run.
    // The subscription's reads of the log stop when the response is dropped
    // (the client went away, or shutdown ended it): a filtered subscription
    // may otherwise read up to the head of the log, where no index bounds
    // what it passes over, before the thread looks at its client again.
    let cancel = annal::Cancel::new();
    let cancel_on_drop = super::CancelOnDrop(cancel.clone());
    let gone = {
        let (tx, stop) = (tx.clone(), stop.clone());
        SubscriptionScans::new(state, move || tx.is_closed() || stop.is_cancelled())
    };
    let sub = open(gone).with_cancel(cancel);
    let thread = std::thread::Builder::new()
        .name("annal-subscription".into())
        .spawn(move || {
            let _subscriber = subscriber;
            let mut sub = sub;
            while !tx.is_closed() && !stop.is_cancelled() {
                let (event, size) = match sub.next_timeout(Duration::from_millis(200)) {
                    Ok(None) => continue,
                    Ok(Some(Message::Event(e))) => {
                        let id = match key {
                            Key::Position => e.position,
                            Key::Revision => e.revision,
                        };
                        match serde_json::to_string(&EventOut::new(&e)) {
                            Ok(data) => {
                                let size = data.len() + EVENT_OVERHEAD;
                                (Event::default().id(id.to_string()).event("event").data(data), size)
                            }
                            Err(err) => (error_event(&err.to_string()), EVENT_OVERHEAD),
                        }
                    }
                    Ok(Some(Message::Checkpoint(_))) if limited => continue,
                    // Everything before `p` was considered: resuming after `p - 1` loses nothing.
                    Ok(Some(Message::Checkpoint(p))) => (
                        Event::default()
                            .id(p.saturating_sub(1).to_string())
                            .event("checkpoint")
                            .data(json!({ "position": p }).to_string()),
                        EVENT_OVERHEAD,
                    ),
                    // Damage skipped, never silently; where it was is the store's to know.
                    Ok(Some(Message::Damaged { .. })) if limited => (
                        Event::default()
                            .event("damaged")
                            .data(json!({ "reason": "damaged data was skipped" }).to_string()),
                        EVENT_OVERHEAD,
                    ),
                    // A position that could not be read and was skipped (never silently).
                    Ok(Some(Message::Damaged { position, next, reason })) => (
                        Event::default()
                            .id(next.saturating_sub(1).to_string())
                            .event("damaged")
                            .data(json!({ "position": position, "next": next, "reason": reason }).to_string()),
                        EVENT_OVERHEAD,
                    ),
                    Err(e) => {
                        let message = match &e {
                            e if limited && e.is_corruption() => "the subscription met damaged data".to_string(),
                            _ => e.to_string(),
                        };
                        let _ = tx.blocking_send((error_event(&message), EVENT_OVERHEAD));
                        return;
                    }
                };
                // Events waiting to be sent hold at most max_response_bytes (or one event).
                if !budget.take(size, || tx.is_closed() || stop.is_cancelled())
                    || tx.blocking_send((event, size)).is_err()
                {
                    return;
                }
            }
        });
    if let Err(e) = thread {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            format!("cannot start a subscription thread: {e}"),
        ));
    }
    let stream = tokio_stream_from(rx)
        .map(move |(event, size)| {
            let _ = &cancel_on_drop;
            sent.give(size);
            event
        })
        .take_until(shutdown.cancelled_owned())
        .map(Ok::<_, Infallible>);
    let keep_alive = KeepAlive::new().interval(Duration::from_millis(state.config.keepalive_ms));
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}

/// Bytes of events on their way from the subscription thread to the client.
struct Budget {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

impl Budget {
    fn new(max: usize) -> Budget {
        Budget {
            max,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits until `n` more bytes fit (any size fits when nothing is waiting);
    /// false if `stop` says to give up first.
    fn take(&self, n: usize, stop: impl Fn() -> bool) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && used.saturating_add(n) > self.max {
            if stop() {
                return false;
            }
            used = self
                .freed
                .wait_timeout(used, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *used += n;
        true
    }

    fn give(&self, n: usize) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(n);
        self.freed.notify_all();
    }
}

fn error_event(message: &str) -> Event {
    Event::default()
        .event("error")
        .data(json!({ "error": "subscription_failed", "message": message }).to_string())
}

/// The receiver as a stream.
fn tokio_stream_from<T: Send>(rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}
