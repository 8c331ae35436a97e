//! The NATS JetStream target (`nats://user:password@host:4222`), through
//! `async-nats`.
//!
//! Each event is published to a subject made from a template (parameter
//! `subject`, default `annal.{stream}`; `{stream}` and `{type}` are replaced by
//! the event's stream and type, sanitised to one subject token), with its data
//! as the payload, `Nats-Msg-Id` set to the event id (the stream's duplicate
//! window drops a retry) and `Annal-*` headers for id, type, stream, revision,
//! position, tags, content type, time, source and metadata; an event that
//! names a subject carries it in `Annal-Subject`, and an event whose subject
//! was shredded at the source before it was delivered carries
//! `Annal-Erased: true` and an empty payload (and no metadata). Parameter
//! `headers=lean` leaves out the four headers a consumer can do without
//! (`Annal-Event-Id`, the same as `Nats-Msg-Id`; `Annal-Time-Micros`,
//! `Annal-Source`, `Annal-Content-Type`): the client builds each header into
//! a hash map with two allocations, which is most of the target's CPU per
//! event (BENCHMARKS.md). The JetStream
//! stream (parameter `stream`, default `ANNAL`) is created if missing, over the
//! subjects the template can make. A batch is confirmed only when every
//! publish is acknowledged; up to the forwarder's `max_in_flight` publishes
//! are outstanding at once. JetStream may refuse one message and store the
//! next (a stream's `max_bytes` with `discard: new`, or an account's storage
//! limit, refuse a large message and take a smaller one after it; a
//! clustered stream may change leaders in between), and the batch sent
//! again would then store the refused event after later ones of its stream.
//! Two ways keep each annal stream in order (parameter `pipeline`):
//! - `log` (the default): every message of a batch but the first sent names
//!   the one before it in `Nats-Expected-Last-Msg-Id`, so JetStream stores a
//!   message only right after its predecessor, and refuses (code 10070)
//!   every message after one it refused. JetStream checks the message id
//!   before the expectation, so a message it holds already is answered as a
//!   duplicate. When a try fails, the target keeps the ids of the leading
//!   events JetStream acknowledged (stored, or held already), and the next
//!   try of the batch starts after them, with its first message naming
//!   nothing: every event before it is stored. A refusal of a message whose
//!   predecessor was stored by this very try means another message came in
//!   between: another publisher writes to the stream, and the target falls
//!   back to `stream` for as long as it lives (a restarted forwarder chains
//!   again). A refusal after a predecessor answered as a duplicate is not
//!   that: JetStream's memory of ids can outlive its messages (limits
//!   removed them, and a restart rebuilt the memory from what was left), or
//!   another publisher wrote after the duplicate; either way the next try
//!   starts after it.
//! - `stream`: at most one message per annal stream in flight, for a
//!   JetStream stream that others publish to as well; a backlog of one annal
//!   stream then goes at one round trip per event.
//!
//! A message JetStream refuses for its size
//! (the stream's `max_msg_size`, or the server's `max_payload`) is refused
//! for good: the forwarder parks it. The publishes of a batch are plain NATS publishes
//! with a reply subject under one inbox subscription per batch: JetStream
//! answers each on it (what the client's JetStream publish does with an
//! inbox, a channel and timers per message). NATS keeps no checkpoint for us: the forwarder
//! keeps it in the store.
//!
//! This module owns subjects and headers; it must never decide which events go.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use annal::{Batch, ContentType, ForwardTarget, RecordedEvent, TargetError};
use async_nats::header::HeaderName;
use async_nats::jetstream;

use crate::error::ConfigError;
use crate::url::TargetUrl;

/// Forwards to a JetStream stream.
pub struct NatsTarget {
    rt: tokio::runtime::Runtime,
    server: String,
    user: Option<(String, String)>,
    token: Option<String>,
    described: String,
    template: String,
    /// The template cut at its placeholders.
    parts: Vec<Part>,
    stream: String,
    duplicate_window: Duration,
    timeout: Duration,
    /// This node's name (parameter `source`) as a header value.
    source_header: String,
    /// Whether the messages of a batch are chained by
    /// `Nats-Expected-Last-Msg-Id` (parameter `pipeline=log`); false for
    /// `pipeline=stream`, and from the first sign of another publisher on.
    chain: bool,
    /// Parameter `headers=lean`: no `Annal-Event-Id`, `Annal-Time-Micros`,
    /// `Annal-Source` or `Annal-Content-Type`.
    lean: bool,
    /// The most messages in flight at once during the last batch.
    peak_in_flight: AtomicUsize,
    /// The ids of the leading events of the last batch, when it failed,
    /// that JetStream acknowledged (stored, or held already): the next try
    /// of the batch does not send them again, and chains from the first
    /// event after them. Sending them again would find them duplicates, or,
    /// where JetStream forgot their ids (its duplicate window passed, or
    /// limits removed them before a restart), store them twice.
    confirmed: HashSet<uuid::Uuid>,
    /// The connection, once the JetStream stream is known to exist.
    client: Option<async_nats::Client>,
}

