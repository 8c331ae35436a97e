//! Opening one segment file at open: a sealed one through its index (rebuilt
//! if missing, damaged or made for other fields), the last unsealed one by a
//! scan (resumed from `active.idc` after a clean close) that cuts its torn
//! tail, saved to `torn/` first; or, for a reader, the same without writing
//! anything, recording damage instead of refusing.
//!
//! This module must never write events; the only bytes it removes are a
//! torn tail `durable.chk` did not vouch for, after saving them.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use super::claim::{Claim, check_claim, index_in};
use crate::error::{Error, IoContext, Result};
use crate::format::checkpoint::{ACTIVE_INDEX_FILE, DurableMark, decode_active_index};
use crate::format::index::{Lookup, SegmentIndex};
use crate::format::segment::{self, SEGMENT_HEADER, ScanEnd, SegmentHeader};
use crate::log::damage::{Damage, TornTail, damage_of, save_torn_tail};
use crate::log::scan::{Scanned, index_segment, resume_scan};
use crate::log::segments::{ActiveSegment, SealedSegment, mapped_bytes, open_index, read_segment_header};
use crate::storage::{Storage, read_whole, write_atomically};

/// One segment as open found it: sealed (with its index) or the active one.
#[allow(
    clippy::large_enum_variant,
    reason = "one value per segment at open, moved once into the segment list"
)]
pub(super) enum Opened {
    /// A sealed segment, with its index.
    Sealed(SealedSegment),
    /// The last segment, unsealed: the writer appends to it.
    Active(ActiveSegment),
}

/// One segment file as recovery meets it.
pub(super) struct Seg<'a> {
    /// Its file.
    pub(super) path: &'a Path,
    /// Its first position (from its file name).
    pub(super) base: u64,
    /// Whether it is the newest segment file.
    pub(super) is_last: bool,
    /// What `durable.chk` claims about this segment (only ever about the last one).
    pub(super) claim: &'a Claim,
    /// The store's indexed metadata fields: an index file made with others is rebuilt.
    pub(super) fields: &'a Arc<crate::format::index::MetaFields>,
    /// True if the stream states are rebuilt from this segment's index
    /// summary (the stream checkpoint does not cover it): its index is then
    /// checked whole at open, checksums and entries, and rebuilt if that
    /// fails. Other indexes are checked on first use of each section.
    pub(super) summary_needed: bool,
}

/// Opens one segment for reading only: as [`open_segment`] would, but writing
/// nothing (a torn tail stays where it is, unread; an index is rebuilt in
/// memory) and, on damage, keeping the events before it readable and
/// recording the rest of the segment as damaged.
pub(super) fn read_segment(
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
        _ => check_claim(seg.path, seg.claim, &bytes, &end, committed_end, data_end, None).err(),
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
pub(super) fn open_segment(
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
            check_claim(seg.path, seg.claim, &bytes, &end, committed_end, data_end, known)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::checkpoint::DURABLE_FILE;
    use crate::format::index::MetaFields;
    use crate::format::segment::segment_file_name;
    use crate::options::Options;
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
            store
                .append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![e])
                .unwrap();
        }
        store.close().unwrap();
        let st: &dyn Storage = &sim;
        let mark = DurableMark::decode(&sim.read_file(&dir.join(DURABLE_FILE)).unwrap(), Path::new("d")).unwrap();
        let seg_path = dir.join(segment_file_name(mark.segment_base));
        let bytes = sim.read_file(&seg_path).unwrap();
        let fields = Arc::new(MetaFields::new(&["tenant"]));
        let scanned = index_segment(&bytes, mark.segment_base, &seg_path, &fields)
            .unwrap()
            .index;
        let (index, crc) = resume_from_checkpoint(st, dir, &mark, &fields, &bytes).expect("checkpoint used");
        assert_eq!(index.next_position(), mark.next_position);
        assert_eq!(index.encode_file().unwrap(), scanned.encode_file().unwrap());
        assert_eq!(
            index.encode_snapshot().unwrap().len(),
            scanned.encode_snapshot().unwrap().len()
        );
        assert_eq!(crc.finalize(), mark.content_crc);
        // Other fields, or one changed byte in the segment's durable prefix: not used.
        assert!(resume_from_checkpoint(st, dir, &mark, &Arc::new(MetaFields::new(&["x"])), &bytes).is_none());
        let mut damaged = bytes.clone();
        damaged[SEGMENT_HEADER + 40] ^= 1;
        assert!(resume_from_checkpoint(st, dir, &mark, &fields, &damaged).is_none());
    }
}
