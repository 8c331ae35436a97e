//! The public handle ([`Store`]): opening, appending, reading, closing.
//!
//! A facade over the log ([`crate::log`]) and the maintenance jobs
//! ([`crate::maintenance`]): it checks a caller's input, hands appends to the
//! writer and reads to the read paths, and starts and stops background work.
//! It must never encode a byte or touch a file itself.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::log::state::Shared;
use crate::log::writer::Committer;
use crate::options::Options;
use crate::storage::{FsStorage, Storage};

mod append;
mod jobs;
mod read;

pub use append::Append;

/// annal's own system stream ([`Store::mark_system_event`]).
pub const SYSTEM_STREAM: &str = "$annal";
/// The type of the event [`Store::mark_system_event`] writes.
pub const STORE_CREATED_TYPE: &str = "$annal-store-created";
/// The fixed id of that event.
pub const STORE_CREATED_ID: Uuid = Uuid::from_u128(0x616e_6e61_6c2d_4000_8000_0000_0000_0001);

/// An open event store. Cheap to share between threads (`&Store` is enough to append and read).
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    /// The write path; `None` when the store is open for reading only.
    committer: Option<Arc<Committer>>,
    /// Why the store is read-only, if it is.
    read_only: Option<String>,
    closed: Mutex<bool>,
    /// Background maintenance threads (scavenger, compressor) and their stop signals.
    maintenance: Mutex<Vec<(crossbeam_channel::Sender<()>, std::thread::JoinHandle<()>)>>,
    /// State of features built on the store (consumer groups), created on first use.
    extensions: Mutex<Vec<Arc<dyn Extension>>>,
}

