//! A bounded cache of the decompressed blocks of compressed segments, shared
//! by every reader of one store.
//!
//! A block is keyed by the id of the [`crate::format::compressed::Compressed`]
//! it belongs to (unique for the life of the process: a rewritten or
//! recompressed file is opened with a new id, so an entry can never answer for
//! other bytes) and its index in that file's block table. Eviction is CLOCK
//! over a byte budget. The lock is held only to look up, insert or evict, never
//! while a block is decompressed. This module must never decompress, read a
//! file or judge a block: callers insert only blocks that decompressed to the
//! length their table gives.

use std::collections::HashMap;

use bytes::Bytes;
use parking_lot::Mutex;

/// Which block: the id of its segment's block table, and the block's index in it.
pub type BlockKey = (u64, usize);

/// The decompressed blocks kept for reuse, up to a byte budget.
pub struct BlockCache {
    capacity: usize,
    inner: Mutex<Clock>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.inner.lock();
        f.debug_struct("BlockCache")
            .field("capacity", &self.capacity)
            .field("bytes", &c.bytes)
            .field("blocks", &c.map.len())
            .finish()
    }
}

/// One cached block.
struct Slot {
    key: BlockKey,
    data: Bytes,
    /// Read since the hand last passed: spared once.
    referenced: bool,
}

/// Buffers of evicted blocks kept for the next decompressions, at most.
const SPARES: usize = 4;

/// The CLOCK state: slots in a ring, where each key is, and the bytes held.
#[derive(Default)]
struct Clock {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    map: HashMap<BlockKey, usize>,
    hand: usize,
    bytes: usize,
    /// Buffers of evicted blocks no reader held any more, emptied, for
    /// [`BlockCache::buffer`] (outside the byte budget; at most [`SPARES`]).
    spare: Vec<Vec<u8>>,
}

impl Clock {
    /// Keeps the buffer of an evicted block for a later decompression, if no
    /// reader holds any of it and fewer than [`SPARES`] are kept.
    fn keep_buffer(&mut self, data: Bytes) {
        if self.spare.len() < SPARES
            && let Ok(unique) = data.try_into_mut()
        {
            let mut unique = unique;
            // Emptied first: made into a `Vec`, its bytes would be moved.
            unique.clear();
            self.spare.push(Vec::from(unique));
        }
    }

    /// Evicts one block the hand finds unreferenced; false if there is none left.
    fn evict_one(&mut self) -> bool {
        if self.map.is_empty() || self.slots.is_empty() {
            return false;
        }
        // Two turns at most: the first clears every reference bit.
        for _ in 0..2 * self.slots.len() {
            let at = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            match &mut self.slots[at] {
                Some(s) if s.referenced => s.referenced = false,
                Some(_) => {
                    if let Some(s) = self.slots[at].take() {
                        self.bytes -= s.data.len();
                        self.map.remove(&s.key);
                        self.free.push(at);
                        self.keep_buffer(s.data);
                    }
                    return true;
                }
                None => {}
            }
        }
        false
    }
}

impl BlockCache {
    /// A cache holding up to `capacity` bytes of decompressed blocks (0: none).
    pub fn new(capacity: usize) -> Self {
        BlockCache {
            capacity,
            inner: Mutex::new(Clock::default()),
        }
    }

    /// The byte budget.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of blocks held now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Blocks held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// True if no block is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block, if held (and marks it as read).
    pub fn get(&self, key: BlockKey) -> Option<Bytes> {
        let mut c = self.inner.lock();
        let at = *c.map.get(&key)?;
        let slot = c.slots.get_mut(at)?.as_mut()?;
        slot.referenced = true;
        Some(slot.data.clone())
    }

