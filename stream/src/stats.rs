//! Counters and a latency window for the periodic stats line: the last
//! [`WINDOW`] guarded frames' latencies in a ring, sorted into a second
//! fixed buffer when a percentile is asked for — no allocation per frame.

/// Frames the latency percentiles are taken over.
pub const WINDOW: usize = 4096;

/// What a stream has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Counts {
    /// Frames read from the input (guarded, failed or dropped).
    pub frames: u64,
    /// Frames scored by the guard.
    pub guarded: u64,
    /// Scored frames the guard rejected as triggered.
    pub rejected: u64,
    /// Frames dropped unguarded because the guard fell behind.
    pub dropped: u64,
    /// Frames the guard could not score (rejected too: fail closed).
    pub failed: u64,
    /// Stream alarms raised ([`crate::StreamOptions::alarm`]).
    pub alarms: u64,
}

/// Latencies of the last [`WINDOW`] guarded frames, in µs.
pub struct Latencies {
    ring: Box<[u32; WINDOW]>,
    sorted: Box<[u32; WINDOW]>,
    seen: usize,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies { ring: Box::new([0; WINDOW]), sorted: Box::new([0; WINDOW]), seen: 0 }
    }
}

impl Latencies {
    pub fn record(&mut self, micros: u32) {
        self.ring[self.seen % WINDOW] = micros;
        self.seen += 1;
    }

    /// The p50 and p99 latencies over the window; `None` before any frame.
    pub fn percentiles(&mut self) -> Option<(u32, u32)> {
        let n = self.seen.min(WINDOW);
        if n == 0 {
            return None;
        }
        let sorted = &mut self.sorted[..n];
        sorted.copy_from_slice(&self.ring[..n]);
        sorted.sort_unstable();
        // Nearest rank.
        let at = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some((at(0.50), at(0.99)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_ranks_over_the_last_window() {
        let mut l = Latencies::default();
        assert_eq!(l.percentiles(), None);
        for v in 1..=100 {
            l.record(v);
        }
        assert_eq!(l.percentiles(), Some((50, 99)));
        for _ in 0..WINDOW {
            l.record(7);
        }
        assert_eq!(l.percentiles(), Some((7, 7)));
    }
}
