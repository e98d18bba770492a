//! The suspect model and its clean reserve, as `bundle` and `scan` read
//! them: the model checked against the reserve (input shape, classes), the
//! reserve checked against the model (classes it can support, accuracy above
//! chance), and the reserve's seeded split into disjoint parts.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Device;

use badexpert_runtime::{FrameSet, FrameShape, Normalization, Preprocessor};

use crate::onnx::pb::ModelProto;
use crate::onnx::{read_model, TchGraph};
use crate::train::predict_logits;
use crate::{Error, Result};

/// A reserve class with fewer frames than this fraction of an even share
/// (reserve size / classes) cannot hold its share of the calibration frames
/// or of M′'s fine-tune, and M′ forgets it: refused by default. Real
/// imbalance passes (GTSRB's rarest class holds ~0.5 % of the frames against
/// an even share of 2.3 %, a fraction of 0.2).
pub const MIN_CLASS_SHARE: f64 = 0.1;

/// Refuses a reserve that cannot support a guard: fewer than two classes,
/// or a class of the model with fewer than `min_share` of an even share
/// (absent classes included). Such a reserve converts into a guard that
/// rejects most clean frames of the missing classes. `min_share` 0 checks
/// nothing (a caller who knows better).
pub fn check_reserve_supports_guard(labels: &[u32], classes: usize, min_share: f64) -> Result<()> {
    if min_share <= 0.0 {
        return Ok(());
    }
    let mut counts = vec![0usize; classes];
    for &y in labels {
        if let Some(c) = counts.get_mut(y as usize) {
            *c += 1;
        }
    }
    let present = counts.iter().filter(|&&c| c > 0).count();
    if present < 2 {
        return Err(Error::Data(format!(
            "the clean reserve holds frames of {present} class{} of the model's {classes}; a guard needs clean frames of every class (M′ relearns the task from them and τ is calibrated over them)",
            if present == 1 { "" } else { "es" }
        )));
    }
    let even = labels.len() as f64 / classes as f64;
    let floor = (min_share * even).ceil() as usize;
    let small: Vec<String> =
        counts.iter().enumerate().filter(|(_, &c)| c < floor).map(|(k, c)| format!("class {k}: {c}")).collect();
    if !small.is_empty() {
        return Err(Error::Data(format!(
            "the clean reserve is too thin in {} of the model's {classes} classes ({}; each needs at least {floor} frames, {min_share} of an even share of {} frames): M′ would forget them and the guard reject their clean frames; add frames of those classes (or lower --min-class-share)",
            small.len(),
            small.join(", "),
            labels.len()
        )));
    }
    Ok(())
}

/// M must classify the held-out reserve frames at least this fraction of
/// the way from chance (1/K) to perfect: 19 % for 10 classes, 55 % for 2.
/// A model that does no better does not match the reserve (another class
/// order, a wrong normalisation, random labels), and a guard calibrated on
/// it would mean nothing.
pub const MIN_ACCURACY_ABOVE_CHANCE: f64 = 0.1;

/// Refuses a model whose held-out accuracy is near chance ([`MIN_ACCURACY_ABOVE_CHANCE`]).
pub fn check_model_fits_reserve(accuracy: f64, classes: usize, above_chance: f64) -> Result<()> {
    let chance = 1.0 / classes as f64;
    let floor = chance + above_chance * (1.0 - chance);
    if above_chance > 0.0 && accuracy < floor {
        return Err(Error::Data(format!(
            "the model classifies {:.1}% of the held-out reserve frames correctly, near chance ({:.1}% for {classes} classes; at least {:.1}% needed): the reserve's labels do not match the model (another class order, a wrong normalisation, random labels) and a guard calibrated on them would mean nothing (--min-accuracy-above-chance 0 skips this check)",
            100.0 * accuracy,
            100.0 * chance,
            100.0 * floor
        )));
    }
    Ok(())
}

/// Splits a labelled reserve into (fit, holdout) by a seeded shuffle.
pub fn split_reserve(reserve: &FrameSet, holdout_fraction: f64, seed: u64) -> Result<(FrameSet, FrameSet)> {
    let (rest, held) = shuffled_parts(reserve, seed, holdout_fraction)?;
    Ok((reserve.select(&rest), reserve.select(&held)))
}

/// (rest, held) indices of a seeded shuffle; `rest` keeps the shuffled order.
fn shuffled_parts(set: &FrameSet, seed: u64, held_fraction: f64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(held_fraction > 0.0 && held_fraction < 1.0) {
        return Err(Error::Invalid(format!("holdout fraction {held_fraction} must be in (0, 1)")));
    }
    let mut idx: Vec<usize> = (0..set.len()).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x68_6f6c_646f_7574));
    let n_held = (set.len() as f64 * held_fraction).round() as usize;
    let rest = idx.split_off(n_held.min(idx.len()));
    Ok((rest, idx))
}

