//! Step 3 of BaDExpert (docs/design.md §3.4): the threshold τ, chosen on clean
//! frames that fine-tuning never saw, by running the *exported* plans through
//! the runtime's own guard — so τ is calibrated on exactly what ships.

use std::path::Path;

use badexpert_runtime::metrics::{rejection_rate, threshold_at_fpr};
use badexpert_runtime::{FrameSet, Guard, GuardBundle, PixelLayout};

use crate::Result;

/// The outcome of calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub threshold: f32,
    /// Rejected fraction of the calibration frames at that threshold.
    pub realised_fpr: f64,
    /// Clean frames M classifies correctly (the ones the quantile is taken over).
    pub frames_used: usize,
    /// M's accuracy on the held-out frames.
    pub model_accuracy: f64,
}

/// Scores the held-out frames with the bundle in `dir` and picks τ for `target_fpr`.
pub fn calibrate(dir: &Path, holdout: &FrameSet, target_fpr: f64) -> Result<Calibration> {
    let bundle = GuardBundle::open(dir)?;
    let mut guard = Guard::new(&bundle)?;
    let labels = holdout.require_labels("calibration")?;
    let mut scores = Vec::with_capacity(holdout.len());
    for (i, &label) in labels.iter().enumerate() {
        let v = guard.guard(holdout.frame(i), PixelLayout::Chw)?;
        if v.class as u32 == label {
            scores.push(v.score);
        }
    }
    let threshold = threshold_at_fpr(&scores, target_fpr)?;
    Ok(Calibration {
        threshold,
        realised_fpr: rejection_rate(&scores, threshold),
        frames_used: scores.len(),
        model_accuracy: scores.len() as f64 / holdout.len().max(1) as f64,
    })
}
