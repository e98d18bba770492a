//! Dense (fully connected) layers on a few rows, as a stream of packed
//! weights: the classifier head of a CNN at batch 1.
//!
//! There each weight is used once per frame, so the layer costs what it
//! takes to read its weights. tract 0.23 runs a one-row product with a
//! 64-row panel kernel: one stream of loads. That is fine from L2 or L3,
//! but in the guard three models take turns and, with their activations,
//! overflow what a core keeps nearby, so weights partly come back from
//! DRAM and one stream stalls. Here the weights are packed at load into
//! panels of [`PANEL`] output units; for one row four panels stream at
//! once (more loads in flight), and up to four rows share each panel's
//! loads (timings: docs/benchmarks.md, "Why the kernels exist").
//!
//! Sums run in a different order than tract's, so outputs agree to float
//! rounding, not bit for bit. [`PackedDense::new_int8`] stores the weights
//! as int8 ([`super::int8`]): a quarter of the bytes to stream.

use tract_core::internal::*;
use tract_core::ndarray::IxDyn;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::konst::Const;
use tract_core::ops::math::Add;

use super::int8::{quantize_into, PairPanels};
use super::panels::pack;
use super::weights::PackedWeights;
use crate::arith::{multiply_add, Accumulated};
use crate::scratch::Scratch;

/// Output units per packed panel (two 8-lane vectors).
pub const PANEL: usize = 16;
/// The most activation rows the layer takes: past a few rows each weight is
/// used often enough that tract's blocked product is the better choice.
pub const MAX_ROWS: usize = 4;

/// `y = x · Wᵀ + b` (then ReLU if folded) for `rows` rows of `depth` inputs,
/// with `W` packed at load.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedDense {
    pub rows: usize,
    pub depth: usize,
    pub units: usize,
    weights: Weights,
    bias: Arc<Vec<f32>>,
    /// Whether a ReLU follows (folded in when a panel is written).
    pub relu: bool,
    /// The shape of the output it replaces: `rows × units` with unit axes
    /// wherever the graph had them.
    output_shape: TVec<usize>,
}

/// Weights in panels of [`PANEL`] units, inputs as depth.
type Weights = PackedWeights<i8>;

impl Eq for PackedDense {}

impl std::hash::Hash for PackedDense {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.rows, self.depth, self.units, self.relu, self.weights.is_int8()).hash(state);
        self.output_shape.hash(state);
    }
}

impl PackedDense {
    /// Packs row-major `weights` (`units × depth`) with one bias per unit.
    pub fn new(
        rows: usize,
        weights: &[f32],
        bias: &[f32],
        relu: bool,
        output_shape: &[usize],
    ) -> TractResult<PackedDense> {
        let (_, depth) = Self::check(rows, weights, bias, output_shape)?;
        let packed = pack(weights, depth, PANEL, 1);
        Ok(Self::with_weights(rows, depth, Weights::F32(Arc::new(packed)), bias, relu, output_shape))
    }

    /// The same layer in int8: weights quantized per unit, input activations
    /// with `input_scale` (one step of the quantized input).
    pub fn new_int8(
        rows: usize,
        weights: &[f32],
        bias: &[f32],
        relu: bool,
        output_shape: &[usize],
        input_scale: f32,
    ) -> TractResult<PackedDense> {
        let (_, depth) = Self::check(rows, weights, bias, output_shape)?;
        let weights = Weights::Int8(Arc::new(PairPanels::pack("PackedDense", weights, depth, PANEL, input_scale)?));
        Ok(Self::with_weights(rows, depth, weights, bias, relu, output_shape))
    }

    /// Whether it runs in int8.
    pub fn is_int8(&self) -> bool {
        self.weights.is_int8()
    }

