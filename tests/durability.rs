//! What a clean close promises: after it, damage to or loss of any byte the
//! store had made durable is reported as corruption with its file and offset,
//! never cut as a torn tail; after a crash, only bytes nothing claims durable
//! may be cut, and every cut is recorded and reported.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::{Durability, Error, EventData, ExpectedVersion, Options, SimStorage, Store, StreamFrom};

fn options() -> Options {
    Options::default().no_compression().durability(Durability::Always)
}

fn events(n: usize, tag: &str) -> Vec<EventData> {
    (0..n)
        .map(|i| {
            EventData::json(
                "Big",
                format!(r#"{{"i":{i},"tag":"{tag}","pad":"{}"}}"#, "x".repeat(100)),
            )
        })
        .collect()
}

fn segment(dir: &Path) -> PathBuf {
    dir.join(format!("{:020}.seg", 0))
}

fn torn_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("torn")).map_or(0, |d| d.count())
}

/// Opening must fail with corruption in the segment at or before `at_most`; nothing is cut.
fn assert_refused(dir: &Path, at_most: u64) {
    match Store::open(dir, options()) {
        Err(Error::Corruption { file, offset, reason }) => {
            assert_eq!(file, segment(dir), "{reason}");
            assert!(offset <= at_most, "offset {offset} past {at_most}: {reason}");
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(s) => panic!(
            "a damaged store opened with {} events and {:?} cut",
            s.head_position(),
            s.torn_tails_at_open()
        ),
    }
    assert_eq!(torn_files(dir), 0, "bytes were cut into torn/");
}

#[test]
fn a_flipped_byte_in_the_only_append_after_a_clean_close_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store
        .append("big", ExpectedVersion::NoStream, events(2000, "a"))
        .unwrap();
    store.close().unwrap();
    let seg = segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[150_000] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    assert_refused(dir.path(), 150_000);
}

#[test]
fn damage_in_the_last_of_several_appends_after_a_clean_close_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    for i in 0..5 {
        store
            .append("s", ExpectedVersion::Any, events(3, &i.to_string()))
            .unwrap();
    }
    store.close().unwrap();
    let seg = segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    assert_refused(dir.path(), at as u64);
}

#[test]
fn a_segment_truncated_after_a_clean_close_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store
        .append("big", ExpectedVersion::NoStream, events(200, "a"))
        .unwrap();
    store.close().unwrap();
    let seg = segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5000)
        .unwrap();
    assert_refused(dir.path(), len - 5000);
}

#[test]
fn a_tail_overwritten_with_zeros_after_a_clean_close_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    for i in 0..4 {
        store
            .append("s", ExpectedVersion::Any, events(10, &i.to_string()))
            .unwrap();
    }
    store.close().unwrap();
    let seg = segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 700..] {
        *b = 0;
    }
    std::fs::write(&seg, &bytes).unwrap();
    assert_refused(dir.path(), (n - 700) as u64);
}

#[test]
fn a_missing_last_segment_after_a_clean_close_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options().segment_size(4096)).unwrap();
    for i in 0..20 {
        store
            .append("s", ExpectedVersion::Any, events(2, &i.to_string()))
            .unwrap();
    }
    store.close().unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() > 2);
    std::fs::remove_file(segs.last().unwrap()).unwrap();
    match Store::open(dir.path(), options().segment_size(4096)) {
        Err(Error::Corruption { file, reason, .. }) => {
            assert_eq!(&file, segs.last().unwrap(), "{reason}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|s| s.head_position())),
    }
}

#[test]
fn closing_again_with_nothing_new_writes_nothing_and_appends_after_reopen_are_covered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store.append("s", ExpectedVersion::NoStream, events(5, "a")).unwrap();
    store.close().unwrap();
    let mark = dir.path().join("durable.chk");
    let first = std::fs::read(&mark).unwrap();
    let modified = std::fs::metadata(&mark).unwrap().modified().unwrap();
    Store::open(dir.path(), options()).unwrap().close().unwrap();
    assert_eq!(std::fs::metadata(&mark).unwrap().modified().unwrap(), modified);
    // A second session's appends are covered by the next clean close.
    let store = Store::open(dir.path(), options()).unwrap();
    store.append("s", ExpectedVersion::Exact(4), events(5, "b")).unwrap();
    store.close().unwrap();
    assert_ne!(std::fs::read(&mark).unwrap(), first);
    let seg = segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 2;
    std::fs::write(&seg, &bytes).unwrap();
    assert_refused(dir.path(), at as u64);
}

