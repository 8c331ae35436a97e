//! Persistent subscriptions (consumer groups): named groups whose state lives
//! in the store itself, shared by several consumers, with acknowledgements,
//! retries after a timeout, and parking in a dead-letter stream.
//!
//! A group's definition is an event in the system stream `$groups`; its
//! checkpoint (every position before it is acknowledged or parked) is the last
//! event of `$group-<name>-checkpoint`; events given up on are appended to
//! `$group-<name>-parked`, where they can be read and replayed. Delivery is at
//! least once: after a restart, events after the last saved checkpoint are
//! delivered again. This module owns the group protocol; it reads and appends
//! through the store like any client and must never touch files. Here: the
//! settings, the registry of loaded groups and their creation and deletion;
//! in `group`, a handle on one group (info, checkpoints, parked events, the
//! refill from the source); in `consumer`, fetches and acknowledgements.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{EventData, ExpectedVersion, RecordedEvent};
use crate::features::subscription::SubscribeFrom;
use crate::format::system::{self, StoredCheckpointV1, StoredDefinitionV1, StoredParkedV1, Version1};
use crate::query::Filter;
use crate::query::{Direction, StreamFrom};
use crate::store::{Extension, Store};

/// The system stream of group definitions.
pub const GROUPS_STREAM: &str = "$groups";

/// How a group shares events among its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Each event goes to whichever consumer asks next.
    RoundRobin,
    /// All events of a stream go to the same consumer (chosen by the stream's
    /// hash among the connected consumers), in order.
    Pinned,
    /// Each event goes to the first consumer (in the order they connected)
    /// with room for it: a consumer takes events only while every consumer
    /// connected before it holds as many unacknowledged events as its
    /// capacity ([`Group::consumer_with_capacity`]).
    DispatchToSingle,
}

/// What a group reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "made once per group or subscription, never in bulk"
)]
pub enum GroupSource {
    /// The global log, filtered; system streams (`$`-prefixed) are skipped.
    All(Filter),
    /// One stream.
    Stream(String),
}

/// The settings of a group, fixed when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSettings {
    /// What the group reads.
    pub source: GroupSource,
    /// Where a new group starts.
    pub start: SubscribeFrom,
    /// How events are shared among consumers.
    pub strategy: Strategy,
    /// An event not acknowledged this long after delivery is retried.
    pub ack_timeout_ms: u64,
    /// Deliveries after the first before an event is parked.
    pub max_retries: u32,
    /// Most events delivered and not yet acknowledged, across the group.
    pub max_in_flight: usize,
    /// The checkpoint is saved after this many acknowledgements (and when the group is dropped).
    pub checkpoint_every: u64,
    /// At a position of the global log that cannot be read (damaged bytes),
    /// after every event before it was handed out: `false` (the default) stops
    /// there, fetches failing with [`Error::Damaged`] naming the position until
    /// `repair` mends the store; `true` skips it and goes on, counting the
    /// positions skipped in [`GroupInfo::skipped_damaged`] and its saved
    /// checkpoint, and recording the damage as the store's last background
    /// error.
    #[serde(default)]
    pub skip_damaged: bool,
    /// Values the application keeps with the group (a protocol's own
    /// settings, say), stored with the definition and never interpreted.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl GroupSettings {
    /// Settings for a group on the global log (all events), round robin,
    /// 30 s acknowledgement timeout, 5 retries.
    pub fn all() -> Self {
        GroupSettings {
            source: GroupSource::All(Filter::all()),
            start: SubscribeFrom::Start,
            strategy: Strategy::RoundRobin,
            ack_timeout_ms: 30_000,
            max_retries: 5,
            max_in_flight: 1000,
            checkpoint_every: 100,
            skip_damaged: false,
            extra: BTreeMap::new(),
        }
    }

    /// Settings for a group on one stream, otherwise as [`GroupSettings::all`].
    pub fn stream(stream: &str) -> Self {
        GroupSettings {
            source: GroupSource::Stream(stream.to_string()),
            ..Self::all()
        }
    }
}

