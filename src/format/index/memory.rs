//! The active segment's index, in memory: filled event by event as frames are
//! written (or scanned at recovery), asked through [`Lookup`], and encoded
//! into an `.idx` file when the segment is sealed. It must never read
//! segment bytes.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::{Lookup, MetaFields, Parts, StreamSummary, TagKey, TagOwner, TypeCatalog, fold32, hash_str, v1, v2};
use crate::error::Result;
use crate::format::codec::{DecodeError, Reader};
use crate::format::record::LostView;

/// One stream's part of the active segment.
#[derive(Debug)]
struct StreamSlot {
    name: String,
    summary: StreamSummary,
    /// `(revision, position)` of its events, ascending.
    entries: Vec<(u64, u64)>,
}

/// The events of one type hash in the active segment.
#[derive(Debug, Default)]
struct TypeSlot {
    /// The type names with this hash (one, unless two collide).
    names: Vec<Box<str>>,
    /// Positions of their events, ascending.
    positions: Vec<u64>,
}

/// The events of one tag hash in the active segment.
#[derive(Debug)]
struct TagSlot {
    /// [`TagKey::check`] of the first tag or metadata value filed here.
    check: u64,
    /// True once another tag or value (another check) was filed on this hash.
    mixed: bool,
    /// Positions of their events, ascending.
    positions: Vec<u64>,
}

/// The in-memory index of the active segment.
#[derive(Debug, Default)]
pub struct MemIndex {
    base: u64,
    /// `(offset, timestamp)` for each position from `base`.
    locations: Vec<(u64, i64)>,
    /// Offset just past the last indexed frame.
    end_offset: u64,
    /// Streams by the hash of their name; names with equal hashes share a bucket.
    streams: FxHashMap<u64, Vec<StreamSlot>>,
    /// Types by hash: the names with that hash (one, but for a collision)
    /// and the positions of their events.
    types: FxHashMap<u64, TypeSlot>,
    /// Tag postings; those of indexed metadata fields share them, by
    /// [`super::meta_key`].
    tags: FxHashMap<u64, TagSlot>,
    ids: FxHashMap<Uuid, u64>,
    /// Positions that hold an event (the others are lost or removed).
    events: u64,
    /// The metadata fields whose string values are filed in `tags`.
    fields: Arc<MetaFields>,
}

impl MemIndex {
    /// An empty index for the segment starting at `base`, whose first frame
    /// is at `first_offset`, filing the string values of the metadata `fields`.
    pub fn new(base: u64, first_offset: u64, fields: Arc<MetaFields>) -> Self {
        MemIndex {
            base,
            end_offset: first_offset,
            fields,
            ..Default::default()
        }
    }

    /// Number of positions indexed.
    pub fn len(&self) -> usize {
        self.locations.len()
    }

    /// True when no position is indexed.
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Offset just past the last indexed frame.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    fn slot(&mut self, stream: &str, revision: u64, position: u64) -> &mut StreamSlot {
        let bucket = self.streams.entry(hash_str(stream)).or_default();
        match bucket.iter().position(|s| s.name == stream) {
            Some(i) => &mut bucket[i],
            None => {
                bucket.push(StreamSlot {
                    name: stream.to_string(),
                    summary: StreamSummary {
                        first_revision: revision,
                        last_revision: revision,
                        last_position: position,
                    },
                    entries: Vec::new(),
                });
                bucket.last_mut().expect("just pushed")
            }
        }
    }

    /// Adds the next event; `end` is the offset just past its frame.
    pub fn push(&mut self, e: &super::IndexEntry<'_>, end: u64) {
        let keys = self.fields.keys(e.metadata);
        self.push_keyed(e, end, &keys);
    }

    /// The metadata fields this index files.
    pub fn fields(&self) -> &Arc<MetaFields> {
        &self.fields
    }

