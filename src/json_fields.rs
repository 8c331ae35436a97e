//! The top-level string fields of a JSON object, as metadata filters and the
//! metadata index both read them: the one rule, so that the index names an
//! event exactly when a filter on the same field admits it (format.md,
//! "Indexed metadata fields").
//!
//! One pass over the document, as strict as a full parse into a JSON value
//! (numbers within `f64`'s range, strings valid UTF-8 without lone
//! surrogates, nesting at most 128 deep), every value checked the same way
//! whether its key is asked for or not, so that which fields are asked for
//! never changes whether a document reads; only the strings of the named keys
//! are kept, and a key that appears twice counts with its last value. This
//! module owns that rule; it must never decide which fields are indexed.

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

/// Whether `doc` is one JSON value (trailing whitespace allowed) read as
/// strictly as a full parse into a JSON value reads it: numbers within
/// `f64`'s range, strings without lone surrogates, nesting at most 128
/// deep. Lenient parsers take
/// `"\ud800"` or `1e999`; strict ones (most languages' JSON libraries) refuse
/// the whole document, so a store that serves such an event as JSON breaks
/// every page of events holding it. It never builds the value.
pub fn is_strict_json(doc: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(doc);
    <Checked as serde::Deserialize>::deserialize(&mut de).is_ok() && de.end().is_ok()
}

/// Whether `doc` may hold what a lenient JSON parser takes and a strict one
/// refuses (see [`is_strict_json`]): an escape of a UTF-16 surrogate
/// (`\\u` then `d`), a number with an exponent, or a run of more than 300
/// digits. False means [`is_strict_json`] needs no asking once `doc` parsed
/// at all; true only that it may (a string holding `1e5` says true too).
/// One pass over the bytes, far cheaper than a parse.
pub fn may_need_strict_check(doc: &[u8]) -> bool {
    const LONG: usize = 300;
    let surrogate = memchr::memchr_iter(b'\\', doc)
        .any(|i| doc.get(i + 1) == Some(&b'u') && doc.get(i + 2).is_some_and(|c| c | 0x20 == b'd'));
    let exponent = || memchr::memchr2_iter(b'e', b'E', doc).any(|i| i > 0 && doc[i - 1].is_ascii_digit());
    // A run of more than LONG digits holds a byte at a multiple of LONG + 1.
    let long_run = || {
        (0..doc.len()).step_by(LONG + 1).any(|k| {
            doc[k].is_ascii_digit() && {
                let before = doc[..k].iter().rev().take_while(|b| b.is_ascii_digit()).count();
                let after = doc[k..].iter().take_while(|b| b.is_ascii_digit()).count();
                before + after > LONG
            }
        })
    };
    surrogate || exponent() || long_run()
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
                    map.next_value::<Checked>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A value read as strictly as a full parse reads it, and dropped.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> serde::de::Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Checked, M::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
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
    fn what_may_need_a_strict_check_is_told_in_one_pass() {
        for doc in [
            &br#"{"s":"\ud800"}"#[..],
            br#"{"s":"\uDFFF"}"#,
            b"[1e999]",
            b"[2E+3]",
            &[b'1'; 301][..],
        ] {
            assert!(may_need_strict_check(doc), "{}", String::from_utf8_lossy(doc));
        }
        for doc in [
            &br#"{"type":"e","n":12.5,"s":"\u00c9"}"#[..],
            b"[1,2,3]",
            &[b'1'; 300][..],
        ] {
            assert!(!may_need_strict_check(doc), "{}", String::from_utf8_lossy(doc));
            assert!(is_strict_json(doc));
        }
    }

    #[test]
    fn strict_json_is_what_a_full_parse_takes() {
        for doc in [&br#"{"a":[1,2.5,"x\u00e9"]}"#[..], b"12", b"\"s\" ", b"null"] {
            assert!(is_strict_json(doc), "{}", String::from_utf8_lossy(doc));
            assert!(serde_json::from_slice::<serde_json::Value>(doc).is_ok());
        }
        for doc in [&br#"{"s":"\ud800"}"#[..], br#"[1e999]"#, b"{} {}", b"{"] {
            assert!(!is_strict_json(doc), "{}", String::from_utf8_lossy(doc));
            assert!(serde_json::from_slice::<serde_json::Value>(doc).is_err());
        }
    }

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

    /// Documents a full parse refuses (a number out of `f64`'s range, a lone
    /// surrogate, invalid UTF-8 in a string, nesting past 128) read as
    /// nothing, whichever keys are asked for: asking for another field never
    /// makes a document readable or unreadable.
    #[test]
    fn what_reads_does_not_depend_on_the_names_asked_for() {
        let deep = format!(r#"{{"x":{}1{},"actor":"a"}}"#, "[".repeat(200), "]".repeat(200));
        let mut bad_utf8 = br#"{"x":"ab","actor":"a"}"#.to_vec();
        bad_utf8[7] = 0xff;
        let docs: Vec<Vec<u8>> = vec![
            br#"{"tenant":1e999,"actor":"a"}"#.to_vec(),
            br#"{"tenant":"\ud800","actor":"a"}"#.to_vec(),
            deep.into_bytes(),
            bad_utf8,
            br#"{"tenant":"t","actor":"a"}"#.to_vec(),
        ];
        for doc in &docs {
            let alone = string_fields(doc, &["actor"]);
            assert_eq!(alone, full(doc, &["actor"]), "{}", String::from_utf8_lossy(doc));
            for names in [&["actor", "tenant"][..], &["x", "actor"], &["tenant", "x", "actor"]] {
                let i = names.iter().position(|n| *n == "actor").unwrap();
                let with = string_fields(doc, names).map(|v| v[i].clone());
                assert_eq!(
                    with,
                    alone.clone().map(|v| v[0].clone()),
                    "{names:?} {}",
                    String::from_utf8_lossy(doc)
                );
            }
        }
    }
}
