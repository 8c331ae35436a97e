//! Regression tests of issue 11 ("Trust"): what a token limited to some
//! streams may learn, refused configurations, bounded connections and
//! responses, honest health and timeout answers, and bad input.

use annal_server::{Role, ServerConfig, TokenConfig, hash_token};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;

fn token(name: &str, role: Role, prefixes: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: hash_token(&format!("secret-{name}")),
        role,
        stream_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    }
}

/// A server with an unrestricted admin (`secret-admin`) and a writer limited to `orders-` (`secret-tenant`).
async fn tenant_server() -> TestServer {
    TestServer::start_with(|c| {
        c.no_auth = false;
        c.tokens = vec![
            token("admin", Role::Admin, &[]),
            token("tenant", Role::Write, &["orders-"]),
        ];
    })
    .await
}

const ADMIN: Option<&str> = Some("secret-admin");
const TENANT: Option<&str> = Some("secret-tenant");

/// Item 3: a condition would let a limited token probe other streams for event types and tags.
#[tokio::test]
async fn conditions_are_refused_for_prefix_limited_tokens() {
    let s = tenant_server().await;
    let (st, _) = s
        .call_as(
            Method::POST,
            "/streams/users-1",
            Some(json!({ "events": [{ "type": "Secret", "tags": ["vip"] }] })),
            ADMIN,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // Whether or not a matching event exists elsewhere, the answer is the same 403.
    let mut answers = Vec::new();
    for ty in ["Secret", "NoSuchType"] {
        let body = json!({
            "stream": "orders-1",
            "events": [{ "type": "T" }],
            "condition": { "query": { "types": [ty], "tags": ["vip"] } }
        });
        let (st, v) = s.call_as(Method::POST, "/append", Some(body), TENANT).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["error"], "forbidden");
        assert!(v["message"].is_string());
        assert!(v.get("position").is_none(), "{v}");
        answers.push(v);
    }
    assert_eq!(answers[0], answers[1]);
    // Nothing was appended by the refused requests.
    let (_, v) = s.call_as(Method::GET, "/streams/orders-1", None, TENANT).await;
    assert_eq!(v["error"], "stream_not_found", "{v}");
    // Without a condition the limited token appends as before.
    let (st, _) = s
        .call_as(
            Method::POST,
            "/append",
            Some(json!({ "stream": "orders-1", "events": [{ "type": "T" }] })),
            TENANT,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // An unrestricted token still uses conditions.
    let body = json!({
        "stream": "users-2",
        "events": [{ "type": "T" }],
        "condition": { "query": { "types": ["Secret"] } }
    });
    let (st, v) = s.call_as(Method::POST, "/append", Some(body), ADMIN).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::CONFLICT, json!("condition_failed"))
    );
    s.stop().await.unwrap();
}

/// Item 4: another tenant's event id is answered exactly as an unknown id.
#[tokio::test]
async fn events_of_other_streams_answer_as_unknown_ids() {
    let s = tenant_server().await;
    let theirs = uuid::Uuid::new_v4();
    let (st, _) = s
        .call_as(
            Method::POST,
            "/streams/users-1",
            Some(json!({ "events": [{ "type": "T", "id": theirs }] })),
            ADMIN,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let unknown = uuid::Uuid::new_v4();
    let (st1, v1) = s.call_as(Method::GET, &format!("/events/{theirs}"), None, TENANT).await;
    let (st2, v2) = s
        .call_as(Method::GET, &format!("/events/{unknown}"), None, TENANT)
        .await;
    assert_eq!(st1, StatusCode::NOT_FOUND, "{v1}");
    assert_eq!(st1, st2);
    let same_shape = |v: &Value, id: &uuid::Uuid| v.to_string().replace(&id.to_string(), "ID");
    assert_eq!(same_shape(&v1, &theirs), same_shape(&v2, &unknown));
    assert!(!v1.to_string().contains("users"), "{v1}");
    // The admin still finds it.
    let (st, v) = s.call_as(Method::GET, &format!("/events/{theirs}"), None, ADMIN).await;
    assert_eq!((st, v["stream"].clone()), (StatusCode::OK, json!("users-1")));
    s.stop().await.unwrap();
}

/// Item 5: an idempotency conflict says "conflict", not where the id is stored.
#[tokio::test]
async fn idempotency_conflicts_reveal_no_position_or_stream() {
    let s = tenant_server().await;
    s.call_as(
        Method::POST,
        "/streams/users-1",
        Some(json!({ "events": [{ "type": "T" }, { "type": "T" }, { "type": "T" }] })),
        ADMIN,
    )
    .await;
    let theirs = uuid::Uuid::new_v4();
    let (st, _) = s
        .call_as(
            Method::POST,
            "/streams/users-1",
            Some(json!({ "events": [{ "type": "T", "id": theirs }] })),
            ADMIN,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = s
        .call_as(
            Method::POST,
            "/streams/orders-1",
            Some(json!({ "events": [{ "type": "T", "id": theirs }] })),
            TENANT,
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "idempotency_conflict");
    assert_eq!(v["id"], json!(theirs));
    assert!(v.get("position").is_none(), "{v}");
    assert!(v.get("stream").is_none(), "{v}");
    let message = v["message"].as_str().unwrap();
    // It is stored at position 3 of users-1: neither appears.
    assert!(
        !message.contains("users") && !message.contains("position") && !message.contains(" 3"),
        "{message}"
    );
    s.stop().await.unwrap();
}

/// Item 6: open mode next to configured tokens is refused at startup.
#[tokio::test]
async fn no_auth_next_to_tokens_is_refused() {
    let mut config = ServerConfig::open("127.0.0.1:0".parse().unwrap());
    config.tokens = vec![token("reader", Role::Read, &["orders-"])];
    let err = config.validate().unwrap_err();
    assert!(err.contains("no_auth") && err.contains("token"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(annal::Store::open(dir.path(), annal::Options::default()).unwrap());
    let err = annal_server::bind(store, config).await.err().expect("refused");
    assert!(matches!(err, annal_server::ServerError::Config(_)), "{err}");
    assert!(err.to_string().contains("no_auth"), "{err}");
}

