//! Persistent subscription groups: create, inspect, delete, fetch, ack, nack, replay parked.
//!
//! `Group` and `Consumer` borrow the store, so each request opens them on the
//! blocking pool and drops them when done: a consumer is connected only while
//! one of its requests runs on the store. A fetch that waits for events
//! (`timeout_ms`) waits between such looks asynchronously, on no thread,
//! woken by the store's notice of new events (never by a timer of its own
//! looking at the log), and holds one of `max_long_polls` places.
//!
//! It owns the HTTP shape of groups. It must never decide who may use a group:
//! it asks `auth` with the group's source.

use std::time::{Duration, Instant};

use annal::{Filter, GroupSettings, GroupSource, NackAction, Store, Strategy, SubscribeFrom, TopicPattern};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::encode::{EventOut, JsonBody, Params, check_stream, json_bytes};
use super::error::{ApiError, without_place};
use super::share_full;
use crate::auth::{Denied, Need, Principal};
use crate::config::{MAX_GROUP_IN_FLIGHT, Role};
use crate::shares::{Place, groups_full, groups_full_message};
use crate::state::AppState;
use crate::visible::Shown;

/// The least time between two looks of a waiting fetch woken by new events
/// of the log (which may not concern its group).
const LOOK_GAP: Duration = Duration::from_millis(10);
/// A waiting fetch looks at its group again at least this often.
const FETCH_SLICE: Duration = Duration::from_millis(250);

/// Longest acknowledgement timeout a group may have (a day).
const MAX_ACK_TIMEOUT_MS: u64 = 86_400_000;

/// Group settings as the API takes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupIn {
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    stream_prefix: Option<String>,
    #[serde(default)]
    type_patterns: Vec<String>,
    #[serde(default)]
    stream_patterns: Vec<String>,
    #[serde(default)]
    aggregate_type: Option<String>,
    #[serde(default)]
    aggregate_id: Option<String>,
    /// Metadata fields: top-level key to the string it must hold.
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    start: Option<Value>,
    #[serde(default)]
    strategy: Option<StrategyIn>,
    #[serde(default)]
    ack_timeout_ms: Option<u64>,
    #[serde(default)]
    max_retries: Option<u32>,
    #[serde(default)]
    max_in_flight: Option<usize>,
    #[serde(default)]
    checkpoint_every: Option<u64>,
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum StrategyIn {
    RoundRobin,
    Pinned,
    DispatchToSingle,
}

