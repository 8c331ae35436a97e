//! `annal delete`, `metadata`, `compact` and `serve`.

use std::io::BufWriter;
use std::net::SocketAddr;
use std::sync::Arc;

use annal::StreamMetadata;

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::render;

fn stdout() -> BufWriter<std::io::StdoutLock<'static>> {
    BufWriter::new(std::io::stdout().lock())
}

/// `annal delete STREAM [--hard] [--expected E]`.
pub fn delete(ctx: &Ctx, stream: &str, expected: annal::ExpectedVersion, hard: bool) -> CliResult {
    ctx.require_store()?;
    let store = ctx.open_write()?;
    store.delete_stream(stream, expected, hard)?;
    let mut out = stdout();
    render::emit(
        &mut out,
        &crate::obj! {
            "stream": stream,
            "deleted": if hard { "hard" } else { "soft" },
        },
    )?;
    render::flush(&mut out)?;
    Ok(store.close()?)
}

/// `annal shred SUBJECT`: `{"subject": …, "shredded": true}`, or `false`
/// when the subject had no key (nothing to erase).
pub fn shred(ctx: &Ctx, subject: &str) -> CliResult {
    ctx.require_store()?;
    let store = ctx.open_write()?;
    let shredded = store.shred(subject)?;
    let mut out = stdout();
    render::emit(
        &mut out,
        &crate::obj! {
            "subject": subject,
            "shredded": shredded,
        },
    )?;
    render::flush(&mut out)?;
    Ok(store.close()?)
}

/// `annal metadata STREAM [--set JSON]`.
pub fn metadata(ctx: &Ctx, stream: &str, set: Option<&str>) -> CliResult {
    ctx.require_store()?;
    // Showing the metadata changes nothing: read only (beside a running
    // `annal serve`, or on a read-only mount).
    let store = if set.is_some() {
        ctx.open_write()?
    } else {
        ctx.open_read()?
    };
    if store.stream_info(stream).is_none() {
        return Err(annal::Error::StreamNotFound(stream.to_string()).into());
    }
    if let Some(json) = set {
        let meta: StreamMetadata =
            serde_json::from_str(json).map_err(|e| CliError::msg(format!("--set: invalid stream metadata: {e}")))?;
        store.set_stream_metadata(stream, meta)?;
    }
    let meta = store.stream_metadata(stream).unwrap_or_default();
    let mut out = stdout();
    let value = serde_json::to_value(&meta).map_err(|e| CliError::msg(e.to_string()))?;
    render::emit(
        &mut out,
        &crate::obj! {
            "stream": stream,
            "metadata": value,
        },
    )?;
    render::flush(&mut out)?;
    Ok(store.close()?)
}

/// `annal compact`: scavenge (retention, deletions, metadata), seal the
/// active segment, and compress sealed segments (unless compression is off
/// and `--compress` is not given).
pub fn compact(ctx: &Ctx, compress: bool) -> CliResult {
    ctx.require_store()?;
    let store = ctx.open_write()?;
    // Configured forwarders that wait hold retention even if they never ran.
    crate::forward::register_configured(&store, &ctx.forward)?;
    let spinner = crate::ctx::spinner("scavenging");
    let s = store.scavenge()?;
    let c = if compress || ctx.options.compression.is_some() {
        // Sealed first, so that a store smaller than one segment is compressed too.
        spinner.set_message("sealing");
        store.seal_active_segment()?;
        spinner.set_message("compressing");
        Some(store.compress()?)
    } else {
        None
    };
    spinner.finish_and_clear();
    let mut out = stdout();
    render::emit(
        &mut out,
        &crate::obj! {
            "segments_examined": s.segments_examined,
            "segments_rewritten": s.segments_rewritten,
            "events_removed": s.events_removed,
            "bytes_before": s.bytes_before,
            "bytes_after": s.bytes_after,
            "events_dropped_undelivered": s.events_dropped_undelivered,
            "segments_compressed": c.as_ref().map_or(0, |c| c.segments),
            "compressed_bytes_before": c.as_ref().map_or(0, |c| c.bytes_before),
            "compressed_bytes_after": c.as_ref().map_or(0, |c| c.bytes_after),
        },
    )?;
    render::flush(&mut out)?;
    Ok(store.close()?)
}

