//! `badexpert-convert`: the host binary. Builds guard bundles from suspect
//! ONNX models, scans them for a backdoor, and keeps signing keys and seals.
//! (Demo models, triggers, reports and ablations are the lab's: `badexpert-lab`.)

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use badexpert_converter::augment::Augmentation;
use badexpert_converter::auxiliary::AuxiliaryRate;
use badexpert_converter::device::DeviceChoice;
use badexpert_converter::expert::{ExpertRate, Mislabel};
use badexpert_converter::inversion::InversionOptions;
use badexpert_converter::onnx::{normalization_metadata, read_model, NORMALIZATION_KEY};
use badexpert_converter::scan::Objective;
use badexpert_converter::signing::seal_bundle;
use badexpert_converter::train::Progress;
use badexpert_converter::{convert, scan_model, ConvertOptions, ScanOptions, SecretKey};
use badexpert_frames::{read_idx_labels, FrameSource};
use badexpert_runtime::camera::{CameraPreprocessing, ChannelOrder, ResizeMode, YuvMatrix};
use badexpert_runtime::manifest::Precision;
use badexpert_runtime::{FrameSet, Normalization, ScoreMode};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(name = "badexpert-convert", version, about = "Build BaDExpert guard bundles from suspect ONNX classifiers")]
struct Cli {
    /// libtorch intra-op threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<i32>,
    /// Where to fine-tune: auto (CUDA when available, else the CPU, said in the log), cpu, or
    /// cuda (refused with the reason when CUDA is not there).
    #[arg(long, global = true, default_value = "auto")]
    device: DeviceChoice,
    /// Same as --device cpu.
    #[arg(long, global = true, hide = true)]
    cpu: bool,
    /// No progress bars and no log lines but errors.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fine-tune the backdoor expert and auxiliary model, calibrate, write a guard bundle
    /// (with a backdoor scan and its verdict when --scan-runs is given).
    Bundle(Box<BundleArgs>),
    /// Is the model backdoored, and toward which label? Trigger inversion per label and clean
    /// unlearning over several runs; a verdict line on stderr (exit 0 whatever the verdict),
    /// the details with --json.
    Scan(Box<ScanCommand>),
    /// Make an Ed25519 key pair for signing bundles: KEY (secret, mode 600) and KEY.pub
    /// (for the devices' --trusted-key).
    Keygen {
        /// Where to write the secret key; the public key goes to the same path + ".pub".
        #[arg(long)]
        out: PathBuf,
    },
    /// Seal a bundle again after checking its files against the manifest, and sign it
    /// with --sign-key: how a bundle written elsewhere, or before bundles were sealed, is
    /// vouched for. Whoever runs it vouches for the manifest's values.
    Seal {
        /// The bundle directory.
        #[arg(long)]
        bundle: PathBuf,
        /// Secret key (from keygen) to sign the seal with; unsigned without it.
        #[arg(long)]
        sign_key: Option<PathBuf>,
    },
}

/// The suspect model and its clean reserve, as `bundle` and `scan` read them.
#[derive(Args)]
struct SuspectArgs {
    /// The suspect model (ONNX, input [N, C, H, W], output [N, K] logits).
    #[arg(long)]
    model: PathBuf,
    /// Clean labelled reserve: IDX images (labels beside), CIFAR-10 .bin, or an image folder.
    #[arg(long)]
    reserve: PathBuf,
    /// IDX labels for --reserve when they are not beside it.
    #[arg(long)]
    reserve_labels: Option<PathBuf>,
    /// Input normalisation: x = (pixel · scale − mean) / std. Read from the model's metadata when omitted.
    #[arg(long)]
    scale: Option<f32>,
    /// Per-channel means, comma-separated (one value applies to all channels).
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    /// Per-channel standard deviations, comma-separated (one value applies to all channels).
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Fraction of the reserve held out (never fine-tuned on): τ is calibrated on it and the
    /// scan stops on and reads its verdict from it.
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Seed of the reserve split, the frame orders and the augmentations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of bundle's reserve split alone (default: --seed): bundles made with one
    /// --split-seed and several --seed values calibrate on the same held-out frames.
    #[arg(long)]
    split_seed: Option<u64>,
    /// Fine-tuning augmentation: crop-flip (random crop with padding + horizontal flip),
    /// crop (no flip: traffic signs, text), or none.
    #[arg(long, default_value = "crop-flip", value_parser = ["crop-flip", "crop", "none"])]
    augmentation: String,
    /// Fine-tune a folded export (convolutions without BatchNorm) as it is, without restoring a
    /// trainable BatchNorm after each convolution.
    #[arg(long)]
    no_restore_norm: bool,
}

