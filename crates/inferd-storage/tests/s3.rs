//! s3:// against a real S3-compatible server: moto's server mode, started by
//! each test on a free port from the Python test venv.
//!
//! The interpreter is `$INFERD_TEST_PYTHON` (`.ci/run` sets it from
//! `tests/python/venv.sh`, whose requirements pin `moto[server]`). Without
//! it, CI fails, and elsewhere the test runs `tests/python/venv.sh` itself.

#[path = "../../../tests/support/python.rs"]
mod support_python;
use inferd_storage::{FetchRequest, Fetched, Storage, StorageError};
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BUCKET: &str = "models";

/// Starts moto on a free port, makes the bucket and two folder-marker
/// objects (keys ending in `/`, which object_store cannot write), prints the
/// port, and stops when its standard input closes: when the test drops it,
/// or when the test process dies.
const MOTO: &str = r#"
import sys
from moto.server import ThreadedMotoServer
import boto3

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
s3 = boto3.client(
    "s3",
    endpoint_url=f"http://{host}:{port}",
    aws_access_key_id="test",
    aws_secret_access_key="test",
    region_name="us-east-1",
)
s3.create_bucket(Bucket=sys.argv[1])
s3.put_object(Bucket=sys.argv[1], Key="models/marked/", Body=b"")
s3.put_object(Bucket=sys.argv[1], Key="models/marked/sub/", Body=b"")
print(port, flush=True)
sys.stdin.read()
server.stop()
"#;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn iris() -> Vec<u8> {
    let path = repo("examples/models/iris/model.onnx");
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn python() -> PathBuf {
    support_python::python("the S3 tests against moto")
}

/// A moto server, killed when this goes out of scope, panics included.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> Moto {
        let python = python();
        let mut log = tempfile::tempfile().expect("temporary file");
        let mut child = Command::new(&python)
            .args(["-c", MOTO, BUCKET])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().expect("clone file"))
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            let mut text = String::new();
            log.rewind().expect("rewind");
            let _ = log.read_to_string(&mut text);
            panic!(
                "moto did not start with {} (is moto[server] from tests/python/requirements.txt \
                 installed? rerun tests/python/venv.sh):\n{text}",
                python.display()
            );
        };
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What a pod would be given: credentials and the endpoint.
    fn env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "test".to_string()),
            ("AWS_REGION".to_string(), "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL".to_string(), self.endpoint()),
        ])
    }

    async fn put(&self, key: &str, data: &[u8]) {
        inferd_storage::install_crypto_provider();
        let store = AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .expect("s3 client");
        store
            .put(&ObjectPath::from(key), data.to_vec().into())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    moto: Moto,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
            moto: Moto::start(),
        }
    }

    fn storage(&self, cache: &str, env: BTreeMap<String, String>) -> Storage {
        Storage::new(self.dir.path().join(cache))
            .with_process_env(false)
            .with_env(env)
    }

    async fn fetch(
        &self,
        storage: &Storage,
        uri: &str,
        sha256: Option<&str>,
    ) -> Result<Fetched, StorageError> {
        let req = FetchRequest {
            uri,
            base: self.dir.path(),
            sha256,
            max_bytes: None,
        };
        storage.fetch(&req).await
    }
}

