//! Event ids stay recognised, whatever the store holds from before its open:
//! an import appends many events with ids, unsynced, and must store each
//! one once when it is run again (after it finished, or after a crash in
//! the middle). Id lookups skip the segments written since open when the
//! ids appended since say "not here" (`log::recent_ids`); these tests fail
//! if that lets a stored id go unseen.

// Tests may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::sync::Arc;

use annal::{
    Append, Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, SimStorage, Store,
};
use uuid::Uuid;

/// Streams the events go to, in turn: every event is a run of one, as in the export of interleaved streams.
const STREAMS: u64 = 50;

fn options() -> Options {
    Options::default()
        .no_compression()
        .durability(Durability::Never)
        .segment_size(64 << 10)
}

/// Event `n` of the file: its stream, and the event with its fixed id.
fn event(n: u64) -> (String, EventData) {
    let id = Uuid::from_u128(0x1234_5678_9abc_4def_8000_0000_0000_0000 | u128::from(n));
    let data = format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(200));
    (format!("s{}", n % STREAMS), EventData::json("E", data).with_id(id))
}

/// Appends events `from..to` in batches of `batch` runs of one, as an import does.
fn append(store: &Store, from: u64, to: u64, batch: u64) -> Vec<annal::Result<annal::AppendResult>> {
    let mut out = Vec::new();
    let mut n = from;
    while n < to {
        let end = (n + batch).min(to);
        let appends = (n..end)
            .map(|k| {
                let (stream, e) = event(k);
                Append::new(stream, ExpectedVersion::Any, vec![e])
            })
            .collect();
        out.extend(store.append_batch(appends).unwrap());
        n = end;
    }
    out
}

/// Every event of the log: (event number from its data, stream, revision).
fn stored(store: &Store) -> Vec<(u64, String, u64)> {
    store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap()
        .into_iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
            (v["n"].as_u64().unwrap(), e.stream, e.revision)
        })
        .collect()
}

/// Each event number in `0..n` exactly once, and each stream's events in
/// the file's order at revisions 0, 1, 2...
fn assert_each_once_in_order(log: &[(u64, String, u64)], n: u64) {
    let mut seen: Vec<u64> = log.iter().map(|(k, ..)| *k).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "every event exactly once");
    let mut next: HashMap<&str, (u64, u64)> = HashMap::new();
    for (k, stream, revision) in log {
        let (rev, last) = next.entry(stream).or_insert((0, 0));
        assert_eq!(*revision, *rev, "stream {stream} at revisions in order");
        assert!(*rev == 0 || k > last, "stream {stream}: event {k} after {last}");
        *rev += 1;
        *last = *k;
    }
}

#[test]
fn ids_stored_before_and_since_open_are_recognised_in_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    // Into an empty store: every lookup is answered by the ids appended since open.
    let first = append(&store, 0, 1500, 256);
    assert!(store.segment_count() > 3, "the events span several segments");
    let head = store.head_position();
    // Appended again: each gets its first result, nothing is added.
    let again = append(&store, 0, 1500, 256);
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a.as_ref().unwrap(), b.as_ref().unwrap());
    }
    assert_eq!(store.head_position(), head);
    store.close().unwrap();

    // Reopened: ids from before the open are in the segments only.
    let store = Store::open(dir.path(), options()).unwrap();
    append(&store, 1500, 3000, 256);
    assert!(store.holds_event_id(event(3).1.id.unwrap()).unwrap());
    assert!(store.holds_event_id(event(2999).1.id.unwrap()).unwrap());
    assert!(!store.holds_event_id(event(3000).1.id.unwrap()).unwrap());
    let head = store.head_position();
    let again = append(&store, 0, 3000, 256);
    assert!(again.iter().all(Result::is_ok), "every event recognised as stored");
    assert_eq!(store.head_position(), head, "nothing appended twice");
    // An id reused in another stream is a conflict, for an old id and a new one.
    for n in [7, 2007] {
        let (_, e) = event(n);
        let err = store.append("elsewhere", ExpectedVersion::Any, vec![e]).unwrap_err();
        assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err}");
    }
    assert_each_once_in_order(&stored(&store), 3000);
    store.close().unwrap();
}

/// An import into a new store that crashes in the middle, run again: the
/// events stored before the crash are skipped by id, the others appended,
/// each event exactly once and each stream in order.
#[test]
fn a_crash_in_the_middle_of_an_import_then_a_rerun_stores_every_event_once() {
    for (seed, torn) in [(1, false), (2, true), (3, true), (4, true)] {
        let sim = SimStorage::new();
        let disk: Arc<dyn annal::Storage> = Arc::new(sim.clone());
        let store = Store::open_with(disk.clone(), "/data", options()).unwrap();
        append(&store, 0, 1200, 100);
        // Seals synced some segments; what follows the last seal may be lost.
        sim.crash(seed, torn);
        drop(store);

        let store = Store::open_with(disk.clone(), "/data", options()).unwrap();
        let survived = store.head_position();
        assert!(
            survived > 0 && survived < 1200,
            "seed {seed}: {survived} events survived"
        );
        // The import again, as `annal import` does it: events whose ids are
        // stored are skipped, the rest appended in the file's order.
        let mut skipped = 0;
        let mut n = 0;
        while n < 1200 {
            let end = (n + 100).min(1200);
            let mut appends = Vec::new();
            for k in n..end {
                let (stream, e) = event(k);
                if store.holds_event_id(e.id.unwrap()).unwrap() {
                    skipped += 1;
                } else {
                    appends.push(Append::new(stream, ExpectedVersion::Any, vec![e]));
                }
            }
            assert!(store.append_batch(appends).unwrap().iter().all(Result::is_ok));
            n = end;
        }
        assert_eq!(skipped, survived, "seed {seed}: exactly what was stored is skipped");
        assert_each_once_in_order(&stored(&store), 1200);
        store.close().unwrap();
        // And a third time, after a clean close: nothing added.
        let store = Store::open_with(disk, "/data", options()).unwrap();
        let again = append(&store, 0, 1200, 100);
        assert!(again.iter().all(Result::is_ok));
        assert_each_once_in_order(&stored(&store), 1200);
    }
}
