//! The JSON records of the system streams: consumer-group definitions
//! (`$groups`), group checkpoints (`$group-<name>-checkpoint`), parked records
//! (`$group-<name>-parked`), forwarder checkpoints
//! (`$forward-<name>-checkpoint`) and parked records (`$forward-<name>-parked`), stream metadata (`$meta-<stream>`) and snapshot
//! headers (`$snapshot-<stream>`). format.md, "System stream records", is
//! their contract.
//!
//! These are the stored forms, kept apart from the public and configuration
//! types they are converted from and to (`GroupSettings`, `Filter`,
//! `StreamMetadata`, ...), so that renaming a field of those cannot change what
//! is on disk: every field name here is spelled out. Each record is version 1;
//! version 1 writes no `version` field, and a reader takes its absence as 1
//! and refuses any other value. This module turns bytes into records and back;
//! the conversions live beside the public types.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// A record's `version` field: absent (as version 1 writes it) or 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Version1;

impl<'de> Deserialize<'de> for Version1 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match u64::deserialize(d)? {
            1 => Ok(Version1),
            v => Err(serde::de::Error::custom(format!(
                "record version {v}; this build reads version 1"
            ))),
        }
    }
}

/// Encodes a record as the data of a system event.
pub(crate) fn encode(record: &impl Serialize) -> Vec<u8> {
    // Plain structs, strings, numbers and JSON maps: encoding cannot fail.
    serde_json::to_vec(record).expect("a system record encodes")
}

/// Decodes a record from the event at `position` of the system stream `stream`.
pub(crate) fn decode<T: DeserializeOwned>(stream: &str, position: u64, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::bad_system_event(stream, position, e))
}

/// An event of `$groups`: a group created (`$GroupCreated`) or deleted (`$GroupDeleted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // Lives only while a definition is encoded or decoded.
pub(crate) enum StoredDefinitionV1 {
    /// A group and its settings.
    #[serde(rename = "Created")]
    Created {
        #[serde(rename = "version", default, skip_serializing)]
        version: Version1,
        #[serde(rename = "name")]
        name: String,
        #[serde(rename = "settings")]
        settings: StoredGroupSettingsV1,
    },
    /// The group's definition is gone (its other streams stay).
    #[serde(rename = "Deleted")]
    Deleted {
        #[serde(rename = "version", default, skip_serializing)]
        version: Version1,
        #[serde(rename = "name")]
        name: String,
    },
}

/// A group's settings, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredGroupSettingsV1 {
    #[serde(rename = "source")]
    pub source: StoredGroupSourceV1,
    #[serde(rename = "start")]
    pub start: StoredStartV1,
    #[serde(rename = "strategy")]
    pub strategy: StoredStrategyV1,
    #[serde(rename = "ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    #[serde(rename = "max_retries")]
    pub max_retries: u32,
    #[serde(rename = "max_in_flight")]
    pub max_in_flight: u64,
    #[serde(rename = "checkpoint_every")]
    pub checkpoint_every: u64,
    /// Absent in definitions written before the field existed: `false`.
    #[serde(rename = "skip_damaged", default)]
    pub skip_damaged: bool,
    /// The application's own values; absent (and not written) when empty.
    #[serde(rename = "extra", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// What a group reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "made once per group or subscription, never in bulk"
)]
pub(crate) enum StoredGroupSourceV1 {
    #[serde(rename = "All")]
    All(StoredFilterV1),
    #[serde(rename = "Stream")]
    Stream(String),
}

/// Where a new group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredStartV1 {
    #[serde(rename = "Start")]
    Start,
    #[serde(rename = "After")]
    After(u64),
    #[serde(rename = "End")]
    End,
}

/// How a group shares its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredStrategyV1 {
    #[serde(rename = "RoundRobin")]
    RoundRobin,
    #[serde(rename = "Pinned")]
    Pinned,
    #[serde(rename = "DispatchToSingle")]
    DispatchToSingle,
}

