//! Convolution as a weight-streaming matrix product, for the late layers of
//! a CNN: many channels, few output pixels (ResNet18-CIFAR's last stage has
//! 512 × 4608 weights per convolution and 16 output pixels).
//!
//! tract 0.23 tiles its products 16 weights × 6 pixels. With 16 pixels a
//! panel of weights is read three times and the last tile is a third empty;
//! the profile shows these layers at ~33 GFLOP/s against ~57 for the earlier
//! ones, and they are a third of ResNet18's time. Here the weights are packed
//! once at load into panels of [`MR`] output channels, and each panel meets
//! [`NR`] pixels at a time (12 AVX2 accumulators), so a weight is read once
//! per [`NR`] pixels and the layer streams its weights at memory speed.
//!
//! Sums run in a different order than tract's, so outputs agree to float
//! rounding, not bit for bit.

use tract_core::internal::*;

use super::pad_planes::pad_plane;
use super::{multiply_add, Scratch};

/// Output channels per register tile (one panel of packed weights).
pub const MR: usize = 6;
/// Output pixels per register tile (two 8-lane vectors).
pub const NR: usize = 16;
/// What stays close (L2, else the nearby L3) while the other operand
/// streams past it. An unfolded input (`K × pixels` f32) this small is
/// unfolded whole and every weight panel passes over it once; otherwise the
/// input is unfolded [`NR`] pixels at a time and the packed weights, which
/// must then be this small, pass once per chunk. Measured on a Zen 3 core
/// (512 KiB L2): ResNet18's 8×8 stage (590 KiB unfolded) ran as fast in
/// either order (0.94 ms whole, 0.90–1.02 ms by chunk), so the bound is
/// not tight.
const IN_CACHE_BYTES: usize = 768 * 1024;

/// Shape of a 2-D NCHW convolution with concrete spatial input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Padding before and after, height then width.
    pub pad: [(usize, usize); 2],
}

impl ConvGeometry {
    fn padded(&self) -> [usize; 2] {
        [self.input[0] + self.pad[0].0 + self.pad[0].1, self.input[1] + self.pad[1].0 + self.pad[1].1]
    }

    /// Output height and width, `None` when the kernel does not fit.
    pub fn output(&self) -> Option<[usize; 2]> {
        let p = self.padded();
        let mut out = [0; 2];
        for a in 0..2 {
            let span = self.dilation[a] * (self.kernel[a] - 1) + 1;
            out[a] = p[a].checked_sub(span)? / self.stride[a] + 1;
        }
        Some(out)
    }

    /// Inner dimension of the product: `C · kh · kw`.
    pub fn depth(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }
}

/// A convolution whose weights are packed at load for [`tile`].
#[derive(Debug, Clone, PartialEq)]
pub struct PackedConv {
    pub geometry: ConvGeometry,
    /// Weights in panels of [`MR`] output channels: `packed[(p·K + k)·MR + r]`
    /// is output channel `p·MR + r`, tap `k` (zero past the last channel).
    packed: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    /// Offset of each tap `k = (c, ky, kx)` into the padded input planes.
    taps: Arc<Vec<usize>>,
    /// Offset of each output pixel's window into the padded planes, padded
    /// to whole chunks of [`NR`] with 0 (those columns are computed, then dropped).
    pixels: Arc<Vec<usize>>,
    /// Whether a ReLU follows (folded in when the tile is written).
    pub relu: bool,
}

impl Eq for PackedConv {}

impl std::hash::Hash for PackedConv {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.geometry.hash(state);
        self.relu.hash(state);
    }
}

