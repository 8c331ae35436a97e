//! The checks an append passes before it is staged: expected version,
//! idempotency (a retried append with the same ids and content gets its first
//! result), and consistency-boundary conditions; all against the published
//! state plus every group written but not yet published.
//!
//! This module must never write: it only decides.

use std::sync::atomic::Ordering;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{AppendResult, EventData, ExpectedVersion};
use crate::format::checkpoint::StreamState;
use crate::format::record::{self, EventView, GroupView};
use crate::format::segment::SEGMENT_HEADER;
use crate::format::subjects;
use crate::log::state::Shared;
use crate::log::subjects::KeyState;
use crate::query::AppendCondition;

use super::batch::Writer;
use super::pipeline::Results;
use super::request::{AppendRequest, ConditionCheck, Looked, Precheck, encoded_size};

impl Writer {
    /// The stream's state as of the staged group: staged, written, or published.
    pub(super) fn current(&self, stream: &str) -> Option<StreamState> {
        self.group
            .streams
            .get(stream)
            .or_else(|| self.unpublished.iter().rev().find_map(|w| w.group.streams.get(stream)))
            .copied()
            .or_else(|| self.shared.stream_state(stream))
    }

    /// Position of the event with this id: staged, written, or published at
    /// `since` or later (its appender looked at what was published before).
    pub(super) fn find_id_since(&self, id: &Uuid, since: u64) -> Option<u64> {
        self.group
            .ids
            .get(id)
            .or_else(|| self.unpublished.iter().rev().find_map(|w| w.group.ids.get(id)))
            .copied()
            .or_else(|| self.shared.find_id_since(id, since))
    }

    /// Checks a request and encodes its events into the group buffer.
    pub(super) fn stage(&mut self, req: &AppendRequest, results: &mut Results) -> Result<AppendResult> {
        // A rotation that failed after its seal is finished before anything else.
        if self.sealed_pending {
            self.rotate()?;
        }
        // Rotate first, so that the checks below see the state after the
        // commit that rotation forces (which may have failed and dropped appends).
        let estimate = encoded_size(&req.stream, &req.events);
        if self.write_offset + (self.group.buf.len() + estimate) as u64 > self.shared.options.segment_size
            && (self.write_offset > SEGMENT_HEADER as u64 || !self.group.buf.is_empty())
        {
            self.flush(results);
            if self.write_offset > SEGMENT_HEADER as u64 {
                self.rotate()?;
            }
        }
        // Sealed events go only to a segment whose header says version 3: one
        // holding frames is sealed first (the next one is created at version
        // 3), an empty one gets the new header.
        if !self.active_v3 && req.events.iter().any(|e| e.subject.is_some() || e.erased) {
            self.flush(results);
            if self.write_offset > SEGMENT_HEADER as u64 {
                self.rotate()?;
            }
            if !self.active_v3 {
                self.mark_sealed_segment()?;
            }
        }
        let current = self.current(&req.stream);
        if let Some(result) = self.idempotent_result(req, current)? {
            return Ok(result);
        }
        let ok = match (req.expected, current) {
            (ExpectedVersion::Any, _) => true,
            (ExpectedVersion::NoStream, None) => true,
            (ExpectedVersion::StreamExists, Some(_)) => true,
            (ExpectedVersion::Exact(r), Some(s)) => s.last_revision == r,
            _ => false,
        };
        if !ok {
            return Err(Error::WrongExpectedVersion {
                stream: req.stream.clone(),
                expected: req.expected.to_string(),
                actual: current.map(|s| s.last_revision),
            });
        }
        if let Some(cond) = &req.condition {
            self.check_condition(cond, &req.precheck)?;
        }
        let n_events = req.events.len() as u64;
        if current.is_some_and(|s| s.last_revision.checked_add(n_events).is_none()) {
            return Err(Error::InvalidInput(format!(
                "stream {:?} has no revisions left",
                req.stream
            )));
        }
        if self.next_position.checked_add(n_events).is_none() {
            return Err(Error::InvalidInput("the store has no positions left".into()));
        }
        let first_revision = current.map_or(0, |s| s.last_revision + 1);
        let position = self.next_position;
        let timestamp = self.shared.options.clock.now_micros().max(self.last_timestamp);
        let n = req.events.len();
        if self.group.buf.is_empty() {
            let durable_end = self.pipeline.synced.load(Ordering::Acquire);
            record::encode_group(&mut self.group.buf, &GroupView { durable_end });
        }
        for (i, e) in req.events.iter().enumerate() {
            let id = e.id.unwrap_or_else(Uuid::new_v4);
            let start = self.group.buf.len();
            // An event naming a subject is sealed under the subject's key,
            // which the appender made durable before it queued.
            // One that arrived erased names only a key id listed as shredded.
            let envelope = match &e.subject {
                None if e.erased => Some(subjects::ARRIVED_ERASED.to_vec()),
                None => None,
                Some(subject) => match self.seal_personal(subject, id, e) {
                    Ok(env) => Some(env),
                    Err(err) => {
                        self.group.unstage(i, position);
                        return Err(err);
                    }
                },
            };
            let (metadata, data): (&[u8], &[u8]) = match &envelope {
                Some(env) => (&[], env),
                None => (&e.metadata, &e.data),
            };
            let encoded = record::encode_event_sealed(
                &mut self.group.buf,
                i + 1 == n,
                envelope.is_some(),
                position + i as u64,
                first_revision + i as u64,
                timestamp,
                id,
                e.content_type,
                &req.stream,
                &e.event_type,
                &e.tags,
                metadata,
                data,
            );
            if let Err(err) = encoded {
                // Unreachable after `EventData::validate`; nothing of this append stays staged.
                self.group.unstage(i, position);
                return Err(err);
            }
            self.group.frames.push((start, self.group.buf.len()));
            self.group.ids.insert(id, position + i as u64);
        }
        let last_revision = first_revision + n as u64 - 1;
        self.next_position += n as u64;
        self.last_timestamp = timestamp;
        self.group.streams.insert(
            req.stream.clone(),
            StreamState {
                last_revision,
                last_position: position + n as u64 - 1,
            },
        );
        Ok(AppendResult {
            first_revision,
            next_expected_version: last_revision,
            position,
        })
    }