    /// Units and depth, once the operands are checked against each other.
    fn check(rows: usize, weights: &[f32], bias: &[f32], output_shape: &[usize]) -> TractResult<(usize, usize)> {
        let units = bias.len();
        if units == 0 || !weights.len().is_multiple_of(units) || weights.is_empty() {
            bail!("PackedDense: {} weights for {units} units", weights.len());
        }
        if output_shape.iter().product::<usize>() != rows * units {
            bail!("PackedDense: output shape {output_shape:?} does not hold {rows} × {units} values");
        }
        Ok((units, weights.len() / units))
    }

    fn with_weights(
        rows: usize,
        depth: usize,
        weights: Weights,
        bias: &[f32],
        relu: bool,
        output_shape: &[usize],
    ) -> PackedDense {
        let units = bias.len();
        PackedDense {
            rows,
            depth,
            units,
            weights,
            bias: Arc::new(bias.to_vec()),
            relu,
            output_shape: output_shape.into(),
        }
    }

    /// Fills `out` (`rows × units`) from `x` (`rows × depth`).
    fn multiply(&self, x: &[f32], out: &mut [f32], scratch: &mut Scratch) {
        let k = self.depth;
        match &self.weights {
            Weights::F32(packed) => self.for_each_block(x, k, out, |p, rows, acc, count, streams| {
                block_product(k, &packed[p * k * PANEL..][..streams * k * PANEL], rows, acc, count, streams);
                |u| (1.0, self.bias[u])
            }),
            Weights::Int8(int8) => {
                let pairs = k.div_ceil(2);
                let (_, quantized, _) = scratch.int8_buffers(0, self.rows * pairs * 2, 0);
                for (x, q) in x.chunks_exact(k).zip(quantized.chunks_exact_mut(pairs * 2)) {
                    quantize_into(x, int8.input_scale, &mut q[..k]);
                    q[k..].fill(0);
                }
                self.for_each_block(quantized, pairs * 2, out, |p, rows, acc, count, streams| {
                    let panels = &int8.packed[p * pairs * PANEL * 2..][..streams * pairs * PANEL * 2];
                    block_product_int8(pairs, panels, rows, acc, count, streams);
                    |u| (int8.output_scales[u], self.bias[u])
                })
            }
        }
    }

    /// Runs `product(first panel, rows, acc, rows in block, panels in block)`
    /// over blocks of up to [`MAX_ROWS`] rows (of `stride` values each in
    /// `x`) and as many panels as [`streams_for`] says, and writes each
    /// block's sums as `sum · scale + bias` (then rectified), with
    /// `(scale, bias)` from the affine map `product` returns for a unit.
    fn for_each_block<T, A: Accumulated + Default, F: Fn(usize) -> (f32, f32)>(
        &self,
        x: &[T],
        stride: usize,
        out: &mut [f32],
        product: impl Fn(usize, &[T], &mut [[A; PANEL]], usize, usize) -> F,
    ) {
        let units = self.units;
        let panels = units.div_ceil(PANEL);
        for (block, rows) in x.chunks(stride * MAX_ROWS).enumerate() {
            let count = rows.len() / stride;
            let mut p = 0;
            while p < panels {
                let streams = streams_for(count, panels - p);
                let mut acc = [[A::default(); PANEL]; MAX_BLOCKS];
                let acc = &mut acc[..streams * count];
                let affine = product(p, rows, acc, count, streams);
                for (i, acc) in acc.iter().enumerate() {
                    let (row, unit0) = (block * MAX_ROWS + i % count, (p + i / count) * PANEL);
                    let width = PANEL.min(units - unit0);
                    let dst = &mut out[row * units + unit0..][..width];
                    for (j, (dst, &v)) in dst.iter_mut().zip(acc).enumerate() {
                        let (scale, bias) = affine(unit0 + j);
                        *dst = multiply_add(v.value(), scale, bias);
                    }
                    if self.relu {
                        crate::arith::rectify(dst);
                    }
                }
                p += streams;
            }
        }
    }

