//! Filters for reads of the global log, queries for consistency-boundary
//! appends, and the cancellation signal of long reads ([`Cancel`]).
//!
//! This module owns what it means for an event to match; it must never decide
//! how candidates are found (the store uses the indexes for that).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::format::record::EventView;
pub use crate::topic::TopicPattern;

/// Asks a long read or count to stop early: [`crate::Store::read_all_cancellable`],
/// [`crate::Store::count_cancellable`] and [`crate::Store::count_by_cancellable`]
/// look at it between events and fail with [`crate::Error::Cancelled`] once
/// [`Cancel::cancel`] was called on it (or a clone) or its deadline passed.
/// Clones share the signal. [`Cancel::default`] never cancels.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Option<Arc<AtomicBool>>,
    deadline: Option<Instant>,
}

impl Cancel {
    /// A signal that is not cancelled until [`Cancel::cancel`] is called.
    pub fn new() -> Cancel {
        Cancel {
            flag: Some(Arc::new(AtomicBool::new(false))),
            deadline: None,
        }
    }

    /// The same signal, which also counts as cancelled from `deadline` on.
    pub fn with_deadline(mut self, deadline: Instant) -> Cancel {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// Cancels the work that looks at this signal or one of its clones.
    /// Does nothing on a signal made by [`Cancel::default`] (which has no flag).
    pub fn cancel(&self) {
        if let Some(f) = &self.flag {
            f.store(true, Ordering::Release);
        }
    }

    /// True once cancelled, or once the deadline has passed.
    pub fn is_cancelled(&self) -> bool {
        self.flag.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// True if [`Cancel::cancel`] can cancel it (it was not made by [`Cancel::default`]).
    pub(crate) fn can_be_cancelled(&self) -> bool {
        self.flag.is_some()
    }

    /// [`crate::Error::Cancelled`] if cancelled.
    pub(crate) fn check(&self) -> crate::error::Result<()> {
        if self.is_cancelled() {
            return Err(crate::error::Error::Cancelled);
        }
        Ok(())
    }
}

/// A filter on the global log. Every given part must hold; empty parts hold for all.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// The event's type is one of these.
    pub types: Vec<String>,
    /// The event carries every one of these tags.
    pub tags: Vec<String>,
    /// The stream name starts with this prefix (a category such as `order-`).
    pub stream_prefix: Option<String>,
    /// Recorded at or after this time (microseconds since the Unix epoch).
    pub since_micros: Option<i64>,
    /// Recorded strictly before this time (microseconds since the Unix epoch).
    pub until_micros: Option<i64>,
    /// The stream name matches this regular expression (searched anywhere; anchor with `^…$`).
    pub stream_regex: Option<Pattern>,
    /// The event type matches this regular expression.
    pub type_regex: Option<Pattern>,
    /// The event type matches one of these topic patterns (none given: any type).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub type_patterns: Vec<TopicPattern>,
    /// The stream name matches one of these topic patterns (none given: any stream).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stream_patterns: Vec<TopicPattern>,
    /// The stream is an aggregate of this type: its name, split at its first
    /// `-`, starts with this (`order` takes `order-42`, not `orders-1` nor `order`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate_type: Option<String>,
    /// The stream is the aggregate with this id: its name, split at its first
    /// `-`, has exactly this after the `-` (`42` takes `order-42` and
    /// `invoice-42`; `order-1-x` has the id `1-x`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate_id: Option<String>,
    /// The event's metadata is a JSON object whose top-level key `.0` holds
    /// the string `.1`, for each pair (AND-ed). A key in the store's
    /// [`crate::Options::indexed_metadata`] is looked up in the index; any
    /// other is matched by reading each candidate event, so combine it with
    /// an indexed condition (type, tag, stream, time) on a large store.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<(String, String)>,
}

/// The aggregate type and id of a stream name under the `<type>-<id>`
/// convention: split at the first `-`; `None` if the name has no `-`.
pub fn aggregate_of(stream: &str) -> Option<(&str, &str)> {
    stream.split_once('-')
}

/// Most backtracking steps one match of a [`Pattern`] with look-around or
/// backreferences may take; past it the match counts as failed.
pub const BACKTRACK_LIMIT: usize = 100_000;

/// A compiled regular expression that compares, prints and serializes as its source.
///
/// The syntax is the `regex` crate's, extended by `fancy-regex` with
/// look-around (`(?=…)`, `(?!…)`, `(?<=…)`, `(?<!…)`), backreferences and
/// atomic groups: an expression the `regex` crate accepts is matched by it
/// (linear time); only the others go to the backtracking matcher, bounded by
/// [`BACKTRACK_LIMIT`] steps per match.
#[derive(Clone)]
pub struct Pattern(Matcher);

#[derive(Clone)]
enum Matcher {
    /// Linear-time matching.
    Plain(regex::Regex),
    /// Backtracking, for look-around and backreferences.
    Fancy(Box<fancy_regex::Regex>),
}

impl Pattern {
    /// Compiles a regular expression (the `regex` crate's syntax, or
    /// `fancy-regex`'s for look-around and backreferences).
    pub fn new(source: &str) -> crate::error::Result<Self> {
        let plain = match regex::Regex::new(source) {
            Ok(re) => return Ok(Pattern(Matcher::Plain(re))),
            Err(e) => e,
        };
        fancy_regex::RegexBuilder::new(source)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map(|re| Pattern(Matcher::Fancy(Box::new(re))))
            .map_err(|fancy| {
                crate::error::Error::InvalidInput(format!("regular expression {source:?}: {plain}; {fancy}"))
            })
    }

