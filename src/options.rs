//! Options of a store: durability, segment size, the limits on input, and the
//! settings of retention and compression.
//!
//! This module owns the configuration types, their defaults and their checks
//! (every check of an option is here, and fails with [`Error::InvalidOption`]
//! naming the option); it must never do I/O.

use std::sync::Arc;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// An [`Error::InvalidOption`] for `field`.
fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        field,
        reason: reason.into(),
    }
}

/// When the writer makes appended bytes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fdatasync before acknowledging each group of appends (the default):
    /// an acknowledged append survives a power cut.
    Always,
    /// fdatasync at most this often; an append is acknowledged once written to
    /// the OS. A power cut can lose the appends of the last interval, never
    /// more, and never leaves a half-visible append.
    Interval(Duration),
    /// Never sync except when sealing a segment and closing. For tests and throwaway data.
    Never,
}

/// Options for [`crate::Store::open`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// When appends become durable. Default: [`Durability::Always`].
    pub durability: Durability,
    /// Size at which a segment is sealed and a new one started. Default 64 MiB.
    pub segment_size: u64,
    /// Largest data plus metadata of one event. Default 4 MiB.
    pub max_event_size: usize,
    /// Most events in one append. Default 10,000.
    pub max_events_per_append: usize,
    /// Largest encoded size of one append. Default 32 MiB.
    pub max_append_size: usize,
    /// Create the data directory if it does not exist. Default true.
    pub create_if_missing: bool,
    /// What scavenging removes, and how often it runs. Default: keep everything.
    pub retention: RetentionPolicy,
    /// Compress sealed segments in the background with these settings.
    /// Default: on, with [`CompressionOptions::default`] (zstd level 3, 32 KiB
    /// blocks); `None` keeps them as written.
    pub compression: Option<CompressionOptions>,
    /// Most bytes of decompressed blocks of compressed segments kept in
    /// memory for later reads, shared by every reader of the store (0: none;
    /// each read then decompresses the blocks it needs). Default 64 MiB.
    /// Besides, up to 4 buffers of evicted blocks that no reader holds are
    /// kept for the next decompressions (each at most an eighth of this).
    pub block_cache_bytes: usize,
    /// Appends fail with `Error::DiskFull` once fewer than this many bytes would
    /// stay free on the disk, so that nothing is corrupted by a full disk and
    /// scavenging still has room to free space. Default 32 MiB.
    pub disk_reserve: u64,
    /// Where the store reads the time: event timestamps, ages for stream
    /// metadata and retention, acknowledgement timeouts and background
    /// schedules. Default: the system's clocks; tests use a [`crate::ManualClock`].
    pub clock: Arc<dyn Clock>,
    /// Top-level keys of the events' JSON metadata whose string values are
    /// indexed (as tags are), so that [`crate::Filter::with_metadata`] on
    /// them is an index lookup; a filter on any other key reads the
    /// candidate events. Values that are not JSON strings are not indexed
    /// (such a filter still answers correctly, by reading the events the
    /// other conditions leave). Opening a store with another list rebuilds
    /// each index file made with a different one. Default: none.
    pub indexed_metadata: Vec<String>,
    /// Most bytes of event data and metadata one persistent subscription
    /// group holds in memory, delivered and not yet acknowledged or read
    /// ahead for delivery: a group that holds this many reads no more of
    /// its source (whatever its `max_in_flight`) until acknowledgements,
    /// parks or skips free some; a read may pass it by one chunk of the
    /// source (at most 64 events), and a group holding nothing always takes
    /// one. It bounds what a consumer that never acknowledges costs: without
    /// it a group of 64 KiB events with `max_in_flight` 100,000 held 6.4 GB.
    /// Default 64 MiB.
    pub max_group_held_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Always,
            segment_size: 64 << 20,
            max_event_size: 4 << 20,
            max_events_per_append: 10_000,
            max_append_size: 32 << 20,
            create_if_missing: true,
            retention: Default::default(),
            compression: Some(CompressionOptions::default()),
            block_cache_bytes: 64 << 20,
            disk_reserve: 32 << 20,
            clock: Arc::new(SystemClock),
            indexed_metadata: Vec::new(),
            max_group_held_bytes: 64 << 20,
        }
    }
}

