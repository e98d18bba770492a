//! Post-training int8 arithmetic for [`PackedConv`](super::PackedConv) and
//! [`PackedDense`](super::PackedDense): symmetric, zero point 0.
//!
//! Weights are quantized at load, one scale per output channel (its largest
//! magnitude is 127). Activations entering a layer are quantized with one
//! scale per layer that the converter calibrated on clean frames
//! (`badexpert-runtime`'s `quantization`); values past the calibrated range saturate at
//! ±127. Products are summed exactly in i32 and turned back into f32 with
//! the two scales, so everything between these layers (pools, residual
//! adds, the input layer, the softmax) stays f32.
//!
//! The values are int8 but travel in 16-bit lanes, two depth steps paired
//! per 32-bit lane: AVX2's `vpmaddwd` multiplies 16 such pairs and sums
//! each pair exactly, where its 8-bit `vpmaddubsw` would saturate. NEON
//! gets the same layout from the plain-Rust kernels.

use std::collections::BTreeMap;

use tract_core::internal::*;

/// Largest quantized magnitude.
pub const LEVELS: f32 = 127.0;

/// Per-layer activation scales of one plan, keyed by the name of the node
/// a kernel replaces: a quantized activation `q` stands for `q · scale`.
pub type ActivationScales = BTreeMap<String, f32>;

/// The scale that maps `max_abs` to [`LEVELS`]; 1 for an all-zero range
/// (every value then quantizes to 0 whatever the scale).
pub fn scale_for(max_abs: f32) -> f32 {
    if max_abs > 0.0 && max_abs.is_finite() {
        max_abs / LEVELS
    } else {
        1.0
    }
}

/// Quantizes each row of `depth` weights with its own scale; returns the
/// values and the scales.
pub fn quantize_rows(weights: &[f32], depth: usize) -> (Vec<i8>, Vec<f32>) {
    let mut values = Vec::with_capacity(weights.len());
    let mut scales = Vec::with_capacity(weights.len() / depth.max(1));
    for row in weights.chunks(depth.max(1)) {
        let scale = scale_for(row.iter().fold(0f32, |m, w| m.max(w.abs())));
        values.extend(row.iter().map(|&w| quantize_one(w / scale) as i8));
        scales.push(scale);
    }
    (values, scales)
}

/// A layer's int8 weights, packed in panels of `width` output rows with
/// two depth steps side by side, as the int8 tiles read them:
/// `packed[((p·K2 + i)·width + r)·2 + t]` is row `p·width + r`, depth
/// `2i + t`, with `K2 = ⌈depth / 2⌉` pairs (zero past the last row and
/// depth). `T` is how the values are stored: i16 where a tile broadcasts
/// a pair, i8 where a tile streams them (a quarter of f32's bytes).
#[derive(Debug, PartialEq)]
pub struct PairPanels<T> {
    pub packed: Vec<T>,
    /// The calibrated scale of the input activations.
    pub input_scale: f32,
    /// Per output row: input scale × the row's weight scale.
    pub output_scales: Vec<f32>,
}

impl<T: Copy + Default + From<i8>> PairPanels<T> {
    /// Quantizes row-major `weights` (rows of `depth`) per row and packs
    /// them; `op` names the kernel in errors.
    pub fn pack(op: &str, weights: &[f32], depth: usize, width: usize, input_scale: f32) -> TractResult<PairPanels<T>> {
        if !(input_scale > 0.0 && input_scale.is_finite()) {
            bail!("{op}: int8 input scale {input_scale} is not a positive number");
        }
        let (values, scales) = quantize_rows(weights, depth);
        let values: Vec<T> = values.into_iter().map(T::from).collect();
        let packed = crate::panels::pack(&values, depth, width, 2);
        let output_scales = scales.iter().map(|s| s * input_scale).collect();
        Ok(PairPanels { packed, input_scale, output_scales })
    }
}

/// `round(v)` clamped to ±[`LEVELS`].
#[inline(always)]
fn quantize_one(v: f32) -> i16 {
    let v = v.clamp(-LEVELS, LEVELS);
    // `as` truncates toward zero (and maps NaN to 0): add half away from zero first.
    (v + 0.5f32.copysign(v)) as i16
}

/// `dst[i] = round(src[i] / scale)`, saturating at ±127.
pub fn quantize_into(src: &[f32], scale: f32, dst: &mut [i16]) {
    assert_eq!(src.len(), dst.len(), "quantize_into: {} values into {}", src.len(), dst.len());
    let inverse = 1.0 / scale;
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was just detected; the lengths are equal.
        return unsafe { quantize_avx2(src, inverse, dst) };
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = quantize_one(s * inverse);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(src: &[f32], inverse: f32, dst: &mut [i16]) {
    use std::arch::x86_64::*;
    let (scale, low, high) = (_mm256_set1_ps(inverse), _mm256_set1_ps(-LEVELS), _mm256_set1_ps(LEVELS));
    let mut src_chunks = src.chunks_exact(16);
    let mut dst_chunks = dst.chunks_exact_mut(16);
    for (s, d) in (&mut src_chunks).zip(&mut dst_chunks) {
        // SAFETY: both chunks hold 16 values.
        let q = |p: *const f32| {
            let v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(p), scale), low), high);
            _mm256_cvtps_epi32(v)
        };
        let (a, b) = (q(s.as_ptr()), q(s.as_ptr().add(8)));
        // packs works within 128-bit halves: put the eight values of each input back in order.
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, b));
        _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, packed);
    }
    for (d, &s) in dst_chunks.into_remainder().iter_mut().zip(src_chunks.remainder()) {
        *d = quantize_one(s * inverse);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_to_the_nearest_step_and_saturate() {
        let src: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.37).chain([1e9, -1e9]).collect();
        let mut fast = vec![0i16; src.len()];
        quantize_into(&src, 0.05, &mut fast);
        for (&s, &q) in src.iter().zip(&fast) {
            let expected = (s / 0.05).clamp(-127.0, 127.0);
            assert!((q as f32 - expected).abs() <= 0.5 + 1e-3, "{s} → {q}, expected ≈ {expected}");
        }
        assert_eq!(&fast[fast.len() - 2..], &[127, -127]);
    }

    #[test]
    fn each_row_reaches_full_scale() {
        let (q, scales) = quantize_rows(&[0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 2.0, 1.0, -0.5], 3);
        assert_eq!(q, [64, -127, 32, 0, 0, 0, 127, 64, -32]);
        assert_eq!(scales, [1.0 / 127.0, 1.0, 2.0 / 127.0]);
    }
}
