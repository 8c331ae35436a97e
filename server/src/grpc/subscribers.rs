//! The consumers of persistent subscriptions connected through this
//! protocol: one `Read` call is one consumer of an annal consumer group,
//! served by a thread of its own that holds the group open (so that pinned
//! groups see who is connected), fetches up to the call's buffer size, sends
//! events and applies the acknowledgements the client sends back.
//!
//! It also keeps, per group, the connected consumers, so that a group can be
//! full and its consumers dropped when it is updated or deleted; and it
//! spells the protocol's settings that annal's groups do not interpret
//! (maximum subscribers, the strategy's name, buffer sizes) as the group's
//! `extra` values, which annal stores with the group.
//!
//! It owns the life of a consumer. It must never decide who may use a group
//! (the service asks auth before it calls [`start`]) nor spell a group's name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::state::AppState;
use annal::{GroupSettings, GroupSource, NackAction, Store, Strategy};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use uuid::Uuid;

use super::Answers;
use super::convert::{commit_of, parse_uuid, wire_event};
use super::proto::event_store::client::persistent_subscriptions::read_req::nack::Action;
use super::proto::event_store::client::persistent_subscriptions::read_resp::read_event::{
    Count, Position, RecordedEvent as WireEvent,
};
use super::proto::event_store::client::persistent_subscriptions::read_resp::{
    Content, ReadEvent, SubscriptionConfirmation,
};
use super::proto::event_store::client::persistent_subscriptions::{ReadReq, ReadResp, read_req};
use super::read::{Paced, Subscriber, event_bytes};
use super::status;

/// Most events one fetch asks for.
const FETCH_MAX: usize = 64;
/// How long one fetch waits for an event before the thread looks at its inbox again.
const FETCH_WAIT: Duration = Duration::from_millis(50);
/// Most ids one Ack or Nack message may name; a message naming more is
/// refused with INVALID_ARGUMENT and ends the call.
pub(crate) const MAX_IDS_PER_MESSAGE: usize = 10_000;
/// Acknowledgements decoded and not yet applied by the consumer's thread:
/// with these waiting, the call's reader reads no more of the client's
/// messages (HTTP/2 flow control then holds the client back), so a client
/// that sends acknowledgements while its consumer is stuck sending events
/// (it reads none) costs no more than these.
const INBOX: usize = 4;

/// Settings of the protocol that annal's groups do not interpret, as the
/// client gave them (shown back by GetInfo and List); stored with the group
/// as its `extra` values ([`Kept::to_extra`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    /// The strategy's name as the client gave it (`DispatchToSingle`, `RoundRobin`, `Pinned`, …).
    pub(crate) strategy: String,
    /// Most consumers at once; 0 for no limit.
    pub(crate) max_subscribers: i32,
    /// Whether links were to be resolved (annal has no links to resolve).
    pub(crate) resolve_links: bool,
    /// Whether extra statistics were asked for.
    pub(crate) extra_statistics: bool,
    /// The live buffer size asked for.
    pub(crate) live_buffer_size: i32,
    /// The read batch size asked for.
    pub(crate) read_batch_size: i32,
    /// The history buffer size asked for.
    pub(crate) history_buffer_size: i32,
    /// The checkpoint interval asked for, in milliseconds.
    pub(crate) checkpoint_after_ms: i32,
    /// The least acknowledgements between checkpoints asked for.
    pub(crate) min_checkpoint_count: i32,
    /// The most acknowledgements between checkpoints asked for.
    pub(crate) max_checkpoint_count: i32,
}

/// The prefix of the `extra` keys this protocol stores.
const EXTRA: &str = "grpc.";

impl Kept {
    /// The settings as a group's `extra` values, under keys `grpc.<name>`.
    pub(crate) fn to_extra(&self) -> BTreeMap<String, String> {
        let values = [
            ("strategy", self.strategy.clone()),
            ("max_subscriber_count", self.max_subscribers.to_string()),
            ("resolve_links", self.resolve_links.to_string()),
            ("extra_statistics", self.extra_statistics.to_string()),
            ("live_buffer_size", self.live_buffer_size.to_string()),
            ("read_batch_size", self.read_batch_size.to_string()),
            ("history_buffer_size", self.history_buffer_size.to_string()),
            ("checkpoint_after_ms", self.checkpoint_after_ms.to_string()),
            ("min_checkpoint_count", self.min_checkpoint_count.to_string()),
            ("max_checkpoint_count", self.max_checkpoint_count.to_string()),
        ];
        values.into_iter().map(|(k, v)| (format!("{EXTRA}{k}"), v)).collect()
    }

