//! The install artefacts under `deploy/` hold exactly what `inferd manifests
//! install` prints ([`install_objects`]), computed here at test time, so any
//! change to the install set fails until they follow:
//!
//! - the Helm chart `deploy/helm/inferd`: its templates rendered (by the
//!   small Helm-compatible renderer below, as no helm binary is available)
//!   with the default values equal the install set less the CRD (in
//!   `crds/`, byte for byte `inferd manifests crds`) and the Namespace
//!   (`helm install --create-namespace`); other values land where they
//!   should; its PrometheusRule template renders
//!   `deploy/monitoring/prometheus-rule.yaml` as it is;
//! - the kustomize tree `deploy/kustomize`: its resources equal the whole
//!   install set;
//! - every object of both passes the official Kubernetes schemas of two
//!   versions, strictly (the kubernetes-validate package of the test venv).
//!
//! `UPDATE_SNAPSHOTS=1` rewrites the generated files (the chart's `crds/`
//! and `templates/prometheusrule.yaml`, the kustomize resources) from their
//! sources before comparing.

#[path = "support/k8s_validate.rs"]
mod k8s_validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use inferd_operator::install::{InstallOptions, install_objects};
use serde_json::{Value, json};

use k8s_validate::{VERSIONS, validate};

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn chart_dir() -> PathBuf {
    repo_path("deploy/helm/inferd")
}

fn kustomize_dir() -> PathBuf {
    repo_path("deploy/kustomize")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn updating() -> bool {
    std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1")
}

/// The documents of a YAML stream, as Helm and kubectl split it: on `---`
/// lines, skipping documents that hold only comments or nothing.
fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.iter()
        .filter(|doc| {
            doc.lines().any(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with('#')
            })
        })
        .map(|doc| {
            serde_saphyr::from_str(doc)
                .unwrap_or_else(|e| panic!("{what}: invalid YAML ({e}):\n{doc}"))
        })
        .collect()
}

/// The install set as JSON values, as the API server receives it.
fn install_values(options: &InstallOptions) -> Vec<Value> {
    install_objects(options)
        .iter()
        .map(|o| serde_json::to_value(o).expect("install object as JSON"))
        .collect()
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {object:#}"))
}

/// `Kind namespace/name`: what identifies an object.
fn key(object: &Value) -> String {
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!(
        "{} {namespace}/{}",
        str_at(object, "/kind"),
        str_at(object, "/metadata/name")
    )
}

fn by_key(objects: &[Value], what: &str) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for object in objects {
        let k = key(object);
        assert!(
            map.insert(k.clone(), object.clone()).is_none(),
            "{what}: {k} twice"
        );
    }
    map
}

/// The same objects, in any order; a difference is shown object by object.
fn assert_same_objects(actual: &[Value], expected: &[Value], what: &str) {
    let actual = by_key(actual, what);
    let expected = by_key(expected, "the install set");
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{what}: not the same objects"
    );
    for (k, want) in &expected {
        let got = &actual[k];
        assert!(
            got == want,
            "{what}: {k} differs\n--- {what} ---\n{got:#}\n--- install set ---\n{want:#}"
        );
    }
}

fn kind(object: &Value) -> &str {
    str_at(object, "/kind")
}

/// Helm's merge of user values over the chart's: maps merge key by key,
/// anything else is replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                match base.get_mut(k) {
                    Some(b) => merge(b, v),
                    None => {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

#[path = "support/helm.rs"]
mod helm;

fn chart_values() -> Value {
    serde_saphyr::from_str(&read(&chart_dir().join("values.yaml"))).expect("values.yaml is YAML")
}

/// The objects the chart renders with values.yaml and `overrides`.
fn render_objects(overrides: &Value, namespace: &str) -> Vec<Value> {
    let mut values = chart_values();
    merge(&mut values, overrides);
    let release = helm::Release {
        name: "inferd",
        namespace,
    };
    helm::render_chart(&chart_dir(), &values, &release)
        .iter()
        .flat_map(|r| yaml_docs(&r.text, &r.template))
        .collect()
}

/// The chart's `crds/` documents and the text of each file.
fn chart_crds() -> (Vec<Value>, Vec<(PathBuf, String)>) {
    let dir = chart_dir().join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("crds entry").path())
        .collect();
    files.sort();
    let texts: Vec<(PathBuf, String)> = files.into_iter().map(|p| (p.clone(), read(&p))).collect();
    let docs = texts
        .iter()
        .flat_map(|(p, text)| yaml_docs(text, &p.display().to_string()))
        .collect();
    (docs, texts)
}

