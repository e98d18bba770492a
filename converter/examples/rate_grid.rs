//! The study behind the automatic rates: for one model, B at each rate of a
//! grid and M′ at each rate of a grid are fine-tuned once, exactly as
//! `convert` fine-tunes them (same split, seeds, augmentation, restored
//! BatchNorm), and every (B, M′) pair is scored with the guard's score and a
//! threshold calibrated on the held-out split. Each line of the JSON output
//! gives what a rule can see (clean held-out accuracies) beside what it
//! cannot (AUROC and ASR on triggered frames), so a selection rule is chosen
//! on the zoo's development part and then checked on its test part.
//!
//! ```sh
//! cargo run --release -p badexpert-converter --example rate_grid -- \
//!     models/zoo/resnet-badnet/resnet-badnet.bn.onnx models/zoo/reserve-images-idx3-ubyte.gz \
//!     models/zoo/eval-clean-images-idx3-ubyte.gz models/zoo/resnet-badnet/eval-triggered-images-idx3-ubyte.gz 3 out.json
//! ```
//!
//! Scores come from the libtorch graphs, not the exported plans (they agree
//! to ~1e-5 in logits), which keeps a grid of pairs cheap.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use badexpert_converter::augment::Augmentation;
use badexpert_converter::auxiliary::AuxiliaryModel;
use badexpert_converter::convert::split_reserve;
use badexpert_converter::expert::{BackdoorExpert, Mislabel};
use badexpert_converter::onnx::{normalization_metadata, read_model, TchGraph};
use badexpert_converter::train::{accuracy, class_indices, fine_tune, fine_tune_watched, predict_logits, Watch};
use badexpert_eval::metrics::{Evaluation, Scored};
use badexpert_frames::FrameSource;
use badexpert_runtime::threshold::threshold_at_fpr;
use badexpert_runtime::{Confidences, FrameSet, Preprocessor, ScoreMode};
use tch::{Device, Kind};

const EXPERT_RATES: &[f64] = &[2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3];
const AUXILIARY_RATES: &[f64] = &[0.02, 0.05, 0.1, 0.15, 0.2, 0.3];

/// Softmax outputs of one model on the held-out, clean and triggered frames.
struct Outputs {
    sets: [Vec<Vec<f32>>; 3],
}

fn probabilities(graph: &TchGraph, sets: [&FrameSet; 3], pre: &Preprocessor) -> Result<Outputs> {
    let one = |set: &FrameSet| -> Result<Vec<Vec<f32>>> {
        let p = predict_logits(graph, set, pre)?.softmax(-1, Kind::Float);
        let k = p.size()[1] as usize;
        let flat = Vec::<f32>::try_from(p.flatten(0, -1))?;
        Ok(flat.chunks(k).map(<[f32]>::to_vec).collect())
    };
    Ok(Outputs { sets: [one(sets[0])?, one(sets[1])?, one(sets[2])?] })
}

