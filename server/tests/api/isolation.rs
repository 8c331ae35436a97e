//! Regression tests of a server audit: what a token limited to some streams
//! (or no token at all) may learn about the rest of the store.

use annal::{EventData, ExpectedVersion};
use annal_server::Role;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestServer, token};
use crate::subscribe::SseReader;

/// A server with a reader limited to `order-` (`secret-reader`), a writer
/// limited to `order-` (`secret-tenant`) and an unrestricted writer (`secret-writer`).
async fn limited_server() -> TestServer {
    TestServer::start_with(|c| {
        c.no_auth = false;
        c.tokens = vec![
            token("reader", Role::Read, &["order-"]),
            token("tenant", Role::Write, &["order-"]),
            token("writer", Role::Write, &[]),
        ];
    })
    .await
}

/// `/subscribe/all` tells a limited token no position past the events it was
/// shown: no checkpoint carries the head of the log while other streams grow.
#[tokio::test]
async fn sse_checkpoints_do_not_show_a_limited_token_the_head() {
    let s = limited_server().await;
    s.store
        .append("order-1", ExpectedVersion::Any, vec![EventData::json("T", "{}")])
        .unwrap();
    for _ in 0..30 {
        let evs: Vec<EventData> = (0..100).map(|_| EventData::json("T", "{}")).collect();
        s.store.append("user-1", ExpectedVersion::Any, evs).unwrap();
    }
    let resp = s
        .client
        .get(s.url("/subscribe/all?stream_prefix=order-"))
        .bearer_auth("secret-reader")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut r = SseReader::new(resp);
    let first = r.next().await.expect("the first order- event comes");
    assert_eq!(
        (first.event.as_str(), first.data["position"].as_u64()),
        ("event", Some(0))
    );
    // Appended once the subscription has caught up.
    let last = s
        .store
        .append("order-1", ExpectedVersion::Any, vec![EventData::json("T", "{}")])
        .unwrap();
    let last_position = last.position;
    let mut seen = Vec::new();
    let mut shown = vec![0];
    while shown.len() < 2 {
        let m = r.next().await.expect("the two order- events come");
        if m.event == "event" {
            assert!(m.data["stream"].as_str().unwrap().starts_with("order-"));
            shown.push(m.data["position"].as_u64().unwrap());
        } else {
            seen.push(format!("{} id={:?} data={}", m.event, m.id, m.data));
        }
    }
    assert_eq!(shown, vec![0, last_position]);
    assert!(seen.is_empty(), "messages other than its events: {seen:?}");
}

