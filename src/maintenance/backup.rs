//! Consistent copies of a live store, restores, and store statistics.
//!
//! A backup copies the sealed segments and their indexes (immutable once
//! written) and the active segment up to the last published append, so the
//! copy is a store that opens as if the original had stopped at that instant.
//! Appends continue meanwhile. This module reads the store; it writes only
//! into the destination directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::format::checkpoint::{META_FILE, STREAMS_FILE};
use crate::format::index::Lookup;
use crate::log::state::Shared;
use crate::storage::{Storage, write_atomically};

/// What a backup copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// The destination directory.
    pub dir: PathBuf,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Events in the copy (its head position).
    pub events: u64,
}

/// Figures about a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Events ever appended (the head position).
    pub events: u64,
    /// Streams.
    pub streams: u64,
    /// Segment files (sealed and active).
    pub segments: usize,
    /// Bytes of segment files (sealed plus the active segment's written data).
    pub segment_bytes: u64,
    /// What [`StoreStats::segment_bytes`] would be with nothing compressed:
    /// compressed sealed segments count at their uncompressed length. The
    /// compression ratio is this divided by `segment_bytes`.
    pub uncompressed_segment_bytes: u64,
    /// Bytes of index files of sealed segments.
    pub index_bytes: u64,
    /// Events of the active segment, indexed in memory.
    pub active_events: u64,
    /// Sealed segments stored compressed.
    pub compressed_segments: usize,
    /// The last error of this store's background compressor or scavenger since
    /// it was opened (what failed, when, and why); `None` if none failed. It
    /// stays after later runs succeed, until another error replaces it.
    pub last_background_error: Option<String>,
    /// Retention holds of forwarders that wait for delivery (`retention =
    /// "wait"`), running or not (a stopped one holds from its saved
    /// checkpoint): each forwarder's name and the first position it has not
    /// delivered. Scavenging keeps every event from the lowest on.
    pub retention_held_by: Vec<(String, u64)>,
    /// The store's disk budget: `retention.max_bytes` (of sealed segments),
    /// if set.
    pub retention_max_bytes: Option<u64>,
    /// Bytes of sealed segments that hold events a forwarder has not
    /// delivered (from the segment of the lowest retention hold on): what
    /// scavenging cannot reclaim however far over the budget the store is.
    pub retention_held_bytes: u64,
    /// True while appends are refused because undelivered events alone are
    /// over the disk budget (`retention.when_full = "stop-appends"`).
    pub appends_stopped_for_budget: bool,
}

impl StoreStats {
    /// True if undelivered events alone take at least 80 % of the disk
    /// budget: the budget will soon be held only by dropping them.
    pub fn budget_threatened(&self) -> bool {
        self.retention_max_bytes
            .is_some_and(|m| u128::from(self.retention_held_bytes) * 10 >= u128::from(m) * 8)
    }

    /// True if undelivered events alone take more than the disk budget: it
    /// cannot be held without dropping them.
    pub fn budget_exceeded_by_holds(&self) -> bool {
        self.retention_max_bytes.is_some_and(|m| self.retention_held_bytes > m)
    }
}

fn empty_dest(st: &dyn Storage, dest: &Path) -> Result<()> {
    if st.exists(dest) {
        let names = st.list(dest).ctx(|| format!("listing {}", dest.display()))?;
        if !names.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{} is not empty; a backup or restore needs an empty or new directory",
                dest.display()
            )));
        }
    } else {
        st.create_dir_all(dest).ctx(|| format!("creating {}", dest.display()))?;
    }
    Ok(())
}

fn copy_bytes(st: &dyn Storage, dest: &Path, name: &str, bytes: &[u8], report: &mut BackupReport) -> Result<()> {
    write_atomically(st, dest, name, bytes).ctx(|| format!("writing {}", dest.join(name).display()))?;
    report.files += 1;
    report.bytes += bytes.len() as u64;
    Ok(())
}

/// Checks a sealed segment before it is copied: its bytes (decompressed, if
/// it is compressed) must match its seal's content checksum, so that a
/// segment that rotted on disk fails the backup, naming the file, instead of
/// being copied as a good one. Verify and repair deal with it.
fn check_sealed(seg: &crate::log::segments::SealedSegment) -> Result<()> {
    let logical = seg.logical()?;
    crate::format::segment::check_seal_content(&logical, seg.index.end_offset()).map_err(|(offset, why)| {
        Error::corruption(
            &seg.path,
            offset,
            format!("{why}; the backup was not made (run verify, then repair)"),
        )
    })
}

