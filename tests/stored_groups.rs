//! The JSON records annal keeps in its system streams are part of the on-disk
//! format: a group's definition in `$groups`, its checkpoints and parked
//! records, a stream's metadata in `$meta-<stream>` and a snapshot's header.
//! This test pins their exact bytes for a fixed input (every field set, none
//! at its default), checks that format.md, "System stream records", shows the
//! same bytes, and that a reopened store reads them back to the same values. Renaming a field of a
//! public configuration type must not change anything here.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use annal::{
    ContentType, Direction, Durability, EventData, ExpectedVersion, Filter, GroupSettings, GroupSource, NackAction,
    Options, Store, Strategy, StreamFrom, StreamMetadata, SubscribeFrom, parked_stream,
};
use std::time::Duration;
use uuid::Uuid;

const FORMAT: &str = include_str!("../format.md");

const GROUP_CREATED_ALL: &str = r#"{"Created":{"name":"g-1","settings":{"source":{"All":{"types":["OrderPlaced","OrderPaid"],"tags":["tenant:7"],"stream_prefix":"order-","since_micros":1700000000000000,"until_micros":4000000000000000,"stream_regex":"^order-[0-9]+$","type_regex":"^(?!\\$)Order"}},"start":{"After":41},"strategy":"Pinned","ack_timeout_ms":2500,"max_retries":3,"max_in_flight":64,"checkpoint_every":10,"skip_damaged":true,"extra":{"app.owner":"billing"}}}}"#;
const GROUP_CREATED_STREAM: &str = r#"{"Created":{"name":"g-2","settings":{"source":{"Stream":"order-1"},"start":"End","strategy":"RoundRobin","ack_timeout_ms":30000,"max_retries":5,"max_in_flight":1000,"checkpoint_every":100,"skip_damaged":false}}}"#;
const GROUP_CREATED_DEFAULTS: &str = r#"{"Created":{"name":"g-3","settings":{"source":{"All":{"types":[],"tags":[],"stream_prefix":null,"since_micros":null,"until_micros":null,"stream_regex":null,"type_regex":null}},"start":"Start","strategy":"RoundRobin","ack_timeout_ms":30000,"max_retries":5,"max_in_flight":1000,"checkpoint_every":100,"skip_damaged":false}}}"#;
const GROUP_DELETED: &str = r#"{"Deleted":{"name":"g-3"}}"#;
const PARKED: &str = r#"{"position":2,"stream":"order-1","revision":0,"event_id":"0b7e1c2a-3f4d-4e5f-8a9b-0c1d2e3f4a5b","deliveries":1,"reason":"poison"}"#;
const CHECKPOINT: &str = r#"{"checkpoint":1,"parked":1,"parked_replayed":1}"#;
/// A forwarder's checkpoint (tests/forward.rs checks that a forwarder writes this shape).
const FORWARD_CHECKPOINT: &str = r#"{"position":1207,"delivered":1000,"parked":1,"skipped":0}"#;
const METADATA_SET: &str =
    r#"{"max_age_ms":86400000,"max_count":100,"truncate_before":1,"custom":{"owner":"billing","tier":2}}"#;
const METADATA_HARD_DELETED: &str = r#"{"max_age_ms":86400000,"max_count":100,"truncate_before":1,"custom":{"owner":"billing","tier":2},"tombstoned":true}"#;
const SNAPSHOT_HEADER: &str = r#"{"revision":3}"#;

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Options::default().durability(Durability::Never)).unwrap()
}

fn event_id() -> Uuid {
    "0b7e1c2a-3f4d-4e5f-8a9b-0c1d2e3f4a5b".parse().unwrap()
}

/// Every field of the group's settings set, none to its default.
fn settings_all() -> GroupSettings {
    GroupSettings {
        source: GroupSource::All(
            Filter::all()
                .with_type("OrderPlaced")
                .with_type("OrderPaid")
                .with_tag("tenant:7")
                .with_stream_prefix("order-")
                .with_time(Some(1_700_000_000_000_000), Some(4_000_000_000_000_000))
                .with_stream_regex("^order-[0-9]+$")
                .unwrap()
                .with_type_regex(r"^(?!\$)Order")
                .unwrap(),
        ),
        start: SubscribeFrom::After(41),
        strategy: Strategy::Pinned,
        ack_timeout_ms: 2500,
        max_retries: 3,
        max_in_flight: 64,
        checkpoint_every: 10,
        skip_damaged: true,
        extra: [("app.owner".to_string(), "billing".to_string())].into(),
    }
}

fn settings_stream() -> GroupSettings {
    GroupSettings {
        start: SubscribeFrom::End,
        ..GroupSettings::stream("order-1")
    }
}

fn metadata() -> StreamMetadata {
    let mut custom = serde_json::Map::new();
    custom.insert("owner".into(), "billing".into());
    custom.insert("tier".into(), 2.into());
    StreamMetadata {
        max_age_ms: Some(86_400_000),
        max_count: Some(100),
        truncate_before: Some(1),
        custom,
        tombstoned: false,
    }
}

