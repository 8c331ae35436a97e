//! Typed errors for every operation of the store.
//!
//! This module owns the [`Error`] enum and nothing else. It must never hide an
//! I/O error's kind: callers (and the CLI's exit codes) depend on telling a full
//! disk, a conflict and a corruption apart.

use std::io;
use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in annal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed; `context` says which one.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The disk budget (`retention.max_bytes`) cannot be held without
    /// dropping events a forwarder has not delivered, and the policy is
    /// `stop-appends`: appends are refused until the forwarder catches up.
    #[error(
        "appends are stopped: events forwarder {forwarder:?} has not delivered take {held_bytes} bytes, over the disk budget of {max_bytes} bytes (retention.max_bytes, when_full = \"stop-appends\"); they resume once it catches up"
    )]
    BudgetFull {
        /// The forwarder holding the lowest position.
        forwarder: String,
        /// Bytes of sealed segments holding undelivered events.
        held_bytes: u64,
        /// The budget.
        max_bytes: u64,
    },

    /// The disk (or the simulated disk) is full. Nothing of the failed append was kept.
    #[error("disk full while {context}")]
    DiskFull {
        /// What the store was doing.
        context: String,
    },

    /// Bytes on disk failed a checksum or a structural check.
    #[error("corruption in {}: at byte {offset}: {reason}", file.display())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset in that file where the damage was found.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// An event of a system stream (a group's definition, checkpoint or parked
    /// record, a stream's metadata, a snapshot's header) was read whole, its
    /// checksum good, but its record cannot be understood: damaged JSON, or a
    /// record version this build does not read (written by a newer annal).
    /// See format.md, "System stream records".
    #[error("system event at position {position} of {stream:?} cannot be read: {reason}")]
    BadSystemEvent {
        /// The system stream (`$groups`, `$group-<name>-checkpoint`, `$meta-<stream>`, ...).
        stream: String,
        /// Position of the event in the global log.
        position: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// A position of the log cannot be read because its bytes are damaged; a
    /// subscription or a consumer group stops there (see
    /// [`crate::SubscriptionOptions::skip_damaged`] to go past it instead).
    #[error("position {position} cannot be read: {source}")]
    Damaged {
        /// The first position that cannot be read.
        position: u64,
        /// The corruption found there, with its file and offset.
        #[source]
        source: Box<Error>,
    },

    /// The directory exists, is not empty, and is not an annal store.
    #[error("{} is not an annal data directory: {reason}", path.display())]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// A file was written by a format version this build does not read.
    #[error("{} has format version {found}; this build reads version {supported}", file.display())]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },

    /// Another process (or another handle) holds the data directory.
    #[error("data directory {} is locked by another process", path.display())]
    Locked {
        /// The data directory.
        path: PathBuf,
    },

    /// A read or count given a [`crate::Cancel`] stopped because it was
    /// cancelled or its deadline passed; it returned nothing, and changed nothing.
    #[error("the read was cancelled before it finished")]
    Cancelled,

    /// The caller's input was rejected before anything was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// [`crate::Store::load_aggregate`]: the stream's latest snapshot is not
    /// followed by the event right after it (those between are hidden by
    /// `max_count` or `max_age`, or gone), so no fold of what is left is the
    /// aggregate's state.
    #[error(
        "the snapshot of stream {stream:?} at revision {revision} is not followed by its next event (first visible after it: {first_visible:?}): events between are hidden by max_count or max_age; take snapshots more often than they keep events"
    )]
    SnapshotBehind {
        /// The stream.
        stream: String,
        /// The snapshot's revision.
        revision: u64,
        /// The first visible revision after it, if any.
        first_visible: Option<u64>,
    },

    /// An option of [`crate::Options`] (or of one of its sections) is out of
    /// range; nothing was opened or written.
    #[error("invalid option {field}: {reason}")]
    InvalidOption {
        /// Path of the option, as in the configuration: `segment_size`,
        /// `compression.level`, `retention.interval_ms`, ...
        field: &'static str,
        /// What is wrong with its value, and what is accepted.
        reason: String,
    },

    /// The expected version did not match the stream's actual state.
    #[error(
        "wrong expected version for stream {stream:?}: expected {expected}, actual {}",
        actual.map_or_else(|| "no stream".to_string(), |r| r.to_string())
    )]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the caller expected, as text (`any`, `no-stream`, `exists` or a revision).
        expected: String,
        /// The stream's current revision, or `None` if the stream does not exist.
        actual: Option<u64>,
    },

    /// A consistency-boundary condition failed: a matching event exists after the given position.
    #[error("append condition failed: event at position {position} matches the query")]
    ConditionFailed {
        /// Position of the first matching event found.
        position: u64,
    },

    /// An event id of the append is already stored, and the append is not an exact
    /// retry of the one that stored it: only some of its ids are stored, an id is
    /// stored elsewhere, or the stored event's type, data, metadata or tags differ.
    #[error(
        "event id {id} is already stored at position {position}, and this append is not an exact retry of the one that stored it"
    )]
    IdempotencyConflict {
        /// The conflicting id.
        id: uuid::Uuid,
        /// Where it is stored.
        position: u64,
    },

    /// The stream does not exist.
    #[error("stream {0:?} not found")]
    StreamNotFound(String),

    /// The stream was deleted (soft-deleted with nothing after, or hard-deleted for good).
    #[error("stream {0:?} is deleted")]
    StreamDeleted(String),

    /// The store was closed.
    #[error("store is closed{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),

    /// The store is open for reading only ([`crate::Store::open_read_only`], or
    /// degraded by damage); `reason` says why and what to do.
    #[error("the store is read-only: {reason}")]
    ReadOnly {
        /// Why, and what to do about it.
        reason: String,
    },

    /// The writer stopped for good after a failed sync (or a failed write of bytes
    /// it had already acknowledged): after a failed `fdatasync` the operating
    /// system may have dropped the written pages, so nothing written since the
    /// last good sync can be trusted. Appends in flight when it happened have an
    /// unknown outcome: they may or may not be there after a restart (retry them
    /// with the same event ids). Reads keep working; reopen the store to write again.
    #[error("the store stopped writing after a storage failure ({cause}); reopen it to write again")]
    Poisoned {
        /// What failed.
        cause: String,
    },
}

