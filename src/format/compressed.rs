//! The compressed segment format: zstd blocks of whole frames and a block
//! table (see format.md, "Compressed segments"), and the dictionary file.
//!
//! A compressed segment keeps the segment header (with the compressed flag)
//! and stores the rest of the original file as zstd blocks of whole frames,
//! followed by a block table. Offsets everywhere else (indexes, positions)
//! stay those of the original, uncompressed file — its *logical* layout — so
//! an index is valid for both forms, and a random read decompresses one small
//! block. This module owns the block format; it must never decide when to
//! compress, nor touch a file (`maintenance::compression` does both).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use zstd::zstd_safe::{DCtx, DDict};

use crate::error::{Error, Result};
use crate::format::block_cache::BlockCache;
use crate::format::codec::{le_u32, le_u64};
use crate::format::record;
use crate::format::segment::SEGMENT_HEADER;

/// Magic bytes closing a compressed segment's trailer.
pub const TABLE_MAGIC: &[u8; 4] = b"AZTB";
/// Size of the trailer after the block table.
pub const TRAILER: usize = 32;
/// Size of one block table entry.
pub const BLOCK_ENTRY: usize = 24;

/// Smallest `block_size` [`crate::Options::validate`] accepts.
pub const MIN_BLOCK_SIZE: usize = 1024;
/// Largest `block_size` [`crate::Options::validate`] accepts. A block holds
/// frames up to `block_size` bytes, or one larger frame alone, so no block the
/// compressor writes exceeds [`MAX_BLOCK_LOGICAL`], the most a reader accepts.
pub const MAX_BLOCK_SIZE: usize = 4 << 20;
/// zstd levels [`crate::Options::validate`] accepts.
pub const LEVELS: std::ops::RangeInclusive<i32> = 1..=22;
/// Dictionary sizes [`crate::Options::validate`] accepts (at most the 8 MiB of samples it is trained from).
pub const DICTIONARY_SIZES: std::ops::RangeInclusive<usize> = 1024..=(8 << 20);

/// Largest uncompressed block a reader accepts: one maximal frame, or
/// `MAX_BLOCK_SIZE` bytes of frames.
pub const MAX_BLOCK_LOGICAL: usize =
    crate::format::record::MAX_BODY + crate::format::record::FRAME_HEADER + MAX_BLOCK_SIZE;
/// Name of the store's dictionary file.
pub const DICTIONARY_FILE: &str = "dictionary.zdict";
/// Magic bytes of the dictionary file.
pub const DICTIONARY_MAGIC: &[u8; 8] = b"ANNALDIC";

/// The byte that stands for the bytes of a block that does not decompress in
/// [`Compressed::logical_salvaged`]: a frame length made of it is over
/// [`record::MAX_BODY`], so no frame decodes there.
pub const UNREADABLE: u8 = 0xFF;

/// The store's zstd dictionary, if it has one.
#[derive(Default)]
pub struct Dictionary {
    /// Its id, recorded in the header of every segment compressed with it.
    pub id: u32,
    /// The zstd dictionary bytes.
    pub bytes: Vec<u8>,
}

impl Dictionary {
    /// Encodes the dictionary file: magic, version 1, id, length, CRC of the bytes, bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.bytes.len());
        out.extend_from_slice(DICTIONARY_MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&(self.bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&self.bytes).to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&self.bytes);
        out
    }

    /// Decodes and checks a dictionary file.
    pub fn decode(b: &[u8], path: &std::path::Path) -> Result<Self> {
        let bad = |why: &str| Error::corruption(path, 0, why.to_string());
        if b.len() < 32 || &b[..8] != DICTIONARY_MAGIC {
            return Err(bad("not an annal dictionary"));
        }
        let version = le_u32(b, 8);
        if version != 1 {
            return Err(Error::UnsupportedVersion {
                file: path.to_path_buf(),
                found: version,
                supported: 1,
            });
        }
        let len = le_u64(b, 16);
        if len != (b.len() - 32) as u64 || crc32fast::hash(&b[32..]) != le_u32(b, 24) {
            return Err(bad("dictionary length or checksum mismatch"));
        }
        Ok(Dictionary {
            id: le_u32(b, 12),
            bytes: b[32..].to_vec(),
        })
    }

    /// Trains a dictionary from sample frames.
    pub fn train(samples: &[&[u8]], size: usize) -> Result<Self> {
        let bytes = zstd::dict::from_samples(samples, size).map_err(|e| Error::io("training a zstd dictionary", e))?;
        let id = zstd::zstd_safe::get_dict_id(&bytes).map_or(0, |id| id.get());
        Ok(Dictionary { id, bytes })
    }
}

