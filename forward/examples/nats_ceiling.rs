//! How fast this machine's nats-server and async-nats take messages of the
//! shape the NATS target sends, with annal not involved: the ceiling a
//! forwarder to NATS can reach.
//!
//! `cargo run --release -p annal-forward --example nats_ceiling -- URL [EVENTS] [MODE] [HEADERS] [BATCH] [YIELD]`
//!
//! - URL: `nats://[user:password@]host:port`
//! - EVENTS: messages to publish (default 200,000)
//! - MODE: `js` (publishes with a reply subject under one inbox subscription
//!   per batch, every acknowledgement awaited before the next batch, as the
//!   target does), `stream` (the same subjects, captured by the JetStream
//!   stream, without reply subjects: the server stores them and answers
//!   nothing), `core` (subjects no stream captures: NATS alone)
//! - HEADERS: how many of the target's ten headers each message carries
//!   (0 to 10; default 10)
//! - BATCH: messages per batch (default 2,000, the bench's `batch_size`)
//! - YIELD: in mode `js`, let the client's connection task write what is
//!   queued every YIELD publishes (default 0: never, the whole batch is
//!   queued before it is written)
//!
//! Messages are built before the clock starts: subject `ceil<pid>.device-<n % 64>`,
//! a payload of about 60 bytes, headers with the target's names and values of
//! the same lengths. A new JetStream stream (file storage, two-minute
//! duplicate window) takes them and is deleted at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use futures_util::StreamExt;

const NAMES: [&str; 10] = [
    "Nats-Msg-Id",
    "Annal-Event-Id",
    "Annal-Type",
    "Annal-Stream",
    "Annal-Revision",
    "Annal-Position",
    "Annal-Time-Micros",
    "Annal-Source",
    "Annal-Content-Type",
    "Annal-Tags",
];

fn headers(k: usize, count: usize) -> HeaderMap {
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let values = [
        id.clone(),
        id,
        "Measured".to_string(),
        format!("device-{}", k % 64),
        (k / 64).to_string(),
        k.to_string(),
        "1764668400000000".to_string(),
        "edge-node".to_string(),
        "application/json".to_string(),
        "bench".to_string(),
    ];
    let mut h = HeaderMap::new();
    for (name, value) in NAMES.iter().zip(values).take(count) {
        h.insert(HeaderName::from_static(name), value);
    }
    h
}

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: nats_ceiling URL [EVENTS] [MODE] [HEADERS] [BATCH] [YIELD]");
    let n: usize = args.next().map_or(200_000, |v| v.parse().expect("EVENTS is a number"));
    let mode = args.next().unwrap_or_else(|| "js".into());
    let count: usize = args.next().map_or(10, |v| v.parse().expect("HEADERS is a number"));
    let batch: usize = args.next().map_or(2000, |v| v.parse().expect("BATCH is a number"));
    let yield_every: usize = args.next().map_or(0, |v| v.parse().expect("YIELD is a number"));
    assert!(
        ["js", "stream", "core"].contains(&mode.as_str()),
        "MODE is js, stream or core"
    );
    assert!(count <= 10 && batch > 0);

    // Subjects of this run only, so a stream left by a run that failed does not overlap.
    let pid = std::process::id();
    let prefix = if mode == "core" {
        format!("loose{pid}")
    } else {
        format!("ceil{pid}")
    };
    let messages: Vec<(String, HeaderMap, bytes::Bytes)> = (0..n)
        .map(|k| {
            (
                format!("{prefix}.device-{}", k % 64),
                headers(k, count),
                bytes::Bytes::from(format!(r#"{{"n":{k},"payload":"0123456789abcdef0123456789abcdef"}}"#)),
            )
        })
        .collect();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client = async_nats::ConnectOptions::new()
            .subscription_capacity(65_536)
            .connect(url)
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let name = format!("CEIL_{pid}");
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("ceil{pid}.*")],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();

        let began = Instant::now();
        let mut messages = messages.into_iter();
        let mut sent = 0;
        while sent < n {
            let this = batch.min(n - sent);
            if mode == "js" {
                let inbox = client.new_inbox();
                let mut acks = client.subscribe(format!("{inbox}.*")).await.unwrap();
                for i in 0..this {
                    let (subject, h, payload) = messages.next().unwrap();
                    client
                        .publish_with_reply_and_headers(subject, format!("{inbox}.{i}"), h, payload)
                        .await
                        .unwrap();
                    if yield_every > 0 && (i + 1) % yield_every == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                client.flush().await.unwrap();
                for _ in 0..this {
                    let ack = tokio::time::timeout(Duration::from_secs(10), acks.next())
                        .await
                        .expect("an acknowledgement in time")
                        .expect("the subscription open");
                    assert!(
                        !ack.payload.windows(7).any(|w| w == b"\"error\""),
                        "JetStream refused: {:?}",
                        ack.payload
                    );
                }
            } else {
                for _ in 0..this {
                    let (subject, h, payload) = messages.next().unwrap();
                    client.publish_with_headers(subject, h, payload).await.unwrap();
                }
                client.flush().await.unwrap();
            }
            sent += this;
        }
        let took = began.elapsed().as_secs_f64();
        // Messages published without a reply are stored (mode `stream`) after
        // the flush; wait until the stream holds them all, and count that.
        let mut stored = 0;
        if mode != "core" {
            let mut stream = js.get_stream(&name).await.unwrap();
            loop {
                stored = stream.info().await.unwrap().state.messages;
                if stored >= n as u64 || began.elapsed() > Duration::from_secs(120) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let all = began.elapsed().as_secs_f64();
        println!(
            "{mode} headers={count} batch={batch} yield={yield_every}: {n} messages in {took:.2} s: {:.0} msgs/s sent; \
             {stored} stored after {all:.2} s: {:.0} msgs/s stored",
            n as f64 / took,
            if mode == "core" { 0.0 } else { n as f64 / all },
        );
        js.delete_stream(&name).await.unwrap();
    });
}
