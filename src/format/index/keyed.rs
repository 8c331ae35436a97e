//! Keyed lists: the compact encoding of a version-2 index's stream, type, tag
//! and id sections (format.md, "Keyed lists"). Sorted `(key, revision,
//! position)` entries are cut into blocks of [`BLOCK`]; a directory holds
//! each block's first entry in full, so a lookup binary-searches the
//! directory and decodes one block of delta-coded varints.
//!
//! This module owns the bytes of one such section; it must never know what
//! its keys stand for.

use crate::format::codec::{Reader, le_u32, le_u64, put_varint};

/// Entries per block.
pub(crate) const BLOCK: usize = 64;
/// Bytes of one directory entry: `key: u32`, `revision: u64`, `position: u32`, `data_at: u32`.
const DIR_ENTRY: usize = 20;
/// Bytes before the directory: `entries: u32`, `blocks: u32`.
const HEAD: usize = 8;

/// One entry: a key, a revision (0 in sections without revisions) and a
/// position relative to the segment's base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    /// What the entry is found by (a stream's ordinal, or a 32-bit hash).
    pub key: u32,
    /// Revision in the stream (stream sections only).
    pub rev: u64,
    /// Position minus the segment's base.
    pub pos: u32,
}

/// The change of position between two entries of one key: in sections with
/// revisions it may be negative (zigzag-coded), in the others it is positive.
fn pos_delta(prev: u32, next: u32, with_rev: bool) -> u64 {
    let d = i64::from(next) - i64::from(prev);
    if with_rev {
        ((d << 1) ^ (d >> 63)) as u64
    } else {
        d as u64
    }
}

/// The position after `prev` by a delta [`pos_delta`] wrote.
fn apply_pos_delta(prev: u32, v: u64, with_rev: bool) -> Option<u32> {
    let d = if with_rev {
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    } else {
        i64::try_from(v).ok()?
    };
    u32::try_from(i64::from(prev).checked_add(d)?).ok()
}

/// Appends the section for `entries`, which must be sorted and distinct.
/// Fails (returns false, writing nothing useful) if a length does not fit
/// the section's 32-bit fields.
pub(crate) fn encode(entries: &[Entry], with_rev: bool, out: &mut Vec<u8>) -> bool {
    debug_assert!(entries.windows(2).all(|w| w[0] < w[1]));
    let Ok(count) = u32::try_from(entries.len()) else {
        return false;
    };
    let blocks = entries.len().div_ceil(BLOCK);
    // Fewer blocks than entries, so this fits too.
    let Ok(block_count) = u32::try_from(blocks) else {
        return false;
    };
    let mut dir = Vec::with_capacity(blocks * DIR_ENTRY);
    let mut data = Vec::new();
    for block in entries.chunks(BLOCK) {
        let first = block[0];
        let Ok(data_at) = u32::try_from(data.len()) else {
            return false;
        };
        dir.extend_from_slice(&first.key.to_le_bytes());
        dir.extend_from_slice(&first.rev.to_le_bytes());
        dir.extend_from_slice(&first.pos.to_le_bytes());
        dir.extend_from_slice(&data_at.to_le_bytes());
        let mut prev = first;
        for e in &block[1..] {
            let dk = e.key - prev.key;
            if dk > 0 {
                // Odd: a new key, its distance, then its revision and position in full.
                put_varint(&mut data, (u64::from(dk) << 1) | 1);
                if with_rev {
                    put_varint(&mut data, e.rev);
                }
                put_varint(&mut data, u64::from(e.pos));
            } else {
                // Even: the same key, the position's change (then the revision's).
                put_varint(&mut data, pos_delta(prev.pos, e.pos, with_rev) << 1);
                if with_rev {
                    put_varint(&mut data, e.rev - prev.rev);
                }
            }
            prev = *e;
        }
    }
    if u32::try_from(HEAD + dir.len() + data.len()).is_err() {
        return false;
    }
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&block_count.to_le_bytes());
    out.extend_from_slice(&dir);
    out.extend_from_slice(&data);
    true
}

/// A decoded view of one section (its bytes were checked by [`Keyed::open`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyed<'a> {
    bytes: &'a [u8],
    count: usize,
    blocks: usize,
    with_rev: bool,
}

