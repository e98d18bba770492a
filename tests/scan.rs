//! The backdoor scan (clean unlearning and trigger inversion, docs/design.md
//! §8) on two zoo models this project did not make, from the development
//! part, with the zoo's reserve and the default settings, as docs/zoo.md
//! reports them: a backdoored one is called backdoored with its true target
//! (its unlearning runs collapse onto it), a clean one is called clean
//! (without unlearning runs: the inversion alone decides it).

mod common;

use std::path::PathBuf;

use badexpert_converter::inversion::InversionOptions;
use badexpert_converter::onnx::{normalization_metadata, read_model};
use badexpert_converter::{scan_model, ScanOptions};
use badexpert_runtime::ScanRecord;

use common::*;

fn zoo_dir() -> PathBuf {
    root().join("models/zoo")
}

fn scan_zoo_model(name: &str) -> (ScanRecord, Option<u64>) {
    tch::set_num_threads(2);
    let zoo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(zoo_dir().join("zoo.json")).unwrap()).unwrap();
    let model = zoo["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap().clone();
    assert_eq!(model["part"], "dev", "the suite checks models of the development part");
    let onnx = zoo_dir().join(model["files"]["bn"].as_str().unwrap());
    let norm = normalization_metadata(&read_model(&onnx).unwrap()).unwrap().unwrap();
    let reserve = load(&zoo_dir().join("reserve-images-idx3-ubyte.gz"));
    let opts = ScanOptions { device: tch::Device::Cpu, ..ScanOptions::default() };
    let record = scan_model(&onnx, &reserve, &norm, 0.2, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    let classes: Vec<String> = (0..10).map(|k| k.to_string()).collect();
    eprintln!("{name}: {}", record.summary(&classes));
    // The runs ran (and were all recorded) only where they name the target:
    // an outlier between the verdict's and the label's thresholds.
    let anomaly = record.inversion.as_ref().expect("the default scan inverts triggers").anomaly;
    let needed = anomaly >= opts.inversion.threshold && anomaly < opts.inversion.label_threshold;
    assert_eq!(record.runs.len(), if needed { opts.runs } else { 0 }, "anomaly {anomaly}");
    record.validate(10).unwrap();
    (record, model["target"].as_u64())
}

#[test]
fn a_backdoored_zoo_model_is_called_backdoored_with_its_target() {
    let (record, target) = scan_zoo_model("cnn-lowrate-trojan");
    let inversion = record.inversion.as_ref().expect("the default scan inverts triggers");
    assert!(record.backdoored, "anomaly {} < threshold {}", inversion.anomaly, record.threshold);
    assert_eq!(record.target.map(|t| t as u64), target);
    assert_eq!(Some(record.consensus as u64), target, "histogram {:?}", record.histogram);
    assert_eq!(record.exposed_runs, record.runs.len());
    assert!(record.agreement >= 0.75, "agreement {}", record.agreement);
}

#[test]
fn a_clean_zoo_model_is_called_clean() {
    let (record, _) = scan_zoo_model("cnn-clean");
    assert!(!record.backdoored, "score {} ≥ threshold {}", record.score, record.threshold);
    assert_eq!(record.target, None);
}

#[test]
fn a_model_whose_task_is_not_unlearned_within_the_budget_gets_a_clean_verdict_that_says_so() {
    tch::set_num_threads(2);
    let onnx = demo_dir().join("model.onnx");
    let norm = normalization_metadata(&read_model(&onnx).unwrap()).unwrap().unwrap();
    let reserve = reserve().head(300);
    // A floor of 0 can never be crossed: every run ends at its one-pass budget
    // (the runs' own verdict: no trigger inversion).
    let opts = ScanOptions {
        runs: 2,
        max_epochs: 1,
        floor: 0.0,
        inversion: InversionOptions { steps: 0, ..InversionOptions::default() },
        device: tch::Device::Cpu,
        ..ScanOptions::default()
    };
    let record = scan_model(&onnx, &reserve, &norm, 0.2, &opts).unwrap();
    assert_eq!(record.exposed_runs, 0);
    assert!(record.runs.iter().all(|r| r.outcome == "unexposed" && r.steps == record.max_steps));
    assert!(!record.backdoored && record.target.is_none());
    let line = record.summary(&(0..10).map(|k| k.to_string()).collect::<Vec<_>>());
    assert!(line.contains("no run unlearned the clean task"), "{line}");
}
