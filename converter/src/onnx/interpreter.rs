//! An ONNX graph run with libtorch, node by node, so the suspect model can be
//! fine-tuned with autograd and written back to ONNX afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use tch::{nn, Device, Kind, Tensor};
use tract_onnx::pb::{self, ModelProto};

use super::ops::{node_name, Attrs, Op, SUPPORTED};
use super::proto::read_model;
use super::restored_norm::{Moments, RestoredNorm};
use super::tensors::{dims_of, tensor_from_proto, tensor_to_proto};
use crate::{Error, Result};
use badexpert_runtime::{FrameSet, Preprocessor};

/// The graph's data input: its name and dims (`None` where symbolic).
#[derive(Debug, Clone, PartialEq)]
pub struct GraphInput {
    pub name: String,
    pub dims: Vec<Option<i64>>,
}

struct Node {
    name: String,
    op_type: String,
    op: Op,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// Index of the node in the source graph.
    proto_index: usize,
    /// The restored normalisation applied to this (Conv) node's output, if any.
    norm: Option<usize>,
}

/// Role of an initializer during fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Learned by the optimizer.
    Weight,
    /// Updated by the forward pass in train mode (BatchNorm running statistics).
    Buffer,
    /// Never changes (shapes, scalars).
    Constant,
}

/// A trainable, runnable copy of an ONNX classifier.
pub struct TchGraph {
    proto: ModelProto,
    nodes: Vec<Node>,
    input: GraphInput,
    output: String,
    /// Every initializer and folded Constant, by name (weights are VarStore variables).
    values: HashMap<String, Tensor>,
    roles: BTreeMap<String, Role>,
    vs: nn::VarStore,
    /// BatchNorms restored after convolutions that had none (see [`TchGraph::restore_normalization`]).
    norms: Vec<RestoredNorm>,
}

fn opset(model: &ModelProto) -> i64 {
    model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(13, |o| o.version)
}

/// PyTorch's exporter merges initializers with equal values and feeds the
/// duplicates through `Identity` nodes: an untrained BatchNorm's weight (all
/// ones) then also serves as its running variance. Fine-tuning must move them
/// apart, so each such Identity becomes an initializer of its own.
fn split_aliased_initializers(proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_mut() else { return };
    loop {
        let inits: HashMap<&str, usize> =
            graph.initializer.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
        let found = graph.node.iter().enumerate().find_map(|(k, n)| {
            (n.op_type == "Identity" && n.input.len() == 1 && n.output.len() == 1)
                .then(|| inits.get(n.input[0].as_str()).map(|&i| (k, i)))
                .flatten()
        });
        let Some((node, init)) = found else { return };
        let mut copy = graph.initializer[init].clone();
        copy.name = graph.node[node].output[0].clone();
        graph.node.remove(node);
        graph.initializer.push(copy);
    }
}

impl TchGraph {
    /// Reads an ONNX file into a graph on `device`.
    pub fn load(path: &Path, device: Device) -> Result<TchGraph> {
        let proto = read_model(path)?;
        Self::from_proto(proto, device).map_err(|e| match e {
            Error::Invalid(reason) => Error::Onnx { path: path.to_owned(), reason },
            other => other,
        })
    }

