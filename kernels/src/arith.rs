//! Small pieces every kernel shares: how an op writes its f32 output and
//! checks its input, the folded ReLU, and the multiply-add and accumulator
//! types of the register tiles.

use tract_core::internal::*;

/// A new f32 tensor of `shape`, zeroed then written by `fill`: the output
/// of one of our ops' `eval`.
pub(crate) fn f32_output(
    shape: &[usize],
    fill: impl FnOnce(&mut [f32]) -> TractResult<()>,
) -> TractResult<TVec<TValue>> {
    let mut output = Tensor::zero::<f32>(shape)?;
    fill(output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?)?;
    Ok(tvec!(output.into_tvalue()))
}

/// The NCHW input shape of one of our ops, or an error naming the op.
pub(crate) fn nchw_input<'a>(op: &str, inputs: &[&'a TypedFact]) -> TractResult<&'a ShapeFact> {
    let shape = &inputs[0].shape;
    if shape.rank() != 4 {
        bail!("{op} takes NCHW input, got rank {}", shape.rank());
    }
    Ok(shape)
}

/// A folded ReLU: `max(v, 0)` in place.
pub(crate) fn rectify(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// `w·b + c`, fused where the target has a fused multiply-add instruction
/// (elsewhere `mul_add` would be a slow library call).
#[inline(always)]
pub(crate) fn multiply_add(w: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_arch = "aarch64") {
        w.mul_add(b, c)
    } else {
        w * b + c
    }
}

/// What a kernel's register tile sums in: f32, or i32 for int8 products.
pub(crate) trait Accumulated: Copy {
    fn value(self) -> f32;
}

impl Accumulated for f32 {
    fn value(self) -> f32 {
        self
    }
}

impl Accumulated for i32 {
    fn value(self) -> f32 {
        self as f32
    }
}
