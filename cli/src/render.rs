//! How events and figures are printed: JSON Lines, tables, timestamps.
//!
//! One event is one JSON object on one line. Data and metadata that are JSON
//! are embedded as JSON values (as stored, when that fits on one line);
//! anything else is given as base64 under `data_base64` / `metadata_base64`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use annal::{ContentType, RecordedEvent};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::error::{CliError, CliResult};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// RFC 3339, UTC, with microseconds: `2024-05-01T12:34:56.123456Z`.
pub fn timestamp(micros: i64) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1000)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_else(|| format!("@{micros}us"))
}

/// A point in time from the command line: RFC 3339 (`2024-05-01T12:00:00Z`,
/// any offset), or a duration ago (`90s`, `15m`, `2h`, `7d`, `1w`, `1h30m`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Some(ago) = parse_ago(s) {
        return Ok(now_micros().saturating_sub(ago));
    }
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).map_err(|e| {
        format!("{s:?} is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration ago (15m, 2h, 7d): {e}")
    })?;
    Ok((t.unix_timestamp_nanos() / 1000) as i64)
}

/// Microseconds in a relative duration such as `15m` or `1h30m`; `None` if it is not one.
fn parse_ago(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit: i64 = match &rest[..unit_len] {
            "s" => 1_000_000,
            "m" => 60 * 1_000_000,
            "h" => 3_600 * 1_000_000,
            "d" => 86_400 * 1_000_000,
            "w" => 7 * 86_400 * 1_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

/// Removes the whitespace outside strings of valid JSON text.
fn minify(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut in_str, mut escaped) = (false, false);
    for c in s.chars() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            if c == '"' {
                in_str = true;
            }
            out.push(c);
        }
    }
    out
}

/// Bytes as a JSON value to embed, if they are JSON; `exact` when the value
/// printed is byte for byte what is stored.
pub fn as_json(bytes: &[u8]) -> Option<(Box<RawValue>, bool)> {
    let s = std::str::from_utf8(bytes).ok()?;
    let raw: &RawValue = serde_json::from_str(s).ok()?;
    if s.contains(['\n', '\r']) || raw.get().len() != s.len() {
        return Some((RawValue::from_string(minify(s)).ok()?, false));
    }
    Some((raw.to_owned(), true))
}

/// Which fields an event line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `read`, `read-all`, `tail`.
    Read,
    /// `export`: also `content_type` where base64 data was JSON, so that `import` restores it exactly.
    Export,
}

/// One event as a JSON line.
#[derive(Serialize)]
struct EventLine<'a> {
    stream: &'a str,
    revision: u64,
    position: u64,
    id: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'static str>,
    /// `Some(None)` prints `null` (no metadata); `None` leaves the key out (base64 metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Option<Box<RawValue>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_base64: Option<String>,
    tags: &'a [String],
    /// The subject, for an event that names one (whose key exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    /// True for an event whose subject was shredded: data and metadata are gone.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    erased: bool,
}

/// The JSON line of an event, without the newline.
pub fn event_line(ev: &RecordedEvent, mode: Mode) -> Vec<u8> {
    let json = match ev.content_type {
        ContentType::Json => as_json(&ev.data).filter(|(_, exact)| *exact || mode == Mode::Read),
        ContentType::Binary => None,
    };
    let (data, data_base64, content_type) = match json {
        Some((raw, _)) => (Some(raw), None, None),
        None => (
            None,
            Some(BASE64.encode(&ev.data)),
            (mode == Mode::Export && ev.content_type == ContentType::Json).then_some("json"),
        ),
    };
    let (metadata, metadata_base64) = if ev.metadata.is_empty() {
        (Some(None), None)
    } else {
        match as_json(&ev.metadata).filter(|(_, exact)| *exact || mode == Mode::Read) {
            Some((raw, _)) => (Some(Some(raw)), None),
            None => (None, Some(BASE64.encode(&ev.metadata))),
        }
    };
    let line = EventLine {
        stream: &ev.stream,
        revision: ev.revision,
        position: ev.position,
        id: ev.id.to_string(),
        event_type: &ev.event_type,
        timestamp: timestamp(ev.timestamp_micros),
        data,
        data_base64,
        content_type,
        metadata,
        metadata_base64,
        tags: &ev.tags,
        subject: ev.subject(),
        erased: ev.is_erased(),
    };
    serde_json::to_vec(&line).unwrap_or_default()
}

