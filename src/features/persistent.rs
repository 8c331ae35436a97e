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
//! through the store like any client and must never touch files.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{EventData, ExpectedVersion, RecordedEvent};
use crate::features::subscription::SubscribeFrom;
use crate::format::index::hash_str;
use crate::format::system::{self, StoredCheckpointV1, StoredDefinitionV1, StoredParkedV1, Version1};
use crate::query::Filter;
use crate::query::{Direction, LogFrom, StreamFrom};
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
#[allow(clippy::large_enum_variant, reason = "made once per group or subscription, never in bulk")]
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
    /// Why it was parked.
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
    parked_replayed: u64,
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
            if low_water(&inner) != inner.saved {
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
        let def = StoredDefinitionV1::Created {
            version: Version1,
            name: name.to_string(),
            settings: (&settings).into(),
        };
        self.append_system(
            GROUPS_STREAM,
            ExpectedVersion::Any,
            vec![json_event("$GroupCreated", &def)],
        )?;
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
        let start = self.start_cursor(&settings);
        let (cursor, parked, parked_replayed, skipped_damaged, skipped_through) = match &saved {
            Some(c) => (c.checkpoint, c.parked, c.parked_replayed, c.skipped_damaged, c.skipped_through),
            None => (start, 0, 0, 0, 0),
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

    /// Deletes a group's definition (its checkpoint and parked streams stay
    /// readable; a group created again under its name starts afresh).
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
        let def = StoredDefinitionV1::Created {
            version: Version1,
            name: name.to_string(),
            settings: (&settings).into(),
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

/// A handle on a persistent subscription group.
pub struct Group<'s> {
    store: &'s Store,
    state: Arc<GroupState>,
}

impl Group<'_> {
    /// The group's settings.
    pub fn settings(&self) -> &GroupSettings {
        &self.state.settings
    }

    /// Connects a consumer by name (connecting twice is harmless), with no
    /// limit on the events it holds.
    pub fn consumer(&self, name: &str) -> Consumer<'_> {
        self.consumer_with_capacity(name, usize::MAX)
    }

    /// Connects a consumer that holds at most `capacity` unacknowledged
    /// events at a time, as far as [`Strategy::DispatchToSingle`] is
    /// concerned (it passes events on to the next consumer only once this
    /// one is full). Connecting again under the same name sets the capacity.
    pub fn consumer_with_capacity(&self, name: &str, capacity: usize) -> Consumer<'_> {
        let mut inner = self.state.inner.lock();
        match inner.consumers.iter_mut().find(|c| c.0 == name) {
            Some(c) => c.1 = capacity,
            None => inner.consumers.push((name.to_string(), capacity)),
        }
        Consumer {
            group: self,
            name: name.to_string(),
        }
    }

    /// The group's state.
    pub fn info(&self) -> GroupInfo {
        let inner = self.state.inner.lock();
        GroupInfo {
            name: self.state.name.clone(),
            checkpoint: low_water(&inner),
            saved_checkpoint: inner.saved,
            in_flight: inner.in_flight.len(),
            ready: inner.ready.len(),
            parked: inner.parked,
            skipped_damaged: inner.skipped_damaged,
            last_skipped_damage: inner.last_skipped_damage.clone(),
            consumers: inner.consumers.iter().map(|c| c.0.clone()).collect(),
        }
    }

    /// Saves the checkpoint now.
    pub fn save_checkpoint(&self) -> Result<()> {
        let mut inner = self.state.inner.lock();
        self.save(&mut inner)
    }

    fn save(&self, inner: &mut GroupInner) -> Result<()> {
        let checkpoint = low_water(inner);
        let c = StoredCheckpointV1 {
            version: Version1,
            checkpoint,
            parked: inner.parked,
            parked_replayed: inner.parked_replayed,
            skipped_damaged: inner.skipped_damaged,
            skipped_through: inner.skipped_through,
        };
        self.store.append_system(
            &checkpoint_stream(&self.state.name),
            ExpectedVersion::Any,
            vec![json_event("$Checkpoint", &c)],
        )?;
        inner.saved = checkpoint;
        inner.acks_since_save = 0;
        Ok(())
    }

    /// Puts every parked event not yet replayed back in line for delivery;
    /// returns how many.
    pub fn replay_parked(&self) -> Result<u64> {
        self.replay_parked_up_to(u64::MAX)
    }

    /// Puts the oldest parked events not yet replayed, at most `limit` of
    /// them, back in line for delivery; the others stay parked for a later
    /// replay. Returns how many went back.
    pub fn replay_parked_up_to(&self, limit: u64) -> Result<u64> {
        let mut inner = self.state.inner.lock();
        let parked = match self.store.read_stream(
            &parked_stream(&self.state.name),
            Direction::Forward,
            StreamFrom::Revision(inner.parked_replayed),
            usize::try_from(limit).unwrap_or(usize::MAX),
        ) {
            Ok(p) => p,
            Err(Error::StreamNotFound(_)) => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut n = 0;
        for p in &parked {
            let rec = ParkedRecord::from_event(p)?;
            if let Some(event) = self
                .store
                .read_all(Direction::Forward, LogFrom::Position(rec.position), 1, &Filter::all())?
                .into_iter()
                .find(|e| e.position == rec.position)
            {
                inner.ready.push_back(Pending {
                    event,
                    deliveries: 0,
                    key: None,
                });
                n += 1;
            }
            inner.parked_replayed = p.revision.saturating_add(1);
        }
        self.save(&mut inner)?;
        self.state.changed.notify_all();
        Ok(n)
    }

    /// The position (global log) or revision (stream) that orders the group's source.
    fn key(&self, e: &RecordedEvent) -> u64 {
        match self.state.settings.source {
            GroupSource::All(_) => e.position,
            GroupSource::Stream(_) => e.revision,
        }
    }

    /// Moves timed-out deliveries back in line, or to the parked stream.
    fn expire(&self, inner: &mut GroupInner) -> Result<()> {
        // Acknowledgement deadlines run on the store's clock (a test moves it by hand).
        let now = self.store.clock().now();
        let expired: Vec<Uuid> = inner
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(f) = inner.in_flight.remove(&id) {
                self.retry_or_park(inner, f.pending, "acknowledgement timed out")?;
            }
        }
        Ok(())
    }

    fn retry_or_park(&self, inner: &mut GroupInner, p: Pending, reason: &str) -> Result<()> {
        if p.deliveries > self.state.settings.max_retries {
            self.park(inner, p, reason)
        } else {
            inner.ready.push_front(p);
            Ok(())
        }
    }

    fn park(&self, inner: &mut GroupInner, p: Pending, reason: &str) -> Result<()> {
        let rec = ParkedRecord {
            position: p.event.position,
            stream: p.event.stream.clone(),
            revision: p.event.revision,
            event_id: p.event.id,
            deliveries: p.deliveries,
            reason: reason.to_string(),
        };
        self.store.append_system(
            &parked_stream(&self.state.name),
            ExpectedVersion::Any,
            vec![json_event("$Parked", &StoredParkedV1::from(&rec))],
        )?;
        inner.parked += 1;
        self.completed(inner)
    }

    /// Counts a completed event (acknowledged, skipped or parked) toward the next checkpoint save.
    fn completed(&self, inner: &mut GroupInner) -> Result<()> {
        inner.acks_since_save += 1;
        if inner.acks_since_save >= self.state.settings.checkpoint_every {
            self.save(inner)?;
        }
        Ok(())
    }

    /// Reads more of the source into the ready line, keeping within the in-flight limit.
    fn refill(&self, inner: &mut GroupInner, want: usize) -> Result<()> {
        let room = self
            .state
            .settings
            .max_in_flight
            .saturating_sub(inner.in_flight.len() + inner.ready.len());
        let n = want.min(room);
        if n == 0 {
            return Ok(());
        }
        let events = match &self.state.settings.source {
            GroupSource::All(filter) => {
                // The head before the read: the read sees at least up to it.
                let head = self.store.head_position();
                if inner.cursor >= head {
                    return Ok(());
                }
                // One refill passes over at most REFILL_SPAN positions, however
                // few of them the filter keeps: a sparse filter costs a fetch
                // several short turns under the lock, not one pass over the log.
                // Only a filter the indexes cannot serve is bounded so: one
                // served from them passes a stretch of the log without a match
                // by its candidate lists, and a read over it costs the
                // segment's lists once (built again for every span, it cost a
                // sparse stream-prefix group 75x, in the review).
                let end = if filter.needs_scan(self.store.indexed_metadata()) {
                    inner.cursor.saturating_add(REFILL_SPAN).min(head)
                } else {
                    head
                };
                let (events, stop) = self.store.shared.read_log_stop_before(
                    Direction::Forward,
                    LogFrom::Position(inner.cursor),
                    (n, usize::MAX),
                    (filter, crate::log::read::Visibility::Visible, &crate::Cancel::default()),
                    end,
                )?;
                match stop {
                    // Everything before the damage first; the next refill meets it at once.
                    Some(_) if !events.is_empty() => {}
                    // Skipped, never silently: counted in the group's info and
                    // checkpoint, and kept as the store's last background error.
                    Some(stop) if self.state.settings.skip_damaged => {
                        // Only what was not counted before a restart counts.
                        let from = stop.position.max(inner.skipped_through);
                        let skipped = stop.resume.saturating_sub(from);
                        inner.skipped_damaged = inner.skipped_damaged.saturating_add(skipped);
                        inner.skipped_through = inner.skipped_through.max(stop.resume);
                        let why = stop.error.to_string();
                        self.store.shared.record_background::<()>(
                            &format!("group {:?} skipping damaged positions {}..{}", self.state.name, stop.position, stop.resume),
                            Err(stop.error),
                        );
                        inner.last_skipped_damage = Some((stop.position, stop.resume, why));
                        inner.cursor = stop.resume;
                        // The count is saved at once: a crash must not forget the skip.
                        self.save(inner)?;
                    }
                    Some(stop) => {
                        return Err(Error::Damaged {
                            position: stop.position,
                            source: Box::new(stop.error),
                        });
                    }
                    // Every position up to `end` has been considered.
                    None if events.len() < n => inner.cursor = inner.cursor.max(end),
                    None => {}
                }
                events
            }
            GroupSource::Stream(s) => {
                match self
                    .store
                    .read_stream(s, Direction::Forward, StreamFrom::Revision(inner.cursor), n)
                {
                    Ok(e) => e,
                    Err(Error::StreamNotFound(_)) => Vec::new(),
                    Err(e) => return Err(e),
                }
            }
        };
        for e in events {
            let key = self.key(&e);
            inner.cursor = inner.cursor.max(key + 1);
            // Groups on the global log skip system streams, their own bookkeeping included.
            if e.stream.starts_with('$') {
                continue;
            }
            inner.ready.push_back(Pending {
                event: e,
                deliveries: 0,
                key: Some(key),
            });
        }
        Ok(())
    }
}

