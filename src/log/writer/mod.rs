//! The write path: leader/follower group commit, pipelined syncs, concurrency
//! checks, rotation.
//!
//! Appenders queue their requests. The first appender to find no leader
//! becomes the leader: it takes every request queued so far, checks each
//! (expected version, idempotency, append condition) against the published
//! state plus every group written but not yet published, encodes the accepted
//! ones into one buffer and writes it with one call. It then hands the
//! leadership to the first appender that queued meanwhile, so that the next
//! group is checked and written while this one syncs. Groups are published to
//! readers strictly in order, each only after its own sync (per the durability
//! option), and only then are their appenders answered. A lone appender pays
//! no thread hand-off at all. A failed write is cut back off the file so that
//! it leaves no trace. This module is the only place that writes the log; it
//! must never acknowledge an append before its bytes are durable under
//! [`Durability::Always`].

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::event::AppendResult;
use crate::log::state::Shared;
use crate::options::Durability;

mod batch;
mod checks;
mod pipeline;
mod request;
mod rotation;

use batch::Writer;
use pipeline::{Pipeline, Results, finish};
pub(crate) use request::{AppendRequest, encoded_size};

/// How many times a new leader yields, while the queue keeps growing, before it takes its group.
const GATHER_YIELDS: usize = 8;

/// The appends of one caller, queued together, waiting for their results
/// or for the leadership.
struct Slot {
    requests: Mutex<Vec<AppendRequest>>,
    state: Mutex<SlotState>,
    wake: Condvar,
}

#[derive(Default)]
struct SlotState {
    /// One result per request, in order, once the group is published.
    results: Option<Vec<Result<AppendResult>>>,
    promoted: bool,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Arc<Slot>>,
    leader: bool,
    closed: bool,
}

/// The front of the write path: the queue, the leader protocol and the
/// background flusher for [`Durability::Interval`].
pub(crate) struct Committer {
    queue: Mutex<Queue>,
    writer: Arc<Mutex<Writer>>,
    pipeline: Arc<Pipeline>,
    shared: Arc<Shared>,
    flusher: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

impl Committer {
    /// Prepares the write path of a freshly opened store.
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Self> {
        let interval = match shared.options.durability {
            Durability::Interval(d) => Some(d),
            _ => None,
        };
        let pipeline = Arc::new(Pipeline::default());
        let writer = Arc::new(Mutex::new(Writer::new(shared.clone(), pipeline.clone())?));
        let flusher = match interval {
            Some(d) => {
                let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
                let w = writer.clone();
                let handle = std::thread::Builder::new()
                    .name("annal-flusher".into())
                    .spawn(move || {
                        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(d) {
                            w.lock().sync_if_due(d);
                        }
                    })
                    .map_err(|e| Error::io("starting the flusher thread", e))?;
                Some((stop, handle))
            }
            None => None,
        };
        Ok(Committer {
            queue: Mutex::new(Queue::default()),
            writer,
            pipeline,
            shared,
            flusher: Mutex::new(flusher),
        })
    }

    /// Appends, as the leader of a group or as a follower of one.
    pub(crate) fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        self.append_many(vec![request])
            .pop()
            .unwrap_or(Err(Error::Closed(None)))
    }

    /// Queues several appends at once, so that they join one group (or the
    /// fewest groups the group size allows), and waits for all of them. Each
    /// is checked and made atomic on its own; the results are in order.
    pub(crate) fn append_many(&self, requests: Vec<AppendRequest>) -> Vec<Result<AppendResult>> {
        // What may read the log is looked up now, before queueing, so that the
        // leader's checks under the writer's lock read only recent events.
        let n = requests.len();
        let requests: Vec<AppendRequest> = requests
            .into_iter()
            .map(|mut request| {
                request.precheck = checks::precheck(&self.shared, &request);
                request
            })
            .collect();
        // One slot for them all: a batch of many appends costs one hand-off.
        let mine = Arc::new(Slot {
            requests: Mutex::new(requests),
            state: Mutex::new(SlotState::default()),
            wake: Condvar::new(),
        });
        let lead = {
            let mut q = self.queue.lock();
            if q.closed {
                return (0..n).map(|_| Err(Error::Closed(None))).collect();
            }
            q.pending.push(mine.clone());
            !std::mem::replace(&mut q.leader, true)
        };
        if lead {
            self.lead();
        }
        let mut results = self.wait(&mine);
        // One result per request, whatever happened.
        results.resize_with(n, || Err(Error::Closed(None)));
        results
    }

