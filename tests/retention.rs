//! Scavenging under stream metadata and retention policies: space comes back,
//! surviving events keep their bytes and positions, and a crash at any moment
//! of a scavenge loses nothing.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use annal::{
    Direction, Durability, EventData, ExpectedVersion, Filter, GroupSettings, LogFrom, ManualClock, Options,
    RecordedEvent, RetentionPolicy, RetentionRule, SimStorage, Store, StreamFrom,
};

fn options() -> Options {
    Options::default()
        .no_compression()
        .durability(Durability::Always)
        .segment_size(8 * 1024)
}

fn fill(store: &Store, n: u64) {
    for i in 0..n {
        let t = if i % 5 == 0 { "Audit" } else { "Telemetry" };
        let mut e = EventData::json(t, format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(40)));
        if i % 5 == 0 {
            e = e.with_tag("audit:login");
        }
        store
            .append(&format!("s-{}", i % 4), ExpectedVersion::Any, vec![e])
            .unwrap();
    }
}

fn visible(store: &Store) -> BTreeMap<u64, RecordedEvent> {
    store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap()
        .into_iter()
        .map(|e| (e.position, e))
        .collect()
}

#[test]
fn deleted_streams_are_scavenged_and_everything_else_stays_byte_identical() {
    let sim = SimStorage::new();
    let store = Store::open_with(Arc::new(sim.clone()), "/s", options()).unwrap();
    fill(&store, 400);
    store.delete_stream("s-1", ExpectedVersion::Any, false).unwrap();
    fill(&store, 40);
    let before = visible(&store);
    let report = store.scavenge().unwrap();
    assert!(
        report.segments_rewritten > 0 && report.events_removed > 50,
        "{report:?}"
    );
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert_eq!(visible(&store), before, "reads are unchanged by scavenging");
    let v = store.verify().unwrap();
    assert!(v.is_clean(), "{:?}", v.problems);
    assert_eq!(v.removed, report.events_removed);
    // Nothing more to do the second time, and the result survives a reopen.
    assert_eq!(store.scavenge().unwrap().events_removed, 0);
    drop(store);
    let store = Store::open_with(Arc::new(sim.clone()), "/s", options()).unwrap();
    assert_eq!(visible(&store), before);
    assert_eq!(
        store.head_position(),
        440 + 1,
        "positions never move (the metadata event included)"
    );
}

#[test]
fn age_rules_keep_audit_events_and_drop_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetentionPolicy {
        max_age_ms: Some(3_600_000),
        rules: vec![RetentionRule::keep_tag_forever("audit:*")],
        ..Default::default()
    };
    let clock = Arc::new(ManualClock::new());
    let store = Store::open(dir.path(), options().retention(policy).clock(clock.clone())).unwrap();
    fill(&store, 300);
    // Nothing is an hour old yet; then, without waiting an hour, everything is.
    assert_eq!(store.scavenge().unwrap().events_removed, 0);
    clock.advance(Duration::from_secs(3601));
    let report = store.scavenge().unwrap();
    assert!(report.events_removed > 100, "{report:?}");
    let left = visible(&store);
    // Everything in sealed segments that is not audit went; the active segment is untouched.
    let active_from = store.head_position() - store.stats().active_events;
    for e in left.values() {
        assert!(
            e.tags.iter().any(|t| t.starts_with("audit:")) || e.position >= active_from,
            "{e:?}"
        );
    }
    assert!(
        left.values().filter(|e| e.event_type == "Audit").count() == 60,
        "every audit event stays"
    );
}

#[test]
fn a_size_budget_holds_during_a_long_append_run() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 64 * 1024;
    // The budget covers sealed data; the active segment and one segment of slack come on top.
    let ceiling = budget + 3 * 8 * 1024;
    let policy = RetentionPolicy {
        max_bytes: Some(budget),
        ..Default::default()
    };
    let store = Store::open(dir.path(), options().durability(Durability::Never).retention(policy)).unwrap();
    for _ in 0..30 {
        fill(&store, 200);
        store.scavenge().unwrap();
        let s = store.stats();
        assert!(s.segment_bytes <= ceiling, "{s:?}");
    }
    assert_eq!(store.head_position(), 6000);
    assert!(store.verify().unwrap().is_clean());
}

