//! `annal read`, `annal read-all` and `annal tail`.
//!
//! Reads page through the store (1,000 events at a time) and print as they
//! go, so that the output of a large store never sits in memory.

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annal::{Direction, Filter, GroupBy, LogFrom, Message, RecordedEvent, StreamFrom, SubscribeFrom, TopicPattern};

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::render::{self, Mode, Table};
use crate::{CountArgs, FilterArgs, Format, ReadAllArgs, ReadArgs, TailArgs};

/// Events read at a time.
pub const PAGE: u64 = 1000;

/// Prints events as JSON Lines or as a table whose widths fit the first page.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    table: Option<Table>,
}

const HEADER: [&str; 6] = ["POSITION", "STREAM", "REVISION", "TYPE", "TIMESTAMP", "DATA"];

fn cells(e: &RecordedEvent) -> Vec<String> {
    vec![
        e.position.to_string(),
        e.stream.clone(),
        e.revision.to_string(),
        e.event_type.clone(),
        render::timestamp(e.timestamp_micros),
        render::data_preview(e),
    ]
}

impl<W: Write> Printer<W> {
    /// A printer writing to `out`.
    pub fn new(out: W, format: Format) -> Self {
        Printer {
            out,
            format,
            table: None,
        }
    }

    /// Prints a page of events.
    pub fn page(&mut self, events: &[RecordedEvent]) -> CliResult {
        match self.format {
            Format::Json => {
                for e in events {
                    render::emit_line(&mut self.out, &render::event_line(e, Mode::Read))?;
                }
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = events.iter().map(cells).collect();
                self.header(&rows)?;
                if let Some(t) = &self.table {
                    for r in &rows {
                        t.row(&mut self.out, r)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn header(&mut self, sample: &[Vec<String>]) -> CliResult {
        if self.table.is_none() && self.format == Format::Table {
            let t = Table::fit(
                &HEADER,
                sample,
                &[20, 40, 20, 32, 27, 60],
                &[true, false, true, false, false, false],
            );
            t.row(&mut self.out, &HEADER)?;
            self.table = Some(t);
        }
        Ok(())
    }

    /// Finishes the output (a table prints its header even when empty).
    pub fn finish(mut self) -> CliResult {
        self.header(&[])?;
        render::flush(&mut self.out)
    }
}

/// `annal read STREAM`.
pub fn read(ctx: &Ctx, a: ReadArgs) -> CliResult {
    let store = ctx.open_read()?;
    let direction = if a.backwards {
        Direction::Backward
    } else {
        Direction::Forward
    };
    let mut from = a.from.map_or(StreamFrom::Start, StreamFrom::Revision);
    let mut remaining = a.limit.unwrap_or(u64::MAX);
    let mut printer = Printer::new(BufWriter::new(std::io::stdout().lock()), a.format);
    loop {
        // The first read also runs with --limit 0, so that a missing stream is still an error.
        let page = store.read_stream(&a.stream, direction, from, remaining.min(PAGE) as usize)?;
        let Some(last) = page.last().map(|e| e.revision) else {
            break;
        };
        printer.page(&page)?;
        remaining -= page.len() as u64;
        if remaining == 0 {
            break;
        }
        from = match direction {
            Direction::Forward => StreamFrom::Revision(last + 1),
            Direction::Backward if last == 0 => break,
            Direction::Backward => StreamFrom::Revision(last - 1),
        };
    }
    printer.finish()?;
    Ok(store.close()?)
}

fn filter_of(f: &FilterArgs, since: Option<i64>, until: Option<i64>) -> Filter {
    Filter {
        types: f.types.clone(),
        tags: f.tags.clone(),
        stream_prefix: f.stream_prefix.clone(),
        since_micros: since,
        until_micros: until,
        type_patterns: f.type_patterns.iter().map(|p| TopicPattern::new(p)).collect(),
        stream_patterns: f.stream_patterns.iter().map(|p| TopicPattern::new(p)).collect(),
        aggregate_type: f.aggregate_type.clone(),
        aggregate_id: f.aggregate_id.clone(),
        metadata: f.metadata.clone(),
        ..Filter::default()
    }
}

/// `annal count`.
pub fn count(ctx: &Ctx, a: CountArgs) -> CliResult {
    let store = ctx.open_read()?;
    let filter = filter_of(&a.filter, a.since, a.until);
    let answer = match a.group_by {
        None => serde_json::json!({ "count": store.count(&filter)? }),
        Some(by) => {
            let groups = store.count_by(&filter, by.parse::<GroupBy>()?)?;
            serde_json::json!({ "count": groups.values().sum::<u64>(), "groups": groups })
        }
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    render::emit_line(&mut out, answer.to_string().as_bytes())?;
    render::flush(&mut out)?;
    Ok(store.close()?)
}

/// `annal read-all`.
pub fn read_all(ctx: &Ctx, a: ReadAllArgs) -> CliResult {
    let store = ctx.open_read()?;
    let filter = filter_of(&a.filter, a.since, a.until);
    let direction = if a.backwards {
        Direction::Backward
    } else {
        Direction::Forward
    };
    let mut from = a.from.map_or(LogFrom::Start, LogFrom::Position);
    let mut remaining = a.limit.unwrap_or(u64::MAX);
    let mut printer = Printer::new(BufWriter::new(std::io::stdout().lock()), a.format);
    while remaining > 0 {
        let want = remaining.min(PAGE);
        let page = store.read_all(direction, from, want as usize, &filter)?;
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        printer.page(&page)?;
        remaining -= page.len() as u64;
        // A short page means the read reached the end of the log.
        if (page.len() as u64) < want {
            break;
        }
        from = match direction {
            Direction::Forward => LogFrom::Position(last + 1),
            Direction::Backward if last == 0 => break,
            Direction::Backward => LogFrom::Position(last - 1),
        };
    }
    printer.finish()?;
    Ok(store.close()?)
}

/// A flag set by Ctrl-C, SIGTERM or SIGHUP.
pub fn stop_flag() -> CliResult<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))
        .map_err(|e| CliError::msg(format!("installing the signal handler: {e}")))?;
    Ok(stop)
}

/// True when the reader of stdout has gone away (a closed pipe).
fn stdout_closed() -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
    let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

/// `annal tail`.
pub fn tail(ctx: &Ctx, a: TailArgs) -> CliResult {
    let store = ctx.open_owned()?;
    let stop = stop_flag()?;
    let from = if a.from_start {
        SubscribeFrom::Start
    } else {
        SubscribeFrom::End
    };
    let filter = filter_of(&a.filter, None, None);
    let subscription = match &a.stream {
        Some(s) => store.subscribe_stream(s, from),
        None => store.subscribe_all(from, filter.clone()),
    };
    // A stream subscription has no filter of its own: the filter's every
    // condition (types, patterns, tags, stream conditions, metadata) is checked
    // here. An event naming a subject (live or erased) never matches a metadata
    // filter, as on $all: its metadata is sealed, not indexed.
    let wanted = |e: &RecordedEvent| {
        a.stream.is_none()
            || (filter.admits_type(&e.event_type)
                && filter.tags.iter().all(|t| e.tags.contains(t))
                && filter.admits_stream(&e.stream)
                && (filter.metadata.is_empty() || e.personal == annal::Personal::Plain)
                && filter.admits_metadata(&e.metadata))
    };
    let rx = subscription.into_channel(1024)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    let result = (|| -> CliResult {
        while !stop.load(Ordering::SeqCst) {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Some(Ok(Message::Event(e))) => {
                    if wanted(&e) {
                        render::emit_line(&mut out, &render::event_line(&e, Mode::Read))?;
                    }
                    if rx.is_empty() {
                        render::flush(&mut out)?;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None if rx.is_finished() => break,
                None => {
                    render::flush(&mut out)?;
                    if stdout_closed() {
                        break;
                    }
                }
            }
        }
        render::flush(&mut out)
    })();
    drop(rx);
    let closed = store.close();
    match result {
        // A closed stdout ends the tail successfully.
        Err(e) if e.message.is_empty() => {}
        other => other?,
    }
    Ok(closed?)
}
