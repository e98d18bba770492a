//! Raw camera streams for **badexpert**: consecutive frames of one geometry
//! (`ffmpeg -f rawvideo`, `gst-launch-1.0 … ! fdsink`, a FIFO), read on one
//! thread and guarded on another, with one JSON line per input frame.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use badexpert_runtime::{FrameGeometry, Guard, GuardBundle, PixelFormat};
//! use badexpert_stream::{guard_stream, StreamOptions};
//!
//! let bundle = GuardBundle::open("guard.bundle")?;
//! let mut guard = Guard::new(&bundle)?;
//! let geometry = FrameGeometry::new(PixelFormat::Rgb24, 640, 480, None, 1 << 28)?;
//! let report = guard_stream(
//!     &mut guard,
//!     &bundle.manifest().classes,
//!     std::io::stdin(),
//!     std::io::stdout().lock(),
//!     &StreamOptions::new(geometry),
//!     &AtomicBool::new(false),
//!     |_stats| {},
//! );
//! eprintln!("{} frames, {} rejected", report.counts.frames, report.counts.rejected);
//! # Ok::<(), badexpert_runtime::Error>(())
//! ```
//!
//! [`handoff`] is the fixed set of buffers between the two threads and the
//! [`DropPolicy`] applied when the guard is slower than the source; [`stats`]
//! counts and keeps the latency window; [`lines`] writes the output. In the
//! steady state a frame allocates nothing here.

pub mod handoff;
pub mod lines;
pub mod stats;

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use badexpert_runtime::alarm::StreamAlarm;
use badexpert_runtime::{CameraFrame, FrameGeometry, FrameGuard};

pub use handoff::{DropPolicy, ReaderEnd};
use handoff::{Handoff, Slot, DROP_LOG};
pub use stats::Counts;
use stats::Latencies;

/// How to run a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamOptions {
    pub geometry: FrameGeometry,
    pub policy: DropPolicy,
    /// Frames that may wait for the guard (1 to [`handoff::MAX_QUEUE`]).
    pub queue: usize,
    /// How often to report [`Stats`]; `None` only at the end.
    pub stats_every: Option<Duration>,
    /// A stream alarm over the guarded frames' scores; each alarm is a line
    /// of its own ([`lines`]) and counted in [`Counts::alarms`].
    pub alarm: Option<StreamAlarm>,
}

impl StreamOptions {
    /// Drop-oldest with one waiting frame, stats every 10 s.
    pub fn new(geometry: FrameGeometry) -> StreamOptions {
        StreamOptions {
            geometry,
            policy: DropPolicy::Oldest,
            queue: 1,
            stats_every: Some(Duration::from_secs(10)),
            alarm: None,
        }
    }
}

/// A periodic report: the counts, the latency percentiles over the last
/// frames, and the time since the stream began.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stats {
    pub uptime_s: f64,
    #[serde(flatten)]
    pub counts: Counts,
    pub p50_us: Option<u32>,
    pub p99_us: Option<u32>,
}

/// Why a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The input ended at a frame boundary.
    Finished,
    /// The input ended inside a frame: `got` of `want` bytes (not guarded).
    Truncated { got: usize, want: usize },
    /// Reading the input failed.
    InputFailed(String),
    /// Writing the output failed, e.g. the reading end of a pipe closed.
    OutputFailed(String),
    /// The caller's stop flag was raised (SIGINT, SIGTERM).
    Stopped,
}

impl std::fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamEnd::Finished => f.write_str("the input ended"),
            StreamEnd::Truncated { got, want } => {
                write!(f, "the input ended inside a frame ({got} of {want} bytes): that last frame was not guarded")
            }
            StreamEnd::InputFailed(e) => write!(f, "reading the input failed: {e}"),
            StreamEnd::OutputFailed(e) => write!(f, "writing the verdicts failed: {e}"),
            StreamEnd::Stopped => f.write_str("stopped by a signal"),
        }
    }
}

/// The whole run: the final [`Stats`] and why it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamReport {
    pub counts: Counts,
    pub stats: Stats,
    pub end: StreamEnd,
}

/// How long the guarding thread waits for a frame before it looks at the
/// stop flag and the stats clock again.
const POLL: Duration = Duration::from_millis(100);

