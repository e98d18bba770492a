//! `badexpert-guard`: the edge binary. Guards frames with a bundle and
//! evaluates a bundle on clean and triggered frames.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use badexpert_eval::baselines::Strip;
use badexpert_eval::evaluate::{detector_table, evaluate_detectors, DetectorKind};
use badexpert_eval::profile::Schedule;
use badexpert_frames::{camera_pixels, decode_camera_image, read_camera_image, read_idx_labels, to_shape, FrameSource};
use badexpert_runtime::camera::CameraPreprocessing;
use badexpert_runtime::manifest::MANIFEST_FILE;
use badexpert_runtime::{
    CameraFrame, CameraPipeline, FrameGuard, FrameSet, FrameShape, Guard, GuardBundle, LoadOptions, Manifest,
    ParallelGuard, PixelLayout, TrustedKey, Verdict,
};
use clap::{Args, Parser, Subcommand};

mod stream;

#[derive(Parser)]
#[command(
    name = "badexpert-guard",
    version,
    about = "Guard camera frames against backdoor triggers (BaDExpert) with a guard bundle"
)]
struct Cli {
    /// Public key file (from `badexpert-convert keygen`) to trust: only bundles it signed load.
    /// Without it the bundle's seal is still checked (any edit of the manifest is refused).
    #[arg(long, global = true)]
    trusted_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Guard frames; prints one JSON line per frame. Exits 1 if any frame could not be scored.
    Run {
        /// Guard bundle directory (badexpert-convert bundle --out).
        #[arg(long)]
        bundle: PathBuf,
        /// Image files, directories of images, IDX image files, CIFAR-10 .bin batches (any size:
        /// resized as the bundle says); - reads one PNG or JPEG image from stdin.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Run M, B and M′ concurrently: on 3 threads with ≥ 3 cores (a frame costs about one
        /// model), on 2 threads otherwise (about two models).
        #[arg(long)]
        parallel: bool,
    },
    /// Evaluate a bundle: CA and ASR with and without the guard, AUROC, realised FPR, latency.
    Eval(EvalArgs),
    /// Per-frame latency of M alone, the guard (sequential, 2 and 3 threads, batches) and both again
    /// with tract's ops only, measured in interleaved rounds on frames from a file (or zero
    /// frames); prints JSON.
    Bench {
        /// Guard bundle directory (badexpert-convert bundle --out).
        #[arg(long)]
        bundle: PathBuf,
        /// Frames to cycle through: a file or directory as `run` reads it (images or frame sets,
        /// resized as the bundle says); zero frames when absent.
        #[arg(long)]
        frames: Option<PathBuf>,
        /// Timed runs per mode.
        #[arg(long, default_value_t = 300)]
        runs: usize,
        /// Batch sizes for the batched guard, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "8")]
        batches: Vec<usize>,
    },
    /// Where each plan spends its time: every node timed, grouped by operator; prints JSON.
    Profile {
        /// Guard bundle directory (badexpert-convert bundle --out).
        #[arg(long)]
        bundle: PathBuf,
        /// Timed runs per plan.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Frames per run.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Profile tract's plans as tract optimizes them, without badexpert's kernels.
        #[arg(long)]
        tract_only: bool,
        /// Run the three plans in turn, as the sequential guard does, instead of each alone:
        /// the difference shows what the models cost each other in cache.
        #[arg(long)]
        in_turn: bool,
        /// How many of the costliest single nodes to list per plan.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
    },
    /// Frame-by-frame agreement of a bundle with a reference bundle of the same model (e.g. f16
    /// against f32): shares of equal verdicts and classes, score differences; prints JSON.
    Agree {
        /// Guard bundle directory (badexpert-convert bundle --out).
        #[arg(long)]
        bundle: PathBuf,
        /// The bundle to compare with (e.g. the f32 bundle of the same model).
        #[arg(long)]
        reference: PathBuf,
        /// Frame sets to compare on (any set `run` reads).
        #[arg(required = true)]
        frames: Vec<PathBuf>,
    },
    /// Guard raw frames from stdin, a file or a FIFO (ffmpeg -f rawvideo, gst-launch-1.0 … ! fdsink):
    /// one JSON line per input frame on stdout, stats on stderr (docs/camera.md).
    Stream(stream::StreamArgs),
    /// Verify a bundle and print its manifest.
    Info {
        /// Guard bundle directory (badexpert-convert bundle --out).
        #[arg(long)]
        bundle: PathBuf,
    },
}