/// The reserve's disjoint parts: fine-tuning, rate selection and calibration.
///
/// Rates judged on the calibration frames bias τ (fresh clean frames fall
/// below it more often than the target); a separate selection part keeps
/// them exchangeable with new frames, at the cost of fine-tuning frames and
/// of searches judged on fewer. An empty selection part (the default) judges
/// rates on the calibration part (docs/design.md §3.4).
pub struct ReserveSplit {
    pub fit: FrameSet,
    /// Empty with a selection fraction of 0 or when both rates are fixed.
    pub selection: FrameSet,
    pub calibration: FrameSet,
}

impl ReserveSplit {
    /// Where rates are judged: the selection part; without one (fraction 0,
    /// or both rates fixed), the calibration part.
    pub fn judged(&self) -> &FrameSet {
        if self.selection.is_empty() {
            &self.calibration
        } else {
            &self.selection
        }
    }

    /// Seeded split; the calibration part is the one [`split_reserve`] holds
    /// out with the same seed, and the selection part comes out of the rest
    /// (fraction 0: none, and rates are judged on the calibration part).
    pub fn new(reserve: &FrameSet, calibration_fraction: f64, selection_fraction: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&selection_fraction) || calibration_fraction + selection_fraction >= 1.0 {
            return Err(Error::Invalid(format!(
                "selection fraction {selection_fraction} must be in [0, 1) and leave frames to fine-tune on beside the {calibration_fraction} held out for calibration"
            )));
        }
        let (mut rest, held) = shuffled_parts(reserve, seed, calibration_fraction)?;
        // The tail of the (already shuffled) rest: the fit part keeps the
        // order it has without a selection part.
        let n_select = ((reserve.len() as f64 * selection_fraction).round() as usize).min(rest.len());
        let chosen = rest.split_off(rest.len() - n_select);
        let (fit, selection, calibration) = (reserve.select(&rest), reserve.select(&chosen), reserve.select(&held));
        if fit.is_empty() {
            return Err(Error::Data(format!("a reserve of {} frames leaves none to fine-tune on", reserve.len())));
        }
        Ok(ReserveSplit { fit, selection, calibration })
    }
}

/// Static (C, H, W) of the graph input, checked against the reserve.
pub(crate) fn input_shape(graph: &TchGraph, reserve: &FrameSet) -> Result<FrameShape> {
    let dims = &graph.input().dims;
    let s = reserve.shape();
    if dims.len() != 4 {
        return Err(Error::Invalid(format!(
            "model input {:?} has {} dims; an image classifier takes [N, C, H, W]",
            graph.input().name,
            dims.len()
        )));
    }
    let want = [s.channels, s.height, s.width];
    for (axis, (d, w)) in dims[1..].iter().zip(want).enumerate() {
        if let Some(d) = d {
            if *d as usize != w {
                return Err(Error::Data(format!(
                    "frames are {s}, the model input {:?} is {:?} (axis {} differs)",
                    graph.input().name,
                    dims,
                    axis + 1
                )));
            }
        }
    }
    Ok(s)
}

/// Number of classes: the output width on two frames (one when the reserve
/// has one), which also shows that the model takes a batch.
pub(crate) fn class_count(graph: &TchGraph, reserve: &FrameSet, pre: &Preprocessor) -> Result<usize> {
    let n = reserve.len().min(2);
    let batch_hint = "; a model exported with a fixed batch size that badexpert cannot free \
                      needs exporting with a dynamic batch (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))";
    let logits = predict_logits(graph, &reserve.head(n), pre).map_err(|e| match e {
        Error::Node { node, op, reason } if n > 1 => {
            Error::Node { node, op, reason: format!("on a batch of {n} frames: {reason}{batch_hint}") }
        }
        other => other,
    })?;
    let size = logits.size();
    match size[..] {
        [b, k] if b == n as i64 && k >= 2 => Ok(k as usize),
        _ => Err(Error::Invalid(format!(
            "model output has shape {size:?} on {n} frame(s); a classifier gives [N, K] logits with K ≥ 2{}",
            if n > 1 { batch_hint } else { "" }
        ))),
    }
}

/// The suspect model read for fine-tuning, checked against a labelled reserve.
pub struct Suspect {
    pub source: ModelProto,
    pub model: TchGraph,
    pub shape: FrameShape,
    pub pre: Preprocessor,
    pub classes: usize,
}

impl Suspect {
    /// Reads `model_path` onto `device` and checks that it classifies
    /// `reserve`'s frames into as many classes as its labels name.
    pub fn open(model_path: &Path, reserve: &FrameSet, normalization: &Normalization, device: Device) -> Result<Self> {
        if reserve.is_empty() {
            return Err(Error::Data("the clean reserve is empty".into()));
        }
        reserve.require_labels("the clean reserve")?;
        let source = read_model(model_path)?;
        let model = TchGraph::from_proto(source.clone(), device).map_err(|e| match e {
            Error::Invalid(reason) => Error::Onnx { path: model_path.to_owned(), reason },
            other => other,
        })?;
        let shape = input_shape(&model, reserve)?;
        let pre = Preprocessor::new(normalization, shape)?;
        let classes = class_count(&model, reserve, &pre)?;
        reserve.check_labels(classes).map_err(|e| Error::Data(e.to_string()))?;
        Ok(Suspect { source, model, shape, pre, classes })
    }
}
