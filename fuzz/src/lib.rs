//! The bodies of annal's fuzz targets, shared by the libFuzzer binaries in
//! `fuzz_targets/` and by the seed-corpus helper in `examples/`.
//!
//! Each target runs the library on the raw input and, because every annal file
//! is checksummed, also on a copy of the input whose checksums the harness has
//! made valid: random mutations then reach the checks behind the checksums
//! instead of stopping at them. A panic, a hang or an unbounded allocation is
//! a bug; any `Err` is an accepted answer to malformed bytes.

use std::path::Path;
use std::sync::Arc;

use annal::format::checkpoint::{StoreMeta, StreamTable, StreamsCheckpoint};
use annal::format::compressed::{Compressed, Dictionary};
use annal::format::index::{Lookup, MemIndex, MetaFields, SegmentIndex, hash_str};
use annal::format::record::{self, FRAME_HEADER, Frame, FrameError, MAX_BODY};
use annal::format::segment::{self, SEGMENT_HEADER, ScanEnd, SegmentHeader};
use annal::storage::Mapped;
use annal::storage::sim::SimRng;
use uuid::Uuid;

pub mod store_dir;

pub use store_dir::store_dir;

// ---------------------------------------------------------------------------
// Checksum fix-ups (the harness's own code, written from format.md).

