//! Small pieces every kernel shares: how an op writes its f32 output and
//! checks its input, the folded ReLU, the multiply-add and accumulator
//! types of the register tiles, and the shifted sum of the direct
//! convolutions.

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

/// The shifted sum of the direct convolutions: `wide[i] = bias + Σ_t
/// taps[t] · planes[offsets[t] + i]`, each tap one contiguous run (a saxpy
/// the compiler vectorises, with AVX2 + FMA when the CPU has them). With
/// `offsets` the taps' positions in padded planes `pw` wide, `wide` is an
/// output plane `pw` wide whose last columns are scratch.
pub(crate) fn accumulate_shifted(offsets: &[usize], padded: &[f32], taps: &[f32], bias: f32, wide: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the feature the function is compiled for was just detected.
        return unsafe { accumulate_shifted_avx2(offsets, padded, taps, bias, wide) };
    }
    accumulate_shifted_body(offsets, padded, taps, bias, wide)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn accumulate_shifted_avx2(offsets: &[usize], padded: &[f32], taps: &[f32], bias: f32, wide: &mut [f32]) {
    accumulate_shifted_body(offsets, padded, taps, bias, wide)
}

/// Outputs accumulated in registers at a time: four 8-lane vectors.
const BLOCK: usize = 32;

#[inline(always)]
fn accumulate_shifted_body(offsets: &[usize], padded: &[f32], taps: &[f32], bias: f32, wide: &mut [f32]) {
    let offsets = &offsets[..taps.len()];
    let len = wide.len();
    let mut start = 0;
    for block in wide.chunks_mut(BLOCK) {
        if block.len() == BLOCK {
            let mut acc = [bias; BLOCK];
            for (&offset, &weight) in offsets.iter().zip(taps) {
                let src: &[f32; BLOCK] = padded[offset + start..][..BLOCK].try_into().expect("BLOCK values");
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += weight * v;
                }
            }
            block.copy_from_slice(&acc);
        } else {
            block.fill(bias);
            for (&offset, &weight) in offsets.iter().zip(taps) {
                for (a, &v) in block.iter_mut().zip(&padded[offset + start..]) {
                    *a += weight * v;
                }
            }
        }
        start += BLOCK;
    }
    debug_assert!(start >= len);
}
