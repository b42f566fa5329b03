use super::*;

fn record(name: &str, size: u64, etag: Option<&str>, modified: Option<&str>) -> ObjectRecord {
    ObjectRecord {
        name: name.into(),
        size,
        sha256: None,
        etag: etag.map(Into::into),
        last_modified: modified.map(Into::into),
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).expect("metadata");
    meta.permissions().mode() & 0o777
}

#[test]
fn hex_and_digests() {
    assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // The manifest digest does not depend on the order files were seen in,
    // and is sha256sum's output hashed.
    let a = ("b/x".to_string(), sha256_hex(b"x"));
    let b = ("a".to_string(), sha256_hex(b"y"));
    let one = manifest_digest(&[a.clone(), b.clone()]);
    assert_eq!(one, manifest_digest(&[b.clone(), a.clone()]));
    let text = format!("{}  a\n{}  b/x\n", b.1, a.1);
    assert_eq!(one, sha256_hex(text.as_bytes()));
}

#[test]
fn expected_digests_are_normalized() {
    let lower = sha256_hex(b"abc");
    assert_eq!(normalize_sha256(&lower), Some(lower.clone()));
    assert_eq!(normalize_sha256(&lower.to_uppercase()), Some(lower.clone()));
    assert_eq!(
        normalize_sha256(&format!("sha256:{lower}")),
        Some(lower.clone())
    );
    assert_eq!(normalize_sha256("abc"), None);
    assert_eq!(normalize_sha256(&format!("{lower}0")), None);
    assert_eq!(normalize_sha256(&"g".repeat(64)), None);
}

#[test]
fn unchanged_needs_a_validator() {
    let etag = [record("m.onnx", 10, Some("\"e1\""), None)];
    assert!(unchanged(&etag, &etag));
    assert!(!unchanged(
        &etag,
        &[record("m.onnx", 10, Some("\"e2\""), None)]
    ));
    assert!(!unchanged(
        &etag,
        &[record("m.onnx", 11, Some("\"e1\""), None)]
    ));
    assert!(!unchanged(
        &etag,
        &[record("n.onnx", 10, Some("\"e1\""), None)]
    ));
    assert!(!unchanged(&etag, &[]));

    let time = [record("m", 1, None, Some("2026-01-01T00:00:00+00:00"))];
    assert!(unchanged(&time, &time));
    assert!(!unchanged(
        &time,
        &[record("m", 1, None, Some("2026-01-02T00:00:00+00:00"))]
    ));
    // Size alone proves nothing.
    let bare = [record("m", 1, None, None)];
    assert!(!unchanged(&bare, &bare));
    // Order does not matter.
    let two = [
        record("a", 1, Some("1"), None),
        record("b", 2, Some("2"), None),
    ];
    let swapped = [two[1].clone(), two[0].clone()];
    assert!(unchanged(&two, &swapped));
}

#[tokio::test]
async fn index_round_trip_and_missing_content() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::new(dir.path().join("cache"));
    cache.prepare().await.expect("prepare");
    let uri = "s3://bucket/m.onnx";
    let digest = sha256_hex(b"model");
    let entry = IndexEntry {
        uri: uri.into(),
        sha256: digest.clone(),
        bytes: 5,
        file_name: Some("m.onnx".into()),
        objects: vec![record("m.onnx", 5, Some("e"), None)],
    };
    cache.record(&entry).await.expect("record");
    // The content is not in the cache: the entry is not used.
    assert!(cache.lookup(uri).await.is_none());

    let mut temp = cache.temp_file().expect("temp file");
    std::io::Write::write_all(&mut temp, b"model").expect("write");
    let path = cache
        .commit_file(temp.into_temp_path(), &digest, "m.onnx")
        .await
        .expect("commit");
    assert_eq!(
        path,
        dir.path().join("cache/sha256").join(&digest).join("m.onnx")
    );
    assert_eq!(
        mode(&path),
        0o644,
        "readable by a server running as another user"
    );
    let (found, cached) = cache.lookup(uri).await.expect("entry");
    assert_eq!(found, entry);
    assert_eq!(cached, path);
    // Another URI has no entry; nothing is left under tmp/.
    assert!(cache.lookup("s3://bucket/other.onnx").await.is_none());
    let left = std::fs::read_dir(dir.path().join("cache/tmp"))
        .expect("tmp")
        .count();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn corrupt_or_foreign_index_entries_are_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::new(dir.path().to_path_buf());
    cache.prepare().await.expect("prepare");
    let uri = "gs://b/m.onnx";
    std::fs::write(cache.index_path(uri), b"{not json").expect("write");
    assert!(cache.lookup(uri).await.is_none());

    // An entry that names a path outside the cache is not followed.
    let digest = sha256_hex(b"x");
    std::fs::create_dir_all(cache.digest_dir(&digest)).expect("mkdir");
    let entry = IndexEntry {
        uri: uri.into(),
        sha256: digest,
        bytes: 1,
        file_name: Some("../../../etc/passwd".into()),
        objects: vec![],
    };
    cache.record(&entry).await.expect("record");
    assert!(cache.lookup(uri).await.is_none());
}

