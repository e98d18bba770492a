//! The guard over several frames at once (multi-camera nodes, offline
//! scoring): each model runs once on a batch, which amortises per-run
//! overhead and lets tract use wider kernels. Open the bundle with
//! [`GuardBundle::open_with_batch`] for the batch size.

use tract_core::internal::*;

use crate::bundle::{GuardBundle, Role};
use crate::camera::CameraFrame;
use crate::guard::{FrameGuard, PixelLayout, Verdict};
use crate::guard_core::{run_plan, GuardCore};
use crate::manifest::Decision;
use crate::{Error, Result};

/// Guards up to `batch` frames per call with one run of each model.
pub struct BatchGuard {
    core: GuardCore,
    states: [TypedSimpleState; 3],
    /// M's, B's and M′'s logits of the last batch.
    logits: [Vec<f32>; 3],
}

impl BatchGuard {
    pub fn new(bundle: &GuardBundle) -> Result<BatchGuard> {
        let core = GuardCore::new(bundle, "BatchGuard", false)?;
        let states = [bundle.spawn(Role::Model)?, bundle.spawn(Role::Expert)?, bundle.spawn(Role::Auxiliary)?];
        let logits = std::array::from_fn(|_| vec![0.0; core.batch() * core.classes()]);
        Ok(BatchGuard { core, states, logits })
    }

    /// Frames per run.
    pub fn batch(&self) -> usize {
        self.core.batch()
    }

    /// Guards `frames` (at most [`batch`](Self::batch)) into `verdicts[..frames.len()]`.
    /// A short batch runs full size; the unused rows are ignored.
    pub fn guard_batch(&mut self, frames: &[&[u8]], layout: PixelLayout, verdicts: &mut [Verdict]) -> Result<()> {
        let batch = self.core.batch();
        if frames.len() > batch || verdicts.len() < frames.len() {
            return Err(Error::Invalid(format!(
                "{} frames for a batch of {batch} into {} verdicts",
                frames.len(),
                verdicts.len()
            )));
        }
        for (i, frame) in frames.iter().enumerate() {
            self.core.load(i, frame, layout).map_err(|e| Error::Frame(format!("frame {i} of the batch: {e}")))?;
        }
        self.run(frames.len(), verdicts)
    }

    /// Runs the three plans on the loaded input; verdicts for the first `n` rows.
    fn run(&mut self, n: usize, verdicts: &mut [Verdict]) -> Result<()> {
        for ((state, out), role) in self.states.iter_mut().zip(&mut self.logits).zip(Role::ALL) {
            run_plan(state, role.name(), self.core.input(), out)?;
        }
        let [m, b, a] = &self.logits;
        for (row, v) in verdicts[..n].iter_mut().enumerate() {
            *v = self.core.verdict(row, [m, b, a]);
        }
        Ok(())
    }
}

/// One frame as a batch of one (the other rows are ignored).
impl FrameGuard for BatchGuard {
    fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict> {
        let mut verdict = [Verdict::default()];
        self.guard_batch(&[frame], layout, &mut verdict)?;
        Ok(verdict[0])
    }

    fn guard_camera(&mut self, frame: &CameraFrame) -> Result<Verdict> {
        self.core.load_camera(0, frame)?;
        let mut verdict = [Verdict::default()];
        self.run(1, &mut verdict)?;
        Ok(verdict[0])
    }

    fn decision(&self) -> &Decision {
        self.core.decision()
    }
}
