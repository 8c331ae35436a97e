//! Persistent subscription groups: sharing, ack and nack, timeouts and
//! retries, parking and replay of parked events, pinning, and restarts.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use annal::{
    Direction, Durability, Error, EventData, ExpectedVersion, GroupSettings, MAX_PARK_REASON, ManualClock, NackAction,
    Options, ParkedRecord, Store, Strategy, StreamFrom, parked_stream,
};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Options::default().durability(Durability::Never)).unwrap()
}

fn fill(store: &Store, n: u64) {
    for i in 0..n {
        store
            .append(
                &format!("order-{}", i % 4),
                ExpectedVersion::Any,
                vec![EventData::json("E", format!("{i}"))],
            )
            .unwrap();
    }
}

const T: Duration = Duration::from_millis(200);

#[test]
fn two_consumers_share_the_work_and_the_checkpoint_advances() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 100);
    let group = store.create_group("g", GroupSettings::all()).unwrap();
    let (a, b) = (group.consumer("a"), group.consumer("b"));
    let mut seen = Vec::new();
    loop {
        let da = a.fetch(7, T).unwrap();
        let db = b.fetch(5, T).unwrap();
        if da.is_empty() && db.is_empty() {
            break;
        }
        assert!(da.iter().chain(&db).all(|d| d.retry_count == 0));
        a.ack(&da.iter().map(|d| d.event.id).collect::<Vec<_>>()).unwrap();
        b.ack(&db.iter().map(|d| d.event.id).collect::<Vec<_>>()).unwrap();
        seen.extend(da.iter().chain(&db).map(|d| d.event.position));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>(), "each event delivered exactly once");
    let info = group.info();
    assert_eq!((info.in_flight, info.ready), (0, 0));
    // The checkpoint passed every event, and the group's own bookkeeping events.
    assert!(
        info.checkpoint >= 100 && info.checkpoint <= store.head_position(),
        "{info:?}"
    );
    // New events keep flowing to a waiting consumer.
    fill(&store, 3);
    let more = a.fetch(10, Duration::from_secs(2)).unwrap();
    assert_eq!(more.len(), 3);
    assert!(matches!(
        store.create_group("g", GroupSettings::all()),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn nack_retries_parks_or_skips_and_parked_events_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 3);
    let group = store.create_group("g", GroupSettings::all()).unwrap();
    let c = group.consumer("c");
    let d = c.fetch(3, T).unwrap();
    assert_eq!(d.len(), 3);
    c.nack(d[0].event.id, NackAction::Retry, "try again").unwrap();
    c.nack(d[1].event.id, NackAction::Park, "poison").unwrap();
    c.nack(d[2].event.id, NackAction::Skip, "not mine").unwrap();
    let again = c.fetch(10, T).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].event.position, again[0].retry_count), (0, 1));
    c.ack(&[again[0].event.id]).unwrap();
    // The parked event is in the dead-letter stream, readable like any stream.
    let parked = store
        .read_stream(&parked_stream("g"), Direction::Forward, StreamFrom::Start, 10)
        .unwrap();
    assert_eq!(parked.len(), 1);
    let rec: ParkedRecord = serde_json::from_slice(&parked[0].data).unwrap();
    assert_eq!((rec.position, rec.reason.as_str()), (1, "poison"));
    assert_eq!(group.info().parked, 1);
    // Replaying parked events delivers them again, once.
    assert_eq!(group.replay_parked().unwrap(), 1);
    let replayed = c.fetch(10, T).unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].event.position, 1);
    c.ack(&[replayed[0].event.id]).unwrap();
    assert_eq!(group.replay_parked().unwrap(), 0);
    assert!(group.info().checkpoint >= 3);
}

