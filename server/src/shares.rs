//! Each token's share of the server's places, for every protocol.
//!
//! Subscriptions (`max_subscribers`: SSE, gRPC catch-up subscriptions and
//! persistent subscription consumers), waiting group fetches
//! (`max_long_polls`) and scans (`max_scans`: HTTP counts and scanning
//! reads, and gRPC scanning reads of `$all` while open) are places every
//! caller shares. So that one token cannot take them all and leave the
//! other tenants with 503 or RESOURCE_EXHAUSTED, a token holds at most
//! `token_share_percent` of each kind (at least one place) when more than
//! one token is configured. In open mode, or with one token, there is no
//! one else to leave room for, and no share applies.
//!
//! It counts places only: each protocol takes its share next to the place
//! itself, and says what a refusal means to its client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::{Need, Principal};
use crate::config::{Role, ServerConfig};

/// A kind of place a token has a share of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Place {
    /// One of `max_subscribers`.
    Subscription,
    /// One of `max_long_polls`.
    LongPoll,
    /// One of `max_scans`.
    Scan,
}

impl Place {
    /// How many places of this kind the server has.
    fn total(self, config: &ServerConfig) -> usize {
        match self {
            Place::Subscription => config.max_subscribers,
            Place::LongPoll => config.max_long_polls,
            Place::Scan => config.max_scans,
        }
    }
}

/// The places each token holds.
pub(crate) struct Shares {
    /// Whether shares apply (more than one token is configured).
    apply: bool,
    percent: usize,
    totals: [usize; 3],
    held: Mutex<HashMap<(usize, Place), usize>>,
}

/// A token's hold on one place of its share, given back when dropped.
#[must_use = "the place is given back when the share is dropped"]
pub(crate) struct Share {
    shares: Arc<Shares>,
    /// The token and kind counted; `None` when no share applies.
    key: Option<(usize, Place)>,
}

/// Why a share was refused: the token holds `most` places of that kind already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShareFull {
    /// The most places of the kind one token may hold.
    pub(crate) most: usize,
    /// The places of the kind the server has.
    pub(crate) total: usize,
}

impl ShareFull {
    /// Words for the refusal, naming the kind (`"subscriptions"`, say).
    pub(crate) fn message(&self, kind: &str) -> String {
        format!(
            "this token holds its share of {kind}: at most {} of the server's {} at once \
             (token_share_percent), so that other tokens keep some; retry later",
            self.most, self.total
        )
    }
}

impl Shares {
    pub(crate) fn new(config: &ServerConfig) -> Arc<Shares> {
        let kinds = [Place::Subscription, Place::LongPoll, Place::Scan];
        Arc::new(Shares {
            apply: !config.no_auth && config.tokens.len() > 1,
            percent: usize::from(config.token_share_percent),
            totals: kinds.map(|k| k.total(config)),
            held: Mutex::new(HashMap::new()),
        })
    }

    fn total(&self, place: Place) -> usize {
        match place {
            Place::Subscription => self.totals[0],
            Place::LongPoll => self.totals[1],
            Place::Scan => self.totals[2],
        }
    }

    /// The most places of `place`'s kind one token may hold (at least one).
    fn most(&self, place: Place) -> usize {
        (self.total(place).saturating_mul(self.percent) / 100).max(1)
    }

    /// One more place of `place`'s kind for `p`'s token, or [`ShareFull`]
    /// when it holds its share already.
    pub(crate) fn take(self: &Arc<Self>, p: &Principal, place: Place) -> Result<Share, ShareFull> {
        let key = match p.token() {
            Some(token) if self.apply => (token, place),
            _ => {
                return Ok(Share {
                    shares: self.clone(),
                    key: None,
                });
            }
        };
        let most = self.most(place);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key).or_insert(0);
        if *n >= most {
            return Err(ShareFull {
                most,
                total: self.total(place),
            });
        }
        *n += 1;
        Ok(Share {
            shares: self.clone(),
            key: Some(key),
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut held = self.shares.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&key);
            }
        }
    }
}

/// Whether `p` holds as many groups as it may (`max_groups_per_token`):
/// a token limited to some stream prefixes may have at most `most` groups
/// that read only streams it may read (whoever made them), so that it
/// cannot make group after group, each holding events in memory. Tokens
/// that may read every stream manage the whole store and are not counted.
/// The caller holds `AppState::group_creation` from this check until the
/// group is made, so that concurrent creations cannot pass it together.
pub(crate) fn groups_full(store: &annal::Store, p: &Principal, most: usize) -> Result<bool, annal::Error> {
    if p.prefixes().is_empty() {
        return Ok(false);
    }
    let mine = store
        .groups_list()?
        .iter()
        .filter(|(_, s)| p.permits(Need::Group(Role::Read, &s.source)))
        .count();
    Ok(mine >= most)
}

/// Words for a refusal by [`groups_full`].
pub(crate) fn groups_full_message(most: usize) -> String {
    format!(
        "this token is limited to some streams and has {most} groups over them already          (max_groups_per_token); delete one first"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TokenConfig, hash_token};

    fn config(tokens: usize) -> ServerConfig {
        let mut c = ServerConfig::open("127.0.0.1:0".parse().unwrap());
        c.no_auth = false;
        c.max_subscribers = 5;
        c.tokens = (0..tokens)
            .map(|i| TokenConfig {
                name: format!("t{i}"),
                sha256: hash_token(&format!("secret{i}")),
                role: Role::Read,
                stream_prefixes: vec![],
            })
            .collect();
        c
    }

    fn principal(c: &ServerConfig, i: usize) -> Principal {
        crate::auth::Auth::new(c)
            .unwrap()
            .authenticate(Some(&format!("Bearer secret{i}")))
            .unwrap()
    }

    #[test]
    fn a_token_holds_at_most_its_share_and_gets_places_back() {
        let c = config(2);
        let shares = Shares::new(&c);
        let (a, b) = (principal(&c, 0), principal(&c, 1));
        // Half of 5, rounded down.
        let held: Vec<Share> = (0..2).map(|_| shares.take(&a, Place::Subscription).unwrap()).collect();
        let full = shares.take(&a, Place::Subscription).err().unwrap();
        assert_eq!(full, ShareFull { most: 2, total: 5 });
        // Another token, and another kind, are not held back.
        let _b = shares.take(&b, Place::Subscription).unwrap();
        let _scan = shares.take(&a, Place::Scan).unwrap();
        drop(held);
        assert!(shares.take(&a, Place::Subscription).is_ok());
    }

    #[test]
    fn one_token_or_open_mode_has_no_share() {
        let c = config(1);
        let shares = Shares::new(&c);
        let a = principal(&c, 0);
        let held: Vec<Share> = (0..5).map(|_| shares.take(&a, Place::Subscription).unwrap()).collect();
        assert_eq!(held.len(), 5);
        let open = ServerConfig::open("127.0.0.1:0".parse().unwrap());
        let everyone = crate::auth::Auth::new(&open).unwrap().authenticate(None).unwrap();
        let shares = Shares::new(&open);
        let held: Vec<Share> = (0..300)
            .map(|_| shares.take(&everyone, Place::LongPoll).unwrap())
            .collect();
        assert_eq!(held.len(), 300);
    }
}
