//! The research side of **badexpert**, apart from the converter and the
//! runtime: backdoor attacks to test the guard with, backdoored demo models
//! trained on Fashion-MNIST, the evaluation report that sets BaDExpert beside
//! STRIP and SCALE-UP, its plots, and ablations over the reserve size and
//! the unlearning rate.
//!
//! ```
//! use badexpert_lab::attack::Attack;
//! use badexpert_runtime::{FrameSet, FrameShape};
//!
//! let clean = FrameSet::new(FrameShape::new(1, 28, 28), vec![128; 2 * 28 * 28], Some(vec![3, 7]))?;
//! let triggered = "badnet".parse::<Attack>().expect("a known attack").triggered(&clean);
//! assert_ne!(triggered.frame(0), clean.frame(0));
//! # Ok::<(), badexpert_runtime::Error>(())
//! ```
//!
//! [`attack`] (docs/design.md §4) stamps triggers; [`demo`] trains and
//! writes backdoored models with their reserve and evaluation slices;
//! [`report`] compares the detectors across them and [`plot`] draws its
//! figures; [`ablation`] varies the reserve size and the expert's rate;
//! [`timing`] writes bundles for the speed suite; [`canary`] implants a
//! known trigger into a copy of a model.

pub mod ablation;
pub mod attack;
pub mod canary;
pub mod demo;
pub mod plot;
pub mod report;
pub mod timing;
