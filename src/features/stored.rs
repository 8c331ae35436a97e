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
use crate::query::{Filter, Pattern, TopicPattern};

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
            type_patterns: f.type_patterns.iter().map(|p| p.as_str().to_string()).collect(),
            stream_patterns: f.stream_patterns.iter().map(|p| p.as_str().to_string()).collect(),
            aggregate_type: f.aggregate_type.clone(),
            aggregate_id: f.aggregate_id.clone(),
            metadata: f.metadata.clone(),
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
            type_patterns: f.type_patterns.iter().map(|p| TopicPattern::new(p)).collect(),
            stream_patterns: f.stream_patterns.iter().map(|p| TopicPattern::new(p)).collect(),
            aggregate_type: f.aggregate_type,
            aggregate_id: f.aggregate_id,
            metadata: f.metadata,
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
            Strategy::DispatchToSingle => StoredStrategyV1::DispatchToSingle,
        }
    }
}

impl From<StoredStrategyV1> for Strategy {
    fn from(s: StoredStrategyV1) -> Self {
        match s {
            StoredStrategyV1::RoundRobin => Strategy::RoundRobin,
            StoredStrategyV1::Pinned => Strategy::Pinned,
            StoredStrategyV1::DispatchToSingle => Strategy::DispatchToSingle,
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
            extra: s.extra.clone(),
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
            extra: s.extra,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::event::{EventData, ExpectedVersion, RecordedEvent};
    use crate::format::system::{self, StoredCheckpointV1, StoredDefinitionV1};
    use crate::options::{Durability, Options};
    use crate::store::Store;
    use crate::stream_metadata::StreamMetadata;

    fn settings(json: &str) -> GroupSettings {
        match system::decode::<StoredDefinitionV1>("$groups", 0, json.as_bytes()).unwrap() {
            StoredDefinitionV1::Created { settings, .. } => settings.try_into().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn encoded(name: &str, settings: &GroupSettings) -> String {
        String::from_utf8(system::encode(&StoredDefinitionV1::Created {
            version: Version1,
            name: name.into(),
            settings: settings.into(),
        }))
        .unwrap()
    }

    /// Today's encoding (format.md's example), decoded to the public values and back to the same bytes.
    #[test]
    fn a_definition_of_today_decodes_to_its_settings_and_back() {
        let json = r#"{"Created":{"name":"g-1","settings":{"source":{"All":{"types":["OrderPlaced","OrderPaid"],"tags":["tenant:7"],"stream_prefix":"order-","since_micros":1700000000000000,"until_micros":4000000000000000,"stream_regex":"^order-[0-9]+$","type_regex":"^Order"}},"start":{"After":41},"strategy":"Pinned","ack_timeout_ms":2500,"max_retries":3,"max_in_flight":64,"checkpoint_every":10,"skip_damaged":true}}}"#;
        let expected = GroupSettings {
            source: GroupSource::All(
                Filter::all()
                    .with_type("OrderPlaced")
                    .with_type("OrderPaid")
                    .with_tag("tenant:7")
                    .with_stream_prefix("order-")
                    .with_time(Some(1_700_000_000_000_000), Some(4_000_000_000_000_000))
                    .with_stream_regex("^order-[0-9]+$")
                    .unwrap()
                    .with_type_regex("^Order")
                    .unwrap(),
            ),
            start: SubscribeFrom::After(41),
            strategy: Strategy::Pinned,
            ack_timeout_ms: 2500,
            max_retries: 3,
            max_in_flight: 64,
            checkpoint_every: 10,
            skip_damaged: true,
            extra: Default::default(),
        };
        assert_eq!(settings(json), expected);
        assert_eq!(encoded("g-1", &expected), json);

        // Dispatch to single, a filter with look-around, and the application's values.
        let json = r#"{"Created":{"name":"g-4","settings":{"source":{"All":{"types":[],"tags":[],"stream_prefix":null,"since_micros":null,"until_micros":null,"stream_regex":null,"type_regex":"^(?!\\$)"}},"start":"Start","strategy":"DispatchToSingle","ack_timeout_ms":30000,"max_retries":5,"max_in_flight":1000,"checkpoint_every":100,"skip_damaged":false,"extra":{"grpc.max_subscriber_count":"3"}}}}"#;
        let expected = GroupSettings {
            source: GroupSource::All(Filter::all().with_type_regex(r"^(?!\$)").unwrap()),
            strategy: Strategy::DispatchToSingle,
            extra: [("grpc.max_subscriber_count".to_string(), "3".to_string())].into(),
            ..GroupSettings::all()
        };
        assert_eq!(settings(json), expected);
        assert_eq!(encoded("g-4", &expected), json);

        let json = r#"{"Created":{"name":"g-2","settings":{"source":{"Stream":"order-1"},"start":"End","strategy":"RoundRobin","ack_timeout_ms":30000,"max_retries":5,"max_in_flight":1000,"checkpoint_every":100,"skip_damaged":false}}}"#;
        let expected = GroupSettings {
            start: SubscribeFrom::End,
            ..GroupSettings::stream("order-1")
        };
        assert_eq!(settings(json), expected);
        assert_eq!(encoded("g-2", &expected), json);
    }

    /// Definitions written before `skip_damaged` and the regular-expression filters existed.
    #[test]
    fn older_definitions_without_later_fields_still_decode() {
        let json = r#"{"Created":{"name":"old","settings":{"source":{"All":{"types":["A"],"tags":[],"stream_prefix":null,"since_micros":null,"until_micros":null}},"start":"Start","strategy":"RoundRobin","ack_timeout_ms":30000,"max_retries":5,"max_in_flight":1000,"checkpoint_every":100}}}"#;
        assert_eq!(
            settings(json),
            GroupSettings {
                source: GroupSource::All(Filter::all().with_type("A")),
                ..GroupSettings::all()
            }
        );
        let json = r#"{"Created":{"name":"old","settings":{"source":{"All":{}},"start":"Start","strategy":"RoundRobin","ack_timeout_ms":30000,"max_retries":5,"max_in_flight":1000,"checkpoint_every":100}}}"#;
        assert_eq!(settings(json), GroupSettings::all());
    }

    #[test]
    fn a_parked_record_of_today_decodes_and_encodes_the_same() {
        let json = r#"{"position":2,"stream":"order-1","revision":0,"event_id":"0b7e1c2a-3f4d-4e5f-8a9b-0c1d2e3f4a5b","deliveries":1,"reason":"poison"}"#;
        let expected = ParkedRecord {
            position: 2,
            stream: "order-1".into(),
            revision: 0,
            event_id: "0b7e1c2a-3f4d-4e5f-8a9b-0c1d2e3f4a5b".parse().unwrap(),
            deliveries: 1,
            reason: "poison".into(),
        };
        let stored: StoredParkedV1 = system::decode("$group-g-parked", 0, json.as_bytes()).unwrap();
        assert_eq!(ParkedRecord::try_from(stored).unwrap(), expected);
        assert_eq!(system::encode(&StoredParkedV1::from(&expected)), json.as_bytes());
    }

    #[test]
    fn stream_metadata_of_today_decodes_and_encodes_the_same() {
        let json = r#"{"max_age_ms":86400000,"max_count":100,"truncate_before":1,"custom":{"owner":"billing","tier":2},"tombstoned":true}"#;
        let mut custom = serde_json::Map::new();
        custom.insert("owner".into(), "billing".into());
        custom.insert("tier".into(), 2.into());
        let expected = StreamMetadata {
            max_age_ms: Some(86_400_000),
            max_count: Some(100),
            truncate_before: Some(1),
            custom,
            tombstoned: true,
        };
        let event = RecordedEvent {
            data: json.as_bytes().to_vec().into(),
            ..recorded("$meta-order-1")
        };
        assert_eq!(crate::stream_metadata::parse(&event).unwrap(), expected);
        assert_eq!(crate::stream_metadata::encode(&expected), json.as_bytes());
        assert_eq!(crate::stream_metadata::encode(&StreamMetadata::default()), b"{}");
    }

    fn recorded(stream: &str) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream: stream.into(),
            revision: 0,
            position: 0,
            timestamp_micros: 0,
            personal: crate::event::Personal::Plain,
            event_type: "$Metadata".into(),
            content_type: crate::event::ContentType::Json,
            data: Default::default(),
            metadata: Default::default(),
            tags: Vec::new(),
        }
    }

    fn open(dir: &std::path::Path) -> Store {
        Store::open(dir, Options::default().durability(Durability::Never)).unwrap()
    }

    fn bad(store: &Store, stream: &str, data: &str) -> u64 {
        store
            .append_system(
                stream,
                ExpectedVersion::Any,
                vec![EventData::json("$X", data.to_string())],
            )
            .unwrap()
            .position
    }

    fn is_bad(result: Result<impl std::fmt::Debug, Error>, stream: &str, position: u64, says: &str) {
        match result {
            Err(e @ Error::BadSystemEvent { .. }) => {
                let Error::BadSystemEvent {
                    stream: s,
                    position: p,
                    reason,
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!((s.as_str(), *p), (stream, position), "{e}");
                assert!(reason.contains(says), "{e}");
                assert!(e.is_corruption());
                assert!(e.to_string().contains(stream), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unreadable_system_event_is_a_bad_system_event_naming_its_stream_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .append("s", ExpectedVersion::Any, vec![EventData::json("E", "{}")])
            .unwrap();
        store.create_group("g", GroupSettings::stream("s")).unwrap();
        // A checkpoint of a later version.
        let at = bad(&store, "$group-g-checkpoint", r#"{"version":2,"checkpoint":0}"#);
        store.close().unwrap();
        let store = open(dir.path());
        is_bad(
            store.group("g").map(|_| ()),
            "$group-g-checkpoint",
            at,
            "record version 2",
        );
        // A parked record that is not one.
        let good = system::encode(&StoredCheckpointV1 {
            version: Version1,
            checkpoint: 0,
            parked: 0,
            parked_replayed: 0,
            skipped_damaged: 0,
            skipped_through: 0,
        });
        store
            .append_system(
                "$group-g-checkpoint",
                ExpectedVersion::Any,
                vec![EventData::json("$Checkpoint", good)],
            )
            .unwrap();
        let at = bad(&store, "$group-g-parked", r#"{"position":"two"}"#);
        is_bad(
            store.group("g").unwrap().replay_parked(),
            "$group-g-parked",
            at,
            "invalid type",
        );
        // A definition with a bad regular expression.
        let at = bad(
            &store,
            "$groups",
            r#"{"Created":{"name":"h","settings":{"source":{"All":{"stream_regex":"("}},"start":"Start","strategy":"Pinned","ack_timeout_ms":1,"max_retries":1,"max_in_flight":1,"checkpoint_every":1}}}"#,
        );
        is_bad(store.groups_list(), "$groups", at, "regular expression");
        // A snapshot header.
        let at = store
            .append_system(
                "$snapshot-s",
                ExpectedVersion::Any,
                vec![EventData::binary("$Snapshot", &b"x"[..]).with_metadata(&b"{}"[..])],
            )
            .unwrap()
            .position;
        is_bad(store.load_snapshot("s"), "$snapshot-s", at, "missing field `revision`");
        // Stream metadata stops the store from opening.
        let at = bad(&store, "$meta-s", r#"{"max_count":1,"max_size":2}"#);
        store.close().unwrap();
        is_bad(
            Store::open(dir.path(), Options::default().durability(Durability::Never)).map(|_| ()),
            "$meta-s",
            at,
            "unknown field `max_size`",
        );
    }
}