    /// The expression's source.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Matcher::Plain(re) => re.as_str(),
            Matcher::Fancy(re) => re.as_str(),
        }
    }

    /// True if the expression matches somewhere in `text`. A match that
    /// would take more than [`BACKTRACK_LIMIT`] backtracking steps counts as
    /// no match.
    pub fn is_match(&self, text: &str) -> bool {
        match &self.0 {
            Matcher::Plain(re) => re.is_match(text),
            Matcher::Fancy(re) => re.is_match(text).unwrap_or(false),
        }
    }
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Pattern::new(&source).map_err(serde::de::Error::custom)
    }
}

impl Filter {
    /// A filter that passes everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// True when the filter passes everything.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Adds an accepted event type.
    pub fn with_type(mut self, t: impl Into<String>) -> Self {
        self.types.push(t.into());
        self
    }

    /// Adds a required tag.
    pub fn with_tag(mut self, t: impl Into<String>) -> Self {
        self.tags.push(t.into());
        self
    }

    /// Sets the stream prefix.
    pub fn with_stream_prefix(mut self, p: impl Into<String>) -> Self {
        self.stream_prefix = Some(p.into());
        self
    }

    /// Requires the stream name to match a regular expression.
    pub fn with_stream_regex(mut self, pattern: &str) -> crate::error::Result<Self> {
        self.stream_regex = Some(Pattern::new(pattern)?);
        Ok(self)
    }

    /// Requires the event type to match a regular expression.
    pub fn with_type_regex(mut self, pattern: &str) -> crate::error::Result<Self> {
        self.type_regex = Some(Pattern::new(pattern)?);
        Ok(self)
    }

    /// Adds an accepted topic pattern for the event type (several are OR-ed).
    pub fn with_type_pattern(mut self, pattern: &str) -> Self {
        self.type_patterns.push(TopicPattern::new(pattern));
        self
    }

    /// Adds an accepted topic pattern for the stream name (several are OR-ed).
    pub fn with_stream_pattern(mut self, pattern: &str) -> Self {
        self.stream_patterns.push(TopicPattern::new(pattern));
        self
    }

    /// Requires the stream to be an aggregate of this type (`<type>-<id>`).
    pub fn with_aggregate_type(mut self, aggregate_type: impl Into<String>) -> Self {
        self.aggregate_type = Some(aggregate_type.into());
        self
    }

    /// Requires the stream to be the aggregate with this id (`<type>-<id>`).
    pub fn with_aggregate_id(mut self, aggregate_id: impl Into<String>) -> Self {
        self.aggregate_id = Some(aggregate_id.into());
        self
    }

    /// Requires the metadata's top-level `key` to hold the string `value` (AND-ed).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// True if the stream name passes the filter's stream conditions
    /// (prefix, regular expression, topic patterns, aggregate).
    pub fn admits_stream(&self, stream: &str) -> bool {
        self.stream_prefix.as_deref().is_none_or(|p| stream.starts_with(p))
            && self.stream_regex.as_ref().is_none_or(|r| r.is_match(stream))
            && crate::topic::any_match(&self.stream_patterns, stream)
            && self.admits_aggregate(stream)
    }

    fn admits_aggregate(&self, stream: &str) -> bool {
        if self.aggregate_type.is_none() && self.aggregate_id.is_none() {
            return true;
        }
        aggregate_of(stream).is_some_and(|(t, id)| {
            self.aggregate_type.as_deref().is_none_or(|want| want == t)
                && self.aggregate_id.as_deref().is_none_or(|want| want == id)
        })
    }

