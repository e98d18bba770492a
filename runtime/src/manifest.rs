//! `manifest.json`: everything the runtime needs to rebuild the decision the
//! converter calibrated, and the provenance a deployer needs to trust it
//! (docs/design.md §5).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::camera::CameraPreprocessing;
use crate::{Error, FrameShape, Normalization, Result, ScoreMode};

/// Bumped whenever a field changes meaning; the runtime refuses other versions.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub input: InputSpec,
    pub normalization: Normalization,
    /// How camera frames of other sizes and formats become the input
    /// (bundles written before it had none: the defaults).
    #[serde(default)]
    pub camera: CameraPreprocessing,
    /// Class names, one per output logit.
    pub classes: Vec<String>,
    pub precision: Precision,
    /// Activation scales of the int8 layers; present exactly when `precision` is int8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<Int8Scales>,
    pub decision: Decision,
    pub plans: Plans,
    pub source_model: FileDigest,
    /// Clean labelled frames kept for run-time detectors such as STRIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_frames: Option<CleanFrames>,
    pub fine_tune: FineTuneRecord,
    /// What the backdoor scan found about the model itself (absent when the
    /// converter did not scan it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanRecord>,
    /// Tool and version that wrote the bundle.
    pub created_by: String,
}

/// Shape and layout of one input frame; the batch axis is symbolic in the plans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub shape: FrameShape,
    /// Tensor layout the plans take; only "NCHW".
    pub layout: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    /// f16 weights and arithmetic inside the plans, f32 input and logits.
    /// Pays off on ARMv8.2+ (Pi 5, Jetson Orin); x86 runs f16 through slow
    /// generic kernels.
    F16,
    /// f32 plans whose convolutions and dense layers badexpert's kernels run
    /// in int8 (`badexpert_kernels::int8`), with the activation scales the
    /// converter calibrated on clean frames ([`Int8Scales`]).
    Int8,
}

/// Per-layer activation scales of each plan of an int8 bundle
/// ([`crate::quantization::calibrate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Int8Scales {
    /// Clean frames the ranges were measured on.
    pub frames: usize,
    pub model: badexpert_kernels::ActivationScales,
    pub expert: badexpert_kernels::ActivationScales,
    pub auxiliary: badexpert_kernels::ActivationScales,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!("unknown precision {s:?} (f32, f16 or int8)")),
        }
    }
}

/// The calibrated decision rule: reject when score < the threshold of the
/// class M assigns ([`Decision::threshold_for`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub score: ScoreMode,
    pub gamma: f32,
    /// The threshold of every class but [`Decision::target`]'s.
    pub threshold: f32,
    /// False-positive rate the thresholds were chosen for (over all classes).
    pub target_fpr: f64,
    /// Rate realised on the calibration split.
    pub calibration_fpr: f64,
    /// Clean, correctly classified frames the threshold was chosen on.
    pub calibration_size: usize,
    /// A threshold of its own for the backdoor's suspected target label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetThreshold>,
    /// The calibration frames' scores, ascending: the reference of the
    /// stream alarm's p-values ([`crate::alarm`]); empty in bundles written
    /// before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calibration_scores: Vec<f32>,
}

/// An all-to-one backdoor succeeds only on frames M assigns to its target
/// label, so a known target gets a share of the false-positive budget of its
/// own (docs/design.md §9): its frames are judged against `threshold`, the
/// other classes against [`Decision::threshold`], each calibrated on its own
/// classes' frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetThreshold {
    pub label: usize,
    pub threshold: f32,
    /// Share of the false-positive budget spent on the target's frames.
    pub fpr_share: f64,
    /// Where the label came from: the scan's verdict or the user.
    pub source: String,
    /// Calibration frames of the target class (correctly classified).
    pub calibration_size: usize,
}

impl TargetThreshold {
    /// The threshold a frame of `class` must reach: `target`'s own where
    /// `class` is its label, else `others` (the one rule for the guard and
    /// its calibration).
    pub fn threshold_for(target: Option<&TargetThreshold>, others: f32, class: usize) -> f32 {
        match target {
            Some(t) if t.label == class => t.threshold,
            _ => others,
        }
    }
}

