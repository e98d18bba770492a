//! Step 2 of BaDExpert (docs/design.md §3.2): the auxiliary model M′. A copy of M
//! fine-tuned on clean frames with true labels and a large learning rate
//! keeps the normal task but loses much of the backdoor, so M′ disagreeing
//! with M is evidence of a trigger.

use badexpert_runtime::manifest::RateTrial;
use badexpert_runtime::FrameSet;

use crate::augment::Augmentation;
use crate::train::{
    accuracy, class_indices, fine_tune, fine_tune_watched, refit, FineTuneContext, Optimizer, Schedule, TrainConfig,
    Trained, Watch,
};
use crate::{Error, Result};

/// How M′'s initial learning rate is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum AuxiliaryRate {
    Fixed(f64),
    /// The paper's rate unless the clean held-out frames show that it fails
    /// ([`AuxiliarySearch`]).
    Auto(AuxiliarySearch),
}

/// The automatic auxiliary rate. The paper's rule for M′ is "collapse in the
/// first epoch *and recover*": a large rate shakes the backdoor out while the
/// decaying schedule brings the task back. A rate whose M′ ends more than
/// `recovery_margin` below M's held-out clean accuracy did not recover (or
/// diverged). The search tries `start` and bisects the `ladder` for the
/// largest rate that recovers: with a ladder that ends at `start` (the
/// default), a smaller rate is tried only where `start` fails. When none
/// recovers, the one with the best final accuracy is kept: a failing rate
/// never ends the conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct AuxiliarySearch {
    /// Candidate initial rates, ascending.
    pub ladder: Vec<f64>,
    pub start: f64,
    pub recovery_margin: f64,
}

impl AuxiliaryRate {
    /// Whether the rate is chosen on held-out frames.
    pub fn is_auto(&self) -> bool {
        matches!(self, AuxiliaryRate::Auto(_))
    }

    /// The largest rate of 1e-3 … 0.3 that recovers, bisected from the
    /// paper's 0.1; recovered means within 20 pt of M (chosen on the zoo's
    /// development part for the paper's stepwise 10 epochs: docs/zoo.md).
    pub fn auto() -> Self {
        AuxiliaryRate::Auto(AuxiliarySearch {
            ladder: vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3],
            start: 0.1,
            recovery_margin: 0.2,
        })
    }

    /// 0.03, or the largest smaller rate down to 1e-3 that recovers where
    /// 0.03 does not (within 20 pt of M): for the cosine schedule over 20
    /// epochs, where M′ from 0.03 ends near M's accuracy (docs/zoo.md, "A
    /// better-trained M′").
    pub fn auto_from_003() -> Self {
        AuxiliaryRate::Auto(AuxiliarySearch {
            ladder: vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.03],
            start: 0.03,
            recovery_margin: 0.2,
        })
    }
}

impl std::str::FromStr for AuxiliaryRate {
    type Err = String;
    /// `auto`, `auto-0.03` or a rate.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => return Ok(AuxiliaryRate::auto()),
            "auto-0.03" => return Ok(AuxiliaryRate::auto_from_003()),
            _ => {}
        }
        crate::train::parse_learning_rate(s).map(AuxiliaryRate::Fixed)
    }
}

/// The auxiliary model that was kept, and how its rate was chosen (no trial for a fixed rate).
pub type Auxiliary = Trained;

/// Settings for making M′: the paper's (SGD Nesterov, 10 epochs, batch 64,
/// ×0.1 after epochs 2/4/6/8), with the initial rate chosen automatically by
/// default. A cosine over 20 epochs from 0.03 (`auto-0.03`) recovers M's
/// accuracy better on BatchNorm-kept exports but forgets less of the
/// backdoor on folded ones (docs/zoo.md), so it is not the default.
#[derive(Debug, Clone, PartialEq)]
pub struct AuxiliaryModel {
    pub rate: AuxiliaryRate,
    pub epochs: usize,
    pub batch_size: usize,
    pub weight_decay: f64,
    /// The paper's ×0.1 after epochs 2/4/6/8, or a cosine.
    pub schedule: Schedule,
    /// Fine-tunes averaged into M′ at the chosen rate (1: one fine-tune).
    pub soup: usize,
}

/// The seed of a soup's `k`-th further copy.
fn soup_seed(seed: u64, k: u64) -> u64 {
    seed ^ (0x736f_7570 + k)
}

impl Default for AuxiliaryModel {
    fn default() -> Self {
        AuxiliaryModel {
            rate: AuxiliaryRate::auto(),
            epochs: 10,
            batch_size: 64,
            weight_decay: 1e-4,
            schedule: Schedule::paper_auxiliary(),
            soup: 1,
        }
    }
}

