//! One append as the store hands it to the writer, and its encoded size.
//!
//! This module must never check or write anything.

use crate::event::{EventData, ExpectedVersion};
use crate::query::AppendCondition;

/// One append, as built by [`crate::Store::append`].
pub(crate) struct AppendRequest {
    pub(crate) stream: String,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<EventData>,
    pub(crate) condition: Option<AppendCondition>,
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
        })
        .sum()
}
