//! Direct convolution for a network's first layer: few input channels (a
//! gray or RGB frame), stride 1.
//!
//! tract lowers every convolution to a padded copy, an im2col and a matrix
//! product. With k = C·kh·kw = 9 for a gray 3×3 layer, the product is all
//! packing and no arithmetic (a sixth of the demo CNN's run: docs/benchmarks.md). Here each
//! output plane starts at its bias and accumulates one shifted input row per
//! kernel tap (a saxpy the compiler vectorizes, with AVX2 + FMA when the CPU
//! has them), so the output plane stays in L1 and nothing is packed.
//!
//! Sums run in a different order than tract's, so outputs agree to float
//! rounding (≤ 1e-5 relative in the tests), not bit for bit.

use tract_core::internal::*;

use super::pad_planes::pad_plane;
use crate::arith::accumulate_shifted;
use crate::scratch::Scratch;

/// Largest input channel count the direct kernel takes.
pub const MAX_INPUT_CHANNELS: usize = 4;

/// Convolution of NCHW f32 input with an OIHW kernel, stride 1, no
/// dilation, zero padding, one group.
#[derive(Debug, Clone, PartialEq)]
pub struct InputConv {
    /// `[O, I, KH, KW]`.
    pub kernel: Arc<Tensor>,
    /// One per output channel.
    pub bias: Arc<Tensor>,
    /// Padding before and after, height then width.
    pub pad: [(usize, usize); 2],
    /// Whether a ReLU follows (folded in when the plane is written).
    pub relu: bool,
}

impl Eq for InputConv {}

impl std::hash::Hash for InputConv {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kernel.shape().hash(state);
        self.pad.hash(state);
        self.relu.hash(state);
    }
}

impl InputConv {
    fn dims(&self) -> (usize, usize, usize, usize) {
        let s = self.kernel.shape();
        (s[0], s[1], s[2], s[3])
    }
}

impl Op for InputConv {
    fn name(&self) -> StaticName {
        "InputConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("kernel {:?}, pad {:?}, relu: {}", self.kernel.shape(), self.pad, self.relu)])
    }

    op_as_typed_op!();
}

impl EvalOp for InputConv {
    eval_with_scratch!();
}

impl InputConv {
    pub(crate) fn run(&self, inputs: TVec<TValue>, scratch: &mut Scratch) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let &[n, c, h, w] = input.shape() else {
            bail!("InputConv takes NCHW input, got shape {:?}", input.shape());
        };
        let (o, i, kh, kw) = self.dims();
        if c != i {
            bail!("InputConv expects {i} input channels, got {c}");
        }
        let [(pt, pb), (pl, pr)] = self.pad;
        let (ph, pw) = (h + pt + pb, w + pl + pr);
        if ph < kh || pw < kw {
            bail!("InputConv: padded input {ph}×{pw} is smaller than the {kh}×{kw} kernel");
        }
        let (oh, ow) = (ph - kh + 1, pw - kw + 1);
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let kernel = self.kernel.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = self.bias.try_as_plain_ram()?.as_slice::<f32>()?;

        // Zero-padded copy of one image's planes (plus kw − 1 spare values so
        // the last wide row can be read whole), reused across the batch.
        // One output plane computed pw wide (`wide`): every tap is then a single
        // contiguous saxpy over the plane; the kw − 1 extra columns are dropped.
        let (padded, wide, offsets) = scratch.buffers(c * ph * pw + kw - 1, oh * pw);
        // Offset of every kernel tap into the padded planes, in OIHW order.
        offsets.clear();
        offsets
            .extend((0..c).flat_map(|c| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| c * ph * pw + ky * pw + kx))));
        crate::arith::f32_output(&[n, o, oh, ow], |out| {
            for (image, out_image) in x.chunks_exact(c * h * w).zip(out.chunks_exact_mut(o * oh * ow)) {
                for (plane, dst) in image.chunks_exact(h * w).zip(padded.chunks_exact_mut(ph * pw)) {
                    pad_plane(plane, w, dst, pw, pt, pl, 0.0);
                }
                padded[c * ph * pw..].fill(0.0);
                for (k, out_plane) in out_image.chunks_exact_mut(oh * ow).enumerate() {
                    let taps = &kernel[k * c * kh * kw..][..c * kh * kw];
                    accumulate_shifted(offsets, padded, taps, bias[k], wide);
                    for (dst, src) in out_plane.chunks_exact_mut(ow).zip(wide.chunks_exact(pw)) {
                        dst.copy_from_slice(&src[..ow]);
                        if self.relu {
                            crate::arith::rectify(dst);
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

impl TypedOp for InputConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = crate::arith::nchw_input("InputConv", inputs)?;
        let (o, _, kh, kw) = self.dims();
        let [(pt, pb), (pl, pr)] = self.pad;
        let oh = shape[2].clone() + (pt + pb) - (kh - 1);
        let ow = shape[3].clone() + (pl + pr) - (kw - 1);
        Ok(tvec!(f32::fact(&[shape[0].clone(), o.to_dim(), oh, ow])))
    }

    as_op!();
}
