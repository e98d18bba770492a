//! ONNX operators as libtorch calls. Each node is parsed once into an [`Op`]
//! (attributes checked up front) and evaluated with the fallible `f_*` tch
//! API, so a shape error names its node instead of aborting the process.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};
use tract_onnx::pb::{attribute_proto::AttributeType, NodeProto};

use super::proto::tensor_from_proto;
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
    Conv { window: Window, groups: i64 },
    Gemm { alpha: f64, beta: f64, trans_a: bool, trans_b: bool },
    MatMul,
    Add,
    Sub,
    Mul,
    Div,
    Relu,
    Sigmoid,
    Clip { min: Option<f64>, max: Option<f64> },
    Softmax { axis: i64 },
    BatchNorm { epsilon: f64, momentum: f64 },
    MaxPool { window: Window, ceil_mode: bool },
    AveragePool { window: Window, ceil_mode: bool, count_include_pad: bool },
    GlobalAveragePool,
    Flatten { axis: i64 },
    Reshape { allow_zero: bool },
    Transpose { perm: Option<Vec<i64>> },
    Concat { axis: i64 },
    Identity,
    Dropout { ratio: Option<f64> },
}

/// Operator types the interpreter implements (plus Constant, folded at load).
pub(crate) const SUPPORTED: &[&str] = &[
    "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Clip", "Softmax",
    "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape",
    "Transpose", "Concat", "Identity", "Dropout", "Constant",
];

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
    let kernel = if with_kernel { Some(a.pair("kernel_shape", 1)?) } else { a.ints("kernel_shape").map(|_| a.pair("kernel_shape", 1)).transpose()? };
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
    Ok(Window { kernel, strides: a.pair("strides", 1)?, dilations: a.pair("dilations", 1)?, pads, auto_pad })
}

impl Op {
    /// Parses a node (not Constant). `Ok(None)` means the op type is unsupported.
    pub(crate) fn parse(node: &NodeProto, opset: i64) -> Result<Option<Op>> {
        let a = Attrs::new(node);
        Ok(Some(match node.op_type.as_str() {
            "Conv" => Op::Conv { window: window(&a, false)?, groups: a.int("group", 1) },
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
            "BatchNormalization" => Op::BatchNorm { epsilon: a.float("epsilon", 1e-5), momentum: a.float("momentum", 0.9) },
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
            "Dropout" => Op::Dropout { ratio: (opset < 12).then(|| a.float("ratio", 0.5)) },
            _ => return Ok(None),
        }))
    }

