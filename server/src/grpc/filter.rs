//! The protocol's filters on the global log: by stream name or by event
//! type, with a regular expression (.NET "search" semantics: a match
//! anywhere) or a list of prefixes, plus the checkpoint interval of a
//! filtered subscription.
//!
//! The clients' default filter uses negative lookahead, so this protocol
//! matches with `fancy-regex`, bounded in backtracking; unlike annal's own
//! [`annal::Pattern`] (which a persistent group's filter uses, and where a
//! match past the bound counts as none), a read fails when a match runs past
//! the bound. It owns that matching. It must never read the store.

use annal::{Filter, RecordedEvent};
use tonic::Status;

use super::proto::event_store::client::streams::read_req::options::FilterOptions;
use super::proto::event_store::client::streams::read_req::options::filter_options::{self, Expression, Window};

/// Most backtracking steps one match may take; past it the read fails.
const BACKTRACK_LIMIT: usize = 100_000;

/// What the filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Stream,
    Type,
}

/// How it matches.
#[derive(Debug)]
enum Test {
    Prefixes(Vec<String>),
    Regex(Box<fancy_regex::Regex>),
    All,
}

/// A compiled filter.
#[derive(Debug)]
pub(crate) struct EventFilter {
    field: Field,
    test: Test,
    /// A filtered subscription reports a checkpoint after this many events considered.
    pub(crate) checkpoint_interval: u64,
}

impl EventFilter {
    /// Compiles a request's filter.
    pub(crate) fn new(options: &FilterOptions) -> Result<EventFilter, Status> {
        let (field, expr): (Field, &Expression) = match &options.filter {
            Some(filter_options::Filter::StreamIdentifier(e)) => (Field::Stream, e),
            Some(filter_options::Filter::EventType(e)) => (Field::Type, e),
            None => {
                return Err(Status::invalid_argument(
                    "the filter names neither stream nor event type",
                ));
            }
        };
        let test = if !expr.prefix.is_empty() {
            Test::Prefixes(expr.prefix.clone())
        } else if !expr.regex.is_empty() {
            let re = fancy_regex::RegexBuilder::new(&expr.regex)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .map_err(|e| Status::invalid_argument(format!("filter regex {:?}: {e}", expr.regex)))?;
            Test::Regex(Box::new(re))
        } else {
            Test::All
        };
        let window = match options.window {
            Some(Window::Max(m)) => u64::from(m.max(1)),
            Some(Window::Count(_)) | None => 32,
        };
        let multiplier = u64::from(options.checkpoint_interval_multiplier.max(1));
        Ok(EventFilter {
            field,
            test,
            checkpoint_interval: window.saturating_mul(multiplier).max(1),
        })
    }

    /// The stream-name prefixes the filter keeps to, if it is a prefix
    /// filter on stream names (a token limited to some streams may use it
    /// within them).
    pub(crate) fn stream_prefixes(&self) -> Option<&[String]> {
        match (&self.field, &self.test) {
            (Field::Stream, Test::Prefixes(p)) => Some(p),
            _ => None,
        }
    }

    /// annal's own filter for the events a read or subscription of `$all`
    /// under this filter may show, if the store can find them through its
    /// indexes: a prefix filter on stream names none of whose prefixes names
    /// a system stream. The store then never reads another stream's event,
    /// so neither its cost nor its damage (a frame that fails its check, a
    /// personal field whose key was lost) reaches this read. The protocol's
    /// filter still decides what is shown.
    pub(crate) fn store_filter(&self) -> Option<Filter> {
        match self.stream_prefixes() {
            Some([one]) if !one.starts_with('$') => Some(Filter::all().with_stream_prefix(one.as_str())),
            Some(many) if many.iter().all(|p| !p.starts_with('$')) => {
                Filter::all().with_stream_regex(&prefixes_regex(many)).ok()
            }
            _ => None,
        }
    }

    /// True when a read with this filter may pass over many events it does
    /// not show, in numbers no index bounds: any filter the store's indexes
    /// cannot serve (see [`EventFilter::store_filter`]) but one that admits
    /// everything. Such a read of `$all` takes one of the server's
    /// `max_scans` places.
    pub(crate) fn needs_scan(&self) -> bool {
        !matches!(self.test, Test::All) && self.store_filter().is_none()
    }

