//! The forwarding core against a fake target on the simulated disk: order,
//! filters, failures and backoff, poison events, crashes between a delivery
//! and its checkpoint, target-side checkpoints, and retention holds and gaps.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use annal::{
    Batch, Direction, Durability, EventData, ExpectedVersion, Filter, ForwardSettings, ForwardStart, ForwardState,
    ForwardTarget, Forwarder, Options, ParkedRecord, RecordedEvent, RetentionMode, RetentionPolicy, SimStorage, Step,
    Store, StreamFrom, TargetError, forward_checkpoint_stream, forward_parked_stream, saved_checkpoint,
};
use parking_lot::Mutex;

const DIR: &str = "/fwd";

fn options() -> Options {
    Options::default().durability(Durability::Always).segment_size(8 * 1024)
}

/// What the fake target holds and how it misbehaves.
#[derive(Default)]
struct Remote {
    events: Vec<RecordedEvent>,
    ids: HashSet<uuid::Uuid>,
    /// Deliveries that were retries of events already held (dropped by id).
    duplicates_dropped: u64,
    /// Fail this many next deliveries as unavailable.
    fail_next: u32,
    /// Fail every delivery as refused while set.
    refuse: bool,
    /// Reject events of this type as poison.
    reject_type: Option<String>,
    /// Control characters added to the rejection's reason (six bytes each in JSON).
    reason_pad: usize,
    /// A checkpoint kept with the events (for a transactional target).
    checkpoint: Option<u64>,
    deliveries: u64,
}

#[derive(Clone)]
struct Fake {
    remote: Arc<Mutex<Remote>>,
    transactional: bool,
}

impl Fake {
    fn new(transactional: bool) -> Self {
        Fake {
            remote: Arc::new(Mutex::new(Remote::default())),
            transactional,
        }
    }
}

impl ForwardTarget for Fake {
    fn describe(&self) -> String {
        "fake".into()
    }

    fn load_checkpoint(&mut self, _forwarder: &str) -> Result<Option<u64>, TargetError> {
        let r = self.remote.lock();
        if r.refuse {
            return Err(TargetError::Refused("wrong password".into()));
        }
        Ok(if self.transactional { r.checkpoint } else { None })
    }

    fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), TargetError> {
        let mut r = self.remote.lock();
        r.deliveries += 1;
        if r.refuse {
            return Err(TargetError::Refused("wrong password".into()));
        }
        if r.fail_next > 0 {
            r.fail_next -= 1;
            return Err(TargetError::Unavailable("connection refused".into()));
        }
        if let Some(t) = &r.reject_type
            && let Some(index) = batch.events.iter().position(|e| &e.event_type == t)
        {
            return Err(TargetError::Rejected {
                index,
                reason: format!("type {t} is not allowed{}", "\u{1}".repeat(r.reason_pad)),
            });
        }
        assert!(batch.events.len() <= batch.max_in_flight);
        for e in batch.events {
            if r.ids.insert(e.id) {
                r.events.push(e.clone());
            } else {
                r.duplicates_dropped += 1;
            }
        }
        if self.transactional {
            r.checkpoint = Some(batch.next_position);
        }
        Ok(())
    }

    fn stores_checkpoint(&self) -> bool {
        self.transactional
    }
}

fn settings() -> ForwardSettings {
    ForwardSettings::default()
        .batch_size(7)
        .backoff_initial(Duration::from_millis(1))
        .backoff_max(Duration::from_millis(8))
        .idle_wait(Duration::from_millis(1))
        .checkpoint_interval(Duration::ZERO)
}

/// Appends `n` events spread over 5 streams, every third of type `B`.
fn fill(store: &Store, from: usize, n: usize) {
    for i in from..from + n {
        let t = if i % 3 == 0 { "B" } else { "A" };
        store
            .append(
                &format!("s-{}", i % 5),
                ExpectedVersion::Any,
                vec![EventData::json(t, format!("{{\"i\":{i}}}")).with_tag(format!("n:{i}"))],
            )
            .unwrap();
    }
}

fn run_once(f: &mut Forwarder) {
    f.run(&AtomicBool::new(false), true).unwrap();
}

/// Every user event of the store, in log order.
fn source(store: &Store, filter: &Filter) -> Vec<RecordedEvent> {
    store
        .read_all(Direction::Forward, annal::LogFrom::Start, usize::MAX, filter)
        .unwrap()
        .into_iter()
        .filter(|e| !e.stream.starts_with('$'))
        .collect()
}

