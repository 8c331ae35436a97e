//! Metadata-field filters in every path that reads the log in a loop or in
//! batches (conditional appends, subscriptions, consumer groups, replays,
//! counts): a match after many non-matching events is found. A review found
//! each of these failing or stuck under the scan limit that metadata reads
//! once had.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use annal::{
    AppendCondition, Direction, Durability, EventData, ExpectedVersion, Filter, GroupSettings, GroupSource, LogFrom,
    Message, Options, Query, QueryItem, ReplayOptions, SimStorage, Store, SubscribeFrom,
};

/// Non-matching events before the match (more than one read batch).
const OTHERS: usize = 5_000;

/// A store holding `others` events with actor "other", then (if `wanted`)
/// one with actor "wanted".
fn store(others: usize, wanted: bool) -> Store {
    let options = Options::default().no_compression().durability(Durability::Never);
    let store = Store::open_with(Arc::new(SimStorage::new()), "/r", options).unwrap();
    let ev = |actor: &str| EventData::json("T", "{}").with_metadata(format!(r#"{{"actor":"{actor}"}}"#));
    for _ in 0..others {
        store.append("s-1", ExpectedVersion::Any, vec![ev("other")]).unwrap();
    }
    if wanted {
        store.append("s-1", ExpectedVersion::Any, vec![ev("wanted")]).unwrap();
    }
    store
}

fn wanted() -> Filter {
    Filter::all().with_metadata("actor", "wanted")
}

/// No event matches the condition's item, so the append succeeds (it used to
/// fail once a metadata scan limit was passed).
#[test]
fn metadata_filters_in_every_path_conditional_append_with_a_metadata_item_and_no_conflict_succeeds() {
    let store = store(OTHERS, false);
    let cond = AppendCondition {
        query: Query {
            items: vec![QueryItem {
                metadata: vec![("actor".into(), "wanted".into())],
                ..QueryItem::default()
            }],
        },
        after: None,
    };
    let r = store.append_if("s-2", ExpectedVersion::Any, vec![EventData::json("T", "{}")], cond);
    assert!(r.is_ok(), "{r:?}");
}

/// A catch-up subscription with a metadata filter delivers the one match
/// after many non-matching events (it used to fail, its cursor stuck).
#[test]
fn metadata_filters_in_every_path_subscription_with_a_metadata_filter_delivers_a_match_after_many_others() {
    let store = store(OTHERS, true);
    let mut sub = store.subscribe_all(SubscribeFrom::Start, wanted());
    let m = sub.next_timeout(Duration::from_millis(500));
    assert!(
        matches!(m, Ok(Some(Message::Event(ref e))) if e.position == OTHERS as u64),
        "{m:?}"
    );
}

/// A consumer group with a metadata filter delivers the match (its refill used
/// to fail on every fetch, the group stuck for good).
#[test]
fn metadata_filters_in_every_path_consumer_group_with_a_metadata_filter_delivers_a_match_after_many_others() {
    let store = store(OTHERS, true);
    let settings = GroupSettings {
        source: GroupSource::All(wanted()),
        ..GroupSettings::all()
    };
    store.create_group("g", settings).unwrap();
    let g = store.group("g").unwrap();
    let got = g.consumer("c").fetch(10, Duration::from_millis(200));
    let got = got.map(|d| d.iter().map(|d| d.event.position).collect::<Vec<_>>());
    assert_eq!(got.unwrap(), vec![OTHERS as u64]);
}

/// A replay with a metadata filter hands the match to the handler.
#[test]
fn metadata_filters_in_every_path_replay_with_a_metadata_filter_reaches_a_match_after_many_others() {
    let store = store(OTHERS, true);
    let options = ReplayOptions {
        filter: wanted(),
        ..ReplayOptions::default()
    };
    let mut seen = Vec::new();
    let r = store.replay(&options, |e| {
        seen.push(e.position);
        Ok::<(), String>(())
    });
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(seen, vec![OTHERS as u64]);
}

/// A metadata count that matches nothing is 0, and one with a match 1.
#[test]
fn metadata_filters_in_every_path_count_with_a_metadata_filter_counts_past_many_others() {
    assert_eq!(store(OTHERS, false).count(&wanted()).unwrap(), 0);
    assert_eq!(store(OTHERS, true).count(&wanted()).unwrap(), 1);
}

/// A scan that meets no match answers empty.
#[test]
fn metadata_filters_in_every_path_a_scan_with_no_match_answers_empty() {
    let store = store(OTHERS, false);
    let r = store.read_all(Direction::Forward, LogFrom::Start, 10, &wanted());
    assert_eq!(r.unwrap().len(), 0);
}
