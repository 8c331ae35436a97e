//! A simulated, in-memory [`Storage`] for crash and fault tests.
//!
//! It keeps, for every file, the bytes the process sees and the bytes that would
//! survive a power cut (those made durable by `sync_data`), and for every
//! directory the entries made durable by `sync_dir`. A test can:
//! - arm a crash point: after N more mutating operations the "machine" stops,
//!   the N-th write landing only partly, and every later call fails;
//! - [`SimStorage::crash`]: drop what was not synced, or keep a random part of
//!   it (a torn write, possibly with garbage at its end), deterministically from a seed;
//! - flip bits in durable bytes; limit free space so writes fail with "storage full".
//!
//! It must stay deterministic for a given seed and sequence of calls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{LockGuard, Mapped, Storage, StorageFile};

/// A small deterministic random generator (splitmix64).
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// Creates a generator from a seed.
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A number in `0..n` (0 when `n` is 0), as an index.
    fn below_len(&mut self, n: usize) -> usize {
        // Below `n`, a usize, so the conversion cannot fail.
        usize::try_from(self.below(n as u64)).unwrap_or(0)
    }
}

#[derive(Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Changes since the last sync, in order; a torn crash keeps a prefix of them.
    unsynced: Vec<Change>,
}

enum Change {
    Write(usize, Vec<u8>),
    SetLen(usize),
}

/// A random prefix of a write, sometimes ending in garbage; other changes whole.
fn torn_part(change: &Change, rng: &mut SimRng) -> Change {
    match change {
        Change::Write(at, bytes) => {
            let part = rng.below_len(bytes.len() + 1);
            let mut partial = bytes[..part].to_vec();
            if part > 0 && rng.below(4) == 0 {
                let garbage = part.min(1 + rng.below_len(16));
                for b in &mut partial[part - garbage..] {
                    *b = rng.next_u64().to_le_bytes()[0];
                }
            }
            Change::Write(*at, partial)
        }
        Change::SetLen(len) => Change::SetLen(*len),
    }
}

fn apply(data: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write(at, bytes) => {
            if data.len() < at + bytes.len() {
                data.resize(at + bytes.len(), 0);
            }
            data[*at..at + bytes.len()].copy_from_slice(bytes);
        }
        Change::SetLen(len) => data.resize(*len, 0),
    }
}

#[derive(Default)]
struct State {
    /// Names the process sees.
    live: BTreeMap<PathBuf, u64>,
    /// Names that survive a crash.
    durable: BTreeMap<PathBuf, u64>,
    dirs: HashSet<PathBuf>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    locks: HashSet<PathBuf>,
    /// Bumped by every crash; handles from an older generation fail.
    generation: u64,
    /// Mutating operations left before the simulated power cut.
    ops_until_crash: Option<u64>,
    /// Set once the power cut has happened.
    dead: bool,
    /// Free bytes left (None: unlimited).
    free_bytes: Option<u64>,
    /// When set, every change fails with "permission denied" (a read-only mount).
    read_only: bool,
    rng: Option<SimRng>,
    /// Live faults: the n-th file sync, write or read from when it was armed fails
    /// with EIO while the process keeps running (1 = the next one).
    faults: Faults,
    /// Counters for tests.
    mutating_ops: u64,
    syncs: u64,
}

/// Countdowns of the live faults of a simulated disk.
#[derive(Default)]
struct Faults {
    sync: Option<u64>,
    write: Option<u64>,
    read: Option<u64>,
}

/// Counts one operation against an armed fault; true if this one must fail.
fn fault_hits(countdown: &mut Option<u64>) -> bool {
    match countdown {
        Some(1) => {
            *countdown = None;
            true
        }
        Some(n) => {
            *n -= 1;
            false
        }
        None => false,
    }
}

/// A simulated EIO, with the OS error code, as a failing disk reports it.
fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

impl State {
    fn check_alive(&self, generation: u64) -> io::Result<()> {
        if self.dead || generation != self.generation {
            Err(io::Error::other("simulated power loss"))
        } else {
            Ok(())
        }
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "simulated read-only file system",
            ))
        } else {
            Ok(())
        }
    }

    /// Counts a mutating operation; returns true if it is the one that crashes.
    fn tick(&mut self) -> bool {
        self.mutating_ops += 1;
        match self.ops_until_crash.as_mut() {
            Some(0) => true,
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        }
    }

    /// Bytes of the files the namespace still reaches (removed or replaced ones are freed).
    fn used_bytes(&self) -> u64 {
        let reachable: HashSet<u64> = self.live.values().copied().collect();
        self.inodes
            .iter()
            .filter(|(id, _)| reachable.contains(id))
            .map(|(_, i)| i.current.len() as u64)
            .sum()
    }
}

