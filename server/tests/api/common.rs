//! A real server on an ephemeral loopback port over a temporary store.

use std::sync::Arc;
use std::time::Duration;

use annal::{Durability, Options, Store};
use annal_server::{Role, ServerConfig, ServerError, TokenConfig, hash_token};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub base: String,
    pub client: Client,
    pub store: Arc<Store>,
    pub dir: TempDir,
    /// The server's state (to show forwarders in `/forward` and `/health`).
    pub state: annal_server::AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    /// An open-mode server with the default limits.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server whose config `f` adjusts (it starts as open mode on 127.0.0.1:0).
    pub async fn start_with(f: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut config = ServerConfig::open("127.0.0.1:0".parse().unwrap());
        config.keepalive_ms = 500;
        config.shutdown_grace_ms = 2000;
        f(&mut config);
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        Self::start_config(config, scheme, Client::new()).await
    }

    pub async fn start_config(config: ServerConfig, scheme: &str, client: Client) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(
                dir.path().join("data"),
                // `metadata.actor=` is then an index lookup (the queries
                // test mixes it with `metadata.other=`, which scans).
                Options::default()
                    .durability(Durability::Never)
                    .indexed_metadata(["actor"]),
            )
            .unwrap(),
        );
        Self::start_store(store, dir, config, scheme, client).await
    }

    /// A server over a store opened by the caller (`dir` is kept for the test's files).
    pub async fn start_store(
        store: Arc<Store>,
        dir: TempDir,
        config: ServerConfig,
        scheme: &str,
        client: Client,
    ) -> TestServer {
        let bound = annal_server::bind(store.clone(), config).await.unwrap();
        let port = bound.local_addr().port();
        let state = bound.state().clone();
        let host = if scheme == "https" { "localhost" } else { "127.0.0.1" };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            base: format!("{scheme}://{host}:{port}"),
            client,
            store,
            dir,
            state,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with an optional JSON body and returns the status and the JSON answer
    /// (`Value::Null` for an empty body).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(method, path, body, None).await
    }

    pub async fn call_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Sends raw bytes as a JSON body.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Appends `n` JSON events of type `T` to `stream`.
    pub async fn append_n(&self, stream: &str, n: usize) -> Value {
        let events: Vec<Value> = (0..n)
            .map(|i| serde_json::json!({ "type": "T", "data": { "i": i } }))
            .collect();
        let (s, v) = self
            .post(&format!("/streams/{stream}"), serde_json::json!({ "events": events }))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("server stops within 10 s")
            .unwrap()
    }
}

/// A token named `name` whose secret is `secret-{name}`, with a role and
/// the stream prefixes it is limited to (none: every stream).
pub fn token(name: &str, role: Role, prefixes: &[&str]) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        sha256: hash_token(&format!("secret-{name}")),
        role,
        stream_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    }
}
