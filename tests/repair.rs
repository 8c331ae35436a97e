//! `repair` on deliberately damaged stores: afterwards the store opens,
//! verifies clean, keeps every undamaged event byte for byte, reports what was
//! lost, and keeps every byte it moved aside in quarantine.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use annal::{
    Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, RecordedEvent, SimStorage,
    Storage, Store, StreamFrom, repair_with,
};

const DIR: &str = "/r";

fn options() -> Options {
    Options::default()
        .no_compression()
        .durability(Durability::Always)
        .segment_size(8 * 1024)
}

fn open(sim: &SimStorage) -> annal::Result<Store> {
    Store::open_with(Arc::new(sim.clone()), DIR, options())
}

/// Appends the test stores' event number `i`: stream `s-{i % 7}`, type
/// `T{i % 3}`, tag `k:{i % 5}`.
fn append_sample(store: &Store, i: u64) {
    let e = EventData::json(format!("T{}", i % 3), format!(r#"{{"i":{i}}}"#)).with_tag(format!("k:{}", i % 5));
    store
        .append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![e])
        .unwrap();
}

/// A store of 300 events in 7 streams, closed; returns every event by position.
fn filled(sim: &SimStorage) -> BTreeMap<u64, RecordedEvent> {
    let store = open(sim).unwrap();
    (0..300u64).for_each(|i| append_sample(&store, i));
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    all.into_iter().map(|e| (e.position, e)).collect()
}

fn files(sim: &SimStorage, ext: &str) -> Vec<String> {
    sim.list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(ext))
        .collect()
}

/// After repair: opens, verifies clean, and every surviving event equals the original.
fn check_repaired(sim: &SimStorage, original: &BTreeMap<u64, RecordedEvent>, max_lost: u64) -> annal::RepairReport {
    let report = repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    let store = open(sim).unwrap();
    let v = store.verify().unwrap();
    assert!(
        v.is_clean(),
        "after repair: {:?}\nrepair: {:?}",
        v.problems,
        report.actions
    );
    let now = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    for e in &now {
        assert_eq!(original.get(&e.position), Some(e), "event at {} changed", e.position);
    }
    let lost = original.len() as u64 - now.len() as u64;
    assert_eq!(lost, report.lost_positions, "{:?}", report.actions);
    assert!(lost <= max_lost, "lost {lost}: {:?}", report.actions);
    assert_eq!(
        store.head_position(),
        original.len() as u64,
        "positions keep their numbers"
    );
    // Revisions too: a stream whose last events were lost still counts them,
    // so its next append never gets a revision handed out before.
    let mut last = BTreeMap::new();
    for e in original.values() {
        last.insert(e.stream.clone(), e.revision);
    }
    assert_eq!(report.lost_unattributed, 0, "{:?}", report.actions);
    for (stream, revision) in &last {
        let info = store.stream_info(stream);
        assert_eq!(
            info.map(|i| i.last_revision),
            Some(*revision),
            "stream {stream} after repair: {:?}",
            report.actions
        );
    }
    // The store takes appends again, and a second repair finds nothing to do.
    store
        .append("after", ExpectedVersion::Any, vec![EventData::json("A", "{}")])
        .unwrap();
    drop(store);
    let again = repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    assert!(again.is_clean(), "{:?}", again.actions);
    report
}

#[test]
fn a_healthy_store_needs_nothing() {
    let sim = SimStorage::new();
    let original = filled(&sim);
    let report = check_repaired(&sim, &original, 0);
    assert!(report.is_clean(), "{:?}", report.actions);
}

