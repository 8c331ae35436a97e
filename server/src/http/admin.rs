//! Health, metrics, the OpenAPI document, and the admin routes (scavenge,
//! compress, backup). The health routes are public, but only a store-wide
//! token sees the store's figures and error messages in them.
//!
//! It owns the HTTP answers of these routes. It must never hold what another
//! protocol would also need: the metrics text and the rule that keeps a
//! backup out of the data directory live in the shared `metrics` and `paths`.

use std::sync::atomic::Ordering::Relaxed;

use annal::{Direction, Filter, LogFrom};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::encode::JsonBody;
use super::error::ApiError;
use crate::auth::Need;
use crate::metrics::{StoreGauges, disk_available};
use crate::state::AppState;

pub(crate) async fn live() -> Response {
    axum::Json(json!({ "status": "live" })).into_response()
}

/// Whether the caller of a public health route may see the store's figures
/// and errors: a store-wide token (any token in open mode). Others get the
/// status and the kinds of problems only.
fn store_wide(state: &AppState, headers: &HeaderMap) -> bool {
    let header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    state
        .auth
        .authenticate(header)
        .is_ok_and(|p| p.permits(Need::WholeStore))
}

pub(crate) async fn ready(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let detail = store_wide(&state, &headers);
    match probe_ready(&state, |store| store.head_position()).await {
        Ok(head) if detail => axum::Json(json!({ "status": "ready", "head_position": head })).into_response(),
        Ok(_) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(not) => not.response(detail),
    }
}

/// Why the store is not ready: a reason anyone may read, and the store's
/// own words (an error message may name files), for a store-wide token.
struct NotReady {
    public: &'static str,
    detail: String,
}

impl NotReady {
    fn response(&self, detail: bool) -> Response {
        not_ready(if detail { &self.detail } else { self.public })
    }
}

/// What `/health/ready` and `/health` both check: the server is not shutting
/// down, appends are accepted (reads go on after the writer stopped, but
/// every append fails: not ready), and the last event reads; then `then`
/// runs on the store.
async fn probe_ready<T, F>(state: &AppState, then: F) -> Result<T, NotReady>
where
    F: FnOnce(&annal::Store) -> T + Send + 'static,
    T: Send + 'static,
{
    if state.shutdown.is_cancelled() {
        return Err(NotReady {
            public: "shutting down",
            detail: "shutting down".into(),
        });
    }
    if let Some(reason) = state.store.write_failure() {
        return Err(NotReady {
            public: "appends are refused",
            detail: format!("appends are refused: {reason}"),
        });
    }
    let store = state.store();
    state
        .blocking(move || {
            store.read_all(Direction::Backward, LogFrom::End, 1, &Filter::all())?;
            Ok(then(&store))
        })
        .await
        .map_err(|e| NotReady {
            public: "the store fails a read",
            detail: e.message,
        })
}

/// `GET /health`: readiness, each forwarder's state and the disk budget. The
/// store not ready is 503, as `/health/ready` says it; a forwarder in error or
/// a backlog of undelivered events that threatens the disk budget is
/// `"degraded"` with 200: the store still serves reads and appends, so a load
/// balancer must keep the node, while monitoring sees the problems listed.
/// Without a store-wide token, only the status and the kinds of problems.
pub(crate) async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let detail = store_wide(&state, &headers);
    let (head, stats) = match probe_ready(&state, |store| (store.head_position(), store.stats())).await {
        Ok(p) => p,
        Err(not) => return not.response(detail),
    };
    let forwarders = state.forwarders();
    let mut problems = Vec::new();
    let mut kinds: Vec<&str> = Vec::new();
    let mut kind = |k: &'static str| {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    };
    for f in &forwarders {
        if f.state == annal::ForwardState::Error {
            kind("forwarder_error");
            problems.push(format!(
                "forwarder {:?} is in error: {}",
                f.name,
                f.last_error.as_deref().unwrap_or("the target refuses every batch")
            ));
        }
    }
    for f in &forwarders {
        if let Some(e) = &f.drop_record_error {
            kind("forwarder_drop_record_unreadable");
            problems.push(format!("forwarder {:?}: {e}", f.name));
        }
    }
    for f in &forwarders {
        if let Some(g) = &f.gap {
            kind("forwarder_gap");
            problems.push(format!(
                "forwarder {:?} skipped positions {}..{}: {} removed before it delivered them{}",
                f.name,
                g.first_position,
                g.end_position,
                g.dropped_events.map_or("events".to_string(), |n| format!("{n} events")),
                if g.dropped_events.is_some() {
                    " (retention.when_full = \"drop-oldest\")"
                } else {
                    ""
                }
            ));
        }
    }
    let lowest = stats
        .retention_held_by
        .iter()
        .min_by_key(|(_, p)| *p)
        .map(|(n, _)| n.clone());
    if let (Some(max), Some(name)) = (stats.retention_max_bytes, &lowest) {
        if stats.budget_exceeded_by_holds() {
            kind("retention_budget_exceeded");
            problems.push(format!(
                "undelivered events of forwarder {name:?} take {} bytes, over the disk budget of {max} bytes (retention.max_bytes)",
                stats.retention_held_bytes
            ));
        } else if stats.budget_threatened() {
            kind("retention_budget_threatened");
            problems.push(format!(
                "undelivered events of forwarder {name:?} take {} bytes, 80 % or more of the disk budget of {max} bytes (retention.max_bytes)",
                stats.retention_held_bytes
            ));
        }
    }
    if stats.appends_stopped_for_budget {
        kind("appends_stopped_for_budget");
        problems.push("appends are stopped until forwarders deliver enough for the disk budget to hold (retention.when_full = \"stop-appends\")".to_string());
    }
    let status = if problems.is_empty() { "ok" } else { "degraded" };
    if !detail {
        return axum::Json(json!({ "status": status, "problem_kinds": kinds })).into_response();
    }
    let forwarders: Vec<_> = forwarders
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "state": f.state,
                "checkpoint": f.checkpoint,
                "lag_events": f.lag_events,
                "lag_seconds": f.lag_seconds,
                "failures": f.failures,
                "last_error": f.last_error,
                "gap": f.gap,
                "drop_record_error": f.drop_record_error,
                "warning": f.warning,
            })
        })
        .collect();
    axum::Json(json!({
        "status": status,
        "head_position": head,
        "problems": problems,
        "problem_kinds": kinds,
        "forwarders": forwarders,
        "retention": {
            "max_bytes": stats.retention_max_bytes,
            "held_bytes": stats.retention_held_bytes,
            "held_by": lowest,
        },
    }))
    .into_response()
}