/// The background scavenger runs on its schedule, as the store's clock
/// tells it. An age rule, not a size budget: a seal that finds the sealed
/// data over a budget wakes the scavenger at once (whatever the schedule),
/// which raced this test's own check of the budget under load; nothing but
/// the schedule runs an age rule.
#[test]
fn the_background_scavenger_runs_on_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RetentionPolicy {
        max_age_ms: Some(3_600_000),
        interval_ms: Some(3_600_000),
        ..Default::default()
    };
    let clock = Arc::new(ManualClock::new());
    let store = Store::open(
        dir.path(),
        options()
            .durability(Durability::Never)
            .retention(policy)
            .clock(clock.clone()),
    )
    .unwrap();
    fill(&store, 2000);
    let before = visible(&store).len();
    assert_eq!(before, 2000);
    // Nothing is old enough yet, and no hour has passed: nothing goes.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(visible(&store).len(), 2000);
    // Two hours pass on the store's clock: with no call to scavenge, the
    // scheduled run removes what is older than an hour from sealed segments.
    clock.advance(Duration::from_secs(7200));
    let active_from = store.head_position() - store.stats().active_events;
    assert!(active_from > 1000, "{active_from}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Every event of a sealed segment goes; the active segment's stay.
    while !visible(&store).keys().all(|p| *p >= active_from) {
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduled scavenger never ran ({} of {before} events left)",
            visible(&store).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(visible(&store).len() as u64, store.head_position() - active_from);
    store.close().unwrap();
}

#[test]
fn a_crash_at_any_moment_of_a_scavenge_loses_nothing() {
    let setup = || {
        let sim = SimStorage::new();
        let store = Store::open_with(Arc::new(sim.clone()), "/c", options()).unwrap();
        fill(&store, 250);
        store.delete_stream("s-2", ExpectedVersion::Any, true).unwrap();
        let before = visible(&store);
        (sim, store, before)
    };
    // How many storage operations a whole scavenge takes: a crash is tried at each.
    let (sim, store, _) = setup();
    let ops_before = sim.mutating_ops();
    store.scavenge().unwrap();
    let total = sim.mutating_ops() - ops_before;
    assert!(total > 10);
    let mut points = 0;
    for k in 1..=total {
        for torn in [false, true] {
            let (sim, store, before) = setup();
            sim.crash_after_ops(k, k);
            assert!(store.scavenge().is_err(), "the power cut stops the scavenge");
            drop(store);
            sim.crash(k * 7 + u64::from(torn), torn);
            let store = Store::open_with(Arc::new(sim.clone()), "/c", options())
                .unwrap_or_else(|e| panic!("crash point {k} (torn {torn}): reopen failed: {e}"));
            assert_eq!(visible(&store), before, "crash point {k} torn {torn}");
            let v = store.verify().unwrap();
            assert!(v.is_clean(), "crash point {k}: {:?}", v.problems);
            // Scavenging again completes the job.
            store.scavenge().unwrap();
            assert_eq!(visible(&store), before);
            points += 1;
        }
    }
    println!("scavenge crash points tried: {points} (every one of {total} storage operations, dropped and torn)");
}

#[test]
fn a_nearly_full_disk_stops_appends_and_scavenging_frees_space() {
    let sim = SimStorage::new();
    let mut o = options().retention(RetentionPolicy {
        max_bytes: Some(16 * 1024),
        ..Default::default()
    });
    o.disk_reserve = 64 * 1024;
    let store = Store::open_with(Arc::new(sim.clone()), "/f", o).unwrap();
    fill(&store, 500);
    let before = store.head_position();
    // Leave less free space than the reserve: appends stop, cleanly.
    sim.set_free_space(Some(60 * 1024));
    let err = store
        .append("s-0", ExpectedVersion::Any, vec![EventData::json("Audit", "{}")])
        .unwrap_err();
    assert!(matches!(err, annal::Error::DiskFull { .. }), "{err}");
    assert_eq!(store.head_position(), before);
    // Scavenging works inside the reserve and gives space back.
    let report = store.scavenge().unwrap();
    assert!(report.bytes_after + 16 * 1024 < report.bytes_before, "{report:?}");
    store
        .append("s-0", ExpectedVersion::Any, vec![EventData::json("Audit", "{}")])
        .unwrap();
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_stream_scavenged_away_keeps_its_revisions_without_the_checkpoint() {
    // Every event of "old-*" expires and goes; the segments alone must still
    // say which revisions those streams handed out, so that a store whose
    // stream checkpoint is lost never starts them over.
    let sim = SimStorage::new();
    let policy = RetentionPolicy {
        max_age_ms: Some(3_600_000),
        ..Default::default()
    };
    let clock = Arc::new(ManualClock::new());
    let opts = || options().retention(policy.clone()).clock(clock.clone());
    let store = Store::open_with(Arc::new(sim.clone()), "/h", opts()).unwrap();
    for i in 0..40u64 {
        let e = EventData::json("Old", format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(200)));
        store
            .append(&format!("old-{}", i % 3), ExpectedVersion::Any, vec![e])
            .unwrap();
    }
    let before: Vec<_> = (0..3)
        .map(|i| store.stream_info(&format!("old-{i}")).unwrap().last_revision)
        .collect();
    clock.advance(Duration::from_secs(3601));
    // Enough new events to seal the segments holding the old ones.
    fill(&store, 200);
    let report = store.scavenge().unwrap();
    assert!(report.events_removed >= 40, "{report:?}");
    for (i, revision) in before.iter().enumerate() {
        let stream = format!("old-{i}");
        assert!(
            store
                .read_stream(&stream, Direction::Forward, annal::StreamFrom::Start, 10)
                .map_or(true, |v| v.is_empty())
        );
        assert_eq!(store.stream_info(&stream).map(|s| s.last_revision), Some(*revision));
    }
    assert!(store.verify().unwrap().is_clean());
    store.close().unwrap();
    // The rewritten segments holding heads say so in their header (version 2).
    let versions: Vec<u32> = annal::Storage::list(&sim, std::path::Path::new("/h"))
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".seg"))
        .map(|n| {
            let b = sim.read_file(&std::path::Path::new("/h").join(n)).unwrap();
            u32::from_le_bytes(b[8..12].try_into().unwrap())
        })
        .collect();
    assert!(versions.contains(&2) && versions.contains(&1), "{versions:?}");

    annal::Storage::remove(&sim, std::path::Path::new("/h/streams.chk")).unwrap();
    let store = Store::open_with(Arc::new(sim.clone()), "/h", opts()).unwrap();
    for (i, revision) in before.iter().enumerate() {
        let stream = format!("old-{i}");
        assert_eq!(
            store.stream_info(&stream).map(|s| s.last_revision),
            Some(*revision),
            "{stream}"
        );
        let next = store
            .append(&stream, ExpectedVersion::Any, vec![EventData::json("New", "{}")])
            .unwrap();
        assert_eq!(next.first_revision, revision + 1, "{stream}");
    }
    assert!(store.verify().unwrap().is_clean());
}