    /// Builds a graph from a decoded model. Every unsupported operator is
    /// reported at once, with the nodes that use it.
    pub fn from_proto(mut proto: ModelProto, device: Device) -> Result<TchGraph> {
        split_aliased_initializers(&mut proto);
        let graph = proto.graph.as_ref().ok_or_else(|| Error::Invalid("no graph".into()))?;
        let opset = opset(&proto);

        let mut unsupported: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for n in &graph.node {
            let known = SUPPORTED.contains(&n.op_type.as_str()) && (n.domain.is_empty() || n.domain == "ai.onnx");
            if !known {
                unsupported.entry(n.op_type.as_str()).or_default().push(node_name(n));
            }
        }
        if !unsupported.is_empty() {
            return Err(Error::Unsupported(
                unsupported.into_iter().map(|(op, nodes)| format!("{op} (node {})", nodes.join(", "))).collect(),
            ));
        }

        // Roles: BatchNorm statistics are buffers, other float tensors of rank ≥ 1 weights.
        let buffers: HashSet<&str> = graph
            .node
            .iter()
            .filter(|n| n.op_type == "BatchNormalization")
            .flat_map(|n| n.input.iter().skip(3).take(2).map(String::as_str))
            .collect();
        let vs = nn::VarStore::new(device);
        let mut values = HashMap::new();
        let mut roles = BTreeMap::new();
        for (i, init) in graph.initializer.iter().enumerate() {
            let t = tensor_from_proto(init)?;
            let role = if buffers.contains(init.name.as_str()) {
                Role::Buffer
            } else if t.kind() == Kind::Float && t.dim() >= 1 {
                Role::Weight
            } else {
                Role::Constant
            };
            let value = match role {
                Role::Weight => vs.root().f_var_copy(&format!("p{i}"), &t)?,
                _ => t.f_to_device(device)?,
            };
            roles.insert(init.name.clone(), role);
            values.insert(init.name.clone(), value);
        }

        let mut nodes = Vec::new();
        for (proto_index, n) in graph.node.iter().enumerate() {
            if n.op_type == "Constant" {
                let t = Attrs::new(n).constant_value()?.f_to_device(device)?;
                for out in &n.output {
                    values.insert(out.clone(), t.shallow_clone());
                }
                continue;
            }
            let op = Op::parse(n, opset)?.expect("support checked above");
            nodes.push(Node {
                name: node_name(n),
                op_type: n.op_type.clone(),
                op,
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                proto_index,
                norm: None,
            });
        }

        let data_inputs: Vec<&pb::ValueInfoProto> =
            graph.input.iter().filter(|i| !values.contains_key(&i.name)).collect();
        let [input] = data_inputs[..] else {
            return Err(Error::Invalid(format!("{} data inputs; a classifier has exactly one", data_inputs.len())));
        };
        let input = GraphInput { name: input.name.clone(), dims: dims_of(input) };
        let output =
            graph.output.first().ok_or_else(|| Error::Invalid("the graph has no outputs".into()))?.name.clone();
        Ok(TchGraph { proto, nodes, input, output, values, roles, vs, norms: Vec::new() })
    }

