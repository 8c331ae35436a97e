//! Live storage faults while the process keeps running: a failed sync stops the
//! writer for good (nothing later is acknowledged, nothing acknowledged is lost);
//! a failed write, a full disk or a failure while starting the next segment fails
//! only the appends it touches, and appends resume by themselves afterwards.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::sync::Arc;

use annal::{Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, SimStorage, Store};
use parking_lot::Mutex;
use uuid::Uuid;

const DIR: &str = "/data";

fn options() -> Options {
    // Tiny segments, so that rotations happen every few appends.
    Options::default()
        .no_compression()
        .durability(Durability::Always)
        .segment_size(4096)
}

fn open(sim: &SimStorage) -> Store {
    Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap()
}

fn event(n: u64) -> EventData {
    EventData::json("E", format!(r#"{{"n":{n},"pad":"{}"}}"#, "p".repeat(300))).with_id(Uuid::from_u64_pair(7, n))
}

/// Every acknowledged event, by position, is in the store with its id.
fn assert_all_present(store: &Store, acked: &BTreeMap<u64, Uuid>) {
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    let by_pos: BTreeMap<u64, Uuid> = all.iter().map(|e| (e.position, e.id)).collect();
    for (p, id) in acked {
        assert_eq!(by_pos.get(p), Some(id), "acknowledged event at {p} lost");
    }
    // Positions stay dense.
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64);
    }
}

#[test]
fn after_a_failed_sync_nothing_is_acknowledged_and_nothing_acknowledged_is_lost() {
    let mut poisoned_runs = 0;
    for nth in 1..16u64 {
        let sim = SimStorage::new();
        let store = open(&sim);
        let acked = Mutex::new(BTreeMap::new());
        let failures = Mutex::new(Vec::new());
        sim.fail_nth_sync(nth);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (store, acked, failures) = (&store, &acked, &failures);
                s.spawn(move || {
                    for k in 0..15u64 {
                        let e = event(t * 100 + k);
                        let id = e.id.unwrap();
                        let poisoned_before = store.write_failure().is_some();
                        match store.append(&format!("s-{t}"), ExpectedVersion::Any, vec![e]) {
                            Ok(r) => {
                                assert!(!poisoned_before, "acknowledged after the writer was poisoned");
                                acked.lock().insert(r.position, id);
                            }
                            Err(e) => failures.lock().push(e),
                        }
                    }
                });
            }
        });
        let failures = failures.into_inner();
        assert!(!failures.is_empty(), "sync fault {nth} never surfaced");
        let poisoned = failures.iter().any(|e| matches!(e, Error::Poisoned { .. }));
        if poisoned {
            // A failed sync of the log: appends stay refused, with the cause; reads work.
            poisoned_runs += 1;
            assert!(store.write_failure().is_some());
            match store.append("late", ExpectedVersion::Any, vec![event(999)]) {
                Err(Error::Poisoned { cause }) => assert!(cause.contains("sync"), "{cause}"),
                other => panic!("expected Poisoned, got {other:?}"),
            }
        } else {
            // A failed sync of a derived file (an index, a checkpoint) written during a
            // rotation fails the append that needed it; the writer carries on.
            for e in &failures {
                assert!(matches!(e, Error::Io { .. }), "sync fault {nth}: {e}");
            }
            assert!(store.write_failure().is_none());
        }
        let acked = acked.into_inner();
        assert_all_present(&store, &acked);
        // Power is lost: the pages whose writeback failed never reached the disk.
        std::mem::forget(store);
        sim.crash(nth, false);
        let store = open(&sim);
        assert_all_present(&store, &acked);
        store.append("after", ExpectedVersion::Any, vec![event(1000)]).unwrap();
    }
    assert!(poisoned_runs > 0, "no run hit a sync of the log");
}

#[test]
fn a_failed_sync_of_an_append_poisons_the_writer_at_once() {
    let sim = SimStorage::new();
    let store = open(&sim);
    store.append("s", ExpectedVersion::Any, vec![event(0)]).unwrap();
    sim.fail_nth_sync(1);
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, vec![event(1)]),
        Err(Error::Poisoned { .. })
    ));
    // The next sync would succeed, on nothing: the writer must not try.
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, vec![event(2)]),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(store.close(), Err(Error::Poisoned { .. })));
    sim.crash(1, false);
    let store = open(&sim);
    assert_eq!(store.head_position(), 1);
}

