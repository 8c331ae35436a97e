//! `annal append`: one event from flags, or a JSON Lines file as one atomic append.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use annal::{AppendResult, EventData};
use annal_server::nesting::check_json_depth;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::AppendArgs;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::render;

/// One line of `append --jsonl` or of `import`: an event, and for `import` its stream.
///
/// `revision`, `position` and `timestamp` are what `export` writes for
/// information; `import` ignores them, `append` refuses them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    /// The stream (`import` only).
    #[serde(default)]
    pub stream: Option<String>,
    /// Original revision (information; `import` only).
    #[serde(default)]
    pub revision: Option<u64>,
    /// Original position (information; `import` only).
    #[serde(default)]
    pub position: Option<u64>,
    /// Original timestamp (information; `import` only).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The event id.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Data as a JSON value (any, `null` included).
    #[serde(default, deserialize_with = "present")]
    pub data: Option<Box<RawValue>>,
    /// Data as base64, instead of `data`: binary data, or JSON with `content_type: "json"`.
    #[serde(default)]
    pub data_base64: Option<String>,
    /// What `data_base64` holds [default: binary].
    #[serde(default)]
    pub content_type: Option<ContentTypeName>,
    /// Metadata as a JSON value; `null` or absent: none.
    #[serde(default)]
    pub metadata: Option<Box<RawValue>>,
    /// Metadata as base64, instead of `metadata`.
    #[serde(default)]
    pub metadata_base64: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The subject whose personal data the event carries.
    #[serde(default)]
    pub subject: Option<String>,
    /// Written by `export` for an event whose subject was shredded (its data
    /// and metadata are gone); `import` stores such an event erased, at its
    /// place in its stream.
    #[serde(default)]
    pub erased: bool,
}

/// Deserializes a field that is present, even as `null`, into `Some`.
pub fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Which encoding `data_base64` holds, when a line says.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentTypeName {
    /// JSON text (that did not fit a JSON line as is).
    Json,
    /// Opaque bytes.
    Binary,
}

fn raw_bytes(raw: Box<RawValue>) -> Vec<u8> {
    String::from(Box::<str>::from(raw)).into_bytes()
}

impl EventLine {
    /// Parses a line; `n` (its number) prefixes errors.
    pub fn parse(n: usize, line: &str) -> CliResult<EventLine> {
        serde_json::from_str(line).map_err(|e| {
            // serde_json counts lines within the line; say the column in the file's line instead.
            let text = e.to_string();
            let text = text.rfind(" at line ").map_or(text.as_str(), |i| &text[..i]);
            CliError::msg(format!("line {n}, column {}: {text}", e.column()))
        })
    }

    /// The event the line describes.
    pub fn into_event(self) -> Result<EventData, String> {
        let event_type = self.event_type;
        let mut event = match (self.data, self.data_base64) {
            (Some(_), Some(_)) => return Err("give either data or data_base64, not both".into()),
            (None, None) => return Err("missing field `data` (or `data_base64`)".into()),
            (Some(raw), None) => {
                if matches!(self.content_type, Some(ContentTypeName::Binary)) {
                    return Err("content_type \"binary\" goes with data_base64, not data".into());
                }
                check_json_depth("data", raw.get().as_bytes())?;
                EventData::json(event_type, raw_bytes(raw))
            }
            (None, Some(b64)) => {
                let bytes = BASE64
                    .decode(b64.as_bytes())
                    .map_err(|e| format!("data_base64 is not valid base64: {e}"))?;
                match self.content_type {
                    Some(ContentTypeName::Json) => {
                        check_json_depth("data", &bytes)?;
                        EventData::json(event_type, bytes)
                    }
                    _ => EventData::binary(event_type, bytes),
                }
            }
        };
        event.metadata = match (self.metadata, self.metadata_base64) {
            (Some(_), Some(_)) => return Err("give either metadata or metadata_base64, not both".into()),
            (Some(raw), None) => {
                check_json_depth("metadata", raw.get().as_bytes())?;
                raw_bytes(raw).into()
            }
            (None, Some(b64)) => BASE64
                .decode(b64.as_bytes())
                .map_err(|e| format!("metadata_base64 is not valid base64: {e}"))?
                .into(),
            (None, None) => Default::default(),
        };
        event.id = self.id;
        event.tags = self.tags;
        event.subject = self.subject;
        Ok(event)
    }
}

/// The longest line an event file may hold for a store whose events hold at
/// most `max_event_size` bytes (data and metadata): room for both in base64
/// or escaped JSON, and the other fields. A longer line is refused as it is
/// read, never gathered whole in memory.
pub fn max_line(max_event_size: usize) -> usize {
    max_event_size.saturating_mul(4).saturating_add(1 << 20)
}

