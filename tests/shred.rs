//! Crypto-shredding: events naming a subject are stored sealed under the
//! subject's key; `Store::shred` destroys the key, and reads then return the
//! events erased, positions and everything but their personal fields intact.

// Tests may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;
use std::sync::Arc;

use annal::format::subjects::{self, SUBJECTS_FILE};
use annal::{
    Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, Personal, RecordedEvent,
    SimStorage, Store, StreamFrom,
};
use uuid::Uuid;

const DIR: &str = "/data";

fn options() -> Options {
    Options::default().no_compression().durability(Durability::Always)
}

fn personal(subject: &str, n: u64) -> EventData {
    EventData::json("CustomerChanged", format!(r#"{{"name":"PII-{subject}-name-{n}"}}"#))
        .with_metadata(format!(r#"{{"email":"PII-{subject}-mail-{n}"}}"#))
        .with_tag("kind:customer")
        .with_subject(subject)
        .with_id(Uuid::from_u64_pair(
            subject
                .bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
            n,
        ))
}

/// Opens the store of [`DIR`] on `sim`.
fn open_sim(sim: &SimStorage) -> Store {
    Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap()
}

/// Appends [`personal`]`(subject, n)` to `stream`.
fn append_personal(store: &Store, stream: &str, subject: &str, n: u64) {
    store
        .append(stream, ExpectedVersion::Any, vec![personal(subject, n)])
        .unwrap();
}

fn all(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap()
}

/// Everything of `e` but its personal fields.
fn frame_of(e: &RecordedEvent) -> (u64, u64, Uuid, String, String, Vec<String>) {
    (
        e.position,
        e.revision,
        e.id,
        e.stream.clone(),
        e.event_type.clone(),
        e.tags.clone(),
    )
}

#[test]
fn sealed_events_read_back_as_appended_before_and_after_reopen() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    let input = vec![personal("ann", 0), personal("ann", 1), EventData::json("Plain", "{}")];
    store.append("c-1", ExpectedVersion::NoStream, input.clone()).unwrap();
    let check = |store: &Store| {
        let read = store
            .read_stream("c-1", Direction::Forward, StreamFrom::Start, 10)
            .unwrap();
        assert_eq!(read.len(), 3);
        for (r, e) in read.iter().zip(&input) {
            assert_eq!(
                (&r.data, &r.metadata, r.id),
                (&e.data, &e.metadata, e.id.unwrap_or(r.id))
            );
            assert!(!r.is_erased());
            assert_eq!(r.subject(), e.subject.as_deref());
        }
        assert_eq!(read[0].personal, Personal::Subject("ann".into()));
        assert_eq!(read[2].personal, Personal::Plain);
        assert_eq!(all(store), read);
    };
    check(&store);
    drop(store);
    let store = open_sim(&sim);
    check(&store);
    // The segment holding sealed events says version 3.
    let seg = sim.read_file(&Path::new(DIR).join("00000000000000000000.seg")).unwrap();
    assert_eq!(u32::from_le_bytes(seg[8..12].try_into().unwrap()), 3);
    assert!(store.verify().unwrap().problems.is_empty());
}

#[test]
fn shredding_erases_a_subject_for_good_and_leaves_everything_else() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    store
        .append(
            "c-1",
            ExpectedVersion::Any,
            vec![personal("ann", 0), personal("bob", 0)],
        )
        .unwrap();
    store
        .append("c-2", ExpectedVersion::Any, vec![EventData::json("Plain", "{}")])
        .unwrap();
    append_personal(&store, "c-1", "ann", 1);
    let before = all(&store);

    assert!(store.shred("ann").unwrap());
    assert!(!store.shred("ann").unwrap(), "a second shred has nothing left to erase");
    assert!(!store.shred("nobody").unwrap());

    let check = |store: &Store| {
        let after = all(store);
        assert_eq!(after.len(), before.len());
        for (a, b) in after.iter().zip(&before) {
            assert_eq!(
                frame_of(a),
                frame_of(b),
                "positions, revisions, ids, types and tags stay"
            );
            if b.subject() == Some("ann") {
                assert!(a.is_erased());
                assert_eq!(a.personal, Personal::Erased);
                assert!(a.data.is_empty() && a.metadata.is_empty());
                assert_eq!(a.subject(), None);
            } else {
                assert_eq!(a, b, "other events are untouched");
            }
        }
        // The stream read and the read by id take the same path.
        let stream = store
            .read_stream("c-1", Direction::Forward, StreamFrom::Start, 10)
            .unwrap();
        assert_eq!(
            stream,
            after.iter().filter(|e| e.stream == "c-1").cloned().collect::<Vec<_>>()
        );
        let report = store.verify().unwrap();
        assert!(
            report.problems.is_empty(),
            "erased events are not damage: {:?}",
            report.problems
        );
    };
    check(&store);
    drop(store);
    let store = open_sim(&sim);
    check(&store);

    // A new event for the same subject gets a new key; the old ones stay erased.
    let r = store
        .append("c-1", ExpectedVersion::Any, vec![personal("ann", 2)])
        .unwrap();
    let mut store = Some(store);
    for _reopened in [false, true] {
        let s = store
            .take()
            .unwrap_or_else(|| Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
        let read = all(&s);
        let new = read.iter().find(|e| e.position == r.position).unwrap();
        assert_eq!(new.subject(), Some("ann"));
        assert_eq!(new.data, personal("ann", 2).data);
        assert_eq!(read.iter().filter(|e| e.is_erased()).count(), 2);
    }
}

/// Every file under `dir`, recursively, with its bytes.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_personal_byte_of_a_shredded_or_live_subject_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments, so that sealed events sit in sealed segments with index files too.
    let opts = || options().segment_size(4096).indexed_metadata(["email"]);
    let store = Store::open(dir.path(), opts()).unwrap();
    for n in 0..30 {
        store
            .append(
                &format!("c-{}", n % 3),
                ExpectedVersion::Any,
                vec![personal("ann-7781", n), personal("bob-9932", n)],
            )
            .unwrap();
    }
    let keys = subjects::decode_file(&std::fs::read(dir.path().join(SUBJECTS_FILE)).unwrap()).unwrap();
    let lookup = subjects::lookup(&keys.secret, "ann-7781");
    let ann_key = keys.keys.iter().find(|k| k.lookup == lookup).unwrap().key.0;
    assert!(store.shred("ann-7781").unwrap());
    let backup = tempfile::tempdir().unwrap();
    store.backup(backup.path().join("b")).unwrap();
    store.close().unwrap();

    let mut checked = 0;
    for root in [dir.path(), backup.path()] {
        for (path, bytes) in files(root) {
            checked += 1;
            for marker in ["PII-ann-7781", "PII-bob-9932", "ann-7781", "bob-9932"] {
                assert!(!contains(&bytes, marker.as_bytes()), "{marker} in {}", path.display());
            }
            assert!(
                !contains(&bytes, &ann_key),
                "the shredded key is still in {}",
                path.display()
            );
            assert!(
                !contains(&bytes, &lookup),
                "the shredded subject's lookup hash is in {}",
                path.display()
            );
        }
    }
    assert!(checked > 6, "segments, indexes and the key store were looked at");
    // The live subject still reads back, from the store and from the backup.
    for d in [dir.path().to_path_buf(), backup.path().join("b")] {
        let store = Store::open(&d, opts()).unwrap();
        let read = all(&store);
        assert_eq!(read.iter().filter(|e| e.is_erased()).count(), 30);
        assert_eq!(read.iter().filter(|e| e.subject() == Some("bob-9932")).count(), 30);
    }
}

#[test]
fn an_event_with_a_subject_is_not_indexed_or_filtered_by_its_metadata() {
    // Through the metadata index, and by scanning (the field not indexed).
    for indexed in [vec!["email"], vec![]] {
        let sim = SimStorage::new();
        let store = Store::open_with(Arc::new(sim.clone()), DIR, options().indexed_metadata(indexed)).unwrap();
        let plain = EventData::json("E", "{}").with_metadata(r#"{"email":"PII-ann-mail-0"}"#);
        store
            .append("c-1", ExpectedVersion::Any, vec![personal("ann", 0), plain])
            .unwrap();
        let filter = Filter::all().with_metadata("email", "PII-ann-mail-0");
        let found = store.read_all(Direction::Forward, LogFrom::Start, 10, &filter).unwrap();
        assert_eq!(found.iter().map(|e| e.position).collect::<Vec<_>>(), vec![1]);
    }
}

#[test]
fn a_retried_sealed_append_is_idempotent_until_its_subject_is_shredded() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    let first = store
        .append("c-1", ExpectedVersion::NoStream, vec![personal("ann", 0)])
        .unwrap();
    let again = store
        .append("c-1", ExpectedVersion::NoStream, vec![personal("ann", 0)])
        .unwrap();
    assert_eq!(first, again);
    // The same id with other personal content, or another subject, is a conflict.
    let other = personal("ann", 0).with_subject("bob");
    assert!(matches!(
        store.append("c-1", ExpectedVersion::NoStream, vec![other]),
        Err(Error::IdempotencyConflict { .. })
    ));
    store.shred("ann").unwrap();
    assert!(matches!(
        store.append("c-1", ExpectedVersion::NoStream, vec![personal("ann", 0)]),
        Err(Error::IdempotencyConflict { .. })
    ));
    assert_eq!(all(&store).len(), 1);
}

/// Offset of the first event frame of a segment (after the group frame at 64).
fn first_event_frame(seg: &[u8]) -> usize {
    let group_len = u32::from_le_bytes(seg[64..68].try_into().unwrap()) as usize;
    64 + 8 + group_len
}

#[test]
fn a_damaged_sealed_body_is_reported_with_its_file_and_offset() {
    let opts = || options().segment_size(4096);
    let seg_path = Path::new(DIR).join("00000000000000000000.seg");
    // A byte flipped anywhere in the frame: the frame checksum fails.
    // The same byte changed with the checksum made to match: the tag fails.
    for fix_crc in [false, true] {
        let sim = SimStorage::new();
        let store = Store::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
        // Enough to seal the first segment, so it opens without a scan.
        for n in 0..20 {
            store
                .append("c-1", ExpectedVersion::Any, vec![personal("ann", n)])
                .unwrap();
        }
        drop(store);
        let mut seg = sim.read_file(&seg_path).unwrap();
        let at = first_event_frame(&seg);
        let len = u32::from_le_bytes(seg[at..at + 4].try_into().unwrap()) as usize;
        seg[at + 8 + len - 1] ^= 0x40; // the last byte of the tag
        if fix_crc {
            let mut h = crc32fast::Hasher::new();
            h.update(&seg[at..at + 4]);
            h.update(&seg[at + 8..at + 8 + len]);
            seg[at + 4..at + 8].copy_from_slice(&h.finalize().to_le_bytes());
        }
        sim.write_file(&seg_path, &seg).unwrap();
        let store = Store::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
        match store.read_all(Direction::Forward, LogFrom::Start, 1, &Filter::all()) {
            Err(Error::Corruption { file, offset, .. }) => {
                assert_eq!((file, offset), (seg_path.clone(), at as u64));
            }
            other => panic!("fix_crc {fix_crc}: damage not reported: {other:?}"),
        }
        let report = store.verify().unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.file == seg_path && p.offset == at as u64),
            "fix_crc {fix_crc}: {:?}",
            report.problems
        );
        // After a shred, a failed frame checksum is still damage; a tag is no
        // longer checked (the key is gone), so the changed ciphertext is not.
        store.shred("ann").unwrap();
        let report = store.verify().unwrap();
        assert_eq!(
            report.problems.iter().any(|p| p.offset == at as u64),
            !fix_crc,
            "a failed checksum stays damage; a tag under a shredded key is not checked"
        );
    }
}

