//! Canaries (issue 30, design a): a defender-known trigger implanted into a
//! copy of the suspect model by a short fine-tune on the reserve's
//! fine-tuning part. A guard built from the copy can then be judged on a
//! backdoor whose trigger is known, before it is applied to the model itself.

use std::path::Path;

use serde::Serialize;

use badexpert_converter::augment::Augmentation;
use badexpert_converter::convert::{ReserveSplit, Suspect};
use badexpert_converter::onnx::pb::ModelProto;
use badexpert_converter::onnx::{normalization_metadata, read_model, set_normalization_metadata};
use badexpert_converter::train::{accuracy, class_indices, fine_tune, Optimizer, Schedule, TrainConfig};
use badexpert_converter::{Error, Result};
use badexpert_runtime::FrameSet;
use tch::Device;

use crate::attack::Attack;

/// How the canary is implanted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryOptions {
    pub target: u32,
    /// Share of the fine-tuning frames (of other classes) stamped and relabelled.
    pub poison_rate: f64,
    pub epochs: usize,
    pub learning_rate: f64,
    /// Seed of the poisoning and the frame order; the reserve is split as a
    /// conversion with `--split-seed split_seed` splits it.
    pub seed: u64,
    pub split_seed: u64,
    pub holdout_fraction: f64,
}

/// The canaried model's held-out figures, before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryReport {
    pub attack: String,
    pub options: CanaryOptions,
    pub clean_accuracy_before: f64,
    pub clean_accuracy: f64,
    /// Held-out frames not of the target sent to it by the trigger, before and after.
    pub attack_success_before: f64,
    pub attack_success: f64,
    pub poisoned_frames: usize,
}

/// Implants `attack`'s trigger toward `opts.target` into a copy of the model
/// at `model_path` (Adam, train mode, the converter's standard augmentation)
/// and returns the copy, with the model's normalisation recorded.
pub fn implant(
    model_path: &Path,
    reserve: &FrameSet,
    attack: Attack,
    opts: &CanaryOptions,
    device: Device,
) -> Result<(ModelProto, CanaryReport)> {
    let norm = normalization_metadata(&read_model(model_path)?)?
        .ok_or_else(|| Error::Invalid(format!("{} records no normalisation", model_path.display())))?;
    let Suspect { model, shape, pre, .. } = Suspect::open(model_path, reserve, &norm, device)?;
    let ReserveSplit { fit, calibration: holdout, .. } =
        ReserveSplit::new(reserve, opts.holdout_fraction, 0.0, opts.split_seed)?;
    let hold_labels = holdout.require_labels("the held-out frames")?;
    let keep: Vec<usize> = (0..holdout.len()).filter(|&i| hold_labels[i] != opts.target).collect();
    let triggered = attack.triggered(&holdout.select(&keep));
    let success = || accuracy(&model, &triggered, &vec![opts.target; triggered.len()], &pre);
    let clean_accuracy_before = accuracy(&model, &holdout, hold_labels, &pre)?;
    let attack_success_before = success()?;
    let (poisoned, chosen) = attack.poison(&fit, opts.poison_rate, opts.target, opts.seed)?;
    let cfg = TrainConfig {
        optimizer: Optimizer::Adam,
        learning_rate: opts.learning_rate,
        epochs: opts.epochs,
        batch_size: 128,
        weight_decay: 0.0,
        schedule: Schedule::constant(),
        augmentation: Augmentation::standard(shape.height, true),
        seed: opts.seed,
    };
    let labels = class_indices(poisoned.require_labels("the poisoned frames")?);
    fine_tune(&model, &poisoned, &labels, &pre, &cfg, &(), "canary")?;
    let report = CanaryReport {
        attack: attack.to_string(),
        options: opts.clone(),
        clean_accuracy_before,
        clean_accuracy: accuracy(&model, &holdout, hold_labels, &pre)?,
        attack_success_before,
        attack_success: success()?,
        poisoned_frames: chosen.len(),
    };
    let mut proto = model.to_proto()?;
    set_normalization_metadata(&mut proto, &norm);
    Ok((proto, report))
}
