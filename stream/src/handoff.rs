//! The fixed-capacity hand-off between the reading and the guarding thread.
//!
//! Frame buffers are made once and then only move: the reader fills a free
//! buffer and queues it, the guard takes the oldest queued one and gives it
//! back when done. Under [`DropPolicy::Oldest`] a reader that finds the queue
//! full takes its oldest frame back unguarded (a single-producer queue could
//! not: its producer cannot dequeue, so both ends share one small lock) and
//! reuses that buffer; under [`DropPolicy::Block`] it waits. With a queue of
//! `q` frames there are `q + 2` buffers: one being read, `q` waiting, one
//! being guarded, so the reader always has a buffer and nothing allocates.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use heapless::{Deque, Vec as FixedVec};

/// Most frames that may wait between reader and guard.
pub const MAX_QUEUE: usize = 8;
/// Dropped frames remembered for their output line (older ones are still
/// reported, without a timestamp).
pub const DROP_LOG: usize = 1024;

/// What the reader does when the guard is slower than the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropPolicy {
    /// Keep the newest frames: the oldest waiting one is dropped unguarded.
    #[default]
    Oldest,
    /// Wait for the guard: no frame is dropped, the source is slowed down.
    Block,
}

/// One frame read: its index in the stream, its arrival time (seconds since
/// the stream began) and its bytes.
#[derive(Debug)]
pub struct Slot {
    pub index: u64,
    pub arrived: f64,
    pub data: Vec<u8>,
}

/// Why the reader stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEnd {
    /// The input ended at a frame boundary.
    Finished,
    /// The input ended `got` bytes into a frame of `want`.
    Truncated { got: usize, want: usize },
    /// Reading failed.
    Failed(String),
}

struct State {
    queue: Deque<Slot, MAX_QUEUE>,
    capacity: usize,
    free: FixedVec<Vec<u8>, { MAX_QUEUE + 2 }>,
    dropped: Deque<(u64, f64), DROP_LOG>,
    dropped_total: u64,
    end: Option<ReaderEnd>,
    /// Set by the guard side when it stops early: the reader gives up.
    abandoned: bool,
}

/// The shared state of one stream.
pub struct Handoff {
    state: Mutex<State>,
    changed: Condvar,
    policy: DropPolicy,
}

impl Handoff {
    /// A hand-off of frames of `frame_bytes` bytes with up to `queue` waiting
    /// (1 ≤ queue ≤ [`MAX_QUEUE`]).
    pub fn new(frame_bytes: usize, queue: usize, policy: DropPolicy) -> Handoff {
        let capacity = queue.clamp(1, MAX_QUEUE);
        let mut free = FixedVec::new();
        for _ in 0..capacity + 2 {
            free.push(vec![0u8; frame_bytes]).expect("capacity + 2 ≤ MAX_QUEUE + 2");
        }
        Handoff {
            state: Mutex::new(State {
                queue: Deque::new(),
                capacity,
                free,
                dropped: Deque::new(),
                dropped_total: 0,
                end: None,
                abandoned: false,
            }),
            changed: Condvar::new(),
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer for the reader to fill; `None` once the guard side gave up.
    pub fn take_free(&self) -> Option<Vec<u8>> {
        let mut s = self.lock();
        loop {
            if s.abandoned {
                return None;
            }
            if let Some(b) = s.free.pop() {
                return Some(b);
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Queues a filled frame (see the module documentation for a full queue).
    /// Returns false once the guard side gave up.
    pub fn push(&self, slot: Slot) -> bool {
        let mut s = self.lock();
        while s.queue.len() >= s.capacity && !s.abandoned {
            match self.policy {
                DropPolicy::Block => s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner()),
                DropPolicy::Oldest => {
                    let old = s.queue.pop_front().expect("the queue is full");
                    if s.dropped.is_full() {
                        s.dropped.pop_front();
                    }
                    let _ = s.dropped.push_back((old.index, old.arrived));
                    s.dropped_total += 1;
                    let _ = s.free.push(old.data);
                }
            }
        }
        if s.abandoned {
            return false;
        }
        let _ = s.queue.push_back(slot);
        self.changed.notify_all();
        true
    }

    /// The reader is done.
    pub fn finish(&self, end: ReaderEnd) {
        self.lock().end = Some(end);
        self.changed.notify_all();
    }

    /// The oldest waiting frame; `Err(end)` once the reader is done and the
    /// queue is empty; `Ok(None)` when `timeout` passed first.
    pub fn next(&self, timeout: Duration) -> Result<Option<Slot>, ReaderEnd> {
        let mut s = self.lock();
        if s.queue.is_empty() && s.end.is_none() {
            s = self.changed.wait_timeout(s, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        match s.queue.pop_front() {
            Some(slot) => {
                self.changed.notify_all();
                Ok(Some(slot))
            }
            None => match &s.end {
                Some(end) => Err(end.clone()),
                None => Ok(None),
            },
        }
    }

    /// Gives a guarded frame's buffer back.
    pub fn recycle(&self, data: Vec<u8>) {
        let _ = self.lock().free.push(data);
        self.changed.notify_all();
    }

    /// The frames dropped before `index` that are still remembered, oldest
    /// first, into `out` (cleared first); and the total dropped so far.
    pub fn dropped_before(&self, index: u64, out: &mut FixedVec<(u64, f64), DROP_LOG>) -> u64 {
        out.clear();
        let mut s = self.lock();
        while s.dropped.front().is_some_and(|&(i, _)| i < index) {
            let d = s.dropped.pop_front().expect("front exists");
            let _ = out.push(d);
        }
        s.dropped_total
    }

    /// The guard side stops: a waiting reader gives up.
    pub fn abandon(&self) {
        self.lock().abandoned = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(h: &Handoff, index: u64) -> Slot {
        Slot { index, arrived: index as f64, data: h.take_free().unwrap() }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_frame_and_reuses_its_buffer() {
        let h = Handoff::new(4, 2, DropPolicy::Oldest);
        for i in 0..5 {
            let s = slot(&h, i);
            assert!(h.push(s));
        }
        // Frames 0, 1, 2 were dropped for 3 and 4.
        let mut log = FixedVec::new();
        assert_eq!(h.dropped_before(4, &mut log), 3);
        assert_eq!(log.iter().map(|d| d.0).collect::<std::vec::Vec<_>>(), [0, 1, 2]);
        assert_eq!(h.next(Duration::ZERO).unwrap().unwrap().index, 3);
        assert_eq!(h.next(Duration::ZERO).unwrap().unwrap().index, 4);
        assert!(h.next(Duration::ZERO).unwrap().is_none());
        h.finish(ReaderEnd::Finished);
        assert_eq!(h.next(Duration::ZERO).unwrap_err(), ReaderEnd::Finished);
    }

    #[test]
    fn blocking_waits_for_the_guard_and_drops_nothing() {
        let h = std::sync::Arc::new(Handoff::new(4, 1, DropPolicy::Block));
        let reader = {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let s = Slot { index: i, arrived: 0.0, data: h.take_free().unwrap() };
                    h.push(s);
                }
                h.finish(ReaderEnd::Finished);
            })
        };
        let mut seen = vec![];
        loop {
            match h.next(Duration::from_millis(50)) {
                Ok(Some(s)) => {
                    seen.push(s.index);
                    h.recycle(s.data);
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
        reader.join().unwrap();
        assert_eq!(seen, (0..50).collect::<std::vec::Vec<_>>());
    }
}
