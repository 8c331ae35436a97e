//! Persistent subscription groups over HTTP.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;

fn ids(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn group_lifecycle_fetch_ack_nack_park_replay() {
    let s = TestServer::start().await;
    let settings = json!({ "stream": "orders", "ack_timeout_ms": 60000, "max_retries": 3, "checkpoint_every": 1 });
    let (st, v) = s.call(Method::PUT, "/groups/g1", Some(settings.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["stream"], "orders");
    assert_eq!(v["start"], "start");
    assert_eq!(v["strategy"], "round_robin");
    let (st, v) = s.call(Method::PUT, "/groups/g1", Some(settings)).await;
    assert_eq!((st, v["error"].clone()), (StatusCode::CONFLICT, json!("group_exists")));
    let (st, v) = s
        .call(
            Method::PUT,
            "/groups/g2",
            Some(json!({ "types": ["A"], "start": "end", "strategy": "pinned" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = s
        .call(
            Method::PUT,
            "/groups/g3",
            Some(json!({ "stream": "x", "types": ["A"] })),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _) = s
        .call(Method::PUT, "/groups/g3", Some(json!({ "ack_timeout_ms": u64::MAX })))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.call(Method::PUT, "/groups/g3", Some(json!({ "wat": 1 }))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.call(Method::PUT, "/groups/bad%20name", Some(json!({}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, v) = s.get("/groups").await;
    let names: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["g1", "g2"]);

    s.append_n("orders", 3).await;
    let (st, v) = s.call(Method::POST, "/groups/g1/fetch?consumer=c1&max=2", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let got = ids(&v);
    assert_eq!(got.len(), 2);
    assert_eq!(v["events"][0]["retry_count"], 0);
    assert_eq!(v["events"][0]["revision"], 0);
    let (st, _) = s
        .post("/groups/g1/ack", json!({ "consumer": "c1", "ids": [got[0]] }))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s
        .post(
            "/groups/g1/nack",
            json!({ "consumer": "c1", "id": got[1], "action": "retry", "reason": "busy" }),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, v) = s.call(Method::POST, "/groups/g1/fetch?consumer=c1&max=10", None).await;
    assert_eq!(ids(&v), vec![got[1].clone(), ids(&v)[1].clone()]);
    assert_eq!(v["events"][0]["retry_count"], 1);
    assert_eq!(v["events"][1]["revision"], 2);
    let third = ids(&v)[1].clone();
    let (st, _) = s
        .post(
            "/groups/g1/nack",
            json!({ "consumer": "c1", "id": got[1], "action": "park" }),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s
        .post(
            "/groups/g1/nack",
            json!({ "consumer": "c1", "id": third, "action": "skip" }),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = s.get("/groups/g1").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["parked"], 1);
    assert_eq!(v["skipped_damaged"], 0);
    assert_eq!(v["in_flight"], 0);
    assert_eq!(v["checkpoint"], 3);
    let (st, v) = s.post("/groups/g1/replay-parked", json!(null)).await;
    assert_eq!((st, v), (StatusCode::OK, json!({ "replayed": 1 })));
    let (_, v) = s.call(Method::POST, "/groups/g1/fetch?consumer=c2", None).await;
    assert_eq!(ids(&v), vec![got[1].clone()]);

    // Bad requests.
    let (st, _) = s.call(Method::POST, "/groups/g1/fetch", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.call(Method::POST, "/groups/g1/fetch?consumer=c&max=0", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .post("/groups/g1/ack", json!({ "consumer": "c1", "ids": ["nope"] }))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .post(
            "/groups/g1/nack",
            json!({ "consumer": "c1", "id": got[0], "action": "explode" }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Delete; then everything about it is 404.
    let (st, _) = s.call(Method::DELETE, "/groups/g1", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for (m, path) in [
        (Method::GET, "/groups/g1"),
        (Method::DELETE, "/groups/g1"),
        (Method::POST, "/groups/g1/fetch?consumer=c"),
        (Method::POST, "/groups/g1/replay-parked"),
    ] {
        let (st, v) = s.call(m, path, None).await;
        assert_eq!(
            (st, v["error"].clone()),
            (StatusCode::NOT_FOUND, json!("group_not_found")),
            "{path}"
        );
    }
    s.stop().await.unwrap();
}

/// A group's `max_in_flight` is bounded over HTTP as over gRPC (a group keeps
/// that many events in memory): more is refused, the bound itself is taken.
#[tokio::test]
async fn max_in_flight_is_bounded() {
    let s = TestServer::start().await;
    let (st, v) = s
        .call(Method::PUT, "/groups/big", Some(json!({ "max_in_flight": 100_001 })))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = s
        .call(Method::PUT, "/groups/big", Some(json!({ "max_in_flight": 100_000 })))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["max_in_flight"], 100_000);
}

#[tokio::test]
async fn fetch_long_polls_and_unacked_events_come_back() {
    let s = TestServer::start().await;
    let (st, _) = s
        .call(
            Method::PUT,
            "/groups/lp",
            Some(json!({ "stream_prefix": "job-", "ack_timeout_ms": 200 })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let client = s.client.clone();
    let url = s.url("/streams/job-1");
    let appender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        client
            .post(url)
            .json(&json!({ "events": [{ "type": "Job" }] }))
            .send()
            .await
            .unwrap()
            .status()
    });
    let t = Instant::now();
    let (st, v) = s
        .call(Method::POST, "/groups/lp/fetch?consumer=w&timeout_ms=5000", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ids(&v).len(), 1, "{v}");
    assert!(t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(4));
    assert_eq!(appender.await.unwrap(), StatusCode::OK);
    // Not acknowledged within 200 ms: delivered again.
    let (_, again) = s
        .call(Method::POST, "/groups/lp/fetch?consumer=w&timeout_ms=2000", None)
        .await;
    assert_eq!(ids(&again), ids(&v));
    assert_eq!(again["events"][0]["retry_count"], 1);
    // Nothing more: an empty answer after the timeout.
    s.post("/groups/lp/ack", json!({ "consumer": "w", "ids": ids(&again) }))
        .await;
    let (st, v) = s
        .call(Method::POST, "/groups/lp/fetch?consumer=w&timeout_ms=100", None)
        .await;
    assert_eq!((st, v), (StatusCode::OK, json!({ "events": [] })));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_poll_ends_promptly_at_shutdown() {
    let s = TestServer::start().await;
    let (st, _) = s.call(Method::PUT, "/groups/lp", Some(json!({}))).await;
    assert_eq!(st, StatusCode::CREATED);
    let (client, url) = (s.client.clone(), s.url("/groups/lp/fetch?consumer=c&timeout_ms=20000"));
    let poll = tokio::spawn(async move {
        let resp = client.post(url).send().await.ok()?;
        Some((resp.status(), resp.json::<Value>().await.ok()?))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    s.stop().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    if let Some(answer) = poll.await.unwrap() {
        assert_eq!(answer, (StatusCode::OK, json!({ "events": [] })));
    }
}

#[tokio::test]
async fn dispatch_to_single_is_a_strategy_over_http_too() {
    let s = TestServer::start().await;
    let (st, v) = s
        .call(
            Method::PUT,
            "/groups/single",
            Some(json!({ "stream": "jobs", "strategy": "dispatch_to_single" })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["strategy"], "dispatch_to_single");
    s.append_n("jobs", 2).await;
    let (st, v) = s
        .call(Method::POST, "/groups/single/fetch?consumer=c1&max=5", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(ids(&v).len(), 2);
}

/// Waiting long polls hold no thread of the blocking pool that appends and
/// reads run on (they took one each, so that many polls starved appends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_long_polls_hold_no_blocking_thread() {
    let s = TestServer::start().await;
    let (st, _) = s
        .call(Method::PUT, "/groups/idle", Some(json!({ "stream": "quiet" })))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let mut polls = Vec::new();
    for i in 0..20 {
        let (c, u) = (
            s.client.clone(),
            s.url(&format!("/groups/idle/fetch?consumer=c{i}&timeout_ms=3000")),
        );
        polls.push(tokio::spawn(async move { c.post(u).send().await.map(|r| r.status()) }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::new();
    for _ in 0..10 {
        samples.push(s.state.operations_in_flight());
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    assert!(polls.iter().all(|p| !p.is_finished()), "the polls still wait");
    samples.sort_unstable();
    assert_eq!(
        samples[samples.len() / 2],
        0,
        "blocking operations while 20 polls wait: {samples:?}"
    );
    // An append still wakes a waiting poll.
    s.append_n("quiet", 1).await;
    let mut woken = 0;
    for p in polls {
        assert_eq!(p.await.unwrap().unwrap(), StatusCode::OK);
        woken += 1;
    }
    assert_eq!(woken, 20);
}

/// Long polls past `max_long_polls` are refused with 503, as subscriptions
/// past `max_subscribers` are; a fetch that does not wait is not counted.
#[tokio::test]
async fn long_polls_past_the_limit_are_refused() {
    let s = TestServer::start_with(|c| c.max_long_polls = 2).await;
    let (st, _) = s
        .call(Method::PUT, "/groups/few", Some(json!({ "stream": "quiet" })))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let mut polls = Vec::new();
    for i in 0..2 {
        let (c, u) = (
            s.client.clone(),
            s.url(&format!("/groups/few/fetch?consumer=c{i}&timeout_ms=2000")),
        );
        polls.push(tokio::spawn(async move { c.post(u).send().await.unwrap().status() }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, v) = s
        .call(Method::POST, "/groups/few/fetch?consumer=x&timeout_ms=2000", None)
        .await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("too_many_long_polls"))
    );
    let (st, v) = s.call(Method::POST, "/groups/few/fetch?consumer=y", None).await;
    assert_eq!((st, v), (StatusCode::OK, json!({ "events": [] })));
    for p in polls {
        assert_eq!(p.await.unwrap(), StatusCode::OK);
    }
    // The places are given back when the polls end.
    let (st, _) = s
        .call(Method::POST, "/groups/few/fetch?consumer=x&timeout_ms=10", None)
        .await;
    assert_eq!(st, StatusCode::OK);
}

/// Acknowledgements on one group wake only that group's waiting fetches,
/// and only when they changed something: 20 fetches waiting on another
/// group were each woken by every ack (every wake-up a look on the blocking
/// pool), which cut the busy group's acks to a tenth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_wake_only_their_own_groups_waiting_fetches() {
    let s = TestServer::start().await;
    for (name, stream) in [("idle", "quiet"), ("busy", "work")] {
        let settings = json!({ "stream": stream, "max_in_flight": 1, "ack_timeout_ms": 60000 });
        let (st, v) = s.call(Method::PUT, &format!("/groups/{name}"), Some(settings)).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    s.append_n("work", 30).await;
    let mut polls = Vec::new();
    for i in 0..20 {
        let (c, u) = (
            s.client.clone(),
            s.url(&format!("/groups/idle/fetch?consumer=c{i}&timeout_ms=8000")),
        );
        polls.push(tokio::spawn(async move { c.post(u).send().await.map(|r| r.status()) }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = s.state.group_fetch_wakeups();
    for _ in 0..20 {
        let (st, v) = s.call(Method::POST, "/groups/busy/fetch?consumer=w", None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let got = ids(&v);
        assert_eq!(got.len(), 1, "{v}");
        let (st, v) = s
            .call(
                Method::POST,
                "/groups/busy/ack",
                Some(json!({ "consumer": "w", "ids": got })),
            )
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    }
    // Acks of ids not in flight change nothing, even on the waiting group.
    let unknown = json!({ "consumer": "c0", "ids": ["00000000-0000-4000-8000-000000000000"] });
    let (st, _) = s.call(Method::POST, "/groups/idle/ack", Some(unknown)).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        s.state.group_fetch_wakeups(),
        before,
        "fetches waiting on another group were woken"
    );
    assert!(polls.iter().all(|p| !p.is_finished()), "the idle polls still wait");

    // An ack that frees the busy group's only place wakes its own waiting fetch.
    let (_, v) = s.call(Method::POST, "/groups/busy/fetch?consumer=w", None).await;
    let held = ids(&v);
    assert_eq!(held.len(), 1, "{v}");
    let (c, u) = (s.client.clone(), s.url("/groups/busy/fetch?consumer=x&timeout_ms=8000"));
    let waiter = tokio::spawn(async move { c.post(u).send().await.unwrap().json::<Value>().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "nothing to take while one event is in flight");
    let (st, _) = s
        .call(
            Method::POST,
            "/groups/busy/ack",
            Some(json!({ "consumer": "w", "ids": held })),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(ids(&waiter.await.unwrap()).len(), 1);
    for p in polls {
        p.abort();
    }
}

/// Waiting fetches are woken by the store's notice of new events, not by
/// looking at the head of the log every 10 ms (200 waiting fetches cost
/// 20,000 timer wake-ups a second): a fetch that waits a second with nothing
/// happening wakes only for its periodic look at its group (every 250 ms),
/// and an append still wakes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_fetches_wake_on_new_events_not_on_a_timer() {
    let s = TestServer::start().await;
    let (st, _) = s
        .call(Method::PUT, "/groups/calm", Some(json!({ "stream": "calm" })))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let before = s.state.fetch_wait_wakeups();
    let (st, v) = s
        .call(Method::POST, "/groups/calm/fetch?consumer=c&timeout_ms=1000", None)
        .await;
    assert_eq!((st, v), (StatusCode::OK, json!({ "events": [] })));
    let woken = s.state.fetch_wait_wakeups() - before;
    assert!(woken <= 1000 / 250 + 2, "{woken} wake-ups of one fetch waiting 1 s");
    // An append ends a fetch that would wait for much longer than the test runs.
    let (c, u) = (
        s.client.clone(),
        s.url("/groups/calm/fetch?consumer=c&timeout_ms=20000"),
    );
    let poll = tokio::spawn(async move { c.post(u).send().await.unwrap().json::<Value>().await.unwrap() });
    s.append_n("calm", 1).await;
    let v = poll.await.unwrap();
    assert_eq!(ids(&v).len(), 1, "{v}");
    s.stop().await.unwrap();
}

/// A group fetch of N events reads the group's source in one call, not one
/// call per event (300 events took 300 store calls), and delivers the same
/// events as before: in order, each once, first deliveries; under a small
/// byte budget the event that does not fit stays in the line (it comes
/// first in the next fetch, still a first delivery, not in flight unsent).
#[tokio::test]
async fn group_fetches_take_a_batch_per_store_call() {
    const MAX: usize = 10_000;
    let (s, gate) = TestServer::start_gated(|c| c.max_response_bytes = MAX).await;
    s.append_n("orders", 300).await;
    let (st, v) = s
        .call(Method::PUT, "/groups/g", Some(json!({ "stream": "orders" })))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let before = gate.reads();
    let r = s
        .client
        .post(s.url("/groups/g/fetch?consumer=c&max=300"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.bytes().await.unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body.len() <= MAX,
        "a body of {} bytes for a budget of {MAX}",
        body.len()
    );
    let events = v["events"].as_array().unwrap();
    let fetched: Vec<u64> = events.iter().map(|e| e["revision"].as_u64().unwrap()).collect();
    // The source is read in a few batches (8 events, then 16, 32, 64 at
    // most), not once per event (one fetch(1) per event: 49 reads for 49).
    let reads = gate.reads() - before;
    assert!(reads <= 4, "{reads} reads of the source for {} events", fetched.len());
    // As many as fit in MAX bytes, from the first, first deliveries.
    assert!(fetched.len() > 10 && fetched.len() < 300, "{}", fetched.len());
    assert_eq!(fetched, (0..fetched.len() as u64).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e["retry_count"] == json!(0)), "{v}");
    // The rest come in the next fetches, each once, none delivered twice.
    let mut seen = fetched;
    while seen.len() < 300 {
        let (st, v) = s.post("/groups/g/fetch?consumer=c&max=300", json!({})).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let page = v["events"].as_array().unwrap();
        assert!(!page.is_empty(), "after {} events", seen.len());
        assert!(page.iter().all(|e| e["retry_count"] == json!(0)), "{v}");
        seen.extend(page.iter().map(|e| e["revision"].as_u64().unwrap()));
    }
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
    let (st, v) = s.get("/groups/g").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["in_flight"], json!(300), "{v}");
    s.stop().await.unwrap();
}
