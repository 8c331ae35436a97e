//! The KurrentDB (EventStoreDB) gRPC protocol, so that the official KurrentDB
//! clients work against `annal serve` unchanged: the `Streams` service
//! (reads, catch-up subscriptions, appends, deletes),
//! `PersistentSubscriptions` (on annal's consumer groups), `Gossip` and
//! `ServerFeatures`, served by tonic on the same listener as the HTTP API.
//!
//! It owns everything that is this protocol: the generated messages
//! ([`proto`]), how ids, positions, revisions and metadata are spelt on the
//! wire ([`convert`]), its filters ([`filter`]), its status codes, trailers
//! and error texts ([`status`]), and one module per service. Positions on the
//! wire are annal's plus one (see [`convert::commit_of`]); the library's
//! positions are never changed.
//!
//! It may use the shared modules at the crate's top (config, auth, state);
//! they must never use it, and neither must the HTTP protocol beside it. It
//! must never decide who may do what by itself: permissions are asked of
//! [`crate::auth`], and only the status code of a refusal is its own.

mod append;
mod convert;
mod features;
mod filter;
mod gossip;
mod metadata;
mod persistent;
pub(crate) mod proto;
mod read;
mod status;
mod streams;
mod subscribers;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tonic::Status;

use crate::auth::Principal;
use crate::shares::{Place, Share};
use crate::state::{AppState, Interrupted};
use proto::event_store::client::gossip::gossip_server::GossipServer;
use proto::event_store::client::persistent_subscriptions::persistent_subscriptions_server::PersistentSubscriptionsServer;
use proto::event_store::client::server_features::server_features_server::ServerFeaturesServer;
use proto::event_store::client::streams::streams_server::StreamsServer;

/// A stream of answers to one call.
pub(crate) type Answers<T> = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// One of `p`'s token's share of `max_subscribers` places, or
/// RESOURCE_EXHAUSTED when it holds them all.
pub(crate) fn subscription_share(state: &AppState, p: &Principal) -> Result<Share, Status> {
    state
        .shares
        .take(p, Place::Subscription)
        .map_err(|full| Status::resource_exhausted(full.message("subscriptions")))
}

/// `answers`, holding `share` until they are dropped (the call ended).
pub(crate) fn holding<T: Send + 'static>(answers: Answers<T>, share: Option<Share>) -> Answers<T> {
    use futures_util::StreamExt;
    Box::pin(answers.map(move |a| {
        let _share = &share;
        a
    }))
}

/// The largest gRPC message accepted or sent: well above the largest append
/// the store takes (`Options::max_append_size`, 32 MiB by default).
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// The largest message a client sends to PersistentSubscriptions: settings,
/// or an Ack or Nack of at most [`subscribers::MAX_IDS_PER_MESSAGE`] ids
/// (about 400 KB in their longest form), never events.
const PERSISTENT_REQUEST: usize = 1 << 20;

/// The gRPC services as an axum router; paths that no service serves answer
/// UNIMPLEMENTED, naming the method.
pub(crate) fn router(state: AppState) -> axum::Router {
    let streams = StreamsServer::new(streams::Streams::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let gossip = GossipServer::new(gossip::Gossip::new(state.clone()));
    let features = ServerFeaturesServer::new(features::Features);
    let persistent = PersistentSubscriptionsServer::new(persistent::PersistentSubscriptions::new(state.clone()))
        .max_decoding_message_size(PERSISTENT_REQUEST)
        .max_encoding_message_size(MAX_MESSAGE);
    tonic::service::Routes::new(streams)
        .add_service(gossip)
        .add_service(persistent)
        .add_service(features)
        .prepare()
        .into_axum_router()
        .fallback(unimplemented)
        .layer(axum::middleware::from_fn_with_state(state, guard))
        .layer(axum::middleware::from_fn(remember_authority))
}

/// The largest message of a call whose request is one small message (a read,
/// a delete): a filter or a stream name, never events.
const SMALL_MESSAGE: usize = 1 << 20;

/// Services any caller may use without credentials, as in KurrentDB: discovery.
const OPEN_SERVICES: [&str; 2] = [
    "/event_store.client.gossip.Gossip/",
    "/event_store.client.server_features.ServerFeatures/",
];

/// Checks a call's credentials from its headers before tonic decodes a single
/// message, so that a caller without a valid token costs no memory, and bounds
/// the body of calls whose one request message is small.
async fn guard(axum::extract::State(state): axum::extract::State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if OPEN_SERVICES.iter().any(|s| path.starts_with(s)) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = state.auth.authenticate(header) {
        return status::denied(e).into_http::<axum::body::Body>().into_response();
    }
    let small = path.starts_with("/event_store.client.streams.Streams/")
        && matches!(path.rsplit('/').next(), Some("Read" | "Delete" | "Tombstone"));
    if !small {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, SMALL_MESSAGE));
    next.run(Request::from_parts(parts, body)).await
}

/// True if a request is for this protocol (its content type is `application/grpc…`).
pub(crate) fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

async fn unimplemented(uri: axum::http::Uri) -> Response {
    Status::unimplemented(format!(
        "annal does not implement {}: it serves event_store.client.streams.Streams (Read, Append, \
         BatchAppend, Delete, Tombstone), event_store.client.persistent_subscriptions.PersistentSubscriptions \
         (Create, Update, Delete, Read, GetInfo, List, ReplayParked, RestartSubsystem), \
         event_store.client.gossip.Gossip/Read and \
         event_store.client.server_features.ServerFeatures/GetSupportedMethods",
        uri.path()
    ))
    .into_http::<axum::body::Body>()
    .into_response()
}

/// The host and port a client connected to (the request's authority), for gossip.
#[derive(Clone, Debug)]
pub(crate) struct Authority(pub(crate) String);

async fn remember_authority(mut req: Request, next: Next) -> Response {
    let authority = req.uri().authority().map(|a| a.as_str().to_string()).or_else(|| {
        req.headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    });
    if let Some(a) = authority {
        req.extensions_mut().insert(Authority(a));
    }
    next.run(req).await
}

/// The caller of a request, from its `authorization` metadata (ignored in open mode).
pub(crate) fn principal<T>(state: &AppState, req: &tonic::Request<T>) -> Result<Principal, Status> {
    let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
    state.auth.authenticate(header).map_err(status::denied)
}

/// The time a call may take, from its `grpc-timeout` metadata (at most
/// eight digits and a unit: `H`, `M`, `S`, `m`, `u` or `n`); `None` when it
/// has none or it is not well formed.
pub(crate) fn timeout<T>(req: &tonic::Request<T>) -> Option<std::time::Duration> {
    parse_timeout(req.metadata().get("grpc-timeout")?.to_str().ok()?)
}

fn parse_timeout(v: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Runs a store operation on the blocking pool for a gRPC call.
pub(crate) async fn blocking<T, F>(state: &AppState, f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, Status> + Send + 'static,
    T: Send + 'static,
{
    match state.run_blocking(f).await {
        Ok(r) => r,
        Err(Interrupted::Panicked) => Err(Status::internal("the operation failed unexpectedly")),
        Err(Interrupted::Cancelled) => Err(Status::unavailable("the server is shutting down")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_spells_them() {
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "12x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
