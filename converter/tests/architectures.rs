//! PyTorch-exported ResNet18 / VGG16-BN / MobileNetV2 / ViT fixtures
//! (`scripts/fixtures/make_architectures.py`): the interpreter's eval-mode
//! forward equals tract's on the same ONNX, and one SGD step through the
//! interpreter updates the weights as PyTorch did.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use badexpert_converter::onnx::{tensor_from_proto, TchGraph};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use tract_onnx::prelude::*;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/architectures");
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    all.sort();
    assert_eq!(all.len(), 16, "4 architectures × 2 input shapes × 2 exports in {}", dir.display());
    all
}

fn reference(onnx: &Path) -> HashMap<String, Tensor> {
    Tensor::read_npz(onnx.with_extension("step.npz")).unwrap().into_iter().collect()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
}

/// max |a − b| relative to the larger of 1 and the reference's largest magnitude.
fn relative_diff(a: &Tensor, reference: &Tensor) -> f64 {
    let scale = reference.abs().max().double_value(&[]).max(1.0);
    (a - reference).abs().max().double_value(&[]) / scale
}

fn tract_logits(onnx: &Path, x: &Tensor) -> Tensor {
    let size = x.size();
    let model = tract_onnx::onnx().model_for_path(onnx).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let shape: Vec<usize> = size.iter().map(|&d| d as usize).collect();
    let input = tract_ndarray::ArrayD::from_shape_vec(shape, to_vec(x)).unwrap().into_tensor();
    let out = model.run(tvec![input.into()]).unwrap();
    let logits = out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
    Tensor::from_slice(&logits).reshape([size[0], -1])
}

/// Runs `check` on every fixture with its PyTorch reference and a freshly
/// loaded interpreter graph; fails once, listing every fixture's complaints.
fn check_every_fixture(check: impl Fn(&Path, &str, &HashMap<String, Tensor>, TchGraph) -> Vec<String>) {
    tch::set_num_threads(2);
    let mut failures = Vec::new();
    for onnx in fixtures() {
        let name = onnx.file_name().unwrap().to_string_lossy().into_owned();
        let r = reference(&onnx);
        let graph = TchGraph::load(&onnx, Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
        failures.extend(check(&onnx, &name, &r, graph).into_iter().map(|why| format!("{name}: {why}")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn interpreter_matches_tract_on_every_fixture() {
    check_every_fixture(|onnx, name, r, graph| {
        let ours = graph.predict(&r["x"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tract = tract_logits(onnx, &r["x"]);
        let vs_tract = relative_diff(&ours, &tract);
        let vs_torch = relative_diff(&ours, &r["logits_before"]);
        eprintln!("{name}: max |Δlogit| / scale vs tract {vs_tract:.2e}, vs PyTorch {vs_torch:.2e}");
        if vs_tract > 1e-4 || vs_torch > 1e-4 {
            vec![format!("vs tract {vs_tract:e}, vs PyTorch {vs_torch:e}")]
        } else {
            vec![]
        }
    });
}

#[test]
fn one_sgd_step_updates_weights_as_pytorch_did() {
    check_every_fixture(|_, name, r, graph| {
        let lr = r["lr"].double_value(&[]);
        let mut opt = nn::Sgd::default().build(graph.var_store(), lr).unwrap();
        let logits = graph.forward(&r["x"], true).unwrap();
        let loss = logits.cross_entropy_for_logits(&r["labels"]);
        let loss_diff = (loss.double_value(&[]) - r["loss"].double_value(&[])).abs();
        opt.backward_step(&loss);
        let after = graph.predict(&r["x"]).unwrap();
        let logits_diff = relative_diff(&after, &r["logits_after"]);
        let moved = relative_diff(&r["logits_after"], &r["logits_before"]);

        // Every initializer PyTorch's state_dict names (weights, BatchNorm statistics).
        let proto = graph.to_proto().unwrap();
        let mut compared = 0;
        let mut worst = (0.0f64, String::new());
        for init in &proto.graph.as_ref().unwrap().initializer {
            if let Some(want) = r.get(&format!("after/{}", init.name)) {
                let got = tensor_from_proto(init).unwrap();
                assert_eq!(got.size(), want.size(), "{name}: {}", init.name);
                let d = relative_diff(&got, want);
                if d > worst.0 {
                    worst = (d, init.name.clone());
                }
                compared += 1;
            }
        }
        eprintln!(
            "{name}: loss Δ {loss_diff:.1e}; logits after the step Δ {logits_diff:.2e} (the step moved them {moved:.2e}); \
             {compared} tensors compared, worst {:.2e} ({})",
            worst.0, worst.1
        );
        let checks = [
            (loss_diff <= 1e-4, format!("loss differs by {loss_diff:e}")),
            (moved > 1e-3, "the reference step must move the logits".to_string()),
            (logits_diff <= 1e-4, format!("logits after one step differ by {logits_diff:e}")),
            (compared >= 1, "no initializer matched PyTorch's state_dict".to_string()),
            (worst.0 <= 1e-4, format!("{} differs by {:e} after one step", worst.1, worst.0)),
        ];
        checks.into_iter().filter(|(ok, _)| !ok).map(|(_, why)| why).collect()
    });
}

#[test]
fn merged_initializers_are_split_so_batchnorm_statistics_train_apart() {
    // A fresh Conv→BN→Linear exported by PyTorch in eval mode with
    // training=PRESERVE: BN's weight doubles as running_var and its bias as
    // running_mean, through Identity nodes.
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/merged-batchnorm-initializers.onnx");
    let graph = TchGraph::load(&onnx, Device::Cpu).unwrap();
    let x = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
    let before = graph.predict(&x).unwrap();
    assert!(relative_diff(&before, &tract_logits(&onnx, &x)) <= 1e-4);
    let mut opt = nn::Sgd::default().build(graph.var_store(), 0.1).unwrap();
    let loss = graph.forward(&x, true).unwrap().cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 1, 2, 0]));
    opt.backward_step(&loss);
    let proto = graph.to_proto().unwrap();
    let g = proto.graph.as_ref().unwrap();
    assert!(g.node.iter().all(|n| n.op_type != "Identity"), "Identity of an initializer left in the graph");
    let get = |name: &str| tensor_from_proto(g.initializer.iter().find(|t| t.name == name).unwrap()).unwrap();
    // The running variance moved towards the batch variance; the BN weight by its gradient: no longer equal.
    assert!(relative_diff(&get("1.running_var"), &get("1.weight")) > 1e-3);
    assert!(relative_diff(&get("1.running_mean"), &get("1.bias")) > 1e-3);
}
