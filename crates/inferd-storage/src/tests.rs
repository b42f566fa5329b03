//! The public API on local paths, and the checks made before any request.

use super::*;
use crate::cache::sha256_hex;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("models/iris")).expect("mkdir");
        std::fs::write(dir.path().join("models/iris/model.onnx"), b"onnx bytes").expect("write");
        std::fs::write(dir.path().join("models/iris/config.json"), b"{}").expect("write");
        Fixture { dir }
    }

    fn base(&self) -> &Path {
        self.dir.path()
    }

    fn storage(&self) -> Storage {
        Storage::new(self.dir.path().join("cache")).with_process_env(false)
    }

    async fn fetch(&self, uri: &str, sha256: Option<&str>) -> Result<Fetched> {
        let req = FetchRequest {
            uri,
            base: self.base(),
            sha256,
            max_bytes: None,
        };
        self.storage().fetch(&req).await
    }
}

#[tokio::test]
async fn local_file_is_used_in_place_and_verified() {
    let f = Fixture::new();
    let digest = sha256_hex(b"onnx bytes");
    let path = f.base().join("models/iris/model.onnx");
    for uri in [
        "models/iris/model.onnx".to_string(),
        "file://models/iris/model.onnx".to_string(),
        path.display().to_string(),
        format!("file://{}", path.display()),
    ] {
        let got = f.fetch(&uri, None).await.expect(&uri);
        assert_eq!(
            got,
            Fetched {
                path: path.clone(),
                sha256: digest.clone(),
                bytes: 10,
                cached: true,
            },
            "{uri}"
        );
    }
    let upper = digest.to_uppercase();
    let got = f
        .fetch("models/iris/model.onnx", Some(&upper))
        .await
        .expect("matching sha256");
    assert_eq!(got.sha256, digest);
    // Nothing was copied.
    assert!(!f.base().join("cache").exists());
}

#[tokio::test]
async fn local_sha_mismatch_names_both_digests() {
    let f = Fixture::new();
    let wrong = "0".repeat(64);
    let e = f
        .fetch("models/iris/model.onnx", Some(&wrong))
        .await
        .expect_err("a wrong sha256 was accepted");
    assert_eq!(e.kind(), "checksum_mismatch");
    let text = e.to_string();
    assert!(
        text.starts_with("models/iris/model.onnx: checksum mismatch"),
        "{text}"
    );
    assert!(text.contains(&wrong), "{text}");
    assert!(text.contains(&sha256_hex(b"onnx bytes")), "{text}");
}

#[tokio::test]
async fn local_folder_has_a_manifest_digest_and_refuses_a_sha256() {
    let f = Fixture::new();
    let got = f.fetch("file://models/iris", None).await.expect("folder");
    assert_eq!(got.path, f.base().join("models/iris"));
    assert!(got.cached);
    assert_eq!(got.bytes, 12);
    let manifest = format!(
        "{}  config.json\n{}  model.onnx\n",
        sha256_hex(b"{}"),
        sha256_hex(b"onnx bytes")
    );
    assert_eq!(got.sha256, sha256_hex(manifest.as_bytes()));

    let e = f
        .fetch("models/iris", Some(&sha256_hex(b"x")))
        .await
        .expect_err("a sha256 on a folder was accepted");
    assert_eq!(e.kind(), "checksum_on_folder");
    assert!(e.to_string().contains("single file"), "{e}");
}

#[tokio::test]
async fn missing_local_path_is_not_found() {
    let f = Fixture::new();
    for uri in ["models/nope.onnx", "file:///nonexistent/inferd/model.onnx"] {
        let e = f.fetch(uri, None).await.expect_err(uri);
        assert_eq!(e.kind(), "not_found", "{uri}");
        let text = e.to_string();
        assert!(text.starts_with(uri), "{text}");
        assert!(text.contains("not found"), "{text}");
    }
}

#[tokio::test]
async fn malformed_expected_sha256_is_refused() {
    let f = Fixture::new();
    let e = f
        .fetch("models/iris/model.onnx", Some("abc"))
        .await
        .expect_err("bad sha256");
    assert_eq!(e.kind(), "bad_checksum");
}

#[tokio::test]
async fn remote_prefix_with_sha256_fails_before_any_request() {
    let f = Fixture::new();
    let e = f
        .fetch("s3://bucket/models/iris/", Some(&sha256_hex(b"x")))
        .await
        .expect_err("sha256 on a prefix");
    assert_eq!(e.kind(), "checksum_on_folder");
}

#[tokio::test]
async fn pinned_sha256_already_cached_needs_no_request() {
    let f = Fixture::new();
    let digest = sha256_hex(b"cached model");
    let dir = f.base().join("cache/sha256").join(&digest);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("m.onnx"), b"cached model").expect("write");
    // The endpoint does not exist: any request would fail.
    let storage = f.storage().with_env(BTreeMap::from([(
        "AWS_ENDPOINT_URL".to_string(),
        "http://127.0.0.1:1".to_string(),
    )]));
    let req = FetchRequest::new("s3://bucket/any/m.onnx", f.base()).with_sha256(&digest);
    let got = storage.fetch(&req).await.expect("cache hit");
    assert_eq!(
        got,
        Fetched {
            path: dir.join("m.onnx"),
            sha256: digest,
            bytes: 12,
            cached: true,
        }
    );
}

#[tokio::test]
async fn unsupported_scheme_and_bad_uri() {
    let f = Fixture::new();
    let e = f
        .fetch("hdfs://cluster/model", None)
        .await
        .expect_err("hdfs");
    assert_eq!(e.kind(), "unsupported_scheme");
    let e = f.fetch("", None).await.expect_err("empty");
    assert_eq!(e.kind(), "bad_uri");
}

#[test]
fn debug_hides_env_values() {
    let storage = Storage::new("/tmp/cache").with_env(BTreeMap::from([(
        "AWS_SECRET_ACCESS_KEY".to_string(),
        "hunter2".to_string(),
    )]));
    let text = format!("{storage:?}");
    assert!(text.contains("AWS_SECRET_ACCESS_KEY"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
