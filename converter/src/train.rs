//! The shared fine-tuning loop: shuffled mini-batches of (augmented,
//! normalised) frames through a [`TchGraph`] in train mode, with a stepwise
//! learning-rate schedule; and batched eval-mode prediction.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, nn::OptimizerConfig, Tensor};

use badexpert_runtime::manifest::{RateTrial, TrainingRecord};
use badexpert_runtime::{FrameSet, Preprocessor};

use crate::augment::Augmentation;
use crate::onnx::TchGraph;
use crate::{Error, Result};

/// Optimizer with its own hyper-parameters (docs/design.md §3.1 and §3.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// Adam with β = (0.9, 0.999), ε = 1e-8.
    Adam,
    /// SGD with momentum 0.9 and Nesterov.
    SgdNesterov,
}

/// One fine-tuning run's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub augmentation: Augmentation,
    pub seed: u64,
}

/// How the learning rate moves over the epochs of one fine-tune.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// The rate is multiplied by `decay` after each of the `milestones` epochs
    /// (no milestones: a constant rate).
    Step { milestones: Vec<usize>, decay: f64 },
    /// Half a cosine from the initial rate toward 0, set at each epoch's
    /// start: the rate stays large for longer than the stepwise schedule,
    /// then anneals over the last epochs.
    Cosine,
}

impl Schedule {
    /// The paper's for M′: ×0.1 after epochs 2, 4, 6 and 8.
    pub fn paper_auxiliary() -> Self {
        Schedule::Step { milestones: vec![2, 4, 6, 8], decay: 0.1 }
    }

    /// The same rate every epoch.
    pub fn constant() -> Self {
        Schedule::Step { milestones: vec![], decay: 1.0 }
    }

    /// The rate of `epoch` (from 0) of `epochs`, for initial rate `lr`.
    pub fn rate_at(&self, lr: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Step { milestones, decay } => {
                let passed = milestones.iter().filter(|&&m| epoch >= m).count();
                lr * decay.powi(passed as i32)
            }
            Schedule::Cosine => lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs.max(1) as f64).cos()),
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;
    /// `cosine`, or `step:E1,E2,…` (×0.1 after each listed epoch).
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "cosine" {
            return Ok(Schedule::Cosine);
        }
        let bad =
            || format!("schedule {s:?}: expected \"cosine\" or \"step:E1,E2,…\" (epochs after which the rate is ×0.1)");
        let list = s.strip_prefix("step:").ok_or_else(bad)?;
        let milestones = if list.is_empty() {
            vec![]
        } else {
            list.split(',').map(|e| e.trim().parse::<usize>().map_err(|_| bad())).collect::<Result<Vec<_>, _>>()?
        };
        Ok(Schedule::Step { milestones, decay: 0.1 })
    }
}

impl TrainConfig {
    /// The manifest's record of this configuration.
    pub fn record(&self, labels: &str, holdout_accuracy: f64, rate_search: Vec<RateTrial>) -> TrainingRecord {
        let (lr_milestones, lr_decay, lr_schedule) = match &self.schedule {
            Schedule::Step { milestones, decay } => (milestones.clone(), *decay, None),
            Schedule::Cosine => (vec![], 1.0, Some("cosine".to_string())),
        };
        TrainingRecord {
            optimizer: match self.optimizer {
                Optimizer::Adam => "adam(beta1=0.9,beta2=0.999,eps=1e-8)".into(),
                Optimizer::SgdNesterov => "sgd(momentum=0.9,nesterov)".into(),
            },
            learning_rate: self.learning_rate,
            epochs: self.epochs,
            batch_size: self.batch_size,
            weight_decay: self.weight_decay,
            lr_milestones,
            lr_decay,
            lr_schedule,
            soup: None,
            labels: labels.into(),
            augmentation: self.augmentation.describe(),
            holdout_accuracy,
            rate_search,
        }
    }

