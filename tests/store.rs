//! Behaviour of the store as a user relies on it: appends, concurrency checks,
//! idempotency, reads of every kind, rotation, reopen, locking and bad input.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;
use std::sync::Arc;

use annal::{
    Append, AppendCondition, Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, Query,
    SimStorage, Storage, Store, StreamFrom,
};
use uuid::Uuid;

fn opts() -> Options {
    Options::default().no_compression().durability(Durability::Never)
}

fn ev(t: &str, n: u64) -> EventData {
    EventData::json(t, format!(r#"{{"n":{n}}}"#))
}

fn sim_store(sim: &SimStorage, options: Options) -> Store {
    Store::open_with(Arc::new(sim.clone()), "/data", options).unwrap()
}

#[test]
fn append_then_read_a_stream_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let r = store
        .append(
            "order-1",
            ExpectedVersion::NoStream,
            (0..5).map(|n| ev("Placed", n)).collect(),
        )
        .unwrap();
    assert_eq!((r.first_revision, r.next_expected_version, r.position), (0, 4, 0));
    let r = store
        .append("order-2", ExpectedVersion::Any, vec![ev("Placed", 9)])
        .unwrap();
    assert_eq!((r.first_revision, r.position), (0, 5));

    let fwd = store
        .read_stream("order-1", Direction::Forward, StreamFrom::Start, 100)
        .unwrap();
    assert_eq!(fwd.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(fwd[2].data.as_ref(), br#"{"n":2}"#);
    let page = store
        .read_stream("order-1", Direction::Forward, StreamFrom::Revision(3), 1)
        .unwrap();
    assert_eq!(page[0].revision, 3);
    let back = store
        .read_stream("order-1", Direction::Backward, StreamFrom::End, 2)
        .unwrap();
    assert_eq!(back.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![4, 3]);
    let back = store
        .read_stream("order-1", Direction::Backward, StreamFrom::Revision(1), 10)
        .unwrap();
    assert_eq!(back.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![1, 0]);
    assert!(matches!(
        store.read_stream("nope", Direction::Forward, StreamFrom::Start, 1),
        Err(Error::StreamNotFound(_))
    ));
    assert!(
        store
            .read_stream("order-1", Direction::Forward, StreamFrom::Revision(5), 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn expected_versions_are_enforced_with_the_actual_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let err = store
        .append("s", ExpectedVersion::StreamExists, vec![ev("A", 0)])
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { actual: None, .. }));
    store.append("s", ExpectedVersion::NoStream, vec![ev("A", 0)]).unwrap();
    let err = store
        .append("s", ExpectedVersion::NoStream, vec![ev("A", 1)])
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { actual: Some(0), .. }));
    store.append("s", ExpectedVersion::Exact(0), vec![ev("A", 1)]).unwrap();
    let err = store
        .append("s", ExpectedVersion::Exact(0), vec![ev("A", 2)])
        .unwrap_err();
    match err {
        Error::WrongExpectedVersion { expected, actual, .. } => {
            assert_eq!(expected, "0");
            assert_eq!(actual, Some(1));
        }
        other => panic!("unexpected {other}"),
    }
    store
        .append("s", ExpectedVersion::StreamExists, vec![ev("A", 2)])
        .unwrap();
    assert_eq!(store.stream_info("s").unwrap().last_revision, 2);
    assert_eq!(store.head_position(), 3, "failed appends take no position");
}

/// Issue 11, item 2: a stored id re-sent with other content is a conflict, never a
/// silent success that drops the new content; staged (same group) ids too.
#[test]
fn a_retry_with_other_content_is_an_idempotency_conflict() {
    let sim = SimStorage::new();
    let store = sim_store(&sim, opts());
    let id = Uuid::new_v4();
    let original = || {
        EventData::json("Placed", r#"{"total":10}"#)
            .with_id(id)
            .with_tag("tenant:a")
            .with_metadata(r#"{"user":"u1"}"#)
    };
    let first = store.append("s", ExpectedVersion::NoStream, vec![original()]).unwrap();
    assert_eq!(
        store.append("s", ExpectedVersion::NoStream, vec![original()]).unwrap(),
        first
    );
    let variants = [
        EventData::json("Paid", r#"{"total":10}"#)
            .with_id(id)
            .with_tag("tenant:a")
            .with_metadata(r#"{"user":"u1"}"#),
        EventData::json("Placed", r#"{"total":11}"#)
            .with_id(id)
            .with_tag("tenant:a")
            .with_metadata(r#"{"user":"u1"}"#),
        EventData::json("Placed", r#"{"total":10}"#)
            .with_id(id)
            .with_tag("tenant:b")
            .with_metadata(r#"{"user":"u1"}"#),
        EventData::json("Placed", r#"{"total":10}"#)
            .with_id(id)
            .with_metadata(r#"{"user":"u1"}"#),
        EventData::json("Placed", r#"{"total":10}"#)
            .with_id(id)
            .with_tag("tenant:a")
            .with_metadata(r#"{"user":"u2"}"#),
        EventData::binary("Placed", &br#"{"total":10}"#[..])
            .with_id(id)
            .with_tag("tenant:a")
            .with_metadata(r#"{"user":"u1"}"#),
    ];
    for v in variants {
        let what = format!("{v:?}");
        match store.append("s", ExpectedVersion::NoStream, vec![v]) {
            Err(Error::IdempotencyConflict { id: got, .. }) => assert_eq!(got, id),
            other => panic!("{what}: expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(store.head_position(), 1);
    // The stored event is the original, unchanged.
    let stored = store.event_by_id(id).unwrap().unwrap();
    assert_eq!(&stored.data[..], br#"{"total":10}"#);
    assert_eq!(stored.tags, vec!["tenant:a".to_string()]);
}

#[test]
fn retried_appends_return_the_original_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.append("other", ExpectedVersion::Any, vec![ev("X", 0)]).unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let batch = |ids: &[Uuid]| ids.iter().map(|id| ev("A", 0).with_id(*id)).collect::<Vec<_>>();
    let first = store.append("s", ExpectedVersion::NoStream, batch(&ids)).unwrap();
    store.append("s", ExpectedVersion::Any, vec![ev("B", 0)]).unwrap();
    // Same ids, same expected version: the original result, nothing written.
    let again = store.append("s", ExpectedVersion::NoStream, batch(&ids)).unwrap();
    assert_eq!(again, first);
    let again = store.append("s", ExpectedVersion::Any, batch(&ids)).unwrap();
    assert_eq!(again, first);
    assert_eq!(store.head_position(), 5);
    // A partial overlap is an error.
    let mut partial = batch(&ids[1..]);
    partial.push(ev("A", 0).with_id(Uuid::new_v4()));
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, partial),
        Err(Error::IdempotencyConflict { .. })
    ));
    // The same ids at another place (another stream, or a wrong expected version) are an error.
    assert!(matches!(
        store.append("t", ExpectedVersion::Any, batch(&ids)),
        Err(Error::IdempotencyConflict { .. })
    ));
    assert!(matches!(
        store.append("s", ExpectedVersion::Exact(3), batch(&ids)),
        Err(Error::IdempotencyConflict { .. })
    ));
    assert_eq!(store.head_position(), 5);
    // Within one group of concurrent appends the retry is recognised too.
    let ids2 = [Uuid::new_v4()];
    let store = Arc::new(store);
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || store.append("u", ExpectedVersion::Any, batch(&ids2)).unwrap())
        })
        .collect();
    let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.iter().all(|r| *r == results[0]));
    assert_eq!(store.stream_info("u").unwrap().last_revision, 0);
}

#[test]
fn global_log_reads_and_filters_use_every_index() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments so that filters run over sealed and active segments alike.
    let store = Store::open(dir.path(), opts().segment_size(8 * 1024)).unwrap();
    for i in 0..300u64 {
        let stream = format!("{}-{}", if i % 2 == 0 { "order" } else { "user" }, i % 7);
        let mut e = ev(if i % 3 == 0 { "Created" } else { "Updated" }, i);
        e = e.with_tag(format!("tenant:{}", i % 4));
        if i % 10 == 0 {
            e = e.with_tag("audit");
        }
        store.append(&stream, ExpectedVersion::Any, vec![e]).unwrap();
    }
    assert!(store.segment_count() > 3, "test needs several segments");
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, 1000, &Filter::all())
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (0..300).collect::<Vec<_>>()
    );
    let back = store
        .read_all(Direction::Backward, LogFrom::End, 5, &Filter::all())
        .unwrap();
    assert_eq!(
        back.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![299, 298, 297, 296, 295]
    );
    let mid = store
        .read_all(Direction::Forward, LogFrom::Position(150), 3, &Filter::all())
        .unwrap();
    assert_eq!(mid.iter().map(|e| e.position).collect::<Vec<_>>(), vec![150, 151, 152]);
    let mid_back = store
        .read_all(Direction::Backward, LogFrom::Position(150), 3, &Filter::all())
        .unwrap();
    assert_eq!(
        mid_back.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![150, 149, 148]
    );

    let check = |filter: Filter, pred: &dyn Fn(u64) -> bool| {
        let want: Vec<u64> = (0..300).filter(|i| pred(*i)).collect();
        let got: Vec<u64> = store
            .read_all(Direction::Forward, LogFrom::Start, 1000, &filter)
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(got, want, "{filter:?}");
        let mut back: Vec<u64> = store
            .read_all(Direction::Backward, LogFrom::End, 1000, &filter)
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect();
        back.reverse();
        assert_eq!(back, want, "backward {filter:?}");
        let limited = store
            .read_all(Direction::Forward, LogFrom::Position(100), 4, &filter)
            .unwrap();
        let want_limited: Vec<u64> = want.iter().copied().filter(|p| *p >= 100).take(4).collect();
        assert_eq!(limited.iter().map(|e| e.position).collect::<Vec<_>>(), want_limited);
    };
    check(Filter::all().with_type("Created"), &|i| i % 3 == 0);
    check(Filter::all().with_type("Created").with_type("Updated"), &|_| true);
    check(Filter::all().with_type("Missing"), &|_| false);
    check(Filter::all().with_tag("tenant:1"), &|i| i % 4 == 1);
    check(Filter::all().with_tag("tenant:2").with_tag("audit"), &|i| {
        i % 4 == 2 && i % 10 == 0
    });
    check(Filter::all().with_stream_prefix("order-"), &|i| i % 2 == 0);
    check(Filter::all().with_type("Updated").with_stream_prefix("user-"), &|i| {
        i % 3 != 0 && i % 2 == 1
    });
    let t = all[120].timestamp_micros;
    let since = store
        .read_all(
            Direction::Forward,
            LogFrom::Start,
            1000,
            &Filter::all().with_time(Some(t), None),
        )
        .unwrap();
    assert!(since.iter().all(|e| e.timestamp_micros >= t));
    assert_eq!(since.len(), all.iter().filter(|e| e.timestamp_micros >= t).count());
    let until = store
        .read_all(
            Direction::Forward,
            LogFrom::Start,
            1000,
            &Filter::all().with_time(None, Some(t)),
        )
        .unwrap();
    assert_eq!(until.len() + since.len(), 300);

    let some = &all[77];
    assert_eq!(store.event_by_id(some.id).unwrap().as_ref(), Some(some));
    assert_eq!(store.event_by_id(Uuid::new_v4()).unwrap(), None);
    let streams = store.streams();
    assert_eq!(streams.len(), 14);
    assert!(streams.windows(2).all(|w| w[0].name < w[1].name));
}

#[test]
fn consistency_boundary_appends_check_the_query_after_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let course = |t: &str| EventData::json(t, "{}").with_tag("course:c1");
    store
        .append("course-c1", ExpectedVersion::Any, vec![course("CourseDefined")])
        .unwrap();
    let seen = store.head_position() - 1;
    let cond = |after| AppendCondition {
        query: Query::item(&["StudentSubscribed", "CourseCapacityChanged"], &["course:c1"]),
        after,
    };
    // Nothing matching happened after `seen`: the append goes through.
    store
        .append_if(
            "student-1",
            ExpectedVersion::Any,
            vec![course("StudentSubscribed")],
            cond(Some(seen)),
        )
        .unwrap();
    // Now a matching event exists after `seen`: the same decision is stale.
    let err = store
        .append_if(
            "student-2",
            ExpectedVersion::Any,
            vec![course("StudentSubscribed")],
            cond(Some(seen)),
        )
        .unwrap_err();
    assert!(matches!(err, Error::ConditionFailed { position: 1 }));
    // Events of other courses or types do not count.
    store
        .append(
            "x",
            ExpectedVersion::Any,
            vec![EventData::json("StudentSubscribed", "{}").with_tag("course:c2")],
        )
        .unwrap();
    store
        .append_if(
            "student-2",
            ExpectedVersion::Any,
            vec![course("StudentSubscribed")],
            cond(Some(1)),
        )
        .unwrap();
    // With no position, any matching event fails it.
    assert!(matches!(
        store.append_if("s", ExpectedVersion::Any, vec![course("X")], cond(None)),
        Err(Error::ConditionFailed { position: 1 })
    ));
    // Concurrent conditional appends on the same boundary: exactly one wins.
    let store = Arc::new(store);
    let after = Some(store.head_position() - 1);
    let hs: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.append_if(
                    &format!("student-r{i}"),
                    ExpectedVersion::Any,
                    vec![course("StudentSubscribed")],
                    cond(after),
                )
            })
        })
        .collect();
    let ok = hs
        .into_iter()
        .filter(|_| true)
        .map(|h| h.join().unwrap())
        .filter(Result::is_ok)
        .count();
    assert_eq!(ok, 1);
}

#[test]
fn rotation_and_reopen_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), opts().segment_size(16 * 1024)).unwrap();
        for i in 0..500u64 {
            let s = format!("s-{}", i % 13);
            let batch = (0..(i % 3 + 1)).map(|j| ev("E", i * 10 + j).with_tag("t")).collect();
            store.append(&s, ExpectedVersion::Any, batch).unwrap();
        }
        assert!(store.segment_count() > 5);
        store.close().unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".idx")));
    assert!(names.contains(&"streams.chk".to_string()));
    let expect = |store: &Store| {
        let all = store
            .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
            .unwrap();
        assert_eq!(all.len() as u64, store.head_position());
        let mut revs = std::collections::HashMap::new();
        for e in &all {
            let r = revs.entry(e.stream.clone()).or_insert(0u64);
            assert_eq!(e.revision, *r);
            *r += 1;
        }
        for (s, n) in &revs {
            let read = store
                .read_stream(s, Direction::Forward, StreamFrom::Start, usize::MAX)
                .unwrap();
            assert_eq!(read.len() as u64, *n);
            assert_eq!(store.stream_info(s).unwrap().last_revision, n - 1);
            let back = store
                .read_stream(s, Direction::Backward, StreamFrom::End, usize::MAX)
                .unwrap();
            assert_eq!(back.len() as u64, *n);
        }
        all.len()
    };
    let store = Store::open(dir.path(), opts().segment_size(16 * 1024)).unwrap();
    let n = expect(&store);
    store.append("s-0", ExpectedVersion::Any, vec![ev("E", 0)]).unwrap();
    drop(store);
    // Without the stream checkpoint and with an index deleted, open rebuilds both.
    std::fs::remove_file(dir.path().join("streams.chk")).unwrap();
    let idx = names.iter().find(|n| n.ends_with(".idx")).unwrap();
    std::fs::remove_file(dir.path().join(idx)).unwrap();
    let store = Store::open(dir.path(), opts().segment_size(16 * 1024)).unwrap();
    assert_eq!(expect(&store), n + 1);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(matches!(Store::open(dir.path(), opts()), Err(Error::Locked { .. })));
    drop(store);
    Store::open(dir.path(), opts()).unwrap();
}

