//! A small version of `badexpert-convert report` on the shipped BadNet model.

mod common;

use badexpert_converter::report::{markdown, report_model, ReportOptions};
use badexpert_converter::ConvertOptions;
use badexpert_runtime::evaluate::DetectorKind;
use badexpert_runtime::Normalization;

#[test]
fn small_report_compares_three_detectors() {
    tch::set_num_threads(2);
    let out = std::env::temp_dir().join(format!("badexpert-report-{}", std::process::id()));
    let mut convert = ConvertOptions::new(Normalization::unit());
    convert.device = tch::Device::Cpu;
    let opts = ReportOptions { frames: 80, strip_n: 10, low_opacity: vec![0.1], convert };
    let r = report_model(&common::demo_dir(), &out, &opts, &()).unwrap();
    let kinds: Vec<DetectorKind> = r.detectors.iter().map(|d| d.detector).collect();
    assert_eq!(kinds, [DetectorKind::BadExpert, DetectorKind::Strip, DetectorKind::ScaleUp]);
    assert!(r.low_opacity_blend.is_empty(), "low-opacity Blend only applies to Blend models");
    for d in &r.detectors {
        assert_eq!((d.evaluation.n_clean, d.evaluation.n_triggered), (80, 80));
        assert!(d.cost.mean_us > 0.0 && d.cost.frames == 160);
    }
    assert!(r.detectors[0].evaluation.auroc.unwrap() > 0.95, "{:?}", r.detectors[0].evaluation);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["detectors"][1]["detector"], "strip");
    let md = markdown(&[r], &opts);
    assert!(md.contains("| badnet-fmnist | badnet |") && md.contains("## AUROC per detector"), "{md}");
}