/// The target holds exactly `expected`, each once, and each stream in order.
fn assert_exactly(remote: &Remote, expected: &[RecordedEvent]) {
    let got: Vec<(uuid::Uuid, u64)> = remote.events.iter().map(|e| (e.id, e.position)).collect();
    let want: Vec<(uuid::Uuid, u64)> = expected.iter().map(|e| (e.id, e.position)).collect();
    let mut sorted = got.clone();
    sorted.sort_by_key(|(_, p)| *p);
    assert_eq!(sorted, want, "the target holds every event once");
    let mut last: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for e in &remote.events {
        if let Some(prev) = last.insert(&e.stream, e.revision) {
            assert!(prev < e.revision, "stream {} out of order", e.stream);
        }
    }
}

#[test]
fn forwards_every_matching_event_in_order_and_resumes_from_its_checkpoint() {
    let sim = SimStorage::new();
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    fill(&store, 0, 40);
    let fake = Fake::new(false);
    let filter = Filter::all().with_type("A");
    let mut f = Forwarder::new(
        store.clone(),
        "to-b",
        settings().filter(filter.clone()),
        Box::new(fake.clone()),
    )
    .unwrap();
    run_once(&mut f);
    assert_exactly(&fake.remote.lock(), &source(&store, &filter));
    let status = f.status();
    assert_eq!(status.state, ForwardState::Stopped);
    assert_eq!(status.checkpoint, store.head_position());
    assert_eq!(status.lag_events, 0);
    assert_eq!(status.delivered_events, source(&store, &filter).len() as u64);
    drop(f);
    // Later events, after a restart: only those are delivered.
    fill(&store, 40, 20);
    let before = fake.remote.lock().deliveries;
    let mut f = Forwarder::new(store.clone(), "to-b", settings(), Box::new(fake.clone())).unwrap();
    run_once(&mut f);
    let r = fake.remote.lock();
    assert_eq!(r.duplicates_dropped, 0, "nothing is delivered twice");
    assert!(r.deliveries > before);
    // The checkpoint stream itself is never forwarded.
    assert!(r.events.iter().all(|e| !e.stream.starts_with('$')));
    // Saved past the last event delivered (the checkpoint events after it need not be).
    let last = source(&store, &Filter::all()).last().unwrap().position;
    assert!(saved_checkpoint(&store, "to-b").unwrap().unwrap() > last);
}

#[test]
fn a_target_that_fails_is_retried_with_backoff_and_loses_nothing() {
    let sim = SimStorage::new();
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    fill(&store, 0, 30);
    let fake = Fake::new(false);
    fake.remote.lock().fail_next = 5;
    let f = Forwarder::new(store.clone(), "retry", settings(), Box::new(fake.clone())).unwrap();
    let handle = f.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.remote.lock().events.len() < 30 {
        assert!(Instant::now() < deadline, "the forwarder never caught up");
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = handle.status();
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("connection refused"),
        "{status:?}"
    );
    assert_eq!(status.failures, 0, "a success resets the failure count");
    handle.stop().unwrap();
    assert_exactly(&fake.remote.lock(), &source(&store, &Filter::all()));
    assert_eq!(fake.remote.lock().deliveries, 5 + 30u64.div_ceil(7));
}

#[test]
fn backoff_doubles_with_jitter_up_to_its_cap() {
    let sim = SimStorage::new();
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    let s = ForwardSettings::default()
        .backoff_initial(Duration::from_millis(100))
        .backoff_max(Duration::from_secs(2));
    let f = Forwarder::new(store, "b", s, Box::new(Fake::new(false))).unwrap();
    for (failures, full) in [(1, 100), (2, 200), (3, 400), (5, 1600), (6, 2000), (40, 2000)] {
        let d = f.backoff(failures, false);
        let full = Duration::from_millis(full);
        assert!(
            d >= full / 2 && d <= full,
            "failure {failures}: {d:?} outside {full:?}/2..={full:?}"
        );
    }
    assert_eq!(
        f.backoff(1, true),
        Duration::from_secs(2),
        "a refusal waits the longest"
    );
}

