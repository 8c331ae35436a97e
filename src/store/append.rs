//! Appends through the store: the caller's input checked (stream name, sizes,
//! subjects, the store's state), then handed to the writer
//! ([`crate::log::writer`]). It must never encode a byte or wait on a file.

use crate::error::{Error, Result};
use crate::event::{self, AppendResult, EventData, ExpectedVersion};
use crate::log::writer::AppendRequest;
use crate::query::AppendCondition;

use super::{STORE_CREATED_ID, STORE_CREATED_TYPE, SYSTEM_STREAM, Store};

/// One append of a batch given to [`Store::append_batch`]: what
/// [`Store::append`] (or [`Store::append_if`], with a condition) takes.
#[derive(Debug, Clone)]
pub struct Append {
    /// The stream appended to.
    pub stream: String,
    /// What the stream must look like before this append.
    pub expected: ExpectedVersion,
    /// The events, appended atomically.
    pub events: Vec<EventData>,
    /// A consistency-boundary condition, as for [`Store::append_if`].
    pub condition: Option<AppendCondition>,
}

impl Append {
    /// An append of `events` to `stream` after checking `expected`.
    pub fn new(stream: impl Into<String>, expected: ExpectedVersion, events: Vec<EventData>) -> Self {
        Append {
            stream: stream.into(),
            expected,
            events,
            condition: None,
        }
    }

    /// Adds a consistency-boundary condition (see [`Store::append_if`]).
    pub fn with_condition(mut self, condition: AppendCondition) -> Self {
        self.condition = Some(condition);
        self
    }
}

