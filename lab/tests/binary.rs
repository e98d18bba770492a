//! The lab's own binary, apart from the product's `badexpert-convert`:
//! `trigger` writes a triggered copy of a frame set with its labels;
//! `implant` writes a canaried copy of a model.

use std::path::Path;
use std::process::Command;

use badexpert_frames::FrameSource;

#[test]
fn trigger_writes_a_triggered_copy_with_its_labels() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist");
    let input = demo.join("eval-clean-images-idx3-ubyte.gz");
    let dir = std::env::temp_dir().join(format!("badexpert-lab-trigger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("badnet-images-idx3-ubyte.gz");
    let o = Command::new(env!("CARGO_BIN_EXE_badexpert-lab"))
        .args(["--quiet", "trigger", "--attack", "badnet", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let clean = FrameSource::detect(&input).load().unwrap();
    let triggered = FrameSource::detect(&output).load().unwrap();
    assert_eq!((triggered.len(), triggered.labels()), (clean.len(), clean.labels()));
    let changed = (0..clean.len()).filter(|&i| clean.frame(i) != triggered.frame(i)).count();
    assert!(changed > clean.len() * 9 / 10, "only {changed} of {} frames carry the trigger", clean.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_lab_binary_has_the_research_commands() {
    let help = Command::new(env!("CARGO_BIN_EXE_badexpert-lab")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for command in ["make-demo", "trigger", "implant", "report", "ablate", "timing-bundle"] {
        assert!(help.contains(command), "badexpert-lab --help lacks {command}: {help}");
    }
}

#[test]
fn implant_writes_a_copy_that_learned_the_canary() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist");
    let dir = std::env::temp_dir().join(format!("badexpert-lab-implant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("canaried.onnx");
    let o = Command::new(env!("CARGO_BIN_EXE_badexpert-lab"))
        .args([
            "--quiet",
            "--device",
            "cpu",
            "--threads",
            "2",
            "implant",
            "--attack",
            "blend",
            "--target",
            "4",
            "--epochs",
            "3",
        ])
        .args(["--lr", "1e-3", "--model"])
        .arg(demo.join("model.onnx"))
        .arg("--reserve")
        .arg(demo.join("reserve-images-idx3-ubyte.gz"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (before, after) =
        (report["attack_success_before"].as_f64().unwrap(), report["attack_success"].as_f64().unwrap());
    assert!(before < 0.2 && after > 0.8, "canary success {before} -> {after}");
    assert!(report["clean_accuracy"].as_f64().unwrap() > 0.8, "{report}");
    // The copy records the model's normalisation, so it converts like any model.
    let copy = badexpert_converter::onnx::read_model(&out).unwrap();
    assert!(badexpert_converter::onnx::normalization_metadata(&copy).unwrap().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
