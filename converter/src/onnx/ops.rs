//! ONNX operators as libtorch calls. Each node is parsed once into an [`Op`]
//! (attributes checked up front) and evaluated with the fallible `f_*` tch
//! API, so a shape error names its node instead of aborting the process.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};
use tract_onnx::pb::{attribute_proto::AttributeType, NodeProto};

use super::limits::elements;
use super::tensors::tensor_from_proto;
use crate::{Error, Result};

/// Spatial window settings shared by Conv and the pools (2-D only).
#[derive(Debug, Clone)]
pub(crate) struct Window {
    kernel: Option<[i64; 2]>,
    strides: [i64; 2],
    dilations: [i64; 2],
    /// (begin, end) per spatial axis.
    pads: [(i64, i64); 2],
    auto_pad: AutoPad,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

#[derive(Debug)]
pub(crate) enum Op {
    Conv {
        window: Window,
        groups: i64,
    },
    Gemm {
        alpha: f64,
        beta: f64,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    Add,
    Sub,
    Mul,
    Div,
    Relu,
    Sigmoid,
    Clip {
        min: Option<f64>,
        max: Option<f64>,
    },
    Softmax {
        axis: i64,
    },
    BatchNorm {
        epsilon: f64,
        momentum: f64,
    },
    MaxPool {
        window: Window,
        ceil_mode: bool,
    },
    AveragePool {
        window: Window,
        ceil_mode: bool,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    Flatten {
        axis: i64,
    },
    Reshape {
        allow_zero: bool,
    },
    Transpose {
        perm: Option<Vec<i64>>,
    },
    Concat {
        axis: i64,
    },
    Identity,
    Dropout {
        ratio: Option<f64>,
    },
    HardSwish,
    HardSigmoid {
        alpha: f64,
        beta: f64,
    },
    Gelu {
        tanh: bool,
    },
    Erf,
    Tanh,
    Neg,
    Sqrt,
    Pow,
    Exp,
    Reciprocal,
    /// `axes` from the attribute (before opset 18) or, when `None`, the optional second input.
    ReduceMean {
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    LayerNorm {
        axis: i64,
        epsilon: f64,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Gather {
        axis: i64,
    },
    /// `axes` from the attribute (before opset 13) or the second input.
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Slice,
    ConstantOfShape {
        value: Tensor,
    },
    Expand,
    Cast {
        to: Kind,
    },
    Equal,
    Where,
    /// `fmod`: C `fmod` (the result takes the dividend's sign); otherwise integer
    /// modulo whose result takes the divisor's sign (Python's `%`).
    Mod {
        fmod: bool,
    },
}

/// Operator types the interpreter implements (plus Constant, folded at load).
pub(crate) const SUPPORTED: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Sigmoid",
    "Clip",
    "Softmax",
    "BatchNormalization",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Identity",
    "Dropout",
    "Constant",
    "HardSwish",
    "HardSigmoid",
    "Gelu",
    "Erf",
    "Tanh",
    "Neg",
    "Sqrt",
    "Pow",
    "Exp",
    "Reciprocal",
    "ReduceMean",
    "LayerNormalization",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Slice",
    "ConstantOfShape",
    "Expand",
    "Cast",
    "Equal",
    "Where",
    "Mod",
];

/// ONNX TensorProto data types as libtorch kinds.
fn kind_of(onnx_type: i64) -> Option<Kind> {
    Some(match onnx_type {
        1 => Kind::Float,
        2 => Kind::Uint8,
        3 => Kind::Int8,
        5 => Kind::Int16,
        6 => Kind::Int,
        7 => Kind::Int64,
        9 => Kind::Bool,
        10 => Kind::Half,
        11 => Kind::Double,
        _ => return None,
    })
}

/// Attributes of one node by name.
pub(crate) struct Attrs<'a> {
    node: &'a NodeProto,
    map: BTreeMap<&'a str, &'a tract_onnx::pb::AttributeProto>,
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(node: &'a NodeProto) -> Self {
        Attrs { node, map: node.attribute.iter().map(|a| (a.name.as_str(), a)).collect() }
    }

    pub(crate) fn error(&self, reason: impl ToString) -> Error {
        Error::Node { node: node_name(self.node), op: self.node.op_type.clone(), reason: reason.to_string() }
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.map.get(name).map_or(default, |a| a.i)
    }

    fn float(&self, name: &str, default: f64) -> f64 {
        self.map.get(name).map_or(default, |a| a.f as f64)
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.map.get(name).map(|a| a.ints.clone())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.map.get(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    fn pair(&self, name: &str, default: i64) -> Result<[i64; 2]> {
        match self.ints(name) {
            None => Ok([default; 2]),
            Some(v) if v.len() == 2 => Ok([v[0], v[1]]),
            Some(v) => Err(self.error(format!("{name} {v:?}: only 2-D windows are supported"))),
        }
    }

    /// The value of a Constant node.
    pub(crate) fn constant_value(&self) -> Result<Tensor> {
        let a = self.map.values().next().ok_or_else(|| self.error("Constant without a value"))?;
        match AttributeType::try_from(a.r#type).unwrap_or(AttributeType::Undefined) {
            AttributeType::Tensor => {
                let t = a.t.as_ref().ok_or_else(|| self.error("empty tensor value"))?;
                tensor_from_proto(t).map_err(|e| self.error(e))
            }
            AttributeType::Float => Ok(Tensor::from(a.f)),
            AttributeType::Int => Ok(Tensor::from(a.i)),
            AttributeType::Floats => Ok(Tensor::from_slice(&a.floats)),
            AttributeType::Ints => Ok(Tensor::from_slice(&a.ints)),
            _ => Err(self.error(format!("Constant attribute {:?} is not supported", a.name))),
        }
    }
}

pub(crate) fn node_name(node: &NodeProto) -> String {
    if node.name.is_empty() {
        format!("<unnamed, output {}>", node.output.first().map_or("?", |s| s.as_str()))
    } else {
        node.name.clone()
    }
}

fn window(a: &Attrs, with_kernel: bool) -> Result<Window> {
    let kernel = if with_kernel {
        Some(a.pair("kernel_shape", 1)?)
    } else {
        a.ints("kernel_shape").map(|_| a.pair("kernel_shape", 1)).transpose()?
    };
    let pads = match a.ints("pads") {
        None => [(0, 0); 2],
        Some(p) if p.len() == 4 => [(p[0], p[2]), (p[1], p[3])],
        Some(p) => return Err(a.error(format!("pads {p:?}: only 2-D windows are supported"))),
    };
    let auto_pad = match a.string("auto_pad").as_deref() {
        None | Some("NOTSET") | Some("") => AutoPad::NotSet,
        Some("VALID") => AutoPad::Valid,
        Some("SAME_UPPER") => AutoPad::SameUpper,
        Some("SAME_LOWER") => AutoPad::SameLower,
        Some(other) => return Err(a.error(format!("auto_pad {other:?} is not an ONNX value"))),
    };
    let w = Window { kernel, strides: a.pair("strides", 1)?, dilations: a.pair("dilations", 1)?, pads, auto_pad };
    if let Some(k) = w.kernel.filter(|k| k.iter().any(|&v| v < 1)) {
        return Err(a.error(format!("kernel_shape {k:?}: every kernel dim must be ≥ 1")));
    }
    if w.strides.iter().any(|&v| v < 1) {
        return Err(a.error(format!("strides {:?}: every stride must be ≥ 1", w.strides)));
    }
    if w.dilations.iter().any(|&v| v < 1) {
        return Err(a.error(format!("dilations {:?}: every dilation must be ≥ 1", w.dilations)));
    }
    if w.pads.iter().any(|&(b, e)| b < 0 || e < 0) {
        return Err(a.error(format!("pads {:?}: every pad must be ≥ 0", a.ints("pads").unwrap_or_default())));
    }
    Ok(w)
}

/// How many leading inputs an op cannot do without.
fn required_inputs(op_type: &str, opset: i64) -> usize {
    match op_type {
        "Conv" | "Gemm" | "MatMul" | "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Equal" | "Mod" | "Reshape" | "Gather"
        | "Expand" | "LayerNormalization" => 2,
        "Unsqueeze" if opset >= 13 => 2,
        "Slice" | "Where" => 3,
        "BatchNormalization" => 5,
        _ => 1,
    }
}

impl Op {
    /// Parses a node (not Constant). `Ok(None)` means the op type is unsupported.
    pub(crate) fn parse(node: &NodeProto, opset: i64) -> Result<Option<Op>> {
        let a = Attrs::new(node);
        if node.output.first().is_none_or(|o| o.is_empty()) {
            return Err(a.error("the node has no output"));
        }
        let required = required_inputs(&node.op_type, opset);
        if let Some(i) = (0..required).find(|&i| node.input.get(i).is_none_or(|n| n.is_empty())) {
            return Err(a.error(format!("input {i} is missing; the op needs {required} input(s)")));
        }
        Ok(Some(match node.op_type.as_str() {
            "Conv" => {
                let groups = a.int("group", 1);
                if groups < 1 {
                    return Err(a.error(format!("group {groups}: must be ≥ 1")));
                }
                Op::Conv { window: window(&a, false)?, groups }
            }
            "Gemm" => Op::Gemm {
                alpha: a.float("alpha", 1.0),
                beta: a.float("beta", 1.0),
                trans_a: a.int("transA", 0) != 0,
                trans_b: a.int("transB", 0) != 0,
            },
            "MatMul" => Op::MatMul,
            "Add" => Op::Add,
            "Sub" => Op::Sub,
            "Mul" => Op::Mul,
            "Div" => Op::Div,
            "Relu" => Op::Relu,
            "Sigmoid" => Op::Sigmoid,
            "Clip" => Op::Clip {
                min: (opset < 11).then(|| a.float("min", f32::MIN as f64)),
                max: (opset < 11).then(|| a.float("max", f32::MAX as f64)),
            },
            "Softmax" => Op::Softmax { axis: a.int("axis", if opset < 13 { 1 } else { -1 }) },
            "BatchNormalization" => {
                if a.int("training_mode", 0) != 0 {
                    return Err(a.error("training_mode=1 (batch statistics at inference) is not supported"));
                }
                Op::BatchNorm { epsilon: a.float("epsilon", 1e-5), momentum: a.float("momentum", 0.9) }
            }
            "MaxPool" => {
                if a.int("storage_order", 0) != 0 {
                    return Err(a.error("storage_order=1 is not supported"));
                }
                Op::MaxPool { window: window(&a, true)?, ceil_mode: a.int("ceil_mode", 0) != 0 }
            }
            "AveragePool" => Op::AveragePool {
                window: window(&a, true)?,
                ceil_mode: a.int("ceil_mode", 0) != 0,
                count_include_pad: a.int("count_include_pad", 0) != 0,
            },
            "GlobalAveragePool" => Op::GlobalAveragePool,
            "Flatten" => Op::Flatten { axis: a.int("axis", 1) },
            "Reshape" => Op::Reshape { allow_zero: a.int("allowzero", 0) != 0 },
            "Transpose" => Op::Transpose { perm: a.ints("perm") },
            "Concat" => Op::Concat { axis: a.int("axis", 0) },
            "Identity" => Op::Identity,
            "Dropout" => {
                let ratio = (opset < 12).then(|| a.float("ratio", 0.5));
                if let Some(r) = ratio.filter(|r| !(0.0..1.0).contains(r)) {
                    return Err(a.error(format!("ratio {r}: must be in [0, 1)")));
                }
                Op::Dropout { ratio }
            }
            "HardSwish" => Op::HardSwish,
            "HardSigmoid" => Op::HardSigmoid { alpha: a.float("alpha", 0.2), beta: a.float("beta", 0.5) },
            "Gelu" => Op::Gelu {
                tanh: match a.string("approximate").as_deref() {
                    None | Some("none") => false,
                    Some("tanh") => true,
                    Some(other) => return Err(a.error(format!("approximate {other:?} is not an ONNX value"))),
                },
            },
            "Erf" => Op::Erf,
            "Tanh" => Op::Tanh,
            "Neg" => Op::Neg,
            "Sqrt" => Op::Sqrt,
            "Pow" => Op::Pow,
            "Exp" => Op::Exp,
            "Reciprocal" => Op::Reciprocal,
            "ReduceMean" => Op::ReduceMean {
                axes: if opset < 18 { Some(a.ints("axes").unwrap_or_default()) } else { None },
                keepdims: a.int("keepdims", 1) != 0,
                noop_with_empty_axes: a.int("noop_with_empty_axes", 0) != 0,
            },
            "LayerNormalization" => {
                if a.int("stash_type", 1) != 1 {
                    return Err(a.error("stash_type other than float is not supported"));
                }
                Op::LayerNorm { axis: a.int("axis", -1), epsilon: a.float("epsilon", 1e-5) }
            }
            "Shape" => Op::Shape { start: a.int("start", 0), end: a.map.get("end").map(|e| e.i) },
            "Gather" => Op::Gather { axis: a.int("axis", 0) },
            "Unsqueeze" => {
                Op::Unsqueeze { axes: if opset < 13 { Some(a.ints("axes").unwrap_or_default()) } else { None } }
            }
            "Squeeze" => Op::Squeeze { axes: if opset < 13 { a.ints("axes") } else { None } },
            "Slice" => {
                if opset < 10 {
                    return Err(a.error("Slice before opset 10 (attribute form) is not supported"));
                }
                Op::Slice
            }
            "ConstantOfShape" => {
                let value = match a.map.get("value").and_then(|v| v.t.as_ref()) {
                    Some(t) => tensor_from_proto(t)
                        .map_err(|e| a.error(e))?
                        .f_flatten(0, -1)
                        .map_err(|e| a.error(torch_reason(e)))?,
                    None => Tensor::from_slice(&[0f32]),
                };
                if value.numel() != 1 {
                    return Err(a.error(format!("value of shape {:?}: must hold exactly one element", value.size())));
                }
                Op::ConstantOfShape { value }
            }
            "Expand" => Op::Expand,
            "Cast" => {
                let to = a.int("to", 0);
                Op::Cast { to: kind_of(to).ok_or_else(|| a.error(format!("Cast to ONNX type {to} is not supported")))? }
            }
            "Equal" => Op::Equal,
            "Where" => Op::Where,
            "Mod" => match a.int("fmod", 0) {
                0 => Op::Mod { fmod: false },
                1 => Op::Mod { fmod: true },
                other => return Err(a.error(format!("fmod {other}: must be 0 or 1"))),
            },
            _ => return Ok(None),
        }))
    }

    /// Evaluates the op. `inputs[i]` is `None` for an omitted optional input.
    pub(crate) fn eval(&self, inputs: &[Option<Tensor>], train: bool) -> std::result::Result<Tensor, String> {
        let input = |i: usize| -> std::result::Result<&Tensor, String> {
            inputs.get(i).and_then(|t| t.as_ref()).ok_or_else(|| format!("missing input {i}"))
        };
        let optional = |i: usize| inputs.get(i).and_then(|t| t.as_ref());
        let t = |r: std::result::Result<Tensor, tch::TchError>| {
            let y = r.map_err(torch_reason)?;
            elements(&y.size()).map_err(|e| format!("result {e}"))?;
            Ok(y)
        };
        let x = input(0)?;
        if matches!(self, Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Pow | Op::Equal | Op::Where | Op::Mod { .. }) {
            let shapes: Vec<Vec<i64>> = inputs.iter().flatten().map(Tensor::size).collect();
            broadcast(&shapes.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        }
        match self {
            Op::Conv { window, groups } => {
                let w = input(1)?;
                let ks = w.size();
                if ks.len() != 4 || x.dim() != 4 {
                    return Err(format!(
                        "only 2-D convolutions are supported (input rank {}, weight rank {})",
                        x.dim(),
                        ks.len()
                    ));
                }
                let channels = x.size()[1];
                if ks[0] % groups != 0 || ks[1].checked_mul(*groups) != Some(channels) {
                    return Err(format!("group {groups}: weight {ks:?} does not fit an input of {channels} channels"));
                }
                if window.kernel.is_some_and(|k| k != [ks[2], ks[3]]) {
                    return Err(format!(
                        "kernel_shape {:?} differs from the weight's {:?}",
                        window.kernel.unwrap_or_default(),
                        &ks[2..]
                    ));
                }
                let (x, padding) = pad_for(x, window, [ks[2], ks[3]], 0.0, false)?;
                check_window_output(&x.size(), ks[0], [ks[2], ks[3]], window, padding, false)?;
                t(x.f_conv2d(w, optional(2), window.strides, padding, window.dilations, *groups))
            }
            Op::Gemm { alpha, beta, trans_a, trans_b } => {
                let (ra, rb) = (x.dim(), input(1)?.dim());
                if ra != 2 || rb != 2 {
                    return Err(format!("inputs A and B have ranks {ra} and {rb}; Gemm needs 2 and 2"));
                }
                let (sa, sb) = (x.size(), input(1)?.size());
                fits(&[sa[usize::from(*trans_a)], sb[usize::from(!*trans_b)]]).map_err(|e| format!("output {e}"))?;
                let a = if *trans_a { t(input(0)?.f_transpose(0, 1))? } else { input(0)?.shallow_clone() };
                let b = if *trans_b { t(input(1)?.f_transpose(0, 1))? } else { input(1)?.shallow_clone() };
                let mut y = t(a.f_matmul(&b))?;
                if *alpha != 1.0 {
                    y = t(y.f_mul_scalar(*alpha))?;
                }
                if let Some(c) = optional(2) {
                    let c = if *beta != 1.0 { t(c.f_mul_scalar(*beta))? } else { c.shallow_clone() };
                    y = t(y.f_add(&c))?;
                }
                Ok(y)
            }
            Op::MatMul => {
                let (sa, sb) = (x.size(), input(1)?.size());
                if sa.len() >= 2 && sb.len() >= 2 {
                    let mut out = broadcast(&[&sa[..sa.len() - 2], &sb[..sb.len() - 2]])?;
                    out.extend([sa[sa.len() - 2], sb[sb.len() - 1]]);
                    fits(&out).map_err(|e| format!("output {e}"))?;
                }
                t(x.f_matmul(input(1)?))
            }
            Op::Add => t(x.f_add(input(1)?)),
            Op::Sub => t(x.f_sub(input(1)?)),
            Op::Mul => t(x.f_mul(input(1)?)),
            // ONNX integer division truncates toward zero; libtorch's `div` would give floats.
            Op::Div if !x.is_floating_point() && !input(1)?.is_floating_point() => {
                t(x.f_div_tensor_mode(input(1)?, "trunc"))
            }
            Op::Div => t(x.f_div(input(1)?)),
            Op::Relu => t(x.f_relu()),
            Op::Sigmoid => t(x.f_sigmoid()),
            Op::Clip { min, max } => {
                let bound = |attr: &Option<f64>, i: usize| -> std::result::Result<Option<f64>, String> {
                    match (attr, optional(i)) {
                        (Some(v), _) => Ok(Some(*v)),
                        (None, Some(b)) => Ok(Some(scalar(if i == 1 { "min" } else { "max" }, b)?)),
                        (None, None) => Ok(None),
                    }
                };
                let (lo, hi) = (bound(min, 1)?, bound(max, 2)?);
                let y = match lo {
                    Some(lo) => t(x.f_clamp_min(lo))?,
                    None => x.shallow_clone(),
                };
                match hi {
                    Some(hi) => t(y.f_clamp_max(hi)),
                    None => Ok(y),
                }
            }
            Op::Softmax { axis } => t(x.f_softmax(normalize_axis(*axis, x.dim())? as i64, Kind::Float)),
            Op::BatchNorm { epsilon, momentum } => t(x.f_batch_norm(
                Some(input(1)?),
                Some(input(2)?),
                Some(input(3)?),
                Some(input(4)?),
                train,
                // ONNX keeps `momentum` of the old value; libtorch weighs the new batch.
                1.0 - momentum,
                *epsilon,
                false,
            )),
            Op::MaxPool { window, ceil_mode } => {
                let k = window.kernel.expect("parsed with kernel");
                let (x, padding) = pad_for(x, window, k, f64::NEG_INFINITY, true)?;
                check_window_output(&x.size(), x.size()[1], k, window, padding, *ceil_mode)?;
                t(x.f_max_pool2d(k, window.strides, padding, window.dilations, *ceil_mode))
            }
            Op::AveragePool { window, ceil_mode, count_include_pad } => {
                let k = window.kernel.expect("parsed with kernel");
                if window.dilations != [1, 1] {
                    return Err("dilated AveragePool is not supported".into());
                }
                let (padded, padding) = pad_for(x, window, k, 0.0, true)?;
                check_window_output(&padded.size(), padded.size()[1], k, window, padding, *ceil_mode)?;
                let pool = |t: &Tensor, include_pad: bool| {
                    t.f_avg_pool2d(k, window.strides, padding, *ceil_mode, include_pad, None::<i64>)
                };
                if padded.size() == x.size() || *count_include_pad {
                    return t(pool(&padded, *count_include_pad));
                }
                // Asymmetric pads were added as zeros, which avg_pool2d would
                // count: divide the windows' sums by their share of real pixels.
                let size = x.size();
                let ones = Tensor::f_ones([1, 1, size[2], size[3]], (x.kind(), x.device())).map_err(torch_reason)?;
                let (real, _) = pad_for(&ones, window, k, 0.0, true)?;
                t(pool(&padded, true).and_then(|sum| sum.f_div(&pool(&real, true)?)))
            }
            Op::GlobalAveragePool => {
                if x.dim() < 3 {
                    return Err(format!(
                        "input rank {}: GlobalAveragePool needs N, C and at least one spatial axis",
                        x.dim()
                    ));
                }
                let dims: Vec<i64> = (2..x.dim() as i64).collect();
                t(x.f_mean_dim(dims.as_slice(), true, Kind::Float))
            }
            Op::Flatten { axis } => {
                let size = x.size();
                let rank = size.len() as i64;
                // ONNX allows [-rank, rank]: the axis may be the rank itself (all into the outer dim).
                if *axis < -rank || *axis > rank {
                    return Err(format!("axis {axis} is out of range for rank {rank}"));
                }
                let axis = (if *axis < 0 { *axis + rank } else { *axis }) as usize;
                let outer: i64 = size[..axis].iter().product();
                t(x.f_reshape([outer, -1]))
            }
            Op::Reshape { allow_zero } => {
                let shape = int_values(input(1)?)?;
                if shape.iter().any(|&d| d < -1) || shape.iter().filter(|&&d| d == -1).count() > 1 {
                    return Err(format!("shape {shape:?}: dims must be ≥ 0, with at most one -1"));
                }
                let size = x.size();
                let shape: Vec<i64> = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if d == 0 && !allow_zero { size.get(i).copied().unwrap_or(0) } else { d })
                    .collect();
                let known: Vec<i64> = shape.iter().copied().filter(|&d| d != -1).collect();
                fits(&known)?;
                t(x.f_reshape(shape.as_slice()))
            }
            Op::Transpose { perm } => {
                let perm = perm.clone().unwrap_or_else(|| (0..x.dim() as i64).rev().collect());
                let mut sorted = perm.clone();
                sorted.sort_unstable();
                if sorted != (0..x.dim() as i64).collect::<Vec<_>>() {
                    return Err(format!("perm {perm:?} is not a permutation of the input's {} axes", x.dim()));
                }
                t(x.f_permute(perm.as_slice()))
            }
            Op::Concat { axis } => {
                let all: Vec<&Tensor> = inputs.iter().flatten().collect();
                let axis = normalize_axis(*axis, x.dim())?;
                t(Tensor::f_cat(&all, axis as i64))
            }
            Op::Identity => Ok(x.shallow_clone()),
            Op::Dropout { ratio } => {
                if !train {
                    if let Some(mode) = optional(2) {
                        if int_values(mode)?.iter().any(|&m| m != 0) {
                            return Err("training_mode true draws a random mask at inference; not supported".into());
                        }
                    }
                    return Ok(x.shallow_clone());
                }
                let ratio = match (ratio, optional(1)) {
                    (Some(r), _) => *r,
                    (None, Some(r)) => scalar("ratio", r)?,
                    (None, None) => 0.5,
                };
                if !(0.0..1.0).contains(&ratio) {
                    return Err(format!("ratio {ratio}: must be in [0, 1)"));
                }
                t(x.f_dropout(ratio, true))
            }
            Op::HardSwish => t(x.f_hardswish()),
            Op::HardSigmoid { alpha, beta } => {
                t(x.f_mul_scalar(*alpha).and_then(|y| y.f_add_scalar(*beta)).and_then(|y| y.f_clamp(0.0, 1.0)))
            }
            Op::Gelu { tanh } => t(x.f_gelu(if *tanh { "tanh" } else { "none" })),
            Op::Erf => t(x.f_erf()),
            Op::Tanh => t(x.f_tanh()),
            Op::Neg => t(x.f_neg()),
            Op::Sqrt => t(x.f_sqrt()),
            Op::Pow => t(x.f_pow(input(1)?)),
            Op::Exp => t(x.f_exp()),
            Op::Reciprocal => t(x.f_reciprocal()),
            Op::ReduceMean { axes, keepdims, noop_with_empty_axes } => {
                let axes = match (axes, optional(1)) {
                    (Some(a), _) => a.clone(),
                    (None, Some(a)) => int_values(a)?,
                    (None, None) => vec![],
                };
                if axes.is_empty() {
                    if *noop_with_empty_axes {
                        return Ok(x.shallow_clone());
                    }
                    let all: Vec<i64> = (0..x.dim() as i64).collect();
                    return t(x.f_mean_dim(all.as_slice(), *keepdims, x.kind()));
                }
                let axes: Vec<i64> = distinct_axes("axes", &axes, x.dim())?.into_iter().map(|a| a as i64).collect();
                t(x.f_mean_dim(axes.as_slice(), *keepdims, x.kind()))
            }
            Op::LayerNorm { axis, epsilon } => {
                let size = x.size();
                let axis = normalize_axis(*axis, size.len())?;
                t(x.f_layer_norm(&size[axis..], Some(input(1)?), optional(2), *epsilon, false))
            }
            Op::Shape { start, end } => {
                let size = x.size();
                let rank = size.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let (b, e) = (clamp(*start), clamp(end.unwrap_or(rank)));
                t(Tensor::from_slice(&size[b..e.max(b)]).f_to_device(x.device()))
            }
            Op::Gather { axis } => {
                let indices = input(1)?;
                let size = x.size();
                let axis = normalize_axis(*axis, size.len())?;
                let values = int_values(indices)?;
                if let Some(i) = values.iter().find(|&&i| i < -size[axis] || i >= size[axis]) {
                    return Err(format!("index {i} is out of range for axis {axis} of size {}", size[axis]));
                }
                let out: Vec<i64> =
                    size[..axis].iter().chain(indices.size().iter()).chain(size[axis + 1..].iter()).copied().collect();
                fits(&out).map_err(|e| format!("output {e}"))?;
                if values.is_empty() {
                    return t(Tensor::f_zeros(out.as_slice(), (x.kind(), x.device())));
                }
                // Negative indices count from the end.
                let idx = t(indices
                    .f_to_kind(Kind::Int64)
                    .and_then(|i| i.f_remainder(size[axis]))
                    .and_then(|i| i.f_to_device(x.device())))?;
                if idx.dim() == 0 {
                    return t(x.f_select(axis as i64, values[0]));
                }
                let picked = t(x.f_index_select(axis as i64, &t(idx.f_flatten(0, -1))?))?;
                let shape: Vec<i64> =
                    size[..axis].iter().chain(idx.size().iter()).chain(size[axis + 1..].iter()).copied().collect();
                t(picked.f_reshape(shape.as_slice()))
            }
            Op::Unsqueeze { axes } => {
                let axes = match axes {
                    Some(a) => a.clone(),
                    None => int_values(input(1)?)?,
                };
                let axes = distinct_axes("axes", &axes, x.dim() + axes.len())?;
                let mut y = x.shallow_clone();
                for a in axes {
                    y = t(y.f_unsqueeze(a as i64))?;
                }
                Ok(y)
            }
            Op::Squeeze { axes } => {
                let axes = match (axes, optional(1)) {
                    (Some(a), _) => a.clone(),
                    (None, Some(a)) => int_values(a)?,
                    (None, None) => return t(x.f_squeeze()),
                };
                let mut axes = distinct_axes("axes", &axes, x.dim())?;
                if let Some(&a) = axes.iter().find(|&&a| x.size()[a] != 1) {
                    return Err(format!("axes: axis {a} has size {}, not 1", x.size()[a]));
                }
                axes.reverse();
                let mut y = x.shallow_clone();
                for a in axes {
                    y = t(y.f_squeeze_dim(a as i64))?;
                }
                Ok(y)
            }
            Op::Slice => slice(x, &int_values(input(1)?)?, &int_values(input(2)?)?, optional(3), optional(4)),
            Op::ConstantOfShape { value } => {
                if x.dim() != 1 {
                    return Err(format!("shape input of rank {}: must be 1-D", x.dim()));
                }
                let shape = int_values(x)?;
                fits(&shape)?;
                t(value
                    .f_to_device(x.device())
                    .and_then(|v| v.f_reshape([0i64; 0].as_slice()))
                    .and_then(|v| v.f_expand(shape.as_slice(), false))
                    .and_then(|v| v.f_contiguous()))
            }
            Op::Expand => {
                let shape = int_values(input(1)?)?;
                let size = x.size();
                if shape.iter().any(|&d| d < 0) {
                    return Err(format!("shape {shape:?}: dims must be ≥ 0"));
                }
                // Bidirectional broadcast: the result has the larger rank and the larger of each pair.
                let target = broadcast(&[&size, &shape])?;
                t(x.f_expand(target.as_slice(), false))
            }
            Op::Cast { to } => t(x.f_to_kind(*to)),
            Op::Equal => t(x.f_eq_tensor(input(1)?)),
            Op::Where => t(input(1)?.f_where_self(x, input(2)?)),
            Op::Mod { fmod } => {
                let b = input(1)?;
                if *fmod {
                    t(x.f_fmod_tensor(b))
                } else if x.is_floating_point() || b.is_floating_point() {
                    Err("fmod=0 on floating-point inputs is not valid ONNX (it needs fmod=1)".into())
                } else if int_values(b)?.contains(&0) {
                    Err("integer Mod by zero".into())
                } else {
                    t(x.f_remainder_tensor(b))
                }
            }
        }
    }
}

fn normalize_axis(axis: i64, rank: usize) -> std::result::Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// ONNX Slice: per axis, `starts`/`ends` clamped to the axis, any step.
fn slice(
    x: &Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&Tensor>,
    steps: Option<&Tensor>,
) -> std::result::Result<Tensor, String> {
    let rank = x.dim();
    let axes = match axes {
        Some(a) => int_values(a)?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match steps {
        Some(s) => int_values(s)?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let mut y = x.shallow_clone();
    for i in 0..starts.len() {
        let axis = normalize_axis(axes[i], rank)?;
        let dim = y.size()[axis];
        let step = steps[i];
        if step == 0 {
            return Err("Slice step 0".into());
        }
        let resolve = |v: i64, lo: i64, hi: i64| (if v < 0 { v.saturating_add(dim) } else { v }).clamp(lo, hi);
        let index: Vec<i64> = if step > 0 {
            let (b, e) = (resolve(starts[i], 0, dim), resolve(ends[i], 0, dim));
            (b..e).step_by(step as usize).collect()
        } else {
            let (b, e) = (resolve(starts[i], -1, dim - 1), resolve(ends[i], -1, dim - 1));
            let mut v = Vec::new();
            let mut k = b;
            while k > e {
                v.push(k);
                k += step;
            }
            v
        };
        if step == 1 {
            let (b, n) = (index.first().copied().unwrap_or(0), index.len() as i64);
            y = y.f_narrow(axis as i64, b, n).map_err(torch_reason)?;
        } else {
            let idx = Tensor::from_slice(&index).to_device(y.device());
            y = y.f_index_select(axis as i64, &idx).map_err(torch_reason)?;
        }
    }
    Ok(y)
}

/// Integer values of a (shape-like) tensor.
pub(crate) fn int_values(t: &Tensor) -> std::result::Result<Vec<i64>, String> {
    let flat = t.f_to_kind(Kind::Int64).and_then(|t| t.f_flatten(0, -1)).map_err(torch_reason)?;
    Vec::<i64>::try_from(&flat).map_err(torch_reason)
}

/// Resolves auto_pad, asymmetric pads and (for a `pool`) pads wider than half the window:
/// returns the (possibly explicitly padded) input and the symmetric padding
/// left for the op itself.
fn pad_for(
    x: &Tensor,
    w: &Window,
    kernel: [i64; 2],
    value: f64,
    pool: bool,
) -> std::result::Result<(Tensor, [i64; 2]), String> {
    let size = x.size();
    if size.len() != 4 {
        return Err(format!("input rank {}: only 2-D windows (rank-4 NCHW input) are supported", size.len()));
    }
    let mut pads = w.pads;
    match w.auto_pad {
        AutoPad::NotSet => {}
        AutoPad::Valid => pads = [(0, 0); 2],
        AutoPad::SameUpper | AutoPad::SameLower => {
            for d in 0..2 {
                // In i128: strides, dilations and kernel are ≥ 1 but otherwise unbounded.
                let (input, s) = (size[2 + d] as i128, w.strides[d] as i128);
                let out = (input + s - 1) / s;
                let total = ((out - 1) * s + (kernel[d] as i128 - 1) * w.dilations[d] as i128 + 1 - input).max(0);
                let total = i64::try_from(total).map_err(|_| format!("auto_pad: padding {total} overflows"))?;
                let small = total / 2;
                pads[d] =
                    if w.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
            }
        }
    }
    // libtorch's pools (not its convolutions) take at most half the (dilated)
    // window of padding on a side.
    let within_half = |d: usize| !pool || pads[d].0 <= ((kernel[d] - 1).saturating_mul(w.dilations[d]) + 1) / 2;
    if pads.iter().all(|(b, e)| b == e) && within_half(0) && within_half(1) {
        return Ok((x.shallow_clone(), [pads[0].0, pads[1].0]));
    }
    let grown = |d: usize| size[2 + d].checked_add(pads[d].0).and_then(|v| v.checked_add(pads[d].1)).unwrap_or(-1);
    fits(&[size[0], size[1], grown(0), grown(1)]).map_err(|e| format!("padded input: {e}"))?;
    // torch pads the last axis first.
    let spec = [pads[1].0, pads[1].1, pads[0].0, pads[0].1];
    let padded = x.f_pad(spec, "constant", Some(value)).map_err(torch_reason)?;
    Ok((padded, [0, 0]))
}

/// A libtorch error as one line: tch appends libtorch's C++ stack trace
/// ("Exception raised from …", frame list), which is noise to a user.
pub(crate) fn torch_reason(e: tch::TchError) -> String {
    let text = e.to_string();
    text.lines().next().unwrap_or_default().trim_end().to_string()
}

/// A tensor of `shape` may be created: no negative dim, no overflow, within the element limit.
fn fits(shape: &[i64]) -> std::result::Result<(), String> {
    elements(shape).map(|_| ())
}

/// The multidirectional (numpy) broadcast of `shapes`, checked against the element limit.
fn broadcast(shapes: &[&[i64]]) -> std::result::Result<Vec<i64>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1i64; rank];
    for s in shapes {
        for (o, &d) in out[rank - s.len()..].iter_mut().zip(s.iter()) {
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} do not broadcast"));
            }
        }
    }
    fits(&out)?;
    Ok(out)
}

/// The one value of a scalar input (a one-element tensor is accepted too).
fn scalar(what: &str, t: &Tensor) -> std::result::Result<f64, String> {
    if elements(&t.size()) != Ok(1) {
        return Err(format!("{what} input of shape {:?} must be a scalar", t.size()));
    }
    t.f_to_kind(Kind::Double)
        .and_then(|v| v.f_flatten(0, -1))
        .and_then(|v| v.f_double_value(&[0]))
        .map_err(torch_reason)
}

/// `axes` normalised against `rank`, each at most once.
fn distinct_axes(what: &str, axes: &[i64], rank: usize) -> std::result::Result<Vec<usize>, String> {
    let mut out: Vec<usize> = axes
        .iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("{what} {axes:?}: an axis is repeated"));
    }
    Ok(out)
}

/// Checks a Conv / pool output of `channels` × the window's output size before libtorch allocates it.
fn check_window_output(
    size: &[i64],
    channels: i64,
    kernel: [i64; 2],
    w: &Window,
    padding: [i64; 2],
    ceil_mode: bool,
) -> std::result::Result<(), String> {
    let mut shape = vec![size[0], channels];
    for d in 0..2 {
        let effective = (w.dilations[d] as i128) * (kernel[d] as i128 - 1) + 1;
        let span = size[2 + d] as i128 + 2 * padding[d] as i128 - effective;
        if span < 0 {
            return Err(format!(
                "kernel {kernel:?} (dilations {:?}) is larger than the padded input {:?}",
                w.dilations,
                &size[2..]
            ));
        }
        let s = w.strides[d] as i128;
        let out = if ceil_mode { (span + s - 1) / s + 1 } else { span / s + 1 };
        shape.push(i64::try_from(out).map_err(|_| format!("output size {out} overflows"))?);
    }
    fits(&shape).map_err(|e| format!("output {e}"))
}
