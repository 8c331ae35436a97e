//! The segment files of an open log, as readers and the writer hold them.
//!
//! This module owns [`SealedSegment`] (a mapped, immutable file and its mapped
//! index), [`ActiveSegment`] (the file being appended to and its in-memory
//! index) and the [`SegmentSet`] that holds them, which is changed only by
//! swapping whole lists so that a reader's snapshot never changes under it.
//! It must never decide what to write: the writer, recovery and the
//! maintenance jobs do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::error::{Error, IoContext, Result};
use crate::event::now_micros;
use crate::format::block_cache::BlockCache;
use crate::format::compressed::{Compressed, DICTIONARY_FILE, Dictionary};
use crate::format::index::{Lookup, MemIndex, MetaFields, SegmentIndex};
use crate::format::segment::{SEGMENT_HEADER, SegmentHeader, index_file_name, segment_file_name};
use crate::storage::{Mapped, Storage, StorageFile};

/// A sealed segment: its mapped bytes and its mapped index.
pub(crate) struct SealedSegment {
    pub(crate) path: PathBuf,
    /// The whole file; events read from an uncompressed one share these bytes (no copy).
    pub(crate) bytes: Bytes,
    pub(crate) index: SegmentIndex,
    /// The block table, if the file is compressed.
    pub(crate) compressed: Option<Compressed>,
}

impl SealedSegment {
    /// Maps the sealed segment starting at `base` in `dir` and its index file.
    pub(crate) fn open(storage: &dyn Storage, dir: &Path, base: u64, dict: Option<&Arc<Dictionary>>) -> Result<Self> {
        let path = dir.join(segment_file_name(base));
        let idx_name = index_file_name(base);
        let idx_path = dir.join(&idx_name);
        let bytes = mapped_bytes(storage.map(&path).ctx(|| format!("mapping {}", path.display()))?);
        let index = open_index(storage, &idx_path)?;
        Self::new(path, bytes, index, dict)
    }

    /// A sealed segment over its file's bytes and its index; reads the block
    /// table if the header says the file is compressed.
    pub(crate) fn new(
        path: PathBuf,
        bytes: Bytes,
        index: SegmentIndex,
        dict: Option<&Arc<Dictionary>>,
    ) -> Result<Self> {
        let header = SegmentHeader::decode(&bytes, &path)?;
        Self::with_header(path, bytes, &header, index, dict)
    }

    /// [`SealedSegment::new`] with the file's header decoded by the caller
    /// (read with a positional read, so that no mapped page is touched).
    pub(crate) fn with_header(
        path: PathBuf,
        bytes: Bytes,
        header: &SegmentHeader,
        index: SegmentIndex,
        dict: Option<&Arc<Dictionary>>,
    ) -> Result<Self> {
        let compressed = if header.compressed {
            Some(Compressed::open_with_header(bytes.clone(), header, &path, dict)?)
        } else {
            None
        };
        Ok(SealedSegment {
            path,
            bytes,
            index,
            compressed,
        })
    }

    /// The logical bytes `[offset, end)` (cut at a block's end when compressed:
    /// a frame starting at `offset` is always whole); decompressed blocks are
    /// kept in `cache`, if given.
    pub(crate) fn range(&self, offset: u64, end: u64, cache: Option<&BlockCache>) -> Result<Bytes> {
        match &self.compressed {
            Some(c) => c.range(offset, end, &self.path, cache),
            None => {
                let range = usize::try_from(offset)
                    .ok()
                    .zip(usize::try_from(end).ok())
                    .filter(|(start, stop)| start <= stop && *stop <= self.bytes.len())
                    .ok_or_else(|| Error::corruption(&self.path, offset, "frame past the end of the segment"))?;
                Ok(self.bytes.slice(range.0..range.1))
            }
        }
    }

    /// The whole segment as written before compression.
    pub(crate) fn logical(&self) -> Result<Bytes> {
        match &self.compressed {
            Some(c) => Ok(Bytes::from(c.logical(&self.path)?)),
            None => Ok(self.bytes.clone()),
        }
    }
}

