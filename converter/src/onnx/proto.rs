//! Reading and writing ONNX protobuf files and converting their tensors.

use std::path::Path;

use prost::Message;
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
