//! The leader's batch: staging each accepted request into the current group,
//! writing groups to the active segment (past preallocated zeros when that is
//! cheaper), syncing per the durability option, and closing cleanly.
//!
//! This module owns the [`Writer`]'s state; it must never answer an appender
//! (the queue protocol in the parent module does, after publication).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::format::checkpoint::{ACTIVE_INDEX_FILE, DURABLE_FILE, DurableMark, encode_active_index};
use crate::format::index::Lookup;
use crate::format::segment::{SEGMENT_HEADER, SEGMENT_VERSION_SEALED, SegmentHeader};
use crate::log::segments::ActiveSegment;
use crate::log::state::Shared;
use crate::options::Durability;
use crate::storage::write_atomically;

use super::pipeline::{Group, Pipeline, Results, Written, finish, sync_active};
use super::request::AppendRequest;

/// The active segment is extended with written zeros this much at a time.
pub(super) const PREALLOC_CHUNK: u64 = 4 << 20;

/// Groups at least this large are written past the preallocated zeros, not into them.
pub(super) const PREALLOC_MAX_GROUP: usize = 64 << 10;

/// Largest group buffer before the leader writes it and goes on with the rest of its batch.
pub(super) const MAX_GROUP_BYTES: usize = 16 << 20;

/// Largest group buffer kept for the next group once its group is published
/// (a larger one, left by a rare large batch, is given back).
pub(super) const KEPT_GROUP_BYTES: usize = 4 << 20;

/// Most events a kept group's tables are sized for (a group of more gives them back).
pub(super) const KEPT_GROUP_EVENTS: usize = 16 << 10;

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) active: Arc<ActiveSegment>,
    /// End of the bytes written to the active segment.
    pub(super) write_offset: u64,
    /// End of the zeros written ahead of `write_offset` (the file's length).
    pub(super) allocated_end: u64,
    /// CRC of the active segment's bytes after its header.
    pub(super) content_crc: crc32fast::Hasher,
    /// Next position to assign.
    pub(super) next_position: u64,
    pub(super) last_timestamp: i64,
    /// Bytes written but not yet synced.
    pub(super) dirty: bool,
    pub(super) last_sync: Instant,
    /// Sequence number of the last group written.
    pub(super) seq: u64,
    /// Groups written and perhaps not yet published, oldest first.
    pub(super) unpublished: Vec<Arc<Written>>,
    pub(super) group: Group,
    /// The active segment is sealed on disk but the next one is not started yet
    /// (a step after the seal failed); the next append finishes the rotation.
    pub(super) sealed_pending: bool,
    /// The active segment's header says version 3 (it may hold sealed events).
    pub(super) active_v3: bool,
}

impl Writer {
    pub(super) fn new(shared: Arc<Shared>, pipeline: Arc<Pipeline>) -> Result<Self> {
        let active = shared.segments.active().ok_or_else(|| Error::ReadOnly {
            reason: "the log has no segment to append to".into(),
        })?;
        let (write_offset, content_crc, last_timestamp) = {
            let idx = active.index.read();
            let end = idx.end_offset();
            let h = match &active.content_crc {
                // Recovery's scan already hashed these bytes.
                Some((covered, h)) if *covered == end => h.clone(),
                _ => {
                    let len = usize::try_from(end - SEGMENT_HEADER as u64)
                        .map_err(|_| Error::corruption(&active.path, end, "active segment larger than memory"))?;
                    let mut body = vec![0u8; len];
                    active
                        .file
                        .read_exact_at(&mut body, SEGMENT_HEADER as u64)
                        .ctx(|| format!("reading {}", active.path.display()))?;
                    let mut h = crc32fast::Hasher::new();
                    h.update(&body);
                    h
                }
            };
            let last_ts = idx.time_range().map_or(i64::MIN, |(_, max)| max);
            (end, h, last_ts)
        };
        let allocated_end = active
            .file
            .len()
            .ctx(|| format!("reading {}", active.path.display()))?
            .max(write_offset);
        // What recovery found may still sit in the page cache (after a process
        // crash); sync it, so that every byte before `write_offset` is durable.
        active
            .file
            .sync_data()
            .ctx(|| format!("syncing {}", active.path.display()))?;
        pipeline.synced.store(write_offset, Ordering::Release);
        pipeline.written.store(write_offset, Ordering::Release);
        let mut header = [0u8; SEGMENT_HEADER];
        active
            .file
            .read_exact_at(&mut header, 0)
            .ctx(|| format!("reading {}", active.path.display()))?;
        let active_v3 = SegmentHeader::decode(&header, &active.path)?.version >= SEGMENT_VERSION_SEALED;
        // The newest sealed segment's last timestamp bounds ours from below too.
        let sealed_ts = shared
            .segments
            .sealed()
            .last()
            .and_then(|s| s.index.time_range())
            .map_or(i64::MIN, |(_, max)| max);
        Ok(Writer {
            next_position: shared.published(),
            shared,
            pipeline,
            active,
            write_offset,
            allocated_end,
            content_crc,
            last_timestamp: last_timestamp.max(sealed_ts),
            dirty: false,
            last_sync: Instant::now(),
            seq: 0,
            unpublished: Vec::new(),
            group: Group::default(),
            sealed_pending: false,
            active_v3,
        })
    }

