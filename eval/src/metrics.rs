//! Evaluation figures (docs/design.md §3.5): AUROC, clean accuracy and
//! attack success with and without the guard, the realised FPR, the ROC
//! curve, and the AUROC of each of BaDExpert's parts. The runtime never
//! needs them; `badexpert-guard eval`, the reports and the tests do.

use serde::Serialize;

use badexpert_runtime::{Confidences, Error, Result, Verdict};

/// Area under the ROC curve: the probability that a positive outranks a
/// negative (ties count half). Higher scores mean "more positive". `None`
/// when either side is empty.
pub fn auroc(negatives: &[f32], positives: &[f32]) -> Option<f64> {
    if negatives.is_empty() || positives.is_empty() {
        return None;
    }
    let mut all: Vec<(f32, bool)> =
        negatives.iter().map(|&s| (s, false)).chain(positives.iter().map(|&s| (s, true))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann–Whitney U from average ranks over tie groups.
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0; // ranks are 1-based: (i+1 + j) / 2
        rank_sum_pos += avg_rank * all[i..j].iter().filter(|(_, p)| *p).count() as f64;
        i = j;
    }
    let (n_pos, n_neg) = (positives.len() as f64, negatives.len() as f64);
    Some((rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// One frame as any detector saw it: the label it should have had, the
/// suspect model's prediction, and the detector's suspicion (higher means
/// more likely triggered) and decision. Every detector is scored through this.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// True class of the (clean version of the) frame.
    pub label: u32,
    /// The suspect model's prediction.
    pub class: usize,
    pub suspicion: f32,
    pub accepted: bool,
    /// BaDExpert's (c_B, c_A), kept for component ablations and plots.
    pub confidences: Option<Confidences>,
}

impl Scored {
    /// BaDExpert's verdict: suspicion is the negated score (low score = backdoor).
    pub fn from_verdict(label: u32, v: &Verdict) -> Scored {
        Scored { label, class: v.class, suspicion: -v.score, accepted: v.accepted, confidences: Some(v.confidences) }
    }
}

/// The two sides every ROC figure is computed on: clean frames M classifies
/// correctly (negatives) and triggered frames of other classes that M sends
/// to the target (positives, the attack's hits).
pub fn roc_sides<'a>(clean: &'a [Scored], triggered: &'a [Scored], target: u32) -> (Vec<&'a Scored>, Vec<&'a Scored>) {
    let negatives = clean.iter().filter(|f| f.class as u32 == f.label).collect();
    let positives = triggered.iter().filter(|f| f.label != target && f.class as u32 == target).collect();
    (negatives, positives)
}

/// ROC curve points (FPR, TPR), from (0, 0) to (1, 1), one per distinct
/// threshold; higher suspicion means "more positive".
pub fn roc_curve(negatives: &[f32], positives: &[f32]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f32, bool)> =
        negatives.iter().map(|&s| (s, false)).chain(positives.iter().map(|&s| (s, true))).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (n_neg, n_pos) = (negatives.len().max(1) as f64, positives.len().max(1) as f64);
    let (mut fp, mut tp) = (0usize, 0usize);
    let mut curve = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            if all[j].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        curve.push((fp as f64 / n_neg, tp as f64 / n_pos));
        i = j;
    }
    curve
}

/// AUROC of each half of BaDExpert alone and of the ensemble (the paper's
/// Fig 5): B alone flags high c_B, M′ alone flags low c_A.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ComponentAuroc {
    pub expert_only: f64,
    pub auxiliary_only: f64,
    pub ensemble: f64,
}

impl ComponentAuroc {
    /// `None` when a side is empty or the frames carry no confidences.
    pub fn compute(clean: &[Scored], triggered: &[Scored], target: u32) -> Option<ComponentAuroc> {
        let (neg, pos) = roc_sides(clean, triggered, target);
        let by = |f: &dyn Fn(&Scored) -> Option<f32>| -> Option<f64> {
            let n: Option<Vec<f32>> = neg.iter().map(|s| f(s)).collect();
            let p: Option<Vec<f32>> = pos.iter().map(|s| f(s)).collect();
            auroc(&n?, &p?)
        };
        Some(ComponentAuroc {
            expert_only: by(&|s| s.confidences.map(|c| c.expert))?,
            auxiliary_only: by(&|s| s.confidences.map(|c| -c.auxiliary))?,
            ensemble: by(&|s| Some(s.suspicion))?,
        })
    }
}

