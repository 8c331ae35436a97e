//! The server's configuration: listen address, tokens, TLS and limits.
//!
//! Every field has a default, so a config file (or a CLI) only sets what it
//! changes. Tokens are stored as SHA-256 hashes, never in clear.
//!
//! Shared by every protocol. It must never import a protocol's module.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads, subscriptions, and consuming persistent subscription groups.
    Read,
    /// Also appends, deletes, metadata, snapshots, and group management.
    Write,
    /// Also the `/admin/*` routes (scavenge, compress, backup, verify).
    Admin,
}

/// One bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and errors (never the token itself).
    pub name: String,
    /// SHA-256 of the token, in hex (see [`hash_token`]).
    pub sha256: String,
    /// What the token may do.
    pub role: Role,
    /// Stream name prefixes the token may touch; empty means every stream.
    #[serde(default)]
    pub stream_prefixes: Vec<String>,
}

/// Certificate and key files for HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Configuration of [`crate::serve`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:2114`.
    pub listen: SocketAddr,
    /// Accept every request without a token (open mode). Refused on a
    /// non-loopback address unless `allow_remote_no_auth` is also set.
    pub no_auth: bool,
    /// Allow `no_auth` on a non-loopback listen address.
    pub allow_remote_no_auth: bool,
    /// In open mode, the DNS names (with or without a port) requests may name
    /// in their `Host` besides IP addresses, `localhost` and `advertise`;
    /// any other name is refused (421), so that a web page cannot reach the
    /// server through a name it points at it (DNS rebinding), whatever the
    /// listen address. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// The accepted bearer tokens.
    pub tokens: Vec<TokenConfig>,
    /// Serve `/metrics` without a token. Default false (any valid token).
    pub metrics_public: bool,
    /// Serve HTTPS with these files; plain HTTP when `None`.
    pub tls: Option<TlsConfig>,
    /// Largest request body, in bytes. Default 8 MiB.
    pub body_limit_bytes: usize,
    /// Most events in one append request. Default 1000.
    pub max_events_per_append: usize,
    /// Time limit of a request (not of subscriptions), in milliseconds; over
    /// gRPC, the time an append's events have to arrive whole. Default 30 s.
    pub request_timeout_ms: u64,
    /// Events returned by a read when no `limit` is given. Default 100.
    pub default_read_limit: usize,
    /// Largest `limit` of a read. Default 10,000.
    pub max_read_limit: usize,
    /// Most concurrent SSE subscriptions. Each holds a connection and a thread
    /// of its own (not one of the blocking pool that appends and reads use).
    /// Default 256.
    pub max_subscribers: usize,
    /// Most concurrent group fetches that wait for events (`timeout_ms` > 0).
    /// A waiting fetch holds a connection but no thread; more are refused
    /// with 503 `too_many_long_polls`. Default 256.
    pub max_long_polls: usize,
    /// Most concurrent expensive reads: over HTTP, counts that read the
    /// events (the indexes cannot answer them), and reads of the global log
    /// whose filter the indexes cannot serve (a metadata field the store does
    /// not index), which may scan it; over gRPC, reads of `$all` whose filter
    /// is not a single stream-name prefix. Each holds its place until it
    /// answers or the request timeout cuts it (the cut work is cancelled and
    /// stops before its next event; a gRPC read holds it while it reads a
    /// page from the store, not while it waits for its client); more are
    /// refused with 503 `too_many_scans` (gRPC: RESOURCE_EXHAUSTED at the
    /// start of a read; its later pages try again for a place every few
    /// milliseconds, never queueing ahead of other reads). Default 8.
    pub max_scans: usize,
    /// Interval of SSE keep-alive comments, in milliseconds. Default 15 s.
    pub keepalive_ms: u64,
    /// How long shutdown waits for open connections before closing them, in milliseconds. Default 10 s.
    pub shutdown_grace_ms: u64,
    /// Most bytes of one read response (stream, global log, group fetch) and
    /// of SSE messages waiting to be sent; a response stops short of it (with
    /// at least one event) and says where to continue. Default 16 MiB.
    pub max_response_bytes: usize,
    /// Time a client has to send a request's headers, from the moment the
    /// server waits for them, in milliseconds. Default 10 s.
    pub header_read_timeout_ms: u64,
    /// A connection on which no byte moves either way for this long, or on
    /// which no request has been open for this long (an HTTP/2 connection's
    /// answers to the server's pings are no request), is closed, in
    /// milliseconds; more than `request_timeout_ms` and `keepalive_ms`.
    /// Default 60 s.
    pub idle_timeout_ms: u64,
    /// Most open connections; more are closed as soon as they are accepted. Default 1024.
    pub max_connections: usize,
    /// `HOST:PORT` the gRPC gossip answer advertises (for clients that
    /// discover the node). Default: the host and port the client connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Most bytes of events held at once, server-wide, by gRPC appends
    /// (`Append`, and `BatchAppend` batches) still being received or
    /// written; an append or batch that would pass it is refused with
    /// RESOURCE_EXHAUSTED. Each also has `request_timeout_ms` to arrive
    /// whole. Default 256 MiB.
    pub max_pending_append_bytes: usize,
    /// When more than one token is configured, the most of each kind of
    /// place one token may hold at once, in percent of it (at least one
    /// place): of `max_subscribers` (SSE, gRPC subscriptions and persistent
    /// subscription consumers), of `max_long_polls`, and of `max_scans` (a
    /// gRPC scanning read of `$all` holds one of its token's share while
    /// open). More are refused as when the server's places are all taken
    /// (503, RESOURCE_EXHAUSTED), so that one token cannot leave the others
    /// none. From 1 to 100. Default 50.
    pub token_share_percent: u8,
    /// Most persistent subscription groups a token limited to some stream
    /// prefixes may have: groups that read only streams it may read
    /// (whoever made them). Past it, creating one is refused (403
    /// `too_many_groups`, gRPC RESOURCE_EXHAUSTED). Each group holds up to
    /// the store's `max_group_held_bytes` of events in memory. Tokens that
    /// may read every stream are not counted. Default 64.
    pub max_groups_per_token: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 2114)),
            no_auth: false,
            allow_remote_no_auth: false,
            allowed_hosts: Vec::new(),
            tokens: Vec::new(),
            metrics_public: false,
            tls: None,
            body_limit_bytes: 8 << 20,
            max_events_per_append: 1000,
            request_timeout_ms: 30_000,
            default_read_limit: 100,
            max_read_limit: 10_000,
            max_subscribers: 256,
            max_long_polls: 256,
            max_scans: 8,
            keepalive_ms: 15_000,
            shutdown_grace_ms: 10_000,
            max_response_bytes: 16 << 20,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
            advertise: None,
            max_pending_append_bytes: 256 << 20,
            token_share_percent: 50,
            max_groups_per_token: 64,
        }
    }
}

