//! The subject key store of an open store (`subjects.key`): one random key per
//! subject, created durably before any event sealed under it is written, and
//! destroyed durably by a shred (see format.md, "Subject key store").
//!
//! This module owns the file and the keys in memory; reads look keys up here
//! by the id a sealed event names. It must never read or write a segment.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, IoContext, Result};
use crate::format::subjects::{
    self, KeyFileError, KeyId, KeyRecord, Lookup, SUBJECT_RECORD, SUBJECTS_FILE, SUBJECTS_VERSION, Secret,
};
use crate::storage::{Storage, StorageFile, read_whole, write_atomically};

/// What the key store knows of a key id.
pub(crate) enum KeyState {
    /// The key exists.
    Live(Secret),
    /// The key was shredded: the events sealed under it are erased.
    Shredded,
    /// No record of it at all: the key store lost it (damage).
    Unknown,
}

/// The keys in memory.
#[derive(Default)]
struct Keys {
    secret: Option<Secret>,
    /// Live key id of each subject, by its lookup hash.
    by_subject: HashMap<Lookup, KeyId>,
    /// Every live key, by id, with its subject's lookup hash.
    live: HashMap<KeyId, (Lookup, Secret)>,
    shredded: HashSet<KeyId>,
}

/// The open key store.
pub(crate) struct SubjectKeys {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    writable: bool,
    keys: RwLock<Keys>,
    /// The file open for appending records and its length; held while the
    /// file is written (new keys, shreds), so writes happen one at a time.
    file: Mutex<Option<(Arc<dyn StorageFile>, u64)>>,
    /// Set when a shred failed part way: the file on disk may or may not hold
    /// the keys it was destroying, so no key is created until the store is
    /// opened again (which reads what the disk holds).
    failed: std::sync::atomic::AtomicBool,
}

fn path_of(dir: &Path) -> PathBuf {
    dir.join(SUBJECTS_FILE)
}

fn random_error() -> Error {
    Error::io(
        "drawing a random key for a subject",
        std::io::Error::other("the operating system's random generator failed"),
    )
}