impl Options {
    /// Sets the durability.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Sets the segment size.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Sets the retention policy.
    pub fn retention(mut self, policy: RetentionPolicy) -> Self {
        self.retention = policy;
        self
    }

    /// Sets whether opening creates a missing data directory.
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Sets the memory for decompressed blocks (see [`Options::block_cache_bytes`]).
    pub fn block_cache_bytes(mut self, bytes: usize) -> Self {
        self.block_cache_bytes = bytes;
        self
    }

    /// Sets the bytes of events a group holds (see [`Options::max_group_held_bytes`]).
    pub fn max_group_held_bytes(mut self, bytes: usize) -> Self {
        self.max_group_held_bytes = bytes;
        self
    }

    /// Sets the free disk space appends leave (see [`Options::disk_reserve`]).
    pub fn disk_reserve(mut self, bytes: u64) -> Self {
        self.disk_reserve = bytes;
        self
    }

    /// Sets the indexed metadata fields (see [`Options::indexed_metadata`]).
    pub fn indexed_metadata<S: Into<String>>(mut self, fields: impl IntoIterator<Item = S>) -> Self {
        self.indexed_metadata = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the clock the store reads the time from.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Compresses sealed segments in the background with these settings
    /// (compression is on by default, with [`CompressionOptions::default`]).
    pub fn compression(mut self, options: CompressionOptions) -> Self {
        self.compression = Some(options);
        self
    }

    /// Turns background compression off: sealed segments stay as written
    /// (until [`crate::Store::compress`] is called).
    pub fn no_compression(mut self) -> Self {
        self.compression = None;
        self
    }

    /// Checks the options for consistency (also done by `Store::open`); an
    /// option out of range is an [`Error::InvalidOption`] naming it.
    pub fn validate(&self) -> Result<()> {
        self.retention.validate()?;
        if let Some(c) = self.compression {
            c.validate()?;
        }
        if !SEGMENT_SIZES.contains(&self.segment_size) {
            return Err(invalid(
                "segment_size",
                format!("{} bytes; must be between 4 KiB and 1 TiB", self.segment_size),
            ));
        }
        let max_event_size = crate::format::record::MAX_BODY / 2;
        if self.max_event_size == 0 || self.max_event_size > max_event_size {
            return Err(invalid(
                "max_event_size",
                format!("{} bytes; must be between 1 and {max_event_size}", self.max_event_size),
            ));
        }
        if self.max_events_per_append == 0 {
            return Err(invalid("max_events_per_append", "0; must be at least 1"));
        }
        if self.max_append_size == 0 {
            return Err(invalid("max_append_size", "0 bytes; must be at least 1"));
        }
        if let Some(bad) = self.indexed_metadata.iter().find(|f| f.is_empty() || f.contains('\0')) {
            return Err(invalid(
                "indexed_metadata",
                format!("field {bad:?}; a field name must be non-empty and hold no NUL character"),
            ));
        }
        if let Durability::Interval(d) = self.durability
            && d.is_zero()
        {
            return Err(invalid("durability", "the sync interval must be positive"));
        }
        Ok(())
    }
}

/// Segment sizes [`Options::validate`] accepts: 4 KiB ..= 1 TiB.
pub use crate::format::compressed::{DICTIONARY_SIZES, LEVELS, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};

const SEGMENT_SIZES: std::ops::RangeInclusive<u64> = 4096..=(1 << 40);

/// Settings of segment compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionOptions {
    /// zstd level (1 fastest .. 19 smallest; up to 22 accepted).
    pub level: i32,
    /// Uncompressed bytes of frames per block (a larger frame gets a block of its
    /// own); [`MIN_BLOCK_SIZE`]..=[`MAX_BLOCK_SIZE`]. Default 32 KiB: a read of
    /// one event decompresses its whole block, so smaller blocks make reads
    /// that miss the block cache cheaper, and larger ones compress better
    /// (against 64 KiB: 32 KiB about 2% more on disk for a stream read about
    /// 40% faster, 16 KiB about 6% more for about 50%; see BENCHMARKS.md,
    /// 2026-12-03).
    pub block_size: usize,
    /// Train a zstd dictionary from the store's own events (once, from the
    /// first sealed segments) and compress with it: better ratios on small JSON events.
    pub dictionary: bool,
    /// Size of that dictionary in bytes (1 KiB ..= 8 MiB, the most it is trained from).
    pub dictionary_size: usize,
    /// Only sealed segments are compressed, and a segment is sealed when it
    /// is full ([`Options::segment_size`]): a store smaller than one segment
    /// would never be. So the compressor also seals the active segment once it
    /// holds at least this many bytes and either no event came for
    /// [`CompressionOptions::seal_idle_ms`] or its oldest event is
    /// [`CompressionOptions::seal_after_ms`] old. Default 4 MiB (a segment
    /// smaller than that is not worth its own files); sealing costs an append
    /// that comes meanwhile the wait for the seal (the segment's index file).
    pub seal_min_bytes: u64,
    /// Seal the active segment (of at least `seal_min_bytes`) after this many
    /// milliseconds without an append; 0: never for idleness. Default 60,000.
    pub seal_idle_ms: u64,
    /// Seal the active segment (of at least `seal_min_bytes`) once its oldest
    /// event is this many milliseconds old, however often events come; 0:
    /// never for age. Default 21,600,000 (6 hours).
    pub seal_after_ms: u64,
}