/// `annal serve [--listen ADDR] [--no-auth] [--advertise HOST:PORT]`: the
/// HTTP API and the KurrentDB gRPC protocol until SIGINT or SIGTERM.
pub fn serve(ctx: &Ctx, listen: Option<SocketAddr>, no_auth: bool, advertise: Option<String>) -> CliResult {
    let mut config = ctx.server.clone().unwrap_or_default();
    if let Some(addr) = listen {
        config.listen = addr;
    }
    if no_auth {
        config.no_auth = true;
    }
    if advertise.is_some() {
        config.advertise = advertise;
    }
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    if config.no_auth && !config.listen.ip().is_loopback() {
        let mut names = vec!["IP addresses".to_string(), "localhost".to_string()];
        names.extend(config.advertise.iter().cloned());
        names.extend(config.allowed_hosts.iter().cloned());
        eprintln!(
            "annal: open mode on {}: requests must name {} in their Host (others answer 421); list more names in [server] allowed_hosts",
            config.listen,
            names.join(", ")
        );
    }
    let store = Arc::new(ctx.open_serve()?);
    for t in store.torn_tails_at_open() {
        eprintln!(
            "annal: warning: recovery cut {} bytes after the last complete append at byte {} of segment {} (never acknowledged under durability \"always\"); they are kept in {}",
            t.bytes,
            t.offset,
            t.segment_base,
            t.file.display()
        );
    }
    for cut in store.key_cuts_at_open() {
        eprintln!("annal: warning: recovery {cut}");
    }
    for d in store.damage() {
        eprintln!(
            "annal: warning: the store is damaged and serves reads only: {} (positions {}..{}); run `annal repair`",
            d.error(),
            d.first_position,
            if d.end_position == u64::MAX {
                "end".to_string()
            } else {
                d.end_position.to_string()
            }
        );
    }
    // A `$`-typed event in every served store, as KurrentDB has (written once;
    // a damaged store, which takes no writes, goes without).
    if store.damage().is_empty()
        && let Err(e) = store.mark_system_event()
    {
        eprintln!("annal: warning: writing the store's system event: {e}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::msg(format!("starting the server runtime: {e}")))?;
    let forwarders = crate::forward::start_configured(&store, &ctx.forward)?;
    let watch_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let statuses: Vec<annal::StatusHandle> = forwarders.iter().map(annal::ForwarderHandle::status_handle).collect();
    let watch = budget_watch(store.clone(), statuses, watch_stop.clone());
    let served = runtime.block_on(async {
        let bound = annal_server::bind(store.clone(), config).await?;
        bound
            .state()
            .set_forwarders(forwarders.iter().map(annal::ForwarderHandle::status_handle).collect());
        eprintln!(
            "annal: serving {} on {scheme}://{}",
            ctx.data.display(),
            bound.local_addr()
        );
        eprintln!("annal: console at {scheme}://{}/ui/", bound.local_addr());
        bound.run(shutdown_signal()).await
    });
    drop(runtime);
    // Forwarders save their checkpoints and let go of the store.
    for f in forwarders {
        if let Err(e) = f.stop() {
            eprintln!("annal: forwarder stopped with an error: {e}");
        }
    }
    watch_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(w) = watch {
        let _ = w.join();
    }
    served.map_err(|e| CliError::msg(e.to_string()))?;
    // Every request and subscription has let go of the store: flush and close it.
    match Arc::try_unwrap(store) {
        Ok(store) => Ok(store.close()?),
        Err(_) => Err(CliError::msg("the store was still in use after shutdown")),
    }
}

/// With a disk budget (`[retention] max_bytes`), says in the log when
/// undelivered events that forwarders hold take 80 % of it or more, and when
/// they take more than all of it (scavenging then cannot hold the budget), and
/// when that ends; looks every 10 s until `stop`. Says at once (within a
/// second) when a forwarder meets a gap: events removed before it delivered
/// them, and when it reports a warning (its thread kept its priority, or
/// the target's checkpoint was past the end of the log).
fn budget_watch(
    store: Arc<annal::Store>,
    forwarders: Vec<annal::StatusHandle>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let budget = store.stats().retention_max_bytes.is_some();
    if !budget && forwarders.is_empty() {
        return None;
    }
    std::thread::Builder::new()
        .name("annal-budget-watch".into())
        .spawn(move || {
            let mut was = 0u8;
            let mut ticks = 0u32;
            let mut gaps: Vec<Option<annal::ForwardGap>> = vec![None; forwarders.len()];
            let mut damage: Vec<Option<String>> = vec![None; forwarders.len()];
            let mut warned: Vec<Option<String>> = vec![None; forwarders.len()];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if ticks.is_multiple_of(5) {
                    for (f, seen) in forwarders.iter().zip(gaps.iter_mut()) {
                        let s = f.get();
                        if s.gap.is_some() && s.gap != *seen {
                            eprintln!(
                                "annal: error: forwarder {:?} skipped a gap: {}",
                                s.name,
                                s.last_error.as_deref().unwrap_or("events removed before delivery")
                            );
                            *seen = s.gap;
                        }
                    }
                    for (f, seen) in forwarders.iter().zip(warned.iter_mut()) {
                        let s = f.get();
                        if s.warning.is_some() && s.warning != *seen {
                            eprintln!(
                                "annal: warning: forwarder {:?}: {}",
                                s.name,
                                s.warning.as_deref().unwrap_or_default()
                            );
                        }
                        *seen = s.warning;
                    }
                    for (f, seen) in forwarders.iter().zip(damage.iter_mut()) {
                        let s = f.get();
                        if s.drop_record_error.is_some() && s.drop_record_error != *seen {
                            eprintln!(
                                "annal: error: forwarder {:?}: {}",
                                s.name,
                                s.drop_record_error.as_deref().unwrap_or_default()
                            );
                        }
                        *seen = s.drop_record_error;
                    }
                }
                if budget && ticks.is_multiple_of(50) {
                    let s = store.stats();
                    let now = if s.budget_exceeded_by_holds() {
                        2
                    } else {
                        u8::from(s.budget_threatened())
                    };
                    let by = s
                        .retention_held_by
                        .iter()
                        .min_by_key(|(_, p)| *p)
                        .map(|(n, _)| n.clone())
                        .unwrap_or_default();
                    let max = s.retention_max_bytes.unwrap_or(0);
                    match (was, now) {
                        (_, 2) if was != 2 => eprintln!(
                            "annal: warning: events forwarder {by:?} has not delivered take {} bytes, over the disk budget of {max} bytes ([retention] max_bytes): scavenging keeps them (retention = \"wait\"); restore its target or `annal forward forget {by}`",
                            s.retention_held_bytes
                        ),
                        (0, 1) => eprintln!(
                            "annal: warning: events forwarder {by:?} has not delivered take {} bytes, 80 % or more of the disk budget of {max} bytes",
                            s.retention_held_bytes
                        ),
                        (1 | 2, 0) => eprintln!("annal: undelivered events are back under 80 % of the disk budget"),
                        _ => {}
                    }
                    was = now;
                }
                ticks = ticks.wrapping_add(1);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
        .ok()
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