impl std::fmt::Debug for NatsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTarget")
            .field("target", &self.described)
            .finish_non_exhaustive()
    }
}

/// `s` as one subject token: anything but letters, digits, `-` and `_` becomes `_`.
pub fn sanitise_token(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The subject of an event under a template.
pub fn subject_for(template: &str, event: &RecordedEvent) -> String {
    render(&parse_template(template), event)
}

/// A piece of a subject template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Stream,
    Type,
}

/// A template cut at its placeholders, once, instead of searched per event.
fn parse_template(template: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = template;
    loop {
        let next = [("{stream}", Part::Stream), ("{type}", Part::Type)]
            .into_iter()
            .filter_map(|(p, part)| rest.find(p).map(|at| (at, p.len(), part)))
            .min_by_key(|(at, _, _)| *at);
        let Some((at, len, part)) = next else {
            if !rest.is_empty() {
                parts.push(Part::Text(rest.to_string()));
            }
            return parts;
        };
        if at > 0 {
            parts.push(Part::Text(rest[..at].to_string()));
        }
        parts.push(part);
        rest = &rest[at + len..];
    }
}

/// Appends `s` as one subject token (see [`sanitise_token`]).
fn push_token(out: &mut String, s: &str) {
    if s.is_empty() {
        out.push('_');
    }
    out.extend(s.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        }
    }));
}

/// The subject of an event under a parsed template.
fn render(parts: &[Part], event: &RecordedEvent) -> String {
    let mut subject = String::with_capacity(64);
    for part in parts {
        match part {
            Part::Text(t) => subject.push_str(t),
            Part::Stream => push_token(&mut subject, &event.stream),
            Part::Type => push_token(&mut subject, &event.event_type),
        }
    }
    subject
}