impl PackedConv {
    /// Packs an OIHW `kernel` (`[O, I, KH, KW]`) with one bias per output channel.
    pub fn new(geometry: ConvGeometry, kernel: &[f32], bias: &[f32], relu: bool) -> TractResult<PackedConv> {
        let (o, k) = (geometry.out_channels, geometry.depth());
        if kernel.len() != o * k || bias.len() != o {
            bail!("PackedConv: {} weights and {} biases for {o} outputs of depth {k}", kernel.len(), bias.len());
        }
        let Some([oh, ow]) = geometry.output() else { bail!("PackedConv: the kernel does not fit {geometry:?}") };
        let panels = o.div_ceil(MR);
        let mut packed = vec![0f32; panels * k * MR];
        for (row, weights) in kernel.chunks_exact(k).enumerate() {
            let panel = &mut packed[row / MR * k * MR..][..k * MR];
            for (tap, &w) in weights.iter().enumerate() {
                panel[tap * MR + row % MR] = w;
            }
        }
        let [ph, pw] = geometry.padded();
        let [kh, kw] = geometry.kernel;
        let [dy, dx] = geometry.dilation;
        let taps = (0..geometry.in_channels)
            .flat_map(|c| (0..kh).flat_map(move |y| (0..kw).map(move |x| c * ph * pw + y * dy * pw + x * dx)))
            .collect();
        let [sy, sx] = geometry.stride;
        let mut pixels: Vec<usize> = (0..oh).flat_map(|y| (0..ow).map(move |x| y * sy * pw + x * sx)).collect();
        pixels.resize((oh * ow).div_ceil(NR) * NR, 0);
        Ok(PackedConv {
            geometry,
            packed: Arc::new(packed),
            bias: bias.to_vec().into(),
            taps: Arc::new(taps),
            pixels: Arc::new(pixels),
            relu,
        })
    }

    /// Whether one of the two operands stays in cache while the other
    /// streams. When neither does (wide layers on large images), the product
    /// would re-read weights from memory for every chunk of pixels: tract's
    /// own blocked product is the better choice there.
    pub fn streams_well(geometry: &ConvGeometry) -> bool {
        let weights = geometry.out_channels.div_ceil(MR) * MR * geometry.depth() * 4;
        geometry.output().is_some() && (Self::unfolded_bytes(geometry) <= IN_CACHE_BYTES || weights <= IN_CACHE_BYTES)
    }

    fn unfolded_bytes(geometry: &ConvGeometry) -> usize {
        let [oh, ow] = geometry.output().unwrap_or([0, 0]);
        geometry.depth() * (oh * ow).div_ceil(NR) * NR * 4
    }

    /// Convolves a batch of NCHW images into `out` (`[N, O, oh, ow]`).
    fn convolve(&self, x: &[f32], out: &mut [f32], scratch: &mut Scratch) -> TractResult<()> {
        let g = &self.geometry;
        let [h, w] = g.input;
        let [ph, pw] = g.padded();
        let [oh, ow] = g.output().context("PackedConv: the kernel does not fit")?;
        let (c, o, k, n) = (g.in_channels, g.out_channels, g.depth(), oh * ow);
        let chunks = self.pixels.len() / NR;
        let unfold_all = Self::unfolded_bytes(g) <= IN_CACHE_BYTES;
        let (padded, work, _) = scratch.buffers(c * ph * pw, k * NR * if unfold_all { chunks } else { 1 });
        for (image, out_image) in x.chunks_exact(c * h * w).zip(out.chunks_exact_mut(o * n)) {
            let planes: &[f32] = if g.pad == [(0, 0); 2] {
                image
            } else {
                for (plane, dst) in image.chunks_exact(h * w).zip(padded.chunks_exact_mut(ph * pw)) {
                    pad_plane(plane, w, dst, pw, g.pad[0].0, g.pad[1].0, 0.0);
                }
                padded
            };
            if unfold_all {
                for (chunk, dst) in work.chunks_exact_mut(k * NR).enumerate() {
                    self.unfold(planes, chunk, dst);
                }
                for panel in 0..o.div_ceil(MR) {
                    for (chunk, unfolded) in work.chunks_exact(k * NR).enumerate() {
                        self.tile_into(panel, chunk, unfolded, out_image);
                    }
                }
            } else {
                for chunk in 0..chunks {
                    self.unfold(planes, chunk, work);
                    for panel in 0..o.div_ceil(MR) {
                        self.tile_into(panel, chunk, work, out_image);
                    }
                }
            }
        }
        Ok(())
    }

