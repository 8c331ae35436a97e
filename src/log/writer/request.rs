//! One append as the store hands it to the writer, what its appender looked
//! up before queueing, and its encoded size.
//!
//! This module must never check or write anything.

use crate::event::{EventData, ExpectedVersion, RecordedEvent};
use crate::query::AppendCondition;

/// One append, as built by [`crate::Store::append`].
pub(crate) struct AppendRequest {
    pub(crate) stream: String,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<EventData>,
    pub(crate) condition: Option<AppendCondition>,
    /// Filled in by the appender before it queues (see [`Precheck`]).
    pub(crate) precheck: Precheck,
}

impl AppendRequest {
    /// A request; its lookups run when it is appended.
    pub(crate) fn new(
        stream: String,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<AppendCondition>,
    ) -> Self {
        AppendRequest {
            stream,
            expected,
            events,
            condition,
            precheck: Precheck::default(),
        }
    }
}

/// The lookups of an append that may read the log (event ids, the append
/// condition), done by its appender before it queues, outside the writer's
/// lock. Published events never change, so the writer only has to look at
/// what was published after `published`.
#[derive(Default)]
pub(crate) struct Precheck {
    /// Every position below this was published before the lookups ran.
    pub(crate) published: u64,
    /// Per event: where its id was found among published events, and what
    /// was read there.
    pub(crate) ids: Vec<Option<(u64, Looked)>>,
    /// What the published events before `published` say of the append condition.
    pub(crate) condition: ConditionCheck,
}

/// What an append's appender read at the position of one of its event ids.
pub(crate) enum Looked {
    /// The event, read back.
    Event(Box<RecordedEvent>),
    /// An event of another stream, told by its sound frame before any of its
    /// personal fields was opened (they may be unreadable there: its
    /// subject's key lost). The append cannot be a retry of it.
    OtherStream,
    /// Nothing could be read: left to the writer, which reads it again
    /// where the append's other checks order it.
    Failed,
}

/// The append condition against the events published before the watermark.
#[derive(Default)]
pub(crate) enum ConditionCheck {
    /// Not looked at (no condition, or a read failed): the writer checks
    /// everything after the caller's position.
    #[default]
    Unchecked,
    /// No event before the watermark fails it.
    Clear,
    /// This published event fails it.
    Failed(u64),
}

/// Upper bound of the encoded size of an append's frames.
pub(crate) fn encoded_size(stream: &str, events: &[EventData]) -> usize {
    events
        .iter()
        .map(|e| {
            64 + stream.len()
                + e.event_type.len()
                + e.tags.iter().map(|t| t.len() + 2).sum::<usize>()
                + e.data.len()
                + e.metadata.len()
                + e.subject
                    .as_ref()
                    .map_or(0, |s| s.len() + crate::format::subjects::SEALED_OVERHEAD)
                + if e.erased {
                    crate::format::subjects::KEY_ID_LEN
                } else {
                    0
                }
        })
        .sum()
}
