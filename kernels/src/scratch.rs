//! Working buffers of our convolutions. One set per thread, shared by every
//! convolution of every plan the thread runs: the guard's three models run
//! in turn and reuse the same cache-warm memory instead of keeping three
//! sets, and a frame allocates nothing here once the largest layer has run.

/// One thread's buffers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scratch {
    /// Zero-padded input planes.
    padded: Vec<f32>,
    /// The op's own working buffer.
    work: Vec<f32>,
    /// Offsets into `padded`, for ops that compute them per input size.
    offsets: Vec<usize>,
    /// The int8 kernels' quantized input, padded planes and working buffer.
    int8: [Vec<i16>; 3],
}

impl Scratch {
    /// `padded` and `work` buffers of exactly these lengths, and the
    /// offsets. Buffers only grow: shrinking then regrowing would refill
    /// them with zeros every time a smaller layer ran in between.
    pub(crate) fn buffers(&mut self, padded: usize, work: usize) -> (&mut [f32], &mut [f32], &mut Vec<usize>) {
        (grown(&mut self.padded, padded), grown(&mut self.work, work), &mut self.offsets)
    }

    /// The int8 buffers, of exactly these lengths, growing as [`Self::buffers`] do.
    pub(crate) fn int8_buffers(
        &mut self,
        quantized: usize,
        padded: usize,
        work: usize,
    ) -> (&mut [i16], &mut [i16], &mut [i16]) {
        let [q, p, w] = &mut self.int8;
        (grown(q, quantized), grown(p, padded), grown(w, work))
    }
}

/// The first `len` values of `buffer`, which grows (zero-filled) but never shrinks.
fn grown<T: Clone + Default>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::default());
    }
    &mut buffer[..len]
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Runs `f` with this thread's [`Scratch`] (a fresh one if it is already
/// in use, which our ops, never nested, do not cause).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}
