//! The `event_store.client.persistent_subscriptions.PersistentSubscriptions`
//! service on annal's consumer groups: Create, Update, Delete, Read, GetInfo,
//! List, ReplayParked and RestartSubsystem, to a stream or to `$all`
//! (filtered).
//!
//! A protocol group is named by its source and its name; the annal group
//! behind it is named `<source>::<name>` (as KurrentDB names its own), each
//! part escaped to what annal allows in a group name ([`group_key`]). The
//! protocol's settings map onto annal's: message timeout to the
//! acknowledgement timeout, max retry count, buffer sizes to the in-flight
//! limit, minimum checkpoint count to the checkpoint interval; each strategy
//! to annal's of the same name (pinned by correlation to pinned). The
//! protocol's other settings are stored as the group's `extra` values
//! ([`Kept`]). A group made otherwise (over HTTP) is shown and found under its
//! own name and source.
//!
//! It owns these mappings. It must never decide who may use a group by
//! itself (it asks [`crate::auth`] with the group's source), nor run a
//! consumer (that is [`subscribers`]'s).

use std::sync::Arc;

use annal::{Filter, GroupInfo, GroupSettings, GroupSource, Store, Strategy, SubscribeFrom};
use tonic::{Request, Response, Status, Streaming};

use super::filter::prefixes_regex;
use super::proto::event_store::client::Empty;
use super::proto::event_store::client::persistent_subscriptions::create_req::all_options::filter_options::{
    Expression, Filter as WireFilter,
};
use super::proto::event_store::client::persistent_subscriptions::create_req::all_options::{
    AllOption, FilterOption, FilterOptions,
};
use super::proto::event_store::client::persistent_subscriptions::create_req::stream_options::RevisionOption;
use super::proto::event_store::client::persistent_subscriptions::read_req::options::uuid_option;
use super::proto::event_store::client::persistent_subscriptions::subscription_info::ConnectionInfo;
use super::proto::event_store::client::persistent_subscriptions::{
    CreateReq, CreateResp, DeleteReq, DeleteResp, GetInfoReq, GetInfoResp, ListReq, ListResp, ReadReq, ReadResp,
    ReplayParkedReq, ReplayParkedResp, SubscriptionInfo, UpdateReq, UpdateResp, create_req, delete_req, get_info_req,
    list_req, persistent_subscriptions_server, read_req, replay_parked_req, update_req,
};
use super::subscribers::{self, Kept, Registry, Subscription};
use super::{Answers, blocking, principal, status};
use crate::auth::{Need, Principal};
use crate::config::{MAX_GROUP_IN_FLIGHT, Role};
use crate::shares::{groups_full, groups_full_message};
use crate::state::AppState;
use crate::visible::Shown;

/// Longest acknowledgement timeout a group may have (a day); a timeout of 0
/// (none, for KurrentDB) takes it.
const MAX_ACK_TIMEOUT_MS: i64 = 86_400_000;
/// The buffer of a consumer that asks for none.
const DEFAULT_BUFFER: usize = 10;
/// The largest buffer a consumer may ask for.
const MAX_BUFFER: usize = 10_000;
/// The longest annal group name.
const MAX_GROUP_NAME: usize = 200;

/// What a group reads, as the protocol names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// One stream.
    Stream(String),
    /// `$all`.
    All,
}

impl Source {
    /// The source as the protocol spells it: the stream's name, or `$all`.
    pub(crate) fn label(&self) -> &str {
        match self {
            Source::Stream(s) => s,
            Source::All => "$all",
        }
    }

    fn of(settings: &GroupSettings) -> Source {
        match &settings.source {
            GroupSource::Stream(s) => Source::Stream(s.clone()),
            GroupSource::All(_) => Source::All,
        }
    }
}

/// Appends `part` escaped: ASCII letters, digits, `-` and `_` stay, every
/// other byte becomes `.` and two hex digits.
fn escape(part: &str, out: &mut String) {
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!(".{b:02X}"));
        }
    }
}

