//! Models as other tools write them: ONNX external data (the dynamo
//! exporter's `<model>.onnx.data`), the operators PyTorch's exporters add
//! (`Mod` from `nn.MultiheadAttention`, integer `Div`), and every export of
//! the independent model zoo (`models/zoo`, lab/zoo/make_zoo.py) loaded
//! by the interpreter and checked against the logits PyTorch recorded, on a
//! batch of frames even where the export pinned a batch of 1.

use std::path::{Path, PathBuf};

use badexpert_converter::export::decluttered;
use badexpert_converter::onnx::{read_model, write_model, TchGraph};
use badexpert_frames::read_idx_images;
use badexpert_runtime::{FrameShape, BATCH_SYMBOL};
use tch::{Device, Kind, Tensor};
use tract_onnx::pb::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension::Value as Dim,
    type_proto, AttributeProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    ValueInfoProto,
};

fn scratch(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("badexpert-foreign-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn float_input(name: &str, chw: [i64; 3]) -> ValueInfoProto {
    let dim = |v| pb::tensor_shape_proto::Dimension { value: Some(v), ..Default::default() };
    let shape = pb::TensorShapeProto {
        dim: std::iter::once(dim(Dim::DimParam("batch".into())))
            .chain(chw.iter().map(|&d| dim(Dim::DimValue(d))))
            .collect(),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(shape),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn output(name: &str) -> ValueInfoProto {
    ValueInfoProto { name: name.into(), ..Default::default() }
}

fn node(op: &str, inputs: &[&str], out: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: format!("{}_{out}", op.to_lowercase()),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        attribute,
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i, ..Default::default() }
}

fn model(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>, chw: [i64; 3], opset: i64) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        graph: Some(pb::GraphProto {
            name: "foreign".into(),
            node: nodes,
            initializer,
            input: vec![float_input("input", chw)],
            output: vec![output("logits")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn int64s(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
}

fn load_error(path: &Path) -> String {
    TchGraph::load(path, Device::Cpu).err().expect("the model must be refused").to_string()
}

// ---------------------------------------------------------------- external data

const W: [i64; 2] = [4, 6];

/// input [N, 1, 2, 3] → Flatten → Gemm(w [4, 6], b [4], transB) → logits.
fn gemm_model() -> (ModelProto, Vec<f32>, Vec<f32>) {
    let w: Vec<f32> = (0..24).map(|i| ((i * 5) % 7) as f32 / 7.0 - 0.4).collect();
    let b: Vec<f32> = vec![0.25, -0.5, 1.0, 0.0];
    let nodes = vec![
        node("Flatten", &["input"], "flat", vec![int_attr("axis", 1)]),
        node("Gemm", &["flat", "w", "b"], "logits", vec![int_attr("transB", 1)]),
    ];
    (model(nodes, vec![floats("w", &W, &w), floats("b", &[4], &b)], [1, 2, 3], 17), w, b)
}

fn external(t: &mut TensorProto, location: &str, offset: Option<u64>, length: Option<u64>) {
    t.raw_data.clear();
    t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
    let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value };
    t.external_data.push(entry("location", location.into()));
    if let Some(o) = offset {
        t.external_data.push(entry("offset", o.to_string()));
    }
    if let Some(l) = length {
        t.external_data.push(entry("length", l.to_string()));
    }
}

/// The Gemm model with `w` at offset 0 and `b` at offset 128 of `location`
/// (written into `dir/data_file`), as the dynamo exporter lays them out.
fn external_gemm(dir: &Path, location: &str, data_file: &Path) -> PathBuf {
    let (mut m, w, b) = gemm_model();
    let mut data: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    data.resize(128, 0);
    data.extend(b.iter().flat_map(|x| x.to_le_bytes()));
    std::fs::write(data_file, &data).unwrap();
    let g = m.graph.as_mut().unwrap();
    external(&mut g.initializer[0], location, Some(0), Some(96));
    external(&mut g.initializer[1], location, Some(128), Some(16));
    let path = dir.join("model.onnx");
    write_model(&m, &path).unwrap();
    path
}

#[test]
fn external_data_beside_the_model_is_read_in() {
    let dir = scratch("external-ok");
    std::fs::create_dir_all(dir.join("weights")).unwrap();
    let path = external_gemm(&dir, "weights/model.onnx.data", &dir.join("weights/model.onnx.data"));
    let loaded = read_model(&path).unwrap();
    for t in &loaded.graph.as_ref().unwrap().initializer {
        assert!(t.external_data.is_empty() && t.data_location.is_none(), "{}: external fields left", t.name);
        assert!(!t.raw_data.is_empty(), "{}: no bytes read", t.name);
    }
    let x =
        Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.0, 1.5, -0.25, 1.0, 1.0, 1.0, -2.0, 0.0, 3.0]).reshape([2, 1, 2, 3]);
    let ours = values(&TchGraph::load(&path, Device::Cpu).unwrap().predict(&x).unwrap());
    let inline = values(&TchGraph::from_proto(gemm_model().0, Device::Cpu).unwrap().predict(&x).unwrap());
    assert_eq!(ours, inline);
    // A relative model path (no directory part) resolves beside the model too.
    let (mut m, _, _) = gemm_model();
    let g = m.graph.as_mut().unwrap();
    external(&mut g.initializer[0], "./weights/model.onnx.data", Some(0), Some(96));
    write_model(&m, &dir.join("dot.onnx")).unwrap();
    TchGraph::load(&dir.join("dot.onnx"), Device::Cpu).unwrap();
}

#[test]
fn external_data_outside_the_model_directory_is_refused() {
    let dir = scratch("external-outside");
    let inner = dir.join("model");
    std::fs::create_dir_all(&inner).unwrap();
    let outside = dir.join("secret.bin");
    // `..` component
    let path = external_gemm(&inner, "../secret.bin", &outside);
    let e = load_error(&path);
    assert!(e.contains("\"w\"") && e.contains("../secret.bin") && e.contains("'..' is not allowed"), "{e}");
    // absolute location
    let abs = outside.to_str().unwrap().to_string();
    let path = external_gemm(&inner, &abs, &outside);
    let e = load_error(&path);
    assert!(e.contains("\"w\"") && e.contains(&abs) && e.contains("absolute"), "{e}");
    // a symlink inside the directory that points outside it
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&outside, inner.join("link.data")).unwrap();
        let path = external_gemm(&inner, "link.data", &outside);
        let e = load_error(&path);
        assert!(e.contains("\"w\"") && e.contains("link.data") && e.contains("outside the model's directory"), "{e}");
    }
    // a location that does not exist
    let (mut m, _, _) = gemm_model();
    external(&mut m.graph.as_mut().unwrap().initializer[1], "missing.data", None, None);
    write_model(&m, &inner.join("missing.onnx")).unwrap();
    let e = load_error(&inner.join("missing.onnx"));
    assert!(e.contains("\"b\"") && e.contains("missing.data"), "{e}");
}