#[test]
fn unacknowledged_events_are_retried_after_the_timeout_then_parked() {
    let dir = tempfile::tempdir().unwrap();
    // A minute's timeout, and a clock moved by hand: nothing waits for it.
    let clock = Arc::new(ManualClock::new());
    let store = Store::open(
        dir.path(),
        Options::default().durability(Durability::Never).clock(clock.clone()),
    )
    .unwrap();
    fill(&store, 1);
    let settings = GroupSettings {
        ack_timeout_ms: 60_000,
        max_retries: 2,
        ..GroupSettings::all()
    };
    let group = store.create_group("slow", settings).unwrap();
    let c = group.consumer("c");
    let mut retries = Vec::new();
    for _ in 0..3 {
        let d = c.fetch(1, Duration::from_secs(2)).unwrap();
        assert_eq!(d.len(), 1);
        retries.push(d[0].retry_count);
        // No ack: not due again before the timeout, due again after it.
        assert!(c.fetch(1, Duration::ZERO).unwrap().is_empty());
        clock.advance(Duration::from_secs(61));
    }
    assert_eq!(retries, vec![0, 1, 2]);
    assert!(c.fetch(1, Duration::ZERO).unwrap().is_empty(), "parked after 2 retries");
    let info = group.info();
    assert_eq!((info.parked, info.in_flight), (1, 0));
    assert!(info.checkpoint >= 1);
    let parked = store
        .read_stream(&parked_stream("slow"), Direction::Forward, StreamFrom::Start, 10)
        .unwrap();
    let rec: ParkedRecord = serde_json::from_slice(&parked[0].data).unwrap();
    assert_eq!(rec.deliveries, 3);
}

#[test]
fn pinned_groups_send_each_stream_to_one_consumer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 80);
    let settings = GroupSettings {
        strategy: Strategy::Pinned,
        ..GroupSettings::all()
    };
    let group = store.create_group("p", settings).unwrap();
    let consumers = [group.consumer("x"), group.consumer("y")];
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut total = 0;
    for _ in 0..50 {
        for c in &consumers {
            for d in c.fetch(4, Duration::from_millis(10)).unwrap() {
                let o = owner
                    .entry(d.event.stream.clone())
                    .or_insert_with(|| c.name().to_string());
                assert_eq!(o, c.name(), "stream {} went to two consumers", d.event.stream);
                if let Some(prev) = last.insert(d.event.stream.clone(), d.event.revision) {
                    assert!(d.event.revision > prev, "out of order in {}", d.event.stream);
                }
                c.ack(&[d.event.id]).unwrap();
                total += 1;
            }
        }
    }
    assert_eq!(total, 80);
    let owners: BTreeSet<&String> = owner.values().collect();
    assert_eq!(owners.len(), 2, "both consumers get streams");
}

/// `fetch_while` takes events while its test accepts them: the one refused
/// stays in the line, undelivered, and is the next one fetched (a first
/// delivery); in a pinned group, events pinned to other consumers keep
/// their places ahead of it.
#[test]
fn fetch_while_leaves_the_refused_event_in_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 40);
    for strategy in [Strategy::RoundRobin, Strategy::Pinned] {
        let name = format!("{strategy:?}").to_lowercase();
        let group = group_over_all(&store, &name, strategy);
        let (x, y) = (group.consumer("x"), group.consumer("y"));
        let mut seen = Vec::new();
        for _ in 0..100 {
            for c in [&x, &y] {
                // Three at most per fetch, however many are asked for.
                let mut taken = 0;
                let got = c
                    .fetch_while(10, Duration::ZERO, |_| {
                        taken += 1;
                        taken <= 3
                    })
                    .unwrap();
                assert!(got.len() <= 3);
                assert!(
                    got.iter().all(|d| d.retry_count == 0),
                    "{strategy:?}: a refused event was delivered"
                );
                c.ack(&got.iter().map(|d| d.event.id).collect::<Vec<_>>()).unwrap();
                seen.extend(got.iter().map(|d| d.event.position));
            }
        }
        seen.sort_unstable();
        let want: Vec<u64> = store
            .read_all(Direction::Forward, annal::LogFrom::Start, 40, &annal::Filter::all())
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(seen, want, "{strategy:?}: each event once");
        assert_eq!(group.info().in_flight, 0, "{strategy:?}");
    }
    // A refused first event: nothing delivered, and it comes next.
    let group = store.create_group("first", GroupSettings::all()).unwrap();
    let c = group.consumer("c");
    assert!(c.fetch_while(5, Duration::ZERO, |_| false).unwrap().is_empty());
    assert_eq!(group.info().in_flight, 0);
    let got = c.fetch(1, Duration::ZERO).unwrap();
    assert_eq!((got[0].event.position, got[0].retry_count), (0, 0));
}

