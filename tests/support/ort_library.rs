//! Finds an onnxruntime shared library for the onnxruntime backend's tests:
//! `INFERD_ORT_LIBRARY`, else `ORT_DYLIB_PATH`, else the onnxruntime package
//! of the Python at `INFERD_TEST_PYTHON`. Without one, tests skip with a
//! note, except in CI (`CI` set), where they fail.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;

/// The onnxruntime library to test with, or `None` (after a note) to skip.
pub fn library() -> Option<PathBuf> {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let found = FOUND.get_or_init(|| {
        for var in ["INFERD_ORT_LIBRARY", "ORT_DYLIB_PATH"] {
            if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                return Some(PathBuf::from(path));
            }
        }
        from_python()
    });
    if found.is_none() {
        let why = "no onnxruntime library: set INFERD_ORT_LIBRARY or ORT_DYLIB_PATH to \
                   libonnxruntime.so, or INFERD_TEST_PYTHON to a Python with onnxruntime \
                   (tests/python/venv.sh makes one)";
        if std::env::var_os("CI").is_some() {
            panic!("{why}; CI must run the onnxruntime tests");
        }
        eprintln!("skipped: {why}");
    }
    found.clone()
}

/// `site-packages/onnxruntime/capi/libonnxruntime.so*` of `$INFERD_TEST_PYTHON`.
fn from_python() -> Option<PathBuf> {
    let python = std::env::var_os("INFERD_TEST_PYTHON").filter(|v| !v.is_empty())?;
    let out = Command::new(python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let package = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let mut found: Vec<PathBuf> = std::fs::read_dir(package.join("capi"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    // The fully versioned name sorts last.
    found.pop()
}