/// One block: where its frames sit in the logical layout and in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Logical offset of the block's first byte.
    pub logical_offset: u64,
    /// Offset of the compressed bytes in the file.
    pub file_offset: u64,
    /// Length of the compressed bytes.
    pub file_len: u32,
    /// Length once decompressed.
    pub logical_len: u32,
}

/// Compresses a sealed segment's bytes (header, frames, seal) into the
/// compressed form: zstd at `level`, blocks of about `block_size` bytes of
/// frames, with the store's dictionary if one is given.
pub fn compress_segment(raw: &[u8], level: i32, block_size: usize, dict: Option<&Dictionary>) -> Result<Vec<u8>> {
    // Never write a block a reader refuses (smaller blocks than Options accept are
    // allowed here, for tests and fuzzing corpora).
    if block_size > MAX_BLOCK_SIZE {
        return Err(Error::InvalidInput(format!(
            "compression block_size {} is over {MAX_BLOCK_SIZE} bytes",
            block_size
        )));
    }
    if raw.len() < SEGMENT_HEADER {
        return Err(Error::InvalidInput("segment shorter than its header".into()));
    }
    let mut out = raw[..SEGMENT_HEADER].to_vec();
    crate::format::segment::set_compressed_flag(&mut out, dict.map(|d| d.id));
    let mut compressor = match dict {
        Some(d) => zstd::bulk::Compressor::with_dictionary(level, &d.bytes),
        None => zstd::bulk::Compressor::new(level),
    }
    .map_err(|e| Error::io("preparing zstd", e))?;
    let mut blocks = Vec::new();
    let mut frames = record::frame_spans(raw, SEGMENT_HEADER).peekable();
    let mut at = SEGMENT_HEADER;
    while at < raw.len() {
        // Gather whole frames up to the block size (a larger frame alone).
        let start = at;
        while let Some(frame) = frames.next_if(|f| f.start == start || f.end - start <= block_size) {
            at = frame.end;
        }
        if at == start {
            return Err(Error::InvalidInput(format!(
                "no whole frame at byte {at} of a sealed segment"
            )));
        }
        if at - start > MAX_BLOCK_LOGICAL {
            return Err(Error::InvalidInput(format!(
                "a block of {} bytes at byte {start} would be larger than a reader accepts",
                at - start
            )));
        }
        let packed = compressor
            .compress(&raw[start..at])
            .map_err(|e| Error::io("compressing a segment block", e))?;
        // Both fit: the block is at most MAX_BLOCK_LOGICAL (checked above), and zstd's bound on it too.
        let too_large =
            |len: usize| Error::InvalidInput(format!("a block of {len} bytes at byte {start} is too large"));
        blocks.push(Block {
            logical_offset: start as u64,
            file_offset: out.len() as u64,
            file_len: u32::try_from(packed.len()).map_err(|_| too_large(packed.len()))?,
            logical_len: u32::try_from(at - start).map_err(|_| too_large(at - start))?,
        });
        out.extend_from_slice(&packed);
    }
    let table_offset = out.len() as u64;
    let table_start = out.len();
    for b in &blocks {
        out.extend_from_slice(&b.logical_offset.to_le_bytes());
        out.extend_from_slice(&b.file_offset.to_le_bytes());
        out.extend_from_slice(&b.file_len.to_le_bytes());
        out.extend_from_slice(&b.logical_len.to_le_bytes());
    }
    let crc = crc32fast::hash(&out[table_start..]);
    out.extend_from_slice(&table_offset.to_le_bytes());
    out.extend_from_slice(&(blocks.len() as u64).to_le_bytes());
    out.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(TABLE_MAGIC);
    Ok(out)
}

/// A compressed segment, read through its block table.
pub struct Compressed {
    /// Unique among the block tables opened by this process: the key of this
    /// file's blocks in a [`BlockCache`].
    id: u64,
    file: Bytes,
    /// The dictionary the blocks were compressed with, if any.
    dict: Option<Arc<Dictionary>>,
    /// That dictionary, prepared for decompression once (on first use).
    prepared: OnceLock<Option<DDict<'static>>>,
    blocks: Vec<Block>,
    logical_len: u64,
    /// The last block decompressed, for reads without a cache that walk a block event by event.
    last: Mutex<Option<(usize, Bytes)>>,
}

impl std::fmt::Debug for Compressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressed")
            .field("id", &self.id)
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

