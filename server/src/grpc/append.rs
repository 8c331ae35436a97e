//! Appends: `Append` (client streaming: options, then one message per
//! event) and `BatchAppend` (bidirectional: batches keyed by a correlation
//! id, each answered when its final part arrives), and writes to the
//! protocol's `$$<stream>` metadata streams.
//!
//! An append answers the revision of its last event and the commit position
//! of its last event (an exact retry answers the original's). A soft-deleted
//! stream takes `no_stream` as its expected version, and its revisions go on.
//! Events held by appends still arriving (and being written) count against
//! a server-wide byte budget (`max_pending_append_bytes`), and an append or
//! batch has `request_timeout_ms` to arrive whole.
//!
//! It owns the shape of append answers. It must never check an expected
//! version itself, except for `$$<stream>`, whose revisions are those of the
//! metadata's system stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use annal::{EventData, ExpectedVersion};
use tonic::{Status, Streaming};

use super::convert::{commit_of, event_data, expected_of, parse_uuid, stream_identifier, stream_name};
use super::proto::event_store::client::streams::append_resp::{self, wrong_expected_version as wev};
use super::proto::event_store::client::streams::batch_append_req;
use super::proto::event_store::client::streams::batch_append_resp;
use super::proto::event_store::client::streams::{AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, append_req};
use super::proto::event_store::client::{AllStreamPosition, Empty};
use super::{Answers, MAX_MESSAGE, blocking, metadata, status};
use crate::auth::{Need, Principal};
use crate::state::AppState;

/// What an append did.
enum Outcome {
    /// Written (or an exact retry): the stream's revision after it (`None`:
    /// still no stream) and the commit position of its last event.
    Done { revision: Option<u64>, commit: Option<u64> },
    /// The expected version did not hold; the stream's current revision.
    Wrong { current: Option<u64> },
}

/// Refuses `p` a write to `stream` (or, for `$$<stream>`, to its metadata).
fn authorize_write(p: &Principal, stream: &str) -> Result<(), Status> {
    let target = metadata::target(stream);
    p.authorize(Need::Write(target.unwrap_or(stream)))
        .map_err(status::denied)
}

/// The refusal of an append with more than `max` events.
fn too_many(max: usize) -> Status {
    Status::invalid_argument(format!("more than {max} events in one append"))
}

/// Appends `events` to `stream` for `p`.
async fn run(
    state: &AppState,
    p: &Principal,
    stream: String,
    expected: ExpectedVersion,
    events: Vec<EventData>,
) -> Result<Outcome, Status> {
    let target = metadata::target(&stream).map(str::to_string);
    p.authorize(Need::Write(target.as_deref().unwrap_or(&stream)))
        .map_err(status::denied)?;
    let store = state.store();
    let sees_damage = p.sees_damage();
    blocking(state, move || {
        if let Some(target) = target {
            let Some(last) = events.last() else {
                let current = metadata::revision(&store, &target);
                return Ok(if metadata::expected_holds(expected, current) {
                    Outcome::Done {
                        revision: current,
                        commit: None,
                    }
                } else {
                    Outcome::Wrong { current }
                });
            };
            let m = metadata::from_json(&last.data)?;
            // The expected revision is checked by the store, atomically with the write.
            return match store.set_stream_metadata_expected(&target, expected, m) {
                Ok(r) => Ok(Outcome::Done {
                    revision: Some(r.next_expected_version),
                    commit: Some(commit_of(r.position)),
                }),
                Err(annal::Error::WrongExpectedVersion { actual, .. }) => Ok(Outcome::Wrong { current: actual }),
                Err(e) => Err(status::from_store(e)),
            };
        }
        let info = store.stream_info(&stream);
        let current = info.as_ref().map(|s| s.last_revision);
        // A soft-deleted stream counts as no stream for the protocol: its
        // revisions go on from where the delete left them (`$tb`). That holds
        // after the first append brought it back too, so that a retry of that
        // append with `no_stream` is the same append, answered as the first.
        let deleted_at = store
            .stream_metadata(&stream)
            .and_then(|m| m.truncate_before)
            .filter(|tb| *tb > 0);
        let effective = match (expected, current, deleted_at) {
            (ExpectedVersion::NoStream, Some(_), Some(tb)) => ExpectedVersion::Exact(tb - 1),
            _ => expected,
        };
        if events.is_empty() {
            return Ok(if metadata::expected_holds(effective, current) {
                Outcome::Done {
                    revision: current,
                    commit: None,
                }
            } else {
                Outcome::Wrong { current }
            });
        }
        let n = events.len() as u64;
        match store.append(&stream, effective, events) {
            // The last event is at position + n − 1; on the wire, one more.
            Ok(r) => Ok(Outcome::Done {
                revision: Some(r.next_expected_version),
                commit: Some(r.position.saturating_add(n)),
            }),
            Err(annal::Error::WrongExpectedVersion { actual, .. }) => Ok(Outcome::Wrong { current: actual }),
            Err(annal::Error::IdempotencyConflict { .. }) => Ok(Outcome::Wrong {
                current: store.stream_info(&stream).map(|s| s.last_revision),
            }),
            Err(e) if !sees_damage => Err(status::from_store_without_place(e)),
            Err(e) => Err(status::from_store(e)),
        }
    })
    .await
}

