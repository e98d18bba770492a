//! The threshold of a conformal guard (docs/design.md §3.4): the converter
//! calibrates τ with [`threshold_at_fpr`], and the evaluation's baselines
//! choose theirs the same way. The evaluation figures (AUROC, ASR, the
//! ROC curve) live in `badexpert-eval`.

use crate::{Error, Result};

/// The threshold that rejects at most a fraction `fpr` of *new* clean
/// frames (reject when score < τ). Sorted ascending, τ is the j-th smallest
/// calibration score with j = ⌊fpr·(n+1)⌋: a new clean score falls below it
/// with probability j/(n+1) ≤ fpr (the split-conformal finite-sample rule).
/// The index ⌊fpr·n⌋ is one order statistic higher: its expected
/// out-of-sample FPR is (⌊fpr·n⌋+1)/(n+1), above the target (docs/design.md §3.4).
/// Fails when the set is too small for that rate (n + 1 < 1/fpr).
pub fn threshold_at_fpr(clean_scores: &[f32], fpr: f64) -> Result<f32> {
    if !(fpr > 0.0 && fpr < 1.0) {
        return Err(Error::Invalid(format!("target false-positive rate {fpr} must be in (0, 1)")));
    }
    if let Some(s) = clean_scores.iter().find(|s| !s.is_finite()) {
        return Err(Error::Invalid(format!("calibration score {s} is not finite")));
    }
    let n = clean_scores.len();
    let j = (fpr * (n + 1) as f64 + 1e-9).floor() as usize;
    if j == 0 {
        return Err(Error::Invalid(format!(
            "{n} clean calibration frames cannot calibrate a {:.2}% false-positive rate: need at least {} (use a larger reserve or a larger --fpr)",
            fpr * 100.0,
            ((1.0 / fpr).ceil() as usize).saturating_sub(1)
        )));
    }
    let mut sorted = clean_scores.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Ok(sorted[j - 1])
}

/// Fraction of scores below the threshold (i.e. rejected).
pub fn rejection_rate(scores: &[f32], threshold: f32) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    scores.iter().filter(|&&s| s < threshold).count() as f64 / scores.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_takes_the_fpr_quantile_and_refuses_tiny_sets() {
        // 199 scores 0..198: j = ⌊0.01·200⌋ = 2, τ = the 2nd smallest; one calibration score is below it.
        let scores: Vec<f32> = (0..199).rev().map(|i| i as f32).collect();
        let t = threshold_at_fpr(&scores, 0.01).unwrap();
        assert_eq!(t, 1.0);
        assert_eq!(rejection_rate(&scores, t), 1.0 / 199.0);
        // 357 frames: j = 3 (DESIGN's ⌊fpr·n⌋ index would be the 4th smallest).
        let scores: Vec<f32> = (0..357).map(|i| i as f32).collect();
        assert_eq!(threshold_at_fpr(&scores, 0.01).unwrap(), 2.0);
        let err = threshold_at_fpr(&scores[..50], 0.01).unwrap_err().to_string();
        assert!(err.contains("50 clean calibration frames") && err.contains("at least 99"), "{err}");
        assert!(threshold_at_fpr(&scores, 0.0).is_err());
    }
}
