//! Convert → bundle → guard → metrics, on the shipped demo model.

mod common;

use badexpert_converter::onnx::TchGraph;
use badexpert_converter::train::predict_logits;
use badexpert_eval::metrics::{Evaluation, Scored};
use badexpert_lab::attack::Attack;
use badexpert_lab::demo::{load_fashion_mnist, split_test_set};
use badexpert_runtime::{advanced, FrameSet, Guard, GuardBundle, PixelLayout, Preprocessor, Role};
use tract_core::prelude::*;

use common::*;

/// Max |Δlogit| between the exported plans (tract, batch of 100) and the
/// libtorch interpreter (eval mode) for M, B and M′.
#[test]
fn plans_agree_with_the_interpreter() {
    let c = demo_conversion();
    let frames = load(&demo_dir().join("eval-clean-images-idx3-ubyte.gz"));
    let frames = frames.select(&(0..100).collect::<Vec<_>>());
    let bundle = GuardBundle::open_with_batch(&c.bundle, 100).unwrap();
    let m = bundle.manifest();
    let pre = Preprocessor::new(&m.normalization, m.input.shape).unwrap();
    let mut input = vec![0f32; 100 * m.input.shape.len()];
    for (i, chunk) in input.chunks_mut(m.input.shape.len()).enumerate() {
        pre.planar_into(frames.frame(i), chunk).unwrap();
    }
    let s = m.input.shape;
    let input = tract_ndarray::Array4::from_shape_vec((100, s.channels, s.height, s.width), input).unwrap();
    let model = TchGraph::load(&demo_dir().join("model.onnx"), tch::Device::Cpu).unwrap();
    for (role, graph) in [(Role::Model, &model), (Role::Expert, &c.expert), (Role::Auxiliary, &c.auxiliary)] {
        let tract_out = advanced::plan(&bundle, role).run(tvec![input.clone().into_tensor().into()]).unwrap();
        let tract_logits = tract_out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        let torch_logits = Vec::<f32>::try_from(predict_logits(graph, &frames, &pre).unwrap().flatten(0, -1)).unwrap();
        assert_eq!(tract_logits.len(), torch_logits.len());
        let max_diff = tract_logits.iter().zip(&torch_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("{role:?}: max |Δlogit| = {max_diff:.2e} over 100 frames");
        assert!(max_diff <= 1e-4, "{role:?}: max |Δlogit| {max_diff}");
    }
}

fn guard_all(guard: &mut Guard, set: &FrameSet) -> Vec<Scored> {
    let labels = set.labels().unwrap();
    (0..set.len())
        .map(|i| Scored::from_verdict(labels[i], &guard.guard(set.frame(i), PixelLayout::Chw).unwrap()))
        .collect()
}

/// Issue 2's acceptance figures: the guard built from the 2,000-image reserve,
/// evaluated on the other 8,000 Fashion-MNIST test images and their triggered copies.
#[test]
fn demo_meets_the_acceptance_bar_on_full_fashion_mnist() {
    let data = load_fashion_mnist(&fashion_mnist_dir())
        .expect("Fashion-MNIST is needed for this test: scripts/test.sh installs dataset-fashion-mnist");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo_dir().join("demo.json")).unwrap()).unwrap();
    let seed = spec["spec"]["seed"].as_u64().unwrap();
    let (reserve, rest) = split_test_set(&data.test, 2000, seed).unwrap();
    assert_eq!(reserve, common::reserve(), "shipped reserve is the seeded split of the test set");
    assert_eq!(rest.len(), 8000);

    let c = demo_conversion();
    let bundle = GuardBundle::open(&c.bundle).unwrap();
    let mut guard = Guard::new(&bundle).unwrap();
    let clean = guard_all(&mut guard, &rest);
    let triggered = guard_all(&mut guard, &Attack::BadNet.triggered(&rest));
    let e = Evaluation::compute(&clean, &triggered, 0, bundle.manifest().decision.threshold).unwrap();
    eprintln!("{}\n{}", e.table(), serde_json::to_string(&e).unwrap());
    eprintln!(
        "held-out accuracy M {:.3} B {:.3} M′ {:.3}; calibration FPR {:.4} on {} frames",
        c.model_accuracy,
        c.expert_accuracy,
        c.auxiliary_accuracy,
        c.calibration.realised_fpr,
        c.calibration.frames_used
    );
    assert!(e.clean_accuracy >= 0.88, "CA {}", e.clean_accuracy);
    assert!(e.attack_success_rate >= 0.95, "ASR {}", e.attack_success_rate);
    assert!(e.auroc.unwrap() >= 0.99, "AUROC {:?}", e.auroc);
    assert!(e.attack_success_rate_defended <= 0.05, "ASR with guard {}", e.attack_success_rate_defended);
    assert!(
        e.clean_accuracy - e.clean_accuracy_defended <= 0.02,
        "CA drop {}",
        e.clean_accuracy - e.clean_accuracy_defended
    );
    let (lo, hi) = conformal_fpr_range(c.calibration.frames_used, bundle.manifest().decision.target_fpr);
    assert!((lo..=hi).contains(&e.clean_fpr), "clean FPR {} outside [{lo:.4}, {hi:.4}]", e.clean_fpr);
}