impl NatsTarget {
    /// A target for the URL; connects on first use.
    pub fn new(t: &TargetUrl) -> Result<NatsTarget, ConfigError> {
        let template = t.param("subject").unwrap_or_else(|| "annal.{stream}".into());
        let probe = template.replace("{stream}", "x").replace("{type}", "x");
        // A placeholder is a whole token: the JetStream stream is made over
        // the template with each placeholder as `*`, which is a wildcard only
        // as a whole token (`a.b{type}` would make a stream taking nothing).
        let partial = template
            .split('.')
            .any(|tok| tok.contains(['{', '}']) && tok != "{stream}" && tok != "{type}");
        if probe.is_empty()
            || partial
            || probe
                .split('.')
                .any(|tok| tok.is_empty() || tok.contains(['*', '>', ' ', '{', '}']))
        {
            return Err(t.bad(format!(
                "subject template {template:?} must be dot-separated tokens, with {{stream}} and {{type}} as placeholders"
            )));
        }
        let stream = t.param("stream").unwrap_or_else(|| "ANNAL".into());
        if stream.is_empty()
            || !stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(t.bad(format!("stream {stream:?} must be letters, digits, - or _")));
        }
        let host = t.url.host_str().unwrap_or("127.0.0.1");
        let port = t.url.port().unwrap_or(4222);
        let user = match (t.url.username(), t.url.password()) {
            ("", _) => None,
            (u, Some(p)) => Some((decode(u), decode(p))),
            (u, None) => Some((decode(u), String::new())),
        };
        // A user without a password is a token, as NATS URLs have it.
        let (user, token) = match (user, t.param("token")) {
            (_, Some(tok)) => (None, Some(tok)),
            (Some((u, p)), None) if p.is_empty() => (None, Some(u)),
            (u, None) => (u, None),
        };
        let source = t.param("source").unwrap_or_else(crate::node::node_name);
        let chain = match t.param("pipeline").as_deref() {
            None | Some("log") => true,
            Some("stream") => false,
            Some(other) => {
                return Err(t.bad(format!("pipeline {other:?} must be log or stream")));
            }
        };
        let lean = match t.param("headers").as_deref() {
            None | Some("all") => false,
            Some("lean") => true,
            Some(other) => {
                return Err(t.bad(format!("headers {other:?} must be all or lean")));
            }
        };
        Ok(NatsTarget {
            rt: crate::node::runtime()?,
            server: format!("nats://{host}:{port}"),
            user,
            token,
            described: format!("{t} (JetStream stream {stream}, subject {template})"),
            parts: parse_template(&template),
            template,
            stream,
            duplicate_window: t.millis("duplicate_window_ms", Duration::from_secs(120))?,
            timeout: t.millis("timeout_ms", Duration::from_secs(10))?,
            source_header: header_safe(&source),
            chain,
            lean,
            peak_in_flight: AtomicUsize::new(0),
            confirmed: HashSet::new(),
            client: None,
        })
    }

    fn connection(&mut self) -> Result<async_nats::Client, TargetError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(self.timeout)
            .subscription_capacity(ACK_CAPACITY)
            .request_timeout(Some(self.timeout));
        if let Some((u, p)) = &self.user {
            options = options.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &self.token {
            options = options.token(t.clone());
        }
        // Connecting again is the forwarder's business (with its backoff and
        // a fresh runtime), never the client's: a client that reconnected in
        // the middle of a batch would send the rest of it on the new
        // connection while what the old socket held was lost, and the retry
        // of the batch would then store those events after later ones of
        // their streams. (`max_reconnects(0)` means no limit in async-nats.)
        // So once connected, the client waits "forever" before reconnecting;
        // a batch sees the connection state go and fails, and `reset` ends
        // the old client's task with its runtime.
        let connected = Arc::new(AtomicBool::new(false));
        let once = connected.clone();
        options = options.reconnect_delay_callback(move |_| {
            if once.load(Ordering::Acquire) {
                NEVER
            } else {
                Duration::ZERO
            }
        });
        let server = self.server.clone();
        let config = jetstream::stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.template.replace("{stream}", "*").replace("{type}", "*")],
            duplicate_window: self.duplicate_window,
            ..Default::default()
        };
        let timeout = self.timeout;
        let client = self.rt.block_on(async move {
            let client = tokio::time::timeout(timeout, async_nats::connect_with_options(server, options))
                .await
                .map_err(|_| TargetError::Unavailable("no answer from NATS".into()))?
                .map_err(|e| connect_error(&e))?;
            let mut js = jetstream::new(client.clone());
            js.set_timeout(timeout);
            js.get_or_create_stream(config)
                .await
                .map_err(|e| TargetError::Unavailable(format!("creating the JetStream stream: {e}")))?;
            Ok::<_, TargetError>(client)
        })?;
        connected.store(true, Ordering::Release);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Forgets the connection after a failed batch: the next batch connects
    /// again, on a new runtime, so that the old client's task (which may be
    /// waiting to reconnect, holding what it had queued) ends.
    fn reset(&mut self) {
        self.client = None;
        if let Ok(rt) = crate::node::runtime() {
            std::mem::replace(&mut self.rt, rt).shutdown_background();
        }
    }

    /// The most messages that were in flight at once (sent, not yet
    /// acknowledged) during the last batch: up to `max_in_flight` with
    /// `pipeline=log`, at most the number of annal streams in the batch with
    /// `pipeline=stream`.
    pub fn last_peak_in_flight(&self) -> usize {
        self.peak_in_flight.load(Ordering::Relaxed)
    }

    /// Whether messages are chained (`pipeline=log`, and no other publisher
    /// seen on the JetStream stream).
    pub fn chained(&self) -> bool {
        self.chain
    }

    fn subject(&self, e: &RecordedEvent) -> String {
        render(&self.parts, e)
    }

    /// The headers of event `e`; `after` is the event whose message must be
    /// the JetStream stream's last for this one to be stored (see the module
    /// comment), if any.
    fn headers(&self, e: &RecordedEvent, after: Option<&RecordedEvent>) -> async_nats::HeaderMap {
        // Names made once (no allocation); values handed over as owned strings
        // (one allocation each, no copy again).
        const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");
        const EVENT_ID: HeaderName = HeaderName::from_static("Annal-Event-Id");
        const TYPE: HeaderName = HeaderName::from_static("Annal-Type");
        const STREAM: HeaderName = HeaderName::from_static("Annal-Stream");
        const REVISION: HeaderName = HeaderName::from_static("Annal-Revision");
        const POSITION: HeaderName = HeaderName::from_static("Annal-Position");
        const TIME: HeaderName = HeaderName::from_static("Annal-Time-Micros");
        const SOURCE: HeaderName = HeaderName::from_static("Annal-Source");
        const CONTENT_TYPE: HeaderName = HeaderName::from_static("Annal-Content-Type");
        const TAGS: HeaderName = HeaderName::from_static("Annal-Tags");
        const METADATA: HeaderName = HeaderName::from_static("Annal-Metadata");
        const EXPECTED_LAST: HeaderName = HeaderName::from_static("Nats-Expected-Last-Msg-Id");
        const SUBJECT: HeaderName = HeaderName::from_static("Annal-Subject");
        const ERASED: HeaderName = HeaderName::from_static("Annal-Erased");
        let mut h = async_nats::HeaderMap::new();
        let mut buffer = uuid::Uuid::encode_buffer();
        let id: &str = e.id.hyphenated().encode_lower(&mut buffer);
        h.insert(MSG_ID, id.to_string());
        if !self.lean {
            h.insert(EVENT_ID, id.to_string());
        }
        if let Some(before) = after {
            h.insert(EXPECTED_LAST, message_id(before));
        }
        h.insert(TYPE, header_safe(&e.event_type));
        h.insert(STREAM, header_safe(&e.stream));
        h.insert(REVISION, e.revision.to_string());
        h.insert(POSITION, e.position.to_string());
        if !self.lean {
            h.insert(TIME, e.timestamp_micros.to_string());
            h.insert(SOURCE, self.source_header.clone());
            h.insert(
                CONTENT_TYPE,
                match e.content_type {
                    ContentType::Json => "application/json",
                    _ => "application/octet-stream",
                },
            );
        }
        if !e.tags.is_empty() {
            h.insert(TAGS, header_safe(&e.tags.join(",")));
        }
        if let Ok(m) = std::str::from_utf8(&e.metadata)
            && !m.is_empty()
        {
            h.insert(METADATA, header_safe(m));
        }
        if let Some(subject) = e.subject() {
            h.insert(SUBJECT, header_safe(subject));
        }
        if e.is_erased() {
            h.insert(ERASED, "true");
        }
        h
    }
}