    /// Checks and stages a batch, writing full groups on the way; returns the
    /// last group, written and waiting for [`finish`], if there is one.
    pub(super) fn process(
        &mut self,
        requests: &[Option<AppendRequest>],
        results: &mut Results,
    ) -> Option<Arc<Written>> {
        let published = self.pipeline.state.lock().published;
        // A published group nobody holds any more lends its memory to the next
        // one: a new buffer would grow by doubling and fault in every page again.
        let done: Vec<Arc<Written>> = self.unpublished.extract_if(.., |w| w.seq <= published).collect();
        for w in done {
            if let Ok(w) = Arc::try_unwrap(w) {
                self.recycle(w.group);
            }
        }
        for (i, req) in requests.iter().enumerate() {
            let Some(req) = req else { continue };
            if let Some(e) = self.shared.poisoned() {
                results[i] = Some(Err(e));
                continue;
            }
            match self.stage(req, results) {
                Ok(result) => self.group.replies.push((i, result)),
                Err(e) => results[i] = Some(Err(e)),
            }
            if self.group.buf.len() >= MAX_GROUP_BYTES {
                self.flush(results);
            }
        }
        self.write(results)
    }

    /// Writes the staged group and waits for it to be published.
    pub(super) fn flush(&mut self, results: &mut Results) {
        if let Some(w) = self.write(results) {
            finish(&self.shared, &self.pipeline, &w, results);
        }
    }

    /// Syncs if the interval has passed since the last sync and bytes are waiting.
    pub(super) fn sync_if_due(&mut self, interval: Duration) {
        if self.dirty && self.last_sync.elapsed() >= interval {
            // A failure is latched in the store (see `sync_active`): every later
            // append, the close and `Store::write_failure` report it.
            self.sync_now().ok();
        }
    }

    /// Syncs what was written and not synced. A failure is latched (see
    /// [`sync_active`]): every later append and the close report it.
    pub(super) fn sync_now(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        sync_active(&self.shared, &self.pipeline, &self.active, self.write_offset)
    }

    pub(super) fn close(&mut self) -> Result<()> {
        self.pipeline.drain();
        self.sync_now()?;
        if let Some(e) = self.shared.poisoned() {
            return Err(e);
        }
        self.trim_preallocation()?;
        self.record_durable_end()
    }

    /// Drops the zeros written ahead of the data, so that a closed store takes
    /// only the space its events need and its segment ends where its data does.
    pub(super) fn trim_preallocation(&mut self) -> Result<()> {
        if self.sealed_pending || self.allocated_end <= self.write_offset {
            return Ok(());
        }
        let file = &self.active.file;
        file.set_len(self.write_offset)
            .and_then(|()| file.sync_data())
            .ctx(|| format!("trimming {}", self.active.path.display()))?;
        self.allocated_end = self.write_offset;
        Ok(())
    }

