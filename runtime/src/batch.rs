//! The guard over several frames at once (multi-camera nodes, offline
//! scoring): each model runs once on a batch, which amortises per-run
//! overhead and lets tract use wider kernels. Open the bundle with
//! [`GuardBundle::open_with_batch`] for the batch size.

use std::sync::Arc;

use tract_core::internal::*;

use crate::bundle::{GuardBundle, Role};
use crate::guard::{decide, input_slice, with_logits, PixelLayout, Verdict};
use crate::manifest::Decision;
use crate::preprocess::Preprocessor;
use crate::score::{argmax, softmax_at};
use crate::{Error, Result};

/// Guards up to `batch` frames per call with one run of each model.
pub struct BatchGuard {
    pre: Preprocessor,
    decision: Decision,
    classes: usize,
    batch: usize,
    input: Arc<Tensor>,
    states: [(&'static str, TypedSimpleState); 3],
}

impl BatchGuard {
    pub fn new(bundle: &GuardBundle) -> Result<BatchGuard> {
        let m = bundle.manifest();
        let (shape, batch) = (m.input.shape, bundle.batch());
        let spawn = |role: Role| -> Result<(&'static str, TypedSimpleState)> { Ok((role.name(), bundle.spawn(role)?)) };
        Ok(BatchGuard {
            pre: Preprocessor::new(&m.normalization, shape)?,
            decision: m.decision.clone(),
            classes: m.classes.len(),
            batch,
            input: crate::guard::input_tensor(batch, shape)?,
            states: [spawn(Role::Model)?, spawn(Role::Expert)?, spawn(Role::Auxiliary)?],
        })
    }

    /// Frames per run.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Guards `frames` (at most [`batch`](Self::batch)) into `verdicts[..frames.len()]`.
    /// A short batch runs full size; the unused rows are ignored.
    pub fn guard_batch(&mut self, frames: &[&[u8]], layout: PixelLayout, verdicts: &mut [Verdict]) -> Result<()> {
        if frames.len() > self.batch || verdicts.len() < frames.len() {
            return Err(Error::Invalid(format!(
                "{} frames for a batch of {} into {} verdicts",
                frames.len(),
                self.batch,
                verdicts.len()
            )));
        }
        let per_frame = self.pre.shape().len();
        let buf = input_slice(&mut self.input);
        for (i, frame) in frames.iter().enumerate() {
            self.pre
                .load(frame, layout, &mut buf[i * per_frame..(i + 1) * per_frame])
                .map_err(|e| Error::Frame(format!("frame {i} of the batch: {e}")))?;
        }
        let (n, k) = (frames.len(), self.classes);
        for (role, (name, state)) in self.states.iter_mut().enumerate() {
            let input = TValue::from_const(self.input.clone());
            with_logits(state, input, self.batch * k, |logits| {
                for (i, v) in verdicts[..n].iter_mut().enumerate() {
                    let row = &logits[i * k..(i + 1) * k];
                    match role {
                        0 => v.class = argmax(row),
                        1 => v.confidences.expert = softmax_at(row, v.class),
                        _ => v.confidences.auxiliary = softmax_at(row, v.class),
                    }
                }
            })
            .map_err(|reason| Error::Inference { model: name, reason })?;
        }
        for v in &mut verdicts[..n] {
            *v = decide(&self.decision, v.class, v.confidences);
        }
        Ok(())
    }
}
