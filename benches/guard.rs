//! Per-frame latency of the guard against the suspect model alone, on the
//! demo CNN (Fashion-MNIST, 1×28×28) and on a ResNet18-CIFAR-sized model
//! (3×32×32, 11.2 M parameters, random weights: timing only). Modes: M
//! alone, the guard sequential (M, B, M′ in turn, 1 thread), both again with
//! tract's own ops in place of badexpert's kernels, both again in int8
//! (activation scales calibrated on 256 reserve frames; random frames for
//! ResNet18), the guard on two and three threads, batches of 8, and (demo
//! only) f16 plans. Compare as ratios within one run: `cargo bench --bench guard`.
//!
//! The first run prepares `target/bench/{demo,resnet18}/`: a bundle made by
//! the converter plus the ONNX of M, B and M′, which
//! `lab/bench/compare_onnxruntime.py` times with ONNX Runtime beside ours.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};

use badexpert_converter::auxiliary::{AuxiliaryModel, AuxiliaryRate};
use badexpert_converter::expert::ExpertRate;
use badexpert_converter::export::bundle_at_precision;
use badexpert_converter::onnx::{builder, normalization_metadata, read_model, write_model, TchGraph};
use badexpert_converter::train::{predict_logits, Schedule};
use badexpert_converter::{convert, ConvertOptions};
use badexpert_eval::latency::ModelAlone;
use badexpert_frames::FrameSource;
use badexpert_runtime::manifest::Precision;
use badexpert_runtime::{
    BatchGuard, FrameSet, FrameShape, Guard, GuardBundle, LoadOptions, Normalization, ParallelGuard, PixelLayout,
    Preprocessor, Verdict,
};

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
    prepare_int8(&dir, &reserve.head(256));
    (dir, FrameSource::detect(&demo.join("eval-clean-images-idx3-ubyte.gz")).load().unwrap())
}

/// `dir/bundle-int8`: the bundle's plans with activation scales from `clean`.
fn prepare_int8(dir: &Path, clean: &FrameSet) {
    if !dir.join("bundle-int8/manifest.json").is_file() {
        bundle_at_precision(&dir.join("bundle"), &dir.join("bundle-int8"), Precision::Int8, Some(clean)).unwrap();
    }
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
        let own: Vec<u32> =
            Vec::<i64>::try_from(&logits.argmax(1, false)).unwrap().into_iter().map(|c| c as u32).collect();
        let mut opts = ConvertOptions::new(norm);
        opts.device = tch::Device::Cpu;
        opts.holdout_fraction = 0.4;
        opts.target_fpr = 0.05;
        opts.expert.rate = ExpertRate::Fixed(1e-4);
        opts.auxiliary = AuxiliaryModel {
            rate: AuxiliaryRate::Fixed(0.1),
            epochs: 1,
            schedule: Schedule::constant(),
            ..AuxiliaryModel::default()
        };
        prepare(&dir, &source, &frames.clone().with_labels(own).unwrap(), opts);
    }
    prepare_int8(&dir, &frames);
    (dir, frames)
}

fn bench_model(c: &mut Criterion, name: &str, dir: &Path, frames: &FrameSet) {
    let bundle = GuardBundle::open(dir.join("bundle")).expect("prepared bundle");
    // The same plans as tract optimizes them, without badexpert's kernels.
    let tract_only =
        GuardBundle::open_with(dir.join("bundle"), LoadOptions { own_kernels: false, ..LoadOptions::default() })
            .unwrap();
    let int8 = GuardBundle::open(dir.join("bundle-int8")).unwrap();
    let n = frames.len();
    let mut group = c.benchmark_group(name);
    let mut i = 0;
    for (label, bundle) in [("", &bundle), (", int8", &int8), (", tract ops only", &tract_only)] {
        let mut model = ModelAlone::new(bundle).unwrap();
        group.bench_function(format!("model M alone{label}"), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                model.run(frames.frame(i)).unwrap()
            })
        });
        let mut guard = Guard::new(bundle).unwrap();
        group.bench_function(format!("guard (M+B+M′, sequential){label}"), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                guard.guard(frames.frame(i), PixelLayout::Chw).unwrap()
            })
        });
    }
    for threads in [2, 3] {
        let mut parallel = ParallelGuard::with_threads(&bundle, threads).unwrap();
        group.bench_function(format!("guard (M+B+M′, {threads} threads)"), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                parallel.guard(frames.frame(i), PixelLayout::Chw).unwrap()
            })
        });
    }
    group.throughput(Throughput::Elements(8));
    for (label, bundle) in [("", "bundle"), (", int8", "bundle-int8")] {
        let batched = GuardBundle::open_with_batch(dir.join(bundle), 8).unwrap();
        let mut batch = BatchGuard::new(&batched).unwrap();
        let mut verdicts = [Verdict::default(); 8];
        group.bench_function(format!("guard (M+B+M′, batch 8){label}"), |b| {
            b.iter(|| {
                i = (i + 8) % (n - 8);
                let chunk: [&[u8]; 8] = std::array::from_fn(|j| frames.frame(i + j));
                batch.guard_batch(&chunk, PixelLayout::Chw, &mut verdicts).unwrap();
            })
        });
    }
    group.finish();
}

/// The guard with f16 plans (the demo only: x86 runs f16 through tract's
/// generic kernels, ~0.2 s per demo frame, minutes per ResNet18 frame).
fn bench_f16(c: &mut Criterion, dir: &Path, frames: &FrameSet) {
    let f16_dir = dir.join("bundle-f16");
    if !f16_dir.join("manifest.json").is_file() {
        bundle_at_precision(&dir.join("bundle"), &f16_dir, Precision::F16, None).unwrap();
    }
    let bundle = GuardBundle::open(&f16_dir).unwrap();
    let mut guard = Guard::new(&bundle).unwrap();
    let mut group = c.benchmark_group("demo-fmnist-cnn");
    group.sample_size(10);
    let mut i = 0;
    group.bench_function("guard (M+B+M′, sequential), f16", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            guard.guard(frames.frame(i), PixelLayout::Chw).unwrap()
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    tch::set_num_threads(2);
    let (dir, frames) = demo();
    bench_model(c, "demo-fmnist-cnn", &dir, &frames);
    bench_f16(c, &dir, &frames);
    let (dir, frames) = resnet18();
    bench_model(c, "resnet18-cifar", &dir, &frames);
}

criterion_group!(benches, bench);
criterion_main!(benches);
