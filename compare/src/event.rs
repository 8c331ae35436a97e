//! The one event shape every system stores, and the layout of the read data set.
//!
//! The payload generator follows `benches/common/mod.rs`, so that the figures
//! here and those of `examples/figures.rs` are about the same events.

/// Event types, one in ten events each.
pub const TYPES: [&str; 10] = [
    "OrderPlaced",
    "OrderPaid",
    "OrderPacked",
    "OrderShipped",
    "OrderDelivered",
    "OrderCancelled",
    "RefundIssued",
    "AgentStepStarted",
    "AgentStepCompleted",
    "AgentToolCalled",
];

/// The type the filtered read selects: the events whose number is 5 modulo 10.
pub const FILTER_TYPE: &str = "OrderCancelled";

/// One event as the workloads hand it to a system: one or two tags, in `tags_json` and `annal`.
#[derive(Debug, Clone)]
pub struct Ev {
    pub event_type: &'static str,
    /// About 300 bytes of JSON.
    pub data: String,
    /// About 80 bytes of JSON.
    pub metadata: String,
    /// The tags as a JSON array, for the SQL peers (which have no list type in common).
    pub tags_json: String,
    /// The same event as annal takes it, built once: an append clones it, which shares the
    /// payload bytes, as the SQL peers bind the strings above without copying them.
    pub annal: annal::EventData,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64: cheap, deterministic variety in the payloads.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A small deterministic random number generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(mix(seed) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The JSON payload (about 300 bytes) of event number `seq`.
fn payload(seq: u64) -> String {
    let h = mix(seq);
    let (q1, q2) = (1 + h % 4, 1 + (h >> 8) % 3);
    let (p1, p2) = (199 + (h >> 16) % 9800, 99 + (h >> 32) % 4900);
    format!(
        concat!(
            r#"{{"order_id":"ord-{seq:010}","customer_id":"cust-{cust:06}","agent":"checkout-agent-{agent:02}","#,
            r#""status":"{status}","items":[{{"sku":"SKU-{sku1:05}","qty":{q1},"price":{p1}}},"#,
            r#"{{"sku":"SKU-{sku2:05}","qty":{q2},"price":{p2}}}],"total_cents":{total},"#,
            r#""shipping":{{"country":"DE","postcode":"{pc:05}"}},"#,
            r#""placed_at":"2024-11-23T18:{mm:02}:{ss:02}.{ms:03}Z"}}"#
        ),
        seq = seq,
        cust = (h >> 40) % 1_000_000,
        agent = (h >> 20) % 100,
        status = ["placed", "paid", "packed", "shipped"][(h % 4) as usize],
        sku1 = (h >> 12) % 100_000,
        sku2 = (h >> 28) % 100_000,
        q1 = q1,
        q2 = q2,
        p1 = p1,
        p2 = p2,
        total = q1 * p1 + q2 * p2,
        pc = (h >> 44) % 100_000,
        mm = (h >> 50) % 60,
        ss = (h >> 56) % 60,
        ms = (h >> 2) % 1000,
    )
}

/// The JSON metadata (about 80 bytes) of event number `seq`.
fn metadata(seq: u64) -> String {
    let h = mix(seq ^ 0x5555);
    format!(
        r#"{{"correlation_id":"{:016x}","causation_id":"cmd-{:08}","user":"u-{:05}"}}"#,
        h,
        seq % 100_000_000,
        (h >> 20) % 100_000
    )
}

/// Event number `seq`: type `TYPES[seq % 10]`, a tenant tag, and a customer tag on half of them.
pub fn ev(seq: u64) -> Ev {
    let h = mix(seq);
    let mut tags = vec![format!("tenant:t{}", h % 8)];
    if (h >> 7).is_multiple_of(2) {
        tags.push(format!("customer:cust-{:06}", (h >> 40) % 1_000_000));
    }
    let tags_json = format!(
        "[{}]",
        tags.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(",")
    );
    let event_type = TYPES[(seq % 10) as usize];
    let (data, metadata) = (payload(seq), metadata(seq));
    let annal = tags.iter().fold(
        annal::EventData::json(event_type, data.clone()).with_metadata(metadata.clone()),
        |d, t| d.with_tag(t.clone()),
    );
    Ev {
        event_type,
        data,
        metadata,
        tags_json,
        annal,
    }
}

/// Pre-built events that the write workloads cycle through, so that building
/// them is not part of what is measured. Its length is a multiple of every batch size.
pub fn pool(len: usize) -> Vec<Ev> {
    (0..len as u64).map(ev).collect()
}

/// Name of stream number `i`.
pub fn stream_name(i: u64) -> String {
    format!("order-{i:06}")
}

/// Events of the read data set appended to one stream at a time while loading it.
pub const CHUNK: u64 = 10;

/// The read data set: `events` events in `streams` streams; the first `big`
/// streams hold `big_len` events each (the streams the stream-read workload
/// reads), the others share the rest. The streams are interleaved in the log,
/// `CHUNK` events of each stream at a time, round after round.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub events: u64,
    pub streams: u64,
    pub big: u64,
    pub big_len: u64,
}

impl Layout {
    /// Half of the events in streams of `big_len` events, the other half spread over the other streams.
    pub fn new(events: u64, streams: u64, big_len: u64) -> Self {
        let big = (events / 2 / big_len).max(1);
        assert!(big < streams && big * big_len < events, "layout too small");
        Layout {
            events,
            streams,
            big,
            big_len,
        }
    }

    /// Events in stream `s`.
    pub fn len(&self, s: u64) -> u64 {
        if s < self.big {
            return self.big_len;
        }
        let rest = self.events - self.big * self.big_len;
        let small = self.streams - self.big;
        rest / small + u64::from(s - self.big < rest % small)
    }

    /// The chunks in log order: (stream, first revision, event count).
    pub fn chunks(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let rounds = self.big_len.div_ceil(CHUNK).max(self.len(self.big).div_ceil(CHUNK));
        (0..rounds).flat_map(move |r| {
            (0..self.streams).filter_map(move |s| {
                let first = r * CHUNK;
                let len = self.len(s);
                (first < len).then(|| (s, first, CHUNK.min(len - first)))
            })
        })
    }

    /// Events of type [`FILTER_TYPE`] in the data set (event number `seq` has type `TYPES[seq % 10]`).
    pub fn filter_matches(&self) -> u64 {
        self.events / 10 + u64::from(self.events % 10 > 5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_adds_up() {
        for (n, s) in [(1_000_000, 10_000), (20_000, 200)] {
            let l = Layout::new(n, s, 1000);
            assert_eq!((0..s).map(|i| l.len(i)).sum::<u64>(), n);
            assert_eq!(l.chunks().map(|c| c.2).sum::<u64>(), n);
            let mut next = vec![0u64; s as usize];
            for (st, first, k) in l.chunks() {
                assert_eq!(next[st as usize], first);
                next[st as usize] += k;
            }
            assert_eq!(
                (0..n).filter(|q| TYPES[(q % 10) as usize] == FILTER_TYPE).count() as u64,
                l.filter_matches()
            );
        }
    }

    #[test]
    fn events_have_the_intended_shape() {
        let sizes: Vec<(usize, usize)> = (0..100).map(ev).map(|e| (e.data.len(), e.metadata.len())).collect();
        assert!(
            sizes
                .iter()
                .all(|(d, m)| (280..340).contains(d) && (70..95).contains(m))
        );
        assert!((0..100).map(ev).any(|e| e.annal.tags.len() == 1));
        assert!((0..100).map(ev).any(|e| e.annal.tags.len() == 2));
    }
}
