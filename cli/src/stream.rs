//! `badexpert-guard stream`: guards raw frames from stdin, a file or a FIFO
//! (docs/camera.md). Exit status: 0 when the input ended (or SIGINT/SIGTERM
//! stopped it) and every frame read was scored or dropped by the policy;
//! 1 when a frame could not be scored or the input ended inside a frame;
//! 2 on bad arguments or a bad bundle; 3 when reading the input or writing
//! the verdicts failed (e.g. the reading end of the pipe closed).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use badexpert_runtime::alarm::{AlarmSettings, StreamAlarm};
use badexpert_runtime::camera::DEFAULT_MAX_FRAME_BYTES;
use badexpert_runtime::{
    FrameGeometry, FrameGuard, Guard, GuardBundle, LoadOptions, ParallelGuard, PixelFormat, PixelLayout,
};
use badexpert_stream::{guard_stream, DropPolicy, StreamEnd, StreamOptions};
use clap::Args;

#[derive(Args)]
pub struct StreamArgs {
    /// Guard bundle directory (badexpert-convert bundle --out).
    #[arg(long)]
    bundle: PathBuf,
    /// Pixel format of the frames: gray8, rgb24, bgr24, yuyv, nv12.
    #[arg(long)]
    format: PixelFormat,
    /// Frame width in pixels.
    #[arg(long)]
    width: usize,
    /// Frame height in pixels.
    #[arg(long)]
    height: usize,
    /// Bytes from one row to the next (default: tight rows).
    #[arg(long)]
    stride: Option<usize>,
    /// Where the frames come from: a file or FIFO, or - for stdin.
    #[arg(long, default_value = "-")]
    input: PathBuf,
    /// When the guard is slower than the source: oldest (drop the oldest waiting frame,
    /// keep the newest) or none (same as --block).
    #[arg(long, default_value = "oldest", value_parser = ["oldest", "none"])]
    drop: String,
    /// Never drop: wait for the guard, slowing the source down.
    #[arg(long)]
    block: bool,
    /// Frames that may wait for the guard (1 to 8).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    queue: u8,
    /// Seconds between stats lines on stderr (0: only the final one).
    #[arg(long, default_value_t = 10.0)]
    stats_every: f64,
    /// Refuse frame geometries above this many bytes per frame.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
    /// Run M, B and M′ concurrently (as `run --parallel`).
    #[arg(long)]
    parallel: bool,
    /// Raise a stream alarm (an `"event":"alarm"` line) when the frames' evidence of a
    /// trigger in view builds up, allowing at most this many false alarms per hour of clean
    /// video (docs/design.md §10); off when absent.
    #[arg(long)]
    alarm_per_hour: Option<f64>,
    /// The stream's frame rate, for --alarm-per-hour.
    #[arg(long, default_value_t = AlarmSettings::default().frame_rate)]
    alarm_fps: f64,
    /// κ of the alarm's p-value calibrator κ·p^(κ−1), in (0, 1).
    #[arg(long, default_value_t = AlarmSettings::default().kappa)]
    alarm_kappa: f64,
}

/// Runs the stream; `Err` is a usage or bundle error (exit 2).
pub fn stream(args: StreamArgs, load: LoadOptions) -> Result<ExitCode> {
    let geometry = FrameGeometry::new(args.format, args.width, args.height, args.stride, args.max_frame_bytes)?;
    if !(args.stats_every.is_finite() && args.stats_every >= 0.0) {
        anyhow::bail!("--stats-every {} must be a number of seconds ≥ 0", args.stats_every);
    }
    let bundle = GuardBundle::open_with(&args.bundle, load)
        .with_context(|| format!("cannot open bundle {}", args.bundle.display()))?;
    let mut guard: Box<dyn FrameGuard> =
        if args.parallel { Box::new(ParallelGuard::new(&bundle)?) } else { Box::new(Guard::new(&bundle)?) };
    let input: Box<dyn Read + Send> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?)
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("cannot install the signal handlers")?;
    }
    let alarm = match args.alarm_per_hour {
        Some(rate) => {
            let settings =
                AlarmSettings { false_alarms_per_hour: rate, frame_rate: args.alarm_fps, kappa: args.alarm_kappa };
            let reference = alarm_reference(&bundle, guard.as_mut())?;
            Some(StreamAlarm::new(&reference, settings)?)
        }
        None => None,
    };
    let options = StreamOptions {
        geometry,
        policy: if args.block || args.drop == "none" { DropPolicy::Block } else { DropPolicy::Oldest },
        queue: args.queue as usize,
        stats_every: (args.stats_every > 0.0).then(|| Duration::from_secs_f64(args.stats_every)),
        alarm,
    };
    eprintln!(
        "badexpert-guard stream: {geometry} frames from {} into {} ({} policy)",
        if args.input.as_os_str() == "-" { "stdin".into() } else { args.input.display().to_string() },
        bundle.manifest().input.shape,
        if options.policy == DropPolicy::Block { "block" } else { "drop-oldest" }
    );
    let report = guard_stream(
        guard.as_mut(),
        &bundle.manifest().classes,
        input,
        std::io::stdout().lock(),
        &options,
        &stop,
        |stats| eprintln!("{}", serde_json::json!({ "stats": stats })),
    );
    let c = &report.counts;
    eprintln!("{}", serde_json::json!({ "summary": report.stats, "end": report.end.to_string() }));
    let code = match &report.end {
        StreamEnd::InputFailed(_) | StreamEnd::OutputFailed(_) => 3,
        StreamEnd::Truncated { .. } => 1,
        StreamEnd::Finished | StreamEnd::Stopped if c.failed > 0 => 1,
        StreamEnd::Finished | StreamEnd::Stopped => 0,
    };
    if code != 0 {
        eprintln!(
            "error: {}{}",
            report.end,
            if c.failed > 0 {
                format!("; {} frame(s) could not be scored and were rejected", c.failed)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::from(code))
}

/// The alarm's reference scores: the calibration scores the bundle records,
/// or, in a bundle written before they were, the guard's scores of the
/// clean held-out frames it stores (those M classifies correctly).
fn alarm_reference(bundle: &GuardBundle, guard: &mut dyn FrameGuard) -> Result<Vec<f32>> {
    let scores = &bundle.manifest().decision.calibration_scores;
    if !scores.is_empty() {
        return Ok(scores.clone());
    }
    let Some(frames) = badexpert_frames::clean_frames(bundle)? else {
        anyhow::bail!(
            "--alarm-per-hour: the bundle records no calibration scores and stores no clean frames; convert it again"
        )
    };
    let labels = frames.require_labels("the bundle's clean frames")?;
    let mut scores = Vec::with_capacity(frames.len());
    for (i, &label) in labels.iter().enumerate() {
        let v = guard.guard(frames.frame(i), PixelLayout::Chw)?;
        if v.class as u32 == label {
            scores.push(v.score);
        }
    }
    Ok(scores)
}