/// The lowest position (or revision) not yet completed: the checkpoint.
fn low_water(inner: &GroupInner) -> u64 {
    inner
        .in_flight
        .values()
        .map(|f| &f.pending)
        .chain(inner.ready.iter())
        .filter_map(|p| p.key)
        .fold(inner.cursor, u64::min)
}

/// The first chunk a fetch reads from the source when its line runs dry.
const REFILL_FIRST: usize = 8;
/// The largest chunk a fetch reads at once (chunks double from [`REFILL_FIRST`]).
const REFILL_MOST: usize = 64;
/// Most positions of the global log one refill passes over.
const REFILL_SPAN: u64 = 4096;
/// Refills that found nothing to deliver (a sparse filter, system streams,
/// damage skipped) one turn under the group's lock makes before letting
/// others (acknowledgements, other consumers) in: at most
/// `REFILL_SPAN * SPANS_PER_TURN` positions per turn.
const SPANS_PER_TURN: usize = 4;

/// A named consumer of a group.
pub struct Consumer<'g> {
    group: &'g Group<'g>,
    name: String,
}

impl Consumer<'_> {
    /// Up to `max` events for this consumer, waiting at most `timeout` for
    /// new events once the source is read up to its head. Reading the source
    /// up to the head is not bounded by `timeout`: a group whose filter only a
    /// scan serves reads it in turns (see [`Consumer::fetch_while_cancellable`]
    /// to stop it).
    pub fn fetch(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        self.fetch_while(max, timeout, |_| true)
    }

    /// As [`Consumer::fetch`], but takes the events one by one while `fits`
    /// accepts the next (given it as it would be delivered): the first one
    /// it refuses, and those after it, stay in the group's line, not
    /// delivered, as if never looked at. Lets a caller fill an answer of
    /// bounded size with one call instead of one call per event; it must
    /// accept the first event to get any. The source is read lazily, a small
    /// chunk at a time (8 events, growing to 64) only while `fits` accepts
    /// and the line runs dry, so a fetch that stops early holds little in
    /// memory whatever `max` is. A group on the global log reads at most
    /// 4,096 positions per chunk, and after 4 chunks that gave nothing to
    /// deliver (a filter that keeps little, system streams) the fetch lets
    /// go of the group's lock before it reads on: acknowledgements and
    /// other consumers never wait behind a long scan. Such a fetch may
    /// return fewer than `max` events when the rest lie further on.
    ///
    /// `fits` runs under the group's lock: it must not touch the group (its
    /// info, its consumers, a fetch, an ack), or it deadlocks. If it
    /// panics, nothing is taken: every event stays in line as before.
    pub fn fetch_while(
        &self,
        max: usize,
        timeout: Duration,
        fits: impl FnMut(&Delivery) -> bool,
    ) -> Result<Vec<Delivery>> {
        self.fetch_while_cancellable(max, timeout, &crate::Cancel::default(), fits)
    }

    /// As [`Consumer::fetch_while`], but fails with [`Error::Cancelled`],
    /// having taken nothing, once `cancel` is cancelled or its deadline
    /// passes while the fetch has found nothing yet: it looks between two
    /// turns of its scan of the source (a group on the global log whose
    /// filter keeps little of it scans a bounded span per turn) and while it
    /// waits. Lets a server stop the work of a fetch whose client went away.
    pub fn fetch_while_cancellable(
        &self,
        max: usize,
        timeout: Duration,
        cancel: &crate::Cancel,
        mut fits: impl FnMut(&Delivery) -> bool,
    ) -> Result<Vec<Delivery>> {
        let g = self.group;
        let deadline = Instant::now() + timeout;
        let mut inner = g.state.inner.lock();
        loop {
            if let Some(e) = inner.deferred.remove(&self.name) {
                return Err(e);
            }
            g.expire(&mut inner)?;
            let (out, more) = self.take(&mut inner, max, &mut fits)?;
            if !out.is_empty() {
                return Ok(out);
            }
            cancel.check()?;
            if more && !g.store.is_closing() {
                // More of the source to look at: let whoever waits for the
                // lock (an ack, another consumer) have it first, then go on.
                parking_lot::MutexGuard::unlocked_fair(&mut inner, || {
                    #[cfg(test)]
                    if let Some(f) = g.state.between_spans.lock().as_mut() {
                        f();
                    }
                });
                continue;
            }
            let now = Instant::now();
            if now >= deadline || g.store.is_closing() {
                return Ok(out);
            }
            // New events, acknowledgements and timeouts all wake or expire within this slice.
            let slice = (deadline - now).min(Duration::from_millis(20));
            g.state.changed.wait_for(&mut inner, slice);
        }
    }

    /// Takes up to `max` events for this consumer while `fits` accepts them,
    /// reading the source in small chunks when the line runs dry. Nothing
    /// moves while `fits` runs: accepted events stay in the ready line
    /// (marked by index) until the last call, then move to in-flight
    /// together, so a panic in `fits` leaves the group as it was. Also says
    /// whether it stopped with more of the source to look at (after
    /// [`SPANS_PER_TURN`] refills that found nothing to deliver).
    fn take(
        &self,
        inner: &mut GroupInner,
        max: usize,
        fits: &mut impl FnMut(&Delivery) -> bool,
    ) -> Result<(Vec<Delivery>, bool)> {
        let g = self.group;
        let settings = &g.state.settings;
        let consumers = inner.consumers.clone();
        // Dispatch to single: this consumer's turn comes once every consumer
        // connected before it is full (each holds what it took and did not answer).
        let ahead_full = settings.strategy != Strategy::DispatchToSingle || {
            let mut held: HashMap<&str, usize> = HashMap::new();
            for f in inner.in_flight.values() {
                *held.entry(f.consumer.as_str()).or_default() += 1;
            }
            consumers
                .iter()
                .take_while(|c| c.0 != self.name)
                .all(|(name, capacity)| held.get(name.as_str()).copied().unwrap_or(0) >= *capacity)
        };
        if !ahead_full || max == 0 {
            return Ok((Vec::new(), false));
        }
        // The accepted events, by their index (ascending) in the ready line.
        let mut accepted: Vec<(usize, Delivery)> = Vec::new();
        let mut chunk = REFILL_FIRST;
        let mut i = 0;
        let mut empty_spans = 0;
        let mut more = false;
        while accepted.len() < max {
            if i == inner.ready.len() {
                // The line ran dry: read a little more of the source.
                let (before, cursor) = (inner.ready.len(), inner.cursor);
                if let Err(e) = g.refill(inner, chunk.min(max - accepted.len())) {
                    // What was accepted is handed out; the error is kept for
                    // the next fetch (the group may have moved past its cause).
                    if accepted.is_empty() {
                        return Err(e);
                    }
                    inner.deferred.insert(self.name.clone(), e);
                    break;
                }
                chunk = (chunk * 2).min(REFILL_MOST);
                if inner.ready.len() == before {
                    if inner.cursor == cursor {
                        // Caught up, or at the in-flight limit.
                        break;
                    }
                    // Only skipped events (system streams, damage, what the
                    // filter leaves out): read on, a few spans per turn.
                    empty_spans += 1;
                    if empty_spans >= SPANS_PER_TURN {
                        more = true;
                        break;
                    }
                    continue;
                }
            }
            let Some(p) = inner.ready.get(i) else { break };
            let mine = match settings.strategy {
                Strategy::RoundRobin | Strategy::DispatchToSingle => true,
                Strategy::Pinned => {
                    // The remainder is below consumers.len(), so it fits a usize.
                    let k = usize::try_from(hash_str(&p.event.stream) % consumers.len().max(1) as u64).unwrap_or(0);
                    consumers.get(k).is_none_or(|c| c.0 == self.name)
                }
            };
            if mine {
                let delivery = Delivery {
                    event: p.event.clone(),
                    retry_count: p.deliveries,
                };
                if !fits(&delivery) {
                    // Not taken: it keeps its place, and so does everything after it.
                    break;
                }
                accepted.push((i, delivery));
            }
            // Events pinned to other consumers keep their place.
            i += 1;
        }
        let Some(last) = accepted.last().map(|a| a.0) else {
            return Ok((Vec::new(), more));
        };
        // Move the accepted events out of the line; the others keep their order.
        let rest = inner.ready.split_off(last + 1);
        let head = std::mem::replace(&mut inner.ready, rest);
        let mut next = accepted.iter().map(|a| a.0).peekable();
        let mut passed_over = Vec::new();
        let mut taken = Vec::with_capacity(accepted.len());
        for (k, p) in head.into_iter().enumerate() {
            if next.peek() == Some(&k) {
                next.next();
                taken.push(p);
            } else {
                passed_over.push(p);
            }
        }
        for p in passed_over.into_iter().rev() {
            inner.ready.push_front(p);
        }
        let now = g.store.clock().now();
        let deadline = now.checked_add(Duration::from_millis(settings.ack_timeout_ms)).unwrap_or(now);
        for p in taken {
            inner.in_flight.insert(
                p.event.id,
                InFlight {
                    pending: Pending {
                        event: p.event,
                        deliveries: p.deliveries + 1,
                        key: p.key,
                    },
                    deadline,
                    consumer: self.name.clone(),
                },
            );
        }
        Ok((accepted.into_iter().map(|a| a.1).collect(), more))
    }

    /// Acknowledges handled events by id; unknown ids are ignored. Returns
    /// how many of the ids were in flight (and are now acknowledged).
    pub fn ack(&self, ids: &[Uuid]) -> Result<usize> {
        let g = self.group;
        let mut inner = g.state.inner.lock();
        let mut acked = 0;
        for id in ids {
            if inner.in_flight.remove(id).is_some() {
                acked += 1;
                g.completed(&mut inner)?;
            }
        }
        g.state.changed.notify_all();
        Ok(acked)
    }

    /// Negatively acknowledges an event: retry it, park it, or skip it.
    /// Returns whether the event was in flight (an unknown id is ignored).
    pub fn nack(&self, id: Uuid, action: NackAction, reason: &str) -> Result<bool> {
        let g = self.group;
        let mut inner = g.state.inner.lock();
        let Some(f) = inner.in_flight.remove(&id) else {
            return Ok(false);
        };
        match action {
            NackAction::Retry => g.retry_or_park(&mut inner, f.pending, reason)?,
            NackAction::Park => g.park(&mut inner, f.pending, reason)?,
            NackAction::Skip => g.completed(&mut inner)?,
        }
        g.state.changed.notify_all();
        Ok(true)
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Events currently delivered to this consumer and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        let inner = self.group.state.inner.lock();
        inner.in_flight.values().filter(|f| f.consumer == self.name).count()
    }
}

