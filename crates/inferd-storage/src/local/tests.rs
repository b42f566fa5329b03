use super::*;
use crate::cache::sha256_hex;

#[test]
fn folder_digest_is_the_manifest_of_every_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
    std::fs::write(root.join("model.onnx"), b"weights").expect("write");
    std::fs::write(root.join("config.json"), b"{}").expect("write");
    std::fs::write(root.join("sub/deeper/x.txt"), b"x").expect("write");
    std::os::unix::fs::symlink(root.join("model.onnx"), root.join("link.onnx")).expect("link");
    // A link to a folder (here a loop) is not followed.
    std::os::unix::fs::symlink(root, root.join("sub/loop")).expect("link");

    let (digest, bytes) = folder_digest(root).expect("digest");
    let manifest = format!(
        "{}  config.json\n{}  link.onnx\n{}  model.onnx\n{}  sub/deeper/x.txt\n",
        sha256_hex(b"{}"),
        sha256_hex(b"weights"),
        sha256_hex(b"weights"),
        sha256_hex(b"x"),
    );
    assert_eq!(digest, sha256_hex(manifest.as_bytes()));
    assert_eq!(bytes, 2 + 7 + 7 + 1);
}

#[test]
fn hash_file_reads_past_one_buffer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.bin");
    let data: Vec<u8> = (0..(3 << 20) + 17).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(&path, &data).expect("write");
    assert_eq!(
        hash_file(&path).expect("hash"),
        (sha256_hex(&data), data.len() as u64)
    );
}
