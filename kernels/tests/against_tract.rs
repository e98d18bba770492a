//! Every kernel against tract's own plan of the same graph, on every
//! geometry a kernel takes, and the shapes it must leave to tract.

use badexpert_kernels::*;
use tract_core::internal::*;
use tract_core::ops::array::{Pad, PadMode};
use tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::nn::DataFormat;

/// How many of our kernels a plan holds.
fn ours(model: &TypedModel) -> usize {
    model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_is::<MaxPool2x2>()
                || n.op_is::<PadPlanes>()
                || n.op_is::<PackedConv>()
                || n.op_is::<PackedDense>()
                || n.op_is::<InputConv>()
                || n.op_is::<DepthwiseConv>()
        })
        .count()
}

/// Input shape, padding per axis, pad value.
type PadCase<'a> = (&'a [usize], Vec<(usize, usize)>, f32);
/// Einsum expression, input shape, weight shape, bias shape, ReLU after.
type DenseCase<'a> = (&'a str, &'a [usize], &'a [usize], Option<&'a [usize]>, bool);

/// A one-pool model on `shape`, optimized by tract, with or without our kernel.
fn pool_plan(
    shape: [usize; 4],
    spec: PoolSpec,
    own_kernels: bool,
) -> TractResult<(std::sync::Arc<TypedRunnableModel>, usize)> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(shape))?;
    let y = model.wire_node("pool", MaxPool::new(spec, None), &[x])?;
    model.select_output_outlets(&y)?;
    let mut model = model.into_optimized()?;
    let replaced = if own_kernels {
        rewrite_optimized(&mut model)?;
        ours(&model)
    } else {
        0
    };
    Ok((model.into_runnable()?, replaced))
}

fn spec(kernel: usize, stride: usize, padding: PaddingSpec) -> PoolSpec {
    PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: tvec![kernel, kernel],
        padding,
        dilations: None,
        strides: Some(tvec![stride, stride]),
        input_channels: 3,
        output_channels: 3,
    }
}

#[test]
fn the_kernel_replaces_2x2_pools_and_matches_tract_bit_for_bit() -> TractResult<()> {
    for shape in [[1, 3, 28, 28], [2, 3, 7, 9], [1, 3, 2, 2], [1, 3, 3, 5], [2, 3, 17, 33]] {
        let len = shape.iter().product::<usize>();
        let values: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0).collect();
        let x = Tensor::from_shape(&shape, &values)?;
        let (ours, replaced) = pool_plan(shape, spec(2, 2, PaddingSpec::Valid), true)?;
        let (tract, _) = pool_plan(shape, spec(2, 2, PaddingSpec::Valid), false)?;
        assert_eq!(replaced, 1, "{shape:?}");
        let a = ours.run(tvec![x.clone().into_tvalue()])?.remove(0);
        let b = tract.run(tvec![x.into_tvalue()])?.remove(0);
        assert_eq!(a.shape(), b.shape(), "{shape:?}");
        assert_eq!(a.try_as_plain_ram()?.as_slice::<f32>()?, b.try_as_plain_ram()?.as_slice::<f32>()?, "{shape:?}");
    }
    Ok(())
}

#[test]
fn plane_padding_matches_tract_bit_for_bit() -> TractResult<()> {
    let cases: [PadCase; 4] = [
        (&[1, 3, 5, 7], vec![(0, 0), (0, 0), (1, 1), (1, 1)], 0.0),
        (&[2, 3, 4, 4], vec![(0, 0), (0, 0), (0, 2), (3, 0)], -1.5),
        (&[3, 1, 6], vec![(0, 0), (2, 1), (0, 4)], 0.0),
        (&[1, 3, 5, 7], vec![(0, 1), (0, 0), (1, 1), (1, 1)], 0.0),
    ];
    for (shape, pads, value) in cases {
        let len = shape.iter().product::<usize>();
        let x = Tensor::from_shape(shape, &(0..len).map(|i| i as f32 * 0.5 - 3.0).collect::<Vec<_>>())?;
        let expect_ours = pads[..pads.len() - 2].iter().all(|&p| p == (0, 0));
        let run = |own: bool| -> TractResult<(Tensor, usize)> {
            let mut model = TypedModel::default();
            let s = model.add_source("x", f32::fact(shape))?;
            let mode = PadMode::Constant(Arc::new(tensor0(value)));
            let y = model.wire_node("pad", Pad { pads: pads.clone(), mode }, &[s])?;
            model.select_output_outlets(&y)?;
            let replaced = if own {
                rewrite_optimized(&mut model)?;
                ours(&model)
            } else {
                0
            };
            let out = model.into_runnable()?.run(tvec![x.clone().into_tvalue()])?.remove(0).into_tensor();
            Ok((out, replaced))
        };
        let ((ours, replaced), (tract, _)) = (run(true)?, run(false)?);
        assert_eq!(replaced, expect_ours as usize, "{shape:?} {pads:?}");
        assert_eq!(ours, tract, "{shape:?} {pads:?}");
    }
    Ok(())
}

