//! Every PyTorch-exported architecture fixture (ResNet18, VGG16-BN,
//! MobileNetV2, ViT; folded and kept BatchNorm; 1×28×28 and 3×32×32) converts
//! to a bundle whose plans match the interpreter, and the guard runs on it,
//! in f32 and in int8.
//!
//! The fixtures are untrained, so the reserve is labelled with M's own
//! predictions: this checks the pipeline (fine-tunes, NNEF export of shape
//! subgraphs with a symbolic batch, calibration, guarding), not detection
//! quality — that is `badexpert-lab report --models models/architectures`.

mod common;

use badexpert_converter::auxiliary::{AuxiliaryModel, AuxiliaryRate};
use badexpert_converter::export::bundle_at_precision;
use badexpert_converter::onnx::TchGraph;
use badexpert_converter::train::{predict_logits, Schedule};
use badexpert_converter::{convert, ConvertOptions};
use badexpert_runtime::manifest::Precision;
use badexpert_runtime::{
    advanced, FrameSet, FrameShape, Guard, GuardBundle, Normalization, PixelLayout, Preprocessor, Role,
};
use tract_core::prelude::*;

/// Fashion-MNIST reserve frames, as 1×28×28 or padded to 32×32 and tinted into 3 channels.
fn frames(shape: FrameShape, n: usize) -> FrameSet {
    let gray = common::reserve().head(n);
    if shape.channels == 1 {
        return gray;
    }
    let mut pixels = vec![0u8; n * shape.len()];
    for i in 0..n {
        let src = gray.frame(i);
        for c in 0..3 {
            for y in 0..28 {
                for x in 0..28 {
                    let v = src[y * 28 + x] as u32 * [255, 200, 150][c] / 255;
                    pixels[i * shape.len() + c * 1024 + (y + 2) * 32 + x + 2] = v as u8;
                }
            }
        }
    }
    FrameSet::new(shape, pixels, None).unwrap()
}

