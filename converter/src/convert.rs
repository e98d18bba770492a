//! The whole host-side job: suspect ONNX model + clean reserve → guard bundle.
//!
//! 1. split the reserve (seeded) into three disjoint parts ([`ReserveSplit`]):
//!    fine-tuning, rate selection and calibration;
//! 2. fine-tune the backdoor expert B ([`crate::expert`]) and the auxiliary
//!    model M′ ([`crate::auxiliary`]) from fresh copies of M, choosing
//!    automatic rates on the selection part;
//! 3. export M, B and M′ as NNEF plans ([`crate::export`]);
//! 4. calibrate τ on the calibration part with the runtime ([`crate::calibration`]);
//! 5. write `manifest.json`.
//!
//! The bundle is assembled in a temporary directory beside the destination
//! and moved into place only when complete.

use std::path::{Path, PathBuf};

use tch::Device;

use badexpert_frames::{write_idx_images, write_idx_labels};
use badexpert_runtime::camera::CameraPreprocessing;
use badexpert_runtime::manifest::{
    CleanFrames, Decision, FileDigest, FineTuneRecord, Manifest, Plans, Precision, RateTrial, ScanRecord,
    TrainingRecord,
};
use badexpert_runtime::{sha256_file, FrameSet, Normalization, Preprocessor, ScoreMode};

use crate::augment::Augmentation;
use crate::auxiliary::AuxiliaryModel;
use crate::calibration::{calibrate, Calibration, TargetSplit};
use crate::expert::{BackdoorExpert, Expert};
use crate::export::{write_plan, AUXILIARY_PLAN, EXPERT_PLAN, MODEL_PLAN};
use crate::onnx::pb::ModelProto;
use crate::onnx::TchGraph;
use crate::output::{check_destination, BundleWriter, NewManifest};
use crate::scan::{scan, ScanOptions};
use crate::signing::SecretKey;
pub use crate::suspect::{
    check_model_fits_reserve, check_reserve_supports_guard, split_reserve, ReserveSplit, Suspect,
    MIN_ACCURACY_ABOVE_CHANCE, MIN_CLASS_SHARE,
};
use crate::suspect::{class_count, input_shape};
use crate::train::{accuracy, FineTuneContext, Progress, TrainConfig};
use crate::{Error, Result};

/// Files of the stored clean frames inside a bundle.
const CLEAN_IMAGES: &str = "clean-images-idx3-ubyte.gz";
const CLEAN_LABELS: &str = "clean-labels-idx1-ubyte.gz";