/// The id of the next block table opened.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's zstd decompression context, kept between blocks.
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// Decompresses one zstd frame of exactly `len` bytes into `out` (emptied
/// first), with this thread's context; `None` if it does not decompress or
/// has another length.
fn decompress_exact(packed: &[u8], len: usize, ddict: Option<&DDict<'static>>, mut out: Vec<u8>) -> Option<Vec<u8>> {
    out.clear();
    out.reserve(len);
    let run = |z: &mut DCtx<'static>, out: &mut Vec<u8>| match ddict {
        Some(d) => z.decompress_using_ddict(out, packed, d),
        None => z.decompress(out, packed),
    };
    let done = DCTX.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            if slot.is_none() {
                *slot = DCtx::try_create();
            }
            slot.as_mut().map(|z| run(z, &mut out))
        }
        // Never reentered; a fresh context if it were.
        Err(_) => DCtx::try_create().map(|mut z| run(&mut z, &mut out)),
    })?;
    (done.ok()? == len && out.len() == len).then_some(out)
}

impl Compressed {
    /// Reads and checks the block table of a compressed segment file; `dict` is
    /// the store's dictionary (needed if the header names one).
    pub fn open(file: Bytes, path: &std::path::Path, dict: Option<&Arc<Dictionary>>) -> Result<Self> {
        let header = crate::format::segment::SegmentHeader::decode(&file, path)?;
        Self::open_with_header(file, &header, path, dict)
    }

    /// [`Compressed::open`] with the file's header decoded by the caller
    /// (who may have read it without touching `file`'s mapped pages).
    pub fn open_with_header(
        file: Bytes,
        header: &crate::format::segment::SegmentHeader,
        path: &std::path::Path,
        dict: Option<&Arc<Dictionary>>,
    ) -> Result<Self> {
        let bad = |offset: usize, why: &str| Error::corruption(path, offset as u64, why.to_string());
        let dict = match header.dictionary {
            None => None,
            Some(id) => match dict {
                Some(d) if d.id == id => Some(d.clone()),
                _ => {
                    return Err(bad(
                        32,
                        &format!(
                            "compressed with dictionary {id}, which this store does not have \
                             ({DICTIONARY_FILE} is missing, unreadable or another one)"
                        ),
                    ));
                }
            },
        };
        let n = file.len();
        if n < SEGMENT_HEADER + TRAILER || file[n - 4..] != TABLE_MAGIC[..] {
            return Err(bad(n.saturating_sub(4), "compressed segment has no block table"));
        }
        let t = n - TRAILER;
        let table_offset = le_u64(&file, t);
        let count = le_u64(&file, t + 8);
        let logical_len = le_u64(&file, t + 16);
        let crc = le_u32(&file, t + 24);
        let table_len = (count as u128) * BLOCK_ENTRY as u128;
        if table_offset < SEGMENT_HEADER as u64 || table_offset as u128 + table_len != t as u128 {
            return Err(bad(t, "block table size does not match the file"));
        }
        // The table ends at `t`, inside the file, so its offset and count fit a usize.
        let (Ok(table_offset), Ok(count)) = (usize::try_from(table_offset), usize::try_from(count)) else {
            return Err(bad(t, "block table size does not match the file"));
        };
        if crc32fast::hash(&file[table_offset..t]) != crc {
            return Err(bad(table_offset, "block table checksum mismatch"));
        }
        let mut blocks = Vec::with_capacity(count);
        let mut logical = SEGMENT_HEADER as u64;
        let mut physical = SEGMENT_HEADER as u64;
        for i in 0..count {
            let at = table_offset + i * BLOCK_ENTRY;
            let b = Block {
                logical_offset: le_u64(&file, at),
                file_offset: le_u64(&file, at + 8),
                file_len: le_u32(&file, at + 16),
                logical_len: le_u32(&file, at + 20),
            };
            if b.logical_offset != logical
                || b.file_offset != physical
                || b.logical_len == 0
                || u64::from(b.logical_len) > MAX_BLOCK_LOGICAL as u64
            {
                return Err(bad(at, "block table entries out of order"));
            }
            logical += u64::from(b.logical_len);
            physical += u64::from(b.file_len);
            blocks.push(b);
        }
        if logical != logical_len || physical != table_offset as u64 {
            return Err(bad(table_offset, "blocks do not cover the segment"));
        }
        Ok(Compressed {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            file,
            dict,
            prepared: OnceLock::new(),
            blocks,
            logical_len,
            last: Mutex::new(None),
        })
    }

    /// Length of the uncompressed segment.
    pub fn logical_len(&self) -> u64 {
        self.logical_len
    }

