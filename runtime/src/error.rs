//! One error type for the runtime, so that every entry point can name what is
//! wrong (which file, which field, which frame) instead of panicking.

use std::path::PathBuf;

/// Result alias for the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a bundle on disk and a verdict.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The OS error is part of the message, not a `source`, so that error
    /// chains (`anyhow`'s `{:#}`) print it once.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },

    #[error("{}: not a valid {what}: {reason}", path.display())]
    Format { path: PathBuf, what: &'static str, reason: String },

    #[error("manifest {}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },

    #[error("bundle file {}: sha256 mismatch (manifest says {expected}, file has {actual}); refusing to load a tampered or corrupt bundle", path.display())]
    HashMismatch { path: PathBuf, expected: String, actual: String },

    /// The bundle's seal (`seal.json`) refuses it: a changed manifest, an
    /// edited seal, a missing or foreign signature.
    #[error("bundle {}: {reason}; refusing to guard with it", dir.display())]
    Seal { dir: PathBuf, reason: String },

    #[error("plan {}: {reason}", path.display())]
    Plan { path: PathBuf, reason: String },

    #[error("frame does not fit the bundle: {0}")]
    Frame(String),

    #[error("inference failed in {model}: {reason}")]
    Inference { model: &'static str, reason: String },

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }

    /// `path` is not a valid `what`.
    pub fn format(path: impl Into<PathBuf>, what: &'static str, reason: impl ToString) -> Self {
        Error::Format { path: path.into(), what, reason: reason.to_string() }
    }
}
