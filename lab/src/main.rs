//! `badexpert-lab`: the research side's binary, apart from the product's
//! `badexpert-convert`: backdoored demo models, triggered frame sets, the
//! evaluation report against STRIP and SCALE-UP, ablations, and timing
//! bundles for the speed suite.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use badexpert_converter::device::DeviceChoice;
use badexpert_converter::expert::ExpertRate;
use badexpert_converter::ConvertOptions;
use badexpert_frames::{write_idx_images, write_idx_labels, FrameSource};
use badexpert_lab::ablation::{ablate, markdown as ablation_markdown, AblationOptions};
use badexpert_lab::attack::Attack;
use badexpert_lab::demo::{load_fashion_mnist, make_demo, DemoSpec};
use badexpert_lab::report::{markdown, model_dirs, report_model, ReportOptions};
use badexpert_runtime::Normalization;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "badexpert-lab",
    version,
    about = "badexpert's research tools: demo models, triggers, reports, ablations"
)]
struct Cli {
    /// libtorch intra-op threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<i32>,
    /// Where to train: auto (CUDA when available, else the CPU), cpu, or cuda.
    #[arg(long, global = true, default_value = "auto")]
    device: DeviceChoice,
    /// No log lines but errors.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A bundle for timing only: the model's plan as M, B and M′, τ = 0, no fine-tuning
    /// (the speed suite, lab/bench/compare_onnxruntime.py --suite).
    TimingBundle {
        /// The model (ONNX) whose plan stands in for M, B and M′.
        #[arg(long)]
        model: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a backdoored demo model on Fashion-MNIST and write it with its reserve and eval slices.
    MakeDemo(DemoArgs),
    /// Evaluation report over backdoored model directories (as make-demo writes them):
    /// BaDExpert vs STRIP vs SCALE-UP, low-opacity Blend; writes report.json and report.md.
    Report {
        /// Directory holding model directories (each with model.onnx, demo.json, reserve and eval slices).
        #[arg(long, default_value = "models")]
        models: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Clean (and as many triggered) evaluation frames per model.
        #[arg(long, default_value_t = 1000)]
        frames: usize,
        /// STRIP superimpositions per frame.
        #[arg(long, default_value_t = 100)]
        strip_n: usize,
        /// Only these model directories (names), comma-separated.
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<String>>,
    },
    /// Ablations on backdoored model directories: clean reserve size and the expert's
    /// unlearning rate, each with the AUROC of B alone, M′ alone and both; writes
    /// ablation.json and ablation.md.
    Ablate {
        /// Directory holding model directories (as for `report`).
        #[arg(long, default_value = "models")]
        models: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Only these model directories (names), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "badnet-fmnist,blend-fmnist")]
        only: Vec<String>,
        /// Reserve sizes to try (nested subsets of the directory's reserve); empty to skip.
        #[arg(long, value_delimiter = ',', default_value = "100,200,400,2000")]
        reserve_sizes: Vec<usize>,
        /// Expert learning rates to try with the whole reserve ("auto" or a rate); empty to skip.
        #[arg(long, value_delimiter = ',', default_value = "auto,1e-5,3e-5,1e-4,3e-4,1e-3,3e-3,1e-2")]
        expert_lrs: Vec<ExpertRate>,
        /// Clean (and as many triggered) evaluation frames per model.
        #[arg(long, default_value_t = 1000)]
        frames: usize,
    },
    /// Implant a known trigger (a canary) into a copy of a model by a short fine-tune on the
    /// reserve's fine-tuning part; prints the held-out figures before and after as JSON.
    Implant {
        /// The model (ONNX, with its normalisation recorded).
        #[arg(long)]
        model: PathBuf,
        /// The clean reserve (IDX images, labels beside).
        #[arg(long)]
        reserve: PathBuf,
        /// The canaried copy (ONNX).
        #[arg(long)]
        out: PathBuf,
        /// The canary's trigger: badnet, blend, trojan, sig or wanet.
        #[arg(long)]
        attack: Attack,
        /// The canary's target class.
        #[arg(long)]
        target: u32,
        /// Share of the fine-tuning frames stamped and relabelled.
        #[arg(long, default_value_t = 0.1)]
        poison_rate: f64,
        #[arg(long, default_value_t = 5)]
        epochs: usize,
        #[arg(long, default_value_t = 1e-4)]
        lr: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Split the reserve as a conversion with this --split-seed does.
        #[arg(long, default_value_t = 0)]
        split_seed: u64,
    },
    /// Write a triggered copy of a frame set (labels kept: the true classes).
    Trigger {
        /// Attack whose trigger to stamp: badnet, blend, trojan, sig or wanet.
        #[arg(long)]
        attack: Attack,
        /// Frames to trigger (IDX images, labels beside).
        #[arg(long)]
        input: PathBuf,
        /// Output IDX images (`*-images-idx3-ubyte.gz`); labels go beside as `*-labels-idx1-ubyte.gz`.
        #[arg(long)]
        output: PathBuf,
    },
}

#[derive(Args)]
struct DemoArgs {
    /// Directory with Fashion-MNIST's IDX .gz files.
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Attack whose trigger to stamp: badnet, blend, trojan, sig or wanet.
    #[arg(long, default_value = "badnet")]
    attack: Attack,
    /// The attack's target class.
    #[arg(long, default_value_t = 0)]
    target: u32,
    /// Fraction of the training set to poison (default: 1 %; SIG 2 %; WaNet 5 %).
    #[arg(long)]
    poison_rate: Option<f64>,
    /// Training epochs of the demo model.
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Epochs after which the rate is multiplied by 0.1.
    #[arg(long, value_delimiter = ',', default_value = "6")]
    lr_milestones: Vec<usize>,
    /// sgd (Nesterov momentum 0.9) or adam.
    #[arg(long, default_value = "sgd")]
    optimizer: String,
    /// Initial learning rate of the demo model.
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// Weight decay of the demo model.
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Train without random crop and flip.
    #[arg(long)]
    no_augment: bool,
    /// Seed of the poisoning, the training order and the initial weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Train this untrained ONNX classifier (input [N, 1, 28, 28], 10 logits, e.g. a
    /// PyTorch export) instead of the built-in CNN.
    #[arg(long)]
    architecture: Option<PathBuf>,
}

