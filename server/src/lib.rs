//! annal-server: the HTTP/JSON API of the annal event store, on axum and tokio.
//!
//! The store is synchronous; every call to it runs on tokio's blocking pool.
//! Start a server with [`serve`] (or [`bind`] then [`BoundServer::run`] to
//! learn the port first); build the bare [`axum::Router`] with [`router`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let store = Arc::new(annal::Store::open("./data", annal::Options::default())?);
//! let config = annal_server::ServerConfig::open("127.0.0.1:2113".parse()?);
//! annal_server::serve(store, config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Routes, their methods and the role each needs are listed once, in
//! [`ROUTES`]; the router and the OpenAPI document (`/openapi.json`) follow it.

mod auth;
pub mod config;
mod error;
mod http;
mod metrics;
pub mod nesting;
pub mod paths;
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use config::{Role, ServerConfig, TlsConfig, TokenConfig, hash_token};
pub use error::ServerError;
pub use http::{Access, ROUTES, Route, Verb, openapi, router};
pub use server::{BoundServer, bind, serve};
pub use tokio_util::sync::CancellationToken;

use crate::http::error::ApiError;

/// The state shared by every request: the store, the config, tokens and metrics.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

tokio::task_local! {
    /// Set while a request runs under the request timeout: whether it has
    /// started a store operation (which a timeout does not stop).
    pub(crate) static STARTED: OperationStarted;
}

/// Whether the request has handed an operation to the store; see [`STARTED`].
#[derive(Clone, Default)]
pub(crate) struct OperationStarted(Arc<std::sync::atomic::AtomicBool>);

impl OperationStarted {
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The inside of [`AppState`] (its fields are private to the crate).
pub struct Inner {
    pub(crate) store: Arc<annal::Store>,
    pub(crate) config: ServerConfig,
    pub(crate) auth: auth::Auth,
    pub(crate) metrics: metrics::Metrics,
    /// Cancelled when the server begins shutting down: subscriptions end, readiness fails.
    pub(crate) shutdown: CancellationToken,
    /// Operations running on the blocking pool (shutdown waits for them).
    pub(crate) busy: AtomicUsize,
}

impl AppState {
    /// State for a router over `store`; fails if the config is invalid.
    pub fn new(store: Arc<annal::Store>, config: ServerConfig) -> Result<AppState, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let auth = auth::Auth::new(&config).map_err(ServerError::Config)?;
        Ok(AppState(Arc::new(Inner {
            store,
            config,
            auth,
            metrics: metrics::Metrics::new(),
            shutdown: CancellationToken::new(),
            busy: AtomicUsize::new(0),
        })))
    }

    /// The token cancelled when shutdown begins (ends open subscriptions).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.0.shutdown.clone()
    }

    /// Store operations (appends, reads, group fetches...) still running on the blocking pool.
    pub fn operations_in_flight(&self) -> usize {
        self.0.busy.load(Ordering::Acquire)
    }

    /// Open SSE subscriptions.
    pub fn subscribers(&self) -> usize {
        self.0.metrics.subscribers.load(Ordering::Acquire).max(0) as usize
    }

    pub(crate) fn store(&self) -> Arc<annal::Store> {
        self.0.store.clone()
    }

    /// Runs `f` on the blocking pool, counted as running until it returns
    /// (shutdown waits for it); a panic in it becomes a 500.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        let _ = STARTED.try_with(|s| s.0.store(true, Ordering::Release));
        let guard = Busy(self.clone());
        let run = move || {
            let _guard = guard;
            f()
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(ApiError::internal("the request failed unexpectedly")),
            Err(_) => Err(ApiError::internal("the request was cancelled")),
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A running operation; see [`AppState::blocking`].
struct Busy(AppState);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}