    pub(crate) fn run(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        if x.len() != self.rows * self.depth {
            bail!("PackedDense expects {} rows of {} inputs, got {:?}", self.rows, self.depth, input.shape());
        }
        crate::arith::f32_output(&self.output_shape, |out| {
            crate::scratch::with_scratch(|scratch| self.multiply(x, out, scratch));
            Ok(())
        })
    }
}

/// Calls `kernel::<R, P>(args)` for `r` rows and `streams` panels (the
/// pairs [`streams_for`] gives, and fewer panels at the end of a layer).
macro_rules! dispatch_blocks {
    ($kernel:ident($($arg:expr),*), $r:expr, $streams:expr $(, $unsafe:tt)?) => {
        match ($r, $streams) {
            (1, 4) => $($unsafe)? { $kernel::<1, 4>($($arg),*) },
            (1, 2) => $($unsafe)? { $kernel::<1, 2>($($arg),*) },
            (1, _) => $($unsafe)? { $kernel::<1, 1>($($arg),*) },
            (2, 2) => $($unsafe)? { $kernel::<2, 2>($($arg),*) },
            (2, _) => $($unsafe)? { $kernel::<2, 1>($($arg),*) },
            (3, _) => $($unsafe)? { $kernel::<3, 1>($($arg),*) },
            _ => $($unsafe)? { $kernel::<4, 1>($($arg),*) },
        }
    };
}

/// The most (panel, row) blocks one call accumulates: `streams_for(rows, _) · rows`.
const MAX_BLOCKS: usize = 4;

/// Panels read at once for `rows` rows with `left` panels to go: with one
/// row, four concurrent streams of weights (faster than one when they come
/// from DRAM); with more rows, as many as keep the
/// accumulators in registers. Always a count [`dispatch_blocks`] has a kernel for.
fn streams_for(rows: usize, left: usize) -> usize {
    let most = match rows {
        1 => 4,
        2 => 2,
        _ => 1,
    };
    [4, 2, 1].into_iter().find(|&s| s <= most && s <= left).unwrap_or(1)
}

/// `acc[s·R + r][u] = Σ_i panels[s][i·PANEL + u] · rows[r·k + i]` for `streams`
/// consecutive panels (`k·PANEL` weights each) and `R` rows.
fn block_product(k: usize, panels: &[f32], rows: &[f32], acc: &mut [[f32; PANEL]], r: usize, streams: usize) {
    assert!(
        panels.len() >= streams * k * PANEL && rows.len() >= r * k && acc.len() >= r * streams,
        "operands shorter than {streams} panels × {r} rows of depth {k}"
    );
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features were just detected; the operands were checked long enough.
        return dispatch_blocks!(block_avx2(k, panels, rows, acc), r, streams, unsafe);
    }
    dispatch_blocks!(block_portable(k, panels, rows, acc), r, streams)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const R: usize, const P: usize>(k: usize, panels: &[f32], rows: &[f32], acc: &mut [[f32; PANEL]]) {
    use std::arch::x86_64::*;
    let (w, x) = (panels.as_ptr(), rows.as_ptr());
    let mut c = [[[_mm256_setzero_ps(); 2]; R]; P];
    for i in 0..k {
        for (s, c) in c.iter_mut().enumerate() {
            // SAFETY: i < k, s < P and r < R; the caller checked P·k·PANEL weights and R·k inputs.
            let panel = w.add(s * k * PANEL + i * PANEL);
            let (w0, w1) = (_mm256_loadu_ps(panel), _mm256_loadu_ps(panel.add(8)));
            for (r, c) in c.iter_mut().enumerate() {
                let v = _mm256_broadcast_ss(&*x.add(r * k + i));
                c[0] = _mm256_fmadd_ps(w0, v, c[0]);
                c[1] = _mm256_fmadd_ps(w1, v, c[1]);
            }
        }
    }
    for (dst, c) in acc.iter_mut().zip(c.iter().flatten()) {
        _mm256_storeu_ps(dst.as_mut_ptr(), c[0]);
        _mm256_storeu_ps(dst.as_mut_ptr().add(8), c[1]);
    }
}

