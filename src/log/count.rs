//! Counting the events that pass a filter, in total or grouped by type,
//! stream, category or day.
//!
//! A filter with no condition is counted from the sealed segments' index
//! headers (their number of events) and the active segment's stream lookup;
//! a filter whose only conditions are on stream names is counted from the
//! segments' stream indexes without reading an event; both when nothing can
//! hide an event (no stream metadata, no damage) and each segment's stream
//! lookup is exact; a filter on tags and indexed metadata fields only is
//! counted from the tag postings where the index can tell whose entries a key
//! holds (at most one event read per key and segment); every other count
//! reads the matching events the way a read
//! does (candidates from the indexes: types, tags and indexed metadata
//! fields; each candidate confirmed against its frame, as index keys are
//! hashes that may collide), so that a count always equals the length of a
//! read of the whole log. This module must never write.

use std::collections::{BTreeMap, HashSet};

use crate::error::Result;
use crate::format::index::{Lookup, TagKey, TagOwner, hash_str, meta_tag_key};
use crate::log::read::Visibility;
use crate::log::state::Shared;
use crate::query::{Cancel, Direction, Filter, GroupBy, LogFrom, aggregate_of};

/// Events a counting read takes at a time.
const BATCH: usize = 4096;

impl Shared {
    /// The number of visible events that pass `filter`.
    pub(crate) fn count(&self, filter: &Filter) -> Result<u64> {
        self.count_cancellable(filter, &Cancel::default())
    }

    /// [`Shared::count`], which fails with [`crate::Error::Cancelled`] once
    /// `cancel` says so while it reads events (a count the indexes serve
    /// reads none, and ignores it).
    pub(crate) fn count_cancellable(&self, filter: &Filter, cancel: &Cancel) -> Result<u64> {
        if let Some(n) = self.count_from_indexes_within(filter, cancel)? {
            return Ok(n);
        }
        // Tags and indexed metadata fields: from the postings, reading one
        // event per key and sealed segment (and the candidates of a segment
        // whose index cannot tell whose entries a key holds).
        if let Some(n) = self.count_tags_from_index(filter, cancel)? {
            return Ok(n);
        }
        let mut n = 0u64;
        self.for_each_match(filter, cancel, |_| n += 1)?;
        Ok(n)
    }

    /// [`Shared::count`] when the indexes alone can answer it (no event
    /// read); `None` when the count would have to read events.
    pub(crate) fn count_from_indexes(&self, filter: &Filter) -> Result<Option<u64>> {
        self.count_from_indexes_within(filter, &Cancel::default())
    }

    /// [`Shared::count_from_indexes`], which fails with
    /// [`crate::Error::Cancelled`] once `cancel` says so (it looks before
    /// each segment's index).
    fn count_from_indexes_within(&self, filter: &Filter, cancel: &Cancel) -> Result<Option<u64>> {
        if let Some(n) = self.count_everything_from_headers(filter)? {
            return Ok(Some(n));
        }
        if let Some(per_stream) = self.count_streams_from_index(filter, cancel)? {
            return Ok(Some(per_stream.values().sum()));
        }
        if let Some(per_type) = self.count_types_from_index(filter, cancel)? {
            return Ok(Some(per_type.values().sum()));
        }
        Ok(None)
    }

    /// The number of visible events that pass `filter`, by group.
    pub(crate) fn count_by(&self, filter: &Filter, by: GroupBy) -> Result<BTreeMap<String, u64>> {
        self.count_by_cancellable(filter, by, &Cancel::default())
    }

    /// [`Shared::count_by`], cancellable as [`Shared::count_cancellable`] is.
    pub(crate) fn count_by_cancellable(
        &self,
        filter: &Filter,
        by: GroupBy,
        cancel: &Cancel,
    ) -> Result<BTreeMap<String, u64>> {
        if let Some(out) = self.count_by_from_indexes_within(filter, by, cancel)? {
            return Ok(out);
        }
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        self.for_each_match(filter, cancel, |e| {
            *out.entry(group_key(by, &e.stream, &e.event_type, e.timestamp_micros))
                .or_default() += 1;
        })?;
        Ok(out)
    }

    /// [`Shared::count_by`] when the indexes alone can answer it; `None`
    /// when the count would have to read events.
    pub(crate) fn count_by_from_indexes(&self, filter: &Filter, by: GroupBy) -> Result<Option<BTreeMap<String, u64>>> {
        self.count_by_from_indexes_within(filter, by, &Cancel::default())
    }

