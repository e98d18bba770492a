//! badexpert's kernels against tract's own plan for the same one-op model,
//! on the shapes the guarded models use: the four 3×3 stages of
//! ResNet18-CIFAR (32×32 … 4×4 maps, 64 … 512 channels), its stride-2 stage
//! entry, the demo CNN's second convolution, and the demo's 3136 → 128
//! dense layer at batch 1, alone and as in the guard (three such layers in
//! turn; then also with 4 MiB of other data read, untimed, before each
//! call, as the rest of each model does in the guard), and MobileNetV2's
//! depthwise 3×3 convolutions with their ReLU6. Compare `ours` (and
//! `ours, int8`, the same kernels on int8 values) with `tract` within one
//! run: `cargo bench -p badexpert-kernels --bench kernels`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::nn::DataFormat;

use badexpert_kernels::{int8_layers, optimize_with, ActivationScales, DepthwiseConv, PackedConv, PackedDense};

/// Our plan of a one-layer `model`, its layer in int8 when asked (at an
/// arbitrary scale: the time does not depend on it).
fn ours(model: TypedModel, int8: bool) -> TypedModel {
    let layers = int8_layers(&model.clone().into_decluttered().unwrap()).unwrap();
    let scales: ActivationScales = layers.into_iter().filter(|_| int8).map(|(name, _)| (name, 0.01)).collect();
    let plan = optimize_with(model, Some(&scales)).unwrap();
    let layers = plan.nodes().iter().filter(|n| {
        n.op_as::<PackedConv>().map(|c| c.is_int8()).or_else(|| n.op_as::<PackedDense>().map(|d| d.is_int8()))
            == Some(int8)
    });
    assert_eq!(layers.count(), 1, "our kernel, int8: {int8}");
    plan
}

/// A model of one 3×3, pad-1 convolution with deterministic weights.
fn conv_model(channels: usize, size: usize, out: usize, stride: usize) -> TractResult<TypedModel> {
    grouped_conv_model(channels, size, out, stride, 1)
}

/// [`conv_model`] in `group` groups.
fn grouped_conv_model(
    channels: usize,
    size: usize,
    out: usize,
    stride: usize,
    group: usize,
) -> TractResult<TypedModel> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([1, channels, size, size]))?;
    let len = out * channels / group * 9;
    let kernel = Tensor::from_shape(
        &[out, channels / group, 3, 3],
        &(0..len).map(|i| ((i * 37) % 19) as f32 / 70.0 - 0.13).collect::<Vec<_>>(),
    )?;
    let bias = Tensor::from_shape(&[out], &(0..out).map(|i| i as f32 * 0.01).collect::<Vec<_>>())?;
    let kernel = model.add_const("kernel", kernel)?;
    let bias = model.add_const("bias", bias)?;
    let pool_spec = PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: tvec![3, 3],
        padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
        dilations: None,
        strides: Some(tvec![stride, stride]),
        input_channels: channels,
        output_channels: out,
    };
    let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group, q_params: None };
    let y = model.wire_node("conv", conv, &[x, kernel, bias])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

fn convolutions(c: &mut Criterion) {
    let shapes = [
        ("resnet18 stage 1, 64ch 32x32", 64, 32, 64, 1),
        ("resnet18 stage 2, 128ch 16x16", 128, 16, 128, 1),
        ("resnet18 stage 3, 256ch 8x8", 256, 8, 256, 1),
        ("resnet18 stage 4, 512ch 4x4", 512, 4, 512, 1),
        ("resnet18 stage 4 entry, 256->512 stride 2", 256, 8, 512, 2),
        ("demo conv 2, 32->64ch 14x14", 32, 14, 64, 1),
        ("zoo resnet layer 1, 16ch 28x28", 16, 28, 16, 1),
        ("zoo resnet layer 2, 32ch 14x14", 32, 14, 32, 1),
        ("zoo resnet layer 3, 64ch 7x7", 64, 7, 64, 1),
        ("zoo resnet layer 2 entry, 16->32 stride 2", 16, 28, 32, 2),
    ];
    for (name, channels, size, out, stride) in shapes {
        let model = conv_model(channels, size, out, stride).unwrap();
        let plans = [
            ("ours", ours(model.clone(), false).into_runnable().unwrap()),
            ("ours, int8", ours(model.clone(), true).into_runnable().unwrap()),
            ("tract", model.into_optimized().unwrap().into_runnable().unwrap()),
        ];
        let x = Tensor::zero::<f32>(&[1, channels, size, size]).unwrap().into_tvalue();
        let mut group = c.benchmark_group(name);
        let outputs = (size / stride) * (size / stride);
        group.throughput(Throughput::Elements((2 * out * channels * 9 * outputs) as u64));
        for (who, plan) in plans {
            let mut state = SimpleState::new(&plan).unwrap();
            group.bench_function(who, |b| b.iter(|| state.run(tvec![x.clone()]).unwrap()));
        }
        group.finish();
    }
}

