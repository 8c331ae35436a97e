//! Views for browsing a large store page by page, as the web console does:
//! streams in pages with search and categories, who the caller is, a node
//! summary (disk usage by kind, retention, the last background error) and a
//! verify run.
//!
//! It owns these routes' answers. It must never return every stream in one
//! answer (pages are at most [`MAX_PAGE`] streams), nor decide who may see a
//! stream itself: it asks `auth`.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use annal::{Direction, StreamFrom, StreamInfo};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::encode::{Params, format_micros};
use super::error::ApiError;
use crate::auth::{Need, Principal};
use crate::metrics::disk_available;
use crate::state::AppState;

/// Streams in a page when `limit` is not given.
const DEFAULT_PAGE: usize = 50;

/// Most streams in one page.
pub(crate) const MAX_PAGE: usize = 1000;

/// Categories listed at most.
const MAX_CATEGORIES: usize = 200;

/// A stream's category: its name up to the first `-` (`order-42` is in
/// `order`); a name without `-` is its own category.
pub(crate) fn category(stream: &str) -> &str {
    stream.split_once('-').map_or(stream, |(c, _)| c)
}

/// What a stream listing keeps: the query's `search` (a substring, ASCII
/// case-insensitive), `prefix`, `category` and `include_system`.
struct Matcher {
    search: String,
    prefix: String,
    category: Option<String>,
    system: bool,
}

impl Matcher {
    fn from(params: &Params) -> Result<Matcher, ApiError> {
        Ok(Matcher {
            search: params.one("search")?.unwrap_or("").to_ascii_lowercase(),
            prefix: params.one("prefix")?.unwrap_or("").to_string(),
            category: params.one("category")?.map(str::to_string),
            system: params.bool("include_system")?.unwrap_or(false),
        })
    }

    /// The name prefixes a pass needs to look under: the query's prefix (or
    /// its category, which names start with), narrowed to the token's.
    fn ranges(&self, p: &Principal) -> Vec<String> {
        let start = match (&self.category, self.prefix.is_empty()) {
            (Some(c), true) => c.as_str(),
            _ => self.prefix.as_str(),
        };
        p.readable_within(start)
    }

    fn keeps(&self, p: &Principal, name: &str) -> bool {
        name.starts_with(&self.prefix)
            && (self.system || !name.starts_with('$'))
            && self.category.as_deref().is_none_or(|c| category(name) == c)
            && contains_ignoring_ascii_case(name, &self.search)
            && p.permits(Need::Read(name))
    }
}

