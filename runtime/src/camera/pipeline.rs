//! The conversion of a camera frame into model-size planar u8: colour
//! conversion, antialiased bilinear resize and centre crop, built once per
//! frame geometry and allocation-free per frame.

use super::frame::{CameraFrame, FrameGeometry, PixelFormat};
use super::settings::{CameraPreprocessing, ChannelOrder, ResizeMode, YuvMatrix};
use crate::resample::PlaneResampler;
use crate::{Error, FrameShape, Result};

/// Fixed-point (16-bit) YUV → RGB coefficients.
#[derive(Debug, Clone, Copy, PartialEq)]
struct YuvCoefficients {
    y_offset: i32,
    y: i32,
    r_v: i32,
    g_u: i32,
    g_v: i32,
    b_u: i32,
}

impl YuvCoefficients {
    fn of(matrix: YuvMatrix) -> YuvCoefficients {
        let ((kr, kb), limited) = match matrix {
            YuvMatrix::Bt601Limited => ((0.299, 0.114), true),
            YuvMatrix::Bt601Full => ((0.299, 0.114), false),
            YuvMatrix::Bt709Limited => ((0.2126, 0.0722), true),
            YuvMatrix::Bt709Full => ((0.2126, 0.0722), false),
        };
        let kg = 1.0 - kr - kb;
        let (y_scale, c_scale) = if limited { (255.0 / 219.0, 255.0 / 224.0) } else { (1.0, 1.0) };
        let fixed = |v: f64| (v * 65536.0).round() as i32;
        YuvCoefficients {
            y_offset: if limited { 16 } else { 0 },
            y: fixed(y_scale),
            r_v: fixed(2.0 * (1.0 - kr) * c_scale),
            g_u: fixed(2.0 * kb * (1.0 - kb) / kg * c_scale),
            g_v: fixed(2.0 * kr * (1.0 - kr) / kg * c_scale),
            b_u: fixed(2.0 * (1.0 - kb) * c_scale),
        }
    }

    #[inline]
    fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let y = (y as i32 - self.y_offset) * self.y + (1 << 15);
        let (u, v) = (u as i32 - 128, v as i32 - 128);
        let clip = |x: i32| (x >> 16).clamp(0, 255) as u8;
        [clip(y + self.r_v * v), clip(y - self.g_u * u - self.g_v * v), clip(y + self.b_u * u)]
    }
}

/// Pillow's ITU-R 601-2 luma, `L = R·299/1000 + G·587/1000 + B·114/1000`, rounded.
#[inline]
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// Where the plane of one model channel lies: in the frame itself (read
/// with a stride and a pixel step) or in the pipeline's decoded planes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PlaneSource {
    Frame { offset: usize, step: usize },
    Decoded { plane: usize },
}

/// Turns frames of one geometry into model-size planar u8. Made once per
/// geometry; [`convert`](Self::convert) allocates nothing.
#[derive(Debug, Clone)]
pub struct CameraPipeline {
    geometry: FrameGeometry,
    shape: FrameShape,
    yuv: YuvCoefficients,
    /// For each model channel, its source plane (the same for all three
    /// when a gray frame feeds a colour model).
    sources: Vec<PlaneSource>,
    /// Decoded planes at the frame's size: luma, or RGB in the model's order.
    decoded: Vec<u8>,
    decoded_planes: usize,
    /// Whether the model's channel order is BGR.
    bgr: bool,
    resampler: PlaneResampler,
    /// Source (height, width) → resized (height, width), and the window.
    resized: [usize; 2],
    window: [usize; 2],
}