    /// True if the event passes.
    pub(crate) fn matches(&self, e: &RecordedEvent) -> Result<bool, Status> {
        let text = match self.field {
            Field::Stream => e.stream.as_str(),
            Field::Type => e.event_type.as_str(),
        };
        match &self.test {
            Test::All => Ok(true),
            Test::Prefixes(p) => Ok(p.iter().any(|p| text.starts_with(p.as_str()))),
            Test::Regex(re) => re
                .is_match(text)
                .map_err(|e| Status::invalid_argument(format!("the filter regex failed on {text:?}: {e}"))),
        }
    }
}

/// A regular expression matching names that start with one of `prefixes`.
pub(crate) fn prefixes_regex(prefixes: &[String]) -> String {
    let mut re = String::from("^(?:");
    for (i, p) in prefixes.iter().enumerate() {
        if i > 0 {
            re.push('|');
        }
        for c in p.chars() {
            if "\\.+*?()|[]{}^$#&-~".contains(c) {
                re.push('\\');
            }
            re.push(c);
        }
    }
    re.push(')');
    re
}

/// True for annal's bookkeeping streams (consumer groups' definitions,
/// checkpoints and parked events), which a filtered read of `$all` hides,
/// as KurrentDB hides its own.
pub(crate) fn is_bookkeeping(stream: &str) -> bool {
    stream == "$groups" || stream.starts_with("$group-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream: &str, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            stream: stream.into(),
            revision: 0,
            position: 0,
            id: ::uuid::Uuid::nil(),
            event_type: event_type.into(),
            content_type: annal::ContentType::Json,
            data: Default::default(),
            metadata: Default::default(),
            tags: vec![],
            timestamp_micros: 0,
            personal: annal::Personal::Plain,
        }
    }

    fn filter(field: Field, regex: &str, prefix: &[&str]) -> EventFilter {
        let e = Expression {
            regex: regex.into(),
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
        };
        EventFilter::new(&FilterOptions {
            filter: Some(match field {
                Field::Stream => filter_options::Filter::StreamIdentifier(e),
                Field::Type => filter_options::Filter::EventType(e),
            }),
            window: Some(Window::Max(10)),
            checkpoint_interval_multiplier: 2,
        })
        .unwrap()
    }

    #[test]
    fn the_clients_default_exclusion_and_search_semantics() {
        // The Python client's default: exclude system, PersistentConfig and Result types.
        let f = filter(Field::Type, r"^(?!(\$.+$|PersistentConfig\d+$|Result$))", &[]);
        assert!(f.matches(&event("s", "OrderPlaced")).unwrap());
        assert!(f.matches(&event("s", "Results")).unwrap());
        for t in ["$metadata", "PersistentConfig1", "Result"] {
            assert!(!f.matches(&event("s", t)).unwrap(), "{t}");
        }
        assert_eq!(f.checkpoint_interval, 20);
        // A match anywhere counts.
        assert!(
            filter(Field::Stream, "der-", &[])
                .matches(&event("order-1", "T"))
                .unwrap()
        );
        let p = filter(Field::Stream, "", &["order-", "user-"]);
        let served = p.store_filter().expect("two prefixes are served by the stream index");
        assert!(served.admits_stream("user-2") && served.admits_stream("order-") && !served.admits_stream("a-user-2"));
        assert!(!p.needs_scan());
        assert_eq!(
            filter(Field::Stream, "", &["order-"]).store_filter(),
            Some(Filter::all().with_stream_prefix("order-"))
        );
        assert_eq!(filter(Field::Stream, "", &["$$order-"]).store_filter(), None);
        assert_eq!(filter(Field::Stream, "", &["order-", "$$order-"]).store_filter(), None);
        assert_eq!(filter(Field::Type, "", &["Order"]).store_filter(), None);
        assert!(filter(Field::Type, "", &["Order"]).needs_scan());
        assert!(filter(Field::Stream, "^a", &[]).needs_scan());
        assert!(!filter(Field::Stream, "", &["order-"]).needs_scan());
        assert!(!filter(Field::Type, "", &[]).needs_scan(), "admits everything");
        assert!(p.matches(&event("user-2", "T")).unwrap());
        assert!(!p.matches(&event("a-user-2", "T")).unwrap());
        assert!(is_bookkeeping("$group-g-checkpoint") && !is_bookkeeping("$$order-1"));
    }
}
