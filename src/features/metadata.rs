//! Setting stream metadata, soft and hard deletion, and snapshots, through the
//! store's own API.
//!
//! Metadata of stream `s` is appended as the last event of the system stream
//! `$meta-s`, and snapshots of `s` are events of `$snapshot-s`; the record and
//! the visibility rule it sets are [`crate::stream_metadata`]'s. This module
//! must never touch files.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::event::{AppendResult, EventData, ExpectedVersion, RecordedEvent};
use crate::format::system::{self, StoredSnapshotHeaderV1, Version1};
use crate::query::{Direction, StreamFrom};
use crate::store::Store;
pub use crate::stream_metadata::{META_PREFIX, SNAPSHOT_PREFIX, StreamMetadata};

/// A snapshot of an aggregate's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream revision the state was taken at (events up to it are folded in).
    pub revision: u64,
    /// The state, as the application encoded it.
    pub data: Bytes,
}

impl Store {
    /// The metadata of a stream, if any was set.
    pub fn stream_metadata(&self, stream: &str) -> Option<StreamMetadata> {
        self.shared.metadata.read().by_stream.get(stream).cloned()
    }

    /// A stream's metadata together with the revision of the record that set it
    /// (the last revision of `$meta-<stream>`; `None` when none was written),
    /// read under the lock metadata writes take, so the two always match. Pass
    /// the revision to [`Store::set_stream_metadata_expected`] to write only if
    /// nobody else wrote the metadata since it was read.
    pub fn stream_metadata_with_revision(&self, stream: &str) -> (Option<StreamMetadata>, Option<u64>) {
        let _no_write_in_between = self.shared.metadata_writes.lock();
        let revision = self
            .stream_info(&format!("{META_PREFIX}{stream}"))
            .map(|s| s.last_revision);
        (self.stream_metadata(stream), revision)
    }

    /// Sets a stream's metadata (replacing what was there); reads honour it at once.
    pub fn set_stream_metadata(&self, stream: &str, metadata: StreamMetadata) -> Result<AppendResult> {
        self.set_stream_metadata_expected(stream, ExpectedVersion::Any, metadata)
    }