/// A fetch whose `fits` stops after one event reads only a small chunk of
/// the source, whatever `max` is: an answer capped by bytes must not hold
/// up to `max_in_flight` events (of up to 4 MiB each) in memory.
#[test]
fn fetch_while_reads_the_source_lazily() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 1000);
    let group = store.create_group("g", GroupSettings::all()).unwrap();
    let c = group.consumer("c");
    let mut n = 0;
    let got = c
        .fetch_while(10_000, Duration::ZERO, |_| {
            n += 1;
            n == 1
        })
        .unwrap();
    assert_eq!(got.len(), 1);
    let info = group.info();
    assert!(info.ready <= 8, "{} events read ahead for 1 delivered", info.ready);
    // A fetch that accepts everything still gets everything, in order.
    let mut seen = vec![got[0].event.position];
    c.ack(&[got[0].event.id]).unwrap();
    loop {
        let got = c.fetch(10_000, Duration::ZERO).unwrap();
        if got.is_empty() {
            break;
        }
        c.ack(&got.iter().map(|d| d.event.id).collect::<Vec<_>>()).unwrap();
        seen.extend(got.iter().map(|d| d.event.position));
    }
    let want: Vec<u64> = store
        .read_all(Direction::Forward, annal::LogFrom::Start, 1000, &annal::Filter::all())
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(seen, want);
}

/// A `fits` that panics (a caller's bug) takes nothing: every event stays
/// in line and is delivered by the next fetch, in a round-robin group and
/// in a pinned one (where events of other consumers are passed over).
#[test]
fn a_panicking_fits_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 20);
    let want: Vec<u64> = store
        .read_all(Direction::Forward, annal::LogFrom::Start, 20, &annal::Filter::all())
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    for (strategy, panic_at) in [
        (Strategy::RoundRobin, 1),
        (Strategy::RoundRobin, 3),
        (Strategy::Pinned, 2),
    ] {
        let name = format!("{strategy:?}-{panic_at}").to_lowercase();
        let group = group_over_all(&store, &name, strategy);
        let (x, y) = (group.consumer("x"), group.consumer("y"));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut n = 0;
            x.fetch_while(10, Duration::ZERO, |_| {
                n += 1;
                assert!(n < panic_at, "the caller's closure panics");
                true
            })
        }));
        assert!(r.is_err());
        assert_eq!(group.info().in_flight, 0, "{name}: nothing taken");
        let mut seen = Vec::new();
        for _ in 0..50 {
            for c in [&x, &y] {
                let got = c.fetch(100, Duration::ZERO).unwrap();
                assert!(got.iter().all(|d| d.retry_count == 0), "{name}");
                c.ack(&got.iter().map(|d| d.event.id).collect::<Vec<_>>()).unwrap();
                seen.extend(got.iter().map(|d| d.event.position));
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, want, "{name}: each event delivered once");
    }
}

#[test]
fn a_group_resumes_from_its_checkpoint_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, 100);
        let group = store
            .create_group(
                "orders",
                GroupSettings {
                    checkpoint_every: 10,
                    ..GroupSettings::stream("order-1")
                },
            )
            .unwrap();
        let c = group.consumer("c");
        let d = c.fetch(15, T).unwrap();
        assert_eq!(
            d.iter().map(|d| d.event.revision).collect::<Vec<_>>(),
            (0..15).collect::<Vec<_>>()
        );
        c.ack(&d[..12].iter().map(|d| d.event.id).collect::<Vec<_>>()).unwrap();
        // Revisions 12..15 are delivered but not acknowledged when the store closes.
        drop(c);
        drop(group);
        store.close().unwrap();
    }
    let store = open(dir.path());
    let group = store.group("orders").unwrap();
    assert_eq!(group.info().checkpoint, 12);
    let c = group.consumer("c2");
    let d = c.fetch(100, T).unwrap();
    assert_eq!(
        d.iter().map(|d| d.event.revision).collect::<Vec<_>>(),
        (12..25).collect::<Vec<_>>()
    );
    store.delete_group("orders").unwrap();
    assert!(store.group("orders").is_err());
    assert!(store.groups_list().unwrap().is_empty());
}

#[test]
fn system_streams_are_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(matches!(
        store.append("$groups", ExpectedVersion::Any, vec![EventData::json("X", "{}")]),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn the_system_event_is_written_once_and_its_stream_stays_reserved() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store, 1);
        assert!(store.mark_system_event().unwrap());
        assert!(!store.mark_system_event().unwrap());
        assert!(matches!(
            store.append(
                annal::SYSTEM_STREAM,
                ExpectedVersion::Any,
                vec![EventData::json("X", "{}")]
            ),
            Err(Error::InvalidInput(_))
        ));
    }
    let store = open(dir.path());
    assert!(!store.mark_system_event().unwrap(), "once per store, across opens");
    let all = store
        .read_all(Direction::Forward, annal::LogFrom::Start, 10, &annal::Filter::all())
        .unwrap();
    let system: Vec<_> = all.iter().filter(|e| e.stream == annal::SYSTEM_STREAM).collect();
    assert_eq!(system.len(), 1);
    assert_eq!(
        (system[0].event_type.as_str(), system[0].id, system[0].position),
        (annal::STORE_CREATED_TYPE, annal::STORE_CREATED_ID, 1)
    );
}

