//! The names section of a version-3 to -5 index file: the segment's type
//! names, the indexed metadata fields' names and (version 4 on) the shared
//! tag keys, encoded and decoded.
//!
//! This module only encodes and decodes that section's bytes.

use crate::format::codec::Reader;

/// The names section of version 3: the type names, then the indexed
/// metadata fields' names, each list as `count: u32` and each name as
/// `len: u16` and its bytes, strictly ascending; in version 4 (`shared`)
/// then the shared tag keys as `count: u32` and `u32`s, strictly ascending.
/// `None` if a name or a count does not fit.
pub(super) fn encode_names(types: &[&str], fields: &[&str], shared: Option<&[u32]>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for list in [types, fields] {
        out.extend_from_slice(&u32::try_from(list.len()).ok()?.to_le_bytes());
        for n in list {
            out.extend_from_slice(&u16::try_from(n.len()).ok()?.to_le_bytes());
            out.extend_from_slice(n.as_bytes());
        }
    }
    if let Some(keys) = shared {
        out.extend_from_slice(&u32::try_from(keys.len()).ok()?.to_le_bytes());
        for k in keys {
            out.extend_from_slice(&k.to_le_bytes());
        }
    }
    Some(out)
}

/// The lists of a names section.
pub(super) struct Names<'a> {
    /// The segment's event types, ascending.
    pub(super) types: Vec<&'a str>,
    /// The indexed metadata fields, ascending.
    pub(super) fields: Vec<&'a str>,
    /// The shared tag keys, ascending (version 4; empty before).
    pub(super) shared_tags: Vec<u32>,
}

/// Decodes the names section of a `version` 3 or 4 file, or says why it is
/// malformed. The fields must be those whose fingerprint the header holds.
pub(super) fn decode_names(b: &[u8], fingerprint: u64, version: u32) -> std::result::Result<Names<'_>, &'static str> {
    let mut r = Reader::new(b);
    let mut lists: [Vec<&str>; 2] = Default::default();
    for list in &mut lists {
        let count = r.u32().map_err(|_| "names section truncated")?;
        for _ in 0..count {
            let name = r.str16().map_err(|_| "name truncated or not UTF-8")?;
            if list.last().is_some_and(|last| *last >= name) {
                return Err("names not strictly ascending");
            }
            list.push(name);
        }
    }
    let mut shared_tags = Vec::new();
    if version >= 4 {
        let count = r.u32().map_err(|_| "shared tag keys truncated")?;
        for _ in 0..count {
            let key = r.u32().map_err(|_| "shared tag keys truncated")?;
            if shared_tags.last().is_some_and(|last| *last >= key) {
                return Err("shared tag keys not strictly ascending");
            }
            shared_tags.push(key);
        }
    }
    if !r.buf.is_empty() {
        return Err("bytes after the last name");
    }
    let [types, fields] = lists;
    if crate::format::index::MetaFields::new(&fields).fingerprint() != fingerprint {
        return Err("metadata field names do not match the fingerprint");
    }
    Ok(Names {
        types,
        fields,
        shared_tags,
    })
}