const SIM: &str = "/data";

/// A crash leaves the last append's bytes damaged with nothing after them claiming
/// they were durable: recovery may cut them, but records the cut and keeps the bytes.
#[test]
fn a_torn_tail_after_a_crash_is_cut_and_reported() {
    let sim = SimStorage::new();
    let disk: Arc<SimStorage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), SIM, options()).unwrap();
    store.append("s", ExpectedVersion::NoStream, events(3, "a")).unwrap();
    store.close().unwrap();
    let store = Store::open_with(disk.clone(), SIM, options()).unwrap();
    store.append("s", ExpectedVersion::Exact(2), events(3, "b")).unwrap();
    // Power is cut without a close: the last append's bytes get damaged.
    std::mem::forget(store);
    sim.crash(1, false);
    let seg = Path::new(SIM).join(format!("{:020}.seg", 0));
    let len = sim.read_file(&seg).unwrap().len() as u64;
    let data_end = {
        let b = sim.read_file(&seg).unwrap();
        b.iter().rposition(|x| *x != 0).unwrap() as u64
    };
    sim.flip_bit(&seg, data_end - 20, 3).unwrap();
    assert!(len > data_end);
    let store = Store::open_with(disk.clone(), SIM, options()).unwrap();
    let cut = store.torn_tails_at_open().to_vec();
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert_eq!(cut[0].segment_base, 0);
    assert!(cut[0].bytes > 0);
    assert_eq!(annal::log::damage::torn_tails(&sim, Path::new(SIM)).unwrap(), cut);
    // verify lists it, and a torn tail is no damage.
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.torn_tails, cut);
    // What the first session closed with is all there.
    let read = store
        .read_stream("s", annal::Direction::Forward, StreamFrom::Start, 100)
        .unwrap();
    assert_eq!(read.len(), 3);
    store.close().unwrap();
    // The next open cuts nothing more and says so.
    let store = Store::open_with(disk, SIM, options()).unwrap();
    assert!(store.torn_tails_at_open().is_empty());
}

/// Power cut during the last append of a store holding a key store: the
/// torn tail's bytes damaged, so the next open would cut them.
fn crashed_with_a_torn_tail(sim: &SimStorage) -> PathBuf {
    let disk: Arc<SimStorage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), SIM, options()).unwrap();
    store.append("s", ExpectedVersion::NoStream, events(1, "a")).unwrap();
    let sealed = EventData::json("E", r#"{"n":"PII"}"#).with_subject("ann");
    store.append("c-1", ExpectedVersion::Any, vec![sealed]).unwrap();
    store.append("s", ExpectedVersion::Exact(0), events(3, "b")).unwrap();
    std::mem::forget(store);
    sim.crash(1, false);
    // The first sealed event started a new segment (of the version that holds them).
    let mut segs: Vec<String> = annal::Storage::list(sim, Path::new(SIM)).unwrap();
    segs.retain(|n| n.ends_with(".seg"));
    segs.sort();
    let seg = Path::new(SIM).join(segs.last().unwrap());
    let end = sim.read_file(&seg).unwrap().iter().rposition(|x| *x != 0).unwrap() as u64;
    sim.flip_bit(&seg, end - 20, 3).unwrap();
    seg
}

/// A crashed store whose next open cuts its torn tail and then fails (a
/// stray index file says the log goes on past its segments; it is removed
/// afterwards): the torn tails kept in `torn/`, one.
fn cut_by_a_failed_open(sim: &SimStorage) -> Vec<annal::log::damage::TornTail> {
    use annal::Storage;
    crashed_with_a_torn_tail(sim);
    let stray = Path::new(SIM).join(format!("{:020}.idx", 1_000_000));
    sim.write_file(&stray, b"an index of positions no segment holds")
        .unwrap();
    let disk: Arc<SimStorage> = Arc::new(sim.clone());
    assert!(Store::open_with(disk, SIM, options()).is_err_and(|e| e.is_corruption()));
    sim.remove(&stray).unwrap();
    let kept = annal::log::damage::torn_tails(sim, Path::new(SIM)).unwrap();
    assert_eq!(kept.len(), 1, "the failed open cut nothing");
    kept
}

