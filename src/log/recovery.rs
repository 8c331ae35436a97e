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

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, IoContext, Result};
use crate::event::now_micros;
use crate::format::checkpoint::{
    ACTIVE_INDEX_FILE, DURABLE_FILE, DurableMark, META_FILE, STREAMS_FILE, StoreMeta, StreamState, StreamTable, StreamsCheckpoint,
    decode_active_index,
};
use crate::format::index::{Lookup, SegmentIndex};
use crate::format::segment::{self, SEGMENT_HEADER, ScanEnd, SegmentHeader, segment_file_name};
use crate::log::damage::{Damage, TornTail, damage_of, save_torn_tail};
use crate::log::scan::{Scanned, index_segment, resume_scan};
use crate::log::segments::{ActiveSegment, SealedSegment, SegmentSet, mapped_bytes, open_index, read_segment_header};
use crate::log::state::{Shared, StreamMap};
use crate::options::Options;
use crate::storage::{Storage, read_whole, write_atomically};

/// Name of the lock file.
pub const LOCK_FILE: &str = "LOCK";
/// What `durable.chk` says, as recovery uses it.
enum Claim {
    /// No clean close recorded: only group frames claim anything durable.
    Absent,
    /// The last clean close.
    Mark(DurableMark),
    /// The file is damaged: recovery cannot tell a torn tail from damage, so it cuts nothing.
    Unreadable(Error),
}

fn load_claim(st: &dyn Storage, dir: &Path) -> Result<Claim> {
    let path = dir.join(DURABLE_FILE);
    if !st.exists(&path) {
        return Ok(Claim::Absent);
    }
    let bytes = st.map(&path).ctx(|| format!("reading {}", path.display()))?;
    match DurableMark::decode((*bytes).as_ref(), &path) {
        Ok(m) => Ok(Claim::Mark(m)),
        Err(e @ Error::UnsupportedVersion { .. }) => Err(e),
        Err(e) => Ok(Claim::Unreadable(e)),
    }
}

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
        active = Some(Arc::new(ActiveSegment::create(st, dir, expected_base, fields.clone(), version)?));
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

/// Refuses a directory with no identity file that holds anything but annal's own files.
fn refuse_foreign(st: &dyn Storage, dir: &Path) -> Result<()> {
    if st.exists(&dir.join(META_FILE)) {
        return Ok(());
    }
    let foreign: Vec<String> = st
        .list(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .into_iter()
        .filter(|n| n != LOCK_FILE && n != &format!("{META_FILE}.tmp"))
        .collect();
    match foreign.first() {
        Some(name) => Err(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: format!("it holds {name:?} but no {META_FILE}"),
        }),
        None => Ok(()),
    }
}

/// `streams.chk` as open uses it.
struct LoadedStreams {
    /// Every event before this position is covered.
    covered_position: u64,
    /// Its stream states.
    streams: StreamMap,
}

