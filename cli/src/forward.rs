//! `annal forward`: one forwarder in the foreground (until interrupted, or
//! `--once`: until it has forwarded what exists), `annal forward status`: the
//! checkpoints forwarders saved in the store, `annal forward forget`:
//! dropping a stopped forwarder's retention hold, `annal forward release`:
//! releasing a forwarder's name completely, and `annal forward ack-gap`:
//! acknowledging the gap a stopped forwarder reported.
//!
//! It turns arguments into a forwarder of the library and a target of
//! `annal-forward`; it must never forward anything itself.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use annal::{Filter, ForwardSettings, ForwardStart, Forwarder, RetentionMode};
use clap::{Args, Subcommand};

use crate::config::{ForwardConfig, StartValue};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

/// `annal forward`'s arguments.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ForwardArgs {
    #[command(subcommand)]
    pub action: Option<ForwardAction>,
    /// The target: postgres://…, nats://…, kurrentdb://… (or esdb://…), annal+http(s)://….
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// The forwarder's name (its checkpoint and dead-letter streams are named after it).
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Bearer token for an annal+http(s) target.
    #[arg(long, env = "ANNAL_FORWARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Only events of this type (repeatable: any of them).
    #[arg(long = "type", value_name = "T")]
    pub types: Vec<String>,
    /// Only events carrying this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Only events of streams whose name starts with this.
    #[arg(long, value_name = "P")]
    pub stream_prefix: Option<String>,
    /// Only events of streams whose name matches this regular expression.
    #[arg(long, value_name = "RE")]
    pub stream_regex: Option<String>,
    /// Where a new forwarder starts: start, end or a position.
    #[arg(long, default_value = "start")]
    pub start: String,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Events sent and not yet confirmed, at most.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Whether scavenging waits for this forwarder: wait or ignore.
    #[arg(long, default_value = "wait")]
    pub retention: String,
    /// Forward what exists, then exit 0 (the first failure exits 1).
    #[arg(long)]
    pub once: bool,
}

/// `annal forward`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum ForwardAction {
    /// The checkpoints forwarders saved in the store, and how far behind the head they are.
    Status,
    /// Drops the retention hold of a forwarder that is not running (remove it
    /// from annal.toml first, or `annal serve` registers it again): scavenging
    /// may then remove the events it has not delivered. Its checkpoint stays.
    Forget {
        /// The forwarder's name.
        name: String,
    },
    /// Releases a forwarder's name completely, for one that will not run
    /// again (remove it from annal.toml first, or `annal serve` registers it
    /// again): its retention hold and its checkpoint go (a forwarder of that
    /// name starts afresh), and the drop record no longer names it. Its
    /// dead-letter stream stays. Works without a saved checkpoint.
    Release {
        /// The forwarder's name.
        name: String,
    },
    /// Acknowledges the gap a forwarder that is not running reported (events
    /// removed before it delivered them): its saved checkpoint no longer
    /// carries it, so status, /metrics and /health stop reporting it. The
    /// skipped total stays.
    AckGap {
        /// The forwarder's name.
        name: String,
    },
}

impl ForwardConfig {
    fn settings(&self) -> CliResult<ForwardSettings> {
        let args = ForwardArgs {
            action: None,
            to: Some(self.to.clone()),
            name: self.name.clone(),
            token: self.token.clone(),
            types: self.types.clone(),
            tags: self.tags.clone(),
            stream_prefix: self.stream_prefix.clone(),
            stream_regex: self.stream_regex.clone(),
            start: match &self.start {
                None => "start".into(),
                Some(StartValue::Position(p)) => p.to_string(),
                Some(StartValue::Text(t)) => t.clone(),
            },
            batch_size: self.batch_size.unwrap_or(1000),
            max_in_flight: self.max_in_flight.unwrap_or(10_000),
            retention: self.retention.clone().unwrap_or_else(|| "wait".into()),
            once: false,
        };
        let named = |e: CliError| CliError::msg(format!("[[forward]] {}: {}", self.name, e.message));
        let mut settings = settings_of(&args).map_err(named)?;
        if let Some(idle) = self.idle_priority {
            settings.idle_priority = idle;
        }
        if let Some(nice) = self.nice {
            settings.nice = nice;
        }
        settings.validate().map_err(|e| named(e.into()))?;
        Ok(settings)
    }
}