impl Decision {
    /// A rule not calibrated yet: τ 0, no target label, no calibration scores.
    pub fn uncalibrated(score: ScoreMode, gamma: f32, target_fpr: f64) -> Decision {
        Decision {
            score,
            gamma,
            threshold: 0.0,
            target_fpr,
            calibration_fpr: 0.0,
            calibration_size: 0,
            target: None,
            calibration_scores: Vec::new(),
        }
    }

    /// One line for people: the thresholds and what they were chosen for.
    pub fn summary(&self, classes: &[String]) -> String {
        let head = format!(
            "decision: reject when the score is below the threshold; chosen for {:.2}% of clean frames, {:.2}% realised on {} calibration frames",
            100.0 * self.target_fpr,
            100.0 * self.calibration_fpr,
            self.calibration_size
        );
        match &self.target {
            None => format!("{head}; threshold {:.4e} for every class", self.threshold),
            Some(t) => format!(
                "{head}; threshold {:.4e} for the suspected target label {} ({}, {}; {:.0}% of the budget over its {} frames), {:.4e} for the other classes",
                t.threshold,
                t.label,
                classes.get(t.label).map_or("?", String::as_str),
                t.source,
                100.0 * t.fpr_share,
                t.calibration_size,
                self.threshold
            ),
        }
    }

    /// The threshold a frame M assigns to `class` must reach.
    pub fn threshold_for(&self, class: usize) -> f32 {
        TargetThreshold::threshold_for(self.target.as_ref(), self.threshold, class)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plans {
    /// The suspect model M.
    pub model: FileDigest,
    /// The backdoor expert B.
    pub expert: FileDigest,
    /// The auxiliary model M′.
    pub auxiliary: FileDigest,
}

/// A file (relative to the bundle) and its sha256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    pub file: String,
    pub sha256: String,
}

/// IDX images and labels of clean frames stored in the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanFrames {
    pub images: FileDigest,
    pub labels: FileDigest,
}

/// How B and M′ were made, so a result can be reproduced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FineTuneRecord {
    pub expert: TrainingRecord,
    pub auxiliary: TrainingRecord,
    /// Clean reserve given to the converter.
    pub reserve_size: usize,
    /// Part of it used to fine-tune.
    pub fit_size: usize,
    /// Part held out to choose automatic rates on (0 when both were fixed).
    #[serde(default)]
    pub selection_size: usize,
    /// Part held out for calibration (never seen by fine-tuning).
    pub holdout_size: usize,
    pub seed: u64,
    /// Seed of the reserve split when it differs from `seed`'s (absent: `seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
    /// libtorch device the fine-tunes ran on.
    pub device: String,
    /// BatchNorms restored for fine-tuning after convolutions that had none
    /// (a folded export) and folded back into the plans.
    #[serde(default)]
    pub restored_norms: usize,
}

/// Hyper-parameters of one fine-tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    pub optimizer: String,
    pub learning_rate: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub weight_decay: f64,
    /// Epochs after which the rate is multiplied by `lr_decay`.
    pub lr_milestones: Vec<usize>,
    pub lr_decay: f64,
    /// `cosine` for half a cosine from the rate toward 0 over the epochs
    /// (milestones then empty); absent for the stepwise schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_schedule: Option<String>,
    /// Fine-tunes at this rate averaged into the model (`--aux-soup`);
    /// absent for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soup: Option<usize>,
    pub labels: String,
    pub augmentation: String,
    /// Clean accuracy on the held-out split after training.
    pub holdout_accuracy: f64,
    /// Every rate tried when the rate was chosen automatically, in order,
    /// with why it was kept or passed over; empty for a fixed rate.
    #[serde(deserialize_with = "read_rate_search")]
    pub rate_search: Vec<RateTrial>,
}

