//! The three ways to guard — one frame at a time, the three models on two or
//! three threads, several frames per run — give the same verdicts.

use std::path::Path;

use badexpert_frames::FrameSource;
use badexpert_runtime::{BatchGuard, Guard, GuardBundle, ParallelGuard, PixelLayout, Verdict};

fn demo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist")
}

#[test]
fn parallel_and_batched_guards_agree_with_the_sequential_one() {
    let frames = FrameSource::detect(&demo().join("eval-badnet-images-idx3-ubyte.gz")).load().unwrap().head(50);
    let clean = FrameSource::detect(&demo().join("eval-clean-images-idx3-ubyte.gz")).load().unwrap().head(50);
    let all: Vec<&[u8]> = (0..50).map(|i| frames.frame(i)).chain((0..50).map(|i| clean.frame(i))).collect();

    let bundle = GuardBundle::open(demo().join("bundle")).unwrap();
    let mut sequential = Guard::new(&bundle).unwrap();
    let reference: Vec<Verdict> = all.iter().map(|f| sequential.guard(f, PixelLayout::Chw).unwrap()).collect();
    assert!(reference.iter().any(|v| v.accepted) && reference.iter().any(|v| !v.accepted));

    for threads in [2, 3] {
        let mut parallel = ParallelGuard::with_threads(&bundle, threads).unwrap();
        assert_eq!(parallel.threads(), threads);
        for (f, want) in all.iter().zip(&reference) {
            assert_eq!(
                parallel.guard(f, PixelLayout::Chw).unwrap(),
                *want,
                "{threads} threads: same plans, same input, identical verdicts"
            );
        }
    }
    let err = ParallelGuard::with_threads(&bundle, 4).err().expect("4 threads refused").to_string();
    assert!(err.contains("2 or 3 threads"), "{err}");

    let batched = GuardBundle::open_with_batch(demo().join("bundle"), 8).unwrap();
    let mut batch = BatchGuard::new(&batched).unwrap();
    let mut verdicts = vec![Verdict::default(); 8];
    for (chunk, want) in all.chunks(8).zip(reference.chunks(8)) {
        batch.guard_batch(chunk, PixelLayout::Chw, &mut verdicts).unwrap();
        for (got, want) in verdicts.iter().zip(want) {
            assert_eq!((got.class, got.accepted), (want.class, want.accepted));
            assert!((got.confidences.expert - want.confidences.expert).abs() < 1e-5);
            assert!((got.confidences.auxiliary - want.confidences.auxiliary).abs() < 1e-5);
        }
    }
    // The last chunk (100 = 12·8 + 4) was a short batch.
    let err = batch.guard_batch(&all[..9], PixelLayout::Chw, &mut verdicts).unwrap_err().to_string();
    assert!(err.contains("9 frames for a batch of 8"), "{err}");
    assert!(ParallelGuard::new(&batched).is_err(), "batch-8 plans are not for one frame at a time");
}

#[test]
fn a_bad_frame_fails_in_every_mode_and_the_next_one_is_guarded() {
    let bundle = GuardBundle::open(demo().join("bundle")).unwrap();
    for threads in [2, 3] {
        let mut parallel = ParallelGuard::with_threads(&bundle, threads).unwrap();
        let err = parallel.guard(&[0u8; 100], PixelLayout::Chw).unwrap_err().to_string();
        assert!(err.contains("100 pixel values"), "{err}");
        assert!(parallel.guard(&[0u8; 784], PixelLayout::Chw).is_ok());
    }
}
