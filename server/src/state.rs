//! The server's state, shared by every protocol: the store handle, the
//! config, tokens, metrics, the shutdown signal, and the blocking pool that
//! every store operation runs on.
//!
//! It owns how store work is run and counted (shutdown waits for it). It must
//! never answer a request: an operation that gives no answer is reported as
//! [`Interrupted`], and each protocol says what that means to its client.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::auth;
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::metrics;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The first pause of a scanning read that found no `max_scans` place free.
pub(crate) const PLACE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(1);
/// The longest pause between a scanning read's tries for a place.
pub(crate) const PLACE_RETRY_MOST: std::time::Duration = std::time::Duration::from_millis(32);

/// Admits the catch-up reads of a subscription to `$all` with a filter the
/// indexes cannot serve, each to one of the `max_scans` places (shared with
/// HTTP's and gRPC's scanning reads): a place is tried for with pauses,
/// never queued for (a queued waiter would be handed every freed place ahead
/// of the reads that only try once), and given back when the read of one
/// span ends. A subscription takes a place only while more than half of
/// them are free: one catching up asks again as soon as its span is read,
/// and would otherwise keep the places from the reads and counts that ask
/// once (with `max_scans` = 1 they share the one place). It gives up once
/// the subscription is cancelled or `gone` says its client went away.
pub(crate) struct SubscriptionScans {
    scans: Arc<tokio::sync::Semaphore>,
    /// Places left to the reads that ask once: half of `max_scans`.
    kept: usize,
    gone: Box<dyn Fn() -> bool + Send + Sync>,
}

impl SubscriptionScans {
    /// A gate over `state`'s places for a subscription whose client has gone once `gone` says so.
    pub(crate) fn new(state: &AppState, gone: impl Fn() -> bool + Send + Sync + 'static) -> Arc<SubscriptionScans> {
        Arc::new(SubscriptionScans {
            scans: state.scans.clone(),
            kept: state.config.max_scans / 2,
            gone: Box::new(gone),
        })
    }
}

