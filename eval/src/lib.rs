//! Evaluation and timing tools for badexpert guards, apart from the guard
//! core: CA / ASR / AUROC of BaDExpert side by side with the STRIP and
//! SCALE-UP baselines, latency of the guard modes against M alone, per-op
//! profiles of the plans, and frame-by-frame agreement of two bundles.
//!
//! ```
//! use badexpert_eval::evaluate::{evaluate_detectors, DetectorKind};
//! use badexpert_frames::FrameSource;
//! use badexpert_runtime::{Guard, GuardBundle};
//!
//! let dir = std::path::Path::new("../models/badnet-fmnist");
//! let bundle = GuardBundle::open(dir.join("bundle"))?;
//! let clean = FrameSource::detect(&dir.join("eval-clean-images-idx3-ubyte.gz")).load()?.head(50);
//! let triggered = FrameSource::detect(&dir.join("eval-badnet-images-idx3-ubyte.gz")).load()?.head(50);
//! let mut guard = Guard::new(&bundle)?;
//! let reports = evaluate_detectors(&bundle, &mut guard, &clean, &triggered, 0, &[DetectorKind::BadExpert], 100)?;
//! println!("AUROC {:?}", reports[0].evaluation.auroc);
//! # Ok::<(), badexpert_runtime::Error>(())
//! ```
//!
//! [`evaluate`] scores detectors with the runtime's metrics; [`baselines`]
//! holds STRIP and SCALE-UP; [`latency`] times `Guard`, `ParallelGuard` and
//! `BatchGuard` against M alone in interleaved rounds; [`profile`] times
//! each op of each plan; [`agreement`] compares two bundles' verdicts (f16
//! or int8 against f32); [`table`] renders every markdown table.

pub mod agreement;
pub mod baselines;
pub mod evaluate;
pub mod latency;
pub mod metrics;
pub mod profile;
pub mod table;