#[test]
fn a_lost_key_store_is_damage_not_erasure() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    append_personal(&store, "c-1", "ann", 0);
    drop(store);
    sim.write_file(&Path::new(DIR).join(SUBJECTS_FILE), b"").unwrap();
    assert!(Store::open_with(Arc::new(sim.clone()), DIR, options()).is_err_and(|e| e.is_corruption()));
    use annal::Storage;
    sim.remove(&Path::new(DIR).join(SUBJECTS_FILE)).unwrap();
    let store = open_sim(&sim);
    let read = store.read_all(Direction::Forward, LogFrom::Start, 10, &Filter::all());
    assert!(
        read.is_err_and(|e| e.is_corruption()),
        "events sealed under a key never shredded are not erased"
    );
    assert!(!store.verify().unwrap().problems.is_empty());
}

/// An append to one stream that repeats the id of another stream's event
/// whose key was lost is a plain conflict: that event's damage (and where
/// it lies) belongs to the other stream. The stream's own retry meets it.
#[test]
fn an_id_repeated_from_another_streams_key_lost_event_is_a_conflict_not_its_damage() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    append_personal(&store, "c-1", "ann", 0);
    drop(store);
    use annal::Storage;
    sim.remove(&Path::new(DIR).join(SUBJECTS_FILE)).unwrap();
    let store = open_sim(&sim);
    let id = personal("ann", 0).id.unwrap();
    let other = store.append(
        "orders-1",
        ExpectedVersion::Any,
        vec![EventData::json("T", "{}").with_id(id)],
    );
    assert!(
        matches!(other, Err(Error::IdempotencyConflict { id: i, .. }) if i == id),
        "{other:?}"
    );
    let own = store.append("c-1", ExpectedVersion::Any, vec![personal("ann", 0)]);
    assert!(own.is_err_and(|e| e.is_corruption()));
}

