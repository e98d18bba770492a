//! BaDExpert's decision statistic (docs/design.md §3.3).
//!
//! From the suspect model's predicted class ŷ, the backdoor expert's
//! confidence `c_B = softmax(B(x))[ŷ]` and the auxiliary model's
//! `c_A = softmax(M′(x))[ŷ]`, a score is built in which **low means
//! backdoor**: a triggered frame keeps the expert's agreement (high c_B) while
//! the repaired auxiliary model no longer agrees (low c_A).

use serde::{Deserialize, Serialize};

/// Guards against division by zero in the score.
pub const EPSILON: f32 = 1e-8;

/// How c_B and c_A combine into the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScoreMode {
    /// `min(c_A / (γ·max(c_B, ε)), (1 − c_B) / max(γ − c_A, ε))`: the reference ensemble.
    #[default]
    Ensemble,
    /// `c_A / max(c_B, ε)`: the paper's plain likelihood ratio.
    Ratio,
}

impl std::str::FromStr for ScoreMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ensemble" => Ok(ScoreMode::Ensemble),
            "ratio" => Ok(ScoreMode::Ratio),
            _ => Err(format!("unknown score mode {s:?} (expected ensemble or ratio)")),
        }
    }
}

/// The two confidences in ŷ that the score is built from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Confidences {
    /// softmax(B(x))[ŷ]
    pub expert: f32,
    /// softmax(M′(x))[ŷ]
    pub auxiliary: f32,
}

impl ScoreMode {
    /// The score; low means backdoor.
    pub fn score(self, c: Confidences, gamma: f32) -> f32 {
        let (c_b, c_a) = (c.expert, c.auxiliary);
        match self {
            ScoreMode::Ensemble => {
                let agree = c_a / (gamma * c_b.max(EPSILON));
                let disagree = (1.0 - c_b) / (gamma - c_a).max(EPSILON);
                agree.min(disagree)
            }
            ScoreMode::Ratio => c_a / c_b.max(EPSILON),
        }
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// softmax(logits)[class], computed stably without a buffer.
pub fn softmax_at(logits: &[f32], class: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    (logits[class] - max).exp() / sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggered_pattern_scores_lower_than_clean_pattern() {
        let triggered = Confidences { expert: 0.95, auxiliary: 0.05 };
        let clean = Confidences { expert: 0.3, auxiliary: 0.9 };
        for mode in [ScoreMode::Ensemble, ScoreMode::Ratio] {
            assert!(mode.score(triggered, 0.5) < mode.score(clean, 0.5), "{mode:?}");
        }
        // Worked example: min(0.05/(0.5·0.95), 0.05/0.45) = min(0.10526, 0.11111)
        let s = ScoreMode::Ensemble.score(triggered, 0.5);
        assert!((s - 0.105263).abs() < 1e-5, "{s}");
        // c_A above γ makes the second term use ε: huge, so the first decides.
        let s = ScoreMode::Ensemble.score(clean, 0.5);
        assert!((s - 0.9 / 0.15).abs() < 1e-4, "{s}");
    }

    #[test]
    fn softmax_helpers() {
        let logits = [1.0, 3.0, 3.0, -2.0];
        assert_eq!(argmax(&logits), 1);
        let total: f32 = (0..4).map(|i| softmax_at(&logits, i)).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!((softmax_at(&[1000.0, 0.0], 0) - 1.0).abs() < 1e-6);
    }
}
