//! Listings and downloads against object_store's in-memory store.

use super::*;
use crate::progress::NoProgress;
use crate::uri::{Scheme, Shape};
use object_store::memory::InMemory;

fn limits() -> Limits {
    Limits {
        max_bytes: crate::DEFAULT_MAX_BYTES,
        max_objects: crate::DEFAULT_MAX_OBJECTS,
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    cache: Cache,
    store: Arc<InMemory>,
    progress: Arc<dyn Progress>,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = Cache::new(dir.path().join("cache"));
        cache.prepare().await.expect("prepare");
        Fixture {
            dir,
            cache,
            store: Arc::new(InMemory::new()),
            progress: Arc::new(NoProgress),
        }
    }

    async fn put(&self, key: &str, data: &[u8]) {
        self.store
            .put(&ObjectPath::from(key), data.to_vec().into())
            .await
            .expect("put");
    }

    fn download<'a>(&'a self, uri: &'a str, limits: Limits) -> Download<'a> {
        Download {
            uri,
            store: self.store.clone(),
            cache: &self.cache,
            progress: &self.progress,
            limits,
        }
    }

    async fn prefix(&self, key: &str, limits: Limits) -> Result<Fetched> {
        let uri = format!("s3://bucket/{key}/");
        let remote = Remote {
            scheme: Scheme::S3,
            bucket: "bucket".into(),
            key: ObjectPath::from(key),
            shape: Shape::Prefix,
        };
        self.download(&uri, limits).prefix(&remote).await
    }

    fn digest_dirs(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("cache/sha256"))
            .expect("sha256")
            .count()
    }

    fn temp_entries(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("cache/tmp"))
            .expect("tmp")
            .count()
    }
}

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[tokio::test]
async fn prefix_keeps_layout_and_is_cached_until_it_changes() {
    let f = Fixture::new().await;
    f.put("m/iris/model.onnx", b"weights").await;
    f.put("m/iris/config.json", b"{}").await;
    f.put("m/iris/sub/notes.txt", b"n").await;
    f.put("m/iris2/model.onnx", b"not under the prefix").await;

    let got = f.prefix("m/iris", limits()).await.expect("download");
    assert!(!got.cached);
    assert_eq!(got.bytes, 7 + 2 + 1);
    assert_eq!(read(&got.path.join("model.onnx")), b"weights");
    assert_eq!(read(&got.path.join("config.json")), b"{}");
    assert_eq!(read(&got.path.join("sub/notes.txt")), b"n");
    assert!(!got.path.join("model.onnx.part").exists());
    assert_eq!(
        got.sha256,
        crate::local::folder_digest(&got.path).expect("digest").0,
        "the digest of a downloaded folder is the digest of the same folder on disk"
    );

    let again = f.prefix("m/iris", limits()).await.expect("cached");
    assert!(again.cached);
    assert_eq!(
        (again.path.clone(), again.sha256.clone()),
        (got.path.clone(), got.sha256.clone())
    );

    f.put("m/iris/config.json", b"{\"v\": 2}").await;
    let changed = f.prefix("m/iris", limits()).await.expect("changed");
    assert!(!changed.cached);
    assert_ne!(changed.sha256, got.sha256);
    assert_eq!(read(&changed.path.join("config.json")), b"{\"v\": 2}");
    assert_eq!(f.temp_entries(), 0);
}

#[tokio::test]
async fn folder_markers_are_skipped_and_file_folder_clashes_refused() {
    let f = Fixture::new().await;
    f.put("m/a", b"").await;
    f.put("m/a/model.onnx", b"x").await;
    let got = f.prefix("m", limits()).await.expect("marker skipped");
    assert!(got.path.join("a/model.onnx").is_file());

    f.put("m/a", b"not a marker").await;
    let e = f.prefix("m", limits()).await.expect_err("clash");
    assert_eq!(e.kind(), "unsafe_name");
    assert!(e.to_string().contains("both a file and a folder"), "{e}");
}

