//! CIFAR-10 binary batches: records of one label byte and 3×32×32 planar pixels.

use std::path::PathBuf;

use super::read_file;
use badexpert_runtime::{Error, FrameSet, FrameShape, Result};

const SHAPE: FrameShape = FrameShape { channels: 3, height: 32, width: 32 };

/// Reads and concatenates CIFAR-10 binary batch files.
pub fn read_cifar10(files: &[PathBuf]) -> Result<FrameSet> {
    let record = 1 + SHAPE.len();
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for path in files {
        let bytes = read_file(path)?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(Error::format(
                path,
                "CIFAR-10 binary batch",
                format!("{} bytes is not a whole number of {record}-byte records", bytes.len()),
            ));
        }
        for r in bytes.chunks_exact(record) {
            labels.push(r[0] as u32);
            pixels.extend_from_slice(&r[1..]);
        }
    }
    if labels.is_empty() {
        return Err(Error::Invalid("no CIFAR-10 batch file given".into()));
    }
    FrameSet::new(SHAPE, pixels, Some(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_and_rejects_partial_ones() {
        let dir = std::env::temp_dir().join(format!("badexpert-cifar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = vec![];
        for label in [3u8, 9] {
            bytes.push(label);
            bytes.extend((0..3072).map(|i| (i % 251) as u8 ^ label));
        }
        let p = dir.join("data_batch_1.bin");
        std::fs::write(&p, &bytes).unwrap();
        let set = read_cifar10(std::slice::from_ref(&p)).unwrap();
        assert_eq!((set.len(), set.labels().unwrap()), (2, &[3, 9][..]));
        assert_eq!(set.frame(1)[5], 5 ^ 9);
        std::fs::write(&p, &bytes[..100]).unwrap();
        assert!(read_cifar10(&[p]).unwrap_err().to_string().contains("whole number"));
    }
}
