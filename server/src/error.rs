//! [`ServerError`]: why the server could not start, or stopped with an error.
//!
//! Shared by every protocol. It must never hold a per-request answer: those
//! belong to each protocol (HTTP's is `http::error::ApiError`).

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is inconsistent or unsafe.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What the server was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