impl Error {
    /// Wraps an I/O error with context, turning "no space left" into [`Error::DiskFull`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
            Error::DiskFull { context }
        } else {
            Error::Io { context, source }
        }
    }

    /// Builds a corruption error.
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// A copy of a write error for each appender of a failed group: the kind
    /// (full disk, I/O error kind) is kept, the source is rendered as text.
    pub(crate) fn for_another_caller(&self) -> Self {
        match self {
            Error::DiskFull { context } => Error::DiskFull {
                context: context.clone(),
            },
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Poisoned { cause } => Error::Poisoned { cause: cause.clone() },
            other => Error::Closed(Some(other.to_string())),
        }
    }

    /// Builds the error for an unreadable system event.
    pub(crate) fn bad_system_event(stream: impl Into<String>, position: u64, reason: impl std::fmt::Display) -> Self {
        Error::BadSystemEvent {
            stream: stream.into(),
            position,
            reason: reason.to_string(),
        }
    }

    /// True for errors that mean what is on disk is damaged or cannot be
    /// understood: damaged bytes ([`Error::Corruption`], [`Error::Damaged`]) and
    /// an unreadable system event ([`Error::BadSystemEvent`]).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corruption { .. } | Error::Damaged { .. } | Error::BadSystemEvent { .. }
        )
    }
}

/// Extension to attach context to `io::Result`.
pub(crate) trait IoContext<T> {
    /// Maps the error into [`Error::io`] with the given context.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
