//! The three systems behind one interface: a connection (for annal, a handle on
//! the shared store) that appends with an expected version and reads.

pub mod annal;
pub mod postgres;
pub mod sqlite;

use crate::event::Ev;

/// Any error of any system.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A result with any error.
pub type Res<T> = Result<T, BoxError>;

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sys {
    Annal,
    Sqlite,
    Postgres,
}

impl Sys {
    pub const ALL: [Sys; 3] = [Sys::Annal, Sys::Sqlite, Sys::Postgres];

    pub fn name(self) -> &'static str {
        match self {
            Sys::Annal => "annal",
            Sys::Sqlite => "SQLite",
            Sys::Postgres => "PostgreSQL",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Sys::Annal => "annal",
            Sys::Sqlite => "sqlite",
            Sys::Postgres => "postgres",
        }
    }
}

/// The state a writer expects the stream to be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No check (the SQL peers still read the stream's last revision to number the new events).
    Any,
    /// The stream must not exist.
    NoStream,
    /// The stream's last revision must be this.
    Exact(u64),
}

impl Expect {
    /// The expectation that matches a stream's current last revision.
    pub fn from_version(v: Option<u64>) -> Self {
        v.map_or(Expect::NoStream, Expect::Exact)
    }

    /// True if a stream whose last revision is `current` meets the expectation.
    pub fn holds(self, current: Option<u64>) -> bool {
        match self {
            Expect::Any => true,
            Expect::NoStream => current.is_none(),
            Expect::Exact(v) => current == Some(v),
        }
    }
}

/// Why an append did not happen.
#[derive(Debug)]
pub enum AppendError {
    /// The expected version did not hold (or, in SQL, another writer took the revision first).
    Conflict,
    /// Anything else: the workload stops with this error.
    Failed(BoxError),
}

impl<E: Into<BoxError>> From<E> for AppendError {
    fn from(e: E) -> Self {
        AppendError::Failed(e.into())
    }
}

/// One writer's or reader's connection to a system.
pub trait Conn: Send {
    /// Appends `events` to `stream` atomically and durably if `expected` holds.
    fn append(&mut self, stream: &str, expected: Expect, events: &[Ev]) -> Result<(), AppendError>;

    /// The stream's last revision, as a writer reads it before deciding what to append.
    fn version(&mut self, stream: &str) -> Res<Option<u64>>;

    /// Reads up to `limit` events of a stream from its start; returns how many it read.
    fn read_stream(&mut self, stream: &str, limit: usize) -> Res<usize>;

    /// Reads up to `limit` events of the log after position `after` (from the start if
    /// `None`), only those of type `event_type` if given; returns how many it read and
    /// the position of the last one.
    fn read_page(&mut self, after: Option<u64>, limit: usize, event_type: Option<&str>) -> Res<(usize, Option<u64>)>;

    /// Reads the last event of the log; returns its position.
    fn read_last(&mut self) -> Res<Option<u64>>;

    /// Times a writer was told the database was busy despite its busy timeout, and tried again.
    fn busy_retries(&self) -> u64 {
        0
    }
}

/// An event as the SQL peers return it (annal returns its own `RecordedEvent`).
#[allow(dead_code)] // The fields are read through `black_box` only.
#[derive(Debug)]
pub struct Row {
    pub position: i64,
    pub revision: i64,
    pub id: uuid::Uuid,
    pub event_type: String,
    pub data: String,
    pub metadata: String,
    pub tags: String,
    pub created_micros: i64,
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