/// A one-convolution model, no dilation.
fn conv_model(
    shape: [usize; 4],
    out: usize,
    k: [usize; 2],
    padding: PaddingSpec,
    stride: usize,
    group: usize,
) -> TractResult<TypedModel> {
    dilated_conv_model(shape, out, k, padding, stride, group, 1)
}

fn dilated_conv_model(
    shape: [usize; 4],
    out: usize,
    k: [usize; 2],
    padding: PaddingSpec,
    stride: usize,
    group: usize,
    dilation: usize,
) -> TractResult<TypedModel> {
    let c = shape[1];
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(shape))?;
    let len = out * c / group * k[0] * k[1];
    let kernel = Tensor::from_shape(
        &[out, c / group, k[0], k[1]],
        &(0..len).map(|i| ((i * 37) % 19) as f32 / 7.0 - 1.3).collect::<Vec<_>>(),
    )?;
    let bias = Tensor::from_shape(&[out], &(0..out).map(|i| i as f32 * 0.25 - 1.0).collect::<Vec<_>>())?;
    let kernel = model.add_const("kernel", kernel)?;
    let bias = model.add_const("bias", bias)?;
    let pool_spec = PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: k.iter().copied().collect(),
        padding,
        dilations: Some(tvec![dilation, dilation]),
        strides: Some(tvec![stride, stride]),
        input_channels: c,
        output_channels: out,
    };
    let op = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group, q_params: None };
    let y = model.wire_node("conv", op, &[x, kernel, bias])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

#[test]
fn input_convolutions_match_tract() -> TractResult<()> {
    let cases = [
        ([1, 1, 28, 28], 32, [3, 3], PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1])),
        ([2, 3, 32, 32], 16, [3, 3], PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1])),
        ([1, 3, 17, 13], 8, [5, 5], PaddingSpec::Explicit(tvec![1, 2], tvec![2, 0])),
        ([1, 4, 10, 7], 5, [3, 2], PaddingSpec::SameUpper),
        ([1, 1, 6, 40], 3, [3, 3], PaddingSpec::Valid),
    ];
    for (shape, out, k, padding) in cases {
        let model = conv_model(shape, out, k, padding.clone(), 1, 1)?;
        let ours = optimize(model.clone())?;
        assert!(ours.nodes().iter().any(|n| n.op_is::<InputConv>()), "{shape:?} {k:?} {padding:?} kept tract's conv");
        let len = shape.iter().product::<usize>();
        let x =
            Tensor::from_shape(&shape, &(0..len).map(|i| ((i * 7919) % 251) as f32 / 50.0 - 2.5).collect::<Vec<_>>())?;
        let a = ours.into_runnable()?.run(tvec![x.clone().into_tvalue()])?.remove(0).into_tensor();
        let b = model.into_optimized()?.into_runnable()?.run(tvec![x.into_tvalue()])?.remove(0).into_tensor();
        assert_eq!(a.shape(), b.shape(), "{shape:?} {k:?} {padding:?}");
        let (a, b) =
            (a.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(), b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec());
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{shape:?} {k:?} {padding:?}: relative difference {worst}");
    }
    Ok(())
}

/// Runs `model` with our kernels and with tract's; returns the worst
/// difference relative to the output's largest magnitude.
fn compare_with_tract(model: &TypedModel, ours: TypedModel, shape: &[usize]) -> TractResult<f32> {
    let len = shape.iter().product::<usize>();
    let x = Tensor::from_shape(shape, &(0..len).map(|i| ((i * 7919) % 251) as f32 / 50.0 - 2.5).collect::<Vec<_>>())?;
    let a = ours.into_runnable()?.run(tvec![x.clone().into_tvalue()])?.remove(0).into_tensor();
    let b = model.clone().into_optimized()?.into_runnable()?.run(tvec![x.into_tvalue()])?.remove(0).into_tensor();
    ensure!(a.shape() == b.shape(), "shapes {:?} and {:?}", a.shape(), b.shape());
    let (a, b) = (a.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(), b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec());
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    Ok(a.iter().zip(&b).map(|(x, y)| (x - y).abs() / scale).fold(0f32, f32::max))
}

