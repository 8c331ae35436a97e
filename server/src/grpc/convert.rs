//! How annal's values are spelt in the KurrentDB protocol: event ids (string
//! or two big-endian halves), positions, revisions, expected versions, the
//! event metadata map (`type`, `content-type`, `created`) and stream names.
//!
//! Positions: annal numbers the events of its log from 0; the protocol's
//! clients take a commit position of 0 for "nothing yet", so every position
//! on the wire is annal's plus one ([`commit_of`]), and the prepare position
//! equals the commit position. "End" is `u64::MAX`.
//!
//! It owns these mappings and nothing else. It must never touch the store.

use std::collections::HashMap;

use annal::{ContentType, EventData, ExpectedVersion, RecordedEvent};
use bytes::Bytes;
use tonic::Status;

use super::proto::event_store::client::streams::read_resp::read_event::RecordedEvent as WireEvent;
use super::proto::event_store::client::streams::read_resp::{ReadEvent, read_event};
use super::proto::event_store::client::streams::{ReadResp, read_resp};
use super::proto::event_store::client::uuid as wire_uuid;
use super::proto::event_store::client::{StreamIdentifier, Uuid as WireUuid};

/// The content type annal stores as JSON.
pub(crate) const JSON: &str = "application/json";
/// The content type of every other event.
pub(crate) const BINARY: &str = "application/octet-stream";

/// The commit (and prepare) position of the event at annal position `position`.
pub(crate) fn commit_of(position: u64) -> u64 {
    position.saturating_add(1)
}

/// The stream name a request names.
pub(crate) fn stream_name(id: Option<&StreamIdentifier>) -> Result<String, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("the request names no stream"))?;
    let name =
        std::str::from_utf8(&id.stream_name).map_err(|_| Status::invalid_argument("the stream name is not UTF-8"))?;
    if name.is_empty() {
        return Err(Status::invalid_argument("the stream name is empty"));
    }
    Ok(name.to_string())
}

/// A stream identifier for `name`.
pub(crate) fn stream_identifier(name: &str) -> StreamIdentifier {
    StreamIdentifier {
        stream_name: Bytes::copy_from_slice(name.as_bytes()),
    }
}

/// The id a client gave, in either form; `None` when it gave none.
pub(crate) fn parse_uuid(id: Option<&WireUuid>) -> Result<Option<::uuid::Uuid>, Status> {
    match id.and_then(|u| u.value.as_ref()) {
        None => Ok(None),
        Some(wire_uuid::Value::String(s)) => ::uuid::Uuid::parse_str(s)
            .map(Some)
            .map_err(|_| Status::invalid_argument(format!("event id {s:?} is not a UUID"))),
        Some(wire_uuid::Value::Structured(s)) => {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&s.most_significant_bits.to_be_bytes());
            b[8..].copy_from_slice(&s.least_significant_bits.to_be_bytes());
            Ok(Some(::uuid::Uuid::from_bytes(b)))
        }
    }
}

/// An id in the form a request asked for (`structured`: two big-endian halves).
pub(crate) fn uuid_out(id: ::uuid::Uuid, structured: bool) -> WireUuid {
    let value = if structured {
        let b = id.as_bytes();
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&b[..8]);
        lo.copy_from_slice(&b[8..]);
        wire_uuid::Value::Structured(wire_uuid::Structured {
            most_significant_bits: i64::from_be_bytes(hi),
            least_significant_bits: i64::from_be_bytes(lo),
        })
    } else {
        wire_uuid::Value::String(id.hyphenated().to_string())
    };
    WireUuid { value: Some(value) }
}

/// An event to append, from a proposed message: `type` and `content-type`
/// are required in its metadata map. Empty `application/octet-stream` data
/// with exactly [`annal::ERASED_MARKER`] as custom metadata is a copy of an event erased
/// at its origin (as annal's KurrentDB forward target sends one): it is
/// stored erased, with no data or metadata.
pub(crate) fn event_data(
    id: Option<&WireUuid>,
    metadata: &HashMap<String, String>,
    custom_metadata: Bytes,
    data: Bytes,
) -> Result<EventData, Status> {
    let event_type = metadata
        .get("type")
        .ok_or_else(|| Status::invalid_argument("a proposed message has no \"type\" in its metadata"))?;
    let content_type = metadata
        .get("content-type")
        .ok_or_else(|| Status::invalid_argument("a proposed message has no \"content-type\" in its metadata"))?;
    // As annal's forward target sends it: binary, empty, the marker exactly.
    let erased = data.is_empty() && content_type == BINARY && custom_metadata[..] == *annal::ERASED_MARKER;
    Ok(EventData {
        id: parse_uuid(id)?,
        event_type: event_type.clone(),
        content_type: if content_type == JSON {
            ContentType::Json
        } else {
            ContentType::Binary
        },
        data,
        metadata: if erased { Bytes::new() } else { custom_metadata },
        tags: Vec::new(),
        subject: None,
        erased,
    })
}