/// What a consumer does with an event it could not handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver it again (counts as a retry; parked after too many).
    Retry,
    /// Park it now in the dead-letter stream.
    Park,
    /// Drop it as if acknowledged.
    Skip,
}

/// One event handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event.
    pub event: RecordedEvent,
    /// How many times it was delivered before (0 on the first delivery).
    pub retry_count: u32,
}

/// A parked event's record in the dead-letter stream (read one with
/// [`ParkedRecord::from_event`]; format.md, "System stream records", has its JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedRecord {
    /// Position of the original event.
    pub position: u64,
    /// Its stream and revision.
    pub stream: String,
    /// Its revision.
    pub revision: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Deliveries made.
    pub deliveries: u32,
    /// Why it was parked (at most [`MAX_PARK_REASON`] bytes: a longer reason
    /// given to [`Consumer::nack`] is cut, and cut shorter where the record
    /// would not fit the store's event size limit).
    pub reason: String,
}

impl ParkedRecord {
    /// Decodes an event of a group's dead-letter stream ([`parked_stream`]).
    pub fn from_event(event: &RecordedEvent) -> Result<ParkedRecord> {
        let stored: StoredParkedV1 = system::decode(&event.stream, event.position, &event.data)?;
        stored
            .try_into()
            .map_err(|reason| Error::bad_system_event(&event.stream, event.position, reason))
    }
}

/// The most bytes of a reason a parked record keeps: a longer reason is cut
/// (on a character boundary) rather than refused, so that a consumer's
/// reason never stops an event from being parked.
pub const MAX_PARK_REASON: usize = 4096;

/// The state of a group, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// Every event before this position (or revision, for a stream group) is
    /// acknowledged or parked.
    pub checkpoint: u64,
    /// The checkpoint last saved in the store.
    pub saved_checkpoint: u64,
    /// Events delivered and not yet acknowledged.
    pub in_flight: usize,
    /// Events waiting to be delivered (new or retried).
    pub ready: usize,
    /// Events parked so far (including before a restart).
    pub parked: u64,
    /// Positions of the global log skipped because they could not be read
    /// (`skip_damaged`), so far (including before a restart).
    pub skipped_damaged: u64,
    /// The last such skip: the first position skipped, the first position
    /// after it, and why (since the group was loaded).
    pub last_skipped_damage: Option<(u64, u64, String)>,
    /// Connected consumers.
    pub consumers: Vec<String>,
}

struct Pending {
    event: RecordedEvent,
    deliveries: u32,
    /// Its position (or revision) in the source; `None` for a replayed parked
    /// event, which the checkpoint has already passed.
    key: Option<u64>,
    /// For a replayed parked event, the revision of its record in the
    /// group's parked stream: the saved `parked_replayed` never passes it
    /// while the event is open (so a restart replays it again).
    parked_revision: Option<u64>,
}

struct InFlight {
    pending: Pending,
    deadline: Instant,
    consumer: String,
}

struct GroupInner {
    /// Next position (or revision) to read from the source.
    cursor: u64,
    saved: u64,
    ready: VecDeque<Pending>,
    in_flight: HashMap<Uuid, InFlight>,
    /// Connected consumers in the order they connected, with their capacity.
    consumers: Vec<(String, usize)>,
    acks_since_save: u64,
    parked: u64,
    /// The next revision of the parked stream a replay reads.
    parked_replayed: u64,
    /// The `parked_replayed` last saved (see [`group::replay_low`]).
    saved_replayed: u64,
    skipped_damaged: u64,
    /// The end of the last damaged range counted in `skipped_damaged`.
    skipped_through: u64,
    last_skipped_damage: Option<(u64, u64, String)>,
    /// An error met by a fetch after it had accepted events (they were
    /// handed out), by the consumer whose fetch met it: that consumer's next
    /// fetch returns it before anything else, so that an error whose cause
    /// the group has since moved past (a checkpoint save that failed after a
    /// damaged range was skipped) is never lost, and never told to a
    /// consumer that did not meet it.
    deferred: HashMap<String, Error>,
}

