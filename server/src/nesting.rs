//! The nesting limit of JSON event data and metadata (and snapshots).
//!
//! Every response that embeds data wraps it in a few levels of its own
//! (`{"events":[{"data":...}]}`); common parsers stop at 128 levels (serde_json)
//! or not far above. Data nested deeper than [`MAX_JSON_DEPTH`] is refused on
//! the way in (HTTP and `annal append`), and served as base64 if the store
//! holds some anyway, so that every body the server writes parses.
//!
//! Shared: the CLI checks appends with it, and so must any protocol that takes
//! JSON data in. It must never import a protocol's module.

/// Most levels of arrays and objects in event data, metadata or a snapshot.
pub const MAX_JSON_DEPTH: usize = 64;

/// The deepest nesting of arrays and objects in JSON text (0 for a scalar).
/// The text is assumed to be JSON; brackets inside strings are not counted.
pub fn json_depth(text: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// An error message unless `text` nests at most [`MAX_JSON_DEPTH`] levels.
pub fn check_json_depth(what: &str, text: &[u8]) -> Result<(), String> {
    let depth = json_depth(text);
    if depth > MAX_JSON_DEPTH {
        return Err(format!(
            "{what} nests arrays and objects {depth} levels deep; at most {MAX_JSON_DEPTH}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_containers_not_brackets_in_strings() {
        assert_eq!(json_depth(b"1"), 0);
        assert_eq!(json_depth(b"\"[[[\""), 0);
        assert_eq!(json_depth(br#"{"a":[1,{"b":"]\"["}],"c":{}}"#), 3);
        assert_eq!(json_depth(b"[[],[[]]]"), 3);
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(check_json_depth("data", deep.as_bytes()).is_err());
        assert!(check_json_depth("data", &deep.as_bytes()[1..129]).is_ok());
    }
}