    /// The settings stored with a group; for a group made otherwise (over
    /// HTTP, or before they were stored) or a value that does not read back,
    /// what its annal settings imply.
    pub(crate) fn of(s: &GroupSettings) -> Kept {
        let n = i32::try_from(s.checkpoint_every).unwrap_or(i32::MAX);
        let mut k = Kept {
            strategy: match s.strategy {
                Strategy::RoundRobin => "RoundRobin",
                Strategy::Pinned => "Pinned",
                Strategy::DispatchToSingle => "DispatchToSingle",
            }
            .to_string(),
            max_subscribers: 0,
            resolve_links: false,
            extra_statistics: false,
            live_buffer_size: i32::try_from(s.max_in_flight).unwrap_or(i32::MAX),
            read_batch_size: 20,
            history_buffer_size: 500,
            checkpoint_after_ms: 2_000,
            min_checkpoint_count: n,
            max_checkpoint_count: n,
        };
        let get = |name: &str| s.extra.get(&format!("{EXTRA}{name}"));
        let int = |name: &str, into: &mut i32| {
            if let Some(v) = get(name).and_then(|v| v.parse().ok()) {
                *into = v;
            }
        };
        int("max_subscriber_count", &mut k.max_subscribers);
        int("live_buffer_size", &mut k.live_buffer_size);
        int("read_batch_size", &mut k.read_batch_size);
        int("history_buffer_size", &mut k.history_buffer_size);
        int("checkpoint_after_ms", &mut k.checkpoint_after_ms);
        int("min_checkpoint_count", &mut k.min_checkpoint_count);
        int("max_checkpoint_count", &mut k.max_checkpoint_count);
        if let Some(v) = get("strategy") {
            k.strategy = v.clone();
        }
        if let Some(v) = get("resolve_links").and_then(|v| v.parse().ok()) {
            k.resolve_links = v;
        }
        if let Some(v) = get("extra_statistics").and_then(|v| v.parse().ok()) {
            k.extra_statistics = v;
        }
        k
    }
}

/// One connected consumer, as GetInfo shows it.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    /// Its consumer name in the annal group.
    pub(crate) consumer: String,
    /// Who connected (the principal's name), if known.
    pub(crate) user: String,
    /// The events it may hold unacknowledged.
    pub(crate) buffer_size: usize,
    /// Events sent to it so far.
    pub(crate) sent: Arc<AtomicU64>,
    stop: CancellationToken,
}

#[derive(Default)]
struct Entry {
    connections: HashMap<u64, Connection>,
}

/// The consumers of every group, by annal group name.
#[derive(Default)]
pub(crate) struct Registry {
    groups: Mutex<HashMap<String, Entry>>,
    next: AtomicU64,
}