    /// Unfolds the [`NR`] pixels of `chunk` into `dst` (`K × NR`, tap-major).
    fn unfold(&self, planes: &[f32], chunk: usize, dst: &mut [f32]) {
        let pixels: &[usize; NR] = self.pixels[chunk * NR..][..NR].try_into().expect("NR pixels");
        let first = pixels[0];
        let contiguous = pixels.iter().enumerate().all(|(j, &p)| p == first + j);
        // Taps ascend (channel, row, column, each kernel window inside the
        // padded plane), so the last is the largest.
        let last_tap = self.taps.last().copied().unwrap_or(0);
        let last_pixel = if contiguous { first + NR - 1 } else { pixels.iter().copied().max().unwrap_or(0) };
        // Every tap offset plus every pixel offset (and, for a contiguous chunk,
        // the NR values after its first) stays inside the planes.
        assert!(last_tap + last_pixel < planes.len(), "PackedConv: planes shorter than the geometry");
        for (&tap, row) in self.taps.iter().zip(dst.chunks_exact_mut(NR)) {
            let row: &mut [f32; NR] = row.try_into().expect("NR values");
            if contiguous {
                row.copy_from_slice(&planes[tap + first..][..NR]);
            } else {
                for (v, &p) in row.iter_mut().zip(pixels) {
                    // SAFETY: tap ≤ last_tap and p ≤ last_pixel, checked above.
                    *v = unsafe { *planes.get_unchecked(tap + p) };
                }
            }
        }
    }

    /// One [`MR`] × [`NR`] tile of the output, biased (and rectified), written where it falls
    /// inside `out` (`[O, pixels]`).
    fn tile_into(&self, panel: usize, chunk: usize, unfolded: &[f32], out: &mut [f32]) {
        let k = self.geometry.depth();
        let n = out.len() / self.geometry.out_channels;
        let weights = &self.packed[panel * k * MR..][..k * MR];
        let mut acc = [[0f32; NR]; MR];
        tile(k, weights, unfolded, &mut acc);
        let (row0, col0) = (panel * MR, chunk * NR);
        let cols = NR.min(n - col0);
        for (r, acc) in acc.iter().enumerate().take(self.geometry.out_channels - row0) {
            let bias = self.bias[row0 + r];
            let dst = &mut out[(row0 + r) * n + col0..][..cols];
            for (dst, &v) in dst.iter_mut().zip(acc) {
                *dst = v + bias;
            }
            if self.relu {
                super::rectify(dst);
            }
        }
    }

    fn output_shape(&self, batch: usize) -> TractResult<[usize; 4]> {
        let [oh, ow] = self.geometry.output().context("PackedConv: the kernel does not fit")?;
        Ok([batch, self.geometry.out_channels, oh, ow])
    }

    pub(crate) fn run(&self, inputs: TVec<TValue>, scratch: &mut Scratch) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let g = &self.geometry;
        let &[n, c, h, w] = input.shape() else {
            bail!("PackedConv takes NCHW input, got shape {:?}", input.shape());
        };
        if [c, h, w] != [g.in_channels, g.input[0], g.input[1]] {
            bail!("PackedConv expects {}×{}×{} images, got {c}×{h}×{w}", g.in_channels, g.input[0], g.input[1]);
        }
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        super::f32_output(&self.output_shape(n)?, |out| self.convolve(x, out, scratch))
    }
}

/// `acc[r][j] = Σ_k weights[k·MR + r] · unfolded[k·NR + j]`.
fn tile(k: usize, weights: &[f32], unfolded: &[f32], acc: &mut [[f32; NR]; MR]) {
    assert!(weights.len() >= k * MR && unfolded.len() >= k * NR, "tile operands shorter than depth {k}");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features were just detected; both operands were checked long enough.
        return unsafe { tile_avx2(k, weights, unfolded, acc) };
    }
    tile_portable(k, weights, unfolded, acc)
}