fn argmax(p: &[f32]) -> usize {
    badexpert_runtime::score::argmax(p)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, reserve, clean, triggered, target, out] = &args[..] else {
        bail!("usage: rate_grid MODEL.onnx RESERVE CLEAN TRIGGERED TARGET OUT.json");
    };
    let target: u32 = target.parse().context("target class")?;
    tch::set_num_threads(std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2));
    let model_path = PathBuf::from(model);
    let source = read_model(&model_path)?;
    let norm = normalization_metadata(&source)?.context("the model records no normalisation")?;
    let load = |p: &str| FrameSource::detect(std::path::Path::new(p)).load().with_context(|| p.to_string());
    let (reserve, clean, triggered) = (load(reserve)?, load(clean)?, load(triggered)?);
    let (fit, holdout) = split_reserve(&reserve, 0.2, 0)?;
    let pre = Preprocessor::new(&norm, reserve.shape())?;
    let augmentation = Augmentation::standard(reserve.shape().height, true);
    let hold_labels = holdout.require_labels("holdout")?;
    let fresh = || -> Result<TchGraph> {
        let mut g = TchGraph::from_proto(source.clone(), Device::Cpu)?;
        g.restore_normalization(&fit, &pre)?;
        Ok(g)
    };
    let m = TchGraph::from_proto(source.clone(), Device::Cpu)?;
    let model_accuracy = accuracy(&m, &holdout, hold_labels, &pre)?;
    let sets = [&holdout, &clean, &triggered];
    let m_out = probabilities(&m, sets, &pre)?;
    let classes = m_out.sets[0][0].len();

    let expert = BackdoorExpert::default();
    let wrong = Mislabel::NextClass.apply(fit.require_labels("fit")?, classes, 0);
    let hold_wrong: Vec<u32> = Mislabel::NextClass.apply(hold_labels, classes, 0).iter().map(|&w| w as u32).collect();
    let mut experts = Vec::new();
    for &lr in EXPERT_RATES {
        let g = fresh()?;
        match fine_tune(&g, &fit, &wrong, &pre, &expert.config(lr, augmentation, 0), &(), "B") {
            Ok(_) => {}
            Err(badexpert_converter::Error::Diverged { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
        let (acc, relearned) = (accuracy(&g, &holdout, hold_labels, &pre)?, accuracy(&g, &holdout, &hold_wrong, &pre)?);
        eprintln!("B {lr:e}: held-out {acc:.3}, relearned {relearned:.3}");
        experts.push((lr, acc, relearned, probabilities(&g, sets, &pre)?));
    }
    let aux = AuxiliaryModel::default();
    let labels = class_indices(fit.require_labels("fit")?);
    let mut auxiliaries = Vec::new();
    for &lr in AUXILIARY_RATES {
        let g = fresh()?;
        let mut first = None;
        let mut after_epoch = |epoch| {
            if epoch == 0 {
                first = Some(accuracy(&g, &holdout, hold_labels, &pre)?);
            }
            Ok(true)
        };
        let watch = Watch { progress: &(), what: "M′", after_epoch: &mut after_epoch };
        let trained = fine_tune_watched(&g, &fit, &labels, &pre, &aux.config(lr, augmentation, 1), watch);
        if let Err(badexpert_converter::Error::Diverged { .. }) = trained {
            eprintln!("M′ {lr}: diverged");
            continue;
        }
        trained?;
        let acc = accuracy(&g, &holdout, hold_labels, &pre)?;
        eprintln!("M′ {lr}: after epoch 1 {:.3}, final {acc:.3}", first.unwrap_or(f64::NAN));
        auxiliaries.push((lr, first.unwrap_or(f64::NAN), acc, probabilities(&g, sets, &pre)?));
    }

    let mut rows = Vec::new();
    for (b_lr, b_acc, b_relearned, b) in &experts {
        for (a_lr, a_first, a_acc, a) in &auxiliaries {
            let score = |set: usize, i: usize| -> (usize, f32) {
                let y = argmax(&m_out.sets[set][i]);
                let c = Confidences { expert: b.sets[set][i][y], auxiliary: a.sets[set][i][y] };
                (y, ScoreMode::Ensemble.score(c, 0.5))
            };
            let calibration: Vec<f32> = (0..holdout.len())
                .filter_map(|i| {
                    let (y, s) = score(0, i);
                    (y as u32 == hold_labels[i]).then_some(s)
                })
                .collect();
            let tau = threshold_at_fpr(&calibration, 0.01)?;
            let scored = |set: usize, frames: &FrameSet| -> Vec<Scored> {
                let labels = frames.labels().expect("labelled");
                (0..frames.len())
                    .map(|i| {
                        let (class, s) = score(set, i);
                        Scored { label: labels[i], class, suspicion: -s, accepted: s >= tau, confidences: None }
                    })
                    .collect()
            };
            let e = Evaluation::compute(&scored(1, &clean), &scored(2, &triggered), target, -tau)?;
            rows.push(serde_json::json!({
                "expert_lr": b_lr, "expert_holdout": b_acc, "expert_relearned": b_relearned,
                "aux_lr": a_lr, "aux_first_epoch": a_first, "aux_holdout": a_acc, "model_holdout": model_accuracy,
                "auroc": e.auroc, "asr": e.attack_success_rate, "asr_defended": e.attack_success_rate_defended,
                "ca": e.clean_accuracy, "ca_drop": e.clean_accuracy - e.clean_accuracy_defended, "fpr": e.clean_fpr,
            }));
        }
    }
    std::fs::write(out, serde_json::to_string_pretty(&rows)?)?;
    eprintln!("wrote {} pairs to {out}", rows.len());
    Ok(())
}
