//! JSON shapes of events going in and out, request bodies, query strings and times.
//!
//! It owns how HTTP spells things (JSON, base64, RFC 3339, query parameters).
//! It must never make a rule of its own about what the store accepts: stream
//! names are checked by the library, and nesting by the shared `nesting`.

use annal::{ContentType, EventData, ExpectedVersion, RecordedEvent};
use axum::extract::{FromRequest, Request};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::error::{ApiError, json_error};
use crate::nesting::{MAX_JSON_DEPTH, check_json_depth, json_depth};

/// An event as the API returns it.
#[derive(Serialize)]
pub(crate) struct EventOut<'a> {
    stream: &'a str,
    revision: u64,
    position: u64,
    id: Uuid,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    #[serde(skip_serializing_if = "Payload::is_base64")]
    data: Payload<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    #[serde(skip_serializing_if = "Payload::is_base64")]
    metadata: Payload<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_base64: Option<String>,
    tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    erased: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_count: Option<u32>,
}

/// Data or metadata: embedded JSON, null (empty), or only in the `_base64` field.
enum Payload<'a> {
    Json(&'a RawValue),
    Null,
    Base64,
}

impl Payload<'_> {
    fn is_base64(&self) -> bool {
        matches!(self, Payload::Base64)
    }
}

impl Serialize for Payload<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::Json(raw) => raw.serialize(s),
            _ => s.serialize_none(),
        }
    }
}

/// Splits bytes into the embedded JSON or the base64 form.
fn payload(bytes: &[u8], json: bool) -> (Payload<'_>, Option<String>) {
    if bytes.is_empty() && json {
        return (Payload::Null, None);
    }
    // Too deep for common parsers (the store may hold such data from before
    // the limit): base64 keeps the response parseable.
    // JSON that strict parsers refuse (a lone surrogate escape, a number out
    // of range; stored by the library, an import or a gRPC client, or
    // before appends were checked) goes out as base64 too: embedded, it
    // would break the whole answer for them.
    if json
        && json_depth(bytes) <= MAX_JSON_DEPTH
        && let Ok(raw) = serde_json::from_slice::<&RawValue>(bytes)
        && (!annal::may_need_strict_check(bytes) || annal::is_strict_json(bytes))
    {
        return (Payload::Json(raw), None);
    }
    (Payload::Base64, Some(B64.encode(bytes)))
}

impl<'a> EventOut<'a> {
    pub(crate) fn new(e: &'a RecordedEvent) -> Self {
        let (data, data_base64) = payload(&e.data, e.content_type == ContentType::Json);
        let (metadata, metadata_base64) = payload(&e.metadata, true);
        EventOut {
            stream: &e.stream,
            revision: e.revision,
            position: e.position,
            id: e.id,
            event_type: &e.event_type,
            timestamp: format_micros(e.timestamp_micros),
            data,
            data_base64,
            metadata,
            metadata_base64,
            tags: &e.tags,
            subject: e.subject(),
            erased: e.is_erased(),
            retry_count: None,
        }
    }

    pub(crate) fn with_retry_count(mut self, n: u32) -> Self {
        self.retry_count = Some(n);
        self
    }
}

/// Events read in one go while building a bounded response: at first, and at
/// most (later reads take about as many as the room left holds, going by the
/// size of the events so far, so that little more is read than is sent).
const FIRST_CHUNK: usize = 8;
const MAX_CHUNK: usize = 64;