    /// [`MemIndex::push`] with the event's metadata keys already taken
    /// ([`MetaFields::keys`] of [`MemIndex::fields`], so that a writer can
    /// take them before it locks the index).
    pub fn push_keyed(&mut self, e: &super::IndexEntry<'_>, end: u64, meta_keys: &[TagKey]) {
        debug_assert_eq!(e.position, self.base + self.locations.len() as u64);
        self.locations.push((e.offset, e.timestamp));
        self.end_offset = end;
        self.events += 1;
        let slot = self.slot(e.stream, e.revision, e.position);
        slot.entries.push((e.revision, e.position));
        slot.summary.last_revision = e.revision;
        slot.summary.last_position = e.position;
        let slot = self.types.entry(hash_str(e.event_type)).or_default();
        if !slot.names.iter().any(|n| **n == *e.event_type) {
            slot.names.push(e.event_type.into());
        }
        slot.positions.push(e.position);
        for key in e.tags.iter().map(|t| TagKey::tag(t)).chain(meta_keys.iter().copied()) {
            let slot = self.tags.entry(key.hash).or_insert_with(|| TagSlot {
                check: key.check,
                mixed: false,
                positions: Vec::new(),
            });
            slot.mixed |= slot.check != key.check;
            // An event listing a tag twice is indexed once.
            if slot.positions.last() != Some(&e.position) {
                slot.positions.push(e.position);
            }
        }
        self.ids.insert(e.id, e.position);
    }

    /// Adds the positions of a lost or removed frame at `offset..end`: they
    /// take locations and nothing else, except that the stream heads the frame
    /// records raise those streams' summaries (revisions handed out before).
    pub fn push_lost(&mut self, lost: &LostView<'_>, offset: u64, end: u64) {
        let ts = self.locations.last().map_or(i64::MIN, |(_, ts)| *ts);
        for _ in 0..lost.count {
            self.locations.push((offset, ts));
        }
        self.end_offset = end;
        for head in &lost.heads {
            let slot = self.slot(head.stream, head.revision, head.position);
            if slot.summary.last_revision < head.revision {
                slot.summary.last_revision = head.revision;
                slot.summary.last_position = head.position;
            }
        }
    }

    /// What the file encoders need, streams sorted by name.
    fn parts(&self) -> Parts<'_> {
        let mut streams: Vec<_> = self
            .streams
            .values()
            .flatten()
            .map(|s| (s.name.as_str(), s.summary, s.entries.as_slice()))
            .collect();
        streams.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut types: Vec<_> = self.types.iter().map(|(h, v)| (*h, v.positions.as_slice())).collect();
        types.sort_unstable_by_key(|t| t.0);
        let mut type_names: Vec<&str> = self.types.values().flat_map(|t| t.names.iter().map(|n| &**n)).collect();
        type_names.sort_unstable();
        let mut tags: Vec<_> = self.tags.iter().map(|(h, v)| (*h, v.positions.as_slice())).collect();
        tags.sort_unstable_by_key(|t| t.0);
        // A file's 32-bit key is shared when two hashes fold to it or one
        // hash holds two tags or values.
        let mut folded: FxHashMap<u32, (usize, bool)> = FxHashMap::default();
        for (h, slot) in &self.tags {
            let k = folded.entry(fold32(*h)).or_default();
            k.0 += 1;
            k.1 |= slot.mixed;
        }
        let mut shared_tags: Vec<u32> = folded
            .into_iter()
            .filter(|(_, (hashes, mixed))| *hashes > 1 || *mixed)
            .map(|(k, _)| k)
            .collect();
        shared_tags.sort_unstable();
        let mut ids: Vec<(Uuid, u64)> = self.ids.iter().map(|(i, p)| (*i, *p)).collect();
        ids.sort_unstable();
        Parts {
            base: self.base,
            end_offset: self.end_offset,
            locations: &self.locations,
            streams,
            types,
            type_names,
            tags,
            shared_tags,
            ids,
            meta_fingerprint: self.fields.fingerprint(),
            meta_fields: self.fields.names().iter().map(String::as_str).collect(),
        }
    }

    /// Encodes the `.idx` file for this segment once it is sealed: version 5
    /// (version 2 with the segment's type names, its shared tag keys, a
    /// checksum per section and a filter over streams and ids), or version 1 when the
    /// segment is too large for version 2's 32-bit fields. Fails with [`crate::Error::InvalidInput`] if a stream name is
    /// longer than its 16-bit length field (names come from validated appends
    /// or from the log, so the store's never are).
    pub fn encode_file(&self) -> Result<Vec<u8>> {
        self.encode_file_v2(super::INDEX_VERSION)
    }

    /// Encodes a compact file of `version` 5 (as 4, with a filter over
    /// streams and ids), 4 (names, shared tag keys and
    /// section checksums), 3 (names) or 2, falling back to version 1 as
    /// [`MemIndex::encode_file`].
    pub(crate) fn encode_file_v2(&self, version: u32) -> Result<Vec<u8>> {
        let parts = self.parts();
        match v2::encode(&parts, version)? {
            Some(bytes) => Ok(bytes),
            None => v1::encode(&parts),
        }
    }

    /// Encodes a version-1 `.idx` file (what annal wrote before version 2).
    pub fn encode_file_v1(&self) -> Result<Vec<u8>> {
        v1::encode(&self.parts())
    }

    /// Encodes the `.idx` file in the version `like` has, so that the two can
    /// be compared byte for byte (versions 2 to 5 fall back to 1 as in
    /// [`MemIndex::encode_file`]).
    pub fn encode_file_like(&self, like: &super::SegmentIndex) -> Result<Vec<u8>> {
        match like.version() {
            1 => self.encode_file_v1(),
            v => self.encode_file_v2(v),
        }
    }
}

