//! ONNX front-end: protobuf I/O, tensor conversion to and from libtorch, the
//! graph interpreter used for fine-tuning, and a small graph builder.

mod batch_axis;
pub mod builder;
mod fuzzing;
mod interpreter;
mod limits;
mod ops;
mod proto;
mod restored_norm;
mod tensors;

pub use fuzzing::{check_bytes, CHECK_ELEMENT_LIMIT, CHECK_MAX_INPUT_ELEMENTS};
pub use interpreter::{GraphInput, TchGraph};
pub use limits::MAX_TENSOR_ELEMENTS;
pub use proto::{normalization_metadata, read_model, set_normalization_metadata, write_model, NORMALIZATION_KEY};
pub use tensors::{tensor_from_proto, tensor_to_proto};
pub use tract_onnx::pb;