/// Guards every frame `input` delivers and writes one JSON line per frame to
/// `output` ([`lines`]); calls `on_stats` every `stats_every` (the final
/// stats are in the report). Returns when the input ends, the output fails or `stop` is
/// raised; a reader still blocked on its input then ends with it.
pub fn guard_stream<G, R, W>(
    guard: &mut G,
    classes: &[String],
    input: R,
    output: W,
    options: &StreamOptions,
    stop: &AtomicBool,
    mut on_stats: impl FnMut(&Stats),
) -> StreamReport
where
    G: FrameGuard + ?Sized,
    R: Read + Send + 'static,
    W: Write,
{
    let geometry = options.geometry;
    let frame_bytes = geometry.frame_bytes().expect("FrameGeometry::new checked the size");
    let handoff = Arc::new(Handoff::new(frame_bytes, options.queue, options.policy));
    let start = Instant::now();
    let reader = {
        let handoff = handoff.clone();
        std::thread::Builder::new()
            .name("badexpert-reader".into())
            .spawn(move || read_frames(input, &handoff, start))
            .map(|_| ())
    };
    let mut out = lines::LineWriter::new(output, classes);
    let mut counts = Counts::default();
    let mut latencies = Latencies::default();
    let mut dropped = heapless::Vec::<(u64, f64), DROP_LOG>::new();
    let mut next_index = 0u64;
    let mut alarm = options.alarm.clone();
    let mut last_stats = Instant::now();
    let stats_of = |counts: Counts, latencies: &mut Latencies| {
        let p = latencies.percentiles();
        Stats { uptime_s: start.elapsed().as_secs_f64(), counts, p50_us: p.map(|p| p.0), p99_us: p.map(|p| p.1) }
    };
    let end = if let Err(e) = reader {
        StreamEnd::InputFailed(format!("cannot start the reading thread: {e}"))
    } else {
        loop {
            if stop.load(Ordering::Relaxed) {
                break StreamEnd::Stopped;
            }
            if options.stats_every.is_some_and(|every| last_stats.elapsed() >= every) {
                on_stats(&stats_of(counts, &mut latencies));
                last_stats = Instant::now();
            }
            let slot = match handoff.next(POLL) {
                Ok(Some(slot)) => slot,
                Ok(None) => continue,
                Err(end) => {
                    break match end {
                        ReaderEnd::Finished => StreamEnd::Finished,
                        ReaderEnd::Truncated { got, want } => StreamEnd::Truncated { got, want },
                        ReaderEnd::Failed(e) => StreamEnd::InputFailed(e),
                    }
                }
            };
            // The frames dropped since the last one guarded get their lines first.
            handoff.dropped_before(slot.index, &mut dropped);
            let mut remembered = dropped.iter().peekable();
            let mut written = Ok(());
            for index in next_index..slot.index {
                while remembered.next_if(|d| d.0 < index).is_some() {}
                let arrived = remembered.next_if(|d| d.0 == index).map(|d| d.1);
                counts.frames += 1;
                counts.dropped += 1;
                written = written.and_then(|()| out.dropped(index, arrived));
            }
            let began = Instant::now();
            let verdict = CameraFrame::new(geometry, &slot.data).and_then(|frame| guard.guard_camera(&frame));
            let micros = began.elapsed().as_micros().min(u32::MAX as u128) as u32;
            counts.frames += 1;
            match &verdict {
                Ok(v) => {
                    counts.guarded += 1;
                    counts.rejected += u64::from(!v.accepted);
                    latencies.record(micros);
                }
                Err(_) => counts.failed += 1,
            }
            written = written.and_then(|()| out.verdict(slot.index, slot.arrived, &verdict, micros));
            if let Some(event) = alarm.as_mut().and_then(|a| a.observe(verdict.as_ref().ok().map(|v| v.score))) {
                counts.alarms += 1;
                written = written.and_then(|()| out.alarm(slot.index, slot.arrived, &event));
            }
            next_index = slot.index + 1;
            handoff.recycle(slot.data);
            if let Err(e) = written {
                break StreamEnd::OutputFailed(e.to_string());
            }
        }
    };
    handoff.abandon();
    let stats = stats_of(counts, &mut latencies);
    StreamReport { counts, stats, end }
}

/// The reading thread: fills free buffers with whole frames until the input
/// ends, fails, or the guard side gives up.
fn read_frames(mut input: impl Read, handoff: &Handoff, start: Instant) {
    let mut index = 0u64;
    loop {
        let Some(mut data) = handoff.take_free() else { return };
        let (got, error) = fill(&mut input, &mut data);
        let want = data.len();
        let end = match error {
            Some(e) => Some(ReaderEnd::Failed(e.to_string())),
            None if got == want => None,
            None if got == 0 => Some(ReaderEnd::Finished),
            None => Some(ReaderEnd::Truncated { got, want }),
        };
        if let Some(end) = end {
            handoff.recycle(data);
            handoff.finish(end);
            return;
        }
        if !handoff.push(Slot { index, arrived: start.elapsed().as_secs_f64(), data }) {
            return;
        }
        index += 1;
    }
}

/// Reads until `buf` is full or the input ends; the bytes read and the
/// error that stopped it, if any.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> (usize, Option<std::io::Error>) {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}
