//! Compression of sealed segments in the background or on demand: training
//! the store's dictionary once, compressing each sealed segment not yet
//! compressed, checking the result byte for byte, and swapping it in.
//!
//! The block format is [`crate::format::compressed`]'s; this module decides
//! what to compress and replaces files crash-safely. It must never touch the
//! active segment.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::compressed::{Compressed, DICTIONARY_FILE, Dictionary, compress_segment};
use crate::format::record;
use crate::format::segment::SEGMENT_HEADER;
use crate::log::state::Shared;
pub use crate::options::CompressionOptions;

/// What a compression pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompressReport {
    /// Segments compressed in this pass.
    pub segments: usize,
    /// Segments this pass tried to compress (compressed or not).
    pub examined: usize,
    /// Their bytes before.
    pub bytes_before: u64,
    /// Their bytes after.
    pub bytes_after: u64,
}

/// Compresses every sealed segment of the store behind `shared` that is not
/// compressed yet. The index stays valid (it uses logical offsets); the file
/// is replaced atomically, so a crash leaves the old or the new form. With
/// `background`, segments an earlier background run left as they were
/// (incompressible, or failing their check) are not tried again, so that an
/// idle store costs no CPU; an explicit call tries every one.
pub(crate) fn compress_sealed(
    shared: &Shared,
    options: &CompressionOptions,
    background: bool,
) -> Result<CompressReport> {
    use crate::format::index::Lookup;
    let _one_at_a_time = shared.scavenging.lock();
    let mut report = CompressReport::default();
    let key = |s: &crate::log::segments::SealedSegment| (s.index.base(), s.bytes.len());
    let todo: Vec<_> = {
        let skipped = shared.compress_skipped.lock();
        shared
            .segments
            .sealed()
            .iter()
            .filter(|s| s.compressed.is_none() && !(background && skipped.contains(&key(s))))
            .cloned()
            .collect()
    };
    if options.dictionary && shared.dictionary.read().is_none() && !todo.is_empty() {
        train_dictionary(shared, &todo, options)?;
    }
    let dict = if options.dictionary {
        shared.dictionary.read().clone()
    } else {
        None
    };
    // A segment that cannot be compressed (or fails its check) does not keep
    // the others from being compressed; the first error is returned at the end.
    let mut first_error = None;
    for seg in todo {
        report.examined += 1;
        match compress_one(shared, &seg, options, dict.as_ref()) {
            Ok(Some((new, after))) => {
                report.segments += 1;
                report.bytes_before += seg.bytes.len() as u64;
                report.bytes_after += after;
                // The same events, compressed: no reader need look again.
                shared.segments.replace_sealed(new, &shared.block_cache, false);
            }
            Ok(None) => {
                shared.compress_skipped.lock().insert(key(&seg));
            }
            Err(e) => {
                shared.compress_skipped.lock().insert(key(&seg));
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Compresses one sealed segment and replaces its file; returns the segment as
/// reopened and its new size, or `None` if compression gains less than 1/32 of its bytes.
fn compress_one(
    shared: &Shared,
    seg: &crate::log::segments::SealedSegment,
    options: &CompressionOptions,
    dict: Option<&Arc<Dictionary>>,
) -> Result<Option<(crate::log::segments::SealedSegment, u64)>> {
    use crate::format::index::Lookup;
    let st = &*shared.storage;
    // Damage in the segment itself is told as such (and the segment left
    // as it is), not blamed on its compressed form.
    crate::format::segment::check_seal_content(&seg.bytes, seg.index.end_offset()).map_err(|(offset, why)| {
        Error::corruption(
            &seg.path,
            offset,
            format!("{why}: the segment is damaged (run `annal verify` to find where); it was left uncompressed"),
        )
    })?;
    let packed = compress_segment(&seg.bytes, options.level, options.block_size, dict.map(|d| &**d))?;
    // A rewrite (and slower reads) for less than 1/32 of the bytes is not worth it.
    if packed.len() > seg.bytes.len() - seg.bytes.len() / 32 {
        return Ok(None); // Too little gained (already small or incompressible).
    }
    let name = seg
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The compressed form must give back the segment exactly, and match its
    // seal's content checksum, before it may replace it: in memory first,
    // then as written to disk (read back before the rename).
    let check = |file: &[u8]| check_compressed(file, &seg.bytes, seg.index.end_offset(), &seg.path, dict);
    check(&packed)?;
    replace_checked(st, &shared.dir, &name, &packed, check)?;
    let new = crate::log::segments::SealedSegment::open(st, &shared.dir, seg.index.base(), dict)?;
    Ok(Some((new, packed.len() as u64)))
}

/// Checks that `file`, a compressed segment, decodes to exactly `original`
/// (the segment's bytes, whose seal is at `seal_offset`) and that its seal's
/// content checksum matches the decoded bytes.
fn check_compressed(
    file: &[u8],
    original: &[u8],
    seal_offset: u64,
    path: &std::path::Path,
    dict: Option<&Arc<Dictionary>>,
) -> Result<()> {
    let bad = |offset: u64, why: &str| {
        Error::corruption(
            path,
            offset,
            format!("its compressed form fails its check ({why}); the segment was left as it was"),
        )
    };
    let c = Compressed::open(Bytes::copy_from_slice(file), path, dict).map_err(|e| bad(0, &e.to_string()))?;
    if c.logical_len() != original.len() as u64 {
        return Err(bad(0, "logical length differs"));
    }
    let logical = c.logical(path).map_err(|e| bad(0, &e.to_string()))?;
    crate::format::segment::check_seal_content(&logical, seal_offset).map_err(|(offset, why)| bad(offset, why))?;
    if logical != original {
        let at = logical.iter().zip(original).position(|(a, b)| a != b).unwrap_or(0);
        return Err(bad(at as u64, "decompressed bytes differ from the segment"));
    }
    Ok(())
}

/// Replaces `dir/name` by `bytes` like [`crate::storage::write_atomically`],
/// but reads the synced temporary file back and runs `check` on it before the
/// rename; if the check fails, the temporary file is removed and the original
/// is left untouched.
fn replace_checked(
    st: &dyn crate::storage::Storage,
    dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
    check: impl Fn(&[u8]) -> Result<()>,
) -> Result<()> {
    use crate::error::IoContext;
    let tmp = dir.join(format!("{name}.tmp"));
    if st.exists(&tmp) {
        st.remove(&tmp).ctx(|| format!("removing {}", tmp.display()))?;
    }
    let written = (|| {
        let f = st.create(&tmp)?;
        f.write_all_at(bytes, 0)?;
        f.sync_data()
    })();
    written.ctx(|| format!("writing {}", tmp.display()))?;
    let checked = st
        .map(&tmp)
        .ctx(|| format!("reading back {}", tmp.display()))
        .and_then(|m| check((*m).as_ref()));
    if let Err(e) = checked {
        let _ = st.remove(&tmp);
        return Err(e);
    }
    st.rename(&tmp, &dir.join(name))
        .ctx(|| format!("renaming {} over {name}", tmp.display()))?;
    st.sync_dir(dir).ctx(|| format!("syncing {}", dir.display()))
}

/// Trains the store's dictionary from event frames of the given (uncompressed)
/// sealed segments and writes it durably, once.
fn train_dictionary(
    shared: &Shared,
    segments: &[Arc<crate::log::segments::SealedSegment>],
    options: &CompressionOptions,
) -> Result<()> {
    use crate::error::IoContext;
    let mut samples: Vec<&[u8]> = Vec::new();
    let mut total = 0;
    'gather: for seg in segments {
        for frame in record::frame_spans(&seg.bytes, SEGMENT_HEADER) {
            total += frame.len();
            samples.push(&seg.bytes[frame]);
            if samples.len() >= 20_000 || total >= 8 << 20 {
                break 'gather;
            }
        }
    }
    // zstd needs enough material to train on; without it, compress without a dictionary.
    if samples.len() < 100 {
        return Ok(());
    }
    let dict = Dictionary::train(&samples, options.dictionary_size)?;
    crate::storage::write_atomically(&*shared.storage, &shared.dir, DICTIONARY_FILE, &dict.encode())
        .ctx(|| format!("writing {DICTIONARY_FILE}"))?;
    *shared.dictionary.write() = Some(Arc::new(dict));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Durability, EventData, ExpectedVersion, Options, SimStorage, Store};

    /// A store on the simulated disk with 64 KiB segments, not compressed in
    /// the background (the tests call [`compress_sealed`] themselves).
    fn small_segments() -> Store {
        let opts = Options::default()
            .no_compression()
            .durability(Durability::Never)
            .segment_size(64 * 1024);
        Store::open_with(Arc::new(SimStorage::new()), "/z", opts).unwrap()
    }

    /// Review of issue 15: with compression on by default, a store of
    /// incompressible events must not compress its segments again every
    /// 500 ms: a background pass examines each once, an explicit one tries all.
    #[test]
    fn background_passes_examine_an_incompressible_segment_once() {
        let store = small_segments();
        let mut x: u64 = 7;
        for _ in 0..200 {
            let noise: Vec<u8> = (0..2000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            store
                .append("noise", ExpectedVersion::Any, vec![EventData::binary("N", noise)])
                .unwrap();
        }
        let sealed = store.segment_count() - 1;
        assert!(sealed >= 4, "{sealed}");
        let c = CompressionOptions::default();
        let first = compress_sealed(&store.shared, &c, true).unwrap();
        assert_eq!(
            (first.examined, first.segments),
            (sealed, 0),
            "random bytes do not compress"
        );
        let again = compress_sealed(&store.shared, &c, true).unwrap();
        assert_eq!(again.examined, 0, "a background pass leaves them alone now");
        let explicit = compress_sealed(&store.shared, &c, false).unwrap();
        assert_eq!(explicit.examined, sealed, "an explicit pass tries every one");
    }

    /// A compressed segment that scavenging rewrites drops its decompressed
    /// blocks from the block cache at once, instead of holding the cache's
    /// budget until eviction reaches them.
    #[test]
    fn a_rewritten_segment_leaves_the_block_cache() {
        let store = small_segments();
        for i in 0..2000u32 {
            let body = format!(r#"{{"order":{i},"note":"a fairly compressible line of text"}}"#);
            store
                .append(
                    &format!("o-{}", i % 10),
                    ExpectedVersion::Any,
                    vec![EventData::json("T", body)],
                )
                .unwrap();
        }
        compress_sealed(&store.shared, &CompressionOptions::default(), false).unwrap();
        let all = store
            .read_all(
                crate::Direction::Forward,
                crate::LogFrom::Start,
                usize::MAX,
                &crate::Filter::all(),
            )
            .unwrap();
        assert_eq!(all.len(), 2000);
        let cached = store.shared.block_cache.bytes();
        assert!(cached > 0, "reading compressed segments fills the cache");
        store.delete_stream("o-3", ExpectedVersion::Any, false).unwrap();
        let report = store.scavenge().unwrap();
        assert!(report.segments_rewritten > 0, "{report:?}");
        assert!(
            store.shared.block_cache.bytes() < cached,
            "{} bytes cached after scavenging, {cached} before",
            store.shared.block_cache.bytes()
        );
    }
}
