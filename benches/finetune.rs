//! Fine-tuning throughput of the ONNX interpreter against the same network
//! written directly with `tch::nn`: one SGD step (Nesterov momentum 0.9,
//! weight decay 5e-4) on a batch of 128 Fashion-MNIST-shaped frames through
//! the demo CNN (conv-BN-ReLU-pool ×2, linear 128, linear 10), in train mode.
//! Compare the two as a ratio measured in the same run:
//! `cargo bench --bench finetune`.

use criterion::{criterion_group, criterion_main, Criterion};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use badexpert_converter::onnx::{builder, TchGraph};
use badexpert_runtime::FrameShape;

const BATCH: i64 = 128;

fn direct(vs: &nn::Path) -> impl ModuleT {
    let conv =
        |vs: nn::Path, cin, cout| nn::conv2d(vs, cin, cout, 3, nn::ConvConfig { padding: 1, ..Default::default() });
    nn::seq_t()
        .add(conv(vs / "c1", 1, 32))
        .add(nn::batch_norm2d(vs / "b1", 32, Default::default()))
        .add_fn(|x| x.relu().max_pool2d_default(2))
        .add(conv(vs / "c2", 32, 64))
        .add(nn::batch_norm2d(vs / "b2", 64, Default::default()))
        .add_fn(|x| x.relu().max_pool2d_default(2).flatten(1, -1))
        .add(nn::linear(vs / "l1", 64 * 7 * 7, 128, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs / "l2", 128, 10, Default::default()))
}

fn sgd() -> nn::Sgd {
    nn::Sgd { momentum: 0.9, nesterov: true, wd: 5e-4, ..Default::default() }
}

fn bench(c: &mut Criterion) {
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let x = Tensor::randn([BATCH, 1, 28, 28], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [BATCH], (Kind::Int64, Device::Cpu));
    let mut group = c.benchmark_group("fine-tune step, demo CNN, batch 128, 1 thread");

    let graph = TchGraph::from_proto(builder::small_cnn(FrameShape::new(1, 28, 28), 10, 0), Device::Cpu).unwrap();
    let mut opt = sgd().build(graph.var_store(), 0.01).unwrap();
    group.bench_function("interpreter (TchGraph from ONNX)", |b| {
        b.iter(|| {
            let loss = graph.forward(&x, true).unwrap().cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
        })
    });

    let vs = nn::VarStore::new(Device::Cpu);
    let net = direct(&vs.root());
    let mut opt = sgd().build(&vs, 0.01).unwrap();
    group.bench_function("tch::nn (same network)", |b| {
        b.iter(|| {
            let loss = net.forward_t(&x, true).cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
