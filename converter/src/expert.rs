//! Step 1 of BaDExpert (docs/design.md §3.1, the paper's Algorithm 1): the
//! backdoor expert B. A copy of M fine-tuned on clean frames with
//! deliberately wrong labels and a small learning rate forgets the normal
//! task but keeps the backdoor, so B agreeing with M is evidence of a trigger.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use badexpert_runtime::manifest::RateTrial;
use badexpert_runtime::FrameSet;

use crate::augment::Augmentation;
use crate::train::{accuracy, fine_tune, refit, FineTuneContext, Optimizer, Schedule, TrainConfig, Trained};
use crate::{Error, Result};

/// How the wrong labels are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mislabel {
    /// y ↦ (y + 1) mod K, the paper's choice.
    #[default]
    NextClass,
    /// A uniformly random class other than y (seeded).
    RandomWrong,
}

impl Mislabel {
    pub fn apply(self, labels: &[u32], classes: usize, seed: u64) -> Vec<i64> {
        let k = classes as u32;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d69_736c_6162_656c);
        labels
            .iter()
            .map(|&y| match self {
                Mislabel::NextClass => ((y + 1) % k) as i64,
                Mislabel::RandomWrong => ((y + rng.gen_range(1..k)) % k) as i64,
            })
            .collect()
    }

    pub fn describe(self) -> &'static str {
        match self {
            Mislabel::NextClass => "mislabelled: (y + 1) mod K",
            Mislabel::RandomWrong => "mislabelled: random wrong class",
        }
    }
}

/// How B's learning rate is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpertRate {
    /// Use this rate.
    Fixed(f64),
    /// Start from the paper's rate and move only where the clean held-out
    /// frames show that it fails ([`ExpertSearch`]).
    Auto(ExpertSearch),
}

/// The automatic expert rate. No trigger is known, so the search can only
/// read clean frames; it reads them for the two ways B fails:
/// - it did not unlearn: B still classifies like M (held-out clean accuracy
///   within `min_forgetting` of M's), so agreeing with M says nothing — a
///   larger rate is tried;
/// - it relearned: at least `max_relearned` of the held-out frames go to
///   their wrong training label, i.e. the rate was large enough to train a new
///   task over the old one, which erases the backdoor too (the paper's
///   Table 9) — or the loss diverged: a smaller rate is tried.
///
/// The search walks `ladder` from `start` in one direction and keeps the
/// first rate that fails neither way (going up: the last one that did not
/// relearn). A rate that fails never ends the conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertSearch {
    /// Candidate rates, ascending.
    pub ladder: Vec<f64>,
    /// Where the search starts (the paper's 1e-4).
    pub start: f64,
    pub min_forgetting: f64,
    pub max_relearned: f64,
}

impl ExpertRate {
    /// Whether the rate is chosen on held-out frames.
    pub fn is_auto(&self) -> bool {
        matches!(self, ExpertRate::Auto(_))
    }

    /// The automatic mode: from 1e-4 over 1e-6 … 1e-3; B must fall 5 pt
    /// below M (chosen on the zoo's development part: docs/zoo.md).
    pub fn auto() -> Self {
        ExpertRate::Auto(ExpertSearch {
            ladder: vec![1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3],
            start: 1e-4,
            min_forgetting: 0.05,
            max_relearned: 0.5,
        })
    }
}

impl std::str::FromStr for ExpertRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(ExpertRate::auto());
        }
        crate::train::parse_learning_rate(s).map(ExpertRate::Fixed)
    }
}

/// Settings for making B: the paper's (Adam, one epoch, batch 128, labels
/// (y+1) mod K), with the rate chosen automatically by default because the
/// right rate depends on the model (docs/design.md §3.1).
#[derive(Debug, Clone, PartialEq)]
pub struct BackdoorExpert {
    pub rate: ExpertRate,
    pub epochs: usize,
    pub batch_size: usize,
    pub mislabel: Mislabel,
}

impl Default for BackdoorExpert {
    fn default() -> Self {
        BackdoorExpert { rate: ExpertRate::auto(), epochs: 1, batch_size: 128, mislabel: Mislabel::NextClass }
    }
}

/// The expert that was kept, and how it was chosen (one trial for a fixed rate).
pub type Expert = Trained;

/// What one fine-tune at one rate showed on the held-out frames.
enum Finding {
    Diverged,
    Relearned,
    NotUnlearned,
    Unlearned,
}

impl BackdoorExpert {
    /// The training configuration at `learning_rate` (Adam, no weight decay, constant rate).
    pub fn config(&self, learning_rate: f64, augmentation: Augmentation, seed: u64) -> TrainConfig {
        TrainConfig {
            optimizer: Optimizer::Adam,
            learning_rate,
            epochs: self.epochs,
            batch_size: self.batch_size,
            weight_decay: 0.0,
            schedule: Schedule::constant(),
            augmentation,
            seed,
        }
    }

    /// Trains `made`'s chosen rate afresh ([`refit`]) on a new order of the
    /// fit frames, judged on `holdout`; `made` stays where the refit diverged.
    pub fn refit(&self, ctx: &FineTuneContext, holdout: &FrameSet, made: Expert, seed: u64) -> Result<Expert> {
        let wrong = self.mislabel.apply(ctx.fit.require_labels("fit")?, ctx.classes, seed);
        let what = format!("backdoor expert B, refit (lr {:.0e})", made.config.learning_rate);
        refit(ctx, &wrong, holdout, made, &what)
    }

