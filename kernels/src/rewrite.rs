//! The one pass that places our kernels in a plan, written as rules for
//! tract's [`Rewriter`]: convolutions and dense layers are taken from the
//! decluttered model (before tract's optimizer lowers them to im2col +
//! matmul), pools and pads from the optimized one. A node that does not meet
//! a kernel's exact preconditions keeps tract's op.

use tract_core::internal::*;
use tract_core::model::Rewriter;
use tract_core::ops::array::{Pad, PadMode};
use tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, OptMaxPool, PaddingSpec, PoolSpec};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::konst::Const;
use tract_core::ops::math::{Max, Min};
use tract_core::ops::nn::DataFormat;

use crate::depthwise_conv::{Clamp, DepthwiseConv, DepthwiseGeometry};
use crate::input_conv::{self, InputConv};
use crate::int8::ActivationScales;
use crate::max_pool_2x2::MaxPool2x2;
use crate::packed_conv::{ConvGeometry, PackedConv};
use crate::packed_dense::{DenseLayer, PackedDense};
use crate::pad_planes::PadPlanes;

/// tract's optimizer with badexpert's kernels placed before and after it.
pub fn optimize(model: TypedModel) -> TractResult<TypedModel> {
    optimize_with(model, None)
}

/// [`optimize`], with the layers `int8` names (see [`int8_layers`]) run in
/// int8 at their scale. A name that is no node of this model is an error:
/// the scales were calibrated for another plan. (A dense layer run on more
/// rows than [`PackedDense`] takes, at a larger batch, stays f32.)
pub fn optimize_with(model: TypedModel, int8: Option<&ActivationScales>) -> TractResult<TypedModel> {
    let mut model = model.into_decluttered()?;
    if let Some(stray) = int8.into_iter().flat_map(|s| s.keys()).find(|name| model.node_by_name(name).is_err()) {
        bail!("int8 scale for layer {stray:?}, which this plan does not have: the scales belong to another plan");
    }
    rewrite_decluttered(&mut model, int8)?;
    let mut model = model.into_optimized()?;
    rewrite_optimized(&mut model)?;
    Ok(model)
}

/// Places [`InputConv`], [`PackedConv`] and [`PackedDense`] in a decluttered
/// model, each with the ReLU that alone follows it folded in, in int8 where
/// `int8` has a scale for the node.
pub fn rewrite_decluttered(model: &mut TypedModel, int8: Option<&ActivationScales>) -> TractResult<()> {
    Rewriter::<Option<&ActivationScales>>::default()
        .with_rule_for("badexpert-conv", convolution)
        .with_rule_for("badexpert-dense", dense_layer)
        .rewrite(&int8, model)
}

/// Places [`MaxPool2x2`] and [`PadPlanes`] in an optimized model.
pub fn rewrite_optimized(model: &mut TypedModel) -> TractResult<()> {
    Rewriter::<()>::default()
        .with_rule_for("badexpert-pad", pad)
        .with_rule_for("badexpert-max-pool", |_, model, node, _, op: &MaxPool| {
            max_pool(model, node, &op.pool_spec, op.with_index_outputs.is_none())
        })
        .with_rule_for("badexpert-opt-max-pool", |_, model, node, _, op: &OptMaxPool| {
            max_pool(model, node, &op.pool_spec, op.with_index_outputs.is_none())
        })
        .rewrite(&(), model)
}