/// `{"events": [...]}` of up to `limit` events, fetched in chunks by `read`
/// (given where to start, `None` for the first chunk, and how many), holding
/// at most `max_bytes` unless one event alone is larger: a response always
/// has at least one event if there is one. Cut short by the size, the body
/// also holds `"truncated": true` and `"next_from"`, the `from` of the next
/// page (`next` of the last event sent). What is read for one response stays
/// within about twice `max_bytes` whatever the sizes of the events: each read
/// is given the room left in bytes, and either returns about that much data
/// at most (one event more), or, for a reader that cannot stop at a size,
/// `max_event` (the largest event there may be) caps how many it is asked for.
pub(crate) fn bounded_events_body(
    limit: usize,
    max_bytes: usize,
    max_event: Option<usize>,
    mut read: impl FnMut(Option<u64>, usize, usize) -> Result<Vec<RecordedEvent>, ApiError>,
    next: impl Fn(&RecordedEvent) -> Option<u64>,
) -> Result<Vec<u8>, ApiError> {
    // Room for the closing `],"truncated":true,"next_from":<u64>}`.
    const TAIL: usize = 64;
    let mut body = b"{\"events\":[".to_vec();
    let (mut count, mut cursor, mut next_from) = (0usize, None, None);
    'chunks: while count < limit {
        let want = match body.len().checked_div(count) {
            None => FIRST_CHUNK,
            Some(average) => (max_bytes.saturating_sub(body.len() + TAIL) / average.max(1) + 1).min(MAX_CHUNK),
        }
        .min(limit - count);
        let room = max_bytes.saturating_sub(body.len() + TAIL).max(1);
        let want = match max_event {
            Some(m) => want.min((room.saturating_add(max_bytes) / m.max(1)).max(1)),
            None => want,
        };
        let events = read(cursor, want, room)?;
        let got = events.len();
        // Fewer than asked for and within the room: the end of what there is.
        let at_end = got < want && events.iter().map(|e| e.data.len() + e.metadata.len()).sum::<usize>() < room;
        for e in &events {
            let item = serde_json::to_vec(&EventOut::new(e)).map_err(|e| ApiError::internal(e.to_string()))?;
            if count > 0 && body.len() + 1 + item.len() + TAIL > max_bytes {
                next_from = cursor;
                break 'chunks;
            }
            if count > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&item);
            count += 1;
            cursor = next(e);
        }
        if at_end || cursor.is_none() {
            break;
        }
    }
    body.push(b']');
    if let Some(n) = next_from {
        body.extend_from_slice(format!(",\"truncated\":true,\"next_from\":{n}").as_bytes());
    } else if count == limit
        && let Some(n) = cursor
    {
        // A full page: more may follow, from here.
        body.extend_from_slice(format!(",\"next_from\":{n}").as_bytes());
    }
    body.push(b'}');
    Ok(body)
}

/// A JSON response from already-serialised bytes.
pub(crate) fn json_bytes(body: Vec<u8>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An event as a client sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventIn {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
    #[serde(default)]
    metadata_base64: Option<String>,
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    erased: bool,
}

impl EventIn {
    /// The event to append, and its payload size (data plus metadata).
    pub(crate) fn into_event(self) -> Result<EventData, ApiError> {
        let (content_type, data) = match (self.data, self.data_base64) {
            (Some(_), Some(_)) => return Err(ApiError::invalid("an event has both data and data_base64")),
            (Some(raw), None) => (ContentType::Json, embedded_json("data", &raw)?),
            (None, Some(b)) => (ContentType::Binary, decode_base64("data_base64", &b)?),
            (None, None) => (ContentType::Json, Bytes::new()),
        };
        let metadata = match (self.metadata, self.metadata_base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("an event has both metadata and metadata_base64"));
            }
            (Some(raw), None) => embedded_json("metadata", &raw)?,
            (None, Some(b)) => decode_base64("metadata_base64", &b)?,
            (None, None) => Bytes::new(),
        };
        Ok(EventData {
            id: self.id,
            event_type: self.event_type,
            content_type,
            data,
            metadata,
            tags: self.tags,
            subject: self.subject,
            erased: self.erased,
        })
    }
}

/// The bytes of JSON given in a request (event data or metadata, a
/// snapshot), checked against the nesting limit.
pub(crate) fn embedded_json(what: &str, raw: &RawValue) -> Result<Bytes, ApiError> {
    check_json_depth(what, raw.get().as_bytes()).map_err(ApiError::invalid)?;
    // What strict readers refuse would break every answer that holds it.
    if !annal::is_strict_json(raw.get().as_bytes()) {
        return Err(ApiError::invalid(format!(
            "{what} is JSON that strict parsers refuse (a lone UTF-16 surrogate escape such as \\ud800, \
             or a number out of range such as 1e999); send it as base64 instead"
        )));
    }
    Ok(Bytes::from(raw.get().as_bytes().to_vec()))
}

