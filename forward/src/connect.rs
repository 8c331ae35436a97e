//! The one place that turns a target URL into its target: it owns the
//! choice of target by scheme, and must never parse URLs (that is
//! [`crate::url`]'s) nor deliver anything (that is each target's).

use crate::error::ConfigError;
use crate::url::{TargetKind, TargetUrl};

/// Makes the target a URL names. Nothing is connected yet: the first
/// delivery connects, so an unreachable target is retried, never fatal.
pub fn connect(url: &str, token: Option<String>) -> Result<Box<dyn annal::ForwardTarget>, ConfigError> {
    let t = TargetUrl::parse(url)?;
    Ok(match t.kind {
        TargetKind::Postgres => Box::new(crate::postgres::PostgresTarget::new(&t)?),
        TargetKind::Nats => Box::new(crate::nats::NatsTarget::new(&t)?),
        TargetKind::Annal => Box::new(crate::http::AnnalTarget::new(&t, token)?),
        TargetKind::Kurrent => Box::new(crate::kurrentdb::KurrentTarget::new(&t)?),
    })
}
