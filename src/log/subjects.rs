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
    /// Lookup hashes of the subjects whose shred failed to reach the disk
    /// (their keys are already gone from memory): a retry answers for them.
    pending: HashSet<Lookup>,
    /// Damaged records of the file (full length, bad checksum): their
    /// offset in the file as it is now and their bytes, carried over
    /// verbatim by every rewrite so that no rewrite destroys them.
    damaged: Vec<(u64, [u8; SUBJECT_RECORD])>,
}

impl Keys {
    /// The whole key store as memory holds it, without the keys `without`
    /// (which are listed as shredded), encoded; the damaged records follow
    /// verbatim, but for those at the indexes `drop_damaged`. Also returns
    /// the offsets the damaged records kept land at.
    fn encode(&self, secret: &Secret, without: &[KeyId], drop_damaged: &[usize]) -> (Vec<u8>, Vec<u64>) {
        let mut live: Vec<KeyRecord> = self
            .live
            .iter()
            .filter(|(id, _)| !without.contains(id))
            .map(|(id, (l, k))| KeyRecord {
                lookup: *l,
                key_id: *id,
                key: k.clone(),
            })
            .collect();
        live.sort_by_key(|a| a.key_id);
        let mut shredded: Vec<KeyId> = self.shredded.iter().chain(without.iter()).copied().collect();
        shredded.sort();
        shredded.dedup();
        let mut bytes = subjects::encode_file(secret, &live, &shredded);
        let mut offsets = Vec::with_capacity(self.damaged.len());
        for (i, (_, raw)) in self.damaged.iter().enumerate() {
            if drop_damaged.contains(&i) {
                continue;
            }
            offsets.push(bytes.len() as u64);
            bytes.extend_from_slice(raw);
        }
        (bytes, offsets)
    }
}