impl Registry {
    /// The map; a panic elsewhere while it was held leaves it usable.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The consumers connected to a group.
    pub(crate) fn connections(&self, group: &str) -> Vec<Connection> {
        self.lock()
            .get(group)
            .map(|e| e.connections.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops every consumer of a group (it was updated or deleted); with
    /// `forget` (deleted), forgets the group.
    pub(crate) fn drop_consumers(&self, group: &str, forget: bool) {
        let mut groups = self.lock();
        if let Some(e) = groups.get_mut(group) {
            for c in e.connections.values() {
                c.stop.cancel();
            }
            e.connections.clear();
            if forget {
                groups.remove(group);
            }
        }
    }

    /// Drops every consumer of every group (RestartSubsystem).
    pub(crate) fn drop_all(&self) {
        let mut groups = self.lock();
        for e in groups.values_mut() {
            for c in e.connections.values() {
                c.stop.cancel();
            }
            e.connections.clear();
        }
    }

    /// Registers a consumer unless the group has `max` consumers already (0: no limit).
    fn join(&self, group: &str, max: i32, user: String, buffer_size: usize) -> Result<(u64, Connection), Status> {
        let mut groups = self.lock();
        let e = groups.entry(group.to_string()).or_default();
        if max > 0 && e.connections.len() >= usize::try_from(max).unwrap_or(usize::MAX) {
            return Err(Status::failed_precondition("Maximum subscriptions reached."));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let c = Connection {
            consumer: format!("grpc-{id}"),
            user,
            buffer_size,
            sent: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
        };
        e.connections.insert(id, c.clone());
        Ok((id, c))
    }

    fn leave(&self, group: &str, id: u64) {
        if let Some(e) = self.lock().get_mut(group) {
            e.connections.remove(&id);
        }
    }
}

/// What one `Read` call needs once its group is known and allowed.
pub(crate) struct Subscription {
    /// The annal group name.
    pub(crate) group: String,
    /// The id confirmed to the client (`<stream>::<group>`).
    pub(crate) subscription_id: String,
    /// The events the consumer may hold unacknowledged.
    pub(crate) buffer_size: usize,
    /// Whether ids go out in the structured form.
    pub(crate) structured: bool,
    /// Who connected.
    pub(crate) user: String,
    /// Most consumers the group takes at once (0: no limit).
    pub(crate) max_subscribers: i32,
}

/// What the client sent back, for the consumer's thread.
enum Command {
    Ack(Vec<Uuid>),
    Nack(Vec<Uuid>, NackAction, String),
    Stop(Vec<Uuid>, String),
}

/// Starts a consumer: answers the confirmation, then events; acknowledgements
/// come in on `requests`. Fails if the group is full.
pub(crate) fn start(
    state: &AppState,
    registry: Arc<Registry>,
    sub: Subscription,
    mut requests: Streaming<ReadReq>,
) -> Result<Answers<ReadResp>, Status> {
    // The server's limit on subscriptions bounds the threads; shutdown waits for them.
    let place = Subscriber::take(state)?;
    let (store, shutdown, scans) = (state.store(), state.shutdown.clone(), state.scans.clone());
    let (id, conn) = registry.join(&sub.group, sub.max_subscribers, sub.user.clone(), sub.buffer_size)?;
    // Its events on their way out: at most twice a fetch, and about 4 MiB.
    let (out_tx, answers) = Paced::<ReadResp>::unlimited(sub.buffer_size.clamp(1, FETCH_MAX) * 2);
    let (cmd_tx, cmd_rx) = std::sync::mpsc::sync_channel::<Command>(INBOX);
    // Told by the consumer's thread each time it takes a command (room in the inbox).
    let room = Arc::new(tokio::sync::Notify::new());
    let thread_room = room.clone();
    let stop = conn.stop.clone();
    let confirmation = ReadResp {
        content: Some(Content::SubscriptionConfirmation(SubscriptionConfirmation {
            subscription_id: sub.subscription_id.clone(),
        })),
    };
    if !out_tx.try_send(Ok(confirmation)) {
        registry.leave(&sub.group, id);
        return Err(Status::internal("the subscription could not start"));
    }
    // The client's acknowledgements, until it closes its side.
    let reader_stop = stop.clone();
    let reader_out = out_tx.clone();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                () = reader_stop.cancelled() => break,
                m = requests.next() => m,
            };
            let cmd = match msg {
                Some(Ok(ReadReq {
                    content: Some(read_req::Content::Ack(a)),
                })) => ids(&a.ids).map(Command::Ack),
                Some(Ok(ReadReq {
                    content: Some(read_req::Content::Nack(n)),
                })) => ids(&n.ids).map(|ids| match Action::try_from(n.action).unwrap_or(Action::Unknown) {
                    Action::Park => Command::Nack(ids, NackAction::Park, n.reason),
                    Action::Skip => Command::Nack(ids, NackAction::Skip, n.reason),
                    Action::Retry | Action::Unknown => Command::Nack(ids, NackAction::Retry, n.reason),
                    Action::Stop => Command::Stop(ids, n.reason),
                }),
                Some(Ok(_)) => Ok(Command::Ack(Vec::new())),
                // A message the server cannot take (larger than it decodes, …): said, and the end.
                Some(Err(e)) => Err(e),
                None => break,
            };
            let mut cmd = match cmd {
                Ok(c) => c,
                Err(e) => {
                    let _ = reader_out.send(Err(e)).await;
                    break;
                }
            };
            // Waits, reading nothing more, until the consumer's thread takes one.
            let sent = loop {
                match cmd_tx.try_send(cmd) {
                    Ok(()) => break true,
                    Err(std::sync::mpsc::TrySendError::Full(c)) => cmd = c,
                    Err(std::sync::mpsc::TrySendError::Disconnected(_)) => break false,
                }
                tokio::select! {
                    () = reader_stop.cancelled() => break false,
                    () = room.notified() => {}
                }
            };
            if !sent {
                break;
            }
        }
        reader_stop.cancel();
    });
    let group = sub.group.clone();
    let thread_registry = registry.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("annal-grpc-{}", conn.consumer))
        .spawn(move || {
            let _place = place;
            let result = serve(&store, &sub, &conn, (&out_tx, &cmd_rx, &thread_room), &shutdown, &scans);
            thread_registry.leave(&group, id);
            conn.stop.cancel();
            match result {
                Ok(()) if shutdown.is_cancelled() => {
                    let _ = out_tx.blocking_send(Err(Status::unavailable("the server is shutting down")));
                }
                Ok(()) => {}
                Err(e) => {
                    let _ = out_tx.blocking_send(Err(e));
                }
            }
        });
    if spawned.is_err() {
        stop.cancel();
        return Err(Status::resource_exhausted(
            "no thread could be started for the subscription",
        ));
    }
    Ok(answers)
}

