//! The one weight layout our product kernels read: a layer's row-major
//! weights (one row of `depth` values per output channel or unit), packed
//! once at load into panels of `width` rows, depth-major inside a panel so a
//! tile streams them in order.

/// Packs row-major `values` (rows of `depth`) into panels of `width` rows
/// with `group` consecutive depth steps side by side:
/// `packed[((p·G + i)·width + r)·group + t]` is row `p·width + r`, depth
/// `i·group + t`, with `G = ⌈depth / group⌉`; zero past the last row and
/// past the last depth step. f32 tiles read single steps (`group` 1), the
/// int8 tiles pairs (`group` 2).
pub fn pack<T: Copy + Default>(values: &[T], depth: usize, width: usize, group: usize) -> Vec<T> {
    let rows = values.len() / depth.max(1);
    let groups = depth.div_ceil(group);
    let mut packed = vec![T::default(); rows.div_ceil(width) * groups * width * group];
    for (row, values) in values.chunks_exact(depth.max(1)).enumerate() {
        let panel = &mut packed[row / width * groups * width * group..][..groups * width * group];
        for (k, &w) in values.iter().enumerate() {
            panel[((k / group) * width + row % width) * group + k % group] = w;
        }
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_land_in_their_panel_lane_and_the_rest_is_zero() {
        // 3 rows of depth 3 into panels of 2 rows: two panels.
        let w: Vec<i32> = (1..=9).collect();
        assert_eq!(pack(&w, 3, 2, 1), vec![1, 4, 2, 5, 3, 6, 7, 0, 8, 0, 9, 0]);
        // Pairs of depth steps side by side, the odd last step padded.
        assert_eq!(pack(&w, 3, 2, 2), vec![1, 2, 4, 5, 3, 0, 6, 0, 7, 8, 0, 0, 9, 0, 0, 0]);
    }
}