#[test]
fn a_refusing_target_is_an_error_state_and_loses_nothing() {
    let sim = SimStorage::new();
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    fill(&store, 0, 10);
    let fake = Fake::new(false);
    fake.remote.lock().refuse = true;
    let mut f = Forwarder::new(store.clone(), "refused", settings(), Box::new(fake.clone())).unwrap();
    let err = f.run(&AtomicBool::new(false), true).unwrap_err();
    assert!(err.to_string().contains("wrong password"), "{err}");
    assert_eq!(f.checkpoint(), 0);
    let handle = f.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.status().state != ForwardState::Error {
        assert!(Instant::now() < deadline, "never reported the error state");
        std::thread::sleep(Duration::from_millis(1));
    }
    fake.remote.lock().refuse = false;
    while fake.remote.lock().events.len() < 10 {
        assert!(Instant::now() < deadline, "never recovered");
        std::thread::sleep(Duration::from_millis(1));
    }
    handle.stop().unwrap();
    assert_exactly(&fake.remote.lock(), &source(&store, &Filter::all()));
}

/// A target's long reason is cut until the parked record fits the store's
/// event size limit: the park never fails for it (it failed, and the
/// forwarder retried the poison event for ever, on a store whose limit is
/// below the escaped reason).
#[test]
fn a_long_rejection_reason_is_cut_to_fit_the_stores_event_size() {
    let sim = SimStorage::new();
    let mut opts = options();
    opts.max_event_size = 1024;
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, opts).unwrap());
    store
        .append("s-poison", ExpectedVersion::Any, vec![EventData::json("Poison", "{}")])
        .unwrap();
    fill(&store, 0, 5);
    let fake = Fake::new(false);
    fake.remote.lock().reject_type = Some("Poison".into());
    fake.remote.lock().reason_pad = 3000;
    let mut f = Forwarder::new(store.clone(), "long", settings(), Box::new(fake.clone())).unwrap();
    run_once(&mut f);
    let parked = store
        .read_stream(
            &forward_parked_stream("long"),
            Direction::Forward,
            StreamFrom::Start,
            10,
        )
        .unwrap();
    assert_eq!(parked.len(), 1);
    assert!(parked[0].data.len() <= 1024);
    let record = ParkedRecord::from_event(&parked[0]).unwrap();
    assert!(
        record.reason.starts_with("type Poison is not allowed"),
        "{}",
        record.reason
    );
    assert_eq!(fake.remote.lock().events.len(), 5);
}

#[test]
fn a_poison_event_is_parked_with_the_targets_reason_and_the_rest_goes_on() {
    let sim = SimStorage::new();
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    fill(&store, 0, 20);
    store
        .append("s-poison", ExpectedVersion::Any, vec![EventData::json("Poison", "{}")])
        .unwrap();
    fill(&store, 20, 20);
    for transactional in [false, true] {
        let name = format!("p-{transactional}");
        let fake = Fake::new(transactional);
        fake.remote.lock().reject_type = Some("Poison".into());
        let mut f = Forwarder::new(store.clone(), &name, settings(), Box::new(fake.clone())).unwrap();
        run_once(&mut f);
        let expected: Vec<RecordedEvent> = source(&store, &Filter::all())
            .into_iter()
            .filter(|e| e.event_type != "Poison")
            .collect();
        assert_exactly(&fake.remote.lock(), &expected);
        let parked = store
            .read_stream(&forward_parked_stream(&name), Direction::Forward, StreamFrom::Start, 10)
            .unwrap();
        assert_eq!(parked.len(), 1);
        let record = ParkedRecord::from_event(&parked[0]).unwrap();
        assert_eq!(record.stream, "s-poison");
        assert_eq!(record.reason, "type Poison is not allowed");
        assert_eq!(f.status().parked, 1);
        // The checkpoint record has the shape format.md shows.
        let last = store
            .read_stream(
                &forward_checkpoint_stream(&name),
                Direction::Backward,
                StreamFrom::End,
                1,
            )
            .unwrap();
        let status = f.status();
        assert_eq!(
            std::str::from_utf8(&last[0].data).unwrap(),
            format!(
                r#"{{"position":{},"delivered":{},"parked":1,"skipped":0}}"#,
                saved_checkpoint(&store, &name).unwrap().unwrap(),
                status.delivered_total
            )
        );
        assert_eq!(last[0].event_type, "$ForwardCheckpoint");
        if transactional {
            let last = source(&store, &Filter::all()).last().unwrap().position;
            assert!(fake.remote.lock().checkpoint.unwrap() > last);
        }
    }
}

