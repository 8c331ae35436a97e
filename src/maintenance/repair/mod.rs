//! Repair of a closed, damaged data directory.
//!
//! Repair rebuilds what is derived (indexes, the stream checkpoint, headers
//! whose file name says what they held), cuts torn tails, seals segments that
//! should have been sealed, and replaces damaged ranges of the log by lost
//! frames so that positions stay contiguous; a damaged drop record
//! (`dropped.rec`) is written again with what still decodes and an entry
//! saying the rest was lost. It never deletes a byte: every
//! original file it rewrites and every range it drops is first copied into
//! `quarantine/<time>/`, and every action is reported. It must never run on a
//! store that is open (it takes the directory's lock).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::event::now_micros;
use crate::format::checkpoint::{DURABLE_FILE, DurableMark, META_FILE, STREAMS_FILE, StoreMeta, StreamsCheckpoint};
use crate::format::dropped::{self, DROPPED_FILE, DroppedRange};
use crate::format::index::SegmentIndex;
use crate::format::record::{self, Frame, LostView, SealView};
use crate::format::segment::{self, SEGMENT_HEADER, SegmentHeader, segment_file_name};
use crate::log::recovery::LOCK_FILE;
use crate::log::scan::index_segment;
use crate::storage::{FsStorage, Storage, write_atomically};

mod rebuild;

pub use crate::log::damage::QUARANTINE_DIR;

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// Each action taken, with the file and byte offset concerned.
    pub actions: Vec<String>,
    /// Positions whose events could not be read and are now recorded as lost.
    pub lost_positions: u64,
    /// Of `lost_positions`, those that no surviving file (the stream
    /// checkpoint, a segment's index) describes: the streams their events
    /// belonged to are unknown, so a stream whose last event was among them may
    /// hand out that event's revision again. For the others, each stream's last
    /// revision is recorded in the lost frame (its "head") and never reused.
    pub lost_unattributed: u64,
    /// Bytes copied into the quarantine folder.
    pub quarantined_bytes: u64,
    /// The quarantine folder of this run, if anything was moved there.
    pub quarantine: Option<PathBuf>,
    /// What repair found wrong but could not fix, with the file and byte
    /// offset concerned; `verify` will still report these.
    pub unfixed: Vec<String>,
}

impl RepairReport {
    /// True when the store needed nothing.
    pub fn is_clean(&self) -> bool {
        self.actions.is_empty() && self.unfixed.is_empty()
    }
}

/// Repairs the store in `dir` on the real file system; see [`repair_with`].
pub fn repair(dir: impl AsRef<Path>) -> Result<RepairReport> {
    repair_with(Arc::new(FsStorage), dir.as_ref())
}

/// Repairs the closed store in `dir`. After it, the store opens and verifies
/// clean, except for the positions reported lost, unless the report lists
/// something `unfixed` in the log (segments compressed with a dictionary the
/// store no longer has readable): the store then opens only read only or
/// degraded ([`crate::Store::open_or_degraded`]), stepping over those segments,
/// until the file is restored.
pub fn repair_with(storage: Arc<dyn Storage>, dir: &Path) -> Result<RepairReport> {
    let st = &*storage;
    let _lock = st.lock(&dir.join(LOCK_FILE)).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => Error::Locked {
            path: dir.to_path_buf(),
        },
        _ => Error::io(format!("locking {}", dir.display()), e),
    })?;
    let durable = dir.join(DURABLE_FILE);
    let claim = match st.exists(&durable) {
        true => st
            .map(&durable)
            .ok()
            .and_then(|b| DurableMark::decode((*b).as_ref(), &durable).ok()),
        false => None,
    };
    let mut r = Repairer {
        st,
        dir,
        report: RepairReport::default(),
        stamp: now_micros(),
        claim,
        checkpoint: None,
        revisions: Default::default(),
        lost: 0,
        dictionary: None,
        dictionary_error: None,
        dictionary_needed: 0,
        incomplete: false,
        heads: BTreeMap::new(),
        described: Vec::new(),
        frame_starts: Vec::new(),
        unreadable: Vec::new(),
    };
    r.identity()?;
    r.subject_keys()?;
    r.read_checkpoint()?;
    r.read_heads()?;
    r.read_dictionary();
    let end = r.segments()?;
    r.derived(end)?;
    r.drop_record(end)?;
    Ok(r.report)
}

