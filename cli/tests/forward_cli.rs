//! `annal forward` without servers: bad target URLs are clear errors that save
//! nothing, `forward status` lists what was saved, and a `[[forward]]`
//! section with a bad setting stops `annal serve` before it serves.

use std::path::Path;
use std::process::Command;

fn annal(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_annal"));
    c.current_dir(dir).arg("--data").arg(dir.join("annal-data"));
    c
}

fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = annal(dir).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_targets_are_clear_errors_and_save_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, _, err) = run(d, &["append", "order-1", "--type", "T", "--data", "{}"]);
    assert_eq!(code, Some(0), "{err}");
    for (url, says) in [
        ("ftp://h", "UNSUPPORTED"),
        ("kurrentdb://127.0.0.1:1?tls=false&maxDiscoverAttempts=2", "unavailable"),
        ("not a url", "invalid forward target URL"),
        ("postgres://u:hunter2@h:notaport/db", "invalid forward target URL"),
        ("annal+http://127.0.0.1:1", "unavailable"),
    ] {
        let (code, _, err) = run(d, &["forward", "--once", "--to", url]);
        assert_eq!(code, Some(1), "{url}: {err}");
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("hunter2"), "a password is never printed: {err}");
    }
    let (code, out, err) = run(d, &["forward", "status"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "", "nothing was saved");
    let (code, _, err) = run(d, &["forward", "--once"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn a_bad_forward_section_stops_serve_before_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("annal.toml"),
        "[[forward]]\nname = \"c\"\nto = \"nats://127.0.0.1:1\"\nretention = \"sometimes\"\n",
    )
    .unwrap();
    let (code, _, err) = run(d, &["serve", "--no-auth", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("[[forward]] c") && err.contains("sometimes"), "{err}");
}
