//! Heap allocations per guarded frame, counted by a global allocator: what
//! the guard does beyond the three tract plan runs must allocate nothing
//! (issue: steady state without allocation). What tract itself allocates
//! per run is measured the same way and printed, for f32 and int8 plans.
//!
//! A plain program (`harness = false`): libtest's own threads (its "running
//! for over 60 seconds" notice under qemu) would allocate into the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use badexpert_frames::FrameSource;
use badexpert_runtime::camera::DEFAULT_MAX_FRAME_BYTES;
use badexpert_runtime::manifest::{Precision, MANIFEST_FILE};
use badexpert_runtime::{
    advanced, BatchGuard, CameraFrame, FrameGeometry, Guard, GuardBundle, ParallelGuard, PixelFormat, PixelLayout,
    Role, Verdict,
};
use tract_core::prelude::*;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FRAMES: usize = 50;

/// Allocations per iteration of `f` over `FRAMES` iterations (after 10 warm-up ones).
fn per_frame(mut f: impl FnMut(usize)) -> f64 {
    for i in 0..10 {
        f(i);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..FRAMES {
        f(i);
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / FRAMES as f64
}

fn main() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist");
    let bundle = GuardBundle::open(demo.join("bundle")).unwrap();
    let frames = FrameSource::detect(&demo.join("eval-clean-images-idx3-ubyte.gz")).load().unwrap();

    let mut guard = Guard::new(&bundle).unwrap();
    let guard_allocs = per_frame(|i| {
        let v = guard.guard(frames.frame(i % frames.len()), PixelLayout::Chw).unwrap();
        std::hint::black_box(v);
    });

    // The same three plan runs, on one input tensor, without the guard around them.
    let s = bundle.manifest().input.shape;
    let input = Arc::new(Tensor::zero::<f32>(&[1, s.channels, s.height, s.width]).unwrap());
    let mut states: Vec<_> =
        [Role::Model, Role::Expert, Role::Auxiliary].iter().map(|&r| advanced::spawn(&bundle, r).unwrap()).collect();
    let tract_allocs = per_frame(|_| {
        for state in states.iter_mut() {
            let out = state.run(tvec![TValue::from_const(input.clone())]).unwrap();
            std::hint::black_box(out);
        }
    });

    let ours = guard_allocs - tract_allocs;
    eprintln!("allocations per guarded frame: {guard_allocs:.2} in total, {tract_allocs:.2} inside tract's three plan runs, {ours:.2} in badexpert's code");
    assert_eq!(ours, 0.0, "the guard's own code allocates per frame");

    // Camera frames of another size and format: colour conversion, resize and
    // crop run in buffers made for the geometry, once.
    for format in PixelFormat::ALL {
        let geometry = FrameGeometry::new(format, 640, 480, None, DEFAULT_MAX_FRAME_BYTES).unwrap();
        let data: Vec<u8> = (0..geometry.frame_bytes().unwrap()).map(|i| (i * 31 % 251) as u8).collect();
        let camera_allocs = per_frame(|_| {
            let frame = CameraFrame::new(geometry, &data).unwrap();
            std::hint::black_box(guard.guard_camera(&frame).unwrap());
        });
        eprintln!(
            "{format} 640×480 camera frames: {camera_allocs:.2} allocations per frame ({:.2} beyond tract's runs)",
            camera_allocs - tract_allocs
        );
        assert_eq!(camera_allocs, tract_allocs, "the camera path allocates per frame ({format})");
    }

    // Two or three threads: the hand-off through preallocated slots adds nothing either.
    for threads in [2, 3] {
        let mut parallel = ParallelGuard::with_threads(&bundle, threads).unwrap();
        let parallel_allocs = per_frame(|i| {
            std::hint::black_box(parallel.guard(frames.frame(i % frames.len()), PixelLayout::Chw).unwrap());
        });
        eprintln!(
            "ParallelGuard, {threads} threads: {parallel_allocs:.2} allocations per frame ({:.2} beyond tract's runs)",
            parallel_allocs - tract_allocs
        );
        assert_eq!(
            parallel_allocs, tract_allocs,
            "the parallel guard's own code allocates per frame ({threads} threads)"
        );
    }

    // Batches of 8 into caller-owned verdicts.
    let batched = GuardBundle::open_with_batch(demo.join("bundle"), 8).unwrap();
    let mut batch = BatchGuard::new(&batched).unwrap();
    let mut verdicts = [Verdict::default(); 8];
    let mut states: Vec<_> =
        [Role::Model, Role::Expert, Role::Auxiliary].iter().map(|&r| advanced::spawn(&batched, r).unwrap()).collect();
    let input8 = Arc::new(Tensor::zero::<f32>(&[8, s.channels, s.height, s.width]).unwrap());
    let tract8 = per_frame(|_| {
        for state in states.iter_mut() {
            std::hint::black_box(state.run(tvec![TValue::from_const(input8.clone())]).unwrap());
        }
    });
    let batch_allocs = per_frame(|i| {
        let k = (i * 8) % (frames.len() - 8);
        let chunk: [&[u8]; 8] = std::array::from_fn(|j| frames.frame(k + j));
        batch.guard_batch(&chunk, PixelLayout::Chw, &mut verdicts).unwrap();
    });
    eprintln!("BatchGuard (8 frames): {batch_allocs:.2} allocations per batch, {tract8:.2} inside tract's runs");
    assert_eq!(batch_allocs, tract8, "the batch guard's own code allocates per batch");

    // The same bundle in int8: quantizing each layer's input reuses the thread's scratch.
    let int8_dir = std::env::temp_dir().join(format!("badexpert-alloc-int8-{}", std::process::id()));
    std::fs::create_dir_all(&int8_dir).unwrap();
    let mut manifest = bundle.manifest().clone();
    manifest.clean_frames = None;
    for plan in [&manifest.plans.model, &manifest.plans.expert, &manifest.plans.auxiliary] {
        std::fs::copy(demo.join("bundle").join(&plan.file), int8_dir.join(&plan.file)).unwrap();
    }
    let reserve = FrameSource::detect(&demo.join("reserve-images-idx3-ubyte.gz")).load().unwrap().head(32);
    manifest.int8 = Some(badexpert_runtime::quantization::calibrate_bundle(&int8_dir, &manifest, &reserve).unwrap());
    manifest.precision = Precision::Int8;
    manifest.write(&int8_dir.join(MANIFEST_FILE)).unwrap();
    let int8 = GuardBundle::open(&int8_dir).unwrap();
    let mut guard8 = Guard::new(&int8).unwrap();
    let guard8_allocs = per_frame(|i| {
        std::hint::black_box(guard8.guard(frames.frame(i % frames.len()), PixelLayout::Chw).unwrap());
    });
    let mut states: Vec<_> =
        [Role::Model, Role::Expert, Role::Auxiliary].iter().map(|&r| advanced::spawn(&int8, r).unwrap()).collect();
    let tract8_allocs = per_frame(|_| {
        for state in states.iter_mut() {
            std::hint::black_box(state.run(tvec![TValue::from_const(input.clone())]).unwrap());
        }
    });
    eprintln!("int8 guard: {guard8_allocs:.2} allocations per frame, {tract8_allocs:.2} inside tract's runs, {:.2} in badexpert's code", guard8_allocs - tract8_allocs);
    assert_eq!(guard8_allocs, tract8_allocs, "the int8 guard's own code allocates per frame");
    let _ = std::fs::remove_dir_all(&int8_dir);
}
