//! `Store::verify` on healthy and deliberately damaged stores; backups and restores of a live store.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;
use std::sync::Arc;

use annal::format::checkpoint::StreamsCheckpoint;
use annal::{Durability, EventData, ExpectedVersion, Options, SimStorage, Storage, Store};

fn options() -> Options {
    Options::default()
        .no_compression()
        .durability(Durability::Never)
        .segment_size(8 * 1024)
}

fn filled(sim: &SimStorage) -> Store {
    let store = Store::open_with(Arc::new(sim.clone()), "/v", options()).unwrap();
    for i in 0..300u64 {
        let e = EventData::json(format!("T{}", i % 3), format!(r#"{{"i":{i}}}"#)).with_tag(format!("k:{}", i % 5));
        store
            .append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![e])
            .unwrap();
    }
    store
}

fn segments(sim: &SimStorage, ext: &str) -> Vec<String> {
    sim.list(Path::new("/v"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(ext))
        .collect()
}

#[test]
fn a_healthy_store_verifies_clean_while_appends_continue() {
    let sim = SimStorage::new();
    let store = Arc::new(filled(&sim));
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..300u64 {
                store
                    .append("live", ExpectedVersion::Any, vec![EventData::json("L", format!("{i}"))])
                    .unwrap();
            }
        })
    };
    for _ in 0..5 {
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert!(report.events >= 300);
        assert!(report.segments > 3 && report.indexes + 1 == report.segments);
    }
    writer.join().unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.events, 600);
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_reported_with_its_location() {
    let sim = SimStorage::new();
    drop(filled(&sim));
    let seg = Path::new("/v").join(&segments(&sim, ".seg")[1]);
    let bytes = sim.read_file(&seg).unwrap();
    let at = bytes.windows(4).position(|w| w == b"{\"i\"").unwrap() as u64 + 2;
    sim.flip_bit(&seg, at, 3).unwrap();
    let store = Store::open_with(Arc::new(sim.clone()), "/v", options()).unwrap();
    let report = store.verify().unwrap();
    assert!(!report.is_clean());
    let p = &report.problems[0];
    assert_eq!(p.file, seg);
    assert!(p.offset <= at && at < p.offset + 200, "{p}");
}

#[test]
fn a_damaged_seal_is_reported() {
    let sim = SimStorage::new();
    drop(filled(&sim));
    let seg = Path::new("/v").join(&segments(&sim, ".seg")[0]);
    let len = sim.read_file(&seg).unwrap().len() as u64;
    // The seal frame is the last 30 bytes; flip a bit of its content checksum.
    sim.flip_bit(&seg, len - 1, 0).unwrap();
    let store = Store::open_with(Arc::new(sim.clone()), "/v", options()).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].file, seg);
    assert_eq!(report.problems[0].offset, len - 30);
}

#[test]
fn an_index_that_disagrees_with_the_log_is_reported() {
    let sim = SimStorage::new();
    drop(filled(&sim));
    let idx = Path::new("/v").join(&segments(&sim, ".idx")[0]);
    let mut bytes = sim.read_file(&idx).unwrap();
    // Change the timestamp of the first location entry and fix the body checksum,
    // so that the file is well formed but lies about the log.
    bytes[136] ^= 1;
    let n = bytes.len();
    let crc = crc32fast::hash(&bytes[128..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    sim.write_file(&idx, &bytes).unwrap();
    let store = Store::open_with(Arc::new(sim.clone()), "/v", options()).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].what.contains("index"));
    // The offset is one of the .idx file, which the problem names.
    assert_eq!(report.problems[0].file, idx);
}

#[test]
fn a_checkpoint_that_disagrees_with_the_log_is_reported() {
    let sim = SimStorage::new();
    drop(filled(&sim));
    let path = Path::new("/v/streams.chk");
    let mut c = StreamsCheckpoint::decode(&sim.read_file(path).unwrap(), path).unwrap();
    let state = c.streams.get_mut("s-1").unwrap();
    state.last_revision += 5;
    sim.write_file(path, &c.encode().unwrap()).unwrap();
    let store = Store::open_with(Arc::new(sim.clone()), "/v", options()).unwrap();
    let report = store.verify().unwrap();
    assert!(report.problems.iter().any(|p| p.file == path), "{:?}", report.problems);
}

