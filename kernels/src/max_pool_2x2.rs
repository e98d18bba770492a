//! 2×2, stride-2 max pooling on NCHW f32, the pool nearly every CNN uses.
//!
//! tract 0.23 runs this shape through a scalar loop with per-tap bounds
//! checks (its cost: docs/benchmarks.md, "Why the kernels exist"). Here each output row reads two contiguous
//! input rows, takes their element-wise max and then the max of neighbouring
//! pairs, four outputs per step with SSE on x86-64 and NEON on aarch64.
//!
//! Results equal tract's for every finite input. A NaN may propagate where
//! tract's `f32::max` would skip it; the guard rejects non-finite frames and
//! logits anyway.

use tract_core::internal::*;

/// Max pooling with a 2×2 kernel and stride 2, no padding (floor mode: an odd
/// last row or column is dropped, as ONNX does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MaxPool2x2;

impl Op for MaxPool2x2 {
    fn name(&self) -> StaticName {
        "MaxPool2x2".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2 {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let &[n, c, h, w] = input.shape() else {
            bail!("MaxPool2x2 takes NCHW input, got shape {:?}", input.shape());
        };
        let (oh, ow) = (h / 2, w / 2);
        let input = input.try_as_plain_ram()?.as_slice::<f32>()?;
        crate::arith::f32_output(&[n, c, oh, ow], |out| {
            if oh > 0 && ow > 0 {
                for (plane, out) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
                    for (y, out_row) in out.chunks_exact_mut(ow).enumerate() {
                        let top = &plane[2 * y * w..][..2 * ow];
                        let bottom = &plane[(2 * y + 1) * w..][..2 * ow];
                        pool_row(top, bottom, out_row);
                    }
                }
            }
            Ok(())
        })
    }

    op_out_of_plan!();
}

impl TypedOp for MaxPool2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = crate::arith::nchw_input("MaxPool2x2", inputs)?;
        Ok(tvec!(f32::fact(&[shape[0].clone(), shape[1].clone(), shape[2].clone() / 2u64, shape[3].clone() / 2u64])))
    }

    as_op!();
}

/// `out[x] = max(top[2x], top[2x+1], bottom[2x], bottom[2x+1])`.
fn pool_row(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    debug_assert!(top.len() == 2 * out.len() && bottom.len() == 2 * out.len());
    let done = simd_prefix(top, bottom, out);
    for x in done..out.len() {
        let a = max(top[2 * x], top[2 * x + 1]);
        let b = max(bottom[2 * x], bottom[2 * x + 1]);
        out[x] = max(a, b);
    }
}

/// The comparison the SIMD paths make (`maxps` / `fmax` agree on finite values).
#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Pools as many leading outputs as whole vectors allow; returns how many.
#[cfg(target_arch = "x86_64")]
fn simd_prefix(top: &[f32], bottom: &[f32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let steps = out.len() / 4;
    for i in 0..steps {
        // SAFETY: SSE is part of the x86-64 baseline; every index read is
        // < 8 * steps <= top.len() == bottom.len(), every write < out.len().
        unsafe {
            let t = top.as_ptr().add(8 * i);
            let b = bottom.as_ptr().add(8 * i);
            let lo = _mm_max_ps(_mm_loadu_ps(t), _mm_loadu_ps(b));
            let hi = _mm_max_ps(_mm_loadu_ps(t.add(4)), _mm_loadu_ps(b.add(4)));
            let even = _mm_shuffle_ps::<0b10_00_10_00>(lo, hi);
            let odd = _mm_shuffle_ps::<0b11_01_11_01>(lo, hi);
            _mm_storeu_ps(out.as_mut_ptr().add(4 * i), _mm_max_ps(even, odd));
        }
    }
    4 * steps
}

#[cfg(target_arch = "aarch64")]
fn simd_prefix(top: &[f32], bottom: &[f32], out: &mut [f32]) -> usize {
    use std::arch::aarch64::*;
    let steps = out.len() / 4;
    for i in 0..steps {
        // SAFETY: NEON is part of the aarch64 baseline; bounds as on x86-64.
        unsafe {
            let t = top.as_ptr().add(8 * i);
            let b = bottom.as_ptr().add(8 * i);
            let lo = vmaxq_f32(vld1q_f32(t), vld1q_f32(b));
            let hi = vmaxq_f32(vld1q_f32(t.add(4)), vld1q_f32(b.add(4)));
            vst1q_f32(out.as_mut_ptr().add(4 * i), vpmaxq_f32(lo, hi));
        }
    }
    4 * steps
}

/// Elsewhere (armv7, whose NEON intrinsics are not stable Rust) the scalar
/// loop does it all.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd_prefix(_top: &[f32], _bottom: &[f32], _out: &mut [f32]) -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_the_scalar_definition_for_every_tail_length() {
        for ow in 0..13 {
            let top: Vec<f32> = (0..2 * ow).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            let bottom: Vec<f32> = (0..2 * ow).map(|i| ((i * 53) % 13) as f32 - 6.0).collect();
            let mut out = vec![0.0; ow];
            pool_row(&top, &bottom, &mut out);
            for x in 0..ow {
                let want =
                    [top[2 * x], top[2 * x + 1], bottom[2 * x], bottom[2 * x + 1]].into_iter().fold(f32::MIN, f32::max);
                assert_eq!(out[x], want, "ow {ow}, x {x}");
            }
        }
    }
}
