//! Is the model backdoored, and toward which label? Clean unlearning (EBYD,
//! "Expose Before You Defend"; docs/design.md §8): gradient *ascent* on the
//! cross-entropy of correctly labelled clean frames removes the clean task
//! first and leaves the backdoor standing, so the exposed model sends clean
//! frames to the backdoor's target label.
//!
//! One run lands on an arbitrary class (a clean model collapses onto some
//! class too); over several runs with their own frame order and
//! augmentations the backdoor target is the consistent attractor. So every
//! run stops where its held-out clean accuracy first falls below a floor
//! (the collapse is abrupt and comes at a different step on every model),
//! and the runs are read together: the consensus label of the mean
//! histogram of held-out predictions and its share.
//!
//! A clean model collapses as firmly as a backdoored one, so the share is no
//! verdict (docs/zoo.md). The verdict is the trigger inversion's
//! ([`crate::inversion`]): an outlier among the smallest masks that send
//! clean frames to each label. Without it (`inversion.steps` 0) the share
//! is judged against [`ScanOptions::threshold`].

use std::path::Path;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, nn::OptimizerConfig, Device, Tensor};

use badexpert_runtime::manifest::{ScanRecord, Snapshot, TriggerInversion, UnlearningRun};
use badexpert_runtime::{FrameSet, Normalization, Preprocessor};

use crate::augment::Augmentation;
use crate::inversion::{invert_triggers, InversionOptions};
use crate::jobs::share_out;
use crate::onnx::pb::ModelProto;
use crate::onnx::TchGraph;
use crate::suspect::{ReserveSplit, Suspect};
use crate::train::{batch_tensor, predict_logits};
use crate::{Error, Result};

/// How `score` is computed (recorded in the manifest).
pub const SCORE_RULE: &str = "share of the consensus label in the mean histogram of held-out predictions over runs";
/// How `score` is computed when the trigger inversion ran.
pub const INVERSION_RULE: &str =
    "anomaly index (robust deviations below the median, log space) of the smallest inverted trigger mask";

/// Settings of a scan; `ScanOptions::default()` gives the chosen ones.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanOptions {
    /// Unlearning runs, each with its own seed (frame order, augmentations).
    pub runs: usize,
    /// Runs trained at once (each on its own thread with a share of libtorch's threads).
    pub jobs: usize,
    /// Adam's rate for the gradient ascent.
    pub learning_rate: f64,
    pub batch_size: usize,
    /// Step budget of a run, in passes over the fine-tuning frames.
    pub max_epochs: usize,
    /// A run has collapsed (exposed) where held-out clean accuracy first falls below this.
    pub floor: f64,
    /// The verdict reads each run at this multiple of its collapse step (≥ 1):
    /// past the collapse, the ascent keeps pushing frames to the attractor.
    pub read_after: f64,
    /// Further multiples of the collapse step at which the held-out
    /// predictions are kept in the record (to study other reading points).
    pub snapshots: Vec<f64>,
    /// Verdict threshold on the score (chosen on the zoo's development part).
    pub threshold: f64,
    /// Training augmentation; `None` = random crop + horizontal flip.
    pub augmentation: Option<Augmentation>,
    pub seed: u64,
    /// Give a folded export's convolutions a trainable BatchNorm (as `bundle` does).
    pub restore_normalization: bool,
    /// Leave the classifier head (the last dense layer) as it is: only the
    /// features are unlearned.
    pub freeze_head: bool,
    /// Train with BatchNorm's batch statistics (PyTorch's train mode, as
    /// EBYD does); false keeps the running statistics (eval mode).
    pub train_mode: bool,
    /// What the ascent pushes up.
    pub objective: Objective,
    /// Trigger inversion on the model as given (`steps` 0: not run, the
    /// verdict then reads the runs alone).
    pub inversion: InversionOptions,
    pub device: Device,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            runs: 4,
            jobs: 2,
            learning_rate: 1e-4,
            batch_size: 128,
            max_epochs: 30,
            floor: 0.2,
            read_after: 1.0,
            snapshots: vec![],
            // Midway between the highest score of a clean export of the zoo's
            // development part and the lowest backdoored one above it (docs/zoo.md).
            threshold: 0.835,
            augmentation: None,
            seed: 0,
            restore_normalization: true,
            freeze_head: false,
            train_mode: true,
            objective: Objective::TrueLogit,
            inversion: InversionOptions::default(),
            device: Device::Cpu,
        }
    }
}