/// Ids of an Ack or Nack; more than [`MAX_IDS_PER_MESSAGE`] are refused.
fn ids(ids: &[super::proto::event_store::client::Uuid]) -> Result<Vec<Uuid>, Status> {
    if ids.len() > MAX_IDS_PER_MESSAGE {
        return Err(Status::invalid_argument(format!(
            "an Ack or Nack names at most {MAX_IDS_PER_MESSAGE} event ids; this one names {}",
            ids.len()
        )));
    }
    ids.iter().filter_map(|id| parse_uuid(Some(id)).transpose()).collect()
}

/// The consumer's loop: apply what the client sent, fetch into the room its
/// buffer has, send; until the client leaves, the group changes or the server stops.
///
/// A group on `$all` whose filter the indexes cannot serve reads events to
/// find those it keeps: each of its fetches takes one of the `max_scans`
/// places (`scans`) while it looks, without waiting for events; with none
/// free, or nothing found, the consumer waits for its client's answers for
/// [`FETCH_WAIT`] before it looks again.
fn serve(
    store: &Store,
    sub: &Subscription,
    conn: &Connection,
    (out, commands, room): (
        &Paced<ReadResp>,
        &std::sync::mpsc::Receiver<Command>,
        &tokio::sync::Notify,
    ),
    shutdown: &CancellationToken,
    scans: &Arc<tokio::sync::Semaphore>,
) -> Result<(), Status> {
    let group = store
        .group(&sub.group)
        .map_err(|e| status::group_error(&sub.subscription_id, e))?;
    let scanning = matches!(&group.settings().source, GroupSource::All(f) if f.needs_scan(store.indexed_metadata()));
    // The last look found nothing or no place (a scanning group): wait before the next.
    let mut idle = false;
    // Dispatch to single passes events on once this consumer's buffer is full.
    let consumer = group.consumer_with_capacity(&conn.consumer, sub.buffer_size);
    // Delivered and not yet answered by the client: retried at once when it leaves.
    let mut held: HashSet<Uuid> = HashSet::new();
    let result = (|| {
        loop {
            if conn.stop.is_cancelled() || shutdown.is_cancelled() || out.is_closed() {
                return Ok(());
            }
            let mut wait = FETCH_WAIT;
            loop {
                let cmd = if held.len() >= sub.buffer_size || idle {
                    match commands.recv_timeout(wait) {
                        Ok(c) => c,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
                    }
                } else {
                    match commands.try_recv() {
                        Ok(c) => c,
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => return Ok(()),
                    }
                };
                room.notify_one();
                wait = Duration::ZERO;
                match cmd {
                    Command::Ack(ids) => {
                        consumer.ack(&ids).map_err(status::from_store)?;
                        for id in &ids {
                            held.remove(id);
                        }
                    }
                    Command::Nack(ids, action, reason) => {
                        for id in ids {
                            consumer.nack(id, action, &reason).map_err(status::from_store)?;
                            held.remove(&id);
                        }
                    }
                    Command::Stop(ids, reason) => {
                        for id in ids {
                            consumer
                                .nack(id, NackAction::Retry, &reason)
                                .map_err(status::from_store)?;
                            held.remove(&id);
                        }
                        return Ok(());
                    }
                }
            }
            let room = sub.buffer_size.saturating_sub(held.len()).min(FETCH_MAX);
            if room == 0 {
                continue;
            }
            let deliveries = if scanning {
                match scans.clone().try_acquire_owned() {
                    Ok(place) => {
                        let got = consumer.fetch(room, Duration::ZERO).map_err(status::from_store);
                        drop(place);
                        got?
                    }
                    Err(_) => Vec::new(),
                }
            } else {
                consumer.fetch(room, FETCH_WAIT).map_err(status::from_store)?
            };
            idle = scanning && deliveries.is_empty();
            for d in deliveries {
                held.insert(d.event.id);
                let weight = event_bytes(&d.event);
                let w = wire_event(&d.event, &d.event.stream, sub.structured);
                let resp = ReadResp {
                    content: Some(Content::Event(ReadEvent {
                        event: Some(WireEvent {
                            id: w.id,
                            stream_identifier: w.stream_identifier,
                            stream_revision: w.stream_revision,
                            prepare_position: w.prepare_position,
                            commit_position: w.commit_position,
                            metadata: w.metadata,
                            custom_metadata: w.custom_metadata,
                            data: w.data,
                        }),
                        link: None,
                        position: Some(Position::CommitPosition(commit_of(d.event.position))),
                        count: Some(Count::RetryCount(i32::try_from(d.retry_count).unwrap_or(i32::MAX))),
                    })),
                };
                if !out.blocking_send_weighed(resp, weight) {
                    return Ok(());
                }
                conn.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    })();
    // What the client held and never answered goes back in line for the others.
    for id in held {
        consumer
            .nack(id, NackAction::Retry, "the consumer left")
            .map_err(status::from_store)?;
    }
    result
}
