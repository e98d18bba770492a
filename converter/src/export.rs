//! Export: an ONNX model (source or fine-tuned) → a decluttered tract model
//! with a symbolic batch axis → an NNEF tar archive the runtime loads.
//! Optimisation happens on the device, after loading (optimized tract models
//! do not serialise).

use std::path::Path;

use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use badexpert_runtime::manifest::Precision;
use badexpert_runtime::{FrameSet, FrameShape, BATCH_SYMBOL};

use crate::{Error, Result};

/// File names of the plans inside a bundle.
pub const MODEL_PLAN: &str = "model.nnef.tar";
pub const EXPERT_PLAN: &str = "expert.nnef.tar";
pub const AUXILIARY_PLAN: &str = "auxiliary.nnef.tar";

/// Loads an ONNX model into tract with input `[N, C, H, W]`, N symbolic.
pub fn decluttered(model: &ModelProto, shape: FrameShape, what: &str) -> Result<TypedModel> {
    let fail = |stage: &str, e: anyhow::Error| Error::Export { what: what.into(), reason: format!("{stage}: {e:#}") };
    // Intermediate shape annotations (value_info) are hints tract checks against
    // its own inference. Exporters name the batch axis their own way ("batch",
    // "batch_size", "s0": the dynamo exporter writes its Dim names there), which
    // cannot unify with N; tract infers every shape from the input fact anyway.
    let bytes = match model.graph.as_ref() {
        Some(g) if !g.value_info.is_empty() => {
            let mut stripped = model.clone();
            stripped.graph.as_mut().expect("matched above").value_info.clear();
            stripped.encode_to_vec()
        }
        _ => model.encode_to_vec(),
    };
    let mut m =
        tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(|e| fail("tract cannot read the ONNX", e))?;
    let n = m.sym(BATCH_SYMBOL);
    let fact = InferenceFact::dt_shape(
        f32::datum_type(),
        [n.to_dim(), shape.channels.to_dim(), shape.height.to_dim(), shape.width.to_dim()],
    );
    m.set_input_fact(0, fact).map_err(|e| fail("input fact", e))?;
    for i in 0..m.outputs.len() {
        m.set_output_fact(i, InferenceFact::default()).map_err(|e| fail("output fact", e))?;
    }
    let mut typed = m
        .into_typed()
        .and_then(|t| t.into_decluttered())
        .map_err(|e| fail("type inference with a symbolic batch", e))?;
    explicit_ceil_padding(&mut typed).map_err(|e| fail("ceil-mode pooling", e))?;
    unfuse_gelu_exact(&mut typed).map_err(|e| fail("GELU", e))?;
    Ok(typed)
}

/// tract's decluttering fuses the exact (erf) GELU of PyTorch exports into
/// `GeluExact`, which tract 0.23 cannot write to NNEF. It is unfused here into
/// `0.5·x·(1 + erf(x/√2))`, which NNEF holds and the device fuses again when it
/// optimises the plan.
fn unfuse_gelu_exact(model: &mut TypedModel) -> TractResult<()> {
    use tract_core::ops::change_axes::wire_with_rank_broadcast;
    use tract_core::ops::element_wise::ElementWiseOp;
    use tract_core::ops::math::{add, erf, mul};
    use tract_core::ops::nn::GeluExact;
    let fused: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_as::<ElementWiseOp>().is_some_and(|op| op.0.is::<GeluExact>()))
        .map(|n| n.id)
        .collect();
    for id in &fused {
        let (name, input) = (model.node(*id).name.clone(), model.node(*id).inputs[0]);
        let dt = model.outlet_fact(input)?.datum_type;
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, input)?;
        let konst = |patch: &mut TypedModelPatch, what: &str, v: f32| -> TractResult<OutletId> {
            patch.add_const(format!("{name}.{what}"), tensor0(v).cast_to_dt(dt)?.into_owned())
        };
        let (inv_sqrt2, one, half) = (
            konst(&mut patch, "inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2)?,
            konst(&mut patch, "one", 1.0)?,
            konst(&mut patch, "half", 0.5)?,
        );
        let scaled = wire_with_rank_broadcast(format!("{name}.scaled"), &mut patch, mul(), &[x, inv_sqrt2])?[0];
        let erf = patch.wire_node(format!("{name}.erf"), erf(), &[scaled])?[0];
        let one_plus_erf = wire_with_rank_broadcast(format!("{name}.one_plus_erf"), &mut patch, add(), &[erf, one])?[0];
        let half_x = wire_with_rank_broadcast(format!("{name}.half_x"), &mut patch, mul(), &[x, half])?[0];
        let out = patch.wire_node(format!("{name}.gelu"), mul(), &[half_x, one_plus_erf])?[0];
        patch.shunt_outside(model, OutletId::new(*id, 0), out)?;
        patch.apply(model)?;
    }
    if !fused.is_empty() {
        model.compact()?;
    }
    Ok(())
}

