//! Appends, reads, deletes, metadata and snapshots of streams; reads of the global log.
//!
//! It owns these routes' handlers. It must never check a token or a stream
//! prefix itself (it asks `auth`), nor return more than `max_response_bytes`
//! of events in one answer.

use std::ops::ControlFlow;
use std::time::Instant;

use annal::{
    AppendCondition, Direction, Filter, GroupBy, LogFrom, Query, QueryItem, StreamFrom, StreamMetadata, TopicPattern,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::encode::{
    EventIn, EventOut, JsonBody, Params, bounded_events_body, check_stream, check_writable_stream, decode_base64,
    embedded_json, encode_base64, expected_from_json, expected_from_str, json_bytes, parse_time,
};
use super::error::ApiError;
use crate::auth::{Need, Principal};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendBody {
    #[serde(default)]
    expected: Option<Value>,
    events: Vec<EventIn>,
}

pub(crate) async fn append(
    State(state): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
    JsonBody(body): JsonBody<AppendBody>,
) -> Result<Response, ApiError> {
    check_writable_stream(&stream)?;
    p.authorize(Need::Write(&stream))?;
    let expected = expected_from_json(body.expected.as_ref())?;
    do_append(state, &p, stream, expected, body.events, None, None).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConditionalBody {
    stream: String,
    #[serde(default)]
    expected: Option<Value>,
    events: Vec<EventIn>,
    #[serde(default)]
    condition: Option<ConditionIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionIn {
    query: QueryIn,
    #[serde(default)]
    after: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryIn {
    #[serde(default)]
    types: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    items: Option<Vec<ItemIn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemIn {
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    type_patterns: Vec<String>,
    /// Metadata fields: top-level key to the string it must hold.
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

impl ItemIn {
    fn into_item(self) -> QueryItem {
        QueryItem {
            types: self.types,
            tags: self.tags,
            type_patterns: self.type_patterns.iter().map(|p| TopicPattern::new(p)).collect(),
            metadata: self.metadata.into_iter().collect(),
        }
    }
}

impl QueryIn {
    fn into_query(self) -> Result<Query, ApiError> {
        match (self.items, self.types, self.tags) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ApiError::invalid(
                "a query has either items, or types and tags, not both",
            )),
            (Some(items), None, None) => Ok(Query {
                items: items.into_iter().map(ItemIn::into_item).collect(),
            }),
            (None, types, tags) => Ok(Query {
                items: vec![QueryItem {
                    types: types.unwrap_or_default(),
                    tags: tags.unwrap_or_default(),
                    ..QueryItem::default()
                }],
            }),
        }
    }
}

pub(crate) async fn append_conditional(
    State(state): State<AppState>,
    p: Principal,
    JsonBody(body): JsonBody<ConditionalBody>,
) -> Result<Response, ApiError> {
    check_writable_stream(&body.stream)?;
    p.authorize(Need::Write(&body.stream))?;
    let expected = expected_from_json(body.expected.as_ref())?;
    let condition = match body.condition {
        Some(c) => {
            p.authorize(Need::Condition)?;
            Some(AppendCondition {
                query: c.query.into_query()?,
                after: c.after,
            })
        }
        None => None,
    };
    // A condition on a metadata field the store does not index is checked
    // by reading the log after `after` (all of it, without): it takes a
    // place, held until the append's store work ends.
    let place = match &condition {
        Some(c)
            if c.query
                .items
                .iter()
                .any(|i| i.as_filter().needs_scan(state.store.indexed_metadata())) =>
        {
            Some(state.scan_place(&p)?)
        }
        _ => None,
    };
    do_append(state, &p, body.stream, expected, body.events, condition, place).await
}

async fn do_append(
    state: AppState,
    p: &Principal,
    stream: String,
    expected: annal::ExpectedVersion,
    events: Vec<EventIn>,
    condition: Option<AppendCondition>,
    place: Option<super::ScanPlace>,
) -> Result<Response, ApiError> {
    let max = state.config.max_events_per_append;
    if events.len() > max {
        return Err(ApiError::bad_request(
            "too_many_events",
            format!("{} events in one request; at most {max}", events.len()),
        ));
    }
    let events = events
        .into_iter()
        .map(EventIn::into_event)
        .collect::<Result<Vec<_>, _>>()?;
    let count = events.len() as u64;
    let bytes: u64 = events.iter().map(|e| (e.data.len() + e.metadata.len()) as u64).sum();
    let store = state.store();
    let st = state.clone();
    let sees_damage = p.sees_damage();
    let result = state
        .blocking(move || {
            let _place = place;
            let t = Instant::now();
            let r = match condition {
                Some(c) => store.append_if(&stream, expected, events, c),
                None => store.append(&stream, expected, events),
            };
            if r.is_ok() {
                use std::sync::atomic::Ordering::Relaxed;
                st.metrics.append_seconds.observe(t.elapsed());
                st.metrics.appends.fetch_add(1, Relaxed);
                st.metrics.events_appended.fetch_add(count, Relaxed);
                st.metrics.append_bytes.fetch_add(bytes, Relaxed);
            }
            match r {
                Err(e) if !sees_damage => Err(super::error::without_place(e)),
                r => Ok(r?),
            }
        })
        .await?;
    Ok(axum::Json(json!({
        "first_revision": result.first_revision,
        "next_expected_version": result.next_expected_version,
        "position": result.position,
    }))
    .into_response())
}

fn direction(params: &Params) -> Result<Direction, ApiError> {
    match params.one("direction")? {
        None | Some("forward") => Ok(Direction::Forward),
        Some("backward") => Ok(Direction::Backward),
        Some(d) => Err(ApiError::bad_request(
            "invalid_query",
            format!("direction={d:?} is not forward or backward"),
        )),
    }
}

/// The revision or position after `at` in a read's direction, if there is one.
fn step(direction: Direction, at: u64) -> Option<u64> {
    match direction {
        Direction::Forward => at.checked_add(1),
        Direction::Backward => at.checked_sub(1),
    }
}

fn limit(state: &AppState, params: &Params) -> Result<usize, ApiError> {
    let max = state.config.max_read_limit;
    match params.u64("limit")? {
        None => Ok(state.config.default_read_limit),
        Some(n) if n as usize > max || n == 0 => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit={n} is not between 1 and {max}"),
        )),
        Some(n) => Ok(n as usize),
    }
}

/// `from`: a number, `start` or `end`.
enum From {
    Start,
    End,
    At(u64),
}

fn from(params: &Params) -> Result<From, ApiError> {
    match params.one("from")? {
        None | Some("start") => Ok(From::Start),
        Some("end") => Ok(From::End),
        Some(v) => v
            .parse::<u64>()
            .map(From::At)
            .map_err(|_| ApiError::bad_request("invalid_query", format!("from={v:?} is not start, end or a number"))),
    }
}

pub(crate) async fn read(
    State(state): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    check_stream(&stream)?;
    p.authorize(Need::Read(&stream))?;
    let params = Params::parse(q.as_deref(), &["from", "direction", "limit"])?;
    let direction = direction(&params)?;
    let limit = limit(&state, &params)?;
    let from = match from(&params)? {
        From::Start => StreamFrom::Start,
        From::End => StreamFrom::End,
        From::At(r) => StreamFrom::Revision(r),
    };
    let st = state.clone();
    let max_bytes = state.config.max_response_bytes;
    let body = state
        .blocking(move || {
            let t = Instant::now();
            // Each read stops at the room left, so pages are sized by the
            // events' actual sizes (not by the largest event there may be).
            let read = |at: Option<u64>, n, room| {
                st.metrics.count_store_read();
                let from = at.map_or(from, StreamFrom::Revision);
                Ok(st.store.read_stream_within(&stream, direction, from, n, room)?)
            };
            let next = |e: &annal::RecordedEvent| step(direction, e.revision);
            let body = bounded_events_body(limit, max_bytes, None, read, next);
            st.metrics.read_seconds.observe(t.elapsed());
            body
        })
        .await?;
    Ok(json_bytes(body))
}

pub(crate) async fn read_all(
    State(state): State<AppState>,
    p: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let allowed: Vec<&str> = ["from", "direction", "limit"]
        .into_iter()
        .chain(FILTER_PARAMS.iter().copied())
        .collect();
    let params = Params::parse_with(q.as_deref(), &allowed, &[METADATA_PARAM])?;
    let filter = filter(&params)?;
    p.authorize(Need::ReadLog(filter.stream_prefix.as_deref()))?;
    let direction = direction(&params)?;
    let limit = limit(&state, &params)?;
    let from = match from(&params)? {
        From::Start => LogFrom::Start,
        From::End => LogFrom::End,
        From::At(r) => LogFrom::Position(r),
    };
    // A read whose filter the indexes cannot serve may scan much of the log:
    // it takes a place (index-served reads do not), which the handler holds,
    // and the read stops as soon as the handler gives up (the request timeout).
    let _place = if filter.needs_scan(state.store.indexed_metadata()) {
        Some(state.scan_place(&p)?)
    } else {
        None
    };
    let (cancel, _cancel_on_drop) = state.read_cancel();
    let st = state.clone();
    let max_bytes = state.config.max_response_bytes;
    let body = state
        .blocking(move || {
            let t = Instant::now();
            let read = |at: Option<u64>, n, room| {
                st.metrics.count_store_read();
                let from = at.map_or(from, LogFrom::Position);
                Ok(st
                    .store
                    .read_all_cancellable(direction, from, n, &filter, room, &cancel)?)
            };
            let next = |e: &annal::RecordedEvent| step(direction, e.position);
            let body = bounded_events_body(limit, max_bytes, None, read, next);
            st.metrics.read_seconds.observe(t.elapsed());
            body
        })
        .await?;
    Ok(json_bytes(body))
}

/// The query parameters of a filter on the global log (besides `metadata.<key>`).
pub(crate) const FILTER_PARAMS: &[&str] = &[
    "type",
    "tag",
    "stream_prefix",
    "since",
    "until",
    "type_pattern",
    "stream_pattern",
    "aggregate_type",
    "aggregate_id",
];

/// The prefix of the metadata-field parameters: `metadata.actor=agent-7`.
pub(crate) const METADATA_PARAM: &str = "metadata.";

/// The filter of `/all`, `/count` and `/subscribe/all`: `type`, `tag`,
/// `type_pattern`, `stream_pattern` and `metadata.<key>` repeat, the rest once.
pub(crate) fn filter(params: &Params) -> Result<Filter, ApiError> {
    let since = params.one("since")?.map(|s| parse_time("since", s)).transpose()?;
    let until = params.one("until")?.map(|s| parse_time("until", s)).transpose()?;
    Ok(Filter {
        types: params.all("type"),
        tags: params.all("tag"),
        stream_prefix: params.one("stream_prefix")?.map(str::to_string),
        since_micros: since,
        until_micros: until,
        type_patterns: params
            .all("type_pattern")
            .iter()
            .map(|p| TopicPattern::new(p))
            .collect(),
        stream_patterns: params
            .all("stream_pattern")
            .iter()
            .map(|p| TopicPattern::new(p))
            .collect(),
        aggregate_type: params.one("aggregate_type")?.map(str::to_string),
        aggregate_id: params.one("aggregate_id")?.map(str::to_string),
        metadata: params.prefixed(METADATA_PARAM),
        ..Filter::default()
    })
}

/// `GET /count`: how many events of the global log pass the filter, as
/// `{"count": N}`; with `group_by=type|stream|category|day`, also `"groups"`.
pub(crate) async fn count(
    State(state): State<AppState>,
    p: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let allowed: Vec<&str> = std::iter::once("group_by")
        .chain(FILTER_PARAMS.iter().copied())
        .collect();
    let params = Params::parse_with(q.as_deref(), &allowed, &[METADATA_PARAM])?;
    let filter = filter(&params)?;
    p.authorize(Need::ReadLog(filter.stream_prefix.as_deref()))?;
    let group_by = params
        .one("group_by")?
        .map(|g| g.parse::<GroupBy>())
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let groups_body = |groups: std::collections::BTreeMap<String, u64>| json!({ "count": groups.values().sum::<u64>(), "groups": groups });
    // The count of everything comes from the index headers, in a time that
    // does not grow with the log: it takes no place.
    if filter.is_empty() && group_by.is_none() {
        let st = state.clone();
        let from_headers = state
            .blocking(move || {
                let t = Instant::now();
                let body = st
                    .store
                    .count_from_indexes(&Filter::all())?
                    .map(|n| json!({ "count": n }));
                if body.is_some() {
                    st.metrics.read_seconds.observe(t.elapsed());
                }
                Ok(body)
            })
            .await?;
        if let Some(body) = from_headers {
            return Ok(axum::Json(body).into_response());
        }
    }
    // Any other count walks indexes in proportion to the streams or types it
    // admits, or reads events: it takes a place, held by the handler, and
    // stops as soon as the handler gives up (indexes are tried first).
    let _place = state.scan_place(&p)?;
    let (cancel, _cancel_on_drop) = state.read_cancel();
    let st = state.clone();
    let body = state
        .blocking(move || {
            let t = Instant::now();
            let body = match group_by {
                None => json!({ "count": st.store.count_cancellable(&filter, &cancel)? }),
                Some(by) => groups_body(st.store.count_by_cancellable(&filter, by, &cancel)?),
            };
            st.metrics.read_seconds.observe(t.elapsed());
            Ok(body)
        })
        .await?;
    Ok(axum::Json(body).into_response())
}

pub(crate) async fn event_by_id(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ApiError::invalid(format!("{id:?} is not a UUID")))?;
    let st = state.clone();
    let event = state
        .blocking(move || {
            let t = Instant::now();
            // An event in a stream the token may not read is answered as
            // unknown, so that the answer says nothing about other streams:
            // not even that its personal fields cannot be opened.
            // A frame that fails its checksum cannot tell its stream: its
            // damage is told to a limited token without its place.
            let e = match st.store.event_by_id_where(id, |stream| p.permits(Need::Read(stream))) {
                Err(e) if !p.sees_damage() => return Err(super::error::without_place(e)),
                e => e?,
            };
            st.metrics.read_seconds.observe(t.elapsed());
            Ok(e)
        })
        .await?
        .ok_or_else(|| ApiError::not_found("event_not_found", format!("no event has id {id}")))?;
    let body = serde_json::to_vec(&EventOut::new(&event)).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json_bytes(body))
}

