//! f16 plans: half the bytes, f32 at the plan's edges, and the guard decides
//! as with the f32 plans on real frames.

use std::path::{Path, PathBuf};

use badexpert_converter::export::bundle_at_precision;
use badexpert_runtime::agreement::agreement;
use badexpert_runtime::data::FrameSource;
use badexpert_runtime::manifest::Precision;
use badexpert_runtime::{FrameSet, GuardBundle};

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
    let manifest = bundle_at_precision(&src, &dst, Precision::F16).unwrap();
    assert_eq!(manifest.precision, Precision::F16);
    for plan in [&manifest.plans.model, &manifest.plans.expert, &manifest.plans.auxiliary] {
        let (half, full) = (std::fs::metadata(dst.join(&plan.file)).unwrap().len(), std::fs::metadata(src.join(&plan.file)).unwrap().len());
        eprintln!("{}: {full} → {half} bytes", plan.file);
        assert!((half as f64) < 0.55 * full as f64, "{}: {half} bytes at f16 against {full} at f32", plan.file);
    }

    // x86 runs f16 through tract's generic kernels (~0.2 s per frame here): a small slice.
    let (f16, f32) = (GuardBundle::open(&dst).unwrap(), GuardBundle::open(&src).unwrap());
    for set in ["eval-clean-images-idx3-ubyte.gz", "eval-badnet-images-idx3-ubyte.gz"] {
        let a = agreement(&f16, &f32, &first(&demo().join(set), 24)).unwrap();
        eprintln!("{set}: {a:?}");
        assert!(a.verdict >= 23.0 / 24.0, "{set}: verdicts agree on {:.1} % of frames", 100.0 * a.verdict);
        assert!(a.class >= 23.0 / 24.0, "{set}: classes agree on {:.1} % of frames", 100.0 * a.class);
        assert!(a.max_confidence_diff < 0.01, "{set}: confidences differ by up to {}", a.max_confidence_diff);
        assert!(a.max_score_diff > 0.0, "{set}: f16 gave bit-identical scores, so it did not run in f16");
    }

    let again = bundle_at_precision(&dst, &dst.join("again"), Precision::F16).unwrap_err().to_string();
    assert!(again.contains("already a F16 bundle"), "{again}");
    let _ = std::fs::remove_dir_all(&dst);
}