#[test]
fn truncated_external_data_is_refused() {
    let dir = scratch("external-truncated");
    let data = dir.join("model.onnx.data");
    let path = external_gemm(&dir, "model.onnx.data", &data);
    // b lies at 128..144: cut the file in the middle of it.
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..136]).unwrap();
    let e = load_error(&path);
    assert!(e.contains("\"b\"") && e.contains("model.onnx.data") && e.contains("past the end"), "{e}");
    // No length given: the rest of the file is taken, and must fit the shape.
    let (mut m, _, _) = gemm_model();
    external(&mut m.graph.as_mut().unwrap().initializer[1], "model.onnx.data", Some(128), None);
    write_model(&m, &dir.join("nolength.onnx")).unwrap();
    let e = load_error(&dir.join("nolength.onnx"));
    assert!(e.contains("\"b\"") && e.contains("8 bytes") && e.contains("16 bytes"), "{e}");
    // An offset past the end of the file.
    let (mut m, _, _) = gemm_model();
    external(&mut m.graph.as_mut().unwrap().initializer[1], "model.onnx.data", Some(1 << 40), None);
    write_model(&m, &dir.join("offset.onnx")).unwrap();
    let e = load_error(&dir.join("offset.onnx"));
    assert!(e.contains("\"b\"") && e.contains("past the end"), "{e}");
}

