//! Reads through the store: streams, the global log, counts, event ids and
//! the list of streams, handed to the read paths ([`crate::log`]). It must
//! never write.

use std::sync::Arc;

use uuid::Uuid;

use crate::error::Result;
use crate::event::{RecordedEvent, StreamInfo};
use crate::query::{Cancel, Direction, Filter, LogFrom, StreamFrom};

use super::Store;

impl Store {
    /// Reads up to `limit` events of a stream.
    pub fn read_stream(
        &self,
        stream: &str,
        direction: Direction,
        from: StreamFrom,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared.read_stream_visible(stream, direction, from, limit)
    }

    /// As [`Store::read_stream`], but stops early once the events read hold
    /// `max_bytes` of data and metadata (always with at least one event, if
    /// there is one): for readers that answer within a byte budget. A read
    /// that returns fewer than `limit` events whose bytes stay under
    /// `max_bytes` reached the end of the stream.
    pub fn read_stream_within(
        &self,
        stream: &str,
        direction: Direction,
        from: StreamFrom,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared
            .read_stream_visible_within(stream, direction, from, limit, max_bytes)
    }

    /// Reads up to `limit` events of the global log that pass `filter`.
    pub fn read_all(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared.read_log(direction, from, limit, filter)
    }

    /// As [`Store::read_all`], but stops early once the events read hold
    /// `max_bytes` of data and metadata (always with at least one event, if
    /// there is one): for readers that answer within a byte budget.
    pub fn read_all_within(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
        max_bytes: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared.read_log_within(direction, from, limit, filter, max_bytes)
    }

    /// As [`Store::read_all_within`], but fails with [`Error::Cancelled`]
    /// (having returned nothing) once `cancel` is cancelled or its deadline
    /// passes: the read looks at it before each segment and each event it
    /// reads, so a long filtered scan stops soon after its caller gives up.
    pub fn read_all_cancellable(
        &self,
        direction: Direction,
        from: LogFrom,
        limit: usize,
        filter: &Filter,
        max_bytes: usize,
        cancel: &Cancel,
    ) -> Result<Vec<RecordedEvent>> {
        self.shared
            .read_log_cancellable(direction, from, (limit, max_bytes), filter, cancel)
    }

    /// As [`Store::count`], but a count that reads events fails with
    /// [`Error::Cancelled`] once `cancel` is cancelled or its deadline passes
    /// (it looks before each event it reads). A count the indexes serve reads
    /// no event and does not look at `cancel`.
    pub fn count_cancellable(&self, filter: &Filter, cancel: &Cancel) -> Result<u64> {
        self.shared.count_cancellable(filter, cancel)
    }

    /// As [`Store::count_by`], cancellable as [`Store::count_cancellable`] is.
    pub fn count_by_cancellable(
        &self,
        filter: &Filter,
        by: crate::query::GroupBy,
        cancel: &Cancel,
    ) -> Result<std::collections::BTreeMap<String, u64>> {
        self.shared.count_by_cancellable(filter, by, cancel)
    }

    /// [`Store::count`] if the indexes alone can answer it (see there when
    /// they can), without reading an event; `None` when the count would have
    /// to read the matching events. Lets a caller spend a scarce resource
    /// (a thread, a place in a queue) only on counts that scan.
    pub fn count_from_indexes(&self, filter: &Filter) -> Result<Option<u64>> {
        self.shared.count_from_indexes(filter)
    }

    /// [`Store::count_by`] if the indexes alone can answer it, as
    /// [`Store::count_from_indexes`] does; `None` when it would read events.
    pub fn count_by_from_indexes(
        &self,
        filter: &Filter,
        by: crate::query::GroupBy,
    ) -> Result<Option<std::collections::BTreeMap<String, u64>>> {
        self.shared.count_by_from_indexes(filter, by)
    }

    /// The number of events a read of the whole log with `filter` would
    /// return. A filter on stream names only (prefix, regular expression,
    /// topic patterns, aggregate), or on types only (types, type patterns,
    /// type regular expression), is counted from the stream or type indexes
    /// without reading an event when no stream has metadata, the store is
    /// not damaged and every index can answer exactly (for types: version-3
    /// and -4 files with no two type names on one key). A filter on tags and
    /// indexed metadata fields only is counted from the tag postings, reading
    /// one event per key and sealed segment (version-4 files; a segment whose
    /// file cannot tell whose entries a key holds is read). Any other count
    /// reads the candidate events, as a read does.
    pub fn count(&self, filter: &Filter) -> Result<u64> {
        self.shared.count(filter)
    }