/// The same product in plain Rust, in the same order; aarch64 compiles it to NEON `fmla`.
#[inline(always)]
fn block_portable<const R: usize, const P: usize>(k: usize, panels: &[f32], rows: &[f32], acc: &mut [[f32; PANEL]]) {
    let mut c = [[[0f32; PANEL]; R]; P];
    for i in 0..k {
        for (s, c) in c.iter_mut().enumerate() {
            let w: &[f32; PANEL] = panels[s * k * PANEL + i * PANEL..][..PANEL].try_into().expect("PANEL weights");
            for (r, c) in c.iter_mut().enumerate() {
                let v = rows[r * k + i];
                for (c, &w) in c.iter_mut().zip(w) {
                    *c = multiply_add(w, v, *c);
                }
            }
        }
    }
    for (dst, c) in acc.iter_mut().zip(c.iter().flatten()) {
        *dst = *c;
    }
}

/// `acc[s·R + r][u] = Σ_i Σ_t panels[s][(i·PANEL + u)·2 + t] · rows[r][2i + t]`
/// for `streams` consecutive int8 panels (`pairs·PANEL·2` weights each) and
/// `R` rows of `2·pairs` quantized inputs, exact in i32.
fn block_product_int8(pairs: usize, panels: &[i8], rows: &[i16], acc: &mut [[i32; PANEL]], r: usize, streams: usize) {
    assert!(
        panels.len() >= streams * pairs * PANEL * 2 && rows.len() >= r * pairs * 2 && acc.len() >= r * streams,
        "operands shorter than {streams} panels × {r} rows of {pairs} input pairs"
    );
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was just detected; the operands were checked long enough.
        return dispatch_blocks!(block_int8_avx2(pairs, panels, rows, acc), r, streams, unsafe);
    }
    dispatch_blocks!(block_int8_portable(pairs, panels, rows, acc), r, streams)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_int8_avx2<const R: usize, const P: usize>(
    pairs: usize,
    panels: &[i8],
    rows: &[i16],
    acc: &mut [[i32; PANEL]],
) {
    use std::arch::x86_64::*;
    let (w, x) = (panels.as_ptr(), rows.as_ptr() as *const i32);
    let mut c = [[[_mm256_setzero_si256(); 2]; R]; P];
    for i in 0..pairs {
        for (s, c) in c.iter_mut().enumerate() {
            // SAFETY: i < pairs, s < P and r < R; the caller checked P panels of
            // pairs·PANEL·2 weights and R rows of 2·pairs inputs.
            let panel = w.add((s * pairs + i) * PANEL * 2);
            let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(panel as *const __m128i));
            let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(panel.add(16) as *const __m128i));
            for (r, c) in c.iter_mut().enumerate() {
                let v = _mm256_set1_epi32(x.add(r * pairs + i).read_unaligned());
                c[0] = _mm256_add_epi32(c[0], _mm256_madd_epi16(w0, v));
                c[1] = _mm256_add_epi32(c[1], _mm256_madd_epi16(w1, v));
            }
        }
    }
    for (dst, c) in acc.iter_mut().zip(c.iter().flatten()) {
        _mm256_storeu_si256(dst.as_mut_ptr() as *mut __m256i, c[0]);
        _mm256_storeu_si256(dst.as_mut_ptr().add(8) as *mut __m256i, c[1]);
    }
}

