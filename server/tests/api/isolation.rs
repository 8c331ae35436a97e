//! Regression tests of a server audit: what a token limited to some streams
//! (or no token at all) may learn about the rest of the store.

use annal::{EventData, ExpectedVersion};
use annal_server::Role;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestServer, token};
use crate::subscribe::SseReader;

/// A server with a reader limited to `order-` (`secret-reader`) and an unrestricted writer (`secret-writer`).
async fn limited_server() -> TestServer {
    TestServer::start_with(|c| {
        c.no_auth = false;
        c.tokens = vec![
            token("reader", Role::Read, &["order-"]),
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
