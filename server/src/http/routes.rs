//! The route table (the one place routes are listed), the router built from
//! it, and the middleware: authentication, request timeout, metrics, body
//! limit and panic catching.
//!
//! It owns which route needs which role and how a caller reaches a handler.
//! It must never check a stream itself: handlers ask [`crate::auth`] with
//! the streams they touch.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use tower_http::catch_panic::CatchPanicLayer;

use super::error::ApiError;
use super::{admin, browse, groups, sse, streams, ui};
use crate::auth::{Need, Principal};
use crate::config::Role;
use crate::state::AppState;

/// An HTTP method of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// GET (and HEAD).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl Verb {
    /// The lowercase name, as OpenAPI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Delete => "delete",
        }
    }

    fn of(m: &Method) -> Option<Verb> {
        match *m {
            Method::GET | Method::HEAD => Some(Verb::Get),
            Method::POST => Some(Verb::Post),
            Method::PUT => Some(Verb::Put),
            Method::DELETE => Some(Verb::Delete),
            _ => None,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// Anyone if `metrics_public`, else a token with the read role for
    /// every stream (the figures are of the whole store).
    Metrics,
    /// A token with the read role (or more).
    Read,
    /// A token with the read role (or more) for every stream: figures of the
    /// whole store, which a token limited to some streams may not learn.
    StoreWide,
    /// A token with the write role (or admin).
    Write,
    /// An admin token.
    Admin,
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Path, in axum's syntax (`{name}` for a parameter), as in the OpenAPI document.
    pub path: &'static str,
    /// Method.
    pub verb: Verb,
    /// Who may call it.
    pub access: Access,
    /// A long-lived response (SSE): no request timeout.
    pub streaming: bool,
}

const fn r(path: &'static str, verb: Verb, access: Access) -> Route {
    Route {
        path,
        verb,
        access,
        streaming: false,
    }
}

const fn stream_route(path: &'static str) -> Route {
    Route {
        path,
        verb: Verb::Get,
        access: Access::Read,
        streaming: true,
    }
}

/// Every route of the API.
pub const ROUTES: &[Route] = {
    use Access::*;
    use Verb::*;
    &[
        r("/health", Get, Public),
        r("/health/live", Get, Public),
        r("/health/ready", Get, Public),
        r("/metrics", Get, Metrics),
        r("/openapi.json", Get, Public),
        r("/streams", Get, Read),
        r("/streams/{stream}", Get, Read),
        r("/streams/{stream}", Post, Write),
        r("/streams/{stream}", Delete, Write),
        r("/streams/{stream}/metadata", Get, Read),
        r("/streams/{stream}/metadata", Put, Write),
        r("/streams/{stream}/snapshot", Get, Read),
        r("/streams/{stream}/snapshot", Post, Write),
        r("/append", Post, Write),
        r("/all", Get, Read),
        r("/count", Get, Read),
        r("/events/{id}", Get, Read),
        stream_route("/subscribe/all"),
        stream_route("/subscribe/streams/{stream}"),
        r("/groups", Get, Read),
        r("/groups/{name}", Get, Read),
        r("/groups/{name}", Put, Write),
        r("/groups/{name}", Delete, Write),
        r("/groups/{name}/fetch", Post, Read),
        r("/groups/{name}/ack", Post, Read),
        r("/groups/{name}/nack", Post, Read),
        r("/groups/{name}/replay-parked", Post, Write),
        r("/forward", Get, StoreWide),
        r("/subjects/{subject}", Delete, Admin),
        r("/admin/scavenge", Post, Admin),
        r("/admin/compress", Post, Admin),
        r("/admin/backup", Post, Admin),
        r("/admin/verify", Post, Admin),
        r("/browse/streams", Get, Read),
        r("/browse/categories", Get, Read),
        r("/whoami", Get, Read),
        r("/node", Get, StoreWide),
    ]
};

/// The handler of a route of [`ROUTES`].
fn handler(route: &Route) -> MethodRouter<AppState> {
    use Verb::*;
    match (route.path, route.verb) {
        ("/health", Get) => get(admin::health),
        ("/health/live", Get) => get(admin::live),
        ("/health/ready", Get) => get(admin::ready),
        ("/metrics", Get) => get(admin::metrics),
        ("/openapi.json", Get) => get(admin::openapi),
        ("/streams", Get) => get(streams::list),
        ("/streams/{stream}", Get) => get(streams::read),
        ("/streams/{stream}", Post) => post(streams::append),
        ("/streams/{stream}", Delete) => delete(streams::delete),
        ("/streams/{stream}/metadata", Get) => get(streams::get_metadata),
        ("/streams/{stream}/metadata", Put) => put(streams::put_metadata),
        ("/streams/{stream}/snapshot", Get) => get(streams::get_snapshot),
        ("/streams/{stream}/snapshot", Post) => post(streams::post_snapshot),
        ("/append", Post) => post(streams::append_conditional),
        ("/all", Get) => get(streams::read_all),
        ("/count", Get) => get(streams::count),
        ("/events/{id}", Get) => get(streams::event_by_id),
        ("/subscribe/all", Get) => get(sse::subscribe_all),
        ("/subscribe/streams/{stream}", Get) => get(sse::subscribe_stream),
        ("/groups", Get) => get(groups::list),
        ("/groups/{name}", Get) => get(groups::info),
        ("/groups/{name}", Put) => put(groups::create),
        ("/groups/{name}", Delete) => delete(groups::delete),
        ("/groups/{name}/fetch", Post) => post(groups::fetch),
        ("/groups/{name}/ack", Post) => post(groups::ack),
        ("/groups/{name}/nack", Post) => post(groups::nack),
        ("/groups/{name}/replay-parked", Post) => post(groups::replay_parked),
        ("/forward", Get) => get(admin::forward),
        ("/subjects/{subject}", Delete) => delete(admin::shred),
        ("/admin/scavenge", Post) => post(admin::scavenge),
        ("/admin/compress", Post) => post(admin::compress),
        ("/admin/backup", Post) => post(admin::backup),
        ("/admin/verify", Post) => post(browse::verify),
        ("/browse/streams", Get) => get(browse::streams),
        ("/browse/categories", Get) => get(browse::categories),
        ("/whoami", Get) => get(browse::whoami),
        ("/node", Get) => get(browse::node),
        (path, verb) => unreachable!("route {verb:?} {path} in ROUTES has no handler"),
    }
}

fn find_route(path: &str, method: &Method) -> Option<&'static Route> {
    let verb = Verb::of(method)?;
    ROUTES.iter().find(|r| r.path == path && r.verb == verb)
}