#[test]
fn a_backup_of_a_live_store_opens_as_it_was_and_restores() {
    let sim = SimStorage::new();
    let store = Arc::new(filled(&sim));
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..200u64 {
                store
                    .append("live", ExpectedVersion::Any, vec![EventData::json("L", format!("{i}"))])
                    .unwrap();
            }
        })
    };
    let report = store.backup("/backup").unwrap();
    writer.join().unwrap();
    assert!(report.events >= 300 && report.files >= 3);
    let copy = Store::open_with(Arc::new(sim.clone()), "/backup", options()).unwrap();
    assert_eq!(copy.head_position(), report.events);
    assert!(copy.verify().unwrap().is_clean());
    let original = store
        .read_all(
            annal::Direction::Forward,
            annal::LogFrom::Start,
            report.events as usize,
            &annal::Filter::all(),
        )
        .unwrap();
    let copied = copy
        .read_all(
            annal::Direction::Forward,
            annal::LogFrom::Start,
            usize::MAX,
            &annal::Filter::all(),
        )
        .unwrap();
    assert_eq!(original, copied);
    drop(copy);
    assert!(store.backup("/backup").is_err(), "a backup never overwrites");
    let restored = annal::restore_with(Arc::new(sim.clone()), Path::new("/backup"), Path::new("/restored")).unwrap();
    assert_eq!(restored.events, report.events);
    let stats = store.stats();
    assert_eq!(stats.events, 500);
    assert_eq!(stats.streams, 8);
    assert!(stats.segments > 3 && stats.segment_bytes > 0 && stats.index_bytes > 0);
}

