//! Which positions of one segment a filter on the log may match, found in
//! the segment's indexes (types, tags, stream names, indexed metadata
//! fields), so that a filtered read decodes those frames only.
//!
//! This module owns the choice of candidates; it must never decode a frame
//! or decide what a read returns (the read checks every candidate against
//! the whole filter).

use crate::format::index::{Lookup, MetaFields, hash_str, meta_key};
use crate::log::segments::SegRef;
use crate::query::Filter;

/// Most matched types whose lists a read takes a window at a time (see
/// [`candidates`]).
const MAX_WINDOWED_TYPES: usize = 64;

/// The candidate positions of one segment for a filter, from its indexes.
pub(crate) enum Candidates {
    /// Every position.
    All,
    /// These positions, ascending.
    List(Vec<u64>),
    /// The positions of the types with these hashes (ascending, distinct),
    /// which `matched` positions of the segment hold: taken from the type
    /// lists a window at a time by [`TypeWindows`].
    Types { hashes: Vec<u64>, matched: u64 },
}

/// The positions of a segment's types with some hashes within `lo..hi`, in
/// the order of the read, gathered from the type lists a window of
/// positions at a time, each window twice as wide as the one before: a page
/// of a pattern that matches much of the segment merges the lists near
/// where it starts only, not every one of them whole.
pub(crate) struct TypeWindows {
    seg: SegRef,
    hashes: Vec<u64>,
    /// The positions not yet gathered.
    lo: u64,
    hi: u64,
    forward: bool,
    /// Positions the next window spans.
    width: u64,
    /// Gathered and not yet returned, in the read's order.
    ready: std::vec::IntoIter<u64>,
}

impl TypeWindows {
    /// The positions of `seg`'s types with these `hashes` within `lo..hi`,
    /// forward or backward, the first window `width` positions wide.
    pub(crate) fn new(seg: SegRef, hashes: Vec<u64>, lo: u64, hi: u64, forward: bool, width: u64) -> Self {
        TypeWindows {
            seg,
            hashes,
            lo,
            hi,
            forward,
            width,
            ready: Vec::new().into_iter(),
        }
    }
}

impl Iterator for TypeWindows {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        loop {
            if let Some(p) = self.ready.next() {
                return Some(p);
            }
            if self.hi <= self.lo {
                return None;
            }
            let width = self.width.max(1);
            let (a, b) = if self.forward {
                (self.lo, self.lo.saturating_add(width).min(self.hi))
            } else {
                (self.hi.saturating_sub(width).max(self.lo), self.hi)
            };
            let mut found: Vec<u64> = self
                .seg
                .with(|l| self.hashes.iter().flat_map(|h| l.type_positions_in(*h, a, b)).collect());
            found.sort_unstable();
            found.dedup();
            if self.forward {
                self.lo = b;
            } else {
                found.reverse();
                self.hi = a;
            }
            self.width = width.saturating_mul(2);
            self.ready = found.into_iter();
        }
    }
}

/// Candidate positions of a segment for a filter, from the indexes. A
/// metadata condition narrows them when its field is one of the store's
/// indexed `fields` and the segment's index was built with exactly those
/// fields; otherwise it is checked on each decoded event only. Type
/// patterns that are the only narrowing condition (no type, tag, indexed
/// metadata value or stream condition) give the types they match, to be
/// read a window at a time.
pub(crate) fn candidates(l: &dyn Lookup, f: &Filter, fields: &MetaFields) -> Candidates {
    let indexed = !fields.is_empty() && l.meta_fingerprint() == fields.fingerprint();
    let meta_keys: Vec<u64> = f
        .metadata
        .iter()
        .filter(|(k, _)| indexed && fields.contains(k))
        .map(|(k, v)| meta_key(k, v))
        .collect();
    // With a stream condition a read takes the paths it took before the
    // windows ([`listed`]: the stream's entries where the pattern is dense).
    if f.types.is_empty()
        && f.tags.is_empty()
        && meta_keys.is_empty()
        && !f.has_stream_condition()
        && let Some((hashes, matched)) = pattern_types(l, f)
    {
        // Each window looks up every matched type again, so windows serve
        // only a few types. Beyond that, where the types match a quarter of
        // the segment or more, reading it in order finds a match every few
        // events for less; where they match less, their lists are merged
        // once (a page that passes a long stretch without matches would
        // otherwise look every type up once per window: 2.5-4.3x slower for
        // 10,000 sparse types, in the review).
        if hashes.len() <= MAX_WINDOWED_TYPES {
            return Candidates::Types { hashes, matched };
        }
        if matched.saturating_mul(4) > l.next_position().saturating_sub(l.base()) {
            return Candidates::All;
        }
    }
    match listed(l, f, &meta_keys) {
        Some(list) => Candidates::List(list),
        None => Candidates::All,
    }
}

