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

/// Name of the folder where repair keeps what it moved aside (the key store
/// looks there too, to shred a subject's records repair set aside).
pub const QUARANTINE_DIR: &str = "quarantine";
/// File in [`TORN_DIR`] naming the files saved there by cuts that no open
/// has reported yet, one name a line (see format.md, "Recovery").
pub const UNREPORTED_FILE: &str = "unreported.lst";

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
        out.extend(torn_tail_named(storage, dir, &name)?);
    }
    out.sort_by_key(|t| (t.segment_base, t.offset));
    Ok(out)
}

/// The torn tail of a segment kept in `dir/torn/name`, if `name` is the
/// name of one (`<base>-<offset>-<k>.bin`).
fn torn_tail_named(storage: &dyn Storage, dir: &Path, name: &str) -> Result<Option<TornTail>> {
    let Some(stem) = name.strip_suffix(".bin") else {
        return Ok(None);
    };
    let mut parts = stem.splitn(3, '-');
    let (Some(Ok(segment_base)), Some(Ok(offset))) =
        (parts.next().map(str::parse::<u64>), parts.next().map(str::parse::<u64>))
    else {
        return Ok(None);
    };
    let file = dir.join(TORN_DIR).join(name);
    let bytes = storage
        .open(&file, false)
        .and_then(|f| f.len())
        .ctx(|| format!("reading {}", file.display()))?;
    Ok(Some(TornTail {
        file,
        segment_base,
        offset,
        bytes,
    }))
}

/// A torn last record of `subjects.key` cut off by recovery and kept in `torn/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CutKeyTail {
    /// Where the cut bytes were saved (`torn/subjects.key-<offset>-<k>.bin`).
    pub(crate) saved: PathBuf,
    /// Offset of the cut in `subjects.key`.
    pub(crate) offset: u64,
    /// Bytes cut.
    pub(crate) bytes: u64,
}

/// The cuts no successful open has reported yet (the files of
/// [`UNREPORTED_FILE`] still in `torn/`): the torn tails of segments, oldest
/// first, and the torn records of `subjects.key`.
pub(crate) fn unreported_cuts(st: &dyn Storage, dir: &Path) -> Result<(Vec<TornTail>, Vec<CutKeyTail>)> {
    let list = dir.join(TORN_DIR).join(UNREPORTED_FILE);
    let (mut tails, mut keys) = (Vec::new(), Vec::new());
    if !st.exists(&list) {
        return Ok((tails, keys));
    }
    let text = st
        .open(&list, false)
        .and_then(|f| crate::storage::read_whole(&*f))
        .ctx(|| format!("reading {}", list.display()))?;
    let key_prefix = format!("{}-", crate::format::subjects::SUBJECTS_FILE);
    let torn = dir.join(TORN_DIR);
    // A list that does not read as names of files still in `torn/` (rotted,
    // or a file removed since: by a person, or by a shred) cannot say which
    // cuts are unreported: every file of `torn/` is reported then (twice
    // rather than never).
    let listed: Option<Vec<String>> = std::str::from_utf8(&text)
        .ok()
        .map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|names| {
            names
                .iter()
                .all(|n| !n.contains('/') && n.ends_with(".bin") && n != UNREPORTED_FILE && st.exists(&torn.join(n)))
        });
    let mut names = match listed {
        Some(names) => names,
        None => st
            .list(&torn)
            .ctx(|| format!("listing {}", torn.display()))?
            .into_iter()
            .filter(|n| n != UNREPORTED_FILE)
            .collect(),
    };
    names.sort_unstable();
    names.dedup();
    for name in &names {
        let name = name.as_str();
        let saved = dir.join(TORN_DIR).join(name);
        // A file removed since (by a person, or by a shred) is not reported.
        if name.contains('/') || !st.exists(&saved) {
            continue;
        }
        if let Some(rest) = name.strip_prefix(&key_prefix) {
            let offset = rest.split('-').next().and_then(|o| o.parse::<u64>().ok()).unwrap_or(0);
            let bytes = st
                .open(&saved, false)
                .and_then(|f| f.len())
                .ctx(|| format!("reading {}", saved.display()))?;
            keys.push(CutKeyTail { saved, offset, bytes });
        } else {
            tails.extend(torn_tail_named(st, dir, name)?);
        }
    }
    tails.sort_by_key(|t| (t.segment_base, t.offset));
    Ok((tails, keys))
}

/// Forgets the unreported cuts, once an open has reported them. A failure is
/// ignored: the next open then reports them again (twice rather than never).
pub(crate) fn forget_unreported(st: &dyn Storage, dir: &Path) {
    let torn = dir.join(TORN_DIR);
    let list = torn.join(UNREPORTED_FILE);
    if st.exists(&list) {
        let _ = st.remove(&list).and_then(|()| st.sync_dir(&torn));
    }
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
    // Listed before the cut: if the open fails after cutting, the next open
    // that succeeds still reports it.
    let list = torn.join(UNREPORTED_FILE);
    let mut names = match st.exists(&list) {
        true => st
            .open(&list, false)
            .and_then(|f| crate::storage::read_whole(&*f))
            .ctx(|| format!("reading {}", list.display()))?,
        false => Vec::new(),
    };
    names.extend_from_slice(name.as_bytes());
    names.push(b'\n');
    write_atomically(st, &torn, UNREPORTED_FILE, &names).ctx(|| format!("writing {}", list.display()))?;
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
