//! Step 2 of BaDExpert (DESIGN.md §3.2): the auxiliary model M′. A copy of M
//! fine-tuned on clean frames with true labels and a large learning rate
//! keeps the normal task but loses much of the backdoor, so M′ disagreeing
//! with M is evidence of a trigger.

use badexpert_runtime::{FrameSet, Preprocessor};

use crate::augment::Augmentation;
use crate::onnx::TchGraph;
use crate::train::{accuracy, class_indices, fine_tune_watched, Optimizer, Progress, TrainConfig};
use crate::{Error, Result};

/// How M′'s initial learning rate is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum AuxiliaryRate {
    Fixed(f64),
    /// Try `candidates` in ascending order and keep the first at which the
    /// model's held-out clean accuracy collapses to at most
    /// `collapse_accuracy` after the first epoch (it recovers as the rate
    /// decays): the paper's sign that the rate is large enough to diminish
    /// the backdoor (its appendix A.1.1).
    Auto { candidates: Vec<f64>, collapse_accuracy: f64 },
}

impl AuxiliaryRate {
    /// From the paper's 0.1 upwards, target ≤ 30 % after epoch 1.
    pub fn auto() -> Self {
        AuxiliaryRate::Auto { candidates: vec![0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5], collapse_accuracy: 0.3 }
    }
}

impl std::str::FromStr for AuxiliaryRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(AuxiliaryRate::auto());
        }
        crate::train::parse_learning_rate(s).map(AuxiliaryRate::Fixed)
    }
}

/// The auxiliary model that was kept, and how its rate was chosen.
pub struct Auxiliary {
    pub graph: TchGraph,
    pub config: TrainConfig,
    /// (initial rate, held-out clean accuracy after the first epoch) per rate tried.
    pub trials: Vec<(f64, f64)>,
}

/// Settings for making M′: the paper's (SGD Nesterov, 10 epochs, batch 64,
/// ×0.1 after epochs 2/4/6/8), with the initial rate chosen automatically by
/// default.
#[derive(Debug, Clone, PartialEq)]
pub struct AuxiliaryModel {
    pub rate: AuxiliaryRate,
    pub epochs: usize,
    pub batch_size: usize,
    pub weight_decay: f64,
    /// Epochs after which the rate is multiplied by 0.1.
    pub lr_milestones: Vec<usize>,
}

impl Default for AuxiliaryModel {
    fn default() -> Self {
        AuxiliaryModel { rate: AuxiliaryRate::auto(), epochs: 10, batch_size: 64, weight_decay: 1e-4, lr_milestones: vec![2, 4, 6, 8] }
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
            lr_milestones: self.lr_milestones.clone(),
            lr_decay: 0.1,
            augmentation,
            seed,
        }
    }

    /// Makes M′ from fresh copies of M (`fresh`), fine-tuned on `fit` with
    /// true labels; for the automatic rate, judged on `holdout` after epoch 1.
    #[allow(clippy::too_many_arguments)]
    pub fn make(
        &self,
        fresh: &dyn Fn() -> Result<TchGraph>,
        fit: &FrameSet,
        holdout: &FrameSet,
        pre: &Preprocessor,
        augmentation: Augmentation,
        seed: u64,
        progress: &dyn Progress,
    ) -> Result<Auxiliary> {
        let labels = class_indices(fit.require_labels("fit")?);
        let hold_labels = holdout.require_labels("holdout")?;
        let (candidates, collapse) = match &self.rate {
            AuxiliaryRate::Fixed(lr) => (vec![*lr], None),
            AuxiliaryRate::Auto { candidates, collapse_accuracy } => (candidates.clone(), Some(*collapse_accuracy)),
        };
        let mut trials = Vec::new();
        for (k, &lr) in candidates.iter().enumerate() {
            let last = k + 1 == candidates.len();
            let graph = fresh()?;
            let config = self.config(lr, augmentation, seed);
            let mut collapsed = true;
            let mut watch = |epoch: usize| -> Result<bool> {
                let (Some(limit), 0) = (collapse, epoch) else { return Ok(true) };
                let acc = accuracy(&graph, holdout, hold_labels, pre)?;
                log::info!("auxiliary model at lr {lr}: held-out clean accuracy {:.1}% after epoch 1", 100.0 * acc);
                trials.push((lr, acc));
                collapsed = acc <= limit;
                // Keep going when collapsed, or when no larger rate is left to try.
                Ok(collapsed || last)
            };
            let what = format!("auxiliary model M′ (lr {lr})");
            match fine_tune_watched(&graph, fit, &labels, pre, &config, progress, &what, &mut watch) {
                Ok(_) => {}
                // Too large to train stably: the largest stable rate tried before is the one.
                Err(Error::Diverged { .. }) if k > 0 && collapse.is_some() => {
                    let lr = candidates[k - 1];
                    log::warn!("auxiliary model diverged at lr {}; training at lr {lr}, the largest stable rate", candidates[k]);
                    let (graph, config) = (fresh()?, self.config(lr, augmentation, seed));
                    fine_tune_watched(&graph, fit, &labels, pre, &config, progress, "auxiliary model M′", &mut |_| Ok(true))?;
                    return Ok(Auxiliary { graph, config, trials });
                }
                Err(e) => return Err(e),
            }
            if collapsed || last {
                if !collapsed {
                    log::warn!("no candidate rate collapsed M′'s clean accuracy after epoch 1; kept the largest ({lr})");
                }
                return Ok(Auxiliary { graph, config, trials });
            }
        }
        Err(Error::Invalid("no auxiliary learning rate to try".into()))
    }
}
