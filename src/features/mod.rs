//! Features built on the [`crate::store::Store`] API: catch-up subscriptions,
//! persistent subscription groups, forwarding to other systems, stream
//! metadata and snapshots.
//!
//! They read and append through the store like any client; they must never
//! touch files or the log's internals.

pub mod forward;
pub mod metadata;
pub mod persistent;
mod stored;
pub mod subscription;