#[test]
fn an_update_changes_the_settings_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 40);
    let group = store.create_group("u", GroupSettings::stream("order-1")).unwrap();
    let c = group.consumer("c");
    let d = c.fetch(4, T).unwrap();
    c.ack(&d.iter().map(|d| d.event.id).collect::<Vec<_>>()).unwrap();
    drop(c);
    drop(group);
    let updated = GroupSettings {
        max_retries: 1,
        strategy: Strategy::Pinned,
        ..GroupSettings::stream("order-1")
    };
    store.update_group("u", updated.clone()).unwrap();
    let group = store.group("u").unwrap();
    assert_eq!(group.settings(), &updated);
    assert_eq!(group.info().checkpoint, 4);
    let d = group.consumer("c").fetch(1, T).unwrap();
    assert_eq!(d[0].event.revision, 4);
    assert!(matches!(
        store.update_group("nope", GroupSettings::all()),
        Err(Error::InvalidInput(m)) if m.contains("does not exist")
    ));
}

#[test]
fn a_group_created_again_after_a_delete_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 20);
    let settings = GroupSettings {
        checkpoint_every: 1,
        ..GroupSettings::stream("order-1")
    };
    let group = store.create_group("again", settings.clone()).unwrap();
    let c = group.consumer("c");
    let d = c.fetch(3, T).unwrap();
    c.ack(&[d[0].event.id, d[1].event.id]).unwrap();
    c.nack(d[2].event.id, NackAction::Park, "poison").unwrap();
    drop(c);
    drop(group);
    store.delete_group("again").unwrap();
    let group = store.create_group("again", settings).unwrap();
    let info = group.info();
    assert_eq!((info.checkpoint, info.parked), (0, 0));
    assert_eq!(group.consumer("c").fetch(1, T).unwrap()[0].event.revision, 0);
    // What the deleted group parked is not replayed by the new one.
    assert_eq!(group.replay_parked().unwrap(), 0);
}

#[test]
fn dispatch_to_single_passes_events_on_only_once_earlier_consumers_are_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 5);
    let settings = GroupSettings {
        strategy: Strategy::DispatchToSingle,
        ..GroupSettings::all()
    };
    let group = store.create_group("single", settings).unwrap();
    let first = group.consumer_with_capacity("first", 2);
    let second = group.consumer_with_capacity("second", 10);
    // The first has room: the second gets nothing, even asking first.
    assert!(second.fetch(10, Duration::from_millis(10)).unwrap().is_empty());
    let a = first.fetch(10, T).unwrap();
    assert_eq!(a.len(), 5, "a fetch is not limited by the capacity, only turns are");
    first.nack(a[2].event.id, NackAction::Retry, "back").unwrap();
    first.nack(a[3].event.id, NackAction::Retry, "back").unwrap();
    first.nack(a[4].event.id, NackAction::Retry, "back").unwrap();
    // Now the first holds 2 of its 2: the rest go to the second.
    let mut b: Vec<u64> = second.fetch(10, T).unwrap().iter().map(|d| d.event.position).collect();
    b.sort_unstable();
    assert_eq!(b, [2, 3, 4]);
    first.ack(&[a[0].event.id]).unwrap();
    fill(&store, 1);
    assert!(second.fetch(10, Duration::from_millis(10)).unwrap().is_empty());
    assert_eq!(first.fetch(10, T).unwrap().len(), 1);
}

#[test]
fn replaying_parked_events_up_to_a_limit_leaves_the_rest_parked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 3);
    let group = store.create_group("g", GroupSettings::all()).unwrap();
    let c = group.consumer("c");
    for d in c.fetch(3, T).unwrap() {
        c.nack(d.event.id, NackAction::Park, "poison").unwrap();
    }
    assert_eq!(group.replay_parked_up_to(2).unwrap(), 2);
    let again = c.fetch(10, T).unwrap();
    assert_eq!(again.iter().map(|d| d.event.position).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(group.replay_parked_up_to(0).unwrap(), 0);
    assert_eq!(group.replay_parked().unwrap(), 1);
    assert_eq!(c.fetch(10, T).unwrap()[0].event.position, 2);
}