/// Maps the index file `path` and opens it, reading its header and
/// checksums with positional reads rather than through the mapping, so that
/// opening it makes none of its pages resident (see
/// [`SegmentIndex::open_with_edges`]).
pub(crate) fn open_index(storage: &dyn Storage, path: &Path) -> Result<SegmentIndex> {
    let map = storage.map(path).ctx(|| format!("mapping {}", path.display()))?;
    let len = (*map).as_ref().len();
    let mut head = vec![0u8; crate::format::index::INDEX_HEADER.min(len)];
    let tail_len = crate::format::index::INDEX_TAIL.min(len);
    let mut tail = vec![0u8; tail_len];
    let file = storage
        .open(path, false)
        .ctx(|| format!("opening {}", path.display()))?;
    file.read_exact_at(&mut head, 0)
        .and_then(|()| file.read_exact_at(&mut tail, (len - tail_len) as u64))
        .ctx(|| format!("reading {}", path.display()))?;
    SegmentIndex::open_with_edges(map, path, &head, &tail)
}

/// The header of the segment file `path`, read with a positional read
/// rather than through a mapping (a touched mapped page can make a whole
/// large folio, up to 2 MiB, resident in this process).
pub(crate) fn read_segment_header(storage: &dyn Storage, path: &Path) -> Result<SegmentHeader> {
    let file = storage
        .open(path, false)
        .ctx(|| format!("opening {}", path.display()))?;
    let len = file.len().ctx(|| format!("reading {}", path.display()))?;
    let mut head = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(SEGMENT_HEADER)];
    file.read_exact_at(&mut head, 0)
        .ctx(|| format!("reading {}", path.display()))?;
    SegmentHeader::decode(&head, path)
}

/// Owner of a mapping, so that the mapped bytes can back a [`Bytes`].
struct MapOwner(Mapped);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// Bytes backed by a mapping, kept alive as long as any slice of them is.
pub(crate) fn mapped_bytes(map: Mapped) -> Bytes {
    Bytes::from_owner(MapOwner(map))
}

/// The segment being appended to.
pub(crate) struct ActiveSegment {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn StorageFile>,
    pub(crate) index: RwLock<MemIndex>,
    /// The CRC-32 state of the segment's bytes after its header, up to the
    /// offset it names, as recovery scanned them (so that the writer
    /// continues it instead of reading the segment again); `None` if unknown.
    pub(crate) content_crc: Option<(u64, crc32fast::Hasher)>,
}

impl ActiveSegment {
    /// Creates the segment file starting at position `base` in `dir`: its
    /// header written and synced, and the directory synced, before anything is
    /// appended to it. `version` is 3 in a store that seals events (it has
    /// subject keys), 1 otherwise.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        fields: Arc<MetaFields>,
        version: u32,
    ) -> Result<Self> {
        let path = dir.join(segment_file_name(base));
        let file = storage.create(&path).ctx(|| format!("creating {}", path.display()))?;
        let header = SegmentHeader {
            version,
            base_position: base,
            created_micros: now_micros(),
            compressed: false,
            dictionary: None,
        };
        file.write_all_at(&header.encode(), 0)
            .and_then(|()| file.sync_data())
            .and_then(|()| storage.sync_dir(dir))
            .ctx(|| format!("initialising {}", path.display()))?;
        Ok(ActiveSegment {
            path,
            file,
            index: RwLock::new(MemIndex::new(base, SEGMENT_HEADER as u64, fields)),
            content_crc: None,
        })
    }
}

/// The segments of the log at one instant: sealed ones oldest first, then the
/// active one (absent in a store open for reading only whose last segment is sealed).
#[derive(Clone)]
pub(crate) struct Segments {
    /// Sealed segments, oldest first, each before the active one.
    pub(crate) sealed: Arc<Vec<Arc<SealedSegment>>>,
    /// The segment being appended to.
    pub(crate) active: Option<Arc<ActiveSegment>>,
}

impl Segments {
    /// How many segment files there are.
    pub(crate) fn count(&self) -> usize {
        self.sealed.len() + usize::from(self.active.is_some())
    }
}