/// NNEF has no ceil mode: tract writes a ceil-mode pool's declared padding
/// and reads it back as floor mode, which loses the last row and column. The
/// extra end padding ceil mode implies is made explicit instead (padded
/// values are ignored by max pooling and by averages that do not count
/// padding; an average that counts padding keeps ceil mode and is refused).
fn explicit_ceil_padding(model: &mut TypedModel) -> TractResult<()> {
    use tract_core::ops::cnn::{MaxPool, PaddingSpec, PoolSpec, SumPool};
    for id in 0..model.nodes.len() {
        let Some(&input) = model.nodes[id].inputs.first() else { continue };
        let shape = model.outlet_fact(input)?.shape.to_tvec();
        let node = &mut model.nodes[id];
        let spec: &mut PoolSpec = if let Some(op) = node.op_as_mut::<MaxPool>() {
            &mut op.pool_spec
        } else if let Some(op) = node.op_as_mut::<SumPool>() {
            if op.count_include_pad && matches!(op.pool_spec.padding, PaddingSpec::ExplicitOnnxPool(_, _, true)) {
                anyhow::bail!(
                    "node {}: average pooling with ceil_mode and count_include_pad cannot be written to NNEF",
                    node.name
                );
            }
            &mut op.pool_spec
        } else {
            continue;
        };
        let PaddingSpec::ExplicitOnnxPool(bef, aft, true) = &spec.padding else { continue };
        let (bef, mut aft) = (bef.clone(), aft.clone());
        let dims = spec.data_format.shape(shape)?;
        for (d, dim) in dims.hw_dims().iter().enumerate() {
            let input = dim.to_i64()? as usize;
            let kernel_field = (spec.kernel_shape[d] - 1) * spec.dilation(d) + 1;
            let stride = spec.stride(d);
            let dividend = (input + bef[d] + aft[d]).saturating_sub(kernel_field);
            let mut output = dividend.div_ceil(stride) + 1;
            // As ONNX and PyTorch: the last window starts inside the input or the declared padding.
            if (output - 1) * stride >= input + bef[d] {
                output -= 1;
            }
            aft[d] = aft[d].max(((output - 1) * stride + kernel_field).saturating_sub(input + bef[d]));
        }
        spec.padding = PaddingSpec::ExplicitOnnxPool(bef, aft, false);
    }
    Ok(())
}

/// Writes `model` as an NNEF tar plan at `out`, its weights and arithmetic
/// in `precision`; input and output stay f32 whatever the precision.
pub fn write_plan(model: &ModelProto, shape: FrameShape, out: &Path, what: &str, precision: Precision) -> Result<()> {
    write_typed(&decluttered(model, shape, what)?, out, what, precision)
}

/// Writes a decluttered tract model as an NNEF tar plan in `precision`.
fn write_typed(typed: &TypedModel, out: &Path, what: &str, precision: Precision) -> Result<()> {
    let fail = |stage: &str, e: anyhow::Error| Error::Export { what: what.into(), reason: format!("{stage}: {e:#}") };
    let half;
    let typed = match precision {
        // int8 plans are the f32 plans: the runtime's kernels quantize them
        // at load with the scales in the manifest.
        Precision::F32 | Precision::Int8 => typed,
        Precision::F16 => {
            half = half_precision(typed).map_err(|e| fail("f16 translation", e))?;
            &half
        }
    };
    let file = std::fs::File::create(out).map_err(|e| Error::io(out, e))?;
    tract_nnef::nnef().with_onnx().write_to_tar(typed, file).map_err(|e| fail("NNEF serialisation", e))?;
    Ok(())
}

