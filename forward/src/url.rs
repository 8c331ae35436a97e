//! Target URLs: which kind of target a URL names, its parameters, and the
//! target it makes. A password in a URL is never printed: [`TargetUrl`]'s
//! display hides it.
//!
//! This module owns parsing; it must never open a connection itself (the
//! targets do, when they are first used).

use std::time::Duration;

use crate::error::ConfigError;

/// The kinds of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// PostgreSQL, `postgres://` or `postgresql://`.
    Postgres,
    /// NATS JetStream, `nats://`.
    Nats,
    /// Another annal over HTTP, `annal+http://` or `annal+https://`.
    Annal,
    /// A KurrentDB-protocol server, `kurrentdb://`, `esdb://` (and their `+discover` forms).
    Kurrent,
}

/// A parsed target URL.
#[derive(Debug, Clone)]
pub struct TargetUrl {
    /// The kind of target.
    pub kind: TargetKind,
    /// The URL as given.
    pub url: url::Url,
}

impl std::fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

/// The URL with its password (and a `token` parameter) replaced by `***`.
pub fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "token" || k == "password" {
                "***".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if !pairs.is_empty() {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

impl TargetUrl {
    /// Parses a target URL and checks its scheme.
    pub fn parse(s: &str) -> Result<TargetUrl, ConfigError> {
        let url = url::Url::parse(s).map_err(|e| ConfigError::BadUrl {
            url: hide_password(s),
            reason: e.to_string(),
        })?;
        let kind = match url.scheme() {
            "postgres" | "postgresql" => TargetKind::Postgres,
            "nats" => TargetKind::Nats,
            "annal+http" | "annal+https" => TargetKind::Annal,
            "kurrentdb" | "esdb" | "esdb+discover" | "kurrentdb+discover" => TargetKind::Kurrent,
            other => {
                return Err(ConfigError::Unsupported {
                    scheme: other.to_string(),
                    reason: "known schemes are postgres://, nats://, kurrentdb://, esdb://, annal+http:// and annal+https://"
                        .into(),
                });
            }
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::BadUrl {
                url: redact(&url),
                reason: "no host".into(),
            });
        }
        Ok(TargetUrl { kind, url })
    }

    /// The value of query parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// A parameter parsed as a duration in milliseconds.
    pub(crate) fn millis(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.param(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| self.bad(format!("{name}={v:?} is not a number of milliseconds"))),
        }
    }

    /// An error about this URL.
    pub(crate) fn bad(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::BadUrl {
            url: self.to_string(),
            reason: reason.into(),
        }
    }
}

/// `s` with anything between `://user:` and `@` hidden, for URLs that do not parse.
fn hide_password(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => match s[a + 3..b].find(':') {
            Some(c) => format!("{}:***{}", &s[..a + 3 + c], &s[b..]),
            None => s.to_string(),
        },
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognised_and_others_refused_clearly() {
        assert_eq!(
            TargetUrl::parse("postgres://u@h/db").unwrap().kind,
            TargetKind::Postgres
        );
        assert_eq!(
            TargetUrl::parse("nats://127.0.0.1:4222").unwrap().kind,
            TargetKind::Nats
        );
        assert_eq!(TargetUrl::parse("annal+http://h:2114").unwrap().kind, TargetKind::Annal);
        for u in ["kurrentdb://h:2113", "esdb://h:2113", "esdb+discover://h"] {
            assert_eq!(TargetUrl::parse(u).unwrap().kind, TargetKind::Kurrent);
        }
        assert!(
            TargetUrl::parse("ftp://h")
                .unwrap_err()
                .to_string()
                .contains("UNSUPPORTED")
        );
        assert!(matches!(TargetUrl::parse("not a url"), Err(ConfigError::BadUrl { .. })));
        assert!(matches!(
            TargetUrl::parse("postgres:///db"),
            Err(ConfigError::BadUrl { .. })
        ));
    }

    #[test]
    fn passwords_and_tokens_are_never_shown() {
        let t = TargetUrl::parse("postgres://u:secret@h/db?token=abc&table=t").unwrap();
        let shown = t.to_string();
        assert!(!shown.contains("secret") && !shown.contains("abc"), "{shown}");
        assert!(shown.contains("table=t"));
        let e = TargetUrl::parse("postgres://u:secret@h:notaport/db")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
