//! The log: segment files, recovery at open, and the one write path.
//!
//! This layer owns the files of a data directory while a store is open: it
//! recovers them ([`recovery`]), appends to them ([`writer`]) and hands readers
//! what the writer published. It builds on [`crate::format`] and
//! [`crate::storage`]; it must never import the store facade, maintenance or
//! features above it.

pub(crate) mod candidates;
pub(crate) mod count;
pub mod damage;
pub(crate) mod holes;
pub(crate) mod ids;
pub(crate) mod notify;
pub(crate) mod read;
pub(crate) mod recent_ids;
pub mod recovery;
pub(crate) mod scan;
pub(crate) mod segments;
pub(crate) mod state;
pub(crate) mod subjects;
pub(crate) mod writer;
