//! Opening a data directory: identity check, lock, loading sealed segments and
//! their indexes, scanning the active segment, cutting a torn tail, and
//! rebuilding stream states.
//!
//! Recovery keeps every acknowledged append: it cuts only bytes after the last
//! complete append of the last segment that nothing claims durable (no later
//! group frame, and not `durable.chk` from the last clean close), and copies them
//! to `torn/` first, recording each cut so that the store can report it. Damage
//! anywhere else is reported as corruption, never "fixed" by dropping data.
//! This module must never write events.
//!
//! This file holds the `open` sequence; its steps live beside it:
//! [`identity`] (the identity file, foreign directories), [`claim`] (what
//! `durable.chk` vouches for), [`segment_file`] (opening one segment file),
//! [`missing`] (evidence of missing segments) and [`streams`] (stream states).

mod claim;
mod identity;
mod missing;
mod segment_file;
mod streams;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, IoContext, Result};
use crate::format::checkpoint::{DURABLE_FILE, META_FILE};
use crate::format::index::Lookup;
use crate::format::segment::{self, SEGMENT_HEADER, segment_file_name};
use crate::log::damage::{Damage, damage_of};
use crate::log::segments::{ActiveSegment, SealedSegment, SegmentSet};
use crate::log::state::Shared;
use crate::options::Options;
use crate::storage::Storage;
use claim::{Claim, load_claim};
pub use identity::LOCK_FILE;
use identity::{check_identity, refuse_foreign};
use missing::{evidence_of_events, evidence_past_the_end};
use segment_file::{Opened, Seg, open_segment, read_segment};
use streams::{load_streams_checkpoint, rebuild_streams};

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The one writer: takes the lock, cuts torn tails, writes derived files.
    ReadWrite,
    /// A reader: takes no lock and writes nothing (a read-only mount, a store
    /// another process holds, a damaged store). Damage is recorded and stepped
    /// around instead of refusing the open.
    ReadOnly,
}

/// Holds no lock: a read-only open leaves the directory to its writer.
struct NoLock;
impl crate::storage::LockGuard for NoLock {}

