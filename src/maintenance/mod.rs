//! Maintenance of a store's files: compression, retention (scavenging),
//! verification, repair, backup and statistics.
//!
//! Each job works on the log's segments through [`crate::storage::Storage`];
//! the store facade starts them. They must never append events: only the
//! writer writes the log's tail.

pub mod backup;
pub mod compression;
pub mod repair;
pub mod retention;
pub mod verify;