#[test]
fn packed_convolutions_match_tract() -> TractResult<()> {
    let pad = |b: usize, a: usize| PaddingSpec::Explicit(tvec![b, b], tvec![a, a]);
    // Channels, kernel, stride, padding and sizes chosen so that output
    // channels are not whole panels, pixels not whole chunks, batches loop,
    // and every path runs: unfolded whole (4×4, 48×48) and chunk by chunk
    // (96×96 and 60×60 at stride 2), and read in place on the output grid
    // chunk by chunk (32×32) and panel by panel (weights past the cache,
    // 16×16) and on the padded grid (8×8, 9×7, the 6×6 with no padding,
    // 5×5, 40×40, and at stride 2 and 3, where some phases are never read).
    let cases = [
        ([1, 64, 4, 4], 64, [3, 3], pad(1, 1), 1),
        ([2, 32, 8, 8], 13, [3, 3], pad(1, 1), 1),
        ([1, 16, 14, 14], 20, [3, 3], pad(1, 1), 2),
        ([1, 8, 9, 7], 7, [3, 2], pad(0, 2), 1),
        ([2, 12, 6, 6], 5, [1, 3], PaddingSpec::Valid, 1),
        ([1, 10, 5, 5], 9, [5, 5], PaddingSpec::SameUpper, 1),
        ([1, 16, 48, 48], 8, [3, 3], pad(1, 1), 1),
        ([1, 16, 96, 96], 8, [3, 3], pad(1, 1), 2),
        ([1, 8, 32, 32], 8, [3, 3], pad(1, 1), 1),
        ([1, 64, 16, 16], 384, [3, 3], pad(1, 1), 1),
        ([1, 16, 40, 40], 8, [3, 3], pad(1, 1), 1),
        ([1, 32, 60, 60], 8, [3, 3], pad(1, 1), 2),
        ([1, 16, 15, 15], 24, [1, 3], PaddingSpec::Valid, 2),
        ([1, 6, 11, 10], 5, [3, 3], pad(2, 0), 3),
    ];
    for (shape, out, k, padding, stride) in cases {
        let model = conv_model(shape, out, k, padding.clone(), stride, 1)?;
        let ours = optimize(model.clone())?;
        assert!(ours.nodes().iter().any(|n| n.op_is::<PackedConv>()), "{shape:?} {k:?} {padding:?} kept tract's conv");
        let worst = compare_with_tract(&model, ours, &shape)?;
        assert!(worst <= 1e-5, "{shape:?} {k:?} {padding:?} stride {stride}: relative difference {worst}");
    }
    Ok(())
}

/// The int8 layers of `model`, each scaled to the range of the test
/// input [`compare_with_tract`] feeds (as the converter calibrates on
/// clean frames); fails unless there are `layers` of them.
fn int8_scales(model: &TypedModel, layers: usize) -> TractResult<ActivationScales> {
    let found = int8_layers(&model.clone().into_decluttered()?)?;
    ensure!(found.len() == layers, "{} int8 layers, expected {layers}", found.len());
    Ok(found.into_iter().map(|(name, _)| (name, int8::scale_for(2.52))).collect())
}

