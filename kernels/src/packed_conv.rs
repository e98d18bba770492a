//! Convolution as a weight-streaming matrix product, for the late layers of
//! a CNN: many channels, few output pixels (ResNet18-CIFAR's last stage has
//! 512 × 4608 weights per convolution and 16 output pixels).
//!
//! tract 0.23 tiles its products 16 weights × 6 pixels. With 16 pixels a
//! panel of weights is read three times and the last tile is a third empty,
//! so these layers run well below the earlier ones' rate (docs/benchmarks.md,
//! "Why the kernels exist"). Here the weights are packed
//! once at load into panels of [`MR`] output channels, and each panel meets
//! [`NR`] pixels at a time (12 AVX2 accumulators), so a weight is read once
//! per [`NR`] pixels and the layer streams its weights at memory speed.
//!
//! Sums run in a different order than tract's, so outputs agree to float
//! rounding, not bit for bit. With [`PackedConv::new_int8`] the same tiles
//! run on int8 values ([`super::int8`]): 16-bit lanes holding two depth
//! steps each, summed exactly in i32.

use tract_core::internal::*;

use super::int8::{quantize_into, PairPanels};
use super::pad_planes::pad_plane;
use super::panels::pack;
use super::weights::PackedWeights;
use crate::arith::{multiply_add, Accumulated};
use crate::scratch::Scratch;

/// Output channels per register tile (one panel of packed weights).
pub const MR: usize = 6;
/// Output pixels per register tile (two 8-lane vectors).
pub const NR: usize = 16;
/// What stays close (L2, else the nearby L3) while the other operand
/// streams past it. An unfolded input (`K × pixels` f32) this small is
/// unfolded whole and every weight panel passes over it once; otherwise the
/// input is unfolded [`NR`] pixels at a time and the packed weights, which
/// must then be this small, pass once per chunk. The bound is not tight:
/// on ResNet18's 8×8 stage both orders ran alike (docs/benchmarks.md).
const IN_CACHE_BYTES: usize = 768 * 1024;
/// Padded input planes this small are read in place by the f32 tiles (see
/// [`grid`]). A tile reads its [`NR`] columns of every tap, one short run
/// per tap across all the planes: on planes of a few tens of KiB those runs
/// stay in L1/L2 and skipping the unfolded copy pays; on ResNet18's first
/// stages (166–296 KiB) unfolding into one sequential stream was faster.
const IN_PLACE_BYTES: usize = 128 * 1024;

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

    /// Height and width of one phase plane (see [`PackedConv`]).
    fn phase(&self) -> [usize; 2] {
        let p = self.padded();
        [p[0].div_ceil(self.stride[0]), p[1].div_ceil(self.stride[1])]
    }

    /// How many values the phase planes of one image hold.
    fn phases_len(&self) -> usize {
        let [qh, qw] = self.phase();
        self.in_channels * self.stride[0] * self.stride[1] * qh * qw
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

/// The grid of columns the tiles compute, rows × width. Columns are output
/// pixels, except on planes read in place ([`IN_PLACE_BYTES`]) when output
/// rows are not whole chunks: there column `y · qw + x` is the window whose
/// top left corner is pixel `(y, x)` of the phase planes (`qw` wide, see
/// [`PackedConv`]), so every chunk of [`NR`] columns reads each tap as
/// [`NR`] consecutive values, and the columns with `x ≥ ow` are computed
/// and dropped. That trade is taken while the extra chunks cost fewer tiles
/// than unfolding would, reckoning an unfolded chunk at two tiles of [`MR`]
/// channels.
fn grid(g: &ConvGeometry) -> Option<[usize; 2]> {
    let [oh, ow] = g.output()?;
    let qw = g.phase()[1];
    let panels = g.out_channels.div_ceil(MR);
    let padded_grid = reads_in_place(g)
        && !ow.is_multiple_of(NR)
        && (oh * qw).div_ceil(NR) * panels <= (oh * ow).div_ceil(NR) * (panels + 2);
    Some([oh, if padded_grid { qw } else { ow }])
}

/// Whether the phase planes are small enough to be read in place.
fn reads_in_place(g: &ConvGeometry) -> bool {
    g.phases_len() * 4 <= IN_PLACE_BYTES
}

/// Writes the input row `src`, `left` columns into its padded row, as two
/// phase rows: padded column `p` goes to `even` (`p` even) or `odd`, at `p / 2`.
fn split_row<T: Copy>(src: &[T], left: usize, even: &mut [T], odd: &mut [T]) {
    let (mut src, mut col) = (src, left / 2);
    if left % 2 == 1 {
        let Some((&first, rest)) = src.split_first() else { return };
        if let Some(v) = odd.get_mut(col) {
            *v = first;
        }
        (src, col) = (rest, col + 1);
    }
    let pairs = src.chunks_exact(2);
    let last = pairs.remainder().first().copied();
    let (even, odd) = (even.get_mut(col..).unwrap_or_default(), odd.get_mut(col..).unwrap_or_default());
    let n = pairs.len().min(even.len()).min(odd.len());
    for ((pair, e), o) in pairs.take(n).zip(&mut even[..n]).zip(&mut odd[..n]) {
        *e = pair[0];
        *o = pair[1];
    }
    if let (Some(v), Some(e)) = (last, even.get_mut(n)) {
        *e = v;
    }
}

/// A convolution whose weights are packed at load for [`tile`] (or [`tile_int8`]).
///
/// Each image is padded into *phase planes*: at stride `(sy, sx)` every
/// channel's padded plane is split into `sy · sx` planes, phase `(a, b)`
/// holding its rows `a, a + sy, …` and columns `b, b + sx, …` (at stride 1,
/// the padded plane itself). Tap `(ky, kx)` of output pixel `(y, x)` is then
/// pixel `(y + ky·dy / sy, x + kx·dx / sx)` of phase `(ky·dy mod sy, kx·dx
/// mod sx)`: every convolution reads its input as a stride-1 one, an output
/// row's taps are runs of consecutive values, and strided layers are
/// unfolded with copies (or read in place) instead of gathers.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedConv {
    pub geometry: ConvGeometry,
    weights: Weights,
    bias: Arc<Vec<f32>>,
    /// Offset of each tap `k = (c, ky, kx)` into the phase planes.
    taps: Arc<Taps>,
    /// Offset of each column's window into the phase planes, padded to
    /// whole chunks of [`NR`] with 0 (those columns are computed, then dropped).
    pixels: Arc<Vec<usize>>,
    /// Which phases (`a · sx + b`) any tap reads: the others are only zeroed.
    phases_read: Arc<Vec<bool>>,
    /// How many values the phase planes must hold: the furthest tap of the
    /// last column reads past the last plane when columns run over the
    /// padded grid (see [`grid`]).
    planes_len: usize,
    /// Whether the planes are small (see [`IN_PLACE_BYTES`]) and every
    /// chunk's columns are consecutive in them (so at stride 1, see
    /// [`grid`]): the f32 tiles then read each tap's [`NR`] values where
    /// they lie, with no unfolded copy.
    in_place: bool,
    /// Whether a ReLU follows (folded in when the tile is written).
    pub relu: bool,
}