fn unescape(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'.' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The annal group behind group `name` of `source`: `<source>::<name>`, escaped.
pub(crate) fn group_key(source: &Source, name: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("the group name is empty"));
    }
    let mut key = String::new();
    escape(source.label(), &mut key);
    key.push_str("::");
    escape(name, &mut key);
    if key.len() > MAX_GROUP_NAME {
        return Err(Status::invalid_argument(format!(
            "the stream and group names are too long together: annal names the group {key:?}, \
             longer than {MAX_GROUP_NAME} bytes"
        )));
    }
    Ok(key)
}

/// The source label and group name of an annal group made by this protocol.
fn split_key(key: &str) -> Option<(String, String)> {
    let (source, name) = key.split_once("::")?;
    Some((unescape(source)?, unescape(name)?))
}

/// The source label and group name the protocol shows for annal group
/// `key`: those of a group this protocol made, or, for one made otherwise
/// (over HTTP), its source and its own name.
fn shown(key: &str, settings: &GroupSettings) -> (String, String) {
    split_key(key).unwrap_or_else(|| (Source::of(settings).label().to_string(), key.to_string()))
}

/// The id confirmed to a consumer and used in texts: `<source>::<name>`.
fn subscription_id(source: &Source, name: &str) -> String {
    format!("{}::{name}", source.label())
}

/// The settings of a Create or Update, in one shape.
struct SettingsIn {
    resolve_links: bool,
    extra_statistics: bool,
    max_retry_count: i32,
    min_checkpoint_count: i32,
    max_checkpoint_count: i32,
    max_subscriber_count: i32,
    live_buffer_size: i32,
    read_batch_size: i32,
    history_buffer_size: i32,
    message_timeout_ms: i64,
    checkpoint_after_ms: i64,
    strategy: String,
}

/// A [`SettingsIn`] from the Settings of module `$m` (create_req or update_req).
macro_rules! settings_in {
    ($s:expr, $m:ident, $strategy:expr) => {{
        let s = &$s;
        SettingsIn {
            resolve_links: s.resolve_links,
            extra_statistics: s.extra_statistics,
            max_retry_count: s.max_retry_count,
            min_checkpoint_count: s.min_checkpoint_count,
            max_checkpoint_count: s.max_checkpoint_count,
            max_subscriber_count: s.max_subscriber_count,
            live_buffer_size: s.live_buffer_size,
            read_batch_size: s.read_batch_size,
            history_buffer_size: s.history_buffer_size,
            message_timeout_ms: match s.message_timeout {
                Some($m::settings::MessageTimeout::MessageTimeoutMs(ms)) => i64::from(ms),
                Some($m::settings::MessageTimeout::MessageTimeoutTicks(t)) => t / 10_000,
                None => 30_000,
            },
            checkpoint_after_ms: match s.checkpoint_after {
                Some($m::settings::CheckpointAfter::CheckpointAfterMs(ms)) => i64::from(ms),
                Some($m::settings::CheckpointAfter::CheckpointAfterTicks(t)) => t / 10_000,
                None => 2_000,
            },
            strategy: $strategy,
        }
    }};
}

/// The name of a strategy given by number (the deprecated field and Update's).
fn strategy_name(n: i32) -> String {
    match n {
        1 => "RoundRobin",
        2 => "Pinned",
        _ => "DispatchToSingle",
    }
    .to_string()
}

/// annal's strategy for a named one: both pinned ones pin by stream.
fn strategy_of(name: &str) -> Result<Strategy, Status> {
    match name {
        "RoundRobin" => Ok(Strategy::RoundRobin),
        "DispatchToSingle" => Ok(Strategy::DispatchToSingle),
        "Pinned" | "PinnedByCorrelation" => Ok(Strategy::Pinned),
        other => Err(Status::invalid_argument(format!(
            "unknown consumer strategy {other:?}: annal knows DispatchToSingle, RoundRobin, Pinned and PinnedByCorrelation"
        ))),
    }
}

