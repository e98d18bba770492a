//! Reading and writing ONNX protobuf files and converting their tensors.

use std::path::Path;

use prost::Message;
use tch::{Kind, Tensor};
use tract_onnx::pb::{self, tensor_proto::DataType, ModelProto, TensorProto};

use crate::{Error, Result};

/// Decodes an ONNX model file.
pub fn read_model(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::Onnx { path: path.to_owned(), reason };
    let model = ModelProto::decode(&bytes[..]).map_err(|e| bad(format!("protobuf decode failed ({e}); truncated or not ONNX?")))?;
    let graph = model.graph.as_ref().ok_or_else(|| bad("it has no graph".into()))?;
    if graph.node.is_empty() {
        return Err(bad("its graph has no nodes".into()));
    }
    if graph.output.is_empty() {
        return Err(bad("its graph has no outputs".into()));
    }
    Ok(model)
}

/// Encodes an ONNX model file.
pub fn write_model(model: &ModelProto, path: &Path) -> Result<()> {
    std::fs::write(path, model.encode_to_vec()).map_err(|e| Error::io(path, e))
}

fn le_chunks<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N).map(|c| f(c.try_into().expect("exact chunk"))).collect()
}

/// Converts an ONNX tensor (float, double, int32/64, bool, u8/i8; raw or typed
/// fields) into a CPU libtorch tensor.
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
        DataType::Int64 => {
            let v = if raw.is_empty() { t.int64_data.clone() } else { le_chunks::<8, _>(raw, i64::from_le_bytes) };
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

/// Metadata key under which badexpert records a model's input normalisation.
pub const NORMALIZATION_KEY: &str = "badexpert.normalization";

/// The input normalisation recorded in the model's metadata, if any.
pub fn normalization_metadata(model: &ModelProto) -> Result<Option<badexpert_runtime::Normalization>> {
    model
        .metadata_props
        .iter()
        .find(|p| p.key == NORMALIZATION_KEY)
        .map(|p| {
            serde_json::from_str(&p.value)
                .map_err(|e| Error::Invalid(format!("metadata {NORMALIZATION_KEY:?} is not a normalisation: {e}")))
        })
        .transpose()
}

/// Records the input normalisation in the model's metadata.
pub fn set_normalization_metadata(model: &mut ModelProto, norm: &badexpert_runtime::Normalization) {
    model.metadata_props.retain(|p| p.key != NORMALIZATION_KEY);
    model.metadata_props.push(pb::StringStringEntryProto {
        key: NORMALIZATION_KEY.into(),
        value: serde_json::to_string(norm).expect("plain struct serialises"),
    });
}