pub(crate) fn decode_base64(field: &str, s: &str) -> Result<Bytes, ApiError> {
    B64.decode(s)
        .map(Bytes::from)
        .map_err(|e| ApiError::invalid(format!("{field} is not valid base64: {e}")))
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Parses an expected version given as JSON (a string or a number).
pub(crate) fn expected_from_json(v: Option<&Value>) -> Result<ExpectedVersion, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(ExpectedVersion::Any),
        Some(v @ Value::Number(n)) => n.as_u64().map(ExpectedVersion::Exact).ok_or_else(|| bad_expected(v)),
        Some(Value::String(s)) => expected_from_str(s),
        Some(other) => Err(bad_expected(other)),
    }
}

/// Parses an expected version given as text.
pub(crate) fn expected_from_str(s: &str) -> Result<ExpectedVersion, ApiError> {
    s.parse::<ExpectedVersion>()
        .map_err(|_| bad_expected(&Value::String(s.to_string())))
}

/// The error for an expected version given as `v` (shown as JSON).
fn bad_expected(v: &Value) -> ApiError {
    ApiError::bad_request(
        "invalid_expected_version",
        format!("expected version {v} is not \"any\", \"no-stream\", \"exists\" or a revision"),
    )
}

/// A JSON request body: malformed JSON and wrong shapes become 400s, too large a body 413.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(rej.status(), "payload_too_large", rej.body_text())
            } else {
                ApiError::new(rej.status(), "invalid_body", rej.body_text())
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(json_error)
    }
}

/// The parameters of a query string, checked against the accepted names.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        Self::parse_with(query, allowed, &[])
    }

    /// [`Params::parse`] that also accepts every key starting with one of `prefixes`.
    pub(crate) fn parse_with(query: Option<&str>, allowed: &[&str], prefixes: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let known = |k: &str| allowed.contains(&k) || prefixes.iter().any(|p| k.starts_with(p) && k.len() > p.len());
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !known(k)) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("unknown query parameter {k:?}; accepted: {}", allowed.join(", ")),
            ));
        }
        Ok(Params(pairs))
    }

    /// The value of a parameter given at most once.
    pub(crate) fn one(&self, key: &str) -> Result<Option<&str>, ApiError> {
        let mut it = self.0.iter().filter(|(k, _)| k == key);
        let first = it.next().map(|(_, v)| v.as_str());
        if it.next().is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("query parameter {key:?} is given more than once"),
            ));
        }
        Ok(first)
    }

    /// Every `(rest, value)` of the parameters whose key is `prefix` + `rest`.
    pub(crate) fn prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest.to_string(), v.clone())))
            .collect()
    }

    /// Every value of a repeatable parameter.
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(crate) fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.one(key)?
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request("invalid_query", format!("{key}={v:?} is not a non-negative integer"))
                })
            })
            .transpose()
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.one(key)?
            .map(|v| match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::bad_request(
                    "invalid_query",
                    format!("{key}={v:?} is not true or false"),
                )),
            })
            .transpose()
    }
}

/// Formats microseconds since the Unix epoch as RFC 3339 UTC with microseconds.
pub(crate) fn format_micros(micros: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| micros.to_string())
}

/// Parses an RFC 3339 time into microseconds since the Unix epoch.
pub(crate) fn parse_time(key: &str, s: &str) -> Result<i64, ApiError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("{key}={s:?} is not an RFC 3339 time: {e}")))?;
    Ok((t.unix_timestamp_nanos() / 1000) as i64)
}

/// Checks a stream name from a path or body with the library's rule
/// ([`annal::event::check_stream_name`]: non-empty, bounded, no control
/// characters), answering its reason alone as a 400 `invalid_input`.
pub(crate) fn check_stream(stream: &str) -> Result<(), ApiError> {
    annal::event::check_stream_name(stream).map_err(|e| match e {
        annal::Error::InvalidInput(reason) => ApiError::invalid(reason),
        other => other.into(),
    })
}