#[test]
fn foreign_directories_and_future_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    assert!(matches!(Store::open(dir.path(), opts()), Err(Error::NotAStore { .. })));
    assert!(
        !dir.path().join("LOCK").exists(),
        "a refused directory is left as it was"
    );

    let sim = SimStorage::new();
    drop(sim_store(&sim, opts()));
    let meta = Path::new("/data/annal.meta");
    let mut bytes = sim.read_file(meta).unwrap();
    bytes[8] = 2;
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    sim.write_file(meta, &bytes).unwrap();
    let err = Store::open_with(Arc::new(sim.clone()), "/data", opts()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedVersion { found: 2, .. }), "{err}");
}

#[test]
fn bad_input_is_rejected_and_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.max_event_size = 1000;
    let store = Store::open(dir.path(), o).unwrap();
    let long = "x".repeat(2000);
    let cases: Vec<(&str, Vec<EventData>)> = vec![
        ("", vec![ev("A", 0)]),
        (&long, vec![ev("A", 0)]),
        ("ok", vec![]),
        ("ok", vec![EventData::json("", "{}")]),
        ("ok", vec![EventData::json("A", vec![b'x'; 1001])]),
        ("ok", vec![EventData::json("A", "{}").with_tag("")]),
        ("bad\u{0}name", vec![ev("A", 0)]),
        (
            "ok",
            vec![
                ev("A", 0).with_id(Uuid::from_u128(1)),
                ev("A", 1).with_id(Uuid::from_u128(1)),
            ],
        ),
    ];
    for (stream, events) in cases {
        assert!(matches!(
            store.append(stream, ExpectedVersion::Any, events),
            Err(Error::InvalidInput(_))
        ));
    }
    assert_eq!(store.head_position(), 0);
    store.append("ok", ExpectedVersion::NoStream, vec![ev("A", 0)]).unwrap();
}