/// State that a feature built on the store API keeps while the store is open
/// (the loaded consumer groups), and settles when it closes. The store holds it
/// without knowing the feature, so features depend on the store, never the
/// other way round.
pub(crate) trait Extension: std::any::Any + Send + Sync {
    /// Saves what must outlive the store; called once at close, unless the
    /// store is read-only.
    fn close(&self, store: &Store) -> Result<()>;
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) a store in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_with(Arc::new(FsStorage), dir, options)
    }

    /// Opens (or creates) a store on the given storage.
    pub fn open_with(storage: Arc<dyn Storage>, dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        options.validate()?;
        let shared = Arc::new(crate::log::recovery::open(
            storage,
            dir.as_ref(),
            options,
            crate::log::recovery::Access::ReadWrite,
        )?);
        let committer = Committer::new(shared.clone())?;
        let store = Self::assemble(shared, Some(Arc::new(committer)), None)?;
        store.start_maintenance()?;
        // The open succeeded: the cuts it reports (its own and those of
        // earlier opens that failed after cutting) need no other report. Not
        // sooner: an open that fails after cutting leaves them listed.
        crate::log::damage::forget_unreported(&*store.shared.storage, &store.shared.dir);
        Ok(store)
    }

    /// A store over recovered state, its stream metadata loaded.
    fn assemble(shared: Arc<Shared>, committer: Option<Arc<Committer>>, read_only: Option<String>) -> Result<Store> {
        let store = Store {
            shared,
            committer,
            read_only,
            closed: Mutex::new(false),
            maintenance: Mutex::new(Vec::new()),
            extensions: Mutex::new(Vec::new()),
        };
        store.shared.load_metadata()?;
        // Forwarders that wait hold retention from their saved checkpoints, running or not.
        crate::maintenance::retention::load_holds(&store.shared)?;
        store.shared.check_budget(true);
        Ok(store)
    }

    /// Opens an existing store for reading only, on the real file system; see
    /// [`Store::open_read_only_with`].
    pub fn open_read_only(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_read_only_with(Arc::new(FsStorage), dir, options)
    }

    /// Opens an existing store for reading only: no lock is taken and nothing is
    /// written, so it works on a read-only mount and beside the process that
    /// holds the store (a running server). It sees the acknowledged appends
    /// present when it opened (whole appends only) and nothing later. Damage is
    /// stepped around, not refused: reads that touch it fail with
    /// [`Error::Corruption`] naming it ([`Store::damage`] lists it), every other
    /// read works. Appends fail with [`Error::ReadOnly`].
    pub fn open_read_only_with(storage: Arc<dyn Storage>, dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        options.validate()?;
        let shared = Arc::new(crate::log::recovery::open(
            storage,
            dir.as_ref(),
            options,
            crate::log::recovery::Access::ReadOnly,
        )?);
        let damage = shared.damage.first().map(|d| d.error().to_string()).or_else(|| {
            shared.subjects.header_damage().map(|why| {
                format!(
                    "{}: {why}",
                    shared.dir.join(crate::format::subjects::SUBJECTS_FILE).display()
                )
            })
        });
        let reason = match damage {
            Some(d) => {
                format!("it is damaged and open degraded, for reads of the intact data only ({d}); run `annal repair`")
            }
            None => "it was opened for reading only".to_string(),
        };
        Self::assemble(shared, None, Some(reason))
    }

    /// Opens a store for writing, or, when damage in data that was durable keeps
    /// it from opening ([`Error::Corruption`]), for reading only (degraded): the
    /// undamaged data stays readable, reads touching the damage fail with its
    /// error, and appends fail with [`Error::ReadOnly`] saying to run repair.
    /// [`Store::write_failure`] says which it is.
    pub fn open_or_degraded_with(storage: Arc<dyn Storage>, dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let dir = dir.as_ref();
        match Self::open_with(storage.clone(), dir, options.clone()) {
            Err(e @ Error::Corruption { .. }) => {
                let store = Self::open_read_only_with(storage, dir, options)?;
                if store.shared.damage.is_empty() && store.shared.subjects.header_damage().is_none() {
                    // The read-only open did not find what the writer refused: say it.
                    return Err(e);
                }
                Ok(store)
            }
            other => other,
        }
    }

    /// [`Store::open_or_degraded_with`] on the real file system.
    pub fn open_or_degraded(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_or_degraded_with(Arc::new(FsStorage), dir, options)
    }

    /// Damage that a read-only open stepped around (empty for a store open for writing).
    pub fn damage(&self) -> &[crate::log::damage::Damage] {
        &self.shared.damage
    }

    /// True if the store was opened for reading only (by choice, or degraded by damage).
    pub fn is_read_only(&self) -> bool {
        self.read_only.is_some()
    }

    /// The clock the store reads the time from ([`Options::clock`]).
    pub fn clock(&self) -> &dyn crate::clock::Clock {
        &*self.shared.options.clock
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The feature state of type `T`, created on first use.
    pub(crate) fn extension<T: Extension + Default>(&self) -> Arc<T> {
        let mut list = self.extensions.lock();
        for e in list.iter() {
            let any: Arc<dyn std::any::Any + Send + Sync> = e.clone();
            if let Ok(t) = any.downcast::<T>() {
                return t;
            }
        }
        let t = Arc::new(T::default());
        list.push(t.clone());
        t
    }

    /// Why appends are refused for good, if they are: the store is closing, or its
    /// writer stopped after an error it cannot recover from (a failed sync, or a
    /// failed write of bytes it had acknowledged). `None` while appends are accepted.
    /// Health checks report this; reads keep working either way.
    pub fn write_failure(&self) -> Option<String> {
        if self.is_closing() {
            return Some("the store is closing".into());
        }
        if let Some(r) = &self.read_only {
            return Some(format!("the store is read-only: {r}"));
        }
        self.shared.failure.lock().clone()
    }

    /// The torn tails this open cut off the last segment (bytes written after
    /// the last durable append, never acknowledged under [`crate::Durability::Always`]),
    /// each kept in `torn/`, with those cut by earlier opens that failed
    /// after cutting (no cut goes unreported). Empty after a clean close.
    /// [`crate::log::damage::torn_tails`] lists every torn tail ever kept.
    pub fn torn_tails_at_open(&self) -> &[crate::log::damage::TornTail] {
        &self.shared.torn_at_open
    }

    /// What this open cut from `subjects.key`: torn last records (a key
    /// whose write never finished, so no event was sealed under it), each
    /// kept in `torn/`, with those cut by earlier opens that failed; one
    /// sentence each. Also the store's last background error at open, which a
    /// later background failure replaces; this list stays.
    pub fn key_cuts_at_open(&self) -> &[String] {
        &self.shared.key_cuts_at_open
    }

    /// True once the store has begun closing.
    pub(crate) fn is_closing(&self) -> bool {
        self.shared.notifier.is_closed()
    }

    /// Flushes, stops the writer and releases the directory. Dropping the store does the same.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        let mut closed = self.closed.lock();
        if std::mem::replace(&mut *closed, true) {
            return Ok(());
        }
        for (stop, handle) in self.maintenance.lock().drain(..) {
            let _ = stop.send(());
            let _ = handle.join();
        }
        // Consumer groups keep their progress (at least once: only what moved since the last save).
        // A read-only store writes nothing, group progress included.
        let extensions: Vec<Arc<dyn Extension>> = self.extensions.lock().clone();
        let saved = match self.read_only {
            Some(_) => Ok(()),
            None => extensions.iter().try_for_each(|e| e.close(self)),
        };
        let result = match &self.committer {
            Some(c) => c.close().and(saved),
            None => Ok(()),
        };
        self.shared.notifier.close();
        result
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
