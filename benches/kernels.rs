//! badexpert's convolution kernels against tract's own plan for the same
//! one-convolution model, on the shapes the guarded models use: the four
//! 3×3 stages of ResNet18-CIFAR (32×32 … 4×4 maps, 64 … 512 channels), its
//! stride-2 stage entry, and the demo CNN's second convolution. Compare
//! `ours` with `tract` within one run: `cargo bench --bench kernels`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::nn::DataFormat;

/// A model of one 3×3, pad-1 convolution with deterministic weights.
fn conv_model(channels: usize, size: usize, out: usize, stride: usize) -> TractResult<TypedModel> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([1, channels, size, size]))?;
    let len = out * channels * 9;
    let kernel = Tensor::from_shape(&[out, channels, 3, 3], &(0..len).map(|i| ((i * 37) % 19) as f32 / 70.0 - 0.13).collect::<Vec<_>>())?;
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
    let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: 1, q_params: None };
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
    ];
    for (name, channels, size, out, stride) in shapes {
        let model = conv_model(channels, size, out, stride).unwrap();
        let ours = badexpert_runtime::ops::optimize(model.clone()).unwrap();
        assert!(ours.nodes().iter().any(|n| n.op_is::<badexpert_runtime::ops::PackedConv>()), "{name}: not a PackedConv");
        let plans = [("ours", ours.into_runnable().unwrap()), ("tract", model.into_optimized().unwrap().into_runnable().unwrap())];
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = convolutions
}
criterion_main!(benches);
