//! Tensors as inferd's wire protocols and model runtimes exchange them.
//!
//! This crate is the one vocabulary both sides share: the Open Inference
//! Protocol's data types, shapes with dynamic dimensions, and typed row-major
//! buffers. It knows no transport and no runtime, so the protocol crate can
//! decode into it and the runtime crate can compute on it without either
//! importing the other.

use std::fmt;

pub use half::f16;

/// The tensor element types of the Open Inference Protocol (V2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's name for the type, e.g. `FP32`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a protocol type name; names are case-sensitive as in the spec.
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Bytes per element for fixed-size types; `None` for `BYTES`.
    pub const fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed, row-major element buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Runs `$body` with `$v` bound to the inner `Vec` of any variant.
#[macro_export]
macro_rules! for_each_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::Bool($v) => $body,
            $crate::TensorData::Uint8($v) => $body,
            $crate::TensorData::Uint16($v) => $body,
            $crate::TensorData::Uint32($v) => $body,
            $crate::TensorData::Uint64($v) => $body,
            $crate::TensorData::Int8($v) => $body,
            $crate::TensorData::Int16($v) => $body,
            $crate::TensorData::Int32($v) => $body,
            $crate::TensorData::Int64($v) => $body,
            $crate::TensorData::Fp16($v) => $body,
            $crate::TensorData::Fp32($v) => $body,
            $crate::TensorData::Fp64($v) => $body,
            $crate::TensorData::Bytes($v) => $body,
        }
    };
}

