//! The bloom filters of an index file (format.md, "Index files"): the
//! version-1 to -4 filter over stream names (seven probes by double hashing
//! over the whole filter) and version 5's blocked filter over stream names
//! and event ids (seven bits in one 64-byte block), with the hash an event
//! id goes in under. Also used by the in-memory filter of the ids appended
//! since open.
//!
//! This module only sets and tests bits in bytes it is given; it must never
//! know where a filter lies in a file.

use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Probes of a version-1 to -4 bloom filter per entry.
const BLOOM_PROBES: u64 = 7;

/// Bits a version-5 (blocked) bloom filter sets per entry, all in one block.
const BLOCK_PROBES: usize = 7;

/// Bytes of one block of a version-5 (blocked) bloom filter: a cache line.
pub(crate) const BLOOM_BLOCK: usize = 64;

/// The hash an event id goes into a version-5 bloom filter under (seeded,
/// so that it never equals the hash of a stream name of the same bytes).
pub(crate) fn id_filter_hash(id: &Uuid) -> u64 {
    xxh3_64_with_seed(id.as_bytes(), 0x6964_5f66_696c_7472)
}

/// Bytes of a blocked bloom filter for `items` entries: about 10 bits per
/// entry, in whole blocks, at least one.
pub(crate) fn blocked_bytes_for(items: usize) -> usize {
    (items.saturating_mul(10).div_ceil(8)).div_ceil(BLOOM_BLOCK).max(1) * BLOOM_BLOCK
}

/// The block of `bloom` that `hash` sets bits in, and the seven bits (of
/// the block's 512), for a version-5 filter: one 64-byte block per lookup
/// (one or two cache lines: the section starts where the one before ends).
fn blocked_probes(bloom_len: usize, hash: u64) -> (usize, [u16; BLOCK_PROBES]) {
    let blocks = (bloom_len / BLOOM_BLOCK) as u64;
    #[allow(clippy::cast_possible_truncation, reason = "below the number of blocks, a usize")]
    let block = ((u128::from(hash >> 32) * u128::from(blocks)) >> 32) as usize;
    let mut mixed = hash.rotate_left(21).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut bits = [0u16; BLOCK_PROBES];
    for bit in &mut bits {
        #[allow(clippy::cast_possible_truncation, reason = "nine bits")]
        let b = (mixed & 511) as u16;
        *bit = b;
        mixed >>= 9;
    }
    (block * BLOOM_BLOCK, bits)
}

/// Sets `hash`'s bits in a version-5 (blocked) filter.
pub(crate) fn blocked_insert(bloom: &mut [u8], hash: u64) {
    let (at, bits) = blocked_probes(bloom.len(), hash);
    for bit in bits {
        bloom[at + usize::from(bit / 8)] |= 1 << (bit % 8);
    }
}

/// Whether a version-5 filter may hold `hash` (false: certainly not). An
/// empty or wrongly sized filter says "maybe".
pub(crate) fn blocked_check(bloom: &[u8], hash: u64) -> bool {
    if bloom.is_empty() || !bloom.len().is_multiple_of(BLOOM_BLOCK) {
        return true;
    }
    let (at, bits) = blocked_probes(bloom.len(), hash);
    let block = &bloom[at..at + BLOOM_BLOCK];
    bits.iter()
        .all(|&bit| block[usize::from(bit / 8)] & (1 << (bit % 8)) != 0)
}

/// Bits of a version-1 to -4 bloom filter for `items` entries: about 10 per
/// entry, in whole 64-bit words, at least 64.
pub(crate) fn bloom_bits_for(items: usize) -> u64 {
    ((items as u64 * 10).max(64)).div_ceil(64) * 64
}

/// The `i`-th bit `hash` sets in a version-1 to -4 filter of `bits` bits
/// (double hashing).
fn bloom_probe(hash: u64, i: u64, bits: u64) -> u64 {
    let h2 = hash.rotate_left(32) | 1;
    hash.wrapping_add(i.wrapping_mul(h2)) % bits
}

/// Sets `hash`'s bits in a version-1 to -4 filter.
pub(crate) fn bloom_insert(bloom: &mut [u8], hash: u64) {
    let bits = bloom.len() as u64 * 8;
    for i in 0..BLOOM_PROBES {
        let bit = bloom_probe(hash, i, bits);
        bloom[(bit / 8) as usize] |= 1 << (bit % 8);
    }
}

/// Whether a version-1 to -4 filter may hold `hash` (false: certainly not).
/// An empty filter says "no".
pub(crate) fn bloom_check(bloom: &[u8], hash: u64) -> bool {
    let bits = bloom.len() as u64 * 8;
    bits > 0
        && (0..BLOOM_PROBES).all(|i| {
            let bit = bloom_probe(hash, i, bits);
            bloom[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::hash_str;

    #[test]
    fn bloom_filter_has_no_false_negatives() {
        let mut bloom = vec![0u8; (bloom_bits_for(1000) / 8) as usize];
        for i in 0..1000 {
            bloom_insert(&mut bloom, hash_str(&format!("stream-{i}")));
        }
        assert!((0..1000).all(|i| bloom_check(&bloom, hash_str(&format!("stream-{i}")))));
        let false_pos = (0..10_000)
            .filter(|i| bloom_check(&bloom, hash_str(&format!("other-{i}"))))
            .count();
        assert!(false_pos < 300, "false positive rate too high: {false_pos}/10000");
    }

    #[test]
    fn the_blocked_filter_has_no_false_negatives_and_few_false_positives() {
        let ids: Vec<Uuid> = (0..10_000u128).map(|i| Uuid::from_u128(i * 7919 + 3)).collect();
        let mut bloom = vec![0u8; blocked_bytes_for(ids.len())];
        assert_eq!(bloom.len() % BLOOM_BLOCK, 0);
        for id in &ids {
            blocked_insert(&mut bloom, id_filter_hash(id));
        }
        assert!(ids.iter().all(|id| blocked_check(&bloom, id_filter_hash(id))));
        let false_pos = (0..100_000u128)
            .filter(|i| blocked_check(&bloom, id_filter_hash(&Uuid::from_u128(u128::MAX - i))))
            .count();
        assert!(false_pos < 3_000, "false positive rate too high: {false_pos}/100000");
        // Too small to be a filter of whole blocks: "maybe", never a panic.
        assert!(blocked_check(&[], 1) && blocked_check(&[0u8; 10], 1));
        assert_eq!(blocked_bytes_for(0), BLOOM_BLOCK);
    }
}