/// The simulated storage; cheap to clone (clones share the same disk).
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStorage").finish_non_exhaustive()
    }
}

struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    generation: u64,
    write: bool,
}

struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if st.generation == self.generation {
            st.locks.remove(&self.path);
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
}

impl SimStorage {
    /// A new, empty simulated disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms a power cut: the `n`-th mutating operation from now (1 = the next one)
    /// is the last; a write at that point lands only partly (a random prefix, from `seed`).
    pub fn crash_after_ops(&self, n: u64, seed: u64) {
        let mut st = self.state.lock();
        st.ops_until_crash = Some(n.max(1));
        st.rng = Some(SimRng::new(seed));
    }

    /// True once an armed power cut has happened.
    pub fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// Number of mutating operations (writes, syncs, creates, renames, removals) so far.
    pub fn mutating_ops(&self) -> u64 {
        self.state.lock().mutating_ops
    }

    /// Number of `sync_data` and `sync_dir` calls so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Makes the whole disk read-only (or writable again): every change fails with "permission denied".
    pub fn set_read_only(&self, read_only: bool) {
        self.state.lock().read_only = read_only;
    }

    /// Makes the `n`-th file sync from now (1 = the next one) fail with an I/O
    /// error, as a disk failing writeback does: the file's unsynced changes never
    /// become durable (they vanish at the next crash), while the process still
    /// sees them and a later sync succeeds, on nothing. The process keeps running.
    pub fn fail_nth_sync(&self, n: u64) {
        self.state.lock().faults.sync = Some(n.max(1));
    }

    /// Makes the `n`-th file write from now fail with an I/O error, nothing of it written.
    pub fn fail_nth_write(&self, n: u64) {
        self.state.lock().faults.write = Some(n.max(1));
    }

    /// Makes the `n`-th file read from now fail with an I/O error.
    pub fn fail_nth_read(&self, n: u64) {
        self.state.lock().faults.read = Some(n.max(1));
    }

    /// Limits the free space: writes that would grow the disk past `bytes` more fail with "storage full".
    pub fn set_free_space(&self, bytes: Option<u64>) {
        let mut st = self.state.lock();
        st.free_bytes = bytes.map(|b| st.used_bytes() + b);
    }

    /// Simulates a power cut and restart. Without `torn`, unsynced directory
    /// entries vanish and each file keeps exactly its durable bytes. With `torn`,
    /// each unsynced directory change survives or not by chance, and each file
    /// keeps its durable bytes plus, by chance, either a prefix of its unsynced
    /// changes in order (the next landing partly) or a random subset of them
    /// (as reordered sector writes), parts of writes sometimes ending in garbage.
    /// Open handles and locks from before the crash stop working.
    pub fn crash(&self, seed: u64, torn: bool) {
        let mut st = self.state.lock();
        let mut rng = SimRng::new(seed);
        // Directory changes not yet synced may or may not have reached the disk
        // (file systems often persist them early); torn crashes decide each by chance.
        let mut names = st.durable.clone();
        if torn {
            let live = st.live.clone();
            for (path, id) in &live {
                if names.get(path) != Some(id) && rng.below(2) == 0 {
                    names.insert(path.clone(), *id);
                }
            }
            let gone: Vec<PathBuf> = names.keys().filter(|p| !live.contains_key(*p)).cloned().collect();
            for path in gone {
                if rng.below(2) == 0 {
                    names.remove(&path);
                }
            }
        }
        st.live = names.clone();
        st.durable = names;
        let reachable: HashSet<u64> = st.live.values().copied().collect();
        st.inodes.retain(|id, _| reachable.contains(id));
        for inode in st.inodes.values_mut() {
            let mut next = inode.durable.clone();
            if torn && !inode.unsynced.is_empty() {
                if rng.below(2) == 0 {
                    // In order: a prefix of the changes lands, the next one partly.
                    let keep = rng.below_len(inode.unsynced.len() + 1);
                    for change in &inode.unsynced[..keep] {
                        apply(&mut next, change);
                    }
                    if let Some(change) = inode.unsynced.get(keep) {
                        apply(&mut next, &torn_part(change, &mut rng));
                    }
                } else {
                    // Reordered, as a disk may write sectors: each change lands, lands
                    // partly, or is lost, independently of the others.
                    for change in &inode.unsynced {
                        match rng.below(3) {
                            0 => {}
                            1 => apply(&mut next, change),
                            _ => apply(&mut next, &torn_part(change, &mut rng)),
                        }
                    }
                }
            }
            inode.current = next.clone();
            inode.durable = next;
            inode.unsynced.clear();
        }
        st.locks.clear();
        st.generation += 1;
        st.dead = false;
        st.ops_until_crash = None;
    }