/// Everything `convert` can be told; `ConvertOptions::new` gives the paper's defaults.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The model's input normalisation (travels in the manifest).
    pub normalization: Normalization,
    /// How camera frames of other sizes and formats become the input (travels in the manifest).
    pub camera: CameraPreprocessing,
    /// Class names; `0..K` when absent.
    pub class_names: Option<Vec<String>>,
    /// Fraction of the reserve held out for calibration.
    pub holdout_fraction: f64,
    /// Fraction of the reserve held out to choose automatic rates on, apart
    /// from the calibration part ([`ReserveSplit`]); 0 (the default) judges
    /// them on the calibration part. Unused when both rates are fixed.
    pub selection_fraction: f64,
    pub target_fpr: f64,
    /// γ of the ensemble score (docs/design.md §3.3).
    pub gamma: f32,
    pub score: ScoreMode,
    /// Seed of the frame orders and augmentations, and of the reserve split
    /// unless `split_seed` is given.
    pub seed: u64,
    /// Seed of the reserve split alone: conversions that differ only in
    /// `seed` then fine-tune on the same frames in other orders and calibrate
    /// on the same held-out frames, so their guards can be compared or
    /// combined frame by frame.
    pub split_seed: Option<u64>,
    pub expert: BackdoorExpert,
    pub auxiliary: AuxiliaryModel,
    /// Training augmentation; `None` = random crop + horizontal flip.
    pub augmentation: Option<Augmentation>,
    pub device: Device,
    /// Replace an existing bundle at the destination.
    pub overwrite: bool,
    /// Clean held-out frames to store in the bundle for run-time detectors (STRIP); 0 = none.
    pub store_clean: usize,
    /// Arithmetic of the plans; the threshold is calibrated with them.
    pub precision: Precision,
    /// Give convolutions without BatchNorm (a folded export) a trainable one
    /// for fine-tuning, folded back at export ([`TchGraph::restore_normalization`]).
    pub restore_normalization: bool,
    /// After an automatic rate search judged on the calibration part, train B
    /// and M′ once more at the chosen rates on a new order of the fine-tuning
    /// frames and keep those ([`refit`]): no kept model was then chosen on the
    /// frames τ is calibrated on. Unused with a selection part or a fixed rate.
    pub refit: bool,
    /// Scan the model for a backdoor and its target label ([`crate::scan`])
    /// and record the verdict in the manifest; `None` skips the scan. Its
    /// device, augmentation and BatchNorm restoration follow this conversion's.
    pub scan: Option<ScanOptions>,
    /// Sign the bundle's seal with this key (devices holding its public key
    /// then load only bundles it signed).
    pub sign_key: Option<SecretKey>,
    /// Refuse a model whose held-out accuracy on the reserve is less than
    /// this fraction of the way from chance to perfect
    /// ([`check_model_fits_reserve`]; default [`MIN_ACCURACY_ABOVE_CHANCE`], 0 skips it).
    pub min_accuracy_above_chance: f64,
    /// Use this ONNX model as M′ instead of fine-tuning one: a repaired model
    /// the user already has (any model-repair defence's output), with M's
    /// input, normalisation and classes ([`supplied_auxiliary`]).
    pub auxiliary_model: Option<PathBuf>,
    /// Refuse a reserve with a class under this fraction of an even share
    /// ([`check_reserve_supports_guard`]; default [`MIN_CLASS_SHARE`]; 0
    /// accepts any reserve, even of one class).
    pub min_class_share: f64,
    /// The backdoor's suspected target label, given by the user (from an
    /// earlier `scan`, say); without it the scan's verdict names it when the
    /// scan runs and finds a backdoor.
    pub target_label: Option<usize>,
    /// Share of the false-positive budget spent on the target label's frames
    /// ([`calibrate`]); 0 keeps one threshold for every class.
    pub target_fpr_share: f64,
}

/// The share of the false-positive budget a known target label gets by
/// default: chosen on the zoo's development part (docs/zoo.md).
pub const TARGET_FPR_SHARE: f64 = 0.7;

impl ConvertOptions {
    pub fn new(normalization: Normalization) -> Self {
        ConvertOptions {
            normalization,
            camera: CameraPreprocessing::default(),
            class_names: None,
            holdout_fraction: 0.2,
            selection_fraction: 0.0,
            target_fpr: 0.01,
            gamma: 0.8,
            score: ScoreMode::Ensemble,
            seed: 0,
            split_seed: None,
            expert: BackdoorExpert::default(),
            auxiliary: AuxiliaryModel::default(),
            augmentation: None,
            device: Device::cuda_if_available(),
            overwrite: false,
            store_clean: 0,
            precision: Precision::F32,
            restore_normalization: true,
            refit: false,
            scan: None,
            sign_key: None,
            min_class_share: MIN_CLASS_SHARE,
            auxiliary_model: None,
            target_label: None,
            target_fpr_share: TARGET_FPR_SHARE,
            min_accuracy_above_chance: MIN_ACCURACY_ABOVE_CHANCE,
        }
    }
}

/// What a conversion produced.
pub struct Conversion {
    pub bundle: PathBuf,
    pub manifest: Manifest,
    pub calibration: Calibration,
    /// Held-out clean accuracy of M, B and M′ (B's should collapse, M′'s stay).
    pub model_accuracy: f64,
    pub expert_accuracy: f64,
    pub auxiliary_accuracy: f64,
    /// Every expert and auxiliary rate tried by an automatic search.
    pub expert_trials: Vec<RateTrial>,
    pub auxiliary_trials: Vec<RateTrial>,
    /// BatchNorms restored after convolutions that had none (see [`ConvertOptions::restore_normalization`]).
    pub restored_norms: usize,
    /// The fine-tuned models as libtorch graphs (e.g. to compare with the plans).
    pub expert: TchGraph,
    pub auxiliary: TchGraph,
    /// The backdoor scan's verdict, when [`ConvertOptions::scan`] asked for one.
    pub scan: Option<ScanRecord>,
}

