//! Stream metadata as the protocol spells it: the `$$<stream>` streams whose
//! events (type `$metadata`) are JSON objects with `$maxAge` (seconds),
//! `$maxCount`, `$tb` (truncate before) and any other key (`$cacheControl`,
//! `$acl`, the application's own) kept verbatim.
//!
//! Writing `$$<stream>` sets annal's metadata of `<stream>` (kept in its
//! `$meta-<stream>` system stream, whose revisions the expected version is
//! checked against); reading it reads that stream, each record shown as the
//! protocol's JSON object, and so does `$all`. It owns this mapping. It must
//! never write anything but through `Store::set_stream_metadata`.

use std::borrow::Cow;

use annal::{ExpectedVersion, RecordedEvent, StreamMetadata};
use bytes::Bytes;
use serde_json::{Map, Value};
use tonic::Status;

/// The prefix of the protocol's metadata streams.
pub(crate) const PREFIX: &str = "$$";

/// The stream whose metadata `$$<stream>` is, if `name` is a metadata stream.
pub(crate) fn target(name: &str) -> Option<&str> {
    name.strip_prefix(PREFIX).filter(|s| !s.is_empty())
}

/// The library's system stream of a stream's metadata (its `META_PREFIX`).
const META_PREFIX: &str = "$meta-";

fn meta_stream(stream: &str) -> String {
    format!("{META_PREFIX}{stream}")
}

/// annal's metadata from the protocol's JSON object.
pub(crate) fn from_json(data: &[u8]) -> Result<StreamMetadata, Status> {
    let value: Value = serde_json::from_slice(data)
        .map_err(|e| Status::invalid_argument(format!("stream metadata is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(Status::invalid_argument("stream metadata is not a JSON object"));
    };
    let number = |k: &str, v: &Value| {
        v.as_u64()
            .ok_or_else(|| Status::invalid_argument(format!("stream metadata {k} is not a whole number ≥ 0")))
    };
    let mut m = StreamMetadata::default();
    for (k, v) in obj {
        match k.as_str() {
            "$maxAge" if !v.is_null() => m.max_age_ms = Some(number(&k, &v)?.saturating_mul(1000)),
            "$maxCount" if !v.is_null() => m.max_count = Some(number(&k, &v)?),
            "$tb" if !v.is_null() => m.truncate_before = Some(number(&k, &v)?),
            "$maxAge" | "$maxCount" | "$tb" => {}
            _ => {
                m.custom.insert(k, v);
            }
        }
    }
    Ok(m)
}

/// The protocol's JSON object for annal's metadata.
pub(crate) fn to_json(m: &StreamMetadata) -> Vec<u8> {
    let mut obj = Map::new();
    if let Some(ms) = m.max_age_ms {
        obj.insert("$maxAge".into(), Value::from(ms / 1000));
    }
    if let Some(n) = m.max_count {
        obj.insert("$maxCount".into(), Value::from(n));
    }
    if let Some(tb) = m.truncate_before {
        obj.insert("$tb".into(), Value::from(tb));
    }
    for (k, v) in &m.custom {
        obj.insert(k.clone(), v.clone());
    }
    Value::Object(obj).to_string().into_bytes()
}

/// The current revision of `$$<stream>` (that of `$meta-<stream>`), if any.
pub(crate) fn revision(store: &annal::Store, stream: &str) -> Option<u64> {
    store.stream_info(&meta_stream(stream)).map(|s| s.last_revision)
}

/// The system stream a read of `$$<stream>` reads: `$meta-<stream>`.
pub(crate) fn stored_stream(stream: &str) -> String {
    meta_stream(stream)
}

/// An event as the protocol shows it: a metadata record of
/// `$meta-<stream>` (type `$Metadata`) becomes a `$metadata` event of
/// `$$<stream>` whose data is the protocol's JSON object. Its record is the
/// JSON object format.md describes under "System stream records" (the
/// fields of [`StreamMetadata`] and a `version`); a record this build cannot
/// read is shown as stored.
pub(crate) fn shown(e: &RecordedEvent) -> Cow<'_, RecordedEvent> {
    let Some(stream) = e.stream.strip_prefix(META_PREFIX) else {
        return Cow::Borrowed(e);
    };
    if e.event_type != "$Metadata" {
        return Cow::Borrowed(e);
    }
    let parsed = serde_json::from_slice::<Value>(&e.data).ok().and_then(|v| {
        let Value::Object(mut obj) = v else { return None };
        obj.remove("version");
        serde_json::from_value::<StreamMetadata>(Value::Object(obj)).ok()
    });
    let Some(m) = parsed else {
        return Cow::Borrowed(e);
    };
    let mut out = e.clone();
    out.stream = format!("{PREFIX}{stream}");
    out.event_type = "$metadata".into();
    out.content_type = annal::ContentType::Json;
    out.data = Bytes::from(to_json(&m));
    Cow::Owned(out)
}

/// True if `expected` holds for `$$<stream>` at revision `current`.
pub(crate) fn expected_holds(expected: ExpectedVersion, current: Option<u64>) -> bool {
    match (expected, current) {
        (ExpectedVersion::Any, _) | (ExpectedVersion::NoStream, None) | (ExpectedVersion::StreamExists, Some(_)) => {
            true
        }
        (ExpectedVersion::Exact(r), Some(c)) => r == c,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_records_show_as_metadata_events() {
        let e = RecordedEvent {
            stream: "$meta-order-1".into(),
            revision: 3,
            position: 9,
            id: ::uuid::Uuid::nil(),
            event_type: "$Metadata".into(),
            content_type: annal::ContentType::Json,
            data: Bytes::from_static(br#"{"version":1,"max_count":2,"custom":{"a":1}}"#),
            metadata: Bytes::new(),
            tags: vec![],
            timestamp_micros: 0,
            personal: annal::Personal::Plain,
        };
        let shown = shown(&e);
        assert_eq!(shown.stream, "$$order-1");
        assert_eq!(shown.event_type, "$metadata");
        let v: Value = serde_json::from_slice(&shown.data).unwrap();
        assert_eq!(v, serde_json::json!({"$maxCount": 2, "a": 1}));
        let other = RecordedEvent {
            stream: "order-1".into(),
            ..e
        };
        assert!(matches!(super::shown(&other), Cow::Borrowed(_)));
    }

    #[test]
    fn known_keys_map_and_others_are_kept() {
        let m = from_json(br#"{"$maxAge": 60, "$maxCount": 5, "$tb": 2, "$acl": {"$r": "x"}, "foo": [1]}"#).unwrap();
        assert_eq!(m.max_age_ms, Some(60_000));
        assert_eq!(m.max_count, Some(5));
        assert_eq!(m.truncate_before, Some(2));
        assert_eq!(m.custom.len(), 2);
        let back: Value = serde_json::from_slice(&to_json(&m)).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"$maxAge": 60, "$maxCount": 5, "$tb": 2, "$acl": {"$r": "x"}, "foo": [1]})
        );
        assert!(from_json(b"[1]").is_err());
        assert!(from_json(br#"{"$maxCount": -1}"#).is_err());
        assert_eq!(target("$$order-1"), Some("order-1"));
        assert_eq!(target("$$"), None);
        assert!(expected_holds(ExpectedVersion::NoStream, None));
        assert!(!expected_holds(ExpectedVersion::Exact(0), None));
    }
}