/// The log's segments, swapped as a whole: a rotation seals the active segment
/// and starts the next one in one step, and a maintenance job replaces one
/// sealed segment by its rewritten form, while readers keep the [`Segments`]
/// they took.
pub(crate) struct SegmentSet {
    current: RwLock<Segments>,
    /// Sealed segments replaced by a form with fewer events (scavenging)
    /// since the store opened: positions lose their events only when it
    /// grows. Compression, which removes none, does not count.
    removals: std::sync::atomic::AtomicU64,
}

impl SegmentSet {
    /// A set holding these segments.
    pub(crate) fn new(sealed: Vec<Arc<SealedSegment>>, active: Option<Arc<ActiveSegment>>) -> Self {
        SegmentSet {
            current: RwLock::new(Segments {
                sealed: Arc::new(sealed),
                active,
            }),
            removals: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The segments now.
    pub(crate) fn snapshot(&self) -> Segments {
        self.current.read().clone()
    }

    /// The segment being appended to, if any.
    pub(crate) fn active(&self) -> Option<Arc<ActiveSegment>> {
        self.current.read().active.clone()
    }

    /// The sealed segments now, oldest first.
    pub(crate) fn sealed(&self) -> Arc<Vec<Arc<SealedSegment>>> {
        self.current.read().sealed.clone()
    }

    /// Seals the active segment (now `sealed`) and makes `next` the active one, in one step.
    pub(crate) fn rotate(&self, sealed: SealedSegment, next: Arc<ActiveSegment>) {
        let mut current = self.current.write();
        let mut list = (*current.sealed).clone();
        list.push(Arc::new(sealed));
        *current = Segments {
            sealed: Arc::new(list),
            active: Some(next),
        };
    }

    /// How many sealed segments were replaced by a form with fewer events
    /// since the store opened.
    pub(crate) fn removals(&self) -> u64 {
        self.removals.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Replaces the sealed segment with the same base by `segment` (its
    /// compressed or scavenged form; `removes_events` says whether it holds
    /// fewer events), and drops the blocks of the file it replaces from
    /// `cache` (no read can ask for them again); false if there is none.
    pub(crate) fn replace_sealed(&self, segment: SealedSegment, cache: &BlockCache, removes_events: bool) -> bool {
        let mut current = self.current.write();
        let base = segment.index.base();
        let Some(at) = current.sealed.iter().position(|s| s.index.base() == base) else {
            return false;
        };
        let mut list = (*current.sealed).clone();
        let old = std::mem::replace(&mut list[at], Arc::new(segment));
        current.sealed = Arc::new(list);
        // Counted before readers can take the new set.
        if removes_events {
            self.removals.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        drop(current);
        if let Some(c) = &old.compressed {
            cache.forget(c.id());
        }
        true
    }
}

/// Loads the store's dictionary, if the data directory has one.
pub(crate) fn load_dictionary(st: &dyn Storage, dir: &Path) -> Result<Option<Arc<Dictionary>>> {
    let path = dir.join(DICTIONARY_FILE);
    if !st.exists(&path) {
        return Ok(None);
    }
    let bytes = st.map(&path).ctx(|| format!("reading {DICTIONARY_FILE}"))?;
    Ok(Some(Arc::new(Dictionary::decode((*bytes).as_ref(), &path)?)))
}

/// One segment, sealed or active, as a read sees it.
#[derive(Clone)]
pub(crate) enum SegRef {
    /// A sealed segment.
    Sealed(Arc<SealedSegment>),
    /// The segment the writer appends to.
    Active(Arc<ActiveSegment>),
}

impl SegRef {
    /// Runs `f` on the segment's index (the active one's under its lock).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&dyn Lookup) -> R) -> R {
        match self {
            SegRef::Sealed(s) => f(&s.index),
            SegRef::Active(a) => f(&*a.index.read()),
        }
    }
    /// Damage the segment's index found on first use of a section (which
    /// then answered nothing): a read that used the index fails with it.
    pub(crate) fn index_damage(&self) -> Result<()> {
        match self {
            SegRef::Sealed(s) => s.index.damage().map_or(Ok(()), Err),
            SegRef::Active(_) => Ok(()),
        }
    }
    /// The segment file's path.
    pub(crate) fn path(&self) -> &Path {
        match self {
            SegRef::Sealed(s) => &s.path,
            SegRef::Active(a) => &a.path,
        }
    }
}