impl GroupIn {
    fn into_settings(self) -> Result<GroupSettings, ApiError> {
        let mut s = GroupSettings::all();
        s.source = match self.stream {
            Some(stream) => {
                if !self.types.is_empty()
                    || !self.tags.is_empty()
                    || self.stream_prefix.is_some()
                    || !self.type_patterns.is_empty()
                    || !self.stream_patterns.is_empty()
                    || self.aggregate_type.is_some()
                    || self.aggregate_id.is_some()
                    || !self.metadata.is_empty()
                {
                    return Err(ApiError::invalid("a group on one stream takes no filter"));
                }
                check_stream(&stream)?;
                GroupSource::Stream(stream)
            }
            None => GroupSource::All(Filter {
                types: self.types,
                tags: self.tags,
                stream_prefix: self.stream_prefix,
                type_patterns: self.type_patterns.iter().map(|p| TopicPattern::new(p)).collect(),
                stream_patterns: self.stream_patterns.iter().map(|p| TopicPattern::new(p)).collect(),
                aggregate_type: self.aggregate_type,
                aggregate_id: self.aggregate_id,
                metadata: self.metadata.into_iter().collect(),
                ..Filter::default()
            }),
        };
        s.start = match self.start {
            None => SubscribeFrom::Start,
            Some(Value::String(v)) if v == "start" => SubscribeFrom::Start,
            Some(Value::String(v)) if v == "end" => SubscribeFrom::End,
            Some(Value::Number(n)) if n.as_u64().is_some() => match n.as_u64() {
                Some(0) | None => SubscribeFrom::Start,
                Some(p) => SubscribeFrom::After(p - 1),
            },
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "start {other} is not \"start\", \"end\" or a position"
                )));
            }
        };
        if let Some(st) = self.strategy {
            s.strategy = match st {
                StrategyIn::RoundRobin => Strategy::RoundRobin,
                StrategyIn::Pinned => Strategy::Pinned,
                StrategyIn::DispatchToSingle => Strategy::DispatchToSingle,
            };
        }
        s.ack_timeout_ms = self.ack_timeout_ms.unwrap_or(s.ack_timeout_ms);
        if !(1..=MAX_ACK_TIMEOUT_MS).contains(&s.ack_timeout_ms) {
            return Err(ApiError::invalid(format!(
                "ack_timeout_ms must be between 1 and {MAX_ACK_TIMEOUT_MS}"
            )));
        }
        s.max_retries = self.max_retries.unwrap_or(s.max_retries);
        s.max_in_flight = self.max_in_flight.unwrap_or(s.max_in_flight);
        if s.max_in_flight > MAX_GROUP_IN_FLIGHT {
            return Err(ApiError::invalid(format!(
                "max_in_flight must be at most {MAX_GROUP_IN_FLIGHT}"
            )));
        }
        s.checkpoint_every = self.checkpoint_every.unwrap_or(s.checkpoint_every);
        Ok(s)
    }
}

/// Settings as the API shows them (the same shape as they are given).
fn settings_json(name: &str, s: &GroupSettings) -> serde_json::Map<String, Value> {
    let (stream, filter) = match &s.source {
        GroupSource::Stream(st) => (Some(st.clone()), Filter::all()),
        GroupSource::All(f) => (None, f.clone()),
    };
    let start = match s.start {
        SubscribeFrom::Start => json!("start"),
        SubscribeFrom::End => json!("end"),
        SubscribeFrom::After(p) => json!(p + 1),
    };
    let strategy = match s.strategy {
        Strategy::RoundRobin => "round_robin",
        Strategy::Pinned => "pinned",
        Strategy::DispatchToSingle => "dispatch_to_single",
    };
    let v = json!({
        "name": name,
        "stream": stream,
        "types": filter.types,
        "tags": filter.tags,
        "stream_prefix": filter.stream_prefix,
        "start": start,
        "strategy": strategy,
        "ack_timeout_ms": s.ack_timeout_ms,
        "max_retries": s.max_retries,
        "max_in_flight": s.max_in_flight,
        "checkpoint_every": s.checkpoint_every,
    });
    let mut m = match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    // The newer filter fields appear only when set, so older answers keep their shape.
    if !filter.type_patterns.is_empty() {
        m.insert("type_patterns".into(), json!(filter.type_patterns));
    }
    if !filter.stream_patterns.is_empty() {
        m.insert("stream_patterns".into(), json!(filter.stream_patterns));
    }
    if let Some(t) = &filter.aggregate_type {
        m.insert("aggregate_type".into(), json!(t));
    }
    if let Some(i) = &filter.aggregate_id {
        m.insert("aggregate_id".into(), json!(i));
    }
    if !filter.metadata.is_empty() {
        let fields: std::collections::BTreeMap<&str, &str> =
            filter.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        m.insert("metadata".into(), json!(fields));
    }
    m
}

/// The library reports a missing or existing group as invalid input; tell them apart.
fn group_error(name: &str, e: annal::Error) -> ApiError {
    match &e {
        annal::Error::InvalidInput(m) if m.contains("does not exist") => missing_group(name),
        annal::Error::InvalidInput(m) if m.contains("already exists") => ApiError::new(
            StatusCode::CONFLICT,
            "group_exists",
            format!("group {name:?} already exists"),
        ),
        _ => e.into(),
    }
}

