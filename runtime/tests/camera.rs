//! The camera pipeline against Pillow and torchvision: every case of
//! `tests/fixtures/camera/cases.json` (made by
//! `scripts/fixtures/make_camera_fixtures.py`) within one step of both.

use std::path::{Path, PathBuf};

use badexpert_runtime::camera::{CameraPreprocessing, ChannelOrder, ResizeMode, YuvMatrix, DEFAULT_MAX_FRAME_BYTES};
use badexpert_runtime::{CameraFrame, CameraPipeline, FrameGeometry, FrameShape, PixelFormat};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/camera")
}

/// The picture as the case's format delivers it.
fn frame_bytes(case: &Value, format: PixelFormat) -> (usize, usize, Vec<u8>) {
    let dir = fixtures();
    if let Some(raw) = case["yuv"]["raw"].as_str() {
        let rgb = image::open(dir.join(case["picture"].as_str().unwrap())).unwrap().into_rgb8();
        return (rgb.width() as usize, rgb.height() as usize, std::fs::read(dir.join(raw)).unwrap());
    }
    let rgb = image::open(dir.join(case["picture"].as_str().unwrap())).unwrap().into_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let px = rgb.into_raw();
    let data = match format {
        PixelFormat::Rgb24 => px,
        PixelFormat::Bgr24 => px.chunks(3).flat_map(|p| [p[2], p[1], p[0]]).collect(),
        // Pillow's convert("L"), as the fixture's gray input was made.
        PixelFormat::Gray8 => px
            .chunks(3)
            .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
            .collect(),
        _ => unreachable!(),
    };
    (w, h, data)
}

#[test]
fn every_case_is_within_one_step_of_torchvision_and_pillow() {
    let cases: Value = serde_json::from_slice(&std::fs::read(fixtures().join("cases.json")).unwrap()).unwrap();
    let mut checked = 0;
    for case in cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let format: PixelFormat = case["format"].as_str().unwrap().parse().unwrap();
        let settings = CameraPreprocessing {
            resize: match case["resize"].as_str().unwrap() {
                "exact" => ResizeMode::Exact,
                _ => ResizeMode::ShorterSide,
            },
            channel_order: if case["channel_order"] == "bgr" { ChannelOrder::Bgr } else { ChannelOrder::Rgb },
            yuv: match case["yuv"]["matrix"].as_str() {
                Some("bt709_full") => YuvMatrix::Bt709Full,
                _ => YuvMatrix::Bt601Limited,
            },
        };
        let shape = FrameShape::new(
            case["channels"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
            case["width"].as_u64().unwrap() as usize,
        );
        let (w, h, data) = frame_bytes(case, format);
        let geometry = FrameGeometry::new(format, w, h, None, DEFAULT_MAX_FRAME_BYTES).unwrap();
        let mut pipeline = CameraPipeline::new(&settings, shape, geometry).unwrap();
        let mut ours = vec![0u8; shape.len()];
        pipeline.convert(&CameraFrame::new(geometry, &data).unwrap(), &mut ours).unwrap();
        for (reference, file) in case["expected"].as_object().unwrap() {
            let want = std::fs::read(fixtures().join(file.as_str().unwrap())).unwrap();
            assert_eq!(want.len(), ours.len(), "{name} {reference}");
            let worst = ours.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            let off = ours.iter().zip(&want).filter(|(a, b)| a != b).count();
            eprintln!("{name:32} vs {reference:11}: max |Δ| {worst}, {off} of {} values differ", ours.len());
            assert!(worst <= 1, "{name}: {worst} steps from {reference}");
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} comparisons");
}

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/camera_frame");

/// Seeds: each format at a few sizes and strides into gray and colour
/// models, each resize mode (`cargo test --test camera -- --ignored`).
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    for (f, format) in PixelFormat::ALL.iter().enumerate() {
        for (w, h, pad) in [(8u16, 6u16, 0u8), (40, 30, 3), (2, 2, 0), (64, 48, 1)] {
            for (model, resize) in [([0u8, 27, 27], 0u8), ([2, 31, 31], 1), ([0, 5, 7], 2)] {
                let mut head = vec![f as u8];
                head.extend(w.to_le_bytes());
                head.extend(h.to_le_bytes());
                head.extend([pad, model[0], model[1], model[2], resize, 0, 0]);
                let g = FrameGeometry::new(*format, w as usize, h as usize, None, 1 << 20).unwrap();
                let bytes = g.frame_bytes().unwrap() + pad as usize * (h as usize * 2);
                head.extend((0..bytes).map(|i| (i * 13 % 256) as u8));
                out.push((format!("seed-{format}-{w}x{h}-pad{pad}-model{}-resize{resize}", model[0]), head));
            }
        }
    }
    out
}

#[test]
#[ignore]
fn write_seed_corpus() {
    std::fs::create_dir_all(CORPUS).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(Path::new(CORPUS).join(name), bytes).unwrap();
    }
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let files: Vec<_> = std::fs::read_dir(CORPUS).expect("committed corpus").map(|e| e.unwrap().path()).collect();
    assert!(files.len() >= 20, "corpus {CORPUS} has only {} files", files.len());
    let converted = files
        .iter()
        .filter(|f| badexpert_runtime::camera::check_camera_bytes(&std::fs::read(f).unwrap()).is_ok())
        .count();
    assert!(converted > 0, "no corpus input reaches a conversion");
    for (_, bytes) in seeds() {
        let _ = badexpert_runtime::camera::check_camera_bytes(&bytes);
    }
}
