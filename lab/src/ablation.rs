//! Ablations of BaDExpert on one backdoored model directory (the paper's
//! Fig 5 and Table 9): how detection changes with the size of the clean
//! reserve and with the unlearning rate of the backdoor expert, and — in
//! every setting — how B alone, M′ alone and both rank triggered frames.

use std::fmt::Write as _;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use badexpert_eval::evaluate::{evaluate_detectors, DetectorKind};
use badexpert_eval::metrics::{ComponentAuroc, Evaluation};
use badexpert_eval::table::Table;
use badexpert_runtime::{FrameSet, Guard, GuardBundle};

use crate::demo::DemoDir;
use badexpert_converter::convert::{convert, ConvertOptions};
use badexpert_converter::expert::ExpertRate;
use badexpert_converter::train::Progress;
use badexpert_converter::{Error, Result};

/// What to vary. Each reserve size is run with the automatic expert rate,
/// each expert rate with the whole reserve.
#[derive(Debug, Clone)]
pub struct AblationOptions {
    /// Nested seeded subsets of the directory's reserve (100 ⊂ 200 ⊂ …).
    pub reserve_sizes: Vec<usize>,
    pub expert_rates: Vec<ExpertRate>,
    /// Clean (and as many triggered) evaluation frames.
    pub frames: usize,
    pub convert: ConvertOptions,
}

/// Which knob a row varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Study {
    ReserveSize,
    ExpertRate,
}

/// One setting's figures.
#[derive(Debug, Clone, Serialize)]
pub struct AblationRow {
    pub model: String,
    pub attack: String,
    pub study: Study,
    pub reserve_size: usize,
    /// As asked: `auto` or a rate.
    pub expert_rate: String,
    pub expert_rate_used: f64,
    pub auxiliary_rate_used: f64,
    /// Held-out clean accuracy of B and M′.
    pub expert_holdout_accuracy: f64,
    pub auxiliary_holdout_accuracy: f64,
    /// The FPR the threshold was calibrated for: the requested one, raised to
    /// 1.5/held-out frames when the held-out split is too small for it.
    pub target_fpr: f64,
    pub evaluation: Evaluation,
    pub components: Option<ComponentAuroc>,
}

fn rate_label(rate: &ExpertRate) -> String {
    match rate {
        ExpertRate::Fixed(r) => format!("{r:e}"),
        ExpertRate::Auto { .. } => "auto".into(),
    }
}

/// Nested subsets: the first `n` of one seeded permutation of the reserve.
fn reserve_subset(reserve: &FrameSet, n: usize, seed: u64) -> Result<FrameSet> {
    if n == 0 || n > reserve.len() {
        return Err(Error::Invalid(format!(
            "reserve size {n}: the directory's reserve holds {} frames",
            reserve.len()
        )));
    }
    let mut idx: Vec<usize> = (0..reserve.len()).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x72_6573_6572_7665));
    Ok(reserve.select(&idx[..n]))
}