// ---------------------------------------------------------------- new operators

/// input [N, 1, 2, 3] (float) → [Cast to int64] → `op`(x, b) [with `attrs`] → Cast to float → Flatten.
fn binary_model(op: &str, attrs: Vec<AttributeProto>, integer: bool, b: TensorProto) -> ModelProto {
    let mut nodes = Vec::new();
    let x = if integer {
        nodes.push(node("Cast", &["input"], "xi", vec![int_attr("to", DataType::Int64 as i64)]));
        "xi"
    } else {
        "input"
    };
    nodes.push(node(op, &[x, "b"], "y", attrs));
    nodes.push(node("Cast", &["y"], "yf", vec![int_attr("to", DataType::Float as i64)]));
    nodes.push(node("Flatten", &["yf"], "logits", vec![int_attr("axis", 1)]));
    model(nodes, vec![b], [1, 2, 3], 13)
}

fn run(m: ModelProto, x: &[f32]) -> std::result::Result<Vec<f32>, String> {
    let g = TchGraph::from_proto(m, Device::Cpu).map_err(|e| e.to_string())?;
    let y = g.predict(&Tensor::from_slice(x).reshape([1, 1, 2, 3])).map_err(|e| e.to_string())?;
    Ok(values(&y))
}

/// Python's `%` (torch.remainder): the result takes the divisor's sign.
fn python_mod(a: i64, b: i64) -> i64 {
    ((a % b) + b) % b
}

#[test]
fn mod_follows_pytorch_remainder_and_fmod() {
    let a = [-7i64, 7, -8, 8, 0, -5];
    let b = [3i64, -3, 4];
    let x: Vec<f32> = a.iter().map(|&v| v as f32).collect();
    let divisor = || int64s("b", &[3], &b);
    // fmod = 0 (default, integers): torch.remainder, e.g. -7 % 3 = 2, 7 % -3 = -2.
    let want: Vec<f32> = a.iter().enumerate().map(|(i, &v)| python_mod(v, b[i % 3]) as f32).collect();
    assert_eq!(want, [2.0, -2.0, 0.0, 2.0, 0.0, 3.0]);
    assert_eq!(run(binary_model("Mod", vec![], true, divisor()), &x).unwrap(), want);
    // fmod = 1 on integers: torch.fmod (C fmod), the dividend's sign: -7 fmod 3 = -1.
    let want: Vec<f32> = a.iter().enumerate().map(|(i, &v)| (v % b[i % 3]) as f32).collect();
    assert_eq!(want, [-1.0, 1.0, 0.0, 2.0, 0.0, -1.0]);
    assert_eq!(run(binary_model("Mod", vec![int_attr("fmod", 1)], true, divisor()), &x).unwrap(), want);
    // fmod = 1 on floats: torch.fmod.
    let xf = [-7.5f32, 7.5, -8.25, 8.0, 0.5, -5.0];
    let bf = [2.0f32, -2.0, 3.0];
    let want: Vec<f32> = xf.iter().enumerate().map(|(i, &v)| v % bf[i % 3]).collect();
    assert_eq!(want, [-1.5, 1.5, -2.25, 0.0, 0.5, -2.0]);
    assert_eq!(run(binary_model("Mod", vec![int_attr("fmod", 1)], false, floats("b", &[3], &bf)), &xf).unwrap(), want);
    // fmod = 0 on floats is not valid ONNX; fmod outside {0, 1} is refused at load; so is x mod 0.
    let e = run(binary_model("Mod", vec![], false, floats("b", &[3], &bf)), &xf).unwrap_err();
    assert!(e.contains("fmod=1"), "{e}");
    let e = run(binary_model("Mod", vec![int_attr("fmod", 2)], true, divisor()), &x).unwrap_err();
    assert!(e.contains("fmod 2"), "{e}");
    let e = run(binary_model("Mod", vec![], true, int64s("b", &[3], &[3, 0, 1])), &x).unwrap_err();
    assert!(e.contains("by zero"), "{e}");
}