impl SubjectKeys {
    /// Loads `subjects.key` from `dir` if it exists. A torn last record (a key
    /// whose write never finished, so no event was acknowledged under it) is
    /// cut off when `writable`, and ignored otherwise.
    pub(crate) fn open(storage: Arc<dyn Storage>, dir: &Path, writable: bool) -> Result<Self> {
        let path = path_of(dir);
        let mut keys = Keys::default();
        let mut file = None;
        if storage.exists(&path) {
            let f = storage.open(&path, writable).ctx(|| format!("opening {}", path.display()))?;
            let bytes = read_whole(&*f).ctx(|| format!("reading {}", path.display()))?;
            let decoded = subjects::decode_file(&bytes).map_err(|e| match e {
                KeyFileError::Version(found) => Error::UnsupportedVersion {
                    file: path.clone(),
                    found,
                    supported: SUBJECTS_VERSION,
                },
                KeyFileError::NotKeyStore => Error::corruption(&path, 0, "not a subject key store (bad magic or too short)"),
                KeyFileError::HeaderChecksum => Error::corruption(&path, 0, "subject key store header checksum mismatch"),
                KeyFileError::Record(at) => Error::corruption(&path, at as u64, "subject key record damaged"),
            })?;
            if decoded.valid_len < bytes.len() && writable {
                f.set_len(decoded.valid_len as u64)
                    .and_then(|()| f.sync_data())
                    .ctx(|| format!("cutting the torn tail of {}", path.display()))?;
            }
            for id in &decoded.shredded {
                keys.shredded.insert(*id);
            }
            for r in decoded.keys {
                if keys.shredded.contains(&r.key_id) {
                    continue;
                }
                if let Some(old) = keys.by_subject.insert(r.lookup, r.key_id) {
                    keys.live.remove(&old);
                }
                keys.live.insert(r.key_id, (r.lookup, r.key));
            }
            keys.secret = Some(decoded.secret);
            if writable {
                file = Some((f, decoded.valid_len as u64));
            }
        }
        Ok(SubjectKeys {
            storage,
            dir: dir.to_path_buf(),
            writable,
            keys: RwLock::new(keys),
            file: Mutex::new(file),
            failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// What the store knows of the key `id`.
    pub(crate) fn key(&self, id: &KeyId) -> KeyState {
        let keys = self.keys.read();
        if let Some((_, k)) = keys.live.get(id) {
            KeyState::Live(k.clone())
        } else if keys.shredded.contains(id) {
            KeyState::Shredded
        } else {
            KeyState::Unknown
        }
    }

    /// The subject's live key, created (random) and made durable in
    /// `subjects.key` first if it has none: when this returns, the key
    /// survives any crash.
    pub(crate) fn key_for(&self, subject: &str) -> Result<(KeyId, Secret)> {
        if let Some(found) = self.lookup_live(subject) {
            return Ok(found);
        }
        if !self.writable {
            return Err(Error::ReadOnly {
                reason: "a read-only store cannot create a subject key".into(),
            });
        }
        let mut file = self.file.lock();
        if self.failed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::ReadOnly {
                reason: format!("a shred failed part way; open the store again before adding subjects ({SUBJECTS_FILE})"),
            });
        }
        // Another appender may have created it while this one waited.
        if let Some(found) = self.lookup_live(subject) {
            return Ok(found);
        }
        let path = path_of(&self.dir);
        let secret = match self.keys.read().secret.clone() {
            Some(s) => s,
            None => Secret::random().map_err(|_| random_error())?,
        };
        let rec = KeyRecord {
            lookup: subjects::lookup(&secret, subject),
            key_id: subjects::random_key_id().map_err(|_| random_error())?,
            key: Secret::random().map_err(|_| random_error())?,
        };
        match &*file {
            Some((f, len)) => {
                // A failed write leaves `len` where it was: the next record
                // overwrites whatever part of this one landed.
                f.write_all_at(&subjects::encode_key_record(&rec), *len)
                    .and_then(|()| f.sync_data())
                    .ctx(|| format!("writing a subject key to {}", path.display()))?;
                let next = *len + SUBJECT_RECORD as u64;
                *file = Some((f.clone(), next));
            }
            None => {
                // The first key: the whole file, written atomically (the directory synced too).
                let bytes = subjects::encode_file(&secret, std::slice::from_ref(&rec), &[]);
                write_atomically(&*self.storage, &self.dir, SUBJECTS_FILE, &bytes)
                    .ctx(|| format!("writing {}", path.display()))?;
                let f = self.storage.open(&path, true).ctx(|| format!("opening {}", path.display()))?;
                *file = Some((f, bytes.len() as u64));
            }
        }
        let mut keys = self.keys.write();
        keys.secret = Some(secret);
        keys.by_subject.insert(rec.lookup, rec.key_id);
        keys.live.insert(rec.key_id, (rec.lookup, rec.key.clone()));
        Ok((rec.key_id, rec.key))
    }

    /// True once the store has a key store (a subject was ever named).
    pub(crate) fn in_use(&self) -> bool {
        self.keys.read().secret.is_some()
    }

    /// The subject's live key, if it has one (never creates one).
    pub(crate) fn live_key(&self, subject: &str) -> Option<(KeyId, Secret)> {
        self.lookup_live(subject)
    }

    fn lookup_live(&self, subject: &str) -> Option<(KeyId, Secret)> {
        let keys = self.keys.read();
        let lookup = subjects::lookup(keys.secret.as_ref()?, subject);
        let id = keys.by_subject.get(&lookup)?;
        keys.live.get(id).map(|(_, k)| (*id, k.clone()))
    }

    /// Destroys the subject's key: `subjects.key` is rewritten without it
    /// (with a record that it was shredded) atomically and synced before this
    /// returns. Returns false if the subject had no key (nothing to erase).
    pub(crate) fn shred(&self, subject: &str) -> Result<bool> {
        if !self.writable {
            return Err(Error::ReadOnly {
                reason: "a read-only store cannot shred a subject".into(),
            });
        }
        let mut file = self.file.lock();
        let (bytes, gone) = {
            let keys = self.keys.read();
            let Some(secret) = keys.secret.clone() else {
                return Ok(false);
            };
            let lookup = subjects::lookup(&secret, subject);
            let gone: Vec<KeyId> = keys.live.iter().filter(|(_, (l, _))| *l == lookup).map(|(id, _)| *id).collect();
            if gone.is_empty() {
                return Ok(false);
            }
            let mut live: Vec<KeyRecord> = keys
                .live
                .iter()
                .filter(|(_, (l, _))| *l != lookup)
                .map(|(id, (l, k))| KeyRecord {
                    lookup: *l,
                    key_id: *id,
                    key: k.clone(),
                })
                .collect();
            live.sort_by_key(|a| a.key_id);
            let mut shredded: Vec<KeyId> = keys.shredded.iter().copied().chain(gone.iter().copied()).collect();
            shredded.sort();
            (subjects::encode_file(&secret, &live, &shredded), gone)
        };
        let path = path_of(&self.dir);
        let written = write_atomically(&*self.storage, &self.dir, SUBJECTS_FILE, &bytes)
            .and_then(|()| self.storage.open(&path, true))
            .ctx(|| format!("writing {}", path.display()));
        // Whether or not the rewrite reached the disk, the keys are dropped
        // from memory: nothing more is sealed under a key that may be gone
        // from disk. A failure leaves the file unknown: no new key until reopen.
        let mut keys = self.keys.write();
        for id in gone {
            if let Some((l, _)) = keys.live.remove(&id) {
                keys.by_subject.remove(&l);
            }
            keys.shredded.insert(id);
        }
        match written {
            Ok(f) => {
                // The old file handle names the replaced file: append to the new one.
                *file = Some((f, bytes.len() as u64));
                Ok(true)
            }
            Err(e) => {
                *file = None;
                self.failed.store(true, std::sync::atomic::Ordering::Release);
                Err(e)
            }
        }
    }

    /// The whole key store as it is now, encoded (for a backup); `None` if no key was ever made.
    pub(crate) fn snapshot(&self) -> Option<Vec<u8>> {
        let _file = self.file.lock();
        let keys = self.keys.read();
        let secret = keys.secret.as_ref()?;
        let mut live: Vec<KeyRecord> = keys
            .live
            .iter()
            .map(|(id, (l, k))| KeyRecord {
                lookup: *l,
                key_id: *id,
                key: k.clone(),
            })
            .collect();
        live.sort_by_key(|a| a.key_id);
        let mut shredded: Vec<KeyId> = keys.shredded.iter().copied().collect();
        shredded.sort();
        Some(subjects::encode_file(secret, &live, &shredded))
    }
}
