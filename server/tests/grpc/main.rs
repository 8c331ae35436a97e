//! The KurrentDB gRPC protocol of `annal serve`, through a tonic client built
//! from the same protocol files: the wire details the official clients
//! depend on (ids in both forms, positions, ranges, error codes, trailers
//! and texts, BatchAppend error details), the shared listener, auth and the
//! services beside Streams. The official Python client's own tests are in
//! `server/tests/python` (scripts/grpc-clients.sh).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use annal::{Durability, Options, Store};
use annal_server::{Role, ServerConfig, TokenConfig, hash_token};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// The generated messages and clients, nested as their packages are.
#[allow(clippy::all, dead_code, missing_docs)]
mod proto {
    pub mod event_store {
        pub mod client {
            tonic::include_proto!("event_store.client");
            pub mod streams {
                tonic::include_proto!("event_store.client.streams");
            }
            pub mod gossip {
                tonic::include_proto!("event_store.client.gossip");
            }
            pub mod server_features {
                tonic::include_proto!("event_store.client.server_features");
            }
            pub mod persistent_subscriptions {
                tonic::include_proto!("event_store.client.persistent_subscriptions");
            }
        }
    }
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}

use proto::event_store::client::streams::streams_client::StreamsClient;
use proto::event_store::client::streams::*;
use proto::event_store::client::{Empty, StreamIdentifier, Uuid as WireUuid, uuid as wire_uuid};

