//! `durable.chk` as recovery uses it: what the last clean close vouched for,
//! and the check that refuses to cut as a torn tail any byte it vouched for.
//!
//! This module only reads: it must never cut, write or rebuild anything.

use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::format::checkpoint::{DURABLE_FILE, DurableMark};
use crate::format::segment::{SEGMENT_HEADER, ScanEnd};
use crate::storage::Storage;

/// What `durable.chk` says, as recovery uses it.
pub(super) enum Claim {
    /// No clean close recorded: only group frames claim anything durable.
    Absent,
    /// The last clean close.
    Mark(DurableMark),
    /// The file is damaged: recovery cannot tell a torn tail from damage, so it cuts nothing.
    Unreadable(Error),
}

/// Reads `durable.chk` of `dir`: absent, a clean close's mark, or unreadable
/// (an unsupported version is an error).
pub(super) fn load_claim(st: &dyn Storage, dir: &Path) -> Result<Claim> {
    let path = dir.join(DURABLE_FILE);
    if !st.exists(&path) {
        return Ok(Claim::Absent);
    }
    let bytes = st.map(&path).ctx(|| format!("reading {}", path.display()))?;
    match DurableMark::decode((*bytes).as_ref(), &path) {
        Ok(m) => Ok(Claim::Mark(m)),
        Err(e @ Error::UnsupportedVersion { .. }) => Err(e),
        Err(e) => Ok(Claim::Unreadable(e)),
    }
}

/// `offset`, found by scanning `bytes` (or claimed for them), as an index into them.
pub(super) fn index_in(bytes: &[u8], offset: u64, path: &Path) -> Result<usize> {
    usize::try_from(offset)
        .ok()
        .filter(|at| *at <= bytes.len())
        .ok_or_else(|| Error::corruption(path, offset, "offset past the end of the segment"))
}

/// Refuses to treat as a torn tail anything that `durable.chk` says was durable
/// at the last clean close: damage or missing bytes before its `durable_end`, or
/// bytes before it that differ from what was there. With a damaged `durable.chk`
/// nothing may be cut at all.
/// `known`: the CRC state of the bytes from the header up to an offset, if
/// already computed (used when that offset is the claim's `durable_end`).
pub(super) fn check_claim(
    path: &Path,
    claim: &Claim,
    bytes: &[u8],
    end: &ScanEnd,
    committed_end: u64,
    data_end: u64,
    known: Option<(u64, &crc32fast::Hasher)>,
) -> Result<()> {
    match claim {
        Claim::Absent => Ok(()),
        Claim::Unreadable(e) if data_end > committed_end => Err(Error::corruption(
            path,
            committed_end,
            format!(
                "{} bytes after the last complete append would be cut as a torn tail, but {DURABLE_FILE} is damaged ({e}), so they may have been durable; run repair",
                data_end - committed_end
            ),
        )),
        Claim::Unreadable(_) => Ok(()),
        Claim::Mark(m) => {
            if committed_end < m.durable_end {
                let (at, what) = match end {
                    ScanEnd::Damaged { offset, error, .. } => (*offset, error.to_string()),
                    ScanEnd::Clean { end } if *end < m.durable_end => {
                        (*end, "the segment's data ends here".to_string())
                    }
                    _ => (
                        committed_end,
                        "an unfinished append ends the segment's data".to_string(),
                    ),
                };
                return Err(Error::corruption(
                    path,
                    at,
                    format!(
                        "{what}, yet the store was closed cleanly with this segment durable up to byte {} ({DURABLE_FILE})",
                        m.durable_end
                    ),
                ));
            }
            let durable = index_in(bytes, m.durable_end, path)
                .ok()
                .and_then(|end| bytes.get(SEGMENT_HEADER..end))
                .ok_or_else(|| Error::corruption(path, m.durable_end, format!("bad durable end in {DURABLE_FILE}")))?;
            let crc = match known {
                Some((covered, h)) if covered == m.durable_end => h.clone().finalize(),
                _ => crc32fast::hash(durable),
            };
            if crc != m.content_crc {
                return Err(Error::corruption(
                    path,
                    SEGMENT_HEADER as u64,
                    format!(
                        "bytes before offset {} differ from what was durable at the last clean close ({DURABLE_FILE})",
                        m.durable_end
                    ),
                ));
            }
            Ok(())
        }
    }
}
