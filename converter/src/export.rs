//! Export: an ONNX model (source or fine-tuned) → a decluttered tract model
//! with a symbolic batch axis → an NNEF tar archive the runtime loads.
//! Optimisation happens on the device, after loading (optimized tract models
//! do not serialise).

use std::path::Path;

use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use badexpert_runtime::{FrameShape, BATCH_SYMBOL};

use crate::{Error, Result};

/// File names of the plans inside a bundle.
pub const MODEL_PLAN: &str = "model.nnef.tar";
pub const EXPERT_PLAN: &str = "expert.nnef.tar";
pub const AUXILIARY_PLAN: &str = "auxiliary.nnef.tar";

/// Loads an ONNX model into tract with input `[N, C, H, W]`, N symbolic.
pub fn decluttered(model: &ModelProto, shape: FrameShape, what: &str) -> Result<TypedModel> {
    let fail = |stage: &str, e: anyhow::Error| Error::Export { what: what.into(), reason: format!("{stage}: {e:#}") };
    let bytes = model.encode_to_vec();
    let mut m = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(|e| fail("tract cannot read the ONNX", e))?;
    let n = m.sym(BATCH_SYMBOL);
    let fact = InferenceFact::dt_shape(
        f32::datum_type(),
        [n.to_dim(), shape.channels.to_dim(), shape.height.to_dim(), shape.width.to_dim()],
    );
    m.set_input_fact(0, fact).map_err(|e| fail("input fact", e))?;
    for i in 0..m.outputs.len() {
        m.set_output_fact(i, InferenceFact::default()).map_err(|e| fail("output fact", e))?;
    }
    m.into_typed()
        .and_then(|t| t.into_decluttered())
        .map_err(|e| fail("type inference with a symbolic batch", e))
}

/// Writes `model` as an NNEF tar plan at `out`.
pub fn write_plan(model: &ModelProto, shape: FrameShape, out: &Path, what: &str) -> Result<()> {
    let typed = decluttered(model, shape, what)?;
    let file = std::fs::File::create(out).map_err(|e| Error::io(out, e))?;
    tract_nnef::nnef()
        .with_onnx()
        .write_to_tar(&typed, file)
        .map_err(|e| Error::Export { what: what.into(), reason: format!("NNEF serialisation: {e:#}") })?;
    Ok(())
}