struct Server {
    port: u16,
    /// The store the server serves (for setting up what its API refuses).
    store: Arc<Store>,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(f: impl FnOnce(&mut ServerConfig)) -> Server {
    start_in(tempfile::tempdir().unwrap(), f).await
}

/// A server over the store in `dir`/data (made there if missing).
async fn start_in(dir: tempfile::TempDir, f: impl FnOnce(&mut ServerConfig)) -> Server {
    let store = Arc::new(
        Store::open(
            dir.path().join("data"),
            Options::default().durability(Durability::Never),
        )
        .unwrap(),
    );
    let mut config = ServerConfig::open("127.0.0.1:0".parse().unwrap());
    f(&mut config);
    let bound = annal_server::bind(store.clone(), config).await.unwrap();
    let port = bound.local_addr().port();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(bound.run(async move {
        let _ = rx.await;
    }));
    Server {
        port,
        store,
        _dir: dir,
        stop: Some(tx),
    }
}

impl Server {
    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn streams(&self) -> StreamsClient<Channel> {
        StreamsClient::new(self.channel().await)
    }
}

/// Auth on, one token: `t0ken`, a writer limited to streams `orders-…`.
fn tenant_only(c: &mut ServerConfig) {
    c.no_auth = false;
    c.tokens = vec![TokenConfig {
        name: "tenant".into(),
        sha256: hash_token("t0ken"),
        role: Role::Write,
        stream_prefixes: vec!["orders-".into()],
    }];
}

fn sid(name: &str) -> Option<StreamIdentifier> {
    Some(StreamIdentifier {
        stream_name: name.as_bytes().to_vec().into(),
    })
}

fn string_id(id: uuid::Uuid) -> Option<WireUuid> {
    Some(WireUuid {
        value: Some(wire_uuid::Value::String(id.to_string())),
    })
}

fn structured_id(id: uuid::Uuid) -> Option<WireUuid> {
    let b = id.as_bytes();
    Some(WireUuid {
        value: Some(wire_uuid::Value::Structured(wire_uuid::Structured {
            most_significant_bits: i64::from_be_bytes(b[..8].try_into().unwrap()),
            least_significant_bits: i64::from_be_bytes(b[8..].try_into().unwrap()),
        })),
    })
}

fn message(id: Option<WireUuid>, kind: &str, content_type: &str, data: &[u8]) -> append_req::ProposedMessage {
    append_req::ProposedMessage {
        id,
        metadata: [("type", kind), ("content-type", content_type)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        custom_metadata: b"meta".to_vec().into(),
        data: data.to_vec().into(),
    }
}

/// Appends with `Append`; the answer or the error status.
async fn append(
    c: &mut StreamsClient<Channel>,
    stream: &str,
    expected: append_req::options::ExpectedStreamRevision,
    messages: Vec<append_req::ProposedMessage>,
) -> Result<AppendResp, tonic::Status> {
    let mut reqs = vec![AppendReq {
        content: Some(append_req::Content::Options(append_req::Options {
            stream_identifier: sid(stream),
            expected_stream_revision: Some(expected),
        })),
    }];
    reqs.extend(messages.into_iter().map(|m| AppendReq {
        content: Some(append_req::Content::ProposedMessage(m)),
    }));
    c.append(tokio_stream(reqs)).await.map(|r| r.into_inner())
}

fn tokio_stream<T: Send + 'static>(items: Vec<T>) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::iter(items)
}

fn success_position(r: &AppendResp) -> (u64, u64) {
    match &r.result {
        Some(append_resp::Result::Success(s)) => {
            let revision = match s.current_revision_option {
                Some(append_resp::success::CurrentRevisionOption::CurrentRevision(r)) => r,
                ref other => panic!("{other:?}"),
            };
            match &s.position_option {
                Some(append_resp::success::PositionOption::Position(p)) => {
                    assert_eq!(p.commit_position, p.prepare_position);
                    (revision, p.commit_position)
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
}

fn read_options(
    stream_option: read_req::options::StreamOption,
    structured: bool,
    backwards: bool,
    count: u64,
) -> ReadReq {
    use read_req::options::*;
    ReadReq {
        options: Some(read_req::Options {
            stream_option: Some(stream_option),
            read_direction: if backwards {
                ReadDirection::Backwards
            } else {
                ReadDirection::Forwards
            } as i32,
            resolve_links: false,
            count_option: Some(CountOption::Count(count)),
            filter_option: Some(FilterOption::NoFilter(Empty {})),
            uuid_option: Some(UuidOption {
                content: Some(if structured {
                    uuid_option::Content::Structured(Empty {})
                } else {
                    uuid_option::Content::String(Empty {})
                }),
            }),
            control_option: None,
        }),
    }
}

fn stream_from(stream: &str, revision: Option<u64>) -> read_req::options::StreamOption {
    use read_req::options::*;
    StreamOption::Stream(StreamOptions {
        stream_identifier: sid(stream),
        revision_option: Some(match revision {
            Some(r) => stream_options::RevisionOption::Revision(r),
            None => stream_options::RevisionOption::Start(Empty {}),
        }),
    })
}

fn all_from(commit: Option<u64>) -> read_req::options::StreamOption {
    use read_req::options::*;
    StreamOption::All(AllOptions {
        all_option: Some(match commit {
            Some(c) => all_options::AllOption::Position(Position {
                commit_position: c,
                prepare_position: c,
            }),
            None => all_options::AllOption::Start(Empty {}),
        }),
    })
}

async fn read(c: &mut StreamsClient<Channel>, req: ReadReq) -> Result<Vec<read_resp::Content>, tonic::Status> {
    let mut s = c.read(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend(m.content);
    }
    Ok(out)
}

fn events(contents: &[read_resp::Content]) -> Vec<&read_resp::read_event::RecordedEvent> {
    contents
        .iter()
        .filter_map(|c| match c {
            read_resp::Content::Event(e) => {
                let ev = e.event.as_ref().unwrap();
                assert_eq!(
                    e.position,
                    Some(read_resp::read_event::Position::CommitPosition(ev.commit_position))
                );
                Some(ev)
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn appends_reads_ids_and_positions() {
    use append_req::options::ExpectedStreamRevision as E;
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // One id as a string, one structured; the store keeps the same UUIDs.
    let batch = vec![
        message(string_id(a), "A", "application/json", b"{}"),
        message(structured_id(b), "B", "text/plain", b"raw"),
    ];
    let r = append(&mut c, "s-1", E::NoStream(Empty {}), batch.clone())
        .await
        .unwrap();
    let (revision, position) = success_position(&r);
    assert_eq!(revision, 1);
    assert!(position > 1, "the commit position of the last event, > 0");
    // An exact retry answers the same.
    let again = append(&mut c, "s-1", E::NoStream(Empty {}), batch).await.unwrap();
    assert_eq!(success_position(&again), (1, position));

    for structured in [false, true] {
        let got = read(&mut c, read_options(stream_from("s-1", None), structured, false, 10))
            .await
            .unwrap();
        let evs = events(&got);
        assert_eq!(evs.len(), 2);
        let want = |id| if structured { structured_id(id) } else { string_id(id) };
        assert_eq!(evs[0].id, want(a));
        assert_eq!(evs[1].id, want(b));
        assert_eq!(evs[1].commit_position, position);
        assert_eq!(evs[0].commit_position + 1, position);
        assert_eq!(evs[0].metadata["type"], "A");
        assert_eq!(evs[0].metadata["content-type"], "application/json");
        assert_eq!(evs[1].metadata["content-type"], "application/octet-stream");
        let created: i64 = evs[0].metadata["created"].parse().unwrap();
        let now_ticks = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
            * 10;
        assert!(
            (now_ticks - created).abs() < 600_000_000,
            "created is 100-ns ticks since 1970"
        );
        assert_eq!(&evs[1].custom_metadata[..], b"meta");
        assert_eq!(&evs[1].data[..], b"raw");
    }

    // $all: forwards from P includes P, backwards from P excludes it.
    let all = read(&mut c, read_options(all_from(Some(position)), false, false, 10))
        .await
        .unwrap();
    assert_eq!(events(&all)[0].commit_position, position);
    let back = read(&mut c, read_options(all_from(Some(position)), false, true, 1))
        .await
        .unwrap();
    assert_eq!(events(&back)[0].commit_position, position - 1);
    let none = read(&mut c, read_options(all_from(Some(1)), false, true, 10))
        .await
        .unwrap();
    assert!(events(&none).is_empty());

    // A missing stream answers stream_not_found.
    let missing = read(&mut c, read_options(stream_from("nope", None), false, false, 10))
        .await
        .unwrap();
    assert!(matches!(missing[..], [read_resp::Content::StreamNotFound(_)]));

    // A proposed message without a content type is refused.
    let mut bad = message(None, "A", "application/json", b"{}");
    bad.metadata.remove("content-type");
    let err = append(&mut c, "s-2", E::Any(Empty {}), vec![bad]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn wrong_expected_version_fills_current_expected_and_legacy_fields() {
    use append_req::options::ExpectedStreamRevision as E;
    use append_resp::wrong_expected_version as wev;
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    append(
        &mut c,
        "w-1",
        E::Any(Empty {}),
        vec![message(None, "A", "application/json", b"{}")],
    )
    .await
    .unwrap();
    let r = append(
        &mut c,
        "w-1",
        E::Revision(5),
        vec![message(None, "A", "application/json", b"{}")],
    )
    .await
    .unwrap();
    let Some(append_resp::Result::WrongExpectedVersion(w)) = r.result else {
        panic!("{r:?}")
    };
    assert_eq!(
        w.current_revision_option,
        Some(wev::CurrentRevisionOption::CurrentRevision(0))
    );
    assert_eq!(
        w.expected_revision_option,
        Some(wev::ExpectedRevisionOption::ExpectedRevision(5))
    );
    assert_eq!(
        w.current_revision_option_20_6_0,
        Some(wev::CurrentRevisionOption2060::CurrentRevision2060(0))
    );
    assert_eq!(
        w.expected_revision_option_20_6_0,
        Some(wev::ExpectedRevisionOption2060::ExpectedRevision2060(5))
    );
    let r = append(
        &mut c,
        "w-2",
        E::StreamExists(Empty {}),
        vec![message(None, "A", "application/json", b"{}")],
    )
    .await
    .unwrap();
    let Some(append_resp::Result::WrongExpectedVersion(w)) = r.result else {
        panic!("{r:?}")
    };
    assert_eq!(
        w.current_revision_option,
        Some(wev::CurrentRevisionOption::CurrentNoStream(Empty {}))
    );
    assert_eq!(
        w.expected_revision_option,
        Some(wev::ExpectedRevisionOption::ExpectedStreamExists(Empty {}))
    );
}

#[tokio::test]
async fn batch_append_errors_carry_typed_details() {
    use prost::Message;
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    let req = |stream: &str, expected: batch_append_req::options::ExpectedStreamPosition| BatchAppendReq {
        correlation_id: string_id(uuid::Uuid::new_v4()),
        options: Some(batch_append_req::Options {
            stream_identifier: sid(stream),
            expected_stream_position: Some(expected),
            deadline_option: None,
        }),
        proposed_messages: vec![batch_append_req::ProposedMessage {
            id: string_id(uuid::Uuid::new_v4()),
            metadata: [
                ("type".to_string(), "T".to_string()),
                ("content-type".to_string(), "application/json".to_string()),
            ]
            .into_iter()
            .collect(),
            custom_metadata: Default::default(),
            data: b"{}".to_vec().into(),
        }],
        is_final: true,
    };
    use batch_append_req::options::ExpectedStreamPosition as P;
    let reqs = vec![
        req("b-1", P::NoStream(())),
        req("b-1", P::StreamPosition(7)),
        req("b-1", P::Any(())),
    ];
    let correlations: Vec<_> = reqs.iter().map(|r| r.correlation_id.clone()).collect();
    let mut answers = c.batch_append(tokio_stream(reqs)).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        got.push(a);
    }
    assert_eq!(got.len(), 3);
    for (a, id) in got.iter().zip(&correlations) {
        assert_eq!(&a.correlation_id, id);
        assert_eq!(a.stream_identifier, sid("b-1"));
    }
    assert!(matches!(got[0].result, Some(batch_append_resp::Result::Success(_))));
    let Some(batch_append_resp::Result::Error(e)) = &got[1].result else {
        panic!("{:?}", got[1])
    };
    let detail = e.details.as_ref().unwrap();
    assert_eq!(
        detail.type_url,
        "type.googleapis.com/event_store.client.WrongExpectedVersion"
    );
    let w = proto::event_store::client::WrongExpectedVersion::decode(&detail.value[..]).unwrap();
    use proto::event_store::client::wrong_expected_version as wev;
    assert_eq!(
        w.current_stream_revision_option,
        Some(wev::CurrentStreamRevisionOption::CurrentStreamRevision(0))
    );
    assert_eq!(
        w.expected_stream_position_option,
        Some(wev::ExpectedStreamPositionOption::ExpectedStreamPosition(7))
    );
    let Some(batch_append_resp::Result::Success(ok)) = &got[2].result else {
        panic!("{:?}", got[2])
    };
    assert_eq!(
        ok.current_revision_option,
        Some(batch_append_resp::success::CurrentRevisionOption::CurrentRevision(1))
    );

    // A tombstoned stream: a StreamDeleted detail.
    let tomb = TombstoneReq {
        options: Some(tombstone_req::Options {
            stream_identifier: sid("b-1"),
            expected_stream_revision: Some(tombstone_req::options::ExpectedStreamRevision::Any(Empty {})),
        }),
    };
    c.tombstone(tomb).await.unwrap();
    let mut answers = c
        .batch_append(tokio_stream(vec![req("b-1", P::Any(()))]))
        .await
        .unwrap()
        .into_inner();
    let a = answers.message().await.unwrap().unwrap();
    let Some(batch_append_resp::Result::Error(e)) = &a.result else {
        panic!("{a:?}")
    };
    assert_eq!(
        e.details.as_ref().unwrap().type_url,
        "type.googleapis.com/event_store.client.StreamDeleted"
    );
}

#[tokio::test]
async fn deletes_answer_the_codes_trailers_and_texts_clients_match() {
    use append_req::options::ExpectedStreamRevision as E;
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    let delete = |stream: &str, expected: delete_req::options::ExpectedStreamRevision| DeleteReq {
        options: Some(delete_req::Options {
            stream_identifier: sid(stream),
            expected_stream_revision: Some(expected),
        }),
    };
    // A stream that never existed: wrong expected version, actual −1.
    let err = c
        .delete(delete(
            "never",
            delete_req::options::ExpectedStreamRevision::Any(Empty {}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "Delete failed due to WrongExpectedVersion. Stream: never, Expected version: -2, Actual version: -1"
    );
    assert_eq!(err.metadata().get("exception").unwrap(), "wrong-expected-version");
    assert!(err.metadata().get("grpc-status-details-bin").is_none());
    assert!(err.details().is_empty());

    append(
        &mut c,
        "d-1",
        E::Any(Empty {}),
        vec![message(None, "A", "application/json", b"{}")],
    )
    .await
    .unwrap();
    let err = c
        .delete(delete("d-1", delete_req::options::ExpectedStreamRevision::Revision(3)))
        .await
        .unwrap_err();
    assert!(
        err.message().ends_with("Expected version: 3, Actual version: 0"),
        "{}",
        err.message()
    );
    let ok = c
        .delete(delete("d-1", delete_req::options::ExpectedStreamRevision::Revision(0)))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        ok.position_option,
        Some(delete_resp::PositionOption::Position(_))
    ));
    // Soft-deleted: not found; appending with no_stream continues the revisions.
    let gone = read(&mut c, read_options(stream_from("d-1", None), false, false, 10))
        .await
        .unwrap();
    assert!(matches!(gone[..], [read_resp::Content::StreamNotFound(_)]));
    let r = append(
        &mut c,
        "d-1",
        E::NoStream(Empty {}),
        vec![message(None, "B", "application/json", b"{}")],
    )
    .await
    .unwrap();
    assert_eq!(success_position(&r).0, 1);

    // Tombstoned: every later operation fails as deleted.
    c.tombstone(TombstoneReq {
        options: Some(tombstone_req::Options {
            stream_identifier: sid("d-1"),
            expected_stream_revision: Some(tombstone_req::options::ExpectedStreamRevision::StreamExists(Empty {})),
        }),
    })
    .await
    .unwrap();
    let err = read(&mut c, read_options(stream_from("d-1", None), false, false, 10))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "Event stream 'd-1' is deleted.");
    assert_eq!(err.metadata().get("exception").unwrap(), "stream-deleted");
    let err = append(
        &mut c,
        "d-1",
        E::Any(Empty {}),
        vec![message(None, "C", "application/json", b"{}")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.metadata().get("exception").unwrap(), "stream-deleted");
    let err = c
        .delete(delete(
            "d-1",
            delete_req::options::ExpectedStreamRevision::Any(Empty {}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.metadata().get("exception").unwrap(), "stream-deleted");
}

/// An event a forwarder sends erased (empty data, `annal::ERASED_MARKER` as
/// custom metadata) is stored erased, retried idempotently, and read back
/// with the marker, as are events shredded here; the same metadata with data
/// is an ordinary event.
#[tokio::test]
async fn an_event_sent_erased_is_stored_erased_and_read_back_so() {
    use append_req::options::ExpectedStreamRevision as E;
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    let id = WireUuid {
        value: Some(wire_uuid::Value::String(uuid::Uuid::new_v4().to_string())),
    };
    let erased = || {
        let mut m = message(Some(id.clone()), "Registered", "application/octet-stream", b"");
        m.custom_metadata = annal::ERASED_MARKER.to_vec().into();
        m
    };
    let mut marked = message(None, "Noted", "application/json", b"{}");
    marked.custom_metadata = annal::ERASED_MARKER.to_vec().into();
    append(&mut c, "users-1", E::Any(Empty {}), vec![erased(), marked])
        .await
        .unwrap();
    // The forwarder's retry of the same event is idempotent.
    let again = append(&mut c, "users-1", E::Any(Empty {}), vec![erased()])
        .await
        .unwrap();
    assert_eq!(success_position(&again).0, 0, "the retried event's revision");
    let stored = s
        .store
        .read_stream("users-1", annal::Direction::Forward, annal::StreamFrom::Start, 10)
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(
        stored[0].is_erased() && stored[0].metadata.is_empty(),
        "{:?}",
        stored[0]
    );
    assert!(!stored[1].is_erased());
    assert_eq!(&stored[1].metadata[..], annal::ERASED_MARKER);
    // Read back over the protocol, the erased event carries the marker.
    let got = read(&mut c, read_options(stream_from("users-1", None), false, false, 10))
        .await
        .unwrap();
    let events: Vec<_> = got
        .into_iter()
        .filter_map(|m| match m {
            read_resp::Content::Event(e) => e.event,
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 2);
    assert!(events[0].data.is_empty());
    assert_eq!(&events[0].custom_metadata[..], annal::ERASED_MARKER);
    assert_eq!(&events[1].data[..], b"{}");
}

#[tokio::test]
async fn subscriptions_confirm_then_catch_up_then_go_live() {
    use append_req::options::ExpectedStreamRevision as E;
    use read_req::options::*;
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    let r = append(
        &mut c,
        "sub-1",
        E::Any(Empty {}),
        vec![
            message(None, "A", "application/json", b"{}"),
            message(None, "B", "application/json", b"{}"),
        ],
    )
    .await
    .unwrap();
    let (_, last) = success_position(&r);
    // To $all, after the first event's position, filtered on the stream name.
    let mut req = read_options(all_from(Some(last - 1)), false, false, 0);
    let o = req.options.as_mut().unwrap();
    o.count_option = Some(CountOption::Subscription(SubscriptionOptions {}));
    o.filter_option = Some(FilterOption::Filter(FilterOptions {
        filter: Some(filter_options::Filter::StreamIdentifier(filter_options::Expression {
            regex: "^sub-".into(),
            prefix: vec![],
        })),
        window: Some(filter_options::Window::Max(1)),
        checkpoint_interval_multiplier: 1,
    }));
    let mut sub = c.read(req).await.unwrap().into_inner();
    let mut next = async || sub.message().await.unwrap().unwrap().content.unwrap();
    assert!(matches!(next().await, read_resp::Content::Confirmation(_)));
    let mut kinds = Vec::new();
    loop {
        match next().await {
            read_resp::Content::Event(e) => kinds.push(e.event.unwrap().metadata["type"].clone()),
            read_resp::Content::Checkpoint(cp) => assert!(cp.commit_position >= last),
            read_resp::Content::CaughtUp(cu) => {
                assert_eq!(cu.position.unwrap().commit_position, last);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(kinds, ["B"]);
    let mut w = s.streams().await;
    append(
        &mut w,
        "other",
        E::Any(Empty {}),
        vec![message(None, "X", "application/json", b"{}")],
    )
    .await
    .unwrap();
    append(
        &mut w,
        "sub-2",
        E::Any(Empty {}),
        vec![message(None, "C", "application/json", b"{}")],
    )
    .await
    .unwrap();
    loop {
        if let read_resp::Content::Event(e) = next().await {
            let e = e.event.unwrap();
            assert_eq!(e.metadata["type"], "C");
            break;
        }
    }
}

#[tokio::test]
async fn one_listener_serves_http_and_grpc_with_tokens_and_basic_credentials() {
    let s = start(|c| {
        c.no_auth = false;
        c.tokens = vec![TokenConfig {
            name: "app".into(),
            sha256: hash_token("s3cret"),
            role: Role::Write,
            stream_prefixes: vec![],
        }];
        c.advertise = Some("db.example:2113".into());
    })
    .await;
    // The HTTP API on the same port.
    let health = reqwest::get(format!("http://127.0.0.1:{}/health/live", s.port))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let mut c = s.streams().await;
    let req = || read_options(all_from(None), false, false, 1);
    assert_eq!(read(&mut c, req()).await.unwrap_err().code(), Code::Unauthenticated);
    let with = |value: &str| {
        let mut r = Request::new(req());
        r.metadata_mut().insert("authorization", value.parse().unwrap());
        // Headers the clients send: accepted and ignored.
        r.metadata_mut().insert("connection-name", "test".parse().unwrap());
        r.metadata_mut().insert("requires-leader", "true".parse().unwrap());
        r
    };
    assert!(c.read(with("Bearer s3cret")).await.is_ok());
    // Basic app:s3cret
    assert!(c.read(with("Basic YXBwOnMzY3JldA==")).await.is_ok());
    // Basic app:wrong
    assert_eq!(
        c.read(with("Basic YXBwOndyb25n")).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Gossip advertises the configured address; features list what is served.
    let mut g = proto::event_store::client::gossip::gossip_client::GossipClient::new(s.channel().await);
    let info = g.read(Empty {}).await.unwrap().into_inner();
    assert_eq!(info.members.len(), 1);
    let m = &info.members[0];
    assert!(m.is_alive);
    assert_eq!(
        m.state,
        proto::event_store::client::gossip::member_info::VNodeState::Leader as i32
    );
    let ep = m.http_end_point.as_ref().unwrap();
    assert_eq!((ep.address.as_str(), ep.port), ("db.example", 2113));
    let mut f = proto::event_store::client::server_features::server_features_client::ServerFeaturesClient::new(
        s.channel().await,
    );
    let methods = f.get_supported_methods(Empty {}).await.unwrap().into_inner();
    assert!(
        methods
            .methods
            .iter()
            .any(|m| m.method_name == "batchappend" && m.service_name == "event_store.client.streams.streams")
    );
    // Persistent subscriptions to $all: the Rust client looks for "all" on create.
    assert!(methods.methods.iter().any(|m| m.method_name == "create"
        && m.service_name == "event_store.client.persistent_subscriptions.persistentsubscriptions"
        && m.features.iter().any(|f| f == "all")));

    // Anything else is UNIMPLEMENTED, naming the method (to a caller with
    // credentials; without them, every call but discovery is refused first).
    let mut raw = tonic::client::Grpc::new(s.channel().await);
    raw.ready().await.unwrap();
    let path = "/event_store.client.operations.Operations/Shutdown";
    let call = |auth: Option<&str>| {
        let mut r = Request::new(Empty {});
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    };
    let err = raw
        .unary::<Empty, Empty, _>(call(None), path.parse().unwrap(), tonic_prost::ProstCodec::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    raw.ready().await.unwrap();
    let err = raw
        .unary::<Empty, Empty, _>(
            call(Some("Bearer s3cret")),
            path.parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains(path), "{}", err.message());
}

/// Audit (starvation): every token shared `max_subscribers`, so one token
/// limited to a few streams could open them all and every other tenant's
/// subscription was refused. With more than one token configured, one
/// token holds at most `token_share_percent` (half) of them.
#[tokio::test]
async fn one_token_cannot_take_every_subscription_place() {
    use read_req::options::*;
    let s = start(|c| {
        c.no_auth = false;
        c.max_subscribers = 4;
        c.tokens = ["t0ken", "other"]
            .iter()
            .map(|t| TokenConfig {
                name: (*t).into(),
                sha256: hash_token(t),
                role: Role::Read,
                stream_prefixes: vec!["orders-".into()],
            })
            .collect();
    })
    .await;
    let mut c = s.streams().await;
    let subscribe = |token: &str| {
        let mut req = read_options(stream_from("orders-1", None), false, false, 0);
        req.options.as_mut().unwrap().count_option = Some(CountOption::Subscription(SubscriptionOptions {}));
        let mut req = Request::new(req);
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(c.read(subscribe("t0ken")).await.unwrap().into_inner());
    }
    let refused = c.read(subscribe("t0ken")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("share"), "{refused:?}");
    // The other token still subscribes, and the first gets a place back
    // once one of its subscriptions ends.
    held.push(c.read(subscribe("other")).await.unwrap().into_inner());
    drop(held.remove(0));
    let mut again = None;
    for _ in 0..50 {
        match c.read(subscribe("t0ken")).await {
            Ok(sub) => {
                again = Some(sub);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert!(again.is_some(), "the place was not given back");
}

#[tokio::test]
async fn a_quiet_subscription_outlives_the_idle_timeout() {
    use append_req::options::ExpectedStreamRevision as E;
    use read_req::options::*;
    // HTTP/2 pings keep a connection whose only stream is quiet from looking idle.
    let s = start(|c| {
        c.request_timeout_ms = 500;
        c.keepalive_ms = 500;
        c.header_read_timeout_ms = 500;
        c.idle_timeout_ms = 1500;
    })
    .await;
    let mut c = s.streams().await;
    let mut req = read_options(stream_from("quiet", None), false, false, 0);
    req.options.as_mut().unwrap().count_option = Some(CountOption::Subscription(SubscriptionOptions {}));
    let mut sub = c.read(req).await.unwrap().into_inner();
    assert!(matches!(
        sub.message().await.unwrap().unwrap().content,
        Some(read_resp::Content::Confirmation(_))
    ));
    assert!(matches!(
        sub.message().await.unwrap().unwrap().content,
        Some(read_resp::Content::CaughtUp(_))
    ));
    tokio::time::sleep(std::time::Duration::from_millis(4000)).await;
    let mut w = s.streams().await;
    append(
        &mut w,
        "quiet",
        E::Any(Empty {}),
        vec![message(None, "Late", "application/json", b"{}")],
    )
    .await
    .unwrap();
    let m = sub.message().await.unwrap().unwrap();
    let Some(read_resp::Content::Event(e)) = m.content else {
        panic!("{m:?}")
    };
    assert_eq!(e.event.unwrap().metadata["type"], "Late");
}

#[tokio::test]
async fn tls_offers_h2_and_http_1_1_by_alpn() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let s = start(|c| c.tls = Some(annal_server::TlsConfig { cert, key })).await;
    let der = ck.cert.der().clone();
    let port = s.port;
    let negotiated = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for offer in [vec![b"h2".to_vec(), b"http/1.1".to_vec()], vec![b"http/1.1".to_vec()]] {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(der.clone()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = offer;
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut sock).unwrap();
            }
            out.push(conn.alpn_protocol().map(<[u8]>::to_vec));
            let _ = conn.writer().flush();
        }
        out
    })
    .await
    .unwrap();
    assert_eq!(negotiated, [Some(b"h2".to_vec()), Some(b"http/1.1".to_vec())]);
}

#[tokio::test]
async fn metadata_streams_and_prefix_limited_tokens() {
    use append_req::options::ExpectedStreamRevision as E;
    use read_req::options::*;
    let s = start(tenant_only).await;
    let mut c = s.streams().await;
    let auth = |mut r: Request<ReadReq>| {
        r.metadata_mut()
            .insert("authorization", "Bearer t0ken".parse().unwrap());
        r
    };
    let mut reqs = vec![AppendReq {
        content: Some(append_req::Content::Options(append_req::Options {
            stream_identifier: sid("$$orders-1"),
            expected_stream_revision: Some(E::NoStream(Empty {})),
        })),
    }];
    reqs.push(AppendReq {
        content: Some(append_req::Content::ProposedMessage(message(
            None,
            "$metadata",
            "application/json",
            br#"{"$maxCount": 3, "owner": "me"}"#,
        ))),
    });
    let mut append_req = Request::new(tokio_stream(reqs));
    append_req
        .metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    let r = c.append(append_req).await.unwrap().into_inner();
    assert_eq!(success_position(&r).0, 0);

    // $$orders-1 reads back as a $metadata event with the protocol's JSON.
    let mut stream = c
        .read(auth(Request::new(read_options(
            stream_from("$$orders-1", None),
            false,
            false,
            10,
        ))))
        .await
        .unwrap()
        .into_inner();
    let m = stream.message().await.unwrap().unwrap();
    let Some(read_resp::Content::Event(e)) = m.content else {
        panic!("{m:?}")
    };
    let e = e.event.unwrap();
    assert_eq!(e.stream_identifier, sid("$$orders-1"));
    assert_eq!(e.metadata["type"], "$metadata");
    let v: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
    assert_eq!(v, serde_json::json!({"$maxCount": 3, "owner": "me"}));

    // $all: refused without a filter, allowed through a stream prefix filter within the token's.
    let all = |prefix: Option<&str>| {
        let mut r = read_options(all_from(None), false, false, 10);
        if let Some(p) = prefix {
            r.options.as_mut().unwrap().filter_option = Some(FilterOption::Filter(FilterOptions {
                filter: Some(filter_options::Filter::StreamIdentifier(filter_options::Expression {
                    regex: String::new(),
                    prefix: vec![p.to_string()],
                })),
                window: Some(filter_options::Window::Max(10)),
                checkpoint_interval_multiplier: 1,
            }));
        }
        auth(Request::new(r))
    };
    assert_eq!(c.read(all(None)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(
        c.read(all(Some("users-"))).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(c.read(all(Some("orders-eu-"))).await.is_ok());
}

/// A read or subscription of `$all` through stream-name prefixes never
/// reads another stream's event: neither its damage (here a personal field
/// whose key was lost) nor where it lies reaches a caller limited to its own
/// streams (both ended with INTERNAL, naming the other event's file and
/// offset, when the server read every event and filtered afterwards).
#[tokio::test]
async fn reads_of_all_through_prefixes_never_meet_other_streams_damage() {
    use read_req::options::*;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path().join("data"), Options::default()).unwrap();
        let secret = annal::EventData::json("T", r#"{"name":"Bob"}"#).with_subject("bob");
        store
            .append("users-1", annal::ExpectedVersion::Any, vec![secret])
            .unwrap();
        for stream in ["orders-1", "orders-2"] {
            let e = annal::EventData::json("T", "{}");
            store.append(stream, annal::ExpectedVersion::Any, vec![e]).unwrap();
        }
        store.close().unwrap();
    }
    // The key store is lost: users-1's event can no longer be opened.
    std::fs::remove_file(dir.path().join("data").join("subjects.key")).unwrap();
    let s = start_in(dir, tenant_only).await;
    let damage = s.store.read_all(
        annal::Direction::Forward,
        annal::LogFrom::Position(0),
        10,
        &annal::Filter::all(),
    );
    assert!(damage.is_err(), "the store must see the lost key: {damage:?}");
    let mut c = s.streams().await;
    let request = |subscribe: bool| {
        let mut r = read_options(all_from(None), false, false, 100);
        let o = r.options.as_mut().unwrap();
        if subscribe {
            o.count_option = Some(CountOption::Subscription(SubscriptionOptions {}));
        }
        o.filter_option = Some(FilterOption::Filter(FilterOptions {
            filter: Some(filter_options::Filter::StreamIdentifier(filter_options::Expression {
                regex: String::new(),
                prefix: vec!["orders-1".into(), "orders-2".into()],
            })),
            window: Some(filter_options::Window::Max(100)),
            checkpoint_interval_multiplier: 1,
        }));
        let mut r = Request::new(r);
        r.metadata_mut()
            .insert("authorization", "Bearer t0ken".parse().unwrap());
        r
    };
    let streams = |contents: &[read_resp::Content]| -> Vec<String> {
        contents
            .iter()
            .filter_map(|m| match m {
                read_resp::Content::Event(e) => {
                    let id = e.event.as_ref().unwrap().stream_identifier.as_ref().unwrap();
                    Some(String::from_utf8(id.stream_name.to_vec()).unwrap())
                }
                _ => None,
            })
            .collect()
    };
    let mut got = Vec::new();
    let mut answers = c.read(request(false)).await.unwrap().into_inner();
    while let Some(m) = answers.message().await.expect("the tenant's read of its own streams") {
        got.extend(m.content);
    }
    assert_eq!(streams(&got), ["orders-1", "orders-2"]);
    let mut sub = c.read(request(true)).await.unwrap().into_inner();
    let mut seen = Vec::new();
    loop {
        let m = sub
            .message()
            .await
            .expect("the tenant's subscription to its own streams")
            .unwrap();
        match m.content.unwrap() {
            read_resp::Content::CaughtUp(_) => break,
            other => seen.push(other),
        }
    }
    assert_eq!(streams(&seen), ["orders-1", "orders-2"]);
}

#[tokio::test]
async fn a_limited_tokens_subscription_checkpoints_only_where_it_sees() {
    use append_req::options::ExpectedStreamRevision as E;
    use read_req::options::*;
    let s = start(|c| {
        c.no_auth = false;
        c.tokens = vec![
            TokenConfig {
                name: "tenant".into(),
                sha256: hash_token("t0ken"),
                role: Role::Write,
                stream_prefixes: vec!["orders-".into()],
            },
            TokenConfig {
                name: "other".into(),
                sha256: hash_token("0ther"),
                role: Role::Write,
                stream_prefixes: vec!["users-".into()],
            },
        ];
    })
    .await;
    let mut c = s.streams().await;
    let write = |token: &str, stream: &str, n: usize| {
        let mut reqs = vec![AppendReq {
            content: Some(append_req::Content::Options(append_req::Options {
                stream_identifier: sid(stream),
                expected_stream_revision: Some(E::Any(Empty {})),
            })),
        }];
        reqs.extend((0..n).map(|_| AppendReq {
            content: Some(append_req::Content::ProposedMessage(message(
                None,
                "T",
                "application/json",
                b"{}",
            ))),
        }));
        let mut r = Request::new(tokio_stream(reqs));
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    let mine = c.append(write("t0ken", "orders-1", 1)).await.unwrap().into_inner();
    let mine = success_position(&mine).1;
    c.append(write("0ther", "users-1", 5)).await.unwrap();
    // Subscribe through a prefix filter within the token's, a checkpoint after every event considered.
    let mut req = read_options(all_from(None), false, false, 0);
    let o = req.options.as_mut().unwrap();
    o.count_option = Some(CountOption::Subscription(SubscriptionOptions {}));
    o.filter_option = Some(FilterOption::Filter(FilterOptions {
        filter: Some(filter_options::Filter::StreamIdentifier(filter_options::Expression {
            regex: String::new(),
            prefix: vec!["orders-".into()],
        })),
        window: Some(filter_options::Window::Max(1)),
        checkpoint_interval_multiplier: 1,
    }));
    let mut req = Request::new(req);
    req.metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    let mut sub = c.read(req).await.unwrap().into_inner();
    let mut positions = Vec::new();
    loop {
        let m = sub.message().await.unwrap().unwrap();
        match m.content.unwrap() {
            read_resp::Content::Confirmation(_) => {}
            read_resp::Content::Event(e) => positions.push(("event", e.event.unwrap().commit_position)),
            read_resp::Content::Checkpoint(cp) => positions.push(("checkpoint", cp.commit_position)),
            read_resp::Content::CaughtUp(u) => {
                positions.push(("caught up", u.position.unwrap().commit_position));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // Every position it was told is the one of its own event (the others' five stay unseen).
    assert!(positions.iter().all(|(_, p)| *p == mine), "{positions:?} (mine {mine})");
    assert_eq!(positions[0], ("event", mine));
    // Live writes elsewhere send it nothing.
    c.append(write("0ther", "users-2", 3)).await.unwrap();
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(600), sub.message()).await;
    assert!(quiet.is_err(), "{quiet:?}");
}

#[tokio::test]
async fn reads_of_events_larger_than_the_held_bytes_arrive_whole_and_in_order() {
    use append_req::options::ExpectedStreamRevision as E;
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    // Twelve events of 700 KiB: twice what a read holds at once.
    for i in 0..12u8 {
        let data = vec![i; 700 << 10];
        append(
            &mut c,
            "big-1",
            E::Any(Empty {}),
            vec![message(None, "Big", "application/octet-stream", &data)],
        )
        .await
        .unwrap();
    }
    for req in [
        read_options(stream_from("big-1", None), false, false, 100),
        read_options(all_from(None), false, false, 100),
    ] {
        let got = tokio::time::timeout(std::time::Duration::from_secs(30), read(&mut c, req))
            .await
            .expect("the read ends")
            .unwrap();
        let evs = events(&got);
        let firsts: Vec<u8> = evs.iter().map(|e| e.data[0]).collect();
        assert_eq!(firsts, (0..12).collect::<Vec<_>>());
        assert!(evs.iter().all(|e| e.data.len() == 700 << 10));
    }
}

#[tokio::test]
async fn prefix_filtered_reads_of_all_page_through_the_stream_index() {
    use append_req::options::ExpectedStreamRevision as E;
    use read_req::options::*;
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    // 300 of ours among 3,000 others, several pages either way.
    let mut ours = Vec::new();
    for i in 0..300u32 {
        let noise: Vec<_> = (0..10)
            .map(|_| message(None, "Noise", "application/json", b"{}"))
            .collect();
        append(&mut c, &format!("noise-{}", i % 7), E::Any(Empty {}), noise)
            .await
            .unwrap();
        let r = append(
            &mut c,
            &format!("pfx-{}", i % 3),
            E::Any(Empty {}),
            vec![message(None, "Ours", "application/json", b"{}")],
        )
        .await
        .unwrap();
        ours.push(success_position(&r).1);
    }
    let filtered = |option: StreamOption, backwards: bool, count: u64| {
        let mut r = read_options(option, false, backwards, count);
        r.options.as_mut().unwrap().filter_option = Some(FilterOption::Filter(FilterOptions {
            filter: Some(filter_options::Filter::StreamIdentifier(filter_options::Expression {
                regex: String::new(),
                prefix: vec!["pfx-".into()],
            })),
            window: Some(filter_options::Window::Max(10)),
            checkpoint_interval_multiplier: 1,
        }));
        r
    };
    let started = std::time::Instant::now();
    let got = read(&mut c, filtered(all_from(None), false, 1000)).await.unwrap();
    eprintln!("a prefix read of 300 among 3,300 events took {:?}", started.elapsed());
    let positions: Vec<u64> = events(&got).iter().map(|e| e.commit_position).collect();
    assert_eq!(positions, ours);
    // A count, and a start inside the range.
    let got = read(&mut c, filtered(all_from(Some(ours[100])), false, 50))
        .await
        .unwrap();
    let positions: Vec<u64> = events(&got).iter().map(|e| e.commit_position).collect();
    assert_eq!(positions, ours[100..150]);
    // Backwards from the end.
    let end = StreamOption::All(AllOptions {
        all_option: Some(all_options::AllOption::End(Empty {})),
    });
    let got = read(&mut c, filtered(end, true, 1000)).await.unwrap();
    let mut positions: Vec<u64> = events(&got).iter().map(|e| e.commit_position).collect();
    positions.reverse();
    assert_eq!(positions, ours);
}

// ---------------------------------------------------------------------------
// Review findings: each test failed (or hung) before its fix.

#[tokio::test]
async fn an_endless_append_is_refused_early_and_holds_nothing() {
    use append_req::options::ExpectedStreamRevision as E;
    let s = start(|c| {
        c.no_auth = false;
        c.tokens = vec![TokenConfig {
            name: "reader".into(),
            sha256: hash_token("r3ad"),
            role: Role::Read,
            stream_prefixes: vec![],
        }];
    })
    .await;
    let endless = |stream: &'static str| {
        let options = AppendReq {
            content: Some(append_req::Content::Options(append_req::Options {
                stream_identifier: sid(stream),
                expected_stream_revision: Some(E::Any(Empty {})),
            })),
        };
        // Empty events, which used to cost nothing against the size limit.
        let empty = append_req::ProposedMessage {
            id: None,
            metadata: [("type", ""), ("content-type", "")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            custom_metadata: Default::default(),
            data: Default::default(),
        };
        futures_util::stream::iter(
            std::iter::once(options).chain(std::iter::repeat_with(move || AppendReq {
                content: Some(append_req::Content::ProposedMessage(empty.clone())),
            })),
        )
    };
    // A token that may not write is refused at the options, before any event is held.
    let mut c = s.streams().await;
    let mut req = Request::new(endless("s"));
    req.metadata_mut()
        .insert("authorization", "Bearer r3ad".parse().unwrap());
    let err = tokio::time::timeout(std::time::Duration::from_secs(20), c.append(req))
        .await
        .expect("refused early, not after an endless stream")
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // An open server counts the events as they arrive: past max_events_per_append, refused.
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    let err = tokio::time::timeout(std::time::Duration::from_secs(20), c.append(endless("s")))
        .await
        .expect("refused once the append holds too many events")
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("events in one append"), "{err:?}");
}

#[tokio::test]
async fn credentials_are_checked_before_a_message_is_read_and_reads_are_small() {
    use read_req::options::*;
    let s = start(|c| {
        c.no_auth = false;
        c.tokens = vec![TokenConfig {
            name: "reader".into(),
            sha256: hash_token("r3ad"),
            role: Role::Read,
            stream_prefixes: vec![],
        }];
    })
    .await;
    let mut c = s.streams().await;
    let huge = |prefixes: usize| {
        let mut r = read_options(all_from(None), false, false, 10);
        r.options.as_mut().unwrap().filter_option = Some(FilterOption::Filter(FilterOptions {
            filter: Some(filter_options::Filter::StreamIdentifier(filter_options::Expression {
                regex: String::new(),
                prefix: vec!["p".repeat(16); prefixes],
            })),
            window: Some(filter_options::Window::Count(Empty {})),
            checkpoint_interval_multiplier: 1,
        }));
        r
    };
    // No valid token: refused from the headers alone.
    let mut req = Request::new(huge(10));
    req.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(c.read(req).await.unwrap_err().code(), Code::Unauthenticated);
    // A read request is a filter, never megabytes: one over 1 MiB is refused.
    let mut req = Request::new(huge(100_000));
    req.metadata_mut()
        .insert("authorization", "Bearer r3ad".parse().unwrap());
    let err = match c.read(req).await {
        Err(e) => e,
        Ok(mut s) => s.get_mut().message().await.unwrap_err(),
    };
    assert_ne!(err.code(), Code::Ok);
    // A normal one still works.
    let mut req = Request::new(huge(3));
    req.metadata_mut()
        .insert("authorization", "Bearer r3ad".parse().unwrap());
    assert!(c.read(req).await.is_ok());
}

#[tokio::test]
async fn concurrent_metadata_writes_expecting_the_same_revision_let_one_through() {
    use append_req::options::ExpectedStreamRevision as E;
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    append(
        &mut c,
        "$$m-1",
        E::Any(Empty {}),
        vec![message(None, "$metadata", "application/json", br#"{"a":0}"#)],
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut c = s.streams().await;
        tasks.push(tokio::spawn(async move {
            let data = format!(r#"{{"a":{i}}}"#);
            let r = append(
                &mut c,
                "$$m-1",
                E::Revision(0),
                vec![message(None, "$metadata", "application/json", data.as_bytes())],
            )
            .await
            .unwrap();
            matches!(r.result, Some(append_resp::Result::Success(_)))
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one writer expecting revision 0 may win");
}

#[tokio::test]
async fn a_retry_of_the_append_that_brought_a_deleted_stream_back_is_the_same_append() {
    use append_req::options::ExpectedStreamRevision as E;
    let s = start(|_| {}).await;
    let mut c = s.streams().await;
    append(
        &mut c,
        "r-1",
        E::NoStream(Empty {}),
        vec![message(None, "A", "application/json", b"{}")],
    )
    .await
    .unwrap();
    c.delete(DeleteReq {
        options: Some(delete_req::Options {
            stream_identifier: sid("r-1"),
            expected_stream_revision: Some(delete_req::options::ExpectedStreamRevision::Any(Empty {})),
        }),
    })
    .await
    .unwrap();
    let id = uuid::Uuid::new_v4();
    let again = || vec![message(string_id(id), "B", "application/json", b"{}")];
    let first = append(&mut c, "r-1", E::NoStream(Empty {}), again()).await.unwrap();
    let retry = append(&mut c, "r-1", E::NoStream(Empty {}), again()).await.unwrap();
    assert_eq!(success_position(&first), success_position(&retry));
    assert_eq!(success_position(&first).0, 1, "revisions go on after a soft delete");
}

mod persistent {
    //! PersistentSubscriptions: names, codes, texts, and what a consumer receives.
    // The options name the deprecated stream field (left empty).
    #![allow(deprecated)]

    use super::proto::event_store::client::persistent_subscriptions as ps;
    use super::*;
    use ps::persistent_subscriptions_client::PersistentSubscriptionsClient;
    use tokio::sync::mpsc;

    type Client = PersistentSubscriptionsClient<Channel>;

    fn settings(max_subscribers: i32, strategy: &str) -> ps::create_req::Settings {
        ps::create_req::Settings {
            max_retry_count: 2,
            min_checkpoint_count: 1,
            max_checkpoint_count: 10,
            max_subscriber_count: max_subscribers,
            live_buffer_size: 100,
            read_batch_size: 10,
            history_buffer_size: 100,
            message_timeout: Some(ps::create_req::settings::MessageTimeout::MessageTimeoutMs(60_000)),
            checkpoint_after: Some(ps::create_req::settings::CheckpointAfter::CheckpointAfterMs(1_000)),
            consumer_strategy: strategy.into(),
            ..Default::default()
        }
    }

    async fn create_on_stream(c: &mut Client, stream: &str, group: &str, max: i32) -> Result<(), tonic::Status> {
        c.create(ps::CreateReq {
            options: Some(ps::create_req::Options {
                group_name: group.into(),
                settings: Some(settings(max, "RoundRobin")),
                stream_identifier: None,
                stream_option: Some(ps::create_req::options::StreamOption::Stream(
                    ps::create_req::StreamOptions {
                        stream_identifier: sid(stream),
                        revision_option: Some(ps::create_req::stream_options::RevisionOption::Start(Empty {})),
                    },
                )),
            }),
        })
        .await
        .map(|_| ())
    }

    /// Audit (starvation): groups were not capped per token. A token limited
    /// to some streams has at most `max_groups_per_token` groups over them.
    #[tokio::test]
    async fn a_limited_token_makes_at_most_max_groups_per_token_groups() {
        let s = start(|c| {
            tenant_only(c);
            c.max_groups_per_token = 1;
        })
        .await;
        let mut c = Client::new(s.channel().await);
        let create = |group: &str| {
            let mut req = Request::new(ps::CreateReq {
                options: Some(ps::create_req::Options {
                    group_name: group.into(),
                    settings: Some(settings(1, "RoundRobin")),
                    stream_identifier: None,
                    stream_option: Some(ps::create_req::options::StreamOption::Stream(
                        ps::create_req::StreamOptions {
                            stream_identifier: sid("orders-1"),
                            revision_option: Some(ps::create_req::stream_options::RevisionOption::Start(Empty {})),
                        },
                    )),
                }),
            });
            req.metadata_mut()
                .insert("authorization", "Bearer t0ken".parse().unwrap());
            req
        };
        c.create(create("a")).await.unwrap();
        let refused = c.create(create("b")).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("max_groups_per_token"), "{refused:?}");
    }

    /// Opens a consumer: the sender of its acks, and its answers.
    async fn consume(
        c: &mut Client,
        stream: &str,
        group: &str,
    ) -> Result<(mpsc::Sender<ps::ReadReq>, tonic::Streaming<ps::ReadResp>), tonic::Status> {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(ps::ReadReq {
            content: Some(ps::read_req::Content::Options(ps::read_req::Options {
                group_name: group.into(),
                buffer_size: 10,
                uuid_option: Some(ps::read_req::options::UuidOption {
                    content: Some(ps::read_req::options::uuid_option::Content::String(Empty {})),
                }),
                stream_option: Some(ps::read_req::options::StreamOption::StreamIdentifier(
                    sid(stream).unwrap(),
                )),
            })),
        })
        .await
        .unwrap();
        let reqs = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let answers = c.read(reqs).await?.into_inner();
        Ok((tx, answers))
    }

    fn event_of(r: ps::ReadResp) -> ps::read_resp::ReadEvent {
        match r.content {
            Some(ps::read_resp::Content::Event(e)) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    fn id_of(e: &ps::read_resp::ReadEvent) -> WireUuid {
        e.event.as_ref().unwrap().id.clone().unwrap()
    }

    #[tokio::test]
    async fn consumers_get_commit_positions_and_retry_counts_and_groups_answer_the_codes_clients_match() {
        use append_req::options::ExpectedStreamRevision as E;
        let s = start(|_| {}).await;
        let mut streams = s.streams().await;
        let mut c = PersistentSubscriptionsClient::new(s.channel().await);
        let r = append(
            &mut streams,
            "order-1",
            E::Any(Empty {}),
            vec![
                message(None, "A", "application/json", b"{}"),
                message(None, "B", "application/json", b"{}"),
            ],
        )
        .await
        .unwrap();
        let (_, last) = success_position(&r);

        // Missing groups are NOT_FOUND, a second create ALREADY_EXISTS.
        let err = consume(&mut c, "order-1", "g").await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        create_on_stream(&mut c, "order-1", "g", 1).await.unwrap();
        let err = create_on_stream(&mut c, "order-1", "g", 1).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
        // The same name on another source is another group.
        create_on_stream(&mut c, "order-2", "g", 0).await.unwrap();

        let (acks, mut answers) = consume(&mut c, "order-1", "g").await.unwrap();
        match answers.message().await.unwrap().unwrap().content {
            Some(ps::read_resp::Content::SubscriptionConfirmation(c)) => assert_eq!(c.subscription_id, "order-1::g"),
            other => panic!("{other:?}"),
        }
        let first = event_of(answers.message().await.unwrap().unwrap());
        let second = event_of(answers.message().await.unwrap().unwrap());
        let (e1, e2) = (first.event.clone().unwrap(), second.event.clone().unwrap());
        assert_eq!((e1.stream_revision, e2.stream_revision), (0, 1));
        assert_eq!(e2.commit_position, last);
        assert_eq!(
            second.position,
            Some(ps::read_resp::read_event::Position::CommitPosition(last))
        );
        assert_eq!(first.count, Some(ps::read_resp::read_event::Count::RetryCount(0)));

        // A full group refuses one more consumer, with the text the clients match.
        let err = consume(&mut c, "order-1", "g").await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().starts_with("Maximum subscriptions reached"), "{err:?}");

        // Ack the second, retry the first: it comes back with a retry count of 1.
        acks.send(ps::ReadReq {
            content: Some(ps::read_req::Content::Ack(ps::read_req::Ack {
                id: Default::default(),
                ids: vec![id_of(&second)],
            })),
        })
        .await
        .unwrap();
        acks.send(ps::ReadReq {
            content: Some(ps::read_req::Content::Nack(ps::read_req::Nack {
                id: Default::default(),
                ids: vec![id_of(&first)],
                action: ps::read_req::nack::Action::Retry as i32,
                reason: "later".into(),
            })),
        })
        .await
        .unwrap();
        let again = event_of(answers.message().await.unwrap().unwrap());
        assert_eq!(id_of(&again), id_of(&first));
        assert_eq!(again.count, Some(ps::read_resp::read_event::Count::RetryCount(1)));

        // GetInfo shows the settings as given and the one connection.
        let info = c
            .get_info(ps::GetInfoReq {
                options: Some(ps::get_info_req::Options {
                    group_name: "g".into(),
                    stream_option: Some(ps::get_info_req::options::StreamOption::StreamIdentifier(
                        sid("order-1").unwrap(),
                    )),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .subscription_info
            .unwrap();
        assert_eq!((info.event_source.as_str(), info.group_name.as_str()), ("order-1", "g"));
        assert_eq!((info.max_subscriber_count, info.connections.len()), (1, 1));
        assert_eq!(
            (info.named_consumer_strategy.as_str(), info.max_retry_count),
            ("RoundRobin", 2)
        );
        assert_eq!(
            (info.message_timeout_milliseconds, info.start_from.as_str()),
            (60_000, "0")
        );

        // Delete drops the consumer and the group; a second delete is NOT_FOUND.
        let delete = |stream: &str| ps::DeleteReq {
            options: Some(ps::delete_req::Options {
                group_name: "g".into(),
                stream_option: Some(ps::delete_req::options::StreamOption::StreamIdentifier(
                    sid(stream).unwrap(),
                )),
            }),
        };
        c.delete(delete("order-1")).await.unwrap();
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Ok(Some(_)) = answers.message().await {}
        })
        .await;
        assert!(end.is_ok(), "the consumer of a deleted group is dropped");
        assert_eq!(c.delete(delete("order-1")).await.unwrap_err().code(), Code::NotFound);
        let list = c
            .list(ps::ListReq {
                options: Some(ps::list_req::Options {
                    list_option: Some(ps::list_req::options::ListOption::ListAllSubscriptions(Empty {})),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let names: Vec<_> = list
            .subscriptions
            .iter()
            .map(|i| (i.event_source.as_str(), i.group_name.as_str()))
            .collect();
        assert_eq!(names, [("order-2", "g")]);
    }

    #[tokio::test]
    async fn all_groups_keep_their_filters_look_around_included() {
        let s = start(|_| {}).await;
        let mut c = PersistentSubscriptionsClient::new(s.channel().await);
        let create = |regex: &str| ps::CreateReq {
            options: Some(ps::create_req::Options {
                group_name: "all-g".into(),
                settings: Some(settings(0, "Pinned")),
                stream_identifier: None,
                stream_option: Some(ps::create_req::options::StreamOption::All(ps::create_req::AllOptions {
                    all_option: Some(ps::create_req::all_options::AllOption::Start(Empty {})),
                    filter_option: Some(ps::create_req::all_options::FilterOption::Filter(
                        ps::create_req::all_options::FilterOptions {
                            filter: Some(ps::create_req::all_options::filter_options::Filter::StreamIdentifier(
                                ps::create_req::all_options::filter_options::Expression {
                                    regex: regex.into(),
                                    prefix: Vec::new(),
                                },
                            )),
                            window: Some(ps::create_req::all_options::filter_options::Window::Max(32)),
                            checkpoint_interval_multiplier: 1,
                        },
                    )),
                })),
            }),
        };
        // Not a regular expression at all.
        let err = c.create(create("^(order")).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        c.create(create("^order-")).await.unwrap();
        let info = c
            .get_info(ps::GetInfoReq {
                options: Some(ps::get_info_req::Options {
                    group_name: "all-g".into(),
                    stream_option: Some(ps::get_info_req::options::StreamOption::All(Empty {})),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .subscription_info
            .unwrap();
        assert_eq!(
            (info.event_source.as_str(), info.start_from.as_str()),
            ("$all", "C:0/P:0")
        );
        assert_eq!(info.named_consumer_strategy, "Pinned");
        // RestartSubsystem answers, and the group is still there.
        c.restart_subsystem(Empty {}).await.unwrap();
        let listed = c
            .list(ps::ListReq {
                options: Some(ps::list_req::Options {
                    list_option: Some(ps::list_req::options::ListOption::ListForStream(
                        ps::list_req::StreamOption {
                            stream_option: Some(ps::list_req::stream_option::StreamOption::All(Empty {})),
                        },
                    )),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.subscriptions.len(), 1);
    }

    /// A server on a store of its own that a test can stop and start again.
    struct Restartable {
        dir: tempfile::TempDir,
        store: Option<Arc<Store>>,
        port: u16,
        stop: Option<oneshot::Sender<()>>,
        run: Option<tokio::task::JoinHandle<()>>,
    }

    impl Restartable {
        async fn new() -> Restartable {
            let mut r = Restartable {
                dir: tempfile::tempdir().unwrap(),
                store: None,
                port: 0,
                stop: None,
                run: None,
            };
            r.start().await;
            r
        }

        async fn start(&mut self) {
            let store = Arc::new(
                Store::open(
                    self.dir.path().join("data"),
                    Options::default().durability(Durability::Never),
                )
                .unwrap(),
            );
            let bound = annal_server::bind(store.clone(), ServerConfig::open("127.0.0.1:0".parse().unwrap()))
                .await
                .unwrap();
            self.port = bound.local_addr().port();
            let (tx, rx) = oneshot::channel::<()>();
            self.run = Some(tokio::spawn(async move {
                bound
                    .run(async move {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            }));
            self.stop = Some(tx);
            self.store = Some(store);
        }

        /// Stops the server and closes the store, then opens both again.
        async fn restart(&mut self) {
            let _ = self.stop.take().unwrap().send(());
            self.run.take().unwrap().await.unwrap();
            let store = Arc::into_inner(self.store.take().unwrap()).expect("the server let go of the store");
            drop(store);
            self.start().await;
        }

        fn store(&self) -> &Store {
            self.store.as_ref().unwrap()
        }

        async fn client(&self) -> Client {
            PersistentSubscriptionsClient::new(
                Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            )
        }
    }

    impl Drop for Restartable {
        fn drop(&mut self) {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
        }
    }

    /// The Python client's default exclusion filter on event types (system
    /// events, PersistentConfig<n>, Result), a negative lookahead.
    const DEFAULT_EXCLUDE: &str = r"^(?!(\$.+$|PersistentConfig\d+$|Result$))";

    fn append_types(store: &Store, stream: &str, types: &[&str]) {
        store
            .append(
                stream,
                annal::ExpectedVersion::Any,
                types.iter().map(|t| annal::EventData::json(*t, "{}")).collect(),
            )
            .unwrap();
    }

    /// Opens a consumer of `group` on `source` (`None`: `$all`) holding up to `buffer` events.
    async fn consume_with(
        c: &mut Client,
        source: Option<&str>,
        group: &str,
        buffer: i32,
    ) -> (mpsc::Sender<ps::ReadReq>, tonic::Streaming<ps::ReadResp>) {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(ps::ReadReq {
            content: Some(ps::read_req::Content::Options(ps::read_req::Options {
                group_name: group.into(),
                buffer_size: buffer,
                uuid_option: Some(ps::read_req::options::UuidOption {
                    content: Some(ps::read_req::options::uuid_option::Content::String(Empty {})),
                }),
                stream_option: Some(match source {
                    Some(s) => ps::read_req::options::StreamOption::StreamIdentifier(sid(s).unwrap()),
                    None => ps::read_req::options::StreamOption::All(Empty {}),
                }),
            })),
        })
        .await
        .unwrap();
        let reqs = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut answers = c.read(reqs).await.unwrap().into_inner();
        match answers.message().await.unwrap().unwrap().content {
            Some(ps::read_resp::Content::SubscriptionConfirmation(_)) => {}
            other => panic!("{other:?}"),
        }
        (tx, answers)
    }

    /// The next `n` events of a consumer, as (stream, type, id).
    async fn next_events(answers: &mut tonic::Streaming<ps::ReadResp>, n: usize) -> Vec<(String, String, WireUuid)> {
        let mut out = Vec::new();
        while out.len() < n {
            let r = tokio::time::timeout(std::time::Duration::from_secs(10), answers.message())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .unwrap();
            let e = event_of(r);
            let ev = e.event.clone().unwrap();
            let stream = String::from_utf8(ev.stream_identifier.unwrap().stream_name.to_vec()).unwrap();
            out.push((stream, ev.metadata["type"].clone(), id_of(&e)));
        }
        out
    }

    /// True if the consumer receives nothing for half a second.
    async fn quiet(answers: &mut tonic::Streaming<ps::ReadResp>) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(500), answers.message())
            .await
            .is_err()
    }

    async fn ack(acks: &mpsc::Sender<ps::ReadReq>, ids: Vec<WireUuid>) {
        acks.send(ps::ReadReq {
            content: Some(ps::read_req::Content::Ack(ps::read_req::Ack {
                id: Default::default(),
                ids,
            })),
        })
        .await
        .unwrap();
    }

    /// A group whose source the caller may not read is NOT_FOUND, as a
    /// missing one, and its answer names nothing of its stream.
    #[tokio::test]
    async fn a_group_over_a_hidden_stream_is_not_found() {
        let s = start(|c| {
            c.no_auth = false;
            c.tokens = vec![
                TokenConfig {
                    name: "writer".into(),
                    sha256: hash_token("wr1te"),
                    role: Role::Write,
                    stream_prefixes: vec![],
                },
                TokenConfig {
                    name: "tenant".into(),
                    sha256: hash_token("t3nant"),
                    role: Role::Read,
                    stream_prefixes: vec!["order-".into()],
                },
            ];
        })
        .await;
        // Under the name of group g of order-1, over another stream: the
        // server refuses to make it (a group named under a token's prefixes
        // reads only what that token may read), but a store may hold one
        // made before that rule, or by the library.
        let made = reqwest::Client::new()
            .put(format!("http://127.0.0.1:{}/groups/order-1::g", s.port))
            .bearer_auth("wr1te")
            .json(&serde_json::json!({ "stream": "secret-payroll-7" }))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 403);
        s.store
            .create_group("order-1::g", annal::GroupSettings::stream("secret-payroll-7"))
            .unwrap();
        let mut c = Client::new(s.channel().await);
        let ask = |group: &str| {
            let mut req = Request::new(ps::GetInfoReq {
                options: Some(ps::get_info_req::Options {
                    group_name: group.into(),
                    stream_option: Some(ps::get_info_req::options::StreamOption::StreamIdentifier(
                        sid("order-1").unwrap(),
                    )),
                }),
            });
            req.metadata_mut()
                .insert("authorization", "Bearer t3nant".parse().unwrap());
            req
        };
        let hidden = c.get_info(ask("g")).await.unwrap_err();
        let missing = c.get_info(ask("nope")).await.unwrap_err();
        assert_eq!(
            (hidden.code(), missing.code()),
            (Code::NotFound, Code::NotFound),
            "{hidden:?}"
        );
        assert!(!hidden.message().contains("payroll"), "{hidden:?}");
    }

    /// Audit (isolation): GetInfo and List showed every `$all` group's
    /// last known position as the head of the whole log, so a token limited
    /// to some streams learnt how many events other tenants wrote. It is now
    /// shown one past the last event of the group's streams.
    #[tokio::test]
    async fn an_all_group_does_not_show_a_limited_token_the_head() {
        let s = start(tenant_only).await;
        s.store
            .create_group(
                "orders-g",
                annal::GroupSettings {
                    source: annal::GroupSource::All(annal::Filter::all().with_stream_prefix("orders-")),
                    ..annal::GroupSettings::all()
                },
            )
            .unwrap();
        let mine = s
            .store
            .append(
                "orders-1",
                annal::ExpectedVersion::Any,
                vec![annal::EventData::json("T", "{}")],
            )
            .unwrap()
            .position;
        let evs: Vec<_> = (0..1000).map(|_| annal::EventData::json("T", "{}")).collect();
        s.store.append("users-1", annal::ExpectedVersion::Any, evs).unwrap();
        let head = s.store.head_position();
        let mut c = Client::new(s.channel().await);
        let mut req = Request::new(ps::GetInfoReq {
            options: Some(ps::get_info_req::Options {
                group_name: "orders-g".into(),
                stream_option: Some(ps::get_info_req::options::StreamOption::All(Empty {})),
            }),
        });
        req.metadata_mut()
            .insert("authorization", "Bearer t0ken".parse().unwrap());
        let info = c.get_info(req).await.unwrap().into_inner().subscription_info.unwrap();
        let shown = format!("C:{0}/P:{0}", mine + 1);
        assert_eq!(info.last_known_event_position, shown, "head {head}: {info:?}");
        let mut req = Request::new(ps::ListReq { options: None });
        req.metadata_mut()
            .insert("authorization", "Bearer t0ken".parse().unwrap());
        let listed = c.list(req).await.unwrap().into_inner().subscriptions;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].last_known_event_position, shown, "head {head}: {listed:?}");
    }

    async fn get_info(c: &mut Client, source: Option<&str>, group: &str) -> ps::SubscriptionInfo {
        c.get_info(ps::GetInfoReq {
            options: Some(ps::get_info_req::Options {
                group_name: group.into(),
                stream_option: Some(match source {
                    Some(s) => ps::get_info_req::options::StreamOption::StreamIdentifier(sid(s).unwrap()),
                    None => ps::get_info_req::options::StreamOption::All(Empty {}),
                }),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription_info
        .unwrap()
    }

    #[tokio::test]
    async fn an_all_group_with_the_clients_default_filter_and_its_settings_survive_a_restart() {
        let mut server = Restartable::new().await;
        let mut c = server.client().await;
        let given = ps::create_req::Settings {
            extra_statistics: true,
            max_retry_count: 4,
            min_checkpoint_count: 1,
            max_checkpoint_count: 9,
            max_subscriber_count: 3,
            live_buffer_size: 123,
            read_batch_size: 17,
            history_buffer_size: 45,
            message_timeout: Some(ps::create_req::settings::MessageTimeout::MessageTimeoutMs(20_000)),
            checkpoint_after: Some(ps::create_req::settings::CheckpointAfter::CheckpointAfterMs(1_500)),
            consumer_strategy: "DispatchToSingle".into(),
            ..Default::default()
        };
        c.create(ps::CreateReq {
            options: Some(ps::create_req::Options {
                group_name: "dflt".into(),
                settings: Some(given),
                stream_identifier: None,
                stream_option: Some(ps::create_req::options::StreamOption::All(ps::create_req::AllOptions {
                    all_option: Some(ps::create_req::all_options::AllOption::Start(Empty {})),
                    filter_option: Some(ps::create_req::all_options::FilterOption::Filter(
                        ps::create_req::all_options::FilterOptions {
                            filter: Some(ps::create_req::all_options::filter_options::Filter::EventType(
                                ps::create_req::all_options::filter_options::Expression {
                                    regex: DEFAULT_EXCLUDE.into(),
                                    prefix: Vec::new(),
                                },
                            )),
                            window: Some(ps::create_req::all_options::filter_options::Window::Max(32)),
                            checkpoint_interval_multiplier: 1,
                        },
                    )),
                })),
            }),
        })
        .await
        .unwrap();
        append_types(
            server.store(),
            "order-1",
            &["Placed", "Result", "PersistentConfig1", "Paid"],
        );
        let (acks, mut answers) = consume_with(&mut c, None, "dflt", 10).await;
        let got = next_events(&mut answers, 2).await;
        let types: Vec<_> = got.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(types, ["Placed", "Paid"]);
        ack(&acks, got.into_iter().map(|e| e.2).collect()).await;
        // The acknowledgements are applied before the consumer leaves.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        drop(acks);
        drop(answers);

        server.restart().await;
        let mut c = server.client().await;
        let info = get_info(&mut c, None, "dflt").await;
        assert_eq!(info.named_consumer_strategy, "DispatchToSingle");
        assert_eq!(
            (
                info.max_subscriber_count,
                info.live_buffer_size,
                info.read_batch_size,
                info.buffer_size
            ),
            (3, 123, 17, 45)
        );
        assert_eq!(
            (
                info.check_point_after_milliseconds,
                info.min_check_point_count,
                info.max_check_point_count
            ),
            (1_500, 1, 9)
        );
        assert!(info.extra_statistics);
        assert_eq!((info.max_retry_count, info.message_timeout_milliseconds), (4, 20_000));
        // The filter came back with the group: only what it lets through, after the checkpoint.
        append_types(server.store(), "order-2", &["Result", "Shipped"]);
        let (_acks, mut answers) = consume_with(&mut c, None, "dflt", 10).await;
        let got = next_events(&mut answers, 1).await;
        assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("order-2", "Shipped"));
        assert!(quiet(&mut answers).await);
    }

    async fn create_with(c: &mut Client, stream: &str, group: &str, strategy: &str) {
        c.create(ps::CreateReq {
            options: Some(ps::create_req::Options {
                group_name: group.into(),
                settings: Some(settings(0, strategy)),
                stream_identifier: None,
                stream_option: Some(ps::create_req::options::StreamOption::Stream(
                    ps::create_req::StreamOptions {
                        stream_identifier: sid(stream),
                        revision_option: Some(ps::create_req::stream_options::RevisionOption::Start(Empty {})),
                    },
                )),
            }),
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn dispatch_to_single_fills_the_first_consumer_before_the_next() {
        let server = Restartable::new().await;
        let mut c = server.client().await;
        create_with(&mut c, "job-1", "single", "DispatchToSingle").await;
        let (_a1, mut first) = consume_with(&mut c, Some("job-1"), "single", 2).await;
        // The consumers join the group in the order they connected.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (_a2, mut second) = consume_with(&mut c, Some("job-1"), "single", 10).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        append_types(server.store(), "job-1", &["J0", "J1", "J2", "J3", "J4"]);
        let got = next_events(&mut first, 2).await;
        assert_eq!(got.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), ["J0", "J1"]);
        let got = next_events(&mut second, 3).await;
        assert_eq!(got.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), ["J2", "J3", "J4"]);
        assert!(quiet(&mut first).await);

        // A first consumer with room takes everything.
        create_with(&mut c, "job-2", "single", "DispatchToSingle").await;
        let (_a3, mut roomy) = consume_with(&mut c, Some("job-2"), "single", 10).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (_a4, mut idle) = consume_with(&mut c, Some("job-2"), "single", 10).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        append_types(server.store(), "job-2", &["K0", "K1", "K2", "K3"]);
        assert_eq!(next_events(&mut roomy, 4).await.len(), 4);
        assert!(quiet(&mut idle).await);
        assert_eq!(
            get_info(&mut c, Some("job-2"), "single").await.named_consumer_strategy,
            "DispatchToSingle"
        );
    }

    #[tokio::test]
    async fn replay_parked_stops_at_the_count_given() {
        let server = Restartable::new().await;
        let mut c = server.client().await;
        create_with(&mut c, "bad-1", "g", "RoundRobin").await;
        append_types(server.store(), "bad-1", &["P0", "P1", "P2"]);
        let (acks, mut answers) = consume_with(&mut c, Some("bad-1"), "g", 10).await;
        let got = next_events(&mut answers, 3).await;
        acks.send(ps::ReadReq {
            content: Some(ps::read_req::Content::Nack(ps::read_req::Nack {
                id: Default::default(),
                ids: got.iter().map(|e| e.2.clone()).collect(),
                action: ps::read_req::nack::Action::Park as i32,
                reason: "poison".into(),
            })),
        })
        .await
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while get_info(&mut c, Some("bad-1"), "g").await.parked_message_count < 3 {
            assert!(std::time::Instant::now() < deadline, "three events parked");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let replay = |stop_at: Option<i64>| ps::ReplayParkedReq {
            options: Some(ps::replay_parked_req::Options {
                group_name: "g".into(),
                stream_option: Some(ps::replay_parked_req::options::StreamOption::StreamIdentifier(
                    sid("bad-1").unwrap(),
                )),
                stop_at_option: Some(match stop_at {
                    Some(n) => ps::replay_parked_req::options::StopAtOption::StopAt(n),
                    None => ps::replay_parked_req::options::StopAtOption::NoLimit(Empty {}),
                }),
            }),
        };
        c.replay_parked(replay(Some(2))).await.unwrap();
        let again = next_events(&mut answers, 2).await;
        assert_eq!(again.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(), ["P0", "P1"]);
        assert!(quiet(&mut answers).await);
        c.replay_parked(replay(None)).await.unwrap();
        let last = next_events(&mut answers, 1).await;
        assert_eq!(last[0].1, "P2");
    }

    #[tokio::test]
    async fn groups_made_by_annals_own_api_are_listed_and_read_over_grpc() {
        let server = Restartable::new().await;
        let mut c = server.client().await;
        // What `POST /groups` makes: a group under its own name.
        server
            .store()
            .create_group("workers", annal::GroupSettings::stream("task-1"))
            .unwrap();
        server
            .store()
            .create_group("everything", annal::GroupSettings::all())
            .unwrap();
        let list = c
            .list(ps::ListReq {
                options: Some(ps::list_req::Options {
                    list_option: Some(ps::list_req::options::ListOption::ListAllSubscriptions(Empty {})),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let mut names: Vec<_> = list
            .subscriptions
            .iter()
            .map(|i| (i.event_source.clone(), i.group_name.clone()))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("$all".to_string(), "everything".to_string()),
                ("task-1".to_string(), "workers".to_string())
            ]
        );
        let info = get_info(&mut c, Some("task-1"), "workers").await;
        assert_eq!(
            (info.named_consumer_strategy.as_str(), info.max_retry_count),
            ("RoundRobin", 5)
        );
        append_types(server.store(), "task-1", &["T"]);
        let (_acks, mut answers) = consume_with(&mut c, Some("task-1"), "workers", 10).await;
        assert_eq!(next_events(&mut answers, 1).await[0].1, "T");
        // On another source the name is not found.
        let err = c
            .get_info(ps::GetInfoReq {
                options: Some(ps::get_info_req::Options {
                    group_name: "workers".into(),
                    stream_option: Some(ps::get_info_req::options::StreamOption::StreamIdentifier(
                        sid("task-2").unwrap(),
                    )),
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }

    /// Makes group `group` on `stream` holding up to `in_flight` events unacknowledged.
    async fn create_holding(c: &mut Client, stream: &str, group: &str, in_flight: i32) {
        let mut s = settings(0, "RoundRobin");
        (s.live_buffer_size, s.history_buffer_size, s.read_batch_size) = (in_flight, in_flight, in_flight);
        c.create(ps::CreateReq {
            options: Some(ps::create_req::Options {
                group_name: group.into(),
                settings: Some(s),
                stream_identifier: None,
                stream_option: Some(ps::create_req::options::StreamOption::Stream(
                    ps::create_req::StreamOptions {
                        stream_identifier: sid(stream),
                        revision_option: Some(ps::create_req::stream_options::RevisionOption::Start(Empty {})),
                    },
                )),
            }),
        })
        .await
        .unwrap();
    }

    /// A client on a connection of its own with 64 KiB windows, so that
    /// answers it does not read soon stop the server's sender.
    async fn slow_client(s: &Server) -> Client {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", s.port))
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .unwrap();
        PersistentSubscriptionsClient::new(channel)
    }

    /// The options message of a consumer of `group` on `stream` holding up to `buffer` events.
    fn read_options_of(stream: &str, group: &str, buffer: i32) -> ps::ReadReq {
        ps::ReadReq {
            content: Some(ps::read_req::Content::Options(ps::read_req::Options {
                group_name: group.into(),
                buffer_size: buffer,
                uuid_option: Some(ps::read_req::options::UuidOption {
                    content: Some(ps::read_req::options::uuid_option::Content::String(Empty {})),
                }),
                stream_option: Some(ps::read_req::options::StreamOption::StreamIdentifier(
                    sid(stream).unwrap(),
                )),
            })),
        }
    }

    fn ack_of(n: usize) -> ps::ReadReq {
        ps::ReadReq {
            content: Some(ps::read_req::Content::Ack(ps::read_req::Ack {
                id: Default::default(),
                ids: (0..n).map(|_| string_id(uuid::Uuid::new_v4()).unwrap()).collect(),
            })),
        }
    }

    /// A consumer whose client stopped reading its events stops taking the
    /// client's acknowledgements once a few wait (HTTP/2 flow control then
    /// holds the client back): they went to an unbounded queue that the
    /// consumer, blocked sending events, never emptied, so a client that
    /// streamed acknowledgements and read nothing grew the server's memory
    /// without end. Counted in Ack messages of 2,000 ids (80 KB each) the
    /// client managed to send out of 200.
    #[tokio::test]
    async fn a_consumer_whose_client_reads_nothing_stops_taking_its_acks() {
        let s = start(|_| {}).await;
        let mut c = PersistentSubscriptionsClient::new(s.channel().await);
        let data = vec![b'x'; 4 << 10];
        let evs = (0..300)
            .map(|_| annal::EventData::binary("Big", data.clone()))
            .collect();
        s.store.append("acks-1", annal::ExpectedVersion::Any, evs).unwrap();
        create_holding(&mut c, "acks-1", "g", 1000).await;
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = taken.clone();
        let reqs = futures_util::stream::iter(std::iter::once(read_options_of("acks-1", "g", 1000)).chain(
            (0..200).map(move |_| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ack_of(2000)
            }),
        ));
        let mut slow = slow_client(&s).await;
        // The client never reads its events.
        let _answers = slow.read(reqs).await.unwrap().into_inner();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let n = taken.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            n < 100,
            "the server took {n} of 200 acknowledgements while its consumer could not send"
        );
    }

    /// An Ack or Nack naming more ids than a message may is refused with
    /// INVALID_ARGUMENT, at the documented limit.
    #[tokio::test]
    async fn an_ack_of_too_many_ids_is_refused() {
        let s = start(|_| {}).await;
        let mut c = PersistentSubscriptionsClient::new(s.channel().await);
        append_types(&s.store, "acks-2", &["T"]);
        create_holding(&mut c, "acks-2", "g", 10).await;
        let (acks, mut answers) = consume_with(&mut c, Some("acks-2"), "g", 10).await;
        next_events(&mut answers, 1).await;
        // At the limit: taken.
        acks.send(ack_of(10_000)).await.unwrap();
        assert!(quiet(&mut answers).await, "an ack at the limit is taken");
        acks.send(ack_of(10_001)).await.unwrap();
        let err = tokio::time::timeout(std::time::Duration::from_secs(10), answers.message())
            .await
            .expect("an answer within 10 s")
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("10000"), "{err:?}");
    }

    /// A consumer whose client does not read holds about 4 MiB of events on
    /// their way out, not 128 answers (with events of 300 KiB, 38 MiB): the
    /// events it has sent (GetInfo's total items) stop near 4 MiB's worth.
    #[tokio::test]
    async fn a_consumer_holds_its_unread_events_within_a_byte_bound() {
        let s = start(|_| {}).await;
        let mut c = PersistentSubscriptionsClient::new(s.channel().await);
        let data = vec![b'x'; 300 << 10];
        for _ in 0..40 {
            let e = annal::EventData::binary("Big", data.clone());
            s.store.append("held-1", annal::ExpectedVersion::Any, vec![e]).unwrap();
        }
        create_holding(&mut c, "held-1", "g", 100).await;
        let mut slow = slow_client(&s).await;
        let (tx, mut rx) = mpsc::channel(1);
        tx.send(read_options_of("held-1", "g", 100)).await.unwrap();
        let reqs = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let _answers = slow.read(reqs).await.unwrap().into_inner();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let info = get_info(&mut c, Some("held-1"), "g").await;
        let sent: i64 = info.connections.iter().map(|c| c.total_items).sum();
        assert!(
            sent > 0 && sent < 20,
            "{sent} events of 300 KiB sent to a client that reads nothing"
        );
        drop(tx);
    }
}

// ---------------------------------------------------------------------------
// Server trust: a read of $all that scans takes a `max_scans` place, and
// stops when its client goes or its deadline passes.

/// The HTTP API's test server, for its gated store.
#[allow(dead_code, unused_imports)]
#[path = "../api/common.rs"]
mod common;

/// A client of the server at `base` on a connection of its own; `slow`:
/// with small HTTP/2 windows, so that a read it does not consume soon stops
/// the server's reader (its answers channel full).
async fn streams_at(base: &str, slow: bool) -> StreamsClient<Channel> {
    let mut endpoint = Channel::from_shared(base.to_string()).unwrap();
    if slow {
        endpoint = endpoint
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535);
    }
    StreamsClient::new(endpoint.connect().await.unwrap())
}

/// 200 events of 8 KiB in `big-1`: more than a reader holds for a client
/// that does not read (64 answers, a 64 KiB window).
async fn fill_big(c: &mut StreamsClient<Channel>) {
    use append_req::options::ExpectedStreamRevision as E;
    let data = vec![b'x'; 8 << 10];
    let batch: Vec<_> = (0..200)
        .map(|_| message(None, "Big", "application/octet-stream", &data))
        .collect();
    append(c, "big-1", E::Any(Empty {}), batch).await.unwrap();
}

/// A read of `$all` from the start with a filter on event types by regular
/// expression, which no index serves (`.` admits every event).
fn scanning_read(count: u64) -> ReadReq {
    use read_req::options::*;
    let mut r = read_options(all_from(None), false, false, count);
    r.options.as_mut().unwrap().filter_option = Some(FilterOption::Filter(FilterOptions {
        filter: Some(filter_options::Filter::EventType(filter_options::Expression {
            regex: ".".into(),
            prefix: vec![],
        })),
        window: Some(filter_options::Window::Max(10)),
        checkpoint_interval_multiplier: 1,
    }));
    r
}

/// Waits (at most 10 s) until a scanning read is let in, and checks its answer.
async fn wait_for_a_scan_place(c: &mut StreamsClient<Channel>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match read(c, scanning_read(5)).await {
            Ok(got) => {
                assert_eq!(events(&got).len(), 5);
                return;
            }
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(std::time::Instant::now() < deadline, "no scan place was freed: {e:?}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// A gRPC read of `$all` whose filter no index serves takes one of the
/// `max_scans` places HTTP's scans take, while it reads from the store:
/// with the only place taken by a read held in the middle of a page (its
/// reads wait at a closed gate), another such read is refused with
/// RESOURCE_EXHAUSTED, not left to pile up. A read whose client does not
/// consume it holds no place while it waits (it held one until its client
/// went: a few slow clients kept every place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanning_reads_of_all_take_a_place_while_they_read() {
    let (s, gate) = common::TestServer::start_gated(|c| c.max_scans = 1).await;
    let mut c = streams_at(&s.base, false).await;
    fill_big(&mut c).await;
    // A client that reads nothing holds no place: others scan meanwhile.
    let mut slow = streams_at(&s.base, true).await;
    let held = slow.read(scanning_read(u64::MAX)).await.unwrap().into_inner();
    wait_for_a_scan_place(&mut c).await;
    // Reads the stream index serves, and unfiltered ones, take no place.
    let got = read(&mut c, read_options(all_from(None), false, false, 3))
        .await
        .unwrap();
    assert_eq!(events(&got).len(), 3);
    // A read held in the middle of a page holds the only place.
    gate.close();
    let mut c2 = streams_at(&s.base, false).await;
    // (The slow read may still be filling its client's window, a page at a
    // time, and hold the place at the gate itself: this read then waits for it.)
    let reading = tokio::spawn(async move {
        loop {
            match read(&mut c2, scanning_read(5)).await {
                Err(e) if e.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                other => return other,
            }
        }
    });
    gate.wait_for_waiting(1).await;
    // (Let in, it would wait at the gate too.)
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), read(&mut c, scanning_read(5)))
        .await
        .expect("refused at once")
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("retry later"), "{e:?}");
    gate.open();
    assert_eq!(events(&reading.await.unwrap().unwrap()).len(), 5);
    drop(held);
    wait_for_a_scan_place(&mut c).await;
    s.stop().await.unwrap();
}

/// A gRPC subscription to `$all` with a filter reads every event and
/// filters it in the server: far behind the head it reads the log a span at
/// a time, each in one of the `max_scans` places that scanning reads take.
/// While a scanning read held at a closed gate has the only place, the
/// subscription reads nothing (it read at once, taking no place); once the
/// place is free it delivers its event and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_subscription_to_all_reads_in_scan_places() {
    use read_req::options::*;
    let (s, gate) = common::TestServer::start_gated(|c| c.max_scans = 1).await;
    let mut c = streams_at(&s.base, false).await;
    let n = annal::CATCH_UP_SPAN + 1000;
    use append_req::options::ExpectedStreamRevision as E;
    for from in (0..n).step_by(1000) {
        let batch: Vec<_> = (from..n.min(from + 1000))
            .map(|i| {
                message(
                    None,
                    if i + 1 == n { "Wanted" } else { "Other" },
                    "application/json",
                    b"{}",
                )
            })
            .collect();
        append(&mut c, "many-1", E::Any(Empty {}), batch).await.unwrap();
    }
    gate.close();
    let mut c2 = streams_at(&s.base, false).await;
    let reading = tokio::spawn(async move { read(&mut c2, scanning_read(5)).await });
    gate.wait_for_waiting(1).await;
    let mut req = read_options(all_from(None), false, false, 0);
    let o = req.options.as_mut().unwrap();
    o.count_option = Some(CountOption::Subscription(SubscriptionOptions {}));
    o.filter_option = Some(FilterOption::Filter(FilterOptions {
        filter: Some(filter_options::Filter::EventType(filter_options::Expression {
            regex: "^Wanted$".into(),
            prefix: vec![],
        })),
        window: Some(filter_options::Window::Max(100_000)),
        checkpoint_interval_multiplier: 1,
    }));
    let mut sub = c.read(req).await.unwrap().into_inner();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(gate.waiting(), 1, "the subscription reads the log without a place");
    gate.open();
    assert_eq!(events(&reading.await.unwrap().unwrap()).len(), 5);
    let mut seen = Vec::new();
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), sub.message())
            .await
            .expect("the subscription goes on")
            .unwrap()
            .unwrap();
        match m.content.unwrap() {
            read_resp::Content::Event(e) => seen.push(e.event.unwrap().stream_revision),
            read_resp::Content::CaughtUp(_) => break,
            _ => {}
        }
    }
    assert_eq!(seen, vec![n - 1]);
    s.stop().await.unwrap();
}

/// A read past its call's deadline (`grpc-timeout`) stops: held in the
/// middle of a page (its reads wait at a closed gate), it ends with
/// DEADLINE_EXCEEDED at the deadline, never as a short read that looks
/// complete (it ran on without end), and its place is free once the gate
/// opens, not before: the store read still runs until then, and a place
/// given back at the deadline let more scans in than `max_scans`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanning_read_stops_at_its_deadline_and_says_so() {
    let (s, gate) = common::TestServer::start_gated(|c| c.max_scans = 1).await;
    let mut c = streams_at(&s.base, false).await;
    fill_big(&mut c).await;
    gate.close();
    let mut req = Request::new(scanning_read(u64::MAX));
    req.set_timeout(std::time::Duration::from_millis(300));
    let mut held = c.read(req).await.unwrap().into_inner();
    gate.wait_for_waiting(1).await;
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), held.message())
        .await
        .expect("the read ends at its deadline");
    assert_eq!(end.unwrap_err().code(), Code::DeadlineExceeded);
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), read(&mut c, scanning_read(5)))
        .await
        .expect("refused at once")
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "the store read still runs: {e:?}");
    gate.open();
    wait_for_a_scan_place(&mut c).await;
    s.stop().await.unwrap();
}

/// Scanning reads of `$all` between pages (waiting for their client, or
/// trying for a place) hold a task and buffered events each: at most 4 per
/// `max_scans` place are open at once. With one place and four reads whose
/// clients read nothing, a fifth is refused for that (though the place
/// itself is free: the four hold none), and let in once one of them goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanning_reads_open_at_once_are_bounded() {
    let (s, _gate) = common::TestServer::start_gated(|c| c.max_scans = 1).await;
    let mut c = streams_at(&s.base, false).await;
    fill_big(&mut c).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut slow = streams_at(&s.base, true).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match slow.read(scanning_read(u64::MAX)).await {
                Ok(r) => {
                    held.push((slow, r.into_inner()));
                    break;
                }
                Err(e) if e.code() == Code::ResourceExhausted => {
                    assert!(std::time::Instant::now() < deadline, "{e:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    // Refused for the open reads, not for the place (once the four wait for their clients).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match read(&mut c, scanning_read(5)).await {
            Err(e) if e.code() == Code::ResourceExhausted && e.message().contains("are open at once") => break,
            Err(e) if e.code() == Code::ResourceExhausted => {
                assert!(std::time::Instant::now() < deadline, "{e:?}");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            other => panic!("a fifth scanning read was let in: {other:?}"),
        }
    }
    held.pop();
    wait_for_a_scan_place(&mut c).await;
    drop(held);
    s.stop().await.unwrap();
}

/// A consumer of a group on `$all` whose filter no index serves (a type
/// regular expression) takes one of the `max_scans` places while it looks
/// at the log: with its look held in the middle of a read (at a closed
/// gate), an HTTP scanning count is refused at once with `too_many_scans`
/// (it got in and waited at the gate too). Once the gate opens, the
/// consumer gets its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_of_a_scanning_group_takes_a_scan_place() {
    use proto::event_store::client::persistent_subscriptions as ps;
    use ps::create_req::all_options::filter_options::{Expression, Filter as F, Window};
    use ps::persistent_subscriptions_client::PersistentSubscriptionsClient;
    let (s, gate) = common::TestServer::start_gated(|c| {
        c.max_scans = 1;
        c.request_timeout_ms = 10_000;
    })
    .await;
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || {
        let events = (0..50).map(|_| annal::EventData::json("Other", "{}")).collect();
        store.append("big-1", annal::ExpectedVersion::Any, events).unwrap();
        store
            .append(
                "order-1",
                annal::ExpectedVersion::Any,
                vec![annal::EventData::json("Wanted", "{}")],
            )
            .unwrap();
    })
    .await
    .unwrap();
    let mut c =
        PersistentSubscriptionsClient::new(Channel::from_shared(s.base.clone()).unwrap().connect().await.unwrap());
    let settings = ps::create_req::Settings {
        max_retry_count: 2,
        min_checkpoint_count: 1,
        max_checkpoint_count: 10,
        live_buffer_size: 100,
        read_batch_size: 10,
        history_buffer_size: 100,
        message_timeout: Some(ps::create_req::settings::MessageTimeout::MessageTimeoutMs(60_000)),
        checkpoint_after: Some(ps::create_req::settings::CheckpointAfter::CheckpointAfterMs(1_000)),
        consumer_strategy: "RoundRobin".into(),
        ..Default::default()
    };
    #[allow(deprecated)]
    let create = ps::CreateReq {
        options: Some(ps::create_req::Options {
            group_name: "wanted".into(),
            settings: Some(settings),
            stream_identifier: None,
            stream_option: Some(ps::create_req::options::StreamOption::All(ps::create_req::AllOptions {
                all_option: Some(ps::create_req::all_options::AllOption::Start(Empty {})),
                filter_option: Some(ps::create_req::all_options::FilterOption::Filter(
                    ps::create_req::all_options::FilterOptions {
                        filter: Some(F::EventType(Expression {
                            regex: "^Want".into(),
                            prefix: Vec::new(),
                        })),
                        window: Some(Window::Max(32)),
                        checkpoint_interval_multiplier: 1,
                    },
                )),
            })),
        }),
    };
    c.create(create).await.unwrap();
    // Every read of the log waits at the gate: the consumer's first look holds there.
    gate.close();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tx.send(ps::ReadReq {
        content: Some(ps::read_req::Content::Options(ps::read_req::Options {
            group_name: "wanted".into(),
            buffer_size: 10,
            uuid_option: Some(ps::read_req::options::UuidOption {
                content: Some(ps::read_req::options::uuid_option::Content::String(Empty {})),
            }),
            stream_option: Some(ps::read_req::options::StreamOption::All(Empty {})),
        })),
    })
    .await
    .unwrap();
    let reqs = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut answers = c.read(reqs).await.unwrap().into_inner();
    gate.wait_for_waiting(1).await;
    let count = s.client.get(s.url("/count?metadata.k=nope")).send();
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), count)
        .await
        .expect("refused at once")
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "too_many_scans", "{v}");
    gate.open();
    let mut types = Vec::new();
    while types.is_empty() {
        match answers.message().await.unwrap().unwrap().content {
            Some(ps::read_resp::Content::Event(e)) => {
                let e = e.event.unwrap();
                let t = e.metadata.get("type").cloned().unwrap_or_default();
                types.push((
                    String::from_utf8(e.stream_identifier.unwrap().stream_name.to_vec()).unwrap(),
                    t,
                ));
            }
            _ => continue,
        }
    }
    assert_eq!(types, [("order-1".to_string(), "Wanted".to_string())]);
    drop(tx);
    s.stop().await.unwrap();
}

/// One page of a gRPC read holds about 4 MiB of events, whatever the size of
/// the events of the page before: after 16 small events, a read of a stream
/// of 256 KiB events reads a page of about 16 of them, not 256 (64 MiB)
/// before its client gets the next. Counted in segment bytes read when the
/// client has the 17th event (its client reads slowly: a page or two more
/// may be read meanwhile, not the whole stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_page_is_bounded_in_bytes() {
    let (s, gate) = common::TestServer::start_gated(|_| {}).await;
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || {
        let small = (0..16).map(|_| annal::EventData::json("Small", "{}")).collect();
        store.append("mixed", annal::ExpectedVersion::Any, small).unwrap();
        let data = vec![b'x'; 256 << 10];
        for _ in 0..200 {
            let big = annal::EventData::binary("Big", data.clone());
            store.append("mixed", annal::ExpectedVersion::Any, vec![big]).unwrap();
        }
    })
    .await
    .unwrap();
    let before = gate.bytes_read();
    let mut slow = streams_at(&s.base, true).await;
    let mut answers = slow
        .read(read_options(stream_from("mixed", None), false, false, u64::MAX))
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    while got < 17 {
        let r = answers.message().await.unwrap().unwrap();
        if matches!(r.content, Some(read_resp::Content::Event(_))) {
            got += 1;
        }
    }
    let read = gate.bytes_read() - before;
    assert!(read < 20 << 20, "{} MiB read before the 17th event", read >> 20);
    drop(answers);
    s.stop().await.unwrap();
}

/// A catch-up subscription whose client does not read holds about 4 MiB of
/// events on their way out, as reads do, not 64 answers, plus one read of
/// the store of at most 1 MiB (and the event that crosses it): with events
/// of 1 MiB it stops after about six of the ten instead of reading them all.
/// Counted in segment bytes read by then (6.3 MiB measured; all of them:
/// 10.3 MiB; with the library's default reads of 4 MiB, 8.3 MiB, which this
/// test caught).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_subscription_holds_its_unread_events_within_a_byte_bound() {
    use read_req::options::*;
    let (s, gate) = common::TestServer::start_gated(|_| {}).await;
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || {
        let small = (0..250)
            .map(|_| annal::EventData::binary("Small", vec![b's'; 1024]))
            .collect();
        store.append("held-2", annal::ExpectedVersion::Any, small).unwrap();
        for _ in 0..10 {
            let big = annal::EventData::binary("Big", vec![b'x'; 1 << 20]);
            store.append("held-2", annal::ExpectedVersion::Any, vec![big]).unwrap();
        }
    })
    .await
    .unwrap();
    let before = gate.bytes_read();
    let mut slow = streams_at(&s.base, true).await;
    let mut req = read_options(stream_from("held-2", None), false, false, 0);
    req.options.as_mut().unwrap().count_option = Some(CountOption::Subscription(SubscriptionOptions {}));
    let mut answers = slow.read(req).await.unwrap().into_inner();
    let mut small = 0;
    while small < 250 {
        if let Some(read_resp::Content::Event(e)) = answers.message().await.unwrap().unwrap().content {
            assert_eq!(e.event.unwrap().metadata["type"], "Small");
            small += 1;
        }
    }
    // Its client reads no more: what the server reads now, it holds.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let read = gate.bytes_read() - before;
    assert!(read < 8 << 20, "{} KiB read for a client that read 250 KiB", read >> 10);
    drop(answers);
    s.stop().await.unwrap();
}

/// A subscription to a stream of a caller limited to stream prefixes is
/// caught up at the stream's last revision, not at a global position (a
/// client resuming there skipped its own revisions).
#[tokio::test]
async fn a_limited_stream_subscription_is_caught_up_at_a_revision() {
    use read_req::options::*;
    let s = start(tenant_only).await;
    let evs: Vec<_> = (0..100).map(|_| annal::EventData::json("T", "{}")).collect();
    s.store.append("users-1", annal::ExpectedVersion::Any, evs).unwrap();
    s.store
        .append(
            "orders-1",
            annal::ExpectedVersion::Any,
            vec![annal::EventData::json("T", "{}")],
        )
        .unwrap();
    let mut req = read_options(stream_from("orders-1", None), false, false, 0);
    req.options.as_mut().unwrap().count_option = Some(CountOption::Subscription(SubscriptionOptions {}));
    let mut req = Request::new(req);
    req.metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    let mut a = s.streams().await.read(req).await.unwrap().into_inner();
    loop {
        if let Some(read_resp::Content::CaughtUp(c)) = a.message().await.unwrap().unwrap().content {
            assert_eq!(c.stream_revision, Some(0));
            break;
        }
    }
}

/// The options of an `Append` to `stream`, any revision.
fn append_options(stream: &str) -> AppendReq {
    AppendReq {
        content: Some(append_req::Content::Options(append_req::Options {
            stream_identifier: sid(stream),
            expected_stream_revision: Some(append_req::options::ExpectedStreamRevision::Any(Empty {})),
        })),
    }
}

fn proposed(data: &[u8]) -> AppendReq {
    AppendReq {
        content: Some(append_req::Content::ProposedMessage(message(
            None,
            "T",
            "application/octet-stream",
            data,
        ))),
    }
}

/// A part of batch `id` of a BatchAppend to `stream` with one event of `data`.
fn batch_part(id: uuid::Uuid, stream: &str, data: &[u8], is_final: bool) -> BatchAppendReq {
    BatchAppendReq {
        correlation_id: string_id(id),
        options: Some(batch_append_req::Options {
            stream_identifier: sid(stream),
            expected_stream_position: Some(batch_append_req::options::ExpectedStreamPosition::Any(())),
            deadline_option: None,
        }),
        proposed_messages: vec![batch_append_req::ProposedMessage {
            id: string_id(uuid::Uuid::new_v4()),
            metadata: [
                ("type".to_string(), "T".to_string()),
                ("content-type".to_string(), "application/octet-stream".to_string()),
            ]
            .into_iter()
            .collect(),
            custom_metadata: Default::default(),
            data: data.to_vec().into(),
        }],
        is_final,
    }
}

/// A stream of requests fed by the sender returned beside it (the call
/// stays open while the sender lives).
fn open_requests<T: Send + 'static>(
    first: Vec<T>,
) -> (
    tokio::sync::mpsc::UnboundedSender<T>,
    impl futures_util::Stream<Item = T> + Send + 'static,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for m in first {
        tx.send(m).unwrap();
    }
    (tx, futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// An append whose events are still arriving when `request_timeout_ms`
/// has passed ends with DEADLINE_EXCEEDED and writes nothing (it held its
/// events for as long as its client kept the call open); a BatchAppend
/// batch whose final part has not come by then is answered so, and the
/// call ends.
#[tokio::test]
async fn appends_still_arriving_past_the_request_timeout_end() {
    let s = start(|c| c.request_timeout_ms = 1000).await;
    let mut c = s.streams().await;
    let (tx, reqs) = open_requests(vec![append_options("slow-1"), proposed(b"x")]);
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), c.append(reqs))
        .await
        .expect("ended by the server within 10 s")
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("request_timeout_ms"), "{err:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(s.store.stream_info("slow-1").is_none());
    drop(tx);

    let id = uuid::Uuid::new_v4();
    let (tx, reqs) = open_requests(vec![batch_part(id, "slow-2", b"x", false)]);
    let mut answers = c.batch_append(reqs).await.unwrap().into_inner();
    let a = tokio::time::timeout(std::time::Duration::from_secs(10), answers.message())
        .await
        .expect("answered within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(a.correlation_id, string_id(id));
    let Some(batch_append_resp::Result::Error(e)) = &a.result else {
        panic!("{a:?}")
    };
    assert_eq!(e.code, Code::DeadlineExceeded as i32, "{e:?}");
    let end = answers.message().await.unwrap_err();
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end:?}");
    assert!(s.store.stream_info("slow-2").is_none());
    drop(tx);
}

/// Appends being received share `max_pending_append_bytes`: with 1 MiB and
/// an append holding 600 KiB whose client has not finished it, another
/// append or batch of 600 KiB is refused with RESOURCE_EXHAUSTED; once the
/// first is written its bytes are free again.
#[tokio::test]
async fn appends_being_received_share_a_byte_budget() {
    let s = start(|c| c.max_pending_append_bytes = 1 << 20).await;
    let big = vec![b'x'; 600 << 10];
    let mut first_client = s.streams().await;
    let (tx, reqs) = open_requests(vec![append_options("held-a"), proposed(&big)]);
    let first = tokio::spawn(async move { first_client.append(reqs).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut c = s.streams().await;
    let err = c
        .append(tokio_stream(vec![append_options("held-b"), proposed(&big)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_pending_append_bytes"), "{err:?}");
    let id = uuid::Uuid::new_v4();
    let mut answers = c
        .batch_append(tokio_stream(vec![batch_part(id, "held-b", &big, true)]))
        .await
        .unwrap()
        .into_inner();
    let a = answers.message().await.unwrap().unwrap();
    let Some(batch_append_resp::Result::Error(e)) = &a.result else {
        panic!("{a:?}")
    };
    assert_eq!(e.code, Code::ResourceExhausted as i32, "{e:?}");
    assert!(s.store.stream_info("held-b").is_none());
    // The first ends and is written; its bytes are given back.
    drop(tx);
    first.await.unwrap().unwrap();
    assert!(s.store.stream_info("held-a").is_some());
    c.append(tokio_stream(vec![append_options("held-b"), proposed(&big)]))
        .await
        .unwrap();
    // An append larger than the whole budget never fits: it is refused as
    // such, not as "retry later".
    let huge = vec![b'x'; 1100 << 10];
    let err = c
        .append(tokio_stream(vec![append_options("held-c"), proposed(&huge)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("by itself"), "{err:?}");
}
