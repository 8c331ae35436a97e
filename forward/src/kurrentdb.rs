//! The KurrentDB target (`kurrentdb://user:password@host:2113?tls=false`, or
//! `esdb://…`, and the `+discover` forms), through the official `kurrentdb`
//! client; any server speaking the KurrentDB gRPC protocol will do (another
//! annal's `annal serve` among them).
//!
//! Each event is appended to the stream of the same name with its own id, its
//! type, its data (JSON as JSON, anything else as `application/octet-stream`)
//! and its metadata as the event's custom metadata; tags are not carried, as
//! the protocol has none. An event whose subject was shredded at the source
//! before it was delivered goes as an event of its type with empty binary
//! data and the custom metadata [`ERASED_METADATA`] (`{"annal-erased":true}`),
//! so that a reader can tell it from an event whose data is empty. The
//! subject of a live event is not carried: the protocol has no field for it,
//! and the custom metadata is the application's own, sent byte for byte.
//! The events of a batch are grouped by stream, each
//! stream's events in source order, appended in chunks with expected revision
//! "any"; up to `concurrency` streams (URL parameter, default 16) are appended
//! at once, so that the server can commit them together.
//!
//! Delivery is exactly once because appends are idempotent by event id: the
//! forwarder's checkpoint lives in the source store and moves only after the
//! server acknowledged a batch, and an event delivered again after a crash
//! carries the id the server already holds. An append that partly repeats
//! earlier ones (the server answers "wrong expected version", the only
//! failure an append with revision "any" has for a conflict) is retried one
//! event at a time: a single event whose id is stored with the same content
//! is acknowledged again, one the server refuses (its id stored elsewhere
//! with other content, a deleted stream, an invalid event) is a poison event.
//! KurrentDB itself remembers ids for idempotency only for a while (its
//! cache), so against it "exactly once" holds for redeliveries within that
//! window, which covers a crash and restart of the forwarder.
//!
//! This module owns the mapping of events onto KurrentDB appends; it must
//! never decide which events go.

use std::time::Duration;

use annal::{Batch, ContentType, ForwardTarget, RecordedEvent, TargetError};
use futures_util::StreamExt;
use kurrentdb::{AppendToStreamOptions, Client, ClientSettings, EventData, StreamState};

use crate::error::ConfigError;
use crate::url::TargetUrl;

/// Most events in one append.
const CHUNK_EVENTS: usize = 500;
/// Most bytes (data, metadata, type and an allowance per event) in one
/// append, below KurrentDB's default limit of 1 MiB.
const CHUNK_BYTES: usize = 900 << 10;

/// Forwards to a KurrentDB-protocol server.
pub struct KurrentTarget {
    rt: tokio::runtime::Runtime,
    settings: ClientSettings,
    described: String,
    timeout: Duration,
    concurrency: usize,
    client: Option<Client>,
}

impl std::fmt::Debug for KurrentTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentTarget")
            .field("target", &self.described)
            .finish_non_exhaustive()
    }
}

/// How one append failed.
enum Failure {
    Target(TargetError),
    /// The server will not take this append as it is: some of its ids are
    /// stored already (from an attempt cut differently), or an event is refused.
    Refused(String),
}

