//! f16 and int8 bundles: the guard decides as with the f32 plans on real
//! frames (f16: half the bytes, f32 at the plan's edges; int8: integer
//! kernels at the calibrated scales).

use std::path::{Path, PathBuf};

use badexpert_converter::export::bundle_at_precision;
use badexpert_eval::agreement::agreement;
use badexpert_eval::metrics::{Evaluation, Scored};
use badexpert_frames::FrameSource;
use badexpert_runtime::advanced::ops::{PackedConv, PackedDense};
use badexpert_runtime::manifest::Precision;
use badexpert_runtime::{advanced, FrameSet, Guard, GuardBundle, PixelLayout, Role};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist")
}

fn first(path: &Path, n: usize) -> FrameSet {
    let set = FrameSource::detect(path).load().unwrap();
    set.select(&(0..n.min(set.len())).collect::<Vec<_>>())
}

#[test]
fn f16_plans_are_half_the_size_and_decide_like_f32() {
    let src = demo().join("bundle");
    let dst = std::env::temp_dir().join(format!("badexpert-f16-{}", std::process::id()));
    let manifest = bundle_at_precision(&src, &dst, Precision::F16, None).unwrap();
    assert_eq!(manifest.precision, Precision::F16);
    for plan in [&manifest.plans.model, &manifest.plans.expert, &manifest.plans.auxiliary] {
        let (half, full) = (
            std::fs::metadata(dst.join(&plan.file)).unwrap().len(),
            std::fs::metadata(src.join(&plan.file)).unwrap().len(),
        );
        eprintln!("{}: {full} → {half} bytes", plan.file);
        assert!((half as f64) < 0.55 * full as f64, "{}: {half} bytes at f16 against {full} at f32", plan.file);
    }

    // x86 runs f16 through tract's generic kernels (~0.2 s per frame here): a small slice.
    let (f16, f32) = (GuardBundle::open(&dst).unwrap(), GuardBundle::open(&src).unwrap());
    let mut largest_score_diff = 0.0f64;
    for set in ["eval-clean-images-idx3-ubyte.gz", "eval-badnet-images-idx3-ubyte.gz"] {
        let a = agreement(&f16, &f32, &first(&demo().join(set), 24)).unwrap();
        eprintln!("{set}: {a:?}");
        assert!(a.verdict >= 23.0 / 24.0, "{set}: verdicts agree on {:.1} % of frames", 100.0 * a.verdict);
        assert!(a.class >= 23.0 / 24.0, "{set}: classes agree on {:.1} % of frames", 100.0 * a.class);
        assert!(a.max_confidence_diff < 0.01, "{set}: confidences differ by up to {}", a.max_confidence_diff);
        largest_score_diff = largest_score_diff.max(a.max_score_diff);
    }
    // Saturated confidences (a triggered frame's c_B = 1, c_A = 0) score the same at
    // either precision; over both slices some frame must not.
    assert!(largest_score_diff > 0.0, "f16 gave bit-identical scores on every frame, so it did not run in f16");

    let again = bundle_at_precision(&dst, &dst.join("again"), Precision::F16, None).unwrap_err().to_string();
    assert!(again.contains("already a F16 bundle"), "{again}");
    let _ = std::fs::remove_dir_all(&dst);
}

/// Every frame of `set` guarded by `bundle`, scored for the ROC.
fn scored(bundle: &GuardBundle, set: &FrameSet) -> Vec<Scored> {
    let mut guard = Guard::new(bundle).unwrap();
    let labels = set.labels().unwrap();
    (0..set.len())
        .map(|i| Scored::from_verdict(labels[i], &guard.guard(set.frame(i), PixelLayout::Chw).unwrap()))
        .collect()
}

#[test]
fn int8_plans_run_integer_kernels_and_keep_the_auroc_within_half_a_point() {
    let src = demo().join("bundle");
    let dst = std::env::temp_dir().join(format!("badexpert-int8-{}", std::process::id()));
    let reserve = first(&demo().join("reserve-images-idx3-ubyte.gz"), 256);
    let missing = bundle_at_precision(&src, &dst, Precision::Int8, None).unwrap_err().to_string();
    assert!(missing.contains("needs clean frames"), "{missing}");
    let manifest = bundle_at_precision(&src, &dst, Precision::Int8, Some(&reserve)).unwrap();
    let scales = manifest.int8.as_ref().unwrap();
    assert_eq!(scales.frames, 256);

    let (int8, f32) = (GuardBundle::open(&dst).unwrap(), GuardBundle::open(&src).unwrap());
    for (role, scales) in
        [(Role::Model, &scales.model), (Role::Expert, &scales.expert), (Role::Auxiliary, &scales.auxiliary)]
    {
        let nodes = advanced::plan(&int8, role).model().nodes();
        let convs = nodes.iter().filter(|n| n.op_as::<PackedConv>().is_some_and(|c| c.is_int8())).count();
        let dense = nodes.iter().filter(|n| n.op_as::<PackedDense>().is_some_and(|d| d.is_int8())).count();
        eprintln!("{}: {convs} int8 convolutions, {dense} int8 dense layers, scales {scales:?}", role.name());
        assert!(
            convs >= 1 && dense >= 1 && convs + dense == scales.len(),
            "{}: {convs} + {dense} int8 layers for {} scales",
            role.name(),
            scales.len()
        );
    }

    let (clean, triggered) = (
        FrameSource::detect(&demo().join("eval-clean-images-idx3-ubyte.gz")).load().unwrap(),
        FrameSource::detect(&demo().join("eval-badnet-images-idx3-ubyte.gz")).load().unwrap(),
    );
    let auroc = |bundle: &GuardBundle| {
        let threshold = bundle.manifest().decision.threshold;
        Evaluation::compute(&scored(bundle, &clean), &scored(bundle, &triggered), 0, threshold).unwrap().auroc.unwrap()
    };
    let (a8, a32) = (auroc(&int8), auroc(&f32));
    eprintln!("AUROC int8 {a8:.4}, f32 {a32:.4}");
    assert!((a8 - a32).abs() <= 0.005, "AUROC int8 {a8:.4} against f32 {a32:.4}");
    for set in [&clean, &triggered] {
        let a = agreement(&int8, &f32, set).unwrap();
        eprintln!("{a:?}");
        assert!(a.verdict >= 0.95 && a.class >= 0.98, "{a:?}");
        assert!(a.max_score_diff > 0.0, "int8 gave bit-identical scores, so it did not run in int8");
    }
    let _ = std::fs::remove_dir_all(&dst);
}