/// An open that fails after cutting a torn tail (here: an index file says
/// the log goes on past its segments) leaves the cut listed: the next open
/// that succeeds reports it, and the one after reports nothing.
#[test]
fn a_cut_by_an_open_that_then_fails_is_reported_by_the_next_open() {
    let sim = SimStorage::new();
    let kept = cut_by_a_failed_open(&sim);
    let disk: Arc<SimStorage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), SIM, options()).unwrap();
    assert_eq!(store.torn_tails_at_open(), kept);
    store.close().unwrap();
    let store = Store::open_with(disk, SIM, options()).unwrap();
    assert!(store.torn_tails_at_open().is_empty());
}

/// An open that fails even later, after the recovery itself (here: the
/// stream metadata it loads is damaged), leaves its cut listed too: the list
/// is forgotten only once the whole open succeeded.
#[test]
fn a_cut_by_an_open_that_fails_loading_metadata_is_reported_by_the_next_open() {
    let sim = SimStorage::new();
    let disk: Arc<SimStorage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), SIM, options()).unwrap();
    store.append("s", ExpectedVersion::NoStream, events(1, "a")).unwrap();
    let meta = annal::StreamMetadata {
        max_count: Some(1_000_000_007),
        ..Default::default()
    };
    store.set_stream_metadata("s", meta).unwrap();
    let sealed = EventData::json("E", r#"{"n":"PII"}"#).with_subject("ann");
    store.append("c-1", ExpectedVersion::Any, vec![sealed]).unwrap();
    store.append("s", ExpectedVersion::Exact(0), events(3, "b")).unwrap();
    std::mem::forget(store);
    sim.crash(1, false);
    let mut segs: Vec<String> = annal::Storage::list(&sim, Path::new(SIM)).unwrap();
    segs.retain(|n| n.ends_with(".seg"));
    segs.sort();
    let (first, last) = (Path::new(SIM).join(&segs[0]), Path::new(SIM).join(segs.last().unwrap()));
    assert_ne!(first, last);
    let end = sim.read_file(&last).unwrap().iter().rposition(|x| *x != 0).unwrap() as u64;
    sim.flip_bit(&last, end - 20, 3).unwrap();
    // The metadata event, in the sealed first segment, rots.
    let good = sim.read_file(&first).unwrap();
    let at = good.windows(10).position(|w| w == b"1000000007").unwrap() as u64;
    sim.flip_bit(&first, at, 0).unwrap();
    assert!(Store::open_with(disk.clone(), SIM, options()).is_err_and(|e| e.is_corruption()));
    let kept = annal::log::damage::torn_tails(&sim, Path::new(SIM)).unwrap();
    assert_eq!(kept.len(), 1, "the failed open cut nothing");
    sim.write_file(&first, &good).unwrap();
    let store = Store::open_with(disk, SIM, options()).unwrap();
    assert_eq!(store.torn_tails_at_open(), kept);
}

/// A list of unreported cuts that rotted (a name no longer names a file of
/// `torn/`) cannot say which cuts are unreported: every file of `torn/` is
/// reported, rather than none.
#[test]
fn a_rotted_list_of_unreported_cuts_reports_every_cut() {
    let sim = SimStorage::new();
    let kept = cut_by_a_failed_open(&sim);
    let disk: Arc<SimStorage> = Arc::new(sim.clone());
    let list = Path::new(SIM).join("torn").join(annal::log::damage::UNREPORTED_FILE);
    let text = sim.read_file(&list).unwrap();
    // A digit of the name turns into another: a file that does not exist.
    let digit = text.iter().position(u8::is_ascii_digit).unwrap();
    let mut rotted = text.clone();
    rotted[digit] = if rotted[digit] == b'9' { b'8' } else { rotted[digit] + 1 };
    sim.write_file(&list, &rotted).unwrap();
    let store = Store::open_with(disk, SIM, options()).unwrap();
    assert_eq!(store.torn_tails_at_open(), kept);
}

