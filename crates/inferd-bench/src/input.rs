//! Request bodies the bench sends, and parsing of its command-line values.

use std::time::Duration;

use serde_json::{Value, json};

/// Which wire protocol a generated body speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    V2,
    V1,
}

impl Protocol {
    /// The endpoint a model's inference requests go to under `base`.
    pub fn infer_url(self, base: &str, model: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            Protocol::V2 => format!("{base}/v2/models/{model}/infer"),
            Protocol::V1 => format!("{base}/v1/models/{model}:predict"),
        }
    }
}

/// A request body of deterministic pseudo-random data of `shape` and
/// `datatype` (a V2 type name), for one input.
pub fn generated_body(
    protocol: Protocol,
    input_name: &str,
    shape: &[usize],
    datatype: &str,
) -> Result<Vec<u8>, String> {
    let count: usize = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape too large")?;
    if count > 10_000_000 {
        return Err(format!(
            "shape {shape:?} holds {count} elements; the bench caps generated data at 10M"
        ));
    }
    // A fixed linear congruential sequence: same body every run.
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let data: Vec<Value> = match datatype {
        "FP16" | "FP32" | "FP64" => (0..count)
            .map(|_| json!((next() * 1000.0).round() / 100.0))
            .collect(),
        "INT8" | "INT16" | "INT32" | "INT64" => (0..count)
            .map(|_| json!((next() * 100.0) as i64 - 50))
            .collect(),
        "UINT8" | "UINT16" | "UINT32" | "UINT64" => {
            (0..count).map(|_| json!((next() * 100.0) as u64)).collect()
        }
        "BOOL" => (0..count).map(|_| json!(next() < 0.5)).collect(),
        "BYTES" => (0..count).map(|i| json!(format!("s{i}"))).collect(),
        other => return Err(format!("unknown datatype '{other}'")),
    };
    let body = match protocol {
        Protocol::V2 => {
            json!({"inputs": [{"name": input_name, "shape": shape, "datatype": datatype, "data": data}]})
        }
        Protocol::V1 => {
            let rows = shape.first().copied().unwrap_or(1).max(1);
            let per_row = count / rows;
            let instances: Vec<Value> = data
                .chunks(per_row.max(1))
                .map(|row| nest(row, &shape[1.min(shape.len())..]))
                .collect();
            json!({"instances": instances})
        }
    };
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

/// Nests a flat row into arrays of `dims` (a scalar for no dims).
fn nest(flat: &[Value], dims: &[usize]) -> Value {
    match dims {
        [] => flat.first().cloned().unwrap_or(Value::Null),
        [_] => Value::Array(flat.to_vec()),
        [_, rest @ ..] => {
            let block: usize = rest.iter().product::<usize>().max(1);
            Value::Array(flat.chunks(block).map(|c| nest(c, rest)).collect())
        }
    }
}

/// Parses `10s`, `500ms`, `250us`, `2m`, `1.5` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 10s, 500ms)"))?;
    let seconds = match unit {
        "us" => value / 1_000_000.0,
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("'{text}': unit must be us, ms, s or m")),
    };
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "x", "10h", "-1s", "1e9s", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_bodies() {
        let body = generated_body(Protocol::V2, "input", &[2, 4], "FP32").expect("body");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["inputs"][0]["shape"], json!([2, 4]));
        assert_eq!(v["inputs"][0]["data"].as_array().map(Vec::len), Some(8));
        assert_eq!(
            body,
            generated_body(Protocol::V2, "input", &[2, 4], "FP32").expect("body")
        );

        let body = generated_body(Protocol::V1, "input", &[3, 2, 2], "INT32").expect("body");
        let v: Value = serde_json::from_slice(&body).expect("json");
        let instances = v["instances"].as_array().expect("instances");
        assert_eq!(instances.len(), 3);
        assert_eq!(instances[0].as_array().map(Vec::len), Some(2));
        assert_eq!(instances[0][0].as_array().map(Vec::len), Some(2));

        assert!(generated_body(Protocol::V2, "x", &[1], "FLOAT").is_err());
        assert!(generated_body(Protocol::V2, "x", &[1 << 40, 1 << 40], "FP32").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            Protocol::V2.infer_url("http://h:1/", "iris"),
            "http://h:1/v2/models/iris/infer"
        );
        assert_eq!(
            Protocol::V1.infer_url("http://h:1", "iris"),
            "http://h:1/v1/models/iris:predict"
        );
    }
}
