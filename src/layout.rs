//! The names of the files in a data directory, for tools that look at one
//! without opening it (format.md, "Files", is their contract).
//!
//! This module only names things; it must never read or write a file.

pub use crate::format::checkpoint::{DURABLE_FILE, META_FILE, META_MAGIC, STREAMS_FILE};
pub use crate::format::compressed::DICTIONARY_FILE;
pub use crate::format::subjects::SUBJECTS_FILE;
pub use crate::log::damage::{QUARANTINE_DIR, TORN_DIR, UNREPORTED_FILE};
pub use crate::log::recovery::LOCK_FILE;

/// True if `name` is the name of a segment file (`<base>.seg`).
pub fn is_segment_file(name: &str) -> bool {
    matches!(crate::format::segment::parse_file_name(name), Some((_, "seg")))
}
