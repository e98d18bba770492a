//! Per-frame latency of the guard (M + B + M′) against the suspect model
//! alone, on the shipped demo bundle. Compare the two as a ratio measured in
//! the same run: `cargo bench --bench guard`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::path::Path;

use badexpert_runtime::data::FrameSource;
use badexpert_runtime::{Guard, GuardBundle, PixelLayout, Preprocessor, Role};
use tract_core::prelude::*;

fn bench(c: &mut Criterion) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/badnet-fmnist");
    let bundle = GuardBundle::open(demo.join("bundle")).expect("shipped bundle");
    let frames = FrameSource::detect(&demo.join("eval-clean-images-idx3-ubyte.gz")).load().expect("eval slice");
    let m = bundle.manifest();
    let n = frames.len();

    let mut group = c.benchmark_group("demo-fmnist-cnn");
    let mut guard = Guard::new(&bundle).unwrap();
    let mut i = 0;
    group.bench_function("guard (M+B+M′, sequential)", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            guard.guard(frames.frame(i), PixelLayout::Chw).unwrap()
        })
    });

    let pre = Preprocessor::new(&m.normalization, m.input.shape).unwrap();
    let s = m.input.shape;
    let mut input = Arc::new(Tensor::zero::<f32>(&[1, s.channels, s.height, s.width]).unwrap());
    let mut state = bundle.plan(Role::Model).spawn().unwrap();
    let mut j = 0;
    group.bench_function("model M alone", |b| {
        b.iter(|| {
            j = (j + 1) % n;
            let buf = Arc::make_mut(&mut input).to_plain_array_view_mut::<f32>().unwrap().into_slice().unwrap();
            pre.planar_into(frames.frame(j), buf).unwrap();
            state.run(tvec![TValue::from_const(input.clone())]).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
