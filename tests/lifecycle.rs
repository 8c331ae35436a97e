//! Stream metadata (max count, truncate-before, max age, custom fields), soft
//! and hard deletion, and snapshots, honoured by reads at once and across reopens.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;
use std::sync::Arc;

use annal::{
    Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, ManualClock, Options, Store, StreamFrom,
    StreamMetadata,
};

fn open(dir: &Path) -> Store {
    Store::open(dir, Options::default().durability(Durability::Never)).unwrap()
}

fn fill(store: &Store, stream: &str, n: u64) {
    for i in 0..n {
        store
            .append(stream, ExpectedVersion::Any, vec![EventData::json("E", format!("{i}"))])
            .unwrap();
    }
}

fn revs(store: &Store, stream: &str, dir: Direction) -> Vec<u64> {
    store
        .read_stream(stream, dir, StreamFrom::Start, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.revision)
        .collect()
}

fn all_of(store: &Store, stream: &str) -> Vec<u64> {
    store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap()
        .iter()
        .filter(|e| e.stream == stream)
        .map(|e| e.revision)
        .collect()
}

#[test]
fn max_count_and_truncate_before_hide_events_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "s", 10);
    fill(&store, "other", 3);
    let meta = StreamMetadata {
        max_count: Some(3),
        ..Default::default()
    };
    store.set_stream_metadata("s", meta.clone()).unwrap();
    assert_eq!(revs(&store, "s", Direction::Forward), vec![7, 8, 9]);
    assert_eq!(revs(&store, "s", Direction::Backward), vec![9, 8, 7]);
    assert_eq!(all_of(&store, "s"), vec![7, 8, 9]);
    assert_eq!(revs(&store, "other", Direction::Forward), vec![0, 1, 2]);
    let page = store
        .read_stream("s", Direction::Forward, StreamFrom::Revision(2), 2)
        .unwrap();
    assert_eq!(page.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![7, 8]);
    fill(&store, "s", 1);
    assert_eq!(revs(&store, "s", Direction::Forward), vec![8, 9, 10]);
    store
        .set_stream_metadata(
            "s",
            StreamMetadata {
                truncate_before: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(revs(&store, "s", Direction::Forward), (5..=10).collect::<Vec<_>>());
    assert_eq!(store.stream_metadata("s").unwrap().truncate_before, Some(5));
}

#[test]
fn max_age_hides_old_events_and_custom_fields_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Time moves by hand: the events are a minute old without waiting a minute.
        let clock = Arc::new(ManualClock::new());
        let store = Store::open(
            dir.path(),
            Options::default().durability(Durability::Never).clock(clock.clone()),
        )
        .unwrap();
        fill(&store, "t", 5);
        clock.advance(std::time::Duration::from_secs(60));
        let mut custom = serde_json::Map::new();
        custom.insert("owner".into(), serde_json::json!("billing"));
        store
            .set_stream_metadata(
                "t",
                StreamMetadata {
                    max_age_ms: Some(30_000),
                    custom,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(revs(&store, "t", Direction::Forward).is_empty(), "all five are too old");
        fill(&store, "t", 1);
        assert_eq!(revs(&store, "t", Direction::Forward), vec![5]);
        store.close().unwrap();
    }
    let store = open(dir.path());
    let meta = store.stream_metadata("t").unwrap();
    assert_eq!(meta.max_age_ms, Some(30_000));
    assert_eq!(meta.custom["owner"], serde_json::json!("billing"));
    assert!(matches!(
        store.set_stream_metadata("$meta-t", StreamMetadata::default()),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn a_metadata_write_with_the_revision_it_read_refuses_when_another_wrote_in_between() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "s", 3);
    assert_eq!(store.stream_metadata_with_revision("s"), (None, None));
    let first = StreamMetadata {
        max_count: Some(10),
        ..Default::default()
    };
    store
        .set_stream_metadata_expected("s", ExpectedVersion::NoStream, first.clone())
        .unwrap();
    let (meta, rev) = store.stream_metadata_with_revision("s");
    assert_eq!((meta, rev), (Some(first.clone()), Some(0)));

    // Two editors read revision 0; the first to write wins, the second is refused
    // with the revision it met, and what the first wrote stays.
    let a = StreamMetadata {
        max_count: Some(20),
        ..Default::default()
    };
    let b = StreamMetadata {
        max_age_ms: Some(1_000),
        ..Default::default()
    };
    store
        .set_stream_metadata_expected("s", ExpectedVersion::Exact(0), a.clone())
        .unwrap();
    match store.set_stream_metadata_expected("s", ExpectedVersion::Exact(0), b) {
        Err(Error::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, Some(1)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        store.set_stream_metadata_expected("s", ExpectedVersion::NoStream, first),
        Err(Error::WrongExpectedVersion { .. })
    ));
    assert_eq!(store.stream_metadata_with_revision("s"), (Some(a.clone()), Some(1)));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.stream_metadata_with_revision("s"), (Some(a), Some(1)));
}

#[test]
fn soft_delete_hides_the_stream_and_appends_continue_its_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "cart-1", 4);
    let id = store
        .read_stream("cart-1", Direction::Forward, StreamFrom::Start, 1)
        .unwrap()[0]
        .id;
    assert!(matches!(
        store.delete_stream("cart-1", ExpectedVersion::Exact(1), false),
        Err(Error::WrongExpectedVersion { actual: Some(3), .. })
    ));
    assert!(matches!(
        store.delete_stream("nope", ExpectedVersion::Any, false),
        Err(Error::StreamNotFound(_))
    ));
    store.delete_stream("cart-1", ExpectedVersion::Exact(3), false).unwrap();
    assert!(matches!(
        store.read_stream("cart-1", Direction::Forward, StreamFrom::Start, 10),
        Err(Error::StreamDeleted(_))
    ));
    assert!(all_of(&store, "cart-1").is_empty());
    assert_eq!(store.event_by_id(id).unwrap(), None);
    let r = store
        .append("cart-1", ExpectedVersion::Any, vec![EventData::json("E", "{}")])
        .unwrap();
    assert_eq!(r.first_revision, 4, "revisions continue after a soft delete");
    assert_eq!(revs(&store, "cart-1", Direction::Forward), vec![4]);
}

