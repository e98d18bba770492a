//! Bundles for timing only: a suspect model's plan standing in for all
//! three models (B and M′ are fine-tuned copies of M, so they share its
//! architecture and cost), τ = 0, no fine-tuning. The speed suite
//! (`lab/bench/compare_onnxruntime.py --suite`) makes one per zoo export and
//! times it beside ONNX Runtime running the same file three times; nothing
//! it decides means anything.

use std::path::Path;

use badexpert_converter::export::{write_plan, AUXILIARY_PLAN, EXPERT_PLAN, MODEL_PLAN};
use badexpert_converter::onnx::{normalization_metadata, read_model, TchGraph};
use badexpert_converter::output::{BundleWriter, NewManifest};
use badexpert_converter::{Error, Result};
use badexpert_runtime::manifest::{Decision, FileDigest, FineTuneRecord, Manifest, Plans, Precision, TrainingRecord};
use badexpert_runtime::{FrameShape, Normalization, ScoreMode};

/// Writes the timing bundle of `model` (ONNX, input `[N, C, H, W]`) into `out`.
pub fn timing_bundle(model: &Path, out: &Path) -> Result<Manifest> {
    let source = read_model(model)?;
    let graph = TchGraph::from_proto(source.clone(), tch::Device::Cpu)?;
    let dims = &graph.input().dims;
    let shape = match dims[..] {
        [_, Some(c), Some(h), Some(w)] => FrameShape::new(c as usize, h as usize, w as usize),
        _ => return Err(Error::Invalid(format!("{}: input {dims:?} is not [N, C, H, W]", model.display()))),
    };
    let x =
        tch::Tensor::zeros([2, shape.channels as i64, shape.height as i64, shape.width as i64], tch::kind::FLOAT_CPU);
    let classes = graph.predict(&x)?.size()[1] as usize;
    let writer = BundleWriter::new(out, true)?;
    let plan = |file: &str, what: &str| -> Result<FileDigest> {
        write_plan(&source, shape, &writer.dir().join(file), what, Precision::F32)?;
        writer.digest(file)
    };
    let plans = Plans {
        model: plan(MODEL_PLAN, "model M")?,
        expert: plan(EXPERT_PLAN, "M as B")?,
        auxiliary: plan(AUXILIARY_PLAN, "M as M′")?,
    };
    let untrained = |labels: &str| TrainingRecord {
        optimizer: "none (timing bundle)".into(),
        learning_rate: 0.0,
        epochs: 0,
        batch_size: 0,
        weight_decay: 0.0,
        lr_milestones: vec![],
        lr_decay: 1.0,
        lr_schedule: None,
        soup: None,
        labels: labels.into(),
        augmentation: "none".into(),
        holdout_accuracy: 0.0,
        rate_search: vec![],
    };
    let manifest = NewManifest {
        shape,
        normalization: normalization_metadata(&source)?.unwrap_or_else(Normalization::unit),
        classes: (0..classes).map(|k| k.to_string()).collect(),
        decision: Decision::uncalibrated(ScoreMode::Ensemble, 0.5, 0.01),
        plans,
        source_model: model,
        fine_tune: FineTuneRecord {
            expert: untrained("none: M stands in for B (timing bundle)"),
            auxiliary: untrained("none: M stands in for M′ (timing bundle)"),
            reserve_size: 0,
            fit_size: 0,
            selection_size: 0,
            holdout_size: 0,
            seed: 0,
            split_seed: None,
            device: "none".into(),
            restored_norms: 0,
        },
        created_by: format!("badexpert-lab timing_bundle {}", env!("CARGO_PKG_VERSION")),
    }
    .build()?;
    writer.finish(&manifest, None)?;
    Ok(manifest)
}
