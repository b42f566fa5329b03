//! Just enough of Helm to render the chart: Go templates (gtmpl) with the
//! handful of Helm and sprig functions the chart may use, and the `.Values`,
//! `.Release` and `.Chart` objects. The subset is documented in
//! `deploy/helm/inferd/README.md`; a template that steps outside it fails
//! here.
//!
//! Shared by the chart tests and the Kubernetes end-to-end suite
//! (which applies the rendering to a real API server).

#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use gtmpl::{Context, Func, FuncError, Template, Value};
use serde_json::Value as Json;

/// The functions templates may call; no Go template builtin (`eq`,
/// `printf`, ...) is among them.
pub(crate) const FUNCTIONS: [&str; 6] =
    ["include", "toYaml", "indent", "nindent", "quote", "default"];

/// The keywords templates may use. `range` is not among them: Go ranges
/// over a map in key order, gtmpl in hash order, so its output here
/// would not be Helm's. Neither are variables (`$x :=`) nor `template`
/// (`include` does its work and can be piped).
pub(crate) const KEYWORDS: [&str; 5] = ["if", "else", "with", "end", "define"];

thread_local! {
    /// The named templates (`templates/_*.tpl`), for `include`.
    static HELPERS: RefCell<String> = const { RefCell::new(String::new()) };
}

fn funcs() -> HashMap<String, Func> {
    let funcs: [(&str, Func); 6] = [
        ("include", include),
        ("toYaml", to_yaml),
        ("indent", indent),
        ("nindent", nindent),
        ("quote", quote),
        ("default", default),
    ];
    funcs.iter().map(|(k, f)| ((*k).to_owned(), *f)).collect()
}

fn fail(message: impl std::fmt::Display) -> FuncError {
    FuncError::Generic(message.to_string())
}

/// A template that knows the chart's functions (and only those) and its
/// named templates.
fn template(name: &str) -> Result<Template, String> {
    let mut t = Template::with_name(name);
    t.funcs = funcs();
    let helpers = HELPERS.with_borrow(Clone::clone);
    t.add_template("_helpers.tpl", helpers)
        .map_err(|e| format!("_helpers.tpl: {e}"))?;
    Ok(t)
}

/// Renders `text` (a template file named `name`) with `context`.
fn render(name: &str, text: &str, context: Value) -> Result<String, String> {
    let mut t = template(name)?;
    t.parse(text).map_err(|e| format!("{name}: {e}"))?;
    t.render(&Context::from(context))
        .map_err(|e| format!("{name}: {e}"))
}

/// `include NAME DATA`: the named template rendered with DATA.
fn include(args: &[Value]) -> Result<Value, FuncError> {
    let [Value::String(name), data] = args else {
        return Err(fail(format!(
            "include takes a template name and its data, not {args:?}"
        )));
    };
    let text = format!("{{{{ template {name:?} . }}}}");
    render(&format!("include {name}"), &text, data.clone())
        .map(Value::String)
        .map_err(fail)
}

/// `toYaml VALUE`: VALUE as YAML, without the final newline (Helm's).
fn to_yaml(args: &[Value]) -> Result<Value, FuncError> {
    let [value] = args else {
        return Err(FuncError::ExactlyXArgs("toYaml".to_owned(), 1));
    };
    let text = serde_saphyr::to_string(&to_json(value)?).map_err(fail)?;
    Ok(Value::String(
        text.strip_suffix('\n').unwrap_or(&text).to_owned(),
    ))
}

fn width_and_text<'a>(what: &str, args: &'a [Value]) -> Result<(usize, &'a str), FuncError> {
    match args {
        [Value::Number(n), Value::String(s)] => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(|n| (n, s.as_str()))
            .ok_or_else(|| fail(format!("{what}: the width must be a count"))),
        _ => Err(fail(format!(
            "{what} takes a width and a string, not {args:?}"
        ))),
    }
}

fn indented(width: usize, text: &str) -> String {
    let pad = " ".repeat(width);
    format!("{pad}{}", text.replace('\n', &format!("\n{pad}")))
}

/// `indent N TEXT`: every line of TEXT indented by N spaces.
fn indent(args: &[Value]) -> Result<Value, FuncError> {
    let (width, text) = width_and_text("indent", args)?;
    Ok(Value::String(indented(width, text)))
}

/// `nindent N TEXT`: a newline, then `indent N TEXT`.
fn nindent(args: &[Value]) -> Result<Value, FuncError> {
    let (width, text) = width_and_text("nindent", args)?;
    Ok(Value::String(format!("\n{}", indented(width, text))))
}

/// `quote VALUE...`: each scalar as a double-quoted string (Go's `%q`),
/// separated by spaces; nil values are left out (sprig's).
fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let mut quoted = Vec::new();
    for arg in args {
        let text = match arg {
            Value::Nil | Value::NoValue => continue,
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => return Err(fail(format!("quote takes scalars, not {arg:?}"))),
        };
        quoted.push(serde_json::to_string(&text).map_err(fail)?);
    }
    Ok(Value::String(quoted.join(" ")))
}

