//! The web console's files at /ui (content types, the redirect from /, the
//! page for any console path, no token needed), and the routes it browses
//! with: /browse/streams, /browse/categories, /whoami, /node, /admin/verify.

use annal_server::Role;
use reqwest::{Method, StatusCode, redirect};
use serde_json::{Value, json};

use crate::common::{TestServer, token};

async fn with_tokens() -> TestServer {
    TestServer::start_with(|c| {
        c.no_auth = false;
        c.tokens = vec![
            token("reader", Role::Read, &[]),
            token("orders", Role::Read, &["order-"]),
            token("admin", Role::Admin, &[]),
        ];
    })
    .await
}

#[tokio::test]
async fn root_and_ui_redirect_to_the_console_page() {
    let s = with_tokens().await;
    let client = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/ui"] {
        let resp = client.get(s.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(resp.headers()["location"], "/ui/", "{path}");
    }
}

#[tokio::test]
async fn console_files_are_served_without_a_token_with_their_types() {
    let s = with_tokens().await;
    let get = |path: &'static str| {
        let url = s.url(path);
        let client = s.client.clone();
        async move { client.get(url).send().await.unwrap() }
    };
    let page = get("/ui/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="assets/app.js">"#));
    for (path, ty) in [
        ("/ui/assets/app.js", "text/javascript; charset=utf-8"),
        ("/ui/assets/pages.js", "text/javascript; charset=utf-8"),
        ("/ui/assets/style.css", "text/css; charset=utf-8"),
        ("/ui/assets/favicon.svg", "image/svg+xml"),
    ] {
        let resp = get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["content-type"], ty, "{path}");
        assert!(!resp.bytes().await.unwrap().is_empty(), "{path}");
    }
    // A link into the console opened directly gets the page; an unknown file does not.
    let deep = get("/ui/streams/order-1").await;
    assert_eq!(deep.status(), StatusCode::OK);
    assert_eq!(deep.text().await.unwrap(), html);
    assert_eq!(get("/ui/assets/nope.js").await.status(), StatusCode::NOT_FOUND);
    // The API still wants its token.
    assert_eq!(get("/streams").await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn whoami_says_the_role_and_prefixes() {
    let s = with_tokens().await;
    let (st, v) = s.call_as(Method::GET, "/whoami", None, Some("secret-orders")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v,
        json!({ "auth": true, "role": "read", "stream_prefixes": ["order-"] })
    );
    let (_, v) = s.call_as(Method::GET, "/whoami", None, Some("secret-admin")).await;
    assert_eq!(v["role"], "admin");
    let (st, _) = s.call(Method::GET, "/whoami", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let open = TestServer::start().await;
    assert_eq!(
        open.get("/whoami").await,
        (
            StatusCode::OK,
            json!({ "auth": false, "role": "admin", "stream_prefixes": [] })
        )
    );
}

fn names(v: &Value) -> Vec<String> {
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn browse_streams_pages_searches_and_hides_what_a_token_may_not_read() {
    let s = with_tokens().await;
    let admin = Some("secret-admin");
    for i in 0..12 {
        let stream = if i < 9 {
            format!("order-{i}")
        } else {
            format!("User-{i}")
        };
        let (st, _) = s
            .call_as(
                Method::POST,
                &format!("/streams/{stream}"),
                Some(json!({ "events": [{ "type": "T" }, { "type": "U" }] })),
                admin,
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    s.call_as(
        Method::PUT,
        "/streams/order-1/metadata",
        Some(json!({ "max_count": 5 })),
        admin,
    )
    .await;
    s.call_as(Method::DELETE, "/streams/order-2", None, admin).await;

    // Pages of 5 by name; `next` continues, null on the last.
    let (st, p1) = s.call_as(Method::GET, "/browse/streams?limit=5", None, admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(p1["matched"], 12);
    assert_eq!(names(&p1), ["User-10", "User-11", "User-9", "order-0", "order-1"]);
    assert_eq!(p1["next"], "order-1");
    let order1 = &p1["streams"][4];
    assert_eq!(order1["category"], "order");
    assert_eq!(order1["last_revision"], 1);
    assert_eq!(order1["event_count"], 2);
    assert_eq!(order1["metadata"], json!({ "max_count": 5 }));
    assert!(order1["last_write"].as_str().unwrap().ends_with('Z'));
    let (_, p2) = s
        .call_as(Method::GET, "/browse/streams?limit=5&after=order-1", None, admin)
        .await;
    assert_eq!(names(&p2), ["order-2", "order-3", "order-4", "order-5", "order-6"]);
    assert_eq!(p2["streams"][0]["deleted"], "soft");
    assert_eq!(p2["streams"][0]["event_count"], 0);
    let (_, p3) = s
        .call_as(Method::GET, "/browse/streams?limit=5&after=order-6", None, admin)
        .await;
    assert_eq!(names(&p3), ["order-7", "order-8"]);
    assert_eq!(p3["next"], Value::Null);

    // Search is a case-insensitive substring; category is the name up to the first dash.
    let (_, v) = s.call_as(Method::GET, "/browse/streams?search=user", None, admin).await;
    assert_eq!(names(&v), ["User-10", "User-11", "User-9"]);
    let (_, v) = s
        .call_as(Method::GET, "/browse/streams?category=order&limit=2", None, admin)
        .await;
    assert_eq!(
        (v["matched"].clone(), names(&v)),
        (json!(9), vec!["order-0".to_string(), "order-1".into()])
    );
    let (_, v) = s.call_as(Method::GET, "/browse/categories", None, admin).await;
    assert_eq!(
        v,
        json!({ "categories": [{ "category": "order", "streams": 9 }, { "category": "User", "streams": 3 }], "total": 2 })
    );

    // A token limited to order- sees only those; system streams only when asked.
    let (_, v) = s
        .call_as(Method::GET, "/browse/streams?limit=1000", None, Some("secret-orders"))
        .await;
    assert_eq!(v["matched"], 9);
    let (_, v) = s
        .call_as(Method::GET, "/browse/categories", None, Some("secret-orders"))
        .await;
    assert_eq!(v["total"], 1);
    let (_, v) = s
        .call_as(Method::GET, "/browse/streams?include_system=true&search=$", None, admin)
        .await;
    assert!(names(&v).iter().all(|n| n.starts_with('$')));

    // Limits and unknown parameters are refused.
    for bad in ["limit=0", "limit=1001", "page=2"] {
        let (st, _) = s
            .call_as(Method::GET, &format!("/browse/streams?{bad}"), None, admin)
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn node_shows_disk_use_and_verify_is_admin_only() {
    let s = with_tokens().await;
    let admin = Some("secret-admin");
    s.call_as(
        Method::POST,
        "/streams/n-1",
        Some(json!({ "events": [{ "type": "T", "data": { "x": 1 } }] })),
        admin,
    )
    .await;
    let (st, n) = s.call_as(Method::GET, "/node", None, Some("secret-reader")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(n["events"], s.store.stats().events);
    assert_eq!(n["streams"], s.store.stats().streams);
    assert!(n["disk"]["segment_file_bytes"].as_u64().unwrap() > 0, "{n}");
    assert!(n["disk"]["files"].as_u64().unwrap() > 0, "{n}");
    assert_eq!(
        n["disk"]["uncompressed_segment_bytes"], n["disk"]["segment_bytes"],
        "nothing compressed: {n}"
    );
    assert_eq!(n["last_background_error"], Value::Null);
    assert_eq!(n["retention"]["max_bytes"], Value::Null);
    assert_eq!(n["last_verify"], Value::Null, "no verify ran yet");

    let (st, v) = s
        .call_as(Method::POST, "/admin/verify", None, Some("secret-reader"))
        .await;
    assert_eq!((st, v["error"].clone()), (StatusCode::FORBIDDEN, json!("forbidden")));
    let (st, v) = s.call_as(Method::POST, "/admin/verify", None, admin).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["clean"], true);
    assert_eq!(v["problems"], json!([]));
    assert!(v["events"].as_u64().unwrap() >= 1);
    // The answer stays for /node (and the console's Node page).
    let (_, n) = s.call_as(Method::GET, "/node", None, Some("secret-reader")).await;
    assert_eq!(n["last_verify"], v);
    assert!(v["finished_ms"].as_u64().unwrap() > 1_700_000_000_000, "{v}");
}

/// Creates `n` streams named `<prefix><i>` (one event each) in one batch.
async fn many_streams(s: &TestServer, prefix: &str, n: usize) {
    let (store, prefix) = (s.store.clone(), prefix.to_string());
    tokio::task::spawn_blocking(move || {
        let appends = (0..n)
            .map(|i| {
                annal::Append::new(
                    format!("{prefix}{i:05}"),
                    annal::ExpectedVersion::Any,
                    vec![annal::EventData::json("T", "{}")],
                )
            })
            .collect();
        for r in store.append_batch(appends).unwrap() {
            r.unwrap();
        }
    })
    .await
    .unwrap();
}

/// A page of `GET /streams` passes over a bounded number of names: when
/// thousands under the query's prefix match none of its other conditions,
/// the page ends early, empty, with a `next` to go on from, and following
/// `next` ends. A token limited to `order-` never passes over (nor is told
/// of) the names outside its prefixes: its first page holds its streams
/// and ends the listing.
#[tokio::test]
async fn a_streams_page_passes_over_a_bounded_number_of_names() {
    let s = with_tokens().await;
    many_streams(&s, "a-", 10_000).await;
    many_streams(&s, "order-", 3).await;
    let admin = Some("secret-admin");
    // No `a-…` name is in category `b`: every name under `a` is passed over for nothing.
    let mut path = "/streams?prefix=a&category=b&limit=10".to_string();
    let mut pages = 0;
    loop {
        let (st, v) = s.call_as(Method::GET, &path, None, admin).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["streams"], json!([]), "{v}");
        pages += 1;
        match v["next"].as_str() {
            Some(next) => {
                assert!(next.starts_with("a-"), "{v}");
                assert_eq!(v["truncated"], true, "{v}");
                path = format!("/streams?prefix=a&category=b&limit=10&after={next}");
            }
            None => break,
        }
        assert!(pages < 10, "{pages} pages");
    }
    assert!(pages >= 2, "one page passed over all 10000 names");
    // The tenant's listing of everything: its three streams, and the end.
    let (st, v) = s
        .call_as(Method::GET, "/streams?limit=10", None, Some("secret-orders"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let names: Vec<&str> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["order-00000", "order-00001", "order-00002"], "{v}");
    assert_eq!(v.get("next"), None, "{v}");
    // Its browse counts only what it may read.
    let (_, v) = s
        .call_as(Method::GET, "/browse/streams", None, Some("secret-orders"))
        .await;
    assert_eq!(v["matched"], 3, "{v}");
    let (_, v) = s
        .call_as(Method::GET, "/browse/categories", None, Some("secret-orders"))
        .await;
    assert_eq!(v["categories"], json!([{ "category": "order", "streams": 3 }]), "{v}");
}
