//! The Python interpreter of the test venv (tritonclient, the KServe SDK,
//! onnxruntime, moto): `$INFERD_TEST_PYTHON`, which `.ci/run` sets from
//! `tests/python/venv.sh`. Without it, CI fails, and elsewhere the venv is
//! made (or reused) by running `tests/python/venv.sh`, so `cargo test
//! --workspace` on a fresh machine runs these tests too.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The interpreter; `what` names the tests that need it, for the message.
pub fn python(what: &str) -> PathBuf {
    if let Some(python) = std::env::var_os("INFERD_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "INFERD_TEST_PYTHON is not set: CI must run {what} \
         (export INFERD_TEST_PYTHON=$(tests/python/venv.sh))"
    );
    let venv_sh = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/venv.sh");
    let out = Command::new("bash")
        .arg(venv_sh)
        .stderr(Stdio::inherit())
        .output()
        .expect("run bash tests/python/venv.sh");
    assert!(
        out.status.success(),
        "tests/python/venv.sh failed ({}); its message is above. \
         Set INFERD_TEST_PYTHON to a Python with tests/python/requirements.txt installed instead",
        out.status
    );
    let path = String::from_utf8(out.stdout).expect("venv.sh prints a UTF-8 path");
    PathBuf::from(path.trim())
}