const CRD_FILE: &str = "inferenceservices.yaml";

#[test]
fn the_chart_follows_the_workspace_version() {
    let chart: Value =
        serde_saphyr::from_str(&read(&chart_dir().join("Chart.yaml"))).expect("Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "inferd");
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    let values = chart_values();
    // The default image is the appVersion's, as the operator's default.
    assert_eq!(values["image"]["tag"], "");
    assert_eq!(
        format!(
            "{}:{}",
            values["image"]["repository"].as_str().expect("repository"),
            env!("CARGO_PKG_VERSION")
        ),
        InstallOptions::default().image
    );
    assert!(values["image"].get("pullPolicy").is_none());
}

#[test]
fn the_chart_renders_the_install_set_with_its_default_values() {
    let rendered = render_objects(&json!({}), "inferd-system");
    let expected: Vec<Value> = install_values(&InstallOptions::default())
        .into_iter()
        .filter(|o| !matches!(kind(o), "CustomResourceDefinition" | "Namespace"))
        .collect();
    assert!(expected.len() >= 7, "{expected:#?}");
    assert_same_objects(&rendered, &expected, "the chart with its default values");
}

#[test]
fn the_chart_crds_are_the_printed_crd() {
    let printed = inferd_operator::crds_yaml().expect("CRD YAML");
    let path = chart_dir().join("crds").join(CRD_FILE);
    if updating() {
        std::fs::write(&path, &printed).expect("write the chart's CRD");
    }
    let (docs, texts) = chart_crds();
    assert_eq!(
        docs,
        yaml_docs(&printed, "inferd manifests crds"),
        "the chart's crds/ differ from `inferd manifests crds`; \
         run with UPDATE_SNAPSHOTS=1 to rewrite {}",
        path.display()
    );
    // One file, exactly as printed.
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].1 == printed,
        "{} is not byte for byte `inferd manifests crds`",
        path.display()
    );
    // And the install set's CRD is that one.
    let install: Vec<Value> = install_values(&InstallOptions::default())
        .into_iter()
        .filter(|o| kind(o) == "CustomResourceDefinition")
        .collect();
    assert_eq!(docs, install);
}

fn non_default_values() -> Value {
    json!({
        "image": {
            "repository": "registry.example.com/ml/inferd",
            "tag": "1.2.3",
            "pullPolicy": "Always",
        },
        "replicas": 3,
        "logFormat": "text",
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "1Gi"},
        },
        "extraLabels": {"team": "ml", "example.com/tier": "serving"},
        "metrics": {"prometheusRule": {"enabled": true}},
    })
}

const OTHER_NAMESPACE: &str = "ml-serving";

fn find<'a>(objects: &'a [Value], kind_: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == kind_ && str_at(o, "/metadata/name") == name)
        .unwrap_or_else(|| panic!("no {kind_} {name}"))
}