/// True if `hay` contains `needle` (given in lowercase), ASCII letters
/// compared without case; without allocating (it runs on every stream name).
fn contains_ignoring_ascii_case(hay: &str, needle: &str) -> bool {
    needle.is_empty()
        || hay
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Names a pass over the stream names goes through between two looks at
/// its cancellation.
const NAMES_PER_LOOK: u64 = 1024;

/// Passes over the stream names under `ranges` in order, handing `visit`
/// each one (it says whether to go on); fails with `Cancelled` as soon as
/// `cancel` says so (it looks every [`NAMES_PER_LOOK`] names).
fn pass_names(
    store: &annal::Store,
    ranges: &[String],
    cancel: &annal::Cancel,
    mut visit: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<(), ApiError> {
    let ranges: Vec<&str> = ranges.iter().map(String::as_str).collect();
    let mut seen = 0u64;
    let mut cancelled = false;
    store.visit_stream_names(None, &ranges, |name| {
        seen += 1;
        if seen.is_multiple_of(NAMES_PER_LOOK) && cancel.is_cancelled() {
            cancelled = true;
            return ControlFlow::Break(());
        }
        visit(name)
    });
    if cancelled {
        return Err(annal::Error::Cancelled.into());
    }
    Ok(())
}

/// `GET /browse/streams`: one page of streams by name after `after`, each
/// with its last write time, event count and metadata; `next` is the
/// `after` of the following page, `matched` how many streams match in all.
/// Counting passes over every name under the query's prefix that the token
/// may read (only those): it takes one of the `max_scans` places and stops
/// at the request timeout or when the client goes.
pub(crate) async fn streams(
    State(state): State<AppState>,
    p: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(
        q.as_deref(),
        &["search", "prefix", "category", "include_system", "after", "limit"],
    )?;
    let matcher = Matcher::from(&params)?;
    let after = params.one("after")?.map(str::to_string);
    let limit = match params.u64("limit")? {
        None => DEFAULT_PAGE,
        Some(n) if n == 0 || n as usize > MAX_PAGE => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit={n} is not between 1 and {MAX_PAGE}"),
            ));
        }
        Some(n) => n as usize,
    };
    let _place = state.scan_place(&p)?;
    let (cancel, _cancel_on_drop) = state.read_cancel();
    let store = state.store();
    let body = state
        .blocking(move || {
            let ranges = matcher.ranges(&p);
            let (mut matched, mut page) = (0u64, Vec::new());
            pass_names(&store, &ranges, &cancel, |name| {
                if matcher.keeps(&p, name) {
                    matched += 1;
                    if after.as_deref().is_none_or(|a| name > a) && page.len() <= limit {
                        page.push(name.to_string());
                    }
                }
                ControlFlow::Continue(())
            })?;
            let more = page.len() > limit;
            page.truncate(limit);
            let page: Vec<StreamInfo> = page.iter().filter_map(|n| store.stream_info(n)).collect();
            let next = if more {
                page.last().map(|s| s.name.clone())
            } else {
                None
            };
            let rows: Vec<Value> = page.iter().map(|s| stream_row(&store, s)).collect();
            Ok(json!({
                "streams": rows,
                "matched": matched,
                "next": next,
            }))
        })
        .await?;
    Ok(axum::Json(body).into_response())
}

/// A stream as a listing shows it.
fn stream_row(store: &annal::Store, s: &StreamInfo) -> Value {
    let meta = store.stream_metadata(&s.name);
    let last = store
        .read_stream(&s.name, Direction::Backward, StreamFrom::End, 1)
        .ok()
        .and_then(|mut v| v.pop());
    let truncate_before = meta.as_ref().and_then(|m| m.truncate_before).unwrap_or(0);
    let tombstoned = meta.as_ref().is_some_and(|m| m.tombstoned);
    let deleted = tombstoned || truncate_before > s.last_revision;
    json!({
        "stream": s.name,
        "category": category(&s.name),
        "last_revision": s.last_revision,
        "last_position": s.last_position,
        // Written events whose revision is not truncated away; max_count and
        // max_age may hide more of them on read.
        "event_count": (s.last_revision + 1).saturating_sub(truncate_before),
        "last_write": last.map(|e| format_micros(e.timestamp_micros)),
        "deleted": if tombstoned { Some("hard") } else if deleted { Some("soft") } else { None },
        "metadata": meta,
    })
}

/// `GET /browse/categories`: the categories of the streams the caller may
/// read (names up to the first `-`), with how many streams each has, most
/// streams first. A pass over every name under the query's prefix that the
/// token may read: it takes a `max_scans` place and stops at the request
/// timeout or when the client goes.
pub(crate) async fn categories(
    State(state): State<AppState>,
    p: Principal,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["search", "prefix", "include_system"])?;
    let matcher = Matcher::from(&params)?;
    let _place = state.scan_place(&p)?;
    let (cancel, _cancel_on_drop) = state.read_cancel();
    let store = state.store();
    let body = state
        .blocking(move || {
            // One pass over the names without copying them.
            let mut counts: HashMap<String, u64> = HashMap::new();
            pass_names(&store, &matcher.ranges(&p), &cancel, |name| {
                if matcher.keeps(&p, name) {
                    match counts.get_mut(category(name)) {
                        Some(n) => *n += 1,
                        None => {
                            counts.insert(category(name).to_string(), 1);
                        }
                    }
                }
                ControlFlow::Continue(())
            })?;
            let total = counts.len();
            let mut list: Vec<(String, u64)> = counts.into_iter().collect();
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            list.truncate(MAX_CATEGORIES);
            let list: Vec<Value> = list
                .into_iter()
                .map(|(c, n)| json!({ "category": c, "streams": n }))
                .collect();
            Ok(json!({ "categories": list, "total": total }))
        })
        .await?;
    Ok(axum::Json(body).into_response())
}

