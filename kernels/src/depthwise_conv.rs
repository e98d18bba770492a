//! Depthwise convolution — one filter per channel (`group` = channels), the
//! middle layer of every MobileNet block — with the clamp that follows it
//! (ReLU, or ReLU6 as ONNX's `Clip(0, 6)`) folded in.
//!
//! tract 0.23 runs these through `DepthWiseConv`, which walks the output
//! pixel by pixel through a zone scanner; on PyTorch's MobileNetV2 shapes it
//! was the largest op of the profile (issue 16). Here each channel's plane
//! is zero-padded and, for a stride s > 1, split into s × s phase planes
//! (the padded rows and columns of one residue modulo s), so that every
//! kernel tap reads one contiguous run of values at any stride. The output
//! plane then starts at its bias and accumulates kh·kw shifted runs — the
//! same vectorised sum as [`super::InputConv`]'s, for one channel — and is
//! clamped as it is written.
//!
//! Input is NCHW, or CHW as tract declutters a batch of one away.
//!
//! Sums run in a different order than tract's, so outputs agree to float
//! rounding, not bit for bit.

use tract_core::internal::*;

use crate::arith::accumulate_shifted;
use crate::scratch::Scratch;

/// What follows the convolution, folded in: `min(max(v, low), high)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clamp {
    pub low: f32,
    pub high: f32,
}

impl Clamp {
    /// No clamp: the convolution's output as it is.
    pub const NONE: Clamp = Clamp { low: f32::NEG_INFINITY, high: f32::INFINITY };
    /// ReLU.
    pub const RELU: Clamp = Clamp { low: 0.0, high: f32::INFINITY };

    fn apply(&self, dst: &mut [f32], src: &[f32]) {
        if *self == Clamp::NONE {
            dst.copy_from_slice(src);
        } else {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s.max(self.low).min(self.high);
            }
        }
    }
}

/// Shape of a depthwise convolution: channels, kernel, stride and padding
/// (no dilation); the input's height and width come with each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DepthwiseGeometry {
    pub channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Padding before and after, height then width.
    pub pad: [(usize, usize); 2],
}

/// The padded planes of one channel as phase planes, and the output
/// extent, for an input of `h × w`.
#[derive(Debug, Clone, Copy)]
struct Phases {
    /// Padded height and width.
    padded: [usize; 2],
    /// Height and width of each phase plane: the padded extent ÷ stride, rounded up.
    plane: [usize; 2],
    /// Output height and width.
    output: [usize; 2],
}

impl DepthwiseGeometry {
    fn phases(&self, h: usize, w: usize) -> Option<Phases> {
        let padded = [h + self.pad[0].0 + self.pad[0].1, w + self.pad[1].0 + self.pad[1].1];
        let mut plane = [0; 2];
        let mut output = [0; 2];
        for a in 0..2 {
            if self.stride[a] == 0 || self.kernel[a] == 0 {
                return None;
            }
            output[a] = padded[a].checked_sub(self.kernel[a])? / self.stride[a] + 1;
            plane[a] = padded[a].div_ceil(self.stride[a]);
        }
        Some(Phases { padded, plane, output })
    }

    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
}

/// A depthwise convolution with its weights (`[C, kh·kw]`), biases and clamp.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseConv {
    pub geometry: DepthwiseGeometry,
    weights: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    pub clamp: Clamp,
}

impl Eq for DepthwiseConv {}

impl std::hash::Hash for DepthwiseConv {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.geometry.hash(state);
        (self.clamp.low.to_bits(), self.clamp.high.to_bits()).hash(state);
    }
}

impl DepthwiseConv {
    /// From an OIHW kernel `[C, 1, kh, kw]` (as `C · kh · kw` values) and one bias per channel.
    pub fn new(geometry: DepthwiseGeometry, kernel: &[f32], bias: &[f32], clamp: Clamp) -> TractResult<DepthwiseConv> {
        let c = geometry.channels;
        if kernel.len() != c * geometry.taps() || bias.len() != c {
            bail!(
                "DepthwiseConv: {} weights and {} biases for {c} channels of {:?} taps",
                kernel.len(),
                bias.len(),
                geometry.kernel
            );
        }
        if geometry.stride.contains(&0) || geometry.kernel.contains(&0) {
            bail!("DepthwiseConv: zero stride or kernel in {geometry:?}");
        }
        Ok(DepthwiseConv { geometry, weights: Arc::new(kernel.to_vec()), bias: Arc::new(bias.to_vec()), clamp })
    }