    /// [`Store::count`], broken down by event type, stream, category or UTC day.
    pub fn count_by(
        &self,
        filter: &Filter,
        by: crate::query::GroupBy,
    ) -> Result<std::collections::BTreeMap<String, u64>> {
        self.shared.count_by(filter, by)
    }

    /// Looks up one event by id.
    pub fn event_by_id(&self, id: Uuid) -> Result<Option<RecordedEvent>> {
        self.event_by_id_where(id, |_| true)
    }

    /// Looks up one event by id, answering `None` for an event whose stream
    /// `admit` refuses, as for an unknown id: a server asks it with the
    /// streams a caller may read, so that the answer tells nothing of other
    /// streams. The stream is checked on the event's sound frame before its
    /// personal fields are opened, so another stream's event whose subject
    /// key cannot be read is not this caller's error either. A frame that
    /// fails its check cannot tell its stream: its damage is the answer.
    pub fn event_by_id_where(&self, id: Uuid, admit: impl Fn(&str) -> bool) -> Result<Option<RecordedEvent>> {
        match self.shared.find_event_where(&id, 0, &admit) {
            Some((_, ev)) => {
                Ok(Some(ev?).filter(|e| self.shared.is_visible(e, self.shared.options.clock.now_micros())))
            }
            None => Ok(None),
        }
    }

    /// Whether the store holds an event with this id, visible to reads or
    /// not: an event of a deleted stream, or one past its stream's max-age,
    /// max-count or truncation that no scavenge has removed yet, still holds
    /// its id, and an append that repeats the id meets it (its idempotency
    /// check sees what this sees). Fails where the event's frame or index is
    /// damaged, as a read does.
    pub fn holds_event_id(&self, id: Uuid) -> Result<bool> {
        match self.shared.find_event_since(&id, 0) {
            Some((_, found)) => found.map(|_| true),
            None => Ok(false),
        }
    }

    /// The current state of a stream.
    pub fn stream_info(&self, stream: &str) -> Option<StreamInfo> {
        self.shared.stream_state(stream).map(|s| StreamInfo {
            name: stream.to_string(),
            last_revision: s.last_revision,
            last_position: s.last_position,
        })
    }

    /// Every stream with its current revision, sorted by name. It works on
    /// the sorted copy of the names that [`Store::streams_page`] uses, so the
    /// stream map's lock is never held for the whole pass (appends take it
    /// to publish).
    pub fn streams(&self) -> Vec<StreamInfo> {
        let names = self.shared.sorted_stream_names();
        self.stream_infos(names.iter().map(|n| &**n))
    }

    /// One page of streams by name: of the streams `keep` accepts and whose
    /// names sort after `after` (all when `None`), the first `limit`, sorted
    /// by name; with how many streams `keep` accepts in all, and whether more
    /// follow the page. It works on a sorted copy of the names (made again
    /// only when streams were created since), so appends are never held up
    /// by `keep` or by the pass over every name. Without the total,
    /// [`Store::streams_page_from`] passes over only the names a page needs.
    pub fn streams_page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> (Vec<StreamInfo>, u64, bool) {
        let names = self.shared.sorted_stream_names();
        let start = after.map_or(0, |a| names.partition_point(|n| &**n <= a));
        let mut matched = 0u64;
        let mut page: Vec<&str> = Vec::with_capacity(limit.min(1024) + 1);
        for (i, name) in names.iter().enumerate() {
            if !keep(name) {
                continue;
            }
            matched += 1;
            if i >= start && page.len() <= limit {
                page.push(name);
            }
        }
        let more = page.len() > limit;
        page.truncate(limit);
        (self.stream_infos(page), matched, more)
    }