#[test]
fn a_full_disk_fails_the_append_and_the_store_recovers_when_space_returns() {
    let sim = SimStorage::new();
    let store = sim_store(&sim, Options::default().no_compression());
    store.append("s", ExpectedVersion::Any, vec![ev("A", 0)]).unwrap();
    sim.set_free_space(Some(100));
    // Appends use the space preallocated for the segment until it runs out.
    let big = EventData::json("A", vec![b'1'; 100_000]);
    let mut acked = 1;
    let err = loop {
        match store.append("s", ExpectedVersion::Exact(acked - 1), vec![big.clone()]) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 1000, "the disk never filled up");
    };
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    assert_eq!(store.head_position(), acked, "the failed append took no position");
    sim.set_free_space(None);
    let r = store.append("s", ExpectedVersion::Exact(acked - 1), vec![big]).unwrap();
    assert_eq!((r.first_revision, r.position), (acked, acked));
    drop(store);
    let store = sim_store(&sim, Options::default().no_compression());
    let all = store
        .read_stream("s", Direction::Forward, StreamFrom::Start, 10_000)
        .unwrap();
    assert_eq!(all.len() as u64, acked + 1);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn concurrent_appenders_get_dense_positions_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default().segment_size(64 * 1024)).unwrap());
    let hs: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rev = None;
                for i in 0..100 {
                    let expected = rev.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                    let r = store.append(&format!("w-{t}"), expected, vec![ev("E", i)]).unwrap();
                    rev = Some(r.next_expected_version);
                    // Every thread also races on one shared stream.
                    let _ = store.append("shared", ExpectedVersion::Any, vec![ev("S", i)]).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    assert_eq!(all.len(), 1600);
    assert!(all.iter().enumerate().all(|(i, e)| e.position == i as u64));
    let shared = store
        .read_stream("shared", Direction::Forward, StreamFrom::Start, usize::MAX)
        .unwrap();
    assert!(shared.iter().enumerate().all(|(i, e)| e.revision == i as u64));
    assert!(all.windows(2).all(|w| w[0].timestamp_micros <= w[1].timestamp_micros));
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_fails_only_that_event() {
    let sim = SimStorage::new();
    let store = sim_store(&sim, opts().segment_size(8 * 1024));
    for i in 0..200 {
        store.append("s", ExpectedVersion::Any, vec![ev("E", i)]).unwrap();
    }
    let victim = store
        .read_stream("s", Direction::Forward, StreamFrom::Revision(10), 1)
        .unwrap()[0]
        .clone();
    drop(store);
    let seg = Path::new("/data/00000000000000000000.seg");
    let bytes = sim.read_file(seg).unwrap();
    let needle = br#"{"n":10}"#;
    let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
    sim.flip_bit(seg, at as u64 + 2, 1).unwrap();

    let store = sim_store(&sim, opts().segment_size(8 * 1024));
    let err = store
        .read_stream("s", Direction::Forward, StreamFrom::Revision(10), 1)
        .unwrap_err();
    match err {
        Error::Corruption { file, offset, .. } => {
            assert!(file.ends_with("00000000000000000000.seg"));
            assert!(
                offset < at as u64 && offset + 200 > at as u64,
                "offset {offset} near {at}"
            );
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(store.event_by_id(victim.id).is_err());
    for r in (0..200).filter(|r| *r != 10) {
        let e = store
            .read_stream("s", Direction::Forward, StreamFrom::Revision(r), 1)
            .unwrap();
        assert_eq!(e[0].revision, r);
    }
    store
        .append("s", ExpectedVersion::Exact(199), vec![ev("E", 200)])
        .unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_kept_aside() {
    let sim = SimStorage::new();
    let store = sim_store(&sim, Options::default().no_compression());
    for i in 0..10 {
        store.append("s", ExpectedVersion::Any, vec![ev("E", i)]).unwrap();
    }
    // Killed, not closed: nothing claims more than what later groups claim.
    std::mem::forget(store);
    sim.kill_process();
    let seg = Path::new("/data/00000000000000000000.seg");
    let mut bytes = sim.read_file(seg).unwrap();
    // The data ends where the preallocated zeros begin; tear a frame right there.
    let good_len = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    bytes[good_len..good_len + 37].copy_from_slice(&[0x55; 37]);
    sim.write_file(seg, &bytes).unwrap();
    let store = sim_store(&sim, Options::default().no_compression());
    assert_eq!(store.head_position(), 10);
    assert_eq!(sim.read_file(seg).unwrap().len(), good_len);
    let torn = sim.list(Path::new("/data/torn")).unwrap();
    assert_eq!(torn.len(), 1);
    assert_eq!(
        sim.read_file(&Path::new("/data/torn").join(&torn[0])).unwrap(),
        vec![0x55; 37]
    );
    store.append("s", ExpectedVersion::Exact(9), vec![ev("E", 10)]).unwrap();
}

#[test]
fn damage_before_a_later_synced_group_is_reported_not_cut() {
    let damage = |options: Options| {
        let sim = SimStorage::new();
        let store = sim_store(&sim, options.clone());
        for i in 0..10 {
            store.append("s", ExpectedVersion::Any, vec![ev("E", i)]).unwrap();
        }
        // Killed, not closed (a clean close would vouch for every byte).
        std::mem::forget(store);
        sim.kill_process();
        let seg = Path::new("/data/00000000000000000000.seg");
        let bytes = sim.read_file(seg).unwrap();
        let needle = br#"{"n":3}"#;
        let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
        sim.flip_bit(seg, at as u64, 0).unwrap();
        (sim, at, bytes.len())
    };
    // Synced appends: later groups say the damaged bytes were durable. Refuse, cut nothing.
    let (sim, at, len) = damage(Options::default().no_compression());
    let err = Store::open_with(Arc::new(sim.clone()), "/data", Options::default().no_compression()).unwrap_err();
    assert!(
        matches!(err, Error::Corruption { offset, .. } if offset < at as u64),
        "{err}"
    );
    assert_eq!(
        sim.read_file(Path::new("/data/00000000000000000000.seg"))
            .unwrap()
            .len(),
        len
    );
    // Never-synced appends: nothing says they were durable, so the damage is a torn
    // tail; it is cut from the damaged append on and kept aside.
    let (sim, _, _) = damage(opts());
    let store = sim_store(&sim, opts());
    assert_eq!(store.head_position(), 3);
    let torn = sim.list(Path::new("/data/torn")).unwrap();
    assert_eq!(torn.len(), 1);
}

#[test]
fn a_read_only_disk_gives_a_clear_error_and_loses_nothing() {
    let sim = SimStorage::new();
    let store = sim_store(&sim, Options::default().no_compression());
    store.append("s", ExpectedVersion::Any, vec![ev("E", 0)]).unwrap();
    // The file system turns read-only under a running store: the append fails, typed.
    sim.set_read_only(true);
    let err = store.append("s", ExpectedVersion::Any, vec![ev("E", 1)]).unwrap_err();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
            || matches!(&err, Error::Closed(Some(_))),
        "{err}"
    );
    drop(store);
    // Opening a store on a read-only disk is refused with the cause.
    let err = Store::open_with(Arc::new(sim.clone()), "/data", Options::default().no_compression()).unwrap_err();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
        "{err}"
    );
    // Writable again: everything acknowledged is there, and appends go on.
    sim.set_read_only(false);
    let store = sim_store(&sim, Options::default().no_compression());
    assert_eq!(store.head_position(), 1);
    store.append("s", ExpectedVersion::Exact(0), vec![ev("E", 1)]).unwrap();
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn racing_retries_of_one_append_store_it_once_and_all_get_its_result() {
    // Appenders look event ids up before they queue; an id stored by a racing
    // appender after that look-up must still be found by the writer.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), opts().segment_size(16 * 1024)).unwrap());
    for round in 0..50u64 {
        let id = Uuid::new_v4();
        let results: Vec<_> = (0..6)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    store.append(
                        &format!("order-{}", round % 5),
                        ExpectedVersion::Any,
                        vec![ev("Placed", round).with_id(id)],
                    )
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]), "round {round}: {results:?}");
        let stored = store.event_by_id(id).unwrap().unwrap();
        assert_eq!(stored.position, results[0].position);
    }
    assert_eq!(store.head_position(), 50);
}