/// Records every `[[forward]]` forwarder of the configuration in the store
/// without running it, so that those that wait hold retention durably even
/// before they first run (`annal compact`).
pub fn register_configured(store: &annal::Store, configs: &[ForwardConfig]) -> CliResult {
    for c in configs {
        annal::register_forwarder(store, &c.name, &c.settings()?)?;
    }
    Ok(())
}

/// Starts every `[[forward]]` forwarder of the configuration on its own thread.
pub fn start_configured(
    store: &Arc<annal::Store>,
    configs: &[ForwardConfig],
) -> CliResult<Vec<annal::ForwarderHandle>> {
    let mut handles = Vec::new();
    for c in configs {
        let settings = c.settings()?;
        let target = annal_forward::connect(&c.to, c.token.clone())
            .map_err(|e| CliError::msg(format!("[[forward]] {}: {e}", c.name)))?;
        // Its hold is durable before it first delivers (a store that cannot
        // be written, opened degraded, still serves: the forwarder says why).
        if let Err(e) = annal::register_forwarder(store, &c.name, &settings) {
            eprintln!("annal: [[forward]] {}: its retention hold is not saved: {e}", c.name);
        }
        let forwarder = Forwarder::new(store.clone(), &c.name, settings, target)?;
        eprintln!("annal: forwarding to {} as {:?}", forwarder.status().target, c.name);
        handles.push(forwarder.spawn()?);
    }
    Ok(handles)
}

fn settings_of(a: &ForwardArgs) -> CliResult<ForwardSettings> {
    let mut filter = Filter {
        types: a.types.clone(),
        tags: a.tags.clone(),
        stream_prefix: a.stream_prefix.clone(),
        ..Filter::default()
    };
    if let Some(re) = &a.stream_regex {
        filter = filter.with_stream_regex(re)?;
    }
    Ok(ForwardSettings::default()
        .filter(filter)
        .start(a.start.parse::<ForwardStart>()?)
        .batch_size(a.batch_size)
        .max_in_flight(a.max_in_flight)
        .retention(a.retention.parse::<RetentionMode>()?))
}

/// `annal forward`.
pub fn forward(ctx: &Ctx, a: ForwardArgs) -> CliResult {
    match &a.action {
        Some(ForwardAction::Status) => return status(ctx),
        Some(ForwardAction::Forget { name }) => return forget(ctx, name),
        Some(ForwardAction::Release { name }) => return release(ctx, name),
        Some(ForwardAction::AckGap { name }) => return ack_gap(ctx, name),
        None => {}
    }
    let Some(url) = a.to.clone() else {
        return Err(CliError::with_code(
            2,
            "annal forward needs --to URL (or the status subcommand)",
        ));
    };
    let settings = settings_of(&a)?;
    let target = annal_forward::connect(&url, a.token.clone()).map_err(|e| CliError::msg(e.to_string()))?;
    let store = Arc::new(ctx.open_owned()?);
    let mut forwarder = Forwarder::new(store.clone(), &a.name, settings, target)?;
    let stop: Arc<AtomicBool> = crate::read::stop_flag()?;
    let status = forwarder.status_handle();
    // A line of figures on stderr every 10 s while it runs in the foreground.
    let reporter = (!a.once).then(|| {
        let stop = stop.clone();
        let status = status.clone();
        std::thread::spawn(move || {
            let mut ticks = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                ticks += 1;
                if ticks.is_multiple_of(50) {
                    let s = status.get();
                    eprintln!(
                        "annal forward {}: {:?}, checkpoint {}, {} behind, {} delivered{}",
                        s.name,
                        s.state,
                        s.checkpoint,
                        s.lag_events,
                        s.delivered_events,
                        s.last_error.map(|e| format!(", last error: {e}")).unwrap_or_default()
                    );
                }
            }
        })
    });
    let result = forwarder.run(&stop, a.once);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(r) = reporter {
        let _ = r.join();
    }
    let s = forwarder.status();
    drop(forwarder);
    println!(
        "{}",
        serde_json::to_string(&s).map_err(|e| CliError::msg(e.to_string()))?
    );
    Arc::try_unwrap(store)
        .map_err(|_| CliError::msg("the store is still in use"))?
        .close()?;
    result.map_err(|e| CliError::msg(format!("forwarder {}: {e}", a.name)))
}