impl ServerConfig {
    /// An open-mode config on a loopback address (for tests and local tools).
    pub fn open(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            no_auth: true,
            ..Default::default()
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub(crate) fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Checks the config for consistency; the errors are the ones `serve` refuses to start with.
    pub fn validate(&self) -> Result<(), String> {
        if self.no_auth && !self.listen.ip().is_loopback() && !self.allow_remote_no_auth {
            return Err(format!(
                "no_auth on non-loopback address {} is refused; set allow_remote_no_auth to allow it",
                self.listen
            ));
        }
        if let Some(bad) = self
            .allowed_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains("://") || h.contains('/') || h.contains(char::is_whitespace))
        {
            return Err(format!(
                "allowed_hosts entry {bad:?} is not a host name (with or without a port): no scheme, path or space"
            ));
        }
        if self.no_auth && !self.tokens.is_empty() {
            return Err(format!(
                "no_auth is set next to {} configured token(s): open mode would accept every request \
                 without a token and ignore their roles and stream prefixes; remove no_auth (or --no-auth), \
                 or remove the tokens",
                self.tokens.len()
            ));
        }
        if !self.no_auth && self.tokens.is_empty() {
            return Err("no tokens configured: add a token, or set no_auth for open mode".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashMap::new();
        for t in &self.tokens {
            let Some(hash) = parse_hash(&t.sha256) else {
                return Err(format!(
                    "token {:?}: sha256 must be 64 hex digits (the SHA-256 of the token)",
                    t.name
                ));
            };
            if !names.insert(t.name.as_str()) {
                return Err(format!(
                    "token name {:?} is given twice: each token needs its own name",
                    t.name
                ));
            }
            // One secret, two roles or prefix lists: which one a request
            // got would depend on the order of the file.
            if let Some(other) = hashes.insert(hash, t.name.as_str()) {
                return Err(format!(
                    "tokens {other:?} and {:?} have the same sha256 (the same secret): give each its own",
                    t.name
                ));
            }
            for p in &t.stream_prefixes {
                if p.is_empty() {
                    return Err(format!(
                        "token {:?}: an empty stream prefix matches every stream; for a token of every stream \
                         leave stream_prefixes out",
                        t.name
                    ));
                }
                if p.starts_with('$') {
                    return Err(format!(
                        "token {:?}: stream prefix {p:?} names system streams (consumer groups' parked \
                         events, checkpoints, metadata of every tenant); prefixes name user streams only",
                        t.name
                    ));
                }
            }
        }
        let positive = [
            ("body_limit_bytes", self.body_limit_bytes as u64),
            ("max_events_per_append", self.max_events_per_append as u64),
            ("request_timeout_ms", self.request_timeout_ms),
            ("default_read_limit", self.default_read_limit as u64),
            ("max_read_limit", self.max_read_limit as u64),
            ("keepalive_ms", self.keepalive_ms),
            ("max_response_bytes", self.max_response_bytes as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("max_connections", self.max_connections as u64),
            ("max_scans", self.max_scans as u64),
            ("max_long_polls", self.max_long_polls as u64),
            ("max_pending_append_bytes", self.max_pending_append_bytes as u64),
            ("max_groups_per_token", self.max_groups_per_token as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.default_read_limit > self.max_read_limit {
            return Err("default_read_limit exceeds max_read_limit".into());
        }
        // A request in progress or a quiet subscription must not look idle.
        for (name, v) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("keepalive_ms", self.keepalive_ms),
        ] {
            if self.idle_timeout_ms <= v {
                return Err(format!(
                    "idle_timeout_ms ({}) must exceed {name} ({v}): connections would be closed while busy",
                    self.idle_timeout_ms
                ));
            }
        }
        if !(1..=100).contains(&self.token_share_percent) {
            return Err(format!(
                "token_share_percent ({}) must be between 1 and 100",
                self.token_share_percent
            ));
        }
        if self.max_subscribers >= self.max_connections {
            return Err(format!(
                "max_subscribers ({}) must be below max_connections ({}): each subscription holds a connection",
                self.max_subscribers, self.max_connections
            ));
        }
        Ok(())
    }
}

/// The SHA-256 of a token, in lowercase hex: what [`TokenConfig::sha256`] holds.
pub fn hash_token(token: &str) -> String {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits.
pub(crate) fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Most events a persistent subscription group may hold read and not yet
/// acknowledged (its `max_in_flight`), whichever protocol sets it: a group
/// keeps them all in memory. HTTP refuses more; gRPC, whose settings name
/// buffer sizes, takes this many. Their bytes are bounded besides by the
/// store's `Options::max_group_held_bytes` (64 MiB by default).
pub const MAX_GROUP_IN_FLIGHT: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips_and_config_checks() {
        let h = hash_token("secret");
        assert_eq!(h.len(), 64);
        assert_eq!(h, "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b");
        assert!(parse_hash(&h).is_some());
        assert!(parse_hash("zz").is_none());
        let mut c = ServerConfig::open("0.0.0.0:1".parse().unwrap());
        assert!(c.validate().is_err());
        c.allow_remote_no_auth = true;
        assert!(c.validate().is_ok());
        c.allowed_hosts = vec!["annal.lan:2114".into(), "edge-7".into()];
        assert!(c.validate().is_ok());
        for bad in ["http://annal.lan", "annal.lan/", "", "a b"] {
            c.allowed_hosts = vec![bad.into()];
            assert!(c.validate().unwrap_err().contains("allowed_hosts"), "{bad:?}");
        }
        assert!(ServerConfig::default().validate().is_err(), "no tokens and no no_auth");
        let c: ServerConfig = serde_json::from_str(r#"{"no_auth": true, "max_read_limit": 50}"#).unwrap();
        assert_eq!(c.max_read_limit, 50);
        assert!(serde_json::from_str::<ServerConfig>(r#"{"nope": 1}"#).is_err());
    }

    /// Token setups that would silently do something else than written are
    /// refused: a name or a secret given twice (the last match won), an
    /// empty prefix (every stream, yet counted as limited), a `$` prefix
    /// (every tenant's system streams).
    #[test]
    fn ambiguous_or_overreaching_tokens_are_refused() {
        let token = |name: &str, secret: &str, prefixes: &[&str]| TokenConfig {
            name: name.into(),
            sha256: hash_token(secret),
            role: Role::Read,
            stream_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        };
        let with = |tokens: Vec<TokenConfig>| ServerConfig {
            no_auth: false,
            tokens,
            ..ServerConfig::open("127.0.0.1:1".parse().unwrap())
        };
        assert!(
            with(vec![token("a", "s1", &["orders-"]), token("b", "s2", &[])])
                .validate()
                .is_ok()
        );
        for (tokens, needle) in [
            (vec![token("a", "s1", &[]), token("a", "s2", &[])], "given twice"),
            (vec![token("a", "s1", &["x-"]), token("b", "s1", &[])], "same sha256"),
            (vec![token("a", "s1", &[""])], "empty stream prefix"),
            (vec![token("a", "s1", &["$group-"])], "system streams"),
        ] {
            let err = with(tokens).validate().unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    /// No place for a waiting fetch would refuse every long poll: the
    /// limits of places must be positive, as `max_scans` already was.
    #[test]
    fn place_limits_must_be_positive() {
        let ok = ServerConfig::open("127.0.0.1:1".parse().unwrap());
        assert!(ok.validate().is_ok());
        for set in [
            |c: &mut ServerConfig| c.max_long_polls = 0,
            |c: &mut ServerConfig| c.max_scans = 0,
        ] {
            let mut c = ok.clone();
            set(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.contains("must be positive"), "{err}");
        }
    }
}
