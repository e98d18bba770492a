//! Per-frame latency of the ways to run a bundle, measured back to back in
//! one process so their ratios are comparable on a shared, noisy machine:
//! M alone, the guard sequential, the guard on two and three threads, and
//! batches.

use std::time::Instant;

use serde::Serialize;
use tract_core::internal::*;

use badexpert_runtime::{BatchGuard, FrameSet, Guard, GuardBundle, ParallelGuard, PixelLayout, Result, Role, Verdict};

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
    /// Mean per frame in each round.
    pub round_means_us: Vec<f64>,
}

/// How many times slower one mode is than another, round by round: both
/// ran in the same rounds, so a round's ratio is not skewed by load that
/// came and went between rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub mode: String,
    pub over: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Ratio {
    fn of(mode: &Latency, over: &Latency) -> Ratio {
        let mut ratios: Vec<f64> = mode.round_means_us.iter().zip(&over.round_means_us).map(|(a, b)| a / b).collect();
        ratios.sort_by(|a, b| a.total_cmp(b));
        let median = match ratios.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => ratios[n / 2],
            n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
        };
        Ratio {
            mode: mode.mode.clone(),
            over: over.mode.clone(),
            median,
            min: ratios.first().copied().unwrap_or(f64::NAN),
            max: ratios.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// Every mode timed, and the guard's cost in units of M alone.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub modes: Vec<Latency>,
    /// The sequential guard over M alone, with badexpert's kernels and with tract's ops only.
    pub ratios: Vec<Ratio>,
}

fn summarise(mode: &str, batch: usize, mut per_frame_us: Vec<f64>) -> Latency {
    let round_means_us = per_frame_us
        .chunks(per_frame_us.len().div_ceil(ROUNDS).max(1))
        .map(|r| r.iter().sum::<f64>() / r.len() as f64)
        .collect();
    per_frame_us.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| per_frame_us[((per_frame_us.len() - 1) as f64 * q).round() as usize];
    Latency {
        mode: mode.into(),
        batch,
        mean_us: per_frame_us.iter().sum::<f64>() / per_frame_us.len() as f64,
        p50_us: at(0.5),
        p99_us: at(0.99),
        runs: per_frame_us.len(),
        round_means_us,
    }
}

/// The suspect model M run alone, the guard's yardstick: the same
/// preprocessing and the same plan as in the guard, without B and M′.
pub struct ModelAlone {
    pre: badexpert_runtime::Preprocessor,
    input: std::sync::Arc<Tensor>,
    state: TypedSimpleState,
    classes: usize,
}

impl ModelAlone {
    /// For a bundle opened with batch size 1, like [`Guard`].
    pub fn new(bundle: &GuardBundle) -> Result<ModelAlone> {
        if bundle.batch() != 1 {
            return Err(badexpert_runtime::Error::Invalid(format!(
                "ModelAlone takes frames one at a time; the bundle was opened for batch {}",
                bundle.batch()
            )));
        }
        let m = bundle.manifest();
        Ok(ModelAlone {
            pre: badexpert_runtime::Preprocessor::new(&m.normalization, m.input.shape)?,
            input: badexpert_runtime::advanced::input_tensor(1, m.input.shape)?,
            state: badexpert_runtime::advanced::spawn(bundle, Role::Model)?,
            classes: m.classes.len(),
        })
    }

    /// M's class for one u8 frame (CHW), its logits checked as the guard does.
    pub fn run(&mut self, frame: &[u8]) -> Result<usize> {
        self.pre.load(frame, PixelLayout::Chw, badexpert_runtime::advanced::input_slice(&mut self.input))?;
        let input = TValue::from_const(self.input.clone());
        badexpert_runtime::advanced::with_logits(&mut self.state, input, self.classes, badexpert_runtime::score::argmax)
            .map_err(|reason| badexpert_runtime::Error::Inference { model: Role::Model.name(), reason })
    }
}

/// One way of running a bundle: frames per call and the call.
struct Mode<'a> {
    name: &'static str,
    batch: usize,
    run: Box<dyn FnMut(usize) -> Result<()> + 'a>,
    per_frame_us: Vec<f64>,
}

impl<'a> Mode<'a> {
    fn new<T>(name: &'static str, batch: usize, mut run: impl FnMut(usize) -> Result<T> + 'a) -> Self {
        Mode { name, batch, run: Box::new(move |i| run(i).map(drop)), per_frame_us: vec![] }
    }
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

/// Latency of M alone and the sequential guard (with badexpert's kernels and
/// with tract's ops only), the parallel guard on 2 and 3 threads, and the
/// batched guard for each size in `batches`, over `frames` (cycled), all
/// measured in the same rounds.
pub fn measure(
    bundle_dir: &std::path::Path,
    frames: &FrameSet,
    runs: usize,
    batches: &[usize],
) -> Result<LatencyReport> {
    let bundle = GuardBundle::open(bundle_dir)?;
    let n = frames.len().max(1);
    let frame = |i: usize| frames.frame(i % n);

    let mut model = ModelAlone::new(&bundle)?;
    let mut guard = Guard::new(&bundle)?;
    let tract_only = GuardBundle::open_with(
        bundle_dir,
        badexpert_runtime::LoadOptions { own_kernels: false, ..Default::default() },
    )?;
    let mut tract_model = ModelAlone::new(&tract_only)?;
    let mut tract_guard = Guard::new(&tract_only)?;
    let mut parallel2 = ParallelGuard::with_threads(&bundle, 2)?;
    let mut parallel3 = ParallelGuard::with_threads(&bundle, 3)?;
    let mut modes = vec![
        Mode::new("model alone", 1, move |i| model.run(frame(i))),
        Mode::new("guard, sequential", 1, move |i| guard.guard(frame(i), PixelLayout::Chw)),
        Mode::new("model alone, tract ops only", 1, move |i| tract_model.run(frame(i))),
        Mode::new("guard, sequential, tract ops only", 1, move |i| tract_guard.guard(frame(i), PixelLayout::Chw)),
        Mode::new("guard, 2 threads", 1, move |i| parallel2.guard(frame(i), PixelLayout::Chw)),
        Mode::new("guard, 3 threads", 1, move |i| parallel3.guard(frame(i), PixelLayout::Chw)),
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
        modes.push(Mode::new("guard, batched", b, run));
    }
    time_interleaved(&mut modes, runs)?;
    let modes: Vec<Latency> = modes.into_iter().map(|m| summarise(m.name, m.batch, m.per_frame_us)).collect();
    // The first four modes, in the order listed above.
    let [alone, guard, tract_alone, tract_guard] = [0, 1, 2, 3].map(|i| &modes[i]);
    let ratios = vec![Ratio::of(guard, alone), Ratio::of(tract_guard, tract_alone)];
    Ok(LatencyReport { modes, ratios })
}
