//! Heap allocations per streamed frame, counted by a global allocator: the
//! reading thread, the hand-off, the guard's camera path (640×480 RGB →
//! the demo's 28×28 gray) and the output lines allocate nothing per frame
//! beyond tract's three plan runs. Measured as the difference between a
//! stream of 2N and one of N frames, so the set-up of each cancels out.
//! A plain program (`harness = false`), so libtest's threads do not count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use badexpert_runtime::alarm::{AlarmSettings, StreamAlarm};
use badexpert_runtime::camera::DEFAULT_MAX_FRAME_BYTES;
use badexpert_runtime::{advanced, FrameGeometry, Guard, GuardBundle, PixelFormat, Role};
use badexpert_stream::{guard_stream, DropPolicy, StreamEnd, StreamOptions};
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

const N: usize = 60;

fn main() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist/bundle");
    let bundle = GuardBundle::open(&demo).unwrap();
    let geometry = FrameGeometry::new(PixelFormat::Rgb24, 640, 480, None, DEFAULT_MAX_FRAME_BYTES).unwrap();
    let frame_bytes = geometry.frame_bytes().unwrap();
    let input: Arc<Vec<u8>> = Arc::new((0..2 * N * frame_bytes).map(|i| (i * 31 % 251) as u8).collect());
    let mut guard = Guard::new(&bundle).unwrap();
    // With the stream alarm on: its p-values and CUSUM allocate nothing either.
    let reference: Vec<f32> = (1..400).map(|i| i as f32 * 1e-2).collect();
    let alarm = Some(StreamAlarm::new(&reference, AlarmSettings::default()).unwrap());
    let options = StreamOptions { policy: DropPolicy::Block, stats_every: None, alarm, ..StreamOptions::new(geometry) };
    let stop = AtomicBool::new(false);
    let mut run = |frames: usize| -> usize {
        let bytes = input[..frames * frame_bytes].to_vec();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let report = guard_stream(
            &mut guard,
            &bundle.manifest().classes,
            std::io::Cursor::new(bytes),
            std::io::sink(),
            &options,
            &stop,
            |_| {},
        );
        let used = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert_eq!(report.end, StreamEnd::Finished);
        assert_eq!(report.counts.guarded as usize, frames);
        used
    };
    run(N); // warm-up: the camera pipeline and tract's states settle
    let (once, twice) = (run(N), run(2 * N));
    let per_frame = (twice - once) as f64 / N as f64;

    let s = bundle.manifest().input.shape;
    let tensor = Arc::new(Tensor::zero::<f32>(&[1, s.channels, s.height, s.width]).unwrap());
    let mut states: Vec<_> = Role::ALL.iter().map(|&r| advanced::spawn(&bundle, r).unwrap()).collect();
    let mut tract_runs = || {
        for state in states.iter_mut() {
            std::hint::black_box(state.run(tvec![TValue::from_const(tensor.clone())]).unwrap());
        }
    };
    (0..10).for_each(|_| tract_runs());
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    (0..N).for_each(|_| tract_runs());
    let tract = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64;
    eprintln!("stream, 640×480 RGB: {per_frame:.2} allocations per frame, {tract:.2} inside tract's runs, {:.2} in badexpert's code", per_frame - tract);
    assert_eq!(per_frame, tract, "the stream allocates per frame beyond tract's runs");
}
