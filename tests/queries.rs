//! Queries against a brute-force scan: every filter kind (types, tags, stream
//! prefix, topic patterns on types and streams, aggregates, metadata fields,
//! time) and combinations of them, read forward, backward and page by page,
//! and counted, over random stores of several segments; metadata fields
//! indexed or not, and again after a reopen that rebuilds the indexes (index
//! files deleted, or another list of indexed fields).

// Tests may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::sync::Arc;

use annal::{
    Direction, Durability, Error, EventData, ExpectedVersion, Filter, GroupBy, LogFrom, Options, RecordedEvent,
    SimStorage, Storage, Store,
};
use proptest::prelude::*;

const TYPES: &[&str] = &[
    "app.lifecycle.started",
    "app.lifecycle.stopped.now",
    "app.lifecycle",
    "hook.triggered.push",
    "hook.triggered",
    "activity.x.y",
    "a..b",
    "order",
];
const STREAMS: &[&str] = &[
    "order-1",
    "order-2",
    "order-1-x",
    "cart-1",
    "cart.eu-7",
    "plain",
    "orders-1",
];
const TYPE_PATTERNS: &[&str] = &[
    "app.lifecycle.#",
    "hook.triggered.*",
    "#",
    "*",
    "a.*.b",
    "a.#.b",
    "#.push",
    "*.lifecycle.*.#",
    "order",
    "",
    "hook.triggered",
    "a..b",
];
const STREAM_PATTERNS: &[&str] = &["order-1", "cart.*", "#", "*", "cart.#", "plain"];
const TAGS: &[&str] = &["t:1", "t:2", "vip"];
const ACTORS: &[&str] = &["agent-1", "agent-2"];
/// Tenant values: the last two are not strings, so never indexed nor matched.
const TENANTS: &[&str] = &[r#""t1""#, r#""t2""#, r#"{"id":"t1"}"#, "1"];
/// Lists of indexed metadata fields a store is opened with.
const INDEXED: &[&[&str]] = &[&[], &["actor"], &["tenant", "actor"], &["tenant"], &["n"]];

/// One event to append: stream, type, tags, actor (if the metadata has one as
/// a string), tenant (index into `TENANTS`, if it has one).
type Spec = (usize, usize, Vec<usize>, Option<usize>, Option<usize>);

fn options() -> Options {
    Options::default()
        .no_compression()
        .durability(Durability::Never)
        .segment_size(4 * 1024)
}

fn store_of(events: &[Spec]) -> Store {
    store_in(&Arc::new(SimStorage::new()), events, &[])
}

/// A store on `sim` indexing the metadata fields `indexed`, holding `events`.
fn store_in(sim: &Arc<SimStorage>, events: &[Spec], indexed: &[&str]) -> Store {
    let opts = options().indexed_metadata(indexed.iter().copied());
    let store = Store::open_with(sim.clone(), "/q", opts).unwrap();
    for (i, (s, t, tags, actor, tenant)) in events.iter().enumerate() {
        let mut e = EventData::json(TYPES[*t], format!(r#"{{"i":{i}}}"#));
        let tenant = tenant.map_or(String::new(), |t| format!(r#","tenant":{}"#, TENANTS[t]));
        e = match actor {
            Some(a) => e.with_metadata(format!(r#"{{"actor":"{}","n":{i}{tenant}}}"#, ACTORS[*a])),
            // Not a string: never matches a metadata condition.
            None => e.with_metadata(format!(r#"{{"actor":7{tenant}}}"#)),
        };
        for tag in tags {
            e = e.with_tag(TAGS[*tag]);
        }
        store.append(STREAMS[*s], ExpectedVersion::Any, vec![e]).unwrap();
    }
    store
}

/// RabbitMQ's rules, read recursively (independent of the library's matcher).
fn topic_match(pattern: &str, topic: &str) -> bool {
    fn words(s: &str) -> Vec<&str> {
        if s.is_empty() { vec![] } else { s.split('.').collect() }
    }
    fn go(p: &[&str], t: &[&str]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((&"#", rest)) => (0..=t.len()).any(|k| go(rest, &t[k..])),
            Some((&"*", rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((w, rest)) => t.first() == Some(w) && go(rest, &t[1..]),
        }
    }
    go(&words(pattern), &words(topic))
}

/// The filter as plain choices, checked by brute force.
#[derive(Debug, Clone)]
struct Choice {
    types: Vec<usize>,
    tags: Vec<usize>,
    prefix: Option<&'static str>,
    type_patterns: Vec<usize>,
    stream_patterns: Vec<usize>,
    aggregate_type: Option<&'static str>,
    aggregate_id: Option<&'static str>,
    actor: Option<usize>,
    tenant: Option<usize>,
    time: Option<(usize, usize)>,
}

impl Choice {
    fn filter(&self, times: &[i64]) -> Filter {
        let mut f = Filter::all();
        for t in &self.types {
            f = f.with_type(TYPES[*t]);
        }
        for t in &self.tags {
            f = f.with_tag(TAGS[*t]);
        }
        if let Some(p) = self.prefix {
            f = f.with_stream_prefix(p);
        }
        for p in &self.type_patterns {
            f = f.with_type_pattern(TYPE_PATTERNS[*p]);
        }
        for p in &self.stream_patterns {
            f = f.with_stream_pattern(STREAM_PATTERNS[*p]);
        }
        if let Some(a) = self.aggregate_type {
            f = f.with_aggregate_type(a);
        }
        if let Some(a) = self.aggregate_id {
            f = f.with_aggregate_id(a);
        }
        if let Some(a) = self.actor {
            f = f.with_metadata("actor", ACTORS[a]);
        }
        if let Some(t) = self.tenant {
            // "t1", "t2", or text that only a non-string value would spell.
            f = f.with_metadata("tenant", ["t1", "t2", r#"{"id":"t1"}"#, "1"][t]);
        }
        if let Some((a, b)) = self.time {
            let at = |i: usize| times.get(i).copied();
            f = f.with_time(at(a), at(b));
        }
        f
    }

    fn admits(&self, e: &RecordedEvent, times: &[i64]) -> bool {
        let meta: serde_json::Value = serde_json::from_slice(&e.metadata).unwrap();
        let (agg_type, agg_id) = match e.stream.split_once('-') {
            Some((t, i)) => (Some(t), Some(i)),
            None => (None, None),
        };
        (self.types.is_empty() || self.types.iter().any(|t| TYPES[*t] == e.event_type))
            && self.tags.iter().all(|t| e.tags.iter().any(|x| x == TAGS[*t]))
            && self.prefix.is_none_or(|p| e.stream.starts_with(p))
            && (self.type_patterns.is_empty()
                || self
                    .type_patterns
                    .iter()
                    .any(|p| topic_match(TYPE_PATTERNS[*p], &e.event_type)))
            && (self.stream_patterns.is_empty()
                || self
                    .stream_patterns
                    .iter()
                    .any(|p| topic_match(STREAM_PATTERNS[*p], &e.stream)))
            && self.aggregate_type.is_none_or(|a| agg_type == Some(a))
            && self.aggregate_id.is_none_or(|a| agg_id == Some(a))
            && self
                .actor
                .is_none_or(|a| meta.get("actor").and_then(|v| v.as_str()) == Some(ACTORS[a]))
            && self
                .tenant
                .is_none_or(|t| meta.get("tenant").and_then(|v| v.as_str()) == Some(["t1", "t2", "-", "-"][t]))
            && self.time.is_none_or(|(a, b)| {
                times.get(a).is_none_or(|s| e.timestamp_micros >= *s)
                    && times.get(b).is_none_or(|u| e.timestamp_micros < *u)
            })
    }
}

fn choice() -> impl Strategy<Value = Choice> {
    let few = |n: usize| prop::collection::vec(0..n, 0..3);
    (
        few(TYPES.len()),
        prop::collection::vec(0..TAGS.len(), 0..2),
        prop::option::of(prop::sample::select(vec!["order-", "cart", "o", ""])),
        few(TYPE_PATTERNS.len()),
        few(STREAM_PATTERNS.len()),
        prop::option::weighted(0.3, prop::sample::select(vec!["order", "cart.eu", "orders", "plain"])),
        prop::option::weighted(0.3, prop::sample::select(vec!["1", "2", "1-x", "7"])),
        prop::option::weighted(0.3, 0..ACTORS.len()),
        prop::option::weighted(0.3, 0..TENANTS.len()),
        prop::option::weighted(0.3, (0..80usize, 0..80usize)),
    )
        .prop_map(
            |(
                types,
                tags,
                prefix,
                type_patterns,
                stream_patterns,
                aggregate_type,
                aggregate_id,
                actor,
                tenant,
                time,
            )| Choice {
                types,
                tags,
                prefix,
                type_patterns,
                stream_patterns,
                aggregate_type,
                aggregate_id,
                actor,
                tenant,
                time,
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..STREAMS.len(),
        0..TYPES.len(),
        prop::collection::vec(0..TAGS.len(), 0..3),
        prop::option::weighted(0.8, 0..ACTORS.len()),
        prop::option::weighted(0.7, 0..TENANTS.len()),
    )
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

/// Reads the whole log page by page of `page`, following each page's last position.
fn paged(store: &Store, f: &Filter, direction: Direction, page: usize) -> Vec<RecordedEvent> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    let mut from = LogFrom::Start;
    loop {
        let got = store.read_all(direction, from, page, f).unwrap();
        let n = got.len();
        out.extend(got);
        let Some(last) = out.last() else { return out };
        if n < page {
            return out;
        }
        from = match direction {
            Direction::Forward => LogFrom::Position(last.position + 1),
            Direction::Backward if last.position == 0 => return out,
            Direction::Backward => LogFrom::Position(last.position - 1),
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_filter_reads_and_counts_what_a_brute_force_scan_finds(
        events in prop::collection::vec(spec(), 1..120),
        choices in prop::collection::vec(choice(), 1..6),
        indexed in 0..INDEXED.len(),
        reopen in (0..INDEXED.len(), any::<bool>()),
    ) {
        let sim = Arc::new(SimStorage::new());
        let store = store_in(&sim, &events, INDEXED[indexed]);
        let everything = store.read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all()).unwrap();
        let times: Vec<i64> = everything.iter().map(|e| e.timestamp_micros).collect();
        check_choices(&store, &everything, &times, &choices)?;
        // Reopened with another list of indexed fields (or the same one),
        // with or without the index files: every index made with another
        // list, or missing, is rebuilt, and the answers are the same.
        store.close().unwrap();
        let (fields, delete) = reopen;
        if delete {
            for name in sim.list(std::path::Path::new("/q")).unwrap() {
                if name.ends_with(".idx") {
                    sim.remove(&std::path::Path::new("/q").join(name)).unwrap();
                }
            }
        }
        let opts = options().indexed_metadata(INDEXED[fields].iter().copied());
        let store = Store::open_with(sim.clone(), "/q", opts).unwrap();
        let again = store.read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all()).unwrap();
        prop_assert_eq!(positions(&again), positions(&everything));
        check_choices(&store, &everything, &times, &choices)?;
        prop_assert!(store.verify().unwrap().is_clean());
    }
}

/// Reads (forward, backward, in pages) and counts each choice's filter and
/// compares with a brute-force scan of `everything`.
fn check_choices(
    store: &Store,
    everything: &[RecordedEvent],
    times: &[i64],
    choices: &[Choice],
) -> Result<(), TestCaseError> {
    for c in choices {
        let f = c.filter(times);
        let expected: Vec<RecordedEvent> = everything.iter().filter(|e| c.admits(e, times)).cloned().collect();
        let forward = store
            .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &f)
            .unwrap();
        prop_assert_eq!(positions(&forward), positions(&expected), "forward {:?}", c);
        let mut backward = store
            .read_all(Direction::Backward, LogFrom::End, usize::MAX, &f)
            .unwrap();
        backward.reverse();
        prop_assert_eq!(positions(&backward), positions(&expected), "backward {:?}", c);
        prop_assert_eq!(
            positions(&paged(store, &f, Direction::Forward, 7)),
            positions(&expected)
        );
        let mut back_pages = paged(store, &f, Direction::Backward, 5);
        back_pages.reverse();
        prop_assert_eq!(positions(&back_pages), positions(&expected));
        prop_assert_eq!(store.count(&f).unwrap(), expected.len() as u64, "count {:?}", c);
        let mut by_stream: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_category: BTreeMap<String, u64> = BTreeMap::new();
        for e in &expected {
            *by_stream.entry(e.stream.clone()).or_default() += 1;
            *by_type.entry(e.event_type.clone()).or_default() += 1;
            let cat = e.stream.split_once('-').map_or(e.stream.as_str(), |(t, _)| t);
            *by_category.entry(cat.to_string()).or_default() += 1;
        }
        prop_assert_eq!(store.count_by(&f, GroupBy::Stream).unwrap(), by_stream);
        prop_assert_eq!(store.count_by(&f, GroupBy::Type).unwrap(), by_type);
        prop_assert_eq!(store.count_by(&f, GroupBy::Category).unwrap(), by_category);
    }
    Ok(())
}

#[test]
fn a_store_with_several_segments_is_what_the_property_runs_on() {
    let events: Vec<Spec> = (0..120)
        .map(|i| {
            (
                i % STREAMS.len(),
                i % TYPES.len(),
                vec![i % 3],
                Some(i % 2),
                Some(i % 4),
            )
        })
        .collect();
    let store = store_of(&events);
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    assert_eq!(all.len(), 120);
    // The stream-only count comes from the indexes and agrees with the read.
    let f = Filter::all()
        .with_stream_pattern("cart.#")
        .with_stream_pattern("order-1");
    let read = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &f)
        .unwrap();
    assert!(!read.is_empty());
    assert!(
        read.iter()
            .all(|e| e.stream == "cart.eu-7" || e.stream == "cart-1" || e.stream == "order-1")
    );
    assert_eq!(store.count(&f).unwrap(), read.len() as u64);
    let orders = Filter::all().with_aggregate_type("order");
    let n = store.count(&orders).unwrap();
    assert_eq!(n, all.iter().filter(|e| e.stream.starts_with("order-")).count() as u64);
    let days = store.count_by(&Filter::all(), GroupBy::Day).unwrap();
    assert_eq!(days.values().sum::<u64>(), 120);
}

#[test]
fn a_consumer_group_keeps_its_patterns_across_a_reopen_and_delivers_only_matches() {
    use annal::{GroupSettings, GroupSource};
    let dir = tempfile::tempdir().unwrap();
    let filter = Filter::all()
        .with_type_pattern("hook.#")
        .with_stream_pattern("cart.*")
        .with_aggregate_type("cart.eu")
        .with_metadata("actor", "agent-1");
    let settings = GroupSettings {
        source: GroupSource::All(filter.clone()),
        ..GroupSettings::all()
    };
    {
        let store = Store::open(dir.path(), options()).unwrap();
        store.create_group("g", settings.clone()).unwrap();
    }
    let store = Store::open(dir.path(), options()).unwrap();
    let listed = store.groups_list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1.source, GroupSource::All(filter));
    let meta = |a: &str| format!(r#"{{"actor":"{a}"}}"#);
    for (stream, ty, actor) in [
        ("cart.eu-1", "hook.triggered", "agent-1"),
        ("cart.eu-1", "order.placed", "agent-1"),
        ("cart.us-1", "hook.triggered", "agent-1"),
        ("cart.eu-2", "hook", "agent-2"),
        ("cart.eu-2", "hook", "agent-1"),
    ] {
        let e = EventData::json(ty, "{}").with_metadata(meta(actor));
        store.append(stream, ExpectedVersion::Any, vec![e]).unwrap();
    }
    let c = store.group("g").unwrap();
    let c = c.consumer("c");
    let got = c.fetch(10, std::time::Duration::from_millis(300)).unwrap();
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|d| (d.event.stream.clone(), d.event.event_type.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("cart.eu-1".to_string(), "hook.triggered".to_string()),
            ("cart.eu-2".to_string(), "hook".to_string())
        ]
    );
}

#[test]
fn a_consistency_boundary_condition_takes_type_patterns_and_metadata_fields() {
    use annal::{AppendCondition, Query, QueryItem};
    let store = Store::open_with(Arc::new(SimStorage::new()), "/d", options()).unwrap();
    let e = EventData::json("course.student.subscribed", "{}").with_metadata(r#"{"course":"c1"}"#);
    store.append("student-1", ExpectedVersion::Any, vec![e]).unwrap();
    let item = |pattern: &str, course: &str| QueryItem {
        type_patterns: vec![annal::TopicPattern::new(pattern)],
        metadata: vec![("course".to_string(), course.to_string())],
        ..QueryItem::default()
    };
    let cond = |pattern: &str, course: &str| AppendCondition {
        query: Query {
            items: vec![item(pattern, course)],
        },
        after: None,
    };
    let new = || vec![EventData::json("course.student.subscribed", "{}")];
    let err = store
        .append_if("student-2", ExpectedVersion::Any, new(), cond("course.#", "c1"))
        .unwrap_err();
    assert!(matches!(err, Error::ConditionFailed { position: 0 }), "{err:?}");
    store
        .append_if("student-2", ExpectedVersion::Any, new(), cond("course.#", "c2"))
        .unwrap();
    store
        .append_if("student-3", ExpectedVersion::Any, new(), cond("course.*", "c1"))
        .unwrap();
}

/// Counts by tag and by indexed metadata field come from the tag postings
/// where an index can tell whose entries a key holds (at most one event read
/// per key and sealed segment); they equal a read where two tags share a
/// sealed file's 32-bit key, for a repeated metadata key and for metadata
/// that a full JSON parse refuses (a number out of `f64`'s range elsewhere:
/// it matches no metadata condition), before and after a reopen.
#[test]
fn counts_by_tag_and_metadata_equal_reads_where_keys_are_shared() {
    // Two tags whose 64-bit hashes fold to one 32-bit key (format.md, "Keyed lists").
    let fold = |t: &str| {
        let h = xxhash_rust::xxh3::xxh3_64(t.as_bytes());
        (h ^ (h >> 32)) as u32
    };
    let mut seen = std::collections::HashMap::new();
    let (a, b) = (0u64..)
        .find_map(|i| {
            let t = format!("k{i}");
            seen.insert(fold(&t), t.clone()).map(|other| (other, t))
        })
        .unwrap();
    let sim = Arc::new(SimStorage::new());
    let opts = || options().indexed_metadata(["actor"]);
    let store = Store::open_with(sim.clone(), "/shared", opts()).unwrap();
    for i in 0..400usize {
        let mut e = EventData::json("T", format!(r#"{{"i":{i}}}"#));
        e = match i % 5 {
            // Tag `a` in the first half, `b` in the second: sealed files
            // of either alone, and one holding both (their key shared).
            0 => e
                .with_tag(if i < 200 { a.clone() } else { b.clone() })
                .with_metadata(r#"{"actor":"x"}"#),
            1 => e.with_tag("one"),
            2 => e.with_tag("other").with_metadata(r#"{"actor":"y","n":1e999}"#),
            3 => e.with_tag("plain").with_metadata(r#"{"actor":"x","actor":"z"}"#),
            _ => e.with_metadata(r#"{"actor":"x"}"#),
        };
        store
            .append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![e])
            .unwrap();
    }
    let filters = [
        Filter::all().with_tag(a.clone()),
        Filter::all().with_tag(b.clone()),
        Filter::all().with_tag("one"),
        Filter::all().with_tag("other"),
        Filter::all().with_tag("plain"),
        Filter::all().with_tag("absent"),
        Filter::all().with_metadata("actor", "x"),
        Filter::all().with_metadata("actor", "y"),
        Filter::all().with_metadata("actor", "z"),
        Filter::all().with_metadata("actor", "absent"),
        Filter::all().with_tag(a.clone()).with_metadata("actor", "x"),
        Filter::all().with_tag(b.clone()).with_metadata("actor", "x"),
    ];
    let want = [40, 40, 80, 80, 80, 0, 160, 0, 80, 0, 40, 40];
    let mut store = Some(store);
    for round in 0..2 {
        let s = store.take().unwrap();
        for (f, want) in filters.iter().zip(want) {
            let read = s.read_all(Direction::Forward, LogFrom::Start, usize::MAX, f).unwrap();
            assert_eq!(read.len(), want, "round {round}, read {f:?}");
            assert_eq!(s.count(f).unwrap(), want as u64, "round {round}, count {f:?}");
        }
        drop(s);
        store = Some(Store::open_with(sim.clone(), "/shared", opts()).unwrap());
    }
}

/// A pattern matching many distinct types in a segment (more than a read
/// looks up window by window) and one matching a single type: pages in both
/// directions hold exactly the matching events, in order, in one segment
/// (the memory index) and in several (index files).
#[test]
fn pages_of_patterns_over_many_distinct_types_hold_exactly_the_matches() {
    for segment_size in [64 << 20, 4096] {
        pages_over_many_types(options().segment_size(segment_size));
    }
}

fn pages_over_many_types(opts: Options) {
    let store = Store::open_with(Arc::new(SimStorage::new()), "/q", opts).unwrap();
    // 300 events of 150 types `t.<n>`, every third one `other`.
    for i in 0..300usize {
        let ty = if i % 3 == 2 {
            "other".to_string()
        } else {
            format!("t.{}", i % 150)
        };
        store
            .append("s", ExpectedVersion::Any, vec![EventData::json(ty, "{}")])
            .unwrap();
    }
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    for pattern in ["t.*", "t.#", "#.7"] {
        let f = Filter::all().with_type_pattern(pattern);
        let want: Vec<u64> = all
            .iter()
            .filter(|e| topic_match(pattern, &e.event_type))
            .map(|e| e.position)
            .collect();
        let forward = positions(&paged(&store, &f, Direction::Forward, 9));
        assert_eq!(forward, want, "{pattern} forward");
        let mut backward = positions(&paged(&store, &f, Direction::Backward, 9));
        backward.reverse();
        assert_eq!(backward, want, "{pattern} backward");
    }
}
