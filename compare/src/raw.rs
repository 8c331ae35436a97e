//! The disk's raw limits, measured on the same file system as the stores.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::systems::Res;

/// 4 KiB writes, each followed by `fdatasync`, for `dur`; returns syncs/s.
/// `append` grows the file at each write; otherwise the same block is overwritten in place.
pub fn fdatasync_rate(path: &Path, dur: Duration, append: bool) -> Res<f64> {
    let mut f: File = OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
    let block = vec![0x5au8; 4096];
    if !append {
        f.write_all(&block)?;
        f.sync_all()?;
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        if append {
            f.write_all(&block)?;
        } else {
            f.write_all_at(&block, 0)?;
        }
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(rate)
}

/// Writes `bytes` to a new file in 1 MiB writes and syncs it; returns bytes/s, the sync included.
pub fn sequential_bandwidth(path: &Path, bytes: u64) -> Res<f64> {
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(path)?;
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let start = Instant::now();
    let mut written = 0u64;
    while written < bytes {
        f.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    f.sync_data()?;
    let rate = written as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(rate)
}
