//! Post-training int8 calibration: the activation range entering each
//! int8 layer ([`ops::int8_layers`]), measured on clean frames.
//!
//! The converter runs this on clean reserve frames and stores the scales
//! in the manifest ([`Int8Scales`]); the runtime's kernels then quantize
//! each layer's input with its scale ([`ops::int8`]). A layer's scale maps
//! [`HEADROOM`] × the largest magnitude seen to 127.

use std::path::Path;

use tract_core::internal::*;

use crate::bundle::PlanLoader;
use crate::manifest::{Int8Scales, Manifest};
use crate::{Error, FrameSet, LoadOptions, Preprocessor, Result};
use badexpert_kernels::{self as ops, int8::scale_for, ActivationScales};

/// How far past the clean range a layer's int8 input reaches before it
/// saturates. Triggered frames drive activations beyond anything clean
/// frames do, and clipping them there erases the very signal the backdoor
/// expert B must keep. Twice the clean range kept the int8 guard's
/// verdicts on triggered frames equal to f32's where 1× did not, at the cost
/// of one bit of the eight (docs/benchmarks.md, "Why the kernels exist").
pub const HEADROOM: f32 = 2.0;

/// Clean frames the converter calibrates on by default: the ranges settle
/// well before this many (a layer's maximum over 256 frames is within a few
/// per cent of its maximum over thousands on the demo).
pub const DEFAULT_FRAMES: usize = 256;

/// The scales of all three plans of the bundle in `dir` (described by
/// `manifest`), from the frames of `frames`.
pub fn calibrate_bundle(dir: &Path, manifest: &Manifest, frames: &FrameSet) -> Result<Int8Scales> {
    let plans = &manifest.plans;
    Ok(Int8Scales {
        frames: frames.len(),
        model: calibrate(&dir.join(&plans.model.file), manifest, frames)?,
        expert: calibrate(&dir.join(&plans.expert.file), manifest, frames)?,
        auxiliary: calibrate(&dir.join(&plans.auxiliary.file), manifest, frames)?,
    })
}

/// The scale of each int8 layer of the plan at `path`, from the largest
/// magnitude of its input activations over `frames` (normalised as
/// `manifest` says; the plan runs in f32 through tract).
pub fn calibrate(path: &Path, manifest: &Manifest, frames: &FrameSet) -> Result<ActivationScales> {
    if frames.is_empty() {
        return Err(Error::Invalid("int8 calibration needs at least one clean frame".into()));
    }
    if frames.shape() != manifest.input.shape {
        return Err(Error::Frame(format!(
            "calibration frames are {}, the plan takes {}",
            frames.shape(),
            manifest.input.shape
        )));
    }
    let fail = |reason: String| Error::Plan { path: path.to_owned(), reason };
    let model = PlanLoader::new(manifest, LoadOptions::default()).typed(path)?;
    let mut model = model.into_decluttered().map_err(|e| fail(format!("cannot declutter: {e:#}")))?;
    let layers = ops::int8_layers(&model).map_err(|e| fail(format!("{e:#}")))?;
    // Each distinct activation once (a block's shortcut and its first
    // convolution read the same one), after the classifier's own output.
    let mut watched: Vec<OutletId> = vec![];
    for (_, outlet) in &layers {
        if !watched.contains(outlet) {
            watched.push(*outlet);
        }
    }
    model.outputs.extend(&watched);
    let plan =
        model.into_optimized().and_then(|m| m.into_runnable()).map_err(|e| fail(format!("cannot plan: {e:#}")))?;
    let pre = Preprocessor::new(&manifest.normalization, manifest.input.shape)?;
    let shape = frames.shape();
    let mut values = vec![0f32; shape.len()];
    let mut max_abs = vec![0f32; watched.len()];
    for i in 0..frames.len() {
        pre.planar_into(frames.frame(i), &mut values)?;
        let input = Tensor::from_shape(&[1, shape.channels, shape.height, shape.width], &values)
            .map_err(|e| fail(e.to_string()))?;
        let outputs = plan.run(tvec!(input.into_tvalue())).map_err(|e| fail(format!("calibration run: {e:#}")))?;
        for (max, value) in max_abs.iter_mut().zip(&outputs[1..]) {
            let values = value.try_as_plain_ram().and_then(|v| v.as_slice::<f32>()).map_err(|e| fail(e.to_string()))?;
            *max = values.iter().fold(*max, |m, v| m.max(v.abs()));
        }
    }
    Ok(layers
        .into_iter()
        .map(|(name, outlet)| {
            let k = watched.iter().position(|o| *o == outlet).unwrap_or(0);
            (name, scale_for(HEADROOM * max_abs[k]))
        })
        .collect())
}
