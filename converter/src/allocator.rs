//! The heap policy for fine-tuning on the CPU.
//!
//! libtorch frees and allocates the same large activation and gradient
//! buffers at every step. glibc serves blocks over 128 KiB with `mmap` and
//! returns them to the kernel on `free`, so each step pays fresh page
//! faults for all of them (docs/benchmarks.md, "The heap policy"). Raising
//! the thresholds keeps such blocks in the heap for reuse.

/// Blocks up to this size come from the heap and stay there when freed.
const KEEP_BYTES: i32 = 256 << 20;

/// Sets the process's heap policy for training (glibc only; elsewhere a
/// no-op). Call once at start, before any thread allocates.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; any value
    // is valid, and it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_BYTES);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