/// The verdict of a clean-unlearning scan (EBYD, docs/design.md §8): whether
/// the model carries a backdoor, and the label it pushes frames to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRecord {
    /// `score ≥ threshold` and at least one run exposed the model.
    pub backdoored: bool,
    /// The suspected target label; `None` when the verdict is clean.
    pub target: Option<usize>,
    /// The label most held-out frames go to over all runs, and its share of
    /// the mean histogram; with no run (the trigger inversion decided alone),
    /// the smallest inverted mask's label and 0.
    pub consensus: usize,
    pub target_share: f64,
    /// Fraction of the runs whose own top label is the consensus label.
    pub agreement: f64,
    pub score: f64,
    pub threshold: f64,
    /// How `score` is computed from the runs.
    pub score_rule: String,
    /// Mean over the runs of the fraction of held-out frames sent to each class.
    pub histogram: Vec<f64>,
    /// Runs whose held-out clean accuracy fell below `floor` within the budget.
    pub exposed_runs: usize,
    pub runs: Vec<UnlearningRun>,
    /// Adam's rate for the gradient ascent.
    pub learning_rate: f64,
    /// Held-out clean accuracy below which a run counts as exposed and stops.
    pub floor: f64,
    /// The step budget of each run.
    pub max_steps: usize,
    /// Where each run is read: at this multiple of its collapse step.
    pub read_after: f64,
    pub fit_size: usize,
    pub holdout_size: usize,
    /// Wall time of the whole scan.
    pub seconds: f64,
    /// Trigger inversion on the model as given (absent when not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inversion: Option<TriggerInversion>,
}

/// Neural Cleanse's trigger inversion (docs/design.md §8): per label, the
/// smallest mask that stamps clean frames of other classes into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerInversion {
    /// The label with the smallest mask.
    pub label: usize,
    /// How many robust standard deviations (1.4826 × MAD) that mask lies
    /// below the median mask, in log space.
    pub anomaly: f64,
    /// Per label, the smallest mask (mean over the frame, in [0, 1]) that
    /// sent the goal's share of a batch to it; 1 when none did.
    pub mask_norms: Vec<f64>,
    /// Per label, the share of a batch that mask sent there.
    pub success: Vec<f64>,
    /// Optimisation steps per label.
    pub steps: usize,
    pub seconds: f64,
}

/// One clean-unlearning run (a seed: its own frame order and augmentations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlearningRun {
    pub seed: u64,
    /// exposed (accuracy fell below the floor), unexposed (the budget ran
    /// out first) or diverged (the loss stopped being finite before the
    /// collapse; not counted).
    pub outcome: String,
    /// Gradient-ascent steps to the collapse (or to the end of the budget).
    pub steps: usize,
    /// Held-out clean accuracy before the first step and at the collapse.
    pub start_accuracy: f64,
    pub stop_accuracy: f64,
    /// Held-out frames predicted as each class where the verdict reads the run.
    pub histogram: Vec<usize>,
    pub top: usize,
    pub top_share: f64,
    /// The held-out predictions at the collapse and at later multiples of
    /// its step count (the ascent goes on past the collapse).
    pub snapshots: Vec<Snapshot>,
}

/// Held-out predictions of one run at one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub step: usize,
    pub accuracy: f64,
    /// `confusion[y][k]`: held-out frames of class y predicted as k.
    pub confusion: Vec<Vec<usize>>,
}

impl Snapshot {
    /// Frames predicted as each class.
    pub fn histogram(&self) -> Vec<usize> {
        let k = self.confusion.first().map_or(0, Vec::len);
        (0..k).map(|c| self.confusion.iter().map(|row| row.get(c).copied().unwrap_or(0)).sum()).collect()
    }
}

/// One learning rate an automatic search tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateTrial {
    pub learning_rate: f64,
    /// Held-out clean accuracy at the end of training; `None` when it diverged.
    pub holdout_accuracy: Option<f64>,
    /// "kept", or the reason the rate was passed over.
    pub outcome: String,
}

