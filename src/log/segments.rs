//! The segment files of an open log, as readers and the writer hold them.
//!
//! This module owns [`SealedSegment`] (a mapped, immutable file and its mapped
//! index) and [`ActiveSegment`] (the file being appended to and its in-memory
//! index). It must never decide what to write: the writer, recovery and the
//! maintenance jobs do.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::format::index::{MemIndex, SegmentIndex};
use crate::storage::{Mapped, StorageFile};

/// A sealed segment: its mapped bytes and its mapped index.
pub(crate) struct SealedSegment {
    pub(crate) path: PathBuf,
    /// The whole file; events read from an uncompressed one share these bytes (no copy).
    pub(crate) bytes: Bytes,
    pub(crate) index: SegmentIndex,
    /// The block table, if the file is compressed.
    pub(crate) compressed: Option<crate::maintenance::compression::Compressed>,
}

impl SealedSegment {
    /// A sealed segment over its file's bytes and its index; reads the block
    /// table if the header says the file is compressed.
    pub(crate) fn new(
        path: PathBuf,
        bytes: Bytes,
        index: SegmentIndex,
        dict: Option<&Arc<crate::maintenance::compression::Dictionary>>,
    ) -> Result<Self> {
        let header = crate::format::segment::SegmentHeader::decode(&bytes, &path)?;
        let compressed = if header.compressed {
            Some(crate::maintenance::compression::Compressed::open(
                bytes.clone(),
                &path,
                dict,
            )?)
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
    /// a frame starting at `offset` is always whole).
    pub(crate) fn range(&self, offset: u64, end: u64) -> Result<Bytes> {
        match &self.compressed {
            Some(c) => c.range(offset, end, &self.path),
            None => {
                if end > self.bytes.len() as u64 || offset > end {
                    return Err(Error::corruption(
                        &self.path,
                        offset,
                        "frame past the end of the segment",
                    ));
                }
                Ok(self.bytes.slice(offset as usize..end as usize))
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
}
