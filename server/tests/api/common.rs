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

/// A gate on the reads of segment files: while it is closed, every read of
/// a `.seg` file waits for it to open. Lets a test hold a scan in the middle
/// of its work (a condition, not a sleep) and count what it reads after.
#[derive(Clone, Default)]
pub struct Gate(Arc<GateInner>);

#[derive(Default)]
struct GateInner {
    /// Closed to the reads of segment bytes below this offset (`None`: open).
    closed: std::sync::Mutex<Option<u64>>,
    /// The end of the segment bytes written so far.
    written: std::sync::atomic::AtomicU64,
    opened: std::sync::Condvar,
    /// Reads of segment files completed.
    reads: std::sync::atomic::AtomicU64,
    /// Bytes of segment files read.
    bytes_read: std::sync::atomic::AtomicU64,
    /// Reads of segment files waiting for the gate now.
    waiting: std::sync::atomic::AtomicU64,
}

impl Gate {
    /// Closes the gate to every read of segment bytes.
    pub fn close(&self) {
        *self.0.closed.lock().unwrap() = Some(u64::MAX);
    }

    /// Closes the gate to the reads of the segment bytes written so far
    /// (events appended later are read freely).
    pub fn close_written(&self) {
        let written = self.0.written.load(std::sync::atomic::Ordering::SeqCst);
        *self.0.closed.lock().unwrap() = Some(written);
    }

    pub fn open(&self) {
        *self.0.closed.lock().unwrap() = None;
        self.0.opened.notify_all();
    }

    /// Reads of segment files completed so far.
    pub fn reads(&self) -> u64 {
        self.0.reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes of segment files read so far.
    #[allow(dead_code, reason = "used by the gRPC tests, which include this file")]
    pub fn bytes_read(&self) -> u64 {
        self.0.bytes_read.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Reads of segment files waiting at the closed gate.
    pub fn waiting(&self) -> u64 {
        self.0.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (polling, at most 10 s) until `n` reads wait at the gate.
    pub async fn wait_for_waiting(&self, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.waiting() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} reads wait, not {n}",
                self.waiting()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn pass(&self, offset: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        let shut = |c: &Option<u64>| c.is_some_and(|below| offset < below);
        let mut closed = self.0.closed.lock().unwrap();
        if shut(&closed) {
            self.0.waiting.fetch_add(1, SeqCst);
            while shut(&closed) {
                closed = self.0.opened.wait(closed).unwrap();
            }
            self.0.waiting.fetch_sub(1, SeqCst);
        }
    }
}

/// The file system, with a [`Gate`] on the reads of segment files.
struct GatedStorage {
    inner: annal::FsStorage,
    gate: Gate,
}

struct GatedFile {
    inner: Arc<dyn annal::storage::StorageFile>,
    gate: Option<Gate>,
}

impl annal::storage::StorageFile for GatedFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if let Some(g) = &self.gate {
            g.pass(offset);
        }
        let r = self.inner.read_exact_at(buf, offset);
        if let Some(g) = &self.gate {
            g.0.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            g.0.bytes_read
                .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, offset)?;
        if let Some(g) = &self.gate {
            g.0.written
                .fetch_max(offset + buf.len() as u64, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
}

impl GatedStorage {
    fn wrap(
        &self,
        path: &std::path::Path,
        f: Arc<dyn annal::storage::StorageFile>,
    ) -> Arc<dyn annal::storage::StorageFile> {
        let seg = path.extension().is_some_and(|e| e == "seg");
        Arc::new(GatedFile {
            inner: f,
            gate: seg.then(|| self.gate.clone()),
        })
    }
}

impl annal::Storage for GatedStorage {
    fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn exists(&self, path: &std::path::Path) -> bool {
        self.inner.exists(path)
    }
    fn open(&self, path: &std::path::Path, write: bool) -> std::io::Result<Arc<dyn annal::storage::StorageFile>> {
        Ok(self.wrap(path, self.inner.open(path, write)?))
    }
    fn create(&self, path: &std::path::Path) -> std::io::Result<Arc<dyn annal::storage::StorageFile>> {
        Ok(self.wrap(path, self.inner.create(path)?))
    }
    fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn map(&self, path: &std::path::Path) -> std::io::Result<annal::storage::Mapped> {
        self.inner.map(path)
    }
    fn lock(&self, path: &std::path::Path) -> std::io::Result<Box<dyn annal::storage::LockGuard>> {
        self.inner.lock(path)
    }
    fn available_space(&self, dir: &std::path::Path) -> std::io::Result<u64> {
        self.inner.available_space(dir)
    }
}

impl TestServer {
    /// A server (config adjusted by `f`) over a store whose segment reads
    /// pass a [`Gate`], open at first; events are read from the active
    /// segment's file (sealed ones are mapped, and not gated).
    /// The gate opens when the returned guard drops, so that a failing test
    /// does not leave reads waiting forever (the runtime waits for them).
    pub async fn start_gated(f: impl FnOnce(&mut ServerConfig)) -> (TestServer, OpenOnDrop) {
        let gate = Gate::default();
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(GatedStorage {
            inner: annal::FsStorage,
            gate: gate.clone(),
        });
        let store = Arc::new(
            Store::open_with(
                storage,
                dir.path().join("data"),
                Options::default().durability(Durability::Never),
            )
            .unwrap(),
        );
        let mut config = ServerConfig::open("127.0.0.1:0".parse().unwrap());
        config.keepalive_ms = 500;
        config.shutdown_grace_ms = 2000;
        f(&mut config);
        let server = Self::start_store(store, dir, config, "http", Client::new()).await;
        (server, OpenOnDrop(gate))
    }
}

/// A [`Gate`] that opens when dropped (also when a test fails).
pub struct OpenOnDrop(Gate);

impl std::ops::Deref for OpenOnDrop {
    type Target = Gate;
    fn deref(&self) -> &Gate {
        &self.0
    }
}

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}
