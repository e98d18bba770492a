//! Readers (and the IDX writer) for the frame sets users bring: IDX files
//! (MNIST family, gz or raw), CIFAR-10 binary batches and image folders;
//! and the clean frames a bundle stores for run-time detectors.
//!
//! ```
//! use badexpert_frames::FrameSource;
//!
//! let set = FrameSource::detect("../models/badnet-fmnist/eval-clean-images-idx3-ubyte.gz".as_ref()).load()?;
//! assert_eq!((set.len(), set.labels().map(|l| l.len())), (1000, Some(1000)));
//! # Ok::<(), badexpert_runtime::Error>(())
//! ```

mod cifar;
mod idx;
mod image_folder;
mod reshape;

use std::path::{Path, PathBuf};

pub use cifar::read_cifar10;
pub use idx::{read_idx_images, read_idx_labels, write_idx_images, write_idx_labels};
pub use image_folder::{decode_camera_image, read_camera_image, read_image_file, read_image_folder};
pub use reshape::{camera_pixels, to_shape};

use badexpert_runtime::{Error, FrameSet, GuardBundle, Result};

/// Where a frame set comes from, as given on a command line.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameSource {
    /// IDX images with an optional IDX label file.
    Idx { images: PathBuf, labels: Option<PathBuf> },
    /// One or more CIFAR-10 binary batch files.
    Cifar10(Vec<PathBuf>),
    /// A directory of class sub-directories holding PNG/JPEG images.
    ImageFolder(PathBuf),
}

impl FrameSource {
    /// Guesses the format from a path: a directory is an image folder, a
    /// `.bin` file a CIFAR-10 batch, anything else IDX. For IDX images named
    /// `*-images-idx3-ubyte[.gz]` the matching `*-labels-idx1-ubyte[.gz]` is
    /// picked up when it exists.
    pub fn detect(path: &Path) -> FrameSource {
        if path.is_dir() {
            return FrameSource::ImageFolder(path.to_owned());
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".bin") {
            return FrameSource::Cifar10(vec![path.to_owned()]);
        }
        let labels = name
            .contains("images-idx3")
            .then(|| path.with_file_name(name.replace("images-idx3", "labels-idx1")))
            .filter(|p| p.is_file());
        FrameSource::Idx { images: path.to_owned(), labels }
    }

    /// Reads the whole set.
    pub fn load(&self) -> Result<FrameSet> {
        match self {
            FrameSource::Idx { images, labels } => {
                let set = read_idx_images(images)?;
                match labels {
                    Some(l) => set.with_labels(read_idx_labels(l)?).map_err(|e| {
                        Error::format(l, "IDX label file", format!("does not match {}: {e}", images.display()))
                    }),
                    None => Ok(set),
                }
            }
            FrameSource::Cifar10(files) => read_cifar10(files),
            FrameSource::ImageFolder(dir) => read_image_folder(dir).map(|(set, _)| set),
        }
    }
}

/// Reads a file fully, naming it on failure.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The clean frames stored in `bundle` for detectors that need them at run
/// time (STRIP), verified against the manifest's sha256; `None` if the
/// converter was not asked to store any.
pub fn clean_frames(bundle: &GuardBundle) -> Result<Option<FrameSet>> {
    let manifest = bundle.manifest();
    let Some(clean) = &manifest.clean_frames else { return Ok(None) };
    let images = bundle.verified_file(&clean.images)?;
    let labels = bundle.verified_file(&clean.labels)?;
    let set = FrameSource::Idx { images: images.clone(), labels: Some(labels) }.load()?;
    if set.shape() != manifest.input.shape {
        let reason = format!("frames are {}, the bundle takes {}", set.shape(), manifest.input.shape);
        return Err(Error::format(images, "clean frame file", reason));
    }
    Ok(Some(set))
}