/// Loads the user's M′ (`ConvertOptions::auxiliary_model`) and checks that
/// it takes M's frames and gives M's classes: the guard compares their
/// confidences class by class, so anything else would be silently wrong.
pub fn supplied_auxiliary(
    path: &Path,
    reserve: &FrameSet,
    classes: usize,
    pre: &Preprocessor,
    device: Device,
) -> Result<TchGraph> {
    let what = |e: Error| Error::Invalid(format!("auxiliary model {}: {e}", path.display()));
    let graph = TchGraph::load(path, device).map_err(what)?;
    input_shape(&graph, reserve).map_err(what)?;
    let theirs = class_count(&graph, reserve, pre).map_err(what)?;
    if theirs != classes {
        return Err(Error::Invalid(format!(
            "auxiliary model {} gives {theirs} classes, the model {classes}: M′ must classify into M's classes",
            path.display()
        )));
    }
    Ok(graph)
}

/// Where M′ came from: fine-tuned at a configuration, or the user's file
/// (its manifest record made when it was loaded).
enum AuxiliarySource {
    Trained(TrainConfig),
    Supplied(TrainingRecord),
}

/// The manifest's record of an M′ the user supplied: nothing was trained.
fn supplied_record(path: &Path, holdout_accuracy: f64) -> Result<TrainingRecord> {
    Ok(TrainingRecord {
        optimizer: "none".into(),
        learning_rate: 0.0,
        epochs: 0,
        batch_size: 0,
        weight_decay: 0.0,
        lr_milestones: Vec::new(),
        lr_decay: 1.0,
        lr_schedule: None,
        soup: None,
        labels: format!(
            "none: supplied by the user ({}, sha256 {})",
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            sha256_file(path)?
        ),
        augmentation: "none".into(),
        holdout_accuracy,
        rate_search: Vec::new(),
    })
}