/// The quantity clean unlearning pushes up on correctly labelled frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// The cross-entropy (EBYD): each wrong class is pushed up in proportion
    /// to its probability, so the class most frames already lean to gains most.
    CrossEntropy,
    /// The mean logit less the true class's: every wrong class is pushed up
    /// alike, so no class gains from already being likely.
    TrueLogit,
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cross-entropy" => Ok(Objective::CrossEntropy),
            "true-logit" => Ok(Objective::TrueLogit),
            _ => Err(format!("unknown scan objective {s:?} (cross-entropy or true-logit)")),
        }
    }
}

impl ScanOptions {
    fn check(&self) -> Result<()> {
        let ok = self.runs >= 1
            && self.jobs >= 1
            && self.batch_size >= 2
            && self.max_epochs >= 1
            && self.learning_rate.is_finite()
            && self.learning_rate > 0.0
            && (0.0..1.0).contains(&self.floor)
            && self.read_after >= 1.0
            && self.snapshots.iter().all(|m| *m >= 1.0 && m.is_finite())
            && self.threshold.is_finite()
            && self.inversion.batch_size >= 1
            && self.inversion.learning_rate.is_finite()
            && self.inversion.learning_rate > 0.0
            && self.inversion.success_goal > 0.0
            && self.inversion.success_goal <= 1.0
            && self.inversion.threshold.is_finite();
        if ok {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "scan: runs {} (≥ 1), jobs {} (≥ 1), batch size {} (≥ 2), epochs {} (≥ 1), learning rate {} (> 0), floor {} (in [0, 1)), read after {} and snapshots {:?} (≥ 1), threshold {} (finite); inversion: batch size {} (≥ 1), learning rate {} (> 0), success goal {} (in (0, 1]), threshold {} (finite)",
            self.runs, self.jobs, self.batch_size, self.max_epochs, self.learning_rate, self.floor, self.read_after, self.snapshots, self.threshold,
            self.inversion.batch_size, self.inversion.learning_rate, self.inversion.success_goal, self.inversion.threshold
        )))
    }

    /// The seed of run `i`.
    pub fn run_seed(&self, i: usize) -> u64 {
        (self.seed ^ 0x7363_616e).wrapping_add(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// Scans the ONNX model at `model_path` with a labelled clean `reserve`,
/// split as `bundle` splits it: `holdout_fraction` held out (seeded with
/// `opts.seed`) to stop on and to read the verdict from, the rest unlearned.
pub fn scan_model(
    model_path: &Path,
    reserve: &FrameSet,
    normalization: &Normalization,
    holdout_fraction: f64,
    opts: &ScanOptions,
) -> Result<ScanRecord> {
    let suspect = Suspect::open(model_path, reserve, normalization, opts.device)?;
    let split = ReserveSplit::new(reserve, holdout_fraction, 0.0, opts.seed)?;
    scan(&suspect.source, &split.fit, &split.calibration, &suspect.pre, suspect.classes, opts)
}

/// Scans `source` (an ONNX classifier of `classes` classes): runs clean
/// unlearning on `fit`, stopping on `holdout`'s clean accuracy, and reads the
/// verdict from the held-out predictions where each run is read.
pub fn scan(
    source: &ModelProto,
    fit: &FrameSet,
    holdout: &FrameSet,
    pre: &Preprocessor,
    classes: usize,
    opts: &ScanOptions,
) -> Result<ScanRecord> {
    opts.check()?;
    fit.require_labels("the fine-tuning frames")?;
    holdout.require_labels("the held-out frames")?;
    if fit.len() < 2 || holdout.is_empty() {
        return Err(Error::Data(format!(
            "scan: {} fine-tuning and {} held-out frames; it needs at least 2 and 1",
            fit.len(),
            holdout.len()
        )));
    }
    let started = Instant::now();
    let max_steps = opts.max_epochs * fit.len().div_ceil(opts.batch_size);
    let inversion = if opts.inversion.steps > 0 {
        let inversion = InversionOptions { seed: opts.seed, jobs: opts.jobs, ..opts.inversion.clone() };
        Some(invert_triggers(source, fit, pre, classes, &inversion, opts.device)?)
    } else {
        None
    };
    // With the inversion, the runs matter only where they name the target:
    // an outlier too weak to name it ([`judge_by_inversion`]).
    let runs_needed = inversion
        .as_ref()
        .is_none_or(|f| f.anomaly >= opts.inversion.threshold && f.anomaly < opts.inversion.label_threshold);
    let runs = if runs_needed {
        unlearning_runs(source, fit, holdout, pre, classes, opts, max_steps)?
    } else {
        log::info!("scan: the trigger inversion decides the verdict and the target; no unlearning run needed");
        Vec::new()
    };
    let mut record = verdict(runs, classes, opts, max_steps);
    if let Some(found) = inversion {
        record = judge_by_inversion(record, found, opts);
    }
    (record.fit_size, record.holdout_size, record.seconds) =
        (fit.len(), holdout.len(), started.elapsed().as_secs_f64());
    Ok(record)
}

/// `opts.runs` clean-unlearning runs of `source` on `fit`, stopping on
/// `holdout`'s accuracy, `opts.jobs` at a time.
fn unlearning_runs(
    source: &ModelProto,
    fit: &FrameSet,
    holdout: &FrameSet,
    pre: &Preprocessor,
    classes: usize,
    opts: &ScanOptions,
    max_steps: usize,
) -> Result<Vec<UnlearningRun>> {
    let fit_labels: Vec<i64> = fit.require_labels("the fine-tuning frames")?.iter().map(|&l| l as i64).collect();
    let hold_labels = holdout.require_labels("the held-out frames")?;
    let augmentation = opts.augmentation.unwrap_or_else(|| Augmentation::standard(fit.shape().height, true));
    share_out(
        opts.runs,
        opts.jobs,
        || Ok(()),
        |_, i| {
            let mut graph = TchGraph::from_proto(source.clone(), opts.device)?;
            if opts.restore_normalization {
                graph.restore_normalization(fit, pre)?;
            }
            if opts.freeze_head && graph.freeze_head() == 0 {
                log::warn!("scan: no dense classifier head to freeze; the whole model is unlearned");
            }
            let unlearning = Unlearning {
                fit,
                fit_labels: &fit_labels,
                holdout,
                hold_labels,
                pre,
                classes,
                augmentation,
                max_steps,
            };
            unlearning.run(&graph, opts, opts.run_seed(i))
        },
    )
}

/// The mean over `runs` (diverged ones left out) of the fraction of frames
/// sent to each class, and how many runs were exposed.
fn mean_histogram(runs: &[UnlearningRun], classes: usize) -> (Vec<f64>, usize) {
    let counted: Vec<&UnlearningRun> = runs.iter().filter(|r| r.outcome != DIVERGED).collect();
    let mut histogram = vec![0.0; classes];
    for r in &counted {
        let total = r.histogram.iter().sum::<usize>().max(1) as f64;
        for (h, &c) in histogram.iter_mut().zip(&r.histogram) {
            *h += c as f64 / total / counted.len() as f64;
        }
    }
    (histogram, runs.iter().filter(|r| r.outcome == EXPOSED).count())
}

/// The verdict over finished runs: the consensus label is the top of the
/// mean histogram and the score its share; a model no run exposed is called
/// clean (no evidence).
fn verdict(runs: Vec<UnlearningRun>, classes: usize, opts: &ScanOptions, max_steps: usize) -> ScanRecord {
    let (histogram, exposed_runs) = mean_histogram(&runs, classes);
    let consensus = argmax(&histogram);
    let target_share = histogram.get(consensus).copied().unwrap_or(0.0);
    let counted = runs.iter().filter(|r| r.outcome != DIVERGED).count();
    let agreement = if counted == 0 {
        0.0
    } else {
        runs.iter().filter(|r| r.outcome != DIVERGED && r.top == consensus).count() as f64 / counted as f64
    };
    let score = target_share;
    let backdoored = exposed_runs > 0 && score >= opts.threshold;
    ScanRecord {
        backdoored,
        target: backdoored.then_some(consensus),
        consensus,
        target_share,
        agreement,
        score,
        threshold: opts.threshold,
        score_rule: SCORE_RULE.into(),
        histogram,
        exposed_runs,
        runs,
        learning_rate: opts.learning_rate,
        floor: opts.floor,
        max_steps,
        read_after: opts.read_after,
        fit_size: 0,
        holdout_size: 0,
        seconds: 0.0,
        inversion: None,
    }
}

/// The verdict when the trigger inversion ran: backdoored when the smallest
/// mask is an outlier ([`InversionOptions::threshold`]); the target is the
/// smallest mask's label when it is a strong outlier
/// ([`InversionOptions::label_threshold`]) or no run exposed the model, else
/// the runs' consensus label.
fn judge_by_inversion(mut record: ScanRecord, found: TriggerInversion, opts: &ScanOptions) -> ScanRecord {
    record.score = found.anomaly;
    record.threshold = opts.inversion.threshold;
    record.score_rule = INVERSION_RULE.into();
    record.backdoored = found.anomaly >= opts.inversion.threshold;
    let strong = found.anomaly >= opts.inversion.label_threshold;
    let target = if strong || record.exposed_runs == 0 { found.label } else { record.consensus };
    if record.runs.is_empty() {
        // No run was needed: the label the scan points at is the inversion's.
        record.consensus = found.label;
    }
    record.target = record.backdoored.then_some(target);
    record.inversion = Some(found);
    record
}

/// The index of the largest count (the first of equals).
fn argmax_count(values: &[usize]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best })
}

