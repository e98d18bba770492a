//! Side-by-side evaluation of detectors on clean and triggered frames: every
//! detector is turned into [`Scored`] frames and measured by
//! [`Evaluation::compute`], with its per-frame cost.

use std::time::Instant;

use serde::Serialize;

use crate::baselines::{ScaleUp, Strip};
use badexpert_runtime::threshold::threshold_at_fpr;

use crate::metrics::{ComponentAuroc, Evaluation, Scored};
use badexpert_runtime::{Error, FrameSet, GuardBundle, Result};
use badexpert_runtime::{Guard, PixelLayout, Verdict};

/// The detectors that can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    BadExpert,
    Strip,
    ScaleUp,
}

impl std::str::FromStr for DetectorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "badexpert" => Ok(DetectorKind::BadExpert),
            "strip" => Ok(DetectorKind::Strip),
            "scale-up" | "scale_up" => Ok(DetectorKind::ScaleUp),
            _ => Err(format!("unknown detector {s:?} (badexpert, strip, scale-up)")),
        }
    }
}

impl std::fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DetectorKind::BadExpert => "badexpert",
            DetectorKind::Strip => "strip",
            DetectorKind::ScaleUp => "scale_up",
        })
    }
}

/// Per-frame cost of a detector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    pub model_evaluations: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub frames: usize,
}