/// The same int8 product in plain Rust; aarch64 compiles it to NEON multiply-accumulates.
#[inline(always)]
fn block_int8_portable<const R: usize, const P: usize>(
    pairs: usize,
    panels: &[i8],
    rows: &[i16],
    acc: &mut [[i32; PANEL]],
) {
    let mut c = [[[0i32; PANEL]; R]; P];
    for i in 0..pairs {
        for (s, c) in c.iter_mut().enumerate() {
            let w: &[i8; PANEL * 2] =
                panels[(s * pairs + i) * PANEL * 2..][..PANEL * 2].try_into().expect("PANEL weight pairs");
            for (r, c) in c.iter_mut().enumerate() {
                let (v0, v1) = (rows[(r * pairs + i) * 2] as i32, rows[(r * pairs + i) * 2 + 1] as i32);
                for (c, w) in c.iter_mut().zip(w.chunks_exact(2)) {
                    *c += w[0] as i32 * v0 + w[1] as i32 * v1;
                }
            }
        }
    }
    for (dst, c) in acc.iter_mut().zip(c.iter().flatten()) {
        *dst = *c;
    }
}

/// A decluttered `EinSum` of activations with constant f32 weights that
/// [`PackedDense`] can run: every row of the activations (its axes not in
/// the weights, in order) holds the summed axes in one block, in the
/// output each row holds the units in one block, and an `Add` of a
/// per-unit constant that alone follows it is the bias.
pub(crate) struct DenseLayer {
    /// The activations.
    pub input: OutletId,
    pub rows: usize,
    /// `units × depth`, row-major, inputs in the activations' order.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    /// The node whose output the layer replaces: the bias `Add`, or the `EinSum`.
    pub last: usize,
}

impl DenseLayer {
    pub fn of(model: &TypedModel, node: &TypedNode, einsum: &EinSum) -> TractResult<Option<DenseLayer>> {
        let konst = |o: &OutletId| model.node(o.node).op_as::<Const>().map(|c| c.val().clone());
        let plain = einsum.q_params.is_none()
            && einsum.operating_dt == f32::datum_type()
            && node.inputs.len() == 2
            && node.outputs[0].fact.datum_type == f32::datum_type();
        let (x_slot, weights) = match (konst(&node.inputs[0]), konst(&node.inputs[1])) {
            (None, Some(w)) => (0, w),
            (Some(w), None) => (1, w),
            _ => return Ok(None),
        };
        let w_slot = 1 - x_slot;
        let x_fact = model.outlet_fact(node.inputs[x_slot])?;
        let (true, Some(x_shape), Some(out_shape)) = (
            plain && weights.datum_type() == f32::datum_type(),
            x_fact.shape.as_concrete(),
            node.outputs[0].fact.shape.as_concrete(),
        ) else {
            return Ok(None);
        };
        let w_shape = weights.shape();
        let at = |positions: &TVec<usize>, shape: &[usize]| positions.first().map(|&p| (p, shape[p]));
        // (position, size) of each axis in the activations, weights and output.
        let mut unit = None;
        let (mut summed, mut row_axes) = (vec![], vec![]);
        for axis in einsum.axes.iter_all_axes() {
            if axis.inputs.iter().chain(&axis.outputs).any(|p| p.len() > 1) {
                return Ok(None);
            }
            let (x, w, y) =
                (at(&axis.inputs[x_slot], x_shape), at(&axis.inputs[w_slot], w_shape), at(&axis.outputs[0], out_shape));
            let size = x.or(w).or(y).map_or(1, |(_, s)| s);
            match (x, w, y) {
                _ if size == 1 => {}
                (Some(x), Some(w), None) => summed.push((x.0, w.0)),
                (None, Some(w), Some(y)) if unit.is_none() => unit = Some((w.0, y.0)),
                (Some(x), None, Some(y)) => row_axes.push((x.0, y.0)),
                _ => return Ok(None),
            }
        }
        let Some((unit_w, unit_y)) = unit else { return Ok(None) };
        summed.sort_unstable();
        row_axes.sort_unstable();
        // Rows before inputs in the activations, rows in the same order
        // before the units in the output: both are then plain row-major matrices.
        let rows_first = row_axes.last().zip(summed.first()).is_none_or(|(r, s)| r.0 < s.0);
        let same_row_order = row_axes.windows(2).all(|p| p[0].1 < p[1].1);
        let units_last = row_axes.last().is_none_or(|r| r.1 < unit_y);
        let rows: usize = row_axes.iter().map(|&(x, _)| x_shape[x]).product();
        if !(rows_first && same_row_order && units_last && rows <= MAX_ROWS) {
            return Ok(None);
        }
        let mut order: Vec<usize> = std::iter::once(unit_w).chain(summed.iter().map(|&(_, w)| w)).collect();
        let unit_axes: Vec<usize> = (0..w_shape.len()).filter(|a| !order.contains(a)).collect();
        order.extend(unit_axes);
        let view = weights.to_plain_array_view::<f32>()?;
        let weights: Vec<f32> = view.permuted_axes(IxDyn(&order)).iter().copied().collect();
        let units = w_shape[unit_w];
        let (bias, last) = match bias_after(model, node, units, unit_y)? {
            Some((bias, add)) => (bias, add),
            None => (vec![0.0; units], node.id),
        };
        Ok(Some(DenseLayer { input: node.inputs[x_slot], rows, weights, bias, last }))
    }
}

