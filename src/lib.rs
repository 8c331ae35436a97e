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
pub mod features;
pub mod format;
pub mod log;
pub mod maintenance;
pub mod options;
pub mod query;
pub mod storage;
mod store;
pub mod stream_metadata;

pub use features::{metadata, persistent, subscription};
pub use format::{checkpoint, index, record, segment};
pub use log::recovery;
pub use maintenance::{backup, repair, retention, verify};

pub use backup::{BackupReport, StoreStats, restore, restore_with};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use event::{AppendResult, ContentType, EventData, ExpectedVersion, RecordedEvent, StreamInfo};
pub use log::damage::{Damage, TornTail};
pub use maintenance::compression::CompressReport;
pub use metadata::Snapshot;
pub use options::{CompressionOptions, Durability, Options};
pub use persistent::{
    Consumer, Delivery, Group, GroupInfo, GroupSettings, GroupSource, NackAction, ParkedRecord, Strategy,
};
pub use query::{AppendCondition, Filter, Pattern, Query, QueryItem};
pub use query::{Direction, LogFrom, StreamFrom};
pub use repair::{RepairReport, repair, repair_with};
pub use retention::{RetentionPolicy, RetentionRule, ScavengeReport};
pub use storage::{FsStorage, SimStorage, Storage};
pub use store::Store;
pub use stream_metadata::StreamMetadata;
pub use subscription::{
    Message, ReplayOptions, ReplayReport, SubscribeFrom, Subscription, SubscriptionOptions, SubscriptionReceiver,
};
pub use verify::{Problem, VerifyReport};

/// Compiles the README's example as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