/// Offsets of the taps into the phase planes, with the largest of them
/// (they do not ascend at a stride above 1), which bounds every read.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    offsets: Vec<usize>,
    furthest: usize,
}

impl Taps {
    fn new(offsets: Vec<usize>) -> Taps {
        let furthest = offsets.iter().copied().max().unwrap_or(0);
        Taps { offsets, furthest }
    }
}

/// Packed weights, in panels of [`MR`] output channels, taps as depth.
type Weights = PackedWeights<i16>;

impl Eq for PackedConv {}

impl std::hash::Hash for PackedConv {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.geometry.hash(state);
        self.relu.hash(state);
        self.weights.is_int8().hash(state);
    }
}

impl PackedConv {
    /// Packs an OIHW `kernel` (`[O, I, KH, KW]`) with one bias per output channel.
    pub fn new(geometry: ConvGeometry, kernel: &[f32], bias: &[f32], relu: bool) -> TractResult<PackedConv> {
        let k = Self::check(&geometry, kernel, bias)?;
        Self::with_weights(geometry, Weights::F32(Arc::new(pack(kernel, k, MR, 1))), bias, relu)
    }

    /// The same convolution in int8: weights quantized per output channel,
    /// input activations with `input_scale` (one step of the quantized input).
    pub fn new_int8(
        geometry: ConvGeometry,
        kernel: &[f32],
        bias: &[f32],
        relu: bool,
        input_scale: f32,
    ) -> TractResult<PackedConv> {
        let k = Self::check(&geometry, kernel, bias)?;
        let weights = Weights::Int8(Arc::new(PairPanels::pack("PackedConv", kernel, k, MR, input_scale)?));
        Self::with_weights(geometry, weights, bias, relu)
    }

    /// Whether it runs in int8.
    pub fn is_int8(&self) -> bool {
        self.weights.is_int8()
    }

    /// The depth, once `kernel` and `bias` are checked against `geometry`.
    fn check(geometry: &ConvGeometry, kernel: &[f32], bias: &[f32]) -> TractResult<usize> {
        let (o, k) = (geometry.out_channels, geometry.depth());
        if kernel.len() != o * k || bias.len() != o {
            bail!("PackedConv: {} weights and {} biases for {o} outputs of depth {k}", kernel.len(), bias.len());
        }
        if geometry.output().is_none() {
            bail!("PackedConv: the kernel does not fit {geometry:?}")
        }
        Ok(k)
    }

