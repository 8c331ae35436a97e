//! `annal streams`, `stats`, `verify`, `repair`, `backup` and `restore`.

use std::io::BufWriter;
use std::path::Path;

use annal::{Options, Store};
// Where a path really is: the rule `POST /admin/backup` uses too.
use annal_server::paths::resolved;
use serde::Serialize;

use crate::Format;
use crate::ctx::{self, Ctx};
use crate::error::{CORRUPT, CliError, CliResult};
use crate::render::{self, Table};

fn stdout() -> BufWriter<std::io::StdoutLock<'static>> {
    BufWriter::new(std::io::stdout().lock())
}

/// `annal streams`.
pub fn streams(ctx: &Ctx, format: Format) -> CliResult {
    let store = ctx.open_read()?;
    let streams = store.streams();
    let mut out = stdout();
    match format {
        Format::Json => {
            for s in &streams {
                render::emit(
                    &mut out,
                    &crate::obj! {
                        "stream": s.name,
                        "last_revision": s.last_revision,
                        "last_position": s.last_position,
                    },
                )?;
            }
        }
        Format::Table => {
            let header = ["STREAM", "LAST REVISION", "LAST POSITION"];
            let rows: Vec<Vec<String>> = streams
                .iter()
                .map(|s| vec![s.name.clone(), s.last_revision.to_string(), s.last_position.to_string()])
                .collect();
            let t = Table::fit(&header, &rows, &[60, 20, 20], &[false, true, true]);
            t.row(&mut out, &header)?;
            for r in &rows {
                t.row(&mut out, r)?;
            }
        }
    }
    render::flush(&mut out)?;
    Ok(store.close()?)
}

/// Files and bytes under a directory.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    files: u64,
    bytes: u64,
}

fn usage(dir: &Path) -> Usage {
    let mut u = Usage::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return u;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            let sub = usage(&e.path());
            u.files += sub.files;
            u.bytes += sub.bytes;
        } else {
            u.files += 1;
            u.bytes += meta.len();
        }
    }
    u
}

/// Total and available bytes of the file system holding `path`.
fn fs_space(path: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some((s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize))
}

#[derive(Serialize)]
struct Stats {
    dir: String,
    events: u64,
    streams: u64,
    segments: usize,
    segment_bytes: u64,
    index_bytes: u64,
    active_events: u64,
    files: u64,
    disk_bytes: u64,
    torn_bytes: u64,
    /// Torn tails kept in torn/ (`annal verify` lists each with its segment and offset).
    torn_tails: usize,
    quarantine_bytes: u64,
    fs_total_bytes: Option<u64>,
    fs_available_bytes: Option<u64>,
    last_background_error: Option<String>,
    /// The forwarder whose retention hold is lowest, and the position it holds from.
    retention_held_by: Option<String>,
    /// The disk budget (`[retention] max_bytes`), if set.
    retention_max_bytes: Option<u64>,
    /// Bytes of sealed segments holding events a forwarder that waits has not delivered.
    retention_held_bytes: u64,
    /// True if those bytes alone are over the disk budget.
    retention_budget_exceeded: bool,
    /// True while appends are refused for the budget (`when_full = "stop-appends"`).
    appends_stopped_for_budget: bool,
}

