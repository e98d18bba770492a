//! The evaluation report (the paper's Tables 1 and 2 for our data): for each
//! backdoored model directory (as `make-demo` writes them), build a guard
//! bundle, then compare BaDExpert with STRIP and SCALE-UP on its clean
//! evaluation slice and the slice's triggered copy, plus low-opacity Blend as
//! an evasion attempt. Writes `report.json` and `report.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use badexpert_eval::evaluate::{detector_table, evaluate_detectors, DetectorKind, DetectorReport};
use badexpert_eval::metrics::Evaluation;
use badexpert_eval::table::{pct, Table};
use badexpert_runtime::{Guard, GuardBundle};

use crate::attack::Attack;
use crate::demo::DemoDir;
use crate::plot::write_plots;
use badexpert_converter::convert::{convert, ConvertOptions};
use badexpert_converter::train::Progress;
use badexpert_converter::{Error, Result};

/// What to evaluate and how. Each model's input normalisation comes from its
/// ONNX metadata (as `make-demo` records it), not from `convert`.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Evaluation frames per side (clean, triggered), the first ones of the slice.
    pub frames: usize,
    pub strip_n: usize,
    /// Opacities for the low-opacity Blend evasion (applied to Blend models).
    pub low_opacity: Vec<f32>,
    pub convert: ConvertOptions,
}

/// One model's results.
#[derive(Debug, Serialize)]
pub struct ModelReport {
    pub name: String,
    pub attack: String,
    pub target: u32,
    pub detectors: Vec<DetectorReport>,
    /// (opacity, BaDExpert's figures) for low-opacity Blend.
    pub low_opacity_blend: Vec<(f32, Evaluation)>,
    /// Chosen expert rate and held-out accuracies of M, B, M′.
    pub expert_learning_rate: f64,
    pub holdout_accuracy: [f64; 3],
    /// The SVG figures, relative to the report directory.
    pub plots: Vec<PathBuf>,
}

/// The model directories under `root` (those holding `model.onnx` and `demo.json`), sorted.
pub fn model_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file() && p.join("demo.json").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(Error::Invalid(format!("{}: no model directories (model.onnx + demo.json) found", root.display())));
    }
    Ok(dirs)
}

/// Evaluates one model directory into `out/<name>/`.
pub fn report_model(dir: &Path, out: &Path, opts: &ReportOptions, progress: &dyn Progress) -> Result<ModelReport> {
    let demo = DemoDir::open(dir)?;
    let (name, attack, target) = (demo.name.clone(), demo.attack, demo.target);
    let mut copts = opts.convert.clone();
    copts.normalization = demo.normalization.clone();
    copts.overwrite = true;
    copts.store_clean = copts.store_clean.max(200);
    let bundle_dir = out.join(&name).join("bundle");
    let conversion = convert(&demo.model, &demo.reserve, &bundle_dir, &copts, progress)?;
    let bundle = GuardBundle::open(&bundle_dir)?;
    let mut guard = Guard::new(&bundle)?;
    let clean = demo.eval_clean.head(opts.frames);
    let triggered = attack.triggered(&clean);
    let all = [DetectorKind::BadExpert, DetectorKind::Strip, DetectorKind::ScaleUp];
    let detectors = evaluate_detectors(&bundle, &mut guard, &clean, &triggered, target, &all, opts.strip_n)?;
    let plots = write_plots(
        &out.join(&name),
        &format!("{name} ({attack})"),
        &detectors,
        target,
        f64::from(bundle.manifest().decision.gamma),
    )?
    .into_iter()
    .map(|p| p.strip_prefix(out).map(Path::to_path_buf).unwrap_or(p))
    .collect();
    let mut low_opacity_blend = Vec::new();
    if matches!(attack, Attack::Blend { .. }) {
        for &alpha in &opts.low_opacity {
            let t = Attack::Blend { alpha }.triggered(&clean);
            let r =
                evaluate_detectors(&bundle, &mut guard, &clean, &t, target, &[DetectorKind::BadExpert], opts.strip_n)?;
            low_opacity_blend.push((alpha, r[0].evaluation.clone()));
        }
    }
    Ok(ModelReport {
        name,
        attack: attack.to_string(),
        target,
        detectors,
        low_opacity_blend,
        expert_learning_rate: conversion.manifest.fine_tune.expert.learning_rate,
        holdout_accuracy: [conversion.model_accuracy, conversion.expert_accuracy, conversion.auxiliary_accuracy],
        plots,
    })
}

fn get(r: &ModelReport, k: DetectorKind) -> Option<&Evaluation> {
    r.detectors.iter().find(|d| d.detector == k).map(|d| &d.evaluation)
}

