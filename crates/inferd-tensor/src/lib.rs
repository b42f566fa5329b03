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