/// The per-unit constant added to `node`'s output by an `Add` that is its
/// only consumer, and that `Add`'s id.
fn bias_after(
    model: &TypedModel,
    node: &TypedNode,
    units: usize,
    unit_axis: usize,
) -> TractResult<Option<(Vec<f32>, usize)>> {
    if model.outputs.contains(&OutletId::new(node.id, 0)) {
        return Ok(None);
    }
    let [next] = &node.outputs[0].successors[..] else { return Ok(None) };
    let add = model.node(next.node);
    if add.op_as::<TypedBinOp>().is_none_or(|op| !op.0.is::<Add>()) || add.inputs.len() != 2 {
        return Ok(None);
    }
    let Some(other) = add.inputs.iter().find(|o| o.node != node.id) else { return Ok(None) };
    let Some(bias) = model.node(other.node).op_as::<Const>().map(|c| c.val().clone()) else { return Ok(None) };
    let shape = &node.outputs[0].fact.shape;
    if bias.datum_type() != f32::datum_type() || bias.rank() != shape.rank() || add.outputs[0].fact.shape != *shape {
        return Ok(None);
    }
    let varies_by_unit_only = bias.shape().iter().enumerate().all(|(a, &d)| d == 1 || (a == unit_axis && d == units));
    if !varies_by_unit_only {
        return Ok(None);
    }
    let values = bias.try_as_plain_ram()?.as_slice::<f32>()?;
    let bias = if values.len() == units { values.to_vec() } else { vec![values[0]; units] };
    Ok(Some((bias, add.id)))
}

impl Op for PackedDense {
    fn name(&self) -> StaticName {
        "PackedDense".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} rows, {} → {}, relu: {}, int8: {}",
            self.rows,
            self.depth,
            self.units,
            self.relu,
            self.is_int8()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PackedDense {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.run(inputs)
    }

    op_out_of_plan!();
}