fn main() -> ExitCode {
    badexpert_converter::process::prepare_for_training();
    let cli = Cli::parse();
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
    let device = || cli.device.resolve();
    let progress = ();
    match cli.command {
        Command::TimingBundle { model, out } => {
            badexpert_lab::timing::timing_bundle(&model, &out)?;
            eprintln!("wrote timing bundle {} (M as B and M′; its decisions mean nothing)", out.display());
            Ok(())
        }
        Command::MakeDemo(args) => {
            let data = load_fashion_mnist(&args.data)?;
            let spec = DemoSpec {
                attack: args.attack.to_string(),
                target: args.target,
                poison_rate: args.poison_rate,
                epochs: args.epochs,
                optimizer: args.optimizer,
                learning_rate: args.lr,
                lr_milestones: args.lr_milestones,
                weight_decay: args.weight_decay,
                augment: !args.no_augment,
                seed: args.seed,
                architecture: args.architecture,
                ..DemoSpec::default()
            };
            let report = make_demo(&data, &args.out, &spec, device()?, &progress)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Trigger { attack, input, output } => trigger(attack, &input, &output),
        Command::Implant { model, reserve, out, attack, target, poison_rate, epochs, lr, seed, split_seed } => {
            let reserve = FrameSource::detect(&reserve).load()?;
            let opts = badexpert_lab::canary::CanaryOptions {
                target,
                poison_rate,
                epochs,
                learning_rate: lr,
                seed,
                split_seed,
                holdout_fraction: ConvertOptions::new(Normalization::unit()).holdout_fraction,
            };
            let (proto, report) = badexpert_lab::canary::implant(&model, &reserve, attack, &opts, device()?)?;
            badexpert_converter::onnx::write_model(&proto, &out)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Ablate { models, out, only, reserve_sizes, expert_lrs, frames } => {
            let mut convert = ConvertOptions::new(Normalization::unit());
            convert.device = device()?;
            let opts = AblationOptions { reserve_sizes, expert_rates: expert_lrs, frames, convert };
            let dirs = selected_model_dirs(&models, Some(&only))?;
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let started = std::time::Instant::now();
            let mut rows = Vec::new();
            for dir in &dirs {
                rows.extend(ablate(dir, &out, &opts, &progress).with_context(|| format!("model {}", dir.display()))?);
            }
            let md = ablation_markdown(&rows);
            std::fs::write(out.join("ablation.md"), &md)?;
            std::fs::write(out.join("ablation.json"), serde_json::to_string_pretty(&rows)? + "\n")?;
            println!("{md}");
            eprintln!(
                "{} ablation setting(s) in {:.0} s: {}",
                rows.len(),
                started.elapsed().as_secs_f64(),
                out.join("ablation.md").display()
            );
            Ok(())
        }
        Command::Report { models, out, frames, strip_n, only } => {
            let mut convert = ConvertOptions::new(Normalization::unit());
            convert.device = device()?;
            let opts = ReportOptions { frames, strip_n, low_opacity: vec![0.10, 0.15, 0.20], convert };
            let dirs = selected_model_dirs(&models, only.as_deref())?;
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let started = std::time::Instant::now();
            let mut reports = Vec::new();
            for dir in &dirs {
                log::info!("evaluating {}", dir.display());
                reports.push(
                    report_model(dir, &out, &opts, &progress).with_context(|| format!("model {}", dir.display()))?,
                );
            }
            let md = markdown(&reports, &opts);
            std::fs::write(out.join("report.md"), &md)?;
            std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&reports)? + "\n")?;
            println!("{md}");
            eprintln!(
                "report for {} model(s) in {:.0} s: {}",
                reports.len(),
                started.elapsed().as_secs_f64(),
                out.join("report.md").display()
            );
            Ok(())
        }
    }
}

/// The model directories under `root`, restricted to the names in `only`;
/// a name that matches nothing is an error, not a silent skip.
fn selected_model_dirs(root: &Path, only: Option<&[String]>) -> Result<Vec<PathBuf>> {
    let mut dirs = model_dirs(root)?;
    if let Some(only) = only {
        let name = |d: &PathBuf| d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(missing) = only.iter().find(|o| !dirs.iter().any(|d| &name(d) == *o)) {
            bail!("{}: no model directory named {missing:?}", root.display());
        }
        dirs.retain(|d| only.contains(&name(d)));
    }
    Ok(dirs)
}

fn trigger(attack: Attack, input: &Path, output: &Path) -> Result<()> {
    let set = FrameSource::detect(input).load().with_context(|| format!("cannot read {}", input.display()))?;
    let name = output.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if !name.contains("images-idx3") {
        bail!("--output {name:?} should be named *-images-idx3-ubyte[.gz] so its labels file can sit beside it");
    }
    let triggered = attack.triggered(&set);
    write_idx_images(output, &triggered)?;
    if let Some(labels) = triggered.labels() {
        write_idx_labels(&output.with_file_name(name.replace("images-idx3", "labels-idx1")), labels)?;
    }
    eprintln!("wrote {} triggered frames ({attack}) to {}", triggered.len(), output.display());
    Ok(())
}