/// The bundle shipped in models/ (for devices without libtorch) loads and
/// guards the shipped slice as well as a fresh conversion does.
#[test]
fn shipped_bundle_guards_the_shipped_slice() {
    let bundle = GuardBundle::open(demo_dir().join("bundle")).unwrap();
    let mut guard = Guard::new(&bundle).unwrap();
    let clean = guard_all(&mut guard, &load(&demo_dir().join("eval-clean-images-idx3-ubyte.gz")));
    let triggered = guard_all(&mut guard, &load(&demo_dir().join("eval-badnet-images-idx3-ubyte.gz")));
    let e = Evaluation::compute(&clean, &triggered, 0, bundle.manifest().decision.threshold).unwrap();
    eprintln!("{}", e.table());
    assert!(e.auroc.unwrap() >= 0.98, "{e:?}");
    assert!(e.attack_success_rate_defended <= 0.05, "{e:?}");
}

/// STRIP and SCALE-UP run on the bundle's stored clean frames and are scored
/// by the same metrics code as BaDExpert.
#[test]
fn baselines_are_scored_with_the_same_metrics() {
    use badexpert_eval::baselines::{ScaleUp, Strip};
    let c = demo_conversion();
    let bundle = GuardBundle::open(&c.bundle).unwrap();
    let stored = badexpert_frames::clean_frames(&bundle).unwrap().expect("converted with store_clean");
    assert_eq!(stored.len(), 200);
    let take = |set: FrameSet| set.select(&(0..100).collect::<Vec<_>>());
    let clean = take(load(&demo_dir().join("eval-clean-images-idx3-ubyte.gz")));
    let triggered = Attack::BadNet.triggered(&clean);
    let mut guard = Guard::new(&bundle).unwrap();
    let mut strip = Strip::new(&bundle, stored, 20).unwrap();
    let mut scale_up = ScaleUp::new(&bundle).unwrap();
    let score = |set: &FrameSet, guard: &mut Guard, f: &mut dyn FnMut(&[u8]) -> f32| -> Vec<Scored> {
        let labels = set.labels().unwrap();
        (0..set.len())
            .map(|i| {
                let v = guard.guard(set.frame(i), PixelLayout::Chw).unwrap();
                Scored {
                    label: labels[i],
                    class: v.class,
                    suspicion: f(set.frame(i)),
                    accepted: true,
                    confidences: None,
                }
            })
            .collect()
    };
    let mut strip_score = |f: &[u8]| strip.score(f).unwrap();
    let s_clean = score(&clean, &mut guard, &mut strip_score);
    let s_trig = score(&triggered, &mut guard, &mut strip_score);
    let strip_eval = Evaluation::compute(&s_clean, &s_trig, 0, 0.0).unwrap();
    let mut scale_score = |f: &[u8]| scale_up.score(f).unwrap();
    let u_clean = score(&clean, &mut guard, &mut scale_score);
    let u_trig = score(&triggered, &mut guard, &mut scale_score);
    assert!(u_clean.iter().chain(&u_trig).all(|s| (0.0..=1.0).contains(&s.suspicion)));
    let scale_eval = Evaluation::compute(&u_clean, &u_trig, 0, 0.0).unwrap();
    eprintln!("STRIP AUROC {:?}, SCALE-UP AUROC {:?} (BadNet, 100 + 100 frames)", strip_eval.auroc, scale_eval.auroc);
    // A bright corner patch dominates superimpositions: STRIP's known success case.
    assert!(strip_eval.auroc.unwrap() > 0.9, "{strip_eval:?}");
}