    /// Writes `durable.chk`: every byte written to the active segment is durable
    /// now (the caller has synced), so a later open must treat damage or missing
    /// bytes before `write_offset` as corruption, never as a torn tail.
    pub(super) fn record_durable_end(&mut self) -> Result<()> {
        if self.sealed_pending {
            // The seal vouches for the whole segment; reopening starts the next one.
            return Ok(());
        }
        let mark = DurableMark {
            segment_base: self.active.index.read().base(),
            durable_end: self.write_offset,
            next_position: self.next_position,
            content_crc: self.content_crc.clone().finalize(),
        };
        let mut last = self.shared.durable_mark.lock();
        let unchanged = *last == Some(mark);
        let streams_v1 = self.shared.streams_v1.load(Ordering::Acquire);
        if unchanged && self.shared.active_index_saved.load(Ordering::Acquire) && !streams_v1 {
            return Ok(());
        }
        if unchanged {
            // Nothing appended since open: `streams.chk` is rewritten only to
            // bring a good version-1 file to version 2 (searched in place at
            // the next open); a damaged one stays for verify and repair.
            if streams_v1 {
                let _ = self.write_stream_checkpoint();
            }
            self.save_active_index(&mark);
            return Ok(());
        }
        // The stream states as of this close, first: whatever later damages the
        // segment's tail, repair still knows each stream's last revision.
        self.write_stream_checkpoint()?;
        write_atomically(&*self.shared.storage, &self.shared.dir, DURABLE_FILE, &mark.encode())
            .ctx(|| format!("writing {DURABLE_FILE}"))?;
        *last = Some(mark);
        // Last: derived data, never worth a file the close needs (on a nearly
        // full disk, a half-written one would take the room `durable.chk`
        // needs). A crash before it leaves the older file, whose mark no
        // longer matches `durable.chk`: open then scans.
        self.save_active_index(&mark);
        Ok(())
    }

    /// Writes the active segment's index as of this close (`mark`), so that
    /// the next open need not scan the segment to rebuild it (also when
    /// nothing was appended since an open that scanned it, as after a close
    /// by an annal that did not write the file). Derived data, checked
    /// against `durable.chk` at open: a failure here costs only that scan,
    /// and fails no close.
    fn save_active_index(&self, mark: &DurableMark) {
        let saved = encode_active_index(mark, &self.active.index.read())
            .and_then(|bytes| {
                write_atomically(&*self.shared.storage, &self.shared.dir, ACTIVE_INDEX_FILE, &bytes)
                    .ctx(|| format!("writing {ACTIVE_INDEX_FILE}"))
            })
            .is_ok();
        self.shared.active_index_saved.store(saved, Ordering::Release);
    }

    pub(super) fn fail(&self, reason: String) {
        self.shared.poison(reason);
    }

    /// Makes sure the file holds written zeros up to at least `end`, extending
    /// it a chunk at a time. Overwriting written zeros lets `fdatasync` skip the
    /// file-size and extent updates that growing a file costs on every sync
    /// (about 1.6x more syncs a second on ext4 here). The sync after the group
    /// write makes the zeros durable too.
    pub(super) fn preallocate(&mut self, end: u64) -> std::io::Result<()> {
        if end <= self.allocated_end {
            return Ok(());
        }
        let chunk = PREALLOC_CHUNK.min(self.shared.options.segment_size);
        let target = end.div_ceil(chunk) * chunk;
        let zeros =
            vec![0u8; usize::try_from((target - self.allocated_end).min(chunk)).map_err(std::io::Error::other)?];
        while self.allocated_end < target {
            // What is left, at most `zeros.len()` (a remainder past usize::MAX is more than that).
            let n = zeros
                .len()
                .min(usize::try_from(target - self.allocated_end).unwrap_or(usize::MAX));
            self.active.file.write_all_at(&zeros[..n], self.allocated_end)?;
            self.allocated_end += n as u64;
        }
        Ok(())
    }

    /// Writes the staged group (without syncing it) and enters it in the
    /// pipeline; `None` if there is nothing to wait for. A failed write is cut
    /// back off the file and its appends answered with the error at once.
    pub(super) fn write(&mut self, results: &mut Results) -> Option<Arc<Written>> {
        let mut group = std::mem::take(&mut self.group);
        if group.replies.is_empty() {
            self.recycle(group);
            return None;
        }
        let first_position = self.next_position - group.frames.len() as u64;
        let offset = self.write_offset;
        let mut sync = false;
        if !group.buf.is_empty() {
            if let Err(e) = self.write_bytes(&group.buf) {
                // Nothing of the group was published; forget its positions.
                self.next_position = first_position;
                for (i, _) in group.replies.drain(..) {
                    results[i] = Some(Err(e.for_another_caller()));
                }
                self.recycle(group);
                return None;
            }
            self.content_crc.update(&group.buf);
            self.write_offset += group.buf.len() as u64;
            self.pipeline.written.store(self.write_offset, Ordering::Release);
            sync = match self.shared.options.durability {
                Durability::Always => true,
                Durability::Interval(d) => self.last_sync.elapsed() >= d,
                Durability::Never => false,
            };
            if sync {
                self.dirty = false;
                self.last_sync = Instant::now();
            } else {
                self.dirty = true;
            }
        }
        self.seq += 1;
        self.pipeline.state.lock().unpublished += 1;
        let written = Arc::new(Written {
            seq: self.seq,
            group,
            offset,
            first_position,
            active: self.active.clone(),
            sync,
        });
        self.unpublished.push(written.clone());
        Some(written)
    }