    /// Sets a stream's metadata if its metadata record stream (`$meta-<stream>`)
    /// is at `expected`, checked atomically with the write: of concurrent
    /// writers expecting the same revision, one succeeds and the others get
    /// [`Error::WrongExpectedVersion`] with the revision they met.
    pub fn set_stream_metadata_expected(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<AppendResult> {
        crate::event::check_stream_name(stream)?;
        if stream.starts_with('$') {
            return Err(Error::InvalidInput("system streams have no user metadata".into()));
        }
        if metadata.tombstoned {
            return Err(Error::InvalidInput(
                "a stream is tombstoned by a hard delete, not by metadata".into(),
            ));
        }
        self.write_metadata(stream, expected, |_| Ok(metadata))
    }

    /// Writes the metadata `make` builds from the current one, the whole
    /// read, check and write under the lock metadata writes take: a hard
    /// delete's tombstone is never overwritten by a write that read the
    /// metadata before it (a stream tombstoned meanwhile is refused).
    fn write_metadata(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        make: impl FnOnce(Option<StreamMetadata>) -> Result<StreamMetadata>,
    ) -> Result<AppendResult> {
        // Metadata writes are serialised so that the cache ends as the log does;
        // readers are not held up by the append's sync.
        let _one_at_a_time = self.shared.metadata_writes.lock();
        let current = self.stream_metadata(stream);
        if current.as_ref().is_some_and(|m| m.tombstoned) {
            return Err(Error::StreamDeleted(stream.to_string()));
        }
        let metadata = make(current)?;
        let data = crate::stream_metadata::encode(&metadata);
        let r = self.append_system(
            &format!("{META_PREFIX}{stream}"),
            expected,
            vec![EventData::json("$Metadata", data)],
        )?;
        self.shared
            .metadata
            .write()
            .by_stream
            .insert(stream.to_string(), metadata);
        Ok(r)
    }

    /// Deletes a stream after checking `expected`. A soft delete hides its events
    /// (appending again continues its revisions); a hard delete hides them and
    /// refuses the name for good. Scavenging reclaims the space.
    pub fn delete_stream(&self, stream: &str, expected: ExpectedVersion, hard: bool) -> Result<()> {
        crate::event::check_stream_name(stream)?;
        if stream.starts_with('$') {
            return Err(Error::InvalidInput("system streams cannot be deleted".into()));
        }
        self.write_metadata(stream, ExpectedVersion::Any, |meta| {
            let mut meta = meta.unwrap_or_default();
            let current = self.stream_info(stream).map(|s| s.last_revision);
            let Some(last) = current else {
                return Err(Error::StreamNotFound(stream.to_string()));
            };
            let ok = match expected {
                ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
                ExpectedVersion::NoStream => false,
                ExpectedVersion::Exact(r) => r == last,
            };
            if !ok {
                return Err(Error::WrongExpectedVersion {
                    stream: stream.to_string(),
                    expected: expected.to_string(),
                    actual: current,
                });
            }
            if hard {
                meta.tombstoned = true;
            }
            meta.truncate_before = Some(last + 1);
            Ok(meta)
        })?;
        Ok(())
    }

    /// Saves a snapshot of `stream`'s aggregate state taken at `revision`.
    /// A hard-deleted stream takes none ([`Error::StreamDeleted`]).
    pub fn save_snapshot(&self, stream: &str, revision: u64, data: impl Into<Bytes>) -> Result<AppendResult> {
        crate::event::check_stream_name(stream)?;
        let last = self
            .stream_info(stream)
            .ok_or_else(|| Error::StreamNotFound(stream.to_string()))?
            .last_revision;
        if revision > last {
            return Err(Error::InvalidInput(format!(
                "snapshot at revision {revision}, but {stream:?} ends at {last}"
            )));
        }
        if let Some(meta) = self.stream_metadata(stream) {
            if meta.tombstoned {
                return Err(Error::StreamDeleted(stream.to_string()));
            }
            if meta.leaves_behind_snapshot_at(revision) {
                return Err(Error::InvalidInput(format!(
                    "a snapshot at revision {revision} of {stream:?} would fold in events its truncate_before ({}) \
                     removed; take it at revision {} or later",
                    meta.truncate_before.unwrap_or(0),
                    meta.truncate_before.unwrap_or(1).saturating_sub(1)
                )));
            }
        }
        let header = system::encode(&StoredSnapshotHeaderV1 {
            version: Version1,
            revision,
        });
        self.append_system(
            &format!("{SNAPSHOT_PREFIX}{stream}"),
            ExpectedVersion::Any,
            vec![EventData::binary("$Snapshot", data.into()).with_metadata(header)],
        )
    }

    /// The latest snapshot of `stream`, if any; none once the stream was
    /// hard-deleted, and none if it was taken before events that a
    /// truncation (or a soft delete) removed: the events after it would not
    /// all be read, and the state folded would be wrong. A snapshot at the
    /// last revision before `truncate_before` loads ("snapshot, then
    /// truncate what it folds in"); so, after a soft delete, does one taken
    /// at the deleted stream's last event, which a stream appended to again
    /// as a new aggregate must not fold in (the two cannot be told apart).
    pub fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        let meta = self.stream_metadata(stream);
        if meta.as_ref().is_some_and(|m| m.tombstoned) {
            return Ok(None);
        }
        let last = self
            .read_stream_raw(
                &format!("{SNAPSHOT_PREFIX}{stream}"),
                Direction::Backward,
                StreamFrom::End,
                1,
            )?
            .pop();
        match last {
            None => Ok(None),
            Some(e) => {
                let h: StoredSnapshotHeaderV1 = system::decode(&e.stream, e.position, &e.metadata)?;
                if meta.as_ref().is_some_and(|m| m.leaves_behind_snapshot_at(h.revision)) {
                    return Ok(None);
                }
                Ok(Some(Snapshot {
                    revision: h.revision,
                    data: e.data,
                }))
            }
        }
    }

    /// Loads an aggregate: its latest snapshot and only the events after it.
    /// The events must follow the snapshot without a hole: when events
    /// after it are hidden by `max_count` or `max_age` (or otherwise gone)
    /// while the stream goes on, no fold of what is left is the aggregate's
    /// state, and the answer is [`Error::SnapshotBehind`] (take snapshots
    /// more often than those settings keep events).
    pub fn load_aggregate(&self, stream: &str) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
        let snapshot = self.load_snapshot(stream)?;
        let from = snapshot.as_ref().map_or(0, |s| s.revision.saturating_add(1));
        let events = match self.read_stream(stream, Direction::Forward, StreamFrom::Revision(from), usize::MAX) {
            Ok(e) => e,
            Err(Error::StreamNotFound(_)) if snapshot.is_some() => Vec::new(),
            Err(e) => return Err(e),
        };
        if let Some(s) = &snapshot {
            // Nothing visible after the snapshot although the stream goes on is a hole too.
            let first = events.first().map(|e| e.revision);
            let hole = match first {
                Some(r) => r != from,
                None => self.stream_info(stream).is_some_and(|i| i.last_revision >= from),
            };
            if hole {
                return Err(Error::SnapshotBehind {
                    stream: stream.to_string(),
                    revision: s.revision,
                    first_visible: first,
                });
            }
        }
        Ok((snapshot, events))
    }

    /// Reads a stream ignoring metadata, treating a missing stream as empty.
    pub(crate) fn read_stream_raw(
        &self,
        stream: &str,
        direction: Direction,
        from: StreamFrom,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        match self.shared.read_stream(stream, direction, from, limit) {
            Err(Error::StreamNotFound(_)) => Ok(Vec::new()),
            other => other,
        }
    }
}