#[test]
fn failed_writes_fail_only_their_appends_and_the_writer_carries_on() {
    // Each run fails one write: a group, a seal, an index, the stream
    // checkpoint or the next segment's header, depending on where it lands.
    for nth in 1..40u64 {
        let sim = SimStorage::new();
        let store = open(&sim);
        let mut acked = BTreeMap::new();
        let mut failed = 0;
        sim.fail_nth_write(nth);
        for n in 0..40u64 {
            let e = event(n);
            let id = e.id.unwrap();
            match store.append("s", ExpectedVersion::Any, vec![e]) {
                Ok(r) => {
                    acked.insert(r.position, id);
                }
                Err(Error::Io { .. }) => failed += 1,
                Err(e) => panic!("write fault {nth}: unexpected error {e}"),
            }
        }
        assert_eq!(failed, 1, "write fault {nth}: one append fails, the next ones succeed");
        assert!(store.write_failure().is_none(), "write fault {nth} poisoned the store");
        assert_all_present(&store, &acked);
        store.close().unwrap();
        let store = open(&sim);
        assert_all_present(&store, &acked);
        assert!(store.verify().unwrap().is_clean(), "write fault {nth}");
    }
}

/// Issue 11, item 8: the disk fills up (another process) right when a segment
/// rotates; appends fail with `DiskFull` and resume by themselves once space is back.
#[test]
fn a_disk_full_at_rotation_heals_when_space_returns() {
    for free in (0..6000u64).step_by(250) {
        let sim = SimStorage::new();
        let store = open(&sim);
        let mut acked = BTreeMap::new();
        for n in 0..5u64 {
            let e = event(n);
            let id = e.id.unwrap();
            acked.insert(store.append("s", ExpectedVersion::Any, vec![e]).unwrap().position, id);
        }
        sim.set_free_space(Some(free));
        let mut full = 0;
        for n in 5..40u64 {
            let e = event(n);
            let id = e.id.unwrap();
            match store.append("s", ExpectedVersion::Any, vec![e]) {
                Ok(r) => {
                    acked.insert(r.position, id);
                }
                Err(Error::DiskFull { .. }) | Err(Error::Io { .. }) => full += 1,
                Err(e) => panic!("free {free}: unexpected error {e}"),
            }
        }
        assert!(full > 0, "free {free}: the disk never filled");
        assert!(
            store.write_failure().is_none(),
            "free {free}: a full disk poisoned the store"
        );
        sim.set_free_space(None);
        for n in 40..60u64 {
            let e = event(n);
            let id = e.id.unwrap();
            let r = store
                .append("s", ExpectedVersion::Any, vec![e])
                .unwrap_or_else(|e| panic!("free {free}: appends did not resume: {e}"));
            acked.insert(r.position, id);
        }
        assert!(store.segment_count() > 1, "free {free}: no rotation happened");
        assert_all_present(&store, &acked);
        store.close().unwrap();
        let store = open(&sim);
        assert_all_present(&store, &acked);
        assert!(store.verify().unwrap().is_clean(), "free {free}");
    }
}

#[test]
fn a_failed_read_is_a_typed_error_and_stops_nothing() {
    let sim = SimStorage::new();
    let store = open(&sim);
    for n in 0..20 {
        store.append("s", ExpectedVersion::Any, vec![event(n)]).unwrap();
    }
    // Reads of the active segment go through the storage; fail the next one.
    sim.fail_nth_read(1);
    let mut failed = false;
    for _ in 0..3 {
        match store.read_all(Direction::Backward, LogFrom::End, 1, &Filter::all()) {
            Ok(e) => assert_eq!(e.len(), 1),
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(5));
                failed = true;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(failed, "the read fault never surfaced");
    assert!(store.write_failure().is_none());
    store.append("s", ExpectedVersion::Any, vec![event(20)]).unwrap();
}