/// Opens the store in `dir`, recovering from a crash if needed.
pub(crate) fn open(storage: Arc<dyn Storage>, dir: &Path, options: Options, access: Access) -> Result<Shared> {
    let st = &*storage;
    let read_only = access == Access::ReadOnly;
    if !st.exists(dir) {
        if !options.create_if_missing || read_only {
            return Err(Error::NotAStore {
                path: dir.to_path_buf(),
                reason: "directory does not exist".into(),
            });
        }
        st.create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    // A directory that is not a store is refused before the lock file is made in it.
    refuse_foreign(st, dir)?;
    let lock: Box<dyn crate::storage::LockGuard> = if read_only {
        if !st.exists(&dir.join(META_FILE)) {
            return Err(Error::NotAStore {
                path: dir.to_path_buf(),
                reason: format!("no {META_FILE}"),
            });
        }
        Box::new(NoLock)
    } else {
        st.lock(&dir.join(LOCK_FILE)).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => Error::Locked {
                path: dir.to_path_buf(),
            },
            _ => Error::io(format!("locking {}", dir.display()), e),
        })?
    };
    check_identity(st, dir)?;
    // The key store is checked before anything is cut: an open it refuses
    // (a damaged header) cuts nothing.
    let subjects = crate::log::subjects::SubjectKeys::open(storage.clone(), dir, !read_only)?;

    let mut names: Vec<(u64, String)> = Vec::new();
    let mut idx_names: HashMap<u64, String> = HashMap::new();
    for name in st.list(dir).ctx(|| format!("listing {}", dir.display()))? {
        match segment::parse_file_name(&name) {
            Some((base, "seg")) => names.push((base, name)),
            Some((base, "idx")) => {
                idx_names.insert(base, name);
            }
            _ => {}
        }
    }
    names.sort();
    let dictionary = match crate::log::segments::load_dictionary(st, dir) {
        // A damaged dictionary is damage of the segments compressed with it: a
        // reader steps over those (they fail to open without it) and reads the rest.
        Err(Error::Corruption { .. }) if read_only => None,
        other => other?,
    };
    let claim = load_claim(st, dir)?;
    if let Claim::Mark(m) = &claim {
        let last_base = names.last().map(|(b, _)| *b);
        let missing = match last_base {
            Some(last) => m.segment_base > last,
            None => m.durable_end > SEGMENT_HEADER as u64,
        };
        if missing && !read_only {
            return Err(Error::corruption(
                dir.join(segment_file_name(m.segment_base)),
                0,
                format!(
                    "segment is missing, yet the store was closed cleanly with it durable up to byte {} ({DURABLE_FILE})",
                    m.durable_end
                ),
            ));
        }
    }
    let checkpoint = load_streams_checkpoint(st, dir);
    if names.is_empty()
        && let Some(file) = evidence_of_events(dir, &idx_names, checkpoint.as_ref())
    {
        // A new store here would hand out the missing events' positions again.
        return Err(Error::corruption(
            file,
            0,
            "no segment file exists, yet this file describes events: the segments are missing",
        ));
    }
    let mut damage: Vec<Damage> = Vec::new();
    let mut torn = Vec::new();
    let mut active_index_saved = false;
    let absent = Claim::Absent;

    let fields = Arc::new(crate::format::index::MetaFields::new(&options.indexed_metadata));
    // Where `rebuild_streams` will start reading summaries: the stream
    // checkpoint's covered position if it can fit (0, a segment's start, or
    // inside the last segment), else 0. Every index from there on is checked
    // whole at open and rebuilt if it fails, so that a damaged summary of
    // derived data never fails the open (a checkpoint that ends inside a
    // segment sealed after it, by a crash before the next checkpoint, is
    // thrown away there: every summary is then needed).
    let summaries_from = checkpoint.as_ref().map_or(0, |c| {
        let p = c.covered_position;
        let fits = p == 0 || names.iter().any(|(b, _)| *b == p) || names.last().is_some_and(|(b, _)| p >= *b);
        if fits { p } else { 0 }
    });
    let mut sealed: Vec<Arc<SealedSegment>> = Vec::new();
    let mut expected_base = 0u64;
    let mut active = None;
    let count = names.len();
    for (i, (base, name)) in names.iter().enumerate() {
        let path = dir.join(name);
        if *base != expected_base {
            let e = Error::corruption(
                &path,
                0,
                format!("segment starts at position {base}, expected {expected_base} (a segment is missing)"),
            );
            // A reader steps over the gap: the positions in it fail to read.
            if !read_only || *base < expected_base {
                return Err(e);
            }
            damage.push(damage_of(e, expected_base, *base));
            expected_base = *base;
        }
        let is_last = i + 1 == count;
        let seg_claim = match &claim {
            Claim::Mark(m) if is_last && m.segment_base == *base => &claim,
            Claim::Unreadable(_) if is_last => &claim,
            _ => &absent,
        };
        let seg = Seg {
            path: &path,
            base: *base,
            is_last,
            claim: seg_claim,
            fields: &fields,
            // `rebuild_streams` reads the summaries of the segments the stream checkpoint does not cover.
            summary_needed: *base >= summaries_from,
        };
        let next_base = names.get(i + 1).map(|(b, _)| *b);
        let opened = match access {
            Access::ReadWrite => open_segment(
                st,
                dir,
                &seg,
                idx_names.get(base),
                dictionary.as_ref(),
                &mut torn,
                &mut active_index_saved,
            )?,
            Access::ReadOnly => read_segment(
                st,
                dir,
                &seg,
                idx_names.get(base),
                dictionary.as_ref(),
                next_base,
                &mut damage,
            )?,
        };
        match opened {
            None => expected_base = next_base.unwrap_or(expected_base),
            Some(Opened::Sealed(s)) => {
                expected_base = s.index.next_position();
                sealed.push(Arc::new(s));
            }
            Some(Opened::Active(a)) => {
                expected_base = a.index.read().next_position();
                active = Some(Arc::new(a));
            }
        }
        // A reader that stepped over damage goes on at the next segment.
        if let Some(d) = damage.last()
            && d.first_position <= expected_base
            && d.end_position > expected_base
            && d.end_position != u64::MAX
        {
            expected_base = d.end_position;
        }
    }

    // Files that describe positions past the segments read: the newest
    // segment files are gone, and a new append would take their positions
    // (and revisions) again.
    if let Some((file, described)) = evidence_past_the_end(dir, &names, &idx_names, checkpoint.as_ref(), expected_base)
        && !damage.iter().any(|d| d.end_position == u64::MAX)
    {
        let e = Error::corruption(
            file,
            0,
            format!(
                "the log ends at position {expected_base}, yet this file describes events up to position {described}: \
                 the newest segment files are missing (`annal repair` records the lost positions so that they are never handed out again)"
            ),
        );
        if !read_only {
            return Err(e);
        }
        damage.push(damage_of(e, expected_base, u64::MAX));
    }
    let streams_v1 = checkpoint.as_ref().is_some_and(|c| !c.streams.is_table());
    let streams = rebuild_streams(checkpoint, &sealed, active.as_deref())?;
    if read_only
        && let Claim::Mark(m) = &claim
        && m.next_position > expected_base
        && !damage.iter().any(|d| d.end_position == u64::MAX)
    {
        // The last clean close vouched for positions no segment holds now.
        let file = dir.join(segment_file_name(m.segment_base));
        let e = Error::corruption(
            file,
            m.durable_end,
            format!(
                "positions {expected_base}..{} are missing, yet the store was closed cleanly with them durable ({DURABLE_FILE})",
                m.next_position
            ),
        );
        damage.push(damage_of(e, expected_base, u64::MAX));
    }
    // The writer appends to a new segment when the last one is sealed (or there is none).
    if active.is_none() && !read_only {
        let version = if st.exists(&dir.join(crate::format::subjects::SUBJECTS_FILE)) {
            crate::format::segment::SEGMENT_VERSION_SEALED
        } else {
            crate::format::segment::SEGMENT_VERSION
        };
        active = Some(Arc::new(ActiveSegment::create(
            st,
            dir,
            expected_base,
            fields.clone(),
            version,
        )?));
    }
    let block_cache = crate::format::block_cache::BlockCache::new(options.block_cache_bytes);
    // Every cut no open has reported yet, this open's and those of opens
    // that failed after cutting.
    let (torn, key_cuts) = match access {
        Access::ReadWrite => crate::log::damage::unreported_cuts(st, dir)?,
        Access::ReadOnly => (torn, Vec::new()),
    };
    let key_cuts: Vec<String> = key_cuts
        .iter()
        .map(|c| {
            format!(
                "open cut a torn record of {} ({} bytes at offset {}, a key whose write never finished), saved in {}",
                crate::format::subjects::SUBJECTS_FILE,
                c.bytes,
                c.offset,
                c.saved.display()
            )
        })
        .collect();
    let key_note = (!key_cuts.is_empty()).then(|| key_cuts.join("; "));
    let shared = Shared {
        dir: dir.to_path_buf(),
        storage: storage.clone(),
        options,
        meta_fields: fields,
        segments: SegmentSet::new(sealed, active),
        streams: RwLock::new(streams),
        stream_names: Mutex::new(Arc::new(Vec::new())),
        next_position: AtomicU64::new(expected_base),
        recent_ids: crate::log::recent_ids::RecentIds::new(expected_base),
        failure: Mutex::new(None),
        metadata: Default::default(),
        metadata_writes: Default::default(),
        scavenging: Default::default(),
        dictionary: RwLock::new(dictionary),
        block_cache,
        notifier: Default::default(),
        background_error: Mutex::new(key_note),
        retention_holds: Mutex::new(std::collections::BTreeMap::new()),
        forwarder_positions: Mutex::new(std::collections::BTreeMap::new()),
        compress_skipped: Mutex::new(std::collections::HashSet::new()),
        budget_full: Mutex::new(None),
        scavenge_wanted: std::sync::atomic::AtomicBool::new(false),
        drops_recorded: std::sync::atomic::AtomicU64::new(0),
        durable_mark: Mutex::new(match claim {
            Claim::Mark(m) => Some(m),
            _ => None,
        }),
        active_index_saved: std::sync::atomic::AtomicBool::new(active_index_saved),
        streams_v1: std::sync::atomic::AtomicBool::new(streams_v1),
        torn_at_open: torn,
        key_cuts_at_open: key_cuts,
        damage,
        subjects,
        _lock: lock,
    };
    // The list of unreported cuts is forgotten by `Store::open_with` once the
    // whole open succeeded (what follows here can still fail).
    Ok(shared)
}