/// The stream checkpoint (`streams.chk`), if it exists and decodes. One that
/// does not decode is rebuilt from the segments' summaries (verify and repair
/// report it). A version-2 file is checked whole and then searched in place
/// (no allocation per stream); a version-1 file is decoded into a map.
fn load_streams_checkpoint(st: &dyn Storage, dir: &Path) -> Option<LoadedStreams> {
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

/// A file that says the store held events: an index, or a stream checkpoint
/// covering some position (for a directory whose segment files are all gone).
fn evidence_of_events(
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
fn evidence_past_the_end(
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

/// Refuses directories that are not annal stores; writes the identity of a new one.
fn check_identity(st: &dyn Storage, dir: &Path) -> Result<()> {
    let meta_path = dir.join(META_FILE);
    if st.exists(&meta_path) {
        let f = st
            .open(&meta_path, false)
            .ctx(|| format!("opening {}", meta_path.display()))?;
        let len = f.len().ctx(|| format!("reading {}", meta_path.display()))?;
        let mut b = vec![0u8; len.min(4096) as usize];
        f.read_exact_at(&mut b, 0)
            .ctx(|| format!("reading {}", meta_path.display()))?;
        StoreMeta::decode(&b, &meta_path)?;
        return Ok(());
    }
    refuse_foreign(st, dir)?;
    let meta = StoreMeta {
        store_id: uuid::Uuid::new_v4(),
        created_micros: now_micros(),
    };
    write_atomically(st, dir, META_FILE, &meta.encode()).ctx(|| format!("writing {META_FILE}"))
}

#[allow(
    clippy::large_enum_variant,
    reason = "one value per segment at open, moved once into the segment list"
)]
enum Opened {
    Sealed(SealedSegment),
    Active(ActiveSegment),
}

/// Opens one segment for reading only: as [`open_segment`] would, but writing
/// nothing (a torn tail stays where it is, unread; an index is rebuilt in
/// memory) and, on damage, keeping the events before it readable and
/// recording the rest of the segment as damaged.
fn read_segment(
    st: &dyn Storage,
    dir: &Path,
    seg: &Seg<'_>,
    idx_name: Option<&String>,
    dict: Option<&Arc<crate::format::compressed::Dictionary>>,
    next_base: Option<u64>,
    damage: &mut Vec<Damage>,
) -> Result<Option<Opened>> {
    let (path, base) = (seg.path, seg.base);
    let rest = next_base.unwrap_or(u64::MAX);
    // A sealed segment with a good index is opened without reading its bytes.
    if let Some(idx_name) = idx_name {
        let idx_path = dir.join(idx_name);
        let loaded = open_index(st, &idx_path).ok();
        if let Some(index) = loaded.filter(|i| {
            i.base() == base
                && next_base.is_none_or(|n| i.next_position() == n)
                && i.meta_fingerprint() == seg.fields.fingerprint()
                && (!seg.summary_needed || i.check_all().is_ok())
        })
            && let Ok(bytes) = st.map(path)
            // Read with pread: a touched mapped page can make 2 MiB resident.
            && let Ok(header) = read_segment_header(st, path)
            && header.base_position == base
            && let Ok(sealed) = SealedSegment::with_header(path.to_path_buf(), mapped_bytes(bytes), &header, index, dict)
            // The last segment is normally the active one, with no index: trust one only
            // if its seal is there (see `open_segment`).
            && (next_base.is_some() || seal_at_index_end(&sealed) == Some(true))
        {
            return Ok(Some(Opened::Sealed(sealed)));
        }
    }
    let file = st.open(path, false).ctx(|| format!("opening {}", path.display()))?;
    let raw = read_whole(&*file).ctx(|| format!("reading {}", path.display()))?;
    // A last segment whose creation a crash interrupted never held an event.
    let unfinished = seg.is_last
        && segment::find_valid_frame(&raw, SEGMENT_HEADER).is_none()
        && !matches!(seg.claim, Claim::Mark(m) if m.durable_end > SEGMENT_HEADER as u64);
    let logical = match SegmentHeader::decode(&raw, path) {
        Ok(h) if h.compressed => {
            crate::format::compressed::Compressed::open(raw.into(), path, dict).and_then(|c| c.logical(path))
        }
        Ok(h) if h.base_position != base => Err(Error::corruption(
            path,
            16,
            "header base position differs from the file name",
        )),
        Ok(_) => Ok(raw),
        Err(e) => Err(e),
    };
    let bytes = match logical {
        Ok(b) => b,
        Err(e) => {
            if !(unfinished && matches!(e, Error::Corruption { .. })) {
                damage.push(damage_of(e, base, rest));
            }
            return Ok(None);
        }
    };
    let Scanned {
        index,
        end,
        committed_end,
        pending,
    } = index_segment(&bytes, base, path, seg.fields)?;
    let data_end = match end {
        ScanEnd::Clean { end } => end,
        _ => segment::data_end(&bytes, index_in(&bytes, committed_end, path)?) as u64,
    };
    let problem = match &end {
        ScanEnd::Sealed { seal_offset, seal } => {
            (pending > 0 || *seal_offset != committed_end || seal.next_position != index.next_position())
                .then(|| Error::corruption(path, *seal_offset, "seal disagrees with the segment's events"))
        }
        ScanEnd::Damaged {
            offset,
            error,
            durable_claim: Some(at),
        } => Some(Error::corruption(
            path,
            *offset,
            format!("{error}, yet the group at byte {at} was written after these bytes were synced"),
        )),
        ScanEnd::Damaged { offset, error, .. } if !seg.is_last => {
            Some(Error::corruption(path, *offset, error.to_string()))
        }
        ScanEnd::Clean { .. } if !seg.is_last => Some(Error::corruption(
            path,
            committed_end,
            "segment is not sealed but a later segment exists",
        )),
        _ => check_claim(seg, &bytes, &end, committed_end, data_end, None).err(),
    };
    let sealed_whole = matches!(end, ScanEnd::Sealed { .. }) && problem.is_none();
    if let Some(e) = problem {
        damage.push(damage_of(e, index.next_position(), rest));
    }
    if seg.is_last && !sealed_whole {
        return Ok(Some(Opened::Active(ActiveSegment {
            path: path.to_path_buf(),
            file,
            index: RwLock::new(index),
            content_crc: None,
        })));
    }
    let idx_path = dir.join(crate::format::segment::index_file_name(base));
    let mapped: crate::storage::Mapped = Arc::new(index.encode_file()?);
    Ok(Some(Opened::Sealed(SealedSegment::new(
        path.to_path_buf(),
        Bytes::from(bytes),
        SegmentIndex::open(mapped, &idx_path)?,
        None,
    )?)))
}

/// One segment file as recovery meets it.
struct Seg<'a> {
    path: &'a Path,
    base: u64,
    is_last: bool,
    /// What `durable.chk` claims about this segment (only ever about the last one).
    claim: &'a Claim,
    /// The store's indexed metadata fields: an index file made with others is rebuilt.
    fields: &'a Arc<crate::format::index::MetaFields>,
    /// True if the stream states are rebuilt from this segment's index
    /// summary (the stream checkpoint does not cover it): its index is then
    /// checked whole at open, checksums and entries, and rebuilt if that
    /// fails. Other indexes are checked on first use of each section.
    summary_needed: bool,
}

