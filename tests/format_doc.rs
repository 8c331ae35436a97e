//! format.md is the on-disk contract: every hex example in it must decode with
//! annal's own decoders (checksums included), and the values the sentence
//! before each example states must be the decoded ones. A change of format
//! that is not made in format.md too, or a hand-edited dump, fails here.

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;

use annal::format::checkpoint::{DurableMark, StoreMeta, StreamsCheckpoint};
use annal::format::record::{self, Frame};
use annal::format::segment::SegmentHeader;

const FORMAT: &str = include_str!("../format.md");

/// One example: its kind (from `<!-- example: KIND -->`), the text between
/// the marker and the dump, and the bytes.
struct Example {
    kind: String,
    caption: String,
    bytes: Vec<u8>,
    line: usize,
}

/// Parses a dump: two-digit hex bytes, where `... (zeros up to offset N) ...`
/// stands for zero bytes up to offset N.
fn parse_dump(text: &str, line: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("...") {
        push_hex(&mut bytes, &rest[..at], line);
        let after = &rest[at + 3..];
        let close = after
            .find("...")
            .unwrap_or_else(|| panic!("line {line}: unclosed '...'"));
        let note = after[..close].trim();
        let n: usize = note
            .strip_prefix("(zeros up to offset ")
            .and_then(|n| n.strip_suffix(')'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("line {line}: unknown elision {note:?}"));
        assert!(
            n >= bytes.len(),
            "line {line}: zeros up to {n}, already at {}",
            bytes.len()
        );
        bytes.resize(n, 0);
        rest = &after[close + 3..];
    }
    push_hex(&mut bytes, rest, line);
    bytes
}

fn push_hex(bytes: &mut Vec<u8>, text: &str, line: usize) {
    for tok in text.split_whitespace() {
        assert_eq!(tok.len(), 2, "line {line}: {tok:?} is not a byte");
        bytes.push(u8::from_str_radix(tok, 16).unwrap_or_else(|_| panic!("line {line}: {tok:?} is not hex")));
    }
}

/// True if a code block's text looks like a hex dump.
fn is_dump(text: &str) -> bool {
    let mut any = false;
    for tok in text.split_whitespace() {
        if tok.len() == 2 && tok.bytes().all(|b| b.is_ascii_hexdigit()) {
            any = true;
        } else if !(tok == "..." || tok == "(zeros" || tok == "up" || tok == "to" || tok == "offset")
            && !(tok.ends_with(')') && tok[..tok.len() - 1].bytes().all(|b| b.is_ascii_digit()))
        {
            return false;
        }
    }
    any
}

/// Every example of format.md; panics on a hex dump that has no marker.
fn examples() -> Vec<Example> {
    let lines: Vec<&str> = FORMAT.lines().collect();
    let mut out = Vec::new();
    let mut marker: Option<(String, usize)> = None;
    let mut caption = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if let Some(kind) = l.strip_prefix("<!-- example:").and_then(|k| k.strip_suffix("-->")) {
            marker = Some((kind.trim().to_string(), i + 1));
            caption.clear();
        } else if l.starts_with("```") {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && !lines[end].trim().starts_with("```") {
                end += 1;
            }
            let text = lines[start..end].join("\n");
            if is_dump(&text) {
                let (kind, line) = marker
                    .take()
                    .unwrap_or_else(|| panic!("format.md line {}: hex dump without an example marker", i + 1));
                out.push(Example {
                    kind,
                    caption: caption.split_whitespace().collect::<Vec<_>>().join(" "),
                    bytes: parse_dump(&text, line),
                    line,
                });
            }
            i = end;
        } else if marker.is_some() {
            caption.push(' ');
            caption.push_str(l);
        }
        i += 1;
    }
    assert!(marker.is_none(), "an example marker without a dump");
    out
}

/// `1700000000000000` as the doc writes it: `1 700 000 000 000 000`.
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn states(e: &Example, needles: &[String]) {
    for n in needles {
        assert!(
            e.caption.contains(n.as_str()),
            "format.md line {}: the {} example's text does not say {n:?} (it says {:?})",
            e.line,
            e.kind,
            e.caption
        );
    }
}

/// Decodes a frame example: it must be exactly one whole frame.
fn frame(e: &Example) -> Frame<'_> {
    let (f, len) = record::decode_frame(&e.bytes).unwrap_or_else(|err| {
        panic!(
            "format.md line {}: the {} example does not decode: {err}",
            e.line, e.kind
        )
    });
    assert_eq!(len, e.bytes.len(), "format.md line {}: trailing bytes", e.line);
    f
}