impl CompressionOptions {
    /// Checks the settings against what the compressor and the reader accept;
    /// a setting out of range is an [`Error::InvalidOption`] naming it (`compression.level`, ...).
    pub fn validate(&self) -> Result<()> {
        if !LEVELS.contains(&self.level) {
            return Err(invalid(
                "compression.level",
                format!("{}; must be {}..={}", self.level, LEVELS.start(), LEVELS.end()),
            ));
        }
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size) {
            return Err(invalid(
                "compression.block_size",
                format!(
                    "{} bytes; must be between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}",
                    self.block_size
                ),
            ));
        }
        if !DICTIONARY_SIZES.contains(&self.dictionary_size) {
            return Err(invalid(
                "compression.dictionary_size",
                format!(
                    "{} bytes; must be between {} and {}",
                    self.dictionary_size,
                    DICTIONARY_SIZES.start(),
                    DICTIONARY_SIZES.end()
                ),
            ));
        }
        Ok(())
    }
}

impl Default for CompressionOptions {
    fn default() -> Self {
        CompressionOptions {
            level: 3,
            block_size: 32 << 10,
            dictionary: false,
            dictionary_size: 32 << 10,
            seal_min_bytes: 4 << 20,
            seal_idle_ms: 60_000,
            seal_after_ms: 6 * 3_600_000,
        }
    }
}

/// What to keep, store-wide. The default keeps everything forever.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Remove events older than this many milliseconds (unless a rule keeps them).
    pub max_age_ms: Option<u64>,
    /// Keep the sealed data under this many bytes, expiring the oldest segments first.
    pub max_bytes: Option<u64>,
    /// Keep at most about this many events, expiring the oldest segments
    /// first. Counted: the events the store holds (positions already removed
    /// or lost are not), except those of system streams (`$`-prefixed). The
    /// newest segment past the budget goes whole, so a little fewer may stay.
    pub max_events: Option<u64>,
    /// Rules by event type or tag; the first matching rule decides.
    pub rules: Vec<RetentionRule>,
    /// Run scavenging in the background this often (none: only on demand).
    pub interval_ms: Option<u64>,
    /// What happens when `max_bytes` cannot be held without dropping events
    /// a forwarder that waits has not delivered.
    pub when_full: WhenFull,
}