impl annal::ScanGate for SubscriptionScans {
    fn admit(&self, cancel: &annal::Cancel) -> Option<Box<dyn Send>> {
        let mut pause = PLACE_RETRY_FIRST;
        loop {
            if self.scans.available_permits() > self.kept {
                match self.scans.clone().try_acquire_owned() {
                    Ok(place) => return Some(Box::new(place)),
                    Err(tokio::sync::TryAcquireError::Closed) => return None,
                    Err(tokio::sync::TryAcquireError::NoPermits) => {}
                }
            }
            if cancel.is_cancelled() || (self.gone)() {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(PLACE_RETRY_MOST);
        }
    }
}

/// The state shared by every request: the store, the config, tokens and metrics.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

tokio::task_local! {
    /// Set while a request runs under the request timeout: whether it has
    /// started a store operation (which a timeout does not stop).
    pub(crate) static STARTED: OperationStarted;
}

/// Whether the request has handed an operation to the store; see [`STARTED`].
#[derive(Clone, Default)]
pub(crate) struct OperationStarted(Arc<std::sync::atomic::AtomicBool>);

impl OperationStarted {
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The inside of [`AppState`] (its fields are private to the crate).
pub struct Inner {
    pub(crate) store: Arc<annal::Store>,
    pub(crate) config: ServerConfig,
    pub(crate) auth: auth::Auth,
    pub(crate) metrics: metrics::Metrics,
    /// Cancelled when the server begins shutting down: subscriptions end, readiness fails.
    pub(crate) shutdown: CancellationToken,
    /// Operations running on the blocking pool (shutdown waits for them).
    pub(crate) busy: AtomicUsize,
    /// Figures of the forwarders running beside the server (`GET /forward`, `/metrics`).
    pub(crate) forwarders: std::sync::Mutex<Vec<annal::StatusHandle>>,
    /// The answer of the last `POST /admin/verify` since the server started,
    /// with the time it finished (`GET /node` shows it).
    pub(crate) last_verify: std::sync::Mutex<Option<serde_json::Value>>,
    /// Places for group fetches that wait for events (`max_long_polls`).
    pub(crate) long_polls: Arc<tokio::sync::Semaphore>,
    /// Places for expensive reads (`max_scans`), held by their handlers until
    /// they answer or are cut by the request timeout (which cancels the work).
    pub(crate) scans: Arc<tokio::sync::Semaphore>,
    /// gRPC reads of `$all` that scan, admitted and not yet ended (with a
    /// place or not: reading, waiting for their client or for a place).
    pub(crate) open_scan_reads: AtomicUsize,
    /// Changes after each publication of new events (and when the store
    /// closes), told by the store ([`annal::Store::listen`]): waiting fetches
    /// wait on it instead of looking at the head of the log.
    pub(crate) new_events: Arc<tokio::sync::watch::Sender<u64>>,
    /// Keeps the store's callback that moves `new_events` registered.
    _events_listener: annal::EventListener,
    /// Times a waiting HTTP group fetch woke up, for any reason
    /// ([`AppState::fetch_wait_wakeups`]).
    pub(crate) fetch_wait_wakeups: AtomicU64,
    /// Wakes the waiting fetches of one group when its consumers acknowledge,
    /// refuse or replay events over HTTP, so that they look again.
    pub(crate) group_wakers: GroupWakers,
    /// What each token holds of the places above (`token_share_percent`).
    pub(crate) shares: Arc<crate::shares::Shares>,
    /// Held from the count of a limited token's groups until its new group
    /// is made (`max_groups_per_token`).
    pub(crate) group_creation: std::sync::Mutex<()>,
}

impl AppState {
    /// State for a router over `store`; fails if the config is invalid.
    pub fn new(store: Arc<annal::Store>, config: ServerConfig) -> Result<AppState, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let auth = auth::Auth::new(&config).map_err(ServerError::Config)?;
        let shares = crate::shares::Shares::new(&config);
        let long_polls = Arc::new(tokio::sync::Semaphore::new(config.max_long_polls));
        let scans = Arc::new(tokio::sync::Semaphore::new(config.max_scans));
        // A generation count, moved on the writer's thread (quick, no await).
        let new_events = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let tell = new_events.clone();
        let events_listener = store.listen(move || tell.send_modify(|n| *n = n.wrapping_add(1)));
        Ok(AppState(Arc::new(Inner {
            store,
            config,
            auth,
            metrics: metrics::Metrics::new(),
            shutdown: CancellationToken::new(),
            busy: AtomicUsize::new(0),
            forwarders: std::sync::Mutex::new(Vec::new()),
            last_verify: std::sync::Mutex::new(None),
            long_polls,
            scans,
            open_scan_reads: AtomicUsize::new(0),
            new_events,
            _events_listener: events_listener,
            fetch_wait_wakeups: AtomicU64::new(0),
            group_wakers: GroupWakers::default(),
            shares,
            group_creation: std::sync::Mutex::new(()),
        })))
    }

    /// Makes the figures of forwarders running beside the server visible in
    /// `GET /forward` and `/metrics`.
    pub fn set_forwarders(&self, forwarders: Vec<annal::StatusHandle>) {
        *self.0.forwarders.lock().unwrap_or_else(|p| p.into_inner()) = forwarders;
    }

    /// The figures of the forwarders running beside the server.
    pub fn forwarders(&self) -> Vec<annal::ForwardStatus> {
        self.0
            .forwarders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(annal::StatusHandle::get)
            .collect()
    }

    /// The token cancelled when shutdown begins (ends open subscriptions).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.0.shutdown.clone()
    }

    /// Store operations (appends, reads, group fetches...) still running on the blocking pool.
    pub fn operations_in_flight(&self) -> usize {
        self.0.busy.load(Ordering::Acquire)
    }