fn check(e: &Example) {
    let len = format!("({} bytes)", e.bytes.len());
    let file = Path::new("format.md");
    match e.kind.as_str() {
        "seal" => {
            let Frame::Seal(s) = frame(e) else {
                panic!("line {}: not a seal", e.line)
            };
            states(
                e,
                &[
                    format!("next_position: {}", s.next_position),
                    format!("event_count: {}", s.event_count),
                    format!("content_crc: 0x{:08X}", s.content_crc),
                    len,
                ],
            );
        }
        "event" => {
            let Frame::Event(v) = frame(e) else {
                panic!("line {}: not an event", e.line)
            };
            let mut flags = Vec::new();
            if v.commit {
                flags.push("COMMIT");
            }
            if v.content_type == annal::ContentType::Json {
                flags.push("JSON");
            }
            let mut needles = vec![
                format!("Event: {},", flags.join("|")),
                format!("position {}", v.position),
                format!("revision {}", v.revision),
                format!("timestamp {}", grouped(v.timestamp)),
                format!("id `{}`", v.id),
                format!("stream `{}`", v.stream),
                format!("type `{}`", v.event_type),
                len,
            ];
            for t in &v.tags {
                needles.push(format!("tag `{t}`"));
            }
            if v.tags.len() == 1 {
                needles.push("one tag".into());
            }
            needles.push(if v.metadata.is_empty() {
                "no metadata".into()
            } else {
                format!("metadata `{}`", String::from_utf8_lossy(v.metadata))
            });
            needles.push(format!("data `{}`", String::from_utf8_lossy(v.data)));
            states(e, &needles);
            // The doc's size formula for event frames.
            let tags: usize = v.tags.iter().map(|t| 2 + t.len()).sum();
            let formula = 64 + v.stream.len() + v.event_type.len() + tags + v.metadata.len() + v.data.len();
            assert_eq!(formula, e.bytes.len(), "the event frame size formula");
        }
        "group" => {
            let Frame::Group(g) = frame(e) else {
                panic!("line {}: not a group", e.line)
            };
            states(e, &[format!("durable_end: {}", g.durable_end), len]);
        }
        "lost" => {
            let Frame::Lost(l) = frame(e) else {
                panic!("line {}: not a lost frame", e.line)
            };
            let kind = match (l.removed, l.hidden) {
                (true, true) => "Removed, hidden",
                (true, false) => "Removed",
                (false, _) => "Lost",
            };
            let heads: Vec<String> = l
                .heads
                .iter()
                .map(|h| {
                    format!(
                        "{{stream: {:?}, revision: {}, position: {}}}",
                        h.stream, h.revision, h.position
                    )
                })
                .collect();
            let fields = match heads.is_empty() {
                true => format!("{kind} `{{first_position: {}, count: {}}}`", l.first_position, l.count),
                false => format!(
                    "{kind} `{{first_position: {}, count: {}, heads: [{}]}}`",
                    l.first_position,
                    l.count,
                    heads.join(", ")
                ),
            };
            states(e, &[fields, len]);
        }
        "segment-header" => {
            let h = SegmentHeader::decode(&e.bytes, file)
                .unwrap_or_else(|err| panic!("line {}: the header does not decode: {err}", e.line));
            assert_eq!(e.bytes.len(), annal::format::segment::SEGMENT_HEADER);
            states(
                e,
                &[
                    format!("segment {}", h.base_position),
                    format!("created at {}", grouped(h.created_micros)),
                    (if h.compressed { "compressed" } else { "uncompressed" }).to_string(),
                    len,
                ],
            );
        }
        "meta" => {
            let m = StoreMeta::decode(&e.bytes, file)
                .unwrap_or_else(|err| panic!("line {}: annal.meta does not decode: {err}", e.line));
            states(
                e,
                &[
                    format!("store `{}`", m.store_id),
                    format!("created at {}", grouped(m.created_micros)),
                    len,
                ],
            );
        }
        "checkpoint" => {
            let c = StreamsCheckpoint::decode(&e.bytes, file)
                .unwrap_or_else(|err| panic!("line {}: the checkpoint does not decode: {err}", e.line));
            let mut needles = vec![format!("covering position {}", c.covered_position), len];
            for (name, s) in &c.streams {
                needles.push(format!("`{name}`"));
                needles.push(format!("last_revision {}", s.last_revision));
                needles.push(format!("last_position {}", s.last_position));
            }
            needles.push(match c.streams.len() {
                1 => "one stream".into(),
                n => format!("{n} streams"),
            });
            states(e, &needles);
        }
        "durable" => {
            let m = DurableMark::decode(&e.bytes, file)
                .unwrap_or_else(|err| panic!("line {}: durable.chk does not decode: {err}", e.line));
            states(
                e,
                &[
                    format!("segment {}", m.segment_base),
                    format!("durable_end {}", grouped(m.durable_end as i64)),
                    format!("next_position {}", m.next_position),
                    format!("content_crc 0x{:08x}", m.content_crc),
                    len,
                ],
            );
        }
        other => panic!("format.md line {}: unknown example kind {other:?}", e.line),
    }
}

#[test]
fn every_hex_example_in_format_md_decodes_to_what_it_says() {
    let all = examples();
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "seal",
        "event",
        "group",
        "lost",
        "segment-header",
        "meta",
        "checkpoint",
        "durable",
    ] {
        assert!(kinds.contains(&kind), "format.md has no {kind} example: {kinds:?}");
    }
    for e in &all {
        check(e);
    }
}

#[test]
fn a_damaged_example_is_caught() {
    // The checker itself: one changed byte in any frame example fails its checksum.
    for e in examples()
        .iter()
        .filter(|e| ["seal", "event", "group", "lost"].contains(&e.kind.as_str()))
    {
        for i in 0..e.bytes.len() {
            let mut bad = e.bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                record::decode_frame(&bad)
                    .map(|(_, len)| len != bad.len())
                    .unwrap_or(true),
                "{} example with byte {i} changed still decodes",
                e.kind
            );
        }
    }
    // A dump one byte too long (the old event example's defect) is refused.
    let e = examples().into_iter().find(|e| e.kind == "event").unwrap();
    let mut long = e.bytes.clone();
    long.insert(30, 0);
    assert!(
        record::decode_frame(&long)
            .map(|(_, len)| len != long.len())
            .unwrap_or(true)
    );
}