impl TypedOp for PackedDense {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let len = inputs[0].shape.as_concrete().map(|s| s.iter().product::<usize>());
        if len != Some(self.rows * self.depth) {
            bail!("PackedDense takes {} rows of {} inputs, got {:?}", self.rows, self.depth, inputs[0].shape);
        }
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dispatched_product_matches_the_portable_one_for_every_row_and_panel_count() {
        for k in [1, 2, 3, 5, 37, 3136] {
            for (r, streams) in [(1, 4), (1, 2), (1, 1), (2, 2), (2, 1), (3, 1), (4, 1)] {
                let panels: Vec<f32> = (0..streams * k * PANEL).map(|i| ((i * 131) % 97) as f32 / 31.0 - 1.5).collect();
                let x: Vec<f32> = (0..k * r).map(|i| ((i * 71) % 89) as f32 / 29.0 - 1.4).collect();
                let (mut fast, mut plain) = (vec![[0f32; PANEL]; r * streams], vec![[0f32; PANEL]; r * streams]);
                block_product(k, &panels, &x, &mut fast, r, streams);
                match (r, streams) {
                    (1, 4) => block_portable::<1, 4>(k, &panels, &x, &mut plain),
                    (1, 2) => block_portable::<1, 2>(k, &panels, &x, &mut plain),
                    (1, 1) => block_portable::<1, 1>(k, &panels, &x, &mut plain),
                    (2, 2) => block_portable::<2, 2>(k, &panels, &x, &mut plain),
                    (2, 1) => block_portable::<2, 1>(k, &panels, &x, &mut plain),
                    (3, 1) => block_portable::<3, 1>(k, &panels, &x, &mut plain),
                    _ => block_portable::<4, 1>(k, &panels, &x, &mut plain),
                }
                for (i, (a, b)) in fast.iter().flatten().zip(plain.iter().flatten()).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "depth {k}, {r} rows × {streams} panels, value {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_dispatched_int8_product_equals_the_portable_one_for_every_row_and_panel_count() {
        for pairs in [1, 2, 3, 19, 1568] {
            for (r, streams) in [(1, 4), (1, 2), (1, 1), (2, 2), (2, 1), (3, 1), (4, 1)] {
                let panels: Vec<i8> =
                    (0..streams * pairs * PANEL * 2).map(|i| (((i * 131) % 255) as i16 - 127) as i8).collect();
                let x: Vec<i16> = (0..pairs * 2 * r).map(|i| ((i * 71) % 255) as i16 - 127).collect();
                let (mut fast, mut plain) = (vec![[0i32; PANEL]; r * streams], vec![[0i32; PANEL]; r * streams]);
                block_product_int8(pairs, &panels, &x, &mut fast, r, streams);
                dispatch_blocks!(block_int8_portable(pairs, &panels, &x, &mut plain), r, streams);
                assert_eq!(fast, plain, "{pairs} input pairs, {r} rows × {streams} panels");
                let first: i32 = (0..pairs * 2).map(|k| panels[(k / 2 * PANEL) * 2 + k % 2] as i32 * x[k] as i32).sum();
                assert_eq!(plain[0][0], first, "{pairs} input pairs, {r} rows × {streams} panels: first value");
            }
        }
    }

    #[test]
    fn the_product_is_the_plain_matrix_product() {
        // 48 and 100 units leave three panels for the last one-row block.
        for (rows, units) in [(1, 21), (1, 48), (1, 70), (1, 100), (2, 70), (3, 21), (4, 33)] {
            plain_product_case(rows, units);
        }
    }

    fn plain_product_case(rows: usize, units: usize) {
        let depth = 19;
        let w: Vec<f32> = (0..units * depth).map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.5).collect();
        let b: Vec<f32> = (0..units).map(|u| u as f32 * 0.25 - 2.0).collect();
        let x: Vec<f32> = (0..rows * depth).map(|i| ((i * 17) % 13) as f32 / 5.0 - 1.0).collect();
        for relu in [false, true] {
            let dense = PackedDense::new(rows, &w, &b, relu, &[rows, units]).unwrap();
            let mut out = vec![f32::NAN; rows * units];
            dense.multiply(&x, &mut out, &mut Scratch::default());
            for r in 0..rows {
                for u in 0..units {
                    let sum: f32 = (0..depth).map(|k| x[r * depth + k] * w[u * depth + k]).sum::<f32>() + b[u];
                    let expect = if relu { sum.max(0.0) } else { sum };
                    let got = out[r * units + u];
                    assert!(
                        (got - expect).abs() <= 1e-4 * expect.abs().max(1.0),
                        "row {r} unit {u}: {got} vs {expect}"
                    );
                }
            }
        }
    }
}
