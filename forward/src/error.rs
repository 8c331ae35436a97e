//! The crate's error: why a target could not be made from its URL. It sits in
//! a module of its own so that every target's module imports it without
//! importing the crate root, which names them all.

/// Why a target could not be made from its URL.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse, or a parameter is wrong.
    #[error("invalid forward target URL {url:?}: {reason}")]
    BadUrl {
        /// The URL with any password hidden.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The scheme names a target this build cannot forward to.
    #[error("UNSUPPORTED forward target {scheme}://: {reason}")]
    Unsupported {
        /// The scheme.
        scheme: String,
        /// Why, and what to use instead.
        reason: String,
    },
    /// The async runtime of the target could not start.
    #[error("starting the target's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}