/// Every file under `dir`, relative, with its content.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                out.insert(name, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn manifest_digest(files: &BTreeMap<String, Vec<u8>>) -> String {
    let manifest: String = files
        .iter()
        .map(|(name, data)| format!("{}  {name}\n", sha256_hex(data)))
        .collect();
    sha256_hex(manifest.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_object() {
    let f = Fixture::new();
    let model = iris();
    let digest = sha256_hex(&model);
    f.moto.put("iris.onnx", &model).await;
    let storage = f.storage("cache", f.moto.env());

    let got = f
        .fetch(&storage, "s3://models/iris.onnx", Some(&digest))
        .await
        .expect("download");
    assert_eq!(
        got,
        Fetched {
            path: f
                .dir
                .path()
                .join("cache/sha256")
                .join(&digest)
                .join("iris.onnx"),
            sha256: digest.clone(),
            bytes: model.len() as u64,
            cached: false,
        }
    );
    assert_eq!(std::fs::read(&got.path).expect("read"), model);

    let again = f
        .fetch(&storage, "s3://models/iris.onnx", None)
        .await
        .expect("second fetch");
    assert_eq!(
        again,
        Fetched {
            cached: true,
            ..got.clone()
        }
    );

    // A new version under the same key is noticed by its ETag.
    f.moto.put("iris.onnx", b"retrained").await;
    let changed = f
        .fetch(&storage, "s3://models/iris.onnx", None)
        .await
        .expect("changed");
    assert!(!changed.cached);
    assert_eq!(changed.sha256, sha256_hex(b"retrained"));

    let e = f
        .fetch(&storage, "s3://models/missing.onnx", None)
        .await
        .expect_err("missing key");
    assert_eq!(e.kind(), "not_found", "{e}");
    assert!(
        e.to_string()
            .starts_with("s3://models/missing.onnx: not found"),
        "{e}"
    );

    let fresh = f.storage("mismatch-cache", f.moto.env());
    let e = f
        .fetch(&fresh, "s3://models/iris.onnx", Some(&digest))
        .await
        .expect_err("the object no longer has that digest");
    assert_eq!(e.kind(), "checksum_mismatch", "{e}");
    let kept = std::fs::read_dir(f.dir.path().join("mismatch-cache/sha256"))
        .expect("sha256 dir")
        .count();
    assert_eq!(kept, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_becomes_a_folder() {
    let f = Fixture::new();
    let model = iris();
    let config = br#"{"name": "iris"}"#;
    f.moto.put("models/iris/model.onnx", &model).await;
    f.moto.put("models/iris/config.json", config).await;
    // Not under the prefix, though its name starts the same.
    f.moto.put("models/iris2/model.onnx", b"other").await;
    let storage = f.storage("cache", f.moto.env());

    let got = f
        .fetch(&storage, "s3://models/models/iris/", None)
        .await
        .expect("download");
    let files = tree(&got.path);
    let expected = BTreeMap::from([
        ("config.json".to_string(), config.to_vec()),
        ("model.onnx".to_string(), model.clone()),
    ]);
    assert_eq!(files, expected);
    let digest = manifest_digest(&expected);
    assert_eq!(
        got,
        Fetched {
            path: f.dir.path().join("cache/sha256").join(&digest),
            sha256: digest,
            bytes: (model.len() + config.len()) as u64,
            cached: false,
        }
    );

    // Without the trailing slash: the same prefix, the same cache entry
    // content, found by its digest.
    let again = f
        .fetch(&storage, "s3://models/models/iris/", None)
        .await
        .expect("second fetch");
    assert_eq!(
        again,
        Fetched {
            cached: true,
            ..got.clone()
        }
    );
    let no_slash = f
        .fetch(&storage, "s3://models/models/iris", None)
        .await
        .expect("no slash");
    assert_eq!(no_slash.path, got.path);

    // KServe's variables instead of AWS_ENDPOINT_URL.
    let kserve = f.storage(
        "kserve-cache",
        BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "test".to_string()),
            (
                "S3_ENDPOINT".to_string(),
                format!("127.0.0.1:{}", f.moto.port),
            ),
            ("S3_USE_HTTPS".to_string(), "0".to_string()),
        ]),
    );
    let via_kserve = f
        .fetch(&kserve, "s3://models/models/iris/", None)
        .await
        .expect("KServe variables");
    assert_eq!(via_kserve.sha256, got.sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_layout_markers_and_missing_prefixes() {
    let f = Fixture::new();
    f.moto.put("models/deep/x/model.onnx", b"m").await;
    f.moto.put("models/deep/x/y/notes.txt", b"n").await;
    f.moto.put("models/marked/model.onnx", b"marked").await;
    f.moto.put("models/marked/sub/extra.txt", b"e").await;
    let storage = f.storage("cache", f.moto.env());

    let got = f
        .fetch(&storage, "s3://models/models/deep", None)
        .await
        .expect("nested");
    assert_eq!(
        tree(&got.path),
        BTreeMap::from([
            ("x/model.onnx".to_string(), b"m".to_vec()),
            ("x/y/notes.txt".to_string(), b"n".to_vec()),
        ])
    );

    // `models/marked/` and `models/marked/sub/` are zero-byte folder markers.
    let got = f
        .fetch(&storage, "s3://models/models/marked/", None)
        .await
        .expect("markers");
    assert_eq!(
        tree(&got.path),
        BTreeMap::from([
            ("model.onnx".to_string(), b"marked".to_vec()),
            ("sub/extra.txt".to_string(), b"e".to_vec()),
        ])
    );

    let e = f
        .fetch(&storage, "s3://models/models/none/", None)
        .await
        .expect_err("empty prefix");
    assert_eq!(e.kind(), "not_found", "{e}");
    assert!(e.to_string().contains("no objects under the prefix"), "{e}");

    let e = f
        .fetch(&storage, "s3://no-such-bucket/model.onnx", None)
        .await
        .expect_err("missing bucket");
    assert_eq!(e.kind(), "not_found", "{e}");

    let e = f
        .fetch(
            &storage.clone().with_max_objects(1),
            "s3://models/models/deep",
            None,
        )
        .await
        .expect_err("too many objects");
    assert_eq!(e.kind(), "too_large", "{e}");
}