impl SettingsIn {
    fn kept(&self) -> Kept {
        Kept {
            strategy: self.strategy.clone(),
            max_subscribers: self.max_subscriber_count.max(0),
            resolve_links: self.resolve_links,
            extra_statistics: self.extra_statistics,
            live_buffer_size: self.live_buffer_size,
            read_batch_size: self.read_batch_size,
            history_buffer_size: self.history_buffer_size,
            checkpoint_after_ms: i32::try_from(self.checkpoint_after_ms).unwrap_or(i32::MAX),
            min_checkpoint_count: self.min_checkpoint_count,
            max_checkpoint_count: self.max_checkpoint_count,
        }
    }

    fn group_settings(&self, source: GroupSource, start: SubscribeFrom) -> Result<GroupSettings, Status> {
        let ack_timeout_ms = if self.message_timeout_ms <= 0 {
            MAX_ACK_TIMEOUT_MS
        } else {
            self.message_timeout_ms.min(MAX_ACK_TIMEOUT_MS)
        };
        // A buffer of 0 or less takes 1.
        let in_flight = usize::try_from(
            self.live_buffer_size
                .max(self.history_buffer_size)
                .max(self.read_batch_size),
        )
        .unwrap_or(1)
        .clamp(1, MAX_GROUP_IN_FLIGHT);
        Ok(GroupSettings {
            source,
            start,
            strategy: strategy_of(&self.strategy)?,
            ack_timeout_ms: u64::try_from(ack_timeout_ms).unwrap_or(30_000),
            max_retries: u32::try_from(self.max_retry_count.max(0)).unwrap_or(0),
            max_in_flight: in_flight,
            checkpoint_every: u64::try_from(self.min_checkpoint_count.max(1)).unwrap_or(1),
            skip_damaged: false,
            extra: self.kept().to_extra(),
        })
    }
}

/// Where a stream group starts: at revision `r` (so after `r - 1`), the start or the end.
fn stream_start(option: Option<&RevisionOption>) -> SubscribeFrom {
    match option {
        Some(RevisionOption::Revision(0) | RevisionOption::Start(_)) | None => SubscribeFrom::Start,
        Some(RevisionOption::Revision(r)) => SubscribeFrom::After(r - 1),
        Some(RevisionOption::End(_)) => SubscribeFrom::End,
    }
}

/// Where a `$all` group starts: at commit position `c` (annal's `c - 1`), the start or the end.
fn all_start(commit: Option<u64>, end: bool) -> SubscribeFrom {
    match commit {
        _ if end => SubscribeFrom::End,
        Some(u64::MAX) => SubscribeFrom::End,
        Some(0..=1) | None => SubscribeFrom::Start,
        Some(c) => SubscribeFrom::After(c - 2),
    }
}

/// `start_from` as the clients read it back: a revision for a stream
/// (−1 for the end), `C:<commit>/P:<prepare>` for `$all`.
fn start_from(settings: &GroupSettings) -> String {
    match (&settings.source, settings.start) {
        (GroupSource::Stream(_), SubscribeFrom::Start) => "0".into(),
        (GroupSource::Stream(_), SubscribeFrom::End) => "-1".into(),
        (GroupSource::Stream(_), SubscribeFrom::After(r)) => r.saturating_add(1).to_string(),
        (GroupSource::All(_), SubscribeFrom::Start) => "C:0/P:0".into(),
        (GroupSource::All(_), SubscribeFrom::End) => "C:-1/P:-1".into(),
        (GroupSource::All(_), SubscribeFrom::After(p)) => {
            let c = p.saturating_add(2);
            format!("C:{c}/P:{c}")
        }
    }
}