    /// Seals `e`'s personal fields under the live key of `subject`.
    fn seal_personal(&self, subject: &str, id: Uuid, e: &EventData) -> Result<Vec<u8>> {
        let Some((key_id, key)) = self.shared.subjects.live_key(subject) else {
            return Err(Error::InvalidInput(format!(
                "subject {subject:?} was shredded while this append waited; nothing of it was written"
            )));
        };
        subjects::seal(&key_id, &key, id, subject, &e.metadata, &e.data).ok_or_else(|| {
            Error::io(
                "sealing an event",
                std::io::Error::other("the operating system's random generator failed"),
            )
        })
    }

    /// What a staged event holds for the idempotency check: its subject (if
    /// any), metadata and data, opened if sealed; `Erased` if its key was
    /// shredded; `None` if its key is unknown or its envelope fails.
    fn staged_content(&self, v: &EventView<'_>) -> Option<Staged> {
        if !v.sealed {
            return Some(Staged::Content(None, v.metadata.to_vec(), v.data.to_vec()));
        }
        let key_id = subjects::envelope_key_id(v.data)?;
        match self.shared.subjects.key(&key_id) {
            KeyState::Live(key) => {
                let o = subjects::open(&key, v.id, v.data).ok()?;
                Some(Staged::Content(Some(o.subject), o.metadata, o.data))
            }
            KeyState::Shredded => Some(Staged::Erased),
            KeyState::Unknown => None,
        }
    }