impl<'a> Keyed<'a> {
    /// Parses the section and checks every entry: the directory fits, each
    /// block decodes to exactly its entries and bytes, entries ascend strictly
    /// across the whole section, and every position is below `positions`.
    pub(crate) fn open(bytes: &'a [u8], with_rev: bool, positions: u64) -> Result<Self, &'static str> {
        if bytes.len() < HEAD {
            return Err("keyed section shorter than its header");
        }
        let count = le_u32(bytes, 0) as usize;
        let blocks = le_u32(bytes, 4) as usize;
        if blocks != count.div_ceil(BLOCK) {
            return Err("keyed section block count does not match its entries");
        }
        if HEAD + blocks * DIR_ENTRY > bytes.len() {
            return Err("keyed section directory past its end");
        }
        let k = Keyed {
            bytes,
            count,
            blocks,
            with_rev,
        };
        let mut prev: Option<Entry> = None;
        let mut expect_at = 0usize;
        for b in 0..blocks {
            if k.data_at(b) != expect_at {
                return Err("keyed block does not start where the previous one ends");
            }
            let (entries, used) = k.decode(b).ok_or("keyed block does not decode")?;
            if entries.len() != k.block_len(b) {
                return Err("keyed block holds the wrong number of entries");
            }
            for e in entries {
                if prev.is_some_and(|p| p >= e) {
                    return Err("keyed entries out of order");
                }
                if u64::from(e.pos) >= positions {
                    return Err("keyed entry past the segment's positions");
                }
                prev = Some(e);
            }
            expect_at += used;
        }
        if HEAD + blocks * DIR_ENTRY + expect_at != bytes.len() {
            return Err("keyed section has bytes after its last block");
        }
        Ok(k)
    }

    /// A view of a section that [`Keyed::open`] accepted before (the bytes
    /// of an immutable index file): no checks. A section too short for its
    /// header is seen as empty.
    pub(crate) fn trusted(bytes: &'a [u8], with_rev: bool) -> Self {
        let (count, blocks) = if bytes.len() >= HEAD {
            (le_u32(bytes, 0) as usize, le_u32(bytes, 4) as usize)
        } else {
            (0, 0)
        };
        Keyed {
            bytes,
            count,
            blocks,
            with_rev,
        }
    }

    /// The last (largest) entry.
    pub(crate) fn last(&self) -> Option<Entry> {
        let b = self.blocks.checked_sub(1)?;
        self.decode(b)?.0.pop()
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    fn block_len(&self, b: usize) -> usize {
        if b + 1 < self.blocks {
            BLOCK
        } else {
            self.count - BLOCK * b
        }
    }

    fn data_start(&self) -> usize {
        HEAD + self.blocks * DIR_ENTRY
    }

    fn data_at(&self, b: usize) -> usize {
        le_u32(self.bytes, HEAD + b * DIR_ENTRY + 16) as usize
    }

    fn first(&self, b: usize) -> Entry {
        let at = HEAD + b * DIR_ENTRY;
        Entry {
            key: le_u32(self.bytes, at),
            rev: le_u64(self.bytes, at + 4),
            pos: le_u32(self.bytes, at + 12),
        }
    }

    /// The entries of block `b` and the data bytes they took; `None` if the
    /// bytes do not decode (never for a section [`Keyed::open`] accepted).
    fn decode(&self, b: usize) -> Option<(Vec<Entry>, usize)> {
        let start = self.data_start().checked_add(self.data_at(b))?;
        let mut r = Reader::new(self.bytes.get(start..)?);
        let before = r.buf.len();
        let n = self.block_len(b);
        let mut out = Vec::with_capacity(n);
        let mut e = self.first(b);
        out.push(e);
        for _ in 1..n {
            e = self.step(&mut r, e)?;
            out.push(e);
        }
        Some((out, before - r.buf.len()))
    }

    /// Index of the first block whose first entry is not below `target`.
    fn first_block_not_below(&self, target: Entry) -> usize {
        super::partition(self.blocks, |b| self.first(b) < target)
    }

    /// Entries with `key` and a revision of at least `from`, ascending, at most `limit`.
    pub(crate) fn forward(&self, key: u32, from: u64, limit: usize) -> Vec<Entry> {
        let target = Entry { key, rev: from, pos: 0 };
        // The target may lie inside the block before the first one at or past it.
        let start = self.first_block_not_below(target).saturating_sub(1);
        self.scan(start)
            .skip_while(|e| *e < target)
            .take_while(|e| e.key == key)
            .take(limit)
            .collect()
    }

    /// The entries from block `b` on, decoded one at a time without
    /// allocating; the scan ends early where the bytes do not decode (never
    /// for a section [`Keyed::open`] accepted).
    fn scan(&self, b: usize) -> impl Iterator<Item = Entry> + '_ {
        let mut block = b;
        let mut left = 0usize;
        let mut e = Entry { key: 0, rev: 0, pos: 0 };
        let mut r = Reader::new(&[]);
        std::iter::from_fn(move || {
            if left == 0 {
                if block >= self.blocks {
                    return None;
                }
                e = self.first(block);
                left = self.block_len(block) - 1;
                r = Reader::new(self.bytes.get(self.data_start().checked_add(self.data_at(block))?..)?);
                block += 1;
                return Some(e);
            }
            left -= 1;
            e = self.step(&mut r, e)?;
            Some(e)
        })
    }

    /// The entry after `e`, read from `r`.
    fn step(&self, r: &mut Reader<'_>, mut e: Entry) -> Option<Entry> {
        let h = r.varint().ok()?;
        if h & 1 == 1 {
            e.key = e.key.checked_add(u32::try_from(h >> 1).ok()?)?;
            e.rev = if self.with_rev { r.varint().ok()? } else { 0 };
            e.pos = u32::try_from(r.varint().ok()?).ok()?;
        } else {
            e.pos = apply_pos_delta(e.pos, h >> 1, self.with_rev)?;
            if self.with_rev {
                e.rev = e.rev.checked_add(r.varint().ok()?)?;
            }
        }
        Some(e)
    }

    /// Entries with `key` and a revision of at most `from`, descending, at most `limit`.
    pub(crate) fn backward(&self, key: u32, from: u64, limit: usize) -> Vec<Entry> {
        let past = Entry {
            key,
            rev: from,
            pos: u32::MAX,
        };
        let mut out = Vec::new();
        // The last block whose first entry is at or before `past`.
        let mut b = super::partition(self.blocks, |b| self.first(b) <= past);
        while b > 0 && out.len() < limit {
            b -= 1;
            let Some((entries, _)) = self.decode(b) else { break };
            for e in entries.into_iter().rev() {
                if e > past {
                    continue;
                }
                if e.key != key || out.len() >= limit {
                    return out;
                }
                out.push(e);
            }
        }
        out
    }

    /// Number of entries with `key`, decoding at most the two blocks its
    /// entries begin and end in (the blocks between hold its entries only).
    pub(crate) fn count(&self, key: u32) -> usize {
        let target = Entry { key, rev: 0, pos: 0 };
        // Blocks `lo..hi` start with the key; the one before may end with it.
        let lo = self.first_block_not_below(target);
        let hi = super::partition(self.blocks, |b| self.first(b).key <= key);
        let in_block = |b: usize| self.scan(b).take(self.block_len(b)).filter(|e| e.key == key).count();
        let mut n = if lo > 0 { in_block(lo - 1) } else { 0 };
        if hi > lo {
            // Each block of `lo..hi - 1` is followed by one that starts with
            // the key too, so it holds nothing else (and is not the last).
            n += (hi - 1 - lo) * BLOCK + in_block(hi - 1);
        }
        n
    }

    /// Positions of the entries with `key` within `from..to`, ascending, in
    /// a section without revisions: decodes only the blocks that hold them.
    pub(crate) fn positions_in(&self, key: u32, from: u32, to: u64) -> Vec<u32> {
        let target = Entry { key, rev: 0, pos: from };
        // The target may lie inside the block before the first one at or past it.
        let start = self.first_block_not_below(target).saturating_sub(1);
        self.scan(start)
            .skip_while(|e| *e < target)
            .take_while(|e| e.key == key && u64::from(e.pos) < to)
            .map(|e| e.pos)
            .collect()
    }

    /// Positions of every entry with `key`, ascending (by revision first, in
    /// stream sections).
    pub(crate) fn positions(&self, key: u32) -> Vec<u32> {
        self.forward(key, 0, usize::MAX).into_iter().map(|e| e.pos).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model_forward(all: &[Entry], key: u32, from: u64, limit: usize) -> Vec<Entry> {
        all.iter()
            .filter(|e| e.key == key && e.rev >= from)
            .take(limit)
            .copied()
            .collect()
    }

    fn model_backward(all: &[Entry], key: u32, from: u64, limit: usize) -> Vec<Entry> {
        all.iter()
            .rev()
            .filter(|e| e.key == key && e.rev <= from)
            .take(limit)
            .copied()
            .collect()
    }

    fn entries(with_rev: bool) -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec((0u32..40, 0u64..30, 0u32..5000), 0..400).prop_map(move |v| {
            let mut v: Vec<Entry> = v
                .into_iter()
                .map(|(key, rev, pos)| Entry {
                    key,
                    rev: if with_rev { rev } else { 0 },
                    pos,
                })
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        })
    }

    proptest! {
        #[test]
        fn lookups_answer_like_a_sorted_list(all in entries(true), key in 0u32..42, from in 0u64..32, limit in 0usize..90) {
            let mut bytes = Vec::new();
            prop_assert!(encode(&all, true, &mut bytes));
            let k = Keyed::open(&bytes, true, 5000).unwrap();
            prop_assert_eq!(k.len(), all.len());
            prop_assert_eq!(k.forward(key, from, limit), model_forward(&all, key, from, limit));
            prop_assert_eq!(k.backward(key, from, limit), model_backward(&all, key, from, limit));
        }

        #[test]
        fn sections_without_revisions_list_positions_by_key(all in entries(false), key in 0u32..42, from in 0u32..5100, width in 0u64..3000) {
            let mut bytes = Vec::new();
            prop_assert!(encode(&all, false, &mut bytes));
            let k = Keyed::open(&bytes, false, 5000).unwrap();
            let want: Vec<u32> = all.iter().filter(|e| e.key == key).map(|e| e.pos).collect();
            prop_assert_eq!(k.count(key), want.len());
            prop_assert_eq!(k.positions(key), want.clone());
            let to = u64::from(from) + width;
            let within: Vec<u32> = want.into_iter().filter(|p| *p >= from && u64::from(*p) < to).collect();
            prop_assert_eq!(k.positions_in(key, from, to), within);
        }

        /// Counts of keys whose entries run over many blocks.
        #[test]
        fn counts_of_long_runs_are_their_entries(v in prop::collection::vec((0u32..3, 0u32..5000), 0..900)) {
            let mut all: Vec<Entry> = v.into_iter().map(|(key, pos)| Entry { key: key * 5, rev: 0, pos }).collect();
            all.sort_unstable();
            all.dedup();
            let mut bytes = Vec::new();
            prop_assert!(encode(&all, false, &mut bytes));
            let k = Keyed::open(&bytes, false, 5000).unwrap();
            for key in 0..12 {
                prop_assert_eq!(k.count(key), all.iter().filter(|e| e.key == key).count(), "key {}", key);
            }
        }

        #[test]
        fn damaged_sections_are_refused_or_answer_without_panicking(all in entries(true), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = Vec::new();
            prop_assert!(encode(&all, true, &mut bytes));
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(k) = Keyed::open(&bytes, true, 5000) {
                let _ = k.forward(3, 0, usize::MAX);
                let _ = k.backward(3, u64::MAX, usize::MAX);
            }
        }
    }

    #[test]
    fn positions_past_the_segment_or_out_of_order_are_refused() {
        let e = |key, pos| Entry { key, rev: 0, pos };
        let mut bytes = Vec::new();
        assert!(encode(&[e(1, 5), e(1, 9)], false, &mut bytes));
        assert!(Keyed::open(&bytes, false, 10).is_ok());
        assert_eq!(
            Keyed::open(&bytes, false, 9).unwrap_err(),
            "keyed entry past the segment's positions"
        );
        // The second entry's delta (+4, written 4 << 1) turned into +0: a duplicate.
        let mut back = bytes.clone();
        assert_eq!(&back[28..], &[8]);
        back[28] = 0;
        assert_eq!(Keyed::open(&back, false, 10).unwrap_err(), "keyed entries out of order");
    }

    #[test]
    fn a_dense_type_costs_about_one_byte_per_entry() {
        let all: Vec<Entry> = (0..10_000u32)
            .map(|p| Entry {
                key: 7,
                rev: 0,
                pos: p * 10,
            })
            .collect();
        let mut bytes = Vec::new();
        assert!(encode(&all, false, &mut bytes));
        assert!(bytes.len() < 10_000 * 3 / 2, "{} bytes", bytes.len());
    }
}