#[test]
fn a_crash_between_delivery_and_checkpoint_redelivers_and_the_target_drops_the_copies() {
    let sim = SimStorage::new();
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    fill(&store, 0, 50);
    let fake = Fake::new(false);
    let mut f = Forwarder::new(store.clone(), "crashy", settings(), Box::new(fake.clone())).unwrap();
    // Deliver three batches and save the checkpoint, then two more that are never saved.
    f.step().unwrap();
    f.step().unwrap();
    f.step().unwrap();
    f.save().unwrap();
    let saved = f.checkpoint();
    let never_saved = settings().checkpoint_interval(Duration::from_secs(3600));
    drop(f);
    let mut f = Forwarder::new(store.clone(), "crashy", never_saved, Box::new(fake.clone())).unwrap();
    assert_eq!(f.checkpoint(), saved);
    assert_eq!(f.step().unwrap(), Step::Progress(7));
    assert_eq!(f.step().unwrap(), Step::Progress(7));
    // Power cut: the forwarder never saves again (dropping it saves nothing).
    drop(f);
    drop(store);
    sim.crash(3, true);
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    assert_eq!(saved_checkpoint(&store, "crashy").unwrap(), Some(saved));
    let mut f = Forwarder::new(store.clone(), "crashy", settings(), Box::new(fake.clone())).unwrap();
    run_once(&mut f);
    let r = fake.remote.lock();
    assert_eq!(r.duplicates_dropped, 14, "the two unsaved batches came again");
    assert_exactly(&r, &source(&store, &Filter::all()));
}

#[test]
fn a_transactional_targets_checkpoint_is_trusted_over_the_stores() {
    let sim = SimStorage::new();
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    fill(&store, 0, 30);
    let fake = Fake::new(true);
    let mut f = Forwarder::new(
        store.clone(),
        "tx",
        settings().checkpoint_interval(Duration::from_secs(3600)),
        Box::new(fake.clone()),
    )
    .unwrap();
    f.step().unwrap();
    f.step().unwrap();
    drop(f);
    assert_eq!(saved_checkpoint(&store, "tx").unwrap(), None);
    let mut f = Forwarder::new(store.clone(), "tx", settings(), Box::new(fake.clone())).unwrap();
    run_once(&mut f);
    let r = fake.remote.lock();
    assert_eq!(r.duplicates_dropped, 0, "resumed from the target's checkpoint");
    assert_exactly(&r, &source(&store, &Filter::all()));
}

#[test]
fn start_at_end_forwards_only_later_events() {
    let sim = SimStorage::new();
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    fill(&store, 0, 10);
    let fake = Fake::new(false);
    let s = settings().start(ForwardStart::End);
    let mut f = Forwarder::new(store.clone(), "late", s, Box::new(fake.clone())).unwrap();
    fill(&store, 10, 5);
    run_once(&mut f);
    let all = source(&store, &Filter::all());
    assert_exactly(&fake.remote.lock(), &all[10..]);
}

fn retention_store(sim: &SimStorage) -> Arc<Store> {
    let options = options().retention(RetentionPolicy {
        max_events: Some(50),
        ..RetentionPolicy::default()
    });
    Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options).unwrap())
}

#[test]
fn scavenging_waits_for_a_waiting_forwarder_and_says_so() {
    let sim = SimStorage::new();
    let store = retention_store(&sim);
    let fake = Fake::new(false);
    let mut f = Forwarder::new(store.clone(), "waiting", settings(), Box::new(fake.clone())).unwrap();
    fill(&store, 0, 600);
    assert!(store.segment_count() > 3);
    let report = store.scavenge().unwrap();
    assert_eq!(report.events_removed, 0, "{report:?}");
    assert!(report.events_kept_for_forwarding > 0);
    assert_eq!(report.held_by.as_deref(), Some("waiting"));
    assert_eq!(store.stats().retention_held_by, vec![("waiting".to_string(), 0)]);
    run_once(&mut f);
    assert_exactly(&fake.remote.lock(), &source(&store, &Filter::all()));
    // Delivered: now retention may remove them.
    let report = store.scavenge().unwrap();
    assert!(report.events_removed > 0, "{report:?}");
    assert_eq!(f.status().skipped, 0);
}