/// The hashes of the types the filter's type patterns match in the segment
/// (ascending, distinct), and how many positions the type lists give for
/// them; `None` without patterns, or where a wildcard meets an index that
/// keeps no type names.
fn pattern_types(l: &dyn Lookup, f: &Filter) -> Option<(Vec<u64>, u64)> {
    if f.type_patterns.is_empty() {
        return None;
    }
    let literals: Option<Vec<&str>> = f.type_patterns.iter().map(|p| p.literal()).collect();
    let mut hashes: Vec<u64> = match literals {
        Some(names) => names.into_iter().map(hash_str).collect(),
        None => l
            .type_catalog()?
            .names
            .iter()
            .filter(|n| crate::topic::any_match(&f.type_patterns, n))
            .map(|n| hash_str(n))
            .collect(),
    };
    hashes.sort_unstable();
    hashes.dedup();
    let matched = hashes.iter().map(|h| l.type_count(*h)).sum();
    Some((hashes, matched))
}

/// Candidate positions of a segment for a filter's types, tags, indexed
/// metadata (`meta_keys`), type patterns and streams, from the indexes;
/// `None` means every position.
fn listed(l: &dyn Lookup, f: &Filter, meta_keys: &[u64]) -> Option<Vec<u64>> {
    let mut found: Option<Vec<u64>> = None;
    if !f.types.is_empty() {
        let mut all: Vec<u64> = f.types.iter().flat_map(|t| l.type_positions(hash_str(t))).collect();
        all.sort_unstable();
        all.dedup();
        found = Some(all);
    }
    if let Some(list) = literal_type_positions(l, f) {
        found = Some(match found {
            None => list,
            Some(mut c) => {
                c.retain(|p| list.binary_search(p).is_ok());
                c
            }
        });
    }
    // Every tag (and indexed metadata value) must be present: intersect with each one's list.
    for key in f.tags.iter().map(|t| hash_str(t)).chain(meta_keys.iter().copied()) {
        let list = l.tag_positions(key);
        found = Some(match found {
            None => list,
            Some(mut c) => {
                c.retain(|p| list.binary_search(p).is_ok());
                c
            }
        });
    }
    if found.is_some() {
        return found;
    }
    if f.has_stream_condition() {
        let mut all = Vec::new();
        for (name, s) in l.streams() {
            if f.admits_stream(&name) {
                // Only a limit on entries: a count past usize::MAX means no limit.
                let n = usize::try_from(s.last_revision.saturating_sub(s.first_revision).saturating_add(1))
                    .unwrap_or(usize::MAX);
                all.extend(
                    l.stream_entries(&name, s.first_revision, true, n)
                        .into_iter()
                        .map(|(_, p)| p),
                );
            }
        }
        all.sort_unstable();
        all.dedup();
        return Some(all);
    }
    None
}

/// Candidate positions of the filter's type patterns: each pattern without
/// a wildcard is one type, found by hash as `types` are; patterns with
/// wildcards are matched against the segment's type names where its index
/// keeps them (the memory index, version-3 and -4 files). `None` when there are no
/// patterns, or a wildcard meets an index without names or matches a
/// quarter of the segment or more (every position is then a candidate).
fn literal_type_positions(l: &dyn Lookup, f: &Filter) -> Option<Vec<u64>> {
    if f.type_patterns.is_empty() {
        return None;
    }
    let literals: Option<Vec<&str>> = f.type_patterns.iter().map(|p| p.literal()).collect();
    let types: Vec<String> = match literals {
        Some(l) => l.into_iter().map(str::to_string).collect(),
        None => {
            let names: Vec<String> = l
                .type_catalog()?
                .names
                .into_iter()
                .filter(|n| crate::topic::any_match(&f.type_patterns, n))
                .collect();
            // Where the names match a quarter of the segment or more, reading
            // it in order finds a match every few events, and a page stops
            // early; gathering and sorting every candidate would cost more.
            let matched: u64 = names.iter().map(|n| l.type_count(hash_str(n))).sum();
            if matched.saturating_mul(4) > l.next_position().saturating_sub(l.base()) {
                return None;
            }
            names
        }
    };
    let mut all: Vec<u64> = types.iter().flat_map(|t| l.type_positions(hash_str(t))).collect();
    all.sort_unstable();
    all.dedup();
    Some(all)
}
