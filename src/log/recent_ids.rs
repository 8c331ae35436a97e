//! The event ids appended since the store opened, in a filter in memory,
//! so that an id lookup need not look in the segments written since.
//!
//! Every event at a position at or after the head at open was staged by this
//! store's writer, which enters its id here before the event is published.
//! A filter that answers "not here" therefore proves that no event at or
//! after that position carries the id: a lookup then looks only at the
//! segments that hold events from before the open (none at all for a store
//! opened empty, as an import into a new store is). "Maybe" proves nothing:
//! the lookup goes through the segments as without the filter. The filter
//! grows with the ids entered (about 1.25 bytes each, in filters each
//! four times the size of the one before) and is dropped for good past [`MAX_IDS`], after which
//! every lookup goes through the segments again.

use parking_lot::RwLock;
use uuid::Uuid;

use crate::format::index::bloom::{blocked_bytes_for, blocked_check, blocked_insert, id_filter_hash};

/// Ids the first filter is sized for (80 KiB, made at the first published
/// group of events: a small store, or many stores in one process, spend
/// little); each next one holds four times as many (the last one only what
/// is left up to [`MAX_IDS`]), so that a lookup probes few filters: five at
/// most, the small ones staying in cache.
const FIRST_IDS: usize = 1 << 16;

/// Most ids entered before the filters are dropped (about 21 MiB of filters).
pub(crate) const MAX_IDS: usize = 1 << 24;

/// The ids appended since open, as seen by id lookups.
pub(crate) struct RecentIds {
    /// The head position at open: the filters cover every event at or after it.
    from: u64,
    /// `None` once dropped (past [`MAX_IDS`]).
    filters: RwLock<Option<Filters>>,
}

#[derive(Default)]
struct Filters {
    /// Blocked bloom filters, each with its capacity; ids go into the last.
    blooms: Vec<(Vec<u8>, usize)>,
    /// Ids in the last filter.
    in_last: usize,
    /// Ids entered in all.
    total: usize,
}

/// What the filters say of an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recent {
    /// No event at or after this position carries the id.
    NotSince(u64),
    /// Any event may carry it.
    Maybe,
}

impl RecentIds {
    /// Filters covering every event appended from `from` (the head at open) on.
    pub(crate) fn new(from: u64) -> Self {
        RecentIds {
            from,
            filters: RwLock::new(Some(Filters::default())),
        }
    }

    /// Enters ids of events about to be published; called before they are.
    pub(crate) fn insert(&self, ids: impl IntoIterator<Item = Uuid>) {
        // Once dropped, the filters never come back.
        if self.filters.read().is_none() {
            return;
        }
        // Hashed before the lock is taken: lookups wait on it.
        let hashes: Vec<u64> = ids.into_iter().map(|id| id_filter_hash(&id)).collect();
        let mut guard = self.filters.write();
        let Some(f) = guard.as_mut() else { return };
        for hash in hashes {
            if f.total >= MAX_IDS {
                *guard = None;
                return;
            }
            if f.blooms.last().is_none_or(|(_, cap)| f.in_last >= *cap) {
                let cap = f
                    .blooms
                    .last()
                    .map_or(FIRST_IDS, |(_, cap)| cap.saturating_mul(4))
                    .min(MAX_IDS - f.total);
                f.blooms.push((vec![0u8; blocked_bytes_for(cap)], cap));
                f.in_last = 0;
            }
            if let Some((bloom, _)) = f.blooms.last_mut() {
                blocked_insert(bloom, hash);
            }
            f.in_last += 1;
            f.total += 1;
        }
    }

    /// Whether an event appended since open may carry `id`.
    pub(crate) fn check(&self, id: &Uuid) -> Recent {
        let guard = self.filters.read();
        let Some(f) = guard.as_ref() else {
            return Recent::Maybe;
        };
        let hash = id_filter_hash(id);
        if f.blooms.iter().any(|(bloom, _)| blocked_check(bloom, hash)) {
            Recent::Maybe
        } else {
            Recent::NotSince(self.from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_entered_is_a_maybe_and_most_others_are_not() {
        let r = RecentIds::new(7);
        let ids: Vec<Uuid> = (0..200_000).map(|_| Uuid::new_v4()).collect();
        r.insert(ids.iter().copied());
        assert!(ids.iter().all(|id| r.check(id) == Recent::Maybe));
        let others = (0..10_000)
            .filter(|_| r.check(&Uuid::new_v4()) == Recent::NotSince(7))
            .count();
        assert!(others > 9_000, "{others} of 10,000 absent ids proven absent");
    }

    #[test]
    fn past_the_limit_every_id_is_a_maybe() {
        let r = RecentIds::new(0);
        r.filters.write().as_mut().expect("filters").total = MAX_IDS;
        r.insert([Uuid::new_v4()]);
        assert_eq!(r.check(&Uuid::new_v4()), Recent::Maybe);
    }
}