#[test]
fn int8_convolutions_stay_within_quantization_error_of_tract() -> TractResult<()> {
    let pad = |b: usize, a: usize| PaddingSpec::Explicit(tvec![b, b], tvec![a, a]);
    // Odd depths (a tap pair half empty), partial panels and chunks, both
    // loop orders, batches, the padded grid (40×40).
    let cases = [
        ([1, 64, 4, 4], 64, [3, 3], pad(1, 1), 1),
        ([2, 32, 8, 8], 13, [3, 3], pad(1, 1), 1),
        ([1, 16, 14, 14], 20, [3, 3], pad(1, 1), 2),
        ([1, 7, 9, 7], 7, [3, 3], pad(0, 2), 1),
        ([2, 12, 6, 6], 5, [1, 3], PaddingSpec::Valid, 1),
        ([1, 16, 48, 48], 8, [3, 3], pad(1, 1), 1),
        ([1, 16, 40, 40], 8, [3, 3], pad(1, 1), 1),
    ];
    for (shape, out, k, padding, stride) in cases {
        let model = conv_model(shape, out, k, padding.clone(), stride, 1)?;
        let ours = optimize_with(model.clone(), Some(&int8_scales(&model, 1)?))?;
        assert!(
            ours.nodes().iter().any(|n| n.op_as::<PackedConv>().is_some_and(|c| c.is_int8())),
            "{shape:?}: no int8 conv"
        );
        let worst = compare_with_tract(&model, ours, &shape)?;
        // Sums of many products each off by ≲ 1/254 relative: ~1 % of the output range.
        assert!(
            worst > 0.0 && worst <= 0.02,
            "{shape:?} {k:?} {padding:?} stride {stride}: relative difference {worst}"
        );
    }
    Ok(())
}

#[test]
fn int8_scales_of_another_plan_are_refused() -> TractResult<()> {
    let model = conv_model([1, 16, 8, 8], 8, [3, 3], PaddingSpec::Valid, 1, 1)?;
    let scales = ActivationScales::from([("elsewhere".to_string(), 0.1)]);
    let error = optimize_with(model, Some(&scales)).unwrap_err().to_string();
    assert!(error.contains("\"elsewhere\"") && error.contains("another plan"), "{error}");
    Ok(())
}

#[test]
fn dilated_convolutions_match_tract() -> TractResult<()> {
    let model =
        dilated_conv_model([1, 6, 11, 11], 10, [3, 3], PaddingSpec::Explicit(tvec![2, 1], tvec![2, 3]), 1, 1, 2)?;
    let ours = optimize(model.clone())?;
    assert!(ours.nodes().iter().any(|n| n.op_is::<PackedConv>()));
    let worst = compare_with_tract(&model, ours, &[1, 6, 11, 11])?;
    assert!(worst <= 1e-5, "relative difference {worst}");
    Ok(())
}

/// `model` with a ReLU (`max(x, 0)`, as tract declutters ONNX's Relu) on
/// its output; with `tap`, the pre-activation stays an output too.
fn with_relu(mut model: TypedModel, tap: bool) -> TractResult<TypedModel> {
    let y = model.output_outlets()?[0];
    let zero = model.add_const("zero", tensor4(&[[[[0f32]]]]))?;
    let relu = model.wire_node("relu", tract_core::ops::math::max(), &[y, zero])?[0];
    model.select_output_outlets(&if tap { vec![relu, y] } else { vec![relu] })?;
    Ok(model)
}

#[test]
fn a_relu_that_alone_follows_a_convolution_is_folded_in() -> TractResult<()> {
    let pad = || PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]);
    for (shape, out) in [([1, 1, 12, 12], 8), ([2, 16, 6, 6], 10)] {
        let model = with_relu(conv_model(shape, out, [3, 3], pad(), 1, 1)?, false)?;
        let ours = optimize(model.clone())?;
        let folded = ours.nodes().iter().any(|n| {
            n.op_as::<PackedConv>().is_some_and(|op| op.relu) || n.op_as::<InputConv>().is_some_and(|op| op.relu)
        });
        assert!(folded, "{shape:?}: ReLU not folded");
        assert!(!ours.nodes().iter().any(|n| n.name == "relu"), "{shape:?}: the ReLU node stayed");
        let worst = compare_with_tract(&model, ours, &shape)?;
        assert!(worst <= 1e-5, "{shape:?}: relative difference {worst}");
    }
    // The pre-activation is needed elsewhere: the ReLU stays a node of its own.
    let model = with_relu(conv_model([1, 16, 6, 6], 10, [3, 3], pad(), 1, 1)?, true)?;
    let ours = optimize(model)?;
    assert!(ours.nodes().iter().any(|n| n.op_as::<PackedConv>().is_some_and(|op| !op.relu)));
    Ok(())
}

