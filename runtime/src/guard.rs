//! The per-frame guard: preprocess once, run M, B and M′, score, decide.
//!
//! A `Guard` owns one tract state per model and one input tensor, all made at
//! construction; guarding a frame reuses them, so the steady state allocates
//! nothing in our code (tract still allocates each op's output).

use std::sync::Arc;

use serde::Serialize;
use tract_core::internal::*;

use crate::bundle::{GuardBundle, Role};
use crate::manifest::Decision;
pub use crate::preprocess::PixelLayout;
use crate::preprocess::Preprocessor;
use crate::score::{argmax, softmax_at, Confidences};
use crate::{Error, Result};

/// The guard's answer for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Verdict {
    /// The suspect model's prediction ŷ.
    pub class: usize,
    pub confidences: Confidences,
    /// Low means backdoor.
    pub score: f32,
    /// False when the frame is flagged as triggered (score < threshold).
    pub accepted: bool,
}

struct Runner {
    name: &'static str,
    state: TypedSimpleState,
}

/// What every per-frame guard does, whichever way it runs the three models,
/// so that a caller can choose [`Guard`] or [`crate::ParallelGuard`] at run time.
pub trait FrameGuard {
    /// Guards one u8 frame in `layout`; a frame that cannot be scored is an error.
    fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict>;
}

impl FrameGuard for Guard {
    fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict> {
        Guard::guard(self, frame, layout)
    }
}

/// Guards frames one at a time with a bundle's three plans.
pub struct Guard {
    pre: Preprocessor,
    decision: Decision,
    classes: usize,
    input: Arc<Tensor>,
    model: Runner,
    expert: Runner,
    auxiliary: Runner,
}

impl Guard {
    /// Builds a guard for a bundle opened with batch size 1.
    pub fn new(bundle: &GuardBundle) -> Result<Guard> {
        if bundle.batch() != 1 {
            return Err(Error::Invalid(format!(
                "Guard takes frames one at a time; the bundle was opened for batch {}",
                bundle.batch()
            )));
        }
        let m = bundle.manifest();
        let shape = m.input.shape;
        let spawn = |role: Role| -> Result<Runner> { Ok(Runner { name: role.name(), state: bundle.spawn(role)? }) };
        Ok(Guard {
            pre: Preprocessor::new(&m.normalization, shape)?,
            decision: m.decision.clone(),
            classes: m.classes.len(),
            input: input_tensor(1, shape)?,
            model: spawn(Role::Model)?,
            expert: spawn(Role::Expert)?,
            auxiliary: spawn(Role::Auxiliary)?,
        })
    }

    /// Guards one u8 frame.
    pub fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict> {
        self.pre.load(frame, layout, input_slice(&mut self.input))?;
        self.run()
    }

    /// Guards one frame that is already normalised (planar f32).
    pub fn guard_normalized(&mut self, frame: &[f32]) -> Result<Verdict> {
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
        input_slice(&mut self.input).copy_from_slice(frame);
        self.run()
    }

    /// The decision rule in use.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    fn run(&mut self) -> Result<Verdict> {
        let classes = self.classes;
        let input = TValue::from_const(self.input.clone());
        let class = run_logits(&mut self.model, &input, classes, argmax)?;
        let expert = run_logits(&mut self.expert, &input, classes, |l| softmax_at(l, class))?;
        let auxiliary = run_logits(&mut self.auxiliary, &input, classes, |l| softmax_at(l, class))?;
        Ok(decide(&self.decision, class, Confidences { expert, auxiliary }))
    }
}

/// The verdict for M's class and the two confidences in it.
pub(crate) fn decide(decision: &Decision, class: usize, confidences: Confidences) -> Verdict {
    let score = decision.score.score(confidences, decision.gamma);
    Verdict { class, confidences, score, accepted: score >= decision.threshold }
}

/// Checks a plan's logits: the manifest's class count, all finite.
pub(crate) fn check_logits(logits: &[f32], classes: usize) -> std::result::Result<(), String> {
    if logits.len() != classes {
        return Err(format!("{} logits for {classes} classes", logits.len()));
    }
    if logits.iter().any(|v| !v.is_finite()) {
        return Err("non-finite logits".into());
    }
    Ok(())
}

/// A zeroed `[batch, C, H, W]` f32 input tensor, shared with the plans by `Arc`.
pub fn input_tensor(batch: usize, shape: crate::FrameShape) -> Result<Arc<Tensor>> {
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

/// Runs one plan on `input` and hands its logits, checked ([`check_logits`])
/// and read in place, to `read`; the error is the reason, for the caller to
/// name the model.
pub fn with_logits<T>(
    state: &mut TypedSimpleState,
    input: TValue,
    classes: usize,
    read: impl FnOnce(&[f32]) -> T,
) -> std::result::Result<T, String> {
    let outputs = state.run(tvec![input]).map_err(|e| format!("{e:#}"))?;
    let logits = output_f32(&outputs[0]).map_err(|e| e.to_string())?;
    check_logits(logits, classes)?;
    Ok(read(logits))
}

/// Runs one of the guard's plans and reads its logits in place.
fn run_logits<T>(runner: &mut Runner, input: &TValue, classes: usize, read: impl FnOnce(&[f32]) -> T) -> Result<T> {
    with_logits(&mut runner.state, input.clone(), classes, read)
        .map_err(|reason| Error::Inference { model: runner.name, reason })
}