/// A clock that counts how often the time of day is asked for: each scavenge
/// asks once, and nothing else runs while the store is idle.
#[derive(Debug, Default)]
struct CountingClock {
    asked: std::sync::atomic::AtomicU64,
}

impl annal::Clock for CountingClock {
    fn now_micros(&self) -> i64 {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        annal::SystemClock.now_micros()
    }
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
}

/// A store kept over its disk budget by a rule that keeps every event
/// forever: a seal wakes the background scavenger, which can free nothing;
/// it must then wait for its period (an hour here) or the next seal, not
/// rescan the whole store every tick. A review found it running every 100 ms.
#[test]
fn a_scavenge_that_cannot_hold_the_budget_does_not_wake_the_next_one() {
    let clock = Arc::new(CountingClock::default());
    let policy = RetentionPolicy {
        max_bytes: Some(16 * 1024),
        interval_ms: Some(3_600_000),
        rules: vec![RetentionRule::keep_type_forever("*")],
        ..RetentionPolicy::default()
    };
    let store = Store::open_with(
        Arc::new(SimStorage::new()),
        "/data",
        options().retention(policy).clock(clock.clone()),
    )
    .unwrap();
    fill(&store, 600);
    assert!(store.segment_count() >= 4, "{}", store.segment_count());
    // Let the wake of the last seal run its scavenge, then count while idle.
    std::thread::sleep(Duration::from_millis(500));
    let before = clock.asked.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500));
    let after = clock.asked.load(std::sync::atomic::Ordering::Relaxed);
    assert!(after - before <= 1, "{} scavenges in 1.5 s of idleness", after - before);
    // Nothing was removed: every event is kept forever.
    assert_eq!(visible(&store).len(), 600);
}