/// The index of the largest value (the first of equals).
fn argmax(values: &[f64]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, v)| if *v > values[best] { i } else { best })
}

const EXPOSED: &str = "exposed";
const UNEXPOSED: &str = "unexposed";
const DIVERGED: &str = "diverged";

/// The data of one run, shared by all runs.
struct Unlearning<'a> {
    fit: &'a FrameSet,
    fit_labels: &'a [i64],
    holdout: &'a FrameSet,
    hold_labels: &'a [u32],
    pre: &'a Preprocessor,
    classes: usize,
    augmentation: Augmentation,
    max_steps: usize,
}

impl Unlearning<'_> {
    /// Gradient ascent on `graph` (in place) until held-out accuracy falls
    /// below the floor (checked after every step, so the run stops at the
    /// first step past the collapse) or the budget runs out; after a collapse
    /// at step s the ascent goes on to step ⌈m·s⌉ for every m of
    /// `opts.snapshots`, keeping the held-out predictions there.
    fn run(&self, graph: &TchGraph, opts: &ScanOptions, seed: u64) -> Result<UnlearningRun> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut opt = nn::Adam { beta1: 0.9, beta2: 0.999, wd: 0.0, eps: 1e-8, amsgrad: false }
            .build(graph.var_store(), opts.learning_rate)?;
        let device = graph.device();
        let mut predicted = self.predictions(graph)?;
        let start_accuracy = self.accuracy(&predicted);
        let mut order: Vec<usize> = (0..self.fit.len()).collect();
        let mut steps = 0;
        let mut collapse: Option<usize> = None;
        let mut snapshots: Vec<Snapshot> = Vec::new();
        let last_point = opts.snapshots.iter().copied().fold(opts.read_after, f64::max);
        let outcome = 'run: loop {
            order.shuffle(&mut rng);
            for chunk in order.chunks(opts.batch_size) {
                if let Some(c) = collapse {
                    if steps >= (last_point * c as f64).ceil() as usize || steps >= 4 * self.max_steps {
                        break 'run EXPOSED;
                    }
                } else if steps == self.max_steps {
                    snapshots.push(self.snapshot(steps, &predicted));
                    break 'run UNEXPOSED;
                }
                // BatchNorm cannot take batch statistics of a single frame.
                if chunk.len() < 2 {
                    continue;
                }
                let x = batch_tensor(self.fit, chunk, self.pre, Some((&self.augmentation, &mut rng)), device)?;
                let y: Vec<i64> = chunk.iter().map(|&i| self.fit_labels[i]).collect();
                let y = Tensor::f_from_slice(&y)?.f_to_device(device)?;
                let logits = graph.forward(&x, opts.train_mode)?;
                let loss = logits.f_cross_entropy_loss(&y, None::<Tensor>, tch::Reduction::Mean, -100, 0.0)?;
                if !loss.f_double_value(&[])?.is_finite() {
                    if collapse.is_some() {
                        break 'run EXPOSED;
                    }
                    snapshots.push(self.snapshot(steps, &predicted));
                    break 'run DIVERGED;
                }
                let ascent = match opts.objective {
                    Objective::CrossEntropy => loss,
                    Objective::TrueLogit => {
                        let true_logit = logits.f_gather(1, &y.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
                        logits.f_mean_dim(Some([1i64].as_slice()), false, None)?.f_sub(&true_logit)?.f_mean(None)?
                    }
                };
                opt.zero_grad();
                ascent.f_neg()?.f_backward()?;
                opt.step();
                steps += 1;
                match collapse {
                    None => {
                        predicted = self.predictions(graph)?;
                        if self.accuracy(&predicted) < opts.floor {
                            collapse = Some(steps);
                            snapshots.push(self.snapshot(steps, &predicted));
                        }
                    }
                    Some(c) => {
                        let due = opts.snapshots.iter().any(|&m| steps == (m * c as f64).ceil() as usize)
                            || steps == (opts.read_after * c as f64).ceil() as usize;
                        if due && snapshots.last().is_some_and(|s| s.step < steps) {
                            predicted = self.predictions(graph)?;
                            snapshots.push(self.snapshot(steps, &predicted));
                        }
                    }
                }
            }
        };
        let stop_accuracy = snapshots[0].accuracy;
        // The verdict's reading: the last snapshot at or before read_after × the collapse step.
        let read_step = collapse.map_or(usize::MAX, |c| (opts.read_after * c as f64).ceil() as usize);
        let read = snapshots.iter().rev().find(|s| s.step <= read_step).unwrap_or(&snapshots[0]);
        let (histogram, read_at) = (read.histogram(), read.step);
        let frames = histogram.iter().sum::<usize>().max(1);
        let top = argmax_count(&histogram);
        let run = UnlearningRun {
            seed,
            outcome: outcome.into(),
            steps: collapse.unwrap_or(steps),
            start_accuracy,
            stop_accuracy,
            top,
            top_share: histogram[top] as f64 / frames as f64,
            histogram,
            snapshots,
        };
        log::info!(
            "scan run (seed {seed}): {} after {} step(s), held-out clean accuracy {:.1}% → {:.1}%; read at step {}: {:.1}% of frames to class {}",
            run.outcome,
            run.steps,
            100.0 * run.start_accuracy,
            100.0 * run.stop_accuracy,
            read_at,
            100.0 * run.top_share,
            run.top
        );
        Ok(run)
    }

    fn snapshot(&self, step: usize, predicted: &[usize]) -> Snapshot {
        let mut confusion = vec![vec![0usize; self.classes]; self.classes];
        for (&p, &y) in predicted.iter().zip(self.hold_labels) {
            confusion[y as usize][p] += 1;
        }
        Snapshot { step, accuracy: self.accuracy(predicted), confusion }
    }

    /// Eval-mode predicted class of every held-out frame.
    fn predictions(&self, graph: &TchGraph) -> Result<Vec<usize>> {
        let pred = predict_logits(graph, self.holdout, self.pre)?.f_argmax(-1, false)?;
        let pred = Vec::<i64>::try_from(&pred)?;
        pred.into_iter()
            .map(|p| {
                usize::try_from(p)
                    .ok()
                    .filter(|&p| p < self.classes)
                    .ok_or_else(|| Error::Invalid(format!("predicted class {p} outside 0..{}", self.classes)))
            })
            .collect()
    }

    fn accuracy(&self, predicted: &[usize]) -> f64 {
        let right = predicted.iter().zip(self.hold_labels).filter(|(p, l)| **p == **l as usize).count();
        right as f64 / predicted.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(top: usize, share: usize, outcome: &str) -> UnlearningRun {
        let mut histogram = vec![(100 - share) / 9; 10];
        histogram[top] = share;
        UnlearningRun {
            seed: 0,
            outcome: outcome.into(),
            steps: 10,
            start_accuracy: 0.9,
            stop_accuracy: 0.1,
            histogram,
            top,
            top_share: share as f64 / 100.0,
            snapshots: vec![],
        }
    }

    #[test]
    fn runs_that_agree_make_a_backdoored_verdict_and_scattered_ones_a_clean_one() {
        let opts = ScanOptions { threshold: 0.5, ..ScanOptions::default() };
        let agree = verdict(vec![run(3, 91, EXPOSED), run(3, 82, EXPOSED), run(3, 64, EXPOSED)], 10, &opts, 1);
        assert!(agree.backdoored);
        assert_eq!((agree.target, agree.consensus, agree.agreement), (Some(3), 3, 1.0));
        let scattered = verdict(vec![run(1, 91, EXPOSED), run(4, 91, EXPOSED), run(7, 91, EXPOSED)], 10, &opts, 1);
        assert!(!scattered.backdoored);
        assert_eq!(scattered.target, None);
        assert!(scattered.score < 0.5 && (scattered.agreement - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_model_no_run_exposed_is_called_clean_and_diverged_runs_do_not_count() {
        let opts = ScanOptions { threshold: 0.5, ..ScanOptions::default() };
        let unexposed = verdict(vec![run(2, 91, UNEXPOSED), run(2, 91, UNEXPOSED)], 10, &opts, 1);
        assert!(!unexposed.backdoored && unexposed.score > 0.5 && unexposed.exposed_runs == 0);
        let diverged = verdict(vec![run(2, 91, EXPOSED), run(5, 100, DIVERGED)], 10, &opts, 1);
        assert_eq!((diverged.target, diverged.agreement), (Some(2), 1.0));
    }
}
