//! The realistic events annal's benchmarks write: order and agent events with
//! about 300 bytes of JSON data, about 80 bytes of JSON metadata, ten event
//! types and deterministic variety, all from an event number.
//!
//! Used by the criterion benches and `examples/figures.rs` (through
//! `benches/common`) and by the `compare` crate, so that all their figures are
//! about the same events. It builds strings only: each user makes its own
//! events (and tags) of them. Changing anything here changes every benchmark's
//! workload; the test at the bottom says when it does.

/// Event types; event number `seq` has type `TYPES[seq % 10]`, so one in ten events each.
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

/// The type the filtered-read benchmarks select (a tenth of all events: the
/// events whose number is 5 modulo 10).
pub const FILTER_TYPE: &str = "OrderCancelled";

/// splitmix64: cheap, deterministic variety in the payloads (and the seed of
/// the benchmarks' random numbers).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The JSON payload (about 300 bytes) of order/agent event number `seq`.
pub fn payload(seq: u64) -> String {
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
pub fn metadata(seq: u64) -> String {
    let h = mix(seq ^ 0x5555);
    format!(
        r#"{{"correlation_id":"{:016x}","causation_id":"cmd-{:08}","user":"u-{:05}"}}"#,
        h,
        seq % 100_000_000,
        (h >> 20) % 100_000
    )
}

/// The tenant tag of event number `seq` (one of eight tenants).
pub fn tenant_tag(seq: u64) -> String {
    format!("tenant:t{}", mix(seq) % 8)
}

/// The customer tag of event number `seq`: the customer of its payload.
pub fn customer_tag(seq: u64) -> String {
    format!("customer:cust-{:06}", (mix(seq) >> 40) % 1_000_000)
}

/// Name of stream number `i`.
pub fn stream_name(i: u64) -> String {
    format!("order-{i:06}")
}

/// The events of the query figures (issue 16): dotted topic types, an
/// `actor` and a `correlationId` in the metadata, streams of five categories.
/// `examples/query_figures.rs` and `annal-compare queries` load the same ones.
pub mod queries {
    /// First words of the event types.
    pub const AREAS: &[&str] = &[
        "app.lifecycle",
        "hook.triggered",
        "activity",
        "billing.invoice",
        "user.profile",
    ];
    /// Last words of the event types (5 × 8 = 40 types).
    pub const VERBS: &[&str] = &[
        "started", "stopped", "push", "pull", "created", "updated", "deleted", "viewed",
    ];
    /// Stream categories (`<category>-<id>`).
    pub const CATEGORIES: &[&str] = &["order", "cart", "user", "invoice", "session"];

    /// Event `k` (counted over the whole load) of append `b`: its stream,
    /// type, JSON data and JSON metadata.
    pub fn event(b: usize, k: usize) -> (String, String, String, String) {
        let stream = format!("{}-{}", CATEGORIES[b % CATEGORIES.len()], b % 10_000);
        let ty = format!("{}.{}", AREAS[k % AREAS.len()], VERBS[(k / 5) % VERBS.len()]);
        let data = format!(r#"{{"n":{k},"amount":{}}}"#, k % 977);
        let meta = format!(r#"{{"actor":"agent-{}","correlationId":"c-{}"}}"#, k % 100, k / 3);
        (stream, ty, data, meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_intended_shape() {
        for seq in 0..1000 {
            let (d, m) = (payload(seq), metadata(seq));
            assert!((280..340).contains(&d.len()), "{d}");
            assert!((70..95).contains(&m.len()), "{m}");
            let customer = &customer_tag(seq)["customer:".len()..];
            assert!(d.contains(&format!("\"customer_id\":\"{customer}\"")), "{d}");
        }
        let filtered = (0..1000).filter(|s| TYPES[(s % 10) as usize] == FILTER_TYPE).count();
        assert_eq!(filtered, 100);
    }

    /// The workload is what every published figure was measured with: a
    /// change to it shows here (update the fingerprint only on purpose).
    #[test]
    fn the_workload_does_not_change_by_accident() {
        // FNV-1a: a hash that stays the same across Rust releases.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut bytes = 0;
        let strings = (0..20_000).flat_map(|seq| {
            let (d, m) = (payload(seq), metadata(seq));
            bytes += d.len() + m.len();
            [d, m, tenant_tag(seq), customer_tag(seq), stream_name(seq)]
        });
        for s in strings.chain(TYPES.map(String::from)) {
            for b in s.bytes().chain([0xff]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        assert_eq!(bytes, 7_684_380);
        assert_eq!(h, 0xfbea_5365_80cd_723a, "fingerprint");
    }
}