impl CameraPipeline {
    /// The pipeline from frames of `geometry` to the model input `shape`
    /// (1 or 3 channels) as `settings` say.
    pub fn new(settings: &CameraPreprocessing, shape: FrameShape, geometry: FrameGeometry) -> Result<CameraPipeline> {
        if shape.channels != 1 && shape.channels != 3 {
            return Err(Error::Frame(format!(
                "camera frames feed gray or colour models; this one takes {} channels",
                shape.channels
            )));
        }
        let (h, w) = (geometry.height, geometry.width);
        let (mh, mw) = (shape.height, shape.width);
        let (resized, window) = match settings.resize {
            _ if (h, w) == (mh, mw) => ([h, w], [0, 0]),
            ResizeMode::None => {
                return Err(Error::Frame(format!(
                    "a {w}x{h} frame for a {mw}x{mh} model, and the bundle resizes nothing (resize: none)"
                )))
            }
            ResizeMode::Exact => ([mh, mw], [0, 0]),
            ResizeMode::ShorterSide => {
                // The axis that needs the larger scale gets the model's size, as
                // torchvision's Resize(S) does for the shorter side: int(S · long / short).
                let resized = if mh as f64 / h as f64 >= mw as f64 / w as f64 {
                    [mh, ((mh as f64 * w as f64 / h as f64) as usize).max(mw)]
                } else {
                    [((mw as f64 * h as f64 / w as f64) as usize).max(mh), mw]
                };
                // torchvision's CenterCrop: int(round((size − crop) / 2)), halves to even.
                let offset = |size: usize, crop: usize| ((size - crop) as f64 / 2.0).round_ties_even() as usize;
                (resized, [offset(resized[0], mh), offset(resized[1], mw)])
            }
        };
        let resampler = PlaneResampler::new([h, w], resized, [window[0]..window[0] + mh, window[1]..window[1] + mw]);
        let bgr = settings.channel_order == ChannelOrder::Bgr;
        let gray_model = shape.channels == 1;
        let frame = |offset, step| PlaneSource::Frame { offset, step };
        let (sources, decoded_planes) = match (geometry.format, gray_model) {
            (PixelFormat::Gray8, true) => (vec![frame(0, 1)], 0),
            (PixelFormat::Gray8, false) => (vec![frame(0, 1); 3], 0),
            // The frame's channel at each model channel.
            (PixelFormat::Rgb24, false) => ((0..3).map(|c| frame(if bgr { 2 - c } else { c }, 3)).collect(), 0),
            (PixelFormat::Bgr24, false) => ((0..3).map(|c| frame(if bgr { c } else { 2 - c }, 3)).collect(), 0),
            (_, true) => (vec![PlaneSource::Decoded { plane: 0 }], 1),
            (_, false) => ((0..3).map(|plane| PlaneSource::Decoded { plane }).collect(), 3),
        };
        Ok(CameraPipeline {
            geometry,
            shape,
            yuv: YuvCoefficients::of(settings.yuv),
            sources,
            decoded: vec![0; decoded_planes * h * w],
            decoded_planes,
            bgr,
            resampler,
            resized,
            window,
        })
    }

    pub fn geometry(&self) -> FrameGeometry {
        self.geometry
    }

    /// The size the frame is scaled to (height, width) and the top-left
    /// corner of the model-size window cut from it.
    pub fn resized(&self) -> ([usize; 2], [usize; 2]) {
        (self.resized, self.window)
    }

    /// Writes `frame` (of this pipeline's geometry) into `out` as
    /// model-size planar (CHW) u8.
    pub fn convert(&mut self, frame: &CameraFrame, out: &mut [u8]) -> Result<()> {
        if frame.geometry != self.geometry {
            return Err(Error::Frame(format!("a {} frame for a pipeline made for {}", frame.geometry, self.geometry)));
        }
        if out.len() != self.shape.len() {
            return Err(Error::Frame(format!("{} output values for a {} input", out.len(), self.shape)));
        }
        if self.decoded_planes > 0 {
            self.decode(frame.data);
        }
        let plane = self.shape.height * self.shape.width;
        let (h, w, stride) = (self.geometry.height, self.geometry.width, self.geometry.stride);
        let mut done: Option<(PlaneSource, usize)> = None;
        for (c, &source) in self.sources.iter().enumerate() {
            let (head, rest) = out.split_at_mut(c * plane);
            let dst = &mut rest[..plane];
            // A gray frame feeding a colour model is resampled once and copied.
            if let Some((_, from)) = done.filter(|(s, _)| *s == source) {
                dst.copy_from_slice(&head[from * plane..(from + 1) * plane]);
                continue;
            }
            match source {
                PlaneSource::Frame { offset, step } => self.resampler.run(&frame.data[offset..], stride, step, dst),
                PlaneSource::Decoded { plane: p } => {
                    self.resampler.run(&self.decoded[p * h * w..(p + 1) * h * w], w, 1, dst)
                }
            }
            done = Some((source, c));
        }
        Ok(())
    }

