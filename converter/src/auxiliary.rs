//! Step 2 of BaDExpert (DESIGN.md §3.2): the auxiliary model M′. A copy of M
//! fine-tuned on clean frames with true labels and a large learning rate
//! keeps the normal task but loses much of the backdoor, so M′ disagreeing
//! with M is evidence of a trigger.

use badexpert_runtime::{FrameSet, Preprocessor};

use crate::augment::Augmentation;
use crate::onnx::TchGraph;
use crate::train::{class_indices, fine_tune, Optimizer, Progress, TrainConfig};
use crate::Result;

/// Settings for making M′; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq)]
pub struct AuxiliaryModel {
    pub learning_rate: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub weight_decay: f64,
    /// Epochs after which the rate is multiplied by 0.1.
    pub lr_milestones: Vec<usize>,
}

impl Default for AuxiliaryModel {
    fn default() -> Self {
        AuxiliaryModel { learning_rate: 0.1, epochs: 10, batch_size: 64, weight_decay: 1e-4, lr_milestones: vec![2, 4, 6, 8] }
    }
}

impl AuxiliaryModel {
    /// SGD with Nesterov momentum 0.9 and a stepwise ×0.1 schedule.
    pub fn config(&self, augmentation: Augmentation, seed: u64) -> TrainConfig {
        TrainConfig {
            optimizer: Optimizer::SgdNesterov,
            learning_rate: self.learning_rate,
            epochs: self.epochs,
            batch_size: self.batch_size,
            weight_decay: self.weight_decay,
            lr_milestones: self.lr_milestones.clone(),
            lr_decay: 0.1,
            augmentation,
            seed,
        }
    }

    /// Turns `graph` (a fresh copy of M) into M′.
    pub fn fit(
        &self,
        graph: &TchGraph,
        frames: &FrameSet,
        labels: &[u32],
        pre: &Preprocessor,
        cfg: &TrainConfig,
        progress: &dyn Progress,
    ) -> Result<f64> {
        fine_tune(graph, frames, &class_indices(labels), pre, cfg, progress, "auxiliary model M′")
    }
}