#[test]
fn every_architecture_fixture_converts_and_guards() {
    tch::set_num_threads(2);
    let dir = common::root().join("tests/fixtures/architectures");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    fixtures.sort();
    assert_eq!(fixtures.len(), 16);
    // BADEXPERT_FIXTURES=vit runs only the fixtures whose names contain it.
    if let Ok(only) = std::env::var("BADEXPERT_FIXTURES") {
        fixtures.retain(|p| p.to_string_lossy().contains(&only));
    }
    let norm = Normalization { scale: 1.0 / 255.0, mean: vec![0.5], std: vec![0.5] };
    let out = std::env::temp_dir().join(format!("badexpert-arch-{}", std::process::id()));
    for onnx in fixtures {
        let name = onnx.file_stem().unwrap().to_string_lossy().into_owned();
        let graph = TchGraph::load(&onnx, tch::Device::Cpu).unwrap();
        let dims = &graph.input().dims;
        let shape = FrameShape::new(dims[1].unwrap() as usize, dims[2].unwrap() as usize, dims[3].unwrap() as usize);
        let pre = Preprocessor::new(&norm, shape).unwrap();
        let unlabelled = frames(shape, 300);
        let logits = predict_logits(&graph, &unlabelled, &pre).unwrap();
        let own: Vec<u32> =
            Vec::<i64>::try_from(&logits.argmax(1, false)).unwrap().into_iter().map(|c| c as u32).collect();
        let reserve = unlabelled.with_labels(own).unwrap();

        let mut opts = ConvertOptions::new(norm.clone());
        opts.device = tch::Device::Cpu;
        opts.overwrite = true;
        opts.target_fpr = 0.05; // 60 held-out frames
                                // Labelled by an untrained model, the reserve may hold one class only:
                                // this test is about the architectures, not the reserve.
        opts.min_class_share = 0.0;
        // M's own labels never collapse: a fixed auxiliary rate keeps the test short.
        opts.auxiliary = AuxiliaryModel {
            rate: AuxiliaryRate::Fixed(0.1),
            epochs: 2,
            schedule: Schedule::Step { milestones: vec![1], decay: 0.1 },
            ..AuxiliaryModel::default()
        };
        let bundle_dir = out.join(&name);
        let conversion = convert(&onnx, &reserve, &bundle_dir, &opts, &()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ft = &conversion.manifest.fine_tune;

        let bundle = GuardBundle::open(&bundle_dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The exported M equals the interpreter on a batch of 16.
        let ours =
            Vec::<f32>::try_from(&predict_logits(&graph, &reserve.head(16), &pre).unwrap().flatten(0, -1)).unwrap();
        let mut input = vec![0f32; 16 * shape.len()];
        for (i, out) in input.chunks_mut(shape.len()).enumerate() {
            pre.planar_into(reserve.frame(i), out).unwrap();
        }
        let input =
            tract_ndarray::Array4::from_shape_vec((16, shape.channels, shape.height, shape.width), input).unwrap();
        let planned = advanced::plan_with_batch(&bundle, Role::Model, 16)
            .unwrap()
            .run(tvec![input.into_tensor().into()])
            .unwrap();
        let planned = planned[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        let scale = ours.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = ours.iter().zip(&planned).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
        assert!(diff <= 1e-4, "{name}: plan vs interpreter {diff:e}");

        let mut guard = Guard::new(&bundle).unwrap();
        let mut rejected = 0;
        for i in 0..50 {
            let v = guard.guard(reserve.frame(i), PixelLayout::Chw).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(v.score.is_finite() || v.score == f32::INFINITY, "{name}: score {}", v.score);
            rejected += usize::from(!v.accepted);
        }

        // The same plans in int8 load and guard, and M's logits stay near f32's.
        let int8_dir = out.join(format!("{name}-int8"));
        let manifest = bundle_at_precision(&bundle_dir, &int8_dir, Precision::Int8, Some(&reserve.head(64)))
            .unwrap_or_else(|e| panic!("{name} int8: {e}"));
        let int8 = GuardBundle::open(&int8_dir).unwrap_or_else(|e| panic!("{name} int8: {e}"));
        let layers = manifest.int8.as_ref().map_or(0, |s| s.model.len());
        let logits = |b: &GuardBundle, i: usize| -> Vec<f32> {
            let mut x = vec![0f32; shape.len()];
            pre.planar_into(reserve.frame(i), &mut x).unwrap();
            let x = tract_ndarray::Array4::from_shape_vec((1, shape.channels, shape.height, shape.width), x).unwrap();
            let y = advanced::plan(b, Role::Model).run(tvec![x.into_tensor().into()]).unwrap();
            y[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
        };
        let mut worst = 0f32;
        for i in 0..16 {
            let (a, b) = (logits(&bundle, i), logits(&int8, i));
            let range = a.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            worst = worst.max(a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / range);
        }
        assert!(worst <= 0.1, "{name}: int8 logits differ from f32 by {worst:.3} of their range");
        let mut guard8 = Guard::new(&int8).unwrap();
        for i in 0..50 {
            let v = guard8.guard(reserve.frame(i), PixelLayout::Chw).unwrap_or_else(|e| panic!("{name} int8: {e}"));
            assert!(v.score.is_finite() || v.score == f32::INFINITY, "{name} int8: score {}", v.score);
        }
        eprintln!(
            "{name}: expert rate {:.1e} (held-out CA {:.1} %), auxiliary rate {} ({:.1} %); plan Δ {diff:.1e}; {rejected}/50 rejected; int8: {layers} layers, logits Δ {worst:.1e} of range",
            ft.expert.learning_rate,
            100.0 * ft.expert.holdout_accuracy,
            ft.auxiliary.learning_rate,
            100.0 * ft.auxiliary.holdout_accuracy
        );
    }
    std::fs::remove_dir_all(&out).ok();
}