    /// [`Shared::count_by_from_indexes`], cancellable as
    /// [`Shared::count_from_indexes_within`] is.
    fn count_by_from_indexes_within(
        &self,
        filter: &Filter,
        by: GroupBy,
        cancel: &Cancel,
    ) -> Result<Option<BTreeMap<String, u64>>> {
        if matches!(by, GroupBy::Stream | GroupBy::Category)
            && let Some(per_stream) = self.count_streams_from_index(filter, cancel)?
        {
            let mut out: BTreeMap<String, u64> = BTreeMap::new();
            for (stream, n) in per_stream {
                *out.entry(group_key(by, &stream, "", 0)).or_default() += n;
            }
            return Ok(Some(out));
        }
        if matches!(by, GroupBy::Type)
            && let Some(per_type) = self.count_types_from_index(filter, cancel)?
        {
            return Ok(Some(per_type));
        }
        Ok(None)
    }

    /// Calls `f` with every visible event passing `filter`, oldest first;
    /// fails once `cancel` says so.
    fn for_each_match(
        &self,
        filter: &Filter,
        cancel: &Cancel,
        mut f: impl FnMut(&crate::event::RecordedEvent),
    ) -> Result<()> {
        let mut from = LogFrom::Start;
        loop {
            let batch = self.read_log_cancellable(Direction::Forward, from, (BATCH, usize::MAX), filter, cancel)?;
            batch.iter().for_each(&mut f);
            match batch.last() {
                Some(last) if batch.len() == BATCH => match last.position.checked_add(1) {
                    Some(next) => from = LogFrom::Position(next),
                    None => return Ok(()),
                },
                _ => return Ok(()),
            }
        }
    }

    /// Each admitted type's number of events, from the type indexes alone,
    /// for a filter on types, type patterns and a type regular expression only; `None` when the filter
    /// or the store needs the events read, or a segment's index keeps no
    /// type names or files two of them under one key (version-1 and -2
    /// files, a collision). Damage fails the count, as for streams.
    fn count_types_from_index(&self, filter: &Filter, cancel: &Cancel) -> Result<Option<BTreeMap<String, u64>>> {
        let types_only = Filter {
            types: filter.types.clone(),
            type_patterns: filter.type_patterns.clone(),
            type_regex: filter.type_regex.clone(),
            ..Filter::all()
        };
        if filter.types.is_empty() && filter.type_patterns.is_empty() && filter.type_regex.is_none() {
            return Ok(None);
        }
        if types_only != *filter || !self.damage.is_empty() || !self.metadata.read().by_stream.is_empty() {
            return Ok(None);
        }
        self.sum_from_indexes(cancel, |l, published| {
            let catalog = l.type_catalog().filter(|c| c.exact)?;
            let whole = l.next_position() <= published;
            let counts = catalog
                .names
                .into_iter()
                .filter(|name| filter.admits_type(name))
                .map(|name| {
                    let h = hash_str(&name);
                    let n = if whole {
                        l.type_count(h)
                    } else {
                        l.type_positions(h).iter().filter(|p| **p < published).count() as u64
                    };
                    (name, n)
                })
                .collect();
            Some(counts)
        })
    }

