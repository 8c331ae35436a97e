//! Catch-up, live, stream and filtered subscriptions, slow and many
//! subscribers, closing, and replay.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::time::Duration;

use annal::{
    Durability, EventData, ExpectedVersion, Filter, Message, Options, ReplayOptions, Store, SubscribeFrom,
    SubscriptionOptions,
};

fn store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let o = Options::default().durability(Durability::Never).segment_size(64 * 1024);
    let store = Arc::new(Store::open(dir.path(), o).unwrap());
    (dir, store)
}

fn ev(t: &str, n: u64) -> EventData {
    EventData::json(t, format!(r#"{{"n":{n}}}"#))
}

fn positions(msgs: &[Message]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Event(e) => Some(e.position),
            Message::Checkpoint(_) => None,
            Message::Damaged { position, .. } => panic!("damage at {position} in a healthy store"),
        })
        .collect()
}

#[test]
fn history_then_live_without_gap_or_duplicate_under_concurrent_appends() {
    let (_d, store) = store();
    for i in 0..300 {
        store.append("h", ExpectedVersion::Any, vec![ev("H", i)]).unwrap();
    }
    let mut sub = store.subscribe_all(SubscribeFrom::Start, Filter::all());
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    let n = (i % 3) + 1;
                    store
                        .append(
                            &format!("w{t}"),
                            ExpectedVersion::Any,
                            (0..n).map(|k| ev("L", k)).collect(),
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    let per_writer: u64 = (0..250u64).map(|i| (i % 3) + 1).sum();
    let mut seen = Vec::new();
    while (seen.len() as u64) < 300 + 4 * per_writer {
        match sub.next_timeout(Duration::from_secs(10)).unwrap() {
            Some(Message::Event(e)) => seen.push(e.position),
            Some(Message::Checkpoint(_)) => {}
            Some(m @ Message::Damaged { .. }) => panic!("{m:?} in a healthy store"),
            None => panic!("timed out after {} events", seen.len()),
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(seen, (0..seen.len() as u64).collect::<Vec<_>>());
    assert!(sub.next_timeout(Duration::from_millis(50)).unwrap().is_none());
    assert_eq!(sub.position(), store.head_position());
}

#[test]
fn stream_subscriptions_start_where_asked_and_follow_live() {
    let (_d, store) = store();
    for i in 0..5 {
        store.append("s", ExpectedVersion::Any, vec![ev("A", i)]).unwrap();
        store.append("other", ExpectedVersion::Any, vec![ev("B", i)]).unwrap();
    }
    let revs = |from| {
        let mut sub = store.subscribe_stream("s", from);
        let mut out = Vec::new();
        while let Some(Message::Event(e)) = sub.next_timeout(Duration::from_millis(50)).unwrap() {
            assert_eq!(e.stream, "s");
            out.push(e.revision);
        }
        (out, sub)
    };
    assert_eq!(revs(SubscribeFrom::Start).0, vec![0, 1, 2, 3, 4]);
    assert_eq!(revs(SubscribeFrom::After(2)).0, vec![3, 4]);
    let (none, mut live) = revs(SubscribeFrom::End);
    assert!(none.is_empty());
    store.append("s", ExpectedVersion::Exact(4), vec![ev("A", 5)]).unwrap();
    match live.next_timeout(Duration::from_secs(5)).unwrap() {
        Some(Message::Event(e)) => assert_eq!(e.revision, 5),
        other => panic!("expected the live event, got {other:?}"),
    }
    // A stream that does not exist yet is waited for.
    let mut future = store.subscribe_stream("later", SubscribeFrom::Start);
    assert!(future.next_timeout(Duration::from_millis(20)).unwrap().is_none());
    store
        .append("later", ExpectedVersion::NoStream, vec![ev("C", 0)])
        .unwrap();
    assert!(matches!(
        future.next_timeout(Duration::from_secs(5)).unwrap(),
        Some(Message::Event(e)) if e.stream == "later"
    ));
}

#[test]
fn filtered_subscriptions_report_checkpoints_when_nothing_matches() {
    let (_d, store) = store();
    let opts = SubscriptionOptions {
        batch: 64,
        checkpoint_every: 100,
        ..Default::default()
    };
    let mut sub = store.subscribe_all_with(SubscribeFrom::Start, Filter::all().with_type("Rare"), opts);
    // The subscriber follows live, reading after each burst of appends.
    let mut msgs = Vec::new();
    for i in 0..1000u64 {
        let t = if i % 400 == 399 { "Rare" } else { "Common" };
        store.append("s", ExpectedVersion::Any, vec![ev(t, i)]).unwrap();
        if i % 50 == 49 {
            while let Some(m) = sub.next_timeout(Duration::from_millis(20)).unwrap() {
                msgs.push(m);
            }
        }
    }
    assert_eq!(positions(&msgs), vec![399, 799]);
    let checkpoints: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Checkpoint(p) => Some(*p),
            _ => None,
        })
        .collect();
    assert!(checkpoints.len() >= 3, "{checkpoints:?}");
    assert!(checkpoints.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        *checkpoints.last().unwrap(),
        1000,
        "the last checkpoint reaches the head"
    );
    // Resuming from a checkpoint delivers exactly what follows it.
    let resume_at = checkpoints[checkpoints.len() / 2];
    let mut again = store.subscribe_all(SubscribeFrom::After(resume_at - 1), Filter::all().with_type("Rare"));
    let mut rest = Vec::new();
    while let Some(m) = again.next_timeout(Duration::from_millis(50)).unwrap() {
        rest.push(m);
    }
    let expected: Vec<u64> = [399, 799].into_iter().filter(|p| *p >= resume_at).collect();
    assert_eq!(positions(&rest), expected);
}

#[test]
fn a_slow_subscriber_never_blocks_appends_and_catches_up() {
    let (_d, store) = store();
    let rx = store
        .subscribe_all(SubscribeFrom::Start, Filter::all())
        .into_channel(8)
        .unwrap();
    // The subscriber does not read while 5,000 events are appended.
    for i in 0..5000 {
        store.append("fast", ExpectedVersion::Any, vec![ev("F", i)]).unwrap();
    }
    assert!(rx.len() <= 8, "the channel never holds more than its capacity");
    let mut got = Vec::new();
    while got.len() < 5000 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Some(Ok(Message::Event(e))) => got.push(e.position),
            Some(Ok(Message::Checkpoint(_))) => {}
            other => panic!("unexpected {other:?} after {}", got.len()),
        }
    }
    assert_eq!(got, (0..5000).collect::<Vec<_>>());
}

