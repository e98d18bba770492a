//! Per-frame latency of the ways to run a bundle, measured back to back in
//! one process so their ratios are comparable on a shared, noisy machine:
//! M alone, the guard sequential, the guard on three threads, and batches.

use std::time::Instant;

use serde::Serialize;
use tract_core::internal::*;

use crate::{BatchGuard, FrameSet, Guard, GuardBundle, ParallelGuard, PixelLayout, Result, Role, Verdict};

/// One way of running, timed.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub mode: String,
    pub batch: usize,
    /// Per frame (a batch's time divided by its size).
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub runs: usize,
}

fn summarise(mode: &str, batch: usize, mut per_frame_us: Vec<f64>) -> Latency {
    per_frame_us.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| per_frame_us[((per_frame_us.len() - 1) as f64 * q).round() as usize];
    Latency {
        mode: mode.into(),
        batch,
        mean_us: per_frame_us.iter().sum::<f64>() / per_frame_us.len() as f64,
        p50_us: at(0.5),
        p99_us: at(0.99),
        runs: per_frame_us.len(),
    }
}

/// Times `runs` runs of `f` after `runs / 10 + 1` warm-up runs; µs per frame.
fn time(runs: usize, frames_per_run: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<Vec<f64>> {
    for i in 0..runs / 10 + 1 {
        f(i)?;
    }
    let mut out = Vec::with_capacity(runs);
    for i in 0..runs {
        let start = Instant::now();
        f(i)?;
        out.push(start.elapsed().as_secs_f64() * 1e6 / frames_per_run as f64);
    }
    Ok(out)
}

/// Latency of M alone, the sequential guard, the parallel guard, and the
/// batched guard for each size in `batches`, over `frames` (cycled).
pub fn measure(bundle_dir: &std::path::Path, frames: &FrameSet, runs: usize, batches: &[usize]) -> Result<Vec<Latency>> {
    let bundle = GuardBundle::open(bundle_dir)?;
    let n = frames.len().max(1);
    let frame = |i: usize| frames.frame(i % n);
    let mut rows = Vec::new();

    let mut guard = Guard::new(&bundle)?;
    // M alone: the same preprocessing and the same tract plan, without B and M′.
    let m = bundle.manifest();
    let pre = crate::Preprocessor::new(&m.normalization, m.input.shape)?;
    let mut input = crate::guard::input_tensor(1, m.input.shape)?;
    let mut state = bundle.plan(Role::Model).spawn().map_err(|e| crate::Error::Inference { model: "model", reason: e.to_string() })?;
    let alone = time(runs, 1, |i| {
        pre.load(frame(i), PixelLayout::Chw, crate::guard::input_slice(&mut input))?;
        let out = state.run(tvec![TValue::from_const(input.clone())]).map_err(|e| crate::Error::Inference { model: "model", reason: e.to_string() })?;
        std::hint::black_box(crate::score::argmax(crate::guard::output_f32(&out[0]).map_err(|e| crate::Error::Invalid(e.to_string()))?));
        Ok(())
    })?;
    rows.push(summarise("model alone", 1, alone));
    rows.push(summarise("guard, sequential", 1, time(runs, 1, |i| guard.guard(frame(i), PixelLayout::Chw).map(drop))?));
    let mut parallel = ParallelGuard::new(&bundle)?;
    rows.push(summarise("guard, 3 threads", 1, time(runs, 1, |i| parallel.guard(frame(i), PixelLayout::Chw).map(drop))?));
    for &b in batches {
        let bundle = GuardBundle::open_with_batch(bundle_dir, b)?;
        let mut batch = BatchGuard::new(&bundle)?;
        let mut verdicts = vec![Verdict::default(); b];
        let mut chunk: Vec<&[u8]> = Vec::with_capacity(b);
        let per_frame = time(runs.div_ceil(b).max(3), b, |i| {
            chunk.clear();
            chunk.extend((0..b).map(|j| frame(i * b + j)));
            batch.guard_batch(&chunk, PixelLayout::Chw, &mut verdicts)
        })?;
        rows.push(summarise("guard, batched", b, per_frame));
    }
    Ok(rows)
}