    fn learning_rate_at(&self, epoch: usize) -> f64 {
        self.schedule.rate_at(self.learning_rate, epoch, self.epochs)
    }
}

/// Parses a learning rate given on a command line: a positive finite number.
pub(crate) fn parse_learning_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(lr) if lr > 0.0 && lr.is_finite() => Ok(lr),
        _ => Err(format!("learning rate {s:?}: expected a positive number or \"auto\"")),
    }
}

/// Reports progress of a long loop; the CLI shows bars, tests pass `()`.
pub trait Progress {
    fn start(&self, _what: &str, _steps: u64) {}
    fn step(&self, _loss: f64) {}
    fn finish(&self) {}
}

impl Progress for () {}

/// What every fine-tune of one conversion shares: fresh copies of M to
/// train, the frames they train on and are judged on, M's class count and
/// held-out accuracy, the preprocessing and augmentation, and the progress bars.
#[derive(Clone, Copy)]
pub struct FineTuneContext<'a> {
    pub fresh: &'a dyn Fn() -> Result<TchGraph>,
    pub fit: &'a FrameSet,
    /// Where rates are judged (the selection part, else the calibration part).
    pub judged: &'a FrameSet,
    pub classes: usize,
    pub model_accuracy: f64,
    pub pre: &'a Preprocessor,
    pub augmentation: Augmentation,
    pub progress: &'a dyn Progress,
}

/// The seed of a refit: another order of the fine-tuning frames and other augmentations.
pub(crate) fn refit_seed(seed: u64) -> u64 {
    seed ^ 0x72_6566_6974
}

/// A fine-tuned model that was kept (B or M′), and how its rate was chosen.
pub struct Trained {
    pub graph: TchGraph,
    pub config: TrainConfig,
    pub holdout_accuracy: f64,
    /// Every rate tried, in order.
    pub trials: Vec<RateTrial>,
}

