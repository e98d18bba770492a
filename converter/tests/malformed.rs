//! Malformed ONNX models are answered with an error naming the node and the
//! attribute or input at fault, never a panic or libtorch's C++ stack trace
//! (docs/design.md §6). Every model goes through `onnx::check_bytes`, the function
//! the `onnx_interpreter` fuzz target calls (converter/fuzz, docs/fuzzing.md),
//! and the fuzz corpus is replayed through it too.

mod common;

use common::{float, int, ints, string};

use std::path::Path;

use badexpert_converter::onnx::{builder, check_bytes, pb, TchGraph, MAX_TENSOR_ELEMENTS};
use badexpert_runtime::FrameShape;
use pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, ValueInfoProto,
};
use prost::Message;
use tch::Device;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/onnx_interpreter");

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Tensor as i32, t: Some(t), ..Default::default() }
}

/// A float initializer of `dims`, filled with a small ramp.
fn floats(name: &str, dims: &[i64]) -> TensorProto {
    let n = dims.iter().product::<i64>().max(0);
    let float_data = (0..n).map(|i| (i % 7) as f32 / 7.0).collect();
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data,
        ..Default::default()
    }
}

/// A 1-D int64 initializer.
fn int64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

/// A float input of `dims` after the batch symbol.
fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<Option<i64>> = std::iter::once(None).chain(dims.iter().copied().map(Some)).collect();
    builder::value_info(name, &dims)
}

/// Node `/bad/<op>` reading `inputs` and writing the graph output `y`.
fn node(op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: format!("/bad/{op}"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec!["y".into()],
        attribute,
        ..Default::default()
    }
}