impl Cost {
    fn from_latencies(model_evaluations: usize, mut latencies: Vec<f64>) -> Cost {
        latencies.sort_by(|a, b| a.total_cmp(b));
        let pick =
            |q: f64| latencies.get(((latencies.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(0.0);
        Cost {
            model_evaluations,
            mean_us: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
            p50_us: pick(0.5),
            p99_us: pick(0.99),
            frames: latencies.len(),
        }
    }
}

/// One detector's figures and cost.
#[derive(Debug, Clone, Serialize)]
pub struct DetectorReport {
    pub detector: DetectorKind,
    pub evaluation: Evaluation,
    /// BaDExpert only: AUROC of B alone, M′ alone and both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<ComponentAuroc>,
    pub cost: Cost,
    /// The frames as scored, for ROC curves and histograms.
    #[serde(skip)]
    pub clean: Vec<Scored>,
    #[serde(skip)]
    pub triggered: Vec<Scored>,
}

/// A baseline's per-frame suspicion (higher = more suspicious).
trait Suspicion {
    fn suspicion(&mut self, frame: &[u8]) -> Result<f32>;
}

impl Suspicion for Strip {
    fn suspicion(&mut self, frame: &[u8]) -> Result<f32> {
        self.score(frame)
    }
}

impl Suspicion for ScaleUp {
    fn suspicion(&mut self, frame: &[u8]) -> Result<f32> {
        self.score(frame)
    }
}

fn guard_all(guard: &mut Guard, set: &FrameSet, latencies: &mut Vec<f64>) -> Result<Vec<Verdict>> {
    let mut out = Vec::with_capacity(set.len());
    for i in 0..set.len() {
        let start = Instant::now();
        let verdict =
            guard.guard(set.frame(i), PixelLayout::Chw).map_err(|e| Error::Invalid(format!("frame {i}: {e}")))?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
        out.push(verdict);
    }
    Ok(out)
}

/// Evaluates BaDExpert (always first) and the requested baselines. Baselines
/// choose their threshold at the bundle's target FPR on the bundle's stored
/// clean frames (those M classifies correctly), as BaDExpert's was chosen on
/// held-out clean frames, so every FPR is out of sample.
pub fn evaluate_detectors(
    bundle: &GuardBundle,
    guard: &mut Guard,
    clean: &FrameSet,
    triggered: &FrameSet,
    target: u32,
    detectors: &[DetectorKind],
    strip_n: usize,
) -> Result<Vec<DetectorReport>> {
    let m = bundle.manifest();
    let (clean_labels, trig_labels) = (clean.require_labels("clean")?, triggered.require_labels("triggered")?);
    let mut latencies = Vec::with_capacity(clean.len() + triggered.len());
    let clean_v = guard_all(guard, clean, &mut latencies)?;
    let trig_v = guard_all(guard, triggered, &mut latencies)?;
    let scored = |labels: &[u32], v: &[Verdict]| -> Vec<Scored> {
        v.iter().zip(labels).map(|(v, &l)| Scored::from_verdict(l, v)).collect()
    };
    let (c, t) = (scored(clean_labels, &clean_v), scored(trig_labels, &trig_v));
    let mut reports = vec![DetectorReport {
        detector: DetectorKind::BadExpert,
        evaluation: Evaluation::compute(&c, &t, target, m.decision.threshold)?,
        components: ComponentAuroc::compute(&c, &t, target),
        cost: Cost::from_latencies(3, latencies),
        clean: c,
        triggered: t,
    }];
    let baselines: Vec<DetectorKind> = detectors.iter().copied().filter(|d| *d != DetectorKind::BadExpert).collect();
    if baselines.is_empty() {
        return Ok(reports);
    }
    let stored = badexpert_frames::clean_frames(bundle)?.ok_or_else(|| {
        Error::Invalid(
            "STRIP and SCALE-UP need clean frames at run time; this bundle stores none (convert with --store-clean N)"
                .into(),
        )
    })?;
    let stored_classes: Vec<usize> = guard_all(guard, &stored, &mut Vec::new())?.iter().map(|v| v.class).collect();
    for kind in baselines {
        let mut detector: Box<dyn Suspicion> = match kind {
            DetectorKind::Strip => Box::new(Strip::new(bundle, stored.clone(), strip_n)?),
            _ => Box::new(ScaleUp::new(bundle)?),
        };
        let evaluations = if kind == DetectorKind::Strip { strip_n } else { ScaleUp::FACTORS.len() + 1 };
        let stored_labels = stored.require_labels("stored clean frames")?;
        let mut negated = Vec::new();
        for i in 0..stored.len() {
            if stored_classes[i] as u32 == stored_labels[i] {
                negated.push(-detector.suspicion(stored.frame(i))?);
            }
        }
        // Reject when suspicion > t, i.e. −suspicion < −t: BaDExpert's quantile rule.
        let t = threshold_at_fpr(&negated, m.decision.target_fpr)?;
        let mut latencies = Vec::new();
        let mut run = |set: &FrameSet, labels: &[u32], verdicts: &[Verdict]| -> Result<Vec<Scored>> {
            (0..set.len())
                .map(|i| {
                    let start = Instant::now();
                    let suspicion = detector.suspicion(set.frame(i))?;
                    latencies.push(start.elapsed().as_secs_f64() * 1e6);
                    Ok(Scored {
                        label: labels[i],
                        class: verdicts[i].class,
                        suspicion,
                        accepted: -suspicion >= t,
                        confidences: None,
                    })
                })
                .collect()
        };
        let c = run(clean, clean_labels, &clean_v)?;
        let tr = run(triggered, trig_labels, &trig_v)?;
        reports.push(DetectorReport {
            detector: kind,
            evaluation: Evaluation::compute(&c, &tr, target, -t)?,
            components: None,
            cost: Cost::from_latencies(evaluations, latencies),
            clean: c,
            triggered: tr,
        });
    }
    Ok(reports)
}

/// A markdown table of detectors side by side.
pub fn detector_table(reports: &[DetectorReport]) -> String {
    let mut table = crate::table::Table::new([
        "detector",
        "AUROC",
        "CA with detector",
        "ASR with detector",
        "clean FPR",
        "model runs/frame",
        "µs/frame",
    ]);
    for r in reports {
        let e = &r.evaluation;
        table.row([
            r.detector.to_string(),
            e.auroc.map_or("n/a".into(), |a| format!("{a:.4}")),
            format!("{:.2} %", 100.0 * e.clean_accuracy_defended),
            format!("{:.2} %", 100.0 * e.attack_success_rate_defended),
            format!("{:.2} %", 100.0 * e.clean_fpr),
            r.cost.model_evaluations.to_string(),
            format!("{:.0}", r.cost.mean_us),
        ]);
    }
    table.to_string()
}