    pub fn input(&self) -> &GraphInput {
        &self.input
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The variables an optimizer should update.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Runs the graph. `train` selects BatchNorm batch statistics (updating
    /// the running ones) and active Dropout, as PyTorch's `model.train()`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_observed(x, train, &mut |_, _| Ok(()))
    }

    /// [`TchGraph::forward`], handing each restored normalisation's input
    /// (its convolution's output) to `observe` with the normalisation's index.
    fn forward_observed(
        &self,
        x: &Tensor,
        train: bool,
        observe: &mut dyn FnMut(usize, &Tensor) -> std::result::Result<(), tch::TchError>,
    ) -> Result<Tensor> {
        let mut env: HashMap<&str, Tensor> = HashMap::new();
        env.insert(self.input.name.as_str(), x.shallow_clone());
        for node in &self.nodes {
            let inputs: Vec<Option<Tensor>> = node
                .inputs
                .iter()
                .map(|name| {
                    if name.is_empty() {
                        return Ok(None);
                    }
                    env.get(name.as_str())
                        .or_else(|| self.values.get(name))
                        .map(|t| Some(t.shallow_clone()))
                        .ok_or_else(|| {
                            self.node_error(node, format!("input {name:?} is not computed by any earlier node"))
                        })
                })
                .collect::<Result<_>>()?;
            let mut out = node.op.eval(&inputs, train).map_err(|reason| self.node_error(node, reason))?;
            if let Some(k) = node.norm {
                let restored = |e: tch::TchError| self.node_error(node, format!("restored BatchNorm: {e}"));
                observe(k, &out).map_err(restored)?;
                out = self.norms[k].apply(&out, train).map_err(restored)?;
            }
            // Secondary outputs (BatchNorm statistics, Dropout masks) are not used downstream by
            // exported classifiers; only the first is produced.
            env.insert(node.outputs[0].as_str(), out);
        }
        env.remove(self.output.as_str())
            .or_else(|| self.values.get(&self.output).map(|t| t.shallow_clone()))
            .ok_or_else(|| Error::Invalid(format!("graph output {:?} is never computed", self.output)))
    }

    /// Gives every convolution whose output feeds no BatchNorm a trainable
    /// BatchNorm set from `frames`' statistics, so that the model is
    /// unchanged but trains as a BatchNorm network (see
    /// [`super::restored_norm`]); [`TchGraph::to_proto`] folds them back.
    /// Returns how many were restored. A convolution whose weight or bias is
    /// shared with another node, or not an initializer, is left as it is.
    pub fn restore_normalization(&mut self, frames: &FrameSet, pre: &Preprocessor) -> Result<usize> {
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for n in &self.nodes {
            for i in &n.inputs {
                *uses.entry(i.as_str()).or_default() += 1;
            }
        }
        let normalised: HashSet<&str> = self
            .nodes
            .iter()
            .filter(|n| n.op_type == "BatchNormalization")
            .filter_map(|n| n.inputs.first())
            .map(String::as_str)
            .collect();
        let own_weight = |name: Option<&String>| {
            name.is_some_and(|w| self.roles.get(w) == Some(&Role::Weight) && uses.get(w.as_str()) == Some(&1))
        };
        let eligible: Vec<(usize, i64)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type == "Conv" && n.norm.is_none() && !normalised.contains(n.outputs[0].as_str()))
            .filter(|(_, n)| {
                own_weight(n.inputs.get(1)) && n.inputs.get(2).is_none_or(|b| b.is_empty() || own_weight(Some(b)))
            })
            .filter_map(|(k, n)| {
                let size = self.values[&n.inputs[1]].size();
                (size.len() == 4).then_some((k, size[0]))
            })
            .collect();
        if eligible.is_empty() || frames.is_empty() {
            return Ok(0);
        }
        let first = self.norms.len();
        for &(k, channels) in &eligible {
            let path = self.vs.root().sub(format!("restored_norm{}", self.norms.len()));
            self.norms.push(RestoredNorm::identity(path, channels)?);
            self.nodes[k].norm = Some(self.norms.len() - 1);
        }
        // Identity norms: every convolution sees the source model's activations.
        let mut moments: Vec<Moments> = eligible.iter().map(|&(_, c)| Moments::new(c)).collect();
        let idx: Vec<usize> = (0..frames.len()).collect();
        for chunk in idx.chunks(256) {
            let x = crate::train::batch_tensor(frames, chunk, pre, None, self.device())?;
            let _ = tch::no_grad(|| {
                self.forward_observed(&x, false, &mut |k, y| {
                    if k >= first {
                        moments[k - first].add(y)
                    } else {
                        Ok(())
                    }
                })
            })?;
        }
        for (norm, m) in self.norms[first..].iter_mut().zip(&moments) {
            norm.set_statistics(m)?;
        }
        Ok(eligible.len())
    }