/// `annal stats`.
pub fn stats(ctx: &Ctx, format: Format) -> CliResult {
    let store = ctx.open_read()?;
    let s = store.stats();
    let dir = &ctx.data;
    let torn = annal::torn_tails(&annal::FsStorage, dir)?;
    let all = usage(dir);
    let space = fs_space(dir);
    let stats = Stats {
        dir: dir.display().to_string(),
        events: s.events,
        streams: s.streams,
        segments: s.segments,
        segment_bytes: s.segment_bytes,
        index_bytes: s.index_bytes,
        active_events: s.active_events,
        files: all.files,
        disk_bytes: all.bytes,
        torn_bytes: usage(&dir.join("torn")).bytes,
        torn_tails: torn.len(),
        quarantine_bytes: usage(&dir.join(annal::layout::QUARANTINE_DIR)).bytes,
        fs_total_bytes: space.map(|s| s.0),
        fs_available_bytes: space.map(|s| s.1),
        last_background_error: s.last_background_error.clone(),
        retention_held_by: s
            .retention_held_by
            .iter()
            .min_by_key(|(_, p)| *p)
            .map(|(n, p)| format!("{n} from position {p}")),
        retention_max_bytes: s.retention_max_bytes,
        retention_held_bytes: s.retention_held_bytes,
        retention_budget_exceeded: s.budget_exceeded_by_holds(),
        appends_stopped_for_budget: s.appends_stopped_for_budget,
    };
    store.close()?;
    let mut out = stdout();
    match format {
        Format::Json => render::emit(&mut out, &stats)?,
        Format::Table => render::key_values(&mut out, &stats)?,
    }
    render::flush(&mut out)
}

fn read_options(ctx: &Ctx) -> Options {
    ctx.options.clone().create_if_missing(false)
}

/// What is wrong with `annal.meta` in a directory that holds segments, with
/// the byte offset concerned; `None` if it is whole enough for the library to
/// check (its checksum and version are checked on open).
fn identity_damage(dir: &Path) -> Option<(u64, String)> {
    let has_segments = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        annal::layout::is_segment_file(&name)
    });
    if !has_segments {
        return None;
    }
    let bytes = match std::fs::read(dir.join(annal::layout::META_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some((0, "missing, yet the directory holds segments".into()));
        }
        Err(_) => return None,
    };
    let magic = annal::layout::META_MAGIC;
    if let Some(at) = (0..magic.len()).find(|i| bytes.get(*i) != Some(&magic[*i])) {
        if at >= bytes.len() {
            return Some((at as u64, format!("truncated to {} bytes (64 expected)", bytes.len())));
        }
        return Some((at as u64, "not an annal identity file (bad magic)".into()));
    }
    match bytes.len() {
        64 => None,
        n if n < 64 => Some((n as u64, format!("truncated to {n} bytes (64 expected)"))),
        n => Some((64, format!("{n} bytes long (64 expected)"))),
    }
}