/// A replayed parked event is not forgotten when the store closes before it
/// is acknowledged: after a reopen it is delivered or replayed again. Once
/// acknowledged, a reopen does not replay it again.
#[test]
fn a_replayed_event_not_yet_acknowledged_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open_always =
        |dir: &std::path::Path| Store::open(dir, Options::default().durability(Durability::Always)).unwrap();
    {
        let store = open_always(dir.path());
        store
            .append("s", ExpectedVersion::Any, vec![EventData::json("E", "1")])
            .unwrap();
        let group = store.create_group("g", GroupSettings::all()).unwrap();
        let c = group.consumer("c");
        let d = c.fetch(1, T).unwrap();
        c.nack(d[0].event.id, NackAction::Park, "poison").unwrap();
        assert_eq!(group.replay_parked().unwrap(), 1);
    }
    {
        let store = open_always(dir.path());
        let group = store.group("g").unwrap();
        let c = group.consumer("c");
        let mut again = c.fetch(10, T).unwrap();
        assert!(
            again.is_empty(),
            "the checkpoint had passed the event before it was parked"
        );
        assert_eq!(
            group.replay_parked().unwrap(),
            1,
            "the replayed event was lost by the reopen"
        );
        again = c.fetch(10, T).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].event.stream, "s");
        c.ack(&[again[0].event.id]).unwrap();
    }
    let store = open_always(dir.path());
    assert_eq!(
        store.group("g").unwrap().replay_parked().unwrap(),
        0,
        "replayed again after its ack"
    );
}

/// A park that fails (its record is refused: here the store's event size
/// limit is smaller than the record even without a reason, the event's
/// stream name being nearly that long) keeps the event in the group: the
/// checkpoint does not pass it, not even once saved, and it is delivered
/// again.
#[test]
fn a_park_that_fails_keeps_the_event_in_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::default().durability(Durability::Never);
    options.max_event_size = 1024;
    let store = Store::open(dir.path(), options).unwrap();
    store
        .append(&"o".repeat(1000), ExpectedVersion::Any, vec![EventData::json("E", "0")])
        .unwrap();
    let group = store
        .create_group(
            "g",
            GroupSettings {
                checkpoint_every: 1,
                ..GroupSettings::all()
            },
        )
        .unwrap();
    let c = group.consumer("c");
    let d = c.fetch(1, T).unwrap();
    assert!(c.nack(d[0].event.id, NackAction::Park, &"x".repeat(2000)).is_err());
    group.save_checkpoint().unwrap();
    let info = group.info();
    assert_eq!(
        (info.checkpoint, info.saved_checkpoint, info.parked),
        (0, 0, 0),
        "{info:?}"
    );
    let again = c.fetch(10, T).unwrap();
    assert_eq!(again.len(), 1, "the event left the group");
    assert_eq!((again[0].event.id, again[0].retry_count), (d[0].event.id, 1));
}

/// A reason longer than [`MAX_PARK_REASON`] is cut (on a character
/// boundary), never a reason to refuse the park: a 5 MiB reason (more than
/// the largest event) parks the event.
#[test]
fn a_long_park_reason_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, 1);
    let group = store.create_group("g", GroupSettings::all()).unwrap();
    let c = group.consumer("c");
    let d = c.fetch(1, T).unwrap();
    // 'é' is two bytes: the cut must not split one.
    let reason = format!("x{}", "é".repeat(5 << 19));
    assert!(reason.len() > store.max_event_size());
    c.nack(d[0].event.id, NackAction::Park, &reason).unwrap();
    assert_eq!(group.info().parked, 1);
    let parked = store
        .read_stream(&parked_stream("g"), Direction::Forward, StreamFrom::Start, 10)
        .unwrap();
    let rec = ParkedRecord::from_event(&parked[0]).unwrap();
    assert_eq!(rec.reason.len(), MAX_PARK_REASON - 1);
    assert!(reason.starts_with(&rec.reason));
    assert!(c.fetch(10, T).unwrap().is_empty());
}

