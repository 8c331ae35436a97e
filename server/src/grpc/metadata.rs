//! Stream metadata as the protocol spells it: the `$$<stream>` streams whose
//! events (type `$metadata`) are JSON objects with `$maxAge` (seconds),
//! `$maxCount`, `$tb` (truncate before) and any other key (`$cacheControl`,
//! `$acl`, the application's own) kept verbatim.
//!
//! Writing `$$<stream>` sets annal's metadata of `<stream>` (kept in its
//! `$meta-<stream>` system stream, whose revisions the expected version is
//! checked against); reading it answers one event, the current metadata, at
//! that stream's last revision. It owns this mapping. It must never write
//! anything but through `Store::set_stream_metadata`.

use annal::{Direction, ExpectedVersion, RecordedEvent, StreamFrom, StreamMetadata};
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

/// The one event a read of `$$<stream>` answers, or `None` when the stream has no metadata.
pub(crate) fn read(store: &annal::Store, stream: &str) -> Result<Option<RecordedEvent>, Status> {
    let Some(current) = store.stream_metadata(stream) else {
        return Ok(None);
    };
    let last = store
        .read_stream(&meta_stream(stream), Direction::Backward, StreamFrom::End, 1)
        .map_err(super::status::from_store)?;
    Ok(last.into_iter().next().map(|mut e| {
        e.stream = format!("{PREFIX}{stream}");
        e.event_type = "$metadata".into();
        e.content_type = annal::ContentType::Json;
        e.data = Bytes::from(to_json(&current));
        e.metadata = Bytes::new();
        e
    }))
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
