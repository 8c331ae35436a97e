//! A data directory's identity: the identity file (`meta`) that makes a
//! directory a store, written for a new one, and the refusal of a directory
//! that holds anything else.
//!
//! This module writes only the identity file of a new store; it must never
//! touch segments, indexes or checkpoints.

use crate::error::{Error, IoContext, Result};
use crate::event::now_micros;
use crate::format::checkpoint::{META_FILE, StoreMeta};
use crate::storage::{Storage, write_atomically};
use std::path::Path;

/// Name of the lock file.
pub const LOCK_FILE: &str = "LOCK";

/// Refuses a directory with no identity file that holds anything but annal's own files.
pub(super) fn refuse_foreign(st: &dyn Storage, dir: &Path) -> Result<()> {
    if st.exists(&dir.join(META_FILE)) {
        return Ok(());
    }
    let foreign: Vec<String> = st
        .list(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .into_iter()
        .filter(|n| n != LOCK_FILE && n != &format!("{META_FILE}.tmp"))
        .collect();
    match foreign.first() {
        Some(name) => Err(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: format!("it holds {name:?} but no {META_FILE}"),
        }),
        None => Ok(()),
    }
}

/// Refuses directories that are not annal stores; writes the identity of a new one.
pub(super) fn check_identity(st: &dyn Storage, dir: &Path) -> Result<()> {
    let meta_path = dir.join(META_FILE);
    if st.exists(&meta_path) {
        let f = st
            .open(&meta_path, false)
            .ctx(|| format!("opening {}", meta_path.display()))?;
        let len = f.len().ctx(|| format!("reading {}", meta_path.display()))?;
        let mut b = vec![0u8; len.min(4096) as usize];
        f.read_exact_at(&mut b, 0)
            .ctx(|| format!("reading {}", meta_path.display()))?;
        StoreMeta::decode(&b, &meta_path)?;
        return Ok(());
    }
    refuse_foreign(st, dir)?;
    let meta = StoreMeta {
        store_id: uuid::Uuid::new_v4(),
        created_micros: now_micros(),
    };
    write_atomically(st, dir, META_FILE, &meta.encode()).ctx(|| format!("writing {META_FILE}"))
}
