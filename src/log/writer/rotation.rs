//! Rotation: sealing the full active segment (seal frame, sync, trim) and
//! starting the next one (its index file, the stream checkpoint, the new
//! segment), each step retried by the next append if it fails.
//!
//! This module must never seal a segment whose appends are not all durable.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, IoContext, Result};
use crate::format::checkpoint::{STREAMS_FILE, StreamsCheckpoint};
use crate::format::index::Lookup;
use crate::format::record::{self, SealView};
use crate::format::segment::{SEGMENT_HEADER, segment_file_name};
use crate::log::segments::{ActiveSegment, SealedSegment};
use crate::storage::write_atomically;

use super::batch::Writer;

impl Writer {
    /// Seals the active segment now if it holds any position (or finishes a
    /// rotation that failed after its seal), so that the segment can be
    /// compressed; the next append goes to a new segment. With `base`, only
    /// if the active segment is still the one starting there. Returns
    /// whether a segment was sealed. Errors as [`Writer::rotate`].
    pub(super) fn seal_active(&mut self, base: Option<u64>) -> Result<bool> {
        // Groups written but not yet published are not in the index yet.
        self.pipeline.drain();
        if let Some(e) = self.shared.poisoned() {
            return Err(e);
        }
        let index = self.active.index.read();
        let (empty, other) = (index.is_empty(), base.is_some_and(|b| b != index.base()));
        drop(index);
        if other || (!self.sealed_pending && empty) {
            return Ok(false);
        }
        self.rotate()?;
        Ok(true)
    }

    /// Seals the active segment and starts the next one. A failure before the
    /// seal is durable cuts the seal back off and leaves the segment active; a
    /// failed sync stops the writer for good; a failure after the seal (writing
    /// the index or the checkpoint, creating the next segment: a full disk, no
    /// file descriptors left) fails only the append that needed the rotation,
    /// and the next append tries again. Reopening finishes or undoes a rotation
    /// that a crash interrupted.
    pub(super) fn rotate(&mut self) -> Result<()> {
        if !self.sealed_pending {
            self.seal()?;
            self.sealed_pending = true;
        }
        self.start_next()?;
        self.sealed_pending = false;
        Ok(())
    }

    /// Writes and syncs the seal frame after the last event (dropping the zeros past it).
    pub(super) fn seal(&mut self) -> Result<()> {
        // Everything written must be published (and so in the index) before sealing.
        self.pipeline.drain();
        self.unpublished.clear();
        if let Some(e) = self.shared.poisoned() {
            return Err(e);
        }
        let count = self.active.index.read().len() as u64;
        let mut seal = Vec::new();
        record::encode_seal(
            &mut seal,
            &SealView {
                next_position: self.next_position,
                event_count: count,
                content_crc: self.content_crc.clone().finalize(),
            },
        );
        let path = self.active.path.clone();
        let file = self.active.file.clone();
        let end = self.write_offset + seal.len() as u64;
        if let Err(e) = file
            .write_all_at(&seal, self.write_offset)
            .and_then(|()| file.set_len(end))
        {
            // Nothing acknowledged was touched: cut the seal back off and stay active.
            if let Err(t) = file.set_len(self.write_offset) {
                self.fail(format!("cannot cut back a failed seal in {}: {t}", path.display()));
            }
            self.allocated_end = self.write_offset;
            return Err(Error::io(format!("sealing {}", path.display()), e));
        }
        self.allocated_end = end;
        self.dirty = false;
        if let Err(e) = file.sync_data() {
            return Err(self
                .shared
                .poison(format!("sync of {} failed while sealing it: {e}", path.display())));
        }
        Ok(())
    }

    /// Writes `streams.chk`: every stream's state up to the next position. Called
    /// once the bytes it covers are durable (after a seal, and at a clean close).
    pub(super) fn write_stream_checkpoint(&self) -> Result<()> {
        let checkpoint = StreamsCheckpoint {
            covered_position: self.next_position,
            streams: self.shared.streams.read().to_map(),
        };
        write_atomically(
            &*self.shared.storage,
            &self.shared.dir,
            STREAMS_FILE,
            &checkpoint.encode()?,
        )
        .ctx(|| format!("writing {STREAMS_FILE}"))?;
        // Version 2 now (see `Shared::streams_v1`).
        self.shared
            .streams_v1
            .store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// After the seal is durable: the sealed segment's index, the stream
    /// checkpoint, and the next segment, then the switch in memory. Each step
    /// can be retried.
    pub(super) fn start_next(&mut self) -> Result<()> {
        let shared = self.shared.clone();
        let storage = &*shared.storage;
        let dir = &shared.dir;
        let _path = self.active.path.clone();
        let base = self.active.index.read().base();
        let idx_name = crate::format::segment::index_file_name(base);
        let idx_bytes = self.active.index.read().encode_file()?;
        write_atomically(storage, dir, &idx_name, &idx_bytes).ctx(|| format!("writing {idx_name}"))?;
        let sealed = SealedSegment::open(storage, dir, base, None)?;

        self.write_stream_checkpoint()?;

        // A file left by an earlier attempt that failed while creating it holds no event.
        let next = dir.join(segment_file_name(self.next_position));
        if storage.exists(&next) {
            storage
                .remove(&next)
                .ctx(|| format!("removing the unfinished segment {}", next.display()))?;
        }
        let version = if shared.subjects.in_use() {
            crate::format::segment::SEGMENT_VERSION_SEALED
        } else {
            crate::format::segment::SEGMENT_VERSION
        };
        let active = Arc::new(ActiveSegment::create(
            storage,
            dir,
            self.next_position,
            shared.meta_fields.clone(),
            version,
        )?);
        shared.segments.rotate(sealed, active.clone());
        // The disk budget is looked at as the sealed data grows, not only
        // when a scavenge runs: under `stop-appends` the next append is refused.
        shared.check_budget(true);
        self.active = active;
        self.active_v3 = version == crate::format::segment::SEGMENT_VERSION_SEALED;
        self.write_offset = SEGMENT_HEADER as u64;
        self.allocated_end = SEGMENT_HEADER as u64;
        self.pipeline.synced.store(SEGMENT_HEADER as u64, Ordering::Release);
        self.pipeline.written.store(SEGMENT_HEADER as u64, Ordering::Release);
        self.content_crc = crc32fast::Hasher::new();
        Ok(())
    }
}