#[tokio::test]
async fn commit_dir_keeps_an_existing_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::new(dir.path().to_path_buf());
    cache.prepare().await.expect("prepare");
    let digest = sha256_hex(b"folder");
    for _ in 0..2 {
        let temp = cache.temp_dir().expect("temp dir");
        std::fs::write(temp.path().join("model.onnx"), b"m").expect("write");
        let path = cache.commit_dir(temp, &digest).await.expect("commit");
        assert_eq!(path, cache.digest_dir(&digest));
        assert_eq!(mode(&path), 0o755);
        assert_eq!(std::fs::read(path.join("model.onnx")).expect("read"), b"m");
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
}

/// Commits `body` as `name` and, with a URI, records it in the index.
async fn cached(cache: &Cache, uri: Option<&str>, name: &str, body: &[u8]) -> String {
    let temp = cache.temp_file().expect("temp");
    std::fs::write(temp.path(), body).expect("write");
    let digest = sha256_hex(body);
    cache
        .commit_file(temp.into_temp_path(), &digest, name)
        .await
        .expect("commit");
    if let Some(uri) = uri {
        cache
            .record(&IndexEntry {
                uri: uri.to_string(),
                sha256: digest.clone(),
                bytes: body.len() as u64,
                file_name: Some(name.to_string()),
                objects: vec![record(name, body.len() as u64, Some("e"), None)],
            })
            .await
            .expect("record");
    }
    digest
}

#[tokio::test]
async fn garbage_collection_keeps_what_is_named_and_removes_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::new(dir.path().join("cache"));
    cache.prepare().await.expect("prepare");
    let kept = cached(&cache, Some("http://h/kept.onnx"), "kept.onnx", b"kept").await;
    let old = cached(&cache, Some("http://h/old.onnx"), "old.onnx", b"old model").await;
    let pinned = cached(&cache, None, "pinned.onnx", b"pinned").await;
    let stray = cached(&cache, None, "stray.onnx", b"stray").await;
    // An interrupted download.
    std::fs::write(cache.tmp().join(".part-x"), b"partial").expect("write");
    let mut keep = crate::Retain::default();
    keep.keep("http://h/kept.onnx", None);
    keep.keep(
        "http://h/pinned.onnx",
        Some(&format!("sha256:{}", pinned.to_uppercase())),
    );
    let collected = cache.collect_garbage(&keep).expect("collect");
    assert_eq!(
        collected,
        crate::Collected {
            entries: 2,
            bytes: (b"old model".len() + b"stray".len()) as u64,
        }
    );
    assert!(cache.digest_dir(&kept).join("kept.onnx").is_file());
    assert!(cache.digest_dir(&pinned).join("pinned.onnx").is_file());
    assert!(!cache.digest_dir(&old).exists());
    assert!(!cache.digest_dir(&stray).exists());
    assert!(cache.lookup("http://h/kept.onnx").await.is_some());
    assert!(!cache.index_path("http://h/old.onnx").exists());
    assert_eq!(std::fs::read_dir(cache.tmp()).expect("tmp").count(), 0);
    // Nothing more to remove the second time; a missing cache is empty.
    assert_eq!(
        cache.collect_garbage(&keep).expect("again"),
        crate::Collected::default()
    );
    let none = Cache::new(dir.path().join("absent"));
    assert_eq!(
        none.collect_garbage(&keep).expect("absent"),
        crate::Collected::default()
    );
}
