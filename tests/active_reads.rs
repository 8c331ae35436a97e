//! Reads of the active segment: reads racing appends see exactly the
//! published (here durable) events and never a torn frame, on the real file
//! system and on the simulation; a read after the active segment is sealed
//! sees every event; damage in the active segment is reported with its file
//! and offset. (Written for reads through a mapping of the active segment,
//! since reverted: they hold for its positional reads as well.)

// Tests may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annal::{
    Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, SimStorage, Store, StreamFrom,
};

/// The data of the event appended `n`-th: about 1.2 KB, so that a few
/// hundred appends run the active segment several MiB (a mapping, when there was one, was renewed every MiB).
fn data(n: u64) -> String {
    format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(1200))
}

fn options() -> Options {
    Options::default().no_compression().durability(Durability::Always)
}

/// Appends 3,000 events (300 appends of 10, streams "s0".."s2" in turn)
/// while another thread reads the whole log and one stream again and
/// again: every read holds every event acknowledged before it started,
/// none that was not published when it ended, each event whole and where
/// its position says.
fn reads_race_appends(store: Store) {
    let store = Arc::new(store);
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !done.load(Ordering::Acquire) || reads < 3 {
                let before = store.head_position();
                let all = store
                    .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
                    .unwrap();
                let after = store.head_position();
                let n = all.len() as u64;
                assert!(
                    before <= n && n <= after,
                    "read {n} events; published {before}..{after}"
                );
                for (i, e) in all.iter().enumerate() {
                    assert_eq!(e.position, i as u64);
                    assert_eq!(e.data, data(i as u64).as_bytes(), "event {i}");
                }
                if let Ok(s1) = store.read_stream("s1", Direction::Forward, StreamFrom::Start, usize::MAX) {
                    for (r, e) in s1.iter().enumerate() {
                        assert_eq!(e.revision, r as u64);
                        assert_eq!(e.data, data(e.position).as_bytes());
                    }
                }
                reads += 1;
            }
            reads
        })
    };
    for a in 0..300u64 {
        let events = (a * 10..a * 10 + 10).map(|n| EventData::json("E", data(n))).collect();
        store
            .append(&format!("s{}", a % 3), ExpectedVersion::Any, events)
            .unwrap();
    }
    done.store(true, Ordering::Release);
    assert!(reader.join().unwrap() >= 3);
    assert_eq!(store.segment_count(), 1, "every event must be in the active segment");
}

#[test]
fn reads_racing_appends_see_the_published_events_whole_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    reads_race_appends(Store::open(dir.path(), options()).unwrap());
}

#[test]
fn reads_racing_appends_see_the_published_events_whole_in_the_simulation() {
    let sim = SimStorage::new();
    reads_race_appends(Store::open_with(Arc::new(sim), "/data", options()).unwrap());
}

#[test]
fn a_read_after_the_active_segment_is_sealed_sees_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options().segment_size(64 << 10)).unwrap();
    for n in 0..20 {
        store
            .append("s", ExpectedVersion::Any, vec![EventData::json("E", data(n))])
            .unwrap();
    }
    // Read from the active segment; the events outlive the read.
    let early = store
        .read_stream("s", Direction::Forward, StreamFrom::Start, usize::MAX)
        .unwrap();
    assert_eq!(store.segment_count(), 1);
    let mut n = 20;
    while store.segment_count() < 3 {
        store
            .append("s", ExpectedVersion::Any, vec![EventData::json("E", data(n))])
            .unwrap();
        n += 1;
    }
    for (r, e) in early.iter().enumerate() {
        assert_eq!(e.data, data(r as u64).as_bytes());
    }
    let all = store
        .read_stream("s", Direction::Forward, StreamFrom::Start, usize::MAX)
        .unwrap();
    assert_eq!(all.len() as u64, n);
    for (r, e) in all.iter().enumerate() {
        assert_eq!((e.revision, e.position), (r as u64, r as u64));
        assert_eq!(e.data, data(r as u64).as_bytes());
    }
    let back = store
        .read_all(Direction::Backward, LogFrom::End, usize::MAX, &Filter::all())
        .unwrap();
    assert_eq!(back.len() as u64, n);
    assert!(back.iter().rev().enumerate().all(|(i, e)| e.position == i as u64));
}

#[test]
fn damage_in_the_active_segment_is_reported_with_its_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    for n in 0..50 {
        store
            .append("s", ExpectedVersion::Any, vec![EventData::json("E", data(n))])
            .unwrap();
    }
    // The first read maps the active segment; the damage comes after it.
    assert_eq!(
        store
            .read_stream("s", Direction::Forward, StreamFrom::Start, usize::MAX)
            .unwrap()
            .len(),
        50
    );
    let seg = dir.path().join("00000000000000000000.seg");
    let bytes = std::fs::read(&seg).unwrap();
    let needle = br#"{"n":17,"#;
    let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap() as u64;
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.write_all_at(b"{\"n\":71,", at).unwrap();
    file.sync_data().unwrap();

    let err = store
        .read_stream("s", Direction::Forward, StreamFrom::Start, usize::MAX)
        .unwrap_err();
    let Error::Corruption { file, offset, .. } = &err else {
        panic!("expected corruption, got {err}");
    };
    assert_eq!(file, &seg);
    assert!(offset < &at && at - offset < 200, "frame at {offset}, damage at {at}");
    // The events on either side are still read.
    for r in [16, 18] {
        let e = store
            .read_stream("s", Direction::Forward, StreamFrom::Revision(r), 1)
            .unwrap();
        assert_eq!(e[0].data, data(r).as_bytes());
    }
    let err = store
        .read_all(Direction::Forward, LogFrom::Position(17), 1, &Filter::all())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Corruption { offset: o, .. } if o == offset),
        "{err}"
    );
}
