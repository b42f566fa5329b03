//! http(s) downloads against a small HTTP server in the test: it serves a map
//! of paths and counts the requests it gets.

use inferd_storage::{FetchRequest, Fetched, Progress, Storage, StorageError};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

fn iris() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/iris/model.onnx");
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the server answers for one path.
#[derive(Clone)]
struct Route {
    body: Vec<u8>,
    etag: Option<String>,
    /// Announce this many more bytes than the body has, then close.
    short_by: u64,
    /// Send no Content-Length: the body ends when the connection closes.
    no_length: bool,
}

impl Route {
    fn file(body: Vec<u8>, etag: &str) -> Route {
        Route {
            body,
            etag: Some(format!("\"{etag}\"")),
            short_by: 0,
            no_length: false,
        }
    }
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Route>>,
    gets: AtomicU64,
    heads: AtomicU64,
}

struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    // A client that goes away mid-answer is not the test's concern.
                    let _ = serve(socket, &state).await;
                });
            }
        });
        Server { addr, state, task }
    }

    fn route(&self, path: &str, route: Route) {
        self.state
            .routes
            .lock()
            .expect("routes")
            .insert(path.to_string(), route);
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn gets(&self) -> u64 {
        self.state.gets.load(Ordering::SeqCst)
    }

    fn requests(&self) -> u64 {
        self.gets() + self.state.heads.load(Ordering::SeqCst)
    }
}

/// Answers one request and closes the connection.
async fn serve(socket: TcpStream, state: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(socket);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 || header == "\r\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let head = match method.as_str() {
        "HEAD" => {
            state.heads.fetch_add(1, Ordering::SeqCst);
            true
        }
        "GET" => {
            state.gets.fetch_add(1, Ordering::SeqCst);
            false
        }
        _ => {
            let socket = reader.get_mut();
            socket
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?;
            return socket.shutdown().await;
        }
    };
    let route = state.routes.lock().expect("routes").get(&path).cloned();
    let socket = reader.get_mut();
    let Some(route) = route else {
        socket
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return socket.shutdown().await;
    };
    let mut answer = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nLast-Modified: Sun, 01 Nov 2026 10:00:00 GMT\r\nConnection: close\r\n".to_string();
    if !route.no_length {
        answer.push_str(&format!(
            "Content-Length: {}\r\n",
            route.body.len() as u64 + route.short_by
        ));
    }
    if let Some(etag) = &route.etag {
        answer.push_str(&format!("ETag: {etag}\r\n"));
    }
    answer.push_str("\r\n");
    socket.write_all(answer.as_bytes()).await?;
    if !head {
        socket.write_all(&route.body).await?;
    }
    socket.shutdown().await
}

/// Records what the storage reports.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    advanced: AtomicU64,
}