    /// The number of events, for a filter whose only conditions are tags and
    /// indexed metadata fields, from the tag postings: in each segment, a
    /// key's entries are its events when the index knows they all come from
    /// that one tag or value (the memory index), or they all come from one
    /// tag or value and the first of them, read, has it (version-4 files,
    /// a key not shared); the keys' entries are intersected. A segment whose
    /// index cannot tell (older files, a shared key, fields indexed under
    /// another list) is counted by reading its candidates. `None` when the
    /// filter or the store needs the events read (stream metadata, damage, a
    /// metadata field that is not indexed).
    fn count_tags_from_index(&self, filter: &Filter, cancel: &Cancel) -> Result<Option<u64>> {
        let only = Filter {
            tags: filter.tags.clone(),
            metadata: filter.metadata.clone(),
            ..Filter::all()
        };
        if only.is_empty() || only != *filter || !self.damage.is_empty() || !self.metadata.read().by_stream.is_empty() {
            return Ok(None);
        }
        if filter.metadata.iter().any(|(k, _)| !self.meta_fields.contains(k)) {
            return Ok(None);
        }
        // Each key, with the tag it stands for (`None`: a metadata value).
        let keys: Vec<(TagKey, Option<&str>)> = filter
            .tags
            .iter()
            .map(|t| (TagKey::tag(t), Some(t.as_str())))
            .chain(filter.metadata.iter().map(|(k, v)| (meta_tag_key(k, v), None)))
            .collect();
        let published = self.published();
        let fingerprint = self.meta_fields.fingerprint();
        let mut n = 0u64;
        for seg in self.segments() {
            cancel.check()?;
            // The index alone first: a confirming read must not run under it.
            let (range, found) = seg.with(|l| {
                let range = (l.base(), l.next_position().min(published));
                if !filter.metadata.is_empty() && l.meta_fingerprint() != fingerprint {
                    return (range, None);
                }
                let found: Option<Vec<(TagOwner, Vec<u64>)>> = keys
                    .iter()
                    .map(|(key, _)| match l.tag_owner(key) {
                        TagOwner::Unknown => None,
                        TagOwner::Known(false) => Some((TagOwner::Known(false), Vec::new())),
                        owner => Some((owner, l.tag_positions(key.hash))),
                    })
                    .collect();
                (range, found)
            });
            seg.index_damage()?;
            if range.0 >= range.1 {
                continue;
            }
            let Some(found) = found else {
                n += self.count_by_reading(filter, range, cancel)?;
                continue;
            };
            let mut lists = Vec::with_capacity(found.len());
            for ((owner, positions), (key, tag)) in found.into_iter().zip(&keys) {
                let theirs = match (owner, positions.first()) {
                    (TagOwner::Known(known), _) => known,
                    (_, None) => true,
                    // Not yet published: let a read say.
                    (_, Some(first)) if *first >= range.1 => return Ok(None),
                    (_, Some(first)) => match self.read_position(*first)? {
                        // Whether the event was filed under this key, by the
                        // rule the index files keys with.
                        Some(ev) => match tag {
                            Some(tag) => ev.tags.iter().any(|t| t == tag),
                            None => self.meta_fields.keys(&ev.metadata).contains(key),
                        },
                        // An entry without its event: let a read say why.
                        None => return Ok(None),
                    },
                };
                lists.push(if theirs { positions } else { Vec::new() });
            }
            let mut lists = lists.into_iter();
            let mut matched = lists.next().unwrap_or_default();
            for list in lists {
                matched.retain(|p| list.binary_search(p).is_ok());
            }
            n += matched.iter().filter(|p| **p < range.1).count() as u64;
        }
        Ok(Some(n))
    }

    /// The events of positions `range.0..range.1` that pass `filter`,
    /// counted by reading them (candidates from the indexes); damage fails
    /// the count.
    fn count_by_reading(&self, filter: &Filter, range: (u64, u64), cancel: &Cancel) -> Result<u64> {
        let mut n = 0u64;
        let mut from = range.0;
        loop {
            let (batch, stop) = self.read_log_range(
                Direction::Forward,
                LogFrom::Position(from),
                (BATCH, usize::MAX),
                (filter, Visibility::Visible, cancel),
                range,
            )?;
            if let Some(stop) = stop {
                return Err(stop.error);
            }
            n += batch.len() as u64;
            match batch.last() {
                Some(last) if batch.len() == BATCH => from = last.position.saturating_add(1),
                _ => return Ok(n),
            }
        }
    }

    /// The number of events, for a filter that admits every event, when
    /// nothing can hide one: each sealed segment wholly published counts the
    /// events its index header records; the others (the active segment)
    /// count their streams' entries as [`Self::count_streams_from_index`]
    /// does. `None` when the filter or the store needs more.
    fn count_everything_from_headers(&self, filter: &Filter) -> Result<Option<u64>> {
        if !filter.is_empty() || !self.damage.is_empty() || !self.metadata.read().by_stream.is_empty() {
            return Ok(None);
        }
        let published = self.published();
        let mut n = 0u64;
        for seg in self.segments() {
            let counted = seg.with(|l| {
                if l.next_position() <= published
                    && let Some(c) = l.event_count()
                {
                    return Some(c);
                }
                Some(stream_counts(l, published, filter)?.iter().map(|(_, c)| c).sum())
            });
            seg.index_damage()?;
            match counted {
                Some(c) => n += c,
                None => return Ok(None),
            }
        }
        Ok(Some(n))
    }

