//! The HTTP/JSON API (`annal serve`): routes, handlers, the JSON shapes of
//! requests and answers, Server-Sent Events, the OpenAPI document, and the
//! connection handling below them.
//!
//! It owns everything that is HTTP: the route table ([`ROUTES`]), statuses
//! and error bodies ([`error::ApiError`], the one place the library's and
//! the shared modules' errors become HTTP answers), query strings, SSE, and
//! the acceptors that cap connections and rewrite hyper's bare errors.
//!
//! It may use the shared modules at the crate's top (config, auth, state,
//! metrics, paths, nesting); they must never use it, and neither must another
//! protocol beside it: what two protocols need goes up into a shared module.
//! It must never decide who may do what by itself: permissions are asked of
//! [`crate::auth`], and only its answer's shape (401 or 403) is HTTP's.

mod admin;
mod browse;
mod conn;
mod encode;
mod error;
mod groups;
pub(crate) mod listen;
pub mod openapi;
mod origin;
mod routes;
mod sse;
mod streams;
mod ui;

pub(crate) use origin::same_site_layer;
pub use routes::{Access, ROUTES, Route, Verb, router};

use crate::auth::Principal;
use crate::shares::{Place, Share};
use crate::state::AppState;
use error::ApiError;

impl AppState {
    /// Runs a store operation on the blocking pool for an HTTP request (see
    /// [`AppState::run_blocking`]); one that panics is answered as a 500.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        self.run_blocking(f).await?
    }

    /// A place for an expensive read (a count that reads events, a read of
    /// the global log whose filter the indexes cannot serve), or 503
    /// `too_many_scans`. The handler holds it (not the store operation), so
    /// that it is freed as soon as the handler gives up at the request
    /// timeout; the handler's [`AppState::read_cancel`] then stops the work.
    ///
    /// The place is one of the token's share too (`token_share_percent`):
    /// a token that holds its share is refused the same way.
    pub(crate) fn scan_place(&self, p: &Principal) -> Result<ScanPlace, ApiError> {
        let share = self
            .shares
            .take(p, Place::Scan)
            .map_err(|full| share_full("too_many_scans", &full.message("counts and scanning reads")))?;
        let permit = self.scans.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_scans",
                format!(
                    "at most {} counts and scanning reads of the log at once; retry later",
                    self.config.max_scans
                ),
            )
        })?;
        Ok(ScanPlace(permit, share))
    }

    /// The cancellation signal of a long read, and a guard that cancels it
    /// when dropped: the handler holds the guard, so that the read stops
    /// (within an event) when the request ends or the request timeout drops
    /// the handler. The signal also passes at the request's deadline.
    pub(crate) fn read_cancel(&self) -> (annal::Cancel, CancelOnDrop) {
        let cancel = annal::Cancel::new().with_deadline(std::time::Instant::now() + self.config.request_timeout());
        (cancel.clone(), CancelOnDrop(cancel))
    }
}

/// One of the `max_scans` places and of its token's share, given back when
/// dropped; see [`AppState::scan_place`].
pub(crate) struct ScanPlace(
    #[allow(dead_code, reason = "held until dropped")] tokio::sync::OwnedSemaphorePermit,
    #[allow(dead_code, reason = "held until dropped")] Share,
);

/// 503 with `code`, for a token that holds its share of a kind of place.
pub(crate) fn share_full(code: &'static str, message: &str) -> ApiError {
    ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, code, message)
}

/// Cancels its signal when dropped; see [`AppState::read_cancel`].
pub(crate) struct CancelOnDrop(annal::Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
