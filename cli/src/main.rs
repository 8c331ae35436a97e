//! The `annal` command: append, read, follow, check, repair, move and
//! benchmark an annal event store from the shell.
//!
//! Output is JSON (one object per line) unless `--format table` is given;
//! errors go to stderr as `annal: <message>` with an exit code that tells
//! their kind (see [`error`]).

mod admin;
mod bench;
mod config;
mod ctx;
mod error;
mod forward;
mod lifecycle;
mod read;
mod render;
mod transfer;
mod write;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::ctx::Ctx;
use crate::error::CliResult;

/// annal: an embeddable event store, from the command line.
#[derive(Debug, Parser)]
#[command(name = "annal", version, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Exit codes: 0 success, 1 error, 2 usage error, 3 wrong expected version, \
                        4 stream not found or deleted, 5 corruption detected."
)]
pub struct Cli {
    /// The data directory (created by the first write); give it before the command.
    #[arg(long, value_name = "DIR", default_value = "./annal-data", env = "ANNAL_DATA")]
    data: PathBuf,
    /// The configuration file [default: annal.toml next to the data directory, if present].
    #[arg(long, global = true, value_name = "FILE", env = "ANNAL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append one event, or every line of a JSON Lines file as one atomic append.
    Append(AppendArgs),
    /// Print the events of one stream as JSON Lines.
    Read(ReadArgs),
    /// Print events of the global log (all streams) as JSON Lines, optionally filtered.
    ReadAll(ReadAllArgs),
    /// Follow new events live until interrupted.
    Tail(TailArgs),
    /// Count the events of the global log that pass a filter, as JSON: {"count": N} (and "groups" with --group-by).
    Count(CountArgs),
    /// List the streams with their last revision and position.
    Streams(FormatArgs),
    /// Print figures about the store and its directory.
    Stats(FormatArgs),
    /// Check every checksum and index entry; exit 5 if anything is wrong.
    Verify,
    /// Repair a damaged store (its bytes are never deleted: they go to quarantine/).
    Repair,
    /// Write every event (system streams excepted) as JSON Lines, in log order.
    Export(ExportArgs),
    /// Append the events of an export; importing the same file twice is harmless.
    Import(ImportArgs),
    /// Copy the store, consistently, into an empty or new directory.
    Backup(DirArg),
    /// Restore a backup into the data directory (which must be empty or absent).
    Restore(DirArg),
    /// Measure appends and reads on this machine's disk, in a temporary store.
    Bench(BenchArgs),
    /// Delete a stream: soft (appending again continues its revisions) or hard (forever).
    Delete(DeleteArgs),
    /// Erase a subject's personal data for good: destroy its key; its events read back erased.
    Shred(ShredArgs),
    /// Show a stream's metadata, or set it with --set.
    Metadata(MetadataArgs),
    /// Scavenge deleted and expired events, then compress sealed segments if configured.
    Compact(CompactArgs),
    /// Serve the HTTP/JSON API and the KurrentDB gRPC protocol (tokens from annal.toml's [server], or --no-auth).
    Serve(ServeArgs),
    /// Ship events to PostgreSQL, NATS JetStream or another annal, in the foreground; `forward status` shows checkpoints.
    Forward(forward::ForwardArgs),
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The stream to delete.
    pub stream: String,
    /// Delete for good: the name can never be used again.
    #[arg(long)]
    pub hard: bool,
    /// Expected state of the stream: any, exists, or its last revision.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    pub expected: annal::ExpectedVersion,
}

#[derive(Debug, Args)]
pub struct ShredArgs {
    /// The subject, as events named it (`--subject`, `"subject"`).
    pub subject: String,
}

