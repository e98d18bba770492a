//! What a host binary that fine-tunes sets for its whole process at start:
//! libtorch's OpenMP waiting, the heap policy and the intra-op threads.
//!
//! libtorch frees and allocates the same large activation and gradient
//! buffers at every step. glibc serves blocks over 128 KiB with `mmap` and
//! returns them to the kernel on `free`, so each step pays fresh page
//! faults for all of them (docs/benchmarks.md, "The heap policy"). Raising
//! the thresholds keeps such blocks in the heap for reuse.

/// Blocks up to this size come from the heap and stay there when freed.
const KEEP_BYTES: i32 = 256 << 20;

/// Call first in `main`, before any thread starts: OpenMP workers wait
/// passively unless `OMP_WAIT_POLICY` says otherwise (spinning starves
/// everything else on a shared box, and OpenMP reads it once), and the heap
/// keeps freed training buffers.
pub fn prepare_for_training() {
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
    }
    keep_freed_buffers();
}

/// libtorch's intra-op threads: `threads`, or one per core.
pub fn set_threads(threads: Option<i32>) {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    tch::set_num_threads(threads);
}

/// The heap policy for training (glibc only; elsewhere a no-op).
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; any value
    // is valid, and it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_BYTES);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
