//! Indexed metadata fields: which top-level keys of an event's JSON metadata
//! a store indexes, the tag-posting key each `field = "value"` pair is filed
//! under, and the fingerprint an index file records of the field list (see
//! format.md, "Indexed metadata fields").
//!
//! This module owns the derivation of those entries, the one rule every index
//! build path (append, recovery, scavenging, repair, verify) goes through; it
//! must never decide whether a read uses them.

use xxhash_rust::xxh3::xxh3_64;

use super::tag_key::{KeyKind, TagKey};

/// The metadata fields a store indexes: names sorted, each once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaFields {
    names: Vec<String>,
    /// [`MetaFields::fingerprint`], computed once.
    fingerprint: u64,
}

/// What prefixes the bytes hashed into a metadata key. Tags are checked
/// UTF-8 text; the NUL bytes keep `field`/`value` pairs apart from every tag
/// that does not itself hold NUL (a collision only costs a confirmed read).
const KEY_PREFIX: &[u8] = b"\0annal.meta\0";

impl MetaFields {
    /// The fields `names`, sorted and deduplicated (their order is not significant).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let mut names: Vec<String> = names.iter().map(|n| n.as_ref().to_string()).collect();
        names.sort_unstable();
        names.dedup();
        let fingerprint = fingerprint_of(&names);
        MetaFields { names, fingerprint }
    }

    /// The field names, sorted, each once.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// True when no field is indexed.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// True if `field` is indexed.
    pub fn contains(&self, field: &str) -> bool {
        self.names.binary_search_by(|n| n.as_str().cmp(field)).is_ok()
    }

    /// The fingerprint an index file records (header bytes 116..124): 0 for
    /// no field, else the XXH3-64 of the sorted names each followed by a NUL
    /// byte (1 should that hash be 0).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The tag-posting keys of an event whose metadata is `metadata`: one
    /// per indexed field whose top-level value is a JSON string, sorted.
    /// Metadata that is not a JSON object, and values of any other JSON type
    /// (numbers, booleans, null, arrays, objects), give none. The values are
    /// read by the rule a metadata filter reads them with
    /// (`json_fields::string_fields`: the last value of a repeated key, the
    /// whole document as strict as a full parse), so that the index names an
    /// event exactly when a filter on the same field and value admits it.
    pub fn keys(&self, metadata: &[u8]) -> Vec<TagKey> {
        if self.names.is_empty() || metadata.is_empty() {
            return Vec::new();
        }
        let Some(values) = crate::json_fields::string_fields(metadata, &self.names) else {
            return Vec::new();
        };
        let mut keys: Vec<TagKey> = self
            .names
            .iter()
            .zip(values)
            .filter_map(|(n, v)| v.map(|v| meta_tag_key(n, &v)))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

fn fingerprint_of(names: &[String]) -> u64 {
    if names.is_empty() {
        return 0;
    }
    let mut bytes = Vec::new();
    for n in names {
        bytes.extend_from_slice(n.as_bytes());
        bytes.push(0);
    }
    xxh3_64(&bytes).max(1)
}

/// The tag-posting key of metadata field `field` holding the string `value`:
/// XXH3-64 of `"\0annal.meta\0" field "\0" value`.
pub fn meta_key(field: &str, value: &str) -> u64 {
    meta_tag_key(field, value).hash
}

/// [`meta_key`] with its check (see [`TagKey`]).
pub fn meta_tag_key(field: &str, value: &str) -> TagKey {
    let mut bytes = Vec::with_capacity(KEY_PREFIX.len() + field.len() + 1 + value.len());
    bytes.extend_from_slice(KEY_PREFIX);
    bytes.extend_from_slice(field.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(value.as_bytes());
    TagKey::of_bytes(&bytes, KeyKind::Metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How tags are hashed (the index's `hash_str`).
    fn hash_str(s: &str) -> u64 {
        xxh3_64(s.as_bytes())
    }

    fn hashes(keys: &[TagKey]) -> Vec<u64> {
        keys.iter().map(|k| k.hash).collect()
    }

    fn fields() -> MetaFields {
        MetaFields::new(&["actor", "tenant", "actor"])
    }

    #[test]
    fn string_values_of_indexed_top_level_fields_become_keys() {
        let f = fields();
        let keys = hashes(&f.keys(br#"{"actor":"agent-7","tenant":"t1","other":"x"}"#));
        let mut want = vec![meta_key("actor", "agent-7"), meta_key("tenant", "t1")];
        want.sort_unstable();
        assert_eq!(keys, want);
        // Not indexed, so no key.
        assert!(!keys.contains(&meta_key("other", "x")));
    }

    #[test]
    fn other_json_types_and_other_shapes_give_no_key() {
        let f = fields();
        for m in [
            &br#"{"actor":7}"#[..],
            br#"{"actor":true}"#,
            br#"{"actor":null}"#,
            br#"{"actor":["agent-7"]}"#,
            br#"{"actor":{"id":"agent-7"}}"#,
            br#"{"nested":{"actor":"agent-7"}}"#,
            br#"["actor","agent-7"]"#,
            br#""agent-7""#,
            b"not json",
            b"",
        ] {
            assert!(f.keys(m).is_empty(), "{}", String::from_utf8_lossy(m));
        }
    }

    #[test]
    fn a_repeated_key_counts_with_its_last_value_as_the_filter_reads_it() {
        let f = fields();
        let m = br#"{"actor":"a","actor":"b"}"#;
        assert_eq!(hashes(&f.keys(m)), vec![meta_key("actor", "b")]);
        assert!(f.keys(br#"{"actor":"a","actor":1}"#).is_empty());
    }

    /// The keys name exactly the events a metadata filter admits, documents
    /// a full parse refuses (a number out of `f64`'s range elsewhere) included.
    #[test]
    fn keys_name_what_the_metadata_filter_admits() {
        let f = fields();
        for m in [
            &br#"{"actor":"a\"b\u00e9","x":[1,{"actor":"no"}],"tenant":"t"}"#[..],
            br#" { "tenant" : "t\n" , "actor" : "" } "#,
            br#"{"act\u006fr":"escaped key"}"#,
            br#"{"actor":"a"} trailing"#,
            br#"{"actor":"a""#,
            br#"{"actor":"a",}"#,
            br#"{"x":[1,2,}"#,
            br#"{"x":"\u12"}"#,
            br#"{"x":1e999,"actor":"big"}"#,
        ] {
            let keys = hashes(&f.keys(m));
            for (field, value) in [
                ("actor", "a\"b\u{e9}"),
                ("tenant", "t"),
                ("tenant", "t\n"),
                ("actor", ""),
                ("actor", "escaped key"),
                ("actor", "a"),
                ("actor", "big"),
            ] {
                let admitted = crate::query::Filter::all()
                    .with_metadata(field, value)
                    .admits_metadata(m);
                assert_eq!(
                    keys.contains(&meta_key(field, value)),
                    admitted,
                    "{field}={value} in {}",
                    String::from_utf8_lossy(m)
                );
            }
        }
    }

    #[test]
    fn keys_differ_from_tags_and_between_fields() {
        assert_ne!(meta_key("actor", "x"), meta_key("tenant", "x"));
        assert_ne!(meta_key("actor", "x"), hash_str("actor"));
        assert_ne!(meta_key("actor", "x"), hash_str("x"));
        assert_ne!(meta_key("actor", "x"), hash_str("actor\0x"));
        assert_ne!(meta_key("ab", "c"), meta_key("a", "bc"));
    }

    #[test]
    fn the_fingerprint_ignores_order_and_repeats_and_is_zero_for_none() {
        assert_eq!(MetaFields::default().fingerprint(), 0);
        assert_eq!(MetaFields::new::<&str>(&[]).fingerprint(), 0);
        let a = MetaFields::new(&["tenant", "actor"]);
        assert_eq!(a, fields());
        assert_eq!(a.fingerprint(), fields().fingerprint());
        assert_ne!(a.fingerprint(), 0);
        assert_ne!(a.fingerprint(), MetaFields::new(&["actor"]).fingerprint());
        // Names are delimited: ["ab"] is not ["a", "b"].
        assert_ne!(
            MetaFields::new(&["ab"]).fingerprint(),
            MetaFields::new(&["a", "b"]).fingerprint()
        );
        assert!(a.contains("actor") && a.contains("tenant") && !a.contains("other"));
    }
}