/// One crash point over: a first key, a second subject, a shred, a new key
/// after the shred. Whatever was acknowledged holds after recovery: an
/// acknowledged sealed event reads back (or, once its shred was
/// acknowledged, reads erased), never fails for a lost key.
fn crash_once(ops: u64, torn: bool) -> bool {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    store
        .append("warm", ExpectedVersion::Any, vec![EventData::json("E", "{}")])
        .unwrap();
    sim.crash_after_ops(ops, ops);
    let a0 = store.append("c-1", ExpectedVersion::Any, vec![personal("ann", 0)]).ok();
    let b0 = store.append("c-2", ExpectedVersion::Any, vec![personal("bob", 0)]).ok();
    let shred = store.shred("ann").is_ok_and(|s| s);
    let a1 = store.append("c-1", ExpectedVersion::Any, vec![personal("ann", 1)]).ok();
    let hit = sim.is_dead();
    drop(store);
    sim.crash(ops ^ 0x5eed, torn);
    let store = Store::open_with(Arc::new(sim.clone()), DIR, options())
        .unwrap_or_else(|e| panic!("ops {ops} torn {torn}: reopen failed: {e}"));
    let read = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap_or_else(|e| panic!("ops {ops} torn {torn}: read failed: {e}"));
    let at = |p: u64| read.iter().find(|e| e.position == p);
    if let Some(r) = a0 {
        let e = at(r.position).unwrap_or_else(|| panic!("ops {ops}: acknowledged event lost"));
        if shred {
            assert!(e.is_erased(), "ops {ops}: acknowledged shred undone");
        } else {
            // Not acknowledged: the shred may or may not have reached the disk.
            assert!(e.is_erased() || e.data == personal("ann", 0).data, "ops {ops}");
        }
    }
    for (r, ev) in [(b0, personal("bob", 0)), (a1, personal("ann", 1))] {
        if let Some(r) = r {
            let e = at(r.position).unwrap_or_else(|| panic!("ops {ops}: acknowledged event lost"));
            assert_eq!(
                (&e.data, &e.metadata),
                (&ev.data, &ev.metadata),
                "ops {ops} torn {torn}"
            );
        }
    }
    assert!(store.verify().unwrap().problems.is_empty(), "ops {ops} torn {torn}");
    // The recovered store takes new subjects.
    append_personal(&store, "c-3", "cy", 0);
    hit
}

