//! Copying a fetched model to a fixed folder, as an init container does
//! before the server starts (`inferd fetch --dest DIR`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::StorageError;

/// Copies `fetched` (a model file or folder) into the folder `dest`: a file
/// keeps its name inside `dest`, a folder's content becomes `dest`'s. The
/// copy is assembled beside `dest` and renamed into place, so `dest` either
/// does not exist or holds the whole model. An existing `dest` is replaced.
pub fn place(uri: &str, fetched: &Path, dest: &Path) -> Result<PathBuf, StorageError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| StorageError::Io {
            uri: uri.to_owned(),
            path,
            source,
        }
    };
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_owned());
    let staging = parent.join(format!(".{name}.{}.partial", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let result = (|| {
        fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        if fetched.is_dir() {
            copy_tree(fetched, &staging, &io_err)?;
        } else {
            let file = fetched.file_name().unwrap_or(std::ffi::OsStr::new("model"));
            let to = staging.join(file);
            fs::copy(fetched, &to).map_err(io_err(&to))?;
        }
        if dest.exists() {
            fs::remove_dir_all(dest).map_err(io_err(dest))?;
        }
        fs::rename(&staging, dest).map_err(io_err(dest))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result.map(|()| dest.to_path_buf())
}

fn copy_tree<F, E>(from: &Path, to: &Path, io_err: &F) -> Result<(), StorageError>
where
    F: Fn(&Path) -> E,
    E: FnOnce(io::Error) -> StorageError,
{
    for entry in fs::read_dir(from).map_err(io_err(from))? {
        let entry = entry.map_err(io_err(from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(io_err(&source))?;
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(io_err(&target))?;
            copy_tree(&source, &target, io_err)?;
        } else if kind.is_file() {
            fs::copy(&source, &target).map_err(io_err(&target))?;
        }
        // Symbolic links are not followed: a model folder holds files.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_lands_inside_dest_and_a_folder_becomes_dest() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("model.onnx");
        fs::write(&file, b"onnx").expect("write");
        let dest = dir.path().join("out/iris");
        place("u", &file, &dest).expect("place file");
        assert_eq!(fs::read(dest.join("model.onnx")).expect("read"), b"onnx");

        let folder = dir.path().join("src");
        fs::create_dir_all(folder.join("1")).expect("mkdir");
        fs::write(folder.join("1/model.onnx"), b"v1").expect("write");
        fs::write(folder.join("config.json"), b"{}").expect("write");
        // Replaces what was there.
        place("u", &folder, &dest).expect("place folder");
        assert_eq!(fs::read(dest.join("1/model.onnx")).expect("read"), b"v1");
        assert_eq!(fs::read(dest.join("config.json")).expect("read"), b"{}");
        assert!(!dest.join("model.onnx").exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("out"))
            .expect("read")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_missing_source_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let dest = dir.path().join("iris");
        let err =
            place("s3://b/m.onnx", &dir.path().join("absent.onnx"), &dest).expect_err("missing");
        assert!(err.to_string().starts_with("s3://b/m.onnx"), "{err}");
        assert!(!dest.exists());
    }
}