    /// Makes this graph's weights the uniform average ("soup") of `copies`
    /// (fine-tunes of the same model; this graph may be one of them), then
    /// re-estimates its BatchNorm statistics on `frames` for the averaged
    /// weights ([`TchGraph::recompute_statistics`]: averaged statistics
    /// would not match them, and the re-estimate leaves the starting ones
    /// under 0.1 % of weight). Every copy must have the same variables.
    pub fn average_of(&self, copies: &[&TchGraph], frames: &FrameSet, pre: &Preprocessor) -> Result<()> {
        let mismatch = || Error::Invalid("weight average: the copies are not of one graph".into());
        let stores: Vec<HashMap<String, Tensor>> = copies.iter().map(|g| g.vs.variables()).collect();
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in self.vs.variables() {
                let same: Vec<&Tensor> =
                    stores.iter().map(|v| v.get(&name).ok_or_else(mismatch)).collect::<Result<_>>()?;
                var.f_copy_(&Tensor::f_stack(&same, 0)?.f_mean_dim(Some([0i64].as_slice()), false, var.kind())?)?;
            }
            Ok(())
        })?;
        self.recompute_statistics(frames, pre)
    }

    /// Re-estimates every BatchNorm's running statistics (the model's own
    /// and the restored ones) from `frames`, without changing a weight:
    /// train-mode passes without gradients, as `torch.optim.swa_utils.update_bn`
    /// but with the graph's moving average, over enough batches (≥ 80) that
    /// the statistics it started from weigh less than 0.1 % (0.9⁸⁰ at the
    /// usual momentum).
    pub fn recompute_statistics(&self, frames: &FrameSet, pre: &Preprocessor) -> Result<()> {
        const BATCH: usize = 64;
        let idx: Vec<usize> = (0..frames.len()).collect();
        let batches = frames.len().div_ceil(BATCH).max(1);
        for _ in 0..80usize.div_ceil(batches) {
            for chunk in idx.chunks(BATCH) {
                if chunk.len() < 2 {
                    continue;
                }
                let x = crate::train::batch_tensor(frames, chunk, pre, None, self.device())?;
                let _ = tch::no_grad(|| self.forward(&x, true))?;
            }
        }
        Ok(())
    }

    /// Number of BatchNorms [`TchGraph::restore_normalization`] added.
    pub fn restored_normalizations(&self) -> usize {
        self.norms.len()
    }

    /// Eval-mode logits without autograd.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| self.forward(x, false))
    }

    fn node_error(&self, node: &Node, reason: String) -> Error {
        Error::Node { node: node.name.clone(), op: node.op_type.clone(), reason }
    }

    /// A copy of the source model with the current weights and BatchNorm statistics.
    pub fn to_proto(&self) -> Result<ModelProto> {
        let mut proto = self.proto.clone();
        let graph = proto.graph.as_mut().expect("checked at load");
        for init in graph.initializer.iter_mut() {
            if matches!(self.roles.get(&init.name), Some(Role::Weight | Role::Buffer)) {
                *init = tensor_to_proto(&init.name, &self.values[&init.name])?;
            }
        }
        for node in &self.nodes {
            let Some(k) = node.norm else { continue };
            let weight_name = &node.inputs[1];
            let bias_name = node.inputs.get(2).filter(|b| !b.is_empty());
            let (weight, bias) = self.norms[k].fold(&self.values[weight_name], bias_name.map(|b| &self.values[b]))?;
            for init in graph.initializer.iter_mut() {
                if &init.name == weight_name {
                    *init = tensor_to_proto(weight_name, &weight)?;
                } else if Some(&init.name) == bias_name {
                    *init = tensor_to_proto(&init.name, &bias)?;
                }
            }
            if bias_name.is_none() {
                // The convolution had no bias: it gets the folded one as its third input.
                let name = format!("{weight_name}.restored_bias");
                graph.initializer.push(tensor_to_proto(&name, &bias)?);
                let inputs = &mut graph.node[node.proto_index].input;
                inputs.resize(2, String::new());
                inputs.push(name);
            }
        }
        Ok(proto)
    }

    /// Number of weights the optimizer updates.
    /// Stops training the classifier head: the weight of the last Gemm or
    /// MatMul and, for a MatMul, the bias an Add gives it next. Returns the
    /// number of tensors frozen (0 when the graph has no such layer).
    pub fn freeze_head(&self) -> usize {
        let Some(at) = self.nodes.iter().rposition(|n| n.op_type == "Gemm" || n.op_type == "MatMul") else {
            return 0;
        };
        let head = &self.nodes[at];
        let mut names: Vec<&str> = head.inputs.iter().skip(1).map(String::as_str).collect();
        if let Some(next) = self.nodes.get(at + 1).filter(|n| n.op_type == "Add" && n.inputs.contains(&head.outputs[0]))
        {
            names.extend(next.inputs.iter().map(String::as_str));
        }
        let mut frozen = 0;
        for name in names {
            if self.roles.get(name) == Some(&Role::Weight) {
                if let Some(t) = self.values.get(name) {
                    let _ = t.shallow_clone().set_requires_grad(false);
                    frozen += 1;
                }
            }
        }
        frozen
    }

    pub fn trainable_parameters(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}