/// The `Nats-Msg-Id` of an event's message: its id, hyphenated, lower case.
fn message_id(e: &RecordedEvent) -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    e.id.hyphenated().encode_lower(&mut buffer).to_string()
}

/// Header values cannot hold line breaks.
fn header_safe(s: &str) -> String {
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], " ")
    } else {
        s.to_string()
    }
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// How long a client waits before reconnecting once it was connected: longer
/// than any batch, so never while the client is in use.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Messages a subscription's channel holds (the batch's acknowledgements).
const ACK_CAPACITY: usize = 65_536;
/// Room kept free in that channel: at most `ACK_CAPACITY - ACK_MARGIN`
/// publishes of a batch are unacknowledged at once, whatever `max_in_flight`
/// says (a larger number stalled a forwarder for good: its acknowledgements
/// were dropped, and every retry sent the same batch).
const ACK_MARGIN: usize = 1024;

fn connect_error(e: &async_nats::ConnectError) -> TargetError {
    use async_nats::ConnectErrorKind as K;
    match e.kind() {
        K::Authentication | K::AuthorizationViolation | K::Tls => TargetError::Refused(format!("NATS: {e}")),
        _ => TargetError::Unavailable(format!("NATS: {e}")),
    }
}

impl ForwardTarget for NatsTarget {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn load_checkpoint(&mut self, _forwarder: &str) -> Result<Option<u64>, TargetError> {
        // Connect early, so that a wrong address or password shows at start.
        self.connection()?;
        Ok(None)
    }

    fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), TargetError> {
        if batch.events.is_empty() {
            return Ok(());
        }
        let client = self.connection()?;
        // Acknowledgements wait in the reply subscription's channel until read;
        // one that finds it full is dropped (a slow consumer), so never more
        // may be outstanding than it holds.
        let max_in_flight = batch.max_in_flight.clamp(1, ACK_CAPACITY - ACK_MARGIN);
        let timeout = self.timeout;
        let chain = self.chain;
        self.peak_in_flight.store(0, Ordering::Relaxed);
        // What JetStream answered to each message of the batch.
        let mut answered = vec![UNANSWERED; batch.events.len()];
        let this = &*self;
        let result = self.rt.block_on(async {
            // One reply subscription for the whole batch (`<inbox>.<n>` for the
            // n-th message), instead of JetStream publish's inbox, channel and
            // timers per message: JetStream answers each publish on its reply
            // subject, once.
            let inbox = client.new_inbox();
            let mut acks = client
                .subscribe(format!("{inbox}.*"))
                .await
                .map_err(|e| AckFailure::Target(TargetError::Unavailable(format!("NATS subscribe: {e}"))))?;
            let events = batch.events;
            let mut pending = Pending::default();
            // The leading events JetStream acknowledged in the last try of
            // this batch are not sent again (see `confirmed`).
            let skip = events.iter().take_while(|e| this.confirmed.contains(&e.id)).count();
            answered[..skip].fill(HELD);
            // Events that wait for the message of their stream in flight,
            // by stream, in order; and those whose turn came (`pipeline=stream`).
            let mut held: HashMap<&str, VecDeque<usize>> = HashMap::new();
            let mut ready: VecDeque<usize> = VecDeque::new();
            let (mut next, mut sent, mut flushed) = (skip, 0usize, false);
            loop {
                while pending.len() < max_in_flight {
                    let n = match ready.pop_front() {
                        Some(n) => n,
                        None if next < events.len() => {
                            let n = next;
                            next += 1;
                            let stream = events[n].stream.as_str();
                            if !chain && !pending.claim(stream) {
                                // One message of a stream at a time (see the
                                // module comment); other streams go on.
                                held.entry(stream).or_default().push_back(n);
                                continue;
                            }
                            n
                        }
                        None => break,
                    };
                    // A connection lost in the middle of the batch fails it now
                    // (the client never connects again on its own: see `connection`).
                    if client.connection_state() == async_nats::connection::State::Disconnected {
                        return Err(AckFailure::Target(TargetError::Unavailable(
                            "NATS connection lost in the middle of a batch; it is sent again on a new connection"
                                .into(),
                        )));
                    }
                    let e = &events[n];
                    // Chained, each message but the first sent is stored
                    // only right after the one before it.
                    let after = if chain && n > skip { events.get(n - 1) } else { None };
                    // Each message is made just before it is queued, not the whole
                    // batch before the first is sent.
                    client
                        .publish_with_reply_and_headers(
                            this.subject(e),
                            reply_subject(&inbox, n),
                            this.headers(e, after),
                            e.data.clone(),
                        )
                        .await
                        .map_err(|err| AckFailure::Target(publish_error(&err, n)))?;
                    pending.sent(n, &e.stream);
                    this.peak_in_flight.fetch_max(pending.len(), Ordering::Relaxed);
                    sent += 1;
                    if sent % WRITE_EVERY == 0 {
                        // Let the connection's task (on this runtime) write what is
                        // queued, so that the server works on the first messages
                        // while the next are made.
                        tokio::task::yield_now().await;
                    }
                }
                if pending.len() == 0 {
                    // Nothing in flight, nothing ready: every event went.
                    break;
                }
                if next == events.len() && !flushed {
                    tokio::time::timeout(timeout, client.flush())
                        .await
                        .map_err(|_| {
                            AckFailure::Target(TargetError::Unavailable("NATS flush: no progress in time".into()))
                        })?
                        .map_err(|e| AckFailure::Target(TargetError::Unavailable(format!("NATS flush: {e}"))))?;
                    flushed = true;
                }
                let (index, answer) = next_ack(&mut acks, &inbox, timeout).await?;
                if !pending.in_flight(index) {
                    // Not a message of this batch in flight: a second answer.
                    continue;
                }
                match answer {
                    Ok(duplicate) => answered[index] = if duplicate { HELD } else { STORED },
                    Err(failure) => return Err(failure),
                }
                if let Some(stream) = pending.acked(index) {
                    // The stream's next event, if one waits, keeps its turn.
                    match held.get_mut(stream).and_then(VecDeque::pop_front) {
                        Some(n) => ready.push_back(n),
                        None => pending.release(stream),
                    }
                }
            }
            // The subscription ends when it is dropped.
            drop(acks);
            Ok::<(), AckFailure>(())
        });
        // The leading events JetStream holds are not sent again by the next
        // try of this batch; none once it went whole.
        self.confirmed.clear();
        if result.is_err() {
            let held = answered.iter().take_while(|a| **a != UNANSWERED).count();
            self.confirmed.extend(batch.events[..held].iter().map(|e| e.id));
        }
        let result = match result {
            Ok(()) => Ok(()),
            Err(AckFailure::Target(e)) => Err(e),
            Err(AckFailure::NotAfter { index, last }) => {
                match after_refusal(index.checked_sub(1).and_then(|i| answered.get(i)).copied()) {
                    Refusal::Resume => Err(TargetError::Unavailable(format!(
                        "NATS JetStream holds the events before event {index} of the batch but its last message is {last:?}; the next try starts at that event"
                    ))),
                    Refusal::OtherPublisher => {
                        self.chain = false;
                        Err(TargetError::Unavailable(format!(
                            "another publisher writes to JetStream stream {} (a message {last:?} came between two of annal's): the batch goes again with one message per annal stream in flight (pipeline=stream)",
                            self.stream
                        )))
                    }
                    Refusal::Again => Err(TargetError::Unavailable(format!(
                        "NATS JetStream refused event {index} of the batch after its last message {last:?}; the batch goes again"
                    ))),
                }
            }
        };
        if result.is_err() {
            // Start from a fresh connection (and runtime) next time.
            self.reset();
        }
        result
    }
}

