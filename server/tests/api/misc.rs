//! Health, metrics, the OpenAPI document against the real router, admin routes, shutdown.

use std::sync::Arc;

use annal_server::{ROUTES, Verb};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;

#[tokio::test]
async fn health_and_metrics() {
    let s = TestServer::start().await;
    let (st, v) = s.get("/health/live").await;
    assert_eq!((st, v), (StatusCode::OK, json!({ "status": "live" })));
    let (st, v) = s.get("/health/ready").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "ready");
    s.append_n("m-1", 3).await;
    s.append_n("m-2", 1).await;
    s.get("/streams/m-1").await;
    s.get("/streams/nope").await;
    let resp = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    for needle in [
        "annal_appends_total 2\n",
        "annal_events_appended_total 4\n",
        "annal_append_bytes_total ",
        "# TYPE annal_append_seconds histogram\n",
        "annal_append_seconds_count 2\n",
        "annal_read_seconds_count ",
        "annal_http_requests_total{route=\"/streams/{stream}\",status=\"200\"} 3\n",
        "annal_http_requests_total{route=\"/streams/{stream}\",status=\"404\"} 1\n",
        "annal_subscribers 0\n",
        "annal_events 4\n",
        "annal_streams 2\n",
        "annal_segments 1\n",
        "annal_segment_bytes ",
        "annal_index_bytes ",
        "annal_disk_available_bytes ",
        "annal_scavenge_runs_total 0\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Every sample line is `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    s.stop().await.unwrap();
}

fn sample_path(path: &str) -> String {
    path.replace("{stream}", "probe")
        .replace("{name}", "probe")
        .replace("{id}", "00000000-0000-0000-0000-000000000000")
}