/// Checks a stream name a request writes to (appends, deletes, metadata,
/// snapshots): also not a system stream (`$`-prefixed), which only the store
/// itself creates and writes.
pub(crate) fn check_writable_stream(stream: &str) -> Result<(), ApiError> {
    check_stream(stream)?;
    if stream.starts_with('$') {
        return Err(ApiError::invalid(format!(
            "stream {stream:?} starts with $: names starting with $ are reserved for system streams"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_checked_by_the_library_rule_with_its_reason() {
        let message = |r: Result<(), ApiError>| {
            let e = r.unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "invalid_input"));
            e.message
        };
        assert_eq!(message(check_stream("")), "stream name is empty");
        assert_eq!(
            message(check_stream(&"x".repeat(annal::event::MAX_STREAM_NAME + 1))),
            format!(
                "stream name is {} bytes long; at most {}",
                annal::event::MAX_STREAM_NAME + 1,
                annal::event::MAX_STREAM_NAME
            )
        );
        assert_eq!(
            message(check_stream("a\nb")),
            "stream name contains a control character"
        );
        assert!(check_stream("$all").is_ok());
        assert!(message(check_writable_stream("$all")).contains("reserved for system streams"));
        assert!(check_writable_stream("orders-1").is_ok());
    }

    #[test]
    fn times_format_and_parse() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(
            parse_time("since", "2023-11-14T22:13:20.123456Z").unwrap(),
            1_700_000_000_123_456
        );
        assert_eq!(
            parse_time("since", "2023-11-14T23:13:20.123456+01:00").unwrap(),
            1_700_000_000_123_456
        );
        assert!(parse_time("since", "yesterday").is_err());
    }

    #[test]
    fn payloads_embed_json_or_fall_back_to_base64() {
        assert!(matches!(payload(b"", true).0, Payload::Null));
        assert!(matches!(payload(b" {\"a\":1}", true).0, Payload::Json(_)));
        let (p, b) = payload(b"\xff\x00", true);
        assert!(p.is_base64());
        assert_eq!(b.as_deref(), Some("/wA="));
        assert!(payload(b"{}", false).0.is_base64());
        // Stored without the append's check: what strict parsers refuse goes out as base64.
        for bad in [&br#"{"s":"\ud800"}"#[..], br#"{"n":1e999}"#] {
            let (p, b) = payload(bad, true);
            assert!(p.is_base64(), "{}", String::from_utf8_lossy(bad));
            assert!(b.is_some());
        }
        assert!(matches!(
            payload(br#"{"n":1e5,"s":"\u00e9"}"#, true).0,
            Payload::Json(_)
        ));
    }

    /// `n` events of `size` bytes of data at positions 0.., read forward.
    fn log(n: u64, size: usize) -> Vec<RecordedEvent> {
        (0..n)
            .map(|p| RecordedEvent {
                stream: "s".into(),
                revision: p,
                position: p,
                id: Uuid::nil(),
                event_type: "T".into(),
                content_type: ContentType::Binary,
                data: Bytes::from(vec![b'x'; size]),
                metadata: Bytes::new(),
                tags: Vec::new(),
                timestamp_micros: 0,
                personal: annal::Personal::Plain,
            })
            .collect()
    }

    /// The events, up to the first that brings their data to `room` bytes
    /// (as `Store::read_all_within` reads).
    fn within<'a>(events: impl Iterator<Item = &'a RecordedEvent>, room: usize) -> Vec<RecordedEvent> {
        let mut bytes = 0;
        let mut out = Vec::new();
        for e in events {
            if bytes >= room {
                break;
            }
            bytes += e.data.len();
            out.push(e.clone());
        }
        out
    }

    /// Builds a bounded body over `events`; also the number of events read from them.
    fn page(events: &[RecordedEvent], limit: usize, max: usize) -> (Value, usize) {
        let mut read_total = 0;
        let body = bounded_events_body(
            limit,
            max,
            None,
            |at, n, room| {
                let from = at.unwrap_or(0) as usize;
                let chunk = within(events.iter().skip(from).take(n), room);
                read_total += chunk.len();
                Ok(chunk)
            },
            |e| e.position.checked_add(1),
        )
        .unwrap();
        assert!(
            body.len() <= max
                || serde_json::from_slice::<Value>(&body).unwrap()["events"]
                    .as_array()
                    .unwrap()
                    .len()
                    == 1
        );
        (serde_json::from_slice(&body).unwrap(), read_total)
    }

    #[test]
    fn bounded_bodies_stop_at_the_size_and_say_where_to_go_on() {
        let events = log(200, 1000);
        // Small: the limit in events decides; not truncated, but a full page
        // says where the next one starts.
        let (v, _) = page(&events, 10, 1 << 20);
        assert_eq!(v["events"].as_array().unwrap().len(), 10);
        assert_eq!(v.get("truncated"), None);
        assert_eq!(v["next_from"], 10);
        // The size decides: about 1,400 bytes an event (base64 data), so 7 in 10,000.
        let (v, read) = page(&events, 200, 10_000);
        let n = v["events"].as_array().unwrap().len();
        assert!((5..=7).contains(&n), "{n}");
        assert_eq!(
            (v["truncated"].clone(), v["next_from"].clone()),
            (serde_json::json!(true), serde_json::json!(n))
        );
        // Reads adapt to the room left: not many more events read than sent.
        assert!(read <= n + FIRST_CHUNK, "{read} read for {n} sent");
        // One event larger than the limit comes alone.
        let (v, _) = page(&log(3, 50_000), 10, 10_000);
        assert_eq!(v["events"].as_array().unwrap().len(), 1);
        assert_eq!(v["next_from"], 1);
        // The end of the log: everything, not truncated.
        let (v, _) = page(&log(3, 10), 10, 10_000);
        assert_eq!(v["events"].as_array().unwrap().len(), 3);
        assert!(v.get("truncated").is_none());
    }

    /// Large events after small ones are not read many at a time: what one
    /// response reads stays within about twice its byte budget (and one event).
    #[test]
    fn bounded_bodies_read_little_more_than_they_send() {
        let mut events = log(50, 10);
        events.extend(log(200, 100_000).into_iter().map(|mut e| {
            e.position += 50;
            e.revision += 50;
            e
        }));
        let max = 1_000_000;
        let mut read_bytes = 0;
        let mut largest = 0;
        let body = bounded_events_body(
            1000,
            max,
            None,
            |at, n, room| {
                let from = at.unwrap_or(0) as usize;
                let chunk = within(events.iter().skip(from).take(n), room);
                read_bytes += chunk.iter().map(|e| e.data.len()).sum::<usize>();
                largest = largest.max(n);
                Ok(chunk)
            },
            |e| e.position.checked_add(1),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["truncated"], true);
        assert!(
            read_bytes <= 2 * max + 100_000,
            "{read_bytes} bytes read for a {max}-byte answer (chunks up to {largest})"
        );
        // A reader that cannot stop at a size (a stream's) is asked for no
        // more events than the room holds at the largest event size.
        let mut read_bytes = 0;
        let body = bounded_events_body(
            1000,
            max,
            Some(100_000),
            |at, n, _| {
                let from = at.unwrap_or(0) as usize;
                let chunk: Vec<RecordedEvent> = events.iter().skip(from).take(n).cloned().collect();
                read_bytes += chunk.iter().map(|e| e.data.len()).sum::<usize>();
                Ok(chunk)
            },
            |e| e.position.checked_add(1),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["truncated"], true);
        assert!(
            read_bytes <= 2 * max + 100_000,
            "{read_bytes} bytes read for a {max}-byte answer"
        );
        // Small events to the end: every one, in few reads, and not truncated.
        let small = log(100, 10);
        let mut reads = 0;
        let body = bounded_events_body(
            1000,
            max,
            Some(100_000),
            |at, n, _| {
                reads += 1;
                let from = at.unwrap_or(0) as usize;
                Ok(small.iter().skip(from).take(n).cloned().collect())
            },
            |e| e.position.checked_add(1),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), 100);
        assert!(v.get("truncated").is_none() && v.get("next_from").is_none(), "{v}");
        assert!(reads <= 8, "{reads} reads");
    }

    #[test]
    fn expected_versions_parse() {
        assert_eq!(expected_from_json(None).unwrap(), ExpectedVersion::Any);
        assert_eq!(
            expected_from_json(Some(&serde_json::json!(3))).unwrap(),
            ExpectedVersion::Exact(3)
        );
        assert_eq!(
            expected_from_json(Some(&serde_json::json!("no-stream"))).unwrap(),
            ExpectedVersion::NoStream
        );
        assert_eq!(
            expected_from_json(Some(&serde_json::json!(-1))).unwrap_err().code,
            "invalid_expected_version"
        );
        assert!(expected_from_json(Some(&serde_json::json!("maybe"))).is_err());
    }
}