    /// Simulates the process being killed (`kill -9`) while the machine stays up:
    /// the operating system keeps every write the process made, synced or not,
    /// and every directory change; open handles and locks stop working.
    pub fn kill_process(&self) {
        let mut st = self.state.lock();
        st.durable = st.live.clone();
        for inode in st.inodes.values_mut() {
            inode.durable = inode.current.clone();
            inode.unsynced.clear();
        }
        st.locks.clear();
        st.generation += 1;
        st.dead = false;
        st.ops_until_crash = None;
    }

    /// Flips one bit of a file, both in what the process sees and in durable bytes.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut st = self.state.lock();
        let id = *st.live.get(path).ok_or_else(|| not_found(path))?;
        let inode = st.inodes.get_mut(&id).ok_or_else(|| not_found(path))?;
        let Some(off) = usize::try_from(offset).ok().filter(|off| *off < inode.current.len()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "offset past end"));
        };
        inode.current[off] ^= 1 << (bit % 8);
        if off < inode.durable.len() {
            inode.durable[off] ^= 1 << (bit % 8);
        }
        Ok(())
    }

    /// The bytes of a file as the process sees them (for tests).
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.state.lock();
        let id = st.live.get(path).ok_or_else(|| not_found(path))?;
        Ok(st.inodes[id].current.clone())
    }

    /// Replaces a file's bytes, durably (for building damaged stores in tests and fuzzing).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        if let Some(parent) = path.parent() {
            st.dirs.insert(parent.to_path_buf());
        }
        let id = match st.live.get(path) {
            Some(id) => *id,
            None => {
                st.next_inode += 1;
                let id = st.next_inode;
                st.live.insert(path.to_path_buf(), id);
                st.durable.insert(path.to_path_buf(), id);
                id
            }
        };
        let inode = st.inodes.entry(id).or_default();
        inode.current = bytes.to_vec();
        inode.durable = bytes.to_vec();
        inode.unsynced.clear();
        Ok(())
    }
}

