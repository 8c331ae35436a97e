//! Reading without writing: a store open for reading only needs no lock and
//! writes nothing (read-only mounts, a store a server holds), and a damaged
//! store opens degraded: intact data stays readable, reads touching the damage
//! fail with its file and offset, appends are refused with a typed error.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;
use std::sync::Arc;

use annal::{
    Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, SimStorage, Storage, Store,
    StreamFrom,
};

fn options() -> Options {
    Options::default()
        .no_compression()
        .durability(Durability::Always)
        .segment_size(4096)
}

fn ev(n: u64) -> EventData {
    EventData::json("E", format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(120)))
}

fn all(store: &Store) -> annal::Result<Vec<annal::RecordedEvent>> {
    store.read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
}

#[test]
fn a_reader_opens_beside_the_writer_and_sees_a_consistent_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), options()).unwrap();
    for n in 0..40 {
        writer
            .append(&format!("s-{}", n % 3), ExpectedVersion::Any, vec![ev(n)])
            .unwrap();
    }
    assert!(writer.segment_count() > 1);
    // The writer holds the lock; a reader needs none.
    assert!(matches!(Store::open(dir.path(), options()), Err(Error::Locked { .. })));
    let reader = Store::open_read_only(dir.path(), options()).unwrap();
    assert!(reader.is_read_only());
    assert_eq!(all(&reader).unwrap(), all(&writer).unwrap());
    assert_eq!(reader.streams().len(), 3);
    // Later appends are not in the snapshot; the reader never writes.
    writer.append("s-0", ExpectedVersion::Any, vec![ev(99)]).unwrap();
    assert_eq!(reader.head_position(), 40);
    assert!(matches!(
        reader.append("s-0", ExpectedVersion::Any, vec![ev(100)]),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(reader.scavenge(), Err(Error::ReadOnly { .. })));
    assert!(reader.write_failure().is_some());
    assert!(reader.verify().unwrap().is_clean());
    reader.close().unwrap();
    writer.close().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.head_position(), 41);
}

#[test]
fn a_store_on_a_read_only_disk_can_be_read() {
    let sim = SimStorage::new();
    let disk: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), "/d", options()).unwrap();
    for n in 0..30 {
        store.append("s", ExpectedVersion::Any, vec![ev(n)]).unwrap();
    }
    let expected = all(&store).unwrap();
    store.close().unwrap();
    sim.set_read_only(true);
    let ops = sim.mutating_ops();
    // A writer cannot even take the lock; a reader does not need it.
    assert!(Store::open_with(disk.clone(), "/d", options()).is_err());
    let reader = Store::open_read_only_with(disk.clone(), "/d", options()).unwrap();
    assert_eq!(all(&reader).unwrap(), expected);
    assert_eq!(reader.stats().events, 30);
    assert!(reader.verify().unwrap().is_clean());
    let s = reader
        .read_stream("s", Direction::Backward, StreamFrom::End, 5)
        .unwrap();
    assert_eq!(s.len(), 5);
    reader.close().unwrap();
    assert_eq!(sim.mutating_ops(), ops, "a read-only open wrote something");
    // A missing store is not created.
    assert!(Store::open_read_only_with(disk, "/elsewhere", options()).is_err());
}