/// Data input `input` of shape [N, ..chw] (N symbolic), graph output `y`.
fn model(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>, chw: &[i64], opset: i64) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        graph: Some(pb::GraphProto {
            name: "malformed".into(),
            node: nodes,
            initializer,
            input: vec![value_info("input", chw)],
            output: vec![ValueInfoProto { name: "y".into(), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One node on an input of [N, 4, 8, 8], opset 13.
fn one(op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, inits: Vec<TensorProto>) -> ModelProto {
    model(vec![node(op, inputs, attrs)], inits, &[4, 8, 8], 13)
}

fn conv_weight() -> TensorProto {
    floats("w", &[4, 4, 3, 3])
}

/// Every malformed model, with the phrases its error must contain.
fn cases() -> Vec<(&'static str, ModelProto, Vec<&'static str>)> {
    let huge = 1i64 << 40;
    let with_opset = |mut m: ModelProto, v: i64| {
        m.opset_import[0].version = v;
        m
    };
    let no_output = {
        let mut m = one("Relu", &["input"], vec![], vec![]);
        m.graph.as_mut().unwrap().node[0].output.clear();
        m
    };
    vec![
        ("flatten axis 7", one("Flatten", &["input"], vec![int("axis", 7)], vec![]), vec!["axis 7", "rank 4"]),
        ("flatten axis -9", one("Flatten", &["input"], vec![int("axis", -9)], vec![]), vec!["axis -9", "rank 4"]),
        (
            "maxpool same_upper stride 0",
            one(
                "MaxPool",
                &["input"],
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[0, 1]), string("auto_pad", "SAME_UPPER")],
                vec![],
            ),
            vec!["strides [0, 1]", "every stride must be ≥ 1"],
        ),
        (
            "conv stride 0",
            one("Conv", &["input", "w"], vec![ints("strides", &[0, 0])], vec![conv_weight()]),
            vec!["strides [0, 0]"],
        ),
        (
            "conv dilation 0",
            one("Conv", &["input", "w"], vec![ints("dilations", &[1, 0])], vec![conv_weight()]),
            vec!["dilations [1, 0]"],
        ),
        (
            "maxpool kernel 0",
            one("MaxPool", &["input"], vec![ints("kernel_shape", &[0, 2])], vec![]),
            vec!["kernel_shape [0, 2]"],
        ),
        (
            "conv negative pad",
            one("Conv", &["input", "w"], vec![ints("pads", &[-1, 0, 0, 0])], vec![conv_weight()]),
            vec!["pads [-1, 0, 0, 0]", "≥ 0"],
        ),
        ("conv group 0", one("Conv", &["input", "w"], vec![int("group", 0)], vec![conv_weight()]), vec!["group 0"]),
        (
            "conv group 3 on 4 channels",
            one("Conv", &["input", "w"], vec![int("group", 3)], vec![floats("w", &[3, 1, 3, 3])]),
            vec!["group 3", "4 channels"],
        ),
        (
            "conv kernel_shape not the weight's",
            one("Conv", &["input", "w"], vec![ints("kernel_shape", &[5, 5])], vec![conv_weight()]),
            vec!["kernel_shape [5, 5]"],
        ),
        (
            "conv huge pads",
            one("Conv", &["input", "w"], vec![ints("pads", &[huge; 4])], vec![conv_weight()]),
            vec!["output shape", "elements"],
        ),
        (
            "maxpool same_upper huge kernel",
            one(
                "MaxPool",
                &["input"],
                vec![ints("kernel_shape", &[1 << 62, 1 << 62]), string("auto_pad", "SAME_UPPER")],
                vec![],
            ),
            vec!["padded input"],
        ),
        (
            "maxpool rank 2",
            model(vec![node("MaxPool", &["input"], vec![ints("kernel_shape", &[2, 2])])], vec![], &[4], 13),
            vec!["input rank 2"],
        ),
        (
            "global pool rank 2",
            model(vec![node("GlobalAveragePool", &["input"], vec![])], vec![], &[4], 13),
            vec!["input rank 2"],
        ),
        ("softmax axis 5", one("Softmax", &["input"], vec![int("axis", 5)], vec![]), vec!["axis 5"]),
        ("concat axis 9", one("Concat", &["input", "input"], vec![int("axis", 9)], vec![]), vec!["axis 9"]),
        (
            "gather axis 4",
            one("Gather", &["input", "i"], vec![int("axis", 4)], vec![int64s("i", &[0])]),
            vec!["axis 4"],
        ),
        (
            "gather index 9",
            one("Gather", &["input", "i"], vec![int("axis", 1)], vec![int64s("i", &[9])]),
            vec!["index 9", "axis 1 of size 4"],
        ),
        (
            "layernorm axis 7",
            one("LayerNormalization", &["input", "s"], vec![int("axis", 7)], vec![floats("s", &[8])]),
            vec!["axis 7"],
        ),
        (
            "squeeze axis 9",
            with_opset(one("Squeeze", &["input"], vec![ints("axes", &[9])], vec![]), 11),
            vec!["axes", "axis 9"],
        ),
        (
            "squeeze axis of size 4",
            with_opset(one("Squeeze", &["input"], vec![ints("axes", &[1])], vec![]), 11),
            vec!["axis 1 has size 4"],
        ),
        (
            "unsqueeze axis 9",
            one("Unsqueeze", &["input", "a"], vec![], vec![int64s("a", &[9])]),
            vec!["axes", "axis 9"],
        ),
        (
            "unsqueeze repeated axis",
            with_opset(one("Unsqueeze", &["input"], vec![ints("axes", &[0, 0])], vec![]), 11),
            vec!["axes [0, 0]", "repeated"],
        ),
        ("reducemean axis 5", one("ReduceMean", &["input"], vec![ints("axes", &[5])], vec![]), vec!["axes", "axis 5"]),
        (
            "slice axis 7",
            one(
                "Slice",
                &["input", "b", "e", "a"],
                vec![],
                vec![int64s("b", &[0]), int64s("e", &[1]), int64s("a", &[7])],
            ),
            vec!["axis 7"],
        ),
        (
            "clip min not a scalar",
            one("Clip", &["input", "lo"], vec![], vec![floats("lo", &[2])]),
            vec!["min input of shape [2]", "scalar"],
        ),
        (
            "dropout ratio not a scalar",
            one("Dropout", &["input", "r"], vec![], vec![floats("r", &[3])]),
            vec!["ratio input of shape [3]", "scalar"],
        ),
        (
            "dropout ratio 1.5",
            with_opset(one("Dropout", &["input"], vec![float("ratio", 1.5)], vec![]), 10),
            vec!["ratio 1.5"],
        ),
        ("reshape dim -2", one("Reshape", &["input", "s"], vec![], vec![int64s("s", &[-2, 4])]), vec!["shape [-2, 4]"]),
        (
            "reshape two -1",
            one("Reshape", &["input", "s"], vec![], vec![int64s("s", &[-1, -1])]),
            vec!["at most one -1"],
        ),
        (
            "reshape overflowing dims",
            one("Reshape", &["input", "s"], vec![], vec![int64s("s", &[huge, huge])]),
            vec!["elements"],
        ),
        (
            "expand negative dim",
            one("Expand", &["input", "s"], vec![], vec![int64s("s", &[-1, 4, 8, 8])]),
            vec!["dims must be ≥ 0"],
        ),
        (
            "expand beyond the limit",
            one("Expand", &["input", "s"], vec![], vec![int64s("s", &[1 << 30, 1, 1, 1, 1])]),
            vec!["elements", "MAX_TENSOR_ELEMENTS"],
        ),
        (
            "constantofshape overflow",
            one("ConstantOfShape", &["s"], vec![], vec![int64s("s", &[huge, huge])]),
            vec!["elements"],
        ),
        (
            "constantofshape negative dim",
            one("ConstantOfShape", &["s"], vec![], vec![int64s("s", &[-3])]),
            vec!["negative"],
        ),
        (
            "constantofshape two-element value",
            one("ConstantOfShape", &["s"], vec![tensor_attr("value", floats("v", &[2]))], vec![int64s("s", &[2])]),
            vec!["value of shape [2]"],
        ),
        ("gemm rank 4", one("Gemm", &["input", "b"], vec![], vec![floats("b", &[8, 2])]), vec!["ranks 4 and 2"]),
        (
            "batchnorm with 3 inputs",
            one("BatchNormalization", &["input", "s", "b"], vec![], vec![floats("s", &[4]), floats("b", &[4])]),
            vec!["input 3 is missing"],
        ),
        ("matmul with 1 input", one("MatMul", &["input"], vec![], vec![]), vec!["input 1 is missing"]),
        ("node without output", no_output, vec!["no output"]),
        (
            "transpose bad perm",
            one("Transpose", &["input"], vec![ints("perm", &[0, 0, 1, 2])], vec![]),
            vec!["perm [0, 0, 1, 2]"],
        ),
        (
            "add shapes that do not broadcast",
            one("Add", &["input", "b"], vec![], vec![floats("b", &[3])]),
            vec!["do not broadcast"],
        ),
        (
            "add broadcast past the limit",
            model(vec![node("Add", &["input", "b"], vec![])], vec![floats("b", &[8192, 1])], &[1, 1, 4096], 13),
            vec!["elements"],
        ),
        (
            "initializer negative dim",
            one("Conv", &["input", "w"], vec![], vec![floats("w", &[-1, 4, 3, 3])]),
            vec!["initializer \"w\"", "negative"],
        ),
        (
            "initializer overflowing dims",
            one(
                "Add",
                &["input", "b"],
                vec![],
                vec![TensorProto { name: "b".into(), dims: vec![huge, huge], data_type: 1, ..Default::default() }],
            ),
            vec!["initializer \"b\"", "elements"],
        ),
        (
            // Found by the fuzzer: empty, yet tch's element count overflowed (a panic).
            "initializer of huge dims and a zero dim",
            one(
                "Add",
                &["input", "b"],
                vec![],
                vec![TensorProto { name: "b".into(), dims: vec![huge, huge, 0], data_type: 1, ..Default::default() }],
            ),
            vec!["initializer \"b\"", "elements"],
        ),
    ]
}

fn message(model: &ModelProto) -> Option<String> {
    check_bytes(&model.encode_to_vec()).err().map(|e| e.to_string())
}

#[test]
fn every_malformed_model_is_an_error_naming_node_and_attribute() {
    let mut failures = Vec::new();
    for (what, m, needles) in cases() {
        let op = m.graph.as_ref().unwrap().node[0].op_type.clone();
        let Some(err) = message(&m) else {
            failures.push(format!("{what}: accepted"));
            continue;
        };
        let initializer = needles.iter().any(|n| n.starts_with("initializer"));
        let node = format!("/bad/{op} ({op})");
        for n in needles.iter().copied().chain((!initializer).then_some(node.as_str())) {
            if !err.contains(n) {
                failures.push(format!("{what}: {err:?} lacks {n:?}"));
            }
        }
        if err.contains('\n') || err.contains("Exception raised") {
            failures.push(format!("{what}: {err:?} carries a stack trace"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn libtorch_errors_keep_their_first_line_only() {
    let m = one("MatMul", &["input", "b"], vec![], vec![floats("b", &[5, 2])]);
    let err = message(&m).expect("shapes do not multiply");
    assert!(err.contains("/bad/MatMul (MatMul)"), "{err}");
    assert!(!err.contains('\n') && !err.contains("frame #") && !err.contains("Exception raised"), "{err}");
}

#[test]
fn graph_without_outputs_is_refused_at_load() {
    let mut m = one("Relu", &["input"], vec![], vec![]);
    m.graph.as_mut().unwrap().output.clear();
    assert!(message(&m).unwrap().contains("no outputs"));
    let err = TchGraph::from_proto(m, Device::Cpu).err().expect("no outputs").to_string();
    assert!(err.contains("no outputs"), "{err}");
}

#[test]
fn initializers_beyond_max_tensor_elements_are_refused_before_allocation() {
    let dims = vec![1 << 20, 1 << 20];
    let big = TensorProto { name: "b".into(), dims, data_type: DataType::Float as i32, ..Default::default() };
    let m = one("Add", &["input", "b"], vec![], vec![big]);
    let err = TchGraph::from_proto(m, Device::Cpu).err().expect("too big").to_string();
    assert!(err.contains("initializer \"b\"") && err.contains(&MAX_TENSOR_ELEMENTS.to_string()), "{err}");
}

fn valid_models() -> Vec<(&'static str, ModelProto)> {
    let mut b = builder::GraphBuilder::new(FrameShape::new(1, 8, 8), 3);
    b.conv(4, 3).batch_norm().relu().max_pool(2).flatten().linear(10);
    let fixture =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/merged-batchnorm-initializers.onnx"))
            .unwrap();
    vec![
        ("tiny builder CNN", b.finish()),
        ("fixture", ModelProto::decode(&fixture[..]).unwrap()),
        ("flatten axis -1", one("Flatten", &["input"], vec![int("axis", -1)], vec![])),
        ("flatten axis = rank", one("Flatten", &["input"], vec![int("axis", 4)], vec![])),
        (
            "maxpool same_upper",
            one(
                "MaxPool",
                &["input"],
                vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2]), string("auto_pad", "SAME_UPPER")],
                vec![],
            ),
        ),
        ("expand", one("Expand", &["input", "s"], vec![], vec![int64s("s", &[2, 1, 1, 1])])),
        ("gather negative index", one("Gather", &["input", "i"], vec![int("axis", 1)], vec![int64s("i", &[-1, 0])])),
        ("constantofshape", one("ConstantOfShape", &["s"], vec![], vec![int64s("s", &[2, 3])])),
        (
            "clip scalar bounds",
            one("Clip", &["input", "lo", "hi"], vec![], vec![floats("lo", &[]), floats("hi", &[1])]),
        ),
    ]
}

#[test]
fn valid_models_still_run() {
    for (what, m) in valid_models() {
        if let Some(err) = message(&m) {
            panic!("{what}: {err}");
        }
    }
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let mut files: Vec<_> = std::fs::read_dir(CORPUS).expect("committed corpus").map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 10, "corpus {CORPUS} has only {} files", files.len());
    let mut ok = 0;
    for f in &files {
        // Ok or Err are both fine: a panic fails the test.
        ok += usize::from(check_bytes(&std::fs::read(f).unwrap()).is_ok());
    }
    assert!(ok > 0, "no corpus model runs: the corpus no longer reaches the forward pass");
}

/// Writes the models above as fuzzing seeds (`cargo test --test malformed -- --ignored`), then
/// `cargo fuzz cmin` trims the corpus (docs/fuzzing.md).
#[test]
#[ignore]
fn write_seed_corpus() {
    std::fs::create_dir_all(CORPUS).unwrap();
    let all = cases().into_iter().map(|(w, m, _)| (w, m)).chain(valid_models());
    for (what, m) in all {
        let name = format!("seed-{}", what.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
        std::fs::write(Path::new(CORPUS).join(name), m.encode_to_vec()).unwrap();
    }
}