/// The shared runtime state of one group.
pub(crate) struct GroupState {
    name: String,
    settings: GroupSettings,
    inner: Mutex<GroupInner>,
    changed: Condvar,
    /// Called each time a fetch lets go of the group's lock between two
    /// spans of its scan of the source (tests check that others get in).
    #[cfg(test)]
    between_spans: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

/// The registry of loaded groups of a store.
#[derive(Default)]
pub(crate) struct Groups {
    loaded: Mutex<HashMap<String, Arc<GroupState>>>,
}

impl Extension for Groups {
    /// Saves the checkpoint of every loaded group that moved since its last save.
    fn close(&self, store: &Store) -> Result<()> {
        let loaded: Vec<Arc<GroupState>> = self.loaded.lock().values().cloned().collect();
        for state in loaded {
            let group = Group { store, state };
            let mut inner = group.state.inner.lock();
            if low_water(&inner) != inner.saved || replay_low(&inner) != inner.saved_replayed {
                group.save(&mut inner)?;
            }
        }
        Ok(())
    }
}

fn checkpoint_stream(name: &str) -> String {
    format!("$group-{name}-checkpoint")
}

/// The dead-letter stream of a group.
pub fn parked_stream(name: &str) -> String {
    format!("$group-{name}-parked")
}

fn check_group_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 200 || !name.chars().all(|c| c.is_alphanumeric() || "-_.:".contains(c)) {
        return Err(Error::InvalidInput(format!(
            "group name {name:?} must be 1-200 letters, digits or -_.:"
        )));
    }
    Ok(())
}

fn check_settings(settings: &GroupSettings) -> Result<()> {
    if settings.max_in_flight == 0 || settings.checkpoint_every == 0 {
        return Err(Error::InvalidInput(
            "max_in_flight and checkpoint_every must be positive".into(),
        ));
    }
    if settings.ack_timeout_ms == 0 || settings.ack_timeout_ms > 7 * 24 * 3600 * 1000 {
        return Err(Error::InvalidInput(
            "ack_timeout_ms must be between 1 ms and 7 days".into(),
        ));
    }
    if let GroupSource::Stream(s) = &settings.source {
        crate::event::check_stream_name(s)?;
    }
    Ok(())
}

/// A system event holding a stored record (format.md, "System stream records").
fn json_event(event_type: &str, record: &impl Serialize) -> EventData {
    EventData::json(event_type, system::encode(record))
}

