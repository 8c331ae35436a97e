//! annal-server: the HTTP/JSON API of the annal event store, and the
//! KurrentDB (EventStoreDB) gRPC protocol on the same listener, on axum,
//! tonic and tokio.
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
//!
//! # Layout
//!
//! Each wire protocol has a folder of its own (`http/`, and `grpc/` for the
//! KurrentDB protocol); what every
//! protocol shares stands at the top: `config` (settings, tokens, limits),
//! `auth` (who the caller is and what it may touch), `visible` (which
//! positions of the log a limited caller is shown), `shares` (each token's
//! share of the server's places), `state` (the store handle
//! and the blocking pool), `metrics`, `paths`, `nesting` and `error`
//! ([`ServerError`]). Imports only point down: a protocol uses the shared
//! modules, never another protocol, and the shared modules never use a
//! protocol. Only `server` (startup and shutdown) and this file, which put
//! the protocols together, name them.

mod auth;
pub mod config;
mod error;
mod grpc;
mod http;
mod metrics;
pub mod nesting;
pub mod paths;
mod server;
mod shares;
mod state;
mod visible;

pub use config::{Role, ServerConfig, TlsConfig, TokenConfig, hash_token};
pub use error::ServerError;
pub use http::{Access, ROUTES, Route, Verb, openapi, router};
pub use server::{BoundServer, bind, serve};
pub use state::{AppState, Inner};
pub use tokio_util::sync::CancellationToken;
