//! Edge runtime of **badexpert**: guards every camera frame against backdoor
//! triggers with BaDExpert (Xie et al., ICLR 2024), using tract only.
//!
//! A guard bundle (written by `badexpert-convert`) holds the suspect model M,
//! its backdoor expert B and an auxiliary model M′ as NNEF plans, plus a
//! manifest with the calibrated threshold. For each frame the guard runs all
//! three and rejects the frame when B still agrees with M but M′ does not.
//!
//! ```
//! use badexpert_runtime::{Guard, GuardBundle, PixelLayout};
//!
//! let bundle = GuardBundle::open("../models/badnet-fmnist/bundle")?;
//! let mut guard = Guard::new(&bundle)?;
//! let frame = [0u8; 28 * 28]; // one gray 28×28 frame, as the bundle expects
//! let verdict = guard.guard(&frame, PixelLayout::Chw)?;
//! println!("class {} score {:.3} accepted {}", verdict.class, verdict.score, verdict.accepted);
//! # Ok::<(), badexpert_runtime::Error>(())
//! ```
//!
//! Modules, in data-flow order: [`preprocess`] normalises frames,
//! [`bundle`] loads and verifies plans (with the `badexpert-kernels` kernels
//! in place of tract's slow ones), [`guard`] runs them, [`score`] turns
//! confidences into the statistic, [`metrics`] calibrates thresholds and
//! computes CA / ASR / AUROC; [`parallel`] runs the three models
//! concurrently and [`batch`] guards several frames per run;
//! [`quantization`] measures int8 activation scales. Frame readers live in
//! `badexpert-frames`, evaluation and timing tools in `badexpert-eval`, the
//! C ABI in `badexpert-ffi`.

pub mod batch;
pub mod bundle;
mod error;
mod frames;
pub mod guard;
pub mod manifest;
pub mod metrics;
pub mod parallel;
pub mod preprocess;
pub mod quantization;
pub mod score;

/// Tract-level building blocks for tools built on the runtime (evaluation,
/// timing, baselines): tied to tract's API, so they change with tract.
pub mod advanced {
    pub use crate::guard::{input_slice, input_tensor, output_f32, with_logits};
    /// badexpert's own kernels (the `badexpert-kernels` crate), placed into plans at load.
    pub use badexpert_kernels as ops;
}

pub use batch::BatchGuard;
pub use bundle::{sha256_file, GuardBundle, LoadOptions, Plan, Role, BATCH_SYMBOL};
pub use error::{Error, Result};
pub use frames::{FrameSet, FrameShape};
pub use guard::{FrameGuard, Guard, PixelLayout, Verdict};
pub use manifest::Manifest;
pub use metrics::{ComponentAuroc, Evaluation, Scored};
pub use parallel::ParallelGuard;
pub use preprocess::{Normalization, Preprocessor};
pub use score::{Confidences, ScoreMode};