/// `annal forward status`.
fn status(ctx: &Ctx) -> CliResult {
    let store = ctx.open_read()?;
    let head = store.head_position();
    for (name, saved) in annal::saved_forwarders(&store)? {
        let line = serde_json::json!({
            "name": name,
            "checkpoint": saved.checkpoint,
            "head": head,
            "lag_events": head.saturating_sub(saved.checkpoint),
            "delivered": saved.delivered,
            "parked": saved.parked,
            "skipped": saved.skipped,
            "holds_retention": saved.holds_retention,
            "gap": saved.gap,
        });
        println!("{line}");
    }
    Ok(())
}

/// `annal forward ack-gap NAME`.
fn ack_gap(ctx: &Ctx, name: &str) -> CliResult {
    let store = ctx.open_owned()?;
    let found = annal::acknowledge_gap(&store, name)?;
    store.close()?;
    if !found {
        return Err(CliError::msg(format!(
            "no forwarder named {name:?} saved a checkpoint in this store"
        )));
    }
    println!("{}", serde_json::json!({ "name": name, "gap": null }));
    Ok(())
}

/// `annal forward forget NAME`.
fn forget(ctx: &Ctx, name: &str) -> CliResult {
    let store = ctx.open_owned()?;
    if ctx.forward.iter().any(|c| c.name == name) {
        eprintln!(
            "annal: {name:?} is still a [[forward]] of the configuration: `annal serve` will hold retention for it again"
        );
    }
    let found = annal::forget_forwarder(&store, name)?;
    store.close()?;
    if !found {
        return Err(CliError::msg(format!(
            "no forwarder named {name:?} saved a checkpoint in this store"
        )));
    }
    println!("{}", serde_json::json!({ "name": name, "holds_retention": false }));
    Ok(())
}

/// `annal forward release NAME`.
fn release(ctx: &Ctx, name: &str) -> CliResult {
    // The store is opened alone: no `annal serve` runs the forwarder meanwhile.
    let store = ctx.open_owned()?;
    if ctx.forward.iter().any(|c| c.name == name) {
        eprintln!(
            "annal: {name:?} is still a [[forward]] of the configuration: `annal serve` will register it again, from its start"
        );
    }
    let released = annal::release_forwarder(&store, name);
    store.close()?;
    let released = released?;
    println!(
        "{}",
        serde_json::json!({
            "name": name,
            "had_checkpoint": released.had_checkpoint,
            "drop_entries_named": released.drop_entries_named,
            "drop_entries_pruned": released.drop_entries_pruned,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_forward_section_sets_the_priority_of_its_thread() {
        let p = std::path::Path::new("annal.toml");
        let section = |extra: &str| format!("[[forward]]\nname = \"c\"\nto = \"nats://127.0.0.1:1\"\n{extra}");
        let c = Config::parse(&section(""), p).unwrap();
        let s = c.forward[0].settings().unwrap();
        assert_eq!((s.idle_priority, s.nice), (false, 10));
        let c = Config::parse(&section("idle_priority = true\nnice = 5\n"), p).unwrap();
        let s = c.forward[0].settings().unwrap();
        assert_eq!((s.idle_priority, s.nice), (true, 5));
        let c = Config::parse(&section("nice = 0\n"), p).unwrap();
        assert_eq!(c.forward[0].settings().unwrap().nice, 0);
        let c = Config::parse(&section("nice = 20\n"), p).unwrap();
        let e = c.forward[0].settings().unwrap_err();
        assert!(
            e.message.contains("[[forward]] c") && e.message.contains("nice"),
            "{}",
            e.message
        );
    }
}