#[tokio::test]
async fn limits_are_checked_before_downloading() {
    let f = Fixture::new().await;
    for i in 0..3 {
        f.put(&format!("m/{i}.onnx"), b"12345").await;
    }
    let e = f
        .prefix(
            "m",
            Limits {
                max_objects: 2,
                ..limits()
            },
        )
        .await
        .expect_err("too many objects");
    assert_eq!(e.kind(), "too_large");
    assert!(e.to_string().contains("more than 2 objects"), "{e}");

    let e = f
        .prefix(
            "m",
            Limits {
                max_bytes: 14,
                ..limits()
            },
        )
        .await
        .expect_err("too many bytes");
    assert_eq!(e.kind(), "too_large");
    assert!(e.to_string().contains("15 bytes"), "{e}");
    assert_eq!(f.digest_dirs(), 0);
    assert_eq!(f.temp_entries(), 0);
}

#[tokio::test]
async fn empty_prefix_is_not_found() {
    let f = Fixture::new().await;
    f.put("other/model.onnx", b"x").await;
    let e = f.prefix("m", limits()).await.expect_err("empty");
    assert_eq!(e.kind(), "not_found");
}

#[tokio::test]
async fn single_object_mismatch_keeps_nothing() {
    let f = Fixture::new().await;
    f.put("m/model.onnx", b"weights").await;
    let uri = "s3://bucket/m/model.onnx";
    let remote = Remote {
        scheme: Scheme::S3,
        bucket: "bucket".into(),
        key: ObjectPath::from("m/model.onnx"),
        shape: Shape::Object {
            name: "model.onnx".into(),
        },
    };
    let wrong = crate::cache::sha256_hex(b"other");
    let e = f
        .download(uri, limits())
        .object(&remote, "model.onnx", Some(&wrong))
        .await
        .expect_err("mismatch");
    assert_eq!(e.kind(), "checksum_mismatch");
    assert_eq!(f.digest_dirs(), 0);
    assert_eq!(f.temp_entries(), 0);
    assert!(f.cache.lookup(uri).await.is_none());

    let got = f
        .download(uri, limits())
        .object(&remote, "model.onnx", None)
        .await
        .expect("download");
    assert_eq!(read(&got.path), b"weights");
    assert_eq!(got.sha256, crate::cache::sha256_hex(b"weights"));
}

#[test]
fn relative_names() {
    assert_eq!(relative_name("", "a/b").as_deref(), Some("a/b"));
    assert_eq!(
        relative_name("m/iris", "m/iris/x.onnx").as_deref(),
        Some("x.onnx")
    );
    assert_eq!(relative_name("m/iris", "m/iris").as_deref(), Some(""));
    assert_eq!(relative_name("m/iris", "m/iris2/x"), None);
    assert_eq!(relative_name("m/iris", "other/x"), None);
}

#[tokio::test]
async fn a_body_longer_than_announced_stops_at_the_limit_while_streaming() {
    let f = Fixture::new().await;
    f.put("m.onnx", &[7u8; 32]).await;
    // The store announces 5 bytes; the body goes on past the limit.
    let mut result = f.store.get(&ObjectPath::from("m.onnx")).await.expect("get");
    result.meta.size = 5;
    let limits = Limits {
        max_bytes: 10,
        ..limits()
    };
    let download = f.download("s3://bucket/m.onnx", limits);
    let temp = f.cache.temp_file().expect("temp");
    let (file, temp_path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let progress = Reporting::start(&f.progress, "s3://bucket/m.onnx", None);
    let e = download
        .copy(result, "m.onnx", &mut file, &temp_path, &progress, 10)
        .await
        .expect_err("over the limit");
    assert_eq!(e.kind(), "too_large", "{e}");
    assert!(e.to_string().contains("over the limit of 10 bytes"), "{e}");
    // At most the limit was written.
    assert!(file.metadata().await.expect("meta").len() <= 10);
    drop((file, progress, temp_path));
    assert_eq!(f.temp_entries(), 0);
}