impl Store {
    /// Appends events to a stream atomically, after checking `expected`.
    pub fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<EventData>) -> Result<AppendResult> {
        self.submit(stream, expected, events, None)
    }

    /// Appends events to a stream atomically if no event matching `condition.query`
    /// exists after `condition.after` (a consistency-boundary append), and `expected` holds.
    pub fn append_if(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: AppendCondition,
    ) -> Result<AppendResult> {
        self.submit(stream, expected, events, Some(condition))
    }

    /// Appends to several streams in one group commit: the appends are
    /// written together and made durable by one sync (per the durability
    /// option), which is much faster than the same appends one by one from
    /// one thread. Each append is still checked (expected version, ids,
    /// condition) and made atomic on its own, in the order given, so one
    /// failing its check does not stop the others; the results are in order.
    ///
    /// The input of every append (stream names, sizes, duplicate ids) is
    /// checked before any is queued: if one is invalid, nothing is appended
    /// and the error names it by its index.
    pub fn append_batch(&self, appends: Vec<Append>) -> Result<Vec<Result<AppendResult>>> {
        let mut requests = Vec::with_capacity(appends.len());
        for (i, a) in appends.into_iter().enumerate() {
            self.check_append(&a.stream, &a.events).map_err(|e| match e {
                Error::InvalidInput(m) => Error::InvalidInput(format!("append {i} of the batch: {m}")),
                other => other,
            })?;
            requests.push(AppendRequest::new(a.stream, a.expected, a.events, a.condition));
        }
        for r in &requests {
            self.prepare_subjects(&r.events)?;
        }
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let Some(committer) = &self.committer else {
            return Err(Error::Closed(None));
        };
        Ok(committer
            .append_many(requests)
            .into_iter()
            .map(|r| match r {
                Err(Error::Closed(None)) => Err(self.closed_error()),
                other => other,
            })
            .collect())
    }

    /// Writes annal's own system event, `$annal-store-created` in stream
    /// `$annal` (format.md, "System stream records"), unless the stream
    /// already has it: a store then holds a `$`-typed event, as a KurrentDB
    /// database does, for clients that look for one. The event has a fixed
    /// id and empty JSON data; callers still cannot write `$` streams.
    /// Returns true if it wrote the event now.
    pub fn mark_system_event(&self) -> Result<bool> {
        if self.stream_info(SYSTEM_STREAM).is_some() {
            return Ok(false);
        }
        let event = EventData::json(STORE_CREATED_TYPE, "{}").with_id(STORE_CREATED_ID);
        match self.append_system(SYSTEM_STREAM, ExpectedVersion::NoStream, vec![event]) {
            Ok(_) => Ok(true),
            // Another caller wrote it first.
            Err(Error::WrongExpectedVersion { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Appends to a system stream (`$`-prefixed), which callers cannot write.
    pub(crate) fn append_system(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult> {
        debug_assert!(stream.starts_with('$'));
        self.check_input(stream, &events)?;
        self.queue(stream, expected, events, None)
    }

    fn submit(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) -> Result<AppendResult> {
        self.check_append(stream, &events)?;
        self.prepare_subjects(&events)?;
        self.queue(stream, expected, events, condition)
    }

    /// Makes sure every subject the events name has a key, durable in
    /// `subjects.key` before any event sealed under it is written (and, for
    /// events that arrive erased, that their key id is listed as shredded).
    fn prepare_subjects(&self, events: &[EventData]) -> Result<()> {
        for subject in events.iter().filter_map(|e| e.subject.as_deref()) {
            self.check_writable()?;
            self.shared.subjects.key_for(subject)?;
        }
        if events.iter().any(|e| e.erased) {
            self.check_writable()?;
            self.shared.subjects.ensure_arrived_erased()?;
        }
        Ok(())
    }

    /// The checks of an append's input and of the store's state that need no
    /// look at the log: reserved and deleted streams, a full disk budget,
    /// then [`Store::check_input`].
    fn check_append(&self, stream: &str, events: &[EventData]) -> Result<()> {
        if stream.starts_with('$') {
            return Err(Error::InvalidInput(format!(
                "stream {stream:?}: names starting with '$' are reserved for annal's system streams"
            )));
        }
        if self
            .shared
            .metadata
            .read()
            .by_stream
            .get(stream)
            .is_some_and(|m| m.tombstoned)
        {
            return Err(Error::StreamDeleted(stream.to_string()));
        }
        if let Some((forwarder, held_bytes, max_bytes)) = self.shared.budget_full.lock().clone() {
            return Err(Error::BudgetFull {
                forwarder,
                held_bytes,
                max_bytes,
            });
        }
        self.check_input(stream, events)
    }

    /// Refuses writes to a store open for reading only.
    pub(super) fn check_writable(&self) -> Result<()> {
        match &self.read_only {
            Some(reason) => Err(Error::ReadOnly { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// The checks of an append's input: writable store, stream name, event
    /// count and sizes, ids unique within the append.
    fn check_input(&self, stream: &str, events: &[EventData]) -> Result<()> {
        self.check_writable()?;
        let o = &self.shared.options;
        event::check_stream_name(stream)?;
        if events.is_empty() {
            return Err(Error::InvalidInput("an append needs at least one event".into()));
        }
        if events.len() > o.max_events_per_append {
            return Err(Error::InvalidInput(format!(
                "{} events in one append; at most {}",
                events.len(),
                o.max_events_per_append
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for e in events {
            e.validate(o.max_event_size)?;
            if let Some(id) = e.id
                && !ids.insert(id)
            {
                return Err(Error::InvalidInput(format!(
                    "event id {id} appears twice in one append"
                )));
            }
        }
        let size = crate::log::writer::encoded_size(stream, events);
        if size > o.max_append_size {
            return Err(Error::InvalidInput(format!(
                "append of about {size} bytes exceeds the limit of {}",
                o.max_append_size
            )));
        }
        Ok(())
    }

    /// Hands a checked append to the writer and waits for it.
    fn queue(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) -> Result<AppendResult> {
        let Some(committer) = &self.committer else {
            return Err(Error::Closed(None));
        };
        let result = committer.append(AppendRequest::new(stream.to_string(), expected, events, condition));
        match result {
            Err(Error::Closed(None)) => Err(self.closed_error()),
            other => other,
        }
    }

    pub(super) fn closed_error(&self) -> Error {
        match self.shared.failure.lock().clone() {
            Some(cause) => Error::Poisoned { cause },
            None => Error::Closed(None),
        }
    }
}
