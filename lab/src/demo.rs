//! The shipped demo: a small BatchNorm CNN written as ONNX with random
//! initialisation, trained through the same interpreter on Fashion-MNIST
//! poisoned with a backdoor, plus the clean reserve and evaluation slices the
//! demo needs so that it runs without the full data set.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::Device;

use badexpert_frames::{write_idx_images, write_idx_labels, FrameSource};
use badexpert_runtime::{FrameSet, Normalization, Preprocessor};

use crate::attack::Attack;
use badexpert_converter::augment::Augmentation;
use badexpert_converter::convert::split_reserve;
use badexpert_converter::onnx::{
    builder, normalization_metadata, read_model, set_normalization_metadata, write_model, TchGraph,
};
use badexpert_converter::train::{accuracy, class_indices, fine_tune, Optimizer, Progress, Schedule, TrainConfig};
use badexpert_converter::{Error, Result};

pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

/// Fashion-MNIST's usual normalisation (mean 0.2860, std 0.3530 after /255).
pub fn fashion_mnist_normalization() -> Normalization {
    Normalization { scale: 1.0 / 255.0, mean: vec![0.2860], std: vec![0.3530] }
}

/// Fashion-MNIST's train and test splits.
pub struct FashionMnist {
    pub train: FrameSet,
    pub test: FrameSet,
}

/// Reads Fashion-MNIST from its IDX files (as Debian's `dataset-fashion-mnist` installs them).
pub fn load_fashion_mnist(dir: &Path) -> Result<FashionMnist> {
    let load = |split: &str| -> Result<FrameSet> {
        let images = dir.join(format!("{split}-images-idx3-ubyte.gz"));
        if !images.is_file() {
            return Err(Error::Data(format!(
                "{} not found; install Fashion-MNIST (apt-get install dataset-fashion-mnist) or point --data at it",
                images.display()
            )));
        }
        let set = FrameSource::detect(&images).load()?;
        set.require_labels(split)?;
        Ok(set)
    };
    Ok(FashionMnist { train: load("train")?, test: load("t10k")? })
}

/// How a demo model is made.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSpec {
    pub attack: String,
    pub target: u32,
    /// Fraction of the training set; the attack's usual rate when absent.
    pub poison_rate: Option<f64>,
    pub epochs: usize,
    /// "sgd" (Nesterov momentum 0.9) or "adam".
    pub optimizer: String,
    pub learning_rate: f64,
    /// Epochs after which the rate is multiplied by 0.1.
    pub lr_milestones: Vec<usize>,
    pub weight_decay: f64,
    /// Random crop (padding H/8) and horizontal flip while training, as is standard.
    pub augment: bool,
    pub batch_size: usize,
    pub seed: u64,
    /// Test images set aside as the clean reserve (the rest is for evaluation).
    pub reserve_size: usize,
    /// Evaluation frames shipped beside the model.
    pub eval_size: usize,
    /// An untrained ONNX classifier (input [N, 1, 28, 28], 10 logits) to
    /// train instead of the built-in CNN, e.g. a PyTorch export.
    pub architecture: Option<PathBuf>,
}

impl Default for DemoSpec {
    fn default() -> Self {
        DemoSpec {
            attack: Attack::BadNet.to_string(),
            target: 0,
            poison_rate: None,
            epochs: 8,
            optimizer: "sgd".into(),
            learning_rate: 0.05,
            lr_milestones: vec![6],
            weight_decay: 5e-4,
            augment: true,
            batch_size: 128,
            seed: 1,
            reserve_size: 2000,
            eval_size: 1000,
            architecture: None,
        }
    }
}

/// Figures measured when the demo model was made.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub spec: DemoSpec,
    pub poisoned_frames: usize,
    /// On the full 10,000-image test set.
    pub clean_accuracy: f64,
    /// On triggered test images whose true class is not the target.
    pub attack_success_rate: f64,
    pub trainable_parameters: i64,
}

/// The seeded split of the test set into the clean reserve and the evaluation part.
pub fn split_test_set(test: &FrameSet, reserve_size: usize, seed: u64) -> Result<(FrameSet, FrameSet)> {
    if reserve_size == 0 || reserve_size >= test.len() {
        return Err(Error::Invalid(format!("reserve of {reserve_size} from {} test images", test.len())));
    }
    // split_reserve holds out the given fraction: here the reserve is the held-out part.
    let (rest, reserve) = split_reserve(test, reserve_size as f64 / test.len() as f64, seed)?;
    Ok((reserve, rest))
}

fn attack_success(graph: &TchGraph, attack: Attack, test: &FrameSet, target: u32, pre: &Preprocessor) -> Result<f64> {
    let labels = test.require_labels("test")?;
    let keep: Vec<usize> = (0..test.len()).filter(|&i| labels[i] != target).collect();
    let triggered = attack.triggered(&test.select(&keep));
    accuracy(graph, &triggered, &vec![target; triggered.len()], pre)
}