#[test]
fn hard_delete_is_forever() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, "gone", 2);
        store.delete_stream("gone", ExpectedVersion::Any, true).unwrap();
        store.close().unwrap();
    }
    let store = open(dir.path());
    assert!(matches!(
        store.append("gone", ExpectedVersion::Any, vec![EventData::json("E", "{}")]),
        Err(Error::StreamDeleted(_))
    ));
    assert!(matches!(
        store.read_stream("gone", Direction::Forward, StreamFrom::Start, 10),
        Err(Error::StreamDeleted(_))
    ));
    assert!(matches!(
        store.set_stream_metadata("gone", StreamMetadata::default()),
        Err(Error::StreamDeleted(_))
    ));
    assert!(matches!(
        store.delete_stream("gone", ExpectedVersion::Any, false),
        Err(Error::StreamDeleted(_))
    ));
}

#[test]
fn snapshots_load_with_only_the_events_after_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, "account-9", 10);
        assert!(store.load_snapshot("account-9").unwrap().is_none());
        store.save_snapshot("account-9", 3, b"balance=3".to_vec()).unwrap();
        store.save_snapshot("account-9", 6, b"balance=6".to_vec()).unwrap();
        assert!(matches!(
            store.save_snapshot("account-9", 99, b"x".to_vec()),
            Err(Error::InvalidInput(_))
        ));
        store.close().unwrap();
    }
    let store = open(dir.path());
    let (snapshot, events) = store.load_aggregate("account-9").unwrap();
    let snapshot = snapshot.unwrap();
    assert_eq!((snapshot.revision, snapshot.data.as_ref()), (6, &b"balance=6"[..]));
    assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![7, 8, 9]);
    assert!(matches!(store.load_aggregate("other"), Err(Error::StreamNotFound(_))));
}

