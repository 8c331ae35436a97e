//! The stream states at open: the stream checkpoint (`streams.chk`) loaded
//! if it decodes, then every segment summary it does not cover applied over it.
//!
//! This module only reads: a checkpoint that does not decode or fit is
//! rebuilt in memory, never rewritten here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::format::checkpoint::{STREAMS_FILE, StreamState, StreamTable, StreamsCheckpoint};
use crate::format::index::Lookup;
use crate::log::segments::{ActiveSegment, SealedSegment};
use crate::log::state::StreamMap;
use crate::storage::Storage;

/// `streams.chk` as open uses it.
pub(super) struct LoadedStreams {
    /// Every event before this position is covered.
    pub(super) covered_position: u64,
    /// Its stream states.
    pub(super) streams: StreamMap,
}

/// The stream checkpoint (`streams.chk`), if it exists and decodes. One that
/// does not decode is rebuilt from the segments' summaries (verify and repair
/// report it). A version-2 file is checked whole and then searched in place
/// (no allocation per stream); a version-1 file is decoded into a map.
pub(super) fn load_streams_checkpoint(st: &dyn Storage, dir: &Path) -> Option<LoadedStreams> {
    let chk = dir.join(STREAMS_FILE);
    let map = st.map(&chk).ok()?;
    if let Ok(table) = StreamTable::check((*map).as_ref(), &chk) {
        return Some(LoadedStreams {
            covered_position: table.covered_position,
            streams: StreamMap::new(Some((table, map.clone())), HashMap::new()),
        });
    }
    let c = StreamsCheckpoint::decode((*map).as_ref(), &chk).ok()?;
    Some(LoadedStreams {
        covered_position: c.covered_position,
        streams: StreamMap::new(None, c.streams),
    })
}

/// Stream states: from the checkpoint if it fits, then every later segment's summary.
pub(super) fn rebuild_streams(
    checkpoint: Option<LoadedStreams>,
    sealed: &[Arc<SealedSegment>],
    active: Option<&ActiveSegment>,
) -> Result<StreamMap> {
    let checkpoint = checkpoint
        // It fits at a segment's end, or inside the active segment (a clean
        // close writes one there), whose summary is applied over it anyway.
        .filter(|c| {
            c.covered_position == 0
                || sealed.iter().any(|s| s.index.next_position() == c.covered_position)
                || active.is_some_and(|a| {
                    let i = a.index.read();
                    i.base() <= c.covered_position && c.covered_position <= i.next_position()
                })
        });
    let (covered, mut streams) = match checkpoint {
        Some(c) => (c.covered_position, c.streams),
        None => (0, StreamMap::default()),
    };
    let mut apply = |l: &dyn Lookup| {
        for (name, s) in l.streams() {
            streams.set(
                &name,
                StreamState {
                    last_revision: s.last_revision,
                    last_position: s.last_position,
                },
            );
        }
    };
    for s in sealed.iter().filter(|s| s.index.base() >= covered) {
        apply(&s.index);
        // A summary that failed its first-use check answered nothing: never a silently short state.
        if let Some(e) = s.index.damage() {
            return Err(e);
        }
    }
    if let Some(a) = active {
        apply(&*a.index.read());
    }
    Ok(streams)
}
