//! Typed decoding of JSON tensor data and typed encoding back to JSON.
//!
//! The protocol lets `data` be flat (row-major) or nested. Decoding walks the
//! JSON once, converting every element straight into the declared element type
//! (no intermediate `serde_json::Value` tree) while recording the nesting so a
//! ragged array is refused and a V1 instance's shape can be read off it.

use std::fmt;

use inferd_tensor::{DataType, TensorData, f16};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeSeq};
use serde::{Serialize, Serializer};

/// Decodes JSON array text (or a single scalar), appending its elements to
/// `data` in row-major order, converted to `data`'s type. Returns the shape
/// the nesting describes: `[len]` for a flat array, `[]` for a scalar.
pub(crate) fn decode_into(
    json: &str,
    data: &mut TensorData,
) -> Result<Vec<usize>, serde_json::Error> {
    let mut state = State {
        start: data.len(),
        data,
        dims: Vec::new(),
        leaf_depth: None,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    Node {
        state: &mut state,
        depth: 0,
    }
    .deserialize(&mut de)?;
    de.end()?;
    // Every array records its length at its depth once it is complete, and
    // each array's ancestors complete after it, so no depth is left unset.
    Ok(state.dims.into_iter().map(|d| d.unwrap_or(0)).collect())
}

struct State<'a> {
    data: &'a mut TensorData,
    /// Length of `data` before this value, so errors count from its first element.
    start: usize,
    /// Length of the arrays seen at each depth; all arrays at one depth must agree.
    dims: Vec<Option<usize>>,
    /// Depth at which elements (non-arrays) appear; all must agree.
    leaf_depth: Option<usize>,
}

