//! Raw tensor bytes, as Triton's binary tensor data extension carries them:
//! little-endian, row-major, no padding; BOOL one byte (0 or 1); each BYTES
//! element a 4-byte little-endian length followed by its bytes. gRPC's
//! `raw_input_contents` and `raw_output_contents` use the same layout.

use inferd_tensor::{DataType, TensorData, f16};

/// Decodes `count` elements of `datatype` that must fill `bytes` exactly.
pub fn decode(bytes: &[u8], datatype: DataType, count: usize) -> Result<TensorData, String> {
    if let Some(size) = datatype.element_size() {
        let want = count.checked_mul(size).ok_or("element count overflows")?;
        if bytes.len() != want {
            return Err(format!(
                "{} bytes given, but {count} {datatype} elements take {want}",
                bytes.len()
            ));
        }
    }
    macro_rules! fixed {
        ($variant:ident, $t:ty) => {
            TensorData::$variant(
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| {
                        let mut raw = [0u8; std::mem::size_of::<$t>()];
                        raw.copy_from_slice(c);
                        <$t>::from_le_bytes(raw)
                    })
                    .collect(),
            )
        };
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(
            bytes
                .iter()
                .enumerate()
                .map(|(i, b)| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    other => Err(format!("element {i}: BOOL byte {other} is neither 0 nor 1")),
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::Uint8 => TensorData::Uint8(bytes.to_vec()),
        DataType::Uint16 => fixed!(Uint16, u16),
        DataType::Uint32 => fixed!(Uint32, u32),
        DataType::Uint64 => fixed!(Uint64, u64),
        DataType::Int8 => fixed!(Int8, i8),
        DataType::Int16 => fixed!(Int16, i16),
        DataType::Int32 => fixed!(Int32, i32),
        DataType::Int64 => fixed!(Int64, i64),
        DataType::Fp16 => TensorData::Fp16(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        DataType::Fp32 => fixed!(Fp32, f32),
        DataType::Fp64 => fixed!(Fp64, f64),
        DataType::Bytes => {
            let mut items = Vec::with_capacity(count.min(bytes.len() / 4));
            let mut rest = bytes;
            while !rest.is_empty() {
                let (len, tail) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| format!("element {}: truncated length prefix", items.len()))?;
                let len = u32::from_le_bytes(*len) as usize;
                if tail.len() < len {
                    return Err(format!(
                        "element {}: length {len} runs past the end of the data",
                        items.len()
                    ));
                }
                items.push(tail[..len].to_vec());
                rest = &tail[len..];
            }
            if items.len() != count {
                return Err(format!(
                    "{} BYTES elements given, but the shape holds {count}",
                    items.len()
                ));
            }
            TensorData::Bytes(items)
        }
    })
}

/// Appends a buffer's raw bytes to `out`; returns how many were written.
pub fn encode(data: &TensorData, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    macro_rules! fixed {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Uint16(v) => fixed!(v),
        TensorData::Uint32(v) => fixed!(v),
        TensorData::Uint64(v) => fixed!(v),
        TensorData::Int8(v) => fixed!(v),
        TensorData::Int16(v) => fixed!(v),
        TensorData::Int32(v) => fixed!(v),
        TensorData::Int64(v) => fixed!(v),
        TensorData::Fp16(v) => fixed!(v),
        TensorData::Fp32(v) => fixed!(v),
        TensorData::Fp64(v) => fixed!(v),
        TensorData::Bytes(v) => {
            for item in v {
                // Elements are bounded by the request size limit, far below 4 GiB.
                let len = u32::try_from(item.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(item);
            }
        }
    }
    out.len() - start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let cases = [
            TensorData::Bool(vec![true, false, true]),
            TensorData::Uint8(vec![0, 7, 255]),
            TensorData::Uint16(vec![1, 65535, 3]),
            TensorData::Uint32(vec![2, u32::MAX, 4]),
            TensorData::Uint64(vec![3, u64::MAX, 5]),
            TensorData::Int8(vec![-128, 0, 127]),
            TensorData::Int16(vec![i16::MIN, 0, 9]),
            TensorData::Int32(vec![i32::MIN, -1, 6]),
            TensorData::Int64(vec![i64::MIN, i64::MAX, 0]),
            TensorData::Fp16(vec![f16::from_f32(0.5), f16::NAN, f16::INFINITY]),
            TensorData::Fp32(vec![0.1, f32::NAN, f32::NEG_INFINITY]),
            TensorData::Fp64(vec![0.1, f64::MAX, -0.0]),
            TensorData::Bytes(vec![b"ab".to_vec(), vec![], vec![0xff, 0]]),
        ];
        for data in cases {
            let mut raw = Vec::new();
            let n = encode(&data, &mut raw);
            assert_eq!(n, raw.len());
            let back = decode(&raw, data.datatype(), data.len()).expect("decodes");
            // NaN != NaN: compare the bytes instead.
            let mut again = Vec::new();
            encode(&back, &mut again);
            assert_eq!(raw, again, "{:?}", data.datatype());
        }
    }

    #[test]
    fn layout_is_little_endian_with_length_prefixes() {
        let mut raw = Vec::new();
        encode(&TensorData::Int32(vec![1, -2]), &mut raw);
        assert_eq!(raw, [1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]);
        raw.clear();
        encode(&TensorData::Bytes(vec![b"hi".to_vec()]), &mut raw);
        assert_eq!(raw, [2, 0, 0, 0, b'h', b'i']);
    }

    #[test]
    fn bad_raw_data_is_refused() {
        assert!(
            decode(&[0; 7], DataType::Fp32, 2)
                .expect_err("short")
                .contains("7 bytes given")
        );
        assert!(decode(&[0; 12], DataType::Fp32, 2).is_err());
        assert!(
            decode(&[2], DataType::Bool, 1)
                .expect_err("bool")
                .contains("neither 0 nor 1")
        );
        assert!(
            decode(&[5, 0, 0, 0, b'a'], DataType::Bytes, 1)
                .expect_err("bytes")
                .contains("runs past")
        );
        assert!(
            decode(&[1, 0], DataType::Bytes, 1)
                .expect_err("bytes")
                .contains("truncated")
        );
        assert!(
            decode(&[1, 0, 0, 0, b'a'], DataType::Bytes, 2)
                .expect_err("count")
                .contains("holds 2")
        );
        assert!(decode(&[], DataType::Fp32, usize::MAX).is_err());
    }
}
