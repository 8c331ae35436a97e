//! The annal-over-HTTP target (`annal+http://host:2114`, `annal+https://…`):
//! another `annal serve`, through its `POST /append`.
//!
//! Events keep their ids, so a retry is idempotent: each run of consecutive
//! events of one stream is one append (`expected` any), in log order, so
//! per-stream order holds. An append refused as an idempotency conflict (part
//! of the run was stored by an earlier, differently cut attempt) is done
//! again event by event, skipping the events the server already holds
//! (`GET /events/{id}`). An event naming a subject carries it (the remote
//! seals it under its own key for the subject); an event whose subject was
//! shredded here before it was delivered goes with `"erased": true` and no
//! data, and is stored erased there. The token comes from the `token` parameter or the
//! caller (`--token`, `token =` in annal.toml). The remote keeps no checkpoint
//! for us: the forwarder keeps it in the store.
//!
//! This module owns the HTTP exchange; it must never decide which events go.

use std::time::Duration;

use annal::{Batch, ContentType, ForwardTarget, RecordedEvent, TargetError};
use serde_json::{Value, json};

use crate::error::ConfigError;
use crate::url::TargetUrl;

/// Forwards to another annal's HTTP API.
pub struct AnnalTarget {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    described: String,
}

impl std::fmt::Debug for AnnalTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnalTarget")
            .field("target", &self.described)
            .finish_non_exhaustive()
    }
}

impl AnnalTarget {
    /// A target for the URL, with a token unless the URL has one.
    pub fn new(t: &TargetUrl, token: Option<String>) -> Result<AnnalTarget, ConfigError> {
        let scheme = if t.url.scheme() == "annal+https" {
            "https"
        } else {
            "http"
        };
        let host = t.url.host_str().unwrap_or("127.0.0.1");
        let port = t.url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let path = t.url.path().trim_end_matches('/');
        let timeout = t.millis("timeout_ms", Duration::from_secs(30))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| t.bad(e.to_string()))?;
        Ok(AnnalTarget {
            rt: crate::node::runtime()?,
            client,
            base: format!("{scheme}://{host}{port}{path}"),
            token: t.param("token").or(token),
            described: t.to_string(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Appends one run of events of one stream.
    fn append(&self, events: &[RecordedEvent]) -> Result<(), Failure> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let body = json!({
            "stream": first.stream,
            "events": events.iter().map(event_json).collect::<Vec<_>>(),
        });
        let request = self.request(reqwest::Method::POST, "/append").json(&body);
        let (status, text) = self.rt.block_on(async {
            let resp = request.send().await.map_err(unavailable)?;
            let status = resp.status();
            let text = resp.text().await.map_err(unavailable)?;
            Ok::<_, TargetError>((status, text))
        })?;
        if status.is_success() {
            return Ok(());
        }
        let code = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        let message = format!(
            "annal answered {status}: {}",
            text.chars().take(500).collect::<String>()
        );
        Err(match status.as_u16() {
            401 | 403 => Failure::Target(TargetError::Refused(message)),
            409 if code == "idempotency_conflict" => Failure::Conflict,
            400 | 409 | 413 | 422 => Failure::Invalid(message),
            _ => Failure::Target(TargetError::Unavailable(message)),
        })
    }

    /// True if the server holds an event with this id.
    fn holds(&self, id: uuid::Uuid) -> Result<bool, TargetError> {
        let request = self.request(reqwest::Method::GET, &format!("/events/{id}"));
        let status = self
            .rt
            .block_on(async { request.send().await.map(|r| r.status()) })
            .map_err(unavailable)?;
        match status.as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            401 | 403 => Err(TargetError::Refused(format!("annal answered {status}"))),
            _ => Err(TargetError::Unavailable(format!("annal answered {status}"))),
        }
    }
}

/// How one append failed.
enum Failure {
    Target(TargetError),
    /// Some of the events are stored already, from an attempt cut differently.
    Conflict,
    /// The server will never take this request as it is.
    Invalid(String),
}

impl From<TargetError> for Failure {
    fn from(e: TargetError) -> Self {
        Failure::Target(e)
    }
}

fn unavailable(e: reqwest::Error) -> TargetError {
    TargetError::Unavailable(format!("annal over HTTP: {e}"))
}

fn event_json(e: &RecordedEvent) -> Value {
    let mut v = json!({ "type": e.event_type, "id": e.id, "tags": e.tags });
    if e.is_erased() {
        // Its subject was shredded here: it arrives erased there too (empty
        // `data_base64` keeps a binary event's content type).
        v["erased"] = Value::Bool(true);
        if e.content_type == ContentType::Binary {
            v["data_base64"] = Value::String(String::new());
        }
        return v;
    }
    let is_json = |b: &[u8]| serde_json::from_slice::<Value>(b).ok();
    match (e.content_type, is_json(&e.data)) {
        (ContentType::Json, Some(data)) => v["data"] = data,
        _ if e.data.is_empty() => {}
        _ => v["data_base64"] = Value::String(base64(&e.data)),
    }
    if !e.metadata.is_empty() {
        match is_json(&e.metadata) {
            Some(m) => v["metadata"] = m,
            None => v["metadata_base64"] = Value::String(base64(&e.metadata)),
        }
    }
    // The upstream seals a subject's events under its own key for the subject
    // (a shred here does not reach it: shred there too).
    if let Some(subject) = e.subject() {
        v["subject"] = Value::String(subject.to_string());
    }
    v
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl ForwardTarget for AnnalTarget {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn load_checkpoint(&mut self, _forwarder: &str) -> Result<Option<u64>, TargetError> {
        Ok(None)
    }

    fn deliver(&mut self, batch: &Batch<'_>) -> Result<(), TargetError> {
        let mut done = 0;
        for run in batch.events.chunk_by(|a, b| a.stream == b.stream) {
            match self.append(run) {
                Ok(()) => {}
                Err(Failure::Target(e)) => return Err(e),
                Err(Failure::Conflict | Failure::Invalid(_)) => {
                    // One by one, to skip what is stored and find what is refused.
                    for (i, e) in run.iter().enumerate() {
                        match self.append(std::slice::from_ref(e)) {
                            Ok(()) => {}
                            Err(Failure::Target(err)) => return Err(err),
                            Err(Failure::Conflict) if self.holds(e.id)? => {}
                            Err(Failure::Conflict) => {
                                return Err(TargetError::Rejected {
                                    index: done + i,
                                    reason: "its id is stored on the target with other content".into(),
                                });
                            }
                            Err(Failure::Invalid(reason)) => {
                                return Err(TargetError::Rejected {
                                    index: done + i,
                                    reason,
                                });
                            }
                        }
                    }
                }
            }
            done += run.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe, 0x00, 0x01]), "//4AAQ==");
    }

