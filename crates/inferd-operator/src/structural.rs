//! A checker of documents against a structural schema (the subset
//! [`crate::crd`] produces), with strict field validation as `kubectl apply`
//! uses by default: an unknown field is an error, not pruned.

use serde_json::Value;

/// Every place `doc` breaks `schema`, as `path: reason`; empty when it fits.
pub fn violations(schema: &Value, doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(schema, doc, "", &mut out);
    out
}

fn check(schema: &Value, doc: &Value, path: &str, out: &mut Vec<String>) {
    let at = |p: &str| if p.is_empty() { "<root>" } else { p }.to_owned();
    if doc.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) {
            out.push(format!("{}: must not be null", at(path)));
        }
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        let int = doc.as_i64().is_some() || doc.as_u64().is_some();
        if !int && !doc.is_string() {
            out.push(format!("{}: must be an integer or a string", at(path)));
        }
        return;
    }
    let type_ok = match schema.get("type").and_then(Value::as_str) {
        Some("object") => doc.is_object(),
        Some("array") => doc.is_array(),
        Some("string") => doc.is_string(),
        Some("boolean") => doc.is_boolean(),
        Some("integer") => doc.is_i64() || doc.is_u64(),
        Some("number") => doc.is_number(),
        Some(_) | None => true,
    };
    if !type_ok {
        let want = schema.get("type").and_then(Value::as_str).unwrap_or("?");
        out.push(format!("{}: must be of type {want}", at(path)));
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(doc)
    {
        out.push(format!("{}: {doc} is not one of {values:?}", at(path)));
    }
    if let Some(x) = doc.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && x < min
        {
            out.push(format!("{}: must be >= {min}", at(path)));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && x > max
        {
            out.push(format!("{}: must be <= {max}", at(path)));
        }
    }
    match doc {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !fields.contains_key(name) {
                        out.push(format!("{}: missing required field", join(path, name)));
                    }
                }
            }
            let Some(props) = props else {
                // `type: object` without properties (metadata): anything.
                return;
            };
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            for (name, value) in fields {
                match props.get(name) {
                    Some(s) => check(s, value, &join(path, name), out),
                    None if preserve => {}
                    None => out.push(format!("{}: unknown field", join(path, name))),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(s, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}