/// The latest definitions of every group, from `$groups`.
fn definitions(store: &Store) -> Result<HashMap<String, GroupSettings>> {
    let mut out = HashMap::new();
    let events = match store.read_stream(GROUPS_STREAM, Direction::Forward, StreamFrom::Start, usize::MAX) {
        Ok(e) => e,
        Err(Error::StreamNotFound(_)) => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in events {
        match system::decode(GROUPS_STREAM, e.position, &e.data)? {
            StoredDefinitionV1::Created { name, settings, .. } => {
                let settings = GroupSettings::try_from(settings)
                    .map_err(|reason| Error::bad_system_event(GROUPS_STREAM, e.position, reason))?;
                out.insert(name, settings);
            }
            StoredDefinitionV1::Deleted { name, .. } => {
                out.remove(&name);
            }
        }
    }
    Ok(out)
}

impl Store {
    /// Creates a persistent subscription group; fails if the name is taken.
    pub fn create_group(&self, name: &str, settings: GroupSettings) -> Result<Group<'_>> {
        check_group_name(name)?;
        check_settings(&settings)?;
        let groups = self.extension::<Groups>();
        let _guard = groups.loaded.lock();
        if definitions(self)?.contains_key(name) {
            return Err(Error::InvalidInput(format!("group {name:?} already exists")));
        }
        // A deleted group of the same name left its checkpoint and parked
        // events: the new group starts afresh, past every event parked before.
        let checkpoints = checkpoint_stream(name);
        if self.stream_info(&checkpoints).is_some() {
            let fresh = StoredCheckpointV1 {
                version: Version1,
                checkpoint: self.start_cursor(&settings),
                parked: 0,
                parked_replayed: self
                    .stream_info(&parked_stream(name))
                    .map_or(0, |i| i.last_revision.saturating_add(1)),
                skipped_damaged: 0,
                skipped_through: 0,
            };
            self.append_system(
                &checkpoints,
                ExpectedVersion::Any,
                vec![json_event("$Checkpoint", &fresh)],
            )?;
        }
        self.append_definition(name, &settings)?;
        drop(_guard);
        self.group(name)
    }

    /// Where a group with `settings` and no checkpoint starts: the first
    /// position (or revision) it reads.
    fn start_cursor(&self, settings: &GroupSettings) -> u64 {
        match (&settings.source, settings.start) {
            (_, SubscribeFrom::Start) => 0,
            (_, SubscribeFrom::After(p)) => p.saturating_add(1),
            (GroupSource::All(_), SubscribeFrom::End) => self.head_position(),
            (GroupSource::Stream(s), SubscribeFrom::End) => {
                self.stream_info(s).map_or(0, |i| i.last_revision.saturating_add(1))
            }
        }
    }

    /// Opens an existing group (loading its state on first use after open).
    pub fn group(&self, name: &str) -> Result<Group<'_>> {
        let groups = self.extension::<Groups>();
        let mut loaded = groups.loaded.lock();
        if let Some(state) = loaded.get(name) {
            return Ok(Group {
                store: self,
                state: state.clone(),
            });
        }
        let settings = definitions(self)?
            .remove(name)
            .ok_or_else(|| Error::InvalidInput(format!("group {name:?} does not exist")))?;
        let checkpoints = checkpoint_stream(name);
        let saved = match self.read_stream(&checkpoints, Direction::Backward, StreamFrom::End, 1) {
            Ok(mut e) => match e.pop() {
                Some(e) => Some(system::decode::<StoredCheckpointV1>(&checkpoints, e.position, &e.data)?),
                None => None,
            },
            Err(Error::StreamNotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // A group that saved checkpoints none of which can be read any more
        // (lost to damage, the older ones scavenged) resumes from the lowest
        // place it may have started at, delivering again rather than
        // skipping, and says so: its start if that is a fixed place, else (a
        // start at the end, whose place at creation is not kept) the start
        // of its source. Its parked events are all replayed again.
        let lost = saved.is_none() && self.stream_info(&checkpoints).is_some();
        let start = match (lost, settings.start) {
            (true, SubscribeFrom::End) => 0,
            _ => self.start_cursor(&settings),
        };
        let mut parked_before = 0;
        if lost {
            let last = self.stream_info(&checkpoints).map_or(0, |i| i.last_position);
            parked_before = self
                .stream_info(&parked_stream(name))
                .map_or(0, |i| i.last_revision.saturating_add(1));
            self.shared.record_background::<()>(
                "loading a consumer group",
                Err(Error::BadSystemEvent {
                    stream: checkpoints.clone(),
                    position: last,
                    reason: format!(
                        "group {name:?} saved checkpoints but none can be read (lost to damage): it resumes \
                         at {start} and delivers the events from there again; a replay of its parked events \
                         delivers them all again"
                    ),
                }),
            );
        }
        let (cursor, parked, parked_replayed, skipped_damaged, skipped_through) = match &saved {
            Some(c) => (
                c.checkpoint,
                c.parked,
                c.parked_replayed,
                c.skipped_damaged,
                c.skipped_through,
            ),
            None => (start, parked_before, 0, 0, 0),
        };
        let state = Arc::new(GroupState {
            name: name.to_string(),
            settings,
            inner: Mutex::new(GroupInner {
                cursor,
                saved: cursor,
                ready: VecDeque::new(),
                in_flight: HashMap::new(),
                consumers: Vec::new(),
                acks_since_save: 0,
                parked,
                parked_replayed,
                saved_replayed: parked_replayed,
                skipped_damaged,
                skipped_through,
                last_skipped_damage: None,
                deferred: HashMap::new(),
            }),
            changed: Condvar::new(),
            #[cfg(test)]
            between_spans: Mutex::new(None),
        });
        loaded.insert(name.to_string(), state.clone());
        Ok(Group { store: self, state })
    }

    /// Deletes a group's definition (its parked stream and its checkpoints
    /// stay readable, the older checkpoints until a scavenge removes them;
    /// a group created again under its name starts afresh).
    pub fn delete_group(&self, name: &str) -> Result<()> {
        let groups = self.extension::<Groups>();
        let mut loaded = groups.loaded.lock();
        if !definitions(self)?.contains_key(name) {
            return Err(Error::InvalidInput(format!("group {name:?} does not exist")));
        }
        let def = StoredDefinitionV1::Deleted {
            version: Version1,
            name: name.to_string(),
        };
        self.append_system(
            GROUPS_STREAM,
            ExpectedVersion::Any,
            vec![json_event("$GroupDeleted", &def)],
        )?;
        loaded.remove(name);
        Ok(())
    }

    /// Replaces the settings of an existing group, keeping its checkpoint and
    /// parked events: the checkpoint of a loaded group is saved first, and the
    /// next [`Store::group`] loads the new settings. Handles opened before
    /// keep the old settings until they are dropped.
    pub fn update_group(&self, name: &str, settings: GroupSettings) -> Result<()> {
        check_settings(&settings)?;
        let groups = self.extension::<Groups>();
        let mut loaded = groups.loaded.lock();
        if !definitions(self)?.contains_key(name) {
            return Err(Error::InvalidInput(format!("group {name:?} does not exist")));
        }
        if let Some(state) = loaded.remove(name) {
            let group = Group { store: self, state };
            let mut inner = group.state.inner.lock();
            group.save(&mut inner)?;
        }
        self.append_definition(name, &settings)?;
        Ok(())
    }

    /// Records a group's definition (made or changed) in `$groups`.
    fn append_definition(&self, name: &str, settings: &GroupSettings) -> Result<()> {
        let def = StoredDefinitionV1::Created {
            version: Version1,
            name: name.to_string(),
            settings: settings.into(),
        };
        self.append_system(
            GROUPS_STREAM,
            ExpectedVersion::Any,
            vec![json_event("$GroupCreated", &def)],
        )?;
        Ok(())
    }

    /// Names and settings of every group.
    pub fn groups_list(&self) -> Result<Vec<(String, GroupSettings)>> {
        let mut v: Vec<_> = definitions(self)?.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }
}

mod consumer;
mod group;

pub use consumer::Consumer;
pub use group::Group;
use group::{low_water, replay_low};

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::group::{REFILL_SPAN, SPANS_PER_TURN};
    use super::{GroupSettings, GroupSource};
    use crate::event::{EventData, ExpectedVersion};
    use crate::options::{Durability, Options};
    use crate::query::Filter;
    use crate::storage::SimStorage;
    use crate::store::Store;

    /// A fetch of a group whose filter keeps almost nothing of a long log
    /// scans it in turns of a bounded number of positions, letting go of the
    /// group's lock between them: another consumer's acknowledgement, made
    /// while the fetch is between two turns (it waits there for the ack), goes
    /// through, and the fetch still finds the event past the gap.
    #[test]
    fn an_ack_is_not_held_up_by_a_fetch_scanning_a_sparse_log() {
        let options = Options::default().no_compression().durability(Durability::Never);
        let store = Store::open_with(Arc::new(SimStorage::new()), "/g", options).unwrap();
        let events = |n: u64| {
            (0..n)
                .map(|_| EventData::json("E", "{}".to_string()))
                .collect::<Vec<_>>()
        };
        let kept = || vec![EventData::json("E", "{}".to_string()).with_metadata(r#"{"k":"keep"}"#.to_string())];
        store.append("keep-1", ExpectedVersion::Any, kept()).unwrap();
        let gap = REFILL_SPAN * SPANS_PER_TURN as u64 * 3;
        for n in 0..gap / 1024 {
            store
                .append(&format!("other-{n}"), ExpectedVersion::Any, events(1024))
                .unwrap();
        }
        store.append("keep-2", ExpectedVersion::Any, kept()).unwrap();
        // A metadata field the store does not index: only a scan serves it.
        let settings = GroupSettings {
            source: GroupSource::All(Filter::all().with_metadata("k", "keep")),
            ..GroupSettings::all()
        };
        store.create_group("sparse", settings).unwrap();
        let group = store.group("sparse").unwrap();
        let (c1, c2) = (group.consumer("c1"), group.consumer("c2"));
        let first = c1.fetch(1, Duration::ZERO).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].event.stream, "keep-1");
        // Between two turns, the fetch tells the acknowledging thread and
        // waits for its ack (a minute at most: a lock still held would hang).
        let (to_acker, acker_rx) = channel::<()>();
        let (to_fetch, fetch_rx) = channel::<usize>();
        let mut to_acker = Some(to_acker);
        let turns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = turns.clone();
        *group.state.between_spans.lock() = Some(Box::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            if let Some(tx) = to_acker.take() {
                tx.send(()).unwrap();
                let n = fetch_rx.recv_timeout(Duration::from_secs(60));
                assert_eq!(n, Ok(1), "the ack did not go through between two turns");
            }
        }));
        let (id, c1) = (first[0].event.id, &c1);
        let second = std::thread::scope(|s| {
            s.spawn(move || {
                if acker_rx.recv().is_ok() {
                    to_fetch.send(c1.ack(&[id]).unwrap()).unwrap();
                }
            });
            let second = c2.fetch(1, Duration::ZERO).unwrap();
            // Dropping the hook lets the acknowledging thread end if it never ran.
            group.state.between_spans.lock().take();
            second
        });
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].event.stream, "keep-2");
        let turns = turns.load(std::sync::atomic::Ordering::Acquire);
        assert!(turns >= 2, "one turn scanned the whole gap of {gap}: {turns} turns");
        assert_eq!(group.info().in_flight, 1, "only keep-2 is in flight");
    }

    /// A filter the indexes serve passes a long stretch without a match by
    /// its candidate lists in one read: its fetch takes no turns (read in
    /// spans, it built each segment's lists again per span, 75x slower).
    #[test]
    fn a_sparse_filter_the_indexes_serve_is_read_in_one_turn() {
        let options = Options::default().no_compression().durability(Durability::Never);
        let store = Store::open_with(Arc::new(SimStorage::new()), "/g", options).unwrap();
        let events = |n: u64| {
            (0..n)
                .map(|_| EventData::json("E", "{}".to_string()))
                .collect::<Vec<_>>()
        };
        let gap = REFILL_SPAN * SPANS_PER_TURN as u64 * 3;
        for n in 0..gap / 1024 {
            store
                .append(&format!("other-{n}"), ExpectedVersion::Any, events(1024))
                .unwrap();
        }
        store.append("rare-1", ExpectedVersion::Any, events(1)).unwrap();
        let settings = GroupSettings {
            source: GroupSource::All(Filter::all().with_stream_prefix("rare-")),
            ..GroupSettings::all()
        };
        store.create_group("sparse", settings).unwrap();
        let group = store.group("sparse").unwrap();
        let turns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = turns.clone();
        *group.state.between_spans.lock() = Some(Box::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }));
        let got = group.consumer("c").fetch(1, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.stream, "rare-1");
        assert_eq!(turns.load(std::sync::atomic::Ordering::Acquire), 0, "read in spans");
    }
}