#[tokio::test]
async fn openapi_document_matches_the_served_routes() {
    let s = TestServer::start().await;
    let (st, doc) = s.get("/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let mut documented = annal_server::openapi::operations(&doc);
    documented.sort();
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.path.to_string(), r.verb.as_str().to_string()))
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
    // The real router serves every route of the table (no 404 "not_found", no 405).
    for r in ROUTES {
        let method = match r.verb {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Delete => Method::DELETE,
        };
        let resp = s
            .client
            .request(method, s.url(&sample_path(r.path)))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{:?} {}", r.verb, r.path);
        if r.streaming {
            assert_eq!(status, StatusCode::OK);
            continue;
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_ne!(body["error"], "not_found", "{:?} {}", r.verb, r.path);
    }
    // And nothing else is served.
    for (m, path) in [
        (Method::GET, "/admin/scavenge"),
        (Method::PUT, "/streams/x"),
        (Method::POST, "/all"),
    ] {
        let resp = s.client.request(m, s.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn admin_routes() {
    let s = TestServer::start().await;
    s.append_n("a", 10).await;
    let (st, v) = s.call(Method::POST, "/admin/scavenge", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["segments_examined"].is_u64());
    let (st, v) = s.call(Method::POST, "/admin/compress", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["segments"].is_u64());
    let dest = s.dir.path().join("backup");
    let (st, v) = s.post("/admin/backup", json!({ "dir": dest })).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["events"], 10);
    let copy = annal::Store::open(&dest, annal::Options::default()).unwrap();
    assert_eq!(copy.head_position(), 10);
    drop(copy);
    let (st, v) = s.post("/admin/backup", json!({ "dir": dest })).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_input"))
    );
    let (st, _) = s.post("/admin/backup", json!({ "dir": "relative/path" })).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, text) = s.get("/metrics").await;
    let text = text.as_str().unwrap();
    assert!(text.contains("annal_scavenge_runs_total 1\n"));
    assert!(text.contains("annal_compress_runs_total 1\n"));
    assert!(text.contains("annal_backups_total 1\n"));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_appends_and_releases_the_store() {
    let s = TestServer::start().await;
    // Appends running while shutdown begins all complete, or none started.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = s.client.clone();
        let url = s.url(&format!("/streams/sd-{i}"));
        tasks.push(tokio::spawn(async move {
            let body: Vec<Value> = (0..200).map(|_| json!({ "type": "T", "data": [1, 2, 3] })).collect();
            client
                .post(url)
                .json(&json!({ "events": body }))
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let store = s.store.clone();
    let ready_url = s.url("/health/ready");
    let client = s.client.clone();
    // The data directory must outlive the server: the store is closed below.
    let mut s = s;
    let _dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    s.stop().await.unwrap();
    let mut ok = 0;
    for t in tasks {
        if let Ok(st) = t.await.unwrap() {
            assert_eq!(st, StatusCode::OK);
            ok += 1;
        }
    }
    // Every acknowledged append is in the store, and nothing else holds it.
    assert!(store.head_position() >= ok * 200);
    assert!(client.get(ready_url).send().await.is_err(), "no longer accepting");
    let store = Arc::try_unwrap(store).expect("the server released the store");
    store.close().unwrap();
}

/// A target that refuses every batch (as with a wrong password).
struct Refusing;

impl annal::ForwardTarget for Refusing {
    fn describe(&self) -> String {
        "refusing".into()
    }
    fn load_checkpoint(&mut self, _forwarder: &str) -> Result<Option<u64>, annal::TargetError> {
        Ok(None)
    }
    fn deliver(&mut self, _batch: &annal::Batch<'_>) -> Result<(), annal::TargetError> {
        Err(annal::TargetError::Refused("wrong password".into()))
    }
}

#[tokio::test]
async fn health_reports_forwarders_and_a_forwarder_in_error_degrades_it() {
    let s = TestServer::start().await;
    let (st, v) = s.get("/health").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["forwarders"], json!([]));
    s.append_n("h-1", 3).await;
    let settings = annal::ForwardSettings::default()
        .backoff_initial(std::time::Duration::from_millis(1))
        .backoff_max(std::time::Duration::from_millis(50));
    let handle = annal::Forwarder::new(s.store.clone(), "centre", settings, Box::new(Refusing))
        .unwrap()
        .spawn()
        .unwrap();
    s.state.set_forwarders(vec![handle.status_handle()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while handle.status().state != annal::ForwardState::Error {
        assert!(std::time::Instant::now() < deadline, "{:?}", handle.status());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (st, v) = s.get("/health").await;
    // Degraded, not unavailable: the store still serves reads and appends.
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["forwarders"][0]["name"], "centre");
    assert_eq!(v["forwarders"][0]["state"], "error");
    let problem = v["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("centre") && problem.contains("wrong password"),
        "{problem}"
    );
    let (st, _) = s.get("/health/ready").await;
    assert_eq!(st, StatusCode::OK);
    let _ = handle.stop();
}

#[tokio::test]
async fn health_is_degraded_when_undelivered_events_threaten_the_disk_budget() {
    let dir = tempfile::tempdir().unwrap();
    let options = annal::Options::default()
        .durability(annal::Durability::Never)
        .segment_size(8 * 1024)
        .retention(annal::RetentionPolicy {
            max_bytes: Some(20 * 1024),
            ..annal::RetentionPolicy::default()
        });
    let store = Arc::new(annal::Store::open(dir.path().join("data"), options).unwrap());
    // A forwarder that waits and never ran holds from position 0.
    annal::register_forwarder(&store, "behind", &annal::ForwardSettings::default()).unwrap();
    for i in 0..400 {
        store
            .append(
                "budget",
                annal::ExpectedVersion::Any,
                vec![annal::EventData::json(
                    "Filled",
                    format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(100)),
                )],
            )
            .unwrap();
    }
    let s = TestServer::start_store(
        store,
        dir,
        annal_server::ServerConfig::open("127.0.0.1:0".parse().unwrap()),
        "http",
        reqwest::Client::new(),
    )
    .await;
    let (st, v) = s.get("/health").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["retention"]["held_by"], "behind");
    assert!(v["retention"]["held_bytes"].as_u64().unwrap() > 20 * 1024, "{v}");
    assert!(v["problems"][0].as_str().unwrap().contains("disk budget"), "{v}");
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("annal_retention_budget_exceeded 1\n"), "{text}");
    assert!(text.contains("annal_retention_max_bytes 20480\n"), "{text}");
}

/// Appends `n` events with metadata `{"k":"v<i>"}` to `stream` (a filter on
/// `metadata.k` scans: the test servers do not index `k`).
async fn append_with_k(s: &TestServer, stream: &str, n: usize) {
    let store = s.store.clone();
    let stream = stream.to_string();
    tokio::task::spawn_blocking(move || {
        let evs: Vec<annal::EventData> = (0..n)
            .map(|i| annal::EventData::json("T", "{}").with_metadata(format!(r#"{{"k":"v{i}"}}"#).into_bytes()))
            .collect();
        store.append(&stream, annal::ExpectedVersion::Any, evs).unwrap();
    })
    .await
    .unwrap();
}

/// Waits (at most 10 s) until no store operation runs on the blocking pool.
async fn wait_for_idle_pool(s: &TestServer) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.state.operations_in_flight() > 0 {
        assert!(std::time::Instant::now() < deadline, "store operations still run");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A count or filtered scan cut by the request timeout frees its
/// `max_scans` place at once and stops at its next event: a client sending
/// slow scans cannot keep every place taken (nor blocking threads busy)
/// after its requests were answered. Its reads wait at a closed gate, so
/// the scans are cut in the middle of their work whatever the machine's speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_cut_by_the_timeout_stop_and_free_their_places() {
    let (s, gate) = TestServer::start_gated(|c| {
        c.request_timeout_ms = 2000;
        c.max_scans = 1;
    })
    .await;
    append_with_k(&s, "big-1", 500).await;
    gate.close();
    let get = |path: &str| {
        let (c, u) = (s.client.clone(), s.url(path));
        tokio::spawn(async move {
            let r = c.get(u).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    let first = get("/count?metadata.k=nope");
    gate.wait_for_waiting(1).await;
    let (st, v) = first.await.unwrap();
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("timeout")),
        "{v}"
    );
    assert_eq!(gate.waiting(), 1, "the cut count still waits for its read");
    // Its place is free: the next scan is let in (and is cut in turn).
    let (st, v) = get("/all?metadata.k=nope").await.unwrap();
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("timeout")),
        "{v}"
    );
    let before = gate.reads();
    gate.open();
    wait_for_idle_pool(&s).await;
    // Each cut scan ends its one read under way, and reads nothing more.
    let after = gate.reads() - before;
    assert!(after <= 2, "the cut scans read {after} events after they were cut");
    let (st, v) = s.get("/count?metadata.k=v7").await;
    assert_eq!((st, v["count"].clone()), (StatusCode::OK, json!(1)), "{v}");
    s.stop().await.unwrap();
}

/// Only reads and counts the indexes cannot serve take a `max_scans` place:
/// while a scanning count holds the only place, index-served reads of `/all`
/// (a limited token must give a `stream_prefix`) and counts the indexes
/// answer (everything, by stream, by type) are served, and only a count or
/// read that scans is refused with `too_many_scans`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_served_reads_and_counts_take_no_scan_place() {
    let (s, gate) = TestServer::start_gated(|c| {
        c.request_timeout_ms = 10_000;
        c.max_scans = 1;
        c.no_auth = false;
        c.tokens = vec![
            crate::common::token("admin", annal_server::Role::Admin, &[]),
            crate::common::token("tenant", annal_server::Role::Read, &["order-"]),
        ];
    })
    .await;
    append_with_k(&s, "big-1", 200).await;
    // Reads of big-1's events wait at the gate; the event appended after it is read freely.
    gate.close_written();
    let admin = Some("secret-admin");
    let (st, v) = s
        .call_as(
            Method::POST,
            "/streams/order-1",
            Some(json!({ "events": [{ "type": "Placed" }] })),
            admin,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // A scanning count takes the only place, and waits at the gate.
    let (c, u) = (s.client.clone(), s.url("/count?metadata.k=nope"));
    let held = tokio::spawn(async move {
        let r = c.get(u).bearer_auth("secret-admin").send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    });
    gate.wait_for_waiting(1).await;
    // The count of everything comes from the index headers: no place.
    let (st, v) = s.call_as(Method::GET, "/count", None, admin).await;
    assert_eq!((st, v["count"].clone()), (StatusCode::OK, json!(201)), "{v}");
    let (st, v) = s
        .call_as(Method::GET, "/all?stream_prefix=order-", None, Some("secret-tenant"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["events"][0]["stream"], "order-1", "{v}");
    // Counts and reads that scan wait for a place, and so do counts whose
    // index pass grows with the streams or types they admit.
    for path in [
        "/count?metadata.k=v1",
        "/all?metadata.k=nope",
        "/count?type=T&metadata.k=v1",
        "/count?stream_prefix=order-",
        "/count?type=Placed",
        "/count?group_by=stream",
    ] {
        let (st, v) = s.call_as(Method::GET, path, None, admin).await;
        assert_eq!(
            (st, v["error"].clone()),
            (StatusCode::SERVICE_UNAVAILABLE, json!("too_many_scans")),
            "{path}: {v}"
        );
    }
    gate.open();
    let (st, v) = held.await.unwrap();
    assert_eq!((st, v["count"].clone()), (StatusCode::OK, json!(0)), "{v}");
    for (path, want) in [
        ("/count?stream_prefix=order-", json!(1)),
        ("/count?type=Placed", json!(1)),
        ("/count?group_by=stream", json!(201)),
    ] {
        let (st, v) = s.call_as(Method::GET, path, None, admin).await;
        assert_eq!((st, v["count"].clone()), (StatusCode::OK, want), "{path}: {v}");
    }
    s.stop().await.unwrap();
}

/// A subscription to `$all` with a filter the indexes cannot serve reads the
/// log to find its events: far behind the head, it reads a span at a time,
/// each in one of the `max_scans` places, as scanning reads do. While a
/// scanning count holds the only place, the subscription reads nothing (it
/// read at once, and passed over the whole log, taking no place); once the
/// place is free, it delivers its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanning_subscription_reads_the_log_in_scan_places() {
    let (s, gate) = TestServer::start_gated(|c| {
        c.request_timeout_ms = 10_000;
        c.max_scans = 1;
    })
    .await;
    let n = usize::try_from(annal::CATCH_UP_SPAN).unwrap() + 1000;
    append_with_k(&s, "big-1", n).await;
    gate.close();
    let (c, u) = (s.client.clone(), s.url("/count?metadata.k=nope"));
    let held = tokio::spawn(async move {
        let r = c.get(u).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    });
    gate.wait_for_waiting(1).await;
    let path = format!("/subscribe/all?from=0&metadata.k=v{}", n - 1);
    let mut sub = crate::subscribe::open(&s, &path, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(gate.waiting(), 1, "the subscription reads the log without a place");
    gate.open();
    let (st, v) = held.await.unwrap();
    assert_eq!((st, v["count"].clone()), (StatusCode::OK, json!(0)), "{v}");
    let e = sub.next_event().await.expect("the subscription's event");
    assert_eq!(e.data["revision"], json!(n - 1), "{:?}", e.data);
    s.stop().await.unwrap();
}

/// A group fetch on the log whose filter no index serves reads events to
/// find those it keeps: it takes a `max_scans` place like any scanning
/// read. While a scanning count holds the only place, a fetch of such a group
/// is refused with `too_many_scans`; a group whose filter the indexes serve
/// is fetched; once the place is free, the scanning group is fetched too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_fetch_that_scans_takes_a_scan_place() {
    let (s, gate) = TestServer::start_gated(|c| {
        c.request_timeout_ms = 10_000;
        c.max_scans = 1;
    })
    .await;
    append_with_k(&s, "big-1", 200).await;
    for (name, filter) in [
        ("scanning", json!({ "metadata": { "k": "v1" }, "start": "end" })),
        ("indexed", json!({ "stream_prefix": "order-", "start": "end" })),
    ] {
        let (st, v) = s.call(Method::PUT, &format!("/groups/{name}"), Some(filter)).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    // Reads of big-1's events wait at the gate; the event appended after it is read freely.
    gate.close_written();
    append_with_k(&s, "order-1", 2).await;
    let (c, u) = (s.client.clone(), s.url("/count?metadata.k=nope"));
    let held = tokio::spawn(async move {
        let r = c.get(u).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    });
    gate.wait_for_waiting(1).await;
    let (st, v) = s.call(Method::POST, "/groups/scanning/fetch?consumer=c1", None).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("too_many_scans")),
        "{v}"
    );
    let (st, v) = s.call(Method::POST, "/groups/indexed/fetch?consumer=c1", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["events"].as_array().map(Vec::len), Some(2), "{v}");
    gate.open();
    let (st, v) = held.await.unwrap();
    assert_eq!((st, v["count"].clone()), (StatusCode::OK, json!(0)), "{v}");
    let (st, v) = s.call(Method::POST, "/groups/scanning/fetch?consumer=c1", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["events"][0]["stream"], "order-1", "{v}");
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "{v}");
    s.stop().await.unwrap();
}

/// The console's listings that pass over every stream name (a browse page
/// counts its matches, categories count streams) take a `max_scans` place;
/// a `GET /streams` page, bounded by its size, takes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_over_every_stream_name_take_a_scan_place() {
    let (s, gate) = TestServer::start_gated(|c| {
        c.request_timeout_ms = 10_000;
        c.max_scans = 1;
    })
    .await;
    append_with_k(&s, "big-1", 200).await;
    gate.close_written();
    let (c, u) = (s.client.clone(), s.url("/count?metadata.k=nope"));
    let held = tokio::spawn(async move {
        let r = c.get(u).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    });
    gate.wait_for_waiting(1).await;
    for path in ["/browse/streams?search=big", "/browse/categories"] {
        let (st, v) = s.get(path).await;
        assert_eq!(
            (st, v["error"].clone()),
            (StatusCode::SERVICE_UNAVAILABLE, json!("too_many_scans")),
            "{path}: {v}"
        );
    }
    let (st, v) = s.get("/streams").await;
    assert_eq!(
        (st, v["streams"][0]["stream"].clone()),
        (StatusCode::OK, json!("big-1")),
        "{v}"
    );
    gate.open();
    let (st, _) = held.await.unwrap();
    assert_eq!(st, StatusCode::OK);
    let (st, v) = s.get("/browse/streams?search=big").await;
    assert_eq!((st, v["matched"].clone()), (StatusCode::OK, json!(1)), "{v}");
    s.stop().await.unwrap();
}

/// An append whose condition is on a metadata field the store does not
/// index checks it by reading the log: it takes a `max_scans` place (while
/// a scanning count holds the only one, it is refused with
/// `too_many_scans`, having appended nothing); a condition the indexes
/// check (on types) takes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_condition_scans_takes_a_scan_place() {
    let (s, gate) = TestServer::start_gated(|c| {
        c.request_timeout_ms = 10_000;
        c.max_scans = 1;
    })
    .await;
    append_with_k(&s, "big-1", 200).await;
    gate.close_written();
    let (c, u) = (s.client.clone(), s.url("/count?metadata.k=nope"));
    let held = tokio::spawn(async move {
        let r = c.get(u).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    });
    gate.wait_for_waiting(1).await;
    let append = |query: Value| json!({ "stream": "order-1", "events": [{ "type": "Placed" }], "condition": { "query": query } });
    let scanning = append(json!({ "items": [{ "metadata": { "k": "nope" } }] }));
    let (st, v) = tokio::time::timeout(std::time::Duration::from_secs(10), s.post("/append", scanning.clone()))
        .await
        .expect("refused at once");
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("too_many_scans")),
        "{v}"
    );
    let (st, v) = s.post("/append", append(json!({ "types": ["Cancelled"] }))).await;
    assert_eq!((st, v["position"].clone()), (StatusCode::OK, json!(200)), "{v}");
    gate.open();
    let (st, _) = held.await.unwrap();
    assert_eq!(st, StatusCode::OK);
    let (st, v) = s.post("/append", scanning).await;
    assert_eq!((st, v["position"].clone()), (StatusCode::OK, json!(201)), "{v}");
    s.stop().await.unwrap();
}

