//! Models exported with a fixed batch size: `torch.onnx.export(model, x,
//! path)` without `dynamic_axes` (the exporter's default) pins the batch of
//! the dummy input `x` into the graph input's shape and into every `Reshape`
//! that flattens features (`x.view(x.size(0), -1)` becomes the constant
//! `[1, -1]`). Fine-tuning runs batches of 64–128 and the plans take any
//! batch, so the batch axis is freed when the model is read: the input's
//! leading dimension becomes the batch symbol, and a constant Reshape shape
//! whose leading entry is the pinned batch, applied to a tensor computed from
//! the input, gets 0 there instead — ONNX's "copy this dimension from the
//! input" (without `allowzero`), which is the same model at the pinned batch
//! and the batch-generic model at every other.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{self, tensor_proto::DataType, ModelProto, NodeProto, TensorProto};

use badexpert_runtime::BATCH_SYMBOL;

use super::tensors::{dims_of, int64_values};

/// What [`free_batch_axis`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedBatch {
    /// The batch size the export pinned.
    pub size: i64,
    /// Reshape shapes that now take the batch from their input.
    pub reshapes: usize,
}

/// Frees a pinned batch axis (see the module documentation). `None` when the
/// graph's one data input already has a symbolic batch (or is not a single
/// input with a fixed leading dimension, which later checks report).
pub(crate) fn free_batch_axis(model: &mut ModelProto) -> Option<FixedBatch> {
    let graph = model.graph.as_mut()?;
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let data_inputs: Vec<usize> =
        (0..graph.input.len()).filter(|&i| !initializers.contains(graph.input[i].name.as_str())).collect();
    let [input] = data_inputs[..] else { return None };
    let size = leading_dim(&graph.input[input])?;
    let input_name = graph.input[input].name.clone();

    let mut constants: HashMap<String, Constant> =
        graph.initializer.iter().filter_map(|t| Some((t.name.clone(), Constant::from_tensor(t)?))).collect();
    let mut from_input: HashSet<String> = HashSet::from([input_name]);
    let mut freed = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        if node.input.iter().any(|i| from_input.contains(i)) {
            from_input.extend(node.output.iter().cloned());
        } else if let Some(c) = fold_constant(node, &constants) {
            if let Some(out) = node.output.first() {
                constants.insert(out.clone(), c);
            }
        }
        if node.op_type == "Reshape" && node.input.len() >= 2 && from_input.contains(&node.input[0]) {
            if let Some(Constant { values, rank: 1 }) = constants.get(&node.input[1]) {
                // With `allowzero` (the dynamo exporter sets it) a 0 is a real
                // empty dimension; without zeros the flag changes nothing and is dropped.
                if values.first() == Some(&size) && !(allows_zero(node) && values.contains(&0)) {
                    let mut unpinned = values.clone();
                    unpinned[0] = 0;
                    freed.push((index, unpinned));
                }
            }
        }
    }

    for (k, (index, shape)) in freed.iter().enumerate() {
        let name = format!("badexpert.batch_free_shape.{k}");
        graph.initializer.push(TensorProto {
            name: name.clone(),
            dims: vec![shape.len() as i64],
            data_type: DataType::Int64 as i32,
            int64_data: shape.clone(),
            ..Default::default()
        });
        let node = &mut graph.node[*index];
        node.input[1] = name;
        node.attribute.retain(|a| a.name != "allowzero");
    }
    set_leading_symbol(&mut graph.input[input]);
    for output in &mut graph.output {
        if leading_dim(output) == Some(size) {
            set_leading_symbol(output);
        }
    }
    Some(FixedBatch { size, reshapes: freed.len() })
}

/// An int64 constant of rank 0 or 1, as shape computations use.
#[derive(Debug, Clone)]
struct Constant {
    values: Vec<i64>,
    rank: usize,
}

impl Constant {
    fn from_tensor(t: &TensorProto) -> Option<Constant> {
        if t.data_type != DataType::Int64 as i32 || t.dims.len() > 1 {
            return None;
        }
        let values = int64_values(t);
        let expected = t.dims.first().map_or(Some(1), |&d| usize::try_from(d).ok())?;
        (values.len() == expected).then_some(Constant { values, rank: t.dims.len() })
    }
}

/// Evaluates the shape arithmetic exporters leave unfolded
/// (`do_constant_folding=False`): Constant, Identity, Unsqueeze of a scalar,
/// Concat of vectors, Cast to int64.
fn fold_constant(node: &NodeProto, constants: &HashMap<String, Constant>) -> Option<Constant> {
    let input = |i: usize| node.input.get(i).and_then(|n| constants.get(n));
    match node.op_type.as_str() {
        "Constant" => {
            let attr = node.attribute.iter().find(|a| a.name == "value")?;
            Constant::from_tensor(attr.t.as_ref()?)
        }
        "Identity" => input(0).cloned(),
        "Cast" if node.attribute.iter().any(|a| a.name == "to" && a.i == DataType::Int64 as i64) => input(0).cloned(),
        "Unsqueeze" => {
            let c = input(0)?;
            (c.rank == 0).then(|| Constant { values: c.values.clone(), rank: 1 })
        }
        "Concat" => {
            let parts: Option<Vec<&Constant>> = (0..node.input.len()).map(input).collect();
            let parts = parts?;
            parts
                .iter()
                .all(|c| c.rank == 1)
                .then(|| Constant { values: parts.iter().flat_map(|c| c.values.clone()).collect(), rank: 1 })
        }
        _ => None,
    }
}