#[derive(Debug, Args)]
pub struct MetadataArgs {
    /// The stream.
    pub stream: String,
    /// New metadata, a JSON object: max_age_ms, max_count, truncate_before, custom.
    #[arg(long, value_name = "JSON")]
    pub set: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Compress sealed segments even if annal.toml turns compression off.
    #[arg(long)]
    pub compress: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:2114, or [server] listen).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Open mode for local development: no tokens (refused on a non-loopback address).
    #[arg(long)]
    pub no_auth: bool,
    /// HOST:PORT that the gRPC gossip answer advertises (default: the address the client used).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// JSON: one object per line.
    #[default]
    #[value(alias = "jsonl")]
    Json,
    /// A table for people.
    Table,
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The stream to append to.
    pub stream: String,
    /// Expected state of the stream: any, no-stream, exists, or the stream's last revision.
    #[arg(long, default_value = "any", value_parser = parse_expected)]
    pub expected: annal::ExpectedVersion,
    /// Event type.
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "jsonl")]
    pub event_type: Option<String>,
    /// Event data: a JSON value.
    #[arg(long, value_name = "JSON", required_unless_present = "jsonl")]
    pub data: Option<String>,
    /// Event metadata: a JSON value.
    #[arg(long, value_name = "JSON", conflicts_with = "jsonl")]
    pub metadata: Option<String>,
    /// Event id (for idempotent retries) [default: a new random id].
    #[arg(long, value_name = "UUID", conflicts_with = "jsonl")]
    pub id: Option<Uuid>,
    /// A tag (repeatable).
    #[arg(long = "tag", value_name = "TAG", conflicts_with = "jsonl")]
    pub tags: Vec<String>,
    /// The subject whose personal data the event carries: data and metadata
    /// are stored encrypted under the subject's key, which `annal shred` destroys.
    #[arg(long, value_name = "SUBJECT", conflicts_with = "jsonl")]
    pub subject: Option<String>,
    /// Append every line of this JSON Lines file (`-`: stdin) as one atomic append.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["event_type", "data"])]
    pub jsonl: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The stream.
    pub stream: String,
    /// First revision to read [default: the first, or the last with --backwards].
    #[arg(long, value_name = "REV")]
    pub from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    pub backwards: bool,
    /// Most events to print [default: all].
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only events of this type (repeatable: any of them).
    #[arg(long = "type", value_name = "T")]
    pub types: Vec<String>,
    /// Only events carrying this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Only events of streams whose name starts with this.
    #[arg(long, value_name = "P")]
    pub stream_prefix: Option<String>,
    /// Only events whose type matches this topic pattern (words between
    /// dots; `*` one word, `#` zero or more; repeatable: any of them).
    #[arg(long = "type-pattern", value_name = "PATTERN")]
    pub type_patterns: Vec<String>,
    /// Only events of streams whose name matches this topic pattern (repeatable: any of them).
    #[arg(long = "stream-pattern", value_name = "PATTERN")]
    pub stream_patterns: Vec<String>,
    /// Only events of aggregates of this type: streams `<TYPE>-<id>` (split at the first `-`).
    #[arg(long, value_name = "TYPE")]
    pub aggregate_type: Option<String>,
    /// Only events of aggregates with this id: streams `<type>-<ID>` (split at the first `-`).
    #[arg(long, value_name = "ID")]
    pub aggregate_id: Option<String>,
    /// Only events whose metadata's top-level KEY holds the string VALUE
    /// (repeatable: all of them). Not indexed: a read that finds no match in
    /// the first 1,000,000 events it examines stops with an error saying where to go on.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
}