#[test]
fn acknowledged_keys_and_shreds_survive_a_crash_at_every_point() {
    let mut points = 0;
    // Every operation index, until the run ends before the armed crash; torn
    // and clean power cuts alternate (each point costs three opens).
    for ops in 1..200 {
        points += 1;
        if !crash_once(ops, ops % 2 == 1) {
            break;
        }
    }
    eprintln!("{points} crash points");
    assert!(points > 10, "the crash points covered the key store writes ({points})");
}

#[test]
fn scavenging_and_compression_keep_sealed_events_sealed_in_version_3_segments() {
    let sim = SimStorage::new();
    let opts = || Options::default().durability(Durability::Always).segment_size(4096);
    let store = Store::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
    for n in 0..30 {
        store
            .append(
                "c-1",
                ExpectedVersion::Any,
                vec![personal("ann", n), EventData::json("Noise", "{}")],
            )
            .unwrap();
        store
            .append("tmp", ExpectedVersion::Any, vec![EventData::json("Tmp", "{}")])
            .unwrap();
    }
    let before: Vec<RecordedEvent> = all(&store).into_iter().filter(|e| e.stream == "c-1").collect();
    // Scavenging rewrites the sealed segments without the `tmp` events.
    store
        .set_stream_metadata(
            "tmp",
            annal::StreamMetadata {
                max_count: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(store.scavenge().unwrap().segments_rewritten > 0);
    store.compress().unwrap();
    let after: Vec<RecordedEvent> = all(&store).into_iter().filter(|e| e.stream == "c-1").collect();
    assert_eq!(after, before);
    assert!(store.verify().unwrap().problems.is_empty());
    use annal::Storage;
    // Version 3 or later, which readers of sealed events alone understand;
    // 4 for the rewritten ones, whose removed frames say reads no longer
    // returned their events (past `tmp`'s max_count).
    let mut versions = Vec::new();
    for name in sim.list(Path::new(DIR)).unwrap().iter().filter(|n| n.ends_with(".seg")) {
        let seg = sim.read_file(&Path::new(DIR).join(name)).unwrap();
        let version = u32::from_le_bytes(seg[8..12].try_into().unwrap());
        assert!(matches!(version, 3 | 4), "{name}: {version}");
        versions.push(version);
    }
    assert!(versions.contains(&4), "{versions:?}");
    store.shred("ann").unwrap();
    drop(store);
    let store = Store::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
    let erased = all(&store).into_iter().filter(|e| e.is_erased()).count();
    assert_eq!(erased, 30);
}

#[test]
fn a_subscription_delivers_sealed_events_opened_and_shredded_ones_erased() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    store
        .append(
            "c-1",
            ExpectedVersion::Any,
            vec![personal("ann", 0), personal("bob", 0)],
        )
        .unwrap();
    store.shred("ann").unwrap();
    let mut sub = store.subscribe_all(annal::SubscribeFrom::Start, Filter::all().with_stream_prefix("c-"));
    let mut got = Vec::new();
    while got.len() < 2 {
        match sub.next_timeout(std::time::Duration::from_secs(10)).unwrap() {
            Some(annal::Message::Event(e)) => got.push(e),
            Some(_) => {}
            None => panic!("the subscription delivered {} events of 2", got.len()),
        }
    }
    assert!(got[0].is_erased() && got[0].data.is_empty());
    assert_eq!(got[1].subject(), Some("bob"));
    assert_eq!(got[1].data, personal("bob", 0).data);
}

#[test]
fn a_shred_that_fails_part_way_is_retried_in_the_same_process_and_never_answers_no_key() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    append_personal(&store, "c-1", "ann", 0);
    append_personal(&store, "c-2", "bob", 0);
    sim.fail_nth_sync(1);
    assert!(store.shred("ann").is_err());
    // Nothing more is sealed under the key being destroyed.
    assert!(all(&store)[0].is_erased());
    // While the file on disk may still hold the key, a retry fails again if
    // the disk does, for that subject or any other: never "no key".
    sim.fail_nth_sync(1);
    assert!(store.shred("ann").is_err(), "a retry that could not write must fail");
    sim.fail_nth_sync(1);
    assert!(
        store.shred("zed").is_err(),
        "a shred must not answer while the key store is not on disk"
    );
    // Known subjects still append.
    append_personal(&store, "c-2", "bob", 1);
    // The retry in the same process writes the state out and answers as the
    // shred would have; the key is gone from disk.
    assert!(store.shred("ann").unwrap());
    assert!(store.shred("ann").unwrap(), "asked again, the subject stays shredded");
    assert!(!store.shred("zed").unwrap());
    drop(store);
    let store = open_sim(&sim);
    assert!(all(&store)[0].is_erased(), "the retried shred reached the disk");
    assert_eq!(all(&store).iter().filter(|e| e.subject() == Some("bob")).count(), 2);
    assert!(store.verify().unwrap().problems.is_empty());
}

#[test]
fn after_a_failed_shred_a_new_key_writes_the_shred_out_first() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    append_personal(&store, "c-1", "ann", 0);
    sim.fail_nth_sync(1);
    assert!(store.shred("ann").is_err());
    // A new key cannot be added to a file whose state is unknown: the state
    // memory holds (ann shredded) is written out again first.
    sim.fail_nth_sync(1);
    assert!(
        store
            .append("c-3", ExpectedVersion::Any, vec![personal("cy", 0)])
            .is_err()
    );
    append_personal(&store, "c-3", "cy", 0);
    assert!(store.shred("ann").unwrap(), "the failed shred is done, and says so");
    drop(store);
    let store = open_sim(&sim);
    let read = all(&store);
    assert!(read[0].is_erased());
    assert_eq!(read[1].subject(), Some("cy"));
    // A shred that fails is retried after a reopen too.
    sim.fail_nth_sync(1);
    assert!(store.shred("cy").is_err());
    drop(store);
    let store = open_sim(&sim);
    assert_eq!(
        all(&store)[1].subject(),
        Some("cy"),
        "the failed rewrite never replaced the file"
    );
    assert!(store.shred("cy").unwrap());
    assert!(all(&store)[1].is_erased());
}