fn not_ready(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "status": "not_ready", "error": "not_ready", "message": reason })),
    )
        .into_response()
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store();
    let gauges = state
        .blocking(move || {
            Ok(StoreGauges {
                stats: store.stats(),
                disk_available: disk_available(store.dir()),
                forwarders: Vec::new(),
            })
        })
        .await?;
    let gauges = StoreGauges {
        forwarders: state.forwarders(),
        ..gauges
    };
    let text = state.metrics.render(&gauges);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}

pub(crate) async fn forward(State(state): State<AppState>) -> Response {
    axum::Json(serde_json::json!({ "forwarders": state.forwarders() })).into_response()
}

pub(crate) async fn openapi() -> Response {
    axum::Json(super::openapi::document()).into_response()
}

pub(crate) async fn scavenge(State(state): State<AppState>) -> Result<Response, ApiError> {
    let st = state.clone();
    let r = state
        .blocking(move || {
            let r = st.store.scavenge()?;
            st.metrics.scavenge_runs.fetch_add(1, Relaxed);
            st.metrics.scavenge_events_removed.fetch_add(r.events_removed, Relaxed);
            Ok(r)
        })
        .await?;
    Ok(axum::Json(json!({
        "segments_examined": r.segments_examined,
        "segments_rewritten": r.segments_rewritten,
        "events_removed": r.events_removed,
        "bytes_before": r.bytes_before,
        "bytes_after": r.bytes_after,
        "events_dropped_undelivered": r.events_dropped_undelivered,
    }))
    .into_response())
}

/// `DELETE /subjects/{subject}`: shreds a subject. For an admin token not
/// limited to streams only (as every administration route): a subject is
/// not tied to a stream, and its events may be in streams a limited token
/// may not touch.
pub(crate) async fn shred(
    State(state): State<AppState>,
    axum::extract::Path(subject): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let st = state.clone();
    let name = subject.clone();
    let shredded = state.blocking(move || Ok(st.store.shred(&name)?)).await?;
    Ok(axum::Json(json!({ "subject": subject, "shredded": shredded })).into_response())
}

pub(crate) async fn compress(State(state): State<AppState>) -> Result<Response, ApiError> {
    let st = state.clone();
    let r = state
        .blocking(move || {
            let r = st.store.compress()?;
            st.metrics.compress_runs.fetch_add(1, Relaxed);
            Ok(r)
        })
        .await?;
    Ok(axum::Json(json!({
        "segments": r.segments,
        "bytes_before": r.bytes_before,
        "bytes_after": r.bytes_after,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupIn {
    dir: std::path::PathBuf,
}

pub(crate) async fn backup(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BackupIn>,
) -> Result<Response, ApiError> {
    if !body.dir.is_absolute() {
        return Err(ApiError::invalid("dir must be an absolute path on the server"));
    }
    if crate::paths::is_within(&body.dir, state.store.dir()) {
        return Err(ApiError::invalid(format!(
            "{} is inside the data directory {}; back up to a directory outside it",
            body.dir.display(),
            state.store.dir().display()
        )));
    }
    let st = state.clone();
    let r = state
        .blocking(move || {
            let r = st.store.backup(&body.dir)?;
            st.metrics.backups.fetch_add(1, Relaxed);
            Ok(r)
        })
        .await?;
    Ok(axum::Json(json!({
        "dir": r.dir,
        "files": r.files,
        "bytes": r.bytes,
        "events": r.events,
    }))
    .into_response())
}