    /// Fills the decoded planes (luma, or RGB in the model's order) at the frame's size.
    fn decode(&mut self, data: &[u8]) {
        let g = self.geometry;
        let (h, w, stride) = (g.height, g.width, g.stride);
        let hw = h * w;
        let gray = self.decoded_planes == 1;
        let bgr = self.bgr;
        let yuv = self.yuv;
        let decoded = &mut self.decoded;
        let mut put = |i: usize, rgb: [u8; 3]| {
            if gray {
                decoded[i] = luma(rgb[0], rgb[1], rgb[2]);
            } else {
                let [a, b, c] = if bgr { [rgb[2], rgb[1], rgb[0]] } else { rgb };
                decoded[i] = a;
                decoded[hw + i] = b;
                decoded[2 * hw + i] = c;
            }
        };
        match g.format {
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => {
                let swap = g.format == PixelFormat::Bgr24;
                for y in 0..h {
                    let row = &data[y * stride..y * stride + 3 * w];
                    for (x, p) in row.chunks_exact(3).enumerate() {
                        put(y * w + x, if swap { [p[2], p[1], p[0]] } else { [p[0], p[1], p[2]] });
                    }
                }
            }
            PixelFormat::Yuyv => {
                for y in 0..h {
                    let row = &data[y * stride..y * stride + 2 * w];
                    for (pair, q) in row.chunks_exact(4).enumerate() {
                        let (u, v) = (q[1], q[3]);
                        put(y * w + 2 * pair, yuv.rgb(q[0], u, v));
                        put(y * w + 2 * pair + 1, yuv.rgb(q[2], u, v));
                    }
                }
            }
            PixelFormat::Nv12 => {
                let chroma = &data[stride * h..];
                for y in 0..h {
                    let luma_row = &data[y * stride..y * stride + w];
                    let uv = &chroma[(y / 2) * stride..(y / 2) * stride + w];
                    for (x, &l) in luma_row.iter().enumerate() {
                        put(y * w + x, yuv.rgb(l, uv[x & !1], uv[x | 1]));
                    }
                }
            }
            PixelFormat::Gray8 => unreachable!("gray frames are read in place"),
        }
    }
}

/// Runs arbitrary bytes through the camera path: a 12-byte header (pixel
/// format, width and height as u16, extra stride bytes, the model's
/// channels, height and width, resize mode, channel order, YUV matrix) and
/// the frame bytes, through [`FrameGeometry::new`] (at most 1 MiB),
/// [`CameraFrame::new`], [`CameraPipeline::new`] and one conversion. An
/// `Err` is the expected answer to a bad input; a panic is a bug. Shared by
/// the `camera_frame` fuzz target (runtime/fuzz) and its corpus replay test.
#[doc(hidden)]
pub fn check_camera_bytes(data: &[u8]) -> Result<()> {
    let Some((head, body)) = data.split_first_chunk::<12>() else {
        return Err(Error::Frame("fewer than 12 header bytes".into()));
    };
    let format = PixelFormat::ALL[head[0] as usize % 5];
    let (width, height) =
        (u16::from_le_bytes([head[1], head[2]]) as usize, u16::from_le_bytes([head[3], head[4]]) as usize);
    let stride = format.row_bytes(width).map(|row| row + head[5] as usize);
    let shape = FrameShape::new(1 + head[6] as usize % 4, 1 + head[7] as usize % 64, 1 + head[8] as usize % 64);
    let settings = CameraPreprocessing {
        resize: [ResizeMode::ShorterSide, ResizeMode::Exact, ResizeMode::None][head[9] as usize % 3],
        channel_order: [ChannelOrder::Rgb, ChannelOrder::Bgr][head[10] as usize % 2],
        yuv: [YuvMatrix::Bt601Limited, YuvMatrix::Bt601Full, YuvMatrix::Bt709Limited, YuvMatrix::Bt709Full]
            [head[11] as usize % 4],
    };
    let geometry = FrameGeometry::new(format, width, height, stride, 1 << 20)?;
    let frame = CameraFrame::new(geometry, body)?;
    let mut pipeline = CameraPipeline::new(&settings, shape, geometry)?;
    let mut out = vec![0u8; shape.len()];
    pipeline.convert(&frame, &mut out)
}