/// Streams `GET /streams` lists when no `limit` is given.
const DEFAULT_LIST_LIMIT: usize = 1000;
/// Most streams one `GET /streams` lists.
const MAX_LIST_LIMIT: usize = 10_000;

/// Names one `GET /streams` page passes over at most, per stream it may
/// list (at least [`MIN_EXAMINED`]).
const EXAMINED_PER_LISTED: usize = 16;
/// Names any `GET /streams` page may pass over.
const MIN_EXAMINED: usize = 4096;

/// `GET /streams`: the streams by name after `after`, at most `limit`; when
/// more may follow, `next` is the `after` of the next page and `truncated`
/// is true. A page passes over at most `16 × limit` names (4096 at least),
/// and only names under the query's prefix (a category's is `<category>-`)
/// that the token may read: when the names it passes over do not match
/// (`include_system`, `category`), it ends early, with fewer streams, even
/// none, and a `next` to go on from.
pub(crate) async fn list(
    State(state): State<AppState>,
    p: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(
        q.as_deref(),
        &["prefix", "include_system", "category", "after", "limit"],
    )?;
    let prefix = params.one("prefix")?.unwrap_or("").to_string();
    // `category=order`: the aggregates of that type (`order-<id>`, split at the first `-`).
    let category = params.one("category")?.map(str::to_string);
    let system = params.bool("include_system")?.unwrap_or(false);
    let after = params.one("after")?.map(str::to_string);
    let limit = match params.u64("limit")? {
        None => DEFAULT_LIST_LIMIT,
        Some(n) if n == 0 || n > MAX_LIST_LIMIT as u64 => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit={n} is not between 1 and {MAX_LIST_LIMIT}"),
            ));
        }
        Some(n) => n as usize,
    };
    let store = state.store();
    let body = state
        .blocking(move || {
            let keep = |name: &str| {
                name.starts_with(&prefix)
                    && (system || !name.starts_with('$'))
                    && category
                        .as_deref()
                        .is_none_or(|c| annal::query::aggregate_of(name).is_some_and(|(t, _)| t == c))
                    && p.permits(Need::Read(name))
            };
            // Names outside the prefix (a category's is `<category>-`) and
            // outside the token's prefixes are never passed over.
            let start = match (&category, prefix.is_empty()) {
                (Some(c), true) => format!("{c}-"),
                _ => prefix.clone(),
            };
            let ranges = p.readable_within(&start);
            let ranges: Vec<&str> = ranges.iter().map(String::as_str).collect();
            let budget = limit.saturating_mul(EXAMINED_PER_LISTED).max(MIN_EXAMINED);
            let (mut page, mut next, mut examined) = (Vec::new(), None, 0usize);
            store.visit_stream_names(after.as_deref(), &ranges, |name| {
                examined += 1;
                if keep(name) {
                    if page.len() == limit {
                        next = page.last().cloned();
                        return ControlFlow::Break(());
                    }
                    page.push(name.to_string());
                }
                if examined >= budget {
                    // A name the token may read (it is within its prefixes).
                    next = Some(name.to_string());
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
            let list: Vec<Value> = page
                .iter()
                .filter_map(|name| store.stream_info(name))
                .map(|s| {
                    json!({
                        "stream": s.name,
                        "last_revision": s.last_revision,
                        "last_position": s.last_position,
                    })
                })
                .collect();
            let mut body = json!({ "streams": list });
            if let Some(next) = next {
                body["next"] = json!(next);
                body["truncated"] = json!(true);
            }
            Ok(body)
        })
        .await?;
    Ok(axum::Json(body).into_response())
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    check_writable_stream(&stream)?;
    p.authorize(Need::Write(&stream))?;
    let params = Params::parse(q.as_deref(), &["expected", "hard"])?;
    let expected = match params.one("expected")? {
        Some(e) => expected_from_str(e)?,
        None => annal::ExpectedVersion::Any,
    };
    let hard = params.bool("hard")?.unwrap_or(false);
    let store = state.store();
    state
        .blocking(move || Ok(store.delete_stream(&stream, expected, hard)?))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn get_metadata(
    State(state): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
) -> Result<Response, ApiError> {
    check_stream(&stream)?;
    p.authorize(Need::Read(&stream))?;
    let store = state.store();
    let (meta, revision) = state
        .blocking(move || match store.stream_metadata_with_revision(&stream) {
            (Some(m), r) => Ok((m, r)),
            (None, r) if store.stream_info(&stream).is_some() => Ok((StreamMetadata::default(), r)),
            (None, _) => Err(annal::Error::StreamNotFound(stream).into()),
        })
        .await?;
    Ok(with_metadata_etag(axum::Json(meta).into_response(), revision))
}

/// The metadata's version as an `ETag`: the revision of the record that set it,
/// or `no-stream` when none was written. A client sends it back as
/// `PUT …/metadata?expected=` to write only over what it read.
fn with_metadata_etag(mut resp: Response, revision: Option<u64>) -> Response {
    let tag = revision.map_or_else(|| "\"no-stream\"".to_string(), |r| format!("\"{r}\""));
    if let Ok(v) = axum::http::HeaderValue::from_str(&tag) {
        resp.headers_mut().insert(axum::http::header::ETAG, v);
    }
    resp
}

pub(crate) async fn put_metadata(
    State(state): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
    RawQuery(q): RawQuery,
    JsonBody(meta): JsonBody<StreamMetadata>,
) -> Result<Response, ApiError> {
    check_writable_stream(&stream)?;
    p.authorize(Need::Write(&stream))?;
    let params = Params::parse(q.as_deref(), &["expected"])?;
    let expected = match params.one("expected")? {
        Some(e) => expected_from_str(e)?,
        None => annal::ExpectedVersion::Any,
    };
    let store = state.store();
    let stored = meta.clone();
    let r = state
        .blocking(move || Ok(store.set_stream_metadata_expected(&stream, expected, meta)?))
        .await?;
    Ok(with_metadata_etag(
        axum::Json(stored).into_response(),
        Some(r.next_expected_version),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotIn {
    revision: u64,
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    data_base64: Option<String>,
}

pub(crate) async fn post_snapshot(
    State(state): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
    JsonBody(body): JsonBody<SnapshotIn>,
) -> Result<Response, ApiError> {
    check_writable_stream(&stream)?;
    p.authorize(Need::Write(&stream))?;
    let data = match (body.data, body.data_base64) {
        (Some(raw), None) => embedded_json("data", &raw)?,
        (None, Some(b)) => decode_base64("data_base64", &b)?,
        _ => return Err(ApiError::invalid("a snapshot has exactly one of data and data_base64")),
    };
    let store = state.store();
    let revision = body.revision;
    let r = state
        .blocking(move || Ok(store.save_snapshot(&stream, revision, data)?))
        .await?;
    Ok(axum::Json(json!({ "revision": revision, "position": r.position })).into_response())
}

pub(crate) async fn get_snapshot(
    State(state): State<AppState>,
    p: Principal,
    Path(stream): Path<String>,
) -> Result<Response, ApiError> {
    check_stream(&stream)?;
    p.authorize(Need::Read(&stream))?;
    let store = state.store();
    let name = stream.clone();
    let snap = state
        .blocking(move || Ok(store.load_snapshot(&name)?))
        .await?
        .ok_or_else(|| ApiError::not_found("snapshot_not_found", format!("stream {stream:?} has no snapshot")))?;
    let embeddable = crate::nesting::json_depth(&snap.data) <= crate::nesting::MAX_JSON_DEPTH;
    let body = match serde_json::from_slice::<&serde_json::value::RawValue>(&snap.data) {
        Ok(raw) if embeddable => json!({ "revision": snap.revision, "data": raw }),
        _ => json!({ "revision": snap.revision, "data_base64": encode_base64(&snap.data) }),
    };
    Ok(axum::Json(body).into_response())
}