/// The disk-budget policy: what the store does when undelivered events alone
/// take more than `retention.max_bytes` (looked at when a segment is sealed,
/// by scavenging, at open, and again as forwarders deliver).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WhenFull {
    /// Keep them and go over the budget (stats, `/metrics`, `/health` and
    /// the server's log say so).
    #[default]
    #[serde(rename = "keep")]
    Keep,
    /// Refuse appends ([`crate::Error::BudgetFull`]) until the forwarders
    /// deliver enough for the budget to hold; forwarders' own records go on.
    /// Looked at each time a segment is sealed, so the sealed segments stay
    /// within about one segment of the budget.
    #[serde(rename = "stop-appends")]
    StopAppends,
    /// Scavenging removes the oldest segments past the budget even if
    /// forwarders have not delivered them, and records what it removed in
    /// the store's drop record (`dropped.rec`, [`crate::Store::dropped`]);
    /// a forwarder that meets such a gap reports it with the record and
    /// goes on after it.
    #[serde(rename = "drop-oldest")]
    DropOldest,
}

impl RetentionPolicy {
    /// Checks the policy's values; a value out of range is an
    /// [`Error::InvalidOption`] naming it (`retention.rules`, `retention.interval_ms`).
    pub(crate) fn validate(&self) -> Result<()> {
        for (i, r) in self.rules.iter().enumerate() {
            if r.event_type.is_none() == r.tag.is_none() {
                let names = if r.tag.is_none() { "neither" } else { "both" };
                return Err(invalid(
                    "retention.rules",
                    format!("rule {i} names {names} of event_type and tag; a rule names exactly one of them"),
                ));
            }
        }
        if self.interval_ms == Some(0) {
            return Err(invalid("retention.interval_ms", "0; must be at least 1"));
        }
        Ok(())
    }
}

/// A retention rule: events whose type or tag matches are kept forever or for a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Event type pattern (`*` at the end matches any suffix), if the rule is by type.
    #[serde(default)]
    pub event_type: Option<String>,
    /// Tag pattern (`*` at the end matches any suffix), if the rule is by tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Keep matching events this many milliseconds; `None` keeps them forever,
    /// even when the oldest segments expire for size or count.
    #[serde(default)]
    pub keep_ms: Option<u64>,
}

impl RetentionRule {
    /// Keep events of this type (pattern) forever.
    pub fn keep_type_forever(pattern: &str) -> Self {
        RetentionRule {
            event_type: Some(pattern.to_string()),
            tag: None,
            keep_ms: None,
        }
    }

    /// Keep events with this tag (pattern) forever.
    pub fn keep_tag_forever(pattern: &str) -> Self {
        RetentionRule {
            event_type: None,
            tag: Some(pattern.to_string()),
            keep_ms: None,
        }
    }

