//! Indexed metadata fields (`Options::indexed_metadata`): every path that
//! builds an index (appends and seals, recovery of a missing index, a reopen
//! with another list of fields, scavenging) files the same entries; reads,
//! counts and consistency-boundary conditions answer from them; values that
//! are not strings are never indexed nor matched.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::format::index::{Lookup, MetaFields, SegmentIndex, meta_key};
use annal::{
    AppendCondition, Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, Query,
    QueryItem, SimStorage, Storage, Store,
};

const DIR: &str = "/m";
const FIELDS: &[&str] = &["actor", "tenant"];

fn options(fields: &[&str]) -> Options {
    Options::default()
        .no_compression()
        .durability(Durability::Never)
        .segment_size(4 * 1024)
        .indexed_metadata(fields.iter().copied())
}

/// The metadata of event `i`: actor `agent-(i % 5)`; tenant `t(i % 3)` as a
/// string for even `i`, as a number for odd `i` (not indexed).
fn metadata(i: usize) -> String {
    let tenant = if i.is_multiple_of(2) {
        format!(r#""t{}""#, i % 3)
    } else {
        format!("{}", i % 3)
    };
    format!(r#"{{"actor":"agent-{}","tenant":{tenant},"n":{i}}}"#, i % 5)
}

/// A store of 300 events in several sealed segments, in 6 streams.
fn filled(sim: &Arc<SimStorage>, fields: &[&str]) -> Store {
    let store = Store::open_with(sim.clone(), DIR, options(fields)).unwrap();
    for i in 0..300 {
        let e = EventData::json("T", format!(r#"{{"i":{i}}}"#)).with_metadata(metadata(i));
        store
            .append(&format!("s-{}", i % 6), ExpectedVersion::Any, vec![e])
            .unwrap();
    }
    store
}

/// Each index file's name and bytes.
fn index_files(sim: &SimStorage) -> BTreeMap<String, Vec<u8>> {
    sim.list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".idx"))
        .map(|n| {
            let bytes = sim.read_file(&Path::new(DIR).join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

fn open_index(name: &str, bytes: &[u8]) -> SegmentIndex {
    SegmentIndex::open(Arc::new(bytes.to_vec()), &PathBuf::from(name)).unwrap()
}

fn remove_indexes(sim: &SimStorage) {
    for name in index_files(sim).keys() {
        sim.remove(&Path::new(DIR).join(name)).unwrap();
    }
}

#[test]
fn indexed_metadata_every_build_path_files_the_same_entries() {
    let sim = Arc::new(SimStorage::new());
    let store = filled(&sim, FIELDS);
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    store.close().unwrap();
    let written = index_files(&sim);
    assert!(written.len() >= 3, "{} index files", written.len());
    let fingerprint = MetaFields::new(FIELDS).fingerprint();

    // What the seal wrote: each string value of an indexed field, by event.
    for (name, bytes) in &written {
        let idx = open_index(name, bytes);
        assert_eq!(idx.meta_fingerprint(), fingerprint, "{name}");
        let in_segment: Vec<_> = all
            .iter()
            .filter(|e| (idx.base()..idx.next_position()).contains(&e.position))
            .collect();
        for a in 0..5 {
            let want: Vec<u64> = in_segment
                .iter()
                .filter(|e| String::from_utf8_lossy(&e.metadata).contains(&format!(r#""actor":"agent-{a}""#)))
                .map(|e| e.position)
                .collect();
            assert!(!want.is_empty());
            assert_eq!(
                idx.tag_positions(meta_key("actor", &format!("agent-{a}"))),
                want,
                "{name}"
            );
        }
        for t in 0..3 {
            let want: Vec<u64> = in_segment
                .iter()
                .filter(|e| e.position % 2 == 0 && (e.position % 3) as usize == t)
                .map(|e| e.position)
                .collect();
            assert_eq!(idx.tag_positions(meta_key("tenant", &format!("t{t}"))), want, "{name}");
            // Numbers are not indexed.
            assert!(idx.tag_positions(meta_key("tenant", &t.to_string())).is_empty());
        }
        // Not an indexed field.
        assert!(idx.tag_positions(meta_key("n", "0")).is_empty());
    }

    // Recovery rebuilds missing index files byte for byte.
    remove_indexes(&sim);
    Store::open_with(sim.clone(), DIR, options(FIELDS))
        .unwrap()
        .close()
        .unwrap();
    assert_eq!(index_files(&sim), written);

    // Another list of fields rebuilds every index with it; the original list
    // rebuilds them again as written.
    Store::open_with(sim.clone(), DIR, options(&[]))
        .unwrap()
        .close()
        .unwrap();
    let plain = index_files(&sim);
    assert_eq!(plain.keys().collect::<Vec<_>>(), written.keys().collect::<Vec<_>>());
    for (name, bytes) in &plain {
        let idx = open_index(name, bytes);
        assert_eq!(idx.meta_fingerprint(), 0);
        assert!(idx.tag_positions(meta_key("actor", "agent-1")).is_empty());
    }
    Store::open_with(sim.clone(), DIR, options(&["tenant", "actor", "tenant"]))
        .unwrap()
        .close()
        .unwrap();
    assert_eq!(index_files(&sim), written);
}

#[test]
fn indexed_metadata_scavenging_rewrites_indexes_as_recovery_builds_them() {
    let sim = Arc::new(SimStorage::new());
    let store = filled(&sim, FIELDS);
    store.delete_stream("s-1", ExpectedVersion::Any, false).unwrap();
    let f = Filter::all().with_metadata("actor", "agent-1");
    let before = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &f)
        .unwrap();
    let report = store.scavenge().unwrap();
    assert!(report.segments_rewritten > 0, "{report:?}");
    let after = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &f)
        .unwrap();
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|e| e.stream != "s-1"));
    store.close().unwrap();
    let scavenged = index_files(&sim);
    remove_indexes(&sim);
    let store = Store::open_with(sim.clone(), DIR, options(FIELDS)).unwrap();
    store.close().unwrap();
    assert_eq!(index_files(&sim), scavenged);
}

#[test]
fn indexed_metadata_filters_reads_and_counts_agree_with_a_scan() {
    let sim = Arc::new(SimStorage::new());
    let store = filled(&sim, FIELDS);
    let scan = Store::open_with(Arc::new(SimStorage::new()), DIR, options(&[])).unwrap();
    for i in 0..300 {
        let e = EventData::json("T", format!(r#"{{"i":{i}}}"#)).with_metadata(metadata(i));
        scan.append(&format!("s-{}", i % 6), ExpectedVersion::Any, vec![e])
            .unwrap();
    }
    let filters = [
        Filter::all().with_metadata("actor", "agent-2"),
        Filter::all()
            .with_metadata("actor", "agent-2")
            .with_metadata("tenant", "t1"),
        // Only a number spells this: no match, indexed or not.
        Filter::all().with_metadata("tenant", "1"),
        // One indexed field and one that is not.
        Filter::all().with_metadata("actor", "agent-3").with_metadata("n", "3"),
        Filter::all()
            .with_metadata("actor", "agent-4")
            .with_stream_prefix("s-4"),
        Filter::all().with_metadata("actor", "nobody"),
    ];
    for f in &filters {
        let want: Vec<u64> = scan
            .read_all(Direction::Forward, LogFrom::Start, usize::MAX, f)
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect();
        let got: Vec<u64> = store
            .read_all(Direction::Forward, LogFrom::Start, usize::MAX, f)
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(got, want, "{f:?}");
        assert_eq!(store.count(f).unwrap(), want.len() as u64, "{f:?}");
    }
    // actor agent-2: i = 2, 7, 12, ...; with tenant "t1": even i with i % 3 == 1.
    let both = store.count(&filters[1]).unwrap();
    assert_eq!(
        both,
        (0..300).filter(|i| i % 5 == 2 && i % 2 == 0 && i % 3 == 1).count() as u64
    );
    assert_eq!(store.count(&filters[2]).unwrap(), 0);
}

#[test]
fn indexed_metadata_in_a_consistency_boundary_condition() {
    let sim = Arc::new(SimStorage::new());
    let store = filled(&sim, FIELDS);
    let cond = |actor: &str, after: Option<u64>| AppendCondition {
        query: Query {
            items: vec![QueryItem {
                types: vec!["T".into()],
                metadata: vec![("actor".into(), actor.into())],
                ..QueryItem::default()
            }],
        },
        after,
    };
    let ev = || EventData::json("T", "{}").with_metadata(r#"{"actor":"agent-9"}"#);
    // agent-0's last event is at position 295 (event 295, in the active or a sealed segment).
    let last0 = store
        .read_all(
            Direction::Backward,
            LogFrom::End,
            1,
            &Filter::all().with_metadata("actor", "agent-0"),
        )
        .unwrap()[0]
        .position;
    let err = store
        .append_if(
            "new",
            ExpectedVersion::Any,
            vec![ev()],
            cond("agent-0", Some(last0 - 1)),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::ConditionFailed { position } if position == last0),
        "{err}"
    );
    // An event of agent-0 in a sealed segment fails a condition from the start.
    let err = store
        .append_if("new", ExpectedVersion::Any, vec![ev()], cond("agent-0", None))
        .unwrap_err();
    assert!(matches!(err, Error::ConditionFailed { position: 0 }), "{err}");
    store
        .append_if("new", ExpectedVersion::Any, vec![ev()], cond("agent-0", Some(last0)))
        .unwrap();
    // agent-9 now has one event: a second append conditioned on none fails.
    store
        .append_if("new", ExpectedVersion::Any, vec![ev()], cond("agent-9", None))
        .unwrap_err();
    store
        .append_if("other", ExpectedVersion::Any, vec![ev()], cond("agent-8", None))
        .unwrap();
}

#[test]
fn indexed_metadata_field_names_are_checked() {
    for bad in ["", "a\0b"] {
        let err = Store::open_with(Arc::new(SimStorage::new()), DIR, options(&[bad]))
            .err()
            .unwrap();
        assert!(err.to_string().contains("indexed_metadata"), "{err}");
    }
}

#[test]
fn indexed_metadata_read_only_opens_and_repair_keep_answers_right() {
    let sim = Arc::new(SimStorage::new());
    filled(&sim, FIELDS).close().unwrap();
    let written = index_files(&sim);
    let f = Filter::all()
        .with_metadata("actor", "agent-3")
        .with_metadata("tenant", "t0");
    // i % 5 == 3, even, i % 3 == 0.
    let want = (0..300).filter(|i| i % 5 == 3 && i % 2 == 0 && i % 3 == 0).count() as u64;
    // A read-only open with another list rebuilds the indexes in memory only.
    for fields in [&[][..], &["actor"][..], FIELDS] {
        let ro = Store::open_read_only_with(sim.clone(), DIR, options(fields)).unwrap();
        assert_eq!(ro.count(&f).unwrap(), want, "{fields:?}");
        ro.close().unwrap();
        assert_eq!(index_files(&sim), written);
    }
    // Repair runs without the options: the indexes it rewrites record no
    // field, and the next open with the fields rebuilds them as written.
    remove_indexes(&sim);
    annal::repair_with(sim.clone(), Path::new(DIR)).unwrap();
    for (name, bytes) in index_files(&sim) {
        assert_eq!(open_index(&name, &bytes).meta_fingerprint(), 0, "{name}");
    }
    let store = Store::open_with(sim.clone(), DIR, options(FIELDS)).unwrap();
    assert_eq!(store.count(&f).unwrap(), want);
    store.close().unwrap();
    assert_eq!(index_files(&sim), written);
}

/// Review of the indexed-metadata merge: `restore` checked the copy with
/// default options, so it rebuilt every index of a store with indexed fields
/// without them (and the store's next open rebuilt them again). It now opens
/// the copy with the fields its version-3 index files name: the restored
/// indexes are the backup's, byte for byte, and answer from the index.
#[test]
fn indexed_metadata_restore_keeps_the_indexes_as_they_are() {
    let sim = Arc::new(SimStorage::new());
    let store = filled(&sim, FIELDS);
    store.close().unwrap();
    let before = index_files(&sim);
    assert!(before.len() >= 3, "{} index files", before.len());
    annal::restore_with(sim.clone(), Path::new(DIR), Path::new("/restored")).unwrap();
    for (name, bytes) in &before {
        let copy = sim.read_file(&Path::new("/restored").join(name)).unwrap();
        assert!(copy == *bytes, "{name} was rebuilt by restore");
    }
    let restored = Store::open_with(sim.clone(), "/restored", options(FIELDS)).unwrap();
    let f = Filter::all().with_metadata("actor", "agent-1");
    assert_eq!(restored.count(&f).unwrap(), 60);
    assert!(restored.verify().unwrap().is_clean());
}