    /// One page of streams by name, without the total of
    /// [`Store::streams_page`]: of the streams whose names start with
    /// `prefix`, sort after `after` (all when `None`) and that `keep`
    /// accepts, the first `limit`, sorted by name, and whether more follow.
    /// It finds where to start by binary search and stops at the first name
    /// past `prefix` or once it has `limit + 1` names: a page costs the names
    /// it passes over, not every stream.
    pub fn streams_page_from(
        &self,
        after: Option<&str>,
        prefix: &str,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> (Vec<StreamInfo>, bool) {
        let names = self.shared.sorted_stream_names();
        let start = after
            .map_or(0, |a| names.partition_point(|n| &**n <= a))
            .max(names.partition_point(|n| &**n < prefix));
        let mut page: Vec<&str> = Vec::with_capacity(limit.min(1024) + 1);
        for name in names[start..].iter().take_while(|n| n.starts_with(prefix)) {
            if page.len() > limit {
                break;
            }
            if keep(name) {
                page.push(name);
            }
        }
        let more = page.len() > limit;
        page.truncate(limit);
        (self.stream_infos(page), more)
    }

    /// Calls `visit` with the name of each stream that starts with one of
    /// `prefixes` (an empty prefix: every stream; none: no stream) and sorts
    /// after `after` (all when `None`), in name order, until it says
    /// [`std::ops::ControlFlow::Break`]. Names outside the prefixes are
    /// never passed over (each prefix is found by binary search), so a
    /// caller that stops after a bounded number of names pays for those
    /// names only. Works on the sorted copy of the names that
    /// [`Store::streams_page`] uses: appends are never held up by `visit`.
    pub fn visit_stream_names(
        &self,
        after: Option<&str>,
        prefixes: &[&str],
        mut visit: impl FnMut(&str) -> std::ops::ControlFlow<()>,
    ) {
        let names = self.shared.sorted_stream_names();
        let mut sorted: Vec<&str> = prefixes.to_vec();
        sorted.sort_unstable();
        // A prefix that extends another adds no name; the others' ranges are
        // disjoint and in the order of the prefixes.
        let mut ranges: Vec<&str> = Vec::with_capacity(sorted.len());
        for p in sorted {
            if ranges.last().is_none_or(|k| !p.starts_with(k)) {
                ranges.push(p);
            }
        }
        let from = after.map_or(0, |a| names.partition_point(|n| &**n <= a));
        for prefix in ranges {
            let start = from.max(names.partition_point(|n| &**n < prefix));
            for name in names
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take_while(|n| n.starts_with(prefix))
            {
                if visit(name).is_break() {
                    return;
                }
            }
        }
    }

    /// The state of each named stream that exists, in order.
    fn stream_infos<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<StreamInfo> {
        names
            .into_iter()
            .filter_map(|n| {
                self.shared.stream_state(n).map(|s| StreamInfo {
                    name: n.to_string(),
                    last_revision: s.last_revision,
                    last_position: s.last_position,
                })
            })
            .collect()
    }

    /// The metadata fields this store indexes ([`Options::indexed_metadata`]).
    pub fn indexed_metadata(&self) -> &[String] {
        &self.shared.options.indexed_metadata
    }

    /// The largest event (data and metadata) this store accepts
    /// ([`Options::max_event_size`]): what a reader may budget per event.
    pub fn max_event_size(&self) -> usize {
        self.shared.options.max_event_size
    }

    /// Calls `f` after each publication of new events (once per batch the
    /// writer publishes, which may hold several appends) and once when the
    /// store closes, until the returned listener is dropped: for waiters that
    /// hold no thread (an async task woken through a channel). `f` runs on the
    /// thread of the appender that published the batch, once the publication
    /// lock is let go (in a batch too large for one write, with the writer's
    /// lock still held) and before that appender is answered, so it must be
    /// quick, must not block, and must not call the store; it says only that
    /// something may have changed (look at [`Store::head_position`] to know
    /// what), and may be called once more just after the listener is
    /// dropped. A callback that panics is caught (the append still succeeds)
    /// and never called again.
    pub fn listen(&self, f: impl Fn() + Send + Sync + 'static) -> crate::log::notify::EventListener {
        self.shared.notifier.listen(Arc::new(f))
    }

    /// Position the next event will get (the number of events ever appended).
    pub fn head_position(&self) -> u64 {
        self.shared.published()
    }

    /// Number of segment files (sealed and active).
    pub fn segment_count(&self) -> usize {
        self.shared.segments().len()
    }
}
