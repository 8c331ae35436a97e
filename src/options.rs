//! Options of a store: durability, segment size and the limits on input.
//!
//! This module owns the defaults and their checks; it must never do I/O.

use std::time::Duration;

use crate::error::{Error, Result};

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
    pub retention: crate::maintenance::retention::RetentionPolicy,
    /// Compress sealed segments in the background with these settings. Default: off.
    pub compression: Option<crate::maintenance::compression::CompressionOptions>,
    /// Appends fail with `Error::DiskFull` once fewer than this many bytes would
    /// stay free on the disk, so that nothing is corrupted by a full disk and
    /// scavenging still has room to free space. Default 32 MiB.
    pub disk_reserve: u64,
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
            compression: None,
            disk_reserve: 32 << 20,
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
    pub fn retention(mut self, policy: crate::maintenance::retention::RetentionPolicy) -> Self {
        self.retention = policy;
        self
    }

    /// Turns on background compression of sealed segments.
    pub fn compression(mut self, options: crate::maintenance::compression::CompressionOptions) -> Self {
        self.compression = Some(options);
        self
    }

    /// Checks the options for consistency (also done by `Store::open`).
    pub fn validate(&self) -> Result<()> {
        self.retention.validate()?;
        if let Some(c) = self.compression {
            c.validate()?;
        }
        if self.segment_size < 4096 || self.segment_size > (1 << 40) {
            return Err(Error::InvalidInput(format!(
                "segment_size {} must be between 4 KiB and 1 TiB",
                self.segment_size
            )));
        }
        if self.max_event_size == 0 || self.max_event_size > crate::format::record::MAX_BODY / 2 {
            return Err(Error::InvalidInput(format!(
                "max_event_size {} must be between 1 and {}",
                self.max_event_size,
                crate::format::record::MAX_BODY / 2
            )));
        }
        if self.max_events_per_append == 0 || self.max_append_size == 0 {
            return Err(Error::InvalidInput("append limits must be positive".into()));
        }
        if let Durability::Interval(d) = self.durability
            && d.is_zero()
        {
            return Err(Error::InvalidInput("sync interval must be positive".into()));
        }
        Ok(())
    }
}