    /// True when a read with this filter may have to decode many events the
    /// filter refuses, in numbers its indexes do not bound: it has a
    /// condition checked only on decoded events, a type regular expression
    /// or a metadata field not among `indexed_metadata` (the store's
    /// [`crate::Options::indexed_metadata`]). Types, tags, stream
    /// conditions (matched against the indexes' stream names), topic
    /// patterns, aggregates, time bounds and indexed metadata fields are
    /// served from the indexes. (A wildcard type pattern over an old
    /// segment whose index keeps no type names reads that segment in order.)
    pub fn needs_scan(&self, indexed_metadata: &[String]) -> bool {
        self.type_regex.is_some()
            || self
                .metadata
                .iter()
                .any(|(k, _)| !indexed_metadata.iter().any(|f| f == k))
    }

    /// True if the filter has a condition on stream names.
    pub fn has_stream_condition(&self) -> bool {
        self.stream_prefix.is_some()
            || self.stream_regex.is_some()
            || !self.stream_patterns.is_empty()
            || self.aggregate_type.is_some()
            || self.aggregate_id.is_some()
    }

    /// True if the event type passes the filter's type conditions.
    pub fn admits_type(&self, event_type: &str) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self.type_regex.as_ref().is_none_or(|r| r.is_match(event_type))
            && crate::topic::any_match(&self.type_patterns, event_type)
    }

    /// True if the metadata passes every metadata condition: it is one JSON
    /// object whose top-level keys hold those strings, read as the metadata
    /// index reads them (the last value of a repeated key; a document a full
    /// JSON parse refuses, say with a number out of `f64`'s range, passes none).
    pub fn admits_metadata(&self, metadata: &[u8]) -> bool {
        if self.metadata.is_empty() {
            return true;
        }
        let mut keys: Vec<&str> = Vec::with_capacity(self.metadata.len());
        for (k, _) in &self.metadata {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
        let Some(values) = crate::json_fields::string_fields(metadata, &keys) else {
            return false;
        };
        self.metadata.iter().all(|(k, v)| {
            keys.iter()
                .position(|n| *n == k.as_str())
                .and_then(|i| values[i].as_deref())
                .is_some_and(|s| s == v)
        })
    }

    /// Sets the time range `[since, until)`, each bound optional.
    pub fn with_time(mut self, since_micros: Option<i64>, until_micros: Option<i64>) -> Self {
        self.since_micros = since_micros;
        self.until_micros = until_micros;
        self
    }

    /// True if the time range admits `ts`.
    pub fn admits_time(&self, ts: i64) -> bool {
        self.since_micros.is_none_or(|s| ts >= s) && self.until_micros.is_none_or(|u| ts < u)
    }

    /// False if no timestamp in `lo..=hi` passes the time bounds.
    pub fn may_admit_times(&self, lo: i64, hi: i64) -> bool {
        self.since_micros.is_none_or(|s| hi >= s) && self.until_micros.is_none_or(|u| lo < u)
    }

    /// True if the event passes the filter.
    pub fn matches(&self, ev: &EventView<'_>) -> bool {
        self.admits_type(ev.event_type)
            && self.tags.iter().all(|t| ev.tags.contains(&t.as_str()))
            && self.admits_stream(ev.stream)
            && self.admits_time(ev.timestamp)
            && self.admits_metadata(ev.metadata)
    }
}

/// One item of a consistency-boundary query: events whose type is one of
/// `types` (if any are given) and that carry all of `tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryItem {
    /// Accepted event types (empty: any type).
    pub types: Vec<String>,
    /// Required tags (empty: no tag required).
    pub tags: Vec<String>,
    /// Accepted topic patterns of the event type (empty: any type), OR-ed.
    pub type_patterns: Vec<TopicPattern>,
    /// Metadata fields: the top-level key must hold the string (AND-ed).
    /// Looked up in the index for a key in the store's
    /// [`crate::Options::indexed_metadata`]; otherwise the check reads
    /// candidate events.
    pub metadata: Vec<(String, String)>,
}

impl QueryItem {
    /// True if the event matches the item.
    pub fn matches(&self, ev: &EventView<'_>) -> bool {
        type_and_tags_match(&self.types, &self.tags, ev)
            && crate::topic::any_match(&self.type_patterns, ev.event_type)
            && (self.metadata.is_empty() || self.as_filter().admits_metadata(ev.metadata))
    }

