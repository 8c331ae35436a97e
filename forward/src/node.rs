//! What every target needs from its host: a small runtime of its own for its
//! async client, and this node's name. Targets import this module; it
//! imports none of them.

use crate::error::ConfigError;

/// A small single-threaded runtime for one target's client.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ConfigError> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// The name of this node, for the `source` column and headers: the host name,
/// or `annal` when it cannot be read.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "annal".to_string())
}
