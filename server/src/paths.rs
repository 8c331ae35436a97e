//! Where a path really is: the rule `annal backup`/`restore` and `POST
//! /admin/backup` use to keep a copy out of the data directory.
//!
//! Shared by the CLI and every protocol. It must never import a protocol's module.

use std::path::{Component, Path, PathBuf};

/// `path` made absolute, with `.` and `..` resolved by name, and, as far as
/// it exists, free of symbolic links.
pub fn resolved(path: &Path) -> PathBuf {
    let abs = lexical(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(p), Some(n)) => {
                rest.push(n.to_os_string());
                existing = p;
            }
            _ => return abs,
        }
    }
    let mut out = existing.canonicalize().unwrap_or_else(|_| existing.to_path_buf());
    out.extend(rest.iter().rev());
    out
}

/// Resolves `.` and `..` by name.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// True if `path` is `dir` or inside it, once both are [`resolved`].
pub fn is_within(path: &Path, dir: &Path) -> bool {
    resolved(path).starts_with(resolved(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_a_directory_are_found_through_links_and_dots() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        std::fs::create_dir(&data).unwrap();
        assert!(is_within(&data, &data));
        assert!(is_within(&data.join("backup"), &data));
        assert!(is_within(&t.path().join("nope/../data/backup"), &data));
        assert!(is_within(&t.path().join("data/x/../../data/y"), &data));
        assert!(!is_within(&t.path().join("data-backup"), &data));
        assert!(!is_within(&t.path().join("data/../backup"), &data));
        std::os::unix::fs::symlink(&data, t.path().join("link")).unwrap();
        assert!(is_within(&t.path().join("link/backup"), &data));
    }
}