/// Copies the live store behind `shared` into `dest` (empty or new).
pub(crate) fn backup(shared: &Shared, dest: &Path) -> Result<BackupReport> {
    // A store open degraded around damage would copy only its intact part,
    // and the copy would look whole: refuse, naming the damage.
    if let Some(d) = shared.damage.first() {
        return Err(d.error());
    }
    let st = &*shared.storage;
    empty_dest(st, dest)?;
    // The stream checkpoint is read before the cut: it then covers a sealed
    // boundary at or before the cut's end. (Read after the copy of the
    // segments, it could describe a segment sealed meanwhile, which the copy
    // lacks: the copy would refuse to open, its newest segments "missing".)
    // Replaced whole when written, so what is read is one version of it.
    let streams_chk = st.map(&shared.dir.join(STREAMS_FILE)).ok();
    // One consistent cut: the segments, and the active one's end as of now.
    let now = shared.segments.snapshot();
    let (active_end, events) = match &now.active {
        Some(a) => {
            let idx = a.index.read();
            (idx.end_offset(), idx.next_position())
        }
        None => (0, shared.published()),
    };
    let mut report = BackupReport {
        dir: dest.to_path_buf(),
        events,
        ..Default::default()
    };
    let meta = st
        .map(&shared.dir.join(META_FILE))
        .ctx(|| format!("reading {META_FILE}"))?;
    copy_bytes(st, dest, META_FILE, (*meta).as_ref(), &mut report)?;
    for seg in now.sealed.iter() {
        let name = seg
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        check_sealed(seg)?;
        copy_bytes(st, dest, &name, &seg.bytes, &mut report)?;
        let idx_name = crate::format::segment::index_file_name(seg.index.base());
        // Open checks no index body: check it whole here, and copy one built
        // again from the segment just checked where it fails (derived data:
        // the copy must not carry damage the store has not even read yet).
        if seg.index.check_all().is_ok() {
            copy_bytes(st, dest, &idx_name, seg.index.raw(), &mut report)?;
        } else {
            let logical = seg.logical()?;
            let rebuilt = crate::log::scan::index_segment(&logical, seg.index.base(), &seg.path, &shared.meta_fields)?
                .index
                .encode_file_like(&seg.index)?;
            copy_bytes(st, dest, &idx_name, &rebuilt, &mut report)?;
        }
    }
    // Two files go as they are, if they exist, and one that exists but cannot
    // be read fails the backup: the dictionary compressed segments may need
    // (the copy could not be read without it), and the record of undelivered
    // events dropped for the disk budget, which is not derived (a copy without
    // it would say nothing was ever dropped).
    for name in [
        crate::format::compressed::DICTIONARY_FILE,
        crate::format::dropped::DROPPED_FILE,
    ] {
        let path = shared.dir.join(name);
        if st.exists(&path) {
            let bytes = st.map(&path).ctx(|| format!("reading {name}"))?;
            copy_bytes(st, dest, name, (*bytes).as_ref(), &mut report)?;
        }
    }
    if let Some(chk) = streams_chk {
        copy_bytes(st, dest, STREAMS_FILE, (*chk).as_ref(), &mut report)?;
    }
    if let Some(active) = &now.active {
        let len = usize::try_from(active_end)
            .map_err(|_| Error::corruption(&active.path, active_end, "active segment larger than memory"))?;
        let mut bytes = vec![0u8; len];
        active
            .file
            .read_exact_at(&mut bytes, 0)
            .ctx(|| format!("reading {}", active.path.display()))?;
        let name = active
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        copy_bytes(st, dest, &name, &bytes, &mut report)?;
    }
    // The subject keys, taken after the segments: every key an event copied
    // above was sealed under was durable before that event was written, and a
    // shred since then erases it in the copy as well. Encoded from memory (the
    // file grows in place, so it is never mapped).
    if let Some(keys) = shared.subjects.snapshot() {
        copy_bytes(st, dest, crate::format::subjects::SUBJECTS_FILE, &keys, &mut report)?;
    }
    st.sync_dir(dest).ctx(|| format!("syncing {}", dest.display()))?;
    Ok(report)
}