#[test]
fn racing_conditional_appends_let_exactly_one_through() {
    // The condition is checked before queueing and again, for what was published
    // since, under the writer's lock: two racing decisions on the same state
    // cannot both pass.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), opts().segment_size(16 * 1024)).unwrap());
    for round in 0..50u64 {
        let tag = format!("seat:{round}");
        let seen = store.head_position().checked_sub(1);
        let outcomes: Vec<_> = (0..6)
            .map(|t| {
                let store = store.clone();
                let tag = tag.clone();
                std::thread::spawn(move || {
                    store.append_if(
                        &format!("booking-{round}-{t}"),
                        ExpectedVersion::NoStream,
                        vec![EventData::json("SeatBooked", "{}").with_tag(&tag)],
                        AppendCondition {
                            query: Query::item(&["SeatBooked"], &[&tag]),
                            after: seen,
                        },
                    )
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let passed = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(passed, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| o.is_ok() || matches!(o, Err(Error::ConditionFailed { .. })))
        );
    }
    assert_eq!(store.head_position(), 50);
}

#[test]
fn a_condition_after_the_last_possible_position_passes() {
    // Nothing can come after u64::MAX: the check must not overflow.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.append("s", ExpectedVersion::Any, vec![ev("E", 0)]).unwrap();
    let r = store.append_if(
        "t",
        ExpectedVersion::Any,
        vec![ev("E", 1)],
        AppendCondition {
            query: Query::item(&["E"], &[]),
            after: Some(u64::MAX),
        },
    );
    assert_eq!(r.unwrap().position, 1);
}

#[test]
fn streams_page_walks_the_streams_by_name_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for i in 0..57 {
        let stream = if i % 3 == 0 {
            format!("user-{i}")
        } else {
            format!("order-{i}")
        };
        store.append(&stream, ExpectedVersion::Any, vec![ev("T", i)]).unwrap();
    }
    let orders: Vec<String> = store
        .streams()
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with("order-"))
        .collect();
    assert_eq!(orders.len(), 38);
    // Pages of 10 of the order streams, continued after the last name of each.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, matched, more) = store.streams_page(after.as_deref(), 10, |n| n.starts_with("order-"));
        assert_eq!(matched, 38);
        assert!(page.len() <= 10);
        seen.extend(page.iter().map(|s| s.name.clone()));
        if !more {
            break;
        }
        after = page.last().map(|s| s.name.clone());
    }
    assert_eq!(seen, orders);
    let (page, _, more) = store.streams_page(Some("order-99"), 10, |_| true);
    assert_eq!((page.len(), more), (10, true));
    assert!(page.iter().all(|s| s.name.starts_with("user-")));
    let info = store.stream_info(&page[0].name).unwrap();
    assert_eq!(page[0], info);
    assert_eq!(store.streams_page(None, 0, |_| true), (Vec::new(), 57, true));
    // A stream created after a listing is in the next one, with its state; a
    // stream written again shows its new revision.
    store
        .append("order-00", ExpectedVersion::Any, vec![ev("T", 0)])
        .unwrap();
    store.append("order-1", ExpectedVersion::Any, vec![ev("T", 0)]).unwrap();
    let (page, matched, _) = store.streams_page(None, 2, |n| n.starts_with("order-"));
    assert_eq!(matched, 39);
    let names: Vec<(&str, u64)> = page.iter().map(|s| (s.name.as_str(), s.last_revision)).collect();
    assert_eq!(names, vec![("order-00", 0), ("order-1", 1)]);
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.streams_page(None, 0, |_| true).1, 58, "after reopen");
}

