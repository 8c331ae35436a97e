//! A model test: random sequences of appends (random expected versions, ids,
//! batch sizes, retries), reads of every kind and reopens, checked step by step
//! against a plain in-memory model of an event store.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::sync::Arc;

use annal::{
    AppendResult, Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, SimStorage,
    Store, StreamFrom,
};
use proptest::prelude::*;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        expected: u8,
        exact: u64,
        n: u8,
        with_ids: bool,
    },
    Retry {
        pick: usize,
        original_expected: bool,
    },
    ReadStream {
        stream: u8,
        forward: bool,
        from: u64,
        limit: usize,
    },
    ReadAll {
        forward: bool,
        from: u64,
        limit: usize,
        type_filter: Option<u8>,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u8..5, 0u64..6, 1u8..5, any::<bool>()).prop_map(|(stream, expected, exact, n, with_ids)| {
            Op::Append { stream, expected, exact, n, with_ids }
        }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, original_expected)| Op::Retry { pick, original_expected }),
        2 => (0u8..5, any::<bool>(), 0u64..10, 1usize..8).prop_map(|(stream, forward, from, limit)| {
            Op::ReadStream { stream, forward, from, limit }
        }),
        2 => (any::<bool>(), 0u64..40, 1usize..12, proptest::option::of(0u8..3)).prop_map(
            |(forward, from, limit, type_filter)| Op::ReadAll { forward, from, limit, type_filter }
        ),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Clone)]
struct MEvent {
    stream: String,
    revision: u64,
    id: Uuid,
    event_type: String,
    data: Vec<u8>,
}

struct Done {
    stream: String,
    expected: ExpectedVersion,
    events: Vec<EventData>,
    result: AppendResult,
}

fn open(sim: &SimStorage) -> Store {
    let o = Options::default().durability(Durability::Always).segment_size(4096);
    Store::open_with(Arc::new(sim.clone()), "/m", o).unwrap()
}

fn run(ops: Vec<Op>) {
    let sim = SimStorage::new();
    let mut store = open(&sim);
    let mut log: Vec<MEvent> = Vec::new();
    let mut heads: HashMap<String, u64> = HashMap::new();
    let mut done: Vec<Done> = Vec::new();
    let mut counter = 0u64;
    for op in ops {
        match op {
            Op::Append {
                stream,
                expected,
                exact,
                n,
                with_ids,
            } => {
                let name = format!("s{stream}");
                let head = heads.get(&name).copied();
                let expected = match expected {
                    0 => ExpectedVersion::Any,
                    1 => ExpectedVersion::NoStream,
                    2 => ExpectedVersion::StreamExists,
                    3 => ExpectedVersion::Exact(exact),
                    _ => head.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
                };
                let events: Vec<EventData> = (0..n)
                    .map(|_| {
                        counter += 1;
                        let e = EventData::json(format!("T{}", counter % 3), format!(r#"{{"c":{counter}}}"#));
                        if with_ids {
                            e.with_id(Uuid::from_u128(counter as u128))
                        } else {
                            e
                        }
                    })
                    .collect();
                let ok = match (expected, head) {
                    (ExpectedVersion::Any, _) | (ExpectedVersion::NoStream, None) => true,
                    (ExpectedVersion::StreamExists, Some(_)) => true,
                    (ExpectedVersion::Exact(e), Some(h)) => e == h,
                    _ => false,
                };
                let got = store.append(&name, expected, events.clone());
                if !ok {
                    match got {
                        Err(Error::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, head),
                        other => panic!("expected a conflict, got {other:?}"),
                    }
                    continue;
                }
                let r = got.unwrap();
                let first = head.map_or(0, |h| h + 1);
                assert_eq!(r.first_revision, first);
                assert_eq!(r.position, log.len() as u64);
                for (i, e) in events.iter().enumerate() {
                    log.push(MEvent {
                        stream: name.clone(),
                        revision: first + i as u64,
                        id: e.id.unwrap_or_default(),
                        event_type: e.event_type.clone(),
                        data: e.data.to_vec(),
                    });
                }
                heads.insert(name.clone(), first + n as u64 - 1);
                assert_eq!(r.next_expected_version, first + n as u64 - 1);
                if with_ids {
                    done.push(Done {
                        stream: name,
                        expected,
                        events,
                        result: r,
                    });
                }
            }
            Op::Retry {
                pick,
                original_expected,
            } => {
                if done.is_empty() {
                    continue;
                }
                let d = &done[pick % done.len()];
                let expected = if original_expected {
                    d.expected
                } else {
                    ExpectedVersion::Any
                };
                let r = store.append(&d.stream, expected, d.events.clone()).unwrap();
                assert_eq!(r, d.result, "a retry returns the original result");
            }
            Op::ReadStream {
                stream,
                forward,
                from,
                limit,
            } => {
                let name = format!("s{stream}");
                let dir = if forward {
                    Direction::Forward
                } else {
                    Direction::Backward
                };
                let got = store.read_stream(&name, dir, StreamFrom::Revision(from), limit);
                let mut want: Vec<&MEvent> = log.iter().filter(|e| e.stream == name).collect();
                if want.is_empty() {
                    assert!(matches!(got, Err(Error::StreamNotFound(_))));
                    continue;
                }
                if forward {
                    want.retain(|e| e.revision >= from);
                } else {
                    want.retain(|e| e.revision <= from);
                    want.reverse();
                }
                want.truncate(limit);
                let got = got.unwrap();
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want) {
                    assert_eq!((g.revision, g.data.as_ref()), (w.revision, w.data.as_slice()));
                    if w.id.is_nil() {
                        assert!(!g.id.is_nil(), "the store generates ids");
                    } else {
                        assert_eq!(g.id, w.id);
                    }
                }
            }
            Op::ReadAll {
                forward,
                from,
                limit,
                type_filter,
            } => {
                let filter = match type_filter {
                    Some(t) => Filter::all().with_type(format!("T{t}")),
                    None => Filter::all(),
                };
                let dir = if forward {
                    Direction::Forward
                } else {
                    Direction::Backward
                };
                let got = store.read_all(dir, LogFrom::Position(from), limit, &filter).unwrap();
                let mut want: Vec<(u64, &MEvent)> = log
                    .iter()
                    .enumerate()
                    .map(|(p, e)| (p as u64, e))
                    .filter(|(p, e)| {
                        (if forward { *p >= from } else { *p <= from })
                            && filter.types.iter().all(|t| *t == e.event_type)
                    })
                    .collect();
                if !forward {
                    want.reverse();
                }
                want.truncate(limit);
                let got: Vec<(u64, String, u64)> =
                    got.into_iter().map(|e| (e.position, e.stream, e.revision)).collect();
                let want: Vec<(u64, String, u64)> = want
                    .into_iter()
                    .map(|(p, e)| (p, e.stream.clone(), e.revision))
                    .collect();
                assert_eq!(got, want);
            }
            Op::Reopen => {
                drop(store);
                store = open(&sim);
                assert_eq!(store.head_position(), log.len() as u64);
            }
        }
    }
    for (name, head) in &heads {
        assert_eq!(store.stream_info(name).unwrap().last_revision, *head);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