/// What an event held in memory costs beyond its bytes (its id, fields and
/// the slots that hold them), counted so that empty events cannot pile up.
const EVENT_OVERHEAD: usize = 128;

/// What a proposed event weighs in memory: its bytes and names, plus [`EVENT_OVERHEAD`].
fn weight(e: &EventData) -> usize {
    let tags: usize = e.tags.iter().map(|t| t.len() + 24).sum();
    e.data.len() + e.metadata.len() + e.event_type.len() + tags + EVENT_OVERHEAD
}

/// Adds a proposed message's size to an append's total, refusing past [`MAX_MESSAGE`].
fn count_size(total: &mut usize, e: &EventData) -> Result<(), Status> {
    *total = total.saturating_add(weight(e));
    if *total > MAX_MESSAGE {
        return Err(Status::invalid_argument(format!(
            "the append is larger than {MAX_MESSAGE} bytes"
        )));
    }
    Ok(())
}

/// The bytes of events held, server-wide, by gRPC appends still being
/// received or written (`max_pending_append_bytes`).
pub(crate) struct AppendBudget {
    held: AtomicUsize,
    max: usize,
}

impl AppendBudget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Arc<AppendBudget> {
        Arc::new(AppendBudget {
            held: AtomicUsize::new(0),
            max,
        })
    }
}

/// The bytes one append or batch holds against the [`AppendBudget`],
/// given back when it is dropped (written, refused or abandoned).
struct Held {
    budget: Arc<AppendBudget>,
    bytes: usize,
}