/// `Store::streams_page_from` gives the pages of `streams_page` but looks at
/// no more names than a page needs (a page of `GET /streams` looked at every
/// stream of the store).
#[test]
fn streams_page_from_passes_over_only_the_names_a_page_needs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for i in 0..2000u64 {
        let kind = if i % 2 == 0 { "order" } else { "user" };
        store
            .append(&format!("{kind}-{i:04}"), ExpectedVersion::Any, vec![ev("T", i)])
            .unwrap();
    }
    let looked = std::cell::Cell::new(0usize);
    let keep = |n: &str| {
        looked.set(looked.get() + 1);
        !n.ends_with('3')
    };
    // Pages of 10 over every name, then within a prefix: the same as streams_page's.
    for prefix in ["", "order-", "user-", "zzz"] {
        let mut after: Option<String> = None;
        loop {
            looked.set(0);
            let (page, more) = store.streams_page_from(after.as_deref(), prefix, 10, keep);
            assert!(looked.get() <= 2 * 11, "{} names looked at for one page", looked.get());
            let (want, _, want_more) = store.streams_page(after.as_deref(), 10, |n| n.starts_with(prefix) && keep(n));
            assert_eq!((&page, more), (&want, want_more), "after {after:?} within {prefix:?}");
            if !more {
                break;
            }
            after = page.last().map(|s| s.name.clone());
        }
    }
}