/// Copies a backup (or any closed store) in `from` into `to` (empty or new);
/// the copy is then opened once to check it.
pub fn restore_with(storage: std::sync::Arc<dyn Storage>, from: &Path, to: &Path) -> Result<BackupReport> {
    let st = &*storage;
    if !st.exists(&from.join(META_FILE)) {
        return Err(Error::NotAStore {
            path: from.to_path_buf(),
            reason: format!("no {META_FILE}"),
        });
    }
    empty_dest(st, to)?;
    let mut report = BackupReport {
        dir: to.to_path_buf(),
        ..Default::default()
    };
    let mut fields: Option<Vec<String>> = None;
    for name in st.list(from).ctx(|| format!("listing {}", from.display()))? {
        let keep = name == META_FILE
            || name == STREAMS_FILE
            || name == crate::format::compressed::DICTIONARY_FILE
            || name == crate::format::dropped::DROPPED_FILE
            || name == crate::format::subjects::SUBJECTS_FILE
            || matches!(crate::format::segment::parse_file_name(&name), Some((_, "seg" | "idx")));
        if !keep {
            continue;
        }
        let bytes = st.map(&from.join(&name)).ctx(|| format!("reading {name}"))?;
        copy_bytes(st, to, &name, (*bytes).as_ref(), &mut report)?;
        // The metadata fields the store indexes, as a version-3 index file names them.
        if fields.is_none() && name.ends_with(".idx") {
            fields = crate::format::index::SegmentIndex::open(bytes.clone(), &to.join(&name))
                .ok()
                .and_then(|i| i.meta_field_names());
        }
    }
    st.sync_dir(to).ctx(|| format!("syncing {}", to.display()))?;
    // The copy must open as a store does, for writing: every check of a
    // read-write open, its stream metadata readable, and the close that
    // records its durable end (durable.chk), so that later damage to the copy
    // is refused, never cut as a torn tail. It opens with the metadata fields
    // its indexes were built with, which it would otherwise rebuild without
    // them (and the store's next open again with them).
    let opened = Arc::new(crate::log::recovery::open(
        storage.clone(),
        to,
        crate::options::Options::default().indexed_metadata(fields.unwrap_or_default()),
        crate::log::recovery::Access::ReadWrite,
    )?);
    opened.load_metadata()?;
    let writer = crate::log::writer::Committer::new(opened.clone())?;
    report.events = opened.published();
    writer.close()?;
    Ok(report)
}

/// Restores on the real file system; see [`restore_with`].
pub fn restore(from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<BackupReport> {
    restore_with(
        std::sync::Arc::new(crate::storage::FsStorage),
        from.as_ref(),
        to.as_ref(),
    )
}

/// Figures about the store behind `shared`.
pub(crate) fn stats(shared: &Shared) -> StoreStats {
    let now = shared.segments.snapshot();
    let (active_end, active_events) = match &now.active {
        Some(a) => {
            let idx = a.index.read();
            (idx.end_offset(), idx.len() as u64)
        }
        None => (0, 0),
    };
    // Taken once, and let go before anything else locks it.
    let holds: Vec<(String, u64)> = shared
        .retention_holds
        .lock()
        .iter()
        .map(|(n, p)| (n.clone(), *p))
        .collect();
    let held_bytes = match holds.iter().map(|(_, p)| *p).min() {
        Some(hold) => now
            .sealed
            .iter()
            .filter(|s| s.index.next_position() > hold)
            .map(|s| s.bytes.len() as u64)
            .sum(),
        None => 0,
    };
    StoreStats {
        events: shared.published(),
        streams: shared.streams.read().len() as u64,
        segments: now.count(),
        segment_bytes: now.sealed.iter().map(|s| s.bytes.len() as u64).sum::<u64>() + active_end,
        uncompressed_segment_bytes: now
            .sealed
            .iter()
            .map(|s| s.compressed.as_ref().map_or(s.bytes.len() as u64, |c| c.logical_len()))
            .sum::<u64>()
            + active_end,
        index_bytes: now.sealed.iter().map(|s| s.index.raw().len() as u64).sum(),
        active_events,
        compressed_segments: now.sealed.iter().filter(|s| s.compressed.is_some()).count(),
        last_background_error: shared.background_error.lock().clone(),
        retention_held_by: holds,
        retention_max_bytes: shared.options.retention.max_bytes,
        retention_held_bytes: held_bytes,
        appends_stopped_for_budget: shared.budget_full.lock().is_some(),
    }
}
