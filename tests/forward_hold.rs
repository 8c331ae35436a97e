//! Retention holds of forwarders that are not running, on the simulated disk:
//! a forwarder with `retention = "wait"` holds from its saved checkpoint after
//! it stopped and across a reopen, a registered forwarder holds before it
//! first runs, and forgetting a forwarder drops its hold.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use annal::{
    Batch, Direction, Durability, EventData, ExpectedVersion, Filter, ForwardSettings, ForwardTarget, Forwarder,
    LogFrom, Options, RecordedEvent, RetentionMode, RetentionPolicy, SimStorage, Store, TargetError, WhenFull,
    forget_forwarder, register_forwarder, saved_checkpoint, saved_forwarders,
};
use parking_lot::Mutex;

const DIR: &str = "/hold";

/// A target that takes every batch.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<RecordedEvent>>>);

impl ForwardTarget for Sink {
    fn describe(&self) -> String {
        "sink".into()
    }
    fn load_checkpoint(&mut self, _forwarder: &str) -> Result<Option<u64>, TargetError> {
        Ok(None)
    }
    fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), TargetError> {
        self.0.lock().extend(batch.events.iter().cloned());
        Ok(())
    }
}

fn open(sim: &SimStorage) -> Arc<Store> {
    let options = Options::default()
        .durability(Durability::Always)
        .segment_size(8 * 1024)
        .retention(RetentionPolicy {
            max_events: Some(50),
            ..RetentionPolicy::default()
        });
    Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options).unwrap())
}

fn close(store: Arc<Store>) {
    Arc::try_unwrap(store).ok().unwrap().close().unwrap();
}

fn settings() -> ForwardSettings {
    ForwardSettings {
        batch_size: 50,
        idle_wait: Duration::from_millis(1),
        checkpoint_interval: Duration::ZERO,
        ..ForwardSettings::default()
    }
}

fn fill(store: &Store, from: usize, n: usize) {
    for i in from..from + n {
        store
            .append(
                &format!("s-{}", i % 5),
                ExpectedVersion::Any,
                vec![EventData::json("A", format!("{{\"i\":{i}}}"))],
            )
            .unwrap();
    }
}

/// Positions of the user events the store still holds.
fn user_positions(store: &Store) -> Vec<u64> {
    store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap()
        .into_iter()
        .filter(|e| !e.stream.starts_with('$'))
        .map(|e| e.position)
        .collect()
}

#[test]
fn a_stopped_waiting_forwarder_holds_from_its_saved_checkpoint_across_a_reopen() {
    let sim = SimStorage::new();
    let store = open(&sim);
    fill(&store, 0, 100);
    let sink = Sink::default();
    let mut f = Forwarder::new(store.clone(), "w", settings(), Box::new(sink.clone())).unwrap();
    f.run(&AtomicBool::new(false), true).unwrap();
    drop(f);
    // What it saved (the cursor may have moved past its own checkpoint events since).
    let checkpoint = saved_checkpoint(&store, "w").unwrap().unwrap();
    assert!(checkpoint >= 100);
    fill(&store, 100, 600);
    close(store);
    // No forwarder runs: the store alone holds from the checkpoint it saved.
    let store = open(&sim);
    assert_eq!(store.stats().retention_held_by, vec![("w".to_string(), checkpoint)]);
    let before = user_positions(&store);
    let report = store.scavenge().unwrap();
    assert!(report.events_kept_for_forwarding > 0, "{report:?}");
    assert_eq!(report.held_by.as_deref(), Some("w"));
    let after = user_positions(&store);
    let undelivered: Vec<u64> = before.iter().copied().filter(|p| *p >= checkpoint).collect();
    assert_eq!(
        after.iter().copied().filter(|p| *p >= checkpoint).collect::<Vec<_>>(),
        undelivered,
        "every undelivered event stays"
    );
    // The forwarder resumes with nothing skipped.
    let mut f = Forwarder::new(store.clone(), "w", settings(), Box::new(sink.clone())).unwrap();
    f.run(&AtomicBool::new(false), true).unwrap();
    assert_eq!(f.status().skipped, 0);
    assert_eq!(sink.0.lock().len(), 700);
    drop(f);
    close(store);
}