    /// Each admitted stream's number of events, from the stream indexes
    /// alone; `None` when the filter or the store needs the events read. An
    /// index section found damaged on first use (which then answers nothing)
    /// fails the count, never shortens it.
    fn count_streams_from_index(&self, filter: &Filter, cancel: &Cancel) -> Result<Option<BTreeMap<String, u64>>> {
        let streams_only = Filter {
            types: Vec::new(),
            tags: Vec::new(),
            since_micros: None,
            until_micros: None,
            type_regex: None,
            type_patterns: Vec::new(),
            metadata: Vec::new(),
            ..filter.clone()
        };
        if streams_only != *filter || !self.damage.is_empty() || !self.metadata.read().by_stream.is_empty() {
            return Ok(None);
        }
        self.sum_from_indexes(cancel, |l, published| stream_counts(l, published, filter))
    }

    /// Adds up over every segment the counts `per_segment` takes from its
    /// index alone (given the head: the active index takes an event before
    /// the head moves past it, and only what a read may return counts); `None`
    /// as soon as one segment's index cannot answer exactly. An index section
    /// found damaged on first use (which then answers nothing) fails the
    /// count, never shortens it.
    fn sum_from_indexes(
        &self,
        cancel: &Cancel,
        per_segment: impl Fn(&dyn crate::format::index::Lookup, u64) -> Option<Vec<(String, u64)>>,
    ) -> Result<Option<BTreeMap<String, u64>>> {
        let published = self.published();
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for seg in self.segments() {
            cancel.check()?;
            let counts = seg.with(|l| per_segment(l, published));
            seg.index_damage()?;
            let Some(counts) = counts else {
                return Ok(None);
            };
            for (key, n) in counts {
                if n > 0 {
                    *out.entry(key).or_default() += n;
                }
            }
        }
        Ok(Some(out))
    }
}

/// Each stream of one segment that `filter` admits, with its number of
/// events before `published`, from the segment's stream lookup; `None` if
/// that lookup is not exact (two of its streams share a hash).
///
/// A sealed segment wholly published that holds no lost or removed position
/// (its header's number of events is its number of positions) holds every
/// revision of a stream between the first and the last it summarises, since
/// revisions are handed out one after another: there the count is the
/// summary's span, and no entry is decoded.
fn stream_counts(l: &dyn Lookup, published: u64, filter: &Filter) -> Option<Vec<(String, u64)>> {
    let streams = l.streams();
    // Lookups by hash are exact unless two of the segment's streams share one.
    let hashes: HashSet<u64> = streams.iter().map(|(n, _)| hash_str(n)).collect();
    if hashes.len() != streams.len() {
        return None;
    }
    let positions = l.next_position().saturating_sub(l.base());
    let whole = l.next_position() <= published && l.event_count() == Some(positions);
    let counts = streams
        .into_iter()
        .filter(|(name, _)| filter.admits_stream(name))
        .map(|(name, s)| {
            let span = s
                .last_revision
                .checked_sub(s.first_revision)
                .map(|d| d.saturating_add(1));
            let n = match span {
                Some(n) if whole => n,
                _ => {
                    let entries = l.stream_entries(&name, 0, true, usize::MAX);
                    entries.iter().filter(|(_, p)| *p < published).count() as u64
                }
            };
            (name, n)
        })
        .collect();
    Some(counts)
}

/// The group an event counts in.
fn group_key(by: GroupBy, stream: &str, event_type: &str, timestamp_micros: i64) -> String {
    match by {
        GroupBy::Type => event_type.to_string(),
        GroupBy::Stream => stream.to_string(),
        GroupBy::Category => aggregate_of(stream).map_or(stream, |(t, _)| t).to_string(),
        GroupBy::Day => utc_day(timestamp_micros),
    }
}