#[test]
fn other_convolutions_keep_tracts_op() -> TractResult<()> {
    let pad = || PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]);
    // Grouped; and too wide for either operand to stay in cache.
    for (shape, out, group) in [([1, 4, 8, 8], 8, 2), ([1, 512, 32, 32], 512, 1)] {
        let ours = optimize(conv_model(shape, out, [3, 3], pad(), 1, group)?)?;
        assert!(
            ours.nodes()
                .iter()
                .any(|n| n.op_is::<Conv>() || n.op_is::<tract_core::ops::matmul::optimized::OptMatMul>()),
            "{shape:?}"
        );
        assert!(
            !ours.nodes().iter().any(|n| n.op_is::<InputConv>() || n.op_is::<PackedConv>()),
            "{shape:?} group {group}"
        );
    }
    // Input-sized channels with a stride go to the packed product instead.
    let ours = optimize(conv_model([1, 3, 16, 16], 8, [3, 3], pad(), 2, 1)?)?;
    assert!(
        ours.nodes().iter().any(|n| n.op_is::<PackedConv>()) && !ours.nodes().iter().any(|n| n.op_is::<InputConv>())
    );
    Ok(())
}

/// `model` with ReLU6 on its output, as tract declutters ONNX's
/// `Clip(0, 6)`: `min(max(x, 0), 6)`.
fn with_relu6(model: TypedModel) -> TractResult<TypedModel> {
    let mut model = with_relu(model, false)?;
    let y = model.output_outlets()?[0];
    let six = model.add_const("six", tensor4(&[[[[6f32]]]]))?;
    let clipped = model.wire_node("relu6", tract_core::ops::math::min(), &[y, six])?;
    model.select_output_outlets(&clipped)?;
    Ok(model)
}

#[test]
fn depthwise_convolutions_match_tract_with_their_clamp_folded_in() -> TractResult<()> {
    let pad = |b: usize, a: usize| PaddingSpec::Explicit(tvec![b, b], tvec![a, a]);
    // MobileNetV2's shapes (3×3, stride 1 and 2, pad 1), odd and even
    // sizes at stride 2 (phase planes of unequal height), a 5×5 kernel,
    // asymmetric and no padding, batches, planes wider than a register block.
    let cases = [
        ([1, 16, 14, 14], [3, 3], pad(1, 1), 1),
        ([2, 96, 14, 14], [3, 3], pad(1, 1), 2),
        ([1, 8, 7, 7], [3, 3], pad(1, 1), 2),
        ([1, 5, 9, 12], [5, 5], PaddingSpec::SameUpper, 1),
        ([1, 4, 11, 10], [3, 3], pad(0, 2), 2),
        ([2, 3, 6, 6], [3, 3], PaddingSpec::Valid, 1),
        ([1, 6, 40, 37], [3, 3], pad(1, 1), 2),
        ([1, 6, 10, 10], [1, 1], PaddingSpec::Valid, 2),
    ];
    for (shape, k, padding, stride) in cases {
        let c = shape[1];
        let plain = conv_model(shape, c, k, padding.clone(), stride, c)?;
        for (model, clamp) in [
            (plain.clone(), Clamp::NONE),
            (with_relu(plain.clone(), false)?, Clamp::RELU),
            (with_relu6(plain.clone())?, Clamp { low: 0.0, high: 6.0 }),
        ] {
            let ours = optimize(model.clone())?;
            let found: Vec<_> = ours.nodes().iter().filter_map(|n| n.op_as::<DepthwiseConv>()).collect();
            assert!(found.len() == 1 && found[0].clamp == clamp, "{shape:?} {k:?} stride {stride}: {found:?}");
            assert!(!ours.nodes().iter().any(|n| n.name == "relu" || n.name == "relu6"), "{shape:?}: clamp stayed");
            let worst = compare_with_tract(&model, ours, &shape)?;
            assert!(
                worst <= 1e-5,
                "{shape:?} {k:?} {padding:?} stride {stride} {clamp:?}: relative difference {worst}"
            );
        }
    }
    // Dilated depthwise, and a channel multiplier of two: tract's op.
    for (model, what) in [
        (dilated_conv_model([1, 8, 12, 12], 8, [3, 3], pad(2, 2), 1, 8, 2)?, "dilated"),
        (conv_model([1, 8, 12, 12], 16, [3, 3], pad(1, 1), 1, 8)?, "multiplier 2"),
    ] {
        let ours = optimize(model)?;
        assert!(!ours.nodes().iter().any(|n| n.op_is::<DepthwiseConv>()), "{what}");
    }
    Ok(())
}

