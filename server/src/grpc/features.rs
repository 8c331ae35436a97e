//! `event_store.client.server_features.ServerFeatures/GetSupportedMethods`:
//! the methods this server implements, named as the clients look them up
//! (lower case), so that they enable what annal has (batch append,
//! persistent subscriptions to `$all`) and
//! leave alone what it has not.
//!
//! It owns that list, which must name exactly the methods served.

use tonic::{Request, Response, Status};

use super::proto::event_store::client::Empty;
use super::proto::event_store::client::server_features::server_features_server;
use super::proto::event_store::client::server_features::{SupportedMethod, SupportedMethods};

/// The server version announced (the protocol level annal follows).
const VERSION: &str = "24.10.0";

/// The persistent subscriptions service, as the clients look it up.
const PERSISTENT: &str = "event_store.client.persistent_subscriptions.persistentsubscriptions";

/// Every implemented method: (service, method).
const METHODS: &[(&str, &str)] = &[
    ("event_store.client.streams.streams", "read"),
    ("event_store.client.streams.streams", "append"),
    ("event_store.client.streams.streams", "batchappend"),
    ("event_store.client.streams.streams", "delete"),
    ("event_store.client.streams.streams", "tombstone"),
    (PERSISTENT, "create"),
    (PERSISTENT, "update"),
    (PERSISTENT, "delete"),
    (PERSISTENT, "read"),
    (PERSISTENT, "getinfo"),
    (PERSISTENT, "list"),
    (PERSISTENT, "replayparked"),
    (PERSISTENT, "restartsubsystem"),
    ("event_store.client.gossip.gossip", "read"),
    (
        "event_store.client.server_features.serverfeatures",
        "getsupportedmethods",
    ),
];

/// The ServerFeatures service.
pub(crate) struct Features;

#[tonic::async_trait]
impl server_features_server::ServerFeatures for Features {
    async fn get_supported_methods(&self, _: Request<Empty>) -> Result<Response<SupportedMethods>, Status> {
        Ok(Response::new(SupportedMethods {
            methods: METHODS
                .iter()
                .map(|(service, method)| SupportedMethod {
                    method_name: method.to_string(),
                    service_name: service.to_string(),
                    // Persistent subscriptions go to a stream and to `$all`
                    // (the Rust client looks for "all" on create).
                    features: if *service == PERSISTENT && *method == "create" {
                        vec!["stream".to_string(), "all".to_string()]
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
            event_store_server_version: VERSION.to_string(),
        }))
    }
}