/// The backdoor scan's settings (clean unlearning, docs/design.md §8).
#[derive(Args)]
struct ScanArgs {
    /// Clean-unlearning runs, each with its own frame order and augmentations (`scan`: 4 when
    /// not given; `bundle` scans only when given: the scan adds minutes to a conversion). With
    /// the trigger inversion they run only when its outlier is too weak to name the target.
    #[arg(long)]
    scan_runs: Option<usize>,
    /// Runs trained at once, sharing --threads.
    #[arg(long, default_value_t = ScanOptions::default().jobs)]
    scan_jobs: usize,
    /// Adam's rate for the gradient ascent on the clean task.
    #[arg(long, default_value_t = ScanOptions::default().learning_rate)]
    scan_lr: f64,
    /// Step budget of a run, in passes over the fine-tuning frames.
    #[arg(long, default_value_t = ScanOptions::default().max_epochs)]
    scan_epochs: usize,
    /// A run stops where held-out clean accuracy first falls below this fraction.
    #[arg(long, default_value_t = ScanOptions::default().floor)]
    scan_floor: f64,
    /// Read each run at this multiple of the step where it collapsed (≥ 1): the ascent goes on
    /// past the collapse.
    #[arg(long, default_value_t = ScanOptions::default().read_after)]
    scan_read_after: f64,
    /// Also keep each run's held-out predictions at these multiples of its collapse step
    /// (comma-separated; for studying the rule offline, lab/zoo/scan_tables.py).
    #[arg(long, value_delimiter = ',')]
    scan_snapshots: Vec<f64>,
    /// Unlearn the features only, leaving the classifier head (the last dense layer) as it is.
    #[arg(long, default_value_t = ScanOptions::default().freeze_head, action = clap::ArgAction::Set)]
    scan_freeze_head: bool,
    /// Unlearn with BatchNorm's batch statistics (train mode, as EBYD); false keeps the running ones.
    #[arg(long, default_value_t = ScanOptions::default().train_mode, action = clap::ArgAction::Set)]
    scan_train_mode: bool,
    /// What the ascent pushes up: cross-entropy (EBYD) or true-logit (the mean logit less the
    /// true class's: no wrong class gains from already being likely).
    #[arg(long, default_value = "true-logit")]
    scan_objective: Objective,
    /// Verdict threshold on the runs' score (the consensus label's share of the mean
    /// histogram) when no trigger inversion runs (--scan-inversion-steps 0).
    #[arg(long, default_value_t = ScanOptions::default().threshold)]
    scan_threshold: f64,
    /// Also invert a trigger toward every label of the model as given (Neural Cleanse), with
    /// this many optimisation steps per label; 0 skips it.
    #[arg(long, default_value_t = ScanOptions::default().inversion.steps)]
    scan_inversion_steps: usize,
    /// Verdict threshold on the inverted triggers' anomaly index (chosen on the zoo's
    /// development part: docs/zoo.md); used when the inversion runs.
    #[arg(long, default_value_t = ScanOptions::default().inversion.threshold)]
    scan_inversion_threshold: f64,
}