/// The API's router over `state`: every route of [`ROUTES`] with its middleware.
pub fn router(state: AppState) -> Router {
    let mut timed: BTreeMap<&str, MethodRouter<AppState>> = BTreeMap::new();
    let mut streaming: BTreeMap<&str, MethodRouter<AppState>> = BTreeMap::new();
    for route in ROUTES {
        let map = if route.streaming { &mut streaming } else { &mut timed };
        let h = handler(route);
        let merged = match map.remove(route.path) {
            Some(m) => m.merge(h),
            None => h,
        };
        map.insert(route.path, merged);
    }
    let timed = timed
        .into_iter()
        .fold(Router::new(), |r, (p, m)| r.route(p, m))
        .layer(from_fn_with_state(state.clone(), timeout_layer));
    let streaming = streaming.into_iter().fold(Router::new(), |r, (p, m)| r.route(p, m));
    timed
        .merge(streaming)
        .route_layer(from_fn_with_state(state.clone(), auth_layer))
        // The console's files: public, outside the API's route table.
        .merge(ui::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(json_errors))
        .layer(from_fn_with_state(state.clone(), super::origin::same_site_layer))
        .layer(from_fn_with_state(state.clone(), metrics_layer))
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("the request failed unexpectedly").into_response()
        }))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Checks the token against the route's access; puts the principal in the request.
async fn auth_layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    let Some(route) = path.as_deref().and_then(|p| find_route(p, req.method())) else {
        // A method the path does not take: the router answers 405.
        return next.run(req).await;
    };
    let required = match route.access {
        Access::Public => return next.run(req).await,
        Access::Metrics if state.config.metrics_public => return next.run(req).await,
        Access::Metrics | Access::Read | Access::StoreWide => Role::Read,
        Access::Write => Role::Write,
        Access::Admin => Role::Admin,
    };
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match state.auth.authenticate(header) {
        Ok(p) => p,
        Err(d) => return ApiError::from(d).into_response(),
    };
    let need = match route.access {
        Access::Metrics | Access::StoreWide => Need::WholeStore,
        _ => Need::Role(required),
    };
    if let Err(d) = principal.authorize(need) {
        return ApiError::from(d).into_response();
    }
    // Administration acts on the whole store (every tenant's streams and
    // subjects): a token limited to some streams may not, whatever its role.
    if matches!(route.access, Access::Admin)
        && let Err(d) = principal.authorize(Need::WholeStore)
    {
        return ApiError::from(d).into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// The caller, as [`auth_layer`] authenticated it: what a handler asks
/// [`Principal::authorize`] about the streams it touches.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::internal("the route takes a caller but has public access"))
    }
}

/// Answers 503 when a request takes longer than the configured limit: `timeout`
/// for a read, `outcome_unknown` for a request that changes something (its
/// store operation keeps running and may still be applied).
async fn timeout_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    let started = crate::state::OperationStarted::default();
    let run = next.run(req);
    let timed = tokio::time::timeout(
        state.config.request_timeout(),
        crate::state::STARTED.scope(started.clone(), run),
    );
    match timed.await {
        Ok(resp) => resp,
        // Cut before its store operation began, a request changed nothing.
        Err(_) => timeout_error(state.config.request_timeout_ms, changes && started.get()).into_response(),
    }
}

/// The answer to a request cut at the time limit.
pub(crate) fn timeout_error(limit_ms: u64, changes: bool) -> ApiError {
    if changes {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome_unknown",
            format!(
                "the request took longer than {limit_ms} ms and its outcome is unknown: it may have been \
                 applied, or may still be; retrying an append with the same event ids is safe (an event id \
                 already stored at the same place is not stored again), so read the stream or retry \
                 with the same ids"
            ),
        )
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {limit_ms} ms"),
        )
    }
}

/// Turns an error answered as plain text (axum's own rejections, such as a
/// path that is not valid UTF-8) into the API's JSON error shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "invalid_request",
        _ => "internal",
    };
    let text = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}

/// Counts requests by route and status.
async fn metrics_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let resp = next.run(req).await;
    state.metrics.request(&route, resp.status().as_u16());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_unique_and_all_have_handlers() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.path, r.verb)), "duplicate route {:?} {}", r.verb, r.path);
            let _ = handler(r);
        }
    }
}