/// Events lost to damage (a repair's lost frame) stay lost when a scavenge
/// rewrites their segment beside events it removes on purpose: verify keeps
/// counting them as lost, where the rewrite folded them into one "removed"
/// run and the record of the damage disappeared.
#[test]
fn a_scavenge_keeps_the_record_of_events_lost_to_damage() {
    let sim = Arc::new(SimStorage::new());
    let dir = std::path::Path::new("/lost");
    let store = Store::open_with(sim.clone(), dir, options()).unwrap();
    for i in 0..300 {
        let s = if i % 2 == 0 { "a-1" } else { "b-1" };
        let e = EventData::json("T", format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(200)));
        store.append(s, ExpectedVersion::Any, vec![e]).unwrap();
    }
    store.close().unwrap();
    let mut segs: Vec<String> = annal::Storage::list(&*sim, dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    segs.sort();
    let seg = dir.join(&segs[1]);
    let bytes = sim.read_file(&seg).unwrap();
    let at = bytes.windows(4).position(|w| w == b"{\"i\"").unwrap() as u64 + 2;
    sim.flip_bit(&seg, at, 2).unwrap();
    let repaired = annal::repair_with(sim.clone(), dir).unwrap();
    assert_eq!(repaired.lost_positions, 1, "{:?}", repaired.actions);

    let store = Store::open_with(sim.clone(), dir, options()).unwrap();
    let before = store.verify().unwrap();
    assert_eq!((before.lost, before.removed), (1, 0));
    store.delete_stream("b-1", ExpectedVersion::Any, false).unwrap();
    let scavenged = store.scavenge().unwrap();
    assert!(scavenged.events_removed > 100);
    let after = store.verify().unwrap();
    assert!(after.is_clean(), "{:?}", after.problems);
    assert_eq!(after.lost, 1, "the record of the damaged event became a removal");
    assert_eq!(after.removed, scavenged.events_removed);
    // And so after reopening (the rewrite is what the segments say).
    drop(store);
    let store = Store::open_with(sim.clone(), dir, options()).unwrap();
    assert_eq!(store.verify().unwrap().lost, 1);
}

/// Options of a store with 64 KiB segments and a retention of one hour,
/// on `clock`, syncing nothing (these tests scavenge, they do not crash).
fn hour_old_retention(clock: &Arc<ManualClock>) -> Options {
    options()
        .durability(Durability::Never)
        .segment_size(64 * 1024)
        .retention(RetentionPolicy {
            max_age_ms: Some(3_600_000),
            ..Default::default()
        })
        .clock(clock.clone())
}

/// Only the last readable checkpoint of a group is ever read: a scavenge
/// removes all but the last two (a group saving after each ack appended one per event, kept
/// for good), and the group resumes where it was after a reopen.
#[test]
fn old_group_checkpoints_are_scavenged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let options = || hour_old_retention(&clock);
    let settings = GroupSettings {
        checkpoint_every: 1,
        ..GroupSettings::all()
    };
    let checkpoints = |store: &Store| {
        store
            .read_stream("$group-g-checkpoint", Direction::Forward, StreamFrom::Start, usize::MAX)
            .unwrap()
            .len()
    };
    let saved = {
        let store = Store::open(dir.path(), options()).unwrap();
        let group = store.create_group("g", settings).unwrap();
        let c = group.consumer("c");
        for i in 0..2000 {
            store
                .append("s", ExpectedVersion::Any, vec![EventData::json("E", format!("{i}"))])
                .unwrap();
            let d = c.fetch(1, Duration::ZERO).unwrap();
            assert_eq!(d.len(), 1);
            c.ack(&[d[0].event.id]).unwrap();
        }
        assert!(checkpoints(&store) >= 2000);
        fill(&store, 2000);
        clock.advance(Duration::from_secs(24 * 3600));
        store.scavenge().unwrap();
        let left = checkpoints(&store);
        assert!(left < 10, "{left} checkpoints kept");
        group.info().saved_checkpoint
    };
    let store = Store::open(dir.path(), options()).unwrap();
    let group = store.group("g").unwrap();
    assert_eq!(group.info().checkpoint, saved);
    let next = group.consumer("c").fetch(1, Duration::ZERO).unwrap();
    assert_eq!(next.len(), 1);
    assert!(
        next[0].event.position >= saved && next[0].event.stream.starts_with("s-"),
        "{:?}",
        next[0].event
    );
}

