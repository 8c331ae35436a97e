//! Counters, gauges and histograms, rendered by hand in the Prometheus text format.
//!
//! Shared by every protocol, which counts its own requests here. It must never
//! import a protocol's module.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use std::sync::{Mutex, MutexGuard};

/// Locks, ignoring poisoning (a panicking request must not break metrics).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bucket bounds, in seconds, of the latency histograms.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets.
pub(crate) struct Histogram {
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Every metric the server keeps.
pub(crate) struct Metrics {
    pub(crate) appends: AtomicU64,
    pub(crate) events_appended: AtomicU64,
    pub(crate) append_bytes: AtomicU64,
    pub(crate) append_seconds: Histogram,
    pub(crate) read_seconds: Histogram,
    pub(crate) subscribers: AtomicI64,
    pub(crate) scavenge_runs: AtomicU64,
    pub(crate) scavenge_events_removed: AtomicU64,
    pub(crate) compress_runs: AtomicU64,
    pub(crate) backups: AtomicU64,
    /// Store reads made to build HTTP read responses (stream and log pages,
    /// group fetches: one a look).
    pub(crate) store_reads: AtomicU64,
    http: Mutex<BTreeMap<(String, u16), u64>>,
}

/// Store figures read at scrape time.
pub(crate) struct StoreGauges {
    pub(crate) stats: annal::StoreStats,
    pub(crate) disk_available: Option<u64>,
    /// The forwarders running beside the server.
    pub(crate) forwarders: Vec<annal::ForwardStatus>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Metrics {
            appends: AtomicU64::new(0),
            events_appended: AtomicU64::new(0),
            append_bytes: AtomicU64::new(0),
            append_seconds: Histogram::new(),
            read_seconds: Histogram::new(),
            subscribers: AtomicI64::new(0),
            scavenge_runs: AtomicU64::new(0),
            scavenge_events_removed: AtomicU64::new(0),
            compress_runs: AtomicU64::new(0),
            backups: AtomicU64::new(0),
            store_reads: AtomicU64::new(0),
            http: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts one store read made for a read response.
    pub(crate) fn count_store_read(&self) {
        self.store_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request(&self, route: &str, status: u16) {
        *lock(&self.http).entry((route.to_string(), status)).or_insert(0) += 1;
    }

    pub(crate) fn render(&self, g: &StoreGauges) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: i128| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "annal_appends_total",
            "Successful appends.",
            load(&self.appends),
        );
        counter(
            &mut out,
            "annal_events_appended_total",
            "Events appended.",
            load(&self.events_appended),
        );
        counter(
            &mut out,
            "annal_append_bytes_total",
            "Bytes of data and metadata appended.",
            load(&self.append_bytes),
        );
        counter(
            &mut out,
            "annal_scavenge_runs_total",
            "Scavenges run through the admin route.",
            load(&self.scavenge_runs),
        );
        counter(
            &mut out,
            "annal_scavenge_events_removed_total",
            "Events removed by scavenges run through the admin route.",
            load(&self.scavenge_events_removed),
        );
        counter(
            &mut out,
            "annal_compress_runs_total",
            "Compressions run through the admin route.",
            load(&self.compress_runs),
        );
        counter(
            &mut out,
            "annal_backups_total",
            "Backups made through the admin route.",
            load(&self.backups),
        );
        counter(
            &mut out,
            "annal_read_store_calls_total",
            "Store calls made to build HTTP read responses: reads of a stream or of the log (a page takes one or a few), and group fetches' looks at their group (one per look, however many events it reads from the group's source).",
            load(&self.store_reads),
        );
        let _ = writeln!(
            out,
            "# HELP annal_http_requests_total HTTP requests by route and status.\n# TYPE annal_http_requests_total counter"
        );
        for ((route, status), n) in lock(&self.http).iter() {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "annal_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        self.append_seconds.render(
            &mut out,
            "annal_append_seconds",
            "Server-side append latency (includes the sync).",
        );
        self.read_seconds
            .render(&mut out, "annal_read_seconds", "Server-side read latency.");
        gauge(
            &mut out,
            "annal_subscribers",
            "Open SSE subscriptions.",
            self.subscribers.load(Ordering::Relaxed) as i128,
        );
        let s = &g.stats;
        gauge(
            &mut out,
            "annal_events",
            "Events ever appended (the head position).",
            s.events as i128,
        );
        gauge(&mut out, "annal_streams", "Streams.", s.streams as i128);
        gauge(&mut out, "annal_segments", "Segment files.", s.segments as i128);
        gauge(
            &mut out,
            "annal_segment_bytes",
            "Bytes of segment files.",
            s.segment_bytes as i128,
        );
        gauge(
            &mut out,
            "annal_index_bytes",
            "Bytes of index files.",
            s.index_bytes as i128,
        );
        if let Some(d) = g.disk_available {
            gauge(
                &mut out,
                "annal_disk_available_bytes",
                "Bytes available to the store on its file system.",
                d as i128,
            );
        }
        if !s.retention_held_by.is_empty() {
            let lowest = s.retention_held_by.iter().map(|(_, p)| *p).min().unwrap_or(0);
            gauge(
                &mut out,
                "annal_retention_held_position",
                "Scavenging keeps every event from this position on: a forwarder that waits has not delivered them.",
                i128::from(lowest),
            );
        }
        if let Some(max) = s.retention_max_bytes {
            gauge(
                &mut out,
                "annal_retention_max_bytes",
                "The disk budget: retention.max_bytes of sealed segments.",
                i128::from(max),
            );
            gauge(
                &mut out,
                "annal_retention_held_bytes",
                "Bytes of sealed segments holding events a forwarder that waits has not delivered.",
                i128::from(s.retention_held_bytes),
            );
            gauge(
                &mut out,
                "annal_retention_budget_exceeded",
                "1 if undelivered events alone take more than the disk budget.",
                i128::from(s.budget_exceeded_by_holds()),
            );
        }
        forwarder_metrics(&mut out, &g.forwarders);
        out
    }
}

/// One family per figure of the forwarders, one sample per forwarder.
fn forwarder_metrics(out: &mut String, forwarders: &[annal::ForwardStatus]) {
    if forwarders.is_empty() {
        return;
    }
    type Figure = fn(&annal::ForwardStatus) -> f64;
    let families: [(&str, &str, &str, Figure); 11] = [
        (
            "annal_forward_up",
            "gauge",
            "1 while the forwarder runs or backs off, 0 when stopped or in error.",
            |f| {
                f64::from(u8::from(matches!(
                    f.state,
                    annal::ForwardState::Running | annal::ForwardState::BackingOff
                )))
            },
        ),
        (
            "annal_forward_checkpoint",
            "gauge",
            "Every position before it is delivered.",
            |f| f.checkpoint as f64,
        ),
        (
            "annal_forward_lag_events",
            "gauge",
            "Positions between the checkpoint and the head.",
            |f| f.lag_events as f64,
        ),
        (
            "annal_forward_lag_bytes",
            "gauge",
            "Bytes still to deliver (estimated).",
            |f| f.lag_bytes as f64,
        ),
        (
            "annal_forward_lag_seconds",
            "gauge",
            "Age of the oldest event not yet delivered.",
            |f| f.lag_seconds,
        ),
        (
            "annal_forward_delivered_events_total",
            "counter",
            "Events delivered since the server started.",
            |f| f.delivered_events as f64,
        ),
        (
            "annal_forward_parked_total",
            "counter",
            "Events parked in the dead-letter stream.",
            |f| f.parked as f64,
        ),
        (
            "annal_forward_skipped_total",
            "counter",
            "Positions removed before delivery (gaps).",
            |f| f.skipped as f64,
        ),
        (
            "annal_forward_gap",
            "gauge",
            "1 once the forwarder skipped events removed before it delivered them (a gap), else 0.",
            |f| f64::from(u8::from(f.gap.is_some())),
        ),
        (
            "annal_forward_warning",
            "gauge",
            "1 once the forwarder reports a warning (its status `warning`: its thread kept its priority, or the target's checkpoint was past the end of the log), until it restarts, else 0; not an error.",
            |f| f64::from(u8::from(f.warning.is_some())),
        ),
        (
            "annal_forward_failures",
            "gauge",
            "Failed attempts since the last success.",
            |f| f64::from(f.failures),
        ),
    ];
    for (name, kind, help, figure) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for f in forwarders {
            let _ = writeln!(out, "{name}{{forwarder=\"{}\"}} {}", f.name, figure(f));
        }
    }
}

/// Bytes available on the file system holding `dir`, if the OS says.
pub(crate) fn disk_available(dir: &std::path::Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.append_seconds.observe(Duration::from_millis(2));
        m.append_seconds.observe(Duration::from_secs(100));
        m.request("/streams/{stream}", 200);
        let text = m.render(&StoreGauges {
            stats: annal::StoreStats::default(),
            disk_available: Some(5),
            forwarders: Vec::new(),
        });
        assert!(text.contains("annal_append_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("annal_append_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("annal_append_seconds_count 2\n"));
        assert!(text.contains("annal_http_requests_total{route=\"/streams/{stream}\",status=\"200\"} 1\n"));
        assert!(text.contains("annal_disk_available_bytes 5\n"));
    }
}