/// MobileNetV2's depthwise layers (torchvision's, on 3×32×32 and on the
/// zoo's 1×28×28), each with its ReLU6 as tract declutters ONNX's Clip.
fn depthwise_convolutions(c: &mut Criterion) {
    let shapes = [
        ("mobilenetv2 depthwise, 96ch 16x16 stride 2", 96, 16, 2),
        ("mobilenetv2 depthwise, 144ch 8x8", 144, 8, 1),
        ("mobilenetv2 depthwise, 384ch 4x4", 384, 4, 1),
        ("zoo mobilenetv2 depthwise, 64ch 14x14", 64, 14, 1),
    ];
    for (name, channels, size, stride) in shapes {
        let mut model = grouped_conv_model(channels, size, channels, stride, channels).unwrap();
        let y = model.output_outlets().unwrap()[0];
        let zero = model.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        let six = model.add_const("six", tensor4(&[[[[6f32]]]])).unwrap();
        let y = model.wire_node("relu", tract_core::ops::math::max(), &[y, zero]).unwrap();
        let y = model.wire_node("relu6", tract_core::ops::math::min(), &[y[0], six]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let ours = optimize_with(model.clone(), None).unwrap();
        assert_eq!(ours.nodes().iter().filter(|n| n.op_is::<DepthwiseConv>()).count(), 1);
        let plans = [
            ("ours", ours.into_runnable().unwrap()),
            ("tract", model.into_optimized().unwrap().into_runnable().unwrap()),
        ];
        let x = Tensor::zero::<f32>(&[1, channels, size, size]).unwrap().into_tvalue();
        let mut group = c.benchmark_group(name);
        let outputs = size.div_ceil(stride) * size.div_ceil(stride);
        group.throughput(Throughput::Elements((2 * channels * 9 * outputs) as u64));
        for (who, plan) in plans {
            let mut state = SimpleState::new(&plan).unwrap();
            group.bench_function(who, |b| b.iter(|| state.run(tvec![x.clone()]).unwrap()));
        }
        group.finish();
    }
}

/// A model of one dense layer, `relu(x · Wᵀ + b)` on one row, as tract
/// declutters ONNX's Gemm + Relu; `seed` varies the weights.
fn dense_model(inputs: usize, units: usize, seed: usize) -> TractResult<TypedModel> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([1, inputs]))?;
    let w = (0..units * inputs).map(|i| ((i * 37 + seed) % 19) as f32 / 70.0 - 0.13).collect::<Vec<_>>();
    let w = model.add_const("w", Tensor::from_shape(&[units, inputs], &w)?)?;
    let b = model.add_const("b", Tensor::from_shape(&[1, units], &vec![0.01f32; units])?)?;
    let zero = model.add_const("zero", tensor2(&[[0f32]]))?;
    let y = model.wire_node("dense", EinSum::new("mk,nk->mn".parse()?, f32::datum_type()), &[x, w])?;
    let y = model.wire_node("bias", tract_core::ops::math::add(), &[y[0], b])?;
    let y = model.wire_node("relu", tract_core::ops::math::max(), &[y[0], zero])?;
    model.select_output_outlets(&y)?;
    Ok(model)
}

fn dense_layers(c: &mut Criterion) {
    let (inputs, units) = (3136, 128);
    let x = Tensor::from_shape(&[1, inputs], &vec![0.5f32; inputs]).unwrap().into_tvalue();
    let mut group = c.benchmark_group("demo dense 3136->128, batch 1");
    group.throughput(Throughput::Elements((2 * inputs * units) as u64));
    for who in ["ours", "ours, int8", "tract"] {
        let plans: Vec<_> = (0..3)
            .map(|seed| {
                let model = dense_model(inputs, units, seed).unwrap();
                let model = match who {
                    "tract" => model.into_optimized().unwrap(),
                    _ => ours(model, who.ends_with("int8")),
                };
                model.into_runnable().unwrap()
            })
            .collect();
        let mut states: Vec<_> = plans.iter().map(|p| SimpleState::new(p).unwrap()).collect();
        group.bench_function(format!("{who}, alone"), |b| b.iter(|| states[0].run(tvec![x.clone()]).unwrap()));
        let mut turn = 0;
        group.bench_function(format!("{who}, three layers in turn"), |b| {
            b.iter(|| {
                turn = (turn + 1) % 3;
                states[turn].run(tvec![x.clone()]).unwrap()
            })
        });
        let mut other = vec![1f32; 1 << 20];
        group.bench_function(format!("{who}, three layers in turn, 4 MiB read between"), |b| {
            b.iter_batched(
                || {
                    turn = (turn + 1) % 3;
                    other[turn] += other.iter().step_by(16).sum::<f32>() * 1e-9;
                    turn
                },
                |turn| states[turn].run(tvec![x.clone()]).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = convolutions, depthwise_convolutions, dense_layers
}
criterion_main!(benches);
