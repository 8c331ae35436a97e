//! annal: one `Store` opened with `Durability::Always`, shared by every writer thread.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use annal::{Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, Store, StreamFrom};

use super::{AppendError, Conn, Expect, Res};
use crate::event::{Ev, Layout, ev, stream_name};

/// Whether annal's stores are opened without compression (`--annal-plain`: a
/// diagnostic that separates the cost of decompressing from the rest of a read;
/// the report's figures are with the defaults).
pub static PLAIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The block cache of annal's stores in MiB, if not the default (`--annal-cache-mib`: a
/// diagnostic that shows what the stream reads of compressed segments cost when the cache
/// holds every block they touch).
pub static CACHE_MIB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(usize::MAX);

/// The options every measured store is opened with.
pub fn options() -> Options {
    let mut o = Options::default().durability(Durability::Always);
    if PLAIN.load(std::sync::atomic::Ordering::Relaxed) {
        o = o.no_compression();
    }
    match CACHE_MIB.load(std::sync::atomic::Ordering::Relaxed) {
        usize::MAX => o,
        mib => o.block_cache_bytes(mib << 20),
    }
}

/// Opens (or creates) a durable store.
pub fn open(dir: &Path) -> Res<Arc<Store>> {
    Ok(Arc::new(Store::open(dir, options())?))
}

/// A writer's or reader's handle: a clone of the shared store.
pub struct AnnalConn {
    store: Arc<Store>,
    /// The filter of the last filtered read, kept between pages.
    filter: Option<(String, Filter)>,
}

impl AnnalConn {
    pub fn new(store: Arc<Store>) -> Self {
        AnnalConn { store, filter: None }
    }
}

impl Conn for AnnalConn {
    fn append(&mut self, stream: &str, expected: Expect, events: &[Ev]) -> Result<(), AppendError> {
        let expected = match expected {
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
            Expect::Exact(v) => ExpectedVersion::Exact(v),
        };
        match self
            .store
            .append(stream, expected, events.iter().map(|e| e.annal.clone()).collect())
        {
            Ok(_) => Ok(()),
            Err(Error::WrongExpectedVersion { .. }) => Err(AppendError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    fn version(&mut self, stream: &str) -> Res<Option<u64>> {
        Ok(self.store.stream_info(stream).map(|i| i.last_revision))
    }

    fn read_stream(&mut self, stream: &str, limit: usize) -> Res<usize> {
        let evs = self
            .store
            .read_stream(stream, Direction::Forward, StreamFrom::Start, limit)?;
        Ok(black_box(evs).len())
    }

    fn read_page(&mut self, after: Option<u64>, limit: usize, event_type: Option<&str>) -> Res<(usize, Option<u64>)> {
        let from = after.map_or(LogFrom::Start, |p| LogFrom::Position(p + 1));
        let filter = match event_type {
            None => Filter::all(),
            Some(t) => match &self.filter {
                Some((k, f)) if k == t => f.clone(),
                _ => {
                    let f = Filter::all().with_type(t);
                    self.filter = Some((t.to_string(), f.clone()));
                    f
                }
            },
        };
        let evs = self.store.read_all(Direction::Forward, from, limit, &filter)?;
        let last = evs.last().map(|e| e.position);
        Ok((black_box(evs).len(), last))
    }

    fn read_last(&mut self) -> Res<Option<u64>> {
        let evs = self
            .store
            .read_all(Direction::Backward, LogFrom::End, 1, &Filter::all())?;
        Ok(evs.first().map(|e| e.position))
    }
}

/// Loads the read data set with `Durability::Never` (each chunk one append), then closes the store,
/// which syncs it.
pub fn load(dir: &Path, layout: &Layout) -> Res<()> {
    let store = Store::open(dir, options().durability(Durability::Never))?;
    let mut seq = 0u64;
    for (s, first, n) in layout.chunks() {
        let evs: Vec<EventData> = (seq..seq + n).map(|q| ev(q).annal).collect();
        seq += n;
        let expected = match first {
            0 => ExpectedVersion::NoStream,
            f => ExpectedVersion::Exact(f - 1),
        };
        store.append(&stream_name(s), expected, evs)?;
    }
    store.close()?;
    Ok(())
}