    /// The event at `position` if it is staged or written but not yet published.
    pub(super) fn staged_event(&self, position: u64) -> Option<EventView<'_>> {
        let first = self.next_position - self.group.frames.len() as u64;
        self.group
            .event(first, position)
            .or_else(|| self.unpublished.iter().find_map(|w| w.event(position)))
    }

    /// If every event carries an id that is already stored, in order, at the place
    /// this append would have written it, the result of the original append.
    pub(super) fn idempotent_result(
        &self,
        req: &AppendRequest,
        current: Option<StreamState>,
    ) -> Result<Option<AppendResult>> {
        let pre = &req.precheck;
        let mut found = Vec::with_capacity(req.events.len());
        for (i, e) in req.events.iter().enumerate() {
            let Some(id) = e.id else {
                found.push(None);
                continue;
            };
            let pos = match pre.ids.get(i) {
                Some(Some((p, _))) => Some(*p),
                _ => self.find_id_since(&id, pre.published),
            };
            found.push(pos.map(|p| (id, p)));
        }
        let Some(&(first_id, first_pos)) = found.iter().flatten().next() else {
            return Ok(None);
        };
        let conflict = Error::IdempotencyConflict {
            id: first_id,
            position: first_pos,
        };
        if found.iter().any(Option::is_none) {
            return Err(conflict);
        }
        let mut first_revision = None;
        let mut last_revision = 0;
        // Every event has a found id (checked above), so `i` is the event's own index.
        for (i, (found_i, e)) in found.iter().zip(&req.events).enumerate() {
            let Some((_, pos)) = found_i else {
                return Err(conflict);
            };
            if *pos != first_pos + i as u64 {
                return Err(conflict);
            }
            // A retry must carry the same events: an id reused for other content is a conflict.
            let looked_up = match pre.ids.get(i) {
                Some(Some((p, Looked::Event(ev)))) if p == pos => Some((**ev).clone()),
                Some(Some((p, Looked::OtherStream))) if p == pos => return Err(conflict),
                _ => None,
            };
            let (stream, revision, same) = match self.staged_event(*pos) {
                Some(v) => {
                    let same = match self.staged_content(&v) {
                        Some(Staged::Content(subject, metadata, data)) => {
                            !e.erased
                                && same_content(
                                    e,
                                    v.event_type,
                                    v.content_type,
                                    &data,
                                    &metadata,
                                    &v.tags,
                                    subject.as_deref(),
                                )
                        }
                        Some(Staged::Erased) => same_erased(e, v.event_type, v.content_type, &v.tags),
                        None => false,
                    };
                    (v.stream.to_string(), v.revision, same)
                }
                // Published before the appender queued (read then), or since (read now).
                None => match looked_up.map_or_else(|| self.shared.read_position(*pos), |ev| Ok(Some(ev)))? {
                    Some(ev) => {
                        let tags: Vec<&str> = ev.tags.iter().map(String::as_str).collect();
                        // An erased event's content cannot be compared: only a
                        // retry that arrives erased too matches it.
                        let same = if ev.is_erased() {
                            same_erased(e, &ev.event_type, ev.content_type, &tags)
                        } else {
                            !e.erased
                                && same_content(
                                    e,
                                    &ev.event_type,
                                    ev.content_type,
                                    &ev.data,
                                    &ev.metadata,
                                    &tags,
                                    ev.subject(),
                                )
                        };
                        (ev.stream, ev.revision, same)
                    }
                    None => return Err(conflict),
                },
            };
            if !same || stream != req.stream || first_revision.is_some_and(|f: u64| revision != f + i as u64) {
                return Err(conflict);
            }
            first_revision.get_or_insert(revision);
            last_revision = revision;
        }
        let first_revision = first_revision.unwrap_or(0);
        let place_ok = match req.expected {
            ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
            ExpectedVersion::NoStream => first_revision == 0,
            ExpectedVersion::Exact(r) => first_revision == r + 1,
        };
        if !place_ok || current.is_none() {
            return Err(conflict);
        }
        Ok(Some(AppendResult {
            first_revision,
            next_expected_version: last_revision,
            position: first_pos,
        }))
    }

    pub(super) fn check_condition(&self, cond: &AppendCondition, pre: &Precheck) -> Result<()> {
        // Published events, through the indexes: those before `pre.published`
        // were checked by the appender, the rest are checked here; every group
        // not yet published is in `self.unpublished` or staged, checked below.
        let after_caller = cond.after.map_or(0, |a| a.saturating_add(1));
        let from = match pre.condition {
            ConditionCheck::Failed(position) => return Err(Error::ConditionFailed { position }),
            ConditionCheck::Clear => after_caller.max(pre.published),
            ConditionCheck::Unchecked => after_caller,
        };
        let after = from.checked_sub(1);
        for item in &cond.query.items {
            if let Some(position) = self.shared.first_match_after(&item.as_filter(), after)? {
                return Err(Error::ConditionFailed { position });
            }
        }
        let first_unpublished = self
            .unpublished
            .first()
            .map_or(self.next_position - self.group.frames.len() as u64, |w| {
                w.first_position
            });
        for p in first_unpublished..self.next_position {
            if cond.after.is_some_and(|a| p <= a) {
                continue;
            }
            if let Some(v) = self.staged_event(p)
                && cond.query.matches(&v)
            {
                return Err(Error::ConditionFailed { position: p });
            }
        }
        Ok(())
    }
}

