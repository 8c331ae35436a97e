//! Serves a store over HTTP in open mode on a loopback port, for the load
//! generator and manual tries.
//!
//! ```sh
//! cargo run --release -p annal-server --example serve -- --port 2113 [--dir DIR] [--durability always|never] [--for-secs N]
//! ```
//!
//! Without `--dir` the store lives in a temporary directory removed at exit.
//! Stops on Ctrl-C, SIGTERM, or after `--for-secs`.

use std::sync::Arc;
use std::time::Duration;

use annal::{Durability, Options, Store};
use annal_server::ServerConfig;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, "--port").map_or(Ok(2113), |p| p.parse())?;
    let durability = match arg(&args, "--durability").as_deref() {
        None | Some("always") => Durability::Always,
        Some("never") => Durability::Never,
        Some(other) => return Err(format!("--durability {other}: always or never").into()),
    };
    let for_secs: Option<u64> = arg(&args, "--for-secs").map(|s| s.parse()).transpose()?;
    let temp = tempfile::tempdir()?;
    let dir = arg(&args, "--dir").map_or_else(|| temp.path().join("data"), Into::into);
    let store = Arc::new(Store::open(&dir, Options::default().durability(durability))?);
    let bound = annal_server::bind(store.clone(), ServerConfig::open(([127, 0, 0, 1], port).into())).await?;
    println!(
        "listening on http://{} (store {}, {durability:?})",
        bound.local_addr(),
        dir.display()
    );
    let shutdown = async move {
        let term = async {
            let mut s = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
            s.recv().await;
        };
        let timer = async {
            match for_secs {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
            () = timer => {}
        }
    };
    bound.run(shutdown).await?;
    let store = Arc::try_unwrap(store).map_err(|_| "the store is still in use")?;
    store.close()?;
    println!("stopped");
    Ok(())
}
