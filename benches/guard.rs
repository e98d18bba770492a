//! Per-frame latency of the guard against the suspect model alone, on the
//! demo CNN (Fashion-MNIST, 1×28×28) and on a ResNet18-CIFAR-sized model
//! (3×32×32, 11.2 M parameters, random weights: timing only). Modes: M
//! alone, the guard sequential (M, B, M′ in turn, 1 thread), the guard on
//! three threads, and batches of 8. Compare as ratios within one run:
//! `cargo bench --bench guard`.
//!
//! The first run prepares `target/bench/{demo,resnet18}/`: a bundle made by
//! the converter plus the ONNX of M, B and M′, which
//! `benches/compare_onnxruntime.py` times with ONNX Runtime beside ours.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};

use badexpert_converter::auxiliary::{AuxiliaryModel, AuxiliaryRate};
use badexpert_converter::expert::ExpertRate;
use badexpert_converter::onnx::{builder, normalization_metadata, read_model, write_model, TchGraph};
use badexpert_converter::train::predict_logits;
use badexpert_converter::{convert, ConvertOptions};
use badexpert_runtime::data::FrameSource;
use badexpert_runtime::{BatchGuard, FrameSet, FrameShape, Guard, GuardBundle, Normalization, ParallelGuard, PixelLayout, Preprocessor, Role, Verdict};
use tract_core::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Converts `model` into `dir/bundle` and writes the three models' ONNX beside it.
fn prepare(dir: &Path, model: &Path, reserve: &FrameSet, opts: ConvertOptions) {
    if dir.join("bundle/manifest.json").is_file() && dir.join("auxiliary.onnx").is_file() {
        return;
    }
    std::fs::create_dir_all(dir).unwrap();
    let c = convert(model, reserve, &dir.join("bundle"), &ConvertOptions { overwrite: true, ..opts }, &()).unwrap();
    std::fs::copy(model, dir.join("model.onnx")).unwrap();
    write_model(&c.expert.to_proto().unwrap(), &dir.join("expert.onnx")).unwrap();
    write_model(&c.auxiliary.to_proto().unwrap(), &dir.join("auxiliary.onnx")).unwrap();
}

fn demo() -> (PathBuf, FrameSet) {
    let demo = root().join("models/badnet-fmnist");
    let dir = root().join("target/bench/demo");
    let model = demo.join("model.onnx");
    let reserve = FrameSource::detect(&demo.join("reserve-images-idx3-ubyte.gz")).load().unwrap();
    let norm = normalization_metadata(&read_model(&model).unwrap()).unwrap().unwrap();
    prepare(&dir, &model, &reserve, ConvertOptions { device: tch::Device::Cpu, ..ConvertOptions::new(norm) });
    (dir, FrameSource::detect(&demo.join("eval-clean-images-idx3-ubyte.gz")).load().unwrap())
}

/// Full-width ResNet18 with random weights; the reserve is random frames
/// labelled by the model itself (fine-tunes are short: this is for timing).
fn resnet18() -> (PathBuf, FrameSet) {
    let dir = root().join("target/bench/resnet18");
    let shape = FrameShape::new(3, 32, 32);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let frames = FrameSet::new(shape, (0..250 * shape.len()).map(|_| rng.gen::<u8>()).collect(), None).unwrap();
    if !dir.join("bundle/manifest.json").is_file() {
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("source.onnx");
        write_model(&builder::resnet18(shape, 10, 64, 0), &source).unwrap();
        let norm = Normalization { scale: 1.0 / 255.0, mean: vec![0.5], std: vec![0.25] };
        let graph = TchGraph::load(&source, tch::Device::Cpu).unwrap();
        let logits = predict_logits(&graph, &frames, &Preprocessor::new(&norm, shape).unwrap()).unwrap();
        let own: Vec<u32> = Vec::<i64>::try_from(&logits.argmax(1, false)).unwrap().into_iter().map(|c| c as u32).collect();
        let mut opts = ConvertOptions::new(norm);
        opts.device = tch::Device::Cpu;
        opts.holdout_fraction = 0.4;
        opts.target_fpr = 0.05;
        opts.expert.rate = ExpertRate::Fixed(1e-4);
        opts.auxiliary = AuxiliaryModel { rate: AuxiliaryRate::Fixed(0.1), epochs: 1, lr_milestones: vec![], ..AuxiliaryModel::default() };
        prepare(&dir, &source, &frames.clone().with_labels(own).unwrap(), opts);
    }
    (dir, frames)
}

fn bench_model(c: &mut Criterion, name: &str, dir: &Path, frames: &FrameSet) {
    let bundle = GuardBundle::open(dir.join("bundle")).expect("prepared bundle");
    let m = bundle.manifest();
    let n = frames.len();
    let mut group = c.benchmark_group(name);

    let pre = Preprocessor::new(&m.normalization, m.input.shape).unwrap();
    let s = m.input.shape;
    let mut input = Arc::new(Tensor::zero::<f32>(&[1, s.channels, s.height, s.width]).unwrap());
    let mut state = bundle.plan(Role::Model).spawn().unwrap();
    let mut i = 0;
    group.bench_function("model M alone", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let buf = Arc::make_mut(&mut input).to_plain_array_view_mut::<f32>().unwrap().into_slice().unwrap();
            pre.planar_into(frames.frame(i), buf).unwrap();
            state.run(tvec![TValue::from_const(input.clone())]).unwrap()
        })
    });
    let mut guard = Guard::new(&bundle).unwrap();
    group.bench_function("guard (M+B+M′, sequential)", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            guard.guard(frames.frame(i), PixelLayout::Chw).unwrap()
        })
    });
    let mut parallel = ParallelGuard::new(&bundle).unwrap();
    group.bench_function("guard (M+B+M′, 3 threads)", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            parallel.guard(frames.frame(i), PixelLayout::Chw).unwrap()
        })
    });
    let batched = GuardBundle::open_with_batch(dir.join("bundle"), 8).unwrap();
    let mut batch = BatchGuard::new(&batched).unwrap();
    let mut verdicts = [Verdict::default(); 8];
    group.throughput(Throughput::Elements(8));
    group.bench_function("guard (M+B+M′, batch 8)", |b| {
        b.iter(|| {
            i = (i + 8) % (n - 8);
            let chunk: [&[u8]; 8] = std::array::from_fn(|j| frames.frame(i + j));
            batch.guard_batch(&chunk, PixelLayout::Chw, &mut verdicts).unwrap();
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    tch::set_num_threads(2);
    let (dir, frames) = demo();
    bench_model(c, "demo-fmnist-cnn", &dir, &frames);
    let (dir, frames) = resnet18();
    bench_model(c, "resnet18-cifar", &dir, &frames);
}

criterion_group!(benches, bench);
criterion_main!(benches);