/// The layers of a decluttered model that have an int8 kernel — those
/// [`PackedConv`] and [`PackedDense`] take — by node name, with the
/// activations each reads (whose range sets its input scale).
pub fn int8_layers(model: &TypedModel) -> TractResult<Vec<(String, OutletId)>> {
    let mut layers = vec![];
    for id in model.eval_order()? {
        let node = model.node(id);
        let packed = if let Some(conv) = node.op_as::<Conv>() {
            PlainConv::of(model, node, conv)?.is_some_and(|plain| conv_kernel(&plain) == Some(ConvKernel::Packed))
        } else if let Some(einsum) = node.op_as::<EinSum>() {
            DenseLayer::of(model, node, einsum)?.is_some()
        } else {
            false
        };
        if packed {
            layers.push((node.name.clone(), node.inputs[0]));
        }
    }
    Ok(layers)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvKernel {
    Input,
    Packed,
    Depthwise,
}

/// Which of our kernels runs a convolution of this shape, if any.
fn conv_kernel(plain: &PlainConv) -> Option<ConvKernel> {
    let g = &plain.geometry;
    if plain.depthwise {
        return (g.dilation == [1, 1]).then_some(ConvKernel::Depthwise);
    }
    if g.in_channels <= input_conv::MAX_INPUT_CHANNELS && g.stride == [1, 1] && g.dilation == [1, 1] {
        Some(ConvKernel::Input)
    } else if PackedConv::streams_well(g) {
        Some(ConvKernel::Packed)
    } else {
        None
    }
}

fn convolution(
    int8: &Option<&ActivationScales>,
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    conv: &Conv,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(plain) = PlainConv::of(model, node, conv)? else { return Ok(None) };
    let relu = relu_after(model, node);
    let kernel = conv_kernel(&plain);
    if kernel == Some(ConvKernel::Depthwise) {
        let g = plain.geometry;
        let (clamp, replaced) = match relu {
            Some(relu) => clamp_after(model, relu),
            None => (Clamp::NONE, OutletId::new(node.id, 0)),
        };
        let geometry = DepthwiseGeometry { channels: g.out_channels, kernel: g.kernel, stride: g.stride, pad: g.pad };
        let (kernel, bias) = (plain.kernel.try_as_plain_ram()?, plain.bias.try_as_plain_ram()?);
        let op = DepthwiseConv::new(geometry, kernel.as_slice::<f32>()?, bias.as_slice::<f32>()?, clamp)?;
        return replacement(model, name, op, node.inputs[0], replaced).map(Some);
    }
    let op: Box<dyn TypedOp> = match kernel {
        Some(ConvKernel::Input) => Box::new(InputConv {
            kernel: plain.kernel,
            bias: plain.bias,
            pad: plain.geometry.pad,
            relu: relu.is_some(),
        }),
        Some(ConvKernel::Packed) => {
            let (kernel, bias) = (plain.kernel.try_as_plain_ram()?, plain.bias.try_as_plain_ram()?);
            let (kernel, bias) = (kernel.as_slice::<f32>()?, bias.as_slice::<f32>()?);
            Box::new(match int8.and_then(|s| s.get(name)) {
                Some(&scale) => PackedConv::new_int8(plain.geometry, kernel, bias, relu.is_some(), scale)?,
                None => PackedConv::new(plain.geometry, kernel, bias, relu.is_some())?,
            })
        }
        Some(ConvKernel::Depthwise) | None => return Ok(None),
    };
    replacement(model, name, op, node.inputs[0], relu.unwrap_or(OutletId::new(node.id, 0))).map(Some)
}

fn dense_layer(
    int8: &Option<&ActivationScales>,
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    einsum: &EinSum,
) -> TractResult<Option<TypedModelPatch>> {
    let Some(layer) = DenseLayer::of(model, node, einsum)? else { return Ok(None) };
    let last = model.node(layer.last);
    let relu = relu_after(model, last);
    let shape = last.outputs[0].fact.shape.as_concrete().context("dense layer output shape")?.to_vec();
    let op = match int8.and_then(|s| s.get(name)) {
        Some(&scale) => PackedDense::new_int8(layer.rows, &layer.weights, &layer.bias, relu.is_some(), &shape, scale)?,
        None => PackedDense::new(layer.rows, &layer.weights, &layer.bias, relu.is_some(), &shape)?,
    };
    replacement(model, name, op, layer.input, relu.unwrap_or(OutletId::new(layer.last, 0))).map(Some)
}

/// A patch wiring `op` on `input` under `name` that hands it every consumer
/// of `replaced` (the last node of the run of nodes it stands for).
fn replacement(
    model: &TypedModel,
    name: &str,
    op: impl Into<Box<dyn TypedOp>>,
    input: OutletId,
    replaced: OutletId,
) -> TractResult<TypedModelPatch> {
    let mut patch = TypedModelPatch::default();
    let input = patch.tap_model(model, input)?;
    let output = patch.wire_node(name, op, &[input])?[0];
    patch.shunt_outside(model, replaced, output)?;
    Ok(patch)
}

/// The output of a ReLU (`max(x, 0)`) that is the only consumer of `node`'s
/// output, which is not itself a model output.
fn relu_after(model: &TypedModel, node: &TypedNode) -> Option<OutletId> {
    scalar_op_after::<Max>(model, node).filter(|&(_, zero)| zero == 0.0).map(|(relu, _)| relu)
}

/// The clamp a ReLU at `relu` makes, and what it ends at: ReLU6 when a
/// `min(x, c)` alone follows it (ONNX's `Clip(0, c)` as tract declutters it).
fn clamp_after(model: &TypedModel, relu: OutletId) -> (Clamp, OutletId) {
    match scalar_op_after::<Min>(model, model.node(relu.node)).filter(|&(_, high)| high >= 0.0) {
        Some((end, high)) => (Clamp { low: 0.0, high }, end),
        None => (Clamp::RELU, relu),
    }
}

/// The only consumer of `node`'s output (which is not a model output) when
/// it is the binary op `Op` with an f32 scalar constant: its output and
/// the constant.
fn scalar_op_after<Op: BinMiniOp>(model: &TypedModel, node: &TypedNode) -> Option<(OutletId, f32)> {
    if model.outputs.contains(&OutletId::new(node.id, 0)) {
        return None;
    }
    let [next] = &node.outputs.first()?.successors[..] else { return None };
    let next = model.node(next.node);
    next.op_as::<TypedBinOp>().filter(|op| op.0.is::<Op>())?;
    Some((OutletId::new(next.id, 0), scalar_operand(model, node, next)?))
}

/// The f32 scalar constant `next`, a binary op of the same shape as
/// `node`'s output, takes as its other operand.
fn scalar_operand(model: &TypedModel, node: &TypedNode, next: &TypedNode) -> Option<f32> {
    let other = next.inputs.iter().find(|o| o.node != node.id)?;
    let value = model.node(other.node).op_as::<Const>()?.val();
    let same_shape = model.outlet_fact(OutletId::new(next.id, 0)).ok()?.shape == node.outputs[0].fact.shape;
    let scalar = value.datum_type() == f32::datum_type() && value.len() == 1 && same_shape && next.inputs.len() == 2;
    scalar.then(|| value.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.first().copied())?
}

/// A decluttered convolution our kernels can take: f32, NCHW, OIHW constant
/// kernel, constant bias (one per output channel), one group or one per
/// channel (depthwise: `[C, 1, kh, kw]`, also on CHW input, as tract
/// declutters a batch of one), concrete spatial input.
struct PlainConv {
    geometry: ConvGeometry,
    depthwise: bool,
    kernel: Arc<Tensor>,
    bias: Arc<Tensor>,
}

impl PlainConv {
    fn of(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<PlainConv>> {
        let spec = &conv.pool_spec;
        let input = model.outlet_fact(node.inputs[0])?;
        let konst =
            |i: usize| node.inputs.get(i).and_then(|o| model.node(o.node).op_as::<Const>()).map(|c| c.val().clone());
        let (Some(kernel), Some(bias)) = (konst(1), konst(2)) else { return Ok(None) };
        let c = spec.input_channels;
        let depthwise = conv.group > 1 && conv.group == c && kernel.rank() == 4 && kernel.shape()[..2] == [c, 1];
        let plain = (conv.group == 1 && kernel.rank() == 4 && kernel.shape()[1] == c || depthwise)
            && conv.q_params.is_none()
            && conv.kernel_fmt == KernelFormat::OIHW
            && (spec.data_format == DataFormat::NCHW && input.rank() == 4
                || depthwise && spec.data_format == DataFormat::CHW && input.rank() == 3)
            && input.datum_type == f32::datum_type()
            && kernel.datum_type() == f32::datum_type()
            && bias.datum_type() == f32::datum_type()
            && spec.kernel_shape.len() == 2;
        let hw: Option<Vec<usize>> =
            input.shape.iter().skip(input.rank().saturating_sub(2)).map(|d| d.to_usize().ok()).collect();
        let (true, Some(hw)) = (plain, hw) else { return Ok(None) };
        let out_channels = kernel.shape()[0];
        let bias = if bias.len() == out_channels {
            bias
        } else if bias.len() == 1 {
            let value = *bias.try_as_plain_ram()?.as_slice::<f32>()?.first().unwrap_or(&0.0);
            Arc::new(Tensor::from_shape(&[out_channels], &vec![value; out_channels])?)
        } else {
            return Ok(None);
        };
        let padding = spec.computed_padding(&hw);
        let pair = |v: &[usize]| [v[0], v[1]];
        let geometry = ConvGeometry {
            in_channels: spec.input_channels,
            out_channels,
            input: [hw[0], hw[1]],
            kernel: [kernel.shape()[2], kernel.shape()[3]],
            stride: pair(&spec.strides()),
            dilation: pair(&spec.dilations()),
            pad: [(padding[0].pad_before, padding[0].pad_after), (padding[1].pad_before, padding[1].pad_after)],
        };
        Ok(geometry.output().is_some().then_some(PlainConv { geometry, depthwise, kernel, bias }))
    }
}

fn pad(_: &(), model: &TypedModel, node: &TypedNode, _: &str, pad: &Pad) -> TractResult<Option<TypedModelPatch>> {
    let Some(op) = pad_planes(pad, model.outlet_fact(node.inputs[0])?) else { return Ok(None) };
    TypedModelPatch::replace_single_op(model, node, &node.inputs, op).map(Some)
}

/// A constant f32 pad of the last two axes only, as [`PadPlanes`].
fn pad_planes(pad: &Pad, input: &TypedFact) -> Option<PadPlanes> {
    let PadMode::Constant(value) = &pad.mode else { return None };
    let value = value.cast_to_scalar::<f32>().ok()?;
    let r = pad.pads.len();
    let only_planes = r >= 2 && pad.pads[..r - 2].iter().all(|&(b, a)| b == 0 && a == 0);
    (only_planes && input.datum_type == f32::datum_type() && input.rank() == r).then(|| PadPlanes {
        top: pad.pads[r - 2].0,
        bottom: pad.pads[r - 2].1,
        left: pad.pads[r - 1].0,
        right: pad.pads[r - 1].1,
        value,
    })
}

fn max_pool(
    model: &TypedModel,
    node: &TypedNode,
    spec: &PoolSpec,
    values_only: bool,
) -> TractResult<Option<TypedModelPatch>> {
    let input = model.outlet_fact(node.inputs[0])?;
    if !(values_only && is_plain_2x2(spec) && input.datum_type == f32::datum_type() && input.rank() == 4) {
        return Ok(None);
    }
    TypedModelPatch::replace_single_op(model, node, &node.inputs, MaxPool2x2).map(Some)
}

/// NCHW, 2×2 kernel, stride 2, no dilation, no padding.
fn is_plain_2x2(spec: &PoolSpec) -> bool {
    let no_padding = match &spec.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(before, after) | PaddingSpec::ExplicitOnnxPool(before, after, false) => {
            before.iter().chain(after).all(|&p| p == 0)
        }
        _ => false,
    };
    spec.data_format == DataFormat::NCHW
        && spec.kernel_shape[..] == [2, 2]
        && spec.strides.as_deref() == Some(&[2, 2][..])
        && spec.dilations.as_deref().is_none_or(|d| d.iter().all(|&d| d == 1))
        && no_padding
}