/// The figures of docs/design.md §3.5 for one (model, attack) pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub auroc: Option<f64>,
    /// M correct / N_clean.
    pub clean_accuracy: f64,
    /// (M correct ∧ accepted) / N_clean.
    pub clean_accuracy_defended: f64,
    /// (true ≠ target ∧ M(x̃) = target) / N(true ≠ target).
    pub attack_success_rate: f64,
    /// (true ≠ target ∧ M(x̃) = target ∧ accepted) / N(true ≠ target).
    pub attack_success_rate_defended: f64,
    /// Rejected among clean frames M classifies correctly.
    pub clean_fpr: f64,
    /// Rejected among all clean frames.
    pub clean_rejection_rate: f64,
    /// The highest rejected share of one true class's correctly classified
    /// clean frames, and that class (per-class thresholds move it).
    pub worst_class_fpr: f64,
    pub worst_class: u32,
    pub threshold: f32,
    pub target: u32,
    pub n_clean: usize,
    pub n_triggered: usize,
    /// Triggered frames whose true class is not the target.
    pub n_triggered_nontarget: usize,
}

impl Evaluation {
    /// Computes every figure from scored clean and triggered frames;
    /// `threshold` is reported as given (in the detector's own units).
    pub fn compute(clean: &[Scored], triggered: &[Scored], target: u32, threshold: f32) -> Result<Evaluation> {
        if clean.is_empty() {
            return Err(Error::Invalid("evaluation needs at least one clean frame".into()));
        }
        let ratio = |num: usize, den: usize| if den == 0 { 0.0 } else { num as f64 / den as f64 };
        let (correct, hits) = roc_sides(clean, triggered, target);
        let nontarget = triggered.iter().filter(|f| f.label != target).count();
        let negatives: Vec<f32> = correct.iter().map(|f| f.suspicion).collect();
        let positives: Vec<f32> = hits.iter().map(|f| f.suspicion).collect();
        let mut per_class = std::collections::BTreeMap::<u32, (usize, usize)>::new();
        for f in &correct {
            let e = per_class.entry(f.label).or_default();
            (e.0, e.1) = (e.0 + 1, e.1 + usize::from(!f.accepted));
        }
        let (worst_class, worst_class_fpr) = per_class
            .iter()
            .map(|(&label, &(n, rejected))| (label, ratio(rejected, n)))
            .fold((0, 0.0), |best, c| if c.1 > best.1 { c } else { best });
        Ok(Evaluation {
            auroc: auroc(&negatives, &positives),
            clean_accuracy: ratio(correct.len(), clean.len()),
            clean_accuracy_defended: ratio(correct.iter().filter(|f| f.accepted).count(), clean.len()),
            attack_success_rate: ratio(hits.len(), nontarget),
            attack_success_rate_defended: ratio(hits.iter().filter(|f| f.accepted).count(), nontarget),
            clean_fpr: ratio(correct.iter().filter(|f| !f.accepted).count(), correct.len()),
            clean_rejection_rate: ratio(clean.iter().filter(|f| !f.accepted).count(), clean.len()),
            worst_class_fpr,
            worst_class,
            threshold,
            target,
            n_clean: clean.len(),
            n_triggered: triggered.len(),
            n_triggered_nontarget: nontarget,
        })
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let pct = |v: f64| format!("{:6.2} %", 100.0 * v);
        let auroc = self.auroc.map_or("   n/a".to_string(), |a| format!("{a:.4}"));
        [
            "                       without guard   with guard".to_string(),
            format!("clean accuracy (CA)       {}    {}", pct(self.clean_accuracy), pct(self.clean_accuracy_defended)),
            format!(
                "attack success (ASR)      {}    {}",
                pct(self.attack_success_rate),
                pct(self.attack_success_rate_defended)
            ),
            format!("AUROC                     {auroc}"),
            format!(
                "clean FPR (realised)      {}   of correctly classified clean frames (threshold {:.4e})",
                pct(self.clean_fpr),
                self.threshold
            ),
            format!("clean frames rejected     {}   of all clean frames", pct(self.clean_rejection_rate)),
            format!("worst class FPR           {}   (class {})", pct(self.worst_class_fpr), self.worst_class),
            format!(
                "frames                    {} clean, {} triggered ({} not of target class {})",
                self.n_clean, self.n_triggered, self.n_triggered_nontarget, self.target
            ),
        ]
        .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_ties_half_and_orders() {
        assert_eq!(auroc(&[0.0, 1.0], &[2.0, 3.0]), Some(1.0));
        assert_eq!(auroc(&[2.0, 3.0], &[0.0, 1.0]), Some(0.0));
        assert_eq!(auroc(&[1.0], &[1.0]), Some(0.5));
        // pos {1, 3} vs neg {0, 1, 2}: pairs won 1 + 0.5 + 0 + 1+1+1 = 4.5 of 6
        assert_eq!(auroc(&[0.0, 1.0, 2.0], &[1.0, 3.0]), Some(0.75));
        assert_eq!(auroc(&[], &[1.0]), None);
    }

    #[test]
    fn evaluation_follows_the_definitions() {
        let v = |class: usize, score: f32| Verdict {
            class,
            confidences: Confidences { expert: 0.5, auxiliary: 0.5 },
            score,
            accepted: score >= 1.0,
        };
        struct Labelled {
            label: u32,
            verdict: Verdict,
        }
        let clean = [
            Labelled { label: 1, verdict: v(1, 5.0) },
            Labelled { label: 2, verdict: v(2, 0.5) }, // correct but rejected
            Labelled { label: 3, verdict: v(4, 5.0) }, // wrong
            Labelled { label: 0, verdict: v(0, 6.0) },
        ];
        let triggered = [
            Labelled { label: 1, verdict: v(0, 0.1) }, // attack hit, rejected
            Labelled { label: 2, verdict: v(0, 2.0) }, // attack hit, accepted
            Labelled { label: 3, verdict: v(3, 4.0) }, // attack missed
            Labelled { label: 0, verdict: v(0, 0.1) }, // target class: excluded
        ];
        let scored = |v: &[Labelled]| v.iter().map(|l| Scored::from_verdict(l.label, &l.verdict)).collect::<Vec<_>>();
        let e = Evaluation::compute(&scored(&clean), &scored(&triggered), 0, 1.0).unwrap();
        assert_eq!(e.clean_accuracy, 0.75);
        assert_eq!(e.clean_accuracy_defended, 0.5);
        assert!((e.attack_success_rate - 2.0 / 3.0).abs() < 1e-12);
        assert!((e.attack_success_rate_defended - 1.0 / 3.0).abs() < 1e-12);
        assert!((e.clean_fpr - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(e.n_triggered_nontarget, 3);
        // positives {0.1, 2.0} vs negatives {5, 0.5, 6} on -score: 0.1 beats all 3, 2.0 beats 2
        assert!((e.auroc.unwrap() - 5.0 / 6.0).abs() < 1e-12);
        // All four frames share c_B = c_A = 0.5: each component alone is a coin flip.
        let parts = ComponentAuroc::compute(&scored(&clean), &scored(&triggered), 0).unwrap();
        assert_eq!((parts.expert_only, parts.auxiliary_only), (0.5, 0.5));
        assert_eq!(parts.ensemble, e.auroc.unwrap());
    }

    #[test]
    fn roc_curve_runs_corner_to_corner_and_matches_auroc() {
        let (neg, pos) = ([0.0f32, 1.0, 2.0], [1.0f32, 3.0]);
        let curve = roc_curve(&neg, &pos);
        assert_eq!(curve.first(), Some(&(0.0, 0.0)));
        assert_eq!(curve.last(), Some(&(1.0, 1.0)));
        // Trapezoids under the curve give the same area as the rank statistic.
        let area: f64 = curve.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum();
        assert!((area - auroc(&neg, &pos).unwrap()).abs() < 1e-12, "{area}");
    }
}