struct Repairer<'a> {
    st: &'a dyn Storage,
    dir: &'a Path,
    report: RepairReport,
    stamp: i64,
    /// What the last clean close recorded as durable (`durable.chk`), if readable:
    /// nothing before its end is a torn tail, and no position before its
    /// `next_position` may be handed out again.
    claim: Option<DurableMark>,
    /// The stream checkpoint as found, and why it must go (if it must).
    checkpoint: Option<(Vec<u8>, Option<String>)>,
    /// Each stream's next revision in the repaired log so far.
    revisions: HashMap<String, u64>,
    /// Positions lost or removed in the repaired log so far.
    lost: u64,
    /// The store's compression dictionary, if it has a readable one.
    dictionary: Option<Arc<crate::format::compressed::Dictionary>>,
    /// Why `dictionary.zdict` could not be read, if it could not.
    dictionary_error: Option<String>,
    /// Segments compressed with a dictionary the store does not have (readable).
    dictionary_needed: usize,
    /// True once a segment was left as it was, unread: the stream states of the
    /// log after it are unknown.
    incomplete: bool,
    /// Each stream's last event as the files found before repair describe it
    /// (by position: stream, revision), to be recorded in a lost frame that
    /// takes its position.
    heads: BTreeMap<u64, (String, u64)>,
    /// Ranges of positions `[from, to)` whose streams' heads `heads` knows.
    described: Vec<(u64, u64)>,
    /// Where the events of the segment being repaired start, as its index
    /// (checked whole) names them, in order; empty without such an index.
    frame_starts: Vec<usize>,
    /// The logical ranges of the compressed blocks of the segment being
    /// repaired that do not decompress: bytes that were never read, so never
    /// copied to quarantine as they stand (the original file is).
    unreadable: Vec<std::ops::Range<usize>>,
}

/// A segment's new body as repair rebuilt it.
struct Rebuilt {
    bytes: Vec<u8>,
    next: u64,
    changed: bool,
    sealed: bool,
}