#[test]
fn depthwise_convolutions_on_chw_input_match_tract() -> TractResult<()> {
    // At batch 1 tract declutters the batch axis away after a 1×1
    // convolution it runs as a product: MobileNet's depthwise layers then
    // see CHW input.
    for (c, size, stride) in [(64, 14, 1), (96, 14, 2), (5, 9, 2)] {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([c, size, size]))?;
        let kernel: Vec<f32> = (0..c * 9).map(|i| ((i * 37) % 19) as f32 / 7.0 - 1.3).collect();
        let kernel = model.add_const("kernel", Tensor::from_shape(&[c, 1, 3, 3], &kernel)?)?;
        let bias =
            model.add_const("bias", Tensor::from_shape(&[c], &(0..c).map(|i| i as f32 * 0.1).collect::<Vec<_>>())?)?;
        let pool_spec = PoolSpec {
            data_format: DataFormat::CHW,
            kernel_shape: tvec![3, 3],
            padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
            dilations: None,
            strides: Some(tvec![stride, stride]),
            input_channels: c,
            output_channels: c,
        };
        let op = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: c, q_params: None };
        let y = model.wire_node("conv", op, &[x, kernel, bias])?;
        model.select_output_outlets(&y)?;
        let ours = optimize(model.clone())?;
        assert!(ours.nodes().iter().any(|n| n.op_is::<DepthwiseConv>()), "{c}×{size}² stride {stride}");
        let worst = compare_with_tract(&model, ours, &[c, size, size])?;
        assert!(worst <= 1e-5, "{c}×{size}² stride {stride}: relative difference {worst}");
    }
    Ok(())
}

/// `x · W` as an `EinSum` of `expr` (activations first), plus a bias
/// constant of `bias` shape and a ReLU when asked.
fn dense_model(expr: &str, x: &[usize], w: &[usize], bias: Option<&[usize]>, relu: bool) -> TractResult<TypedModel> {
    let values = |shape: &[usize], seed: usize| -> TractResult<Tensor> {
        let len = shape.iter().product::<usize>();
        Tensor::from_shape(shape, &(0..len).map(|i| ((i * seed) % 61) as f32 / 40.0 - 0.7).collect::<Vec<_>>())
    };
    let mut model = TypedModel::default();
    let source = model.add_source("x", f32::fact(x))?;
    let weights = model.add_const("w", values(w, 37)?)?;
    let mut y = model.wire_node("dense", EinSum::new(expr.parse()?, f32::datum_type()), &[source, weights])?[0];
    if let Some(shape) = bias {
        let b = model.add_const("b", values(shape, 11)?)?;
        y = model.wire_node("bias", tract_core::ops::math::add(), &[y, b])?[0];
    }
    if relu {
        let rank = model.outlet_fact(y)?.rank();
        let zero = model.add_const("zero", Tensor::from_shape(&vec![1; rank], &[0f32])?)?;
        y = model.wire_node("relu", tract_core::ops::math::max(), &[y, zero])?[0];
    }
    model.select_output_outlets(&[y])?;
    Ok(model)
}

#[test]
fn dense_layers_on_few_rows_match_tract() -> TractResult<()> {
    // The forms tract's ONNX front-end declutters Gemm, MatMul and
    // Flatten + Gemm into, at batch 1 and more, with weights stored
    // either way round, with and without bias and ReLU.
    let cases: [DenseCase; 7] = [
        ("mbak,nbak->n", &[1, 8, 3, 3], &[20, 8, 3, 3], Some(&[20]), true),
        ("mbak,nbak->mn", &[3, 8, 3, 3], &[20, 8, 3, 3], Some(&[1, 20]), false),
        ("k,nk->mn", &[37], &[10, 37], Some(&[1, 10]), false),
        ("mk,nk->mn", &[4, 50], &[70, 50], None, true),
        ("mk,kn->mn", &[2, 50], &[50, 33], Some(&[1, 33]), false),
        ("mk,nk->nm", &[1, 16], &[24, 16], Some(&[24, 1]), false),
        ("mtk,nk->mtn", &[1, 3, 16], &[40, 16], Some(&[1, 1, 40]), true),
    ];
    for (expr, x, w, bias, relu) in cases {
        let model = dense_model(expr, x, w, bias, relu)?;
        let ours = optimize(model.clone())?;
        let dense: Vec<&PackedDense> = ours.nodes().iter().filter_map(|n| n.op_as::<PackedDense>()).collect();
        assert_eq!(dense.len(), 1, "{expr} {x:?}: {ours}");
        assert_eq!(dense[0].relu, relu, "{expr}: ReLU folding");
        let left: Vec<_> = ours.nodes().iter().filter(|n| ["bias", "relu"].contains(&n.name.as_str())).collect();
        assert!(left.is_empty(), "{expr}: bias or ReLU stayed a node");
        let worst = compare_with_tract(&model, ours, x)?;
        assert!(worst <= 1e-5, "{expr} {x:?}: relative difference {worst}");
    }
    Ok(())
}