/// annal's filter for a `$all` group's filter options. annal keeps it with
/// the group as a regular expression ([`annal::Pattern`]: look-around, as in
/// the clients' default exclusion filter, matches by bounded backtracking).
fn filter_of(options: Option<&FilterOption>) -> Result<Filter, Status> {
    let Some(FilterOption::Filter(FilterOptions { filter: Some(f), .. })) = options else {
        return Ok(Filter::all());
    };
    let (on_streams, Expression { regex, prefix }) = match f {
        WireFilter::StreamIdentifier(e) => (true, e),
        WireFilter::EventType(e) => (false, e),
    };
    let re = if !prefix.is_empty() {
        prefixes_regex(prefix)
    } else if !regex.is_empty() {
        regex.clone()
    } else {
        return Ok(Filter::all());
    };
    let f = if on_streams {
        Filter::all().with_stream_regex(&re)
    } else {
        Filter::all().with_type_regex(&re)
    };
    f.map_err(|e| {
        Status::invalid_argument(format!(
            "the persistent subscription's filter {re:?} is not a regular expression annal reads: {e}"
        ))
    })
}

/// The PersistentSubscriptions service.
pub(crate) struct PersistentSubscriptions {
    state: AppState,
    registry: Arc<Registry>,
}

impl PersistentSubscriptions {
    pub(crate) fn new(state: AppState) -> PersistentSubscriptions {
        PersistentSubscriptions {
            state,
            registry: Arc::new(Registry::default()),
        }
    }
}