fn key_file() -> std::path::PathBuf {
    Path::new(DIR).join(SUBJECTS_FILE)
}

#[test]
fn a_rotted_last_key_record_is_damage_kept_and_reported_never_cut() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    store
        .append("plain", ExpectedVersion::Any, vec![EventData::json("E", "{}")])
        .unwrap();
    append_personal(&store, "c-1", "ann", 0);
    store.close().unwrap();
    let before = sim.read_file(&key_file()).unwrap();
    assert_eq!(before.len(), subjects::SUBJECTS_HEADER + subjects::SUBJECT_RECORD);
    // One bit of the stored CRC of the only (last) record rots.
    sim.flip_bit(&key_file(), (before.len() - 1) as u64, 0).unwrap();
    let rotted = sim.read_file(&key_file()).unwrap();
    let store = open_sim(&sim);
    // The acknowledged key's bytes stay where they were, for a person to mend.
    assert_eq!(
        sim.read_file(&key_file()).unwrap(),
        rotted,
        "a full-length record is never cut"
    );
    let report = store.verify().unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.file == key_file() && p.offset == subjects::SUBJECTS_HEADER as u64),
        "{:?}",
        report.problems
    );
    // Its event reads as damage, the plain one reads, new subjects take keys after it.
    assert!(
        store
            .read_stream("c-1", Direction::Forward, StreamFrom::Start, 10)
            .is_err_and(|e| e.is_corruption())
    );
    assert_eq!(
        store
            .read_stream("plain", Direction::Forward, StreamFrom::Start, 10)
            .unwrap()
            .len(),
        1
    );
    append_personal(&store, "c-2", "bob", 0);
    drop(store);
    let store = Store::open_read_only_with(Arc::new(sim.clone()), DIR, options()).unwrap();
    let bob = store
        .read_stream("c-2", Direction::Forward, StreamFrom::Start, 10)
        .unwrap();
    assert_eq!(bob[0].data, personal("bob", 0).data);
    // The damaged record, and the event sealed under the key it held.
    let problems = store.verify().unwrap().problems;
    assert_eq!(
        problems.iter().filter(|p| p.file == key_file()).count(),
        1,
        "{problems:?}"
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn a_rotted_shredded_record_is_reported_and_survives_later_rewrites() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    store
        .append(
            "c-1",
            ExpectedVersion::Any,
            vec![personal("ann", 0), personal("bob", 0), personal("cy", 0)],
        )
        .unwrap();
    assert!(store.shred("ann").unwrap());
    store.close().unwrap();
    let len = sim.read_file(&key_file()).unwrap().len();
    // The SHREDDED record ends the file (written by the atomic rewrite).
    sim.flip_bit(&key_file(), (len - 1) as u64, 3).unwrap();
    let store = open_sim(&sim);
    assert_eq!(
        sim.read_file(&key_file()).unwrap().len(),
        len,
        "a shredded record is never cut"
    );
    let damaged_at = (len - subjects::SUBJECT_RECORD) as u64;
    let problems = store.verify().unwrap().problems;
    assert!(
        problems.iter().any(|p| p.file == key_file() && p.offset == damaged_at),
        "{problems:?}"
    );
    // Another shred rewrites the file: the damaged record goes along, still reported.
    assert!(store.shred("bob").unwrap());
    let problems = store.verify().unwrap().problems;
    assert!(
        problems
            .iter()
            .any(|p| p.file == key_file() && p.what.contains("subject key record damaged")),
        "{problems:?}"
    );
    drop(store);
    let store = open_sim(&sim);
    let problems = store.verify().unwrap().problems;
    assert!(problems.iter().any(|p| p.file == key_file()), "{problems:?}");
    let cy = store
        .read_stream("c-1", Direction::Backward, StreamFrom::End, 1)
        .unwrap();
    assert_eq!(cy[0].data, personal("cy", 0).data);
}

#[test]
fn a_torn_key_record_is_saved_in_torn_and_reported_before_it_is_cut() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    append_personal(&store, "c-1", "ann", 0);
    store.close().unwrap();
    let whole = sim.read_file(&key_file()).unwrap();
    // A key append that never finished: 40 bytes of a record.
    let mut torn = whole.clone();
    torn.extend_from_slice(&[0xAB; 40]);
    sim.write_file(&key_file(), &torn).unwrap();
    let store = open_sim(&sim);
    assert_eq!(sim.read_file(&key_file()).unwrap(), whole);
    let saved = Path::new(DIR)
        .join("torn")
        .join(format!("{SUBJECTS_FILE}-{}-0.bin", whole.len()));
    assert_eq!(sim.read_file(&saved).unwrap(), vec![0xAB; 40]);
    let reported = store.stats().last_background_error.unwrap_or_default();
    assert!(
        reported.contains(SUBJECTS_FILE) && reported.contains("torn"),
        "{reported}"
    );
    // And where no later background failure can replace it.
    let cuts = store.key_cuts_at_open();
    assert!(
        cuts.len() == 1 && cuts[0].contains(&saved.display().to_string()),
        "{cuts:?}"
    );
    assert_eq!(all(&store)[0].data, personal("ann", 0).data);
}

