//! Appends, reads, deletes, metadata, snapshots and bad input.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;

fn is_timestamp(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    // 2024-01-02T03:04:05.123456Z
    s.len() == 27 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn append_then_read_a_stream() {
    let s = TestServer::start().await;
    let id = "6f1c1f5e-8f61-4a53-9a4c-0d6f0a8c0b11";
    let (st, v) = s
        .post(
            "/streams/order-1",
            json!({
                "expected": "no-stream",
                "events": [
                    { "type": "OrderPlaced", "data": { "total": 10 }, "metadata": { "user": "u1" }, "id": id, "tags": ["tenant:t1"] },
                    { "type": "Blob", "data_base64": "/wAB" },
                    { "type": "Empty" }
                ]
            }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({ "first_revision": 0, "next_expected_version": 2, "position": 0 })
    );

    let (st, v) = s.get("/streams/order-1").await;
    assert_eq!(st, StatusCode::OK);
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    let e = &events[0];
    assert_eq!(e["stream"], "order-1");
    assert_eq!(e["revision"], 0);
    assert_eq!(e["position"], 0);
    assert_eq!(e["id"], id);
    assert_eq!(e["type"], "OrderPlaced");
    assert_eq!(e["data"], json!({ "total": 10 }));
    assert_eq!(e["metadata"], json!({ "user": "u1" }));
    assert_eq!(e["tags"], json!(["tenant:t1"]));
    assert!(is_timestamp(&e["timestamp"]), "{}", e["timestamp"]);
    assert_eq!(events[1]["data_base64"], "/wAB");
    assert!(events[1].get("data").is_none());
    assert_eq!(events[1]["metadata"], Value::Null);
    assert_eq!(events[2]["data"], Value::Null);

    // Paging and direction.
    let (_, v) = s.get("/streams/order-1?from=1&limit=1").await;
    assert_eq!(v["events"][0]["revision"], 1);
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    let (_, v) = s.get("/streams/order-1?direction=backward&limit=2").await;
    let revs: Vec<u64> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, vec![2, 1]);
    let (_, v) = s.get("/streams/order-1?from=end").await;
    assert_eq!(v["events"][0]["revision"], 2);

    // Expected versions as numbers and strings.
    let (st, v) = s
        .post(
            "/streams/order-1",
            json!({ "expected": 2, "events": [{ "type": "A" }] }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = s
        .post(
            "/streams/order-1",
            json!({ "expected": "3", "events": [{ "type": "A" }] }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .post(
            "/streams/order-1",
            json!({ "expected": "exists", "events": [{ "type": "A" }] }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    // Idempotent retry: the same id at the same place returns the original result.
    let again = json!({ "events": [{ "type": "OrderPlaced", "data": { "total": 10 }, "metadata": { "user": "u1" }, "id": id, "tags": ["tenant:t1"] }] });
    let (st, v) = s.post("/streams/order-2", again.clone()).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "idempotency_conflict");

    let (st, v) = s.get("/streams/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "stream_not_found");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_expected_versions_are_409s() {
    let s = TestServer::start().await;
    let (st, v) = s
        .post(
            "/streams/a",
            json!({ "expected": "exists", "events": [{ "type": "T" }] }),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(v["error"], "wrong_expected_version");
    assert_eq!(v["expected"], "exists");
    assert_eq!(v["actual"], Value::Null);
    assert!(v["message"].is_string());

    s.append_n("a", 2).await;
    let (st, v) = s
        .post(
            "/streams/a",
            json!({ "expected": "no-stream", "events": [{ "type": "T" }] }),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(v["actual"], 1);
    let (st, v) = s
        .post("/streams/a", json!({ "expected": 7, "events": [{ "type": "T" }] }))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(v["expected"], 7);
    assert_eq!(v["actual"], 1);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn consistency_boundary_appends() {
    let s = TestServer::start().await;
    let ev = |t: &str| json!({ "type": t, "tags": ["course:c1"] });
    let body = json!({
        "stream": "student-1",
        "events": [ev("StudentSubscribed")],
        "condition": { "query": { "types": ["StudentSubscribed"], "tags": ["course:c1"] } }
    });
    let (st, v) = s.post("/append", body.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["position"], 0);
    // The same condition now fails: a matching event exists.
    let (st, v) = s.post("/append", body).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(v["error"], "condition_failed");
    assert_eq!(v["position"], 0);
    // With "after" past it, it passes; the items form works too.
    let (st, v) = s
        .post(
            "/append",
            json!({
                "stream": "student-2",
                "expected": "no-stream",
                "events": [ev("StudentSubscribed")],
                "condition": { "query": { "items": [{ "types": ["StudentSubscribed"], "tags": ["course:c1"] }, { "types": ["CourseClosed"] }] }, "after": 0 }
            }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Without a condition it is a plain append; expected still applies.
    let (st, v) = s
        .post(
            "/append",
            json!({ "stream": "student-2", "expected": "no-stream", "events": [ev("X")] }),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(v["error"], "wrong_expected_version");
    // Both forms at once is refused.
    let (st, _) = s
        .post(
            "/append",
            json!({ "stream": "x", "events": [ev("X")], "condition": { "query": { "types": ["A"], "items": [] } } }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn global_log_reads_filter_and_events_by_id() {
    let s = TestServer::start().await;
    for (stream, t, tag) in [
        ("order-1", "Placed", "t:1"),
        ("order-2", "Placed", "t:2"),
        ("user-1", "Created", "t:1"),
        ("order-1", "Paid", "t:1"),
    ] {
        let (st, _) = s
            .post(
                &format!("/streams/{stream}"),
                json!({ "events": [{ "type": t, "tags": [tag] }] }),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    let positions = |v: &Value| -> Vec<u64> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect()
    };
    let (_, v) = s.get("/all").await;
    assert_eq!(positions(&v), vec![0, 1, 2, 3]);
    let (_, v) = s.get("/all?type=Placed&type=Paid").await;
    assert_eq!(positions(&v), vec![0, 1, 3]);
    let (_, v) = s.get("/all?tag=t:1&stream_prefix=order-").await;
    assert_eq!(positions(&v), vec![0, 3]);
    let (_, v) = s.get("/all?direction=backward&limit=2").await;
    assert_eq!(positions(&v), vec![3, 2]);
    let (_, v) = s.get("/all?from=2").await;
    assert_eq!(positions(&v), vec![2, 3]);
    let (_, v) = s
        .get("/all?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00%2B01:00")
        .await;
    assert_eq!(positions(&v), vec![0, 1, 2, 3]);
    let (_, v) = s.get("/all?until=2000-01-01T00:00:00Z").await;
    assert_eq!(positions(&v), Vec::<u64>::new());
    let (st, v) = s.get("/all?since=yesterday").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_query");

    let (_, all) = s.get("/all?limit=1").await;
    let id = all["events"][0]["id"].as_str().unwrap().to_string();
    let (st, v) = s.get(&format!("/events/{id}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["position"], 0);
    let (st, v) = s.get("/events/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "event_not_found");
    let (st, _) = s.get("/events/not-a-uuid").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let (_, v) = s.get("/streams").await;
    assert_eq!(
        v,
        json!({ "streams": [
            { "stream": "order-1", "last_revision": 1, "last_position": 3 },
            { "stream": "order-2", "last_revision": 0, "last_position": 1 },
            { "stream": "user-1", "last_revision": 0, "last_position": 2 },
        ] })
    );
    let (_, v) = s.get("/streams?prefix=user-").await;
    assert_eq!(v["streams"].as_array().unwrap().len(), 1);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn deletes_metadata_and_snapshots() {
    let s = TestServer::start().await;
    s.append_n("soft", 3).await;
    s.append_n("hard", 1).await;
    let (st, v) = s.call(Method::DELETE, "/streams/soft?expected=5", None).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(v["error"], "wrong_expected_version");
    let (st, v) = s.call(Method::DELETE, "/streams/soft?expected=bogus", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_expected_version");
    let (st, _) = s.call(Method::DELETE, "/streams/soft?expected=2", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = s.get("/streams/soft").await;
    assert_eq!(st, StatusCode::GONE);
    assert_eq!(v["error"], "stream_deleted");
    // A soft-deleted stream continues its revisions.
    let (st, v) = s.post("/streams/soft", json!({ "events": [{ "type": "T" }] })).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["first_revision"], 3);
    let (_, v) = s.get("/streams/soft").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1);

    let (st, _) = s.call(Method::DELETE, "/streams/hard?hard=true", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.post("/streams/hard", json!({ "events": [{ "type": "T" }] })).await;
    assert_eq!(st, StatusCode::GONE);
    let (st, _) = s.get("/streams/hard").await;
    assert_eq!(st, StatusCode::GONE);
    let (st, v) = s.call(Method::DELETE, "/streams/missing", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");

    // Metadata.
    s.append_n("m", 5).await;
    let (st, v) = s.get("/streams/m/metadata").await;
    assert_eq!((st, v), (StatusCode::OK, json!({})));
    let (st, _) = s.get("/streams/none/metadata").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let meta = json!({ "max_count": 2, "custom": { "owner": "x" } });
    let (st, v) = s.call(Method::PUT, "/streams/m/metadata", Some(meta.clone())).await;
    assert_eq!((st, v), (StatusCode::OK, meta.clone()));
    let (_, v) = s.get("/streams/m/metadata").await;
    assert_eq!(v, meta);
    let (_, v) = s.get("/streams/m").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    let (st, v) = s
        .call(Method::PUT, "/streams/m/metadata", Some(json!({ "maxcount": 1 })))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_request");

    // Snapshots.
    let (st, _) = s.get("/streams/m/snapshot").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = s
        .post("/streams/m/snapshot", json!({ "revision": 3, "data": { "sum": 6 } }))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = s.get("/streams/m/snapshot").await;
    assert_eq!(v, json!({ "revision": 3, "data": { "sum": 6 } }));
    let (st, _) = s
        .post("/streams/m/snapshot", json!({ "revision": 4, "data_base64": "AAEC" }))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, v) = s.get("/streams/m/snapshot").await;
    assert_eq!(v, json!({ "revision": 4, "data_base64": "AAEC" }));
    let (st, _) = s
        .post("/streams/m/snapshot", json!({ "revision": 99, "data": 1 }))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .post("/streams/zz/snapshot", json!({ "revision": 0, "data": 1 }))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_structured_400s() {
    let s = TestServer::start_with(|c| {
        c.max_events_per_append = 5;
        c.body_limit_bytes = 4096;
    })
    .await;
    let (st, v) = s.post_raw("/streams/a", "{\"events\": [").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_json");
    assert!(v["message"].is_string());
    let (st, v) = s.post_raw("/streams/a", "not json").await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_json"))
    );
    // JSON that strict parsers refuse would break every page that holds it.
    for data in [r#"{"s":"\ud800"}"#, r#"{"n":1e999}"#] {
        let body = format!(r#"{{"events":[{{"type":"T","data":{data}}}]}}"#);
        let (st, v) = s.post_raw("/streams/a", body).await;
        assert_eq!(
            (st, v["error"].clone()),
            (StatusCode::BAD_REQUEST, json!("invalid_input")),
            "{v}"
        );
    }
    assert!(s.store.stream_info("a").is_none());
    let (st, v) = s.post("/streams/a", json!({ "events": [], "extra": 1 })).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_request");
    assert!(v["message"].as_str().unwrap().contains("unknown field"));
    let (st, v) = s
        .post("/streams/a", json!({ "events": [{ "type": "T", "colour": 1 }] }))
        .await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_request"))
    );
    let (st, v) = s.post("/streams/a", json!({ "events": [{ "data": 1 }] })).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_request"))
    );
    for bad in [json!("maybe"), json!(-1), json!(1.5), json!(true)] {
        let (st, v) = s
            .post("/streams/a", json!({ "expected": bad, "events": [{ "type": "T" }] }))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"], "invalid_expected_version");
    }
    let long = "x".repeat(1025);
    let (st, v) = s
        .post(&format!("/streams/{long}"), json!({ "events": [{ "type": "T" }] }))
        .await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_input"))
    );
    let (st, v) = s.get(&format!("/streams/{long}")).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_input"))
    );
    let (st, v) = s
        .post("/append", json!({ "stream": long, "events": [{ "type": "T" }] }))
        .await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_input"))
    );
    let six: Vec<Value> = (0..6).map(|_| json!({ "type": "T" })).collect();
    let (st, v) = s.post("/streams/a", json!({ "events": six })).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("too_many_events"))
    );
    let (st, v) = s.post("/streams/a", json!({ "events": [] })).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_input"))
    );
    let (st, v) = s
        .post(
            "/streams/a",
            json!({ "events": [{ "type": "T", "data_base64": "!!" }] }),
        )
        .await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_input"))
    );
    let (st, v) = s
        .post(
            "/streams/a",
            json!({ "events": [{ "type": "T", "data": 1, "data_base64": "AA==" }] }),
        )
        .await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_input"))
    );
    let (st, v) = s.post("/streams/$system", json!({ "events": [{ "type": "T" }] })).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_input"))
    );
    let (st, v) = s.post_raw("/streams/a", vec![b' '; 5000]).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"], "payload_too_large");
    s.append_n("a", 1).await;
    let (st, v) = s.get("/streams/a?limit=10001").await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_query"))
    );
    let (st, v) = s.get("/streams/a?limit=0").await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_query"))
    );
    let (st, v) = s.get("/streams/a?colour=red").await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_query"))
    );
    let (st, v) = s.get("/streams/a?direction=sideways").await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_query"))
    );
    let (st, v) = s.get("/streams/a?from=-3").await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_query"))
    );
    let (st, v) = s.get("/no/such/route").await;
    assert_eq!((st, v["error"].clone()), (StatusCode::NOT_FOUND, json!("not_found")));
    let (st, v) = s.call(Method::PATCH, "/streams/a", None).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::METHOD_NOT_ALLOWED, json!("method_not_allowed"))
    );
    // A path that is not valid UTF-8: axum's own rejection, in the API's shape.
    let (st, v) = s.get("/streams/%FF").await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_request"))
    );
    assert!(v["message"].is_string());
    // The server is still fine.
    let (st, _) = s.get("/streams/a").await;
    assert_eq!(st, StatusCode::OK);
    s.stop().await.unwrap();
}

/// Issue 16: topic patterns, aggregates and metadata fields on `/all`, counts
/// on `/count`, aggregates on `/streams?category=`, and pages that say where to go on.
#[tokio::test]
async fn queries_by_topic_pattern_aggregate_and_metadata_and_counts() {
    let s = TestServer::start().await;
    for (stream, ty, actor) in [
        ("order-1", "app.lifecycle.started", "agent-7"),
        ("order-1", "hook.triggered.push", "agent-7"),
        ("order-2", "hook.triggered", "agent-1"),
        ("cart-1", "activity.x", "agent-7"),
        ("cart-1", "app.lifecycle", "agent-1"),
    ] {
        let (st, v) = s
            .post(
                &format!("/streams/{stream}"),
                json!({ "events": [{ "type": ty, "metadata": { "actor": actor } }] }),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let types = |v: &Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    let (st, v) = s
        .get("/all?type_pattern=app.lifecycle.%23&type_pattern=hook.triggered.*")
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        types(&v),
        ["app.lifecycle.started", "hook.triggered.push", "app.lifecycle"]
    );
    let (_, v) = s
        .get("/all?aggregate_type=order&metadata.actor=agent-7&direction=backward")
        .await;
    assert_eq!(types(&v), ["hook.triggered.push", "app.lifecycle.started"]);
    let (_, v) = s.get("/all?stream_pattern=cart-1&limit=1").await;
    assert_eq!(types(&v), ["activity.x"]);
    assert_eq!(v["next_from"], v["events"][0]["position"].as_u64().unwrap() + 1, "{v}");
    let (st, v) = s.get("/all?metadata.actor=agent-7&metadata.other=x").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(types(&v), Vec::<String>::new());

    // `#` matches every type (the server's own `$annal` event included).
    let (_, all) = s.get("/all").await;
    let n = all["events"].as_array().unwrap().len();
    assert!(n >= 5);
    let (st, v) = s.get("/count?type_pattern=%23").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!({ "count": n }));
    let (_, v) = s.get("/count?aggregate_type=order&group_by=stream").await;
    assert_eq!(v, json!({ "count": 3, "groups": { "order-1": 2, "order-2": 1 } }));
    let (_, v) = s.get("/count?metadata.actor=agent-1&group_by=category").await;
    assert_eq!(v, json!({ "count": 2, "groups": { "cart": 1, "order": 1 } }));
    let (st, v) = s.get("/count?group_by=week").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = s.get("/count?metadata.=x").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    let (_, v) = s.get("/streams?category=order").await;
    let names: Vec<&str> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["order-1", "order-2"]);
}

/// The metadata's ETag is the revision of the record that set it; a PUT with
/// `expected=` that revision writes, and one from an editor who read an older
/// version is refused with 409 and leaves what the other wrote.
#[tokio::test]
async fn a_metadata_write_with_an_expected_version_refuses_a_lost_update() {
    let s = TestServer::start().await;
    s.append_n("e", 1).await;
    let etag = |r: &reqwest::Response| r.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
    let r = s.client.get(s.url("/streams/e/metadata")).send().await.unwrap();
    assert_eq!(etag(&r).as_deref(), Some("\"no-stream\""));

    let (st, _) = s
        .call(
            Method::PUT,
            "/streams/e/metadata?expected=no-stream",
            Some(json!({ "max_count": 5 })),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let r = s.client.get(s.url("/streams/e/metadata")).send().await.unwrap();
    assert_eq!(etag(&r).as_deref(), Some("\"0\""));

    // Two editors both read version 0.
    let r = s
        .client
        .put(s.url("/streams/e/metadata?expected=0"))
        .json(&json!({ "max_count": 7 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(etag(&r).as_deref(), Some("\"1\""));
    let (st, v) = s
        .call(
            Method::PUT,
            "/streams/e/metadata?expected=0",
            Some(json!({ "max_age_ms": 1000 })),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "wrong_expected_version");
    assert_eq!(v["actual"], 1);
    let (_, v) = s.get("/streams/e/metadata").await;
    assert_eq!(v, json!({ "max_count": 7 }));

    let (st, v) = s
        .call(Method::PUT, "/streams/e/metadata?expected=later", Some(json!({})))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}

/// `GET /streams` answers at most `limit` streams (1,000 by default) and says
/// where the next page starts; following `next` lists every stream once, in order.
#[tokio::test]
async fn stream_listing_is_paged() {
    let s = TestServer::start().await;
    let appends: Vec<annal::Append> = (0..2500)
        .map(|i| {
            annal::Append::new(
                format!("s-{i:05}"),
                annal::ExpectedVersion::Any,
                vec![annal::EventData::json("T", "{}")],
            )
        })
        .collect();
    for r in s.store.append_batch(appends).unwrap() {
        r.unwrap();
    }
    let (st, v) = s.get("/streams").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["streams"].as_array().unwrap().len(), 1000);
    assert_eq!(v["next"], "s-00999");
    // A listing without `limit` used to hold every stream: it says it is cut.
    assert_eq!(v["truncated"], true);
    let expected: Vec<String> = (0..2500).map(|i| format!("s-{i:05}")).collect();
    for query in ["limit=700", "limit=700&category=s", "limit=700&prefix=s-0"] {
        let mut names = Vec::new();
        let mut path = format!("/streams?{query}");
        loop {
            let (st, v) = s.get(&path).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            let page = v["streams"].as_array().unwrap();
            assert!(page.len() <= 700);
            names.extend(page.iter().map(|e| e["stream"].as_str().unwrap().to_string()));
            match v["next"].as_str() {
                Some(next) => {
                    assert_eq!(v["truncated"], true, "{query}");
                    path = format!("/streams?{query}&after={next}");
                }
                None => {
                    assert_eq!(v.get("truncated"), None, "{query}");
                    break;
                }
            }
        }
        assert_eq!(names, expected, "{query}");
    }
    let (_, v) = s.get("/streams?prefix=s-001&limit=50").await;
    let names: Vec<&str> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, expected[100..150].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v["next"], "s-00149");
    let (_, v) = s.get("/streams?prefix=s-0024&after=s-00245").await;
    let names: Vec<&str> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s-00246", "s-00247", "s-00248", "s-00249"]);
    assert_eq!(v.get("next"), None);
    for bad in ["limit=0", "limit=10001", "limit=x"] {
        let (st, _) = s.get(&format!("/streams?{bad}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
    }
}