#[test]
fn hundreds_of_subscribers_each_get_every_event() {
    let (_d, store) = store();
    let subs: Vec<_> = (0..200)
        .map(|_| {
            store
                .subscribe_all(SubscribeFrom::Start, Filter::all())
                .into_channel(16)
                .unwrap()
        })
        .collect();
    for i in 0..100 {
        store.append("s", ExpectedVersion::Any, vec![ev("E", i)]).unwrap();
    }
    for rx in &subs {
        let mut got = Vec::new();
        while got.len() < 100 {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Some(Ok(Message::Event(e))) => got.push(e.position),
                Some(Ok(Message::Checkpoint(_))) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }
}

#[test]
fn subscriptions_end_when_the_store_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::Never)).unwrap();
    store.append("s", ExpectedVersion::Any, vec![ev("E", 0)]).unwrap();
    let mut sub = store.subscribe_all(SubscribeFrom::Start, Filter::all());
    let rx = store
        .subscribe_all(SubscribeFrom::Start, Filter::all())
        .into_channel(4)
        .unwrap();
    assert!(matches!(sub.next(), Some(Ok(Message::Event(_)))));
    let waiter = std::thread::spawn(move || sub.next().is_none());
    std::thread::sleep(Duration::from_millis(50));
    store.close().unwrap();
    assert!(waiter.join().unwrap(), "a blocked iterator ends when the store closes");
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(5)),
        Some(Ok(Message::Event(_)))
    ));
    assert!(rx.recv_timeout(Duration::from_secs(5)).is_none());
}

#[test]
fn replay_counts_and_stops_or_continues_on_errors() {
    let (_d, store) = store();
    for i in 0..250u64 {
        let t = if i % 2 == 0 { "Even" } else { "Odd" };
        store.append("s", ExpectedVersion::Any, vec![ev(t, i)]).unwrap();
    }
    let fail_on = |e: &annal::RecordedEvent| -> Result<(), String> {
        if e.position % 50 == 49 {
            Err(format!("bad {}", e.position))
        } else {
            Ok(())
        }
    };
    let opts = ReplayOptions {
        batch_size: 32,
        ..Default::default()
    };
    let stop = store.replay(&opts, fail_on).unwrap();
    assert_eq!((stop.processed, stop.failed, stop.completed), (49, 1, false));
    assert_eq!(stop.next_position, 50);
    let go_on = store
        .replay(
            &ReplayOptions {
                continue_on_error: true,
                ..opts.clone()
            },
            fail_on,
        )
        .unwrap();
    assert_eq!((go_on.processed, go_on.failed, go_on.completed), (245, 5, true));
    assert_eq!(go_on.errors[0], (49, "bad 49".to_string()));
    let odd = store
        .replay(
            &ReplayOptions {
                from: 100,
                until: Some(200),
                filter: Filter::all().with_type("Odd"),
                ..opts
            },
            |_| Ok::<(), String>(()),
        )
        .unwrap();
    assert_eq!(odd.processed, 50);
    assert_eq!(odd.next_position, 200);
}