/// What a staged event holds, for the idempotency check.
enum Staged {
    /// Its subject (if any), metadata and data.
    Content(Option<String>, Vec<u8>, Vec<u8>),
    /// Its key was shredded (or it arrived erased).
    Erased,
}

/// True if `e` arrives erased and matches an erased stored event in what
/// stays readable of it: type, content type and tags.
fn same_erased(e: &EventData, event_type: &str, content_type: crate::event::ContentType, tags: &[&str]) -> bool {
    e.erased
        && e.event_type == event_type
        && e.content_type == content_type
        && e.tags.len() == tags.len()
        && e.tags.iter().zip(tags).all(|(a, b)| a == b)
}

/// True if a stored event holds exactly what `e` asks to append (its id aside).
pub(super) fn same_content(
    e: &EventData,
    event_type: &str,
    content_type: crate::event::ContentType,
    data: &[u8],
    metadata: &[u8],
    tags: &[&str],
    subject: Option<&str>,
) -> bool {
    e.subject.as_deref() == subject
        && e.event_type == event_type
        && e.content_type == content_type
        && e.data[..] == *data
        && e.metadata[..] == *metadata
        && e.tags.len() == tags.len()
        && e.tags.iter().zip(tags).all(|(a, b)| a == b)
}

/// Runs an append's lookups that may read the log (see [`Precheck`]), before
/// its appender queues: where each event id is stored, with that event, and
/// the first published event that fails the append condition.
pub(super) fn precheck(shared: &Shared, req: &AppendRequest) -> Precheck {
    let published = shared.published();
    // Read errors are not returned here: the writer meets them again in the
    // order its checks run (idempotency first), as if nothing had been looked up.
    let ids = req
        .events
        .iter()
        .map(|e| {
            let id = e.id?;
            let (p, ev) = shared.find_event_since(&id, 0)?;
            Some(match ev {
                Ok(ev) => (p, Looked::Event(Box::new(ev))),
                // Where the frame is sound but the event cannot be opened
                // (its personal fields), its stream tells whether it may be
                // this append's: another stream's event is a conflict,
                // whatever damage it holds (which is not this caller's).
                Err(_) => match shared.find_event_where(&id, 0, &|s| s == req.stream) {
                    None => (p, Looked::OtherStream),
                    Some(_) => (p, Looked::Failed),
                },
            })
        })
        .collect();
    let mut condition = ConditionCheck::Unchecked;
    if let Some(cond) = &req.condition {
        condition = ConditionCheck::Clear;
        for item in &cond.query.items {
            match shared.first_match_after(&item.as_filter(), cond.after) {
                Ok(None) => {}
                Ok(Some(p)) => {
                    condition = ConditionCheck::Failed(p);
                    break;
                }
                Err(_) => {
                    condition = ConditionCheck::Unchecked;
                    break;
                }
            }
        }
    }
    Precheck {
        published,
        ids,
        condition,
    }
}