    /// The item as a log filter.
    pub fn as_filter(&self) -> Filter {
        Filter {
            types: self.types.clone(),
            tags: self.tags.clone(),
            type_patterns: self.type_patterns.clone(),
            metadata: self.metadata.clone(),
            ..Filter::default()
        }
    }
}

/// A query: an event matches if it matches any item. A query with no item matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The items.
    pub items: Vec<QueryItem>,
}

impl Query {
    /// A query with one item.
    pub fn item(types: &[&str], tags: &[&str]) -> Self {
        Query {
            items: vec![QueryItem {
                types: types.iter().map(|s| s.to_string()).collect(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
                ..QueryItem::default()
            }],
        }
    }

    /// True if the event matches.
    pub fn matches(&self, ev: &EventView<'_>) -> bool {
        self.items.iter().any(|i| i.matches(ev))
    }
}

/// The condition of a consistency-boundary append: fail if an event matching
/// `query` exists at a position after `after` (or anywhere, if `after` is `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendCondition {
    /// What must not have happened.
    pub query: Query,
    /// The position the caller's decision was based on.
    pub after: Option<u64>,
}

fn type_and_tags_match(types: &[String], tags: &[String], ev: &EventView<'_>) -> bool {
    (types.is_empty() || types.iter().any(|t| t == ev.event_type)) && tags.iter().all(|t| ev.tags.contains(&t.as_str()))
}

/// How [`crate::Store::count_by`] groups the events it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// By event type.
    Type,
    /// By stream name.
    Stream,
    /// By category: the stream name up to its first `-` (the whole name if it has none).
    Category,
    /// By UTC day of the store timestamp, as `YYYY-MM-DD`.
    Day,
}

impl std::str::FromStr for GroupBy {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "type" => Ok(GroupBy::Type),
            "stream" => Ok(GroupBy::Stream),
            "category" => Ok(GroupBy::Category),
            "day" => Ok(GroupBy::Day),
            other => Err(crate::error::Error::InvalidInput(format!(
                "group by {other:?}: expected type, stream, category or day"
            ))),
        }
    }
}

/// Direction of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// Where a stream read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrom {
    /// The first event (forward) or the last one (backward), whichever the direction starts at.
    Start,
    /// The stream's last event.
    End,
    /// This revision.
    Revision(u64),
}

/// Where a read of the global log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFrom {
    /// Position 0 (forward) or the last event (backward).
    Start,
    /// The last event.
    End,
    /// This position (inclusive).
    Position(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_conditions_checked_on_decoded_events_need_a_scan() {
        let indexed = vec!["actor".to_string()];
        let served = [
            Filter::all(),
            Filter::all().with_stream_prefix("order-"),
            Filter::all().with_type("Placed").with_tag("eu"),
            Filter::all().with_type_pattern("order.*").with_stream_pattern("cart.#"),
            Filter::all().with_aggregate_type("order").with_time(Some(1), Some(2)),
            Filter::all().with_stream_regex("^order-").unwrap(),
            Filter::all().with_metadata("actor", "ann"),
        ];
        for f in served {
            assert!(!f.needs_scan(&indexed), "{f:?}");
        }
        let scans = [
            Filter::all().with_metadata("other", "x"),
            Filter::all()
                .with_stream_prefix("order-")
                .with_metadata("actor", "ann")
                .with_metadata("k", "v"),
            Filter::all().with_type_regex("^Pl").unwrap(),
        ];
        for f in scans {
            assert!(f.needs_scan(&indexed), "{f:?}");
        }
        assert!(Filter::all().with_metadata("actor", "ann").needs_scan(&[]));
    }

    #[test]
    fn patterns_take_look_around_and_keep_their_source() {
        // The KurrentDB clients' default exclusion filter on event types.
        let source = r"^(?!(\$.+$|PersistentConfig\d+$|Result$))";
        let p = Pattern::new(source).unwrap();
        assert_eq!(p.as_str(), source);
        assert!(p.is_match("OrderPlaced") && p.is_match("Results"));
        assert!(!p.is_match("$metadata") && !p.is_match("PersistentConfig1") && !p.is_match("Result"));
        assert_eq!(Pattern::new(source).unwrap(), p);
        // A plain expression stays with the linear-time matcher.
        assert!(matches!(Pattern::new("^order-").unwrap().0, Matcher::Plain(_)));
        assert!(Pattern::new("^(order").is_err());
        // A pathological expression answers (no match) without running on.
        let slow = Pattern::new(r"^(a+)+(?=b)").unwrap();
        assert!(!slow.is_match(&"a".repeat(40)));
    }
}