#[test]
fn regex_filters_on_stream_names_and_event_types() {
    let (_d, store) = store();
    for i in 0..60u64 {
        let stream = format!("{}-{}", ["order", "user", "orderline"][(i % 3) as usize], i % 4);
        let t = ["OrderPlaced", "OrderPaid", "UserJoined"][(i % 3) as usize];
        store.append(&stream, ExpectedVersion::Any, vec![ev(t, i)]).unwrap();
    }
    let filter = Filter::all()
        .with_stream_regex("^order-[0-9]+$")
        .unwrap()
        .with_type_regex("^Order")
        .unwrap();
    let mut sub = store.subscribe_all(SubscribeFrom::Start, filter.clone());
    let mut got = Vec::new();
    while let Some(Message::Event(e)) = sub.next_timeout(Duration::from_millis(50)).unwrap() {
        assert!(
            e.stream.starts_with("order-") && e.event_type.starts_with("Order"),
            "{e:?}"
        );
        got.push(e.position);
    }
    assert_eq!(got, (0..60).filter(|i| i % 3 == 0).collect::<Vec<u64>>());
    let read = store
        .read_all(annal::Direction::Forward, annal::LogFrom::Start, 100, &filter)
        .unwrap();
    assert_eq!(read.len(), got.len());
    assert!(Filter::all().with_stream_regex("(unclosed").is_err());
}