/// A file holding key records moved out of `subjects.key` (see
/// [`SubjectKeys::records_aside`]) and a subject's records in it.
struct Aside {
    path: PathBuf,
    /// The file's bytes without the subject's records.
    kept: Vec<u8>,
    /// The key ids those records name.
    key_ids: Vec<KeyId>,
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
    /// Why the file's header did not decode, and the file's bytes as read,
    /// for a read-only open that then went on with no key (the header is at
    /// offset 0). A backup copies those bytes as they are.
    header_damage: Option<(String, Vec<u8>)>,
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
    /// Loads `subjects.key` from `dir` if it exists. A torn last record
    /// (shorter than a record: a key whose write never finished, so no event
    /// was acknowledged under it) is saved in `torn/` and cut off when
    /// `writable`, and ignored otherwise. A damaged record (full length, bad
    /// checksum) is left in the file, skipped and remembered (see
    /// [`SubjectKeys::damaged`]): the events sealed under the key it held read
    /// as damage, every other key stays usable. A header that does not decode
    /// (bad magic or checksum) fails a writable open; a read-only one goes on
    /// with no key (see [`SubjectKeys::header_damage`]).
    pub(crate) fn open(storage: Arc<dyn Storage>, dir: &Path, writable: bool) -> Result<Self> {
        let path = path_of(dir);
        let mut keys = Keys::default();
        let mut file = None;
        if storage.exists(&path) {
            let f = storage
                .open(&path, writable)
                .ctx(|| format!("opening {}", path.display()))?;
            let bytes = read_whole(&*f).ctx(|| format!("reading {}", path.display()))?;
            let decoded = match subjects::decode_file(&bytes) {
                Ok(d) => d,
                Err(KeyFileError::Version(found)) => {
                    return Err(Error::UnsupportedVersion {
                        file: path.clone(),
                        found,
                        supported: SUBJECTS_VERSION,
                    });
                }
                Err(e) => {
                    let reason = match e {
                        KeyFileError::HeaderChecksum => "subject key store header checksum mismatch",
                        _ => "not a subject key store (bad magic or too short)",
                    };
                    if writable {
                        // New keys and shreds look subjects up under the
                        // header's secret: with it unknown, a shred could
                        // miss a subject's key and a new key could not be
                        // matched to its subject later.
                        return Err(Error::corruption(
                            &path,
                            0,
                            format!(
                                "{reason}: a writable open refuses it (shredding and new keys need the lookup secret it holds); \
                                 open the store read-only to read what needs no key, and run `annal repair`"
                            ),
                        ));
                    }
                    // A reader goes on with no key at all: the events sealed
                    // under a key read as damage, every other event reads.
                    return Ok(SubjectKeys {
                        storage,
                        dir: dir.to_path_buf(),
                        writable,
                        keys: RwLock::new(keys),
                        file: Mutex::new(None),
                        failed: std::sync::atomic::AtomicBool::new(false),
                        header_damage: Some((reason.to_string(), bytes)),
                    });
                }
            };
            if decoded.valid_len < bytes.len() && writable {
                let offset = decoded.valid_len as u64;
                let tail = &bytes[decoded.valid_len..];
                // Reported by the open (see `damage::unreported_cuts`).
                crate::log::damage::save_torn_bytes(&*storage, dir, &path, SUBJECTS_FILE, tail, offset)?;
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
            for at in decoded.damaged {
                let mut raw = [0u8; SUBJECT_RECORD];
                if let Some(b) = bytes.get(at..at + SUBJECT_RECORD) {
                    raw.copy_from_slice(b);
                }
                keys.damaged.push((at as u64, raw));
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
            header_damage: None,
        })
    }

    /// Why the header of `subjects.key` did not decode, if a read-only open
    /// went on without its keys (a writable open refuses such a file).
    pub(crate) fn header_damage(&self) -> Option<&str> {
        self.header_damage.as_ref().map(|(reason, _)| reason.as_str())
    }

    /// The path of `subjects.key` and the offsets of its damaged records
    /// (full length, bad checksum), as the file is now.
    pub(crate) fn damaged(&self) -> (PathBuf, Vec<u64>) {
        (
            path_of(&self.dir),
            self.keys.read().damaged.iter().map(|(at, _)| *at).collect(),
        )
    }

    /// After a failed rewrite (the file on disk unknown), writes the state
    /// memory holds out again, atomically; on success the store is no longer
    /// failed and `file` names the new file. Does nothing if not failed.
    fn recover_failed(&self, file: &mut Option<(Arc<dyn StorageFile>, u64)>) -> Result<()> {
        if !self.failed.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let mut keys = self.keys.write();
        let Some(secret) = keys.secret.clone() else {
            return Ok(());
        };
        let (bytes, offsets) = keys.encode(&secret, &[], &[]);
        let path = path_of(&self.dir);
        write_atomically(&*self.storage, &self.dir, SUBJECTS_FILE, &bytes)
            .and_then(|()| self.storage.open(&path, true))
            .map(|f| *file = Some((f, bytes.len() as u64)))
            .ctx(|| {
                format!(
                    "writing {} again after a failed shred (open the store again and shred again)",
                    path.display()
                )
            })?;
        for (d, at) in keys.damaged.iter_mut().zip(offsets) {
            d.0 = at;
        }
        self.failed.store(false, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// What the store knows of the key `id`.
    pub(crate) fn key(&self, id: &KeyId) -> KeyState {
        // Events that arrived erased are erased whatever the file says: their
        // record (written for readers that do not know the id) may be lost.
        if *id == subjects::ARRIVED_ERASED {
            return KeyState::Shredded;
        }
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
        // A shred failed part way: the state memory holds reaches the disk
        // again before any key is added to it.
        self.recover_failed(&mut file)?;
        // Another appender may have created it while this one waited.
        if let Some(found) = self.lookup_live(subject) {
            return Ok(found);
        }
        let secret = match self.keys.read().secret.clone() {
            Some(s) => s,
            None => Secret::random().map_err(|_| random_error())?,
        };
        let rec = KeyRecord {
            lookup: subjects::lookup(&secret, subject),
            key_id: subjects::random_key_id().map_err(|_| random_error())?,
            key: Secret::random().map_err(|_| random_error())?,
        };
        self.append_record(
            &mut file,
            &subjects::encode_key_record(&rec),
            || subjects::encode_file(&secret, std::slice::from_ref(&rec), &[]),
            "a subject key",
        )?;
        let mut keys = self.keys.write();
        keys.secret = Some(secret);
        keys.by_subject.insert(rec.lookup, rec.key_id);
        keys.live.insert(rec.key_id, (rec.lookup, rec.key.clone()));
        Ok((rec.key_id, rec.key))
    }

    /// Makes sure [`subjects::ARRIVED_ERASED`] is listed as shredded, durably
    /// in `subjects.key` (created if the store has none), before any event
    /// that arrived erased is written: such events then read as erased, and
    /// verify finds no key missing.
    pub(crate) fn ensure_arrived_erased(&self) -> Result<()> {
        let id = subjects::ARRIVED_ERASED;
        if self.keys.read().shredded.contains(&id) {
            return Ok(());
        }
        if !self.writable {
            return Err(Error::ReadOnly {
                reason: "a read-only store cannot record an erased event's key".into(),
            });
        }
        let mut file = self.file.lock();
        self.recover_failed(&mut file)?;
        if self.keys.read().shredded.contains(&id) {
            return Ok(());
        }
        let secret = match self.keys.read().secret.clone() {
            Some(s) => s,
            None => Secret::random().map_err(|_| random_error())?,
        };
        self.append_record(
            &mut file,
            &subjects::encode_shredded_record(&id),
            || subjects::encode_file(&secret, &[], std::slice::from_ref(&id)),
            "a shredded key record",
        )?;
        let mut keys = self.keys.write();
        keys.secret = Some(secret);
        keys.shredded.insert(id);
        Ok(())
    }

    /// Appends one `record` to `subjects.key` and syncs it; with no file yet,
    /// writes the `whole` file atomically instead (the directory synced too).
    /// A failed append leaves the file's length where it was: the next
    /// record overwrites whatever part of this one landed.
    fn append_record(
        &self,
        file: &mut Option<(Arc<dyn StorageFile>, u64)>,
        record: &[u8],
        whole: impl FnOnce() -> Vec<u8>,
        what: &str,
    ) -> Result<()> {
        let path = path_of(&self.dir);
        match file {
            Some((f, len)) => {
                f.write_all_at(record, *len)
                    .and_then(|()| f.sync_data())
                    .ctx(|| format!("writing {what} to {}", path.display()))?;
                *len += SUBJECT_RECORD as u64;
            }
            None => {
                let bytes = whole();
                write_atomically(&*self.storage, &self.dir, SUBJECTS_FILE, &bytes)
                    .ctx(|| format!("writing {}", path.display()))?;
                let f = self
                    .storage
                    .open(&path, true)
                    .ctx(|| format!("opening {}", path.display()))?;
                *file = Some((f, bytes.len() as u64));
            }
        }
        Ok(())
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
    /// returns; the subject's records moved aside (see
    /// [`SubjectKeys::records_aside`]) are removed too, after the file lists
    /// their key ids as shredded. Returns false if the subject had no key
    /// and nothing aside (nothing to erase).
    ///
    /// After a shred whose rewrite failed, the keys it destroyed are gone from
    /// memory but maybe not from disk: the next shred (of any subject) writes
    /// the whole state out again and, for a subject whose shred failed,
    /// answers true once that reached the disk. It never answers false while
    /// the disk may still hold a key memory has dropped.
    pub(crate) fn shred(&self, subject: &str) -> Result<bool> {
        if !self.writable {
            return Err(Error::ReadOnly {
                reason: "a read-only store cannot shred a subject".into(),
            });
        }
        let mut file = self.file.lock();
        let failed = self.failed.load(std::sync::atomic::Ordering::Acquire);
        let Some(secret) = self.keys.read().secret.clone() else {
            return Ok(false);
        };
        let lookup = subjects::lookup(&secret, subject);
        // Records of the subject that repair moved to quarantine (or that
        // recovery saved in `torn/`) may hold its key: they go too.
        let aside = self.records_aside(&lookup)?;
        let (bytes, offsets, gone, damaged_of, was_pending) = {
            let keys = self.keys.read();
            let mut gone: Vec<KeyId> = keys
                .live
                .iter()
                .filter(|(_, (l, _))| *l == lookup)
                .map(|(id, _)| *id)
                .collect();
            // A damaged record whose lookup field still reads as this
            // subject's may hold its key intact: it goes too, and its key id
            // is listed as shredded (its events read erased, not damaged).
            let damaged_of: Vec<usize> = keys
                .damaged
                .iter()
                .enumerate()
                .filter(|(_, (_, raw))| raw.get(1..33) == Some(&lookup[..]))
                .map(|(i, _)| i)
                .collect();
            for &i in &damaged_of {
                let mut id = KeyId::default();
                id.copy_from_slice(&keys.damaged[i].1[33..33 + subjects::KEY_ID_LEN]);
                gone.push(id);
            }
            // Their key ids are listed as shredded: the events sealed under
            // them read erased, no longer as damage.
            gone.extend(aside.iter().flat_map(|a| a.key_ids.iter().copied()));
            let was_pending = keys.pending.contains(&lookup);
            if gone.is_empty() && !failed {
                drop(keys);
                self.remove_aside(&aside)?;
                // A subject whose failed shred reached the disk since (with
                // a later rewrite) answers as that shred would have.
                return Ok(was_pending || !aside.is_empty());
            }
            let (bytes, offsets) = keys.encode(&secret, &gone, &damaged_of);
            (bytes, offsets, gone, damaged_of, was_pending)
        };
        let path = path_of(&self.dir);
        let written = write_atomically(&*self.storage, &self.dir, SUBJECTS_FILE, &bytes)
            .and_then(|()| self.storage.open(&path, true))
            .ctx(|| format!("writing {}", path.display()));
        // Whether or not the rewrite reached the disk, the keys are dropped
        // from memory: nothing more is sealed under a key that may be gone
        // from disk. A failure leaves the file unknown: the next shred or new
        // key writes the whole state out again first.
        let mut keys = self.keys.write();
        for id in &gone {
            if let Some((l, _)) = keys.live.remove(id) {
                keys.by_subject.remove(&l);
            }
            keys.shredded.insert(*id);
        }
        for &i in damaged_of.iter().rev() {
            keys.damaged.remove(i);
        }
        match written {
            Ok(f) => {
                // The old file handle names the replaced file: append to the new one.
                *file = Some((f, bytes.len() as u64));
                for (d, at) in keys.damaged.iter_mut().zip(offsets) {
                    d.0 = at;
                }
                self.failed.store(false, std::sync::atomic::Ordering::Release);
                drop(keys);
                // Once the key ids are listed as shredded: a failure here
                // leaves the records aside, and a retry finds them again.
                self.remove_aside(&aside)?;
                Ok(!gone.is_empty() || was_pending)
            }
            Err(e) => {
                if !gone.is_empty() {
                    keys.pending.insert(lookup);
                }
                *file = None;
                self.failed.store(true, std::sync::atomic::Ordering::Release);
                Err(e)
            }
        }
    }

    /// The key records with `lookup` that were moved out of the file: by
    /// repair (`quarantine/<time>/subjects.key-removed.bin`, damaged records
    /// and a torn last record) and by recovery (`torn/subjects.key-*.bin`, a
    /// torn last record). Each file holds records (85 bytes) back to back,
    /// the last one maybe shorter; a record matches if its lookup field
    /// (bytes 1..33) is whole and equals `lookup`, wherever it starts (a
    /// file that lost or gained bytes is no longer in whole-record steps).
    fn records_aside(&self, lookup: &Lookup) -> Result<Vec<Aside>> {
        let st = &*self.storage;
        let mut files = Vec::new();
        let quarantine = self.dir.join(crate::log::damage::QUARANTINE_DIR);
        if st.exists(&quarantine) {
            for run in st
                .list(&quarantine)
                .ctx(|| format!("listing {}", quarantine.display()))?
            {
                let f = quarantine.join(run).join(format!("{SUBJECTS_FILE}-removed.bin"));
                if st.exists(&f) {
                    files.push(f);
                }
            }
        }
        let torn = self.dir.join(crate::log::damage::TORN_DIR);
        if st.exists(&torn) {
            for name in st.list(&torn).ctx(|| format!("listing {}", torn.display()))? {
                if name.starts_with(&format!("{SUBJECTS_FILE}-")) && name.ends_with(".bin") {
                    files.push(torn.join(name));
                }
            }
        }
        let mut out = Vec::new();
        for path in files {
            let bytes = st.open(&path, false).and_then(|f| read_whole(&*f)).ctx(|| {
                format!(
                    "reading {} (set aside by repair or recovery, it may hold key records; no shred can \
                     finish while it cannot be read: delete it if it is not needed)",
                    path.display()
                )
            })?;
            // The subject's records are found wherever they start (a file
            // that lost bytes in its middle is no longer in steps of whole
            // records): a record holds the 32-byte lookup at its bytes 1..33,
            // which no other bytes match by chance.
            let (mut kept, mut key_ids, mut found) = (Vec::new(), Vec::new(), false);
            let mut at = 0;
            while at < bytes.len() {
                if bytes.get(at + 1..at + 33) == Some(&lookup[..]) {
                    found = true;
                    if let Some(id) = bytes
                        .get(at + 33..at + 33 + subjects::KEY_ID_LEN)
                        .and_then(|b| KeyId::try_from(b).ok())
                    {
                        key_ids.push(id);
                    }
                    at += SUBJECT_RECORD;
                    continue;
                }
                kept.push(bytes[at]);
                at += 1;
            }
            if found {
                out.push(Aside { path, kept, key_ids });
            }
        }
        Ok(out)
    }

    /// Rewrites each file of `aside` without the subject's records
    /// (atomically, or removes it if nothing else is left), syncing its folder.
    fn remove_aside(&self, aside: &[Aside]) -> Result<()> {
        let st = &*self.storage;
        for a in aside {
            let (Some(folder), Some(name)) = (a.path.parent(), a.path.file_name().and_then(|n| n.to_str())) else {
                continue;
            };
            let done = if a.kept.is_empty() {
                st.remove(&a.path).and_then(|()| st.sync_dir(folder))
            } else {
                write_atomically(st, folder, name, &a.kept)
            };
            done.ctx(|| format!("removing a shredded subject's key records from {}", a.path.display()))?;
        }
        Ok(())
    }

    /// The whole key store as it is now, encoded (for a backup); `None` if no
    /// key was ever made. A file whose header did not decode is copied as it
    /// was read, damage and all: its keys are still there for `repair`.
    pub(crate) fn snapshot(&self) -> Option<Vec<u8>> {
        if let Some((_, bytes)) = &self.header_damage {
            return Some(bytes.clone());
        }
        let _file = self.file.lock();
        let keys = self.keys.read();
        let secret = keys.secret.as_ref()?;
        Some(keys.encode(secret, &[], &[]).0)
    }
}
