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
//! Modules, in data-flow order: [`data`] reads frames, [`preprocess`]
//! normalises them, [`bundle`] loads and verifies plans (with [`ops`]'
//! kernels in place of tract's slow ones), [`guard`] runs them,
//! [`score`] turns confidences into the statistic, [`metrics`] calibrates
//! thresholds and computes CA / ASR / AUROC. [`parallel`] runs the three
//! models concurrently and [`batch`] guards several frames per run;
//! [`latency`] times those modes and [`profile`] times each op of each
//! plan. [`baselines`] holds the STRIP and SCALE-UP detectors BaDExpert is
//! compared with; [`agreement`] compares two bundles' verdicts frame by
//! frame (f16 against f32).

pub mod agreement;
pub mod baselines;
pub mod batch;
pub mod bundle;
pub mod data;
mod error;
pub mod evaluate;
mod frames;
pub mod guard;
pub mod latency;
pub mod manifest;
pub mod metrics;
pub mod ops;
pub mod parallel;
pub mod preprocess;
pub mod profile;
pub mod quantization;
pub mod score;

pub use batch::BatchGuard;
pub use bundle::{sha256_file, GuardBundle, LoadOptions, Plan, Role, BATCH_SYMBOL};
pub use error::{Error, Result};
pub use frames::{FrameSet, FrameShape};
pub use guard::{Guard, PixelLayout, Verdict};
pub use manifest::Manifest;
pub use metrics::{ComponentAuroc, Evaluation, Scored};
pub use parallel::ParallelGuard;
pub use preprocess::{Normalization, Preprocessor};
pub use score::{Confidences, ScoreMode};