#[test]
fn a_stream_subscription_never_delivers_what_reads_hide() {
    // Soft-deleted events, and events past the stream's $maxCount, are hidden
    // from reads; a catch-up subscription must hide them too.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().durability(Durability::Never)).unwrap();
    let ev = |d: &str| EventData::json("T", format!(r#"{{"d":"{d}"}}"#));
    store
        .append("del", ExpectedVersion::Any, vec![ev("a"), ev("b"), ev("c")])
        .unwrap();
    store.delete_stream("del", ExpectedVersion::Any, false).unwrap();
    store.append("del", ExpectedVersion::Any, vec![ev("d")]).unwrap();
    store
        .append(
            "cap",
            ExpectedVersion::Any,
            (0..5).map(|i| ev(&i.to_string())).collect(),
        )
        .unwrap();
    store
        .set_stream_metadata(
            "cap",
            annal::StreamMetadata {
                max_count: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    for (stream, want) in [("del", vec![3u64]), ("cap", vec![3, 4])] {
        let read: Vec<u64> = store
            .read_stream(stream, annal::Direction::Forward, annal::StreamFrom::Start, 100)
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(read, want);
        let mut sub = store.subscribe_stream(stream, SubscribeFrom::Start);
        let mut got = Vec::new();
        while let Some(m) = sub.next_timeout(std::time::Duration::from_millis(200)).unwrap() {
            if let annal::Message::Event(e) = m {
                got.push(e.revision);
            }
        }
        assert_eq!(got, want, "{stream}");
    }
}

/// A filtered subscription that passes over events it does not deliver
/// stops reading the log once its cancellation signal says so: its next
/// message is `Cancelled`, not a checkpoint after reading up to the head
/// (a server cancels it when the subscriber goes away).
#[test]
fn a_cancelled_subscription_stops_reading_the_log() {
    let (_d, store) = store();
    let batch: Vec<EventData> = (0..2000).map(|i| ev("T", i)).collect();
    store.append("s", ExpectedVersion::Any, batch).unwrap();
    let nothing = Filter {
        types: vec!["Nope".into()],
        ..Filter::default()
    };
    let cancel = annal::Cancel::new();
    let mut sub = store
        .subscribe_all(SubscribeFrom::Start, nothing.clone())
        .with_cancel(cancel.clone());
    cancel.cancel();
    assert!(matches!(sub.next_timeout(Duration::ZERO), Err(annal::Error::Cancelled)));
    assert_eq!(sub.position(), 0, "it read nothing past its start");
    // Not cancelled, the same subscription considers the whole log.
    let mut sub = store
        .subscribe_all(SubscribeFrom::Start, nothing)
        .with_cancel(annal::Cancel::new());
    let m = sub.next_timeout(Duration::ZERO).unwrap();
    assert!(
        matches!(m, Some(Message::Checkpoint(p)) if p == store.head_position()),
        "{m:?}"
    );
}

/// Cancelled, a subscription says so at the next call whatever it was
/// doing: caught up (nothing left to read), or with messages already read
/// and not yet returned, and it delivers nothing appended afterwards.
#[test]
fn a_cancelled_subscription_says_so_at_its_next_call() {
    let (_d, store) = store();
    let batch: Vec<EventData> = (0..10).map(|i| ev("T", i)).collect();
    store.append("s", ExpectedVersion::Any, batch).unwrap();
    // Caught up: every event read, nothing buffered.
    let cancel = annal::Cancel::new();
    let mut sub = store
        .subscribe_all(SubscribeFrom::Start, Filter::all())
        .with_cancel(cancel.clone());
    let mut n = 0;
    while let Some(m) = sub.next_timeout(Duration::ZERO).unwrap() {
        n += usize::from(matches!(m, Message::Event(_)));
    }
    assert_eq!(n, 10);
    cancel.cancel();
    let m = sub.next_timeout(Duration::ZERO);
    assert!(matches!(m, Err(annal::Error::Cancelled)), "caught up: {m:?}");
    store.append("s", ExpectedVersion::Any, vec![ev("T", 10)]).unwrap();
    let m = sub.next_timeout(Duration::ZERO);
    assert!(matches!(m, Err(annal::Error::Cancelled)), "after an append: {m:?}");
    // Mid-batch: one event returned, the rest of its batch read and waiting.
    let cancel = annal::Cancel::new();
    let mut sub = store
        .subscribe_stream("s", SubscribeFrom::Start)
        .with_cancel(cancel.clone());
    assert!(matches!(sub.next_timeout(Duration::ZERO), Ok(Some(Message::Event(_)))));
    cancel.cancel();
    let m = sub.next_timeout(Duration::ZERO);
    assert!(matches!(m, Err(annal::Error::Cancelled)), "mid-batch: {m:?}");
}

/// A gate that admits `left` reads, then refuses; it counts what it admitted.
struct Admits {
    left: std::sync::Mutex<u64>,
    admitted: std::sync::atomic::AtomicU64,
}

impl annal::ScanGate for Admits {
    fn admit(&self, _cancel: &annal::Cancel) -> Option<Box<dyn Send>> {
        let mut left = self.left.lock().unwrap();
        if *left == 0 {
            return None;
        }
        *left -= 1;
        self.admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(Box::new(()))
    }
}

/// A subscription to the global log far behind the head reads it one span
/// at a time, each read admitted by its gate (a server shares its places
/// for expensive reads so): a filter that keeps few events no longer makes
/// one read over the whole log, and a refused read stops the subscription
/// where it was, with `Cancelled`. Near the head it reads without the gate.
#[test]
fn a_gated_subscription_reads_the_log_one_admitted_span_at_a_time() {
    let (_d, store) = store();
    let span = annal::CATCH_UP_SPAN;
    let total = 5 * span + 100;
    let mut left = total;
    while left > 0 {
        let n = left.min(1000);
        let batch = (0..n)
            .map(|i| {
                let p = total - left + i;
                // Matches at the ends of spans and between them.
                let keep = [span - 1, span, 3 * span + 7, total - 1].contains(&p);
                ev(if keep { "Keep" } else { "Other" }, p)
            })
            .collect();
        store.append("s", ExpectedVersion::Any, batch).unwrap();
        left -= n;
    }
    let keep = Filter {
        types: vec!["Keep".into()],
        ..Filter::default()
    };
    let gate = Arc::new(Admits {
        left: std::sync::Mutex::new(2),
        admitted: 0.into(),
    });
    let mut sub = store
        .subscribe_all(SubscribeFrom::Start, keep.clone())
        .with_scan_gate(gate.clone());
    let mut msgs = Vec::new();
    let err = loop {
        match sub.next_timeout(Duration::ZERO) {
            Ok(Some(m)) => msgs.push(m),
            Ok(None) => panic!("caught up through a gate that refuses"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, annal::Error::Cancelled), "{err:?}");
    // Two spans admitted, and read: the events in them, and not one position past them.
    assert_eq!(gate.admitted.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(positions(&msgs), vec![span - 1, span]);
    assert_eq!(sub.position(), 2 * span);

    // Admitted every time, it delivers every match, and ends caught up at the
    // head; the last span (within CATCH_UP_SPAN of the head) needs no admission.
    let gate = Arc::new(Admits {
        left: std::sync::Mutex::new(u64::MAX),
        admitted: 0.into(),
    });
    let mut sub = store
        .subscribe_all(SubscribeFrom::Start, keep.clone())
        .with_scan_gate(gate.clone());
    let mut msgs = Vec::new();
    while let Some(m) = sub.next_timeout(Duration::ZERO).unwrap() {
        msgs.push(m);
    }
    assert_eq!(positions(&msgs), vec![span - 1, span, 3 * span + 7, total - 1]);
    assert_eq!(sub.position(), total);
    let admitted = gate.admitted.load(std::sync::atomic::Ordering::SeqCst);
    // Spans from 0, 4096, 8192, 12288 and 16384 (20580 - 16384 > 4096); the
    // read from 20480 is within reach of the head.
    assert_eq!(admitted, 5, "admissions for {total} positions");

    // Near the head, a gate that refuses everything is never asked.
    let gate = Arc::new(Admits {
        left: std::sync::Mutex::new(0),
        admitted: 0.into(),
    });
    let mut sub = store
        .subscribe_all(SubscribeFrom::After(total - 10), keep)
        .with_scan_gate(gate);
    let mut msgs = Vec::new();
    while let Some(m) = sub.next_timeout(Duration::ZERO).unwrap() {
        msgs.push(m);
    }
    assert_eq!(positions(&msgs), vec![total - 1]);
}

/// A gate that never admits, but gives up once cancelled.
struct Never;

impl annal::ScanGate for Never {
    fn admit(&self, cancel: &annal::Cancel) -> Option<Box<dyn Send>> {
        while !cancel.is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }
}

/// Dropping the receiver of a gated subscription moved to a channel stops
/// its thread while the thread waits at the gate (the drop joined the
/// thread, which waited for an admission that never came).
#[test]
fn dropping_the_receiver_of_a_subscription_waiting_at_its_gate_returns() {
    let (_d, store) = store();
    let n = annal::CATCH_UP_SPAN + 10;
    let batch: Vec<EventData> = (0..n).map(|i| ev("T", i)).collect();
    store.append("s", ExpectedVersion::Any, batch).unwrap();
    let rx = store
        .subscribe_all(SubscribeFrom::Start, Filter::all())
        .with_scan_gate(Arc::new(Never))
        .into_channel(4)
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(rx.try_recv().is_none(), "nothing is read past a closed gate");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(rx);
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the receiver's drop returns");
}

/// A read of a subscription holds at most `max_batch_bytes` of events (at
/// least one): with events of up to 4 MiB, a batch of 256 could hold a
/// gigabyte. Reads cut by bytes skip nothing: every event arrives once, in
/// order, for the global log and for a stream.
#[test]
fn a_subscriptions_reads_hold_at_most_max_batch_bytes_and_skip_nothing() {
    let (_d, store) = store();
    let big = |n: u64| EventData::json("B", format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(1000)));
    for i in 0..600 {
        store.append("s", ExpectedVersion::Any, vec![big(i)]).unwrap();
    }
    let options = SubscriptionOptions {
        max_batch_bytes: 10 * 1024,
        ..SubscriptionOptions::default()
    };
    let subs = [
        store.subscribe_all_with(SubscribeFrom::Start, Filter::all(), options),
        store.subscribe_stream_with("s", SubscribeFrom::Start, options),
    ];
    for mut sub in subs {
        let first = sub.next_timeout(Duration::ZERO).unwrap().unwrap();
        assert!(matches!(first, Message::Event(_)));
        // One read so far: about ten events of 1 KiB, not a batch of 256.
        assert!(sub.position() <= 11, "the first read went to {}", sub.position());
        let mut msgs = vec![first];
        while let Some(m) = sub.next_timeout(Duration::ZERO).unwrap() {
            msgs.push(m);
        }
        let seen: Vec<u64> = msgs
            .iter()
            .filter_map(|m| match m {
                Message::Event(e) => Some(e.revision),
                _ => None,
            })
            .collect();
        assert_eq!(seen, (0..600).collect::<Vec<_>>());
    }
}