/// 100-nanosecond ticks since 1970-01-01 UTC, from microseconds.
pub(crate) fn ticks(micros: i64) -> i64 {
    micros.saturating_mul(10)
}

/// A recorded event as the protocol carries it, under the stream name `stream`.
pub(crate) fn wire_event(e: &RecordedEvent, stream: &str, structured: bool) -> WireEvent {
    let content_type = match e.content_type {
        ContentType::Json => JSON,
        ContentType::Binary => BINARY,
    };
    let metadata = HashMap::from([
        ("type".to_string(), e.event_type.clone()),
        ("content-type".to_string(), content_type.to_string()),
        ("created".to_string(), ticks(e.timestamp_micros).to_string()),
    ]);
    let commit = commit_of(e.position);
    WireEvent {
        id: Some(uuid_out(e.id, structured)),
        stream_identifier: Some(stream_identifier(stream)),
        stream_revision: e.revision,
        prepare_position: commit,
        commit_position: commit,
        metadata,
        // An erased event says so (its empty data alone would look like the
        // event's own), as annal's forward target sends one.
        custom_metadata: if e.is_erased() {
            Bytes::from_static(annal::ERASED_MARKER)
        } else {
            e.metadata.clone()
        },
        data: e.data.clone(),
    }
}

/// A read answer carrying one event.
pub(crate) fn event_resp(e: &RecordedEvent, structured: bool) -> ReadResp {
    ReadResp {
        content: Some(read_resp::Content::Event(ReadEvent {
            event: Some(wire_event(e, &e.stream, structured)),
            link: None,
            position: Some(read_event::Position::CommitPosition(commit_of(e.position))),
        })),
    }
}

/// The expected-version number the protocol's error texts use: a revision,
/// or −2 (any), −1 (no stream), −4 (stream exists).
pub(crate) fn expected_number(e: ExpectedVersion) -> i64 {
    match e {
        ExpectedVersion::Any => -2,
        ExpectedVersion::NoStream => -1,
        ExpectedVersion::StreamExists => -4,
        ExpectedVersion::Exact(r) => i64::try_from(r).unwrap_or(i64::MAX),
    }
}

/// A current revision as the protocol's error texts spell it (−1: no stream).
pub(crate) fn actual_number(actual: Option<u64>) -> i64 {
    actual.map_or(-1, |r| i64::try_from(r).unwrap_or(i64::MAX))
}

/// annal's expected version from the protocol's oneof (shared by every request kind).
macro_rules! expected_of {
    ($module:ident, $value:expr) => {
        match $value {
            Some($module::options::ExpectedStreamRevision::Revision(r)) => ::annal::ExpectedVersion::Exact(r),
            Some($module::options::ExpectedStreamRevision::NoStream(_)) => ::annal::ExpectedVersion::NoStream,
            Some($module::options::ExpectedStreamRevision::StreamExists(_)) => ::annal::ExpectedVersion::StreamExists,
            Some($module::options::ExpectedStreamRevision::Any(_)) | None => ::annal::ExpectedVersion::Any,
        }
    };
}
pub(crate) use expected_of;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_in_both_forms() {
        let id = ::uuid::Uuid::parse_str("f81d4fae-7dec-11d0-a765-00a0c91e6bf6").unwrap();
        for structured in [false, true] {
            let wire = uuid_out(id, structured);
            assert_eq!(parse_uuid(Some(&wire)).unwrap(), Some(id));
        }
        // The halves are the RFC 4122 bytes, big-endian.
        match uuid_out(id, true).value {
            Some(wire_uuid::Value::Structured(s)) => {
                assert_eq!(s.most_significant_bits as u64, 0xf81d4fae7dec11d0);
                assert_eq!(s.least_significant_bits as u64, 0xa76500a0c91e6bf6);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parse_uuid(Some(&WireUuid {
                value: Some(wire_uuid::Value::String("nope".into()))
            }))
            .is_err()
        );
        assert_eq!(parse_uuid(None).unwrap(), None);
    }

    #[test]
    fn positions_are_annal_plus_one_and_metadata_is_checked() {
        assert_eq!(commit_of(0), 1);
        assert_eq!(commit_of(u64::MAX), u64::MAX);
        let mut m = HashMap::from([("type".to_string(), "T".to_string())]);
        assert!(event_data(None, &m, Bytes::new(), Bytes::new()).is_err());
        m.insert("content-type".into(), "application/json".into());
        let e = event_data(None, &m, Bytes::new(), Bytes::new()).unwrap();
        assert_eq!(e.content_type, ContentType::Json);
        m.insert("content-type".into(), "text/plain".into());
        let e = event_data(None, &m, Bytes::new(), Bytes::new()).unwrap();
        assert_eq!(e.content_type, ContentType::Binary);
        assert_eq!(ticks(1_700_000_000_000_000), 17_000_000_000_000_000);
    }
}
