//! What a bundle records about camera frames: how one of another size or
//! colour layout becomes its model's input (resize mode, channel order, YUV
//! matrix), with the names command lines use.

use serde::{Deserialize, Serialize};

/// How a frame of another size is brought to the model's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Keep the aspect ratio: scale so the frame covers the model's input
    /// (torchvision `Resize(S)` on the shorter side for a square input),
    /// then cut the centre (`CenterCrop`).
    #[default]
    ShorterSide,
    /// Scale each axis to the model's size, distorting the aspect ratio
    /// (`Resize((H, W))`).
    Exact,
    /// No resizing: frames must already have the model's size.
    None,
}

/// Colour order of the model's input channels (colour models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    /// Channel 0 is red (torchvision, PIL).
    #[default]
    Rgb,
    /// Channel 0 is blue (models trained on OpenCV's BGR frames).
    Bgr,
}

/// The YUV → RGB conversion of YUYV and NV12 frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum YuvMatrix {
    /// BT.601, Y in 16–235 and chroma in 16–240 (SD cameras, most webcams).
    #[default]
    Bt601Limited,
    /// BT.601, full 0–255 range (JPEG, some MIPI sensors).
    Bt601Full,
    /// BT.709, limited range (HD cameras).
    Bt709Limited,
    /// BT.709, full range.
    Bt709Full,
}

/// How a camera frame becomes the model's input, recorded in the manifest by
/// the converter; the normalisation after it is the manifest's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraPreprocessing {
    pub resize: ResizeMode,
    pub channel_order: ChannelOrder,
    pub yuv: YuvMatrix,
}

/// Parses the command-line names of a setting: each of `names` stands for
/// the value beside it.
fn parse_named<T: Copy>(s: &str, what: &str, names: &[(&str, T)]) -> std::result::Result<T, String> {
    names.iter().find(|(n, _)| *n == s).map(|(_, v)| *v).ok_or_else(|| {
        let all: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
        format!("unknown {what} {s:?} (expected one of {})", all.join(", "))
    })
}

impl std::str::FromStr for ResizeMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let names =
            [("shorter-side", ResizeMode::ShorterSide), ("exact", ResizeMode::Exact), ("none", ResizeMode::None)];
        parse_named(s, "resize mode", &names)
    }
}

impl std::str::FromStr for ChannelOrder {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        parse_named(s, "channel order", &[("rgb", ChannelOrder::Rgb), ("bgr", ChannelOrder::Bgr)])
    }
}

impl std::str::FromStr for YuvMatrix {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let names = [
            ("bt601-limited", YuvMatrix::Bt601Limited),
            ("bt601-full", YuvMatrix::Bt601Full),
            ("bt709-limited", YuvMatrix::Bt709Limited),
            ("bt709-full", YuvMatrix::Bt709Full),
        ];
        parse_named(s, "YUV matrix", &names)
    }
}
