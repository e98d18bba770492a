//! Single-operator ONNX graphs for the attributes the architecture fixtures
//! do not reach (dilation, groups, asymmetric and automatic pads, ceil-mode
//! and count_include_pad pools, HardSwish/HardSigmoid/Gelu, ReduceMean with
//! axes as an input): the interpreter, tract on the ONNX, and the NNEF plan
//! the converter writes all agree.

mod common;

use common::{float, int, ints, string};

use std::collections::HashMap;

use badexpert_converter::export::write_plan;
use badexpert_converter::onnx::{write_model, TchGraph};
use badexpert_runtime::manifest::Precision;
use badexpert_runtime::{FrameShape, BATCH_SYMBOL};
use tch::{Device, Kind, Tensor};
use tract_onnx::pb::{
    self, tensor_proto::DataType, tensor_shape_proto::dimension::Value as Dim, type_proto, AttributeProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use tract_onnx::prelude::*;

fn value_info(name: &str, dims: Option<&[i64]>) -> ValueInfoProto {
    let shape = dims.map(|dims| pb::TensorShapeProto {
        dim: std::iter::once(Dim::DimParam(BATCH_SYMBOL.into()))
            .chain(dims.iter().map(|&d| Dim::DimValue(d)))
            .map(|v| pb::tensor_shape_proto::Dimension { value: Some(v), ..Default::default() })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: DataType::Float as i32, shape })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `input [N, c, h, w]` → op → Flatten → `logits`, with float or int64 initializers.
fn single_op(
    op: &str,
    attrs: Vec<AttributeProto>,
    chw: [i64; 3],
    floats: &[(&str, &[i64])],
    int64s: &[(&str, &[i64])],
    opset: i64,
) -> ModelProto {
    let mut init = Vec::new();
    let mut inputs = vec!["input".to_string()];
    for (k, (name, dims)) in floats.iter().enumerate() {
        let n = dims.iter().product::<i64>();
        let values: Vec<f32> = (0..n).map(|i| ((i * 7 + k as i64 * 3) % 11) as f32 / 11.0 - 0.45).collect();
        init.push(TensorProto {
            name: name.to_string(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            float_data: values,
            ..Default::default()
        });
        inputs.push(name.to_string());
    }
    for (name, values) in int64s {
        init.push(TensorProto {
            name: name.to_string(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        inputs.push(name.to_string());
    }
    let node = NodeProto {
        name: op.to_lowercase(),
        op_type: op.into(),
        input: inputs,
        output: vec!["y".into()],
        attribute: attrs,
        ..Default::default()
    };
    let flatten = NodeProto {
        name: "flatten".into(),
        op_type: "Flatten".into(),
        input: vec!["y".into()],
        output: vec!["logits".into()],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        graph: Some(pb::GraphProto {
            name: op.into(),
            node: vec![node, flatten],
            initializer: init,
            input: vec![value_info("input", Some(&chw))],
            output: vec![value_info("logits", None)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check(what: &str, proto: ModelProto, chw: [i64; 3]) {
    let dir = std::env::temp_dir().join(format!("badexpert-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let onnx = dir.join(format!("{what}.onnx"));
    write_model(&proto, &onnx).unwrap();
    let x = Tensor::randn([3, chw[0], chw[1], chw[2]], (Kind::Float, Device::Cpu));
    let xs = Vec::<f32>::try_from(&x.flatten(0, -1)).unwrap();
    let ours = TchGraph::from_proto(proto.clone(), Device::Cpu).unwrap_or_else(|e| panic!("{what}: {e}"));
    let ours = Vec::<f32>::try_from(&ours.predict(&x).unwrap().flatten(0, -1)).unwrap();
    let input = || {
        tract_ndarray::Array4::from_shape_vec((3, chw[0] as usize, chw[1] as usize, chw[2] as usize), xs.clone())
            .unwrap()
            .into_tensor()
    };
    let run = |m: TypedModel| -> Vec<f32> {
        let out = m.into_optimized().unwrap().into_runnable().unwrap().run(tvec![input().into()]).unwrap();
        out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
    };
    let tract = run(tract_onnx::onnx()
        .model_for_path(&onnx)
        .unwrap()
        .with_input_fact(0, f32::fact([3, chw[0] as usize, chw[1] as usize, chw[2] as usize]).into())
        .unwrap()
        .into_typed()
        .unwrap());
    let plan_path = dir.join(format!("{what}.nnef.tar"));
    write_plan(
        &proto,
        FrameShape::new(chw[0] as usize, chw[1] as usize, chw[2] as usize),
        &plan_path,
        what,
        Precision::F32,
    )
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    let plan = tract_nnef::nnef().with_onnx().model_for_path(&plan_path).unwrap();
    let plan = plan.clone().set_symbols(&HashMap::from([(plan.sym(BATCH_SYMBOL), TDim::Val(3))])).unwrap();
    let plan = run(plan);
    let (vs_tract, vs_plan) = (max_diff(&ours, &tract), max_diff(&ours, &plan));
    eprintln!("{what}: {} outputs; max |Δ| vs tract {vs_tract:.1e}, vs NNEF plan {vs_plan:.1e}", ours.len());
    assert!(vs_tract <= 1e-5 && vs_plan <= 1e-5, "{what}: vs tract {vs_tract}, vs plan {vs_plan}");
}

#[test]
fn convolutions_with_groups_dilation_and_padding_schemes() {
    let chw = [4, 11, 10];
    let attrs = vec![
        ints("kernel_shape", &[3, 3]),
        int("group", 2),
        ints("dilations", &[2, 1]),
        ints("strides", &[2, 2]),
        ints("pads", &[0, 1, 2, 1]),
    ];
    check(
        "conv-grouped-dilated-asymmetric",
        single_op("Conv", attrs, chw, &[("w", &[6, 2, 3, 3]), ("b", &[6])], &[], 13),
        chw,
    );
    let attrs = vec![
        ints("kernel_shape", &[3, 3]),
        int("group", 4),
        ints("strides", &[2, 2]),
        string("auto_pad", "SAME_UPPER"),
    ];
    check("conv-depthwise-same-upper", single_op("Conv", attrs, chw, &[("w", &[4, 1, 3, 3])], &[], 13), chw);
    let attrs = vec![ints("kernel_shape", &[2, 2]), string("auto_pad", "SAME_LOWER")];
    check("conv-same-lower", single_op("Conv", attrs, chw, &[("w", &[3, 4, 2, 2])], &[], 13), chw);
}

#[test]
fn pools_in_ceil_mode_and_with_padding_counted_or_not() {
    let chw = [3, 11, 10];
    for (name, ceil, count_pad) in [("avgpool-ceil", 1, 0), ("avgpool-count-pad", 0, 1), ("avgpool-floor", 0, 0)] {
        let attrs = vec![
            ints("kernel_shape", &[3, 3]),
            ints("strides", &[2, 2]),
            ints("pads", &[1, 1, 1, 1]),
            int("ceil_mode", ceil),
            int("count_include_pad", count_pad),
        ];
        check(name, single_op("AveragePool", attrs, chw, &[], &[], 13), chw);
    }
    let attrs =
        vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2]), ints("pads", &[1, 0, 0, 1]), int("ceil_mode", 1)];
    check("maxpool-ceil-asymmetric", single_op("MaxPool", attrs, chw, &[], &[], 13), chw);
}

#[test]
fn activations_and_reductions_of_newer_opsets() {
    let chw = [2, 5, 6];
    check("hardswish", single_op("HardSwish", vec![], chw, &[], &[], 14), chw);
    check(
        "hardsigmoid",
        single_op("HardSigmoid", vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)], chw, &[], &[], 13),
        chw,
    );
    check("gelu-opset20", single_op("Gelu", vec![], chw, &[], &[], 20), chw);
    check("gelu-tanh-opset20", single_op("Gelu", vec![string("approximate", "tanh")], chw, &[], &[], 20), chw);
    check(
        "reducemean-axes-input",
        single_op("ReduceMean", vec![int("keepdims", 1)], chw, &[], &[("axes", &[2, 3])], 18),
        chw,
    );
    check(
        "reducemean-axes-attr",
        single_op("ReduceMean", vec![ints("axes", &[1]), int("keepdims", 0)], chw, &[], &[], 13),
        chw,
    );
}

#[test]
fn built_resnet18_has_resnet18_size_and_runs_like_tract() {
    use badexpert_converter::onnx::builder::resnet18;
    let shape = FrameShape::new(3, 32, 32);
    let full = TchGraph::from_proto(resnet18(shape, 10, 64, 0), Device::Cpu).unwrap();
    let params = full.trainable_parameters();
    // torchvision's CIFAR ResNet18: 11.17 M; our convs also carry biases.
    assert!((11_100_000..11_300_000).contains(&params), "{params}");
    check("resnet18-width4", resnet18(shape, 10, 4, 0), [3, 32, 32]);
}