/// A hard delete is never undone by a metadata write or a soft delete
/// racing it: the tombstone check and the write happen under one lock (a
/// write that read the metadata before the tombstone used to overwrite it,
/// 15 times in 100 here).
#[test]
fn a_hard_delete_survives_a_metadata_write_or_soft_delete_racing_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default().durability(Durability::Always)).unwrap());
    let mut undone = Vec::new();
    for i in 0..100 {
        let s = format!("s-{i}");
        fill(&store, &s, 1);
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (st, b, name) = (store.clone(), barrier.clone(), s.clone());
        let hard = std::thread::spawn(move || {
            b.wait();
            st.delete_stream(&name, ExpectedVersion::Any, true)
        });
        barrier.wait();
        let other = if i % 2 == 0 {
            store
                .set_stream_metadata(
                    &s,
                    StreamMetadata {
                        max_age_ms: Some(1 << 40),
                        ..Default::default()
                    },
                )
                .map(|_| ())
        } else {
            store.delete_stream(&s, ExpectedVersion::Any, false)
        };
        hard.join().unwrap().unwrap();
        let tombstoned = store.stream_metadata(&s).unwrap().tombstoned;
        if !tombstoned {
            undone.push((s, other.is_ok()));
        }
    }
    assert!(undone.is_empty(), "hard deletes undone: {undone:?}");
}

/// A hard-deleted stream's snapshot is gone with it: neither read nor
/// taken, and scavenging removes it. A truncation keeps its snapshot
/// ("snapshot, then truncate what it folds in"), before and after
/// scavenging.
#[test]
fn a_hard_deleted_streams_snapshot_is_gone_and_a_truncated_streams_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_segments(dir.path());
    fill(&store, "hard", 1);
    store.save_snapshot("hard", 0, &b"{\"secret\":1}"[..]).unwrap();
    fill(&store, "kept", 100);
    store.save_snapshot("kept", 99, &b"state-99"[..]).unwrap();
    store.delete_stream("hard", ExpectedVersion::Any, true).unwrap();
    store
        .set_stream_metadata(
            "kept",
            StreamMetadata {
                truncate_before: Some(100),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(
        store.save_snapshot("hard", 0, &b"x"[..]),
        Err(Error::StreamDeleted(_))
    ));
    assert!(store.load_snapshot("hard").unwrap().is_none());
    // Scavenging rewrites sealed segments: enough more events seal these.
    fill(&store, "filler", 200);
    store.scavenge().unwrap();
    let raw = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    assert!(
        !raw.iter().any(|e| e.stream == "$snapshot-hard"),
        "scavenging keeps no snapshot of a hard-deleted stream"
    );
    let snapshot = store.load_snapshot("kept").unwrap();
    assert_eq!(
        snapshot.map(|s| (s.revision, s.data)),
        Some((99, bytes::Bytes::from_static(b"state-99")))
    );
}

/// A snapshot taken before events that a soft delete (or a truncation)
/// removed no longer fits its stream: the events after it are not all
/// there, so it is not loaded (a stream appended to again after a soft
/// delete starts from no state), not taken, and scavenging removes it.
/// A store of 4 KiB segments, so that a few hundred events seal several.
fn small_segments(dir: &Path) -> Store {
    Store::open(dir, Options::default().durability(Durability::Never).segment_size(4096)).unwrap()
}

/// Seals the segments that hold `stream`'s snapshots, scavenges, and
/// checks that none of them is left.
fn assert_scavenged_snapshots_of(store: &Store, stream: &str) {
    fill(store, "filler", 200);
    store.scavenge().unwrap();
    let raw = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    let snapshots = format!("$snapshot-{stream}");
    assert!(!raw.iter().any(|e| e.stream == snapshots), "scavenging removes it");
}