/// `Store::visit_stream_names` hands over, in name order, exactly the names
/// under the given prefixes (a prefix that extends another adds nothing, an
/// empty one is every name) after `after`, passing over no other name, and
/// stops when told.
#[test]
fn visit_stream_names_passes_over_only_the_names_under_its_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for name in ["a-1", "a-2", "ab", "b-1", "b-2", "c", "order-1", "order-eu-1"] {
        store.append(name, ExpectedVersion::Any, vec![ev("T", 0)]).unwrap();
    }
    let visit = |after: Option<&str>, prefixes: &[&str], stop_after: usize| {
        let mut seen = Vec::new();
        store.visit_stream_names(after, prefixes, |n| {
            seen.push(n.to_string());
            if seen.len() == stop_after {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        });
        seen
    };
    assert_eq!(
        visit(None, &["b-", "a-", "order-eu-", "order-"], 99),
        ["a-1", "a-2", "b-1", "b-2", "order-1", "order-eu-1"]
    );
    assert_eq!(visit(Some("a-2"), &["a", "b-"], 99), ["ab", "b-1", "b-2"]);
    assert_eq!(visit(None, &[""], 99).len(), 8);
    assert_eq!(visit(None, &[], 99), Vec::<String>::new());
    assert_eq!(visit(None, &["zz"], 99), Vec::<String>::new());
    assert_eq!(visit(None, &["", "b-"], 3), ["a-1", "a-2", "ab"]);
}

/// The sorted names of listings merge the names of the `streams.chk` table
/// read at open with those changed since (new streams sorting between and
/// around the table's, table streams appended to again): every name once,
/// in order, the same as before a restart.
#[test]
fn listings_merge_the_table_of_names_with_those_changed_since() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    for name in ["b-1", "b-3", "d-1", "d-2"] {
        store.append(name, ExpectedVersion::Any, vec![ev("T", 0)]).unwrap();
    }
    // Sealed: the names are in the table `streams.chk` at the next open.
    assert!(store.seal_active_segment().unwrap());
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let names = |store: &Store| store.streams().into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(names(&store), ["b-1", "b-3", "d-1", "d-2"]);
    for name in ["a-1", "b-3", "b-2", "c-1", "d-2", "e-1"] {
        store.append(name, ExpectedVersion::Any, vec![ev("T", 1)]).unwrap();
    }
    let want = ["a-1", "b-1", "b-2", "b-3", "c-1", "d-1", "d-2", "e-1"];
    assert_eq!(names(&store), want);
    let (page, matched, more) = store.streams_page(Some("b-2"), 3, |_| true);
    let page: Vec<&str> = page.iter().map(|s| s.name.as_str()).collect();
    assert_eq!((page, matched, more), (vec!["b-3", "c-1", "d-1"], 8, true));
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(names(&store), want, "after a restart");
}

