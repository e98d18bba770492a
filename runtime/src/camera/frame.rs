//! What a camera hands over: a pixel format, a geometry (size and row
//! stride, checked against a size limit) and the bytes of one frame.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Largest frame [`FrameGeometry::new`] accepts unless told otherwise (8K RGB
/// is 100 MB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 256 << 20;

/// How a camera delivers a frame's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormat {
    /// One byte per pixel (GStreamer GRAY8, ROS mono8).
    Gray8,
    /// R, G, B per pixel (GStreamer RGB, ROS rgb8, ffmpeg rgb24).
    Rgb24,
    /// B, G, R per pixel (GStreamer BGR, ROS bgr8, ffmpeg bgr24).
    Bgr24,
    /// 4:2:2 packed Y0 U Y1 V (GStreamer YUY2, V4L2 YUYV, ffmpeg yuyv422).
    Yuyv,
    /// 4:2:0: a Y plane, then interleaved U V at half width and height.
    Nv12,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 5] =
        [PixelFormat::Gray8, PixelFormat::Rgb24, PixelFormat::Bgr24, PixelFormat::Yuyv, PixelFormat::Nv12];

    /// The name used on command lines (`gray8`, `rgb24`, `bgr24`, `yuyv`, `nv12`).
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Gray8 => "gray8",
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Bgr24 => "bgr24",
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Nv12 => "nv12",
        }
    }

    /// Bytes of one row of `width` pixels (of the Y plane for NV12).
    pub(crate) fn row_bytes(self, width: usize) -> Option<usize> {
        match self {
            PixelFormat::Gray8 | PixelFormat::Nv12 => Some(width),
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => width.checked_mul(3),
            PixelFormat::Yuyv => width.checked_mul(2),
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PixelFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        PixelFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown pixel format {s:?} (expected one of gray8, rgb24, bgr24, yuyv, nv12)"))
    }
}

/// Format, size and row stride of the frames of one stream, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameGeometry {
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next (of both planes for NV12).
    pub stride: usize,
}

impl FrameGeometry {
    /// Checks a geometry: a non-zero size, an even width for YUYV and NV12
    /// and an even height for NV12, a stride (default: tight rows) of at
    /// least one row, and at most `max_bytes` per frame.
    pub fn new(
        format: PixelFormat,
        width: usize,
        height: usize,
        stride: Option<usize>,
        max_bytes: usize,
    ) -> Result<FrameGeometry> {
        let bad = |reason: String| Err(Error::Frame(format!("{format} {width}x{height}: {reason}")));
        if width == 0 || height == 0 {
            return bad("a frame needs a non-zero width and height".into());
        }
        if matches!(format, PixelFormat::Yuyv | PixelFormat::Nv12) && !width.is_multiple_of(2) {
            return bad(format!("{format} needs an even width (two pixels share their chroma)"));
        }
        if format == PixelFormat::Nv12 && !height.is_multiple_of(2) {
            return bad("nv12 needs an even height (two rows share their chroma)".into());
        }
        let Some(row) = format.row_bytes(width) else { return bad("the row size overflows".into()) };
        let stride = stride.unwrap_or(row);
        if stride < row {
            return bad(format!("stride {stride} is smaller than a row ({row} bytes)"));
        }
        let geometry = FrameGeometry { format, width, height, stride };
        match geometry.frame_bytes() {
            None => bad("the frame size overflows".into()),
            Some(n) if n > max_bytes => bad(format!("{n} bytes per frame is over the limit of {max_bytes}")),
            Some(_) => Ok(geometry),
        }
    }

    /// Bytes of one whole frame, stride included.
    pub fn frame_bytes(&self) -> Option<usize> {
        let luma = self.stride.checked_mul(self.height)?;
        match self.format {
            PixelFormat::Nv12 => luma.checked_add(self.stride.checked_mul(self.height / 2)?),
            _ => Some(luma),
        }
    }
}

impl std::fmt::Display for FrameGeometry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}x{} (stride {})", self.format, self.width, self.height, self.stride)
    }
}

/// One camera frame: its geometry and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct CameraFrame<'a> {
    pub geometry: FrameGeometry,
    pub data: &'a [u8],
}

impl<'a> CameraFrame<'a> {
    /// A frame whose `data` holds at least the geometry's rows (the padding
    /// after the last row may be missing, as some drivers omit it).
    pub fn new(geometry: FrameGeometry, data: &'a [u8]) -> Result<CameraFrame<'a>> {
        let g = &geometry;
        let row = g.format.row_bytes(g.width).unwrap_or(usize::MAX);
        let needed = match g.format {
            PixelFormat::Nv12 => g.stride * (g.height + g.height / 2 - 1) + row,
            _ => g.stride * (g.height - 1) + row,
        };
        if data.len() < needed {
            return Err(Error::Frame(format!("{} bytes for a {geometry} frame, which needs {needed}", data.len())));
        }
        Ok(CameraFrame { geometry, data })
    }
}