/// Opens a group and checks the principal may use it with `role` (read to
/// consume and inspect, write to manage). A group whose source the principal
/// may not read is answered as a missing one: the refusal would name a
/// stream the caller did not ask about.
fn open<'s>(store: &'s Store, name: &str, p: &Principal, role: Role) -> Result<annal::Group<'s>, ApiError> {
    let g = store.group(name).map_err(|e| group_error(name, e))?;
    if !p.permits(Need::Group(Role::Read, &g.settings().source)) {
        return Err(missing_group(name));
    }
    p.authorize(Need::Group(role, &g.settings().source))?;
    Ok(g)
}

fn missing_group(name: &str) -> ApiError {
    ApiError::not_found("group_not_found", format!("group {name:?} does not exist"))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<GroupIn>,
) -> Result<Response, ApiError> {
    let settings = body.into_settings()?;
    p.authorize(Need::Group(Role::Write, &settings.source))?;
    // Group names are shared by the whole store: a token limited to some
    // stream prefixes names its groups under them, refused before the store
    // is asked, so the answer is the same whether the name is taken or not.
    // And a group named under another token's prefixes reads only what
    // that token may read, so that its name never tells that token of a
    // group it may not see.
    p.authorize(Need::NameGroup(&name))
        .and_then(|()| state.auth.check_group_name(&name, &settings.source))
        .map_err(|d| match d {
            Denied::Forbidden(message) => ApiError::new(StatusCode::FORBIDDEN, "group_name_outside_prefixes", message),
            d @ Denied::Unauthenticated => d.into(),
        })?;
    let store = state.store();
    let st = state.clone();
    let body = state
        .blocking(move || {
            // A limited token has at most max_groups_per_token groups.
            let most = st.config.max_groups_per_token;
            let _creating = st.group_creation.lock().unwrap_or_else(|e| e.into_inner());
            if groups_full(&store, &p, most).map_err(without_place)? {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "too_many_groups",
                    groups_full_message(most),
                ));
            }
            let g = store.create_group(&name, settings).map_err(|e| group_error(&name, e))?;
            Ok(Value::Object(settings_json(&name, g.settings())))
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

pub(crate) async fn info(
    State(state): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store();
    let body = state
        .blocking(move || {
            let g = open(&store, &name, &p, Role::Read)?;
            let i = g.info();
            let mut m = settings_json(&name, g.settings());
            // A token limited to some streams is shown no position past the
            // last event of the group's streams (an idle group's cursor
            // stands at the head of the whole log).
            let shown = Shown::of(&p, &g.settings().source);
            let position = |at: u64| {
                shown
                    .position(&store, at)
                    .map_err(|e| if shown.everything() { e.into() } else { without_place(e) })
            };
            m.insert("checkpoint".into(), json!(position(i.checkpoint)?));
            m.insert("saved_checkpoint".into(), json!(position(i.saved_checkpoint)?));
            m.insert("in_flight".into(), json!(i.in_flight));
            m.insert("ready".into(), json!(i.ready));
            m.insert("parked".into(), json!(i.parked));
            // Positions skipped as damaged (skip_damaged); where and why is
            // the store's last background error, for a store-wide token.
            m.insert("skipped_damaged".into(), json!(i.skipped_damaged));
            m.insert("consumers".into(), json!(i.consumers));
            Ok(Value::Object(m))
        })
        .await?;
    Ok(axum::Json(body).into_response())
}

pub(crate) async fn list(State(state): State<AppState>, p: Principal) -> Result<Response, ApiError> {
    let store = state.store();
    let groups = state.blocking(move || Ok(store.groups_list()?)).await?;
    let list: Vec<Value> = groups
        .iter()
        .filter(|(_, s)| p.permits(Need::Group(Role::Read, &s.source)))
        .map(|(n, s)| Value::Object(settings_json(n, s)))
        .collect();
    Ok(axum::Json(json!({ "groups": list })).into_response())
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store();
    state
        .blocking(move || {
            drop(open(&store, &name, &p, Role::Write)?);
            store.delete_group(&name).map_err(|e| group_error(&name, e))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn fetch(
    State(state): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["consumer", "max", "timeout_ms"])?;
    let consumer = params
        .one("consumer")?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid_query", "consumer is required"))?
        .to_string();
    let max = params.u64("max")?.unwrap_or(10);
    if max == 0 || max > state.config.max_read_limit as u64 {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("max={max} is not between 1 and {}", state.config.max_read_limit),
        ));
    }
    // A long poll ends before the request times out.
    let cap = state.config.request_timeout_ms.saturating_sub(1000).max(1);
    let timeout = Duration::from_millis(params.u64("timeout_ms")?.unwrap_or(0).min(cap));
    // A fetch that waits holds one of max_long_polls places (and no thread
    // while it waits), and one of its token's share of them.
    let _place = if timeout.is_zero() {
        None
    } else {
        let share = state
            .shares
            .take(&p, Place::LongPoll)
            .map_err(|full| share_full("too_many_long_polls", &full.message("waiting group fetches")))?;
        match state.long_polls.clone().try_acquire_owned() {
            Ok(place) => Some((place, share)),
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_long_polls",
                    format!("at most {} waiting group fetches at once", state.config.max_long_polls),
                ));
            }
        }
    };
    let deadline = Instant::now() + timeout;
    let watch = state.group_wakers.watch(&name);
    let mut new_events = state.new_events.subscribe();
    let mut first = true;
    loop {
        // Look without waiting (a short use of the blocking pool), then wait
        // here, on no thread, until something may have changed. The notices
        // of new events and of the group's changes are taken before the look,
        // so that a change during it is not missed.
        new_events.mark_unchanged();
        let changed = watch.notify().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let looked = Instant::now();
        if let Some(body) = fetch_now(&state, &name, &consumer, &p, max, first).await? {
            return Ok(json_bytes(body));
        }
        first = false;
        if Instant::now() >= deadline || state.shutdown.is_cancelled() {
            return Ok(json_bytes(br#"{"events":[]}"#.to_vec()));
        }
        if wait_for_change(&state, &mut new_events, deadline, changed).await {
            watch.woken();
        } else {
            // New events elsewhere in a busy log: look again no sooner than
            // LOOK_GAP after the last look, so that waiting fetches cost the
            // writer a bounded number of looks a second, not one per batch.
            let next = (looked + LOOK_GAP).min(deadline);
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = state.shutdown.cancelled() => {}
            }
        }
    }
}