impl Held {
    fn new(budget: &Arc<AppendBudget>) -> Held {
        Held {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    /// Takes the bytes of one more event, or RESOURCE_EXHAUSTED if the budget has not room for them.
    fn take(&mut self, e: &EventData) -> Result<(), Status> {
        let n = weight(e);
        let before = self.budget.held.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.budget.max {
            self.budget.held.fetch_sub(n, Ordering::AcqRel);
            // An append larger than the whole budget never fits: retrying
            // cannot help, and the answer says so.
            if self.bytes.saturating_add(n) > self.budget.max {
                return Err(Status::invalid_argument(format!(
                    "this append holds more than max_pending_append_bytes ({} bytes) of events by itself; \
                     split it, or raise the setting",
                    self.budget.max
                )));
            }
            return Err(Status::resource_exhausted(format!(
                "appends being received hold more than max_pending_append_bytes ({} bytes) of events; \
                 retry later",
                self.budget.max
            )));
        }
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The refusal of an append (or batch) whose events did not all arrive in time.
fn arrived_too_late(state: &AppState) -> Status {
    Status::deadline_exceeded(format!(
        "the append's events did not all arrive within request_timeout_ms ({} ms)",
        state.config.request_timeout_ms
    ))
}

/// `Append`: options first, then the events, all within `request_timeout_ms`.
pub(crate) async fn append(
    state: AppState,
    p: Principal,
    budget: Arc<AppendBudget>,
    inbound: Streaming<AppendReq>,
) -> Result<AppendResp, Status> {
    let deadline = tokio::time::Instant::now() + state.config.request_timeout();
    let (stream, expected, events, held) =
        match tokio::time::timeout_at(deadline, receive(&state, &p, &budget, inbound)).await {
            Ok(r) => r?,
            Err(_) => return Err(arrived_too_late(&state)),
        };
    let result = match run(&state, &p, stream, expected, events).await? {
        Outcome::Done { revision, commit } => append_resp::Result::Success(append_resp::Success {
            current_revision_option: Some(match revision {
                Some(r) => append_resp::success::CurrentRevisionOption::CurrentRevision(r),
                None => append_resp::success::CurrentRevisionOption::NoStream(Empty {}),
            }),
            position_option: Some(match commit {
                Some(c) => append_resp::success::PositionOption::Position(append_resp::Position {
                    commit_position: c,
                    prepare_position: c,
                }),
                None => append_resp::success::PositionOption::NoPosition(Empty {}),
            }),
        }),
        Outcome::Wrong { current } => {
            append_resp::Result::WrongExpectedVersion(wrong_expected_version(current, expected))
        }
    };
    drop(held);
    Ok(AppendResp { result: Some(result) })
}

/// What an append sends: its options, then its events, holding their bytes.
async fn receive(
    state: &AppState,
    p: &Principal,
    budget: &Arc<AppendBudget>,
    mut inbound: Streaming<AppendReq>,
) -> Result<(String, ExpectedVersion, Vec<EventData>, Held), Status> {
    let options = match inbound.message().await? {
        Some(AppendReq {
            content: Some(append_req::Content::Options(o)),
        }) => o,
        _ => return Err(Status::invalid_argument("an append must start with its options")),
    };
    let stream = stream_name(options.stream_identifier.as_ref())?;
    let expected = expected_of!(append_req, options.expected_stream_revision);
    // Refused before a single event is held.
    authorize_write(p, &stream)?;
    let max_events = state.config.max_events_per_append;
    let mut events = Vec::new();
    let mut total = 0usize;
    let mut held = Held::new(budget);
    while let Some(m) = inbound.message().await? {
        match m.content {
            Some(append_req::Content::ProposedMessage(pm)) => {
                let e = event_data(pm.id.as_ref(), &pm.metadata, pm.custom_metadata, pm.data)?;
                count_size(&mut total, &e)?;
                if events.len() >= max_events {
                    return Err(too_many(max_events));
                }
                held.take(&e)?;
                events.push(e);
            }
            _ => return Err(Status::invalid_argument("an append sends its options once, first")),
        }
    }
    Ok((stream, expected, events, held))
}

/// The v1 wrong-expected-version answer, with the current fields and the legacy ones.
fn wrong_expected_version(current: Option<u64>, expected: ExpectedVersion) -> append_resp::WrongExpectedVersion {
    append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(match current {
            Some(r) => wev::CurrentRevisionOption2060::CurrentRevision2060(r),
            None => wev::CurrentRevisionOption2060::NoStream2060(Empty {}),
        }),
        expected_revision_option_20_6_0: match expected {
            ExpectedVersion::Exact(r) => Some(wev::ExpectedRevisionOption2060::ExpectedRevision2060(r)),
            ExpectedVersion::Any => Some(wev::ExpectedRevisionOption2060::Any2060(Empty {})),
            ExpectedVersion::StreamExists => Some(wev::ExpectedRevisionOption2060::StreamExists2060(Empty {})),
            ExpectedVersion::NoStream => None,
        },
        current_revision_option: Some(match current {
            Some(r) => wev::CurrentRevisionOption::CurrentRevision(r),
            None => wev::CurrentRevisionOption::CurrentNoStream(Empty {}),
        }),
        expected_revision_option: Some(match expected {
            ExpectedVersion::Exact(r) => wev::ExpectedRevisionOption::ExpectedRevision(r),
            ExpectedVersion::Any => wev::ExpectedRevisionOption::ExpectedAny(Empty {}),
            ExpectedVersion::StreamExists => wev::ExpectedRevisionOption::ExpectedStreamExists(Empty {}),
            ExpectedVersion::NoStream => wev::ExpectedRevisionOption::ExpectedNoStream(Empty {}),
        }),
    }
}

/// Most batches one BatchAppend call may have open (sent in part) at once;
/// together they hold at most [`MAX_MESSAGE`] bytes.
const MAX_OPEN_BATCHES: usize = 64;

/// One batch being received.
struct Batch {
    options: Option<batch_append_req::Options>,
    events: Vec<EventData>,
    size: usize,
    /// The bytes of its events, against the server's budget.
    held: Held,
    /// When its first part came: its final part must come within `request_timeout_ms`.
    opened: tokio::time::Instant,
    /// Its correlation id as the client sent it.
    correlation_id: Option<super::proto::event_store::client::Uuid>,
    /// The first proposed message that could not be taken.
    error: Option<Status>,
}

/// `BatchAppend`: each batch (by correlation id) is appended when its final
/// part arrives; a batch whose final part has not arrived within
/// `request_timeout_ms` of its first is answered DEADLINE_EXCEEDED, and the
/// call ends so (a later part cannot start it afresh).
pub(crate) fn batch_append(
    state: AppState,
    p: Principal,
    budget: Arc<AppendBudget>,
    mut inbound: Streaming<BatchAppendReq>,
) -> Answers<BatchAppendResp> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<BatchAppendResp, Status>>(16);
    let max_events = state.config.max_events_per_append;
    let timeout = state.config.request_timeout();
    tokio::spawn(async move {
        let mut batches: HashMap<String, Batch> = HashMap::new();
        loop {
            let oldest = batches.values().map(|b| b.opened).min();
            let received = tokio::select! {
                m = inbound.message() => m,
                () = tokio::time::sleep_until(oldest.unwrap_or_else(tokio::time::Instant::now) + timeout),
                    if oldest.is_some() => {
                    let now = tokio::time::Instant::now();
                    let late: Vec<String> = batches
                        .iter()
                        .filter(|(_, b)| b.opened + timeout <= now)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in late {
                        let Some(mut batch) = batches.remove(&key) else { continue };
                        batch.error = Some(arrived_too_late(&state));
                        let correlation_id = batch.correlation_id.clone();
                        let answer = answer_batch(&state, &p, correlation_id, batch).await;
                        let _ = tx.send(Ok(answer)).await;
                    }
                    let _ = tx.send(Err(arrived_too_late(&state))).await;
                    break;
                }
            };
            let msg = match received {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            };
            let key = match parse_uuid(msg.correlation_id.as_ref()) {
                Ok(Some(id)) => id.to_string(),
                _ => format!("{:?}", msg.correlation_id),
            };
            if !batches.contains_key(&key) && batches.len() >= MAX_OPEN_BATCHES {
                let _ = tx
                    .send(Err(Status::resource_exhausted(format!(
                        "more than {MAX_OPEN_BATCHES} batches without their final part on one call"
                    ))))
                    .await;
                break;
            }
            // The bytes held by the other open batches count against this one's limit.
            let others: usize = batches.iter().filter(|(k, _)| **k != key).map(|(_, b)| b.size).sum();
            let batch = batches.entry(key.clone()).or_insert_with(|| Batch {
                options: None,
                events: Vec::new(),
                size: 0,
                held: Held::new(&budget),
                opened: tokio::time::Instant::now(),
                correlation_id: msg.correlation_id.clone(),
                error: None,
            });
            if let Some(o) = msg.options {
                // A caller that may not write there is refused before its events are held.
                if batch.error.is_none()
                    && let Ok(stream) = stream_name(o.stream_identifier.as_ref())
                    && let Err(e) = authorize_write(&p, &stream)
                {
                    batch.error = Some(e);
                }
                batch.options = Some(o);
            }
            for pm in msg.proposed_messages {
                if batch.error.is_some() {
                    break;
                }
                if batch.events.len() >= max_events {
                    batch.error = Some(too_many(max_events));
                    break;
                }
                let mut held = batch.size + others;
                match event_data(pm.id.as_ref(), &pm.metadata, pm.custom_metadata, pm.data)
                    .and_then(|e| count_size(&mut held, &e).map(|()| e))
                    .and_then(|e| batch.held.take(&e).map(|()| e))
                {
                    Ok(e) => {
                        batch.size = held - others;
                        batch.events.push(e);
                    }
                    Err(s) => batch.error = Some(s),
                }
            }
            if !msg.is_final {
                continue;
            }
            let Some(batch) = batches.remove(&key) else { continue };
            let answer = answer_batch(&state, &p, msg.correlation_id, batch).await;
            if tx.send(Ok(answer)).await.is_err() {
                break;
            }
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

async fn answer_batch(
    state: &AppState,
    p: &Principal,
    correlation_id: Option<super::proto::event_store::client::Uuid>,
    batch: Batch,
) -> BatchAppendResp {
    use batch_append_req::options::ExpectedStreamPosition as In;
    use batch_append_resp::ExpectedStreamPosition as Out;
    let mut resp = BatchAppendResp {
        correlation_id,
        ..Default::default()
    };
    let Some(options) = batch.options else {
        resp.result = Some(batch_append_resp::Result::Error(status::batch_error(
            "",
            &Status::invalid_argument("a batch append must send its options"),
        )));
        return resp;
    };
    let (expected, echo) = match options.expected_stream_position {
        Some(In::StreamPosition(r)) => (ExpectedVersion::Exact(r), Out::StreamPosition(r)),
        Some(In::NoStream(())) => (ExpectedVersion::NoStream, Out::NoStream(())),
        Some(In::StreamExists(())) => (ExpectedVersion::StreamExists, Out::StreamExists(())),
        Some(In::Any(())) | None => (ExpectedVersion::Any, Out::Any(())),
    };
    resp.expected_stream_position = Some(echo);
    resp.stream_identifier = options.stream_identifier.clone();
    let stream = match stream_name(options.stream_identifier.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            resp.result = Some(batch_append_resp::Result::Error(status::batch_error("", &e)));
            return resp;
        }
    };
    resp.stream_identifier = Some(stream_identifier(&stream));
    let outcome = match batch.error {
        Some(e) => Err(e),
        None => run(state, p, stream.clone(), expected, batch.events).await,
    };
    resp.result = Some(match outcome {
        Ok(Outcome::Done { revision, commit }) => batch_append_resp::Result::Success(batch_append_resp::Success {
            current_revision_option: Some(match revision {
                Some(r) => batch_append_resp::success::CurrentRevisionOption::CurrentRevision(r),
                None => batch_append_resp::success::CurrentRevisionOption::NoStream(()),
            }),
            position_option: Some(match commit {
                Some(c) => batch_append_resp::success::PositionOption::Position(AllStreamPosition {
                    commit_position: c,
                    prepare_position: c,
                }),
                None => batch_append_resp::success::PositionOption::NoPosition(()),
            }),
        }),
        Ok(Outcome::Wrong { current }) => {
            batch_append_resp::Result::Error(status::batch_wrong_expected_version(current, expected))
        }
        Err(e) => batch_append_resp::Result::Error(status::batch_error(&stream, &e)),
    });
    resp
}