#[derive(Args)]
struct EvalArgs {
    /// Guard bundle directory (badexpert-convert bundle --out).
    #[arg(long)]
    bundle: PathBuf,
    /// Clean labelled frames (IDX with its labels file beside it, CIFAR-10 batch, image folder).
    #[arg(long)]
    clean: PathBuf,
    /// Labels for --clean when they are not beside it.
    #[arg(long)]
    clean_labels: Option<PathBuf>,
    /// Triggered frames, labelled with the true class of the clean frame they came from.
    #[arg(long)]
    triggered: PathBuf,
    /// Labels for --triggered when they are not beside it.
    #[arg(long)]
    triggered_labels: Option<PathBuf>,
    /// The attack's target class.
    #[arg(long)]
    target: u32,
    /// Write the JSON report to this file instead of stdout.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Detectors to compare, comma-separated: badexpert, strip, scale-up. STRIP and SCALE-UP
    /// calibrate their thresholds on the clean frames stored in the bundle (convert with --store-clean).
    #[arg(long, value_delimiter = ',', default_value = "badexpert", value_parser = ["badexpert", "strip", "scale-up"])]
    detectors: Vec<String>,
    /// STRIP superimpositions per frame.
    #[arg(long, default_value_t = Strip::DEFAULT_N)]
    strip_n: usize,
    /// Use at most this many clean and this many triggered frames (the first ones).
    #[arg(long)]
    max_frames: Option<usize>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(code) => code,
        // The reader went away (`run … | head -1`): nothing is wrong with the bundle or the frames.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn run(cli: Cli) -> Result<ExitCode> {
    let trusted_key = match &cli.trusted_key {
        Some(path) => Some(TrustedKey::read(path).context("--trusted-key")?),
        None => None,
    };
    let load = LoadOptions { trusted_key, ..LoadOptions::default() };
    match cli.command {
        Command::Run { bundle, inputs, parallel } => guard_inputs(&bundle, load, &inputs, parallel),
        Command::Eval(args) => evaluate(&args, load).map(|()| ExitCode::SUCCESS),
        Command::Bench { bundle, frames, runs, batches } => {
            if trusted_key.is_some() {
                open(&bundle, load)?;
            }
            // The manifest alone gives the shape; `measure` opens (and verifies) the bundle.
            let manifest = Manifest::read(&bundle.join(MANIFEST_FILE))?;
            let shape = manifest.input.shape;
            let frames = match frames {
                Some(p) => frames_at_shape(&p, shape, &manifest.camera)?,
                None => FrameSet::new(shape, vec![0; shape.len()], None)?,
            };
            let rows = badexpert_eval::latency::measure(&bundle, &frames, runs.max(1), &batches)?;
            println!("{}", serde_json::to_string_pretty(&rows)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Profile { bundle, runs, batch, tract_only, in_turn, nodes } => {
            let b = GuardBundle::open_with(&bundle, LoadOptions { batch, own_kernels: !tract_only, ..load })?;
            let schedule = if in_turn { Schedule::InTurn } else { Schedule::Alone };
            let profiles = badexpert_eval::profile::profile(&b, runs, schedule, nodes)?;
            println!("{}", serde_json::to_string_pretty(&profiles)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Agree { bundle, reference, frames } => {
            let (candidate, reference) =
                (GuardBundle::open_with(&bundle, load)?, GuardBundle::open_with(&reference, load)?);
            let mut rows = Vec::new();
            for path in &frames {
                let set = FrameSource::detect(path).load()?;
                let agreement = badexpert_eval::agreement::agreement(&candidate, &reference, &set)
                    .with_context(|| format!("comparing on {}", path.display()))?;
                rows.push(serde_json::json!({ "frames": path, "agreement": agreement }));
            }
            println!("{}", serde_json::to_string_pretty(&rows)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Stream(args) => stream::stream(args, load),
        Command::Info { bundle } => {
            let b = GuardBundle::open_with(&bundle, load)?;
            println!("{}", serde_json::to_string_pretty(b.manifest())?);
            let seal = b.seal();
            let signed = match (&seal.signer, seal.trusted) {
                (Some(key), true) => format!("signed by the trusted key {key}"),
                (Some(key), false) => format!("signed by key {key} (no --trusted-key given: not checked against one)"),
                (None, _) => "unsigned".to_owned(),
            };
            eprintln!(
                "bundle {}: seal verified (digest {}), {signed}; all plan hashes verified, plans load",
                bundle.display(),
                &seal.digest[..16]
            );
            eprintln!("{}", b.manifest().decision.summary(&b.manifest().classes));
            match &b.manifest().scan {
                Some(scan) => eprintln!("{}", scan.summary(&b.manifest().classes)),
                None => eprintln!("scan: none recorded (the bundle was written without a backdoor scan)"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open(path: &Path, load: LoadOptions) -> Result<(GuardBundle, Guard)> {
    let bundle =
        GuardBundle::open_with(path, load).with_context(|| format!("cannot open bundle {}", path.display()))?;
    let guard = Guard::new(&bundle)?;
    Ok((bundle, guard))
}

/// One unit of input for `run`: a single image, one read from stdin, or a whole frame set.
enum Input {
    Image(PathBuf),
    Stdin,
    Set(PathBuf),
}

fn expand(path: &Path) -> Result<Vec<Input>> {
    if path.as_os_str() == "-" {
        return Ok(vec![Input::Stdin]);
    }
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
    };
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        files.sort();
        let mut out = Vec::new();
        for f in files {
            if f.is_dir() {
                out.extend(expand(&f)?);
            } else if is_image(&f) {
                out.push(Input::Image(f));
            }
        }
        Ok(out)
    } else if is_image(path) {
        Ok(vec![Input::Image(path.to_owned())])
    } else if path.exists() {
        Ok(vec![Input::Set(path.to_owned())])
    } else {
        bail!("{}: no such file or directory", path.display())
    }
}

fn guard_inputs(bundle: &Path, load: LoadOptions, inputs: &[PathBuf], parallel: bool) -> Result<ExitCode> {
    let (bundle, guard) = open(bundle, load)?;
    let mut guard: Box<dyn FrameGuard> =
        if parallel { Box::new(ParallelGuard::new(&bundle)?) } else { Box::new(guard) };
    let classes = &bundle.manifest().classes;
    let shape = bundle.manifest().input.shape;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failures = 0usize;
    let mut line = |source: &Path, index: Option<usize>, result: Result<Verdict>| -> Result<()> {
        let mut obj = serde_json::json!({ "source": source.display().to_string() });
        if let Some(i) = index {
            obj["index"] = i.into();
        }
        match result {
            Ok(v) => {
                obj["class"] = v.class.into();
                obj["class_name"] = classes[v.class].clone().into();
                obj["score"] = v.score.into();
                obj["confidence_expert"] = v.confidences.expert.into();
                obj["confidence_auxiliary"] = v.confidences.auxiliary.into();
                obj["accepted"] = v.accepted.into();
            }
            Err(e) => {
                // Fail closed: a frame that cannot be scored is rejected, with the reason.
                failures += 1;
                obj["accepted"] = false.into();
                obj["error"] = format!("{e:#}").into();
            }
        }
        writeln!(out, "{obj}")?;
        Ok(())
    };
    for input in inputs {
        for unit in expand(input)? {
            match unit {
                Input::Image(p) => {
                    let result =
                        read_camera_image(&p).and_then(|(g, px)| guard.guard_camera(&CameraFrame::new(g, &px)?));
                    line(&p, None, result.map_err(Into::into))?;
                }
                Input::Stdin => {
                    let mut bytes = Vec::new();
                    std::io::stdin().read_to_end(&mut bytes).context("cannot read stdin")?;
                    let stdin = Path::new("-");
                    let result = decode_camera_image(&bytes, stdin)
                        .and_then(|(g, px)| guard.guard_camera(&CameraFrame::new(g, &px)?));
                    line(stdin, None, result.map_err(Into::into))?;
                }
                Input::Set(p) => match FrameSource::detect(&p).load() {
                    Ok(set) if set.shape() == shape => {
                        for i in 0..set.len() {
                            line(&p, Some(i), guard.guard(set.frame(i), PixelLayout::Chw).map_err(Into::into))?;
                        }
                    }
                    // Frames of another size are pictures like any camera frame: resized as the bundle says.
                    Ok(set) => {
                        for i in 0..set.len() {
                            let result = camera_pixels(&set, i)
                                .and_then(|(g, px)| guard.guard_camera(&CameraFrame::new(g, &px)?));
                            line(&p, Some(i), result.map_err(Into::into))?;
                        }
                    }
                    Err(e) => line(&p, None, Err(e.into()))?,
                },
            }
        }
    }
    out.flush()?;
    if failures > 0 {
        eprintln!("{failures} frame(s) could not be scored and were rejected (see \"error\" fields)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Every frame `run` would read from `path` (image files, folders of them,
/// frame sets), at the bundle's input `shape` (resized as `camera` says).
fn frames_at_shape(path: &Path, shape: FrameShape, camera: &CameraPreprocessing) -> Result<FrameSet> {
    let mut all = FrameSet::new(shape, Vec::new(), None)?;
    for unit in expand(path)? {
        let set = match unit {
            Input::Image(p) => {
                let (geometry, pixels) = read_camera_image(&p)?;
                let mut frame = vec![0u8; shape.len()];
                CameraPipeline::new(camera, shape, geometry)?
                    .convert(&CameraFrame::new(geometry, &pixels)?, &mut frame)?;
                FrameSet::new(shape, frame, None)?
            }
            Input::Set(p) => {
                let set = to_shape(FrameSource::detect(&p).load()?, shape, camera)?;
                FrameSet::new(shape, set.pixels().to_vec(), None)?
            }
            Input::Stdin => bail!("bench reads frames from files, not stdin"),
        };
        all.extend(&set)?;
    }
    if all.is_empty() {
        bail!("{}: no frames (image files, folders of them, IDX or CIFAR-10 files)", path.display());
    }
    Ok(all)
}

fn load_labelled(path: &Path, labels: Option<&PathBuf>, what: &str) -> Result<FrameSet> {
    let set = FrameSource::detect(path).load().with_context(|| format!("cannot read {what} frames"))?;
    let set = match labels {
        Some(l) => set.with_labels(read_idx_labels(l)?).with_context(|| format!("{what} labels {}", l.display()))?,
        None => set,
    };
    set.require_labels(what)?;
    Ok(set)
}

fn evaluate(args: &EvalArgs, load: LoadOptions) -> Result<()> {
    let (bundle, mut guard) = open(&args.bundle, load)?;
    let m = bundle.manifest();
    let cap = |set: FrameSet| match args.max_frames {
        Some(n) => set.head(n),
        None => set,
    };
    let clean = cap(load_labelled(&args.clean, args.clean_labels.as_ref(), "clean")?);
    let triggered = cap(load_labelled(&args.triggered, args.triggered_labels.as_ref(), "triggered")?);
    for (set, what) in [(&clean, "clean"), (&triggered, "triggered")] {
        if set.shape() != m.input.shape {
            bail!("{what} frames are {}, the bundle expects {}", set.shape(), m.input.shape);
        }
        set.check_labels(m.classes.len()).with_context(|| format!("{what} frames"))?;
    }
    if args.target as usize >= m.classes.len() {
        bail!("--target {} is outside 0..{} (the model has {} classes)", args.target, m.classes.len(), m.classes.len());
    }
    let detectors: Vec<DetectorKind> =
        args.detectors.iter().map(|d| d.parse()).collect::<Result<_, String>>().map_err(anyhow::Error::msg)?;
    let rows = evaluate_detectors(&bundle, &mut guard, &clean, &triggered, args.target, &detectors, args.strip_n)?;
    let eval = rows[0].evaluation.clone();
    let guard_cost = rows[0].cost.clone();
    let mut by_name = serde_json::Map::new();
    for r in &rows {
        let mut v = serde_json::to_value(&r.evaluation)?;
        v["cost_per_frame"] = serde_json::to_value(&r.cost)?;
        by_name.insert(r.detector.to_string(), v);
    }
    let mut report = serde_json::to_value(&eval)?;
    report["latency_us"] = serde_json::to_value(&guard_cost)?;
    report["detectors"] = by_name.into();
    report["bundle"] = args.bundle.display().to_string().into();
    let json = serde_json::to_string_pretty(&report)?;
    // The report goes to --json when given, else to stdout; the table to stderr.
    match &args.json {
        Some(p) => std::fs::write(p, json + "\n").with_context(|| format!("cannot write {}", p.display()))?,
        None => println!("{json}"),
    }
    eprintln!("{}", eval.table());
    eprintln!(
        "guard latency per frame   mean {:.0} µs, p50 {:.0} µs, p99 {:.0} µs (M + B + M′, 1 thread)",
        guard_cost.mean_us, guard_cost.p50_us, guard_cost.p99_us
    );
    if rows.len() > 1 {
        eprintln!("\n{}", detector_table(&rows));
    }
    Ok(())
}