    /// Keep events of this type (pattern) for a while.
    pub fn expire_type_after(pattern: &str, after: Duration) -> Self {
        RetentionRule {
            event_type: Some(pattern.to_string()),
            tag: None,
            keep_ms: Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field of the `InvalidOption` that `o` fails with.
    fn refused(o: Options) -> &'static str {
        match o.validate() {
            Err(Error::InvalidOption { field, reason }) => {
                assert!(!reason.is_empty());
                field
            }
            other => panic!("expected InvalidOption, got {other:?}"),
        }
    }

    fn with_compression(c: CompressionOptions) -> Options {
        Options::default().compression(c)
    }

    fn with_retention(r: RetentionPolicy) -> Options {
        Options::default().retention(r)
    }

    #[test]
    fn defaults_and_bounds_are_valid() {
        Options::default().validate().unwrap();
        for segment_size in [4096, 1 << 40] {
            Options::default().segment_size(segment_size).validate().unwrap();
        }
        let o = Options {
            max_event_size: crate::format::record::MAX_BODY / 2,
            max_events_per_append: 1,
            max_append_size: 1,
            durability: Durability::Interval(Duration::from_nanos(1)),
            ..Options::default()
        };
        o.validate().unwrap();
        let d = CompressionOptions::default();
        for c in [
            d,
            CompressionOptions {
                level: *LEVELS.start(),
                block_size: MIN_BLOCK_SIZE,
                dictionary_size: *DICTIONARY_SIZES.start(),
                ..d
            },
            CompressionOptions {
                level: *LEVELS.end(),
                block_size: MAX_BLOCK_SIZE,
                dictionary_size: *DICTIONARY_SIZES.end(),
                dictionary: true,
                seal_min_bytes: u64::MAX,
                seal_idle_ms: 0,
                seal_after_ms: u64::MAX,
            },
        ] {
            with_compression(c).validate().unwrap();
        }
        with_retention(RetentionPolicy {
            rules: vec![
                RetentionRule::keep_type_forever("A*"),
                RetentionRule::keep_tag_forever("t"),
            ],
            interval_ms: Some(1),
            ..RetentionPolicy::default()
        })
        .validate()
        .unwrap();
    }

    #[test]
    fn each_store_option_out_of_range_is_named() {
        for segment_size in [0, 4095, (1 << 40) + 1, u64::MAX] {
            assert_eq!(refused(Options::default().segment_size(segment_size)), "segment_size");
        }
        for max_event_size in [0, crate::format::record::MAX_BODY / 2 + 1, usize::MAX] {
            let o = Options {
                max_event_size,
                ..Options::default()
            };
            assert_eq!(refused(o), "max_event_size");
        }
        let o = Options {
            max_events_per_append: 0,
            ..Options::default()
        };
        assert_eq!(refused(o), "max_events_per_append");
        let o = Options {
            max_append_size: 0,
            ..Options::default()
        };
        assert_eq!(refused(o), "max_append_size");
        let o = Options::default().durability(Durability::Interval(Duration::ZERO));
        assert_eq!(refused(o), "durability");
    }

    #[test]
    fn each_compression_setting_out_of_range_is_named() {
        let d = CompressionOptions::default();
        for level in [i32::MIN, -1, 0, 23, i32::MAX] {
            assert_eq!(
                refused(with_compression(CompressionOptions { level, ..d })),
                "compression.level"
            );
        }
        for block_size in [0, MIN_BLOCK_SIZE - 1, MAX_BLOCK_SIZE + 1, usize::MAX] {
            let c = CompressionOptions { block_size, ..d };
            assert_eq!(refused(with_compression(c)), "compression.block_size");
        }
        for dictionary_size in [0, 1023, (8 << 20) + 1, usize::MAX] {
            let c = CompressionOptions { dictionary_size, ..d };
            assert_eq!(refused(with_compression(c)), "compression.dictionary_size");
        }
        // Called on its own, the check names the same field.
        assert!(matches!(
            CompressionOptions { level: 0, ..d }.validate(),
            Err(Error::InvalidOption {
                field: "compression.level",
                ..
            })
        ));
    }

    #[test]
    fn each_retention_setting_out_of_range_is_named() {
        let neither = RetentionRule {
            event_type: None,
            tag: None,
            keep_ms: Some(1),
        };
        let both = RetentionRule {
            event_type: Some("A".into()),
            tag: Some("t".into()),
            keep_ms: None,
        };
        for bad in [neither, both] {
            let r = RetentionPolicy {
                rules: vec![RetentionRule::keep_type_forever("ok"), bad],
                ..RetentionPolicy::default()
            };
            assert_eq!(refused(with_retention(r)), "retention.rules");
        }
        let r = RetentionPolicy {
            interval_ms: Some(0),
            ..RetentionPolicy::default()
        };
        assert_eq!(refused(with_retention(r)), "retention.interval_ms");
    }

    #[test]
    fn the_message_names_the_field_and_the_accepted_range() {
        let e = Options::default().segment_size(100).validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid option segment_size: 100 bytes; must be between 4 KiB and 1 TiB"
        );
        let e = with_compression(CompressionOptions {
            level: 30,
            ..CompressionOptions::default()
        })
        .validate()
        .unwrap_err();
        assert_eq!(e.to_string(), "invalid option compression.level: 30; must be 1..=22");
    }
}