#[test]
fn integer_div_truncates_like_onnx_and_torch_trunc() {
    // ONNX Div on integers truncates toward zero (torch.div(rounding_mode="trunc")), as the
    // TorchScript export of nn.MultiheadAttention uses it for the head size.
    let a = [-7i64, 7, -8, 8, 0, -5];
    let b = [2i64, -2, 3];
    let x: Vec<f32> = a.iter().map(|&v| v as f32).collect();
    let want: Vec<f32> = a.iter().enumerate().map(|(i, &v)| (v / b[i % 3]) as f32).collect();
    assert_eq!(want, [-3.0, -3.0, -2.0, 4.0, 0.0, -1.0]);
    assert_eq!(run(binary_model("Div", vec![], true, int64s("b", &[3], &b)), &x).unwrap(), want);
    // Floats divide as before.
    let xf = [-7.0f32, 7.0, -8.0, 8.0, 0.0, -5.0];
    let want: Vec<f32> = xf.iter().enumerate().map(|(i, &v)| v / [2.0f32, -2.0, 3.0][i % 3]).collect();
    assert_eq!(run(binary_model("Div", vec![], false, floats("b", &[3], &[2.0, -2.0, 3.0])), &xf).unwrap(), want);
}

// ---------------------------------------------------------------- the model zoo

#[test]
fn every_zoo_export_loads_and_matches_pytorch() {
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(zoo.join("zoo.json")).expect("models/zoo/zoo.json (lab/zoo/make_zoo.py)"),
    )
    .unwrap();
    let norm = &manifest["normalization"];
    let (scale, mean, std) = (
        norm["scale"].as_f64().unwrap() as f32,
        norm["mean"][0].as_f64().unwrap() as f32,
        norm["std"][0].as_f64().unwrap() as f32,
    );
    let frames = read_idx_images(&zoo.join(manifest["shared"]["eval_clean_images"].as_str().unwrap())).unwrap();
    let models = manifest["models"].as_array().unwrap();
    assert!(models.len() >= 9, "{} models in the zoo", models.len());
    let mut checked = 0;
    for m in models {
        let name = m["name"].as_str().unwrap();
        let reference: Vec<Vec<f32>> = m["reference_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
            .collect();
        let n = reference.len();
        let pixels: Vec<f32> = (0..n)
            .flat_map(|i| frames.frame(i).iter().map(|&p| (p as f32 * scale - mean) / std).collect::<Vec<_>>())
            .collect();
        let x = Tensor::from_slice(&pixels).reshape([n as i64, 1, 28, 28]);
        for kind in ["folded", "bn", "dynamo"] {
            let file = zoo.join(m["files"][kind].as_str().unwrap());
            // A batch of n frames, also through the exports that pinned a batch of 1 (`fixed_batch`).
            let graph = TchGraph::load(&file, Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let got = values(&graph.predict(&x).unwrap());
            let want: Vec<f32> = reference.iter().flatten().copied().collect();
            assert_eq!(got.len(), want.len(), "{name} {kind}");
            let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            eprintln!("{name} {kind}: max |Δlogit| {d:.1e} vs PyTorch");
            assert!(d <= 1e-3, "{name} {kind}: max |Δlogit| {d} vs PyTorch");
            // The plan's batch axis is symbolic whatever the export pinned.
            let plan = decluttered(&read_model(&file).unwrap(), FrameShape::new(1, 28, 28), name)
                .unwrap_or_else(|e| panic!("{name} {kind}: {e}"));
            let out = format!("{:?}", plan.output_fact(0).unwrap().shape);
            assert!(out.starts_with(BATCH_SYMBOL), "{name} {kind}: the plan gives {out}");
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * models.len());
    assert!(models.iter().any(|m| m["fixed_batch"] == true), "the zoo holds a fixed-batch export");
}