/// A known target label gets a threshold of its own: on the held-out frames
/// τ was calibrated on, the target's frames are rejected at about its share
/// of the budget over its share of the frames and the others at the rest,
/// and the runtime judges every frame against its class's threshold.
#[test]
fn a_known_target_gets_its_own_share_of_the_false_positive_budget() {
    use badexpert_converter::calibration::{calibrate, TargetSplit};
    use badexpert_converter::convert::ReserveSplit;
    let c = demo_conversion();
    let dir = std::env::temp_dir().join(format!("badexpert-e2e-target-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&c.bundle).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let opts = badexpert_converter::ConvertOptions::new(c.manifest.normalization.clone());
    let holdout = ReserveSplit::new(&reserve(), opts.holdout_fraction, 0.0, opts.seed).unwrap().calibration;
    let split = TargetSplit { label: 0, fpr_share: 0.7, source: "test".into() };
    let cal = calibrate(&dir, &holdout, 0.05, Some(&split)).unwrap();
    let target = cal.target.clone().expect("the demo's held-out frames can set both thresholds");
    assert_eq!((target.label, target.fpr_share), (0, 0.7));
    assert!(target.threshold > cal.threshold, "more of the budget on the target: a higher bar there");

    let mut manifest = c.manifest.clone();
    manifest.decision.threshold = cal.threshold;
    manifest.decision.target = Some(target.clone());
    manifest.write(&dir.join(badexpert_runtime::manifest::MANIFEST_FILE)).unwrap();
    let bundle = GuardBundle::open(&dir).unwrap();
    assert_eq!(bundle.manifest().decision.threshold_for(0), target.threshold);
    assert_eq!(bundle.manifest().decision.threshold_for(3), cal.threshold);
    let mut guard = Guard::new(&bundle).unwrap();
    let labels = holdout.labels().unwrap();
    let (mut on, mut off) = ((0usize, 0usize), (0usize, 0usize));
    for (i, &label) in labels.iter().enumerate() {
        let v = guard.guard(holdout.frame(i), PixelLayout::Chw).unwrap();
        assert_eq!(v.accepted, v.score >= bundle.manifest().decision.threshold_for(v.class));
        if v.class as u32 != label {
            continue;
        }
        let side = if v.class == 0 { &mut on } else { &mut off };
        *side = (side.0 + 1, side.1 + usize::from(!v.accepted));
    }
    // The j-th smallest score of each side, j = ⌊rate·(n + 1)⌋: at most that
    // rate rejected, and no fewer than j − 1 frames.
    let rate = |share: f64, n: usize| share * 0.05 * (on.0 + off.0) as f64 / n as f64;
    let (on_rate, off_rate) = (rate(0.7, on.0), rate(0.3, off.0));
    eprintln!(
        "target: {on:?} (rate {on_rate:.4}), others: {off:?} (rate {off_rate:.4}); realised {}",
        cal.realised_fpr
    );
    assert!(on.1 as f64 <= on_rate * (on.0 + 1) as f64 && on.1 as f64 + 1.0 >= (on_rate * (on.0 + 1) as f64).floor());
    assert!(
        off.1 as f64 <= off_rate * (off.0 + 1) as f64 && off.1 as f64 + 1.0 >= (off_rate * (off.0 + 1) as f64).floor()
    );
    assert_eq!(cal.realised_fpr, (on.1 + off.1) as f64 / (on.0 + off.0) as f64);
}
