//! The one event shape every system stores, and the layout of the read data set.
//!
//! The payloads are those of the `annal-workload` crate, which the criterion
//! benches and `examples/figures.rs` use too, so that all the figures are about
//! the same events.

pub use annal_workload::{FILTER_TYPE, TYPES, stream_name};
use annal_workload::{customer_tag, metadata, mix, payload, tenant_tag};

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

/// Event number `seq`: type `TYPES[seq % 10]`, a tenant tag, and a customer tag on half of them.
pub fn ev(seq: u64) -> Ev {
    let mut tags = vec![tenant_tag(seq)];
    if (mix(seq) >> 7).is_multiple_of(2) {
        tags.push(customer_tag(seq));
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
