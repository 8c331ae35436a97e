//! Who the caller is, and what it may do: bearer tokens, roles and stream
//! prefixes, for every protocol.
//!
//! [`Auth::authenticate`] turns a token into a [`Principal`]; every
//! permission check is [`Principal::authorize`] (or [`Principal::permits`],
//! to leave out what the caller may not see), given the [`Need`] of what the
//! request does. A token limited to some stream prefixes must learn nothing
//! about other streams: a check that fails says so in words that name only
//! what the caller asked for.
//!
//! It must never shape an answer for a protocol: a refusal is a [`Denied`],
//! which each protocol maps (HTTP to 401 and 403).

use annal::GroupSource;
use subtle::ConstantTimeEq;

use crate::config::{Role, ServerConfig, parse_hash};

/// What a caller who may not see where damage lies
/// ([`Principal::sees_damage`]) is told of it.
pub(crate) const DAMAGE_ELSEWHERE: &str =
    "the store met damaged data while doing this request; an operator finds where with `annal verify`";

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    role: Role,
    /// Stream prefixes it may touch; empty means every stream.
    prefixes: Vec<String>,
    /// Which configured token it is (its index); `None` in open mode.
    token: Option<usize>,
}

/// What a request needs of its caller: a role, and the streams it touches.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Need<'a> {
    /// A role, and no stream in particular.
    Role(Role),
    /// Read one stream.
    Read(&'a str),
    /// Write one stream.
    Write(&'a str),
    /// Read the global log, limited to streams starting with a prefix (the
    /// whole log when none is given).
    ReadLog(Option<&'a str>),
    /// Append with a condition: its query runs over every stream.
    Condition,
    /// Read figures of the whole store (counts, disk use, forwarders' lag):
    /// the read role, for every stream.
    WholeStore,
    /// Use (with the read role) or manage (with the write role) a
    /// persistent subscription group, which reads its source.
    Group(Role, &'a GroupSource),
    /// Create a group of this name (the write role). Group names are shared
    /// by the whole store: a token limited to some stream prefixes names its
    /// groups under them, so that a name taken by a group it may not see is
    /// refused as any other name outside them, not as taken.
    NameGroup(&'a str),
}

/// Why a request may not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No token, or not a valid one.
    Unauthenticated,
    /// A valid token that may not do this, and why (naming only what was asked).
    Forbidden(String),
}

impl Principal {
    /// Anyone, in open mode.
    fn everyone() -> Principal {
        Principal {
            role: Role::Admin,
            prefixes: Vec::new(),
            token: None,
        }
    }

    /// Which configured token it is, for counting what each token holds;
    /// `None` in open mode.
    pub(crate) fn token(&self) -> Option<usize> {
        self.token
    }

    /// Its role (admin in open mode).
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// Whether it may be shown where damage lies (a file and an offset):
    /// only a caller who may read every stream. A limited caller's request
    /// can meet damage in streams it may not see (an append looks its event
    /// ids up across the whole log, and a frame that fails its checksum
    /// cannot tell its stream).
    pub(crate) fn sees_damage(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The stream prefixes it is limited to; empty means every stream.
    pub(crate) fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    fn unrestricted(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The name prefixes that hold every stream name starting with `within`
    /// that the principal may read, and no other: `within` itself for a
    /// principal not limited to prefixes, else the narrower of `within` and
    /// each of its prefixes that overlap it. A listing passes over these
    /// ranges only, so that its cost and its continuation tokens never
    /// depend on (nor name) streams outside them.
    pub(crate) fn readable_within(&self, within: &str) -> Vec<String> {
        if self.unrestricted() {
            return vec![within.to_string()];
        }
        self.prefixes
            .iter()
            .filter_map(|p| {
                if within.starts_with(p.as_str()) {
                    Some(within.to_string())
                } else if p.starts_with(within) {
                    Some(p.clone())
                } else {
                    None
                }
            })
            .collect()
    }

    fn may_stream(&self, stream: &str) -> bool {
        self.unrestricted() || self.prefixes.iter().any(|p| stream.starts_with(p.as_str()))
    }

    fn may_read_log(&self, prefix: Option<&str>) -> bool {
        self.unrestricted() || prefix.is_some_and(|q| self.prefixes.iter().any(|p| q.starts_with(p.as_str())))
    }

    /// `Ok` if the principal may do what `need` says; else why not.
    pub(crate) fn authorize(&self, need: Need<'_>) -> Result<(), Denied> {
        match self.refusal(need) {
            None => Ok(()),
            Some(r) => Err(Denied::Forbidden(r.message())),
        }
    }

    /// True if the principal may do what `need` says: for leaving out of an
    /// answer (a list, a lookup) what the caller may not see.
    pub(crate) fn permits(&self, need: Need<'_>) -> bool {
        self.refusal(need).is_none()
    }

    fn refusal<'a>(&self, need: Need<'a>) -> Option<Refusal<'a>> {
        let role = match need {
            Need::Role(r) | Need::Group(r, _) => r,
            Need::Write(_) | Need::Condition | Need::NameGroup(_) => Role::Write,
            Need::Read(_) | Need::ReadLog(_) | Need::WholeStore => Role::Read,
        };
        if self.role < role {
            return Some(Refusal::Role(role));
        }
        match need {
            Need::Role(_) => None,
            Need::Read(s) | Need::Write(s) => (!self.may_stream(s)).then_some(Refusal::Stream(s)),
            // The name is checked as a stream name would be.
            Need::NameGroup(name) => (!self.may_stream(name)).then_some(Refusal::GroupName(name)),
            Need::Group(_, GroupSource::Stream(s)) => (!self.may_stream(s)).then_some(Refusal::Stream(s)),
            Need::ReadLog(prefix) => (!self.may_read_log(prefix)).then_some(Refusal::Log),
            Need::Group(_, GroupSource::All(f)) => {
                (!self.may_read_log(f.stream_prefix.as_deref())).then_some(Refusal::Log)
            }
            // A condition's query runs over every stream (query items have no
            // stream restriction): its answer would tell a token limited to
            // some streams whether matching events exist in the others.
            Need::Condition => (!self.unrestricted()).then_some(Refusal::Condition),
            Need::WholeStore => (!self.unrestricted()).then_some(Refusal::WholeStore),
        }
    }
}

/// Which check of [`Principal::authorize`] failed.
enum Refusal<'a> {
    Role(Role),
    Stream(&'a str),
    GroupName(&'a str),
    Log,
    Condition,
    WholeStore,
}

impl Refusal<'_> {
    fn message(&self) -> String {
        match self {
            Refusal::Role(role) => format!("this route needs the {role:?} role").to_lowercase(),
            Refusal::Stream(stream) => format!("this token may not access stream {stream:?}"),
            Refusal::GroupName(name) => format!(
                "this token is limited to some streams: the name of a group it creates must start with one \
                 of its stream prefixes, and {name:?} does not (group names are shared by the whole store)"
            ),
            Refusal::Log => "this token is limited to some streams: give a stream_prefix within them".into(),
            Refusal::Condition => "this token is limited to some streams and may not append with a condition: \
                                   a condition's query runs over every stream"
                .into(),
            Refusal::WholeStore => {
                "this token is limited to some streams and may not read figures of the whole store".into()
            }
        }
    }
}

struct Token {
    name: String,
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
                name: t.name.clone(),
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

    /// Refuses a group named `name` over `source` when `name` falls under
    /// the stream prefixes of a configured token that may not read `source`:
    /// that token would be told the name is taken (409 over HTTP,
    /// ALREADY_EXISTS over gRPC) while the group is hidden from it. So a
    /// group named under a token's prefixes reads only what that token may
    /// read, whoever creates it.
    pub(crate) fn check_group_name(&self, name: &str, source: &GroupSource) -> Result<(), Denied> {
        for t in self.tokens.iter().filter(|t| !t.prefixes.is_empty()) {
            let Some(prefix) = t.prefixes.iter().find(|p| name.starts_with(p.as_str())) else {
                continue;
            };
            let reader = Principal {
                role: Role::Read,
                prefixes: t.prefixes.clone(),
                token: None,
            };
            if !reader.permits(Need::Group(Role::Read, source)) {
                return Err(Denied::Forbidden(format!(
                    "group {name:?} is named under stream prefix {prefix:?}, which a token is limited to: a group \
                     named under it must read only streams under it (group names are shared by the whole store)"
                )));
            }
        }
        Ok(())
    }

    /// The principal for an `Authorization` value: `Bearer <token>`, or
    /// `Basic <base64 of name:secret>` where `name` is a configured token's
    /// name and `secret` the token itself (the user name and password the
    /// KurrentDB clients send).
    pub(crate) fn authenticate(&self, header: Option<&str>) -> Result<Principal, Denied> {
        if self.open {
            return Ok(Principal::everyone());
        }
        let (scheme, rest) = header
            .and_then(|h| h.trim().split_once(' '))
            .ok_or(Denied::Unauthenticated)?;
        let rest = rest.trim();
        let (name, secret) = if scheme.eq_ignore_ascii_case("bearer") {
            (None, rest.to_string())
        } else if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(Denied::Unauthenticated)?;
            let (user, password) = decoded.split_once(':').ok_or(Denied::Unauthenticated)?;
            (Some(user.to_string()), password.to_string())
        } else {
            return Err(Denied::Unauthenticated);
        };
        if secret.is_empty() {
            return Err(Denied::Unauthenticated);
        }
        let presented: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(secret.as_bytes()).into()
        };
        // Compare against every token, in constant time, without stopping early.
        let mut found: Option<(usize, &Token)> = None;
        for (i, t) in self.tokens.iter().enumerate() {
            let name_ok = name.as_deref().is_none_or(|n| n == t.name);
            if bool::from(t.hash.ct_eq(&presented)) && name_ok {
                found = Some((i, t));
            }
        }
        let (i, t) = found.ok_or(Denied::Unauthenticated)?;
        Ok(Principal {
            role: t.role,
            prefixes: t.prefixes.clone(),
            token: Some(i),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Role, prefixes: &[&str]) -> Principal {
        Principal {
            role,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            token: None,
        }
    }

    fn forbidden(p: &Principal, need: Need<'_>) -> String {
        match p.authorize(need) {
            Err(Denied::Forbidden(m)) => m,
            other => panic!("{need:?}: {other:?}"),
        }
    }

    /// A listing under `within` looks only where the token may read.
    #[test]
    fn readable_within_narrows_a_listing_to_the_token_prefixes() {
        assert_eq!(token(Role::Read, &[]).readable_within("ord"), ["ord"]);
        let tenant = token(Role::Read, &["orders-", "users-eu-"]);
        assert_eq!(tenant.readable_within(""), ["orders-", "users-eu-"]);
        assert_eq!(tenant.readable_within("users-"), ["users-eu-"]);
        assert_eq!(tenant.readable_within("orders-42"), ["orders-42"]);
        assert!(tenant.readable_within("carts-").is_empty());
    }

    #[test]
    fn roles_then_streams_then_the_log() {
        let reader = token(Role::Read, &[]);
        let tenant = token(Role::Write, &["orders-"]);
        assert!(reader.permits(Need::Read("anything")));
        assert_eq!(forbidden(&reader, Need::Write("a")), "this route needs the write role");
        assert_eq!(
            forbidden(&tenant, Need::Role(Role::Admin)),
            "this route needs the admin role"
        );
        assert!(tenant.permits(Need::Write("orders-1")));
        assert_eq!(
            forbidden(&tenant, Need::Read("users-1")),
            "this token may not access stream \"users-1\""
        );
        assert!(tenant.permits(Need::ReadLog(Some("orders-eu-"))));
        for prefix in [None, Some("order"), Some("users-")] {
            assert!(!tenant.permits(Need::ReadLog(prefix)), "{prefix:?}");
        }
        assert!(reader.permits(Need::ReadLog(None)));
        // A condition reads every stream: only an unrestricted writer may append with one.
        assert!(token(Role::Write, &[]).permits(Need::Condition));
        assert!(forbidden(&tenant, Need::Condition).contains("may not append with a condition"));
        assert!(!reader.permits(Need::Condition));
    }

    #[test]
    fn groups_are_checked_by_what_they_read() {
        let tenant = token(Role::Write, &["orders-"]);
        let mine = GroupSource::Stream("orders-1".into());
        let theirs = GroupSource::Stream("users-1".into());
        let everything = GroupSource::All(annal::Filter::all());
        assert!(tenant.permits(Need::Group(Role::Write, &mine)));
        assert!(!tenant.permits(Need::Group(Role::Read, &theirs)));
        assert!(!tenant.permits(Need::Group(Role::Read, &everything)));
        assert!(!token(Role::Read, &[]).permits(Need::Group(Role::Write, &everything)));
    }

    #[test]
    fn tokens_authenticate_by_hash_and_open_mode_lets_everyone_in() {
        let mut config = ServerConfig::open("127.0.0.1:0".parse().unwrap());
        assert!(Auth::new(&config).unwrap().authenticate(None).is_ok());
        config.no_auth = false;
        config.tokens = vec![crate::config::TokenConfig {
            name: "t".into(),
            sha256: crate::config::hash_token("secret"),
            role: Role::Read,
            stream_prefixes: vec![],
        }];
        let auth = Auth::new(&config).unwrap();
        assert!(auth.authenticate(Some("Bearer secret")).is_ok());
        assert!(auth.authenticate(Some("bearer  secret ")).is_ok());
        for bad in [None, Some("Bearer"), Some("Bearer other"), Some("Basic secret")] {
            assert_eq!(auth.authenticate(bad).err(), Some(Denied::Unauthenticated), "{bad:?}");
        }
        // Basic: the token's name as the user, the token as the password.
        use base64::Engine;
        let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(auth.authenticate(Some(&basic("t:secret"))).is_ok());
        for bad in ["u:secret", "t:other", "t:", "secret"] {
            assert_eq!(
                auth.authenticate(Some(&basic(bad))).err(),
                Some(Denied::Unauthenticated),
                "{bad}"
            );
        }
    }
}