/// Runs the whole conversion: read the model and split the reserve
/// ([`prepare`]), fine-tune B and M′ ([`fine_tune_experts`]), scan when asked
/// ([`scan_step`]), then write the bundle beside `out` and calibrate τ on it
/// ([`write_bundle`]) before moving it into place.
pub fn convert(
    model_path: &Path,
    reserve: &FrameSet,
    out: &Path,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<Conversion> {
    check_destination(out, opts.overwrite)?;
    let prepared = prepare(model_path, reserve, opts)?;
    let experts = fine_tune_experts(&prepared, reserve, opts, progress)?;
    let scan = scan_step(&prepared, opts)?;
    let writer = BundleWriter::new(out, opts.overwrite)?;
    let (manifest, calibration) = write_bundle(&writer, model_path, reserve, &prepared, &experts, &scan, opts)?;
    writer.finish(&manifest, opts.sign_key.as_ref())?;
    let Experts { expert, auxiliary, auxiliary_trials, auxiliary_accuracy, restored_norms, .. } = experts;
    Ok(Conversion {
        bundle: out.to_owned(),
        manifest,
        calibration,
        model_accuracy: prepared.model_accuracy,
        expert_accuracy: expert.holdout_accuracy,
        auxiliary_accuracy,
        expert_trials: expert.trials,
        auxiliary_trials,
        restored_norms,
        expert: expert.graph,
        auxiliary,
        scan,
    })
}

/// Step 1: the model read and checked against the reserve and the options,
/// and the reserve split.
struct Prepared {
    suspect: Suspect,
    class_names: Vec<String>,
    split: ReserveSplit,
    augmentation: Augmentation,
    /// M's accuracy on the frames rates are judged on.
    model_accuracy: f64,
}

fn prepare(model_path: &Path, reserve: &FrameSet, opts: &ConvertOptions) -> Result<Prepared> {
    if reserve.is_empty() {
        return Err(Error::Data("the clean reserve is empty".into()));
    }
    let labels = reserve.require_labels("the clean reserve")?;
    let suspect = Suspect::open(model_path, reserve, &opts.normalization, opts.device)?;
    let classes = suspect.classes;
    check_reserve_supports_guard(labels, classes, opts.min_class_share)?;
    let class_names = match &opts.class_names {
        Some(names) if names.len() != classes => {
            return Err(Error::Invalid(format!("{} class names given, the model has {classes} classes", names.len())))
        }
        Some(names) => names.clone(),
        None => (0..classes).map(|k| k.to_string()).collect(),
    };
    if let Some(label) = opts.target_label.filter(|&l| l >= classes) {
        return Err(Error::Invalid(format!("target label {label} is not one of the model's {classes} classes")));
    }
    if !(0.0..1.0).contains(&opts.target_fpr_share) {
        return Err(Error::Invalid(format!("target FPR share {} must be in [0, 1)", opts.target_fpr_share)));
    }
    let searches = opts.expert.rate.is_auto() || opts.auxiliary.rate.is_auto();
    let selection_fraction = if searches { opts.selection_fraction } else { 0.0 };
    let split =
        ReserveSplit::new(reserve, opts.holdout_fraction, selection_fraction, opts.split_seed.unwrap_or(opts.seed))?;
    let held_out = split.calibration.len();
    if ((held_out + 1) as f64 * opts.target_fpr) < 1.0 {
        return Err(Error::Data(format!(
            "a reserve of {} frames holds out {held_out} for calibration, too few for a {:.2}% false-positive rate (need ≥ {} held out)",
            reserve.len(),
            opts.target_fpr * 100.0,
            (1.0 / opts.target_fpr).ceil() - 1.0
        )));
    }
    debug_assert_eq!(split.fit.len() + split.selection.len() + held_out, labels.len());
    let augmentation = opts.augmentation.unwrap_or_else(|| Augmentation::standard(suspect.shape.height, true));
    let judged = split.judged();
    let model_accuracy = accuracy(&suspect.model, judged, judged.require_labels("the held-out frames")?, &suspect.pre)?;
    check_model_fits_reserve(model_accuracy, classes, opts.min_accuracy_above_chance)?;
    Ok(Prepared { suspect, class_names, split, augmentation, model_accuracy })
}

/// Step 2: B, and M′ with where it came from.
struct Experts {
    expert: Expert,
    auxiliary: TchGraph,
    auxiliary_source: AuxiliarySource,
    auxiliary_trials: Vec<RateTrial>,
    auxiliary_accuracy: f64,
    restored_norms: usize,
}

fn fine_tune_experts(
    p: &Prepared,
    reserve: &FrameSet,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<Experts> {
    let Suspect { source, pre, classes, .. } = &p.suspect;
    let (fit, holdout, judged) = (&p.split.fit, &p.split.calibration, p.split.judged());
    // Fresh copies of M to fine-tune, with BatchNorm restored from the fine-tuning split.
    let load = || -> Result<TchGraph> {
        let mut graph = TchGraph::from_proto(source.clone(), opts.device)?;
        if opts.restore_normalization {
            graph.restore_normalization(fit, pre)?;
        }
        Ok(graph)
    };
    let ctx = FineTuneContext {
        fresh: &load,
        fit,
        judged,
        classes: *classes,
        model_accuracy: p.model_accuracy,
        pre,
        augmentation: p.augmentation,
        progress,
    };
    // The searches judged the rates on the calibration part: with `refit`,
    // the chosen rates are trained afresh so that τ is calibrated on frames
    // no kept model was chosen on.
    let refit = opts.refit && p.split.selection.is_empty();
    let mut expert = opts.expert.make(&ctx, opts.seed)?;
    // M′: fine-tuned, or the user's own model.
    let made_aux = match &opts.auxiliary_model {
        None => Ok(opts.auxiliary.make(&ctx, opts.seed.wrapping_add(1))?),
        Some(path) => Err(path),
    };
    if refit && opts.expert.rate.is_auto() {
        expert = opts.expert.refit(&ctx, holdout, expert, opts.seed)?;
    }
    let (auxiliary, auxiliary_source, auxiliary_trials, auxiliary_accuracy) = match made_aux {
        Ok(mut made) => {
            if refit && opts.auxiliary.rate.is_auto() {
                made = opts.auxiliary.refit(&ctx, holdout, made)?;
            }
            made = opts.auxiliary.soup(&ctx, made, opts.seed.wrapping_add(1))?;
            (made.graph, AuxiliarySource::Trained(made.config), made.trials, made.holdout_accuracy)
        }
        Err(path) => {
            let graph = supplied_auxiliary(path, reserve, *classes, pre, opts.device)?;
            let acc = accuracy(&graph, judged, judged.require_labels("the held-out frames")?, pre)?;
            (graph, AuxiliarySource::Supplied(supplied_record(path, acc)?), Vec::new(), acc)
        }
    };
    // Every fresh copy gets the same ones.
    let restored_norms = expert.graph.restored_normalizations();
    if restored_norms > 0 {
        log::info!("{restored_norms} convolution(s) without BatchNorm got a trainable one for fine-tuning, folded back at export");
    }
    log::info!(
        "held-out clean accuracy: M {:.1}%, B {:.1}%, M′ {:.1}%",
        100.0 * p.model_accuracy,
        100.0 * expert.holdout_accuracy,
        100.0 * auxiliary_accuracy
    );
    Ok(Experts { expert, auxiliary, auxiliary_source, auxiliary_trials, auxiliary_accuracy, restored_norms })
}

/// Step 3: the backdoor scan, when the options ask for one; its device,
/// augmentation and BatchNorm restoration follow the conversion's.
fn scan_step(p: &Prepared, opts: &ConvertOptions) -> Result<Option<ScanRecord>> {
    let Some(s) = &opts.scan else { return Ok(None) };
    let s = ScanOptions {
        device: opts.device,
        restore_normalization: opts.restore_normalization,
        augmentation: s.augmentation.or(Some(p.augmentation)),
        ..s.clone()
    };
    let Suspect { source, pre, classes, .. } = &p.suspect;
    Ok(Some(scan(source, &p.split.fit, &p.split.calibration, pre, *classes, &s)?))
}

/// Steps 4 and 5: the plans and stored frames written, then τ calibrated by
/// the runtime on the written plans (with a first manifest, τ = 0: the
/// runtime opens bundles only); returns the manifest with τ, for
/// [`BundleWriter::finish`] to write and seal.
fn write_bundle(
    writer: &BundleWriter,
    model_path: &Path,
    reserve: &FrameSet,
    p: &Prepared,
    experts: &Experts,
    scan: &Option<ScanRecord>,
    opts: &ConvertOptions,
) -> Result<(Manifest, Calibration)> {
    let Suspect { source, shape, .. } = &p.suspect;
    let (shape, precision, holdout) = (*shape, opts.precision, &p.split.calibration);
    let plan = |model: &ModelProto, file: &str, what: &str| -> Result<FileDigest> {
        write_plan(model, shape, &writer.dir().join(file), what, precision)?;
        writer.digest(file)
    };
    let plans = Plans {
        model: plan(source, MODEL_PLAN, "model M")?,
        expert: plan(&experts.expert.graph.to_proto()?, EXPERT_PLAN, "backdoor expert B")?,
        auxiliary: plan(&experts.auxiliary.to_proto()?, AUXILIARY_PLAN, "auxiliary model M′")?,
    };
    let expert = &experts.expert;
    let fine_tune = FineTuneRecord {
        expert: expert.config.record(opts.expert.mislabel.describe(), expert.holdout_accuracy, expert.trials.clone()),
        auxiliary: match &experts.auxiliary_source {
            AuxiliarySource::Trained(cfg) => TrainingRecord {
                soup: (opts.auxiliary.soup > 1).then_some(opts.auxiliary.soup),
                ..cfg.record("true labels", experts.auxiliary_accuracy, experts.auxiliary_trials.clone())
            },
            AuxiliarySource::Supplied(record) => record.clone(),
        },
        reserve_size: reserve.len(),
        fit_size: p.split.fit.len(),
        selection_size: p.split.selection.len(),
        holdout_size: holdout.len(),
        seed: opts.seed,
        split_seed: opts.split_seed,
        device: format!("{:?}", opts.device),
        restored_norms: experts.restored_norms,
    };
    let mut manifest = NewManifest {
        shape,
        normalization: opts.normalization.clone(),
        classes: p.class_names.clone(),
        decision: Decision::uncalibrated(opts.score, opts.gamma, opts.target_fpr),
        plans,
        source_model: model_path,
        fine_tune,
        created_by: format!("badexpert-convert {}", env!("CARGO_PKG_VERSION")),
    }
    .build()?;
    manifest.camera = opts.camera;
    manifest.precision = precision;
    manifest.scan = scan.clone();
    if opts.store_clean > 0 {
        let kept = holdout.select(&(0..opts.store_clean.min(holdout.len())).collect::<Vec<_>>());
        write_idx_images(&writer.dir().join(CLEAN_IMAGES), &kept)?;
        write_idx_labels(&writer.dir().join(CLEAN_LABELS), kept.require_labels("holdout")?)?;
        manifest.clean_frames =
            Some(CleanFrames { images: writer.digest(CLEAN_IMAGES)?, labels: writer.digest(CLEAN_LABELS)? });
    }
    if precision == Precision::Int8 {
        // Activation ranges from the fine-tuning split: the held-out
        // frames stay unseen until τ is calibrated on them.
        let frames = p.split.fit.head(badexpert_runtime::quantization::DEFAULT_FRAMES);
        manifest.int8 = Some(badexpert_runtime::quantization::calibrate_bundle(writer.dir(), &manifest, &frames)?);
    }
    writer.write_manifest(&manifest)?;
    let split = target_split(opts, scan.as_ref());
    let calibration = calibrate(writer.dir(), holdout, opts.target_fpr, split.as_ref())?;
    manifest.decision.threshold = calibration.threshold;
    manifest.decision.target = calibration.target.clone();
    manifest.decision.calibration_scores = calibration.scores.clone();
    manifest.decision.calibration_fpr = calibration.realised_fpr;
    manifest.decision.calibration_size = calibration.frames_used;
    Ok((manifest, calibration))
}

/// The target label that gets a threshold of its own: the user's, else the
/// scan's when it found a backdoor; none with a zero share.
fn target_split(opts: &ConvertOptions, scan: Option<&ScanRecord>) -> Option<TargetSplit> {
    if opts.target_fpr_share <= 0.0 {
        return None;
    }
    let (label, source) = match (opts.target_label, scan) {
        (Some(label), _) => (label, "given by the user"),
        (None, Some(ScanRecord { backdoored: true, target: Some(label), .. })) => (*label, "named by the scan"),
        _ => return None,
    };
    Some(TargetSplit { label, fpr_share: opts.target_fpr_share, source: source.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use badexpert_runtime::FrameShape;

    fn numbered(n: usize) -> FrameSet {
        let pixels: Vec<u8> = (0..n).map(|i| i as u8).collect();
        FrameSet::new(FrameShape::new(1, 1, 1), pixels, Some((0..n as u32).map(|i| i % 10).collect())).unwrap()
    }

    fn ids(set: &FrameSet) -> Vec<u8> {
        (0..set.len()).map(|i| set.frame(i)[0]).collect()
    }

    #[test]
    fn the_reserve_splits_into_disjoint_parts_and_calibration_does_not_depend_on_selection() {
        let reserve = numbered(200);
        let (fit2, hold2) = split_reserve(&reserve, 0.2, 7).unwrap();
        let none = ReserveSplit::new(&reserve, 0.2, 0.0, 7).unwrap();
        assert_eq!((ids(&none.fit), ids(&none.calibration)), (ids(&fit2), ids(&hold2)));
        assert!(none.selection.is_empty());
        let three = ReserveSplit::new(&reserve, 0.2, 0.1, 7).unwrap();
        assert_eq!((three.fit.len(), three.selection.len(), three.calibration.len()), (140, 20, 40));
        assert_eq!(ids(&three.calibration), ids(&hold2));
        // The fit part is the old one less its tail, in the same order.
        assert_eq!(ids(&three.fit), ids(&fit2)[..140]);
        let mut all: Vec<u8> = [ids(&three.fit), ids(&three.selection), ids(&three.calibration)].concat();
        all.sort();
        assert_eq!(all, (0..200).map(|i| i as u8).collect::<Vec<_>>());
    }

    #[test]
    fn a_split_that_leaves_nothing_to_fine_tune_on_is_refused() {
        let reserve = numbered(100);
        assert!(ReserveSplit::new(&reserve, 0.5, 0.5, 0).is_err());
        assert!(ReserveSplit::new(&reserve, 0.2, -0.1, 0).is_err());
        assert!(ReserveSplit::new(&reserve, 0.0, 0.1, 0).is_err());
    }
}