/// Parses `KEY=VALUE` (the value may hold `=`).
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(Debug, Args)]
pub struct CountArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only events recorded at or after TIME (RFC 3339, or a duration ago: 15m, 2h, 7d).
    #[arg(long, value_name = "TIME", value_parser = render::parse_time)]
    pub since: Option<i64>,
    /// Only events recorded before TIME (RFC 3339, or a duration ago: 15m, 2h, 7d).
    #[arg(long, value_name = "TIME", value_parser = render::parse_time)]
    pub until: Option<i64>,
    /// Also break the count down: type, stream, category (stream name up to its first `-`) or day (UTC).
    #[arg(long, value_name = "BY", value_parser = ["type", "stream", "category", "day"])]
    pub group_by: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReadAllArgs {
    /// First position to read [default: the first, or the last with --backwards].
    #[arg(long, value_name = "POS")]
    pub from: Option<u64>,
    /// Newest first.
    #[arg(long)]
    pub backwards: bool,
    /// Most events to print [default: all].
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only events recorded at or after TIME (RFC 3339, or a duration ago: 15m, 2h, 7d).
    #[arg(long, value_name = "TIME", value_parser = render::parse_time)]
    pub since: Option<i64>,
    /// Only events recorded before TIME (RFC 3339, or a duration ago: 15m, 2h, 7d).
    #[arg(long, value_name = "TIME", value_parser = render::parse_time)]
    pub until: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Follow this stream [default: all streams].
    #[arg(conflicts_with_all = ["all", "stream_prefix"])]
    pub stream: Option<String>,
    /// Follow the global log (all streams); the default without STREAM.
    #[arg(long)]
    pub all: bool,
    /// Print the existing events first, then follow.
    #[arg(long)]
    pub from_start: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// First position to export.
    #[arg(long, value_name = "POS", default_value_t = 0)]
    pub from: u64,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The JSON Lines file to import (`-`: stdin).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct DirArg {
    /// The directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Events of the 32-thread and the batch workloads (and so of the scan).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub events: u64,
    /// Seconds of single durable appends (for the appends/s and latency figures).
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub seconds: f64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

fn parse_expected(s: &str) -> Result<annal::ExpectedVersion, String> {
    s.parse::<annal::ExpectedVersion>()
        .map_err(|_| format!("{s:?} is not an expected version (any, no-stream, exists, or a revision such as 3)"))
}

fn run(cli: Cli) -> CliResult {
    // Restore is the one command whose data directory is the target of a copy, not a store to open.
    let ctx = Ctx::new(cli.data, cli.config.as_deref())?;
    match cli.command {
        Command::Append(a) => write::append(&ctx, a),
        Command::Read(a) => read::read(&ctx, a),
        Command::ReadAll(a) => read::read_all(&ctx, a),
        Command::Tail(a) => read::tail(&ctx, a),
        Command::Count(a) => read::count(&ctx, a),
        Command::Streams(a) => admin::streams(&ctx, a.format),
        Command::Stats(a) => admin::stats(&ctx, a.format),
        Command::Verify => admin::verify(&ctx),
        Command::Repair => admin::repair(&ctx),
        Command::Export(a) => transfer::export(&ctx, a),
        Command::Import(a) => transfer::import(&ctx, a),
        Command::Backup(a) => admin::backup(&ctx, &a.dir),
        Command::Restore(a) => admin::restore(&ctx, &a.dir),
        Command::Bench(a) => bench::bench(&ctx, a),
        Command::Delete(a) => lifecycle::delete(&ctx, &a.stream, a.expected, a.hard),
        Command::Shred(a) => lifecycle::shred(&ctx, &a.subject),
        Command::Metadata(a) => lifecycle::metadata(&ctx, &a.stream, a.set.as_deref()),
        Command::Compact(a) => lifecycle::compact(&ctx, a.compress),
        Command::Serve(a) => lifecycle::serve(&ctx, a.listen, a.no_auth, a.advertise),
        Command::Forward(a) => forward::forward(&ctx, a),
    }
}

fn main() {
    // A panic is a bug: say so in one line, without a backtrace, and exit with 1.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "annal: internal error: {what}{at} (please report it)"
        );
    }));
    let cli = Cli::parse();
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => error::OK,
        Ok(Err(e)) => {
            if !e.message.is_empty() {
                let _ = writeln!(std::io::stderr(), "annal: {}", e.message);
            }
            e.code
        }
        Err(_) => error::ERROR,
    };
    std::process::exit(code);
}
