//! Conversions between the public types of consumer groups (settings, filter,
//! start, strategy, parked record) and their stored forms in
//! [`crate::format::system`]. Nothing a group stores goes through a public
//! type's own serde derive: those are the CLI's and the server's schemas.

use uuid::Uuid;

use crate::features::persistent::{GroupSettings, GroupSource, ParkedRecord, Strategy};
use crate::features::subscription::SubscribeFrom;
use crate::format::system::{
    StoredFilterV1, StoredGroupSettingsV1, StoredGroupSourceV1, StoredParkedV1, StoredStartV1, StoredStrategyV1,
    Version1,
};
use crate::query::{Filter, Pattern};

impl From<&Filter> for StoredFilterV1 {
    fn from(f: &Filter) -> Self {
        StoredFilterV1 {
            types: f.types.clone(),
            tags: f.tags.clone(),
            stream_prefix: f.stream_prefix.clone(),
            since_micros: f.since_micros,
            until_micros: f.until_micros,
            stream_regex: f.stream_regex.as_ref().map(|p| p.as_str().to_string()),
            type_regex: f.type_regex.as_ref().map(|p| p.as_str().to_string()),
        }
    }
}

impl TryFrom<StoredFilterV1> for Filter {
    /// Why the record cannot be read.
    type Error = String;

    fn try_from(f: StoredFilterV1) -> Result<Self, String> {
        let pattern = |p: Option<String>| {
            p.map(|p| Pattern::new(&p))
                .transpose()
                .map_err(|e| format!("group filter: {e}"))
        };
        Ok(Filter {
            types: f.types,
            tags: f.tags,
            stream_prefix: f.stream_prefix,
            since_micros: f.since_micros,
            until_micros: f.until_micros,
            stream_regex: pattern(f.stream_regex)?,
            type_regex: pattern(f.type_regex)?,
        })
    }
}

impl From<SubscribeFrom> for StoredStartV1 {
    fn from(s: SubscribeFrom) -> Self {
        match s {
            SubscribeFrom::Start => StoredStartV1::Start,
            SubscribeFrom::After(p) => StoredStartV1::After(p),
            SubscribeFrom::End => StoredStartV1::End,
        }
    }
}

impl From<StoredStartV1> for SubscribeFrom {
    fn from(s: StoredStartV1) -> Self {
        match s {
            StoredStartV1::Start => SubscribeFrom::Start,
            StoredStartV1::After(p) => SubscribeFrom::After(p),
            StoredStartV1::End => SubscribeFrom::End,
        }
    }
}

impl From<Strategy> for StoredStrategyV1 {
    fn from(s: Strategy) -> Self {
        match s {
            Strategy::RoundRobin => StoredStrategyV1::RoundRobin,
            Strategy::Pinned => StoredStrategyV1::Pinned,
        }
    }
}

impl From<StoredStrategyV1> for Strategy {
    fn from(s: StoredStrategyV1) -> Self {
        match s {
            StoredStrategyV1::RoundRobin => Strategy::RoundRobin,
            StoredStrategyV1::Pinned => Strategy::Pinned,
        }
    }
}

impl From<&GroupSettings> for StoredGroupSettingsV1 {
    fn from(s: &GroupSettings) -> Self {
        StoredGroupSettingsV1 {
            source: match &s.source {
                GroupSource::All(f) => StoredGroupSourceV1::All(f.into()),
                GroupSource::Stream(name) => StoredGroupSourceV1::Stream(name.clone()),
            },
            start: s.start.into(),
            strategy: s.strategy.into(),
            ack_timeout_ms: s.ack_timeout_ms,
            max_retries: s.max_retries,
            max_in_flight: s.max_in_flight as u64,
            checkpoint_every: s.checkpoint_every,
            skip_damaged: s.skip_damaged,
        }
    }
}

impl TryFrom<StoredGroupSettingsV1> for GroupSettings {
    /// Why the record cannot be read.
    type Error = String;

    fn try_from(s: StoredGroupSettingsV1) -> Result<Self, String> {
        Ok(GroupSettings {
            source: match s.source {
                StoredGroupSourceV1::All(f) => GroupSource::All(f.try_into()?),
                StoredGroupSourceV1::Stream(name) => GroupSource::Stream(name),
            },
            start: s.start.into(),
            strategy: s.strategy.into(),
            ack_timeout_ms: s.ack_timeout_ms,
            max_retries: s.max_retries,
            max_in_flight: usize::try_from(s.max_in_flight)
                .map_err(|_| format!("max_in_flight {} does not fit this machine", s.max_in_flight))?,
            checkpoint_every: s.checkpoint_every,
            skip_damaged: s.skip_damaged,
        })
    }
}

impl From<&ParkedRecord> for StoredParkedV1 {
    fn from(r: &ParkedRecord) -> Self {
        StoredParkedV1 {
            version: Version1,
            position: r.position,
            stream: r.stream.clone(),
            revision: r.revision,
            event_id: r.event_id.hyphenated().to_string(),
            deliveries: r.deliveries,
            reason: r.reason.clone(),
        }
    }
}

impl TryFrom<StoredParkedV1> for ParkedRecord {
    /// Why the record cannot be read.
    type Error = String;

    fn try_from(r: StoredParkedV1) -> Result<Self, String> {
        Ok(ParkedRecord {
            position: r.position,
            stream: r.stream,
            revision: r.revision,
            event_id: Uuid::parse_str(&r.event_id).map_err(|e| format!("event_id {:?}: {e}", r.event_id))?,
            deliveries: r.deliveries,
            reason: r.reason,
        })
    }
}