impl Progress for Recorder {
    fn start(&self, uri: &str, total_bytes: Option<u64>) {
        self.events
            .lock()
            .expect("events")
            .push(format!("start {uri} {total_bytes:?}"));
    }
    fn advance(&self, bytes: u64) {
        self.advanced.fetch_add(bytes, Ordering::SeqCst);
    }
    fn finish(&self, uri: &str) {
        self.events
            .lock()
            .expect("events")
            .push(format!("finish {uri}"));
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    server: Server,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
            server: Server::start().await,
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn storage(&self) -> Storage {
        Storage::new(self.cache()).with_process_env(false)
    }

    async fn fetch(
        &self,
        storage: &Storage,
        path: &str,
        sha256: Option<&str>,
    ) -> Result<Fetched, StorageError> {
        let uri = self.server.url(path);
        let req = FetchRequest {
            uri: &uri,
            base: self.dir.path(),
            sha256,
            max_bytes: None,
        };
        storage.fetch(&req).await
    }

    /// Entries under `cache/<sub>`, none when it does not exist.
    fn entries(&self, sub: &str) -> Vec<PathBuf> {
        match std::fs::read_dir(self.cache().join(sub)) {
            Ok(dir) => dir.map(|e| e.expect("entry").path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn assert_nothing_kept(&self) {
        assert_eq!(self.entries("sha256"), Vec::<PathBuf>::new(), "sha256/");
        assert_eq!(self.entries("tmp"), Vec::<PathBuf>::new(), "tmp/");
        assert_eq!(self.entries("uris"), Vec::<PathBuf>::new(), "uris/");
    }
}

#[tokio::test]
async fn downloads_verifies_and_then_serves_from_the_cache() {
    let f = Fixture::new().await;
    let model = iris();
    let digest = sha256_hex(&model);
    f.server
        .route("/models/iris.onnx", Route::file(model.clone(), "v1"));
    let recorder = Arc::new(Recorder::default());
    let storage = f.storage().with_progress(recorder.clone());

    let got = f
        .fetch(&storage, "/models/iris.onnx", Some(&digest))
        .await
        .expect("download");
    let expected_path = f.cache().join("sha256").join(&digest).join("iris.onnx");
    assert_eq!(
        got,
        Fetched {
            path: expected_path.clone(),
            sha256: digest.clone(),
            bytes: model.len() as u64,
            cached: false,
        }
    );
    assert_eq!(std::fs::read(&expected_path).expect("read"), model);
    assert_eq!(f.server.gets(), 1);
    let uri = f.server.url("/models/iris.onnx");
    assert_eq!(
        *recorder.events.lock().expect("events"),
        vec![
            format!("start {uri} Some({})", model.len()),
            format!("finish {uri}")
        ]
    );
    assert_eq!(recorder.advanced.load(Ordering::SeqCst), model.len() as u64);

    // Same URI: one HEAD finds the same ETag and size, no download.
    let again = f
        .fetch(&storage, "/models/iris.onnx", None)
        .await
        .expect("cached");
    assert_eq!(
        again,
        Fetched {
            cached: true,
            ..got.clone()
        }
    );
    assert_eq!(f.server.gets(), 1, "no second GET");
    assert_eq!(f.server.requests(), 2, "one HEAD");

    // With the expected digest already cached, not even a HEAD.
    let pinned = f
        .fetch(&storage, "/models/iris.onnx", Some(&digest))
        .await
        .expect("cached");
    assert!(pinned.cached);
    assert_eq!(f.server.requests(), 2, "no request at all");
    assert_eq!(f.entries("tmp"), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_changed_object_is_downloaded_again() {
    let f = Fixture::new().await;
    let storage = f.storage();
    f.server
        .route("/m.onnx", Route::file(b"first".to_vec(), "1"));
    let first = f.fetch(&storage, "/m.onnx", None).await.expect("first");
    f.server
        .route("/m.onnx", Route::file(b"second!".to_vec(), "2"));
    let second = f.fetch(&storage, "/m.onnx", None).await.expect("second");
    assert!(!second.cached);
    assert_eq!(second.sha256, sha256_hex(b"second!"));
    assert_ne!(first.path, second.path);
    assert_eq!(std::fs::read(&second.path).expect("read"), b"second!");
    assert_eq!(f.server.gets(), 2);
}

#[tokio::test]
async fn missing_file_is_not_found() {
    let f = Fixture::new().await;
    let e = f
        .fetch(&f.storage(), "/models/missing.onnx", None)
        .await
        .expect_err("404");
    assert_eq!(e.kind(), "not_found", "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with(&f.server.url("/models/missing.onnx")),
        "{text}"
    );
    assert!(text.contains("not found"), "{text}");
    assert_eq!(f.entries("sha256"), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn wrong_sha256_keeps_nothing() {
    let f = Fixture::new().await;
    let model = iris();
    f.server
        .route("/iris.onnx", Route::file(model.clone(), "v1"));
    let wrong = sha256_hex(b"something else");
    let e = f
        .fetch(&f.storage(), "/iris.onnx", Some(&wrong))
        .await
        .expect_err("mismatch");
    assert_eq!(e.kind(), "checksum_mismatch", "{e}");
    let text = e.to_string();
    assert!(text.contains(&wrong), "{text}");
    assert!(text.contains(&sha256_hex(&model)), "{text}");
    f.assert_nothing_kept();
}

#[tokio::test]
async fn truncated_response_is_an_error_and_keeps_nothing() {
    let f = Fixture::new().await;
    f.server.route(
        "/iris.onnx",
        Route {
            body: iris(),
            etag: None,
            short_by: 100,
            no_length: false,
        },
    );
    let recorder = Arc::new(Recorder::default());
    let e = f
        .fetch(
            &f.storage().with_progress(recorder.clone()),
            "/iris.onnx",
            None,
        )
        .await
        .expect_err("truncated");
    assert!(
        matches!(e.kind(), "remote" | "size_mismatch"),
        "{e}: {:?}",
        std::error::Error::source(&e)
    );
    f.assert_nothing_kept();
    // The progress bar was ended all the same.
    let events = recorder.events.lock().expect("events");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[1].starts_with("finish "), "{events:?}");
}

#[tokio::test]
async fn over_the_size_limit_is_refused() {
    let f = Fixture::new().await;
    f.server.route("/iris.onnx", Route::file(iris(), "v1"));
    let e = f
        .fetch(&f.storage().with_max_bytes(100), "/iris.onnx", None)
        .await
        .expect_err("too large");
    assert_eq!(e.kind(), "too_large", "{e}");
    f.assert_nothing_kept();
}

/// A body of 4 MiB, over a limit of 64 KiB.
fn big() -> Vec<u8> {
    (0..4u32 << 20).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_body_over_the_request_s_limit_is_refused_from_its_content_length() {
    let f = Fixture::new().await;
    f.server.route("/big.onnx", Route::file(big(), "v1"));
    let uri = f.server.url("/big.onnx");
    let recorder = Arc::new(Recorder::default());
    let storage = f.storage().with_progress(recorder.clone());
    // The request's own limit, under the storage's default.
    let req = FetchRequest::new(&uri, f.dir.path()).with_max_bytes(64 << 10);
    let e = storage.fetch(&req).await.expect_err("too large");
    assert_eq!(e.kind(), "too_large", "{e}");
    let text = e.to_string();
    assert!(text.starts_with(&uri), "{text}");
    assert!(
        text.contains(&format!(
            "{} bytes, over the limit of 65536 bytes",
            4u32 << 20
        )),
        "{text}"
    );
    // Refused before any of the body was read or written.
    assert_eq!(recorder.advanced.load(Ordering::SeqCst), 0);
    assert!(recorder.events.lock().expect("events").is_empty());
    f.assert_nothing_kept();
    // A request cannot raise the storage's limit.
    let small = f.storage().with_max_bytes(1000);
    let req = FetchRequest::new(&uri, f.dir.path()).with_max_bytes(u64::MAX);
    let e = small.fetch(&req).await.expect_err("too large");
    assert!(
        e.to_string().contains("over the limit of 1000 bytes"),
        "{e}"
    );
    f.assert_nothing_kept();
    // Under the limit, the same body downloads.
    let req = FetchRequest::new(&uri, f.dir.path()).with_max_bytes(4 << 20);
    let got = storage.fetch(&req).await.expect("at the limit");
    assert_eq!(got.bytes, 4 << 20);
}

#[tokio::test]
async fn a_body_without_content_length_is_refused_and_keeps_nothing() {
    let f = Fixture::new().await;
    f.server.route(
        "/big.onnx",
        Route {
            body: big(),
            etag: Some("\"v1\"".into()),
            short_by: 0,
            no_length: true,
        },
    );
    let recorder = Arc::new(Recorder::default());
    let storage = f
        .storage()
        .with_max_bytes(64 << 10)
        .with_progress(recorder.clone());
    let e = f
        .fetch(&storage, "/big.onnx", None)
        .await
        .expect_err("no length");
    // An unannounced size is never taken on trust: refused before the body.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(text.contains("Content-Length"), "{text}");
    assert!(recorder.advanced.load(Ordering::SeqCst) <= 64 << 10);
    f.assert_nothing_kept();
}

#[tokio::test]
async fn url_without_a_model_extension_is_one_file() {
    let f = Fixture::new().await;
    f.server
        .route("/files/weights", Route::file(b"w".to_vec(), "w"));
    f.server.route("/", Route::file(b"root".to_vec(), "r"));
    let got = f
        .fetch(&f.storage(), "/files/weights", None)
        .await
        .expect("weights");
    assert_eq!(
        got.path.file_name().and_then(|n| n.to_str()),
        Some("weights")
    );
    let got = f.fetch(&f.storage(), "/", None).await.expect("root URL");
    assert_eq!(got.path.file_name().and_then(|n| n.to_str()), Some("model"));
    assert_eq!(std::fs::read(&got.path).expect("read"), b"root");
    // A folder URL cannot be listed over http.
    let e = f
        .fetch(&f.storage(), "/files/", None)
        .await
        .expect_err("folder URL");
    assert_eq!(e.kind(), "bad_uri", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_of_one_uri_agree() {
    let f = Fixture::new().await;
    let model = iris();
    f.server
        .route("/iris.onnx", Route::file(model.clone(), "v1"));
    let uri = f.server.url("/iris.onnx");
    let base = f.dir.path().to_path_buf();
    let storage = f.storage();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (storage, uri, base) = (storage.clone(), uri.clone(), base.clone());
            tokio::spawn(async move { storage.fetch(&FetchRequest::new(&uri, &base)).await })
        })
        .collect();
    let mut paths = Vec::new();
    for task in tasks {
        let got = task.await.expect("join").expect("fetch");
        paths.push(got.path);
    }
    paths.dedup();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert_eq!(std::fs::read(&paths[0]).expect("read"), model);
    assert_eq!(f.entries("tmp"), Vec::<PathBuf>::new());
    // The index names that one file.
    let index: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&f.entries("uris")[0]).expect("index"))
            .expect("json");
    assert_eq!(index["uri"], uri.as_str());
}

#[tokio::test]
async fn garbage_collection_waits_for_fetches_under_way() {
    let f = Fixture::new().await;
    // A server that takes the request and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let uri = format!("http://{}/m.onnx", silent.local_addr().expect("addr"));
    let storage = f.storage();
    let fetching = {
        let (storage, base) = (storage.clone(), f.dir.path().to_path_buf());
        tokio::spawn(async move { storage.fetch(&FetchRequest::new(&uri, &base)).await })
    };
    let (_socket, _) = silent.accept().await.expect("the fetch connects");
    let keep = inferd_storage::Retain::default();
    assert_eq!(storage.try_collect_garbage(&keep).map(|r| r.is_ok()), None);
    fetching.abort();
    let _ = fetching.await;
    let collected = storage
        .try_collect_garbage(&keep)
        .expect("no fetch under way")
        .expect("collect");
    assert_eq!(collected, inferd_storage::Collected::default());
}