/// A key store the open refuses is checked before anything is cut: the
/// refused open leaves the torn tail in place, and the open after the key
/// store is mended cuts and reports it.
#[test]
fn a_refused_key_store_stops_the_open_before_any_cut() {
    let sim = SimStorage::new();
    let seg = crashed_with_a_torn_tail(&sim);
    let keys = Path::new(SIM).join(annal::format::subjects::SUBJECTS_FILE);
    let good = sim.read_file(&keys).unwrap();
    let crashed = sim.read_file(&seg).unwrap();
    sim.flip_bit(&keys, 20, 0).unwrap();
    let disk: Arc<SimStorage> = Arc::new(sim.clone());
    assert!(Store::open_with(disk.clone(), SIM, options()).is_err_and(|e| e.is_corruption()));
    assert_eq!(
        sim.read_file(&seg).unwrap(),
        crashed,
        "the refused open cut the segment"
    );
    sim.write_file(&keys, &good).unwrap();
    let store = Store::open_with(disk, SIM, options()).unwrap();
    assert_eq!(store.torn_tails_at_open().len(), 1);
    assert_eq!(
        store.torn_tails_at_open(),
        annal::log::damage::torn_tails(&sim, Path::new(SIM)).unwrap()
    );
}

/// With `durable.chk` damaged, recovery cannot tell a torn tail from damage: it cuts nothing.
#[test]
fn a_damaged_durable_checkpoint_forbids_cutting() {
    let sim = SimStorage::new();
    let disk: Arc<SimStorage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), SIM, options()).unwrap();
    store.append("s", ExpectedVersion::NoStream, events(3, "a")).unwrap();
    store.close().unwrap();
    let mark = Path::new(SIM).join("durable.chk");
    sim.flip_bit(&mark, 30, 1).unwrap();
    // An intact tail still opens.
    let store = Store::open_with(disk.clone(), SIM, options()).unwrap();
    assert_eq!(store.head_position(), 3);
    let report = store.verify().unwrap();
    assert!(
        report.problems.iter().any(|p| p.file == mark),
        "verify must name the damaged durable.chk: {:?}",
        report.problems
    );
    store.append("s", ExpectedVersion::Exact(2), events(1, "b")).unwrap();
    std::mem::forget(store);
    sim.crash(2, false);
    let seg = Path::new(SIM).join(format!("{:020}.seg", 0));
    let b = sim.read_file(&seg).unwrap();
    let data_end = b.iter().rposition(|x| *x != 0).unwrap() as u64;
    sim.flip_bit(&seg, data_end - 5, 0).unwrap();
    match Store::open_with(disk, SIM, options()) {
        Err(Error::Corruption { file, reason, .. }) => {
            assert_eq!(file, seg);
            assert!(reason.contains("durable.chk"), "{reason}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|s| s.head_position())),
    }
}

/// After a truncation that a clean close proves, repair records the missing
/// positions as lost: they are never handed out again, and verify is clean.
#[test]
fn repair_after_a_truncation_keeps_the_lost_positions_out_of_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store
        .append("big", ExpectedVersion::NoStream, events(200, "a"))
        .unwrap();
    store
        .append("small", ExpectedVersion::NoStream, events(3, "b"))
        .unwrap();
    store.close().unwrap();
    let seg = segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 5000)
        .unwrap();
    assert_refused(dir.path(), len - 5000);
    let report = annal::repair(dir.path()).unwrap();
    assert!(report.lost_positions > 0, "{:?}", report.actions);
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(
        store.head_position(),
        203,
        "positions handed out before the close are kept"
    );
    assert!(store.verify().unwrap().is_clean());
    let r = store.append("new", ExpectedVersion::NoStream, events(1, "c")).unwrap();
    assert_eq!(r.position, 203);
}