    /// Makes B from fresh copies of M, fine-tuned on the context's fit
    /// frames and judged on its judged frames (clean frames only: no trigger
    /// is known) against M's held-out accuracy.
    pub fn make(&self, ctx: &FineTuneContext, seed: u64) -> Result<Expert> {
        let FineTuneContext { fresh, fit, judged: holdout, classes, model_accuracy, pre, augmentation, progress } =
            *ctx;
        let fit_labels = fit.require_labels("fit")?;
        let hold_labels = holdout.require_labels("holdout")?;
        let wrong = self.mislabel.apply(fit_labels, classes, seed);
        let hold_wrong: Vec<u32> = self.mislabel.apply(hold_labels, classes, seed).iter().map(|&w| w as u32).collect();
        let train = |lr: f64| -> Result<(Finding, Option<Expert>)> {
            let graph = fresh()?;
            let config = self.config(lr, augmentation, seed);
            match fine_tune(&graph, fit, &wrong, pre, &config, progress, &format!("backdoor expert B (lr {lr:.0e})")) {
                Err(Error::Diverged { .. }) => return Ok((Finding::Diverged, None)),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            let acc = accuracy(&graph, holdout, hold_labels, pre)?;
            let relearned = accuracy(&graph, holdout, &hold_wrong, pre)?;
            log::info!(
                "backdoor expert at lr {lr:.1e}: held-out clean accuracy {:.1}% (M {:.1}%), {:.1}% on the wrong labels",
                100.0 * acc,
                100.0 * model_accuracy,
                100.0 * relearned
            );
            let finding = match &self.rate {
                ExpertRate::Fixed(_) => Finding::Unlearned,
                ExpertRate::Auto(s) if relearned >= s.max_relearned => Finding::Relearned,
                ExpertRate::Auto(s) if acc > model_accuracy - s.min_forgetting => Finding::NotUnlearned,
                ExpertRate::Auto(_) => Finding::Unlearned,
            };
            Ok((finding, Some(Expert { graph, config, holdout_accuracy: acc, trials: vec![] })))
        };
        let search = match &self.rate {
            ExpertRate::Fixed(lr) => match train(*lr)? {
                (_, Some(expert)) => return Ok(expert),
                _ => {
                    return Err(Error::Diverged {
                        what: format!("backdoor expert B (lr {lr})"),
                        loss: f64::NAN,
                        epoch: 0,
                    })
                }
            },
            ExpertRate::Auto(s) => s,
        };
        let ladder = &search.ladder;
        if ladder.is_empty() {
            return Err(Error::Invalid("no expert learning rate to try".into()));
        }
        let mut at = ladder.iter().position(|&r| r >= search.start).unwrap_or(ladder.len() - 1);
        let mut trials: Vec<RateTrial> = Vec::new();
        let mut up: Option<bool> = None;
        // While going up: the last rate that did not unlearn, kept if the next one relearns.
        let mut below: Option<Expert> = None;
        let keep = |mut e: Expert, trials: Vec<RateTrial>| {
            e.trials = trials;
            e
        };
        loop {
            let lr = ladder[at];
            let (finding, expert) = train(lr)?;
            let record = |outcome: &str| RateTrial {
                learning_rate: lr,
                holdout_accuracy: expert.as_ref().map(|e| e.holdout_accuracy),
                outcome: outcome.into(),
            };
            let top = at + 1 == ladder.len();
            match finding {
                Finding::Unlearned => {
                    trials.push(record("kept: unlearned the task, did not relearn the wrong labels"));
                    return Ok(keep(expert.expect("trained"), trials));
                }
                Finding::NotUnlearned if up == Some(false) || top => {
                    trials.push(record("kept: still close to M, but no larger rate is usable"));
                    return Ok(keep(expert.expect("trained"), trials));
                }
                Finding::NotUnlearned => {
                    trials.push(record("too small: still classifies like M"));
                    (below, up, at) = (expert, Some(true), at + 1);
                }
                Finding::Relearned | Finding::Diverged => {
                    let why = match finding {
                        Finding::Diverged => "too large: the loss diverged",
                        _ => "too large: relearned the wrong labels",
                    };
                    trials.push(record(why));
                    if let (Some(true), Some(e)) = (up, below.take()) {
                        let kept = trials
                            .iter_mut()
                            .rev()
                            .find(|t| t.learning_rate == e.config.learning_rate)
                            .expect("recorded");
                        kept.outcome = "kept: the largest rate below one that relearned or diverged".into();
                        return Ok(keep(e, trials));
                    }
                    if at == 0 {
                        let Some(e) = expert else {
                            return Err(Error::Diverged {
                                what: "backdoor expert B at every rate tried".into(),
                                loss: f64::NAN,
                                epoch: 0,
                            });
                        };
                        trials.last_mut().expect("pushed").outcome =
                            "kept: the smallest rate on the ladder, though it relearned".into();
                        log::warn!("backdoor expert relearned the wrong labels even at lr {lr:.1e}; kept it");
                        return Ok(keep(e, trials));
                    }
                    (up, at) = (Some(false), at - 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mislabels_are_always_wrong() {
        let labels: Vec<u32> = (0..100).map(|i| i % 10).collect();
        assert_eq!(Mislabel::NextClass.apply(&[0, 8, 9], 10, 0), vec![1, 9, 0]);
        let r = Mislabel::RandomWrong.apply(&labels, 10, 3);
        assert!(r.iter().zip(&labels).all(|(w, &y)| *w != y as i64 && *w < 10));
    }
}