impl ScanArgs {
    fn options(&self, suspect: &SuspectArgs, device: tch::Device, augmentation: Augmentation) -> ScanOptions {
        ScanOptions {
            runs: self.scan_runs.unwrap_or(ScanOptions::default().runs),
            jobs: self.scan_jobs,
            learning_rate: self.scan_lr,
            max_epochs: self.scan_epochs,
            floor: self.scan_floor,
            read_after: self.scan_read_after,
            snapshots: self.scan_snapshots.clone(),
            freeze_head: self.scan_freeze_head,
            train_mode: self.scan_train_mode,
            objective: self.scan_objective,
            threshold: self.scan_threshold,
            inversion: InversionOptions {
                steps: self.scan_inversion_steps,
                threshold: self.scan_inversion_threshold,
                ..InversionOptions::default()
            },
            augmentation: Some(augmentation),
            seed: suspect.seed,
            restore_normalization: !suspect.no_restore_norm,
            device,
            ..ScanOptions::default()
        }
    }
}

impl SuspectArgs {
    fn augmentation(&self, reserve: &FrameSet) -> Augmentation {
        match self.augmentation.as_str() {
            "none" => Augmentation::NONE,
            flip => Augmentation::standard(reserve.shape().height, flip == "crop-flip"),
        }
    }
}