/// Review of the indexed-metadata merge: repair of a healthy store whose
/// indexes file metadata fields (which repair is not told of) left them
/// alone only if it knew the fields; it rebuilt every index without them and
/// then dropped `durable.chk` and `streams.chk`. Version-3 index files name
/// their fields, so repair builds them again exactly.
#[test]
fn a_healthy_store_with_indexed_metadata_needs_nothing() {
    let sim = SimStorage::new();
    let opts = || options().indexed_metadata(["actor"]);
    let store = Store::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
    for i in 0..300u64 {
        let e = EventData::json("T", format!(r#"{{"i":{i}}}"#)).with_metadata(format!(r#"{{"actor":"a{}"}}"#, i % 4));
        store
            .append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![e])
            .unwrap();
    }
    store.close().unwrap();
    let idx = files(&sim, ".idx");
    assert!(idx.len() >= 3, "{idx:?}");
    let before: Vec<Vec<u8>> = idx
        .iter()
        .map(|n| sim.read_file(&Path::new(DIR).join(n)).unwrap())
        .collect();
    let report = repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    assert!(report.is_clean(), "{:?}", report.actions);
    let after: Vec<Vec<u8>> = idx
        .iter()
        .map(|n| sim.read_file(&Path::new(DIR).join(n)).unwrap())
        .collect();
    assert!(before == after, "the index files were rewritten");
    assert!(sim.exists(&Path::new(DIR).join("durable.chk")));
    let store = Store::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
    let f = Filter::all().with_metadata("actor", "a1");
    assert_eq!(store.count(&f).unwrap(), 75);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_loses_only_that_append() {
    let sim = SimStorage::new();
    let original = filled(&sim);
    let seg = Path::new(DIR).join(&files(&sim, ".seg")[1]);
    let before = sim.read_file(&seg).unwrap();
    let at = before.windows(4).position(|w| w == b"{\"i\"").unwrap() as u64 + 2;
    sim.flip_bit(&seg, at, 2).unwrap();
    let report = check_repaired(&sim, &original, 1);
    assert_eq!(report.lost_positions, 1);
    // The original file is kept whole in quarantine.
    let q = report.quarantine.unwrap();
    let kept = sim.read_file(&q.join(seg.file_name().unwrap())).unwrap();
    assert_eq!(kept.len(), before.len());
}

#[test]
fn damage_in_synced_data_of_the_active_segment_is_repaired_not_cut() {
    let sim = SimStorage::new();
    let original = filled(&sim);
    let seg = Path::new(DIR).join(files(&sim, ".seg").last().unwrap());
    let bytes = sim.read_file(&seg).unwrap();
    let at = bytes.windows(4).position(|w| w == b"{\"i\"").unwrap() as u64 + 3;
    sim.flip_bit(&seg, at, 5).unwrap();
    // Open refuses: later groups prove those bytes were synced.
    assert!(matches!(open(&sim), Err(Error::Corruption { .. })));
    check_repaired(&sim, &original, 1);
}

#[test]
fn a_missing_segment_becomes_a_lost_range() {
    let sim = SimStorage::new();
    let original = filled(&sim);
    let segs = files(&sim, ".seg");
    let victim = Path::new(DIR).join(&segs[2]);
    let victim_idx = victim.with_extension("idx");
    let gone = annal::Storage::map(&sim, &victim_idx).unwrap();
    let count = u64::from_le_bytes((*gone).as_ref()[24..32].try_into().unwrap());
    sim.remove(&victim).unwrap();
    sim.remove(&victim_idx).unwrap();
    assert!(matches!(open(&sim), Err(Error::Corruption { .. })));
    let report = check_repaired(&sim, &original, count);
    assert_eq!(report.lost_positions, count);
}

#[test]
fn indexes_checkpoints_and_torn_tails_are_rebuilt_or_cut() {
    let sim = SimStorage::new();
    let original = filled(&sim);
    // A truncated index, a deleted checkpoint, and a torn tail.
    let idx = Path::new(DIR).join(&files(&sim, ".idx")[0]);
    let bytes = sim.read_file(&idx).unwrap();
    sim.write_file(&idx, &bytes[..bytes.len() / 2]).unwrap();
    sim.remove(&Path::new(DIR).join("streams.chk")).unwrap();
    let seg = Path::new(DIR).join(files(&sim, ".seg").last().unwrap());
    let mut bytes = sim.read_file(&seg).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    bytes.truncate(end);
    bytes.extend_from_slice(&[0x42; 20]);
    sim.write_file(&seg, &bytes).unwrap();
    let report = check_repaired(&sim, &original, 0);
    assert!(
        report.actions.iter().any(|a| a.contains(".idx")),
        "{:?}",
        report.actions
    );
}

#[test]
fn repair_refuses_an_open_store_and_a_foreign_directory() {
    let sim = SimStorage::new();
    filled(&sim);
    let store = open(&sim).unwrap();
    assert!(matches!(
        repair_with(Arc::new(sim.clone()), Path::new(DIR)),
        Err(Error::Locked { .. })
    ));
    drop(store);
    let empty = SimStorage::new();
    empty.create_dir_all(Path::new("/x")).unwrap();
    assert!(matches!(
        repair_with(Arc::new(empty), Path::new("/x")),
        Err(Error::NotAStore { .. })
    ));
}

#[test]
fn one_damaged_event_of_a_large_append_costs_only_that_event() {
    let sim = SimStorage::new();
    let store = open(&sim).unwrap();
    for a in 0..6u64 {
        let batch = (0..5u64)
            .map(|i| EventData::json("E", format!(r#"{{"a":{a},"i":{i}}}"#)))
            .collect();
        store.append("batches", ExpectedVersion::Any, batch).unwrap();
    }
    let original: BTreeMap<u64, RecordedEvent> = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap()
        .into_iter()
        .map(|e| (e.position, e))
        .collect();
    drop(store);
    let seg = Path::new(DIR).join(&files(&sim, ".seg")[0]);
    let bytes = sim.read_file(&seg).unwrap();
    let needle = br#"{"a":2,"i":2}"#;
    let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap() as u64;
    sim.flip_bit(&seg, at + 3, 1).unwrap();
    let report = check_repaired(&sim, &original, 1);
    assert_eq!(report.lost_positions, 1, "{:?}", report.actions);
}

#[test]
fn a_flipped_byte_in_the_stream_checkpoint_is_cleared_by_repair() {
    let sim = SimStorage::new();
    let original = filled(&sim);
    let chk = Path::new(DIR).join("streams.chk");
    sim.flip_bit(&chk, 20, 3).unwrap();
    {
        let store = open(&sim).unwrap();
        assert!(!store.verify().unwrap().is_clean(), "the damage is visible to verify");
    }
    let report = check_repaired(&sim, &original, 0);
    assert!(
        report.actions.iter().any(|a| a.contains("streams.chk")),
        "{:?}",
        report.actions
    );
    // The damaged file is kept in quarantine.
    assert!(sim.read_file(&report.quarantine.unwrap().join("streams.chk")).is_ok());
}

#[test]
fn a_checkpoint_that_disagrees_with_the_log_is_cleared_by_repair() {
    let sim = SimStorage::new();
    let original = filled(&sim);
    let path = Path::new(DIR).join("streams.chk");
    let mut c = annal::format::checkpoint::StreamsCheckpoint::decode(&sim.read_file(&path).unwrap(), &path).unwrap();
    c.streams.get_mut("s-1").unwrap().last_revision += 5;
    sim.write_file(&path, &c.encode().unwrap()).unwrap();
    check_repaired(&sim, &original, 0);
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_header_is_cleared_by_repair() {
    for at in [17u64, 26, 40, 61] {
        let sim = SimStorage::new();
        let original = filled(&sim);
        let seg = Path::new(DIR).join(&files(&sim, ".seg")[1]);
        sim.flip_bit(&seg, at, 1).unwrap();
        let report = check_repaired(&sim, &original, 0);
        assert!(
            report.actions.iter().any(|a| a.contains("header rebuilt")),
            "{:?}",
            report.actions
        );
    }
}

/// Every file of a data directory: name and bytes.
type Files = Vec<(String, Vec<u8>)>;

/// A small closed store with several sealed segments, multi-event appends and a
/// few streams (its sealed segments compressed with a trained dictionary if
/// `compressed`); returns its files and every event by position.
fn small_store(compressed: bool) -> (Files, BTreeMap<u64, RecordedEvent>) {
    let sim = SimStorage::new();
    let mut o = Options::default()
        .no_compression()
        .durability(Durability::Always)
        .segment_size(4096);
    if compressed {
        o = o.compression(annal::CompressionOptions {
            dictionary: true,
            block_size: 1024,
            dictionary_size: 1024,
            ..Default::default()
        });
    }
    let store = Store::open_with(Arc::new(sim.clone()), DIR, o).unwrap();
    for i in 0..90u64 {
        let n = 1 + (i % 3) as usize;
        let batch = (0..n)
            .map(|j| EventData::json(format!("T{}", i % 2), format!(r#"{{"i":{i},"j":{j}}}"#)).with_tag("k:1"))
            .collect();
        store
            .append(&format!("s-{}", i % 4), ExpectedVersion::Any, batch)
            .unwrap();
    }
    if compressed {
        assert!(store.compress().unwrap().segments >= 3);
    }
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    drop(store);
    let mut out = Vec::new();
    for name in sim.list(Path::new(DIR)).unwrap() {
        let p = Path::new(DIR).join(&name);
        if let Ok(b) = sim.read_file(&p) {
            out.push((name, b));
        }
    }
    (out, all.into_iter().map(|e| (e.position, e)).collect())
}

/// Offsets to damage in a file of `len` bytes: every byte of a small file or of
/// the first and last `edge` bytes, and `spread` offsets between.
/// With `ANNAL_FLIP_EVERY_BYTE` set, every byte (slow; for a thorough run by hand).
fn offsets(len: usize, edge: usize, spread: usize) -> Vec<usize> {
    if len <= 2 * edge + spread || std::env::var_os("ANNAL_FLIP_EVERY_BYTE").is_some() {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..edge).chain(len - edge..len).collect();
    v.extend((edge..len - edge).step_by(((len - 2 * edge) / spread).max(1)));
    v
}

/// Flips one byte at a time of every file of the store, repairs, and returns
/// every case where the store does not then open and verify clean with every
/// surviving event unchanged (unless repair said what it could not fix).
fn flip_every_file(files: &Files, original: &BTreeMap<u64, RecordedEvent>, edge: usize, spread: usize) -> Vec<String> {
    let mut failures = Vec::new();
    for (victim, bytes) in files {
        for at in offsets(bytes.len(), edge, spread) {
            let sim = SimStorage::new();
            for (name, b) in files {
                let mut b = b.clone();
                if name == victim {
                    b[at] ^= 0x5a;
                }
                sim.write_file(&Path::new(DIR).join(name), &b).unwrap();
            }
            let what = format!("{victim} byte {at}");
            let report = match repair_with(Arc::new(sim.clone()), Path::new(DIR)) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{what}: repair failed: {e}"));
                    continue;
                }
            };
            let unfixed = |why: String| {
                if report.unfixed.is_empty() {
                    Some(format!("{what}: {why}; repair: {:?}", report.actions))
                } else {
                    None
                }
            };
            let store = match open(&sim) {
                Ok(s) => s,
                Err(e) => {
                    failures.extend(unfixed(format!("open failed: {e}")));
                    continue;
                }
            };
            let v = store.verify().unwrap();
            if !v.is_clean() {
                failures.extend(unfixed(format!("verify: {:?}", v.problems)));
                continue;
            }
            let now = store
                .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
                .unwrap();
            // Damage in the last append of the log is a torn tail, which repair
            // (like recovery) cuts and reports; positions before it are kept.
            let head = store.head_position();
            let cut = report.actions.iter().any(|a| a.contains("unfinished append"));
            if head != original.len() as u64 && !cut {
                failures.push(format!("{what}: head {head} after repair: {:?}", report.actions));
            }
            for e in &now {
                if original.get(&e.position) != Some(e) {
                    failures.push(format!("{what}: event at {} changed", e.position));
                    break;
                }
            }
            if head - now.len() as u64 != report.lost_positions {
                failures.push(format!(
                    "{what}: {} events missing, {} reported lost",
                    head - now.len() as u64,
                    report.lost_positions
                ));
            }
        }
    }
    failures
}

#[test]
fn after_repair_of_any_flipped_byte_the_store_verifies_clean() {
    let (files, original) = small_store(false);
    let kinds: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(kinds.iter().filter(|n| n.ends_with(".seg")).count() >= 3, "{kinds:?}");
    assert!(kinds.iter().any(|n| n.ends_with(".idx")), "{kinds:?}");
    assert!(
        kinds.contains(&"streams.chk") && kinds.contains(&"annal.meta"),
        "{kinds:?}"
    );
    let failures = flip_every_file(&files, &original, 80, 40);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn after_repair_of_any_flipped_byte_a_compressed_store_verifies_clean() {
    let (files, original) = small_store(true);
    let kinds: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(kinds.contains(&"dictionary.zdict"), "{kinds:?}");
    let failures = flip_every_file(&files, &original, 40, 20);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_damaged_dictionary_is_reported_and_its_segments_are_left_as_they_are() {
    let (files, original) = small_store(true);
    let sim = SimStorage::new();
    for (name, b) in &files {
        sim.write_file(&Path::new(DIR).join(name), b).unwrap();
    }
    let dict = Path::new(DIR).join("dictionary.zdict");
    let good = sim.read_file(&dict).unwrap();
    sim.flip_bit(&dict, 40, 2).unwrap();
    assert!(matches!(open(&sim), Err(Error::Corruption { .. })));
    let report = repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    assert!(!report.is_clean());
    assert!(
        report.unfixed.iter().any(|u| u.contains("dictionary.zdict")),
        "{:?}",
        report.unfixed
    );
    assert_eq!(report.lost_positions, 0, "{:?}", report.actions);
    // Until it is restored, the store opens degraded (and read only): the
    // segments compressed with it are stepped over as damage, the rest reads.
    for store in [
        Store::open_or_degraded_with(Arc::new(sim.clone()), DIR, options()).unwrap(),
        Store::open_read_only_with(Arc::new(sim.clone()), DIR, options()).unwrap(),
    ] {
        assert!(!store.damage().is_empty());
        let (mut read, mut failed) = (0, 0);
        for (p, e) in &original {
            match store.read_all(Direction::Forward, LogFrom::Position(*p), 1, &Filter::all()) {
                Ok(got) => {
                    assert_eq!(&got[0], e);
                    read += 1;
                }
                Err(Error::Corruption { .. }) => failed += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(read > 0 && failed > 0, "{read} read, {failed} failed");
        assert!(!store.verify().unwrap().is_clean());
    }
    // Every compressed segment is as it was: restoring the dictionary restores the store.
    for (name, b) in files.iter().filter(|(n, _)| n.ends_with(".seg")) {
        let now = sim.read_file(&Path::new(DIR).join(name)).unwrap();
        if u32::from_le_bytes(b[12..16].try_into().unwrap()) != 0 {
            assert!(&now == b, "{name} changed");
        }
    }
    sim.write_file(&dict, &good).unwrap();
    let store = open(&sim).unwrap();
    assert!(store.verify().unwrap().is_clean());
    let now = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    assert_eq!(now.len(), original.len());
}

/// Flips one bit in the data of the event whose JSON data is `marker`.
fn flip_event(sim: &SimStorage, seg: &Path, marker: &str) {
    let bytes = sim.read_file(seg).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap() as u64
        + 2;
    sim.flip_bit(seg, at, 3).unwrap();
}

#[test]
fn revisions_of_lost_events_are_never_handed_out_again() {
    // The issue's case: the last appends of a cleanly closed store are damaged,
    // repair records them as lost, and the streams they belonged to must still
    // count them: "c" had one event (revision 0), "b" reached revision 3.
    let sim = SimStorage::new();
    let store = open(&sim).unwrap();
    let ev = |d: &str| EventData::json("T", format!(r#"{{"d":"{d}"}}"#));
    store
        .append("a", ExpectedVersion::NoStream, vec![ev("a0"), ev("a1"), ev("a2")])
        .unwrap();
    store
        .append("b", ExpectedVersion::NoStream, vec![ev("b0"), ev("b1")])
        .unwrap();
    store.append("c", ExpectedVersion::NoStream, vec![ev("c0")]).unwrap();
    store
        .append("b", ExpectedVersion::Exact(1), vec![ev("b2"), ev("b3")])
        .unwrap();
    store.close().unwrap();
    let seg = Path::new(DIR).join(files(&sim, ".seg").last().unwrap());
    flip_event(&sim, &seg, r#"{"d":"c0"}"#);
    flip_event(&sim, &seg, r#"{"d":"b3"}"#);
    assert!(matches!(open(&sim), Err(Error::Corruption { .. })));

    let report = repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    assert_eq!(
        (report.lost_positions, report.lost_unattributed),
        (2, 0),
        "{:?}",
        report.actions
    );
    let store = open(&sim).unwrap();
    assert!(store.verify().unwrap().is_clean());
    assert_eq!(store.stream_info("c").map(|i| i.last_revision), Some(0));
    assert_eq!(store.stream_info("b").map(|i| i.last_revision), Some(3));
    assert!(matches!(
        store.append("c", ExpectedVersion::NoStream, vec![ev("again")]),
        Err(Error::WrongExpectedVersion { .. })
    ));
    let next = store.append("b", ExpectedVersion::Any, vec![ev("b4")]).unwrap();
    assert_eq!(next.first_revision, 4);
    let next = store.append("c", ExpectedVersion::Exact(0), vec![ev("c1")]).unwrap();
    assert_eq!(next.first_revision, 1);
    // The surviving events read as before; the lost ones are gaps.
    let b: Vec<u64> = store
        .read_stream("b", Direction::Forward, StreamFrom::Start, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(b, [0, 1, 2, 4]);
    store.close().unwrap();

    // The heads live in the log itself: without the stream checkpoint, the
    // states rebuilt from the segments are the same.
    sim.remove(&Path::new(DIR).join("streams.chk")).unwrap();
    let store = open(&sim).unwrap();
    assert_eq!(store.stream_info("b").map(|i| i.last_revision), Some(4));
    assert_eq!(store.stream_info("c").map(|i| i.last_revision), Some(1));
}

#[test]
fn lost_events_that_nothing_describes_are_counted_and_named() {
    // After a crash, bytes written since the last seal are described by no
    // checkpoint: repair cannot tell their streams, and says so.
    let sim = SimStorage::new();
    let store = open(&sim).unwrap();
    let ev = |d: &str| EventData::json("T", format!(r#"{{"d":"{d}"}}"#));
    store.append("a", ExpectedVersion::NoStream, vec![ev("a0")]).unwrap();
    store.append("b", ExpectedVersion::NoStream, vec![ev("b0")]).unwrap();
    store.append("a", ExpectedVersion::Exact(0), vec![ev("a1")]).unwrap();
    sim.crash(7, false);
    drop(store);
    let seg = Path::new(DIR).join(files(&sim, ".seg").last().unwrap());
    flip_event(&sim, &seg, r#"{"d":"b0"}"#);
    let report = repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    assert_eq!(
        (report.lost_positions, report.lost_unattributed),
        (1, 1),
        "{:?}",
        report.actions
    );
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.contains("described by no stream checkpoint")),
        "{:?}",
        report.actions
    );
    let store = open(&sim).unwrap();
    assert!(store.verify().unwrap().is_clean());
    assert_eq!(store.stream_info("a").map(|i| i.last_revision), Some(1));
}

/// The newest segment files are lost after a crash (their events acknowledged
/// and durable). The index file of a sealed one, or the stream checkpoint
/// written at its seal, still describes them: open refuses (a new append
/// would take their positions and revisions again), a read-only open and
/// verify report it, and repair records them as lost, so that their positions
/// are never handed out again.
#[test]
fn the_newest_segment_files_missing_refuse_to_open_and_repair_keeps_their_positions() {
    for keep_index in [true, false] {
        let sim = SimStorage::new();
        let store = open(&sim).unwrap();
        let ev = |i: u64| EventData::json("T", format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(200)));
        for i in 0..100 {
            store.append("s-1", ExpectedVersion::Any, vec![ev(i)]).unwrap();
        }
        store.close().unwrap();
        let store = open(&sim).unwrap();
        for i in 100..300 {
            store.append("s-1", ExpectedVersion::Any, vec![ev(i)]).unwrap();
        }
        let head = store.head_position();
        sim.kill_process();
        drop(store);
        let mut segs = files(&sim, ".seg");
        segs.sort();
        assert!(segs.len() >= 4, "{segs:?}");
        // Where the newest (active) segment began: the sealed one before it,
        // its index and the stream checkpoint of its seal describe up to there.
        let described: u64 = segs.last().unwrap().trim_end_matches(".seg").parse().unwrap();
        assert!(described < head);
        for name in &segs[segs.len() - 2..] {
            let seg = Path::new(DIR).join(name);
            sim.remove(&seg).unwrap();
            let idx = seg.with_extension("idx");
            if !keep_index && sim.exists(&idx) {
                sim.remove(&idx).unwrap();
            }
        }

        let refused = open(&sim).err();
        assert!(
            matches!(&refused, Some(Error::Corruption { reason, .. }) if reason.contains("newest segment files are missing")),
            "keep_index {keep_index}: {refused:?}"
        );
        let read_only = Store::open_read_only_with(Arc::new(sim.clone()), DIR, options()).unwrap();
        assert!(!read_only.damage().is_empty(), "keep_index {keep_index}");
        assert!(!read_only.verify().unwrap().is_clean(), "keep_index {keep_index}");
        drop(read_only);

        let report = repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
        assert!(
            report.lost_positions > 0,
            "keep_index {keep_index}: {:?}",
            report.actions
        );
        let store = open(&sim).unwrap();
        assert!(store.verify().unwrap().is_clean(), "keep_index {keep_index}");
        assert!(
            store.head_position() >= described,
            "keep_index {keep_index}: positions up to {described} were described, the log now ends at {}",
            store.head_position()
        );
        // Revisions of the lost events are not handed out again either.
        assert!(store.stream_info("s-1").unwrap().last_revision + 1 >= described);
        let next = store.append("s-1", ExpectedVersion::Any, vec![ev(999)]).unwrap();
        assert!(next.position >= described, "keep_index {keep_index}");
        let every = store
            .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
            .unwrap();
        let positions: std::collections::BTreeSet<u64> = every.iter().map(|e| e.position).collect();
        assert_eq!(positions.len(), every.len(), "a position handed out twice");
    }
}

/// Where the ids section of the version-4 index file `bytes` starts (after
/// the header and the locations, streams, types and tags sections).
fn ids_section(bytes: &[u8]) -> usize {
    let len = |i: usize| u32::from_le_bytes(bytes[96 + 4 * i..100 + 4 * i].try_into().unwrap()) as usize;
    128 + (0..4).map(len).sum::<usize>()
}

/// Where the summary section of the index file `bytes` starts (after the
/// ids section and the bloom filter).
fn summary_section(bytes: &[u8]) -> usize {
    let ids = u32::from_le_bytes(bytes[112..116].try_into().unwrap()) as usize;
    let bloom = u64::from_le_bytes(bytes[72..80].try_into().unwrap()) as usize;
    ids_section(bytes) + ids + bloom
}

/// A bit flipped on disk in a section of a sealed segment's index that open
/// does not read, after a clean close: open succeeds without reading it; the
/// first read that uses the section fails with the damage (never a silent
/// wrong answer), reads that do not use it still answer, verify reports the
/// file, and repair rebuilds it.
#[test]
fn a_damaged_index_section_is_reported_by_the_first_read_that_uses_it() {
    let sim = SimStorage::new();
    let original = filled(&sim);
    let mut names = files(&sim, ".idx");
    names.sort();
    let idx = Path::new(DIR).join(&names[0]);
    let mut bytes = sim.read_file(&idx).unwrap();
    let at = ids_section(&bytes) + 10;
    bytes[at] ^= 0x08;
    sim.write_file(&idx, &bytes).unwrap();

    let store = open(&sim).unwrap();
    // A stream read uses the locations, summary and streams sections: it answers.
    let s0 = store
        .read_stream("s-0", Direction::Forward, StreamFrom::Start, usize::MAX)
        .unwrap();
    assert_eq!(s0.len(), 43);
    // The first event (in the first segment) by id needs the damaged ids section.
    let first = &original[&0];
    match store.event_by_id(first.id) {
        Err(Error::Corruption { file, .. }) => assert_eq!(file, idx),
        other => panic!("expected the index damage, got {other:?}"),
    }
    // Verify reports the index's first differing byte against its segment,
    // naming the index file.
    let report = store.verify().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.file == idx && p.what.contains(".idx") && p.offset == at as u64),
        "{:?}",
        report.problems
    );
    drop(store);
    check_repaired(&sim, &original, 0);
    let store = open(&sim).unwrap();
    assert_eq!(store.event_by_id(first.id).unwrap().as_ref(), Some(first));
}

/// After a crash that left the stream checkpoint behind the newest sealed
/// segments, open rebuilds stream states from those segments' index
/// summaries, so it checks those index files whole, and rebuilds one that
/// is damaged from its segment (as it did when every index was checked
/// whole at open): the store opens with every event and stream state.
#[test]
fn after_a_crash_the_indexes_recovery_needs_are_checked_whole_and_rebuilt() {
    let sim = SimStorage::new();
    let store = open(&sim).unwrap();
    let append = |i: u64| append_sample(&store, i);
    (0..100).for_each(append);
    let checkpoint = Path::new(DIR).join("streams.chk");
    let old = sim.read_file(&checkpoint).unwrap();
    let sealed_before = files(&sim, ".idx").len();
    (100..300).for_each(append);
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    sim.crash(7, false);
    drop(store);
    // As if the crash came before the newer checkpoints were written.
    sim.write_file(&checkpoint, &old).unwrap();
    let mut names = files(&sim, ".idx");
    names.sort();
    assert!(
        names.len() > sealed_before + 1,
        "the test needs segments sealed after the checkpoint"
    );
    let idx = Path::new(DIR).join(names.last().unwrap());
    let mut bytes = sim.read_file(&idx).unwrap();
    let at = ids_section(&bytes) + 3;
    bytes[at] ^= 0x08;
    sim.write_file(&idx, &bytes).unwrap();

    let store = open(&sim).unwrap();
    let now = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    assert_eq!(now, all);
    for e in &all {
        assert_eq!(store.event_by_id(e.id).unwrap().as_ref(), Some(e));
    }
    for s in 0..7u64 {
        let stream = format!("s-{s}");
        let last = all.iter().filter(|e| e.stream == stream).map(|e| e.revision).max();
        assert_eq!(store.stream_info(&stream).map(|i| i.last_revision), last, "{stream}");
    }
    assert!(store.verify().unwrap().is_clean());
}

/// A clean close leaves a stream checkpoint inside the active segment; that
/// segment is sealed later and a crash comes before the next checkpoint, so
/// recovery throws the old checkpoint away and reads every segment's
/// summary. A damaged summary in an index before the old checkpoint is then
/// rebuilt from its segment, never a failed open (derived data).
#[test]
fn a_checkpoint_thrown_away_after_a_crash_makes_every_summary_checked_and_rebuilt() {
    let sim = SimStorage::new();
    let store = open(&sim).unwrap();
    (0..150).for_each(|i| append_sample(&store, i));
    store.close().unwrap();
    let checkpoint = Path::new(DIR).join("streams.chk");
    let old = sim.read_file(&checkpoint).unwrap();
    let store = open(&sim).unwrap();
    (150..300).for_each(|i| append_sample(&store, i));
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    sim.crash(7, false);
    drop(store);
    // As if the crash came before the rotation's checkpoint.
    sim.write_file(&checkpoint, &old).unwrap();
    let mut names = files(&sim, ".idx");
    names.sort();
    let idx = Path::new(DIR).join(&names[0]);
    let mut bytes = sim.read_file(&idx).unwrap();
    let at = summary_section(&bytes) + 1;
    bytes[at] ^= 0x08;
    sim.write_file(&idx, &bytes).unwrap();

    let store = open(&sim).unwrap();
    let now = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    assert_eq!(now, all);
    for s in 0..7u64 {
        let stream = format!("s-{s}");
        let last = all.iter().filter(|e| e.stream == stream).map(|e| e.revision).max();
        assert_eq!(store.stream_info(&stream).map(|i| i.last_revision), last, "{stream}");
    }
    assert!(store.verify().unwrap().is_clean());
}

/// The frames laid end to end in a segment file (offset, total length), by their length fields.
fn frame_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 64;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        spans.push((at, 8 + len));
        at += 8 + len;
    }
    spans
}

/// A client's binary event whose data is a well-formed frame of another
/// stream, at the position that follows it; the outer frame's checksum is
/// then damaged. Repair must never keep the embedded frame as an event.
fn an_embedded_frame_is_never_salvaged(sealed: bool, length_damaged: bool) {
    // The frame to embed: what a store with the same first 10 events writes
    // for an event of stream `intruder` at position 10.
    let scratch = SimStorage::new();
    let frame = {
        let store = open(&scratch).unwrap();
        (0..10u64).for_each(|i| append_sample(&store, i));
        store
            .append(
                "intruder",
                ExpectedVersion::Any,
                vec![EventData::binary("Forged", vec![7u8; 40])],
            )
            .unwrap();
        drop(store);
        let seg = Path::new(DIR).join(&files(&scratch, ".seg")[0]);
        let bytes = scratch.read_file(&seg).unwrap();
        let at = bytes.windows(8).position(|w| w == b"intruder").unwrap();
        let (s, l) = frame_spans(&bytes)
            .into_iter()
            .find(|(s, l)| (*s..s + l).contains(&at))
            .unwrap();
        bytes[s..s + l].to_vec()
    };
    let sim = SimStorage::new();
    let store = open(&sim).unwrap();
    (0..10u64).for_each(|i| append_sample(&store, i));
    store
        .append(
            "victim",
            ExpectedVersion::Any,
            vec![EventData::binary("Blob", frame.clone())],
        )
        .unwrap();
    (11..if sealed { 300 } else { 20 }).for_each(|i| append_sample(&store, i));
    let original: BTreeMap<u64, RecordedEvent> = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap()
        .into_iter()
        .map(|e| (e.position, e))
        .collect();
    drop(store);
    let seg = Path::new(DIR).join(&files(&sim, ".seg")[0]);
    let bytes = sim.read_file(&seg).unwrap();
    let inner = bytes.windows(frame.len()).position(|w| w == &frame[..]).unwrap();
    let (outer, _) = frame_spans(&bytes)
        .into_iter()
        .find(|(s, l)| (*s..s + l).contains(&inner))
        .unwrap();
    if length_damaged {
        // Two bytes of the outer length field: past the file, and no single
        // flipped bit, so its end cannot be trusted.
        let mut bytes = bytes;
        bytes[outer + 2] ^= 0x5A;
        bytes[outer + 3] ^= 0x01;
        sim.write_file(&seg, &bytes).unwrap();
    } else {
        // A flipped bit in the outer frame's checksum.
        sim.flip_bit(&seg, outer as u64 + 5, 3).unwrap();
    }
    let report = check_repaired(&sim, &original, 1);
    assert_eq!(report.lost_positions, 1, "{:#?}", report.actions);
    let store = open(&sim).unwrap();
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    assert!(
        all.iter().all(|e| e.stream != "intruder"),
        "an event of another stream embedded in a client's data was kept as a real event: {:#?}",
        report.actions
    );
}

#[test]
fn an_event_embedded_in_damaged_data_of_the_active_segment_is_not_salvaged() {
    an_embedded_frame_is_never_salvaged(false, false);
}

#[test]
fn an_event_embedded_in_damaged_data_of_a_sealed_segment_is_not_salvaged() {
    an_embedded_frame_is_never_salvaged(true, false);
}

#[test]
fn an_event_embedded_in_a_sealed_frame_whose_length_is_damaged_is_not_salvaged() {
    // The length cannot be trusted: repair resumes where the segment's index
    // names the next event, not at a frame inside the client's data.
    an_embedded_frame_is_never_salvaged(true, true);
}

#[test]
fn a_seal_inside_damaged_data_neither_hangs_repair_nor_ends_the_segment() {
    // A client's binary event whose data is a well-formed seal frame naming a
    // huge next position; the outer frame's length field is then damaged past
    // trust, so repair searches byte by byte and meets the seal.
    let mut seal = vec![0u8; 8];
    seal.extend_from_slice(&[2, 0]);
    seal.extend_from_slice(&(1u64 << 40).to_le_bytes());
    seal.extend_from_slice(&(1u64 << 40).to_le_bytes());
    seal.extend_from_slice(&0u32.to_le_bytes());
    seal[..4].copy_from_slice(&22u32.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&seal[..4]);
    h.update(&seal[8..]);
    let crc = h.finalize();
    seal[4..8].copy_from_slice(&crc.to_le_bytes());
    let sim = SimStorage::new();
    let store = open(&sim).unwrap();
    (0..10u64).for_each(|i| append_sample(&store, i));
    store
        .append(
            "victim",
            ExpectedVersion::Any,
            vec![EventData::binary("Blob", seal.clone())],
        )
        .unwrap();
    (11..20u64).for_each(|i| append_sample(&store, i));
    let original: BTreeMap<u64, RecordedEvent> = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap()
        .into_iter()
        .map(|e| (e.position, e))
        .collect();
    drop(store);
    let seg = Path::new(DIR).join(&files(&sim, ".seg")[0]);
    let mut bytes = sim.read_file(&seg).unwrap();
    let inner = bytes.windows(seal.len()).position(|w| w == &seal[..]).unwrap();
    let (outer, _) = frame_spans(&bytes)
        .into_iter()
        .find(|(s, l)| (*s..s + l).contains(&inner))
        .unwrap();
    // Two bytes of the length field: past the file, and no single flipped bit.
    bytes[outer + 2] ^= 0x5A;
    bytes[outer + 3] ^= 0x01;
    sim.write_file(&seg, &bytes).unwrap();
    let report = check_repaired(&sim, &original, 1);
    assert_eq!(report.lost_positions, 1, "{:#?}", report.actions);
}

#[test]
fn an_event_at_the_next_segments_base_does_not_push_that_segment_out() {
    // A sealed segment whose seal is gone and whose last frame is an event at
    // the next segment's base (that segment's first event, copied): repair
    // must drop it, not keep it and then quarantine the whole next segment
    // as overlapping.
    let sim = SimStorage::new();
    let original = filled(&sim);
    let names = files(&sim, ".seg");
    let (a, b) = (Path::new(DIR).join(&names[0]), Path::new(DIR).join(&names[1]));
    let (bytes_a, bytes_b) = (sim.read_file(&a).unwrap(), sim.read_file(&b).unwrap());
    let (seal, _) = *frame_spans(&bytes_a).last().unwrap();
    assert_eq!(bytes_a[seal + 8], 2, "the last frame is the seal");
    let (first, len) = frame_spans(&bytes_b)
        .into_iter()
        .find(|(s, _)| bytes_b[s + 8] == 1)
        .unwrap();
    let mut damaged = bytes_a[..seal].to_vec();
    damaged.extend_from_slice(&bytes_b[first..first + len]);
    sim.write_file(&a, &damaged).unwrap();
    let report = check_repaired(&sim, &original, 0);
    assert_eq!(report.lost_positions, 0, "{:#?}", report.actions);
}

#[test]
fn a_repair_cut_short_by_a_crash_at_any_point_is_finished_by_the_next_one() {
    // Damage in synced data of the active segment: repair rewrites that
    // segment, which the last clean close's durable.chk describes.
    let setup = || {
        let sim = SimStorage::new();
        let original = filled(&sim);
        let seg = Path::new(DIR).join(files(&sim, ".seg").last().unwrap());
        let bytes = sim.read_file(&seg).unwrap();
        let at = bytes.windows(4).position(|w| w == b"{\"i\"").unwrap() as u64 + 3;
        sim.flip_bit(&seg, at, 5).unwrap();
        (sim, original)
    };
    let (sim, _) = setup();
    let ops = sim.mutating_ops();
    repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    let total = sim.mutating_ops() - ops;
    assert!(total > 3, "{total} operations");
    for k in 1..=total {
        let (sim, original) = setup();
        sim.crash_after_ops(k, k);
        let _ = repair_with(Arc::new(sim.clone()), Path::new(DIR));
        sim.crash(k, false);
        let report = repair_with(Arc::new(sim.clone()), Path::new(DIR))
            .unwrap_or_else(|e| panic!("crash point {k}: repair failed again: {e}"));
        let store = open(&sim).unwrap_or_else(|e| panic!("crash point {k}: open failed after repair {report:#?}: {e}"));
        let v = store.verify().unwrap();
        assert!(v.is_clean(), "crash point {k}: {:?}", v.problems);
        let now = store
            .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
            .unwrap();
        for e in &now {
            assert_eq!(
                original.get(&e.position),
                Some(e),
                "crash point {k}: event at {} changed",
                e.position
            );
        }
        assert!(
            now.len() + 1 >= original.len(),
            "crash point {k}: {} of {} events",
            now.len(),
            original.len()
        );
        assert_eq!(store.head_position(), original.len() as u64, "crash point {k}");
    }
}
