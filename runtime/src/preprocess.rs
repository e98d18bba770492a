//! Pixel normalisation: u8 frame → the f32 tensor the model was trained on.
//!
//! `x = (u8 · scale − mean[c]) / std[c]`, as recorded in the manifest. The
//! per-channel mapping is folded into a 256-entry lookup table once, so each
//! frame costs one table read per pixel and no arithmetic.

use serde::{Deserialize, Serialize};

use crate::{Error, FrameShape, Result};

/// The user-given input normalisation that travels in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Multiplies the raw u8 value first (1/255 maps to [0, 1]).
    pub scale: f32,
    /// Per-channel mean, subtracted after scaling (one value applies to all channels).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, divided by last.
    pub std: Vec<f32>,
}

impl Normalization {
    /// Pixels in [0, 1], no centring.
    pub fn unit() -> Self {
        Normalization { scale: 1.0 / 255.0, mean: vec![0.0], std: vec![1.0] }
    }

    /// Checks the values are usable for `channels` channels.
    pub fn validate(&self, channels: usize) -> Result<()> {
        let bad = |reason: String| Err(Error::Invalid(format!("normalisation: {reason}")));
        if !self.scale.is_finite() || self.scale == 0.0 {
            return bad(format!("scale {} must be finite and non-zero", self.scale));
        }
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != 1 && v.len() != channels {
                return bad(format!("{name} has {} values, the input has {channels} channels", v.len()));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return bad(format!("{name} {v:?} has a non-finite value"));
            }
        }
        if self.std.contains(&0.0) {
            return bad(format!("std {:?} has a zero", self.std));
        }
        Ok(())
    }

    fn channel(v: &[f32], c: usize) -> f32 {
        if v.len() == 1 {
            v[0]
        } else {
            v[c]
        }
    }

    /// Normalises one u8 value of channel `c`.
    pub fn apply(&self, value: f32, c: usize) -> f32 {
        (value * self.scale - Self::channel(&self.mean, c)) / Self::channel(&self.std, c)
    }
}

/// Layout of the u8 pixels handed to the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelLayout {
    /// Planar: all of channel 0, then channel 1, ... (gray frames are both).
    Chw,
    /// Interleaved, as cameras deliver RGB24.
    Hwc,
}

/// A normalisation compiled for one frame shape.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    shape: FrameShape,
    table: Vec<[f32; 256]>,
}

impl Preprocessor {
    pub fn new(norm: &Normalization, shape: FrameShape) -> Result<Self> {
        norm.validate(shape.channels)?;
        let table = (0..shape.channels).map(|c| std::array::from_fn(|v| norm.apply(v as f32, c))).collect();
        Ok(Preprocessor { shape, table })
    }

    pub fn shape(&self) -> FrameShape {
        self.shape
    }

    /// `(a, b)` such that channel `c`'s raw value v normalises to `a·v + b`
    /// (the normalisation is affine per channel).
    pub fn channel_affine(&self, c: usize) -> (f32, f32) {
        let t = &self.table[c];
        (t[1] - t[0], t[0])
    }

    /// Writes a frame in either layout into `out` as normalised planar CHW.
    pub fn load(&self, frame: &[u8], layout: PixelLayout, out: &mut [f32]) -> Result<()> {
        match layout {
            PixelLayout::Chw => self.planar_into(frame, out),
            PixelLayout::Hwc => self.interleaved_into(frame, out),
        }
    }

    /// Writes a planar (CHW) u8 frame into `out`, normalised.
    pub fn planar_into(&self, frame: &[u8], out: &mut [f32]) -> Result<()> {
        self.check_len(frame.len())?;
        let hw = self.shape.height * self.shape.width;
        for (c, table) in self.table.iter().enumerate() {
            let (src, dst) = (&frame[c * hw..(c + 1) * hw], &mut out[c * hw..(c + 1) * hw]);
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = table[s as usize];
            }
        }
        Ok(())
    }

    /// Writes an interleaved (HWC, as cameras deliver RGB24) u8 frame into
    /// `out` as planar CHW, normalised: the layout change is fused into the
    /// same pass.
    pub fn interleaved_into(&self, frame: &[u8], out: &mut [f32]) -> Result<()> {
        self.check_len(frame.len())?;
        let (c, hw) = (self.shape.channels, self.shape.height * self.shape.width);
        for (p, px) in frame.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                out[ch * hw + p] = self.table[ch][v as usize];
            }
        }
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len != self.shape.len() {
            return Err(Error::Frame(format!(
                "{len} pixel values, the bundle expects {} = {}",
                self.shape.len(),
                self.shape
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_and_planar_agree() {
        let norm = Normalization { scale: 1.0 / 255.0, mean: vec![0.5, 0.4, 0.3], std: vec![0.2, 0.25, 0.5] };
        let p = Preprocessor::new(&norm, FrameShape::new(3, 2, 2)).unwrap();
        let hwc: Vec<u8> = (0..12).map(|i| i * 20).collect();
        let hwc_ref = &hwc;
        let chw: Vec<u8> = (0..3).flat_map(|c| (0..4).map(move |px| hwc_ref[px * 3 + c])).collect();
        let (mut a, mut b) = (vec![0.0; 12], vec![0.0; 12]);
        p.interleaved_into(&hwc, &mut a).unwrap();
        p.planar_into(&chw, &mut b).unwrap();
        assert_eq!(a, b);
        assert!((a[4] - (hwc[1] as f32 / 255.0 - 0.4) / 0.25).abs() < 1e-6);
    }

    #[test]
    fn wrong_sizes_and_values_are_named() {
        let p = Preprocessor::new(&Normalization::unit(), FrameShape::new(1, 28, 28)).unwrap();
        let err = p.planar_into(&[0; 100], &mut [0.0; 784]).unwrap_err().to_string();
        assert!(err.contains("100 pixel values") && err.contains("784"), "{err}");
        let bad = Normalization { scale: 1.0, mean: vec![0.0, 0.0], std: vec![1.0] };
        assert!(bad.validate(3).unwrap_err().to_string().contains("mean has 2 values"));
    }
}
