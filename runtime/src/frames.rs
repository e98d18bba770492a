//! A set of u8 frames in planar (N, C, H, W) order with optional labels: the
//! one in-memory form every reader produces and every consumer takes.

use crate::{Error, Result};

/// Channels, height and width of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrameShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl FrameShape {
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        FrameShape { channels, height, width }
    }

    /// Number of u8 values in one frame.
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for FrameShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{} (CxHxW)", self.channels, self.height, self.width)
    }
}

/// Frames stored contiguously, planar per frame (CHW), with optional class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameSet {
    shape: FrameShape,
    pixels: Vec<u8>,
    labels: Option<Vec<u32>>,
}

impl FrameSet {
    /// Builds a set, checking that the pixel buffer holds a whole number of frames
    /// and that there is one label per frame.
    pub fn new(shape: FrameShape, pixels: Vec<u8>, labels: Option<Vec<u32>>) -> Result<Self> {
        if shape.is_empty() {
            return Err(Error::Invalid(format!("frame shape {shape} has no pixels")));
        }
        if !pixels.len().is_multiple_of(shape.len()) {
            return Err(Error::Invalid(format!(
                "{} pixel values are not a whole number of {shape} frames",
                pixels.len()
            )));
        }
        let n = pixels.len() / shape.len();
        if let Some(l) = &labels {
            if l.len() != n {
                return Err(Error::Invalid(format!("{n} frames but {} labels", l.len())));
            }
        }
        Ok(FrameSet { shape, pixels, labels })
    }

    /// Attaches labels (one per frame), replacing any there were.
    pub fn with_labels(self, labels: Vec<u32>) -> Result<Self> {
        FrameSet::new(self.shape, self.pixels, Some(labels))
    }

    pub fn shape(&self) -> FrameShape {
        self.shape
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / self.shape.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Planar pixels of frame `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        let n = self.shape.len();
        &self.pixels[i * n..(i + 1) * n]
    }

    pub fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        let n = self.shape.len();
        &mut self.pixels[i * n..(i + 1) * n]
    }

    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    pub fn labels_mut(&mut self) -> Option<&mut [u32]> {
        self.labels.as_deref_mut()
    }

    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i])
    }

    /// The labels, or an error naming `what` needs them.
    pub fn require_labels(&self, what: &str) -> Result<&[u32]> {
        self.labels
            .as_deref()
            .ok_or_else(|| Error::Invalid(format!("{what} needs labelled frames, these have no labels")))
    }

    /// Checks every label is a class index below `classes`.
    pub fn check_labels(&self, classes: usize) -> Result<()> {
        if let Some(labels) = &self.labels {
            if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
                return Err(Error::Invalid(format!(
                    "label {l} of frame {i} is outside 0..{classes} (the model has {classes} classes)"
                )));
            }
        }
        Ok(())
    }

    /// A new set holding the frames at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> FrameSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.shape.len());
        for &i in indices {
            pixels.extend_from_slice(self.frame(i));
        }
        let labels = self.labels.as_ref().map(|l| indices.iter().map(|&i| l[i]).collect());
        FrameSet { shape: self.shape, pixels, labels }
    }

    /// The first `n` frames (all of them when there are fewer).
    pub fn head(&self, n: usize) -> FrameSet {
        self.select(&(0..n.min(self.len())).collect::<Vec<_>>())
    }

    /// Appends the frames of `other` (same shape; both labelled or both not).
    pub fn extend(&mut self, other: &FrameSet) -> Result<()> {
        if other.shape != self.shape {
            return Err(Error::Invalid(format!("cannot join frames of shape {} and {}", self.shape, other.shape)));
        }
        match (&mut self.labels, &other.labels) {
            (Some(a), Some(b)) => a.extend_from_slice(b),
            (None, None) => {}
            _ => return Err(Error::Invalid("cannot join labelled and unlabelled frames".into())),
        }
        self.pixels.extend_from_slice(&other.pixels);
        Ok(())
    }
}