/// The little-endian u32 at `at`, or 0 where `b` has no 4 bytes there: the
/// harness reads fields of inputs it does not trust, and must never panic itself.
fn le_u32(b: &[u8], at: usize) -> u32 {
    at.checked_add(4)
        .and_then(|end| b.get(at..end))
        .map_or(0, |s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

/// The little-endian u64 at `at`, or 0 where `b` has no 8 bytes there.
fn le_u64(b: &[u8], at: usize) -> u64 {
    at.checked_add(8)
        .and_then(|end| b.get(at..end))
        .map_or(0, |s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

/// Makes the CRC of the frame at the start of `buf` valid, if its length field
/// fits in `buf`. Returns the frame's total length.
pub fn fix_frame_crc(buf: &mut [u8]) -> Option<usize> {
    if buf.len() < FRAME_HEADER {
        return None;
    }
    let len = le_u32(buf, 0) as usize;
    if len > MAX_BODY || FRAME_HEADER + len > buf.len() {
        return None;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..4]);
    h.update(&buf[FRAME_HEADER..FRAME_HEADER + len]);
    buf[4..8].copy_from_slice(&h.finalize().to_le_bytes());
    Some(FRAME_HEADER + len)
}

/// Fixes the CRC of every frame walked from `start`, until a zero length or a
/// frame that does not fit.
pub fn fix_frames_from(buf: &mut [u8], start: usize) {
    let mut at = start;
    while at + FRAME_HEADER <= buf.len() && le_u32(buf, at) != 0 {
        match fix_frame_crc(&mut buf[at..]) {
            Some(n) => at += n,
            None => break,
        }
    }
}

/// Fixes the CRC of a 64-byte header (segment header or `annal.meta`): bytes 60..64 over 0..60.
pub fn fix_header64(buf: &mut [u8]) {
    if buf.len() >= 64 {
        let crc = crc32fast::hash(&buf[..60]);
        buf[60..64].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Fixes the CRCs of an `.idx` file: the header's (124..128 over 0..124), version 4's section checksums, and the body's (last 4 bytes over 128..).
pub fn fix_index(buf: &mut [u8]) {
    if buf.len() >= 128 {
        let crc = crc32fast::hash(&buf[..124]);
        buf[124..128].copy_from_slice(&crc.to_le_bytes());
    }
    if buf.len() >= 132 {
        let end = buf.len() - 4;
        fix_index_section_sums(buf, end);
        let crc = crc32fast::hash(&buf[128..end]);
        buf[end..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Versions 4 and 5's section checksums (36 bytes before the body CRC at `end`):
/// one CRC per section (locations, streams, types, tags, ids, bloom,
/// summary with its restarts, names), then the CRC of those; left alone if
/// the header's sizes do not fit the file.
fn fix_index_section_sums(buf: &mut [u8], end: usize) {
    if !(4..=5).contains(&le_u32(buf, 8)) || end < 128 + 36 {
        return;
    }
    let sums_at = end - 36;
    let field = |at: usize| usize::try_from(le_u64(buf, at)).ok();
    let (Some(bloom), Some(summary), Some(streams)) = (field(72), field(80), field(56)) else {
        return;
    };
    let mut lens: Vec<usize> = (0..5).map(|i| le_u32(buf, 96 + 4 * i) as usize).collect();
    lens.push(bloom);
    lens.push(summary.saturating_add(streams.div_ceil(16).saturating_mul(4)));
    let Some(names) = lens
        .iter()
        .try_fold(0usize, |a, l| a.checked_add(*l))
        .and_then(|total| sums_at.checked_sub(128)?.checked_sub(total))
    else {
        return;
    };
    lens.push(names);
    let mut at = 128;
    let mut sums = Vec::with_capacity(36);
    for len in lens {
        sums.extend_from_slice(&crc32fast::hash(&buf[at..at + len]).to_le_bytes());
        at += len;
    }
    let crc = crc32fast::hash(&sums);
    sums.extend_from_slice(&crc.to_le_bytes());
    buf[sums_at..end].copy_from_slice(&sums);
}

/// Fixes the block-table CRC of a compressed segment (trailer: table offset,
/// count, logical length, CRC of the table, `AZTB`), if the table offset fits.
pub fn fix_compressed_table(buf: &mut [u8]) {
    let n = buf.len();
    if n < SEGMENT_HEADER + 32 || &buf[n - 4..] != b"AZTB" {
        return;
    }
    let t = n - 32;
    let table = le_u64(buf, t);
    if table <= t as u64 {
        let crc = crc32fast::hash(&buf[table as usize..t]);
        buf[t + 24..t + 28].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Fixes the CRC of a dictionary file (bytes 24..28 over the bytes from 32 on).
pub fn fix_dictionary(buf: &mut [u8]) {
    if buf.len() >= 32 {
        let crc = crc32fast::hash(&buf[32..]);
        buf[24..28].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Fixes the whole-file CRC of `streams.chk` (last 4 bytes over everything before).
pub fn fix_checkpoint(buf: &mut [u8]) {
    if buf.len() >= 4 {
        let end = buf.len() - 4;
        let crc = crc32fast::hash(&buf[..end]);
        buf[end..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A frame that stands for lost (kind 4) or removed (kind 5) positions, built by
/// hand from format.md rather than with `record::encode_lost`, so that the
/// harness does not depend on the shape of `LostView`.
pub fn lost_frame(kind: u8, first_position: u64, count: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + 18);
    out.extend_from_slice(&18u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(&first_position.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    fix_frame_crc(&mut out);
    out
}

/// A lost or removed frame with `HEADS` (flag 1): `(stream, revision, position)` each, built by hand from format.md.
pub fn lost_frame_with_heads(kind: u8, first_position: u64, count: u64, heads: &[(&str, u64, u64)]) -> Vec<u8> {
    let mut out = vec![0; FRAME_HEADER];
    out.extend_from_slice(&[kind, 1]);
    out.extend_from_slice(&first_position.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(heads.len() as u32).to_le_bytes());
    for (stream, revision, position) in heads {
        out.extend_from_slice(&(stream.len() as u16).to_le_bytes());
        out.extend_from_slice(stream.as_bytes());
        out.extend_from_slice(&revision.to_le_bytes());
        out.extend_from_slice(&position.to_le_bytes());
    }
    let body = (out.len() - FRAME_HEADER) as u32;
    out[0..4].copy_from_slice(&body.to_le_bytes());
    fix_frame_crc(&mut out);
    out
}

/// A version-1 segment header, built by hand from format.md.
pub fn segment_header_bytes(base_position: u64, created_micros: i64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[0..8].copy_from_slice(b"ANNALSEG");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[16..24].copy_from_slice(&base_position.to_le_bytes());
    h[24..32].copy_from_slice(&created_micros.to_le_bytes());
    fix_header64(&mut h);
    h
}

/// A version-1 `streams.chk` with these `(name, last_revision, last_position)` entries, built by hand from format.md.
pub fn checkpoint_bytes(covered_position: u64, entries: &[(&str, u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"ANNALCHK");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&covered_position.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (name, revision, position) in entries {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&revision.to_le_bytes());
        out.extend_from_slice(&position.to_le_bytes());
    }
    out.extend_from_slice(&[0; 4]);
    fix_checkpoint(&mut out);
    out
}

// ---------------------------------------------------------------------------
// Target `frame`.

/// Re-encodes a decoded frame with annal's public encoders.
pub fn encode_frame(frame: &Frame<'_>, out: &mut Vec<u8>) {
    match frame {
        Frame::Event(ev) => {
            let tags: Vec<String> = ev.tags.iter().map(|t| t.to_string()).collect();
            record::encode_event_sealed(
                out,
                ev.commit,
                ev.sealed,
                ev.position,
                ev.revision,
                ev.timestamp,
                ev.id,
                ev.content_type,
                ev.stream,
                ev.event_type,
                &tags,
                ev.metadata,
                ev.data,
            )
            .expect("a decoded event fits its frame again");
        }
        Frame::Seal(s) => record::encode_seal(out, s),
        Frame::Group(g) => record::encode_group(out, g),
        Frame::Lost(l) => record::encode_lost(out, l),
    }
}

fn check_frame(buf: &[u8]) {
    // The no-checksum decoder must not panic either, whatever it is given.
    let own = record::decode_own_frame(buf);
    let _ = record::frame_len(buf);
    match record::decode_frame(buf) {
        Ok((frame, len)) => {
            assert!(
                (FRAME_HEADER..=buf.len()).contains(&len),
                "frame length {len} out of bounds"
            );
            assert_eq!(
                record::frame_len(buf),
                Some(len),
                "frame_len disagrees with decode_frame"
            );
            let mut out = Vec::new();
            encode_frame(&frame, &mut out);
            assert_eq!(
                out.as_slice(),
                &buf[..len],
                "re-encoding a decoded frame changed its bytes"
            );
            assert_eq!(record::decode_frame(&out), Ok((frame.clone(), len)));
            assert_eq!(own, Ok((frame, len)), "decode_own_frame disagrees with decode_frame");
        }
        Err(FrameError::Truncated | FrameError::Checksum | FrameError::Malformed(_)) => {}
    }
}

/// `record::decode_frame` on the input and on the input with its CRC made valid;
/// whatever decodes must re-encode to the same bytes.
pub fn frame(data: &[u8]) {
    check_frame(data);
    let mut fixed = data.to_vec();
    if fix_frame_crc(&mut fixed).is_some() && fixed != data {
        check_frame(&fixed);
    }
}

// ---------------------------------------------------------------------------
// Target `segment_header`.

fn check_segment(b: &[u8], stop_after: usize) {
    let path = Path::new("/fuzz/00000000000000000000.seg");
    if let Ok(h) = SegmentHeader::decode(b, path) {
        let enc = h.encode();
        assert_eq!(
            SegmentHeader::decode(&enc, path).ok(),
            Some(h),
            "header does not round-trip"
        );
        // Magic, version, flags, base and creation time are what the decoder read.
        assert_eq!(enc[..32], b[..32], "re-encoded header differs in its fields");
        assert_eq!(
            SegmentHeader::decode(&b[..SEGMENT_HEADER], path).ok(),
            Some(h),
            "header depends on later bytes"
        );
    }
    let _ = segment::find_valid_frame(b, SEGMENT_HEADER);
    let _ = segment::data_end(b, SEGMENT_HEADER.min(b.len()));

    let mut prev_end = SEGMENT_HEADER.min(b.len()) as u64;
    let mut frames = 0usize;
    let end = segment::scan_frames(b, |frame, offset, end| {
        assert!(
            matches!(frame, Frame::Event(_) | Frame::Lost(_)),
            "scan passed a {frame:?}"
        );
        assert!(
            offset >= prev_end && end > offset && end <= b.len() as u64,
            "frame range {offset}..{end}"
        );
        prev_end = end;
        frames += 1;
        if frames == stop_after {
            return Err(annal::Error::InvalidInput("stop".into()));
        }
        Ok(())
    });
    let len = b.len() as u64;
    match end {
        Ok(ScanEnd::Clean { end }) => assert!(end <= len),
        Ok(ScanEnd::Sealed { seal_offset, .. }) => assert!(seal_offset < len),
        Ok(ScanEnd::Damaged {
            offset, durable_claim, ..
        }) => {
            assert!(offset < len);
            if let Some(at) = durable_claim {
                assert!(at > offset && at < len);
            }
        }
        Err(annal::Error::InvalidInput(_)) => assert_eq!(frames, stop_after),
        Err(e) => panic!("scan_frames failed on its own: {e}"),
    }
}

/// `SegmentHeader::decode` and `segment::scan_frames` on the input, then on a
/// copy whose header CRC and frame CRCs were made valid.
pub fn segment_header(data: &[u8]) {
    // The callback stops the scan after this many frames (0: never).
    let stop_after = data.get(SEGMENT_HEADER).map_or(0, |b| (b % 8) as usize);
    check_segment(data, stop_after);
    let mut fixed = data.to_vec();
    fix_header64(&mut fixed);
    fix_frames_from(&mut fixed, SEGMENT_HEADER);
    if fixed != data {
        check_segment(&fixed, stop_after);
    }
}

// ---------------------------------------------------------------------------
// Target `index_file`.

fn check_index(bytes: Vec<u8>) {
    let arc = Arc::new(bytes);
    let map: Mapped = arc.clone();
    let Ok(idx) = SegmentIndex::open(map, Path::new("/fuzz/00000000000000000000.idx")) else {
        return;
    };
    let b: &[u8] = &arc;
    // A version-2 file's entries are checked on each section's first use: a
    // lookup of any section must not panic, and a section that fails its
    // check is reported as damage (the checks below then do not apply).
    let _ = idx.location(le_u64(b, 16));
    let _ = idx.streams();
    let _ = idx.stream_entries("order-1", 0, true, 10);
    let _ = idx.type_positions(0);
    let _ = idx.tag_positions(0);
    let _ = idx.id_positions(&Uuid::nil());
    if idx.check_all().is_err() {
        assert!(idx.damage().is_some(), "a failed check left no damage");
        return;
    }
    // The header fields both versions share (format.md); open checked the sizes.
    let base = le_u64(b, 16);
    let count = le_u64(b, 24);
    let end_offset = le_u64(b, 32);
    // `count` (n) positions have a location; only `indexed` (m <= n) events,
    // the positions not lost, have stream, type and id entries (format.md).
    let indexed = le_u64(b, 88);
    let m = usize::try_from(indexed).unwrap_or(usize::MAX);
    let n = usize::try_from(count).unwrap_or(usize::MAX);

    let mut rng = SimRng::new(u64::from(crc32fast::hash(b)) | (count << 32));
    let pick = |rng: &mut SimRng, len: usize| rng.below(len as u64) as usize;

    assert_eq!(idx.base(), base);
    assert_eq!(idx.end_offset(), end_offset);
    assert_eq!(idx.raw(), b);
    let next = idx.next_position();
    let range = idx.time_range();

    // Positions around the segment's edges, a few inside it, and extremes.
    let mut positions = vec![
        0,
        u64::MAX,
        base,
        base.wrapping_sub(1),
        base.wrapping_add(1),
        next,
        next.wrapping_sub(1),
        next.wrapping_add(1),
        base.wrapping_add(count),
    ];
    for _ in 0..4 {
        positions.push(base.wrapping_add(pick(&mut rng, n.saturating_add(2)) as u64));
    }
    for p in positions {
        let loc = idx.location(p);
        let ts = idx.time_bounds(p);
        assert_eq!(loc.is_some(), ts.is_some(), "location and time bounds disagree at {p}");
        assert_eq!(
            loc.is_some(),
            p >= base && p < next,
            "location of {p} outside {base}..{next}"
        );
        if let Some((off, end)) = loc {
            assert!(
                off <= end && end <= end_offset,
                "location {off}..{end} of {p} past {end_offset}"
            );
        }
        if let (Some((lo, hi)), Some(_)) = (ts, range) {
            assert!(lo <= hi, "time bounds {lo}..{hi} of {p}");
        }
    }

    // Names and revisions from the file's own summary, plus random hashes and ids.
    let summaries = idx.streams();
    let mut names: Vec<String> = vec!["order-1".into(), String::new()];
    let mut revisions = vec![0, 1, u64::MAX];
    for (name, s) in summaries.iter().take(8) {
        names.push(name.clone());
        revisions.extend([s.first_revision, s.last_revision]);
    }
    let mut hashes = vec![0, u64::MAX, hash_str("order-1"), hash_str("t:1")];
    let mut ids = vec![Uuid::nil(), Uuid::max()];
    for _ in 0..6 {
        hashes.push(rng.next_u64());
        ids.push(Uuid::from_u128(u128::from(rng.next_u64())));
    }
    for &h in &hashes {
        let _ = idx.may_contain_stream(h);
        for list in [idx.type_positions(h), idx.tag_positions(h)] {
            assert!(
                list.iter().all(|p| *p >= base && *p < next),
                "a position outside the segment"
            );
        }
    }
    for name in &names {
        let some = revisions[pick(&mut rng, revisions.len())];
        for from in [0, u64::MAX, some] {
            for forward in [true, false] {
                for limit in [0, 2, usize::MAX] {
                    let got = idx.stream_entries(name, from, forward, limit);
                    assert!(
                        got.len() <= limit.min(m),
                        "stream_entries returned {} entries",
                        got.len()
                    );
                    assert!(
                        got.iter().all(|(_, p)| *p >= base && *p < next),
                        "a stream entry outside the segment"
                    );
                }
            }
        }
    }
    for id in &ids {
        assert!(idx.id_positions(id).iter().all(|p| *p >= base && *p < next));
    }
}

/// `SegmentIndex::open` on the input and on a copy with valid CRCs; every
/// `Lookup` method on whatever opens.
pub fn index_file(data: &[u8]) {
    check_index(data.to_vec());
    let mut fixed = data.to_vec();
    fix_index(&mut fixed);
    if fixed != data {
        check_index(fixed);
    }
}

// ---------------------------------------------------------------------------
// Target `checkpoint`.

fn check_checkpoint(b: &[u8]) {
    let path = Path::new("/fuzz/streams.chk");
    if let Ok(c) = StreamsCheckpoint::decode(b, path) {
        let enc = c.encode().expect("a decoded checkpoint encodes again");
        let again = StreamsCheckpoint::decode(&enc, path).expect("a re-encoded checkpoint decodes");
        assert_eq!(again, c, "checkpoint does not round-trip");
        // The encoding is version 2 (a table of offsets more than version 1):
        // a version-2 input, which admits no duplicate name, encodes to its
        // own length.
        if b.get(8..12) == Some(&2u32.to_le_bytes()[..]) {
            assert_eq!(enc.len(), b.len(), "a version-2 checkpoint re-encodes to another length");
        }
    }
}

/// `streams.chk` version 2: a table that passes its whole check finds each
/// of its entries by name, by iteration and by prefix, without a panic.
fn check_stream_table(b: &[u8]) {
    let path = Path::new("/fuzz/streams.chk");
    let Ok(t) = StreamTable::check(b, path) else {
        return;
    };
    let all: Vec<_> = t.iter(b).collect();
    assert_eq!(all.len(), t.count, "a checked table iterates over its count");
    for (name, state) in &all {
        assert_eq!(t.get(b, name), Some(*state), "a checked table finds {name:?}");
        let cut = (0..=name.len()).rev().find(|i| name.is_char_boundary(*i) && *i <= name.len() / 2).unwrap_or(0);
        assert!(
            t.with_prefix(b, &name[..cut]).any(|(n, _)| n == *name),
            "a prefix search misses {name:?}"
        );
    }
    let _ = t.get(b, "");
}

/// The body of `active.idc` (the active segment's index as of a clean
/// close), with the input's bytes 16..24 set to the indexed fields'
/// fingerprint so that decoding goes past it: what decodes answers every
/// lookup without a panic and encodes to bytes that decode the same again.
fn check_active_snapshot(b: &[u8]) {
    let fields = Arc::new(MetaFields::new(&["tenant"]));
    let mut body = b.to_vec();
    if body.len() >= 24 {
        body[16..24].copy_from_slice(&fields.fingerprint().to_le_bytes());
    }
    let Ok(index) = MemIndex::decode_snapshot(&body, fields.clone()) else {
        return;
    };
    let again = index.encode_snapshot().expect("a decoded snapshot encodes again");
    let decoded = MemIndex::decode_snapshot(&again, fields).expect("a re-encoded snapshot decodes");
    assert_eq!(answers(&decoded), answers(&index), "an active index snapshot does not round-trip");
}

/// What lookups of a memory index answer, in a form to compare (the
/// snapshot's bytes may list hashed sections in another order).
fn answers(index: &MemIndex) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let (base, next) = (index.base(), index.next_position());
    let _ = write!(out, "{base} {next} {:?};", index.time_range());
    for p in [base, base.saturating_add(1), next.saturating_sub(1), next] {
        let _ = write!(out, "{:?} {:?};", index.location(p), index.time_bounds(p));
    }
    let mut streams = index.streams();
    streams.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, summary) in streams.iter().take(8) {
        let _ = write!(
            out,
            "{name:?} {summary:?} {:?} {:?};",
            index.stream_entries(name, 0, true, 16),
            index.stream_entries(name, u64::MAX, false, 16)
        );
    }
    if let Some(c) = index.type_catalog() {
        for n in c.names.iter().take(8) {
            let _ = write!(out, "{n:?} {:?};", index.type_positions_in(hash_str(n), base, next));
        }
    }
    out
}

fn check_meta(b: &[u8]) {
    let path = Path::new("/fuzz/annal.meta");
    if let Ok(m) = StoreMeta::decode(b, path) {
        let enc = m.encode();
        assert_eq!(
            StoreMeta::decode(&enc, path).ok(),
            Some(m),
            "annal.meta does not round-trip"
        );
        assert_eq!(enc[..40], b[..40], "re-encoded annal.meta differs in its fields");
    }
}

fn check_dictionary(b: &[u8]) {
    let path = Path::new("/fuzz/dictionary.zdict");
    if let Ok(d) = Dictionary::decode(b, path) {
        let enc = d.encode();
        // Bytes 28..32 are reserved and not checked.
        assert_eq!(enc.len(), b.len());
        assert_eq!(
            (&enc[..28], &enc[32..]),
            (&b[..28], &b[32..]),
            "dictionary file does not re-encode to its bytes"
        );
        let again = Dictionary::decode(&enc, path).expect("a re-encoded dictionary decodes");
        assert_eq!(
            (again.id, &again.bytes),
            (d.id, &d.bytes),
            "dictionary does not round-trip"
        );
    }
}

/// `StreamsCheckpoint::decode`, `StoreMeta::decode` and `compression::Dictionary::decode` on the input (and on
/// copies with valid CRCs); what decodes must round-trip.
pub fn checkpoint(data: &[u8]) {
    check_checkpoint(data);
    let mut fixed = data.to_vec();
    fix_checkpoint(&mut fixed);
    if fixed != data {
        check_checkpoint(&fixed);
    }
    check_dictionary(data);
    let mut fixed = data.to_vec();
    fix_dictionary(&mut fixed);
    if fixed != data {
        check_dictionary(&fixed);
    }
    check_stream_table(data);
    let mut fixed = data.to_vec();
    fix_checkpoint(&mut fixed);
    if fixed != data {
        check_stream_table(&fixed);
    }
    check_active_snapshot(data);
    check_meta(data);
    // annal.meta is exactly 64 bytes: also try the input's first 64, with a valid CRC.
    if data.len() >= 64 {
        let mut meta = data[..64].to_vec();
        fix_header64(&mut meta);
        check_meta(&meta);
    }
}

// ---------------------------------------------------------------------------
// Target `compressed_segment`.

fn check_compressed(b: &[u8], probes: &[u8]) {
    let path = Path::new("/fuzz/00000000000000000000.seg");
    let Ok(c) = Compressed::open(bytes::Bytes::copy_from_slice(b), path, None) else {
        return;
    };
    let len = c.logical_len();
    // Ranges at the start, the end, and where the input's last bytes point.
    let mut offsets = vec![0, SEGMENT_HEADER as u64, len.saturating_sub(1), len, u64::MAX];
    offsets.extend(probes.iter().map(|p| u64::from(*p) * len / 255));
    // Through a block cache and without one: the same answer, twice each
    // (the second read of a block comes from the cache or the memo).
    let cache = annal::format::block_cache::BlockCache::new(64 << 20);
    for off in offsets {
        let end = off.saturating_add(64);
        let plain = c.range(off, end, path, None).map_err(|e| e.to_string());
        for _ in 0..2 {
            assert_eq!(
                c.range(off, end, path, Some(&cache)).map_err(|e| e.to_string()),
                plain,
                "the cache changed an answer"
            );
        }
        if let Ok(r) = plain {
            assert!(r.len() <= 64, "range returned {} bytes for 64 asked", r.len());
            let _ = record::decode_frame(&r);
        }
    }
    if let Ok(logical) = c.logical(path) {
        assert_eq!(logical.len() as u64, len, "logical length differs from the trailer's");
        let _ = SegmentHeader::decode(&logical, path);
        let _ = segment::scan_frames(&logical, |_, _, _| Ok(()));
    }
}

/// `compression::Compressed::open` on the input (and on a copy with valid
/// header and block-table CRCs); on success `range` at several offsets and
/// `logical`, whose bytes are then scanned as a segment.
pub fn compressed_segment(data: &[u8]) {
    let probes = &data[data.len().saturating_sub(4)..];
    check_compressed(data, probes);
    let mut fixed = data.to_vec();
    fix_header64(&mut fixed);
    fix_compressed_table(&mut fixed);
    if fixed != data {
        check_compressed(&fixed, probes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_readers_never_index_past_the_end() {
        let b = [1u8, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(le_u64(&b, 0), 1);
        assert_eq!(le_u64(&b, 1), 2 << 56);
        assert_eq!(le_u64(&b, 2), 0);
        assert_eq!(le_u64(&b, usize::MAX), 0);
        assert_eq!(le_u32(&b, 5), 2 << 24);
        assert_eq!(le_u32(&b, 6), 0);
        assert_eq!(le_u32(&b, usize::MAX - 1), 0);
    }

    /// `fix_index` makes the section checksums of a file annal writes
    /// (version 5, as 4) valid again: cleared, they come back byte for byte.
    #[test]
    fn fix_index_restores_the_section_checksums() {
        let good = annal::format::index::MemIndex::new(0, 64, Default::default())
            .encode_file()
            .expect("an empty index encodes");
        assert_eq!(le_u32(&good, 8), annal::format::index::INDEX_VERSION);
        let mut bytes = good.clone();
        let n = bytes.len();
        bytes[n - 40..].fill(0);
        fix_index(&mut bytes);
        assert_eq!(bytes, good);
    }

    /// Found by fuzzing (issue 11, item 25b): an index with a lost position
    /// (`indexed` < `count`) made the harness read its stream table as if it
    /// had `count` entries, past the end of the file.
    #[test]
    fn index_with_fewer_indexed_events_than_positions() {
        let input = include_bytes!("../regressions/index_file/lost-position-harness-le_u64-past-end");
        assert_eq!(input.len(), 156);
        let idx = SegmentIndex::open(Arc::new(input.to_vec()), Path::new("/fuzz/0.idx")).expect("a valid index");
        assert_eq!(idx.next_position(), 1);
        index_file(input);
    }
}

// ---------------------------------------------------------------------------
// Target `subjects`.

/// The subject key store and sealed envelopes: `subjects.key` decodes or is
/// refused without panicking, and what decodes encodes back to the same keys;
/// an envelope opens or fails without panicking (under a fixed key, a
/// fuzzed envelope never opens: its tag would have to be forged); and a
/// sealed envelope of the input opens to exactly what was sealed.
pub fn subjects(data: &[u8]) {
    use annal::format::subjects::{self as s, Secret};
    if let Ok(f) = s::decode_file(data) {
        assert!(f.valid_len <= data.len());
        let again = s::decode_file(&s::encode_file(&f.secret, &f.keys, &f.shredded)).expect("re-encoded key store");
        assert_eq!((again.keys, again.shredded), (f.keys, f.shredded));
    }
    let key = Secret([7; 32]);
    let id = Uuid::from_u128(42);
    assert!(s::open(&key, id, data).is_err(), "a fuzzed envelope opened");
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (metadata, rest) = data.split_at(split);
    let key_id = [3u8; s::KEY_ID_LEN];
    if let Some(env) = s::seal(&key_id, &key, id, "subject", metadata, rest) {
        let opened = s::open(&key, id, &env).expect("an envelope just sealed opens");
        assert_eq!(
            (opened.subject.as_str(), &opened.metadata[..], &opened.data[..]),
            ("subject", metadata, rest)
        );
        assert_eq!(s::envelope_key_id(&env), Some(key_id));
    }
}
