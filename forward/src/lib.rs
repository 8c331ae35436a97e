//! Forwarding targets for annal's [`annal::Forwarder`]: PostgreSQL
//! (`postgres://`), NATS JetStream (`nats://`), KurrentDB (`kurrentdb://`,
//! `esdb://`) and another annal over HTTP (`annal+http://`,
//! `annal+https://`), each through the client library of its
//! ecosystem, each on a small tokio runtime of its own so that the library
//! stays free of one.
//!
//! This crate owns target URLs and the network clients; it must never decide
//! what is forwarded or when the checkpoint moves (the library's forwarder
//! does), and never touches a store's files.

pub mod connect;
pub mod http;
pub mod kurrentdb;
pub mod nats;
pub mod postgres;
pub mod url;

pub use crate::connect::connect;
pub use crate::url::{TargetKind, TargetUrl};

/// Why a target could not be made from its URL.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse, or a parameter is wrong.
    #[error("invalid forward target URL {url:?}: {reason}")]
    BadUrl {
        /// The URL with any password hidden.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The scheme names a target this build cannot forward to.
    #[error("UNSUPPORTED forward target {scheme}://: {reason}")]
    Unsupported {
        /// The scheme.
        scheme: String,
        /// Why, and what to use instead.
        reason: String,
    },
    /// The async runtime of the target could not start.
    #[error("starting the target's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// A small single-threaded runtime for one target's client.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ConfigError> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// The name of this node, for the `source` column and headers: the host name,
/// or `annal` when it cannot be read.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "annal".to_string())
}