impl AuxiliaryModel {
    /// SGD with Nesterov momentum 0.9 and a stepwise ×0.1 schedule.
    pub fn config(&self, learning_rate: f64, augmentation: Augmentation, seed: u64) -> TrainConfig {
        TrainConfig {
            optimizer: Optimizer::SgdNesterov,
            learning_rate,
            epochs: self.epochs,
            batch_size: self.batch_size,
            weight_decay: self.weight_decay,
            schedule: self.schedule.clone(),
            augmentation,
            seed,
        }
    }

    /// Trains `made`'s chosen rate afresh ([`refit`]) on a new order of the
    /// fit frames, judged on `holdout`; `made` stays where the refit diverged.
    pub fn refit(&self, ctx: &FineTuneContext, holdout: &FrameSet, made: Auxiliary) -> Result<Auxiliary> {
        let labels = class_indices(ctx.fit.require_labels("fit")?);
        let what = format!("auxiliary model M′, refit (lr {})", made.config.learning_rate);
        refit(ctx, &labels, holdout, made, &what)
    }

    /// With `soup` > 1, trains `soup` − 1 more copies at `made`'s rate on
    /// other frame orders and augmentations and makes `made` their weight
    /// average (docs/design.md §3.2): one model per frame, less of one
    /// fine-tune's luck. Applied to the M′ that is kept (after a refit).
    pub fn soup(&self, ctx: &FineTuneContext, mut made: Auxiliary, seed: u64) -> Result<Auxiliary> {
        if self.soup <= 1 {
            return Ok(made);
        }
        let FineTuneContext { fresh, fit, judged: holdout, pre, augmentation, progress, .. } = *ctx;
        let labels = class_indices(fit.require_labels("fit")?);
        let lr = made.config.learning_rate;
        let mut others = Vec::with_capacity(self.soup - 1);
        for k in 1..self.soup as u64 {
            let (graph, config) = (fresh()?, self.config(lr, augmentation, soup_seed(seed, k)));
            let what = format!("auxiliary model M′, soup {}/{} (lr {lr})", k + 1, self.soup);
            fine_tune(&graph, fit, &labels, pre, &config, progress, &what)?;
            others.push(graph);
        }
        let single = made.holdout_accuracy;
        let copies: Vec<&crate::onnx::TchGraph> = others.iter().collect();
        made.graph.average_of(&[&[&made.graph][..], &copies[..]].concat(), fit, pre)?;
        made.holdout_accuracy = accuracy(&made.graph, holdout, holdout.require_labels("holdout")?, pre)?;
        log::info!(
            "auxiliary model: soup of {} at lr {lr}, held-out clean accuracy {:.1}% (one: {:.1}%)",
            self.soup,
            100.0 * made.holdout_accuracy,
            100.0 * single
        );
        Ok(made)
    }

