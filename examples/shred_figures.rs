//! Figures of crypto-shredding on this machine, without criterion.
//!
//! ```text
//! cargo run --release --example shred_figures -- [--events N] [--subjects K]
//! ```
//!
//! Prints, as medians of 3 runs: appends of N events (default 100,000, in
//! appends of 100, `Durability::Never` so that the disk's sync does not hide
//! the cipher) without a subject and with one of K subjects (default 1,000,
//! whose keys exist already), a full `read_all` of each, the time to create a
//! subject's key (its first event: one record written and synced), and the
//! time to shred one subject among K (the key store rewritten and synced).
//!
//! Data goes in a temporary directory under the system temp dir (or `--dir`).

// Measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use annal::{Direction, Durability, EventData, ExpectedVersion, Filter, LogFrom, Options, Store};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn event(n: u64, subject: Option<String>) -> EventData {
    let e = EventData::json(
        "CustomerChanged",
        format!(
            r#"{{"customer":{n},"name":"Name {n}","street":"{n} Long Street","city":"Somewhere","note":"{}"}}"#,
            "x".repeat(120)
        ),
    )
    .with_metadata(r#"{"actor":"clerk-7","reason":"update"}"#)
    .with_tag("kind:customer");
    match subject {
        Some(s) => e.with_subject(s),
        None => e,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let events: u64 = arg("--events").map_or(100_000, |s| s.parse().unwrap());
    let subjects: u64 = arg("--subjects").map_or(1_000, |s| s.parse().unwrap());
    let base: PathBuf = arg("--dir").map_or_else(std::env::temp_dir, PathBuf::from);
    let opts = || Options::default().durability(Durability::Never).no_compression();
    let mut append = [Vec::new(), Vec::new()];
    let mut read = [Vec::new(), Vec::new()];
    let mut create = Vec::new();
    let mut shred = Vec::new();
    for _run in 0..3 {
        for (k, sealed) in [false, true].into_iter().enumerate() {
            let dir = tempfile::tempdir_in(&base).unwrap();
            let store = Store::open(dir.path(), opts()).unwrap();
            let subject = |n: u64| sealed.then(|| format!("customer-{}", n % subjects));
            if sealed {
                // The keys exist before the timed appends.
                let firsts: Vec<EventData> = (0..subjects).map(|n| event(n, subject(n))).collect();
                store.append("warm", ExpectedVersion::Any, firsts).unwrap();
            }
            let t = Instant::now();
            for chunk in 0..events / 100 {
                let batch: Vec<EventData> = (0..100)
                    .map(|i| chunk * 100 + i)
                    .map(|n| event(n, subject(n)))
                    .collect();
                store
                    .append(&format!("c-{}", chunk % 100), ExpectedVersion::Any, batch)
                    .unwrap();
            }
            append[k].push(t.elapsed());
            let t = Instant::now();
            let all = store
                .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
                .unwrap();
            read[k].push(t.elapsed());
            assert!(all.len() as u64 >= events);
            if sealed {
                let t = Instant::now();
                store
                    .append("new", ExpectedVersion::Any, vec![event(0, Some("someone-new".into()))])
                    .unwrap();
                create.push(t.elapsed());
                let t = Instant::now();
                assert!(store.shred("customer-7").unwrap());
                shred.push(t.elapsed());
            }
            store.close().unwrap();
        }
    }
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    for (k, name) in ["no subject", "with a subject"].iter().enumerate() {
        let a = median(append[k].clone());
        let r = median(read[k].clone());
        println!(
            "{name:>15}: append {:>9.0} events/s ({a:.2?}), read_all {:>9.0} events/s ({r:.2?})",
            rate(a),
            rate(r)
        );
    }
    println!(
        "first event of a new subject (key created and synced): {:.2?}",
        median(create)
    );
    println!("shred one subject of {subjects}: {:.2?}", median(shred));
}