/// Fine-tunes a fresh copy of M on `labels` at `made`'s rate with
/// [`refit_seed`] and measures it on `holdout`, recording it in the trials:
/// kept, with the search's trial marked "chosen" (its rate is kept, its
/// model is not); or, when it diverged, `made` stays (and so does the bias
/// this avoids).
pub(crate) fn refit(
    ctx: &FineTuneContext,
    labels: &[i64],
    holdout: &FrameSet,
    made: Trained,
    what: &str,
) -> Result<Trained> {
    let Trained { config: chosen, mut trials, .. } = made;
    let config = TrainConfig { seed: refit_seed(chosen.seed), ..chosen.clone() };
    let graph = (ctx.fresh)()?;
    match fine_tune(&graph, ctx.fit, labels, ctx.pre, &config, ctx.progress, what) {
        Err(Error::Diverged { .. }) => {
            trials.push(RateTrial {
                learning_rate: config.learning_rate,
                holdout_accuracy: None,
                outcome: format!("refit (seed {}) diverged: the searched model was kept", config.seed),
            });
            return Ok(Trained { config: chosen, trials, ..made });
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let acc = accuracy(&graph, holdout, holdout.require_labels("the held-out frames")?, ctx.pre)?;
    log::info!("{what}: held-out clean accuracy {:.1}%", 100.0 * acc);
    for t in trials.iter_mut() {
        if let Some(rest) = t.outcome.strip_prefix("kept") {
            t.outcome = format!("chosen{rest}");
        }
    }
    trials.push(RateTrial {
        learning_rate: config.learning_rate,
        holdout_accuracy: Some(acc),
        outcome: format!(
            "kept: the chosen rate trained afresh (seed {}), so τ is not calibrated on the frames the model was chosen on",
            config.seed
        ),
    });
    Ok(Trained { graph, config, holdout_accuracy: acc, trials })
}

/// Normalises (and optionally augments) frames `indices` into an NCHW batch.
pub(crate) fn batch_tensor(
    frames: &FrameSet,
    indices: &[usize],
    pre: &Preprocessor,
    augment: Option<(&Augmentation, &mut ChaCha8Rng)>,
    device: tch::Device,
) -> Result<Tensor> {
    let s = frames.shape();
    let n = s.len();
    let mut values = vec![0f32; indices.len() * n];
    let mut scratch = vec![0u8; n];
    let mut augment = augment;
    for (k, &i) in indices.iter().enumerate() {
        let src = match augment.as_mut() {
            Some((aug, rng)) => {
                aug.apply(frames.frame(i), (s.channels, s.height, s.width), *rng, &mut scratch);
                &scratch[..]
            }
            None => frames.frame(i),
        };
        pre.planar_into(src, &mut values[k * n..(k + 1) * n])?;
    }
    let t = Tensor::f_from_slice(&values)?.f_reshape([
        indices.len() as i64,
        s.channels as i64,
        s.height as i64,
        s.width as i64,
    ])?;
    Ok(t.f_to_device(device)?)
}

/// Fine-tunes `graph` in place on `frames` with `labels` (class indices).
/// Returns the mean training loss of the last epoch.
pub fn fine_tune(
    graph: &TchGraph,
    frames: &FrameSet,
    labels: &[i64],
    pre: &Preprocessor,
    cfg: &TrainConfig,
    progress: &dyn Progress,
    what: &str,
) -> Result<f64> {
    fine_tune_watched(graph, frames, labels, pre, cfg, Watch { progress, what, after_epoch: &mut |_| Ok(true) })
}

/// Who watches a fine-tune: the progress bars, the name it is reported
/// under, and `after_epoch(epoch)`, called at the end of every epoch (the
/// fine-tune stops early when it returns `false`).
pub struct Watch<'a> {
    pub progress: &'a dyn Progress,
    pub what: &'a str,
    pub after_epoch: &'a mut dyn FnMut(usize) -> Result<bool>,
}

/// [`fine_tune`], watched by `watch`.
pub fn fine_tune_watched(
    graph: &TchGraph,
    frames: &FrameSet,
    labels: &[i64],
    pre: &Preprocessor,
    cfg: &TrainConfig,
    watch: Watch<'_>,
) -> Result<f64> {
    let Watch { progress, what, after_epoch } = watch;
    if frames.len() != labels.len() {
        return Err(Error::Data(format!("{} frames but {} training labels", frames.len(), labels.len())));
    }
    if frames.len() < 2 {
        return Err(Error::Data(format!("{} frame(s) is too few to fine-tune on", frames.len())));
    }
    if cfg.batch_size < 2 || cfg.epochs == 0 || !cfg.learning_rate.is_finite() || cfg.learning_rate <= 0.0 {
        return Err(Error::Invalid(format!(
            "{what}: batch size {} (≥ 2), epochs {} (≥ 1), learning rate {} (> 0)",
            cfg.batch_size, cfg.epochs, cfg.learning_rate
        )));
    }
    tch::manual_seed(cfg.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let vs = graph.var_store();
    let mut opt = match cfg.optimizer {
        Optimizer::Adam => nn::Adam { beta1: 0.9, beta2: 0.999, wd: cfg.weight_decay, eps: 1e-8, amsgrad: false }
            .build(vs, cfg.learning_rate)?,
        Optimizer::SgdNesterov => nn::Sgd { momentum: 0.9, dampening: 0.0, wd: cfg.weight_decay, nesterov: true }
            .build(vs, cfg.learning_rate)?,
    };
    let device = graph.device();
    let batches_per_epoch = frames.len().div_ceil(cfg.batch_size);
    progress.start(what, (batches_per_epoch * cfg.epochs) as u64);
    let mut order: Vec<usize> = (0..frames.len()).collect();
    let mut last_epoch_loss = f64::NAN;
    for epoch in 0..cfg.epochs {
        opt.set_lr(cfg.learning_rate_at(epoch));
        order.shuffle(&mut rng);
        let (mut total, mut seen) = (0.0, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            // BatchNorm cannot take batch statistics of a single frame.
            if chunk.len() < 2 {
                continue;
            }
            let x = batch_tensor(frames, chunk, pre, Some((&cfg.augmentation, &mut rng)), device)?;
            let y: Vec<i64> = chunk.iter().map(|&i| labels[i]).collect();
            let y = Tensor::f_from_slice(&y)?.f_to_device(device)?;
            let logits = graph.forward(&x, true)?;
            let loss = logits.f_cross_entropy_loss(&y, None::<Tensor>, tch::Reduction::Mean, -100, 0.0)?;
            opt.zero_grad();
            loss.f_backward()?;
            opt.step();
            let l = loss.f_double_value(&[])?;
            if !l.is_finite() {
                return Err(Error::Diverged { what: what.into(), loss: l, epoch });
            }
            total += l * chunk.len() as f64;
            seen += chunk.len();
            progress.step(l);
        }
        last_epoch_loss = total / seen.max(1) as f64;
        if !after_epoch(epoch)? {
            break;
        }
    }
    progress.finish();
    Ok(last_epoch_loss)
}

/// Eval-mode logits for all frames, in batches, on the CPU.
pub fn predict_logits(graph: &TchGraph, frames: &FrameSet, pre: &Preprocessor) -> Result<Tensor> {
    let idx: Vec<usize> = (0..frames.len()).collect();
    let mut out = Vec::new();
    for chunk in idx.chunks(256) {
        let x = batch_tensor(frames, chunk, pre, None, graph.device())?;
        out.push(graph.predict(&x)?.f_to_device(tch::Device::Cpu)?);
    }
    Ok(Tensor::f_cat(&out, 0)?)
}

/// Fraction of frames whose argmax equals the label.
pub fn accuracy(graph: &TchGraph, frames: &FrameSet, labels: &[u32], pre: &Preprocessor) -> Result<f64> {
    if frames.is_empty() {
        return Ok(0.0);
    }
    let pred = predict_logits(graph, frames, pre)?.f_argmax(-1, false)?;
    let pred = Vec::<i64>::try_from(&pred)?;
    Ok(pred.iter().zip(labels).filter(|(p, l)| **p == **l as i64).count() as f64 / frames.len() as f64)
}

/// Labels as the i64 tensor values cross-entropy wants.
pub fn class_indices(labels: &[u32]) -> Vec<i64> {
    labels.iter().map(|&l| l as i64).collect()
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn step_schedule_multiplies_after_each_milestone() {
        let s: Schedule = "step:2,4".parse().unwrap();
        let rates: Vec<f64> = (0..6).map(|e| s.rate_at(0.1, e, 6)).collect();
        let want = [0.1, 0.1, 0.01, 0.01, 0.001, 0.001];
        assert!(rates.iter().zip(want).all(|(r, w)| (r - w).abs() < 1e-12), "{rates:?}");
        assert_eq!("step:".parse::<Schedule>().unwrap(), Schedule::Step { milestones: vec![], decay: 0.1 });
    }

    #[test]
    fn cosine_schedule_starts_at_the_rate_and_anneals_toward_zero() {
        let s: Schedule = "cosine".parse().unwrap();
        assert_eq!(s.rate_at(0.1, 0, 10), 0.1);
        assert!((s.rate_at(0.1, 5, 10) - 0.05).abs() < 1e-12);
        let rates: Vec<f64> = (0..10).map(|e| s.rate_at(0.1, e, 10)).collect();
        assert!(rates.windows(2).all(|w| w[1] < w[0]) && rates[9] > 0.0 && rates[9] < 0.003, "{rates:?}");
    }

    #[test]
    fn bad_schedules_are_refused_with_the_text() {
        for bad in ["linear", "step:2,x", "step", "cosine:3"] {
            let err = bad.parse::<Schedule>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