/// A group over a stream the caller may not read is answered as a missing
/// group, naming nothing of its source.
#[tokio::test]
async fn a_hidden_group_is_answered_as_a_missing_one() {
    let s = limited_server().await;
    let (st, _) = s
        .call_as(
            Method::PUT,
            "/groups/g",
            Some(json!({ "stream": "secret-payroll-7" })),
            Some("secret-writer"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let missing = s
        .call_as(Method::GET, "/groups/nope", None, Some("secret-reader"))
        .await;
    assert_eq!(missing.0, StatusCode::NOT_FOUND);
    assert_eq!(missing.1["error"], "group_not_found");
    for (method, path) in [
        (Method::GET, "/groups/{}"),
        (Method::POST, "/groups/{}/fetch?consumer=c"),
        (Method::DELETE, "/groups/{}"),
    ] {
        let (st, v) = s
            .call_as(method.clone(), &path.replace("{}", "g"), None, Some("secret-reader"))
            .await;
        let (st2, v2) = s
            .call_as(method, &path.replace("{}", "nope"), None, Some("secret-reader"))
            .await;
        assert_eq!(st, st2, "{path}: {v} / {v2}");
        assert_eq!(v["error"], v2["error"], "{path}: {v} / {v2}");
        assert!(
            !v.to_string().contains("payroll"),
            "{path}: the answer names the group's stream: {v}"
        );
    }
    // The group's reader still sees it.
    let (st, v) = s.call_as(Method::GET, "/groups/g", None, Some("secret-writer")).await;
    assert_eq!((st, v["stream"].clone()), (StatusCode::OK, json!("secret-payroll-7")));
}

/// Group names are shared by the whole store: a writer limited to some
/// stream prefixes may create only groups named under them, so that a name
/// another tenant's group has is refused exactly as a free one (it got 409
/// `group_exists` for a taken name, 201 for a free one). Store-wide tokens
/// name groups as before.
#[tokio::test]
async fn a_limited_writer_cannot_tell_a_hidden_group_name_from_a_free_one() {
    let s = limited_server().await;
    let on_orders = json!({ "stream": "order-1" });
    let (st, v) = s
        .call_as(
            Method::PUT,
            "/groups/payroll",
            Some(json!({ "stream": "secret-payroll-7" })),
            Some("secret-writer"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let taken = s
        .call_as(
            Method::PUT,
            "/groups/payroll",
            Some(on_orders.clone()),
            Some("secret-tenant"),
        )
        .await;
    let free = s
        .call_as(
            Method::PUT,
            "/groups/payrolm",
            Some(on_orders.clone()),
            Some("secret-tenant"),
        )
        .await;
    assert_eq!(taken.0, StatusCode::FORBIDDEN, "{}", taken.1);
    assert_eq!(
        (taken.0, &taken.1["error"]),
        (free.0, &free.1["error"]),
        "{} / {}",
        taken.1,
        free.1
    );
    assert_eq!(taken.1["error"], json!("group_name_outside_prefixes"));
    assert_eq!(
        taken.1["message"].as_str().unwrap().replace("payroll", "payrolm"),
        free.1["message"].as_str().unwrap(),
        "the messages differ by more than the name"
    );
    // Named under its prefix, its group is made.
    let (st, v) = s
        .call_as(
            Method::PUT,
            "/groups/order-billing",
            Some(on_orders.clone()),
            Some("secret-tenant"),
        )
        .await;
    assert_eq!(
        (st, v["name"].clone()),
        (StatusCode::CREATED, json!("order-billing")),
        "{v}"
    );
    let (st, v) = s
        .call_as(
            Method::POST,
            "/groups/order-billing/fetch?consumer=c",
            None,
            Some("secret-tenant"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // A store-wide token names groups freely, and still meets taken names.
    let (st, v) = s
        .call_as(
            Method::PUT,
            "/groups/payrolm",
            Some(on_orders.clone()),
            Some("secret-writer"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = s
        .call_as(Method::PUT, "/groups/payroll", Some(on_orders), Some("secret-writer"))
        .await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::CONFLICT, json!("group_exists")),
        "{v}"
    );
}

/// `/health` and `/health/ready` are public, but their figures (head of the
/// log, forwarders, retention) are only for a store-wide token: without one,
/// only the status and the kinds of problems.
#[tokio::test]
async fn health_shows_store_figures_only_to_a_store_wide_token() {
    let s = limited_server().await;
    for i in 0..5 {
        let (st, _) = s
            .call_as(
                Method::POST,
                &format!("/streams/payroll-{i}"),
                Some(json!({"events":[{"type":"T"}]})),
                Some("secret-writer"),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    for token in [None, Some("secret-reader"), Some("not-a-token")] {
        let (st, v) = s.call_as(Method::GET, "/health", None, token).await;
        assert_eq!(st, StatusCode::OK, "{token:?}: {v}");
        assert_eq!(v, json!({ "status": "ok", "problem_kinds": [] }), "{token:?}");
        let (st, v) = s.call_as(Method::GET, "/health/ready", None, token).await;
        assert_eq!((st, v), (StatusCode::OK, json!({ "status": "ready" })), "{token:?}");
    }
    let (st, v) = s.call_as(Method::GET, "/health", None, Some("secret-writer")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["head_position"], 5, "{v}");
    assert!(v["forwarders"].is_array() && v["retention"].is_object(), "{v}");
    let (_, v) = s
        .call_as(Method::GET, "/health/ready", None, Some("secret-writer"))
        .await;
    assert_eq!(v["head_position"], 5, "{v}");
}

/// A store error behind `/health/ready`'s 503 is told only to a store-wide token.
#[tokio::test]
async fn not_ready_tells_the_store_error_only_to_a_store_wide_token() {
    use annal::storage::sim::SimStorage;
    let sim = SimStorage::new();
    let store = std::sync::Arc::new(
        annal::Store::open_with(std::sync::Arc::new(sim.clone()), "/data", annal::Options::default()).unwrap(),
    );
    let mut config = annal_server::ServerConfig::open("127.0.0.1:0".parse().unwrap());
    config.no_auth = false;
    config.tokens = vec![
        token("reader", Role::Read, &["order-"]),
        token("writer", Role::Write, &[]),
    ];
    let s = TestServer::start_store(
        store,
        tempfile::tempdir().unwrap(),
        config,
        "http",
        reqwest::Client::new(),
    )
    .await;
    sim.set_read_only(true);
    let (st, _) = s
        .call_as(
            Method::POST,
            "/streams/order-1",
            Some(json!({"events":[{"type":"T"}]})),
            Some("secret-writer"),
        )
        .await;
    assert!(st.is_server_error(), "{st}");
    let failure = s.store.write_failure().expect("the writer stopped");
    for token in [None, Some("secret-reader")] {
        let (st, v) = s.call_as(Method::GET, "/health/ready", None, token).await;
        assert_eq!(
            (st, v["error"].clone()),
            (StatusCode::SERVICE_UNAVAILABLE, json!("not_ready")),
            "{v}"
        );
        assert!(!v.to_string().contains(&failure), "{token:?}: {v}");
        let (st, v) = s.call_as(Method::GET, "/health", None, token).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(!v.to_string().contains(&failure), "{token:?}: {v}");
    }
    let (st, v) = s
        .call_as(Method::GET, "/health/ready", None, Some("secret-writer"))
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["message"].as_str().unwrap().contains(&failure), "{v}");
}

/// Review of the group-name rule: a store-wide token could still name a
/// group under a tenant's prefix over streams the tenant may not read; the
/// tenant then got 409 `group_exists` for that name and 201 for a free one
/// (and 404 from GET): a hidden group showed. A group named under a
/// token's prefixes now reads only what that token may read, whoever
/// creates it, so a tenant is never told of one it cannot see.
#[tokio::test]
async fn a_group_named_under_a_tenants_prefix_reads_only_what_the_tenant_may() {
    let s = limited_server().await;
    let (st, v) = s
        .call_as(
            Method::PUT,
            "/groups/order-payroll",
            Some(json!({ "stream": "secret-payroll-7" })),
            Some("secret-writer"),
        )
        .await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::FORBIDDEN, json!("group_name_outside_prefixes")),
        "{v}"
    );
    // So the tenant finds the name free, as it is.
    let (st, v) = s
        .call_as(
            Method::PUT,
            "/groups/order-payroll",
            Some(json!({ "stream": "order-1" })),
            Some("secret-tenant"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // Under the prefix over the tenant's own streams, anyone may name one.
    let (st, v) = s
        .call_as(
            Method::PUT,
            "/groups/order-audit",
            Some(json!({ "stream": "order-2" })),
            Some("secret-writer"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

/// An admin token limited to some streams may not run store-wide
/// administration: shredding a subject (whose events may lie in any
/// tenant's streams, and whose answer says whether it existed anywhere),
/// scavenging, backups. An unrestricted admin may.
#[tokio::test]
async fn an_admin_limited_to_some_streams_may_not_administer_the_store() {
    let s = TestServer::start_with(|c| {
        c.no_auth = false;
        c.tokens = vec![
            token("tenant-admin", Role::Admin, &["order-"]),
            token("admin", Role::Admin, &[]),
        ];
    })
    .await;
    s.store
        .append(
            "user-1",
            ExpectedVersion::Any,
            vec![EventData::json("T", r#"{"name":"PII"}"#).with_subject("ann")],
        )
        .unwrap();
    for (method, path) in [
        (Method::DELETE, "/subjects/ann"),
        (Method::DELETE, "/subjects/nobody"),
        (Method::POST, "/admin/scavenge"),
        (Method::POST, "/admin/verify"),
    ] {
        let (st, v) = s.call_as(method.clone(), path, None, Some("secret-tenant-admin")).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {v}");
    }
    let read = s
        .store
        .read_stream("user-1", annal::Direction::Forward, annal::StreamFrom::Start, 10)
        .unwrap();
    assert!(!read[0].is_erased(), "a refused shred erased the subject");
    let (st, v) = s
        .call_as(Method::DELETE, "/subjects/ann", None, Some("secret-admin"))
        .await;
    assert_eq!((st, v["shredded"].clone()), (StatusCode::OK, json!(true)));
}

/// Audit (isolation): a group over the global log moves its cursor to the
/// head of the whole log once it has read everything, and `GET
/// /groups/{name}` showed that checkpoint to a token limited to some
/// streams: it learnt how many events other tenants wrote, and when. Such
/// a token is now shown one past the last event of the group's streams; a
/// store-wide token still sees the checkpoint as it is.
#[tokio::test]
async fn a_limited_tokens_group_checkpoint_does_not_show_the_head() {
    let s = limited_server().await;
    s.store
        .append("order-1", ExpectedVersion::Any, vec![EventData::json("T", "{}")])
        .unwrap();
    let evs: Vec<EventData> = (0..500).map(|_| EventData::json("T", "{}")).collect();
    s.store.append("user-1", ExpectedVersion::Any, evs).unwrap();
    let head = s.store.head_position();
    let t = Some("secret-tenant");
    let (st, v) = s
        .call_as(
            Method::PUT,
            "/groups/order-g",
            Some(json!({ "stream_prefix": "order-", "checkpoint_every": 1 })),
            t,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, v) = s
        .call_as(Method::POST, "/groups/order-g/fetch?consumer=c", None, t)
        .await;
    let id = v["events"][0]["id"].clone();
    let mine = v["events"][0]["position"].as_u64().unwrap();
    let (st, _) = s
        .call_as(
            Method::POST,
            "/groups/order-g/ack",
            Some(json!({ "consumer": "c", "ids": [id] })),
            t,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // The store-wide writer sees the cursor as it is: at the head as the
    // fetch found it, past the other tenant's 500 events.
    let (_, v) = s
        .call_as(Method::GET, "/groups/order-g", None, Some("secret-writer"))
        .await;
    assert!(v["checkpoint"].as_u64().unwrap() > head, "{v}");
    // The tenant: one past its own last event, for both figures.
    let (_, v) = s.call_as(Method::GET, "/groups/order-g", None, t).await;
    assert_eq!(v["checkpoint"], json!(mine + 1), "{v} (the tenant's event at {mine})");
    assert!(v["saved_checkpoint"].as_u64().unwrap() <= mine + 1, "{v}");
}

/// Audit (starvation): `max_subscribers` and `max_long_polls` were shared
/// by every token, so one read token limited to a few streams could open
/// them all and every other tenant got 503. With more than one token
/// configured, one token holds at most `token_share_percent` (half) of each.
#[tokio::test]
async fn one_token_cannot_take_every_subscription_or_long_poll_place() {
    let s = TestServer::start_with(|c| {
        c.no_auth = false;
        c.tokens = vec![
            token("reader", Role::Read, &["order-"]),
            token("tenant", Role::Write, &["order-"]),
        ];
        c.max_subscribers = 4;
        c.max_long_polls = 2;
    })
    .await;
    let sse = |t: &str| {
        s.client
            .get(s.url("/subscribe/streams/order-1"))
            .bearer_auth(format!("secret-{t}"))
            .send()
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let r = sse("reader").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        held.push(r);
    }
    let r = sse("reader").await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], json!("too_many_subscribers"), "{v}");
    let r = sse("tenant").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    held.push(r);

    let (st, v) = s
        .call_as(
            Method::PUT,
            "/groups/order-g",
            Some(json!({ "stream": "order-1" })),
            Some("secret-tenant"),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let poll = |t: &str, consumer: &str| {
        s.client
            .post(s.url(&format!("/groups/order-g/fetch?consumer={consumer}&timeout_ms=1500")))
            .bearer_auth(format!("secret-{t}"))
            .send()
    };
    let waiting = tokio::spawn(poll("reader", "a"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = poll("reader", "b").await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], json!("too_many_long_polls"), "{v}");
    let r = poll("tenant", "c").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(waiting.await.unwrap().unwrap().status(), StatusCode::OK);
}

/// Audit (starvation): groups were not capped per token, and each holds
/// events in memory: a limited writer could make group after group. A token
/// limited to some streams has at most `max_groups_per_token` groups over
/// them; a store-wide token is not counted.
#[tokio::test]
async fn a_limited_token_makes_at_most_max_groups_per_token_groups() {
    let s = TestServer::start_with(|c| {
        c.no_auth = false;
        c.tokens = vec![
            token("tenant", Role::Write, &["order-"]),
            token("writer", Role::Write, &[]),
        ];
        c.max_groups_per_token = 2;
    })
    .await;
    let make = |name: &str, t: &'static str| {
        let path = format!("/groups/{name}");
        let s = &s;
        async move {
            s.call_as(Method::PUT, &path, Some(json!({ "stream": "order-1" })), Some(t))
                .await
        }
    };
    for name in ["order-a", "order-b"] {
        assert_eq!(make(name, "secret-tenant").await.0, StatusCode::CREATED);
    }
    let (st, v) = make("order-c", "secret-tenant").await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::FORBIDDEN, json!("too_many_groups")),
        "{v}"
    );
    // The store-wide writer is not held back (and its group over order-1 counts for the tenant).
    assert_eq!(make("any-d", "secret-writer").await.0, StatusCode::CREATED);
    let (st, _) = s
        .call_as(Method::DELETE, "/groups/any-d", None, Some("secret-writer"))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s
        .call_as(Method::DELETE, "/groups/order-a", None, Some("secret-tenant"))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(make("order-c", "secret-tenant").await.0, StatusCode::CREATED);
}
