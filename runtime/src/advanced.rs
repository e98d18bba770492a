//! Tract-level building blocks for tools built on the runtime (evaluation,
//! timing, baselines, tests that compare plans): tied to tract's API, so they
//! change with tract. An embedder guarding frames needs none of this.

use std::sync::Arc;

use tract_core::internal::*;

pub use crate::bundle::Plan;
use crate::guard_core::check_logits;
pub use crate::guard_core::{input_slice, output_f32};
use crate::{Error, FrameShape, GuardBundle, Result, Role};
/// badexpert's own kernels (the `badexpert-kernels` crate), placed into plans at load.
pub use badexpert_kernels as ops;

/// One of a bundle's three optimized plans, e.g. to time a model alone or to
/// compare its logits with another implementation.
pub fn plan(bundle: &GuardBundle, role: Role) -> &Plan {
    bundle.plan(role)
}

/// One of a bundle's plans for another batch size (the file is verified
/// again), e.g. for detectors that run many perturbed copies of a frame at once.
pub fn plan_with_batch(bundle: &GuardBundle, role: Role, batch: usize) -> Result<Plan> {
    bundle.plan_with_batch(role, batch)
}

/// A fresh tract state for one of a bundle's plans (one per thread that runs it).
pub fn spawn(bundle: &GuardBundle, role: Role) -> Result<TypedSimpleState> {
    bundle.spawn(role)
}

/// A zeroed `[batch, C, H, W]` f32 input tensor, shared with the plans by `Arc`.
pub fn input_tensor(batch: usize, shape: FrameShape) -> Result<Arc<Tensor>> {
    crate::guard_core::input_tensor(batch, shape)
}

/// Runs one plan on `input` and hands its logits, checked (`classes` of them
/// per run, all finite) and read in place, to `read`; the error is the
/// reason, for the caller to name the model.
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

/// The error for a plan that failed in `role`, as the guards report it.
pub fn inference_error(role: Role, reason: impl Into<String>) -> Error {
    Error::Inference { model: role.name(), reason: reason.into() }
}