/// Runs every setting on the model directory `dir`; bundles go to
/// `out/<model>/<setting>/`.
pub fn ablate(dir: &Path, out: &Path, opts: &AblationOptions, progress: &dyn Progress) -> Result<Vec<AblationRow>> {
    let demo = DemoDir::open(dir)?;
    let clean = demo.eval_clean.head(opts.frames);
    let triggered = demo.attack.triggered(&clean);
    let auto = ExpertRate::auto();
    let settings: Vec<(Study, usize, &ExpertRate)> = opts
        .reserve_sizes
        .iter()
        .map(|&n| (Study::ReserveSize, n, &auto))
        .chain(opts.expert_rates.iter().map(|r| (Study::ExpertRate, demo.reserve.len(), r)))
        .collect();
    let mut rows: Vec<AblationRow> = Vec::new();
    for (study, size, rate) in settings {
        let label = rate_label(rate);
        // The full reserve at the automatic rate belongs to both studies: run it once.
        if let Some(done) = rows.iter().find(|r| r.reserve_size == size && r.expert_rate == label) {
            rows.push(AblationRow { study, ..done.clone() });
            continue;
        }
        let reserve = reserve_subset(&demo.reserve, size, opts.convert.seed)?;
        let mut copts = opts.convert.clone();
        copts.normalization = demo.normalization.clone();
        copts.overwrite = true;
        copts.expert.rate = rate.clone();
        // Calibration ranks the held-out frames M gets right; 1.5/held-out leaves
        // room for M's mistakes while keeping at least one rejection.
        let held_out = (size as f64 * copts.holdout_fraction).round().max(1.0);
        copts.target_fpr = copts.target_fpr.max(1.5 / held_out);
        let bundle_dir = out.join(&demo.name).join(format!("reserve-{size}-lr-{label}"));
        log::info!("{}: reserve {size}, expert rate {label}", demo.name);
        let conversion = convert(&demo.model, &reserve, &bundle_dir, &copts, progress)?;
        let bundle = GuardBundle::open(&bundle_dir)?;
        let mut guard = Guard::new(&bundle)?;
        let report =
            evaluate_detectors(&bundle, &mut guard, &clean, &triggered, demo.target, &[DetectorKind::BadExpert], 0)?
                .swap_remove(0);
        let ft = &conversion.manifest.fine_tune;
        rows.push(AblationRow {
            model: demo.name.clone(),
            attack: demo.attack.to_string(),
            study,
            reserve_size: size,
            expert_rate: label,
            expert_rate_used: ft.expert.learning_rate,
            auxiliary_rate_used: ft.auxiliary.learning_rate,
            expert_holdout_accuracy: conversion.expert_accuracy,
            auxiliary_holdout_accuracy: conversion.auxiliary_accuracy,
            target_fpr: copts.target_fpr,
            evaluation: report.evaluation,
            components: report.components,
        });
    }
    Ok(rows)
}

/// Markdown tables, one per study.
pub fn markdown(rows: &[AblationRow]) -> String {
    let mut md = String::from("# badexpert ablations\n\n");
    let studies = [
        (Study::ReserveSize, "Clean reserve size (automatic expert rate; the paper's Fig 5)"),
        (Study::ExpertRate, "Unlearning rate of the backdoor expert (whole reserve; the paper's Table 9)"),
    ];
    for (study, title) in studies {
        let rows: Vec<&AblationRow> = rows.iter().filter(|r| r.study == study).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(md, "## {title}\n");
        let mut table = Table::new([
            "model",
            "reserve",
            "expert rate (used)",
            "B held-out CA",
            "M′ rate",
            "M′ held-out CA",
            "AUROC B alone",
            "AUROC M′ alone",
            "AUROC both",
            "target FPR",
            "clean FPR",
            "CA with guard",
            "ASR with guard",
        ]);
        for r in rows {
            let e = &r.evaluation;
            let part =
                |f: fn(&ComponentAuroc) -> f64| r.components.as_ref().map_or("n/a".into(), |c| format!("{:.4}", f(c)));
            let percent = |x: f64| format!("{:.2} %", 100.0 * x);
            table.row([
                r.model.clone(),
                r.reserve_size.to_string(),
                format!("{} ({:.1e})", r.expert_rate, r.expert_rate_used),
                format!("{:.1} %", 100.0 * r.expert_holdout_accuracy),
                r.auxiliary_rate_used.to_string(),
                format!("{:.1} %", 100.0 * r.auxiliary_holdout_accuracy),
                part(|c| c.expert_only),
                part(|c| c.auxiliary_only),
                part(|c| c.ensemble),
                percent(r.target_fpr),
                percent(e.clean_fpr),
                percent(e.clean_accuracy_defended),
                percent(e.attack_success_rate_defended),
            ]);
        }
        md.push_str(&table.to_string());
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use badexpert_runtime::FrameShape;

    #[test]
    fn reserve_subsets_are_nested_and_bounded() {
        let shape = FrameShape { channels: 1, height: 1, width: 1 };
        let set = FrameSet::new(shape, (0..50u8).collect(), Some((0..50).map(|i| i % 10).collect())).unwrap();
        let small = reserve_subset(&set, 10, 7).unwrap();
        let large = reserve_subset(&set, 20, 7).unwrap();
        assert_eq!((small.len(), large.len()), (10, 20));
        assert_eq!(small.pixels(), &large.pixels()[..10]);
        let err = reserve_subset(&set, 51, 7).unwrap_err().to_string();
        assert!(err.contains("reserve size 51") && err.contains("holds 50"), "{err}");
    }
}
