//! Forwarding figures for BENCHMARKS.md: how fast a backlog drains to a
//! target, and what a running forwarder costs local appends.
//!
//! `cargo run --release -p annal-forward --example forward_bench -- URL [EVENTS [STREAMS]]`
//! (URL `null:` drops every batch: the forwarder's own cost, without a target;
//! STREAMS, default 64: the appends of 100 go to that many streams in turn)
//!
//! 1. appends EVENTS events (appends of 100, durability "always") to a new
//!    store with no forwarder, and times them;
//! 2. forwards that backlog to URL (`--once`-style) and times it;
//! 3. appends EVENTS more events to a second new store while a forwarder
//!    ships them to URL, and times the appends;
//! 4. seals the first store's segment, deletes one stream, scavenges and
//!    forwards the backlog from the start with a new forwarder (a few
//!    holes in every segment), then deletes every other stream and
//!    scavenges, then forwards what is left from the start with a new
//!    forwarder and times it: a backlog read through the holes scavenging
//!    left, which a forwarder looks at to count what it must report;
//! 5. the same with holes one position wide: EVENTS single-event appends
//!    alternating between two streams (in batches of 100 appends), one of
//!    them deleted and scavenged.
//!
//! With `FORWARD_BENCH_ROUNDS=R`, steps 4 and 5 give way to R more pairs of
//! step 1 and step 3 on new stores, in alternating order, and the median of
//! their differences. `FORWARD_BENCH_IDLE=1` makes the spawned forwarders'
//! calls to the target in the idle scheduling class.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use annal::{
    Batch, EventData, ExpectedVersion, ForwardSettings, ForwardStatus, ForwardTarget, Forwarder, Options, Store,
    TargetError,
};

/// `null:` — a target that drops every batch, to measure the forwarder alone.
struct Null;

impl ForwardTarget for Null {
    fn describe(&self) -> String {
        "null".into()
    }
    fn load_checkpoint(&mut self, _forwarder: &str) -> Result<Option<u64>, TargetError> {
        Ok(None)
    }
    fn deliver(&mut self, _batch: &Batch<'_>) -> Result<(), TargetError> {
        Ok(())
    }
}

fn make_target(url: &str) -> Box<dyn ForwardTarget> {
    if url == "null:" {
        Box::new(Null)
    } else {
        annal_forward::connect(url, None).unwrap()
    }
}

