//! Lookups of events by id in the log: which segments may hold an id (the
//! filter of ids appended since open, then each segment's id index), each
//! candidate confirmed against its frame.
//!
//! This module owns how an id is found; it must never write, and never
//! answer "absent" for an id whose frame it could not read (damage is the
//! answer then).

use bytes::Bytes;
use uuid::Uuid;

use crate::error::Result;
use crate::event::RecordedEvent;
use crate::log::read::Want;
use crate::log::segments::SegRef;
use crate::log::state::Shared;

impl Shared {
    /// The id field of the event frame at `loc`, read without checking the
    /// frame (which failed its checks): `None` if it is not an event frame
    /// or cannot be read at all.
    fn frame_id_hint(&self, seg: &SegRef, loc: (u64, u64, u64)) -> Option<Uuid> {
        let (_, offset, _) = loc;
        // Frame envelope (8 bytes), then kind (1), flags (1), position,
        // revision and timestamp (8 each), then the 16-byte id.
        let end = offset.checked_add(50)?;
        let bytes: Bytes = match seg {
            SegRef::Sealed(s) => s.range(offset, end, Some(&self.block_cache)).ok()?,
            SegRef::Active(a) => {
                let mut buf = vec![0u8; 50];
                a.file.read_exact_at(&mut buf, offset).ok()?;
                Bytes::from(buf)
            }
        };
        (bytes.len() == 50 && bytes[8] == 1)
            .then(|| Uuid::from_slice(&bytes[34..50]).ok())
            .flatten()
    }

    /// Position of the event with this id, if stored at `since` or later
    /// (only the segments reaching past `since` are searched); see
    /// [`Shared::find_event_since`].
    pub(crate) fn find_id_since(&self, id: &Uuid, since: u64) -> Option<u64> {
        self.find_event_since(id, since).map(|(p, _)| p)
    }

    /// The event with this id and its position, if stored at `since` or
    /// later. An index may name several candidate positions; each is
    /// confirmed against its frame, which is read once. A frame that cannot
    /// be read counts as the match, with its error, so that damage is
    /// reported instead of the id seeming absent; except, where the index
    /// may name other ids' positions, a damaged frame whose id field still
    /// reads as another id, which is that other event's damage.
    pub(crate) fn find_event_since(&self, id: &Uuid, since: u64) -> Option<(u64, Result<RecordedEvent>)> {
        self.find_event_where(id, since, &|_| true)
    }

    /// [`Shared::find_event_since`], for an event whose stream passes
    /// `admit`: one of a stream `admit` refuses counts as absent, decided
    /// from its sound frame before its personal fields are opened (so that
    /// a personal field that cannot be opened there is not this caller's
    /// error either). A frame that fails its check cannot tell its stream,
    /// and counts as the match, with its error.
    pub(crate) fn find_event_where(
        &self,
        id: &Uuid,
        since: u64,
        admit: &dyn Fn(&str) -> bool,
    ) -> Option<(u64, Result<RecordedEvent>)> {
        // Nothing is published at `since` or later (the writer, whose own
        // unpublished groups it looks in itself, asks for what was published
        // since its appender looked).
        if since >= self.published() {
            return None;
        }
        // Where no event appended since open carries the id, only the
        // segments holding events from before the open are looked in.
        let before = match self.recent_ids.check(id) {
            crate::log::recent_ids::Recent::NotSince(from) if from <= since => return None,
            crate::log::recent_ids::Recent::NotSince(from) => from,
            crate::log::recent_ids::Recent::Maybe => u64::MAX,
        };
        self.segments()
            .iter()
            .rev()
            .skip_while(|s| s.with(|l| l.base()) >= before)
            .take_while(|s| s.with(|l| l.next_position()) > since)
            .find_map(|seg| {
                let (exact, candidates): (bool, Vec<(u64, u64, u64)>) = seg.with(|l| {
                    let positions: Vec<u64> = l.id_positions(id).into_iter().filter(|p| *p >= since).collect();
                    let found = positions
                        .iter()
                        .zip(l.locations(&positions))
                        .filter_map(|(p, loc)| loc.map(|(o, e)| (*p, o, e)))
                        .collect();
                    (l.ids_exact(), found)
                });
                if let Err(e) = seg.index_damage() {
                    return Some((seg.with(|l| l.base()), Err(e)));
                }
                candidates
                    .into_iter()
                    .find_map(|loc| match self.read_at(seg, loc, Want::Id(id, admit), None) {
                        Ok(None) => None,
                        Ok(Some(ev)) => Some((loc.0, Ok(ev))),
                        Err(_) if !exact && self.frame_id_hint(seg, loc).is_some_and(|other| other != *id) => None,
                        Err(e) => Some((loc.0, Err(e))),
                    })
            })
    }
}
