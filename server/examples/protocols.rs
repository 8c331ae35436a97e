//! The two protocols of `annal serve` side by side, in one run against one
//! in-process server on a temporary durable store (`Durability::Always`):
//! appends in batches of 100 events with 1 and 32 concurrent clients, reads
//! of a stream of 1,000 events, and a catch-up of the whole global log, each
//! through the HTTP/JSON API (reqwest) and the KurrentDB gRPC protocol (a
//! tonic client built from the server's protocol files). Prints one line per
//! figure (BENCHMARKS.md, "The two protocols of annal serve").
//!
//! ```sh
//! cargo run --release -p annal-server --example protocols -- --seconds 2 --log 100000
//! ```

// A measurement may unwrap and cast freely; the library may not.
#![allow(clippy::unwrap_used, clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annal::{EventData, ExpectedVersion, Options, Store};
use annal_server::ServerConfig;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// The generated messages and clients, nested as their packages are.
#[allow(clippy::all, dead_code, missing_docs)]
mod proto {
    pub mod event_store {
        pub mod client {
            tonic::include_proto!("event_store.client");
            pub mod streams {
                tonic::include_proto!("event_store.client.streams");
            }
        }
    }
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

use proto::event_store::client::streams::streams_client::StreamsClient;
use proto::event_store::client::streams::*;
use proto::event_store::client::{Empty, StreamIdentifier};

const BATCH: usize = 100;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The payload of every event: an order of about 300 bytes.
fn payload(i: usize) -> Value {
    json!({"order": i, "customer": "c-1234567", "currency": "EUR", "total": 12345,
           "items": [{"sku": "sku-000001", "name": "a blue teapot with a lid", "quantity": 2, "price": 4500},
                     {"sku": "sku-000002", "name": "two cups, white, porcelain", "quantity": 1, "price": 3345}],
           "note": "leave at the door, ring twice"})
}

fn sid(name: &str) -> Option<StreamIdentifier> {
    Some(StreamIdentifier {
        stream_name: name.as_bytes().to_vec().into(),
    })
}

fn grpc_batch(i: usize) -> Vec<AppendReq> {
    (0..BATCH)
        .map(|k| AppendReq {
            content: Some(append_req::Content::ProposedMessage(append_req::ProposedMessage {
                id: None,
                metadata: [
                    ("type".to_string(), "OrderPlaced".to_string()),
                    ("content-type".to_string(), "application/json".to_string()),
                ]
                .into(),
                custom_metadata: Default::default(),
                data: serde_json::to_vec(&payload(i * BATCH + k)).unwrap().into(),
            })),
        })
        .collect()
}

async fn grpc_append(c: &mut StreamsClient<Channel>, stream: &str, i: usize) {
    let mut reqs = vec![AppendReq {
        content: Some(append_req::Content::Options(append_req::Options {
            stream_identifier: sid(stream),
            expected_stream_revision: Some(append_req::options::ExpectedStreamRevision::Any(Empty {})),
        })),
    }];
    reqs.extend(grpc_batch(i));
    let r = c.append(futures_util::stream::iter(reqs)).await.unwrap().into_inner();
    assert!(matches!(r.result, Some(append_resp::Result::Success(_))), "{r:?}");
}

async fn http_append(c: &reqwest::Client, url: &str, i: usize) {
    let events: Vec<Value> = (0..BATCH)
        .map(|k| json!({"type": "OrderPlaced", "data": payload(i * BATCH + k)}))
        .collect();
    let r = c
        .post(url)
        .json(&json!({"expected": "any", "events": events}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Appends of `BATCH` events by `clients` concurrent clients for `seconds`: events/s.
async fn appends(base: &str, grpc: bool, clients: usize, seconds: f64, run: &str) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (base, done) = (base.to_string(), done.clone());
        let stream = format!("bench-{run}-{}-{clients}-{c}", if grpc { "grpc" } else { "http" });
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            if grpc {
                let mut client = StreamsClient::new(Channel::from_shared(base).unwrap().connect().await.unwrap());
                while Instant::now() < until {
                    grpc_append(&mut client, &stream, i).await;
                    i += 1;
                    done.fetch_add(BATCH as u64, Ordering::Relaxed);
                }
            } else {
                let client = reqwest::Client::new();
                let url = format!("{base}/streams/{stream}");
                while Instant::now() < until {
                    http_append(&client, &url, i).await;
                    i += 1;
                    done.fetch_add(BATCH as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = arg(&args, "--seconds").map_or(Ok(2.0), |s| s.parse())?;
    let log: usize = arg(&args, "--log").map_or(Ok(100_000), |s| s.parse())?;
    let reads: usize = arg(&args, "--reads").map_or(Ok(200), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(dir.path().join("data"), Options::default())?);
    let server = annal_server::bind(store.clone(), ServerConfig::open("127.0.0.1:0".parse()?)).await?;
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

    // Appends: the protocols alternate, so that a slow moment of the machine does not fall on one only.
    for clients in [1, 32] {
        for grpc in [false, true] {
            let rate = appends(&base, grpc, clients, seconds, &run).await;
            println!(
                "append, batches of {BATCH}, {clients} client(s), {}: {rate:.0} events/s ({:.0} appends/s)",
                if grpc { "gRPC" } else { "HTTP" },
                rate / BATCH as f64
            );
        }
    }

    // A stream of 1,000 events, read whole, forwards.
    let stream = format!("read-{run}");
    let events: Vec<EventData> = (0..1000)
        .map(|i| EventData::json("OrderPlaced", serde_json::to_vec(&payload(i)).unwrap()))
        .collect();
    store.append(&stream, ExpectedVersion::NoStream, events)?;
    let http = reqwest::Client::new();
    let mut grpc = StreamsClient::new(Channel::from_shared(base.clone())?.connect().await?);
    let read_req = |count: u64, option: read_req::options::StreamOption, subscribe: bool| {
        use read_req::options::*;
        ReadReq {
            options: Some(read_req::Options {
                stream_option: Some(option),
                read_direction: ReadDirection::Forwards as i32,
                resolve_links: false,
                count_option: Some(if subscribe {
                    CountOption::Subscription(SubscriptionOptions {})
                } else {
                    CountOption::Count(count)
                }),
                filter_option: Some(FilterOption::NoFilter(Empty {})),
                uuid_option: Some(UuidOption {
                    content: Some(uuid_option::Content::String(Empty {})),
                }),
                control_option: None,
            }),
        }
    };
    for grpc_side in [false, true] {
        let mut times = Vec::with_capacity(reads);
        for _ in 0..reads {
            let t = Instant::now();
            let n = if grpc_side {
                let option = read_req::options::StreamOption::Stream(read_req::options::StreamOptions {
                    stream_identifier: sid(&stream),
                    revision_option: Some(read_req::options::stream_options::RevisionOption::Start(Empty {})),
                });
                let mut s = grpc.read(read_req(1000, option, false)).await?.into_inner();
                let mut n = 0;
                while let Some(r) = s.message().await? {
                    if matches!(r.content, Some(read_resp::Content::Event(_))) {
                        n += 1;
                    }
                }
                n
            } else {
                let v: Value = http
                    .get(format!("{base}/streams/{stream}?from=0&limit=1000"))
                    .send()
                    .await?
                    .json()
                    .await?;
                v["events"].as_array().map_or(0, Vec::len)
            };
            assert_eq!(n, 1000);
            times.push(t.elapsed());
        }
        let m = median(times);
        println!(
            "stream read of 1,000 events, {}: median {:.2} ms ({:.0} events/s)",
            if grpc_side { "gRPC" } else { "HTTP" },
            m.as_secs_f64() * 1e3,
            1000.0 / m.as_secs_f64()
        );
    }

    // The global log grows to `log` events, then each protocol catches up with all of it.
    let have = usize::try_from(store.head_position())?;
    for chunk in (have..log).step_by(1000) {
        let events: Vec<EventData> = (chunk..(chunk + 1000).min(log))
            .map(|i| EventData::json("OrderPlaced", serde_json::to_vec(&payload(i)).unwrap()))
            .collect();
        store.append(&format!("log-{run}-{}", chunk % 100), ExpectedVersion::Any, events)?;
    }
    let total = store.head_position();
    for grpc_side in [false, true] {
        let t = Instant::now();
        let mut n = 0u64;
        if grpc_side {
            let option = read_req::options::StreamOption::All(read_req::options::AllOptions {
                all_option: Some(read_req::options::all_options::AllOption::Start(Empty {})),
            });
            let mut s = grpc.read(read_req(0, option, true)).await?.into_inner();
            while let Some(r) = s.message().await? {
                match r.content {
                    Some(read_resp::Content::Event(_)) => n += 1,
                    Some(read_resp::Content::CaughtUp(_)) => break,
                    _ => {}
                }
            }
        } else {
            // The HTTP API's catch-up: pages of the global log until the head.
            let mut from = 0u64;
            loop {
                let v: Value = http
                    .get(format!("{base}/all?from={from}&limit=1000"))
                    .send()
                    .await?
                    .json()
                    .await?;
                let page = v["events"].as_array().cloned().unwrap_or_default();
                n += page.len() as u64;
                match page.last().and_then(|e| e["position"].as_u64()) {
                    Some(p) if page.len() == 1000 => from = p + 1,
                    _ => break,
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "$all catch-up of {total} events (read {n}), {}: {secs:.2} s ({:.0} events/s)",
            if grpc_side {
                "gRPC subscription to caught_up"
            } else {
                "HTTP pages of 1,000"
            },
            n as f64 / secs
        );
    }
    let _ = stop.send(());
    serving.await??;
    Ok(())
}