/// Why a batch failed: as the target says it, or the chained message at
/// `index` that JetStream refused because its stream's last message was
/// `last` (a message id, empty for a message without one), not the one the
/// chain named.
enum AckFailure {
    Target(TargetError),
    NotAfter { index: usize, last: String },
}

impl From<TargetError> for AckFailure {
    fn from(e: TargetError) -> AckFailure {
        AckFailure::Target(e)
    }
}

/// What a refused chained message means, by what JetStream answered to
/// the message before it in the batch.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The one before it was held already (a duplicate) while the stream's
    /// last message is another: JetStream remembers ids it no longer holds
    /// (or another publisher wrote after the duplicate). Every event up to
    /// it is stored: the next try starts at the refused one.
    Resume,
    /// The one before it was stored by this try, yet another message came
    /// after it: another publisher writes to the stream.
    OtherPublisher,
    /// No answer yet for the one before it (answers out of order): the
    /// batch goes again.
    Again,
}

fn after_refusal(before: Option<u8>) -> Refusal {
    match before {
        Some(HELD) => Refusal::Resume,
        Some(STORED) => Refusal::OtherPublisher,
        _ => Refusal::Again,
    }
}

/// What JetStream answered to a message of a batch: nothing yet, stored it,
/// or held it already (a duplicate; also said of a message not sent again).
const UNANSWERED: u8 = 0;
const STORED: u8 = 1;
const HELD: u8 = 2;

/// Publishes queued between two chances for the connection to write them.
const WRITE_EVERY: usize = 256;

/// The reply subject of the `n`-th message of a batch.
fn reply_subject(inbox: &str, n: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(inbox.len() + 8);
    s.push_str(inbox);
    // Writing to a String cannot fail.
    let _ = write!(s, ".{n}");
    s
}

/// The messages of a batch sent and not yet acknowledged, by their index
/// in the batch, and the annal streams that have one in flight or next in
/// line (at most one message of a stream is in flight).
#[derive(Default)]
struct Pending<'a> {
    by_index: HashMap<usize, &'a str>,
    claimed: HashSet<&'a str>,
}

impl<'a> Pending<'a> {
    fn len(&self) -> usize {
        self.by_index.len()
    }

    /// Takes the turn of `stream`: false if it has a message in flight or next in line.
    fn claim(&mut self, stream: &'a str) -> bool {
        self.claimed.insert(stream)
    }

    /// Gives the turn of `stream` back: nothing of it waits.
    fn release(&mut self, stream: &str) {
        self.claimed.remove(stream);
    }

    /// Whether the message at index `n` is sent and not answered yet.
    fn in_flight(&self, n: usize) -> bool {
        self.by_index.contains_key(&n)
    }

    fn sent(&mut self, n: usize, stream: &'a str) {
        self.by_index.insert(n, stream);
    }

    /// The message at index `n` is acknowledged: its stream (`None` for an
    /// index not in flight, a second answer).
    fn acked(&mut self, n: usize) -> Option<&'a str> {
        self.by_index.remove(&n)
    }
}

/// What a publish that the client refused to send means: a message larger
/// than the server takes (`max_payload`) is refused for good, the rest is
/// for now.
fn publish_error(e: &async_nats::PublishError, n: usize) -> TargetError {
    match e.kind() {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded => TargetError::Rejected {
            index: n,
            reason: format!("NATS: {e}"),
        },
        _ => TargetError::Unavailable(format!("NATS publish: {e}")),
    }
}

/// JetStream's error code for a message larger than the stream's `max_msg_size`.
const MESSAGE_TOO_LARGE: u64 = 10054;