#[test]
fn a_forwarder_behind_scavenged_data_reports_the_gap_and_goes_on() {
    let sim = SimStorage::new();
    let store = retention_store(&sim);
    let fake = Fake::new(false);
    let s = settings().retention(RetentionMode::Ignore);
    let mut f = Forwarder::new(store.clone(), "ignoring", s, Box::new(fake.clone())).unwrap();
    fill(&store, 0, 600);
    let report = store.scavenge().unwrap();
    assert!(report.events_removed > 0);
    run_once(&mut f);
    let status = f.status();
    assert!(status.skipped > 0, "{status:?}");
    assert!(status.last_error.as_deref().unwrap_or("").contains("gap"), "{status:?}");
    // What survived is delivered, once.
    assert_exactly(&fake.remote.lock(), &source(&store, &Filter::all()));
    assert_eq!(status.checkpoint, store.head_position());
}

#[test]
fn bad_settings_and_names_are_refused() {
    let sim = SimStorage::new();
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    let bad = ForwardSettings::default().batch_size(0);
    assert!(Forwarder::new(store.clone(), "x", bad, Box::new(Fake::new(false))).is_err());
    assert!(Forwarder::new(store.clone(), "a b", settings(), Box::new(Fake::new(false))).is_err());
    assert!("sideways".parse::<ForwardStart>().is_err());
    assert_eq!("42".parse::<ForwardStart>().unwrap(), ForwardStart::Position(42));
    assert!("maybe".parse::<RetentionMode>().is_err());
}

/// The niceness of the calling thread, from /proc (Linux).
#[cfg(target_os = "linux")]
fn thread_nice() -> i64 {
    thread_stat(19)
}

/// Field `n` (1-based, as proc(5) numbers them) of the calling thread's stat.
#[cfg(target_os = "linux")]
fn thread_stat(n: usize) -> i64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    // Field 3 (the state) comes first after the name.
    after_name.split_whitespace().nth(n - 3).unwrap().parse().unwrap()
}

/// Linux's number for the idle scheduling class (`SCHED_IDLE`).
#[cfg(target_os = "linux")]
const SCHED_IDLE: i64 = 5;

/// Delivers nothing anywhere; notes the niceness and the scheduling
/// policy (field 41 of stat) of the thread that delivers.
#[cfg(target_os = "linux")]
struct NiceProbe(Arc<Mutex<Option<(i64, i64)>>>);

#[cfg(target_os = "linux")]
impl ForwardTarget for NiceProbe {
    fn describe(&self) -> String {
        "nice probe".into()
    }
    fn load_checkpoint(&mut self, _forwarder: &str) -> Result<Option<u64>, TargetError> {
        Ok(None)
    }
    fn deliver(&mut self, _batch: &Batch<'_>) -> Result<(), TargetError> {
        *self.0.lock() = Some((thread_nice(), thread_stat(41)));
        Ok(())
    }
}

/// Spawns a forwarder with `settings` and returns the niceness and policy
/// of the thread it delivered on; its status warns of nothing.
#[cfg(target_os = "linux")]
fn spawned_priority(store: &Arc<Store>, name: &str, settings: ForwardSettings) -> (i64, i64) {
    let seen = Arc::new(Mutex::new(None));
    let handle = Forwarder::new(store.clone(), name, settings, Box::new(NiceProbe(seen.clone())))
        .unwrap()
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().is_none() {
        assert!(Instant::now() < deadline, "the forwarder never delivered");
        std::thread::sleep(Duration::from_millis(2));
    }
    let warning = handle.status().warning;
    handle.stop().unwrap();
    // Nothing failed: nothing to warn of.
    assert_eq!(warning, None);
    seen.lock().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn a_spawned_forwarder_runs_at_the_niceness_of_its_settings_and_the_caller_keeps_its_own() {
    let sim = SimStorage::new();
    let store = Arc::new(Store::open_with(Arc::new(sim.clone()), DIR, options()).unwrap());
    fill(&store, 0, 10);
    let before = (thread_nice(), thread_stat(41));
    // By default, calls to the target on the forwarder's thread: raised to
    // 7, never lowered below what the test process runs at, in the
    // caller's class.
    let (nice, policy) = spawned_priority(&store, "nice", settings().nice(7));
    assert_eq!(nice, before.0.max(7));
    assert_eq!(policy, before.1);
    // Asked for: in the idle class (issue 14: a forwarder at niceness 10
    // cost appends 9-22% on the core it shared with them).
    let (_, policy) = spawned_priority(&store, "idle", settings().idle_priority(true));
    assert_eq!(policy, SCHED_IDLE);
    assert_eq!((thread_nice(), thread_stat(41)), before);
    // A niceness Linux does not have is refused.
    let s = settings().nice(20);
    assert!(Forwarder::new(store, "nice-20", s, Box::new(Fake::new(false))).is_err());
}
