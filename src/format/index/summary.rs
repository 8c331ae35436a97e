//! The stream summary of a version-2 index (format.md, "Stream summary,
//! version 2"): the segment's streams sorted by name, each name stored as
//! the bytes it shares with the previous one plus the rest, with a full name
//! every [`RESTART`] entries so that a name is found by binary search over
//! the restarts and a scan of one run.
//!
//! This module owns the bytes of that section and its restart table; it
//! must never know about the other sections.

use super::StreamSummary;
use crate::format::codec::{Reader, le_u32, put_varint};

/// Entries per run: each run starts with a full name.
pub(crate) const RESTART: usize = 16;

/// Encodes `streams` (sorted by name, distinct; positions relative to the
/// segment's base) into the summary and its restart table, or `None` if an
/// offset does not fit 32 bits.
pub(crate) fn encode(streams: &[(&str, StreamSummary)], base: u64) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut restarts = Vec::with_capacity(4 * streams.len().div_ceil(RESTART));
    let mut prev: &[u8] = &[];
    for (i, (name, s)) in streams.iter().enumerate() {
        let name = name.as_bytes();
        let shared = if i % RESTART == 0 {
            restarts.extend_from_slice(&u32::try_from(bytes.len()).ok()?.to_le_bytes());
            0
        } else {
            prev.iter().zip(name).take_while(|(a, b)| a == b).count()
        };
        put_varint(&mut bytes, shared as u64);
        put_varint(&mut bytes, (name.len() - shared) as u64);
        bytes.extend_from_slice(&name[shared..]);
        put_varint(&mut bytes, s.first_revision);
        put_varint(&mut bytes, s.last_revision.checked_sub(s.first_revision)?);
        put_varint(&mut bytes, s.last_position.checked_sub(base)?);
        prev = name;
    }
    u32::try_from(bytes.len()).ok()?;
    Some((bytes, restarts))
}

/// A summary section and its restart table, as an index file holds them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary<'a> {
    bytes: &'a [u8],
    restarts: &'a [u8],
    count: usize,
    base: u64,
}

/// A cursor over the entries of one or more runs.
struct Cursor<'a> {
    r: Reader<'a>,
    name: Vec<u8>,
}

impl Cursor<'_> {
    /// The next entry; `None` if the bytes do not decode.
    fn next(&mut self, base: u64) -> Option<(Vec<u8>, StreamSummary)> {
        let shared = usize::try_from(self.r.varint().ok()?).ok()?;
        let len = usize::try_from(self.r.varint().ok()?).ok()?;
        if shared > self.name.len() {
            return None;
        }
        self.name.truncate(shared);
        self.name.extend_from_slice(self.r.take(len).ok()?);
        let first_revision = self.r.varint().ok()?;
        let last_revision = first_revision.checked_add(self.r.varint().ok()?)?;
        let last_position = base.checked_add(self.r.varint().ok()?)?;
        Some((
            self.name.clone(),
            StreamSummary {
                first_revision,
                last_revision,
                last_position,
            },
        ))
    }
}