    /// Makes M′ from fresh copies of M, fine-tuned on the context's fit
    /// frames with true labels; an automatic rate is judged on its judged
    /// frames against M's held-out accuracy.
    pub fn make(&self, ctx: &FineTuneContext, seed: u64) -> Result<Auxiliary> {
        let FineTuneContext { fresh, fit, judged: holdout, model_accuracy, pre, augmentation, progress, .. } = *ctx;
        let labels = class_indices(fit.require_labels("fit")?);
        let hold_labels = holdout.require_labels("holdout")?;
        let search = match &self.rate {
            AuxiliaryRate::Fixed(lr) => {
                let (graph, config) = (fresh()?, self.config(*lr, augmentation, seed));
                fine_tune(&graph, fit, &labels, pre, &config, progress, &format!("auxiliary model M′ (lr {lr})"))?;
                let holdout_accuracy = accuracy(&graph, holdout, hold_labels, pre)?;
                return Ok(Auxiliary { graph, config, holdout_accuracy, trials: vec![] });
            }
            AuxiliaryRate::Auto(s) => s,
        };
        let floor = model_accuracy - search.recovery_margin;
        let mut trials = Vec::new();
        // Trains at ladder[i]; `Some` unless it diverged, with whether it recovered.
        let mut attempt = |i: usize| -> Result<Option<(Auxiliary, bool)>> {
            let lr = search.ladder[i];
            let (graph, config) = (fresh()?, self.config(lr, augmentation, seed));
            let mut first_epoch = None;
            let mut watch = |epoch: usize| -> Result<bool> {
                if epoch == 0 {
                    first_epoch = Some(accuracy(&graph, holdout, hold_labels, pre)?);
                }
                Ok(true)
            };
            let what = format!("auxiliary model M′ (lr {lr})");
            let trained = fine_tune_watched(
                &graph,
                fit,
                &labels,
                pre,
                &config,
                Watch { progress, what: &what, after_epoch: &mut watch },
            );
            let first_epoch = first_epoch.map_or(String::new(), |a| format!(" ({:.1}% after epoch 1)", 100.0 * a));
            if let Err(Error::Diverged { epoch, .. }) = trained {
                log::info!("auxiliary model at lr {lr}: diverged in epoch {}", epoch + 1);
                trials.push(RateTrial {
                    learning_rate: lr,
                    holdout_accuracy: None,
                    outcome: format!("diverged in epoch {}", epoch + 1),
                });
                return Ok(None);
            }
            trained?;
            let acc = accuracy(&graph, holdout, hold_labels, pre)?;
            log::info!(
                "auxiliary model at lr {lr}: held-out clean accuracy {:.1}%{first_epoch}, M {:.1}%",
                100.0 * acc,
                100.0 * model_accuracy
            );
            let recovered = acc >= floor;
            let outcome = if recovered {
                format!(
                    "recovered to {:.1}%{first_epoch}, within {:.1} pt of M",
                    100.0 * acc,
                    100.0 * search.recovery_margin
                )
            } else {
                format!("did not recover: {:.1}%{first_epoch} < {:.1}%", 100.0 * acc, 100.0 * floor)
            };
            trials.push(RateTrial { learning_rate: lr, holdout_accuracy: Some(acc), outcome });
            Ok(Some((Auxiliary { graph, config, holdout_accuracy: acc, trials: vec![] }, recovered)))
        };
        // The paper's rate first, then a bisection of the ladder for the
        // largest rate that recovers (smaller rates recover more easily):
        // every rate at or below `lo` recovered, every one at or above `hi` did not.
        let start = search.ladder.iter().position(|&r| r >= search.start).unwrap_or(0);
        let (mut lo, mut hi) = (None::<usize>, search.ladder.len());
        let (mut recovered, mut most_accurate): (Option<Auxiliary>, Option<Auxiliary>) = (None, None);
        let mut next = Some(start);
        while let Some(i) = next {
            match attempt(i)? {
                Some((aux, true)) => {
                    recovered = Some(aux);
                    lo = Some(i);
                }
                Some((aux, false)) => {
                    if most_accurate.as_ref().is_none_or(|b| aux.holdout_accuracy > b.holdout_accuracy) {
                        most_accurate = Some(aux);
                    }
                    hi = i;
                }
                None => hi = i,
            }
            let below = lo.map_or(0, |l| l + 1);
            next = (below < hi).then(|| (below + hi) / 2);
        }
        let mut kept = match recovered {
            Some(aux) => aux,
            None => {
                let aux = most_accurate.ok_or_else(|| Error::Diverged {
                    what: "auxiliary model M′ at every rate tried".into(),
                    loss: f64::NAN,
                    epoch: 0,
                })?;
                log::warn!(
                    "no auxiliary rate recovered to within {:.1} pt of M; kept lr {}, the most accurate",
                    100.0 * search.recovery_margin,
                    aux.config.learning_rate
                );
                aux
            }
        };
        let lr = kept.config.learning_rate;
        if let Some(t) = trials.iter_mut().find(|t| t.learning_rate == lr) {
            let why = if t.outcome.starts_with("recovered") {
                "the largest rate that recovered"
            } else {
                "none recovered; the most accurate"
            };
            t.outcome = format!("kept ({why}): {}", t.outcome);
        }
        kept.trials = trials;
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::{AuxiliaryRate, AuxiliarySearch};

    #[test]
    fn the_rate_rules_parse_by_name_and_auto_003_never_goes_above_its_start() {
        assert_eq!("auto".parse::<AuxiliaryRate>().unwrap(), AuxiliaryRate::auto());
        assert_eq!("0.05".parse::<AuxiliaryRate>().unwrap(), AuxiliaryRate::Fixed(0.05));
        let AuxiliaryRate::Auto(AuxiliarySearch { ladder, start, .. }) = "auto-0.03".parse().unwrap() else {
            panic!("auto-0.03 is a search");
        };
        assert_eq!((start, ladder.last().copied()), (0.03, Some(0.03)));
        assert!(ladder.windows(2).all(|w| w[0] < w[1]));
        assert!("auto-0.3".parse::<AuxiliaryRate>().is_err());
    }
}