/// The data (or, for a snapshot, the metadata) of every event of a system stream, with its type.
fn records(store: &Store, stream: &str, snapshot: bool) -> Vec<(String, String)> {
    store
        .read_stream(stream, Direction::Forward, StreamFrom::Start, 100)
        .unwrap()
        .into_iter()
        .map(|e| {
            // A snapshot's data is the application's; its header is the metadata.
            let (content_type, bytes) = if snapshot {
                (ContentType::Binary, e.metadata)
            } else {
                (ContentType::Json, e.data)
            };
            assert_eq!(e.content_type, content_type, "{stream}");
            (e.event_type, String::from_utf8(bytes.to_vec()).unwrap())
        })
        .collect()
}

/// The JSON examples of format.md, each after a `<!-- stored: KIND -->` marker.
fn documented() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut kind = None;
    let mut lines = FORMAT.lines();
    while let Some(l) = lines.next() {
        let l = l.trim();
        if let Some(k) = l.strip_prefix("<!-- stored:").and_then(|k| k.strip_suffix("-->")) {
            kind = Some(k.trim().to_string());
        } else if l == "```json" {
            let k = kind
                .take()
                .expect("a JSON block of format.md without a `<!-- stored: KIND -->` marker");
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push((k, block.join("\n")));
        }
    }
    assert!(kind.is_none(), "a stored marker without a JSON block");
    out
}

#[test]
fn format_md_shows_the_golden_records() {
    let documented = documented();
    let golden = [
        ("group-created", GROUP_CREATED_ALL),
        ("group-created", GROUP_CREATED_STREAM),
        ("group-deleted", GROUP_DELETED),
        ("checkpoint", CHECKPOINT),
        ("parked", PARKED),
        ("forward-checkpoint", FORWARD_CHECKPOINT),
        ("metadata", METADATA_HARD_DELETED),
        ("snapshot", SNAPSHOT_HEADER),
    ];
    // Every golden record is documented, and every documented record is a golden one.
    assert_eq!(
        documented,
        golden
            .iter()
            .map(|(k, j)| (k.to_string(), j.to_string()))
            .collect::<Vec<_>>()
    );
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(t, d)| (t.to_string(), d.to_string())).collect()
}

#[test]
fn system_stream_records_have_the_documented_bytes_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create_group("g-1", settings_all()).unwrap();
        // Created before its stream exists, so `End` starts at revision 0.
        let g2 = store.create_group("g-2", settings_stream()).unwrap();
        store
            .append(
                "order-1",
                ExpectedVersion::NoStream,
                vec![EventData::json("OrderPlaced", "{}").with_id(event_id())],
            )
            .unwrap();
        let c = g2.consumer("c");
        let d = c.fetch(1, Duration::from_secs(2)).unwrap();
        assert_eq!(d.len(), 1);
        c.nack(d[0].event.id, NackAction::Park, "poison").unwrap();
        assert_eq!(g2.replay_parked().unwrap(), 1);
        // Once the replayed event is acknowledged, the saved checkpoint counts it
        // replayed: the cursor passed revision 0, one parked, one replayed.
        let d = c.fetch(1, Duration::from_secs(2)).unwrap();
        assert_eq!(d.len(), 1);
        c.ack(&[d[0].event.id]).unwrap();
        g2.save_checkpoint().unwrap();
        drop(c);
        drop(g2);
        store.create_group("g-3", GroupSettings::all()).unwrap();
        store.delete_group("g-3").unwrap();

        store.set_stream_metadata("order-1", metadata()).unwrap();
        store.delete_stream("order-1", ExpectedVersion::Any, true).unwrap();

        for i in 0..4 {
            store
                .append(
                    "cart-9",
                    ExpectedVersion::Any,
                    vec![EventData::json("Added", format!("{i}"))],
                )
                .unwrap();
        }
        store.save_snapshot("cart-9", 3, &b"state"[..]).unwrap();

        assert_eq!(
            records(&store, "$groups", false),
            pairs(&[
                ("$GroupCreated", GROUP_CREATED_ALL),
                ("$GroupCreated", GROUP_CREATED_STREAM),
                ("$GroupCreated", GROUP_CREATED_DEFAULTS),
                ("$GroupDeleted", GROUP_DELETED),
            ])
        );
        assert_eq!(
            records(&store, &parked_stream("g-2"), false),
            pairs(&[("$Parked", PARKED)])
        );
        assert_eq!(
            records(&store, "$group-g-2-checkpoint", false),
            pairs(&[("$Checkpoint", CHECKPOINT)])
        );
        assert_eq!(
            records(&store, "$meta-order-1", false),
            pairs(&[("$Metadata", METADATA_SET), ("$Metadata", METADATA_HARD_DELETED)])
        );
        assert_eq!(
            records(&store, "$snapshot-cart-9", true),
            pairs(&[("$Snapshot", SNAPSHOT_HEADER)])
        );
        store.close().unwrap();
    }

    // A reopened store reads every record back to the values it was given.
    let store = open(dir.path());
    assert_eq!(
        store.groups_list().unwrap(),
        vec![
            ("g-1".to_string(), settings_all()),
            ("g-2".to_string(), settings_stream())
        ]
    );
    let info = store.group("g-2").unwrap().info();
    assert_eq!((info.checkpoint, info.saved_checkpoint, info.parked), (1, 1, 1));
    assert_eq!(
        store.stream_metadata("order-1"),
        Some(StreamMetadata {
            tombstoned: true,
            ..metadata()
        })
    );
    let snapshot = store.load_snapshot("cart-9").unwrap().unwrap();
    assert_eq!((snapshot.revision, &snapshot.data[..]), (3, &b"state"[..]));
}