/// Whether a JetStream `error` answer refuses the message for good: only
/// one over the stream's maximum message size (by its code, or by its
/// description for servers that send no code). Anything else (limits of
/// the stream or account, a leader away) may pass on a later try.
fn refused_for_good(error: &serde_json::Value) -> bool {
    error.get("err_code").and_then(serde_json::Value::as_u64) == Some(MESSAGE_TOO_LARGE)
        || error
            .get("description")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|d| d.contains("message size exceeds maximum"))
}

/// JetStream's error code for a message whose `Nats-Expected-Last-Msg-Id`
/// is not the stream's last message id.
const WRONG_LAST_MSG_ID: u64 = 10070;

/// The stream's last message id that a JetStream `error` answer names when it
/// refuses a chained message ("wrong last msg ID: <id>"; empty when the
/// last message has no id, or the stream none), or `None` for any other error.
fn wrong_last(error: &serde_json::Value) -> Option<String> {
    if error.get("err_code").and_then(serde_json::Value::as_u64) != Some(WRONG_LAST_MSG_ID) {
        return None;
    }
    let description = error.get("description").and_then(serde_json::Value::as_str)?;
    let at = description.find("last msg ID:")?;
    Some(description[at + "last msg ID:".len()..].trim().to_string())
}

/// Waits for the next JetStream acknowledgement of a batch (up to `timeout`):
/// the index of the message it answers, and whether JetStream stored it
/// (`Ok(true)` for one it held already, a duplicate) or refused it. A "no
/// responders" status (no stream takes the subject) or an `error` answer
/// fails the batch, which is then sent again; an answer that refuses the
/// message for good makes it a poison event (`Rejected`), which is parked.
/// `Err` when no answer comes, or one on a subject not of the batch.
async fn next_ack(
    acks: &mut async_nats::Subscriber,
    inbox: &str,
    timeout: Duration,
) -> Result<(usize, Result<bool, AckFailure>), TargetError> {
    use futures_util::StreamExt;
    let m = match tokio::time::timeout(timeout, acks.next()).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(TargetError::Unavailable(
                "NATS connection closed before the acknowledgements".into(),
            ));
        }
        Err(_) => return Err(TargetError::Unavailable("no NATS acknowledgement in time".into())),
    };
    let index = m
        .subject
        .strip_prefix(inbox)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| TargetError::Unavailable(format!("NATS acknowledgement on {:?}", m.subject.as_str())))?;
    Ok((index, answer(&m, index)))
}

