//! Writes the seed corpus under `fuzz/corpus/<target>/` with annal's own
//! encoders and a small store built in `SimStorage`:
//!
//! ```sh
//! cd fuzz && CARGO_TARGET_DIR=/work/target-fuzz cargo run --example make_corpus
//! ```
//!
//! Existing files of the same names are overwritten; nothing else is removed.
//! Store files carry timestamps and a random store id, so the bytes differ from
//! run to run while the structure stays the same.

use std::fs;
use std::path::{Path, PathBuf};

use annal::ContentType;
use annal::format::checkpoint::StreamsCheckpoint;
use annal::CompressionOptions;
use annal::format::compressed::{Dictionary, compress_segment};
use annal::format::index::MemIndex;
use annal::format::record::{self, GroupView, SealView};
use annal_fuzz::store_dir::{Op, build_template};
use uuid::Uuid;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("corpus dir");
    fs::write(dir.join(name), bytes).expect("corpus file");
}

fn event(commit: bool, ct: ContentType, tags: &[&str], metadata: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    record::encode_event(
        &mut out,
        commit,
        7,
        3,
        1_700_000_000_000_000,
        Uuid::from_u128(0x1234),
        ct,
        "order-1",
        "OrderPlaced",
        &tags,
        metadata,
        data,
    )
    .expect("a small event fits its frame");
    out
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");

    // frame: one of each kind.
    let d = root.join("frame");
    write(
        &d,
        "event-json-commit",
        &event(
            true,
            ContentType::Json,
            &["tenant:t1"],
            br#"{"m":1}"#,
            br#"{"total":10}"#,
        ),
    );
    write(
        &d,
        "event-binary-pending",
        &event(false, ContentType::Binary, &[], b"", &[0, 1, 2, 255]),
    );
    write(
        &d,
        "event-many-tags",
        &event(true, ContentType::Json, &["a", "b", "a", "\u{e9}t\u{e9}"], b"", b"{}"),
    );
    let mut seal = Vec::new();
    record::encode_seal(
        &mut seal,
        &SealView {
            next_position: 10,
            event_count: 4,
            content_crc: 0xdead_beef,
        },
    );
    write(&d, "seal", &seal);
    let mut group = Vec::new();
    record::encode_group(&mut group, &GroupView { durable_end: 4096 });
    write(&d, "group", &group);
    write(&d, "lost", &annal_fuzz::lost_frame(4, 9, 3));
    write(&d, "removed", &annal_fuzz::lost_frame(5, 9, 3));
    write(
        &d,
        "removed-heads",
        &annal_fuzz::lost_frame_with_heads(5, 9, 3, &[("order-1", 4, 9), ("order-2", 0, 11)]),
    );

    // The template stores supply real segment, index, checkpoint and meta files.
    let rich = build_template(0);
    let small = build_template(1);
    for (i, t) in [&rich, &small].into_iter().enumerate() {
        for (p, b) in &t.files {
            println!("template {i}: {} ({} bytes)", p.display(), b.len());
        }
    }
    let file = |t: &annal_fuzz::store_dir::Template, suffix: &str, nth: usize| -> Vec<u8> {
        t.files
            .iter()
            .filter(|(p, _)| p.to_string_lossy().ends_with(suffix))
            .nth(nth)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("template has no {nth}th {suffix}"))
    };

    // segment_header: a bare header, a hand-built segment, real sealed and active segments.
    let d = root.join("segment_header");
    let header = annal_fuzz::segment_header_bytes(0, 1_700_000_000_000_000);
    write(&d, "header-only", &header);
    let mut seg = header.to_vec();
    record::encode_group(&mut seg, &GroupView { durable_end: 64 });
    seg.extend_from_slice(&event(true, ContentType::Json, &["t"], b"", b"{}"));
    record::encode_seal(
        &mut seg,
        &SealView {
            next_position: 8,
            event_count: 1,
            content_crc: 0,
        },
    );
    write(&d, "tiny-segment", &seg);
    write(&d, "sealed-segment", &file(&rich, ".seg", 0));
    let active = file(
        &rich,
        ".seg",
        rich.files
            .iter()
            .filter(|(p, _)| p.to_string_lossy().ends_with(".seg"))
            .count()
            - 1,
    );
    write(&d, "active-segment-with-zeros", &active);
    write(&d, "active-segment-never", &file(&small, ".seg", 1));

    // index_file: real indexes and an empty one.
    let d = root.join("index_file");
    write(&d, "sealed-0", &file(&rich, ".idx", 0));
    write(&d, "sealed-1", &file(&rich, ".idx", 1));
    write(&d, "empty", &MemIndex::new(0, 64, Default::default()).encode_file().expect("an empty index encodes"));

    // checkpoint: real and hand-built checkpoints, and an identity file.
    let d = root.join("checkpoint");
    write(&d, "streams-real", &file(&rich, "streams.chk", 0));
    write(
        &d,
        "streams-one",
        &annal_fuzz::checkpoint_bytes(3, &[("order-1", 2, 2), ("\u{e9}t\u{e9}", 0, 1)]),
    );
    write(&d, "streams-empty", &StreamsCheckpoint::default().encode().expect("an empty checkpoint encodes"));
    write(&d, "meta-real", &file(&rich, "annal.meta", 0));

    let dict = Dictionary {
        id: 7,
        bytes: b"a small dictionary: order-1 OrderPlaced tenant".to_vec(),
    };
    write(&d, "dictionary", &dict.encode());

    // compressed_segment: real compressed segments (one block each) and a segment cut into small blocks.
    let d = root.join("compressed_segment");
    let compressed = build_template(3);
    write(&d, "compressed-0", &file(&compressed, ".seg", 0));
    write(&d, "compressed-1", &file(&compressed, ".seg", 1));
    let small_blocks = CompressionOptions {
        block_size: 600,
        ..Default::default()
    };
    let raw = file(&rich, ".seg", 0);
    write(
        &d,
        "compressed-small-blocks",
        &compress_segment(&raw, small_blocks.level, small_blocks.block_size, None).expect("compressible segment"),
    );

    // store_dir: a template byte, an append byte (3: to "fuzz-append", expecting any
    // version), then operations (see fuzz/src/store_dir.rs).
    let d = root.join("store_dir");
    let op = |o: Op| o as u8;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("template-0", vec![0, 3]),
        ("template-1", vec![1, 3]),
        ("template-2", vec![2, 3]),
        ("template-3", vec![3, 3]),
        // Flip a bit in the second file (a segment of template 0).
        ("flip-bit", vec![0, 3, op(Op::FlipBit), 1, 200, 0, 0, 0, 3]),
        // Overwrite a seal's neighbourhood in a sealed segment, then fix its checksums.
        (
            "overwrite-and-fix",
            vec![0, 3, op(Op::Overwrite), 1, 1, 1, 0xff, 0xee, op(Op::FixChecksums), 1],
        ),
        // Truncate the active segment at its data end.
        ("truncate-active", vec![0, 3, op(Op::Truncate), 6, 1]),
        // A lost frame of 2 positions over the 3rd frame of a segment.
        ("lost-frame", vec![0, 3, op(Op::Frame), 1, 2, 3, 1, 3, 1, 0, 5, 0, 2]),
        // A group frame claiming durability at the end of the active segment's data.
        ("group-at-end", vec![1, 3, op(Op::Frame), 2, 1, 1, 2, 0]),
        // Remove an index, and write a wrong count into another one, checksummed.
        (
            "remove-idx-and-bad-count",
            vec![
                0,
                3,
                op(Op::Remove),
                0,
                op(Op::WriteInt),
                0,
                0,
                24,
                0,
                3,
                0,
                9,
                op(Op::FixChecksums),
                0,
            ],
        ),
        // Copy a segment under a far-away base.
        (
            "copy-segment",
            vec![0, 3, op(Op::Copy), 1, 0, 3, 0xff, 0xff, 0, 0, 0, 0, 0, 0],
        ),
        // Cut 100 bytes out of the middle of a segment, then fix its frames' checksums.
        (
            "cut-and-fix",
            vec![1, 3, op(Op::Cut), 1, 0, 0, 1, 100, 0, op(Op::FixChecksums), 1],
        ),
    ];
    for (name, bytes) in seeds {
        write(&d, name, &bytes);
    }

    // subjects: a key store with a live and a shredded key, the same with a
    // torn last record, and an envelope too short to hold its fixed fields.
    use annal::format::subjects::{self as subj, KeyRecord, Secret};
    let d = root.join("subjects");
    let live = KeyRecord {
        lookup: [1; 32],
        key_id: [2; subj::KEY_ID_LEN],
        key: Secret([3; 32]),
    };
    let keys = subj::encode_file(&Secret([5; 32]), &[live], &[[4; subj::KEY_ID_LEN]]);
    write(&d, "keys-one-live-one-shredded", &keys);
    write(&d, "keys-torn-tail", &keys[..keys.len() - 45]);
    write(&d, "envelope-short", &[9; 60]);
    println!("wrote the seed corpus under {}", root.display());
}