/// sprig's emptiness: nil, false, 0, "" and empty collections.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::NoValue | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) | Value::Object(m) => m.is_empty(),
        Value::Number(n) => {
            n.as_u64() == Some(0) || n.as_i64() == Some(0) || n.as_f64() == Some(0.0)
        }
        Value::Function(_) => false,
    }
}

/// `default DEFAULT VALUE` (usually `VALUE | default DEFAULT`): VALUE,
/// or DEFAULT when VALUE is empty.
fn default(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [fallback] => Ok(fallback.clone()),
        [fallback, given] if is_empty(given) => Ok(fallback.clone()),
        [_, given] => Ok(given.clone()),
        _ => Err(fail(format!(
            "default takes a default and a value, not {args:?}"
        ))),
    }
}

fn to_gtmpl(value: &Json) -> Value {
    match value {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (None, Some(i), _) => Value::from(i),
            (None, None, f) => Value::from(f.unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(to_gtmpl).collect()),
        Json::Object(o) => Value::Map(o.iter().map(|(k, v)| (k.clone(), to_gtmpl(v))).collect()),
    }
}

fn to_json(value: &Value) -> Result<Json, FuncError> {
    Ok(match value {
        Value::NoValue | Value::Nil => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::String(s) => Json::String(s.clone()),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Json::from(u),
            (None, Some(i), _) => Json::from(i),
            (None, None, Some(f)) => Json::from(f),
            _ => return Err(fail(format!("{n:?} is not a number"))),
        },
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(m) | Value::Object(m) => {
            // Sorted by key, as Helm's toYaml writes maps.
            let sorted: std::collections::BTreeMap<_, _> = m.iter().collect();
            let mut object = serde_json::Map::new();
            for (k, v) in sorted {
                object.insert(k.clone(), to_json(v)?);
            }
            Json::Object(object)
        }
        Value::Function(_) => return Err(fail("a function is not YAML")),
    })
}

/// What a template file rendered to.
pub(crate) struct Rendered {
    pub(crate) template: String,
    pub(crate) text: String,
}

/// The release a chart is rendered for.
pub(crate) struct Release<'a> {
    pub(crate) name: &'a str,
    pub(crate) namespace: &'a str,
}

/// Template files, as (name, text), sorted by name.
pub(crate) type Files = Vec<(String, String)>;

/// The chart's template files: the named templates (`_*.tpl`) and the
/// manifests (`*.yaml`).
pub(crate) fn template_files(chart: &Path) -> (Files, Files) {
    let dir = chart.join("templates");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("templates entry").file_name())
        .map(|n| n.into_string().expect("UTF-8 template name"))
        .collect();
    names.sort();
    let (mut helpers, mut manifests) = (Vec::new(), Vec::new());
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).expect("template");
        if name.starts_with('_') {
            assert!(name.ends_with(".tpl"), "{name}: named templates are _*.tpl");
            helpers.push((name, text));
        } else {
            assert!(
                name.ends_with(".yaml"),
                "{name}: the chart's manifests are *.yaml (no NOTES.txt or others)"
            );
            manifests.push((name, text));
        }
    }
    (helpers, manifests)
}

/// Renders every manifest template of `chart` with `values` (already
/// merged over values.yaml), as `helm template` would.
pub(crate) fn render_chart(chart: &Path, values: &Json, release: &Release<'_>) -> Vec<Rendered> {
    let meta: Json = serde_saphyr::from_str(
        &std::fs::read_to_string(chart.join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    let field = |k: &str| meta.get(k).cloned().unwrap_or(Json::Null);
    let context = serde_json::json!({
        "Values": values,
        "Release": {
            "Name": release.name,
            "Namespace": release.namespace,
            "Service": "Helm",
            "IsInstall": true,
            "IsUpgrade": false,
            "Revision": 1,
        },
        "Chart": {
            "Name": field("name"),
            "Version": field("version"),
            "AppVersion": field("appVersion"),
        },
    });
    let (helpers, manifests) = template_files(chart);
    let helpers: String = helpers.into_iter().map(|(_, text)| text).collect();
    HELPERS.with_borrow_mut(|h| *h = helpers);
    manifests
        .into_iter()
        .map(|(name, text)| {
            let out = render(&name, &text, to_gtmpl(&context))
                .unwrap_or_else(|e| panic!("rendering {name}: {e}"));
            // Helm prints a missing value as nothing; a template that
            // reads one is wrong either way.
            assert!(
                !out.contains("<no value>"),
                "{name} reads a missing value:\n{out}"
            );
            Rendered {
                template: name,
                text: out,
            }
        })
        .collect()
}

/// Renders one template text with `.Values` only and no named
/// templates.
pub(crate) fn render_text(text: &str, values: &Json) -> Result<String, String> {
    HELPERS.with_borrow_mut(String::clear);
    render(
        "text",
        text,
        to_gtmpl(&serde_json::json!({ "Values": values })),
    )
}

/// The actions (`{{ ... }}`) of a template, without delimiters, trim
/// markers and surrounding space.
pub(crate) fn actions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            panic!("unclosed action in {rest}");
        };
        let inner = after[..end].trim();
        let inner = inner.strip_prefix('-').unwrap_or(inner);
        let inner = inner.strip_suffix('-').unwrap_or(inner);
        out.push(inner.trim().to_owned());
        rest = &after[end + 2..];
    }
    out
}
