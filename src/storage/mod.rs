//! The storage seam: every byte annal reads or writes goes through [`Storage`].
//!
//! This module owns the trait, the real file-system implementation ([`FsStorage`])
//! and, in [`sim`], an in-memory simulation that can lose unsynced writes, tear a
//! write at any byte, flip bits and run out of space. It must never know about
//! annal's file formats: it moves bytes, nothing more.

pub mod sim;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

pub use sim::SimStorage;

/// Read-only bytes of a whole file, memory-mapped where the storage can.
pub type Mapped = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A held lock on a path; dropping it releases the lock.
pub trait LockGuard: Send + Sync {}

/// An open file.
pub trait StorageFile: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`; a short file is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and its length) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True when the file has no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// A file system as annal needs it.
pub trait Storage: Send + Sync + 'static {
    /// Creates a directory and its parents (durably).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// True if the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// Opens an existing file for reading (and writing if `write`).
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates a new file for writing; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames a file, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Maps a file that will not change while mapped.
    fn map(&self, path: &Path) -> io::Result<Mapped>;
    /// Takes an exclusive lock on `path` (creating it), or fails with `WouldBlock`.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
    /// Bytes an unprivileged writer can still use on the file system holding `dir`.
    fn available_space(&self, dir: &Path) -> io::Result<u64>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

struct FsFile(File);

impl StorageFile for FsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

struct FsLock(#[allow(dead_code)] File);
impl LockGuard for FsLock {}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Every directory this call creates is an entry of its parent, and
        // each parent must be synced for the entry to survive a power loss:
        // not only `dir`'s own parent when more than one level is new.
        let mut created: Vec<&Path> = dir
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
            .collect();
        if created.is_empty() {
            created.push(dir);
        }
        fs::create_dir_all(dir)?;
        for made in created {
            // The top level of a relative path is an entry of the working directory.
            match made.parent() {
                Some(parent) if parent.as_os_str().is_empty() => self.sync_dir(Path::new("."))?,
                Some(parent) => self.sync_dir(parent)?,
                None => {}
            }
        }
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn StorageFile>> {
        let f = OpenOptions::new().read(true).write(write).open(path)?;
        Ok(Arc::new(FsFile(f)))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let f = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Arc::new(FsFile(f)))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn map(&self, path: &Path) -> io::Result<Mapped> {
        let f = File::open(path)?;
        if f.metadata()?.len() == 0 {
            return Ok(Arc::new(Vec::<u8>::new()));
        }
        // SAFETY: annal maps only files it never modifies or truncates in place
        // while a mapping lives: sealed segment and index files, checkpoint
        // files (replaced by rename, never written in place: a mapped
        // `streams.chk` stays valid until dropped), and (recovery, before
        // anything is appended) the last segment, whose mapping it drops before
        // it cuts a torn tail; the lock file keeps other annal processes out. A foreign process truncating the file could still
        // fault the mapping, which no safe API can prevent.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&f)? };
        Ok(Arc::new(map))
    }
    fn available_space(&self, dir: &Path) -> io::Result<u64> {
        let s = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Box::new(FsLock(f))),
            Err(fs::TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Reads the whole of an open file.
pub fn read_whole(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.len()?).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// Writes `bytes` as `dir/name` so that a crash leaves either the old file or
/// the whole new one: write `name.tmp`, sync it, rename it over `name`, sync `dir`.
/// A write or sync that fails removes `name.tmp` again (a half-written one on
/// a full disk would keep the room other files need).
pub fn write_atomically(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    if storage.exists(&tmp) {
        storage.remove(&tmp)?;
    }
    let f = storage.create(&tmp)?;
    if let Err(e) = f.write_all_at(bytes, 0).and_then(|()| f.sync_data()) {
        drop(f);
        let _ = storage.remove(&tmp);
        return Err(e);
    }
    drop(f);
    storage.rename(&tmp, &dir.join(name))?;
    storage.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several new levels at once are all created (and each parent synced,
    /// which no test can observe short of a power cut); an existing
    /// directory is accepted as it is.
    #[test]
    fn nested_directories_are_created_level_by_level() {
        let root = tempfile::tempdir().expect("tempdir");
        let deep = root.path().join("a").join("b").join("c");
        FsStorage.create_dir_all(&deep).expect("create");
        assert!(deep.is_dir());
        assert!(root.path().join("a").join("b").is_dir());
        FsStorage.create_dir_all(&deep).expect("again");
        FsStorage
            .create_dir_all(&root.path().join("a").join("d"))
            .expect("beside");
        assert_eq!(FsStorage.list(&root.path().join("a")).expect("list"), vec!["b", "d"]);
    }
}
