//! Host converter of **badexpert**: turns a suspect ONNX classifier and a
//! small clean reserve into a guard bundle for `badexpert-runtime`
//! (BaDExpert, Xie et al., ICLR 2024).
//!
//! ```no_run
//! use badexpert_converter::{convert, ConvertOptions};
//! use badexpert_frames::FrameSource;
//! use badexpert_runtime::Normalization;
//! use std::path::Path;
//!
//! let reserve = FrameSource::detect(Path::new("models/badnet-fmnist/reserve-images-idx3-ubyte.gz")).load()?;
//! let norm = Normalization { scale: 1.0 / 255.0, mean: vec![0.2860], std: vec![0.3530] };
//! let conversion = convert(
//!     Path::new("models/badnet-fmnist/model.onnx"),
//!     &reserve,
//!     Path::new("/tmp/bundle"),
//!     &ConvertOptions::new(norm),
//!     &(), // no progress display
//! )?;
//! println!("τ = {}", conversion.manifest.decision.threshold);
//! # Ok::<(), badexpert_converter::Error>(())
//! ```
//!
//! Where each step of docs/design.md §3 lives: [`onnx`] (ONNX → trainable libtorch
//! graph and back), [`expert`] (§3.1, B), [`auxiliary`] (§3.2, M′),
//! [`train`] (the shared fine-tuning loop), [`calibration`] (§3.4, τ via the
//! runtime's guard), [`export`] (NNEF plans), [`convert`] (the pipeline),
//! [`device`] (CPU or CUDA), [`output`] (never losing a bundle or a user's files), [`signing`] (keys that sign bundles); [`scan`] tells whether the model is backdoored at
//! all, and toward which label (clean unlearning, EBYD).
//! Attacks, demo models, reports and ablations live in `badexpert-lab`, the
//! `badexpert-convert` binary in `convert-cli/`.

pub mod augment;
pub mod auxiliary;
pub mod calibration;
pub mod convert;
pub mod device;
mod error;
pub mod expert;
pub mod export;
pub mod inversion;
mod jobs;
pub mod onnx;
pub mod output;
pub mod process;
pub mod scan;
pub mod signing;
pub mod suspect;
pub mod train;

pub use convert::{convert, Conversion, ConvertOptions};
pub use error::{Error, Result};
pub use scan::{scan, scan_model, ScanOptions};
pub use signing::SecretKey;