    /// Waits for a queued slot's results, leading a group when promoted.
    fn wait(&self, slot: &Slot) -> Vec<Result<AppendResult>> {
        loop {
            {
                let mut st = slot.state.lock();
                loop {
                    if let Some(r) = st.results.take() {
                        return r;
                    }
                    if std::mem::take(&mut st.promoted) {
                        break;
                    }
                    slot.wake.wait(&mut st);
                }
            }
            self.lead();
        }
    }

    /// As the leader: takes every queued append, checks, writes and publishes
    /// them as one group, hands the leadership on, and answers every slot.
    fn lead(&self) {
        // While other appenders are still arriving, give them the CPU for a moment
        // so that they join this group rather than wait for the next.
        let mut queued = self.queue.lock().pending.len();
        for _ in 0..GATHER_YIELDS {
            std::thread::yield_now();
            let now = self.queue.lock().pending.len();
            if now == queued {
                break;
            }
            queued = now;
        }
        // The leader takes everything queued, its own requests included.
        let batch = std::mem::take(&mut self.queue.lock().pending);
        let mut counts = Vec::with_capacity(batch.len());
        let mut requests: Vec<Option<AppendRequest>> = Vec::new();
        for slot in &batch {
            let mine = std::mem::take(&mut *slot.requests.lock());
            counts.push(mine.len());
            requests.extend(mine.into_iter().map(Some));
        }
        let mut results: Results = (0..requests.len()).map(|_| None).collect();
        let written = self.writer.lock().process(&requests, &mut results);
        // The next group may be checked and written while this one syncs.
        {
            let mut q = self.queue.lock();
            match q.pending.first() {
                Some(next) => {
                    next.state.lock().promoted = true;
                    next.wake.notify_one();
                }
                None => q.leader = false,
            }
        }
        if let Some(group) = written {
            finish(&self.shared, &self.pipeline, &group, &mut results);
        }
        let mut results = results.into_iter();
        for (slot, n) in batch.iter().zip(counts) {
            let mine = results
                .by_ref()
                .take(n)
                .map(|r| r.unwrap_or(Err(Error::Closed(None))))
                .collect();
            slot.state.lock().results = Some(mine);
            slot.wake.notify_one();
        }
    }

    /// Seals the active segment now, if it holds any position (see
    /// [`Writer::seal_active`]); waits for the group being written, if any.
    pub(crate) fn seal_active(&self) -> Result<bool> {
        if self.queue.lock().closed {
            return Err(Error::Closed(None));
        }
        self.writer.lock().seal_active(None)
    }

    /// Seals the active segment if it is still the one starting at `base`
    /// (see [`Writer::seal_active`]): for a caller that judged that segment
    /// due while a rotation may have replaced it since. Returns whether a
    /// segment was sealed.
    pub(crate) fn seal_active_at(&self, base: u64) -> Result<bool> {
        if self.queue.lock().closed {
            return Err(Error::Closed(None));
        }
        self.writer.lock().seal_active(Some(base))
    }

    /// Refuses further appends, stops the flusher and makes everything written durable.
    pub(crate) fn close(&self) -> Result<()> {
        self.queue.lock().closed = true;
        if let Some((stop, handle)) = self.flusher.lock().take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        self.writer.lock().close()
    }
}
