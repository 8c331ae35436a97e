//! `event_store.client.gossip.Gossip/Read`: the cluster as the clients'
//! discovery sees it, which is one member, alive, the leader, at the host and
//! port the client used (or the configured `advertise` address).
//!
//! It owns that answer. It must never touch the store.

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use super::Authority;
use super::convert::{ticks, uuid_out};
use super::proto::event_store::client::Empty;
use super::proto::event_store::client::gossip::gossip_server;
use super::proto::event_store::client::gossip::{ClusterInfo, EndPoint, MemberInfo, member_info};
use crate::state::AppState;

/// The Gossip service.
pub(crate) struct Gossip {
    state: AppState,
    /// This node's id, for as long as the server runs.
    instance: ::uuid::Uuid,
}

impl Gossip {
    pub(crate) fn new(state: AppState) -> Gossip {
        Gossip {
            state,
            instance: ::uuid::Uuid::new_v4(),
        }
    }
}

/// Splits `host:port` (a bracketed IPv6 host keeps its brackets off).
fn split_host_port(s: &str) -> Option<(String, u32)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

#[tonic::async_trait]
impl gossip_server::Gossip for Gossip {
    async fn read(&self, request: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        let listen = self.state.config.listen;
        let (address, port) = self
            .state
            .config
            .advertise
            .as_deref()
            .and_then(split_host_port)
            .or_else(|| {
                request
                    .extensions()
                    .get::<Authority>()
                    .and_then(|a| split_host_port(&a.0))
            })
            .unwrap_or_else(|| (listen.ip().to_string(), u32::from(listen.port())));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let member = MemberInfo {
            instance_id: Some(uuid_out(self.instance, false)),
            time_stamp: ticks(now),
            state: member_info::VNodeState::Leader as i32,
            is_alive: true,
            http_end_point: Some(EndPoint { address, port }),
        };
        Ok(Response::new(ClusterInfo { members: vec![member] }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split() {
        assert_eq!(split_host_port("db.local:2113"), Some(("db.local".into(), 2113)));
        assert_eq!(split_host_port("[::1]:2113"), Some(("::1".into(), 2113)));
        assert_eq!(split_host_port("db.local"), None);
    }
}
