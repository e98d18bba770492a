//! badexpert's own kernels in tract plans, for ops the profile showed tract
//! 0.23 runs slowly on the shapes guarded models use. Placed at load by
//! [`optimize`]: convolutions before tract's optimizer (which would lower
//! them to im2col + matmul) — [`InputConv`] for gray/RGB input layers,
//! [`PackedConv`] for the others, [`DepthwiseConv`] for one filter per
//! channel, [`PackedDense`] for dense layers on a few
//! rows, each with a following ReLU folded in — and pools and pads after
//! it. A node that does not match a kernel's exact preconditions keeps
//! tract's op.
//!
//! ```no_run
//! use tract_core::prelude::*;
//!
//! # fn plan(model: TypedModel) -> TractResult<()> {
//! // tract's optimizer, with badexpert's kernels placed before and after it
//! let plan = badexpert_kernels::optimize(model)?.into_runnable()?;
//! let logits = plan.run(tvec![Tensor::zero::<f32>(&[1, 1, 28, 28])?.into()])?;
//! # Ok(()) }
//! ```
//!
//! Modules: one per kernel ([`input_conv`], [`packed_conv`], [`depthwise_conv`], [`packed_dense`],
//! [`max_pool_2x2`], [`pad_planes`]), [`panels`] (the one weight layout the
//! product kernels read), [`int8`] (quantization), and the private rewrite
//! pass that places them, the per-thread scratch buffers and shared arithmetic.

/// `EvalOp` for a kernel run by `run(inputs, &mut Scratch)` with this
/// thread's [`Scratch`].
macro_rules! eval_with_scratch {
    () => {
        fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
            $crate::scratch::with_scratch(|scratch| self.run(inputs, scratch))
        }

        op_out_of_plan!();
    };
}

mod arith;
pub mod depthwise_conv;
pub mod input_conv;
pub mod int8;
pub mod max_pool_2x2;
pub mod packed_conv;
pub mod packed_dense;
pub mod pad_planes;
pub mod panels;
mod rewrite;
mod scratch;
mod weights;

pub use depthwise_conv::{Clamp, DepthwiseConv, DepthwiseGeometry};
pub use input_conv::InputConv;
pub use int8::ActivationScales;
pub use max_pool_2x2::MaxPool2x2;
pub use packed_conv::{ConvGeometry, PackedConv};
pub use packed_dense::PackedDense;
pub use pad_planes::PadPlanes;
pub use rewrite::{int8_layers, optimize, optimize_with, rewrite_decluttered, rewrite_optimized};