/// A subscription to the log whose filter no index serves stops reading as
/// soon as its client goes away, even in the middle of a long pass over
/// events it does not send: its reads used to go on to the head of the log
/// (here 2,000 events of 1 KiB: 8 reads of the segment file, 1 now; in a
/// large log, minutes of a thread's work) before it
/// looked at its client again. The server's closing of the connection
/// (seen as its slot among `max_connections` coming free) comes with the
/// end of the response, which cancels the reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanning_subscription_stops_reading_when_its_client_goes() {
    let (s, gate) = TestServer::start_gated(|c| {
        c.max_connections = 4;
        c.max_subscribers = 1;
    })
    .await;
    // 2,000 events of 1 KiB: more than one read of the segment file.
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || {
        let evs: Vec<annal::EventData> = (0..2000)
            .map(|_| annal::EventData::json("T", format!("{{\"pad\":\"{}\"}}", "x".repeat(1024))))
            .collect();
        store.append("big-1", annal::ExpectedVersion::Any, evs).unwrap();
    })
    .await
    .unwrap();
    gate.close();
    let client = reqwest::Client::new();
    let resp = client
        .get(s.url("/subscribe/all?metadata.k=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    gate.wait_for_waiting(1).await;
    // Take every other connection slot: a new connection is then refused
    // until the subscription's connection is closed by the server.
    let addr = s.url("").trim_start_matches("http://").to_string();
    let fresh = || async {
        let c = reqwest::Client::new();
        c.get(s.url("/health/live")).send().await.is_ok()
    };
    let mut held = Vec::new();
    while fresh().await {
        // The server frees the fresh connection's slot once it has seen it
        // close, and counts a new connection once it has accepted it: both
        // after the client is done. Without these waits a held connection
        // could arrive while the fresh one still held its slot, be refused,
        // and the loop never reach the cap (3 failures in 6 runs).
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        assert!(held.len() < 32, "the connection limit is not reached");
    }
    drop(resp);
    drop(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !fresh().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscription's connection stays open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = gate.reads();
    gate.open();
    while s.state.subscribers() > 0 {
        assert!(std::time::Instant::now() < deadline, "the subscription still runs");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let after = gate.reads() - before;
    eprintln!("{after} reads after the client went");
    assert!(after <= 2, "the subscription read {after} times after its client went");
    drop(held);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn shredding_a_subject_erases_its_events_for_readers() {
    let s = TestServer::start().await;
    let (st, v) = s
        .post(
            "/streams/c-1",
            json!({ "events": [
                { "type": "Moved", "data": { "street": "PII-street" }, "subject": "ann" },
                { "type": "Plain", "data": {} }
            ] }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, read) = s.call(Method::GET, "/streams/c-1", None).await;
    assert_eq!(read["events"][0]["subject"], "ann");
    assert_eq!(read["events"][0]["data"]["street"], "PII-street");
    assert!(read["events"][1].get("subject").is_none());
    let (st, v) = s.call(Method::DELETE, "/subjects/ann", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!({ "subject": "ann", "shredded": true }));
    let (_, read) = s.call(Method::GET, "/streams/c-1", None).await;
    let e = &read["events"][0];
    assert_eq!(
        (e["erased"].clone(), e["data"].clone(), e["revision"].clone()),
        (json!(true), Value::Null, json!(0))
    );
    assert!(!read.to_string().contains("PII-street"));
    assert!(read["events"][1].get("erased").is_none());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn an_event_posted_erased_is_stored_erased_and_its_retry_is_idempotent() {
    let s = TestServer::start().await;
    let id = "0f6d3c1e-7a0b-4c55-9d1e-2b8a4f1c9e01";
    let body = json!({ "stream": "c-1", "events": [
        { "type": "Moved", "id": id, "tags": ["t"], "erased": true, "data_base64": "" }
    ] });
    let (st, first) = s.post("/append", body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let (st, again) = s.post("/append", body).await;
    assert_eq!((st, &again), (StatusCode::OK, &first));
    let (_, read) = s.call(Method::GET, "/streams/c-1", None).await;
    assert_eq!(read["events"].as_array().unwrap().len(), 1);
    let e = &read["events"][0];
    assert_eq!(
        (e["erased"].clone(), e["data"].clone(), e["id"].clone()),
        (json!(true), Value::Null, json!(id))
    );
    // An erased event carries nothing personal: data is refused.
    let (st, v) = s
        .post(
            "/append",
            json!({ "stream": "c-2", "events": [{ "type": "Moved", "erased": true, "data": { "a": 1 } }] }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    s.stop().await.unwrap();
}
