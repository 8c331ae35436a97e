//! Writes an import file (JSON Lines, as `annal export` writes them) whose
//! streams interleave, for measuring `annal import`.
//!
//! ```text
//! cargo run --release --example import_file -- [--events N] [--streams S] > FILE
//! ```
//!
//! `N` events (default 2,000,000) written round-robin to `S` streams (default
//! 20,000), so that every event is a run of one, as in the export of a store
//! whose streams interleave. Each line (about 320 bytes) carries the stream,
//! the original revision, position and timestamp, an id, a type, JSON data
//! and JSON metadata. The ids are derived from the event's number, so two
//! files of the same size are the same file.

// Measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{BufWriter, Write};

fn main() {
    let mut events = 2_000_000u64;
    let mut streams = 20_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--events" => events = args.next().unwrap().parse().unwrap(),
            "--streams" => streams = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other:?}"),
        }
    }
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let types = ["OrderPlaced", "ItemAdded", "PaymentTaken", "OrderShipped"];
    for n in 0..events {
        let s = n % streams;
        let revision = n / streams;
        // A version-4-shaped id from the event's number: the same file each time.
        let h = xxhash_rust::xxh3::xxh3_128(&n.to_le_bytes());
        let id = uuid::Builder::from_random_bytes(h.to_le_bytes()).into_uuid();
        let secs = n / 1000;
        writeln!(
            out,
            "{{\"stream\":\"order-{s:06}\",\"revision\":{revision},\"position\":{n},\
             \"timestamp\":\"2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"id\":\"{id}\",\
             \"type\":\"{}\",\"data\":{{\"order\":\"order-{s:06}\",\"customer\":{},\
             \"sku\":\"SKU-{:05}\",\"quantity\":{},\"price\":{}.{:02}}},\
             \"metadata\":{{\"correlation\":\"{:016x}\",\"source\":\"shop\"}}}}",
            1 + secs / 86_400 % 28,
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            n % 1000,
            types[revision as usize % types.len()],
            s * 7 % 100_000,
            n * 13 % 100_000,
            1 + n % 5,
            n % 500,
            n % 100,
            (h >> 64) as u64,
        )
        .unwrap();
    }
    out.flush().unwrap();
}
