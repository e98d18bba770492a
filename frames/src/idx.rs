//! IDX (the MNIST family's format), gzip-compressed or raw.
//!
//! Images are `u8` with 3 dims (N, H, W: gray) or 4 dims (N, H, W, C:
//! interleaved colour, as written by [`write_idx_images`]); labels are `u8`
//! with 1 dim.

use std::io::{Read, Write};
use std::path::Path;

use super::read_file;
use badexpert_runtime::{Error, FrameSet, FrameShape, Result};

const U8: u8 = 0x08;

fn decompressed(path: &Path) -> Result<Vec<u8>> {
    let raw = read_file(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, "gzip stream", e))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses the header; returns the dims and the payload.
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Vec<usize>, &'a [u8])> {
    let bad = |reason: String| Error::format(path, "IDX file", reason);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("missing the 00 00 magic prefix".into()));
    }
    if bytes[2] != U8 {
        return Err(bad(format!("element type 0x{:02x} is not u8 (0x08)", bytes[2])));
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad("truncated header".into()));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize)
        .collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let payload = &bytes[header..];
    match expected {
        Some(n) if n == payload.len() => Ok((dims, payload)),
        Some(n) => Err(bad(format!("dims {dims:?} need {n} bytes, file holds {}", payload.len()))),
        None => Err(bad(format!("dims {dims:?} overflow"))),
    }
}

/// Reads IDX images (3-dim gray or 4-dim NHWC colour) into planar frames.
pub fn read_idx_images(path: &Path) -> Result<FrameSet> {
    let bytes = decompressed(path)?;
    let (dims, payload) = parse(path, &bytes)?;
    let (n, h, w, c) = match dims[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c] => (n, h, w, c),
        _ => {
            return Err(Error::format(
                path,
                "IDX image file",
                format!("{} dims; images need 3 (N,H,W) or 4 (N,H,W,C)", dims.len()),
            ))
        }
    };
    if n == 0 {
        return Err(Error::format(path, "IDX image file", "it holds no images"));
    }
    let shape = FrameShape::new(c, h, w);
    let pixels = if c == 1 { payload.to_vec() } else { hwc_to_chw(payload, shape) };
    FrameSet::new(shape, pixels, None).map_err(|e| Error::format(path, "IDX image file", e))
}

/// Reads an IDX label file.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u32>> {
    let bytes = decompressed(path)?;
    let (dims, payload) = parse(path, &bytes)?;
    if dims.len() != 1 {
        return Err(Error::format(path, "IDX label file", format!("{} dims, labels need 1", dims.len())));
    }
    Ok(payload.iter().map(|&l| l as u32).collect())
}

/// Converts interleaved (N)HWC pixels to planar (N)CHW.
pub(crate) fn hwc_to_chw(hwc: &[u8], shape: FrameShape) -> Vec<u8> {
    relayout(hwc, shape, true)
}

fn chw_to_hwc(chw: &[u8], shape: FrameShape) -> Vec<u8> {
    relayout(chw, shape, false)
}

/// Moves every value between interleaved and planar order, frame by frame.
fn relayout(src: &[u8], shape: FrameShape, to_planar: bool) -> Vec<u8> {
    let (c, hw) = (shape.channels, shape.height * shape.width);
    let mut out = vec![0u8; src.len()];
    for (frame_in, frame_out) in src.chunks_exact(c * hw).zip(out.chunks_exact_mut(c * hw)) {
        for p in 0..hw {
            for ch in 0..c {
                let (planar, interleaved) = (ch * hw + p, p * c + ch);
                if to_planar {
                    frame_out[planar] = frame_in[interleaved];
                } else {
                    frame_out[interleaved] = frame_in[planar];
                }
            }
        }
    }
    out
}

fn write_idx(path: &Path, dims: &[usize], payload: &[u8]) -> Result<()> {
    let mut bytes = vec![0, 0, U8, dims.len() as u8];
    for &d in dims {
        let d = u32::try_from(d).map_err(|_| Error::Invalid(format!("IDX dim {d} exceeds u32")))?;
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    let gz = path.extension().is_some_and(|e| e == "gz");
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(path)?;
        if gz {
            let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::best());
            enc.write_all(&bytes)?;
            enc.finish()?.sync_all()
        } else {
            let mut file = file;
            file.write_all(&bytes)?;
            file.sync_all()
        }
    };
    write().map_err(|e| Error::io(path, e))
}

/// Writes frames as IDX images (gzip when the name ends in `.gz`).
pub fn write_idx_images(path: &Path, frames: &FrameSet) -> Result<()> {
    let s = frames.shape();
    if s.channels == 1 {
        write_idx(path, &[frames.len(), s.height, s.width], frames.pixels())
    } else {
        write_idx(path, &[frames.len(), s.height, s.width, s.channels], &chw_to_hwc(frames.pixels(), s))
    }
}

/// Writes labels as an IDX label file (each must fit in a byte).
pub fn write_idx_labels(path: &Path, labels: &[u32]) -> Result<()> {
    let bytes: Vec<u8> = labels
        .iter()
        .map(|&l| u8::try_from(l).map_err(|_| Error::Invalid(format!("label {l} does not fit IDX u8"))))
        .collect::<Result<_>>()?;
    write_idx(path, &[bytes.len()], &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_round_trip_through_gz() {
        let dir = tempdir();
        let shape = FrameShape::new(3, 2, 2);
        let pixels: Vec<u8> = (0..24).collect();
        let set = FrameSet::new(shape, pixels, Some(vec![1, 7])).unwrap();
        let (i, l) = (dir.join("x-images.gz"), dir.join("x-labels"));
        write_idx_images(&i, &set).unwrap();
        write_idx_labels(&l, set.labels().unwrap()).unwrap();
        let back = read_idx_images(&i).unwrap().with_labels(read_idx_labels(&l).unwrap()).unwrap();
        assert_eq!(back, set);
    }

    #[test]
    fn truncated_file_is_named() {
        let dir = tempdir();
        let p = dir.join("bad");
        std::fs::write(&p, [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2]).unwrap();
        let err = read_idx_images(&p).unwrap_err().to_string();
        assert!(err.contains("bad") && err.contains("need 1568 bytes"), "{err}");
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "badexpert-idx-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
