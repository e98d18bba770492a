//! Reading and writing ONNX protobuf files and converting their tensors.

use std::path::Path;

use prost::Message;
use tch::{Kind, Tensor};
use tract_onnx::pb::{self, tensor_proto::DataType, ModelProto, TensorProto};

use crate::{Error, Result};

/// Decodes an ONNX model file, with external data resolved and a batch size
/// pinned by the export freed (`batch_axis`).
pub fn read_model(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut model = decode_model(&bytes, path)?;
    load_external_data(&mut model, path)?;
    if let Some(fixed) = super::batch_axis::free_batch_axis(&mut model) {
        log::info!(
            "{}: exported with a fixed batch of {}; batch axis freed ({} Reshape shape(s) now take it from their input)",
            path.display(),
            fixed.size,
            fixed.reshapes
        );
    }
    Ok(model)
}

/// Decodes ONNX bytes (read from `path`, named in errors) into a model with
/// a graph that has nodes and outputs; external data is left unresolved.
pub(crate) fn decode_model(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    let bad = |reason: String| Error::Onnx { path: path.to_owned(), reason };
    let model =
        ModelProto::decode(bytes).map_err(|e| bad(format!("protobuf decode failed ({e}); truncated or not ONNX?")))?;
    let graph = model.graph.as_ref().ok_or_else(|| bad("it has no graph".into()))?;
    if graph.node.is_empty() {
        return Err(bad("its graph has no nodes".into()));
    }
    if graph.output.is_empty() {
        return Err(bad("its graph has no outputs".into()));
    }
    Ok(model)
}

/// Bytes per element of the ONNX data types whose size is fixed.
fn element_bytes(data_type: i32) -> Option<u64> {
    Some(match DataType::try_from(data_type).ok()? {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 | DataType::Complex64 => 8,
        DataType::Int16 | DataType::Uint16 | DataType::Float16 | DataType::Bfloat16 => 2,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        _ => return None,
    })
}

/// Resolves initializers stored outside the model file (ONNX external data:
/// `location`, optional `offset` and `length`, as the dynamo exporter writes
/// them into `<model>.onnx.data`): the bytes are read into `raw_data` and the
/// external fields cleared, so the rest of the converter — and tract, which
/// gets the re-encoded proto — sees an ordinary self-contained model.
///
/// A location must be a relative path below the model's directory: absolute
/// paths, `..` components and anything whose canonical path (symlinks
/// resolved) lies outside that directory are refused, as are ranges past the
/// end of the file and byte counts that do not match the tensor's shape.
fn load_external_data(model: &mut ModelProto, path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    use std::path::Component;

    let Some(graph) = model.graph.as_mut() else { return Ok(()) };
    let external = |t: &TensorProto| {
        t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) || !t.external_data.is_empty()
    };
    if !graph.initializer.iter().any(external) {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let root = dir.canonicalize().map_err(|e| Error::io(&dir, e))?;
    for t in graph.initializer.iter_mut().filter(|t| external(t)) {
        let entry = |key: &str| t.external_data.iter().find(|e| e.key == key).map(|e| e.value.clone());
        let location = entry("location").unwrap_or_default();
        let bad = |reason: String| Error::Onnx {
            path: path.to_owned(),
            reason: format!("initializer {:?}: external data {location:?}: {reason}", t.name),
        };
        if location.is_empty() {
            return Err(bad("no location given".into()));
        }
        let rel = Path::new(&location);
        if rel.is_absolute() || rel.has_root() {
            return Err(
                bad("an absolute location is not allowed; it must be relative to the model's directory".into()),
            );
        }
        if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(bad("a location with '..' is not allowed; it must lie in the model's directory".into()));
        }
        let number = |key: &str| -> Result<Option<u64>> {
            entry(key)
                .map(|v| v.trim().parse::<u64>().map_err(|e| bad(format!("{key} {v:?} is not a byte count: {e}"))))
                .transpose()
        };
        let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
        let file = dir.join(rel);
        let canonical = file.canonicalize().map_err(|e| bad(format!("cannot open {}: {e}", file.display())))?;
        if !canonical.starts_with(&root) {
            return Err(bad(format!(
                "it resolves to {}, outside the model's directory {}",
                canonical.display(),
                root.display()
            )));
        }
        let mut f = std::fs::File::open(&canonical).map_err(|e| bad(format!("cannot open {}: {e}", file.display())))?;
        let size = f.metadata().map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?.len();
        let length = match length {
            Some(l) => l,
            None => size
                .checked_sub(offset)
                .ok_or_else(|| bad(format!("offset {offset} is past the end of the {size}-byte file")))?,
        };
        let end =
            offset.checked_add(length).ok_or_else(|| bad(format!("offset {offset} + length {length} overflows")))?;
        if end > size {
            return Err(bad(format!(
                "bytes {offset}..{end} lie past the end of the {size}-byte file {} (truncated?)",
                file.display()
            )));
        }
        if let Some(bytes) = element_bytes(t.data_type) {
            let want = t.dims.iter().try_fold(bytes, |acc, &d| u64::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
            if want != Some(length) {
                let want = want.map_or_else(|| "an invalid number of".to_string(), |w| w.to_string());
                return Err(bad(format!("{length} bytes, but shape {:?} needs {want} bytes", t.dims)));
            }
        }
        let mut raw = vec![0u8; length as usize];
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut raw))
            .map_err(|e| bad(format!("cannot read bytes {offset}..{end} of {}: {e}", file.display())))?;
        t.raw_data = raw;
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(())
}

/// Encodes an ONNX model file.
pub fn write_model(model: &ModelProto, path: &Path) -> Result<()> {
    std::fs::write(path, model.encode_to_vec()).map_err(|e| Error::io(path, e))
}

fn le_chunks<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N).map(|c| f(c.try_into().expect("exact chunk"))).collect()
}

/// The values of an int64 tensor, from `raw_data` or `int64_data`.
pub(super) fn int64_values(t: &TensorProto) -> Vec<i64> {
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