    /// The key of this file's blocks in a [`BlockCache`] (unique in the process).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Decompresses block `i` into `buffer` (or a new one), without looking in
    /// any cache. A block that does not decompress to the length its table
    /// entry gives is damage, at its offset in the file.
    fn decompress_block(&self, i: usize, path: &std::path::Path, buffer: Option<Vec<u8>>) -> Result<Bytes> {
        let b = self
            .blocks
            .get(i)
            .ok_or_else(|| Error::corruption(path, 0, "block number outside the block table"))?;
        // `open` checked that every block lies inside the file; `get` keeps a bad range an error.
        let packed = usize::try_from(b.file_offset)
            .ok()
            .zip(usize::try_from(b.file_offset + u64::from(b.file_len)).ok())
            .and_then(|(start, end)| self.file.get(start..end))
            .ok_or_else(|| Error::corruption(path, b.file_offset, "compressed block outside the file"))?;
        let damaged = || Error::corruption(path, b.file_offset, "compressed block does not decompress");
        let ddict = match &self.dict {
            Some(d) => Some(
                self.prepared
                    .get_or_init(|| DDict::try_create(&d.bytes))
                    .as_ref()
                    .ok_or_else(damaged)?,
            ),
            None => None,
        };
        let len = b.logical_len as usize;
        let out = buffer.unwrap_or_else(|| Vec::with_capacity(len));
        let data = decompress_exact(packed, len, ddict, out).ok_or_else(damaged)?;
        Ok(Bytes::from(data))
    }

    /// Block `i` decompressed: from `cache` if it holds it, else decompressed
    /// (with no lock held) and kept there. Without a cache (or with an empty
    /// budget), the last block read is kept for the next read of this file.
    fn decompress(&self, i: usize, path: &std::path::Path, cache: Option<&BlockCache>) -> Result<Bytes> {
        let key = (self.id, i);
        match cache.filter(|c| c.capacity() > 0) {
            Some(cache) => {
                if let Some(b) = cache.get(key) {
                    return Ok(b);
                }
                let len = self.blocks.get(i).map_or(0, |b| b.logical_len as usize);
                let data = self.decompress_block(i, path, Some(cache.buffer(len)))?;
                cache.insert(key, data.clone());
                Ok(data)
            }
            None => {
                if let Some((j, b)) = &*self.last.lock()
                    && *j == i
                {
                    return Ok(b.clone());
                }
                let data = self.decompress_block(i, path, None)?;
                *self.last.lock() = Some((i, data.clone()));
                Ok(data)
            }
        }
    }

    /// The logical bytes `[offset, end)`, cut at the end of the block holding
    /// `offset` (frames never straddle blocks, so a frame starting at `offset`
    /// is whole). Decompressed blocks are kept in `cache`, if given.
    pub fn range(&self, offset: u64, end: u64, path: &std::path::Path, cache: Option<&BlockCache>) -> Result<Bytes> {
        let i = self
            .blocks
            .partition_point(|b| b.logical_offset <= offset)
            .checked_sub(1)
            .filter(|i| offset < self.blocks[*i].logical_offset + u64::from(self.blocks[*i].logical_len))
            .ok_or_else(|| Error::corruption(path, offset, "offset outside the compressed blocks"))?;
        let block = self.decompress(i, path, cache)?;
        // Both are at most the block's length (a u32), compared in u64 before converting.
        let first = self.blocks[i].logical_offset;
        let len = block.len() as u64;
        let (Ok(start), Ok(stop)) = (
            usize::try_from((offset - first).min(len)),
            usize::try_from(end.saturating_sub(first).min(len)),
        ) else {
            return Err(Error::corruption(path, offset, "offset outside the compressed blocks"));
        };
        Ok(block.slice(start..stop.max(start)))
    }

    /// The whole uncompressed segment, block by block: a block that does not
    /// decompress stands as [`UNREADABLE`] bytes of its logical length (bytes
    /// no frame decodes from, and not zeros, which would end a frame scan), so
    /// every other block keeps its offsets. Returns the bytes and, for each
    /// damaged block, its error and logical range.
    pub fn logical_salvaged(&self, path: &std::path::Path) -> (Vec<u8>, Vec<(Error, std::ops::Range<usize>)>) {
        let mut out = self.file[..SEGMENT_HEADER].to_vec();
        crate::format::segment::clear_compressed_flag(&mut out);
        let mut damaged = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let start = out.len();
            match self.decompress_block(i, path, None) {
                Ok(data) => out.extend_from_slice(&data),
                Err(e) => {
                    out.resize(start + b.logical_len as usize, UNREADABLE);
                    damaged.push((e, start..out.len()));
                }
            }
        }
        (out, damaged)
    }

    /// The whole uncompressed segment.
    pub fn logical(&self, path: &std::path::Path) -> Result<Vec<u8>> {
        let mut out = self.file[..SEGMENT_HEADER].to_vec();
        crate::format::segment::clear_compressed_flag(&mut out);
        for i in 0..self.blocks.len() {
            out.extend_from_slice(&self.decompress_block(i, path, None)?);
        }
        Ok(out)
    }
}