    /// Open SSE subscriptions.
    pub fn subscribers(&self) -> usize {
        self.0.metrics.subscribers.load(Ordering::Acquire).max(0) as usize
    }

    /// How many times a waiting HTTP group fetch was woken because its
    /// group's consumers acknowledged, refused or replayed events (each such
    /// wake-up costs the fetch a look on the blocking pool).
    pub fn group_fetch_wakeups(&self) -> u64 {
        self.0.group_wakers.woken.load(Ordering::Acquire)
    }

    /// Store calls made to build HTTP read responses
    /// (`annal_read_store_calls_total`): reads of a stream or of the log (a
    /// page costs one or a few), and group fetches' looks at their group
    /// (one per look, however many events it reads from the source).
    pub fn store_reads(&self) -> u64 {
        self.0.metrics.store_reads.load(Ordering::Acquire)
    }

    /// How many times waiting HTTP group fetches woke up, for any reason
    /// (new events, their group's changes, the periodic look, a timer): what
    /// waiting fetches cost when nothing happens.
    pub fn fetch_wait_wakeups(&self) -> u64 {
        self.0.fetch_wait_wakeups.load(Ordering::Acquire)
    }

    pub(crate) fn store(&self) -> Arc<annal::Store> {
        self.0.store.clone()
    }

    /// Runs `f` on the blocking pool, counted as running until it returns
    /// (shutdown waits for it), and marks the current request as having
    /// started a store operation (see [`STARTED`]).
    pub(crate) async fn run_blocking<T, F>(&self, f: F) -> Result<T, Interrupted>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        let _ = STARTED.try_with(|s| s.0.store(true, Ordering::Release));
        let guard = Busy(self.clone());
        let run = move || {
            let _guard = guard;
            f()
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(r) => Ok(r),
            Err(e) if e.is_panic() => Err(Interrupted::Panicked),
            Err(_) => Err(Interrupted::Cancelled),
        }
    }
}

/// One wake-up per group for the HTTP fetches waiting on it, made when the
/// first fetch waits and dropped when the last one stops waiting.
#[derive(Default)]
pub(crate) struct GroupWakers {
    by_group: std::sync::Mutex<HashMap<String, Arc<Notify>>>,
    /// Wake-ups delivered to waiting fetches ([`AppState::group_fetch_wakeups`]).
    pub(crate) woken: AtomicU64,
}

impl GroupWakers {
    /// The wake-up of group `name`, held while a fetch of it may wait.
    pub(crate) fn watch(&self, name: &str) -> Watch<'_> {
        let mut map = self.by_group.lock().unwrap_or_else(|p| p.into_inner());
        let notify = map.entry(name.to_string()).or_default().clone();
        Watch {
            wakers: self,
            name: name.to_string(),
            notify,
        }
    }

    /// Wakes the fetches waiting on group `name` (none waiting: nothing to do).
    pub(crate) fn wake(&self, name: &str) {
        let map = self.by_group.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(name) {
            n.notify_waiters();
        }
    }
}

/// A fetch's hold on its group's wake-up; see [`GroupWakers::watch`].
pub(crate) struct Watch<'a> {
    wakers: &'a GroupWakers,
    name: String,
    notify: Arc<Notify>,
}

impl Watch<'_> {
    /// The wake-up to wait on.
    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }

    /// Counts a wake-up the fetch received.
    pub(crate) fn woken(&self) {
        self.wakers.woken.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut map = self.wakers.by_group.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and this one: no other fetch waits on the group.
        if Arc::strong_count(&self.notify) == 2 {
            map.remove(&self.name);
        }
    }
}

/// Why an operation run by [`AppState::run_blocking`] gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupted {
    /// It panicked.
    Panicked,
    /// Its task was cancelled (the runtime is shutting down).
    Cancelled,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A running operation; see [`AppState::blocking`].
struct Busy(AppState);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}