#[cfg(test)]
mod tests {
    use super::super::frame::DEFAULT_MAX_FRAME_BYTES;
    use super::*;

    fn geometry(format: PixelFormat, w: usize, h: usize) -> FrameGeometry {
        FrameGeometry::new(format, w, h, None, DEFAULT_MAX_FRAME_BYTES).unwrap()
    }

    #[test]
    fn geometries_name_what_is_wrong() {
        let err = |f, w, h, s, max| FrameGeometry::new(f, w, h, s, max).unwrap_err().to_string();
        assert!(err(PixelFormat::Yuyv, 641, 480, None, 1 << 30).contains("even width"));
        assert!(err(PixelFormat::Nv12, 640, 481, None, 1 << 30).contains("even height"));
        assert!(err(PixelFormat::Rgb24, 640, 480, Some(1000), 1 << 30).contains("smaller than a row (1920"));
        assert!(err(PixelFormat::Gray8, 0, 480, None, 1 << 30).contains("non-zero"));
        assert!(err(PixelFormat::Rgb24, 640, 480, None, 1000).contains("over the limit of 1000"));
        assert!(err(PixelFormat::Rgb24, usize::MAX / 2, 3, None, usize::MAX).contains("overflows"));
        assert_eq!(geometry(PixelFormat::Nv12, 4, 2).frame_bytes(), Some(12));
        assert!("rgb".parse::<PixelFormat>().unwrap_err().contains("gray8, rgb24"));
    }