fn allows_zero(node: &NodeProto) -> bool {
    node.attribute.iter().any(|a| a.name == "allowzero" && a.i != 0)
}

fn tensor_shape(info: &mut pb::ValueInfoProto) -> Option<&mut pb::TensorShapeProto> {
    let pb::type_proto::Value::TensorType(t) = info.r#type.as_mut()?.value.as_mut()?;
    t.shape.as_mut()
}

fn leading_dim(info: &pb::ValueInfoProto) -> Option<i64> {
    dims_of(info).first().copied().flatten()
}

fn set_leading_symbol(info: &mut pb::ValueInfoProto) {
    if let Some(first) = tensor_shape(info).and_then(|s| s.dim.first_mut()) {
        first.value = Some(pb::tensor_shape_proto::dimension::Value::DimParam(BATCH_SYMBOL.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::builder::value_info;

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn int64s(name: &str, dims: Vec<i64>, v: &[i64]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims,
            data_type: DataType::Int64 as i32,
            int64_data: v.to_vec(),
            ..Default::default()
        }
    }

    /// input [1, 4, 2, 2] → Reshape [1, -1] (an initializer), and a weight
    /// reshaped to [1, 4, 1, 1] that must stay as it is.
    fn pinned() -> ModelProto {
        ModelProto {
            graph: Some(pb::GraphProto {
                node: vec![node("Reshape", &["x", "shape"], "flat"), node("Reshape", &["w", "wshape"], "w4")],
                initializer: vec![
                    int64s("shape", vec![2], &[1, -1]),
                    int64s("wshape", vec![4], &[1, 4, 1, 1]),
                    TensorProto {
                        name: "w".into(),
                        dims: vec![4],
                        data_type: DataType::Float as i32,
                        float_data: vec![1.0; 4],
                        ..Default::default()
                    },
                ],
                input: vec![value_info("x", &[Some(1), Some(4), Some(2), Some(2)])],
                output: vec![value_info("flat", &[Some(1), Some(16)])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn shape_of(model: &ModelProto, node: usize) -> Vec<i64> {
        let g = model.graph.as_ref().unwrap();
        let name = &g.node[node].input[1];
        g.initializer.iter().find(|t| &t.name == name).unwrap().int64_data.clone()
    }

    #[test]
    fn a_pinned_flatten_takes_the_batch_from_its_input() {
        let mut model = pinned();
        assert_eq!(free_batch_axis(&mut model), Some(FixedBatch { size: 1, reshapes: 1 }));
        assert_eq!(shape_of(&model, 0), [0, -1]);
        assert_eq!(shape_of(&model, 1), [1, 4, 1, 1], "a weight's reshape is not the batch's");
        let g = model.graph.as_ref().unwrap();
        assert_eq!(leading_dim(&g.input[0]), None);
        assert_eq!(leading_dim(&g.output[0]), None);
        assert_eq!(free_batch_axis(&mut model), None, "a symbolic batch is left alone");
    }

    #[test]
    fn an_unfolded_shape_computation_is_evaluated() {
        let mut model = pinned();
        let g = model.graph.as_mut().unwrap();
        g.initializer.retain(|t| t.name != "shape");
        g.initializer.push(int64s("one", vec![], &[1]));
        g.initializer.push(int64s("minus_one", vec![], &[-1]));
        let unsqueezed = [
            node("Unsqueeze", &["one"], "a"),
            node("Unsqueeze", &["minus_one"], "b"),
            node("Concat", &["a", "b"], "shape"),
        ];
        g.node.splice(0..0, unsqueezed);
        assert_eq!(free_batch_axis(&mut model), Some(FixedBatch { size: 1, reshapes: 1 }));
        assert_eq!(shape_of(&model, 3), [0, -1]);
    }

    fn allow_zero(model: &mut ModelProto) {
        model.graph.as_mut().unwrap().node[0].attribute.push(pb::AttributeProto {
            name: "allowzero".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: 1,
            ..Default::default()
        });
    }

    #[test]
    fn allowzero_is_dropped_where_the_shape_has_no_zero() {
        let mut model = pinned();
        allow_zero(&mut model);
        assert_eq!(free_batch_axis(&mut model), Some(FixedBatch { size: 1, reshapes: 1 }));
        assert_eq!(shape_of(&model, 0), [0, -1]);
        assert!(model.graph.as_ref().unwrap().node[0].attribute.is_empty());
    }

    #[test]
    fn an_allowzero_shape_with_a_zero_is_kept() {
        let mut model = pinned();
        allow_zero(&mut model);
        let g = model.graph.as_mut().unwrap();
        g.initializer[0] = int64s("shape", vec![3], &[1, 0, -1]);
        assert_eq!(free_batch_axis(&mut model), Some(FixedBatch { size: 1, reshapes: 0 }));
        assert_eq!(shape_of(&model, 0), [1, 0, -1]);
    }
}