#[test]
fn the_chart_puts_other_values_where_they_belong() {
    let values = non_default_values();
    let (rules, rendered): (Vec<Value>, Vec<Value>) = render_objects(&values, OTHER_NAMESPACE)
        .into_iter()
        .partition(|o| kind(o) == "PrometheusRule");
    let image = "registry.example.com/ml/inferd:1.2.3";

    // The PrometheusRule as deploy/monitoring has it (no namespace: Helm
    // puts it in the release namespace).
    assert_eq!(
        rules,
        yaml_docs(&read(&repo_path(RULE_SOURCE)), RULE_SOURCE)
    );
    assert!(rules[0].pointer("/metadata/namespace").is_none());

    let deployment = find(&rendered, "Deployment", "inferd-operator");
    assert_eq!(deployment["metadata"]["namespace"], OTHER_NAMESPACE);
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], image);
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(
        container["args"],
        json!([
            "operator",
            "--image",
            image,
            "--leader-elect",
            "--metrics-addr",
            "0.0.0.0:8080"
        ])
    );
    assert_eq!(
        container["env"][0],
        json!({"name": "INFERD_LOG_FORMAT", "value": "text"})
    );
    assert_eq!(container["resources"], values["resources"]);
    // Extra labels on every object and the pods, never in the selector
    // (immutable, and what the existing pods carry).
    for object in &rendered {
        assert_eq!(
            object["metadata"]["labels"]["team"],
            "ml",
            "{}",
            key(object)
        );
        assert_eq!(object["metadata"]["labels"]["example.com/tier"], "serving");
    }
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["team"],
        "ml"
    );
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({
            "app.kubernetes.io/name": "inferd-operator",
            "app.kubernetes.io/part-of": "inferd",
        })
    );
    // The release namespace everywhere a namespace is named.
    for k in ["ServiceAccount", "Role", "RoleBinding"] {
        let object = find(&rendered, k, "inferd-operator");
        assert_eq!(object["metadata"]["namespace"], OTHER_NAMESPACE, "{k}");
    }
    for k in ["RoleBinding", "ClusterRoleBinding"] {
        let object = find(&rendered, k, "inferd-operator");
        assert_eq!(object["subjects"][0]["namespace"], OTHER_NAMESPACE, "{k}");
    }

    // All of it: the install set for that namespace, image, log format and
    // replica count, with the labels, pull policy and resources added.
    let options = InstallOptions {
        namespace: OTHER_NAMESPACE.to_owned(),
        image: image.to_owned(),
        log_format: "text".to_owned(),
        replicas: 3,
    };
    let mut expected: Vec<Value> = install_values(&options)
        .into_iter()
        .filter(|o| !matches!(kind(o), "CustomResourceDefinition" | "Namespace"))
        .collect();
    for object in &mut expected {
        let is_deployment = kind(object) == "Deployment";
        for (k, v) in values["extraLabels"].as_object().expect("labels") {
            object["metadata"]["labels"][k] = v.clone();
            if is_deployment {
                object["spec"]["template"]["metadata"]["labels"][k] = v.clone();
            }
        }
        if is_deployment {
            let container = &mut object["spec"]["template"]["spec"]["containers"][0];
            container["imagePullPolicy"] = json!("Always");
            container["resources"] = values["resources"].clone();
        }
    }
    assert_same_objects(&rendered, &expected, "the chart with other values");
}

const RULE_SOURCE: &str = "deploy/monitoring/prometheus-rule.yaml";
const RULE_TEMPLATE: &str = "prometheusrule.yaml";