    fn with_weights(geometry: ConvGeometry, weights: Weights, bias: &[f32], relu: bool) -> TractResult<PackedConv> {
        let [oh, ow] = geometry.output().context("PackedConv: the kernel does not fit")?;
        let [qh, qw] = geometry.phase();
        let [kh, kw] = geometry.kernel;
        let [dy, dx] = geometry.dilation;
        let [sy, sx] = geometry.stride;
        let window: Vec<[usize; 2]> = (0..kh).flat_map(|y| (0..kw).map(move |x| [y * dy, x * dx])).collect();
        let mut phases_read = vec![false; sy * sx];
        for [ry, rx] in &window {
            phases_read[ry % sy * sx + rx % sx] = true;
        }
        let taps: Vec<usize> = (0..geometry.in_channels)
            .flat_map(|c| {
                window
                    .iter()
                    .map(move |[ry, rx]| ((c * sy + ry % sy) * sx + rx % sx) * qh * qw + ry / sy * qw + rx / sx)
            })
            .collect();
        let [rows, width] = grid(&geometry).context("PackedConv: the kernel does not fit")?;
        let chunks = (rows * width).div_ceil(NR);
        let pixels: Vec<usize> = if width == ow {
            let mut pixels: Vec<usize> = (0..oh).flat_map(|y| (0..ow).map(move |x| y * qw + x)).collect();
            pixels.resize(chunks * NR, 0);
            pixels
        } else {
            // The padded grid: the last chunk too runs on past its last column.
            (0..chunks * NR).collect()
        };
        let taps = Taps::new(taps);
        let last_read = taps.furthest + pixels.iter().copied().max().unwrap_or(0);
        let in_place = reads_in_place(&geometry)
            && pixels.chunks_exact(NR).all(|p| p.iter().enumerate().all(|(j, &q)| q == p[0] + j));
        Ok(PackedConv {
            geometry,
            weights,
            bias: bias.to_vec().into(),
            taps: Arc::new(taps),
            pixels: Arc::new(pixels),
            phases_read: Arc::new(phases_read),
            planes_len: geometry.phases_len().max(last_read + 1),
            in_place,
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
        let [rows, width] = grid(geometry).unwrap_or([0, 0]);
        geometry.depth() * (rows * width).div_ceil(NR) * NR * 4
    }

    /// Convolves a batch of NCHW images into `out` (`[N, O, oh, ow]`).
    fn convolve(&self, x: &[f32], out: &mut [f32], scratch: &mut Scratch) -> TractResult<()> {
        let g = &self.geometry;
        let [h, w] = g.input;
        let (c, o, n) = (g.in_channels, g.out_channels, self.output_pixels());
        let chunks = if Self::unfolded_bytes(g) <= IN_CACHE_BYTES { self.pixels.len() / NR } else { 1 };
        let images = x.chunks_exact(c * h * w).zip(out.chunks_exact_mut(o * n));
        match &self.weights {
            Weights::F32(packed) if self.in_place => {
                let (padded, _, _) = scratch.buffers(self.planes_len, 0);
                let (chunks, panels) = (self.pixels.len() / NR, o.div_ceil(MR));
                // Chunk by chunk when the weights stay in cache (the chunk's
                // rows of every tap then stay in L1 while all the panels pass
                // over them), else panel by panel (each weight read once).
                let weights_in_cache = packed.len() * 4 <= IN_CACHE_BYTES;
                let (outer, inner) = if weights_in_cache { (chunks, panels) } else { (panels, chunks) };
                for (image, out_image) in images {
                    let planes = self.pad(image, padded, 0.0);
                    for i in 0..outer {
                        for j in 0..inner {
                            let (chunk, panel) = if weights_in_cache { (i, j) } else { (j, i) };
                            let (pixels, _) = self.chunk_pixels(planes.len(), chunk);
                            let mut acc = [[0f32; NR]; MR];
                            let weights = &packed[panel * g.depth() * MR..][..g.depth() * MR];
                            tile_in_place(weights, planes, &self.taps, pixels[0], &mut acc);
                            self.write_tile(panel, chunk, &acc, |r| (1.0, self.bias[r]), out_image);
                        }
                    }
                }
            }
            Weights::F32(packed) => {
                let (padded, work, _) = scratch.buffers(self.planes_len, g.depth() * NR * chunks);
                for (image, out_image) in images {
                    let planes = self.pad(image, padded, 0.0);
                    self.for_each_tile(
                        planes,
                        work,
                        |p, q, dst| self.unfold(p, q, dst),
                        |panel, chunk, unfolded| {
                            let mut acc = [[0f32; NR]; MR];
                            tile(g.depth(), &packed[panel * g.depth() * MR..][..g.depth() * MR], unfolded, &mut acc);
                            self.write_tile(panel, chunk, &acc, |r| (1.0, self.bias[r]), out_image);
                        },
                    );
                }
            }
            Weights::Int8(int8) => {
                let pairs = g.depth().div_ceil(2);
                let (quantized, padded, work) =
                    scratch.int8_buffers(c * h * w, self.planes_len, pairs * 2 * NR * chunks);
                for (image, out_image) in images {
                    quantize_into(image, int8.input_scale, quantized);
                    let planes = self.pad(quantized, padded, 0);
                    self.for_each_tile(
                        planes,
                        work,
                        |p, q, dst| self.unfold_pairs(p, q, dst),
                        |panel, chunk, unfolded| {
                            let mut acc = [[0i32; NR]; MR];
                            tile_int8(
                                pairs,
                                &int8.packed[panel * pairs * MR * 2..][..pairs * MR * 2],
                                unfolded,
                                &mut acc,
                            );
                            self.write_tile(panel, chunk, &acc, |r| (int8.output_scales[r], self.bias[r]), out_image);
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn output_pixels(&self) -> usize {
        self.geometry.output().map_or(0, |[oh, ow]| oh * ow)
    }

    /// The image's phase planes, padded into `padded` (`planes_len` values)
    /// with `zero`, unless the convolution has stride 1, no padding and
    /// reads nothing past the image (which then is its one phase).
    fn pad<'a, T: Copy>(&self, image: &'a [T], padded: &'a mut [T], zero: T) -> &'a [T] {
        let g = &self.geometry;
        if g.stride == [1, 1] && g.pad == [(0, 0); 2] && self.planes_len <= image.len() {
            return image;
        }
        let ([h, w], [sy, sx], [qh, qw]) = (g.input, g.stride, g.phase());
        let (top, left) = (g.pad[0].0, g.pad[1].0);
        let (planes, tail) = padded.split_at_mut(g.phases_len());
        // Values only dropped columns or no tap read are zeroed all the same:
        // the scratch buffer holds whatever the last convolution left there.
        tail.fill(zero);
        if h * w == 0 {
            planes.fill(zero);
            return padded;
        }
        if sx == 2 {
            // Each input row goes to the two phase rows it splits into, in one pass.
            for (c, plane) in image.chunks_exact(h * w).enumerate() {
                for a in 0..sy {
                    let (even, odd) = planes[(c * sy + a) * 2 * qh * qw..][..2 * qh * qw].split_at_mut(qh * qw);
                    for (qy, (even, odd)) in even.chunks_exact_mut(qw).zip(odd.chunks_exact_mut(qw)).enumerate() {
                        even.fill(zero);
                        odd.fill(zero);
                        let Some(y) = (qy * sy + a).checked_sub(top).filter(|&y| y < h) else { continue };
                        split_row(&plane[y * w..][..w], left, even, odd);
                    }
                }
            }
            return padded;
        }
        let phases = planes.chunks_exact_mut(qh * qw);
        for ((c, ab), dst) in (0..g.in_channels).flat_map(|c| (0..sy * sx).map(move |ab| (c, ab))).zip(phases) {
            let plane = &image[c * h * w..][..h * w];
            let (a, b) = (ab / sx, ab % sx);
            if !self.phases_read[ab] {
                dst.fill(zero);
            } else if [sy, sx] == [1, 1] {
                pad_plane(plane, w, dst, qw, top, left, zero);
            } else {
                // Phase columns from `first` on hold input columns x0, x0 + sx, …
                let first = left.saturating_sub(b).div_ceil(sx).min(qw);
                let x0 = (first * sx + b).saturating_sub(left);
                let count = if x0 < w { (w - x0).div_ceil(sx).min(qw - first) } else { 0 };
                for (qy, row) in dst.chunks_exact_mut(qw).enumerate() {
                    match (qy * sy + a).checked_sub(top).filter(|&y| y < h && count > 0) {
                        Some(y) => {
                            row[..first].fill(zero);
                            let src = plane[y * w + x0..(y + 1) * w].iter().step_by(sx);
                            for (v, &x) in row[first..first + count].iter_mut().zip(src) {
                                *v = x;
                            }
                            row[first + count..].fill(zero);
                        }
                        None => row.fill(zero),
                    }
                }
            }
        }
        padded
    }

    /// Unfolds `planes` into `work` and hands every (panel, chunk) tile to
    /// `tile`: the whole input first when it fits in cache (every weight
    /// panel then passes over it once), otherwise one chunk at a time
    /// (`work` then holds one chunk).
    fn for_each_tile<T>(
        &self,
        planes: &[T],
        work: &mut [T],
        unfold: impl Fn(&[T], usize, &mut [T]),
        mut tile: impl FnMut(usize, usize, &[T]),
    ) {
        let (chunks, panels) = (self.pixels.len() / NR, self.geometry.out_channels.div_ceil(MR));
        if Self::unfolded_bytes(&self.geometry) <= IN_CACHE_BYTES {
            let per_chunk = work.len() / chunks;
            for (chunk, dst) in work.chunks_exact_mut(per_chunk).enumerate() {
                unfold(planes, chunk, dst);
            }
            for panel in 0..panels {
                for (chunk, unfolded) in work.chunks_exact(per_chunk).enumerate() {
                    tile(panel, chunk, unfolded);
                }
            }
        } else {
            for chunk in 0..chunks {
                unfold(planes, chunk, work);
                for panel in 0..panels {
                    tile(panel, chunk, work);
                }
            }
        }
    }

    /// The [`NR`] pixel offsets of `chunk`, and whether they are consecutive,
    /// once every tap of every pixel is checked to fall inside `planes` values.
    fn chunk_pixels(&self, planes: usize, chunk: usize) -> (&[usize; NR], bool) {
        let pixels: &[usize; NR] = self.pixels[chunk * NR..][..NR].try_into().expect("NR pixels");
        let first = pixels[0];
        let contiguous = pixels.iter().enumerate().all(|(j, &p)| p == first + j);
        let last_tap = self.taps.furthest;
        let last_pixel = if contiguous { first + NR - 1 } else { pixels.iter().copied().max().unwrap_or(0) };
        // Every tap offset plus every pixel offset (and, for a contiguous chunk,
        // the NR values after its first) stays inside the planes.
        assert!(last_tap + last_pixel < planes, "PackedConv: planes shorter than the geometry");
        (pixels, contiguous)
    }

    /// Unfolds the [`NR`] pixels of `chunk` into `dst` (`K × NR`, tap-major).
    fn unfold(&self, planes: &[f32], chunk: usize, dst: &mut [f32]) {
        let (pixels, contiguous) = self.chunk_pixels(planes.len(), chunk);
        for (&tap, row) in self.taps.offsets.iter().zip(dst.chunks_exact_mut(NR)) {
            let row: &mut [f32; NR] = row.try_into().expect("NR values");
            if contiguous {
                row.copy_from_slice(&planes[tap + pixels[0]..][..NR]);
            } else {
                for (v, &p) in row.iter_mut().zip(pixels) {
                    // SAFETY: tap ≤ last tap and p ≤ last pixel, checked by chunk_pixels.
                    *v = unsafe { *planes.get_unchecked(tap + p) };
                }
            }
        }
    }

    /// Unfolds the [`NR`] pixels of `chunk` into `dst` in tap pairs
    /// (`⌈K/2⌉ × NR × 2`: both taps of a pair side by side for each pixel,
    /// the missing second tap of an odd depth zero), as [`tile_int8`] reads them.
    fn unfold_pairs(&self, planes: &[i16], chunk: usize, dst: &mut [i16]) {
        let (pixels, contiguous) = self.chunk_pixels(planes.len(), chunk);
        for (taps, row) in self.taps.offsets.chunks(2).zip(dst.chunks_exact_mut(2 * NR)) {
            let row: &mut [i16; 2 * NR] = row.try_into().expect("2·NR values");
            let (first, second) = (taps[0], taps.get(1).copied());
            if contiguous {
                // Two runs of NR values, interleaved (LLVM vectorizes this to unpacks).
                let a: &[i16; NR] = planes[first + pixels[0]..][..NR].try_into().expect("NR values");
                let b: &[i16; NR] = match second {
                    Some(t) => planes[t + pixels[0]..][..NR].try_into().expect("NR values"),
                    None => &[0; NR],
                };
                for ((v, &a), &b) in row.chunks_exact_mut(2).zip(a).zip(b) {
                    v[0] = a;
                    v[1] = b;
                }
                continue;
            }
            for (v, &p) in row.chunks_exact_mut(2).zip(pixels) {
                // SAFETY: both taps ≤ last tap and p ≤ last pixel, checked by chunk_pixels.
                unsafe {
                    v[0] = *planes.get_unchecked(first + p);
                    v[1] = second.map_or(0, |t| *planes.get_unchecked(t + p));
                }
            }
        }
    }

    /// Writes one [`MR`] × [`NR`] tile of sums into `out` (`[O, pixels]`)
    /// where its columns fall (a column off the output is dropped), as
    /// `sum · scale + bias` with `(scale, bias) = affine(channel)` (then
    /// rectified).
    fn write_tile<A: Accumulated>(
        &self,
        panel: usize,
        chunk: usize,
        acc: &[[A; NR]; MR],
        affine: impl Fn(usize) -> (f32, f32),
        out: &mut [f32],
    ) {
        let g = &self.geometry;
        let (n, ow) = (out.len() / g.out_channels, g.output().map_or(0, |[_, ow]| ow));
        let [rows, width] = grid(g).unwrap_or([0, 0]);
        let (row0, col0) = (panel * MR, chunk * NR);
        let end = (col0 + NR).min(rows * width);
        // Runs of columns inside one grid row; the output holds the first `ow` of each row.
        let mut col = col0;
        while col < end {
            let (y, x) = (col / width, col % width);
            let run = (width - x).min(end - col);
            let kept = run.min(ow.saturating_sub(x));
            if kept > 0 {
                for (r, acc) in acc.iter().enumerate().take(g.out_channels - row0) {
                    let (scale, bias) = affine(row0 + r);
                    let dst = &mut out[(row0 + r) * n + y * ow + x..][..kept];
                    for (dst, &v) in dst.iter_mut().zip(&acc[col - col0..]) {
                        *dst = multiply_add(v.value(), scale, bias);
                    }
                    if self.relu {
                        crate::arith::rectify(dst);
                    }
                }
            }
            col += run;
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
        crate::arith::f32_output(&self.output_shape(n)?, |out| self.convolve(x, out, scratch))
    }
}

/// `acc[r][j] = Σ_k weights[k·MR + r] · unfolded[k·NR + j]`.
fn tile(k: usize, weights: &[f32], unfolded: &[f32], acc: &mut [[f32; NR]; MR]) {
    assert!(weights.len() >= k * MR && unfolded.len() >= k * NR, "tile operands shorter than depth {k}");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let b = unfolded.as_ptr();
        // SAFETY: the features were just detected; both operands were checked long enough.
        return unsafe { tile_avx2(k, weights, |i| b.add(i * NR), acc) };
    }
    tile_portable(weights, unfolded.chunks_exact(NR).take(k), acc)
}

/// The tile with row `k` of the unfolded operand read in place:
/// `acc[r][j] = Σ_k weights[k·MR + r] · planes[taps[k] + first + j]`.
fn tile_in_place(weights: &[f32], planes: &[f32], taps: &Taps, first: usize, acc: &mut [[f32; NR]; MR]) {
    let (k, furthest, taps) = (taps.offsets.len(), taps.furthest, &taps.offsets[..]);
    assert!(weights.len() >= k * MR, "tile weights shorter than depth {k}");
    assert!(k == 0 || furthest + first + NR <= planes.len(), "tile reads past the planes");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let b = planes.as_ptr();
        // SAFETY: the features were just detected; every row taps[i] + first + NR ≤ planes.len().
        return unsafe { tile_avx2(k, weights, |i| b.add(*taps.get_unchecked(i) + first), acc) };
    }
    tile_portable(weights, taps.iter().map(|&t| &planes[t + first..][..NR]), acc)
}

/// How far ahead (in depth steps) the weights are prefetched.
#[cfg(target_arch = "x86_64")]
const PREFETCH_STEPS: usize = 32;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(k: usize, weights: &[f32], row: impl Fn(usize) -> *const f32, acc: &mut [[f32; NR]; MR]) {
    use std::arch::x86_64::*;
    let a = weights.as_ptr();
    let mut c = [[_mm256_setzero_ps(); 2]; MR];
    // SAFETY (all reads): i < k, the caller checked k·MR weights and that
    // `row(i)` starts NR readable values; prefetches never fault.
    let step = |i: usize, c: &mut [[__m256; 2]; MR]| {
        let b = row(i);
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
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

/// The same tile in plain Rust over the unfolded operand's rows (each
/// [`NR`] values); aarch64 compiles it to NEON `fmla`.
#[inline(always)]
fn tile_portable<'a>(weights: &[f32], rows: impl Iterator<Item = &'a [f32]>, acc: &mut [[f32; NR]; MR]) {
    let mut c = [[0f32; NR]; MR];
    for (w, b) in weights.chunks_exact(MR).zip(rows) {
        for (c, &w) in c.iter_mut().zip(w) {
            for (c, &b) in c.iter_mut().zip(b) {
                *c = multiply_add(w, b, *c);
            }
        }
    }
    *acc = c;
}

/// `acc[r][j] = Σ_i Σ_t weights[(i·MR + r)·2 + t] · unfolded[(i·NR + j)·2 + t]`
/// over `pairs` tap pairs, exact in i32 (int8 values: |sum| ≤ 2·127²·pairs).
fn tile_int8(pairs: usize, weights: &[i16], unfolded: &[i16], acc: &mut [[i32; NR]; MR]) {
    assert!(
        weights.len() >= pairs * MR * 2 && unfolded.len() >= pairs * NR * 2,
        "tile operands shorter than {pairs} tap pairs"
    );
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was just detected; both operands were checked long enough.
        return unsafe { tile_int8_avx2(pairs, weights, unfolded, acc) };
    }
    tile_int8_portable(pairs, weights, unfolded, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_int8_avx2(pairs: usize, weights: &[i16], unfolded: &[i16], acc: &mut [[i32; NR]; MR]) {
    use std::arch::x86_64::*;
    const _: () = assert!(MR == 6 && NR == 16, "the assembly below is written for 6 × 16 tiles");
    let mut c = [[_mm256_setzero_si256(); 2]; MR];
    if pairs > 0 {
        // In assembly: written as intrinsics, LLVM reassociates the integer
        // sums across steps, runs out of the 16 vector registers and spills
        // accumulators to the stack (int8 then ran no faster than f32).
        // Per tap pair: the 16 pixels' pairs in ymm0–1, each channel's
        // weight pair broadcast, `vpmaddwd` + `vpaddd` into ymm4–15.
        // SAFETY: the caller checked pairs·MR weight pairs (24 bytes per
        // step) and pairs·NR unfolded pairs (64 bytes per step); prefetches
        // never fault.
        std::arch::asm!(
        "2:",
        "prefetcht0 [{a} + {ahead}]",
        "vmovdqu ymm0, [{b}]",
        "vmovdqu ymm1, [{b} + 32]",
        "vpbroadcastd ymm2, [{a} + 0]",
        "vpmaddwd ymm3, ymm2, ymm0",
        "vpaddd ymm4, ymm4, ymm3",
        "vpmaddwd ymm3, ymm2, ymm1",
        "vpaddd ymm5, ymm5, ymm3",
        "vpbroadcastd ymm2, [{a} + 4]",
        "vpmaddwd ymm3, ymm2, ymm0",
        "vpaddd ymm6, ymm6, ymm3",
        "vpmaddwd ymm3, ymm2, ymm1",
        "vpaddd ymm7, ymm7, ymm3",
        "vpbroadcastd ymm2, [{a} + 8]",
        "vpmaddwd ymm3, ymm2, ymm0",
        "vpaddd ymm8, ymm8, ymm3",
        "vpmaddwd ymm3, ymm2, ymm1",
        "vpaddd ymm9, ymm9, ymm3",
        "vpbroadcastd ymm2, [{a} + 12]",
        "vpmaddwd ymm3, ymm2, ymm0",
        "vpaddd ymm10, ymm10, ymm3",
        "vpmaddwd ymm3, ymm2, ymm1",
        "vpaddd ymm11, ymm11, ymm3",
        "vpbroadcastd ymm2, [{a} + 16]",
        "vpmaddwd ymm3, ymm2, ymm0",
        "vpaddd ymm12, ymm12, ymm3",
        "vpmaddwd ymm3, ymm2, ymm1",
        "vpaddd ymm13, ymm13, ymm3",
        "vpbroadcastd ymm2, [{a} + 20]",
        "vpmaddwd ymm3, ymm2, ymm0",
        "vpaddd ymm14, ymm14, ymm3",
        "vpmaddwd ymm3, ymm2, ymm1",
        "vpaddd ymm15, ymm15, ymm3",
        "add {a}, 24",
        "add {b}, 64",
        "dec {n}",
        "jnz 2b",
        a = inout(reg) weights.as_ptr() => _,
        b = inout(reg) unfolded.as_ptr() => _,
        n = inout(reg) pairs => _,
        ahead = const PREFETCH_STEPS * MR * 4,
        out("ymm0") _,
        out("ymm1") _,
        out("ymm2") _,
        out("ymm3") _,
        inout("ymm4") c[0][0],
        inout("ymm5") c[0][1],
        inout("ymm6") c[1][0],
        inout("ymm7") c[1][1],
        inout("ymm8") c[2][0],
        inout("ymm9") c[2][1],
        inout("ymm10") c[3][0],
        inout("ymm11") c[3][1],
        inout("ymm12") c[4][0],
        inout("ymm13") c[4][1],
        inout("ymm14") c[5][0],
        inout("ymm15") c[5][1],
        options(nostack, readonly),
        );
    }
    for (dst, c) in acc.iter_mut().zip(&c) {
        _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, c[0]);
        _mm256_storeu_si256(dst.as_mut_ptr().add(8) as *mut __m256i, c[1]);
    }
}

/// The same int8 tile in plain Rust; aarch64 compiles it to NEON multiply-accumulates.
#[inline(always)]
fn tile_int8_portable(pairs: usize, weights: &[i16], unfolded: &[i16], acc: &mut [[i32; NR]; MR]) {
    let mut c = [[0i32; NR]; MR];
    for (w, b) in weights.chunks_exact(MR * 2).zip(unfolded.chunks_exact(NR * 2)).take(pairs) {
        for (c, w) in c.iter_mut().zip(w.chunks_exact(2)) {
            let (w0, w1) = (w[0] as i32, w[1] as i32);
            for (c, b) in c.iter_mut().zip(b.chunks_exact(2)) {
                *c += w0 * b[0] as i32 + w1 * b[1] as i32;
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
        Ok(vec![format!("{:?}, relu: {}, int8: {}", self.geometry, self.relu, self.is_int8())])
    }

    op_as_typed_op!();
}

impl EvalOp for PackedConv {
    eval_with_scratch!();
}

impl TypedOp for PackedConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = crate::arith::nchw_input("PackedConv", inputs)?;
        let [_, o, oh, ow] = self.output_shape(0)?;
        Ok(tvec!(f32::fact(&[shape[0].clone(), o.to_dim(), oh.to_dim(), ow.to_dim()])))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(channels: usize, size: usize, out: usize, stride: usize) -> PackedConv {
        let geometry = ConvGeometry {
            in_channels: channels,
            out_channels: out,
            input: [size, size],
            kernel: [3, 3],
            stride: [stride, stride],
            dilation: [1, 1],
            pad: [(1, 1), (1, 1)],
        };
        PackedConv::new(geometry, &vec![0.0; out * channels * 9], &vec![0.0; out], false).unwrap()
    }

    #[test]
    fn small_planes_are_read_in_place_and_large_ones_unfolded() {
        // The zoo ResNet's stride-1 layers: the padded grid, read in place.
        for (channels, size) in [(16, 28), (32, 14), (64, 7)] {
            let conv = conv(channels, size, channels, 1);
            assert!(conv.in_place, "{channels} ch {size}×{size}");
            assert_eq!(grid(&conv.geometry), Some([size, size + 2]), "{channels} ch {size}×{size}");
        }
        // Its stride-2 layers: the padded grid of the phase planes.
        for (channels, size) in [(16, 28), (32, 14)] {
            let conv = conv(channels, size, 2 * channels, 2);
            assert!(conv.in_place, "{channels} ch {size}×{size} stride 2");
            assert_eq!(grid(&conv.geometry), Some([size / 2, size / 2 + 1]), "{channels} ch {size}×{size} stride 2");
        }
        // Rows of whole chunks keep the output grid, in place while small.
        assert!(conv(8, 32, 8, 1).in_place);
        assert_eq!(grid(&conv(8, 32, 8, 1).geometry), Some([32, 32]));
        // ResNet18's first stages (296 and 166 KiB of planes), a large
        // strided input, and a padded grid too wide for its few output pixels.
        for (channels, size, out, stride) in [(64, 32, 64, 1), (128, 16, 128, 1), (32, 60, 8, 2), (64, 4, 64, 1)] {
            let conv = conv(channels, size, out, stride);
            assert!(!conv.in_place, "{channels} ch {size}×{size} stride {stride}");
            assert_eq!(grid(&conv.geometry), conv.geometry.output(), "{channels} ch {size}×{size} stride {stride}");
        }
    }

    #[test]
    fn the_dispatched_tile_matches_the_portable_one_for_every_depth_tail() {
        for k in [1, 3, 4, 5, 37, 288] {
            let weights: Vec<f32> = (0..k * MR).map(|i| ((i * 131) % 97) as f32 / 31.0 - 1.5).collect();
            let unfolded: Vec<f32> = (0..k * NR).map(|i| ((i * 71) % 89) as f32 / 29.0 - 1.4).collect();
            let (mut fast, mut plain) = ([[0f32; NR]; MR], [[0f32; NR]; MR]);
            tile(k, &weights, &unfolded, &mut fast);
            tile_portable(&weights, unfolded.chunks_exact(NR), &mut plain);
            for (r, (a, b)) in fast.iter().flatten().zip(plain.iter().flatten()).enumerate() {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "depth {k}, value {r}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn the_dispatched_int8_tile_equals_the_portable_one_for_every_depth_tail() {
        for pairs in [1, 3, 4, 5, 37, 2304] {
            let weights: Vec<i16> = (0..pairs * MR * 2).map(|i| ((i * 131) % 255) as i16 - 127).collect();
            let unfolded: Vec<i16> = (0..pairs * NR * 2).map(|i| ((i * 71) % 255) as i16 - 127).collect();
            let (mut fast, mut plain) = ([[0i32; NR]; MR], [[0i32; NR]; MR]);
            tile_int8(pairs, &weights, &unfolded, &mut fast);
            tile_int8_portable(pairs, &weights, &unfolded, &mut plain);
            assert_eq!(fast, plain, "{pairs} tap pairs");
            let expected: i32 = (0..pairs * 2)
                .map(|k| weights[(k / 2 * MR) * 2 + k % 2] as i32 * unfolded[(k / 2 * NR) * 2 + k % 2] as i32)
                .sum();
            assert_eq!(plain[0][0], expected, "{pairs} tap pairs, first value");
        }
    }
}