#[test]
fn int8_dense_layers_stay_within_quantization_error_of_tract() -> TractResult<()> {
    let cases: [DenseCase; 4] = [
        ("mbak,nbak->n", &[1, 8, 3, 3], &[20, 8, 3, 3], Some(&[20]), true),
        ("k,nk->mn", &[37], &[10, 37], Some(&[1, 10]), false),
        ("mk,nk->mn", &[4, 51], &[70, 51], None, true),
        ("mk,kn->mn", &[1, 300], &[300, 100], Some(&[1, 100]), false),
    ];
    for (expr, x, w, bias, relu) in cases {
        let model = dense_model(expr, x, w, bias, relu)?;
        let ours = optimize_with(model.clone(), Some(&int8_scales(&model, 1)?))?;
        let dense: Vec<&PackedDense> = ours.nodes().iter().filter_map(|n| n.op_as::<PackedDense>()).collect();
        assert!(dense.len() == 1 && dense[0].is_int8(), "{expr} {x:?}: {ours}");
        let worst = compare_with_tract(&model, ours, x)?;
        assert!(worst > 0.0 && worst <= 0.02, "{expr} {x:?}: relative difference {worst}");
    }
    Ok(())
}

#[test]
fn other_products_keep_tracts_op() -> TractResult<()> {
    // More rows than MAX_ROWS; rows after the summed axis; units before
    // rows; activations times activations.
    let cases: [(&str, &[usize], &[usize]); 3] =
        [("mtk,nk->mtn", &[1, 9, 16], &[8, 16]), ("km,nk->mn", &[16, 2], &[8, 16]), ("mk,nk->nm", &[2, 16], &[8, 16])];
    for (expr, x, w) in cases {
        let model = dense_model(expr, x, w, None, false)?;
        let ours = optimize(model.clone())?;
        assert!(!ours.nodes().iter().any(|n| n.op_is::<PackedDense>()), "{expr} {x:?}: {ours}");
        let worst = compare_with_tract(&model, ours, x)?;
        assert!(worst <= 1e-5, "{expr} {x:?}: relative difference {worst}");
    }
    let mut model = TypedModel::default();
    let a = model.add_source("a", f32::fact([2, 16]))?;
    let b = model.add_source("b", f32::fact([8, 16]))?;
    let y = model.wire_node("product", EinSum::new("mk,nk->mn".parse()?, f32::datum_type()), &[a, b])?;
    model.select_output_outlets(&y)?;
    assert!(!optimize(model)?.nodes().iter().any(|n| n.op_is::<PackedDense>()));
    // A bias that varies by row is not folded: it stays an Add after the layer.
    let model = dense_model("mk,nk->mn", &[2, 16], &[8, 16], Some(&[2, 8]), false)?;
    let ours = optimize(model.clone())?;
    assert!(
        ours.nodes().iter().any(|n| n.op_is::<PackedDense>()) && ours.nodes().iter().any(|n| n.name == "bias"),
        "{ours}"
    );
    assert!(compare_with_tract(&model, ours, &[2, 16])? <= 1e-5);
    Ok(())
}

#[test]
fn other_pools_keep_tracts_op() -> TractResult<()> {
    let others = [
        spec(3, 2, PaddingSpec::Valid),
        spec(2, 1, PaddingSpec::Valid),
        spec(2, 2, PaddingSpec::ExplicitOnnxPool(tvec![0, 0], tvec![0, 0], true)),
        spec(2, 2, PaddingSpec::SameUpper),
        spec(2, 2, PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1])),
    ];
    for s in others {
        assert_eq!(pool_plan([1, 3, 9, 9], s.clone(), true)?.1, 0, "{s:?}");
    }
    Ok(())
}