/// A store whose event size limit is smaller than a long reason (here 1 KiB,
/// and a reason of control characters, six bytes each in JSON) still parks:
/// the reason is cut to fit the record under the limit.
#[test]
fn a_park_reason_is_cut_to_the_stores_event_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::default().durability(Durability::Never);
    options.max_event_size = 1024;
    let store = Store::open(dir.path(), options).unwrap();
    fill(&store, 1);
    let group = store.create_group("g", GroupSettings::all()).unwrap();
    let c = group.consumer("c");
    let d = c.fetch(1, T).unwrap();
    let reason = "\u{1}".repeat(MAX_PARK_REASON);
    c.nack(d[0].event.id, NackAction::Park, &reason).unwrap();
    assert_eq!(group.info().parked, 1);
    let parked = store
        .read_stream(&parked_stream("g"), Direction::Forward, StreamFrom::Start, 10)
        .unwrap();
    assert!(parked[0].data.len() <= 1024);
    let rec = ParkedRecord::from_event(&parked[0]).unwrap();
    assert!(
        !rec.reason.is_empty() && reason.starts_with(&rec.reason),
        "{}",
        rec.reason.len()
    );
    assert!(c.fetch(10, T).unwrap().is_empty());
}

/// A new group over the whole log with `strategy` and default settings.
fn group_over_all<'s>(store: &'s Store, name: &str, strategy: Strategy) -> annal::Group<'s> {
    store
        .create_group(
            name,
            GroupSettings {
                strategy,
                ..GroupSettings::all()
            },
        )
        .unwrap()
}

/// A group none of whose checkpoints can be read any more (lost to damage,
/// then repair) resumes at its start setting (here after position 4), not
/// at the start of the log, keeps its count of parked events, and the store
/// reports it.
#[test]
fn a_group_whose_checkpoints_are_all_lost_resumes_at_its_start_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = {
        let store = open(dir.path());
        fill(&store, 10);
        let settings = GroupSettings {
            checkpoint_every: 1,
            start: annal::SubscribeFrom::After(4),
            ..GroupSettings::all()
        };
        {
            let group = store.create_group("g", settings).unwrap();
            let c = group.consumer("c");
            let d = c.fetch(2, T).unwrap();
            c.nack(d[0].event.id, NackAction::Park, "bad").unwrap();
            c.ack(&[d[1].event.id]).unwrap();
        }
        let saved = store
            .read_stream("$group-g-checkpoint", Direction::Forward, StreamFrom::Start, 100)
            .unwrap();
        store.close().unwrap();
        saved
    };
    assert!(!checkpoints.is_empty());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let mut bytes = std::fs::read(&path).unwrap();
            for c in &checkpoints {
                if let Some(at) = bytes.windows(c.data.len()).position(|w| w == &c.data[..]) {
                    bytes[at + c.data.len() / 2] ^= 0x20;
                }
            }
            std::fs::write(&path, bytes).unwrap();
        }
    }
    annal::repair(dir.path()).unwrap();
    let store = open(dir.path());
    let info = store.group("g").unwrap().info();
    assert_eq!((info.checkpoint, info.parked), (5, 1), "{info:?}");
    let said = store.stats().last_background_error.unwrap_or_default();
    assert!(said.contains("\"g\"") && said.contains("resumes at 5"), "{said}");
}

/// Audit (starvation): a group's in-flight cap counted events, not bytes,
/// so a consumer that never acknowledged made its group hold up to
/// `max_in_flight` events of any size in memory (64 KiB events and
/// `max_in_flight` 100,000: 6.4 GB). A group now reads no more of its
/// source once it holds `Options::max_group_held_bytes` (passing it by one
/// read at most), until acknowledgements free some.
#[test]
fn a_group_holds_about_max_group_held_bytes_of_unacknowledged_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Options::default()
            .durability(Durability::Never)
            .max_group_held_bytes(4 << 10),
    )
    .unwrap();
    let kib = "x".repeat(1000);
    for _ in 0..200 {
        store
            .append(
                "big-1",
                ExpectedVersion::Any,
                vec![EventData::json("E", format!("\"{kib}\""))],
            )
            .unwrap();
    }
    let settings = GroupSettings {
        max_in_flight: 100_000,
        ..GroupSettings::all()
    };
    let group = store.create_group("g", settings).unwrap();
    let c = group.consumer("c");
    let first = c.fetch(100, T).unwrap();
    // The first read of the source (8 events) passes the 4 KiB; no more is read.
    assert!(!first.is_empty() && first.len() <= 8, "{}", first.len());
    assert!(c.fetch(100, T).unwrap().is_empty(), "read past the byte cap");
    let info = group.info();
    assert_eq!((info.in_flight, info.ready), (first.len(), 0), "{info:?}");
    // Acknowledged, they make room again.
    c.ack(&first.iter().map(|d| d.event.id).collect::<Vec<_>>()).unwrap();
    assert!(!c.fetch(100, T).unwrap().is_empty());
}
