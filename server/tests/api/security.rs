//! Tokens, roles, stream-prefix permissions, open mode, and TLS.

use annal_server::{Role, ServerConfig, TlsConfig, TokenConfig};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestServer, token};

#[tokio::test]
async fn tokens_roles_and_prefixes() {
    let s = TestServer::start_with(|c| {
        c.no_auth = false;
        c.tokens = vec![
            token("reader", Role::Read, &["order-"]),
            token("writer", Role::Write, &[]),
            token("admin", Role::Admin, &[]),
        ];
    })
    .await;
    let (r, w, a) = (Some("secret-reader"), Some("secret-writer"), Some("secret-admin"));
    let append = json!({ "events": [{ "type": "T" }] });

    // No token, a wrong token, a malformed header: 401.
    let (st, v) = s.call(Method::GET, "/streams/order-1", None).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    let (st, _) = s
        .call_as(Method::GET, "/streams/order-1", None, Some("secret-nobody"))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let resp = s
        .client
        .get(s.url("/streams"))
        .header("authorization", "Basic c2VjcmV0LXdyaXRlcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let (st, _) = s.call(Method::GET, "/subscribe/all", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.call(Method::GET, "/metrics", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Health and the document are open.
    for path in ["/health/live", "/health/ready", "/openapi.json"] {
        let (st, _) = s.call(Method::GET, path, None).await;
        assert_eq!(st, StatusCode::OK, "{path}");
    }

    // Writer writes anywhere; reader cannot write.
    for stream in ["order-1", "user-1"] {
        let (st, _) = s
            .call_as(Method::POST, &format!("/streams/{stream}"), Some(append.clone()), w)
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    let (st, v) = s
        .call_as(Method::POST, "/streams/order-1", Some(append.clone()), r)
        .await;
    assert_eq!((st, v["error"].clone()), (StatusCode::FORBIDDEN, json!("forbidden")));

    // Reader reads within its prefix only.
    let (st, _) = s.call_as(Method::GET, "/streams/order-1", None, r).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.call_as(Method::GET, "/streams/user-1", None, r).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.call_as(Method::GET, "/all", None, r).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = s.call_as(Method::GET, "/all?stream_prefix=order-", None, r).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    let (st, _) = s.call_as(Method::GET, "/subscribe/streams/user-1", None, r).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, v) = s.call_as(Method::GET, "/streams", None, r).await;
    assert_eq!(v["streams"].as_array().unwrap().len(), 1);
    let (_, all) = s.call_as(Method::GET, "/all", None, w).await;
    let user_event = all["events"][1]["id"].as_str().unwrap().to_string();
    // Another stream's event is answered as an unknown id (see trust.rs).
    let (st, v) = s.call_as(Method::GET, &format!("/events/{user_event}"), None, r).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::NOT_FOUND, json!("event_not_found"))
    );
    // Figures of the whole store (event and stream counts, disk use,
    // forwarders) are not for a token limited to some streams; an
    // unrestricted token reads them.
    for path in ["/metrics", "/node", "/forward"] {
        let (st, v) = s.call_as(Method::GET, path, None, r).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {v}");
        let (st, _) = s.call_as(Method::GET, path, None, w).await;
        assert_eq!(st, StatusCode::OK, "{path}");
    }

    // Groups: creating needs write; one outside the prefix is missing to the token.
    let (st, _) = s
        .call_as(Method::PUT, "/groups/g", Some(json!({ "stream": "user-1" })), r)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .call_as(Method::PUT, "/groups/g", Some(json!({ "stream": "user-1" })), w)
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, v) = s.call_as(Method::POST, "/groups/g/fetch?consumer=c", None, r).await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::NOT_FOUND, json!("group_not_found"))
    );
    let (st, _) = s.call_as(Method::POST, "/groups/g/fetch?consumer=c", None, w).await;
    assert_eq!(st, StatusCode::OK);

    // Admin routes need admin.
    let (st, _) = s.call_as(Method::POST, "/admin/scavenge", None, w).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.call_as(Method::POST, "/admin/scavenge", None, a).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.call_as(Method::POST, "/streams/order-9", Some(append), a).await;
    assert_eq!(st, StatusCode::OK);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn public_metrics_and_unsafe_configs() {
    let s = TestServer::start_with(|c| {
        c.no_auth = false;
        c.metrics_public = true;
        c.tokens = vec![token("w", Role::Write, &[])];
    })
    .await;
    let (st, _) = s.call(Method::GET, "/metrics", None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.call(Method::GET, "/streams", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    s.stop().await.unwrap();

    // Open mode on a non-loopback address is refused before binding.
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(annal::Store::open(dir.path(), annal::Options::default()).unwrap());
    let config = ServerConfig::open("0.0.0.0:0".parse().unwrap());
    let err = annal_server::bind(store.clone(), config.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("allow_remote_no_auth"), "{err}");
    let mut allowed = config;
    allowed.allow_remote_no_auth = true;
    assert!(allowed.validate().is_ok());
    // Neither tokens nor open mode: refused.
    let none = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    assert!(annal_server::bind(store.clone(), none).await.is_err());
    let mut bad_hash = ServerConfig::open("127.0.0.1:0".parse().unwrap());
    bad_hash.no_auth = false;
    bad_hash.tokens = vec![TokenConfig {
        sha256: "abc".into(),
        ..token("x", Role::Read, &[])
    }];
    assert!(annal_server::bind(store, bad_hash).await.is_err());
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let mut config = ServerConfig::open("127.0.0.1:0".parse().unwrap());
    config.tls = Some(TlsConfig {
        cert: cert.clone(),
        key: key.clone(),
    });
    let s = TestServer::start_config(config.clone(), "https", client).await;
    assert!(s.base.starts_with("https://localhost:"));
    let (st, _) = s.get("/health/live").await;
    assert_eq!(st, StatusCode::OK);
    s.append_n("tls-1", 2).await;
    let (st, v) = s.get("/streams/tls-1").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    // Plain HTTP to the TLS port fails; so does a client that does not trust the certificate.
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health/live")).await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    assert!(untrusting.get(s.url("/health/live")).send().await.is_err());
    s.stop().await.unwrap();

    // Missing or wrong files are a startup error.
    let store = std::sync::Arc::new(annal::Store::open(dir.path().join("d"), annal::Options::default()).unwrap());
    let mut missing = config.clone();
    missing.tls = Some(TlsConfig {
        cert: dir.path().join("nope.pem"),
        key,
    });
    assert!(matches!(
        annal_server::bind(store.clone(), missing).await,
        Err(annal_server::ServerError::Tls(_))
    ));
    let mut swapped = config;
    swapped.tls = Some(TlsConfig {
        cert: dir.path().join("key.pem"),
        key: cert,
    });
    assert!(annal_server::bind(store, swapped).await.is_err());
}

/// Open mode takes every request as the admin's: a page in the operator's
/// browser must not use it. A request that changes the store and that a
/// browser marks as another site's is refused (cross-site request
/// forgery), and a request for a DNS name other than localhost is refused
/// (DNS rebinding); clients that are not browsers are not affected. API
/// answers are never cached.
#[tokio::test]
async fn open_mode_refuses_other_sites_requests_and_rebound_names() {
    let s = TestServer::start().await;
    let body = json!({ "events": [{ "type": "Forged" }] });
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("origin", "null"),
    ] {
        let resp = s
            .client
            .post(s.url("/streams/order-1"))
            .header(name, value)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "cross_site_request");
    }
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let resp = s
        .client
        .get(s.url("/all"))
        .header("host", format!("rebound.evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    // The gRPC path alike: a page can post gRPC bodies over HTTP/1.1.
    let resp = s
        .client
        .post(s.url("/event_store.client.streams.Streams/Append"))
        .header("host", format!("rebound.evil.example:{port}"))
        .header("content-type", "application/grpc")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
    // The same-origin console and clients that are not browsers go on.
    let resp = s
        .client
        .post(s.url("/streams/order-1"))
        .header("origin", s.base.clone())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let (st, v) = s.call(Method::POST, "/streams/order-1", Some(body)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        s.store.stream_info("order-1").unwrap().last_revision,
        1,
        "only the two allowed appends"
    );
    s.stop().await.unwrap();
}

/// Review of 26d3f27: with `allow_remote_no_auth` the Host check was off,
/// so a page could read and write an open-mode server through a DNS name it
/// pointed at it (rebinding), from the browser of anyone who can reach the
/// port. It applies on every listen address now; names the operator serves
/// under go in `allowed_hosts`.
#[tokio::test]
async fn open_mode_beyond_loopback_still_refuses_rebound_names() {
    let s = TestServer::start_with(|c| {
        c.listen = "0.0.0.0:0".parse().unwrap();
        c.allow_remote_no_auth = true;
        c.allowed_hosts = vec!["annal.lan".into()];
    })
    .await;
    let port = s.base.rsplit(':').next().unwrap().to_string();
    for (host, want) in [
        (format!("rebound.evil.example:{port}"), StatusCode::MISDIRECTED_REQUEST),
        (format!("annal.lan:{port}"), StatusCode::OK),
        (format!("127.0.0.1:{port}"), StatusCode::OK),
        (format!("localhost:{port}"), StatusCode::OK),
    ] {
        let resp = s
            .client
            .get(s.url("/streams"))
            .header("host", host.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{host}");
    }
    s.stop().await.unwrap();
}
