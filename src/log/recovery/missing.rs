//! Evidence of missing segment files: an index or stream checkpoint that
//! describes events no segment file holds. A store whose newest (or every)
//! segment is gone must not hand out those positions again.
//!
//! This module only looks at names and the loaded checkpoint; it must never
//! read or write a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::streams::LoadedStreams;
use crate::format::checkpoint::STREAMS_FILE;

/// A file that says the store held events: an index, or a stream checkpoint
/// covering some position (for a directory whose segment files are all gone).
pub(super) fn evidence_of_events(
    dir: &Path,
    idx_names: &HashMap<u64, String>,
    checkpoint: Option<&LoadedStreams>,
) -> Option<PathBuf> {
    if let Some(base) = idx_names.keys().min() {
        return Some(dir.join(crate::format::segment::index_file_name(*base)));
    }
    checkpoint
        .is_some_and(|c| c.covered_position > 0)
        .then(|| dir.join(STREAMS_FILE))
}

/// A file describing positions at or past `end`, where the segments read
/// end, with the position it describes: an index file whose segment file is
/// gone (a segment is never removed before its index), or a stream
/// checkpoint covering more (it is written only once what it covers is
/// durable). `None` when nothing does.
pub(super) fn evidence_past_the_end(
    dir: &Path,
    names: &[(u64, String)],
    idx_names: &HashMap<u64, String>,
    checkpoint: Option<&LoadedStreams>,
    end: u64,
) -> Option<(PathBuf, u64)> {
    let orphan = idx_names
        .keys()
        .filter(|base| **base >= end && !names.iter().any(|(b, _)| b == *base))
        .min();
    if let Some(base) = orphan {
        return Some((dir.join(crate::format::segment::index_file_name(*base)), *base));
    }
    checkpoint
        .filter(|c| c.covered_position > end)
        .map(|c| (dir.join(STREAMS_FILE), c.covered_position))
}
