//! Models this project did not make (the PyTorch-trained zoo of
//! `lab/zoo/make_zoo.py`), converted with the defaults — no tuning flag —
//! and guarded on the zoo's evaluation slice: one folded export (BatchNorm
//! merged into the convolutions, `torch.onnx.export`'s default) and one with
//! BatchNorm kept, both from the development part.

mod common;

use std::path::PathBuf;

use badexpert_converter::onnx::{normalization_metadata, read_model};
use badexpert_converter::{convert, ConvertOptions};
use badexpert_eval::metrics::{Evaluation, Scored};
use badexpert_runtime::{FrameSet, Guard, GuardBundle, PixelLayout};

use common::*;

fn zoo_dir() -> PathBuf {
    root().join("models/zoo")
}

fn zoo_model(name: &str) -> serde_json::Value {
    let zoo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(zoo_dir().join("zoo.json")).unwrap()).unwrap();
    zoo["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in zoo.json"))
        .clone()
}

fn guard_all(guard: &mut Guard, set: &FrameSet) -> Vec<Scored> {
    let labels = set.labels().unwrap();
    (0..set.len())
        .map(|i| Scored::from_verdict(labels[i], &guard.guard(set.frame(i), PixelLayout::Chw).unwrap()))
        .collect()
}

/// Converts one export of a zoo model with the default options and evaluates it.
fn convert_and_evaluate(name: &str, export: &str) -> Evaluation {
    tch::set_num_threads(2);
    let model = zoo_model(name);
    let onnx = zoo_dir().join(model["files"][export].as_str().unwrap());
    let norm =
        normalization_metadata(&read_model(&onnx).unwrap()).unwrap().expect("zoo models record their normalisation");
    let mut opts = ConvertOptions::new(norm);
    opts.device = tch::Device::Cpu;
    opts.overwrite = true;
    let out = std::env::temp_dir().join(format!("badexpert-zoo-{}-{name}-{export}", std::process::id()));
    let reserve = load(&zoo_dir().join("reserve-images-idx3-ubyte.gz"));
    let c = convert(&onnx, &reserve, &out, &opts, &())
        .unwrap_or_else(|e| panic!("{name} ({export}) does not convert: {e}"));
    let bundle = GuardBundle::open(&c.bundle).unwrap();
    let mut guard = Guard::new(&bundle).unwrap();
    let clean = guard_all(&mut guard, &load(&zoo_dir().join("eval-clean-images-idx3-ubyte.gz")));
    let triggered = guard_all(&mut guard, &load(&zoo_dir().join(model["files_triggered"]["images"].as_str().unwrap())));
    let target = model["target"].as_u64().unwrap() as u32;
    let e = Evaluation::compute(&clean, &triggered, target, bundle.manifest().decision.threshold).unwrap();
    eprintln!(
        "{name} ({export}): B lr {:e}, M′ lr {}, {} BatchNorm(s) restored\n{}",
        c.manifest.fine_tune.expert.learning_rate,
        c.manifest.fine_tune.auxiliary.learning_rate,
        c.restored_norms,
        e.table()
    );
    let _ = std::fs::remove_dir_all(&out);
    e
}

/// Issue 13's bar for a backdoored CNN of the zoo.
fn assert_meets_the_bar(e: &Evaluation) {
    assert!(e.attack_success_rate >= 0.9, "the zoo model is backdoored: ASR {}", e.attack_success_rate);
    assert!(e.auroc.unwrap() >= 0.995, "AUROC {:?}", e.auroc);
    assert!(e.attack_success_rate_defended <= 0.01, "ASR with guard {}", e.attack_success_rate_defended);
    // 1.5 pt is a whole number of frames of the 1,000: compare with rounding slack.
    assert!(
        e.clean_accuracy - e.clean_accuracy_defended <= 0.015 + 1e-9,
        "CA drop {}",
        e.clean_accuracy - e.clean_accuracy_defended
    );
}

#[test]
fn a_folded_zoo_export_converts_with_the_defaults_and_meets_the_bar() {
    let e = convert_and_evaluate(FOLDED_MODEL, "folded");
    assert_meets_the_bar(&e);
}

#[test]
fn a_batchnorm_kept_zoo_export_converts_with_the_defaults_and_meets_the_bar() {
    let e = convert_and_evaluate(BN_KEPT_MODEL, "bn");
    assert_meets_the_bar(&e);
}

/// The development-part model the suite converts, in two exports (small, so CI stays short).
const FOLDED_MODEL: &str = "vggbn-blend";
const BN_KEPT_MODEL: &str = "vggbn-blend";

#[test]
fn the_conformal_range_is_the_beta_quantiles() {
    // Beta(3, 355): 0.1 % and 99.9 % quantiles 0.00054 and 0.03105 (computed independently).
    let (lo, hi) = conformal_fpr_range(357, 0.01);
    assert!((lo - 0.00054).abs() < 0.00005, "{lo}");
    assert!((hi - 0.03105).abs() < 0.0005, "{hi}");
}
