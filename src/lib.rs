//! annal: an embeddable, single-node event store.
//!
//! Events are appended to streams in a segmented, checksummed, append-only log
//! and read back by stream, by global position, by filter or by id. Appends are
//! atomic, checked against an expected version or a consistency-boundary
//! condition, idempotent by event id, and durable before they are acknowledged
//! (by default). See `format.md` for every byte on disk.
//!
//! ```no_run
//! use annal::{Store, Options, EventData, ExpectedVersion, Direction, StreamFrom};
//! let store = Store::open("./annal-data", Options::default())?;
//! store.append("order-1", ExpectedVersion::NoStream,
//!     vec![EventData::json("OrderPlaced", r#"{"total":10}"#)])?;
//! let events = store.read_stream("order-1", Direction::Forward, StreamFrom::Start, 100)?;
//! assert_eq!(events[0].event_type, "OrderPlaced");
//! # Ok::<(), annal::Error>(())
//! ```

pub mod clock;
pub mod error;
pub mod event;
mod json_fields;
pub mod layout;
pub mod options;
pub mod query;
pub mod storage;
mod store;
mod stream_metadata;
pub mod topic;

// Modules internal unless the `fuzzing` feature makes them public (for the
// fuzz crate and this crate's integration tests). Written out, not made by
// a macro, so that rustfmt reaches their files.
/// Features built on the store API.
#[cfg(feature = "fuzzing")]
pub mod features;
#[cfg(not(feature = "fuzzing"))]
mod features;
/// The on-disk format's codecs.
#[cfg(feature = "fuzzing")]
pub mod format;
#[cfg(not(feature = "fuzzing"))]
mod format;
/// The log: segments, recovery, the write and read paths.
#[cfg(feature = "fuzzing")]
pub mod log;
#[cfg(not(feature = "fuzzing"))]
mod log;
/// Compression, retention, verify, repair, backup.
#[cfg(feature = "fuzzing")]
pub mod maintenance;
#[cfg(not(feature = "fuzzing"))]
mod maintenance;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use event::{
    AppendResult, ContentType, ERASED_MARKER, EventData, ExpectedVersion, Personal, RecordedEvent, StreamInfo,
};
pub use features::forward::{
    Batch, ForwardError, ForwardGap, ForwardSettings, ForwardStart, ForwardState, ForwardStatus, ForwardTarget,
    Forwarder, ForwarderHandle, ReleasedForwarder, RetentionMode, SavedForwarder, StatusHandle, Step, TargetError,
    acknowledge_gap, check_forwarder_name, forget_forwarder, forward_checkpoint_stream, forward_parked_stream,
    register_forwarder, release_forwarder, saved_checkpoint, saved_forwarders,
};
pub use features::metadata::Snapshot;
pub use features::persistent::{
    Consumer, Delivery, Group, GroupInfo, GroupSettings, GroupSource, MAX_PARK_REASON, NackAction, ParkedRecord,
    Strategy, parked_stream,
};
pub use features::subscription::{
    CATCH_UP_SPAN, Message, ReplayOptions, ReplayReport, ScanGate, SubscribeFrom, Subscription, SubscriptionOptions,
    SubscriptionReceiver,
};
pub use format::dropped::DroppedRange;
pub use json_fields::{is_strict_json, may_need_strict_check};
pub use log::damage::{Damage, TornTail, torn_tails};
pub use log::notify::EventListener;
pub use maintenance::backup::{BackupReport, StoreStats, restore, restore_with};
pub use maintenance::compression::CompressReport;
pub use maintenance::repair::{RepairReport, repair, repair_with};
pub use maintenance::retention::ScavengeReport;
pub use maintenance::verify::{Problem, VerifyReport};
pub use options::{CompressionOptions, Durability, Options, RetentionPolicy, RetentionRule, WhenFull};
pub use query::{
    AppendCondition, Cancel, Direction, Filter, GroupBy, LogFrom, Pattern, Query, QueryItem, StreamFrom, TopicPattern,
};
pub use storage::{FsStorage, SimStorage, Storage};
pub use store::{Append, STORE_CREATED_ID, STORE_CREATED_TYPE, SYSTEM_STREAM, Store};
pub use stream_metadata::StreamMetadata;

/// Compiles the README's example as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
