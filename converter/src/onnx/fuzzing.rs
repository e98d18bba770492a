//! Untrusted ONNX bytes through the converter's load and forward path, as one
//! function shared by the `onnx_interpreter` fuzz target (converter/fuzz) and
//! the test suite (tests/malformed.rs): every failure must be an `Err`.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::interpreter::TchGraph;
use super::limits::lower_element_limit;
use super::proto::decode_model;
use crate::{Error, Result};

/// Largest data input [`check_bytes`] builds, in elements (symbolic dims count 1).
pub const CHECK_MAX_INPUT_ELEMENTS: i64 = 1 << 16;

/// Element limit while [`check_bytes`] runs (1 Mi: 4 MiB as f32), in place of
/// [`super::MAX_TENSOR_ELEMENTS`], so that a fuzzer's runs stay fast and far
/// below libFuzzer's memory limit (2 GB by default) even when many nodes of a
/// graph each produce a tensor at the limit.
pub const CHECK_ELEMENT_LIMIT: i64 = 1 << 20;

/// Decodes `bytes` as an ONNX model, checks it as `read_model` does, builds
/// the libtorch graph on the CPU and runs it once in eval mode and once in
/// train mode on zeros of its declared input shape (symbolic dims as 1).
/// `Ok` if both passes run; otherwise the error a user would see. A declared
/// input of more than [`CHECK_MAX_INPUT_ELEMENTS`] is refused, and tensors are
/// held to [`CHECK_ELEMENT_LIMIT`] elements.
pub fn check_bytes(bytes: &[u8]) -> Result<()> {
    let _limit = lower_element_limit(CHECK_ELEMENT_LIMIT);
    let mut model = decode_model(bytes, Path::new("<bytes>"))?;
    super::batch_axis::free_batch_axis(&mut model);
    let graph = TchGraph::from_proto(model, Device::Cpu)?;
    let dims: Vec<i64> = graph.input().dims.iter().map(|d| d.unwrap_or(1)).collect();
    let fits = dims.iter().try_fold(1i64, |n, &d| n.checked_mul(d)).is_some_and(|n| n <= CHECK_MAX_INPUT_ELEMENTS);
    if !fits {
        return Err(Error::Invalid(format!(
            "declared input shape {dims:?} exceeds {CHECK_MAX_INPUT_ELEMENTS} elements"
        )));
    }
    let x = Tensor::f_zeros(dims.as_slice(), (Kind::Float, Device::Cpu))?;
    tch::no_grad(|| graph.forward(&x, false).and_then(|_| graph.forward(&x, true))).map(drop)
}
