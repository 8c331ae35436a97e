//! Runs fuzz-target bodies on input files without libFuzzer, uninstrumented:
//! for reproducing a crash under a debugger or timing a target.
//!
//! ```sh
//! cd fuzz && CARGO_TARGET_DIR=/work/target-fuzz cargo run --release --example replay -- TARGET FILE_OR_DIR... [--repeat N]
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

fn inputs(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .expect("readable directory")
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for e in entries {
            inputs(&e, out);
        }
    } else {
        out.push(path.to_path_buf());
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut repeat = 1usize;
    if let Some(i) = args.iter().position(|a| a == "--repeat") {
        repeat = args.get(i + 1).and_then(|n| n.parse().ok()).expect("--repeat N");
        args.drain(i..i + 2);
    }
    let Some((target, paths)) = args.split_first() else {
        eprintln!("usage: replay TARGET FILE_OR_DIR... [--repeat N]");
        std::process::exit(2);
    };
    let run: fn(&[u8]) = match target.as_str() {
        "frame" => annal_fuzz::frame,
        "segment_header" => annal_fuzz::segment_header,
        "index_file" => annal_fuzz::index_file,
        "checkpoint" => annal_fuzz::checkpoint,
        "compressed_segment" => annal_fuzz::compressed_segment,
        "store_dir" => annal_fuzz::store_dir,
        "subjects" => annal_fuzz::subjects,
        other => {
            eprintln!("unknown target {other}");
            std::process::exit(2);
        }
    };
    let mut files = Vec::new();
    for p in paths {
        inputs(Path::new(p), &mut files);
    }
    for f in &files {
        let data = std::fs::read(f).expect("readable input");
        let start = Instant::now();
        for _ in 0..repeat {
            run(&data);
        }
        println!(
            "{}: {} bytes, {:?} per run",
            f.display(),
            data.len(),
            start.elapsed() / repeat as u32
        );
    }
}