    /// Evaluates the op. `inputs[i]` is `None` for an omitted optional input.
    pub(crate) fn eval(&self, inputs: &[Option<Tensor>], train: bool) -> std::result::Result<Tensor, String> {
        let input = |i: usize| -> std::result::Result<&Tensor, String> {
            inputs.get(i).and_then(|t| t.as_ref()).ok_or_else(|| format!("missing input {i}"))
        };
        let optional = |i: usize| inputs.get(i).and_then(|t| t.as_ref());
        let t = |r: std::result::Result<Tensor, tch::TchError>| r.map_err(|e| e.to_string());
        let x = input(0)?;
        match self {
            Op::Conv { window, groups } => {
                let w = input(1)?;
                let ks = w.size();
                if ks.len() != 4 || x.dim() != 4 {
                    return Err(format!("only 2-D convolutions are supported (input rank {}, weight rank {})", x.dim(), ks.len()));
                }
                let (x, padding) = pad_for(x, window, [ks[2], ks[3]], 0.0)?;
                t(x.f_conv2d(w, optional(2), window.strides, padding, window.dilations, *groups))
            }
            Op::Gemm { alpha, beta, trans_a, trans_b } => {
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
            Op::MatMul => t(x.f_matmul(input(1)?)),
            Op::Add => t(x.f_add(input(1)?)),
            Op::Sub => t(x.f_sub(input(1)?)),
            Op::Mul => t(x.f_mul(input(1)?)),
            Op::Div => t(x.f_div(input(1)?)),
            Op::Relu => t(x.f_relu()),
            Op::Sigmoid => t(x.f_sigmoid()),
            Op::Clip { min, max } => {
                let bound = |attr: &Option<f64>, i: usize| -> std::result::Result<Option<f64>, String> {
                    match (attr, optional(i)) {
                        (Some(v), _) => Ok(Some(*v)),
                        (None, Some(b)) => Ok(Some(t(b.f_to_kind(Kind::Double))?.double_value(&[]))),
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
            Op::Softmax { axis } => t(x.f_softmax(*axis, Kind::Float)),
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
                let (x, padding) = pad_for(x, window, k, f64::NEG_INFINITY)?;
                t(x.f_max_pool2d(k, window.strides, padding, window.dilations, *ceil_mode))
            }
            Op::AveragePool { window, ceil_mode, count_include_pad } => {
                let k = window.kernel.expect("parsed with kernel");
                if window.dilations != [1, 1] {
                    return Err("dilated AveragePool is not supported".into());
                }
                let (x, padding) = pad_for(x, window, k, 0.0)?;
                if padding == [0, 0] && window.pads.iter().any(|(b, e)| b != e) && !count_include_pad {
                    return Err("asymmetric pads with count_include_pad=0 are not supported".into());
                }
                t(x.f_avg_pool2d(k, window.strides, padding, *ceil_mode, *count_include_pad, None::<i64>))
            }
            Op::GlobalAveragePool => {
                let dims: Vec<i64> = (2..x.dim() as i64).collect();
                t(x.f_mean_dim(dims.as_slice(), true, Kind::Float))
            }
            Op::Flatten { axis } => {
                let size = x.size();
                let axis = if *axis < 0 { *axis + size.len() as i64 } else { *axis } as usize;
                let outer: i64 = size[..axis].iter().product();
                t(x.f_reshape([outer, -1]))
            }
            Op::Reshape { allow_zero } => {
                let shape = int_values(input(1)?)?;
                let size = x.size();
                let shape: Vec<i64> = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if d == 0 && !allow_zero { size.get(i).copied().unwrap_or(0) } else { d })
                    .collect();
                t(x.f_reshape(shape.as_slice()))
            }
            Op::Transpose { perm } => {
                let perm = perm.clone().unwrap_or_else(|| (0..x.dim() as i64).rev().collect());
                t(x.f_permute(perm.as_slice()))
            }
            Op::Concat { axis } => {
                let all: Vec<&Tensor> = inputs.iter().flatten().collect();
                t(Tensor::f_cat(&all, *axis))
            }
            Op::Identity => Ok(x.shallow_clone()),
            Op::Dropout { ratio } => {
                if !train {
                    return Ok(x.shallow_clone());
                }
                let ratio = match (ratio, optional(1)) {
                    (Some(r), _) => *r,
                    (None, Some(r)) => t(r.f_to_kind(Kind::Double))?.double_value(&[]),
                    (None, None) => 0.5,
                };
                t(x.f_dropout(ratio, true))
            }
        }
    }
}

/// Integer values of a (shape-like) tensor.
pub(crate) fn int_values(t: &Tensor) -> std::result::Result<Vec<i64>, String> {
    let flat = t.f_to_kind(Kind::Int64).and_then(|t| t.f_flatten(0, -1)).map_err(|e| e.to_string())?;
    Vec::<i64>::try_from(&flat).map_err(|e| e.to_string())
}

/// Resolves auto_pad and asymmetric pads: returns the (possibly explicitly
/// padded) input and the symmetric padding left for the op itself.
fn pad_for(x: &Tensor, w: &Window, kernel: [i64; 2], value: f64) -> std::result::Result<(Tensor, [i64; 2]), String> {
    let size = x.size();
    let mut pads = w.pads;
    match w.auto_pad {
        AutoPad::NotSet => {}
        AutoPad::Valid => pads = [(0, 0); 2],
        AutoPad::SameUpper | AutoPad::SameLower => {
            for d in 0..2 {
                let input = size[2 + d];
                let out = (input + w.strides[d] - 1) / w.strides[d];
                let total = ((out - 1) * w.strides[d] + (kernel[d] - 1) * w.dilations[d] + 1 - input).max(0);
                let small = total / 2;
                pads[d] = if w.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
            }
        }
    }
    if pads.iter().all(|(b, e)| b == e) {
        return Ok((x.shallow_clone(), [pads[0].0, pads[1].0]));
    }
    // torch pads the last axis first.
    let spec = [pads[1].0, pads[1].1, pads[0].0, pads[0].1];
    let padded = x.f_pad(spec, "constant", Some(value)).map_err(|e| e.to_string())?;
    Ok((padded, [0, 0]))
}
