//! What a camera frame costs before the models run: colour conversion,
//! antialiased resize and crop, and normalisation of a 640×480 RGB, YUYV or
//! NV12 frame into the demo's 28×28 gray input (and into a 3×32×32 colour
//! one), beside one whole guarded frame of the demo model-size fast path and
//! of the camera path. `cargo bench -p badexpert-runtime --bench camera`;
//! figures in docs/benchmarks.md.

use std::path::Path;

use badexpert_runtime::camera::{CameraPreprocessing, DEFAULT_MAX_FRAME_BYTES};
use badexpert_runtime::{
    CameraFrame, CameraPipeline, FrameGeometry, FrameShape, Guard, GuardBundle, PixelFormat, PixelLayout,
};
use criterion::{criterion_group, criterion_main, Criterion};

fn frame(format: PixelFormat) -> (FrameGeometry, Vec<u8>) {
    let g = FrameGeometry::new(format, 640, 480, None, DEFAULT_MAX_FRAME_BYTES).unwrap();
    (g, (0..g.frame_bytes().unwrap()).map(|i| (i * 31 % 251) as u8).collect())
}

fn preprocessing(c: &mut Criterion) {
    let mut group = c.benchmark_group("camera 640x480 →");
    for shape in [FrameShape::new(1, 28, 28), FrameShape::new(3, 32, 32)] {
        for format in [PixelFormat::Rgb24, PixelFormat::Yuyv, PixelFormat::Nv12, PixelFormat::Gray8] {
            let (g, data) = frame(format);
            let mut pipeline = CameraPipeline::new(&CameraPreprocessing::default(), shape, g).unwrap();
            let mut out = vec![0u8; shape.len()];
            let f = CameraFrame::new(g, &data).unwrap();
            group.bench_function(format!("{}x{}x{} from {format}", shape.channels, shape.height, shape.width), |b| {
                b.iter(|| pipeline.convert(&f, &mut out).unwrap())
            });
        }
    }
    group.finish();
}

fn guarded(c: &mut Criterion) {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist/bundle");
    let bundle = GuardBundle::open(demo).unwrap();
    let mut guard = Guard::new(&bundle).unwrap();
    let mut group = c.benchmark_group("guarded frame, demo bundle");
    let small = vec![100u8; 28 * 28];
    group.bench_function("28x28 gray (model size)", |b| b.iter(|| guard.guard(&small, PixelLayout::Chw).unwrap()));
    for format in [PixelFormat::Rgb24, PixelFormat::Yuyv, PixelFormat::Nv12] {
        let (g, data) = frame(format);
        let f = CameraFrame::new(g, &data).unwrap();
        group.bench_function(format!("640x480 {format}"), |b| b.iter(|| guard.guard_camera(&f).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, preprocessing, guarded);
criterion_main!(benches);