/// `Store::append_batch`: appends to many streams in one group commit, each
/// checked and atomic on its own, results in order; an invalid input refuses
/// the whole batch before anything is written.
#[test]
fn a_batch_of_appends_is_checked_one_by_one_and_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    store.append("a", ExpectedVersion::Any, vec![ev("T", 0)]).unwrap();
    let id = Uuid::new_v4();
    let results = store
        .append_batch(vec![
            Append::new("a", ExpectedVersion::Exact(0), vec![ev("T", 1), ev("T", 2)]),
            // Fails its own check; the appends around it still land.
            Append::new("b", ExpectedVersion::StreamExists, vec![ev("T", 3)]),
            Append::new("a", ExpectedVersion::Exact(2), vec![ev("T", 4).with_id(id)]),
            Append::new("c", ExpectedVersion::NoStream, vec![ev("T", 5)]),
            // The same append again, by id: the original result, nothing new.
            Append::new("a", ExpectedVersion::Any, vec![ev("T", 4).with_id(id)]),
            Append::new("c", ExpectedVersion::Any, vec![ev("T", 6)]).with_condition(AppendCondition {
                query: Query::item(&["T"], &[]),
                after: Some(0),
            }),
        ])
        .unwrap();
    assert_eq!(results.len(), 6);
    let r0 = results[0].as_ref().unwrap();
    assert_eq!((r0.first_revision, r0.next_expected_version, r0.position), (1, 2, 1));
    assert!(
        matches!(results[1], Err(Error::WrongExpectedVersion { .. })),
        "{:?}",
        results[1]
    );
    let r2 = results[2].as_ref().unwrap();
    assert_eq!((r2.first_revision, r2.position), (3, 3));
    let r3 = results[3].as_ref().unwrap();
    assert_eq!((r3.first_revision, r3.position), (0, 4));
    assert_eq!(results[4].as_ref().unwrap(), r2);
    // Events of type T were appended after position 0 (by this very batch).
    assert!(
        matches!(results[5], Err(Error::ConditionFailed { .. })),
        "{:?}",
        results[5]
    );
    let a: Vec<u64> = store
        .read_stream("a", Direction::Forward, StreamFrom::Start, 100)
        .unwrap()
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(a, [0, 1, 2, 3]);
    assert!(store.stream_info("b").is_none());
    assert_eq!(store.head_position(), 5);

    // One invalid input: nothing of the batch is appended, and the error says which.
    let err = store
        .append_batch(vec![
            Append::new("d", ExpectedVersion::Any, vec![ev("T", 7)]),
            Append::new("$reserved", ExpectedVersion::Any, vec![ev("T", 8)]),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("append 1 of the batch"), "{err}");
    assert!(store.stream_info("d").is_none());
    assert_eq!(store.head_position(), 5);
    assert!(store.append_batch(Vec::new()).unwrap().is_empty());

    // Durable and in order across a reopen.
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.head_position(), 5);
    assert_eq!(store.stream_info("c").unwrap().last_revision, 0);
}

/// Batches from several threads, interleaved with single appends to the same
/// streams, give every stream gapless revisions and every event one position.
#[test]
fn batches_and_single_appends_from_many_threads_interleave_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = &store;
            s.spawn(move || {
                for round in 0..50u64 {
                    if t % 2 == 0 {
                        let batch = (0..8)
                            .map(|k| Append::new(format!("s-{k}"), ExpectedVersion::Any, vec![ev("T", round)]))
                            .collect();
                        for r in store.append_batch(batch).unwrap() {
                            r.unwrap();
                        }
                    } else {
                        store
                            .append(&format!("s-{}", round % 8), ExpectedVersion::Any, vec![ev("T", round)])
                            .unwrap();
                    }
                }
            });
        }
    });
    let mut total = 0;
    for k in 0..8 {
        let events = store
            .read_stream(&format!("s-{k}"), Direction::Forward, StreamFrom::Start, 10_000)
            .unwrap();
        let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, (0..events.len() as u64).collect::<Vec<_>>());
        total += events.len();
    }
    // 2 batching threads x 50 rounds x 8 appends, 2 single threads x 50.
    assert_eq!(total, 2 * 50 * 8 + 2 * 50);
    let positions: Vec<u64> = store
        .read_all(Direction::Forward, LogFrom::Start, 10_000, &Filter::all())
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, (0..total as u64).collect::<Vec<_>>());
}

/// `read_all_within` stops once the events read hold the byte budget (with
/// at least one event), and reads as `read_all` otherwise.
#[test]
fn reads_within_a_byte_budget_stop_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let big: Vec<EventData> = (0..10).map(|_| EventData::binary("T", vec![7u8; 1000])).collect();
    store.append("s", ExpectedVersion::Any, big).unwrap();
    let read = |max_bytes| {
        store
            .read_all_within(Direction::Forward, LogFrom::Start, 100, &Filter::all(), max_bytes)
            .unwrap()
            .len()
    };
    assert_eq!(read(2500), 3, "stops at the event that reaches the budget");
    assert_eq!(read(1), 1, "at least one event");
    assert_eq!(read(usize::MAX), 10);
    let filtered = store
        .read_all_within(
            Direction::Backward,
            LogFrom::End,
            100,
            &Filter::all().with_type("T"),
            1500,
        )
        .unwrap();
    assert_eq!(filtered.iter().map(|e| e.position).collect::<Vec<_>>(), vec![9, 8]);
}