impl<'a> Summary<'a> {
    /// Checks the whole summary: exactly `count` entries that decode, names
    /// valid UTF-8 and strictly ascending, a full name at every restart and
    /// the restart table pointing at them, positions inside the segment's
    /// `positions`, and nothing after the last entry.
    pub(crate) fn open(
        bytes: &'a [u8],
        restarts: &'a [u8],
        count: usize,
        base: u64,
        positions: u64,
    ) -> Result<Self, &'static str> {
        if restarts.len() != 4 * count.div_ceil(RESTART) {
            return Err("stream summary restart table has the wrong size");
        }
        let s = Summary {
            bytes,
            restarts,
            count,
            base,
        };
        let mut c = Cursor {
            r: Reader::new(bytes),
            name: Vec::new(),
        };
        let mut prev: Option<Vec<u8>> = None;
        for i in 0..count {
            let at = bytes.len() - c.r.buf.len();
            if i % RESTART == 0 {
                if s.restart(i / RESTART) != at {
                    return Err("stream summary restart does not point at its entry");
                }
                // A run starts afresh: nothing is shared with the previous name.
                if c.r.buf.first() != Some(&0) {
                    return Err("stream summary run does not start with a full name");
                }
            }
            let (name, summary) = c.next(base).ok_or("stream summary malformed")?;
            if std::str::from_utf8(&name).is_err() {
                return Err("stream name in the summary is not UTF-8");
            }
            if prev.as_ref().is_some_and(|p| *p >= name) {
                return Err("stream summary not sorted by name");
            }
            if summary.last_position - base >= positions {
                return Err("stream summary position past the segment");
            }
            prev = Some(name);
        }
        if !c.r.buf.is_empty() {
            return Err("stream summary has bytes after its last entry");
        }
        Ok(s)
    }

    /// A view of a summary that [`Summary::open`] accepted before (the bytes
    /// of an immutable index file): no checks.
    pub(crate) fn trusted(bytes: &'a [u8], restarts: &'a [u8], count: usize, base: u64) -> Self {
        Summary {
            bytes,
            restarts,
            count,
            base,
        }
    }

    fn restart(&self, run: usize) -> usize {
        le_u32(self.restarts, 4 * run) as usize
    }

    fn run(&self, run: usize) -> Cursor<'a> {
        Cursor {
            r: Reader::new(self.bytes.get(self.restart(run)..).unwrap_or_default()),
            name: Vec::new(),
        }
    }

    /// The ordinal (index in name order) of `name`, if the summary has it.
    pub(crate) fn ordinal(&self, name: &str) -> Option<usize> {
        let runs = self.count.div_ceil(RESTART);
        // The last run whose first name is at or before `name`.
        let first_after = super::partition(runs, |r| {
            self.run(r)
                .next(self.base)
                .is_some_and(|(first, _)| first.as_slice() <= name.as_bytes())
        });
        let run = first_after.checked_sub(1)?;
        let mut c = self.run(run);
        let len = (self.count - run * RESTART).min(RESTART);
        (0..len)
            .map_while(|_| c.next(self.base))
            .position(|(n, _)| n == name.as_bytes())
            .map(|j| run * RESTART + j)
    }

    /// Every entry, in name order.
    pub(crate) fn entries(&self) -> Vec<(String, StreamSummary)> {
        let mut c = Cursor {
            r: Reader::new(self.bytes),
            name: Vec::new(),
        };
        (0..self.count)
            .map_while(|_| c.next(self.base))
            .map(|(n, s)| (String::from_utf8_lossy(&n).into_owned(), s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(first: u64) -> StreamSummary {
        StreamSummary {
            first_revision: first,
            last_revision: first + 2,
            last_position: 1000 + first,
        }
    }

    #[test]
    fn names_are_found_across_runs_and_unknown_names_are_not() {
        let names: Vec<String> = (0..100).map(|i| format!("order-{:05}", i * 3)).collect();
        let streams: Vec<(&str, StreamSummary)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), summary(i as u64)))
            .collect();
        let (bytes, restarts) = encode(&streams, 1000).unwrap();
        // Shared prefixes: far fewer bytes than the names themselves.
        assert!(bytes.len() < 100 * 11, "{} bytes", bytes.len());
        let s = Summary::open(&bytes, &restarts, 100, 1000, 200).unwrap();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(s.ordinal(n), Some(i), "{n}");
        }
        for n in ["", "order-00001", "order-99999", "a", "zzz", "order-0000"] {
            assert_eq!(s.ordinal(n), None, "{n}");
        }
        let all = s.entries();
        assert_eq!(all.len(), 100);
        assert_eq!(all[57], (names[57].clone(), summary(57)));
    }

    #[test]
    fn a_summary_that_lies_is_refused() {
        let names = ["a", "ab", "b"];
        let streams: Vec<(&str, StreamSummary)> = names.iter().map(|n| (*n, summary(1))).collect();
        let (bytes, restarts) = encode(&streams, 1000).unwrap();
        assert!(Summary::open(&bytes, &restarts, 3, 1000, 10).is_ok());
        assert!(
            Summary::open(&bytes, &restarts, 2, 1000, 10).is_err(),
            "one entry left over"
        );
        assert!(
            Summary::open(&bytes, &restarts, 3, 1000, 1).is_err(),
            "position past the segment"
        );
        assert!(
            Summary::open(&bytes, &[1, 0, 0, 0], 3, 1000, 10).is_err(),
            "restart off its entry"
        );
        // The last name, "b", turned into "0": before "ab".
        let mut unsorted = bytes.clone();
        let at = unsorted.iter().rposition(|b| *b == b'b').unwrap();
        unsorted[at] = b'0';
        assert_eq!(
            Summary::open(&unsorted, &restarts, 3, 1000, 10).unwrap_err(),
            "stream summary not sorted by name"
        );
    }
}