    /// Keeps a finished group's memory (its buffer up to [`KEPT_GROUP_BYTES`],
    /// its vectors and maps) for the next group, if nothing is staged yet.
    pub(super) fn recycle(&mut self, mut group: Group) {
        if !self.group.frames.is_empty() || !self.group.replies.is_empty() {
            return;
        }
        if group.buf.capacity() > KEPT_GROUP_BYTES {
            group.buf = Vec::new();
        }
        // The same for the per-event tables of a group of very many small
        // events: kept, they would hold megabytes for the store's life, and
        // clearing a map costs in proportion to its capacity.
        if group.frames.capacity() > KEPT_GROUP_EVENTS {
            group.frames = Vec::new();
            group.replies = Vec::new();
            group.streams = Default::default();
            group.ids = Default::default();
        }
        group.buf.clear();
        group.frames.clear();
        group.replies.clear();
        group.streams.clear();
        group.ids.clear();
        self.group = group;
    }

    /// Rewrites the header of the active segment, which must hold no frame
    /// yet, with version 3 and syncs it, before the first sealed event is
    /// written to it, so that an annal that does not know sealed events
    /// refuses the segment instead of reporting its frames as damage. A crash
    /// that tears the header leaves a last segment with a bad header and no
    /// frame, which recovery removes and creates again (format.md, Recovery,
    /// step 4); one after it leaves a version-3 segment with no sealed event,
    /// which is valid. (A segment holding frames is never rewritten in place:
    /// the writer rotates instead.)
    pub(super) fn mark_sealed_segment(&mut self) -> Result<()> {
        let path = self.active.path.clone();
        let file = self.active.file.clone();
        let mut header = [0u8; SEGMENT_HEADER];
        file.read_exact_at(&mut header, 0)
            .ctx(|| format!("reading {}", path.display()))?;
        crate::format::segment::set_version(&mut header, SEGMENT_VERSION_SEALED);
        file.write_all_at(&header, 0)
            .and_then(|()| file.sync_data())
            .ctx(|| format!("marking {} as holding sealed events", path.display()))?;
        self.active_v3 = true;
        Ok(())
    }

    /// Writes bytes at the end of the active segment; on failure, cuts the file back.
    pub(super) fn write_bytes(&mut self, buf: &[u8]) -> Result<()> {
        let file = self.active.file.clone();
        let path = self.active.path.clone();
        let end = self.write_offset + buf.len() as u64;
        // Keep the reserve: refuse before the disk is full, not when a write tears.
        let reserve = self.shared.options.disk_reserve;
        if reserve > 0 {
            let available = self
                .shared
                .storage
                .available_space(&self.shared.dir)
                .ctx(|| format!("checking free space for {}", self.shared.dir.display()))?;
            let growth = end.saturating_sub(self.allocated_end) + PREALLOC_CHUNK.min(self.shared.options.segment_size);
            if available < reserve.saturating_add(growth) {
                return Err(Error::DiskFull {
                    context: format!(
                        "appending to {}: {available} bytes free, and {reserve} are kept in reserve for scavenging (disk_reserve)",
                        path.display()
                    ),
                });
            }
        }
        // Preallocation pays off for small synced groups, whose sync it speeds up;
        // a large group would pay a second copy of its size in zeros.
        let prealloc = buf.len() < PREALLOC_MAX_GROUP && self.shared.options.durability != Durability::Never;
        let written = if prealloc { self.preallocate(end) } else { Ok(()) }
            .and_then(|()| file.write_all_at(buf, self.write_offset));
        self.allocated_end = self.allocated_end.max(end);
        if let Err(e) = written {
            // Cut back whatever part landed, so the failed group leaves no trace.
            if let Err(t) = file.set_len(self.write_offset) {
                self.fail(format!("cannot cut back a failed write in {}: {t}", path.display()));
            }
            self.allocated_end = self.write_offset;
            return Err(Error::io(format!("writing {}", path.display()), e));
        }
        Ok(())
    }
}