#[test]
fn a_damaged_middle_key_record_leaves_the_rest_of_the_store_readable() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    store
        .append("plain", ExpectedVersion::Any, vec![EventData::json("E", "{}")])
        .unwrap();
    append_personal(&store, "c-1", "ann", 0);
    append_personal(&store, "c-2", "bob", 0);
    store.close().unwrap();
    // Inside ann's lookup hash: the first record fails its checksum.
    sim.flip_bit(&key_file(), (subjects::SUBJECTS_HEADER + 10) as u64, 2)
        .unwrap();
    for read_only in [true, false] {
        let store = if read_only {
            Store::open_read_only_with(Arc::new(sim.clone()), DIR, options()).unwrap()
        } else {
            Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap()
        };
        assert_eq!(
            store
                .read_stream("plain", Direction::Forward, StreamFrom::Start, 10)
                .unwrap()
                .len(),
            1
        );
        let bob = store
            .read_stream("c-2", Direction::Forward, StreamFrom::Start, 10)
            .unwrap();
        assert_eq!(bob[0].data, personal("bob", 0).data);
        assert!(
            store
                .read_stream("c-1", Direction::Forward, StreamFrom::Start, 10)
                .is_err_and(|e| e.is_corruption())
        );
        let problems = store.verify().unwrap().problems;
        assert!(
            problems
                .iter()
                .any(|p| p.file == key_file() && p.offset == subjects::SUBJECTS_HEADER as u64),
            "{problems:?}"
        );
    }
    let store = open_sim(&sim);
    append_personal(&store, "c-3", "cy", 0);
    drop(store);
    let store = open_sim(&sim);
    let cy = store
        .read_stream("c-3", Direction::Forward, StreamFrom::Start, 10)
        .unwrap();
    assert_eq!(cy[0].data, personal("cy", 0).data);
}

#[test]
fn repair_removes_a_damaged_key_record_and_keeps_only_its_bytes_in_quarantine() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    append_personal(&store, "c-1", "ann", 0);
    append_personal(&store, "c-2", "bob", 0);
    store.close().unwrap();
    sim.flip_bit(&key_file(), (subjects::SUBJECTS_HEADER + 10) as u64, 2)
        .unwrap();
    let damaged = sim.read_file(&key_file()).unwrap();
    let report = annal::repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    assert!(!report.is_clean());
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.contains(SUBJECTS_FILE) && a.contains("damaged key record")),
        "{report:?}"
    );
    // Only the removed record goes to quarantine: a copy of the whole file
    // would keep bob's live key past a later shred of bob.
    let kept = report
        .quarantine
        .clone()
        .unwrap()
        .join(format!("{SUBJECTS_FILE}-removed.bin"));
    let record = subjects::SUBJECTS_HEADER..subjects::SUBJECTS_HEADER + subjects::SUBJECT_RECORD;
    assert_eq!(sim.read_file(&kept).unwrap(), damaged[record]);
    assert_eq!(
        sim.read_file(&key_file()).unwrap().len(),
        subjects::SUBJECTS_HEADER + subjects::SUBJECT_RECORD
    );
    let store = open_sim(&sim);
    let problems = store.verify().unwrap().problems;
    // The key record is gone from the file; ann's event still has no key.
    assert!(problems.iter().all(|p| p.file != key_file()), "{problems:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    let bob = store
        .read_stream("c-2", Direction::Forward, StreamFrom::Start, 10)
        .unwrap();
    assert_eq!(bob[0].data, personal("bob", 0).data);
    drop(store);
    assert!(
        annal::repair_with(Arc::new(sim.clone()), Path::new(DIR))
            .unwrap()
            .actions
            .iter()
            .all(|a| !a.contains(SUBJECTS_FILE))
    );
}

/// A damaged record whose lookup still reads as the subject's (here its
/// checksum is what rotted) may hold the subject's key intact: a shred of
/// the subject removes it too and answers that it erased something; the
/// subject's events read erased, not damaged.
#[test]
fn a_shred_removes_a_damaged_record_of_its_subject() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    append_personal(&store, "c-1", "ann", 0);
    store.close().unwrap();
    let at = subjects::SUBJECTS_HEADER;
    let key = sim.read_file(&key_file()).unwrap()[at + 49..at + 81].to_vec();
    // A bit of the record's checksum.
    sim.flip_bit(&key_file(), (at + 82) as u64, 1).unwrap();
    let store = open_sim(&sim);
    assert!(store.shred("ann").unwrap(), "the shred found nothing to erase");
    let file = sim.read_file(&key_file()).unwrap();
    assert!(
        !file.windows(key.len()).any(|w| w == &key[..]),
        "ann's key is still in the key store"
    );
    let ann = store
        .read_stream("c-1", Direction::Forward, StreamFrom::Start, 10)
        .unwrap();
    assert!(ann[0].is_erased());
    assert!(store.verify().unwrap().problems.is_empty());
}

/// A store with a plain event and one sealed under ann's key, closed.
fn plain_and_ann() -> SimStorage {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    store
        .append("plain", ExpectedVersion::Any, vec![EventData::json("E", "{}")])
        .unwrap();
    append_personal(&store, "c-1", "ann", 0);
    store.close().unwrap();
    sim
}

