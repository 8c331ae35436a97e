//! What recovery found wrong and did not hide: torn tails it cut (kept in
//! `torn/`) and damage a read-only open stepped around.
//!
//! This module owns [`TornTail`], [`Damage`] and the `torn/` side files; it
//! must never decide what to cut (recovery does).

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::storage::{Storage, write_atomically};

/// Folder where cut-off torn tails are kept.
pub const TORN_DIR: &str = "torn";

/// A torn tail that recovery cut off the last segment and kept in `torn/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The side file holding the cut bytes (`torn/<base>-<offset>-<k>.bin`).
    pub file: PathBuf,
    /// Base position of the segment they were cut from.
    pub segment_base: u64,
    /// Offset in that segment where the cut started.
    pub offset: u64,
    /// Number of bytes cut.
    pub bytes: u64,
}

/// Every torn tail of a segment kept in `dir/torn/`, oldest segment and offset
/// first (not the torn records of `subjects.key` kept there too): what
/// recovery has ever cut and nobody has removed since.
pub fn torn_tails(storage: &dyn Storage, dir: &Path) -> Result<Vec<TornTail>> {
    let torn = dir.join(TORN_DIR);
    if !storage.exists(&torn) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in storage.list(&torn).ctx(|| format!("listing {}", torn.display()))? {
        let Some(stem) = name.strip_suffix(".bin") else {
            continue;
        };
        let mut parts = stem.splitn(3, '-');
        let (Some(Ok(segment_base)), Some(Ok(offset))) =
            (parts.next().map(str::parse::<u64>), parts.next().map(str::parse::<u64>))
        else {
            continue;
        };
        let file = torn.join(&name);
        let bytes = storage
            .open(&file, false)
            .and_then(|f| f.len())
            .ctx(|| format!("reading {}", file.display()))?;
        out.push(TornTail {
            file,
            segment_base,
            offset,
            bytes,
        });
    }
    out.sort_by_key(|t| (t.segment_base, t.offset));
    Ok(out)
}

/// Copies the bytes about to be cut from a segment into `torn/`, durably.
pub(crate) fn save_torn_tail(
    st: &dyn Storage,
    dir: &Path,
    seg: &Path,
    tail: &[u8],
    base: u64,
    offset: u64,
) -> Result<TornTail> {
    let file = save_torn_bytes(st, dir, seg, &format!("{base:020}"), tail, offset)?;
    Ok(TornTail {
        file,
        segment_base: base,
        offset,
        bytes: tail.len() as u64,
    })
}

/// Copies the bytes about to be cut from the file `from` at `offset` into
/// `torn/<prefix>-<offset>-<k>.bin`, durably; returns that side file.
pub(crate) fn save_torn_bytes(
    st: &dyn Storage,
    dir: &Path,
    from: &Path,
    prefix: &str,
    tail: &[u8],
    offset: u64,
) -> Result<PathBuf> {
    let torn = dir.join(TORN_DIR);
    st.create_dir_all(&torn)
        .ctx(|| format!("creating {}", torn.display()))?;
    let mut n = 0;
    let name = loop {
        let name = format!("{prefix}-{offset}-{n}.bin");
        if !st.exists(&torn.join(&name)) {
            break name;
        }
        n += 1;
    };
    write_atomically(st, &torn, &name, tail).ctx(|| format!("saving the torn tail of {}", from.display()))?;
    Ok(torn.join(name))
}

/// Damage that a read-only open found and stepped around: reads of the
/// positions it hides fail with [`Error::Corruption`] naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset of the damage in that file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// First position that cannot be read because of it.
    pub first_position: u64,
    /// Position after the last one it hides; `u64::MAX` when the log ends in it.
    pub end_position: u64,
}

impl Damage {
    /// The error a read touching this damage returns.
    pub fn error(&self) -> Error {
        Error::corruption(&self.file, self.offset, self.reason.clone())
    }
}

/// Damage from an error found at open: the positions `first..end` cannot be read.
pub(crate) fn damage_of(e: Error, first_position: u64, end_position: u64) -> Damage {
    let (file, offset, reason) = match e {
        Error::Corruption { file, offset, reason } => (file, offset, reason),
        other => (PathBuf::new(), 0, other.to_string()),
    };
    Damage {
        file,
        offset,
        reason,
        first_position,
        end_position,
    }
}
