//! Issue 11, item 9: one damaged event in a sealed segment must not wedge the
//! readers that reach it. Subscriptions and consumer groups deliver everything
//! before the damage, then stop with a typed error naming the position, or, when
//! asked, skip it and go on; repair clears it.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use annal::{
    Direction, Durability, Error, EventData, ExpectedVersion, Filter, GroupSettings, LogFrom, Message, Options,
    SimStorage, Storage, Store, SubscribeFrom, SubscriptionOptions,
};

const DIR: &str = "/d";

fn options() -> Options {
    Options::default()
        .no_compression()
        .durability(Durability::Always)
        .segment_size(4096)
}

/// 60 events over several segments, closed; one event's data in the first
/// (sealed) segment is damaged. Returns the store reopened and the damaged position.
fn store_with_a_damaged_event(sim: &SimStorage) -> (Store, u64) {
    let disk: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), DIR, options()).unwrap();
    for n in 0..60u64 {
        store
            .append(
                &format!("s-{}", n % 4),
                ExpectedVersion::Any,
                vec![EventData::json("E", format!(r#"{{"n":{n}}}"#))],
            )
            .unwrap();
    }
    store.close().unwrap();
    let seg = Path::new(DIR).join("00000000000000000000.seg");
    let bytes = sim.read_file(&seg).unwrap();
    let at = bytes.windows(7).position(|w| w == br#"{"n":5}"#).unwrap();
    sim.flip_bit(&seg, at as u64 + 5, 0).unwrap();
    (Store::open_with(disk, DIR, options()).unwrap(), 5)
}

#[test]
fn a_subscription_delivers_everything_before_the_damage_then_names_it() {
    let sim = SimStorage::new();
    let (store, damaged) = store_with_a_damaged_event(&sim);
    let mut sub = store.subscribe_all(SubscribeFrom::Start, Filter::all());
    let mut seen = Vec::new();
    let err = loop {
        match sub.next_timeout(Duration::from_secs(5)) {
            Ok(Some(Message::Event(e))) => seen.push(e.position),
            Ok(Some(Message::Checkpoint(_))) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(seen, (0..damaged).collect::<Vec<_>>());
    match &err {
        Error::Damaged { position, source } => {
            assert_eq!(*position, damaged);
            assert!(matches!(**source, Error::Corruption { .. }));
        }
        other => panic!("expected Damaged, got {other}"),
    }
    // It stays stopped there (never skips silently).
    assert!(matches!(
        sub.next_timeout(Duration::from_millis(10)),
        Err(Error::Damaged { position: 5, .. })
    ));
    // A read of the global log that would have to pass it fails too.
    assert!(
        store
            .read_all(Direction::Forward, LogFrom::Start, 100, &Filter::all())
            .is_err()
    );
    assert_eq!(
        store
            .read_all(Direction::Forward, LogFrom::Start, 5, &Filter::all())
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn a_subscription_that_skips_damage_says_so_and_goes_on() {
    let sim = SimStorage::new();
    let (store, damaged) = store_with_a_damaged_event(&sim);
    let options = SubscriptionOptions {
        skip_damaged: true,
        batch: 7,
        ..Default::default()
    };
    let mut sub = store.subscribe_all_with(SubscribeFrom::Start, Filter::all(), options);
    let mut seen = Vec::new();
    let mut skipped = Vec::new();
    while let Some(m) = sub.next_timeout(Duration::from_millis(200)).unwrap() {
        match m {
            Message::Event(e) => seen.push(e.position),
            Message::Damaged { position, next, reason } => {
                assert!(reason.contains(".seg"), "{reason}");
                skipped.push((position, next));
            }
            Message::Checkpoint(_) => {}
        }
    }
    assert_eq!(skipped, vec![(damaged, damaged + 1)]);
    let expected: Vec<u64> = (0..60).filter(|p| *p != damaged).collect();
    assert_eq!(seen, expected);
}

#[test]
fn a_consumer_group_stops_at_the_damage_or_skips_it_as_configured() {
    let sim = SimStorage::new();
    let (store, damaged) = store_with_a_damaged_event(&sim);
    // Stopping (the default): everything before, then a typed error, every time.
    store.create_group("stopper", GroupSettings::all()).unwrap();
    let group = store.group("stopper").unwrap();
    let c = group.consumer("c1");
    let mut got = Vec::new();
    let err = loop {
        match c.fetch(3, Duration::from_millis(50)) {
            Ok(batch) => {
                assert!(
                    !batch.is_empty(),
                    "a fetch came back empty before the damage was reported"
                );
                let ids: Vec<_> = batch.iter().map(|d| d.event.id).collect();
                got.extend(batch.iter().map(|d| d.event.position));
                c.ack(&ids).unwrap();
            }
            Err(e) => break e,
        }
    };
    assert_eq!(got, (0..damaged).collect::<Vec<_>>());
    assert!(
        matches!(err, Error::Damaged { position, .. } if position == damaged),
        "{err}"
    );
    assert!(matches!(
        c.fetch(3, Duration::from_millis(10)),
        Err(Error::Damaged { .. })
    ));
    // Skipping: every readable event, the damaged one left out.
    let settings = GroupSettings {
        skip_damaged: true,
        ..GroupSettings::all()
    };
    store.create_group("skipper", settings).unwrap();
    let group = store.group("skipper").unwrap();
    let c = group.consumer("c1");
    let mut got = Vec::new();
    loop {
        let batch = c.fetch(10, Duration::from_millis(50)).unwrap();
        if batch.is_empty() {
            break;
        }
        let ids: Vec<_> = batch.iter().map(|d| d.event.id).collect();
        got.extend(batch.iter().map(|d| d.event.position).filter(|p| *p < 60));
        c.ack(&ids).unwrap();
    }
    let expected: Vec<u64> = (0..60).filter(|p| *p != damaged).collect();
    assert_eq!(got, expected);
}

/// A group that skips damage leaves a trace: its info counts the positions
/// skipped and names the last damage, the store keeps it as its last
/// background error, and the count is saved, once, across a restart that
/// meets the damage again (the group's checkpoint was still before it).
#[test]
fn a_group_that_skips_damage_counts_it_once_across_restarts() {
    let sim = SimStorage::new();
    let (store, damaged) = store_with_a_damaged_event(&sim);
    let settings = GroupSettings {
        skip_damaged: true,
        checkpoint_every: 1_000,
        ..GroupSettings::all()
    };
    store.create_group("skipper", settings).unwrap();
    let group = store.group("skipper").unwrap();
    let c = group.consumer("c1");
    // Nothing acknowledged: the checkpoint stays at the start, before the damage.
    let mut got = Vec::new();
    loop {
        let batch = c.fetch(10, Duration::from_millis(50)).unwrap();
        if batch.is_empty() {
            break;
        }
        got.extend(batch.iter().map(|d| d.event.position));
    }
    assert!(!got.contains(&damaged) && got.contains(&(damaged + 1)), "{got:?}");
    let info = group.info();
    assert_eq!(info.skipped_damaged, 1);
    let (from, to, why) = info.last_skipped_damage.clone().unwrap();
    assert_eq!((from, to), (damaged, damaged + 1));
    assert!(why.contains(".seg"), "{why}");
    let background = store.stats().last_background_error.unwrap_or_default();
    assert!(
        background.contains("skipper") && background.contains("damaged"),
        "{background}"
    );
    drop(c);
    drop(group);
    store.close().unwrap();

    let store = Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap();
    let group = store.group("skipper").unwrap();
    assert_eq!(group.info().skipped_damaged, 1, "the count was not saved");
    assert!(group.info().checkpoint <= damaged);
    let c = group.consumer("c1");
    loop {
        let batch = c.fetch(10, Duration::from_millis(50)).unwrap();
        if batch.is_empty() {
            break;
        }
        c.ack(&batch.iter().map(|d| d.event.id).collect::<Vec<_>>()).unwrap();
    }
    assert_eq!(group.info().skipped_damaged, 1, "the same damage counted twice");
}

#[test]
fn repair_clears_the_damage_for_subscribers() {
    let sim = SimStorage::new();
    let (store, damaged) = store_with_a_damaged_event(&sim);
    store.close().unwrap();
    let report = annal::repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    assert_eq!(report.lost_positions, 1);
    let store = Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap();
    let mut sub = store.subscribe_all(SubscribeFrom::Start, Filter::all());
    let mut seen = Vec::new();
    while let Some(m) = sub.next_timeout(Duration::from_millis(200)).unwrap() {
        if let Message::Event(e) = m {
            seen.push(e.position);
        }
    }
    let expected: Vec<u64> = (0..60).filter(|p| *p != damaged).collect();
    assert_eq!(seen, expected);
}

/// Review of issue 15: a version-2 index finds ids by a 32-bit key that two
/// ids may share. A damaged frame of one of them must not make the other,
/// never stored, look damaged: its lookup is `None` and an append with it
/// succeeds, while a lookup of the damaged event still reports the damage.
#[test]
fn a_damaged_event_does_not_block_a_new_id_that_shares_its_index_key() {
    use annal::format::index::id_key;
    // Two ids with one key: a birthday search over a fixed sequence of ids.
    let mut seen = std::collections::HashMap::new();
    let (a, c) = (1u128..)
        .map(|n| uuid::Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
        .find_map(|id| seen.insert(id_key(&id), id).map(|other| (other, id)))
        .unwrap();
    assert_ne!(a, c);
    let sim = SimStorage::new();
    let disk: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), DIR, options()).unwrap();
    store
        .append(
            "s-a",
            ExpectedVersion::Any,
            vec![EventData::json("E", r#"{"victim":1}"#).with_id(a)],
        )
        .unwrap();
    assert!(store.seal_active_segment().unwrap());
    store.close().unwrap();
    let seg = Path::new(DIR).join("00000000000000000000.seg");
    let bytes = sim.read_file(&seg).unwrap();
    let at = bytes.windows(10).position(|w| w == br#"{"victim":"#).unwrap();
    sim.flip_bit(&seg, at as u64 + 3, 0).unwrap();

    let store = Store::open_with(disk, DIR, options()).unwrap();
    assert!(
        store.event_by_id(a).is_err(),
        "the damaged event's own lookup reports it"
    );
    assert_eq!(store.event_by_id(c).unwrap(), None);
    let r = store
        .append("s-c", ExpectedVersion::Any, vec![EventData::json("E", "{}").with_id(c)])
        .unwrap();
    assert_eq!(store.event_by_id(c).unwrap().unwrap().position, r.position);
}

/// A group that skips damage saves its checkpoint at once (the skip must not
/// be forgotten). When that save fails in a fetch that had already taken the
/// events before the damage, those events are handed out and the save's
/// error comes with the next fetch: it is never dropped, though the group
/// has moved past the damage.
#[test]
fn a_failed_save_after_a_skip_reaches_the_next_fetch() {
    let sim = SimStorage::new();
    let (store, damaged) = store_with_a_damaged_event(&sim);
    let settings = GroupSettings {
        skip_damaged: true,
        ..GroupSettings::all()
    };
    store.create_group("skipper", settings).unwrap();
    let group = store.group("skipper").unwrap();
    let c = group.consumer("c1");
    // The next write is the checkpoint saved after the skip.
    sim.fail_nth_write(1);
    let batch = c.fetch(10, Duration::ZERO).unwrap();
    let got: Vec<u64> = batch.iter().map(|d| d.event.position).collect();
    assert_eq!(got, (0..damaged).collect::<Vec<_>>());
    assert!(
        c.fetch(10, Duration::ZERO).is_err(),
        "the failed save of the skip was dropped"
    );
}

/// The error kept from one consumer's fetch goes to that consumer's next
/// fetch, not to another consumer of the group (whose fetch did not meet it).
#[test]
fn a_kept_error_goes_to_the_consumer_that_met_it() {
    let sim = SimStorage::new();
    let (store, damaged) = store_with_a_damaged_event(&sim);
    let settings = GroupSettings {
        skip_damaged: true,
        ..GroupSettings::all()
    };
    store.create_group("skipper", settings).unwrap();
    let group = store.group("skipper").unwrap();
    let (c1, c2) = (group.consumer("c1"), group.consumer("c2"));
    sim.fail_nth_write(1);
    assert_eq!(c1.fetch(10, Duration::ZERO).unwrap().len() as u64, damaged);
    let other = c2.fetch(10, Duration::ZERO);
    assert!(other.is_ok(), "c2 was told c1's error: {:?}", other.err());
    assert!(c1.fetch(10, Duration::ZERO).is_err(), "c1 was not told its error");
}