fn append(store: &Store, n: usize, streams: usize) -> f64 {
    let began = Instant::now();
    let mut i = 0;
    while i < n {
        let events = (i..(i + 100).min(n))
            .map(|k| {
                EventData::json(
                    "Measured",
                    format!(r#"{{"n":{k},"payload":"0123456789abcdef0123456789abcdef"}}"#),
                )
                .with_tag("bench")
            })
            .collect::<Vec<_>>();
        let count = events.len();
        store
            .append(&format!("device-{}", (i / 100) % streams), ExpectedVersion::Any, events)
            .unwrap();
        i += count;
    }
    n as f64 / began.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: forward_bench URL [EVENTS [STREAMS]]");
    let n: usize = args.next().map_or(100_000, |v| v.parse().expect("EVENTS is a number"));
    let streams: usize = args
        .next()
        .map_or(64, |v| v.parse().expect("STREAMS is a number"))
        .max(1);
    // FORWARD_BENCH_IDLE=1: a spawned forwarder's calls to the target in the idle class.
    let idle = std::env::var("FORWARD_BENCH_IDLE").is_ok_and(|v| v == "1");
    let settings = bench_settings().idle_priority(idle);

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let alone = append(&store, n, streams);
    println!("appends without a forwarder: {alone:.0} events/s ({n} events, appends of 100 to {streams} streams)");

    let name = format!("bench-{}", std::process::id());
    let (took, status) = drain(&store, &name, settings.clone(), &url);
    println!(
        "forwarded a backlog of {n} events in {took:.2} s: {:.0} events/s to {}",
        n as f64 / took,
        status.target
    );
    let store_once = store.clone();

    let (with, status) = append_forwarding(&url, &format!("{name}-live"), settings.clone(), n, streams);
    println!(
        "appends with a forwarder running: {with:.0} events/s ({:+.1}% against without; {} delivered while appending, in {} batches)",
        (with / alone - 1.0) * 100.0,
        status.delivered_events,
        status.delivered_batches
    );
    if let Some(rounds) = std::env::var("FORWARD_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()) {
        cost_rounds(&url, &name, settings, n, streams, rounds);
        return;
    }

    let store = store_once;
    store.seal_active_segment().unwrap();
    // A few holes in every segment first: one stream of the 64 deleted.
    store.delete_stream("device-1", ExpectedVersion::Any, false).unwrap();
    let removed = store.scavenge().unwrap().events_removed;
    let (took, status) = drain(&store, &format!("{name}-few"), bench_settings(), &url);
    println!(
        "forwarded a backlog with a few holes ({removed} of {n} events removed, one stream deleted) in {took:.2} s: {:.0} events/s read through, {} skipped",
        n as f64 / took,
        status.skipped
    );
    for s in (0..streams).step_by(2) {
        store
            .delete_stream(&format!("device-{s}"), ExpectedVersion::Any, false)
            .unwrap();
    }
    let removed = store.scavenge().unwrap().events_removed;
    let (took, status) = drain(&store, &format!("{name}-holes"), bench_settings(), &url);
    println!(
        "forwarded a scavenged backlog ({removed} of {n} events removed, deleted streams) in {took:.2} s: {:.0} events/s read through, {} delivered, {} skipped",
        n as f64 / took,
        status.delivered_events,
        status.skipped
    );
    interleaved(&url, n, &name);
}

/// Step 5: a backlog of which every other event was removed.
fn interleaved(url: &str, n: usize, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let mut i = 0;
    while i < n {
        let appends = (i..(i + 100).min(n))
            .map(|k| {
                let stream = if k % 2 == 0 { "live" } else { "doomed" };
                annal::Append::new(
                    stream,
                    ExpectedVersion::Any,
                    vec![EventData::json("Measured", format!(r#"{{"n":{k}}}"#))],
                )
            })
            .collect::<Vec<_>>();
        i += appends.len();
        for r in store.append_batch(appends).unwrap() {
            r.unwrap();
        }
    }
    store.seal_active_segment().unwrap();
    store.delete_stream("doomed", ExpectedVersion::Any, false).unwrap();
    let removed = store.scavenge().unwrap().events_removed;
    let (took, status) = drain(&store, &format!("{name}-interleaved"), bench_settings(), url);
    println!(
        "forwarded a backlog with every other event removed ({removed} of {n}) in {took:.2} s: {:.0} events/s read through, {} delivered, {} skipped",
        n as f64 / took,
        status.delivered_events,
        status.skipped
    );
}

/// Appends `n` events to a new store with no forwarder; returns their rate.
fn append_alone(n: usize, streams: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    append(&store, n, streams)
}

/// Appends `n` events to a new store while a forwarder named `name` ships
/// them to `url`; returns the appends' rate and the forwarder's status when
/// they ended.
fn append_forwarding(
    url: &str,
    name: &str,
    settings: ForwardSettings,
    n: usize,
    streams: usize,
) -> (f64, ForwardStatus) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
    let handle = Forwarder::new(store.clone(), name, settings, make_target(url))
        .unwrap()
        .spawn()
        .unwrap();
    let with = append(&store, n, streams);
    let status = handle.status();
    handle.stop().unwrap();
    (with, status)
}

/// `FORWARD_BENCH_ROUNDS=R`: R more pairs of appends to new stores, alone
/// and with a forwarder running, in alternating order (alone first in odd
/// rounds), each pair's difference printed, then their median: the cost of
/// a running forwarder without the drift of one pair.
fn cost_rounds(url: &str, name: &str, settings: ForwardSettings, n: usize, streams: usize, rounds: usize) {
    let rounds = rounds.max(1);
    let mut diffs = Vec::new();
    for round in 0..rounds {
        let alone_first = round % 2 == 0;
        let mut alone = 0.0;
        if alone_first {
            alone = append_alone(n, streams);
        }
        let (with, status) = append_forwarding(url, &format!("{name}-round{round}"), settings.clone(), n, streams);
        if !alone_first {
            alone = append_alone(n, streams);
        }
        let diff = (with / alone - 1.0) * 100.0;
        println!(
            "round {}: appends alone {alone:.0} events/s, with a forwarder {with:.0} events/s ({diff:+.1}%; {} delivered while appending)",
            round + 1,
            status.delivered_events
        );
        diffs.push(diff);
    }
    diffs.sort_by(f64::total_cmp);
    println!(
        "cost of a running forwarder over {rounds} rounds: min {:+.1}%, median {:+.1}%, max {:+.1}%",
        diffs[0],
        diffs[diffs.len() / 2],
        diffs[diffs.len() - 1]
    );
}

/// Runs a new forwarder named `name` to `url` over what `store` holds, to
/// its end; returns the seconds it took and its status at the end.
fn drain(store: &Arc<Store>, name: &str, settings: ForwardSettings, url: &str) -> (f64, ForwardStatus) {
    let mut f = Forwarder::new(store.clone(), name, settings, make_target(url)).unwrap();
    let began = Instant::now();
    f.run(&AtomicBool::new(false), true).unwrap();
    (began.elapsed().as_secs_f64(), f.status())
}

/// Batches of 2,000 and 20,000 events in flight, for every forwarder of the bench.
fn bench_settings() -> ForwardSettings {
    ForwardSettings::default().batch_size(2000).max_in_flight(20_000)
}
