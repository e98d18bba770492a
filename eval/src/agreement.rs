//! How closely two bundles for the same model decide, frame by frame: an f16
//! or quantized bundle against its f32 original, or a device's run against
//! the host's.

use serde::Serialize;

use badexpert_runtime::{Error, FrameSet, Guard, GuardBundle, PixelLayout, Result};

/// Frame-level agreement of a candidate bundle with a reference bundle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub frames: usize,
    /// Share of frames with the same accept/reject verdict.
    pub verdict: f64,
    /// Share of frames where M predicts the same class.
    pub class: f64,
    /// Largest |difference| of B's or M′'s confidence in M's class, over
    /// frames where both predict the same class.
    pub max_confidence_diff: f64,
    /// Largest and mean |score difference|. The score is a ratio of the
    /// confidences, so it magnifies their differences far from the threshold.
    pub max_score_diff: f64,
    pub mean_score_diff: f64,
}

/// Guards every frame with both bundles (each with its own threshold).
pub fn agreement(candidate: &GuardBundle, reference: &GuardBundle, frames: &FrameSet) -> Result<Agreement> {
    if candidate.manifest().input.shape != reference.manifest().input.shape {
        return Err(Error::Invalid(format!(
            "the bundles take different frames: {} and {}",
            candidate.manifest().input.shape,
            reference.manifest().input.shape
        )));
    }
    if frames.shape() != reference.manifest().input.shape {
        return Err(Error::Invalid(format!(
            "frames are {}, the bundles take {}",
            frames.shape(),
            reference.manifest().input.shape
        )));
    }
    let (mut a, mut b) = (Guard::new(candidate)?, Guard::new(reference)?);
    let (mut verdicts, mut classes, mut max_diff, mut sum_diff, mut max_conf) = (0usize, 0usize, 0f64, 0f64, 0f64);
    for i in 0..frames.len() {
        let (x, y) = (a.guard(frames.frame(i), PixelLayout::Chw)?, b.guard(frames.frame(i), PixelLayout::Chw)?);
        verdicts += (x.accepted == y.accepted) as usize;
        classes += (x.class == y.class) as usize;
        if x.class == y.class {
            let (cx, cy) = (x.confidences, y.confidences);
            max_conf = max_conf
                .max((cx.expert as f64 - cy.expert as f64).abs())
                .max((cx.auxiliary as f64 - cy.auxiliary as f64).abs());
        }
        let d = (x.score as f64 - y.score as f64).abs();
        max_diff = max_diff.max(d);
        sum_diff += d;
    }
    let n = frames.len().max(1) as f64;
    Ok(Agreement {
        frames: frames.len(),
        verdict: verdicts as f64 / n,
        class: classes as f64 / n,
        max_confidence_diff: max_conf,
        max_score_diff: max_diff,
        mean_score_diff: sum_diff / n,
    })
}