impl TensorData {
    /// An empty buffer of the given type with room for `capacity` elements.
    pub fn with_capacity(datatype: DataType, capacity: usize) -> TensorData {
        match datatype {
            DataType::Bool => TensorData::Bool(Vec::with_capacity(capacity)),
            DataType::Uint8 => TensorData::Uint8(Vec::with_capacity(capacity)),
            DataType::Uint16 => TensorData::Uint16(Vec::with_capacity(capacity)),
            DataType::Uint32 => TensorData::Uint32(Vec::with_capacity(capacity)),
            DataType::Uint64 => TensorData::Uint64(Vec::with_capacity(capacity)),
            DataType::Int8 => TensorData::Int8(Vec::with_capacity(capacity)),
            DataType::Int16 => TensorData::Int16(Vec::with_capacity(capacity)),
            DataType::Int32 => TensorData::Int32(Vec::with_capacity(capacity)),
            DataType::Int64 => TensorData::Int64(Vec::with_capacity(capacity)),
            DataType::Fp16 => TensorData::Fp16(Vec::with_capacity(capacity)),
            DataType::Fp32 => TensorData::Fp32(Vec::with_capacity(capacity)),
            DataType::Fp64 => TensorData::Fp64(Vec::with_capacity(capacity)),
            DataType::Bytes => TensorData::Bytes(Vec::with_capacity(capacity)),
        }
    }

    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        for_each_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Errors about a tensor's shape and contents.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    #[error("shape {shape:?} has more elements than fit in memory")]
    Overflow { shape: Vec<usize> },
    #[error("shape {shape:?} holds {expected} elements but {actual} were given")]
    ElementCount {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
}

/// Number of elements a shape holds, `None` when it overflows `usize`.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// A named tensor: shape plus row-major data whose length matches the shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    name: String,
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        data: TensorData,
    ) -> Result<Tensor, ShapeError> {
        let Some(expected) = element_count(&shape) else {
            return Err(ShapeError::Overflow { shape });
        };
        if expected != data.len() {
            return Err(ShapeError::ElementCount {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor {
            name: name.into(),
            shape,
            data,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    pub fn into_parts(self) -> (String, Vec<usize>, TensorData) {
        (self.name, self.shape, self.data)
    }
}

/// Why tensors cannot be joined or split along their first dimension.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("nothing to join")]
    Empty,
    #[error("tensor '{0}' has no batch dimension (it is a scalar)")]
    Scalar(String),
    #[error("tensors '{0}' do not agree in datatype or in the shape after the batch dimension")]
    Incompatible(String),
    #[error("tensor '{name}' has {actual} rows but {expected} were expected")]
    Rows {
        name: String,
        expected: usize,
        actual: usize,
    },
}

impl Tensor {
    /// Rows along the first (batch) dimension; `None` for a scalar.
    pub fn rows(&self) -> Option<usize> {
        self.shape.first().copied()
    }

    /// True when `other` could be stacked under `self`: same name, datatype
    /// and shape after the first dimension.
    pub fn stacks_with(&self, other: &Tensor) -> bool {
        self.name == other.name
            && self.datatype() == other.datatype()
            && !self.shape.is_empty()
            && self.shape.get(1..) == other.shape.get(1..)
    }

    /// Joins tensors along their first dimension, in order.
    pub fn concat_rows(parts: Vec<Tensor>) -> Result<Tensor, BatchError> {
        let mut parts = parts.into_iter();
        let Some(first) = parts.next() else {
            return Err(BatchError::Empty);
        };
        let rest: Vec<Tensor> = parts.collect();
        if first.shape.is_empty() {
            return Err(BatchError::Scalar(first.name));
        }
        if let Some(bad) = rest.iter().find(|t| !first.stacks_with(t)) {
            return Err(BatchError::Incompatible(bad.name.clone()));
        }
        if rest.is_empty() {
            return Ok(first);
        }
        let rows: usize = rest.iter().map(|t| t.shape[0]).sum::<usize>() + first.shape[0];
        let total = first.data.len() + rest.iter().map(|t| t.data.len()).sum::<usize>();
        let Tensor {
            name,
            mut shape,
            data,
        } = first;
        let mut joined = TensorData::with_capacity(data.datatype(), total);
        append(&mut joined, data);
        for t in rest {
            append(&mut joined, t.data);
        }
        shape[0] = rows;
        Ok(Tensor {
            name,
            shape,
            data: joined,
        })
    }

    /// Splits a tensor along its first dimension into pieces of the given
    /// row counts, which must add up to its rows.
    pub fn split_rows(self, rows: &[usize]) -> Result<Vec<Tensor>, BatchError> {
        let Some(&have) = self.shape.first() else {
            return Err(BatchError::Scalar(self.name));
        };
        let want: usize = rows.iter().sum();
        if want != have {
            return Err(BatchError::Rows {
                name: self.name,
                expected: want,
                actual: have,
            });
        }
        if rows.len() == 1 {
            return Ok(vec![self]);
        }
        let row_len = element_count(&self.shape[1..]).unwrap_or(0);
        let Tensor { name, shape, data } = self;
        let mut out = Vec::with_capacity(rows.len());
        let mut rest = data;
        for (i, &r) in rows.iter().enumerate() {
            let piece = if i + 1 == rows.len() {
                std::mem::replace(&mut rest, TensorData::with_capacity(DataType::Bool, 0))
            } else {
                split_front(&mut rest, r * row_len)
            };
            let mut piece_shape = shape.clone();
            piece_shape[0] = r;
            out.push(Tensor {
                name: name.clone(),
                shape: piece_shape,
                data: piece,
            });
        }
        Ok(out)
    }
}

/// Moves `from`'s elements to the end of `to` (same datatype, checked by the caller).
fn append(to: &mut TensorData, from: TensorData) {
    macro_rules! arms {
        ($($variant:ident),*) => {
            match (to, from) {
                $((TensorData::$variant(a), TensorData::$variant(b)) => a.extend(b),)*
                _ => {}
            }
        };
    }
    arms!(
        Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes
    );
}

/// Takes the first `n` elements off `data`.
fn split_front(data: &mut TensorData, n: usize) -> TensorData {
    macro_rules! arms {
        ($($variant:ident),*) => {
            match data {
                $(TensorData::$variant(v) => {
                    let tail = v.split_off(n.min(v.len()));
                    TensorData::$variant(std::mem::replace(v, tail))
                })*
            }
        };
    }
    arms!(
        Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes
    )
}

/// One dimension of a declared tensor shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// Any size; the protocol writes it as `-1`.
    Dynamic,
}

impl Dim {
    /// The protocol's integer form: the size, or -1 for a dynamic dimension.
    pub fn as_i64(self) -> i64 {
        match self {
            Dim::Fixed(d) => i64::try_from(d).unwrap_or(i64::MAX),
            Dim::Dynamic => -1,
        }
    }
}

/// What a model declares about one of its inputs or outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<Dim>,
}

/// Why a tensor does not fit a [`TensorSpec`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecMismatch {
    #[error("datatype {actual} does not match the model's {expected}")]
    DataType {
        expected: DataType,
        actual: DataType,
    },
    #[error("shape {actual:?} has rank {} but the model takes rank {expected_rank}", actual.len())]
    Rank {
        expected_rank: usize,
        actual: Vec<usize>,
    },
    #[error(
        "shape {actual:?} does not fit the model's shape {expected:?} (dimension {index} must be {size})"
    )]
    Dim {
        expected: Vec<i64>,
        actual: Vec<usize>,
        index: usize,
        size: usize,
    },
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape,
        }
    }

    /// The declared shape in protocol form (-1 for dynamic dimensions).
    pub fn shape_i64(&self) -> Vec<i64> {
        self.shape.iter().map(|d| d.as_i64()).collect()
    }

    /// Checks that a tensor of this datatype and shape can be fed to the model.
    pub fn check(&self, datatype: DataType, shape: &[usize]) -> Result<(), SpecMismatch> {
        if datatype != self.datatype {
            return Err(SpecMismatch::DataType {
                expected: self.datatype,
                actual: datatype,
            });
        }
        if shape.len() != self.shape.len() {
            return Err(SpecMismatch::Rank {
                expected_rank: self.shape.len(),
                actual: shape.to_vec(),
            });
        }
        for (index, (dim, &actual)) in self.shape.iter().zip(shape).enumerate() {
            if let Dim::Fixed(size) = *dim
                && size != actual
            {
                return Err(SpecMismatch::Dim {
                    expected: self.shape_i64(),
                    actual: shape.to_vec(),
                    index,
                    size,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_join_and_split_back() {
        let a = Tensor::new("x", vec![1, 2], TensorData::Fp32(vec![1.0, 2.0])).expect("a");
        let b =
            Tensor::new("x", vec![2, 2], TensorData::Fp32(vec![3.0, 4.0, 5.0, 6.0])).expect("b");
        let joined = Tensor::concat_rows(vec![a.clone(), b.clone()]).expect("joins");
        assert_eq!(joined.shape(), &[3, 2]);
        assert_eq!(
            joined.data(),
            &TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );
        let parts = joined.split_rows(&[1, 2]).expect("splits");
        assert_eq!(parts, vec![a.clone(), b]);

        let words = Tensor::new(
            "w",
            vec![3],
            TensorData::Bytes(vec![b"a".to_vec(), b"bc".to_vec(), vec![]]),
        )
        .expect("w");
        let parts = words.clone().split_rows(&[2, 0, 1]).expect("splits");
        assert_eq!(parts[1].shape(), &[0]);
        assert_eq!(Tensor::concat_rows(parts).expect("joins"), words);
    }

    #[test]
    fn rows_that_do_not_fit_are_refused() {
        let a = Tensor::new("x", vec![1, 2], TensorData::Fp32(vec![1.0, 2.0])).expect("a");
        let wide = Tensor::new("x", vec![1, 3], TensorData::Fp32(vec![0.0; 3])).expect("w");
        let ints = Tensor::new("x", vec![1, 2], TensorData::Int32(vec![0; 2])).expect("i");
        let scalar = Tensor::new("s", vec![], TensorData::Fp32(vec![0.0])).expect("s");
        assert!(matches!(
            Tensor::concat_rows(vec![a.clone(), wide]),
            Err(BatchError::Incompatible(_))
        ));
        assert!(matches!(
            Tensor::concat_rows(vec![a.clone(), ints]),
            Err(BatchError::Incompatible(_))
        ));
        assert_eq!(Tensor::concat_rows(vec![]), Err(BatchError::Empty));
        assert!(matches!(
            Tensor::concat_rows(vec![scalar.clone(), scalar.clone()]),
            Err(BatchError::Scalar(_))
        ));
        assert!(matches!(
            scalar.split_rows(&[1]),
            Err(BatchError::Scalar(_))
        ));
        assert_eq!(
            a.split_rows(&[1, 1]),
            Err(BatchError::Rows {
                name: "x".into(),
                expected: 2,
                actual: 1
            })
        );
    }

    #[test]
    fn datatype_names_round_trip() {
        for t in DataType::ALL {
            assert_eq!(DataType::parse(t.as_str()), Some(t));
        }
        assert_eq!(DataType::parse("fp32"), None);
        assert_eq!(DataType::parse("FLOAT"), None);
        assert_eq!(DataType::parse(""), None);
    }

    #[test]
    fn with_capacity_keeps_the_type() {
        for t in DataType::ALL {
            let d = TensorData::with_capacity(t, 4);
            assert_eq!(d.datatype(), t);
            assert!(d.is_empty());
        }
    }

    #[test]
    fn tensor_checks_element_count() {
        let ok = Tensor::new("x", vec![2, 2], TensorData::Fp32(vec![1.0; 4]));
        assert!(ok.is_ok());
        let err = Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![1.0; 4]));
        assert_eq!(
            err,
            Err(ShapeError::ElementCount {
                shape: vec![2, 3],
                expected: 6,
                actual: 4
            })
        );
        let huge = Tensor::new("x", vec![usize::MAX, 2], TensorData::Fp32(vec![]));
        assert!(matches!(huge, Err(ShapeError::Overflow { .. })));
        // A zero-sized dimension holds no elements.
        assert!(Tensor::new("x", vec![0, 4], TensorData::Int64(vec![])).is_ok());
    }

    #[test]
    fn spec_check() {
        let spec = TensorSpec::new("x", DataType::Fp32, vec![Dim::Dynamic, Dim::Fixed(4)]);
        assert_eq!(spec.shape_i64(), vec![-1, 4]);
        assert!(spec.check(DataType::Fp32, &[7, 4]).is_ok());
        assert!(matches!(
            spec.check(DataType::Fp64, &[7, 4]),
            Err(SpecMismatch::DataType { .. })
        ));
        assert!(matches!(
            spec.check(DataType::Fp32, &[28]),
            Err(SpecMismatch::Rank { .. })
        ));
        let err = spec.check(DataType::Fp32, &[7, 3]).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "shape [7, 3] does not fit the model's shape [-1, 4] (dimension 1 must be 4)"
        );
    }
}