/// The UTC date (`YYYY-MM-DD`) of a time in microseconds since the epoch.
fn utc_day(micros: i64) -> String {
    let days = micros.div_euclid(86_400_000_000);
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Durability, EventData, ExpectedVersion, Options, SimStorage, Store, StreamMetadata};

    /// A count by tags and indexed metadata fields over sealed segments and
    /// the active one comes from the tag postings, and equals what reading
    /// the matches counts, before and after a reopen; stream metadata sends
    /// it back to reading, as does a field that is not indexed.
    #[test]
    fn counts_by_tags_and_metadata_come_from_the_postings() {
        let sim = std::sync::Arc::new(SimStorage::new());
        let opts = || {
            Options::default()
                .no_compression()
                .durability(Durability::Never)
                .segment_size(16 * 1024)
                .indexed_metadata(["actor"])
        };
        let store = Store::open_with(sim.clone(), "/t", opts()).unwrap();
        for i in 0..600usize {
            let e = EventData::json("T", format!(r#"{{"i":{i}}}"#))
                .with_tag(["red", "green", "blue"][i % 3])
                .with_metadata(format!(r#"{{"actor":"a{}","other":"o{}"}}"#, i % 4, i % 2));
            store
                .append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![e])
                .unwrap();
        }
        let filters = [
            (Filter::all().with_tag("red"), 200),
            (Filter::all().with_metadata("actor", "a1"), 150),
            (Filter::all().with_tag("red").with_metadata("actor", "a1"), 50),
            (Filter::all().with_tag("red").with_tag("blue"), 0),
            (Filter::all().with_metadata("actor", "nobody"), 0),
        ];
        let mut store = Some(store);
        for round in 0..2 {
            let s = store.take().unwrap();
            assert!(s.segment_count() > 3, "{} segments", s.segment_count());
            for (f, want) in &filters {
                let from_index = s.shared.count_tags_from_index(f, &Cancel::default()).unwrap();
                assert_eq!(from_index, Some(*want), "round {round}: {f:?}");
                let mut read = 0;
                s.shared.for_each_match(f, &Cancel::default(), |_| read += 1).unwrap();
                assert_eq!(read, *want, "round {round}: {f:?} read");
                assert_eq!(s.count(f).unwrap(), *want);
            }
            // A field that is not indexed, another condition: read instead.
            let other = Filter::all().with_metadata("other", "o1");
            assert!(
                s.shared
                    .count_tags_from_index(&other, &Cancel::default())
                    .unwrap()
                    .is_none()
            );
            assert_eq!(s.count(&other).unwrap(), 300);
            let typed = Filter::all().with_tag("red").with_type("T");
            assert!(
                s.shared
                    .count_tags_from_index(&typed, &Cancel::default())
                    .unwrap()
                    .is_none()
            );
            drop(s);
            store = Some(Store::open_with(sim.clone(), "/t", opts()).unwrap());
        }
        let s = store.unwrap();
        s.set_stream_metadata(
            "s-1",
            StreamMetadata {
                max_count: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        let red = Filter::all().with_tag("red");
        assert!(
            s.shared
                .count_tags_from_index(&red, &Cancel::default())
                .unwrap()
                .is_none()
        );
        let mut read = 0;
        s.shared
            .for_each_match(&red, &Cancel::default(), |_| read += 1)
            .unwrap();
        assert_eq!(s.count(&red).unwrap(), read);
        assert!(read < 200);
    }

    /// A count by type pattern over sealed segments and the active one is the
    /// length of the type lists the type names point at (no event read), and
    /// equals what reading the matches counts; stream metadata, which can
    /// hide events, sends it back to reading.
    #[test]
    fn counts_by_type_pattern_come_from_the_type_names() {
        let opts = Options::default()
            .no_compression()
            .durability(Durability::Never)
            .segment_size(16 * 1024);
        let store = Store::open_with(std::sync::Arc::new(SimStorage::new()), "/c", opts).unwrap();
        let types = [
            "app.lifecycle.started",
            "app.lifecycle",
            "hook.triggered.push",
            "hook.triggered.a.b",
            "other",
        ];
        for i in 0..600usize {
            let e = EventData::json(types[i % types.len()], format!(r#"{{"i":{i}}}"#));
            store
                .append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![e])
                .unwrap();
        }
        assert!(store.segment_count() > 3, "{} segments", store.segment_count());
        let shared = &store.shared;
        for (patterns, want) in [
            (vec!["app.lifecycle.#"], 240),
            (vec!["hook.triggered.*"], 120),
            (vec!["app.lifecycle.#", "hook.triggered.*"], 360),
            (vec!["#"], 600),
            (vec!["*.*.*"], 240),
            (vec!["nothing.#"], 0),
        ] {
            let f = patterns.iter().fold(Filter::all(), |f, p| f.with_type_pattern(p));
            let from_index = shared
                .count_types_from_index(&f, &Cancel::default())
                .unwrap()
                .expect("served from the type names");
            assert_eq!(from_index.values().sum::<u64>(), want, "{patterns:?}");
            let mut read = 0;
            shared.for_each_match(&f, &Cancel::default(), |_| read += 1).unwrap();
            assert_eq!(read, want, "{patterns:?} read");
            assert_eq!(store.count(&f).unwrap(), want);
        }
        let by_type = store
            .count_by(&Filter::all().with_type_pattern("app.#"), GroupBy::Type)
            .unwrap();
        assert_eq!(
            by_type.into_iter().collect::<Vec<_>>(),
            vec![
                ("app.lifecycle".to_string(), 120),
                ("app.lifecycle.started".to_string(), 120)
            ]
        );
        // Other conditions, or metadata that may hide events: read instead.
        let f = Filter::all().with_type_pattern("app.#");
        assert!(
            shared
                .count_types_from_index(&f.clone().with_stream_prefix("s-1"), &Cancel::default())
                .unwrap()
                .is_none()
        );
        store
            .set_stream_metadata(
                "s-1",
                StreamMetadata {
                    max_count: Some(1),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(shared.count_types_from_index(&f, &Cancel::default()).unwrap().is_none());
        let mut read = 0;
        shared.for_each_match(&f, &Cancel::default(), |_| read += 1).unwrap();
        assert_eq!(store.count(&f).unwrap(), read);
        assert!(read < 240);
    }

    /// A count of everything takes each sealed segment's number of events
    /// from its index header, and equals what a read returns, also where a
    /// repair recorded a damaged event as lost (a position without an event).
    #[test]
    fn a_count_of_everything_comes_from_the_headers_and_equals_a_read() {
        let sim = std::sync::Arc::new(SimStorage::new());
        let opts = || {
            Options::default()
                .no_compression()
                .durability(Durability::Always)
                .segment_size(16 * 1024)
        };
        let dir = std::path::Path::new("/all");
        let store = Store::open_with(sim.clone(), dir, opts()).unwrap();
        for i in 0..600usize {
            let e = EventData::json("T", format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(40)));
            store
                .append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![e])
                .unwrap();
        }
        store.close().unwrap();
        let mut segs: Vec<String> = crate::storage::Storage::list(&*sim, dir)
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".seg"))
            .collect();
        segs.sort();
        let seg = dir.join(&segs[1]);
        let bytes = sim.read_file(&seg).unwrap();
        // An event in the middle of the segment: its stream has events
        // there before and after it.
        let at = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"{\"i\"")
            .nth(20)
            .unwrap()
            .0 as u64
            + 2;
        sim.flip_bit(&seg, at, 2).unwrap();
        assert_eq!(crate::repair_with(sim.clone(), dir).unwrap().lost_positions, 1);

        let store = Store::open_with(sim.clone(), dir, opts()).unwrap();
        assert!(store.segment_count() > 3, "{} segments", store.segment_count());
        let shared = &store.shared;
        let from_headers = shared.count_everything_from_headers(&Filter::all()).unwrap();
        assert_eq!(from_headers, Some(599));
        let mut read = 0;
        shared
            .for_each_match(&Filter::all(), &Cancel::default(), |_| read += 1)
            .unwrap();
        assert_eq!(read, 599);
        assert_eq!(store.count(&Filter::all()).unwrap(), 599);
        // Another condition is not everything.
        assert!(
            shared
                .count_everything_from_headers(&Filter::all().with_type("T"))
                .unwrap()
                .is_none()
        );
        // Streams are counted from the summaries in the segments without a
        // lost position, from their entries in the one with it: each as a read.
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        shared
            .for_each_match(&Filter::all(), &Cancel::default(), |e| {
                *want.entry(e.stream.clone()).or_default() += 1
            })
            .unwrap();
        let all_streams = Filter::all().with_aggregate_type("s");
        assert_eq!(store.count_by(&all_streams, GroupBy::Stream).unwrap(), want);
        assert_eq!(store.count(&all_streams).unwrap(), 599);
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(86_400_000_000 - 1), "1970-01-01");
        assert_eq!(utc_day(-1), "1969-12-31");
        // 2000-02-29T12:00:00Z and 2024-12-31T23:59:59Z.
        assert_eq!(utc_day(951_825_600_000_000), "2000-02-29");
        assert_eq!(utc_day(1_735_689_599_000_000), "2024-12-31");
        assert_eq!(utc_day(1_735_689_600_000_000), "2025-01-01");
    }

    #[test]
    fn categories_split_at_the_first_dash() {
        assert_eq!(group_key(GroupBy::Category, "order-42-a", "", 0), "order");
        assert_eq!(group_key(GroupBy::Category, "order", "", 0), "order");
        assert_eq!(group_key(GroupBy::Type, "s", "T", 0), "T");
    }
}