/// What a JetStream answer to the message at `index` says (see [`next_ack`]).
fn answer(m: &async_nats::Message, index: usize) -> Result<bool, AckFailure> {
    if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Err(
            TargetError::Unavailable("NATS acknowledgement: no JetStream stream takes the subject".into()).into(),
        );
    }
    // A good answer is {"stream":…,"seq":…[,"duplicate":true]}; only one that
    // mentions "error" or "duplicate" is parsed whole (a stream may be named so).
    let p: &[u8] = &m.payload;
    if p.is_empty() {
        return Err(TargetError::Unavailable("NATS acknowledgement: empty answer".into()).into());
    }
    let mentions = |word: &[u8]| p.windows(word.len()).any(|w| w == word);
    if !mentions(b"\"error\"") && !mentions(b"\"duplicate\"") {
        return Ok(false);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(p) else {
        return Err(TargetError::Unavailable("NATS acknowledgement: not JSON".into()).into());
    };
    let Some(error) = v.get("error") else {
        return Ok(v.get("duplicate").and_then(serde_json::Value::as_bool) == Some(true));
    };
    if refused_for_good(error) {
        return Err(TargetError::Rejected {
            index,
            reason: format!("NATS JetStream refused it: {error}"),
        }
        .into());
    }
    if let Some(last) = wrong_last(error) {
        return Err(AckFailure::NotAfter { index, last });
    }
    Err(TargetError::Unavailable(format!("NATS acknowledgement: {error}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_one_token_per_placeholder() {
        assert_eq!(sanitise_token("order-1"), "order-1");
        assert_eq!(sanitise_token("a.b c*>"), "a_b_c__");
        assert_eq!(sanitise_token(""), "_");
        let t = TargetUrl::parse("nats://h?subject=x.{type}.{stream}").unwrap();
        assert!(NatsTarget::new(&t).is_ok());
        let t = TargetUrl::parse("nats://h?subject=x.*").unwrap();
        assert!(NatsTarget::new(&t).is_err());
    }

    #[test]
    fn a_template_fills_every_placeholder_in_order() {
        let mut e = RecordedEvent {
            stream: "order.1".into(),
            revision: 0,
            position: 0,
            id: uuid::Uuid::nil(),
            event_type: "Placed x".into(),
            content_type: ContentType::Json,
            data: bytes::Bytes::new(),
            metadata: bytes::Bytes::new(),
            tags: Vec::new(),
            timestamp_micros: 0,
            personal: annal::Personal::Plain,
        };
        assert_eq!(subject_for("annal.{stream}", &e), "annal.order_1");
        assert_eq!(subject_for("{type}.{stream}.{type}", &e), "Placed_x.order_1.Placed_x");
        assert_eq!(subject_for("fixed.subject", &e), "fixed.subject");
        e.stream = String::new();
        assert_eq!(subject_for("a.{stream}.{type}", &e), "a._.Placed_x");
    }

    #[test]
    fn lean_headers_leave_out_only_the_four_a_consumer_can_do_without() {
        let e = RecordedEvent {
            stream: "o-1".into(),
            revision: 3,
            position: 9,
            id: uuid::Uuid::from_u128(5),
            event_type: "Placed".into(),
            content_type: ContentType::Json,
            data: bytes::Bytes::from_static(b"{}"),
            metadata: bytes::Bytes::from_static(b"{\"m\":1}"),
            tags: vec!["t".into()],
            timestamp_micros: 1,
            personal: annal::Personal::Subject("ann".into()),
        };
        let names = |url: &str| {
            let t = NatsTarget::new(&TargetUrl::parse(url).unwrap()).unwrap();
            let mut n: Vec<String> = t.headers(&e, None).iter().map(|(k, _)| k.to_string()).collect();
            n.sort();
            n
        };
        let all = names("nats://h");
        assert_eq!(all, names("nats://h?headers=all"));
        let lean = names("nats://h?headers=lean");
        let gone: Vec<&String> = all.iter().filter(|n| !lean.contains(n)).collect();
        assert_eq!(
            gone,
            [
                "Annal-Content-Type",
                "Annal-Event-Id",
                "Annal-Source",
                "Annal-Time-Micros"
            ]
        );
        assert!(lean.iter().all(|n| all.contains(n)));
        assert!(NatsTarget::new(&TargetUrl::parse("nats://h?headers=few").unwrap()).is_err());
    }

    #[test]
    fn a_refused_chain_names_the_streams_last_message() {
        let answer = |v: &str| serde_json::from_str::<serde_json::Value>(v).unwrap();
        assert_eq!(
            wrong_last(&answer(
                r#"{"code":400,"err_code":10070,"description":"wrong last msg ID: abc-1"}"#
            )),
            Some("abc-1".into())
        );
        // A last message without an id (another publisher's).
        assert_eq!(
            wrong_last(&answer(
                r#"{"code":400,"err_code":10070,"description":"wrong last msg ID: "}"#
            )),
            Some(String::new())
        );
        assert_eq!(
            wrong_last(&answer(
                r#"{"code":503,"err_code":10047,"description":"maximum bytes exceeded"}"#
            )),
            None
        );
        let t = TargetUrl::parse("nats://h?pipeline=sideways").unwrap();
        assert!(NatsTarget::new(&t).is_err());
        let t = TargetUrl::parse("nats://h?pipeline=stream").unwrap();
        assert!(!NatsTarget::new(&t).unwrap().chained());
        let t = TargetUrl::parse("nats://h").unwrap();
        assert!(NatsTarget::new(&t).unwrap().chained());
    }

    #[test]
    fn a_refusal_after_a_message_stored_by_the_same_try_means_another_publisher() {
        assert_eq!(after_refusal(Some(STORED)), Refusal::OtherPublisher);
        assert_eq!(after_refusal(Some(HELD)), Refusal::Resume);
        assert_eq!(after_refusal(Some(UNANSWERED)), Refusal::Again);
        assert_eq!(after_refusal(None), Refusal::Again);
    }

    #[test]
    fn a_placeholder_must_be_a_whole_token() {
        // The stream is made over `a.*.*`; `a.{stream}{type}` or `a.b{type}c`
        // would make one that takes no subject the template makes.
        for bad in [
            "a.{stream}{type}",
            "a.{stream}.b{type}c",
            "a.x{stream}",
            "a.{stream",
            "a.{other}",
        ] {
            let t = TargetUrl::parse(&format!("nats://h?subject={bad}")).unwrap();
            assert!(NatsTarget::new(&t).is_err(), "{bad}");
        }
        for good in ["a.{stream}", "{type}.{stream}", "fixed.subject"] {
            let t = TargetUrl::parse(&format!("nats://h?subject={good}")).unwrap();
            assert!(NatsTarget::new(&t).is_ok(), "{good}");
        }
    }
}
