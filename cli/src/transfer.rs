//! `annal export` and `annal import`.
//!
//! An export is the log as JSON Lines: each event with its stream, id, type,
//! data, metadata and tags, plus its original revision, position and timestamp
//! for information. An import appends them back, consecutive events of one
//! stream together (up to 1,000 per append), many appends at a time in one
//! group commit ([`Store::append_batch`]), keeping their ids, so that the
//! store recognises events it already holds: importing a file twice, or into a
//! store that already holds part of it, stores each event once.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::Path;

use annal::{Append, Direction, Durability, EventData, ExpectedVersion, Filter, LogFrom, Store};
use uuid::Uuid;

use crate::ctx::{self, Ctx};
use crate::error::{CliError, CliResult};
use crate::read::PAGE;
use crate::render::{self, Mode};
use crate::write::{EventLine, for_each_line_idle};
use crate::{ExportArgs, ImportArgs};

/// `annal export`.
pub fn export(ctx: &Ctx, a: ExportArgs) -> CliResult {
    let store = ctx.open_read()?;
    let head = store.head_position();
    let pb = ctx::progress_bar(head.saturating_sub(a.from), "positions");
    pb.set_message("exporting");
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut from = a.from;
    let mut exported = 0u64;
    while from < head {
        let page = store.read_all(
            Direction::Forward,
            LogFrom::Position(from),
            PAGE as usize,
            &Filter::all(),
        )?;
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        for e in page.iter().filter(|e| !e.stream.starts_with('$')) {
            render::emit_line(&mut out, &render::event_line(e, Mode::Export))?;
            exported += 1;
        }
        from = last + 1;
        pb.set_position(from - a.from);
        if (page.len() as u64) < PAGE {
            break;
        }
    }
    render::flush(&mut out)?;
    pb.finish_and_clear();
    if ctx::interactive() {
        let _ = writeln!(std::io::stderr(), "exported {exported} events");
    }
    Ok(store.close()?)
}

/// Consecutive events of one stream, waiting to be appended together.
#[derive(Default)]
struct Batch {
    stream: String,
    /// The run's events; emptied when they are moved into an append.
    events: Vec<EventData>,
    /// Number of events in the run (`events` may have been moved).
    count: usize,
    first_line: usize,
    last_line: usize,
    size: usize,
}

/// What an import did.
#[derive(Default, serde::Serialize)]
struct Summary {
    /// Events written.
    events: u64,
    /// Appends that wrote them.
    appends: u64,
    /// Events not written: already stored (same id), or of a system stream.
    skipped: u64,
}

/// The encoded size of an event, as the store counts it against `max_append_size`.
fn encoded_size(stream: &str, e: &EventData) -> usize {
    64 + stream.len()
        + e.event_type.len()
        + e.tags.iter().map(|t| t.len() + 2).sum::<usize>()
        + e.data.len()
        + e.metadata.len()
}

/// Whether the runs handed to [`Importer::append_runs`] may hold ids the
/// store already has.
#[derive(Clone, Copy)]
enum Held {
    /// None of their ids is stored: their events are moved into the append.
    None,
    /// Some may be: their events are kept to append again what is not stored.
    Some,
}

/// Most events an import hands to [`Store::append_batch`] at once.
const GROUP_EVENTS: usize = 4096;
/// Most bytes (as [`encoded_size`] counts them) an import hands to [`Store::append_batch`] at once.
const GROUP_BYTES: usize = 16 << 20;

struct Importer<'a> {
    store: &'a Store,
    max_events: usize,
    max_bytes: usize,
    /// Runs of one stream each, appended together by the next [`Importer::flush`].
    runs: Vec<Batch>,
    /// Events and bytes in `runs`, and every id among them.
    events: usize,
    bytes: usize,
    ids: HashSet<Uuid>,
    summary: Summary,
}

