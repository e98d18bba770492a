//! Writes small CNN classifiers as ONNX graphs with PyTorch's default random
//! initialisation, so demo and test models go through exactly the path a
//! user's exported model takes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::pb::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension::Value as Dim,
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};

use badexpert_runtime::{FrameShape, BATCH_SYMBOL};

/// Builds a sequential NCHW classifier layer by layer.
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    rng: ChaCha8Rng,
    input: FrameShape,
    current: String,
    /// Shape of `current` without the batch axis.
    dims: Vec<i64>,
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i, ..Default::default() }
}

fn ints_attr(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: ints.to_vec(), ..Default::default() }
}

/// A float tensor's graph input/output description; `None` dims are the batch symbol.
pub fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(v) => Dim::DimValue(*v),
                None => Dim::DimParam(BATCH_SYMBOL.into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    pub fn new(input: FrameShape, seed: u64) -> Self {
        GraphBuilder {
            nodes: vec![],
            initializers: vec![],
            rng: ChaCha8Rng::seed_from_u64(seed),
            input,
            current: "input".into(),
            dims: vec![input.channels as i64, input.height as i64, input.width as i64],
        }
    }

    fn name(&self, kind: &str) -> String {
        format!("{kind}_{}", self.nodes.len())
    }

    fn tensor(&mut self, name: String, dims: &[i64], values: Vec<f32>) -> String {
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// U(−1/√fan_in, 1/√fan_in): PyTorch's default for Conv2d and Linear.
    fn uniform(&mut self, name: String, dims: &[i64], fan_in: i64) -> String {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let n = dims.iter().product::<i64>() as usize;
        let values = (0..n).map(|_| self.rng.gen_range(-bound..bound)).collect();
        self.tensor(name, dims, values)
    }

    fn push(&mut self, op: &str, mut inputs: Vec<String>, attrs: Vec<AttributeProto>) {
        let name = self.name(&op.to_lowercase());
        inputs.insert(0, self.current.clone());
        let output = format!("{name}_out");
        self.nodes.push(NodeProto {
            name,
            op_type: op.into(),
            input: inputs,
            output: vec![output.clone()],
            attribute: attrs,
            ..Default::default()
        });
        self.current = output;
    }

    /// 2-D convolution, "same" padding for odd kernels, stride 1.
    pub fn conv(&mut self, out_channels: i64, kernel: i64) -> &mut Self {
        self.conv_strided(out_channels, kernel, 1)
    }

    /// 2-D convolution with padding kernel/2 and the given stride.
    pub fn conv_strided(&mut self, out_channels: i64, kernel: i64, stride: i64) -> &mut Self {
        let cin = self.dims[0];
        let base = self.name("conv");
        let fan_in = cin * kernel * kernel;
        let w = self.uniform(format!("{base}.weight"), &[out_channels, cin, kernel, kernel], fan_in);
        let b = self.uniform(format!("{base}.bias"), &[out_channels], fan_in);
        let p = kernel / 2;
        let attrs = vec![
            ints_attr("kernel_shape", &[kernel, kernel]),
            ints_attr("pads", &[p, p, p, p]),
            ints_attr("strides", &[stride, stride]),
        ];
        self.push("Conv", vec![w, b], attrs);
        self.dims = vec![
            out_channels,
            (self.dims[1] + 2 * p - kernel) / stride + 1,
            (self.dims[2] + 2 * p - kernel) / stride + 1,
        ];
        self
    }

    /// A ResNet basic block: two 3×3 conv-BN (ReLU between) plus a shortcut
    /// (1×1 conv-BN when the shape changes), then ReLU.
    pub fn basic_block(&mut self, out_channels: i64, stride: i64) -> &mut Self {
        let (input, input_dims) = (self.current.clone(), self.dims.clone());
        self.conv_strided(out_channels, 3, stride).batch_norm().relu().conv(out_channels, 3).batch_norm();
        let (main, main_dims) = (self.current.clone(), self.dims.clone());
        let shortcut = if stride != 1 || input_dims[0] != out_channels {
            self.current = input;
            self.dims = input_dims;
            self.conv_strided(out_channels, 1, stride).batch_norm();
            self.current.clone()
        } else {
            input
        };
        self.current = main;
        self.dims = main_dims;
        self.push("Add", vec![shortcut], vec![]);
        self.relu()
    }

    pub fn batch_norm(&mut self) -> &mut Self {
        let c = self.dims[0];
        let base = self.name("bn");
        let ones = vec![1.0; c as usize];
        let zeros = vec![0.0; c as usize];
        let inputs = vec![
            self.tensor(format!("{base}.weight"), &[c], ones.clone()),
            self.tensor(format!("{base}.bias"), &[c], zeros.clone()),
            self.tensor(format!("{base}.running_mean"), &[c], zeros),
            self.tensor(format!("{base}.running_var"), &[c], ones),
        ];
        let eps = AttributeProto {
            name: "epsilon".into(),
            r#type: AttributeType::Float as i32,
            f: 1e-5,
            ..Default::default()
        };
        let momentum = AttributeProto {
            name: "momentum".into(),
            r#type: AttributeType::Float as i32,
            f: 0.9,
            ..Default::default()
        };
        self.push("BatchNormalization", inputs, vec![eps, momentum]);
        self
    }

    pub fn relu(&mut self) -> &mut Self {
        self.push("Relu", vec![], vec![]);
        self
    }

    /// Max pooling with a square window and equal stride.
    pub fn max_pool(&mut self, k: i64) -> &mut Self {
        self.push("MaxPool", vec![], vec![ints_attr("kernel_shape", &[k, k]), ints_attr("strides", &[k, k])]);
        self.dims[1] /= k;
        self.dims[2] /= k;
        self
    }

    pub fn global_average_pool(&mut self) -> &mut Self {
        self.push("GlobalAveragePool", vec![], vec![]);
        self.dims[1] = 1;
        self.dims[2] = 1;
        self
    }

    pub fn flatten(&mut self) -> &mut Self {
        self.push("Flatten", vec![], vec![int_attr("axis", 1)]);
        self.dims = vec![self.dims.iter().product()];
        self
    }

    /// Fully connected layer (Gemm with transB, as PyTorch exports nn.Linear).
    pub fn linear(&mut self, out: i64) -> &mut Self {
        let fan_in = self.dims[0];
        let base = self.name("fc");
        let w = self.uniform(format!("{base}.weight"), &[out, fan_in], fan_in);
        let b = self.uniform(format!("{base}.bias"), &[out], fan_in);
        self.push("Gemm", vec![w, b], vec![int_attr("transB", 1)]);
        self.dims = vec![out];
        self
    }

    /// The model, with the last layer's output as `logits`.
    pub fn finish(&mut self) -> ModelProto {
        let mut nodes = self.nodes.clone();
        if let Some(last) = nodes.last_mut() {
            last.output = vec!["logits".into()];
        }
        let s = self.input;
        let graph = GraphProto {
            name: "badexpert-cnn".into(),
            node: nodes,
            initializer: self.initializers.clone(),
            input: vec![value_info(
                "input",
                &[None, Some(s.channels as i64), Some(s.height as i64), Some(s.width as i64)],
            )],
            output: vec![value_info("logits", &[None, Some(self.dims[0])])],
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
            producer_name: "badexpert".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(graph),
            ..Default::default()
        }
    }
}

/// ResNet18 with the CIFAR stem (3×3 conv, stride 1, no max-pool) and base
/// width `width` (64 is the full model: 11.2 M parameters).
pub fn resnet18(input: FrameShape, classes: i64, width: i64, seed: u64) -> ModelProto {
    let mut b = GraphBuilder::new(input, seed);
    b.conv(width, 3).batch_norm().relu();
    for (stage, mult) in [1, 2, 4, 8].into_iter().enumerate() {
        b.basic_block(width * mult, if stage == 0 { 1 } else { 2 }).basic_block(width * mult, 1);
    }
    b.global_average_pool().flatten().linear(classes);
    b.finish()
}

/// The demo architecture: two conv-BN-ReLU-MaxPool blocks and a two-layer
/// head; ~0.42 M parameters for 28×28 input.
pub fn small_cnn(input: FrameShape, classes: i64, seed: u64) -> ModelProto {
    let mut b = GraphBuilder::new(input, seed);
    b.conv(32, 3).batch_norm().relu().max_pool(2);
    b.conv(64, 3).batch_norm().relu().max_pool(2);
    b.flatten().linear(128).relu().linear(classes);
    b.finish()
}