/// How far ahead (in depth steps) the weights are prefetched.
#[cfg(target_arch = "x86_64")]
const PREFETCH_STEPS: usize = 32;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(k: usize, weights: &[f32], unfolded: &[f32], acc: &mut [[f32; NR]; MR]) {
    use std::arch::x86_64::*;
    let (a, b) = (weights.as_ptr(), unfolded.as_ptr());
    let mut c = [[_mm256_setzero_ps(); 2]; MR];
    // SAFETY (all reads): i < k and the caller checked k·MR weights and k·NR
    // unfolded values; prefetches never fault.
    let step = |i: usize, c: &mut [[__m256; 2]; MR]| {
        let b0 = _mm256_loadu_ps(b.add(i * NR));
        let b1 = _mm256_loadu_ps(b.add(i * NR + 8));
        for (r, c) in c.iter_mut().enumerate() {
            let w = _mm256_broadcast_ss(&*a.add(i * MR + r));
            c[0] = _mm256_fmadd_ps(w, b0, c[0]);
            c[1] = _mm256_fmadd_ps(w, b1, c[1]);
        }
    };
    let mut i = 0;
    while i + 4 <= k {
        _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add((i + PREFETCH_STEPS) * MR) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add((i + PREFETCH_STEPS) * MR + 16) as *const i8);
        step(i, &mut c);
        step(i + 1, &mut c);
        step(i + 2, &mut c);
        step(i + 3, &mut c);
        i += 4;
    }
    while i < k {
        step(i, &mut c);
        i += 1;
    }
    for (dst, c) in acc.iter_mut().zip(&c) {
        _mm256_storeu_ps(dst.as_mut_ptr(), c[0]);
        _mm256_storeu_ps(dst.as_mut_ptr().add(8), c[1]);
    }
}

/// The same tile in plain Rust; aarch64 compiles it to NEON `fmla`.
#[inline(always)]
fn tile_portable(k: usize, weights: &[f32], unfolded: &[f32], acc: &mut [[f32; NR]; MR]) {
    let mut c = [[0f32; NR]; MR];
    for (w, b) in weights.chunks_exact(MR).zip(unfolded.chunks_exact(NR)).take(k) {
        for (c, &w) in c.iter_mut().zip(w) {
            for (c, &b) in c.iter_mut().zip(b) {
                *c = multiply_add(w, b, *c);
            }
        }
    }
    *acc = c;
}

impl Op for PackedConv {
    fn name(&self) -> StaticName {
        "PackedConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}, relu: {}", self.geometry, self.relu)])
    }

    op_as_typed_op!();
}

impl EvalOp for PackedConv {
    eval_with_scratch!();
}

impl TypedOp for PackedConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = super::nchw_input("PackedConv", inputs)?;
        let [_, o, oh, ow] = self.output_shape(0)?;
        Ok(tvec!(f32::fact(&[shape[0].clone(), o.to_dim(), oh.to_dim(), ow.to_dim()])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dispatched_tile_matches_the_portable_one_for_every_depth_tail() {
        for k in [1, 3, 4, 5, 37, 288] {
            let weights: Vec<f32> = (0..k * MR).map(|i| ((i * 131) % 97) as f32 / 31.0 - 1.5).collect();
            let unfolded: Vec<f32> = (0..k * NR).map(|i| ((i * 71) % 89) as f32 / 29.0 - 1.4).collect();
            let (mut fast, mut plain) = ([[0f32; NR]; MR], [[0f32; NR]; MR]);
            tile(k, &weights, &unfolded, &mut fast);
            tile_portable(k, &weights, &unfolded, &mut plain);
            for (r, (a, b)) in fast.iter().flatten().zip(plain.iter().flatten()).enumerate() {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "depth {k}, value {r}: {a} vs {b}");
            }
        }
    }
}