/// A filter on the global log, as stored. Every field may be absent (empty);
/// an unknown field is refused, since ignoring a condition would widen the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StoredFilterV1 {
    #[serde(rename = "types")]
    pub types: Vec<String>,
    #[serde(rename = "tags")]
    pub tags: Vec<String>,
    #[serde(rename = "stream_prefix")]
    pub stream_prefix: Option<String>,
    #[serde(rename = "since_micros")]
    pub since_micros: Option<i64>,
    #[serde(rename = "until_micros")]
    pub until_micros: Option<i64>,
    /// A regular expression's source.
    #[serde(rename = "stream_regex")]
    pub stream_regex: Option<String>,
    /// A regular expression's source.
    #[serde(rename = "type_regex")]
    pub type_regex: Option<String>,
    /// Topic patterns' sources (absent when empty, so older records keep their bytes).
    #[serde(rename = "type_patterns", skip_serializing_if = "Vec::is_empty")]
    pub type_patterns: Vec<String>,
    /// Topic patterns' sources.
    #[serde(rename = "stream_patterns", skip_serializing_if = "Vec::is_empty")]
    pub stream_patterns: Vec<String>,
    #[serde(rename = "aggregate_type", skip_serializing_if = "Option::is_none")]
    pub aggregate_type: Option<String>,
    #[serde(rename = "aggregate_id", skip_serializing_if = "Option::is_none")]
    pub aggregate_id: Option<String>,
    /// `[key, value]` pairs.
    #[serde(rename = "metadata", skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<(String, String)>,
}

/// The last event of `$group-<name>-checkpoint` (type `$Checkpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredCheckpointV1 {
    #[serde(rename = "version", default, skip_serializing)]
    pub version: Version1,
    #[serde(rename = "checkpoint")]
    pub checkpoint: u64,
    #[serde(rename = "parked")]
    pub parked: u64,
    #[serde(rename = "parked_replayed")]
    pub parked_replayed: u64,
    /// Positions skipped because they could not be read (`skip_damaged`);
    /// absent (0) in records written before it existed or with none skipped.
    #[serde(rename = "skipped_damaged", default, skip_serializing_if = "is_zero")]
    pub skipped_damaged: u64,
    /// The end of the last damaged range counted in `skipped_damaged`: a
    /// group that meets it again after a restart (its checkpoint was still
    /// before it) does not count it twice.
    #[serde(rename = "skipped_through", default, skip_serializing_if = "is_zero")]
    pub skipped_through: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The type of the record `release_forwarder` appends to a forwarder's
/// checkpoint stream (same fields as [`StoredForwardCheckpointV1`]): the
/// name has no checkpoint from there on.
pub(crate) const FORWARD_RELEASED_TYPE: &str = "$ForwardReleased";

/// The last event of `$forward-<name>-checkpoint` (type `$ForwardCheckpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredForwardCheckpointV1 {
    #[serde(rename = "version", default, skip_serializing)]
    pub version: Version1,
    #[serde(rename = "position")]
    pub position: u64,
    #[serde(rename = "delivered")]
    pub delivered: u64,
    #[serde(rename = "parked")]
    pub parked: u64,
    #[serde(rename = "skipped")]
    pub skipped: u64,
    /// Whether the checkpoint holds retention; absent (as in records written
    /// before the field existed) means `wait`.
    #[serde(rename = "retention", default, skip_serializing_if = "StoredHoldV1::is_wait")]
    pub retention: StoredHoldV1,
    /// The last gap the forwarder passed that no operator acknowledged;
    /// absent (as in records written before the field existed): none.
    #[serde(rename = "gap", default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<StoredGapV1>,
}

/// A forwarder checkpoint's `gap`: positions removed before it delivered
/// them, which it skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredGapV1 {
    #[serde(rename = "first_position")]
    pub first_position: u64,
    #[serde(rename = "end_position")]
    pub end_position: u64,
    #[serde(rename = "dropped_events", default, skip_serializing_if = "Option::is_none")]
    pub dropped_events: Option<u64>,
    #[serde(rename = "dropped_micros", default, skip_serializing_if = "Option::is_none")]
    pub dropped_micros: Option<i64>,
}

/// A forwarder checkpoint's `retention`: whether scavenging keeps the events
/// from its position on, even while no forwarder runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredHoldV1 {
    /// Scavenging keeps every event at or after the checkpoint's position
    /// (but those of system streams, which no forwarder delivers).
    #[default]
    #[serde(rename = "wait")]
    Wait,
    /// The forwarder's retention is `ignore`: no hold.
    #[serde(rename = "ignore")]
    Ignore,
    /// `annal forward forget` dropped the hold; no hold until the forwarder
    /// runs again with `wait`.
    #[serde(rename = "released")]
    Released,
}

impl StoredHoldV1 {
    fn is_wait(&self) -> bool {
        *self == StoredHoldV1::Wait
    }
}