/// A JSON object whose keys print in the order given (`serde_json::json!` sorts them).
pub struct Obj(pub Vec<(&'static str, serde_json::Value)>);

impl Serialize for Obj {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// `obj! { "key": value, ... }`: an [`Obj`], keys in this order.
#[macro_export]
macro_rules! obj {
    ($($key:literal : $value:expr),* $(,)?) => {
        $crate::render::Obj(vec![$(($key, serde_json::json!($value))),*])
    };
}

/// The fields of a JSON object, in the order they were written.
struct Fields(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Prints the fields of a flat JSON object as a two-column table, in order.
pub fn key_values(out: &mut impl Write, value: &impl Serialize) -> CliResult {
    let text = serde_json::to_string(value).map_err(|e| CliError::msg(format!("encoding output: {e}")))?;
    let Fields(fields) = serde_json::from_str(&text).map_err(|e| CliError::msg(format!("encoding output: {e}")))?;
    let rows: Vec<Vec<String>> = fields
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            vec![k, v]
        })
        .collect();
    let t = Table::fit(&["KEY", "VALUE"], &rows, &[40, 200], &[false, false]);
    for r in &rows {
        t.row(out, r)?;
    }
    Ok(())
}

/// Writes one JSON value and a newline.
pub fn emit(out: &mut impl Write, value: &impl Serialize) -> CliResult {
    let mut buf = serde_json::to_vec(value).map_err(|e| CliError::msg(format!("encoding output: {e}")))?;
    buf.push(b'\n');
    out.write_all(&buf).map_err(|e| CliError::io("writing output", e))
}

/// Writes raw bytes and a newline.
pub fn emit_line(out: &mut impl Write, line: &[u8]) -> CliResult {
    out.write_all(line)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|e| CliError::io("writing output", e))
}

/// Flushes the output.
pub fn flush(out: &mut impl Write) -> CliResult {
    out.flush().map_err(|e| CliError::io("writing output", e))
}

/// A plain-text table with fixed column widths; longer cells are cut with `…`.
pub struct Table {
    widths: Vec<usize>,
    right: Vec<bool>,
}

impl Table {
    /// A table whose columns fit `sample` (the header and some rows), each at most `max[i]` wide.
    pub fn fit(header: &[&str], sample: &[Vec<String>], max: &[usize], right: &[bool]) -> Table {
        let widths = header
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let widest = sample.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
                widest.max(h.chars().count()).min(max[i])
            })
            .collect();
        Table {
            widths,
            right: right.to_vec(),
        }
    }

    /// Writes one row.
    pub fn row<S: AsRef<str>>(&self, out: &mut impl Write, cells: &[S]) -> CliResult {
        let mut line = String::new();
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            let w = self.widths[i];
            let c = cut(cell.as_ref(), w);
            let pad = w.saturating_sub(c.chars().count());
            if self.right[i] {
                line.push_str(&" ".repeat(pad));
                line.push_str(&c);
            } else {
                line.push_str(&c);
                if i != last {
                    line.push_str(&" ".repeat(pad));
                }
            }
            if i != last {
                line.push_str("  ");
            }
        }
        emit_line(out, line.trim_end().as_bytes())
    }
}

/// Cuts `s` to at most `w` characters, ending with `…` when cut.
pub fn cut(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    let mut out: String = s.chars().take(w.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A short, one-line rendering of data for tables.
pub fn data_preview(ev: &RecordedEvent) -> String {
    match ev.content_type {
        ContentType::Json => match as_json(&ev.data) {
            Some((raw, _)) => raw.get().to_string(),
            None => format!("<{} bytes, not JSON>", ev.data.len()),
        },
        ContentType::Binary => format!("<{} bytes, binary>", ev.data.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let t = timestamp(1_714_566_896_123_456);
        assert_eq!(t, "2024-05-01T12:34:56.123456Z");
        assert_eq!(parse_time(&t), Ok(1_714_566_896_123_456));
        assert_eq!(
            parse_time("2024-05-01T14:34:56.123456+02:00"),
            Ok(1_714_566_896_123_456)
        );
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn relative_times() {
        assert_eq!(parse_ago("15m"), Some(15 * 60 * 1_000_000));
        assert_eq!(parse_ago("1h30m"), Some(90 * 60 * 1_000_000));
        assert_eq!(parse_ago("7d"), Some(7 * 86_400 * 1_000_000));
        assert_eq!(parse_ago("7"), None);
        assert_eq!(parse_ago("h"), None);
        assert_eq!(parse_ago("2024-05-01"), None);
        let now = now_micros();
        let t = parse_time("2h").unwrap();
        assert!((now - t - 7_200_000_000).abs() < 10_000_000);
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn json_embedding() {
        assert_eq!(
            as_json(br#"{"a": 1}"#).map(|(r, e)| (r.get().to_string(), e)),
            Some((r#"{"a": 1}"#.into(), true))
        );
        assert_eq!(
            as_json(b"{\n  \"a b\": \" x \"\n}\n").map(|(r, e)| (r.get().to_string(), e)),
            Some((r#"{"a b":" x "}"#.into(), false))
        );
        assert_eq!(
            as_json(b" 1").map(|(r, e)| (r.get().to_string(), e)),
            Some(("1".into(), false))
        );
        assert!(as_json(b"{").is_none());
        assert!(as_json(b"\xff").is_none());
        assert!(as_json(b"").is_none());
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }
}
