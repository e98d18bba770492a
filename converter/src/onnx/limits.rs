//! Bounds on the tensor sizes a model may claim, checked before libtorch
//! allocates: a corrupt or hostile model gets an error, not the host's memory.

use std::cell::Cell;

/// Most elements one tensor may have: 2^30 (4 GiB as f32). No weight or
/// activation of a classifier this converter fine-tunes comes near it (VGG-16
/// at 224², batch 256, peaks at 822 M), so a model claiming more (initializer
/// dims, a shape input of Reshape / Expand / ConstantOfShape, a broadcast or
/// window output) is refused with an error instead of exhausting the host's
/// memory. [`super::check_bytes`] lowers it further so that a fuzzer stays
/// within libFuzzer's memory limit.
pub const MAX_TENSOR_ELEMENTS: i64 = 1 << 30;

thread_local! {
    static LIMIT: Cell<i64> = const { Cell::new(MAX_TENSOR_ELEMENTS) };
}

/// This thread's element limit ([`MAX_TENSOR_ELEMENTS`] unless lowered).
pub(crate) fn element_limit() -> i64 {
    LIMIT.with(Cell::get)
}

/// Restores the previous limit when dropped.
pub(crate) struct LimitGuard(i64);

/// Lowers this thread's element limit to `limit` (never raises it) until the guard drops.
pub(crate) fn lower_element_limit(limit: i64) -> LimitGuard {
    LimitGuard(LIMIT.with(|l| l.replace(limit.min(l.get()))))
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        LIMIT.with(|l| l.set(self.0));
    }
}

/// Number of elements of a tensor of `dims`, or why it may not exist: a
/// negative dim, an overflowing product, or more than the element limit. The
/// non-zero dims of an empty shape count too: [2^40, 2^40, 0] holds nothing
/// but overflows element counting (tch's `numel`) downstream.
pub(crate) fn elements(dims: &[i64]) -> Result<i64, String> {
    if let Some(d) = dims.iter().find(|&&d| d < 0) {
        return Err(format!("shape {dims:?} has a negative dimension {d}"));
    }
    let limit = element_limit();
    let n = dims.iter().filter(|&&d| d != 0).try_fold(1i64, |n, &d| n.checked_mul(d)).filter(|&n| n <= limit);
    let n =
        n.ok_or_else(|| format!("shape {dims:?} has more than {limit} elements, the limit (MAX_TENSOR_ELEMENTS)"))?;
    Ok(if dims.contains(&0) { 0 } else { n })
}