    /// An event of stream `c-1` of type `Moved`, with no metadata.
    fn moved(
        content_type: ContentType,
        data: &'static [u8],
        tags: &[&str],
        personal: annal::Personal,
    ) -> RecordedEvent {
        RecordedEvent {
            stream: "c-1".into(),
            revision: 0,
            position: 0,
            id: uuid::Uuid::nil(),
            event_type: "Moved".into(),
            content_type,
            data: bytes::Bytes::from_static(data),
            metadata: bytes::Bytes::new(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            timestamp_micros: 0,
            personal,
        }
    }

    #[test]
    fn an_event_naming_a_subject_is_forwarded_with_it() {
        let mut e = moved(ContentType::Json, b"{}", &[], annal::Personal::Subject("ann".into()));
        assert_eq!(event_json(&e)["subject"], "ann");
        e.personal = annal::Personal::Plain;
        assert!(event_json(&e).get("subject").is_none());
        assert!(event_json(&e).get("erased").is_none());
    }

    #[test]
    fn an_erased_event_is_forwarded_as_erased_without_content() {
        let mut e = moved(ContentType::Binary, b"", &["t"], annal::Personal::Erased);
        let v = event_json(&e);
        assert_eq!(v["erased"], true);
        assert_eq!(v["data_base64"], "");
        assert_eq!(v["tags"][0], "t");
        assert!(v.get("data").is_none() && v.get("metadata").is_none() && v.get("subject").is_none());
        e.content_type = ContentType::Json;
        assert!(event_json(&e).get("data_base64").is_none());
    }
}
