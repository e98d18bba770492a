//! Frame sets of another size or channel count, brought to a bundle's input
//! through its camera preprocessing: a stored frame is a picture like any
//! camera frame, so it is resized (and turned gray or colour) the same way.

use badexpert_runtime::camera::{CameraPreprocessing, DEFAULT_MAX_FRAME_BYTES};
use badexpert_runtime::{CameraFrame, CameraPipeline, Error, FrameGeometry, FrameSet, FrameShape, PixelFormat, Result};

/// Frame `i` of `set` as camera pixels: gray frames as GRAY8, three-channel
/// (planar RGB) frames interleaved as RGB24.
pub fn camera_pixels(set: &FrameSet, i: usize) -> Result<(FrameGeometry, Vec<u8>)> {
    let s = set.shape();
    let frame = set.frame(i);
    let (format, pixels) = match s.channels {
        1 => (PixelFormat::Gray8, frame.to_vec()),
        3 => {
            let hw = s.height * s.width;
            (PixelFormat::Rgb24, (0..hw).flat_map(|p| [frame[p], frame[hw + p], frame[2 * hw + p]]).collect())
        }
        c => return Err(Error::Frame(format!("{c}-channel frames cannot be resized (1 or 3 channels)"))),
    };
    Ok((FrameGeometry::new(format, s.width, s.height, None, DEFAULT_MAX_FRAME_BYTES)?, pixels))
}

/// `set` at `shape`: unchanged when it already is, else every frame through
/// the camera pipeline `settings` describe (labels kept).
pub fn to_shape(set: FrameSet, shape: FrameShape, settings: &CameraPreprocessing) -> Result<FrameSet> {
    if set.shape() == shape || set.is_empty() {
        return Ok(set);
    }
    let mut pixels = vec![0u8; set.len() * shape.len()];
    let mut pipeline: Option<CameraPipeline> = None;
    for (i, out) in pixels.chunks_exact_mut(shape.len()).enumerate() {
        let (geometry, camera) = camera_pixels(&set, i)?;
        let pipeline = match &mut pipeline {
            Some(p) => p,
            None => pipeline.insert(CameraPipeline::new(settings, shape, geometry)?),
        };
        pipeline.convert(&CameraFrame::new(geometry, &camera)?, out)?;
    }
    FrameSet::new(shape, pixels, set.labels().map(<[u32]>::to_vec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colour_set_becomes_a_smaller_gray_one_and_a_matching_set_is_unchanged() {
        // 2 frames of 3×4×4: the first all red, the second all white.
        let mut pixels = vec![0u8; 2 * 48];
        pixels[..16].fill(255);
        pixels[48..].fill(255);
        let set = FrameSet::new(FrameShape::new(3, 4, 4), pixels, Some(vec![3, 5])).unwrap();
        let gray = to_shape(set.clone(), FrameShape::new(1, 2, 2), &CameraPreprocessing::default()).unwrap();
        assert_eq!(gray.shape(), FrameShape::new(1, 2, 2));
        assert_eq!(gray.labels(), Some(&[3, 5][..]));
        assert!(gray.frame(0).iter().all(|&v| v > 40 && v < 100), "red as gray: {:?}", gray.frame(0));
        assert!(gray.frame(1).iter().all(|&v| v == 255), "white: {:?}", gray.frame(1));
        let same = to_shape(set.clone(), set.shape(), &CameraPreprocessing::default()).unwrap();
        assert_eq!(same.pixels(), set.pixels());
    }
}
