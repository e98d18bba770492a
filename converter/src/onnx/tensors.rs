//! ONNX tensors and value infos as libtorch tensors and dims, and back:
//! the leaf every other ONNX module reads through.

use tch::{Kind, Tensor};
use tract_onnx::pb::{self, tensor_proto::DataType, TensorProto};

use crate::{Error, Result};

fn le_chunks<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N).map(|c| f(c.try_into().expect("exact chunk"))).collect()
}

/// The values of an int64 tensor, from `raw_data` or `int64_data`.
pub(crate) fn int64_values(t: &TensorProto) -> Vec<i64> {
    if t.raw_data.is_empty() {
        t.int64_data.clone()
    } else {
        le_chunks::<8, _>(&t.raw_data, i64::from_le_bytes)
    }
}

/// Converts an ONNX tensor (float, double, float16, int32/64, bool, u8/i8;
/// raw or typed fields) into a CPU libtorch tensor.
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor> {
    let bad = |reason: String| Error::Invalid(format!("initializer {:?}: {reason}", t.name));
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(bad("external data files are not supported; re-export with the weights inside the .onnx".into()));
    }
    let dims: Vec<i64> = t.dims.clone();
    let numel = super::limits::elements(&dims).map_err(&bad)?;
    let raw = &t.raw_data;
    let dt = DataType::try_from(t.data_type).map_err(|_| bad(format!("unknown data type {}", t.data_type)))?;
    let tensor = match dt {
        DataType::Float => {
            let v = if raw.is_empty() { t.float_data.clone() } else { le_chunks::<4, _>(raw, f32::from_le_bytes) };
            check_len(v.len(), numel, &t.name)?;
            Tensor::from_slice(&v)
        }
        DataType::Double => {
            let v = if raw.is_empty() { t.double_data.clone() } else { le_chunks::<8, _>(raw, f64::from_le_bytes) };
            check_len(v.len(), numel, &t.name)?;
            Tensor::from_slice(&v).to_kind(Kind::Float)
        }
        // Half-precision values are exact in f32, where the interpreter computes.
        DataType::Float16 => {
            let bits: Vec<u16> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as u16).collect()
            } else {
                le_chunks::<2, _>(raw, u16::from_le_bytes)
            };
            check_len(bits.len(), numel, &t.name)?;
            Tensor::from_slice(&bits.into_iter().map(f16_to_f32).collect::<Vec<f32>>())
        }
        DataType::Int64 => {
            let v = int64_values(t);
            check_len(v.len(), numel, &t.name)?;
            Tensor::from_slice(&v)
        }
        DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::Uint8 | DataType::Bool => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as i64).collect()
            } else {
                match dt {
                    DataType::Int32 => le_chunks::<4, _>(raw, |b| i32::from_le_bytes(b) as i64),
                    DataType::Int16 => le_chunks::<2, _>(raw, |b| i16::from_le_bytes(b) as i64),
                    DataType::Int8 => raw.iter().map(|&b| b as i8 as i64).collect(),
                    _ => raw.iter().map(|&b| b as i64).collect(),
                }
            };
            check_len(v.len(), numel, &t.name)?;
            let t64 = Tensor::from_slice(&v);
            if dt == DataType::Bool {
                t64.to_kind(Kind::Bool)
            } else {
                t64
            }
        }
        other => return Err(bad(format!("data type {} is not supported", other.as_str_name()))),
    };
    Ok(tensor.f_reshape(&dims)?)
}

/// IEEE 754 binary16 bits as the f32 of the same value.
fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f32::from(bits & 0x3ff);
    sign * match exponent {
        0 => fraction * 2f32.powi(-24),
        31 if fraction == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + fraction / 1024.0) * 2f32.powi(e - 15),
    }
}

fn check_len(got: usize, want: i64, name: &str) -> Result<()> {
    if got as i64 != want {
        return Err(Error::Invalid(format!("initializer {name:?}: {got} values for a shape of {want}")));
    }
    Ok(())
}

/// Converts a float libtorch tensor into an ONNX float tensor (raw data).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> Result<TensorProto> {
    let t = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous();
    let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(TensorProto {
        name: name.to_string(),
        dims: t.size(),
        data_type: DataType::Float as i32,
        raw_data: raw,
        ..Default::default()
    })
}

/// A value's declared dims: `Some` for a fixed size, `None` for a symbol or none.
pub(crate) fn dims_of(info: &pb::ValueInfoProto) -> Vec<Option<i64>> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TypeValue;
    match info.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Value::DimValue(v)) if v > 0 => Some(v),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn half_bits_decode_to_their_values() {
        let cases =
            [(0x3c00, 1.0), (0xc000, -2.0), (0x3555, 0.333_251_95), (0x0001, 5.960_464_5e-8), (0x7bff, 65504.0)];
        for (bits, value) in cases {
            assert_eq!(f16_to_f32(bits), value, "{bits:#06x}");
        }
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
