//! The daemon's source stays in reviewable pieces: no file over 800 lines, and the storage
//! service never reaches into the instance service (the instance service calls storage, not the
//! other way round), so the two cannot form an import cycle.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn all_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 20, "found only {} sources", files.len());
    files
}

#[test]
fn no_source_file_is_over_800_lines() {
    let long: Vec<String> = all_sources()
        .iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > 800).then(|| format!("{} ({n} lines)", p.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by sub-resource (one impl per file): {long:?}"
    );
}

#[test]
fn storage_never_imports_the_instance_service() {
    let storage = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/storage");
    let offending: Vec<String> = all_sources()
        .iter()
        .filter(|p| p.starts_with(&storage))
        .filter(|p| {
            let s = std::fs::read_to_string(p).unwrap();
            s.contains("crate::instance") || s.contains("InstanceService")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offending.is_empty(),
        "storage must be told about instances, not look them up: {offending:?}"
    );
}