    /// An empty buffer with room for `len` bytes, in which to decompress a
    /// block: the buffer of an evicted block if one of about that size is
    /// spare (a new allocation per block costs a stream read more than its
    /// cache lookups do), else a new one.
    pub fn buffer(&self, len: usize) -> Vec<u8> {
        let mut c = self.inner.lock();
        // Close to `len` only: a cached block keeps its whole buffer, and the
        // budget counts its length.
        match c
            .spare
            .iter()
            .position(|b| b.capacity() >= len && b.capacity() - len <= len / 8)
        {
            Some(at) => c.spare.swap_remove(at),
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps a decompressed block, evicting others to stay within the budget.
    /// A block larger than an eighth of the budget is not kept (it would push
    /// out many smaller ones for one read).
    pub fn insert(&self, key: BlockKey, data: Bytes) {
        if data.is_empty() || data.len() > self.capacity / 8 {
            return;
        }
        let mut c = self.inner.lock();
        if c.map.contains_key(&key) {
            return; // Another reader decompressed it at the same time.
        }
        while c.bytes + data.len() > self.capacity {
            if !c.evict_one() {
                return;
            }
        }
        c.bytes += data.len();
        let slot = Some(Slot {
            key,
            data,
            referenced: false,
        });
        let at = match c.free.pop() {
            Some(at) => {
                c.slots[at] = slot;
                at
            }
            None => {
                c.slots.push(slot);
                c.slots.len() - 1
            }
        };
        c.map.insert(key, at);
    }

    /// Drops every block of the block table `id` (its segment was replaced or removed).
    pub fn forget(&self, id: u64) {
        let mut c = self.inner.lock();
        let Clock {
            slots,
            free,
            map,
            bytes,
            ..
        } = &mut *c;
        map.retain(|key, at| {
            if key.0 != id {
                return true;
            }
            if let Some(s) = slots.get_mut(*at).and_then(Option::take) {
                *bytes -= s.data.len();
            }
            free.push(*at);
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n])
    }

    #[test]
    fn a_block_read_back_is_the_block_inserted() {
        let c = BlockCache::new(1 << 20);
        c.insert((1, 0), block(1000, 7));
        c.insert((2, 0), block(1000, 9));
        assert_eq!(c.get((1, 0)).unwrap(), block(1000, 7));
        assert_eq!(c.get((2, 0)).unwrap(), block(1000, 9));
        assert!(c.get((1, 1)).is_none());
        assert_eq!(c.bytes(), 2000);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_budget() {
        let c = BlockCache::new(64 * 1024);
        for i in 0..1000usize {
            c.insert((1, i), block(1000 + (i % 7) * 100, 1));
            assert!(c.bytes() <= 64 * 1024, "{} bytes after {i}", c.bytes());
        }
        assert!(c.len() > 30, "{} blocks held", c.len());
    }

    #[test]
    fn a_block_read_again_outlives_blocks_read_once() {
        let c = BlockCache::new(10 * 1000);
        c.insert((1, 0), block(1000, 1));
        for i in 1..100usize {
            assert!(c.get((1, 0)).is_some(), "hot block evicted before insert {i}");
            c.insert((1, i), block(1000, 2));
        }
    }

    #[test]
    fn large_blocks_and_a_zero_budget_keep_nothing() {
        let c = BlockCache::new(8000);
        c.insert((1, 0), block(1001, 1));
        assert!(c.is_empty());
        let none = BlockCache::new(0);
        none.insert((1, 0), block(10, 1));
        assert!(none.get((1, 0)).is_none());
    }

    #[test]
    fn an_evicted_block_nobody_holds_lends_its_buffer_to_the_next_decompression() {
        let c = BlockCache::new(16 * 1000);
        let first = Bytes::from(vec![1u8; 1000]);
        let at = first.as_ptr();
        c.insert((1, 0), first);
        for i in 1..=16usize {
            c.insert((1, i), block(1000, 2));
        }
        assert!(c.get((1, 0)).is_none(), "evicted");
        // A chunk of that size taken first: had the evicted buffer been freed,
        // the allocator would hand it out here, not to the cache's new buffer.
        let decoy: Vec<u8> = Vec::with_capacity(1000);
        // Some evicted buffer of that size comes back empty; the first one among them.
        let spares: Vec<Vec<u8>> = (0..SPARES).map(|_| c.buffer(1000)).collect();
        assert!(spares.iter().all(|b| b.is_empty() && b.capacity() >= 1000));
        assert!(
            spares.iter().any(|b| b.as_ptr() == at),
            "the evicted block's buffer is reused"
        );
        assert_ne!(decoy.as_ptr(), at);
        // One still held by a reader is not handed out, once evicted.
        let held = c.get((1, 16)).unwrap();
        for i in 17..200usize {
            c.insert((1, i), block(1000, 3));
        }
        assert!(c.get((1, 16)).is_none(), "the held block is evicted");
        let handed: Vec<Vec<u8>> = (0..2 * SPARES).map(|_| c.buffer(1000)).collect();
        assert!(handed.iter().all(|b| b.as_ptr() != held.as_ptr()));
        assert_eq!(held, block(1000, 2));
        // Nor one much larger than asked for (a cached block keeps its whole buffer).
        for i in 200..240usize {
            c.insert((1, i), block(1000, 4));
        }
        assert!(c.buffer(500).capacity() < 1000);
        assert!(c.buffer(100_000).capacity() >= 100_000);
    }

    #[test]
    fn forgetting_a_segment_drops_its_blocks_only() {
        let c = BlockCache::new(1 << 20);
        for i in 0..10usize {
            c.insert((1, i), block(100, 1));
            c.insert((2, i), block(100, 2));
        }
        c.forget(1);
        assert_eq!(c.len(), 10);
        assert_eq!(c.bytes(), 1000);
        assert!(c.get((1, 3)).is_none());
        assert_eq!(c.get((2, 3)).unwrap(), block(100, 2));
        // Freed slots are reused.
        c.insert((3, 0), block(100, 3));
        assert_eq!(c.get((3, 0)).unwrap(), block(100, 3));
    }
}
