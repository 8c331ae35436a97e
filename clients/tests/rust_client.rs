//! The official KurrentDB Rust client (crate `kurrentdb`) against `annal
//! serve`: append, read a stream and `$all`, optimistic concurrency, delete,
//! tombstone, metadata, a catch-up subscription, and persistent subscriptions
//! to a stream and to `$all` (filtered), through the client's own API (it
//! calls ServerFeatures and Gossip on connect as it does with KurrentDB).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use annal::{Durability, Options, Store};
use annal_server::ServerConfig;
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, DeleteStreamOptions, EventData, ReadAllOptions, ReadStreamOptions,
    StreamMetadata, StreamPosition, StreamState, SubscribeToStreamOptions, SubscriptionEvent, TombstoneStreamOptions,
};
use serde_json::json;
use tokio::sync::oneshot;

struct Server {
    port: u16,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            dir.path().join("data"),
            Options::default().durability(Durability::Never),
        )
        .unwrap(),
    );
    let bound = annal_server::bind(store, ServerConfig::open("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let port = bound.local_addr().port();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(bound.run(async move {
        let _ = rx.await;
    }));
    Server {
        port,
        _dir: dir,
        _stop: tx,
    }
}

/// (type, revision, commit position) of every event read.
async fn collect(mut s: kurrentdb::ReadStream) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    while let Some(e) = s.next().await.unwrap() {
        let e = e.get_original_event();
        out.push((e.event_type.clone(), e.revision, e.position.commit));
    }
    out
}

