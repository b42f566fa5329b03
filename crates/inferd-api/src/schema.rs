//! JSON schemas (feature `schema`) for the types whose serde form is written
//! by hand, so a CRD can be generated from the resource types.
//!
//! Both accept an integer or a string, which Kubernetes expresses as
//! `x-kubernetes-int-or-string` (as it does for its own `Quantity`). A YAML
//! float such as `cpu: 0.5` is therefore refused by the API server; write it
//! as a string (`"0.5"` or `500m`), as `kubectl` users do for `IntOrString`.
//!
//! [`Affinity`] is passed through as written, so its schema is an object whose
//! fields the API server keeps (`x-kubernetes-preserve-unknown-fields`) rather
//! than prunes; the pod's own validation checks them when the pod is created.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::types::{Affinity, Quantity, QueueDelay};

impl JsonSchema for QueueDelay {
    fn schema_name() -> Cow<'static, str> {
        "QueueDelay".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Microseconds (a whole number), or a duration such as 500us, 2ms, 1s.",
            "x-kubernetes-int-or-string": true,
            "anyOf": [{ "type": "integer" }, { "type": "string" }],
        })
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A Kubernetes quantity such as 500m, 2, 512Mi or 1Gi.",
            "x-kubernetes-int-or-string": true,
            "anyOf": [{ "type": "integer" }, { "type": "string" }],
        })
    }
}

impl JsonSchema for Affinity {
    fn schema_name() -> Cow<'static, str> {
        "Affinity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The pods' affinity (nodeAffinity, podAffinity, podAntiAffinity), as Kubernetes writes it.",
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    }
}