/// Smallest encoded size of one item of each list of a snapshot (see
/// [`MemIndex::encode_snapshot`]), which bounds what a count may allocate.
const SNAP_LOCATION: usize = 16;
const SNAP_STREAM: usize = 2 + 32;
const SNAP_ENTRY: usize = 16;
const SNAP_TYPE: usize = 8 + 8 + 8;
const SNAP_TAG: usize = 8 + 8 + 1 + 8;
const SNAP_ID: usize = 24;

/// A list length of a snapshot, refused when `min` bytes an item would not
/// fit in what is left of the body.
fn snap_count(r: &mut Reader<'_>, min: usize) -> std::result::Result<usize, DecodeError> {
    let n = r.u64()?;
    usize::try_from(n)
        .ok()
        .filter(|n| n.checked_mul(min).is_some_and(|b| b <= r.buf.len()))
        .ok_or(DecodeError("list longer than the snapshot"))
}

/// A list of positions, refused unless strictly ascending.
fn snap_positions(r: &mut Reader<'_>) -> std::result::Result<Vec<u64>, DecodeError> {
    let n = snap_count(r, 8)?;
    let positions = (0..n)
        .map(|_| r.u64())
        .collect::<std::result::Result<Vec<u64>, DecodeError>>()?;
    if positions.windows(2).any(|w| w[0] >= w[1]) {
        return Err(DecodeError("positions out of order"));
    }
    Ok(positions)
}

impl MemIndex {
    /// Encodes everything this index holds, so that [`MemIndex::decode_snapshot`]
    /// gives an equal index back without reading the segment (the body of
    /// `active.idc`, format.md "Active index checkpoint"). Fails with
    /// [`crate::error::Error::InvalidInput`] on a stream or type name longer than a
    /// 16-bit length (the store's never are).
    pub fn encode_snapshot(&self) -> Result<Vec<u8>> {
        let name16 = |out: &mut Vec<u8>, name: &str| -> Result<()> {
            let len = u16::try_from(name.len()).map_err(|_| {
                crate::error::Error::InvalidInput(format!("name of {} bytes in an index snapshot", name.len()))
            })?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            Ok(())
        };
        let u64s = |out: &mut Vec<u8>, v: &[u64]| {
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        let mut out = Vec::with_capacity(64 + self.locations.len() * (SNAP_LOCATION + SNAP_ID + SNAP_ENTRY + 24));
        out.extend_from_slice(&self.base.to_le_bytes());
        out.extend_from_slice(&self.end_offset.to_le_bytes());
        out.extend_from_slice(&self.fields.fingerprint().to_le_bytes());
        out.extend_from_slice(&(self.locations.len() as u64).to_le_bytes());
        for (offset, ts) in &self.locations {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&ts.to_le_bytes());
        }
        let streams: Vec<&StreamSlot> = self.streams.values().flatten().collect();
        out.extend_from_slice(&(streams.len() as u64).to_le_bytes());
        for s in streams {
            name16(&mut out, &s.name)?;
            out.extend_from_slice(&s.summary.first_revision.to_le_bytes());
            out.extend_from_slice(&s.summary.last_revision.to_le_bytes());
            out.extend_from_slice(&s.summary.last_position.to_le_bytes());
            out.extend_from_slice(&(s.entries.len() as u64).to_le_bytes());
            for (revision, position) in &s.entries {
                out.extend_from_slice(&revision.to_le_bytes());
                out.extend_from_slice(&position.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.types.len() as u64).to_le_bytes());
        for (hash, t) in &self.types {
            out.extend_from_slice(&hash.to_le_bytes());
            out.extend_from_slice(&(t.names.len() as u64).to_le_bytes());
            for n in &t.names {
                name16(&mut out, n)?;
            }
            u64s(&mut out, &t.positions);
        }
        out.extend_from_slice(&(self.tags.len() as u64).to_le_bytes());
        for (hash, t) in &self.tags {
            out.extend_from_slice(&hash.to_le_bytes());
            out.extend_from_slice(&t.check.to_le_bytes());
            out.push(u8::from(t.mixed));
            u64s(&mut out, &t.positions);
        }
        out.extend_from_slice(&(self.ids.len() as u64).to_le_bytes());
        for (id, position) in &self.ids {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&position.to_le_bytes());
        }
        Ok(out)
    }