/// Calls `f` with each non-blank line of `file` (`-`: stdin), its 1-based
/// number and the bytes read so far; a line longer than `max_line` bytes is
/// an error.
pub fn for_each_line(file: &Path, max_line: usize, f: impl FnMut(usize, &str, u64) -> CliResult) -> CliResult {
    for_each_line_idle(file, max_line, f, || Ok(()))
}

/// [`for_each_line`], calling `idle` whenever every line read so far was
/// handed to `f` and the next read may wait for its input (a pipe from a
/// live producer): a caller that gathers lines hands them on there.
pub fn for_each_line_idle(
    file: &Path,
    max_line: usize,
    mut f: impl FnMut(usize, &str, u64) -> CliResult,
    mut idle: impl FnMut() -> CliResult,
) -> CliResult {
    let reader: Box<dyn Read> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(file).map_err(|e| CliError::msg(format!("opening {}: {e}", file.display())))?)
    };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut buf = String::new();
    let mut line_no = 0;
    let mut read = 0u64;
    loop {
        buf.clear();
        if reader.buffer().is_empty() {
            idle()?;
        }
        // One byte more than a line may hold tells a line that is too long.
        let limit = u64::try_from(max_line).unwrap_or(u64::MAX).saturating_add(1);
        let n = reader.by_ref().take(limit).read_line(&mut buf).map_err(|e| {
            CliError::msg(format!(
                "reading {} after line {line_no}: {e}",
                if file == Path::new("-") {
                    "stdin".into()
                } else {
                    file.display().to_string()
                }
            ))
        })?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        if n > max_line {
            return Err(CliError::msg(format!(
                "line {line_no} is longer than {max_line} bytes (four times the store's max_event_size, \
                 and 1 MiB): no event it could hold fits the store"
            )));
        }
        read += n as u64;
        let line = buf.trim();
        if line.is_empty() {
            continue;
        }
        f(line_no, line, read)?;
    }
}

fn print_result(stream: &str, r: &AppendResult) -> CliResult {
    let mut out = std::io::stdout().lock();
    render::emit(
        &mut out,
        &crate::obj! {
            "stream": stream,
            "first_revision": r.first_revision,
            "next_expected_version": r.next_expected_version,
            "position": r.position,
        },
    )
}

fn check_json(what: &str, text: &str) -> CliResult {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| CliError::msg(format!("{what} is not valid JSON: {e}")))?;
    check_json_depth(what, text.as_bytes()).map_err(CliError::msg)
}

/// `annal append`.
pub fn append(ctx: &Ctx, a: AppendArgs) -> CliResult {
    let events = match &a.jsonl {
        Some(file) => {
            let mut events = Vec::new();
            for_each_line(file, max_line(ctx.options.max_event_size), |n, line, _| {
                let l = EventLine::parse(n, line)?;
                let export_field = [
                    ("stream", l.stream.is_some()),
                    ("revision", l.revision.is_some()),
                    ("position", l.position.is_some()),
                    ("timestamp", l.timestamp.is_some()),
                ]
                .into_iter()
                .find(|(_, given)| *given);
                if let Some((field, _)) = export_field {
                    return Err(CliError::msg(format!(
                        "line {n}: field `{field}` belongs to `annal import` (append --jsonl lines hold \
                             type, data, metadata, id and tags; the stream is given on the command line)"
                    )));
                }
                let ev = l.into_event().map_err(|e| CliError::msg(format!("line {n}: {e}")))?;
                events.push(ev);
                Ok(())
            })?;
            if events.is_empty() {
                return Err(CliError::msg(format!("{}: no events to append", file.display())));
            }
            events
        }
        None => {
            let (Some(event_type), Some(data)) = (a.event_type, a.data) else {
                return Err(CliError::with_code(
                    2,
                    "append needs --type and --data, or --jsonl FILE",
                ));
            };
            check_json("--data", &data)?;
            let mut ev = EventData::json(event_type, data.into_bytes());
            if let Some(m) = a.metadata {
                check_json("--metadata", &m)?;
                ev.metadata = m.into_bytes().into();
            }
            ev.id = a.id;
            ev.tags = a.tags;
            ev.subject = a.subject;
            vec![ev]
        }
    };
    let store = ctx.open_write()?;
    let result = store.append(&a.stream, a.expected, events)?;
    print_result(&a.stream, &result)?;
    Ok(store.close()?)
}
