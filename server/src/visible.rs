//! Which positions of the global log a caller may be shown in a group's
//! figures, for every protocol.
//!
//! A group over the global log moves its cursor, and so its checkpoint, to
//! the head of the log when it has read everything (every position up to
//! the head has been considered). Shown as it is to a token limited to some
//! stream prefixes, that figure would tell the token how many events other
//! tenants write, and when. Such a caller is shown instead the position one
//! past the last event at or before it in the group's streams (its
//! `stream_prefix`, which lies within the token's prefixes), found by one
//! backward read of one event: a figure that its own reads of those
//! streams tell it anyway.
//!
//! It must never decide who may use a group (`auth` does), nor shape an
//! answer for a protocol.

use annal::{Direction, Filter, GroupSource, LogFrom, Store};

use crate::auth::{Need, Principal};

/// The positions of the global log a caller is shown for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shown {
    /// Every position as it is: a caller who may read the whole log, or a
    /// group on one stream (its figures are revisions of that stream).
    Everything,
    /// Only positions of events in streams under this prefix.
    Under(String),
    /// No position at all (a limited caller's group with no stream prefix,
    /// which `auth` does not let it use; kept safe all the same).
    Nothing,
}

impl Shown {
    /// What `p` is shown of a group over `source`.
    pub(crate) fn of(p: &Principal, source: &GroupSource) -> Shown {
        match source {
            GroupSource::Stream(_) => Shown::Everything,
            GroupSource::All(_) if p.permits(Need::ReadLog(None)) => Shown::Everything,
            GroupSource::All(f) => match &f.stream_prefix {
                Some(prefix) => Shown::Under(prefix.clone()),
                None => Shown::Nothing,
            },
        }
    }

    /// True if positions are shown as they are (no read is needed, and
    /// errors may name where damage lies).
    pub(crate) fn everything(&self) -> bool {
        *self == Shown::Everything
    }

    /// `position` (a position to read next, as a group's checkpoint is) as
    /// shown: itself, or one past the last event at or before it in the
    /// shown streams (0 when there is none).
    pub(crate) fn position(&self, store: &Store, position: u64) -> Result<u64, annal::Error> {
        let prefix = match self {
            Shown::Everything => return Ok(position),
            Shown::Nothing => return Ok(0),
            Shown::Under(prefix) => prefix,
        };
        let Some(last) = position.checked_sub(1) else {
            return Ok(0);
        };
        let filter = Filter::all().with_stream_prefix(prefix.clone());
        let found = store.read_all(Direction::Backward, LogFrom::Position(last), 1, &filter)?;
        Ok(found.first().map_or(0, |e| e.position + 1))
    }
}