/// Bundles written before the outcome was recorded hold `[rate, accuracy]` pairs.
fn read_rate_search<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<RateTrial>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Recorded {
        Pair(f64, f64),
        Trial(RateTrial),
    }
    Ok(Vec::<Recorded>::deserialize(d)?
        .into_iter()
        .map(|r| match r {
            Recorded::Pair(learning_rate, accuracy) => {
                RateTrial { learning_rate, holdout_accuracy: Some(accuracy), outcome: String::new() }
            }
            Recorded::Trial(t) => t,
        })
        .collect())
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn read(path: &Path) -> Result<Manifest> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Manifest { path: path.to_owned(), reason: e.to_string() })?;
        manifest.validate().map_err(|reason| Error::Manifest { path: path.to_owned(), reason })?;
        Ok(manifest)
    }

    /// Writes the manifest as pretty JSON, and its unsigned seal
    /// ([`crate::seal::Seal`]) beside it: every writer seals what it writes.
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(path, json + "\n").map_err(|e| Error::io(path, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::seal::Seal::of(self)?.write(dir)
    }

    /// Checks the values the runtime relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (this runtime reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.input.layout != "NCHW" {
            return Err(format!("input.layout {:?} is not supported (only NCHW)", self.input.layout));
        }
        if self.input.shape.is_empty() {
            return Err("input.shape has no pixels".into());
        }
        self.normalization.validate(self.input.shape.channels).map_err(|e| e.to_string())?;
        if self.classes.len() < 2 {
            return Err(format!("classes lists {} classes, a classifier needs at least 2", self.classes.len()));
        }
        let d = &self.decision;
        if !d.threshold.is_finite() {
            return Err(format!("decision.threshold {} is not finite", d.threshold));
        }
        if !(d.gamma.is_finite() && d.gamma > 0.0) {
            return Err(format!("decision.gamma {} must be positive", d.gamma));
        }
        if let Some(s) = d.calibration_scores.iter().find(|s| !s.is_finite()) {
            return Err(format!("decision.calibration_scores holds {s}, not a finite score"));
        }
        if let Some(t) = &d.target {
            if t.label >= self.classes.len() {
                return Err(format!(
                    "decision.target.label {} is not one of the {} classes",
                    t.label,
                    self.classes.len()
                ));
            }
            if !t.threshold.is_finite() {
                return Err(format!("decision.target.threshold {} is not finite", t.threshold));
            }
            if !(t.fpr_share > 0.0 && t.fpr_share < 1.0) {
                return Err(format!("decision.target.fpr_share {} must be in (0, 1)", t.fpr_share));
            }
        }
        match (&self.int8, self.precision) {
            (None, Precision::Int8) => return Err("precision is int8 but the manifest has no int8 scales".into()),
            (Some(_), p) if p != Precision::Int8 => return Err(format!("int8 scales in a {p:?} manifest")),
            (Some(scales), _) => {
                let all = [&scales.model, &scales.expert, &scales.auxiliary];
                if let Some((name, s)) = all.iter().flat_map(|t| t.iter()).find(|(_, s)| !(s.is_finite() && **s > 0.0))
                {
                    return Err(format!("int8 scale {s} of layer {name:?} is not a positive number"));
                }
            }
            _ => {}
        }
        if let Some(scan) = &self.scan {
            scan.validate(self.classes.len())?;
        }
        let files = [
            ("plans.model", &self.plans.model),
            ("plans.expert", &self.plans.expert),
            ("plans.auxiliary", &self.plans.auxiliary),
        ];
        let clean = self
            .clean_frames
            .iter()
            .flat_map(|c| [("clean_frames.images", &c.images), ("clean_frames.labels", &c.labels)]);
        for (name, f) in files.into_iter().chain(clean) {
            let p = Path::new(&f.file);
            if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(format!("{name}.file {:?} must be a path inside the bundle", f.file));
            }
        }
        Ok(())
    }
}

impl ScanRecord {
    /// Checks that the labels it names exist among `classes` classes.
    pub fn validate(&self, classes: usize) -> std::result::Result<(), String> {
        if self.histogram.len() != classes {
            return Err(format!("scan.histogram has {} classes, the model {classes}", self.histogram.len()));
        }
        match self.target {
            Some(t) if t >= classes => Err(format!("scan.target {t} is not one of the {classes} classes")),
            Some(_) if !self.backdoored => Err("scan.target is set but the verdict is clean".into()),
            None if self.backdoored => Err("scan.backdoored is true but names no target".into()),
            _ if self.consensus >= classes => {
                Err(format!("scan.consensus {} is not one of the {classes} classes", self.consensus))
            }
            _ => match &self.inversion {
                Some(inv)
                    if inv.label >= classes || inv.mask_norms.len() != classes || inv.success.len() != classes =>
                {
                    Err(format!(
                        "scan.inversion names label {} with {} masks and {} successes; the model has {classes} classes",
                        inv.label,
                        inv.mask_norms.len(),
                        inv.success.len()
                    ))
                }
                _ => Ok(()),
            },
        }
    }

