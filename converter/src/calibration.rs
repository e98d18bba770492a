//! Step 3 of BaDExpert (docs/design.md §3.4): the threshold τ, chosen on clean
//! frames that fine-tuning never saw, by running the *exported* plans through
//! the runtime's own guard — so τ is calibrated on exactly what ships. Where
//! the backdoor's target label is known, that label gets a threshold of its
//! own (§9).

use std::path::Path;

use badexpert_runtime::manifest::TargetThreshold;
use badexpert_runtime::threshold::threshold_at_fpr;
use badexpert_runtime::{FrameSet, Guard, GuardBundle, PixelLayout};

use crate::Result;

/// The outcome of calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The threshold of every class but the target's (all classes without one).
    pub threshold: f32,
    /// The target label's own threshold, when one was asked for and the
    /// calibration frames could set it.
    pub target: Option<TargetThreshold>,
    /// Rejected fraction of the calibration frames at those thresholds.
    pub realised_fpr: f64,
    /// The scores of the frames the thresholds were taken over, ascending.
    pub scores: Vec<f32>,
    /// Clean frames M classifies correctly (the ones the quantile is taken over).
    pub frames_used: usize,
    /// M's accuracy on the held-out frames.
    pub model_accuracy: f64,
}

/// A suspected target label and the share of the false-positive budget its
/// frames get (in (0, 1)); `source` says where the label came from.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSplit {
    pub label: usize,
    pub fpr_share: f64,
    pub source: String,
}

/// Scores the held-out frames with the bundle in `dir` and picks τ for
/// `target_fpr` over all classes; with `split`, the target's frames get
/// `fpr_share` of that rate and the other classes the rest, each threshold
/// taken over its own classes' frames.
pub fn calibrate(dir: &Path, holdout: &FrameSet, target_fpr: f64, split: Option<&TargetSplit>) -> Result<Calibration> {
    let bundle = GuardBundle::open(dir)?;
    let mut guard = Guard::new(&bundle)?;
    let labels = holdout.require_labels("calibration")?;
    let mut scored = Vec::with_capacity(holdout.len());
    for (i, &label) in labels.iter().enumerate() {
        let v = guard.guard(holdout.frame(i), PixelLayout::Chw)?;
        if v.class as u32 == label {
            scored.push((v.class, v.score));
        }
    }
    let all: Vec<f32> = scored.iter().map(|s| s.1).collect();
    let (threshold, target) = match split.map(|s| split_thresholds(&scored, target_fpr, s)).transpose()? {
        Some(Some((other, target))) => (other, Some(target)),
        _ => (threshold_at_fpr(&all, target_fpr)?, None),
    };
    let rejected = scored
        .iter()
        .filter(|(class, score)| *score < TargetThreshold::threshold_for(target.as_ref(), threshold, *class))
        .count();
    let mut scores = all;
    scores.sort_by(f32::total_cmp);
    Ok(Calibration {
        threshold,
        target,
        realised_fpr: rejected as f64 / scored.len().max(1) as f64,
        scores,
        frames_used: scored.len(),
        model_accuracy: scored.len() as f64 / holdout.len().max(1) as f64,
    })
}

/// The other classes' threshold and the target's, from the correctly
/// classified calibration frames' (class, score). The share is capped where
/// the other classes' rate would fall below one rank of their frames (they
/// keep at least their lowest-scoring frame's threshold); `None` (with a
/// warning) where the target's frames cannot set its rate at all.
fn split_thresholds(
    scored: &[(usize, f32)],
    target_fpr: f64,
    split: &TargetSplit,
) -> Result<Option<(f32, TargetThreshold)>> {
    let (on, off): (Vec<&(usize, f32)>, Vec<_>) = scored.iter().partition(|(class, _)| *class == split.label);
    let on: Vec<f32> = on.into_iter().map(|s| s.1).collect();
    let off: Vec<f32> = off.into_iter().map(|s| s.1).collect();
    let frames_share = on.len() as f64 / scored.len().max(1) as f64;
    // Rate r over n frames sets the ⌊r·(n + 1)⌋-th smallest score: at least one rank each side.
    let most = 1.0 - (1.0 - frames_share) / (target_fpr * (off.len() + 1) as f64);
    let least = frames_share / (target_fpr * (on.len() + 1) as f64);
    let share = split.fpr_share.min(most);
    let on_rate = share * target_fpr / frames_share;
    if on.is_empty() || off.is_empty() || share < least || !(share > 0.0 && on_rate < 1.0) {
        log::warn!(
            "calibration: {} frame(s) of target label {} and {} of the others cannot split a {:.2}% false-positive rate; one threshold for every class",
            on.len(),
            split.label,
            off.len(),
            100.0 * target_fpr
        );
        return Ok(None);
    }
    if share < split.fpr_share {
        log::info!(
            "calibration: the target label gets {:.0}% of the false-positive budget, not {:.0}%: the other classes' {} frames keep one rank",
            100.0 * share,
            100.0 * split.fpr_share,
            off.len()
        );
    }
    let off_rate = (1.0 - share) * target_fpr / (1.0 - frames_share);
    let target = TargetThreshold {
        label: split.label,
        threshold: threshold_at_fpr(&on, on_rate)?,
        fpr_share: share,
        source: split.source.clone(),
        calibration_size: on.len(),
    };
    Ok(Some((threshold_at_fpr(&off, off_rate)?, target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(label: usize, fpr_share: f64) -> TargetSplit {
        TargetSplit { label, fpr_share, source: "test".into() }
    }

    #[test]
    fn the_target_gets_its_share_of_the_budget_and_the_others_the_rest() {
        // 100 frames of class 0 scoring 0..100, 900 of the others scoring 0..900.
        let scored: Vec<(usize, f32)> =
            (0..100).map(|i| (0, i as f32)).chain((0..900).map(|i| (1 + i % 9, i as f32))).collect();
        let (other, target) = split_thresholds(&scored, 0.01, &split(0, 0.7)).unwrap().unwrap();
        // 7 % of the target's 100 frames: the 7th smallest score; 0.33 % of
        // the others' 900: the 3rd smallest.
        assert_eq!(target.threshold, 6.0);
        assert_eq!(target.calibration_size, 100);
        assert_eq!(other, 2.0);
    }

    #[test]
    fn the_share_is_capped_where_the_other_classes_would_get_less_than_one_rank() {
        // 100 frames of the target, 200 of the others: 90 % of a 1 % budget
        // would leave them 0.14 %, under one rank of 200 (0.5 %).
        let scored: Vec<(usize, f32)> =
            (0..100).map(|i| (0, i as f32)).chain((0..200).map(|i| (1 + i % 9, i as f32))).collect();
        let (other, target) = split_thresholds(&scored, 0.01, &split(0, 0.9)).unwrap().unwrap();
        assert_eq!(other, 0.0, "the others keep exactly one rank");
        assert!((target.fpr_share - (1.0 - (2.0 / 3.0) / (0.01 * 201.0))).abs() < 1e-12, "{}", target.fpr_share);
        assert!(target.fpr_share < 0.9);
    }

    #[test]
    fn too_few_frames_of_the_target_fall_back_to_one_threshold() {
        let scored: Vec<(usize, f32)> = (0..1000).map(|i| (1 + i % 9, i as f32)).chain([(0, 5.0)]).collect();
        // One frame of the target: a 100 % share would put its rate at 100 % and above.
        assert!(split_thresholds(&scored, 0.01, &split(0, 0.7)).unwrap().is_none());
        assert!(split_thresholds(&scored, 0.01, &split(3, 0.7)).unwrap().is_some());
    }
}
