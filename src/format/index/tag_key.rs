//! The key a tag or an indexed metadata value is filed under in the tag
//! postings, and what an index can say of whose entries a key holds (see
//! format.md, "Shared tag keys"): the 64-bit hash the postings are keyed by,
//! and a second 64-bit check, taken with a seed per kind, that tells two tags
//! or values on one hash apart (and a tag apart from a metadata value with the
//! same bytes). This module owns that derivation; it must never decide which
//! metadata fields are indexed.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Seed of a tag's check.
const TAG_SEED: u64 = 0x7461_6773; // "tags"
/// Seed of a metadata value's check.
const META_SEED: u64 = 0x6d65_7461; // "meta"

/// What a posting key was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// An event's tag.
    Tag,
    /// An indexed metadata field's string value.
    Metadata,
}

/// A tag-posting key: the hash entries are filed under, and a second hash
/// of the same bytes that tells two keys on one hash apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagKey {
    /// XXH3-64 of the key's bytes (seed 0): what postings are filed under.
    pub hash: u64,
    /// XXH3-64 of the same bytes with a seed for its kind.
    pub check: u64,
}

impl TagKey {
    /// The key of the tag `tag`.
    pub fn tag(tag: &str) -> Self {
        TagKey::of_bytes(tag.as_bytes(), KeyKind::Tag)
    }

    /// The key of `bytes` made from a `kind`.
    pub(crate) fn of_bytes(bytes: &[u8], kind: KeyKind) -> Self {
        let seed = match kind {
            KeyKind::Tag => TAG_SEED,
            KeyKind::Metadata => META_SEED,
        };
        TagKey {
            hash: xxh3_64(bytes),
            check: xxh3_64_with_seed(bytes, seed),
        }
    }
}

/// Whose entries an index holds under a tag key's hash (or the 32-bit key a
/// sealed file folds it to): what a count needs to know to take the number
/// of entries as the number of events without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOwner {
    /// The index cannot tell (files before version 4, or two tags or values
    /// share the key): every entry is a candidate to confirm.
    Unknown,
    /// Every entry comes from one and the same tag or value, not recorded
    /// which: one entry confirmed against its frame confirms them all, one
    /// refused refuses them all.
    One,
    /// Every entry comes from the key asked for (`true`), or none does.
    Known(bool),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_tag_hash_and_the_check_tells_kinds_apart() {
        assert_eq!(TagKey::tag("vip").hash, super::super::hash_str("vip"));
        let as_tag = TagKey::of_bytes(b"x", KeyKind::Tag);
        let as_meta = TagKey::of_bytes(b"x", KeyKind::Metadata);
        assert_eq!(as_tag.hash, as_meta.hash);
        assert_ne!(as_tag.check, as_meta.check);
        assert_ne!(TagKey::tag("a").check, TagKey::tag("b").check);
    }
}
