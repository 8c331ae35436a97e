//! Server-Sent Events subscriptions: history, then live, then resume.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::TestServer;

/// One SSE message.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// Reads SSE messages from a response (skipping keep-alive comments).
pub struct SseReader {
    stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        SseReader {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next message, or `None` when the stream ends or no message (keep-alive
    /// comments aside) comes within 10 s: a test waiting for one fails, never hangs.
    pub async fn next(&mut self) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let mut msg = Sse {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = String::new();
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "id" => msg.id = Some(value.to_string()),
                        "event" => msg.event = value.to_string(),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if !any {
                    continue;
                }
                msg.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(msg);
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// The next message of type `event`.
    pub async fn next_event(&mut self) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let m = tokio::time::timeout_at(deadline, self.next()).await.ok()??;
            if m.event == "event" {
                return Some(m);
            }
        }
    }
}

pub async fn open(s: &TestServer, path: &str, last_event_id: Option<&str>) -> SseReader {
    let mut req = s.client.get(s.url(path));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        resp.headers()
    );
    SseReader::new(resp)
}

#[tokio::test]
async fn stream_subscription_history_then_live_then_resume() {
    let s = TestServer::start().await;
    s.append_n("sub-1", 3).await;
    s.append_n("other", 1).await;
    let mut r = open(&s, "/subscribe/streams/sub-1", None).await;
    for rev in 0..3 {
        let m = r.next_event().await.expect("history event");
        assert_eq!(m.id.as_deref(), Some(rev.to_string().as_str()));
        assert_eq!(m.data["revision"], rev);
        assert_eq!(m.data["stream"], "sub-1");
        assert_eq!(m.data["data"], json!({ "i": rev }));
    }
    // Live.
    s.append_n("sub-1", 2).await;
    let m = r.next_event().await.expect("live event");
    assert_eq!(m.id.as_deref(), Some("3"));
    let m = r.next_event().await.expect("live event");
    assert_eq!(m.id.as_deref(), Some("4"));
    drop(r);

    // Resume after revision 3: Last-Event-ID wins over from.
    let mut r = open(&s, "/subscribe/streams/sub-1?from=0", Some("3")).await;
    let m = r.next_event().await.unwrap();
    assert_eq!(m.id.as_deref(), Some("4"));
    drop(r);
    // from is inclusive.
    let mut r = open(&s, "/subscribe/streams/sub-1?from=2", None).await;
    assert_eq!(r.next_event().await.unwrap().id.as_deref(), Some("2"));
    drop(r);
    // A stream that does not exist yet: live events arrive once it does.
    let mut r = open(&s, "/subscribe/streams/later", None).await;
    s.append_n("later", 1).await;
    assert_eq!(r.next_event().await.unwrap().data["stream"], "later");
    drop(r);

    // Keep-alive comments arrive when nothing happens (interval 500 ms in tests).
    let resp = s
        .client
        .get(s.url("/subscribe/streams/quiet?from=end"))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(3), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).starts_with(':'), "{chunk:?}");
    drop(body);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn global_subscription_with_filter_and_checkpoints() {
    let s = TestServer::start().await;
    let (st, _) = s
        .post(
            "/streams/order-1",
            json!({ "events": [{ "type": "Wanted", "tags": ["k:1"] }] }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let mut r = open(&s, "/subscribe/all?type=Wanted", None).await;
    let m = r.next_event().await.unwrap();
    assert_eq!((m.id.as_deref(), m.data["position"].clone()), (Some("0"), json!(0)));
    // Many events that do not match: the subscriber gets checkpoints instead.
    for _ in 0..2 {
        s.append_n("noise", 1000).await;
    }
    let cp = loop {
        let m = r.next().await.expect("a checkpoint");
        if m.event == "checkpoint" {
            break m;
        }
    };
    let next = cp.data["position"].as_u64().unwrap();
    assert!(next >= 1024, "{cp:?}");
    assert_eq!(cp.id, Some((next - 1).to_string()));
    let (st, _) = s
        .post("/streams/order-2", json!({ "events": [{ "type": "Wanted" }] }))
        .await;
    assert_eq!(st, StatusCode::OK);
    let m = r.next_event().await.unwrap();
    assert_eq!(m.data["stream"], "order-2");
    assert_eq!(m.id.as_deref(), Some("2001"));
    drop(r);

    // Resume from the checkpoint id: the later matching event comes, the first does not.
    let mut r = open(&s, "/subscribe/all?type=Wanted", cp.id.as_deref()).await;
    let m = r.next_event().await.unwrap();
    assert_eq!(m.id.as_deref(), Some("2001"));
    drop(r);
    // Other filters: stream prefix, tags, from.
    let mut r = open(&s, "/subscribe/all?stream_prefix=order-&tag=k:1", None).await;
    assert_eq!(r.next_event().await.unwrap().id.as_deref(), Some("0"));
    drop(r);
    let mut r = open(&s, "/subscribe/all?from=2000", None).await;
    assert_eq!(r.next_event().await.unwrap().id.as_deref(), Some("2000"));
    drop(r);
    let mut r = open(&s, "/subscribe/all?from=end", None).await;
    s.append_n("late", 1).await;
    assert_eq!(r.next_event().await.unwrap().id.as_deref(), Some("2002"));
    drop(r);
    let (st, _) = s.get("/subscribe/all?from=soon").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn subscriptions_end_at_shutdown_and_are_counted() {
    let s = TestServer::start_with(|c| c.max_subscribers = 2).await;
    let mut a = open(&s, "/subscribe/all", None).await;
    let _b = open(&s, "/subscribe/streams/x", None).await;
    // Third one is refused.
    let (st, v) = s.get("/subscribe/all").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"], "too_many_subscribers");
    let (_, metrics) = s.get("/metrics").await;
    assert!(metrics.as_str().unwrap().contains("annal_subscribers 2\n"), "{metrics}");
    let started = std::time::Instant::now();
    let stop = tokio::spawn(async move { s.stop().await });
    // The open stream ends instead of holding shutdown.
    while a.next().await.is_some() {}
    stop.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn subscriptions_outlive_the_request_timeout_but_slow_requests_do_not() {
    let s = TestServer::start_with(|c| c.request_timeout_ms = 500).await;
    let mut r = open(&s, "/subscribe/streams/slow", None).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.append_n("slow", 1).await;
    assert_eq!(r.next_event().await.unwrap().id.as_deref(), Some("0"));
    drop(r);
    // A request whose body trickles in is cut at the timeout.
    let chunks = futures_util::stream::unfold(0, |i| async move {
        match i {
            0 => Some((Ok::<_, std::io::Error>(b"{\"events\": [".to_vec()), 1)),
            1 => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Some((Ok(b"]}".to_vec()), 2))
            }
            _ => None,
        }
    });
    let t = std::time::Instant::now();
    let resp = s
        .client
        .post(s.url("/streams/slow"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "timeout");
    assert!(t.elapsed() < Duration::from_secs(2));
    s.stop().await.unwrap();
}

/// Issue 11, item 9: a damaged event in a sealed segment. A subscription sends
/// every event before it, then an error event naming the position; with
/// `skip_damaged=true` it sends a `damaged` event and goes on.
#[tokio::test]
async fn a_damaged_event_ends_a_subscription_with_its_position_or_is_skipped() {
    use annal::storage::sim::SimStorage;
    use annal::{EventData, ExpectedVersion, Options, Store};
    use std::sync::Arc;
    let sim = SimStorage::new();
    let disk = Arc::new(sim.clone());
    let options = Options::default().segment_size(4096);
    {
        let store = Store::open_with(disk.clone(), "/data", options.clone()).unwrap();
        for n in 0..60u64 {
            let e = EventData::json("T", format!(r#"{{"n":{n}}}"#));
            store
                .append(&format!("s-{}", n % 3), ExpectedVersion::Any, vec![e])
                .unwrap();
        }
        store.close().unwrap();
    }
    let seg = std::path::Path::new("/data/00000000000000000000.seg");
    let bytes = sim.read_file(seg).unwrap();
    let at = bytes.windows(7).position(|w| w == br#"{"n":5}"#).unwrap();
    sim.flip_bit(seg, at as u64 + 5, 0).unwrap();
    let store = Arc::new(Store::open_with(disk, "/data", options).unwrap());
    let config = annal_server::ServerConfig::open("127.0.0.1:0".parse().unwrap());
    let s = TestServer::start_store(
        store,
        tempfile::tempdir().unwrap(),
        config,
        "http",
        reqwest::Client::new(),
    )
    .await;

    let mut sub = crate::subscribe::open(&s, "/subscribe/all?from=0", None).await;
    let mut ids = Vec::new();
    let last = loop {
        let m = sub.next().await.expect("the subscription ends with an error event");
        if m.event == "event" {
            ids.push(m.id.unwrap());
        } else {
            break m;
        }
    };
    assert_eq!(ids, (0..5).map(|p| p.to_string()).collect::<Vec<_>>());
    assert_eq!(last.event, "error", "{last:?}");
    assert!(
        last.data["message"].as_str().unwrap().contains("position 5"),
        "{last:?}"
    );

    let mut sub = crate::subscribe::open(&s, "/subscribe/all?from=0&skip_damaged=true", None).await;
    let mut positions = Vec::new();
    let mut damaged = Vec::new();
    while positions.len() < 59 {
        let m = sub.next().await.expect("more events after the damage");
        match m.event.as_str() {
            "event" => positions.push(m.data["position"].as_u64().unwrap()),
            "damaged" => damaged.push(m.data.clone()),
            other => panic!("unexpected {other}: {m:?}"),
        }
    }
    assert_eq!(
        damaged,
        vec![json!({ "position": 5, "next": 6, "reason": damaged[0]["reason"].clone() })]
    );
    assert_eq!(positions, (0..60).filter(|p| *p != 5).collect::<Vec<u64>>());
    s.stop().await.unwrap();
}
