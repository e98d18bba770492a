//! BatchNorm restored for fine-tuning a folded export: the model is
//! unchanged until it trains, and what it learns is folded back into the
//! convolutions on export.

use std::path::Path;

use badexpert_converter::augment::Augmentation;
use badexpert_converter::onnx::builder::GraphBuilder;
use badexpert_converter::onnx::TchGraph;
use badexpert_converter::train::{class_indices, fine_tune, predict_logits, Optimizer, Schedule, TrainConfig};
use badexpert_frames::FrameSource;
use badexpert_runtime::{FrameSet, FrameShape, Normalization, Preprocessor};
use tch::{Device, Tensor};

fn reserve(n: usize) -> FrameSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/badnet-fmnist/reserve-images-idx3-ubyte.gz");
    FrameSource::detect(&path).load().unwrap().head(n)
}

fn preprocessor() -> Preprocessor {
    Preprocessor::new(
        &Normalization { scale: 1.0 / 255.0, mean: vec![0.286], std: vec![0.353] },
        FrameShape::new(1, 28, 28),
    )
    .unwrap()
}

/// A folded-style CNN: convolutions straight into ReLU, the first without a bias.
fn folded_cnn() -> tract_onnx::pb::ModelProto {
    let mut b = GraphBuilder::new(FrameShape::new(1, 28, 28), 7);
    b.conv(8, 3).relu().max_pool(2).conv_strided(16, 3, 2).relu().global_average_pool().flatten().linear(10);
    let mut proto = b.finish();
    let graph = proto.graph.as_mut().unwrap();
    let first = graph.node.iter_mut().find(|n| n.op_type == "Conv").unwrap();
    let bias = first.input.pop().unwrap();
    graph.initializer.retain(|t| t.name != bias);
    proto
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn a_restored_model_computes_what_the_source_did_and_folds_back_after_training() {
    tch::set_num_threads(1);
    let (frames, pre) = (reserve(300), preprocessor());
    let source = folded_cnn();
    let original = TchGraph::from_proto(source.clone(), Device::Cpu).unwrap();
    let before = predict_logits(&original, &frames, &pre).unwrap();

    let mut graph = TchGraph::from_proto(source, Device::Cpu).unwrap();
    assert_eq!(graph.restore_normalization(&frames, &pre).unwrap(), 2);
    assert_eq!(graph.restored_normalizations(), 2);
    let restored = predict_logits(&graph, &frames, &pre).unwrap();
    assert!(max_diff(&before, &restored) < 1e-4, "restoring changed the model by {}", max_diff(&before, &restored));
    let unchanged = TchGraph::from_proto(graph.to_proto().unwrap(), Device::Cpu).unwrap();
    assert!(max_diff(&before, &predict_logits(&unchanged, &frames, &pre).unwrap()) < 1e-4);

    let config = TrainConfig {
        optimizer: Optimizer::SgdNesterov,
        learning_rate: 0.1,
        epochs: 1,
        batch_size: 32,
        weight_decay: 1e-4,
        schedule: Schedule::constant(),
        augmentation: Augmentation::NONE,
        seed: 3,
    };
    let labels = class_indices(frames.labels().unwrap());
    fine_tune(&graph, &frames, &labels, &pre, &config, &(), "restored").unwrap();
    let trained = predict_logits(&graph, &frames, &pre).unwrap();
    assert!(max_diff(&before, &trained) > 1e-2, "training moved nothing");

    let exported = graph.to_proto().unwrap();
    let g = exported.graph.as_ref().unwrap();
    assert!(g.node.iter().all(|n| n.op_type != "BatchNormalization"), "the plans keep the source's structure");
    assert!(
        g.node.iter().filter(|n| n.op_type == "Conv").all(|n| n.input.len() == 3),
        "every convolution has its folded bias"
    );
    let reloaded = TchGraph::from_proto(exported, Device::Cpu).unwrap();
    let folded = predict_logits(&reloaded, &frames, &pre).unwrap();
    assert!(max_diff(&trained, &folded) < 1e-3, "folded export differs by {}", max_diff(&trained, &folded));
}

#[test]
fn convolutions_that_feed_a_batchnorm_are_left_alone() {
    let (frames, pre) = (reserve(64), preprocessor());
    let mut b = GraphBuilder::new(FrameShape::new(1, 28, 28), 3);
    b.conv(8, 3).batch_norm().relu().max_pool(2).basic_block(8, 1).global_average_pool().flatten().linear(10);
    let mut graph = TchGraph::from_proto(b.finish(), Device::Cpu).unwrap();
    assert_eq!(graph.restore_normalization(&frames, &pre).unwrap(), 0);
}

/// A weight soup: every variable is the copies' mean, the running statistics
/// are re-estimated for the averaged weights, and a soup of one model's
/// identical copies computes what that model did.
#[test]
fn a_soup_averages_the_copies_weights_and_refits_the_statistics() {
    tch::set_num_threads(1);
    let (frames, pre) = (reserve(256), preprocessor());
    let labels = class_indices(frames.labels().unwrap());
    let mut b = GraphBuilder::new(FrameShape::new(1, 28, 28), 5);
    b.conv(8, 3).batch_norm().relu().max_pool(2).basic_block(8, 1).global_average_pool().flatten().linear(10);
    let proto = b.finish();
    let copies: Vec<TchGraph> = (0..2)
        .map(|seed| {
            let g = TchGraph::from_proto(proto.clone(), Device::Cpu).unwrap();
            let config = TrainConfig {
                optimizer: Optimizer::SgdNesterov,
                learning_rate: 0.05,
                epochs: 6,
                batch_size: 32,
                weight_decay: 0.0,
                schedule: Schedule::constant(),
                augmentation: Augmentation::NONE,
                seed,
            };
            fine_tune(&g, &frames, &labels, &pre, &config, &(), "copy").unwrap();
            g
        })
        .collect();
    let vars: Vec<_> = copies.iter().map(|g| g.var_store().variables()).collect();
    let soup = TchGraph::from_proto(proto.clone(), Device::Cpu).unwrap();
    soup.average_of(&[&copies[0], &copies[1]], &frames, &pre).unwrap();
    let souped = soup.var_store().variables();
    assert!(!souped.is_empty());
    for (name, v) in &souped {
        let mean = (&vars[0][name] + &vars[1][name]) / 2.0;
        assert!(max_diff(v, &mean) < 1e-6, "{name} is not the copies' mean");
    }
    assert!(max_diff(&vars[0]["p0"], &vars[1]["p0"]) > 1e-4, "the copies differ");

    // Identical copies: the weights stay, and so (up to the moving average's
    // start) do statistics already estimated on the same frames.
    let one = &copies[0];
    one.recompute_statistics(&frames, &pre).unwrap();
    let before = predict_logits(one, &frames, &pre).unwrap();
    one.average_of(&[one, one], &frames, &pre).unwrap();
    let after = predict_logits(one, &frames, &pre).unwrap();
    assert!(max_diff(&before, &after) < 1e-2, "a soup of one model moved its logits by {}", max_diff(&before, &after));
}