/// One flipped bit in the key store's header: a reader still reads every
/// event that needs no key (those under a key read as damage) and verify
/// names the header; a writer refuses; repair mends the header (its secret
/// is vouched for by its checksum) and everything reads again.
#[test]
fn a_rotted_key_store_header_keeps_other_events_readable_and_repair_mends_it() {
    let sim = plain_and_ann();
    sim.flip_bit(&key_file(), 20, 0).unwrap();
    let store = Store::open_read_only_with(Arc::new(sim.clone()), DIR, options()).unwrap();
    let plain = store.read_stream("plain", Direction::Forward, StreamFrom::Start, 10);
    assert_eq!(plain.unwrap().len(), 1);
    let ann = store.read_stream("c-1", Direction::Forward, StreamFrom::Start, 10);
    assert!(ann.is_err_and(|e| e.is_corruption()));
    let problems = store.verify().unwrap().problems;
    assert!(
        problems.iter().any(|p| p.file == key_file() && p.offset == 0),
        "{problems:?}"
    );
    // A backup keeps the file as it is: its keys are still there to mend.
    store.backup("/copy").unwrap();
    let copied = sim.read_file(&Path::new("/copy").join(SUBJECTS_FILE)).unwrap();
    assert_eq!(copied, sim.read_file(&key_file()).unwrap());
    drop(store);
    let refused = Store::open_with(Arc::new(sim.clone()), DIR, options()).err().unwrap();
    assert!(refused.to_string().contains("read-only"), "{refused}");
    // As `annal serve` opens a store: degraded, for reads of what needs no key.
    let degraded = Store::open_or_degraded_with(Arc::new(sim.clone()), DIR, options()).unwrap();
    assert!(degraded.is_read_only());
    let plain = degraded.read_stream("plain", Direction::Forward, StreamFrom::Start, 10);
    assert_eq!(plain.unwrap().len(), 1);
    drop(degraded);
    let report = annal::repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    assert!(report.unfixed.is_empty(), "{report:?}");
    assert!(report.actions.iter().any(|a| a.contains("header")), "{report:?}");
    let store = open_sim(&sim);
    assert_eq!(all(&store)[1].data, personal("ann", 0).data);
    assert!(store.verify().unwrap().is_clean());
    assert!(store.shred("ann").unwrap());
}

/// Two flipped bits of the header's secret: repair cannot tell what it
/// was, leaves the file and says why; the reader still works.
#[test]
fn a_key_store_header_whose_secret_is_lost_is_reported_unfixed() {
    let sim = plain_and_ann();
    sim.flip_bit(&key_file(), 20, 0).unwrap();
    sim.flip_bit(&key_file(), 40, 5).unwrap();
    let rotted = sim.read_file(&key_file()).unwrap();
    let report = annal::repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    assert!(report.unfixed.iter().any(|u| u.contains("secret")), "{report:?}");
    assert_eq!(sim.read_file(&key_file()).unwrap(), rotted);
    let store = Store::open_read_only_with(Arc::new(sim.clone()), DIR, options()).unwrap();
    let plain = store.read_stream("plain", Direction::Forward, StreamFrom::Start, 10);
    assert_eq!(plain.unwrap().len(), 1);
}

/// Repair moves a damaged key record (here its checksum rotted: the key
/// inside is intact) to quarantine, and recovery saves a torn one in
/// `torn/`: a shred of the subject removes both and answers that it erased
/// something; its events then read erased.
#[test]
fn a_shred_removes_its_subjects_key_records_from_quarantine_and_torn() {
    let sim = plain_and_ann();
    let at = subjects::SUBJECTS_HEADER;
    let whole = sim.read_file(&key_file()).unwrap();
    let key = whole[at + 49..at + 81].to_vec();
    sim.flip_bit(&key_file(), (at + 82) as u64, 1).unwrap();
    let report = annal::repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    let removed = report.quarantine.unwrap().join(format!("{SUBJECTS_FILE}-removed.bin"));
    // A torn copy of the start of ann's record (kind, lookup, part of the id).
    let mut torn = sim.read_file(&key_file()).unwrap();
    let torn_at = torn.len();
    torn.extend_from_slice(&whole[at..at + 40]);
    sim.write_file(&key_file(), &torn).unwrap();
    let store = open_sim(&sim);
    let saved = Path::new(DIR)
        .join("torn")
        .join(format!("{SUBJECTS_FILE}-{torn_at}-0.bin"));
    assert!(sim.read_file(&saved).is_ok());
    assert!(store.shred("ann").unwrap(), "the shred found nothing to erase");
    let left = sim.read_file(&removed).unwrap_or_default();
    assert!(
        !left.windows(32).any(|w| w == &key[..]),
        "ann's key is still in quarantine"
    );
    assert!(sim.read_file(&saved).is_err(), "ann's torn record is still in torn/");
    assert!(all(&store)[1].is_erased());
    assert!(store.verify().unwrap().problems.is_empty());
    assert!(!store.shred("ann").unwrap());
}