impl State<'_> {
    fn leaf<E: de::Error>(&mut self, depth: usize) -> Result<(), E> {
        match self.leaf_depth {
            None if self.dims.get(depth).is_some_and(Option::is_some) => {
                Err(E::custom("ragged nested array: elements and arrays mixed"))
            }
            None => {
                self.leaf_depth = Some(depth);
                Ok(())
            }
            Some(d) if d == depth => Ok(()),
            Some(_) => Err(E::custom(
                "ragged nested array: elements at different depths",
            )),
        }
    }

    fn array_len<E: de::Error>(&mut self, depth: usize, len: usize) -> Result<(), E> {
        if self.leaf_depth.is_some_and(|d| depth >= d) {
            return Err(E::custom("ragged nested array: elements and arrays mixed"));
        }
        if self.dims.len() <= depth {
            self.dims.resize(depth + 1, None);
        }
        match self.dims[depth] {
            None => {
                self.dims[depth] = Some(len);
                Ok(())
            }
            Some(seen) if seen == len => Ok(()),
            Some(seen) => Err(E::custom(format_args!(
                "ragged nested array: an array of {len} elements beside one of {seen} at depth {depth}"
            ))),
        }
    }

    fn index(&self) -> usize {
        self.data.len() - self.start
    }

    fn wrong_type<E: de::Error>(&self, found: &str) -> E {
        let want = match self.data.datatype() {
            DataType::Bool => "true or false",
            DataType::Bytes => "a string",
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => "a number",
            _ => "an integer",
        };
        E::custom(format_args!(
            "element {}: expected {want} for {}, found {found}",
            self.index(),
            self.data.datatype()
        ))
    }

    fn out_of_range<E: de::Error>(&self, value: impl fmt::Display) -> E {
        E::custom(format_args!(
            "element {}: {value} is out of range for {}",
            self.index(),
            self.data.datatype()
        ))
    }

    fn push_i64<E: de::Error>(&mut self, v: i64) -> Result<(), E> {
        macro_rules! int {
            ($vec:expr) => {
                match v.try_into() {
                    Ok(x) => $vec.push(x),
                    Err(_) => return Err(self.out_of_range(v)),
                }
            };
        }
        match &mut *self.data {
            TensorData::Uint8(d) => int!(d),
            TensorData::Uint16(d) => int!(d),
            TensorData::Uint32(d) => int!(d),
            TensorData::Uint64(d) => int!(d),
            TensorData::Int8(d) => int!(d),
            TensorData::Int16(d) => int!(d),
            TensorData::Int32(d) => int!(d),
            TensorData::Int64(d) => d.push(v),
            TensorData::Fp16(_) | TensorData::Fp32(_) | TensorData::Fp64(_) => {
                return self.push_f64(v as f64);
            }
            TensorData::Bool(_) | TensorData::Bytes(_) => return Err(self.wrong_type("a number")),
        }
        Ok(())
    }

    fn push_u64<E: de::Error>(&mut self, v: u64) -> Result<(), E> {
        match (&mut *self.data, i64::try_from(v)) {
            (TensorData::Uint64(d), _) => {
                d.push(v);
                Ok(())
            }
            (_, Ok(small)) => self.push_i64(small),
            (TensorData::Fp16(_) | TensorData::Fp32(_) | TensorData::Fp64(_), Err(_)) => {
                self.push_f64(v as f64)
            }
            (TensorData::Bool(_) | TensorData::Bytes(_), Err(_)) => {
                Err(self.wrong_type("a number"))
            }
            (_, Err(_)) => Err(self.out_of_range(v)),
        }
    }

    fn push_f64<E: de::Error>(&mut self, v: f64) -> Result<(), E> {
        // JSON has no NaN or infinity, and serde_json refuses numbers beyond
        // f64; what remains is a value too large for a narrower float.
        match &mut *self.data {
            TensorData::Fp64(d) => d.push(v),
            TensorData::Fp32(d) => {
                let x = v as f32;
                if x.is_infinite() {
                    return Err(self.out_of_range(v));
                }
                d.push(x);
            }
            TensorData::Fp16(d) => {
                let x = f16::from_f64(v);
                if x.is_infinite() {
                    return Err(self.out_of_range(v));
                }
                d.push(x);
            }
            _ => return Err(self.wrong_type("a number with a fraction or exponent")),
        }
        Ok(())
    }

    fn push_bool<E: de::Error>(&mut self, v: bool) -> Result<(), E> {
        match &mut *self.data {
            TensorData::Bool(d) => {
                d.push(v);
                Ok(())
            }
            _ => Err(self.wrong_type("a boolean")),
        }
    }

    fn push_str<E: de::Error>(&mut self, v: &str) -> Result<(), E> {
        match &mut *self.data {
            TensorData::Bytes(d) => {
                d.push(v.as_bytes().to_vec());
                Ok(())
            }
            _ => Err(self.wrong_type("a string")),
        }
    }
}

struct Node<'a, 'b> {
    state: &'a mut State<'b>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {} elements", self.state.data.datatype())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut len = 0usize;
        while seq
            .next_element_seed(Node {
                state: &mut *self.state,
                depth: self.depth + 1,
            })?
            .is_some()
        {
            len += 1;
        }
        self.state.array_len(self.depth, len)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.state.leaf(self.depth)?;
        self.state.push_bool(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.state.leaf(self.depth)?;
        self.state.push_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.state.leaf(self.depth)?;
        self.state.push_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.state.leaf(self.depth)?;
        self.state.push_f64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.state.leaf(self.depth)?;
        self.state.push_str(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.state.wrong_type("null"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(self.state.wrong_type("an object"))
    }
}

/// Serializes a buffer as one flat JSON array.
pub(crate) struct Flat<'a>(pub(crate) &'a TensorData);

impl Serialize for Flat<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Slice {
            data: self.0,
            start: 0,
            end: self.0.len(),
        }
        .serialize(s)
    }
}

/// Elements `start..end` of a buffer as a flat JSON array.
struct Slice<'a> {
    data: &'a TensorData,
    start: usize,
    end: usize,
}

