//! Stream metadata (max age, max count, truncate-before, custom fields, the
//! hard-delete tombstone) and the visibility rule it sets for reads.
//!
//! Metadata of stream `s` is the last event of the system stream `$meta-s`;
//! reads apply it at once (an expired or deleted event is never returned) and
//! scavenging later reclaims the space. This module owns the record and the
//! rule; it must never read or write the log.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::RecordedEvent;
use crate::format::system::{self, StoredMetadataV1, Version1};

/// Prefix of metadata streams.
pub const META_PREFIX: &str = "$meta-";
/// Prefix of snapshot streams.
pub const SNAPSHOT_PREFIX: &str = "$snapshot-";

/// The metadata of a stream. Its serde form is the server's JSON schema; what
/// is stored in `$meta-<stream>` is a separate, versioned record (format.md,
/// "System stream records").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMetadata {
    /// Events older than this many milliseconds are not returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Only the last this many events are returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Events before this revision are not returned (a soft delete sets it past the last event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_before: Option<u64>,
    /// Free-form fields for the application (a JSON object).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub custom: serde_json::Map<String, serde_json::Value>,
    /// Set by a hard delete: the stream is gone for good, its name cannot be used again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstoned: bool,
}

impl StreamMetadata {
    /// True if an event at `revision`, recorded at `timestamp_micros`, is visible in a
    /// stream whose last revision is `last_revision`, at time `now_micros`.
    pub fn is_visible(&self, revision: u64, timestamp_micros: i64, last_revision: u64, now_micros: i64) -> bool {
        if self.tombstoned || self.truncate_before.is_some_and(|tb| revision < tb) {
            return false;
        }
        if self
            .max_count
            .is_some_and(|n| n == 0 || revision.saturating_add(n) <= last_revision)
        {
            return false;
        }
        if let Some(age) = self.max_age_ms {
            // An age past i64::MAX milliseconds keeps everything, as a huge age should.
            let age = i64::try_from(age).unwrap_or(i64::MAX);
            let cutoff = now_micros.saturating_sub(age.saturating_mul(1000));
            if timestamp_micros < cutoff {
                return false;
            }
        }
        true
    }

    /// The first revision that can be visible (ignoring age).
    pub(crate) fn first_visible(&self, last_revision: u64) -> u64 {
        let by_count = self
            .max_count
            .map_or(0, |n| (last_revision.saturating_add(1)).saturating_sub(n));
        self.truncate_before.unwrap_or(0).max(by_count)
    }

    /// Whether a snapshot taken at `revision` no longer fits the stream:
    /// events after it were removed by a truncation (or a soft delete), so
    /// folding the events that remain into it would skip them.
    pub(crate) fn leaves_behind_snapshot_at(&self, revision: u64) -> bool {
        self.truncate_before.is_some_and(|tb| revision.saturating_add(1) < tb)
    }

    /// True if the stream was deleted (soft with nothing after it, or hard).
    pub(crate) fn hides_everything(&self, last_revision: u64) -> bool {
        self.tombstoned || self.truncate_before.is_some_and(|tb| tb > last_revision)
    }
}

/// Metadata of every stream that has some, kept in memory (few streams have any).
#[derive(Default)]
pub(crate) struct MetadataCache {
    pub(crate) by_stream: HashMap<String, StreamMetadata>,
}

impl From<&StreamMetadata> for StoredMetadataV1 {
    fn from(m: &StreamMetadata) -> Self {
        StoredMetadataV1 {
            version: Version1,
            max_age_ms: m.max_age_ms,
            max_count: m.max_count,
            truncate_before: m.truncate_before,
            custom: m.custom.clone(),
            tombstoned: m.tombstoned,
        }
    }
}

impl From<StoredMetadataV1> for StreamMetadata {
    fn from(m: StoredMetadataV1) -> Self {
        StreamMetadata {
            max_age_ms: m.max_age_ms,
            max_count: m.max_count,
            truncate_before: m.truncate_before,
            custom: m.custom,
            tombstoned: m.tombstoned,
        }
    }
}

/// The data of a `$Metadata` event holding `metadata`.
pub(crate) fn encode(metadata: &StreamMetadata) -> Vec<u8> {
    system::encode(&StoredMetadataV1::from(metadata))
}

/// The metadata held by an event of a `$meta-<stream>` stream.
pub(crate) fn parse(event: &RecordedEvent) -> Result<StreamMetadata> {
    system::decode::<StoredMetadataV1>(&event.stream, event.position, &event.data).map(StreamMetadata::from)
}
