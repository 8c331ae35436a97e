//! The `event_store.client.streams.Streams` service: the trait tonic calls,
//! handing reads and subscriptions to [`super::read`] and appends to
//! [`super::append`], and serving Delete (soft) and Tombstone (hard) itself.
//!
//! It owns which method goes where and the two deletes. It must never spell
//! an error itself: texts and trailers are [`super::status`]'s.

use std::sync::Arc;

use annal::ExpectedVersion;
use tonic::{Request, Response, Status, Streaming};

use super::append::AppendBudget;
use super::convert::{actual_number, commit_of, expected_number, expected_of, stream_name};
use super::proto::event_store::client::streams::streams_server;
use super::proto::event_store::client::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq, ReadResp, TombstoneReq,
    TombstoneResp, delete_req, delete_resp, tombstone_req, tombstone_resp,
};
use super::{Answers, blocking, principal, status};
use crate::auth::Need;
use crate::state::AppState;

/// The Streams service.
pub(crate) struct Streams {
    state: AppState,
    /// The bytes held by appends being received (`max_pending_append_bytes`).
    appends: Arc<AppendBudget>,
}

impl Streams {
    pub(crate) fn new(state: AppState) -> Streams {
        let appends = AppendBudget::new(state.config.max_pending_append_bytes);
        Streams { state, appends }
    }

    /// Deletes `stream` softly or for good; the position of the metadata
    /// event that records it, if known.
    async fn delete(&self, stream: String, expected: ExpectedVersion, hard: bool) -> Result<Option<u64>, Status> {
        let store = self.state.store();
        blocking(&self.state, move || {
            match store.delete_stream(&stream, expected, hard) {
                Ok(()) => Ok(store
                    .stream_info(&format!("$meta-{stream}"))
                    .map(|s| commit_of(s.last_position))),
                Err(annal::Error::StreamNotFound(_)) => Err(status::delete_wrong_expected_version(
                    &stream,
                    expected_number(expected),
                    -1,
                )),
                Err(annal::Error::WrongExpectedVersion { actual, .. }) => Err(status::delete_wrong_expected_version(
                    &stream,
                    expected_number(expected),
                    actual_number(actual),
                )),
                Err(e) => Err(status::from_store(e)),
            }
        })
        .await
    }
}

#[tonic::async_trait]
impl streams_server::Streams for Streams {
    type ReadStream = Answers<ReadResp>;
    type BatchAppendStream = Answers<BatchAppendResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Self::ReadStream>, Status> {
        let p = principal(&self.state, &request)?;
        let limits = super::read::Limits::new(super::timeout(&request));
        super::read::read(self.state.clone(), p, request.into_inner(), limits)
            .await
            .map(Response::new)
    }

    async fn append(&self, request: Request<Streaming<AppendReq>>) -> Result<Response<AppendResp>, Status> {
        let p = principal(&self.state, &request)?;
        super::append::append(self.state.clone(), p, self.appends.clone(), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        let p = principal(&self.state, &request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("DeleteReq without options"))?;
        let stream = stream_name(options.stream_identifier.as_ref())?;
        p.authorize(Need::Write(&stream)).map_err(status::denied)?;
        let expected = expected_of!(delete_req, options.expected_stream_revision);
        let position = self.delete(stream, expected, false).await?;
        Ok(Response::new(DeleteResp {
            position_option: Some(match position {
                Some(c) => delete_resp::PositionOption::Position(delete_resp::Position {
                    commit_position: c,
                    prepare_position: c,
                }),
                None => delete_resp::PositionOption::NoPosition(Default::default()),
            }),
        }))
    }

    async fn tombstone(&self, request: Request<TombstoneReq>) -> Result<Response<TombstoneResp>, Status> {
        let p = principal(&self.state, &request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("TombstoneReq without options"))?;
        let stream = stream_name(options.stream_identifier.as_ref())?;
        p.authorize(Need::Write(&stream)).map_err(status::denied)?;
        let expected = expected_of!(tombstone_req, options.expected_stream_revision);
        let position = self.delete(stream, expected, true).await?;
        Ok(Response::new(TombstoneResp {
            position_option: Some(match position {
                Some(c) => tombstone_resp::PositionOption::Position(tombstone_resp::Position {
                    commit_position: c,
                    prepare_position: c,
                }),
                None => tombstone_resp::PositionOption::NoPosition(Default::default()),
            }),
        }))
    }

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        let p = principal(&self.state, &request)?;
        Ok(Response::new(super::append::batch_append(
            self.state.clone(),
            p,
            self.appends.clone(),
            request.into_inner(),
        )))
    }
}
