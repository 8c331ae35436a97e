//! Bearer-token authentication, roles and stream-prefix permissions.

use subtle::ConstantTimeEq;

use crate::config::{Role, ServerConfig, parse_hash};
use crate::http::error::ApiError;

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) role: Role,
    /// Stream prefixes it may touch; empty means every stream.
    pub(crate) prefixes: Vec<String>,
}

impl Principal {
    pub(crate) fn unrestricted(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// True if the principal may touch this stream.
    pub(crate) fn may_stream(&self, stream: &str) -> bool {
        self.unrestricted() || self.prefixes.iter().any(|p| stream.starts_with(p.as_str()))
    }

    /// 403 unless the principal may touch this stream.
    pub(crate) fn check_stream(&self, stream: &str) -> Result<(), ApiError> {
        if self.may_stream(stream) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token may not access stream {stream:?}"
            )))
        }
    }

    /// 403 unless a read of the global log limited to `prefix` stays within the principal's streams.
    pub(crate) fn check_prefix(&self, prefix: Option<&str>) -> Result<(), ApiError> {
        if self.unrestricted() || prefix.is_some_and(|q| self.prefixes.iter().any(|p| q.starts_with(p.as_str()))) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this token is limited to some streams: give a stream_prefix within them",
            ))
        }
    }
}

struct Token {
    hash: [u8; 32],
    role: Role,
    prefixes: Vec<String>,
}

/// The configured tokens (or open mode).
pub(crate) struct Auth {
    open: bool,
    tokens: Vec<Token>,
}

impl Auth {
    pub(crate) fn new(config: &ServerConfig) -> Result<Auth, String> {
        let mut tokens = Vec::new();
        for t in &config.tokens {
            let hash =
                parse_hash(&t.sha256).ok_or_else(|| format!("token {:?}: sha256 is not 64 hex digits", t.name))?;
            tokens.push(Token {
                hash,
                role: t.role,
                prefixes: t.stream_prefixes.clone(),
            });
        }
        Ok(Auth {
            open: config.no_auth,
            tokens,
        })
    }

    /// The principal for an `Authorization` header value, or 401.
    pub(crate) fn authenticate(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        if self.open {
            return Ok(Principal {
                role: Role::Admin,
                prefixes: Vec::new(),
            });
        }
        let token = header
            .and_then(|h| {
                let (scheme, rest) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        let presented: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(token.as_bytes()).into()
        };
        // Compare against every token, in constant time, without stopping early.
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&presented)) {
                found = Some(t);
            }
        }
        let t = found.ok_or_else(ApiError::unauthorized)?;
        Ok(Principal {
            role: t.role,
            prefixes: t.prefixes.clone(),
        })
    }
}
