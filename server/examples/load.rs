//! A bounded load generator: N concurrent clients, each doing a fixed number
//! of single-event appends to its own stream, against a server on this
//! machine. Prints appends/s and client-side latency percentiles.
//!
//! ```sh
//! cargo run --release -p annal-server --example load -- --url http://127.0.0.1:2113 --clients 32 --appends 300
//! ```
//!
//! Only loopback URLs are accepted.

use std::time::{Duration, Instant};

use serde_json::json;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--url").unwrap_or_else(|| "http://127.0.0.1:2113".into());
    let clients: usize = arg(&args, "--clients").map_or(Ok(32), |s| s.parse())?;
    let appends: usize = arg(&args, "--appends").map_or(Ok(300), |s| s.parse())?;
    let parsed = reqwest::Url::parse(&url)?;
    let host = parsed
        .host_str()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!("{url}: only loopback addresses are allowed").into());
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let url = format!("{url}/streams/load-{}-{c}", &run[..8]);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(appends);
            let mut errors = 0u64;
            for i in 0..appends {
                let body = json!({ "expected": if i == 0 { json!("no-stream") } else { json!(i - 1) },
                                   "events": [{ "type": "LoadTest", "data": { "client": c, "i": i } }] });
                let t = Instant::now();
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => latencies.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::with_capacity(clients * appends);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort();
    if all.is_empty() {
        return Err(format!("no append succeeded ({errors} errors)").into());
    }
    let mean = all.iter().sum::<Duration>() / all.len() as u32;
    println!(
        "{clients} clients x {appends} appends: {} ok, {errors} errors in {:.2} s = {:.0} appends/s",
        all.len(),
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency: mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        mean.as_secs_f64() * 1e3,
        percentile(&all, 0.50).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all[all.len() - 1].as_secs_f64() * 1e3
    );
    // The server's own view of append latency (dominated by the sync).
    if let Ok(r) = client.get(format!("{url}/metrics")).send().await
        && let Ok(text) = r.text().await
    {
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        };
        if let (Some(sum), Some(count)) = (value("annal_append_seconds_sum "), value("annal_append_seconds_count ")) {
            println!(
                "server-side append latency (all appends so far): mean {:.2} ms over {count} appends",
                sum / count * 1e3
            );
        }
    }
    Ok(())
}