/// The chart's PrometheusRule template: the rule file, guarded by
/// `metrics.prometheusRule.enabled`, with every `{{` and `}}` of its
/// Prometheus templates (`{{ $labels.service }}`) written as a string
/// literal, so that Helm prints them as they are.
fn rule_template(rule: &str) -> String {
    let mut out = format!(
        "{{{{- /*\nGenerated from {RULE_SOURCE} with its template delimiters \
         escaped; do not edit.\nTo regenerate: UPDATE_SNAPSHOTS=1 cargo test \
         -p inferd-operator --test chart\n*/ -}}}}\n\
         {{{{- if .Values.metrics.prometheusRule.enabled }}}}\n"
    );
    let mut rest = rule;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("{{") {
            out.push_str(r#"{{ "{{" }}"#);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("}}") {
            out.push_str(r#"{{ "}}" }}"#);
            rest = after;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("{{- end }}\n");
    out
}

#[test]
fn the_chart_prometheus_rule_is_the_monitoring_rule() {
    let source = read(&repo_path(RULE_SOURCE));
    let path = chart_dir().join("templates").join(RULE_TEMPLATE);
    let template = rule_template(&source);
    if updating() {
        std::fs::write(&path, &template).expect("write the rule template");
    }
    assert!(
        read(&path) == template,
        "{} is not {RULE_SOURCE} escaped; run with UPDATE_SNAPSHOTS=1 to rewrite it",
        path.display()
    );
    let rendered_text = |enabled: bool| {
        let mut values = chart_values();
        merge(
            &mut values,
            &json!({"metrics": {"prometheusRule": {"enabled": enabled}}}),
        );
        let release = helm::Release {
            name: "inferd",
            namespace: "inferd-system",
        };
        helm::render_chart(&chart_dir(), &values, &release)
            .into_iter()
            .find(|r| r.template == RULE_TEMPLATE)
            .expect("the rule template")
            .text
    };
    // On: the rule file as it is, its alerts' templates included.
    let on = rendered_text(true);
    assert_eq!(on.trim(), source.trim());
    assert!(on.contains("{{ $labels.namespace }}/{{ $labels.service }}"));
    let docs = yaml_docs(&on, RULE_TEMPLATE);
    assert_eq!(docs, yaml_docs(&source, RULE_SOURCE));
    assert_eq!(kind(&docs[0]), "PrometheusRule");
    // Off by default: nothing.
    assert_eq!(
        chart_values()["metrics"]["prometheusRule"]["enabled"],
        false
    );
    assert!(yaml_docs(&rendered_text(false), RULE_TEMPLATE).is_empty());
}

#[test]
fn the_templates_keep_to_the_documented_subset() {
    let (helpers, manifests) = helm::template_files(&chart_dir());
    let readme = read(&chart_dir().join("README.md"));
    for f in helm::FUNCTIONS.iter().chain(&helm::KEYWORDS) {
        assert!(
            readme.contains(&format!("`{f}`")),
            "README.md does not list `{f}`"
        );
    }
    let mut seen = 0;
    for (name, text) in helpers.iter().chain(&manifests) {
        for action in helm::actions(text) {
            seen += 1;
            assert!(
                !action.contains(":=") && !action.contains(" = "),
                "{name}: variables are outside the subset: {{{{ {action} }}}}"
            );
            let first = action.split_whitespace().next().unwrap_or("");
            let allowed = action.starts_with("/*")
                || action.starts_with('.')
                || action.starts_with("$.")
                || action.starts_with('"')
                || action.starts_with('`')
                || helm::FUNCTIONS.contains(&first)
                || helm::KEYWORDS.contains(&first);
            assert!(allowed, "{name}: outside the subset: {{{{ {action} }}}}");
            if first == "else" {
                assert!(
                    matches!(action.split_whitespace().nth(1), None | Some("if")),
                    "{name}: {{{{ {action} }}}}"
                );
            }
        }
    }
    assert!(seen > 20, "{seen} actions");
}

#[test]
fn the_renderer_does_what_helm_does() {
    let values = json!({
        "empty": "",
        "set": "given",
        "count": 3,
        "labels": {"team": "ml", "app": "x"},
        "resources": {"requests": {"memory": "64Mi", "cpu": "50m"}},
    });
    let render = |text: &str| helm::render_text(text, &values).expect(text);
    // What Helm 3 prints for the same templates and values.
    assert_eq!(render(r#"{{ .Values.empty | default "d" }}"#), "d");
    assert_eq!(render(r#"{{ .Values.missing | default "d" }}"#), "d");
    assert_eq!(render(r#"{{ .Values.set | default "d" }}"#), "given");
    assert_eq!(render("{{ .Values.count }}"), "3");
    assert_eq!(render("{{ .Values.set | quote }}"), r#""given""#);
    assert_eq!(render(r#"{{ quote "a\"b" }}"#), r#""a\"b""#);
    assert_eq!(render("{{ .Values.labels | toYaml }}"), "app: x\nteam: ml");
    assert_eq!(
        render("r:{{ toYaml .Values.resources | nindent 2 }}"),
        "r:\n  requests:\n    cpu: 50m\n    memory: 64Mi"
    );
    assert_eq!(render(r#"{{ "a\nb" | indent 2 }}"#), "  a\n  b");
    assert_eq!(
        render("a\n  {{- if .Values.set }} b {{ end -}}\n c"),
        "a b c"
    );
    assert_eq!(
        render("{{ with .Values.labels }}{{ .team }}{{ else }}none{{ end }}"),
        "ml"
    );
    assert_eq!(
        render(r#"{{ "{{" }} $labels.x {{ "}}" }}"#),
        "{{ $labels.x }}"
    );
    // Outside the subset: no Go builtins or other sprig functions.
    for text in [
        r#"{{ printf "%d" 1 }}"#,
        "{{ eq 1 1 }}",
        "{{ upper .Values.set }}",
    ] {
        assert!(helm::render_text(text, &values).is_err(), "{text} rendered");
    }
}

/// The kustomize resource file an install object is written to.
fn kustomize_file(kind_: &str) -> &'static str {
    match kind_ {
        "CustomResourceDefinition" => "crd.yaml",
        "Namespace" => "namespace.yaml",
        "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => {
            "rbac.yaml"
        }
        _ => "operator.yaml",
    }
}

/// Writes the kustomize resource files from the install set.
fn write_kustomize_resources() {
    let objects = install_objects(&InstallOptions::default());
    let mut files: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for object in objects {
        let value = serde_json::to_value(&object).expect("JSON");
        files
            .entry(kustomize_file(kind(&value)))
            .or_default()
            .push(object);
    }
    for (file, objects) in files {
        let yaml = inferd_operator::to_yaml(&objects).expect("YAML");
        let text = format!(
            "# Generated from `inferd manifests install`; do not edit. To regenerate:\n\
             # UPDATE_SNAPSHOTS=1 cargo test -p inferd-operator --test chart\n{yaml}"
        );
        std::fs::write(kustomize_dir().join(file), text).expect("write a kustomize resource");
    }
}

/// The resource files of `deploy/kustomize/kustomization.yaml`, which may
/// use only a `resources:` list of files in its folder, so that the objects
/// read here are those `kubectl kustomize` renders.
fn kustomize_resources() -> Vec<PathBuf> {
    let dir = kustomize_dir();
    let kustomization: Value =
        serde_saphyr::from_str(&read(&dir.join("kustomization.yaml"))).expect("kustomization");
    let fields = kustomization.as_object().expect("a map");
    for k in fields.keys() {
        assert!(
            ["apiVersion", "kind", "resources"].contains(&k.as_str()),
            "kustomization.yaml uses `{k}`, which this test does not apply; \
             extend the test before using it"
        );
    }
    assert_eq!(
        kustomization["apiVersion"],
        "kustomize.config.k8s.io/v1beta1"
    );
    assert_eq!(kustomization["kind"], "Kustomization");
    let resources = kustomization["resources"]
        .as_array()
        .expect("resources: a list");
    resources
        .iter()
        .map(|r| {
            let name = r.as_str().expect("a file name");
            assert!(
                !name.contains('/') && !name.contains("..") && name.ends_with(".yaml"),
                "{name}: resources are YAML files of deploy/kustomize"
            );
            let path = dir.join(name);
            assert!(path.is_file(), "{name} is not a file");
            path
        })
        .collect()
}

fn kustomize_objects() -> Vec<Value> {
    kustomize_resources()
        .iter()
        .flat_map(|p| yaml_docs(&read(p), &p.display().to_string()))
        .collect()
}

#[test]
fn the_kustomize_tree_holds_the_install_set() {
    if updating() {
        write_kustomize_resources();
    }
    let expected = install_values(&InstallOptions::default());
    assert_same_objects(
        &kustomize_objects(),
        &expected,
        "deploy/kustomize (UPDATE_SNAPSHOTS=1 regenerates it)",
    );
    // Every file the regeneration writes is listed, and nothing else.
    let mut listed: Vec<String> = kustomize_resources()
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    listed.sort();
    let mut written: Vec<String> = expected
        .iter()
        .map(|o| kustomize_file(kind(o)).to_owned())
        .collect();
    written.sort();
    written.dedup();
    assert_eq!(listed, written);
}

fn assert_valid(files: &[PathBuf], resources: usize) {
    for version in VERSIONS {
        let (ok, text) = validate(version, files);
        assert!(ok, "against {version}:\n{text}");
        assert_eq!(
            text.matches(" passed for resource ").count(),
            resources,
            "against {version}:\n{text}"
        );
        assert!(!text.contains("failed"), "{text}");
    }
}

#[test]
fn the_rendered_chart_is_valid_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut docs = chart_crds().0;
    docs.extend(render_objects(&json!({}), "inferd-system"));
    docs.extend(render_objects(&non_default_values(), OTHER_NAMESPACE));
    // The PrometheusRule is a custom resource of the Prometheus Operator,
    // whose schema kubernetes-validate does not have; it is left out.
    let before = docs.len();
    docs.retain(|o| kind(o) != "PrometheusRule");
    assert_eq!(
        before - docs.len(),
        1,
        "one PrometheusRule, with other values"
    );
    let files: Vec<PathBuf> = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let path = dir.path().join(format!("{i:02}.yaml"));
            std::fs::write(&path, serde_saphyr::to_string(doc).expect("YAML")).expect("write");
            path
        })
        .collect();
    // The CRD, then the install set less CRD and namespace, twice.
    let expected = 1 + 2 * (install_objects(&InstallOptions::default()).len() - 2);
    assert_eq!(files.len(), expected);
    assert_valid(&files, expected);
}

#[test]
fn the_kustomize_tree_is_valid_against_the_kubernetes_schemas() {
    let files = kustomize_resources();
    assert_valid(&files, install_objects(&InstallOptions::default()).len());
}
