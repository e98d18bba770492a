//! A small version of `badexpert-lab report` on the shipped BadNet model.

mod common;

use badexpert_converter::ConvertOptions;
use badexpert_eval::evaluate::DetectorKind;
use badexpert_lab::report::{markdown, report_model, ReportOptions};
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
    let parts = r.detectors[0].components.expect("BaDExpert keeps c_B and c_A");
    assert_eq!(Some(parts.ensemble), r.detectors[0].evaluation.auroc);
    assert!(r.detectors[1..].iter().all(|d| d.components.is_none()));
    let names: Vec<String> = r.plots.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["roc.svg", "scores.svg", "confidences.svg"]);
    let svg = |name: &str| std::fs::read_to_string(out.join("badnet-fmnist").join(name)).unwrap();
    let roc = svg("roc.svg");
    assert_eq!(
        roc.matches("stroke-width=\"2\" points=").count(),
        3 * 3,
        "per detector: a linear and a log-FPR curve and a legend mark"
    );
    assert!(roc.contains("badexpert (AUROC") && roc.contains("scale_up (AUROC"));
    assert!(svg("scores.svg").contains("threshold τ"));
    // One dot per negative and per positive frame, plus two legend dots.
    let e = &r.detectors[0].evaluation;
    let hits = (e.attack_success_rate * e.n_triggered_nontarget as f64).round() as usize;
    let correct = (e.clean_accuracy * e.n_clean as f64).round() as usize;
    assert_eq!(svg("confidences.svg").matches("<circle").count(), correct + hits + 2);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["detectors"][1]["detector"], "strip");
    let md = markdown(&[r], &opts);
    assert!(md.contains("| badnet-fmnist | badnet |") && md.contains("## AUROC per detector"), "{md}");
    assert!(md.contains("B alone") && md.contains("![roc](badnet-fmnist/roc.svg)"), "{md}");
}

#[test]
fn ablation_varies_reserve_and_rate_and_reports_each_part() {
    use badexpert_converter::expert::ExpertRate;
    use badexpert_lab::ablation::{ablate, markdown, AblationOptions, Study};
    tch::set_num_threads(2);
    let out = std::env::temp_dir().join(format!("badexpert-ablation-{}", std::process::id()));
    let mut convert = ConvertOptions::new(Normalization::unit());
    convert.device = tch::Device::Cpu;
    let opts =
        AblationOptions { reserve_sizes: vec![200], expert_rates: vec![ExpertRate::Fixed(1e-3)], frames: 60, convert };
    let rows = ablate(&common::demo_dir(), &out, &opts, &()).unwrap();
    assert_eq!(rows.len(), 2);
    let (small, rate) = (&rows[0], &rows[1]);
    assert_eq!((small.study, small.reserve_size, small.expert_rate.as_str()), (Study::ReserveSize, 200, "auto"));
    assert_eq!((rate.study, rate.reserve_size, rate.expert_rate_used), (Study::ExpertRate, 2000, 1e-3));
    // 40 held-out frames cannot calibrate 1 %: the row says what it calibrated for.
    assert_eq!(small.target_fpr, 1.5 / 40.0);
    assert_eq!(rate.target_fpr, 0.01);
    for r in &rows {
        let parts = r.components.expect("BaDExpert keeps c_B and c_A");
        assert_eq!(Some(parts.ensemble), r.evaluation.auroc);
        assert!((0.0..=1.0).contains(&parts.expert_only) && (0.0..=1.0).contains(&parts.auxiliary_only));
        assert_eq!(r.evaluation.n_clean, 60);
    }
    let md = markdown(&rows);
    assert!(
        md.contains("## Clean reserve size")
            && md.contains("## Unlearning rate")
            && md.contains("| badnet-fmnist | 200 | auto"),
        "{md}"
    );
    std::fs::remove_dir_all(&out).ok();
}