    /// Decodes [`MemIndex::encode_snapshot`]'s bytes for an index filing the
    /// metadata `fields`. Refuses (never panics on) bytes that do not decode,
    /// that were made with other fields, or whose lists disagree with its
    /// locations; the caller checks the file's checksum and that it
    /// describes the segment as it is on disk.
    pub fn decode_snapshot(b: &[u8], fields: Arc<MetaFields>) -> std::result::Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let base = r.u64()?;
        let end_offset = r.u64()?;
        if r.u64()? != fields.fingerprint() {
            return Err(DecodeError("made with other indexed metadata fields"));
        }
        let n = snap_count(&mut r, SNAP_LOCATION)?;
        let mut locations = Vec::with_capacity(n);
        for _ in 0..n {
            let offset = r.u64()?;
            let ts = i64::from_le_bytes(r.u64()?.to_le_bytes());
            locations.push((offset, ts));
        }
        if locations.windows(2).any(|w| w[0].0 > w[1].0) || locations.last().is_some_and(|l| l.0 >= end_offset) {
            return Err(DecodeError("locations out of order or past the end"));
        }
        let next = base
            .checked_add(n as u64)
            .ok_or(DecodeError("positions past the end of the log"))?;
        let in_range = |p: &u64| (base..next).contains(p);
        let n = snap_count(&mut r, SNAP_STREAM)?;
        let mut streams: FxHashMap<u64, Vec<StreamSlot>> = FxHashMap::default();
        streams.reserve(n);
        for _ in 0..n {
            let name = r.str16()?.to_string();
            let summary = StreamSummary {
                first_revision: r.u64()?,
                last_revision: r.u64()?,
                last_position: r.u64()?,
            };
            let m = snap_count(&mut r, SNAP_ENTRY)?;
            let entries = (0..m)
                .map(|_| Ok((r.u64()?, r.u64()?)))
                .collect::<std::result::Result<Vec<(u64, u64)>, DecodeError>>()?;
            if !entries.iter().all(|(_, p)| in_range(p))
                || entries.windows(2).any(|w| w[0].0 >= w[1].0 || w[0].1 >= w[1].1)
            {
                return Err(DecodeError("stream entry outside the segment or out of order"));
            }
            let bucket = streams.entry(hash_str(&name)).or_default();
            if bucket.iter().any(|s| s.name == name) {
                return Err(DecodeError("stream listed twice"));
            }
            bucket.push(StreamSlot { name, summary, entries });
        }
        let n = snap_count(&mut r, SNAP_TYPE)?;
        let mut types: FxHashMap<u64, TypeSlot> = FxHashMap::default();
        types.reserve(n);
        for _ in 0..n {
            let hash = r.u64()?;
            let count = snap_count(&mut r, 2)?;
            let names = (0..count)
                .map(|_| Ok(r.str16()?.into()))
                .collect::<std::result::Result<Vec<Box<str>>, DecodeError>>()?;
            let positions = snap_positions(&mut r)?;
            if !positions.iter().all(in_range) || types.insert(hash, TypeSlot { names, positions }).is_some() {
                return Err(DecodeError("type entry outside the segment or listed twice"));
            }
        }
        let n = snap_count(&mut r, SNAP_TAG)?;
        let mut tags: FxHashMap<u64, TagSlot> = FxHashMap::default();
        tags.reserve(n);
        for _ in 0..n {
            let hash = r.u64()?;
            let check = r.u64()?;
            let mixed = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError("bad tag flag")),
            };
            let positions = snap_positions(&mut r)?;
            if !positions.iter().all(in_range)
                || tags
                    .insert(
                        hash,
                        TagSlot {
                            check,
                            mixed,
                            positions,
                        },
                    )
                    .is_some()
            {
                return Err(DecodeError("tag entry outside the segment or listed twice"));
            }
        }
        let n = snap_count(&mut r, SNAP_ID)?;
        let mut ids: FxHashMap<Uuid, u64> = FxHashMap::default();
        ids.reserve(n);
        for _ in 0..n {
            let id = Uuid::from_slice(r.take(16)?).map_err(|_| DecodeError("bad event id"))?;
            let position = r.u64()?;
            if !in_range(&position) || ids.insert(id, position).is_some() {
                return Err(DecodeError("event id outside the segment or listed twice"));
            }
        }
        if !r.buf.is_empty() {
            return Err(DecodeError("trailing bytes in the snapshot"));
        }
        // Each event has one stream entry; lost and removed positions none.
        let events = streams.values().flatten().map(|s| s.entries.len() as u64).sum();
        Ok(MemIndex {
            base,
            locations,
            end_offset,
            streams,
            types,
            tags,
            ids,
            events,
            fields,
        })
    }
}