/// Whether the seal that a sealed segment's index implies is where the index
/// says the events end: `Some(true)` if it is, `Some(false)` if another frame
/// (or a seal of other positions) is there, `None` if no frame decodes there.
fn seal_at_index_end(sealed: &SealedSegment) -> Option<bool> {
    let index = &sealed.index;
    let tail = sealed.range(index.end_offset(), u64::MAX, None);
    match tail.as_deref().map(crate::format::record::decode_frame) {
        Ok(Ok((crate::format::record::Frame::Seal(seal), _))) => Some(seal.next_position == index.next_position()),
        Ok(Ok(_)) => Some(false),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Opens one segment: sealed ones through their index (rebuilt if missing or
/// damaged), the last unsealed one by a full scan with torn-tail recovery.
fn open_segment(
    st: &dyn Storage,
    dir: &Path,
    seg: &Seg<'_>,
    idx_name: Option<&String>,
    dict: Option<&Arc<crate::format::compressed::Dictionary>>,
    torn: &mut Vec<TornTail>,
    active_index_saved: &mut bool,
) -> Result<Option<Opened>> {
    let (path, base, is_last) = (seg.path, seg.base, seg.is_last);
    // A sealed segment with a good index is opened without reading its bytes.
    if let Some(idx_name) = idx_name {
        let idx_path = dir.join(idx_name);
        let loaded = open_index(st, &idx_path);
        match loaded {
            // An index whose summary open needs (see `Seg::summary_needed`)
            // and which fails its full check is rebuilt below with the rest,
            // as is one made with other indexed metadata fields. Any other
            // index is opened without reading its body: its checksums and
            // entries are checked on first use of each section.
            Ok(index)
                if index.base() == base
                    && (!seg.summary_needed || index.check_all().is_ok())
                    && index.meta_fingerprint() == seg.fields.fingerprint() =>
            {
                let bytes = st.map(path).ctx(|| format!("mapping {}", path.display()))?;
                let header = read_segment_header(st, path)?;
                let sealed = SealedSegment::with_header(path.to_path_buf(), mapped_bytes(bytes), &header, index, dict)?;
                let index = &sealed.index;
                if header.base_position != base {
                    return Err(Error::corruption(
                        path,
                        16,
                        "header base position differs from the file name",
                    ));
                }
                // An index whose seal would lie past the segment's end describes some
                // other (older) segment of that name: rebuild from the scan below.
                let logical_len = sealed
                    .compressed
                    .as_ref()
                    .map_or(sealed.bytes.len() as u64, |c| c.logical_len());
                let seal_len = (crate::format::record::FRAME_HEADER + 22) as u64;
                if index.end_offset().saturating_add(seal_len) <= logical_len {
                    // The index must describe this segment: its seal sits where the index
                    // says the events end. A seal damaged in place is left to `verify`;
                    // it must not keep the segment's good events from being read.
                    let end = index.end_offset();
                    let fits = match seal_at_index_end(&sealed) {
                        Some(true) => true,
                        Some(false) => false,
                        // Damage where the seal is (or in its compressed block): left to verify.
                        // Not in the last segment, which is normally the active one and has no
                        // index: an index for it describes an older segment of that name (its
                        // "seal" would lie in the middle of appends made since), so the segment
                        // is scanned below, with its durable-end claim checked.
                        None => !is_last,
                    };
                    if fits {
                        return Ok(Some(Opened::Sealed(sealed)));
                    }
                    if !is_last {
                        return Err(Error::corruption(
                            path,
                            end,
                            "no seal where the index says the segment ends",
                        ));
                    }
                }
            }
            Err(e @ Error::UnsupportedVersion { .. }) => return Err(e),
            // A damaged or foreign index is derived data: rebuild it from the log below.
            _ => {}
        }
    }

    let file = st.open(path, is_last).ctx(|| format!("opening {}", path.display()))?;
    // Mapped, not copied into the heap (the last segment can be a whole
    // segment_size of appends): nothing writes the file while this runs, and
    // the mapping is dropped before a torn tail is cut.
    let mut bytes = mapped_bytes(st.map(path).ctx(|| format!("mapping {}", path.display()))?);
    // A compressed segment (always sealed) is scanned in its logical form.
    if SegmentHeader::decode(&bytes, path).is_ok_and(|h| h.compressed) {
        bytes = Bytes::from(crate::format::compressed::Compressed::open(bytes, path, dict)?.logical(path)?);
    }
    let header = match SegmentHeader::decode(&bytes, path) {
        Ok(h) => h,
        // A crash while creating the last segment can leave its name on disk
        // with a short or unsynced header; its header is synced before any
        // event is written, so no event can be in it. Keep the bytes aside.
        Err(Error::Corruption { .. })
            if is_last
                && segment::find_valid_frame(&bytes, SEGMENT_HEADER).is_none()
                && !matches!(seg.claim, Claim::Mark(m) if m.durable_end > SEGMENT_HEADER as u64) =>
        {
            torn.push(save_torn_tail(st, dir, path, &bytes, base, 0)?);
            st.remove(path)
                .and_then(|()| st.sync_dir(dir))
                .ctx(|| format!("removing the unfinished segment {}", path.display()))?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if header.base_position != base {
        return Err(Error::corruption(
            path,
            16,
            "header base position differs from the file name",
        ));
    }

    // After a clean close, the index of the bytes `durable.chk` vouches for
    // comes from `active.idc` once those bytes are checked against its
    // content CRC (as the full scan would check them), and only the bytes
    // after them are scanned.
    let resumed = match seg.claim {
        Claim::Mark(m) if is_last && !header.compressed => resume_from_checkpoint(st, dir, m, seg.fields, &bytes),
        _ => None,
    };
    *active_index_saved = resumed.is_some();
    let (scanned, prefix_crc) = match resumed {
        Some((index, crc)) => (resume_scan(&bytes, index, path)?, Some(crc)),
        None => (index_segment(&bytes, base, path, seg.fields)?, None),
    };
    let Scanned {
        index,
        end,
        committed_end,
        pending,
    } = scanned;

    match end {
        ScanEnd::Sealed { seal_offset, seal } => {
            if pending > 0 || seal_offset != committed_end {
                return Err(Error::corruption(
                    path,
                    seal_offset,
                    "seal follows an unfinished append",
                ));
            }
            if seal.next_position != index.next_position() || seal.event_count != index.len() as u64 {
                return Err(Error::corruption(
                    path,
                    seal_offset,
                    "seal disagrees with the segment's events",
                ));
            }
            let idx_name = crate::format::segment::index_file_name(base);
            write_atomically(st, dir, &idx_name, &index.encode_file()?).ctx(|| format!("writing {idx_name}"))?;
            let idx_path = dir.join(&idx_name);
            let map = st.map(&idx_path).ctx(|| format!("mapping {idx_name}"))?;
            Ok(Some(Opened::Sealed(SealedSegment::new(
                path.to_path_buf(),
                mapped_bytes(st.map(path).ctx(|| format!("mapping {}", path.display()))?),
                SegmentIndex::open(map, &idx_path)?,
                dict,
            )?)))
        }
        // A later group that was written when the damaged bytes were already
        // durable proves this is damage in synced data, not a torn tail.
        ScanEnd::Damaged {
            offset,
            error,
            durable_claim: Some(at),
        } => Err(Error::corruption(
            path,
            offset,
            format!("{error}, yet the group at byte {at} was written after these bytes were synced"),
        )),
        ScanEnd::Damaged { .. } | ScanEnd::Clean { .. } if !is_last => Err(Error::corruption(
            path,
            committed_end,
            "segment is not sealed but a later segment exists",
        )),
        ScanEnd::Damaged { .. } | ScanEnd::Clean { .. } => {
            // Bytes past the last commit, up to the preallocated zeros, are a torn tail.
            let data_end = match end {
                ScanEnd::Clean { end } => end,
                _ => segment::data_end(&bytes, index_in(&bytes, committed_end, path)?) as u64,
            };
            // The CRC of the bytes the scan covered: checked against the
            // durable-end claim, and continued by the writer.
            let covered = index.end_offset();
            // From the checkpoint's durable end on, or from the header.
            let (from, mut content_crc) = match (&prefix_crc, seg.claim) {
                (Some(crc), Claim::Mark(m)) => (index_in(&bytes, m.durable_end, path)?, crc.clone()),
                _ => (SEGMENT_HEADER, crc32fast::Hasher::new()),
            };
            content_crc.update(
                bytes
                    .get(from..index_in(&bytes, covered, path)?)
                    .ok_or_else(|| Error::corruption(path, covered, "index ends inside the segment header"))?,
            );
            let known = match (&prefix_crc, seg.claim) {
                (Some(crc), Claim::Mark(m)) => Some((m.durable_end, crc)),
                _ => Some((covered, &content_crc)),
            };
            check_claim(seg, &bytes, &end, committed_end, data_end, known)?;
            if data_end > committed_end {
                torn.push(save_torn_tail(
                    st,
                    dir,
                    path,
                    &bytes[index_in(&bytes, committed_end, path)?..index_in(&bytes, data_end, path)?],
                    base,
                    committed_end,
                )?);
                // No mapping of the file may outlive its cut.
                drop(bytes);
                file.set_len(committed_end)
                    .and_then(|()| file.sync_data())
                    .ctx(|| format!("cutting the torn tail of {}", path.display()))?;
            }
            Ok(Some(Opened::Active(ActiveSegment {
                path: path.to_path_buf(),
                file,
                index: RwLock::new(index),
                content_crc: Some((covered, content_crc)),
            })))
        }
    }
}

/// The index of the active segment's bytes before `mark.durable_end`, from
/// `active.idc`, with the CRC state of those bytes, if the file is whole, is
/// of this clean close (`mark`) and these indexed metadata `fields`, and the
/// segment's bytes before the durable end still hash to `mark.content_crc`.
/// `None` (scan the whole segment, as without the file) on any mismatch:
/// the scan then reports damage in those bytes as it always did.
fn resume_from_checkpoint(
    st: &dyn Storage,
    dir: &Path,
    mark: &DurableMark,
    fields: &Arc<crate::format::index::MetaFields>,
    bytes: &[u8],
) -> Option<(crate::format::index::MemIndex, crc32fast::Hasher)> {
    let file = dir.join(ACTIVE_INDEX_FILE);
    if !st.exists(&file) {
        return None;
    }
    let map = st.map(&file).ok()?;
    let index = decode_active_index((*map).as_ref(), &file, mark, fields.clone()).ok()?;
    let durable = bytes.get(SEGMENT_HEADER..usize::try_from(mark.durable_end).ok()?)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(durable);
    (crc.clone().finalize() == mark.content_crc).then_some((index, crc))
}

/// `offset`, found by scanning `bytes` (or claimed for them), as an index into them.
fn index_in(bytes: &[u8], offset: u64, path: &Path) -> Result<usize> {
    usize::try_from(offset)
        .ok()
        .filter(|at| *at <= bytes.len())
        .ok_or_else(|| Error::corruption(path, offset, "offset past the end of the segment"))
}

/// Refuses to treat as a torn tail anything that `durable.chk` says was durable
/// at the last clean close: damage or missing bytes before its `durable_end`, or
/// bytes before it that differ from what was there. With a damaged `durable.chk`
/// nothing may be cut at all.
/// `known`: the CRC state of the bytes from the header up to an offset, if
/// already computed (used when that offset is the claim's `durable_end`).
fn check_claim(
    seg: &Seg<'_>,
    bytes: &[u8],
    end: &ScanEnd,
    committed_end: u64,
    data_end: u64,
    known: Option<(u64, &crc32fast::Hasher)>,
) -> Result<()> {
    match seg.claim {
        Claim::Absent => Ok(()),
        Claim::Unreadable(e) if data_end > committed_end => Err(Error::corruption(
            seg.path,
            committed_end,
            format!(
                "{} bytes after the last complete append would be cut as a torn tail, but {DURABLE_FILE} is damaged ({e}), so they may have been durable; run repair",
                data_end - committed_end
            ),
        )),
        Claim::Unreadable(_) => Ok(()),
        Claim::Mark(m) => {
            if committed_end < m.durable_end {
                let (at, what) = match end {
                    ScanEnd::Damaged { offset, error, .. } => (*offset, error.to_string()),
                    ScanEnd::Clean { end } if *end < m.durable_end => {
                        (*end, "the segment's data ends here".to_string())
                    }
                    _ => (
                        committed_end,
                        "an unfinished append ends the segment's data".to_string(),
                    ),
                };
                return Err(Error::corruption(
                    seg.path,
                    at,
                    format!(
                        "{what}, yet the store was closed cleanly with this segment durable up to byte {} ({DURABLE_FILE})",
                        m.durable_end
                    ),
                ));
            }
            let durable = index_in(bytes, m.durable_end, seg.path)
                .ok()
                .and_then(|end| bytes.get(SEGMENT_HEADER..end))
                .ok_or_else(|| {
                    Error::corruption(seg.path, m.durable_end, format!("bad durable end in {DURABLE_FILE}"))
                })?;
            let crc = match known {
                Some((covered, h)) if covered == m.durable_end => h.clone().finalize(),
                _ => crc32fast::hash(durable),
            };
            if crc != m.content_crc {
                return Err(Error::corruption(
                    seg.path,
                    SEGMENT_HEADER as u64,
                    format!(
                        "bytes before offset {} differ from what was durable at the last clean close ({DURABLE_FILE})",
                        m.durable_end
                    ),
                ));
            }
            Ok(())
        }
    }
}

/// Stream states: from the checkpoint if it fits, then every later segment's summary.
fn rebuild_streams(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::{Lookup, MetaFields};
    use crate::storage::SimStorage;
    use crate::{Durability, EventData, ExpectedVersion, Store};

    /// After a clean close, `active.idc` gives the index a scan of the active
    /// segment gives, and the durable prefix's CRC state the writer goes on
    /// from; with a flipped bit in that prefix it is not used (the scan then
    /// reports the damage as it always did).
    #[test]
    fn the_checkpoint_gives_the_scanned_index_and_only_over_unchanged_bytes() {
        let sim = SimStorage::new();
        let dir = Path::new("/s");
        let opts = Options::default()
            .durability(Durability::Never)
            .segment_size(1 << 20)
            .indexed_metadata(["tenant"]);
        let store = Store::open_with(Arc::new(sim.clone()), dir, opts).unwrap();
        for i in 0..200u64 {
            let e = EventData::json("T", "{}")
                .with_tag(format!("k:{}", i % 3))
                .with_metadata(format!(r#"{{"tenant":"t{}"}}"#, i % 2));
            store.append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![e]).unwrap();
        }
        store.close().unwrap();
        let st: &dyn Storage = &sim;
        let mark = DurableMark::decode(&sim.read_file(&dir.join(DURABLE_FILE)).unwrap(), Path::new("d")).unwrap();
        let seg_path = dir.join(segment_file_name(mark.segment_base));
        let bytes = sim.read_file(&seg_path).unwrap();
        let fields = Arc::new(MetaFields::new(&["tenant"]));
        let scanned = index_segment(&bytes, mark.segment_base, &seg_path, &fields).unwrap().index;
        let (index, crc) = resume_from_checkpoint(st, dir, &mark, &fields, &bytes).expect("checkpoint used");
        assert_eq!(index.next_position(), mark.next_position);
        assert_eq!(index.encode_file().unwrap(), scanned.encode_file().unwrap());
        assert_eq!(index.encode_snapshot().unwrap().len(), scanned.encode_snapshot().unwrap().len());
        assert_eq!(crc.finalize(), mark.content_crc);
        // Other fields, or one changed byte in the segment's durable prefix: not used.
        assert!(resume_from_checkpoint(st, dir, &mark, &Arc::new(MetaFields::new(&["x"])), &bytes).is_none());
        let mut damaged = bytes.clone();
        damaged[SEGMENT_HEADER + 40] ^= 1;
        assert!(resume_from_checkpoint(st, dir, &mark, &fields, &damaged).is_none());
    }
}