    #[test]
    fn yuv_coefficients_map_black_white_and_primaries() {
        let c = YuvCoefficients::of(YuvMatrix::Bt601Limited);
        assert_eq!(c.rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(c.rgb(235, 128, 128), [255, 255, 255]);
        // BT.601 limited red: Y 81, U 90, V 240.
        let [r, g, b] = c.rgb(81, 90, 240);
        assert!(r >= 254 && g <= 1 && b <= 1, "{r} {g} {b}");
        let full = YuvCoefficients::of(YuvMatrix::Bt601Full);
        assert_eq!(full.rgb(0, 128, 128), [0, 0, 0]);
        assert_eq!(full.rgb(255, 128, 128), [255, 255, 255]);
        assert_eq!(luma(255, 255, 255), 255);
    }

    #[test]
    fn shorter_side_resizes_as_torchvision_and_crops_the_centre() {
        let p = CameraPipeline::new(
            &CameraPreprocessing::default(),
            FrameShape::new(1, 28, 28),
            geometry(PixelFormat::Rgb24, 640, 480),
        )
        .unwrap();
        // int(28 · 640 / 480) = 37; round((37 − 28) / 2) = round(4.5) = 4.
        assert_eq!(p.resized(), ([28, 37], [0, 4]));
        let exact = CameraPreprocessing { resize: ResizeMode::Exact, ..Default::default() };
        let p = CameraPipeline::new(&exact, FrameShape::new(3, 32, 32), geometry(PixelFormat::Nv12, 640, 480)).unwrap();
        assert_eq!(p.resized(), ([32, 32], [0, 0]));
        let none = CameraPreprocessing { resize: ResizeMode::None, ..Default::default() };
        let err = CameraPipeline::new(&none, FrameShape::new(1, 28, 28), geometry(PixelFormat::Gray8, 640, 480));
        assert!(err.unwrap_err().to_string().contains("resizes nothing"));
    }

    #[test]
    fn every_format_of_one_picture_gives_the_same_model_input() {
        // A gray picture in every format: the model input is the same whatever
        // the format (YUV gray is exact: U = V = 128).
        let (w, h) = (40, 30);
        let gray: Vec<u8> = (0..w * h).map(|i| (16 + (i * 37) % 219) as u8).collect();
        let full = |v: u8| v; // full-range YUV carries gray as Y
        let frames: Vec<(PixelFormat, Vec<u8>)> = vec![
            (PixelFormat::Gray8, gray.clone()),
            (PixelFormat::Rgb24, gray.iter().flat_map(|&v| [v; 3]).collect()),
            (PixelFormat::Bgr24, gray.iter().flat_map(|&v| [v; 3]).collect()),
            (PixelFormat::Yuyv, gray.chunks(2).flat_map(|p| [full(p[0]), 128, full(p[1]), 128]).collect()),
            (PixelFormat::Nv12, gray.iter().copied().chain(std::iter::repeat_n(128, w * h / 2)).collect()),
        ];
        let settings = CameraPreprocessing { yuv: YuvMatrix::Bt601Full, ..Default::default() };
        for channels in [1, 3] {
            let shape = FrameShape::new(channels, 12, 12);
            let mut outputs = vec![];
            for (format, data) in &frames {
                let g = geometry(*format, w, h);
                let mut p = CameraPipeline::new(&settings, shape, g).unwrap();
                let mut out = vec![0u8; shape.len()];
                p.convert(&CameraFrame::new(g, data).unwrap(), &mut out).unwrap();
                outputs.push((*format, out));
            }
            for (format, out) in &outputs[1..] {
                assert_eq!(out, &outputs[0].1, "{format} vs gray8, {channels} channel(s)");
            }
        }
    }

    #[test]
    fn colour_order_follows_the_model() {
        let g = geometry(PixelFormat::Rgb24, 2, 1);
        let data = [10, 20, 30, 40, 50, 60];
        for (order, first) in [(ChannelOrder::Rgb, [10, 40]), (ChannelOrder::Bgr, [30, 60])] {
            let settings = CameraPreprocessing { channel_order: order, ..Default::default() };
            let mut p = CameraPipeline::new(&settings, FrameShape::new(3, 1, 2), g).unwrap();
            let mut out = [0u8; 6];
            p.convert(&CameraFrame::new(g, &data).unwrap(), &mut out).unwrap();
            assert_eq!(out[..2], first, "{order:?}");
        }
    }

    #[test]
    fn strided_rows_read_only_the_pixels() {
        let tight = geometry(PixelFormat::Gray8, 3, 2);
        let padded = FrameGeometry::new(PixelFormat::Gray8, 3, 2, Some(5), 1 << 20).unwrap();
        let shape = FrameShape::new(1, 2, 3);
        let mut out = [[0u8; 6]; 2];
        for (k, (g, data)) in
            [(tight, &[1, 2, 3, 4, 5, 6][..]), (padded, &[1, 2, 3, 99, 99, 4, 5, 6][..])].into_iter().enumerate()
        {
            let mut p = CameraPipeline::new(&CameraPreprocessing::default(), shape, g).unwrap();
            p.convert(&CameraFrame::new(g, data).unwrap(), &mut out[k]).unwrap();
        }
        assert_eq!(out[0], out[1]);
        assert!(CameraFrame::new(padded, &[0; 7]).unwrap_err().to_string().contains("needs 8"));
    }
}
