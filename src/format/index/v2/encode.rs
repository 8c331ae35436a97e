//! The encoder of version-2 to -5 index files: the sections laid out after
//! the header (locations, stream, type, tag and id lookups, bloom filter,
//! summary, names), the section checksums and the body checksum.
//!
//! This module only turns a segment's index [`Parts`] into bytes; it must
//! never read a file.

use super::names::encode_names;
use super::{LOC_BLOCK, LOC_DIR, SUMS_LEN};
use crate::error::Result;
use crate::format::codec::put_varint;
use crate::format::index::keyed::{self, Entry};
use crate::format::index::summary;
use crate::format::index::{INDEX_HEADER, INDEX_MAGIC, Parts, StreamSummary, fold32, id_key};

/// Encodes a version-5 file (a version-4 one whose bloom filter is blocked
/// and holds the event ids too), a version-4 file (the names with the shared tag keys, and the
/// section checksums), a version-3 one (the names) or a version-2 one, or
/// `None` if the segment
/// does not fit their 32-bit offsets and lengths (the caller then writes
/// version 1).
pub(in crate::format::index) fn encode(p: &Parts<'_>, version: u32) -> Result<Option<Vec<u8>>> {
    if p.end_offset > u64::from(u32::MAX) {
        return Ok(None);
    }
    let rel = |pos: u64| u32::try_from(pos - p.base).ok();
    let Some(locations) = encode_locations(p.locations) else {
        return Ok(None);
    };

    let mut streams = Vec::new();
    for (ordinal, (_, _, entries)) in p.streams.iter().enumerate() {
        let Ok(key) = u32::try_from(ordinal) else {
            return Ok(None);
        };
        for (rev, pos) in entries.iter() {
            let Some(pos) = rel(*pos) else { return Ok(None) };
            streams.push(Entry { key, rev: *rev, pos });
        }
    }
    streams.sort_unstable();
    let keyed_of = |lists: &[(u64, &[u64])]| -> Option<Vec<Entry>> {
        let mut out = Vec::new();
        for (hash, positions) in lists {
            for pos in positions.iter() {
                out.push(Entry {
                    key: fold32(*hash),
                    rev: 0,
                    pos: rel(*pos)?,
                });
            }
        }
        out.sort_unstable();
        // Two hashes that fold to one key on one event are one entry.
        out.dedup();
        Some(out)
    };
    let (Some(types), Some(tags)) = (keyed_of(&p.types), keyed_of(&p.tags)) else {
        return Ok(None);
    };
    let mut ids = Vec::with_capacity(p.ids.len());
    for (id, pos) in &p.ids {
        let Some(pos) = rel(*pos) else { return Ok(None) };
        ids.push(Entry {
            key: id_key(id),
            rev: 0,
            pos,
        });
    }
    ids.sort_unstable();
    ids.dedup();

    let mut sections: [Vec<u8>; 4] = Default::default();
    for (out, (entries, with_rev)) in
        sections
            .iter_mut()
            .zip([(&streams, true), (&types, false), (&tags, false), (&ids, false)])
    {
        if !keyed::encode(entries, with_rev, out) {
            return Ok(None);
        }
    }
    let bloom = if version >= 5 { p.blocked_bloom() } else { p.bloom() };
    let named: Vec<(&str, StreamSummary)> = p.streams.iter().map(|(n, s, _)| (*n, *s)).collect();
    let Some((summary, start_bytes)) = summary::encode(&named, p.base) else {
        return Ok(None);
    };
    let (min_ts, max_ts) = p.time_range();
    let type_names = if version >= 3 {
        let shared = (version >= 4).then_some(p.shared_tags.as_slice());
        let Some(section) = encode_names(&p.type_names, &p.meta_fields, shared) else {
            return Ok(None);
        };
        section
    } else {
        Vec::new()
    };

    let mut out = Vec::with_capacity(
        INDEX_HEADER
            + locations.len()
            + sections.iter().map(Vec::len).sum::<usize>()
            + bloom.len()
            + summary.len()
            + start_bytes.len()
            + type_names.len()
            + SUMS_LEN
            + 4,
    );
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for v in [
        p.base,
        p.locations.len() as u64,
        p.end_offset,
        min_ts as u64,
        max_ts as u64,
        p.streams.len() as u64,
        tags.len() as u64,
        bloom.len() as u64,
        summary.len() as u64,
        streams.len() as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for len in std::iter::once(locations.len()).chain(sections.iter().map(Vec::len)) {
        // Each fits: keyed::encode and encode_locations refuse longer sections.
        let Ok(len) = u32::try_from(len) else { return Ok(None) };
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.resize(INDEX_HEADER - 12, 0);
    out.extend_from_slice(&p.meta_fingerprint.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let mut sums = Vec::with_capacity(SUMS_LEN);
    let mut put = |out: &mut Vec<u8>, parts: &[&[u8]]| {
        let mut h = crc32fast::Hasher::new();
        for part in parts {
            h.update(part);
            out.extend_from_slice(part);
        }
        sums.extend_from_slice(&h.finalize().to_le_bytes());
    };
    put(&mut out, &[&locations]);
    for s in &sections {
        put(&mut out, &[s]);
    }
    put(&mut out, &[&bloom]);
    put(&mut out, &[&summary, &start_bytes]);
    put(&mut out, &[&type_names]);
    if version >= 4 {
        let crc = crc32fast::hash(&sums);
        sums.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&sums);
    }
    let crc = crc32fast::hash(&out[INDEX_HEADER..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(Some(out))
}

/// The locations section, or `None` if an offset or the section does not fit 32 bits.
fn encode_locations(locations: &[(u64, i64)]) -> Option<Vec<u8>> {
    let mut dir = Vec::with_capacity(locations.len().div_ceil(LOC_BLOCK) * LOC_DIR);
    let mut data = Vec::new();
    for block in locations.chunks(LOC_BLOCK) {
        let first = u32::try_from(block[0].0).ok()?;
        dir.extend_from_slice(&first.to_le_bytes());
        dir.extend_from_slice(&u32::try_from(data.len()).ok()?.to_le_bytes());
        let min = block.iter().map(|l| l.1).min().unwrap_or(0);
        let max = block.iter().map(|l| l.1).max().unwrap_or(0);
        dir.extend_from_slice(&min.to_le_bytes());
        dir.extend_from_slice(&max.to_le_bytes());
        for w in block.windows(2) {
            put_varint(&mut data, w[1].0.checked_sub(w[0].0)?);
        }
    }
    dir.extend_from_slice(&data);
    u32::try_from(dir.len()).ok()?;
    Some(dir)
}