/// `GET /whoami`: the caller's role and stream prefixes, and whether the
/// server checks tokens at all, so that a client shows only what it may do.
pub(crate) async fn whoami(State(state): State<AppState>, p: Principal) -> Response {
    axum::Json(json!({
        "auth": !state.config.no_auth,
        "role": p.role(),
        "stream_prefixes": p.prefixes(),
    }))
    .into_response()
}

/// Bytes of files under a directory by kind: segments, indexes, and the rest.
#[derive(Default)]
struct DiskUse {
    segments: u64,
    indexes: u64,
    other: u64,
    files: u64,
}

/// Walks the data directory (two levels at most: the store keeps side files
/// in a few subdirectories) and sums file sizes by kind.
fn disk_use(dir: &Path, depth: u8, out: &mut DiskUse) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            if depth < 2 {
                disk_use(&entry.path(), depth + 1, out);
            }
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        out.files += 1;
        if depth == 0 && name.ends_with(".seg") {
            out.segments += meta.len();
        } else if depth == 0 && name.ends_with(".idx") {
            out.indexes += meta.len();
        } else {
            out.other += meta.len();
        }
    }
}

/// `GET /node`: counts, disk usage by kind, compression, retention, the last
/// background error and the disk space left.
pub(crate) async fn node(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store();
    let last_verify = state.last_verify.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let body = state
        .blocking(move || {
            let stats = store.stats();
            let mut disk = DiskUse::default();
            disk_use(store.dir(), 0, &mut disk);
            Ok(json!({
                "head_position": store.head_position(),
                "events": stats.events,
                "streams": stats.streams,
                "segments": stats.segments,
                "compressed_segments": stats.compressed_segments,
                "active_events": stats.active_events,
                "disk": {
                    "segment_bytes": stats.segment_bytes,
                    "uncompressed_segment_bytes": stats.uncompressed_segment_bytes,
                    "index_bytes": stats.index_bytes,
                    "segment_file_bytes": disk.segments,
                    "index_file_bytes": disk.indexes,
                    "other_bytes": disk.other,
                    "files": disk.files,
                    "available_bytes": disk_available(store.dir()),
                },
                "retention": {
                    "max_bytes": stats.retention_max_bytes,
                    "held_bytes": stats.retention_held_bytes,
                    "held_by": stats.retention_held_by,
                    "appends_stopped": stats.appends_stopped_for_budget,
                },
                "last_background_error": stats.last_background_error,
                "write_failure": store.write_failure(),
                "last_verify": last_verify,
            }))
        })
        .await?;
    Ok(axum::Json(body).into_response())
}

/// `POST /admin/verify`: reads and checks every segment and index now. The
/// answer is kept (with the time it finished) for `GET /node`.
pub(crate) async fn verify(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store();
    let report = state.blocking(move || Ok(store.verify()?)).await?;
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    let finished_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let body = json!({
        "clean": report.is_clean(),
        "segments": report.segments,
        "indexes": report.indexes,
        "events": report.events,
        "bytes": report.bytes,
        "lost": report.lost,
        "removed": report.removed,
        "problems": problems,
        "torn_tails": report.torn_tails.len(),
        "finished_ms": finished_ms,
    });
    *state.last_verify.lock().unwrap_or_else(|p| p.into_inner()) = Some(body.clone());
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::category;

    #[test]
    fn search_ignores_ascii_case() {
        use super::contains_ignoring_ascii_case as c;
        assert!(c("Order-42", "order"));
        assert!(c("order-42", "r-4"));
        assert!(c("x", ""));
        assert!(!c("order", "orders"));
        assert!(!c("Ünïcode", "ünï"));
    }

    #[test]
    fn category_is_the_name_up_to_the_first_dash() {
        assert_eq!(category("order-42"), "order");
        assert_eq!(category("order-42-x"), "order");
        assert_eq!(category("orders"), "orders");
        assert_eq!(category("-x"), "");
    }
}