    pub(crate) fn run(&self, inputs: TVec<TValue>, scratch: &mut Scratch) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let g = &self.geometry;
        let (n, c, h, w) = match *input.shape() {
            [n, c, h, w] => (n, c, h, w),
            [c, h, w] => (1, c, h, w),
            _ => bail!("DepthwiseConv takes NCHW or CHW input, got shape {:?}", input.shape()),
        };
        if c != g.channels {
            bail!("DepthwiseConv expects {} channels, got {c}", g.channels);
        }
        let Some(p) = g.phases(h, w) else {
            bail!("DepthwiseConv: the {:?} kernel does not fit a {h}×{w} input padded by {:?}", g.kernel, g.pad);
        };
        let ([sy, sx], [kh, kw]) = (g.stride, g.kernel);
        let ([qh, qw], [oh, ow]) = (p.plane, p.output);
        let phase_len = qh * qw;
        // Every tap's run starts inside the phase planes and ends at most
        // (kw − 1) / sx values past them (the wide columns that are dropped).
        let (planes, wide, offsets) = scratch.buffers(sy * sx * phase_len + (kw - 1) / sx, oh * qw);
        offsets.clear();
        offsets.extend(
            (0..kh).flat_map(|ky| {
                (0..kw).map(move |kx| ((ky % sy) * sx + kx % sx) * phase_len + (ky / sy) * qw + kx / sx)
            }),
        );
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let shape: TVec<usize> = if input.rank() == 4 { tvec![n, c, oh, ow] } else { tvec![c, oh, ow] };
        crate::arith::f32_output(&shape, |out| {
            let planes_in = x.chunks_exact(h * w);
            for ((channel, plane), out_plane) in (0..c).cycle().zip(planes_in).zip(out.chunks_exact_mut(oh * ow)) {
                split_phases(plane, w, planes, g, &p);
                let taps = &self.weights[channel * kh * kw..][..kh * kw];
                accumulate_shifted(offsets, planes, taps, self.bias[channel], wide);
                for (dst, src) in out_plane.chunks_exact_mut(ow).zip(wide.chunks_exact(qw)) {
                    self.clamp.apply(dst, &src[..ow]);
                }
            }
            Ok(())
        })
    }
}

/// Writes one `? × w` plane, zero-padded by `g.pad`, as `sy × sx` phase
/// planes of `p.plane` each: padded value `(y, x)` lands in phase plane
/// `(y mod sy, x mod sx)` at `(y div sy, x div sx)`. Values past the padded
/// extent (phase planes are rounded up) and the spare tail are zero.
fn split_phases(plane: &[f32], w: usize, planes: &mut [f32], g: &DepthwiseGeometry, p: &Phases) {
    let ([sy, sx], [qh, qw]) = (g.stride, p.plane);
    let (top, left) = (g.pad[0].0, g.pad[1].0);
    planes.fill(0.0);
    for (y, row) in plane.chunks_exact(w).enumerate() {
        let py = y + top;
        let row_start = |b: usize| ((py % sy) * sx + b) * qh * qw + (py / sy) * qw;
        if sx == 1 {
            planes[row_start(0) + left..][..w].copy_from_slice(row);
            continue;
        }
        // Column phase b holds the input columns x with (x + left) mod sx = b,
        // from padded column (x + left) div sx on: a strided gather, no division per value.
        for b in 0..sx {
            let first = (b + sx - left % sx) % sx;
            let start = row_start(b) + (first + left) / sx;
            let dst = &mut planes[start..][..(w - first.min(w)).div_ceil(sx)];
            for (d, &v) in dst.iter_mut().zip(row.iter().skip(first).step_by(sx)) {
                *d = v;
            }
        }
    }
    debug_assert!(p.padded[1] <= qw * sx);
}

impl Op for DepthwiseConv {
    fn name(&self) -> StaticName {
        "DepthwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}, clamp {:?}", self.geometry, self.clamp)])
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConv {
    eval_with_scratch!();
}

impl TypedOp for DepthwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let g = &self.geometry;
        let mut dims: TVec<TDim> = match shape.rank() {
            4 => tvec![shape[0].clone(), g.channels.to_dim()],
            3 => tvec![g.channels.to_dim()],
            r => bail!("DepthwiseConv takes NCHW or CHW input, got rank {r}"),
        };
        let spatial = shape.rank() - 2;
        for a in 0..2 {
            let padded = shape[spatial + a].clone() + (g.pad[a].0 + g.pad[a].1);
            dims.push((padded - (g.kernel[a] - 1)).div_ceil(g.stride[a] as u64));
        }
        Ok(tvec!(f32::fact(&dims)))
    }

    as_op!();
}