impl Repairer<'_> {
    fn act(&mut self, what: String) {
        self.report.actions.push(what);
    }

    /// Copies bytes into this run's quarantine folder under `name`.
    fn quarantine(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let q = self.dir.join(QUARANTINE_DIR).join(self.stamp.to_string());
        self.st.create_dir_all(&q).ctx(|| format!("creating {}", q.display()))?;
        write_atomically(self.st, &q, name, bytes).ctx(|| format!("quarantining {name}"))?;
        self.report.quarantined_bytes += bytes.len() as u64;
        self.report.quarantine = Some(q);
        Ok(())
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let f = self
            .st
            .open(path, false)
            .ctx(|| format!("opening {}", path.display()))?;
        crate::storage::read_whole(&*f).ctx(|| format!("reading {}", path.display()))
    }

    /// Rewrites `subjects.key` without its damaged records (full length,
    /// bad checksum) and its torn last record, the original file kept in
    /// quarantine. The keys those records held are lost: the events sealed
    /// under them stay unreadable (`verify` still reports them). A header
    /// that does not decode is mended when its lookup secret is vouched for
    /// by its checksum (see [`crate::format::subjects::mend_header`]), else
    /// left as it is, reported as unfixed.
    fn subject_keys(&mut self) -> Result<()> {
        use crate::format::subjects::{self, SUBJECTS_FILE};
        let path = self.dir.join(SUBJECTS_FILE);
        if !self.st.exists(&path) {
            return Ok(());
        }
        let mut bytes = self.read(&path)?;
        let mut mended = false;
        let decoded = match subjects::decode_file(&bytes) {
            Ok(d) => d,
            Err(subjects::KeyFileError::Version(v)) => {
                return Err(Error::UnsupportedVersion {
                    file: path,
                    found: v,
                    supported: subjects::SUBJECTS_VERSION,
                });
            }
            Err(e) => {
                let header = subjects::mend_header(&bytes);
                let Some(d) = header.and_then(|h| {
                    let mut b = bytes.clone();
                    b[..h.len()].copy_from_slice(&h);
                    subjects::decode_file(&b).ok().map(|d| (b, d))
                }) else {
                    self.report.unfixed.push(format!(
                        "{} at 0: header does not decode ({e:?}) and cannot be mended: the lookup secret it holds is random \
                         and nothing else records it, so the keys it matches to subjects cannot be found by subject \
                         (restore the file from a backup); a read-only open reads every event not sealed under a key",
                        path.display()
                    ));
                    return Ok(());
                };
                // Only the old header goes to quarantine: it holds no key.
                self.quarantine(
                    &format!("{SUBJECTS_FILE}-header.bin"),
                    &bytes[..subjects::SUBJECTS_HEADER],
                )?;
                self.act(format!(
                    "{} at 0: mended a damaged header ({e:?}; its lookup secret checked against its checksum); the old header is in quarantine",
                    path.display()
                ));
                mended = true;
                bytes = d.0;
                d.1
            }
        };
        if !mended && decoded.damaged.is_empty() && decoded.valid_len == bytes.len() {
            return Ok(());
        }
        // Only the removed records go to quarantine, never the whole file:
        // a copy of every live key there would outlive their shredding.
        let mut removed = Vec::new();
        for &at in &decoded.damaged {
            if let Some(record) = bytes.get(at..at.saturating_add(subjects::SUBJECT_RECORD)) {
                removed.extend_from_slice(record);
            }
        }
        removed.extend_from_slice(bytes.get(decoded.valid_len..).unwrap_or_default());
        if !removed.is_empty() {
            self.quarantine(&format!("{SUBJECTS_FILE}-removed.bin"), &removed)?;
        }
        let clean = subjects::encode_file(&decoded.secret, &decoded.keys, &decoded.shredded);
        write_atomically(self.st, self.dir, SUBJECTS_FILE, &clean).ctx(|| format!("rewriting {}", path.display()))?;
        for at in &decoded.damaged {
            self.act(format!(
                "{} at {at}: removed a damaged key record; its bytes are in quarantine",
                path.display()
            ));
            self.report.unfixed.push(format!(
                "{} at {at}: the events sealed under the key of this damaged record stay unreadable (restore the file from a backup, or mend the record from quarantine)",
                path.display()
            ));
        }
        if decoded.valid_len < bytes.len() {
            self.act(format!(
                "{} at {}: removed a torn last record of {} bytes (a key never used); its bytes are in quarantine",
                path.display(),
                decoded.valid_len,
                bytes.len() - decoded.valid_len
            ));
        }
        Ok(())
    }

    /// Keeps a readable identity file; rewrites a damaged or missing one if segments exist.
    fn identity(&mut self) -> Result<()> {
        let path = self.dir.join(META_FILE);
        let existing = if self.st.exists(&path) {
            Some(self.read(&path)?)
        } else {
            None
        };
        match existing.as_deref().map(|b| StoreMeta::decode(b, &path)) {
            Some(Ok(_)) => return Ok(()),
            Some(Err(e @ Error::UnsupportedVersion { .. })) => return Err(e),
            _ => {}
        }
        let has_segments = self
            .st
            .list(self.dir)
            .ctx(|| format!("listing {}", self.dir.display()))?
            .iter()
            .any(|n| matches!(segment::parse_file_name(n), Some((_, "seg"))));
        if !has_segments {
            return Err(Error::NotAStore {
                path: self.dir.to_path_buf(),
                reason: "no annal.meta and no segment to repair".into(),
            });
        }
        if let Some(old) = existing {
            self.quarantine(META_FILE, &old)?;
        }
        let meta = StoreMeta {
            store_id: uuid::Uuid::new_v4(),
            created_micros: now_micros(),
        };
        write_atomically(self.st, self.dir, META_FILE, &meta.encode()).ctx(|| format!("writing {META_FILE}"))?;
        self.act(format!("{}: rewritten (it was missing or damaged)", path.display()));
        Ok(())
    }

    /// Repairs the log's segments; returns the position after the last one.
    fn segments(&mut self) -> Result<u64> {
        let mut bases: Vec<u64> = self
            .st
            .list(self.dir)
            .ctx(|| format!("listing {}", self.dir.display()))?
            .iter()
            .filter_map(|n| match segment::parse_file_name(n) {
                Some((b, "seg")) => Some(b),
                _ => None,
            })
            .collect();
        bases.sort_unstable();
        let mut expected = 0u64;
        self.check_checkpoint(0);
        for (i, base) in bases.iter().copied().enumerate() {
            let is_last = i + 1 == bases.len();
            let path = self.dir.join(segment_file_name(base));
            if base < expected {
                let bytes = self.read(&path)?;
                self.quarantine(&segment_file_name(base), &bytes)?;
                self.st.remove(&path).ctx(|| format!("removing {}", path.display()))?;
                self.act(format!(
                    "{}: starts at position {base}, inside the previous segment (which ends at {expected}); moved to quarantine",
                    path.display()
                ));
                continue;
            }
            if base > expected {
                self.fill_gap(expected, base)?;
                self.check_checkpoint(base);
            }
            // The next segment's base bounds this one, whatever its seal says.
            let bound = bases.get(i + 1).copied();
            expected = self.segment(&path, base, is_last, bound)?;
            self.check_checkpoint(expected);
        }
        // Segments that the last clean close had, and that are gone: their
        // positions were handed out, so they are recorded as lost, never reused.
        if let Some(m) = self
            .claim
            .filter(|m| m.next_position > expected && m.segment_base >= expected)
        {
            self.fill_gap(expected, m.next_position)?;
            expected = m.next_position;
        }
        // Indexes or the stream checkpoint describe events past the last
        // segment (the newest segment files, or all of them, are gone): their
        // positions are recorded as lost, never handed out again.
        let end = self.evidence_end()?;
        if end > expected {
            self.fill_gap(expected, end)?;
            expected = end;
        }
        Ok(expected.max(self.claim.map_or(0, |m| m.next_position)))
    }

    /// Replaces a drop record (`dropped.rec`) that does not decode by the
    /// entries that still do, and an entry saying that the others, before
    /// `end` (the end of the log: drops are only ever of sealed segments),
    /// were lost: forwarders then report every position there that holds no
    /// event as a gap of unknown cause, never as "nothing dropped". The
    /// damaged file goes to quarantine. A record of a version this annal
    /// does not read, or that cannot be read at all (an I/O error), is left
    /// as it is and reported as not fixed.
    fn drop_record(&mut self, end: u64) -> Result<()> {
        let path = self.dir.join(DROPPED_FILE);
        if !self.st.exists(&path) {
            return Ok(());
        }
        // An I/O error is no damage repair can mend: it is reported, and the
        // rest of the repair stands.
        let bytes = match self.read(&path) {
            Ok(b) => b,
            Err(e) => {
                self.report
                    .unfixed
                    .push(format!("{}: {e}; left as it is", path.display()));
                return Ok(());
            }
        };
        let error = match dropped::decode(&bytes, &path) {
            Ok(_) => return Ok(()),
            Err(e) if e.is_corruption() => e,
            Err(e) => {
                self.report
                    .unfixed
                    .push(format!("{}: {e}; left as it is", path.display()));
                return Ok(());
            }
        };
        let salvaged = dropped::salvage(&bytes);
        let found = salvaged.len();
        // An entry past the end of the log cannot be right.
        let mut kept: Vec<DroppedRange> = salvaged.into_iter().filter(|d| d.end_position <= end).collect();
        let wrong = found - kept.len();
        let lost_before = kept
            .iter()
            .filter(|d| d.records_lost())
            .map(|d| d.end_position)
            .max()
            .unwrap_or(0);
        kept.retain(|d| !d.records_lost());
        kept.push(DroppedRange::lost(end.max(lost_before), self.stamp));
        self.quarantine(DROPPED_FILE, &bytes)?;
        write_atomically(self.st, self.dir, DROPPED_FILE, &dropped::encode(&kept)?)
            .ctx(|| format!("writing {DROPPED_FILE}"))?;
        self.act(format!(
            "{}: {error}; moved to quarantine and written again with the {} entries before the damage that still decode ({wrong} more past the end of the log left out), and an entry saying that the others were lost: which positions before {} they dropped is unknown, so forwarders report every position there that holds no event as a gap of unknown cause",
            path.display(),
            kept.len() - 1,
            end.max(lost_before),
        ));
        Ok(())
    }

    /// The position after the last event that the indexes and the stream
    /// checkpoint left in the directory describe (0 if none).
    fn evidence_end(&self) -> Result<u64> {
        let mut end = 0;
        for name in self
            .st
            .list(self.dir)
            .ctx(|| format!("listing {}", self.dir.display()))?
        {
            if let Some((_, "idx")) = segment::parse_file_name(&name) {
                let path = self.dir.join(&name);
                if let Ok(index) = self
                    .st
                    .map(&path)
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))
                    .and_then(|m| crate::format::index::SegmentIndex::open(m, &path))
                {
                    end = end.max(crate::format::index::Lookup::next_position(&index));
                }
            }
        }
        if let Some((bytes, None)) = &self.checkpoint
            && let Ok(c) = StreamsCheckpoint::decode(bytes, &self.dir.join(STREAMS_FILE))
        {
            end = end.max(c.covered_position);
        }
        Ok(end)
    }

    /// Loads the compression dictionary, noting why if it cannot be read: it
    /// cannot be rebuilt, so segments compressed with it are then left alone.
    fn read_dictionary(&mut self) {
        match crate::log::segments::load_dictionary(self.st, self.dir) {
            Ok(d) => self.dictionary = d,
            Err(e) => self.dictionary_error = Some(e.to_string()),
        }
    }

    /// Reads the stream checkpoint, if any, and notes whether it decodes.
    fn read_checkpoint(&mut self) -> Result<()> {
        let path = self.dir.join(STREAMS_FILE);
        if !self.st.exists(&path) {
            return Ok(());
        }
        let bytes = self.read(&path)?;
        let why = match StreamsCheckpoint::decode(&bytes, &path) {
            // Compared with the log once the repair reaches its position.
            Ok(_) => None,
            Err(e) => Some(format!("unreadable ({e})")),
        };
        self.checkpoint = Some((bytes, why));
        Ok(())
    }

    /// Once the repaired log reaches `position`, compares a checkpoint covering
    /// exactly that far with the log's stream states (as `verify` does).
    fn check_checkpoint(&mut self, position: u64) {
        let path = self.dir.join(STREAMS_FILE);
        let Some((bytes, why)) = &mut self.checkpoint else {
            return;
        };
        if self.incomplete {
            return;
        }
        let Ok(c) = StreamsCheckpoint::decode(bytes, &path) else {
            return;
        };
        if c.covered_position != position {
            return;
        }
        *why = crate::maintenance::verify::checkpoint_disagreement(&c, &self.revisions, self.lost > 0);
    }

    /// Notes the stream revisions and lost positions of a segment's final bytes.
    fn account(&mut self, bytes: &[u8]) {
        let _ = segment::scan_frames(bytes, |frame, _, _| {
            match frame {
                Frame::Event(ev) => {
                    self.revisions
                        .insert(ev.stream.to_string(), ev.revision.saturating_add(1));
                }
                Frame::Lost(l) => self.lost = self.lost.saturating_add(l.count),
                _ => {}
            }
            Ok(())
        });
    }

    /// Gathers the stream heads that the stream checkpoint and every readable
    /// index describe, before repair rewrites any of them: a lost position that
    /// held a stream's last event then keeps that stream's revision taken.
    fn read_heads(&mut self) -> Result<()> {
        if let Some((bytes, None)) = &self.checkpoint
            && let Ok(c) = StreamsCheckpoint::decode(bytes, &self.dir.join(STREAMS_FILE))
        {
            for (name, s) in c.streams {
                self.heads
                    .entry(s.last_position)
                    .or_insert((name.into_string(), s.last_revision));
            }
            self.described.push((0, c.covered_position));
        }
        let names = self
            .st
            .list(self.dir)
            .ctx(|| format!("listing {}", self.dir.display()))?;
        for name in names {
            let Some((_, "idx")) = segment::parse_file_name(&name) else {
                continue;
            };
            let path = self.dir.join(&name);
            let Ok(index) = self
                .st
                .map(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))
                .and_then(|m| SegmentIndex::open(m, &path))
                // Every entry checked now: a summary that fails its check is not used.
                .and_then(|i| i.check_all().map(|()| i))
            else {
                continue;
            };
            use crate::format::index::Lookup;
            for (stream, s) in index.streams() {
                self.heads.entry(s.last_position).or_insert((stream, s.last_revision));
            }
            self.described.push((index.base(), index.next_position()));
        }
        Ok(())
    }

    /// Appends lost frames for positions `first..first + count` to `out`, with
    /// the heads known at those positions, and counts the positions nothing described.
    fn encode_lost(&mut self, out: &mut Vec<u8>, first: u64, count: u64) {
        let end = first.saturating_add(count);
        let heads = self
            .heads
            .range(first..end)
            .map(|(position, (stream, revision))| record::Head {
                stream,
                revision: *revision,
                position: *position,
            })
            .collect();
        record::encode_lost(
            out,
            &LostView {
                first_position: first,
                count,
                removed: false,
                hidden: false,
                heads,
            },
        );
        // Counted by ranges, never position by position: a range may be huge.
        let mut covered: Vec<(u64, u64)> = self
            .described
            .iter()
            .map(|(a, b)| ((*a).max(first), (*b).min(end)))
            .filter(|(a, b)| a < b)
            .collect();
        covered.sort_unstable();
        let mut described = 0u64;
        let mut reached = first;
        for (a, b) in covered {
            let a = a.max(reached);
            if b > a {
                described += b - a;
                reached = b;
            }
        }
        let unattributed = (end - first) - described;
        if unattributed > 0 {
            self.report.lost_unattributed += unattributed;
            self.act(format!(
                "positions {first}..{end}: {unattributed} of them are described by no stream checkpoint or index; \
                 a stream whose last event was among them may hand out that revision again"
            ));
        }
    }

    /// Where the events of the segment at `base` start, as its index names
    /// them, if it has one that checks whole (empty otherwise).
    fn index_frame_starts(&self, base: u64) -> Vec<usize> {
        use crate::format::index::Lookup;
        let idx = self.dir.join(segment::index_file_name(base));
        let Some(index) = self
            .st
            .map(&idx)
            .ok()
            .and_then(|m| SegmentIndex::open(m, &idx).ok())
            .filter(|i| i.base() == base && i.check_all().is_ok())
        else {
            return Vec::new();
        };
        let end = index
            .next_position()
            .min(base.saturating_add(record::MAX_LOST_PER_FRAME));
        let positions: Vec<u64> = (base..end).collect();
        let mut starts: Vec<usize> = index
            .locations(&positions)
            .into_iter()
            .flatten()
            .filter_map(|(offset, _)| usize::try_from(offset).ok())
            .collect();
        starts.sort_unstable();
        starts.dedup();
        starts
    }

    /// Writes a sealed segment holding one lost frame for positions no segment held.
    /// The index files of the directory, with their bases.
    fn index_files(&self) -> Result<Vec<(u64, String)>> {
        Ok(self
            .st
            .list(self.dir)
            .ctx(|| format!("listing {}", self.dir.display()))?
            .into_iter()
            .filter_map(|n| match segment::parse_file_name(&n) {
                Some((b, "idx")) => Some((b, n)),
                _ => None,
            })
            .collect())
    }

    fn fill_gap(&mut self, from: u64, to: u64) -> Result<()> {
        // One filler segment per lost frame's worth of positions, so that no
        // segment holds more positions than recovery accepts.
        let mut base = from;
        while base < to {
            let end = to.min(base + record::MAX_LOST_PER_FRAME);
            let mut bytes = SegmentHeader {
                version: crate::format::segment::SEGMENT_VERSION,
                base_position: base,
                created_micros: now_micros(),
                compressed: false,
                dictionary: None,
            }
            .encode()
            .to_vec();
            self.encode_lost(&mut bytes, base, end - base);
            self.seal(&mut bytes, end, end - base);
            segment::stamp_version(&mut bytes);
            let name = segment_file_name(base);
            self.replace(&name, &bytes)?;
            // Indexes left in the range describe the segments that were lost, not this one.
            for (idx_base, idx_name) in self.index_files()? {
                if (base..end).contains(&idx_base) {
                    let idx = self.dir.join(&idx_name);
                    let old = self.read(&idx)?;
                    self.quarantine(&idx_name, &old)?;
                    self.st.remove(&idx).ctx(|| format!("removing {}", idx.display()))?;
                }
            }
            self.report.lost_positions += end - base;
            self.lost = self.lost.saturating_add(end - base);
            self.act(format!(
                "{}: positions {base}..{end} were in no segment; recorded as lost",
                self.dir.join(&name).display()
            ));
            base = end;
        }
        Ok(())
    }

    fn seal(&self, bytes: &mut Vec<u8>, next_position: u64, event_count: u64) {
        let content_crc = crc32fast::hash(&bytes[SEGMENT_HEADER..]);
        record::encode_seal(
            bytes,
            &SealView {
                next_position,
                event_count,
                content_crc,
            },
        );
    }

    /// Durably replaces (or creates) a segment file with `bytes`.
    fn replace(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomically(self.st, self.dir, name, bytes).ctx(|| format!("writing {name}"))
    }

    /// Rewrites a sealed segment's index if it is missing or differs from the log.
    /// An index that opens and checks whole is compared with one built again
    /// as it was written (its version, and the metadata fields a version-3
    /// file names), so that a healthy index is left alone; one that does not
    /// is rebuilt in the current version with no metadata field (repair runs
    /// without the store's options), and the next open with
    /// `indexed_metadata` set rebuilds it (see format.md).
    fn index(&mut self, path: &Path, bytes: &[u8], base: u64) -> Result<()> {
        let name = crate::format::segment::index_file_name(base);
        let idx = self.dir.join(&name);
        let current = if self.st.exists(&idx) {
            Some(self.read(&idx)?)
        } else {
            None
        };
        let existing = current
            .as_ref()
            .and_then(|b| SegmentIndex::open(Arc::new(b.clone()), &idx).ok())
            .filter(|i| i.check_all().is_ok());
        let fields = existing
            .as_ref()
            .and_then(crate::format::index::Lookup::meta_field_names)
            .map(|names: Vec<String>| crate::format::index::MetaFields::new(&names))
            .unwrap_or_default();
        let scanned = index_segment(bytes, base, path, &Arc::new(fields))?;
        let fresh = match &existing {
            Some(i) => scanned.index.encode_file_like(i)?,
            None => scanned.index.encode_file()?,
        };
        if current.as_deref() == Some(&fresh[..]) {
            return Ok(());
        }
        if let Some(old) = &current {
            self.quarantine(&name, old)?;
        }
        write_atomically(self.st, self.dir, &name, &fresh).ctx(|| format!("writing {name}"))?;
        SegmentIndex::open(Arc::new(fresh), &idx)?;
        self.act(format!("{}: rebuilt from the log", idx.display()));
        Ok(())
    }

    /// Why `durable.chk` no longer describes the repaired log (whose end is
    /// `end`), if it does not: it must name the last segment, its durable end
    /// must lie within that segment's bytes, the checksum of the bytes before
    /// it must hold, and its next position must lie within the log. A repair
    /// cut short after rewriting the last segment leaves one that does not,
    /// which would keep the store from opening though the next repair finds
    /// nothing else to do.
    fn stale_claim(&self, end: u64) -> Result<Option<String>> {
        let Some(m) = self.claim else {
            return Ok(Some("unreadable".to_string()));
        };
        let last = self
            .st
            .list(self.dir)
            .ctx(|| format!("listing {}", self.dir.display()))?
            .iter()
            .filter_map(|n| match segment::parse_file_name(n) {
                Some((b, "seg")) => Some(b),
                _ => None,
            })
            .max();
        if last != Some(m.segment_base) {
            return Ok(Some(format!("names segment {}, not the last one", m.segment_base)));
        }
        if m.next_position > end {
            return Ok(Some(format!(
                "names position {}, past the log's end {end}",
                m.next_position
            )));
        }
        let path = self.dir.join(segment_file_name(m.segment_base));
        let mut bytes = self.read(&path)?;
        if SegmentHeader::decode(&bytes, &path).is_ok_and(|h| h.compressed) {
            let dict = self.dictionary.clone();
            match crate::format::compressed::Compressed::open(bytes.into(), &path, dict.as_ref())
                .and_then(|c| c.logical(&path))
            {
                Ok(logical) => bytes = logical,
                Err(e) => return Ok(Some(format!("its segment does not read ({e})"))),
            }
        }
        let holds = usize::try_from(m.durable_end)
            .ok()
            .filter(|e| *e >= SEGMENT_HEADER)
            .and_then(|e| bytes.get(SEGMENT_HEADER..e))
            .is_some_and(|durable| crc32fast::hash(durable) == m.content_crc);
        Ok((!holds).then(|| {
            format!(
                "the bytes of {} before offset {} are not those it describes",
                path.display(),
                m.durable_end
            )
        }))
    }

    /// Removes derived files that open rebuilds (the stream checkpoint) and stale temporaries.
    fn derived(&mut self, end: u64) -> Result<()> {
        let names = self
            .st
            .list(self.dir)
            .ctx(|| format!("listing {}", self.dir.display()))?;
        for n in names.iter().filter(|n| n.ends_with(".tmp")) {
            let p = self.dir.join(n);
            let bytes = self.read(&p)?;
            self.quarantine(n, &bytes)?;
            self.st.remove(&p).ctx(|| format!("removing {}", p.display()))?;
            self.act(format!("{}: stale temporary file moved to quarantine", p.display()));
        }
        // A damaged dictionary no segment needs is moved aside; one that some
        // segment needs stays for whoever can restore it.
        if let Some(e) = self.dictionary_error.take() {
            let path = self.dir.join(crate::format::compressed::DICTIONARY_FILE);
            if self.dictionary_needed == 0 {
                let bytes = self.read(&path)?;
                self.quarantine(crate::format::compressed::DICTIONARY_FILE, &bytes)?;
                self.st.remove(&path).ctx(|| format!("removing {}", path.display()))?;
                self.act(format!(
                    "{}: unreadable ({e}) and used by no segment; moved to quarantine",
                    path.display()
                ));
            } else {
                self.report.unfixed.push(format!(
                    "{}: unreadable ({e}); {} segment(s) compressed with it were left as they are",
                    path.display(),
                    self.dictionary_needed
                ));
            }
        }
        // The durable-end checkpoint describes the segment as it was: once repair
        // changed anything, or once it no longer matches the log (unreadable, or
        // left by a repair cut short), the next clean close records it anew.
        let durable = self.dir.join(DURABLE_FILE);
        if self.st.exists(&durable) {
            let why = match self.report.actions.is_empty() {
                true => self.stale_claim(end)?,
                false => Some("the log was repaired".to_string()),
            };
            if let Some(why) = why {
                let bytes = self.read(&durable)?;
                self.quarantine(DURABLE_FILE, &bytes)?;
                self.st
                    .remove(&durable)
                    .ctx(|| format!("removing {}", durable.display()))?;
                self.act(format!(
                    "{}: {why}; moved to quarantine, written again at the next clean close",
                    durable.display()
                ));
            }
        }
        // Stream states are rebuilt from the segments on the next open.
        let chk = self.dir.join(STREAMS_FILE);
        let why = match self.checkpoint.take() {
            Some((bytes, Some(why))) => Some((bytes, why)),
            Some((bytes, None)) if !self.report.actions.is_empty() => {
                Some((bytes, "the repaired log's stream states may differ".to_string()))
            }
            _ => None,
        };
        if let Some((bytes, why)) = why {
            self.quarantine(STREAMS_FILE, &bytes)?;
            self.st.remove(&chk).ctx(|| format!("removing {}", chk.display()))?;
            self.act(format!(
                "{}: {why}; moved to quarantine, rebuilt from the segments on the next open",
                chk.display()
            ));
        }
        self.st
            .sync_dir(self.dir)
            .ctx(|| format!("syncing {}", self.dir.display()))?;
        Ok(())
    }
}
