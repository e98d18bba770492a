//! Constant padding of the last two axes of an f32 tensor: the zero border
//! tract puts in front of every padded convolution.
//!
//! tract 0.23 pads through a generic n-dimensional ndarray assignment, about
//! 3 % of a ResNet18 run and 4 % of the demo CNN's. Here each plane is filled
//! and its rows are copied with `copy_from_slice` (a memcpy). Results are
//! identical to tract's: the same values are copied to the same places.

use tract_core::internal::*;

/// Pads the last two axes (height, width) with `value`; other axes untouched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PadPlanes {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
    pub value: f32,
}

impl Eq for PadPlanes {}

impl std::hash::Hash for PadPlanes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.top, self.bottom, self.left, self.right, self.value.to_bits()).hash(state)
    }
}

impl PadPlanes {
    fn padded(&self, shape: &[usize]) -> TVec<usize> {
        let mut out: TVec<usize> = shape.into();
        let r = out.len();
        out[r - 2] += self.top + self.bottom;
        out[r - 1] += self.left + self.right;
        out
    }
}

impl Op for PadPlanes {
    fn name(&self) -> StaticName {
        "PadPlanes".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PadPlanes {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        if shape.len() < 2 {
            bail!("PadPlanes needs at least two axes, got shape {shape:?}");
        }
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let out_shape = self.padded(shape);
        let ow = w + self.left + self.right;
        let plane_out = (h + self.top + self.bottom) * ow;
        let input = input.try_as_plain_ram()?.as_slice::<f32>()?;
        crate::arith::f32_output(&out_shape, |out| {
            if h * w > 0 {
                for (plane, out) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(plane_out)) {
                    pad_plane(plane, w, out, ow, self.top, self.left, self.value);
                }
            } else {
                out.fill(self.value);
            }
            Ok(())
        })
    }

    op_out_of_plan!();
}

/// Writes all of `out` (rows of `ow` values): `plane` (rows of `w` values)
/// `top` rows down and `left` columns in, `value` around it. Every value is
/// written because our convolutions pad into scratch buffers shared by
/// every convolution a thread runs, whose borders hold whatever the last
/// one left there.
pub(crate) fn pad_plane<T: Copy>(plane: &[T], w: usize, out: &mut [T], ow: usize, top: usize, left: usize, value: T) {
    let h = plane.len() / w.max(1);
    for (y, row) in out.chunks_exact_mut(ow).enumerate() {
        match y.checked_sub(top).filter(|&y| y < h && w > 0) {
            Some(y) => {
                row[..left].fill(value);
                row[left..left + w].copy_from_slice(&plane[y * w..][..w]);
                row[left + w..].fill(value);
            }
            None => row.fill(value),
        }
    }
}

impl TypedOp for PadPlanes {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let r = shape.rank();
        if r < 2 {
            bail!("PadPlanes needs at least two axes, got rank {r}");
        }
        let mut dims: TVec<TDim> = shape.to_tvec();
        dims[r - 2] = dims[r - 2].clone() + (self.top + self.bottom);
        dims[r - 1] = dims[r - 1].clone() + (self.left + self.right);
        Ok(tvec!(f32::fact(&*dims)))
    }

    as_op!();
}
