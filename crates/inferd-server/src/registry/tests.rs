use std::fs;

use super::*;

const IRIS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/models/iris/model.onnx"
);

fn touch(path: &Path) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, b"x").expect("write");
}

#[test]
fn named_model_parses() {
    assert_eq!(
        ModelSource::parse_named("iris=examples/m.onnx").expect("parses"),
        ModelSource::Named {
            name: "iris".into(),
            path: "examples/m.onnx".into()
        }
    );
    // The path may itself hold '='.
    assert!(matches!(
        ModelSource::parse_named("a=b=c"),
        Ok(ModelSource::Named { path, .. }) if path == Path::new("b=c")
    ));
    for bad in [
        "iris",
        "=x",
        "iris=",
        "../x=y",
        "a/b=y",
        ".hidden=y",
        "sp ace=y",
    ] {
        assert!(ModelSource::parse_named(bad).is_err(), "{bad}");
    }
    assert!(check_name(&"a".repeat(128)).is_ok());
    assert!(check_name(&"a".repeat(129)).is_err());
}

#[test]
fn plans_files_folders_and_versions() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    touch(&root.join("repo/plain/model.onnx"));
    touch(&root.join("repo/versioned/1/model.onnx"));
    touch(&root.join("repo/versioned/10/other.onnx"));
    touch(&root.join("repo/versioned/2/model.onnx"));
    touch(&root.join("repo/versioned/notes/readme.txt"));
    touch(&root.join("repo/.hidden/model.onnx"));
    touch(&root.join("repo/stray-file.txt"));
    touch(&root.join("single.onnx"));

    let sources = [
        ModelSource::Repository(root.join("repo")),
        ModelSource::Named {
            name: "single".into(),
            path: root.join("single.onnx"),
        },
    ];
    let planned = plan(&sources, None).expect("plans");
    let summary: Vec<(&str, Vec<u64>)> = planned
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.versions.iter().map(|v| v.version).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("plain", vec![1]),
            ("versioned", vec![1, 2, 10]),
            ("single", vec![1])
        ]
    );
    assert_eq!(
        planned[1].versions[2].path,
        root.join("repo/versioned/10/other.onnx")
    );
}

#[test]
fn bad_layouts_are_refused_with_the_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    touch(&root.join("empty/readme.txt"));
    touch(&root.join("two/a.onnx"));
    touch(&root.join("two/b.onnx"));
    touch(&root.join("weights.bin"));
    let named = |p: &str| ModelSource::Named {
        name: "m".into(),
        path: root.join(p),
    };

    let err = plan(&[named("missing")], None).expect_err("missing");
    assert!(err.to_string().contains("missing"), "{err}");
    let err = plan(&[named("empty")], None).expect_err("no model file");
    assert!(err.to_string().contains("no model file"), "{err}");
    let err = plan(&[named("two")], None).expect_err("ambiguous");
    assert!(err.to_string().contains("several model files"), "{err}");
    let err = plan(&[named("weights.bin")], None).expect_err("unknown format");
    assert!(err.to_string().contains("pass --format"), "{err}");
    // --format makes the extension irrelevant.
    let ok = plan(&[named("weights.bin")], Some(ModelFormat::Onnx)).expect("format given");
    assert_eq!(ok[0].versions[0].format, ModelFormat::Onnx);

    let twice = [named("weights.bin"), named("weights.bin")];
    let err = plan(&twice, Some(ModelFormat::Onnx)).expect_err("duplicate");
    assert!(matches!(err, RegistryError::Duplicate(_)), "{err}");

    touch(&root.join("badrepo/bad name/model.onnx"));
    let err = plan(&[ModelSource::Repository(root.join("badrepo"))], None).expect_err("name");
    assert!(matches!(err, RegistryError::InvalidName(_)), "{err}");
}

#[test]
fn registry_states_and_versions() {
    let metrics = Metrics::new();
    let planned = plan(
        &[ModelSource::Named {
            name: "iris".into(),
            path: IRIS.into(),
        }],
        None,
    )
    .expect("plans");
    let registry = Registry::with_planned(&planned);
    assert!(registry.with("iris", |s| matches!(s, Some(ModelState::Loading))));
    assert!(registry.with("other", |s| s.is_none()));
    assert!(!registry.all_ready());
    let ready = load_model(&planned[0], &metrics).expect("loads");
    assert_eq!(ready.latest().map(|s| s.version.as_str()), Some("1"));
    assert!(ready.version("1").is_some());
    for missing in ["2", "", "01x", "-1", "99999999999999999999999"] {
        assert!(ready.version(missing).is_none(), "{missing}");
    }
    registry.set("iris", ModelState::Ready(Arc::new(ready)));
    assert!(registry.all_ready());
    assert_eq!(registry.names(), vec!["iris".to_owned()]);
    assert!(
        metrics
            .encode()
            .contains(r#"inferd_model_load_duration_seconds{model="iris",version="1"}"#)
    );
}

#[test]
fn a_model_that_cannot_load_names_itself() {
    let planned = PlannedModel {
        name: "zm".into(),
        versions: vec![PlannedVersion {
            version: 3,
            path: concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/fixtures/models/iris_zipmap/model.onnx"
            )
            .into(),
            format: ModelFormat::Onnx,
        }],
        config: None,
    };
    let err = load_model(&planned, &Metrics::new()).expect_err("ZipMap");
    let text = err.to_string();
    assert!(text.starts_with("model 'zm' version 3"), "{text}");
    let source = std::error::Error::source(&err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert!(source.contains("ZipMap"), "{source}");
}
