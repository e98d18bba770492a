//! The per-frame guard: preprocess once, run M, B and M′ in turn, score,
//! decide; and [`FrameGuard`], the one interface over every guard.
//!
//! A `Guard` owns one tract state per model and one input tensor, all made at
//! construction; guarding a frame reuses them, so the steady state allocates
//! nothing in our code (tract still allocates each op's output).

use tract_core::internal::*;

use crate::bundle::{GuardBundle, Role};
use crate::camera::CameraFrame;
pub use crate::guard_core::Verdict;
use crate::guard_core::{run_plan, GuardCore};
use crate::manifest::Decision;
pub use crate::preprocess::PixelLayout;
use crate::Result;

/// What every guard does, whichever way it runs the three models, so that a
/// caller can choose [`Guard`], [`crate::ParallelGuard`] or
/// [`crate::BatchGuard`] at run time.
pub trait FrameGuard {
    /// Guards one u8 frame in `layout`; a frame that cannot be scored is an error.
    fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict>;

    /// Guards one camera frame of any size and format, brought to the
    /// model's input as the bundle's manifest says ([`crate::camera`]).
    fn guard_camera(&mut self, frame: &CameraFrame) -> Result<Verdict>;

    /// The decision rule in use (threshold, score mode, γ).
    fn decision(&self) -> &Decision;
}

/// Guards frames one at a time with a bundle's three plans.
pub struct Guard {
    core: GuardCore,
    states: [TypedSimpleState; 3],
    /// M's, B's and M′'s logits of the last frame.
    logits: [Vec<f32>; 3],
}

impl Guard {
    /// Builds a guard for a bundle opened with batch size 1.
    pub fn new(bundle: &GuardBundle) -> Result<Guard> {
        let core = GuardCore::new(bundle, "Guard", true)?;
        let states = [bundle.spawn(Role::Model)?, bundle.spawn(Role::Expert)?, bundle.spawn(Role::Auxiliary)?];
        let logits = std::array::from_fn(|_| vec![0.0; core.classes()]);
        Ok(Guard { core, states, logits })
    }

    /// Guards one u8 frame.
    pub fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict> {
        self.core.load(0, frame, layout)?;
        self.run()
    }

    /// Guards one camera frame (any size and format; [`crate::camera`]).
    pub fn guard_camera(&mut self, frame: &CameraFrame) -> Result<Verdict> {
        self.core.load_camera(0, frame)?;
        self.run()
    }

    /// Guards one frame that is already normalised (planar f32).
    pub fn guard_normalized(&mut self, frame: &[f32]) -> Result<Verdict> {
        self.core.load_normalized(frame)?;
        self.run()
    }

    /// The decision rule in use.
    pub fn decision(&self) -> &Decision {
        self.core.decision()
    }

    fn run(&mut self) -> Result<Verdict> {
        for ((state, out), role) in self.states.iter_mut().zip(&mut self.logits).zip(Role::ALL) {
            run_plan(state, role.name(), self.core.input(), out)?;
        }
        let [m, b, a] = &self.logits;
        Ok(self.core.verdict(0, [m, b, a]))
    }
}

impl FrameGuard for Guard {
    fn guard(&mut self, frame: &[u8], layout: PixelLayout) -> Result<Verdict> {
        Guard::guard(self, frame, layout)
    }

    fn guard_camera(&mut self, frame: &CameraFrame) -> Result<Verdict> {
        Guard::guard_camera(self, frame)
    }

    fn decision(&self) -> &Decision {
        Guard::decision(self)
    }
}
