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
pub mod error;
pub mod http;
pub mod kurrentdb;
pub mod nats;
pub mod node;
pub mod postgres;
mod socket;
pub mod url;

pub use crate::connect::connect;
pub use crate::error::ConfigError;
pub use crate::node::node_name;
pub use crate::url::{TargetKind, TargetUrl};
