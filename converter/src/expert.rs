//! Step 1 of BaDExpert (DESIGN.md §3.1, the paper's Algorithm 1): the
//! backdoor expert B. A copy of M fine-tuned on clean frames with
//! deliberately wrong labels and a small learning rate forgets the normal
//! task but keeps the backdoor, so B agreeing with M is evidence of a trigger.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use badexpert_runtime::{FrameSet, Preprocessor};

use crate::augment::Augmentation;
use crate::onnx::TchGraph;
use crate::train::{accuracy, fine_tune, Optimizer, Progress, TrainConfig};
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
    /// Try `candidates` in ascending order and keep the first whose expert
    /// falls to at most `max_clean_accuracy` on held-out clean frames: the
    /// smallest rate that makes B forget the normal task, well below the
    /// rates that also erase the backdoor (the paper's Table 9).
    Auto { candidates: Vec<f64>, max_clean_accuracy: f64 },
}

impl ExpertRate {
    /// The automatic mode over 1e-5 … 1e-2 (about ×1.5 apart, so the first
    /// rate past the collapse is not far past it), target ≤ 30 %.
    pub fn auto() -> Self {
        ExpertRate::Auto {
            candidates: vec![
                1e-5, 2e-5, 3e-5, 5e-5, 7e-5, 1e-4, 1.5e-4, 2e-4, 3e-4, 5e-4, 7e-4, 1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3, 7e-3, 1e-2,
            ],
            max_clean_accuracy: 0.3,
        }
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
/// right rate depends on the model (DESIGN.md §3.1).
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

/// The expert that was kept, and how it was chosen.
pub struct Expert {
    pub graph: TchGraph,
    pub config: TrainConfig,
    pub holdout_accuracy: f64,
    /// (learning rate, held-out clean accuracy) of every rate tried.
    pub trials: Vec<(f64, f64)>,
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
            lr_milestones: vec![],
            lr_decay: 1.0,
            augmentation,
            seed,
        }
    }

    /// Makes B from fresh copies of M (`fresh`), fine-tuned on `fit` and judged
    /// on `holdout` (clean accuracy only: no trigger is known).
    #[allow(clippy::too_many_arguments)]
    pub fn make(
        &self,
        fresh: &dyn Fn() -> Result<TchGraph>,
        fit: &FrameSet,
        holdout: &FrameSet,
        classes: usize,
        pre: &Preprocessor,
        augmentation: Augmentation,
        seed: u64,
        progress: &dyn Progress,
    ) -> Result<Expert> {
        let fit_labels = fit.require_labels("fit")?;
        let hold_labels = holdout.require_labels("holdout")?;
        let wrong = self.mislabel.apply(fit_labels, classes, seed);
        let (candidates, target) = match &self.rate {
            ExpertRate::Fixed(lr) => (vec![*lr], None),
            ExpertRate::Auto { candidates, max_clean_accuracy } => (candidates.clone(), Some(*max_clean_accuracy)),
        };
        let mut trials = Vec::new();
        let mut last = None;
        for lr in candidates {
            let graph = fresh()?;
            let config = self.config(lr, augmentation, seed);
            fine_tune(&graph, fit, &wrong, pre, &config, progress, &format!("backdoor expert B (lr {lr:.0e})"))?;
            let acc = accuracy(&graph, holdout, hold_labels, pre)?;
            log::info!("backdoor expert at lr {lr:.1e}: held-out clean accuracy {:.1}%", 100.0 * acc);
            trials.push((lr, acc));
            let done = target.is_none_or(|t| acc <= t);
            last = Some(Expert { graph, config, holdout_accuracy: acc, trials: vec![] });
            if done {
                break;
            }
        }
        let mut expert = last.ok_or_else(|| Error::Invalid("no expert learning rate to try".into()))?;
        if let Some(t) = target {
            if expert.holdout_accuracy > t {
                log::warn!(
                    "no candidate rate brought the expert's clean accuracy to {:.0}% or below; keeping the largest ({:.1e})",
                    100.0 * t,
                    expert.config.learning_rate
                );
            }
        }
        expert.trials = trials;
        Ok(expert)
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
