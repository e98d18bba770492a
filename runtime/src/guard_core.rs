//! What the three guards share: the bundle's preprocessing, decision rule and
//! class count, the input tensor frames are written into, and the one step
//! from the three models' logits to a verdict (argmax → softmax → decide).
//! [`Guard`](crate::Guard), [`ParallelGuard`](crate::ParallelGuard) and
//! [`BatchGuard`](crate::BatchGuard) differ only in how they run the plans.

use std::sync::Arc;

use tract_core::internal::*;

use crate::bundle::GuardBundle;
use crate::camera::{CameraFrame, CameraPipeline, CameraPreprocessing, ChannelOrder, PixelFormat};
use crate::manifest::Decision;
use crate::preprocess::{PixelLayout, Preprocessor};
use crate::score::{argmax, softmax_at, Confidences};
use crate::{Error, FrameShape, Result};

/// The guard's answer for one frame.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, Default)]
pub struct Verdict {
    /// The suspect model's prediction ŷ.
    pub class: usize,
    pub confidences: Confidences,
    /// Low means backdoor.
    pub score: f32,
    /// False when the frame is flagged as triggered (score < threshold).
    pub accepted: bool,
}

/// Preprocessing, decision and the input tensor of one guard.
pub(crate) struct GuardCore {
    pre: Preprocessor,
    decision: Decision,
    classes: usize,
    batch: usize,
    input: Arc<Tensor>,
    camera: CameraPreprocessing,
    /// The pipeline for the last camera geometry seen, and its model-size output.
    pipeline: Option<CameraPipeline>,
    converted: Vec<u8>,
}

impl GuardCore {
    /// The core for a bundle's plans; `per_frame` guards (`what` names the
    /// guard in the error) need a bundle opened with batch size 1.
    pub(crate) fn new(bundle: &GuardBundle, what: &str, per_frame: bool) -> Result<GuardCore> {
        let batch = bundle.batch();
        if per_frame && batch != 1 {
            return Err(Error::Invalid(format!(
                "{what} takes frames one at a time; the bundle was opened for batch {batch}"
            )));
        }
        let m = bundle.manifest();
        Ok(GuardCore {
            pre: Preprocessor::new(&m.normalization, m.input.shape)?,
            decision: m.decision.clone(),
            classes: m.classes.len(),
            batch,
            input: input_tensor(batch, m.input.shape)?,
            camera: m.camera,
            pipeline: None,
            converted: vec![0; m.input.shape.len()],
        })
    }

    pub(crate) fn decision(&self) -> &Decision {
        &self.decision
    }

    pub(crate) fn classes(&self) -> usize {
        self.classes
    }

    pub(crate) fn batch(&self) -> usize {
        self.batch
    }

    /// Normalises a u8 frame into slot `slot` of the input.
    pub(crate) fn load(&mut self, slot: usize, frame: &[u8], layout: PixelLayout) -> Result<()> {
        let n = self.pre.shape().len();
        self.pre.load(frame, layout, &mut input_slice(&mut self.input)[slot * n..(slot + 1) * n])
    }

    /// Brings a camera frame of any size and format to the model's input
    /// (the manifest's [`CameraPreprocessing`]) into slot `slot`. A frame of
    /// the model's size in its own channel layout is normalised directly; a
    /// new geometry builds a new pipeline (the only allocation).
    pub(crate) fn load_camera(&mut self, slot: usize, frame: &CameraFrame) -> Result<()> {
        let shape = self.pre.shape();
        let g = frame.geometry;
        let direct = matches!(
            (g.format, shape.channels, self.camera.channel_order),
            (PixelFormat::Gray8, 1, _)
                | (PixelFormat::Rgb24, 3, ChannelOrder::Rgb)
                | (PixelFormat::Bgr24, 3, ChannelOrder::Bgr)
        );
        let n = shape.len();
        if direct && (g.height, g.width, g.stride) == (shape.height, shape.width, shape.width * shape.channels) {
            return self.load(slot, &frame.data[..n], PixelLayout::Hwc);
        }
        let pipeline = match &mut self.pipeline {
            Some(p) if p.geometry() == g => p,
            other => other.insert(CameraPipeline::new(&self.camera, shape, g)?),
        };
        pipeline.convert(frame, &mut self.converted)?;
        self.pre.load(&self.converted, PixelLayout::Chw, &mut input_slice(&mut self.input)[slot * n..(slot + 1) * n])
    }