/// A store with three streams over several segments, closed; the position of
/// the first event of `victim` in the last segment is damaged.
fn damaged_store(sim: &SimStorage) -> (Vec<annal::RecordedEvent>, u64) {
    let disk: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(disk, "/d", options()).unwrap();
    for n in 0..60 {
        let stream = ["intact", "victim", "other"][(n % 3) as usize];
        store.append(stream, ExpectedVersion::Any, vec![ev(n)]).unwrap();
    }
    let events = all(&store).unwrap();
    store.close().unwrap();
    let mut segs: Vec<String> = sim
        .list(Path::new("/d"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    segs.sort();
    let last = Path::new("/d").join(segs.last().unwrap());
    let bytes = sim.read_file(&last).unwrap();
    let base: u64 = segs.last().unwrap()[..20].parse().unwrap();
    // Damage the data of the first victim event of the last segment.
    let victim = events
        .iter()
        .find(|e| e.position >= base && e.stream == "victim")
        .unwrap()
        .position;
    let needle = format!(r#"{{"n":{victim}"#);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap();
    sim.flip_bit(&last, at as u64 + 2, 1).unwrap();
    (events, victim)
}

#[test]
fn a_damaged_store_opens_degraded_and_serves_what_is_intact() {
    let sim = SimStorage::new();
    let disk: Arc<dyn Storage> = Arc::new(sim.clone());
    let (events, damaged) = damaged_store(&sim);
    // A writer refuses it, as before.
    assert!(matches!(
        Store::open_with(disk.clone(), "/d", options()),
        Err(Error::Corruption { .. })
    ));
    let store = Store::open_or_degraded_with(disk.clone(), "/d", options()).unwrap();
    assert!(store.is_read_only());
    let why = store.write_failure().unwrap();
    assert!(why.contains("repair"), "{why}");
    assert_eq!(store.damage().len(), 1);
    assert_eq!(store.damage()[0].first_position, damaged);
    // Appends are refused with a typed error that says to repair.
    match store.append("intact", ExpectedVersion::Any, vec![ev(1000)]) {
        Err(Error::ReadOnly { reason }) => assert!(reason.contains("repair"), "{reason}"),
        other => panic!("expected ReadOnly, got {other:?}"),
    }
    // The global log: everything before the damage reads; a read that would
    // have to pass the damage fails with its error (never a short answer).
    let before = store
        .read_all(Direction::Forward, LogFrom::Start, damaged as usize, &Filter::all())
        .unwrap();
    assert_eq!(before, events[..damaged as usize]);
    assert!(matches!(
        store.read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all()),
        Err(Error::Corruption { .. })
    ));
    match store.read_all(Direction::Forward, LogFrom::Position(damaged), 10, &Filter::all()) {
        Err(Error::Corruption { file, .. }) => assert!(file.to_string_lossy().ends_with(".seg")),
        other => panic!("expected corruption, got {other:?}"),
    }
    // Streams whose events lie before the damage read whole.
    let intact_before: Vec<_> = events
        .iter()
        .filter(|e| e.stream == "victim" && e.position < damaged)
        .cloned()
        .collect();
    let victim = store
        .read_stream("victim", Direction::Forward, StreamFrom::Start, usize::MAX)
        .unwrap();
    // (The log ends in the damage, so nothing says the stream had more: it ends there.)
    assert_eq!(victim, intact_before);
    // Reading the log backwards from before the damage works.
    let back = store
        .read_all(Direction::Backward, LogFrom::Position(damaged - 1), 5, &Filter::all())
        .unwrap();
    assert_eq!(back[0].position, damaged - 1);
    store.close().unwrap();
    // repair clears it: the store opens for writing again.
    annal::repair_with(disk.clone(), Path::new("/d")).unwrap();
    let store = Store::open_with(disk, "/d", options()).unwrap();
    assert!(store.verify().unwrap().is_clean());
}

/// Damage in a sealed segment whose index is gone: the positions from the damage
/// to the next segment are hidden, everything around them reads, and a stream
/// read stops at the hole with the damage's error instead of skipping it.
#[test]
fn damage_in_an_earlier_segment_leaves_a_hole_that_reads_report() {
    let sim = SimStorage::new();
    let disk: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), "/d", options()).unwrap();
    for n in 0..60 {
        let stream = ["intact", "victim", "other"][(n % 3) as usize];
        store.append(stream, ExpectedVersion::Any, vec![ev(n)]).unwrap();
    }
    let events = all(&store).unwrap();
    store.close().unwrap();
    let first = Path::new("/d/00000000000000000000.seg");
    sim.remove(Path::new("/d/00000000000000000000.idx")).unwrap();
    let bytes = sim.read_file(first).unwrap();
    let at = bytes.windows(7).position(|w| w == br#"{"n":4,"#).unwrap();
    sim.flip_bit(first, at as u64 + 2, 1).unwrap();
    assert!(Store::open_with(disk.clone(), "/d", options()).is_err());
    let store = Store::open_or_degraded_with(disk, "/d", options()).unwrap();
    let d = store.damage()[0].clone();
    assert_eq!(d.first_position, 4);
    assert!(d.end_position > 4 && d.end_position < 60, "{d:?}");
    assert_eq!(d.file, first);
    assert_eq!(
        store
            .read_all(Direction::Forward, LogFrom::Start, 4, &Filter::all())
            .unwrap(),
        events[..4]
    );
    assert!(
        store
            .read_all(Direction::Forward, LogFrom::Start, 100, &Filter::all())
            .is_err()
    );
    assert!(
        store
            .read_all(Direction::Forward, LogFrom::Position(4), 100, &Filter::all())
            .is_err()
    );
    let after = store
        .read_all(
            Direction::Forward,
            LogFrom::Position(d.end_position),
            100,
            &Filter::all(),
        )
        .unwrap();
    assert_eq!(after, events[d.end_position as usize..]);
    // victim has revision 0 at position 1 and revision 1 at position 4 (damaged).
    let victim = store
        .read_stream("victim", Direction::Forward, StreamFrom::Start, 1)
        .unwrap();
    assert_eq!(victim.len(), 1);
    assert!(matches!(
        store.read_stream("victim", Direction::Forward, StreamFrom::Start, 100),
        Err(Error::Corruption { .. })
    ));
    assert!(matches!(
        store.read_stream("victim", Direction::Forward, StreamFrom::Revision(1), 100),
        Err(Error::Corruption { .. })
    ));
    // Reading a stream backwards from its end, above the hole, works.
    let intact = store
        .read_stream("intact", Direction::Backward, StreamFrom::End, 3)
        .unwrap();
    assert_eq!(intact.len(), 3);
}

/// A damaged header of the last segment, which holds events, is damage too:
/// a read-only open records it rather than treating the segment as empty.
#[test]
fn a_damaged_header_of_the_last_segment_is_damage_not_an_empty_segment() {
    let sim = SimStorage::new();
    let disk: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), "/d", options()).unwrap();
    for n in 0..40 {
        store.append("s", ExpectedVersion::Any, vec![ev(n)]).unwrap();
    }
    let events = all(&store).unwrap();
    store.close().unwrap();
    let mut segs: Vec<String> = sim
        .list(Path::new("/d"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    segs.sort();
    let last = Path::new("/d").join(segs.last().unwrap());
    let base: u64 = segs.last().unwrap()[..20].parse().unwrap();
    assert!(base > 0 && base < 40);
    sim.flip_bit(&last, 3, 0).unwrap();
    let store = Store::open_or_degraded_with(disk, "/d", options()).unwrap();
    assert_eq!(store.damage().len(), 1, "{:?}", store.damage());
    assert_eq!(store.damage()[0].first_position, base);
    assert_eq!(
        store
            .read_all(Direction::Forward, LogFrom::Start, base as usize, &Filter::all())
            .unwrap(),
        events[..base as usize]
    );
    assert!(
        store
            .read_all(Direction::Forward, LogFrom::Start, 100, &Filter::all())
            .is_err()
    );
    assert!(!store.verify().unwrap().is_clean());
}

#[test]
fn a_backup_of_a_store_open_degraded_is_refused_not_silently_short() {
    // The copy would hold only the intact part and look whole.
    let sim = SimStorage::new();
    let disk: Arc<dyn Storage> = Arc::new(sim.clone());
    let (_, damaged) = damaged_store(&sim);
    let store = Store::open_or_degraded_with(disk, "/d", options()).unwrap();
    assert!(!store.damage().is_empty());
    let err = store.backup("/copy").unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(store.damage().iter().any(|d| d.first_position <= damaged));
}
