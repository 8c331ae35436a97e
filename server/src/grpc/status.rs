//! The protocol's errors: status codes, `exception` trailers and the exact
//! texts the KurrentDB clients match, and the `google.rpc.Status` details
//! that BatchAppend answers carry.
//!
//! It owns how an error looks on the wire. It must never decide whether an
//! operation failed: the services hand it the store's or auth's answer. The
//! errors of the unary and streaming calls never carry
//! `grpc-status-details-bin` (the newest Python client would then bypass its
//! own error mapping): only trailers.

use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use super::convert::stream_identifier;
use super::proto::event_store::client::{StreamDeleted, WrongExpectedVersion, wrong_expected_version as wev};
use super::proto::google::rpc;
use crate::auth::Denied;

/// Trailers naming the exception and its fields; values that are not
/// visible ASCII are left out.
fn trailers(pairs: &[(&'static str, &str)]) -> MetadataMap {
    let mut m = MetadataMap::new();
    for (k, v) in pairs {
        if let Ok(v) = MetadataValue::try_from(*v) {
            m.insert(*k, v);
        }
    }
    m
}

/// A refusal by auth.
pub(crate) fn denied(d: Denied) -> Status {
    match d {
        Denied::Unauthenticated => {
            Status::unauthenticated("a valid token (Bearer) or user name and password (Basic) is required")
        }
        Denied::Forbidden(why) => Status::with_metadata(
            Code::PermissionDenied,
            format!("Access denied: {why}"),
            trailers(&[("exception", "access-denied")]),
        ),
    }
}

/// The stream was hard-deleted (tombstoned): FAILED_PRECONDITION, `stream-deleted`.
pub(crate) fn stream_deleted(stream: &str) -> Status {
    Status::with_metadata(
        Code::FailedPrecondition,
        format!("Event stream '{stream}' is deleted."),
        trailers(&[("exception", "stream-deleted"), ("stream-name", stream)]),
    )
}

/// A delete or tombstone whose expected version did not hold (actual −1: no stream).
pub(crate) fn delete_wrong_expected_version(stream: &str, expected: i64, actual: i64) -> Status {
    let (e, a) = (expected.to_string(), actual.to_string());
    Status::with_metadata(
        Code::FailedPrecondition,
        format!(
            "Delete failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {e}, Actual version: {a}"
        ),
        trailers(&[
            ("exception", "wrong-expected-version"),
            ("stream-name", stream),
            ("expected-version", &e),
            ("actual-version", &a),
        ]),
    )
}

/// An error of a persistent subscription group `id` (`<source>::<group>`):
/// NOT_FOUND when it does not exist, ALREADY_EXISTS when it does, as the
/// clients expect; the library tells both apart only by its text.
pub(crate) fn group_error(id: &str, e: annal::Error) -> Status {
    let (source, group) = id.split_once("::").unwrap_or((id, ""));
    match &e {
        annal::Error::InvalidInput(m) if m.contains("does not exist") => Status::not_found(format!(
            "Subscription group '{group}' on stream '{source}' does not exist."
        )),
        annal::Error::InvalidInput(m) if m.contains("already exists") => {
            Status::already_exists(format!("Subscription group '{group}' on stream '{source}' exists."))
        }
        _ => from_store(e),
    }
}

/// Any other error of the store.
pub(crate) fn from_store(e: annal::Error) -> Status {
    use annal::Error as E;
    match e {
        E::StreamDeleted(s) => stream_deleted(&s),
        E::InvalidInput(m) => Status::invalid_argument(m),
        E::StreamNotFound(s) => Status::not_found(format!("Event stream '{s}' was not found.")),
        e @ E::DiskFull { .. } => Status::resource_exhausted(e.to_string()),
        e @ E::BudgetFull { .. } => Status::resource_exhausted(e.to_string()),
        e @ (E::ReadOnly { .. } | E::Closed(_) | E::Poisoned { .. } | E::Locked { .. }) => {
            Status::unavailable(e.to_string())
        }
        e @ E::Cancelled => Status::deadline_exceeded(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// [`from_store`] for a caller who may not be shown where damage lies
/// (`crate::auth::Principal::sees_damage`): damage without its file and offset.
pub(crate) fn from_store_without_place(e: annal::Error) -> Status {
    if e.is_corruption() {
        Status::internal(crate::auth::DAMAGE_ELSEWHERE)
    } else {
        from_store(e)
    }
}

/// The `google.rpc.Status` of a BatchAppend answer whose expected version did not hold.
pub(crate) fn batch_wrong_expected_version(current: Option<u64>, expected: annal::ExpectedVersion) -> rpc::Status {
    let detail = WrongExpectedVersion {
        current_stream_revision_option: Some(match current {
            Some(r) => wev::CurrentStreamRevisionOption::CurrentStreamRevision(r),
            None => wev::CurrentStreamRevisionOption::CurrentNoStream(()),
        }),
        expected_stream_position_option: Some(match expected {
            annal::ExpectedVersion::Exact(r) => wev::ExpectedStreamPositionOption::ExpectedStreamPosition(r),
            annal::ExpectedVersion::Any => wev::ExpectedStreamPositionOption::ExpectedAny(()),
            annal::ExpectedVersion::StreamExists => wev::ExpectedStreamPositionOption::ExpectedStreamExists(()),
            annal::ExpectedVersion::NoStream => wev::ExpectedStreamPositionOption::ExpectedNoStream(()),
        }),
    };
    rpc_status(
        Code::FailedPrecondition,
        "WrongExpectedVersion",
        "event_store.client.WrongExpectedVersion",
        detail.encode_to_vec(),
    )
}

/// The `google.rpc.Status` of a BatchAppend answer to a deleted stream.
pub(crate) fn batch_stream_deleted(stream: &str) -> rpc::Status {
    let detail = StreamDeleted {
        stream_identifier: Some(stream_identifier(stream)),
    };
    rpc_status(
        Code::FailedPrecondition,
        &format!("Event stream '{stream}' is deleted."),
        "event_store.client.StreamDeleted",
        detail.encode_to_vec(),
    )
}

/// The `google.rpc.Status` of any other BatchAppend failure of `stream`:
/// a deleted stream, a refusal (`AccessDenied`), or a `BadRequest`.
pub(crate) fn batch_error(stream: &str, status: &Status) -> rpc::Status {
    use super::proto::event_store::client::{AccessDenied, BadRequest};
    let exception = status.metadata().get("exception").and_then(|v| v.to_str().ok());
    if exception == Some("stream-deleted") {
        return batch_stream_deleted(stream);
    }
    if matches!(status.code(), Code::PermissionDenied | Code::Unauthenticated) {
        return rpc_status(
            status.code(),
            status.message(),
            "event_store.client.AccessDenied",
            AccessDenied {}.encode_to_vec(),
        );
    }
    let detail = BadRequest {
        message: status.message().to_string(),
    };
    rpc_status(
        status.code(),
        status.message(),
        "event_store.client.BadRequest",
        detail.encode_to_vec(),
    )
}

fn rpc_status(code: Code, message: &str, type_name: &str, value: Vec<u8>) -> rpc::Status {
    rpc::Status {
        code: code as i32,
        message: message.to_string(),
        details: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_trailers_are_the_ones_clients_match() {
        let s = delete_wrong_expected_version("s-1", -2, -1);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.message(),
            "Delete failed due to WrongExpectedVersion. Stream: s-1, Expected version: -2, Actual version: -1"
        );
        assert_eq!(s.metadata().get("exception").unwrap(), "wrong-expected-version");
        assert!(s.details().is_empty());
        let s = stream_deleted("s-1");
        assert_eq!(s.message(), "Event stream 's-1' is deleted.");
        assert_eq!(s.metadata().get("exception").unwrap(), "stream-deleted");
        let b = batch_wrong_expected_version(None, annal::ExpectedVersion::Exact(3));
        let any = b.details.unwrap();
        assert_eq!(
            any.type_url,
            "type.googleapis.com/event_store.client.WrongExpectedVersion"
        );
        let back = WrongExpectedVersion::decode(&any.value[..]).unwrap();
        assert_eq!(
            back.current_stream_revision_option,
            Some(wev::CurrentStreamRevisionOption::CurrentNoStream(()))
        );
    }
}