    /// Copies an already normalised planar frame into the (single-frame) input.
    pub(crate) fn load_normalized(&mut self, frame: &[f32]) -> Result<()> {
        let expected = self.pre.shape().len();
        if frame.len() != expected {
            return Err(Error::Frame(format!(
                "{} values, the bundle expects {expected} = {}",
                frame.len(),
                self.pre.shape()
            )));
        }
        if let Some(i) = frame.iter().position(|v| !v.is_finite()) {
            return Err(Error::Frame(format!("value {i} is {} (NaN or infinite)", frame[i])));
        }
        input_slice(&mut self.input)[..expected].copy_from_slice(frame);
        Ok(())
    }

    /// The input as the plans take it (shares the tensor; no copy).
    pub(crate) fn input(&self) -> TValue {
        TValue::from_const(self.input.clone())
    }

    /// The input tensor itself, for guards that hand it to worker threads.
    pub(crate) fn input_tensor(&self) -> &Arc<Tensor> {
        &self.input
    }

    /// Row `row`'s verdict from the logits of M, B and M′ (each `[batch, K]`,
    /// already checked by [`run_plan`]).
    pub(crate) fn verdict(&self, row: usize, logits: [&[f32]; 3]) -> Verdict {
        let k = self.classes;
        let [m, b, a] = logits.map(|l| &l[row * k..(row + 1) * k]);
        let class = argmax(m);
        let confidences = Confidences { expert: softmax_at(b, class), auxiliary: softmax_at(a, class) };
        let score = self.decision.score.score(confidences, self.decision.gamma);
        Verdict { class, confidences, score, accepted: score >= self.decision.threshold_for(class) }
    }
}

/// Runs one plan on `input` and copies its logits into `out` once they are
/// checked (`out.len()` of them, all finite): the one place the guards read
/// a plan's output. The outputs are dropped on return, so the caller may
/// write the next frame into the shared input in place.
pub(crate) fn run_plan(
    state: &mut TypedSimpleState,
    model: &'static str,
    input: TValue,
    out: &mut [f32],
) -> Result<()> {
    let fail = |reason: String| Error::Inference { model, reason };
    let outputs = state.run(tvec![input]).map_err(|e| fail(format!("{e:#}")))?;
    let logits = output_f32(&outputs[0]).map_err(|e| fail(e.to_string()))?;
    check_logits(logits, out.len()).map_err(fail)?;
    out.copy_from_slice(logits);
    Ok(())
}

/// Checks a plan's logits: `values` of them, all finite.
pub(crate) fn check_logits(logits: &[f32], values: usize) -> std::result::Result<(), String> {
    if logits.len() != values {
        return Err(format!("{} logits where {values} were expected", logits.len()));
    }
    if logits.iter().any(|v| !v.is_finite()) {
        return Err("non-finite logits".into());
    }
    Ok(())
}

/// A zeroed `[batch, C, H, W]` f32 input tensor, shared with the plans by `Arc`.
pub(crate) fn input_tensor(batch: usize, shape: FrameShape) -> Result<Arc<Tensor>> {
    Tensor::zero::<f32>(&[batch, shape.channels, shape.height, shape.width])
        .map(Arc::new)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// The input tensor's values. The Arc is exclusive again once the previous
/// run's values were dropped; only a plan that kept a reference would force a
/// copy here.
pub fn input_slice(input: &mut Arc<Tensor>) -> &mut [f32] {
    Arc::make_mut(input)
        .to_plain_array_view_mut::<f32>()
        .ok()
        .and_then(|v| v.into_slice())
        .expect("input tensors are contiguous f32 tensors made with Tensor::zero::<f32>")
}

/// The f32 values of a plan output, read in place.
pub fn output_f32(value: &TValue) -> TractResult<&[f32]> {
    value.try_as_plain_ram()?.as_slice::<f32>()
}