impl Drop for Consumer<'_> {
    fn drop(&mut self) {
        let mut inner = self.group.state.inner.lock();
        inner.consumers.retain(|c| c.0 != self.name);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::{GroupSettings, GroupSource, REFILL_SPAN, SPANS_PER_TURN};
    use crate::{Durability, EventData, ExpectedVersion, Filter, Options, SimStorage, Store};

    /// A fetch of a group whose filter keeps almost nothing of a long log
    /// scans it in turns of a bounded number of positions, letting go of the
    /// group's lock between them: another consumer's acknowledgement, made
    /// while the fetch is between two turns (it waits there for the ack), goes
    /// through, and the fetch still finds the event past the gap.
    #[test]
    fn an_ack_is_not_held_up_by_a_fetch_scanning_a_sparse_log() {
        let options = Options::default().no_compression().durability(Durability::Never);
        let store = Store::open_with(Arc::new(SimStorage::new()), "/g", options).unwrap();
        let events = |n: u64| (0..n).map(|_| EventData::json("E", "{}".to_string())).collect::<Vec<_>>();
        let kept = || vec![EventData::json("E", "{}".to_string()).with_metadata(r#"{"k":"keep"}"#.to_string())];
        store.append("keep-1", ExpectedVersion::Any, kept()).unwrap();
        let gap = REFILL_SPAN * SPANS_PER_TURN as u64 * 3;
        for n in 0..gap / 1024 {
            store.append(&format!("other-{n}"), ExpectedVersion::Any, events(1024)).unwrap();
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
        let events = |n: u64| (0..n).map(|_| EventData::json("E", "{}".to_string())).collect::<Vec<_>>();
        let gap = REFILL_SPAN * SPANS_PER_TURN as u64 * 3;
        for n in 0..gap / 1024 {
            store.append(&format!("other-{n}"), ExpectedVersion::Any, events(1024)).unwrap();
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