/// Waits until the store publishes new events (`new_events` changes), the
/// group's consumers change something over HTTP (`changed`: true is
/// returned), `FETCH_SLICE` passes (acknowledgement timeouts and other
/// protocols' acknowledgements are seen then), shutdown, or `deadline`; the
/// caller then keeps `LOOK_GAP` between looks woken by new events.
async fn wait_for_change(
    state: &AppState,
    new_events: &mut tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
    changed: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
) -> bool {
    let until = deadline.min(Instant::now() + FETCH_SLICE);
    let woken_by_group = tokio::select! {
        () = changed => true,
        // An error: the sender is gone (it lives as long as the state).
        _ = new_events.changed() => false,
        () = state.shutdown.cancelled() => false,
        () = tokio::time::sleep_until(until.into()) => false,
    };
    state
        .fetch_wait_wakeups
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    woken_by_group
}

/// Fetches what consumer `consumer` of group `name` may take now, without
/// waiting: the body of the answer, or `None` if there is nothing.
///
/// A group on the global log whose filter the indexes cannot serve reads
/// events to find those it keeps: its look takes one of the `max_scans`
/// places (the `first` look of a request is refused with 503
/// `too_many_scans` when none is free; a later one finds nothing and waits
/// as usual). The look stops, having taken nothing, at the request timeout
/// or when the handler goes (the client left).
async fn fetch_now(
    state: &AppState,
    name: &str,
    consumer: &str,
    p: &Principal,
    max: u64,
    first: bool,
) -> Result<Option<Vec<u8>>, ApiError> {
    let (store, name, consumer, p) = (state.store(), name.to_string(), consumer.to_string(), p.clone());
    let max_bytes = state.config.max_response_bytes;
    let st = state.clone();
    let (cancel, _cancel_on_drop) = state.read_cancel();
    state
        .blocking(move || {
            let g = open(&store, &name, &p, Role::Read)?;
            // Held until the look ends (its cancellation ends it soon after the handler goes).
            let _place = match &g.settings().source {
                GroupSource::All(f) if f.needs_scan(store.indexed_metadata()) => match st.scan_place(&p) {
                    Ok(place) => Some(place),
                    Err(e) if first => return Err(e),
                    Err(_) => return Ok(None),
                },
                _ => None,
            };
            let c = g.consumer(&consumer);
            st.metrics.count_store_read();
            // One call takes the events while the body stays within
            // max_response_bytes (always one): events fetched are delivered,
            // and sent; the one that does not fit stays in the group's line.
            let mut body = b"{\"events\":[".to_vec();
            let mut count = 0u64;
            let mut failed = None;
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            c.fetch_while_cancellable(max, Duration::ZERO, &cancel, |d| {
                let item = match serde_json::to_vec(&EventOut::new(&d.event).with_retry_count(d.retry_count)) {
                    Ok(item) => item,
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                };
                // Room for the closing `]}`.
                if count > 0 && body.len() + 1 + item.len() + 2 > max_bytes {
                    return false;
                }
                if count > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&item);
                count += 1;
                true
            })?;
            if let Some(e) = failed {
                return Err(ApiError::internal(e.to_string()));
            }
            if count == 0 {
                return Ok(None);
            }
            body.extend_from_slice(b"]}");
            Ok(Some(body))
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckIn {
    consumer: String,
    ids: Vec<Uuid>,
}

pub(crate) async fn ack(
    State(state): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<AckIn>,
) -> Result<Response, ApiError> {
    let (store, group) = (state.store(), name.clone());
    let acked = state
        .blocking(move || {
            let g = open(&store, &group, &p, Role::Read)?;
            let c = g.consumer(&body.consumer);
            Ok(c.ack(&body.ids)?)
        })
        .await?;
    // Only a change wakes the group's waiting fetches (each then looks again).
    if acked > 0 {
        state.group_wakers.wake(&name);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NackIn {
    consumer: String,
    id: Uuid,
    #[serde(default)]
    action: Option<ActionIn>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ActionIn {
    Retry,
    Park,
    Skip,
}

pub(crate) async fn nack(
    State(state): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<NackIn>,
) -> Result<Response, ApiError> {
    let action = match body.action.unwrap_or(ActionIn::Retry) {
        ActionIn::Retry => NackAction::Retry,
        ActionIn::Park => NackAction::Park,
        ActionIn::Skip => NackAction::Skip,
    };
    let (store, group) = (state.store(), name.clone());
    let changed = state
        .blocking(move || {
            let g = open(&store, &group, &p, Role::Read)?;
            let c = g.consumer(&body.consumer);
            Ok(c.nack(
                body.id,
                action,
                body.reason.as_deref().unwrap_or("nacked by the client"),
            )?)
        })
        .await?;
    if changed {
        state.group_wakers.wake(&name);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn replay_parked(
    State(state): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (store, group) = (state.store(), name.clone());
    let n = state
        .blocking(move || {
            let g = open(&store, &group, &p, Role::Write)?;
            Ok(g.replay_parked()?)
        })
        .await?;
    if n > 0 {
        state.group_wakers.wake(&name);
    }
    Ok(axum::Json(json!({ "replayed": n })).into_response())
}
