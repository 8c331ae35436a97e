//! A `[[forward]]` forwarder that waits holds retention with no forwarder
//! running: `annal compact` (with `annal serve` down, the forwarder never run)
//! keeps the events it has not delivered, until `annal forward forget` drops
//! the hold; `annal forward release` releases the name.

use std::path::Path;
use std::process::Command;

use annal::{EventData, ExpectedVersion, Options, Store};

fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_annal"))
        .current_dir(dir)
        .arg("--data")
        .arg(dir.join("annal-data"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn field(json: &str, name: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    v[name].as_u64().unwrap_or_else(|| panic!("{name} in {json}"))
}

#[test]
fn compact_keeps_what_a_configured_forwarder_has_not_delivered_until_it_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("annal.toml"),
        "segment_size = 4096\n[retention]\nmax_events = 20\n\n\
         [[forward]]\nname = \"later\"\nto = \"nats://127.0.0.1:1\"\n",
    )
    .unwrap();
    {
        let store = Store::open(
            d.join("annal-data"),
            Options::default().segment_size(4096).create_if_missing(true),
        )
        .unwrap();
        for i in 0..300 {
            store
                .append(
                    &format!("s-{}", i % 4),
                    ExpectedVersion::Any,
                    vec![EventData::json("T", format!(r#"{{"i":{i}}}"#))],
                )
                .unwrap();
        }
        store.close().unwrap();
    }
    // The forwarder never ran and `annal serve` is down: compact registers it and keeps everything.
    let (code, out, err) = run(d, &["compact"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(field(&out, "events_removed"), 0, "{out}");
    let (code, out, err) = run(d, &["forward", "status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(r#""name":"later""#) && out.contains(r#""holds_retention":true"#),
        "{out}"
    );
    // Forgetting it drops the hold (and warns that the configuration still names it).
    let (code, out, err) = run(d, &["forward", "forget", "later"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(r#""holds_retention":false"#), "{out}");
    assert!(err.contains("still a [[forward]]"), "{err}");
    // Acknowledging a gap clears it from the saved checkpoint (it had none).
    let (code, out, err) = run(d, &["forward", "ack-gap", "later"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(r#""gap":null"#), "{out}");
    let (code, _, err) = run(d, &["forward", "ack-gap", "never-was"]);
    assert_eq!(code, Some(1), "{err}");
    std::fs::write(
        d.join("annal.toml"),
        "segment_size = 4096\n[retention]\nmax_events = 20\n",
    )
    .unwrap();
    let (code, out, err) = run(d, &["compact"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(field(&out, "events_removed") > 0, "{out}");
    let (code, _, err) = run(d, &["forward", "forget", "never-was"]);
    assert_eq!(code, Some(1), "{err}");
    // Releasing the name: its checkpoint goes, status no longer lists it.
    let (code, out, err) = run(d, &["forward", "release", "later"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(r#""had_checkpoint":true"#), "{out}");
    let (code, out, err) = run(d, &["forward", "status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains(r#""name":"later""#), "{out}");
    // A name that never saved anything is released too (nothing to do).
    let (code, out, err) = run(d, &["forward", "release", "never-was"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(r#""had_checkpoint":false"#), "{out}");
}