/// `model` computed in f16 (tract's float-precision translator: f16 weights,
/// f16 ops) between a cast of the f32 input and a cast back of the logits, so
/// an f16 plan is a drop-in for the f32 one. Decluttering afterwards folds the
/// weight casts, so the archive stores f16 weights (half the bytes).
pub fn half_precision(model: &TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::floats::FloatPrecisionTranslator;
    use tract_onnx::tract_core::ops::cast::cast;
    use tract_onnx::tract_core::ops::source::TypedSource;
    use tract_onnx::tract_core::transform::ModelTransform;

    let half = FloatPrecisionTranslator::new(f32::datum_type(), f16::datum_type()).transform_into(model.clone())?;
    let input = model.input_fact(0)?.clone();
    let mut wrapped = TypedModel { symbols: model.symbols.clone(), ..TypedModel::default() };
    let source = wrapped.add_source(model.node(model.inputs[0].node).name.clone(), input)?;
    let source_half = wrapped.wire_node("input.to_f16", cast(f16::datum_type()), &[source])?[0];
    let mut map: std::collections::HashMap<OutletId, OutletId> = Default::default();
    for id in half.eval_order()? {
        let node = half.node(id);
        if node.op_is::<TypedSource>() {
            map.insert(OutletId::new(id, 0), source_half);
            continue;
        }
        let inputs: TVec<OutletId> = node.inputs.iter().map(|i| map[i]).collect();
        for (slot, outlet) in wrapped.wire_node(&node.name, node.op.clone(), &inputs)?.into_iter().enumerate() {
            map.insert(OutletId::new(id, slot), outlet);
        }
    }
    let mut outputs = tvec![];
    for (k, o) in half.outputs.iter().enumerate() {
        let out = map[o];
        let out = if wrapped.outlet_fact(out)?.datum_type == f32::datum_type() {
            out
        } else {
            wrapped.wire_node(format!("output_{k}.to_f32"), cast(f32::datum_type()), &[out])?[0]
        };
        outputs.push(out);
    }
    wrapped.select_output_outlets(&outputs)?;
    wrapped.into_decluttered()
}

/// Copies the f32 bundle at `src` to `dst` with its plans re-written in
/// `precision`, keeping the f32 threshold; int8 calibrates its activation
/// scales on `clean` frames (required then, unused otherwise). For timing
/// and agreement studies without fine-tuning again; a deployed f16 or int8
/// bundle comes from `convert` with `ConvertOptions::precision`, which
/// calibrates τ with the plans as they will run.
pub fn bundle_at_precision(
    src: &Path,
    dst: &Path,
    precision: Precision,
    clean: Option<&FrameSet>,
) -> Result<badexpert_runtime::Manifest> {
    use badexpert_runtime::manifest::MANIFEST_FILE;
    let mut manifest = badexpert_runtime::Manifest::read(&src.join(MANIFEST_FILE))?;
    if manifest.precision != Precision::F32 {
        return Err(Error::Invalid(format!(
            "{} is already a {:?} bundle; start from an f32 one",
            src.display(),
            manifest.precision
        )));
    }
    let writer = crate::output::BundleWriter::new(dst, true)?;
    let nnef = tract_nnef::nnef().with_onnx();
    for plan in [&mut manifest.plans.model, &mut manifest.plans.expert, &mut manifest.plans.auxiliary] {
        let what = plan.file.clone();
        *plan = if precision == Precision::Int8 {
            // The f32 plans as they are; the manifest's scales make them int8.
            writer.copy(&src.join(&what), &what)?
        } else {
            let model = nnef
                .model_for_path(src.join(&what))
                .map_err(|e| Error::Export { what: what.clone(), reason: format!("cannot read NNEF: {e:#}") })?;
            write_typed(&model, &writer.dir().join(&what), &what, precision)?;
            writer.digest(&what)?
        };
    }
    if let Some(clean) = &manifest.clean_frames {
        for f in [&clean.images.file, &clean.labels.file] {
            writer.copy(&src.join(f), f)?;
        }
    }
    manifest.precision = precision;
    if precision == Precision::Int8 {
        let clean = clean.ok_or_else(|| {
            Error::Invalid("an int8 bundle needs clean frames to calibrate its activation scales".into())
        })?;
        manifest.int8 = Some(badexpert_runtime::quantization::calibrate_bundle(writer.dir(), &manifest, clean)?);
    }
    writer.finish(&manifest, None)?;
    Ok(manifest)
}
