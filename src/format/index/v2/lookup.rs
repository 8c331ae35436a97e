//! The answers of a version-2 to -5 index file ([`Lookup`] for [`IndexV2`]):
//! locations, stream, type, tag and id lookups, read in place from the
//! mapped file, each section checked on its first use.
//!
//! This module only reads the mapped index; it must never write.

use uuid::Uuid;

use super::names::decode_names;
use super::{IndexV2, LOC_BLOCK, Part};
use crate::format::index::bloom::{blocked_check, bloom_check, id_filter_hash};
use crate::format::index::{Lookup, StreamSummary, TagKey, TagOwner, TypeCatalog, fold32, hash_str, id_key};

impl Lookup for IndexV2 {
    fn base(&self) -> u64 {
        self.base
    }
    fn next_position(&self) -> u64 {
        self.base + self.count as u64
    }
    fn location(&self, position: u64) -> Option<(u64, u64)> {
        if !self.ok(Part::Locations) {
            return None;
        }
        let i = self.index_of(position)?;
        let (block, j) = (i / LOC_BLOCK, i % LOC_BLOCK);
        let block_len = (self.count - block * LOC_BLOCK).min(LOC_BLOCK);
        let offsets = self.block_offsets(block, (j + 1).min(block_len - 1))?;
        Some(self.range_in(block, &offsets, i))
    }
    fn locations(&self, positions: &[u64]) -> Vec<Option<(u64, u64)>> {
        if !self.ok(Part::Locations) {
            return vec![None; positions.len()];
        }
        // Each block's offsets are decoded once for every position in it.
        let mut decoded: Option<(usize, Vec<u64>)> = None;
        positions
            .iter()
            .map(|p| {
                let i = self.index_of(*p)?;
                let block = i / LOC_BLOCK;
                if decoded.as_ref().is_none_or(|(b, _)| *b != block) {
                    let block_len = (self.count - block * LOC_BLOCK).min(LOC_BLOCK);
                    decoded = Some((block, self.block_offsets(block, block_len - 1)?));
                }
                let (_, offsets) = decoded.as_ref()?;
                Some(self.range_in(block, offsets, i))
            })
            .collect()
    }
    fn time_bounds(&self, position: u64) -> Option<(i64, i64)> {
        if !self.ok(Part::Locations) {
            return None;
        }
        let i = self.index_of(position)?;
        let (_, _, lo, hi) = self.loc_dir(i / LOC_BLOCK);
        Some((lo, hi))
    }
    fn time_range(&self) -> Option<(i64, i64)> {
        (self.count > 0).then_some((self.min_ts, self.max_ts))
    }
    fn stream_entries(&self, stream: &str, from: u64, forward: bool, limit: usize) -> Vec<(u64, u64)> {
        if !self.ok(Part::Summary) || !self.ok(Part::Streams) {
            return Vec::new();
        }
        let Some(key) = self.ordinal(stream) else {
            return Vec::new();
        };
        let k = self.keyed(self.streams, true);
        let entries = if forward {
            k.forward(key, from, limit)
        } else {
            k.backward(key, from, limit)
        };
        entries
            .into_iter()
            .map(|e| (e.rev, self.base + u64::from(e.pos)))
            .collect()
    }
    fn type_positions(&self, hash: u64) -> Vec<u64> {
        if !self.ok(Part::Types) {
            return Vec::new();
        }
        self.global(self.keyed(self.types, false).positions(fold32(hash)))
    }
    fn type_count(&self, hash: u64) -> u64 {
        if !self.ok(Part::Types) {
            return 0;
        }
        self.keyed(self.types, false).count(fold32(hash)) as u64
    }
    fn type_positions_in(&self, hash: u64, lo: u64, hi: u64) -> Vec<u64> {
        if !self.ok(Part::Types) || hi <= lo.max(self.base) {
            return Vec::new();
        }
        // Relative to the base: entries hold 32-bit positions, so a start
        // past them finds none.
        let Ok(from) = u32::try_from(lo.saturating_sub(self.base)) else {
            return Vec::new();
        };
        let to = hi - self.base;
        self.global(self.keyed(self.types, false).positions_in(fold32(hash), from, to))
    }
    fn type_catalog(&self) -> Option<TypeCatalog> {
        if self.version < 3 || !self.ok(Part::TypeNames) {
            return None;
        }
        let names = decode_names(self.section(self.type_names), self.meta_fingerprint, self.version)
            .ok()?
            .types;
        let keys: std::collections::HashSet<u32> = names.iter().map(|n| fold32(hash_str(n))).collect();
        Some(TypeCatalog {
            // The type lookup files each name under a 32-bit key: two names on one key answer for both.
            exact: keys.len() == names.len(),
            names: names.into_iter().map(str::to_string).collect(),
        })
    }
    fn tag_positions(&self, hash: u64) -> Vec<u64> {
        if !self.ok(Part::Tags) {
            return Vec::new();
        }
        self.global(self.keyed(self.tags, false).positions(fold32(hash)))
    }
    fn tag_owner(&self, key: &TagKey) -> TagOwner {
        if self.version < 4 || !self.ok(Part::TypeNames) {
            return TagOwner::Unknown;
        }
        match decode_names(self.section(self.type_names), self.meta_fingerprint, self.version) {
            Ok(names) if names.shared_tags.binary_search(&fold32(key.hash)).is_err() => TagOwner::One,
            _ => TagOwner::Unknown,
        }
    }
    fn id_positions(&self, id: &Uuid) -> Vec<u64> {
        // Version 5's filter holds every id of the segment: most lookups of
        // an id the segment lacks end here, without decoding an ids block.
        // A damaged filter says "maybe", and the ids section answers.
        if self.version >= 5
            && *self.ids_filter.get_or_init(|| self.check(Part::Bloom).is_none())
            && !blocked_check(self.section(self.bloom), id_filter_hash(id))
        {
            return Vec::new();
        }
        if !self.ok(Part::Ids) {
            return Vec::new();
        }
        self.global(self.keyed(self.ids, false).positions(id_key(id)))
    }
    fn ids_exact(&self) -> bool {
        false
    }
    fn may_contain_stream(&self, hash: u64) -> bool {
        // A damaged bloom filter says "maybe" (and the read reports the damage).
        self.stream_count > 0
            && (!self.ok(Part::Bloom)
                || if self.version >= 5 {
                    blocked_check(self.section(self.bloom), hash)
                } else {
                    bloom_check(self.section(self.bloom), hash)
                })
    }
    fn streams(&self) -> Vec<(String, StreamSummary)> {
        if !self.ok(Part::Summary) {
            return Vec::new();
        }
        self.summary().entries()
    }
    fn meta_fingerprint(&self) -> u64 {
        self.meta_fingerprint
    }
    fn event_count(&self) -> Option<u64> {
        Some(self.indexed)
    }
    fn meta_field_names(&self) -> Option<Vec<String>> {
        if self.version < 3 || !self.ok(Part::TypeNames) {
            return None;
        }
        let names = decode_names(self.section(self.type_names), self.meta_fingerprint, self.version).ok()?;
        Some(names.fields.into_iter().map(str::to_string).collect())
    }
}