#[derive(Args)]
struct ScanCommand {
    #[command(flatten)]
    suspect: SuspectArgs,
    #[command(flatten)]
    scan: ScanArgs,
    /// Also write the verdict, the histograms and every run as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct BundleArgs {
    #[command(flatten)]
    suspect: SuspectArgs,
    #[command(flatten)]
    scan: ScanArgs,
    /// Output bundle directory.
    #[arg(long)]
    out: PathBuf,
    /// Class names, comma-separated, in logit order.
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<String>>,
    /// Fraction of the reserve held out to choose the automatic rates on, apart from the
    /// calibration part (0: judge them on the calibration part; docs/design.md §3.4).
    #[arg(long, default_value_t = 0.0)]
    selection: f64,
    /// Target clean false-positive rate of the threshold.
    #[arg(long, default_value_t = 0.01)]
    fpr: f64,
    /// γ of the ensemble score: how confident M′ must be in M's class before its agreement
    /// stops counting as evidence of a clean frame (docs/design.md §3.3; the reference code's
    /// 0.5 lets more triggered frames through on the zoo's development part).
    #[arg(long, default_value_t = 0.8)]
    gamma: f32,
    /// ensemble (default) or ratio.
    #[arg(long, default_value = "ensemble")]
    score: ScoreMode,
    /// Backdoor expert learning rate (Adam; the paper's 1e-4), or "auto": 1e-4 unless the held-out
    /// clean frames show it fails — B still within 5 pt of M's clean accuracy (a larger rate is
    /// tried), or B relearning the wrong labels or diverging (a smaller one). The manifest records
    /// every rate tried.
    #[arg(long, default_value = "auto")]
    expert_lr: ExpertRate,
    /// Passes of the backdoor expert's fine-tune over the fine-tuning frames (the paper's 1).
    #[arg(long, default_value_t = 1)]
    expert_epochs: usize,
    /// next-class or random-wrong.
    #[arg(long, default_value = "next-class", value_parser = parse_mislabel)]
    mislabel: Mislabel,
    /// Auxiliary model initial learning rate (SGD), or "auto": the largest rate in 0.001…0.3 at
    /// which M′ recovers — ends within 20 pt of M's held-out clean accuracy without diverging —
    /// found by bisection from the paper's 0.1; or "auto-0.03": 0.03 where M′ recovers, else the
    /// largest smaller rate that does (for --aux-schedule cosine --aux-epochs 20).
    #[arg(long, default_value = "auto")]
    aux_lr: AuxiliaryRate,
    /// After an automatic rate search, train B and M′ once more at the chosen rates on a new
    /// order of the fine-tuning frames and keep those, so the threshold is not calibrated on the
    /// frames the models were chosen on (docs/design.md §3.4). Unused with --selection.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    refit: bool,
    /// Use this ONNX model as the auxiliary model M′ instead of fine-tuning one: a repaired copy
    /// of the model you already have (any model-repair defence's output), with the model's input,
    /// normalisation and classes. The --aux-* options are then unused.
    #[arg(long)]
    auxiliary: Option<PathBuf>,
    /// Passes of the auxiliary model's fine-tune over the fine-tuning frames (the paper's 10).
    #[arg(long, default_value_t = 10)]
    aux_epochs: usize,
    /// The auxiliary model's rate schedule: step:E1,E2,… (×0.1 after each listed epoch; the
    /// paper's step:2,4,6,8) or cosine (half a cosine toward 0 over --aux-epochs). On
    /// BatchNorm-kept exports `--aux-schedule cosine --aux-epochs 20 --aux-lr auto-0.03` detects
    /// more; on folded ones less (docs/zoo.md).
    #[arg(long, default_value = "step:2,4,6,8")]
    aux_schedule: badexpert_converter::train::Schedule,
    /// Fine-tune M′ this many times at the chosen rate (other frame orders and augmentations) and
    /// keep the weight average: one model per frame at run time, N fine-tunes at conversion. On
    /// the zoo it helped a MobileNetV2 and lowered M′'s accuracy where the fine-tunes do not share
    /// a basin (small CNN, ViT; docs/zoo.md), hence off by default.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    aux_soup: u16,
    /// Replace an existing bundle at --out.
    #[arg(long)]
    overwrite: bool,
    /// Refuse a reserve with a class under this fraction of an even share of its frames
    /// (M′ forgets such a class, and the guard rejects its clean frames), or of fewer than two
    /// classes; 0 accepts any reserve.
    #[arg(long, default_value_t = badexpert_converter::convert::MIN_CLASS_SHARE)]
    min_class_share: f64,
    /// Refuse a model whose held-out accuracy on the reserve is less than this fraction of the
    /// way from chance to perfect (labels that do not match the model); 0 skips the check.
    #[arg(long, default_value_t = badexpert_converter::convert::MIN_ACCURACY_ABOVE_CHANCE)]
    min_accuracy_above_chance: f64,
    /// The backdoor's suspected target label (from an earlier `scan`, say): frames the model
    /// assigns to it get a threshold of their own. Without it, the scan (--scan-runs) names it
    /// when it finds a backdoor.
    #[arg(long)]
    target_label: Option<usize>,
    /// Share of the false-positive budget (--fpr) spent on the target label's frames, where an
    /// all-to-one backdoor's frames land; the other classes share the rest. 0 keeps one
    /// threshold for every class.
    #[arg(long, default_value_t = badexpert_converter::convert::TARGET_FPR_SHARE)]
    target_fpr_share: f64,
    /// Sign the bundle with this secret key (from keygen); devices given its public key
    /// (--trusted-key) load only bundles it signed.
    #[arg(long)]
    sign_key: Option<PathBuf>,
    /// Store this many held-out clean frames in the bundle, for run-time detectors such as
    /// STRIP and for calibrating baselines on the device.
    #[arg(long, default_value_t = 0)]
    store_clean: usize,
    /// Plan arithmetic: f32; f16 (half the weight bytes; fast on ARMv8.2+ such as a Pi 5 or
    /// Jetson Orin, slow on x86); or int8 (convolutions and dense layers in badexpert's int8
    /// kernels, activation scales calibrated on the clean reserve). The threshold is calibrated
    /// with the plans as they will run.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// How camera frames of another size reach the model's (recorded in the bundle;
    /// docs/camera.md): shorter-side (torchvision Resize(S) + CenterCrop), exact
    /// (Resize((H, W))), or none (frames must have the model's size).
    #[arg(long, default_value = "shorter-side")]
    resize: ResizeMode,
    /// Channel order the model was trained on (colour models): rgb or bgr.
    #[arg(long, default_value = "rgb")]
    channel_order: ChannelOrder,
    /// YUV matrix of YUYV/NV12 camera frames: bt601-limited, bt601-full, bt709-limited, bt709-full.
    #[arg(long, default_value = "bt601-limited")]
    yuv: YuvMatrix,
}