/// A quarantined key record no longer at a whole record's step (the file
/// lost or gained bytes before it) is still found and removed by the shred.
#[test]
fn a_shred_finds_its_key_records_in_quarantine_at_any_offset() {
    let sim = plain_and_ann();
    let at = subjects::SUBJECTS_HEADER;
    let key = sim.read_file(&key_file()).unwrap()[at + 49..at + 81].to_vec();
    sim.flip_bit(&key_file(), (at + 82) as u64, 1).unwrap();
    let report = annal::repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    let removed = report.quarantine.unwrap().join(format!("{SUBJECTS_FILE}-removed.bin"));
    let mut shifted = b"xyz".to_vec();
    shifted.extend(sim.read_file(&removed).unwrap());
    sim.write_file(&removed, &shifted).unwrap();
    let store = open_sim(&sim);
    assert!(store.shred("ann").unwrap(), "the shred found nothing to erase");
    let left = sim.read_file(&removed).unwrap_or_default();
    assert!(
        !left.windows(32).any(|w| w == &key[..]),
        "ann's key is still in quarantine"
    );
    assert!(all(&store)[1].is_erased());
}

/// The erased copy of [`personal`]`(subject, n)`, as a forwarder delivers it.
fn arrived_erased(subject: &str, n: u64) -> EventData {
    let p = personal(subject, n);
    let mut e = EventData::json(p.event_type, "").already_erased();
    e.id = p.id;
    e.tags = p.tags;
    e
}

#[test]
fn an_event_appended_erased_reads_erased_verifies_clean_and_retries_idempotently() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    // A store that never named a subject: its key store is made for it.
    store
        .append("c-1", ExpectedVersion::NoStream, vec![EventData::json("Plain", "{}")])
        .unwrap();
    let first = store
        .append(
            "c-1",
            ExpectedVersion::Any,
            vec![arrived_erased("ann", 0), arrived_erased("ann", 1)],
        )
        .unwrap();
    append_personal(&store, "c-1", "bob", 0);
    let check = |store: &Store| {
        let read = all(store);
        assert_eq!(read.len(), 4);
        for e in &read[1..3] {
            assert_eq!(e.personal, Personal::Erased);
            assert!(e.data.is_empty() && e.metadata.is_empty());
            assert_eq!(e.tags, vec!["kind:customer".to_string()]);
        }
        assert_eq!(read[1].id, personal("ann", 0).id.unwrap());
        assert_eq!((read[1].revision, read[2].revision), (1, 2));
        assert_eq!(read[3].subject(), Some("bob"));
        assert_eq!(read[0].personal, Personal::Plain);
        assert!(store.verify().unwrap().problems.is_empty());
    };
    check(&store);
    // A retry (a forwarder delivering the batch again) is the same append.
    let again = store
        .append(
            "c-1",
            ExpectedVersion::Any,
            vec![arrived_erased("ann", 0), arrived_erased("ann", 1)],
        )
        .unwrap();
    assert_eq!(first, again);
    // The same id live, or erased with another type, is a conflict.
    for other in [personal("ann", 0), {
        let mut e = arrived_erased("ann", 0);
        e.event_type = "Other".into();
        e
    }] {
        assert!(matches!(
            store.append("c-1", ExpectedVersion::Any, vec![other]),
            Err(Error::IdempotencyConflict { .. })
        ));
    }
    drop(store);
    let store = open_sim(&sim);
    check(&store);
    // A shred of another subject rewrites the key store: it stays erased.
    store.shred("bob").unwrap();
    drop(store);
    let store = open_sim(&sim);
    let read = all(&store);
    assert!(read[1..].iter().all(|e| e.personal == Personal::Erased));
    assert!(store.verify().unwrap().problems.is_empty());
    // Retried after the reopen, from the log rather than the staged group.
    store
        .append("c-1", ExpectedVersion::Any, vec![arrived_erased("ann", 0)])
        .unwrap();
    assert_eq!(all(&store).len(), 4);
}

/// An event that arrived erased stays readable, as erased, when the key
/// store's record of its fixed key id is damaged or the file is gone (a copy
/// without it): its reads failed as "the key store lost it", and repair
/// could not mend them.
#[test]
fn an_event_that_arrived_erased_reads_erased_without_its_key_record() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    store
        .append("c-1", ExpectedVersion::NoStream, vec![arrived_erased("ann", 0)])
        .unwrap();
    store.close().unwrap();
    // The file's last record, the fixed id's, damaged: reported, read through.
    let len = sim.read_file(&key_file()).unwrap().len() as u64;
    sim.flip_bit(&key_file(), len - 2, 1).unwrap();
    let store = open_sim(&sim);
    assert_eq!(all(&store)[0].personal, Personal::Erased);
    assert!(
        !store.verify().unwrap().problems.is_empty(),
        "the damaged record is reported"
    );
    drop(store);
    annal::repair_with(Arc::new(sim.clone()), Path::new(DIR)).unwrap();
    let store = open_sim(&sim);
    assert_eq!(all(&store)[0].personal, Personal::Erased);
    store.close().unwrap();
    // The file gone.
    annal::Storage::remove(&sim, &key_file()).unwrap();
    let store = open_sim(&sim);
    assert_eq!(all(&store)[0].personal, Personal::Erased);
}

#[test]
fn an_erased_event_with_content_or_a_subject_is_refused() {
    let sim = SimStorage::new();
    let store = open_sim(&sim);
    for bad in [
        EventData::json("T", "{}").already_erased(),
        EventData::json("T", "").with_metadata("{}").already_erased(),
        EventData::json("T", "").with_subject("ann").already_erased(),
    ] {
        assert!(matches!(
            store.append("c-1", ExpectedVersion::Any, vec![bad]),
            Err(Error::InvalidInput(_))
        ));
    }
    assert!(all(&store).is_empty());
}