impl Serialize for Slice<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let range = self.start..self.end;
        match self.data {
            TensorData::Bool(v) => s.collect_seq(&v[range]),
            TensorData::Uint8(v) => s.collect_seq(&v[range]),
            TensorData::Uint16(v) => s.collect_seq(&v[range]),
            TensorData::Uint32(v) => s.collect_seq(&v[range]),
            TensorData::Uint64(v) => s.collect_seq(&v[range]),
            TensorData::Int8(v) => s.collect_seq(&v[range]),
            TensorData::Int16(v) => s.collect_seq(&v[range]),
            TensorData::Int32(v) => s.collect_seq(&v[range]),
            TensorData::Int64(v) => s.collect_seq(&v[range]),
            TensorData::Fp16(v) => s.collect_seq(v[range].iter().map(|x| x.to_f32())),
            TensorData::Fp32(v) => s.collect_seq(&v[range]),
            TensorData::Fp64(v) => s.collect_seq(&v[range]),
            TensorData::Bytes(v) => {
                let mut seq = s.serialize_seq(Some(range.len()))?;
                for (i, bytes) in v[range.clone()].iter().enumerate() {
                    let text = std::str::from_utf8(bytes).map_err(|_| {
                        S::Error::custom(format_args!(
                            "element {} of a BYTES tensor is not UTF-8 and cannot be written as JSON",
                            range.start + i
                        ))
                    })?;
                    seq.serialize_element(text)?;
                }
                seq.end()
            }
        }
    }
}

/// One element of a buffer as a JSON scalar.
struct Element<'a> {
    data: &'a TensorData,
    index: usize,
}

impl Serialize for Element<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.index;
        match self.data {
            TensorData::Bool(v) => s.serialize_bool(v[i]),
            TensorData::Uint8(v) => s.serialize_u8(v[i]),
            TensorData::Uint16(v) => s.serialize_u16(v[i]),
            TensorData::Uint32(v) => s.serialize_u32(v[i]),
            TensorData::Uint64(v) => s.serialize_u64(v[i]),
            TensorData::Int8(v) => s.serialize_i8(v[i]),
            TensorData::Int16(v) => s.serialize_i16(v[i]),
            TensorData::Int32(v) => s.serialize_i32(v[i]),
            TensorData::Int64(v) => s.serialize_i64(v[i]),
            TensorData::Fp16(v) => s.serialize_f32(v[i].to_f32()),
            TensorData::Fp32(v) => s.serialize_f32(v[i]),
            TensorData::Fp64(v) => s.serialize_f64(v[i]),
            TensorData::Bytes(v) => match std::str::from_utf8(&v[i]) {
                Ok(text) => s.serialize_str(text),
                Err(_) => Err(S::Error::custom(format_args!(
                    "element {i} of a BYTES tensor is not UTF-8 and cannot be written as JSON"
                ))),
            },
        }
    }
}

/// A block of a buffer written as nested arrays of the given shape (a scalar
/// for an empty shape), as KServe V1 writes each prediction.
pub(crate) struct Nested<'a> {
    pub(crate) data: &'a TensorData,
    pub(crate) offset: usize,
    pub(crate) dims: &'a [usize],
}