/// An event of `$group-<name>-parked` or `$forward-<name>-parked` (type `$Parked`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredParkedV1 {
    #[serde(rename = "version", default, skip_serializing)]
    pub version: Version1,
    #[serde(rename = "position")]
    pub position: u64,
    #[serde(rename = "stream")]
    pub stream: String,
    #[serde(rename = "revision")]
    pub revision: u64,
    /// The event id in its hyphenated form.
    #[serde(rename = "event_id")]
    pub event_id: String,
    #[serde(rename = "deliveries")]
    pub deliveries: u32,
    #[serde(rename = "reason")]
    pub reason: String,
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cut_on_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl StoredParkedV1 {
    /// The record encoded in at most `max` bytes where it can be: its reason
    /// cut (halved, on a character boundary, until it fits; escaped in JSON a
    /// byte of it may take six), never the rest. A record too large even
    /// without a reason is returned whole: the append refuses it then.
    pub(crate) fn encode_within(mut self, max: usize) -> Vec<u8> {
        let mut bytes = encode(&self);
        while bytes.len() > max && !self.reason.is_empty() {
            let end = cut_on_char(&self.reason, self.reason.len() / 2).len();
            self.reason.truncate(end);
            bytes = encode(&self);
        }
        bytes
    }
}

/// An event of `$meta-<stream>` (type `$Metadata`); absent fields are unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredMetadataV1 {
    #[serde(rename = "version", default, skip_serializing)]
    pub version: Version1,
    #[serde(rename = "max_age_ms", default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    #[serde(rename = "max_count", default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    #[serde(rename = "truncate_before", default, skip_serializing_if = "Option::is_none")]
    pub truncate_before: Option<u64>,
    #[serde(rename = "custom", default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub custom: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "tombstoned", default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstoned: bool,
}

/// The metadata of an event of `$snapshot-<stream>` (type `$Snapshot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSnapshotHeaderV1 {
    #[serde(rename = "version", default, skip_serializing)]
    pub version: Version1,
    #[serde(rename = "revision")]
    pub revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_is_not_written_and_absent_or_1_is_read() {
        let c = StoredCheckpointV1 {
            version: Version1,
            checkpoint: 7,
            parked: 2,
            parked_replayed: 1,
            skipped_damaged: 0,
            skipped_through: 0,
        };
        let bytes = encode(&c);
        assert_eq!(bytes, br#"{"checkpoint":7,"parked":2,"parked_replayed":1}"#);
        assert_eq!(decode::<StoredCheckpointV1>("$c", 0, &bytes).unwrap(), c);
        // The skip counters are written only when not 0.
        let skipped = StoredCheckpointV1 {
            skipped_damaged: 3,
            skipped_through: 12,
            ..c
        };
        let bytes = encode(&skipped);
        assert_eq!(
            bytes,
            br#"{"checkpoint":7,"parked":2,"parked_replayed":1,"skipped_damaged":3,"skipped_through":12}"#
        );
        assert_eq!(decode::<StoredCheckpointV1>("$c", 0, &bytes).unwrap(), skipped);
        let with = br#"{"version":1,"checkpoint":7,"parked":2,"parked_replayed":1}"#;
        assert_eq!(decode::<StoredCheckpointV1>("$c", 0, with).unwrap(), c);
        let deleted = br#"{"Deleted":{"version":1,"name":"g"}}"#;
        assert!(decode::<StoredDefinitionV1>("$groups", 0, deleted).is_ok());
    }

    #[test]
    fn another_version_is_a_bad_system_event_naming_it() {
        for (stream, bytes) in [
            (
                "$c",
                &br#"{"version":2,"checkpoint":7,"parked":2,"parked_replayed":1}"#[..],
            ),
            ("$c", &br#"{"version":2}"#[..]),
        ] {
            match decode::<StoredCheckpointV1>(stream, 9, bytes) {
                Err(Error::BadSystemEvent {
                    stream: s,
                    position: 9,
                    reason,
                }) => {
                    assert_eq!(s, stream);
                    assert!(reason.contains("record version 2"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        let e = decode::<StoredMetadataV1>("$meta-s", 3, br#"{"version":2,"max_count":1}"#).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        assert!(e.is_corruption());
    }

    #[test]
    fn damaged_json_and_unknown_filter_or_metadata_fields_are_refused() {
        assert!(decode::<StoredParkedV1>("$p", 0, b"{\"position\":").is_err());
        assert!(decode::<StoredFilterV1>("$groups", 0, br#"{"types":[],"stream_suffix":"x"}"#).is_err());
        assert!(decode::<StoredMetadataV1>("$meta-s", 0, br#"{"max_size":1}"#).is_err());
        // Settings and records other than filters and metadata ignore unknown fields, as before.
        assert!(
            decode::<StoredCheckpointV1>("$c", 0, br#"{"checkpoint":1,"parked":0,"parked_replayed":0,"x":1}"#).is_ok()
        );
    }
}
