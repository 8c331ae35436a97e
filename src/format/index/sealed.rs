//! The index of a sealed segment as a store uses it: its `.idx` file opened
//! from a memory map (magic, header checksum and version checked), the
//! version's decoder chosen, and [`Lookup`] answered through it.
//!
//! This module only reads the mapped file; it must never write one.

use std::path::Path;

use uuid::Uuid;

use super::header::{INDEX_HEADER, INDEX_MAGIC, INDEX_TAIL, INDEX_VERSION, edges};
use super::{Lookup, StreamSummary, TagKey, TagOwner, TypeCatalog, v1, v2};
use crate::error::{Error, Result};
use crate::format::codec::le_u32;
use crate::storage::Mapped;

/// The index of a sealed segment, read from its memory-mapped `.idx` file.
#[derive(Debug)]
pub enum SegmentIndex {
    /// A version-1 file (fixed-width tables).
    V1(v1::IndexV1),
    /// A version-2 file (compact).
    V2(v2::IndexV2),
}

impl SegmentIndex {
    /// Decodes and checks an index file of any version: its header checksum
    /// and every size (and a version-1 file's body checksum); the checksums
    /// and entries of a version-2 to -4 file are checked on first use of
    /// their section (see [`SegmentIndex::damage`]), or all at once by
    /// [`SegmentIndex::check_all`], so that open reads a constant part of
    /// the file.
    pub fn open(map: Mapped, file: &Path) -> Result<Self> {
        let b: &[u8] = (*map).as_ref();
        let (head, tail) = edges(b);
        let (head, tail) = (head.to_vec(), tail.to_vec());
        Self::open_with_edges(map, file, &head, &tail)
    }

    /// [`SegmentIndex::open`], with the file's first [`INDEX_HEADER`] bytes
    /// and last [`INDEX_TAIL`] bytes (fewer if it is shorter: see [`edges`])
    /// read by the caller, so that a version-2 to -4 file's open touches no
    /// page of the mapping (a touched page of a mapped file can make a whole
    /// large folio, up to 2 MiB, resident in this process).
    pub fn open_with_edges(map: Mapped, file: &Path, head: &[u8], tail: &[u8]) -> Result<Self> {
        let len = (*map).as_ref().len();
        let bad = |offset: u64, reason: &str| Error::corruption(file, offset, reason);
        if len < INDEX_HEADER + 4 || head.len() != INDEX_HEADER || tail.len() != INDEX_TAIL.min(len) {
            return Err(bad(0, "index file truncated"));
        }
        let b = head;
        if &b[0..8] != INDEX_MAGIC {
            return Err(bad(0, "not an annal index (bad magic)"));
        }
        let crc = le_u32(b, 124);
        if crc32fast::hash(&b[..124]) != crc {
            return Err(bad(0, "index header checksum mismatch"));
        }
        match le_u32(b, 8) {
            1 => Ok(SegmentIndex::V1(v1::IndexV1::open(map, file)?)),
            v @ (2..=5) => Ok(SegmentIndex::V2(v2::IndexV2::open(map, file, v, head, tail)?)),
            found => Err(Error::UnsupportedVersion {
                file: file.to_path_buf(),
                found,
                supported: INDEX_VERSION,
            }),
        }
    }

    fn lookup(&self) -> &dyn Lookup {
        match self {
            SegmentIndex::V1(i) => i,
            SegmentIndex::V2(i) => i,
        }
    }

    /// Offset of the seal frame in the segment (just past the last event).
    pub fn end_offset(&self) -> u64 {
        match self {
            SegmentIndex::V1(i) => i.end_offset(),
            SegmentIndex::V2(i) => i.end_offset(),
        }
    }

    /// The bytes of the index file.
    pub fn raw(&self) -> &[u8] {
        match self {
            SegmentIndex::V1(i) => i.raw(),
            SegmentIndex::V2(i) => i.raw(),
        }
    }

    /// Damage found since open by the first-use check of a version-2
    /// section (the section answered nothing): a read that used this index
    /// reports it instead of its answer.
    pub fn damage(&self) -> Option<Error> {
        match self {
            SegmentIndex::V1(_) => None,
            SegmentIndex::V2(i) => i.damage(),
        }
    }

    /// Checks every checksum and entry now (what a version-2 open leaves to first use).
    pub fn check_all(&self) -> Result<()> {
        match self {
            SegmentIndex::V1(_) => Ok(()),
            SegmentIndex::V2(i) => i.check_all(),
        }
    }

    /// The file's format version.
    pub fn version(&self) -> u32 {
        match self {
            SegmentIndex::V1(_) => 1,
            SegmentIndex::V2(i) => i.version(),
        }
    }
}

impl Lookup for SegmentIndex {
    fn base(&self) -> u64 {
        self.lookup().base()
    }
    fn next_position(&self) -> u64 {
        self.lookup().next_position()
    }
    fn location(&self, position: u64) -> Option<(u64, u64)> {
        self.lookup().location(position)
    }
    fn locations(&self, positions: &[u64]) -> Vec<Option<(u64, u64)>> {
        self.lookup().locations(positions)
    }
    fn time_bounds(&self, position: u64) -> Option<(i64, i64)> {
        self.lookup().time_bounds(position)
    }
    fn time_range(&self) -> Option<(i64, i64)> {
        self.lookup().time_range()
    }
    fn stream_entries(&self, stream: &str, from: u64, forward: bool, limit: usize) -> Vec<(u64, u64)> {
        self.lookup().stream_entries(stream, from, forward, limit)
    }
    fn type_positions(&self, hash: u64) -> Vec<u64> {
        self.lookup().type_positions(hash)
    }
    fn type_count(&self, hash: u64) -> u64 {
        self.lookup().type_count(hash)
    }
    fn type_positions_in(&self, hash: u64, lo: u64, hi: u64) -> Vec<u64> {
        self.lookup().type_positions_in(hash, lo, hi)
    }
    fn type_catalog(&self) -> Option<TypeCatalog> {
        self.lookup().type_catalog()
    }
    fn tag_positions(&self, hash: u64) -> Vec<u64> {
        self.lookup().tag_positions(hash)
    }
    fn tag_owner(&self, key: &TagKey) -> TagOwner {
        self.lookup().tag_owner(key)
    }
    fn id_positions(&self, id: &Uuid) -> Vec<u64> {
        self.lookup().id_positions(id)
    }
    fn ids_exact(&self) -> bool {
        self.lookup().ids_exact()
    }
    fn may_contain_stream(&self, hash: u64) -> bool {
        self.lookup().may_contain_stream(hash)
    }
    fn streams(&self) -> Vec<(String, StreamSummary)> {
        self.lookup().streams()
    }
    fn meta_fingerprint(&self) -> u64 {
        self.lookup().meta_fingerprint()
    }
    fn meta_field_names(&self) -> Option<Vec<String>> {
        self.lookup().meta_field_names()
    }
    fn event_count(&self) -> Option<u64> {
        self.lookup().event_count()
    }
    fn empty_positions(&self) -> Option<u64> {
        self.lookup().empty_positions()
    }
}