impl Serialize for Nested<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.dims {
            [] => Element {
                data: self.data,
                index: self.offset,
            }
            .serialize(s),
            [len] => Slice {
                data: self.data,
                start: self.offset,
                end: self.offset + len,
            }
            .serialize(s),
            [len, rest @ ..] => {
                let block: usize = rest.iter().product();
                let mut seq = s.serialize_seq(Some(*len))?;
                for i in 0..*len {
                    seq.serialize_element(&Nested {
                        data: self.data,
                        offset: self.offset + i * block,
                        dims: rest,
                    })?;
                }
                seq.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Decoded {
        data: TensorData,
        nested_shape: Vec<usize>,
    }

    fn decode(json: &str, t: DataType) -> Result<Decoded, serde_json::Error> {
        let mut data = TensorData::with_capacity(t, 0);
        let nested_shape = decode_into(json, &mut data)?;
        Ok(Decoded { data, nested_shape })
    }

    fn ok(json: &str, t: DataType) -> Decoded {
        decode(json, t).unwrap_or_else(|e| panic!("{json} as {t}: {e}"))
    }

    fn err(json: &str, t: DataType) -> String {
        match decode(json, t) {
            Ok(d) => panic!("{json} as {t} decoded to {:?}", d.data),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn appending_counts_elements_from_the_new_value() {
        let mut data = TensorData::Uint8(vec![1, 2, 3]);
        let e = decode_into("[4, 300]", &mut data).expect_err("out of range");
        assert!(e.to_string().contains("element 1: 300"), "{e}");
        let mut data = TensorData::Uint8(vec![1]);
        assert_eq!(
            decode_into("[[2], [3]]", &mut data).expect("decodes"),
            vec![2, 1]
        );
        assert_eq!(data, TensorData::Uint8(vec![1, 2, 3]));
    }

    #[test]
    fn flat_and_nested_agree() {
        let flat = ok("[1, 2, 3, 4, 5, 6]", DataType::Int32);
        let nested = ok("[[1, 2, 3], [4, 5, 6]]", DataType::Int32);
        assert_eq!(flat.data, nested.data);
        assert_eq!(flat.nested_shape, vec![6]);
        assert_eq!(nested.nested_shape, vec![2, 3]);
        let deep = ok("[[[1.5], [2]], [[3], [4]]]", DataType::Fp64);
        assert_eq!(deep.nested_shape, vec![2, 2, 1]);
        assert_eq!(deep.data, TensorData::Fp64(vec![1.5, 2.0, 3.0, 4.0]));
    }

    #[test]
    fn scalars_and_empty_arrays() {
        let scalar = ok("7", DataType::Uint8);
        assert_eq!(scalar.nested_shape, Vec::<usize>::new());
        assert_eq!(scalar.data, TensorData::Uint8(vec![7]));
        assert_eq!(ok("[]", DataType::Fp32).nested_shape, vec![0]);
        assert_eq!(ok("[[], []]", DataType::Fp32).nested_shape, vec![2, 0]);
    }

    #[test]
    fn every_type_decodes() {
        let cases = [
            ("[true, false]", TensorData::Bool(vec![true, false])),
            ("[0, 255]", TensorData::Uint8(vec![0, 255])),
            ("[0, 65535]", TensorData::Uint16(vec![0, 65535])),
            ("[0, 4294967295]", TensorData::Uint32(vec![0, u32::MAX])),
            (
                "[0, 18446744073709551615]",
                TensorData::Uint64(vec![0, u64::MAX]),
            ),
            ("[-128, 127]", TensorData::Int8(vec![-128, 127])),
            (
                "[-32768, 32767]",
                TensorData::Int16(vec![i16::MIN, i16::MAX]),
            ),
            (
                "[-2147483648, 2147483647]",
                TensorData::Int32(vec![i32::MIN, i32::MAX]),
            ),
            (
                "[-9223372036854775808, 9223372036854775807]",
                TensorData::Int64(vec![i64::MIN, i64::MAX]),
            ),
            (
                "[1.5, -2, 65504]",
                TensorData::Fp16(vec![
                    f16::from_f32(1.5),
                    f16::from_f32(-2.0),
                    f16::from_f32(65504.0),
                ]),
            ),
            ("[0.1, -3, 1e38]", TensorData::Fp32(vec![0.1, -3.0, 1e38])),
            ("[0.1, 1e300, -5]", TensorData::Fp64(vec![0.1, 1e300, -5.0])),
            (
                r#"["a", "", "é\n"]"#,
                TensorData::Bytes(vec![b"a".to_vec(), vec![], "é\n".as_bytes().to_vec()]),
            ),
        ];
        for (json, want) in cases {
            assert_eq!(ok(json, want.datatype()).data, want, "{json}");
        }
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(err("[256]", DataType::Uint8).contains("element 0: 256 is out of range for UINT8"));
        assert!(err("[1, -1]", DataType::Uint32).contains("element 1: -1 is out of range"));
        assert!(err("[128]", DataType::Int8).contains("out of range for INT8"));
        assert!(err("[18446744073709551615]", DataType::Int64).contains("out of range"));
        assert!(err("[1e39]", DataType::Fp32).contains("out of range for FP32"));
        assert!(err("[70000]", DataType::Fp16).contains("out of range for FP16"));
        // Beyond f64: serde_json itself refuses it.
        assert!(err("[1e400]", DataType::Fp64).contains("number out of range"));
    }

    #[test]
    fn wrong_types_are_refused() {
        assert!(err("[1.5]", DataType::Int32).contains("expected an integer for INT32"));
        assert!(err("[1]", DataType::Bool).contains("expected true or false for BOOL"));
        assert!(
            err("[true]", DataType::Fp32).contains("expected a number for FP32, found a boolean")
        );
        assert!(err(r#"["NaN"]"#, DataType::Fp32).contains("found a string"));
        assert!(err("[null]", DataType::Fp64).contains("found null"));
        assert!(err("[1]", DataType::Bytes).contains("expected a string for BYTES"));
        assert!(err(r#"[{"a": 1}]"#, DataType::Int64).contains("found an object"));
        // Not JSON at all.
        assert!(decode("[NaN]", DataType::Fp32).is_err());
        assert!(decode("[Infinity]", DataType::Fp32).is_err());
        assert!(decode("[1, 2", DataType::Fp32).is_err());
        assert!(decode("[1] [2]", DataType::Fp32).is_err());
    }

    #[test]
    fn ragged_arrays_are_refused() {
        assert!(err("[[1, 2], [3]]", DataType::Int32).contains("ragged"));
        assert!(err("[[1, 2], 3]", DataType::Int32).contains("ragged"));
        assert!(err("[1, [2, 3]]", DataType::Int32).contains("ragged"));
        assert!(err("[[[1]], [2]]", DataType::Int32).contains("ragged"));
    }

    #[test]
    fn hostile_nesting_depth_is_refused() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(err(&deep, DataType::Int32).contains("recursion limit"));
    }

    #[test]
    fn encode_round_trips_every_type() {
        let cases = [
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Uint16(vec![1, 65535]),
            TensorData::Uint32(vec![2, u32::MAX]),
            TensorData::Uint64(vec![3, u64::MAX]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Int16(vec![i16::MIN, 5]),
            TensorData::Int32(vec![i32::MIN, 6]),
            TensorData::Int64(vec![i64::MIN, i64::MAX]),
            TensorData::Fp16(vec![f16::from_f32(0.5), f16::from_f32(-1024.0)]),
            TensorData::Fp32(vec![0.1, 0.98157287, -1e-30]),
            TensorData::Fp64(vec![0.1, std::f64::consts::PI]),
            TensorData::Bytes(vec![b"x".to_vec(), "ü".as_bytes().to_vec()]),
        ];
        for data in cases {
            let json = serde_json::to_string(&Flat(&data)).expect("encodes");
            let back = ok(&json, data.datatype());
            assert_eq!(back.data, data, "{json}");
        }
    }

    #[test]
    fn fp32_is_written_shortest() {
        let json = serde_json::to_string(&Flat(&TensorData::Fp32(vec![0.98157287, 0.1])))
            .expect("encodes");
        assert_eq!(json, "[0.98157287,0.1]");
    }

    #[test]
    fn non_utf8_bytes_fail_to_encode() {
        let data = TensorData::Bytes(vec![vec![0xff, 0xfe]]);
        let e = serde_json::to_string(&Flat(&data)).expect_err("not UTF-8");
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn nested_encoding() {
        let data = TensorData::Int32((0..12).collect());
        let rows: Vec<_> = (0..2)
            .map(|i| Nested {
                data: &data,
                offset: i * 6,
                dims: &[2, 3],
            })
            .collect();
        let json = serde_json::to_string(&rows).expect("encodes");
        assert_eq!(json, "[[[0,1,2],[3,4,5]],[[6,7,8],[9,10,11]]]");
        let scalar = Nested {
            data: &data,
            offset: 4,
            dims: &[],
        };
        assert_eq!(serde_json::to_string(&scalar).expect("encodes"), "4");
    }
}