/// An `.idx` left beside the active segment (from an older segment of the same
/// base) must not make a later open take that segment for a sealed one and
/// drop the appends made since: found by fuzzing `store_dir` (issue 11, item
/// 25a; `fuzz/regressions/store_dir/stale-idx-seal-inside-later-append-strict`).
#[test]
fn a_stale_index_of_the_active_segment_cannot_hide_an_acknowledged_append() {
    let sim = SimStorage::new();
    let disk: Arc<SimStorage> = Arc::new(sim.clone());
    let store = Store::open_with(disk.clone(), SIM, options()).unwrap();
    store.append("s", ExpectedVersion::NoStream, events(3, "a")).unwrap();
    store.close().unwrap();
    let seg = Path::new(SIM).join(format!("{:020}.seg", 0));
    let len = sim.read_file(&seg).unwrap().len() as u64;
    // An index for base 0 whose seal would lie 10 bytes into the next append:
    // ignored by the next open (its seal would lie past the segment's end)...
    let mut stale = annal::format::index::MemIndex::new(0, 64, Default::default());
    let lost = annal::format::record::LostView {
        first_position: 0,
        count: 1,
        removed: false,
        hidden: false,
        heads: vec![],
    };
    stale.push_lost(&lost, 64, len + 10);
    sim.write_file(
        &Path::new(SIM).join(format!("{:020}.idx", 0)),
        &stale.encode_file().unwrap(),
    )
    .unwrap();
    let store = Store::open_with(disk.clone(), SIM, options()).unwrap();
    assert_eq!(store.head_position(), 3);
    store.append("s", ExpectedVersion::Exact(2), events(1, "b")).unwrap();
    store.close().unwrap();
    assert!(sim.read_file(&seg).unwrap().len() as u64 >= len + 10 + 26);
    // ...but not by the one after the append, where no seal is at its end either.
    let store = Store::open_with(disk, SIM, options()).unwrap();
    assert_eq!(store.head_position(), 4);
    let read = store
        .read_stream("s", annal::Direction::Forward, StreamFrom::Start, 100)
        .unwrap();
    assert_eq!(read.len(), 4);
    assert!(store.verify().unwrap().problems.is_empty());
}

/// A store whose segment files are all gone is not opened as a new, empty store
/// (which would hand out the lost positions and revisions again) while an index
/// or a stream checkpoint says events existed.
#[test]
fn a_store_whose_segments_are_all_gone_is_not_reopened_empty() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options().segment_size(4096);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 0..20 {
        store
            .append("s", ExpectedVersion::Any, events(2, &i.to_string()))
            .unwrap();
    }
    store.close().unwrap();
    let files = |ext: &str| -> Vec<PathBuf> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect()
    };
    for p in files("seg") {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::remove_file(dir.path().join("durable.chk")).unwrap();
    match Store::open(dir.path(), opts.clone()) {
        Err(Error::Corruption { file, .. }) => assert_eq!(file.extension().unwrap(), "idx"),
        other => panic!("expected corruption, got {:?}", other.map(|s| s.head_position())),
    }
    for p in files("idx") {
        std::fs::remove_file(p).unwrap();
    }
    match Store::open(dir.path(), opts) {
        Err(Error::Corruption { file, .. }) => assert_eq!(file, dir.path().join("streams.chk")),
        other => panic!("expected corruption, got {:?}", other.map(|s| s.head_position())),
    }
}

/// ... and repair records the positions they held as lost, so that the store
/// opens again without handing them out a second time.
#[test]
fn repair_of_a_store_whose_segments_are_all_gone_keeps_their_positions() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options().segment_size(4096);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 0..20 {
        store
            .append("s", ExpectedVersion::Any, events(2, &i.to_string()))
            .unwrap();
    }
    store.close().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "seg") {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::remove_file(dir.path().join("durable.chk")).unwrap();
    assert!(Store::open(dir.path(), opts.clone()).is_err());
    let report = annal::repair(dir.path()).unwrap();
    assert!(report.lost_positions > 0, "{:?}", report.actions);
    let store = Store::open(dir.path(), opts).unwrap();
    let head = store.head_position();
    assert_eq!(head, report.lost_positions);
    assert!(head >= 30, "only {head} positions kept out of reuse");
    assert!(
        store.verify().unwrap().is_clean(),
        "{:?}",
        store.verify().unwrap().problems
    );
    let r = store.append("new", ExpectedVersion::NoStream, events(1, "x")).unwrap();
    assert_eq!(r.position, head);
}

/// The writer of a reopened store continues the active segment's checksum
/// from recovery's scan (it no longer reads the segment again): the claim a
/// second clean close writes must still match the segment's bytes, over
/// several closes with appends in between.
#[test]
fn clean_closes_after_reopens_leave_a_claim_that_matches_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let store = Store::open(dir.path(), options()).unwrap();
        store
            .append("s", ExpectedVersion::Any, events(5, &format!("r{round}")))
            .unwrap();
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), options()).unwrap();
    let all = store
        .read_stream("s", annal::Direction::Forward, StreamFrom::Start, usize::MAX)
        .unwrap();
    assert_eq!(all.len(), 20);
    assert_eq!(torn_files(dir.path()), 0);
}