/// A group's info as the protocol shows it.
///
/// Positions of the global log are those `seen` may be shown: a token
/// limited to some streams learns no position past the last event of the
/// group's streams (not the head of the whole log).
fn info(
    registry: &Registry,
    store: &Store,
    key: &str,
    settings: &GroupSettings,
    i: &GroupInfo,
    seen: &Shown,
) -> Result<Option<SubscriptionInfo>, Status> {
    let clamp = |at: u64| {
        seen.position(store, at).map_err(|e| {
            if seen.everything() {
                status::from_store(e)
            } else {
                status::from_store_without_place(e)
            }
        })
    };
    let saved_checkpoint = clamp(i.saved_checkpoint)?;
    let head = clamp(store.head_position())?;
    let (label, name) = shown(key, settings);
    let kept = Kept::of(settings);
    let all = matches!(settings.source, GroupSource::All(_));
    let position = |commit: u64| {
        if all {
            format!("C:{commit}/P:{commit}")
        } else {
            commit.to_string()
        }
    };
    // The cursor is the next position (revision) to hand out.
    let last_checkpointed = match saved_checkpoint {
        0 => String::new(),
        c if all => position(c),
        c => position(c - 1),
    };
    let last_known = match &settings.source {
        GroupSource::All(_) => match head {
            0 => String::new(),
            h => position(h),
        },
        GroupSource::Stream(s) => store
            .stream_info(s)
            .map(|info| position(info.last_revision))
            .unwrap_or_default(),
    };
    let connections = registry.connections(key);
    let n = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
    Ok(Some(SubscriptionInfo {
        event_source: label,
        group_name: name,
        status: "Live".into(),
        connections: connections
            .iter()
            .map(|c| ConnectionInfo {
                from: c.consumer.clone(),
                username: c.user.clone(),
                total_items: i64::try_from(c.sent.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(i64::MAX),
                available_slots: n(c.buffer_size),
                connection_name: c.consumer.clone(),
                ..Default::default()
            })
            .collect(),
        last_checkpointed_event_position: last_checkpointed,
        last_known_event_position: last_known,
        resolve_link_tos: kept.resolve_links,
        start_from: start_from(settings),
        message_timeout_milliseconds: i32::try_from(settings.ack_timeout_ms).unwrap_or(i32::MAX),
        extra_statistics: kept.extra_statistics,
        max_retry_count: i32::try_from(settings.max_retries).unwrap_or(i32::MAX),
        live_buffer_size: kept.live_buffer_size,
        buffer_size: kept.history_buffer_size,
        read_batch_size: kept.read_batch_size,
        check_point_after_milliseconds: kept.checkpoint_after_ms,
        min_check_point_count: kept.min_checkpoint_count,
        max_check_point_count: kept.max_checkpoint_count,
        read_buffer_count: n(i.ready),
        total_in_flight_messages: n(i.in_flight),
        outstanding_messages_count: n(i.in_flight),
        named_consumer_strategy: kept.strategy,
        max_subscriber_count: kept.max_subscribers,
        parked_message_count: i64::try_from(i.parked).unwrap_or(i64::MAX),
        ..Default::default()
    }))
}

impl PersistentSubscriptions {
    /// Opens group `name` of `source` for `p` with `role`: NOT_FOUND if it does not exist.
    async fn with_group<T, F>(&self, p: Principal, source: Source, name: String, role: Role, f: F) -> Result<T, Status>
    where
        F: FnOnce(&Store, &str, annal::Group<'_>) -> Result<T, Status> + Send + 'static,
        T: Send + 'static,
    {
        let key = group_key(&source, &name)?;
        let id = subscription_id(&source, &name);
        let store = self.state.store();
        blocking(&self.state, move || {
            // A group this protocol did not make (over HTTP) goes by its own name.
            let (key, g) = match store.group(&key) {
                Ok(g) => (key, g),
                Err(annal::Error::InvalidInput(e)) if split_key(&name).is_none() => match store.group(&name) {
                    Ok(g) if Source::of(g.settings()) == source => (name, g),
                    _ => return Err(status::group_error(&id, annal::Error::InvalidInput(e))),
                },
                Err(e) => return Err(status::group_error(&id, e)),
            };
            // A group whose source the caller may not read is missing to it:
            // the refusal would name a stream it did not ask about.
            if !p.permits(Need::Group(Role::Read, &g.settings().source)) {
                return Err(status::group_error(
                    &id,
                    annal::Error::InvalidInput("the group does not exist".into()),
                ));
            }
            p.authorize(Need::Group(role, &g.settings().source))
                .map_err(status::denied)?;
            f(&store, &key, g)
        })
        .await
    }
}

/// The source a request names by a stream identifier or `$all`.
fn source_of(
    stream: Option<&super::proto::event_store::client::StreamIdentifier>,
    all: bool,
) -> Result<Source, Status> {
    if all {
        return Ok(Source::All);
    }
    let s = super::convert::stream_name(stream)?;
    Ok(if s == "$all" { Source::All } else { Source::Stream(s) })
}

#[tonic::async_trait]
impl persistent_subscriptions_server::PersistentSubscriptions for PersistentSubscriptions {
    type ReadStream = Answers<ReadResp>;

    async fn create(&self, request: Request<CreateReq>) -> Result<Response<CreateResp>, Status> {
        let p = principal(&self.state, &request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("CreateReq without options"))?;
        let settings = options
            .settings
            .ok_or_else(|| Status::invalid_argument("CreateReq without settings"))?;
        #[allow(deprecated)]
        let strategy = if settings.consumer_strategy.is_empty() {
            strategy_name(settings.named_consumer_strategy)
        } else {
            settings.consumer_strategy.clone()
        };
        let given = settings_in!(settings, create_req, strategy);
        let (source, group_source, start) = match options.stream_option {
            Some(create_req::options::StreamOption::Stream(s)) => {
                let name = super::convert::stream_name(s.stream_identifier.as_ref())?;
                let start = stream_start(s.revision_option.as_ref());
                (Source::Stream(name.clone()), GroupSource::Stream(name), start)
            }
            Some(create_req::options::StreamOption::All(a)) => {
                let (commit, end) = match a.all_option {
                    Some(AllOption::Position(p)) => (Some(p.commit_position), false),
                    Some(AllOption::End(_)) => (None, true),
                    Some(AllOption::Start(_)) | None => (None, false),
                };
                let filter = filter_of(a.filter_option.as_ref())?;
                (Source::All, GroupSource::All(filter), all_start(commit, end))
            }
            // Older clients name the stream in a field of the options, and its start in the settings.
            #[allow(deprecated)]
            None if options.stream_identifier.is_some() => {
                let name = super::convert::stream_name(options.stream_identifier.as_ref())?;
                let start = stream_start(Some(&RevisionOption::Revision(settings.revision)));
                (Source::Stream(name.clone()), GroupSource::Stream(name), start)
            }
            None => return Err(Status::invalid_argument("CreateReq names neither a stream nor $all")),
        };
        let settings = given.group_settings(group_source, start)?;
        p.authorize(Need::Group(Role::Write, &settings.source))
            .map_err(status::denied)?;
        let key = group_key(&source, &options.group_name)?;
        // A group named under a limited token's prefixes reads only what
        // that token may read (see `Auth::check_group_name`).
        self.state
            .auth
            .check_group_name(&key, &settings.source)
            .map_err(status::denied)?;
        let id = subscription_id(&source, &options.group_name);
        let store = self.state.store();
        let state = self.state.clone();
        blocking(&self.state, move || {
            // A limited token has at most max_groups_per_token groups.
            let most = state.config.max_groups_per_token;
            let _creating = state.group_creation.lock().unwrap_or_else(|e| e.into_inner());
            if groups_full(&store, &p, most).map_err(status::from_store_without_place)? {
                return Err(Status::resource_exhausted(groups_full_message(most)));
            }
            store
                .create_group(&key, settings)
                .map_err(|e| status::group_error(&id, e))?;
            Ok(())
        })
        .await?;
        Ok(Response::new(CreateResp {}))
    }

    async fn update(&self, request: Request<UpdateReq>) -> Result<Response<UpdateResp>, Status> {
        let p = principal(&self.state, &request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("UpdateReq without options"))?;
        let settings = options
            .settings
            .ok_or_else(|| Status::invalid_argument("UpdateReq without settings"))?;
        let strategy = strategy_name(settings.named_consumer_strategy);
        let given = settings_in!(settings, update_req, strategy);
        let (source, start) = match options.stream_option {
            Some(update_req::options::StreamOption::Stream(s)) => {
                let name = super::convert::stream_name(s.stream_identifier.as_ref())?;
                let start = match s.revision_option {
                    Some(update_req::stream_options::RevisionOption::Revision(r)) => {
                        stream_start(Some(&RevisionOption::Revision(r)))
                    }
                    Some(update_req::stream_options::RevisionOption::End(_)) => SubscribeFrom::End,
                    Some(update_req::stream_options::RevisionOption::Start(_)) | None => SubscribeFrom::Start,
                };
                (Source::Stream(name), start)
            }
            Some(update_req::options::StreamOption::All(a)) => {
                let start = match a.all_option {
                    Some(update_req::all_options::AllOption::Position(p)) => all_start(Some(p.commit_position), false),
                    Some(update_req::all_options::AllOption::End(_)) => SubscribeFrom::End,
                    Some(update_req::all_options::AllOption::Start(_)) | None => SubscribeFrom::Start,
                };
                (Source::All, start)
            }
            #[allow(deprecated)]
            None if options.stream_identifier.is_some() => {
                let name = super::convert::stream_name(options.stream_identifier.as_ref())?;
                let start = stream_start(Some(&RevisionOption::Revision(settings.revision)));
                (Source::Stream(name), start)
            }
            None => return Err(Status::invalid_argument("UpdateReq names neither a stream nor $all")),
        };
        let registry = self.registry.clone();
        self.with_group(p, source, options.group_name, Role::Write, move |store, key, g| {
            // The source (and a `$all` group's filter) stays as created.
            let settings = given.group_settings(g.settings().source.clone(), start)?;
            drop(g);
            store.update_group(key, settings).map_err(status::from_store)?;
            registry.drop_consumers(key, false);
            Ok(())
        })
        .await?;
        Ok(Response::new(UpdateResp {}))
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let p = principal(&self.state, &request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("DeleteReq without options"))?;
        let source = match &options.stream_option {
            Some(delete_req::options::StreamOption::StreamIdentifier(s)) => source_of(Some(s), false)?,
            Some(delete_req::options::StreamOption::All(_)) => Source::All,
            None => return Err(Status::invalid_argument("DeleteReq names neither a stream nor $all")),
        };
        let id = subscription_id(&source, &options.group_name);
        let registry = self.registry.clone();
        self.with_group(p, source, options.group_name, Role::Write, move |store, key, g| {
            drop(g);
            store.delete_group(key).map_err(|e| status::group_error(&id, e))?;
            registry.drop_consumers(key, true);
            Ok(())
        })
        .await?;
        Ok(Response::new(DeleteResp {}))
    }

    async fn read(&self, request: Request<Streaming<ReadReq>>) -> Result<Response<Self::ReadStream>, Status> {
        let p = principal(&self.state, &request)?;
        let mut requests = request.into_inner();
        let options = match requests.message().await? {
            Some(ReadReq {
                content: Some(read_req::Content::Options(o)),
            }) => o,
            _ => {
                return Err(Status::invalid_argument(
                    "a persistent subscription's first ReadReq must carry options",
                ));
            }
        };
        let source = match &options.stream_option {
            Some(read_req::options::StreamOption::StreamIdentifier(s)) => source_of(Some(s), false)?,
            Some(read_req::options::StreamOption::All(_)) => Source::All,
            None => return Err(Status::invalid_argument("ReadReq names neither a stream nor $all")),
        };
        let structured = matches!(
            options.uuid_option.and_then(|u| u.content),
            Some(uuid_option::Content::Structured(_))
        );
        let buffer_size = usize::try_from(options.buffer_size)
            .ok()
            .filter(|b| *b > 0)
            .unwrap_or(DEFAULT_BUFFER)
            .min(MAX_BUFFER);
        let sub_id = subscription_id(&source, &options.group_name);
        // A consumer holds one of its token's share of max_subscribers places.
        let share = super::subscription_share(&self.state, &p)?;
        let (key, max_subscribers) = self
            .with_group(p, source, options.group_name, Role::Read, |_, key, g| {
                Ok((key.to_string(), Kept::of(g.settings()).max_subscribers))
            })
            .await?;
        let answers = subscribers::start(
            &self.state,
            self.registry.clone(),
            Subscription {
                group: key,
                subscription_id: sub_id,
                buffer_size,
                structured,
                user: String::new(),
                max_subscribers,
            },
            requests,
        )?;
        Ok(Response::new(super::holding(answers, Some(share))))
    }

    async fn get_info(&self, request: Request<GetInfoReq>) -> Result<Response<GetInfoResp>, Status> {
        let p = principal(&self.state, &request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("GetInfoReq without options"))?;
        let source = match &options.stream_option {
            Some(get_info_req::options::StreamOption::StreamIdentifier(s)) => source_of(Some(s), false)?,
            Some(get_info_req::options::StreamOption::All(_)) => Source::All,
            None => return Err(Status::invalid_argument("GetInfoReq names neither a stream nor $all")),
        };
        let registry = self.registry.clone();
        let info = self
            .with_group(
                p.clone(),
                source,
                options.group_name,
                Role::Read,
                move |store, key, g| {
                    let seen = Shown::of(&p, &g.settings().source);
                    info(&registry, store, key, g.settings(), &g.info(), &seen)?
                        .ok_or_else(|| Status::internal("the group's name does not read back"))
                },
            )
            .await?;
        Ok(Response::new(GetInfoResp {
            subscription_info: Some(info),
        }))
    }

    async fn replay_parked(&self, request: Request<ReplayParkedReq>) -> Result<Response<ReplayParkedResp>, Status> {
        let p = principal(&self.state, &request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("ReplayParkedReq without options"))?;
        let source = match &options.stream_option {
            Some(replay_parked_req::options::StreamOption::StreamIdentifier(s)) => source_of(Some(s), false)?,
            Some(replay_parked_req::options::StreamOption::All(_)) => Source::All,
            None => {
                return Err(Status::invalid_argument(
                    "ReplayParkedReq names neither a stream nor $all",
                ));
            }
        };
        // A limit replays that many of the oldest parked events; the rest stay parked.
        let limit = match options.stop_at_option {
            Some(replay_parked_req::options::StopAtOption::StopAt(n)) => u64::try_from(n).unwrap_or(0),
            Some(replay_parked_req::options::StopAtOption::NoLimit(_)) | None => u64::MAX,
        };
        self.with_group(p, source, options.group_name, Role::Write, move |_, _, g| {
            g.replay_parked_up_to(limit).map_err(status::from_store)
        })
        .await?;
        Ok(Response::new(ReplayParkedResp {}))
    }

    async fn list(&self, request: Request<ListReq>) -> Result<Response<ListResp>, Status> {
        let p = principal(&self.state, &request)?;
        let options = request.into_inner().options;
        let only: Option<Source> = match options.and_then(|o| o.list_option) {
            Some(list_req::options::ListOption::ListForStream(s)) => match s.stream_option {
                Some(list_req::stream_option::StreamOption::Stream(id)) => Some(source_of(Some(&id), false)?),
                Some(list_req::stream_option::StreamOption::All(_)) => Some(Source::All),
                None => return Err(Status::invalid_argument("ListReq names neither a stream nor $all")),
            },
            Some(list_req::options::ListOption::ListAllSubscriptions(_)) | None => None,
        };
        let registry = self.registry.clone();
        let store = self.state.store();
        let subscriptions = blocking(&self.state, move || {
            let mut out = Vec::new();
            for (key, settings) in store.groups_list().map_err(status::from_store)? {
                if only.as_ref().is_some_and(|s| *s != Source::of(&settings))
                    || !p.permits(Need::Group(Role::Read, &settings.source))
                {
                    continue;
                }
                let g = match store.group(&key) {
                    Ok(g) => g,
                    Err(annal::Error::InvalidInput(_)) => continue,
                    Err(e) => return Err(status::from_store(e)),
                };
                let seen = Shown::of(&p, &g.settings().source);
                out.extend(info(&registry, &store, &key, g.settings(), &g.info(), &seen)?);
            }
            Ok(out)
        })
        .await?;
        Ok(Response::new(ListResp { subscriptions }))
    }

    async fn restart_subsystem(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        let p = principal(&self.state, &request)?;
        p.authorize(Need::Role(Role::Admin)).map_err(status::denied)?;
        // Every tenant's subscriptions: not for a token limited to some streams.
        p.authorize(Need::WholeStore).map_err(status::denied)?;
        self.registry.drop_all();
        Ok(Response::new(Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_escape_and_read_back() {
        let key = group_key(&Source::Stream("order-1".into()), "workers").unwrap();
        assert_eq!(key, "order-1::workers");
        let key = group_key(&Source::All, "a b::c").unwrap();
        assert_eq!(key, ".24all::a.20b.3A.3Ac");
        assert_eq!(split_key(&key), Some(("$all".into(), "a b::c".into())));
        assert_eq!(split_key("plain"), None);
        assert!(group_key(&Source::All, "").is_err());
        assert!(group_key(&Source::Stream("s".repeat(300)), "g").is_err());
    }

    #[test]
    fn starts_map_to_annal_and_read_back() {
        assert_eq!(
            stream_start(Some(&RevisionOption::Revision(5))),
            SubscribeFrom::After(4)
        );
        assert_eq!(all_start(Some(1), false), SubscribeFrom::Start);
        assert_eq!(all_start(Some(7), false), SubscribeFrom::After(5));
        let s = GroupSettings {
            start: SubscribeFrom::After(5),
            ..GroupSettings::all()
        };
        assert_eq!(start_from(&s), "C:7/P:7");
        assert_eq!(prefixes_regex(&["a.b".into(), "c".into()]), "^(?:a\\.b|c)");
    }
}