#[test]
fn a_snapshot_before_removed_events_is_neither_loaded_nor_taken_nor_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_segments(dir.path());
    fill(&store, "cart", 10);
    store.save_snapshot("cart", 5, &b"state-5"[..]).unwrap();
    store.delete_stream("cart", ExpectedVersion::Any, false).unwrap();
    fill(&store, "cart", 1);
    let (snapshot, events) = store.load_aggregate("cart").unwrap();
    assert!(snapshot.is_none());
    assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![10]);
    assert!(matches!(
        store.save_snapshot("cart", 5, &b"x"[..]),
        Err(Error::InvalidInput(_))
    ));
    assert_scavenged_snapshots_of(&store, "cart");
    store.save_snapshot("cart", 10, &b"state-10"[..]).unwrap();
    assert_eq!(store.load_snapshot("cart").unwrap().map(|s| s.revision), Some(10));
}

/// Review of 5b60f37: `max_count` hides the events after a snapshot: a
/// snapshot at revision 10 of a stream at 30 that keeps 5 events was folded
/// with revisions 26 to 30 only (11 to 25 silently missing). No fold of what
/// is left is the aggregate's state: `load_aggregate` says so, and keeps
/// the snapshot (the latest state there is); one taken inside the window
/// loads with the events after it.
#[test]
fn load_aggregate_refuses_a_snapshot_max_count_separated_from_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_segments(dir.path());
    fill(&store, "agg", 11);
    store.save_snapshot("agg", 10, &b"state-10"[..]).unwrap();
    fill(&store, "agg", 20);
    store
        .set_stream_metadata(
            "agg",
            StreamMetadata {
                max_count: Some(5),
                ..StreamMetadata::default()
            },
        )
        .unwrap();
    match store.load_aggregate("agg") {
        Err(Error::SnapshotBehind {
            revision: 10,
            first_visible: Some(26),
            ..
        }) => {}
        other => panic!("folded across revisions 11 to 25: {other:?}"),
    }
    assert_eq!(store.load_snapshot("agg").unwrap().map(|s| s.revision), Some(10));
    fill(&store, "filler", 200);
    store.scavenge().unwrap();
    assert_eq!(
        store.load_snapshot("agg").unwrap().map(|s| s.revision),
        Some(10),
        "the latest snapshot is kept"
    );
    // At the revision before the window's first: it loads, with the window.
    store.save_snapshot("agg", 25, &b"state-25"[..]).unwrap();
    let (snapshot, events) = store.load_aggregate("agg").unwrap();
    assert_eq!(snapshot.map(|s| s.revision), Some(25));
    assert_eq!(
        events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![26, 27, 28, 29, 30]
    );
}

/// The same for events `max_age` hides after a snapshot, including all of them.
#[test]
fn load_aggregate_refuses_a_snapshot_max_age_separated_from_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(annal::ManualClock::new());
    let store = Store::open(
        dir.path(),
        Options::default().durability(Durability::Never).clock(clock.clone()),
    )
    .unwrap();
    fill(&store, "agg", 3);
    store.save_snapshot("agg", 2, &b"state-2"[..]).unwrap();
    fill(&store, "agg", 2);
    clock.advance(std::time::Duration::from_secs(3600));
    fill(&store, "agg", 2);
    store
        .set_stream_metadata(
            "agg",
            StreamMetadata {
                max_age_ms: Some(60_000),
                ..StreamMetadata::default()
            },
        )
        .unwrap();
    match store.load_aggregate("agg") {
        Err(Error::SnapshotBehind {
            revision: 2,
            first_visible: Some(5),
            ..
        }) => {}
        other => panic!("folded across revisions 3 and 4: {other:?}"),
    }
    // Everything after it hidden, the stream going on: a hole as well.
    clock.advance(std::time::Duration::from_secs(3600));
    match store.load_aggregate("agg") {
        Err(Error::SnapshotBehind {
            revision: 2,
            first_visible: None,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A snapshot at the last event folds nothing more: no hole.
    store.save_snapshot("agg", 6, &b"state-6"[..]).unwrap();
    let (snapshot, events) = store.load_aggregate("agg").unwrap();
    assert_eq!(snapshot.map(|s| s.revision), Some(6));
    assert!(events.is_empty());
}
