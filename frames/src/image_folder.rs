//! Image folders: `root/<class>/<image>.{png,jpg,jpeg}`, classes in sorted
//! order (the torchvision `ImageFolder` convention), or a flat folder of
//! unlabelled images.

use std::path::{Path, PathBuf};

use badexpert_runtime::camera::DEFAULT_MAX_FRAME_BYTES;
use badexpert_runtime::{Error, FrameGeometry, FrameSet, FrameShape, PixelFormat, Result};

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
        .collect::<Result<_>>()?;
    entries.sort();
    Ok(entries)
}

/// Decodes one image file into planar pixels; gray images stay 1-channel,
/// everything else becomes RGB.
pub fn read_image_file(path: &Path) -> Result<(FrameShape, Vec<u8>)> {
    let img = image::open(path).map_err(|e| Error::format(path, "image", e))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if img.color().channel_count() == 1 {
        Ok((FrameShape::new(1, h, w), img.into_luma8().into_raw()))
    } else {
        let shape = FrameShape::new(3, h, w);
        Ok((shape, super::idx::hwc_to_chw(&img.into_rgb8().into_raw(), shape)))
    }
}

/// Decodes an image file as a camera frame of its own size: gray images
/// as gray8, everything else as rgb24 (interleaved), for
/// `FrameGuard::guard_camera`, which brings it to the bundle's input.
pub fn read_camera_image(path: &Path) -> Result<(FrameGeometry, Vec<u8>)> {
    camera_image(image::open(path).map_err(|e| Error::format(path, "image", e))?)
}

/// [`read_camera_image`] for an encoded image in memory (PNG, JPEG);
/// `source` names it in errors.
pub fn decode_camera_image(bytes: &[u8], source: &Path) -> Result<(FrameGeometry, Vec<u8>)> {
    camera_image(image::load_from_memory(bytes).map_err(|e| Error::format(source, "image", e))?)
}

fn camera_image(img: image::DynamicImage) -> Result<(FrameGeometry, Vec<u8>)> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (format, pixels) = if img.color().channel_count() == 1 {
        (PixelFormat::Gray8, img.into_luma8().into_raw())
    } else {
        (PixelFormat::Rgb24, img.into_rgb8().into_raw())
    };
    Ok((FrameGeometry::new(format, w, h, None, DEFAULT_MAX_FRAME_BYTES)?, pixels))
}

/// Reads an image folder; returns the frames and the class names. With class
/// sub-directories the frames are labelled; a flat folder gives unlabelled frames.
pub fn read_image_folder(root: &Path) -> Result<(FrameSet, Vec<String>)> {
    let entries = sorted_entries(root)?;
    let class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    let mut files: Vec<(PathBuf, Option<u32>)> = Vec::new();
    let mut classes = Vec::new();
    if class_dirs.is_empty() {
        files.extend(entries.iter().filter(|p| is_image(p)).map(|p| (p.clone(), None)));
    } else {
        for (label, dir) in class_dirs.iter().enumerate() {
            classes.push(dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            for f in sorted_entries(dir)?.into_iter().filter(|p| is_image(p)) {
                files.push((f, Some(label as u32)));
            }
        }
    }
    if files.is_empty() {
        return Err(Error::format(root, "image folder", "no PNG or JPEG images found"));
    }
    let mut shape = None;
    let mut pixels = Vec::new();
    for (f, _) in &files {
        let (s, p) = read_image_file(f)?;
        match shape {
            None => shape = Some(s),
            Some(first) if first != s => {
                return Err(Error::format(
                    f,
                    "image",
                    format!("shape {s} differs from the folder's first image ({first})"),
                ))
            }
            _ => {}
        }
        pixels.extend_from_slice(&p);
    }
    let labels = (!classes.is_empty()).then(|| files.iter().map(|(_, l)| l.unwrap_or(0)).collect());
    let shape = shape.expect("at least one file");
    Ok((FrameSet::new(shape, pixels, labels)?, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_class_subdirectories_in_sorted_order() {
        let root = std::env::temp_dir().join(format!("badexpert-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (class, value) in [("b_shirt", 200u8), ("a_boot", 10)] {
            std::fs::create_dir_all(root.join(class)).unwrap();
            image::GrayImage::from_pixel(4, 3, image::Luma([value])).save(root.join(class).join("0.png")).unwrap();
        }
        let (set, classes) = read_image_folder(&root).unwrap();
        assert_eq!(classes, ["a_boot", "b_shirt"]);
        assert_eq!(set.shape(), FrameShape::new(1, 3, 4));
        assert_eq!(set.labels().unwrap(), &[0, 1]);
        assert_eq!((set.frame(0)[0], set.frame(1)[11]), (10, 200));
        std::fs::write(root.join("a_boot").join("1.png"), b"not a png").unwrap();
        let err = read_image_folder(&root).unwrap_err().to_string();
        assert!(err.contains("1.png") && err.contains("not a valid image"), "{err}");
    }
}