impl StorageFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_alive(self.generation)?;
        if fault_hits(&mut st.faults.read) {
            return Err(eio());
        }
        let data = &st.inodes[&self.inode].current;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start.checked_add(buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.write {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only handle"));
        }
        let mut st = self.state.lock();
        st.check_alive(self.generation)?;
        st.check_writable()?;
        if fault_hits(&mut st.faults.write) {
            return Err(eio());
        }
        let start = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past what memory holds"))?;
        let end = start + buf.len();
        let cur_len = st.inodes[&self.inode].current.len();
        if let Some(limit) = st.free_bytes {
            let growth = end.saturating_sub(cur_len) as u64;
            if st.used_bytes() + growth > limit {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "simulated full disk"));
            }
        }
        let crashing = st.tick();
        let len = if crashing {
            let mut rng = st.rng.take().unwrap_or_else(|| SimRng::new(0));
            let keep = rng.below_len(buf.len() + 1);
            st.rng = Some(rng);
            keep
        } else {
            buf.len()
        };
        let inode = st.inodes.get_mut(&self.inode).expect("inode of open file");
        let change = Change::Write(start, buf[..len].to_vec());
        apply(&mut inode.current, &change);
        inode.unsynced.push(change);
        if crashing {
            st.dead = true;
            return Err(io::Error::other("simulated power loss"));
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_alive(self.generation)?;
        if st.tick() {
            st.dead = true;
            return Err(io::Error::other("simulated power loss"));
        }
        st.syncs += 1;
        let failed = fault_hits(&mut st.faults.sync);
        let inode = st.inodes.get_mut(&self.inode).expect("inode of open file");
        if failed {
            // Writeback failed: the pages are marked clean without reaching the disk.
            inode.unsynced.clear();
            return Err(eio());
        }
        // What reaches the disk is what changed since the last sync; changes whose
        // writeback failed before stay lost even though the process sees them.
        for change in std::mem::take(&mut inode.unsynced) {
            apply(&mut inode.durable, &change);
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let st = self.state.lock();
        st.check_alive(self.generation)?;
        Ok(st.inodes[&self.inode].current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length past what memory holds"))?;
        let mut st = self.state.lock();
        st.check_alive(self.generation)?;
        st.check_writable()?;
        if st.tick() {
            st.dead = true;
            return Err(io::Error::other("simulated power loss"));
        }
        let inode = st.inodes.get_mut(&self.inode).expect("inode of open file");
        let change = Change::SetLen(len);
        apply(&mut inode.current, &change);
        inode.unsynced.push(change);
        Ok(())
    }
}

impl SimStorage {
    fn mutate(&self, f: impl FnOnce(&mut State) -> io::Result<()>) -> io::Result<()> {
        let mut st = self.state.lock();
        let generation = st.generation;
        st.check_alive(generation)?;
        st.check_writable()?;
        if st.tick() {
            st.dead = true;
            return Err(io::Error::other("simulated power loss"));
        }
        f(&mut st)
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let generation = st.generation;
        st.check_alive(generation)?;
        if !st.dirs.contains(dir) {
            st.check_writable()?;
        }
        for anc in dir.ancestors() {
            st.dirs.insert(anc.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        st.check_alive(st.generation)?;
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let mut names: Vec<String> = st
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.extend(
            st.dirs
                .iter()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
        );
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.state.lock();
        st.live.contains_key(path) || st.dirs.contains(path)
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let st = self.state.lock();
        st.check_alive(st.generation)?;
        if write {
            st.check_writable()?;
        }
        let inode = *st.live.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            inode,
            generation: st.generation,
            write,
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut inode = 0;
        self.mutate(|st| {
            if st.live.contains_key(path) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            match path.parent() {
                Some(p) if st.dirs.contains(p) => {}
                _ => return Err(not_found(path)),
            }
            st.next_inode += 1;
            inode = st.next_inode;
            st.inodes.insert(inode, Inode::default());
            st.live.insert(path.to_path_buf(), inode);
            Ok(())
        })?;
        let generation = self.state.lock().generation;
        Ok(Arc::new(SimFile {
            state: self.state.clone(),
            inode,
            generation,
            write: true,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.mutate(|st| {
            st.live.remove(path).ok_or_else(|| not_found(path))?;
            Ok(())
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate(|st| {
            let id = st.live.remove(from).ok_or_else(|| not_found(from))?;
            st.live.insert(to.to_path_buf(), id);
            Ok(())
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.mutate(|st| {
            st.syncs += 1;
            st.durable.retain(|p, _| p.parent() != Some(dir));
            let entries: Vec<(PathBuf, u64)> = st
                .live
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir))
                .map(|(p, id)| (p.clone(), *id))
                .collect();
            st.durable.extend(entries);
            Ok(())
        })
    }

    fn map(&self, path: &Path) -> io::Result<Mapped> {
        let st = self.state.lock();
        st.check_alive(st.generation)?;
        let id = st.live.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(st.inodes[id].current.clone()))
    }

    fn available_space(&self, _dir: &Path) -> io::Result<u64> {
        let st = self.state.lock();
        Ok(st
            .free_bytes
            .map_or(u64::MAX, |limit| limit.saturating_sub(st.used_bytes())))
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut st = self.state.lock();
        st.check_alive(st.generation)?;
        // Like the real lock, which opens the lock file for writing.
        st.check_writable()?;
        if !st.locks.insert(path.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(SimLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
            generation: st.generation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_bytes_and_entries_vanish_on_crash() {
        let sim = SimStorage::new();
        let dir = Path::new("/d");
        sim.create_dir_all(dir).unwrap();
        let f = sim.create(&dir.join("a")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        sim.sync_dir(dir).unwrap();
        f.write_all_at(b" world", 5).unwrap();
        let g = sim.create(&dir.join("b")).unwrap();
        g.write_all_at(b"x", 0).unwrap();
        g.sync_data().unwrap();
        sim.crash(1, false);
        assert_eq!(sim.read_file(&dir.join("a")).unwrap(), b"hello");
        assert!(!sim.exists(&dir.join("b")), "entry never synced in its directory");
        assert!(f.len().is_err(), "handles from before the crash are dead");
    }

    #[test]
    fn armed_crash_tears_the_write_and_stops_everything() {
        let sim = SimStorage::new();
        let dir = Path::new("/d");
        sim.create_dir_all(dir).unwrap();
        let f = sim.create(&dir.join("a")).unwrap();
        sim.sync_dir(dir).unwrap();
        sim.crash_after_ops(1, 7);
        assert!(f.write_all_at(&[1u8; 100], 0).is_err());
        assert!(sim.is_dead());
        assert!(f.sync_data().is_err());
        sim.crash(3, true);
        let bytes = sim.read_file(&dir.join("a")).unwrap();
        assert!(bytes.len() <= 100);
    }

    #[test]
    fn full_disk_fails_writes_with_storage_full() {
        let sim = SimStorage::new();
        let dir = Path::new("/d");
        sim.create_dir_all(dir).unwrap();
        let f = sim.create(&dir.join("a")).unwrap();
        sim.set_free_space(Some(10));
        f.write_all_at(&[0u8; 10], 0).unwrap();
        let err = f.write_all_at(&[0u8; 1], 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn second_lock_is_refused_until_the_first_drops() {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/d")).unwrap();
        let l = sim.lock(Path::new("/d/LOCK")).unwrap();
        assert_eq!(
            sim.lock(Path::new("/d/LOCK")).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        drop(l);
        assert!(sim.lock(Path::new("/d/LOCK")).is_ok());
    }
}