fn parse_mislabel(s: &str) -> Result<Mislabel, String> {
    match s {
        "next-class" => Ok(Mislabel::NextClass),
        "random-wrong" => Ok(Mislabel::RandomWrong),
        _ => Err(format!("unknown mislabel strategy {s:?} (next-class or random-wrong)")),
    }
}

/// indicatif bars behind the library's progress hook.
struct Bars {
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, what: &str, steps: u64) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(steps).with_message(what.to_string());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>24} [{bar:30}] {pos}/{len} batches, loss {prefix} ({elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        *self.bar.lock().expect("not poisoned") = Some(bar);
    }
    fn step(&self, loss: f64) {
        if let Some(b) = self.bar.lock().expect("not poisoned").as_ref() {
            b.set_prefix(format!("{loss:.3}"));
            b.inc(1);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("not poisoned").take() {
            b.finish();
        }
    }
}

fn main() -> ExitCode {
    badexpert_converter::process::prepare_for_training();
    let cli = Cli::parse();
    // --quiet: errors only (no progress bars, no CPU-fallback notice); RUST_LOG still wins.
    let level = if cli.quiet { "error" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    badexpert_converter::process::set_threads(cli.threads);
    // Resolved (and logged) only by the commands that train.
    let choice = if cli.cpu { DeviceChoice::Cpu } else { cli.device };
    let device = || choice.resolve();
    let progress = Bars { quiet: cli.quiet, bar: Mutex::new(None) };
    match cli.command {
        Command::Bundle(args) => bundle(*args, device()?, &progress),
        Command::Scan(args) => scan(*args, device()?),
        Command::Keygen { out } => {
            let public = SecretKey::generate().write_new(&out)?;
            eprintln!("wrote the secret key to {} and the public key to {}", out.display(), public.display());
            Ok(())
        }
        Command::Seal { bundle, sign_key } => {
            let key = sign_key.as_deref().map(SecretKey::read).transpose()?;
            let seal = seal_bundle(&bundle, key.as_ref())?;
            match &key {
                Some(k) => eprintln!(
                    "sealed {} (digest {}), signed by key {}",
                    bundle.display(),
                    &seal.digest[..16],
                    k.public().fingerprint()
                ),
                None => eprintln!("sealed {} (digest {}), unsigned", bundle.display(), &seal.digest[..16]),
            }
            Ok(())
        }
    }
}

fn load_reserve(path: &Path, labels: Option<&PathBuf>) -> Result<FrameSet> {
    let set = FrameSource::detect(path)
        .load()
        .with_context(|| format!("cannot read the clean reserve {}", path.display()))?;
    Ok(match labels {
        Some(l) => set.with_labels(read_idx_labels(l)?).with_context(|| format!("reserve labels {}", l.display()))?,
        None => set,
    })
}

fn normalization(args: &SuspectArgs) -> Result<Normalization> {
    match (&args.scale, &args.mean, &args.std) {
        (None, None, None) => match normalization_metadata(&read_model(&args.model)?)? {
            Some(n) => {
                log::info!("input normalisation from the model's metadata: {n:?}");
                Ok(n)
            }
            None => bail!(
                "the model records no input normalisation (metadata {NORMALIZATION_KEY:?}); give --scale, --mean and --std \
                 as used in training, e.g. --scale 0.00392156862745098 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225"
            ),
        },
        (scale, mean, std) => Ok(Normalization {
            scale: scale.unwrap_or(1.0 / 255.0),
            mean: mean.clone().unwrap_or_else(|| vec![0.0]),
            std: std.clone().unwrap_or_else(|| vec![1.0]),
        }),
    }
}

fn bundle(args: BundleArgs, device: tch::Device, progress: &Bars) -> Result<()> {
    let reserve = load_reserve(&args.suspect.reserve, args.suspect.reserve_labels.as_ref())?;
    let mut opts = ConvertOptions::new(normalization(&args.suspect)?);
    // Read the key before hours of fine-tuning, not after.
    opts.sign_key = args.sign_key.as_deref().map(SecretKey::read).transpose()?;
    let augmentation = args.suspect.augmentation(&reserve);
    opts.class_names = args.classes.clone();
    opts.holdout_fraction = args.suspect.holdout;
    opts.selection_fraction = args.selection;
    opts.target_fpr = args.fpr;
    opts.gamma = args.gamma;
    opts.score = args.score;
    opts.seed = args.suspect.seed;
    opts.split_seed = args.suspect.split_seed;
    opts.min_class_share = args.min_class_share;
    opts.min_accuracy_above_chance = args.min_accuracy_above_chance;
    opts.auxiliary_model = args.auxiliary.clone();
    opts.target_label = args.target_label;
    opts.target_fpr_share = args.target_fpr_share;
    opts.expert.rate = args.expert_lr;
    opts.expert.epochs = args.expert_epochs;
    opts.expert.mislabel = args.mislabel;
    opts.auxiliary.rate = args.aux_lr;
    opts.auxiliary.epochs = args.aux_epochs;
    opts.auxiliary.schedule = args.aux_schedule.clone();
    opts.auxiliary.soup = usize::from(args.aux_soup);
    opts.device = device;
    opts.overwrite = args.overwrite;
    opts.store_clean = args.store_clean;
    opts.precision = args.precision;
    opts.camera = CameraPreprocessing { resize: args.resize, channel_order: args.channel_order, yuv: args.yuv };
    opts.restore_normalization = !args.suspect.no_restore_norm;
    opts.refit = args.refit;
    opts.augmentation = Some(augmentation);
    opts.scan = args.scan.scan_runs.filter(|&n| n > 0).map(|_| args.scan.options(&args.suspect, device, augmentation));
    let c = convert(&args.suspect.model, &reserve, &args.out, &opts, progress)?;
    if let Some(record) = &c.scan {
        eprintln!("{}", record.summary(&c.manifest.classes));
    }
    let d = &c.manifest.decision;
    eprintln!(
        "wrote {}: held-out clean accuracy M {:.1}%, B {:.1}%, M′ {:.1}%; τ = {:.4e} (target FPR {:.2}%, realised {:.2}% on {} held-out frames)",
        c.bundle.display(),
        100.0 * c.model_accuracy,
        100.0 * c.expert_accuracy,
        100.0 * c.auxiliary_accuracy,
        d.threshold,
        100.0 * d.target_fpr,
        100.0 * d.calibration_fpr,
        d.calibration_size
    );
    if let Some(t) = &d.target {
        eprintln!(
            "target label {} ({}) has its own τ = {:.4e} ({:.0}% of the false-positive budget over its {} frames)",
            t.label,
            t.source,
            t.threshold,
            100.0 * t.fpr_share,
            t.calibration_size
        );
    }
    Ok(())
}

fn scan(args: ScanCommand, device: tch::Device) -> Result<()> {
    if args.scan.scan_runs == Some(0) {
        bail!("--scan-runs 0 leaves nothing to scan (give at least 1 run)");
    }
    let suspect = &args.suspect;
    let reserve = load_reserve(&suspect.reserve, suspect.reserve_labels.as_ref())?;
    let opts = args.scan.options(suspect, device, suspect.augmentation(&reserve));
    let norm = normalization(suspect)?;
    let record = scan_model(&suspect.model, &reserve, &norm, suspect.holdout, &opts)?;
    let classes: Vec<String> = (0..record.histogram.len()).map(|k| k.to_string()).collect();
    eprintln!("{}", record.summary(&classes));
    if let Some(path) = &args.json {
        let tmp = path.with_extension("json.partial");
        std::fs::write(&tmp, serde_json::to_string_pretty(&record)? + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