/// Segments sealed while a backup copies the others: each copy opens, at
/// the head the backup reported. (The stream checkpoint was read after the
/// copy of the segments, and could describe a segment sealed meanwhile that
/// the copy lacks: the copy then refused to open, "the newest segment files
/// are missing".)
#[test]
fn backups_taken_while_segments_are_sealed_all_open() {
    let sim = SimStorage::new();
    let store = filled(&sim);
    let pad = "x".repeat(200);
    for i in 0..2500u64 {
        let e = EventData::json("F", format!(r#"{{"i":{i},"pad":"{pad}"}}"#));
        store
            .append(&format!("f-{}", i % 50), ExpectedVersion::Any, vec![e])
            .unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut failures = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let e = EventData::json("L", format!(r#"{{"i":{i},"pad":"{pad}"}}"#));
                store.append("live", ExpectedVersion::Any, vec![e]).unwrap();
                i += 1;
            }
        });
        for round in 0..4 {
            let dest = format!("/backup-{round}");
            let report = store.backup(&dest).unwrap();
            match Store::open_with(Arc::new(sim.clone()), &dest, options()) {
                Ok(copy) => assert_eq!(copy.head_position(), report.events),
                Err(e) => failures.push(format!("{dest}: {e}")),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn verify_resynchronises_after_damage_and_blames_only_the_damaged_segment() {
    let sim = SimStorage::new();
    drop(filled(&sim));
    let segs = segments(&sim, ".seg");
    assert!(segs.len() >= 4, "{segs:?}");
    // Two damaged events in segment 1, one in segment 2: each in its own frame.
    let mut damaged = Vec::new();
    for (seg, nth) in [(1, 3), (1, 20), (2, 5)] {
        let path = Path::new("/v").join(&segs[seg]);
        let bytes = sim.read_file(&path).unwrap();
        let at = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"{\"i\"")
            .nth(nth)
            .unwrap()
            .0 as u64
            + 2;
        sim.flip_bit(&path, at, 3).unwrap();
        damaged.push((path, at));
    }
    let store = Store::open_with(Arc::new(sim.clone()), "/v", options()).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 3, "{:#?}", report.problems);
    for (p, (path, at)) in report.problems.iter().zip(&damaged) {
        assert_eq!(&p.file, path, "{p}");
        assert!(p.offset <= *at && *at < p.offset + 200, "{p}");
    }
    // Every event but the three damaged ones is still decoded and counted.
    assert_eq!(report.events, 297);
    assert_eq!(report.segments, segs.len());
}

#[test]
fn damage_anywhere_in_a_sealed_segment_is_blamed_on_that_segment_alone() {
    let sim = SimStorage::new();
    drop(filled(&sim));
    let names: Vec<String> = sim.list(Path::new("/v")).unwrap();
    let files: Vec<(String, Vec<u8>)> = names
        .iter()
        .filter_map(|n| sim.read_file(&Path::new("/v").join(n)).ok().map(|b| (n.clone(), b)))
        .collect();
    let sealed = segments(&sim, ".idx");
    let mut failures = Vec::new();
    for victim in sealed.iter().map(|i| i.replace(".idx", ".seg")) {
        let len = files.iter().find(|(n, _)| *n == victim).unwrap().1.len();
        for at in (64..len).step_by(37).chain(len - 30..len) {
            let sim = SimStorage::new();
            for (n, b) in &files {
                sim.write_file(&Path::new("/v").join(n), b).unwrap();
            }
            let path = Path::new("/v").join(&victim);
            sim.flip_bit(&path, at as u64, (at % 8) as u8).unwrap();
            let store = Store::open_with(Arc::new(sim.clone()), "/v", options()).unwrap();
            let report = store.verify().unwrap();
            let what = format!("{victim} byte {at}");
            if report.problems.is_empty() {
                failures.push(format!("{what}: not reported"));
            }
            if let Some(p) = report.problems.iter().find(|p| p.file != path) {
                failures.push(format!("{what}: blamed elsewhere: {p}"));
            }
            if report.events + 1 < 300 {
                failures.push(format!("{what}: only {} events counted", report.events));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A sealed segment that rotted on disk after it was sealed (its index still
/// opens it, so nothing noticed) fails a backup naming the file, plain or
/// compressed, where the backup copied it and reported success.
#[test]
fn a_backup_refuses_a_sealed_segment_that_fails_its_checksum() {
    for compressed in [false, true] {
        let sim = SimStorage::new();
        let store = filled(&sim);
        if compressed {
            assert!(store.compress().unwrap().segments > 0);
        }
        let mut segs = segments(&sim, ".seg");
        segs.sort();
        let path = Path::new("/v").join(&segs[1]);
        let len = sim.read_file(&path).unwrap().len() as u64;
        sim.flip_bit(&path, len / 2, 3).unwrap();
        let store = {
            drop(store);
            Store::open_with(Arc::new(sim.clone()), "/v", options()).unwrap()
        };
        match store.backup("/backup") {
            Err(annal::Error::Corruption { file, .. }) => assert_eq!(file, path, "compressed {compressed}"),
            other => panic!("compressed {compressed}: {other:?}"),
        }
    }
}

/// An index damaged on disk after a clean close is not read at open; a
/// backup checks every index whole and copies one built again from its
/// segment instead of the damaged file: the copy verifies clean and finds
/// every event by id.
#[test]
fn a_backup_copies_a_damaged_index_built_again_from_its_segment() {
    let sim = SimStorage::new();
    let store = filled(&sim);
    let all = store
        .read_all(
            annal::Direction::Forward,
            annal::LogFrom::Start,
            usize::MAX,
            &annal::Filter::all(),
        )
        .unwrap();
    drop(store);
    let mut idx = segments(&sim, ".idx");
    idx.sort();
    let path = Path::new("/v").join(&idx[0]);
    let mut bytes = sim.read_file(&path).unwrap();
    // A byte in the ids section (the fifth lookup section).
    let len = |i: usize| u32::from_le_bytes(bytes[96 + 4 * i..100 + 4 * i].try_into().unwrap()) as usize;
    let ids = 128 + (0..4).map(len).sum::<usize>();
    bytes[ids + 3] ^= 0x08;
    sim.write_file(&path, &bytes).unwrap();
    let store = Store::open_with(Arc::new(sim.clone()), "/v", options()).unwrap();
    store.backup("/backup").unwrap();
    let copy = Store::open_with(Arc::new(sim.clone()), "/backup", options()).unwrap();
    assert!(copy.verify().unwrap().is_clean());
    for e in &all {
        assert_eq!(copy.event_by_id(e.id).unwrap().as_ref(), Some(e));
    }
}

#[test]
fn a_compressed_block_that_does_not_decompress_is_reported_at_its_offset_and_hides_only_its_positions() {
    let sim = SimStorage::new();
    let compression = annal::CompressionOptions {
        block_size: 1024,
        ..Default::default()
    };
    let store = filled(&sim);
    drop(store);
    let store = Store::open_with(Arc::new(sim.clone()), "/v", options().compression(compression)).unwrap();
    store.compress().unwrap();
    drop(store);
    // Break the zstd frame header of the second block of the first segment.
    let seg = Path::new("/v").join(&segments(&sim, ".seg")[0]);
    let mut file = sim.read_file(&seg).unwrap();
    let n = file.len();
    let le = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    let (table, count) = (le(&file, n - 32), le(&file, n - 24));
    assert!(count >= 3, "{count} blocks");
    let block = le(&file, table + 24 + 8);
    for b in &mut file[block..block + 8] {
        *b ^= 0xA5;
    }
    sim.write_file(&seg, &file).unwrap();
    let store = Store::open_with(Arc::new(sim.clone()), "/v", options()).unwrap();
    let report = store.verify().unwrap();
    // One problem, at the block's offset in the file: no false revision gaps
    // in the streams whose events the block held.
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    assert_eq!(report.problems[0].file, seg);
    assert_eq!(report.problems[0].offset, block as u64, "{:#?}", report.problems);
    // The events of the other blocks of that segment are still checked.
    assert!(report.events > 250, "{}", report.events);
}
