//! Camera frames: the pixel formats cameras deliver (gray, RGB/BGR, YUYV,
//! NV12, with a row stride), how a bundle says such a frame becomes its
//! model's input ([`CameraPreprocessing`], recorded by the converter), and
//! the [`CameraPipeline`] that does it — colour conversion, antialiased
//! bilinear resize, centre crop — into model-size planar u8, which the
//! [`Preprocessor`](crate::Preprocessor)'s table then normalises.
//!
//! Defaults follow what a PyTorch user's transform does (docs/design.md §5a):
//! `Resize(S)` on the shorter side then `CenterCrop`, antialiased bilinear
//! (`torchvision.transforms.functional.resize(…, antialias=True)`, within one
//! step), colour to gray with Pillow's ITU-R 601-2 luma, YUV as BT.601
//! limited range. A pipeline is built once for a frame geometry and then
//! allocates nothing per frame.
//!
//! One module per job: `frame` (what a camera hands over), `settings`
//! (what a bundle records), `pipeline` (the conversion).

mod frame;
mod pipeline;
mod settings;

pub use frame::{CameraFrame, FrameGeometry, PixelFormat, DEFAULT_MAX_FRAME_BYTES};
#[doc(hidden)]
pub use pipeline::check_camera_bytes;
pub use pipeline::CameraPipeline;
pub use settings::{CameraPreprocessing, ChannelOrder, ResizeMode, YuvMatrix};