    /// The verdict in one line, with labels named by `classes`.
    pub fn summary(&self, classes: &[String]) -> String {
        let r = self;
        let name = |k: usize| classes.get(k).map_or_else(|| k.to_string(), |n| n.clone());
        let runs = r.runs.len();
        let median_steps = {
            let mut s: Vec<usize> = r.runs.iter().map(|r| r.steps).collect();
            s.sort_unstable();
            s.get(s.len() / 2).copied().unwrap_or(0)
        };
        if let Some(inv) = &r.inversion {
            let head = match r.target {
                Some(t) => format!("scan: BACKDOORED — suspected target label {}", name(t)),
                None => "scan: no backdoor found — no label's inverted trigger is an outlier".into(),
            };
            return format!(
                "{head}; smallest trigger mask: label {} ({:.2}% of the frame), anomaly {:.2} {} threshold {:.2}; {}; {:.1} s",
                name(inv.label),
                100.0 * inv.mask_norms.get(inv.label).copied().unwrap_or(1.0),
                r.score,
                if r.score >= r.threshold { "≥" } else { "<" },
                r.threshold,
                if runs == 0 {
                    "no unlearning run needed".to_string()
                } else {
                    format!(
                        "unlearning runs' consensus {} ({:.1}% of held-out frames, {} of {runs} run(s) exposed)",
                        name(r.consensus),
                        100.0 * r.target_share,
                        r.exposed_runs
                    )
                },
                r.seconds
            );
        }
        let head = if r.exposed_runs == 0 {
            format!(
                "scan: no backdoor found — no run unlearned the clean task within {} steps (held-out accuracy never fell below {:.0}%), so the scan has no evidence either way",
                r.max_steps,
                100.0 * r.floor
            )
        } else if r.backdoored {
            format!("scan: BACKDOORED — suspected target label {}", name(r.consensus))
        } else {
            format!(
                "scan: no backdoor found — no label is consistent enough across runs (most often {})",
                name(r.consensus)
            )
        };
        format!(
            "{head}; label {} takes {:.1}% of held-out frames over {runs} run(s), {} of {runs} runs' top label; score {:.3} {} threshold {:.3}; {} run(s) exposed, median {median_steps} steps; {:.1} s",
            name(r.consensus),
            100.0 * r.target_share,
            r.runs.iter().filter(|run| run.top == r.consensus).count(),
            r.score,
            if r.score >= r.threshold { "≥" } else { "<" },
            r.threshold,
            r.exposed_runs,
            r.seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_searches_of_older_bundles_still_read() {
        let old: TrainingRecord = serde_json::from_str(
            r#"{"optimizer":"adam","learning_rate":1e-4,"epochs":1,"batch_size":128,"weight_decay":0.0,
                "lr_milestones":[],"lr_decay":1.0,"labels":"x","augmentation":"none","holdout_accuracy":0.2,
                "rate_search":[[1e-5,0.8],[1e-4,0.2]]}"#,
        )
        .unwrap();
        assert_eq!(
            old.rate_search[1],
            RateTrial { learning_rate: 1e-4, holdout_accuracy: Some(0.2), outcome: String::new() }
        );
        let mut new = old.clone();
        new.rate_search[0].outcome = "too small: still classifies like M".into();
        new.rate_search[1].holdout_accuracy = None;
        let back: TrainingRecord = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }

    #[test]
    fn a_target_threshold_applies_to_its_label_only_and_is_validated() {
        let text = include_str!("../../models/badnet-fmnist/bundle/manifest.json");
        let mut m: Manifest = serde_json::from_str(text).unwrap();
        assert_eq!(m.decision.target, None, "the shipped bundle has one threshold");
        assert_eq!(m.decision.threshold_for(0), m.decision.threshold);
        m.decision.target = Some(TargetThreshold {
            label: 0,
            threshold: m.decision.threshold + 1.0,
            fpr_share: 0.7,
            source: "test".into(),
            calibration_size: 40,
        });
        m.validate().unwrap();
        assert_eq!(m.decision.threshold_for(0), m.decision.threshold + 1.0);
        assert_eq!(m.decision.threshold_for(1), m.decision.threshold);
        let back: Manifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.decision, m.decision);
        for (edit, needle) in [
            ((10, 0.0, 0.7), "decision.target.label 10"),
            ((0, f32::NAN, 0.7), "decision.target.threshold NaN"),
            ((0, 0.0, 1.0), "decision.target.fpr_share 1"),
        ] {
            let mut bad = m.clone();
            let t = bad.decision.target.as_mut().unwrap();
            (t.label, t.threshold, t.fpr_share) = edit;
            let err = bad.validate().unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