impl KurrentTarget {
    /// A target for the URL; connects on first use.
    pub fn new(t: &TargetUrl) -> Result<KurrentTarget, ConfigError> {
        let timeout = t.millis("timeout_ms", Duration::from_secs(30))?;
        let concurrency = match t.param("concurrency") {
            None => 16,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| t.bad(format!("concurrency={v:?} is not a number from 1 to 256")))?,
        };
        // The connection string without this target's own parameters.
        let mut conn = t.url.clone();
        let kept: Vec<(String, String)> = t
            .url
            .query_pairs()
            .filter(|(k, _)| !["timeout_ms", "concurrency"].contains(&k.as_ref()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        conn.set_query(None);
        if !kept.is_empty() {
            conn.query_pairs_mut().extend_pairs(kept);
        }
        let settings: ClientSettings = conn
            .as_str()
            .parse()
            .map_err(|e: kurrentdb::ClientSettingsParseError| t.bad(e.to_string()))?;
        Ok(KurrentTarget {
            rt: crate::node::runtime()?,
            settings,
            described: t.to_string(),
            timeout,
            concurrency,
            client: None,
        })
    }

    fn client(&mut self) -> Result<Client, TargetError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        // The client starts its connection task on the runtime it is made in.
        let _in = self.rt.enter();
        let client =
            Client::new(self.settings.clone()).map_err(|e| TargetError::Refused(format!("KurrentDB client: {e}")))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Appends the events at `indexes` of `events` (one stream's, in order)
    /// one chunk at a time; on a failure, which event it was, if the server
    /// refused one, or why the server could not be used.
    async fn append_stream(
        client: &Client,
        events: &[RecordedEvent],
        indexes: &[usize],
    ) -> Result<(), (Option<usize>, Failure)> {
        for chunk in chunks(events, indexes) {
            let data: Vec<EventData> = chunk.iter().map(|&i| event_data(&events[i])).collect();
            match append(client, &events[chunk[0]].stream, data).await {
                Ok(()) => {}
                Err(Failure::Target(e)) => return Err((None, Failure::Target(e))),
                Err(Failure::Refused(_)) => {
                    // One by one: what is stored already is acknowledged again,
                    // and the first event the server refuses is found.
                    for &i in chunk {
                        match append(client, &events[i].stream, vec![event_data(&events[i])]).await {
                            Ok(()) => {}
                            Err(f) => return Err((Some(i), f)),
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// One append with expected revision "any".
async fn append(client: &Client, stream: &str, data: Vec<EventData>) -> Result<(), Failure> {
    let options = AppendToStreamOptions::default().stream_state(StreamState::Any);
    match client.append_to_stream(stream, &options, data).await {
        Ok(_) => Ok(()),
        Err(e) => Err(classify(e)),
    }
}

/// A client error as a failure: the server's refusal of this append, a
/// refusal of every append (credentials, permissions), or a passing failure.
fn classify(e: kurrentdb::Error) -> Failure {
    use kurrentdb::Error as E;
    let text = format!("KurrentDB: {e}");
    match e {
        E::WrongExpectedVersion { .. } | E::ResourceDeleted => Failure::Refused(text),
        // gRPC's INVALID_ARGUMENT, FAILED_PRECONDITION and OUT_OF_RANGE.
        E::Grpc { code, .. } if matches!(i32::from(code), 3 | 9 | 11) => Failure::Refused(text),
        E::AccessDenied => Failure::Target(TargetError::Refused(text)),
        _ => Failure::Target(TargetError::Unavailable(text)),
    }
}

/// `indexes` cut into appends of at most [`CHUNK_EVENTS`] events and about
/// [`CHUNK_BYTES`] bytes (never empty; an event larger than that goes alone).
fn chunks<'a>(events: &[RecordedEvent], indexes: &'a [usize]) -> Vec<&'a [usize]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (k, &i) in indexes.iter().enumerate() {
        let e = &events[i];
        let size = e.data.len() + e.metadata.len() + e.event_type.len() + 100;
        if k > start && (k - start >= CHUNK_EVENTS || bytes + size > CHUNK_BYTES) {
            out.push(&indexes[start..k]);
            start = k;
            bytes = 0;
        }
        bytes += size;
    }
    if start < indexes.len() {
        out.push(&indexes[start..]);
    }
    out
}

/// The custom metadata of an event whose subject was shredded at the source:
/// its data is gone, and empty data alone would look like an event's own.
pub const ERASED_METADATA: &[u8] = annal::ERASED_MARKER;

/// The event as the client sends it: its id, type, data and metadata (for
/// an erased event: empty data and [`ERASED_METADATA`]).
pub fn event_data(e: &RecordedEvent) -> EventData {
    if e.is_erased() {
        return EventData::binary(&e.event_type, bytes::Bytes::new())
            .id(e.id)
            .metadata(bytes::Bytes::from_static(ERASED_METADATA));
    }
    let json = match e.content_type {
        ContentType::Json => serde_json::from_slice::<&serde_json::value::RawValue>(&e.data)
            .ok()
            .and_then(|raw| EventData::json(&e.event_type, &raw).ok()),
        _ => None,
    };
    let data = json
        .unwrap_or_else(|| EventData::binary(&e.event_type, e.data.clone()))
        .id(e.id);
    if e.metadata.is_empty() {
        data
    } else {
        data.metadata(e.metadata.clone())
    }
}

/// The events' indexes grouped by stream, each group in source order, the
/// groups in the order of their streams' first events.
fn by_stream(events: &[RecordedEvent]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, e) in events.iter().enumerate() {
        match at.get(e.stream.as_str()) {
            Some(&g) => groups[g].push(i),
            None => {
                at.insert(&e.stream, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    groups
}

impl ForwardTarget for KurrentTarget {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn load_checkpoint(&mut self, _forwarder: &str) -> Result<Option<u64>, TargetError> {
        // Connect early, so that a wrong address or password shows at start:
        // a read of a stream that need not exist, which needs credentials.
        let client = self.client()?;
        let timeout = self.timeout;
        let probe = self.rt.block_on(async move {
            let read = async {
                let options = kurrentdb::ReadStreamOptions::default().max_count(1);
                let mut s = client.read_stream("annal-forward-probe", &options).await?;
                s.next().await.map(|_| ())
            };
            tokio::time::timeout(timeout, read).await
        });
        if !matches!(
            probe,
            Ok(Ok(()) | Err(kurrentdb::Error::ResourceNotFound | kurrentdb::Error::ResourceDeleted))
        ) {
            // Start from a fresh client next time: this one may have given up.
            self.client = None;
        }
        match probe {
            Ok(Ok(())) | Ok(Err(kurrentdb::Error::ResourceNotFound | kurrentdb::Error::ResourceDeleted)) => Ok(None),
            Ok(Err(e)) => match classify(e) {
                Failure::Target(t) => Err(t),
                Failure::Refused(r) => Err(TargetError::Unavailable(r)),
            },
            Err(_) => Err(TargetError::Unavailable(format!(
                "KurrentDB: no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), TargetError> {
        if batch.events.is_empty() {
            return Ok(());
        }
        let client = self.client()?;
        let groups = by_stream(batch.events);
        let events = batch.events;
        let timeout = self.timeout;
        let concurrency = self.concurrency;
        let result = self.rt.block_on(async move {
            let all = futures_util::stream::iter(groups.iter())
                .map(|g| Self::append_stream(&client, events, g))
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>();
            tokio::time::timeout(timeout, all).await
        });
        let results = match result {
            Ok(r) => r,
            Err(_) => {
                self.client = None;
                return Err(TargetError::Unavailable(format!(
                    "KurrentDB: no answer within {} ms",
                    timeout.as_millis()
                )));
            }
        };
        // A failure of the server wins (the batch is retried whole); else the
        // first refused event in source order is the poison one.
        let mut poison: Option<(usize, String)> = None;
        for r in results {
            match r {
                Ok(()) => {}
                Err((_, Failure::Target(e))) => {
                    self.client = None;
                    return Err(e);
                }
                Err((index, Failure::Refused(reason))) => {
                    let index = index.unwrap_or(0);
                    if poison.as_ref().is_none_or(|(p, _)| index < *p) {
                        poison = Some((index, reason));
                    }
                }
            }
        }
        match poison {
            None => Ok(()),
            Some((index, reason)) => Err(TargetError::Rejected {
                index,
                reason: format!("the server refused the event: {reason}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream: &str, n: usize, size: usize) -> RecordedEvent {
        RecordedEvent {
            stream: stream.into(),
            revision: 0,
            position: n as u64,
            id: uuid::Uuid::new_v4(),
            event_type: "T".into(),
            content_type: ContentType::Binary,
            data: vec![b'x'; size].into(),
            metadata: Default::default(),
            tags: Vec::new(),
            timestamp_micros: 0,
            personal: annal::Personal::Plain,
        }
    }

    #[test]
    fn streams_keep_their_order_and_chunks_their_limits() {
        let events: Vec<RecordedEvent> = ["a", "b", "a", "c", "b", "a"]
            .iter()
            .enumerate()
            .map(|(i, s)| event(s, i, 10))
            .collect();
        assert_eq!(by_stream(&events), vec![vec![0, 2, 5], vec![1, 4], vec![3]]);
        let big: Vec<RecordedEvent> = (0..5).map(|i| event("s", i, 400 << 10)).collect();
        let idx: Vec<usize> = (0..5).collect();
        let cut = chunks(&big, &idx);
        assert_eq!(cut, vec![&[0, 1][..], &[2, 3][..], &[4][..]]);
        let many: Vec<RecordedEvent> = (0..3).map(|i| event("s", i, 1)).collect();
        let idx: Vec<usize> = (0..3).cycle().take(1200).collect();
        assert_eq!(
            chunks(&many, &idx).iter().map(|c| c.len()).collect::<Vec<_>>(),
            [500, 500, 200]
        );
    }
}
