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
//! In data-flow order: a [`Preprocessor`] normalises frames,
//! [`GuardBundle`] loads and verifies plans (with the `badexpert-kernels`
//! kernels in place of tract's slow ones), a guard runs them — [`Guard`] one
//! frame at a time, [`ParallelGuard`] with the three models concurrently,
//! [`BatchGuard`] several frames per run, all behind [`FrameGuard`] — and
//! [`score`] turns confidences into the statistic; [`threshold`] calibrates
//! the threshold (CA / ASR / AUROC are `badexpert-eval`'s), [`quantization`] measures int8
//! activation scales, [`manifest`] is the bundle's format, [`seal`] its
//! digest and signature (checked at load, against a [`TrustedKey`] when
//! [`LoadOptions`] names one) and [`advanced`]
//! the tract-level pieces for tools. Frame readers live in
//! `badexpert-frames`, evaluation and timing tools in `badexpert-eval`, the
//! C ABI in `badexpert-ffi`.

pub mod advanced;
pub mod alarm;
mod batch;
mod bundle;
pub mod camera;
mod error;
mod frames;
mod guard;
mod guard_core;
pub mod manifest;
mod parallel;
mod preprocess;
pub mod quantization;
mod resample;
pub mod score;
pub mod seal;
pub mod threshold;

pub use batch::BatchGuard;
pub use bundle::{sha256_file, verify_files, GuardBundle, LoadOptions, Role, BATCH_SYMBOL};
pub use camera::{CameraFrame, CameraPipeline, FrameGeometry, PixelFormat};
pub use error::{Error, Result};
pub use frames::{FrameSet, FrameShape};
pub use guard::{FrameGuard, Guard, PixelLayout, Verdict};
pub use manifest::{Manifest, ScanRecord};
pub use parallel::ParallelGuard;
pub use preprocess::{Normalization, Preprocessor};
pub use score::{Confidences, ScoreMode};
pub use seal::{SealStatus, TrustedKey};