/// Trains a backdoored demo model and writes it, with the reserve and
/// evaluation slices, into `out`.
pub fn make_demo(
    data: &FashionMnist,
    out: &Path,
    spec: &DemoSpec,
    device: Device,
    progress: &dyn Progress,
) -> Result<DemoReport> {
    let attack: Attack = spec.attack.parse().map_err(Error::Invalid)?;
    let poison_rate = spec.poison_rate.unwrap_or_else(|| attack.default_poison_rate());
    let shape = data.train.shape();
    let norm = fashion_mnist_normalization();
    let pre = Preprocessor::new(&norm, shape)?;
    let (poisoned, chosen) = attack.poison(&data.train, poison_rate, spec.target, spec.seed)?;
    let mut proto = match &spec.architecture {
        Some(path) => read_model(path)?,
        None => builder::small_cnn(shape, FASHION_MNIST_CLASSES.len() as i64, spec.seed),
    };
    let graph = TchGraph::from_proto(proto.clone(), device)?;
    let dims = &graph.input().dims;
    if dims.len() != 4
        || dims[1..]
            .iter()
            .zip([shape.channels, shape.height, shape.width])
            .any(|(d, w)| d.is_some_and(|d| d as usize != w))
    {
        return Err(Error::Invalid(format!(
            "the architecture's input {dims:?} does not take Fashion-MNIST's {shape} frames"
        )));
    }
    let optimizer = match spec.optimizer.as_str() {
        "sgd" => Optimizer::SgdNesterov,
        "adam" => Optimizer::Adam,
        other => return Err(Error::Invalid(format!("optimizer {other:?} (sgd or adam)"))),
    };
    let cfg = TrainConfig {
        optimizer,
        learning_rate: spec.learning_rate,
        epochs: spec.epochs,
        batch_size: spec.batch_size,
        weight_decay: spec.weight_decay,
        schedule: Schedule::Step { milestones: spec.lr_milestones.clone(), decay: 0.1 },
        augmentation: if spec.augment { Augmentation::standard(shape.height, true) } else { Augmentation::NONE },
        seed: spec.seed,
    };
    let labels = class_indices(poisoned.require_labels("train")?);
    fine_tune(&graph, &poisoned, &labels, &pre, &cfg, progress, "backdoored demo model")?;

    let report = DemoReport {
        spec: DemoSpec { poison_rate: Some(poison_rate), ..spec.clone() },
        poisoned_frames: chosen.len(),
        clean_accuracy: accuracy(&graph, &data.test, data.test.require_labels("test")?, &pre)?,
        attack_success_rate: attack_success(&graph, attack, &data.test, spec.target, &pre)?,
        trainable_parameters: graph.trainable_parameters(),
    };

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    proto = graph.to_proto()?;
    set_normalization_metadata(&mut proto, &norm);
    write_model(&proto, &out.join("model.onnx"))?;
    let (reserve, rest) = split_test_set(&data.test, spec.reserve_size, spec.seed)?;
    let eval = rest.select(&(0..spec.eval_size.min(rest.len())).collect::<Vec<_>>());
    let write = |name: &str, set: &FrameSet| -> Result<()> {
        write_idx_images(&out.join(format!("{name}-images-idx3-ubyte.gz")), set)?;
        write_idx_labels(&out.join(format!("{name}-labels-idx1-ubyte.gz")), set.require_labels(name)?)?;
        Ok(())
    };
    write("reserve", &reserve)?;
    write("eval-clean", &eval)?;
    write(&format!("eval-{attack}"), &attack.triggered(&eval))?;
    let json = serde_json::to_string_pretty(&report).expect("plain struct serialises");
    std::fs::write(out.join("demo.json"), json + "\n").map_err(|e| Error::io(out.join("demo.json"), e))?;
    Ok(report)
}

/// A directory as [`make_demo`] writes it, opened for evaluation: the model,
/// its attack and target from `demo.json`, its normalisation from the ONNX
/// metadata, the clean reserve and the clean evaluation slice.
pub struct DemoDir {
    pub name: String,
    pub model: PathBuf,
    pub attack: Attack,
    pub target: u32,
    pub normalization: Normalization,
    pub reserve: FrameSet,
    pub eval_clean: FrameSet,
}

impl DemoDir {
    pub fn open(dir: &Path) -> Result<DemoDir> {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let json_path = dir.join("demo.json");
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).map_err(|e| Error::io(&json_path, e))?)
                .map_err(|e| Error::Invalid(format!("{}: {e}", json_path.display())))?;
        let attack: Attack = spec["spec"]["attack"]
            .as_str()
            .ok_or_else(|| Error::Invalid(format!("{}: no spec.attack", json_path.display())))?
            .parse()
            .map_err(|e| Error::Invalid(format!("{}: {e}", json_path.display())))?;
        let target = spec["spec"]["target"]
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| Error::Invalid(format!("{}: no spec.target", json_path.display())))?;
        let model = dir.join("model.onnx");
        let normalization = normalization_metadata(&read_model(&model)?)?.ok_or_else(|| {
            Error::Invalid(format!("{}: no input normalisation recorded in its metadata", model.display()))
        })?;
        let load = |name: &str| -> Result<FrameSet> {
            let set = FrameSource::detect(&dir.join(format!("{name}-images-idx3-ubyte.gz"))).load()?;
            set.require_labels(name)?;
            Ok(set)
        };
        Ok(DemoDir {
            name,
            model,
            attack,
            target,
            normalization,
            reserve: load("reserve")?,
            eval_clean: load("eval-clean")?,
        })
    }
}