/// `annal verify`.
pub fn verify(ctx: &Ctx) -> CliResult {
    // With segments present, a damaged or missing identity file is corruption
    // (which `annal repair` fixes), not a sign that this is not a store.
    if ctx.data.is_dir()
        && let Some((offset, what)) = identity_damage(&ctx.data)
    {
        let path = ctx.data.join(annal::layout::META_FILE);
        return Err(CliError::with_code(
            CORRUPT,
            format!(
                "corruption in {} at byte {offset}: {what}; run `annal repair` (it keeps every byte it removes in quarantine/)",
                path.display()
            ),
        ));
    }
    ctx.require_store()?;
    // Verify rewrites nothing of its own: no compression or scheduled
    // scavenging runs while it checks (an open still cuts a torn tail, saved
    // in torn/ and reported below, as every open does).
    let mut options = read_options(ctx).no_compression();
    options.retention.interval_ms = None;
    let store = match Store::open(&ctx.data, options.clone()) {
        Ok(s) => s,
        // Beside its owner (a running `annal serve`) or on a read-only
        // mount, the store is checked read only: nothing is cut, and damage
        // is listed, not refused.
        Err(annal::Error::Locked { .. }) => Store::open_read_only(&ctx.data, options)?,
        Err(annal::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
            Store::open_read_only(&ctx.data, options)?
        }
        Err(e @ annal::Error::Corruption { .. }) => {
            return Err(CliError::with_code(
                CORRUPT,
                format!(
                    "the store cannot be opened: {e}; run `annal repair` (it keeps every byte it removes in quarantine/)"
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let pb = ctx::spinner("verifying");
    let report = store.verify();
    pb.finish_and_clear();
    let report = report?;
    store.close()?;
    let mut out = stdout();
    for t in &report.torn_tails {
        render::emit(
            &mut out,
            &crate::obj! {"torn_tail": t.file.display().to_string(), "segment": t.segment_base, "offset": t.offset, "bytes": t.bytes},
        )?;
    }
    for p in &report.problems {
        render::emit(
            &mut out,
            &crate::obj! {"file": p.file.display().to_string(), "offset": p.offset, "problem": p.what},
        )?;
    }
    render::emit(
        &mut out,
        &crate::obj! {
            "segments": report.segments,
            "indexes": report.indexes,
            "events": report.events,
            "bytes": report.bytes,
            "lost": report.lost,
            "problems": report.problems.len(),
            "torn_tails": report.torn_tails.len(),
        },
    )?;
    render::flush(&mut out)?;
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::with_code(
            CORRUPT,
            format!(
                "{} problem(s) found; run `annal repair` to fix the store (it keeps every byte it removes in quarantine/)",
                report.problems.len()
            ),
        ))
    }
}

/// `annal repair`.
pub fn repair(ctx: &Ctx) -> CliResult {
    let dir = &ctx.data;
    if !dir.is_dir() {
        return Err(CliError::msg(format!(
            "no store at {}: the directory does not exist",
            dir.display()
        )));
    }
    let pb = ctx::spinner("repairing");
    let report = annal::repair(dir);
    pb.finish_and_clear();
    let report = report?;
    let mut out = stdout();
    for a in &report.actions {
        render::emit(&mut out, &crate::obj! { "action": a })?;
    }
    for u in &report.unfixed {
        render::emit(&mut out, &crate::obj! { "unfixed": u })?;
    }
    render::emit(
        &mut out,
        &crate::obj! {
            "lost_positions": report.lost_positions,
            "lost_unattributed": report.lost_unattributed,
            "quarantined_bytes": report.quarantined_bytes,
            "quarantine": report.quarantine.as_ref().map(|q| q.display().to_string()),
        },
    )?;
    render::flush(&mut out)?;
    if report.unfixed.is_empty() {
        Ok(())
    } else {
        Err(CliError::with_code(
            CORRUPT,
            format!("{} problem(s) repair could not fix", report.unfixed.len()),
        ))
    }
}

fn print_copy(report: &annal::BackupReport) -> CliResult {
    let mut out = stdout();
    render::emit(
        &mut out,
        &crate::obj! {
            "dir": report.dir.display().to_string(),
            "files": report.files,
            "bytes": report.bytes,
            "events": report.events,
        },
    )?;
    render::flush(&mut out)
}

/// `annal backup DIR`.
pub fn backup(ctx: &Ctx, dest: &Path) -> CliResult {
    if resolved(dest).starts_with(resolved(&ctx.data)) {
        return Err(CliError::msg(format!(
            "{} is inside the data directory {}; back up to a directory outside it",
            dest.display(),
            ctx.data.display()
        )));
    }
    let store = ctx.open_owned()?;
    let pb = ctx::spinner(format!("backing up to {}", dest.display()));
    let report = store.backup(dest);
    pb.finish_and_clear();
    let report = report?;
    store.close()?;
    print_copy(&report)
}

/// `annal restore DIR`.
pub fn restore(ctx: &Ctx, from: &Path) -> CliResult {
    let (src, dst) = (resolved(from), resolved(&ctx.data));
    if src.starts_with(&dst) || dst.starts_with(&src) {
        return Err(CliError::msg(format!(
            "cannot restore {} into {}: one contains the other",
            from.display(),
            ctx.data.display()
        )));
    }
    if !from.is_dir() {
        return Err(CliError::msg(format!(
            "no backup at {}: not a directory",
            from.display()
        )));
    }
    let pb = ctx::spinner(format!("restoring {}", from.display()));
    let report = annal::restore(from, &ctx.data);
    pb.finish_and_clear();
    print_copy(&report?)
}
