//! `annal serve` with a working `[[forward]]` section in annal.toml: events
//! appended over HTTP arrive at the target (a second `annal serve`, over
//! HTTP), and `GET /forward` shows the forwarder running with its checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annal::{Direction, Filter, LogFrom, Options, Store};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `annal serve`, stopped (SIGKILL is enough here) when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &Path, config: Option<&Path>, port: u16) -> Serve {
    let mut c = Command::new(env!("CARGO_BIN_EXE_annal"));
    c.arg("--data").arg(data);
    if let Some(config) = config {
        c.arg("--config").arg(config);
    }
    c.args(["serve", "--no-auth", "--listen", &format!("127.0.0.1:{port}")]);
    let child = c.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "annal serve never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve(child)
}

/// One HTTP/1.1 request; the status line and the body.
fn request(port: u16, method: &str, path: &str, body: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.lines().next().unwrap_or_default().to_string();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn held(data: &Path) -> usize {
    Store::open_read_only(data, Options::default())
        .and_then(|s| s.read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all()))
        // `annal serve` writes one `$annal` system event into every store it serves.
        .map(|v| v.iter().filter(|e| !e.stream.starts_with('$')).count())
        .unwrap_or(0)
}

#[test]
fn a_forward_section_ships_what_serve_receives() {
    let dir = tempfile::tempdir().unwrap();
    let target_data = dir.path().join("target");
    let target_port = free_port();
    let _target = serve(&target_data, None, target_port);

    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[[forward]]\nname = \"hub\"\nto = \"annal+http://127.0.0.1:{target_port}\"\nstream_prefix = \"order-\"\nbatch_size = 50\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let _edge = serve(&dir.path().join("edge"), Some(&config), port);

    for i in 0..20 {
        let body = format!(
            r#"{{"stream":"order-{}","events":[{{"type":"OrderPlaced","data":{{"n":{i}}}}},{{"type":"OrderPaid","data":{{"n":{i}}}}}]}}"#,
            i % 3
        );
        let (status, text) = request(port, "POST", "/append", &body);
        assert!(status.contains(" 200"), "{status}: {text}");
    }
    // Filtered out: another prefix.
    let (status, _) = request(
        port,
        "POST",
        "/append",
        r#"{"stream":"audit-1","events":[{"type":"Seen","data":{}}]}"#,
    );
    assert!(status.contains(" 200"), "{status}");

    let deadline = Instant::now() + Duration::from_secs(60);
    while held(&target_data) < 40 {
        assert!(Instant::now() < deadline, "the events never arrived at the target");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(held(&target_data), 40, "only order- events, each once");

    // GET /forward: running, its checkpoint past the 41 events appended.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = request(port, "GET", "/forward", "");
        assert!(status.contains(" 200"), "{status}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let list = v
            .as_array()
            .or_else(|| v.get("forwarders").and_then(|f| f.as_array()))
            .cloned()
            .unwrap_or_default();
        let hub = list.iter().find(|f| f["name"] == "hub").cloned();
        if let Some(hub) = hub
            && hub["state"] == "running"
            && hub["checkpoint"].as_u64().is_some_and(|c| c >= 41)
        {
            assert_eq!(hub["delivered_events"].as_u64(), Some(40), "{hub}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "GET /forward never showed hub caught up: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `when_full = "drop-oldest"`: `annal compact` drops what a configured
/// forwarder has not delivered (the budget wins) and records it; `annal
/// serve` then shows the forwarder's gap in `GET /forward`, `GET /health`
/// (degraded) and `/metrics`, even while its target is down.
#[test]
fn a_drop_oldest_gap_is_reported_by_forward_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("edge");
    {
        let store = Store::open(&data, Options::default().segment_size(4096).create_if_missing(true)).unwrap();
        for i in 0..300 {
            store
                .append(
                    &format!("s-{}", i % 4),
                    annal::ExpectedVersion::Any,
                    vec![annal::EventData::json("T", format!(r#"{{"i":{i}}}"#))],
                )
                .unwrap();
        }
        store.close().unwrap();
    }
    let config = dir.path().join("annal.toml");
    std::fs::write(
        &config,
        "segment_size = 4096\n[retention]\nmax_bytes = 8192\nwhen_full = \"drop-oldest\"\n\n\
         [[forward]]\nname = \"late\"\nto = \"annal+http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_annal"))
        .arg("--data")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .arg("compact")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dropped = Store::open_read_only(&data, Options::default())
        .unwrap()
        .dropped()
        .unwrap();
    assert!(!dropped.is_empty(), "compact dropped nothing");
    assert_eq!(dropped[0].forwarders[0].0, "late");
    let port = free_port();
    let _edge = serve(&data, Some(&config), port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = request(port, "GET", "/forward", "");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if !v["forwarders"][0]["gap"].is_null() {
            // The last gap it met: the dropped events of the last stretch it passed over.
            let total: u64 = dropped.iter().map(|d| d.events).sum();
            let last = v["forwarders"][0]["gap"]["dropped_events"].as_u64();
            assert!(last.is_some_and(|n| n > 0 && n <= total), "{body}");
            assert_eq!(v["forwarders"][0]["skipped"].as_u64(), Some(total), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "GET /forward never showed the gap: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, health) = request(port, "GET", "/health", "");
    assert!(
        health.contains("\"degraded\"") && health.contains("drop-oldest"),
        "{health}"
    );
    let (_, metrics) = request(port, "GET", "/metrics", "");
    assert!(metrics.contains("annal_forward_gap{forwarder=\"late\"} 1"), "{metrics}");
}
