//! The top-level string fields of a JSON object, as metadata filters and the
//! metadata index both read them: the one rule, so that the index names an
//! event exactly when a filter on the same field admits it (format.md,
//! "Indexed metadata fields").
//!
//! One pass over the document: the values of the named keys are decoded,
//! every other value is skipped with a syntax check only (so a number out of
//! `f64`'s range elsewhere does not make the document unreadable), and a key
//! that appears twice counts with its last value. This module owns that
//! rule; it must never decide which fields are indexed.

/// The string value of each of `names` (which must be distinct) at the top
/// level of the JSON object `doc`, in their order: `None` where the key is
/// absent or its last value is not a string. `None` for the whole answer if
/// `doc` is not one well-formed JSON object (trailing whitespace allowed).
pub(crate) fn string_fields<S: AsRef<str>>(doc: &[u8], names: &[S]) -> Option<Vec<Option<String>>> {
    let mut de = serde_json::Deserializer::from_slice(doc);
    let picked = serde::de::DeserializeSeed::deserialize(Picker { names }, &mut de).ok()?;
    de.end().ok()?;
    Some(picked)
}

/// Reads a JSON object, keeping the last string value of each of `names`.
struct Picker<'a, S> {
    names: &'a [S],
}

impl<'de, S: AsRef<str>> serde::de::DeserializeSeed<'de> for Picker<'_, S> {
    type Value = Vec<Option<String>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: AsRef<str>> serde::de::Visitor<'de> for Picker<'_, S> {
    type Value = Vec<Option<String>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut out = vec![None; self.names.len()];
        while let Some(at) = map.next_key_seed(FieldOf { names: self.names })? {
            match at {
                Some(i) => {
                    out[i] = match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::String(s) => Some(s),
                        _ => None,
                    };
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// Reads an object key: the index of the name it is, if any.
struct FieldOf<'a, S> {
    names: &'a [S],
}

impl<'de, S: AsRef<str>> serde::de::DeserializeSeed<'de> for FieldOf<'_, S> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, S: AsRef<str>> serde::de::Visitor<'de> for FieldOf<'_, S> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.names.iter().position(|n| n.as_ref() == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a full parse into a JSON value finds, where it can parse.
    fn full(doc: &[u8], names: &[&str]) -> Option<Vec<Option<String>>> {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(doc) else {
            return None;
        };
        Some(
            names
                .iter()
                .map(|n| map.get(*n).and_then(|v| v.as_str()).map(str::to_string))
                .collect(),
        )
    }

    /// Escapes decoded, nesting and other keys skipped, last value of a
    /// repeated key, malformed documents refused: as a full parse reads them.
    #[test]
    fn fields_agree_with_a_full_parse() {
        let names = ["actor", "tenant"];
        for doc in [
            &br#"{"actor":"a\"b\u00e9","x":[1,{"actor":"no"}],"tenant":"t"}"#[..],
            br#" { "tenant" : "t\n" , "actor" : "" } "#,
            br#"{"act\u006fr":"escaped key"}"#,
            br#"{"actor":"a","actor":"b"}"#,
            br#"{"actor":1,"tenant":null}"#,
            br#"{"actor":"a"} trailing"#,
            br#"{"actor":"a""#,
            br#"{"actor":"a",}"#,
            br#"{"x":[1,2,}"#,
            br#"{"x":"\u12"}"#,
            br#"["actor","a"]"#,
            b"",
        ] {
            assert_eq!(
                string_fields(doc, &names),
                full(doc, &names),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    /// A value that a full parse refuses but that is well-formed JSON (a
    /// number out of `f64`'s range) does not hide the other fields.
    #[test]
    fn an_out_of_range_number_elsewhere_does_not_hide_a_field() {
        let doc = br#"{"x":1e999,"actor":"big"}"#;
        assert_eq!(full(doc, &["actor"]), None);
        assert_eq!(string_fields(doc, &["actor"]), Some(vec![Some("big".to_string())]));
    }
}
