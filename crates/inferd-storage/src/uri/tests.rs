use super::*;

fn remote(uri: &str) -> Remote {
    match parse(uri, Path::new("/base")) {
        Ok(Source::Remote(remote)) => remote,
        other => panic!("{uri}: expected a remote source, got {other:?}"),
    }
}

fn bad(uri: &str) -> StorageError {
    match parse(uri, Path::new("/base")) {
        Err(e) => e,
        Ok(source) => panic!("{uri}: expected an error, got {source:?}"),
    }
}

#[test]
fn plain_paths_are_local_and_relative_ones_join_the_base() {
    let base = Path::new("/srv/models");
    assert_eq!(
        parse("iris/model.onnx", base).ok(),
        Some(Source::Local(PathBuf::from("/srv/models/iris/model.onnx")))
    );
    assert_eq!(
        parse("/abs/model.onnx", base).ok(),
        Some(Source::Local(PathBuf::from("/abs/model.onnx")))
    );
    // Something that only looks like a scheme is a path.
    assert_eq!(
        parse("./x://y", base).ok(),
        Some(Source::Local(PathBuf::from("/srv/models/./x://y")))
    );
}

#[test]
fn file_uris_absolute_localhost_and_relative() {
    let base = Path::new("/srv");
    assert_eq!(
        parse("file:///mnt/models/iris", base).ok(),
        Some(Source::Local(PathBuf::from("/mnt/models/iris")))
    );
    assert_eq!(
        parse("file://localhost/mnt/m.onnx", base).ok(),
        Some(Source::Local(PathBuf::from("/mnt/m.onnx")))
    );
    assert_eq!(
        parse("file://models/iris", base).ok(),
        Some(Source::Local(PathBuf::from("/srv/models/iris")))
    );
    assert_eq!(
        parse("FILE://models", base).ok(),
        Some(Source::Local(PathBuf::from("/srv/models")))
    );
    assert_eq!(bad("file://").kind(), "bad_uri");
}

#[test]
fn s3_object_and_prefix() {
    let r = remote("s3://bucket/models/iris.onnx");
    assert_eq!(r.scheme, Scheme::S3);
    assert_eq!(r.bucket, "bucket");
    assert_eq!(r.key.as_ref(), "models/iris.onnx");
    assert_eq!(
        r.shape,
        Shape::Object {
            name: "iris.onnx".into()
        }
    );

    for uri in ["s3://bucket/models/iris/", "s3://bucket/models/iris"] {
        let r = remote(uri);
        assert_eq!(r.key.as_ref(), "models/iris", "{uri}");
        assert_eq!(r.shape, Shape::Prefix, "{uri}");
    }
    let whole = remote("s3://bucket");
    assert_eq!(whole.key.as_ref(), "");
    assert_eq!(whole.shape, Shape::Prefix);
}

#[test]
fn every_model_extension_names_one_object() {
    for ext in MODEL_EXTENSIONS {
        let r = remote(&format!("gs://b/dir/m.{ext}"));
        assert_eq!(
            r.shape,
            Shape::Object {
                name: format!("m.{ext}")
            }
        );
    }
    assert!(has_model_extension("MODEL.ONNX"));
    assert!(!has_model_extension(".onnx"));
    assert!(!has_model_extension("onnx"));
    assert!(!has_model_extension("weights.bin"));
    // An object with a model extension in a "folder" name is still a prefix.
    assert_eq!(remote("s3://b/v1.onnx/").shape, Shape::Prefix);
}

#[test]
fn gs_and_az_parse() {
    let g = remote("gs://my-bucket/a/b");
    assert_eq!((g.scheme, g.bucket.as_str()), (Scheme::Gcs, "my-bucket"));
    let a = remote("az://container/x/model.bst");
    assert_eq!((a.scheme, a.bucket.as_str()), (Scheme::Azure, "container"));
    assert_eq!(a.key.as_ref(), "x/model.bst");
}

#[test]
fn percent_escapes_in_keys_are_decoded() {
    let r = remote("s3://b/my%20models/m.onnx");
    assert_eq!(r.key.as_ref(), "my models/m.onnx");
}

#[test]
fn http_is_always_one_file() {
    let r = remote("http://127.0.0.1:8080/files/iris.onnx");
    assert_eq!(r.scheme, Scheme::Http);
    assert_eq!(r.bucket, "http://127.0.0.1:8080");
    assert_eq!(r.key.as_ref(), "files/iris.onnx");
    assert_eq!(
        r.shape,
        Shape::Object {
            name: "iris.onnx".into()
        }
    );
    assert_eq!(
        remote("https://example.com/weights").shape,
        Shape::Object {
            name: "weights".into()
        }
    );
    for root in ["https://example.com", "https://example.com/"] {
        assert_eq!(
            remote(root).shape,
            Shape::Object {
                name: DEFAULT_HTTP_NAME.into()
            }
        );
    }
    let e = bad("https://example.com/dir/");
    assert_eq!(e.kind(), "bad_uri");
    assert!(e.to_string().contains("cannot be listed"), "{e}");
}

#[test]
fn bad_and_unsupported_uris() {
    assert_eq!(bad("").kind(), "bad_uri");
    assert_eq!(bad("s3:///key.onnx").kind(), "bad_uri");
    assert_eq!(bad("s3://bucket:9000/key.onnx").kind(), "bad_uri");
    assert_eq!(bad("https://user:pw@host/m.onnx").kind(), "bad_uri");
    assert_eq!(bad("https://host/m.onnx?sig=1").kind(), "bad_uri");
    assert_eq!(bad("s3://bucket/a//b.onnx").kind(), "bad_uri");
    let e = bad("pvc://claim/model");
    assert_eq!(e.kind(), "unsupported_scheme");
    let text = e.to_string();
    assert!(text.starts_with("pvc://claim/model: "), "{text}");
    assert!(text.contains("`pvc://`"), "{text}");
    assert_eq!(bad("HDFS://x/y").kind(), "unsupported_scheme");
}

#[test]
fn safe_relative_refuses_traversal() {
    assert_eq!(
        safe_relative("a/b/model.onnx"),
        Ok(PathBuf::from("a/b/model.onnx"))
    );
    assert_eq!(safe_relative("..."), Ok(PathBuf::from("...")));
    for hostile in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/./b",
        "..",
        ".",
        "a//b",
        "a/",
        "a\\..\\b",
        "a\0b",
    ] {
        assert!(safe_relative(hostile).is_err(), "{hostile:?} was accepted");
    }
}