/// The markdown report: Table 1 (CA/ASR without and with each detector),
/// Table 2 (AUROC per detector), averages, low-opacity Blend, cost.
pub fn markdown(reports: &[ModelReport], opts: &ReportOptions) -> String {
    let kinds = [DetectorKind::BadExpert, DetectorKind::Strip, DetectorKind::ScaleUp];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# badexpert evaluation report\n\n{} clean + {} triggered frames per model; thresholds at {:.0} % target FPR, \
         chosen out of sample (BaDExpert: held-out reserve; baselines: clean frames stored in the bundle).\n",
        opts.frames,
        opts.frames,
        100.0 * opts.convert.target_fpr
    );
    let _ = writeln!(md, "## CA / ASR (%) without defense and with each detector\n");
    let mut table = Table::new(
        ["model", "attack", "no defense CA", "no defense ASR"]
            .map(String::from)
            .into_iter()
            .chain(kinds.iter().flat_map(|k| [format!("{k} CA"), format!("{k} ASR")])),
    );
    let mut sums = vec![0.0; 2 + 2 * kinds.len()];
    for r in reports {
        let base = get(r, DetectorKind::BadExpert).expect("always evaluated");
        let mut cells = vec![base.clean_accuracy, base.attack_success_rate];
        for k in kinds {
            let e = get(r, k).expect("evaluated");
            cells.extend([e.clean_accuracy_defended, e.attack_success_rate_defended]);
        }
        for (s, c) in sums.iter_mut().zip(&cells) {
            *s += c;
        }
        table.row([r.name.clone(), r.attack.to_string()].into_iter().chain(cells.iter().map(|&c| pct(c))));
    }
    let n = reports.len().max(1) as f64;
    table.row(
        ["**average**".to_string(), String::new()]
            .into_iter()
            .chain(sums.iter().map(|&s| format!("**{}**", pct(s / n)))),
    );
    let _ = writeln!(md, "{table}");

    let _ = writeln!(md, "## AUROC per detector\n");
    let mut table =
        Table::new(["model".to_string(), "attack".into()].into_iter().chain(kinds.iter().map(|k| k.to_string())));
    let mut auroc_sums = vec![0.0; kinds.len()];
    for r in reports {
        let vals: Vec<f64> = kinds.iter().map(|&k| get(r, k).and_then(|e| e.auroc).unwrap_or(f64::NAN)).collect();
        for (s, v) in auroc_sums.iter_mut().zip(&vals) {
            *s += v;
        }
        table.row([r.name.clone(), r.attack.to_string()].into_iter().chain(vals.iter().map(|v| format!("{v:.4}"))));
    }
    table.row(
        ["**average**".to_string(), String::new()]
            .into_iter()
            .chain(auroc_sums.iter().map(|s| format!("**{:.4}**", s / n))),
    );
    let _ = writeln!(md, "{table}");

    let _ = writeln!(md, "## BaDExpert's parts: AUROC of B alone, M′ alone and both (the paper's Fig 5)\n");
    let mut table = Table::new(["model", "attack", "B alone (high c_B)", "M′ alone (low c_A)", "both"]);
    for r in reports {
        if let Some(c) = r.detectors.iter().find_map(|d| d.components) {
            table.row([
                r.name.clone(),
                r.attack.to_string(),
                format!("{:.4}", c.expert_only),
                format!("{:.4}", c.auxiliary_only),
                format!("{:.4}", c.ensemble),
            ]);
        }
    }
    let _ = writeln!(md, "{table}");

    let low: Vec<&ModelReport> = reports.iter().filter(|r| !r.low_opacity_blend.is_empty()).collect();
    if !low.is_empty() {
        let _ = writeln!(md, "## Low-opacity Blend at test time (evasion attempt), BaDExpert\n");
        let mut table = Table::new(["model", "opacity", "AUROC", "ASR without defense", "ASR with BaDExpert"]);
        for r in low {
            for (alpha, e) in &r.low_opacity_blend {
                table.row([
                    r.name.clone(),
                    format!("{alpha:.2}"),
                    e.auroc.map_or("n/a".into(), |a| format!("{a:.4}")),
                    pct(e.attack_success_rate),
                    pct(e.attack_success_rate_defended),
                ]);
            }
        }
        let _ = writeln!(md, "{table}");
    }
    let _ = writeln!(md, "## Per model: detectors side by side (with per-frame cost)\n");
    for r in reports {
        let _ = writeln!(
            md,
            "### {} ({}; expert rate {:.1e}; held-out CA of M / B / M′: {} / {} / {} %)\n\n{}",
            r.name,
            r.attack,
            r.expert_learning_rate,
            pct(r.holdout_accuracy[0]),
            pct(r.holdout_accuracy[1]),
            pct(r.holdout_accuracy[2]),
            detector_table(&r.detectors)
        );
        for p in &r.plots {
            let _ = writeln!(md, "![{}]({})", p.file_stem().unwrap_or_default().to_string_lossy(), p.display());
        }
        md.push('\n');
    }
    md
}
