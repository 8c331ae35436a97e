//! Issue 11, item 8, on a real file system: another process fills a small
//! tmpfs while the store rotates segments. Appends fail with `DiskFull`, the
//! store is never closed for good, and appends resume by themselves once space
//! is back; nothing acknowledged is lost.
//!
//! Mounting needs root, so the test is ignored in the quick suite; CI runs it
//! (`cargo test --release --test tmpfs -- --ignored`).

// Tests and measurements may unwrap and cast freely; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::process::Command;

use annal::{Direction, Durability, Error, EventData, ExpectedVersion, Filter, LogFrom, Options, Store};

/// A mounted tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (run as root, as CI does)"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn event(n: u64) -> EventData {
    EventData::json("E", format!(r#"{{"n":{n},"pad":"{}"}}"#, "p".repeat(900)))
}

/// Fills the file system with `name` until a write fails; returns its path.
fn fill(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    path
}

#[test]
#[ignore = "mounts a tmpfs: needs root; CI runs it"]
fn appends_resume_by_themselves_after_the_disk_fills_at_a_rotation() {
    let fs = Tmpfs::mount(8 << 20);
    let data = fs.path().join("data");
    // No reserve: this test is about the disk really filling up.
    let options = Options::default()
        .durability(Durability::Always)
        .segment_size(256 << 10)
        .disk_reserve(0);
    let store = Store::open(&data, options.clone()).unwrap();
    let mut acked = Vec::new();
    let mut n = 0u64;
    // Close to the end of the first segment.
    while store.segment_count() == 1 && store.stats().segment_bytes < (256 << 10) - 4096 {
        let r = store.append("s", ExpectedVersion::Any, vec![event(n)]).unwrap();
        acked.push((r.position, n));
        n += 1;
    }
    // Another process takes every free byte.
    let filler = fill(fs.path(), "filler");
    let mut full = 0;
    for _ in 0..40 {
        match store.append("s", ExpectedVersion::Any, vec![event(n)]) {
            Ok(r) => acked.push((r.position, n)),
            Err(Error::DiskFull { .. }) => full += 1,
            Err(e) => panic!("expected DiskFull, got {e}"),
        }
        n += 1;
    }
    assert!(full > 0, "the disk never filled");
    assert!(store.write_failure().is_none(), "a full disk closed the store for good");
    // Space comes back: appends resume with no restart, across rotations.
    std::fs::remove_file(filler).unwrap();
    for _ in 0..600 {
        let r = store
            .append("s", ExpectedVersion::Any, vec![event(n)])
            .unwrap_or_else(|e| panic!("appends did not resume: {e}"));
        acked.push((r.position, n));
        n += 1;
    }
    assert!(store.segment_count() > 2, "no rotation after the disk was freed");
    store.close().unwrap();
    let store = Store::open(&data, options).unwrap();
    let all = store
        .read_all(Direction::Forward, LogFrom::Start, usize::MAX, &Filter::all())
        .unwrap();
    for (position, n) in &acked {
        let e = &all[*position as usize];
        assert_eq!(e.position, *position);
        assert!(
            std::str::from_utf8(&e.data)
                .unwrap()
                .starts_with(&format!(r#"{{"n":{n},"#))
        );
    }
    assert!(store.verify().unwrap().is_clean());
    store.close().unwrap();
}