/// `max_events` counts the events the store holds: positions whose events
/// are already gone (a deleted stream scavenged away) do not count, so the
/// events that stay under the budget are never expired for them.
#[test]
fn max_events_counts_events_not_positions() {
    let dir = tempfile::tempdir().unwrap();
    let options = || options().durability(Durability::Never).segment_size(64 * 1024);
    let batch = |n: u64| {
        (0..n)
            .map(|i| EventData::json("E", format!(r#"{{"i":{i}}}"#)))
            .collect::<Vec<_>>()
    };
    {
        let store = Store::open(dir.path(), options()).unwrap();
        for _ in 0..20 {
            store.append("keep", ExpectedVersion::Any, batch(100)).unwrap();
        }
        for _ in 0..100 {
            store.append("junk", ExpectedVersion::Any, batch(100)).unwrap();
        }
        store.delete_stream("junk", ExpectedVersion::Any, false).unwrap();
        let report = store.scavenge().unwrap();
        assert!(report.events_removed > 9000, "{report:?}");
        store.close().unwrap();
    }
    let policy = RetentionPolicy {
        max_events: Some(3000),
        ..Default::default()
    };
    let store = Store::open(dir.path(), options().retention(policy)).unwrap();
    let report = store.scavenge().unwrap();
    let kept = store
        .read_stream("keep", Direction::Forward, StreamFrom::Start, usize::MAX)
        .unwrap()
        .len();
    assert_eq!(kept, 2000, "{report:?}");
}

/// A group whose latest checkpoint was lost to damage (then repair) after
/// scavenging removed the older ones resumes from the one before, which
/// scavenging keeps: it delivers an event again, and never jumps past
/// events it had not delivered (from the head, with its start at the end).
#[test]
fn a_group_whose_latest_checkpoint_is_lost_resumes_from_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let options = || hour_old_retention(&clock);
    let settings = GroupSettings {
        checkpoint_every: 1,
        start: annal::SubscribeFrom::End,
        ..GroupSettings::all()
    };
    let (saved, last) = {
        let store = Store::open(dir.path(), options()).unwrap();
        let group = store.create_group("g", settings).unwrap();
        let c = group.consumer("c");
        for i in 0..300 {
            store
                .append("s", ExpectedVersion::Any, vec![EventData::json("E", format!("{i}"))])
                .unwrap();
            let d = c.fetch(1, Duration::ZERO).unwrap();
            c.ack(&[d[0].event.id]).unwrap();
        }
        fill(&store, 2000);
        clock.advance(Duration::from_secs(24 * 3600));
        store.scavenge().unwrap();
        let mut last = store
            .read_stream("$group-g-checkpoint", Direction::Backward, StreamFrom::End, 1)
            .unwrap();
        (group.info().saved_checkpoint, last.pop().unwrap())
    };
    // The latest checkpoint's frame rots; repair records its position lost.
    let mut hit = false;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let mut bytes = std::fs::read(&path).unwrap();
            if let Some(at) = bytes.windows(last.data.len()).position(|w| w == &last.data[..]) {
                bytes[at + last.data.len() / 2] ^= 0x20;
                std::fs::write(&path, bytes).unwrap();
                hit = true;
            }
        }
    }
    assert!(hit, "the checkpoint's bytes were not found");
    annal::repair(dir.path()).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let resumed = store.group("g").unwrap().info().checkpoint;
    assert!(
        resumed <= saved && resumed + 5 >= saved,
        "resumed at {resumed}, saved {saved}"
    );
}

/// A second scavenge of a segment folds the removed frames the first one
/// wrote into its own. It took a frame's kind from its last position alone
/// (the others share its offset and have an empty range), so the positions
/// before it joined the run before them: a frame of deleted streams' events
/// lost its mark that reads no longer returned them, and the stream heads
/// it held at those positions were cut out of the new frame. A store that
/// rebuilds its stream states from the segments then handed the revisions
/// out again.
#[test]
fn a_second_scavenge_keeps_the_frames_it_folds_whole() {
    let sim = SimStorage::new();
    let store = Store::open_with(Arc::new(sim.clone()), "/f", options()).unwrap();
    for stream in ["x", "z", "y"] {
        store
            .append(stream, ExpectedVersion::Any, vec![EventData::json("A", "{}")])
            .unwrap();
    }
    fill(&store, 200);
    for stream in ["x", "z"] {
        store.delete_stream(stream, ExpectedVersion::Any, false).unwrap();
    }
    assert_eq!(store.scavenge().unwrap().events_removed, 2);
    store.delete_stream("y", ExpectedVersion::Any, false).unwrap();
    assert_eq!(store.scavenge().unwrap().events_removed, 1);
    store.close().unwrap();
    // The stream states come from the segments alone.
    let dir = std::path::Path::new("/f");
    for name in annal::Storage::list(&sim, dir).unwrap() {
        if name.ends_with(".idx") || name == "streams.chk" || name == "active.idc" {
            annal::Storage::remove(&sim, &dir.join(&name)).unwrap();
        }
    }
    let store = Store::open_with(Arc::new(sim.clone()), "/f", options()).unwrap();
    for stream in ["x", "z", "y"] {
        assert_eq!(store.stream_info(stream).map(|s| s.last_revision), Some(0), "{stream}");
        let next = store
            .append(stream, ExpectedVersion::Any, vec![EventData::json("New", "{}")])
            .unwrap();
        assert_eq!(next.first_revision, 1, "{stream}");
    }
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.removed, 3, "{report:?}");
}
