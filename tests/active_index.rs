//! Open after a clean close without per-event or per-stream work: the
//! active segment's index comes from `active.idc` (format.md "Active index
//! checkpoint") instead of a scan of the segment, and stream states are
//! searched in place in `streams.chk` version 2. A damaged, truncated or
//! stale `active.idc`, or a crash at any point of the clean close that
//! writes it, must leave a store that opens with exactly the same events,
//! stream versions and lookups, and takes the next appends at the right
//! versions.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use annal::{
    Direction, Durability, EventData, ExpectedVersion, Filter, LogFrom, Options, RecordedEvent, SimStorage, Storage,
    Store, StreamFrom,
};

const DIR: &str = "/store";
const ACTIVE: &str = "/store/active.idc";

fn options() -> Options {
    Options::default()
        .no_compression()
        .durability(Durability::Always)
        .segment_size(16 * 1024)
        .indexed_metadata(["tenant"])
}

fn open(sim: &SimStorage) -> Store {
    Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap()
}

/// Appends `n` events over nine streams, with tags, two types and indexed metadata.
fn fill(store: &Store, from: u64, n: u64) {
    fill_named(store, "order", from, n);
}

fn fill_named(store: &Store, prefix: &str, from: u64, n: u64) {
    for i in from..from + n {
        let e = EventData::json(if i % 3 == 0 { "Placed" } else { "Paid" }, format!(r#"{{"n":{i}}}"#))
            .with_tag(format!("region:{}", i % 4))
            .with_metadata(format!(r#"{{"tenant":"t{}"}}"#, i % 5));
        store
            .append(&format!("{prefix}-{}", i % 9), ExpectedVersion::Any, vec![e])
            .unwrap();
    }
}

/// What a user sees of a store: every event by every kind of lookup, and the stream versions.
#[derive(Debug, PartialEq)]
struct Answers {
    all: Vec<RecordedEvent>,
    typed: Vec<RecordedEvent>,
    tagged: Vec<RecordedEvent>,
    by_metadata: u64,
    stream: Vec<RecordedEvent>,
    by_id: Vec<Option<RecordedEvent>>,
    versions: Vec<Option<(u64, u64)>>,
    head: u64,
}

fn answers(store: &Store) -> Answers {
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, 100_000, &Filter::all())
        .unwrap();
    let by_id = all
        .iter()
        .step_by(7)
        .map(|e| store.event_by_id(e.id).unwrap())
        .collect();
    let tenant = store.count(&Filter::all().with_metadata("tenant", "t3")).unwrap();
    Answers {
        typed: store
            .read_all(
                Direction::Backward,
                LogFrom::End,
                100_000,
                &Filter::all().with_type("Placed"),
            )
            .unwrap(),
        tagged: store
            .read_all(
                Direction::Forward,
                LogFrom::Start,
                100_000,
                &Filter::all().with_tag("region:2"),
            )
            .unwrap(),
        by_metadata: tenant,
        stream: store
            .read_stream("order-4", Direction::Backward, StreamFrom::End, 1000)
            .unwrap(),
        by_id,
        versions: (0..10)
            .map(|s| {
                store
                    .stream_info(&format!("order-{s}"))
                    .map(|i| (i.last_revision, i.last_position))
            })
            .collect(),
        head: store.head_position(),
        all,
    }
}

/// A store closed cleanly with sealed segments and a partly filled active
/// segment, its answers, and the `active.idc` that close wrote.
fn closed_store() -> (SimStorage, Answers, Vec<u8>) {
    let sim = SimStorage::new();
    let store = open(&sim);
    fill(&store, 0, 300);
    assert!(store.segment_count() > 2, "the test needs sealed segments");
    let before = answers(&store);
    store.close().unwrap();
    let active = sim.read_file(Path::new(ACTIVE)).unwrap();
    (sim, before, active)
}

/// Reopens, checks the answers, then appends at the exact versions the
/// answers give and checks that another reopen sees those appends too.
fn reopens_exactly(sim: &SimStorage, expected: &Answers) {
    let store = open(sim);
    assert_eq!(&answers(&store), expected);
    for (s, version) in expected.versions.iter().enumerate() {
        let stream = format!("order-{s}");
        let want = match version {
            Some((revision, _)) => ExpectedVersion::Exact(*revision),
            None => ExpectedVersion::NoStream,
        };
        let wrong = match version {
            Some((revision, _)) => ExpectedVersion::Exact(revision + 1),
            None => ExpectedVersion::StreamExists,
        };
        assert!(
            store
                .append(&stream, wrong, vec![EventData::json("Late", "{}")])
                .is_err()
        );
        let r = store
            .append(&stream, want, vec![EventData::json("Late", "{}")])
            .unwrap();
        assert_eq!(r.position, expected.head + s as u64);
    }
    let after = answers(&store);
    store.close().unwrap();
    let store = open(sim);
    assert_eq!(answers(&store), after);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_clean_close_writes_the_checkpoint_and_open_answers_exactly_as_before() {
    let (sim, before, active) = closed_store();
    assert!(active.starts_with(b"ANNALAIX"));
    reopens_exactly(&sim, &before);
}

#[test]
fn a_damaged_checkpoint_is_never_trusted() {
    let (sim, before, active) = closed_store();
    // Bit flips across the header, the body and the checksum.
    for at in (0..active.len()).step_by(active.len() / 40).chain([active.len() - 1]) {
        let mut bad = active.clone();
        bad[at] ^= 0x08;
        sim.write_file(Path::new(ACTIVE), &bad).unwrap();
        let store = open(&sim);
        assert_eq!(answers(&store), before, "bit flip at byte {at}");
        drop(store);
    }
    // Truncations, down to nothing.
    for len in [0, 7, 47, 52, active.len() / 2, active.len() - 4, active.len() - 1] {
        sim.write_file(Path::new(ACTIVE), &active[..len]).unwrap();
        let store = open(&sim);
        assert_eq!(answers(&store), before, "cut to {len} bytes");
        drop(store);
    }
    sim.write_file(Path::new(ACTIVE), &active).unwrap();
    reopens_exactly(&sim, &before);
}

#[test]
fn a_stale_checkpoint_is_never_trusted() {
    let (sim, _, stale) = closed_store();
    // More appends into the same active segment, closed cleanly: then the
    // checkpoint of the earlier close put back, well formed but stale.
    let store = open(&sim);
    fill(&store, 300, 20);
    let after = answers(&store);
    store.close().unwrap();
    assert_ne!(sim.read_file(Path::new(ACTIVE)).unwrap(), stale);
    sim.write_file(Path::new(ACTIVE), &stale).unwrap();
    reopens_exactly(&sim, &after);
}

#[test]
fn appends_after_the_close_it_describes_are_scanned_after_a_crash() {
    let (sim, _, _) = closed_store();
    // The checkpoint and durable.chk still describe the last clean close;
    // the appends made since are only in the segment.
    let store = open(&sim);
    fill(&store, 300, 20);
    let after = answers(&store);
    drop(store);
    sim.crash(5, false);
    reopens_exactly(&sim, &after);
}

#[test]
fn the_checkpoint_of_other_indexed_metadata_fields_is_not_used() {
    let (sim, before, _) = closed_store();
    let store = Store::open_with(Arc::new(sim.clone()), DIR, options().indexed_metadata(["other"])).unwrap();
    assert_eq!(
        store.count(&Filter::all().with_metadata("tenant", "t3")).unwrap(),
        before.by_metadata
    );
    assert_eq!(
        store
            .read_all(Direction::Forward, LogFrom::Start, 100_000, &Filter::all())
            .unwrap(),
        before.all
    );
    store.close().unwrap();
    reopens_exactly(&sim, &before);
}

#[test]
fn a_crash_at_any_point_of_the_clean_close_leaves_a_store_that_opens_exactly() {
    // How many storage operations a clean close takes here.
    let ops = {
        let sim = SimStorage::new();
        let store = open(&sim);
        fill(&store, 0, 300);
        let before = sim.mutating_ops();
        store.close().unwrap();
        sim.mutating_ops() - before
    };
    assert!(ops >= 6, "a clean close writes the checkpoints ({ops} operations)");
    for n in 1..=ops {
        for torn in [false, true] {
            let sim = SimStorage::new();
            let store = open(&sim);
            fill(&store, 0, 300);
            let before = answers(&store);
            sim.crash_after_ops(n, n);
            let _ = store.close();
            sim.crash(n ^ 0x5a, torn);
            // Every append was acknowledged durable before the close began.
            let store = open(&sim);
            assert_eq!(
                answers(&store),
                before,
                "crash after {n} of {ops} operations, torn {torn}"
            );
            drop(store);
            reopens_exactly(&sim, &before);
        }
    }
}

#[test]
fn a_store_closed_without_the_checkpoint_gets_it_at_the_next_close() {
    // As a store last closed by an annal that did not write the file.
    let (sim, before, _) = closed_store();
    Storage::remove(&sim, Path::new(ACTIVE)).unwrap();
    let store = open(&sim);
    assert_eq!(answers(&store), before);
    store.close().unwrap();
    assert!(sim.read_file(Path::new(ACTIVE)).unwrap().starts_with(b"ANNALAIX"));
    reopens_exactly(&sim, &before);
}

#[test]
fn the_checkpoint_of_other_bytes_is_never_trusted() {
    // A well-formed file of the same segment base, durable end and next
    // position, written for other events: only its content CRC differs.
    let other = SimStorage::new();
    let store = open(&other);
    fill_named(&store, "rodeo", 0, 300);
    store.close().unwrap();
    let (sim, before, active) = closed_store();
    let foreign = other.read_file(Path::new(ACTIVE)).unwrap();
    assert_eq!(
        foreign[16..40],
        active[16..40],
        "the test needs the same segment and durable end"
    );
    sim.write_file(Path::new(ACTIVE), &foreign).unwrap();
    reopens_exactly(&sim, &before);
}

#[test]
fn streams_found_only_in_the_stream_checkpoint_keep_their_versions() {
    let sim = SimStorage::new();
    let store = open(&sim);
    let early = |n: usize| (0..n).map(|_| EventData::json("E", "{}")).collect::<Vec<_>>();
    store.append("early-a", ExpectedVersion::NoStream, early(2)).unwrap();
    store.append("early-b", ExpectedVersion::NoStream, early(3)).unwrap();
    fill(&store, 0, 300);
    let a = store.stream_info("early-a").unwrap();
    assert_eq!(a.last_revision, 1);
    let names = store.streams().len();
    store.close().unwrap();
    // The streams.chk of this close is version 2, searched in place.
    assert_eq!(sim.read_file(Path::new("/store/streams.chk")).unwrap()[8], 2);
    for _ in 0..2 {
        let store = open(&sim);
        assert_eq!(store.stream_info("early-a"), Some(a.clone()));
        assert_eq!(store.stream_info("early-b").unwrap().last_revision, 2);
        assert_eq!(store.stream_info("early-c"), None);
        assert_eq!(store.streams().len(), names);
        assert!(store.append("early-a", ExpectedVersion::Exact(0), early(1)).is_err());
        assert!(store.append("early-b", ExpectedVersion::NoStream, early(1)).is_err());
        store.close().unwrap();
    }
    let store = open(&sim);
    let r = store.append("early-a", ExpectedVersion::Exact(1), early(1)).unwrap();
    assert_eq!(r.first_revision, 2);
    store.append("early-c", ExpectedVersion::NoStream, early(1)).unwrap();
    assert_eq!(store.streams().len(), names + 1);
    store.close().unwrap();
    let store = open(&sim);
    assert_eq!(store.stream_info("early-a").unwrap().last_revision, 2);
    assert_eq!(store.stream_info("early-c").unwrap().last_revision, 0);
    assert_eq!(store.streams().len(), names + 1);
}

#[test]
fn a_version_1_stream_checkpoint_is_still_read() {
    let sim = SimStorage::new();
    let store = open(&sim);
    store
        .append(
            "early-a",
            ExpectedVersion::NoStream,
            vec![EventData::json("E", "{}"); 2],
        )
        .unwrap();
    fill(&store, 0, 300);
    let early = store.stream_info("early-a").unwrap();
    let before = answers(&store);
    store.close().unwrap();
    // The same states in the version-1 layout: entries in no order, no offset table.
    let v2 = sim.read_file(Path::new("/store/streams.chk")).unwrap();
    let count = usize::try_from(u64::from_le_bytes(v2[24..32].try_into().unwrap())).unwrap();
    let mut v1 = v2[..32].to_vec();
    v1[8] = 1;
    let entries = &v2[32 + count * 4..v2.len() - 4];
    v1.extend_from_slice(entries);
    let crc = crc32fast::hash(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    sim.write_file(Path::new("/store/streams.chk"), &v1).unwrap();
    // And no active.idc, so that every state the active segment holds is scanned again.
    Storage::remove(&sim, Path::new(ACTIVE)).unwrap();
    let store = open(&sim);
    assert_eq!(store.stream_info("early-a"), Some(early));
    drop(store);
    // A close with nothing appended brings both files up to date.
    assert_eq!(sim.read_file(Path::new("/store/streams.chk")).unwrap()[8], 2);
    assert!(sim.read_file(Path::new(ACTIVE)).unwrap().starts_with(b"ANNALAIX"));
    reopens_exactly(&sim, &before);
}

/// Review of the open merge: the close wrote `active.idc` first, and a
/// failed write left its temporary file behind. On a nearly full disk a
/// half-written one took the room `streams.chk` and `durable.chk` needed,
/// so the close failed (proved on a tmpfs; the simulated disk refuses a
/// write whole, so here the leftover shows as an empty temporary file).
/// The file is now written last, and a failed write removes its temporary.
#[test]
fn a_close_that_cannot_write_the_active_index_closes_and_leaves_no_temporary_file() {
    let mut without_active_index = 0;
    for n in 1..=4 {
        let sim = SimStorage::new();
        let store = open(&sim);
        fill(&store, 0, 300);
        let before = answers(&store);
        sim.fail_nth_write(n);
        let closed = store.close();
        let leftovers: Vec<String> = sim
            .list(Path::new(DIR))
            .unwrap()
            .into_iter()
            .filter(|f| f.ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "write {n} of the close failed: {leftovers:?} left"
        );
        if closed.is_ok() && !sim.exists(Path::new(ACTIVE)) {
            // The write that failed was the active index's: the close still
            // wrote everything else.
            without_active_index += 1;
            reopens_exactly(&sim, &before);
        }
    }
    assert_eq!(
        without_active_index, 1,
        "one of the close's writes is the active index's"
    );
}

/// Review of the open merge: no test showed that open uses `active.idc`
/// (answers are the same with or without it). An open that used it, with
/// nothing appended, leaves a close nothing to write.
#[test]
fn a_close_after_an_open_that_used_the_active_index_writes_nothing() {
    let (sim, _, _) = closed_store();
    let store = open(&sim);
    let before = sim.mutating_ops();
    store.close().unwrap();
    assert_eq!(sim.mutating_ops(), before);
}
