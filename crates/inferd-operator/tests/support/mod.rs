//! Snapshot files: `tests/snapshots/NAME`, compared byte for byte. A missing
//! or different snapshot fails; `UPDATE_SNAPSHOTS=1` writes them instead.

use std::path::PathBuf;

pub(crate) fn assert_snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => panic!(
            "snapshot {} cannot be read ({e}); run with UPDATE_SNAPSHOTS=1 to write it",
            path.display()
        ),
    };
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the generated output from line {}; \
             run with UPDATE_SNAPSHOTS=1 to accept it\n--- generated ---\n{actual}",
            path.display(),
            first + 1
        );
    }
}

pub(crate) fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}