#[tokio::test]
async fn the_rust_clients_core_calls_work() {
    let server = start().await;
    let settings: ClientSettings = format!("kurrentdb://127.0.0.1:{}?tls=false", server.port)
        .parse()
        .unwrap();
    let client = Client::new(settings).unwrap();

    // Appends: one event, then a batch, with optimistic concurrency.
    let first = client
        .append_to_stream(
            "order-1",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            EventData::json("OrderPlaced", &json!({"total": 10})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(first.next_expected_version, 0);
    assert!(first.position.commit > 0);
    let batch = vec![
        EventData::json("OrderPaid", &json!({})).unwrap(),
        EventData::json("OrderShipped", &json!({})).unwrap(),
    ];
    let second = client
        .append_to_stream(
            "order-1",
            &AppendToStreamOptions::default().stream_state(StreamState::StreamRevision(0)),
            batch,
        )
        .await
        .unwrap();
    assert_eq!(second.next_expected_version, 2);
    assert_eq!(second.position.commit, first.position.commit + 2);
    let wrong = client
        .append_to_stream(
            "order-1",
            &AppendToStreamOptions::default().stream_state(StreamState::NoStream),
            EventData::json("Again", &json!({})).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, kurrentdb::Error::WrongExpectedVersion { .. }),
        "{wrong:?}"
    );

    // Reads of the stream, forwards and backwards, and of $all.
    let events = collect(
        client
            .read_stream("order-1", &ReadStreamOptions::default())
            .await
            .unwrap(),
    )
    .await;
    let kinds: Vec<_> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(kinds, ["OrderPlaced", "OrderPaid", "OrderShipped"]);
    assert_eq!(events[2].2, second.position.commit);
    let back = collect(
        client
            .read_stream(
                "order-1",
                &ReadStreamOptions::default()
                    .backwards()
                    .position(StreamPosition::End)
                    .max_count(1),
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(back[0].1, 2);
    let all = collect(client.read_all(&ReadAllOptions::default()).await.unwrap()).await;
    assert!(all.iter().any(|e| e.0 == "OrderShipped"));

    // Metadata through $$order-1.
    let mut builder = StreamMetadata::builder();
    builder = builder.max_count(10);
    client
        .set_stream_metadata("order-1", &AppendToStreamOptions::default(), &builder.build())
        .await
        .unwrap();
    let meta = client
        .get_stream_metadata("order-1", &ReadStreamOptions::default())
        .await
        .unwrap();
    assert!(format!("{meta:?}").contains("10"), "{meta:?}");

    // A catch-up subscription sees history.
    let mut sub = client
        .subscribe_to_stream(
            "order-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    let mut seen = 0;
    while seen < 3 {
        if let SubscriptionEvent::EventAppeared(_) = sub.next_subscription_event().await.unwrap() {
            seen += 1;
        }
    }

    // Delete (soft), then tombstone: the stream reads as gone, then as deleted.
    client
        .delete_stream("order-1", &DeleteStreamOptions::default())
        .await
        .unwrap();
    let gone = client
        .read_stream("order-1", &ReadStreamOptions::default())
        .await
        .unwrap();
    let mut gone = gone;
    assert!(matches!(gone.next().await, Err(kurrentdb::Error::ResourceNotFound)));
    client
        .tombstone_stream("order-1", &TombstoneStreamOptions::default())
        .await
        .unwrap();
    let deleted = client
        .append_to_stream(
            "order-1",
            &AppendToStreamOptions::default(),
            EventData::json("Late", &json!({})).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(deleted, kurrentdb::Error::ResourceDeleted), "{deleted:?}");
}

#[tokio::test]
async fn the_rust_clients_persistent_subscriptions_work_on_a_stream_and_on_all() {
    use kurrentdb::{
        GetPersistentSubscriptionInfoOptions, PersistentSubscriptionOptions, PersistentSubscriptionToAllOptions,
        SubscribeToPersistentSubscriptionOptions, SubscriptionFilter,
    };
    let server = start().await;
    let settings: ClientSettings = format!("kurrentdb://127.0.0.1:{}?tls=false", server.port)
        .parse()
        .unwrap();
    let client = Client::new(settings).unwrap();
    client
        .append_to_stream(
            "pay-1",
            &AppendToStreamOptions::default(),
            EventData::json("Paid", &json!({"total": 10})).unwrap(),
        )
        .await
        .unwrap();

    // A group on one stream, from its start.
    client
        .create_persistent_subscription(
            "pay-1",
            "workers",
            &PersistentSubscriptionOptions::default().start_from(StreamPosition::Start),
        )
        .await
        .unwrap();
    let mut sub = client
        .subscribe_to_persistent_subscription("pay-1", "workers", &SubscribeToPersistentSubscriptionOptions::default())
        .await
        .unwrap();
    let e = sub.next().await.unwrap();
    let original = e.get_original_event();
    assert_eq!((original.event_type.as_str(), original.revision), ("Paid", 0));
    assert!(original.position.commit > 0);
    sub.ack(&e).await.unwrap();
    let info = client
        .get_persistent_subscription_info("pay-1", "workers", &GetPersistentSubscriptionInfoOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (info.event_source.as_str(), info.group_name.as_str()),
        ("pay-1", "workers")
    );

    // A group on $all (the client sends it only if ServerFeatures offers it), filtered by stream prefix.
    client
        .create_persistent_subscription_to_all(
            "all-workers",
            &PersistentSubscriptionToAllOptions::default()
                .start_from(StreamPosition::Start)
                .filter(SubscriptionFilter::on_stream_name().add_prefix("pay-")),
        )
        .await
        .unwrap();
    let mut sub = client
        .subscribe_to_persistent_subscription_to_all(
            "all-workers",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .unwrap();
    let e = sub.next().await.unwrap();
    assert_eq!(e.get_original_event().stream_id(), "pay-1");
    sub.ack(&e).await.unwrap();
    let info = client
        .get_persistent_subscription_info_to_all("all-workers", &GetPersistentSubscriptionInfoOptions::default())
        .await
        .unwrap();
    assert_eq!(info.event_source, "$all");
    client
        .delete_persistent_subscription("pay-1", "workers", &Default::default())
        .await
        .unwrap();
    client
        .delete_persistent_subscription_to_all("all-workers", &Default::default())
        .await
        .unwrap();
}