#[test]
fn a_registered_forwarder_holds_before_it_first_runs() {
    let sim = SimStorage::new();
    let store = open(&sim);
    fill(&store, 0, 20);
    assert_eq!(register_forwarder(&store, "later", &settings()).unwrap(), 0);
    // Registering again changes nothing.
    let head = store.head_position();
    assert_eq!(register_forwarder(&store, "later", &settings()).unwrap(), 0);
    assert_eq!(store.head_position(), head);
    fill(&store, 20, 600);
    close(store);
    let store = open(&sim);
    let report = store.scavenge().unwrap();
    assert_eq!(report.events_removed, 0, "{report:?}");
    assert_eq!(user_positions(&store).len(), 620);
    close(store);
}

#[test]
fn forgetting_a_forwarder_drops_its_hold_and_ignore_never_holds() {
    let sim = SimStorage::new();
    let store = open(&sim);
    register_forwarder(&store, "gone", &settings()).unwrap();
    let ignoring = ForwardSettings {
        retention: RetentionMode::Ignore,
        ..settings()
    };
    register_forwarder(&store, "free", &ignoring).unwrap();
    fill(&store, 0, 600);
    assert!(forget_forwarder(&store, "gone").unwrap());
    assert!(!forget_forwarder(&store, "never-was").unwrap());
    assert!(store.stats().retention_held_by.is_empty());
    close(store);
    let store = open(&sim);
    assert!(store.stats().retention_held_by.is_empty());
    // A new forwarder that ignores retention records nothing: it has no hold.
    let saved = saved_forwarders(&store).unwrap();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(saved[0].0, "gone");
    assert!(!saved[0].1.holds_retention, "{saved:?}");
    let report = store.scavenge().unwrap();
    assert!(report.events_removed > 0, "{report:?}");
    // A forwarder of that name that runs again with `wait` holds again.
    let mut f = Forwarder::new(store.clone(), "gone", settings(), Box::new(Sink::default())).unwrap();
    f.run(&AtomicBool::new(false), true).unwrap();
    drop(f);
    assert_eq!(store.stats().retention_held_by.len(), 1);
    close(store);
}

#[test]
fn stop_appends_refuses_appends_while_undelivered_events_are_over_the_budget() {
    let sim = SimStorage::new();
    let options = Options::default()
        .durability(Durability::Always)
        .segment_size(8 * 1024)
        .retention(RetentionPolicy {
            max_bytes: Some(16 * 1024),
            when_full: WhenFull::StopAppends,
            ..RetentionPolicy::default()
        });
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options).unwrap());
    register_forwarder(&store, "slow", &settings()).unwrap();
    fill(&store, 0, 600);
    assert!(store.segment_count() > 3);
    // Scavenging cannot hold the budget without dropping what "slow" has not delivered.
    let report = store.scavenge().unwrap();
    assert_eq!(report.events_removed, 0, "{report:?}");
    let stats = store.stats();
    assert!(
        stats.appends_stopped_for_budget && stats.budget_exceeded_by_holds(),
        "{stats:?}"
    );
    let refused = store
        .append("s-0", ExpectedVersion::Any, vec![EventData::json("A", "{}")])
        .unwrap_err();
    assert!(
        matches!(refused, annal::Error::BudgetFull { ref forwarder, .. } if forwarder == "slow"),
        "{refused}"
    );
    assert!(refused.to_string().contains("stop-appends"), "{refused}");
    // The forwarder delivers (its own records are not refused) and appends resume.
    let sink = Sink::default();
    let mut f = Forwarder::new(store.clone(), "slow", settings(), Box::new(sink.clone())).unwrap();
    f.run(&AtomicBool::new(false), true).unwrap();
    assert_eq!(sink.0.lock().len(), 600);
    assert!(!store.stats().appends_stopped_for_budget);
    store
        .append("s-0", ExpectedVersion::Any, vec![EventData::json("A", "{}")])
        .unwrap();
    drop(f);
    close(store);
}