impl Importer<'_> {
    fn add(&mut self, line: usize, stream: String, event: EventData) -> CliResult {
        let size = encoded_size(&stream, &event);
        // An id already waiting (in any run) is appended after the runs before
        // it are stored, so that it is recognised as stored.
        if self.events >= GROUP_EVENTS
            || self.bytes + size > GROUP_BYTES
            || event.id.is_some_and(|id| self.ids.contains(&id))
        {
            self.flush()?;
        }
        let fits = self
            .runs
            .last()
            .is_some_and(|b| b.stream == stream && b.events.len() < self.max_events && b.size + size <= self.max_bytes);
        if !fits {
            self.runs.push(Batch {
                stream,
                first_line: line,
                ..Batch::default()
            });
        }
        self.events += 1;
        self.bytes += size;
        self.ids.extend(event.id);
        let Some(b) = self.runs.last_mut() else {
            return Err(CliError::msg("internal: no run to add to"));
        };
        b.last_line = line;
        b.size += size;
        b.events.push(event);
        b.count += 1;
        Ok(())
    }

    /// Appends the waiting runs, in order: runs none of whose ids the store
    /// holds go together in one batch; a run that holds some (an import
    /// repeated, or resumed) is appended alone, at its place, after the runs
    /// before it, so that the events it still adds keep the file's order.
    fn flush(&mut self) -> CliResult {
        let runs = std::mem::take(&mut self.runs);
        self.events = 0;
        self.bytes = 0;
        self.ids.clear();
        let mut fresh = Vec::with_capacity(runs.len());
        for b in runs {
            if self.holds_some(&b)? {
                self.append_runs(std::mem::take(&mut fresh), Held::None)?;
                self.append_runs(vec![b], Held::Some)?;
            } else {
                fresh.push(b);
            }
        }
        self.append_runs(fresh, Held::None)
    }

    /// Whether the store already holds one of the run's event ids, visible
    /// or not (a deleted stream's events keep their ids, and an append meets them).
    fn holds_some(&self, b: &Batch) -> CliResult<bool> {
        for id in b.events.iter().filter_map(|e| e.id) {
            let held = self.store.holds_event_id(id).map_err(|e| {
                CliError::from(e).context(format!(
                    "lines {}-{} (stream {:?})",
                    b.first_line, b.last_line, b.stream
                ))
            })?;
            if held {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Appends runs in one batch and counts each one's result; the first
    /// failure is returned once every run is accounted for. The events of
    /// runs `held` says hold no stored id are moved into the append, not
    /// copied: only a run holding some may need them again (see [`Self::settle`]).
    fn append_runs(&mut self, mut runs: Vec<Batch>, held: Held) -> CliResult {
        let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
            return Ok(());
        };
        let lines = format!("lines {}-{}", first.first_line, last.last_line);
        let head = self.store.head_position();
        let appends = runs
            .iter_mut()
            .map(|b| {
                let events = match held {
                    Held::Some => b.events.clone(),
                    Held::None => std::mem::take(&mut b.events),
                };
                Append::new(b.stream.clone(), ExpectedVersion::Any, events)
            })
            .collect();
        let results = match self.store.append_batch(appends) {
            Ok(results) => results,
            // A hard-deleted stream refuses the whole batch before any id is
            // looked at; a run that holds stored ids is appended alone, and
            // its result says which of its events are stored (see `settle`).
            Err(e @ annal::Error::StreamDeleted(_)) if matches!(held, Held::Some) && runs.len() == 1 => vec![Err(e)],
            Err(e) => return Err(CliError::from(e).context(lines)),
        };
        let mut first_error = None;
        for (b, r) in runs.into_iter().zip(results) {
            if let Err(e) = self.settle(b, r, head)
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Counts one run's result. The store returns the original result for a
    /// run whose ids are all stored at that place; a run only part of which is
    /// stored (or stored elsewhere) fails with an idempotency conflict and is
    /// appended again without the stored events.
    fn settle(&mut self, b: Batch, result: annal::Result<annal::AppendResult>, head: u64) -> CliResult {
        let at = |e: CliError| {
            e.context(format!(
                "lines {}-{} (stream {:?})",
                b.first_line, b.last_line, b.stream
            ))
        };
        let n = b.count as u64;
        match result {
            Ok(r) if r.position < head => self.summary.skipped += n,
            Ok(_) => {
                self.summary.events += n;
                self.summary.appends += 1;
            }
            // A run checked to hold no stored id gave its events to the
            // append: nothing to append again. The import holds the store
            // alone (its lock) and looks ids up as the writer does, so this
            // is not expected: reported, not retried.
            Err(e @ annal::Error::IdempotencyConflict { .. }) if b.events.len() != b.count => {
                return Err(at(CliError::from(e)));
            }
            // Appended alone because it holds some stored ids: those are
            // skipped and the rest appended. A hard-deleted stream refuses
            // the run before its ids are looked at: a run all of whose ids
            // are stored is skipped there too, as for any other stream.
            Err(annal::Error::IdempotencyConflict { .. } | annal::Error::StreamDeleted(_))
                if b.events.len() == b.count =>
            {
                let mut fresh = Vec::with_capacity(b.events.len());
                let mut skipped = 0;
                for e in b.events {
                    let stored = match e.id {
                        Some(id) => self.store.holds_event_id(id).map_err(|e| at(e.into()))?,
                        None => false,
                    };
                    if stored {
                        skipped += 1;
                    } else {
                        fresh.push(e);
                    }
                }
                // Counted once the run is settled: a failure's summary counts
                // only the runs before it (some of the skipped follow the failing event).
                if !fresh.is_empty() {
                    let n = fresh.len() as u64;
                    self.store
                        .append(&b.stream, ExpectedVersion::Any, fresh)
                        .map_err(|e| at(e.into()))?;
                    self.summary.events += n;
                    self.summary.appends += 1;
                }
                self.summary.skipped += skipped;
            }
            Err(e) => return Err(at(e.into())),
        }
        Ok(())
    }
}

/// Lines parsed ahead of the appends, per chunk.
const CHUNK_LINES: usize = 1024;
/// Chunks parsed ahead of the appends, at most.
const CHUNKS_AHEAD: usize = 4;

/// One line of an import file, parsed.
enum Parsed {
    /// An event to append to `stream`, from line `line`.
    Event {
        line: usize,
        stream: String,
        event: EventData,
    },
    /// An event of a system stream (`$…`), which an import skips.
    Skipped,
}

/// Lines parsed in order, and the bytes of the file read up to the last one.
#[derive(Default)]
struct Chunk {
    lines: Vec<Parsed>,
    read: u64,
}

/// Parses the lines of `file` into chunks sent to `chunks`, in order; a line
/// that does not parse ends the chunks with its error, after the lines before
/// it. Stops when the receiving side is gone (the import failed).
fn parse_lines(file: &Path, max_line: usize, chunks: &std::sync::mpsc::SyncSender<CliResult<Chunk>>) {
    // Both the line callback and the idle one hand the chunk on.
    let chunk = std::cell::RefCell::new(Chunk::default());
    let send = || {
        let full = std::mem::take(&mut *chunk.borrow_mut());
        chunks.send(Ok(full)).map_err(|_| CliError::msg("the import stopped"))
    };
    let result = for_each_line_idle(
        file,
        max_line,
        |n, line, read| {
            let l = EventLine::parse(n, line)?;
            let Some(stream) = l.stream.clone() else {
                return Err(CliError::msg(format!("line {n}: missing field `stream`")));
            };
            let erased = l.erased;
            let mut event = l.into_event().map_err(|e| CliError::msg(format!("line {n}: {e}")))?;
            // An erased event is imported erased, at its place in its stream:
            // it has no data, metadata or subject left.
            if erased {
                event.data = Default::default();
                event.metadata = Default::default();
                event.subject = None;
                event = event.already_erased();
            }
            let full = {
                let mut c = chunk.borrow_mut();
                c.lines.push(if stream.starts_with('$') {
                    Parsed::Skipped
                } else {
                    Parsed::Event { line: n, stream, event }
                });
                c.read = read;
                c.lines.len() >= CHUNK_LINES
            };
            if full { send() } else { Ok(()) }
        },
        // The next read may wait for its input: what is parsed goes on now,
        // so that a live producer's lines are appended (and their failures
        // told) without waiting for more.
        || {
            if chunk.borrow().lines.is_empty() {
                Ok(())
            } else {
                send()
            }
        },
    );
    // What parsed before a failure is appended before the failure is told.
    if !chunk.borrow().lines.is_empty() && send().is_err() {
        return;
    }
    if let Err(e) = result {
        chunks.send(Err(e)).ok();
    }
}

/// Appends the chunks `parser` sends, in order, then what is left. On a
/// failure it returns at once, without waiting for the parser: dropping the
/// receiving side stops it at its next chunk, and one blocked on an input
/// that stays open (stdin from a live producer) must not hold the store.
fn append_parsed(
    imp: &mut Importer<'_>,
    parsed: std::sync::mpsc::Receiver<CliResult<Chunk>>,
    parser: std::thread::JoinHandle<()>,
    pb: &indicatif::ProgressBar,
) -> CliResult {
    for chunk in parsed {
        // What parsed before a bad line is appended before its error is told.
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                // Both are told if appending the events before it fails too.
                return Err(match imp.flush() {
                    Ok(()) => e,
                    Err(f) => CliError::with_code(
                        e.code,
                        format!(
                            "{}; appending the events before it failed too: {}",
                            e.message, f.message
                        ),
                    ),
                });
            }
        };
        for line in chunk.lines {
            match line {
                Parsed::Event { line, stream, event } => imp.add(line, stream, event)?,
                Parsed::Skipped => imp.summary.skipped += 1,
            }
        }
        pb.set_position(chunk.read);
    }
    // The chunks end when the parser is done, or if it panicked: then the
    // file was not read to its end, and the import must not say done.
    parser
        .join()
        .map_err(|_| CliError::msg("internal: the thread parsing the file stopped before its end"))?;
    imp.flush()
}

/// `annal import FILE`.
pub fn import(ctx: &Ctx, a: ImportArgs) -> CliResult {
    let file = a.file.as_path();
    let len = (file != Path::new("-"))
        .then(|| std::fs::metadata(file).ok().map(|m| m.len()))
        .flatten();
    if file != Path::new("-") && !file.is_file() {
        return Err(CliError::msg(format!("no file {}", file.display())));
    }
    // Bulk speed: the appends are not synced one by one; the close syncs them
    // all at once (and each segment seal syncs what it seals). A crash midway
    // loses only unsynced appends, which importing the file again restores,
    // skipping what the store already holds by id.
    let store = ctx.open_write_with(|o| o.durability(Durability::Never))?;
    let pb = match len {
        Some(len) => ctx::progress_bytes(len),
        None => ctx::spinner("importing from stdin"),
    };
    pb.set_message("importing");
    let mut imp = Importer {
        store: &store,
        max_events: ctx.options.max_events_per_append.min(PAGE as usize),
        max_bytes: ctx.options.max_append_size,
        runs: Vec::new(),
        events: 0,
        bytes: 0,
        ids: HashSet::new(),
        summary: Summary::default(),
    };
    // Lines are parsed on a thread of their own, a chunk at a time, while
    // this one appends: parsing is about a quarter of an import's work.
    let (chunks, parsed) = std::sync::mpsc::sync_channel::<CliResult<Chunk>>(CHUNKS_AHEAD);
    let path = file.to_path_buf();
    let max_line = crate::write::max_line(ctx.options.max_event_size);
    let parser = std::thread::Builder::new()
        .name("annal-import-parse".into())
        .spawn(move || parse_lines(&path, max_line, &chunks))
        .map_err(|e| CliError::io("starting the thread that parses the file", e))?;
    let result = append_parsed(&mut imp, parsed, parser, &pb);
    pb.finish_and_clear();
    if let Err(e) = result {
        let s = &imp.summary;
        let done = s.events + s.skipped;
        return Err(if done > 0 {
            let note = format!(
                "; {} events before it were imported ({} new); importing the file again after fixing it skips them",
                done, s.events
            );
            CliError::with_code(e.code, format!("{}{note}", e.message))
        } else {
            e
        });
    }
    // The summary is printed only once everything it counts is durable.
    let summary = imp.summary;
    store.close()?;
    let mut out = std::io::stdout().lock();
    render::emit(&mut out, &summary)?;
    out.flush().map_err(|e| CliError::io("writing output", e))?;
    Ok(())
}