/// An event read from the active segment holds its own bytes only: reads
/// there take a run of frames with one read of the file, and a page of a
/// few matches among many frames must not keep that whole run in memory
/// (a server's page budget and a subscriber's buffer count event bytes).
#[test]
fn events_read_from_the_active_segment_keep_only_their_own_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::Never)).unwrap();
    for i in 0..300 {
        let who = if i % 100 == 0 { "needle" } else { "hay" };
        let e = EventData::json("T", format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(2000)))
            .with_metadata(format!(r#"{{"who":"{who}"}}"#));
        store.append("s", ExpectedVersion::Any, vec![e]).unwrap();
    }
    assert_eq!(store.segment_count(), 1, "the events must be in the active segment");
    for filter in [Filter::all(), Filter::all().with_metadata("who", "needle")] {
        let events = store
            .read_all(Direction::Forward, LogFrom::Start, 1000, &filter)
            .unwrap();
        assert!(!events.is_empty());
        for e in events {
            assert!(e.data.is_unique(), "event {} shares its data's buffer", e.position);
            assert!(
                e.metadata.is_unique(),
                "event {} shares its metadata's buffer",
                e.position
            );
        }
    }
}

/// `read_stream_within` stops once the events read hold the byte budget
/// (with at least one event), also where stream metadata hides events (the
/// hidden ones do not count), and reads as `read_stream` otherwise.
#[test]
fn stream_reads_within_a_byte_budget_stop_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let big: Vec<EventData> = (0..10).map(|_| EventData::binary("T", vec![7u8; 1000])).collect();
    store.append("s", ExpectedVersion::Any, big.clone()).unwrap();
    let read = |stream: &str, from, max_bytes| {
        store
            .read_stream_within(stream, Direction::Forward, from, 100, max_bytes)
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        read("s", StreamFrom::Start, 2500),
        vec![0, 1, 2],
        "stops at the event that reaches the budget"
    );
    assert_eq!(read("s", StreamFrom::Revision(8), 1), vec![8], "at least one event");
    assert_eq!(read("s", StreamFrom::Start, usize::MAX), (0..10).collect::<Vec<_>>());
    let back = store
        .read_stream_within("s", Direction::Backward, StreamFrom::End, 100, 1500)
        .unwrap();
    assert_eq!(back.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![9, 8]);
    // Metadata that hides the first six: the budget counts visible events only.
    store.append("h", ExpectedVersion::Any, big).unwrap();
    store
        .set_stream_metadata(
            "h",
            annal::StreamMetadata {
                max_count: Some(4),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(read("h", StreamFrom::Start, 1500), vec![6, 7]);
    assert_eq!(read("h", StreamFrom::Start, usize::MAX), vec![6, 7, 8, 9]);
}

/// A cancelled signal, or one whose deadline passed, fails reads and counts
/// that read events with `Error::Cancelled`; a count the indexes serve reads
/// none and answers; a signal never cancelled changes nothing.
#[test]
fn cancelled_reads_and_counts_fail_with_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let evs: Vec<EventData> = (0..50)
        .map(|i| ev("T", i).with_metadata(format!(r#"{{"k":"v{i}"}}"#).into_bytes()))
        .collect();
    store.append("s-1", ExpectedVersion::Any, evs).unwrap();
    let scan = Filter::all().with_metadata("k", "v7");
    let read = |cancel: &annal::Cancel| {
        store.read_all_cancellable(Direction::Forward, LogFrom::Start, 100, &scan, usize::MAX, cancel)
    };
    let live = annal::Cancel::new();
    assert_eq!(read(&live).unwrap().len(), 1);
    assert_eq!(store.count_cancellable(&scan, &live).unwrap(), 1);
    assert_eq!(read(&annal::Cancel::default()).unwrap().len(), 1);
    let cut = live.clone();
    cut.cancel();
    assert!(live.is_cancelled(), "clones share the signal");
    assert!(matches!(read(&live), Err(Error::Cancelled)));
    assert!(matches!(store.count_cancellable(&scan, &live), Err(Error::Cancelled)));
    assert!(matches!(
        store.count_by_cancellable(&scan, annal::GroupBy::Type, &live),
        Err(Error::Cancelled)
    ));
    // Served by the indexes: no event read, the count answers.
    assert_eq!(store.count_cancellable(&Filter::all(), &live).unwrap(), 50);
    assert_eq!(store.count_from_indexes(&Filter::all()).unwrap(), Some(50));
    assert_eq!(store.count_from_indexes(&scan).unwrap(), None);
    let past = annal::Cancel::new().with_deadline(std::time::Instant::now());
    assert!(matches!(read(&past), Err(Error::Cancelled)));
}

/// A listener that panics is caught: the append whose publication called it
/// succeeds, later appends are answered, and it is never called again.
#[test]
fn a_listener_that_panics_does_not_stop_appends() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    // Never dropped: a wedged writer would make closing the store hang, not fail.
    let store: &'static Store = Box::leak(Box::new(Store::open(dir.path(), opts()).unwrap()));
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let listener = store.listen(move || {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a listener's bug");
        }
    });
    std::mem::forget(listener);
    let append = |n: u64| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(store.append("s", ExpectedVersion::Any, vec![ev("T", n)]));
        });
        rx.recv_timeout(Duration::from_secs(10))
    };
    let first = append(0).expect("the append that published with the listener is answered");
    assert_eq!(first.unwrap().position, 0);
    let second = append(1).expect("a later append is answered");
    assert_eq!(second.unwrap().position, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