impl Lookup for MemIndex {
    fn base(&self) -> u64 {
        self.base
    }
    fn next_position(&self) -> u64 {
        self.base + self.locations.len() as u64
    }
    fn location(&self, position: u64) -> Option<(u64, u64)> {
        let i = usize::try_from(position.checked_sub(self.base)?).ok()?;
        let (off, _) = *self.locations.get(i)?;
        let end = self.locations.get(i + 1).map_or(self.end_offset, |(o, _)| *o);
        Some((off, end))
    }
    fn time_bounds(&self, position: u64) -> Option<(i64, i64)> {
        let i = usize::try_from(position.checked_sub(self.base)?).ok()?;
        self.locations.get(i).map(|(_, ts)| (*ts, *ts))
    }
    fn time_range(&self) -> Option<(i64, i64)> {
        Some((self.locations.first()?.1, self.locations.last()?.1))
    }
    fn stream_entries(&self, stream: &str, from: u64, forward: bool, limit: usize) -> Vec<(u64, u64)> {
        let Some(bucket) = self.streams.get(&hash_str(stream)) else {
            return Vec::new();
        };
        let Some(slot) = bucket.iter().find(|s| s.name == stream) else {
            return Vec::new();
        };
        let list = &slot.entries;
        if forward {
            let start = list.partition_point(|(r, _)| *r < from);
            list[start..].iter().take(limit).copied().collect()
        } else {
            let end = list.partition_point(|(r, _)| *r <= from);
            list[..end].iter().rev().take(limit).copied().collect()
        }
    }
    fn type_positions(&self, hash: u64) -> Vec<u64> {
        self.types.get(&hash).map(|t| t.positions.clone()).unwrap_or_default()
    }
    fn type_count(&self, hash: u64) -> u64 {
        self.types.get(&hash).map_or(0, |t| t.positions.len() as u64)
    }
    fn type_positions_in(&self, hash: u64, lo: u64, hi: u64) -> Vec<u64> {
        let Some(t) = self.types.get(&hash) else {
            return Vec::new();
        };
        let from = t.positions.partition_point(|p| *p < lo);
        let to = t.positions.partition_point(|p| *p < hi).max(from);
        t.positions[from..to].to_vec()
    }
    fn type_catalog(&self) -> Option<TypeCatalog> {
        let mut names: Vec<String> = self
            .types
            .values()
            .flat_map(|t| t.names.iter().map(|n| n.to_string()))
            .collect();
        names.sort_unstable();
        Some(TypeCatalog {
            // A hash with two names answers for both.
            exact: self.types.values().all(|t| t.names.len() <= 1),
            names,
        })
    }
    fn tag_positions(&self, hash: u64) -> Vec<u64> {
        self.tags.get(&hash).map(|s| s.positions.clone()).unwrap_or_default()
    }
    fn tag_owner(&self, key: &TagKey) -> TagOwner {
        match self.tags.get(&key.hash) {
            None => TagOwner::Known(false),
            Some(slot) if slot.mixed => TagOwner::Unknown,
            Some(slot) => TagOwner::Known(slot.check == key.check),
        }
    }
    fn id_positions(&self, id: &Uuid) -> Vec<u64> {
        self.ids.get(id).copied().into_iter().collect()
    }
    fn may_contain_stream(&self, hash: u64) -> bool {
        self.streams.contains_key(&hash)
    }
    fn streams(&self) -> Vec<(String, StreamSummary)> {
        self.streams
            .values()
            .flatten()
            .map(|s| (s.name.clone(), s.summary))
            .collect()
    }
    fn meta_field_names(&self) -> Option<Vec<String>> {
        Some(self.fields.names().to_vec())
    }
    fn empty_positions(&self) -> Option<u64> {
        Some((self.locations.len() as u64).saturating_sub(self.events))
    }
    fn meta_fingerprint(&self) -> u64 {
        self.fields.fingerprint()
    }
}
