//! The Rust types and service traits generated from `proto/` by `build.rs`,
//! in modules nested as the protobuf packages are (the generated code refers
//! to other packages by relative paths).
//!
//! It owns nothing but the generated code. It must never hold logic: the
//! services beside it implement the traits.

#![allow(missing_docs, dead_code, clippy::all, clippy::pedantic, unreachable_pub)]

/// `event_store.*`.
pub mod event_store {
    /// `event_store.client`: ids, stream identifiers, shared errors.
    pub mod client {
        tonic::include_proto!("event_store.client");

        /// `event_store.client.streams`.
        pub mod streams {
            tonic::include_proto!("event_store.client.streams");
        }
        /// `event_store.client.gossip`.
        pub mod gossip {
            tonic::include_proto!("event_store.client.gossip");
        }
        /// `event_store.client.persistent_subscriptions`.
        pub mod persistent_subscriptions {
            tonic::include_proto!("event_store.client.persistent_subscriptions");
        }
        /// `event_store.client.server_features`.
        pub mod server_features {
            tonic::include_proto!("event_store.client.server_features");
        }
    }
}

/// `google.*`.
pub mod google {
    /// `google.rpc`: the status carried by BatchAppend errors.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}
