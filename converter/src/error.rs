//! The converter's error type: every failure names the file, node, op or
//! setting at fault.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The OS error is part of the message, not a `source`, so that error
    /// chains (`anyhow`'s `{:#}`) print it once.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },

    #[error("{}: not a valid ONNX model: {reason}", path.display())]
    Onnx { path: PathBuf, reason: String },

    #[error("unsupported ONNX operator(s): {}", .0.join("; "))]
    Unsupported(Vec<String>),

    #[error("ONNX node {node} ({op}): {reason}")]
    Node { node: String, op: String, reason: String },

    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    #[error("clean set: {0}")]
    Data(String),

    #[error("export of {what}: {reason}")]
    Export { what: String, reason: String },

    #[error(transparent)]
    Runtime(#[from] badexpert_runtime::Error),

    #[error("{what}: training diverged (loss {loss} in epoch {epoch}); lower the learning rate")]
    Diverged { what: String, loss: f64, epoch: usize },

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }
}
