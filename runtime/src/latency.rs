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

/// One way of running a bundle: frames per call and the call.
struct Mode<'a> {
    name: &'static str,
    batch: usize,
    run: Box<dyn FnMut(usize) -> Result<()> + 'a>,
    per_frame_us: Vec<f64>,
}

/// Rounds the timed runs are split into.
const ROUNDS: usize = 10;

/// Times every mode `runs` times in [`ROUNDS`] rounds; each round gives each
/// mode a block of `runs / ROUNDS` timed runs after two untimed ones. Blocks
/// keep each mode's caches warm as in a deployment that runs only it, and
/// rounds spread a burst of load on a shared machine over all modes instead
/// of skewing one, which keeps their ratios honest.
fn time_interleaved(modes: &mut [Mode], runs: usize) -> Result<()> {
    let block = runs.div_ceil(ROUNDS);
    let mut next = vec![0usize; modes.len()];
    for _ in 0..ROUNDS {
        for (mode, next) in modes.iter_mut().zip(&mut next) {
            for _ in 0..2 {
                (mode.run)(*next)?;
                *next += 1;
            }
            for _ in 0..block {
                let start = Instant::now();
                (mode.run)(*next)?;
                *next += 1;
                mode.per_frame_us.push(start.elapsed().as_secs_f64() * 1e6 / mode.batch as f64);
            }
        }
    }
    Ok(())
}

/// Latency of M alone, the sequential guard, the parallel guard, and the
/// batched guard for each size in `batches`, over `frames` (cycled), all
/// measured in the same rounds.
pub fn measure(bundle_dir: &std::path::Path, frames: &FrameSet, runs: usize, batches: &[usize]) -> Result<Vec<Latency>> {
    let bundle = GuardBundle::open(bundle_dir)?;
    let n = frames.len().max(1);
    let frame = |i: usize| frames.frame(i % n);
    let fail = |e: TractError| crate::Error::Inference { model: "model", reason: e.to_string() };

    // M alone: the same preprocessing and the same tract plan, without B and M′.
    let m = bundle.manifest();
    let pre = crate::Preprocessor::new(&m.normalization, m.input.shape)?;
    let mut input = crate::guard::input_tensor(1, m.input.shape)?;
    let mut state = bundle.plan(Role::Model).spawn().map_err(fail)?;
    let alone = move |i: usize| -> Result<()> {
        pre.load(frame(i), PixelLayout::Chw, crate::guard::input_slice(&mut input))?;
        let out = state.run(tvec![TValue::from_const(input.clone())]).map_err(fail)?;
        std::hint::black_box(crate::score::argmax(crate::guard::output_f32(&out[0]).map_err(|e| crate::Error::Invalid(e.to_string()))?));
        Ok(())
    };
    let mut guard = Guard::new(&bundle)?;
    let mut parallel = ParallelGuard::new(&bundle)?;
    let mut modes = vec![
        Mode { name: "model alone", batch: 1, run: Box::new(alone), per_frame_us: vec![] },
        Mode { name: "guard, sequential", batch: 1, run: Box::new(move |i| guard.guard(frame(i), PixelLayout::Chw).map(drop)), per_frame_us: vec![] },
        Mode { name: "guard, 3 threads", batch: 1, run: Box::new(move |i| parallel.guard(frame(i), PixelLayout::Chw).map(drop)), per_frame_us: vec![] },
    ];
    for &b in batches {
        let bundle = GuardBundle::open_with_batch(bundle_dir, b)?;
        let mut batch = BatchGuard::new(&bundle)?;
        let mut verdicts = vec![Verdict::default(); b];
        let mut chunk: Vec<&[u8]> = Vec::with_capacity(b);
        let run = move |i: usize| {
            chunk.clear();
            chunk.extend((0..b).map(|j| frame(i * b + j)));
            batch.guard_batch(&chunk, PixelLayout::Chw, &mut verdicts)
        };
        modes.push(Mode { name: "guard, batched", batch: b, run: Box::new(run), per_frame_us: vec![] });
    }
    time_interleaved(&mut modes, runs)?;
    Ok(modes.into_iter().map(|m| summarise(m.name, m.batch, m.per_frame_us)).collect())
}
