//! Antialiased bilinear resampling of u8 planes, as Pillow's `resize(…,
//! BILINEAR)` computes it and torchvision's `resize(…, antialias=True)`
//! follows (within one step): a triangle filter stretched by the scale when
//! shrinking, weights normalised per output pixel and held in 22-bit fixed
//! point, a horizontal pass rounded to u8, then a vertical one. Integer
//! arithmetic, so every CPU gives the same bytes.
//!
//! The resized image may be cropped: only the output rows and columns of the
//! window are computed, each exactly as in the full resized image.

/// Fixed-point bits of the weights (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 22;

/// The weights of one axis: for each output index, the first input index and
/// its taps.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AxisWeights {
    /// First input index of each output index.
    first: Vec<usize>,
    /// Taps of each output index, `taps` per index (zero past its last one).
    weights: Vec<i32>,
    taps: usize,
    /// Number of taps used by each output index.
    counts: Vec<usize>,
}

impl AxisWeights {
    /// Weights taking `input` samples to the output indices `window` of a
    /// `resized`-long axis. An axis that keeps its size gets the identity.
    pub(crate) fn new(input: usize, resized: usize, window: std::ops::Range<usize>) -> AxisWeights {
        let scale = input as f64 / resized as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale;
        let taps = support.ceil() as usize * 2 + 1;
        let mut w = AxisWeights { first: vec![], weights: vec![0; window.len() * taps], taps, counts: vec![] };
        let mut real = vec![0f64; taps];
        for (j, out) in window.enumerate() {
            let center = (out as f64 + 0.5) * scale;
            // Pillow's rounding: truncation after +0.5, then clamped.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(input as i64).max(lo as i64) as usize;
            let count = (hi - lo).min(taps);
            let mut total = 0.0;
            for (x, r) in real[..count].iter_mut().enumerate() {
                let t = ((x + lo) as f64 - center + 0.5) / filter_scale;
                *r = (1.0 - t.abs()).max(0.0);
                total += *r;
            }
            for (x, r) in real[..count].iter().enumerate() {
                let k = if total != 0.0 { r / total } else { 0.0 };
                let fixed = k * (1i64 << PRECISION_BITS) as f64;
                w.weights[j * taps + x] = if fixed < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
            }
            w.first.push(lo);
            w.counts.push(count);
        }
        w
    }

    pub(crate) fn len(&self) -> usize {
        self.first.len()
    }

    /// The input indices output `j` reads.
    pub(crate) fn span(&self, j: usize) -> std::ops::Range<usize> {
        self.first[j]..self.first[j] + self.counts[j]
    }

    /// Output `j` from the inputs `at(i)`.
    #[inline]
    fn apply(&self, j: usize, at: impl Fn(usize) -> u8) -> u8 {
        let first = self.first[j];
        let taps = &self.weights[j * self.taps..j * self.taps + self.counts[j]];
        let mut sum: i32 = 1 << (PRECISION_BITS - 1);
        for (x, &w) in taps.iter().enumerate() {
            sum += at(first + x) as i32 * w;
        }
        (sum >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// Resizes one u8 plane to a window of its resized version; see the module
/// documentation. Buffers are made once for a geometry and reused.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PlaneResampler {
    rows: AxisWeights,
    cols: AxisWeights,
    /// Rows of the input the vertical pass reads.
    row_span: std::ops::Range<usize>,
    /// The horizontal pass's output (rows of `row_span`, window columns).
    between: Vec<u8>,
    resize_rows: bool,
    resize_cols: bool,
}

impl PlaneResampler {
    /// From an `input` (height, width) plane to the `window` (rows, columns)
    /// of its resize to `resized` (height, width).
    pub(crate) fn new(input: [usize; 2], resized: [usize; 2], window: [std::ops::Range<usize>; 2]) -> PlaneResampler {
        let [rows_window, cols_window] = window;
        let rows = AxisWeights::new(input[0], resized[0], rows_window.clone());
        let cols = AxisWeights::new(input[1], resized[1], cols_window.clone());
        let (resize_rows, resize_cols) = (input[0] != resized[0], input[1] != resized[1]);
        let row_span = if resize_rows {
            let lo = (0..rows.len()).map(|j| rows.span(j).start).min().unwrap_or(0);
            let hi = (0..rows.len()).map(|j| rows.span(j).end).max().unwrap_or(0);
            lo..hi
        } else {
            rows_window.clone()
        };
        let between = vec![0; row_span.len() * cols.len()];
        PlaneResampler { rows, cols, row_span, between, resize_rows, resize_cols }
    }

    /// Output (rows × columns of the window).
    #[cfg(test)]
    pub(crate) fn output(&self) -> [usize; 2] {
        [self.rows.len(), self.cols.len()]
    }

    /// Resamples the plane whose pixel (y, x) is `plane[y·stride + x·step]`
    /// into `out` (row-major, the window's size).
    pub(crate) fn run(&mut self, plane: &[u8], stride: usize, step: usize, out: &mut [u8]) {
        let width = self.cols.len();
        let first_row = self.row_span.start;
        let cols_window_start = if self.resize_cols { 0 } else { self.cols.first.first().copied().unwrap_or(0) };
        // Horizontal pass over the rows the vertical one needs.
        for (r, y) in self.row_span.clone().enumerate() {
            let row = &plane[y * stride..];
            let dst = &mut self.between[r * width..(r + 1) * width];
            if self.resize_cols {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = self.cols.apply(j, |x| row[x * step]);
                }
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = row[(cols_window_start + j) * step];
                }
            }
        }
        // Vertical pass.
        let rows_window_start = self.rows.first.first().copied().unwrap_or(0);
        for i in 0..self.rows.len() {
            let dst = &mut out[i * width..(i + 1) * width];
            if self.resize_rows {
                let between = &self.between;
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = self.rows.apply(i, |y| between[(y - first_row) * width + j]);
                }
            } else {
                let r = rows_window_start + i - first_row;
                dst.copy_from_slice(&self.between[r * width..(r + 1) * width]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_size_is_the_identity_and_a_window_is_a_crop() {
        let plane: Vec<u8> = (0..30u8).collect(); // 5 × 6
        let mut r = PlaneResampler::new([5, 6], [5, 6], [1..4, 2..6]);
        let mut out = [0u8; 12];
        r.run(&plane, 6, 1, &mut out);
        assert_eq!(out, [8, 9, 10, 11, 14, 15, 16, 17, 20, 21, 22, 23]);
    }

    #[test]
    fn halving_matches_pillow() {
        // Pillow: Image.fromarray(np.array([[0, 100, 200, 250]], np.uint8)).resize((2, 1), BILINEAR)
        // and torchvision's resize(…, [1, 2], antialias=True) both give [[71, 207]].
        let mut r = PlaneResampler::new([1, 4], [1, 2], [0..1, 0..2]);
        let mut out = [0u8; 2];
        r.run(&[0, 100, 200, 250], 4, 1, &mut out);
        assert_eq!(out, [71, 207]);
    }

    #[test]
    fn a_constant_plane_stays_constant_at_any_scale() {
        let plane = vec![77u8; 480 * 640];
        for (resized, window) in [([28, 37], [0..28, 4..32]), ([960, 1280], [0..960, 0..1280]), ([3, 3], [0..3, 0..3])]
        {
            let mut r = PlaneResampler::new([480, 640], resized, window);
            let [h, w] = r.output();
            let mut out = vec![0u8; h * w];
            r.run(&plane, 640, 1, &mut out);
            assert!(out.iter().all(|&v| v == 77), "{resized:?}");
        }
    }
}
